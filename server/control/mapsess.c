/* server/control/mapsess.c: /machine/map (tailscale-control-protocol.md
 * section 8): lite updates, streaming map sessions, and the deltas every
 * session of this replica gets when applied commands change what it shows.
 *
 * Lite updates are coalesced per node and proposed as one UpdateNodes command
 * per batch; each is answered once its batch is applied. A stream gets the
 * full map at once, then deltas: the commands applied in one short window are
 * collected (node ids, user ids), each changed node is encoded once, and each
 * session gets one message with the peers it must add or replace
 * (PeersChanged), patch (PeersChangedPatch: only patchable fields changed,
 * known by comparing the static hash it was last sent) or drop
 * (PeersRemoved), its own node if that changed, and new user profiles.
 * A session is announced to the cluster (OpenSession) for presence and
 * withdrawn when its stream ends. */
#include "server/control/control_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "server/log.h"

#define UPDATE_BATCH_MS     10
#define DELTA_BATCH_MS      5
#define KEEPALIVE_JITTER_MS 9000
#define MAX_PENDING_BYTES   (32u * 1024 * 1024)
#define MAX_BATCHED_UPDATES 1024

/* ---- small helpers ---- */

/* Detects changes of what a session was sent; never 0. */
static uint64_t text_hash(const char *text)
{
    uint64_t h;

    crypto_generichash((unsigned char *)&h, sizeof h, (const unsigned char *)text, strlen(text),
                       NULL, 0);
    return h != 0 ? h : 1;
}

static bool same_bytes(const ProtobufCBinaryData *a, const uint8_t *b, size_t len)
{
    return a->len == len && (len == 0 || memcmp(a->data, b, len) == 0);
}

static void view_of(const struct control *c, const Concord__Node *n, enum mapenc_presence p,
                    struct mapenc_node_view *v)
{
    memset(v, 0, sizeof *v);
    v->node = n;
    v->base_domain = c->opt.dns.magic_dns ? c->opt.dns.base_domain : NULL;
    v->presence = p;
    v->now_unix_ms = ctl_now_ms();
}

static int count_session(const ProtobufCMessage *record, void *arg)
{
    (void)record;
    *(bool *)arg = true;
    return 1; /* one is enough */
}

bool ctl_node_is_online(struct store_txn *t, uint64_t node_id)
{
    bool is_online = false;

    store_session_each_of_node(t, node_id, count_session, &is_online);
    return is_online;
}

static int oldest_session(const ProtobufCMessage *record, void *arg)
{
    const Concord__Session *s = (const Concord__Session *)record;
    uint64_t *since = arg;
    /* 1 at least: 0 means offline. */
    uint64_t opened = s->opened_index > 0 ? s->opened_index : 1;

    if (*since == 0 || opened < *since)
        *since = opened;
    return 0;
}

uint64_t ctl_node_online_since(struct store_txn *t, uint64_t node_id)
{
    uint64_t since = 0;

    store_session_each_of_node(t, node_id, oldest_session, &since);
    return since;
}

/* ---- sending ---- */

static void session_end_stream(struct ctl_session *s, const char *reason);

static void on_keepalive(uv_timer_t *t);

/* Keepalives every interval plus up to 9 s of jitter, as the reference
 * servers do, so that sessions opened together do not stay in step. */
static void keepalive_arm(struct ctl_session *s)
{
    uint64_t jitter = randombytes_uniform(KEEPALIVE_JITTER_MS);

    uv_timer_start(&s->keepalive, on_keepalive, s->ctl->opt.keepalive_ms + jitter, 0);
}

/* Frames and queues one MapResponse; false if the session had to end. */
static bool session_send(struct ctl_session *s, const struct jw *w)
{
    struct ctl_conn *conn = s->conn;
    uint8_t *frame;
    size_t len;

    if (s->st == NULL || conn->is_dead)
        return false;
    if (jw_failed(w) ||
        mapenc_frame(s->ctl->zstd, s->compress, w->buf, w->len, &frame, &len) != 0) {
        session_end_stream(s, "out of memory");
        return false;
    }
    if (h2_stream_write(conn->h2, s->st, frame, len) != 0) {
        free(frame);
        session_end_stream(s, "stream write failed");
        return false;
    }
    free(frame);
    if (h2_stream_pending(s->st) > MAX_PENDING_BYTES) {
        /* The client does not read: drop the connection, it will come back
         * and start over with a full map. */
        ctl_conn_close(conn, "map stream backlog too large");
        return false;
    }
    if (h2_session_flush(conn->h2) != 0) {
        ctl_conn_close(conn, "cannot send");
        return false;
    }
    keepalive_arm(s);
    return true;
}

static void on_keepalive(uv_timer_t *t)
{
    struct ctl_session *s = t->data;
    struct jw w;

    jw_init(&w);
    jw_obj_begin(&w);
    jw_key(&w, "KeepAlive");
    jw_bool(&w, true);
    jw_obj_end(&w);
    session_send(s, &w);
    jw_free(&w);
}

/* ---- the full map ---- */

struct full_walk {
    struct ctl_session *s;
    struct store_txn *t;
    struct jw *w;
    bool has_peers;
};

static int note_user(struct ctl_session *s, const Concord__Node *n)
{
    uint64_t uid = n->n_tags > 0 ? MAPENC_TAGGED_USER_ID : n->user_id;

    return ctl_idmap_put(&s->users, uid, 1);
}

