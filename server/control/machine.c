/* server/control/machine.c: the requests a client sends inside Noise, and
 * registration (tailscale-control-protocol.md section 7).
 *
 * /machine/register, in the order the checks apply:
 *  1. The node key, if known, must belong to the Noise peer's machine key.
 *  2. An expiry in the past is a logout (checked before any auth key).
 *  3. A known, unexpired node key is a restart, or a followup whose approval
 *     already happened: answer with the current state.
 *  4. A followup waits for the operator's approval of its pending
 *     registration; an unknown or expired one gets a fresh AuthURL.
 *  5. An auth key registers (or re-registers) the machine through Raft.
 *  6. Otherwise a pending registration is proposed and its AuthURL returned.
 * Every change is a Raft command; the answer is sent once it is applied on
 * this replica, so the client's next request, wherever it lands, sees it. */
#include "server/control/control_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "server/log.h"
#include "storage/secret.h"

#define AUTH_ID_BYTES 18 /* random bytes: 24 base64url characters */

static const char content_type_json[] = "application/json";

static bool path_is(const char *path, const char *suffix)
{
    size_t len = strlen(path);
    size_t n = strlen(suffix);
    const char *q = strchr(path, '?');

    if (q != NULL)
        len = (size_t)(q - path);
    return len >= n && memcmp(path + len - n, suffix, n) == 0;
}

/* ---- requests ---- */

struct ctl_req *ctl_req_new(struct ctl_conn *conn, struct h2_stream *st, enum ctl_req_kind kind)
{
    struct ctl_req *r = calloc(1, sizeof *r);

    if (r == NULL)
        return NULL;
    r->tag = CTL_USER_REQ;
    r->ctl = conn->ctl;
    r->conn = conn;
    r->st = st;
    r->kind = kind;
    memcpy(r->machine_key, conn->noise.peer_static, sizeof r->machine_key);
    memcpy(r->peer, conn->peer, sizeof r->peer);
    h2_stream_set_user(st, r);
    return r;
}

static void req_unlink_followup(struct ctl_req *r)
{
    struct control *c = r->ctl;

    if (!r->is_waiting)
        return;
    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        c->followups = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    r->is_waiting = false;
}

static void req_free(struct ctl_req *r)
{
    req_unlink_followup(r);
    if (r->st != NULL)
        h2_stream_set_user(r->st, NULL);
    wire_register_request_free(&r->reg);
    free(r);
}

void ctl_req_finish(struct ctl_req *r, int status, const char *content_type, const void *body,
                    size_t len)
{
    if (r->st != NULL && !r->conn->is_dead) {
        h2_stream_set_user(r->st, NULL);
        if (h2_respond(r->conn->h2, r->st, status, content_type, body, len) != 0 ||
            h2_session_flush(r->conn->h2) != 0)
            ctl_conn_close(r->conn, "cannot answer");
        r->st = NULL;
    }
    req_free(r);
}

static void finish_text(struct ctl_req *r, int status, const char *text)
{
    ctl_req_finish(r, status, "text/plain; charset=utf-8", text, strlen(text));
}

static void finish_json(struct ctl_req *r, struct jw *w)
{
    if (jw_failed(w))
        finish_text(r, 500, "out of memory\n");
    else
        ctl_req_finish(r, 200, content_type_json, w->buf, w->len);
}

/* A RegisterResponse carrying only an error or an AuthURL or expiry news. */
static void finish_register(struct ctl_req *r, const char *error, const char *auth_url,
                            bool is_expired)
{
    struct jw w;

    jw_init(&w);
    jw_obj_begin(&w);
    jw_key(&w, "User");
    jw_obj_begin(&w);
    jw_obj_end(&w);
    jw_key(&w, "Login");
    jw_obj_begin(&w);
    jw_obj_end(&w);
    jw_key(&w, "NodeKeyExpired");
    jw_bool(&w, is_expired);
    jw_key(&w, "MachineAuthorized");
    jw_bool(&w, false);
    jw_key(&w, "AuthURL");
    jw_str(&w, auth_url != NULL ? auth_url : "");
    jw_key(&w, "Error");
    jw_str(&w, error != NULL ? error : "");
    jw_obj_end(&w);
    finish_json(r, &w);
    jw_free(&w);
}

