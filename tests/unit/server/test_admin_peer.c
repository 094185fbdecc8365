/* tests/unit/server/test_admin_peer.c: the authentication of the internal
 * replica-to-replica route: a MAC over timestamp and body under the cluster
 * secret, inside a one-minute window; the MAC over the body's length that
 * lets a forwarded command past the client body limit; and the body-limit
 * hook built on it. */
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

static void peer_length_accepts_what_it_made_for_that_length_only(void **state)
{
    char header[ADMIN_PEER_LENGTH_BYTES];

    (void)state;
    admin_peer_length_make(secret, NOW_MS, 5u << 20, header);
    assert_int_equal(admin_peer_length_check(secret, header, 5u << 20, NOW_MS), 0);
    assert_int_equal(admin_peer_length_check(secret, header, 5u << 20, NOW_MS + 59000), 0);
    assert_int_equal(admin_peer_length_check(secret, header, (5u << 20) + 1, NOW_MS), -1);
    assert_int_equal(admin_peer_length_check(secret, header, 5u << 20, NOW_MS + 61000), -1);
    admin_peer_length_make(secret, NOW_MS, 0, header);
    assert_int_equal(admin_peer_length_check(secret, header, 0, NOW_MS), 0);
}

static void peer_length_rejects_a_wrong_secret_or_edited_fields(void **state)
{
    uint8_t other[ADMIN_CLUSTER_SECRET_BYTES] = {9};
    char header[ADMIN_PEER_LENGTH_BYTES], bad[ADMIN_PEER_LENGTH_BYTES + 8];
    const char *first, *second;

    (void)state;
    admin_peer_length_make(secret, NOW_MS, 1000, header);
    assert_int_equal(admin_peer_length_check(other, header, 1000, NOW_MS), -1);
    first = strchr(header, ':');
    second = strchr(first + 1, ':');
    /* A length or a stamp changed under the MAC. */
    snprintf(bad, sizeof bad, "%.*s:2000%s", (int)(first - header), header, second);
    assert_int_equal(admin_peer_length_check(secret, bad, 2000, NOW_MS), -1);
    snprintf(bad, sizeof bad, "%lld%s", NOW_MS + 1, first);
    assert_int_equal(admin_peer_length_check(secret, bad, 1000, NOW_MS), -1);
    /* Malformed: missing parts, signs, a body MAC in its place. */
    assert_int_equal(admin_peer_length_check(secret, NULL, 1000, NOW_MS), -1);
    assert_int_equal(admin_peer_length_check(secret, "", 1000, NOW_MS), -1);
    snprintf(bad, sizeof bad, "%.*s", (int)(second - header), header);
    assert_int_equal(admin_peer_length_check(secret, bad, 1000, NOW_MS), -1);
    snprintf(bad, sizeof bad, "%.*s:+1000%s", (int)(first - header), header, second);
    assert_int_equal(admin_peer_length_check(secret, bad, 1000, NOW_MS), -1);
    admin_peer_auth_make(secret, NOW_MS, body, sizeof body, bad);
    assert_int_equal(admin_peer_length_check(secret, bad, sizeof body, NOW_MS), -1);
}

/* The head of a POST to the peer route as net/ shows it to the hook. */
struct head {
    struct net_http_header headers[2];
    char length_value[ADMIN_PEER_LENGTH_BYTES];
    char content_length[24];
    struct net_http_request req;
};

static void head_init(struct head *h, const char *method, const char *path, size_t content_length,
                      const char *length_header)
{
    memset(h, 0, sizeof *h);
    snprintf(h->content_length, sizeof h->content_length, "%zu", content_length);
    h->headers[0] = (struct net_http_header){.name = "content-length", .value = h->content_length};
    h->req.headers = h->headers;
    h->req.n_headers = 1;
    if (length_header != NULL) {
        snprintf(h->length_value, sizeof h->length_value, "%s", length_header);
        h->headers[1] =
            (struct net_http_header){.name = ADMIN_PEER_LENGTH_HEADER, .value = h->length_value};
        h->req.n_headers = 2;
    }
    snprintf(h->req.method, sizeof h->req.method, "%s", method);
    h->req.path = (char *)path;
    h->req.query = "";
}

static void body_limit_is_raised_only_for_proven_peer_requests(void **state)
{
    const size_t limit = 1u << 20, big = 5u << 20;
    struct admin a = {0};
    char proof[ADMIN_PEER_LENGTH_BYTES], other_proof[ADMIN_PEER_LENGTH_BYTES];
    struct head h;

    (void)state;
    memcpy(a.opts.cluster_secret, secret, sizeof secret);
    admin_peer_length_make(secret, admin_now_unix_ms(), big, proof);
    head_init(&h, "POST", ADMIN_PEER_PATH, big, proof);
    assert_int_equal(admin_body_limit(&a, &h.req, limit), big);

    /* Everything else keeps the listener's limit. */
    head_init(&h, "POST", ADMIN_PEER_PATH, big, NULL);
    assert_int_equal(admin_body_limit(&a, &h.req, limit), limit);
    head_init(&h, "POST", "/api/v1/cluster/snapshot/restore", big, proof);
    assert_int_equal(admin_body_limit(&a, &h.req, limit), limit);
    head_init(&h, "PUT", ADMIN_PEER_PATH, big, proof);
    assert_int_equal(admin_body_limit(&a, &h.req, limit), limit);
    head_init(&h, "POST", ADMIN_PEER_PATH, big + 1, proof);
    assert_int_equal(admin_body_limit(&a, &h.req, limit), limit);
    admin_peer_length_make(secret, admin_now_unix_ms() - 120000, big, other_proof);
    head_init(&h, "POST", ADMIN_PEER_PATH, big, other_proof);
    assert_int_equal(admin_body_limit(&a, &h.req, limit), limit);
    /* Past the peer route's own ceiling, a proof does not help. */
    admin_peer_length_make(secret, admin_now_unix_ms(), ADMIN_PEER_MAX_BODY_BYTES + 1, other_proof);
    head_init(&h, "POST", ADMIN_PEER_PATH, ADMIN_PEER_MAX_BODY_BYTES + 1, other_proof);
    assert_int_equal(admin_body_limit(&a, &h.req, limit), limit);
    /* Never lowered: a small proven body keeps the listener's limit. */
    admin_peer_length_make(secret, admin_now_unix_ms(), 10, other_proof);
    head_init(&h, "POST", ADMIN_PEER_PATH, 10, other_proof);
    assert_int_equal(admin_body_limit(&a, &h.req, limit), limit);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(peer_auth_accepts_what_it_made),
        cmocka_unit_test(peer_auth_rejects_stale_and_future_stamps),
        cmocka_unit_test(peer_auth_rejects_a_wrong_secret_or_changed_body),
        cmocka_unit_test(peer_auth_rejects_a_moved_timestamp),
        cmocka_unit_test(peer_auth_rejects_malformed_headers),
        cmocka_unit_test(peer_length_accepts_what_it_made_for_that_length_only),
        cmocka_unit_test(peer_length_rejects_a_wrong_secret_or_edited_fields),
        cmocka_unit_test(body_limit_is_raised_only_for_proven_peer_requests),
    };

    return cmocka_run_group_tests_name("admin_peer", tests, NULL, NULL);
}
