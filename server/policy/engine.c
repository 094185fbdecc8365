/* server/policy/engine.c: one policy applied to the tailnet's users and
 * nodes. What each node receives is derived the way Tailscale's hosted
 * control server derives it (the golden captures are the reference):
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
 *     lets everyone reach everything.
 *
 * Incremental: nodes live in stable slots; each rule keeps the bitsets of its
 * source and destination slots and its source list. A change re-resolves the
 * rules (linear in rules times nodes) and drops only the cached answers it
 * can affect: the changed nodes', the destinations of rules whose sources
 * changed, and the visibility of nodes facing a changed membership. A policy
 * change recompiles once, on the next query. */
#include "server/policy/engine_internal.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BITS 64

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

enum rule_kind {
    RULE_IP,  /* a PacketFilter rule with DstPorts */
    RULE_CAP, /* a PacketFilter rule with CapGrant (a grant's "app") */
};

struct rule_dst {
    const struct policy_alias *alias;
    const struct policy_port_range *ports;
    size_t n_ports;
};

struct rule {
    enum rule_kind kind;
    const struct policy_alias *src;
    size_t n_src;
    struct rule_dst *dst;
    size_t n_dst;
    const struct policy_protos *proto; /* NULL: the default set */
    const json_t *app;                 /* RULE_CAP */
    json_t *owned_app;                 /* a companion capability's, or NULL */
    const struct policy_alias *via;    /* routers a grant applies through */
    size_t n_via;
    bool has_self; /* a destination is autogroup:self */
    /* resolved against the nodes */
    json_t *src_ips;    /* array of address strings */
    uint64_t *src_bits; /* slots of the source nodes */
    uint64_t *dst_bits; /* slots this rule reaches (autogroup:self apart) */
    /* autogroup:self: each user's sources, shared by the user's nodes;
     * indexed by the user's first position in by_user, built lazily. */
    json_t **self_srcs;
    size_t n_self_srcs;
};

struct enode {
    struct policy_enode pub; /* first: engine nodes are handed out as &pub */
    size_t slot;
    /* The addresses as strings, formatted once: bare ("100.64.0.1") and as
     * full-length prefixes ("100.64.0.1/32"); IPv4 first, NULL when absent. */
    json_t *addrs[2];
    json_t *prefixes[2];
    bool is_changed; /* since the last resolution */
    /* cached answers, NULL (or false) when stale */
    json_t *filter;
    json_t *ssh;
    json_t *capmap;
    json_t *allowed_ips;
    json_t *primary_routes;
    uint64_t *visible;
    size_t n_visible_words;
    /* Which routes this node may use through its peers (cached with
     * visible): every route (a "*" destination), every subnet route (a "*"
     * source reaching it: "*" includes the routes), exit routes
     * (autogroup:internet), or routes overlapping one of the prefixes its
     * rules reach or are reached from. */
    bool may_route_all;
    bool may_route_subnets;
    bool may_route_internet;
    struct policy_prefix *route_dsts;
    size_t n_route_dsts;
};

struct policy_engine {
    const struct policy *p;
    struct policy_euser **users; /* by id */
    size_t n_users;
    size_t cap_users;
    struct enode **nodes; /* by id */
    size_t n_nodes;
    size_t cap_nodes;
    struct enode **slots; /* by slot, NULL when free */
    size_t n_slots;
    size_t n_words; /* bitset length covering n_slots */

    struct enode **by_user; /* untagged nodes by (user id, id), as of the last resolution */
    size_t n_by_user;
    uint64_t *stale_users; /* users whose nodes changed since the last resolution */
    size_t n_stale_users;
    size_t cap_stale_users;
    size_t *removed_slots; /* slots freed since the last resolution */
    size_t n_removed_slots;
    size_t cap_removed_slots;
    bool are_routes_changed; /* served routes changed: "*" sources list them */

