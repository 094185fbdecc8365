/* tests/unit/server/test_admin_peer.c: the authentication of the internal
 * replica-to-replica route: a MAC over timestamp and body under the cluster
 * secret, inside a one-minute window. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "server/admin/admin_internal.h"

#define NOW_MS 1767225600000LL /* 2026-01-01T00:00:00Z */

static const uint8_t secret[ADMIN_CLUSTER_SECRET_BYTES] = {1, 2, 3, 4, 5, 6, 7, 8};
static const uint8_t body[] = {0x0a, 0x03, 'a', 'b', 'c'};

static void peer_auth_accepts_what_it_made(void **state)
{
    char header[ADMIN_PEER_AUTH_BYTES];

    (void)state;
    admin_peer_auth_make(secret, NOW_MS, body, sizeof body, header);
    assert_int_equal(admin_peer_auth_check(secret, header, body, sizeof body, NOW_MS), 0);
    /* Inside the window on either side: clocks of replicas differ a little. */
    assert_int_equal(admin_peer_auth_check(secret, header, body, sizeof body, NOW_MS + 59000), 0);
    assert_int_equal(admin_peer_auth_check(secret, header, body, sizeof body, NOW_MS - 59000), 0);
    /* An empty body is a body like any other. */
    admin_peer_auth_make(secret, NOW_MS, NULL, 0, header);
    assert_int_equal(admin_peer_auth_check(secret, header, NULL, 0, NOW_MS), 0);
}

static void peer_auth_rejects_stale_and_future_stamps(void **state)
{
    char header[ADMIN_PEER_AUTH_BYTES];

    (void)state;
    admin_peer_auth_make(secret, NOW_MS, body, sizeof body, header);
    assert_int_equal(admin_peer_auth_check(secret, header, body, sizeof body, NOW_MS + 61000), -1);
    assert_int_equal(admin_peer_auth_check(secret, header, body, sizeof body, NOW_MS - 61000), -1);
}

static void peer_auth_rejects_a_wrong_secret_or_changed_body(void **state)
{
    uint8_t other[ADMIN_CLUSTER_SECRET_BYTES] = {9};
    uint8_t changed[sizeof body];
    char header[ADMIN_PEER_AUTH_BYTES];

    (void)state;
    admin_peer_auth_make(secret, NOW_MS, body, sizeof body, header);
    assert_int_equal(admin_peer_auth_check(other, header, body, sizeof body, NOW_MS), -1);
    memcpy(changed, body, sizeof body);
    changed[2] ^= 1;
    assert_int_equal(admin_peer_auth_check(secret, header, changed, sizeof changed, NOW_MS), -1);
    assert_int_equal(admin_peer_auth_check(secret, header, body, sizeof body - 1, NOW_MS), -1);
}

static void peer_auth_rejects_a_moved_timestamp(void **state)
{
    char header[ADMIN_PEER_AUTH_BYTES], moved[ADMIN_PEER_AUTH_BYTES + 8];
    const char *colon;

    (void)state;
    /* The stamp is under the MAC: changing it, even within the window, fails. */
    admin_peer_auth_make(secret, NOW_MS, body, sizeof body, header);
    colon = strchr(header, ':');
    snprintf(moved, sizeof moved, "%lld%s", NOW_MS + 1, colon);
    assert_int_equal(admin_peer_auth_check(secret, moved, body, sizeof body, NOW_MS), -1);
}

static void peer_auth_rejects_malformed_headers(void **state)
{
    char header[ADMIN_PEER_AUTH_BYTES], bad[ADMIN_PEER_AUTH_BYTES + 8];
    const char *colon;

    (void)state;
    admin_peer_auth_make(secret, NOW_MS, body, sizeof body, header);
    colon = strchr(header, ':');
    assert_non_null(colon);
    assert_int_equal(strlen(colon + 1), 64);
    assert_int_equal(admin_peer_auth_check(secret, NULL, body, sizeof body, NOW_MS), -1);
    assert_int_equal(admin_peer_auth_check(secret, "", body, sizeof body, NOW_MS), -1);
    assert_int_equal(admin_peer_auth_check(secret, colon, body, sizeof body, NOW_MS), -1);
    assert_int_equal(admin_peer_auth_check(secret, "1767225600000", body, sizeof body, NOW_MS), -1);
    /* A truncated MAC, an extra character, a sign, a non-digit stamp. */
    snprintf(bad, sizeof bad, "%.*s", (int)strlen(header) - 2, header);
    assert_int_equal(admin_peer_auth_check(secret, bad, body, sizeof body, NOW_MS), -1);
    snprintf(bad, sizeof bad, "%s0", header);
    assert_int_equal(admin_peer_auth_check(secret, bad, body, sizeof body, NOW_MS), -1);
    snprintf(bad, sizeof bad, "+%s", header);
    assert_int_equal(admin_peer_auth_check(secret, bad, body, sizeof body, NOW_MS), -1);
    snprintf(bad, sizeof bad, "17672256x0000%s", colon);
    assert_int_equal(admin_peer_auth_check(secret, bad, body, sizeof body, NOW_MS), -1);
    snprintf(bad, sizeof bad, "99999999999999999999999%s", colon);
    assert_int_equal(admin_peer_auth_check(secret, bad, body, sizeof body, NOW_MS), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(peer_auth_accepts_what_it_made),
        cmocka_unit_test(peer_auth_rejects_stale_and_future_stamps),
        cmocka_unit_test(peer_auth_rejects_a_wrong_secret_or_changed_body),
        cmocka_unit_test(peer_auth_rejects_a_moved_timestamp),
        cmocka_unit_test(peer_auth_rejects_malformed_headers),
    };

    return cmocka_run_group_tests_name("admin_peer", tests, NULL, NULL);
}
