/* raft/execute_control.c: the business rules of the control protocol's
 * commands: registrations (pre-auth key, interactive approval, a known
 * machine coming back), what nodes report about themselves, logout, map
 * sessions and the cluster's control settings. Same contract as execute.c:
 * only the transaction and the command are read, a failed command changes
 * nothing. Node reports and sessions are frequent and carry no operator
 * intent, so they leave no audit entry. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raft/exec_internal.h"

#define KEY_BYTES 32u

static bool key_ok(const ProtobufCBinaryData *k)
{
    return k->len == KEY_BYTES;
}

int exec_node_create(struct exec *x, const struct exec_registration *r, const char *action,
                     uint64_t *id)
{
    Concord__Node n = CONCORD__NODE__INIT;
    char base[GIVEN_NAME_MAX + 1];
    char given[GIVEN_NAME_MAX + 1];
    uint8_t v4[4];
    uint8_t v6[16];
    uint32_t offset;
    int rv;

    rv = exec_allocate_ip_offset(x, &offset);
    if (rv != 0)
        return rv;
    if (offset == 0)
        return exec_fail(x, CLUSTER_RESULT_CONFLICT, "no free address left in 100.64.0.0/10");
    exec_given_name_base(r->hostname, base);
    rv = exec_unique_given_name(x, base, 0, given);
    if (rv == 0)
        rv = store_next_id(x->t, "node", id);
    if (rv != 0)
        return rv;
    exec_ipv4_of(offset, v4);
    exec_ipv6_of(offset, v6);
    n.id = *id;
    n.machine_key = r->machine_key;
    n.node_key = r->node_key;
    n.user_id = r->user_id;
    n.n_tags = r->n_tags;
    n.tags = r->tags;
    n.hostname = (char *)r->hostname;
    n.given_name = given;
    n.ipv4 = (ProtobufCBinaryData){.len = sizeof v4, .data = v4};
    n.ipv6 = (ProtobufCBinaryData){.len = sizeof v6, .data = v6};
    n.created_unix_ms = x->cmd->proposed_unix_ms;
    n.expiry_unix_ms = r->expiry_unix_ms;
    n.hostinfo = r->hostinfo;
    n.ephemeral = r->ephemeral;
    n.auth_key_id = r->auth_key_id;
    n.register_method = (char *)r->register_method;
    n.cap_version = r->cap_version;
    n.n_advertised_routes = r->n_routes;
    n.advertised_routes = r->routes;
    rv = store_node_put(x->t, &n);
    if (rv != 0)
        return rv;
    return exec_audit(x, action, "id=%llu name=%s user=%llu method=%s ipv4=%u.%u.%u.%u",
                      (unsigned long long)*id, given, (unsigned long long)r->user_id,
                      r->register_method, v4[0], v4[1], v4[2], v4[3]);
}

/* The machine already has a node: it logs in again (new node key, maybe a
 * new owner). Id, addresses, name and creation time stay. */
static int node_relogin(struct exec *x, Concord__Node *n, const struct exec_registration *r)
{
    Concord__Node m = *n;
    int rv;

    m.node_key = r->node_key;
    m.user_id = r->user_id;
    m.n_tags = r->n_tags;
    m.tags = r->tags;
    m.expiry_unix_ms = r->expiry_unix_ms;
    m.ephemeral = r->ephemeral;
    m.auth_key_id = r->auth_key_id;
    m.register_method = (char *)r->register_method;
    if (r->hostinfo.len > 0)
        m.hostinfo = r->hostinfo;
    if (r->cap_version != 0)
        m.cap_version = r->cap_version;
    if (r->n_routes > 0) {
        m.n_advertised_routes = r->n_routes;
        m.advertised_routes = r->routes;
    }
    rv = store_node_put(x->t, &m);
    if (rv != 0)
        return rv;
    return exec_audit(x, "node.relogin", "id=%llu name=%s user=%llu method=%s",
                      (unsigned long long)n->id, exec_str_or_empty(n->given_name),
                      (unsigned long long)r->user_id, r->register_method);
}

