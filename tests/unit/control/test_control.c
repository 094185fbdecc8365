/* tests/unit/control/test_control.c: the uint64 -> uint64 map of
 * server/control (idmap.c): put, get, overwrite and delete, the backward
 * shift of deletion inside runs of colliding keys (home slots are learnt
 * through the public struct, not by copying the hash), growth to 100k
 * entries, and a long pseudo-random mix of operations checked against a
 * plain reference array. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "server/control/control_internal.h"

#define FIRST_CAP 16u

/* xorshift64: a fixed sequence, so a failure replays exactly. */
static uint64_t next_random(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static uint64_t value_of(uint64_t key)
{
    return key * 0x9e3779b97f4a7c15ULL + 1;
}

static void assert_entry(const struct ctl_idmap *m, uint64_t key, uint64_t want)
{
    uint64_t got = 0;

    if (!ctl_idmap_get(m, key, &got))
        fail_msg("key %llu is missing", (unsigned long long)key);
    assert_int_equal(got, want);
}

static void assert_no_entry(const struct ctl_idmap *m, uint64_t key)
{
    uint64_t got = 0xdead;

    if (ctl_idmap_get(m, key, &got))
        fail_msg("key %llu is present", (unsigned long long)key);
    assert_int_equal(got, 0xdead); /* untouched on a miss */
}

/* The slot a key takes in an empty map of the first capacity. */
static size_t home_slot(uint64_t key)
{
    struct ctl_idmap m = {0};
    size_t slot = FIRST_CAP;

    assert_int_equal(ctl_idmap_put(&m, key, 1), 0);
    assert_int_equal(m.cap, FIRST_CAP);
    for (size_t i = 0; i < m.cap; i++) {
        if (m.keys[i] == key)
            slot = i;
    }
    ctl_idmap_free(&m);
    assert_true(slot < FIRST_CAP);
    return slot;
}

/* Linear probing's invariant: every slot from a key's home to where it sits
 * is occupied (a hole there would hide it from get). */
static void check_probe_invariant(const struct ctl_idmap *m, const uint64_t *keys,
                                  const size_t *homes, size_t n)
{
    size_t occupied = 0;

    assert_int_equal(m->cap, FIRST_CAP);
    for (size_t i = 0; i < m->cap; i++)
        occupied += m->keys[i] != 0;
    assert_int_equal(occupied, m->n);
    for (size_t k = 0; k < n; k++) {
        size_t at = FIRST_CAP;

        for (size_t i = 0; i < m->cap; i++) {
            if (m->keys[i] == keys[k])
                at = i;
        }
        if (at == FIRST_CAP)
            continue; /* deleted */
        for (size_t i = homes[k]; i != at; i = (i + 1) % FIRST_CAP)
            assert_int_not_equal(m->keys[i], 0);
    }
}

static void empty_map_finds_nothing_and_frees(void **state)
{
    struct ctl_idmap m = {0};

    (void)state;
    assert_no_entry(&m, 1);
    ctl_idmap_del(&m, 1);
    assert_int_equal(m.n, 0);
    ctl_idmap_free(&m);
    ctl_idmap_free(&m);
    assert_null(m.keys);
}

static void put_get_overwrite_delete(void **state)
{
    struct ctl_idmap m = {0};

    (void)state;
    assert_int_equal(ctl_idmap_put(&m, 7, 70), 0);
    assert_int_equal(ctl_idmap_put(&m, UINT64_MAX, 1), 0);
    assert_int_equal(ctl_idmap_put(&m, 9, 0), 0); /* 0 is a valid value */
    assert_int_equal(m.n, 3);
    assert_int_equal(m.cap, FIRST_CAP);
    assert_entry(&m, 7, 70);
    assert_entry(&m, UINT64_MAX, 1);
    assert_entry(&m, 9, 0);
    assert_no_entry(&m, 8);

    assert_int_equal(ctl_idmap_put(&m, 7, 71), 0);
    assert_int_equal(m.n, 3);
    assert_entry(&m, 7, 71);

    ctl_idmap_del(&m, 8); /* absent: no change */
    assert_int_equal(m.n, 3);
    ctl_idmap_del(&m, 7);
    assert_int_equal(m.n, 2);
    assert_no_entry(&m, 7);
    assert_entry(&m, UINT64_MAX, 1);
    assert_entry(&m, 9, 0);
    ctl_idmap_del(&m, 7);
    assert_int_equal(m.n, 2);

    assert_int_equal(ctl_idmap_put(&m, 7, 72), 0);
    assert_int_equal(m.n, 3);
    assert_entry(&m, 7, 72);
    ctl_idmap_free(&m);
    assert_null(m.keys);
    assert_null(m.vals);
    assert_int_equal(m.cap, 0);
    assert_int_equal(m.n, 0);
    assert_no_entry(&m, 7);
}

static void key_zero_is_rejected(void **state)
{
    struct ctl_idmap m = {0};

    (void)state;
    assert_int_equal(ctl_idmap_put(&m, 0, 5), -1);
    assert_int_equal(m.n, 0);
    assert_int_equal(ctl_idmap_put(&m, 3, 30), 0);
    assert_int_equal(ctl_idmap_put(&m, 0, 5), -1);
    assert_int_equal(m.n, 1);
    assert_no_entry(&m, 0);
    ctl_idmap_del(&m, 0);
    assert_int_equal(m.n, 1);
    assert_entry(&m, 3, 30);
    ctl_idmap_free(&m);
}

/* Eight keys (the most a first-capacity map holds) whose homes are 14, 15
 * and 0: one run that wraps around the end of the table. */
#define RUN_KEYS 8

static void find_colliding_keys(uint64_t keys[RUN_KEYS], size_t homes[RUN_KEYS])
{
    static const size_t wanted[RUN_KEYS] = {15, 15, 15, 14, 0, 15, 0, 14};
    bool is_taken[RUN_KEYS] = {false};
    size_t found = 0;

    for (uint64_t key = 1; found < RUN_KEYS; key++) {
        size_t home = home_slot(key);

        assert_true(key < 100000);
        for (size_t k = 0; k < RUN_KEYS; k++) {
            if (!is_taken[k] && wanted[k] == home) {
                is_taken[k] = true;
                keys[k] = key;
                homes[k] = home;
                found++;
                break;
            }
        }
    }
}

static void fill_run(struct ctl_idmap *m, const uint64_t keys[RUN_KEYS],
                     const size_t homes[RUN_KEYS])
{
    for (size_t k = 0; k < RUN_KEYS; k++)
        assert_int_equal(ctl_idmap_put(m, keys[k], value_of(keys[k])), 0);
    assert_int_equal(m->n, RUN_KEYS);
    check_probe_invariant(m, keys, homes, RUN_KEYS);
}

static void check_run(const struct ctl_idmap *m, const uint64_t keys[RUN_KEYS],
                      const bool is_deleted[RUN_KEYS])
{
    for (size_t k = 0; k < RUN_KEYS; k++) {
        if (is_deleted[k])
            assert_no_entry(m, keys[k]);
        else
            assert_entry(m, keys[k], value_of(keys[k]));
    }
}

static void deletion_shifts_back_a_wrapping_run(void **state)
{
    uint64_t keys[RUN_KEYS];
    size_t homes[RUN_KEYS];
    uint64_t seed = 0x1234567887654321ULL;

    (void)state;
    find_colliding_keys(keys, homes);
    /* Any one key out of the full run. */
    for (size_t del = 0; del < RUN_KEYS; del++) {
        struct ctl_idmap m = {0};
        bool is_deleted[RUN_KEYS] = {false};

        fill_run(&m, keys, homes);
        ctl_idmap_del(&m, keys[del]);
        is_deleted[del] = true;
        assert_int_equal(m.n, RUN_KEYS - 1);
        check_probe_invariant(&m, keys, homes, RUN_KEYS);
        check_run(&m, keys, is_deleted);
        ctl_idmap_free(&m);
    }
    /* All of them, in many orders, re-inserting some on the way. */
    for (int round = 0; round < 200; round++) {
        struct ctl_idmap m = {0};
        bool is_deleted[RUN_KEYS] = {false};
        size_t left = RUN_KEYS;

        fill_run(&m, keys, homes);
        while (left > 0) {
            size_t k = (size_t)(next_random(&seed) % RUN_KEYS);

            if (is_deleted[k] && next_random(&seed) % 4 == 0) {
                assert_int_equal(ctl_idmap_put(&m, keys[k], value_of(keys[k])), 0);
                is_deleted[k] = false;
                left++;
            } else if (!is_deleted[k]) {
                ctl_idmap_del(&m, keys[k]);
                is_deleted[k] = true;
                left--;
            }
            assert_int_equal(m.n, left);
            check_probe_invariant(&m, keys, homes, RUN_KEYS);
            check_run(&m, keys, is_deleted);
        }
        ctl_idmap_free(&m);
    }
}

#define MANY 100000u

static uint64_t many_key(uint64_t i)
{
    return i * 0x100000001b3ULL + 1; /* distinct, spread over 64 bits */
}

static void grows_to_a_hundred_thousand_entries(void **state)
{
    struct ctl_idmap m = {0};

    (void)state;
    for (uint64_t i = 0; i < MANY; i++) {
        assert_int_equal(ctl_idmap_put(&m, many_key(i), value_of(i)), 0);
        assert_true(m.n * 2 <= m.cap);
    }
    assert_int_equal(m.n, MANY);
    assert_int_equal(m.cap & (m.cap - 1), 0);
    assert_int_equal(m.cap, 262144); /* the smallest power of two >= 2n */
    for (uint64_t i = 0; i < MANY; i++)
        assert_entry(&m, many_key(i), value_of(i));
    assert_no_entry(&m, many_key(MANY));

    for (uint64_t i = 1; i < MANY; i += 2)
        ctl_idmap_del(&m, many_key(i));
    assert_int_equal(m.n, MANY / 2);
    for (uint64_t i = 0; i < MANY; i++) {
        if (i % 2 == 0)
            assert_entry(&m, many_key(i), value_of(i));
        else
            assert_no_entry(&m, many_key(i));
    }
    ctl_idmap_free(&m);
    assert_null(m.keys);
    assert_int_equal(m.cap, 0);
    assert_int_equal(m.n, 0);
}

/* A small key universe keeps the map crowded with collisions, deletions and
 * re-insertions; a few keys far apart in 64 bits join it. */
#define UNIVERSE 600u
#define STEPS    300000u

static uint64_t universe_key(size_t i)
{
    return i % 50 == 49 ? UINT64_MAX - i : i + 1;
}

static void check_reference(const struct ctl_idmap *m, const bool *present, const uint64_t *vals)
{
    size_t n = 0;

    for (size_t i = 0; i < UNIVERSE; i++) {
        if (present[i]) {
            assert_entry(m, universe_key(i), vals[i]);
            n++;
        } else {
            assert_no_entry(m, universe_key(i));
        }
    }
    assert_int_equal(m->n, n);
}

static void random_operations_match_a_reference_array(void **state)
{
    struct ctl_idmap m = {0};
    bool present[UNIVERSE] = {false};
    uint64_t vals[UNIVERSE] = {0};
    uint64_t seed = 0x9e3779b97f4a7c15ULL;

    (void)state;
    for (size_t step = 0; step < STEPS; step++) {
        uint64_t r = next_random(&seed);
        /* The universe's used part widens and narrows, so the map both
         * grows and lives on half empty with long-deleted runs. */
        size_t span = 8 + (step / 1000) % 8 * (UNIVERSE / 8);
        size_t i = (size_t)((r >> 8) % (span < UNIVERSE ? span : UNIVERSE));
        uint64_t key = universe_key(i);
        unsigned op = (unsigned)(r % 100);

        if (op < 45) {
            assert_int_equal(ctl_idmap_put(&m, key, r), 0);
            present[i] = true;
            vals[i] = r;
        } else if (op < 85) {
            ctl_idmap_del(&m, key);
            present[i] = false;
        } else if (present[i]) {
            assert_entry(&m, key, vals[i]);
        } else {
            assert_no_entry(&m, key);
        }
        if (step % 997 == 0)
            check_reference(&m, present, vals);
    }
    check_reference(&m, present, vals);
    ctl_idmap_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(empty_map_finds_nothing_and_frees),
        cmocka_unit_test(put_get_overwrite_delete),
        cmocka_unit_test(key_zero_is_rejected),
        cmocka_unit_test(deletion_shifts_back_a_wrapping_run),
        cmocka_unit_test(grows_to_a_hundred_thousand_entries),
        cmocka_unit_test(random_operations_match_a_reference_array),
    };

    return cmocka_run_group_tests_name("control_idmap", tests, NULL, NULL);
}
