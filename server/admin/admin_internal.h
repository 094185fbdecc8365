/* server/admin/admin_internal.h: what the files of server/admin/ share.
 *
 * Every request of /api/v1 becomes a `struct admin_call` that lives until its
 * one reply: a handler either answers at once (bad input, routing errors) or
 * starts one asynchronous step (a barrier before a read, a submission before
 * reading the write back, a worker job) whose callback answers. Replying
 * frees the call, so nothing may touch it afterwards. */
#ifndef CONCORD_SERVER_ADMIN_ADMIN_INTERNAL_H
#define CONCORD_SERVER_ADMIN_ADMIN_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "proto/concord.pb-c.h"
#include "raft/cluster.h"
#include "server/admin/admin.h"
#include "server/net/http.h"
#include "storage/secret.h"
#include "storage/store.h"

/* The failure classes of the API: grpc-gateway's JSON error `code` (a gRPC
 * status code, as Headscale's clients expect) and the HTTP status. This table
 * is the only place where an error becomes a status. */
#define ADMIN_CODES(X)                                                                             \
    X(ADMIN_OK, 0, 200)                                                                            \
    X(ADMIN_INVALID, 3, 400)                                                                       \
    X(ADMIN_UNAUTHENTICATED, 16, 401)                                                              \
    X(ADMIN_FORBIDDEN, 7, 403)                                                                     \
    X(ADMIN_NOTFOUND, 5, 404)                                                                      \
    X(ADMIN_METHOD, 12, 405)                                                                       \
    X(ADMIN_CONFLICT, 6, 409)                                                                      \
    X(ADMIN_PRECONDITION, 9, 412)                                                                  \
    X(ADMIN_TOOBIG, 8, 413)                                                                        \
    X(ADMIN_INTERNAL, 13, 500)                                                                     \
    X(ADMIN_UNIMPLEMENTED, 12, 501)                                                                \
    X(ADMIN_UNAVAILABLE, 14, 503)

enum admin_code {
#define X(code, grpc, http) code,
    ADMIN_CODES(X)
#undef X
};

int admin_code_http_status(enum admin_code code);
int admin_code_grpc(enum admin_code code);
/* The machinery's codes (enum cluster_code) and the FSM's results
 * (enum cluster_result) as API failures. */
enum admin_code admin_code_from_cluster(int status);
enum admin_code admin_code_from_result(uint32_t result);

/* How answers leave: net_http_respond, except in unit tests, which drive
 * admin_handle with requests that never came from a socket and catch the
 * answers. Must free req like net_http_respond. */
typedef void (*admin_respond_fn)(void *arg, struct net_http_request *req, int status,
                                 const char *content_type, const char *extra_headers,
                                 const void *body, size_t len);

struct admin_call;

struct admin {
    struct admin_options opts;
    admin_respond_fn respond;
    void *respond_arg;
    unsigned n_works;        /* thread-pool jobs in flight; each holds a call */
    bool is_freed;           /* admin_close came while jobs were in flight */
    admin_close_cb close_cb; /* fires once is_freed and no job is left */
    /* policy.mode file (policyfile.c) */
    char *policy_file_text;        /* the last good read of the file, or NULL */
    bool is_policy_file_bad;       /* the last read failed or did not check */
    bool is_policy_file_pending;   /* not yet seen applied */
    bool is_policy_file_proposing; /* a SetPolicy in flight */
    uint64_t policy_file_base;     /* the applied version when the file was read */
    void *close_arg;
    bool is_backup_running; /* one backup copy at a time */
};

/* Thread-pool jobs outlive the cluster at shutdown: admin_close then waits
 * for the last one. admin_queue_work wraps uv_queue_work; the after
 * callback must start with admin_work_end, and when that says the replica
 * is stopping, answer without touching the cluster and then call
 * admin_work_release. */
int admin_queue_work(struct admin_call *call, uv_work_cb work, uv_after_work_cb after);
bool admin_work_end(struct admin *a);
void admin_work_release(struct admin *a);

