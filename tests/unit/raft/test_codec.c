/* tests/unit/raft/test_codec.c: log-entry framing. */
#include "tests/unit/raft/raft_tests.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "raft/cluster.h"

static void make_user_command(Concord__Command *cmd, Concord__CreateUser *op, const char *name)
{
    static const uint8_t request_id[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};

    concord__command__init(cmd);
    concord__create_user__init(op);
    cmd->request_id.data = (uint8_t *)request_id;
    cmd->request_id.len = sizeof request_id;
    cmd->proposed_unix_ms = 1700000000123;
    cmd->actor = "cli";
    cmd->op_case = CONCORD__COMMAND__OP_CREATE_USER;
    cmd->create_user = op;
    op->name = (char *)name;
    op->email = "a@example.com";
}

static void encode_then_decode_gives_the_same_command(void **state)
{
    Concord__Command cmd;
    Concord__CreateUser op;
    Concord__Command *out = NULL;
    uint8_t *buf = NULL;
    size_t len = 0;

    (void)state;
    make_user_command(&cmd, &op, "alice");
    assert_int_equal(cluster_command_encode(&cmd, &buf, &len), 0);
    assert_int_equal(cluster_command_decode(buf, len, &out), 0);
    assert_int_equal(out->op_case, CONCORD__COMMAND__OP_CREATE_USER);
    assert_string_equal(out->create_user->name, "alice");
    assert_string_equal(out->create_user->email, "a@example.com");
    assert_string_equal(out->actor, "cli");
    assert_int_equal(out->proposed_unix_ms, 1700000000123);
    assert_int_equal(out->request_id.len, 16);
    assert_memory_equal(out->request_id.data, cmd.request_id.data, 16);
    concord__command__free_unpacked(out, NULL);
    cluster_command_buf_free(buf);
}

static void encoded_entries_are_zero_padded_to_eight_bytes(void **state)
{
    char name[40];

    (void)state;
    for (size_t n = 0; n < sizeof name - 1; n++) {
        Concord__Command cmd;
        Concord__CreateUser op;
        uint8_t *buf = NULL;
        size_t len = 0;
        size_t packed;

        memset(name, 'x', n);
        name[n] = '\0';
        make_user_command(&cmd, &op, name);
        packed = concord__command__get_packed_size(&cmd);
        assert_int_equal(cluster_command_encode(&cmd, &buf, &len), 0);
        assert_int_equal(len % 8, 0);
        assert_true(len >= 4 + packed && len < 4 + packed + 8);
        assert_int_equal(buf[0] | buf[1] << 8 | buf[2] << 16 | (uint32_t)buf[3] << 24, packed);
        for (size_t i = 4 + packed; i < len; i++)
            assert_int_equal(buf[i], 0);
        cluster_command_buf_free(buf);
    }
}

static void decode_rejects_truncated_and_garbage_entries(void **state)
{
    Concord__Command cmd;
    Concord__CreateUser op;
    Concord__Command *out = NULL;
    uint8_t garbage[32];
    uint8_t *copy;
    uint8_t *buf = NULL;
    size_t len = 0;

    (void)state;
    make_user_command(&cmd, &op, "bob");
    assert_int_equal(cluster_command_encode(&cmd, &buf, &len), 0);
    copy = malloc(len);
    assert_non_null(copy);

    /* Too short, not a multiple of 8, or cut at an 8-byte boundary. */
    assert_int_equal(cluster_command_decode(buf, 0, &out), CLUSTER_INVALID);
    assert_int_equal(cluster_command_decode(buf, 3, &out), CLUSTER_INVALID);
    assert_int_equal(cluster_command_decode(buf, len - 1, &out), CLUSTER_INVALID);
    assert_int_equal(cluster_command_decode(buf, len - 8, &out), CLUSTER_INVALID);
    assert_int_equal(cluster_command_decode(NULL, len, &out), CLUSTER_INVALID);

    /* A length prefix that does not match the buffer. */
    memcpy(copy, buf, len);
    copy[0] = (uint8_t)(copy[0] + 8);
    assert_int_equal(cluster_command_decode(copy, len, &out), CLUSTER_INVALID);
    memcpy(copy, buf, len);
    copy[3] = 0xff;
    assert_int_equal(cluster_command_decode(copy, len, &out), CLUSTER_INVALID);

    /* Non-zero padding (the payload here is never a multiple of 8 + 4). */
    memcpy(copy, buf, len);
    if ((4 + concord__command__get_packed_size(&cmd)) % 8 != 0) {
        copy[len - 1] = 1;
        assert_int_equal(cluster_command_decode(copy, len, &out), CLUSTER_INVALID);
    }

    /* A well-framed payload that is not a Command. */
    memset(garbage, 0xff, sizeof garbage);
    garbage[0] = 20;
    garbage[1] = garbage[2] = garbage[3] = 0;
    memset(garbage + 24, 0, 8);
    assert_int_equal(cluster_command_decode(garbage, 24, &out), CLUSTER_INVALID);
    assert_null(out);

    free(copy);
    cluster_command_buf_free(buf);
}

static void encode_refuses_oversized_commands(void **state)
{
    Concord__Command cmd = CONCORD__COMMAND__INIT;
    Concord__RestoreState op = CONCORD__RESTORE_STATE__INIT;
    uint8_t byte = 0;
    uint8_t *buf = NULL;
    size_t len = 0;

    (void)state;
    cmd.op_case = CONCORD__COMMAND__OP_RESTORE_STATE;
    cmd.restore_state = &op;
    /* Only the size is looked at before refusing: the data is never read. */
    op.dump.data = &byte;
    op.dump.len = (64u << 20) + 1;
    assert_int_equal(cluster_command_encode(&cmd, &buf, &len), CLUSTER_TOOBIG);
    assert_null(buf);
}

int test_codec_run(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(encode_then_decode_gives_the_same_command),
        cmocka_unit_test(encoded_entries_are_zero_padded_to_eight_bytes),
        cmocka_unit_test(decode_rejects_truncated_and_garbage_entries),
        cmocka_unit_test(encode_refuses_oversized_commands),
    };

    return cmocka_run_group_tests_name("codec", tests, NULL, NULL);
}
