/* server/control/policy.c: this replica's policy engine, kept in step with
 * the applied state. The engine holds every user and node (only the fields
 * the policy looks at) and the applied policy; a delta round brings it up to
 * date before any session is served (ctl_policy_sync), and says whether what
 * the policy gives any node may have changed, so that the round re-checks
 * every session's peers, packet filter and SSH policy once.
 *
 * A node is handed to the engine again only when a field the policy reads
 * changed (user, tags, addresses, routes, and presence for a node that serves
 * routes): endpoint and Hostinfo churn, the common case by far, costs a hash.
 *
 * No policy applied yet (version 0): Tailscale's default, everyone reaches
 * everyone. An applied policy this binary cannot parse (written by a newer
 * version during a rolling upgrade) is enforced as deny-all and logged: a
 * replica must never be more permissive than the policy it was given. */
#include "server/control/control_internal.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "server/log.h"

#define DENY_ALL_POLICY "{}"
#define MAX_ROUTES      256 /* per node; more are ignored by the policy, with a log line */

/* ---- one node, as the engine sees it ---- */

struct node_input {
    struct policy_node pn;
    const char *tags[64];
    struct policy_prefix advertised[MAX_ROUTES];
    struct policy_prefix approved[MAX_ROUTES];
};

static size_t prefixes_parse(char **texts, size_t n, struct policy_prefix *out, uint64_t id)
{
    size_t k = 0;

    for (size_t i = 0; i < n && k < MAX_ROUTES; i++) {
        if (policy_prefix_parse(texts[i], &out[k]) == 0)
            k++;
        else
            LOG_WARN("control: node %" PRIu64 ": route \"%s\" is not a prefix: ignored", id,
                     texts[i]);
    }
    if (n > MAX_ROUTES)
        LOG_WARN("control: node %" PRIu64 " has %zu routes; the policy uses the first %d", id, n,
                 MAX_ROUTES);
    return k;
}

static void node_input_of(const Concord__Node *n, uint64_t online_since, struct node_input *in)
{
    struct policy_node *pn = &in->pn;
    size_t n_tags = n->n_tags < 64 ? n->n_tags : 64;

    memset(pn, 0, sizeof *pn);
    pn->id = n->id;
    pn->hostname = n->hostname;
    pn->user_id = n->user_id;
    for (size_t i = 0; i < n_tags; i++)
        in->tags[i] = n->tags[i];
    pn->tags = in->tags;
    pn->n_tags = n_tags;
    pn->has_ipv4 = n->ipv4.len == 4;
    if (pn->has_ipv4)
        memcpy(pn->ipv4, n->ipv4.data, 4);
    pn->has_ipv6 = n->ipv6.len == 16;
    if (pn->has_ipv6)
        memcpy(pn->ipv6, n->ipv6.data, 16);
    pn->advertised_routes = in->advertised;
    pn->n_advertised_routes =
        prefixes_parse(n->advertised_routes, n->n_advertised_routes, in->advertised, n->id);
    pn->approved_routes = in->approved;
    pn->n_approved_routes =
        prefixes_parse(n->approved_routes, n->n_approved_routes, in->approved, n->id);
    /* Presence matters to the policy only for routers (primary election). */
    if (pn->n_approved_routes > 0) {
        pn->online = online_since != 0;
        pn->online_since = online_since;
    }
}

static void hash_str(crypto_generichash_state *st, const char *s)
{
    size_t len = s != NULL ? strlen(s) + 1 : 0;

    crypto_generichash_update(st, (const unsigned char *)&len, sizeof len);
    if (len > 0)
        crypto_generichash_update(st, (const unsigned char *)s, len);
}

