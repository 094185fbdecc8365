/* server/admin/peer.c: raft/'s replica-to-replica channel over the internal
 * route POST /internal/v1/peer of the client listeners, both ends.
 * Every request carries X-Concord-Peer-Auth: "<unix_ms>:<hex HMAC-SHA256>"
 * keyed with the cluster secret over "<unix_ms>\n<body>". A request without
 * a valid MAC, or stamped more than a minute away from our clock, is refused
 * before raft/ sees it. A replay inside the window can only repeat a request
 * raft/ already de-duplicates by request id. A second header,
 * X-Concord-Peer-Length, authenticates the body's length on its own, so that
 * admin_body_limit can let a forwarded command past the listener's client
 * body limit before the body (and its MAC) has arrived. The channel is
 * authenticated, not encrypted, except that the client speaks TLS when the
 * listeners do, without verifying certificates: that keeps out eavesdroppers
 * but not a man in the middle, who could read requests and forge replies.
 * The encrypted peer channel replaces it (DESIGN.md). */
#include "server/admin/admin.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "server/admin/admin_internal.h"

#define PEER_DEFAULT_TIMEOUT_MS   10000
#define PEER_MAX_RESPONSE_BYTES   ((size_t)16 * 1024 * 1024)
#define PEER_MAX_TIMESTAMP_DIGITS 19
#define PEER_MAX_LENGTH_DIGITS    19

static void peer_mac(const uint8_t secret[ADMIN_CLUSTER_SECRET_BYTES], const char *stamp,
                     size_t stamp_len, const uint8_t *body, size_t len,
                     uint8_t mac[crypto_auth_hmacsha256_BYTES])
{
    crypto_auth_hmacsha256_state st;

    crypto_auth_hmacsha256_init(&st, secret, ADMIN_CLUSTER_SECRET_BYTES);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)stamp, stamp_len);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)"\n", 1);
    if (len > 0)
        crypto_auth_hmacsha256_update(&st, body, len);
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_memzero(&st, sizeof st);
}

void admin_peer_auth_make(const uint8_t secret[ADMIN_CLUSTER_SECRET_BYTES], int64_t unix_ms,
                          const uint8_t *body, size_t len, char out[ADMIN_PEER_AUTH_BYTES])
{
    uint8_t mac[crypto_auth_hmacsha256_BYTES];
    int n = snprintf(out, ADMIN_PEER_AUTH_BYTES, "%" PRId64, unix_ms);

    peer_mac(secret, out, (size_t)n, body, len, mac);
    out[n] = ':';
    sodium_bin2hex(out + n + 1, ADMIN_PEER_AUTH_BYTES - (size_t)n - 1, mac, sizeof mac);
}

/* A decimal of 1..max_digits digits (max_digits <= 19: no overflow). */
static int decimal_parse(const char *s, size_t len, size_t max_digits, uint64_t *out)
{
    uint64_t v = 0;

    if (len == 0 || len > max_digits)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return 0;
}

static int stamp_check(const char *s, size_t len, int64_t now_unix_ms)
{
    uint64_t stamp;

    if (decimal_parse(s, len, PEER_MAX_TIMESTAMP_DIGITS, &stamp) != 0 || stamp > INT64_MAX)
        return -1;
    if ((int64_t)stamp > now_unix_ms + ADMIN_PEER_AUTH_WINDOW_MS ||
        (int64_t)stamp < now_unix_ms - ADMIN_PEER_AUTH_WINDOW_MS)
        return -1;
    return 0;
}

/* Exactly 64 hex digits, and nothing after them. */
static int mac_parse(const char *hex, uint8_t mac[crypto_auth_hmacsha256_BYTES])
{
    const char *end = NULL;
    size_t mac_len = 0;

    if (strlen(hex) != 2 * crypto_auth_hmacsha256_BYTES ||
        sodium_hex2bin(mac, crypto_auth_hmacsha256_BYTES, hex, 2 * crypto_auth_hmacsha256_BYTES,
                       NULL, &mac_len, &end) != 0 ||
        mac_len != crypto_auth_hmacsha256_BYTES || *end != '\0')
        return -1;
    return 0;
}

