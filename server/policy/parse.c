/* server/policy/parse.c: the policy document, from HuJSON text to the
 * struct policy of policy_internal.h, with everything Tailscale's control
 * server checks before it accepts a policy and that needs no tailnet.
 *
 * Tailscale's rules, as its hosted server applies them: keys match without
 * regard to case ("ACLs" is "acls"), unknown keys are refused, null is as
 * good as absent. An alias is tried in this order: an IP address or prefix,
 * "*", a user (anything with an '@'), group:, tag:, autogroup:, and last a
 * name from "hosts"; surrounding whitespace is ignored. Groups hold users
 * only (a group in a group is refused, so there are no cycles), tags may be
 * owned by tags (cycles included), and every group, tag and host a policy
 * names must be defined. Each autogroup is allowed only where Tailscale
 * allows it (autogroup:self as a destination, autogroup:internet as an ACL
 * or grant destination, autogroup:danger-all as a source...). What Tailscale
 * accepts but concord cannot honour (postures, IP pools, the admin roles'
 * autogroups) is refused as "not supported" rather than half applied.
 *
 * Nothing here reads the tailnet: users named in the policy, the domains of
 * user:*@ and localpart:*@ wildcards and the outcome of `tests` and
 * `sshTests` are checked against it by policy_engine_check. */
#include "server/policy/policy_internal.h"

#include "server/policy/hujson.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_PORT_RANGES 4096 /* in one "alias:ports" or grant "ip" entry */

/* The longest SSH check period Tailscale accepts, in seconds (168h). */
#define CHECK_PERIOD_MAX_S (168 * 3600)
/* check_period_s for "checkPeriod": "always" (check every connection). */
#define CHECK_PERIOD_ALWAYS (-1)

#define PROTO_TCP  6
#define PROTO_UDP  17
#define PROTO_SCTP 132

const char *policy_strerror(int rv)
{
    switch (rv) {
    case 0:
        return "success";
#define X(name, value, text)                                                                       \
    case name:                                                                                     \
        return text;
        POLICY_ERRORS(X)
#undef X
    }
    return "unknown error";
}

/* Where an alias may appear: each place allows its own kinds. */
enum place {
    PLACE_SRC,         /* acls and grants "src" */
    PLACE_DST,         /* acls and grants "dst" */
    PLACE_SSH_SRC,     /* ssh "src" */
    PLACE_SSH_DST,     /* ssh "dst" */
    PLACE_TARGET,      /* nodeAttrs "target" */
    PLACE_OWNER,       /* tagOwners values */
    PLACE_APPROVER,    /* autoApprovers */
    PLACE_VIA,         /* grants "via" */
    PLACE_TEST_SRC,    /* tests and sshTests "src" */
    PLACE_TEST_DST,    /* tests "accept" and "deny" */
    PLACE_SSHTEST_DST, /* sshTests "dst" */
};

struct name_ref {
    const char *name;
    size_t index;
};

/* Defined names, sorted for lookups. */
struct name_index {
    struct name_ref *refs;
    size_t n;
};

struct parser {
    struct policy *p;
    struct policy_error *err;
    struct name_index groups;
    struct name_index tags;
    struct name_index hosts;
};

/* ---- errors ---- */

__attribute__((format(printf, 4, 0))) static int vfail(struct parser *ps, unsigned line,
                                                       unsigned col, const char *fmt, va_list ap)
{
    if (ps->err != NULL) {
        ps->err->line = line;
        ps->err->col = col;
        vsnprintf(ps->err->message, sizeof ps->err->message, fmt, ap);
    }
    return POLICY_EINVAL;
}

/* Refuses the policy at a place in the text. */
__attribute__((format(printf, 3, 4))) static int fail_at(struct parser *ps, struct policy_pos at,
                                                         const char *fmt, ...)
{
    va_list ap;
    int rv;

    va_start(ap, fmt);
    rv = vfail(ps, at.line, at.col, fmt, ap);
    va_end(ap);
    return rv;
}

/* Refuses the policy at value v. */
__attribute__((format(printf, 3, 4))) static int
fail(struct parser *ps, const struct hujson_value *v, const char *fmt, ...)
{
    va_list ap;
    int rv;

    va_start(ap, fmt);
    rv = vfail(ps, v->line, v->col, fmt, ap);
    va_end(ap);
    return rv;
}

static struct policy_pos pos_of(const struct hujson_value *v)
{
    return (struct policy_pos){v->line, v->col};
}

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* s without surrounding whitespace, as a new string (NULL: no memory). */
static char *trimmed_dup(const char *s)
{
    size_t len;

    while (is_space(*s))
        s++;
    len = strlen(s);
    while (len > 0 && is_space(s[len - 1]))
        len--;
    return strndup(s, len);
}

static bool is_digits(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

/* ---- prefixes ---- */

enum prefix_result { PREFIX_OK, PREFIX_INVALID, PREFIX_HOST_BITS };

static bool host_bits_set(const struct policy_prefix *p)
{
    size_t len = p->family == 4 ? 4 : 16;

    for (size_t i = 0; i < len; i++) {
        unsigned first = (unsigned)i * 8;
        uint8_t host_mask;

        if (first + 8 <= p->bits)
            continue;
        host_mask = first >= p->bits ? 0xff : (uint8_t)(0xff >> (p->bits - first));
        if (p->addr[i] & host_mask)
            return true;
    }
    return false;
}

/* "100.64.0.1", "10.0.0.0/8", "fd7a:115c:a1e0::/48". */
static enum prefix_result prefix_parse(const char *text, struct policy_prefix *out)
{
    char addr[INET6_ADDRSTRLEN];
    const char *slash = strchr(text, '/');
    size_t addr_len = slash != NULL ? (size_t)(slash - text) : strlen(text);
    unsigned max_bits;
    unsigned long bits;

    *out = (struct policy_prefix){0};
    if (addr_len == 0 || addr_len >= sizeof addr)
        return PREFIX_INVALID;
    memcpy(addr, text, addr_len);
    addr[addr_len] = '\0';
    if (inet_pton(AF_INET, addr, out->addr) == 1) {
        out->family = 4;
        max_bits = 32;
    } else if (inet_pton(AF_INET6, addr, out->addr) == 1) {
        out->family = 6;
        max_bits = 128;
    } else {
        return PREFIX_INVALID;
    }
    bits = max_bits;
    if (slash != NULL) {
        if (!is_digits(slash + 1) || strlen(slash + 1) > 3 || (slash[1] == '0' && slash[2] != '\0'))
            return PREFIX_INVALID;
        bits = strtoul(slash + 1, NULL, 10);
        if (bits > max_bits)
            return PREFIX_INVALID;
    }
    out->bits = (uint8_t)bits;
    return host_bits_set(out) ? PREFIX_HOST_BITS : PREFIX_OK;
}

int policy_prefix_parse(const char *text, struct policy_prefix *out)
{
    return prefix_parse(text, out) == PREFIX_OK ? 0 : POLICY_EINVAL;
}

void policy_prefix_format(const struct policy_prefix *p, char *buf, size_t size)
{
    char addr[INET6_ADDRSTRLEN];

    if (inet_ntop(p->family == 4 ? AF_INET : AF_INET6, p->addr, addr, sizeof addr) == NULL)
        addr[0] = '\0';
    snprintf(buf, size, "%s/%u", addr, p->bits);
}

static int prefix_fail(struct parser *ps, const struct hujson_value *at, const char *text,
                       enum prefix_result r)
{
    if (r == PREFIX_HOST_BITS)
        return fail(ps, at, "\"%s\": prefix has host bits set", text);
    return fail(ps, at, "\"%s\": invalid IP address or prefix", text);
}

/* ---- freeing ---- */

static void aliases_free(struct policy_alias *a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(a[i].name);
    free(a);
}

static void strings_free(char **s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(s[i]);
    free(s);
}

static void dsts_free(struct policy_acl_dst *d, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(d[i].alias.name);
        free(d[i].ports);
    }
    free(d);
}

static void grant_free(struct policy_grant *g)
{
    aliases_free(g->src, g->n_src);
    aliases_free(g->dst, g->n_dst);
    for (size_t i = 0; i < g->n_ip; i++)
        free(g->ip[i].proto.numbers);
    free(g->ip);
    json_decref(g->app);
    aliases_free(g->via, g->n_via);
}

static void definitions_free(struct policy *p)
{
    for (size_t i = 0; i < p->n_groups; i++) {
        free(p->groups[i].name);
        strings_free(p->groups[i].members, p->groups[i].n_members);
    }
    free(p->groups);
    for (size_t i = 0; i < p->n_tag_owners; i++) {
        free(p->tag_owners[i].tag);
        aliases_free(p->tag_owners[i].owners, p->tag_owners[i].n_owners);
    }
    free(p->tag_owners);
    for (size_t i = 0; i < p->n_hosts; i++)
        free(p->hosts[i].name);
    free(p->hosts);
}

