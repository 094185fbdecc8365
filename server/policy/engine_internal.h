/* server/policy/engine_internal.h: the engine's view of the tailnet, shared
 * by engine.c (users, nodes, caches, packet filters, visibility, routes) and
 * the other compilers (ssh.c: SSH policy and sshTests; attrs.c: nodeAttrs
 * capabilities; check.c: users a policy names must exist). */
#ifndef CONCORD_SERVER_POLICY_ENGINE_INTERNAL_H
#define CONCORD_SERVER_POLICY_ENGINE_INTERNAL_H

#include "server/policy/policy_internal.h"

struct policy_euser {
    struct policy_user u; /* strings owned */
};

struct policy_enode {
    struct policy_node n;            /* deep copy: strings and arrays owned */
    const struct policy_euser *user; /* NULL when tagged or the user is unknown */
};

/* Does the user token of a policy ("odin@example.com", "odin@") name u? An
 * address matches the email; "name@" matches the login name. */
bool policy_user_matches(const struct policy_euser *u, const char *token);

/* Does node n belong to alias a of policy p, as a source, destination or
 * target? USER, GROUP, TAG, WILDCARD, HOST and PREFIX (the node's addresses
 * inside it), AUTOGROUP member, tagged and danger-all. autogroup:self and
 * autogroup:internet depend on the other side of a rule: callers handle them
 * (false here). */
bool policy_alias_matches_node(const struct policy *p, const struct policy_alias *a,
                               const struct policy_enode *n);

/* Prefix arithmetic: p holds the address (family 4 or 6); a contains b. */
bool policy_prefix_contains_addr(const struct policy_prefix *p, int family, const uint8_t *addr);
bool policy_prefix_covers(const struct policy_prefix *a, const struct policy_prefix *b);

/* Node by id, or NULL. */
const struct policy_enode *policy_engine_node_get(const struct policy_engine *e, uint64_t id);
/* Visits every node in id order. */
size_t policy_engine_node_count(const struct policy_engine *e);
const struct policy_enode *policy_engine_node_at(const struct policy_engine *e, size_t i);
/* The engine's current policy (NULL: the default). */
const struct policy *policy_engine_policy(const struct policy_engine *e);

/* ---- ssh.c ---- */

/* tailcfg.SSHPolicy for node n under p: {"rules": [...]}. NULL: no memory.
 * Resolves every rule's sources: to answer many nodes, use a plan. */
json_t *policy_ssh_compile(const struct policy *p, const struct policy_engine *e,
                           const struct policy_enode *n);
/* The SSH rules of p with their sources resolved against the engine's
 * nodes and users, shared by every node's SSH policy: build it once per
 * change (of p, a node or a user), then compile each node from it in time
 * proportional to its rules. Borrows p and the engine's nodes: free it
 * before they change. NULL: no memory. */
struct policy_ssh_plan;
struct policy_ssh_plan *policy_ssh_plan_new(const struct policy *p, const struct policy_engine *e);
void policy_ssh_plan_free(struct policy_ssh_plan *plan); /* NULL is fine */
/* Node n's SSHPolicy, as policy_ssh_compile, from a plan of the current
 * nodes. The JSON is fresh: the caller owns it. NULL: no memory. */
json_t *policy_ssh_plan_compile(const struct policy_ssh_plan *plan, const struct policy_enode *n);
/* Evaluates p's sshTests against the engine's nodes: 0, or POLICY_ETEST with
 * *err naming the failing test. */
int policy_ssh_tests_check(const struct policy *p, const struct policy_engine *e,
                           struct policy_error *err);

/* ---- check_tests.c ---- */

/* Evaluates p's `tests` against the engine's users and nodes: 0, or
 * POLICY_ETEST with *err naming the failing test. */
int policy_acl_tests_check(const struct policy *p, const struct policy_engine *e,
                           struct policy_error *err);

/* ---- check.c ---- */

/* Every user p names (in groups, tagOwners, aliases, approvers, tests)
 * exists among the engine's users: 0, or POLICY_EINVAL with *err at the
 * first unknown one. */
int policy_users_check(const struct policy *p, const struct policy_engine *e,
                       struct policy_error *err);
/* Implemented by engine.c for check.c: the users in ascending id order. */
size_t policy_engine_user_count(const struct policy_engine *e);
const struct policy_euser *policy_engine_user_at(const struct policy_engine *e, size_t i);

/* ---- attrs.c ---- */

/* Node n's own CapMap under p: the default capabilities plus nodeAttrs. */
json_t *policy_capmap_compile(const struct policy *p, const struct policy_engine *e,
                              const struct policy_enode *n);
/* What other nodes see in peer's Peer.CapMap: the capabilities Tailscale
 * propagates to peers (suggest-exit-node, on an approved exit node). NULL
 * when there is none (the usual case: the map omits Peer.CapMap) or no
 * memory. */
json_t *policy_peer_capmap_compile(const struct policy *p, const struct policy_engine *e,
                                   const struct policy_enode *peer);

#endif