    struct rule *rules;
    size_t n_rules;
    bool is_policy_stale; /* rules must be rebuilt from p */
    bool is_nodes_stale;  /* rules must be resolved again */
    bool is_routes_stale; /* primaries must be elected again */
    struct policy_ssh_plan *ssh_plan;
    struct policy_primary *primaries; /* sorted by prefix */
    size_t n_primaries;
};

/* ---- small things ---- */

static bool bit_get(const uint64_t *b, size_t i)
{
    return b != NULL && (b[i / BITS] >> (i % BITS) & 1) != 0;
}

static void bit_set(uint64_t *b, size_t i)
{
    b[i / BITS] |= (uint64_t)1 << (i % BITS);
}

static char *dup_str(const char *s)
{
    return s == NULL ? NULL : strdup(s);
}

static void addr_format(int family, const uint8_t *addr, char *buf, size_t size)
{
    inet_ntop(family == 4 ? AF_INET : AF_INET6, addr, buf, (socklen_t)size);
}

/* A prefix as the hosted server writes it: a bare address when full. */
static void prefix_text(const struct policy_prefix *p, char *buf, size_t size)
{
    if (p->bits == (p->family == 4 ? 32 : 128))
        addr_format(p->family, p->addr, buf, size);
    else
        policy_prefix_format(p, buf, size);
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

static bool prefix_overlaps(const struct policy_prefix *a, const struct policy_prefix *b)
{
    return policy_prefix_covers(a, b) || policy_prefix_covers(b, a);
}

static bool prefix_equal(const struct policy_prefix *a, const struct policy_prefix *b)
{
    return a->family == b->family && a->bits == b->bits && memcmp(a->addr, b->addr, 16) == 0;
}

static bool prefix_is_exit(const struct policy_prefix *p)
{
    return p->bits == 0;
}

static int prefix_cmp(const struct policy_prefix *a, const struct policy_prefix *b)
{
    int c;

    if (a->family != b->family)
        return a->family < b->family ? -1 : 1;
    c = memcmp(a->addr, b->addr, 16);
    if (c != 0)
        return c;
    return a->bits < b->bits ? -1 : a->bits > b->bits;
}

static bool node_has_addr_in(const struct policy_node *n, const struct policy_prefix *p)
{
    return (n->has_ipv4 && policy_prefix_contains_addr(p, 4, n->ipv4)) ||
           (n->has_ipv6 && policy_prefix_contains_addr(p, 6, n->ipv6));
}

static bool prefix_listed(const struct policy_prefix *r, const struct policy_prefix *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (prefix_equal(&list[i], r))
            return true;
    return false;
}

/* Served routes: approved and advertised. */
static bool node_serves(const struct policy_node *n, const struct policy_prefix *r)
{
    return prefix_listed(r, n->approved_routes, n->n_approved_routes) &&
           prefix_listed(r, n->advertised_routes, n->n_advertised_routes);
}

static bool node_is_exit(const struct policy_node *n)
{
    for (size_t i = 0; i < n->n_approved_routes; i++)
        if (prefix_is_exit(&n->approved_routes[i]) && node_serves(n, &n->approved_routes[i]))
            return true;
    return false;
}

/* Does one of the node's served subnet routes overlap p? */
static bool node_routes_into(const struct policy_node *n, const struct policy_prefix *p)
{
    for (size_t i = 0; i < n->n_approved_routes; i++) {
        const struct policy_prefix *r = &n->approved_routes[i];

        if (!prefix_is_exit(r) && node_serves(n, r) && prefix_overlaps(r, p))
            return true;
    }
    return false;
}

static int json_append_str(json_t *array, const char *s)
{
    return json_array_append_new(array, json_string(s)) == 0 ? 0 : POLICY_ENOMEM;
}

/* Appends s unless one of the first `among` entries is s. */
static int json_add_unique_among(json_t *array, const char *s, size_t among)
{
    size_t n = json_array_size(array);

    for (size_t i = 0; i < n && i < among; i++)
        if (strcmp(json_string_value(json_array_get(array, i)), s) == 0)
            return 0;
    return json_append_str(array, s);
}

/* Appends s unless already present (for short arrays). */
static int json_add_unique(json_t *array, const char *s)
{
    return json_add_unique_among(array, s, SIZE_MAX);
}

/* The engine's record of a node it handed out. */
static const struct enode *enode_of(const struct policy_enode *n)
{
    return (const struct enode *)n;
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

/* The node's addresses, bare or as full-length prefixes, unless among the
 * array's first `among` entries. Addresses are unique per node, so a caller
 * visiting each node once checks only what came from elsewhere. */
static int node_addrs_append(json_t *array, const struct policy_enode *pn, bool with_bits,
                             size_t among)
{
    const struct enode *n = enode_of(pn);

    for (int i = 0; i < 2; i++) {
        json_t *s = with_bits ? n->prefixes[i] : n->addrs[i];
        size_t size = json_array_size(array);
        bool seen = false;

        if (s == NULL)
            continue;
        for (size_t j = 0; j < size && j < among && !seen; j++)
            seen = json_equal(json_array_get(array, j), s);
        if (!seen && json_array_append(array, s) != 0)
            return POLICY_ENOMEM;
    }
    return 0;
}

static bool node_is_tagged(const struct policy_enode *n)
{
    return n->n.n_tags > 0;
}

static bool node_has_tag(const struct policy_enode *n, const char *tag)
{
    for (size_t i = 0; i < n->n.n_tags; i++)
        if (strcmp(n->n.tags[i], tag) == 0)
            return true;
    return false;
}

/* ---- matching ---- */

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

/* ---- users and nodes ---- */

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

static struct enode *enode_get(const struct policy_engine *e, uint64_t id)
{
    bool found;
    size_t i = node_find(e, id, &found);

    return found ? e->nodes[i] : NULL;
}

const struct policy_enode *policy_engine_node_get(const struct policy_engine *e, uint64_t id)
{
    struct enode *n = enode_get(e, id);

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

static void visible_drop(struct enode *n)
{
    free(n->visible);
    free(n->route_dsts);
    n->visible = NULL;
    n->route_dsts = NULL;
    n->n_route_dsts = 0;
}

static void enode_drop_caches(struct enode *n)
{
    json_decref(n->filter);
    json_decref(n->ssh);
    json_decref(n->capmap);
    json_decref(n->allowed_ips);
    json_decref(n->primary_routes);
    visible_drop(n);
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
    enode_drop_caches(n);
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
    return a->online != b->online || a->n_approved_routes != b->n_approved_routes ||
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
        enode_drop_caches(e->nodes[i]);
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

/* ---- rules: built from the policy ---- */

static void self_srcs_free(struct rule *r)
{
    for (size_t i = 0; i < r->n_self_srcs; i++)
        json_decref(r->self_srcs[i]);
    free(r->self_srcs);
    r->self_srcs = NULL;
    r->n_self_srcs = 0;
}

static void rules_free(struct rule *rules, size_t n)
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

static int rules_build(struct policy_engine *e)
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

/* ---- rules: resolved against the nodes ---- */

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
            visible_drop(n);
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
            visible_drop(n);
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
static int rules_resolve(struct policy_engine *e, bool everything)
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
            enode_drop_caches(n);
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

/* ---- primary routes ---- */

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
        routers[n++] = (struct policy_router){pn->id, pn->online, served, k};
    }
    *out = routers;
    *n_out = n;
    return 0;
}

static int routes_refresh(struct policy_engine *e)
{
    struct policy_router *routers;
    struct policy_primary *primaries;
    size_t n_routers;
    int n;

    if (routers_collect(e, &routers, &n_routers) != 0)
        return POLICY_ENOMEM;
    n = policy_elect_primaries(routers, n_routers, e->primaries, e->n_primaries, &primaries);
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

int policy_elect_primaries(const struct policy_router *routers, size_t n_routers,
                           const struct policy_primary *previous, size_t n_previous,
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
        uint64_t sticky = 0, lowest = 0;

        for (size_t i = 0; i < n_previous; i++)
            if (prefix_equal(&previous[i].prefix, p))
                sticky = previous[i].node_id;
        for (size_t i = 0; i < n_routers; i++) {
            const struct policy_router *r = &routers[i];

            if (!r->online || !router_serves(r, p))
                continue;
            if (r->node_id == sticky)
                break;
            if (lowest == 0 || r->node_id < lowest)
                lowest = r->node_id;
        }
        list[k].node_id = lowest;
        for (size_t i = 0; i < n_routers && sticky != 0; i++)
            if (routers[i].node_id == sticky && routers[i].online && router_serves(&routers[i], p))
                list[k].node_id = sticky;
    }
    *out = list;
    return (int)n;
}

/* ---- the engine ---- */

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
        rv = routes_refresh(e);
    return rv;
}

/* ---- packet filters ---- */

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

static json_t *filter_compile(const struct policy_engine *e, const struct enode *n)
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

/* The default policy: everyone may reach everything. */
static json_t *allow_all_filter(void)
{
    return json_pack("[{s:[s],s:[{s:s,s:{s:i,s:i}}]}]", "SrcIPs", "*", "DstPorts", "IP", "*",
                     "Ports", "First", 0, "Last", 65535);
}

static struct enode *query(struct policy_engine *e, uint64_t node_id)
{
    if (refresh(e) != 0)
        return NULL;
    return enode_get(e, node_id);
}

json_t *policy_engine_filter(struct policy_engine *e, uint64_t node_id)
{
    struct enode *n = query(e, node_id);

    if (n == NULL)
        return NULL;
    if (e->p == NULL)
        return allow_all_filter();
    if (n->filter == NULL)
        n->filter = filter_compile(e, n);
    return json_incref(n->filter);
}

json_t *policy_engine_ssh(struct policy_engine *e, uint64_t node_id)
{
    struct enode *n = query(e, node_id);

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
    struct enode *n = query(e, node_id);

    if (n == NULL)
        return NULL;
    if (n->capmap == NULL)
        n->capmap = policy_capmap_compile(e->p, e, &n->pub);
    return json_incref(n->capmap);
}

json_t *policy_engine_peer_capmap(struct policy_engine *e, uint64_t node_id)
{
    struct enode *n = query(e, node_id);

    return n != NULL ? policy_peer_capmap_compile(e->p, e, &n->pub) : NULL;
}

/* ---- visibility ---- */

static uint64_t *visible_compile(const struct policy_engine *e, const struct enode *v)
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
static int route_access_compile(const struct policy_engine *e, struct enode *v)
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

static int visible_refresh(const struct policy_engine *e, struct enode *v)
{
    visible_drop(v);
    v->visible = visible_compile(e, v);
    v->n_visible_words = e->n_words;
    if (v->visible == NULL || route_access_compile(e, v) != 0) {
        visible_drop(v);
        return POLICY_ENOMEM;
    }
    return 0;
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

bool policy_engine_visible(struct policy_engine *e, uint64_t viewer_id, uint64_t peer_id)
{
    struct enode *v = query(e, viewer_id);
    struct enode *p = enode_get(e, peer_id);

    if (v == NULL || p == NULL || v == p)
        return false;
    if (e->p == NULL)
        return true;
    if (v->visible == NULL && visible_refresh(e, v) != 0)
        return false;
    /* Slots added since were not related to v, or v's cache would have
     * been dropped. */
    return p->slot / BITS < v->n_visible_words && bit_get(v->visible, p->slot);
}

/* ---- routes ---- */

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
    if (v->visible == NULL && visible_refresh(e, v) != 0)
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
    struct enode *n = query(e, node_id);
    struct enode *v = enode_get(e, viewer_id);
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
    const struct enode *n = enode_get(e, node_id);

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