int admin_peer_auth_check(const uint8_t secret[ADMIN_CLUSTER_SECRET_BYTES], const char *header,
                          const uint8_t *body, size_t len, int64_t now_unix_ms)
{
    uint8_t mac[crypto_auth_hmacsha256_BYTES], want[crypto_auth_hmacsha256_BYTES];
    const char *colon;
    size_t stamp_len;
    int rv = -1;

    if (header == NULL || (colon = strchr(header, ':')) == NULL)
        return -1;
    stamp_len = (size_t)(colon - header);
    if (stamp_check(header, stamp_len, now_unix_ms) != 0 || mac_parse(colon + 1, mac) != 0)
        return -1;
    peer_mac(secret, header, stamp_len, body, len, want);
    if (sodium_memcmp(mac, want, sizeof mac) == 0)
        rv = 0;
    sodium_memzero(want, sizeof want);
    return rv;
}

/* "length\n<stamp>\n<len>": the prefix keeps it apart from a body MAC,
 * whose input starts with the stamp's digits. */
static void length_mac(const uint8_t secret[ADMIN_CLUSTER_SECRET_BYTES], const char *stamp,
                       size_t stamp_len, const char *len_text, size_t len_text_len,
                       uint8_t mac[crypto_auth_hmacsha256_BYTES])
{
    crypto_auth_hmacsha256_state st;

    crypto_auth_hmacsha256_init(&st, secret, ADMIN_CLUSTER_SECRET_BYTES);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)"length\n", 7);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)stamp, stamp_len);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)"\n", 1);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)len_text, len_text_len);
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_memzero(&st, sizeof st);
}

void admin_peer_length_make(const uint8_t secret[ADMIN_CLUSTER_SECRET_BYTES], int64_t unix_ms,
                            size_t len, char out[ADMIN_PEER_LENGTH_BYTES])
{
    uint8_t mac[crypto_auth_hmacsha256_BYTES];
    char len_text[24];
    int n = snprintf(out, ADMIN_PEER_LENGTH_BYTES, "%" PRId64, unix_ms);
    int m = snprintf(len_text, sizeof len_text, "%zu", len);

    length_mac(secret, out, (size_t)n, len_text, (size_t)m, mac);
    snprintf(out + n, ADMIN_PEER_LENGTH_BYTES - (size_t)n, ":%s:", len_text);
    sodium_bin2hex(out + n + m + 2, ADMIN_PEER_LENGTH_BYTES - (size_t)(n + m + 2), mac, sizeof mac);
}

int admin_peer_length_check(const uint8_t secret[ADMIN_CLUSTER_SECRET_BYTES], const char *header,
                            size_t content_length, int64_t now_unix_ms)
{
    uint8_t mac[crypto_auth_hmacsha256_BYTES], want[crypto_auth_hmacsha256_BYTES];
    const char *first, *second;
    uint64_t len;
    int rv = -1;

    if (header == NULL || (first = strchr(header, ':')) == NULL ||
        (second = strchr(first + 1, ':')) == NULL)
        return -1;
    if (stamp_check(header, (size_t)(first - header), now_unix_ms) != 0 ||
        decimal_parse(first + 1, (size_t)(second - first - 1), PEER_MAX_LENGTH_DIGITS, &len) != 0 ||
        len != content_length || mac_parse(second + 1, mac) != 0)
        return -1;
    length_mac(secret, header, (size_t)(first - header), first + 1, (size_t)(second - first - 1),
               want);
    if (sodium_memcmp(mac, want, sizeof mac) == 0)
        rv = 0;
    sodium_memzero(want, sizeof want);
    return rv;
}

size_t admin_body_limit(void *arg, const struct net_http_request *head, size_t limit)
{
    struct admin *a = arg;
    const char *declared_text;
    uint64_t declared;

    if (strcmp(head->path, ADMIN_PEER_PATH) != 0 || strcmp(head->method, "POST") != 0)
        return limit;
    declared_text = net_http_header_get(head, "Content-Length");
    if (declared_text == NULL ||
        decimal_parse(declared_text, strlen(declared_text), PEER_MAX_LENGTH_DIGITS, &declared) !=
            0 ||
        declared <= limit || declared > ADMIN_PEER_MAX_BODY_BYTES)
        return limit;
    if (admin_peer_length_check(a->opts.cluster_secret,
                                net_http_header_get(head, ADMIN_PEER_LENGTH_HEADER),
                                (size_t)declared, admin_now_unix_ms()) != 0)
        return limit;
    return (size_t)declared;
}