/* Validates and applies a registration; the result's id is the node's. */
static int node_register(struct exec *x, const struct exec_registration *r)
{
    Concord__Node *by_machine = NULL;
    Concord__Node *by_key = NULL;
    uint64_t id = 0;
    bool is_ok;
    int rv;

    if (!key_ok(&r->machine_key) || !key_ok(&r->node_key))
        return exec_fail(x, CLUSTER_RESULT_INVALID, "machine key and node key must be 32 bytes");
    rv = exec_check_tags(x, r->tags, r->n_tags, &is_ok);
    if (rv != 0 || !is_ok)
        return rv;
    rv = exec_check_owner(x, r->user_id, r->n_tags, &is_ok);
    if (rv != 0 || !is_ok)
        return rv;
    rv = store_node_get_by_machine_key(x->t, r->machine_key.data, &by_machine);
    if (rv != 0 && rv != STORE_NOTFOUND)
        return rv;
    rv = store_node_get_by_node_key(x->t, r->node_key.data, &by_key);
    if (rv != 0 && rv != STORE_NOTFOUND)
        goto out;
    if (by_key != NULL && (by_machine == NULL || by_key->id != by_machine->id)) {
        rv = exec_fail(x, CLUSTER_RESULT_CONFLICT, "the node key belongs to another machine");
        goto out;
    }
    if (by_machine != NULL) {
        id = by_machine->id;
        rv = node_relogin(x, by_machine, r);
    } else {
        rv = exec_node_create(x, r, "node.register", &id);
    }
    /* exec_node_create may have failed the command (no address left). */
    if (rv == 0 && x->result->code == CLUSTER_RESULT_OK)
        exec_succeed(x, id);
out:
    store_record_free(by_machine);
    store_record_free(by_key);
    return rv;
}

/* Checks the pre-auth key at the command's time; the caller marks it used
 * once the registration succeeded. Its owner and tags are authoritative:
 * they overwrite whatever the proposer sent. */
static int check_preauthkey(struct exec *x, struct exec_registration *r, Concord__PreAuthKey **out,
                            bool *is_ok)
{
    Concord__PreAuthKey *k = NULL;
    int64_t now = x->cmd->proposed_unix_ms;
    int rv;

    *is_ok = false;
    *out = NULL;
    rv = store_preauthkey_get(x->t, r->auth_key_id, &k);
    if (rv == STORE_NOTFOUND)
        return exec_fail(x, CLUSTER_RESULT_NOTFOUND, "pre-auth key not found");
    if (rv != 0)
        return rv;
    if (k->expiration_unix_ms != 0 && k->expiration_unix_ms <= now) {
        store_record_free(k);
        return exec_fail(x, CLUSTER_RESULT_PRECONDITION, "pre-auth key has expired");
    }
    if (!k->reusable && k->used) {
        store_record_free(k);
        return exec_fail(x, CLUSTER_RESULT_PRECONDITION, "pre-auth key has already been used");
    }
    r->user_id = k->user_id;
    r->tags = k->tags;
    r->n_tags = k->n_tags;
    r->ephemeral = r->ephemeral || k->ephemeral;
    *out = k;
    *is_ok = true;
    return 0;
}

int exec_register_node(struct exec *x)
{
    const Concord__RegisterNode *op = x->cmd->register_node;
    Concord__PreAuthKey *key = NULL;
    struct exec_registration r = {
        .machine_key = op->machine_key,
        .node_key = op->node_key,
        .user_id = op->user_id,
        .tags = op->tags,
        .n_tags = op->n_tags,
        .ephemeral = op->ephemeral,
        .hostname = exec_str_or_empty(op->hostname),
        .hostinfo = op->hostinfo,
        .auth_key_id = op->auth_key_id,
        .register_method = exec_str_or_empty(op->register_method),
        .expiry_unix_ms = op->expiry_unix_ms,
        .cap_version = op->cap_version,
        .routes = op->advertised_routes,
        .n_routes = op->n_advertised_routes,
    };
    bool is_ok = true;
    int rv = 0;

    if (r.auth_key_id != 0)
        rv = check_preauthkey(x, &r, &key, &is_ok);
    if (rv == 0 && is_ok)
        rv = node_register(x, &r);
    if (rv == 0 && key != NULL && x->result->code == CLUSTER_RESULT_OK) {
        key->used = true;
        rv = store_preauthkey_put(x->t, key);
    }
    store_record_free(key);
    return rv;
}

