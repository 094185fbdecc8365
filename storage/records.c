/* storage/records.c: the typed records and their unique secondary indexes.
 * Each record kind is one row of `kinds`: its table, protobuf descriptor, how
 * its primary key and index keys derive from the record, and what makes it
 * valid. The generic get/put/delete/each below do the rest, so no accessor
 * can forget an index. An index entry maps the unique key to the primary key
 * of its owner; empty optional fields have no entry. */
#include "storage/store.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "storage/store_internal.h"

#define MAX_INDEX_KEYS 5
#define SINGLETON_KEY  "current"

struct record_key {
    MDB_val val; /* points into buf or into the record */
    uint8_t buf[16];
};

struct index_key {
    enum store_table table;
    MDB_val val; /* points into the record */
};

struct record_kind {
    enum store_table table;
    const ProtobufCMessageDescriptor *desc;
    void (*key)(const ProtobufCMessage *m, struct record_key *out);
    int (*validate)(struct store_txn *t, const ProtobufCMessage *m); /* NULL: anything goes */
    size_t (*index_keys)(const ProtobufCMessage *m, struct index_key *out); /* NULL: none */
};

static bool str_is_empty(const char *s)
{
    return s == NULL || s[0] == '\0';
}

static void key_u64(struct record_key *k, uint64_t v)
{
    store_be64_put(k->buf, v);
    k->val.mv_size = 8;
    k->val.mv_data = k->buf;
}

static void key_str(struct record_key *k, const char *s)
{
    k->val.mv_size = s != NULL ? strlen(s) : 0;
    k->val.mv_data = (void *)s;
}

static MDB_val val_str(const char *s)
{
    MDB_val v = {s != NULL ? strlen(s) : 0, (void *)s};
    return v;
}

static MDB_val val_bytes(const ProtobufCBinaryData *b)
{
    MDB_val v = {b->len, b->data};
    return v;
}

/* A key for messages: text when printable, a number when 8 bytes, hex otherwise. */
static const char *key_describe(const MDB_val *k, char *buf, size_t cap)
{
    const uint8_t *p = k->mv_data;
    bool is_text = k->mv_size > 0;
    size_t used = 0;

    for (size_t i = 0; i < k->mv_size && is_text; i++)
        is_text = p[i] >= 0x20 && p[i] < 0x7f && p[i] != '"';
    if (is_text) {
        snprintf(buf, cap, "\"%.*s\"", (int)(k->mv_size < 64 ? k->mv_size : 64), (const char *)p);
        return buf;
    }
    if (k->mv_size == 8) {
        snprintf(buf, cap, "%" PRIu64, store_be64_get(p));
        return buf;
    }
    buf[0] = '\0';
    for (size_t i = 0; i < k->mv_size && used + 3 < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, "%02x", p[i]);
    return buf;
}

/* ---- the kinds ---- */

static int invalid(struct store_txn *t, const ProtobufCMessage *m, const char *why)
{
    return store_fail(t, STORE_INVALID, "invalid %s record: %s", m->descriptor->short_name, why);
}

static int bytes_check(struct store_txn *t, const ProtobufCMessage *m, const char *field,
                       const ProtobufCBinaryData *b, size_t len_a, size_t len_b)
{
    if (b->len == len_a || b->len == len_b)
        return 0;
    return store_fail(t, STORE_INVALID, "invalid %s record: %s is %zu bytes",
                      m->descriptor->short_name, field, b->len);
}

static void user_key(const ProtobufCMessage *m, struct record_key *out)
{
    key_u64(out, ((const Concord__User *)m)->id);
}

static int user_validate(struct store_txn *t, const ProtobufCMessage *m)
{
    const Concord__User *u = (const Concord__User *)m;

    if (u->id == 0)
        return invalid(t, m, "id 0");
    if (str_is_empty(u->name))
        return invalid(t, m, "empty name");
    return 0;
}

static size_t user_index_keys(const ProtobufCMessage *m, struct index_key *out)
{
    out[0].table = STORE_TABLE_USERS_BY_NAME;
    out[0].val = val_str(((const Concord__User *)m)->name);
    return 1;
}

static void preauthkey_key(const ProtobufCMessage *m, struct record_key *out)
{
    key_u64(out, ((const Concord__PreAuthKey *)m)->id);
}

