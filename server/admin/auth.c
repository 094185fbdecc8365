/* server/admin/auth.c: /api/v1/auth, the operator's side of interactive
 * registration (headscale.v1 AuthRegister and AuthReject). A client that
 * logs in without a pre-auth key gets an AuthURL ending in an auth id and
 * waits; the operator then approves or rejects that id here.
 *
 *   POST /api/v1/auth/register {"authId": ID, "user": NAME-OR-ID}
 *        -> 200 {"node": <headscale.v1.Node>}
 *   POST /api/v1/auth/reject   {"authId": ID}
 *        -> 200 {}
 *   GET  /api/v1/auth/pending  (a concord extension)
 *        -> 200 {"registrations": [{"authId", "hostname", "machineKey": "mkey:<hex>",
 *                                   "nodeKey": "nodekey:<hex>", "expiry": RFC 3339}]}
 *
 * "auth_id" is accepted for "authId". An auth id is 1 to 64 characters of
 * [A-Za-z0-9_-] (the control server makes URL-safe base64 ones). Unknown
 * auth ids and users are 404, an expired registration is 412; the pending
 * list leaves expired registrations out, as they can no longer be approved. */
#include "server/admin/admin_internal.h"

#include <string.h>

#include <sodium.h>

#define AUTH_ID_MAX 64
#define KEY_BYTES   32

static const struct admin_field register_fields[] = {
    {"authId", "auth_id", ADMIN_FIELD_STRING},
    {"user", NULL, ADMIN_FIELD_STRING},
};
enum { REGISTER_AUTH_ID, REGISTER_USER, N_REGISTER_FIELDS };

static const struct admin_field reject_fields[] = {
    {"authId", "auth_id", ADMIN_FIELD_STRING},
};

static bool auth_id_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

/* Checks the body's auth id; 0, or -1 after replying 400. */
static int auth_id_check(struct admin_call *call, const struct admin_value *v)
{
    size_t len;

    if (!v->is_present || v->str[0] == '\0') {
        admin_fail(call, ADMIN_INVALID, "field \"authId\" is required");
        return -1;
    }
    len = strlen(v->str);
    if (len > AUTH_ID_MAX) {
        admin_fail(call, ADMIN_INVALID, "authId must be at most %d characters", AUTH_ID_MAX);
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        if (!auth_id_char_ok(v->str[i])) {
            admin_fail(call, ADMIN_INVALID, "authId may only contain letters, digits, - and _");
            return -1;
        }
    }
    return 0;
}

/* A member of the already validated body under either of its names (the
 * other one may be there as null). */
static const char *body_string(const struct admin_call *call, const struct admin_field *field)
{
    json_t *v = json_object_get(call->body, field->json_name);

    if (!json_is_string(v) && field->proto_name != NULL)
        v = json_object_get(call->body, field->proto_name);
    return json_string_value(v);
}

/* ---- register ---- */

/* Replies {"node": ...} for the node the approval registered. */
static void register_done(struct admin_call *call, struct store_txn *t,
                          const Concord__CommandResult *result)
{
    struct admin_online online;
    Concord__Node *n = NULL;
    json_t *body;
    int rv = store_node_get(t, result->id, &n);

    if (rv == 0)
        rv = admin_online_load(t, &online);
    if (rv != 0) {
        store_record_free(n);
        admin_fail_store(call, rv, "registered, but cannot read the node back");
        return;
    }
    body = json_pack("{s:o}", "node", admin_render_node(t, n, &online));
    admin_online_free(&online);
    store_record_free(n);
    if (body == NULL) {
        admin_fail(call, ADMIN_INTERNAL, "out of memory");
        return;
    }
    admin_reply_json(call, 200, body, NULL);
}

/* After the barrier: the user is looked up in a state at least as recent as
 * the request, so a user just created through another replica is found. */
