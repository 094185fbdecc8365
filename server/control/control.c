/* server/control/control.c: the control object, the plain-HTTP routes (/key,
 * the /ts2021 upgrade, /register/<id>, /generate_204) and the Noise
 * connections: bytes from the socket are decrypted into the HTTP/2 session,
 * whose output is encrypted back onto the socket. */
#include "server/control/control_internal.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>
#include <sodium.h>

#include "server/log.h"

#define UPGRADE_TOKEN    "tailscale-control-protocol"
#define HANDSHAKE_HEADER "X-Tailscale-Handshake"
#define GC_INTERVAL_MS   5000
#define KEY_RETRY_MS     1000
#define MAX_BODY_BYTES   (1024 * 1024)

int64_t ctl_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

Concord__Command *ctl_command_new(struct control *c)
{
    Concord__Command *cmd = calloc(1, sizeof *cmd);
    char actor[32];

    if (cmd == NULL)
        return NULL;
    concord__command__init(cmd);
    snprintf(actor, sizeof actor, "replica:%" PRIu64, c->opt.replica_id);
    cmd->actor = strdup(actor);
    if (cmd->actor == NULL) {
        free(cmd);
        return NULL;
    }
    cmd->proposed_unix_ms = ctl_now_ms();
    return cmd;
}

/* ---- connections ---- */

static void conn_unlink(struct ctl_conn **list, struct ctl_conn *conn)
{
    if (conn->prev != NULL)
        conn->prev->next = conn->next;
    else
        *list = conn->next;
    if (conn->next != NULL)
        conn->next->prev = conn->prev;
    conn->prev = conn->next = NULL;
}

static void conn_push(struct ctl_conn **list, struct ctl_conn *conn)
{
    conn->next = *list;
    if (*list != NULL)
        (*list)->prev = conn;
    *list = conn;
}

static void reaper_run(uv_check_t *h);

/* Marks the connection dead; the reaper frees it once no callback of its own
 * is on the stack. */
void ctl_conn_close(struct ctl_conn *conn, const char *reason)
{
    struct control *c = conn->ctl;

    if (conn->is_dead)
        return;
    LOG_DEBUG("control conn=%" PRIu64 " peer=%s closing: %s", conn->id, conn->peer, reason);
    conn->is_dead = true;
    if (conn->raw != NULL) {
        net_raw_close(conn->raw, reason);
        conn->raw = NULL;
    }
    conn_unlink(&c->conns, conn);
    conn_push(&c->dead, conn);
    c->n_conns--;
    uv_check_start(&c->reaper, reaper_run);
}

static void conn_free(struct ctl_conn *conn)
{
    h2_session_free(conn->h2); /* ends every stream: requests and sessions detach */
    noise_session_wipe(&conn->noise);
    free(conn);
}

static void reaper_run(uv_check_t *h)
{
    struct control *c = h->data;

    while (c->dead != NULL) {
        struct ctl_conn *conn = c->dead;

        conn_unlink(&c->dead, conn);
        conn_free(conn);
    }
    uv_check_stop(h);
}

static int conn_on_plain(void *arg, const uint8_t *plain, size_t len)
{
    struct ctl_conn *conn = arg;

    if (len == 0 || conn->is_dead)
        return 0;
    return h2_session_feed(conn->h2, plain, len) != 0 ? -1 : 0;
}

static void conn_on_read(void *arg, const uint8_t *data, size_t len)
{
    struct ctl_conn *conn = arg;
    int rv;

    if (conn->is_dead)
        return;
    conn->last_read_ms = uv_now(conn->ctl->opt.loop);
    rv = noise_reader_feed(&conn->reader, data, len, conn_on_plain, conn);
    if (rv != 0) {
        const char *why = rv > 0 ? noise_strerror(rv) : "HTTP/2 protocol error";

        LOG_INFO("control: %s: dropping the connection: %s", conn->peer, why);
        ctl_conn_close(conn, why);
        return;
    }
    if (h2_session_is_done(conn->h2))
        ctl_conn_close(conn, "HTTP/2 session done");
}

/* Liveness, on its own timer (never behind map building): a connection
 * that has been quiet for an interval gets a PING; one that stays quiet for
 * another interval after its PING is gone (a vanished client, a frozen
 * process, a cut link: nothing ever sends a FIN), and its map sessions end,
 * which marks the node offline cluster-wide. */