static int preauthkey_validate(struct store_txn *t, const ProtobufCMessage *m)
{
    const Concord__PreAuthKey *k = (const Concord__PreAuthKey *)m;

    if (k->id == 0)
        return invalid(t, m, "id 0");
    if (str_is_empty(k->prefix))
        return invalid(t, m, "empty prefix");
    return 0;
}

static size_t preauthkey_index_keys(const ProtobufCMessage *m, struct index_key *out)
{
    out[0].table = STORE_TABLE_PREAUTHKEYS_BY_PREFIX;
    out[0].val = val_str(((const Concord__PreAuthKey *)m)->prefix);
    return 1;
}

static void apikey_key(const ProtobufCMessage *m, struct record_key *out)
{
    key_u64(out, ((const Concord__ApiKey *)m)->id);
}

static int apikey_validate(struct store_txn *t, const ProtobufCMessage *m)
{
    const Concord__ApiKey *k = (const Concord__ApiKey *)m;

    if (k->id == 0)
        return invalid(t, m, "id 0");
    if (str_is_empty(k->prefix))
        return invalid(t, m, "empty prefix");
    return 0;
}

static size_t apikey_index_keys(const ProtobufCMessage *m, struct index_key *out)
{
    out[0].table = STORE_TABLE_APIKEYS_BY_PREFIX;
    out[0].val = val_str(((const Concord__ApiKey *)m)->prefix);
    return 1;
}

static void node_key(const ProtobufCMessage *m, struct record_key *out)
{
    key_u64(out, ((const Concord__Node *)m)->id);
}

static int node_validate(struct store_txn *t, const ProtobufCMessage *m)
{
    const Concord__Node *n = (const Concord__Node *)m;
    int rv;

    if (n->id == 0)
        return invalid(t, m, "id 0");
    rv = bytes_check(t, m, "machine_key", &n->machine_key, 32, 32);
    if (rv == 0)
        rv = bytes_check(t, m, "node_key", &n->node_key, 32, 32);
    if (rv == 0)
        rv = bytes_check(t, m, "disco_key", &n->disco_key, 0, 32);
    if (rv == 0)
        rv = bytes_check(t, m, "ipv4", &n->ipv4, 0, 4);
    if (rv == 0)
        rv = bytes_check(t, m, "ipv6", &n->ipv6, 0, 16);
    return rv;
}

static size_t node_index_keys(const ProtobufCMessage *m, struct index_key *out)
{
    const Concord__Node *n = (const Concord__Node *)m;
    size_t count = 0;

    out[count].table = STORE_TABLE_NODES_BY_MACHINE_KEY;
    out[count++].val = val_bytes(&n->machine_key);
    out[count].table = STORE_TABLE_NODES_BY_NODE_KEY;
    out[count++].val = val_bytes(&n->node_key);
    /* 4- and 16-byte keys cannot collide, so both families share a table. */
    if (n->ipv4.len > 0) {
        out[count].table = STORE_TABLE_NODES_BY_IP;
        out[count++].val = val_bytes(&n->ipv4);
    }
    if (n->ipv6.len > 0) {
        out[count].table = STORE_TABLE_NODES_BY_IP;
        out[count++].val = val_bytes(&n->ipv6);
    }
    if (!str_is_empty(n->given_name)) {
        out[count].table = STORE_TABLE_NODES_BY_GIVEN_NAME;
        out[count++].val = val_str(n->given_name);
    }
    return count;
}

static void singleton_key(const ProtobufCMessage *m, struct record_key *out)
{
    (void)m;
    key_str(out, SINGLETON_KEY);
}

static void registration_key(const ProtobufCMessage *m, struct record_key *out)
{
    key_str(out, ((const Concord__PendingRegistration *)m)->auth_id);
}

static int registration_validate(struct store_txn *t, const ProtobufCMessage *m)
{
    if (str_is_empty(((const Concord__PendingRegistration *)m)->auth_id))
        return invalid(t, m, "empty auth_id");
    return 0;
}

static void session_key_make(struct record_key *out, uint64_t node_id, uint64_t session_id)
{
    store_be64_put(out->buf, node_id);
    store_be64_put(out->buf + 8, session_id);
    out->val.mv_size = 16;
    out->val.mv_data = out->buf;
}

static void session_key(const ProtobufCMessage *m, struct record_key *out)
{
    const Concord__Session *s = (const Concord__Session *)m;

    session_key_make(out, s->node_id, s->session_id);
}

static void replica_key(const ProtobufCMessage *m, struct record_key *out)
{
    key_u64(out, ((const Concord__Replica *)m)->id);
}

