/* tests/unit/raft/test_cluster.c: raft/cluster.c end to end in one process.
 * Three (or four) replicas share one loop, with raft_uv on loopback and raft
 * directories in temporary folders. The peer transport is a test double that
 * delivers each PeerRequest to the target's cluster_peer_handle() on a later
 * loop iteration and can be told to fail or to lose replies. Every wait is
 * bounded in loop time. */
#include "tests/unit/raft/raft_tests.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "raft/cluster.h"
#include "tests/lib/testdir.h"

#define MAX_NODES         4u
#define ELECTION_MS       500u
#define HEARTBEAT_MS      50u
#define SUBMIT_TIMEOUT_MS 5000u
/* Small, so that a replica missing a few dozen entries needs a snapshot. */
#define SNAPSHOT_THRESHOLD 16u
#define SNAPSHOT_TRAILING  8u
#define WAIT_LIMIT_MS      20000u
#define CONCURRENT_WRITES  32u

struct env;

struct node {
    struct env *env;
    uint64_t id;
    char raft_dir[256];
    struct tstore ts;
    char raft_address[64];
    char http_address[64];
    struct cluster *c; /* NULL once stopping */
    bool is_running;   /* false once its close callback ran */
    unsigned n_applied;
    uint64_t last_applied_event; /* index of the last applied event */
    unsigned n_batched_events;   /* events whose batch also held later entries */
    unsigned n_restored;         /* "snapshot restored" log lines */
};

struct env {
    uv_loop_t loop;
    struct node nodes[MAX_NODES];
    unsigned n_nodes;
    bool is_failing;       /* every delivery fails without arriving */
    unsigned lose_replies; /* the next deliveries arrive, their replies are lost */
    unsigned n_sends;
    unsigned n_open_deliveries;
};

/* ---- the test transport ---- */

struct delivery {
    uv_timer_t timer;
    struct env *env;
    struct node *target;
    uint8_t *request;
    size_t len;
    uint8_t *reply;
    size_t reply_len;
    cluster_transport_done_cb done;
    void *req_arg;
    int status;
    bool is_reply_lost;
    bool is_answered; /* the request has been handled (or failed) */
};

static void delivery_on_close(uv_handle_t *h)
{
    struct delivery *d = h->data;

    d->env->n_open_deliveries--;
    free(d->request);
    free(d->reply);
    free(d);
}

static void delivery_on_timer(uv_timer_t *t);

static void delivery_on_reply(void *arg, const uint8_t *reply, size_t len)
{
    struct delivery *d = arg;

    d->reply = malloc(len + 1);
    assert_non_null(d->reply);
    memcpy(d->reply, reply, len);
    d->reply_len = len;
    d->status = d->is_reply_lost ? CLUSTER_TRANSPORT : CLUSTER_OK;
    d->is_answered = true;
    uv_timer_start(&d->timer, delivery_on_timer, 0, 0);
}

static void delivery_on_timer(uv_timer_t *t)
{
    struct delivery *d = t->data;

    if (!d->is_answered) {
        if (d->env->is_failing || d->target->c == NULL) {
            d->status = CLUSTER_TRANSPORT;
            d->is_answered = true;
        } else {
            cluster_peer_handle(d->target->c, d->request, d->len, delivery_on_reply, d);
            return;
        }
    }
    d->done(d->req_arg, d->status, d->reply, d->reply_len);
    uv_close((uv_handle_t *)&d->timer, delivery_on_close);
}

static int transport_send(void *arg, const char *http_address, const uint8_t *request, size_t len,
                          cluster_transport_done_cb done, void *req_arg)
{
    struct env *e = arg;
    struct node *target = NULL;
    struct delivery *d;

    for (unsigned i = 0; i < e->n_nodes; i++) {
        if (strcmp(e->nodes[i].http_address, http_address) == 0)
            target = &e->nodes[i];
    }
    if (target == NULL || target->c == NULL)
        return -1; /* connection refused: it surely did not arrive */
    d = calloc(1, sizeof *d);
    assert_non_null(d);
    d->env = e;
    d->target = target;
    d->request = malloc(len + 1);
    assert_non_null(d->request);
    memcpy(d->request, request, len);
    d->len = len;
    d->done = done;
    d->req_arg = req_arg;
    if (e->lose_replies > 0) {
        e->lose_replies--;
        d->is_reply_lost = true;
    }
    e->n_sends++;
    e->n_open_deliveries++;
    uv_timer_init(&e->loop, &d->timer);
    d->timer.data = d;
    uv_timer_start(&d->timer, delivery_on_timer, 0, 0);
    return 0;
}