static int full_peer(const ProtobufCMessage *record, void *arg)
{
    const Concord__Node *n = (const Concord__Node *)record;
    struct full_walk *fw = arg;
    struct ctl_session *s = fw->s;
    struct mapenc_node_view v;
    char *allowed_ips;
    char *primary_routes;
    char *cap_map;
    int rv = 0;

    if (n->id == s->node_id || !ctl_policy_visible(s->ctl, s->node_id, n->id))
        return 0;
    if (ctl_policy_routes_json(s->ctl, s->node_id, n, &allowed_ips, &primary_routes) != 0)
        return STORE_NOMEM;
    cap_map = ctl_policy_peer_capmap_json(s->ctl, n->id);
    view_of(s->ctl, n,
            ctl_node_is_online(fw->t, n->id) ? MAPENC_PRESENCE_ONLINE : MAPENC_PRESENCE_OFFLINE,
            &v);
    v.allowed_ips_json = allowed_ips;
    v.primary_routes_json = primary_routes;
    v.cap_map_json = cap_map;
    if (!fw->has_peers) {
        jw_key(fw->w, "Peers");
        jw_arr_begin(fw->w);
        fw->has_peers = true;
    }
    mapenc_node(fw->w, &v);
    if (ctl_idmap_put(&s->peers, n->id, mapenc_node_static_hash(&v)) != 0 || note_user(s, n) != 0)
        rv = STORE_NOMEM;
    free(allowed_ips);
    free(primary_routes);
    free(cap_map);
    return rv;
}

static void render_profiles(struct store_txn *t, struct jw *w, const struct ctl_idmap *users)
{
    for (size_t i = 0; i < users->cap; i++) {
        Concord__User *u = NULL;
        uint64_t id = users->keys[i];

        if (id == 0)
            continue;
        if (id == MAPENC_TAGGED_USER_ID) {
            mapenc_tagged_profile(w);
        } else if (store_user_get(t, id, &u) == 0) {
            mapenc_user_profile(w, u);
            store_record_free(u);
        }
    }
}

static void render_dns(const struct control *c, struct jw *w)
{
    const struct control_dns *d = &c->opt.dns;
    struct mapenc_dns md = {
        .magic_dns = d->magic_dns,
        .base_domain = d->base_domain,
        .nameservers = d->nameservers,
        .n_nameservers = d->n_nameservers,
        .search_domains = d->search_domains,
        .n_search_domains = d->n_search_domains,
    };

    mapenc_dns_config(w, &md);
}

/* The session's own node, with its capabilities and routes. Renders into w
 * only when it differs from what was last sent or `always`; false when out
 * of memory. */
static bool render_self(struct ctl_session *s, const Concord__Node *self, struct jw *w, bool always)
{
    struct mapenc_node_view v;
    char *cap_map = ctl_policy_capmap_json(s->ctl, self->id);
    char *allowed_ips = NULL;
    char *primary_routes = NULL;
    uint64_t h;

    if (cap_map == NULL ||
        ctl_policy_routes_json(s->ctl, self->id, self, &allowed_ips, &primary_routes) != 0) {
        free(cap_map);
        return false;
    }
    view_of(s->ctl, self, MAPENC_PRESENCE_ONLINE, &v);
    v.cap_map_json = cap_map;
    v.allowed_ips_json = allowed_ips;
    v.primary_routes_json = primary_routes;
    h = mapenc_node_static_hash(&v);
    if (always || h != s->self_hash) {
        jw_key(w, "Node");
        mapenc_node(w, &v);
        s->self_hash = h;
    }
    free(cap_map);
    free(allowed_ips);
    free(primary_routes);
    return true;
}

/* PacketFilter or SSHPolicy (`key`) into w when it differs from what was
 * last sent (*last) or `always`; false when out of memory. */
static bool render_policy_part(struct jw *w, const char *key, char *json, uint64_t *last,
                               bool always)
{
    uint64_t h;

    if (json == NULL)
        return false;
    h = text_hash(json);
    if (always || h != *last) {
        jw_key(w, key);
        jw_raw(w, json, strlen(json));
        *last = h;
    }
    free(json);
    return true;
}

/* The complete picture; also sent again after a state restore. */
static int session_send_full(struct ctl_session *s)
{
    struct control *c = s->ctl;
    Concord__Node *self = NULL;
    struct store_txn *t;
    struct full_walk fw = {.s = s};
    struct jw w;
    int rv = store_txn_begin(c->opt.store, false, &t);

    if (rv != 0)
        return rv;
    rv = store_node_get(t, s->node_id, &self);
    if (rv != 0) {
        store_txn_abort(t);
        return rv;
    }
    ctl_policy_sync(c, t);
    jw_init(&w);
    fw.t = t;
    fw.w = &w;
    ctl_idmap_free(&s->peers);
    ctl_idmap_free(&s->users);
    jw_obj_begin(&w);
    rv = render_self(s, self, &w, true) ? note_user(s, self) : STORE_NOMEM;
    if (rv == 0)
        rv = store_node_each(t, full_peer, &fw);
    if (fw.has_peers)
        jw_arr_end(&w);
    if (c->derp_map_json != NULL) {
        jw_key(&w, "DERPMap");
        jw_raw(&w, c->derp_map_json, c->derp_map_len);
    }
    jw_key(&w, "DNSConfig");
    render_dns(c, &w);
    jw_key(&w, "Domain");
    jw_str(&w, c->opt.dns.base_domain[0] != '\0' ? c->opt.dns.base_domain : "concord");
    if (rv == 0 && !render_policy_part(&w, "PacketFilter", ctl_policy_filter_json(c, s->node_id),
                                       &s->filter_hash, true))
        rv = STORE_NOMEM;
    jw_key(&w, "UserProfiles");
    jw_arr_begin(&w);
    render_profiles(t, &w, &s->users);
    jw_arr_end(&w);
    if (rv == 0 && !render_policy_part(&w, "SSHPolicy", ctl_policy_ssh_json(c, s->node_id),
                                       &s->ssh_hash, true))
        rv = STORE_NOMEM;
    jw_key(&w, "ControlTime");
    jw_time(&w, ctl_now_ms());
    jw_key(&w, "Debug");
    jw_raw(&w, "{\"DisableLogTail\":true}", strlen("{\"DisableLogTail\":true}"));
    jw_obj_end(&w);
    store_txn_abort(t);
    store_record_free(self);
    if (rv == 0)
        session_send(s, &w);
    jw_free(&w);
    return rv;
}

/* ---- session lifecycle ---- */

static void session_unlink(struct ctl_session *s)
{
    struct control *c = s->ctl;

    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        c->sessions = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
    c->n_sessions--;
}

