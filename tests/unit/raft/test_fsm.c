/* tests/unit/raft/test_fsm.c: struct raft_fsm over a store, called the way
 * libraft calls it: apply with last_applied one below the entry, snapshot
 * buffers concatenated into the single buffer restore receives. */
#include "tests/unit/raft/raft_tests.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "raft/cluster_internal.h"

struct fsm_ctx {
    struct tstore ts;
    struct cluster_fsm f;
    struct raft raft; /* only last_applied is read, through raft_last_applied() */
    Concord__CommandResult last;
    unsigned n_applied;
};

static void on_applied(void *arg, uint64_t index, const Concord__Command *cmd,
                       const Concord__CommandResult *result)
{
    struct fsm_ctx *x = arg;

    (void)cmd;
    assert_int_equal(index, x->raft.last_applied + 1);
    x->last.code = result->code;
    x->last.id = result->id;
    x->last.index = result->index;
    x->n_applied++;
}

static void fsm_ctx_open(struct fsm_ctx *x)
{
    char errmsg[256];

    memset(x, 0, sizeof *x);
    tstore_open(&x->ts);
    assert_int_equal(cluster_fsm_init(&x->f, x->ts.s, NULL, NULL, errmsg), 0);
    x->f.raft = &x->raft;
    x->f.applied = on_applied;
    x->f.applied_arg = x;
}

static int setup(void **state)
{
    struct fsm_ctx *x = malloc(sizeof *x);

    assert_non_null(x);
    fsm_ctx_open(x);
    *state = x;
    return 0;
}

static int teardown(void **state)
{
    struct fsm_ctx *x = *state;

    tstore_close(&x->ts);
    free(x);
    return 0;
}

static void apply_bytes(struct fsm_ctx *x, uint64_t index, void *buf, size_t len)
{
    struct raft_buffer b = {buf, len};
    void *result = &b;

    x->raft.last_applied = index - 1;
    assert_int_equal(x->f.fsm.apply(&x->f.fsm, &b, &result), 0);
    assert_null(result);
    x->raft.last_applied = index;
}

static void apply_cmd(struct fsm_ctx *x, uint64_t index, Concord__Command *cmd)
{
    uint8_t *buf = NULL;
    size_t len = 0;

    assert_int_equal(cluster_command_encode(cmd, &buf, &len), 0);
    apply_bytes(x, index, buf, len);
    cluster_command_buf_free(buf);
    concord__command__free_unpacked(cmd, NULL);
}

static void apply_records_the_index_and_skips_replayed_entries(void **state)
{
    struct fsm_ctx *x = *state;
    uint8_t before[32];
    uint8_t after[32];

    apply_cmd(x, 1, cmd_create_user("alice", NULL));
    assert_int_equal(x->n_applied, 1);
    assert_int_equal(x->last.code, CLUSTER_RESULT_OK);
    assert_int_equal(x->last.id, 1);
    assert_int_equal(x->last.index, 1);
    assert_int_equal(store_applied(x->ts.s), 1);
    assert_true(user_exists(x->ts.s, "alice"));

    /* After a restart libraft replays index 1: the store already has it. */
    state_hash(x->ts.s, before);
    apply_cmd(x, 1, cmd_create_user("other", NULL));
    state_hash(x->ts.s, after);
    assert_memory_equal(before, after, 32);
    assert_int_equal(x->n_applied, 1);
    assert_int_equal(store_applied(x->ts.s), 1);
}

static void duplicate_request_id_returns_the_first_result(void **state)
{
    struct fsm_ctx *x = *state;
    static const uint8_t id[16] = {42, 1, 2, 3};
    uint8_t before[32];
    uint8_t after[32];

    apply_cmd(x, 1, cmd_create_user("alice", id));
    assert_int_equal(x->last.code, CLUSTER_RESULT_OK);
    state_hash(x->ts.s, before);

    /* A retry of the same request, even with other content, applies once. */
    apply_cmd(x, 2, cmd_create_user("alice", id));
    assert_int_equal(x->last.code, CLUSTER_RESULT_OK);
    assert_int_equal(x->last.id, 1);
    assert_int_equal(x->last.index, 1);
    apply_cmd(x, 3, cmd_create_user("bob", id));
    assert_int_equal(x->last.code, CLUSTER_RESULT_OK);
    assert_int_equal(x->last.index, 1);
    state_hash(x->ts.s, after);
    assert_memory_equal(before, after, 32);
    assert_int_equal(user_count(x->ts.s), 1);
    assert_int_equal(store_applied(x->ts.s), 3);
    assert_int_equal(x->n_applied, 3);

    /* Without the id, the same name is a business conflict. */
    apply_cmd(x, 4, cmd_create_user("alice", NULL));
    assert_int_equal(x->last.code, CLUSTER_RESULT_CONFLICT);
}

