/* server/policy/engine.c: one policy applied to the tailnet's users and
 * nodes. This file keeps the users and nodes (nodes in stable slots, so
 * that rules can hold bitsets of them), the per-node answers cached between
 * changes, and when they are refreshed: a policy change rebuilds the rules
 * once, on the next query; a node or user change marks what changed and the
 * next query resolves just that (rules.c). rules.c compiles packet filters
 * and visibility, routes.c primary routes and AllowedIPs, ssh.c SSH
 * policies, attrs.c capability maps.
 *
 * What each node receives is derived the way Tailscale's hosted control
 * server derives it (the golden captures are the reference):
 *
 *   - every ACL and every grant "ip" entry is one filter rule (a grant with
 *     "app" adds a capability rule); its sources resolve to a list of
 *     address strings shared by every node it reaches: node addresses, the
 *     prefixes written in the policy, and for "*" the tailnet's ranges plus
 *     every served subnet route;
 *   - a node receives a rule when it is one of the rule's destinations, and
 *     the rule's DstPorts name only that node's part of the destination: its
 *     own addresses, a written prefix it holds or routes, "*", or the
 *     internet ranges on an exit node;
 *   - a node sees a peer when one can reach the other (or route for it);
 *   - peers carry their addresses, the routes they are primary for and
 *     approved exit routes as AllowedIPs, each viewer only the routes its
 *     rules let it use (or that it serves itself: high-availability pairs);
 *   - a grant of Taildrive or peer-relay capabilities brings its companion
 *     capability the other way, and a document with neither acls nor grants
 *     lets everyone reach everything. */
#include "server/policy/engine_private.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static char *dup_str(const char *s)
{
    return s == NULL ? NULL : strdup(s);
}

bool policy_prefix_contains_addr(const struct policy_prefix *p, int family, const uint8_t *addr)
{
    size_t full = p->bits / 8;

    if (p->family != family || memcmp(p->addr, addr, full) != 0)
        return false;
    if (p->bits % 8 == 0)
        return true;
    return ((p->addr[full] ^ addr[full]) & (uint8_t)(0xff << (8 - p->bits % 8))) == 0;
}

bool policy_prefix_covers(const struct policy_prefix *a, const struct policy_prefix *b)
{
    return a->family == b->family && a->bits <= b->bits &&
           policy_prefix_contains_addr(a, b->family, b->addr);
}

static void addr_strings_free(struct enode *n)
{
    for (int i = 0; i < 2; i++) {
        json_decref(n->addrs[i]);
        json_decref(n->prefixes[i]);
        n->addrs[i] = n->prefixes[i] = NULL;
    }
}

static int addr_strings_build(struct enode *n)
{
    const struct policy_node *pn = &n->pub.n;
    char buf[INET6_ADDRSTRLEN + 8];
    int k = 0;

    addr_strings_free(n);
    for (int family = 4; family <= 6; family += 2) {
        if (!(family == 4 ? pn->has_ipv4 : pn->has_ipv6))
            continue;
        addr_format(family, family == 4 ? pn->ipv4 : pn->ipv6, buf, sizeof buf);
        n->addrs[k] = json_string(buf);
        strcat(buf, family == 4 ? "/32" : "/128");
        n->prefixes[k] = json_string(buf);
        if (n->addrs[k] == NULL || n->prefixes[k] == NULL)
            return POLICY_ENOMEM;
        k++;
    }
    return 0;
}

bool policy_user_matches(const struct policy_euser *u, const char *token)
{
    size_t len;

    if (u == NULL)
        return false;
    if (strncmp(token, "user:", 5) == 0)
        token += 5;
    len = strlen(token);
    if (strncmp(token, "*@", 2) == 0) {
        const char *at = u->u.email != NULL ? strrchr(u->u.email, '@') : NULL;

        return at != NULL && strcmp(at + 1, token + 2) == 0;
    }
    if (len > 0 && token[len - 1] == '@')
        return strncmp(u->u.name, token, len - 1) == 0 && u->u.name[len - 1] == '\0';
    if (u->u.email != NULL && strcmp(u->u.email, token) == 0)
        return true;
    /* A login name that is an address itself ("odin@example.com"). */
    return strcmp(u->u.name, token) == 0;
}

