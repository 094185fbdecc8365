/* tests/unit/storage/test_records.c: typed records, their unique indexes,
 * iteration order, and refusals that must change nothing. */
#include "tests/unit/storage/storage_tests.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

struct collected {
    uint64_t ids[16];
    size_t n;
    size_t stop_after; /* 0: never */
};

static int collect_user(const ProtobufCMessage *m, void *arg)
{
    struct collected *c = arg;

    assert_true(c->n < 16);
    c->ids[c->n++] = ((const Concord__User *)m)->id;
    return c->stop_after != 0 && c->n == c->stop_after ? 42 : 0;
}

static int collect_node(const ProtobufCMessage *m, void *arg)
{
    struct collected *c = arg;

    assert_true(c->n < 16);
    c->ids[c->n++] = ((const Concord__Node *)m)->id;
    return 0;
}

static int collect_audit(const ProtobufCMessage *m, void *arg)
{
    struct collected *c = arg;

    assert_true(c->n < 16);
    c->ids[c->n++] = ((const Concord__AuditEntry *)m)->index;
    return 0;
}

static int collect_session(const ProtobufCMessage *m, void *arg)
{
    struct collected *c = arg;
    const Concord__Session *s = (const Concord__Session *)m;

    assert_true(c->n < 16);
    c->ids[c->n++] = s->node_id * 1000 + s->session_id;
    return 0;
}

static int count_any(const ProtobufCMessage *m, void *arg)
{
    (void)m;
    (*(size_t *)arg)++;
    return 0;
}

static void user_put_then_get_by_id_and_by_name(void **state)
{
    struct fixture *f = *state;
    struct store_txn *t = txn_write(f->s);
    Concord__User u, *got = NULL;

    user_make(&u, 3, "alice");
    u.display_name = "Alice A.";
    assert_int_equal(store_user_put(t, &u), 0);
    txn_commit(t);

    t = txn_read(f->s);
    assert_int_equal(store_user_get(t, 3, &got), 0);
    assert_string_equal(got->name, "alice");
    assert_string_equal(got->display_name, "Alice A.");
    assert_int_equal(got->created_unix_ms, u.created_unix_ms);
    store_record_free(got);
    assert_int_equal(store_user_get_by_name(t, "alice", &got), 0);
    assert_int_equal(got->id, 3);
    store_record_free(got);
    assert_int_equal(store_user_get(t, 4, &got), STORE_NOTFOUND);
    assert_int_equal(store_user_get_by_name(t, "bob", &got), STORE_NOTFOUND);
    assert_int_equal(store_user_get_by_name(t, "", &got), STORE_NOTFOUND);
    assert_int_equal(store_user_get_by_name(t, NULL, &got), STORE_NOTFOUND);
    store_txn_abort(t);
}

static void user_put_refuses_a_name_held_by_another_user_and_changes_nothing(void **state)
{
    struct fixture *f = *state;
    struct store_txn *t = txn_write(f->s);
    Concord__User u, *got = NULL;
    uint8_t before[32], after[32];

    user_make(&u, 1, "alice");
    assert_int_equal(store_user_put(t, &u), 0);
    user_make(&u, 2, "bob");
    assert_int_equal(store_user_put(t, &u), 0);
    txn_commit(t);
    state_hash_of(f->s, before);

    t = txn_write(f->s);
    user_make(&u, 2, "alice"); /* rename bob onto alice */
    assert_int_equal(store_user_put(t, &u), STORE_EXISTS);
    assert_non_null(strstr(store_txn_errmsg(t), "alice"));
    user_make(&u, 3, "alice"); /* new user with a taken name */
    assert_int_equal(store_user_put(t, &u), STORE_EXISTS);
    /* The refusals left the transaction usable and untouched. */
    txn_commit(t);
    state_hash_of(f->s, after);
    assert_memory_equal(before, after, 32);
    t = txn_read(f->s);
    assert_int_equal(store_user_get(t, 2, &got), 0);
    assert_string_equal(got->name, "bob");
    store_record_free(got);
    assert_int_equal(store_user_get(t, 3, &got), STORE_NOTFOUND);
    store_txn_abort(t);
}

