/* server/policy/check_tests.c: the policy's `tests`, and the check a new
 * policy passes before it is accepted (policy_engine_check).
 *
 * A test names a source identity (a user, group, tag or address) and
 * destinations that each name one endpoint (a user, tag, host or address and
 * one port). Like Tailscale, tests are evaluated against the rules, not only
 * against the devices of the moment: an accept test passes when some ACL or
 * grant admits the source to the endpoint's port with the test's protocol
 * (TCP unless given), a deny test when none does. Devices count where the
 * rules speak in addresses: a rule for 100.64.0.1 admits the user whose
 * device has that address, and a rule for tag:a admits the address of a
 * device tagged tag:a. A group source stands for each of its members. */
#include "server/policy/engine_internal.h"

#include <stdio.h>
#include <string.h>

#define PROTO_TCP 6

/* Tailscale's default protocol set for a rule without "proto". */
static const int default_protos[] = {6, 17, 1, 58};

/* One side of a test: a stand-in device carrying the identity (its user, a
 * tag, or the address), and whether the real devices to consult are those
 * with the address (an address identity) or those of the user or tag. */
struct identity {
    struct policy_enode probe;
    struct policy_euser user; /* when probe.user points here */
    const char *tag;
    const struct policy_alias *alias;
    bool is_addr;
};

struct tests_ctx {
    const struct policy *p;
    const struct policy_engine *e;
};

static const struct policy_euser *user_by_token(const struct policy_engine *e, const char *token)
{
    for (size_t i = 0; i < policy_engine_user_count(e); i++)
        if (policy_user_matches(policy_engine_user_at(e, i), token))
            return policy_engine_user_at(e, i);
    return NULL;
}

/* A user token's identity; a user the tailnet does not have is a stand-in
 * with that address, which only rules naming it literally match. */
static void identity_user(struct identity *id, const struct tests_ctx *c, const char *token)
{
    const struct policy_euser *u = user_by_token(c->e, token);

    *id = (struct identity){0};
    if (u != NULL) {
        id->probe.user = u;
    } else {
        id->user.u.name = "";
        id->user.u.email = token;
        id->probe.user = &id->user;
    }
}

static void identity_of(struct identity *id, const struct tests_ctx *c,
                        const struct policy_alias *a)
{
    *id = (struct identity){.alias = a};
    switch (a->kind) {
    case POLICY_ALIAS_USER:
        identity_user(id, c, a->name);
        id->alias = a;
        break;
    case POLICY_ALIAS_TAG:
        id->tag = a->name;
        id->probe.n.tags = &id->tag;
        id->probe.n.n_tags = 1;
        break;
    case POLICY_ALIAS_HOST:
    case POLICY_ALIAS_PREFIX:
        id->is_addr = true;
        if (a->prefix.family == 4) {
            id->probe.n.has_ipv4 = true;
            memcpy(id->probe.n.ipv4, a->prefix.addr, 4);
        } else {
            id->probe.n.has_ipv6 = true;
            memcpy(id->probe.n.ipv6, a->prefix.addr, 16);
        }
        break;
    case POLICY_ALIAS_AUTOGROUP:
        if (a->autogroup == POLICY_AUTOGROUP_TAGGED) {
            id->tag = "autogroup:tagged";
            id->probe.n.tags = &id->tag;
            id->probe.n.n_tags = 1;
        } else if (a->autogroup == POLICY_AUTOGROUP_MEMBER) {
            id->user.u.name = "";
            id->probe.user = &id->user;
        }
        break;
    default:
        break;
    }
}

/* A test destination; autogroup:self is the source's own devices. */
static void dst_identity(struct identity *id, const struct tests_ctx *c, const struct identity *src,
                         const struct policy_alias *a)
{
    if (a->kind == POLICY_ALIAS_AUTOGROUP && a->autogroup == POLICY_AUTOGROUP_SELF) {
        *id = *src;
        if (src->probe.user == &src->user)
            id->probe.user = &id->user;
        if (src->probe.n.tags == &src->tag)
            id->probe.n.tags = &id->tag;
        id->alias = a;
        return;
    }
    identity_of(id, c, a);
}

/* Is real device n one of the identity's? */
static bool identity_has(const struct tests_ctx *c, const struct identity *id,
                         const struct policy_enode *n)
{
    if (id->is_addr)
        return policy_alias_matches_node(c->p, id->alias, n);
    if (id->tag != NULL)
        return id->alias->kind == POLICY_ALIAS_TAG ? policy_alias_matches_node(c->p, id->alias, n)
                                                   : n->n.n_tags > 0;
    return n->n.n_tags == 0 && n->user != NULL && n->user == id->probe.user;
}

/* Does alias a (of a rule) name the identity? */
static bool alias_names(const struct tests_ctx *c, const struct policy_alias *a,
                        const struct identity *id)
{
    bool by_addr = a->kind == POLICY_ALIAS_PREFIX || a->kind == POLICY_ALIAS_HOST;

    if (policy_alias_matches_node(c->p, a, &id->probe))
        return true;
    if (!by_addr && !id->is_addr)
        return false;
    for (size_t i = 0; i < policy_engine_node_count(c->e); i++) {
        const struct policy_enode *n = policy_engine_node_at(c->e, i);

        if (identity_has(c, id, n) && policy_alias_matches_node(c->p, a, n))
            return true;
    }
    return false;
}

static bool proto_allows(const struct policy_protos *rule, int proto)
{
    if (rule->n == 0) {
        for (size_t i = 0; i < sizeof default_protos / sizeof default_protos[0]; i++)
            if (default_protos[i] == proto)
                return true;
        return false;
    }
    for (size_t i = 0; i < rule->n; i++)
        if (rule->numbers[i] == proto)
            return true;
    return false;
}