static void undecodable_entry_changes_nothing_but_the_applied_index(void **state)
{
    struct fsm_ctx *x = *state;
    uint8_t garbage[16];
    uint8_t before[32];
    uint8_t after[32];

    memset(garbage, 0xee, sizeof garbage);
    state_hash(x->ts.s, before);
    apply_bytes(x, 1, garbage, sizeof garbage);
    state_hash(x->ts.s, after);
    assert_memory_equal(before, after, 32);
    assert_int_equal(store_applied(x->ts.s), 1);
    assert_int_equal(x->n_applied, 0);
}

/* Takes a snapshot and returns it as libraft hands it to restore: one
 * raft_malloc'd buffer. */
static struct raft_buffer take_snapshot(struct fsm_ctx *x)
{
    struct raft_buffer *bufs = NULL;
    struct raft_buffer out;
    unsigned n = 0;
    size_t len = 0;
    uint8_t *p;

    assert_int_equal(x->f.fsm.snapshot(&x->f.fsm, &bufs, &n), 0);
    for (unsigned i = 0; i < n; i++)
        len += bufs[i].len;
    out.base = raft_malloc(len);
    out.len = len;
    assert_non_null(out.base);
    p = out.base;
    for (unsigned i = 0; i < n; i++) {
        memcpy(p, bufs[i].base, bufs[i].len);
        p += bufs[i].len;
    }
    assert_int_equal(x->f.fsm.snapshot_finalize(&x->f.fsm, &bufs, &n), 0);
    assert_null(bufs);
    return out;
}

static void snapshot_then_restore_reproduces_the_state(void **state)
{
    struct fsm_ctx *x = *state;
    struct fsm_ctx *y = malloc(sizeof *y);
    struct raft_buffer snap;
    uint8_t a[32];
    uint8_t b[32];

    assert_non_null(y);
    apply_cmd(x, 1, cmd_create_user("alice", NULL));
    apply_cmd(x, 2, cmd_create_user("bob", NULL));
    apply_cmd(x, 3, cmd_create_user("carol", NULL));
    snap = take_snapshot(x);

    fsm_ctx_open(y);
    assert_int_equal(y->f.fsm.restore(&y->f.fsm, &snap), 0); /* takes snap.base */
    state_hash(x->ts.s, a);
    state_hash(y->ts.s, b);
    assert_memory_equal(a, b, 32);
    assert_int_equal(store_applied(y->ts.s), 3);
    assert_int_equal(y->f.store_applied, 3);

    /* Entries after the snapshot apply on top of it. */
    apply_cmd(y, 4, cmd_create_user("dave", NULL));
    assert_int_equal(y->last.id, 4);
    tstore_close(&y->ts);
    free(y);
}

static void restore_skips_a_snapshot_not_newer_than_the_store(void **state)
{
    struct fsm_ctx *x = *state;
    struct raft_buffer snap;
    uint8_t before[32];
    uint8_t after[32];

    apply_cmd(x, 1, cmd_create_user("alice", NULL));
    snap = take_snapshot(x);
    apply_cmd(x, 2, cmd_create_user("bob", NULL));
    state_hash(x->ts.s, before);
    assert_int_equal(x->f.fsm.restore(&x->f.fsm, &snap), 0); /* frees snap.base */
    state_hash(x->ts.s, after);
    assert_memory_equal(before, after, 32);
    assert_true(user_exists(x->ts.s, "bob"));
}

static void restore_refuses_foreign_bytes_and_leaves_them_to_the_caller(void **state)
{
    struct fsm_ctx *x = *state;
    struct raft_buffer snap = {raft_malloc(64), 64};

    assert_non_null(snap.base);
    memset(snap.base, 0x11, snap.len);
    assert_int_equal(x->f.fsm.restore(&x->f.fsm, &snap), RAFT_CORRUPT);
    raft_free(snap.base); /* libraft frees it on this path */
}

int test_fsm_run(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(apply_records_the_index_and_skips_replayed_entries),
        T(duplicate_request_id_returns_the_first_result),
        T(undecodable_entry_changes_nothing_but_the_applied_index),
        T(snapshot_then_restore_reproduces_the_state),
        T(restore_skips_a_snapshot_not_newer_than_the_store),
        T(restore_refuses_foreign_bytes_and_leaves_them_to_the_caller),
    };
#undef T

    return cmocka_run_group_tests_name("fsm", tests, NULL, NULL);
}