static void on_ping_timer(uv_timer_t *t)
{
    struct control *c = t->data;
    uint64_t now = uv_now(c->opt.loop);
    uint64_t interval = c->opt.ping_interval_ms;

    for (struct ctl_conn *conn = c->conns, *next; conn != NULL; conn = next) {
        next = conn->next;
        if (conn->ping_sent_ms != 0 && conn->last_read_ms < conn->ping_sent_ms &&
            now - conn->ping_sent_ms >= interval) {
            LOG_INFO("control: %s: no answer to a PING within %" PRIu64
                     " ms: dropping the connection",
                     conn->peer, interval);
            ctl_conn_close(conn, "liveness PING unanswered");
            continue;
        }
        if (now - conn->last_read_ms < interval ||
            (conn->ping_sent_ms != 0 && conn->last_read_ms < conn->ping_sent_ms))
            continue;
        conn->ping_sent_ms = now;
        if (h2_session_ping(conn->h2) != 0)
            ctl_conn_close(conn, "cannot send a liveness PING");
    }
}

static void conn_on_raw_close(void *arg, const char *reason)
{
    struct ctl_conn *conn = arg;

    conn->raw = NULL;
    ctl_conn_close(conn, reason);
}

/* HTTP/2 output: sealed into Noise records and queued on the socket. */
static int conn_h2_send(void *arg, const uint8_t *data, size_t len)
{
    struct ctl_conn *conn = arg;
    size_t cap = noise_sealed_size(len);
    uint8_t stack[8192];
    uint8_t *out = cap <= sizeof stack ? stack : malloc(cap);
    size_t out_len;
    int rv;

    if (conn->raw == NULL || out == NULL)
        return -1;
    rv = noise_seal(&conn->noise, data, len, out, &out_len);
    if (rv == 0)
        rv = net_raw_write(conn->raw, out, out_len);
    if (out != stack)
        free(out);
    return rv == 0 ? 0 : -1;
}

static void conn_h2_request(void *arg, struct h2_stream *st, const struct h2_request *req)
{
    ctl_machine_request(arg, st, req);
}

static void conn_h2_stream_close(void *arg, struct h2_stream *st, void *user)
{
    ctl_machine_stream_closed(arg, st, user);
}

/* ---- plain HTTP routes ---- */

static void handle_key(struct control *c, struct net_http_request *req)
{
    char mkey[NOISE_KEY_TEXT_MAX];
    char body[256];
    int n;

    noise_key_format("mkey:", c->opt.noise_key.pub, mkey);
    n = snprintf(body, sizeof body,
                 "{\"legacyPublicKey\":\"mkey:0000000000000000000000000000000000000000000000000000"
                 "000000000000\",\"publicKey\":\"%s\"}",
                 mkey);
    net_http_respond(req, 200, "application/json", NULL, body, (size_t)n);
}

static void respond_text(struct net_http_request *req, int status, const char *text)
{
    net_http_respond(req, status, "text/plain; charset=utf-8", NULL, text, strlen(text));
}

static bool header_has_token(const char *value, const char *token)
{
    size_t len = strlen(token);

    for (const char *p = value; p != NULL && *p != '\0';) {
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        if (strncasecmp(p, token, len) == 0 && (p[len] == '\0' || p[len] == ',' || p[len] == ' '))
            return true;
        p = strchr(p, ',');
    }
    return false;
}

