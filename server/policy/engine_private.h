/* server/policy/engine_private.h: the engine's own state, shared by its
 * three files (engine.c: users, nodes and caches; rules.c: rules, packet
 * filters and visibility; routes.c: primary routes and AllowedIPs), and the
 * small helpers they all use. Nothing outside those files includes it. */
#ifndef CONCORD_SERVER_POLICY_ENGINE_PRIVATE_H
#define CONCORD_SERVER_POLICY_ENGINE_PRIVATE_H

#include "server/policy/engine_internal.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>

#define BITS 64

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

static inline bool bit_get(const uint64_t *b, size_t i)
{
    return b != NULL && (b[i / BITS] >> (i % BITS) & 1) != 0;
}

static inline void bit_set(uint64_t *b, size_t i)
{
    b[i / BITS] |= (uint64_t)1 << (i % BITS);
}

static inline void addr_format(int family, const uint8_t *addr, char *buf, size_t size)
{
    inet_ntop(family == 4 ? AF_INET : AF_INET6, addr, buf, (socklen_t)size);
}

/* A prefix as the hosted server writes it: a bare address when full. */
static inline void prefix_text(const struct policy_prefix *p, char *buf, size_t size)
{
    if (p->bits == (p->family == 4 ? 32 : 128))
        addr_format(p->family, p->addr, buf, size);
    else
        policy_prefix_format(p, buf, size);
}

static inline bool prefix_overlaps(const struct policy_prefix *a, const struct policy_prefix *b)
{
    return policy_prefix_covers(a, b) || policy_prefix_covers(b, a);
}

static inline bool prefix_equal(const struct policy_prefix *a, const struct policy_prefix *b)
{
    return a->family == b->family && a->bits == b->bits && memcmp(a->addr, b->addr, 16) == 0;
}

static inline bool prefix_is_exit(const struct policy_prefix *p)
{
    return p->bits == 0;
}

static inline int prefix_cmp(const struct policy_prefix *a, const struct policy_prefix *b)
{
    int c;

    if (a->family != b->family)
        return a->family < b->family ? -1 : 1;
    c = memcmp(a->addr, b->addr, 16);
    if (c != 0)
        return c;
    return a->bits < b->bits ? -1 : a->bits > b->bits;
}

static inline bool node_has_addr_in(const struct policy_node *n, const struct policy_prefix *p)
{
    return (n->has_ipv4 && policy_prefix_contains_addr(p, 4, n->ipv4)) ||
           (n->has_ipv6 && policy_prefix_contains_addr(p, 6, n->ipv6));
}

static inline bool prefix_listed(const struct policy_prefix *r, const struct policy_prefix *list,
                                 size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (prefix_equal(&list[i], r))
            return true;
    return false;
}

/* Served routes: approved and advertised. */
static inline bool node_serves(const struct policy_node *n, const struct policy_prefix *r)
{
    return prefix_listed(r, n->approved_routes, n->n_approved_routes) &&
           prefix_listed(r, n->advertised_routes, n->n_advertised_routes);
}

static inline bool node_is_exit(const struct policy_node *n)
{
    for (size_t i = 0; i < n->n_approved_routes; i++)
        if (prefix_is_exit(&n->approved_routes[i]) && node_serves(n, &n->approved_routes[i]))
            return true;
    return false;
}

/* Does one of the node's served subnet routes overlap p? */
static inline bool node_routes_into(const struct policy_node *n, const struct policy_prefix *p)
{
    for (size_t i = 0; i < n->n_approved_routes; i++) {
        const struct policy_prefix *r = &n->approved_routes[i];

        if (!prefix_is_exit(r) && node_serves(n, r) && prefix_overlaps(r, p))
            return true;
    }
    return false;
}

static inline int json_append_str(json_t *array, const char *s)
{
    return json_array_append_new(array, json_string(s)) == 0 ? 0 : POLICY_ENOMEM;
}

/* Appends s unless one of the first `among` entries is s. */
static inline int json_add_unique_among(json_t *array, const char *s, size_t among)
{
    size_t n = json_array_size(array);

    for (size_t i = 0; i < n && i < among; i++)
        if (strcmp(json_string_value(json_array_get(array, i)), s) == 0)
            return 0;
    return json_append_str(array, s);
}

/* Appends s unless already present (for short arrays). */
static inline int json_add_unique(json_t *array, const char *s)
{
    return json_add_unique_among(array, s, SIZE_MAX);
}

/* The engine's record of a node it handed out. */
static inline const struct enode *enode_of(const struct policy_enode *n)
{
    return (const struct enode *)n;
}

/* The node's addresses, bare or as full-length prefixes, unless among the
 * array's first `among` entries. Addresses are unique per node, so a caller
 * visiting each node once checks only what came from elsewhere. */
static inline int node_addrs_append(json_t *array, const struct policy_enode *pn, bool with_bits,
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

static inline bool node_is_tagged(const struct policy_enode *n)
{
    return n->n.n_tags > 0;
}

static inline bool node_has_tag(const struct policy_enode *n, const char *tag)
{
    for (size_t i = 0; i < n->n.n_tags; i++)
        if (strcmp(n->n.tags[i], tag) == 0)
            return true;
    return false;
}

/* ---- engine.c ---- */

/* The node by id after bringing rules and caches up to date; NULL when
 * unknown or out of memory. */
struct enode *engine_query(struct policy_engine *e, uint64_t node_id);
/* The node by id, as it is; NULL when unknown. */
struct enode *engine_node(const struct policy_engine *e, uint64_t id);
/* Drops n's cached answers: all of them, or its visibility only. */
void engine_drop_caches(struct enode *n);
void engine_visible_drop(struct enode *n);
/* Computes n's visibility and route access. 0 or POLICY_ENOMEM. */
int engine_visible_refresh(const struct policy_engine *e, struct enode *n);

/* ---- rules.c ---- */

void rules_free(struct rule *rules, size_t n);
/* The rules of e->p (none when NULL), not yet resolved. */
int rules_build(struct policy_engine *e);
/* Resolves the rules: everything after a policy change, else what changed
 * since the last time (nodes marked is_changed, slots removed). */
int rules_resolve(struct policy_engine *e, bool everything);
/* Node n's PacketFilter; NULL when out of memory. */
json_t *rules_filter(const struct policy_engine *e, const struct enode *n);
/* The slots v sees; and which routes v may use (into v). */
uint64_t *rules_visible(const struct policy_engine *e, const struct enode *v);
int rules_route_access(const struct policy_engine *e, struct enode *v);

/* ---- routes.c ---- */

/* Elects the primaries again and drops every node's routes answers. */
int routes_elect(struct policy_engine *e);

#endif