/* Runs inside a read transaction; must reply or start the next step. */
typedef void (*admin_read_fn)(struct admin_call *call, struct store_txn *t);
/* Runs after a submitted command applied successfully on this replica,
 * inside a read transaction (read-your-writes); must reply. */
typedef void (*admin_done_fn)(struct admin_call *call, struct store_txn *t,
                              const Concord__CommandResult *result);

#define ADMIN_MAX_PARAMS 2

struct admin_call {
    struct admin *admin;
    struct net_http_request *req;
    char actor[64];                 /* "cli" or "apikey:<prefix>" */
    char *params[ADMIN_MAX_PARAMS]; /* path parameters, in order */
    bool is_consistent;             /* barrier before reading */
    json_t *body;                   /* parsed request body, or NULL */
    admin_read_fn read;
    admin_done_fn done;
    uint64_t id;                  /* handler scratch: an object id */
    char token[SECRET_TOKEN_MAX]; /* a new secret to show once; wiped */
    uint8_t *blob;                /* snapshot bytes between steps */
    size_t blob_len;
    int work_status; /* result of a worker job */
    uv_work_t work;
    struct {
        char *dir; /* absolute; freed with the call */
        uint64_t applied_index;
        uint64_t bytes;
        char errmsg[256];
    } backup;
};

/* Replies outside a call (/health, /ready, the peer route, routing errors). */
void admin_respond_json(struct admin *a, struct net_http_request *req, int http_status,
                        json_t *body, const char *extra_headers); /* body reference stolen */
void admin_respond_error(struct admin *a, struct net_http_request *req, enum admin_code code,
                         const char *message);

/* ---- replies (each frees the call) ---- */
/* Sends `body` (reference stolen, may be NULL for "{}") as JSON. */
void admin_reply_json(struct admin_call *call, int http_status, json_t *body,
                      const char *extra_headers);
void admin_reply_raw(struct admin_call *call, int http_status, const char *content_type,
                     const void *body, size_t len);
