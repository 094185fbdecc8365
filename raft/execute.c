/* raft/execute.c: the business rules, one function per Command.
 *
 * Every replica runs these on the same committed entries in the same order,
 * so they read nothing but the transaction and the command: time comes from
 * cmd->proposed_unix_ms, never from a clock; no randomness, no configuration.
 * Each rule validates everything first and writes only once it knows it will
 * succeed, so a failed command changes nothing (not even a sequence) and
 * leaves no audit entry. A non-zero return is a storage failure: the caller
 * stops the replica rather than let it diverge. */
#include "raft/cluster.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raft/cluster_internal.h"
#include "raft/exec_internal.h"

#define AUDIT_DETAIL_MAX 512u
/* 100.64.0.0/10 (CGNAT) and fd7a:115c:a1e0::/48, as Tailscale uses them. */
#define IPV4_BASE         0x64400000u
#define IPV4_OFFSET_LIMIT (1u << 22)

const char *exec_str_or_empty(const char *s)
{
    return s != NULL ? s : "";
}

static int vset_message(Concord__CommandResult *r, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
static int vset_message(Concord__CommandResult *r, const char *fmt, va_list ap)
{
    char buf[512];
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    char *msg;

    if (n < 0)
        buf[0] = '\0';
    msg = strdup(buf);
    if (msg == NULL)
        return STORE_NOMEM;
    r->message = msg;
    return 0;
}

/* A business failure: a deterministic result, not an error. */
int exec_fail(struct exec *x, enum cluster_result code, const char *fmt, ...)
{
    va_list ap;
    int rv;

    cluster_result_clear(x->result);
    x->result->code = (uint32_t)code;
    x->result->index = x->index;
    va_start(ap, fmt);
    rv = vset_message(x->result, fmt, ap);
    va_end(ap);
    return rv;
}

void exec_succeed(struct exec *x, uint64_t id)
{
    cluster_result_clear(x->result);
    x->result->code = CLUSTER_RESULT_OK;
    x->result->id = id;
    x->result->index = x->index;
}

int exec_audit(struct exec *x, const char *action, const char *fmt, ...)
{
    Concord__AuditEntry e = CONCORD__AUDIT_ENTRY__INIT;
    char detail[AUDIT_DETAIL_MAX];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (n < 0)
        detail[0] = '\0';
    e.index = x->index;
    e.unix_ms = x->cmd->proposed_unix_ms;
    e.actor = (char *)exec_str_or_empty(x->cmd->actor);
    e.action = (char *)action;
    e.detail = detail;
    return store_audit_append(x->t, &e);
}

/* "tag:" followed by printable characters other than ',' (the list separator
 * of the CLI and the policy). */
bool exec_tag_is_valid(const char *tag)
{
    size_t len = strlen(tag);

    if (len <= 4 || len > TAG_MAX_BYTES || strncmp(tag, "tag:", 4) != 0)
        return false;
    for (size_t i = 4; i < len; i++) {
        unsigned char ch = (unsigned char)tag[i];
        if (ch <= 0x20 || ch >= 0x7f || ch == ',')
            return false;
    }
    return true;
}

int exec_check_tags(struct exec *x, char **tags, size_t n_tags, bool *is_ok)
{
    *is_ok = false;
    for (size_t i = 0; i < n_tags; i++) {
        if (!exec_tag_is_valid(exec_str_or_empty(tags[i])))
            return exec_fail(x, CLUSTER_RESULT_INVALID,
                             "invalid tag \"%s\": tags look like \"tag:name\"",
                             exec_str_or_empty(tags[i]));
    }
    *is_ok = true;
    return 0;
}

bool exec_label_is_valid(const char *name)
{
    size_t len = strlen(name);

    if (len == 0 || len > GIVEN_NAME_MAX || name[0] == '-' || name[len - 1] == '-')
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-'))
            return false;
    }
    return true;
}

/* ---- users ---- */

static int create_user(struct exec *x)
{
    const Concord__CreateUser *op = x->cmd->create_user;
    Concord__User u = CONCORD__USER__INIT;
    Concord__User *existing = NULL;
    const char *name = exec_str_or_empty(op->name);
    uint64_t id;
    int rv;

    if (name[0] == '\0')
        return exec_fail(x, CLUSTER_RESULT_INVALID, "user name must not be empty");
    rv = store_user_get_by_name(x->t, name, &existing);
    if (rv == 0) {
        store_record_free(existing);
        return exec_fail(x, CLUSTER_RESULT_CONFLICT, "user \"%s\" already exists", name);
    }
    if (rv != STORE_NOTFOUND)
        return rv;
    rv = store_next_id(x->t, "user", &id);
    if (rv != 0)
        return rv;
    u.id = id;
    u.name = (char *)name;
    u.display_name = (char *)exec_str_or_empty(op->display_name);
    u.email = (char *)exec_str_or_empty(op->email);
    u.created_unix_ms = x->cmd->proposed_unix_ms;
    rv = store_user_put(x->t, &u);
    if (rv != 0)
        return rv;
    rv = exec_audit(x, "user.create", "id=%llu name=%s", (unsigned long long)id, name);
    if (rv != 0)
        return rv;
    exec_succeed(x, id);
    return 0;
}

