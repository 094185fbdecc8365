/* server/admin/policy.c: /api/v1/policy (headscale.v1 GetPolicy, SetPolicy,
 * CheckPolicy). The policy is a compare-and-set register: GET gives its
 * version as the ETag, PUT with If-Match only applies on that version (412
 * otherwise), decided by the FSM so that racing writers on different
 * replicas cannot both win. A policy is checked before it is proposed: it
 * parses, names only users that exist, and its tests and sshTests pass;
 * otherwise 400 and nothing changes. */
#include "server/admin/admin_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "server/control/control.h"

static void reply_policy(struct admin_call *call, const Concord__Policy *p)
{
    char etag[48];

    snprintf(etag, sizeof etag, "ETag: \"%" PRIu64 "\"\r\n", p != NULL ? p->version : 0);
    admin_reply_json(call, 200,
                     json_pack("{s:s, s:o}", "policy", p != NULL ? p->text : "", "updatedAt",
                               admin_json_time(p != NULL ? p->updated_unix_ms : 0)),
                     etag);
}

static void policy_get_read(struct admin_call *call, struct store_txn *t)
{
    Concord__Policy *p = NULL;
    int rv = store_policy_get(t, &p);

    if (rv != 0 && rv != STORE_NOTFOUND) {
        admin_fail_store(call, rv, "cannot read the policy");
        return;
    }
    reply_policy(call, p); /* no policy yet: version 0, which If-Match "0" expects */
    store_record_free(p);
}

void admin_policy_get(struct admin_call *call)
{
    admin_read(call, policy_get_read);
}

static void policy_set_done(struct admin_call *call, struct store_txn *t,
                            const Concord__CommandResult *result)
{
    (void)result;
    policy_get_read(call, t);
}

/* If-Match: "<version>", quotes optional. 0 when absent, 1 with *version
 * set, -1 after replying 400. */
static int if_match_get(struct admin_call *call, uint64_t *version)
{
    const char *h = net_http_header_get(call->req, "If-Match");
    char text[32];
    size_t len;

    if (h == NULL)
        return 0;
    while (*h == ' ')
        h++;
    len = strlen(h);
    while (len > 0 && h[len - 1] == ' ')
        len--;
    if (len >= 2 && h[0] == '"' && h[len - 1] == '"') {
        h++;
        len -= 2;
    }
    if (len == 0 || len >= sizeof text)
        goto err_malformed;
    memcpy(text, h, len);
    text[len] = '\0';
    if (strcmp(text, "0") == 0) {
        *version = 0;
        return 1;
    }
    if (admin_parse_id(text, version) != 0)
        goto err_malformed;
    return 1;

err_malformed:
    admin_fail(call, ADMIN_INVALID, "If-Match: expected a policy version like \"3\"");
    return -1;
}

/* Parses {"policy": "<HuJSON>"} and checks the text against the applied
 * state (control_policy_check); NULL after replying 400 (or 500). */
static const char *policy_text_get(struct admin_call *call)
{
    static const struct admin_field fields[] = {
        {"policy", NULL, ADMIN_FIELD_STRING},
    };
    struct policy_error err;
    struct admin_value v[1];
    struct store_txn *t;
    int rv;

    if (admin_body_parse(call, fields, 1, v) != 0)
        return NULL;
    if (!v[0].is_present) {
        admin_fail(call, ADMIN_INVALID, "field \"policy\" is required");
        return NULL;
    }
    rv = store_txn_begin(call->admin->opts.store, false, &t);
    if (rv != 0) {
        admin_fail_store(call, rv, "cannot read the state to check the policy against");
        return NULL;
    }
    rv = control_policy_check(t, v[0].str, strlen(v[0].str), &err);
    store_txn_abort(t);
    if (rv == POLICY_ENOMEM) {
        admin_fail(call, ADMIN_INTERNAL, "out of memory");
        return NULL;
    }
    if (rv != 0 && err.line != 0) {
        admin_fail(call, ADMIN_INVALID, "policy rejected: line %u, column %u: %s", err.line,
                   err.col, err.message);
        return NULL;
    }
    if (rv != 0) {
        admin_fail(call, ADMIN_INVALID, "policy rejected: %s", err.message);
        return NULL;
    }
    return v[0].str;
}

void admin_policy_set(struct admin_call *call)
{
    Concord__SetPolicy *op;
    Concord__Command *cmd;
    uint64_t version = 0;
    const char *text;
    int has_version;

    has_version = if_match_get(call, &version);
    if (has_version < 0 || (text = policy_text_get(call)) == NULL)
        return;
    if ((cmd = admin_command_new(call)) == NULL ||
        (op = admin_op_alloc(call, cmd, sizeof *op)) == NULL)
        return;
    concord__set_policy__init(op);
    cmd->op_case = CONCORD__COMMAND__OP_SET_POLICY;
    cmd->set_policy = op;
    op->if_version = version;
    op->has_if_version = has_version == 1;
    op->text = admin_strdup(text);
    if (op->text == NULL) {
        concord__command__free_unpacked(cmd, NULL);
        admin_fail(call, ADMIN_INTERNAL, "out of memory");
        return;
    }
    admin_submit(call, cmd, policy_set_done);
}

void admin_policy_check(struct admin_call *call)
{
    if (policy_text_get(call) != NULL)
        admin_reply_json(call, 200, json_object(), NULL);
}
