/* tests/unit/storage/test_store.c: the environment: open, reopen, schema
 * version, meta values, id sequences, a full map, backup copies, and what
 * LMDB-level damage looks like from above. */
#include "tests/unit/storage/storage_tests.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <lmdb.h>

#include "storage/store_internal.h"
#include "tests/lib/testdir.h"

/* Opens the raw environment behind a closed store, for tampering. */
static void raw_put(const char *dir, const char *table, const void *key, size_t key_len,
                    const void *val, size_t val_len)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_val k = {key_len, (void *)key};
    MDB_val v = {val_len, (void *)val};

    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 64), 0);
    assert_int_equal(mdb_env_set_mapsize(env, FIXTURE_MAP_SIZE_BYTES), 0);
    assert_int_equal(mdb_env_open(env, dir, MDB_NOTLS, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, table, 0, &dbi), 0);
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

static void open_with_default_options_creates_the_directory(void **state)
{
    char base[256], dir[300], errmsg[256];
    struct store_options opts = {dir, 0, 0};
    struct store *s = NULL;
    struct store_txn *t;
    uint32_t version = 0;
    struct stat st;

    (void)state;
    assert_int_equal(testdir_make(base, sizeof base), 0);
    snprintf(dir, sizeof dir, "%s/data", base);
    assert_int_equal(store_open(&opts, &s, errmsg), 0);
    assert_int_equal(stat(dir, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    t = txn_read(s);
    assert_int_equal(store_schema_version_get(t, &version), 0);
    assert_int_equal(version, STORE_SCHEMA_VERSION);
    store_txn_abort(t);
    store_close(s);
    testdir_remove(base);
}

static void open_fails_with_message_when_directory_cannot_exist(void **state)
{
    char errmsg[256] = "";
    struct store_options opts = {"/proc/concord-no/such/dir", 0, 0};
    struct store *s = NULL;

    (void)state;
    assert_int_equal(store_open(&opts, &s, errmsg), STORE_IO);
    assert_null(s);
    assert_true(strlen(errmsg) > 0);
    opts.dir = "";
    assert_int_equal(store_open(&opts, &s, NULL), STORE_INVALID);
}

static void reopen_keeps_committed_data_and_drops_aborted(void **state)
{
    struct fixture *f = *state;
    struct store_txn *t = txn_write(f->s);
    Concord__User u, *got = NULL;

    user_make(&u, 1, "alice");
    assert_int_equal(store_user_put(t, &u), 0);
    assert_int_equal(store_applied_index_put(t, 7), 0);
    txn_commit(t);
    t = txn_write(f->s);
    user_make(&u, 2, "bob");
    assert_int_equal(store_user_put(t, &u), 0);
    store_txn_abort(t);

    fixture_reopen(f);
    t = txn_read(f->s);
    assert_int_equal(store_user_get(t, 1, &got), 0);
    assert_string_equal(got->name, "alice");
    store_record_free(got);
    assert_int_equal(store_user_get(t, 2, &got), STORE_NOTFOUND);
    {
        uint64_t applied = 0;

        assert_int_equal(store_applied_index_get(t, &applied), 0);
        assert_int_equal(applied, 7);
    }
    store_txn_abort(t);
}

static void open_refuses_a_newer_schema_version(void **state)
{
    struct fixture *f = *state;
    uint8_t newer[4];
    char errmsg[256] = "";
    struct store_options opts = {f->dir, FIXTURE_MAP_SIZE_BYTES, 0};

    store_close(f->s);
    f->s = NULL;
    store_be32_put(newer, STORE_SCHEMA_VERSION + 1);
    raw_put(f->dir, "meta", STORE_META_SCHEMA_VERSION, strlen(STORE_META_SCHEMA_VERSION), newer,
            sizeof newer);
    assert_int_equal(store_open(&opts, &f->s, errmsg), STORE_SCHEMA);
    assert_null(f->s);
    assert_non_null(strstr(errmsg, "schema version"));
}

static void applied_index_is_zero_until_set(void **state)
{
    struct fixture *f = *state;
    struct store_txn *t = txn_write(f->s);
    uint64_t applied = 99;

    assert_int_equal(store_applied_index_get(t, &applied), 0);
    assert_int_equal(applied, 0);
    assert_int_equal(store_applied_index_put(t, 12345678901234ULL), 0);
    assert_int_equal(store_applied_index_get(t, &applied), 0);
    assert_int_equal(applied, 12345678901234ULL);
    txn_commit(t);
}

static void next_id_counts_each_sequence_from_one_and_persists(void **state)
{
    struct fixture *f = *state;
    struct store_txn *t = txn_write(f->s);
    uint64_t id = 0;

    assert_int_equal(store_next_id(t, "user", &id), 0);
    assert_int_equal(id, 1);
    assert_int_equal(store_next_id(t, "user", &id), 0);
    assert_int_equal(id, 2);
    assert_int_equal(store_next_id(t, "node", &id), 0);
    assert_int_equal(id, 1);
    assert_int_equal(store_next_id(t, "", &id), STORE_INVALID);
    txn_commit(t);

    fixture_reopen(f);
    t = txn_write(f->s);
    assert_int_equal(store_next_id(t, "user", &id), 0);
    assert_int_equal(id, 3);
    txn_commit(t);
}

static void meta_values_round_trip_and_refuse_small_buffers(void **state)
{
    struct fixture *f = *state;
    struct store_txn *t = txn_write(f->s);
    uint8_t buf[16];
    size_t len = 0;

    assert_int_equal(store_meta_get(t, "cluster_uuid", buf, sizeof buf, &len), STORE_NOTFOUND);
    assert_int_equal(store_meta_put(t, "cluster_uuid", (const uint8_t *)"0123456789abcdef", 16), 0);
    assert_int_equal(store_meta_get(t, "cluster_uuid", buf, sizeof buf, &len), 0);
    assert_int_equal(len, 16);
    assert_memory_equal(buf, "0123456789abcdef", 16);
    assert_int_equal(store_meta_get(t, "cluster_uuid", buf, 4, &len), STORE_INVALID);
    assert_int_equal(len, 16);
    assert_int_equal(store_meta_put(t, "", buf, 1), STORE_INVALID);
    /* A value named like a counter does not touch the counter. */
    assert_int_equal(store_meta_put(t, "seq/user", (const uint8_t *)"x", 1), 0);
    {
        uint64_t id = 0;

        assert_int_equal(store_next_id(t, "user", &id), 0);
        assert_int_equal(id, 1);
    }
    txn_commit(t);
}

static void tiny_map_fills_up_with_store_full_and_keeps_committed_data(void **state)
{
    char dir[256], name[64];
    struct store_options opts = {dir, 64 << 10, 0};
    struct store *s = NULL;
    struct store_txn *t;
    Concord__User u, *got = NULL;
    uint64_t committed = 0;
    int rv = 0;

    (void)state;
    assert_int_equal(testdir_make(dir, sizeof dir), 0);
    assert_int_equal(store_open(&opts, &s, NULL), 0);
    for (uint64_t id = 1; id < 100000 && rv == 0; id++) {
        t = txn_write(s);
        for (int i = 0; i < 10 && rv == 0; i++) {
            snprintf(name, sizeof name, "user-with-a-long-name-%08llu-%d", (unsigned long long)id,
                     i);
            user_make(&u, id * 10 + (uint64_t)i, name);
            rv = store_user_put(t, &u);
        }
        if (rv == 0) {
            txn_commit(t);
            committed = id;
        } else {
            /* The poisoned transaction refuses to commit with the same code. */
            assert_int_equal(rv, STORE_FULL);
            assert_true(strlen(store_txn_errmsg(t)) > 0);
            assert_int_equal(store_txn_commit(t), STORE_FULL);
            assert_true(strlen(store_errmsg(s)) > 0);
        }
    }
    assert_int_equal(rv, STORE_FULL);
    assert_true(committed > 0);
    t = txn_read(s);
    assert_int_equal(store_user_get(t, committed * 10, &got), 0);
    store_record_free(got);
    store_txn_abort(t);
    store_close(s);
    testdir_remove(dir);
}

static void get_of_a_damaged_record_is_store_corrupt(void **state)
{
    struct fixture *f = *state;
    struct store_txn *t;
    Concord__User *got = NULL;
    uint8_t key[8];
    const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0x0f};

    store_close(f->s);
    f->s = NULL;
    store_be64_put(key, 5);
    raw_put(f->dir, "users", key, sizeof key, garbage, sizeof garbage);
    fixture_reopen(f);
    t = txn_read(f->s);
    assert_int_equal(store_user_get(t, 5, &got), STORE_CORRUPT);
    assert_non_null(strstr(store_txn_errmsg(t), "User"));
    store_txn_abort(t);
}

static void record_under_a_foreign_key_is_store_corrupt(void **state)
{
    struct fixture *f = *state;
    struct store_txn *t;
    Concord__User u, *got = NULL;
    uint8_t key[8], packed[64];
    size_t n;

    user_make(&u, 6, "mallory");
    n = concord__user__pack(&u, packed);
    store_close(f->s);
    f->s = NULL;
    store_be64_put(key, 5);
    raw_put(f->dir, "users", key, sizeof key, packed, n);
    fixture_reopen(f);
    t = txn_read(f->s);
    assert_int_equal(store_user_get(t, 5, &got), STORE_CORRUPT);
    store_txn_abort(t);
}

static void backup_copy_opens_with_the_same_state(void **state)
{
    struct fixture *f = *state;
    char base[256], copy_dir[300];
    struct store_options opts = {copy_dir, FIXTURE_MAP_SIZE_BYTES, 0};
    struct store *copy = NULL;
    uint8_t h1[32], h2[32];
    struct store_txn *t;
    Concord__User *got = NULL;

    state_populate(f->s, 1);
    assert_int_equal(testdir_make(base, sizeof base), 0);
    snprintf(copy_dir, sizeof copy_dir, "%s/backup", base);
    assert_int_equal(store_backup_copy(f->s, copy_dir), 0);
    assert_int_equal(store_open(&opts, &copy, NULL), 0);
    state_hash_of(f->s, h1);
    state_hash_of(copy, h2);
    assert_memory_equal(h1, h2, 32);
    t = txn_read(copy);
    assert_int_equal(store_user_get_by_name(t, "user-1-2", &got), 0);
    store_record_free(got);
    store_txn_abort(t);
    store_close(copy);
    testdir_remove(base);
}

static void backup_copy_refuses_a_non_empty_directory(void **state)
{
    struct fixture *f = *state;
    char base[256], path[300];
    FILE *fp;

    assert_int_equal(testdir_make(base, sizeof base), 0);
    /* An existing empty directory is fine. */
    assert_int_equal(store_backup_copy(f->s, base), 0);
    assert_int_equal(store_backup_copy(f->s, base), STORE_EXISTS);
    assert_non_null(strstr(store_errmsg(f->s), "not empty"));
    snprintf(path, sizeof path, "%s/file", base);
    fp = fopen(path, "w");
    assert_non_null(fp);
    fclose(fp);
    assert_int_equal(store_backup_copy(f->s, path), STORE_IO);
    testdir_remove(base);
}

static void readers_beyond_max_readers_get_store_readers(void **state)
{
    char dir[256];
    struct store_options opts = {dir, FIXTURE_MAP_SIZE_BYTES, 2};
    struct store *s = NULL;
    struct store_txn *r1, *r2, *r3 = NULL;

    (void)state;
    assert_int_equal(testdir_make(dir, sizeof dir), 0);
    assert_int_equal(store_open(&opts, &s, NULL), 0);
    r1 = txn_read(s);
    r2 = txn_read(s);
    assert_int_equal(store_txn_begin(s, false, &r3), STORE_READERS);
    assert_null(r3);
    store_txn_abort(r2);
    r3 = txn_read(s);
    store_txn_abort(r3);
    store_txn_abort(r1);
    assert_int_equal(store_sync(s), 0);
    store_close(s);
    testdir_remove(dir);
}

static void strerror_names_every_code(void **state)
{
    (void)state;
    assert_string_equal(store_strerror(STORE_OK), "ok");
    assert_string_equal(store_strerror(STORE_FULL), "database map is full");
    assert_string_equal(store_strerror(STORE_READERS), "too many readers");
    assert_string_equal(store_strerror(-1), "unknown storage error");
}

int test_store_run(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(open_with_default_options_creates_the_directory),
        cmocka_unit_test(open_fails_with_message_when_directory_cannot_exist),
        cmocka_unit_test_setup_teardown(reopen_keeps_committed_data_and_drops_aborted,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(open_refuses_a_newer_schema_version, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(applied_index_is_zero_until_set, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(next_id_counts_each_sequence_from_one_and_persists,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(meta_values_round_trip_and_refuse_small_buffers,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test(tiny_map_fills_up_with_store_full_and_keeps_committed_data),
        cmocka_unit_test_setup_teardown(get_of_a_damaged_record_is_store_corrupt, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(record_under_a_foreign_key_is_store_corrupt, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(backup_copy_opens_with_the_same_state, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(backup_copy_refuses_a_non_empty_directory, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test(readers_beyond_max_readers_get_store_readers),
        cmocka_unit_test(strerror_names_every_code),
    };

    return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