static int replica_validate(struct store_txn *t, const ProtobufCMessage *m)
{
    if (((const Concord__Replica *)m)->id == 0)
        return invalid(t, m, "id 0");
    return 0;
}

static void audit_key(const ProtobufCMessage *m, struct record_key *out)
{
    key_u64(out, ((const Concord__AuditEntry *)m)->index);
}

static int audit_validate(struct store_txn *t, const ProtobufCMessage *m)
{
    if (((const Concord__AuditEntry *)m)->index == 0)
        return invalid(t, m, "index 0");
    return 0;
}

static const struct record_kind kind_user = {STORE_TABLE_USERS, &concord__user__descriptor,
                                             user_key, user_validate, user_index_keys};
static const struct record_kind kind_preauthkey = {
    STORE_TABLE_PREAUTHKEYS, &concord__pre_auth_key__descriptor, preauthkey_key,
    preauthkey_validate, preauthkey_index_keys};
static const struct record_kind kind_apikey = {STORE_TABLE_APIKEYS, &concord__api_key__descriptor,
                                               apikey_key, apikey_validate, apikey_index_keys};
static const struct record_kind kind_node = {STORE_TABLE_NODES, &concord__node__descriptor,
                                             node_key, node_validate, node_index_keys};
static const struct record_kind kind_policy = {STORE_TABLE_POLICY, &concord__policy__descriptor,
                                               singleton_key, NULL, NULL};
static const struct record_kind kind_dns = {STORE_TABLE_DNS, &concord__dns_settings__descriptor,
                                            singleton_key, NULL, NULL};
static const struct record_kind kind_control = {
    STORE_TABLE_CONTROL, &concord__control_settings__descriptor, singleton_key, NULL, NULL};
static const struct record_kind kind_registration = {STORE_TABLE_REGISTRATIONS,
                                                     &concord__pending_registration__descriptor,
                                                     registration_key, registration_validate, NULL};
static const struct record_kind kind_session = {STORE_TABLE_SESSIONS, &concord__session__descriptor,
                                                session_key, NULL, NULL};
static const struct record_kind kind_replica = {STORE_TABLE_REPLICAS, &concord__replica__descriptor,
                                                replica_key, replica_validate, NULL};
static const struct record_kind kind_audit = {STORE_TABLE_AUDIT, &concord__audit_entry__descriptor,
                                              audit_key, audit_validate, NULL};

static const struct record_kind *const kinds[] = {
    &kind_user,    &kind_preauthkey,   &kind_apikey,  &kind_node,    &kind_policy, &kind_dns,
    &kind_control, &kind_registration, &kind_session, &kind_replica, &kind_audit,
};

/* ---- generic operations ---- */

static MDB_dbi dbi_of(struct store_txn *t, enum store_table table)
{
    return t->s->dbi[table];
}

static bool val_equal(const MDB_val *a, const MDB_val *b)
{
    return a->mv_size == b->mv_size && memcmp(a->mv_data, b->mv_data, a->mv_size) == 0;
}

static int key_check(struct store_txn *t, enum store_table table, const MDB_val *k)
{
    if (k->mv_size == 0)
        return store_fail(t, STORE_INVALID, "empty key for %s", store_tables[table].name);
    if (k->mv_size > t->s->max_key_bytes)
        return store_fail(t, STORE_INVALID, "key for %s is %zu bytes, the limit is %zu",
                          store_tables[table].name, k->mv_size, t->s->max_key_bytes);
    return 0;
}

/* Reads and unpacks the record stored under key; STORE_NOTFOUND quietly. */
static int record_read(struct store_txn *t, const struct record_kind *k, MDB_val *key,
                       ProtobufCMessage **out)
{
    char kd[80];
    MDB_val v;
    struct record_key stored;
    ProtobufCMessage *m;
    int rv = mdb_get(t->txn, dbi_of(t, k->table), key, &v);

    if (rv == MDB_NOTFOUND)
        return STORE_NOTFOUND;
    if (rv != 0)
        return store_fail_mdb(t, rv, "reading %s %s", store_tables[k->table].name,
                              key_describe(key, kd, sizeof kd));
    rv = store_unpack(t, k->desc, &v, &m);
    if (rv != 0)
        return rv;
    k->key(m, &stored);
    if (!val_equal(&stored.val, key)) {
        store_record_free(m);
        return store_fail(t, STORE_CORRUPT, "%s %s holds the record of another key",
                          store_tables[k->table].name, key_describe(key, kd, sizeof kd));
    }
    *out = m;
    return 0;
}

