/* server/policy/rules.c: the policy's ACLs and grants as rules, resolved
 * against the nodes, and what they compile to: each node's packet filter,
 * the peers it sees and the routes it may use.
 *
 * A rule is an ACL, a grant's "ip" entry or a grant's "app" part (plus the
 * companion capabilities Tailscale adds). Resolved, it has the list of its
 * sources' addresses (shared by every destination's filter) and the bitsets
 * of its source and destination nodes by slot. A policy change resolves
 * every rule from scratch; a node change re-evaluates only the changed and
 * removed nodes against each rule and drops the cached answers the change
 * can affect. */
#include "server/policy/engine_private.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The tailnet's own address space, as "*" resolves it for sources: CGNAT
 * minus 100.115.92.0/23 (never assigned) and Tailscale's ULA prefix. */
static const char *const tailnet_ranges[] = {
    "100.64.0.0-100.115.91.255",
    "100.115.94.0-100.127.255.255",
    "fd7a:115c:a1e0::/48",
};

/* autogroup:internet on an exit node: every public address, that is IPv4
 * minus the private, CGNAT and link-local ranges, and IPv6 global unicast. */
static const char *const internet_ranges[] = {
    "0.0.0.0-9.255.255.255",
    "11.0.0.0-100.63.255.255",
    "100.128.0.0-169.253.255.255",
    "169.255.0.0-172.15.255.255",
    "172.32.0.0-192.167.255.255",
    "192.169.0.0-255.255.255.255",
    "2000::-3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
};

static void self_srcs_free(struct rule *r)
{
    for (size_t i = 0; i < r->n_self_srcs; i++)
        json_decref(r->self_srcs[i]);
    free(r->self_srcs);
    r->self_srcs = NULL;
    r->n_self_srcs = 0;
}

void rules_free(struct rule *rules, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        self_srcs_free(&rules[i]);
        free(rules[i].dst);
        json_decref(rules[i].owned_app);
        json_decref(rules[i].src_ips);
        free(rules[i].src_bits);
        free(rules[i].dst_bits);
    }
    free(rules);
}

static bool dsts_have_self(const struct rule_dst *d, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (d[i].alias->kind == POLICY_ALIAS_AUTOGROUP &&
            d[i].alias->autogroup == POLICY_AUTOGROUP_SELF)
            return true;
    return false;
}

static int rule_from_acl(const struct policy_acl *a, struct rule *r)
{
    *r = (struct rule){.kind = RULE_IP, .src = a->src, .n_src = a->n_src, .n_dst = a->n_dst};
    r->proto = a->proto.n > 0 ? &a->proto : NULL;
    r->dst = calloc(a->n_dst > 0 ? a->n_dst : 1, sizeof *r->dst);
    if (r->dst == NULL)
        return POLICY_ENOMEM;
    for (size_t i = 0; i < a->n_dst; i++)
        r->dst[i] = (struct rule_dst){&a->dst[i].alias, a->dst[i].ports, a->dst[i].n_ports};
    r->has_self = dsts_have_self(r->dst, r->n_dst);
    return 0;
}

/* A document with neither acls nor grants: as {"src": ["*"], "dst":
 * ["*:*"]}. */
static const struct policy_alias any_alias = {.kind = POLICY_ALIAS_WILDCARD};

static const struct policy_port_range any_port = {0, 65535};

static int rule_allow_all(struct rule *r)
{
    *r = (struct rule){.kind = RULE_IP, .src = &any_alias, .n_src = 1, .n_dst = 1};
    r->dst = malloc(sizeof *r->dst);
    if (r->dst == NULL)
        return POLICY_ENOMEM;
    r->dst[0] = (struct rule_dst){&any_alias, &any_port, 1};
    return 0;
}

