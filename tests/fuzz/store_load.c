/* tests/fuzz/store_load.c: arbitrary bytes into store_load on a scratch store.
 * Each input is tried twice: as given, and with its last 32 bytes replaced by
 * the correct checksum, since a mutator can never forge BLAKE2b and would
 * otherwise only reach the header checks. Properties checked: a refused load
 * changes nothing (same state hash, same applied index), and an accepted one
 * dumps back to bytes that load to the same state. The store is opened once
 * per process and every input runs in a write transaction that is aborted,
 * so inputs never see each other. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "storage/store.h"
#include "tests/lib/testdir.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct scratch {
    char dir[256];
    struct store *s;
};

/* The fuzzer calls in one process with no teardown hook: the scratch store
 * lives for the process, and atexit removes its directory. */
static struct scratch scratch;

static void scratch_remove(void)
{
    store_close(scratch.s);
    testdir_remove(scratch.dir);
}

static void scratch_open(void)
{
    struct store_options opts = {scratch.dir, 64ULL << 20, 0};
    struct store_txn *t;
    Concord__User u = CONCORD__USER__INIT;

    if (testdir_make(scratch.dir, sizeof scratch.dir) != 0 ||
        store_open(&opts, &scratch.s, NULL) != 0)
        abort();
    atexit(scratch_remove);
    /* Some state, so "changes nothing" can be told from "emptied it". */
    u.id = 1;
    u.name = "fuzz";
    if (store_txn_begin(scratch.s, true, &t) != 0 || store_user_put(t, &u) != 0 ||
        store_applied_index_put(t, 3) != 0 || store_txn_commit(t) != 0)
        abort();
}

static void hash_and_index(struct store_txn *t, uint8_t hash[32], uint64_t *applied)
{
    if (store_state_hash(t, hash) != 0 || store_applied_index_get(t, applied) != 0)
        abort();
}

static void load_one(const uint8_t *data, size_t size)
{
    struct store_txn *t;
    uint8_t before[32], after[32];
    uint64_t applied_before, applied_after, loaded = 0;
    uint8_t *dump;
    size_t len;

    if (store_txn_begin(scratch.s, true, &t) != 0)
        abort();
    hash_and_index(t, before, &applied_before);
    if (store_load(t, data, size, &loaded) != 0) {
        hash_and_index(t, after, &applied_after);
        if (memcmp(before, after, 32) != 0 || applied_before != applied_after)
            abort();
    } else {
        hash_and_index(t, before, &applied_before);
        if (applied_before != loaded || store_dump(t, &dump, &len) != 0)
            abort();
        if (store_load(t, dump, len, &loaded) != 0)
            abort();
        free(dump);
        hash_and_index(t, after, &applied_after);
        if (memcmp(before, after, 32) != 0 || applied_after != applied_before)
            abort();
    }
    store_txn_abort(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *fixed;

    if (scratch.s == NULL)
        scratch_open();
    load_one(data, size);
    if (size < 32)
        return 0;
    fixed = malloc(size);
    if (fixed == NULL)
        abort();
    memcpy(fixed, data, size);
    crypto_generichash(fixed + size - 32, 32, fixed, size - 32, NULL, 0);
    load_one(fixed, size);
    free(fixed);
    return 0;
}
