/* tests/unit/policy/test_parse.c: the policy parser (parse.c) and its HuJSON
 * reader: comments and trailing commas, every section into the AST of
 * policy_internal.h, each class of refusal at the line and column it names,
 * hostile documents refused (deep nesting, huge port lists and strings, too
 * many values, group cycles), and prefix parse/format round trips. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "server/policy/hujson.h"
#include "server/policy/policy_internal.h"

static struct policy *parse_ok(const char *text)
{
    struct policy_error err = {0};
    struct policy *p = NULL;

    if (policy_parse(text, strlen(text), &p, &err) != 0)
        fail_msg("policy refused at %u:%u: %s\n%s", err.line, err.col, err.message, text);
    assert_non_null(p);
    return p;
}

/* Line and column (in characters) of the first marker in text. */
static struct policy_pos pos_in(const char *text, const char *marker)
{
    const char *at = strstr(text, marker);
    struct policy_pos pos = {1, 1};

    if (at == NULL)
        fail_msg("marker %s not in the text", marker);
    for (const char *c = text; c < at; c++) {
        if (*c == '\n') {
            pos.line++;
            pos.col = 1;
        } else if ((*c & 0xc0) != 0x80) {
            pos.col++;
        }
    }
    return pos;
}

static void assert_pos(struct policy_pos got, const char *text, const char *marker)
{
    struct policy_pos want = pos_in(text, marker);

    if (got.line != want.line || got.col != want.col)
        fail_msg("%s at %u:%u, want %u:%u", marker, got.line, got.col, want.line, want.col);
}

/* len bytes of text are refused, saying needle, at line:col. */
static void assert_refused_n(const char *text, size_t len, unsigned line, unsigned col,
                             const char *needle)
{
    struct policy_error err;
    struct policy *p = NULL;

    assert_int_equal(policy_parse(text, len, &p, &err), POLICY_EINVAL);
    assert_null(p);
    if (strstr(err.message, needle) == NULL)
        fail_msg("\"%s\" does not say \"%s\"", err.message, needle);
    if (err.line != line || err.col != col)
        fail_msg("\"%s\" at %u:%u, want %u:%u", err.message, err.line, err.col, line, col);
}

/* text is refused, saying needle, where marker starts. */
static void assert_refused(const char *text, const char *marker, const char *needle)
{
    struct policy_pos at = pos_in(text, marker);

    assert_refused_n(text, strlen(text), at.line, at.col, needle);
}

/* ---- HuJSON ---- */

static void test_hujson_reads_comments_and_trailing_commas(void **state)
{
    static const char text[] = "// a policy\n"
                               "{\n"
                               "  /* block\n"
                               "     comment */ \"é\": [1, -2.5e3, true, false, null,],\n"
                               "  \"b\": {\"c\": \"d\",}, // trailing\n"
                               "}\n";
    const struct hujson_value *root;
    const struct hujson_value *arr;
    struct hujson_doc *doc;
    struct policy_error err;

    (void)state;
    assert_int_equal(hujson_parse(text, strlen(text), &doc, &err), 0);
    root = hujson_root(doc);
    assert_int_equal(root->kind, HUJSON_OBJECT);
    assert_int_equal(root->n, 2);
    assert_int_equal(root->line, 2);
    assert_int_equal(root->col, 1);
    assert_string_equal(root->members[0].key, "é");
    assert_int_equal(root->members[0].line, 4);
    assert_int_equal(root->members[0].col, 17);
    arr = &root->members[0].value;
    assert_int_equal(arr->kind, HUJSON_ARRAY);
    assert_int_equal(arr->n, 5);
    /* Columns count characters: "é" is two bytes, one column. */
    assert_int_equal(arr->col, 22);
    assert_int_equal(arr->items[1].kind, HUJSON_NUMBER);
    assert_string_equal(arr->items[1].text, "-2.5e3");
    assert_int_equal(arr->items[1].col, 26);
    assert_int_equal(arr->items[2].kind, HUJSON_TRUE);
    assert_int_equal(arr->items[3].kind, HUJSON_FALSE);
    assert_int_equal(arr->items[4].kind, HUJSON_NULL);
    assert_string_equal(root->members[1].value.members[0].value.text, "d");
    assert_int_equal(root->members[1].line, 5);
    assert_int_equal(root->members[1].col, 3);
    hujson_free(doc);
    hujson_free(NULL);
}

static void test_hujson_decodes_escapes(void **state)
{
    static const char text[] = "\"\\u00e9\\ud83d\\ude00\\n\\t\\\"\\\\\\/\\u0000x\"";
    static const char want[] = "\xc3\xa9\xf0\x9f\x98\x80\n\t\"\\/\0x";
    struct hujson_doc *doc;
    struct policy_error err;

    (void)state;
    assert_int_equal(hujson_parse(text, strlen(text), &doc, &err), 0);
    assert_int_equal(hujson_root(doc)->kind, HUJSON_STRING);
    assert_int_equal(hujson_root(doc)->n, sizeof want - 1);
    assert_memory_equal(hujson_root(doc)->text, want, sizeof want - 1);
    hujson_free(doc);
}

