/* server/policy/routes.c: subnet routes and exit nodes. The pure primary
 * election, the AllowedIPs and PrimaryRoutes a peer carries (each viewer
 * sees only the routes its rules let it use, as Tailscale does) and the
 * policy's autoApprovers. */
#include "server/policy/engine_private.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int routers_collect(const struct policy_engine *e, struct policy_router **out, size_t *n_out)
{
    struct policy_router *routers = calloc(e->n_nodes > 0 ? e->n_nodes : 1, sizeof *routers);
    size_t n = 0;

    if (routers == NULL)
        return POLICY_ENOMEM;
    for (size_t i = 0; i < e->n_nodes; i++) {
        const struct policy_node *pn = &e->nodes[i]->pub.n;
        struct policy_prefix *served = malloc((pn->n_approved_routes + 1) * sizeof *served);
        size_t k = 0;

        if (served == NULL) {
            for (size_t j = 0; j < n; j++)
                free((struct policy_prefix *)routers[j].routes);
            free(routers);
            return POLICY_ENOMEM;
        }
        for (size_t j = 0; j < pn->n_approved_routes; j++)
            if (node_serves(pn, &pn->approved_routes[j]))
                served[k++] = pn->approved_routes[j];
        if (k == 0) {
            free(served);
            continue;
        }
        routers[n++] = (struct policy_router){pn->id, pn->online, pn->online_since, served, k};
    }
    *out = routers;
    *n_out = n;
    return 0;
}

int routes_elect(struct policy_engine *e)
{
    struct policy_router *routers;
    struct policy_primary *primaries;
    size_t n_routers;
    int n;

    if (routers_collect(e, &routers, &n_routers) != 0)
        return POLICY_ENOMEM;
    n = policy_elect_primaries(routers, n_routers, &primaries);
    for (size_t i = 0; i < n_routers; i++)
        free((struct policy_prefix *)routers[i].routes);
    free(routers);
    if (n < 0)
        return n;
    /* Peers' AllowedIPs follow the election. */
    for (size_t i = 0; i < e->n_nodes; i++) {
        struct enode *en = e->nodes[i];

        json_decref(en->allowed_ips);
        json_decref(en->primary_routes);
        en->allowed_ips = en->primary_routes = NULL;
    }
    free(e->primaries);
    e->primaries = primaries;
    e->n_primaries = (size_t)n;
    e->is_routes_stale = false;
    return 0;
}

