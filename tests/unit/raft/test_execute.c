/* tests/unit/raft/test_execute.c: the business rules of cluster_fsm_execute
 * on a real store. Every failure must leave the state hash unchanged and
 * write no audit entry. */
#include "tests/unit/raft/raft_tests.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "raft/cluster.h"

#define T0_MS 1700000000000

struct ctx {
    struct tstore ts;
    uint64_t index;
    int64_t now_ms;
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
    cmd->actor = "cli";
    cmd->proposed_unix_ms = x->now_ms;
    cmd->op_case = op_case;
    cmd->create_user = op; /* every member of the union is a pointer */
}

/* Executes at the next index in one committed write transaction. */
static void run(struct ctx *x, const Concord__Command *cmd, Concord__CommandResult *res)
{
    struct store_txn *t = NULL;

    x->index++;
    concord__command_result__init(res);
    assert_int_equal(store_txn_begin(x->ts.s, true, &t), 0);
    assert_int_equal(cluster_fsm_execute(t, cmd, x->index, res), 0);
    assert_int_equal(store_txn_commit(t), 0);
    assert_int_equal(res->index, x->index);
}

static uint64_t expect_ok(struct ctx *x, const Concord__Command *cmd)
{
    Concord__CommandResult res;
    size_t audits = audit_count(x->ts.s);
    uint64_t id;

    run(x, cmd, &res);
    if (res.code != CLUSTER_RESULT_OK)
        fail_msg("expected ok, got %u: %s", res.code, res.message);
    assert_int_equal(audit_count(x->ts.s), audits + 1);
    id = res.id;
    cluster_result_clear(&res);
    return id;
}

static void expect_fail(struct ctx *x, const Concord__Command *cmd, enum cluster_result code,
                        const char *message_part)
{
    Concord__CommandResult res;
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
    assert_memory_equal(before, after, 32);
    assert_int_equal(audit_count(x->ts.s), audits);
    cluster_result_clear(&res);
}

static uint64_t create_user(struct ctx *x, const char *name)
{
    Concord__Command cmd;
    Concord__CreateUser op = CONCORD__CREATE_USER__INIT;

    op.name = (char *)name;
    cmd_init(x, &cmd, CONCORD__COMMAND__OP_CREATE_USER, &op);
    return expect_ok(x, &cmd);
}

static void make_node_cmd(struct ctx *x, Concord__Command *cmd, Concord__CreateNode *op,
                          uint8_t keys[64], uint8_t seed, uint64_t user_id, const char *hostname)
{
    concord__create_node__init(op);
    memset(keys, seed, 32);
    memset(keys + 32, seed ^ 0x80, 32);
    op->machine_key = (ProtobufCBinaryData){32, keys};
    op->node_key = (ProtobufCBinaryData){32, keys + 32};
    op->user_id = user_id;
    op->hostname = (char *)hostname;
    op->register_method = "debug";
    cmd_init(x, cmd, CONCORD__COMMAND__OP_CREATE_NODE, op);
}

