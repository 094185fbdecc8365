/* server/derp/relay.c: see relay.h. Each accepted DERP connection is a
 * struct relay_conn joining a raw (upgraded) socket to a derp_client: socket
 * bytes are fed to the core, the core's output is written to the socket.
 * A connection the core or the socket ends is freed at the end of the loop
 * iteration (a uv_check reaper), never from inside one of its callbacks.
 * Mesh: a struct mesh_peer per other replica with a relay joins an outgoing
 * upgraded connection (net_http_client_upgrade) to a derp_mesh_link. One
 * timer re-reads the replicas table every MESH_SCAN_MS (adding peers,
 * dropping those that left or moved) and dials the peers whose backoff has
 * run out; a link that ends is freed by the same reaper, which then plans
 * the next attempt. */
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

#define KEEPALIVE_MS 60000
/* The housekeeping tick: keepalives every KEEPALIVE_MS / TICK_MS ticks; a
 * connection still without a finished DERP handshake after LOGIN_TICKS
 * ticks is dropped, so idle half-open connections cannot pile up. */
#define TICK_MS               5000
#define LOGIN_TICKS           2
#define HTTP_IDLE_TIMEOUT_MS  30000
#define HTTP_MAX_HEADER_BYTES (16 * 1024)
#define FAST_START_HEADER     "Derp-Fast-Start"
#define CHALLENGE_HEADER      "X-Tailscale-Challenge"

#define MESH_SCAN_MS        2000
#define MESH_BACKOFF_MIN_MS 1000
#define MESH_BACKOFF_MAX_MS 30000
#define MESH_HANDSHAKE_MS   10000 /* connect, TLS and the upgrade */
/* Every relay sends each connection something at least every two keepalive
 * periods; a link silent for longer is dead even if TCP has not noticed. */
#define MESH_SILENCE_MS (2 * KEEPALIVE_MS + 30000)
/* Frames for a peer relay that stopped reading are dropped past this. */
#define MESH_MAX_BACKLOG_BYTES (4 * 1024 * 1024)
#define MESH_ADDRESS_BYTES     300

struct relay_conn {
    struct relay *relay;
    struct net_raw *raw;        /* NULL before the upgrade and once closed */
    struct derp_client *client; /* NULL once freed */
    uint8_t *pending;           /* core output before the socket is ours */
    size_t pending_len;
    bool is_dead;
    unsigned ticks_without_login;
    struct relay_conn *prev, *next; /* in relay->conns or relay->dead */
};

/* This relay's link to another replica's relay. Between attempts raw and
 * link are NULL and retry_at says when to dial again. */
struct mesh_peer {
    struct relay *relay;
    uint64_t replica_id;
    char address[MESH_ADDRESS_BYTES]; /* "host:port" dialled */
    char name[32];                    /* "replica <id>" */
    struct net_client_raw *raw;       /* the attempt, then the upgraded stream */
    struct derp_mesh_link *link;      /* from the 101 on */
    bool is_dead;                     /* ended: the reaper frees the link */
    bool is_listed;                   /* still in the replicas table; else freed once dead */
    unsigned failures;                /* attempts failed in a row (the first is logged) */
    unsigned backoff_ms;
    uint64_t retry_at; /* uv_now() of the next attempt */
    uint64_t up_at;    /* uv_now() of the 101; 0 while not up */
    uint64_t last_read_at;
    struct mesh_peer *next;
};

