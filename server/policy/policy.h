/* server/policy/policy.h: the ACL policy engine. A policy document (HuJSON,
 * Tailscale's format) is parsed once into an immutable struct policy; an
 * engine applies one policy to the tailnet's users and nodes and answers,
 * per node, exactly what Tailscale's control server sends it: the packet
 * filter, which peers it sees (with their AllowedIPs and PrimaryRoutes), its
 * SSH policy and its capability map.
 *
 * Pure: no I/O, no clocks, no globals. The same inputs give the same answers
 * on every replica, so every replica enforces the same thing. The engine is
 * incremental: putting or removing one node recomputes what that node
 * touches, not the world; queries are answered from caches that are rebuilt
 * lazily, once per change, not once per session. Not thread-safe: one engine
 * belongs to one loop thread. */
#ifndef CONCORD_SERVER_POLICY_POLICY_H
#define CONCORD_SERVER_POLICY_POLICY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Error codes: 0 is success. */
#define POLICY_ERRORS(X)                                                                           \
    X(POLICY_ENOMEM, -1, "out of memory")                                                          \
    X(POLICY_EINVAL, -2, "invalid policy")                                                         \
    X(POLICY_ETEST, -3, "a policy test failed")                                                    \
    X(POLICY_ENOTFOUND, -4, "no such node")
#define X(name, value, text) name = value,
enum { POLICY_ERRORS(X) };
#undef X
const char *policy_strerror(int rv);

/* Why a policy was refused: where, when the problem has a place in the text
 * (line and col 0 otherwise, e.g. a failing test names the test instead). */
struct policy_error {
    unsigned line; /* 1-based */
    unsigned col;  /* 1-based, in characters */
    char message[256];
};

/* ---- addresses ---- */

struct policy_prefix {
    uint8_t family; /* 4 or 6 */
    uint8_t bits;
    uint8_t addr[16]; /* IPv4 in the first 4 bytes; host bits are zero */
};

/* "100.64.0.1/32", "10.0.0.0/8", "fd7a:115c:a1e0::/48": 0 or POLICY_EINVAL.
 * A bare address is a full-length prefix; host bits set are an error. */
int policy_prefix_parse(const char *text, struct policy_prefix *out);
/* Canonical text into buf (at least 50 bytes). */
void policy_prefix_format(const struct policy_prefix *p, char *buf, size_t size);

/* ---- the document ---- */

struct policy; /* parsed and validated; immutable; see policy_internal.h */

/* Parses text[0..len) (HuJSON: JSON plus comments and trailing commas) into
 * *out. Checks everything that needs no tailnet: syntax, unknown keys, types,
 * references to undefined groups, tags and hosts, port and protocol syntax,
 * SSH actions and users, cycles, limits. Returns 0, POLICY_EINVAL with *err
 * (may be NULL) filled, or POLICY_ENOMEM. Bounded time and memory on hostile
 * input (depth, element counts and text size are limited). */
int policy_parse(const char *text, size_t len, struct policy **out, struct policy_error *err);
void policy_free(struct policy *p);

/* randomizeClientPort, for the map's Debug/RandomizeClientPort. */
bool policy_randomize_client_port(const struct policy *p);

/* ---- the tailnet the policy applies to ---- */

struct policy_user {
    uint64_t id;
    const char *name;  /* login name, e.g. "odin" */
    const char *email; /* "odin@example.com", or NULL */
};

struct policy_node {
    uint64_t id;
    const char *hostname;
    uint64_t user_id; /* owner; a tagged node is owned by its tags, not by a user */
    const char *const *tags;
    size_t n_tags;
    bool has_ipv4;
    bool has_ipv6;
    uint8_t ipv4[4];
    uint8_t ipv6[16];
    const struct policy_prefix *advertised_routes; /* Hostinfo.RoutableIPs */
    size_t n_advertised_routes;
    const struct policy_prefix *approved_routes; /* by an operator or autoApprovers */
    size_t n_approved_routes;
    bool online; /* for primary-route election */
    /* How long it has been online without a break, as an ordering: smaller
     * is longer (concord gives the Raft index at which its oldest open map
     * session opened, the same on every replica); 0: unknown. */
    uint64_t online_since;
};

/* ---- the engine ---- */

struct policy_engine;

/* An engine for policy p, or for the default (allow all, every node sees every
 * other, no SSH) when p is NULL. The engine borrows p: keep it alive until
 * policy_engine_free or policy_engine_set_policy replaces it. Inputs are
 * copied. NULL when out of memory. */