static void rules_free(struct policy *p)
{
    for (size_t i = 0; i < p->n_acls; i++) {
        aliases_free(p->acls[i].src, p->acls[i].n_src);
        dsts_free(p->acls[i].dst, p->acls[i].n_dst);
        free(p->acls[i].proto.numbers);
    }
    free(p->acls);
    for (size_t i = 0; i < p->n_grants; i++)
        grant_free(&p->grants[i]);
    free(p->grants);
    for (size_t i = 0; i < p->n_ssh; i++) {
        aliases_free(p->ssh[i].src, p->ssh[i].n_src);
        aliases_free(p->ssh[i].dst, p->ssh[i].n_dst);
        strings_free(p->ssh[i].users, p->ssh[i].n_users);
        strings_free(p->ssh[i].accept_env, p->ssh[i].n_accept_env);
    }
    free(p->ssh);
    for (size_t i = 0; i < p->n_node_attrs; i++) {
        aliases_free(p->node_attrs[i].target, p->node_attrs[i].n_target);
        strings_free(p->node_attrs[i].attr, p->node_attrs[i].n_attr);
        json_decref(p->node_attrs[i].app);
    }
    free(p->node_attrs);
    for (size_t i = 0; i < p->n_route_approvers; i++)
        aliases_free(p->route_approvers[i].approvers, p->route_approvers[i].n_approvers);
    free(p->route_approvers);
    aliases_free(p->exit_node_approvers, p->n_exit_node_approvers);
}

static void tests_free(struct policy *p)
{
    for (size_t i = 0; i < p->n_tests; i++) {
        free(p->tests[i].src.name);
        free(p->tests[i].proto.numbers);
        dsts_free(p->tests[i].accept, p->tests[i].n_accept);
        dsts_free(p->tests[i].deny, p->tests[i].n_deny);
    }
    free(p->tests);
    for (size_t i = 0; i < p->n_ssh_tests; i++) {
        free(p->ssh_tests[i].src.name);
        aliases_free(p->ssh_tests[i].dst, p->ssh_tests[i].n_dst);
        strings_free(p->ssh_tests[i].accept, p->ssh_tests[i].n_accept);
        strings_free(p->ssh_tests[i].check, p->ssh_tests[i].n_check);
        strings_free(p->ssh_tests[i].deny, p->ssh_tests[i].n_deny);
    }
    free(p->ssh_tests);
}

void policy_free(struct policy *p)
{
    if (p == NULL)
        return;
    definitions_free(p);
    rules_free(p);
    tests_free(p);
    free(p);
}

bool policy_randomize_client_port(const struct policy *p)
{
    return p != NULL && p->randomize_client_port;
}

/* ---- values ---- */

/* v, or NULL when it is absent or null: Tailscale treats both alike. */
static const struct hujson_value *present(const struct hujson_value *v)
{
    return v == NULL || v->kind == HUJSON_NULL ? NULL : v;
}

static int string_of(struct parser *ps, const struct hujson_value *v, const char *what,
                     const char **out)
{
    *out = NULL;
    if (v->kind != HUJSON_STRING)
        return fail(ps, v, "%s must be a string", what);
    if (strlen(v->text) != v->n)
        return fail(ps, v, "%s contains a NUL character", what);
    *out = v->text;
    return 0;
}

static int key_of(struct parser *ps, const struct hujson_member *m, const char **out)
{
    *out = NULL;
    if (strlen(m->key) != m->key_len)
        return fail_at(ps, (struct policy_pos){m->line, m->col}, "key contains a NUL character");
    *out = m->key;
    return 0;
}

/* A list: NULL (absent or null: empty) or an array. */
static int list_of(struct parser *ps, const struct hujson_value *v, const char *what,
                   const struct hujson_value **out)
{
    *out = present(v);
    if (*out != NULL && (*out)->kind != HUJSON_ARRAY)
        return fail(ps, v, "%s must be an array", what);
    return 0;
}

/* Allocates n zeroed elements of size elem in *out, with *count = n so that
 * policy_free sees them all. */
static int elements_alloc(size_t n, size_t elem, void **out, size_t *count)
{
    *out = NULL;
    *count = 0;
    if (n == 0)
        return 0;
    *out = calloc(n, elem);
    if (*out == NULL)
        return POLICY_ENOMEM;
    *count = n;
    return 0;
}

static int strings_parse(struct parser *ps, const struct hujson_value *v, const char *what,
                         char ***out, size_t *n)
{
    const struct hujson_value *list;
    int rv = list_of(ps, v, what, &list);

    if (rv == 0 && list != NULL)
        rv = elements_alloc(list->n, sizeof **out, (void **)out, n);
    for (size_t i = 0; rv == 0 && list != NULL && i < list->n; i++) {
        const char *s;

        rv = string_of(ps, &list->items[i], what, &s);
        if (rv == 0 && ((*out)[i] = strdup(s)) == NULL)
            rv = POLICY_ENOMEM;
    }
    return rv;
}

/* ---- object keys ---- */

/* One key of an object, matched without regard to case. */
struct field {
    const char *name;
    const struct hujson_value *value; /* NULL: absent */
};

static bool name_in(const char *name, const char *const *list)
{
    for (; list != NULL && *list != NULL; list++)
        if (strcasecmp(name, *list) == 0)
            return true;
    return false;
}

/* Reads object v into fields[0..n). Keys Tailscale knows but concord cannot
 * honour (unsupported) are refused as such; any other unknown key, and a
 * key given twice in different cases, is an error. */
static int fields_read(struct parser *ps, const struct hujson_value *v, const char *what,
                       struct field *fields, size_t n, const char *const *unsupported)
{
    if (v->kind != HUJSON_OBJECT)
        return fail(ps, v, "%s must be an object", what);
    for (size_t i = 0; i < v->n; i++) {
        const struct hujson_member *m = &v->members[i];
        struct policy_pos at = {m->line, m->col};
        const char *key;
        size_t f = 0;
        int rv = key_of(ps, m, &key);

        if (rv != 0)
            return rv;
        while (f < n && strcasecmp(key, fields[f].name) != 0)
            f++;
        if (f == n && name_in(key, unsupported))
            return fail_at(ps, at, "\"%s\" in %s is not supported by concord", key, what);
        if (f == n)
            return fail_at(ps, at, "unknown key \"%s\" in %s", key, what);
        if (fields[f].value != NULL)
            return fail_at(ps, at, "duplicate key \"%s\" in %s", key, what);
        fields[f].value = &m->value;
    }
    return 0;
}

/* ---- names ---- */

static int ref_cmp(const void *pa, const void *pb)
{
    const struct name_ref *a = pa;
    const struct name_ref *b = pb;

    return strcmp(a->name, b->name);
}

static int index_alloc(struct name_index *ix, size_t n)
{
    ix->n = n;
    ix->refs = n == 0 ? NULL : calloc(n, sizeof *ix->refs);
    return n > 0 && ix->refs == NULL ? POLICY_ENOMEM : 0;
}

static void index_sort(struct name_index *ix)
{
    if (ix->n > 1)
        qsort(ix->refs, ix->n, sizeof *ix->refs, ref_cmp);
}

static bool index_find(const struct name_index *ix, const char *name, size_t *index)
{
    struct name_ref key = {name, 0};
    const struct name_ref *hit =
        ix->n == 0 ? NULL : bsearch(&key, ix->refs, ix->n, sizeof *ix->refs, ref_cmp);

    if (hit == NULL)
        return false;
    *index = hit->index;
    return true;
}

/* ---- aliases ---- */

static const struct {
    const char *name;
    enum policy_autogroup group;
} autogroups[] = {
    {"autogroup:member", POLICY_AUTOGROUP_MEMBER},
    {"autogroup:tagged", POLICY_AUTOGROUP_TAGGED},
    {"autogroup:self", POLICY_AUTOGROUP_SELF},
    {"autogroup:internet", POLICY_AUTOGROUP_INTERNET},
    {"autogroup:nonroot", POLICY_AUTOGROUP_NONROOT},
    {"autogroup:danger-all", POLICY_AUTOGROUP_DANGER_ALL},
};

/* Tailscale's autogroups for its user roles and sharing: concord has none. */
static const char *const role_autogroups[] = {
    "autogroup:admin",         "autogroup:owner",   "autogroup:it-admin", "autogroup:network-admin",
    "autogroup:billing-admin", "autogroup:auditor", "autogroup:shared",   NULL,
};

#define KIND(k)       (1u << (k))
#define AUTOGROUP(g)  (1u << (g))
#define ADDRESSES     (KIND(POLICY_ALIAS_HOST) | KIND(POLICY_ALIAS_PREFIX))
#define IDENTITIES    (KIND(POLICY_ALIAS_USER) | KIND(POLICY_ALIAS_GROUP) | KIND(POLICY_ALIAS_TAG))
#define ANY           (KIND(POLICY_ALIAS_WILDCARD) | IDENTITIES | ADDRESSES)
#define MEMBER_TAGGED (AUTOGROUP(POLICY_AUTOGROUP_MEMBER) | AUTOGROUP(POLICY_AUTOGROUP_TAGGED))

