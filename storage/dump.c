/* storage/dump.c: whole-state operations: the logical dump that Raft
 * snapshots and backups carry, loading one back, and the state hash that
 * tells whether two replicas agree.
 *
 * Dump format (integers big-endian):
 *   "CNCDDUMP" | u32 format version | u64 applied index
 *   records:   u8 table id | u32 key length | key | u32 value length | value
 *   BLAKE2b-256 of everything before it
 * Records are the dumped tables of store_tables[] in table-id order, each in
 * key order; for meta, only the sequence counters. Secondary indexes are not
 * dumped: loading rebuilds them, validating every record as a put would. */
#include "storage/store.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "storage/store_internal.h"

#define DUMP_MAGIC          "CNCDDUMP"
#define DUMP_MAGIC_BYTES    8
#define DUMP_FORMAT_VERSION 1
#define DUMP_HEADER_BYTES   (DUMP_MAGIC_BYTES + 4 + 8)
#define DUMP_CHECKSUM_BYTES 32
#define DUMP_INITIAL_BYTES  4096

static_assert(crypto_generichash_BYTES == DUMP_CHECKSUM_BYTES, "BLAKE2b-256 checksum");

struct dump_record {
    uint8_t table;
    MDB_val key;
    MDB_val val;
};

/* ---- walking the replicated content ---- */

typedef int (*entry_fn)(struct store_txn *t, enum store_table table, const MDB_val *key,
                        const MDB_val *val, void *arg);

static bool is_seq_key(const MDB_val *k)
{
    size_t plen = strlen(STORE_META_SEQ_PREFIX);

    return k->mv_size > plen && memcmp(k->mv_data, STORE_META_SEQ_PREFIX, plen) == 0;
}

/* Calls fn for every replicated entry of table in key order: all of it, but
 * only the sequence counters of meta. */
static int table_walk(struct store_txn *t, enum store_table table, entry_fn fn, void *arg)
{
    MDB_cursor *c;
    MDB_val key = {strlen(STORE_META_SEQ_PREFIX), STORE_META_SEQ_PREFIX};
    MDB_val val;
    MDB_cursor_op op = table == STORE_TABLE_META ? MDB_SET_RANGE : MDB_FIRST;
    int rv = mdb_cursor_open(t->txn, t->s->dbi[table], &c);

    if (rv != 0)
        return store_fail_mdb(t, rv, "opening a cursor on %s", store_tables[table].name);
    for (;; op = MDB_NEXT) {
        rv = mdb_cursor_get(c, &key, &val, op);
        if (rv == MDB_NOTFOUND || (rv == 0 && table == STORE_TABLE_META && !is_seq_key(&key))) {
            rv = 0;
            break;
        }
        if (rv != 0) {
            rv = store_fail_mdb(t, rv, "walking %s", store_tables[table].name);
            break;
        }
        rv = fn(t, table, &key, &val, arg);
        if (rv != 0)
            break;
    }
    mdb_cursor_close(c);
    return rv;
}

/* ---- dump ---- */

struct dump_buf {
    uint8_t *p;
    size_t len;
    size_t cap;
};

static int buf_append(struct dump_buf *b, const void *data, size_t n)
{
    if (n > b->cap - b->len) {
        size_t cap = b->cap > 0 ? b->cap : DUMP_INITIAL_BYTES;
        uint8_t *p;

        if (b->len > SIZE_MAX / 2 || n > SIZE_MAX / 2 - b->len)
            return STORE_NOMEM;
        while (cap - b->len < n)
            cap *= 2;
        p = realloc(b->p, cap);
        if (p == NULL)
            return STORE_NOMEM;
        b->p = p;
        b->cap = cap;
    }
    if (n > 0)
        memcpy(b->p + b->len, data, n);
    b->len += n;
    return 0;
}

static int buf_append_u32(struct dump_buf *b, uint32_t v)
{
    uint8_t be[4];

    store_be32_put(be, v);
    return buf_append(b, be, sizeof be);
}