static bool ports_allow(const struct policy_port_range *r, size_t n, uint16_t port)
{
    for (size_t i = 0; i < n; i++)
        if (r[i].first <= port && port <= r[i].last)
            return true;
    return false;
}

static bool is_autogroup(const struct policy_alias *a, enum policy_autogroup g)
{
    return a->kind == POLICY_ALIAS_AUTOGROUP && a->autogroup == g;
}

/* Does rule destination a admit the endpoint dst, for source src? */
static bool dst_admits(const struct tests_ctx *c, const struct policy_alias *a,
                       const struct identity *src, const struct identity *dst)
{
    if (is_autogroup(a, POLICY_AUTOGROUP_INTERNET))
        return is_autogroup(dst->alias, POLICY_AUTOGROUP_INTERNET);
    if (is_autogroup(a, POLICY_AUTOGROUP_SELF))
        return src->probe.user != NULL && src->probe.user == dst->probe.user &&
               src->probe.n.n_tags == 0 && dst->probe.n.n_tags == 0;
    return alias_names(c, a, dst);
}

static bool any_names(const struct tests_ctx *c, const struct policy_alias *a, size_t n,
                      const struct identity *id)
{
    for (size_t i = 0; i < n; i++)
        if (alias_names(c, &a[i], id))
            return true;
    return false;
}

/* Does some ACL or grant admit src to dst on port with proto? */
static bool admitted(const struct tests_ctx *c, const struct identity *src,
                     const struct identity *dst, uint16_t port, int proto)
{
    const struct policy *p = c->p;

    for (size_t i = 0; i < p->n_acls; i++) {
        const struct policy_acl *acl = &p->acls[i];

        if (!proto_allows(&acl->proto, proto) || !any_names(c, acl->src, acl->n_src, src))
            continue;
        for (size_t j = 0; j < acl->n_dst; j++)
            if (ports_allow(acl->dst[j].ports, acl->dst[j].n_ports, port) &&
                dst_admits(c, &acl->dst[j].alias, src, dst))
                return true;
    }
    for (size_t i = 0; i < p->n_grants; i++) {
        const struct policy_grant *g = &p->grants[i];
        bool ip_ok = false;

        for (size_t k = 0; k < g->n_ip && !ip_ok; k++)
            ip_ok = proto_allows(&g->ip[k].proto, proto) && ports_allow(&g->ip[k].ports, 1, port);
        if (!ip_ok || g->n_via > 0 || !any_names(c, g->src, g->n_src, src))
            continue;
        for (size_t j = 0; j < g->n_dst; j++)
            if (dst_admits(c, &g->dst[j], src, dst))
                return true;
    }
    return false;
}

static int test_fail(struct policy_error *err, const struct policy_test *t, size_t index,
                     const char *src, const struct policy_acl_dst *d, bool expected_accept)
{
    if (err != NULL) {
        err->line = t->pos.line;
        err->col = t->pos.col;
        snprintf(err->message, sizeof err->message,
                 "test %zu failed: %s %s reach %s:%u (expected %s)", index + 1, src,
                 expected_accept ? "cannot" : "can", d->alias.name,
                 d->n_ports > 0 ? d->ports[0].first : 0, expected_accept ? "accept" : "deny");
    }
    return POLICY_ETEST;
}

/* One source identity against every destination of test t. */
static int test_identity(const struct tests_ctx *c, const struct policy_test *t, size_t index,
                         const struct identity *src, const char *src_name, struct policy_error *err)
{
    int proto = t->proto.n > 0 ? t->proto.numbers[0] : PROTO_TCP;
    struct identity dst;

    for (size_t i = 0; i < t->n_accept; i++) {
        const struct policy_acl_dst *d = &t->accept[i];

        dst_identity(&dst, c, src, &d->alias);
        if (d->n_ports == 0 || !admitted(c, src, &dst, d->ports[0].first, proto))
            return test_fail(err, t, index, src_name, d, true);
    }
    for (size_t i = 0; i < t->n_deny; i++) {
        const struct policy_acl_dst *d = &t->deny[i];

        dst_identity(&dst, c, src, &d->alias);
        if (d->n_ports == 0 || admitted(c, src, &dst, d->ports[0].first, proto))
            return test_fail(err, t, index, src_name, d, false);
    }
    return 0;
}

int policy_acl_tests_check(const struct policy *p, const struct policy_engine *e,
                           struct policy_error *err)
{
    struct tests_ctx c = {p, e};

    for (size_t i = 0; p != NULL && i < p->n_tests; i++) {
        const struct policy_test *t = &p->tests[i];
        struct identity src;
        int rv;

        if (t->src.kind != POLICY_ALIAS_GROUP) {
            identity_of(&src, &c, &t->src);
            rv = test_identity(&c, t, i, &src, t->src.name, err);
            if (rv != 0)
                return rv;
            continue;
        }
        for (size_t m = 0; m < p->groups[t->src.index].n_members; m++) {
            const char *member = p->groups[t->src.index].members[m];

            identity_user(&src, &c, member);
            src.alias = &t->src;
            rv = test_identity(&c, t, i, &src, member, err);
            if (rv != 0)
                return rv;
        }
    }
    return 0;
}

int policy_engine_check(struct policy_engine *e, const struct policy *p, struct policy_error *err)
{
    int rv;

    if (err != NULL)
        *err = (struct policy_error){0};
    if (p == NULL)
        return 0;
    rv = policy_users_check(p, e, err);
    if (rv == 0)
        rv = policy_acl_tests_check(p, e, err);
    if (rv == 0)
        rv = policy_ssh_tests_check(p, e, err);
    return rv;
}
