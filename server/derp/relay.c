/* server/derp/relay.c: see relay.h. Each accepted DERP connection is a
 * struct relay_conn joining a raw (upgraded) socket to a derp_client: socket
 * bytes are fed to the core, the core's output is written to the socket.
 * A connection the core or the socket ends is freed at the end of the loop
 * iteration (a uv_check reaper), never from inside one of its callbacks. */
#include "server/derp/relay.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <sodium.h>

#include "server/derp/derp.h"
#include "server/derp/stun.h"
#include "server/log.h"
#include "server/net/http.h"

#define KEEPALIVE_MS          60000
#define HTTP_IDLE_TIMEOUT_MS  30000
#define HTTP_MAX_HEADER_BYTES (16 * 1024)
#define FAST_START_HEADER     "Derp-Fast-Start"
#define CHALLENGE_HEADER      "X-Tailscale-Challenge"

struct relay_conn {
    struct relay *relay;
    struct net_raw *raw;        /* NULL before the upgrade and once closed */
    struct derp_client *client; /* NULL once freed */
    uint8_t *pending;           /* core output before the socket is ours */
    size_t pending_len;
    bool is_dead;
    struct relay_conn *prev, *next; /* in relay->conns or relay->dead */
};

struct relay {
    struct relay_options opt;
    struct derp_server *derp;
    struct net_http_server *http;
    struct stun_server *stun;
    int stun_port;
    uv_timer_t keepalive;
    uv_check_t reaper;
    struct relay_conn *conns;
    struct relay_conn *dead;
    unsigned closing_parts; /* listener, STUN, timer, reaper still closing */
    relay_close_cb close_cb;
    void *close_arg;
};

/* ---- connections ---- */

static void list_unlink(struct relay_conn **list, struct relay_conn *c)
{
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        *list = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void list_push(struct relay_conn **list, struct relay_conn *c)
{
    c->next = *list;
    if (*list != NULL)
        (*list)->prev = c;
    *list = c;
}

static void reaper_run(uv_check_t *h);

static void conn_kill(struct relay_conn *c, const char *reason)
{
    struct relay *r = c->relay;

    if (c->is_dead)
        return;
    LOG_DEBUG("derp: dropping a connection: %s", reason);
    c->is_dead = true;
    if (c->raw != NULL) {
        net_raw_close(c->raw, reason);
        c->raw = NULL;
    }
    list_unlink(&r->conns, c);
    list_push(&r->dead, c);
    uv_check_start(&r->reaper, reaper_run);
}

static void conn_free(struct relay_conn *c)
{
    if (c->client != NULL)
        derp_client_free(c->client);
    free(c->pending);
    free(c);
}

static void reaper_run(uv_check_t *h)
{
    struct relay *r = h->data;

    while (r->dead != NULL) {
        struct relay_conn *c = r->dead;

        list_unlink(&r->dead, c);
        conn_free(c);
    }
    uv_check_stop(h);
}

static int conn_send(void *arg, const uint8_t *data, size_t len)
{
    struct relay_conn *c = arg;
    uint8_t *bigger;

    if (c->is_dead)
        return -1;
    if (c->raw == NULL) {
        /* Before the upgrade: kept and written right after the 101. */
        bigger = realloc(c->pending, c->pending_len + len);
        if (bigger == NULL)
            return -1;
        memcpy(bigger + c->pending_len, data, len);
        c->pending = bigger;
        c->pending_len += len;
        return 0;
    }
    if (net_raw_write(c->raw, data, len) != 0)
        return -1;
    if (c->client != NULL)
        derp_client_set_backlog(c->client, net_raw_write_queued(c->raw));
    return 0;
}

static void conn_core_close(void *arg, const char *reason)
{
    conn_kill(arg, reason);
}

static void conn_on_read(void *arg, const uint8_t *data, size_t len)
{
    struct relay_conn *c = arg;

    if (c->is_dead || c->client == NULL)
        return;
    derp_client_set_backlog(c->client, net_raw_write_queued(c->raw));
    if (derp_client_feed(c->client, data, len) != 0)
        conn_kill(c, "DERP protocol error");
}

static void conn_on_raw_close(void *arg, const char *reason)
{
    struct relay_conn *c = arg;

    c->raw = NULL;
    conn_kill(c, reason);
}

/* ---- HTTP routes of the relay listener ---- */

static void handle_upgrade(struct relay *r, struct net_http_request *req)
{
    static const char head_fmt[] = "HTTP/1.1 101 Switching Protocols\r\n"
                                   "Upgrade: DERP\r\n"
                                   "Connection: Upgrade\r\n"
                                   "Derp-Version: 2\r\n"
                                   "Derp-Public-Key: %s\r\n\r\n";
    const struct derp_io io = {.send = conn_send, .close = conn_core_close};
    const struct net_raw_callbacks cb = {.on_read = conn_on_read, .on_close = conn_on_raw_close};
    const char *fast = net_http_header_get(req, FAST_START_HEADER);
    bool is_fast = fast != NULL && strcmp(fast, "1") == 0;
    struct relay_conn *c = calloc(1, sizeof *c);
    uint8_t pub[DERP_KEY_BYTES];
    char hex[2 * DERP_KEY_BYTES + 1];
    char head[sizeof head_fmt + sizeof hex];
    size_t head_len = 0;
    uint8_t *out;

    if (c == NULL) {
        net_http_respond(req, 500, NULL, NULL, NULL, 0);
        return;
    }
    c->relay = r;
    list_push(&r->conns, c);
    /* The core writes its server key frame at once, into c->pending. */
    c->client = derp_client_new(r->derp, &io, c, req->peer);
    if (c->client == NULL) {
        conn_kill(c, "out of memory");
        net_http_respond(req, 500, NULL, NULL, NULL, 0);
        return;
    }
    if (!is_fast) {
        derp_server_public_key(r->derp, pub);
        sodium_bin2hex(hex, sizeof hex, pub, sizeof pub);
        head_len = (size_t)snprintf(head, sizeof head, head_fmt, hex);
    }
    out = malloc(head_len + c->pending_len + 1);
    if (out == NULL) {
        conn_kill(c, "out of memory");
        net_http_respond(req, 500, NULL, NULL, NULL, 0);
        return;
    }
    memcpy(out, head, head_len);
    memcpy(out + head_len, c->pending, c->pending_len);
    c->raw = net_http_upgrade(req, out, head_len + c->pending_len, &cb, c);
    free(out);
    free(c->pending);
    c->pending = NULL;
    c->pending_len = 0;
    if (c->raw == NULL)
        conn_kill(c, "connection lost during the upgrade");
}

static bool is_challenge_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '-' || ch == '_' || ch == ':';
}