/* ---- replicas ---- */

static void test_log(void *arg, enum cluster_log_level level, const char *msg)
{
    struct node *n = arg;

    if (strstr(msg, "snapshot restored") != NULL)
        n->n_restored++;
    if (getenv("CONCORD_TEST_LOG") != NULL)
        fprintf(stderr, "[%llu] %d %s\n", (unsigned long long)n->id, (int)level, msg);
}

static void on_applied(void *arg, uint64_t index, const Concord__Command *cmd,
                       const Concord__CommandResult *result)
{
    struct node *n = arg;
    uint64_t committed = store_applied(n->ts.s);

    (void)cmd;
    (void)result;
    /* In log order, and only once the store shows the entry. */
    assert_true(index > n->last_applied_event);
    assert_true(committed >= index);
    if (committed > index)
        n->n_batched_events++;
    n->last_applied_event = index;
    n->n_applied++;
}

static unsigned free_port(void)
{
    struct sockaddr_in addr = {0};
    socklen_t len = sizeof addr;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
    close(fd);
    return ntohs(addr.sin_port);
}

static void options_of(struct node *n, struct cluster_options *o)
{
    memset(o, 0, sizeof *o);
    o->id = n->id;
    o->raft_address = n->raft_address;
    o->http_address = n->http_address;
    o->raft_dir = n->raft_dir;
    o->store = n->ts.s;
    o->election_timeout_ms = ELECTION_MS;
    o->heartbeat_timeout_ms = HEARTBEAT_MS;
    o->submit_timeout_ms = SUBMIT_TIMEOUT_MS;
    o->snapshot_threshold = SNAPSHOT_THRESHOLD;
    o->snapshot_trailing = SNAPSHOT_TRAILING;
    o->transport.send = transport_send;
    o->transport.arg = n->env;
    o->log = test_log;
    o->log_arg = n;
    o->applied = on_applied;
    o->applied_arg = n;
}

static struct node *node_add(struct env *e)
{
    struct node *n = &e->nodes[e->n_nodes++];

    n->env = e;
    n->id = e->n_nodes;
    tstore_open(&n->ts);
    assert_int_equal(testdir_make(n->raft_dir, sizeof n->raft_dir), 0);
    snprintf(n->raft_address, sizeof n->raft_address, "127.0.0.1:%u", free_port());
    snprintf(n->http_address, sizeof n->http_address, "http-%llu", (unsigned long long)n->id);
    return n;
}

static void node_start(struct node *n)
{
    struct cluster_options o;
    char errmsg[256] = "";
    int rv;

    options_of(n, &o);
    rv = cluster_new(&n->env->loop, &o, &n->c, errmsg);
    if (rv != 0)
        fail_msg("cluster_new: %s: %s", cluster_strerror(rv), errmsg);
    rv = cluster_start(n->c, errmsg);
    if (rv != 0)
        fail_msg("cluster_start: %s: %s", cluster_strerror(rv), errmsg);
    n->is_running = true;
}

static void node_on_closed(void *arg)
{
    struct node *n = arg;

    n->is_running = false;
}

static void node_stop(struct node *n)
{
    struct cluster *c = n->c;

    if (c == NULL)
        return;
    n->c = NULL; /* the transport refuses to reach it from now on */
    cluster_close(c, node_on_closed, n);
}

static bool run_until(struct env *e, bool (*pred)(void *), void *arg, uint64_t limit_ms)
{
    uint64_t start;

    uv_update_time(&e->loop);
    start = uv_now(&e->loop);
    while (!pred(arg)) {
        uv_update_time(&e->loop);
        if (uv_now(&e->loop) - start > limit_ms)
            return false;
        uv_run(&e->loop, UV_RUN_ONCE);
    }
    return true;
}