struct relay {
    struct relay_options opt;
    struct derp_server *derp;
    struct net_http_server *http;
    struct stun_server *stun;
    int stun_port;
    uv_timer_t keepalive; /* the housekeeping tick */
    uint64_t ticks;
    uv_check_t reaper;
    struct relay_conn *conns;
    struct relay_conn *dead;
    bool has_mesh;
    uv_timer_t mesh_timer; /* the next scan or attempt, whichever comes first */
    uint64_t next_scan_at; /* uv_now() */
    struct mesh_peer *peers;
    unsigned closing_parts; /* listener, STUN, timers, reaper still closing */
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

static void mesh_reap(struct relay *r);

static void reaper_run(uv_check_t *h)
{
    struct relay *r = h->data;

    while (r->dead != NULL) {
        struct relay_conn *c = r->dead;

        list_unlink(&r->dead, c);
        conn_free(c);
    }
    mesh_reap(r);
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

/* ---- mesh links to the other replicas' relays ---- */

static void mesh_on_timer(uv_timer_t *h);

static void mesh_schedule(struct relay *r)
{
    uint64_t now = uv_now(r->opt.loop);
    uint64_t due = r->next_scan_at;

    for (const struct mesh_peer *p = r->peers; p != NULL; p = p->next) {
        if (p->raw == NULL && !p->is_dead && p->retry_at < due)
            due = p->retry_at;
    }
    uv_timer_start(&r->mesh_timer, mesh_on_timer, due > now ? due - now : 0, 0);
}

/* Plans the next attempt. A link that stayed up a while starts the backoff
 * over; one the peer drops at once keeps doubling it. */
static void mesh_retry_later(struct mesh_peer *p)
{
    uint64_t now = uv_now(p->relay->opt.loop);

    if (p->up_at != 0 && now - p->up_at >= MESH_BACKOFF_MAX_MS)
        p->backoff_ms = MESH_BACKOFF_MIN_MS;
    p->up_at = 0;
    p->retry_at = now + p->backoff_ms;
    p->backoff_ms =
        p->backoff_ms * 2 < MESH_BACKOFF_MAX_MS ? p->backoff_ms * 2 : MESH_BACKOFF_MAX_MS;
}

/* An attempt failed before any link existed. */
static void mesh_attempt_failed(struct mesh_peer *p, const char *why)
{
    if (p->failures++ == 0)
        LOG_INFO("derp mesh: cannot link to replica %" PRIu64 " at %s: %s (retrying)",
                 p->replica_id, p->address, why);
    else
        LOG_DEBUG("derp mesh: cannot link to replica %" PRIu64 " at %s: %s", p->replica_id,
                  p->address, why);
    mesh_retry_later(p);
}

/* Ends the attempt or the link; the reaper frees the link at the end of the
 * loop iteration (the core may be calling from inside it). */
static void mesh_kill(struct mesh_peer *p, const char *reason)
{
    if (p->is_dead)
        return;
    p->is_dead = true;
    if (p->raw != NULL) {
        net_client_raw_close(p->raw, reason);
        p->raw = NULL;
    }
    if (p->link != NULL)
        LOG_INFO("derp mesh: link to replica %" PRIu64 " at %s down: %s", p->replica_id, p->address,
                 reason);
    uv_check_start(&p->relay->reaper, reaper_run);
}

static void mesh_reap(struct relay *r)
{
    struct mesh_peer **pp = &r->peers;
    bool has_reaped = false;

    while (*pp != NULL) {
        struct mesh_peer *p = *pp;

        if (!p->is_dead) {
            pp = &p->next;
            continue;
        }
        has_reaped = true;
        derp_mesh_link_free(p->link);
        p->link = NULL;
        p->is_dead = false;
        if (!p->is_listed) {
            *pp = p->next;
            free(p);
            continue;
        }
        mesh_retry_later(p);
        pp = &p->next;
    }
    if (has_reaped)
        mesh_schedule(r);
}

/* A peer relay that stops reading loses whole frames (relayed packets may
 * be lost) rather than growing the queue without bound. */
static int mesh_send(void *arg, const uint8_t *data, size_t len)
{
    struct mesh_peer *p = arg;

    if (p->is_dead || p->raw == NULL)
        return -1;
    if (net_client_raw_write_queued(p->raw) > MESH_MAX_BACKLOG_BYTES)
        return 0;
    return net_client_raw_write(p->raw, data, len) == 0 ? 0 : -1;
}

static void mesh_core_close(void *arg, const char *reason)
{
    mesh_kill(arg, reason);
}

static void mesh_on_read(void *arg, const uint8_t *data, size_t len)
{
    struct mesh_peer *p = arg;

    if (p->is_dead || p->link == NULL)
        return;
    p->last_read_at = uv_now(p->relay->opt.loop);
    if (derp_mesh_link_feed(p->link, data, len) != 0)
        mesh_kill(p, "DERP protocol error");
}

static void mesh_on_raw_close(void *arg, const char *reason)
{
    struct mesh_peer *p = arg;

    p->raw = NULL;
    mesh_kill(p, reason);
}

static void mesh_on_upgrade(void *arg, int status, int http_status)
{
    struct mesh_peer *p = arg;
    struct relay *r = p->relay;
    const struct derp_io io = {.send = mesh_send, .close = mesh_core_close};
    char why[64];

    if (status != NET_OK) {
        p->raw = NULL;
        if (status == NET_REFUSED)
            snprintf(why, sizeof why, "answered HTTP %d", http_status);
        else
            snprintf(why, sizeof why, "%s", net_strerror(status));
        mesh_attempt_failed(p, why);
        mesh_schedule(r);
        return;
    }
    p->link = derp_mesh_link_new(r->derp, &io, p, p->name);
    if (p->link == NULL) {
        LOG_WARN("derp mesh: no link to replica %" PRIu64 ": out of memory or too many links",
                 p->replica_id);
        mesh_kill(p, "no link");
        return;
    }
    p->failures = 0;
    p->up_at = p->last_read_at = uv_now(r->opt.loop);
    LOG_INFO("derp mesh: link to replica %" PRIu64 " at %s up", p->replica_id, p->address);
}

/* TLS without verification, as for every peer request: the mesh key in the
 * client info is what the other relay checks, and it is sealed to that
 * relay's key. */
static void mesh_dial(struct mesh_peer *p)
{
    const struct net_http_client_request req = {
        .address = p->address,
        .method = "GET",
        .path = "/derp",
        .extra_headers = "Upgrade: DERP\r\nConnection: Upgrade\r\n",
        .timeout_ms = MESH_HANDSHAKE_MS,
        .use_tls = true,
    };
    const struct net_raw_callbacks cb = {.on_read = mesh_on_read, .on_close = mesh_on_raw_close};
    int rv = net_http_client_upgrade(p->relay->opt.loop, &req, mesh_on_upgrade, &cb, p, &p->raw);

    if (rv != 0) {
        p->raw = NULL;
        mesh_attempt_failed(p, net_strerror(rv));
    }
}

/* The replicas table, read once per scan. */
struct mesh_target {
    uint64_t id;
    char address[MESH_ADDRESS_BYTES];
};

struct mesh_targets {
    uint64_t self;
    struct mesh_target *items;
    size_t n;
    size_t cap;
};

/* Dials the node's IPv4 address when it has one, else its name. */
static int mesh_collect(const ProtobufCMessage *record, void *arg)
{
    const Concord__Replica *rep = (const Concord__Replica *)record;
    const Concord__DerpNode *d = rep->derp;
    struct mesh_targets *ts = arg;
    const char *host;
    bool is_v6;

    if (rep->id == ts->self || d == NULL || d->derp_port == 0 || d->derp_port > 65535)
        return 0;
    host = d->ipv4[0] != '\0' && strcmp(d->ipv4, "none") != 0 ? d->ipv4 : d->host_name;
    if (host[0] == '\0')
        return 0;
    if (ts->n == ts->cap) {
        size_t cap = ts->cap == 0 ? 4 : 2 * ts->cap;
        struct mesh_target *bigger = realloc(ts->items, cap * sizeof *bigger);

        if (bigger == NULL)
            return STORE_NOMEM;
        ts->items = bigger;
        ts->cap = cap;
    }
    is_v6 = strchr(host, ':') != NULL;
    ts->items[ts->n].id = rep->id;
    snprintf(ts->items[ts->n].address, MESH_ADDRESS_BYTES, "%s%s%s:%u", is_v6 ? "[" : "", host,
             is_v6 ? "]" : "", d->derp_port);
    ts->n++;
    return 0;
}

static struct mesh_peer *mesh_find(struct relay *r, const struct mesh_target *t)
{
    for (struct mesh_peer *p = r->peers; p != NULL; p = p->next) {
        if (p->replica_id == t->id && strcmp(p->address, t->address) == 0)
            return p;
    }
    return NULL;
}

static void mesh_add(struct relay *r, const struct mesh_target *t)
{
    struct mesh_peer *p = calloc(1, sizeof *p);

    if (p == NULL) {
        LOG_WARN("derp mesh: out of memory for a link to replica %" PRIu64, t->id);
        return;
    }
    p->relay = r;
    p->replica_id = t->id;
    memcpy(p->address, t->address, sizeof p->address);
    snprintf(p->name, sizeof p->name, "replica %" PRIu64, t->id);
    p->is_listed = true;
    p->backoff_ms = MESH_BACKOFF_MIN_MS;
    p->retry_at = uv_now(r->opt.loop);
    p->next = r->peers;
    r->peers = p;
}

/* One peer per listed relay: new ones are added (dialled by the caller),
 * those that left the table or moved are dropped. */
static void mesh_scan(struct relay *r)
{
    struct mesh_targets ts = {.self = r->opt.replica_id};
    struct store_txn *t;
    int rv = store_txn_begin(r->opt.store, false, &t);

    if (rv == 0) {
        rv = store_replica_each(t, mesh_collect, &ts);
        store_txn_abort(t);
    }
    if (rv != 0) {
        LOG_WARN("derp mesh: cannot read the replicas: %s", store_strerror(rv));
        free(ts.items);
        return;
    }
    for (struct mesh_peer *p = r->peers; p != NULL; p = p->next)
        p->is_listed = false;
    for (size_t i = 0; i < ts.n; i++) {
        struct mesh_peer *p = mesh_find(r, &ts.items[i]);

        if (p != NULL)
            p->is_listed = true;
        else
            mesh_add(r, &ts.items[i]);
    }
    for (struct mesh_peer *p = r->peers; p != NULL; p = p->next) {
        if (!p->is_listed)
            mesh_kill(p, "no longer listed");
    }
    free(ts.items);
}

static void mesh_on_timer(uv_timer_t *h)
{
    struct relay *r = h->data;
    uint64_t now = uv_now(r->opt.loop);

    if (now >= r->next_scan_at) {
        mesh_scan(r);
        r->next_scan_at = now + MESH_SCAN_MS;
        for (struct mesh_peer *p = r->peers; p != NULL; p = p->next) {
            if (p->link != NULL && !p->is_dead && now - p->last_read_at > MESH_SILENCE_MS)
                mesh_kill(p, "silent for too long");
        }
    }
    for (struct mesh_peer *p = r->peers; p != NULL; p = p->next) {
        if (p->raw == NULL && !p->is_dead && p->retry_at <= now)
            mesh_dial(p);
    }
    mesh_schedule(r);
}

/* Closing: nothing calls back after the connections' close. */
static void mesh_free_all(struct relay *r)
{
    while (r->peers != NULL) {
        struct mesh_peer *p = r->peers;

        r->peers = p->next;
        if (p->raw != NULL)
            net_client_raw_close(p->raw, "relay closing");
        derp_mesh_link_free(p->link);
        free(p);
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

static void on_tick(uv_timer_t *t)
{
    struct relay *r = t->data;
    uint8_t key[DERP_KEY_BYTES];

    for (struct relay_conn *c = r->conns, *next; c != NULL; c = next) {
        next = c->next;
        if (c->client != NULL && !derp_client_key(c->client, key) &&
            ++c->ticks_without_login > LOGIN_TICKS)
            conn_kill(c, "no DERP handshake in time");
    }
    if (++r->ticks % (KEEPALIVE_MS / TICK_MS) == 0)
        derp_server_keepalive(r->derp);
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
    struct derp_options dopts = {.verify = verify_node, .mesh_key = opts->mesh_key};
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
    r->opt.mesh_key = NULL; /* borrowed for relay_new only: the core keeps its copy */
    r->has_mesh = opts->mesh_key != NULL;
    r->stun_port = -1;
    /* The relay's own key: clients learn it in the handshake, nothing pins
     * it, so a fresh one per process is enough. */
    randombytes_buf(dopts.private_key, sizeof dopts.private_key);
    dopts.verify_arg = r;
    rv = derp_server_new(&dopts, &r->derp);
    sodium_memzero(dopts.private_key, sizeof dopts.private_key);
    if (rv != 0) {
        snprintf(errmsg, 256, "out of memory, or a mesh key that is not 64 hex characters");
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
    uv_timer_init(opts->loop, &r->mesh_timer);
    uv_check_init(opts->loop, &r->reaper);
    r->keepalive.data = r;
    r->mesh_timer.data = r;
    r->reaper.data = r;
    uv_timer_start(&r->keepalive, on_tick, TICK_MS, TICK_MS);
    if (r->has_mesh)
        uv_timer_start(&r->mesh_timer, mesh_on_timer, 0, 0);
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
    mesh_free_all(r);
    r->closing_parts = 5 - (r->stun == NULL);
    net_http_server_close(r->http, on_http_closed, r);
    if (r->stun != NULL)
        stun_server_close(r->stun, on_stun_closed, r);
    uv_close((uv_handle_t *)&r->keepalive, on_handle_closed);
    uv_close((uv_handle_t *)&r->mesh_timer, on_handle_closed);
    uv_close((uv_handle_t *)&r->reaper, on_handle_closed);
}