static void test_hujson_refuses_malformed_text(void **state)
{
    static const struct {
        const char *text;
        unsigned line;
        unsigned col;
        const char *needle;
    } cases[] = {
        {"", 1, 1, "unexpected end"},
        {"  \n  ", 2, 3, "unexpected end"},
        {"[,]", 1, 2, "invalid character ','"},
        {"[1,,2]", 1, 4, "invalid character ','"},
        {"{\"a\": 1,,}", 1, 9, "where an object key"},
        {"[1 2]", 1, 4, "expected ',' or ']'"},
        {"{\"a\" 1}", 1, 6, "expected ':'"},
        {"{a: 1}", 1, 2, "where an object key"},
        {"{} // no newline", 1, 4, "unterminated // comment"},
        {"{}\n/* open", 2, 1, "unterminated /* comment"},
        {"{} / ", 1, 4, "invalid character '/'"},
        {"\"\\ud800\"", 1, 2, "lone surrogate"},
        {"\"\\udc00\"", 1, 2, "lone surrogate"},
        {"\"\\x\"", 1, 2, "invalid escape"},
        {"\"\\u12g4\"", 1, 2, "invalid \\u escape"},
        {"\"a\xff\"", 1, 3, "invalid UTF-8"},
        {"\"\xed\xa0\x80\"", 1, 2, "invalid UTF-8"},
        {"\"\xc0\xaf\"", 1, 2, "invalid UTF-8"},
        {"[\"tab\there\"]", 1, 6, "control character"},
        {"\"open", 1, 6, "unexpected end"},
        {"{\"a\": 1, \"b\": 2, \"a\": 3}", 1, 18, "duplicate key \"a\""},
        {"01", 1, 1, "invalid number"},
        {"1.", 1, 1, "invalid number"},
        {"-", 1, 1, "invalid number"},
        {"1e", 1, 1, "invalid number"},
        {"1x", 1, 1, "invalid number"},
        {"tru", 1, 1, "invalid literal"},
        {"nulls", 1, 1, "invalid literal"},
        {"[1] 2", 1, 5, "after the top-level value"},
        {"\xef\xbb\xbf{}", 1, 1, "invalid byte 0xef"},
        {"// \xff\n{}", 1, 1, "invalid UTF-8 in comment"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct hujson_doc *doc = NULL;
        struct policy_error err;

        if (hujson_parse(cases[i].text, strlen(cases[i].text), &doc, &err) != POLICY_EINVAL)
            fail_msg("accepted: %s", cases[i].text);
        if (strstr(err.message, cases[i].needle) == NULL || err.line != cases[i].line ||
            err.col != cases[i].col)
            fail_msg("%s: \"%s\" at %u:%u, want \"%s\" at %u:%u", cases[i].text, err.message,
                     err.line, err.col, cases[i].needle, cases[i].line, cases[i].col);
    }
}

/* ---- every section ---- */

static const char full_policy[] =
    "// every section of a policy\n"
    "{\n"
    "  \"groups\": {\n"
    "    \"group:admins\": [\"odin@example.com\", \"thor@\"],\n"
    "    \"group:empty\": [],\n"
    "  },\n"
    "  \"hosts\": {\n"
    "    \"web\": \"100.64.0.10\",\n"
    "    \"lan\": \"10.0.0.0/8\",\n"
    "    \"v6net\": \"fd7a:115c:a1e0::/48\",\n"
    "  },\n"
    "  \"tagOwners\": {\n"
    "    \"tag:server\": [\"group:admins\"],\n"
    "    \"tag:exit\": [\"tag:server\", \"freya@example.com\"],\n"
    "  },\n"
    "  \"acls\": [\n"
    "    {\"action\": \"accept\", \"src\": [\"group:admins\", \" web \"],\n"
    "     \"dst\": [\"tag:server:22,80-90\", \"lan:*\"]},\n"
    "    {\"action\": \"accept\", \"proto\": \"udp\", \"src\": [\"*\"],\n"
    "     \"dst\": [\"[fd7a:115c:a1e0::1]:53\", \"fd7a:115c:a1e0::2:443\"]},\n"
    "    {\"action\": \"accept\", \"proto\": \"1\", \"src\": [\"autogroup:member\"],\n"
    "     \"dst\": [\"autogroup:self:*\", \"autogroup:internet:*\"]},\n"
    "  ],\n"
    "  \"grants\": [\n"
    "    {\"src\": [\"autogroup:danger-all\"], \"dst\": [\"tag:server\"],\n"
    "     \"ip\": [\"*\", \"22\", \"tcp:443\", \"udp:1000-2000\", \"icmp:*\", \"80,8080\"]},\n"
    "    {\"src\": [\"group:admins\"], \"dst\": [\"v6net\"], \"via\": [\"tag:exit\"],\n"
    "     \"app\": {\"example.com/cap/x\": [{\"a\": 1}, \"b\", 2.5]}},\n"
    "  ],\n"
    "  \"ssh\": [\n"
    "    {\"action\": \"accept\", \"src\": [\"autogroup:member\"], \"dst\": [\"autogroup:self\"],\n"
    "     \"users\": [\"root\", \"autogroup:nonroot\"], \"acceptEnv\": [\"GIT_*\"]},\n"
    "    {\"action\": \"check\", \"checkPeriod\": \"1h30m\", \"src\": [\"group:admins\"],\n"
    "     \"dst\": [\"tag:server\"], \"users\": [\"localpart:*@example.com\"]},\n"
    "    {\"action\": \"check\", \"checkPeriod\": \"always\", \"src\": [\"tag:exit\"],\n"
    "     \"dst\": [\"tag:server\"], \"users\": [\"ubuntu\"]},\n"
    "  ],\n"
    "  \"nodeAttrs\": [\n"
    "    {\"target\": [\"*\", \"100.64.0.7\"], \"attr\": [\"funnel\"],\n"
    "     \"app\": {\"tailscale.com/app-connectors\": [{\"name\": \"x\"}]}},\n"
    "  ],\n"
    "  \"autoApprovers\": {\n"
    "    \"routes\": {\"10.1.0.0/16\": [\"tag:server\", \"group:admins\"]},\n"
    "    \"exitNode\": [\"tag:exit\"],\n"
    "  },\n"
    "  \"tests\": [\n"
    "    {\"src\": \"odin@example.com\", \"proto\": \"tcp\", \"accept\": [\"tag:server:22\"],\n"
    "     \"deny\": [\"web:443\"]},\n"
    "  ],\n"
    "  \"sshTests\": [\n"
    "    {\"src\": \"thor@\", \"dst\": [\"tag:server\"], \"accept\": [\"root\"],\n"
    "     \"check\": [\"alice\"], \"deny\": [\"bob\"]},\n"
    "  ],\n"
    "  \"randomizeClientPort\": true,\n"
    "}\n";

static void assert_prefix(const struct policy_prefix *p, const char *want)
{
    char buf[64];

    policy_prefix_format(p, buf, sizeof buf);
    assert_string_equal(buf, want);
}

static void assert_range(const struct policy_port_range *r, unsigned first, unsigned last)
{
    assert_int_equal(r->first, first);
    assert_int_equal(r->last, last);
}

static void assert_definitions(const struct policy *p)
{
    assert_int_equal(p->n_groups, 2);
    assert_string_equal(p->groups[0].name, "group:admins");
    assert_int_equal(p->groups[0].n_members, 2);
    assert_string_equal(p->groups[0].members[0], "odin@example.com");
    assert_string_equal(p->groups[0].members[1], "thor@");
    assert_pos(p->groups[0].pos, full_policy, "\"group:admins\": [");
    assert_int_equal(p->groups[1].n_members, 0);

    assert_int_equal(p->n_hosts, 3);
    assert_string_equal(p->hosts[0].name, "web");
    assert_prefix(&p->hosts[0].prefix, "100.64.0.10/32");
    assert_prefix(&p->hosts[1].prefix, "10.0.0.0/8");
    assert_prefix(&p->hosts[2].prefix, "fd7a:115c:a1e0::/48");
    assert_pos(p->hosts[1].pos, full_policy, "\"lan\"");

    assert_int_equal(p->n_tag_owners, 2);
    assert_string_equal(p->tag_owners[1].tag, "tag:exit");
    assert_int_equal(p->tag_owners[1].n_owners, 2);
    assert_int_equal(p->tag_owners[1].owners[0].kind, POLICY_ALIAS_TAG);
    assert_int_equal(p->tag_owners[1].owners[0].index, 0);
    assert_int_equal(p->tag_owners[1].owners[1].kind, POLICY_ALIAS_USER);
    assert_int_equal(p->tag_owners[0].owners[0].kind, POLICY_ALIAS_GROUP);
    assert_int_equal(p->tag_owners[0].owners[0].index, 0);
}

static void assert_acls(const struct policy *p)
{
    const struct policy_acl *a = p->acls;

    assert_int_equal(p->n_acls, 3);
    assert_pos(a[0].pos, full_policy, "{\"action\": \"accept\", \"src\": [\"group:admins\"");
    assert_int_equal(a[0].n_src, 2);
    assert_int_equal(a[0].src[0].kind, POLICY_ALIAS_GROUP);
    assert_int_equal(a[0].src[1].kind, POLICY_ALIAS_HOST);
    assert_string_equal(a[0].src[1].name, "web");
    assert_int_equal(a[0].src[1].index, 0);
    assert_prefix(&a[0].src[1].prefix, "100.64.0.10/32");
    assert_pos(a[0].src[1].pos, full_policy, "\" web \"");
    assert_int_equal(a[0].proto.n, 0);
    assert_int_equal(a[0].n_dst, 2);
    assert_string_equal(a[0].dst[0].alias.name, "tag:server");
    assert_int_equal(a[0].dst[0].alias.kind, POLICY_ALIAS_TAG);
    assert_int_equal(a[0].dst[0].n_ports, 2);
    assert_range(&a[0].dst[0].ports[0], 22, 22);
    assert_range(&a[0].dst[0].ports[1], 80, 90);
    assert_pos(a[0].dst[0].alias.pos, full_policy, "\"tag:server:22");
    assert_int_equal(a[0].dst[1].alias.kind, POLICY_ALIAS_HOST);
    assert_range(&a[0].dst[1].ports[0], 0, 65535);

    assert_int_equal(a[1].proto.n, 1);
    assert_int_equal(a[1].proto.numbers[0], 17);
    assert_int_equal(a[1].src[0].kind, POLICY_ALIAS_WILDCARD);
    assert_int_equal(a[1].dst[0].alias.kind, POLICY_ALIAS_PREFIX);
    assert_prefix(&a[1].dst[0].alias.prefix, "fd7a:115c:a1e0::1/128");
    assert_range(&a[1].dst[0].ports[0], 53, 53);
    assert_prefix(&a[1].dst[1].alias.prefix, "fd7a:115c:a1e0::2/128");
    assert_range(&a[1].dst[1].ports[0], 443, 443);

    assert_int_equal(a[2].proto.numbers[0], 1);
    assert_int_equal(a[2].src[0].autogroup, POLICY_AUTOGROUP_MEMBER);
    assert_int_equal(a[2].dst[0].alias.kind, POLICY_ALIAS_AUTOGROUP);
    assert_int_equal(a[2].dst[0].alias.autogroup, POLICY_AUTOGROUP_SELF);
    assert_int_equal(a[2].dst[1].alias.autogroup, POLICY_AUTOGROUP_INTERNET);
}

static void assert_grants(const struct policy *p)
{
    static const struct {
        int proto; /* 0: the default set */
        unsigned first;
        unsigned last;
    } ips[] = {{0, 0, 65535}, {0, 22, 22}, {6, 443, 443},  {17, 1000, 2000},
               {1, 0, 65535}, {0, 80, 80}, {0, 8080, 8080}};
    const struct policy_grant *g = p->grants;

    assert_int_equal(p->n_grants, 2);
    assert_int_equal(g[0].src[0].autogroup, POLICY_AUTOGROUP_DANGER_ALL);
    assert_int_equal(g[0].n_ip, sizeof ips / sizeof ips[0]);
    for (size_t i = 0; i < g[0].n_ip; i++) {
        assert_int_equal(g[0].ip[i].proto.n, ips[i].proto != 0);
        if (ips[i].proto != 0)
            assert_int_equal(g[0].ip[i].proto.numbers[0], ips[i].proto);
        assert_range(&g[0].ip[i].ports, ips[i].first, ips[i].last);
    }
    assert_null(g[0].app);
    assert_int_equal(g[0].n_via, 0);

    assert_int_equal(g[1].n_ip, 0);
    assert_int_equal(g[1].dst[0].kind, POLICY_ALIAS_HOST);
    assert_int_equal(g[1].dst[0].index, 2);
    assert_int_equal(g[1].n_via, 1);
    assert_int_equal(g[1].via[0].kind, POLICY_ALIAS_TAG);
    assert_int_equal(g[1].via[0].index, 1);
    assert_non_null(g[1].app);
    assert_int_equal(json_array_size(json_object_get(g[1].app, "example.com/cap/x")), 3);
    assert_true(json_is_integer(
        json_object_get(json_array_get(json_object_get(g[1].app, "example.com/cap/x"), 0), "a")));
    assert_pos(g[1].pos, full_policy, "{\"src\": [\"group:admins\"], \"dst\"");
}

static void assert_ssh(const struct policy *p)
{
    const struct policy_ssh_rule *r = p->ssh;

    assert_int_equal(p->n_ssh, 3);
    assert_int_equal(r[0].action, POLICY_SSH_ACCEPT);
    assert_int_equal(r[0].dst[0].autogroup, POLICY_AUTOGROUP_SELF);
    assert_int_equal(r[0].n_users, 2);
    assert_string_equal(r[0].users[1], "autogroup:nonroot");
    assert_int_equal(r[0].n_accept_env, 1);
    assert_string_equal(r[0].accept_env[0], "GIT_*");
    assert_int_equal(r[0].check_period_s, 0);
    assert_int_equal(r[1].action, POLICY_SSH_CHECK);
    assert_int_equal(r[1].check_period_s, 5400);
    assert_string_equal(r[1].users[0], "localpart:*@example.com");
    assert_int_equal(r[2].check_period_s, -1);
    assert_pos(r[2].pos, full_policy, "{\"action\": \"check\", \"checkPeriod\": \"always\"");
}

static void assert_attrs_and_approvers(const struct policy *p)
{
    assert_int_equal(p->n_node_attrs, 1);
    assert_int_equal(p->node_attrs[0].n_target, 2);
    assert_int_equal(p->node_attrs[0].target[1].kind, POLICY_ALIAS_PREFIX);
    assert_string_equal(p->node_attrs[0].attr[0], "funnel");
    assert_non_null(json_object_get(p->node_attrs[0].app, "tailscale.com/app-connectors"));

    assert_int_equal(p->n_route_approvers, 1);
    assert_prefix(&p->route_approvers[0].prefix, "10.1.0.0/16");
    assert_int_equal(p->route_approvers[0].n_approvers, 2);
    assert_int_equal(p->route_approvers[0].approvers[1].kind, POLICY_ALIAS_GROUP);
    assert_pos(p->route_approvers[0].pos, full_policy, "\"10.1.0.0/16\"");
    assert_int_equal(p->n_exit_node_approvers, 1);
    assert_int_equal(p->exit_node_approvers[0].index, 1);
}

static void assert_tests(const struct policy *p)
{
    assert_int_equal(p->n_tests, 1);
    assert_int_equal(p->tests[0].src.kind, POLICY_ALIAS_USER);
    assert_int_equal(p->tests[0].proto.numbers[0], 6);
    assert_int_equal(p->tests[0].n_accept, 1);
    assert_range(&p->tests[0].accept[0].ports[0], 22, 22);
    assert_int_equal(p->tests[0].deny[0].alias.kind, POLICY_ALIAS_HOST);
    assert_pos(p->tests[0].src.pos, full_policy, "\"odin@example.com\", \"proto\"");

    assert_int_equal(p->n_ssh_tests, 1);
    assert_string_equal(p->ssh_tests[0].src.name, "thor@");
    assert_int_equal(p->ssh_tests[0].dst[0].kind, POLICY_ALIAS_TAG);
    assert_string_equal(p->ssh_tests[0].accept[0], "root");
    assert_string_equal(p->ssh_tests[0].check[0], "alice");
    assert_string_equal(p->ssh_tests[0].deny[0], "bob");
}

static void test_every_section_is_parsed(void **state)
{
    struct policy *p = parse_ok(full_policy);

    (void)state;
    assert_definitions(p);
    assert_acls(p);
    assert_grants(p);
    assert_ssh(p);
    assert_attrs_and_approvers(p);
    assert_tests(p);
    assert_true(p->randomize_client_port);
    assert_true(policy_randomize_client_port(p));
    policy_free(p);
}

static void test_empty_and_null_sections(void **state)
{
    struct policy *p = parse_ok("{}");

    (void)state;
    assert_int_equal(p->n_acls + p->n_groups + p->n_ssh + p->n_tests, 0);
    assert_false(policy_randomize_client_port(p));
    policy_free(p);
    p = parse_ok("{\"hosts\": null, \"groups\": null, \"ssh\": [], \"randomizeClientPort\": null,"
                 "\"tagOwners\": {\"tag:a\": []},"
                 "\"acls\": [{\"action\": \"accept\", \"src\": [], \"dst\": []}]}");
    assert_int_equal(p->n_acls, 1);
    assert_int_equal(p->acls[0].n_src, 0);
    policy_free(p);
    policy_free(NULL);
    assert_false(policy_randomize_client_port(NULL));
}

/* Tailscale matches keys without regard to case: its documents long
 * spelled them "ACLs", "Groups", "TagOwners". */
static void test_keys_ignore_case(void **state)
{
    struct policy *p = parse_ok("{\"Groups\": {\"group:a\": [\"odin@\"]},"
                                "\"TagOwners\": {\"tag:x\": [\"group:a\"]},"
                                "\"ACLs\": [{\"Action\": \"accept\", \"Src\": [\"group:a\"],"
                                "\"DST\": [\"tag:x:22\"], \"Proto\": \"TCP\"}],"
                                "\"SSH\": [{\"ACTION\": \"accept\", \"src\": [\"group:a\"],"
                                "\"dst\": [\"tag:x\"], \"Users\": [\"root\"]}]}");

    (void)state;
    assert_int_equal(p->n_acls, 1);
    assert_int_equal(p->acls[0].proto.numbers[0], 6);
    assert_int_equal(p->n_ssh, 1);
    policy_free(p);
}

/* ---- refusals ---- */

#define DEFS                                                                                       \
    "{\n"                                                                                          \
    "  \"groups\": {\"group:admins\": [\"odin@example.com\"]},\n"                                  \
    "  \"hosts\": {\"web\": \"100.64.0.10\", \"lan\": \"10.0.0.0/8\"},\n"                          \
    "  \"tagOwners\": {\"tag:server\": [\"odin@example.com\"]},\n"
#define ACL(src, dst)                                                                              \
    "  \"acls\": [{\"action\": \"accept\", \"src\": [" src "], \"dst\": [" dst "]}],\n"
#define GRANT(rest) "  \"grants\": [{\"src\": [\"*\"], " rest "}],\n"
#define SSH(rest)   "  \"ssh\": [{" rest "}],\n"
#define SSH_RULE(action, src, dst, users)                                                          \
    SSH("\"action\": " action ", \"src\": [" src "], \"dst\": [" dst "], \"users\": [" users "]")

/* A policy body (after DEFS), where the refusal must point, and what it says. */
struct refusal {
    const char *body;
    const char *marker;
    const char *needle;
};

static void assert_refusals(const struct refusal *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char *text = NULL;

        assert_true(asprintf(&text, DEFS "%s}\n", cases[i].body) > 0);
        assert_refused(text, cases[i].marker, cases[i].needle);
        free(text);
    }
}