static int index_lookup(struct store_txn *t, const struct index_key *ik, MDB_val *owner)
{
    char kd[80];
    MDB_val key = ik->val;
    int rv = mdb_get(t->txn, dbi_of(t, ik->table), &key, owner);

    if (rv == MDB_NOTFOUND)
        return STORE_NOTFOUND;
    if (rv != 0)
        return store_fail_mdb(t, rv, "reading %s %s", store_tables[ik->table].name,
                              key_describe(&key, kd, sizeof kd));
    return 0;
}

/* STORE_EXISTS when the unique key belongs to a record other than pk. */
static int index_check_free(struct store_txn *t, const struct index_key *ik, const MDB_val *pk)
{
    char kd[80], od[80];
    MDB_val owner;
    int rv = index_lookup(t, ik, &owner);

    if (rv == STORE_NOTFOUND)
        return 0;
    if (rv != 0)
        return rv;
    if (val_equal(&owner, pk))
        return 0;
    return store_fail(t, STORE_EXISTS, "%s %s is taken by %s", store_tables[ik->table].name,
                      key_describe(&ik->val, kd, sizeof kd), key_describe(&owner, od, sizeof od));
}

static int index_add(struct store_txn *t, const struct index_key *ik, MDB_val *pk)
{
    char kd[80];
    MDB_val key = ik->val;
    int rv = mdb_put(t->txn, dbi_of(t, ik->table), &key, pk, 0);

    if (rv != 0)
        return store_fail_mdb(t, rv, "writing %s %s", store_tables[ik->table].name,
                              key_describe(&key, kd, sizeof kd));
    return 0;
}

/* Removes the entry only if it still points at pk: never someone else's. */
static int index_remove(struct store_txn *t, const struct index_key *ik, const MDB_val *pk)
{
    char kd[80];
    MDB_val key = ik->val;
    MDB_val owner;
    int rv = index_lookup(t, ik, &owner);

    if (rv == STORE_NOTFOUND)
        return 0;
    if (rv != 0)
        return rv;
    if (!val_equal(&owner, pk))
        return 0;
    rv = mdb_del(t->txn, dbi_of(t, ik->table), &key, NULL);
    if (rv != 0)
        return store_fail_mdb(t, rv, "deleting %s %s", store_tables[ik->table].name,
                              key_describe(&key, kd, sizeof kd));
    return 0;
}

static bool index_contains(const struct index_key *ik, const struct index_key *set, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (set[i].table == ik->table && val_equal(&set[i].val, &ik->val))
            return true;
    }
    return false;
}

static size_t index_keys_of(const struct record_kind *k, const ProtobufCMessage *m,
                            struct index_key *out)
{
    size_t n = k->index_keys != NULL ? k->index_keys(m, out) : 0;

    assert(n <= MAX_INDEX_KEYS);
    return n;
}

/* Writes the primary entry: `packed` when given (a dump's exact bytes),
 * else m packed straight into the map. */
static int record_write(struct store_txn *t, const struct record_kind *k, MDB_val *key,
                        const ProtobufCMessage *m, const MDB_val *packed)
{
    char kd[80];
    MDB_val v;
    unsigned flags = 0;
    int rv;

    if (packed != NULL) {
        v = *packed;
    } else {
        v.mv_size = protobuf_c_message_get_packed_size(m);
        v.mv_data = NULL;
        flags = MDB_RESERVE;
    }
    rv = mdb_put(t->txn, dbi_of(t, k->table), key, &v, flags);
    if (rv != 0)
        return store_fail_mdb(t, rv, "writing %s %s", store_tables[k->table].name,
                              key_describe(key, kd, sizeof kd));
    if (packed == NULL)
        protobuf_c_message_pack(m, v.mv_data);
    return 0;
}

/* Inserts or replaces m. Everything that can refuse (validation, a unique key
 * held by another record, is_new_only on an existing key) is checked before
 * the first write, so a refusal changes nothing. */
