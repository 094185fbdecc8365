/* tests/unit/raft/test_execute_control.c: the business rules of the control
 * protocol's commands (raft/execute_control.c) through cluster_fsm_execute on
 * a real store: registrations by pre-auth key and by approval, a known
 * machine logging in again, node reports, logout, map sessions and the
 * control settings. Every failure must leave the state hash unchanged and
 * write no audit entry. */
#include "tests/unit/raft/raft_tests.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "raft/cluster.h"

#define T0_MS   1700000000000
#define HOUR_MS 3600000

static const uint8_t V4_1[4] = {100, 64, 0, 1};
static const uint8_t V4_2[4] = {100, 64, 0, 2};
static const uint8_t V6_1[16] = {0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};

struct ctx {
    struct tstore ts;
    uint64_t index;
    int64_t now_ms;
};

/* A machine: its machine key is all `seed`, its node key all seed ^ 0x80. */
struct machine {
    uint8_t machine_key[32];
    uint8_t node_key[32];
};

static int setup(void **state)
{
    struct ctx *x = calloc(1, sizeof *x);

    assert_non_null(x);
    tstore_open(&x->ts);
    x->now_ms = T0_MS;
    *state = x;
    return 0;
}

static int teardown(void **state)
{
    struct ctx *x = *state;

    tstore_close(&x->ts);
    free(x);
    return 0;
}

static void cmd_init(struct ctx *x, Concord__Command *cmd, Concord__Command__OpCase op_case,
                     void *op)
{
    concord__command__init(cmd);
    cmd->actor = "replica:1";
    cmd->proposed_unix_ms = x->now_ms;
    cmd->op_case = op_case;
    cmd->create_user = op; /* every member of the union is a pointer */
}

/* What a command answered; the result itself is cleared at once, so a
 * failed assertion leaks nothing. */
struct outcome {
    uint32_t code;
    uint64_t id;
    char message[256];
};

/* Executes at the next index in one committed write transaction. */
static void run(struct ctx *x, const Concord__Command *cmd, struct outcome *out)
{
    struct store_txn *t = NULL;
    Concord__CommandResult res;
    uint64_t index;

    x->index++;
    concord__command_result__init(&res);
    assert_int_equal(store_txn_begin(x->ts.s, true, &t), 0);
    assert_int_equal(cluster_fsm_execute(t, cmd, x->index, &res), 0);
    assert_int_equal(store_txn_commit(t), 0);
    out->code = res.code;
    out->id = res.id;
    snprintf(out->message, sizeof out->message, "%s", res.message != NULL ? res.message : "");
    index = res.index;
    cluster_result_clear(&res);
    assert_int_equal(index, x->index);
}

/* Expects success with `audits` new audit entries; returns the result's id. */
static uint64_t expect_ok(struct ctx *x, const Concord__Command *cmd, size_t audits)
{
    struct outcome res;
    size_t before = audit_count(x->ts.s);

    run(x, cmd, &res);
    if (res.code != CLUSTER_RESULT_OK)
        fail_msg("expected ok, got %u: %s", res.code, res.message);
    assert_int_equal(audit_count(x->ts.s), before + audits);
    return res.id;
}

static void expect_fail(struct ctx *x, const Concord__Command *cmd, enum cluster_result code,
                        const char *message_part)
{
    struct outcome res;
    uint8_t before[32];
    uint8_t after[32];
    size_t audits = audit_count(x->ts.s);

    state_hash(x->ts.s, before);
    run(x, cmd, &res);
    if (res.code != (uint32_t)code)
        fail_msg("expected result %d, got %u: %s", code, res.code, res.message);
    if (message_part != NULL && strstr(res.message, message_part) == NULL)
        fail_msg("message \"%s\" lacks \"%s\"", res.message, message_part);
    state_hash(x->ts.s, after);
    if (memcmp(before, after, sizeof before) != 0)
        fail_msg("\"%s\" changed the state", res.message);
    assert_int_equal(audit_count(x->ts.s), audits);
}

/* Success that changes nothing (a report about a node that is gone). */
static void expect_ok_unchanged(struct ctx *x, const Concord__Command *cmd)
{
    uint8_t before[32];
    uint8_t after[32];

    state_hash(x->ts.s, before);
    expect_ok(x, cmd, 0);
    state_hash(x->ts.s, after);
    assert_memory_equal(before, after, 32);
}

static uint64_t create_user(struct ctx *x, const char *name)
{
    Concord__Command cmd;
    Concord__CreateUser op = CONCORD__CREATE_USER__INIT;

    op.name = (char *)name;
    cmd_init(x, &cmd, CONCORD__COMMAND__OP_CREATE_USER, &op);
    return expect_ok(x, &cmd, 1);
}

struct key_spec {
    uint64_t user_id;
    char **tags;
    size_t n_tags;
    bool reusable;
    bool ephemeral;
    int64_t expiration_unix_ms;
};

static uint64_t create_key(struct ctx *x, const struct key_spec *spec)
{
    Concord__Command cmd;
    Concord__CreatePreAuthKey op = CONCORD__CREATE_PRE_AUTH_KEY__INIT;
    uint8_t hash[32];
    char prefix[32];

    snprintf(prefix, sizeof prefix, "key%llu", (unsigned long long)x->index);
    memset(hash, (int)x->index, sizeof hash);
    op.prefix = prefix;
    op.hash = (ProtobufCBinaryData){sizeof hash, hash};
    op.user_id = spec->user_id;
    op.tags = spec->tags;
    op.n_tags = spec->n_tags;
    op.reusable = spec->reusable;
    op.ephemeral = spec->ephemeral;
    op.expiration_unix_ms = spec->expiration_unix_ms;
    cmd_init(x, &cmd, CONCORD__COMMAND__OP_CREATE_PREAUTHKEY, &op);
    return expect_ok(x, &cmd, 1);
}

static void machine_init(struct machine *m, uint8_t seed)
{
    memset(m->machine_key, seed, sizeof m->machine_key);
    memset(m->node_key, seed ^ 0x80, sizeof m->node_key);
}

static void register_init(struct ctx *x, Concord__Command *cmd, Concord__RegisterNode *op,
                          struct machine *m, const char *hostname)
{
    concord__register_node__init(op);
    op->machine_key = (ProtobufCBinaryData){32, m->machine_key};
    op->node_key = (ProtobufCBinaryData){32, m->node_key};
    op->hostname = (char *)hostname;
    op->register_method = "authkey";
    cmd_init(x, cmd, CONCORD__COMMAND__OP_REGISTER_NODE, op);
}

/* Registers machine `seed` with a pre-auth key; returns the node id. */
static uint64_t register_with_key(struct ctx *x, uint8_t seed, uint64_t key_id,
                                  const char *hostname)
{
    Concord__Command cmd;
    Concord__RegisterNode op;
    struct machine m;

    machine_init(&m, seed);
    register_init(x, &cmd, &op, &m, hostname);
    op.auth_key_id = key_id;
    return expect_ok(x, &cmd, 1);
}

