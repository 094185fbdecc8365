/* storage/meta.c: the meta table: applied index, id sequences, schema
 * version and free-form local values, each under its own key namespace
 * (store_internal.h) so a caller's name can never clobber a counter. */
#include "storage/store.h"

#include <assert.h>
#include <string.h>

#include "storage/store_internal.h"

#define META_KEY_MAX 512

/* Builds "<prefix><name>" into buf; STORE_INVALID for an empty or oversized name. */
static int meta_key(struct store_txn *t, const char *prefix, const char *name, char *buf,
                    size_t cap, MDB_val *out)
{
    size_t plen = strlen(prefix);
    size_t nlen = name != NULL ? strlen(name) : 0;

    if (nlen == 0)
        return store_fail(t, STORE_INVALID, "empty meta name");
    if (plen + nlen > t->s->max_key_bytes || plen + nlen > cap)
        return store_fail(t, STORE_INVALID, "meta name of %zu bytes is too long", nlen);
    memcpy(buf, prefix, plen);
    memcpy(buf + plen, name, nlen);
    out->mv_size = plen + nlen;
    out->mv_data = buf;
    return 0;
}

static int u64_read(struct store_txn *t, MDB_val *key, uint64_t *out)
{
    MDB_val v;
    int rv = mdb_get(t->txn, t->s->dbi[STORE_TABLE_META], key, &v);

    if (rv == MDB_NOTFOUND) {
        *out = 0;
        return 0;
    }
    if (rv != 0)
        return store_fail_mdb(t, rv, "reading meta %.*s", (int)key->mv_size,
                              (const char *)key->mv_data);
    if (v.mv_size != 8)
        return store_fail(t, STORE_CORRUPT, "meta %.*s is %zu bytes, not 8", (int)key->mv_size,
                          (const char *)key->mv_data, v.mv_size);
    *out = store_be64_get(v.mv_data);
    return 0;
}

static int u64_write(struct store_txn *t, MDB_val *key, uint64_t value)
{
    uint8_t buf[8];
    MDB_val v = {sizeof buf, buf};
    int rv;

    assert(t->is_write);
    store_be64_put(buf, value);
    rv = mdb_put(t->txn, t->s->dbi[STORE_TABLE_META], key, &v, 0);
    if (rv != 0)
        return store_fail_mdb(t, rv, "writing meta %.*s", (int)key->mv_size,
                              (const char *)key->mv_data);
    return 0;
}

int store_applied_index_get(struct store_txn *t, uint64_t *out)
{
    MDB_val k = {strlen(STORE_META_APPLIED_INDEX), STORE_META_APPLIED_INDEX};

    return u64_read(t, &k, out);
}

int store_applied_index_put(struct store_txn *t, uint64_t index)
{
    MDB_val k = {strlen(STORE_META_APPLIED_INDEX), STORE_META_APPLIED_INDEX};

    return u64_write(t, &k, index);
}

int store_next_id(struct store_txn *t, const char *sequence, uint64_t *out)
{
    char buf[META_KEY_MAX];
    MDB_val k;
    uint64_t last;
    int rv = meta_key(t, STORE_META_SEQ_PREFIX, sequence, buf, sizeof buf, &k);

    if (rv == 0)
        rv = u64_read(t, &k, &last);
    if (rv != 0)
        return rv;
    if (last == UINT64_MAX)
        return store_fail(t, STORE_FULL, "sequence %s is exhausted", sequence);
    rv = u64_write(t, &k, last + 1);
    if (rv != 0)
        return rv;
    *out = last + 1;
    return 0;
}

int store_schema_version_get(struct store_txn *t, uint32_t *out)
{
    MDB_val k = {strlen(STORE_META_SCHEMA_VERSION), STORE_META_SCHEMA_VERSION};
    MDB_val v;
    int rv = mdb_get(t->txn, t->s->dbi[STORE_TABLE_META], &k, &v);

    if (rv != 0)
        return store_fail_mdb(t, rv, "reading the schema version");
    if (v.mv_size != 4)
        return store_fail(t, STORE_CORRUPT, "schema version is %zu bytes, not 4", v.mv_size);
    *out = store_be32_get(v.mv_data);
    return 0;
}

int store_meta_get(struct store_txn *t, const char *name, uint8_t *buf, size_t cap, size_t *len)
{
    char kbuf[META_KEY_MAX];
    MDB_val k, v;
    int rv = meta_key(t, STORE_META_VAL_PREFIX, name, kbuf, sizeof kbuf, &k);

    if (rv != 0)
        return rv;
    rv = mdb_get(t->txn, t->s->dbi[STORE_TABLE_META], &k, &v);
    if (rv == MDB_NOTFOUND)
        return STORE_NOTFOUND;
    if (rv != 0)
        return store_fail_mdb(t, rv, "reading meta value %s", name);
    *len = v.mv_size;
    if (v.mv_size > cap)
        return store_fail(t, STORE_INVALID, "meta value %s is %zu bytes, the buffer holds %zu",
                          name, v.mv_size, cap);
    if (v.mv_size > 0)
        memcpy(buf, v.mv_data, v.mv_size);
    return 0;
}

int store_meta_put(struct store_txn *t, const char *name, const uint8_t *val, size_t len)
{
    char kbuf[META_KEY_MAX];
    MDB_val k;
    MDB_val v = {len, (void *)val};
    int rv = meta_key(t, STORE_META_VAL_PREFIX, name, kbuf, sizeof kbuf, &k);

    assert(t->is_write);
    if (rv != 0)
        return rv;
    rv = mdb_put(t->txn, t->s->dbi[STORE_TABLE_META], &k, &v, 0);
    if (rv != 0)
        return store_fail_mdb(t, rv, "writing meta value %s", name);
    return 0;
}