static void session_maybe_free(struct ctl_session *s)
{
    if (!s->is_stream_gone || !s->is_timer_closed || s->pending_submits > 0)
        return;
    ctl_idmap_free(&s->peers);
    ctl_idmap_free(&s->users);
    free(s);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct ctl_session *s = h->data;

    s->is_timer_closed = true;
    session_maybe_free(s);
}

static Concord__Command *session_command(struct ctl_session *s, bool is_open)
{
    Concord__Command *cmd = ctl_command_new(s->ctl);

    if (cmd == NULL)
        return NULL;
    if (is_open) {
        Concord__OpenSession *op = calloc(1, sizeof *op);
        Concord__Session *rec = calloc(1, sizeof *rec);

        if (op == NULL || rec == NULL) {
            free(op);
            free(rec);
            concord__command__free_unpacked(cmd, NULL);
            return NULL;
        }
        concord__open_session__init(op);
        concord__session__init(rec);
        rec->node_id = s->node_id;
        rec->replica_id = s->ctl->opt.replica_id;
        rec->session_id = s->session_id;
        rec->opened_unix_ms = cmd->proposed_unix_ms;
        op->session = rec;
        cmd->op_case = CONCORD__COMMAND__OP_OPEN_SESSION;
        cmd->open_session = op;
    } else {
        Concord__CloseSession *op = calloc(1, sizeof *op);

        if (op == NULL) {
            concord__command__free_unpacked(cmd, NULL);
            return NULL;
        }
        concord__close_session__init(op);
        op->node_id = s->node_id;
        op->session_id = s->session_id;
        cmd->op_case = CONCORD__COMMAND__OP_CLOSE_SESSION;
        cmd->close_session = op;
    }
    return cmd;
}

static void propose_close(struct ctl_session *s);
static void session_submit(struct ctl_session *s, bool is_open);

/* Presence must not be lost to a leaderless moment: a proposal that failed
 * (no leader, outcome unknown) is made again, each attempt bounded by the
 * cluster's own wait for a leader. Opening twice or closing a closed
 * session changes nothing. */
static void on_session_submitted(void *arg, int status, const Concord__CommandResult *result)
{
    struct ctl_session *s = arg;
    bool is_failed = status != CLUSTER_OK;
    bool may_retry = is_failed && status != CLUSTER_SHUTDOWN && !s->ctl->is_closing;

    s->pending_submits--;
    if (s->is_opening) {
        s->is_opening = false;
        if (may_retry && !s->is_stream_gone) {
            session_submit(s, true);
        } else {
            /* An unknown outcome may have opened it: close to be sure. */
            s->is_registered = is_failed || result->code == CLUSTER_RESULT_OK;
            if (s->is_stream_gone)
                propose_close(s);
        }
    } else if (may_retry) {
        s->is_registered = true;
        propose_close(s);
    }
    session_maybe_free(s);
}

static void session_submit(struct ctl_session *s, bool is_open)
{
    Concord__Command *cmd;

    if (s->ctl->is_closing)
        return;
    cmd = session_command(s, is_open);
    if (cmd == NULL)
        return;
    if (cluster_submit(s->ctl->opt.cluster, cmd, on_session_submitted, s) != 0) {
        concord__command__free_unpacked(cmd, NULL);
        return;
    }
    s->pending_submits++;
    s->is_opening = is_open;
}

static void propose_close(struct ctl_session *s)
{
    if (!s->is_registered || s->ctl->is_closing)
        return;
    s->is_registered = false;
    session_submit(s, false);
}

/* The stream is gone (client went away, connection closed): withdraw. */
void ctl_session_stream_closed(struct ctl_session *s)
{
    if (s->is_stream_gone)
        return;
    s->is_stream_gone = true;
    s->st = NULL;
    session_unlink(s);
    LOG_DEBUG("control: map session %" PRIu64 " of node %" PRIu64 " ended", s->session_id,
              s->node_id);
    propose_close(s);
    uv_close((uv_handle_t *)&s->keepalive, on_timer_closed);
}

static void session_end_stream(struct ctl_session *s, const char *reason)
{
    LOG_INFO("control: ending map session of node %" PRIu64 ": %s", s->node_id, reason);
    if (s->st != NULL && !s->conn->is_dead) {
        h2_stream_end(s->conn->h2, s->st);
        if (h2_session_flush(s->conn->h2) != 0)
            ctl_conn_close(s->conn, "cannot send");
    }
}

void ctl_sessions_close_all(struct control *c)
{
    while (c->sessions != NULL) {
        struct ctl_session *s = c->sessions;

        if (s->st != NULL)
            h2_stream_set_user(s->st, NULL);
        if (!c->is_closing)
            session_end_stream(s, "closing");
        ctl_session_stream_closed(s);
    }
}

static void open_stream(struct ctl_conn *conn, struct h2_stream *st, const Concord__Node *n,
                        bool compress)
{
    struct control *c = conn->ctl;
    struct ctl_session *s = calloc(1, sizeof *s);

    if (s == NULL) {
        h2_respond(conn->h2, st, 500, NULL, NULL, 0);
        return;
    }
    s->tag = CTL_USER_SESSION;
    s->ctl = c;
    s->conn = conn;
    s->st = st;
    s->node_id = n->id;
    s->compress = compress;
    memcpy(s->node_key, n->node_key.data, sizeof s->node_key);
    randombytes_buf(&s->session_id, sizeof s->session_id);
    s->session_id |= 1; /* never 0 */
    uv_timer_init(c->opt.loop, &s->keepalive);
    s->keepalive.data = s;
    s->next = c->sessions;
    if (c->sessions != NULL)
        c->sessions->prev = s;
    c->sessions = s;
    c->n_sessions++;
    h2_stream_set_user(st, s);
    if (h2_stream_start(conn->h2, st, 200, "application/octet-stream") != 0) {
        ctl_conn_close(conn, "cannot start the map stream");
        return;
    }
    LOG_DEBUG("control: map session %" PRIu64 " for node %" PRIu64 " (%s)", s->session_id, n->id,
              conn->peer);
    if (session_send_full(s) != 0) {
        session_end_stream(s, "cannot build the map");
        return;
    }
    session_submit(s, true);
}

/* ---- lite updates ---- */

static void updates_flush(struct control *c);