/* What each place allows: alias kinds, and autogroups by name. */
static const struct {
    unsigned kinds;
    unsigned autogroups;
    const char *what;
} places[] = {
    [PLACE_SRC] = {ANY, MEMBER_TAGGED | AUTOGROUP(POLICY_AUTOGROUP_DANGER_ALL), "a source"},
    [PLACE_DST] = {ANY,
                   MEMBER_TAGGED | AUTOGROUP(POLICY_AUTOGROUP_SELF) |
                       AUTOGROUP(POLICY_AUTOGROUP_INTERNET),
                   "a destination"},
    [PLACE_SSH_SRC] = {IDENTITIES, MEMBER_TAGGED, "an SSH source"},
    [PLACE_SSH_DST] = {KIND(POLICY_ALIAS_USER) | KIND(POLICY_ALIAS_TAG),
                       MEMBER_TAGGED | AUTOGROUP(POLICY_AUTOGROUP_SELF), "an SSH destination"},
    [PLACE_TARGET] = {ANY, MEMBER_TAGGED, "a nodeAttrs target"},
    [PLACE_OWNER] = {IDENTITIES, 0, "a tag owner"},
    [PLACE_APPROVER] = {IDENTITIES, 0, "an auto approver"},
    [PLACE_VIA] = {KIND(POLICY_ALIAS_TAG), 0, "via"},
    [PLACE_TEST_SRC] = {IDENTITIES | ADDRESSES, MEMBER_TAGGED, "a test source"},
    [PLACE_TEST_DST] = {ANY, MEMBER_TAGGED | AUTOGROUP(POLICY_AUTOGROUP_SELF),
                        "a test destination"},
    [PLACE_SSHTEST_DST] = {ANY, MEMBER_TAGGED | AUTOGROUP(POLICY_AUTOGROUP_SELF),
                           "an sshTests destination"},
};

static bool is_autogroup(const struct policy_alias *a, enum policy_autogroup g)
{
    return a->kind == POLICY_ALIAS_AUTOGROUP && a->autogroup == g;
}

/* Tailscale's own words for the misplaced aliases people write most. */
static int alias_misplaced(struct parser *ps, const struct policy_alias *a, enum place place)
{
    if (is_autogroup(a, POLICY_AUTOGROUP_NONROOT))
        return fail_at(ps, a->pos, "autogroup:nonroot can only be used as an SSH user");
    if (place == PLACE_SRC && is_autogroup(a, POLICY_AUTOGROUP_SELF))
        return fail_at(ps, a->pos, "\"autogroup:self\" not valid on the src side of a rule");
    if (is_autogroup(a, POLICY_AUTOGROUP_INTERNET))
        return fail_at(ps, a->pos,
                       "autogroup:internet can only be used in ACL and grant "
                       "destinations");
    if (place == PLACE_DST && is_autogroup(a, POLICY_AUTOGROUP_DANGER_ALL))
        return fail_at(ps, a->pos, "cannot use autogroup:danger-all as a dst");
    if (place == PLACE_SSH_DST && a->kind == POLICY_ALIAS_HOST)
        return fail_at(ps, a->pos, "invalid dst \"%s\"", a->name);
    if (place == PLACE_SSH_DST && a->kind == POLICY_ALIAS_WILDCARD)
        return fail_at(ps, a->pos,
                       "wildcard (*) is not supported as an SSH destination; use "
                       "autogroup:member, autogroup:tagged or tags");
    if (place == PLACE_VIA)
        return fail_at(ps, a->pos, "via can only be a tag");
    return fail_at(ps, a->pos, "\"%s\" cannot be used as %s", a->name, places[place].what);
}

static int alias_allowed(struct parser *ps, const struct policy_alias *a, enum place place)
{
    bool ok = a->kind == POLICY_ALIAS_AUTOGROUP
                  ? (places[place].autogroups & AUTOGROUP(a->autogroup)) != 0
                  : (places[place].kinds & KIND(a->kind)) != 0;

    return ok ? 0 : alias_misplaced(ps, a, place);
}

static int autogroup_parse(struct parser *ps, struct policy_alias *a)
{
    for (size_t i = 0; i < sizeof autogroups / sizeof autogroups[0]; i++) {
        if (strcmp(a->name, autogroups[i].name) == 0) {
            a->kind = POLICY_ALIAS_AUTOGROUP;
            a->autogroup = autogroups[i].group;
            return 0;
        }
    }
    if (name_in(a->name, role_autogroups))
        return fail_at(ps, a->pos, "%s is not supported by concord (it has no user roles)",
                       a->name);
    return fail_at(ps, a->pos, "unknown autogroup \"%s\"", a->name);
}

/* Resolves a->name (trimmed), in Tailscale's order. */
static int alias_resolve(struct parser *ps, struct policy_alias *a)
{
    const char *name = a->name;
    struct policy_prefix prefix;
    enum prefix_result pr = prefix_parse(name, &prefix);

    if (pr == PREFIX_HOST_BITS)
        return fail_at(ps, a->pos, "\"%s\": prefix has host bits set", name);
    if (pr == PREFIX_OK) {
        a->kind = POLICY_ALIAS_PREFIX;
        a->prefix = prefix;
    } else if (strcmp(name, "*") == 0) {
        a->kind = POLICY_ALIAS_WILDCARD;
    } else if (strchr(name, '@') != NULL) {
        a->kind = POLICY_ALIAS_USER;
    } else if (starts_with(name, "group:")) {
        a->kind = POLICY_ALIAS_GROUP;
        if (!index_find(&ps->groups, name, &a->index))
            return fail_at(ps, a->pos, "group \"%s\" is not defined", name);
    } else if (starts_with(name, "tag:")) {
        a->kind = POLICY_ALIAS_TAG;
        if (!index_find(&ps->tags, name, &a->index))
            return fail_at(ps, a->pos, "tag not found: \"%s\"", name);
    } else if (starts_with(name, "autogroup:")) {
        return autogroup_parse(ps, a);
    } else if (strchr(name, '/') != NULL) {
        return fail_at(ps, a->pos, "\"%s\": invalid IP address or prefix", name);
    } else if (name[0] != '\0' && strchr(name, ':') == NULL) {
        a->kind = POLICY_ALIAS_HOST;
        if (!index_find(&ps->hosts, name, &a->index))
            return fail_at(ps, a->pos, "host \"%s\" is not defined", name);
        a->prefix = ps->p->hosts[a->index].prefix;
    } else {
        return fail_at(ps, a->pos, "\"%s\" is not a valid alias", name);
    }
    return 0;
}

/* The alias text (taken: freed with a) at v, for place. */
static int alias_make(struct parser *ps, const struct hujson_value *v, char *text, enum place place,
                      struct policy_alias *a)
{
    int rv;

    a->name = text;
    a->pos = pos_of(v);
    if (text == NULL)
        return POLICY_ENOMEM;
    rv = alias_resolve(ps, a);
    return rv != 0 ? rv : alias_allowed(ps, a, place);
}

static int alias_parse(struct parser *ps, const struct hujson_value *v, const char *what,
                       enum place place, struct policy_alias *a)
{
    const char *s;
    int rv = string_of(ps, v, what, &s);

    return rv != 0 ? rv : alias_make(ps, v, trimmed_dup(s), place, a);
}

/* A list of aliases ("src", "dst", "target"...): absent and null are empty. */
static int aliases_parse(struct parser *ps, const struct hujson_value *v, const char *what,
                         enum place place, struct policy_alias **out, size_t *n)
{
    const struct hujson_value *list;
    int rv = list_of(ps, v, what, &list);

    if (rv == 0 && list != NULL)
        rv = elements_alloc(list->n, sizeof **out, (void **)out, n);
    for (size_t i = 0; rv == 0 && list != NULL && i < list->n; i++)
        rv = alias_parse(ps, &list->items[i], what, place, &(*out)[i]);
    return rv;
}

/* ---- ports and protocols ---- */

/* Decimal digits s[0..len) as a port; false when not one. */
static bool port_parse(const char *s, size_t len, uint16_t *out)
{
    unsigned long v = 0;

    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned long)(s[i] - '0');
        if (v > 65535)
            return false;
    }
    *out = (uint16_t)v;
    return true;
}

static int range_parse(struct parser *ps, const struct hujson_value *at, const char *s, size_t len,
                       struct policy_port_range *out)
{
    const char *dash = memchr(s, '-', len);
    int shown = (int)(len > 32 ? 32 : len);

    if (dash == NULL) {
        if (!port_parse(s, len, &out->first))
            return fail(ps, at, "port \"%.*s\": invalid port number", shown, s);
        if (out->first == 0)
            return fail(ps, at, "port 0 is not valid; use \"*\" for every port");
        out->last = out->first;
        return 0;
    }
    if (!port_parse(s, (size_t)(dash - s), &out->first) ||
        !port_parse(dash + 1, len - (size_t)(dash - s) - 1, &out->last))
        return fail(ps, at, "port range \"%.*s\": invalid port number", shown, s);
    if (out->first > out->last)
        return fail(ps, at, "port range \"%.*s\": first port is greater than last port", shown, s);
    return 0;
}

/* "*", "22", "80,443", "1000-2000,3000": the ranges, allocated. */
static int ports_parse(struct parser *ps, const struct hujson_value *at, const char *text,
                       struct policy_port_range **out, size_t *n)
{
    size_t parts = 1;
    const char *s = text;
    int rv;

