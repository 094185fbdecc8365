/* server/admin/keys.c: /api/v1/preauthkey and /api/v1/apikey (headscale.v1
 * pre-auth key and API key RPCs). A new key's secret is generated here,
 * before proposing: only its prefix and hash enter the log, and the whole
 * token is shown once, in the create response. */
#include "server/admin/admin_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#define PREAUTHKEY_DEFAULT_TTL_MS (60LL * 60 * 1000)           /* Headscale CLI: 1h */
#define APIKEY_DEFAULT_TTL_MS     (90LL * 24 * 60 * 60 * 1000) /* Headscale CLI: 90d */

/* The lookup prefix of a key as an operator may paste it: the whole token,
 * the listing form "<kind>-<prefix>-***", or the bare prefix. */
static int prefix_normalize(const char *kind, const char *text, char prefix[SECRET_PREFIX_LEN + 1])
{
    size_t kind_len = strlen(kind), len = strlen(text);

    if (secret_parse_prefix(kind, text, prefix) == 0)
        return 0;
    if (len == kind_len + 1 + SECRET_PREFIX_LEN + 4 && strncmp(text, kind, kind_len) == 0 &&
        text[kind_len] == '-' && strcmp(text + len - 4, "-***") == 0) {
        text += kind_len + 1;
        len = SECRET_PREFIX_LEN;
    }
    if (len != SECRET_PREFIX_LEN)
        return -1;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return -1;
    }
    memcpy(prefix, text, SECRET_PREFIX_LEN);
    prefix[SECRET_PREFIX_LEN] = '\0';
    return 0;
}

/* An expiration from the body: absent gives the default, the past is refused. */
static int expiration_get(struct admin_call *call, const struct admin_value *v,
                          int64_t default_ttl_ms, int64_t *out)
{
    int64_t now = admin_now_unix_ms();

    if (!v->is_present) {
        *out = now + default_ttl_ms;
        return 0;
    }
    if (v->unix_ms <= now) {
        admin_fail(call, ADMIN_INVALID, "expiration must be in the future");
        return -1;
    }
    *out = v->unix_ms;
    return 0;
}

static bool bytes_dup(ProtobufCBinaryData *out, const uint8_t *data, size_t len)
{
    out->data = malloc(len);
    if (out->data == NULL)
        return false;
    memcpy(out->data, data, len);
    out->len = len;
    return true;
}

/* ---- pre-auth keys ---- */

static int render_preauthkey_item(struct store_txn *t, const ProtobufCMessage *record,
                                  const void *arg, uint64_t *id, json_t **out)
{
    const Concord__PreAuthKey *k = (const Concord__PreAuthKey *)record;

    (void)arg;
    *id = k->id;
    *out = admin_render_preauthkey(t, k);
    return *out != NULL ? 0 : STORE_NOMEM;
}

static void preauthkey_list_read(struct admin_call *call, struct store_txn *t)
{
    json_t *keys;
    int rv = admin_render_list(t, store_preauthkey_each, render_preauthkey_item, NULL, &keys);

    if (rv != 0) {
        admin_fail_store(call, rv, "cannot list pre-auth keys");
        return;
    }
    admin_reply_json(call, 200, json_pack("{s:o}", "preAuthKeys", keys), NULL);
}

void admin_preauthkey_list(struct admin_call *call)
{
    admin_read(call, preauthkey_list_read);
}

static void preauthkey_created(struct admin_call *call, struct store_txn *t,
                               const Concord__CommandResult *result)
{
    Concord__PreAuthKey *k = NULL;
    json_t *j;
    int rv = store_preauthkey_get(t, result->id, &k);

    if (rv != 0) {
        admin_fail_store(call, rv, "applied, but cannot read the pre-auth key back");
        return;
    }
    j = admin_render_preauthkey(t, k);
    store_record_free(k);
    if (j != NULL && json_object_set_new(j, "key", json_string(call->token)) != 0) {
        json_decref(j);
        j = NULL;
    }
    admin_reply_json(call, 200, j != NULL ? json_pack("{s:o}", "preAuthKey", j) : NULL, NULL);
}

