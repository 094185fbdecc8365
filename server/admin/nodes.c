/* server/admin/nodes.c: /api/v1/node and /api/v1/debug/node (headscale.v1
 * ListNodes, GetNode, DeleteNode, ExpireNode, RenameNode, SetTags,
 * DebugCreateNode). */
#include "server/admin/admin_internal.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

/* Replies {"node": ...} for node `id` as this replica sees it now. */
static void reply_node(struct admin_call *call, struct store_txn *t, uint64_t id)
{
    struct admin_online online;
    Concord__Node *n = NULL;
    int rv = store_node_get(t, id, &n);

    if (rv == STORE_NOTFOUND) {
        admin_fail(call, ADMIN_NOTFOUND, "node %" PRIu64 " not found", id);
        return;
    }
    if (rv == 0)
        rv = admin_online_load(t, &online);
    if (rv != 0) {
        store_record_free(n);
        admin_fail_store(call, rv, "cannot read the node");
        return;
    }
    admin_reply_json(call, 200, json_pack("{s:o}", "node", admin_render_node(t, n, &online)), NULL);
    admin_online_free(&online);
    store_record_free(n);
}

static void node_done(struct admin_call *call, struct store_txn *t,
                      const Concord__CommandResult *result)
{
    reply_node(call, t, result->id != 0 ? result->id : call->id);
}

/* The node id of the path; 0, or -1 after replying 400. */
static int node_id_param(struct admin_call *call)
{
    if (admin_parse_id(call->params[0], &call->id) != 0) {
        admin_fail(call, ADMIN_INVALID, "node id must be a positive integer");
        return -1;
    }
    return 0;
}

/* ---- reads ---- */

/* Finds a user by name, or by id when the text is a number and no user has
 * that name (Headscale takes names; the CLI lets operators give either). */
int admin_user_resolve(struct store_txn *t, const char *text, uint64_t *id)
{
    Concord__User *u = NULL;
    uint64_t numeric;
    int rv = store_user_get_by_name(t, text, &u);

    if (rv == STORE_NOTFOUND && admin_parse_id(text, &numeric) == 0)
        rv = store_user_get(t, numeric, &u);
    if (rv == 0)
        *id = u->id;
    store_record_free(u);
    return rv;
}

struct node_filter {
    uint64_t user_id; /* 0: any */
    const struct admin_online *online;
};

static int render_node_filtered(struct store_txn *t, const ProtobufCMessage *record,
                                const void *arg, uint64_t *id, json_t **out)
{
    const Concord__Node *n = (const Concord__Node *)record;
    const struct node_filter *f = arg;

    *id = n->id;
    *out = NULL;
    if (f->user_id != 0 && n->user_id != f->user_id)
        return 0;
    *out = admin_render_node(t, n, f->online);
    return *out != NULL ? 0 : STORE_NOMEM;
}

static void node_list_read(struct admin_call *call, struct store_txn *t)
{
    struct admin_online online;
    struct node_filter f = {.online = &online};
    char user[256];
    json_t *nodes;
    int rv;

    if (net_http_query_get(call->req, "user", user, sizeof user) && user[0] != '\0') {
        rv = admin_user_resolve(t, user, &f.user_id);
        if (rv == STORE_NOTFOUND) {
            admin_fail(call, ADMIN_NOTFOUND, "user \"%s\" not found", user);
            return;
        }
        if (rv != 0) {
            admin_fail_store(call, rv, "cannot look up the user");
            return;
        }
    }
    rv = admin_online_load(t, &online);
    if (rv != 0) {
        admin_fail_store(call, rv, "cannot list nodes");
        return;
    }
    rv = admin_render_list(t, store_node_each, render_node_filtered, &f, &nodes);
    admin_online_free(&online);
    if (rv != 0) {
        admin_fail_store(call, rv, "cannot list nodes");
        return;
    }
    admin_reply_json(call, 200, json_pack("{s:o}", "nodes", nodes), NULL);
}

void admin_node_list(struct admin_call *call)
{
    admin_read(call, node_list_read);
}

static void node_get_read(struct admin_call *call, struct store_txn *t)
{
    reply_node(call, t, call->id);
}

void admin_node_get(struct admin_call *call)
{
    if (node_id_param(call) != 0)
        return;
    admin_read(call, node_get_read);
}

/* ---- writes ---- */

void admin_node_delete(struct admin_call *call)
{
    Concord__Command *cmd;
    Concord__DeleteNode *op;

    if (node_id_param(call) != 0 || (cmd = admin_command_new(call)) == NULL)
        return;
    if ((op = admin_op_alloc(call, cmd, sizeof *op)) == NULL)
        return;
    concord__delete_node__init(op);
    op->id = call->id;
    cmd->op_case = CONCORD__COMMAND__OP_DELETE_NODE;
    cmd->delete_node = op;
    admin_submit(call, cmd, admin_done_empty);
}