static int rename_user(struct exec *x)
{
    const Concord__RenameUser *op = x->cmd->rename_user;
    const char *name = exec_str_or_empty(op->new_name);
    Concord__User *u = NULL;
    Concord__User *holder = NULL;
    char *old_name;
    int rv;

    rv = store_user_get(x->t, op->id, &u);
    if (rv == STORE_NOTFOUND)
        return exec_fail(x, CLUSTER_RESULT_NOTFOUND, "user %llu not found",
                         (unsigned long long)op->id);
    if (rv != 0)
        return rv;
    if (name[0] == '\0') {
        rv = exec_fail(x, CLUSTER_RESULT_INVALID, "user name must not be empty");
        goto out;
    }
    rv = store_user_get_by_name(x->t, name, &holder);
    if (rv == 0 && holder->id != u->id) {
        rv = exec_fail(x, CLUSTER_RESULT_CONFLICT, "user \"%s\" already exists", name);
        goto out;
    }
    if (rv != 0 && rv != STORE_NOTFOUND)
        goto out;
    old_name = u->name;
    u->name = (char *)name;
    rv = store_user_put(x->t, u);
    u->name = old_name;
    if (rv != 0)
        goto out;
    rv = exec_audit(x, "user.rename", "id=%llu name=%s old=%s", (unsigned long long)u->id, name,
                    exec_str_or_empty(old_name));
    if (rv != 0)
        goto out;
    exec_succeed(x, u->id);
out:
    store_record_free(holder);
    store_record_free(u);
    return rv;
}

struct id_list {
    uint64_t *ids;
    size_t n;
    size_t cap;
    uint64_t match; /* the owner to select, e.g. a user id */
};

static int id_list_push(struct id_list *l, uint64_t id)
{
    if (l->n == l->cap) {
        size_t cap = l->cap != 0 ? l->cap * 2 : 16;
        uint64_t *ids = realloc(l->ids, cap * sizeof *ids);
        if (ids == NULL)
            return STORE_NOMEM;
        l->ids = ids;
        l->cap = cap;
    }
    l->ids[l->n++] = id;
    return 0;
}

static int collect_nodes_of_user(const ProtobufCMessage *record, void *arg)
{
    const Concord__Node *n = (const Concord__Node *)record;
    struct id_list *l = arg;

    return n->user_id == l->match ? id_list_push(l, n->id) : 0;
}

static int collect_keys_of_user(const ProtobufCMessage *record, void *arg)
{
    const Concord__PreAuthKey *k = (const Concord__PreAuthKey *)record;
    struct id_list *l = arg;

    return k->user_id == l->match ? id_list_push(l, k->id) : 0;
}

static int delete_user(struct exec *x)
{
    const Concord__DeleteUser *op = x->cmd->delete_user;
    struct id_list nodes = {.match = op->id};
    struct id_list keys = {.match = op->id};
    Concord__User *u = NULL;
    int rv;

    rv = store_user_get(x->t, op->id, &u);
    if (rv == STORE_NOTFOUND)
        return exec_fail(x, CLUSTER_RESULT_NOTFOUND, "user %llu not found",
                         (unsigned long long)op->id);
    if (rv != 0)
        return rv;
    rv = store_node_each(x->t, collect_nodes_of_user, &nodes);
    if (rv != 0)
        goto out;
    if (nodes.n > 0) {
        rv = exec_fail(x, CLUSTER_RESULT_CONFLICT, "user has %zu node(s); delete them first",
                       nodes.n);
        goto out;
    }
    rv = store_preauthkey_each(x->t, collect_keys_of_user, &keys);
    if (rv != 0)
        goto out;
    for (size_t i = 0; i < keys.n; i++) {
        rv = store_preauthkey_delete(x->t, keys.ids[i]);
        if (rv != 0)
            goto out;
    }
    rv = store_user_delete(x->t, u->id);
    if (rv != 0)
        goto out;
    rv = exec_audit(x, "user.delete", "id=%llu name=%s keys=%zu", (unsigned long long)u->id,
                    exec_str_or_empty(u->name), keys.n);
    if (rv != 0)
        goto out;
    exec_succeed(x, u->id);
out:
    free(keys.ids);
    free(nodes.ids);
    store_record_free(u);
    return rv;
}

/* ---- pre-auth keys ---- */

/* Business rule shared by keys and nodes: an owner must exist, except that a
 * tagged object may have no user (user_id 0). Sets *is_ok. */
int exec_check_owner(struct exec *x, uint64_t user_id, size_t n_tags, bool *is_ok)
{
    Concord__User *u = NULL;
    int rv;

    *is_ok = false;
    if (user_id == 0 && n_tags > 0) {
        *is_ok = true;
        return 0;
    }
    rv = store_user_get(x->t, user_id, &u);
    if (rv == STORE_NOTFOUND) {
        if (user_id == 0)
            return exec_fail(x, CLUSTER_RESULT_NOTFOUND,
                             "user 0 not found (only tagged objects may "
                             "have no user)");
        return exec_fail(x, CLUSTER_RESULT_NOTFOUND, "user %llu not found",
                         (unsigned long long)user_id);
    }
    if (rv != 0)
        return rv;
    store_record_free(u);
    *is_ok = true;
    return 0;
}

