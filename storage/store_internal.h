/* storage/store_internal.h: what storage/'s files share and nobody else sees:
 * the LMDB handles, the sub-database table, the meta key names and the
 * helpers that turn MDB_* codes into STORE_* codes with context.
 * Tests may include it to tamper with the raw environment. */
#ifndef CONCORD_STORAGE_STORE_INTERNAL_H
#define CONCORD_STORAGE_STORE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <lmdb.h>

#include "storage/store.h"

/* Sub-databases. The numbers are the table ids of the dump format: never
 * renumber or reuse one, append new tables at the end. */
enum store_table {
    STORE_TABLE_META = 0,
    STORE_TABLE_USERS = 1,
    STORE_TABLE_USERS_BY_NAME = 2,
    STORE_TABLE_PREAUTHKEYS = 3,
    STORE_TABLE_PREAUTHKEYS_BY_PREFIX = 4,
    STORE_TABLE_APIKEYS = 5,
    STORE_TABLE_APIKEYS_BY_PREFIX = 6,
    STORE_TABLE_NODES = 7,
    STORE_TABLE_NODES_BY_MACHINE_KEY = 8,
    STORE_TABLE_NODES_BY_NODE_KEY = 9,
    STORE_TABLE_NODES_BY_IP = 10,
    STORE_TABLE_NODES_BY_GIVEN_NAME = 11,
    STORE_TABLE_POLICY = 12,
    STORE_TABLE_DNS = 13,
    STORE_TABLE_REGISTRATIONS = 14,
    STORE_TABLE_SESSIONS = 15,
    STORE_TABLE_REPLICAS = 16,
    STORE_TABLE_AUDIT = 17,
    STORE_TABLE_DEDUP = 18,
    STORE_TABLE_DEDUP_BY_INDEX = 19,
    STORE_TABLE_CONTROL = 20,
    STORE_TABLE_COUNT
};

/* How whole-state operations treat a table. Secondary indexes are derived
 * from their primary table, so dumps leave them out and store_load rebuilds
 * them; de-duplication entries travel in dumps (exactly-once must survive a
 * snapshot install) but are not part of the logical state. */
struct store_table_info {
    const char *name;
    bool is_dumped;
    bool is_hashed;
};
extern const struct store_table_info store_tables[STORE_TABLE_COUNT];

/* Keys of the meta table. Sequence counters ("seq/<name>") are replicated;
 * "val/<name>" values (store_meta_put) and the schema version are local. */
#define STORE_META_SCHEMA_VERSION "schema_version" /* u32 big-endian */
#define STORE_META_APPLIED_INDEX  "applied_index"  /* u64 big-endian */
#define STORE_META_SEQ_PREFIX     "seq/"           /* + sequence name: last id, u64 */
#define STORE_META_VAL_PREFIX     "val/"           /* + free-form name */

struct store {
    MDB_env *env;
    MDB_dbi dbi[STORE_TABLE_COUNT];
    size_t max_key_bytes;
    char errmsg[256];
};

struct store_txn {
    struct store *s;
    MDB_txn *txn;
    bool is_write;
    /* First LMDB write failure: LMDB has poisoned the transaction, so commit
     * must refuse with this code rather than a generic one. */
    int failed_code;
    char errmsg[256];
};

/* Formats the context into t->errmsg (and the store's errmsg for the single
 * writer) and returns code. */
int store_fail(struct store_txn *t, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Converts an LMDB return value at the call site: returns the STORE_* code,
 * with "<context>: <mdb message>" in errmsg. A failed LMDB write poisons a
 * write transaction, which is remembered for store_txn_commit. */
int store_fail_mdb(struct store_txn *t, int mdb_rv, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int store_code_from_mdb(int mdb_rv);

/* Unpacks a stored value with a tracking allocator, so that running out of
 * memory (STORE_NOMEM) is told apart from a bad record (STORE_CORRUPT). */
int store_unpack(struct store_txn *t, const ProtobufCMessageDescriptor *desc, const MDB_val *v,
                 ProtobufCMessage **out);

/* Dump loading: insert one stored entry of a dump, validating it like a put
 * and maintaining the derived tables. An entry the dump already had, or one
 * that contradicts another, is STORE_EXISTS or STORE_INVALID. */
int store_record_load(struct store_txn *t, enum store_table table, const MDB_val *key,
                      const MDB_val *val);
int store_dedup_load(struct store_txn *t, const MDB_val *key, const MDB_val *val);

static inline void store_be64_put(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)(v & 0xff);
        v >>= 8;
    }
}

static inline uint64_t store_be64_get(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static inline void store_be32_put(uint8_t *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--) {
        p[i] = (uint8_t)(v & 0xff);
        v >>= 8;
    }
}

static inline uint32_t store_be32_get(const uint8_t *p)
{
    uint32_t v = 0;

    for (int i = 0; i < 4; i++)
        v = (v << 8) | p[i];
    return v;
}

#endif