static void on_update_timer(uv_timer_t *t)
{
    updates_flush(t->data);
}

static void update_entry_free(struct ctl_update *u)
{
    if (u->update != NULL)
        concord__node_update__free_unpacked(u->update, NULL);
    free(u->waiters);
    free(u);
}

static void on_updates_applied(void *arg, int status, const Concord__CommandResult *result)
{
    struct ctl_update *batch = arg;
    struct control *c = batch->ctl; /* a batch is never empty */
    int http = status == CLUSTER_OK && result->code == CLUSTER_RESULT_OK ? 200 : 503;

    while (batch != NULL) {
        struct ctl_update *next = batch->next;

        for (size_t i = 0; i < batch->n_waiters; i++)
            ctl_req_finish(batch->waiters[i], http, NULL, NULL, 0);
        update_entry_free(batch);
        batch = next;
    }
    c->is_update_in_flight = false;
    if (c->updates != NULL && !c->is_closing)
        uv_timer_start(&c->update_timer, on_update_timer, UPDATE_BATCH_MS, 0);
}

static void updates_flush(struct control *c)
{
    Concord__Command *cmd;
    Concord__UpdateNodes *op;
    struct ctl_update *batch = c->updates;
    size_t i = 0;

    if (batch == NULL || c->is_update_in_flight || c->is_closing)
        return;
    cmd = ctl_command_new(c);
    op = calloc(1, sizeof *op);
    if (op != NULL)
        concord__update_nodes__init(op);
    if (cmd != NULL && op != NULL)
        op->updates = calloc(c->n_updates, sizeof *op->updates);
    if (cmd == NULL || op == NULL || op->updates == NULL) {
        free(op);
        if (cmd != NULL)
            concord__command__free_unpacked(cmd, NULL);
        uv_timer_start(&c->update_timer, on_update_timer, UPDATE_BATCH_MS, 0);
        return;
    }
    /* The command takes the updates; the batch keeps only their waiters. */
    for (struct ctl_update *u = batch; u != NULL; u = u->next) {
        op->updates[i++] = u->update;
        u->update = NULL;
    }
    op->n_updates = i;
    cmd->op_case = CONCORD__COMMAND__OP_UPDATE_NODES;
    cmd->update_nodes = op;
    c->updates = NULL;
    c->n_updates = 0;
    if (cluster_submit(c->opt.cluster, cmd, on_updates_applied, batch) != 0) {
        concord__command__free_unpacked(cmd, NULL);
        on_updates_applied(batch, CLUSTER_SHUTDOWN, NULL);
        return;
    }
    c->is_update_in_flight = true;
}

void ctl_updates_free(struct control *c)
{
    struct ctl_update *u = c->updates;

    c->updates = NULL;
    c->n_updates = 0;
    while (u != NULL) {
        struct ctl_update *next = u->next;

        for (size_t i = 0; i < u->n_waiters; i++)
            ctl_req_finish(u->waiters[i], 503, NULL, NULL, 0);
        update_entry_free(u);
        u = next;
    }
}

static bool endpoints_equal(const Concord__Node *n, char **eps, size_t n_eps)
{
    if (n->n_endpoints != n_eps)
        return false;
    for (size_t i = 0; i < n_eps; i++) {
        if (strcmp(n->endpoints[i], eps[i]) != 0)
            return false;
    }
    return true;
}

static char **strv_copy(char **items, size_t n)
{
    char **out = n > 0 ? calloc(n, sizeof *out) : NULL;

    for (size_t i = 0; out != NULL && i < n; i++) {
        out[i] = strdup(items[i]);
        if (out[i] == NULL) {
            while (i-- > 0)
                free(out[i]);
            free(out);
            return NULL;
        }
    }
    return out;
}

/* The NodeUpdate that takes n to what the request reports; NULL with
 * *is_noop when nothing changes. `is_lite`: endpoints are authoritative even
 * when absent (a streaming request's only when it has some). */
static Concord__NodeUpdate *update_from(const Concord__Node *n, const struct wire_map_request *m,
                                        bool is_lite, bool *is_noop, bool *is_oom)
{
    const struct wire_hostinfo *hi = &m->hostinfo;
    Concord__NodeUpdate *u = calloc(1, sizeof *u);
    bool has_eps = is_lite || m->n_endpoints > 0;
    bool changed = false;

    *is_noop = false;
    if (u == NULL) {
        *is_oom = true;
        return NULL;
    }
    concord__node_update__init(u);
    u->node_id = n->id;
    u->node_key.data = malloc(32);
    if (u->node_key.data == NULL)
        goto oom;
    memcpy(u->node_key.data, n->node_key.data, 32);
    u->node_key.len = 32;
    if (m->has_disco_key && !same_bytes(&n->disco_key, m->disco_key, 32)) {
        u->disco_key.data = malloc(32);
        if (u->disco_key.data == NULL)
            goto oom;
        memcpy(u->disco_key.data, m->disco_key, 32);
        u->disco_key.len = 32;
        changed = true;
    }
    if (has_eps && !endpoints_equal(n, m->endpoints, m->n_endpoints)) {
        u->has_endpoints = true;
        u->endpoints = strv_copy(m->endpoints, m->n_endpoints);
        if (m->n_endpoints > 0 && u->endpoints == NULL)
            goto oom;
        u->n_endpoints = m->n_endpoints;
        changed = true;
    }
    if (hi->json != NULL && !same_bytes(&n->hostinfo, (const uint8_t *)hi->json, hi->json_len)) {
        u->hostinfo.data = malloc(hi->json_len);
        if (u->hostinfo.data == NULL)
            goto oom;
        memcpy(u->hostinfo.data, hi->json, hi->json_len);
        u->hostinfo.len = hi->json_len;
        u->hostname = strdup(hi->hostname != NULL ? hi->hostname : "");
        u->has_routes = true;
        u->advertised_routes = strv_copy(hi->routable_ips, hi->n_routable_ips);
        if (u->hostname == NULL || (hi->n_routable_ips > 0 && u->advertised_routes == NULL))
            goto oom;
        u->n_advertised_routes = hi->n_routable_ips;
        changed = true;
    }
    if (hi->preferred_derp > 0 && (uint32_t)hi->preferred_derp != n->home_derp) {
        u->has_home_derp = true;
        u->home_derp = (uint32_t)hi->preferred_derp;
        changed = true;
    }
    if (m->version != 0 && m->version != n->cap_version) {
        u->cap_version = m->version;
        changed = true;
    }
    if (!changed) {
        concord__node_update__free_unpacked(u, NULL);
        *is_noop = true;
        return NULL;
    }
    return u;
oom:
    concord__node_update__free_unpacked(u, NULL);
    *is_oom = true;
    return NULL;
}

