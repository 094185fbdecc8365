/* tests/unit/storage/storage_tests.h: the storage test groups and the
 * fixture they share: a fresh store in its own temporary directory. */
#ifndef CONCORD_TESTS_UNIT_STORAGE_STORAGE_TESTS_H
#define CONCORD_TESTS_UNIT_STORAGE_STORAGE_TESTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storage/store.h"

#define FIXTURE_MAP_SIZE_BYTES (64ULL << 20)

struct fixture {
    char dir[256];
    struct store *s;
};

/* cmocka setup/teardown: *state is a struct fixture with an open store. */
int fixture_setup(void **state);
int fixture_teardown(void **state);
/* Closes and opens the fixture's store again, as a restart would. */
void fixture_reopen(struct fixture *f);

struct store_txn *txn_write(struct store *s);
struct store_txn *txn_read(struct store *s);
void txn_commit(struct store_txn *t);

/* Record builders with deterministic contents derived from `seed`. */
void user_make(Concord__User *u, uint64_t id, const char *name);
/* A node whose keys and addresses derive from seed; buffers live in *bufs. */
struct node_bufs {
    uint8_t machine_key[32];
    uint8_t node_key[32];
    uint8_t disco_key[32];
    uint8_t ipv4[4];
    uint8_t ipv6[16];
    char given_name[32];
};
void node_make(Concord__Node *n, struct node_bufs *b, uint64_t id, uint8_t seed);
/* Fills a store with at least one record of every kind plus counters,
 * an applied index and de-duplication entries. */
void state_populate(struct store *s, uint8_t seed);
void state_hash_of(struct store *s, uint8_t out[32]);

int test_store_run(void);
int test_records_run(void);
int test_dump_run(void);
int test_secret_run(void);

#endif
