/* storage/dedup.c: results of applied requests, by request id, so a retried
 * proposal is answered instead of applied twice. dedup maps the 16-byte
 * request id to [u64 index][result]; dedup_by_index holds [u64 index][request
 * id] with an empty value, in index order, so a trim visits only what it
 * deletes. */
#include "storage/store.h"

#include <assert.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "storage/store_internal.h"

#define REQUEST_ID_BYTES 16
#define INDEX_KEY_BYTES  (8 + REQUEST_ID_BYTES)

static void index_key_make(uint8_t out[INDEX_KEY_BYTES], uint64_t index, const uint8_t *id)
{
    store_be64_put(out, index);
    memcpy(out + 8, id, REQUEST_ID_BYTES);
}

int store_dedup_get(struct store_txn *t, const uint8_t id[16], uint8_t **result, size_t *len)
{
    MDB_val k = {REQUEST_ID_BYTES, (void *)id};
    MDB_val v;
    uint8_t *copy;
    size_t n;
    int rv = mdb_get(t->txn, t->s->dbi[STORE_TABLE_DEDUP], &k, &v);

    if (rv == MDB_NOTFOUND)
        return STORE_NOTFOUND;
    if (rv != 0)
        return store_fail_mdb(t, rv, "reading a de-duplication entry");
    if (v.mv_size < 8)
        return store_fail(t, STORE_CORRUPT, "de-duplication entry of %zu bytes", v.mv_size);
    n = v.mv_size - 8;
    copy = malloc(n > 0 ? n : 1);
    if (copy == NULL)
        return store_fail(t, STORE_NOMEM, "copying a de-duplication result of %zu bytes", n);
    memcpy(copy, (const uint8_t *)v.mv_data + 8, n);
    *result = copy;
    *len = n;
    return 0;
}

static int dedup_insert(struct store_txn *t, const uint8_t *id, uint64_t index,
                        const uint8_t *result, size_t len, bool is_new_only)
{
    MDB_dbi dedup = t->s->dbi[STORE_TABLE_DEDUP];
    MDB_dbi by_index = t->s->dbi[STORE_TABLE_DEDUP_BY_INDEX];
    uint8_t ikey[INDEX_KEY_BYTES];
    MDB_val k = {REQUEST_ID_BYTES, (void *)id};
    MDB_val ik = {sizeof ikey, ikey};
    MDB_val empty = {0, ikey};
    MDB_val v;
    bool has_old = false;
    uint64_t old_index = 0;
    int rv;

    assert(t->is_write);
    /* LMDB's value limit, and what a dump's u32 length can carry. */
    if (len > UINT32_MAX - 8)
        return store_fail(t, STORE_INVALID, "de-duplication result of %zu bytes", len);
    rv = mdb_get(t->txn, dedup, &k, &v);
    if (rv == 0) {
        if (is_new_only)
            return store_fail(t, STORE_EXISTS, "request id recorded twice");
        if (v.mv_size < 8)
            return store_fail(t, STORE_CORRUPT, "de-duplication entry of %zu bytes", v.mv_size);
        has_old = true;
        old_index = store_be64_get(v.mv_data);
    } else if (rv != MDB_NOTFOUND) {
        return store_fail_mdb(t, rv, "reading a de-duplication entry");
    }
    v.mv_size = 8 + len;
    v.mv_data = NULL;
    rv = mdb_put(t->txn, dedup, &k, &v, MDB_RESERVE);
    if (rv != 0)
        return store_fail_mdb(t, rv, "writing a de-duplication entry at index %" PRIu64, index);
    store_be64_put(v.mv_data, index);
    if (len > 0)
        memcpy((uint8_t *)v.mv_data + 8, result, len);
    if (has_old && old_index != index) {
        index_key_make(ikey, old_index, id);
        rv = mdb_del(t->txn, by_index, &ik, NULL);
        if (rv != 0 && rv != MDB_NOTFOUND)
            return store_fail_mdb(t, rv, "moving a de-duplication entry from index %" PRIu64,
                                  old_index);
    }
    index_key_make(ikey, index, id);
    rv = mdb_put(t->txn, by_index, &ik, &empty, 0);
    if (rv != 0)
        return store_fail_mdb(t, rv, "indexing a de-duplication entry at %" PRIu64, index);
    return 0;
}

int store_dedup_put(struct store_txn *t, const uint8_t id[16], uint64_t index,
                    const uint8_t *result, size_t len)
{
    return dedup_insert(t, id, index, result, len, false);
}

int store_dedup_load(struct store_txn *t, const MDB_val *key, const MDB_val *val)
{
    if (key->mv_size != REQUEST_ID_BYTES || val->mv_size < 8)
        return store_fail(t, STORE_INVALID,
                          "de-duplication entry with a %zu-byte key and %zu bytes", key->mv_size,
                          val->mv_size);
    return dedup_insert(t, key->mv_data, store_be64_get(val->mv_data),
                        (const uint8_t *)val->mv_data + 8, val->mv_size - 8, true);
}

int store_dedup_trim(struct store_txn *t, uint64_t min_index)
{
    MDB_dbi dedup = t->s->dbi[STORE_TABLE_DEDUP];
    MDB_cursor *c;
    MDB_val k, v;
    uint8_t id[REQUEST_ID_BYTES];
    MDB_val idk = {sizeof id, id};
    int rv;

    assert(t->is_write);
    rv = mdb_cursor_open(t->txn, t->s->dbi[STORE_TABLE_DEDUP_BY_INDEX], &c);
    if (rv != 0)
        return store_fail_mdb(t, rv, "opening a cursor on dedup_by_index");
    /* Always the first entry: deleting under a cursor and stepping on is
     * easy to get wrong, re-seeking is not, and costs one descent. */
    for (;;) {
        rv = mdb_cursor_get(c, &k, &v, MDB_FIRST);
        if (rv == MDB_NOTFOUND) {
            rv = 0;
            break;
        }
        if (rv != 0) {
            rv = store_fail_mdb(t, rv, "walking dedup_by_index");
            break;
        }
        if (k.mv_size != INDEX_KEY_BYTES) {
            rv = store_fail(t, STORE_CORRUPT, "dedup_by_index key of %zu bytes", k.mv_size);
            break;
        }
        if (store_be64_get(k.mv_data) >= min_index)
            break;
        memcpy(id, (const uint8_t *)k.mv_data + 8, sizeof id);
        rv = mdb_cursor_del(c, 0);
        if (rv != 0) {
            rv = store_fail_mdb(t, rv, "trimming dedup_by_index");
            break;
        }
        rv = mdb_del(t->txn, dedup, &idk, NULL);
        if (rv != 0 && rv != MDB_NOTFOUND) {
            rv = store_fail_mdb(t, rv, "trimming dedup");
            break;
        }
        rv = 0;
    }
    mdb_cursor_close(c);
    return rv;
}