static bool all_stopped(void *arg)
{
    struct env *e = arg;

    for (unsigned i = 0; i < e->n_nodes; i++) {
        if (e->nodes[i].is_running)
            return false;
    }
    return e->n_open_deliveries == 0;
}

/* Every running replica knows the same leader and can reach it: the
 * leader's address record has been applied everywhere. */
static bool leader_known_everywhere(void *arg)
{
    struct env *e = arg;
    uint64_t leader = 0;

    for (unsigned i = 0; i < e->n_nodes; i++) {
        struct cluster_status st;

        if (e->nodes[i].c == NULL)
            continue;
        cluster_status_get(e->nodes[i].c, &st);
        if (st.leader_id == 0 || st.leader_http_address[0] == '\0')
            return false;
        if (leader != 0 && st.leader_id != leader)
            return false;
        leader = st.leader_id;
    }
    return leader != 0;
}

static struct node *leader_of(struct env *e)
{
    for (unsigned i = 0; i < e->n_nodes; i++) {
        struct cluster_status st;

        if (e->nodes[i].c == NULL)
            continue;
        cluster_status_get(e->nodes[i].c, &st);
        if (st.role == CLUSTER_ROLE_LEADER)
            return &e->nodes[i];
    }
    fail_msg("no leader");
    return NULL;
}

/* The k-th running replica that is not the leader. */
static struct node *follower_of(struct env *e, unsigned k)
{
    struct node *leader = leader_of(e);

    for (unsigned i = 0; i < e->n_nodes; i++) {
        if (e->nodes[i].c != NULL && &e->nodes[i] != leader && k-- == 0)
            return &e->nodes[i];
    }
    fail_msg("no follower");
    return NULL;
}

static int setup(void **state)
{
    struct env *e = calloc(1, sizeof *e);
    struct cluster_member members[3];
    struct cluster_options o;
    char errmsg[256] = "";

    assert_non_null(e);
    assert_int_equal(uv_loop_init(&e->loop), 0);
    for (unsigned i = 0; i < 3; i++)
        node_add(e);
    for (unsigned i = 0; i < 3; i++) {
        memset(&members[i], 0, sizeof members[i]);
        members[i].id = e->nodes[i].id;
        snprintf(members[i].raft_address, sizeof members[i].raft_address, "%s",
                 e->nodes[i].raft_address);
        members[i].is_voter = true;
    }
    for (unsigned i = 0; i < 3; i++) {
        options_of(&e->nodes[i], &o);
        if (cluster_bootstrap(&o, members, 3, errmsg) != 0)
            fail_msg("bootstrap: %s", errmsg);
        /* Never twice. */
        assert_int_equal(cluster_bootstrap(&o, members, 3, errmsg), CLUSTER_EXISTS);
    }
    for (unsigned i = 0; i < 3; i++)
        node_start(&e->nodes[i]);
    assert_true(run_until(e, leader_known_everywhere, e, WAIT_LIMIT_MS));
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;

    e->is_failing = false;
    for (unsigned i = 0; i < e->n_nodes; i++)
        node_stop(&e->nodes[i]);
    assert_true(run_until(e, all_stopped, e, WAIT_LIMIT_MS));
    uv_run(&e->loop, UV_RUN_NOWAIT);
    assert_int_equal(uv_loop_close(&e->loop), 0);
    for (unsigned i = 0; i < e->n_nodes; i++) {
        tstore_close(&e->nodes[i].ts);
        testdir_remove(e->nodes[i].raft_dir);
    }
    free(e);
    return 0;
}

/* ---- outcomes ---- */

struct outcome {
    bool is_done;
    int status;
    uint32_t code;
    uint64_t id;
    uint64_t index;
    struct node *node; /* checked when the callback fires */
    const char *user;  /* the user that must then be visible on node */
    bool is_user_visible;
    uint64_t store_applied_at_cb; /* read from the store, first thing */
    uint64_t applied_at_cb;       /* from cluster_status_get */
};