/* One rule per "ip" entry (each has its own protocols), or the "app" part. */
static int rule_from_grant(const struct policy_grant *g, const struct policy_grant_ip *ip,
                           struct rule *r)
{
    *r = (struct rule){
        .kind = ip != NULL ? RULE_IP : RULE_CAP,
        .src = g->src,
        .n_src = g->n_src,
        .n_dst = g->n_dst,
        .app = ip != NULL ? NULL : g->app,
        .via = g->via,
        .n_via = g->n_via,
    };
    r->proto = ip != NULL && ip->proto.n > 0 ? &ip->proto : NULL;
    r->dst = calloc(g->n_dst > 0 ? g->n_dst : 1, sizeof *r->dst);
    if (r->dst == NULL)
        return POLICY_ENOMEM;
    for (size_t i = 0; i < g->n_dst; i++)
        r->dst[i] = (struct rule_dst){&g->dst[i], ip != NULL ? &ip->ports : NULL, ip != NULL};
    r->has_self = dsts_have_self(r->dst, r->n_dst);
    return 0;
}

/* Capabilities that bring a companion the other way, from the grant's
 * destinations to its sources, as Tailscale grants them: a Taildrive user's
 * folders are shared back (drive-sharer), a peer relay may relay to its
 * users (relay-target). */
static const char *const companions[][2] = {
    {"tailscale.com/cap/drive", "tailscale.com/cap/drive-sharer"},
    {"tailscale.com/cap/relay", "tailscale.com/cap/relay-target"},
};

static const struct policy_alias *grant_self(const struct policy_grant *g)
{
    for (size_t i = 0; i < g->n_dst; i++)
        if (g->dst[i].kind == POLICY_ALIAS_AUTOGROUP &&
            g->dst[i].autogroup == POLICY_AUTOGROUP_SELF)
            return &g->dst[i];
    return NULL;
}

/* How many companion rules grant g brings: one per companion capability,
 * and one more for its autogroup:self pairs, which go both ways. */
static size_t companions_of(const struct policy_grant *g)
{
    size_t n = 0;

    for (size_t i = 0; g->app != NULL && i < sizeof companions / sizeof companions[0]; i++)
        n += json_object_get(g->app, companions[i][0]) != NULL;
    return grant_self(g) != NULL ? 2 * n : n;
}

static struct rule *companion_new(struct rule *rules, size_t *n, const char *cap)
{
    struct rule *c = &rules[(*n)++];

    *c = (struct rule){.kind = RULE_CAP};
    c->owned_app = json_pack("{s:n}", cap);
    c->app = c->owned_app;
    return c->owned_app != NULL ? c : NULL;
}

/* Adds the companions of grant g's capabilities, from rules[*n]. */
static int companions_add(const struct policy_grant *g, struct rule *rules, size_t *n)
{
    for (size_t i = 0; i < sizeof companions / sizeof companions[0]; i++) {
        struct rule *c;

        const struct policy_alias *self = grant_self(g);

        if (json_object_get(g->app, companions[i][0]) == NULL)
            continue;
        c = companion_new(rules, n, companions[i][1]);
        if (c == NULL)
            return POLICY_ENOMEM;
        c->src = g->dst;
        c->n_src = g->n_dst;
        c->n_dst = g->n_src;
        c->dst = malloc((g->n_src > 0 ? g->n_src : 1) * sizeof *c->dst);
        if (c->dst == NULL)
            return POLICY_ENOMEM;
        for (size_t j = 0; j < g->n_src; j++)
            c->dst[j] = (struct rule_dst){&g->src[j], NULL, 0};
        if (self == NULL)
            continue;
        c = companion_new(rules, n, companions[i][1]);
        if (c == NULL || (c->dst = malloc(sizeof *c->dst)) == NULL)
            return POLICY_ENOMEM;
        c->src = g->src;
        c->n_src = g->n_src;
        c->n_dst = 1;
        c->dst[0] = (struct rule_dst){self, NULL, 0};
        c->has_self = true;
    }
    return 0;
}