void ctl_machine_stream_closed(struct ctl_conn *conn, struct h2_stream *st, void *user)
{
    struct ctl_req *r = user;

    (void)conn;
    (void)st;
    if (user == NULL)
        return;
    if (*(const enum ctl_stream_user *)user == CTL_USER_SESSION) {
        ctl_session_stream_closed(user);
        return;
    }
    r->st = NULL;
    /* A held followup has nothing in flight: it goes with its stream. Other
     * requests wait for their Raft answer, which frees them. */
    if (r->is_waiting)
        req_free(r);
}

/* ---- the login answer ---- */

/* The owner's profile (tailcfg.UserProfile's fields cover what the client
 * reads of tailcfg.User and tailcfg.Login). */
static void render_owner(struct jw *w, const Concord__User *u)
{
    if (u != NULL)
        mapenc_user_profile(w, u);
    else
        mapenc_tagged_profile(w);
}

/* A RegisterResponse for a registered, authorized node. */
static int render_login(struct store_txn *t, const Concord__Node *n, struct jw *w)
{
    Concord__User *u = NULL;

    if (n->n_tags == 0) {
        int rv = store_user_get(t, n->user_id, &u);

        if (rv != 0)
            return rv;
    }
    jw_obj_begin(w);
    jw_key(w, "User");
    render_owner(w, u);
    jw_key(w, "Login");
    render_owner(w, u);
    jw_key(w, "NodeKeyExpired");
    jw_bool(w, false);
    jw_key(w, "MachineAuthorized");
    jw_bool(w, true);
    jw_key(w, "AuthURL");
    jw_str(w, "");
    jw_obj_end(w);
    store_record_free(u);
    return 0;
}

/* Answers with the node that now holds the request's node key. */
static void finish_login(struct ctl_req *r)
{
    struct control *c = r->ctl;
    Concord__Node *n = NULL;
    struct store_txn *t;
    struct jw w;
    int rv = store_txn_begin(c->opt.store, false, &t);

    if (rv == 0)
        rv = store_node_get_by_node_key(t, r->reg.node_key, &n);
    if (rv != 0) {
        store_txn_abort(t);
        finish_register(r, "registration did not take effect; try again", NULL, false);
        return;
    }
    jw_init(&w);
    rv = render_login(t, n, &w);
    store_txn_abort(t);
    if (rv == 0)
        finish_json(r, &w);
    else
        finish_register(r, "the node's user no longer exists", NULL, false);
    jw_free(&w);
    store_record_free(n);
}

/* ---- submissions ---- */

static void on_submitted(void *arg, int status, const Concord__CommandResult *result)
{
    struct ctl_req *r = arg;

    if (status != CLUSTER_OK) {
        LOG_WARN("control: %s: registration not applied: %s", r->peer, cluster_strerror(status));
        finish_text(r, 503, "the cluster cannot take the registration now; retry\n");
        return;
    }
    if (result->code != CLUSTER_RESULT_OK) {
        LOG_INFO("control: %s: registration refused: %s", r->peer, result->message);
        finish_register(r, result->message, NULL, false);
        return;
    }
    finish_login(r);
}

static void submit(struct ctl_req *r, Concord__Command *cmd, cluster_submit_cb cb)
{
    if (cluster_submit(r->ctl->opt.cluster, cmd, cb, r) != 0) {
        concord__command__free_unpacked(cmd, NULL);
        finish_text(r, 503, "the cluster cannot take the registration now; retry\n");
    }
}

static ProtobufCBinaryData bytes_dup(const uint8_t *data, size_t len, bool *is_oom)
{
    ProtobufCBinaryData b = {0};

    if (len == 0)
        return b;
    b.data = malloc(len);
    if (b.data == NULL) {
        *is_oom = true;
        return b;
    }
    memcpy(b.data, data, len);
    b.len = len;
    return b;
}

static char **strv_dup(char *const *items, size_t n, bool *is_oom)
{
    char **out;

    if (n == 0)
        return NULL;
    out = calloc(n, sizeof *out);
    if (out == NULL) {
        *is_oom = true;
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        out[i] = strdup(items[i]);
        if (out[i] == NULL)
            *is_oom = true;
    }
    return out;
}