static Concord__Node *get_node(struct ctx *x, uint64_t id)
{
    struct store_txn *t = NULL;
    Concord__Node *n = NULL;

    assert_int_equal(store_txn_begin(x->ts.s, false, &t), 0);
    assert_int_equal(store_node_get(t, id, &n), 0);
    store_txn_abort(t);
    return n;
}

static bool node_exists(struct ctx *x, uint64_t id)
{
    struct store_txn *t = NULL;
    Concord__Node *n = NULL;
    int rv;

    assert_int_equal(store_txn_begin(x->ts.s, false, &t), 0);
    rv = store_node_get(t, id, &n);
    store_record_free(n);
    store_txn_abort(t);
    assert_true(rv == 0 || rv == STORE_NOTFOUND);
    return rv == 0;
}

static Concord__PreAuthKey *get_key(struct ctx *x, uint64_t id)
{
    struct store_txn *t = NULL;
    Concord__PreAuthKey *k = NULL;

    assert_int_equal(store_txn_begin(x->ts.s, false, &t), 0);
    assert_int_equal(store_preauthkey_get(t, id, &k), 0);
    store_txn_abort(t);
    return k;
}

static bool key_is_used(struct ctx *x, uint64_t id)
{
    Concord__PreAuthKey *k = get_key(x, id);
    bool used = k->used;

    store_record_free(k);
    return used;
}

static bool registration_exists(struct ctx *x, const char *auth_id)
{
    struct store_txn *t = NULL;
    Concord__PendingRegistration *p = NULL;
    int rv;

    assert_int_equal(store_txn_begin(x->ts.s, false, &t), 0);
    rv = store_registration_get(t, auth_id, &p);
    store_record_free(p);
    store_txn_abort(t);
    assert_true(rv == 0 || rv == STORE_NOTFOUND);
    return rv == 0;
}

static void assert_bytes(const ProtobufCBinaryData *b, const void *want, size_t len)
{
    assert_int_equal(b->len, len);
    assert_memory_equal(b->data, want, len);
}

static void assert_filled(const ProtobufCBinaryData *b, uint8_t byte)
{
    uint8_t want[32];

    memset(want, byte, sizeof want);
    assert_bytes(b, want, sizeof want);
}

static int copy_audit(const ProtobufCMessage *record, void *arg)
{
    const Concord__AuditEntry *e = (const Concord__AuditEntry *)record;

    snprintf(arg, 256, "%s %s", e->action, e->detail);
    return 0;
}

/* "action detail" of the audit entry written at the last index. */
static void last_audit(struct ctx *x, char out[256])
{
    struct store_txn *t = NULL;

    out[0] = '\0';
    assert_int_equal(store_txn_begin(x->ts.s, false, &t), 0);
    assert_int_equal(store_audit_each(t, x->index - 1, 1, copy_audit, out), 0);
    store_txn_abort(t);
}

static void put_session(struct ctx *x, uint64_t node_id, uint64_t session_id)
{
    Concord__Command cmd;
    Concord__OpenSession op = CONCORD__OPEN_SESSION__INIT;
    Concord__Session s = CONCORD__SESSION__INIT;

    s.node_id = node_id;
    s.session_id = session_id;
    s.replica_id = 1;
    s.replica_epoch = 3;
    s.opened_unix_ms = x->now_ms;
    op.session = &s;
    cmd_init(x, &cmd, CONCORD__COMMAND__OP_OPEN_SESSION, &op);
    assert_int_equal(expect_ok(x, &cmd, 0), node_id);
}

static int count_one(const ProtobufCMessage *record, void *arg)
{
    (void)record;
    (*(size_t *)arg)++;
    return 0;
}

static size_t session_count(struct ctx *x, uint64_t node_id)
{
    struct store_txn *t = NULL;
    size_t n = 0;

    assert_int_equal(store_txn_begin(x->ts.s, false, &t), 0);
    assert_int_equal(store_session_each_of_node(t, node_id, count_one, &n), 0);
    store_txn_abort(t);
    return n;
}

static size_t registration_count(struct ctx *x)
{
    struct store_txn *t = NULL;
    size_t n = 0;

    assert_int_equal(store_txn_begin(x->ts.s, false, &t), 0);
    assert_int_equal(store_registration_each(t, count_one, &n), 0);
    store_txn_abort(t);
    return n;
}

/* ---- RegisterNode with a pre-auth key ---- */

static void preauthkey_registration_takes_owner_and_tags_from_the_key(void **state)
{
    struct ctx *x = *state;
    char *key_tags[] = {"tag:web"};
    char *cmd_tags[] = {"tag:admin"};
    char *routes[] = {"10.1.0.0/24"};
    struct key_spec spec = {.user_id = 1, .tags = key_tags, .n_tags = 1};
    static const char hostinfo[] = "{\"Hostname\":\"Laptop\"}";
    Concord__Command cmd;
    Concord__RegisterNode op;
    struct machine m;
    Concord__Node *n;
    char audit[256];
    uint64_t key_id;

    create_user(x, "alice");
    create_user(x, "mallory");
    key_id = create_key(x, &spec);
    assert_false(key_is_used(x, key_id));

    machine_init(&m, 1);
    register_init(x, &cmd, &op, &m, "Laptop");
    op.auth_key_id = key_id;
    op.user_id = 2; /* the proposer's claims lose against the key */
    op.tags = cmd_tags;
    op.n_tags = 1;
    op.hostinfo = (ProtobufCBinaryData){sizeof hostinfo - 1, (uint8_t *)hostinfo};
    op.cap_version = 120;
    op.expiry_unix_ms = T0_MS + 180 * 24 * (int64_t)HOUR_MS;
    op.advertised_routes = routes;
    op.n_advertised_routes = 1;
    cmd.proposed_unix_ms = T0_MS + 42;
    assert_int_equal(expect_ok(x, &cmd, 1), 1);

    n = get_node(x, 1);
    assert_int_equal(n->id, 1);
    assert_filled(&n->machine_key, 1);
    assert_filled(&n->node_key, 1 ^ 0x80);
    assert_bytes(&n->ipv4, V4_1, 4);
    assert_bytes(&n->ipv6, V6_1, 16);
    assert_string_equal(n->hostname, "Laptop");
    assert_string_equal(n->given_name, "laptop");
    assert_int_equal(n->user_id, 1);
    assert_int_equal(n->n_tags, 1);
    assert_string_equal(n->tags[0], "tag:web");
    assert_false(n->ephemeral);
    assert_int_equal(n->auth_key_id, key_id);
    assert_string_equal(n->register_method, "authkey");
    assert_int_equal(n->created_unix_ms, T0_MS + 42);
    assert_int_equal(n->expiry_unix_ms, T0_MS + 180 * 24 * (int64_t)HOUR_MS);
    assert_int_equal(n->cap_version, 120);
    assert_bytes(&n->hostinfo, hostinfo, sizeof hostinfo - 1);
    assert_int_equal(n->n_advertised_routes, 1);
    assert_string_equal(n->advertised_routes[0], "10.1.0.0/24");
    assert_int_equal(n->disco_key.len, 0);
    assert_int_equal(n->last_seen_unix_ms, 0);
    store_record_free(n);
    assert_true(key_is_used(x, key_id));
    last_audit(x, audit);
    assert_string_equal(audit,
                        "node.register id=1 name=laptop user=1 method=authkey ipv4=100.64.0.1");
}