/* ---- server side ---- */

struct peer_reply {
    struct admin *admin;
    struct net_http_request *req;
};

static void peer_on_reply(void *arg, const uint8_t *reply, size_t len)
{
    struct peer_reply *r = arg;

    r->admin->respond(r->admin->respond_arg, r->req, 200, "application/x-protobuf", NULL, reply,
                      len);
    free(r);
}

void admin_peer_handle(struct admin *a, struct net_http_request *req)
{
    struct peer_reply *r;

    if (strcmp(req->method, "POST") != 0) {
        admin_respond_error(a, req, ADMIN_METHOD, "method not allowed");
        return;
    }
    if (admin_peer_auth_check(a->opts.cluster_secret,
                              net_http_header_get(req, ADMIN_PEER_AUTH_HEADER), req->body,
                              req->body_len, admin_now_unix_ms()) != 0) {
        admin_respond_error(
            a, req, ADMIN_UNAUTHENTICATED,
            "peer authentication failed: missing, wrong or stale " ADMIN_PEER_AUTH_HEADER
            " (same cluster secret on every replica? clocks within 60 s?)");
        return;
    }
    r = malloc(sizeof *r);
    if (r == NULL) {
        admin_respond_error(a, req, ADMIN_INTERNAL, "out of memory");
        return;
    }
    r->admin = a;
    r->req = req;
    cluster_peer_handle(a->opts.cluster, req->body, req->body_len, peer_on_reply, r);
}

/* ---- client side ---- */

/* One request in flight: it keeps its own copy of the body and headers for
 * as long as net/ may read them. */
struct peer_send {
    cluster_transport_done_cb done;
    void *req_arg;
    uint8_t *body;
    char headers[sizeof ADMIN_PEER_AUTH_HEADER + ADMIN_PEER_AUTH_BYTES +
                 sizeof ADMIN_PEER_LENGTH_HEADER + ADMIN_PEER_LENGTH_BYTES + 64];
};

static void peer_on_response(void *arg, int status, int http_status, const uint8_t *body,
                             size_t len)
{
    struct peer_send *s = arg;

    if (status == NET_OK && http_status == 200)
        s->done(s->req_arg, CLUSTER_OK, body, len);
    else
        s->done(s->req_arg, CLUSTER_TRANSPORT, NULL, 0);
    free(s->body);
    free(s);
}

int admin_peer_send(void *arg, const char *http_address, const uint8_t *request, size_t len,
                    cluster_transport_done_cb done, void *req_arg)
{
    struct admin_peer_client *client = arg;
    char auth[ADMIN_PEER_AUTH_BYTES], length[ADMIN_PEER_LENGTH_BYTES];
    struct net_http_client_request r = {0};
    int64_t now_unix_ms = admin_now_unix_ms();
    struct peer_send *s = calloc(1, sizeof *s);

    if (s == NULL)
        return CLUSTER_NOMEM;
    s->body = malloc(len > 0 ? len : 1);
    if (s->body == NULL) {
        free(s);
        return CLUSTER_NOMEM;
    }
    if (len > 0)
        memcpy(s->body, request, len);
    s->done = done;
    s->req_arg = req_arg;
    admin_peer_auth_make(client->cluster_secret, now_unix_ms, request, len, auth);
    admin_peer_length_make(client->cluster_secret, now_unix_ms, len, length);
    snprintf(s->headers, sizeof s->headers,
             ADMIN_PEER_AUTH_HEADER ": %s\r\n" ADMIN_PEER_LENGTH_HEADER
                                    ": %s\r\nContent-Type: application/x-protobuf\r\n",
             auth, length);
    r.address = http_address;
    r.method = "POST";
    r.path = ADMIN_PEER_PATH;
    r.extra_headers = s->headers;
    r.body = s->body;
    r.body_len = len;
    r.timeout_ms = client->timeout_ms != 0 ? client->timeout_ms : PEER_DEFAULT_TIMEOUT_MS;
    r.max_response_bytes = PEER_MAX_RESPONSE_BYTES;
    r.use_tls = client->use_tls;
    if (net_http_client_send(client->loop, &r, peer_on_response, s) != 0) {
        free(s->body);
        free(s);
        return CLUSTER_TRANSPORT;
    }
    return 0;
}
