/* tests/unit/storage/test_dump.c: dump, load and the state hash, and the
 * de-duplication table that travels with them. */
#include "tests/unit/storage/storage_tests.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "storage/store_internal.h"
#include "tests/lib/testdir.h"

#define HEADER_BYTES   20
#define CHECKSUM_BYTES 32

struct two_stores {
    struct fixture a;
    struct fixture b;
};

static int two_setup(void **state)
{
    struct two_stores *two = calloc(1, sizeof *two);
    void *fa, *fb;

    assert_non_null(two);
    fixture_setup(&fa);
    fixture_setup(&fb);
    two->a = *(struct fixture *)fa;
    two->b = *(struct fixture *)fb;
    free(fa);
    free(fb);
    *state = two;
    return 0;
}

static int two_teardown(void **state)
{
    struct two_stores *two = *state;

    store_close(two->a.s);
    testdir_remove(two->a.dir);
    store_close(two->b.s);
    testdir_remove(two->b.dir);
    free(two);
    return 0;
}

static void dump_of(struct store *s, uint8_t **out, size_t *len)
{
    struct store_txn *t = txn_read(s);

    assert_int_equal(store_dump(t, out, len), 0);
    store_txn_abort(t);
}

/* Recomputes the trailing checksum after a test edited the body. */
static void checksum_fix(uint8_t *dump, size_t len)
{
    crypto_generichash(dump + len - CHECKSUM_BYTES, CHECKSUM_BYTES, dump, len - CHECKSUM_BYTES,
                       NULL, 0);
}

static int load_into(struct store *s, const uint8_t *dump, size_t len, uint64_t *applied)
{
    struct store_txn *t = txn_write(s);
    int rv = store_load(t, dump, len, applied);

    /* A refused load leaves the transaction fit to commit. */
    txn_commit(t);
    return rv;
}

static void dump_then_load_reproduces_the_state_on_another_store(void **state)
{
    struct two_stores *two = *state;
    uint8_t *dump;
    size_t len;
    uint64_t applied = 0, id = 0;
    uint8_t ha[32], hb[32], request_id[16], *result;
    size_t result_len;
    struct store_txn *t;
    Concord__User *u = NULL;
    Concord__Node *n = NULL;
    struct node_bufs nb;
    Concord__Node probe;

    state_populate(two->a.s, 1);
    state_populate(two->b.s, 2); /* everything of b must go */
    dump_of(two->a.s, &dump, &len);
    assert_int_equal(load_into(two->b.s, dump, len, &applied), 0);
    assert_int_equal(applied, 41);
    state_hash_of(two->a.s, ha);
    state_hash_of(two->b.s, hb);
    assert_memory_equal(ha, hb, 32);

    t = txn_write(two->b.s);
    assert_int_equal(store_applied_index_get(t, &applied), 0);
    assert_int_equal(applied, 41);
    /* Indexes were rebuilt, and b's own are gone. */
    assert_int_equal(store_user_get_by_name(t, "user-1-3", &u), 0);
    store_record_free(u);
    assert_int_equal(store_user_get_by_name(t, "user-2-3", &u), STORE_NOTFOUND);
    node_make(&probe, &nb, 1, 1 * 4 + 2);
    assert_int_equal(store_node_get_by_ip(t, nb.ipv6, 16, &n), 0);
    store_record_free(n);
    node_make(&probe, &nb, 1, 2 * 4 + 2);
    assert_int_equal(store_node_get_by_node_key(t, nb.node_key, &n), STORE_NOTFOUND);
    /* Sequences continue where a left off. */
    assert_int_equal(store_next_id(t, "user", &id), 0);
    assert_int_equal(id, 4);
    /* De-duplication entries travel too; b's are gone. */
    memset(request_id, 1, sizeof request_id);
    assert_int_equal(store_dedup_get(t, request_id, &result, &result_len), 0);
    assert_int_equal(result_len, 6);
    assert_memory_equal(result, "result", 6);
    free(result);
    memset(request_id, 2, sizeof request_id);
    assert_int_equal(store_dedup_get(t, request_id, &result, &result_len), STORE_NOTFOUND);
    store_txn_abort(t);
    free(dump);
}

