/* storage/store.c: the LMDB environment, schema version and migrations,
 * transactions, backup copy, and the translation of MDB_* codes. */
#include "storage/store.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sodium.h>

#include "storage/store_internal.h"

#define DEFAULT_MAP_SIZE_BYTES (8ULL << 30)
#define DEFAULT_MAX_READERS    512
/* Headroom over today's tables, so a migration can add sub-databases. */
#define MAX_DBS 64

const struct store_table_info store_tables[STORE_TABLE_COUNT] = {
    [STORE_TABLE_META] = {"meta", true, true},
    [STORE_TABLE_USERS] = {"users", true, true},
    [STORE_TABLE_USERS_BY_NAME] = {"users_by_name", false, false},
    [STORE_TABLE_PREAUTHKEYS] = {"preauthkeys", true, true},
    [STORE_TABLE_PREAUTHKEYS_BY_PREFIX] = {"preauthkeys_by_prefix", false, false},
    [STORE_TABLE_APIKEYS] = {"apikeys", true, true},
    [STORE_TABLE_APIKEYS_BY_PREFIX] = {"apikeys_by_prefix", false, false},
    [STORE_TABLE_NODES] = {"nodes", true, true},
    [STORE_TABLE_NODES_BY_MACHINE_KEY] = {"nodes_by_machine_key", false, false},
    [STORE_TABLE_NODES_BY_NODE_KEY] = {"nodes_by_node_key", false, false},
    [STORE_TABLE_NODES_BY_IP] = {"nodes_by_ip", false, false},
    [STORE_TABLE_NODES_BY_GIVEN_NAME] = {"nodes_by_given_name", false, false},
    [STORE_TABLE_POLICY] = {"policy", true, true},
    [STORE_TABLE_DNS] = {"dns", true, true},
    [STORE_TABLE_REGISTRATIONS] = {"registrations", true, true},
    [STORE_TABLE_SESSIONS] = {"sessions", true, true},
    [STORE_TABLE_REPLICAS] = {"replicas", true, true},
    [STORE_TABLE_AUDIT] = {"audit", true, true},
    [STORE_TABLE_DEDUP] = {"dedup", true, false},
    [STORE_TABLE_DEDUP_BY_INDEX] = {"dedup_by_index", false, false},
    [STORE_TABLE_CONTROL] = {"control", true, true},
};

const char *store_strerror(int code)
{
    switch (code) {
#define X(c, msg)                                                                                  \
    case c:                                                                                        \
        return msg;
        STORE_CODES(X)
#undef X
    }
    return "unknown storage error";
}

int store_code_from_mdb(int mdb_rv)
{
    switch (mdb_rv) {
    case MDB_SUCCESS:
        return STORE_OK;
    case MDB_NOTFOUND:
        return STORE_NOTFOUND;
    case MDB_KEYEXIST:
        return STORE_EXISTS;
    case MDB_MAP_FULL:
    case MDB_TXN_FULL:
    case MDB_PAGE_FULL:
    case MDB_CURSOR_FULL:
        return STORE_FULL;
    case MDB_READERS_FULL:
        return STORE_READERS;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
        return STORE_CORRUPT;
    case MDB_BAD_VALSIZE:
        return STORE_INVALID;
    case ENOMEM:
        return STORE_NOMEM;
    default:
        return STORE_IO;
    }
}