/* ExpireNode takes its arguments from the query, as grpc-gateway maps the
 * body-less route: ?expiry=<RFC 3339> or ?disableExpiry=true. */
void admin_node_expire(struct admin_call *call)
{
    Concord__Command *cmd;
    Concord__ExpireNode *op;
    char expiry[64], disable[8];
    int64_t expiry_unix_ms;
    bool has_expiry, is_disable = false;

    if (node_id_param(call) != 0)
        return;
    has_expiry = net_http_query_get(call->req, "expiry", expiry, sizeof expiry);
    if (net_http_query_get(call->req, "disableExpiry", disable, sizeof disable) ||
        net_http_query_get(call->req, "disable_expiry", disable, sizeof disable)) {
        if (strcmp(disable, "true") != 0 && strcmp(disable, "false") != 0) {
            admin_fail(call, ADMIN_INVALID, "disableExpiry: expected true or false");
            return;
        }
        is_disable = strcmp(disable, "true") == 0;
    }
    if (has_expiry && is_disable) {
        admin_fail(call, ADMIN_INVALID, "cannot set both disableExpiry and expiry");
        return;
    }
    expiry_unix_ms = admin_now_unix_ms();
    if (has_expiry && admin_parse_rfc3339(expiry, &expiry_unix_ms) != 0) {
        admin_fail(call, ADMIN_INVALID, "expiry: expected an RFC 3339 timestamp");
        return;
    }
    if ((cmd = admin_command_new(call)) == NULL ||
        (op = admin_op_alloc(call, cmd, sizeof *op)) == NULL)
        return;
    concord__expire_node__init(op);
    op->id = call->id;
    op->expiry_unix_ms = is_disable ? 0 : expiry_unix_ms;
    cmd->op_case = CONCORD__COMMAND__OP_EXPIRE_NODE;
    cmd->expire_node = op;
    admin_submit(call, cmd, node_done);
}

void admin_node_rename(struct admin_call *call)
{
    char why[ADMIN_WHY_BYTES];
    Concord__Command *cmd;
    Concord__RenameNode *op;

    if (node_id_param(call) != 0)
        return;
    if (admin_validate_node_name(call->params[1], why) != 0) {
        admin_fail(call, ADMIN_INVALID, "%s", why);
        return;
    }
    if ((cmd = admin_command_new(call)) == NULL ||
        (op = admin_op_alloc(call, cmd, sizeof *op)) == NULL)
        return;
    concord__rename_node__init(op);
    op->id = call->id;
    cmd->op_case = CONCORD__COMMAND__OP_RENAME_NODE;
    cmd->rename_node = op;
    op->new_name = admin_strdup(call->params[1]);
    if (op->new_name == NULL) {
        concord__command__free_unpacked(cmd, NULL);
        admin_fail(call, ADMIN_INTERNAL, "out of memory");
        return;
    }
    admin_submit(call, cmd, node_done);
}

void admin_node_tags(struct admin_call *call)
{
    static const struct admin_field fields[] = {
        {"nodeId", "node_id", ADMIN_FIELD_U64},
        {"tags", NULL, ADMIN_FIELD_STRINGS},
    };
    struct admin_value v[2];
    char why[ADMIN_WHY_BYTES];
    Concord__Command *cmd;
    Concord__SetNodeTags *op;
    char **tags;
    size_t n_tags;

    if (node_id_param(call) != 0 || admin_body_parse(call, fields, 2, v) != 0)
        return;
    if (v[0].u64 != 0 && v[0].u64 != call->id) {
        admin_fail(call, ADMIN_INVALID, "nodeId in the body differs from the path");
        return;
    }
    if (!v[1].is_present || json_array_size(v[1].strings) == 0) {
        admin_fail(call, ADMIN_INVALID,
                   "cannot remove all tags from a node - tagged nodes must have at least one "
                   "tag");
        return;
    }
    if (admin_tags_copy(v[1].strings, &tags, &n_tags, why) != 0) {
        admin_fail(call, ADMIN_INVALID, "%s", why);
        return;
    }
    if ((cmd = admin_command_new(call)) == NULL) {
        admin_strings_free(tags, n_tags);
        return;
    }
    if ((op = admin_op_alloc(call, cmd, sizeof *op)) == NULL) {
        admin_strings_free(tags, n_tags);
        return;
    }
    concord__set_node_tags__init(op);
    op->id = call->id;
    op->tags = tags;
    op->n_tags = n_tags;
    cmd->op_case = CONCORD__COMMAND__OP_SET_NODE_TAGS;
    cmd->set_node_tags = op;
    admin_submit(call, cmd, node_done);
}

/* Headscale's approve_routes: the node's approved routes become exactly
 * the given ones (an empty list approves none). */