static void test_unknown_keys_and_types_are_refused(void **state)
{
    static const struct refusal cases[] = {
        {"  \"aclz\": [],\n", "\"aclz\"", "unknown key \"aclz\" in the policy"},
        {"  \"postures\": {},\n", "\"postures\"", "not supported by concord"},
        {ACL("\"*\"", "\"*:*\"") "  \"ACLs\": [],\n", "\"ACLs\"", "duplicate key \"ACLs\""},
        {"  \"acls\": [{\"action\": \"accept\", \"src\": [], \"Src\": [], \"dst\": []}],\n",
         "\"Src\"", "duplicate key \"Src\""},
        {"  \"acls\": [], \"acls\": [],\n", "\"acls\": [],\n", "duplicate key \"acls\""},
        {"  \"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"ports\": [\"*:*\"]}],\n",
         "\"ports\"", "unknown key \"ports\" in an ACL"},
        {"  \"acls\": [{\"action\": \"accept\", \"srcPosture\": []}],\n", "\"srcPosture\"",
         "not supported"},
        {"  \"acls\": {},\n", "{},\n", "acls must be an array"},
        {"  \"acls\": [[]],\n", "[]]", "an ACL must be an object"},
        {"  \"acls\": [{\"action\": \"accept\", \"src\": \"*\"}],\n", "\"*\"}",
         "src must be an array"},
        {"  \"acls\": [{\"action\": 1}],\n", "1}", "action must be a string"},
        {"  \"acls\": [{\"src\": []}],\n", "{\"src\"", "needs \"action\": \"accept\""},
        {"  \"acls\": [{\"action\": \"deny\"}],\n", "\"deny\"", "action=\"deny\" is not supported"},
        {"  \"randomizeClientPort\": \"yes\",\n", "\"yes\"", "must be true or false"},
        {"  \"nodeAttrs\": [{\"target\": [\"*\"], \"ipPool\": [\"100.81.0.0/16\"]}],\n",
         "\"ipPool\"", "not supported by concord"},
        {ACL("\"a\\u0000@b\"", "\"*:*\""), "\"a\\u0000", "NUL"},
    };

    (void)state;
    assert_refusals(cases, sizeof cases / sizeof cases[0]);
}