static void single_use_key_registers_one_machine_only(void **state)
{
    struct ctx *x = *state;
    struct key_spec spec = {.user_id = 1};
    Concord__Command cmd;
    Concord__RegisterNode op;
    struct machine m;
    uint64_t key_id;

    create_user(x, "alice");
    key_id = create_key(x, &spec);
    assert_int_equal(register_with_key(x, 1, key_id, "first"), 1);
    machine_init(&m, 2);
    register_init(x, &cmd, &op, &m, "second");
    op.auth_key_id = key_id;
    expect_fail(x, &cmd, CLUSTER_RESULT_PRECONDITION, "already been used");
    assert_false(node_exists(x, 2));
    assert_true(key_is_used(x, key_id));
}

static void expired_and_unknown_keys_are_refused(void **state)
{
    struct ctx *x = *state;
    struct key_spec spec = {.user_id = 1, .expiration_unix_ms = T0_MS + 1000};
    Concord__Command cmd;
    Concord__RegisterNode op;
    struct machine m;
    uint64_t key_id;

    create_user(x, "alice");
    key_id = create_key(x, &spec);
    machine_init(&m, 1);
    register_init(x, &cmd, &op, &m, "laptop");
    op.auth_key_id = key_id + 7;
    expect_fail(x, &cmd, CLUSTER_RESULT_NOTFOUND, "not found");
    op.auth_key_id = key_id;
    cmd.proposed_unix_ms = T0_MS + 1000; /* expiration <= now: expired */
    expect_fail(x, &cmd, CLUSTER_RESULT_PRECONDITION, "expired");
    cmd.proposed_unix_ms = T0_MS + 5000;
    expect_fail(x, &cmd, CLUSTER_RESULT_PRECONDITION, "expired");
    assert_false(key_is_used(x, key_id));
    cmd.proposed_unix_ms = T0_MS + 999;
    assert_int_equal(expect_ok(x, &cmd, 1), 1);
}

static void reusable_key_registers_several_machines(void **state)
{
    struct ctx *x = *state;
    struct key_spec spec = {.user_id = 1, .reusable = true};
    uint64_t key_id;
    Concord__Node *n;

    create_user(x, "alice");
    key_id = create_key(x, &spec);
    assert_int_equal(register_with_key(x, 1, key_id, "a"), 1);
    assert_int_equal(register_with_key(x, 2, key_id, "b"), 2);
    assert_int_equal(register_with_key(x, 3, key_id, "c"), 3);
    assert_true(key_is_used(x, key_id));
    n = get_node(x, 2);
    assert_bytes(&n->ipv4, V4_2, 4);
    assert_string_equal(n->given_name, "b");
    assert_int_equal(n->user_id, 1);
    store_record_free(n);
    n = get_node(x, 3);
    assert_int_equal(n->ipv4.data[3], 3);
    store_record_free(n);
}

static void tag_only_key_registers_a_node_without_user(void **state)
{
    struct ctx *x = *state;
    char *tags[] = {"tag:ci", "tag:linux"};
    struct key_spec spec = {.tags = tags, .n_tags = 2};
    Concord__Node *n;

    assert_int_equal(register_with_key(x, 1, create_key(x, &spec), "runner"), 1);
    n = get_node(x, 1);
    assert_int_equal(n->user_id, 0);
    assert_int_equal(n->n_tags, 2);
    assert_string_equal(n->tags[0], "tag:ci");
    assert_string_equal(n->tags[1], "tag:linux");
    store_record_free(n);
}

static void ephemeral_comes_from_the_key_or_the_command(void **state)
{
    struct ctx *x = *state;
    struct key_spec ephemeral_key = {.user_id = 1, .reusable = true, .ephemeral = true};
    struct key_spec plain_key = {.user_id = 1, .reusable = true};
    Concord__Command cmd;
    Concord__RegisterNode op;
    struct machine m;
    uint64_t ephemeral_id;
    uint64_t plain_id;
    Concord__Node *n;

    create_user(x, "alice");
    ephemeral_id = create_key(x, &ephemeral_key);
    plain_id = create_key(x, &plain_key);

    assert_int_equal(register_with_key(x, 1, ephemeral_id, "from-key"), 1);
    machine_init(&m, 2);
    register_init(x, &cmd, &op, &m, "from-command");
    op.auth_key_id = plain_id;
    op.ephemeral = true;
    assert_int_equal(expect_ok(x, &cmd, 1), 2);
    assert_int_equal(register_with_key(x, 3, plain_id, "neither"), 3);

    n = get_node(x, 1);
    assert_true(n->ephemeral);
    store_record_free(n);
    n = get_node(x, 2);
    assert_true(n->ephemeral);
    store_record_free(n);
    n = get_node(x, 3);
    assert_false(n->ephemeral);
    store_record_free(n);
}

static void registration_without_key_checks_keys_and_owner(void **state)
{
    struct ctx *x = *state;
    char *bad_tags[] = {"web"};
    Concord__Command cmd;
    Concord__RegisterNode op;
    struct machine m;
    Concord__Node *n;

    create_user(x, "alice");
    machine_init(&m, 1);
    register_init(x, &cmd, &op, &m, "box");
    op.register_method = "cli";
    op.user_id = 0;
    expect_fail(x, &cmd, CLUSTER_RESULT_NOTFOUND, "user 0");
    op.user_id = 9;
    expect_fail(x, &cmd, CLUSTER_RESULT_NOTFOUND, "user 9 not found");
    op.user_id = 1;
    op.node_key.len = 31;
    expect_fail(x, &cmd, CLUSTER_RESULT_INVALID, "32 bytes");
    op.node_key.len = 32;
    op.machine_key.len = 0;
    expect_fail(x, &cmd, CLUSTER_RESULT_INVALID, "32 bytes");
    op.machine_key.len = 32;
    op.tags = bad_tags;
    op.n_tags = 1;
    expect_fail(x, &cmd, CLUSTER_RESULT_INVALID, "invalid tag");
    op.tags = NULL;
    op.n_tags = 0;
    assert_int_equal(expect_ok(x, &cmd, 1), 1);
    n = get_node(x, 1);
    assert_int_equal(n->user_id, 1);
    assert_int_equal(n->auth_key_id, 0);
    assert_string_equal(n->register_method, "cli");
    store_record_free(n);
}

/* ---- a known machine registers again ---- */

