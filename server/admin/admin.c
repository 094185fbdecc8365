/* server/admin/admin.c: the entry point of every request on the client
 * listener and the Unix socket.
 * Happy path (/api/v1): route -> authenticate -> handler, which answers at
 * once or after one asynchronous step (barrier + read, submit + read back,
 * worker job). Failure: every error becomes one JSON reply through the
 * ADMIN_CODES table; a reply frees the call, and a connection that died
 * meanwhile only costs net_http_respond freeing the request. */
#include "server/admin/admin.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <sodium.h>

#include "server/admin/admin_internal.h"

struct route {
    const char *method;
    const char *pattern; /* "{}" matches one non-empty path segment */
    admin_handler_fn handle;
};

static void unimplemented(struct admin_call *call)
{
    admin_fail(call, ADMIN_UNIMPLEMENTED, "%s %s is not implemented by concord yet",
               call->req->method, call->req->path);
}

static const struct route routes[] = {
    {"GET", "/api/v1/user", admin_user_list},
    {"POST", "/api/v1/user", admin_user_create},
    {"POST", "/api/v1/user/{}/rename/{}", admin_user_rename},
    {"DELETE", "/api/v1/user/{}", admin_user_delete},
    {"GET", "/api/v1/node", admin_node_list},
    {"POST", "/api/v1/node/register", unimplemented},
    {"POST", "/api/v1/node/backfillips", unimplemented},
    {"GET", "/api/v1/node/{}", admin_node_get},
    {"DELETE", "/api/v1/node/{}", admin_node_delete},
    {"POST", "/api/v1/node/{}/expire", admin_node_expire},
    {"POST", "/api/v1/node/{}/rename/{}", admin_node_rename},
    {"POST", "/api/v1/node/{}/tags", admin_node_tags},
    {"POST", "/api/v1/node/{}/approve_routes", admin_node_approve_routes},
    {"POST", "/api/v1/debug/node", admin_node_debug_create},
    {"POST", "/api/v1/auth/register", admin_auth_register},
    {"POST", "/api/v1/auth/approve", unimplemented},
    {"POST", "/api/v1/auth/reject", admin_auth_reject},
    {"GET", "/api/v1/auth/pending", admin_auth_pending},
    {"GET", "/api/v1/preauthkey", admin_preauthkey_list},
    {"POST", "/api/v1/preauthkey", admin_preauthkey_create},
    {"POST", "/api/v1/preauthkey/expire", admin_preauthkey_expire},
    {"DELETE", "/api/v1/preauthkey", admin_preauthkey_delete},
    {"GET", "/api/v1/apikey", admin_apikey_list},
    {"POST", "/api/v1/apikey", admin_apikey_create},
    {"POST", "/api/v1/apikey/expire", admin_apikey_expire},
    {"DELETE", "/api/v1/apikey/{}", admin_apikey_delete},
    {"GET", "/api/v1/policy", admin_policy_get},
    {"PUT", "/api/v1/policy", admin_policy_set},
    {"POST", "/api/v1/policy/check", admin_policy_check},
    {"GET", "/api/v1/health", admin_api_health},
    {"GET", "/api/v1/cluster/members", admin_cluster_members},
    {"POST", "/api/v1/cluster/members", admin_cluster_member_add},
    {"DELETE", "/api/v1/cluster/members/{}", admin_cluster_member_remove},
    {"GET", "/api/v1/cluster/status", admin_cluster_status},
    {"POST", "/api/v1/cluster/leader/transfer", admin_cluster_transfer},
    {"POST", "/api/v1/cluster/join", admin_cluster_join},
    {"GET", "/api/v1/cluster/snapshot", admin_cluster_snapshot_save},
    {"POST", "/api/v1/cluster/snapshot/restore", admin_cluster_snapshot_restore},
    {"POST", "/api/v1/cluster/backup", admin_cluster_backup},
    {"GET", "/api/v1/audit", admin_audit_list},
};

/* ---- the one table from failure class to statuses ---- */

int admin_code_http_status(enum admin_code code)
{
    switch (code) {
#define X(c, grpc, http)                                                                           \
    case c:                                                                                        \
        return http;
        ADMIN_CODES(X)
#undef X
    }
    return 500;
}