static void user_rename_moves_the_name_index(void **state)
{
    struct fixture *f = *state;
    struct store_txn *t = txn_write(f->s);
    Concord__User u, *got = NULL;

    user_make(&u, 1, "alice");
    assert_int_equal(store_user_put(t, &u), 0);
    user_make(&u, 1, "alicia");
    assert_int_equal(store_user_put(t, &u), 0);
    /* Writing the same record again is fine: its keys are its own. */
    assert_int_equal(store_user_put(t, &u), 0);
    assert_int_equal(store_user_get_by_name(t, "alice", &got), STORE_NOTFOUND);
    assert_int_equal(store_user_get_by_name(t, "alicia", &got), 0);
    assert_int_equal(got->id, 1);
    store_record_free(got);
    /* The old name is free for someone else. */
    user_make(&u, 2, "alice");
    assert_int_equal(store_user_put(t, &u), 0);
    txn_commit(t);
}

static void user_delete_frees_the_name(void **state)
{
    struct fixture *f = *state;
    struct store_txn *t = txn_write(f->s);
    Concord__User u, *got = NULL;

    user_make(&u, 1, "alice");
    assert_int_equal(store_user_put(t, &u), 0);
    assert_int_equal(store_user_delete(t, 1), 0);
    assert_int_equal(store_user_delete(t, 1), STORE_NOTFOUND);
    assert_int_equal(store_user_get(t, 1, &got), STORE_NOTFOUND);
    assert_int_equal(store_user_get_by_name(t, "alice", &got), STORE_NOTFOUND);
    user_make(&u, 2, "alice");
    assert_int_equal(store_user_put(t, &u), 0);
    txn_commit(t);
}

static void user_put_rejects_invalid_records(void **state)
{
    struct fixture *f = *state;
    struct store_txn *t = txn_write(f->s);
    Concord__User u;
    char *long_name = malloc(600);

    assert_non_null(long_name);
    user_make(&u, 0, "zero");
    assert_int_equal(store_user_put(t, &u), STORE_INVALID);
    user_make(&u, 1, "");
    assert_int_equal(store_user_put(t, &u), STORE_INVALID);
    memset(long_name, 'a', 599);
    long_name[599] = '\0';
    user_make(&u, 1, long_name);
    assert_int_equal(store_user_put(t, &u), STORE_INVALID);
    assert_non_null(strstr(store_txn_errmsg(t), "limit"));
    free(long_name);
    txn_commit(t);
}

static void user_each_walks_in_numeric_id_order_and_stops_on_request(void **state)
{
    struct fixture *f = *state;
    struct store_txn *t = txn_write(f->s);
    const uint64_t ids[] = {256, 2, 65536, 1};
    struct collected c = {{0}, 0, 0};
    char name[16];
    Concord__User u;

    for (size_t i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "u%zu", i);
        user_make(&u, ids[i], name);
        assert_int_equal(store_user_put(t, &u), 0);
    }
    assert_int_equal(store_user_each(t, collect_user, &c), 0);
    assert_int_equal(c.n, 4);
    assert_int_equal(c.ids[0], 1);
    assert_int_equal(c.ids[1], 2);
    assert_int_equal(c.ids[2], 256);
    assert_int_equal(c.ids[3], 65536);
    c.n = 0;
    c.stop_after = 2;
    assert_int_equal(store_user_each(t, collect_user, &c), 42);
    assert_int_equal(c.n, 2);
    txn_commit(t);
}

static void keys_are_found_by_prefix_and_prefixes_are_unique(void **state)
{
    struct fixture *f = *state;
    struct store_txn *t = txn_write(f->s);
    Concord__PreAuthKey pk = CONCORD__PRE_AUTH_KEY__INIT, *gpk = NULL;
    Concord__ApiKey ak = CONCORD__API_KEY__INIT, *gak = NULL;
    uint8_t hash[32] = {1};
    size_t count = 0;

    pk.id = 1;
    pk.prefix = "AAAABBBBCCCC";
    pk.hash = (ProtobufCBinaryData){sizeof hash, hash};
    pk.reusable = true;
    assert_int_equal(store_preauthkey_put(t, &pk), 0);
    ak.id = 1;
    ak.prefix = "AAAABBBBCCCC"; /* another table: no conflict */
    ak.hash = (ProtobufCBinaryData){sizeof hash, hash};
    assert_int_equal(store_apikey_put(t, &ak), 0);

    assert_int_equal(store_preauthkey_get_by_prefix(t, "AAAABBBBCCCC", &gpk), 0);
    assert_int_equal(gpk->id, 1);
    assert_true(gpk->reusable);
    assert_memory_equal(gpk->hash.data, hash, 32);
    store_record_free(gpk);
    assert_int_equal(store_apikey_get_by_prefix(t, "AAAABBBBCCCC", &gak), 0);
    store_record_free(gak);

    pk.id = 2;
    assert_int_equal(store_preauthkey_put(t, &pk), STORE_EXISTS);
    ak.id = 2;
    assert_int_equal(store_apikey_put(t, &ak), STORE_EXISTS);
    pk.prefix = "";
    assert_int_equal(store_preauthkey_put(t, &pk), STORE_INVALID);
    ak.prefix = "";
    assert_int_equal(store_apikey_put(t, &ak), STORE_INVALID);

    assert_int_equal(store_preauthkey_get(t, 1, &gpk), 0);
    store_record_free(gpk);
    assert_int_equal(store_apikey_get(t, 1, &gak), 0);
    store_record_free(gak);
    assert_int_equal(store_preauthkey_each(t, count_any, &count), 0);
    assert_int_equal(store_apikey_each(t, count_any, &count), 0);
    assert_int_equal(count, 2);

    assert_int_equal(store_preauthkey_delete(t, 1), 0);
    assert_int_equal(store_apikey_delete(t, 1), 0);
    assert_int_equal(store_preauthkey_get_by_prefix(t, "AAAABBBBCCCC", &gpk), STORE_NOTFOUND);
    assert_int_equal(store_apikey_get_by_prefix(t, "AAAABBBBCCCC", &gak), STORE_NOTFOUND);
    assert_int_equal(store_apikey_delete(t, 1), STORE_NOTFOUND);
    txn_commit(t);
}