void admin_preauthkey_create(struct admin_call *call)
{
    static const struct admin_field fields[] = {
        {"user", NULL, ADMIN_FIELD_U64},
        {"reusable", NULL, ADMIN_FIELD_BOOL},
        {"ephemeral", NULL, ADMIN_FIELD_BOOL},
        {"expiration", NULL, ADMIN_FIELD_TIME},
        {"aclTags", "acl_tags", ADMIN_FIELD_STRINGS},
    };
    struct admin_value v[5];
    char prefix[SECRET_PREFIX_LEN + 1], why[ADMIN_WHY_BYTES];
    uint8_t hash[SECRET_HASH_BYTES];
    Concord__CreatePreAuthKey *op;
    Concord__Command *cmd;
    char **tags = NULL;
    size_t n_tags = 0;
    int64_t expiration;

    if (admin_body_parse(call, fields, 5, v) != 0)
        return;
    if (v[4].is_present && admin_tags_copy(v[4].strings, &tags, &n_tags, why) != 0) {
        admin_fail(call, ADMIN_INVALID, "%s", why);
        return;
    }
    if (v[0].u64 == 0 && n_tags == 0) {
        admin_strings_free(tags, n_tags);
        admin_fail(call, ADMIN_INVALID, "a pre-auth key needs a user or at least one ACL tag");
        return;
    }
    if (expiration_get(call, &v[3], PREAUTHKEY_DEFAULT_TTL_MS, &expiration) != 0) {
        admin_strings_free(tags, n_tags);
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
    concord__create_pre_auth_key__init(op);
    cmd->op_case = CONCORD__COMMAND__OP_CREATE_PREAUTHKEY;
    cmd->create_preauthkey = op;
    op->tags = tags;
    op->n_tags = n_tags;
    op->user_id = v[0].u64;
    op->reusable = v[1].b;
    op->ephemeral = v[2].b;
    op->expiration_unix_ms = expiration;
    if (secret_generate(SECRET_KIND_PREAUTH, call->token, prefix, hash) != 0) {
        concord__command__free_unpacked(cmd, NULL);
        admin_fail(call, ADMIN_INTERNAL, "cannot generate a key");
        return;
    }
    op->prefix = admin_strdup(prefix);
    if (op->prefix == NULL || !bytes_dup(&op->hash, hash, sizeof hash)) {
        sodium_memzero(hash, sizeof hash);
        concord__command__free_unpacked(cmd, NULL);
        admin_fail(call, ADMIN_INTERNAL, "out of memory");
        return;
    }
    sodium_memzero(hash, sizeof hash);
    admin_submit(call, cmd, preauthkey_created);
}

/* Finds the pre-auth key a pasted key (token, listing form or prefix) names. */
static int preauthkey_id_by_key(struct admin_call *call, const char *key, uint64_t user_id,
                                uint64_t *id)
{
    char prefix[SECRET_PREFIX_LEN + 1];
    Concord__PreAuthKey *k = NULL;
    struct store_txn *t;
    int rv;

    if (prefix_normalize(SECRET_KIND_PREAUTH, key, prefix) != 0) {
        admin_fail(call, ADMIN_INVALID, "key: not a pre-auth key or key prefix");
        return -1;
    }
    rv = store_txn_begin(call->admin->opts.store, false, &t);
    if (rv == 0) {
        rv = store_preauthkey_get_by_prefix(t, prefix, &k);
        store_txn_abort(t);
    }
    if (rv == 0 && user_id != 0 && k->user_id != user_id)
        rv = STORE_NOTFOUND;
    if (rv == 0)
        *id = k->id;
    store_record_free(k);
    if (rv == STORE_NOTFOUND) {
        admin_fail(call, ADMIN_NOTFOUND, "pre-auth key %s not found", prefix);
        return -1;
    }
    if (rv != 0) {
        admin_fail_store(call, rv, "cannot look up the pre-auth key");
        return -1;
    }
    return 0;
}

/* Headscale 0.29 takes {"id"}; older releases took {"user", "key"}, which
 * existing scripts still send. */
void admin_preauthkey_expire(struct admin_call *call)
{
    static const struct admin_field fields[] = {
        {"id", NULL, ADMIN_FIELD_U64},
        {"user", NULL, ADMIN_FIELD_U64},
        {"key", NULL, ADMIN_FIELD_STRING},
    };
    struct admin_value v[3];
    Concord__ExpirePreAuthKey *op;
    Concord__Command *cmd;
    bool has_key;
    uint64_t id;

    if (admin_body_parse(call, fields, 3, v) != 0)
        return;
    /* protojson zero values ("0", "") mean absent. */
    has_key = v[2].is_present && v[2].str[0] != '\0';
    if ((v[0].u64 != 0) == has_key) {
        admin_fail(call, ADMIN_INVALID, "give either \"id\" or \"key\"");
        return;
    }
    id = v[0].u64;
    if (has_key && preauthkey_id_by_key(call, v[2].str, v[1].u64, &id) != 0)
        return;
    if ((cmd = admin_command_new(call)) == NULL ||
        (op = admin_op_alloc(call, cmd, sizeof *op)) == NULL)
        return;
    concord__expire_pre_auth_key__init(op);
    op->id = id;
    cmd->op_case = CONCORD__COMMAND__OP_EXPIRE_PREAUTHKEY;
    cmd->expire_preauthkey = op;
    admin_submit(call, cmd, admin_done_empty);
}

void admin_preauthkey_delete(struct admin_call *call)
{
    Concord__DeletePreAuthKey *op;
    Concord__Command *cmd;
    char text[32];
    uint64_t id;

    if (!net_http_query_get(call->req, "id", text, sizeof text) || admin_parse_id(text, &id) != 0) {
        admin_fail(call, ADMIN_INVALID, "id: expected ?id=<positive integer>");
        return;
    }
    if ((cmd = admin_command_new(call)) == NULL ||
        (op = admin_op_alloc(call, cmd, sizeof *op)) == NULL)
        return;
    concord__delete_pre_auth_key__init(op);
    op->id = id;
    cmd->op_case = CONCORD__COMMAND__OP_DELETE_PREAUTHKEY;
    cmd->delete_preauthkey = op;
    admin_submit(call, cmd, admin_done_empty);
}

/* ---- API keys ---- */

static int render_apikey_item(struct store_txn *t, const ProtobufCMessage *record, const void *arg,
                              uint64_t *id, json_t **out)
{
    const Concord__ApiKey *k = (const Concord__ApiKey *)record;

    (void)t;
    (void)arg;
    *id = k->id;
    *out = admin_render_apikey(k);
    return *out != NULL ? 0 : STORE_NOMEM;
}

static void apikey_list_read(struct admin_call *call, struct store_txn *t)
{
    json_t *keys;
    int rv = admin_render_list(t, store_apikey_each, render_apikey_item, NULL, &keys);

    if (rv != 0) {
        admin_fail_store(call, rv, "cannot list API keys");
        return;
    }
    admin_reply_json(call, 200, json_pack("{s:o}", "apiKeys", keys), NULL);
}

void admin_apikey_list(struct admin_call *call)
{
    admin_read(call, apikey_list_read);
}

static void apikey_created(struct admin_call *call, struct store_txn *t,
                           const Concord__CommandResult *result)
{
    (void)t;
    (void)result;
    admin_reply_json(call, 200, json_pack("{s:s}", "apiKey", call->token), NULL);
}

void admin_apikey_create(struct admin_call *call)
{
    static const struct admin_field fields[] = {
        {"expiration", NULL, ADMIN_FIELD_TIME},
    };
    struct admin_value v[1];
    char prefix[SECRET_PREFIX_LEN + 1];
    uint8_t hash[SECRET_HASH_BYTES];
    Concord__CreateApiKey *op;
    Concord__Command *cmd;
    int64_t expiration;

    if (admin_body_parse(call, fields, 1, v) != 0 ||
        expiration_get(call, &v[0], APIKEY_DEFAULT_TTL_MS, &expiration) != 0)
        return;
    if ((cmd = admin_command_new(call)) == NULL ||
        (op = admin_op_alloc(call, cmd, sizeof *op)) == NULL)
        return;
    concord__create_api_key__init(op);
    cmd->op_case = CONCORD__COMMAND__OP_CREATE_APIKEY;
    cmd->create_apikey = op;
    op->expiration_unix_ms = expiration;
    if (secret_generate(SECRET_KIND_APIKEY, call->token, prefix, hash) != 0) {
        concord__command__free_unpacked(cmd, NULL);
        admin_fail(call, ADMIN_INTERNAL, "cannot generate a key");
        return;
    }
    op->prefix = admin_strdup(prefix);
    if (op->prefix == NULL || !bytes_dup(&op->hash, hash, sizeof hash)) {
        sodium_memzero(hash, sizeof hash);
        concord__command__free_unpacked(cmd, NULL);
        admin_fail(call, ADMIN_INTERNAL, "out of memory");
        return;
    }
    sodium_memzero(hash, sizeof hash);
    admin_submit(call, cmd, apikey_created);
}

/* The prefix an expire or delete names, from a pasted prefix or an id. */
static int apikey_prefix_get(struct admin_call *call, const char *text, uint64_t id,
                             char prefix[SECRET_PREFIX_LEN + 1])
{
    Concord__ApiKey *k = NULL;
    struct store_txn *t;
    int rv;

    if (text != NULL) {
        if (prefix_normalize(SECRET_KIND_APIKEY, text, prefix) != 0) {
            admin_fail(call, ADMIN_INVALID, "prefix: not an API key prefix");
            return -1;
        }
        return 0;
    }
    rv = store_txn_begin(call->admin->opts.store, false, &t);
    if (rv == 0) {
        rv = store_apikey_get(t, id, &k);
        store_txn_abort(t);
    }
    if (rv == 0)
        snprintf(prefix, SECRET_PREFIX_LEN + 1, "%s", k->prefix);
    store_record_free(k);
    if (rv == STORE_NOTFOUND) {
        admin_fail(call, ADMIN_NOTFOUND, "API key %" PRIu64 " not found", id);
        return -1;
    }
    if (rv != 0) {
        admin_fail_store(call, rv, "cannot look up the API key");
        return -1;
    }
    return 0;
}

void admin_apikey_expire(struct admin_call *call)
{
    static const struct admin_field fields[] = {
        {"prefix", NULL, ADMIN_FIELD_STRING},
        {"id", NULL, ADMIN_FIELD_U64},
    };
    struct admin_value v[2];
    char prefix[SECRET_PREFIX_LEN + 1];
    Concord__ExpireApiKey *op;
    Concord__Command *cmd;
    bool has_prefix;

    if (admin_body_parse(call, fields, 2, v) != 0)
        return;
    has_prefix = v[0].is_present && v[0].str[0] != '\0'; /* "" is protojson's absent */
    if (has_prefix == (v[1].u64 != 0)) {
        admin_fail(call, ADMIN_INVALID, "provide either id or prefix, not both");
        return;
    }
    if (apikey_prefix_get(call, has_prefix ? v[0].str : NULL, v[1].u64, prefix) != 0)
        return;
    if ((cmd = admin_command_new(call)) == NULL ||
        (op = admin_op_alloc(call, cmd, sizeof *op)) == NULL)
        return;
    concord__expire_api_key__init(op);
    cmd->op_case = CONCORD__COMMAND__OP_EXPIRE_APIKEY;
    cmd->expire_apikey = op;
    op->prefix = admin_strdup(prefix);
    if (op->prefix == NULL) {
        concord__command__free_unpacked(cmd, NULL);
        admin_fail(call, ADMIN_INTERNAL, "out of memory");
        return;
    }
    admin_submit(call, cmd, admin_done_empty);
}

void admin_apikey_delete(struct admin_call *call)
{
    char prefix[SECRET_PREFIX_LEN + 1];
    Concord__DeleteApiKey *op;
    Concord__Command *cmd;

    if (apikey_prefix_get(call, call->params[0], 0, prefix) != 0)
        return;
    if ((cmd = admin_command_new(call)) == NULL ||
        (op = admin_op_alloc(call, cmd, sizeof *op)) == NULL)
        return;
    concord__delete_api_key__init(op);
    cmd->op_case = CONCORD__COMMAND__OP_DELETE_APIKEY;
    cmd->delete_apikey = op;
    op->prefix = admin_strdup(prefix);
    if (op->prefix == NULL) {
        concord__command__free_unpacked(cmd, NULL);
        admin_fail(call, ADMIN_INTERNAL, "out of memory");
        return;
    }
    admin_submit(call, cmd, admin_done_empty);
}