    for (const char *c = text; *c != '\0'; c++)
        parts += *c == ',';
    if (parts > MAX_PORT_RANGES)
        return fail(ps, at, "more than %d port ranges", MAX_PORT_RANGES);
    rv = elements_alloc(parts, sizeof **out, (void **)out, n);
    if (rv != 0)
        return rv;
    if (strcmp(text, "*") == 0) {
        (*out)[0] = (struct policy_port_range){0, 65535};
        return 0;
    }
    for (size_t i = 0; i < parts; i++) {
        const char *comma = strchr(s, ',');
        size_t len = comma != NULL ? (size_t)(comma - s) : strlen(s);

        rv = range_parse(ps, at, s, len, &(*out)[i]);
        if (rv != 0)
            return rv;
        s += len + 1;
    }
    return 0;
}

static bool ports_all(const struct policy_port_range *r, size_t n)
{
    return n == 1 && r[0].first == 0 && r[0].last == 65535;
}

static const struct {
    const char *name;
    int number;
} protocols[] = {
    {"icmp", 1}, {"igmp", 2},       {"ipv4", 4},   {"ip-in-ip", 4}, {"tcp", 6},
    {"egp", 8},  {"igp", 9},        {"udp", 17},   {"gre", 47},     {"esp", 50},
    {"ah", 51},  {"ipv6-icmp", 58}, {"sctp", 132}, {"fc", 133},
};

/* A protocol name or IANA number; "" is Tailscale's default set (n == 0). */
static int proto_text_parse(struct parser *ps, const struct hujson_value *at, const char *text,
                            struct policy_protos *out)
{
    int number = -1;

    *out = (struct policy_protos){0};
    if (text[0] == '\0')
        return 0;
    for (size_t i = 0; i < sizeof protocols / sizeof protocols[0]; i++)
        if (strcasecmp(text, protocols[i].name) == 0)
            number = protocols[i].number;
    if (number < 0 && is_digits(text)) {
        if (text[0] == '0')
            return fail(ps, at, "proto \"%s\": leading 0 not permitted", text);
        if (strlen(text) > 3 || (number = atoi(text)) > 255)
            return fail(ps, at, "proto \"%s\": protocol number out of range (1-255)", text);
    }
    if (number < 0)
        return fail(ps, at,
                    "proto \"%s\" not known; use a protocol number 1-255 or a protocol name "
                    "(icmp, tcp, udp, etc.)",
                    text);
    out->numbers = malloc(sizeof *out->numbers);
    if (out->numbers == NULL)
        return POLICY_ENOMEM;
    out->numbers[0] = number;
    out->n = 1;
    return 0;
}

/* An optional "proto" key. */
static int proto_parse(struct parser *ps, const struct hujson_value *v, struct policy_protos *out)
{
    const char *text;
    int rv;

    *out = (struct policy_protos){0};
    if (present(v) == NULL)
        return 0;
    rv = string_of(ps, v, "proto", &text);
    return rv != 0 ? rv : proto_text_parse(ps, v, text, out);
}

/* Only TCP, UDP and SCTP have ports; the default set counts as having them. */
static bool protos_have_ports(const struct policy_protos *p)
{
    return p->n == 0 || p->numbers[0] == PROTO_TCP || p->numbers[0] == PROTO_UDP ||
           p->numbers[0] == PROTO_SCTP;
}

/* ---- destinations with ports ---- */

/* "[fd7a::1]:22" and "[fd7a::1]/128:22" lose their brackets, in place. */
static int unbracket(struct parser *ps, const struct hujson_value *at, char *text)
{
    char *close = strchr(text, ']');
    unsigned char addr[16];

    if (close == NULL)
        return fail(ps, at, "\"%s\": square brackets are only valid around IPv6 addresses", text);
    *close = '\0';
    if (inet_pton(AF_INET6, text + 1, addr) != 1 || (close[1] != ':' && close[1] != '/')) {
        *close = ']';
        return fail(ps, at, "\"%s\": square brackets are only valid around IPv6 addresses", text);
    }
    memmove(text, text + 1, strlen(text + 1) + 1);
    memmove(close - 1, close + 1, strlen(close + 1) + 1);
    return 0;
}

/* "alias:ports", as an ACL or a test writes a destination. */
static int dst_parse(struct parser *ps, const struct hujson_value *v, enum place place,
                     struct policy_acl_dst *d)
{
    const char *s;
    char *text;
    char *colon;
    int rv = string_of(ps, v, "a destination", &s);

    if (rv != 0)
        return rv;
    text = trimmed_dup(s);
    if (text == NULL)
        return POLICY_ENOMEM;
    rv = text[0] == '[' ? unbracket(ps, v, text) : 0;
    colon = strrchr(text, ':');
    if (rv == 0 && (colon == NULL || colon == text || colon[1] == '\0'))
        rv = fail(ps, v, "dst \"%s\" must be alias:ports", s);
    if (rv == 0) {
        *colon = '\0';
        rv = ports_parse(ps, v, colon + 1, &d->ports, &d->n_ports);
    }
    if (rv != 0) {
        free(text);
        return rv;
    }
    return alias_make(ps, v, text, place, &d->alias);
}

static int dsts_parse(struct parser *ps, const struct hujson_value *v, const char *what,
                      enum place place, struct policy_acl_dst **out, size_t *n)
{
    const struct hujson_value *list;
    int rv = list_of(ps, v, what, &list);

    if (rv == 0 && list != NULL)
        rv = elements_alloc(list->n, sizeof **out, (void **)out, n);
    for (size_t i = 0; rv == 0 && list != NULL && i < list->n; i++)
        rv = dst_parse(ps, &list->items[i], place, &(*out)[i]);
    return rv;
}

/* ---- groups, hosts, tagOwners ---- */

static int group_member_parse(struct parser *ps, const struct hujson_value *v, const char *group,
                              char **out)
{
    const char *s;
    int rv = string_of(ps, v, "a group member", &s);

    if (rv != 0)
        return rv;
    if (starts_with(s, "group:"))
        return fail(ps, v, "groups[\"%s\"]: \"%s\": group members cannot be recursive", group, s);
    if (strchr(s, '@') == NULL)
        return fail(ps, v, "groups[\"%s\"]: \"%s\" is not a user (a user contains '@')", group, s);
    *out = strdup(s);
    return *out == NULL ? POLICY_ENOMEM : 0;
}

static int group_parse(struct parser *ps, const struct hujson_member *m, struct policy_group *g)
{
    const struct hujson_value *list;
    const char *name;
    int rv = key_of(ps, m, &name);

    if (rv != 0)
        return rv;
    g->pos = (struct policy_pos){m->line, m->col};
    g->name = strdup(name);
    if (g->name == NULL)
        return POLICY_ENOMEM;
    if (!starts_with(name, "group:"))
        return fail_at(ps, g->pos, "group name \"%s\" must start with \"group:\"", name);
    rv = list_of(ps, &m->value, "a group", &list);
    if (rv == 0 && list != NULL)
        rv = elements_alloc(list->n, sizeof *g->members, (void **)&g->members, &g->n_members);
    for (size_t i = 0; rv == 0 && list != NULL && i < list->n; i++)
        rv = group_member_parse(ps, &list->items[i], name, &g->members[i]);
    return rv;
}

static int groups_parse(struct parser *ps, const struct hujson_value *v)
{
    struct policy *p = ps->p;
    int rv;

    if (present(v) == NULL)
        return 0;
    if (v->kind != HUJSON_OBJECT)
        return fail(ps, v, "groups must be an object");
    rv = elements_alloc(v->n, sizeof *p->groups, (void **)&p->groups, &p->n_groups);
    if (rv == 0)
        rv = index_alloc(&ps->groups, v->n);
    for (size_t i = 0; rv == 0 && i < v->n; i++) {
        rv = group_parse(ps, &v->members[i], &p->groups[i]);
        ps->groups.refs[i] = (struct name_ref){p->groups[i].name, i};
    }
    if (rv == 0)
        index_sort(&ps->groups);
    return rv;
}

static int host_parse(struct parser *ps, const struct hujson_member *m, struct policy_host *h)
{
    const char *name;
    const char *addr;
    enum prefix_result pr;
    int rv = key_of(ps, m, &name);

    if (rv != 0)
        return rv;
    h->pos = (struct policy_pos){m->line, m->col};
    h->name = strdup(name);
    if (h->name == NULL)
        return POLICY_ENOMEM;
    if (name[0] == '\0' || strpbrk(name, "@:/") != NULL)
        return fail_at(ps, h->pos, "invalid host name \"%s\"", name);
    rv = string_of(ps, &m->value, "a host address", &addr);
    if (rv != 0)
        return rv;
    pr = prefix_parse(addr, &h->prefix);
    return pr == PREFIX_OK ? 0 : prefix_fail(ps, &m->value, addr, pr);
}

static int hosts_parse(struct parser *ps, const struct hujson_value *v)
{
    struct policy *p = ps->p;
    int rv;

    if (present(v) == NULL)
        return 0;
    if (v->kind != HUJSON_OBJECT)
        return fail(ps, v, "hosts must be an object");
    rv = elements_alloc(v->n, sizeof *p->hosts, (void **)&p->hosts, &p->n_hosts);
    if (rv == 0)
        rv = index_alloc(&ps->hosts, v->n);
    for (size_t i = 0; rv == 0 && i < v->n; i++) {
        rv = host_parse(ps, &v->members[i], &p->hosts[i]);
        ps->hosts.refs[i] = (struct name_ref){p->hosts[i].name, i};
    }
    if (rv == 0)
        index_sort(&ps->hosts);
    return rv;
}