/* A hash of everything in the node that the engine reads; never 0. */
static uint64_t node_input_hash(const struct node_input *in)
{
    const struct policy_node *pn = &in->pn;
    crypto_generichash_state st;
    uint64_t h;

    crypto_generichash_init(&st, NULL, 0, sizeof h);
    crypto_generichash_update(&st, (const unsigned char *)&pn->user_id, sizeof pn->user_id);
    for (size_t i = 0; i < pn->n_tags; i++)
        hash_str(&st, pn->tags[i]);
    hash_str(&st, NULL);
    hash_str(&st, pn->hostname);
    crypto_generichash_update(&st, (const unsigned char *)&pn->has_ipv4, 1);
    crypto_generichash_update(&st, pn->ipv4, 4);
    crypto_generichash_update(&st, (const unsigned char *)&pn->has_ipv6, 1);
    crypto_generichash_update(&st, pn->ipv6, 16);
    crypto_generichash_update(&st, (const unsigned char *)&pn->n_advertised_routes,
                              sizeof pn->n_advertised_routes);
    crypto_generichash_update(&st, (const unsigned char *)pn->advertised_routes,
                              pn->n_advertised_routes * sizeof *pn->advertised_routes);
    crypto_generichash_update(&st, (const unsigned char *)&pn->n_approved_routes,
                              sizeof pn->n_approved_routes);
    crypto_generichash_update(&st, (const unsigned char *)pn->approved_routes,
                              pn->n_approved_routes * sizeof *pn->approved_routes);
    crypto_generichash_update(&st, (const unsigned char *)&pn->online, 1);
    crypto_generichash_update(&st, (const unsigned char *)&pn->online_since,
                              sizeof pn->online_since);
    crypto_generichash_final(&st, (unsigned char *)&h, sizeof h);
    return h != 0 ? h : 1;
}

/* Hands node id to the engine if what it reads changed (or removes it);
 * true when it did. -1 on errors other than absence. */
static int node_sync(struct control *c, struct store_txn *t, uint64_t id)
{
    struct node_input *in;
    Concord__Node *n = NULL;
    uint64_t old = 0;
    uint64_t h;
    int rv = store_node_get(t, id, &n);

    if (rv == STORE_NOTFOUND) {
        if (!ctl_idmap_get(&c->policy_nodes, id, &old))
            return 0;
        ctl_idmap_del(&c->policy_nodes, id);
        policy_engine_node_remove(c->engine, id);
        return 1;
    }
    if (rv != 0)
        return -1;
    in = malloc(sizeof *in);
    if (in == NULL) {
        store_record_free(n);
        return -1;
    }
    node_input_of(n, ctl_node_online_since(t, id), in);
    h = node_input_hash(in);
    rv = 0;
    if (!ctl_idmap_get(&c->policy_nodes, id, &old) || old != h) {
        rv = policy_engine_node_put(c->engine, &in->pn) == 0 &&
                     ctl_idmap_put(&c->policy_nodes, id, h) == 0
                 ? 1
                 : -1;
    }
    free(in);
    store_record_free(n);
    return rv;
}

/* ---- users ---- */

static int user_sync(struct control *c, struct store_txn *t, uint64_t id)
{
    Concord__User *u = NULL;
    int rv = store_user_get(t, id, &u);

    if (rv == STORE_NOTFOUND) {
        policy_engine_user_remove(c->engine, id);
        return 0;
    }
    if (rv != 0)
        return -1;
    rv = policy_engine_user_put(c->engine, &(struct policy_user){
                                               .id = u->id,
                                               .name = u->name,
                                               .email = u->email[0] != '\0' ? u->email : NULL,
                                           });
    store_record_free(u);
    return rv == 0 ? 0 : -1;
}

/* ---- the policy document ---- */

/* Parses the applied policy into c->policy (NULL: none applied) and hands it
 * to the engine. */