/* Captive-portal detection: 204, echoing a well-formed challenge. */
static void handle_no_content(struct net_http_request *req)
{
    const char *challenge = net_http_header_get(req, CHALLENGE_HEADER);
    char extra[192] = "Cache-Control: no-cache, no-store, must-revalidate, no-transform\r\n";
    bool is_ok = challenge != NULL && strlen(challenge) <= 64;

    for (const char *p = challenge; is_ok && *p != '\0'; p++)
        is_ok = is_challenge_char(*p);
    if (is_ok)
        snprintf(extra + strlen(extra), sizeof extra - strlen(extra),
                 "X-Tailscale-Response: response %s\r\n", challenge);
    net_http_respond(req, 204, NULL, extra, NULL, 0);
}

static void relay_handle(void *arg, struct net_http_request *req)
{
    struct relay *r = arg;
    const char *upgrade = net_http_header_get(req, "Upgrade");

    if (strcmp(req->path, "/derp/probe") == 0 || strcmp(req->path, "/derp/latency-check") == 0) {
        bool is_ok = strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0;

        net_http_respond(req, is_ok ? 200 : 405, NULL, "Access-Control-Allow-Origin: *\r\n", NULL,
                         0);
    } else if (strcmp(req->path, "/generate_204") == 0) {
        handle_no_content(req);
    } else if (strcmp(req->path, "/derp") == 0 && upgrade != NULL &&
               strcasecmp(upgrade, "DERP") == 0) {
        handle_upgrade(r, req);
    } else if (strcmp(req->path, "/derp") == 0) {
        static const char msg[] = "DERP requires connection upgrade\n";

        net_http_respond(req, 426, "text/plain; charset=utf-8", NULL, msg, sizeof msg - 1);
    } else {
        net_http_respond(req, 404, "text/plain; charset=utf-8", NULL, "not found\n", 10);
    }
}

/* ---- admission ---- */

