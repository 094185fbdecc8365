/* server/policy/ssh.c: the SSH policy a node receives (tailcfg.SSHPolicy)
 * and the sshTests that check it.
 *
 * Tailscale's shape, as its hosted control server produces it: one SSHRule
 * per policy rule and destination, principals are the source nodes'
 * addresses ({"nodeIP": ...}), sshUsers maps login names to local users
 * ("*": "=" for autogroup:nonroot; "root" always present, "" denying it when
 * the rule does not name root), and check rules come before accept rules
 * because the client takes the first rule that matches. A rule naming
 * localpart:*@domain is split per source user, so that each user may log in
 * as the local part of their own address only. */
#include "server/policy/engine_internal.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define LOCALPART_PREFIX "localpart:*@"
#define NONROOT          "autogroup:nonroot"

/* The hold URL of a check rule. The client replaces the $ variables and asks
 * the control server over Noise; the control layer prefixes its own URL. */
#define CHECK_ACTION_PATH "/machine/ssh/action/$SRC_NODE_ID/to/$DST_NODE_ID?local_user=$LOCAL_USER"

struct addr {
    uint8_t family;
    uint8_t bytes[16];
};

/* A user token of a rule, whitespace trimmed as Tailscale trims it. */
struct ssh_user {
    const char *text;
    size_t len;
};

/* One user's nodes among a rule's sources. */
struct user_run {
    uint64_t user_id;
    const struct policy_euser *user;
    json_t *principals;      /* the nodes' addresses, as a set */
    json_t *localpart_users; /* {"odin": "odin"} under localpart:*@domain, or NULL */
};

/* A rule with its sources resolved: what every destination shares. */
struct plan_rule {
    const struct policy_ssh_rule *rule;
    bool is_check;
    bool has_localpart;
    json_t *users;         /* sshUsers every source gets */
    struct user_run *runs; /* untagged sources by user, in user id order */
    size_t n_runs;
    json_t *tagged; /* tagged sources' addresses, once per tag */
    json_t *all;    /* every run's principals, then tagged */
};

struct policy_ssh_plan {
    const struct policy *p;
    struct plan_rule *rules;
    size_t n_rules;
};

static struct ssh_user user_trim(const char *s)
{
    const char *end = s + strlen(s);

    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
        s++;
    while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n' || end[-1] == '\r'))
        end--;
    return (struct ssh_user){s, (size_t)(end - s)};
}

static bool user_is(struct ssh_user u, const char *word)
{
    return u.len == strlen(word) && memcmp(u.text, word, u.len) == 0;
}

/* "localpart:*@example.com": the domain, or NULL when u is not one. */
static const char *user_localpart_domain(struct ssh_user u, size_t *len)
{
    size_t plen = strlen(LOCALPART_PREFIX);

    if (u.len <= plen || memcmp(u.text, LOCALPART_PREFIX, plen) != 0)
        return NULL;
    *len = u.len - plen;
    return u.text + plen;
}

static size_t node_addrs(const struct policy_enode *n, struct addr out[2])
{
    size_t k = 0;

    if (n->n.has_ipv4) {
        out[k] = (struct addr){.family = 4};
        memcpy(out[k].bytes, n->n.ipv4, 4);
        k++;
    }
    if (n->n.has_ipv6) {
        out[k] = (struct addr){.family = 6};
        memcpy(out[k].bytes, n->n.ipv6, 16);
        k++;
    }
    return k;
}

static void addr_format(const struct addr *a, char buf[INET6_ADDRSTRLEN])
{
    inet_ntop(a->family == 4 ? AF_INET : AF_INET6, a->bytes, buf, INET6_ADDRSTRLEN);
}

static int addr_cmp(const void *pa, const void *pb)
{
    const struct addr *a = pa;
    const struct addr *b = pb;

    if (a->family != b->family)
        return a->family < b->family ? -1 : 1;
    return memcmp(a->bytes, b->bytes, a->family == 4 ? 4 : 16);
}