static void test_undefined_names_are_refused(void **state)
{
    static const struct refusal cases[] = {
        {ACL("\"group:nope\"", "\"*:*\""), "\"group:nope\"", "group \"group:nope\" is not defined"},
        {ACL("\"*\"", "\"tag:nope:22\""), "\"tag:nope:22\"", "tag not found: \"tag:nope\""},
        {ACL("\"db\"", "\"*:*\""), "\"db\"", "host \"db\" is not defined"},
        {"  \"autoApprovers\": {\"exitNode\": [\"tag:gone\"]},\n", "\"tag:gone\"", "tag not found"},
        {GRANT("\"dst\": [\"*\"], \"ip\": [\"*\"], \"via\": [\"tag:nope\"]"), "\"tag:nope\"",
         "tag not found"},
        {ACL("\"*\"", "\"group:x:1\""), "\"group:x:1\"", "group \"group:x\" is not defined"},
        {ACL("\"autogroup:bogus\"", "\"*:*\""), "\"autogroup:bogus\"", "unknown autogroup"},
        {ACL("\"autogroup:admin\"", "\"*:*\""), "\"autogroup:admin\"", "not supported by concord"},
        {ACL("\"a:b\"", "\"*:*\""), "\"a:b\"", "\"a:b\" is not a valid alias"},
        {ACL("\"\"", "\"*:*\""), "\"\"", "\"\" is not a valid alias"},
    };

    (void)state;
    assert_refusals(cases, sizeof cases / sizeof cases[0]);
}