static void load_keeps_local_meta_values(void **state)
{
    struct two_stores *two = *state;
    struct store_txn *t = txn_write(two->b.s);
    uint8_t *dump, buf[8];
    size_t len, vlen = 0;
    uint64_t applied;

    assert_int_equal(store_meta_put(t, "node_id", (const uint8_t *)"b", 1), 0);
    txn_commit(t);
    state_populate(two->a.s, 1);
    dump_of(two->a.s, &dump, &len);
    assert_int_equal(load_into(two->b.s, dump, len, &applied), 0);
    t = txn_read(two->b.s);
    assert_int_equal(store_meta_get(t, "node_id", buf, sizeof buf, &vlen), 0);
    assert_int_equal(vlen, 1);
    assert_int_equal(buf[0], 'b');
    store_txn_abort(t);
    free(dump);
}

static void empty_store_dumps_and_loads(void **state)
{
    struct two_stores *two = *state;
    uint8_t *dump, ha[32], hb[32];
    size_t len;
    uint64_t applied = 9;

    dump_of(two->a.s, &dump, &len);
    assert_int_equal(len, HEADER_BYTES + CHECKSUM_BYTES);
    state_populate(two->b.s, 2);
    assert_int_equal(load_into(two->b.s, dump, len, &applied), 0);
    assert_int_equal(applied, 0);
    state_hash_of(two->a.s, ha);
    state_hash_of(two->b.s, hb);
    assert_memory_equal(ha, hb, 32);
    free(dump);
}

/* Every damaged variant is refused with the code given, changing nothing. */
static void load_expect_refusal(struct store *s, const uint8_t *dump, size_t len, int code)
{
    uint8_t before[32], after[32];
    uint64_t applied = 777;

    state_hash_of(s, before);
    assert_int_equal(load_into(s, dump, len, &applied), code);
    assert_int_equal(applied, 777);
    state_hash_of(s, after);
    assert_memory_equal(before, after, 32);
}

static void load_refuses_truncated_or_damaged_dumps_and_changes_nothing(void **state)
{
    struct two_stores *two = *state;
    uint8_t *dump, *copy;
    size_t len;

    state_populate(two->a.s, 1);
    state_populate(two->b.s, 2);
    dump_of(two->a.s, &dump, &len);
    copy = malloc(len);
    assert_non_null(copy);

    load_expect_refusal(two->b.s, NULL, 0, STORE_CORRUPT);
    for (size_t cut = 0; cut < len; cut += (cut < 64 ? 1 : 37))
        load_expect_refusal(two->b.s, dump, cut, STORE_CORRUPT);
    for (size_t at = 0; at < len; at += 11) {
        memcpy(copy, dump, len);
        copy[at] ^= 0x20;
        load_expect_refusal(two->b.s, copy, len, at >= 8 && at < 12 ? STORE_SCHEMA : STORE_CORRUPT);
    }
    /* A dump one byte longer with a valid checksum: a record overruns. */
    {
        uint8_t *longer = malloc(len + 1);

        assert_non_null(longer);
        memcpy(longer, dump, len - CHECKSUM_BYTES);
        longer[len - CHECKSUM_BYTES] = STORE_TABLE_USERS;
        checksum_fix(longer, len + 1);
        load_expect_refusal(two->b.s, longer, len + 1, STORE_CORRUPT);
        free(longer);
    }
    free(copy);
    free(dump);
}

static void load_refuses_a_newer_format_version(void **state)
{
    struct two_stores *two = *state;
    uint8_t *dump;
    size_t len;

    dump_of(two->a.s, &dump, &len);
    store_be32_put(dump + 8, 2);
    checksum_fix(dump, len);
    load_expect_refusal(two->b.s, dump, len, STORE_SCHEMA);
    free(dump);
}

/* Builds a dump by hand: header, the given records, checksum. */
struct dump_builder {
    uint8_t buf[4096];
    size_t len;
};

static void builder_start(struct dump_builder *b, uint64_t applied)
{
    memcpy(b->buf, "CNCDDUMP", 8);
    store_be32_put(b->buf + 8, 1);
    store_be64_put(b->buf + 12, applied);
    b->len = HEADER_BYTES;
}

static void builder_add(struct dump_builder *b, uint8_t table, const void *key, size_t key_len,
                        const void *val, size_t val_len)
{
    assert_true(b->len + 9 + key_len + val_len + CHECKSUM_BYTES <= sizeof b->buf);
    b->buf[b->len++] = table;
    store_be32_put(b->buf + b->len, (uint32_t)key_len);
    b->len += 4;
    memcpy(b->buf + b->len, key, key_len);
    b->len += key_len;
    store_be32_put(b->buf + b->len, (uint32_t)val_len);
    b->len += 4;
    memcpy(b->buf + b->len, val, val_len);
    b->len += val_len;
}

