/* tests/unit/raft/test_fsm.c: struct raft_fsm over a store, called the way
 * libraft calls it: apply with last_applied one below the entry, several
 * applies in one loop iteration forming a batch that cluster_fsm_flush()
 * commits, snapshot buffers concatenated into the single buffer restore
 * receives. */
#include "tests/unit/raft/raft_tests.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "raft/cluster_internal.h"

#define MAX_RESULTS 16u

/* A result as claim saw it, copied. */
struct seen_result {
    uint64_t entry;
    uint32_t code;
    uint64_t id;
    uint64_t index;
    char message[128];
};

struct fsm_ctx {
    struct tstore ts;
    struct cluster_fsm f;
    struct raft raft; /* only last_applied is read, through raft_last_applied() */
    Concord__CommandResult last;
    unsigned n_applied;
    uint64_t last_event_index;
    struct seen_result claimed[MAX_RESULTS];
    unsigned n_claimed;
};

static void on_claim(void *arg, uint64_t index, const Concord__Command *cmd,
                     const Concord__CommandResult *result)
{
    struct fsm_ctx *x = arg;
    struct seen_result *r;

    (void)cmd;
    assert_int_equal(index, x->raft.last_applied + 1);
    assert_true(x->n_claimed < MAX_RESULTS);
    r = &x->claimed[x->n_claimed++];
    r->entry = index;
    r->code = result->code;
    r->id = result->id;
    r->index = result->index;
    snprintf(r->message, sizeof r->message, "%s", result->message != NULL ? result->message : "");
}

/* The applied hook: in log order, and only once the store shows the entry. */
static void on_applied(void *arg, uint64_t index, const Concord__Command *cmd,
                       const Concord__CommandResult *result)
{
    struct fsm_ctx *x = arg;

    (void)cmd;
    assert_true(index > x->last_event_index);
    assert_true(index <= x->raft.last_applied);
    assert_true(store_applied(x->ts.s) >= index);
    x->last_event_index = index;
    x->last.code = result->code;
    x->last.id = result->id;
    x->last.index = result->index;
    x->n_applied++;
}

static void fsm_ctx_init(struct fsm_ctx *x)
{
    char errmsg[256];

    assert_int_equal(cluster_fsm_init(&x->f, x->ts.s, NULL, NULL, errmsg), 0);
    x->f.raft = &x->raft;
    x->f.claim = on_claim;
    x->f.claim_arg = x;
    x->f.applied = on_applied;
    x->f.applied_arg = x;
}

static void fsm_ctx_open(struct fsm_ctx *x)
{
    memset(x, 0, sizeof *x);
    tstore_open(&x->ts);
    fsm_ctx_init(x);
}

static void fsm_ctx_close(struct fsm_ctx *x)
{
    cluster_fsm_close(&x->f);
    tstore_close(&x->ts);
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

    fsm_ctx_close(x);
    free(x);
    return 0;
}

/* Applies into the open batch, as libraft does within one loop iteration. */
static void apply_bytes(struct fsm_ctx *x, uint64_t index, void *buf, size_t len)
{
    struct raft_buffer b = {buf, len};
    void *result = &b;

    x->raft.last_applied = index - 1;
    assert_int_equal(x->f.fsm.apply(&x->f.fsm, &b, &result), 0);
    assert_null(result);
    x->raft.last_applied = index;
}

static void apply_in_batch(struct fsm_ctx *x, uint64_t index, Concord__Command *cmd)
{
    uint8_t *buf = NULL;
    size_t len = 0;

    assert_int_equal(cluster_command_encode(cmd, &buf, &len), 0);
    apply_bytes(x, index, buf, len);
    cluster_command_buf_free(buf);
    concord__command__free_unpacked(cmd, NULL);
}

/* One entry in its own loop iteration: applied, then committed. */
static void apply_cmd(struct fsm_ctx *x, uint64_t index, Concord__Command *cmd)
{
    apply_in_batch(x, index, cmd);
    cluster_fsm_flush(&x->f);
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
    cluster_fsm_flush(&x->f);
    state_hash(x->ts.s, after);
    assert_memory_equal(before, after, 32);
    assert_int_equal(store_applied(x->ts.s), 1);
    assert_int_equal(x->n_applied, 0);
}

/* ---- batches ---- */

#define BATCH_ENTRIES 8u