static void known_machine_logs_in_again_keeping_id_addresses_and_name(void **state)
{
    struct ctx *x = *state;
    struct key_spec spec = {.user_id = 1, .reusable = true};
    static const char hostinfo[] = "{\"OS\":\"linux\"}";
    uint8_t rotated[32];
    Concord__Command cmd;
    Concord__RegisterNode op;
    struct machine m;
    Concord__Node *n;
    char audit[256];
    uint64_t key_id;

    create_user(x, "alice");
    create_user(x, "bob");
    key_id = create_key(x, &spec);
    assert_int_equal(register_with_key(x, 1, key_id, "laptop"), 1);
    assert_int_equal(register_with_key(x, 2, key_id, "desktop"), 2);

    /* Machine 1 rotates its node key and is now bob's. */
    machine_init(&m, 1);
    memset(rotated, 0x77, sizeof rotated);
    register_init(x, &cmd, &op, &m, "renamed-host");
    op.node_key.data = rotated;
    op.old_node_key = (ProtobufCBinaryData){32, m.node_key};
    op.user_id = 2;
    op.register_method = "cli";
    op.hostinfo = (ProtobufCBinaryData){sizeof hostinfo - 1, (uint8_t *)hostinfo};
    op.expiry_unix_ms = T0_MS + 2 * HOUR_MS;
    cmd.proposed_unix_ms = T0_MS + HOUR_MS;
    assert_int_equal(expect_ok(x, &cmd, 1), 1);
    last_audit(x, audit);
    assert_string_equal(audit, "node.relogin id=1 name=laptop user=2 method=cli");

    n = get_node(x, 1);
    assert_filled(&n->machine_key, 1);
    assert_filled(&n->node_key, 0x77);
    assert_bytes(&n->ipv4, V4_1, 4);
    assert_bytes(&n->ipv6, V6_1, 16);
    assert_string_equal(n->given_name, "laptop");
    assert_int_equal(n->created_unix_ms, T0_MS);
    assert_int_equal(n->user_id, 2);
    assert_int_equal(n->expiry_unix_ms, T0_MS + 2 * HOUR_MS);
    assert_int_equal(n->auth_key_id, 0);
    assert_string_equal(n->register_method, "cli");
    assert_bytes(&n->hostinfo, hostinfo, sizeof hostinfo - 1);
    store_record_free(n);

    /* The same key again is not a conflict; no node id was consumed. */
    assert_int_equal(expect_ok(x, &cmd, 1), 1);
    assert_int_equal(register_with_key(x, 3, key_id, "third"), 3);
    n = get_node(x, 3);
    assert_int_equal(n->ipv4.data[3], 3);
    store_record_free(n);
}

static void node_key_of_another_machine_is_a_conflict(void **state)
{
    struct ctx *x = *state;
    struct key_spec spec = {.user_id = 1, .reusable = true};
    struct machine one;
    struct machine two;
    Concord__Command cmd;
    Concord__RegisterNode op;
    uint64_t key_id;

    create_user(x, "alice");
    key_id = create_key(x, &spec);
    register_with_key(x, 1, key_id, "one");
    register_with_key(x, 2, key_id, "two");
    machine_init(&one, 1);
    machine_init(&two, 2);

    /* A known machine takes another's node key. */
    register_init(x, &cmd, &op, &two, "two");
    op.user_id = 1;
    op.node_key.data = one.node_key;
    expect_fail(x, &cmd, CLUSTER_RESULT_CONFLICT, "another machine");
    /* A new machine does. */
    machine_init(&two, 3);
    op.machine_key.data = two.machine_key;
    expect_fail(x, &cmd, CLUSTER_RESULT_CONFLICT, "another machine");
    assert_false(node_exists(x, 3));
}

/* The key is valid, the registration is not: nothing may change, the key's
 * "used" flag included, and the key still registers a valid machine. */
static void expect_refused_registration_keeps_the_key(struct ctx *x, bool is_conflict)
{
    struct key_spec reusable = {.user_id = 1, .reusable = true};
    struct key_spec single = {.user_id = 1};
    struct machine one;
    Concord__Command cmd;
    Concord__RegisterNode op;
    struct machine m;
    uint64_t single_id;

    create_user(x, "alice");
    register_with_key(x, 1, create_key(x, &reusable), "one");
    single_id = create_key(x, &single);
    machine_init(&one, 1);
    machine_init(&m, 2);
    register_init(x, &cmd, &op, &m, "two");
    op.auth_key_id = single_id;
    if (is_conflict) {
        op.node_key.data = one.node_key;
        expect_fail(x, &cmd, CLUSTER_RESULT_CONFLICT, "another machine");
    } else {
        op.machine_key.len = 16;
        expect_fail(x, &cmd, CLUSTER_RESULT_INVALID, "32 bytes");
    }
    assert_false(key_is_used(x, single_id));
    register_init(x, &cmd, &op, &m, "two");
    op.auth_key_id = single_id;
    assert_int_equal(expect_ok(x, &cmd, 1), 2);
    assert_true(key_is_used(x, single_id));
}

static void key_survives_a_registration_refused_for_a_taken_node_key(void **state)
{
    expect_refused_registration_keeps_the_key(*state, true);
}

static void key_survives_a_registration_refused_for_a_short_machine_key(void **state)
{
    expect_refused_registration_keeps_the_key(*state, false);
}

/* ---- interactive registrations ---- */

static void registration_init(Concord__PendingRegistration *p, const char *auth_id,
                              struct machine *m, const char *hostname, int64_t expires_unix_ms)
{
    concord__pending_registration__init(p);
    p->auth_id = (char *)auth_id;
    p->machine_key = (ProtobufCBinaryData){32, m->machine_key};
    p->node_key = (ProtobufCBinaryData){32, m->node_key};
    p->hostname = (char *)hostname;
    p->expires_unix_ms = expires_unix_ms;
}

static void add_registration(struct ctx *x, Concord__PendingRegistration *p)
{
    Concord__Command cmd;
    Concord__AddRegistration op = CONCORD__ADD_REGISTRATION__INIT;

    op.registration = p;
    cmd_init(x, &cmd, CONCORD__COMMAND__OP_ADD_REGISTRATION, &op);
    assert_int_equal(expect_ok(x, &cmd, 0), 0);
}