static char *str_dup(const char *s, bool *is_oom)
{
    char *out = strdup(s != NULL ? s : "");

    if (out == NULL)
        *is_oom = true;
    return out;
}

/* RegisterNode for this request; owner and tags come from the auth key. */
static Concord__Command *register_command(struct ctl_req *r, const Concord__PreAuthKey *k,
                                          bool consume)
{
    const struct wire_register_request *reg = &r->reg;
    Concord__Command *cmd = ctl_command_new(r->ctl);
    Concord__RegisterNode *op = calloc(1, sizeof *op);
    bool is_oom = cmd == NULL || op == NULL;

    if (is_oom) {
        free(op);
        if (cmd != NULL)
            concord__command__free_unpacked(cmd, NULL);
        return NULL;
    }
    concord__register_node__init(op);
    cmd->op_case = CONCORD__COMMAND__OP_REGISTER_NODE;
    cmd->register_node = op;
    op->machine_key = bytes_dup(r->machine_key, 32, &is_oom);
    op->node_key = bytes_dup(reg->node_key, 32, &is_oom);
    if (reg->has_old_node_key)
        op->old_node_key = bytes_dup(reg->old_node_key, 32, &is_oom);
    op->user_id = k->user_id;
    op->tags = strv_dup(k->tags, k->n_tags, &is_oom);
    op->n_tags = op->tags != NULL ? k->n_tags : 0;
    op->ephemeral = reg->ephemeral || k->ephemeral;
    op->hostname = str_dup(reg->hostinfo.hostname, &is_oom);
    op->hostinfo = bytes_dup((const uint8_t *)reg->hostinfo.json, reg->hostinfo.json_len, &is_oom);
    op->auth_key_id = consume ? k->id : 0;
    op->register_method = str_dup("authkey", &is_oom);
    op->cap_version = reg->version;
    op->advertised_routes =
        strv_dup(reg->hostinfo.routable_ips, reg->hostinfo.n_routable_ips, &is_oom);
    op->n_advertised_routes = op->advertised_routes != NULL ? reg->hostinfo.n_routable_ips : 0;
    if (is_oom) {
        concord__command__free_unpacked(cmd, NULL);
        return NULL;
    }
    return cmd;
}

static int find_preauthkey(struct store_txn *t, const char *token, Concord__PreAuthKey **out)
{
    char prefix[SECRET_PREFIX_LEN + 1];
    int rv;

    *out = NULL;
    if (secret_parse_prefix(SECRET_KIND_PREAUTH, token, prefix) != 0)
        return STORE_NOTFOUND;
    rv = store_preauthkey_get_by_prefix(t, prefix, out);
    if (rv == 0 &&
        ((*out)->hash.len != SECRET_HASH_BYTES || !secret_verify(token, (*out)->hash.data))) {
        store_record_free(*out);
        *out = NULL;
        return STORE_NOTFOUND;
    }
    return rv;
}

/* Step 5. `m` is the machine's node, if it has one. */
static void register_start(struct ctl_req *r);

static void on_key_barrier(void *arg, int status)
{
    struct ctl_req *r = arg;

    if (status != CLUSTER_OK) {
        finish_text(r, 503, "the cluster cannot check the auth key now; retry\n");
        return;
    }
    register_start(r);
}