/* Queues u (taking it) for the next batch; a newer report of the same node
 * replaces the older one; `waiter` (may be NULL) is answered once applied. */
static int update_queue(struct control *c, Concord__NodeUpdate *u, struct ctl_req *waiter)
{
    struct ctl_update *e = c->updates;

    while (e != NULL && e->update->node_id != u->node_id)
        e = e->next;
    if (e == NULL) {
        e = calloc(1, sizeof *e);
        if (e == NULL) {
            concord__node_update__free_unpacked(u, NULL);
            return -1;
        }
        e->ctl = c;
        e->next = c->updates;
        c->updates = e;
        c->n_updates++;
    } else {
        concord__node_update__free_unpacked(e->update, NULL);
    }
    e->update = u;
    if (waiter != NULL) {
        struct ctl_req **w = realloc(e->waiters, (e->n_waiters + 1) * sizeof *w);

        if (w == NULL)
            return -1;
        e->waiters = w;
        e->waiters[e->n_waiters++] = waiter;
    }
    if (!c->is_update_in_flight && !uv_is_active((uv_handle_t *)&c->update_timer))
        uv_timer_start(&c->update_timer, on_update_timer,
                       c->n_updates >= MAX_BATCHED_UPDATES ? 0 : UPDATE_BATCH_MS, 0);
    return 0;
}

/* ---- /machine/map ---- */

static void respond(struct ctl_conn *conn, struct h2_stream *st, int status, const char *text)
{
    if (h2_respond(conn->h2, st, status, "text/plain; charset=utf-8", text, strlen(text)) != 0)
        ctl_conn_close(conn, "cannot answer");
}

void ctl_map_request(struct ctl_conn *conn, struct h2_stream *st, const uint8_t machine_key[32],
                     const uint8_t *body, size_t len)
{
    struct control *c = conn->ctl;
    struct wire_map_request m;
    char errmsg[WIRE_ERRMSG_BYTES];
    Concord__Node *n = NULL;
    Concord__NodeUpdate *u;
    struct store_txn *t;
    bool is_noop = false;
    bool is_oom = false;
    int rv;

    if (wire_map_request_parse(body, len, &m, errmsg) != 0) {
        LOG_INFO("control: %s: bad map request: %s", conn->peer, errmsg);
        respond(conn, st, 400, errmsg);
        return;
    }
    if (m.version < CTL_MIN_CAPVER) {
        respond(conn, st, 400, "client too old: Tailscale v1.80 or newer is required\n");
        goto out;
    }
    rv = store_txn_begin(c->opt.store, false, &t);
    if (rv == 0) {
        rv = store_node_get_by_node_key(t, m.node_key, &n);
        store_txn_abort(t);
    }
    if (rv == STORE_NOTFOUND) {
        respond(conn, st, 401, "unknown node key: register first\n");
        goto out;
    }
    if (rv != 0) {
        respond(conn, st, 500, "cannot read the node registry\n");
        goto out;
    }
    if (memcmp(n->machine_key.data, machine_key, 32) != 0) {
        LOG_WARN("control: %s: refused map request: node %" PRIu64 " belongs to another machine",
                 conn->peer, n->id);
        respond(conn, st, 403, "this node key belongs to another machine\n");
        goto out;
    }
    u = update_from(n, &m, !m.stream, &is_noop, &is_oom);
    if (is_oom) {
        respond(conn, st, 500, "out of memory\n");
        goto out;
    }
    if (!m.stream) {
        struct ctl_req *r;

        if (is_noop) {
            respond(conn, st, 200, "");
            goto out;
        }
        r = ctl_req_new(conn, st, CTL_REQ_LITE_UPDATE);
        if (r == NULL || update_queue(c, u, r) != 0) {
            if (r != NULL)
                ctl_req_finish(r, 500, NULL, NULL, 0);
            else
                concord__node_update__free_unpacked(u, NULL);
        }
        goto out;
    }
    if (u != NULL)
        update_queue(c, u, NULL);
    open_stream(conn, st, n, m.compress_zstd);
out:
    store_record_free(n);
    wire_map_request_free(&m);
}

/* ---- deltas ---- */

static void note_node(struct control *c, uint64_t id)
{
    if (id != 0 && ctl_idmap_put(&c->changed_nodes, id, 1) != 0)
        c->needs_full_resync = true;
}

static void note_user_change(struct control *c, uint64_t id)
{
    if (id != 0 && ctl_idmap_put(&c->changed_users, id, 1) != 0)
        c->needs_full_resync = true;
}

static void on_delta_timer(uv_timer_t *t);