static void test_bad_ports_protocols_and_prefixes_are_refused(void **state)
{
    static const struct refusal cases[] = {
        {ACL("\"*\"", "\"web:99999\""), "\"web:99999\"", "invalid port number"},
        {ACL("\"*\"", "\"web:ssh\""), "\"web:ssh\"", "port \"ssh\": invalid port number"},
        {ACL("\"*\"", "\"web:0\""), "\"web:0\"", "port 0 is not valid"},
        {ACL("\"*\"", "\"web:90-80\""), "\"web:90-80\"", "first port is greater than last"},
        {ACL("\"*\"", "\"web:1-2-3\""), "\"web:1-2-3\"", "invalid port number"},
        {ACL("\"*\"", "\"web:22,\""), "\"web:22,\"", "invalid port number"},
        {ACL("\"*\"", "\"web\""), "\"web\"]", "must be alias:ports"},
        {ACL("\"*\"", "\"web:\""), "\"web:\"", "must be alias:ports"},
        {ACL("\"*\"", "\"[10.0.0.1]:22\""), "\"[10.0.0.1]", "square brackets"},
        {"  \"acls\": [{\"action\": \"accept\", \"proto\": \"bogus\"}],\n", "\"bogus\"",
         "proto \"bogus\" not known"},
        {"  \"acls\": [{\"action\": \"accept\", \"proto\": \"*\"}],\n", "\"*\"}", "not known"},
        {"  \"acls\": [{\"action\": \"accept\", \"proto\": \"06\"}],\n", "\"06\"", "leading 0"},
        {"  \"acls\": [{\"action\": \"accept\", \"proto\": \"256\"}],\n", "\"256\"",
         "out of range"},
        {"  \"acls\": [{\"action\": \"accept\", \"proto\": \"icmp\", \"src\": [\"*\"],"
         " \"dst\": [\"web:*\", \"web:22\"]}],\n",
         "\"web:22\"", "protocol 1 does not support specific ports"},
        {GRANT("\"dst\": [\"*\"], \"ip\": [\"icmp:22\"]"), "\"icmp:22\"",
         "does not support specific ports"},
        {GRANT("\"dst\": [\"*\"], \"ip\": [\"tcp:22:23\"]"), "\"tcp:22:23\"", "only one colon"},
        {GRANT("\"dst\": [\"*\"], \"ip\": [\"icmp\"]"), "\"icmp\"", "invalid port number"},
        {ACL("\"10.0.0.0/33\"", "\"*:*\""), "\"10.0.0.0/33\"", "invalid IP address or prefix"},
        {ACL("\"10.0.0.1/8\"", "\"*:*\""), "\"10.0.0.1/8\"", "host bits set"},
        {"  \"autoApprovers\": {\"routes\": {\"10.0.0.1/8\": []}},\n", "\"10.0.0.1/8\"",
         "host bits set"},
        {"  \"autoApprovers\": {\"routes\": {\"10.0.0.1\": []}},\n", "\"10.0.0.1\"",
         "is not a prefix"},
    };

    (void)state;
    assert_refusals(cases, sizeof cases / sizeof cases[0]);
}

/* Hosts are checked before anything uses them. */
static void test_bad_hosts_are_refused(void **state)
{
    (void)state;
    assert_refused("{\"hosts\": {\"x\": \"10.0.0.300\"}}", "\"10.0.0.300\"",
                   "invalid IP address or prefix");
    assert_refused("{\"hosts\": {\"x\": \"10.0.0.1/8\"}}", "\"10.0.0.1/8\"", "host bits set");
    assert_refused("{\"hosts\": {\"a:b\": \"10.0.0.1\"}}", "\"a:b\"", "invalid host name");
    assert_refused("{\"hosts\": {\"x\": 1}}", "1}", "must be a string");
}

static void test_bad_groups_and_tags_are_refused(void **state)
{
    (void)state;
    assert_refused("{\"groups\": {\"admins\": []}}", "\"admins\"", "must start with \"group:\"");
    assert_refused("{\"groups\": {\"group:a\": [\"odin\"]}}", "\"odin\"", "\"odin\" is not a user");
    assert_refused("{\"groups\": {\"group:a\": \"odin@\"}}", "\"odin@\"", "must be an array");
    assert_refused("{\"groups\": {\"group:a\": [\"odin@\"],\n"
                   "            \"group:b\": [\"thor@\", \"group:a\"]}}",
                   "\"group:a\"]",
                   "groups[\"group:b\"]: \"group:a\": group members cannot be recursive");
    assert_refused("{\"tagOwners\": {\"server\": []}}", "\"server\"", "must start with \"tag:\"");
    assert_refused("{\"tagOwners\": {\"tag:1x\": []}}", "\"tag:1x\"",
                   "tag names must start with a letter");
    assert_refused("{\"tagOwners\": {\"tag:x\": [\"group:nope\"]}}", "\"group:nope\"",
                   "group \"group:nope\" is not defined");
    assert_refused("{\"tagOwners\": {\"tag:x\": [\"tag:y\"]}}", "\"tag:y\"", "tag not found");
    assert_refused("{\"tagOwners\": {\"tag:x\": [\"autogroup:member\"]}}", "\"autogroup:member\"",
                   "cannot be used as a tag owner");
}