static bool prefix_contains(const struct policy_prefix *p, const struct addr *a)
{
    size_t full = p->bits / 8;
    unsigned rest = p->bits % 8;

    if (a->family != p->family)
        return false;
    if (memcmp(p->addr, a->bytes, full) != 0)
        return false;
    return rest == 0 || ((p->addr[full] ^ a->bytes[full]) & (uint8_t)(0xff << (8 - rest))) == 0;
}

static int principal_append(json_t *principals, const struct addr *a)
{
    char buf[INET6_ADDRSTRLEN];

    addr_format(a, buf);
    return json_array_append_new(principals, json_pack("{s:s}", "nodeIP", buf));
}

/* The principals of nodes[0..n), as an address set: sorted, IPv4 first,
 * each address once. */
static json_t *principals_of(const struct policy_enode *const *nodes, size_t n)
{
    struct addr *addrs = calloc(2 * n + 1, sizeof *addrs);
    json_t *principals = json_array();
    size_t k = 0;

    if (addrs == NULL || principals == NULL)
        goto err;
    for (size_t i = 0; i < n; i++)
        k += node_addrs(nodes[i], addrs + k);
    qsort(addrs, k, sizeof *addrs, addr_cmp);
    for (size_t i = 0; i < k; i++) {
        if (i > 0 && addr_cmp(&addrs[i - 1], &addrs[i]) == 0)
            continue;
        if (principal_append(principals, &addrs[i]) != 0)
            goto err;
    }
    free(addrs);
    return principals;

err:
    free(addrs);
    json_decref(principals);
    return NULL;
}

static json_t *action_json(const struct policy_ssh_rule *r)
{
    if (r->action == POLICY_SSH_CHECK)
        return json_pack("{s:s}", "holdAndDelegate", CHECK_ACTION_PATH);
    return json_pack("{s:b,s:b,s:b,s:b}", "accept", 1, "allowAgentForwarding", 1,
                     "allowLocalPortForwarding", 1, "allowRemotePortForwarding", 1);
}

/* The sshUsers every source of r gets: named users map to themselves,
 * autogroup:nonroot to "*": "=", and root is denied unless named (the client
 * would otherwise let "*" map root too). */
static json_t *base_users_json(const struct policy_ssh_rule *r, bool *has_localpart)
{
    json_t *users = json_object();
    bool has_root = false;

    *has_localpart = false;
    if (users == NULL)
        return NULL;
    for (size_t i = 0; i < r->n_users; i++) {
        struct ssh_user u = user_trim(r->users[i]);
        size_t dlen;
        char *name;
        int rv;

        if (user_localpart_domain(u, &dlen) != NULL) {
            *has_localpart = true;
            continue;
        }
        if (user_is(u, "root"))
            has_root = true;
        if (user_is(u, NONROOT)) {
            rv = json_object_set_new(users, "*", json_string("="));
        } else {
            name = strndup(u.text, u.len);
            rv = name == NULL ? -1 : json_object_set_new(users, name, json_string(name));
            free(name);
        }
        if (rv != 0)
            goto err;
    }
    if (!has_root && json_object_set_new(users, "root", json_string("")) != 0)
        goto err;
    return users;

err:
    json_decref(users);
    return NULL;
}

/* The local part u may log in as under r's localpart:*@domain entries:
 * a copy of the part of u's email before the @, or NULL (also when out of
 * memory, which the caller cannot tell apart: *nomem says). */
static char *user_localpart(const struct policy_ssh_rule *r, const struct policy_euser *u,
                            bool *nomem)
{
    const char *email = u == NULL ? NULL : u->u.email;
    const char *at = email == NULL ? NULL : strrchr(email, '@');
    char *out = NULL;

    *nomem = false;
    if (at == NULL || at == email)
        return NULL;
    for (size_t i = 0; i < r->n_users && out == NULL; i++) {
        size_t dlen;
        const char *domain = user_localpart_domain(user_trim(r->users[i]), &dlen);

        if (domain != NULL && strlen(at + 1) == dlen && strncasecmp(at + 1, domain, dlen) == 0) {
            out = strndup(email, (size_t)(at - email));
            *nomem = out == NULL;
        }
    }
    return out;
}