/* Entry i (1-based) of a batch that mixes successes, failures and retries. */
static Concord__Command *batch_cmd(uint64_t i)
{
    static const uint8_t id_a[16] = {0xa1, 1};
    static const uint8_t id_b[16] = {0xb2, 2};
    static const uint8_t id_c[16] = {0xc3, 3};

    switch (i) {
    case 1:
        return cmd_create_user("alice", id_a);
    case 2:
        return cmd_create_user("bob", NULL);
    case 3: /* a retry of entry 1 inside the same batch: entry 1's result */
        return cmd_create_user("carol", id_a);
    case 4: /* fails: bob exists since entry 2 */
        return cmd_create_user("bob", NULL);
    case 5: /* a success right after a failure */
        return cmd_create_user("dave", id_b);
    case 6: /* fails, and its failure is recorded for id_c */
        return cmd_create_user("alice", id_c);
    case 7: /* a retry of the failed entry 6: the same failure, nothing applied */
        return cmd_create_user("zed", id_c);
    case 8:
        return cmd_create_user("erin", NULL);
    default:
        fail_msg("no batch entry %llu", (unsigned long long)i);
        return NULL;
    }
}

static void assert_same_results(const struct fsm_ctx *a, const struct fsm_ctx *b)
{
    assert_int_equal(a->n_claimed, b->n_claimed);
    for (unsigned i = 0; i < a->n_claimed; i++) {
        assert_int_equal(a->claimed[i].entry, b->claimed[i].entry);
        assert_int_equal(a->claimed[i].code, b->claimed[i].code);
        assert_int_equal(a->claimed[i].id, b->claimed[i].id);
        assert_int_equal(a->claimed[i].index, b->claimed[i].index);
        assert_string_equal(a->claimed[i].message, b->claimed[i].message);
    }
}

static void assert_same_state(struct store *a, struct store *b)
{
    uint8_t ha[32];
    uint8_t hb[32];

    state_hash(a, ha);
    state_hash(b, hb);
    assert_memory_equal(ha, hb, 32);
}

static void batch_commits_once_with_the_results_of_sequential_application(void **state)
{
    struct fsm_ctx *x = *state;
    struct fsm_ctx *seq = malloc(sizeof *seq);

    assert_non_null(seq);
    fsm_ctx_open(seq);
    for (uint64_t i = 1; i <= BATCH_ENTRIES; i++)
        apply_cmd(seq, i, batch_cmd(i));
    assert_int_equal(seq->f.n_batches, BATCH_ENTRIES);

    for (uint64_t i = 1; i <= BATCH_ENTRIES; i++)
        apply_in_batch(x, i, batch_cmd(i));
    cluster_fsm_flush(&x->f);
    assert_int_equal(x->f.n_batches, 1);
    assert_int_equal(x->n_applied, BATCH_ENTRIES);

    assert_same_results(x, seq);
    assert_same_state(x->ts.s, seq->ts.s);
    assert_int_equal(store_applied(x->ts.s), BATCH_ENTRIES);
    assert_int_equal(audit_count(x->ts.s), audit_count(seq->ts.s));

    /* What sequential application gives, spelled out. */
    assert_int_equal(x->claimed[0].code, CLUSTER_RESULT_OK); /* alice: id 1 */
    assert_int_equal(x->claimed[2].code, CLUSTER_RESULT_OK); /* retry of 1 */
    assert_int_equal(x->claimed[2].id, 1);
    assert_int_equal(x->claimed[2].index, 1);
    assert_int_equal(x->claimed[3].code, CLUSTER_RESULT_CONFLICT);
    assert_int_equal(x->claimed[4].code, CLUSTER_RESULT_OK); /* dave: id 3 */
    assert_int_equal(x->claimed[4].id, 3);
    assert_int_equal(x->claimed[5].code, CLUSTER_RESULT_CONFLICT);
    assert_int_equal(x->claimed[6].code, CLUSTER_RESULT_CONFLICT); /* retry of 6 */
    assert_int_equal(x->claimed[6].index, 6);
    assert_int_equal(x->claimed[7].id, 4); /* erin: failures used no id */
    assert_false(user_exists(x->ts.s, "carol"));
    assert_false(user_exists(x->ts.s, "zed"));
    assert_int_equal(user_count(x->ts.s), 4);

    fsm_ctx_close(seq);
    free(seq);
}