static int create_preauthkey(struct exec *x)
{
    const Concord__CreatePreAuthKey *op = x->cmd->create_preauthkey;
    Concord__PreAuthKey k = CONCORD__PRE_AUTH_KEY__INIT;
    Concord__PreAuthKey *existing = NULL;
    const char *prefix = exec_str_or_empty(op->prefix);
    bool is_ok;
    uint64_t id;
    int rv;

    if (prefix[0] == '\0')
        return exec_fail(x, CLUSTER_RESULT_INVALID, "pre-auth key prefix must not be empty");
    if (op->hash.len != 32)
        return exec_fail(x, CLUSTER_RESULT_INVALID, "pre-auth key hash must be 32 bytes");
    rv = exec_check_tags(x, op->tags, op->n_tags, &is_ok);
    if (rv != 0 || !is_ok)
        return rv;
    rv = exec_check_owner(x, op->user_id, op->n_tags, &is_ok);
    if (rv != 0 || !is_ok)
        return rv;
    rv = store_preauthkey_get_by_prefix(x->t, prefix, &existing);
    if (rv == 0) {
        store_record_free(existing);
        return exec_fail(x, CLUSTER_RESULT_CONFLICT, "pre-auth key prefix \"%s\" already exists",
                         prefix);
    }
    if (rv != STORE_NOTFOUND)
        return rv;
    rv = store_next_id(x->t, "preauthkey", &id);
    if (rv != 0)
        return rv;
    k.id = id;
    k.prefix = (char *)prefix;
    k.hash = op->hash;
    k.user_id = op->user_id;
    k.reusable = op->reusable;
    k.ephemeral = op->ephemeral;
    k.n_tags = op->n_tags;
    k.tags = op->tags;
    k.expiration_unix_ms = op->expiration_unix_ms;
    k.created_unix_ms = x->cmd->proposed_unix_ms;
    rv = store_preauthkey_put(x->t, &k);
    if (rv != 0)
        return rv;
    rv = exec_audit(x, "preauthkey.create", "id=%llu user=%llu prefix=%s", (unsigned long long)id,
                    (unsigned long long)op->user_id, prefix);
    if (rv != 0)
        return rv;
    exec_succeed(x, id);
    return 0;
}

/* Expiry moves to "now" (the proposer's) unless it already passed earlier. */
static int64_t expire_at(int64_t current, int64_t now)
{
    return current != 0 && current <= now ? current : now;
}

static int expire_preauthkey(struct exec *x)
{
    const Concord__ExpirePreAuthKey *op = x->cmd->expire_preauthkey;
    Concord__PreAuthKey *k = NULL;
    int rv;

    rv = store_preauthkey_get(x->t, op->id, &k);
    if (rv == STORE_NOTFOUND)
        return exec_fail(x, CLUSTER_RESULT_NOTFOUND, "pre-auth key %llu not found",
                         (unsigned long long)op->id);
    if (rv != 0)
        return rv;
    k->expiration_unix_ms = expire_at(k->expiration_unix_ms, x->cmd->proposed_unix_ms);
    rv = store_preauthkey_put(x->t, k);
    if (rv != 0)
        goto out;
    rv = exec_audit(x, "preauthkey.expire", "id=%llu", (unsigned long long)k->id);
    if (rv != 0)
        goto out;
    exec_succeed(x, k->id);
out:
    store_record_free(k);
    return rv;
}

static int delete_preauthkey(struct exec *x)
{
    const Concord__DeletePreAuthKey *op = x->cmd->delete_preauthkey;
    Concord__PreAuthKey *k = NULL;
    int rv;

    rv = store_preauthkey_get(x->t, op->id, &k);
    if (rv == STORE_NOTFOUND)
        return exec_fail(x, CLUSTER_RESULT_NOTFOUND, "pre-auth key %llu not found",
                         (unsigned long long)op->id);
    if (rv != 0)
        return rv;
    store_record_free(k);
    rv = store_preauthkey_delete(x->t, op->id);
    if (rv != 0)
        return rv;
    rv = exec_audit(x, "preauthkey.delete", "id=%llu", (unsigned long long)op->id);
    if (rv != 0)
        return rv;
    exec_succeed(x, op->id);
    return 0;
}

/* ---- API keys ---- */

static int create_apikey(struct exec *x)
{
    const Concord__CreateApiKey *op = x->cmd->create_apikey;
    Concord__ApiKey k = CONCORD__API_KEY__INIT;
    Concord__ApiKey *existing = NULL;
    const char *prefix = exec_str_or_empty(op->prefix);
    uint64_t id;
    int rv;

    if (prefix[0] == '\0')
        return exec_fail(x, CLUSTER_RESULT_INVALID, "API key prefix must not be empty");
    if (op->hash.len != 32)
        return exec_fail(x, CLUSTER_RESULT_INVALID, "API key hash must be 32 bytes");
    rv = store_apikey_get_by_prefix(x->t, prefix, &existing);
    if (rv == 0) {
        store_record_free(existing);
        return exec_fail(x, CLUSTER_RESULT_CONFLICT, "API key prefix \"%s\" already exists",
                         prefix);
    }
    if (rv != STORE_NOTFOUND)
        return rv;
    rv = store_next_id(x->t, "apikey", &id);
    if (rv != 0)
        return rv;
    k.id = id;
    k.prefix = (char *)prefix;
    k.hash = op->hash;
    k.expiration_unix_ms = op->expiration_unix_ms;
    k.created_unix_ms = x->cmd->proposed_unix_ms;
    rv = store_apikey_put(x->t, &k);
    if (rv != 0)
        return rv;
    rv = exec_audit(x, "apikey.create", "id=%llu prefix=%s", (unsigned long long)id, prefix);
    if (rv != 0)
        return rv;
    exec_succeed(x, id);
    return 0;
}