static void node_is_found_by_every_unique_key(void **state)
{
    struct fixture *f = *state;
    struct store_txn *t = txn_write(f->s);
    Concord__Node n, *got = NULL;
    struct node_bufs b;

    node_make(&n, &b, 7, 1);
    n.n_endpoints = 0;
    assert_int_equal(store_node_put(t, &n), 0);
    txn_commit(t);

    t = txn_read(f->s);
    assert_int_equal(store_node_get(t, 7, &got), 0);
    assert_memory_equal(got->machine_key.data, b.machine_key, 32);
    assert_memory_equal(got->ipv6.data, b.ipv6, 16);
    assert_string_equal(got->given_name, "node-1");
    store_record_free(got);
    assert_int_equal(store_node_get_by_machine_key(t, b.machine_key, &got), 0);
    assert_int_equal(got->id, 7);
    store_record_free(got);
    assert_int_equal(store_node_get_by_node_key(t, b.node_key, &got), 0);
    assert_int_equal(got->id, 7);
    store_record_free(got);
    assert_int_equal(store_node_get_by_ip(t, b.ipv4, 4, &got), 0);
    assert_int_equal(got->id, 7);
    store_record_free(got);
    assert_int_equal(store_node_get_by_ip(t, b.ipv6, 16, &got), 0);
    assert_int_equal(got->id, 7);
    store_record_free(got);
    assert_int_equal(store_node_get_by_given_name(t, "node-1", &got), 0);
    assert_int_equal(got->id, 7);
    store_record_free(got);
    /* The disco key is not an index. */
    assert_int_equal(store_node_get_by_machine_key(t, b.disco_key, &got), STORE_NOTFOUND);
    assert_int_equal(store_node_get_by_ip(t, b.ipv4, 5, &got), STORE_INVALID);
    store_txn_abort(t);
}

static void node_without_optional_keys_is_not_indexed_by_them(void **state)
{
    struct fixture *f = *state;
    struct store_txn *t = txn_write(f->s);
    Concord__Node n, *got = NULL;
    struct node_bufs b1, b2;

    node_make(&n, &b1, 1, 1);
    n.ipv6 = (ProtobufCBinaryData){0, NULL};
    n.disco_key = (ProtobufCBinaryData){0, NULL};
    n.given_name = "";
    assert_int_equal(store_node_put(t, &n), 0);
    /* A second node also without them: empty keys never conflict. */
    node_make(&n, &b2, 2, 2);
    n.ipv6 = (ProtobufCBinaryData){0, NULL};
    n.given_name = "";
    assert_int_equal(store_node_put(t, &n), 0);
    assert_int_equal(store_node_get_by_ip(t, b1.ipv6, 16, &got), STORE_NOTFOUND);
    assert_int_equal(store_node_get_by_given_name(t, "", &got), STORE_NOTFOUND);
    assert_int_equal(store_node_get_by_ip(t, b2.ipv4, 4, &got), 0);
    assert_int_equal(got->id, 2);
    store_record_free(got);
    txn_commit(t);
}