int rules_build(struct policy_engine *e)
{
    const struct policy *p = e->p;
    size_t n = 0;
    struct rule *rules;

    rules_free(e->rules, e->n_rules);
    e->rules = NULL;
    e->n_rules = 0;
    if (p == NULL)
        return 0;
    n = p->n_acls + p->allows_all;
    for (size_t i = 0; i < p->n_grants; i++)
        n += p->grants[i].n_ip + (p->grants[i].app != NULL) + companions_of(&p->grants[i]);
    rules = calloc(n > 0 ? n : 1, sizeof *rules);
    if (rules == NULL)
        return POLICY_ENOMEM;
    n = 0;
    if (p->allows_all && rule_allow_all(&rules[n++]) != 0)
        goto err;
    for (size_t i = 0; i < p->n_acls; i++)
        if (rule_from_acl(&p->acls[i], &rules[n++]) != 0)
            goto err;
    for (size_t i = 0; i < p->n_grants; i++) {
        const struct policy_grant *g = &p->grants[i];

        for (size_t j = 0; j < g->n_ip; j++)
            if (rule_from_grant(g, &g->ip[j], &rules[n++]) != 0)
                goto err;
        if (g->app != NULL &&
            (rule_from_grant(g, NULL, &rules[n++]) != 0 || companions_add(g, rules, &n) != 0))
            goto err;
    }
    e->rules = rules;
    e->n_rules = n;
    return 0;

err:
    rules_free(rules, n);
    return POLICY_ENOMEM;
}

static int by_user_cmp(const void *pa, const void *pb)
{
    const struct enode *a = *(struct enode *const *)pa;
    const struct enode *b = *(struct enode *const *)pb;

    if (a->pub.n.user_id != b->pub.n.user_id)
        return a->pub.n.user_id < b->pub.n.user_id ? -1 : 1;
    return a->pub.n.id < b->pub.n.id ? -1 : a->pub.n.id > b->pub.n.id;
}

static int by_user_build(struct policy_engine *e)
{
    struct enode **list = realloc(e->by_user, (e->n_nodes > 0 ? e->n_nodes : 1) * sizeof *list);
    size_t n = 0;

    if (list == NULL)
        return POLICY_ENOMEM;
    for (size_t i = 0; i < e->n_nodes; i++)
        if (!node_is_tagged(&e->nodes[i]->pub) && e->nodes[i]->pub.user != NULL)
            list[n++] = e->nodes[i];
    qsort(list, n, sizeof *list, by_user_cmp);
    e->by_user = list;
    e->n_by_user = n;
    return 0;
}

/* The user's untagged nodes: by_user[*first .. return value). */
static size_t user_nodes(const struct policy_engine *e, uint64_t user_id, size_t *first)
{
    size_t lo = 0, hi = e->n_by_user;
    size_t end;

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;

        if (e->by_user[mid]->pub.n.user_id < user_id)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (end = lo; end < e->n_by_user && e->by_user[end]->pub.n.user_id == user_id; end++)
        ;
    *first = lo;
    return end;
}

/* Does the node route for a via grant? (Routers named by via only.) */
static bool via_allows(const struct policy *p, const struct rule *r, const struct policy_enode *n)
{
    if (r->n_via == 0)
        return true;
    for (size_t i = 0; i < r->n_via; i++)
        if (policy_alias_matches_node(p, &r->via[i], n))
            return true;
    return false;
}

/* Is n a destination of d (autogroup:self apart)? */
static bool dst_reaches(const struct policy *p, const struct rule *r, const struct rule_dst *d,
                        const struct policy_enode *n)
{
    const struct policy_alias *a = d->alias;

    switch (a->kind) {
    case POLICY_ALIAS_HOST:
    case POLICY_ALIAS_PREFIX:
        if (node_routes_into(&n->n, &a->prefix) && via_allows(p, r, n))
            return true;
        return r->n_via == 0 && node_has_addr_in(&n->n, &a->prefix);
    case POLICY_ALIAS_AUTOGROUP:
        if (a->autogroup == POLICY_AUTOGROUP_INTERNET)
            return node_is_exit(&n->n) && via_allows(p, r, n);
        if (a->autogroup == POLICY_AUTOGROUP_SELF)
            return false;
        break;
    default:
        break;
    }
    return r->n_via == 0 && policy_alias_matches_node(p, a, n);
}

static bool rule_reaches(const struct policy *p, const struct rule *r, const struct policy_enode *n)
{
    for (size_t i = 0; i < r->n_dst; i++)
        if (dst_reaches(p, r, &r->dst[i], n))
            return true;
    return false;
}

static bool src_matches(const struct policy *p, const struct rule *r, const struct policy_enode *n)
{
    for (size_t i = 0; i < r->n_src; i++) {
        const struct policy_alias *a = &r->src[i];

        if (policy_alias_matches_node(p, a, n))
            return true;
        /* A source prefix covering a router's subnet: the router forwards
         * for it, so it must see the destinations. */
        if ((a->kind == POLICY_ALIAS_PREFIX || a->kind == POLICY_ALIAS_HOST) &&
            node_routes_into(&n->n, &a->prefix))
            return true;
    }
    return false;
}