void ctl_map_note_applied(struct control *c, const Concord__Command *cmd,
                          const Concord__CommandResult *result)
{
    if (result->code != CLUSTER_RESULT_OK)
        return;
    switch (cmd->op_case) {
    case CONCORD__COMMAND__OP_REGISTER_NODE:
    case CONCORD__COMMAND__OP_APPROVE_REGISTRATION:
    case CONCORD__COMMAND__OP_CREATE_NODE:
    case CONCORD__COMMAND__OP_RENAME_NODE:
    case CONCORD__COMMAND__OP_EXPIRE_NODE:
    case CONCORD__COMMAND__OP_DELETE_NODE:
    case CONCORD__COMMAND__OP_SET_NODE_TAGS:
    case CONCORD__COMMAND__OP_SET_NODE_ROUTES:
    case CONCORD__COMMAND__OP_LOGOUT_NODE:
    case CONCORD__COMMAND__OP_OPEN_SESSION:
    case CONCORD__COMMAND__OP_CLOSE_SESSION:
        note_node(c, result->id);
        break;
    case CONCORD__COMMAND__OP_UPDATE_NODES:
        for (size_t i = 0; i < cmd->update_nodes->n_updates; i++)
            note_node(c, cmd->update_nodes->updates[i]->node_id);
        break;
    case CONCORD__COMMAND__OP_RENAME_USER:
        note_user_change(c, result->id);
        ctl_policy_note(c, CTL_POLICY_USER, result->id);
        break;
    case CONCORD__COMMAND__OP_CREATE_USER:
    case CONCORD__COMMAND__OP_DELETE_USER:
        ctl_policy_note(c, CTL_POLICY_USER, result->id);
        break;
    case CONCORD__COMMAND__OP_SET_POLICY:
        ctl_policy_note(c, CTL_POLICY_DOCUMENT, 0);
        break;
    case CONCORD__COMMAND__OP_RESTORE_STATE:
        ctl_policy_note(c, CTL_POLICY_EVERYTHING, 0);
        c->needs_full_resync = true;
        c->needs_derp_rebuild = true;
        break;
    case CONCORD__COMMAND__OP_UPSERT_REPLICA:
        /* This replica's record exists now: its relay can be announced. */
        if (cmd->upsert_replica->id == c->opt.replica_id)
            ctl_derpmap_announce(c);
        c->needs_derp_rebuild = true;
        break;
    case CONCORD__COMMAND__OP_SET_REPLICA_DERP:
    case CONCORD__COMMAND__OP_REMOVE_REPLICA:
        c->needs_derp_rebuild = true;
        break;
    default:
        return;
    }
    if (!uv_is_active((uv_handle_t *)&c->delta_timer))
        uv_timer_start(&c->delta_timer, on_delta_timer, DELTA_BATCH_MS, 0);
}

/* One node of the round, encoded once for every session: a changed one, or
 * any node when the policy changed (what each session may see changed). */
/* A node's two encodings (full and patch) in some buffer, and the hash of
 * what a PeerChange cannot carry. */
struct encoded {
    uint64_t static_hash;
    size_t full_off, full_len;
    size_t patch_off, patch_len;
};

struct changed {
    uint64_t id;
    Concord__Node *node; /* NULL: deleted */
    bool is_policy_only; /* unchanged itself: only visibility may differ */
    struct encoded enc;  /* as the node sees itself: all of its routes */
};

struct round {
    struct store_txn *t;
    struct changed *items;
    size_t n;
    size_t cap;
    bool is_policy_changed;
    struct jw enc; /* every changed node's encodings, back to back */
};

/* Appends node n as viewer_id sees it (its routes depend on the viewer) to
 * w, both encodings back to back, each taken out by offset. */
static int node_encode(struct control *c, struct store_txn *t, uint64_t viewer_id,
                       const Concord__Node *n, struct jw *w, struct encoded *out)
{
    struct mapenc_node_view v;
    char *allowed_ips;
    char *primary_routes;
    char *cap_map;

    if (ctl_policy_routes_json(c, viewer_id, n, &allowed_ips, &primary_routes) != 0)
        return -1;
    cap_map = ctl_policy_peer_capmap_json(c, n->id);
    view_of(c, n, ctl_node_is_online(t, n->id) ? MAPENC_PRESENCE_ONLINE : MAPENC_PRESENCE_OFFLINE,
            &v);
    v.allowed_ips_json = allowed_ips;
    v.primary_routes_json = primary_routes;
    v.cap_map_json = cap_map;
    out->static_hash = mapenc_node_static_hash(&v);
    out->full_off = w->len;
    jw_next_value(w);
    mapenc_node(w, &v);
    out->full_len = w->len - out->full_off;
    out->patch_off = w->len;
    jw_next_value(w);
    mapenc_peer_patch(w, &v);
    out->patch_len = w->len - out->patch_off;
    free(allowed_ips);
    free(primary_routes);
    free(cap_map);
    return jw_failed(w) ? -1 : 0;
}

static int round_item_encode(struct control *c, struct round *rd, struct changed *ch)
{
    return node_encode(c, rd->t, ch->id, ch->node, &rd->enc, &ch->enc);
}

struct policy_walk {
    struct control *c;
    struct round *rd;
};

/* After a policy change every node is in the round: the changed ones are
 * already there, the others are added as policy-only. */
static int round_add_unchanged(const ProtobufCMessage *record, void *arg)
{
    const Concord__Node *n = (const Concord__Node *)record;
    struct policy_walk *pw = arg;
    struct round *rd = pw->rd;
    struct changed *ch;
    uint64_t dummy;

    if (ctl_idmap_get(&pw->c->changed_nodes, n->id, &dummy))
        return 0;
    if (rd->n == rd->cap) {
        size_t cap = rd->cap * 2 + 16;
        struct changed *items = realloc(rd->items, cap * sizeof *items);

        if (items == NULL)
            return STORE_NOMEM;
        rd->items = items;
        rd->cap = cap;
    }
    ch = &rd->items[rd->n++];
    memset(ch, 0, sizeof *ch);
    ch->id = n->id;
    ch->is_policy_only = true;
    if (store_node_get(rd->t, n->id, &ch->node) != 0 || round_item_encode(pw->c, rd, ch) != 0)
        return STORE_NOMEM;
    return 0;
}

static int round_prepare(struct control *c, struct round *rd)
{
    struct ctl_idmap *m = &c->changed_nodes;

    rd->cap = m->n > 0 ? m->n : 1;
    rd->items = calloc(rd->cap, sizeof *rd->items);
    if (rd->items == NULL)
        return -1;
    jw_init(&rd->enc);
    for (size_t i = 0; i < m->cap; i++) {
        struct changed *ch;
        int rv;

        if (m->keys[i] == 0)
            continue;
        ch = &rd->items[rd->n++];
        ch->id = m->keys[i];
        rv = store_node_get(rd->t, ch->id, &ch->node);
        if (rv == STORE_NOTFOUND)
            continue;
        if (rv != 0 || round_item_encode(c, rd, ch) != 0)
            return -1;
    }
    if (rd->is_policy_changed) {
        struct policy_walk pw = {.c = c, .rd = rd};

        if (store_node_each(rd->t, round_add_unchanged, &pw) != 0)
            return -1;
    }
    return jw_failed(&rd->enc) ? -1 : 0;
}

