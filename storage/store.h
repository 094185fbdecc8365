/* storage/store.h: the LMDB environment, its transactions and the typed
 * accessors for every replicated record. Every read and write of replicated
 * state goes through a transaction opened here. storage/ knows nothing of
 * Raft, sockets or Tailscale: it returns codes and fills errmsg, it never logs.
 *
 * Records are the protobuf messages of proto/concord.proto. A `get` hands out
 * a freshly unpacked copy the caller frees with store_record_free(); nothing
 * returned points into the LMDB map, so it outlives the transaction. */
#ifndef CONCORD_STORAGE_STORE_H
#define CONCORD_STORAGE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/concord.pb-c.h"

#define STORE_SCHEMA_VERSION 1

#define STORE_CODES(X)                                                                             \
    X(STORE_OK, "ok")                                                                              \
    X(STORE_NOTFOUND, "not found")                                                                 \
    X(STORE_EXISTS, "already exists")                                                              \
    X(STORE_NOMEM, "out of memory")                                                                \
    X(STORE_FULL, "database map is full")                                                          \
    X(STORE_CORRUPT, "corrupt record or dump")                                                     \
    X(STORE_IO, "I/O error")                                                                       \
    X(STORE_INVALID, "invalid argument")                                                           \
    X(STORE_SCHEMA, "unsupported schema version")                                                  \
    X(STORE_READERS, "too many readers")

enum store_code {
#define X(code, msg) code,
    STORE_CODES(X)
#undef X
};
const char *store_strerror(int code);

struct store;     /* opaque */
struct store_txn; /* opaque; a read or write transaction */

struct store_options {
    const char *dir;         /* created if missing */
    uint64_t map_size_bytes; /* 0: 8 GiB */
    unsigned max_readers;    /* 0: 512 */
};

/* Opens (creating if needed) the environment in opts->dir with MDB_NOSYNC: the
 * Raft log is the durability source. Clears stale reader slots, creates the
 * sub-databases and runs migrations up to STORE_SCHEMA_VERSION. A newer schema
 * than this binary knows is STORE_SCHEMA. On 0, *out is yours until
 * store_close(); on error *errmsg (256 bytes, may be NULL) says why. */
int store_open(const struct store_options *opts, struct store **out, char *errmsg);
void store_close(struct store *s); /* NULL is fine */
const char *store_errmsg(const struct store *s);

/* Flushes the map to disk (mdb_env_sync force). Blocking: call from a worker. */
int store_sync(struct store *s);

/* Writes a compacted, consistent copy of the environment to the new directory
 * `path` (mdb_env_copy2 with MDB_CP_COMPACT). Blocking. */
int store_backup_copy(struct store *s, const char *path);

/* Transactions. Only one write transaction at a time (LMDB's rule); read
 * transactions are cheap, keep them short (no network waits inside). */
int store_txn_begin(struct store *s, bool is_write, struct store_txn **out);
int store_txn_commit(struct store_txn *t); /* frees t, also on error */
void store_txn_abort(struct store_txn *t); /* frees t; NULL is fine */
/* Context of the last failure inside t ("" if none). Read transactions keep
 * their own message (they may run on several threads); a write transaction's
 * failures, and commit failures, are also in store_errmsg(). STORE_NOTFOUND,
 * STORE_EXISTS and STORE_INVALID from a put or delete change nothing and leave
 * the transaction usable; after any other error abort it (when LMDB refused a
 * write part-way, commit returns that same code and writes nothing). */
const char *store_txn_errmsg(const struct store_txn *t);

/* Frees a record returned by any *_get. Records passed to iteration
 * callbacks are freed by the walk (see store_*_each). */
void store_record_free(void *record); /* ProtobufCMessage *, NULL is fine */

/* ---- meta ---- */
int store_applied_index_get(struct store_txn *t, uint64_t *out); /* 0 if never set */
int store_applied_index_put(struct store_txn *t, uint64_t index);
/* Allocates the next id of a sequence ("user", "node", "preauthkey", "apikey"),
 * starting at 1. Deterministic: the same state gives the same id. */
int store_next_id(struct store_txn *t, const char *sequence, uint64_t *out);
int store_schema_version_get(struct store_txn *t, uint32_t *out);
/* Free-form identity values (e.g. "cluster_uuid", "noise_public_key"). They
 * are local to this replica: not in dumps, not in the state hash, and kept by
 * store_load. store_meta_get: STORE_INVALID with *len set to the value's size
 * when it does not fit in cap. */
int store_meta_get(struct store_txn *t, const char *name, uint8_t *buf, size_t cap, size_t *len);
int store_meta_put(struct store_txn *t, const char *name, const uint8_t *val, size_t len);

/* Iteration: each *_each calls cb for every record in key order. The record
 * is freed after cb returns (copy what you keep); a non-zero return from cb
 * stops the walk and is returned. cb may read through the same transaction
 * but must not write through it. */
typedef int (*store_each_cb)(const ProtobufCMessage *record, void *arg);

/* ---- users (unique name index) ---- */
int store_user_get(struct store_txn *t, uint64_t id, Concord__User **out);
int store_user_get_by_name(struct store_txn *t, const char *name, Concord__User **out);
/* Inserts or replaces by id, maintaining the name index; STORE_EXISTS if
 * another user holds the name. */
int store_user_put(struct store_txn *t, const Concord__User *u);
int store_user_delete(struct store_txn *t, uint64_t id);
int store_user_each(struct store_txn *t, store_each_cb cb, void *arg);

/* ---- pre-auth keys (unique prefix index) ---- */
int store_preauthkey_get(struct store_txn *t, uint64_t id, Concord__PreAuthKey **out);
int store_preauthkey_get_by_prefix(struct store_txn *t, const char *prefix,
                                   Concord__PreAuthKey **out);