static void nothing_of_a_batch_is_visible_before_it_commits(void **state)
{
    struct fsm_ctx *x = *state;
    uint8_t empty[32];
    uint8_t during[32];

    apply_cmd(x, 1, cmd_create_user("alice", NULL));
    state_hash(x->ts.s, empty);
    apply_in_batch(x, 2, cmd_create_user("bob", NULL));
    apply_in_batch(x, 3, cmd_create_user("carol", NULL));

    /* Claimed for a later answer, but neither published nor readable. */
    assert_int_equal(x->n_claimed, 3);
    assert_int_equal(x->n_applied, 1);
    state_hash(x->ts.s, during);
    assert_memory_equal(empty, during, 32);
    assert_int_equal(store_applied(x->ts.s), 1);
    assert_false(user_exists(x->ts.s, "bob"));
    assert_int_equal(x->f.store_applied, 1);

    cluster_fsm_flush(&x->f);
    assert_int_equal(x->n_applied, 3);
    assert_int_equal(x->last_event_index, 3);
    assert_true(user_exists(x->ts.s, "bob"));
    assert_true(user_exists(x->ts.s, "carol"));
    assert_int_equal(store_applied(x->ts.s), 3);
    assert_int_equal(x->f.store_applied, 3);

    /* Nothing left: a second flush commits nothing. */
    cluster_fsm_flush(&x->f);
    assert_int_equal(x->f.n_batches, 2);
    assert_int_equal(x->n_applied, 3);
}

/* ---- snapshots ---- */

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

    assert_non_null(y);
    apply_cmd(x, 1, cmd_create_user("alice", NULL));
    apply_cmd(x, 2, cmd_create_user("bob", NULL));
    apply_cmd(x, 3, cmd_create_user("carol", NULL));
    snap = take_snapshot(x);

    fsm_ctx_open(y);
    assert_int_equal(y->f.fsm.restore(&y->f.fsm, &snap), 0); /* takes snap.base */
    assert_same_state(x->ts.s, y->ts.s);
    assert_int_equal(store_applied(y->ts.s), 3);
    assert_int_equal(y->f.store_applied, 3);

    /* Entries after the snapshot apply on top of it. */
    apply_cmd(y, 4, cmd_create_user("dave", NULL));
    assert_int_equal(y->last.id, 4);
    fsm_ctx_close(y);
    free(y);
}

static void snapshot_commits_the_open_batch_before_dumping(void **state)
{
    struct fsm_ctx *x = *state;
    struct fsm_ctx *y = malloc(sizeof *y);
    struct raft_buffer snap;
    uint64_t dump_index = 0;

    assert_non_null(y);
    apply_in_batch(x, 1, cmd_create_user("alice", NULL));
    apply_in_batch(x, 2, cmd_create_user("bob", NULL));
    snap = take_snapshot(x);
    assert_int_equal(x->f.n_batches, 1);
    assert_int_equal(x->n_applied, 2);
    assert_int_equal(cluster_snapshot_header_decode(snap.base, snap.len, &dump_index), 0);
    assert_int_equal(dump_index, 2);

    fsm_ctx_open(y);
    assert_int_equal(y->f.fsm.restore(&y->f.fsm, &snap), 0);
    assert_same_state(x->ts.s, y->ts.s);
    assert_true(user_exists(y->ts.s, "bob"));
    fsm_ctx_close(y);
    free(y);
}