static int get_apikey(struct exec *x, const char *prefix, Concord__ApiKey **out)
{
    int rv = store_apikey_get_by_prefix(x->t, prefix, out);

    if (rv == STORE_NOTFOUND) {
        *out = NULL;
        return exec_fail(x, CLUSTER_RESULT_NOTFOUND, "API key \"%s\" not found", prefix);
    }
    return rv;
}

static int expire_apikey(struct exec *x)
{
    const char *prefix = exec_str_or_empty(x->cmd->expire_apikey->prefix);
    Concord__ApiKey *k = NULL;
    int rv;

    rv = get_apikey(x, prefix, &k);
    if (rv != 0 || k == NULL)
        return rv;
    k->expiration_unix_ms = expire_at(k->expiration_unix_ms, x->cmd->proposed_unix_ms);
    rv = store_apikey_put(x->t, k);
    if (rv != 0)
        goto out;
    rv = exec_audit(x, "apikey.expire", "id=%llu prefix=%s", (unsigned long long)k->id, prefix);
    if (rv != 0)
        goto out;
    exec_succeed(x, k->id);
out:
    store_record_free(k);
    return rv;
}

static int delete_apikey(struct exec *x)
{
    const char *prefix = exec_str_or_empty(x->cmd->delete_apikey->prefix);
    Concord__ApiKey *k = NULL;
    uint64_t id;
    int rv;

    rv = get_apikey(x, prefix, &k);
    if (rv != 0 || k == NULL)
        return rv;
    id = k->id;
    store_record_free(k);
    rv = store_apikey_delete(x->t, id);
    if (rv != 0)
        return rv;
    rv = exec_audit(x, "apikey.delete", "id=%llu prefix=%s", (unsigned long long)id, prefix);
    if (rv != 0)
        return rv;
    exec_succeed(x, id);
    return 0;
}

/* ---- nodes ---- */

void exec_ipv4_of(uint32_t offset, uint8_t out[4])
{
    uint32_t a = IPV4_BASE + offset;

    out[0] = (uint8_t)(a >> 24);
    out[1] = (uint8_t)(a >> 16);
    out[2] = (uint8_t)(a >> 8);
    out[3] = (uint8_t)a;
}

void exec_ipv6_of(uint32_t offset, uint8_t out[16])
{
    static const uint8_t prefix[6] = {0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0};

    memset(out, 0, 16);
    memcpy(out, prefix, sizeof prefix);
    out[12] = (uint8_t)(offset >> 24);
    out[13] = (uint8_t)(offset >> 16);
    out[14] = (uint8_t)(offset >> 8);
    out[15] = (uint8_t)offset;
}

static int ip_is_taken(struct exec *x, const uint8_t *addr, size_t len, bool *is_taken)
{
    Concord__Node *n = NULL;
    int rv = store_node_get_by_ip(x->t, addr, len, &n);

    if (rv == 0) {
        store_record_free(n);
        *is_taken = true;
        return 0;
    }
    *is_taken = false;
    return rv == STORE_NOTFOUND ? 0 : rv;
}

/* The lowest free offset in the /10, skipping addresses ending in .0 and
 * .255 (some clients treat them as network or broadcast). Both families use
 * the same offset, so a node's two addresses correspond. *offset is 0 when
 * the range is exhausted. */
int exec_allocate_ip_offset(struct exec *x, uint32_t *offset)
{
    uint8_t v4[4];
    uint8_t v6[16];
    bool is_taken;
    int rv;

    for (uint32_t off = 1; off < IPV4_OFFSET_LIMIT; off++) {
        if ((off & 0xffu) == 0 || (off & 0xffu) == 0xffu)
            continue;
        exec_ipv4_of(off, v4);
        rv = ip_is_taken(x, v4, sizeof v4, &is_taken);
        if (rv != 0)
            return rv;
        if (is_taken)
            continue;
        exec_ipv6_of(off, v6);
        rv = ip_is_taken(x, v6, sizeof v6, &is_taken);
        if (rv != 0)
            return rv;
        if (!is_taken) {
            *offset = off;
            return 0;
        }
    }
    *offset = 0;
    return 0;
}

/* hostname -> DNS label: lower case, other characters become '-', at most
 * 63 bytes, "node" when nothing is left. */
void exec_given_name_base(const char *hostname, char out[GIVEN_NAME_MAX + 1])
{
    size_t n = 0;

    for (; hostname[n] != '\0' && n < GIVEN_NAME_MAX; n++) {
        char ch = hostname[n];
        if (ch >= 'A' && ch <= 'Z')
            ch = (char)(ch - 'A' + 'a');
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-'))
            ch = '-';
        out[n] = ch;
    }
    out[n] = '\0';
    if (n == 0)
        strcpy(out, "node");
}