static void test_misplaced_autogroups_are_refused(void **state)
{
    static const struct refusal cases[] = {
        {ACL("\"autogroup:self\"", "\"*:*\""), "\"autogroup:self\"",
         "\"autogroup:self\" not valid on the src side"},
        {ACL("\"autogroup:internet\"", "\"*:*\""), "\"autogroup:internet\"",
         "autogroup:internet can only be used in ACL and grant destinations"},
        {ACL("\"autogroup:nonroot\"", "\"*:*\""), "\"autogroup:nonroot\"",
         "can only be used as an SSH user"},
        {ACL("\"*\"", "\"autogroup:danger-all:*\""), "\"autogroup:danger-all:*\"",
         "cannot use autogroup:danger-all as a dst"},
        {ACL("\"tag:server\"", "\"autogroup:self:*\""), "\"tag:server\"]",
         "autogroup:self can only be used with users, groups"},
        {GRANT("\"dst\": [\"autogroup:self\"], \"ip\": [\"*\"]"), "\"*\"]",
         "autogroup:self can only be used with users, groups"},
        {GRANT("\"dst\": [\"autogroup:internet\"], \"app\": {}"), "{\"src\"",
         "ip and app can not both be empty"},
        {GRANT("\"dst\": [\"autogroup:internet\"], \"app\": {\"example.com/cap/x\": [1]}"),
         "\"autogroup:internet\"", "cannot use app grants with autogroup:internet"},
        {SSH_RULE("\"accept\"", "\"autogroup:internet\"", "\"tag:server\"", "\"root\""),
         "\"autogroup:internet\"", "autogroup:internet can only be used"},
        {SSH_RULE("\"accept\"", "\"*\"", "\"tag:server\"", "\"root\""), "\"*\"",
         "\"*\" cannot be used as an SSH source"},
        {SSH_RULE("\"accept\"", "\"group:admins\"", "\"web\"", "\"root\""), "\"web\"]",
         "invalid dst \"web\""},
        {SSH_RULE("\"accept\"", "\"group:admins\"", "\"*\"", "\"root\""), "\"*\"",
         "wildcard (*) is not supported as an SSH destination"},
        {SSH_RULE("\"accept\"", "\"tag:server\"", "\"autogroup:self\"", "\"root\""),
         "\"autogroup:self\"", "tags in SSH source cannot access autogroup:self"},
        {SSH_RULE("\"accept\"", "\"group:admins\"", "\"thor@example.org\"", "\"root\""),
         "\"thor@example.org\"", "user destination requires source to contain only that same"},
        {"  \"nodeAttrs\": [{\"target\": [\"autogroup:self\"], \"attr\": [\"funnel\"]}],\n",
         "\"autogroup:self\"", "cannot be used as a nodeAttrs target"},
        {"  \"autoApprovers\": {\"exitNode\": [\"autogroup:member\"]},\n", "\"autogroup:member\"",
         "cannot be used as an auto approver"},
        {GRANT("\"dst\": [\"*\"], \"ip\": [\"*\"], \"via\": [\"group:admins\"]"),
         "\"group:admins\"]", "via can only be a tag"},
        {GRANT("\"dst\": [\"0.0.0.0/0\"], \"ip\": [\"*\"]"), "\"0.0.0.0/0\"",
         "to allow all IP addresses, use \"*\" or \"autogroup:internet\""},
        {GRANT("\"dst\": [\"*\"], \"app\": {\"https://example.com/cap\": []}"),
         "\"https://example.com/cap\"", "must have the form {domain}/{path}"},
        {GRANT("\"dst\": [\"*\"], \"app\": {\"tailscale.com/cap/is-admin\": []}"),
         "\"tailscale.com/cap/is-admin\"", "must not be in the tailscale.com domain"},
        {GRANT("\"dst\": [\"*\"], \"app\": {\"example.com/cap/x\": {}}"), "{}}",
         "must be an array"},
    };

    (void)state;
    assert_refusals(cases, sizeof cases / sizeof cases[0]);
}

static void test_bad_ssh_rules_are_refused(void **state)
{
    static const struct refusal cases[] = {
        {SSH_RULE("\"deny\"", "\"group:admins\"", "\"tag:server\"", "\"root\""), "\"deny\"",
         "\"deny\" is not a valid action"},
        {SSH_RULE("\"Accept\"", "\"group:admins\"", "\"tag:server\"", "\"root\""), "\"Accept\"",
         "\"Accept\" is not a valid action"},
        {SSH_RULE("\" \"", "\"group:admins\"", "\"tag:server\"", "\"root\""), "\" \"",
         "action must be specified"},
        {SSH("\"src\": [\"group:admins\"], \"dst\": [\"tag:server\"], \"users\": [\"root\"]"),
         "{\"src\"", "action must be specified"},
        {SSH_RULE("\"accept\"", "\"group:admins\"", "\"tag:server\"", ""), "{\"action\"",
         "users must be specified"},
        {SSH("\"action\": \"accept\", \"src\": [\"group:admins\"], \"dst\": [\"tag:server\"]"),
         "{\"action\"", "users must be specified"},
        {SSH_RULE("\"accept\"", "\"group:admins\"", "\"tag:server\"", "\"root\", \"*\""), "\"*\"",
         "user \"*\" is not valid"},
        {SSH_RULE("\"accept\"", "\"group:admins\"", "\"tag:server\"", "\" \""), "\" \"",
         "user \"\" is not valid"},
        {SSH("\"action\": \"accept\", \"checkPeriod\": \"1h\", \"src\": [\"group:admins\"], "
             "\"dst\": [\"tag:server\"], \"users\": [\"root\"]"),
         "\"1h\"", "checkPeriod is only valid with action \"check\""},
        {SSH("\"action\": \"check\", \"checkPeriod\": \"168h0m1s\", \"src\": [\"group:admins\"], "
             "\"dst\": [\"tag:server\"], \"users\": [\"root\"]"),
         "\"168h0m1s\"", "above the max (168h)"},
        {SSH("\"action\": \"check\", \"checkPeriod\": \"-1m\", \"src\": [\"group:admins\"], "
             "\"dst\": [\"tag:server\"], \"users\": [\"root\"]"),
         "\"-1m\"", "must be a positive duration"},
        {SSH("\"action\": \"check\", \"checkPeriod\": \"1d\", \"src\": [\"group:admins\"], "
             "\"dst\": [\"tag:server\"], \"users\": [\"root\"]"),
         "\"1d\"", "time: invalid duration \"1d\""},
        {SSH("\"action\": \"accept\", \"acceptEnv\": [\"\"], \"src\": [\"group:admins\"], "
             "\"dst\": [\"tag:server\"], \"users\": [\"root\"]"),
         "\"\"]", "acceptEnv values cannot be empty"},
    };

    (void)state;
    assert_refusals(cases, sizeof cases / sizeof cases[0]);
}