static void on_submitted(void *arg, int status, const Concord__CommandResult *result)
{
    struct outcome *o = arg;

    assert_false(o->is_done);
    o->is_done = true;
    o->status = status;
    if (result != NULL) {
        o->code = result->code;
        o->id = result->id;
        o->index = result->index;
    }
    if (o->node != NULL && o->node->c != NULL) {
        struct cluster_status st;

        /* Before any cluster_* call: the store alone must show the write. */
        o->store_applied_at_cb = store_applied(o->node->ts.s);
        if (o->user != NULL)
            o->is_user_visible = user_exists(o->node->ts.s, o->user);
        cluster_status_get(o->node->c, &st);
        o->applied_at_cb = st.applied_index;
    }
}

static void on_done(void *arg, int status)
{
    on_submitted(arg, status, NULL);
}

static bool outcome_done(void *arg)
{
    return ((struct outcome *)arg)->is_done;
}

static void wait_outcome(struct env *e, struct outcome *o)
{
    assert_true(run_until(e, outcome_done, o, WAIT_LIMIT_MS));
}

static void submit_user(struct env *e, struct node *n, const char *name, const uint8_t *request_id,
                        struct outcome *o)
{
    memset(o, 0, sizeof *o);
    o->node = n;
    o->user = name;
    assert_int_equal(cluster_submit(n->c, cmd_create_user(name, request_id), on_submitted, o), 0);
    wait_outcome(e, o);
}

struct converge {
    struct env *e;
    const char *user;
};

static bool user_everywhere(void *arg)
{
    struct converge *cv = arg;

    for (unsigned i = 0; i < cv->e->n_nodes; i++) {
        if (cv->e->nodes[i].c != NULL && !user_exists(cv->e->nodes[i].ts.s, cv->user))
            return false;
    }
    return true;
}

/* ---- tests ---- */

static void a_write_through_a_follower_is_readable_there_when_acknowledged(void **state)
{
    struct env *e = *state;
    struct node *f = follower_of(e, 0);
    struct node *l = leader_of(e);
    struct outcome o;
    struct cluster_status st;

    submit_user(e, f, "alice", NULL, &o);
    assert_int_equal(o.status, CLUSTER_OK);
    assert_int_equal(o.code, CLUSTER_RESULT_OK);
    assert_int_equal(o.id, 1);
    assert_true(o.is_user_visible);
    assert_true(o.applied_at_cb >= o.index);
    assert_true(o.store_applied_at_cb >= o.index);

    submit_user(e, l, "bob", NULL, &o);
    assert_int_equal(o.status, CLUSTER_OK);
    assert_int_equal(o.id, 2);
    assert_true(o.is_user_visible);

    /* A business failure is an applied result, not an error. */
    submit_user(e, f, "alice", NULL, &o);
    assert_int_equal(o.status, CLUSTER_OK);
    assert_int_equal(o.code, CLUSTER_RESULT_CONFLICT);

    cluster_status_get(f->c, &st);
    assert_int_equal(st.role, CLUSTER_ROLE_FOLLOWER);
    assert_int_equal(st.leader_id, l->id);
    assert_string_equal(st.leader_http_address, l->http_address);
    assert_int_equal(st.n_voters, 3);
    assert_true(st.leader_changes >= 1);
    assert_true(st.commit_index >= st.applied_index - 1);
    assert_true(f->n_applied >= 3);
    assert_string_equal(cluster_role_name(st.role), "follower");
}