int admin_code_grpc(enum admin_code code)
{
    switch (code) {
#define X(c, grpc, http)                                                                           \
    case c:                                                                                        \
        return grpc;
        ADMIN_CODES(X)
#undef X
    }
    return 13;
}

enum admin_code admin_code_from_cluster(int status)
{
    switch (status) {
    case CLUSTER_OK:
        return ADMIN_OK;
    case CLUSTER_NOLEADER:
    case CLUSTER_UNKNOWN:
    case CLUSTER_TIMEOUT:
    case CLUSTER_SHUTDOWN:
    case CLUSTER_TRANSPORT:
        return ADMIN_UNAVAILABLE;
    case CLUSTER_TOOBIG:
        return ADMIN_TOOBIG;
    case CLUSTER_INVALID:
        return ADMIN_INVALID;
    case CLUSTER_BUSY:
    case CLUSTER_EXISTS:
        return ADMIN_CONFLICT;
    case CLUSTER_NOTFOUND:
        return ADMIN_NOTFOUND;
    default:
        return ADMIN_INTERNAL;
    }
}

enum admin_code admin_code_from_result(uint32_t result)
{
    switch (result) {
    case CLUSTER_RESULT_OK:
        return ADMIN_OK;
    case CLUSTER_RESULT_NOTFOUND:
        return ADMIN_NOTFOUND;
    case CLUSTER_RESULT_CONFLICT:
        return ADMIN_CONFLICT;
    case CLUSTER_RESULT_INVALID:
        return ADMIN_INVALID;
    case CLUSTER_RESULT_PRECONDITION:
        return ADMIN_PRECONDITION;
    default:
        return ADMIN_INTERNAL;
    }
}

/* The operator-facing sentence for a machinery failure: with no quorum the
 * useful hint is that stale reads still work; after UNKNOWN or TIMEOUT the
 * write may or may not have happened, and the operator must know that. */
static void cluster_failure_message(int status, char *buf, size_t cap)
{
    switch (status) {
    case CLUSTER_NOLEADER:
        snprintf(buf, cap,
                 "%s; reads with ?consistent=false (CLI: --stale) still work on this replica",
                 cluster_strerror(status));
        break;
    case CLUSTER_UNKNOWN:
        snprintf(buf, cap, "%s; check the state before retrying", cluster_strerror(status));
        break;
    case CLUSTER_TIMEOUT:
    case CLUSTER_TRANSPORT:
        snprintf(buf, cap, "outcome unknown: %s; check the state before retrying",
                 cluster_strerror(status));
        break;
    default:
        snprintf(buf, cap, "%s", cluster_strerror(status));
        break;
    }
}

/* ---- small shared helpers ---- */

int64_t admin_now_unix_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

char *admin_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);

    if (d != NULL)
        memcpy(d, s, n);
    return d;
}

/* ---- replies ---- */

void admin_respond_json(struct admin *a, struct net_http_request *req, int http_status,
                        json_t *body, const char *extra_headers)
{
    static const char nomem[] = "{\"code\":13,\"message\":\"out of memory\",\"details\":[]}";
    char *text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;

    json_decref(body);
    if (text == NULL) { /* a NULL body is a failed allocation upstream */
        a->respond(a->respond_arg, req, 500, "application/json", NULL, nomem, sizeof nomem - 1);
        return;
    }
    a->respond(a->respond_arg, req, http_status, "application/json", extra_headers, text,
               strlen(text));
    free(text);
}

void admin_respond_error(struct admin *a, struct net_http_request *req, enum admin_code code,
                         const char *message)
{
    json_t *body =
        json_pack("{s:i, s:s, s:[]}", "code", admin_code_grpc(code), "message", message, "details");

    admin_respond_json(a, req, admin_code_http_status(code), body, NULL);
}

static void call_free(struct admin_call *call)
{
    json_decref(call->body);
    for (size_t i = 0; i < ADMIN_MAX_PARAMS; i++)
        free(call->params[i]);
    sodium_memzero(call->token, sizeof call->token);
    free(call->blob);
    free(call->backup.dir);
    free(call);
}

void admin_reply_json(struct admin_call *call, int http_status, json_t *body,
                      const char *extra_headers)
{
    if (body == NULL)
        body = json_object();
    admin_respond_json(call->admin, call->req, http_status, body, extra_headers);
    call_free(call);
}