int exec_given_name_is_taken(struct exec *x, const char *name, uint64_t except_id, bool *is_taken)
{
    Concord__Node *n = NULL;
    int rv = store_node_get_by_given_name(x->t, name, &n);

    if (rv == 0) {
        *is_taken = n->id != except_id;
        store_record_free(n);
        return 0;
    }
    *is_taken = false;
    return rv == STORE_NOTFOUND ? 0 : rv;
}

/* base, then base-1, base-2, ... (the base shortened so the whole fits 63). */
int exec_unique_given_name(struct exec *x, const char *base, uint64_t except_id,
                           char out[GIVEN_NAME_MAX + 1])
{
    bool is_taken;
    int rv;

    snprintf(out, GIVEN_NAME_MAX + 1, "%s", base);
    for (unsigned long suffix = 1;; suffix++) {
        char tail[24];
        size_t tail_len;
        size_t keep;

        rv = exec_given_name_is_taken(x, out, except_id, &is_taken);
        if (rv != 0 || !is_taken)
            return rv;
        tail_len = (size_t)snprintf(tail, sizeof tail, "-%lu", suffix);
        keep = strlen(base);
        if (keep + tail_len > GIVEN_NAME_MAX)
            keep = GIVEN_NAME_MAX - tail_len;
        snprintf(out, GIVEN_NAME_MAX + 1, "%.*s%s", (int)keep, base, tail);
    }
}

int exec_node_key_is_taken(struct exec *x, const uint8_t *key, bool is_machine, bool *is_taken)
{
    Concord__Node *n = NULL;
    int rv = is_machine ? store_node_get_by_machine_key(x->t, key, &n)
                        : store_node_get_by_node_key(x->t, key, &n);

    if (rv == 0) {
        store_record_free(n);
        *is_taken = true;
        return 0;
    }
    *is_taken = false;
    return rv == STORE_NOTFOUND ? 0 : rv;
}

static int create_node(struct exec *x)
{
    const Concord__CreateNode *op = x->cmd->create_node;
    const struct exec_registration r = {
        .machine_key = op->machine_key,
        .node_key = op->node_key,
        .user_id = op->user_id,
        .tags = op->tags,
        .n_tags = op->n_tags,
        .ephemeral = op->ephemeral,
        .hostname = exec_str_or_empty(op->hostname),
        .register_method = exec_str_or_empty(op->register_method),
    };
    bool is_ok;
    bool is_taken;
    uint64_t id;
    int rv;

    if (op->machine_key.len != 32 || op->node_key.len != 32)
        return exec_fail(x, CLUSTER_RESULT_INVALID, "machine key and node key must be 32 bytes");
    rv = exec_check_tags(x, op->tags, op->n_tags, &is_ok);
    if (rv != 0 || !is_ok)
        return rv;
    rv = exec_check_owner(x, op->user_id, op->n_tags, &is_ok);
    if (rv != 0 || !is_ok)
        return rv;
    rv = exec_node_key_is_taken(x, op->machine_key.data, true, &is_taken);
    if (rv != 0)
        return rv;
    if (is_taken)
        return exec_fail(x, CLUSTER_RESULT_CONFLICT, "a node with this machine key already exists");
    rv = exec_node_key_is_taken(x, op->node_key.data, false, &is_taken);
    if (rv != 0)
        return rv;
    if (is_taken)
        return exec_fail(x, CLUSTER_RESULT_CONFLICT, "a node with this node key already exists");
    rv = exec_node_create(x, &r, "node.create", &id);
    /* It may have failed the command (no address left). */
    if (rv == 0 && x->result->code == CLUSTER_RESULT_OK)
        exec_succeed(x, id);
    return rv;
}

int exec_get_node(struct exec *x, uint64_t id, Concord__Node **out)
{
    int rv = store_node_get(x->t, id, out);

    if (rv == STORE_NOTFOUND) {
        *out = NULL;
        return exec_fail(x, CLUSTER_RESULT_NOTFOUND, "node %llu not found", (unsigned long long)id);
    }
    return rv;
}

static int rename_node(struct exec *x)
{
    const Concord__RenameNode *op = x->cmd->rename_node;
    const char *name = exec_str_or_empty(op->new_name);
    Concord__Node *n = NULL;
    char *old_name;
    bool is_taken;
    int rv;

    rv = exec_get_node(x, op->id, &n);
    if (rv != 0 || n == NULL)
        return rv;
    if (!exec_label_is_valid(name)) {
        rv = exec_fail(x, CLUSTER_RESULT_INVALID,
                       "invalid node name \"%s\": use 1-63 of a-z, 0-9 and '-', not at either end",
                       name);
        goto out;
    }
    rv = exec_given_name_is_taken(x, name, n->id, &is_taken);
    if (rv != 0)
        goto out;
    if (is_taken) {
        rv = exec_fail(x, CLUSTER_RESULT_CONFLICT, "node name \"%s\" is already in use", name);
        goto out;
    }
    old_name = n->given_name;
    n->given_name = (char *)name;
    rv = store_node_put(x->t, n);
    n->given_name = old_name;
    if (rv != 0)
        goto out;
    rv = exec_audit(x, "node.rename", "id=%llu name=%s old=%s", (unsigned long long)n->id, name,
                    exec_str_or_empty(old_name));
    if (rv != 0)
        goto out;
    exec_succeed(x, n->id);
out:
    store_record_free(n);
    return rv;
}