void admin_node_approve_routes(struct admin_call *call)
{
    static const struct admin_field fields[] = {
        {"routes", NULL, ADMIN_FIELD_STRINGS},
    };
    struct admin_value v[1];
    char why[ADMIN_WHY_BYTES];
    Concord__Command *cmd;
    Concord__SetNodeRoutes *op;
    char **routes;
    size_t n;

    if (node_id_param(call) != 0 || admin_body_parse(call, fields, 1, v) != 0)
        return;
    if (!v[0].is_present) {
        admin_fail(call, ADMIN_INVALID,
                   "field \"routes\" is required (an empty list approves none)");
        return;
    }
    if (admin_routes_copy(v[0].strings, &routes, &n, why) != 0) {
        admin_fail(call, ADMIN_INVALID, "%s", why);
        return;
    }
    if ((cmd = admin_command_new(call)) == NULL) {
        admin_strings_free(routes, n);
        return;
    }
    if ((op = admin_op_alloc(call, cmd, sizeof *op)) == NULL) {
        admin_strings_free(routes, n);
        return;
    }
    concord__set_node_routes__init(op);
    op->id = call->id;
    op->routes = routes;
    op->n_routes = n;
    cmd->op_case = CONCORD__COMMAND__OP_SET_NODE_ROUTES;
    cmd->set_node_routes = op;
    admin_submit(call, cmd, node_done);
}

/* Registers a node without a client (Headscale's debug create-node). The
 * machine key is random: no client will ever speak for this node. */
void admin_node_debug_create(struct admin_call *call)
{
    static const struct admin_field fields[] = {
        {"user", NULL, ADMIN_FIELD_STRING},
        {"key", NULL, ADMIN_FIELD_STRING},
        {"name", NULL, ADMIN_FIELD_STRING},
        {"routes", NULL, ADMIN_FIELD_STRINGS},
    };
    struct admin_value v[4];
    char why[ADMIN_WHY_BYTES];
    uint8_t node_key[32], machine_key[32];
    Concord__Command *cmd;
    Concord__CreateNode *op;
    struct store_txn *t;
    uint64_t user_id = 0;
    int rv;

    if (admin_body_parse(call, fields, 4, v) != 0)
        return;
    if (!v[0].is_present || v[0].str[0] == '\0' || !v[2].is_present) {
        admin_fail(call, ADMIN_INVALID, "fields \"user\" and \"name\" are required");
        return;
    }
    if (admin_validate_node_name(v[2].str, why) != 0) {
        admin_fail(call, ADMIN_INVALID, "%s", why);
        return;
    }
    if (v[1].is_present && admin_parse_node_key(v[1].str, node_key) != 0) {
        admin_fail(call, ADMIN_INVALID, "key: expected nodekey:<64 hex digits>");
        return;
    }
    if (!v[1].is_present)
        randombytes_buf(node_key, sizeof node_key);
    for (size_t i = 0; v[3].is_present && i < json_array_size(v[3].strings); i++) {
        if (admin_validate_cidr(json_string_value(json_array_get(v[3].strings, i)), why) != 0) {
            admin_fail(call, ADMIN_INVALID, "%s", why);
            return;
        }
    }
    if (json_array_size(v[3].strings) > 0) {
        admin_fail(call, ADMIN_UNIMPLEMENTED,
                   "routes on debug nodes are not supported yet (CreateNode carries none)");
        return;
    }
    rv = store_txn_begin(call->admin->opts.store, false, &t);
    if (rv == 0) {
        rv = admin_user_resolve(t, v[0].str, &user_id);
        store_txn_abort(t);
    }
    if (rv == STORE_NOTFOUND) {
        admin_fail(call, ADMIN_NOTFOUND, "user \"%s\" not found", v[0].str);
        return;
    }
    if (rv != 0) {
        admin_fail_store(call, rv, "cannot look up the user");
        return;
    }
    randombytes_buf(machine_key, sizeof machine_key);
    if ((cmd = admin_command_new(call)) == NULL ||
        (op = admin_op_alloc(call, cmd, sizeof *op)) == NULL)
        return;
    concord__create_node__init(op);
    cmd->op_case = CONCORD__COMMAND__OP_CREATE_NODE;
    cmd->create_node = op;
    op->user_id = user_id;
    op->machine_key.data = malloc(32);
    op->node_key.data = malloc(32);
    op->hostname = admin_strdup(v[2].str);
    op->register_method = admin_strdup("debug");
    if (op->machine_key.data == NULL || op->node_key.data == NULL || op->hostname == NULL ||
        op->register_method == NULL) {
        concord__command__free_unpacked(cmd, NULL);
        admin_fail(call, ADMIN_INTERNAL, "out of memory");
        return;
    }
    memcpy(op->machine_key.data, machine_key, 32);
    op->machine_key.len = 32;
    memcpy(op->node_key.data, node_key, 32);
    op->node_key.len = 32;
    admin_submit(call, cmd, node_done);
}