static bool node_is_tagged(const struct policy_enode *n)
{
    return n->n.n_tags > 0;
}

static bool alias_list_matches(const struct policy *p, const struct policy_alias *a, size_t n,
                               const struct policy_enode *node)
{
    for (size_t i = 0; i < n; i++)
        if (policy_alias_matches_node(p, &a[i], node))
            return true;
    return false;
}

static int owned_cmp(const void *pa, const void *pb)
{
    const struct policy_enode *a = *(const struct policy_enode *const *)pa;
    const struct policy_enode *b = *(const struct policy_enode *const *)pb;

    if (a->user->u.id != b->user->u.id)
        return a->user->u.id < b->user->u.id ? -1 : 1;
    if (a->n.id != b->n.id)
        return a->n.id < b->n.id ? -1 : 1;
    return 0;
}

static int run_init(struct plan_rule *pr, const struct policy_enode *const *nodes, size_t n,
                    struct user_run *run)
{
    bool nomem = false;
    char *lp;

    run->user_id = nodes[0]->user->u.id;
    run->user = nodes[0]->user;
    run->principals = principals_of(nodes, n);
    if (run->principals == NULL)
        return POLICY_ENOMEM;
    if (!pr->has_localpart)
        return 0;
    lp = user_localpart(pr->rule, run->user, &nomem);
    if (nomem)
        return POLICY_ENOMEM;
    if (lp != NULL)
        run->localpart_users = json_pack("{s:s}", lp, lp);
    free(lp);
    return lp != NULL && run->localpart_users == NULL ? POLICY_ENOMEM : 0;
}

/* Groups owned[0..n) (sorted by user) into pr->runs and fills pr->all. */
static int plan_runs(struct plan_rule *pr, const struct policy_enode **owned, size_t n)
{
    size_t cnt;

    pr->runs = calloc(n + 1, sizeof *pr->runs);
    if (pr->runs == NULL)
        return POLICY_ENOMEM;
    for (size_t i = 0; i < n; i += cnt) {
        struct user_run *run = &pr->runs[pr->n_runs++];

        for (cnt = 1; i + cnt < n && owned[i + cnt]->user->u.id == owned[i]->user->u.id; cnt++)
            ;
        if (run_init(pr, owned + i, cnt, run) != 0 ||
            json_array_extend(pr->all, run->principals) != 0)
            return POLICY_ENOMEM;
    }
    return 0;
}

/* Tagged sources appear once per tag, as Tailscale lists each tag's
 * members in turn (ssh-b6). */
static int plan_tagged(struct plan_rule *pr, const struct policy_enode *const *tagged, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct addr addrs[2];
        size_t k = node_addrs(tagged[i], addrs);

        for (size_t t = 0; t < tagged[i]->n.n_tags; t++)
            for (size_t j = 0; j < k; j++)
                if (principal_append(pr->tagged, &addrs[j]) != 0)
                    return POLICY_ENOMEM;
    }
    return json_array_extend(pr->all, pr->tagged) == 0 ? 0 : POLICY_ENOMEM;
}

static int plan_rule_init(const struct policy *p, const struct policy_engine *e,
                          const struct policy_ssh_rule *r, struct plan_rule *pr)
{
    size_t n = policy_engine_node_count(e);
    const struct policy_enode **owned = calloc(n + 1, sizeof *owned);
    const struct policy_enode **tagged = calloc(n + 1, sizeof *tagged);
    size_t n_owned = 0;
    size_t n_tagged = 0;
    int rv = POLICY_ENOMEM;

    pr->rule = r;
    pr->is_check = r->action == POLICY_SSH_CHECK;
    pr->users = base_users_json(r, &pr->has_localpart);
    pr->tagged = json_array();
    pr->all = json_array();
    if (owned == NULL || tagged == NULL || pr->users == NULL || pr->tagged == NULL ||
        pr->all == NULL)
        goto out;
    for (size_t i = 0; i < n; i++) {
        const struct policy_enode *node = policy_engine_node_at(e, i);

        if (!alias_list_matches(p, r->src, r->n_src, node))
            continue;
        if (node_is_tagged(node))
            tagged[n_tagged++] = node;
        else if (node->user != NULL)
            owned[n_owned++] = node;
    }
    qsort(owned, n_owned, sizeof *owned, owned_cmp);
    rv = plan_runs(pr, owned, n_owned);
    if (rv == 0)
        rv = plan_tagged(pr, tagged, n_tagged);
out:
    free(owned);
    free(tagged);
    return rv;
}