static bool registration_is_expired(const struct exec *x, const Concord__PendingRegistration *p)
{
    return p->expires_unix_ms != 0 && p->expires_unix_ms <= x->cmd->proposed_unix_ms;
}

struct expired_list {
    const struct exec *x;
    char **ids;
    size_t n;
    size_t cap;
};

static int collect_expired(const ProtobufCMessage *record, void *arg)
{
    const Concord__PendingRegistration *p = (const Concord__PendingRegistration *)record;
    struct expired_list *l = arg;
    char *copy;

    if (!registration_is_expired(l->x, p))
        return 0;
    if (l->n == l->cap) {
        size_t cap = l->cap == 0 ? 8 : l->cap * 2;
        char **bigger = realloc(l->ids, cap * sizeof *bigger);

        if (bigger == NULL)
            return STORE_NOMEM;
        l->ids = bigger;
        l->cap = cap;
    }
    copy = strdup(p->auth_id);
    if (copy == NULL)
        return STORE_NOMEM;
    l->ids[l->n++] = copy;
    return 0;
}

/* Pending registrations live until approved or expired; each new one sweeps
 * the expired, so the table stays bounded by the rate of new ones. */
static int sweep_expired_registrations(struct exec *x)
{
    struct expired_list l = {.x = x};
    int rv = store_registration_each(x->t, collect_expired, &l);

    for (size_t i = 0; i < l.n; i++) {
        if (rv == 0)
            rv = store_registration_delete(x->t, l.ids[i]);
        free(l.ids[i]);
    }
    free(l.ids);
    return rv;
}

int exec_add_registration(struct exec *x)
{
    const Concord__PendingRegistration *p = x->cmd->add_registration->registration;
    int rv;

    if (p == NULL || exec_str_or_empty(p->auth_id)[0] == '\0' || !key_ok(&p->machine_key) ||
        !key_ok(&p->node_key))
        return exec_fail(x, CLUSTER_RESULT_INVALID,
                         "a registration needs an auth id, a machine key and a node key");
    rv = sweep_expired_registrations(x);
    if (rv == 0)
        rv = store_registration_put(x->t, p);
    if (rv == STORE_INVALID)
        return exec_fail(x, CLUSTER_RESULT_INVALID, "invalid registration");
    if (rv == 0)
        exec_succeed(x, 0);
    return rv;
}

int exec_approve_registration(struct exec *x)
{
    const Concord__ApproveRegistration *op = x->cmd->approve_registration;
    const char *auth_id = exec_str_or_empty(op->auth_id);
    Concord__PendingRegistration *p = NULL;
    struct exec_registration r = {0};
    int rv = store_registration_get(x->t, auth_id, &p);

    if (rv == STORE_NOTFOUND)
        return exec_fail(x, CLUSTER_RESULT_NOTFOUND, "no pending registration with id %s", auth_id);
    if (rv != 0)
        return rv;
    if (registration_is_expired(x, p)) {
        rv = exec_fail(x, CLUSTER_RESULT_PRECONDITION, "registration %s has expired", auth_id);
        goto out;
    }
    if (op->user_id == 0) {
        rv = exec_fail(x, CLUSTER_RESULT_INVALID, "an approval needs a user");
        goto out;
    }
    r.machine_key = p->machine_key;
    r.node_key = p->node_key;
    r.user_id = op->user_id;
    r.ephemeral = p->ephemeral;
    r.hostname = exec_str_or_empty(p->hostname);
    r.hostinfo = p->hostinfo;
    r.register_method = "cli";
    r.cap_version = p->cap_version;
    r.routes = p->advertised_routes;
    r.n_routes = p->n_advertised_routes;
    rv = node_register(x, &r);
    if (rv == 0 && x->result->code == CLUSTER_RESULT_OK)
        rv = store_registration_delete(x->t, auth_id);
out:
    store_record_free(p);
    return rv;
}