static void approved_registration_creates_the_node_for_the_user(void **state)
{
    struct ctx *x = *state;
    static const char hostinfo[] = "{\"OS\":\"macOS\"}";
    char *routes[] = {"192.168.7.0/24"};
    Concord__PendingRegistration p;
    Concord__Command cmd;
    Concord__ApproveRegistration op = CONCORD__APPROVE_REGISTRATION__INIT;
    struct machine m;
    Concord__Node *n;
    char audit[256];

    create_user(x, "alice");
    create_user(x, "bob");
    machine_init(&m, 5);
    registration_init(&p, "AUTH1", &m, "Work Mac", T0_MS + HOUR_MS);
    p.hostinfo = (ProtobufCBinaryData){sizeof hostinfo - 1, (uint8_t *)hostinfo};
    p.ephemeral = true;
    p.cap_version = 115;
    p.advertised_routes = routes;
    p.n_advertised_routes = 1;
    add_registration(x, &p);
    assert_true(registration_exists(x, "AUTH1"));

    cmd_init(x, &cmd, CONCORD__COMMAND__OP_APPROVE_REGISTRATION, &op);
    op.auth_id = "AUTH1";
    op.user_id = 2;
    cmd.proposed_unix_ms = T0_MS + 10;
    assert_int_equal(expect_ok(x, &cmd, 1), 1);
    assert_false(registration_exists(x, "AUTH1"));
    last_audit(x, audit);
    assert_string_equal(audit,
                        "node.register id=1 name=work-mac user=2 method=cli ipv4=100.64.0.1");

    n = get_node(x, 1);
    assert_int_equal(n->user_id, 2);
    assert_int_equal(n->n_tags, 0);
    assert_filled(&n->machine_key, 5);
    assert_filled(&n->node_key, 5 ^ 0x80);
    assert_bytes(&n->ipv4, V4_1, 4);
    assert_string_equal(n->hostname, "Work Mac");
    assert_string_equal(n->given_name, "work-mac");
    assert_string_equal(n->register_method, "cli");
    assert_true(n->ephemeral);
    assert_int_equal(n->cap_version, 115);
    assert_int_equal(n->created_unix_ms, T0_MS + 10);
    assert_bytes(&n->hostinfo, hostinfo, sizeof hostinfo - 1);
    assert_int_equal(n->n_advertised_routes, 1);
    assert_string_equal(n->advertised_routes[0], "192.168.7.0/24");
    store_record_free(n);

    /* It was consumed: approving it again finds nothing. */
    expect_fail(x, &cmd, CLUSTER_RESULT_NOTFOUND, "AUTH1");
}

static void approval_of_a_known_machine_logs_it_in_again(void **state)
{
    struct ctx *x = *state;
    struct key_spec spec = {.user_id = 1};
    Concord__PendingRegistration p;
    Concord__Command cmd;
    Concord__ApproveRegistration op = CONCORD__APPROVE_REGISTRATION__INIT;
    struct machine m;
    Concord__Node *n;

    create_user(x, "alice");
    create_user(x, "bob");
    register_with_key(x, 1, create_key(x, &spec), "laptop");
    machine_init(&m, 1);
    memset(m.node_key, 0x33, sizeof m.node_key);
    registration_init(&p, "again", &m, "laptop", 0);
    add_registration(x, &p);
    cmd_init(x, &cmd, CONCORD__COMMAND__OP_APPROVE_REGISTRATION, &op);
    op.auth_id = "again";
    op.user_id = 2;
    assert_int_equal(expect_ok(x, &cmd, 1), 1);
    assert_false(node_exists(x, 2));
    n = get_node(x, 1);
    assert_filled(&n->node_key, 0x33);
    assert_int_equal(n->user_id, 2);
    assert_bytes(&n->ipv4, V4_1, 4);
    assert_string_equal(n->given_name, "laptop");
    store_record_free(n);
}

static void approval_refuses_unknown_expired_and_ownerless_registrations(void **state)
{
    struct ctx *x = *state;
    Concord__PendingRegistration p;
    Concord__Command cmd;
    Concord__ApproveRegistration op = CONCORD__APPROVE_REGISTRATION__INIT;
    struct machine m;

    create_user(x, "alice");
    machine_init(&m, 1);
    registration_init(&p, "A", &m, "box", T0_MS + 1000);
    add_registration(x, &p);

    cmd_init(x, &cmd, CONCORD__COMMAND__OP_APPROVE_REGISTRATION, &op);
    op.auth_id = "B";
    op.user_id = 1;
    expect_fail(x, &cmd, CLUSTER_RESULT_NOTFOUND, "no pending registration with id B");
    op.auth_id = "A";
    op.user_id = 0;
    expect_fail(x, &cmd, CLUSTER_RESULT_INVALID, "needs a user");
    op.user_id = 8;
    expect_fail(x, &cmd, CLUSTER_RESULT_NOTFOUND, "user 8 not found");
    op.user_id = 1;
    cmd.proposed_unix_ms = T0_MS + 1000;
    expect_fail(x, &cmd, CLUSTER_RESULT_PRECONDITION, "expired");
    assert_true(registration_exists(x, "A"));
    cmd.proposed_unix_ms = T0_MS + 999;
    assert_int_equal(expect_ok(x, &cmd, 1), 1);
}

static void add_registration_sweeps_expired_ones_and_delete_removes(void **state)
{
    struct ctx *x = *state;
    Concord__PendingRegistration p;
    Concord__Command cmd;
    Concord__AddRegistration add = CONCORD__ADD_REGISTRATION__INIT;
    Concord__DeleteRegistration del = CONCORD__DELETE_REGISTRATION__INIT;
    struct machine m;

    machine_init(&m, 1);
    registration_init(&p, "old-1", &m, "a", T0_MS + 100);
    add_registration(x, &p);
    registration_init(&p, "old-2", &m, "b", T0_MS + 200);
    add_registration(x, &p);
    registration_init(&p, "later", &m, "c", T0_MS + 10000);
    add_registration(x, &p);
    registration_init(&p, "forever", &m, "d", 0);
    add_registration(x, &p);
    assert_int_equal(registration_count(x), 4);

    /* Invalid ones are refused before anything is swept. */
    x->now_ms = T0_MS + 200;
    registration_init(&p, "", &m, "e", 0);
    add.registration = &p;
    cmd_init(x, &cmd, CONCORD__COMMAND__OP_ADD_REGISTRATION, &add);
    expect_fail(x, &cmd, CLUSTER_RESULT_INVALID, NULL);
    registration_init(&p, "new", &m, "e", 0);
    p.node_key.len = 8;
    expect_fail(x, &cmd, CLUSTER_RESULT_INVALID, NULL);
    add.registration = NULL;
    expect_fail(x, &cmd, CLUSTER_RESULT_INVALID, NULL);

    /* At T0+200 both old ones have expired (expires <= now). */
    registration_init(&p, "new", &m, "e", T0_MS + HOUR_MS);
    add_registration(x, &p);
    assert_int_equal(registration_count(x), 3);
    assert_false(registration_exists(x, "old-1"));
    assert_false(registration_exists(x, "old-2"));
    assert_true(registration_exists(x, "later"));
    assert_true(registration_exists(x, "forever"));
    assert_true(registration_exists(x, "new"));

    cmd_init(x, &cmd, CONCORD__COMMAND__OP_DELETE_REGISTRATION, &del);
    del.auth_id = "old-1";
    expect_fail(x, &cmd, CLUSTER_RESULT_NOTFOUND, "no pending registration with id old-1");
    del.auth_id = "later";
    assert_int_equal(expect_ok(x, &cmd, 0), 0);
    assert_false(registration_exists(x, "later"));
    assert_int_equal(registration_count(x), 2);
    expect_fail(x, &cmd, CLUSTER_RESULT_NOTFOUND, NULL);
}

/* ---- UpdateNodes ---- */

static void update_init(Concord__NodeUpdate *u, uint64_t node_id, struct machine *m)
{
    concord__node_update__init(u);
    u->node_id = node_id;
    u->node_key = (ProtobufCBinaryData){32, m->node_key};
}

static void update_nodes(struct ctx *x, Concord__NodeUpdate **updates, size_t n)
{
    Concord__Command cmd;
    Concord__UpdateNodes op = CONCORD__UPDATE_NODES__INIT;

    op.updates = updates;
    op.n_updates = n;
    cmd_init(x, &cmd, CONCORD__COMMAND__OP_UPDATE_NODES, &op);
    assert_int_equal(expect_ok(x, &cmd, 0), 0);
}