static void node_put_refuses_each_taken_unique_key_and_changes_nothing(void **state)
{
    struct fixture *f = *state;
    struct store_txn *t = txn_write(f->s);
    Concord__Node n;
    struct node_bufs b1, b2;
    uint8_t before[32], after[32];

    node_make(&n, &b1, 1, 1);
    assert_int_equal(store_node_put(t, &n), 0);
    txn_commit(t);
    state_hash_of(f->s, before);

    t = txn_write(f->s);
    for (int field = 0; field < 5; field++) {
        node_make(&n, &b2, 2, 2);
        switch (field) {
        case 0:
            n.machine_key.data = b1.machine_key;
            break;
        case 1:
            n.node_key.data = b1.node_key;
            break;
        case 2:
            n.ipv4.data = b1.ipv4;
            break;
        case 3:
            n.ipv6.data = b1.ipv6;
            break;
        default:
            n.given_name = b1.given_name;
            break;
        }
        assert_int_equal(store_node_put(t, &n), STORE_EXISTS);
    }
    txn_commit(t);
    state_hash_of(f->s, after);
    assert_memory_equal(before, after, 32);
}

static void node_rekey_moves_every_changed_index_entry(void **state)
{
    struct fixture *f = *state;
    struct store_txn *t = txn_write(f->s);
    Concord__Node n, *got = NULL;
    struct node_bufs old_b, new_b;

    node_make(&n, &old_b, 5, 1);
    assert_int_equal(store_node_put(t, &n), 0);
    /* Same machine key, everything else new. */
    node_make(&n, &new_b, 5, 9);
    n.machine_key.data = old_b.machine_key;
    assert_int_equal(store_node_put(t, &n), 0);
    txn_commit(t);

    t = txn_read(f->s);
    assert_int_equal(store_node_get_by_machine_key(t, old_b.machine_key, &got), 0);
    store_record_free(got);
    assert_int_equal(store_node_get_by_node_key(t, old_b.node_key, &got), STORE_NOTFOUND);
    assert_int_equal(store_node_get_by_ip(t, old_b.ipv4, 4, &got), STORE_NOTFOUND);
    assert_int_equal(store_node_get_by_ip(t, old_b.ipv6, 16, &got), STORE_NOTFOUND);
    assert_int_equal(store_node_get_by_given_name(t, "node-1", &got), STORE_NOTFOUND);
    assert_int_equal(store_node_get_by_node_key(t, new_b.node_key, &got), 0);
    store_record_free(got);
    assert_int_equal(store_node_get_by_ip(t, new_b.ipv4, 4, &got), 0);
    store_record_free(got);
    assert_int_equal(store_node_get_by_ip(t, new_b.ipv6, 16, &got), 0);
    store_record_free(got);
    assert_int_equal(store_node_get_by_given_name(t, "node-9", &got), 0);
    assert_int_equal(got->id, 5);
    store_record_free(got);
    store_txn_abort(t);

    /* Dropping the given name removes its entry. */
    t = txn_write(f->s);
    n.given_name = "";
    assert_int_equal(store_node_put(t, &n), 0);
    assert_int_equal(store_node_get_by_given_name(t, "node-9", &got), STORE_NOTFOUND);
    assert_int_equal(store_node_delete(t, 5), 0);
    assert_int_equal(store_node_get_by_machine_key(t, old_b.machine_key, &got), STORE_NOTFOUND);
    assert_int_equal(store_node_get_by_ip(t, new_b.ipv4, 4, &got), STORE_NOTFOUND);
    txn_commit(t);
}

static void node_put_rejects_malformed_keys_and_addresses(void **state)
{
    struct fixture *f = *state;
    struct store_txn *t = txn_write(f->s);
    Concord__Node n;
    struct node_bufs b;
    size_t count = 0;

    node_make(&n, &b, 1, 1);
    n.machine_key.len = 31;
    assert_int_equal(store_node_put(t, &n), STORE_INVALID);
    node_make(&n, &b, 1, 1);
    n.node_key.len = 0;
    assert_int_equal(store_node_put(t, &n), STORE_INVALID);
    node_make(&n, &b, 1, 1);
    n.disco_key.len = 16;
    assert_int_equal(store_node_put(t, &n), STORE_INVALID);
    node_make(&n, &b, 1, 1);
    n.ipv4.len = 16;
    assert_int_equal(store_node_put(t, &n), STORE_INVALID);
    node_make(&n, &b, 1, 1);
    n.ipv6.len = 4;
    assert_int_equal(store_node_put(t, &n), STORE_INVALID);
    node_make(&n, &b, 0, 1);
    assert_int_equal(store_node_put(t, &n), STORE_INVALID);
    assert_int_equal(store_node_each(t, count_any, &count), 0);
    assert_int_equal(count, 0);
    txn_commit(t);
}