static void txn_vfail(struct store_txn *t, const char *suffix, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

static void txn_vfail(struct store_txn *t, const char *suffix, const char *fmt, va_list ap)
{
    int n = vsnprintf(t->errmsg, sizeof t->errmsg, fmt, ap);

    if (suffix != NULL && n >= 0 && (size_t)n < sizeof t->errmsg)
        snprintf(t->errmsg + n, sizeof t->errmsg - (size_t)n, ": %s", suffix);
    /* Only one write transaction exists at a time, so the store's errmsg has
     * one writer; read transactions may run on many threads and keep theirs. */
    if (t->is_write)
        memcpy(t->s->errmsg, t->errmsg, sizeof t->errmsg);
}

int store_fail(struct store_txn *t, int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    txn_vfail(t, NULL, fmt, ap);
    va_end(ap);
    return code;
}

int store_fail_mdb(struct store_txn *t, int mdb_rv, const char *fmt, ...)
{
    int code = store_code_from_mdb(mdb_rv);
    va_list ap;

    va_start(ap, fmt);
    txn_vfail(t, mdb_strerror(mdb_rv), fmt, ap);
    va_end(ap);
    /* LMDB refuses these before changing anything; the rest may leave the
     * transaction half-written, and LMDB then refuses to commit it. */
    if (t->is_write && code != STORE_NOTFOUND && code != STORE_EXISTS && code != STORE_INVALID &&
        t->failed_code == 0)
        t->failed_code = code;
    return code;
}

static void *unpack_alloc(void *data, size_t size)
{
    void *p = malloc(size);

    if (p == NULL && size > 0)
        *(bool *)data = true;
    return p;
}

static void unpack_free(void *data, void *p)
{
    (void)data;
    free(p);
}

int store_unpack(struct store_txn *t, const ProtobufCMessageDescriptor *desc, const MDB_val *v,
                 ProtobufCMessage **out)
{
    bool is_out_of_memory = false;
    /* malloc/free, like protobuf-c's default allocator, so store_record_free
     * can release the message with the default one. */
    ProtobufCAllocator alloc = {unpack_alloc, unpack_free, &is_out_of_memory};
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, &alloc, v->mv_size, v->mv_data);

    if (m == NULL) {
        if (is_out_of_memory)
            return store_fail(t, STORE_NOMEM, "unpacking %s", desc->short_name);
        return store_fail(t, STORE_CORRUPT, "%s record of %zu bytes does not unpack",
                          desc->short_name, v->mv_size);
    }
    *out = m;
    return 0;
}

void store_record_free(void *record)
{
    if (record != NULL)
        protobuf_c_message_free_unpacked(record, NULL);
}

/* ---- schema and migrations ---- */

typedef int (*migration_fn)(struct store_txn *t);

/* Version 0 is an empty environment. Version 1 is the initial schema: the
 * sub-databases, which schema_open() has just created. */
static int migrate_create_initial(struct store_txn *t)
{
    (void)t;
    return 0;
}

/* migrations[n] turns a version-n store into a version n+1 store. */
static const migration_fn migrations[STORE_SCHEMA_VERSION] = {
    migrate_create_initial,
};

static int schema_version_read(struct store_txn *t, uint32_t *out)
{
    MDB_val k = {strlen(STORE_META_SCHEMA_VERSION), STORE_META_SCHEMA_VERSION};
    MDB_val v;
    int rv = mdb_get(t->txn, t->s->dbi[STORE_TABLE_META], &k, &v);

    if (rv == MDB_NOTFOUND) {
        *out = 0;
        return 0;
    }
    if (rv != 0)
        return store_fail_mdb(t, rv, "reading the schema version");
    if (v.mv_size != 4)
        return store_fail(t, STORE_CORRUPT, "schema version is %zu bytes, not 4", v.mv_size);
    *out = store_be32_get(v.mv_data);
    return 0;
}

static int schema_version_write(struct store_txn *t, uint32_t version)
{
    uint8_t buf[4];
    MDB_val k = {strlen(STORE_META_SCHEMA_VERSION), STORE_META_SCHEMA_VERSION};
    MDB_val v = {sizeof buf, buf};
    int rv;

    store_be32_put(buf, version);
    rv = mdb_put(t->txn, t->s->dbi[STORE_TABLE_META], &k, &v, 0);
    if (rv != 0)
        return store_fail_mdb(t, rv, "writing schema version %u", (unsigned)version);
    return 0;
}

static int table_open(struct store_txn *t, enum store_table table)
{
    int rv = mdb_dbi_open(t->txn, store_tables[table].name, MDB_CREATE, &t->s->dbi[table]);

    if (rv != 0)
        return store_fail_mdb(t, rv, "opening sub-database %s", store_tables[table].name);
    return 0;
}

/* Opens every sub-database and brings the schema to STORE_SCHEMA_VERSION in
 * one write transaction: either the whole migration happens or none. */