static void a_retried_request_id_applies_once(void **state)
{
    struct env *e = *state;
    struct node *f = follower_of(e, 0);
    static const uint8_t id[16] = {0xaa, 0xbb, 1, 2, 3};
    struct outcome first;
    struct outcome again;
    struct converge cv = {e, "carol"};
    unsigned sends;

    /* The leader applies it but the reply is lost: the follower retries
     * with the same request id and learns the first result. */
    e->lose_replies = 1;
    sends = e->n_sends;
    submit_user(e, f, "carol", id, &first);
    assert_int_equal(first.status, CLUSTER_OK);
    assert_int_equal(first.code, CLUSTER_RESULT_OK);
    assert_true(e->n_sends >= sends + 2);
    assert_true(first.is_user_visible);

    submit_user(e, f, "carol", id, &again);
    assert_int_equal(again.status, CLUSTER_OK);
    assert_int_equal(again.code, CLUSTER_RESULT_OK);
    assert_int_equal(again.index, first.index);
    assert_int_equal(again.id, first.id);

    assert_true(run_until(e, user_everywhere, &cv, WAIT_LIMIT_MS));
    for (unsigned i = 0; i < e->n_nodes; i++)
        assert_int_equal(user_count(e->nodes[i].ts.s), 1);
}

static void barrier_on_a_follower_sees_writes_acknowledged_before(void **state)
{
    struct env *e = *state;
    struct node *l = leader_of(e);
    struct node *f = follower_of(e, 1);
    struct outcome w;
    struct outcome b;
    struct outcome batch[3];

    submit_user(e, l, "dave", NULL, &w);
    assert_int_equal(w.status, CLUSTER_OK);

    memset(&b, 0, sizeof b);
    b.node = f;
    b.user = "dave";
    assert_int_equal(cluster_barrier(f->c, on_done, &b), 0);
    wait_outcome(e, &b);
    assert_int_equal(b.status, CLUSTER_OK);
    assert_true(b.is_user_visible);
    assert_true(b.applied_at_cb >= w.index);
    assert_true(b.store_applied_at_cb >= w.index);

    /* Callers queued together on the leader share barriers. */
    memset(batch, 0, sizeof batch);
    for (unsigned i = 0; i < 3; i++)
        assert_int_equal(cluster_barrier(l->c, on_done, &batch[i]), 0);
    for (unsigned i = 0; i < 3; i++) {
        wait_outcome(e, &batch[i]);
        assert_int_equal(batch[i].status, CLUSTER_OK);
    }
}

static bool all_outcomes_done(void *arg)
{
    const struct outcome *o = arg;

    for (unsigned i = 0; i < CONCURRENT_WRITES; i++) {
        if (!o[i].is_done)
            return false;
    }
    return true;
}

static void concurrent_writes_commit_in_batches_and_each_reads_its_own_write(void **state)
{
    struct env *e = *state;
    struct node *l = leader_of(e);
    struct node *f = follower_of(e, 0);
    struct outcome *o = calloc(CONCURRENT_WRITES, sizeof *o);
    char(*names)[16] = calloc(CONCURRENT_WRITES, sizeof *names);
    struct converge cv = {e, NULL};

    assert_non_null(o);
    assert_non_null(names);
    /* Submitted in one go: libraft commits and applies them in a few loop
     * iterations, so most batches hold several entries. */
    for (unsigned i = 0; i < CONCURRENT_WRITES; i++) {
        struct node *n = i % 4 == 3 ? f : l;

        snprintf(names[i], sizeof names[i], "user-%u", i);
        o[i].node = n;
        o[i].user = names[i];
        assert_int_equal(cluster_submit(n->c, cmd_create_user(names[i], NULL), on_submitted, &o[i]),
                         0);
    }
    assert_true(run_until(e, all_outcomes_done, o, WAIT_LIMIT_MS));
    for (unsigned i = 0; i < CONCURRENT_WRITES; i++) {
        assert_int_equal(o[i].status, CLUSTER_OK);
        assert_int_equal(o[i].code, CLUSTER_RESULT_OK);
        assert_true(o[i].is_user_visible);
        assert_true(o[i].store_applied_at_cb >= o[i].index);
    }
    assert_true(l->n_batched_events > 0);

    cv.user = names[CONCURRENT_WRITES - 1];
    assert_true(run_until(e, user_everywhere, &cv, WAIT_LIMIT_MS));
    for (unsigned i = 0; i < e->n_nodes; i++)
        assert_int_equal(user_count(e->nodes[i].ts.s), CONCURRENT_WRITES);
    free(names);
    free(o);
}