static int record_put(struct store_txn *t, const struct record_kind *k, const ProtobufCMessage *m,
                      const MDB_val *packed, bool is_new_only)
{
    char kd[80];
    struct record_key pk;
    struct index_key new_keys[MAX_INDEX_KEYS], old_keys[MAX_INDEX_KEYS];
    size_t n_new, n_old = 0;
    ProtobufCMessage *old = NULL;
    int rv;

    assert(t->is_write);
    assert(m->descriptor == k->desc);
    if (!protobuf_c_message_check(m))
        return store_fail(t, STORE_INVALID, "malformed %s record", k->desc->short_name);
    if (k->validate != NULL) {
        rv = k->validate(t, m);
        if (rv != 0)
            return rv;
    }
    k->key(m, &pk);
    rv = key_check(t, k->table, &pk.val);
    if (rv != 0)
        return rv;
    n_new = index_keys_of(k, m, new_keys);
    for (size_t i = 0; i < n_new; i++) {
        rv = key_check(t, new_keys[i].table, &new_keys[i].val);
        if (rv != 0)
            return rv;
    }
    rv = record_read(t, k, &pk.val, &old);
    if (rv == 0) {
        if (is_new_only) {
            rv = store_fail(t, STORE_EXISTS, "%s %s already exists", store_tables[k->table].name,
                            key_describe(&pk.val, kd, sizeof kd));
            goto out;
        }
        n_old = index_keys_of(k, old, old_keys);
    } else if (rv != STORE_NOTFOUND) {
        return rv;
    }
    for (size_t i = 0; i < n_new; i++) {
        rv = index_check_free(t, &new_keys[i], &pk.val);
        if (rv != 0)
            goto out;
    }
    rv = record_write(t, k, &pk.val, m, packed);
    for (size_t i = 0; i < n_old && rv == 0; i++) {
        if (!index_contains(&old_keys[i], new_keys, n_new))
            rv = index_remove(t, &old_keys[i], &pk.val);
    }
    for (size_t i = 0; i < n_new && rv == 0; i++) {
        if (!index_contains(&new_keys[i], old_keys, n_old))
            rv = index_add(t, &new_keys[i], &pk.val);
    }
out:
    store_record_free(old);
    return rv;
}

static int record_delete(struct store_txn *t, const struct record_kind *k, MDB_val *key)
{
    char kd[80];
    struct index_key old_keys[MAX_INDEX_KEYS];
    size_t n_old;
    ProtobufCMessage *old;
    int rv;

    assert(t->is_write);
    if (key->mv_size == 0 || key->mv_size > t->s->max_key_bytes)
        return STORE_NOTFOUND;
    rv = record_read(t, k, key, &old);
    if (rv != 0)
        return rv;
    n_old = index_keys_of(k, old, old_keys);
    rv = mdb_del(t->txn, dbi_of(t, k->table), key, NULL);
    if (rv != 0)
        rv = store_fail_mdb(t, rv, "deleting %s %s", store_tables[k->table].name,
                            key_describe(key, kd, sizeof kd));
    for (size_t i = 0; i < n_old && rv == 0; i++)
        rv = index_remove(t, &old_keys[i], key);
    store_record_free(old);
    return rv;
}

static int record_get(struct store_txn *t, const struct record_kind *k, MDB_val *key,
                      ProtobufCMessage **out)
{
    if (key->mv_size == 0 || key->mv_size > t->s->max_key_bytes)
        return STORE_NOTFOUND;
    return record_read(t, k, key, out);
}

static int record_get_by_index(struct store_txn *t, const struct record_kind *k,
                               enum store_table table, MDB_val ikey, ProtobufCMessage **out)
{
    char kd[80];
    struct index_key ik = {table, ikey};
    MDB_val owner;
    int rv;

    if (ikey.mv_size == 0 || ikey.mv_size > t->s->max_key_bytes)
        return STORE_NOTFOUND;
    rv = index_lookup(t, &ik, &owner);
    if (rv != 0)
        return rv;
    rv = record_read(t, k, &owner, out);
    if (rv == STORE_NOTFOUND)
        return store_fail(t, STORE_CORRUPT, "%s %s points at a missing record",
                          store_tables[table].name, key_describe(&ikey, kd, sizeof kd));
    return rv;
}