static int tag_name_parse(struct parser *ps, const struct hujson_member *m,
                          struct policy_tag_owner *t)
{
    const char *name;
    int rv = key_of(ps, m, &name);
    char first;

    if (rv != 0)
        return rv;
    t->pos = (struct policy_pos){m->line, m->col};
    t->tag = strdup(name);
    if (t->tag == NULL)
        return POLICY_ENOMEM;
    if (!starts_with(name, "tag:"))
        return fail_at(ps, t->pos, "tag name \"%s\" must start with \"tag:\"", name);
    first = name[strlen("tag:")];
    if (!((first >= 'a' && first <= 'z') || (first >= 'A' && first <= 'Z')))
        return fail_at(ps, t->pos,
                       "tagOwners[\"%s\"]: tag names must start with a letter, after 'tag:'", name);
    return 0;
}

/* Every tag's name first, then the owners, which may name any tag (itself
 * included: Tailscale accepts ownership cycles). */
static int tag_owners_parse(struct parser *ps, const struct hujson_value *v)
{
    struct policy *p = ps->p;
    int rv;

    if (present(v) == NULL)
        return 0;
    if (v->kind != HUJSON_OBJECT)
        return fail(ps, v, "tagOwners must be an object");
    rv = elements_alloc(v->n, sizeof *p->tag_owners, (void **)&p->tag_owners, &p->n_tag_owners);
    if (rv == 0)
        rv = index_alloc(&ps->tags, v->n);
    for (size_t i = 0; rv == 0 && i < v->n; i++) {
        rv = tag_name_parse(ps, &v->members[i], &p->tag_owners[i]);
        ps->tags.refs[i] = (struct name_ref){p->tag_owners[i].tag, i};
    }
    if (rv == 0)
        index_sort(&ps->tags);
    for (size_t i = 0; rv == 0 && i < v->n; i++)
        rv = aliases_parse(ps, &v->members[i].value, "tag owners", PLACE_OWNER,
                           &p->tag_owners[i].owners, &p->tag_owners[i].n_owners);
    return rv;
}

/* ---- acls and grants ---- */

/* Rules whose destinations include autogroup:self: every source must be a
 * user, a group or autogroup:member (ACLs also allow "*", which the self
 * destination narrows to each user's own devices; grants do not). */
static int self_sources_check(struct parser *ps, const struct policy_alias *src, size_t n,
                              bool wildcard_ok)
{
    for (size_t i = 0; i < n; i++) {
        const struct policy_alias *a = &src[i];

        if (a->kind == POLICY_ALIAS_USER || a->kind == POLICY_ALIAS_GROUP ||
            is_autogroup(a, POLICY_AUTOGROUP_MEMBER) ||
            (wildcard_ok && a->kind == POLICY_ALIAS_WILDCARD))
            continue;
        return fail_at(ps, a->pos,
                       "autogroup:self can only be used with users, groups, or supported "
                       "autogroups");
    }
    return 0;
}

static const char *const rule_unsupported[] = {"srcPosture", NULL};

static int acl_parse(struct parser *ps, const struct hujson_value *v, struct policy_acl *acl)
{
    enum { ACTION, SRC, DST, PROTO, N };
    struct field f[N] = {[ACTION] = {.name = "action"},
                         [SRC] = {.name = "src"},
                         [DST] = {.name = "dst"},
                         [PROTO] = {.name = "proto"}};
    const char *action;
    bool has_self = false;
    int rv = fields_read(ps, v, "an ACL", f, N, rule_unsupported);

    acl->pos = pos_of(v);
    if (rv != 0)
        return rv;
    if (present(f[ACTION].value) == NULL)
        return fail(ps, v, "an ACL needs \"action\": \"accept\"");
    rv = string_of(ps, f[ACTION].value, "action", &action);
    if (rv == 0 && strcmp(action, "accept") != 0)
        rv = fail(ps, f[ACTION].value, "action=\"%s\" is not supported", action);
    if (rv == 0)
        rv = aliases_parse(ps, f[SRC].value, "src", PLACE_SRC, &acl->src, &acl->n_src);
    if (rv == 0)
        rv = dsts_parse(ps, f[DST].value, "dst", PLACE_DST, &acl->dst, &acl->n_dst);
    if (rv == 0)
        rv = proto_parse(ps, f[PROTO].value, &acl->proto);
    for (size_t i = 0; rv == 0 && i < acl->n_dst; i++) {
        const struct policy_acl_dst *d = &acl->dst[i];

        if (!protos_have_ports(&acl->proto) && !ports_all(d->ports, d->n_ports))
            rv = fail_at(ps, d->alias.pos,
                         "protocol %d does not support specific ports, only \"*\" is allowed",
                         acl->proto.numbers[0]);
        has_self = has_self || is_autogroup(&d->alias, POLICY_AUTOGROUP_SELF);
    }
    if (rv == 0 && has_self)
        rv = self_sources_check(ps, acl->src, acl->n_src, true);
    return rv;
}

/* At least as many entries as the "ip" elements can make: one per port
 * range. Allocating them at once keeps many elements linear. */
static int grant_ips_alloc(const struct hujson_value *ips, struct policy_grant *g)
{
    size_t n = 0;

    for (size_t i = 0; i < ips->n; i++) {
        size_t parts = 1;

        for (const char *c = ips->items[i].kind == HUJSON_STRING ? ips->items[i].text : "";
             *c != '\0' && parts <= MAX_PORT_RANGES; c++)
            parts += *c == ',';
        n += parts;
    }
    g->ip = n == 0 ? NULL : calloc(n, sizeof *g->ip);
    return n > 0 && g->ip == NULL ? POLICY_ENOMEM : 0;
}

/* Adds one entry per port range of a grant "ip" element. */
static int grant_ips_add(struct policy_grant *g, const struct policy_protos *proto,
                         const struct policy_port_range *ranges, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct policy_grant_ip *ip = &g->ip[g->n_ip];

        *ip = (struct policy_grant_ip){.ports = ranges[i]};
        if (proto->n > 0) {
            ip->proto.numbers = malloc(sizeof *ip->proto.numbers);
            if (ip->proto.numbers == NULL)
                return POLICY_ENOMEM;
            ip->proto.numbers[0] = proto->numbers[0];
            ip->proto.n = 1;
        }
        g->n_ip++;
    }
    return 0;
}

/* "*", "22", "80,443", "tcp:443", "udp:1000-2000", "icmp:*". */
static int grant_ip_parse(struct parser *ps, const struct hujson_value *v, struct policy_grant *g)
{
    struct policy_protos proto = {0};
    struct policy_port_range *ranges = NULL;
    size_t n = 0;
    const char *s;
    const char *colon;
    int rv = string_of(ps, v, "ip", &s);

    if (rv != 0)
        return rv;
    colon = strchr(s, ':');
    if (colon != NULL && strchr(colon + 1, ':') != NULL)
        return fail(ps, v, "ip \"%s\": expected only one colon in protocol and port", s);
    if (colon != NULL) {
        char *name = strndup(s, (size_t)(colon - s));

        rv = name == NULL ? POLICY_ENOMEM : proto_text_parse(ps, v, name, &proto);
        free(name);
    }
    if (rv == 0)
        rv = ports_parse(ps, v, colon != NULL ? colon + 1 : s, &ranges, &n);
    if (rv == 0 && !protos_have_ports(&proto) && !ports_all(ranges, n))
        rv = fail(ps, v, "ip \"%s\": protocol %d does not support specific ports, only \"*\"", s,
                  proto.numbers[0]);
    if (rv == 0)
        rv = grant_ips_add(g, &proto, ranges, n);
    free(ranges);
    free(proto.numbers);
    return rv;
}

/* Capability names are {domain}/{path}, and only a few of tailscale.com's
 * may be granted by a policy. */
static int cap_name_check(struct parser *ps, const struct hujson_member *m, const char *name)
{
    static const char *const tailscale_caps[] = {
        "tailscale.com/cap/drive",
        "tailscale.com/cap/relay",
        "tailscale.com/cap/webui",
        "tailscale.com/cap/kubernetes",
        "tailscale.com/cap/tsidp",
        "tailscale.com/cap/secrets",
        NULL,
    };
    struct policy_pos at = {m->line, m->col};

    if (strstr(name, "://") != NULL)
        return fail_at(ps, at, "capability name \"%s\" must have the form {domain}/{path}", name);
    if (starts_with(name, "tailscale.com/") && !name_in(name, tailscale_caps))
        return fail_at(ps, at, "capability name must not be in the tailscale.com domain");
    return 0;
}

static int json_of(struct parser *ps, const struct hujson_value *v, json_t **out);

static int json_object_of(struct parser *ps, const struct hujson_value *v, json_t **out)
{
    int rv = 0;

    *out = json_object();
    for (size_t i = 0; rv == 0 && *out != NULL && i < v->n; i++) {
        const struct hujson_member *m = &v->members[i];
        json_t *item;

        rv = json_of(ps, &m->value, &item);
        if (rv == 0 && json_object_setn_new(*out, m->key, m->key_len, item) != 0)
            rv = POLICY_ENOMEM;
    }
    if (rv == 0 && *out != NULL)
        return 0;
    json_decref(*out);
    *out = NULL;
    return rv != 0 ? rv : POLICY_ENOMEM;
}