void policy_ssh_plan_free(struct policy_ssh_plan *plan)
{
    if (plan == NULL)
        return;
    for (size_t i = 0; i < plan->n_rules; i++) {
        struct plan_rule *pr = &plan->rules[i];

        for (size_t j = 0; j < pr->n_runs; j++) {
            json_decref(pr->runs[j].principals);
            json_decref(pr->runs[j].localpart_users);
        }
        free(pr->runs);
        json_decref(pr->users);
        json_decref(pr->tagged);
        json_decref(pr->all);
    }
    free(plan->rules);
    free(plan);
}

struct policy_ssh_plan *policy_ssh_plan_new(const struct policy *p, const struct policy_engine *e)
{
    struct policy_ssh_plan *plan = calloc(1, sizeof *plan);
    size_t n = p == NULL ? 0 : p->n_ssh;

    if (plan == NULL)
        return NULL;
    plan->p = p;
    plan->rules = calloc(n + 1, sizeof *plan->rules);
    if (plan->rules == NULL)
        goto err;
    for (size_t i = 0; i < n; i++) {
        plan->n_rules++;
        if (plan_rule_init(p, e, &p->ssh[i], &plan->rules[i]) != 0)
            goto err;
    }
    return plan;

err:
    policy_ssh_plan_free(plan);
    return NULL;
}

/* Appends to out one tailcfg.SSHRule. Its principals and sshUsers are
 * shared with the plan and other nodes' rules: read-only, like every answer
 * of the engine. */
static int rule_append(const struct plan_rule *pr, json_t *principals, json_t *users, json_t *out)
{
    const struct policy_ssh_rule *r = pr->rule;
    json_t *rule = json_pack("{s:O,s:O,s:o}", "principals", principals, "sshUsers", users, "action",
                             action_json(r));
    json_t *env;

    if (rule == NULL)
        return POLICY_ENOMEM;
    if (r->n_accept_env > 0) {
        env = json_array();
        if (env == NULL || json_object_set_new(rule, "acceptEnv", env) != 0)
            goto err;
        for (size_t i = 0; i < r->n_accept_env; i++)
            if (json_array_append_new(env, json_string(r->accept_env[i])) != 0)
                goto err;
    }
    if (json_array_append_new(out, rule) == 0)
        return 0;
    return POLICY_ENOMEM;

err:
    json_decref(rule);
    return POLICY_ENOMEM;
}

/* The rule for a run's nodes and, when the user may log in as the local
 * part of their address, a second one mapping that name only. */
static int emit_run(const struct plan_rule *pr, const struct user_run *run, json_t *out)
{
    if (rule_append(pr, run->principals, pr->users, out) != 0)
        return POLICY_ENOMEM;
    if (run->localpart_users != NULL &&
        rule_append(pr, run->principals, run->localpart_users, out) != 0)
        return POLICY_ENOMEM;
    return 0;
}