static int expire_node(struct exec *x)
{
    const Concord__ExpireNode *op = x->cmd->expire_node;
    Concord__Node *n = NULL;
    int rv;

    rv = exec_get_node(x, op->id, &n);
    if (rv != 0 || n == NULL)
        return rv;
    n->expiry_unix_ms = op->expiry_unix_ms;
    rv = store_node_put(x->t, n);
    if (rv != 0)
        goto out;
    rv = exec_audit(x, "node.expire", "id=%llu expiry_unix_ms=%lld", (unsigned long long)n->id,
                    (long long)op->expiry_unix_ms);
    if (rv != 0)
        goto out;
    exec_succeed(x, n->id);
out:
    store_record_free(n);
    return rv;
}

struct session_list {
    uint64_t node_id;
    struct id_list sessions;
};

static int collect_sessions_of_node(const ProtobufCMessage *record, void *arg)
{
    const Concord__Session *s = (const Concord__Session *)record;
    struct session_list *l = arg;

    return s->node_id == l->node_id ? id_list_push(&l->sessions, s->session_id) : 0;
}

int exec_delete_node_record(struct exec *x, uint64_t id)
{
    struct session_list sessions = {.node_id = id};
    int rv;

    rv = store_session_each(x->t, collect_sessions_of_node, &sessions);
    for (size_t i = 0; rv == 0 && i < sessions.sessions.n; i++)
        rv = store_session_delete(x->t, id, sessions.sessions.ids[i]);
    if (rv == 0)
        rv = store_node_delete(x->t, id);
    free(sessions.sessions.ids);
    return rv;
}

static int delete_node(struct exec *x)
{
    const Concord__DeleteNode *op = x->cmd->delete_node;
    Concord__Node *n = NULL;
    int rv;

    rv = exec_get_node(x, op->id, &n);
    if (rv != 0 || n == NULL)
        return rv;
    rv = exec_delete_node_record(x, n->id);
    if (rv != 0)
        goto out;
    rv = exec_audit(x, "node.delete", "id=%llu name=%s", (unsigned long long)n->id,
                    exec_str_or_empty(n->given_name));
    if (rv != 0)
        goto out;
    exec_succeed(x, n->id);
out:
    store_record_free(n);
    return rv;
}