static int json_array_of(struct parser *ps, const struct hujson_value *v, json_t **out)
{
    int rv = 0;

    *out = json_array();
    for (size_t i = 0; rv == 0 && *out != NULL && i < v->n; i++) {
        json_t *item;

        rv = json_of(ps, &v->items[i], &item);
        if (rv == 0 && json_array_append_new(*out, item) != 0)
            rv = POLICY_ENOMEM;
    }
    if (rv == 0 && *out != NULL)
        return 0;
    json_decref(*out);
    *out = NULL;
    return rv != 0 ? rv : POLICY_ENOMEM;
}

/* The value as jansson holds it (for "app"): integers stay integers. */
static int json_of(struct parser *ps, const struct hujson_value *v, json_t **out)
{
    *out = NULL;
    switch (v->kind) {
    case HUJSON_ARRAY:
        return json_array_of(ps, v, out);
    case HUJSON_OBJECT:
        return json_object_of(ps, v, out);
    case HUJSON_NUMBER:
        *out = json_loadb(v->text, v->n, JSON_DECODE_ANY, NULL);
        return *out != NULL ? 0 : fail(ps, v, "number %s is out of range", v->text);
    case HUJSON_STRING:
        *out = json_stringn(v->text, v->n);
        break;
    case HUJSON_TRUE:
        *out = json_true();
        break;
    case HUJSON_FALSE:
        *out = json_false();
        break;
    case HUJSON_NULL:
        *out = json_null();
        break;
    }
    return *out != NULL ? 0 : POLICY_ENOMEM;
}

/* "app": {capability: [values...]}: NULL when absent or empty. */
static int app_parse(struct parser *ps, const struct hujson_value *v, bool grant, json_t **out)
{
    const char *name;
    int rv = 0;

    *out = NULL;
    if (present(v) == NULL)
        return 0;
    if (v->kind != HUJSON_OBJECT)
        return fail(ps, v, "app must be an object of capabilities");
    for (size_t i = 0; rv == 0 && i < v->n; i++) {
        const struct hujson_member *m = &v->members[i];

        rv = key_of(ps, m, &name);
        if (rv == 0 && grant)
            rv = cap_name_check(ps, m, name);
        if (rv == 0 && m->value.kind != HUJSON_ARRAY)
            rv = fail(ps, &m->value, "app[\"%s\"] must be an array", name);
    }
    if (rv != 0 || v->n == 0)
        return rv;
    return json_of(ps, v, out);
}

static int grant_check(struct parser *ps, const struct hujson_value *v,
                       const struct policy_grant *g)
{
    bool has_self = false;

    if (g->n_ip == 0 && g->app == NULL)
        return fail(ps, v, "ip and app can not both be empty");
    for (size_t i = 0; i < g->n_dst; i++) {
        const struct policy_alias *d = &g->dst[i];

        if (d->kind == POLICY_ALIAS_PREFIX && d->prefix.bits == 0)
            return fail_at(ps, d->pos,
                           "dst \"%s\": to allow all IP addresses, use \"*\" or "
                           "\"autogroup:internet\"",
                           d->name);
        if (g->app != NULL && is_autogroup(d, POLICY_AUTOGROUP_INTERNET))
            return fail_at(ps, d->pos, "cannot use app grants with autogroup:internet");
        has_self = has_self || is_autogroup(d, POLICY_AUTOGROUP_SELF);
    }
    return has_self ? self_sources_check(ps, g->src, g->n_src, false) : 0;
}

static int grant_parse(struct parser *ps, const struct hujson_value *v, struct policy_grant *g)
{
    enum { SRC, DST, IP, APP, VIA, N };
    struct field f[N] = {
        [SRC] = {.name = "src"}, [DST] = {.name = "dst"}, [IP] = {.name = "ip"},
        [APP] = {.name = "app"}, [VIA] = {.name = "via"},
    };
    const struct hujson_value *ips;
    int rv = fields_read(ps, v, "a grant", f, N, rule_unsupported);

    g->pos = pos_of(v);
    if (rv == 0)
        rv = aliases_parse(ps, f[SRC].value, "src", PLACE_SRC, &g->src, &g->n_src);
    if (rv == 0)
        rv = aliases_parse(ps, f[DST].value, "dst", PLACE_DST, &g->dst, &g->n_dst);
    if (rv == 0)
        rv = list_of(ps, f[IP].value, "ip", &ips);
    if (rv == 0 && ips != NULL)
        rv = grant_ips_alloc(ips, g);
    for (size_t i = 0; rv == 0 && ips != NULL && i < ips->n; i++)
        rv = grant_ip_parse(ps, &ips->items[i], g);
    if (rv == 0)
        rv = app_parse(ps, f[APP].value, true, &g->app);
    if (rv == 0)
        rv = aliases_parse(ps, f[VIA].value, "via", PLACE_VIA, &g->via, &g->n_via);
    return rv != 0 ? rv : grant_check(ps, v, g);
}

/* ---- ssh ---- */

/* A Go duration ("1h", "90m", "1h30m", "1.5h", "0"): nanoseconds, or -1
 * when the text is not one or it overflows. */
static int64_t duration_parse(const char *s)
{
    static const struct {
        const char *unit;
        uint64_t ns;
    } units[] = {
        {"ns", 1},       {"us", 1000},         {"\xc2\xb5s", 1000},   {"\xce\xbcs", 1000},
        {"ms", 1000000}, {"s", 1000000000ull}, {"m", 60000000000ull}, {"h", 3600000000000ull},
    };
    uint64_t total = 0;

    if (strcmp(s, "0") == 0)
        return 0;
    if (*s == '\0')
        return -1;
    while (*s != '\0') {
        uint64_t whole = 0;
        double frac = 0;
        double scale = 1;
        bool any = false;
        size_t u = 0;

        for (; *s >= '0' && *s <= '9'; s++, any = true) {
            if (whole > (UINT64_MAX - 9) / 10)
                return -1;
            whole = whole * 10 + (uint64_t)(*s - '0');
        }
        if (*s == '.')
            for (s++; *s >= '0' && *s <= '9'; s++, any = true)
                frac += (*s - '0') * (scale /= 10);
        while (u < sizeof units / sizeof units[0] && !starts_with(s, units[u].unit))
            u++;
        if (!any || u == sizeof units / sizeof units[0] || whole > INT64_MAX / units[u].ns)
            return -1;
        total += whole * units[u].ns + (uint64_t)(frac * (double)units[u].ns);
        if (total > INT64_MAX)
            return -1;
        s += strlen(units[u].unit);
    }
    return (int64_t)total;
}

/* "checkPeriod": "always", or a duration up to 168h. */
static int check_period_parse(struct parser *ps, const struct hujson_value *v,
                              struct policy_ssh_rule *r)
{
    const char *text;
    const char *digits;
    int64_t ns;
    int rv;

    if (present(v) == NULL)
        return 0;
    if (r->action != POLICY_SSH_CHECK)
        return fail(ps, v, "checkPeriod is only valid with action \"check\"");
    rv = string_of(ps, v, "checkPeriod", &text);
    if (rv != 0)
        return rv;
    if (strcmp(text, "always") == 0) {
        r->check_period_s = CHECK_PERIOD_ALWAYS;
        return 0;
    }
    digits = text[0] == '-' || text[0] == '+' ? text + 1 : text;
    ns = duration_parse(digits);
    if (ns < 0)
        return fail(ps, v, "time: invalid duration \"%s\"", text);
    if (text[0] == '-' && ns > 0)
        return fail(ps, v, "checkPeriod %s must be a positive duration", text);
    if (ns > (int64_t)CHECK_PERIOD_MAX_S * 1000000000)
        return fail(ps, v, "checkPeriod %s is above the max (168h)", text);
    r->check_period_s = ns / 1000000000;
    return 0;
}

static int ssh_action_parse(struct parser *ps, const struct hujson_value *rule,
                            const struct hujson_value *v, enum policy_ssh_action *out)
{
    const char *text;
    char *action;
    int rv;

    if (present(v) == NULL)
        return fail(ps, rule, "action must be specified");
    rv = string_of(ps, v, "action", &text);
    if (rv != 0)
        return rv;
    action = trimmed_dup(text);
    if (action == NULL)
        return POLICY_ENOMEM;
    if (strcmp(action, "accept") == 0)
        *out = POLICY_SSH_ACCEPT;
    else if (strcmp(action, "check") == 0)
        *out = POLICY_SSH_CHECK;
    else if (action[0] == '\0')
        rv = fail(ps, v, "action must be specified");
    else
        rv = fail(ps, v, "\"%s\" is not a valid action", action);
    free(action);
    return rv;
}

/* SSH login users ("root", "autogroup:nonroot", "localpart:*@example.com",
 * any name): kept as written, but "" and "*" are refused. */
static int ssh_users_parse(struct parser *ps, const struct hujson_value *v, const char *what,
                           char ***out, size_t *n)
{
    int rv = strings_parse(ps, v, what, out, n);

    for (size_t i = 0; rv == 0 && i < *n; i++) {
        char *user = trimmed_dup((*out)[i]);

        if (user == NULL)
            return POLICY_ENOMEM;
        if (user[0] == '\0' || strcmp(user, "*") == 0)
            rv = fail(ps, &v->items[i], "user \"%s\" is not valid", user);
        free(user);
    }
    return rv;
}