static void register_read(struct admin_call *call, struct store_txn *t)
{
    const char *auth_id = body_string(call, &register_fields[REGISTER_AUTH_ID]);
    const char *user = body_string(call, &register_fields[REGISTER_USER]);
    Concord__ApproveRegistration *op;
    Concord__Command *cmd;
    uint64_t user_id = 0;
    int rv = admin_user_resolve(t, user, &user_id);

    if (rv == STORE_NOTFOUND) {
        admin_fail(call, ADMIN_NOTFOUND, "user \"%s\" not found", user);
        return;
    }
    if (rv != 0) {
        admin_fail_store(call, rv, "cannot look up the user");
        return;
    }
    if ((cmd = admin_command_new(call)) == NULL ||
        (op = admin_op_alloc(call, cmd, sizeof *op)) == NULL)
        return;
    concord__approve_registration__init(op);
    cmd->op_case = CONCORD__COMMAND__OP_APPROVE_REGISTRATION;
    cmd->approve_registration = op;
    op->user_id = user_id;
    op->auth_id = admin_strdup(auth_id);
    if (op->auth_id == NULL) {
        concord__command__free_unpacked(cmd, NULL);
        admin_fail(call, ADMIN_INTERNAL, "out of memory");
        return;
    }
    admin_submit(call, cmd, register_done);
}

void admin_auth_register(struct admin_call *call)
{
    struct admin_value v[N_REGISTER_FIELDS];

    if (admin_body_parse(call, register_fields, N_REGISTER_FIELDS, v) != 0 ||
        auth_id_check(call, &v[REGISTER_AUTH_ID]) != 0)
        return;
    if (!v[REGISTER_USER].is_present || v[REGISTER_USER].str[0] == '\0') {
        admin_fail(call, ADMIN_INVALID, "field \"user\" is required");
        return;
    }
    admin_read(call, register_read);
}

/* ---- reject ---- */

void admin_auth_reject(struct admin_call *call)
{
    struct admin_value v[1];
    Concord__DeleteRegistration *op;
    Concord__Command *cmd;

    if (admin_body_parse(call, reject_fields, 1, v) != 0 || auth_id_check(call, &v[0]) != 0)
        return;
    if ((cmd = admin_command_new(call)) == NULL ||
        (op = admin_op_alloc(call, cmd, sizeof *op)) == NULL)
        return;
    concord__delete_registration__init(op);
    cmd->op_case = CONCORD__COMMAND__OP_DELETE_REGISTRATION;
    cmd->delete_registration = op;
    op->auth_id = admin_strdup(v[0].str);
    if (op->auth_id == NULL) {
        concord__command__free_unpacked(cmd, NULL);
        admin_fail(call, ADMIN_INTERNAL, "out of memory");
        return;
    }
    admin_submit(call, cmd, admin_done_empty);
}

/* ---- pending list ---- */

/* "prefix<hex>" for a 32-byte key; "" when the key is malformed. */
static json_t *json_key(const char *prefix, const ProtobufCBinaryData *key)
{
    char buf[16 + 2 * KEY_BYTES + 1];
    size_t n = strlen(prefix);

    if (key->len != KEY_BYTES)
        return json_string("");
    memcpy(buf, prefix, n);
    sodium_bin2hex(buf + n, sizeof buf - n, key->data, key->len);
    return json_string(buf);
}

struct pending_walk {
    int64_t now_unix_ms;
    json_t *items;
};

static int pending_add(const ProtobufCMessage *record, void *arg)
{
    const Concord__PendingRegistration *p = (const Concord__PendingRegistration *)record;
    struct pending_walk *w = arg;
    json_t *item;

    if (p->expires_unix_ms != 0 && p->expires_unix_ms <= w->now_unix_ms)
        return 0;
    item = json_pack("{s:s, s:s, s:o, s:o, s:o}", "authId", p->auth_id, "hostname", p->hostname,
                     "machineKey", json_key("mkey:", &p->machine_key), "nodeKey",
                     json_key("nodekey:", &p->node_key), "expiry",
                     admin_json_time(p->expires_unix_ms));
    if (item == NULL || json_array_append_new(w->items, item) != 0)
        return STORE_NOMEM;
    return 0;
}

/* The store walks registrations in auth id order, which is the list's. */
static void pending_read(struct admin_call *call, struct store_txn *t)
{
    struct pending_walk w = {.now_unix_ms = admin_now_unix_ms(), .items = json_array()};
    int rv = w.items != NULL ? store_registration_each(t, pending_add, &w) : STORE_NOMEM;
    json_t *body;

    if (rv != 0) {
        json_decref(w.items);
        admin_fail_store(call, rv, "cannot list pending registrations");
        return;
    }
    body = json_pack("{s:o}", "registrations", w.items);
    if (body == NULL) {
        admin_fail(call, ADMIN_INTERNAL, "out of memory");
        return;
    }
    admin_reply_json(call, 200, body, NULL);
}

void admin_auth_pending(struct admin_call *call)
{
    admin_read(call, pending_read);
}