static int policy_load(struct control *c, struct store_txn *t)
{
    Concord__Policy *p = NULL;
    struct policy *parsed = NULL;
    struct policy_error err;
    int rv = store_policy_get(t, &p);

    if (rv == STORE_NOTFOUND || (rv == 0 && p->version == 0)) {
        store_record_free(p);
        policy_engine_set_policy(c->engine, NULL);
        policy_free(c->policy);
        c->policy = NULL;
        c->policy_version = 0;
        return 0;
    }
    if (rv != 0)
        return -1;
    if (p->version == c->policy_version && c->policy != NULL) {
        store_record_free(p);
        return 0;
    }
    rv = policy_parse(p->text, strlen(p->text), &parsed, &err);
    if (rv == POLICY_EINVAL) {
        LOG_ERROR("control: the applied policy (version %" PRIu64 ") does not parse here: line %u, "
                  "column %u: %s; enforcing deny-all until a policy this version understands is "
                  "set",
                  p->version, err.line, err.col, err.message);
        rv = policy_parse(DENY_ALL_POLICY, strlen(DENY_ALL_POLICY), &parsed, &err);
    }
    if (rv != 0) {
        store_record_free(p);
        return -1;
    }
    policy_engine_set_policy(c->engine, parsed);
    policy_free(c->policy);
    c->policy = parsed;
    c->policy_version = p->version;
    LOG_INFO("control: enforcing policy version %" PRIu64, p->version);
    store_record_free(p);
    return 0;
}

/* ---- loading and syncing ---- */

struct load_walk {
    struct control *c;
    struct store_txn *t;
    int rv;
};

static int load_user(const ProtobufCMessage *record, void *arg)
{
    const Concord__User *u = (const Concord__User *)record;
    struct load_walk *lw = arg;

    lw->rv = user_sync(lw->c, lw->t, u->id);
    return lw->rv != 0;
}

static int load_node(const ProtobufCMessage *record, void *arg)
{
    const Concord__Node *n = (const Concord__Node *)record;
    struct load_walk *lw = arg;

    lw->rv = node_sync(lw->c, lw->t, n->id) < 0 ? -1 : 0;
    return lw->rv != 0;
}

/* Starts over from the whole state: at start and after a restore. */
static int reload(struct control *c, struct store_txn *t)
{
    struct load_walk lw = {.c = c, .t = t};
    struct policy_engine *e = policy_engine_new(NULL);

    if (e == NULL)
        return -1;
    policy_engine_free(c->engine);
    c->engine = e;
    policy_free(c->policy);
    c->policy = NULL;
    c->policy_version = 0;
    ctl_idmap_free(&c->policy_nodes);
    if (policy_load(c, t) != 0 || store_user_each(t, load_user, &lw) != 0 || lw.rv != 0 ||
        store_node_each(t, load_node, &lw) != 0 || lw.rv != 0)
        return -1;
    return 0;
}

/* ---- checking a policy before it is proposed ---- */

struct check_walk {
    struct policy_engine *e;
    int rv;
};

static int check_add_user(const ProtobufCMessage *record, void *arg)
{
    const Concord__User *u = (const Concord__User *)record;
    struct check_walk *cw = arg;

    cw->rv = policy_engine_user_put(cw->e, &(struct policy_user){
                                               .id = u->id,
                                               .name = u->name,
                                               .email = u->email[0] != '\0' ? u->email : NULL,
                                           });
    return cw->rv != 0;
}

static int check_add_node(const ProtobufCMessage *record, void *arg)
{
    const Concord__Node *n = (const Concord__Node *)record;
    struct check_walk *cw = arg;
    struct node_input *in = malloc(sizeof *in);

    if (in == NULL) {
        cw->rv = POLICY_ENOMEM;
        return 1;
    }
    /* Presence does not matter to a check: tests see every router online,
     * as Tailscale evaluates them. */
    node_input_of(n, 1, in);
    cw->rv = policy_engine_node_put(cw->e, &in->pn);
    free(in);
    return cw->rv != 0;
}

int control_policy_check(struct store_txn *t, const char *text, size_t len,
                         struct policy_error *err)
{
    struct check_walk cw = {.e = policy_engine_new(NULL)};
    struct policy *p = NULL;
    int rv;

    memset(err, 0, sizeof *err);
    if (cw.e == NULL)
        return POLICY_ENOMEM;
    rv = policy_parse(text, len, &p, err);
    if (rv == 0 && (store_user_each(t, check_add_user, &cw) != 0 ||
                    store_node_each(t, check_add_node, &cw) != 0))
        rv = cw.rv != 0 ? cw.rv : POLICY_ENOMEM;
    if (rv == 0)
        rv = policy_engine_check(cw.e, p, err);
    policy_engine_free(cw.e);
    policy_free(p);
    return rv;
}