void admin_reply_raw(struct admin_call *call, int http_status, const char *content_type,
                     const void *body, size_t len)
{
    call->admin->respond(call->admin->respond_arg, call->req, http_status, content_type, NULL, body,
                         len);
    call_free(call);
}

void admin_fail(struct admin_call *call, enum admin_code code, const char *fmt, ...)
{
    char message[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    admin_respond_error(call->admin, call->req, code, message);
    call_free(call);
}

void admin_fail_store(struct admin_call *call, int store_code, const char *what)
{
    admin_fail(call, ADMIN_INTERNAL, "%s: %s", what, store_strerror(store_code));
}

void admin_fail_cluster(struct admin_call *call, int status, const char *what)
{
    char message[256];

    cluster_failure_message(status, message, sizeof message);
    if (what != NULL)
        admin_fail(call, admin_code_from_cluster(status), "%s: %s", what, message);
    else
        admin_fail(call, admin_code_from_cluster(status), "%s", message);
}

/* ---- asynchronous steps ---- */

static void run_read(struct admin_call *call)
{
    struct store_txn *t;
    int rv = store_txn_begin(call->admin->opts.store, false, &t);

    if (rv != 0) {
        admin_fail_store(call, rv, "cannot open a read transaction");
        return;
    }
    call->read(call, t); /* replies: call is gone */
    store_txn_abort(t);
}

/* A read has nothing to apply: only the stale-read hint matters. */
static void fail_read(struct admin_call *call, int status)
{
    if (status == CLUSTER_NOLEADER)
        admin_fail(call, ADMIN_UNAVAILABLE,
                   "consistent read failed: no leader, the cluster has no quorum; reads with "
                   "?consistent=false (CLI: --stale) still work on this replica");
    else
        admin_fail_cluster(call, status, "consistent read failed");
}

static void call_on_barrier(void *arg, int status)
{
    struct admin_call *call = arg;

    if (status != CLUSTER_OK) {
        fail_read(call, status);
        return;
    }
    run_read(call);
}

void admin_read(struct admin_call *call, admin_read_fn fn)
{
    int rv;

    call->read = fn;
    if (!call->is_consistent) {
        run_read(call);
        return;
    }
    rv = cluster_barrier(call->admin->opts.cluster, call_on_barrier, call);
    if (rv != 0)
        fail_read(call, rv);
}

static void call_on_submitted(void *arg, int status, const Concord__CommandResult *result)
{
    struct admin_call *call = arg;
    struct store_txn *t;
    int rv;

    if (status != CLUSTER_OK) {
        admin_fail_cluster(call, status, NULL);
        return;
    }
    if (result->code != CLUSTER_RESULT_OK) {
        admin_fail(call, admin_code_from_result(result->code), "%s",
                   result->message != NULL && result->message[0] != '\0' ? result->message
                                                                         : "command refused");
        return;
    }
    rv = store_txn_begin(call->admin->opts.store, false, &t);
    if (rv != 0) {
        admin_fail_store(call, rv, "applied, but cannot read the result back");
        return;
    }
    call->done(call, t, result); /* replies: call is gone */
    store_txn_abort(t);
}

void admin_submit(struct admin_call *call, Concord__Command *cmd, admin_done_fn fn)
{
    int rv;

    call->done = fn;
    rv = cluster_submit(call->admin->opts.cluster, cmd, call_on_submitted, call);
    if (rv != 0) {
        concord__command__free_unpacked(cmd, NULL);
        admin_fail_cluster(call, rv, NULL);
    }
}

void admin_done_empty(struct admin_call *call, struct store_txn *t,
                      const Concord__CommandResult *result)
{
    (void)t;
    (void)result;
    admin_reply_json(call, 200, json_object(), NULL);
}

Concord__Command *admin_command_new(struct admin_call *call)
{
    Concord__Command *cmd = malloc(sizeof *cmd);

    if (cmd == NULL)
        goto err_nomem;
    concord__command__init(cmd);
    cmd->proposed_unix_ms = admin_now_unix_ms();
    cmd->actor = admin_strdup(call->actor);
    if (cmd->actor == NULL)
        goto err_after_alloc;
    return cmd;

err_after_alloc:
    free(cmd);
err_nomem:
    admin_fail(call, ADMIN_INTERNAL, "out of memory");
    return NULL;
}

void *admin_op_alloc(struct admin_call *call, Concord__Command *cmd, size_t size)
{
    void *op = malloc(size);

    if (op == NULL) {
        concord__command__free_unpacked(cmd, NULL);
        admin_fail(call, ADMIN_INTERNAL, "out of memory");
    }
    return op;
}

/* ---- routing ---- */

static void params_free(char *params[ADMIN_MAX_PARAMS])
{
    for (size_t i = 0; i < ADMIN_MAX_PARAMS; i++) {
        free(params[i]);
        params[i] = NULL;
    }
}

/* Matches path against pattern, copying "{}" segments into params (all
 * NULL on entry). Returns 1 on match, 0 on no match, -1 on out-of-memory. */
static int route_match(const char *pattern, const char *path, char *params[ADMIN_MAX_PARAMS])
{
    size_t n_params = 0;

    while (*pattern != '\0' && *path != '\0') {
        if (pattern[0] == '{' && pattern[1] == '}') {
            size_t len = strcspn(path, "/");
            if (len == 0 || n_params == ADMIN_MAX_PARAMS)
                goto no_match;
            params[n_params] = strndup(path, len);
            if (params[n_params] == NULL)
                goto err_nomem;
            n_params++;
            pattern += 2;
            path += len;
        } else if (*pattern == *path) {
            pattern++;
            path++;
        } else {
            goto no_match;
        }
    }
    if (*pattern == '\0' && *path == '\0')
        return 1;
no_match:
    params_free(params);
    return 0;
err_nomem:
    params_free(params);
    return -1;
}

/* Checks `Authorization: Bearer <api key>` against the local store and
 * names the actor. On failure returns ADMIN_UNAUTHENTICATED, or
 * ADMIN_INTERNAL when the store cannot tell, with the reason in why. */
static enum admin_code authenticate(struct admin *a, const struct net_http_request *req,
                                    char *actor, size_t actor_cap, char *why, size_t why_cap)
{
    const char *auth = net_http_header_get(req, "Authorization");
    char prefix[SECRET_PREFIX_LEN + 1];
    Concord__ApiKey *key = NULL;
    struct store_txn *t;
    int rv;

    if (auth == NULL) {
        snprintf(why, why_cap, "missing API key: send the header Authorization: Bearer <api key>");
        return ADMIN_UNAUTHENTICATED;
    }
    if (strncasecmp(auth, "Bearer ", 7) != 0) {
        snprintf(why, why_cap, "malformed Authorization header: expected Bearer <api key>");
        return ADMIN_UNAUTHENTICATED;
    }
    auth += 7;
    while (*auth == ' ')
        auth++;
    if (secret_parse_prefix(SECRET_KIND_APIKEY, auth, prefix) != 0) {
        snprintf(why, why_cap, "malformed API key: expected %s-<prefix>-<secret>",
                 SECRET_KIND_APIKEY);
        return ADMIN_UNAUTHENTICATED;
    }
    rv = store_txn_begin(a->opts.store, false, &t);
    if (rv != 0) {
        snprintf(why, why_cap, "cannot check the API key: %s", store_strerror(rv));
        return ADMIN_INTERNAL;
    }
    rv = store_apikey_get_by_prefix(t, prefix, &key);
    store_txn_abort(t);
    if (rv != 0 && rv != STORE_NOTFOUND) {
        snprintf(why, why_cap, "cannot check the API key: %s", store_strerror(rv));
        return ADMIN_INTERNAL;
    }
    if (rv != 0 || key->hash.len != SECRET_HASH_BYTES || !secret_verify(auth, key->hash.data)) {
        snprintf(why, why_cap, "invalid API key");
        store_record_free(key);
        return ADMIN_UNAUTHENTICATED;
    }
    if (key->expiration_unix_ms != 0 && key->expiration_unix_ms <= admin_now_unix_ms()) {
        snprintf(why, why_cap, "API key %s has expired", prefix);
        store_record_free(key);
        return ADMIN_UNAUTHENTICATED;
    }
    store_record_free(key);
    snprintf(actor, actor_cap, "apikey:%s", prefix);
    return ADMIN_OK;
}

static void api_dispatch(struct admin *a, struct net_http_request *req)
{
    char *params[ADMIN_MAX_PARAMS] = {NULL, NULL};
    const struct route *found = NULL;
    bool is_path_known = false;
    struct admin_call *call;
    enum admin_code code;
    char consistent[8];
    char why[160];

    for (size_t i = 0; i < sizeof routes / sizeof routes[0] && found == NULL; i++) {
        char *candidate[ADMIN_MAX_PARAMS] = {NULL, NULL};
        int m = route_match(routes[i].pattern, req->path, candidate);
        if (m < 0) {
            admin_respond_error(a, req, ADMIN_INTERNAL, "out of memory");
            return;
        }
        if (m == 0)
            continue;
        is_path_known = true;
        if (strcmp(routes[i].method, req->method) == 0) {
            found = &routes[i];
            memcpy(params, candidate, sizeof params);
        } else {
            params_free(candidate);
        }
    }
    if (found == NULL) {
        if (is_path_known)
            admin_respond_error(a, req, ADMIN_METHOD, "method not allowed");
        else
            admin_respond_error(a, req, ADMIN_NOTFOUND, "no such route");
        return;
    }

    call = calloc(1, sizeof *call);
    if (call == NULL) {
        params_free(params);
        admin_respond_error(a, req, ADMIN_INTERNAL, "out of memory");
        return;
    }
    call->admin = a;
    call->req = req;
    memcpy(call->params, params, sizeof params);
    call->is_consistent = true;

    if (req->is_local) {
        snprintf(call->actor, sizeof call->actor, "cli");
    } else if ((code = authenticate(a, req, call->actor, sizeof call->actor, why, sizeof why)) !=
               ADMIN_OK) {
        admin_fail(call, code, "%s", why);
        return;
    }
    if (net_http_query_get(req, "consistent", consistent, sizeof consistent)) {
        if (strcmp(consistent, "false") == 0)
            call->is_consistent = false;
        else if (strcmp(consistent, "true") != 0) {
            admin_fail(call, ADMIN_INVALID, "consistent: expected true or false");
            return;
        }
    }
    found->handle(call);
}

void admin_handle(void *arg, struct net_http_request *req)
{
    struct admin *a = arg;

    if (strcmp(req->path, "/health") == 0)
        admin_health(a, req);
    else if (strcmp(req->path, "/ready") == 0)
        admin_ready(a, req);
    else if (strcmp(req->path, ADMIN_PEER_PATH) == 0)
        admin_peer_handle(a, req);
    else if (strncmp(req->path, "/api/v1/", 8) == 0)
        api_dispatch(a, req);
    else
        admin_respond_error(a, req, ADMIN_NOTFOUND, "no such route");
}

static void respond_net(void *arg, struct net_http_request *req, int status,
                        const char *content_type, const char *extra_headers, const void *body,
                        size_t len)
{
    (void)arg;
    net_http_respond(req, status, content_type, extra_headers, body, len);
}

int admin_new(const struct admin_options *opts, struct admin **out)
{
    struct admin *a;

    if (opts->cluster == NULL || opts->store == NULL || opts->loop == NULL)
        return ADMIN_INVALID;
    a = calloc(1, sizeof *a);
    if (a == NULL)
        return ADMIN_INTERNAL;
    a->opts = *opts;
    a->respond = respond_net;
    *out = a;
    return 0;
}

int admin_queue_work(struct admin_call *call, uv_work_cb work, uv_after_work_cb after)
{
    int rv;

    call->work.data = call;
    rv = uv_queue_work(call->admin->opts.loop, &call->work, work, after);
    if (rv == 0)
        call->admin->n_works++;
    return rv;
}

bool admin_work_end(struct admin *a)
{
    a->n_works--;
    return a->is_freed;
}

void admin_work_release(struct admin *a)
{
    if (a->is_freed && a->n_works == 0) {
        admin_close_cb cb = a->close_cb;
        void *arg = a->close_arg;

        sodium_memzero(a->opts.cluster_secret, sizeof a->opts.cluster_secret);
        free(a->policy_file_text);
        free(a);
        if (cb != NULL)
            cb(arg);
    }
}

void admin_close(struct admin *a, admin_close_cb cb, void *arg)
{
    assert(!a->is_freed);
    a->is_freed = true;
    a->close_cb = cb;
    a->close_arg = arg;
    admin_work_release(a);
}

void admin_free(struct admin *a)
{
    if (a != NULL)
        admin_close(a, NULL, NULL);
}