static void restore_commits_the_open_batch_then_loads_a_newer_snapshot(void **state)
{
    struct fsm_ctx *x = *state;
    struct fsm_ctx *leader = malloc(sizeof *leader);
    struct raft_buffer snap;

    assert_non_null(leader);
    fsm_ctx_open(leader);
    for (uint64_t i = 1; i <= 3; i++)
        apply_cmd(leader, i, batch_cmd(i));
    snap = take_snapshot(leader);

    apply_in_batch(x, 1, batch_cmd(1));
    assert_int_equal(x->f.fsm.restore(&x->f.fsm, &snap), 0);
    assert_int_equal(x->f.n_batches, 1); /* entry 1, committed before the load */
    assert_int_equal(x->n_applied, 1);
    assert_same_state(x->ts.s, leader->ts.s);
    assert_int_equal(store_applied(x->ts.s), 3);

    /* The log goes on after the snapshot's index. */
    apply_cmd(x, 4, batch_cmd(4));
    apply_cmd(leader, 4, batch_cmd(4));
    assert_same_state(x->ts.s, leader->ts.s);
    fsm_ctx_close(leader);
    free(leader);
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

/* ---- crash between apply and commit ---- */

#define CRASH_COMMITTED 4u /* entries 1..4 commit, 5..8 are applied and lost */

/* The child: no cmocka (it must not return into the parent's runner); any
 * surprise exits 1, the planned crash is SIGKILL. */
static void crash_child_apply(struct cluster_fsm *f, struct raft *r, uint64_t index)
{
    Concord__Command *cmd = batch_cmd(index);
    struct raft_buffer b;
    uint8_t *buf = NULL;
    size_t len = 0;
    void *result;

    if (cluster_command_encode(cmd, &buf, &len) != 0)
        _exit(1);
    b.base = buf;
    b.len = len;
    r->last_applied = index - 1;
    if (f->fsm.apply(&f->fsm, &b, &result) != 0)
        _exit(1);
    r->last_applied = index;
    cluster_command_buf_free(buf);
    concord__command__free_unpacked(cmd, NULL);
}

static void crash_child(const char *dir)
{
    struct store_options opts = {dir, TEST_MAP_SIZE_BYTES, 0};
    struct cluster_fsm f;
    struct raft r;
    struct store *s = NULL;

    memset(&r, 0, sizeof r);
    if (store_open(&opts, &s, NULL) != 0 || cluster_fsm_init(&f, s, NULL, NULL, NULL) != 0)
        _exit(1);
    f.raft = &r;
    for (uint64_t i = 1; i <= CRASH_COMMITTED; i++)
        crash_child_apply(&f, &r, i);
    cluster_fsm_flush(&f);
    for (uint64_t i = CRASH_COMMITTED + 1; i <= BATCH_ENTRIES; i++)
        crash_child_apply(&f, &r, i);
    raise(SIGKILL); /* between apply and commit */
    _exit(1);
}

static void a_crash_before_the_commit_replays_the_batch_from_the_log(void **state)
{
    struct fsm_ctx *x = *state;
    struct fsm_ctx *seq = malloc(sizeof *seq);
    struct store_options opts = {x->ts.dir, TEST_MAP_SIZE_BYTES, 0};
    int status = 0;
    pid_t pid;

    assert_non_null(seq);
    /* The child owns the environment while it runs. */
    cluster_fsm_close(&x->f);
    store_close(x->ts.s);
    x->ts.s = NULL;
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        crash_child(x->ts.dir);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGKILL);

    /* Restart: the store holds the committed batch only. */
    assert_int_equal(store_open(&opts, &x->ts.s, NULL), 0);
    assert_int_equal(store_applied(x->ts.s), CRASH_COMMITTED);
    assert_int_equal(user_count(x->ts.s), 2); /* alice and bob */
    fsm_ctx_init(x);

    /* libraft replays the log from the start (no snapshot): the committed
     * entries are skipped, the lost ones applied again. */
    for (uint64_t i = 1; i <= BATCH_ENTRIES; i++)
        apply_in_batch(x, i, batch_cmd(i));
    cluster_fsm_flush(&x->f);
    assert_int_equal(x->n_claimed, BATCH_ENTRIES - CRASH_COMMITTED);
    assert_int_equal(x->claimed[0].entry, CRASH_COMMITTED + 1);

    fsm_ctx_open(seq);
    for (uint64_t i = 1; i <= BATCH_ENTRIES; i++)
        apply_cmd(seq, i, batch_cmd(i));
    assert_same_state(x->ts.s, seq->ts.s);
    assert_int_equal(store_applied(x->ts.s), BATCH_ENTRIES);
    for (unsigned i = 0; i < x->n_claimed; i++) {
        const struct seen_result *a = &x->claimed[i];
        const struct seen_result *b = &seq->claimed[CRASH_COMMITTED + i];

        assert_int_equal(a->entry, b->entry);
        assert_int_equal(a->code, b->code);
        assert_int_equal(a->id, b->id);
        assert_int_equal(a->index, b->index);
    }
    fsm_ctx_close(seq);
    free(seq);
}

int test_fsm_run(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(apply_records_the_index_and_skips_replayed_entries),
        T(duplicate_request_id_returns_the_first_result),
        T(undecodable_entry_changes_nothing_but_the_applied_index),
        T(batch_commits_once_with_the_results_of_sequential_application),
        T(nothing_of_a_batch_is_visible_before_it_commits),
        T(snapshot_then_restore_reproduces_the_state),
        T(snapshot_commits_the_open_batch_before_dumping),
        T(restore_commits_the_open_batch_then_loads_a_newer_snapshot),
        T(restore_skips_a_snapshot_not_newer_than_the_store),
        T(restore_refuses_foreign_bytes_and_leaves_them_to_the_caller),
        T(a_crash_before_the_commit_replays_the_batch_from_the_log),
    };
#undef T

    return cmocka_run_group_tests_name("fsm", tests, NULL, NULL);
}