bool policy_alias_matches_node(const struct policy *p, const struct policy_alias *a,
                               const struct policy_enode *n)
{
    switch (a->kind) {
    case POLICY_ALIAS_WILDCARD:
        return true;
    case POLICY_ALIAS_USER:
        return !node_is_tagged(n) && policy_user_matches(n->user, a->name);
    case POLICY_ALIAS_GROUP:
        if (node_is_tagged(n) || p == NULL || a->index >= p->n_groups)
            return false;
        for (size_t i = 0; i < p->groups[a->index].n_members; i++)
            if (policy_user_matches(n->user, p->groups[a->index].members[i]))
                return true;
        return false;
    case POLICY_ALIAS_TAG:
        return node_has_tag(n, a->name);
    case POLICY_ALIAS_HOST:
    case POLICY_ALIAS_PREFIX:
        return node_has_addr_in(&n->n, &a->prefix);
    case POLICY_ALIAS_AUTOGROUP:
        switch (a->autogroup) {
        case POLICY_AUTOGROUP_MEMBER:
            return !node_is_tagged(n) && n->user != NULL;
        case POLICY_AUTOGROUP_TAGGED:
            return node_is_tagged(n);
        case POLICY_AUTOGROUP_DANGER_ALL:
            return true;
        default:
            return false;
        }
    }
    return false;
}