int store_preauthkey_put(struct store_txn *t, const Concord__PreAuthKey *k);
int store_preauthkey_delete(struct store_txn *t, uint64_t id);
int store_preauthkey_each(struct store_txn *t, store_each_cb cb, void *arg);

/* ---- API keys (unique prefix index) ---- */
int store_apikey_get(struct store_txn *t, uint64_t id, Concord__ApiKey **out);
int store_apikey_get_by_prefix(struct store_txn *t, const char *prefix, Concord__ApiKey **out);
int store_apikey_put(struct store_txn *t, const Concord__ApiKey *k);
int store_apikey_delete(struct store_txn *t, uint64_t id);
int store_apikey_each(struct store_txn *t, store_each_cb cb, void *arg);

/* ---- nodes (unique indexes: machine key, node key, IPv4, IPv6, given name) ---- */
int store_node_get(struct store_txn *t, uint64_t id, Concord__Node **out);
int store_node_get_by_machine_key(struct store_txn *t, const uint8_t key[32], Concord__Node **out);
int store_node_get_by_node_key(struct store_txn *t, const uint8_t key[32], Concord__Node **out);
/* addr is 4 or 16 bytes. */
int store_node_get_by_ip(struct store_txn *t, const uint8_t *addr, size_t addr_len,
                         Concord__Node **out);
int store_node_get_by_given_name(struct store_txn *t, const char *name, Concord__Node **out);
/* Inserts or replaces by id, moving every secondary index entry that changed;
 * STORE_EXISTS if another node holds one of the unique keys. */
int store_node_put(struct store_txn *t, const Concord__Node *n);
int store_node_delete(struct store_txn *t, uint64_t id);
int store_node_each(struct store_txn *t, store_each_cb cb, void *arg);

/* ---- singletons: policy, DNS and control settings (absent: STORE_NOTFOUND) ---- */
int store_policy_get(struct store_txn *t, Concord__Policy **out);
int store_policy_put(struct store_txn *t, const Concord__Policy *p);
int store_dns_get(struct store_txn *t, Concord__DnsSettings **out);
int store_dns_put(struct store_txn *t, const Concord__DnsSettings *d);
/* The control protocol's cluster-wide settings (the server Noise key). */
int store_control_get(struct store_txn *t, Concord__ControlSettings **out);
int store_control_put(struct store_txn *t, const Concord__ControlSettings *c);

/* ---- pending interactive registrations, by auth id ---- */
int store_registration_get(struct store_txn *t, const char *auth_id,
                           Concord__PendingRegistration **out);
int store_registration_put(struct store_txn *t, const Concord__PendingRegistration *r);
int store_registration_delete(struct store_txn *t, const char *auth_id);
int store_registration_each(struct store_txn *t, store_each_cb cb, void *arg);

/* ---- client sessions, keyed by (node_id, session_id) ---- */
int store_session_put(struct store_txn *t, const Concord__Session *s);
int store_session_delete(struct store_txn *t, uint64_t node_id, uint64_t session_id);
int store_session_each(struct store_txn *t, store_each_cb cb, void *arg);
/* The sessions of one node only (a range of the key order). */
int store_session_each_of_node(struct store_txn *t, uint64_t node_id, store_each_cb cb, void *arg);

/* ---- replicas (membership addresses and heartbeats), by Raft id ---- */
int store_replica_get(struct store_txn *t, uint64_t id, Concord__Replica **out);
int store_replica_put(struct store_txn *t, const Concord__Replica *r);
int store_replica_delete(struct store_txn *t, uint64_t id);
int store_replica_each(struct store_txn *t, store_each_cb cb, void *arg);

/* ---- audit log, append-only, keyed by Raft index ---- */
/* One entry per index (> 0): STORE_EXISTS if the index already has one. */
int store_audit_append(struct store_txn *t, const Concord__AuditEntry *e);
/* Walks entries with index > after_index in order, at most `limit` (0: all). */
int store_audit_each(struct store_txn *t, uint64_t after_index, size_t limit, store_each_cb cb,
                     void *arg);

/* ---- request de-duplication for retried proposals ---- */
/* A request id is 16 bytes. The stored result is an opaque byte string
 * (the packed CommandResult). */
int store_dedup_get(struct store_txn *t, const uint8_t id[16], uint8_t **result, size_t *len);
int store_dedup_put(struct store_txn *t, const uint8_t id[16], uint64_t index,
                    const uint8_t *result, size_t len);
/* Forgets every entry recorded at an index < min_index. */
int store_dedup_trim(struct store_txn *t, uint64_t min_index);

/* ---- whole-state operations ---- */
/* Serializes every replicated sub-database plus the applied index into one
 * self-describing buffer (format version, checksum). *out is malloc'd. */
int store_dump(struct store_txn *t, uint8_t **out, size_t *len);
/* Replaces every replicated sub-database with the dump's content, inside the
 * given write transaction; verifies format and checksum first and changes
 * nothing on any error. STORE_CORRUPT (damaged or inconsistent dump) and
 * STORE_SCHEMA (a newer dump format) depend only on the bytes, so every
 * replica refuses alike, and leave t usable. Secondary indexes are rebuilt;
 * local meta values stay. *applied_index gets the dump's index. */
int store_load(struct store_txn *t, const uint8_t *dump, size_t len, uint64_t *applied_index);
/* BLAKE2b-256 over the logical content of every replicated sub-database
 * (not the applied index, not de-duplication entries): equal on two replicas
 * iff they hold the same state. */
int store_state_hash(struct store_txn *t, uint8_t out[32]);

#endif