static void register_with_key(struct ctl_req *r, struct store_txn *t, const Concord__Node *m)
{
    Concord__PreAuthKey *k = NULL;
    Concord__Command *cmd;
    bool is_same_machine;
    int rv = find_preauthkey(t, r->reg.auth_key, &k);

    /* A key created a moment ago through another replica may not be
     * applied here yet: look again after a barrier before refusing it. */
    if (rv == STORE_NOTFOUND && !r->is_key_rechecked) {
        store_txn_abort(t);
        r->is_key_rechecked = true;
        if (cluster_barrier(r->ctl->opt.cluster, on_key_barrier, r) != 0)
            finish_text(r, 503, "the cluster cannot check the auth key now; retry\n");
        return;
    }
    if (rv != 0) {
        store_txn_abort(t);
        LOG_INFO("control: %s: unknown auth key", r->peer);
        finish_register(r, "invalid auth key", NULL, false);
        return;
    }
    store_txn_abort(t);
    if (k->expiration_unix_ms != 0 && k->expiration_unix_ms <= ctl_now_ms()) {
        store_record_free(k);
        LOG_INFO("control: %s: expired auth key", r->peer);
        finish_register(r, "auth key has expired", NULL, false);
        return;
    }
    /* A single-use key this very machine used before (a container re-running
     * `tailscale up --auth-key`) re-registers it without consuming anything. */
    is_same_machine = m != NULL && m->auth_key_id == k->id;
    if (!k->reusable && k->used && !is_same_machine) {
        store_record_free(k);
        LOG_INFO("control: %s: single-use auth key already used", r->peer);
        finish_register(r, "auth key has already been used", NULL, false);
        return;
    }
    cmd = register_command(r, k, !is_same_machine);
    store_record_free(k);
    if (cmd == NULL) {
        finish_text(r, 500, "out of memory\n");
        return;
    }
    submit(r, cmd, on_submitted);
}

/* ---- interactive registration ---- */

static void auth_url(const struct control *c, const char *auth_id, char *out, size_t cap)
{
    size_t len = strlen(c->server_url);

    while (len > 0 && c->server_url[len - 1] == '/')
        len--;
    snprintf(out, cap, "%.*s/register/%s", (int)len, c->server_url, auth_id);
}

static void on_pending_added(void *arg, int status, const Concord__CommandResult *result)
{
    struct ctl_req *r = arg;
    char url[512];

    if (status != CLUSTER_OK || result->code != CLUSTER_RESULT_OK) {
        finish_text(r, 503, "the cluster cannot take the registration now; retry\n");
        return;
    }
    auth_url(r->ctl, r->auth_id, url, sizeof url);
    LOG_INFO("control: %s: interactive registration %s waits for approval", r->peer, r->auth_id);
    finish_register(r, NULL, url, false);
}