static int schema_open(struct store *s)
{
    struct store_txn t = {.s = s, .is_write = true};
    uint32_t version = 0;
    int rv = mdb_txn_begin(s->env, NULL, 0, &t.txn);

    if (rv != 0)
        return store_fail_mdb(&t, rv, "beginning the schema transaction");
    /* meta first: a newer schema is refused before anything is created. */
    rv = table_open(&t, STORE_TABLE_META);
    if (rv != 0)
        goto err_after_begin;
    rv = schema_version_read(&t, &version);
    if (rv != 0)
        goto err_after_begin;
    if (version > STORE_SCHEMA_VERSION) {
        rv = store_fail(&t, STORE_SCHEMA, "store has schema version %u, this binary knows up to %u",
                        (unsigned)version, (unsigned)STORE_SCHEMA_VERSION);
        goto err_after_begin;
    }
    for (int table = STORE_TABLE_META + 1; table < STORE_TABLE_COUNT; table++) {
        rv = table_open(&t, (enum store_table)table);
        if (rv != 0)
            goto err_after_begin;
    }
    for (uint32_t v = version; v < STORE_SCHEMA_VERSION; v++) {
        rv = migrations[v](&t);
        if (rv != 0)
            goto err_after_begin;
    }
    if (version != STORE_SCHEMA_VERSION) {
        rv = schema_version_write(&t, STORE_SCHEMA_VERSION);
        if (rv != 0)
            goto err_after_begin;
    }
    rv = mdb_txn_commit(t.txn);
    if (rv != 0)
        return store_fail_mdb(&t, rv, "committing the schema transaction");
    return 0;

err_after_begin:
    mdb_txn_abort(t.txn);
    return rv;
}

/* ---- environment ---- */

static int env_fail(struct store *s, int code, const char *what, int err)
{
    snprintf(s->errmsg, sizeof s->errmsg, "%s: %s", what, mdb_strerror(err));
    return code;
}

int store_open(const struct store_options *opts, struct store **out, char *errmsg)
{
    struct store *s;
    int rv;

    if (opts == NULL || opts->dir == NULL || opts->dir[0] == '\0') {
        if (errmsg != NULL)
            snprintf(errmsg, 256, "store_open: no directory given");
        return STORE_INVALID;
    }
    s = calloc(1, sizeof *s);
    if (s == NULL) {
        if (errmsg != NULL)
            snprintf(errmsg, 256, "store_open: out of memory");
        return STORE_NOMEM;
    }
    if (sodium_init() < 0) {
        snprintf(s->errmsg, sizeof s->errmsg, "libsodium failed to initialize");
        rv = STORE_IO;
        goto err_after_alloc;
    }
    rv = mdb_env_create(&s->env);
    if (rv != 0) {
        rv = env_fail(s, store_code_from_mdb(rv), "mdb_env_create", rv);
        goto err_after_alloc;
    }
    rv = mdb_env_set_mapsize(s->env, opts->map_size_bytes != 0 ? (size_t)opts->map_size_bytes
                                                               : (size_t)DEFAULT_MAP_SIZE_BYTES);
    if (rv == 0)
        rv = mdb_env_set_maxreaders(s->env, opts->max_readers != 0 ? opts->max_readers
                                                                   : DEFAULT_MAX_READERS);
    if (rv == 0)
        rv = mdb_env_set_maxdbs(s->env, MAX_DBS);
    if (rv != 0) {
        rv = env_fail(s, STORE_INVALID, "configuring the LMDB environment", rv);
        goto err_after_env_create;
    }
    if (mkdir(opts->dir, 0700) != 0 && errno != EEXIST) {
        rv = env_fail(s, STORE_IO, opts->dir, errno);
        goto err_after_env_create;
    }
    /* NOSYNC: the Raft log is the durability source. NOTLS: reader slots
     * belong to transactions, so one thread may hold several and hand them
     * to workers. No WRITEMAP: store_load relies on nested transactions. */
    rv = mdb_env_open(s->env, opts->dir, MDB_NOSYNC | MDB_NOTLS, 0600);
    if (rv != 0) {
        snprintf(s->errmsg, sizeof s->errmsg, "opening LMDB in %s: %s", opts->dir,
                 mdb_strerror(rv));
        rv = store_code_from_mdb(rv);
        goto err_after_env_create;
    }
    /* Reader slots of processes killed with -9 would pin old pages forever. */
    rv = mdb_reader_check(s->env, NULL);
    if (rv != 0) {
        rv = env_fail(s, store_code_from_mdb(rv), "clearing stale readers", rv);
        goto err_after_env_create;
    }
    s->max_key_bytes = (size_t)mdb_env_get_maxkeysize(s->env);
    rv = schema_open(s);
    if (rv != 0)
        goto err_after_env_create;
    *out = s;
    return 0;

err_after_env_create:
    mdb_env_close(s->env);
err_after_alloc:
    if (errmsg != NULL)
        snprintf(errmsg, 256, "%s", s->errmsg);
    free(s);
    return rv;
}