static void test_bad_tests_are_refused(void **state)
{
    static const struct refusal cases[] = {
        {"  \"tests\": [{\"accept\": [\"web:80\"]}],\n", "{\"accept\"", "a test needs a src"},
        {"  \"tests\": [{\"src\": \" \", \"accept\": [\"web:80\"]}],\n", "\" \"",
         "a test needs a non-empty src"},
        {"  \"tests\": [{\"src\": \"odin@example.com\"}],\n", "{\"src\"",
         "at least one of \"accept\" or \"deny\""},
        {"  \"tests\": [{\"src\": \"odin@example.com\", \"deny\": [\"web:*\"]}],\n", "\"web:*\"",
         "the port must be a single port"},
        {"  \"tests\": [{\"src\": \"odin@example.com\", \"accept\": [\"lan:22\"]}],\n",
         "\"lan:22\"", "must be a single host, not a CIDR range"},
        {"  \"tests\": [{\"src\": \"odin@example.com\", \"accept\": [\"100.64.0.1/32:22\"]}],\n",
         "\"100.64.0.1/32:22\"", "must be a single host"},
        {"  \"tests\": [{\"src\": \"odin@example.com\", \"proto\": \"icmp\", "
         "\"accept\": [\"web:1\"]}],\n",
         "\"icmp\"", "test protocol must be tcp, udp, sctp, or empty"},
        {"  \"tests\": [{\"src\": \"*\", \"accept\": [\"web:1\"]}],\n", "\"*\"",
         "\"*\" cannot be used as a test source"},
        {"  \"tests\": [{\"src\": \"autogroup:bogus\", \"accept\": [\"web:1\"]}],\n",
         "\"autogroup:bogus\"", "unknown autogroup"},
        {"  \"sshTests\": [{\"src\": \"odin@example.com\", \"dst\": [], \"accept\": "
         "[\"root\"]}],\n",
         "{\"src\"", "at least one dst"},
        {"  \"sshTests\": [{\"src\": \"odin@example.com\", \"dst\": [\"lan\"]}],\n", "\"lan\"]",
         "SSH tests dst contains disallowed element \"lan\""},
        {"  \"sshTests\": [{\"src\": \"odin@example.com\", \"dst\": [\"tag:server:22\"]}],\n",
         "\"tag:server:22\"", "tag not found: \"tag:server:22\""},
        {"  \"sshTests\": [{\"src\": \"odin@example.com\", \"dst\": [\"autogroup:internet\"]}],\n",
         "\"autogroup:internet\"", "autogroup:internet can only be used"},
    };

    (void)state;
    assert_refusals(cases, sizeof cases / sizeof cases[0]);
}

/* What Tailscale accepts, unusual as it looks. */
static void test_unusual_but_valid_policies_are_accepted(void **state)
{
    struct policy *p;

    (void)state;
    /* A tag may own itself, and tags may own each other in a cycle. */
    p = parse_ok("{\"tagOwners\": {\"tag:a\": [\"tag:a\"], \"tag:b\": [\"tag:c\"],"
                 " \"tag:c\": [\"tag:b\"]}}");
    assert_int_equal(p->tag_owners[0].owners[0].index, 0);
    assert_int_equal(p->tag_owners[1].owners[0].index, 2);
    policy_free(p);
    /* Empty sources and destinations, missing SSH src and dst, null checkPeriod. */
    p = parse_ok(
        "{\"grants\": [{\"src\": [], \"dst\": [], \"ip\": [\"*\"]}],"
        " \"ssh\": [{\"action\": \"check\", \"checkPeriod\": null, \"users\": [\"root\"]}],"
        " \"nodeAttrs\": [{\"target\": []}]}");
    assert_int_equal(p->grants[0].n_src, 0);
    assert_int_equal(p->ssh[0].n_src, 0);
    assert_int_equal(p->ssh[0].check_period_s, 0);
    policy_free(p);
    /* Malformed localpart: users are literal login names. */
    p = parse_ok("{\"ssh\": [{\"action\": \"accept\", \"src\": [\"autogroup:member\"],"
                 " \"dst\": [\"autogroup:self\"], \"users\": [\"localpart:foo\", \" root \"]}]}");
    assert_string_equal(p->ssh[0].users[1], " root ");
    policy_free(p);
    /* A user may SSH to their own devices by name; tags reach tags. */
    p = parse_ok("{\"tagOwners\": {\"tag:a\": []}, \"ssh\": ["
                 "{\"action\": \"accept\", \"src\": [\"odin@\"], \"dst\": [\"odin@\"],"
                 " \"users\": [\"root\"]},"
                 "{\"action\": \"accept\", \"src\": [\"tag:a\"], \"dst\": [\"tag:a\"],"
                 " \"users\": [\"root\"]}]}");
    assert_int_equal(p->n_ssh, 2);
    policy_free(p);
    /* Allowlisted tailscale.com capabilities; a bracketed IPv6 prefix. */
    p = parse_ok("{\"grants\": [{\"src\": [\"*\"], \"dst\": [\"*\"],"
                 " \"app\": {\"tailscale.com/cap/relay\": []}}],"
                 " \"acls\": [{\"action\": \"accept\", \"src\": [\"*\"],"
                 " \"dst\": [\"[fd7a::]/64:22\"]}]}");
    assert_prefix(&p->acls[0].dst[0].alias.prefix, "fd7a::/64");
    policy_free(p);
}

/* ---- hostile documents ---- */

/* A buffer of n copies of unit between head and tail. */
static char *repeat(const char *head, const char *unit, size_t n, const char *tail, size_t *len)
{
    size_t hl = strlen(head);
    size_t ul = strlen(unit);
    size_t tl = strlen(tail);
    char *buf = malloc(hl + ul * n + tl + 1);
    char *w = buf;

    assert_non_null(buf);
    memcpy(w, head, hl);
    w += hl;
    for (size_t i = 0; i < n; i++, w += ul)
        memcpy(w, unit, ul);
    memcpy(w, tail, tl + 1);
    *len = hl + ul * n + tl;
    return buf;
}