static const struct policy_primary *primary_find(const struct policy_primary *list, size_t n,
                                                 const struct policy_prefix *prefix)
{
    size_t lo = 0, hi = n;

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = prefix_cmp(&list[mid].prefix, prefix);

        if (c == 0)
            return &list[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static int primary_cmp(const void *a, const void *b)
{
    return prefix_cmp(&((const struct policy_primary *)a)->prefix,
                      &((const struct policy_primary *)b)->prefix);
}

static bool router_serves(const struct policy_router *r, const struct policy_prefix *p)
{
    return prefix_listed(p, r->routes, r->n_routes);
}

/* Is a a better primary than b: online longer, or as long with a lower id? */
static bool router_precedes(const struct policy_router *a, const struct policy_router *b)
{
    if (a->online_since != b->online_since)
        return a->online_since < b->online_since;
    return a->node_id < b->node_id;
}

int policy_elect_primaries(const struct policy_router *routers, size_t n_routers,
                           struct policy_primary **out)
{
    struct policy_primary *list;
    size_t cap = 0, n = 0;

    for (size_t i = 0; i < n_routers; i++)
        cap += routers[i].n_routes;
    list = malloc((cap > 0 ? cap : 1) * sizeof *list);
    if (list == NULL)
        return POLICY_ENOMEM;
    for (size_t i = 0; i < n_routers; i++)
        for (size_t j = 0; j < routers[i].n_routes; j++) {
            const struct policy_prefix *p = &routers[i].routes[j];
            bool seen = false;

            if (prefix_is_exit(p))
                continue;
            for (size_t k = 0; k < n && !seen; k++)
                seen = prefix_equal(&list[k].prefix, p);
            if (!seen)
                list[n++] = (struct policy_primary){*p, 0};
        }
    qsort(list, n, sizeof *list, primary_cmp);
    for (size_t k = 0; k < n; k++) {
        const struct policy_prefix *p = &list[k].prefix;
        const struct policy_router *best = NULL;

        for (size_t i = 0; i < n_routers; i++) {
            const struct policy_router *r = &routers[i];

            if (r->online && router_serves(r, p) && (best == NULL || router_precedes(r, best)))
                best = r;
        }
        list[k].node_id = best != NULL ? best->node_id : 0;
    }
    *out = list;
    return (int)n;
}

static bool may_use_route(const struct enode *v, const struct policy_prefix *r)
{
    /* Routers of one prefix see each other's (high availability pairs). */
    if (v->may_route_all || (!prefix_is_exit(r) && node_serves(&v->pub.n, r)))
        return true;
    if (prefix_is_exit(r))
        return v->may_route_internet;
    if (v->may_route_subnets)
        return true;
    for (size_t i = 0; i < v->n_route_dsts; i++)
        if (prefix_overlaps(&v->route_dsts[i], r))
            return true;
    return false;
}

static int routes_compile(const struct policy_engine *e, struct enode *n)
{
    const struct policy_node *pn = &n->pub.n;
    json_t *allowed = json_array();
    json_t *primary = json_array();
    char buf[64];

    if (allowed == NULL || primary == NULL || node_addrs_append(allowed, &n->pub, true, 0) != 0)
        goto err;
    for (size_t i = 0; i < pn->n_approved_routes; i++) {
        const struct policy_prefix *r = &pn->approved_routes[i];
        const struct policy_primary *pr;

        if (!node_serves(pn, r))
            continue;
        policy_prefix_format(r, buf, sizeof buf);
        if (prefix_is_exit(r)) {
            if (json_add_unique(allowed, buf) != 0)
                goto err;
            continue;
        }
        pr = primary_find(e->primaries, e->n_primaries, r);
        if (pr == NULL || pr->node_id != pn->id)
            continue;
        if (json_add_unique(allowed, buf) != 0 || json_add_unique(primary, buf) != 0)
            goto err;
    }
    n->allowed_ips = allowed;
    n->primary_routes = primary;
    return 0;

err:
    json_decref(allowed);
    json_decref(primary);
    return POLICY_ENOMEM;
}

/* full as viewer v sees it: the routes v may not use are left out (the
 * first `keep` entries, the node's addresses, always stay). */
static json_t *routes_for_viewer(const struct policy_engine *e, struct enode *v, json_t *full,
                                 size_t keep)
{
    json_t *out;
    size_t n = json_array_size(full);

    if (n <= keep || e->p == NULL)
        return json_incref(full);
    if (v->visible == NULL && engine_visible_refresh(e, v) != 0)
        return NULL;
    out = json_array();
    for (size_t i = 0; out != NULL && i < n; i++) {
        json_t *entry = json_array_get(full, i);
        struct policy_prefix r;

        if (i >= keep &&
            (policy_prefix_parse(json_string_value(entry), &r) != 0 || !may_use_route(v, &r)))
            continue;
        if (json_array_append(out, entry) != 0) {
            json_decref(out);
            out = NULL;
        }
    }
    return out;
}

static json_t *routes_answer(struct policy_engine *e, uint64_t viewer_id, uint64_t node_id,
                             bool primary)
{
    struct enode *n = engine_query(e, node_id);
    struct enode *v = engine_node(e, viewer_id);
    json_t *full;

    if (n == NULL || v == NULL || (n->allowed_ips == NULL && routes_compile(e, n) != 0))
        return NULL;
    full = primary ? n->primary_routes : n->allowed_ips;
    if (v == n)
        return json_incref(full);
    return routes_for_viewer(e, v, full, primary ? 0 : n->pub.n.has_ipv4 + n->pub.n.has_ipv6);
}

json_t *policy_engine_allowed_ips(struct policy_engine *e, uint64_t viewer_id, uint64_t node_id)
{
    return routes_answer(e, viewer_id, node_id, false);
}

json_t *policy_engine_primary_routes(struct policy_engine *e, uint64_t viewer_id, uint64_t node_id)
{
    return routes_answer(e, viewer_id, node_id, true);
}

static bool approvers_match(const struct policy *p, const struct policy_alias *a, size_t n,
                            const struct policy_enode *node)
{
    for (size_t i = 0; i < n; i++)
        if (policy_alias_matches_node(p, &a[i], node))
            return true;
    return false;
}

bool policy_engine_auto_approves(struct policy_engine *e, uint64_t node_id,
                                 const struct policy_prefix *prefix)
{
    const struct policy *p = e->p;
    const struct enode *n = engine_node(e, node_id);

    if (p == NULL || n == NULL)
        return false;
    /* Exit routes are approved by exitNode only: Tailscale never serves an
     * exit route that autoApprovers.routes["0.0.0.0/0"] names. */
    if (prefix_is_exit(prefix))
        return approvers_match(p, p->exit_node_approvers, p->n_exit_node_approvers, &n->pub);
    for (size_t i = 0; i < p->n_route_approvers; i++) {
        const struct policy_route_approver *ra = &p->route_approvers[i];

        if (policy_prefix_covers(&ra->prefix, prefix) &&
            approvers_match(p, ra->approvers, ra->n_approvers, &n->pub))
            return true;
    }
    return false;
}