void store_close(struct store *s)
{
    if (s == NULL)
        return;
    mdb_env_close(s->env);
    free(s);
}

const char *store_errmsg(const struct store *s)
{
    return s->errmsg;
}

int store_sync(struct store *s)
{
    int rv = mdb_env_sync(s->env, 1);

    if (rv != 0)
        return env_fail(s, store_code_from_mdb(rv), "syncing the LMDB map", rv);
    return 0;
}

static int dir_check_empty(struct store *s, const char *path)
{
    DIR *d = opendir(path);
    struct dirent *e;
    int rv = 0;

    if (d == NULL)
        return env_fail(s, STORE_IO, path, errno);
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            snprintf(s->errmsg, sizeof s->errmsg, "backup directory %s is not empty", path);
            rv = STORE_EXISTS;
            break;
        }
    }
    closedir(d);
    return rv;
}

int store_backup_copy(struct store *s, const char *path)
{
    int rv;

    if (path == NULL || path[0] == '\0') {
        snprintf(s->errmsg, sizeof s->errmsg, "backup: no directory given");
        return STORE_INVALID;
    }
    if (mkdir(path, 0700) != 0) {
        if (errno != EEXIST)
            return env_fail(s, STORE_IO, path, errno);
        rv = dir_check_empty(s, path);
        if (rv != 0)
            return rv;
    }
    rv = mdb_env_copy2(s->env, path, MDB_CP_COMPACT);
    if (rv != 0) {
        snprintf(s->errmsg, sizeof s->errmsg, "copying the environment to %s: %s", path,
                 mdb_strerror(rv));
        return store_code_from_mdb(rv);
    }
    return 0;
}

/* ---- transactions ---- */

int store_txn_begin(struct store *s, bool is_write, struct store_txn **out)
{
    struct store_txn *t = calloc(1, sizeof *t);
    int rv;

    if (t == NULL) {
        snprintf(s->errmsg, sizeof s->errmsg, "beginning a transaction: out of memory");
        return STORE_NOMEM;
    }
    t->s = s;
    t->is_write = is_write;
    rv = mdb_txn_begin(s->env, NULL, is_write ? 0 : MDB_RDONLY, &t->txn);
    if (rv != 0) {
        rv = store_fail_mdb(t, rv, "beginning a %s transaction", is_write ? "write" : "read");
        free(t);
        return rv;
    }
    *out = t;
    return 0;
}

int store_txn_commit(struct store_txn *t)
{
    struct store *s = t->s;
    int rv;

    if (t->failed_code != 0) {
        rv = t->failed_code;
        mdb_txn_abort(t->txn);
        snprintf(s->errmsg, sizeof s->errmsg, "commit refused after an earlier failure: %.200s",
                 t->errmsg);
        free(t);
        return rv;
    }
    rv = mdb_txn_commit(t->txn);
    if (rv != 0) {
        snprintf(s->errmsg, sizeof s->errmsg, "committing: %s", mdb_strerror(rv));
        rv = store_code_from_mdb(rv);
    }
    free(t);
    return rv;
}

void store_txn_abort(struct store_txn *t)
{
    if (t == NULL)
        return;
    mdb_txn_abort(t->txn);
    free(t);
}

const char *store_txn_errmsg(const struct store_txn *t)
{
    return t->errmsg;
}