static void builder_add_user(struct dump_builder *b, uint64_t key_id, uint64_t id, const char *name)
{
    Concord__User u;
    uint8_t key[8], packed[128];
    size_t n;

    user_make(&u, id, name);
    n = concord__user__pack(&u, packed);
    store_be64_put(key, key_id);
    builder_add(b, STORE_TABLE_USERS, key, sizeof key, packed, n);
}

static void builder_finish(struct dump_builder *b)
{
    b->len += CHECKSUM_BYTES;
    checksum_fix(b->buf, b->len);
}

static void load_refuses_well_framed_dumps_that_break_record_rules(void **state)
{
    struct two_stores *two = *state;
    struct store *s = two->b.s;
    struct dump_builder b;
    uint64_t applied = 0;
    const uint8_t garbage[] = {0xff, 0xff, 0xff};
    uint8_t key[8], zero8[8] = {0};

    state_populate(s, 2);

    /* Control: a hand-built valid dump loads. */
    builder_start(&b, 5);
    builder_add_user(&b, 1, 1, "alice");
    builder_finish(&b);
    state_populate(two->a.s, 3);
    assert_int_equal(load_into(two->a.s, b.buf, b.len, &applied), 0);
    assert_int_equal(applied, 5);

    builder_start(&b, 5); /* two users with one name */
    builder_add_user(&b, 1, 1, "alice");
    builder_add_user(&b, 2, 2, "alice");
    builder_finish(&b);
    load_expect_refusal(s, b.buf, b.len, STORE_CORRUPT);

    builder_start(&b, 5); /* the same key twice */
    builder_add_user(&b, 1, 1, "alice");
    builder_add_user(&b, 1, 1, "alice");
    builder_finish(&b);
    load_expect_refusal(s, b.buf, b.len, STORE_CORRUPT);

    builder_start(&b, 5); /* a record under another record's key */
    builder_add_user(&b, 2, 1, "alice");
    builder_finish(&b);
    load_expect_refusal(s, b.buf, b.len, STORE_CORRUPT);

    builder_start(&b, 5); /* a value that does not unpack */
    store_be64_put(key, 1);
    builder_add(&b, STORE_TABLE_USERS, key, sizeof key, garbage, sizeof garbage);
    builder_finish(&b);
    load_expect_refusal(s, b.buf, b.len, STORE_CORRUPT);

    builder_start(&b, 5); /* a record failing validation (id 0) */
    builder_add_user(&b, 0, 0, "alice");
    builder_finish(&b);
    load_expect_refusal(s, b.buf, b.len, STORE_CORRUPT);

    builder_start(&b, 5); /* an index table, which dumps never hold */
    builder_add(&b, STORE_TABLE_USERS_BY_NAME, "alice", 5, key, sizeof key);
    builder_finish(&b);
    load_expect_refusal(s, b.buf, b.len, STORE_CORRUPT);

    builder_start(&b, 5); /* an unknown table id */
    builder_add(&b, 200, "k", 1, "v", 1);
    builder_finish(&b);
    load_expect_refusal(s, b.buf, b.len, STORE_CORRUPT);

    builder_start(&b, 5); /* a meta entry that is not a counter */
    builder_add(&b, STORE_TABLE_META, "schema_version", 14, zero8, 4);
    builder_finish(&b);
    load_expect_refusal(s, b.buf, b.len, STORE_CORRUPT);

    builder_start(&b, 5); /* an empty key */
    builder_add(&b, STORE_TABLE_REGISTRATIONS, "", 0, "", 0);
    builder_finish(&b);
    load_expect_refusal(s, b.buf, b.len, STORE_CORRUPT);

    builder_start(&b, 5); /* a de-duplication entry without its index */
    builder_add(&b, STORE_TABLE_DEDUP, "0123456789abcdef", 16, zero8, 7);
    builder_finish(&b);
    load_expect_refusal(s, b.buf, b.len, STORE_CORRUPT);
}

static void state_hash_ignores_applied_index_and_dedup_but_sees_records(void **state)
{
    struct fixture *f = *state;
    uint8_t h0[32], h1[32], request_id[16] = {7};
    struct store_txn *t;
    Concord__User u;

    state_hash_of(f->s, h0);
    t = txn_write(f->s);
    assert_int_equal(store_applied_index_put(t, 99), 0);
    assert_int_equal(store_dedup_put(t, request_id, 99, (const uint8_t *)"r", 1), 0);
    assert_int_equal(store_meta_put(t, "node_id", (const uint8_t *)"1", 1), 0);
    txn_commit(t);
    state_hash_of(f->s, h1);
    assert_memory_equal(h0, h1, 32);

    t = txn_write(f->s);
    user_make(&u, 1, "alice");
    assert_int_equal(store_user_put(t, &u), 0);
    txn_commit(t);
    state_hash_of(f->s, h1);
    assert_memory_not_equal(h0, h1, 32);
    memcpy(h0, h1, 32);

    t = txn_write(f->s);
    u.email = "other@example.com";
    assert_int_equal(store_user_put(t, &u), 0);
    txn_commit(t);
    state_hash_of(f->s, h1);
    assert_memory_not_equal(h0, h1, 32);
    memcpy(h0, h1, 32);

    t = txn_write(f->s);
    {
        uint64_t id;

        assert_int_equal(store_next_id(t, "user", &id), 0);
    }
    txn_commit(t);
    state_hash_of(f->s, h1);
    assert_memory_not_equal(h0, h1, 32);
}

