/* server/admin/users.c: /api/v1/user (headscale.v1 ListUsers, CreateUser,
 * RenameUser, DeleteUser). */
#include "server/admin/admin_internal.h"

#include <stdlib.h>
#include <string.h>

#define TEXT_MAX_BYTES 255

/* ---- list ---- */

struct user_filter {
    uint64_t id; /* 0: any */
    char name[256];
    char email[256];
};

static int render_user_filtered(struct store_txn *t, const ProtobufCMessage *record,
                                const void *arg, uint64_t *id, json_t **out)
{
    const Concord__User *u = (const Concord__User *)record;
    const struct user_filter *f = arg;

    (void)t;
    *id = u->id;
    *out = NULL;
    if ((f->id != 0 && u->id != f->id) || (f->name[0] != '\0' && strcmp(u->name, f->name) != 0) ||
        (f->email[0] != '\0' && strcmp(u->email, f->email) != 0))
        return 0;
    *out = admin_render_user(u);
    return *out != NULL ? 0 : STORE_NOMEM;
}

/* Reads ?id=, ?name= and ?email=; 0, or -1 after replying 400. */
static int user_filter_get(struct admin_call *call, struct user_filter *f)
{
    char id[32];

    memset(f, 0, sizeof *f);
    if (net_http_query_get(call->req, "id", id, sizeof id) && id[0] != '\0' &&
        admin_parse_id(id, &f->id) != 0) {
        admin_fail(call, ADMIN_INVALID, "id: expected a positive integer");
        return -1;
    }
    net_http_query_get(call->req, "name", f->name, sizeof f->name);
    net_http_query_get(call->req, "email", f->email, sizeof f->email);
    return 0;
}

static void user_list_read(struct admin_call *call, struct store_txn *t)
{
    struct user_filter f;
    json_t *users;
    int rv;

    if (user_filter_get(call, &f) != 0)
        return;
    rv = admin_render_list(t, store_user_each, render_user_filtered, &f, &users);
    if (rv != 0) {
        admin_fail_store(call, rv, "cannot list users");
        return;
    }
    admin_reply_json(call, 200, json_pack("{s:o}", "users", users), NULL);
}

void admin_user_list(struct admin_call *call)
{
    struct user_filter f;

    if (user_filter_get(call, &f) != 0)
        return;
    admin_read(call, user_list_read);
}

/* ---- create, rename, delete ---- */

static void user_reply(struct admin_call *call, struct store_txn *t,
                       const Concord__CommandResult *result)
{
    Concord__User *u = NULL;
    int rv = store_user_get(t, result->id, &u);

    if (rv != 0) {
        admin_fail_store(call, rv, "applied, but cannot read the user back");
        return;
    }
    admin_reply_json(call, 200, json_pack("{s:o}", "user", admin_render_user(u)), NULL);
    store_record_free(u);
}

static int check_text(struct admin_call *call, const char *field, const struct admin_value *v)
{
    if (!v->is_present)
        return 0;
    if (strlen(v->str) > TEXT_MAX_BYTES) {
        admin_fail(call, ADMIN_INVALID, "%s must be at most %d bytes", field, TEXT_MAX_BYTES);
        return -1;
    }
    for (const char *p = v->str; *p != '\0'; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7F) {
            admin_fail(call, ADMIN_INVALID, "%s must not contain control characters", field);
            return -1;
        }
    }
    return 0;
}

void admin_user_create(struct admin_call *call)
{
    static const struct admin_field fields[] = {
        {"name", NULL, ADMIN_FIELD_STRING},
        {"displayName", "display_name", ADMIN_FIELD_STRING},
        {"email", NULL, ADMIN_FIELD_STRING},
        {"pictureUrl", "picture_url", ADMIN_FIELD_STRING},
    };
    struct admin_value v[4];
    char why[ADMIN_WHY_BYTES];
    Concord__Command *cmd;
    Concord__CreateUser *op;

    if (admin_body_parse(call, fields, 4, v) != 0)
        return;
    if (!v[0].is_present) {
        admin_fail(call, ADMIN_INVALID, "field \"name\" is required");
        return;
    }
    if (admin_validate_username(v[0].str, why) != 0) {
        admin_fail(call, ADMIN_INVALID, "%s", why);
        return;
    }
    if (check_text(call, "displayName", &v[1]) != 0 || check_text(call, "email", &v[2]) != 0)
        return;
    if (v[3].is_present && v[3].str[0] != '\0') {
        admin_fail(call, ADMIN_INVALID, "pictureUrl is not supported by concord");
        return;
    }
    if ((cmd = admin_command_new(call)) == NULL ||
        (op = admin_op_alloc(call, cmd, sizeof *op)) == NULL)
        return;
    concord__create_user__init(op);
    cmd->op_case = CONCORD__COMMAND__OP_CREATE_USER;
    cmd->create_user = op;
    op->name = admin_strdup(v[0].str);
    if (op->name == NULL)
        goto err_nomem;
    if (v[1].is_present && (op->display_name = admin_strdup(v[1].str)) == NULL)
        goto err_nomem;
    if (v[2].is_present && (op->email = admin_strdup(v[2].str)) == NULL)
        goto err_nomem;
    admin_submit(call, cmd, user_reply);
    return;

err_nomem:
    concord__command__free_unpacked(cmd, NULL);
    admin_fail(call, ADMIN_INTERNAL, "out of memory");
}

void admin_user_rename(struct admin_call *call)
{
    char why[ADMIN_WHY_BYTES];
    Concord__Command *cmd;
    Concord__RenameUser *op;
    uint64_t id;

    if (admin_parse_id(call->params[0], &id) != 0) {
        admin_fail(call, ADMIN_INVALID, "user id must be a positive integer");
        return;
    }
    if (admin_validate_username(call->params[1], why) != 0) {
        admin_fail(call, ADMIN_INVALID, "%s", why);
        return;
    }
    if ((cmd = admin_command_new(call)) == NULL ||
        (op = admin_op_alloc(call, cmd, sizeof *op)) == NULL)
        return;
    concord__rename_user__init(op);
    cmd->op_case = CONCORD__COMMAND__OP_RENAME_USER;
    cmd->rename_user = op;
    op->id = id;
    op->new_name = admin_strdup(call->params[1]);
    if (op->new_name == NULL) {
        concord__command__free_unpacked(cmd, NULL);
        admin_fail(call, ADMIN_INTERNAL, "out of memory");
        return;
    }
    admin_submit(call, cmd, user_reply);
}

void admin_user_delete(struct admin_call *call)
{
    Concord__Command *cmd;
    Concord__DeleteUser *op;
    uint64_t id;

    if (admin_parse_id(call->params[0], &id) != 0) {
        admin_fail(call, ADMIN_INVALID, "user id must be a positive integer");
        return;
    }
    if ((cmd = admin_command_new(call)) == NULL ||
        (op = admin_op_alloc(call, cmd, sizeof *op)) == NULL)
        return;
    concord__delete_user__init(op);
    op->id = id;
    cmd->op_case = CONCORD__COMMAND__OP_DELETE_USER;
    cmd->delete_user = op;
    admin_submit(call, cmd, admin_done_empty);
}