static void node_each_walks_in_id_order(void **state)
{
    struct fixture *f = *state;
    struct store_txn *t = txn_write(f->s);
    Concord__Node n;
    struct node_bufs b;
    struct collected c = {{0}, 0, 0};

    node_make(&n, &b, 300, 3);
    assert_int_equal(store_node_put(t, &n), 0);
    node_make(&n, &b, 4, 4);
    assert_int_equal(store_node_put(t, &n), 0);
    assert_int_equal(store_node_each(t, collect_node, &c), 0);
    assert_int_equal(c.n, 2);
    assert_int_equal(c.ids[0], 4);
    assert_int_equal(c.ids[1], 300);
    txn_commit(t);
}

static void policy_and_dns_are_absent_until_set_then_replaced(void **state)
{
    struct fixture *f = *state;
    struct store_txn *t = txn_write(f->s);
    Concord__Policy p = CONCORD__POLICY__INIT, *gp = NULL;
    Concord__DnsSettings d = CONCORD__DNS_SETTINGS__INIT, *gd = NULL;
    char *servers[] = {"1.1.1.1", "9.9.9.9"};

    assert_int_equal(store_policy_get(t, &gp), STORE_NOTFOUND);
    assert_int_equal(store_dns_get(t, &gd), STORE_NOTFOUND);
    p.version = 1;
    p.text = "{}";
    assert_int_equal(store_policy_put(t, &p), 0);
    p.version = 2;
    p.text = "{\"acls\": []}";
    assert_int_equal(store_policy_put(t, &p), 0);
    d.magic_dns = true;
    d.n_nameservers = 2;
    d.nameservers = servers;
    assert_int_equal(store_dns_put(t, &d), 0);
    txn_commit(t);

    t = txn_read(f->s);
    assert_int_equal(store_policy_get(t, &gp), 0);
    assert_int_equal(gp->version, 2);
    assert_string_equal(gp->text, "{\"acls\": []}");
    store_record_free(gp);
    assert_int_equal(store_dns_get(t, &gd), 0);
    assert_true(gd->magic_dns);
    assert_int_equal(gd->n_nameservers, 2);
    assert_string_equal(gd->nameservers[1], "9.9.9.9");
    store_record_free(gd);
    store_txn_abort(t);
}

static void registrations_are_kept_by_auth_id(void **state)
{
    struct fixture *f = *state;
    struct store_txn *t = txn_write(f->s);
    Concord__PendingRegistration r = CONCORD__PENDING_REGISTRATION__INIT, *got = NULL;
    size_t count = 0;

    r.auth_id = "abc";
    r.hostname = "laptop";
    r.expires_unix_ms = 5;
    assert_int_equal(store_registration_put(t, &r), 0);
    r.auth_id = "abd";
    assert_int_equal(store_registration_put(t, &r), 0);
    r.auth_id = "";
    assert_int_equal(store_registration_put(t, &r), STORE_INVALID);
    assert_int_equal(store_registration_get(t, "abc", &got), 0);
    assert_string_equal(got->hostname, "laptop");
    store_record_free(got);
    assert_int_equal(store_registration_each(t, count_any, &count), 0);
    assert_int_equal(count, 2);
    assert_int_equal(store_registration_delete(t, "abc"), 0);
    assert_int_equal(store_registration_get(t, "abc", &got), STORE_NOTFOUND);
    assert_int_equal(store_registration_delete(t, "abc"), STORE_NOTFOUND);
    assert_int_equal(store_registration_delete(t, ""), STORE_NOTFOUND);
    txn_commit(t);
}

static void sessions_walk_by_node_then_session(void **state)
{
    struct fixture *f = *state;
    struct store_txn *t = txn_write(f->s);
    Concord__Session s = CONCORD__SESSION__INIT;
    struct collected c = {{0}, 0, 0};
    const uint64_t keys[][2] = {{2, 1}, {1, 300}, {1, 2}};

    for (size_t i = 0; i < 3; i++) {
        s.node_id = keys[i][0];
        s.session_id = keys[i][1];
        assert_int_equal(store_session_put(t, &s), 0);
    }
    assert_int_equal(store_session_each(t, collect_session, &c), 0);
    assert_int_equal(c.n, 3);
    assert_int_equal(c.ids[0], 1002);
    assert_int_equal(c.ids[1], 1300);
    assert_int_equal(c.ids[2], 2001);
    assert_int_equal(store_session_delete(t, 1, 300), 0);
    assert_int_equal(store_session_delete(t, 1, 300), STORE_NOTFOUND);
    c.n = 0;
    assert_int_equal(store_session_each(t, collect_session, &c), 0);
    assert_int_equal(c.n, 2);
    txn_commit(t);
}