/* "*" as a source: the tailnet's ranges and every served subnet route. */
static int wildcard_append(const struct policy_engine *e, json_t *out)
{
    char buf[64];

    for (size_t i = 0; i < sizeof tailnet_ranges / sizeof tailnet_ranges[0]; i++)
        if (json_add_unique(out, tailnet_ranges[i]) != 0)
            return POLICY_ENOMEM;
    for (size_t i = 0; i < e->n_nodes; i++) {
        const struct policy_node *n = &e->nodes[i]->pub.n;

        for (size_t j = 0; j < n->n_approved_routes; j++) {
            const struct policy_prefix *r = &n->approved_routes[j];

            if (prefix_is_exit(r) || !node_serves(n, r))
                continue;
            prefix_text(r, buf, sizeof buf);
            if (json_add_unique(out, buf) != 0)
                return POLICY_ENOMEM;
        }
    }
    return 0;
}

/* Is a source alias written as addresses rather than naming nodes? */
static bool alias_is_literal(const struct policy_alias *a)
{
    return a->kind == POLICY_ALIAS_WILDCARD || a->kind == POLICY_ALIAS_HOST ||
           a->kind == POLICY_ALIAS_PREFIX ||
           (a->kind == POLICY_ALIAS_AUTOGROUP && a->autogroup == POLICY_AUTOGROUP_DANGER_ALL);
}

static int src_literal_append(const struct policy_engine *e, const struct policy_alias *a,
                              json_t *out)
{
    char buf[64];

    switch (a->kind) {
    case POLICY_ALIAS_WILDCARD:
        return wildcard_append(e, out);
    case POLICY_ALIAS_HOST:
    case POLICY_ALIAS_PREFIX:
        prefix_text(&a->prefix, buf, sizeof buf);
        return json_add_unique(out, buf);
    default:
        return json_add_unique(out, "*");
    }
}

/* Does one of the rule's node-naming sources name n? */
static bool src_names_node(const struct policy *p, const struct rule *r,
                           const struct policy_enode *n)
{
    for (size_t i = 0; i < r->n_src; i++)
        if (!alias_is_literal(&r->src[i]) && policy_alias_matches_node(p, &r->src[i], n))
            return true;
    return false;
}

/* The rule's SrcIPs: the literal sources, then each named node's
 * addresses once (those a literal already lists are not repeated). */
static int src_ips_build(const struct policy_engine *e, const struct rule *r, json_t *out)
{
    size_t n_literal;

    for (size_t i = 0; i < r->n_src; i++)
        if (alias_is_literal(&r->src[i]) && src_literal_append(e, &r->src[i], out) != 0)
            return POLICY_ENOMEM;
    n_literal = json_array_size(out);
    for (size_t i = 0; i < e->n_nodes; i++) {
        if (!src_names_node(e->p, r, &e->nodes[i]->pub))
            continue;
        if (node_addrs_append(out, &e->nodes[i]->pub, false, n_literal) != 0)
            return POLICY_ENOMEM;
    }
    return 0;
}

static int rule_resolve(const struct policy_engine *e, struct rule *r)
{
    r->src_ips = json_array();
    r->src_bits = calloc(e->n_words > 0 ? e->n_words : 1, sizeof *r->src_bits);
    r->dst_bits = calloc(e->n_words > 0 ? e->n_words : 1, sizeof *r->dst_bits);
    if (r->src_ips == NULL || r->src_bits == NULL || r->dst_bits == NULL)
        return POLICY_ENOMEM;
    if (src_ips_build(e, r, r->src_ips) != 0)
        return POLICY_ENOMEM;
    for (size_t i = 0; i < e->n_nodes; i++) {
        const struct enode *n = e->nodes[i];

        if (src_matches(e->p, r, &n->pub))
            bit_set(r->src_bits, n->slot);
        if (rule_reaches(e->p, r, &n->pub))
            bit_set(r->dst_bits, n->slot);
    }
    return 0;
}