static void test_hostile_documents_are_refused(void **state)
{
    size_t len;
    char *text;

    (void)state;
    text = repeat("", "[", 100000, "", &len);
    assert_refused_n(text, len, 1, HUJSON_MAX_DEPTH + 1, "nesting deeper than 64 levels");
    free(text);

    text = repeat("{\"hosts\": {\"h\": \"10.0.0.1\"}, \"acls\": [{\"action\": \"accept\", "
                  "\"src\": [\"*\"], \"dst\": [\"h:1",
                  ",1", 1000000, "\"]}]}", &len);
    assert_refused_n(text, len, 1, 82, "more than 4096 port ranges");
    free(text);

    text = repeat("{\"groups\": {\"group:a\": [\"", "a", 5u << 20, "@\"]}}", &len);
    assert_refused_n(text, len, 0, 0, "larger than");
    free(text);

    text = repeat("[", "0,", 300000, "0]", &len);
    assert_refused_n(text, len, 1, 2 * HUJSON_MAX_VALUES, "more than 262144 values");
    free(text);

    text = repeat("{\"acls\": [], ", "\"k\": 0, ", 100000, "\"k\": 1}", &len);
    assert_refused_n(text, len, 1, 22, "duplicate key \"k\"");
    free(text);

    assert_refused("{\"groups\": {\"group:a\": [\"group:b\"], \"group:b\": [\"group:a\"]}}",
                   "\"group:b\"]", "group members cannot be recursive");
    assert_refused("{\"groups\": {\"group:a\": [\"odin@\", \"group:a\"]}}", "\"group:a\"]",
                   "group members cannot be recursive");
}

/* A huge but legal string is just a string. */
static void test_large_strings_are_kept(void **state)
{
    size_t len;
    char *text = repeat("{\"groups\": {\"group:a\": [\"", "a", 1u << 20, "@\"]}}", &len);
    struct policy_error err;
    struct policy *p;

    (void)state;
    assert_int_equal(policy_parse(text, len, &p, &err), 0);
    assert_int_equal(strlen(p->groups[0].members[0]), (1u << 20) + 1);
    policy_free(p);
    free(text);
}

/* ---- prefixes and the small API ---- */

static void test_prefixes_round_trip(void **state)
{
    static const struct {
        const char *text;
        const char *canonical; /* NULL: refused */
    } cases[] = {
        {"100.64.0.1", "100.64.0.1/32"},
        {"100.64.0.1/32", "100.64.0.1/32"},
        {"10.0.0.0/8", "10.0.0.0/8"},
        {"0.0.0.0/0", "0.0.0.0/0"},
        {"::/0", "::/0"},
        {"fd7a:115c:a1e0::/48", "fd7a:115c:a1e0::/48"},
        {"FD7A:115C:A1E0:0:0:0:0:1", "fd7a:115c:a1e0::1/128"},
        {"::ffff:1.2.3.4", "::ffff:1.2.3.4/128"},
        {"10.0.0.1/8", NULL},
        {"fd7a::1/64", NULL},
        {"10.0.0.0/33", NULL},
        {"::/129", NULL},
        {"10.0.0.0/08", NULL},
        {"10.0.0.0/", NULL},
        {"/8", NULL},
        {"", NULL},
        {"10.0.0", NULL},
        {"10.0.0.256", NULL},
        {"010.0.0.0/8", NULL},
        {"fe80::1%eth0", NULL},
        {"10.0.0.0/-1", NULL},
        {" 10.0.0.0/8", NULL},
        {"host", NULL},
    };

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct policy_prefix p;
        struct policy_prefix again;
        char buf[64];
        int rv = policy_prefix_parse(cases[i].text, &p);

        if (cases[i].canonical == NULL) {
            if (rv != POLICY_EINVAL)
                fail_msg("accepted \"%s\"", cases[i].text);
            continue;
        }
        if (rv != 0)
            fail_msg("refused \"%s\"", cases[i].text);
        policy_prefix_format(&p, buf, sizeof buf);
        assert_string_equal(buf, cases[i].canonical);
        assert_int_equal(policy_prefix_parse(buf, &again), 0);
        assert_memory_equal(&p, &again, sizeof p);
    }
}

static void test_refusal_without_an_error_struct(void **state)
{
    struct policy *p = NULL;

    (void)state;
    assert_int_equal(policy_parse("{\"acls\": 1}", 12, &p, NULL), POLICY_EINVAL);
    assert_null(p);
    assert_int_equal(policy_parse(NULL, 0, &p, NULL), POLICY_EINVAL);
    assert_refused("{\"grants\": [{\"src\": [\"*\"], \"dst\": [\"*\"],\n"
                   "  \"app\": {\"example.com/cap/x\": [1e400]}}]}",
                   "1e400", "number 1e400 is out of range");
}

static void test_strerror_names_every_code(void **state)
{
    (void)state;
    assert_string_equal(policy_strerror(0), "success");
    assert_string_equal(policy_strerror(POLICY_ENOMEM), "out of memory");
    assert_string_equal(policy_strerror(POLICY_EINVAL), "invalid policy");
    assert_string_equal(policy_strerror(POLICY_ETEST), "a policy test failed");
    assert_string_equal(policy_strerror(POLICY_ENOTFOUND), "no such node");
    assert_string_equal(policy_strerror(-99), "unknown error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hujson_reads_comments_and_trailing_commas),
        cmocka_unit_test(test_hujson_decodes_escapes),
        cmocka_unit_test(test_hujson_refuses_malformed_text),
        cmocka_unit_test(test_every_section_is_parsed),
        cmocka_unit_test(test_empty_and_null_sections),
        cmocka_unit_test(test_keys_ignore_case),
        cmocka_unit_test(test_unknown_keys_and_types_are_refused),
        cmocka_unit_test(test_undefined_names_are_refused),
        cmocka_unit_test(test_bad_ports_protocols_and_prefixes_are_refused),
        cmocka_unit_test(test_bad_hosts_are_refused),
        cmocka_unit_test(test_bad_groups_and_tags_are_refused),
        cmocka_unit_test(test_misplaced_autogroups_are_refused),
        cmocka_unit_test(test_bad_ssh_rules_are_refused),
        cmocka_unit_test(test_bad_tests_are_refused),
        cmocka_unit_test(test_unusual_but_valid_policies_are_accepted),
        cmocka_unit_test(test_hostile_documents_are_refused),
        cmocka_unit_test(test_large_strings_are_kept),
        cmocka_unit_test(test_prefixes_round_trip),
        cmocka_unit_test(test_refusal_without_an_error_struct),
        cmocka_unit_test(test_strerror_names_every_code),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