static int dump_entry(struct store_txn *t, enum store_table table, const MDB_val *key,
                      const MDB_val *val, void *arg)
{
    struct dump_buf *b = arg;
    uint8_t id = (uint8_t)table;
    int rv;

    /* LMDB caps keys at 511 bytes and values at 4 GiB - 1. */
    assert(key->mv_size <= UINT32_MAX && val->mv_size <= UINT32_MAX);
    rv = buf_append(b, &id, 1);
    if (rv == 0)
        rv = buf_append_u32(b, (uint32_t)key->mv_size);
    if (rv == 0)
        rv = buf_append(b, key->mv_data, key->mv_size);
    if (rv == 0)
        rv = buf_append_u32(b, (uint32_t)val->mv_size);
    if (rv == 0)
        rv = buf_append(b, val->mv_data, val->mv_size);
    if (rv != 0)
        return store_fail(t, rv, "dump of %zu bytes: out of memory", b->len);
    return 0;
}

int store_dump(struct store_txn *t, uint8_t **out, size_t *len)
{
    struct dump_buf b = {NULL, 0, 0};
    uint8_t header[DUMP_HEADER_BYTES];
    uint8_t sum[DUMP_CHECKSUM_BYTES];
    uint64_t applied = 0;
    int rv = store_applied_index_get(t, &applied);

    if (rv != 0)
        return rv;
    memcpy(header, DUMP_MAGIC, DUMP_MAGIC_BYTES);
    store_be32_put(header + DUMP_MAGIC_BYTES, DUMP_FORMAT_VERSION);
    store_be64_put(header + DUMP_MAGIC_BYTES + 4, applied);
    if (buf_append(&b, header, sizeof header) != 0) {
        rv = store_fail(t, STORE_NOMEM, "dump: out of memory");
        goto err_after_buf;
    }
    for (int table = 0; table < STORE_TABLE_COUNT; table++) {
        if (!store_tables[table].is_dumped)
            continue;
        rv = table_walk(t, (enum store_table)table, dump_entry, &b);
        if (rv != 0)
            goto err_after_buf;
    }
    crypto_generichash(sum, sizeof sum, b.p, b.len, NULL, 0);
    if (buf_append(&b, sum, sizeof sum) != 0) {
        rv = store_fail(t, STORE_NOMEM, "dump: out of memory");
        goto err_after_buf;
    }
    *out = b.p;
    *len = b.len;
    return 0;

err_after_buf:
    free(b.p);
    return rv;
}

/* ---- load ---- */

/* Reads the record at *pos of body[0, end); STORE_CORRUPT if it overruns. */
static int record_parse(const uint8_t *body, size_t end, size_t *pos, struct dump_record *r)
{
    size_t p = *pos;
    uint32_t n;

    if (end - p < 1 + 4)
        return STORE_CORRUPT;
    r->table = body[p];
    n = store_be32_get(body + p + 1);
    p += 1 + 4;
    if (end - p < (size_t)n || end - p - n < 4)
        return STORE_CORRUPT;
    r->key.mv_size = n;
    r->key.mv_data = (void *)(body + p);
    p += n;
    n = store_be32_get(body + p);
    p += 4;
    if (end - p < (size_t)n)
        return STORE_CORRUPT;
    r->val.mv_size = n;
    r->val.mv_data = (void *)(body + p);
    *pos = p + n;
    return 0;
}

/* What can be checked without a transaction: framing, table ids, key sizes,
 * the shape of meta and dedup entries. Record contents are checked as they
 * are inserted (store_record_load), inside the nested transaction. */
