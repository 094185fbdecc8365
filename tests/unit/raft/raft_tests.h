/* tests/unit/raft/raft_tests.h: the raft/ test groups and what they share:
 * stores in temporary directories, state hashes and command builders. */
#ifndef CONCORD_TESTS_UNIT_RAFT_RAFT_TESTS_H
#define CONCORD_TESTS_UNIT_RAFT_RAFT_TESTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/concord.pb-c.h"
#include "storage/store.h"

#define TEST_MAP_SIZE_BYTES (64ULL << 20)

/* A store in its own temporary directory. */
struct tstore {
    char dir[256];
    struct store *s;
};
void tstore_open(struct tstore *t);
void tstore_close(struct tstore *t); /* closes and removes the directory */

void state_hash(struct store *s, uint8_t out[32]);
uint64_t store_applied(struct store *s);
size_t audit_count(struct store *s);
size_t user_count(struct store *s);
bool user_exists(struct store *s, const char *name);

/* A heap copy of a stack-built command, as cluster_submit() wants it
 * (freed with concord__command__free_unpacked). */
Concord__Command *cmd_dup(const Concord__Command *cmd);
/* A heap CreateUser command; request_id may be NULL (left empty). */
Concord__Command *cmd_create_user(const char *name, const uint8_t *request_id);

int test_codec_run(void);
int test_execute_run(void);
int test_execute_control_run(void);
int test_fsm_run(void);
int test_fixture_run(void);
int test_cluster_run(void);

#endif