/* Walks from `from` (NULL: the first key), at most limit records (0: all). */
static int record_each(struct store_txn *t, const struct record_kind *k, const MDB_val *from,
                       size_t limit, store_each_cb cb, void *arg)
{
    MDB_cursor *c;
    MDB_val key, val;
    MDB_cursor_op op = MDB_FIRST;
    size_t count = 0;
    int rv = mdb_cursor_open(t->txn, dbi_of(t, k->table), &c);

    if (rv != 0)
        return store_fail_mdb(t, rv, "opening a cursor on %s", store_tables[k->table].name);
    if (from != NULL) {
        key = *from;
        op = MDB_SET_RANGE;
    }
    while (limit == 0 || count < limit) {
        ProtobufCMessage *m;

        rv = mdb_cursor_get(c, &key, &val, op);
        if (rv == MDB_NOTFOUND) {
            rv = 0;
            break;
        }
        if (rv != 0) {
            rv = store_fail_mdb(t, rv, "walking %s", store_tables[k->table].name);
            break;
        }
        op = MDB_NEXT;
        rv = store_unpack(t, k->desc, &val, &m);
        if (rv != 0)
            break;
        rv = cb(m, arg);
        store_record_free(m);
        if (rv != 0)
            break;
        count++;
    }
    mdb_cursor_close(c);
    return rv;
}

int store_record_load(struct store_txn *t, enum store_table table, const MDB_val *key,
                      const MDB_val *val)
{
    const struct record_kind *k = NULL;
    struct record_key pk;
    ProtobufCMessage *m;
    int rv;

    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        if (kinds[i]->table == table)
            k = kinds[i];
    }
    assert(k != NULL);
    rv = store_unpack(t, k->desc, val, &m);
    if (rv != 0)
        return rv;
    k->key(m, &pk);
    if (!val_equal(&pk.val, key))
        rv = store_fail(t, STORE_INVALID, "%s entry stored under the key of another record",
                        store_tables[table].name);
    else
        rv = record_put(t, k, m, val, true);
    store_record_free(m);
    return rv;
}

/* ---- typed accessors ---- */

static MDB_val key_of_u64(struct record_key *k, uint64_t v)
{
    key_u64(k, v);
    return k->val;
}

int store_user_get(struct store_txn *t, uint64_t id, Concord__User **out)
{
    struct record_key k;
    MDB_val key = key_of_u64(&k, id);
    ProtobufCMessage *m;
    int rv = record_get(t, &kind_user, &key, &m);

    if (rv == 0)
        *out = (Concord__User *)m;
    return rv;
}

int store_user_get_by_name(struct store_txn *t, const char *name, Concord__User **out)
{
    ProtobufCMessage *m;
    int rv = record_get_by_index(t, &kind_user, STORE_TABLE_USERS_BY_NAME, val_str(name), &m);

    if (rv == 0)
        *out = (Concord__User *)m;
    return rv;
}

int store_user_put(struct store_txn *t, const Concord__User *u)
{
    return record_put(t, &kind_user, &u->base, NULL, false);
}

int store_user_delete(struct store_txn *t, uint64_t id)
{
    struct record_key k;
    MDB_val key = key_of_u64(&k, id);

    return record_delete(t, &kind_user, &key);
}

int store_user_each(struct store_txn *t, store_each_cb cb, void *arg)
{
    return record_each(t, &kind_user, NULL, 0, cb, arg);
}

int store_preauthkey_get(struct store_txn *t, uint64_t id, Concord__PreAuthKey **out)
{
    struct record_key k;
    MDB_val key = key_of_u64(&k, id);
    ProtobufCMessage *m;
    int rv = record_get(t, &kind_preauthkey, &key, &m);

    if (rv == 0)
        *out = (Concord__PreAuthKey *)m;
    return rv;
}

int store_preauthkey_get_by_prefix(struct store_txn *t, const char *prefix,
                                   Concord__PreAuthKey **out)
{
    ProtobufCMessage *m;
    int rv = record_get_by_index(t, &kind_preauthkey, STORE_TABLE_PREAUTHKEYS_BY_PREFIX,
                                 val_str(prefix), &m);

    if (rv == 0)
        *out = (Concord__PreAuthKey *)m;
    return rv;
}

int store_preauthkey_put(struct store_txn *t, const Concord__PreAuthKey *k)
{
    return record_put(t, &kind_preauthkey, &k->base, NULL, false);
}

int store_preauthkey_delete(struct store_txn *t, uint64_t id)
{
    struct record_key k;
    MDB_val key = key_of_u64(&k, id);

    return record_delete(t, &kind_preauthkey, &key);
}

int store_preauthkey_each(struct store_txn *t, store_each_cb cb, void *arg)
{
    return record_each(t, &kind_preauthkey, NULL, 0, cb, arg);
}