static void update_nodes_applies_what_the_nodes_report(void **state)
{
    struct ctx *x = *state;
    struct key_spec spec = {.user_id = 1, .reusable = true};
    static const char hostinfo[] = "{\"OS\":\"linux\",\"Hostname\":\"one\"}";
    char *endpoints[] = {"198.51.100.7:41641", "[2001:db8::7]:41641"};
    char *routes[] = {"10.9.0.0/16", "0.0.0.0/0"};
    uint8_t disco[32];
    uint8_t short_disco[8];
    Concord__NodeUpdate u1;
    Concord__NodeUpdate u2;
    Concord__NodeUpdate *updates[] = {&u1, &u2};
    struct machine one;
    struct machine two;
    uint64_t key_id;
    Concord__Node *n;

    create_user(x, "alice");
    key_id = create_key(x, &spec);
    register_with_key(x, 1, key_id, "one");
    register_with_key(x, 2, key_id, "two");
    machine_init(&one, 1);
    machine_init(&two, 2);
    memset(disco, 0xd1, sizeof disco);
    memset(short_disco, 0xee, sizeof short_disco);

    update_init(&u1, 1, &one);
    u1.disco_key = (ProtobufCBinaryData){sizeof disco, disco};
    u1.has_endpoints = true;
    u1.endpoints = endpoints;
    u1.n_endpoints = 2;
    u1.hostinfo = (ProtobufCBinaryData){sizeof hostinfo - 1, (uint8_t *)hostinfo};
    u1.has_home_derp = true;
    u1.home_derp = 9;
    u1.cap_version = 130;
    u1.hostname = "one";
    u1.has_routes = true;
    u1.advertised_routes = routes;
    u1.n_advertised_routes = 2;
    update_init(&u2, 2, &two);
    u2.home_derp = 4; /* has_home_derp unset: ignored */
    u2.has_endpoints = true;
    u2.endpoints = endpoints + 1;
    u2.n_endpoints = 1;
    update_nodes(x, updates, 2);

    n = get_node(x, 1);
    assert_filled(&n->disco_key, 0xd1);
    assert_int_equal(n->n_endpoints, 2);
    assert_string_equal(n->endpoints[0], "198.51.100.7:41641");
    assert_string_equal(n->endpoints[1], "[2001:db8::7]:41641");
    assert_bytes(&n->hostinfo, hostinfo, sizeof hostinfo - 1);
    assert_int_equal(n->home_derp, 9);
    assert_int_equal(n->cap_version, 130);
    assert_int_equal(n->n_advertised_routes, 2);
    assert_string_equal(n->advertised_routes[1], "0.0.0.0/0");
    assert_string_equal(n->given_name, "one");
    store_record_free(n);
    n = get_node(x, 2);
    assert_int_equal(n->home_derp, 0);
    assert_int_equal(n->n_endpoints, 1);
    assert_string_equal(n->endpoints[0], "[2001:db8::7]:41641");
    store_record_free(n);

    /* Absent fields keep their values; has_* with nothing clears; a disco
     * key that is not 32 bytes is ignored. */
    update_init(&u1, 1, &one);
    u1.disco_key = (ProtobufCBinaryData){sizeof short_disco, short_disco};
    u1.has_routes = true;
    update_nodes(x, updates, 1);
    n = get_node(x, 1);
    assert_filled(&n->disco_key, 0xd1);
    assert_int_equal(n->n_endpoints, 2);
    assert_bytes(&n->hostinfo, hostinfo, sizeof hostinfo - 1);
    assert_int_equal(n->home_derp, 9);
    assert_int_equal(n->cap_version, 130);
    assert_int_equal(n->n_advertised_routes, 0);
    store_record_free(n);
    update_init(&u1, 1, &one);
    u1.has_endpoints = true;
    u1.has_home_derp = true;
    update_nodes(x, updates, 1);
    n = get_node(x, 1);
    assert_int_equal(n->n_endpoints, 0);
    assert_int_equal(n->home_derp, 0);
    store_record_free(n);
}

static void update_nodes_ignores_stale_keys_and_unknown_nodes(void **state)
{
    struct ctx *x = *state;
    struct key_spec spec = {.user_id = 1};
    Concord__NodeUpdate u;
    Concord__NodeUpdate *updates[] = {&u};
    Concord__Command cmd;
    Concord__UpdateNodes op = CONCORD__UPDATE_NODES__INIT;
    struct machine m;

    create_user(x, "alice");
    register_with_key(x, 1, create_key(x, &spec), "one");
    machine_init(&m, 1);
    op.updates = updates;
    op.n_updates = 1;
    cmd_init(x, &cmd, CONCORD__COMMAND__OP_UPDATE_NODES, &op);

    /* Reported under a key the node no longer has (or none at all). */
    update_init(&u, 1, &m);
    u.has_home_derp = true;
    u.home_derp = 3;
    u.hostname = "renamed";
    u.node_key.data = m.machine_key;
    expect_ok_unchanged(x, &cmd);
    u.node_key.len = 0;
    expect_ok_unchanged(x, &cmd);
    /* About a node that is gone. */
    update_init(&u, 42, &m);
    u.has_home_derp = true;
    u.home_derp = 3;
    expect_ok_unchanged(x, &cmd);
    op.n_updates = 0;
    expect_ok_unchanged(x, &cmd);
}

static void hostname_change_renames_the_node_uniquely(void **state)
{
    struct ctx *x = *state;
    struct key_spec spec = {.user_id = 1, .reusable = true};
    Concord__NodeUpdate u;
    Concord__NodeUpdate *updates[] = {&u};
    Concord__Command cmd;
    Concord__RenameNode rename = CONCORD__RENAME_NODE__INIT;
    struct machine two;
    uint64_t key_id;
    Concord__Node *n;

    create_user(x, "alice");
    key_id = create_key(x, &spec);
    register_with_key(x, 1, key_id, "alpha");
    register_with_key(x, 2, key_id, "beta");
    machine_init(&two, 2);

    /* Node 2 calls itself "Alpha": the name is node 1's. */
    update_init(&u, 2, &two);
    u.hostname = "Alpha";
    update_nodes(x, updates, 1);
    n = get_node(x, 2);
    assert_string_equal(n->hostname, "Alpha");
    assert_string_equal(n->given_name, "alpha-1");
    store_record_free(n);
    n = get_node(x, 1);
    assert_string_equal(n->given_name, "alpha");
    store_record_free(n);

    /* Free again: it takes the plain name. */
    u.hostname = "gamma";
    update_nodes(x, updates, 1);
    n = get_node(x, 2);
    assert_string_equal(n->hostname, "gamma");
    assert_string_equal(n->given_name, "gamma");
    store_record_free(n);

    /* The same hostname keeps an operator's rename; an empty one changes
     * nothing. */
    cmd_init(x, &cmd, CONCORD__COMMAND__OP_RENAME_NODE, &rename);
    rename.id = 2;
    rename.new_name = "chosen";
    expect_ok(x, &cmd, 1);
    update_nodes(x, updates, 1);
    u.hostname = "";
    update_nodes(x, updates, 1);
    n = get_node(x, 2);
    assert_string_equal(n->hostname, "gamma");
    assert_string_equal(n->given_name, "chosen");
    store_record_free(n);
}