static void state_hash_does_not_depend_on_write_order(void **state)
{
    struct two_stores *two = *state;
    uint8_t ha[32], hb[32];
    struct store_txn *t;
    Concord__User u;

    t = txn_write(two->a.s);
    user_make(&u, 1, "alice");
    assert_int_equal(store_user_put(t, &u), 0);
    user_make(&u, 2, "bob");
    assert_int_equal(store_user_put(t, &u), 0);
    txn_commit(t);

    t = txn_write(two->b.s);
    user_make(&u, 2, "robert");
    assert_int_equal(store_user_put(t, &u), 0);
    txn_commit(t);
    t = txn_write(two->b.s);
    user_make(&u, 1, "alice");
    assert_int_equal(store_user_put(t, &u), 0);
    user_make(&u, 2, "bob");
    assert_int_equal(store_user_put(t, &u), 0);
    txn_commit(t);

    state_hash_of(two->a.s, ha);
    state_hash_of(two->b.s, hb);
    assert_memory_equal(ha, hb, 32);
}

static void dedup_remembers_results_until_trimmed(void **state)
{
    struct fixture *f = *state;
    struct store_txn *t = txn_write(f->s);
    uint8_t ids[5][16], *result = NULL;
    size_t len = 0;

    for (int i = 0; i < 5; i++) {
        memset(ids[i], 0xa0 + i, 16);
        assert_int_equal(store_dedup_put(t, ids[i], (uint64_t)(10 + i), (const uint8_t *)"ok", 2),
                         0);
    }
    /* An empty result is a result. */
    assert_int_equal(store_dedup_put(t, ids[4], 14, NULL, 0), 0);
    assert_int_equal(store_dedup_get(t, ids[4], &result, &len), 0);
    assert_int_equal(len, 0);
    free(result);
    /* Re-recording moves the entry to its new index. */
    assert_int_equal(store_dedup_put(t, ids[0], 20, (const uint8_t *)"again", 5), 0);
    txn_commit(t);

    t = txn_write(f->s);
    assert_int_equal(store_dedup_trim(t, 13), 0);
    assert_int_equal(store_dedup_get(t, ids[1], &result, &len), STORE_NOTFOUND);
    assert_int_equal(store_dedup_get(t, ids[2], &result, &len), STORE_NOTFOUND);
    assert_int_equal(store_dedup_get(t, ids[3], &result, &len), 0);
    assert_int_equal(len, 2);
    assert_memory_equal(result, "ok", 2);
    free(result);
    assert_int_equal(store_dedup_get(t, ids[0], &result, &len), 0);
    assert_int_equal(len, 5);
    free(result);
    assert_int_equal(store_dedup_trim(t, 21), 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(store_dedup_get(t, ids[i], &result, &len), STORE_NOTFOUND);
    assert_int_equal(store_dedup_trim(t, 100), 0);
    txn_commit(t);
}

int test_dump_run(void)
{
#define T2(name) cmocka_unit_test_setup_teardown(name, two_setup, two_teardown)
#define T1(name) cmocka_unit_test_setup_teardown(name, fixture_setup, fixture_teardown)
    const struct CMUnitTest tests[] = {
        T2(dump_then_load_reproduces_the_state_on_another_store),
        T2(load_keeps_local_meta_values),
        T2(empty_store_dumps_and_loads),
        T2(load_refuses_truncated_or_damaged_dumps_and_changes_nothing),
        T2(load_refuses_a_newer_format_version),
        T2(load_refuses_well_framed_dumps_that_break_record_rules),
        T1(state_hash_ignores_applied_index_and_dedup_but_sees_records),
        T2(state_hash_does_not_depend_on_write_order),
        T1(dedup_remembers_results_until_trimmed),
    };
#undef T1
#undef T2

    return cmocka_run_group_tests_name("dump", tests, NULL, NULL);
}
