/* tests/unit/storage/fixture.c: a store per test, and record builders. */
#include "tests/unit/storage/storage_tests.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tests/lib/testdir.h"

static void store_open_in(struct fixture *f)
{
    struct store_options opts = {f->dir, FIXTURE_MAP_SIZE_BYTES, 0};
    char errmsg[256];
    int rv = store_open(&opts, &f->s, errmsg);

    if (rv != 0)
        fail_msg("store_open: %s: %s", store_strerror(rv), errmsg);
}

int fixture_setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);

    assert_non_null(f);
    assert_int_equal(testdir_make(f->dir, sizeof f->dir), 0);
    store_open_in(f);
    *state = f;
    return 0;
}

int fixture_teardown(void **state)
{
    struct fixture *f = *state;

    store_close(f->s);
    testdir_remove(f->dir);
    free(f);
    return 0;
}

void fixture_reopen(struct fixture *f)
{
    store_close(f->s);
    f->s = NULL;
    store_open_in(f);
}

struct store_txn *txn_write(struct store *s)
{
    struct store_txn *t = NULL;

    assert_int_equal(store_txn_begin(s, true, &t), 0);
    return t;
}

struct store_txn *txn_read(struct store *s)
{
    struct store_txn *t = NULL;

    assert_int_equal(store_txn_begin(s, false, &t), 0);
    return t;
}

void txn_commit(struct store_txn *t)
{
    assert_int_equal(store_txn_commit(t), 0);
}

void user_make(Concord__User *u, uint64_t id, const char *name)
{
    concord__user__init(u);
    u->id = id;
    u->name = (char *)name;
    u->email = "someone@example.com";
    u->created_unix_ms = 1700000000000 + (int64_t)id;
}

void node_make(Concord__Node *n, struct node_bufs *b, uint64_t id, uint8_t seed)
{
    memset(b->machine_key, seed, sizeof b->machine_key);
    memset(b->node_key, (uint8_t)(seed + 100), sizeof b->node_key);
    memset(b->disco_key, (uint8_t)(seed + 200), sizeof b->disco_key);
    b->ipv4[0] = 100;
    b->ipv4[1] = 64;
    b->ipv4[2] = 0;
    b->ipv4[3] = seed;
    memset(b->ipv6, 0, sizeof b->ipv6);
    b->ipv6[0] = 0xfd;
    b->ipv6[1] = 0x7a;
    b->ipv6[15] = seed;
    snprintf(b->given_name, sizeof b->given_name, "node-%u", (unsigned)seed);
    concord__node__init(n);
    n->id = id;
    n->machine_key = (ProtobufCBinaryData){sizeof b->machine_key, b->machine_key};
    n->node_key = (ProtobufCBinaryData){sizeof b->node_key, b->node_key};
    n->disco_key = (ProtobufCBinaryData){sizeof b->disco_key, b->disco_key};
    n->ipv4 = (ProtobufCBinaryData){sizeof b->ipv4, b->ipv4};
    n->ipv6 = (ProtobufCBinaryData){sizeof b->ipv6, b->ipv6};
    n->given_name = b->given_name;
    n->hostname = b->given_name;
    n->user_id = 1;
}

void state_populate(struct store *s, uint8_t seed)
{
    struct store_txn *t = txn_write(s);
    char name[32], prefix[32], auth_id[32];
    uint8_t hash[32], request_id[16];
    uint64_t id;

    memset(hash, seed, sizeof hash);
    for (uint64_t i = 1; i <= 3; i++) {
        Concord__User u;
        Concord__PreAuthKey pk = CONCORD__PRE_AUTH_KEY__INIT;
        Concord__ApiKey ak = CONCORD__API_KEY__INIT;
        Concord__Node n;
        struct node_bufs nb;
        Concord__Session sess = CONCORD__SESSION__INIT;

        assert_int_equal(store_next_id(t, "user", &id), 0);
        snprintf(name, sizeof name, "user-%u-%u", (unsigned)seed, (unsigned)i);
        user_make(&u, id, name);
        assert_int_equal(store_user_put(t, &u), 0);

        assert_int_equal(store_next_id(t, "preauthkey", &id), 0);
        snprintf(prefix, sizeof prefix, "pak%u-%u", (unsigned)seed, (unsigned)i);
        pk.id = id;
        pk.prefix = prefix;
        pk.hash = (ProtobufCBinaryData){sizeof hash, hash};
        pk.user_id = i;
        assert_int_equal(store_preauthkey_put(t, &pk), 0);

        assert_int_equal(store_next_id(t, "apikey", &id), 0);
        snprintf(prefix, sizeof prefix, "api%u-%u", (unsigned)seed, (unsigned)i);
        ak.id = id;
        ak.prefix = prefix;
        ak.hash = (ProtobufCBinaryData){sizeof hash, hash};
        assert_int_equal(store_apikey_put(t, &ak), 0);

        assert_int_equal(store_next_id(t, "node", &id), 0);
        node_make(&n, &nb, id, (uint8_t)(seed * 4 + i));
        assert_int_equal(store_node_put(t, &n), 0);

        sess.node_id = id;
        sess.session_id = 10 + i;
        sess.replica_id = 1;
        assert_int_equal(store_session_put(t, &sess), 0);
    }
    {
        Concord__Policy p = CONCORD__POLICY__INIT;
        Concord__DnsSettings d = CONCORD__DNS_SETTINGS__INIT;
        Concord__PendingRegistration r = CONCORD__PENDING_REGISTRATION__INIT;
        Concord__Replica rep = CONCORD__REPLICA__INIT;
        Concord__AuditEntry a = CONCORD__AUDIT_ENTRY__INIT;

        p.version = seed;
        p.text = "{\"acls\": []}";
        assert_int_equal(store_policy_put(t, &p), 0);
        d.magic_dns = true;
        d.base_domain = "example.net";
        assert_int_equal(store_dns_put(t, &d), 0);
        snprintf(auth_id, sizeof auth_id, "auth-%u", (unsigned)seed);
        r.auth_id = auth_id;
        r.hostname = "laptop";
        assert_int_equal(store_registration_put(t, &r), 0);
        rep.id = 1;
        rep.raft_address = "127.0.0.1:7001";
        rep.http_address = "127.0.0.1:8001";
        rep.epoch = seed;
        assert_int_equal(store_replica_put(t, &rep), 0);
        a.index = 40 + seed;
        a.actor = "cli";
        a.action = "create_user";
        assert_int_equal(store_audit_append(t, &a), 0);
    }
    memset(request_id, seed, sizeof request_id);
    assert_int_equal(store_dedup_put(t, request_id, 40 + seed, (const uint8_t *)"result", 6), 0);
    assert_int_equal(store_applied_index_put(t, 40 + seed), 0);
    txn_commit(t);
}

void state_hash_of(struct store *s, uint8_t out[32])
{
    struct store_txn *t = txn_read(s);

    assert_int_equal(store_state_hash(t, out), 0);
    store_txn_abort(t);
}