/* Tailscale's SSH model: tagged sources cannot reach user-owned devices,
 * and a user destination is reachable from that same user only. */
static int ssh_pairs_check(struct parser *ps, const struct policy_ssh_rule *r)
{
    const char *only_user = NULL;
    bool tagged = false;
    bool users_ok = true;

    for (size_t i = 0; i < r->n_src; i++) {
        const struct policy_alias *a = &r->src[i];

        tagged = tagged || a->kind == POLICY_ALIAS_TAG || is_autogroup(a, POLICY_AUTOGROUP_TAGGED);
        if (a->kind == POLICY_ALIAS_USER && (only_user == NULL || strcmp(only_user, a->name) == 0))
            only_user = a->name;
        else
            users_ok = false;
    }
    for (size_t i = 0; i < r->n_dst; i++) {
        const struct policy_alias *d = &r->dst[i];

        if (d->kind == POLICY_ALIAS_USER && tagged)
            return fail_at(ps, d->pos,
                           "tags in SSH source cannot access user-owned devices (%s); use "
                           "autogroup:tagged or specific tags as destinations instead",
                           d->name);
        if (d->kind == POLICY_ALIAS_USER &&
            (!users_ok || only_user == NULL || strcmp(only_user, d->name) != 0))
            return fail_at(ps, d->pos,
                           "user destination requires source to contain only that same user "
                           "\"%s\"; use autogroup:self instead for same-user SSH access",
                           d->name);
        if (tagged &&
            (is_autogroup(d, POLICY_AUTOGROUP_SELF) || is_autogroup(d, POLICY_AUTOGROUP_MEMBER)))
            return fail_at(ps, d->pos, "tags in SSH source cannot access %s", d->name);
    }
    return 0;
}

static int accept_env_parse(struct parser *ps, const struct hujson_value *v,
                            struct policy_ssh_rule *r)
{
    int rv = strings_parse(ps, v, "acceptEnv", &r->accept_env, &r->n_accept_env);

    for (size_t i = 0; rv == 0 && i < r->n_accept_env; i++)
        if (r->accept_env[i][0] == '\0')
            rv = fail(ps, &v->items[i], "acceptEnv values cannot be empty");
    return rv;
}

static int ssh_parse(struct parser *ps, const struct hujson_value *v, struct policy_ssh_rule *r)
{
    enum { ACTION, SRC, DST, USERS, CHECK_PERIOD, ACCEPT_ENV, N };
    struct field f[N] = {
        [ACTION] = {.name = "action"},
        [SRC] = {.name = "src"},
        [DST] = {.name = "dst"},
        [USERS] = {.name = "users"},
        [CHECK_PERIOD] = {.name = "checkPeriod"},
        [ACCEPT_ENV] = {.name = "acceptEnv"},
    };
    int rv = fields_read(ps, v, "an SSH rule", f, N, rule_unsupported);

    r->pos = pos_of(v);
    if (rv == 0)
        rv = ssh_action_parse(ps, v, f[ACTION].value, &r->action);
    if (rv == 0)
        rv = aliases_parse(ps, f[SRC].value, "src", PLACE_SSH_SRC, &r->src, &r->n_src);
    if (rv == 0)
        rv = aliases_parse(ps, f[DST].value, "dst", PLACE_SSH_DST, &r->dst, &r->n_dst);
    if (rv == 0)
        rv = ssh_users_parse(ps, f[USERS].value, "users", &r->users, &r->n_users);
    if (rv == 0 && r->n_users == 0)
        rv = fail(ps, v, "users must be specified");
    if (rv == 0)
        rv = check_period_parse(ps, f[CHECK_PERIOD].value, r);
    if (rv == 0)
        rv = accept_env_parse(ps, f[ACCEPT_ENV].value, r);
    return rv != 0 ? rv : ssh_pairs_check(ps, r);
}

/* ---- nodeAttrs and autoApprovers ---- */

static int node_attr_parse(struct parser *ps, const struct hujson_value *v,
                           struct policy_node_attr *a)
{
    enum { TARGET, ATTR, APP, N };
    static const char *const unsupported[] = {"ipPool", NULL};
    struct field f[N] = {
        [TARGET] = {.name = "target"}, [ATTR] = {.name = "attr"}, [APP] = {.name = "app"}};
    int rv = fields_read(ps, v, "a nodeAttrs entry", f, N, unsupported);

    a->pos = pos_of(v);
    if (rv == 0)
        rv = aliases_parse(ps, f[TARGET].value, "target", PLACE_TARGET, &a->target, &a->n_target);
    if (rv == 0)
        rv = strings_parse(ps, f[ATTR].value, "attr", &a->attr, &a->n_attr);
    if (rv == 0)
        rv = app_parse(ps, f[APP].value, false, &a->app);
    return rv;
}

static int route_approver_parse(struct parser *ps, const struct hujson_member *m,
                                struct policy_route_approver *r)
{
    const char *route;
    enum prefix_result pr;
    int rv = key_of(ps, m, &route);

    if (rv != 0)
        return rv;
    r->pos = (struct policy_pos){m->line, m->col};
    pr = prefix_parse(route, &r->prefix);
    if (pr == PREFIX_HOST_BITS)
        return fail_at(ps, r->pos, "autoApprovers route \"%s\": prefix has host bits set", route);
    if (pr != PREFIX_OK || strchr(route, '/') == NULL)
        return fail_at(ps, r->pos, "autoApprovers route \"%s\" is not a prefix (address/bits)",
                       route);
    return aliases_parse(ps, &m->value, "route approvers", PLACE_APPROVER, &r->approvers,
                         &r->n_approvers);
}

static int auto_approvers_parse(struct parser *ps, const struct hujson_value *v)
{
    enum { ROUTES, EXIT_NODE, N };
    struct field f[N] = {[ROUTES] = {.name = "routes"}, [EXIT_NODE] = {.name = "exitNode"}};
    const struct hujson_value *routes;
    struct policy *p = ps->p;
    int rv;

    if (present(v) == NULL)
        return 0;
    rv = fields_read(ps, v, "autoApprovers", f, N, NULL);
    routes = present(f[ROUTES].value);
    if (rv == 0 && routes != NULL && routes->kind != HUJSON_OBJECT)
        rv = fail(ps, routes, "autoApprovers routes must be an object");
    if (rv == 0 && routes != NULL)
        rv = elements_alloc(routes->n, sizeof *p->route_approvers, (void **)&p->route_approvers,
                            &p->n_route_approvers);
    for (size_t i = 0; rv == 0 && routes != NULL && i < routes->n; i++)
        rv = route_approver_parse(ps, &routes->members[i], &p->route_approvers[i]);
    if (rv == 0)
        rv = aliases_parse(ps, f[EXIT_NODE].value, "exitNode", PLACE_APPROVER,
                           &p->exit_node_approvers, &p->n_exit_node_approvers);
    return rv;
}

/* ---- tests and sshTests ---- */

/* A tests destination is one connection: one host, one port. */
static int test_dst_check(struct parser *ps, const struct hujson_value *v,
                          const struct policy_acl_dst *d)
{
    const struct policy_alias *a = &d->alias;
    unsigned full = a->prefix.family == 4 ? 32 : 128;

    if (d->n_ports != 1 || d->ports[0].first != d->ports[0].last)
        return fail(ps, v, "test destination \"%s\": the port must be a single port", v->text);
    if ((a->kind == POLICY_ALIAS_PREFIX && strchr(a->name, '/') != NULL) ||
        (a->kind == POLICY_ALIAS_HOST && a->prefix.bits < full))
        return fail(ps, v, "test destination \"%s\" must be a single host, not a CIDR range",
                    v->text);
    return 0;
}

static int test_dsts_parse(struct parser *ps, const struct hujson_value *v, const char *what,
                           struct policy_acl_dst **out, size_t *n)
{
    int rv = dsts_parse(ps, v, what, PLACE_TEST_DST, out, n);

    for (size_t i = 0; rv == 0 && i < *n; i++)
        rv = test_dst_check(ps, &v->items[i], &(*out)[i]);
    return rv;
}

static int test_src_parse(struct parser *ps, const struct hujson_value *test,
                          const struct hujson_value *v, struct policy_alias *src)
{
    const char *s;
    int rv;

    if (present(v) == NULL)
        return fail(ps, test, "a test needs a src");
    rv = string_of(ps, v, "src", &s);
    if (rv == 0 && s[strspn(s, " \t\r\n")] == '\0')
        rv = fail(ps, v, "a test needs a non-empty src");
    return rv != 0 ? rv : alias_parse(ps, v, "src", PLACE_TEST_SRC, src);
}