static uint64_t create_node(struct ctx *x, uint8_t seed, uint64_t user_id, const char *hostname)
{
    Concord__Command cmd;
    Concord__CreateNode op;
    uint8_t keys[64];

    make_node_cmd(x, &cmd, &op, keys, seed, user_id, hostname);
    return expect_ok(x, &cmd);
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

static void create_user_assigns_ids_and_writes_an_audit_entry(void **state)
{
    struct ctx *x = *state;
    struct store_txn *t = NULL;
    Concord__User *u = NULL;

    assert_int_equal(create_user(x, "alice"), 1);
    assert_int_equal(create_user(x, "bob"), 2);
    assert_int_equal(store_txn_begin(x->ts.s, false, &t), 0);
    assert_int_equal(store_user_get_by_name(t, "bob", &u), 0);
    assert_int_equal(u->id, 2);
    assert_int_equal(u->created_unix_ms, T0_MS);
    store_record_free(u);
    store_txn_abort(t);
    assert_int_equal(audit_count(x->ts.s), 2);
}

static void create_user_refuses_empty_and_taken_names(void **state)
{
    struct ctx *x = *state;
    Concord__Command cmd;
    Concord__CreateUser op = CONCORD__CREATE_USER__INIT;

    create_user(x, "alice");
    cmd_init(x, &cmd, CONCORD__COMMAND__OP_CREATE_USER, &op);
    op.name = "";
    expect_fail(x, &cmd, CLUSTER_RESULT_INVALID, "empty");
    op.name = "alice";
    expect_fail(x, &cmd, CLUSTER_RESULT_CONFLICT, "user \"alice\" already exists");
    /* The failed attempts consumed no id. */
    assert_int_equal(create_user(x, "carol"), 2);
}

static void rename_user_checks_existence_and_uniqueness(void **state)
{
    struct ctx *x = *state;
    Concord__Command cmd;
    Concord__RenameUser op = CONCORD__RENAME_USER__INIT;

    create_user(x, "alice");
    create_user(x, "bob");
    cmd_init(x, &cmd, CONCORD__COMMAND__OP_RENAME_USER, &op);
    op.id = 9;
    op.new_name = "zed";
    expect_fail(x, &cmd, CLUSTER_RESULT_NOTFOUND, "user 9 not found");
    op.id = 1;
    op.new_name = "bob";
    expect_fail(x, &cmd, CLUSTER_RESULT_CONFLICT, "already exists");
    op.new_name = "";
    expect_fail(x, &cmd, CLUSTER_RESULT_INVALID, NULL);
    op.new_name = "anna";
    assert_int_equal(expect_ok(x, &cmd), 1);
    assert_true(user_exists(x->ts.s, "anna"));
    assert_false(user_exists(x->ts.s, "alice"));
}

static void delete_user_refuses_while_it_owns_nodes_and_removes_its_keys(void **state)
{
    struct ctx *x = *state;
    Concord__Command cmd;
    Concord__DeleteUser op = CONCORD__DELETE_USER__INIT;
    Concord__Command key_cmd;
    Concord__CreatePreAuthKey key = CONCORD__CREATE_PRE_AUTH_KEY__INIT;
    Concord__Command node_cmd;
    Concord__DeleteNode node_op = CONCORD__DELETE_NODE__INIT;
    uint8_t hash[32] = {7};
    struct store_txn *t = NULL;
    Concord__PreAuthKey *k = NULL;
    uint64_t node_id;

    create_user(x, "alice");
    node_id = create_node(x, 1, 1, "laptop");
    cmd_init(x, &key_cmd, CONCORD__COMMAND__OP_CREATE_PREAUTHKEY, &key);
    key.prefix = "abc";
    key.hash = (ProtobufCBinaryData){32, hash};
    key.user_id = 1;
    expect_ok(x, &key_cmd);

    cmd_init(x, &cmd, CONCORD__COMMAND__OP_DELETE_USER, &op);
    op.id = 5;
    expect_fail(x, &cmd, CLUSTER_RESULT_NOTFOUND, NULL);
    op.id = 1;
    expect_fail(x, &cmd, CLUSTER_RESULT_CONFLICT, "user has 1 node(s); delete them first");

    cmd_init(x, &node_cmd, CONCORD__COMMAND__OP_DELETE_NODE, &node_op);
    node_op.id = node_id;
    expect_ok(x, &node_cmd);
    assert_int_equal(expect_ok(x, &cmd), 1);
    assert_false(user_exists(x->ts.s, "alice"));
    assert_int_equal(store_txn_begin(x->ts.s, false, &t), 0);
    assert_int_equal(store_preauthkey_get_by_prefix(t, "abc", &k), STORE_NOTFOUND);
    store_txn_abort(t);
}

static void preauthkey_needs_an_owner_or_tags_and_a_unique_prefix(void **state)
{
    struct ctx *x = *state;
    Concord__Command cmd;
    Concord__CreatePreAuthKey op = CONCORD__CREATE_PRE_AUTH_KEY__INIT;
    uint8_t hash[32] = {1};
    char *tags[] = {"tag:server"};
    char *bad_tags[] = {"server"};
    struct store_txn *t = NULL;
    Concord__PreAuthKey *k = NULL;

    create_user(x, "alice");
    cmd_init(x, &cmd, CONCORD__COMMAND__OP_CREATE_PREAUTHKEY, &op);
    op.prefix = "p1";
    op.hash = (ProtobufCBinaryData){32, hash};
    op.user_id = 0;
    expect_fail(x, &cmd, CLUSTER_RESULT_NOTFOUND, "user 0");
    op.user_id = 42;
    expect_fail(x, &cmd, CLUSTER_RESULT_NOTFOUND, "user 42 not found");
    op.user_id = 1;
    op.hash.len = 31;
    expect_fail(x, &cmd, CLUSTER_RESULT_INVALID, "32 bytes");
    op.hash.len = 32;
    op.tags = bad_tags;
    op.n_tags = 1;
    expect_fail(x, &cmd, CLUSTER_RESULT_INVALID, "tag");
    op.tags = NULL;
    op.n_tags = 0;
    op.reusable = true;
    op.expiration_unix_ms = T0_MS + 3600000;
    assert_int_equal(expect_ok(x, &cmd), 1);
    expect_fail(x, &cmd, CLUSTER_RESULT_CONFLICT, "prefix \"p1\" already exists");

    /* A tag-only key has no user. */
    op.prefix = "p2";
    op.user_id = 0;
    op.tags = tags;
    op.n_tags = 1;
    assert_int_equal(expect_ok(x, &cmd), 2);

    assert_int_equal(store_txn_begin(x->ts.s, false, &t), 0);
    assert_int_equal(store_preauthkey_get(t, 1, &k), 0);
    assert_string_equal(k->prefix, "p1");
    assert_int_equal(k->user_id, 1);
    assert_true(k->reusable);
    assert_int_equal(k->created_unix_ms, T0_MS);
    assert_int_equal(k->expiration_unix_ms, T0_MS + 3600000);
    store_record_free(k);
    assert_int_equal(store_preauthkey_get(t, 2, &k), 0);
    assert_int_equal(k->n_tags, 1);
    assert_string_equal(k->tags[0], "tag:server");
    store_record_free(k);
    store_txn_abort(t);
}

static int64_t key_expiration(struct ctx *x, uint64_t id)
{
    struct store_txn *t = NULL;
    Concord__PreAuthKey *k = NULL;
    int64_t v;

    assert_int_equal(store_txn_begin(x->ts.s, false, &t), 0);
    assert_int_equal(store_preauthkey_get(t, id, &k), 0);
    v = k->expiration_unix_ms;
    store_record_free(k);
    store_txn_abort(t);
    return v;
}

static void expire_preauthkey_uses_the_proposed_time_unless_already_expired(void **state)
{
    struct ctx *x = *state;
    Concord__Command create;
    Concord__CreatePreAuthKey key = CONCORD__CREATE_PRE_AUTH_KEY__INIT;
    Concord__Command cmd;
    Concord__ExpirePreAuthKey op = CONCORD__EXPIRE_PRE_AUTH_KEY__INIT;
    uint8_t hash[32] = {1};

    create_user(x, "alice");
    cmd_init(x, &create, CONCORD__COMMAND__OP_CREATE_PREAUTHKEY, &key);
    key.prefix = "k";
    key.hash = (ProtobufCBinaryData){32, hash};
    key.user_id = 1;
    expect_ok(x, &create);

    cmd_init(x, &cmd, CONCORD__COMMAND__OP_EXPIRE_PREAUTHKEY, &op);
    op.id = 3;
    expect_fail(x, &cmd, CLUSTER_RESULT_NOTFOUND, NULL);
    op.id = 1;
    cmd.proposed_unix_ms = T0_MS + 5000;
    expect_ok(x, &cmd);
    assert_int_equal(key_expiration(x, 1), T0_MS + 5000);
    cmd.proposed_unix_ms = T0_MS + 9000;
    expect_ok(x, &cmd);
    assert_int_equal(key_expiration(x, 1), T0_MS + 5000);
}

static void delete_preauthkey_reports_unknown_ids(void **state)
{
    struct ctx *x = *state;
    Concord__Command create;
    Concord__CreatePreAuthKey key = CONCORD__CREATE_PRE_AUTH_KEY__INIT;
    Concord__Command cmd;
    Concord__DeletePreAuthKey op = CONCORD__DELETE_PRE_AUTH_KEY__INIT;
    uint8_t hash[32] = {1};
    char *tags[] = {"tag:ci"};

    cmd_init(x, &create, CONCORD__COMMAND__OP_CREATE_PREAUTHKEY, &key);
    key.prefix = "k";
    key.hash = (ProtobufCBinaryData){32, hash};
    key.tags = tags;
    key.n_tags = 1;
    expect_ok(x, &create);
    cmd_init(x, &cmd, CONCORD__COMMAND__OP_DELETE_PREAUTHKEY, &op);
    op.id = 2;
    expect_fail(x, &cmd, CLUSTER_RESULT_NOTFOUND, "pre-auth key 2 not found");
    op.id = 1;
    assert_int_equal(expect_ok(x, &cmd), 1);
    expect_fail(x, &cmd, CLUSTER_RESULT_NOTFOUND, NULL);
}

static void apikeys_are_created_expired_and_deleted_by_prefix(void **state)
{
    struct ctx *x = *state;
    Concord__Command create;
    Concord__CreateApiKey key = CONCORD__CREATE_API_KEY__INIT;
    Concord__Command expire;
    Concord__ExpireApiKey expire_op = CONCORD__EXPIRE_API_KEY__INIT;
    Concord__Command del;
    Concord__DeleteApiKey del_op = CONCORD__DELETE_API_KEY__INIT;
    uint8_t hash[32] = {9};
    struct store_txn *t = NULL;
    Concord__ApiKey *k = NULL;

    cmd_init(x, &create, CONCORD__COMMAND__OP_CREATE_APIKEY, &key);
    key.prefix = "api1";
    key.hash = (ProtobufCBinaryData){32, hash};
    assert_int_equal(expect_ok(x, &create), 1);
    expect_fail(x, &create, CLUSTER_RESULT_CONFLICT, "already exists");
    key.prefix = "";
    expect_fail(x, &create, CLUSTER_RESULT_INVALID, NULL);

    cmd_init(x, &expire, CONCORD__COMMAND__OP_EXPIRE_APIKEY, &expire_op);
    expire_op.prefix = "nope";
    expect_fail(x, &expire, CLUSTER_RESULT_NOTFOUND, "API key \"nope\" not found");
    expire_op.prefix = "api1";
    expire.proposed_unix_ms = T0_MS + 1;
    expect_ok(x, &expire);
    assert_int_equal(store_txn_begin(x->ts.s, false, &t), 0);
    assert_int_equal(store_apikey_get_by_prefix(t, "api1", &k), 0);
    assert_int_equal(k->expiration_unix_ms, T0_MS + 1);
    store_record_free(k);
    store_txn_abort(t);

    cmd_init(x, &del, CONCORD__COMMAND__OP_DELETE_APIKEY, &del_op);
    del_op.prefix = "nope";
    expect_fail(x, &del, CLUSTER_RESULT_NOTFOUND, NULL);
    del_op.prefix = "api1";
    assert_int_equal(expect_ok(x, &del), 1);
    expect_fail(x, &del, CLUSTER_RESULT_NOTFOUND, NULL);
}

static void create_node_allocates_the_lowest_free_addresses_and_unique_names(void **state)
{
    struct ctx *x = *state;
    static const uint8_t v4_1[4] = {100, 64, 0, 1};
    static const uint8_t v4_2[4] = {100, 64, 0, 2};
    static const uint8_t v6_1[16] = {0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0, 0, 0,
                                     0,    0,    0,    0,    0,    0,    0, 1};
    Concord__Command del;
    Concord__DeleteNode del_op = CONCORD__DELETE_NODE__INIT;
    Concord__Node *n;
    char long_name[100];

    create_user(x, "alice");
    assert_int_equal(create_node(x, 1, 1, "My Laptop!"), 1);
    n = get_node(x, 1);
    assert_memory_equal(n->ipv4.data, v4_1, 4);
    assert_memory_equal(n->ipv6.data, v6_1, 16);
    assert_string_equal(n->given_name, "my-laptop-");
    assert_string_equal(n->hostname, "My Laptop!");
    assert_int_equal(n->created_unix_ms, T0_MS);
    store_record_free(n);

    create_node(x, 2, 1, "my laptop!");
    n = get_node(x, 2);
    assert_memory_equal(n->ipv4.data, v4_2, 4);
    assert_string_equal(n->given_name, "my-laptop--1");
    store_record_free(n);

    create_node(x, 3, 1, "");
    n = get_node(x, 3);
    assert_string_equal(n->given_name, "node");
    store_record_free(n);

    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    create_node(x, 4, 1, long_name);
    create_node(x, 5, 1, long_name);
    n = get_node(x, 5);
    assert_int_equal(strlen(n->given_name), 63);
    assert_string_equal(n->given_name + 61, "-1");
    store_record_free(n);

    /* A freed address is the lowest free one again. */
    cmd_init(x, &del, CONCORD__COMMAND__OP_DELETE_NODE, &del_op);
    del_op.id = 1;
    expect_ok(x, &del);
    assert_int_equal(create_node(x, 6, 1, "again"), 6);
    n = get_node(x, 6);
    assert_memory_equal(n->ipv4.data, v4_1, 4);
    store_record_free(n);
}

static void create_node_refuses_bad_or_duplicate_keys_and_unknown_users(void **state)
{
    struct ctx *x = *state;
    Concord__Command cmd;
    Concord__CreateNode op;
    uint8_t keys[64];
    uint8_t other[64];
    char *tags[] = {"tag:server"};

    create_user(x, "alice");
    create_node(x, 1, 1, "a");
    make_node_cmd(x, &cmd, &op, keys, 2, 7, "b");
    expect_fail(x, &cmd, CLUSTER_RESULT_NOTFOUND, "user 7 not found");
    op.user_id = 0;
    expect_fail(x, &cmd, CLUSTER_RESULT_NOTFOUND, NULL);
    op.user_id = 1;
    op.machine_key.len = 31;
    expect_fail(x, &cmd, CLUSTER_RESULT_INVALID, "32 bytes");
    op.machine_key.len = 32;

    /* Same machine key as node 1, then same node key. */
    memset(other, 1, 32);
    memset(other + 32, 0x55, 32);
    op.machine_key.data = other;
    expect_fail(x, &cmd, CLUSTER_RESULT_CONFLICT, "machine key");
    op.machine_key.data = keys;
    memset(other + 32, 1 ^ 0x80, 32);
    op.node_key.data = other + 32;
    expect_fail(x, &cmd, CLUSTER_RESULT_CONFLICT, "node key");
    op.node_key.data = keys + 32;

    /* A tagged node needs no user. */
    op.user_id = 0;
    op.tags = tags;
    op.n_tags = 1;
    assert_int_equal(expect_ok(x, &cmd), 2);
}

static void nodes_are_renamed_expired_tagged_and_deleted(void **state)
{
    struct ctx *x = *state;
    Concord__Command cmd;
    Concord__RenameNode rename = CONCORD__RENAME_NODE__INIT;
    Concord__ExpireNode expire = CONCORD__EXPIRE_NODE__INIT;
    Concord__SetNodeTags tags_op = CONCORD__SET_NODE_TAGS__INIT;
    Concord__DeleteNode del = CONCORD__DELETE_NODE__INIT;
    char *tags[] = {"tag:a", "tag:b"};
    char *bad_tags[] = {"tag:"};
    struct store_txn *t = NULL;
    Concord__Node *n;

    create_user(x, "alice");
    create_node(x, 1, 1, "one");
    create_node(x, 2, 1, "two");

    cmd_init(x, &cmd, CONCORD__COMMAND__OP_RENAME_NODE, &rename);
    rename.id = 9;
    rename.new_name = "x";
    expect_fail(x, &cmd, CLUSTER_RESULT_NOTFOUND, "node 9 not found");
    rename.id = 1;
    rename.new_name = "two";
    expect_fail(x, &cmd, CLUSTER_RESULT_CONFLICT, "already in use");
    rename.new_name = "Bad Name";
    expect_fail(x, &cmd, CLUSTER_RESULT_INVALID, NULL);
    rename.new_name = "one";
    expect_ok(x, &cmd); /* its own name is not a conflict */
    rename.new_name = "uno";
    expect_ok(x, &cmd);
    n = get_node(x, 1);
    assert_string_equal(n->given_name, "uno");
    store_record_free(n);

    cmd_init(x, &cmd, CONCORD__COMMAND__OP_EXPIRE_NODE, &expire);
    expire.id = 9;
    expect_fail(x, &cmd, CLUSTER_RESULT_NOTFOUND, NULL);
    expire.id = 1;
    expire.expiry_unix_ms = T0_MS + 77;
    expect_ok(x, &cmd);
    n = get_node(x, 1);
    assert_int_equal(n->expiry_unix_ms, T0_MS + 77);
    store_record_free(n);

    cmd_init(x, &cmd, CONCORD__COMMAND__OP_SET_NODE_TAGS, &tags_op);
    tags_op.id = 9;
    expect_fail(x, &cmd, CLUSTER_RESULT_NOTFOUND, NULL);
    tags_op.id = 1;
    tags_op.tags = bad_tags;
    tags_op.n_tags = 1;
    expect_fail(x, &cmd, CLUSTER_RESULT_INVALID, NULL);
    tags_op.tags = tags;
    tags_op.n_tags = 2;
    expect_ok(x, &cmd);
    n = get_node(x, 1);
    assert_int_equal(n->n_tags, 2);
    assert_string_equal(n->tags[1], "tag:b");
    store_record_free(n);

    cmd_init(x, &cmd, CONCORD__COMMAND__OP_DELETE_NODE, &del);
    del.id = 9;
    expect_fail(x, &cmd, CLUSTER_RESULT_NOTFOUND, NULL);
    del.id = 1;
    expect_ok(x, &cmd);
    assert_int_equal(store_txn_begin(x->ts.s, false, &t), 0);
    assert_int_equal(store_node_get(t, 1, &n), STORE_NOTFOUND);
    store_txn_abort(t);
}

static int count_sessions(const ProtobufCMessage *record, void *arg)
{
    const Concord__Session *s = (const Concord__Session *)record;

    assert_int_equal(s->node_id, 2);
    (*(size_t *)arg)++;
    return 0;
}

static void delete_node_removes_only_its_sessions(void **state)
{
    struct ctx *x = *state;
    Concord__Command cmd;
    Concord__DeleteNode del = CONCORD__DELETE_NODE__INIT;
    Concord__Session session = CONCORD__SESSION__INIT;
    struct store_txn *t = NULL;
    size_t n = 0;

    create_user(x, "alice");
    create_node(x, 1, 1, "one");
    create_node(x, 2, 1, "two");
    assert_int_equal(store_txn_begin(x->ts.s, true, &t), 0);
    for (uint64_t node = 1; node <= 2; node++) {
        for (uint64_t id = 1; id <= 3; id++) {
            session.node_id = node;
            session.session_id = id;
            assert_int_equal(store_session_put(t, &session), 0);
        }
    }
    assert_int_equal(store_txn_commit(t), 0);
    cmd_init(x, &cmd, CONCORD__COMMAND__OP_DELETE_NODE, &del);
    del.id = 1;
    expect_ok(x, &cmd);
    assert_int_equal(store_txn_begin(x->ts.s, false, &t), 0);
    assert_int_equal(store_session_each(t, count_sessions, &n), 0);
    store_txn_abort(t);
    assert_int_equal(n, 3);
}

static void set_policy_is_a_compare_and_set_register(void **state)
{
    struct ctx *x = *state;
    Concord__Command cmd;
    Concord__SetPolicy op = CONCORD__SET_POLICY__INIT;
    struct store_txn *t = NULL;
    Concord__Policy *p = NULL;

    cmd_init(x, &cmd, CONCORD__COMMAND__OP_SET_POLICY, &op);
    op.text = "{}";
    op.has_if_version = true;
    op.if_version = 3;
    expect_fail(x, &cmd, CLUSTER_RESULT_PRECONDITION, "policy version is 0");
    op.if_version = 0;
    assert_int_equal(expect_ok(x, &cmd), 1);
    expect_fail(x, &cmd, CLUSTER_RESULT_PRECONDITION, "policy version is 1");
    op.if_version = 1;
    op.text = "{\"acls\": []}";
    assert_int_equal(expect_ok(x, &cmd), 2);
    op.has_if_version = false;
    op.if_version = 0;
    assert_int_equal(expect_ok(x, &cmd), 3);
    assert_int_equal(store_txn_begin(x->ts.s, false, &t), 0);
    assert_int_equal(store_policy_get(t, &p), 0);
    assert_int_equal(p->version, 3);
    assert_string_equal(p->text, "{\"acls\": []}");
    assert_int_equal(p->updated_unix_ms, T0_MS);
    store_record_free(p);
    store_txn_abort(t);
}

static void upsert_replica_keeps_liveness_fields_and_remove_reports_unknown(void **state)
{
    struct ctx *x = *state;
    Concord__Command cmd;
    Concord__UpsertReplica up = CONCORD__UPSERT_REPLICA__INIT;
    Concord__RemoveReplica rm = CONCORD__REMOVE_REPLICA__INIT;
    Concord__Replica r = CONCORD__REPLICA__INIT;
    Concord__Replica *got = NULL;
    struct store_txn *t = NULL;

    assert_int_equal(store_txn_begin(x->ts.s, true, &t), 0);
    r.id = 2;
    r.raft_address = "old:1";
    r.http_address = "old:2";
    r.epoch = 7;
    r.heartbeat_seq = 11;
    assert_int_equal(store_replica_put(t, &r), 0);
    assert_int_equal(store_txn_commit(t), 0);

    cmd_init(x, &cmd, CONCORD__COMMAND__OP_UPSERT_REPLICA, &up);
    up.id = 0;
    expect_fail(x, &cmd, CLUSTER_RESULT_INVALID, NULL);
    up.id = 2;
    up.raft_address = "127.0.0.1:7002";
    up.http_address = "127.0.0.1:8002";
    expect_ok(x, &cmd);
    assert_int_equal(store_txn_begin(x->ts.s, false, &t), 0);
    assert_int_equal(store_replica_get(t, 2, &got), 0);
    assert_string_equal(got->raft_address, "127.0.0.1:7002");
    assert_string_equal(got->http_address, "127.0.0.1:8002");
    assert_int_equal(got->epoch, 7);
    assert_int_equal(got->heartbeat_seq, 11);
    store_record_free(got);
    store_txn_abort(t);

    cmd_init(x, &cmd, CONCORD__COMMAND__OP_REMOVE_REPLICA, &rm);
    rm.id = 3;
    expect_fail(x, &cmd, CLUSTER_RESULT_NOTFOUND, "replica 3 not found");
    rm.id = 2;
    expect_ok(x, &cmd);
    expect_fail(x, &cmd, CLUSTER_RESULT_NOTFOUND, NULL);
}

static void dump_of(struct store *s, uint8_t **dump, size_t *len)
{
    struct store_txn *t = NULL;

    assert_int_equal(store_txn_begin(s, false, &t), 0);
    assert_int_equal(store_dump(t, dump, len), 0);
    store_txn_abort(t);
}

static void restore_state_loads_a_dump_but_keeps_the_current_replicas(void **state)
{
    struct ctx *x = *state;
    struct ctx other = {.now_ms = T0_MS};
    Concord__Command cmd;
    Concord__RestoreState op = CONCORD__RESTORE_STATE__INIT;
    Concord__UpsertReplica up = CONCORD__UPSERT_REPLICA__INIT;
    Concord__Replica *got = NULL;
    struct store_txn *t = NULL;
    uint8_t *dump = NULL;
    size_t len = 0;

    /* The backup: users and a replica record of another cluster. */
    tstore_open(&other.ts);
    create_user(&other, "from-backup");
    cmd_init(&other, &cmd, CONCORD__COMMAND__OP_UPSERT_REPLICA, &up);
    up.id = 9;
    up.raft_address = "backup:1";
    up.http_address = "backup:2";
    expect_ok(&other, &cmd);
    dump_of(other.ts.s, &dump, &len);
    tstore_close(&other.ts);

    create_user(x, "current");
    up.id = 1;
    up.raft_address = "live:1";
    up.http_address = "live:2";
    cmd_init(x, &cmd, CONCORD__COMMAND__OP_UPSERT_REPLICA, &up);
    expect_ok(x, &cmd);

    cmd_init(x, &cmd, CONCORD__COMMAND__OP_RESTORE_STATE, &op);
    op.dump = (ProtobufCBinaryData){len, dump};
    expect_ok(x, &cmd);
    assert_true(user_exists(x->ts.s, "from-backup"));
    assert_false(user_exists(x->ts.s, "current"));
    assert_int_equal(store_txn_begin(x->ts.s, false, &t), 0);
    assert_int_equal(store_replica_get(t, 1, &got), 0);
    assert_string_equal(got->http_address, "live:2");
    store_record_free(got);
    assert_int_equal(store_replica_get(t, 9, &got), STORE_NOTFOUND);
    store_txn_abort(t);
    assert_int_equal(store_applied(x->ts.s), x->index);
    free(dump);
}

static void restore_state_refuses_a_corrupt_dump_without_changes(void **state)
{
    struct ctx *x = *state;
    Concord__Command cmd;
    Concord__RestoreState op = CONCORD__RESTORE_STATE__INIT;
    uint8_t *dump = NULL;
    size_t len = 0;

    create_user(x, "current");
    dump_of(x->ts.s, &dump, &len);
    dump[len / 2] ^= 0x5a;
    cmd_init(x, &cmd, CONCORD__COMMAND__OP_RESTORE_STATE, &op);
    op.dump = (ProtobufCBinaryData){len, dump};
    expect_fail(x, &cmd, CLUSTER_RESULT_INVALID, "dump");
    op.dump = (ProtobufCBinaryData){3, dump};
    expect_fail(x, &cmd, CLUSTER_RESULT_INVALID, "dump");
    assert_true(user_exists(x->ts.s, "current"));
    free(dump);
}

static void command_without_an_operation_is_invalid(void **state)
{
    struct ctx *x = *state;
    Concord__Command cmd = CONCORD__COMMAND__INIT;

    expect_fail(x, &cmd, CLUSTER_RESULT_INVALID, NULL);
}

int test_execute_run(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(create_user_assigns_ids_and_writes_an_audit_entry),
        T(create_user_refuses_empty_and_taken_names),
        T(rename_user_checks_existence_and_uniqueness),
        T(delete_user_refuses_while_it_owns_nodes_and_removes_its_keys),
        T(preauthkey_needs_an_owner_or_tags_and_a_unique_prefix),
        T(expire_preauthkey_uses_the_proposed_time_unless_already_expired),
        T(delete_preauthkey_reports_unknown_ids),
        T(apikeys_are_created_expired_and_deleted_by_prefix),
        T(create_node_allocates_the_lowest_free_addresses_and_unique_names),
        T(create_node_refuses_bad_or_duplicate_keys_and_unknown_users),
        T(nodes_are_renamed_expired_tagged_and_deleted),
        T(delete_node_removes_only_its_sessions),
        T(set_policy_is_a_compare_and_set_register),
        T(upsert_replica_keeps_liveness_fields_and_remove_reports_unknown),
        T(restore_state_loads_a_dump_but_keeps_the_current_replicas),
        T(restore_state_refuses_a_corrupt_dump_without_changes),
        T(command_without_an_operation_is_invalid),
    };
#undef T

    return cmocka_run_group_tests_name("execute", tests, NULL, NULL);
}
