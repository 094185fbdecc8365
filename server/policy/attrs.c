/* server/policy/attrs.c: a node's capability map (tailcfg.Node.CapMap) from
 * the policy's nodeAttrs.
 *
 * The defaults are the capabilities Tailscale's hosted server gives every
 * node that concord honours too: Taildrop, Tailscale SSH, and the SSH
 * server's current behaviour (ssh-behavior-v1; ssh-env-vars, without which
 * the client ignores an SSH rule's acceptEnv). Capabilities about Tailscale's
 * own service are left out: roles (is-admin, is-owner), tailnet lock, the
 * tailnet's display name, auto-update defaults (a tailnet setting, not the
 * policy's), app connector route storage, magicsock experiments. */
#include "server/policy/engine_internal.h"

#include <string.h>

#define CAP_SUGGEST_EXIT_NODE "suggest-exit-node"

static const char *const default_caps[] = {
    "https://tailscale.com/cap/file-sharing",
    "https://tailscale.com/cap/ssh",
    "ssh-behavior-v1",
    "ssh-env-vars",
};

/* A capability without values is sent as null, as Tailscale does. */
static int cap_set(json_t *caps, const char *name)
{
    if (json_object_get(caps, name) != NULL)
        return 0;
    return json_object_set_new(caps, name, json_null());
}

/* app: {"capability": [values...]}: values of every matching entry are
 * concatenated under their capability. */
static int cap_add_values(json_t *caps, const char *name, json_t *values)
{
    json_t *have = json_object_get(caps, name);

    if (!json_is_array(have)) {
        have = json_array();
        if (have == NULL || json_object_set_new(caps, name, have) != 0)
            return POLICY_ENOMEM;
    }
    if (json_is_array(values))
        return json_array_extend(have, values) == 0 ? 0 : POLICY_ENOMEM;
    return json_array_append(have, values) == 0 ? 0 : POLICY_ENOMEM;
}

static bool attr_targets(const struct policy *p, const struct policy_node_attr *a,
                         const struct policy_enode *n)
{
    for (size_t i = 0; i < a->n_target; i++)
        if (policy_alias_matches_node(p, &a->target[i], n))
            return true;
    return false;
}

/* The funnel attribute comes with the ports Funnel listens on and the
 * client's warning about HTTPS being off, as Tailscale sends them. */
static const char *const funnel_caps[] = {
    "https://tailscale.com/cap/funnel-ports?ports=443,8443,10000",
    "https://tailscale.com/cap/warn-funnel-no-https",
};

static int attr_apply(json_t *caps, const struct policy_node_attr *a)
{
    const char *name;
    json_t *values;

    for (size_t i = 0; i < a->n_attr; i++) {
        if (cap_set(caps, a->attr[i]) != 0)
            return POLICY_ENOMEM;
        for (size_t j = 0; strcmp(a->attr[i], "funnel") == 0 && j < 2; j++)
            if (cap_set(caps, funnel_caps[j]) != 0)
                return POLICY_ENOMEM;
    }
    json_object_foreach(a->app, name,
                        values) if (cap_add_values(caps, name, values) != 0) return POLICY_ENOMEM;
    return 0;
}

json_t *policy_capmap_compile(const struct policy *p, const struct policy_engine *e,
                              const struct policy_enode *n)
{
    json_t *caps = json_object();

    (void)e;
    if (caps == NULL)
        return NULL;
    for (size_t i = 0; i < sizeof default_caps / sizeof default_caps[0]; i++)
        if (cap_set(caps, default_caps[i]) != 0)
            goto err;
    if (p == NULL)
        return caps;
    /* The top-level randomizeClientPort reaches clients as this attribute. */
    if (p->randomize_client_port && cap_set(caps, "randomize-client-port") != 0)
        goto err;
    for (size_t i = 0; i < p->n_node_attrs; i++)
        if (attr_targets(p, &p->node_attrs[i], n) && attr_apply(caps, &p->node_attrs[i]) != 0)
            goto err;
    return caps;

err:
    json_decref(caps);
    return NULL;
}

static bool prefix_is_exit(const struct policy_prefix *r)
{
    return r->bits == 0;
}

static bool prefix_listed(const struct policy_prefix *r, const struct policy_prefix *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (list[i].family == r->family && list[i].bits == r->bits &&
            memcmp(list[i].addr, r->addr, 16) == 0)
            return true;
    return false;
}

/* peer advertises an exit route that is approved, by an operator or by
 * autoApprovers.exitNode. */
static bool node_is_exit(const struct policy *p, const struct policy_enode *peer)
{
    bool auto_approved = false;

    for (size_t i = 0; p != NULL && i < p->n_exit_node_approvers && !auto_approved; i++)
        auto_approved = policy_alias_matches_node(p, &p->exit_node_approvers[i], peer);
    for (size_t i = 0; i < peer->n.n_advertised_routes; i++) {
        const struct policy_prefix *r = &peer->n.advertised_routes[i];

        if (prefix_is_exit(r) &&
            (auto_approved || prefix_listed(r, peer->n.approved_routes, peer->n.n_approved_routes)))
            return true;
    }
    return false;
}

json_t *policy_peer_capmap_compile(const struct policy *p, const struct policy_engine *e,
                                   const struct policy_enode *peer)
{
    json_t *self;
    json_t *value;
    json_t *out = NULL;

    if (p == NULL || !node_is_exit(p, peer))
        return NULL;
    self = policy_capmap_compile(p, e, peer);
    value = json_object_get(self, CAP_SUGGEST_EXIT_NODE);
    /* Clients read suggest-exit-node from the peer's view of the exit node;
     * Tailscale shows it there only once the exit routes are approved. */
    if (value != NULL)
        out = json_pack("{s:O}", CAP_SUGGEST_EXIT_NODE, value);
    json_decref(self);
    return out;
}