static int test_parse(struct parser *ps, const struct hujson_value *v, struct policy_test *t)
{
    enum { SRC, PROTO, ACCEPT, DENY, N };
    struct field f[N] = {[SRC] = {.name = "src"},
                         [PROTO] = {.name = "proto"},
                         [ACCEPT] = {.name = "accept"},
                         [DENY] = {.name = "deny"}};
    int rv = fields_read(ps, v, "a test", f, N, NULL);

    t->pos = pos_of(v);
    if (rv == 0)
        rv = test_src_parse(ps, v, f[SRC].value, &t->src);
    if (rv == 0)
        rv = proto_parse(ps, f[PROTO].value, &t->proto);
    if (rv == 0 && t->proto.n > 0 && !protos_have_ports(&t->proto))
        rv = fail(ps, f[PROTO].value, "test protocol must be tcp, udp, sctp, or empty");
    if (rv == 0)
        rv = test_dsts_parse(ps, f[ACCEPT].value, "accept", &t->accept, &t->n_accept);
    if (rv == 0)
        rv = test_dsts_parse(ps, f[DENY].value, "deny", &t->deny, &t->n_deny);
    if (rv == 0 && t->n_accept == 0 && t->n_deny == 0)
        rv = fail(ps, v, "a test must have at least one of \"accept\" or \"deny\"");
    return rv;
}

/* An sshTests destination is one SSH host: no CIDR range, no port. */
static int ssh_test_dst_check(struct parser *ps, const struct policy_alias *a)
{
    unsigned full = a->prefix.family == 4 ? 32 : 128;

    if ((a->kind == POLICY_ALIAS_PREFIX || a->kind == POLICY_ALIAS_HOST) && a->prefix.bits < full)
        return fail_at(ps, a->pos, "SSH tests dst contains disallowed element \"%s\"", a->name);
    return 0;
}

static int ssh_test_parse(struct parser *ps, const struct hujson_value *v,
                          struct policy_ssh_test *t)
{
    enum { SRC, DST, ACCEPT, CHECK, DENY, N };
    struct field f[N] = {
        [SRC] = {.name = "src"},     [DST] = {.name = "dst"},   [ACCEPT] = {.name = "accept"},
        [CHECK] = {.name = "check"}, [DENY] = {.name = "deny"},
    };
    int rv = fields_read(ps, v, "an sshTests entry", f, N, NULL);

    t->pos = pos_of(v);
    if (rv == 0)
        rv = test_src_parse(ps, v, f[SRC].value, &t->src);
    if (rv == 0)
        rv = aliases_parse(ps, f[DST].value, "dst", PLACE_SSHTEST_DST, &t->dst, &t->n_dst);
    if (rv == 0 && t->n_dst == 0)
        rv = fail(ps, v, "an sshTests entry must have at least one dst");
    for (size_t i = 0; rv == 0 && i < t->n_dst; i++)
        rv = ssh_test_dst_check(ps, &t->dst[i]);
    if (rv == 0)
        rv = strings_parse(ps, f[ACCEPT].value, "accept", &t->accept, &t->n_accept);
    if (rv == 0)
        rv = strings_parse(ps, f[CHECK].value, "check", &t->check, &t->n_check);
    if (rv == 0)
        rv = strings_parse(ps, f[DENY].value, "deny", &t->deny, &t->n_deny);
    return rv;
}

/* ---- the document ---- */

enum top_key {
    TOP_GROUPS,
    TOP_HOSTS,
    TOP_TAG_OWNERS,
    TOP_ACLS,
    TOP_GRANTS,
    TOP_SSH,
    TOP_NODE_ATTRS,
    TOP_AUTO_APPROVERS,
    TOP_TESTS,
    TOP_SSH_TESTS,
    TOP_RANDOMIZE_CLIENT_PORT,
    TOP_N,
};

/* Top-level sections of Tailscale's that concord does not implement. */
static const char *const top_unsupported[] = {
    "postures",    "defaultSrcPosture", "ipsets",          "derpMap",
    "disableIPv4", "OneCGNATRoute",     "extraDNSRecords", NULL,
};

/* A top-level list of rules: *list is NULL when absent or null. */
static int rules_alloc(struct parser *ps, const struct hujson_value *v, const char *what,
                       size_t elem, void **out, size_t *n, const struct hujson_value **list)
{
    int rv = list_of(ps, v, what, list);

    if (rv == 0 && *list != NULL)
        rv = elements_alloc((*list)->n, elem, out, n);
    return rv;
}

static int rules_parse(struct parser *ps, struct field *f)
{
    struct policy *p = ps->p;
    const struct hujson_value *l;
    int rv = rules_alloc(ps, f[TOP_ACLS].value, "acls", sizeof *p->acls, (void **)&p->acls,
                         &p->n_acls, &l);

    p->allows_all = present(f[TOP_ACLS].value) == NULL && present(f[TOP_GRANTS].value) == NULL;
    for (size_t i = 0; rv == 0 && i < p->n_acls; i++)
        rv = acl_parse(ps, &l->items[i], &p->acls[i]);
    if (rv == 0)
        rv = rules_alloc(ps, f[TOP_GRANTS].value, "grants", sizeof *p->grants, (void **)&p->grants,
                         &p->n_grants, &l);
    for (size_t i = 0; rv == 0 && i < p->n_grants; i++)
        rv = grant_parse(ps, &l->items[i], &p->grants[i]);
    if (rv == 0)
        rv = rules_alloc(ps, f[TOP_SSH].value, "ssh", sizeof *p->ssh, (void **)&p->ssh, &p->n_ssh,
                         &l);
    for (size_t i = 0; rv == 0 && i < p->n_ssh; i++)
        rv = ssh_parse(ps, &l->items[i], &p->ssh[i]);
    if (rv == 0)
        rv = rules_alloc(ps, f[TOP_NODE_ATTRS].value, "nodeAttrs", sizeof *p->node_attrs,
                         (void **)&p->node_attrs, &p->n_node_attrs, &l);
    for (size_t i = 0; rv == 0 && i < p->n_node_attrs; i++)
        rv = node_attr_parse(ps, &l->items[i], &p->node_attrs[i]);
    return rv;
}

static int tests_parse(struct parser *ps, struct field *f)
{
    struct policy *p = ps->p;
    const struct hujson_value *l;
    int rv = rules_alloc(ps, f[TOP_TESTS].value, "tests", sizeof *p->tests, (void **)&p->tests,
                         &p->n_tests, &l);

    for (size_t i = 0; rv == 0 && i < p->n_tests; i++)
        rv = test_parse(ps, &l->items[i], &p->tests[i]);
    if (rv == 0)
        rv = rules_alloc(ps, f[TOP_SSH_TESTS].value, "sshTests", sizeof *p->ssh_tests,
                         (void **)&p->ssh_tests, &p->n_ssh_tests, &l);
    for (size_t i = 0; rv == 0 && i < p->n_ssh_tests; i++)
        rv = ssh_test_parse(ps, &l->items[i], &p->ssh_tests[i]);
    return rv;
}

static int randomize_parse(struct parser *ps, const struct hujson_value *v)
{
    if (present(v) == NULL)
        return 0;
    if (v->kind != HUJSON_TRUE && v->kind != HUJSON_FALSE)
        return fail(ps, v, "randomizeClientPort must be true or false");
    ps->p->randomize_client_port = v->kind == HUJSON_TRUE;
    return 0;
}

/* Definitions first (everything else refers to them), then the rules. */
static int document_parse(struct parser *ps, const struct hujson_value *root)
{
    struct field f[TOP_N] = {
        [TOP_GROUPS] = {.name = "groups"},
        [TOP_HOSTS] = {.name = "hosts"},
        [TOP_TAG_OWNERS] = {.name = "tagOwners"},
        [TOP_ACLS] = {.name = "acls"},
        [TOP_GRANTS] = {.name = "grants"},
        [TOP_SSH] = {.name = "ssh"},
        [TOP_NODE_ATTRS] = {.name = "nodeAttrs"},
        [TOP_AUTO_APPROVERS] = {.name = "autoApprovers"},
        [TOP_TESTS] = {.name = "tests"},
        [TOP_SSH_TESTS] = {.name = "sshTests"},
        [TOP_RANDOMIZE_CLIENT_PORT] = {.name = "randomizeClientPort"},
    };
    int rv = fields_read(ps, root, "the policy", f, TOP_N, top_unsupported);

    if (rv == 0)
        rv = groups_parse(ps, f[TOP_GROUPS].value);
    if (rv == 0)
        rv = hosts_parse(ps, f[TOP_HOSTS].value);
    if (rv == 0)
        rv = tag_owners_parse(ps, f[TOP_TAG_OWNERS].value);
    if (rv == 0)
        rv = rules_parse(ps, f);
    if (rv == 0)
        rv = auto_approvers_parse(ps, f[TOP_AUTO_APPROVERS].value);
    if (rv == 0)
        rv = tests_parse(ps, f);
    if (rv == 0)
        rv = randomize_parse(ps, f[TOP_RANDOMIZE_CLIENT_PORT].value);
    return rv;
}

int policy_parse(const char *text, size_t len, struct policy **out, struct policy_error *err)
{
    struct parser ps = {.err = err};
    struct hujson_doc *doc;
    int rv;

    *out = NULL;
    rv = hujson_parse(text, len, &doc, err);
    if (rv != 0)
        return rv;
    ps.p = calloc(1, sizeof *ps.p);
    rv = ps.p == NULL ? POLICY_ENOMEM : document_parse(&ps, hujson_root(doc));
    free(ps.groups.refs);
    free(ps.tags.refs);
    free(ps.hosts.refs);
    hujson_free(doc);
    if (rv != 0) {
        policy_free(ps.p);
        return rv;
    }
    *out = ps.p;
    return 0;
}