int exec_delete_registration(struct exec *x)
{
    const char *auth_id = exec_str_or_empty(x->cmd->delete_registration->auth_id);
    int rv = store_registration_delete(x->t, auth_id);

    if (rv == STORE_NOTFOUND)
        return exec_fail(x, CLUSTER_RESULT_NOTFOUND, "no pending registration with id %s", auth_id);
    if (rv == 0)
        exec_succeed(x, 0);
    return rv;
}

/* A new hostname renames the node (tailscale set --hostname), keeping the
 * name unique; an unchanged one keeps whatever name it has, including an
 * operator's rename. */
static int apply_hostname(struct exec *x, Concord__Node *n, const char *hostname,
                          char given[GIVEN_NAME_MAX + 1])
{
    char base[GIVEN_NAME_MAX + 1];
    bool is_taken;
    int rv;

    if (hostname[0] == '\0' || strcmp(hostname, exec_str_or_empty(n->hostname)) == 0)
        return 0;
    n->hostname = (char *)hostname;
    exec_given_name_base(hostname, base);
    rv = exec_given_name_is_taken(x, base, n->id, &is_taken);
    if (rv != 0)
        return rv;
    if (is_taken) {
        rv = exec_unique_given_name(x, base, n->id, given);
        if (rv != 0)
            return rv;
    } else {
        snprintf(given, GIVEN_NAME_MAX + 1, "%s", base);
    }
    n->given_name = given;
    return 0;
}

static int update_one(struct exec *x, const Concord__NodeUpdate *u)
{
    Concord__Node *n = NULL;
    Concord__Node m;
    char given[GIVEN_NAME_MAX + 1];
    int rv = store_node_get(x->t, u->node_id, &n);

    /* A node deleted or re-keyed since the report was made: drop it. */
    if (rv == STORE_NOTFOUND)
        return 0;
    if (rv != 0)
        return rv;
    if (u->node_key.len != n->node_key.len ||
        memcmp(u->node_key.data, n->node_key.data, n->node_key.len) != 0)
        goto out;
    m = *n;
    if (key_ok(&u->disco_key))
        m.disco_key = u->disco_key;
    if (u->has_endpoints) {
        m.n_endpoints = u->n_endpoints;
        m.endpoints = u->endpoints;
    }
    if (u->hostinfo.len > 0)
        m.hostinfo = u->hostinfo;
    if (u->has_home_derp)
        m.home_derp = u->home_derp;
    if (u->cap_version != 0)
        m.cap_version = u->cap_version;
    if (u->has_routes) {
        m.n_advertised_routes = u->n_advertised_routes;
        m.advertised_routes = u->advertised_routes;
    }
    rv = apply_hostname(x, &m, exec_str_or_empty(u->hostname), given);
    if (rv == 0)
        rv = store_node_put(x->t, &m);
out:
    store_record_free(n);
    return rv;
}

int exec_update_nodes(struct exec *x)
{
    const Concord__UpdateNodes *op = x->cmd->update_nodes;
    int rv = 0;

    for (size_t i = 0; rv == 0 && i < op->n_updates; i++)
        rv = update_one(x, op->updates[i]);
    if (rv == 0)
        exec_succeed(x, 0);
    return rv;
}

int exec_logout_node(struct exec *x)
{
    const Concord__LogoutNode *op = x->cmd->logout_node;
    Concord__Node *n = NULL;
    int rv = exec_get_node(x, op->id, &n);

    if (rv != 0 || n == NULL)
        return rv;
    if (op->node_key.len != n->node_key.len ||
        memcmp(op->node_key.data, n->node_key.data, n->node_key.len) != 0) {
        rv = exec_fail(x, CLUSTER_RESULT_PRECONDITION, "the node has another key by now");
        goto out;
    }
    if (n->ephemeral) {
        rv = exec_delete_node_record(x, n->id);
    } else {
        n->expiry_unix_ms = x->cmd->proposed_unix_ms;
        rv = store_node_put(x->t, n);
    }
    if (rv == 0)
        rv = exec_audit(x, "node.logout", "id=%llu name=%s deleted=%s", (unsigned long long)n->id,
                        exec_str_or_empty(n->given_name), n->ephemeral ? "true" : "false");
    if (rv == 0)
        exec_succeed(x, n->id);
out:
    store_record_free(n);
    return rv;
}