static void without_quorum_writes_fail_fast_with_noleader(void **state)
{
    struct env *e = *state;
    struct node *survivor = follower_of(e, 0);
    struct node *l = leader_of(e);
    struct node *other = follower_of(e, 1);
    struct outcome w;
    struct outcome b;
    uint64_t start;

    node_stop(l);
    node_stop(other);
    uv_update_time(&e->loop);
    start = uv_now(&e->loop);
    submit_user(e, survivor, "erin", NULL, &w);
    assert_int_equal(w.status, CLUSTER_NOLEADER);
    assert_true(uv_now(&e->loop) - start < 5 * ELECTION_MS);
    assert_false(user_exists(survivor->ts.s, "erin"));

    memset(&b, 0, sizeof b);
    assert_int_equal(cluster_barrier(survivor->c, on_done, &b), 0);
    wait_outcome(e, &b);
    assert_int_equal(b.status, CLUSTER_NOLEADER);
}

static bool has_four_voters(void *arg)
{
    struct node *n = arg;
    struct cluster_status st;

    if (n->c == NULL)
        return false;
    cluster_status_get(n->c, &st);
    return st.n_voters == 4 && st.leader_id != 0 && st.applied_index >= st.commit_index;
}

static void a_fourth_replica_joins_then_is_removed(void **state)
{
    struct env *e = *state;
    struct node *f = follower_of(e, 0);
    struct node *fourth;
    struct converge cv = {e, "before-join"};
    struct cluster_member *members = NULL;
    struct cluster_member m;
    struct outcome w;
    struct outcome o;
    size_t n = 0;
    bool has_http = false;

    submit_user(e, f, "before-join", NULL, &w);
    assert_int_equal(w.status, CLUSTER_OK);

    /* Added by an operator on a follower (forwarded to the leader)... */
    fourth = node_add(e);
    node_start(fourth);
    memset(&m, 0, sizeof m);
    m.id = fourth->id;
    snprintf(m.raft_address, sizeof m.raft_address, "%s", fourth->raft_address);
    snprintf(m.http_address, sizeof m.http_address, "%s", fourth->http_address);
    memset(&o, 0, sizeof o);
    assert_int_equal(cluster_member_add(f->c, &m, on_done, &o), 0);
    wait_outcome(e, &o);
    assert_int_equal(o.status, CLUSTER_OK);
    assert_true(run_until(e, has_four_voters, fourth, WAIT_LIMIT_MS));
    assert_true(run_until(e, user_everywhere, &cv, WAIT_LIMIT_MS));

    /* ...and joining again through any replica is harmless. */
    memset(&o, 0, sizeof o);
    assert_int_equal(cluster_join(fourth->c, f->http_address, on_done, &o), 0);
    wait_outcome(e, &o);
    assert_int_equal(o.status, CLUSTER_OK);

    assert_int_equal(cluster_members(leader_of(e)->c, &members, &n), 0);
    assert_int_equal(n, 4);
    for (size_t i = 0; i < n; i++) {
        if (members[i].id == fourth->id) {
            assert_true(members[i].is_voter);
            assert_string_equal(members[i].raft_address, fourth->raft_address);
            has_http = strcmp(members[i].http_address, fourth->http_address) == 0;
        }
    }
    free(members);
    assert_true(has_http);

    /* Removal, asked on a follower. */
    memset(&o, 0, sizeof o);
    assert_int_equal(cluster_member_remove(f->c, fourth->id, on_done, &o), 0);
    wait_outcome(e, &o);
    assert_int_equal(o.status, CLUSTER_OK);
    assert_int_equal(cluster_members(leader_of(e)->c, &members, &n), 0);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++)
        assert_int_not_equal(members[i].id, fourth->id);
    free(members);
    node_stop(fourth);

    /* Removing an unknown replica says so. */
    memset(&o, 0, sizeof o);
    assert_int_equal(cluster_member_remove(f->c, 99, on_done, &o), 0);
    wait_outcome(e, &o);
    assert_int_equal(o.status, CLUSTER_NOTFOUND);

    /* Writes still work with three voters. */
    submit_user(e, f, "after-remove", NULL, &w);
    assert_int_equal(w.status, CLUSTER_OK);
}