static int decode_handshake(const char *text, uint8_t init[NOISE_INIT_BYTES])
{
    size_t len = 0;

    if (text == NULL ||
        sodium_base642bin(init, NOISE_INIT_BYTES, text, strlen(text), NULL, &len, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        len != NOISE_INIT_BYTES)
        return -1;
    return 0;
}

static void handle_upgrade(struct control *c, struct net_http_request *req)
{
    static const char head[] = "HTTP/1.1 101 Switching Protocols\r\n"
                               "Upgrade: " UPGRADE_TOKEN "\r\n"
                               "Connection: upgrade\r\n\r\n";
    const char *upgrade = net_http_header_get(req, "Upgrade");
    const struct net_raw_callbacks cb = {.on_read = conn_on_read, .on_close = conn_on_raw_close};
    struct h2_options h2o = {
        .max_body_bytes = MAX_BODY_BYTES,
        .cb = {.on_request = conn_h2_request,
               .on_stream_close = conn_h2_stream_close,
               .send = conn_h2_send},
    };
    uint8_t init[NOISE_INIT_BYTES];
    uint8_t out[sizeof head - 1 + NOISE_RESP_BYTES];
    struct ctl_conn *conn;
    uint16_t version;
    int rv;

    if (upgrade == NULL || !header_has_token(upgrade, UPGRADE_TOKEN)) {
        respond_text(req, 400, "missing or unsupported Upgrade header\n");
        return;
    }
    if (c->is_key_rejected) {
        respond_text(req, 503, "this replica's Noise key differs from the cluster's\n");
        return;
    }
    if (decode_handshake(net_http_header_get(req, HANDSHAKE_HEADER), init) != 0) {
        LOG_INFO("control: %s: refused upgrade: bad %s header", req->peer, HANDSHAKE_HEADER);
        respond_text(req, 400, "missing or malformed " HANDSHAKE_HEADER " header\n");
        return;
    }
    version = (uint16_t)((init[0] << 8) | init[1]);
    if (version < CTL_MIN_CAPVER) {
        LOG_INFO("control: %s: refused client capability version %u (< %u)", req->peer, version,
                 CTL_MIN_CAPVER);
        respond_text(req, 400, "client too old: Tailscale v1.80 or newer is required\n");
        return;
    }
    conn = calloc(1, sizeof *conn);
    if (conn == NULL) {
        respond_text(req, 500, "out of memory\n");
        return;
    }
    rv = noise_respond(&c->opt.noise_key, init, NULL, out + sizeof head - 1, &conn->noise);
    if (rv != 0) {
        LOG_INFO("control: %s: Noise handshake failed: %s", req->peer, noise_strerror(rv));
        free(conn);
        respond_text(req, 400, "Noise handshake failed\n");
        return;
    }
    h2o.arg = conn;
    if (h2_session_new(&h2o, &conn->h2) != 0) {
        noise_session_wipe(&conn->noise);
        free(conn);
        respond_text(req, 500, "out of memory\n");
        return;
    }
    memcpy(out, head, sizeof head - 1);
    noise_reader_init(&conn->reader, &conn->noise);
    conn->ctl = c;
    conn->id = c->next_conn_id++;
    conn->last_read_ms = uv_now(c->opt.loop);
    snprintf(conn->peer, sizeof conn->peer, "%s", req->peer);
    conn_push(&c->conns, conn);
    c->n_conns++;
    /* The raw handle exists before any callback can use it: reads start
     * inside net_http_upgrade, after it has set up the handle. */
    conn->raw = net_http_upgrade(req, out, sizeof out, &cb, conn);
    if (conn->raw == NULL) {
        ctl_conn_close(conn, "connection lost during the upgrade");
        return;
    }
    LOG_DEBUG("control conn=%" PRIu64 " peer=%s Noise session up, client version %u", conn->id,
              conn->peer, version);
    if (h2_session_flush(conn->h2) != 0)
        ctl_conn_close(conn, "cannot send HTTP/2 settings");
}

static void html_escape(const char *in, char *out, size_t cap)
{
    size_t n = 0;

    for (; *in != '\0' && n + 7 < cap; in++) {
        const char *rep = *in == '<' ? "&lt;" : *in == '>' ? "&gt;" : *in == '&' ? "&amp;" : NULL;

        if (rep != NULL) {
            n += (size_t)snprintf(out + n, cap - n, "%s", rep);
        } else {
            out[n++] = *in;
        }
    }
    out[n] = '\0';
}

static void handle_register_page(struct net_http_request *req)
{
    const char *id = req->path + strlen("/register/");
    char safe[128];
    char body[1024];
    int n;

    html_escape(id, safe, sizeof safe);
    n = snprintf(body, sizeof body,
                 "<!DOCTYPE html>\n<html><head><title>concord: register a machine</title></head>"
                 "<body><h1>Machine registration</h1>"
                 "<p>An operator approves this machine on any replica with:</p>"
                 "<pre>concord auth register --auth-id %s --user USERNAME</pre>"
                 "</body></html>\n",
                 safe);
    net_http_respond(req, 200, "text/html; charset=utf-8", NULL, body, (size_t)n);
}

bool control_handle(struct control *c, struct net_http_request *req)
{
    const char *path = req->path;

    if (c->is_closing)
        return false;
    if (strcmp(path, "/key") == 0 && strcmp(req->method, "GET") == 0) {
        handle_key(c, req);
        return true;
    }
    if (strcmp(path, "/ts2021") == 0) {
        if (strcmp(req->method, "POST") != 0)
            respond_text(req, 405, "POST with Upgrade: " UPGRADE_TOKEN " expected\n");
        else
            handle_upgrade(c, req);
        return true;
    }
    if (strncmp(path, "/register/", strlen("/register/")) == 0 && strcmp(req->method, "GET") == 0) {
        handle_register_page(req);
        return true;
    }
    if (strcmp(path, "/generate_204") == 0) {
        net_http_respond(req, 204, NULL, NULL, NULL, 0);
        return true;
    }
    return false;
}

/* ---- the recorded Noise key ---- */

static void key_recorded(void *arg, int status, const Concord__CommandResult *result)
{
    struct control *c = arg;

    if (status != CLUSTER_OK)
        return; /* retried by the timer */
    if (result->code == CLUSTER_RESULT_OK) {
        c->is_key_recorded = true;
        return;
    }
    c->is_key_recorded = true;
    c->is_key_rejected = true;
    LOG_ERROR("control: this replica's Noise key (noise.private_key_path) differs from the one "
              "the cluster uses; clients are refused here until every replica has the same key "
              "file");
    ctl_sessions_close_all(c);
}

static void propose_key(struct control *c)
{
    Concord__Command *cmd = ctl_command_new(c);
    Concord__SetControlSettings *op = calloc(1, sizeof *op);
    Concord__ControlSettings *cs = calloc(1, sizeof *cs);
    uint8_t *key = malloc(NOISE_KEY_BYTES);

    if (cmd == NULL || op == NULL || cs == NULL || key == NULL) {
        free(key);
        free(cs);
        free(op);
        if (cmd != NULL)
            concord__command__free_unpacked(cmd, NULL);
        return;
    }
    concord__set_control_settings__init(op);
    concord__control_settings__init(cs);
    memcpy(key, c->opt.noise_key.pub, NOISE_KEY_BYTES);
    cs->noise_public_key = (ProtobufCBinaryData){.len = NOISE_KEY_BYTES, .data = key};
    op->settings = cs;
    cmd->op_case = CONCORD__COMMAND__OP_SET_CONTROL_SETTINGS;
    cmd->set_control_settings = op;
    if (cluster_submit(c->opt.cluster, cmd, key_recorded, c) != 0)
        concord__command__free_unpacked(cmd, NULL);
}

/* Every GC_INTERVAL_MS: make sure the key is recorded, collect ephemeral
 * nodes (the leader does). */
static void on_gc_timer(uv_timer_t *t)
{
    struct control *c = t->data;

    if (!c->is_key_recorded)
        propose_key(c);
    ctl_close_stale_sessions(c);
    ctl_derpmap_announce(c);
    ctl_gc_ephemeral(c);
}

/* ---- lifecycle ---- */

static int check_recorded_key(struct control *c, char *errmsg)
{
    Concord__ControlSettings *cs = NULL;
    struct store_txn *t;
    int rv = store_txn_begin(c->opt.store, false, &t);

    if (rv != 0) {
        snprintf(errmsg, 256, "store: %s", store_strerror(rv));
        return -1;
    }
    rv = store_control_get(t, &cs);
    store_txn_abort(t);
    if (rv == STORE_NOTFOUND)
        return 0;
    if (rv != 0) {
        snprintf(errmsg, 256, "store: %s", store_strerror(rv));
        return -1;
    }
    rv = cs->noise_public_key.len == NOISE_KEY_BYTES &&
                 memcmp(cs->noise_public_key.data, c->opt.noise_key.pub, NOISE_KEY_BYTES) == 0
             ? 0
             : -1;
    store_record_free(cs);
    if (rv != 0) {
        snprintf(errmsg, 256,
                 "the Noise key in noise.private_key_path is not the one this cluster uses: "
                 "copy the key file from a running replica");
        return -1;
    }
    c->is_key_recorded = true;
    return 0;
}

static char **strings_copy(const char *const *in, size_t n)
{
    char **out = calloc(n + 1, sizeof *out);

    for (size_t i = 0; out != NULL && i < n; i++) {
        out[i] = strdup(in[i]);
        if (out[i] == NULL) {
            for (size_t j = 0; j < i; j++)
                free(out[j]);
            free(out);
            return NULL;
        }
    }
    return out;
}

static void strings_free(char **s)
{
    for (size_t i = 0; s != NULL && s[i] != NULL; i++)
        free(s[i]);
    free(s);
}

static void control_release(struct control *c)
{
    mapenc_compressor_free(c->zstd);
    jw_free(&c->scratch);
    ctl_idmap_free(&c->changed_nodes);
    ctl_idmap_free(&c->changed_users);
    ctl_idmap_free(&c->replica_heard);
    free(c->server_url);
    ctl_derpmap_free(c);
    ctl_policy_free(c);
    free(c->base_domain);
    strings_free(c->nameservers);
    strings_free(c->search_domains);
    sodium_memzero(&c->opt.noise_key, sizeof c->opt.noise_key);
    free(c);
}

int control_new(const struct control_options *opts, struct control **out, char *errmsg)
{
    struct control *c = calloc(1, sizeof *c);

    if (c == NULL) {
        snprintf(errmsg, 256, "out of memory");
        return -1;
    }
    c->opt = *opts;
    c->started_unix_ms = ctl_now_ms();
    c->server_url = strdup(opts->server_url);
    c->base_domain = strdup(opts->dns.base_domain != NULL ? opts->dns.base_domain : "");
    c->nameservers = strings_copy(opts->dns.nameservers, opts->dns.n_nameservers);
    c->search_domains = strings_copy(opts->dns.search_domains, opts->dns.n_search_domains);
    c->zstd = mapenc_compressor_new();
    jw_init(&c->scratch);
    if (c->server_url == NULL || c->base_domain == NULL || c->nameservers == NULL ||
        c->search_domains == NULL || c->zstd == NULL) {
        snprintf(errmsg, 256, "out of memory");
        control_release(c);
        return -1;
    }
    c->opt.dns.base_domain = c->base_domain;
    c->opt.dns.nameservers = (const char *const *)c->nameservers;
    c->opt.dns.search_domains = (const char *const *)c->search_domains;
    if (ctl_derpmap_init(c, opts->derp_map_json, errmsg) != 0 ||
        check_recorded_key(c, errmsg) != 0) {
        control_release(c);
        return -1;
    }
    if (ctl_policy_init(c) != 0) {
        snprintf(errmsg, 256, "cannot load the state into the policy engine");
        control_release(c);
        return -1;
    }
    uv_check_init(opts->loop, &c->reaper);
    uv_timer_init(opts->loop, &c->update_timer);
    uv_timer_init(opts->loop, &c->delta_timer);
    uv_timer_init(opts->loop, &c->gc_timer);
    uv_timer_init(opts->loop, &c->ping_timer);
    c->reaper.data = c;
    c->update_timer.data = c;
    c->delta_timer.data = c;
    c->gc_timer.data = c;
    c->ping_timer.data = c;
    c->open_handles = 6;
    ctl_presence_start(c);
    if (c->opt.ping_interval_ms > 0)
        uv_timer_start(&c->ping_timer, on_ping_timer, c->opt.ping_interval_ms / 4,
                       c->opt.ping_interval_ms / 4);
    uv_timer_start(&c->gc_timer, on_gc_timer, c->is_key_recorded ? GC_INTERVAL_MS : KEY_RETRY_MS,
                   GC_INTERVAL_MS);
    *out = c;
    return 0;
}

static void on_handle_closed(uv_handle_t *h)
{
    struct control *c = h->data;

    c->open_handles--;
}

void control_free(struct control *c)
{
    if (c == NULL)
        return;
    /* control_close ran at least one loop iteration ago (the cluster closed
     * since), so its handles are closed. */
    assert(c->open_handles == 0);
    control_release(c);
}

void control_close(struct control *c)
{
    if (c == NULL)
        return;
    c->is_closing = true;
    ctl_sessions_close_all(c);
    while (c->conns != NULL)
        ctl_conn_close(c->conns, "server closing");
    while (c->dead != NULL) {
        struct ctl_conn *conn = c->dead;

        conn_unlink(&c->dead, conn);
        conn_free(conn);
    }
    ctl_followups_free(c);
    ctl_updates_free(c);
    uv_close((uv_handle_t *)&c->reaper, on_handle_closed);
    uv_close((uv_handle_t *)&c->update_timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->delta_timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->gc_timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->ping_timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->presence_timer, on_handle_closed);
}

void control_applied(void *arg, uint64_t index, const Concord__Command *cmd,
                     const Concord__CommandResult *result)
{
    struct control *c = arg;

    (void)index;
    if (c == NULL || c->is_closing)
        return;
    if (cmd->op_case == CONCORD__COMMAND__OP_APPROVE_REGISTRATION &&
        result->code == CLUSTER_RESULT_OK)
        ctl_followups_wake(c, cmd->approve_registration->auth_id);
    ctl_presence_applied(c, cmd);
    ctl_map_note_applied(c, cmd, result);
}

void control_counts(const struct control *c, size_t *connections, size_t *sessions)
{
    *connections = c->n_conns;
    *sessions = c->n_sessions;
}