/* A new hostname whose name is taken by another node, while this node
 * already holds the suffixed name: nothing to rename (its own name does not
 * count as taken). */
static void hostname_change_keeps_a_name_the_node_already_has(void **state)
{
    struct ctx *x = *state;
    struct key_spec spec = {.user_id = 1, .reusable = true};
    Concord__NodeUpdate u;
    Concord__NodeUpdate *updates[] = {&u};
    struct machine two;
    uint64_t key_id;
    Concord__Node *n;
    char hostname[64];
    char given[64];

    create_user(x, "alice");
    key_id = create_key(x, &spec);
    register_with_key(x, 1, key_id, "alpha");
    register_with_key(x, 2, key_id, "alpha");
    machine_init(&two, 2);
    n = get_node(x, 2);
    assert_string_equal(n->given_name, "alpha-1");
    store_record_free(n);

    update_init(&u, 2, &two);
    u.hostname = "ALPHA";
    update_nodes(x, updates, 1);
    n = get_node(x, 2);
    snprintf(hostname, sizeof hostname, "%s", n->hostname);
    snprintf(given, sizeof given, "%s", n->given_name);
    store_record_free(n);
    assert_string_equal(hostname, "ALPHA");
    assert_string_equal(given, "alpha-1");
}

/* ---- SetNodeRoutes ---- */

/* Approved routes must be among those the node advertises, each once;
 * refused approvals change nothing; an empty list approves none. */
static void routes_are_approved_only_when_advertised(void **state)
{
    struct ctx *x = *state;
    struct key_spec spec = {.user_id = 1, .reusable = true};
    char *advertised[] = {"10.9.0.0/16", "0.0.0.0/0", "::/0"};
    char *approve[] = {"10.9.0.0/16", "0.0.0.0/0"};
    char *stranger[] = {"10.9.0.0/16", "192.168.0.0/24"};
    char *twice[] = {"10.9.0.0/16", "10.9.0.0/16"};
    Concord__SetNodeRoutes op = CONCORD__SET_NODE_ROUTES__INIT;
    Concord__NodeUpdate u;
    Concord__NodeUpdate *updates[] = {&u};
    Concord__Command cmd;
    struct machine one;
    uint64_t key_id;
    Concord__Node *n;

    create_user(x, "alice");
    key_id = create_key(x, &spec);
    register_with_key(x, 1, key_id, "one");
    machine_init(&one, 1);
    update_init(&u, 1, &one);
    u.has_routes = true;
    u.advertised_routes = advertised;
    u.n_advertised_routes = 3;
    update_nodes(x, updates, 1);

    cmd_init(x, &cmd, CONCORD__COMMAND__OP_SET_NODE_ROUTES, &op);
    op.id = 9;
    op.routes = approve;
    op.n_routes = 2;
    expect_fail(x, &cmd, CLUSTER_RESULT_NOTFOUND, "node 9 not found");
    op.id = 1;
    op.routes = stranger;
    expect_fail(x, &cmd, CLUSTER_RESULT_INVALID, "192.168.0.0/24 is not advertised by node 1");
    op.routes = twice;
    expect_fail(x, &cmd, CLUSTER_RESULT_INVALID, "listed twice");
    op.routes = approve;
    assert_int_equal(expect_ok(x, &cmd, 1), 1);
    n = get_node(x, 1);
    assert_int_equal(n->n_approved_routes, 2);
    assert_string_equal(n->approved_routes[0], "10.9.0.0/16");
    assert_string_equal(n->approved_routes[1], "0.0.0.0/0");
    store_record_free(n);

    op.n_routes = 0;
    expect_ok(x, &cmd, 1);
    n = get_node(x, 1);
    assert_int_equal(n->n_approved_routes, 0);
    store_record_free(n);
}

/* ---- LogoutNode ---- */

static void logout_expires_a_node_and_deletes_an_ephemeral_one(void **state)
{
    struct ctx *x = *state;
    struct key_spec plain = {.user_id = 1, .reusable = true};
    struct key_spec ephemeral = {.user_id = 1, .reusable = true, .ephemeral = true};
    Concord__Command cmd;
    Concord__LogoutNode op = CONCORD__LOGOUT_NODE__INIT;
    struct machine m;
    Concord__Node *n;
    char audit[256];

    create_user(x, "alice");
    register_with_key(x, 1, create_key(x, &plain), "keeper");
    register_with_key(x, 2, create_key(x, &ephemeral), "temp");
    put_session(x, 1, 10);
    put_session(x, 2, 20);
    put_session(x, 2, 21);

    cmd_init(x, &cmd, CONCORD__COMMAND__OP_LOGOUT_NODE, &op);
    machine_init(&m, 1);
    op.id = 1;
    op.node_key = (ProtobufCBinaryData){32, m.node_key};
    cmd.proposed_unix_ms = T0_MS + 5555;
    assert_int_equal(expect_ok(x, &cmd, 1), 1);
    last_audit(x, audit);
    assert_string_equal(audit, "node.logout id=1 name=keeper deleted=false");
    n = get_node(x, 1);
    assert_int_equal(n->expiry_unix_ms, T0_MS + 5555);
    store_record_free(n);

    machine_init(&m, 2);
    op.id = 2;
    op.node_key = (ProtobufCBinaryData){32, m.node_key};
    assert_int_equal(expect_ok(x, &cmd, 1), 2);
    last_audit(x, audit);
    assert_string_equal(audit, "node.logout id=2 name=temp deleted=true");
    assert_false(node_exists(x, 2));
    assert_int_equal(session_count(x, 2), 0);
    assert_int_equal(session_count(x, 1), 1);
    expect_fail(x, &cmd, CLUSTER_RESULT_NOTFOUND, "node 2 not found");
}

static void logout_refuses_another_node_key(void **state)
{
    struct ctx *x = *state;
    struct key_spec spec = {.user_id = 1, .ephemeral = true};
    Concord__Command cmd;
    Concord__LogoutNode op = CONCORD__LOGOUT_NODE__INIT;
    struct machine m;

    create_user(x, "alice");
    register_with_key(x, 1, create_key(x, &spec), "temp");
    machine_init(&m, 1);
    cmd_init(x, &cmd, CONCORD__COMMAND__OP_LOGOUT_NODE, &op);
    op.id = 1;
    op.node_key = (ProtobufCBinaryData){32, m.machine_key};
    expect_fail(x, &cmd, CLUSTER_RESULT_PRECONDITION, "another key");
    op.node_key.len = 0;
    expect_fail(x, &cmd, CLUSTER_RESULT_PRECONDITION, "another key");
    assert_true(node_exists(x, 1));
}

/* ---- sessions ---- */