static int record_check(struct store_txn *t, const struct dump_record *r, size_t at)
{
    if (r->table >= STORE_TABLE_COUNT || !store_tables[r->table].is_dumped)
        return store_fail(t, STORE_CORRUPT, "dump record at byte %zu: table id %u is not dumped",
                          at, (unsigned)r->table);
    if (r->key.mv_size == 0 || r->key.mv_size > t->s->max_key_bytes)
        return store_fail(t, STORE_CORRUPT, "dump record at byte %zu: %zu-byte key", at,
                          r->key.mv_size);
    if (r->table == STORE_TABLE_META && (!is_seq_key(&r->key) || r->val.mv_size != 8))
        return store_fail(t, STORE_CORRUPT, "dump record at byte %zu: not a sequence counter", at);
    if (r->table == STORE_TABLE_DEDUP && (r->key.mv_size != 16 || r->val.mv_size < 8))
        return store_fail(t, STORE_CORRUPT, "dump record at byte %zu: bad de-duplication entry",
                          at);
    return 0;
}

static int dump_verify(struct store_txn *t, const uint8_t *dump, size_t len, uint64_t *applied)
{
    uint8_t sum[DUMP_CHECKSUM_BYTES];
    uint32_t version;
    size_t end, pos = DUMP_HEADER_BYTES;

    if (dump == NULL || len < DUMP_HEADER_BYTES + DUMP_CHECKSUM_BYTES)
        return store_fail(t, STORE_CORRUPT, "dump of %zu bytes is too short", len);
    if (memcmp(dump, DUMP_MAGIC, DUMP_MAGIC_BYTES) != 0)
        return store_fail(t, STORE_CORRUPT, "not a concord dump (bad magic)");
    version = store_be32_get(dump + DUMP_MAGIC_BYTES);
    if (version != DUMP_FORMAT_VERSION)
        return store_fail(t, STORE_SCHEMA, "dump format version %u, this binary reads %u",
                          (unsigned)version, (unsigned)DUMP_FORMAT_VERSION);
    end = len - DUMP_CHECKSUM_BYTES;
    crypto_generichash(sum, sizeof sum, dump, end, NULL, 0);
    if (sodium_memcmp(sum, dump + end, sizeof sum) != 0)
        return store_fail(t, STORE_CORRUPT, "dump checksum mismatch");
    while (pos < end) {
        struct dump_record r;
        size_t at = pos;
        int rv = record_parse(dump, end, &pos, &r);

        if (rv != 0)
            return store_fail(t, rv, "dump record at byte %zu overruns the dump", at);
        rv = record_check(t, &r, at);
        if (rv != 0)
            return rv;
    }
    *applied = store_be64_get(dump + DUMP_MAGIC_BYTES + 4);
    return 0;
}

static int meta_clear(struct store_txn *t)
{
    MDB_dbi meta = t->s->dbi[STORE_TABLE_META];
    MDB_val k = {strlen(STORE_META_APPLIED_INDEX), STORE_META_APPLIED_INDEX};
    MDB_val v;
    MDB_cursor *c;
    int rv = mdb_del(t->txn, meta, &k, NULL);

    if (rv != 0 && rv != MDB_NOTFOUND)
        return store_fail_mdb(t, rv, "clearing the applied index");
    rv = mdb_cursor_open(t->txn, meta, &c);
    if (rv != 0)
        return store_fail_mdb(t, rv, "opening a cursor on meta");
    for (;;) {
        k.mv_size = strlen(STORE_META_SEQ_PREFIX);
        k.mv_data = STORE_META_SEQ_PREFIX;
        rv = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
        if (rv == MDB_NOTFOUND || (rv == 0 && !is_seq_key(&k))) {
            rv = 0;
            break;
        }
        if (rv == 0)
            rv = mdb_cursor_del(c, 0);
        if (rv != 0) {
            rv = store_fail_mdb(t, rv, "clearing the sequence counters");
            break;
        }
    }
    mdb_cursor_close(c);
    return rv;
}

/* Empties every replicated table; local meta values stay. */
static int tables_clear(struct store_txn *t)
{
    int rv = meta_clear(t);

    for (int table = STORE_TABLE_META + 1; table < STORE_TABLE_COUNT && rv == 0; table++) {
        rv = mdb_drop(t->txn, t->s->dbi[table], 0);
        if (rv != 0)
            rv = store_fail_mdb(t, rv, "emptying %s", store_tables[table].name);
    }
    return rv;
}