/* Drops the cached filters of r's destinations (old and new) or, with
 * visibility, the visibility of both of r's sides. */
static void stale_side(struct policy_engine *e, const uint64_t *old_bits, const uint64_t *new_bits,
                       size_t old_words, bool filter_only)
{
    for (size_t s = 0; s < e->n_slots; s++) {
        struct enode *n = e->slots[s];

        if (n == NULL || !((s / BITS < old_words && bit_get(old_bits, s)) || bit_get(new_bits, s)))
            continue;
        if (filter_only) {
            json_decref(n->filter);
            n->filter = NULL;
        } else {
            engine_visible_drop(n);
        }
    }
}

static bool bits_differ(const uint64_t *a, size_t na, const uint64_t *b, size_t nb)
{
    size_t n = na > nb ? na : nb;

    for (size_t i = 0; i < n; i++)
        if ((i < na ? a[i] : 0) != (i < nb ? b[i] : 0))
            return true;
    return false;
}

/* What a changed user-owned node can alter through autogroup:self: its
 * user's nodes' filters and visibility. */
static void stale_user_nodes(struct policy_engine *e)
{
    for (size_t i = 0; i < e->n_stale_users; i++) {
        size_t j;
        size_t end = user_nodes(e, e->stale_users[i], &j);

        for (; j < end; j++) {
            struct enode *n = e->by_user[j];

            json_decref(n->filter);
            n->filter = NULL;
            engine_visible_drop(n);
        }
    }
}

static bool rule_has_wildcard_src(const struct rule *r)
{
    for (size_t i = 0; i < r->n_src; i++)
        if (r->src[i].kind == POLICY_ALIAS_WILDCARD)
            return true;
    return false;
}

static uint64_t *bits_resize(uint64_t *bits, size_t old_words, size_t new_words)
{
    uint64_t *out = calloc(new_words > 0 ? new_words : 1, sizeof *out);

    if (out != NULL && bits != NULL)
        memcpy(out, bits, (old_words < new_words ? old_words : new_words) * sizeof *out);
    return out;
}

static void bit_put(uint64_t *b, size_t i, bool on)
{
    if (on)
        bit_set(b, i);
    else
        b[i / BITS] &= ~((uint64_t)1 << (i % BITS));
}

/* Brings rule r up to date with the nodes changed and removed since the
 * last resolution (changed[0..n_changed)), and drops the answers that
 * depended on what changed: the destinations' filters when the sources'
 * list changed, both sides' visibility when a membership did. */
static int rule_update(struct policy_engine *e, struct rule *r, size_t old_words,
                       struct enode *const *changed, size_t n_changed)
{
    uint64_t *old_src = r->src_bits;
    uint64_t *old_dst = r->dst_bits;
    bool is_list_stale = e->are_routes_changed && rule_has_wildcard_src(r);
    int rv = 0;

    r->src_bits = bits_resize(old_src, old_words, e->n_words);
    r->dst_bits = bits_resize(old_dst, old_words, e->n_words);
    if (r->src_bits == NULL || r->dst_bits == NULL) {
        rv = POLICY_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < e->n_removed_slots; i++) {
        size_t s = e->removed_slots[i];

        is_list_stale |= bit_get(r->src_bits, s);
        bit_put(r->src_bits, s, false);
        bit_put(r->dst_bits, s, false);
    }
    for (size_t i = 0; i < n_changed; i++) {
        const struct enode *n = changed[i];
        bool is_src = src_matches(e->p, r, &n->pub);

        /* Its addresses may have changed too. */
        is_list_stale |= is_src || bit_get(r->src_bits, n->slot);
        bit_put(r->src_bits, n->slot, is_src);
        bit_put(r->dst_bits, n->slot, rule_reaches(e->p, r, &n->pub));
    }
    if (is_list_stale) {
        json_t *ips = json_array();

        if (ips == NULL || src_ips_build(e, r, ips) != 0) {
            json_decref(ips);
            rv = POLICY_ENOMEM;
            goto out;
        }
        if (!json_equal(ips, r->src_ips))
            stale_side(e, old_dst, r->dst_bits, old_words, true);
        json_decref(r->src_ips);
        r->src_ips = ips;
    }
    if (bits_differ(old_src, old_words, r->src_bits, e->n_words) ||
        bits_differ(old_dst, old_words, r->dst_bits, e->n_words)) {
        stale_side(e, old_src, r->src_bits, old_words, false);
        stale_side(e, old_dst, r->dst_bits, old_words, false);
    }

out:
    free(old_src);
    free(old_dst);
    return rv;
}