void admin_fail(struct admin_call *call, enum admin_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void admin_fail_store(struct admin_call *call, int store_code, const char *what);
/* A machinery failure (enum cluster_code), with the operator's hint: no
 * quorum -> "--stale still works", unknown outcome -> "check before retrying".
 * what (may be NULL) prefixes the message. */
void admin_fail_cluster(struct admin_call *call, int status, const char *what);

/* ---- asynchronous steps (each ends in exactly one reply) ---- */
/* Runs fn in a read transaction, after a barrier unless the caller asked
 * for ?consistent=false. */
void admin_read(struct admin_call *call, admin_read_fn fn);
/* Submits cmd (always taken over) and calls fn once it applied with code OK;
 * any other outcome becomes the matching error reply. */
void admin_submit(struct admin_call *call, Concord__Command *cmd, admin_done_fn fn);
/* An admin_done_fn for commands whose answer is an empty object. */
void admin_done_empty(struct admin_call *call, struct store_txn *t,
                      const Concord__CommandResult *result);
/* A Command stamped with the wall clock and the caller as actor; NULL on
 * out-of-memory (the call has been answered). */
Concord__Command *admin_command_new(struct admin_call *call);
/* Allocates the op message of cmd; on out-of-memory frees cmd, replies 500
 * and returns NULL. */
void *admin_op_alloc(struct admin_call *call, Concord__Command *cmd, size_t size);
char *admin_strdup(const char *s); /* NULL on out-of-memory */

int64_t admin_now_unix_ms(void);

/* ---- request bodies ---- */
enum admin_field_type {
    ADMIN_FIELD_STRING,
    ADMIN_FIELD_BOOL,
    ADMIN_FIELD_U64,     /* protojson uint64: a JSON integer or a decimal string; 0 allowed */
    ADMIN_FIELD_STRINGS, /* array of strings */
    ADMIN_FIELD_TIME,    /* RFC 3339 timestamp string */
};

/* A body field under its protojson name and its proto name (protojson
 * accepts both). */
struct admin_field {
    const char *json_name;
    const char *proto_name;
    enum admin_field_type type;
};

struct admin_value {
    bool is_present; /* absent and null are the same, as in protojson */
    const char *str;
    bool b;
    uint64_t u64;
    int64_t unix_ms;
    json_t *strings; /* borrowed from call->body */
};

/* Parses the request body as a JSON object whose members are all in
 * `fields` with the right types; out[i] belongs to fields[i]. An empty body is
 * an empty object. On bad input replies 400 and returns -1. */
int admin_body_parse(struct admin_call *call, const struct admin_field *fields, size_t n,
                     struct admin_value *out);

/* ---- validation (server/admin/validate.c); each returns 0 or -1 with a
 * reason in why (ADMIN_WHY_BYTES) ---- */
#define ADMIN_WHY_BYTES 160
int admin_parse_id(const char *s, uint64_t *out); /* positive decimal */
int admin_validate_username(const char *name, char *why);
int admin_validate_node_name(const char *name, char *why);
int admin_validate_tag(const char *tag, char *why);
int admin_validate_cidr(const char *cidr, char *why);
int admin_parse_rfc3339(const char *s, int64_t *unix_ms);
/* "nodekey:<64 hex digits>" into 32 bytes. */
int admin_parse_node_key(const char *s, uint8_t key[32]);
/* Tags array: non-empty strings matching tag:[a-z0-9-]+, no duplicates; on
 * success *out is a malloc'd array of malloc'd strings. */
int admin_tags_copy(const json_t *tags, char ***out, size_t *n, char *why);
/* Routes (CIDR prefixes, canonical, each once) copied into *out. */
int admin_routes_copy(const json_t *routes, char ***out, size_t *n, char *why);
void admin_strings_free(char **v, size_t n);

/* ---- JSON rendering (server/admin/render.c), Headscale's shapes ---- */
json_t *admin_json_time(int64_t unix_ms); /* RFC 3339 like protojson; null for 0 */
json_t *admin_json_id(uint64_t id);       /* protojson uint64: a decimal string */
json_t *admin_json_strings(char *const *v, size_t n);
json_t *admin_render_user(const Concord__User *u);
/* Which nodes hold a live map session on some replica (sorted node ids). */
struct admin_online {
    uint64_t *ids;
    size_t n;
};
int admin_online_load(struct store_txn *t, struct admin_online *out);
void admin_online_free(struct admin_online *o);
/* Node as headscale.v1.Node, with its user (or Headscale's "tagged-devices"
 * user for tagged nodes) and pre-auth key looked up in t. */
json_t *admin_render_node(struct store_txn *t, const Concord__Node *n,
                          const struct admin_online *online);
/* Pre-auth key with its secret shown as "concord-auth-<prefix>-***". */
json_t *admin_render_preauthkey(struct store_txn *t, const Concord__PreAuthKey *k);
json_t *admin_render_apikey(const Concord__ApiKey *k);

/* Renders every record of a sub-database into a JSON array sorted by id.
 * render sets *out (NULL to leave the record out) and *id; it returns 0 or a
 * store code. */
typedef int (*admin_render_fn)(struct store_txn *t, const ProtobufCMessage *record, const void *arg,
                               uint64_t *id, json_t **out);
typedef int (*admin_each_fn)(struct store_txn *t, store_each_cb cb, void *arg);
int admin_render_list(struct store_txn *t, admin_each_fn each, admin_render_fn render,
                      const void *arg, json_t **out);

/* ---- route handlers ---- */
typedef void (*admin_handler_fn)(struct admin_call *call);

void admin_user_list(struct admin_call *call);
void admin_user_create(struct admin_call *call);
void admin_user_rename(struct admin_call *call);
void admin_user_delete(struct admin_call *call);

void admin_node_list(struct admin_call *call);
void admin_node_get(struct admin_call *call);
void admin_node_delete(struct admin_call *call);
void admin_node_expire(struct admin_call *call);
void admin_node_rename(struct admin_call *call);
void admin_node_tags(struct admin_call *call);
void admin_node_approve_routes(struct admin_call *call);
void admin_node_debug_create(struct admin_call *call);

void admin_auth_register(struct admin_call *call);
void admin_auth_reject(struct admin_call *call);
void admin_auth_pending(struct admin_call *call);

void admin_preauthkey_list(struct admin_call *call);
void admin_preauthkey_create(struct admin_call *call);
void admin_preauthkey_expire(struct admin_call *call);
void admin_preauthkey_delete(struct admin_call *call);

void admin_apikey_list(struct admin_call *call);
void admin_apikey_create(struct admin_call *call);
void admin_apikey_expire(struct admin_call *call);
void admin_apikey_delete(struct admin_call *call);

void admin_policy_get(struct admin_call *call);
void admin_policy_set(struct admin_call *call);
void admin_policy_check(struct admin_call *call);

void admin_cluster_members(struct admin_call *call);
void admin_cluster_status(struct admin_call *call);
void admin_cluster_transfer(struct admin_call *call);
void admin_cluster_member_add(struct admin_call *call);
void admin_cluster_member_remove(struct admin_call *call);
void admin_cluster_join(struct admin_call *call);
void admin_cluster_snapshot_save(struct admin_call *call);
void admin_cluster_snapshot_restore(struct admin_call *call);
void admin_cluster_backup(struct admin_call *call);

void admin_audit_list(struct admin_call *call);
void admin_api_health(struct admin_call *call);

/* ---- outside /api/v1 (no call object, no API key) ---- */
void admin_health(struct admin *a, struct net_http_request *req);
void admin_ready(struct admin *a, struct net_http_request *req);
/* policy.mode file: whether the file is unreadable, rejected, or not what is
 * applied (a /ready reason). */
bool admin_policy_file_mismatch(struct admin *a);
void admin_peer_handle(struct admin *a, struct net_http_request *req);

/* Peer authentication: the header value "<unix_ms>:<hex HMAC-SHA256 of
 * "<unix_ms>\n<body>">" (buf of ADMIN_PEER_AUTH_BYTES), and its check against
 * `now_unix_ms` (0 valid; -1 missing, malformed, wrong or outside the
 * ADMIN_PEER_AUTH_WINDOW_MS window). */
#define ADMIN_PEER_PATH           "/internal/v1/peer"
#define ADMIN_PEER_AUTH_HEADER    "X-Concord-Peer-Auth"
#define ADMIN_PEER_AUTH_BYTES     96
#define ADMIN_PEER_AUTH_WINDOW_MS 60000
void admin_peer_auth_make(const uint8_t secret[ADMIN_CLUSTER_SECRET_BYTES], int64_t unix_ms,
                          const uint8_t *body, size_t len, char out[ADMIN_PEER_AUTH_BYTES]);
int admin_peer_auth_check(const uint8_t secret[ADMIN_CLUSTER_SECRET_BYTES], const char *header,
                          const uint8_t *body, size_t len, int64_t now_unix_ms);
/* The body's length, proven before the body arrives (admin_body_limit): the
 * header value "<unix_ms>:<len>:<hex HMAC-SHA256 of "length\n<unix_ms>\n<len>">"
 * (buf of ADMIN_PEER_LENGTH_BYTES), and its check against the request's
 * Content-Length and `now_unix_ms` (0 valid; -1 otherwise). A replay inside
 * the window can only make a replica read as many bytes as a real peer sent;
 * the body's own MAC is still checked once it has arrived. */
#define ADMIN_PEER_LENGTH_HEADER "X-Concord-Peer-Length"
#define ADMIN_PEER_LENGTH_BYTES  128
void admin_peer_length_make(const uint8_t secret[ADMIN_CLUSTER_SECRET_BYTES], int64_t unix_ms,
                            size_t len, char out[ADMIN_PEER_LENGTH_BYTES]);
int admin_peer_length_check(const uint8_t secret[ADMIN_CLUSTER_SECRET_BYTES], const char *header,
                            size_t content_length, int64_t now_unix_ms);

/* Finds a user by name, or by id when the text is a number and no user has
 * that name (Headscale takes names; the CLI lets operators give either). */
int admin_user_resolve(struct store_txn *t, const char *text, uint64_t *id);

#endif