static void round_free(struct round *rd)
{
    for (size_t i = 0; i < rd->n; i++)
        store_record_free(rd->items[i].node);
    free(rd->items);
    jw_free(&rd->enc);
}

/* A session's own encodings of the round's routers (whose routes it sees
 * its own way); own[i].full_len == 0: the round's shared one is right. */
struct session_view {
    struct jw enc;
    struct encoded *own;
};

/* Appends the list `key` with the selected encodings (kind 0: full, 1: patch)
 * or removed ids (kind 2). */
static void delta_list(struct jw *w, const char *key, const struct round *rd,
                       const struct session_view *sv, const uint8_t *selected, uint8_t kind)
{
    bool any = false;

    for (size_t i = 0; i < rd->n; i++) {
        const struct changed *ch = &rd->items[i];
        const struct encoded *e = sv->own[i].full_len > 0 ? &sv->own[i] : &ch->enc;
        const char *buf = sv->own[i].full_len > 0 ? sv->enc.buf : rd->enc.buf;

        if (selected[i] != kind + 1)
            continue;
        if (!any) {
            jw_key(w, key);
            jw_arr_begin(w);
            any = true;
        }
        if (kind == 0)
            jw_raw(w, buf + e->full_off, e->full_len);
        else if (kind == 1)
            jw_raw(w, buf + e->patch_off, e->patch_len);
        else
            jw_uint(w, ch->id);
    }
    if (any)
        jw_arr_end(w);
}

/* The round's encoding of ch, or this session's own when ch routes and the
 * session sees its routes differently; NULL when out of memory. */
static const struct encoded *session_encoding(struct control *c, struct ctl_session *s,
                                              struct round *rd, struct session_view *sv, size_t i)
{
    const struct changed *ch = &rd->items[i];
    struct encoded *own = &sv->own[i];

    if (ch->node->n_approved_routes == 0)
        return &ch->enc;
    if (node_encode(c, rd->t, s->node_id, ch->node, &sv->enc, own) != 0)
        return NULL;
    if (own->static_hash == ch->enc.static_hash)
        own->full_len = 0; /* the same: use the shared one */
    return own->full_len > 0 ? own : &ch->enc;
}

static void session_delta(struct control *c, struct ctl_session *s, struct round *rd,
                          uint8_t *selected, bool send_derp)
{
    struct ctl_idmap new_users = {0};
    const struct changed *self = NULL;
    struct session_view sv = {.own = calloc(rd->n + 1, sizeof *sv.own)};
    bool ok = sv.own != NULL;
    size_t empty_len;
    struct jw w;

    jw_init(&sv.enc);
    for (size_t i = 0; ok && i < rd->n; i++) {
        const struct changed *ch = &rd->items[i];
        const struct encoded *enc;
        uint64_t known;
        bool is_known = ctl_idmap_get(&s->peers, ch->id, &known);

        selected[i] = 0;
        if (ch->id == s->node_id) {
            if (ch->node == NULL) {
                session_end_stream(s, "node deleted");
                jw_free(&sv.enc);
                free(sv.own);
                return;
            }
            self = ch;
            continue;
        }
        /* Deleted, or the policy no longer lets this session see it. */
        if (ch->node == NULL || !ctl_policy_visible(c, s->node_id, ch->id)) {
            if (is_known) {
                selected[i] = 3;
                ctl_idmap_del(&s->peers, ch->id);
            }
            continue;
        }
        enc = session_encoding(c, s, rd, &sv, i);
        if (enc == NULL) {
            ok = false;
            break;
        }
        if (ch->is_policy_only && is_known && known == enc->static_hash)
            continue;
        selected[i] = is_known && known == enc->static_hash ? 2 : 1;
        ctl_idmap_put(&s->peers, ch->id, enc->static_hash);
        if (selected[i] == 1) {
            uint64_t uid = ch->node->n_tags > 0 ? MAPENC_TAGGED_USER_ID : ch->node->user_id;
            uint64_t dummy;

            if (!ctl_idmap_get(&s->users, uid, &dummy)) {
                ctl_idmap_put(&s->users, uid, 1);
                ctl_idmap_put(&new_users, uid, 1);
            }
        }
    }
    for (size_t i = 0; i < c->changed_users.cap; i++) {
        uint64_t uid = c->changed_users.keys[i];
        uint64_t dummy;

        if (uid != 0 && ctl_idmap_get(&s->users, uid, &dummy))
            ctl_idmap_put(&new_users, uid, 1);
    }
    jw_init(&w);
    jw_obj_begin(&w);
    empty_len = w.len;
    if (send_derp && c->derp_map_json != NULL) {
        jw_key(&w, "DERPMap");
        jw_raw(&w, c->derp_map_json, c->derp_map_len);
    }
    if (self != NULL)
        ok = render_self(s, self->node, &w, !self->is_policy_only);
    if (ok && rd->is_policy_changed) {
        ok = render_policy_part(&w, "PacketFilter", ctl_policy_filter_json(c, s->node_id),
                                &s->filter_hash, false) &&
             render_policy_part(&w, "SSHPolicy", ctl_policy_ssh_json(c, s->node_id), &s->ssh_hash,
                                false);
    }
    if (ok) {
        delta_list(&w, "PeersChanged", rd, &sv, selected, 0);
        delta_list(&w, "PeersChangedPatch", rd, &sv, selected, 1);
        delta_list(&w, "PeersRemoved", rd, &sv, selected, 2);
    }
    if (new_users.n > 0) {
        jw_key(&w, "UserProfiles");
        jw_arr_begin(&w);
        render_profiles(rd->t, &w, &new_users);
        jw_arr_end(&w);
    }
    if (!ok) {
        /* What the session holds is unknown now: it starts over. */
        session_end_stream(s, "out of memory");
    } else if (w.len != empty_len) {
        jw_key(&w, "ControlTime");
        jw_time(&w, ctl_now_ms());
        jw_obj_end(&w);
        session_send(s, &w);
    }
    jw_free(&w);
    jw_free(&sv.enc);
    free(sv.own);
    ctl_idmap_free(&new_users);
}