int exec_open_session(struct exec *x)
{
    const Concord__Session *s = x->cmd->open_session->session;
    Concord__Session stored;
    Concord__Node *n = NULL;
    int rv;

    if (s == NULL || s->session_id == 0)
        return exec_fail(x, CLUSTER_RESULT_INVALID, "a session needs an id");
    rv = exec_get_node(x, s->node_id, &n);
    if (rv != 0 || n == NULL)
        return rv;
    store_record_free(n);
    /* Its index orders sessions by age the same way on every replica,
     * whatever the proposers' clocks say (primary-route election). */
    stored = *s;
    stored.opened_index = x->index;
    rv = store_session_put(x->t, &stored);
    if (rv == 0)
        exec_succeed(x, s->node_id);
    return rv;
}

int exec_close_session(struct exec *x)
{
    const Concord__CloseSession *op = x->cmd->close_session;
    Concord__Node *n = NULL;
    int rv = store_session_delete(x->t, op->node_id, op->session_id);

    if (rv == STORE_NOTFOUND)
        return exec_fail(x, CLUSTER_RESULT_NOTFOUND, "no such session");
    if (rv != 0)
        return rv;
    /* Last seen is when its last session ended (shown for offline nodes). */
    rv = store_node_get(x->t, op->node_id, &n);
    if (rv == 0) {
        n->last_seen_unix_ms = x->cmd->proposed_unix_ms;
        rv = store_node_put(x->t, n);
        store_record_free(n);
    } else if (rv == STORE_NOTFOUND) {
        rv = 0;
    }
    if (rv == 0)
        exec_succeed(x, op->node_id);
    return rv;
}

int exec_set_control_settings(struct exec *x)
{
    const Concord__ControlSettings *c = x->cmd->set_control_settings->settings;
    Concord__ControlSettings *cur = NULL;
    int rv;

    if (c == NULL || !key_ok(&c->noise_public_key))
        return exec_fail(x, CLUSTER_RESULT_INVALID, "the Noise public key must be 32 bytes");
    rv = store_control_get(x->t, &cur);
    if (rv == 0) {
        bool is_same = cur->noise_public_key.len == KEY_BYTES &&
                       memcmp(cur->noise_public_key.data, c->noise_public_key.data, KEY_BYTES) == 0;

        store_record_free(cur);
        if (!is_same)
            return exec_fail(x, CLUSTER_RESULT_PRECONDITION,
                             "the cluster already uses another Noise key");
        exec_succeed(x, 0);
        return 0;
    }
    if (rv != STORE_NOTFOUND)
        return rv;
    rv = store_control_put(x->t, c);
    if (rv == 0)
        rv = exec_audit(x, "control.settings", "noise key recorded");
    if (rv == 0)
        exec_succeed(x, 0);
    return rv;
}

int exec_set_replica_derp(struct exec *x)
{
    const Concord__SetReplicaDerp *op = x->cmd->set_replica_derp;
    const Concord__DerpNode *d = op->derp;
    Concord__Replica *r = NULL;
    Concord__DerpNode *old;
    int rv = store_replica_get(x->t, op->id, &r);

    if (rv == STORE_NOTFOUND)
        return exec_fail(x, CLUSTER_RESULT_NOTFOUND, "replica %llu not found",
                         (unsigned long long)op->id);
    if (rv != 0)
        return rv;
    if (d != NULL && (exec_str_or_empty(d->host_name)[0] == '\0' || d->derp_port == 0 ||
                      d->derp_port > 65535 || d->stun_port < -1 || d->stun_port > 65535)) {
        store_record_free(r);
        return exec_fail(x, CLUSTER_RESULT_INVALID, "a DERP node needs a host name and ports");
    }
    old = r->derp; /* the record owns it: put it back before freeing */
    r->derp = (Concord__DerpNode *)d;
    rv = store_replica_put(x->t, r);
    r->derp = old;
    if (rv == 0)
        rv = exec_audit(x, "replica.derp", "id=%llu derp=%s:%u", (unsigned long long)op->id,
                        d != NULL ? d->host_name : "none", d != NULL ? d->derp_port : 0);
    if (rv == 0)
        exec_succeed(x, op->id);
    store_record_free(r);
    return rv;
}