static const struct user_run *run_find(const struct plan_rule *pr, uint64_t user_id)
{
    size_t lo = 0;
    size_t hi = pr->n_runs;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (pr->runs[mid].user_id == user_id)
            return &pr->runs[mid];
        if (pr->runs[mid].user_id < user_id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* How r's dst names n: through autogroup:self (n's own user's sources),
 * through another alias, or not at all while r has other destinations. */
struct dst_match {
    bool self;
    bool other;
    bool has_other;
};

static struct dst_match rule_targets(const struct policy *p, const struct policy_ssh_rule *r,
                                     const struct policy_enode *n)
{
    struct dst_match m = {0};

    for (size_t i = 0; i < r->n_dst; i++) {
        const struct policy_alias *a = &r->dst[i];

        if (a->kind == POLICY_ALIAS_AUTOGROUP && a->autogroup == POLICY_AUTOGROUP_SELF) {
            m.self = !node_is_tagged(n) && n->user != NULL;
        } else {
            m.has_other = true;
            m.other = m.other || policy_alias_matches_node(p, a, n);
        }
    }
    return m;
}

static int compile_for_dst(const struct plan_rule *pr, json_t *out)
{
    if (!pr->has_localpart)
        return json_array_size(pr->all) == 0 ? 0 : rule_append(pr, pr->all, pr->users, out);
    /* One rule (pair) per source user, so that the local part a user may
     * take is offered to that user's nodes only. */
    for (size_t i = 0; i < pr->n_runs; i++)
        if (emit_run(pr, &pr->runs[i], out) != 0)
            return POLICY_ENOMEM;
    if (json_array_size(pr->tagged) > 0)
        return rule_append(pr, pr->tagged, pr->users, out);
    return 0;
}

/* A source that is not a destination of a localpart rule still gets the
 * rule for its own user (or, tagged, its own addresses): Tailscale's hosted
 * server does so (ssh-d2, ssh-e5). */
static int compile_for_source(const struct plan_rule *pr, const struct policy_enode *n, json_t *out)
{
    const struct user_run *run;
    json_t *own;
    int rv;

    if (node_is_tagged(n)) {
        own = principals_of(&n, 1);
        rv = own == NULL ? POLICY_ENOMEM : rule_append(pr, own, pr->users, out);
        json_decref(own);
        return rv;
    }
    run = n->user == NULL ? NULL : run_find(pr, n->user->u.id);
    return run == NULL ? 0 : emit_run(pr, run, out);
}

static int compile_rule(const struct policy *p, const struct plan_rule *pr,
                        const struct policy_enode *n, json_t *out)
{
    struct dst_match m = rule_targets(p, pr->rule, n);
    const struct user_run *run;
    int rv = 0;

    if (m.self) {
        run = run_find(pr, n->user->u.id);
        rv = run == NULL ? 0 : emit_run(pr, run, out);
    }
    if (rv == 0 && m.other)
        rv = compile_for_dst(pr, out);
    else if (rv == 0 && pr->has_localpart && m.has_other &&
             alias_list_matches(p, pr->rule->src, pr->rule->n_src, n))
        rv = compile_for_source(pr, n, out);
    return rv;
}

json_t *policy_ssh_plan_compile(const struct policy_ssh_plan *plan, const struct policy_enode *n)
{
    json_t *checks = json_array();
    json_t *accepts = json_array();

    if (checks == NULL || accepts == NULL)
        goto err;
    /* Check rules first, each kind in policy order: the client takes the
     * first rule that matches, and Tailscale puts the stricter action first
     * (ssh-multi-rule-accept-then-check). */
    for (size_t i = 0; i < plan->n_rules; i++) {
        const struct plan_rule *pr = &plan->rules[i];

        if (compile_rule(plan->p, pr, n, pr->is_check ? checks : accepts) != 0)
            goto err;
    }
    if (json_array_extend(checks, accepts) != 0)
        goto err;
    json_decref(accepts);
    return json_pack("{s:o}", "rules", checks);

err:
    json_decref(checks);
    json_decref(accepts);
    return NULL;
}

json_t *policy_ssh_compile(const struct policy *p, const struct policy_engine *e,
                           const struct policy_enode *n)
{
    struct policy_ssh_plan *plan = policy_ssh_plan_new(p, e);
    json_t *out;

    if (plan == NULL)
        return NULL;
    out = policy_ssh_plan_compile(plan, n);
    policy_ssh_plan_free(plan);
    return out;
}

static bool rule_is_check(json_t *rule)
{
    return json_object_get(json_object_get(rule, "action"), "holdAndDelegate") != NULL;
}

/* ---- sshTests ---- */

enum ssh_verdict {
    SSH_DENIED,
    SSH_ACCEPTED,
    SSH_CHECKED,
};

/* What the client does with a login as user from addr under policy: the
 * first rule whose principals hold addr and whose sshUsers map user to a
 * local user decides (tailssh's rule walk). */
static enum ssh_verdict ssh_evaluate(json_t *policy, const char *addr, const char *user)
{
    json_t *rules = json_object_get(policy, "rules");
    json_t *rule;
    size_t i;

    if (user[0] == '\0')
        return SSH_DENIED;
    json_array_foreach(rules, i, rule)
    {
        json_t *principals = json_object_get(rule, "principals");
        json_t *users = json_object_get(rule, "sshUsers");
        json_t *pr;
        size_t j;
        bool hit = false;
        const char *local;

        json_array_foreach(principals, j, pr)
        {
            const char *ip = json_string_value(json_object_get(pr, "nodeIP"));

            if (json_is_true(json_object_get(pr, "any")) || (ip != NULL && strcmp(ip, addr) == 0))
                hit = true;
        }
        if (!hit)
            continue;
        local = json_string_value(json_object_get(users, user));
        if (local == NULL)
            local = json_string_value(json_object_get(users, "*"));
        if (local == NULL || local[0] == '\0')
            continue;
        return rule_is_check(rule) ? SSH_CHECKED : SSH_ACCEPTED;
    }
    return SSH_DENIED;
}

/* Tailscale resolves an address destination of an sshTest to the node
 * with that IPv4 address; an IPv6 literal names no node
 * (sshtest-malformed-dst-bare-ipv6 is refused, its IPv4 twin accepted). */
static bool test_dst_matches(const struct policy *p, const struct policy_alias *a,
                             const struct policy_enode *n, const struct policy_euser *src_user)
{
    if (a->kind == POLICY_ALIAS_AUTOGROUP && a->autogroup == POLICY_AUTOGROUP_SELF)
        return src_user != NULL && !node_is_tagged(n) && n->user == src_user;
    if (a->kind == POLICY_ALIAS_PREFIX || a->kind == POLICY_ALIAS_HOST)
        return a->prefix.family == 4 && a->prefix.bits == 32 && n->n.has_ipv4 &&
               memcmp(a->prefix.addr, n->n.ipv4, 4) == 0;
    return policy_alias_matches_node(p, a, n);
}

struct test_run {
    const struct policy *p;
    const struct policy_engine *e;
    const struct policy_ssh_plan *plan;
    const struct policy_ssh_test *t;
    size_t index;
    struct policy_error *err;
    char (*src_addrs)[INET6_ADDRSTRLEN];
    size_t n_src_addrs;
};

__attribute__((format(printf, 2, 3))) static int test_fail(struct test_run *r, const char *fmt, ...)
{
    char what[200];
    va_list ap;

    if (r->err != NULL) {
        va_start(ap, fmt);
        vsnprintf(what, sizeof what, fmt, ap);
        va_end(ap);
        r->err->line = 0;
        r->err->col = 0;
        snprintf(r->err->message, sizeof r->err->message, "sshTests[%zu] (src %s): %s", r->index,
                 r->t->src.name, what);
    }
    return POLICY_ETEST;
}

static int test_users(struct test_run *r, json_t *policy, const struct policy_enode *dst,
                      char *const *users, size_t n_users, enum ssh_verdict want)
{
    for (size_t u = 0; u < n_users; u++) {
        for (size_t a = 0; a < r->n_src_addrs; a++) {
            enum ssh_verdict got = ssh_evaluate(policy, r->src_addrs[a], users[u]);
            bool ok = want == SSH_DENIED     ? got == SSH_DENIED
                      : want == SSH_ACCEPTED ? got != SSH_DENIED
                                             : got == SSH_CHECKED;

            if (ok)
                continue;
            if (want == SSH_DENIED)
                return test_fail(r, "user \"%s\" is allowed to %s, expected denied", users[u],
                                 dst->n.hostname);
            if (want == SSH_CHECKED && got == SSH_ACCEPTED)
                return test_fail(r, "user \"%s\" is accepted without a check on %s", users[u],
                                 dst->n.hostname);
            return test_fail(r, "user \"%s\" is denied on %s, expected allowed", users[u],
                             dst->n.hostname);
        }
    }
    return 0;
}

static int test_dst(struct test_run *r, const struct policy_enode *dst)
{
    json_t *policy = policy_ssh_plan_compile(r->plan, dst);
    int rv;

    if (policy == NULL)
        return POLICY_ENOMEM;
    rv = test_users(r, policy, dst, r->t->accept, r->t->n_accept, SSH_ACCEPTED);
    if (rv == 0)
        rv = test_users(r, policy, dst, r->t->check, r->t->n_check, SSH_CHECKED);
    if (rv == 0)
        rv = test_users(r, policy, dst, r->t->deny, r->t->n_deny, SSH_DENIED);
    json_decref(policy);
    return rv;
}

/* The addresses the test's src logs in from; the user autogroup:self
 * stands for (only a user src has one). */
static int test_sources(struct test_run *r, const struct policy_euser **src_user)
{
    size_t n = policy_engine_node_count(r->e);
    const struct policy_alias *src = &r->t->src;

    *src_user = NULL;
    r->src_addrs = calloc(2 * n + 1, sizeof *r->src_addrs);
    if (r->src_addrs == NULL)
        return POLICY_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const struct policy_enode *node = policy_engine_node_at(r->e, i);
        struct addr addrs[2];
        size_t k;

        if (!policy_alias_matches_node(r->p, src, node))
            continue;
        if (src->kind == POLICY_ALIAS_USER && !node_is_tagged(node))
            *src_user = node->user;
        k = node_addrs(node, addrs);
        for (size_t j = 0; j < k; j++) {
            /* An address src logs in from that address only. */
            if ((src->kind == POLICY_ALIAS_PREFIX || src->kind == POLICY_ALIAS_HOST) &&
                !prefix_contains(&src->prefix, &addrs[j]))
                continue;
            addr_format(&addrs[j], r->src_addrs[r->n_src_addrs++]);
        }
    }
    return 0;
}

static int test_run_one(struct test_run *r)
{
    const struct policy_ssh_test *t = r->t;
    const struct policy_euser *src_user;
    size_t n = policy_engine_node_count(r->e);
    int rv = test_sources(r, &src_user);

    if (rv != 0)
        return rv;
    if (r->n_src_addrs == 0)
        return test_fail(r, "matches no node");
    if (t->n_accept + t->n_check + t->n_deny == 0)
        return test_fail(r, "no accept, check or deny users");
    for (size_t d = 0; d < t->n_dst; d++) {
        bool found = false;

        for (size_t i = 0; i < n && rv == 0; i++) {
            const struct policy_enode *node = policy_engine_node_at(r->e, i);

            if (!test_dst_matches(r->p, &t->dst[d], node, src_user))
                continue;
            found = true;
            rv = test_dst(r, node);
        }
        if (rv != 0)
            return rv;
        if (!found)
            return test_fail(r, "dst \"%s\" matches no node", t->dst[d].name);
    }
    return 0;
}

int policy_ssh_tests_check(const struct policy *p, const struct policy_engine *e,
                           struct policy_error *err)
{
    struct policy_ssh_plan *plan;
    int rv = 0;

    if (p == NULL || p->n_ssh_tests == 0)
        return 0;
    plan = policy_ssh_plan_new(p, e);
    if (plan == NULL)
        return POLICY_ENOMEM;
    for (size_t i = 0; i < p->n_ssh_tests && rv == 0; i++) {
        struct test_run r = {
            .p = p, .e = e, .plan = plan, .t = &p->ssh_tests[i], .index = i, .err = err};

        rv = test_run_one(&r);
        free(r.src_addrs);
    }
    policy_ssh_plan_free(plan);
    return rv;
}
