/* server/admin/peer.c: raft/'s replica-to-replica channel over the internal
 * route POST /internal/v1/peer of the client listeners, both ends.
 * Every request carries X-Concord-Peer-Auth: "<unix_ms>:<hex HMAC-SHA256>"
 * keyed with the cluster secret over "<unix_ms>\n<body>". A request without
 * a valid MAC, or stamped more than a minute away from our clock, is refused
 * before raft/ sees it. A replay inside the window can only repeat a request
 * raft/ already de-duplicates by request id. The channel is authenticated,
 * not encrypted: the encrypted peer channel replaces it (DESIGN.md). */
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

int admin_peer_auth_check(const uint8_t secret[ADMIN_CLUSTER_SECRET_BYTES], const char *header,
                          const uint8_t *body, size_t len, int64_t now_unix_ms)
{
    uint8_t mac[crypto_auth_hmacsha256_BYTES], want[crypto_auth_hmacsha256_BYTES];
    const char *colon, *end = NULL;
    size_t stamp_len, mac_len = 0;
    int64_t stamp = 0;
    int rv = -1;

    if (header == NULL || (colon = strchr(header, ':')) == NULL)
        return -1;
    stamp_len = (size_t)(colon - header);
    if (stamp_len == 0 || stamp_len > PEER_MAX_TIMESTAMP_DIGITS)
        return -1;
    for (size_t i = 0; i < stamp_len; i++) {
        if (header[i] < '0' || header[i] > '9')
            return -1;
        stamp = stamp * 10 + (header[i] - '0');
    }
    if (stamp > now_unix_ms + ADMIN_PEER_AUTH_WINDOW_MS ||
        stamp < now_unix_ms - ADMIN_PEER_AUTH_WINDOW_MS)
        return -1;
    if (strlen(colon + 1) != 2 * sizeof mac ||
        sodium_hex2bin(mac, sizeof mac, colon + 1, 2 * sizeof mac, NULL, &mac_len, &end) != 0 ||
        mac_len != sizeof mac || *end != '\0')
        return -1;
    peer_mac(secret, header, stamp_len, body, len, want);
    if (sodium_memcmp(mac, want, sizeof mac) == 0)
        rv = 0;
    sodium_memzero(want, sizeof want);
    return rv;
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
    char headers[sizeof ADMIN_PEER_AUTH_HEADER + ADMIN_PEER_AUTH_BYTES + 64];
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
    char auth[ADMIN_PEER_AUTH_BYTES];
    struct net_http_client_request r = {0};
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
    admin_peer_auth_make(client->cluster_secret, admin_now_unix_ms(), request, len, auth);
    snprintf(s->headers, sizeof s->headers,
             ADMIN_PEER_AUTH_HEADER ": %s\r\nContent-Type: application/x-protobuf\r\n", auth);
    r.address = http_address;
    r.method = "POST";
    r.path = "/internal/v1/peer";
    r.extra_headers = s->headers;
    r.body = s->body;
    r.body_len = len;
    r.timeout_ms = client->timeout_ms != 0 ? client->timeout_ms : PEER_DEFAULT_TIMEOUT_MS;
    r.max_response_bytes = PEER_MAX_RESPONSE_BYTES;
    if (net_http_client_send(client->loop, &r, peer_on_response, s) != 0) {
        free(s->body);
        free(s);
        return CLUSTER_TRANSPORT;
    }
    return 0;
}