static void sessions_open_and_close_and_closing_records_last_seen(void **state)
{
    struct ctx *x = *state;
    struct key_spec spec = {.user_id = 1};
    Concord__Command cmd;
    Concord__OpenSession open = CONCORD__OPEN_SESSION__INIT;
    Concord__CloseSession close = CONCORD__CLOSE_SESSION__INIT;
    Concord__Session s = CONCORD__SESSION__INIT;
    Concord__Node *n;

    create_user(x, "alice");
    register_with_key(x, 1, create_key(x, &spec), "one");

    cmd_init(x, &cmd, CONCORD__COMMAND__OP_OPEN_SESSION, &open);
    expect_fail(x, &cmd, CLUSTER_RESULT_INVALID, "session");
    open.session = &s;
    s.node_id = 1;
    expect_fail(x, &cmd, CLUSTER_RESULT_INVALID, "session needs an id");
    s.node_id = 9;
    s.session_id = 5;
    expect_fail(x, &cmd, CLUSTER_RESULT_NOTFOUND, "node 9 not found");
    put_session(x, 1, 5);
    put_session(x, 1, 6);
    assert_int_equal(session_count(x, 1), 2);

    cmd_init(x, &cmd, CONCORD__COMMAND__OP_CLOSE_SESSION, &close);
    close.node_id = 1;
    close.session_id = 7;
    expect_fail(x, &cmd, CLUSTER_RESULT_NOTFOUND, "no such session");
    close.node_id = 2;
    close.session_id = 5;
    expect_fail(x, &cmd, CLUSTER_RESULT_NOTFOUND, "no such session");
    close.node_id = 1;
    cmd.proposed_unix_ms = T0_MS + 777;
    assert_int_equal(expect_ok(x, &cmd, 0), 1);
    assert_int_equal(session_count(x, 1), 1);
    n = get_node(x, 1);
    assert_int_equal(n->last_seen_unix_ms, T0_MS + 777);
    store_record_free(n);
    expect_fail(x, &cmd, CLUSTER_RESULT_NOTFOUND, "no such session");
}

static int collect_opened_index(const ProtobufCMessage *record, void *arg)
{
    const Concord__Session *s = (const Concord__Session *)record;
    uint64_t *out = arg;

    out[s->session_id] = s->opened_index;
    return 0;
}

/* A session records the index it was opened at, whatever the proposer put
 * there: the age order every replica agrees on. */
static void sessions_record_the_index_they_opened_at(void **state)
{
    struct ctx *x = *state;
    struct key_spec spec = {.user_id = 1};
    uint64_t opened[8] = {0};
    uint64_t first;
    struct store_txn *t = NULL;

    create_user(x, "alice");
    register_with_key(x, 1, create_key(x, &spec), "one");
    put_session(x, 1, 5);
    first = x->index;
    put_session(x, 1, 6);
    assert_int_equal(store_txn_begin(x->ts.s, false, &t), 0);
    assert_int_equal(store_session_each_of_node(t, 1, collect_opened_index, opened), 0);
    store_txn_abort(t);
    assert_int_equal(opened[5], first);
    assert_int_equal(opened[6], first + 1);
}

/* A heartbeat is acknowledged and changes nothing. */
static void replica_heartbeats_change_nothing(void **state)
{
    struct ctx *x = *state;
    Concord__Command cmd;
    Concord__ReplicaHeartbeat op = CONCORD__REPLICA_HEARTBEAT__INIT;

    op.id = 2;
    cmd_init(x, &cmd, CONCORD__COMMAND__OP_REPLICA_HEARTBEAT, &op);
    expect_ok_unchanged(x, &cmd);
}

/* ---- SetControlSettings ---- */

static void control_settings_record_the_first_key_only(void **state)
{
    struct ctx *x = *state;
    uint8_t key[32];
    uint8_t other[32];
    Concord__Command cmd;
    Concord__SetControlSettings op = CONCORD__SET_CONTROL_SETTINGS__INIT;
    Concord__ControlSettings c = CONCORD__CONTROL_SETTINGS__INIT;
    Concord__ControlSettings *got = NULL;
    struct store_txn *t = NULL;
    char audit[256];

    memset(key, 0xab, sizeof key);
    memset(other, 0xcd, sizeof other);
    cmd_init(x, &cmd, CONCORD__COMMAND__OP_SET_CONTROL_SETTINGS, &op);
    expect_fail(x, &cmd, CLUSTER_RESULT_INVALID, "32 bytes");
    op.settings = &c;
    c.noise_public_key = (ProtobufCBinaryData){31, key};
    expect_fail(x, &cmd, CLUSTER_RESULT_INVALID, "32 bytes");
    c.noise_public_key.len = 32;
    expect_ok(x, &cmd, 1);
    last_audit(x, audit);
    assert_string_equal(audit, "control.settings noise key recorded");
    expect_ok_unchanged(x, &cmd);
    c.noise_public_key.data = other;
    expect_fail(x, &cmd, CLUSTER_RESULT_PRECONDITION, "another Noise key");
    c.noise_public_key.len = 33;
    expect_fail(x, &cmd, CLUSTER_RESULT_INVALID, "32 bytes");

    assert_int_equal(store_txn_begin(x->ts.s, false, &t), 0);
    assert_int_equal(store_control_get(t, &got), 0);
    assert_filled(&got->noise_public_key, 0xab);
    store_record_free(got);
    store_txn_abort(t);
}

int test_execute_control_run(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(preauthkey_registration_takes_owner_and_tags_from_the_key),
        T(single_use_key_registers_one_machine_only),
        T(expired_and_unknown_keys_are_refused),
        T(reusable_key_registers_several_machines),
        T(tag_only_key_registers_a_node_without_user),
        T(ephemeral_comes_from_the_key_or_the_command),
        T(registration_without_key_checks_keys_and_owner),
        T(known_machine_logs_in_again_keeping_id_addresses_and_name),
        T(node_key_of_another_machine_is_a_conflict),
        T(key_survives_a_registration_refused_for_a_taken_node_key),
        T(key_survives_a_registration_refused_for_a_short_machine_key),
        T(approved_registration_creates_the_node_for_the_user),
        T(approval_of_a_known_machine_logs_it_in_again),
        T(approval_refuses_unknown_expired_and_ownerless_registrations),
        T(add_registration_sweeps_expired_ones_and_delete_removes),
        T(update_nodes_applies_what_the_nodes_report),
        T(update_nodes_ignores_stale_keys_and_unknown_nodes),
        T(hostname_change_renames_the_node_uniquely),
        T(hostname_change_keeps_a_name_the_node_already_has),
        T(routes_are_approved_only_when_advertised),
        T(logout_expires_a_node_and_deletes_an_ephemeral_one),
        T(logout_refuses_another_node_key),
        T(sessions_open_and_close_and_closing_records_last_seen),
        T(sessions_record_the_index_they_opened_at),
        T(replica_heartbeats_change_nothing),
        T(control_settings_record_the_first_key_only),
    };
#undef T

    return cmocka_run_group_tests_name("execute_control", tests, NULL, NULL);
}