struct leader_is {
    struct env *e;
    uint64_t id;
};

static bool leader_is(void *arg)
{
    struct leader_is *li = arg;

    if (!leader_known_everywhere(li->e))
        return false;
    return leader_of(li->e)->id == li->id;
}

static void leadership_transfers_to_the_named_voter(void **state)
{
    struct env *e = *state;
    struct node *l = leader_of(e);
    struct node *target = follower_of(e, 1);
    struct leader_is li = {e, target->id};
    struct outcome o;
    struct outcome w;

    memset(&o, 0, sizeof o);
    assert_int_equal(cluster_transfer_leadership(l->c, target->id, on_done, &o), 0);
    wait_outcome(e, &o);
    assert_int_equal(o.status, CLUSTER_OK);
    assert_true(run_until(e, leader_is, &li, WAIT_LIMIT_MS));

    /* Asked on the former leader, now a follower, for a replica that does not exist. */
    memset(&o, 0, sizeof o);
    assert_int_equal(cluster_transfer_leadership(l->c, 42, on_done, &o), 0);
    wait_outcome(e, &o);
    assert_int_equal(o.status, CLUSTER_NOTFOUND);

    /* The former leader forwards writes to the new one. */
    submit_user(e, l, "after-transfer", NULL, &w);
    assert_int_equal(w.status, CLUSTER_OK);
    assert_true(w.is_user_visible);
}

static void a_write_whose_forwarding_keeps_failing_ends_unknown(void **state)
{
    struct env *e = *state;
    struct node *f = follower_of(e, 0);
    struct outcome w;
    uint64_t start;

    e->is_failing = true;
    uv_update_time(&e->loop);
    start = uv_now(&e->loop);
    submit_user(e, f, "lost", NULL, &w);
    assert_int_equal(w.status, CLUSTER_UNKNOWN);
    assert_true(uv_now(&e->loop) - start >= SUBMIT_TIMEOUT_MS);
    assert_true(e->n_sends > 2);
    e->is_failing = false;
}

static void closing_answers_pending_requests_with_shutdown(void **state)
{
    struct env *e = *state;
    struct node *f = follower_of(e, 0);
    struct outcome o;
    struct outcome b;

    memset(&o, 0, sizeof o);
    memset(&b, 0, sizeof b);
    assert_int_equal(cluster_submit(f->c, cmd_create_user("late", NULL), on_submitted, &o), 0);
    assert_int_equal(cluster_barrier(f->c, on_done, &b), 0);
    node_stop(f);
    wait_outcome(e, &o);
    wait_outcome(e, &b);
    assert_int_equal(o.status, CLUSTER_SHUTDOWN);
    assert_int_equal(b.status, CLUSTER_SHUTDOWN);
}

static void bad_arguments_are_refused_and_leave_the_command_to_the_caller(void **state)
{
    struct env *e = *state;
    struct node *f = follower_of(e, 0);
    Concord__Command *cmd = cmd_create_user("x", NULL);
    struct cluster_member m = {0};
    struct outcome o;

    memset(&o, 0, sizeof o);
    cmd->request_id.data = malloc(3);
    assert_non_null(cmd->request_id.data);
    cmd->request_id.len = 3;
    assert_int_equal(cluster_submit(f->c, cmd, on_submitted, &o), CLUSTER_INVALID);
    concord__command__free_unpacked(cmd, NULL);
    assert_int_equal(cluster_member_add(f->c, &m, on_done, &o), CLUSTER_INVALID);
    assert_int_equal(cluster_member_remove(f->c, 0, on_done, &o), CLUSTER_INVALID);
    assert_int_equal(cluster_join(f->c, "", on_done, &o), CLUSTER_INVALID);
    assert_false(o.is_done);
}

static bool node_stopped(void *arg)
{
    return !((struct node *)arg)->is_running;
}

struct caught_up {
    struct node *a;
    struct node *b;
};