/* The nodes changed since the last resolution; NULL when out of memory. */
static struct enode **changed_nodes(const struct policy_engine *e, size_t *n)
{
    struct enode **out = malloc((e->n_nodes > 0 ? e->n_nodes : 1) * sizeof *out);

    *n = 0;
    for (size_t i = 0; out != NULL && i < e->n_nodes; i++)
        if (e->nodes[i]->is_changed)
            out[(*n)++] = e->nodes[i];
    return out;
}

/* Resolves the rules against the nodes: from scratch after a policy change
 * (everything), else only for what changed since the last time, dropping
 * the cached answers the change can affect. */
int rules_resolve(struct policy_engine *e, bool everything)
{
    size_t old_words = e->n_words;
    struct enode **changed = NULL;
    size_t n_changed = 0;
    bool any_self = false;

    if (by_user_build(e) != 0)
        return POLICY_ENOMEM;
    e->n_words = (e->n_slots + BITS - 1) / BITS;
    if (!everything && (changed = changed_nodes(e, &n_changed)) == NULL)
        return POLICY_ENOMEM;
    for (size_t i = 0; i < e->n_rules; i++) {
        struct rule *r = &e->rules[i];
        int rv;

        self_srcs_free(r);
        if (everything) {
            json_decref(r->src_ips);
            free(r->src_bits);
            free(r->dst_bits);
            rv = rule_resolve(e, r);
        } else {
            rv = rule_update(e, r, old_words, changed, n_changed);
        }
        any_self |= r->has_self;
        if (rv != 0) {
            free(changed);
            return rv;
        }
    }
    free(changed);
    if (any_self && !everything)
        stale_user_nodes(e);
    e->n_stale_users = 0;
    e->n_removed_slots = 0;
    e->are_routes_changed = false;
    for (size_t i = 0; i < e->n_nodes; i++) {
        struct enode *n = e->nodes[i];

        if (n->is_changed || everything) {
            engine_drop_caches(n);
        } else if (e->p != NULL && e->p->n_ssh > 0) {
            /* SSH principals are the sources' addresses. */
            json_decref(n->ssh);
            n->ssh = NULL;
        }
        n->is_changed = false;
    }
    policy_ssh_plan_free(e->ssh_plan);
    e->ssh_plan = NULL;
    return 0;
}

static json_t *ports_json(const struct policy_port_range *r)
{
    return json_pack("{s:i,s:i}", "First", (json_int_t)r->first, "Last", (json_int_t)r->last);
}

static int dst_ports_add(json_t *dst_ports, const char *ip, const struct rule_dst *d)
{
    for (size_t i = 0; i < d->n_ports; i++) {
        json_t *entry = json_pack("{s:s,s:o}", "IP", ip, "Ports", ports_json(&d->ports[i]));

        if (entry == NULL || json_array_append_new(dst_ports, entry) != 0)
            return POLICY_ENOMEM;
    }
    return 0;
}

/* The IPs of n this destination names: "*", its own addresses, the written
 * prefix, or the internet ranges. Appended to ips (strings). */
static int dst_ips(const struct policy *p, const struct rule *r, const struct rule_dst *d,
                   const struct policy_enode *n, bool cap, json_t *ips)
{
    const struct policy_alias *a = d->alias;
    char buf[64];

    if (!dst_reaches(p, r, d, n))
        return 0;
    switch (a->kind) {
    case POLICY_ALIAS_WILDCARD:
        return cap ? node_addrs_append(ips, n, true, SIZE_MAX) : json_add_unique(ips, "*");
    case POLICY_ALIAS_HOST:
    case POLICY_ALIAS_PREFIX:
        /* Capabilities name tailnet nodes: through a router (via) they
         * reach nobody. */
        if (cap && r->n_via > 0)
            return 0;
        if (cap)
            policy_prefix_format(&a->prefix, buf, sizeof buf);
        else
            prefix_text(&a->prefix, buf, sizeof buf);
        return json_add_unique(ips, buf);
    case POLICY_ALIAS_AUTOGROUP:
        if (a->autogroup == POLICY_AUTOGROUP_INTERNET) {
            for (size_t i = 0; i < sizeof internet_ranges / sizeof internet_ranges[0]; i++)
                if (json_add_unique(ips, internet_ranges[i]) != 0)
                    return POLICY_ENOMEM;
            return 0;
        }
        break;
    default:
        break;
    }
    return node_addrs_append(ips, n, cap, SIZE_MAX);
}