static bool verify_node(void *arg, const uint8_t node_key[DERP_KEY_BYTES])
{
    struct relay *r = arg;
    Concord__Node *n = NULL;
    struct store_txn *t;
    bool is_ok = false;
    struct timespec now;

    if (store_txn_begin(r->opt.store, false, &t) != 0)
        return false;
    if (store_node_get_by_node_key(t, node_key, &n) == 0) {
        clock_gettime(CLOCK_REALTIME, &now);
        is_ok = n->expiry_unix_ms == 0 ||
                n->expiry_unix_ms > (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
        store_record_free(n);
    }
    store_txn_abort(t);
    if (!is_ok)
        LOG_INFO("derp: refused a client that is not a node of this tailnet");
    return is_ok;
}

static void on_keepalive(uv_timer_t *t)
{
    derp_server_keepalive(((struct relay *)t->data)->derp);
}

/* ---- lifecycle ---- */

static void relay_part_closed(struct relay *r)
{
    if (--r->closing_parts > 0)
        return;
    while (r->dead != NULL) {
        struct relay_conn *c = r->dead;

        list_unlink(&r->dead, c);
        conn_free(c);
    }
    derp_server_free(r->derp);
    if (r->close_cb != NULL)
        r->close_cb(r->close_arg);
    free(r);
}

static void on_http_closed(void *arg)
{
    relay_part_closed(arg);
}

static void on_stun_closed(void *arg)
{
    relay_part_closed(arg);
}

static void on_handle_closed(uv_handle_t *h)
{
    relay_part_closed(h->data);
}

int relay_new(const struct relay_options *opts, struct relay **out, char *errmsg)
{
    struct relay *r = calloc(1, sizeof *r);
    struct derp_options dopts = {.verify = verify_node};
    struct net_http_server_options hopts = {
        .tcp_address = opts->listen_addr,
        .max_body_bytes = 1024,
        .max_header_bytes = HTTP_MAX_HEADER_BYTES,
        .idle_timeout_ms = HTTP_IDLE_TIMEOUT_MS,
        .handler = relay_handle,
        .tls_cert_path = opts->cert_path,
        .tls_key_path = opts->key_path,
    };
    int rv;

    if (r == NULL) {
        snprintf(errmsg, 256, "out of memory");
        return -1;
    }
    r->opt = *opts;
    r->stun_port = -1;
    /* The relay's own key: clients learn it in the handshake, nothing pins
     * it, so a fresh one per process is enough. */
    randombytes_buf(dopts.private_key, sizeof dopts.private_key);
    dopts.verify_arg = r;
    rv = derp_server_new(&dopts, &r->derp);
    sodium_memzero(dopts.private_key, sizeof dopts.private_key);
    if (rv != 0) {
        snprintf(errmsg, 256, "out of memory");
        free(r);
        return -1;
    }
    hopts.handler_arg = r;
    rv = net_http_server_new(opts->loop, &hopts, &r->http, errmsg);
    if (rv != 0) {
        derp_server_free(r->derp);
        free(r);
        return -1;
    }
    if (opts->stun_listen_addr[0] != '\0') {
        rv = stun_server_new(opts->loop, opts->stun_listen_addr, &r->stun, errmsg);
        if (rv != 0) {
            r->closing_parts = 1;
            net_http_server_close(r->http, on_http_closed, r);
            return -1;
        }
        r->stun_port = stun_server_port(r->stun);
    }
    uv_timer_init(opts->loop, &r->keepalive);
    uv_check_init(opts->loop, &r->reaper);
    r->keepalive.data = r;
    r->reaper.data = r;
    uv_timer_start(&r->keepalive, on_keepalive, KEEPALIVE_MS, KEEPALIVE_MS);
    *out = r;
    return 0;
}

int relay_derp_port(const struct relay *r)
{
    return net_http_server_port(r->http);
}

int relay_stun_port(const struct relay *r)
{
    return r->stun_port;
}

void relay_close(struct relay *r, relay_close_cb cb, void *arg)
{
    r->close_cb = cb;
    r->close_arg = arg;
    while (r->conns != NULL)
        conn_kill(r->conns, "relay closing");
    r->closing_parts = 4 - (r->stun == NULL);
    net_http_server_close(r->http, on_http_closed, r);
    if (r->stun != NULL)
        stun_server_close(r->stun, on_stun_closed, r);
    uv_close((uv_handle_t *)&r->keepalive, on_handle_closed);
    uv_close((uv_handle_t *)&r->reaper, on_handle_closed);
}