int store_apikey_get(struct store_txn *t, uint64_t id, Concord__ApiKey **out)
{
    struct record_key k;
    MDB_val key = key_of_u64(&k, id);
    ProtobufCMessage *m;
    int rv = record_get(t, &kind_apikey, &key, &m);

    if (rv == 0)
        *out = (Concord__ApiKey *)m;
    return rv;
}

int store_apikey_get_by_prefix(struct store_txn *t, const char *prefix, Concord__ApiKey **out)
{
    ProtobufCMessage *m;
    int rv =
        record_get_by_index(t, &kind_apikey, STORE_TABLE_APIKEYS_BY_PREFIX, val_str(prefix), &m);

    if (rv == 0)
        *out = (Concord__ApiKey *)m;
    return rv;
}

int store_apikey_put(struct store_txn *t, const Concord__ApiKey *k)
{
    return record_put(t, &kind_apikey, &k->base, NULL, false);
}

int store_apikey_delete(struct store_txn *t, uint64_t id)
{
    struct record_key k;
    MDB_val key = key_of_u64(&k, id);

    return record_delete(t, &kind_apikey, &key);
}

int store_apikey_each(struct store_txn *t, store_each_cb cb, void *arg)
{
    return record_each(t, &kind_apikey, NULL, 0, cb, arg);
}

int store_node_get(struct store_txn *t, uint64_t id, Concord__Node **out)
{
    struct record_key k;
    MDB_val key = key_of_u64(&k, id);
    ProtobufCMessage *m;
    int rv = record_get(t, &kind_node, &key, &m);

    if (rv == 0)
        *out = (Concord__Node *)m;
    return rv;
}

int store_node_get_by_machine_key(struct store_txn *t, const uint8_t key[32], Concord__Node **out)
{
    MDB_val v = {32, (void *)key};
    ProtobufCMessage *m;
    int rv = record_get_by_index(t, &kind_node, STORE_TABLE_NODES_BY_MACHINE_KEY, v, &m);

    if (rv == 0)
        *out = (Concord__Node *)m;
    return rv;
}

int store_node_get_by_node_key(struct store_txn *t, const uint8_t key[32], Concord__Node **out)
{
    MDB_val v = {32, (void *)key};
    ProtobufCMessage *m;
    int rv = record_get_by_index(t, &kind_node, STORE_TABLE_NODES_BY_NODE_KEY, v, &m);

    if (rv == 0)
        *out = (Concord__Node *)m;
    return rv;
}

int store_node_get_by_ip(struct store_txn *t, const uint8_t *addr, size_t addr_len,
                         Concord__Node **out)
{
    MDB_val v = {addr_len, (void *)addr};
    ProtobufCMessage *m;
    int rv;

    if (addr_len != 4 && addr_len != 16)
        return store_fail(t, STORE_INVALID, "an IP address is 4 or 16 bytes, not %zu", addr_len);
    rv = record_get_by_index(t, &kind_node, STORE_TABLE_NODES_BY_IP, v, &m);
    if (rv == 0)
        *out = (Concord__Node *)m;
    return rv;
}

int store_node_get_by_given_name(struct store_txn *t, const char *name, Concord__Node **out)
{
    ProtobufCMessage *m;
    int rv = record_get_by_index(t, &kind_node, STORE_TABLE_NODES_BY_GIVEN_NAME, val_str(name), &m);

    if (rv == 0)
        *out = (Concord__Node *)m;
    return rv;
}

int store_node_put(struct store_txn *t, const Concord__Node *n)
{
    return record_put(t, &kind_node, &n->base, NULL, false);
}

int store_node_delete(struct store_txn *t, uint64_t id)
{
    struct record_key k;
    MDB_val key = key_of_u64(&k, id);

    return record_delete(t, &kind_node, &key);
}

int store_node_each(struct store_txn *t, store_each_cb cb, void *arg)
{
    return record_each(t, &kind_node, NULL, 0, cb, arg);
}

int store_policy_get(struct store_txn *t, Concord__Policy **out)
{
    MDB_val key = val_str(SINGLETON_KEY);
    ProtobufCMessage *m;
    int rv = record_get(t, &kind_policy, &key, &m);

    if (rv == 0)
        *out = (Concord__Policy *)m;
    return rv;
}

int store_policy_put(struct store_txn *t, const Concord__Policy *p)
{
    return record_put(t, &kind_policy, &p->base, NULL, false);
}

int store_dns_get(struct store_txn *t, Concord__DnsSettings **out)
{
    MDB_val key = val_str(SINGLETON_KEY);
    ProtobufCMessage *m;
    int rv = record_get(t, &kind_dns, &key, &m);

    if (rv == 0)
        *out = (Concord__DnsSettings *)m;
    return rv;
}