static json_t *protos_json(const struct rule *r)
{
    json_t *out = json_array();

    for (size_t i = 0; out != NULL && i < r->proto->n; i++)
        if (json_array_append_new(out, json_integer(r->proto->numbers[i])) != 0) {
            json_decref(out);
            return NULL;
        }
    return out;
}

/* Appends {"SrcIPs": src, "DstPorts"|"CapGrant": ..., "IPProto"?} when
 * both sides are non-empty. */
static int filter_rule_append(const struct rule *r, json_t *src, json_t *dst, json_t *out)
{
    json_t *rule;

    if (json_array_size(src) == 0 || json_array_size(dst) == 0)
        return 0;
    rule = json_object();
    if (rule == NULL || json_object_set(rule, "SrcIPs", src) != 0 ||
        json_object_set(rule, r->kind == RULE_CAP ? "CapGrant" : "DstPorts", dst) != 0 ||
        (r->proto != NULL && json_object_set_new(rule, "IPProto", protos_json(r)) != 0) ||
        json_array_append_new(out, rule) != 0) {
        json_decref(rule);
        return POLICY_ENOMEM;
    }
    return 0;
}

/* DstPorts (or CapGrant) of r for n, over the destinations selected by
 * self (autogroup:self ones, or all the others). */
static json_t *rule_dsts(const struct policy *p, const struct rule *r, const struct policy_enode *n,
                         bool self)
{
    json_t *out = json_array();

    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < r->n_dst; i++) {
        const struct rule_dst *d = &r->dst[i];
        bool is_self = d->alias->kind == POLICY_ALIAS_AUTOGROUP &&
                       d->alias->autogroup == POLICY_AUTOGROUP_SELF;
        json_t *ips;
        size_t k;
        json_t *ip;

        if (is_self != self)
            continue;
        ips = json_array();
        if (ips == NULL || (is_self ? node_addrs_append(ips, n, r->kind == RULE_CAP, SIZE_MAX)
                                    : dst_ips(p, r, d, n, r->kind == RULE_CAP, ips)) != 0)
            goto err;
        if (r->kind == RULE_CAP) {
            json_t *grant;

            if (json_array_size(ips) > 0) {
                grant = json_pack("{s:O,s:O}", "Dsts", ips, "CapMap", r->app);
                if (grant == NULL || json_array_append_new(out, grant) != 0)
                    goto err;
            }
        } else {
            json_array_foreach(ips, k,
                               ip) if (dst_ports_add(out, json_string_value(ip), d) != 0) goto err;
        }
        json_decref(ips);
        continue;
    err:
        json_decref(ips);
        json_decref(out);
        return NULL;
    }
    return out;
}

/* autogroup:self: the sources that are n's user's own untagged nodes,
 * computed once per user and shared (a new reference). */
static json_t *self_sources(const struct policy_engine *e, struct rule *r,
                            const struct policy_enode *n)
{
    json_t *out;
    size_t i;
    size_t end = user_nodes(e, n->n.user_id, &i);
    size_t first = i;

    if (r->self_srcs == NULL) {
        r->self_srcs = calloc(e->n_by_user > 0 ? e->n_by_user : 1, sizeof *r->self_srcs);
        if (r->self_srcs == NULL)
            return NULL;
        r->n_self_srcs = e->n_by_user;
    }
    if (first < r->n_self_srcs && r->self_srcs[first] != NULL)
        return json_incref(r->self_srcs[first]);
    out = json_array();
    for (; out != NULL && i < end; i++) {
        const struct enode *s = e->by_user[i];

        if (!bit_get(r->src_bits, s->slot))
            continue;
        if (node_addrs_append(out, &s->pub, false, 0) != 0) {
            json_decref(out);
            return NULL;
        }
    }
    if (out != NULL && first < r->n_self_srcs)
        r->self_srcs[first] = json_incref(out);
    return out;
}