static void join_list(char **items, size_t n_items, char *out, size_t cap)
{
    size_t used = 0;

    out[0] = '\0';
    for (size_t i = 0; i < n_items && used < cap; i++) {
        int n = snprintf(out + used, cap - used, "%s%s", i > 0 ? "," : "", items[i]);
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

/* Stores n with one of its string lists (*field) replaced by items, which
 * stay the command's, then audits "node.<what>" and succeeds. */
static int node_list_put(struct exec *x, Concord__Node *n, char ***field, size_t *n_field,
                         char **items, size_t n_items, const char *what)
{
    char **old = *field;
    size_t old_n = *n_field;
    char list[AUDIT_DETAIL_MAX / 2];
    char action[32];
    int rv;

    *field = items;
    *n_field = n_items;
    rv = store_node_put(x->t, n);
    *field = old;
    *n_field = old_n;
    if (rv != 0)
        return rv;
    join_list(items, n_items, list, sizeof list);
    snprintf(action, sizeof action, "node.%s", what);
    rv = exec_audit(x, action, "id=%llu %s=%s", (unsigned long long)n->id, what, list);
    if (rv == 0)
        exec_succeed(x, n->id);
    return rv;
}

static int set_node_tags(struct exec *x)
{
    const Concord__SetNodeTags *op = x->cmd->set_node_tags;
    Concord__Node *n = NULL;
    bool is_ok;
    int rv;

    rv = exec_get_node(x, op->id, &n);
    if (rv != 0 || n == NULL)
        return rv;
    rv = exec_check_tags(x, op->tags, op->n_tags, &is_ok);
    if (rv != 0 || !is_ok)
        goto out;
    rv = node_list_put(x, n, &n->tags, &n->n_tags, op->tags, op->n_tags, "tags");
out:
    store_record_free(n);
    return rv;
}

static bool strv_has(char *const *v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(exec_str_or_empty(v[i]), s) == 0)
            return true;
    return false;
}

/* Approved routes must be advertised by the node, once each: approving a
 * route the node does not announce would route traffic into a black hole. */
static int set_node_routes(struct exec *x)
{
    const Concord__SetNodeRoutes *op = x->cmd->set_node_routes;
    Concord__Node *n = NULL;
    int rv;

    rv = exec_get_node(x, op->id, &n);
    if (rv != 0 || n == NULL)
        return rv;
    for (size_t i = 0; i < op->n_routes; i++) {
        const char *r = exec_str_or_empty(op->routes[i]);

        if (!strv_has(n->advertised_routes, n->n_advertised_routes, r)) {
            rv = exec_fail(x, CLUSTER_RESULT_INVALID,
                           "route %s is not advertised by node %llu (its client announces it "
                           "with tailscale up --advertise-routes)",
                           r, (unsigned long long)n->id);
            goto out;
        }
        if (strv_has(op->routes, i, r)) {
            rv = exec_fail(x, CLUSTER_RESULT_INVALID, "route %s is listed twice", r);
            goto out;
        }
    }
    rv = node_list_put(x, n, &n->approved_routes, &n->n_approved_routes, op->routes, op->n_routes,
                       "routes");
out:
    store_record_free(n);
    return rv;
}

/* ---- policy ---- */

static int set_policy(struct exec *x)
{
    const Concord__SetPolicy *op = x->cmd->set_policy;
    Concord__Policy p = CONCORD__POLICY__INIT;
    Concord__Policy *current = NULL;
    uint64_t version = 0;
    int rv;

    rv = store_policy_get(x->t, &current);
    if (rv == 0) {
        version = current->version;
        store_record_free(current);
    } else if (rv != STORE_NOTFOUND) {
        return rv;
    }
    if (op->has_if_version && op->if_version != version)
        return exec_fail(x, CLUSTER_RESULT_PRECONDITION, "policy version is %llu",
                         (unsigned long long)version);
    p.version = version + 1;
    p.text = (char *)exec_str_or_empty(op->text);
    p.updated_unix_ms = x->cmd->proposed_unix_ms;
    rv = store_policy_put(x->t, &p);
    if (rv != 0)
        return rv;
    rv = exec_audit(x, "policy.set", "version=%llu bytes=%zu", (unsigned long long)p.version,
                    strlen(p.text));
    if (rv != 0)
        return rv;
    exec_succeed(x, p.version);
    return 0;
}

/* ---- replicas ---- */

static int upsert_replica(struct exec *x)
{
    const Concord__UpsertReplica *op = x->cmd->upsert_replica;
    Concord__Replica r = CONCORD__REPLICA__INIT;
    Concord__Replica *existing = NULL;
    int rv;

    if (op->id == 0)
        return exec_fail(x, CLUSTER_RESULT_INVALID, "replica id must be > 0");
    rv = store_replica_get(x->t, op->id, &existing);
    if (rv == 0) {
        r.epoch = existing->epoch;
        r.heartbeat_seq = existing->heartbeat_seq;
        r.derp = existing->derp;
    } else if (rv != STORE_NOTFOUND) {
        return rv;
    }
    r.id = op->id;
    r.raft_address = (char *)exec_str_or_empty(op->raft_address);
    r.http_address = (char *)exec_str_or_empty(op->http_address);
    rv = store_replica_put(x->t, &r);
    store_record_free(existing);
    if (rv != 0)
        return rv;
    rv = exec_audit(x, "replica.upsert", "id=%llu raft=%s http=%s", (unsigned long long)op->id,
                    r.raft_address, r.http_address);
    if (rv != 0)
        return rv;
    exec_succeed(x, op->id);
    return 0;
}

static int remove_replica(struct exec *x)
{
    const Concord__RemoveReplica *op = x->cmd->remove_replica;
    Concord__Replica *existing = NULL;
    int rv;

    rv = store_replica_get(x->t, op->id, &existing);
    if (rv == STORE_NOTFOUND)
        return exec_fail(x, CLUSTER_RESULT_NOTFOUND, "replica %llu not found",
                         (unsigned long long)op->id);
    if (rv != 0)
        return rv;
    store_record_free(existing);
    rv = store_replica_delete(x->t, op->id);
    if (rv != 0)
        return rv;
    rv = exec_audit(x, "replica.remove", "id=%llu", (unsigned long long)op->id);
    if (rv != 0)
        return rv;
    exec_succeed(x, op->id);
    return 0;
}

/* ---- whole state ---- */

struct replica_list {
    Concord__Replica **items;
    size_t n;
    size_t cap;
};

static void replica_list_free(struct replica_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        concord__replica__free_unpacked(l->items[i], NULL);
    free(l->items);
}

/* Copies each record (the store frees its own after the callback). */
static int collect_replica(const ProtobufCMessage *record, void *arg)
{
    struct replica_list *l = arg;
    size_t len = protobuf_c_message_get_packed_size(record);
    uint8_t *buf;
    Concord__Replica *copy;

    if (l->n == l->cap) {
        size_t cap = l->cap != 0 ? l->cap * 2 : 8;
        Concord__Replica **items = realloc(l->items, cap * sizeof *items);
        if (items == NULL)
            return STORE_NOMEM;
        l->items = items;
        l->cap = cap;
    }
    buf = malloc(len != 0 ? len : 1);
    if (buf == NULL)
        return STORE_NOMEM;
    protobuf_c_message_pack(record, buf);
    copy = concord__replica__unpack(NULL, len, buf);
    free(buf);
    if (copy == NULL)
        return STORE_NOMEM;
    l->items[l->n++] = copy;
    return 0;
}

/* Loads a storage dump as the whole replicated state, except the replicas
 * table: the addresses of the running cluster must survive a restore taken
 * elsewhere or earlier, or followers could no longer find the leader. */
static int restore_state(struct exec *x)
{
    const Concord__RestoreState *op = x->cmd->restore_state;
    struct replica_list keep = {0};
    struct replica_list loaded = {0};
    uint64_t dump_index;
    int rv;

    rv = store_replica_each(x->t, collect_replica, &keep);
    if (rv != 0)
        goto out;
    rv = store_load(x->t, op->dump.data, op->dump.len, &dump_index);
    if (rv == STORE_CORRUPT || rv == STORE_SCHEMA || rv == STORE_INVALID) {
        rv = exec_fail(x, CLUSTER_RESULT_INVALID,
                       "restore: the dump is not a valid state dump (%s)", store_strerror(rv));
        goto out;
    }
    if (rv != 0)
        goto out;
    rv = store_replica_each(x->t, collect_replica, &loaded);
    if (rv != 0)
        goto out;
    for (size_t i = 0; i < loaded.n; i++) {
        rv = store_replica_delete(x->t, loaded.items[i]->id);
        if (rv != 0)
            goto out;
    }
    for (size_t i = 0; i < keep.n; i++) {
        rv = store_replica_put(x->t, keep.items[i]);
        if (rv != 0)
            goto out;
    }
    rv = store_applied_index_put(x->t, x->index);
    if (rv != 0)
        goto out;
    rv = exec_audit(x, "state.restore", "bytes=%zu dump_index=%llu", op->dump.len,
                    (unsigned long long)dump_index);
    if (rv != 0)
        goto out;
    exec_succeed(x, 0);
out:
    replica_list_free(&loaded);
    replica_list_free(&keep);
    return rv;
}

void cluster_result_clear(Concord__CommandResult *result)
{
    if (result == NULL)
        return;
    if (result->message != NULL && result->message != protobuf_c_empty_string)
        free(result->message);
    concord__command_result__init(result);
}

int cluster_fsm_execute(struct store_txn *t, const Concord__Command *cmd, uint64_t index,
                        Concord__CommandResult *result)
{
    struct exec x = {.t = t, .cmd = cmd, .index = index, .result = result};

    /* Every member of the op union is a pointer: a set case needs one. */
    if (cmd->op_case != CONCORD__COMMAND__OP__NOT_SET && cmd->create_user == NULL)
        return exec_fail(&x, CLUSTER_RESULT_INVALID, "command operation is empty");
    switch (cmd->op_case) {
    case CONCORD__COMMAND__OP_CREATE_USER:
        return create_user(&x);
    case CONCORD__COMMAND__OP_RENAME_USER:
        return rename_user(&x);
    case CONCORD__COMMAND__OP_DELETE_USER:
        return delete_user(&x);
    case CONCORD__COMMAND__OP_CREATE_PREAUTHKEY:
        return create_preauthkey(&x);
    case CONCORD__COMMAND__OP_EXPIRE_PREAUTHKEY:
        return expire_preauthkey(&x);
    case CONCORD__COMMAND__OP_DELETE_PREAUTHKEY:
        return delete_preauthkey(&x);
    case CONCORD__COMMAND__OP_CREATE_APIKEY:
        return create_apikey(&x);
    case CONCORD__COMMAND__OP_EXPIRE_APIKEY:
        return expire_apikey(&x);
    case CONCORD__COMMAND__OP_DELETE_APIKEY:
        return delete_apikey(&x);
    case CONCORD__COMMAND__OP_CREATE_NODE:
        return create_node(&x);
    case CONCORD__COMMAND__OP_RENAME_NODE:
        return rename_node(&x);
    case CONCORD__COMMAND__OP_EXPIRE_NODE:
        return expire_node(&x);
    case CONCORD__COMMAND__OP_DELETE_NODE:
        return delete_node(&x);
    case CONCORD__COMMAND__OP_SET_NODE_TAGS:
        return set_node_tags(&x);
    case CONCORD__COMMAND__OP_SET_NODE_ROUTES:
        return set_node_routes(&x);
    case CONCORD__COMMAND__OP_REPLICA_HEARTBEAT:
        exec_succeed(&x, x.cmd->replica_heartbeat->id);
        return 0;
    case CONCORD__COMMAND__OP_SET_POLICY:
        return set_policy(&x);
    case CONCORD__COMMAND__OP_UPSERT_REPLICA:
        return upsert_replica(&x);
    case CONCORD__COMMAND__OP_REMOVE_REPLICA:
        return remove_replica(&x);
    case CONCORD__COMMAND__OP_RESTORE_STATE:
        return restore_state(&x);
    case CONCORD__COMMAND__OP_REGISTER_NODE:
        return exec_register_node(&x);
    case CONCORD__COMMAND__OP_ADD_REGISTRATION:
        return exec_add_registration(&x);
    case CONCORD__COMMAND__OP_APPROVE_REGISTRATION:
        return exec_approve_registration(&x);
    case CONCORD__COMMAND__OP_DELETE_REGISTRATION:
        return exec_delete_registration(&x);
    case CONCORD__COMMAND__OP_UPDATE_NODES:
        return exec_update_nodes(&x);
    case CONCORD__COMMAND__OP_LOGOUT_NODE:
        return exec_logout_node(&x);
    case CONCORD__COMMAND__OP_OPEN_SESSION:
        return exec_open_session(&x);
    case CONCORD__COMMAND__OP_CLOSE_SESSION:
        return exec_close_session(&x);
    case CONCORD__COMMAND__OP_SET_CONTROL_SETTINGS:
        return exec_set_control_settings(&x);
    case CONCORD__COMMAND__OP_SET_REPLICA_DERP:
        return exec_set_replica_derp(&x);
    case CONCORD__COMMAND__OP__NOT_SET:
    default:
        return exec_fail(&x, CLUSTER_RESULT_INVALID, "command has no known operation");
    }
}