int store_dns_put(struct store_txn *t, const Concord__DnsSettings *d)
{
    return record_put(t, &kind_dns, &d->base, NULL, false);
}

int store_control_get(struct store_txn *t, Concord__ControlSettings **out)
{
    MDB_val key = val_str(SINGLETON_KEY);
    ProtobufCMessage *m;
    int rv = record_get(t, &kind_control, &key, &m);

    if (rv == 0)
        *out = (Concord__ControlSettings *)m;
    return rv;
}

int store_control_put(struct store_txn *t, const Concord__ControlSettings *c)
{
    return record_put(t, &kind_control, &c->base, NULL, false);
}

int store_registration_get(struct store_txn *t, const char *auth_id,
                           Concord__PendingRegistration **out)
{
    MDB_val key = val_str(auth_id);
    ProtobufCMessage *m;
    int rv = record_get(t, &kind_registration, &key, &m);

    if (rv == 0)
        *out = (Concord__PendingRegistration *)m;
    return rv;
}

int store_registration_put(struct store_txn *t, const Concord__PendingRegistration *r)
{
    return record_put(t, &kind_registration, &r->base, NULL, false);
}

int store_registration_delete(struct store_txn *t, const char *auth_id)
{
    MDB_val key = val_str(auth_id);

    return record_delete(t, &kind_registration, &key);
}

int store_registration_each(struct store_txn *t, store_each_cb cb, void *arg)
{
    return record_each(t, &kind_registration, NULL, 0, cb, arg);
}

int store_session_put(struct store_txn *t, const Concord__Session *s)
{
    return record_put(t, &kind_session, &s->base, NULL, false);
}

int store_session_delete(struct store_txn *t, uint64_t node_id, uint64_t session_id)
{
    struct record_key k;

    session_key_make(&k, node_id, session_id);
    return record_delete(t, &kind_session, &k.val);
}

int store_session_each(struct store_txn *t, store_each_cb cb, void *arg)
{
    return record_each(t, &kind_session, NULL, 0, cb, arg);
}

struct node_sessions_walk {
    uint64_t node_id;
    bool is_past; /* reached the next node's sessions */
    store_each_cb cb;
    void *arg;
};

static int node_sessions_step(const ProtobufCMessage *record, void *arg)
{
    struct node_sessions_walk *w = arg;

    if (((const Concord__Session *)record)->node_id != w->node_id) {
        w->is_past = true;
        return 1;
    }
    return w->cb(record, w->arg);
}

int store_session_each_of_node(struct store_txn *t, uint64_t node_id, store_each_cb cb, void *arg)
{
    struct node_sessions_walk w = {.node_id = node_id, .cb = cb, .arg = arg};
    struct record_key from;
    int rv;

    session_key_make(&from, node_id, 0);
    rv = record_each(t, &kind_session, &from.val, 0, node_sessions_step, &w);
    return w.is_past ? 0 : rv;
}

int store_replica_get(struct store_txn *t, uint64_t id, Concord__Replica **out)
{
    struct record_key k;
    MDB_val key = key_of_u64(&k, id);
    ProtobufCMessage *m;
    int rv = record_get(t, &kind_replica, &key, &m);

    if (rv == 0)
        *out = (Concord__Replica *)m;
    return rv;
}

int store_replica_put(struct store_txn *t, const Concord__Replica *r)
{
    return record_put(t, &kind_replica, &r->base, NULL, false);
}

int store_replica_delete(struct store_txn *t, uint64_t id)
{
    struct record_key k;
    MDB_val key = key_of_u64(&k, id);

    return record_delete(t, &kind_replica, &key);
}

int store_replica_each(struct store_txn *t, store_each_cb cb, void *arg)
{
    return record_each(t, &kind_replica, NULL, 0, cb, arg);
}

int store_audit_append(struct store_txn *t, const Concord__AuditEntry *e)
{
    return record_put(t, &kind_audit, &e->base, NULL, true);
}

int store_audit_each(struct store_txn *t, uint64_t after_index, size_t limit, store_each_cb cb,
                     void *arg)
{
    struct record_key k;
    MDB_val from;

    if (after_index == UINT64_MAX)
        return 0;
    from = key_of_u64(&k, after_index + 1);
    return record_each(t, &kind_audit, &from, limit, cb, arg);
}