int ctl_policy_init(struct control *c)
{
    struct store_txn *t;
    int rv = store_txn_begin(c->opt.store, false, &t);

    if (rv != 0)
        return -1;
    rv = reload(c, t);
    store_txn_abort(t);
    return rv;
}

void ctl_policy_free(struct control *c)
{
    policy_engine_free(c->engine);
    c->engine = NULL;
    policy_free(c->policy);
    c->policy = NULL;
    ctl_idmap_free(&c->policy_nodes);
}

void ctl_policy_note(struct control *c, enum ctl_policy_change what, uint64_t id)
{
    switch (what) {
    case CTL_POLICY_DOCUMENT:
        c->needs_policy_reload = true;
        break;
    case CTL_POLICY_USER:
        if (ctl_idmap_put(&c->policy_users, id, 1) != 0)
            c->needs_engine_reload = true;
        break;
    case CTL_POLICY_EVERYTHING:
        c->needs_engine_reload = true;
        break;
    }
}

void ctl_policy_sync(struct control *c, struct store_txn *t)
{
    if (c->needs_engine_reload) {
        c->needs_engine_reload = false;
        c->needs_policy_reload = false;
        c->is_policy_dirty = true;
        c->needs_auto_approve_all = true;
        ctl_idmap_free(&c->policy_users);
        if (reload(c, t) != 0)
            LOG_ERROR("control: cannot load the state into the policy engine: out of memory");
        return;
    }
    if (c->needs_policy_reload) {
        c->needs_policy_reload = false;
        c->is_policy_dirty = true;
        c->needs_auto_approve_all = true;
        if (policy_load(c, t) != 0)
            LOG_ERROR("control: cannot load the applied policy: out of memory");
    }
    for (size_t i = 0; i < c->policy_users.cap; i++) {
        if (c->policy_users.keys[i] == 0)
            continue;
        if (user_sync(c, t, c->policy_users.keys[i]) != 0)
            LOG_ERROR("control: cannot update the policy engine: out of memory");
        c->is_policy_dirty = true;
    }
    ctl_idmap_free(&c->policy_users);
    /* Nodes already in step cost a hash: syncing twice in a round is cheap. */
    for (size_t i = 0; i < c->changed_nodes.cap; i++) {
        int rv;

        if (c->changed_nodes.keys[i] == 0)
            continue;
        rv = node_sync(c, t, c->changed_nodes.keys[i]);
        if (rv < 0)
            LOG_ERROR("control: cannot update the policy engine for node %" PRIu64,
                      c->changed_nodes.keys[i]);
        if (rv != 0)
            c->is_policy_dirty = true;
    }
}

/* ---- autoApprovers ---- */

static bool strv_has(char *const *v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i], s) == 0)
            return true;
    return false;
}

static void on_auto_approved(void *arg, int status, const Concord__CommandResult *result)
{
    (void)arg;
    if (status != CLUSTER_OK)
        LOG_WARN("control: auto-approving routes failed: %s", cluster_strerror(status));
    else if (result->code != CLUSTER_RESULT_OK)
        LOG_WARN("control: auto-approving routes failed: %s", result->message);
    else
        LOG_INFO("control: routes of node %" PRIu64 " approved by the policy's autoApprovers",
                 result->id);
}

/* Proposes n's approved routes plus the advertised ones the policy
 * approves, when there are any new. Approvals of routes n no longer
 * advertises are dropped then: SetNodeRoutes takes advertised routes only. */