/* Both replicas have applied the same entries into the same state. */
static bool caught_up(void *arg)
{
    struct caught_up *cu = arg;
    struct cluster_status sa;
    struct cluster_status sb;
    uint8_t ha[32];
    uint8_t hb[32];

    if (cu->a->c == NULL || cu->b->c == NULL)
        return false;
    cluster_status_get(cu->a->c, &sa);
    cluster_status_get(cu->b->c, &sb);
    if (sa.applied_index != sb.applied_index || sb.applied_index < sb.commit_index)
        return false;
    state_hash(cu->a->ts.s, ha);
    state_hash(cu->b->ts.s, hb);
    return memcmp(ha, hb, 32) == 0;
}

static void a_restarted_replica_catches_up_after_the_log_was_compacted(void **state)
{
    struct env *e = *state;
    struct node *l = leader_of(e);
    struct node *f = follower_of(e, 0);
    struct caught_up cu = {l, f};
    struct converge cv = {e, "missed-39"};
    struct outcome w;
    char name[32];

    submit_user(e, l, "before", NULL, &w);
    assert_int_equal(w.status, CLUSTER_OK);
    node_stop(f);
    assert_true(run_until(e, node_stopped, f, WAIT_LIMIT_MS));
    for (unsigned i = 0; i < 40; i++) {
        snprintf(name, sizeof name, "missed-%u", i);
        submit_user(e, l, name, NULL, &w);
        assert_int_equal(w.status, CLUSTER_OK);
    }
    /* Restarted on the same raft dir and store: replays what it had, then
     * installs the leader's snapshot for what was compacted away. */
    node_start(f);
    assert_true(run_until(e, user_everywhere, &cv, WAIT_LIMIT_MS));
    assert_true(run_until(e, caught_up, &cu, WAIT_LIMIT_MS));
    assert_true(f->n_restored >= 1);
    assert_int_equal(user_count(f->ts.s), 41);

    /* And it serves writes again, through forwarding. */
    submit_user(e, f, "after", NULL, &w);
    assert_int_equal(w.status, CLUSTER_OK);
    assert_true(w.is_user_visible);
}

static void on_closed_flag(void *arg)
{
    *(bool *)arg = true;
}

static bool flag_set(void *arg)
{
    return *(bool *)arg;
}

static void start_refuses_a_store_ahead_of_an_empty_raft_dir(void **state)
{
    struct env *e = *state;
    struct node *n = node_add(e);
    struct cluster_options o;
    struct cluster *c = NULL;
    struct store_txn *t = NULL;
    char errmsg[256] = "";
    bool is_closed = false;

    assert_int_equal(store_txn_begin(n->ts.s, true, &t), 0);
    assert_int_equal(store_applied_index_put(t, 12), 0);
    assert_int_equal(store_txn_commit(t), 0);
    options_of(n, &o);
    assert_int_equal(cluster_new(&e->loop, &o, &c, errmsg), 0);
    assert_int_equal(cluster_start(c, errmsg), CLUSTER_EXISTS);
    assert_non_null(strstr(errmsg, "move the store aside"));
    /* Closing a replica that never started works too. */
    cluster_close(c, on_closed_flag, &is_closed);
    assert_true(run_until(e, flag_set, &is_closed, WAIT_LIMIT_MS));
}

int test_cluster_run(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(a_write_through_a_follower_is_readable_there_when_acknowledged),
        T(a_retried_request_id_applies_once),
        T(barrier_on_a_follower_sees_writes_acknowledged_before),
        T(concurrent_writes_commit_in_batches_and_each_reads_its_own_write),
        T(without_quorum_writes_fail_fast_with_noleader),
        T(a_fourth_replica_joins_then_is_removed),
        T(leadership_transfers_to_the_named_voter),
        T(a_write_whose_forwarding_keeps_failing_ends_unknown),
        T(closing_answers_pending_requests_with_shutdown),
        T(bad_arguments_are_refused_and_leave_the_command_to_the_caller),
        T(a_restarted_replica_catches_up_after_the_log_was_compacted),
        T(start_refuses_a_store_ahead_of_an_empty_raft_dir),
    };
#undef T

    return cmocka_run_group_tests_name("cluster", tests, NULL, NULL);
}