static int record_insert(struct store_txn *t, const struct dump_record *r)
{
    MDB_val key = r->key;
    MDB_val val = r->val;
    int rv;

    switch (r->table) {
    case STORE_TABLE_META:
        rv = mdb_put(t->txn, t->s->dbi[STORE_TABLE_META], &key, &val, MDB_NOOVERWRITE);
        if (rv != 0)
            return store_fail_mdb(t, rv, "loading sequence %.*s", (int)key.mv_size,
                                  (const char *)key.mv_data);
        return 0;
    case STORE_TABLE_DEDUP:
        return store_dedup_load(t, &key, &val);
    default:
        return store_record_load(t, (enum store_table)r->table, &key, &val);
    }
}

static int dump_apply(struct store_txn *t, const uint8_t *dump, size_t len, uint64_t applied)
{
    size_t end = len - DUMP_CHECKSUM_BYTES;
    size_t pos = DUMP_HEADER_BYTES;
    int rv = tables_clear(t);

    while (rv == 0 && pos < end) {
        struct dump_record r;

        rv = record_parse(dump, end, &pos, &r);
        assert(rv == 0); /* dump_verify walked the same bytes */
        rv = record_insert(t, &r);
    }
    if (rv == 0)
        rv = store_applied_index_put(t, applied);
    return rv;
}

int store_load(struct store_txn *t, const uint8_t *dump, size_t len, uint64_t *applied_index)
{
    struct store_txn child = {.s = t->s, .is_write = true};
    uint64_t applied = 0;
    int rv;

    assert(t->is_write);
    rv = dump_verify(t, dump, len, &applied);
    if (rv != 0)
        return rv;
    /* A nested transaction: a record found bad half-way, or a full map,
     * rolls back to exactly the caller's state. */
    rv = mdb_txn_begin(t->s->env, t->txn, 0, &child.txn);
    if (rv != 0)
        return store_fail_mdb(t, rv, "beginning the load transaction");
    rv = dump_apply(&child, dump, len, applied);
    if (rv != 0) {
        mdb_txn_abort(child.txn);
        /* A dump that passed its checksum yet breaks a record rule. */
        if (rv == STORE_EXISTS || rv == STORE_INVALID || rv == STORE_NOTFOUND)
            rv = STORE_CORRUPT;
        return store_fail(t, rv, "loading the dump: %s", child.errmsg);
    }
    rv = mdb_txn_commit(child.txn);
    if (rv != 0)
        return store_fail_mdb(t, rv, "committing the loaded dump");
    *applied_index = applied;
    return 0;
}

/* ---- state hash ---- */

static int hash_entry(struct store_txn *t, enum store_table table, const MDB_val *key,
                      const MDB_val *val, void *arg)
{
    crypto_generichash_state *st = arg;
    const char *name = store_tables[table].name;
    uint8_t name_len = (uint8_t)strlen(name);
    uint8_t be[4];

    (void)t;
    /* Length-prefixed, so no two different states frame to the same bytes. */
    crypto_generichash_update(st, &name_len, 1);
    crypto_generichash_update(st, (const uint8_t *)name, name_len);
    store_be32_put(be, (uint32_t)key->mv_size);
    crypto_generichash_update(st, be, sizeof be);
    crypto_generichash_update(st, key->mv_data, key->mv_size);
    store_be32_put(be, (uint32_t)val->mv_size);
    crypto_generichash_update(st, be, sizeof be);
    crypto_generichash_update(st, val->mv_data, val->mv_size);
    return 0;
}

int store_state_hash(struct store_txn *t, uint8_t out[32])
{
    crypto_generichash_state st;
    int rv = 0;

    crypto_generichash_init(&st, NULL, 0, 32);
    for (int table = 0; table < STORE_TABLE_COUNT && rv == 0; table++) {
        if (store_tables[table].is_hashed)
            rv = table_walk(t, (enum store_table)table, hash_entry, &st);
    }
    if (rv == 0)
        crypto_generichash_final(&st, out, 32);
    return rv;
}