static size_t user_find(const struct policy_engine *e, uint64_t id, bool *found)
{
    size_t lo = 0, hi = e->n_users;

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;

        if (e->users[mid]->u.id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = lo < e->n_users && e->users[lo]->u.id == id;
    return lo;
}

static size_t node_find(const struct policy_engine *e, uint64_t id, bool *found)
{
    size_t lo = 0, hi = e->n_nodes;

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;

        if (e->nodes[mid]->pub.n.id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = lo < e->n_nodes && e->nodes[lo]->pub.n.id == id;
    return lo;
}

struct enode *engine_node(const struct policy_engine *e, uint64_t id)
{
    bool found;
    size_t i = node_find(e, id, &found);

    return found ? e->nodes[i] : NULL;
}

const struct policy_enode *policy_engine_node_get(const struct policy_engine *e, uint64_t id)
{
    struct enode *n = engine_node(e, id);

    return n != NULL ? &n->pub : NULL;
}

size_t policy_engine_node_count(const struct policy_engine *e)
{
    return e->n_nodes;
}

const struct policy_enode *policy_engine_node_at(const struct policy_engine *e, size_t i)
{
    return &e->nodes[i]->pub;
}

size_t policy_engine_user_count(const struct policy_engine *e)
{
    return e->n_users;
}

const struct policy_euser *policy_engine_user_at(const struct policy_engine *e, size_t i)
{
    return e->users[i];
}

const struct policy *policy_engine_policy(const struct policy_engine *e)
{
    return e->p;
}

static const struct policy_euser *user_of(const struct policy_engine *e,
                                          const struct policy_node *n)
{
    bool found;
    size_t i;

    if (n->n_tags > 0)
        return NULL;
    i = user_find(e, n->user_id, &found);
    return found ? e->users[i] : NULL;
}

void engine_visible_drop(struct enode *n)
{
    free(n->visible);
    free(n->route_dsts);
    n->visible = NULL;
    n->route_dsts = NULL;
    n->n_route_dsts = 0;
}

void engine_drop_caches(struct enode *n)
{
    json_decref(n->filter);
    json_decref(n->ssh);
    json_decref(n->capmap);
    json_decref(n->allowed_ips);
    json_decref(n->primary_routes);
    engine_visible_drop(n);
    n->filter = n->ssh = n->capmap = n->allowed_ips = n->primary_routes = NULL;
}

static void node_input_free(struct policy_node *n)
{
    free((char *)n->hostname);
    for (size_t i = 0; i < n->n_tags; i++)
        free((char *)n->tags[i]);
    free((char **)n->tags);
    free((struct policy_prefix *)n->advertised_routes);
    free((struct policy_prefix *)n->approved_routes);
}

static void enode_free(struct enode *n)
{
    if (n == NULL)
        return;
    engine_drop_caches(n);
    addr_strings_free(n);
    node_input_free(&n->pub.n);
    free(n);
}

static struct policy_prefix *prefixes_dup(const struct policy_prefix *p, size_t n)
{
    struct policy_prefix *out = malloc((n > 0 ? n : 1) * sizeof *out);

    if (out != NULL && n > 0)
        memcpy(out, p, n * sizeof *out);
    return out;
}

static int node_input_copy(const struct policy_node *in, struct policy_node *out)
{
    *out = *in;
    out->hostname = dup_str(in->hostname != NULL ? in->hostname : "");
    out->tags = calloc(in->n_tags > 0 ? in->n_tags : 1, sizeof *out->tags);
    out->advertised_routes = prefixes_dup(in->advertised_routes, in->n_advertised_routes);
    out->approved_routes = prefixes_dup(in->approved_routes, in->n_approved_routes);
    if (out->hostname == NULL || out->tags == NULL || out->advertised_routes == NULL ||
        out->approved_routes == NULL) {
        out->n_tags = 0;
        node_input_free(out);
        return POLICY_ENOMEM;
    }
    for (size_t i = 0; i < in->n_tags; i++) {
        ((char **)out->tags)[i] = strdup(in->tags[i]);
        if (out->tags[i] == NULL) {
            out->n_tags = i;
            node_input_free(out);
            return POLICY_ENOMEM;
        }
    }
    return 0;
}

static bool routes_differ(const struct policy_node *a, const struct policy_node *b)
{
    return a->online != b->online || a->online_since != b->online_since ||
           a->n_approved_routes != b->n_approved_routes ||
           a->n_advertised_routes != b->n_advertised_routes ||
           memcmp(a->approved_routes, b->approved_routes,
                  a->n_approved_routes * sizeof *a->approved_routes) != 0 ||
           memcmp(a->advertised_routes, b->advertised_routes,
                  a->n_advertised_routes * sizeof *a->advertised_routes) != 0;
}

static int slot_take(struct policy_engine *e, struct enode *n)
{
    for (size_t i = 0; i < e->n_slots; i++)
        if (e->slots[i] == NULL) {
            e->slots[i] = n;
            n->slot = i;
            return 0;
        }
    if (e->n_slots % BITS == 0) {
        struct enode **s = realloc(e->slots, (e->n_slots + BITS) * sizeof *s);

        if (s == NULL)
            return POLICY_ENOMEM;
        e->slots = s;
    }
    n->slot = e->n_slots;
    e->slots[e->n_slots++] = n;
    return 0;
}

/* Notes that user_id's nodes changed (autogroup:self pairs them). Out of
 * memory, everything is recomputed instead. */
static void stale_user_add(struct policy_engine *e, uint64_t user_id)
{
    if (e->n_stale_users == e->cap_stale_users) {
        size_t cap = e->cap_stale_users > 0 ? e->cap_stale_users * 2 : 8;
        uint64_t *list = realloc(e->stale_users, cap * sizeof *list);

        if (list == NULL) {
            e->is_policy_stale = true;
            return;
        }
        e->stale_users = list;
        e->cap_stale_users = cap;
    }
    e->stale_users[e->n_stale_users++] = user_id;
}

/* Notes a freed slot for the next resolution; out of memory, everything is
 * recomputed instead. */
static void removed_slot_add(struct policy_engine *e, size_t slot)
{
    if (e->n_removed_slots == e->cap_removed_slots) {
        size_t cap = e->cap_removed_slots > 0 ? e->cap_removed_slots * 2 : 8;
        size_t *list = realloc(e->removed_slots, cap * sizeof *list);

        if (list == NULL) {
            e->is_policy_stale = true;
            return;
        }
        e->removed_slots = list;
        e->cap_removed_slots = cap;
    }
    e->removed_slots[e->n_removed_slots++] = slot;
}

static void mark_all_stale(struct policy_engine *e)
{
    for (size_t i = 0; i < e->n_nodes; i++)
        engine_drop_caches(e->nodes[i]);
    policy_ssh_plan_free(e->ssh_plan);
    e->ssh_plan = NULL;
}

int policy_engine_node_put(struct policy_engine *e, const struct policy_node *in)
{
    bool found;
    size_t i = node_find(e, in->id, &found);
    struct enode *n;

    if (found) {
        struct enode fresh = {0};

        n = e->nodes[i];
        if (node_input_copy(in, &fresh.pub.n) != 0)
            return POLICY_ENOMEM;
        if (addr_strings_build(&fresh) != 0) {
            addr_strings_free(&fresh);
            node_input_free(&fresh.pub.n);
            return POLICY_ENOMEM;
        }
        stale_user_add(e, n->pub.n.user_id);
        if (routes_differ(&n->pub.n, &fresh.pub.n))
            e->is_routes_stale = e->are_routes_changed = true;
        node_input_free(&n->pub.n);
        addr_strings_free(n);
        n->pub.n = fresh.pub.n;
        memcpy(n->addrs, fresh.addrs, sizeof n->addrs);
        memcpy(n->prefixes, fresh.prefixes, sizeof n->prefixes);
    } else {
        if (e->n_nodes == e->cap_nodes) {
            size_t cap = e->cap_nodes > 0 ? e->cap_nodes * 2 : 16;
            struct enode **nodes = realloc(e->nodes, cap * sizeof *nodes);

            if (nodes == NULL)
                return POLICY_ENOMEM;
            e->nodes = nodes;
            e->cap_nodes = cap;
        }
        n = calloc(1, sizeof *n);
        if (n == NULL)
            return POLICY_ENOMEM;
        if (node_input_copy(in, &n->pub.n) != 0) {
            free(n);
            return POLICY_ENOMEM;
        }
        if (addr_strings_build(n) != 0 || slot_take(e, n) != 0) {
            enode_free(n);
            return POLICY_ENOMEM;
        }
        memmove(&e->nodes[i + 1], &e->nodes[i], (e->n_nodes - i) * sizeof *e->nodes);
        e->nodes[i] = n;
        e->n_nodes++;
        e->is_routes_stale = true;
        e->are_routes_changed |= in->n_approved_routes > 0;
    }
    n->pub.user = user_of(e, &n->pub.n);
    n->is_changed = true;
    stale_user_add(e, in->user_id);
    e->is_nodes_stale = true;
    return 0;
}

void policy_engine_node_remove(struct policy_engine *e, uint64_t node_id)
{
    bool found;
    size_t i = node_find(e, node_id, &found);
    struct enode *n;

    if (!found)
        return;
    n = e->nodes[i];
    stale_user_add(e, n->pub.n.user_id);
    removed_slot_add(e, n->slot);
    e->are_routes_changed |= n->pub.n.n_approved_routes > 0;
    e->slots[n->slot] = NULL;
    memmove(&e->nodes[i], &e->nodes[i + 1], (e->n_nodes - i - 1) * sizeof *e->nodes);
    e->n_nodes--;
    enode_free(n);
    e->is_nodes_stale = true;
    e->is_routes_stale = true;
    /* The ssh plan borrows the nodes. */
    policy_ssh_plan_free(e->ssh_plan);
    e->ssh_plan = NULL;
}

static void euser_free(struct policy_euser *u)
{
    if (u == NULL)
        return;
    free((char *)u->u.name);
    free((char *)u->u.email);
    free(u);
}

/* Relinks the nodes of user_id after its record changed. */
static void user_relink(struct policy_engine *e, uint64_t user_id)
{
    for (size_t i = 0; i < e->n_nodes; i++) {
        struct enode *n = e->nodes[i];

        if (n->pub.n.user_id == user_id) {
            n->pub.user = user_of(e, &n->pub.n);
            n->is_changed = true;
            e->is_nodes_stale = true;
        }
    }
    stale_user_add(e, user_id);
}

int policy_engine_user_put(struct policy_engine *e, const struct policy_user *u)
{
    bool found;
    size_t i = user_find(e, u->id, &found);
    struct policy_euser *nu = calloc(1, sizeof *nu);

    if (nu == NULL)
        return POLICY_ENOMEM;
    nu->u.id = u->id;
    nu->u.name = dup_str(u->name != NULL ? u->name : "");
    nu->u.email = dup_str(u->email);
    if (nu->u.name == NULL || (u->email != NULL && nu->u.email == NULL)) {
        euser_free(nu);
        return POLICY_ENOMEM;
    }
    if (found) {
        euser_free(e->users[i]);
        e->users[i] = nu;
    } else {
        if (e->n_users == e->cap_users) {
            size_t cap = e->cap_users > 0 ? e->cap_users * 2 : 16;
            struct policy_euser **users = realloc(e->users, cap * sizeof *users);

            if (users == NULL) {
                euser_free(nu);
                return POLICY_ENOMEM;
            }
            e->users = users;
            e->cap_users = cap;
        }
        memmove(&e->users[i + 1], &e->users[i], (e->n_users - i) * sizeof *e->users);
        e->users[i] = nu;
        e->n_users++;
    }
    user_relink(e, u->id);
    policy_ssh_plan_free(e->ssh_plan);
    e->ssh_plan = NULL;
    return 0;
}

void policy_engine_user_remove(struct policy_engine *e, uint64_t user_id)
{
    bool found;
    size_t i = user_find(e, user_id, &found);

    if (!found)
        return;
    euser_free(e->users[i]);
    memmove(&e->users[i], &e->users[i + 1], (e->n_users - i - 1) * sizeof *e->users);
    e->n_users--;
    user_relink(e, user_id);
    policy_ssh_plan_free(e->ssh_plan);
    e->ssh_plan = NULL;
}

struct policy_engine *policy_engine_new(const struct policy *p)
{
    struct policy_engine *e = calloc(1, sizeof *e);

    if (e == NULL)
        return NULL;
    e->p = p;
    e->is_policy_stale = true;
    e->is_routes_stale = true;
    return e;
}

void policy_engine_free(struct policy_engine *e)
{
    if (e == NULL)
        return;
    policy_ssh_plan_free(e->ssh_plan);
    rules_free(e->rules, e->n_rules);
    for (size_t i = 0; i < e->n_nodes; i++)
        enode_free(e->nodes[i]);
    for (size_t i = 0; i < e->n_users; i++)
        euser_free(e->users[i]);
    free(e->nodes);
    free(e->slots);
    free(e->users);
    free(e->primaries);
    free(e->by_user);
    free(e->stale_users);
    free(e->removed_slots);
    free(e);
}

void policy_engine_set_policy(struct policy_engine *e, const struct policy *p)
{
    e->p = p;
    e->is_policy_stale = true;
    /* Caches hold JSON built from the old document: drop them now, before
     * the caller frees it. */
    rules_free(e->rules, e->n_rules);
    e->rules = NULL;
    e->n_rules = 0;
    mark_all_stale(e);
}

/* Brings rules and caches up to date. 0 or POLICY_ENOMEM (then everything
 * is rebuilt on the next call). */
static int refresh(struct policy_engine *e)
{
    int rv = 0;

    if (e->is_policy_stale) {
        rv = rules_build(e);
        if (rv == 0)
            rv = rules_resolve(e, true);
        e->is_policy_stale = rv != 0;
        e->is_nodes_stale = false;
    } else if (e->is_nodes_stale) {
        rv = rules_resolve(e, false);
        if (rv != 0) {
            mark_all_stale(e);
            e->is_policy_stale = true;
        }
        e->is_nodes_stale = false;
    }
    if (rv == 0 && e->is_routes_stale)
        rv = routes_elect(e);
    return rv;
}

/* The default policy: everyone may reach everything. */
static json_t *allow_all_filter(void)
{
    return json_pack("[{s:[s],s:[{s:s,s:{s:i,s:i}}]}]", "SrcIPs", "*", "DstPorts", "IP", "*",
                     "Ports", "First", 0, "Last", 65535);
}

struct enode *engine_query(struct policy_engine *e, uint64_t node_id)
{
    if (refresh(e) != 0)
        return NULL;
    return engine_node(e, node_id);
}

json_t *policy_engine_filter(struct policy_engine *e, uint64_t node_id)
{
    struct enode *n = engine_query(e, node_id);

    if (n == NULL)
        return NULL;
    if (e->p == NULL)
        return allow_all_filter();
    if (n->filter == NULL)
        n->filter = rules_filter(e, n);
    return json_incref(n->filter);
}

json_t *policy_engine_ssh(struct policy_engine *e, uint64_t node_id)
{
    struct enode *n = engine_query(e, node_id);

    if (n == NULL)
        return NULL;
    if (e->p == NULL)
        return json_pack("{s:[]}", "rules");
    if (n->ssh == NULL) {
        if (e->ssh_plan == NULL)
            e->ssh_plan = policy_ssh_plan_new(e->p, e);
        if (e->ssh_plan == NULL)
            return NULL;
        n->ssh = policy_ssh_plan_compile(e->ssh_plan, &n->pub);
    }
    return json_incref(n->ssh);
}

json_t *policy_engine_capmap(struct policy_engine *e, uint64_t node_id)
{
    struct enode *n = engine_query(e, node_id);

    if (n == NULL)
        return NULL;
    if (n->capmap == NULL)
        n->capmap = policy_capmap_compile(e->p, e, &n->pub);
    return json_incref(n->capmap);
}

json_t *policy_engine_peer_capmap(struct policy_engine *e, uint64_t node_id)
{
    struct enode *n = engine_query(e, node_id);

    return n != NULL ? policy_peer_capmap_compile(e->p, e, &n->pub) : NULL;
}

int engine_visible_refresh(const struct policy_engine *e, struct enode *v)
{
    engine_visible_drop(v);
    v->visible = rules_visible(e, v);
    v->n_visible_words = e->n_words;
    if (v->visible == NULL || rules_route_access(e, v) != 0) {
        engine_visible_drop(v);
        return POLICY_ENOMEM;
    }
    return 0;
}

bool policy_engine_visible(struct policy_engine *e, uint64_t viewer_id, uint64_t peer_id)
{
    struct enode *v = engine_query(e, viewer_id);
    struct enode *p = engine_node(e, peer_id);

    if (v == NULL || p == NULL || v == p)
        return false;
    if (e->p == NULL)
        return true;
    if (v->visible == NULL && engine_visible_refresh(e, v) != 0)
        return false;
    /* Slots added since were not related to v, or v's cache would have
     * been dropped. */
    return p->slot / BITS < v->n_visible_words && bit_get(v->visible, p->slot);
}