static int auto_approve_node(const ProtobufCMessage *record, void *arg)
{
    const Concord__Node *n = (const Concord__Node *)record;
    struct control *c = arg;
    Concord__Command *cmd;
    Concord__SetNodeRoutes *op;
    size_t n_new = 0;

    for (size_t i = 0; i < n->n_advertised_routes; i++) {
        struct policy_prefix p;

        if (!strv_has(n->approved_routes, n->n_approved_routes, n->advertised_routes[i]) &&
            policy_prefix_parse(n->advertised_routes[i], &p) == 0 &&
            policy_engine_auto_approves(c->engine, n->id, &p))
            n_new++;
    }
    if (n_new == 0)
        return 0;
    cmd = ctl_command_new(c);
    op = calloc(1, sizeof *op);
    if (cmd == NULL || op == NULL)
        goto err;
    concord__set_node_routes__init(op);
    cmd->op_case = CONCORD__COMMAND__OP_SET_NODE_ROUTES;
    cmd->set_node_routes = op;
    op->id = n->id;
    op->routes = calloc(n->n_advertised_routes, sizeof *op->routes);
    if (op->routes == NULL)
        goto err;
    for (size_t i = 0; i < n->n_advertised_routes; i++) {
        const char *r = n->advertised_routes[i];
        struct policy_prefix p;

        if (!strv_has(n->approved_routes, n->n_approved_routes, r) &&
            (policy_prefix_parse(r, &p) != 0 || !policy_engine_auto_approves(c->engine, n->id, &p)))
            continue;
        if ((op->routes[op->n_routes++] = strdup(r)) == NULL)
            goto err;
    }
    if (cluster_submit(c->opt.cluster, cmd, on_auto_approved, NULL) != 0)
        goto err;
    return 0;

err:
    if (cmd != NULL)
        concord__command__free_unpacked(cmd, NULL);
    else
        free(op);
    LOG_ERROR("control: cannot propose auto-approved routes for node %" PRIu64, n->id);
    return 0;
}

void ctl_policy_auto_approve(struct control *c, struct store_txn *t)
{
    struct cluster_status st;

    cluster_status_get(c->opt.cluster, &st);
    /* A follower keeps the sweep owed: it runs it if it becomes leader. */
    if (c->policy == NULL || st.role != CLUSTER_ROLE_LEADER || c->is_closing)
        return;
    if (c->needs_auto_approve_all) {
        c->needs_auto_approve_all = false;
        store_node_each(t, auto_approve_node, c);
        return;
    }
    for (size_t i = 0; i < c->changed_nodes.cap; i++) {
        Concord__Node *n = NULL;

        if (c->changed_nodes.keys[i] == 0 || store_node_get(t, c->changed_nodes.keys[i], &n) != 0)
            continue;
        auto_approve_node(&n->base, c);
        store_record_free(n);
    }
}

/* ---- answers, rendered ---- */

static char *render(json_t *v)
{
    char *text = v != NULL ? json_dumps(v, JSON_COMPACT) : NULL;

    json_decref(v);
    return text;
}

char *ctl_policy_filter_json(struct control *c, uint64_t node_id)
{
    return render(policy_engine_filter(c->engine, node_id));
}

char *ctl_policy_ssh_json(struct control *c, uint64_t node_id)
{
    return render(policy_engine_ssh(c->engine, node_id));
}

char *ctl_policy_capmap_json(struct control *c, uint64_t node_id)
{
    return render(policy_engine_capmap(c->engine, node_id));
}

char *ctl_policy_peer_capmap_json(struct control *c, uint64_t node_id)
{
    return render(policy_engine_peer_capmap(c->engine, node_id));
}

bool ctl_policy_visible(struct control *c, uint64_t viewer_id, uint64_t peer_id)
{
    return policy_engine_visible(c->engine, viewer_id, peer_id);
}

int ctl_policy_routes_json(struct control *c, uint64_t viewer_id, const Concord__Node *n,
                           char **allowed_ips, char **primary_routes)
{
    *allowed_ips = NULL;
    *primary_routes = NULL;
    /* Without routes AllowedIPs are the addresses: the encoder's default. */
    if (n->n_approved_routes == 0)
        return 0;
    *allowed_ips = render(policy_engine_allowed_ips(c->engine, viewer_id, n->id));
    *primary_routes = render(policy_engine_primary_routes(c->engine, viewer_id, n->id));
    if (*allowed_ips == NULL || *primary_routes == NULL) {
        free(*allowed_ips);
        free(*primary_routes);
        *allowed_ips = *primary_routes = NULL;
        return -1;
    }
    if (strcmp(*primary_routes, "[]") == 0) {
        free(*primary_routes);
        *primary_routes = NULL; /* omitted, as Tailscale does */
    }
    return 0;
}