static void replicas_put_get_delete(void **state)
{
    struct fixture *f = *state;
    struct store_txn *t = txn_write(f->s);
    Concord__Replica r = CONCORD__REPLICA__INIT, *got = NULL;
    size_t count = 0;

    r.id = 2;
    r.raft_address = "10.0.0.2:7000";
    r.heartbeat_seq = 17;
    assert_int_equal(store_replica_put(t, &r), 0);
    r.heartbeat_seq = 18;
    assert_int_equal(store_replica_put(t, &r), 0);
    r.id = 0;
    assert_int_equal(store_replica_put(t, &r), STORE_INVALID);
    assert_int_equal(store_replica_get(t, 2, &got), 0);
    assert_int_equal(got->heartbeat_seq, 18);
    assert_string_equal(got->raft_address, "10.0.0.2:7000");
    store_record_free(got);
    assert_int_equal(store_replica_each(t, count_any, &count), 0);
    assert_int_equal(count, 1);
    assert_int_equal(store_replica_delete(t, 2), 0);
    assert_int_equal(store_replica_get(t, 2, &got), STORE_NOTFOUND);
    txn_commit(t);
}

static void audit_walks_after_an_index_up_to_a_limit(void **state)
{
    struct fixture *f = *state;
    struct store_txn *t = txn_write(f->s);
    Concord__AuditEntry a = CONCORD__AUDIT_ENTRY__INIT;
    struct collected c = {{0}, 0, 0};

    a.actor = "cli";
    a.action = "create_user";
    for (uint64_t index = 10; index <= 14; index++) {
        a.index = index;
        assert_int_equal(store_audit_append(t, &a), 0);
    }
    a.index = 300;
    assert_int_equal(store_audit_append(t, &a), 0);
    /* Append-only: one entry per index. */
    a.index = 12;
    assert_int_equal(store_audit_append(t, &a), STORE_EXISTS);
    a.index = 0;
    assert_int_equal(store_audit_append(t, &a), STORE_INVALID);

    assert_int_equal(store_audit_each(t, 0, 0, collect_audit, &c), 0);
    assert_int_equal(c.n, 6);
    assert_int_equal(c.ids[5], 300);
    c.n = 0;
    assert_int_equal(store_audit_each(t, 11, 2, collect_audit, &c), 0);
    assert_int_equal(c.n, 2);
    assert_int_equal(c.ids[0], 12);
    assert_int_equal(c.ids[1], 13);
    c.n = 0;
    assert_int_equal(store_audit_each(t, 14, 0, collect_audit, &c), 0);
    assert_int_equal(c.n, 1);
    assert_int_equal(c.ids[0], 300);
    c.n = 0;
    assert_int_equal(store_audit_each(t, UINT64_MAX, 0, collect_audit, &c), 0);
    assert_int_equal(c.n, 0);
    txn_commit(t);
}

int test_records_run(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, fixture_setup, fixture_teardown)
    const struct CMUnitTest tests[] = {
        T(user_put_then_get_by_id_and_by_name),
        T(user_put_refuses_a_name_held_by_another_user_and_changes_nothing),
        T(user_rename_moves_the_name_index),
        T(user_delete_frees_the_name),
        T(user_put_rejects_invalid_records),
        T(user_each_walks_in_numeric_id_order_and_stops_on_request),
        T(keys_are_found_by_prefix_and_prefixes_are_unique),
        T(node_is_found_by_every_unique_key),
        T(node_without_optional_keys_is_not_indexed_by_them),
        T(node_put_refuses_each_taken_unique_key_and_changes_nothing),
        T(node_rekey_moves_every_changed_index_entry),
        T(node_put_rejects_malformed_keys_and_addresses),
        T(node_each_walks_in_id_order),
        T(policy_and_dns_are_absent_until_set_then_replaced),
        T(registrations_are_kept_by_auth_id),
        T(sessions_walk_by_node_then_session),
        T(replicas_put_get_delete),
        T(audit_walks_after_an_index_up_to_a_limit),
    };
#undef T

    return cmocka_run_group_tests_name("records", tests, NULL, NULL);
}
