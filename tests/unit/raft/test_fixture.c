/* tests/unit/raft/test_fixture.c: the real FSM over real stores inside
 * libraft's deterministic in-memory cluster (raft/fixture.h): replication to
 * every replica, and a lagging replica catching up by snapshot install once
 * the log it missed has been compacted. */
#include "tests/unit/raft/raft_tests.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <raft/fixture.h>

#include "raft/cluster_internal.h"

#define N_SERVERS     3u
#define MAX_PROPOSALS 64u
#define STEP_LIMIT_MS 20000u

struct fx {
    struct raft_fixture f;
    struct raft_tracer quiet; /* the fixture's own tracer prints every step */
    struct tstore ts[N_SERVERS];
    struct cluster_fsm fsm[N_SERVERS];
    struct raft_apply reqs[MAX_PROPOSALS];
    int status[MAX_PROPOSALS];
    unsigned n_proposed;
};

static void trace_nothing(struct raft_tracer *t, int type, const void *info)
{
    (void)t;
    (void)type;
    (void)info;
}

/* After each step, as the replica's loop does after each iteration: what
 * the step applied commits as one batch. */
static void fx_on_step(struct raft_fixture *f, struct raft_fixture_event *event)
{
    struct fx *fx = (struct fx *)((char *)f - offsetof(struct fx, f));

    (void)event;
    for (unsigned i = 0; i < N_SERVERS; i++)
        cluster_fsm_flush(&fx->fsm[i]);
}

static int setup(void **state)
{
    struct fx *fx = calloc(1, sizeof *fx);
    struct raft_configuration conf;
    char errmsg[256];

    assert_non_null(fx);
    fx->quiet.version = 2;
    fx->quiet.emit = trace_nothing;
    assert_int_equal(raft_fixture_init(&fx->f), 0);
    for (unsigned i = 0; i < N_SERVERS; i++) {
        tstore_open(&fx->ts[i]);
        assert_int_equal(cluster_fsm_init(&fx->fsm[i], fx->ts[i].s, NULL, NULL, errmsg), 0);
        assert_int_equal(raft_fixture_grow(&fx->f, &fx->fsm[i].fsm), 0);
        fx->fsm[i].raft = raft_fixture_get(&fx->f, i);
        if (getenv("CONCORD_TEST_LOG") == NULL)
            fx->fsm[i].raft->tracer = &fx->quiet;
    }
    assert_int_equal(raft_fixture_configuration(&fx->f, N_SERVERS, &conf), 0);
    assert_int_equal(raft_fixture_bootstrap(&fx->f, &conf), 0);
    raft_configuration_close(&conf);
    raft_fixture_hook(&fx->f, fx_on_step);
    assert_int_equal(raft_fixture_start(&fx->f), 0);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fx *fx = *state;

    raft_fixture_close(&fx->f);
    for (unsigned i = 0; i < N_SERVERS; i++) {
        cluster_fsm_close(&fx->fsm[i]);
        tstore_close(&fx->ts[i]);
    }
    free(fx);
    return 0;
}

static void on_apply(struct raft_apply *req, int status, void *result)
{
    int *out = req->data;

    assert_null(result);
    *out = status;
}

/* Proposes on server i and returns the entry's index. */
static uint64_t propose(struct fx *fx, unsigned i, Concord__Command *cmd)
{
    unsigned k = fx->n_proposed++;
    struct raft_buffer buf;
    uint8_t *bytes = NULL;
    size_t len = 0;

    assert_true(k < MAX_PROPOSALS);
    assert_int_equal(cluster_command_encode(cmd, &bytes, &len), 0);
    concord__command__free_unpacked(cmd, NULL);
    buf.base = bytes;
    buf.len = len;
    fx->status[k] = -1;
    fx->reqs[k].data = &fx->status[k];
    assert_int_equal(raft_apply(raft_fixture_get(&fx->f, i), &fx->reqs[k], &buf, 1, on_apply), 0);
    return fx->reqs[k].index;
}

static void propose_users(struct fx *fx, unsigned leader, const char *prefix, unsigned n,
                          uint64_t *last_index)
{
    char name[32];

    for (unsigned j = 0; j < n; j++) {
        snprintf(name, sizeof name, "%s-%u", prefix, j);
        *last_index = propose(fx, leader, cmd_create_user(name, NULL));
    }
}

static void assert_same_state(struct fx *fx, unsigned a, unsigned b)
{
    uint8_t ha[32];
    uint8_t hb[32];

    state_hash(fx->ts[a].s, ha);
    state_hash(fx->ts[b].s, hb);
    assert_memory_equal(ha, hb, 32);
}

static void three_replicas_apply_the_same_entries_into_the_same_state(void **state)
{
    struct fx *fx = *state;
    uint64_t last = 0;

    raft_fixture_elect(&fx->f, 0);
    propose_users(fx, 0, "user", 10, &last);
    /* A failing command is replicated and applied too, as a result. */
    last = propose(fx, 0, cmd_create_user("user-3", NULL));
    assert_true(raft_fixture_step_until_applied(&fx->f, N_SERVERS, last, STEP_LIMIT_MS));
    for (unsigned k = 0; k < fx->n_proposed; k++)
        assert_int_equal(fx->status[k], 0);
    for (unsigned i = 0; i < N_SERVERS; i++) {
        assert_int_equal(user_count(fx->ts[i].s), 10);
        assert_int_equal(store_applied(fx->ts[i].s), last);
    }
    assert_same_state(fx, 0, 1);
    assert_same_state(fx, 0, 2);
}

static void lagging_replica_catches_up_by_snapshot_install(void **state)
{
    struct fx *fx = *state;
    uint64_t last = 0;

    for (unsigned i = 0; i < N_SERVERS; i++) {
        raft_set_snapshot_threshold(raft_fixture_get(&fx->f, i), 4);
        raft_set_snapshot_trailing(raft_fixture_get(&fx->f, i), 2);
    }
    raft_fixture_elect(&fx->f, 0);
    propose_users(fx, 0, "early", 2, &last);
    assert_true(raft_fixture_step_until_applied(&fx->f, N_SERVERS, last, STEP_LIMIT_MS));

    raft_fixture_kill(&fx->f, 2);
    propose_users(fx, 0, "missed", 30, &last);
    assert_true(raft_fixture_step_until_applied(&fx->f, 0, last, STEP_LIMIT_MS));
    assert_true(raft_fixture_step_until_applied(&fx->f, 1, last, STEP_LIMIT_MS));
    assert_int_equal(user_count(fx->ts[2].s), 2);

    raft_fixture_revive(&fx->f, 2);
    assert_true(raft_fixture_step_until_applied(&fx->f, 2, last, STEP_LIMIT_MS));
    assert_true(raft_fixture_n_recv(&fx->f, 2, RAFT_INSTALL_SNAPSHOT) >= 1);
    assert_int_equal(user_count(fx->ts[2].s), 32);
    assert_same_state(fx, 0, 2);
    assert_same_state(fx, 1, 2);

    /* And it keeps applying new entries from the log afterwards. */
    last = propose(fx, 0, cmd_create_user("after", NULL));
    assert_true(raft_fixture_step_until_applied(&fx->f, N_SERVERS, last, STEP_LIMIT_MS));
    assert_same_state(fx, 0, 2);
}

int test_fixture_run(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(three_replicas_apply_the_same_entries_into_the_same_state),
        T(lagging_replica_catches_up_by_snapshot_install),
    };
#undef T

    return cmocka_run_group_tests_name("fixture", tests, NULL, NULL);
}
