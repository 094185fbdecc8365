/* server/policy/check.c: what a policy may say about users, checked against
 * the tailnet's users.
 *
 * Tailscale accepts a policy naming users it does not (yet) have: a group or
 * tag owner may list people before they join, and an unknown user in a test
 * makes the test fail, not the policy (policytest-src-unknown-user-email).
 * What it refuses is a domain wildcard (user:*@DOMAIN, localpart:*@DOMAIN)
 * for a domain not associated with the tailnet: such a rule would admit
 * anyone who can get an address there. concord has no organisation domain;
 * the tailnet's domain is the one of its first user (the lowest id, who
 * created it), as on Tailscale, where invited users from other domains
 * (thor@example.org in ssh-d1) do not widen it. */
#include "server/policy/engine_internal.h"

#include <stdio.h>
#include <string.h>

#define USER_WILDCARD    "*@"
#define USER_PREFIX      "user:"
#define LOCALPART_PREFIX "localpart:*@"

struct domain_check {
    const char *domain; /* the tailnet's, or NULL: none */
    struct policy_error *err;
};

static const char *tailnet_domain(const struct policy_engine *e)
{
    const struct policy_euser *first;
    const char *at;

    if (policy_engine_user_count(e) == 0)
        return NULL;
    first = policy_engine_user_at(e, 0);
    at = first->u.email == NULL ? NULL : strrchr(first->u.email, '@');
    return at == NULL || at[1] == '\0' ? NULL : at + 1;
}

static int domain_refuse(struct domain_check *c, const char *domain, struct policy_pos pos)
{
    if (c->err != NULL) {
        c->err->line = pos.line;
        c->err->col = pos.col;
        snprintf(c->err->message, sizeof c->err->message,
                 "%s is not associated with this tailnet and cannot be used in "
                 "user:*@<domain> expressions",
                 domain);
    }
    return POLICY_EINVAL;
}

static int domain_check(struct domain_check *c, const char *domain, struct policy_pos pos)
{
    if (c->domain != NULL && strcmp(domain, c->domain) == 0)
        return 0;
    return domain_refuse(c, domain, pos);
}

/* A user token: "*@example.com" or "user:*@example.com" is a domain
 * wildcard; anything else names one user and is fine. */
static int token_check(struct domain_check *c, const char *token, struct policy_pos pos)
{
    if (strncmp(token, USER_PREFIX, strlen(USER_PREFIX)) == 0)
        token += strlen(USER_PREFIX);
    if (strncmp(token, USER_WILDCARD, strlen(USER_WILDCARD)) != 0)
        return 0;
    return domain_check(c, token + strlen(USER_WILDCARD), pos);
}

static int aliases_check(struct domain_check *c, const struct policy_alias *a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i].kind == POLICY_ALIAS_USER && token_check(c, a[i].name, a[i].pos) != 0)
            return POLICY_EINVAL;
    return 0;
}

static int acl_dsts_check(struct domain_check *c, const struct policy_acl_dst *d, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (aliases_check(c, &d[i].alias, 1) != 0)
            return POLICY_EINVAL;
    return 0;
}

static int ssh_rule_check(struct domain_check *c, const struct policy_ssh_rule *r)
{
    if (aliases_check(c, r->src, r->n_src) != 0 || aliases_check(c, r->dst, r->n_dst) != 0)
        return POLICY_EINVAL;
    for (size_t i = 0; i < r->n_users; i++) {
        const char *u = r->users[i];

        while (*u == ' ' || *u == '\t')
            u++;
        if (strncmp(u, LOCALPART_PREFIX, strlen(LOCALPART_PREFIX)) == 0 &&
            u[strlen(LOCALPART_PREFIX)] != '\0' &&
            domain_check(c, u + strlen(LOCALPART_PREFIX), r->pos) != 0)
            return POLICY_EINVAL;
    }
    return 0;
}

static int groups_check(struct domain_check *c, const struct policy *p)
{
    for (size_t i = 0; i < p->n_groups; i++)
        for (size_t j = 0; j < p->groups[i].n_members; j++)
            if (token_check(c, p->groups[i].members[j], p->groups[i].pos) != 0)
                return POLICY_EINVAL;
    for (size_t i = 0; i < p->n_tag_owners; i++)
        if (aliases_check(c, p->tag_owners[i].owners, p->tag_owners[i].n_owners) != 0)
            return POLICY_EINVAL;
    return 0;
}

static int rules_check(struct domain_check *c, const struct policy *p)
{
    for (size_t i = 0; i < p->n_acls; i++)
        if (aliases_check(c, p->acls[i].src, p->acls[i].n_src) != 0 ||
            acl_dsts_check(c, p->acls[i].dst, p->acls[i].n_dst) != 0)
            return POLICY_EINVAL;
    for (size_t i = 0; i < p->n_grants; i++)
        if (aliases_check(c, p->grants[i].src, p->grants[i].n_src) != 0 ||
            aliases_check(c, p->grants[i].dst, p->grants[i].n_dst) != 0)
            return POLICY_EINVAL;
    for (size_t i = 0; i < p->n_ssh; i++)
        if (ssh_rule_check(c, &p->ssh[i]) != 0)
            return POLICY_EINVAL;
    for (size_t i = 0; i < p->n_node_attrs; i++)
        if (aliases_check(c, p->node_attrs[i].target, p->node_attrs[i].n_target) != 0)
            return POLICY_EINVAL;
    for (size_t i = 0; i < p->n_route_approvers; i++)
        if (aliases_check(c, p->route_approvers[i].approvers, p->route_approvers[i].n_approvers) !=
            0)
            return POLICY_EINVAL;
    return aliases_check(c, p->exit_node_approvers, p->n_exit_node_approvers);
}

static int tests_check(struct domain_check *c, const struct policy *p)
{
    for (size_t i = 0; i < p->n_tests; i++)
        if (aliases_check(c, &p->tests[i].src, 1) != 0 ||
            acl_dsts_check(c, p->tests[i].accept, p->tests[i].n_accept) != 0 ||
            acl_dsts_check(c, p->tests[i].deny, p->tests[i].n_deny) != 0)
            return POLICY_EINVAL;
    for (size_t i = 0; i < p->n_ssh_tests; i++)
        if (aliases_check(c, &p->ssh_tests[i].src, 1) != 0 ||
            aliases_check(c, p->ssh_tests[i].dst, p->ssh_tests[i].n_dst) != 0)
            return POLICY_EINVAL;
    return 0;
}

int policy_users_check(const struct policy *p, const struct policy_engine *e,
                       struct policy_error *err)
{
    struct domain_check c = {.domain = tailnet_domain(e), .err = err};

    if (p == NULL)
        return 0;
    if (groups_check(&c, p) != 0 || rules_check(&c, p) != 0 || tests_check(&c, p) != 0)
        return POLICY_EINVAL;
    return 0;
}