static void on_delta_timer(uv_timer_t *timer)
{
    struct control *c = timer->data;
    struct round rd = {0};
    uint8_t *selected = NULL;
    bool is_full = c->needs_full_resync;
    bool send_derp = c->needs_derp_rebuild && ctl_derpmap_rebuild(c);

    c->needs_full_resync = false;
    if (store_txn_begin(c->opt.store, false, &rd.t) != 0) {
        LOG_ERROR("control: cannot read the state for a delta round");
        c->needs_full_resync = true;
        return;
    }
    ctl_policy_sync(c, rd.t);
    ctl_policy_auto_approve(c, rd.t);
    rd.is_policy_changed = c->is_policy_dirty;
    c->is_policy_dirty = false;
    if (round_prepare(c, &rd) != 0 || (selected = calloc(rd.n + 1, 1)) == NULL)
        is_full = true;
    for (struct ctl_session *s = c->sessions, *next; s != NULL; s = next) {
        next = s->next;
        if (is_full)
            session_send_full(s);
        else
            session_delta(c, s, &rd, selected, send_derp);
    }
    free(selected);
    round_free(&rd);
    store_txn_abort(rd.t);
    ctl_idmap_free(&c->changed_nodes);
    ctl_idmap_free(&c->changed_users);
}

/* ---- ephemeral nodes ---- */

struct gc_walk {
    struct control *c;
    struct store_txn *t;
    int64_t now;
    uint64_t ids[64];
    size_t n;
};

static int gc_consider(const ProtobufCMessage *record, void *arg)
{
    const Concord__Node *n = (const Concord__Node *)record;
    struct gc_walk *g = arg;
    int64_t since = n->last_seen_unix_ms != 0 ? n->last_seen_unix_ms : n->created_unix_ms;

    if (!n->ephemeral || since + (int64_t)g->c->opt.ephemeral_inactivity_ms > g->now ||
        ctl_node_is_online(g->t, n->id))
        return 0;
    g->ids[g->n++] = n->id;
    return g->n == sizeof g->ids / sizeof g->ids[0] ? 1 : 0;
}

static void on_gc_deleted(void *arg, int status, const Concord__CommandResult *result)
{
    (void)arg;
    if (status == CLUSTER_OK && result->code == CLUSTER_RESULT_OK)
        LOG_INFO("control: deleted inactive ephemeral node %" PRIu64, result->id);
}

static void on_closed_for(void *arg, int status, const Concord__CommandResult *result)
{
    if (status == CLUSTER_OK && result->code == CLUSTER_RESULT_OK)
        LOG_INFO("control: closed a session of node %" PRIu64 " %s", result->id, (const char *)arg);
}

bool ctl_propose_close_session(struct control *c, uint64_t node_id, uint64_t session_id,
                               const char *why)
{
    Concord__Command *cmd = ctl_command_new(c);
    Concord__CloseSession *op = calloc(1, sizeof *op);

    if (cmd == NULL || op == NULL) {
        free(op);
        if (cmd != NULL)
            concord__command__free_unpacked(cmd, NULL);
        return false;
    }
    concord__close_session__init(op);
    op->node_id = node_id;
    op->session_id = session_id;
    cmd->op_case = CONCORD__COMMAND__OP_CLOSE_SESSION;
    cmd->close_session = op;
    if (cluster_submit(c->opt.cluster, cmd, on_closed_for, (void *)why) != 0)
        concord__command__free_unpacked(cmd, NULL);
    return true;
}

void ctl_gc_ephemeral(struct control *c)
{
    struct cluster_status st;
    struct gc_walk g = {.c = c, .now = ctl_now_ms()};

    cluster_status_get(c->opt.cluster, &st);
    if (st.role != CLUSTER_ROLE_LEADER || c->is_closing)
        return;
    if (store_txn_begin(c->opt.store, false, &g.t) != 0)
        return;
    store_node_each(g.t, gc_consider, &g);
    store_txn_abort(g.t);
    for (size_t i = 0; i < g.n; i++) {
        Concord__Command *cmd = ctl_command_new(c);
        Concord__DeleteNode *op = calloc(1, sizeof *op);

        if (cmd == NULL || op == NULL) {
            free(op);
            if (cmd != NULL)
                concord__command__free_unpacked(cmd, NULL);
            return;
        }
        concord__delete_node__init(op);
        op->id = g.ids[i];
        cmd->op_case = CONCORD__COMMAND__OP_DELETE_NODE;
        cmd->delete_node = op;
        if (cluster_submit(c->opt.cluster, cmd, on_gc_deleted, NULL) != 0)
            concord__command__free_unpacked(cmd, NULL);
    }
}

/* ---- sessions a previous run of this replica left behind ---- */

struct stale_walk {
    const struct control *c;
    Concord__Session found[64];
    size_t n;
};

static int stale_consider(const ProtobufCMessage *record, void *arg)
{
    const Concord__Session *s = (const Concord__Session *)record;
    struct stale_walk *w = arg;

    if (s->replica_id != w->c->opt.replica_id || s->opened_unix_ms >= w->c->started_unix_ms)
        return 0;
    w->found[w->n++] = *s;
    return w->n == sizeof w->found / sizeof w->found[0] ? 1 : 0;
}

void ctl_close_stale_sessions(struct control *c)
{
    struct stale_walk w = {.c = c};
    struct store_txn *t;

    if (c->are_stale_sessions_closed || c->is_closing ||
        store_txn_begin(c->opt.store, false, &t) != 0)
        return;
    store_session_each(t, stale_consider, &w);
    store_txn_abort(t);
    if (w.n == 0) {
        c->are_stale_sessions_closed = true;
        return;
    }
    /* Proposed again on the next tick until none is left (a lost proposal
     * is harmless: closing a closed session changes nothing). */
    for (size_t i = 0; i < w.n; i++)
        if (!ctl_propose_close_session(c, w.found[i].node_id, w.found[i].session_id,
                                       "left by an earlier run"))
            return;
}
