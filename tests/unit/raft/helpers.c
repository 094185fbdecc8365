/* tests/unit/raft/helpers.c: stores, hashes and commands for the raft tests. */
#include "tests/unit/raft/raft_tests.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tests/lib/testdir.h"

void tstore_open(struct tstore *t)
{
    struct store_options opts = {NULL, TEST_MAP_SIZE_BYTES, 0};
    char errmsg[256] = "";
    int rv;

    assert_int_equal(testdir_make(t->dir, sizeof t->dir), 0);
    opts.dir = t->dir;
    rv = store_open(&opts, &t->s, errmsg);
    if (rv != 0)
        fail_msg("store_open: %s: %s", store_strerror(rv), errmsg);
}

void tstore_close(struct tstore *t)
{
    store_close(t->s);
    t->s = NULL;
    testdir_remove(t->dir);
}

void state_hash(struct store *s, uint8_t out[32])
{
    struct store_txn *t = NULL;

    assert_int_equal(store_txn_begin(s, false, &t), 0);
    assert_int_equal(store_state_hash(t, out), 0);
    store_txn_abort(t);
}

uint64_t store_applied(struct store *s)
{
    struct store_txn *t = NULL;
    uint64_t index = 0;

    assert_int_equal(store_txn_begin(s, false, &t), 0);
    assert_int_equal(store_applied_index_get(t, &index), 0);
    store_txn_abort(t);
    return index;
}

static int count_one(const ProtobufCMessage *record, void *arg)
{
    (void)record;
    (*(size_t *)arg)++;
    return 0;
}

size_t audit_count(struct store *s)
{
    struct store_txn *t = NULL;
    size_t n = 0;

    assert_int_equal(store_txn_begin(s, false, &t), 0);
    assert_int_equal(store_audit_each(t, 0, 0, count_one, &n), 0);
    store_txn_abort(t);
    return n;
}

size_t user_count(struct store *s)
{
    struct store_txn *t = NULL;
    size_t n = 0;

    assert_int_equal(store_txn_begin(s, false, &t), 0);
    assert_int_equal(store_user_each(t, count_one, &n), 0);
    store_txn_abort(t);
    return n;
}

bool user_exists(struct store *s, const char *name)
{
    struct store_txn *t = NULL;
    Concord__User *u = NULL;
    int rv;

    assert_int_equal(store_txn_begin(s, false, &t), 0);
    rv = store_user_get_by_name(t, name, &u);
    store_record_free(u);
    store_txn_abort(t);
    assert_true(rv == 0 || rv == STORE_NOTFOUND);
    return rv == 0;
}

Concord__Command *cmd_dup(const Concord__Command *cmd)
{
    size_t len = concord__command__get_packed_size(cmd);
    uint8_t *buf = malloc(len + 1);
    Concord__Command *copy;

    assert_non_null(buf);
    concord__command__pack(cmd, buf);
    copy = concord__command__unpack(NULL, len, buf);
    free(buf);
    assert_non_null(copy);
    return copy;
}

Concord__Command *cmd_create_user(const char *name, const uint8_t *request_id)
{
    Concord__Command cmd = CONCORD__COMMAND__INIT;
    Concord__CreateUser op = CONCORD__CREATE_USER__INIT;

    cmd.actor = "test";
    cmd.proposed_unix_ms = 1700000000000;
    cmd.op_case = CONCORD__COMMAND__OP_CREATE_USER;
    cmd.create_user = &op;
    op.name = (char *)name;
    if (request_id != NULL) {
        cmd.request_id.data = (uint8_t *)request_id;
        cmd.request_id.len = 16;
    }
    return cmd_dup(&cmd);
}