json_t *rules_filter(const struct policy_engine *e, const struct enode *n)
{
    json_t *out = json_array();

    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < e->n_rules; i++) {
        struct rule *r = &e->rules[i];
        json_t *dst;
        int rv;

        if (bit_get(r->dst_bits, n->slot)) {
            dst = rule_dsts(e->p, r, &n->pub, false);
            rv = dst != NULL ? filter_rule_append(r, r->src_ips, dst, out) : POLICY_ENOMEM;
            json_decref(dst);
            if (rv != 0)
                goto err;
        }
        if (r->has_self && !node_is_tagged(&n->pub) && n->pub.user != NULL) {
            json_t *src = self_sources(e, r, &n->pub);

            dst = src != NULL ? rule_dsts(e->p, r, &n->pub, true) : NULL;
            rv = dst != NULL ? filter_rule_append(r, src, dst, out) : POLICY_ENOMEM;
            json_decref(src);
            json_decref(dst);
            if (rv != 0)
                goto err;
        }
    }
    return out;

err:
    json_decref(out);
    return NULL;
}

uint64_t *rules_visible(const struct policy_engine *e, const struct enode *v)
{
    uint64_t *out = calloc(e->n_words > 0 ? e->n_words : 1, sizeof *out);

    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < e->n_rules; i++) {
        const struct rule *r = &e->rules[i];
        bool is_src = bit_get(r->src_bits, v->slot);

        if (is_src)
            for (size_t w = 0; w < e->n_words; w++)
                out[w] |= r->dst_bits[w];
        if (bit_get(r->dst_bits, v->slot))
            for (size_t w = 0; w < e->n_words; w++)
                out[w] |= r->src_bits[w];
        if (!r->has_self || node_is_tagged(&v->pub) || v->pub.user == NULL)
            continue;
        /* autogroup:self: a source sees its user's nodes, and is seen by them. */
        size_t j;
        size_t end = user_nodes(e, v->pub.n.user_id, &j);

        for (; j < end; j++)
            if (is_src || bit_get(r->src_bits, e->by_user[j]->slot))
                bit_set(out, e->by_user[j]->slot);
    }
    return out;
}

/* The routes v may use: the destinations of the rules v is a source of,
 * and the sources of the rules that reach v. */
int rules_route_access(const struct policy_engine *e, struct enode *v)
{
    size_t cap = 0;

    v->may_route_all = v->may_route_subnets = v->may_route_internet = false;
    v->n_route_dsts = 0;
    for (size_t i = 0; i < e->n_rules; i++)
        cap += e->rules[i].n_dst + e->rules[i].n_src;
    v->route_dsts = malloc((cap > 0 ? cap : 1) * sizeof *v->route_dsts);
    if (v->route_dsts == NULL)
        return POLICY_ENOMEM;
    for (size_t i = 0; i < e->n_rules; i++) {
        const struct rule *r = &e->rules[i];

        for (size_t j = 0; bit_get(r->src_bits, v->slot) && j < r->n_dst; j++) {
            const struct policy_alias *a = r->dst[j].alias;

            if (a->kind == POLICY_ALIAS_WILDCARD)
                v->may_route_all = true;
            else if (a->kind == POLICY_ALIAS_AUTOGROUP && a->autogroup == POLICY_AUTOGROUP_INTERNET)
                v->may_route_internet = true;
            else if (a->kind == POLICY_ALIAS_PREFIX || a->kind == POLICY_ALIAS_HOST)
                v->route_dsts[v->n_route_dsts++] = a->prefix;
        }
        for (size_t j = 0; bit_get(r->dst_bits, v->slot) && j < r->n_src; j++) {
            const struct policy_alias *a = &r->src[j];

            if (a->kind == POLICY_ALIAS_WILDCARD)
                v->may_route_subnets = true;
            else if (a->kind == POLICY_ALIAS_PREFIX || a->kind == POLICY_ALIAS_HOST)
                v->route_dsts[v->n_route_dsts++] = a->prefix;
        }
    }
    return 0;
}