struct policy_engine *policy_engine_new(const struct policy *p);
void policy_engine_free(struct policy_engine *e);
/* Swaps the policy; everything is recomputed once, on the next query. */
void policy_engine_set_policy(struct policy_engine *e, const struct policy *p);

/* Adds or replaces (by id). 0 or POLICY_ENOMEM. */
int policy_engine_user_put(struct policy_engine *e, const struct policy_user *u);
void policy_engine_user_remove(struct policy_engine *e, uint64_t user_id);
int policy_engine_node_put(struct policy_engine *e, const struct policy_node *n);
void policy_engine_node_remove(struct policy_engine *e, uint64_t node_id);

/* Checks the parts of p that need the tailnet, against the engine's current
 * users and nodes: users named in the policy exist, and every `tests` and
 * `sshTests` entry holds. 0, POLICY_EINVAL or POLICY_ETEST with *err filled,
 * or POLICY_ENOMEM. Run before a new policy is accepted; changes nothing. */
int policy_engine_check(struct policy_engine *e, const struct policy *p, struct policy_error *err);

/* Per-node answers. Each returns a new reference (json_decref it) or NULL
 * when the node is unknown or memory ran out. The JSON is the wire form of
 * tailcfg, ready to be sent. */

/* MapResponse.PacketFilter: array of tailcfg.FilterRule. */
json_t *policy_engine_filter(struct policy_engine *e, uint64_t node_id);
/* MapResponse.SSHPolicy: {"rules": [...]} (rules empty when none apply). */
json_t *policy_engine_ssh(struct policy_engine *e, uint64_t node_id);
/* The node's own CapMap: the default capabilities plus nodeAttrs. */
json_t *policy_engine_capmap(struct policy_engine *e, uint64_t node_id);

/* What peers see in the node's Peer.CapMap (suggest-exit-node on an
 * approved exit node); NULL when there is nothing to show (the usual case:
 * the map omits it), the node is unknown or memory ran out. */
json_t *policy_engine_peer_capmap(struct policy_engine *e, uint64_t node_id);

/* Whether viewer's netmap lists peer: it can reach peer, peer can reach it,
 * or peer routes for a prefix viewer may use. False for unknown ids and for
 * viewer == peer. */
bool policy_engine_visible(struct policy_engine *e, uint64_t viewer_id, uint64_t peer_id);

/* The prefixes a peer carries in viewer's netmap (tailcfg.Node.AllowedIPs:
 * its addresses plus the routes it is primary for, plus exit routes when it
 * is an approved exit node) and the subset that are PrimaryRoutes. As
 * Tailscale does, a viewer is shown only the routes its rules let it use;
 * a node viewing itself sees all of its own. Arrays of prefix strings, new
 * references; NULL when either node is unknown. */
json_t *policy_engine_allowed_ips(struct policy_engine *e, uint64_t viewer_id, uint64_t node_id);
json_t *policy_engine_primary_routes(struct policy_engine *e, uint64_t viewer_id, uint64_t node_id);

/* Whether the policy's autoApprovers approve prefix for node (a route, or an
 * exit route 0.0.0.0/0 or ::/0 via exitNode). */
bool policy_engine_auto_approves(struct policy_engine *e, uint64_t node_id,
                                 const struct policy_prefix *prefix);

/* ---- primary-route election (pure) ---- */

struct policy_router {
    uint64_t node_id;
    bool online;
    uint64_t online_since;              /* as in struct policy_node */
    const struct policy_prefix *routes; /* served: approved ∩ advertised */
    size_t n_routes;
};

struct policy_primary {
    struct policy_prefix prefix;
    uint64_t node_id;
};
/* For each non-exit prefix served by some router, its primary: the online
 * router serving it that has been online the longest (smallest
 * online_since), the lowest node id among equals (ids grow with
 * registration, so that is the earliest registered, as Tailscale elects); 0
 * when no router serving it is online. A function of the replicated state
 * only, so every replica elects the same primary without a history of its
 * own, and sticky: a primary stays while it is online, and a router coming
 * back online is the youngest, so it never takes the route back. Exit
 * routes (/0) have no primary: every approved exit node serves them. *out
 * is allocated (free()) with one entry per prefix, sorted by prefix.
 * Returns the count or POLICY_ENOMEM. */
int policy_elect_primaries(const struct policy_router *routers, size_t n_routers,
                           struct policy_primary **out);

#endif