static void register_interactive(struct ctl_req *r)
{
    const struct wire_register_request *reg = &r->reg;
    uint8_t rnd[AUTH_ID_BYTES];
    Concord__Command *cmd = ctl_command_new(r->ctl);
    Concord__AddRegistration *op = calloc(1, sizeof *op);
    Concord__PendingRegistration *p = calloc(1, sizeof *p);
    bool is_oom = cmd == NULL || op == NULL || p == NULL;

    if (is_oom) {
        free(p);
        free(op);
        if (cmd != NULL)
            concord__command__free_unpacked(cmd, NULL);
        finish_text(r, 500, "out of memory\n");
        return;
    }
    randombytes_buf(rnd, sizeof rnd);
    sodium_bin2base64(r->auth_id, sizeof r->auth_id, rnd, sizeof rnd,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    concord__add_registration__init(op);
    concord__pending_registration__init(p);
    cmd->op_case = CONCORD__COMMAND__OP_ADD_REGISTRATION;
    cmd->add_registration = op;
    op->registration = p;
    p->auth_id = str_dup(r->auth_id, &is_oom);
    p->machine_key = bytes_dup(r->machine_key, 32, &is_oom);
    p->node_key = bytes_dup(reg->node_key, 32, &is_oom);
    if (reg->has_old_node_key)
        p->old_node_key = bytes_dup(reg->old_node_key, 32, &is_oom);
    p->hostname = str_dup(reg->hostinfo.hostname, &is_oom);
    p->hostinfo = bytes_dup((const uint8_t *)reg->hostinfo.json, reg->hostinfo.json_len, &is_oom);
    p->ephemeral = reg->ephemeral;
    p->cap_version = reg->version;
    p->expires_unix_ms = cmd->proposed_unix_ms + (int64_t)r->ctl->opt.registration_ttl_ms;
    p->advertised_routes =
        strv_dup(reg->hostinfo.routable_ips, reg->hostinfo.n_routable_ips, &is_oom);
    p->n_advertised_routes = p->advertised_routes != NULL ? reg->hostinfo.n_routable_ips : 0;
    if (is_oom) {
        concord__command__free_unpacked(cmd, NULL);
        finish_text(r, 500, "out of memory\n");
        return;
    }
    submit(r, cmd, on_pending_added);
}

/* Step 4: hold the followup until its registration is approved. */
static void register_followup(struct ctl_req *r, struct store_txn *t)
{
    struct control *c = r->ctl;
    const char *id = strrchr(r->reg.followup, '/');
    Concord__PendingRegistration *p = NULL;
    bool is_pending = false;

    id = id != NULL ? id + 1 : r->reg.followup;
    if (strlen(id) < sizeof r->auth_id && store_registration_get(t, id, &p) == 0) {
        is_pending = p->machine_key.len == 32 &&
                     memcmp(p->machine_key.data, r->machine_key, 32) == 0 &&
                     p->node_key.len == 32 && memcmp(p->node_key.data, r->reg.node_key, 32) == 0 &&
                     p->expires_unix_ms > ctl_now_ms();
        store_record_free(p);
    }
    store_txn_abort(t);
    if (!is_pending) {
        register_interactive(r);
        return;
    }
    snprintf(r->auth_id, sizeof r->auth_id, "%s", id);
    r->kind = CTL_REQ_FOLLOWUP;
    r->is_waiting = true;
    r->next = c->followups;
    if (c->followups != NULL)
        c->followups->prev = r;
    c->followups = r;
}

void ctl_followups_wake(struct control *c, const char *auth_id)
{
    struct ctl_req *r = c->followups;

    while (r != NULL) {
        struct ctl_req *next = r->next;

        if (strcmp(r->auth_id, auth_id) == 0) {
            req_unlink_followup(r);
            LOG_INFO("control: %s: registration %s approved", r->peer, auth_id);
            finish_login(r);
        }
        r = next;
    }
}

void ctl_followups_free(struct control *c)
{
    while (c->followups != NULL)
        req_free(c->followups);
}

/* ---- logout ---- */

static void on_logged_out(void *arg, int status, const Concord__CommandResult *result)
{
    struct ctl_req *r = arg;

    (void)result;
    if (status != CLUSTER_OK) {
        finish_text(r, 503, "the cluster cannot take the logout now; retry\n");
        return;
    }
    LOG_INFO("control: %s: node logged out", r->peer);
    finish_register(r, NULL, NULL, true);
}

static void logout(struct ctl_req *r, const Concord__Node *n)
{
    Concord__Command *cmd = ctl_command_new(r->ctl);
    Concord__LogoutNode *op = calloc(1, sizeof *op);
    bool is_oom = cmd == NULL || op == NULL;

    if (is_oom) {
        free(op);
        if (cmd != NULL)
            concord__command__free_unpacked(cmd, NULL);
        finish_text(r, 500, "out of memory\n");
        return;
    }
    concord__logout_node__init(op);
    op->id = n->id;
    op->node_key = bytes_dup(r->reg.node_key, 32, &is_oom);
    cmd->op_case = CONCORD__COMMAND__OP_LOGOUT_NODE;
    cmd->logout_node = op;
    if (is_oom) {
        concord__command__free_unpacked(cmd, NULL);
        finish_text(r, 500, "out of memory\n");
        return;
    }
    submit(r, cmd, on_logged_out);
}

/* ---- /machine/register ---- */

static bool node_is_expired(const Concord__Node *n)
{
    return n->expiry_unix_ms != 0 && n->expiry_unix_ms <= ctl_now_ms();
}

static void register_decide(struct ctl_req *r, struct store_txn *t, Concord__Node *by_key,
                            Concord__Node *by_machine)
{
    const struct wire_register_request *reg = &r->reg;

    if (by_key != NULL && memcmp(by_key->machine_key.data, r->machine_key, 32) != 0) {
        store_txn_abort(t);
        LOG_WARN("control: %s: refused: the node key of node %" PRIu64
                 " belongs to another machine",
                 r->peer, by_key->id);
        finish_text(r, 403, "this node key belongs to another machine\n");
        return;
    }
    if (reg->has_expiry && reg->expiry_unix_ms <= ctl_now_ms()) {
        store_txn_abort(t);
        if (by_key != NULL)
            logout(r, by_key);
        else
            finish_register(r, NULL, NULL, true);
        return;
    }
    if (by_key != NULL && !node_is_expired(by_key)) {
        store_txn_abort(t);
        finish_login(r);
        return;
    }
    if (reg->followup != NULL) {
        register_followup(r, t);
        return;
    }
    if (reg->auth_key != NULL) {
        register_with_key(r, t, by_machine);
        return;
    }
    store_txn_abort(t);
    if (by_key != NULL) {
        /* Its key really expired: the client makes a new one and comes back. */
        finish_register(r, NULL, NULL, true);
        return;
    }
    register_interactive(r);
}

/* Reads what the registry knows of the request's keys and decides; again
 * after a barrier when an auth key was not found. */
static void register_start(struct ctl_req *r)
{
    Concord__Node *by_key = NULL;
    Concord__Node *by_machine = NULL;
    struct store_txn *t;
    int rv;

    if (r->st == NULL) {
        req_free(r); /* the client went away meanwhile */
        return;
    }
    rv = store_txn_begin(r->ctl->opt.store, false, &t);
    if (rv == 0) {
        rv = store_node_get_by_node_key(t, r->reg.node_key, &by_key);
        if (rv == STORE_NOTFOUND)
            rv = store_node_get_by_machine_key(t, r->machine_key, &by_machine);
        else if (rv == 0 && memcmp(by_key->machine_key.data, r->machine_key, 32) == 0)
            rv = store_node_get(t, by_key->id, &by_machine);
        if (rv == STORE_NOTFOUND)
            rv = 0;
        if (rv != 0)
            store_txn_abort(t);
    }
    if (rv != 0) {
        finish_text(r, 500, "cannot read the node registry\n");
    } else {
        register_decide(r, t, by_key, by_machine);
    }
    store_record_free(by_key);
    store_record_free(by_machine);
}

static void handle_register(struct ctl_conn *conn, struct h2_stream *st, const struct h2_request *h)
{
    char errmsg[WIRE_ERRMSG_BYTES];
    struct ctl_req *r = ctl_req_new(conn, st, CTL_REQ_REGISTER);

    if (r == NULL) {
        h2_respond(conn->h2, st, 500, NULL, NULL, 0);
        return;
    }
    if (wire_register_request_parse(h->body, h->body_len, &r->reg, errmsg) != 0) {
        LOG_INFO("control: %s: bad register request: %s", conn->peer, errmsg);
        finish_text(r, 400, errmsg);
        return;
    }
    if (r->reg.version < CTL_MIN_CAPVER) {
        finish_text(r, 400, "client too old: Tailscale v1.80 or newer is required\n");
        return;
    }
    register_start(r);
}

/* ---- dispatch ---- */

static void respond_now(struct ctl_conn *conn, struct h2_stream *st, int status,
                        const char *content_type, const char *body)
{
    if (h2_respond(conn->h2, st, status, content_type, body, body != NULL ? strlen(body) : 0) != 0)
        ctl_conn_close(conn, "cannot answer");
}

void ctl_machine_request(struct ctl_conn *conn, struct h2_stream *st, const struct h2_request *req)
{
    const char *path = req->path;

    if (conn->is_dead)
        return;
    if (path_is(path, "/machine/register") && strcmp(req->method, "POST") == 0) {
        handle_register(conn, st, req);
    } else if (path_is(path, "/machine/map") && strcmp(req->method, "POST") == 0) {
        ctl_map_request(conn, st, conn->noise.peer_static, req->body, req->body_len);
    } else if (path_is(path, "/machine/set-dns") || path_is(path, "/machine/feature/query")) {
        /* No ACME DNS-01 and no feature prompts: valid empty answers. */
        respond_now(conn, st, 200, content_type_json, "{}");
    } else if (path_is(path, "/machine/update-health") || path_is(path, "/machine/audit-log") ||
               path_is(path, "/machine/set-device-attr")) {
        respond_now(conn, st, 200, content_type_json, "{}");
    } else {
        respond_now(conn, st, 404, "text/plain; charset=utf-8", "not found\n");
    }
}
