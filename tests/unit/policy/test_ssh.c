/* tests/unit/policy/test_ssh.c: the SSH policy each node receives (rule
 * order, principals, sshUsers with the implicit root deny, localpart rules
 * split per user, check actions), sshTests, the user-domain check and the
 * capability maps, on a small tailnet shaped like the captures': three users
 * over two domains, user-owned and tagged nodes, one of them with two tags
 * and approved exit routes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "server/policy/engine_internal.h"

#define HOLD "/machine/ssh/action/$SRC_NODE_ID/to/$DST_NODE_ID?local_user=$LOCAL_USER"
#define ACCEPT                                                                                     \
    "{\"accept\":true,\"allowAgentForwarding\":true,\"allowLocalPortForwarding\":true,"            \
    "\"allowRemotePortForwarding\":true}"
#define CHECK "{\"holdAndDelegate\":\"" HOLD "\"}"

#define TAG_OWNERS                                                                                 \
    "\"tagOwners\": {\"tag:server\": [\"odin@example.com\"], \"tag:prod\": "                       \
    "[\"odin@example.com\"], \"tag:exit\": [\"odin@example.com\"]},"

enum {
    SERVER = 1, /* tag:server */
    PROD,       /* tag:prod */
    ODIN,       /* odin@example.com */
    THOR,       /* thor@example.org */
    FREYA,      /* freya@example.com */
    MULTI,      /* tag:prod and tag:exit, approved exit routes */
};

struct fixture {
    struct policy_engine *e;
    struct policy *p;
};

static void node_add(struct policy_engine *e, uint64_t id, const char *name, uint64_t user,
                     const char *const *tags, size_t n_tags)
{
    static struct policy_prefix exit_routes[2];
    struct policy_node n = {
        .id = id,
        .hostname = name,
        .user_id = user,
        .tags = tags,
        .n_tags = n_tags,
        .has_ipv4 = true,
        .has_ipv6 = true,
        .ipv4 = {100, 64, 0, (uint8_t)id},
        .ipv6 = {0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0, [15] = (uint8_t)id},
        .online = true,
    };

    exit_routes[0] = (struct policy_prefix){.family = 4};
    exit_routes[1] = (struct policy_prefix){.family = 6};
    if (id == MULTI) {
        n.advertised_routes = exit_routes;
        n.n_advertised_routes = 2;
        n.approved_routes = exit_routes;
        n.n_approved_routes = 2;
    }
    assert_int_equal(policy_engine_node_put(e, &n), 0);
}

static int setup(void **state)
{
    static const char *const server[] = {"tag:server"};
    static const char *const prod[] = {"tag:prod"};
    static const char *const multi[] = {"tag:prod", "tag:exit"};
    static const struct policy_user users[] = {
        {1, "odin", "odin@example.com"},
        {2, "thor", "thor@example.org"},
        {3, "freya", "freya@example.com"},
    };
    struct fixture *f = calloc(1, sizeof *f);

    assert_non_null(f);
    f->e = policy_engine_new(NULL);
    assert_non_null(f->e);
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(policy_engine_user_put(f->e, &users[i]), 0);
    node_add(f->e, SERVER, "server", 0, server, 1);
    node_add(f->e, PROD, "prod", 0, prod, 1);
    node_add(f->e, ODIN, "odin-laptop", 1, NULL, 0);
    node_add(f->e, THOR, "thor-laptop", 2, NULL, 0);
    node_add(f->e, FREYA, "freya-laptop", 3, NULL, 0);
    node_add(f->e, MULTI, "multi", 0, multi, 2);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    policy_engine_free(f->e);
    policy_free(f->p);
    free(f);
    return 0;
}

/* Parses text (a policy body without braces) and makes it the engine's. */
static void use_policy(struct fixture *f, const char *body)
{
    struct policy_error err = {0};
    char *text = NULL;

    assert_true(asprintf(&text, "{" TAG_OWNERS "%s}", body) > 0);
    policy_free(f->p);
    f->p = NULL;
    if (policy_parse(text, strlen(text), &f->p, &err) != 0)
        fail_msg("policy refused at %u:%u: %s\n%s", err.line, err.col, err.message, text);
    free(text);
    policy_engine_set_policy(f->e, f->p);
}

static void assert_json(json_t *got, const char *want_text)
{
    json_error_t jerr;
    json_t *want = json_loads(want_text, 0, &jerr);
    char *g;
    char *w;

    if (want == NULL)
        fail_msg("bad expectation: %s: %s", jerr.text, want_text);
    if (got == NULL || !json_equal(got, want)) {
        g = got == NULL ? strdup("NULL") : json_dumps(got, JSON_SORT_KEYS);
        w = json_dumps(want, JSON_SORT_KEYS);
        fail_msg("\n got: %s\nwant: %s", g, w);
    }
    json_decref(want);
}

static void assert_ssh(struct fixture *f, uint64_t node, const char *want_rules)
{
    json_t *got = policy_ssh_compile(f->p, f->e, policy_engine_node_get(f->e, node));
    char *want = NULL;

    assert_true(asprintf(&want, "{\"rules\": [%s]}", want_rules) > 0);
    assert_json(got, want);
    json_decref(got);
    free(want);
}

#define P(id)   "{\"nodeIP\":\"100.64.0." #id "\"},{\"nodeIP\":\"fd7a:115c:a1e0::" #id "\"}"
#define MEMBERS P(3) "," P(4) "," P(5)

static void test_accept_named_user_denies_root(void **state)
{
    struct fixture *f = *state;

    use_policy(f, "\"ssh\": [{\"action\": \"accept\", \"src\": [\"autogroup:member\"], "
                  "\"dst\": [\"tag:server\"], \"users\": [\"ubuntu\"]}]");
    assert_ssh(f, SERVER,
               "{\"principals\":[" MEMBERS "],\"sshUsers\":{\"root\":\"\",\"ubuntu\":\"ubuntu\"},"
               "\"action\":" ACCEPT "}");
    assert_ssh(f, PROD, "");
    assert_ssh(f, ODIN, "");
}

static void test_nonroot_and_root(void **state)
{
    struct fixture *f = *state;

    use_policy(f, "\"ssh\": [{\"action\": \"accept\", \"src\": [\"thor@example.org\"], "
                  "\"dst\": [\"tag:server\"], \"users\": [\"autogroup:nonroot\"]},"
                  "{\"action\": \"accept\", \"src\": [\"thor@example.org\"], "
                  "\"dst\": [\"tag:server\"], \"users\": [\" root\", \"autogroup:nonroot\"]}]");
    assert_ssh(f, SERVER,
               "{\"principals\":[" P(4) "],\"sshUsers\":{\"*\":\"=\",\"root\":\"\"},"
                                        "\"action\":" ACCEPT "},"
                                        "{\"principals\":[" P(
                                            4) "],\"sshUsers\":{\"*\":\"=\",\"root\":\"root\"},"
                                               "\"action\":" ACCEPT "}");
}

static void test_check_rules_come_first(void **state)
{
    struct fixture *f = *state;

    use_policy(f, "\"ssh\": [{\"action\": \"accept\", \"src\": [\"thor@example.org\"], "
                  "\"dst\": [\"tag:server\"], \"users\": [\"root\"], \"acceptEnv\": [\"GIT_*\"]},"
                  "{\"action\": \"check\", \"checkPeriod\": \"1h\", \"src\": "
                  "[\"thor@example.org\"], \"dst\": [\"tag:server\"], \"users\": [\"root\"]}]");
    assert_ssh(f, SERVER,
               "{\"principals\":[" P(4) "],\"sshUsers\":{\"root\":\"root\"},"
                                        "\"action\":" CHECK "},"
                                        "{\"principals\":[" P(
                                            4) "],\"sshUsers\":{\"root\":\"root\"},"
                                               "\"action\":" ACCEPT ",\"acceptEnv\":[\"GIT_*\"]}");
}

static void test_autogroup_self(void **state)
{
    struct fixture *f = *state;

    use_policy(f, "\"ssh\": [{\"action\": \"accept\", \"src\": [\"autogroup:member\"], "
                  "\"dst\": [\"autogroup:self\"], \"users\": [\"root\"]}]");
    assert_ssh(f, ODIN,
               "{\"principals\":[" P(3) "],\"sshUsers\":{\"root\":\"root\"},"
                                        "\"action\":" ACCEPT "}");
    assert_ssh(f, FREYA,
               "{\"principals\":[" P(5) "],\"sshUsers\":{\"root\":\"root\"},"
                                        "\"action\":" ACCEPT "}");
    assert_ssh(f, SERVER, "");
}

/* Tagged sources are listed once per tag, as Tailscale does (ssh-b6). */
static void test_tagged_sources_once_per_tag(void **state)
{
    struct fixture *f = *state;

    use_policy(f, "\"ssh\": [{\"action\": \"accept\", \"src\": [\"autogroup:tagged\"], "
                  "\"dst\": [\"tag:server\"], \"users\": [\"root\"]}]");
    assert_ssh(f, SERVER,
               "{\"principals\":[" P(1) "," P(2) "," P(6) "," P(
                   6) "],"
                      "\"sshUsers\":{\"root\":\"root\"},\"action\":" ACCEPT "}");
}

#define RULE(principals, users)                                                                    \
    "{\"principals\":[" principals "],\"sshUsers\":" users ",\"action\":" ACCEPT "}"

/* One rule per source user, followed by the user's own local part when the
 * domain matches; sources that are not destinations get their own user's
 * pair (ssh-d2). */
static void test_localpart(void **state)
{
    struct fixture *f = *state;

    use_policy(f, "\"ssh\": [{\"action\": \"accept\", \"src\": [\"autogroup:member\"], "
                  "\"dst\": [\"tag:server\"], \"users\": [\"localpart:*@example.com\", "
                  "\"ubuntu\"]}]");
#define BASE       "{\"root\":\"\",\"ubuntu\":\"ubuntu\"}"
#define ODIN_PAIR  RULE(P(3), BASE) "," RULE(P(3), "{\"odin\":\"odin\"}")
#define FREYA_PAIR RULE(P(5), BASE) "," RULE(P(5), "{\"freya\":\"freya\"}")
    assert_ssh(f, SERVER, ODIN_PAIR "," RULE(P(4), BASE) "," FREYA_PAIR);
    assert_ssh(f, ODIN, ODIN_PAIR);
    assert_ssh(f, THOR, RULE(P(4), BASE));
    assert_ssh(f, PROD, "");
#undef BASE
#undef ODIN_PAIR
#undef FREYA_PAIR
}

/* A tagged source of a localpart rule has no local part of its own. */
static void test_localpart_tagged_source(void **state)
{
    struct fixture *f = *state;

    use_policy(f, "\"ssh\": [{\"action\": \"accept\", \"src\": [\"tag:prod\"], "
                  "\"dst\": [\"tag:server\"], \"users\": [\"localpart:*@example.com\"]}]");
    assert_ssh(f, SERVER, RULE(P(2) "," P(6) "," P(6), "{\"root\":\"\"}"));
    assert_ssh(f, PROD, RULE(P(2), "{\"root\":\"\"}"));
}

static void test_no_policy_no_rules(void **state)
{
    struct fixture *f = *state;
    json_t *got = policy_ssh_compile(NULL, f->e, policy_engine_node_get(f->e, SERVER));

    assert_json(got, "{\"rules\": []}");
    json_decref(got);
}

static int ssh_tests(struct fixture *f, const char *ssh, const char *tests,
                     struct policy_error *err)
{
    char *body = NULL;

    assert_true(asprintf(&body, "\"ssh\": [%s], \"sshTests\": [%s]", ssh, tests) > 0);
    use_policy(f, body);
    free(body);
    memset(err, 0, sizeof *err);
    return policy_ssh_tests_check(f->p, f->e, err);
}

#define THOR_ROOT                                                                                  \
    "{\"action\": \"accept\", \"src\": [\"thor@example.org\"], \"dst\": [\"tag:server\"], "        \
    "\"users\": [\"root\"]}"

static void test_ssh_tests_pass(void **state)
{
    struct fixture *f = *state;
    struct policy_error err;

    assert_int_equal(ssh_tests(f, THOR_ROOT,
                               "{\"src\": \"thor@example.org\", \"dst\": [\"tag:server\"], "
                               "\"accept\": [\"root\"], \"deny\": [\"ubuntu\"]},"
                               "{\"src\": \"odin@example.com\", \"dst\": [\"tag:server\"], "
                               "\"deny\": [\"root\"]},"
                               "{\"src\": \"thor@example.org\", \"dst\": [\"100.64.0.1\"], "
                               "\"accept\": [\"root\"]}",
                               &err),
                     0);
}

static void test_ssh_tests_fail(void **state)
{
    struct fixture *f = *state;
    struct policy_error err;

    assert_int_equal(ssh_tests(f, THOR_ROOT,
                               "{\"src\": \"thor@example.org\", \"dst\": [\"tag:server\"], "
                               "\"accept\": [\"root\"]},"
                               "{\"src\": \"thor@example.org\", \"dst\": [\"tag:server\"], "
                               "\"accept\": [\"ubuntu\"]}",
                               &err),
                     POLICY_ETEST);
    assert_non_null(strstr(err.message, "sshTests[1]"));
    assert_non_null(strstr(err.message, "thor@example.org"));
    assert_non_null(strstr(err.message, "ubuntu"));
    assert_int_equal(err.line, 0);

    /* A check test wants the check action; accept is not enough. */
    assert_int_equal(ssh_tests(f, THOR_ROOT,
                               "{\"src\": \"thor@example.org\", \"dst\": [\"tag:server\"], "
                               "\"check\": [\"root\"]}",
                               &err),
                     POLICY_ETEST);
    /* An empty login name never logs in. */
    assert_int_equal(ssh_tests(f, THOR_ROOT,
                               "{\"src\": \"thor@example.org\", \"dst\": [\"tag:server\"], "
                               "\"accept\": [\"\"]}",
                               &err),
                     POLICY_ETEST);
    /* An IPv6 destination names no node, as on Tailscale. */
    assert_int_equal(ssh_tests(f, THOR_ROOT,
                               "{\"src\": \"thor@example.org\", \"dst\": [\"fd7a:115c:a1e0::1\"], "
                               "\"accept\": [\"root\"]}",
                               &err),
                     POLICY_ETEST);
    /* Nothing asserted is a failure, not a vacuous pass. */
    assert_int_equal(
        ssh_tests(f, THOR_ROOT, "{\"src\": \"thor@example.org\", \"dst\": [\"tag:server\"]}", &err),
        POLICY_ETEST);
}

static void test_ssh_tests_check_and_nonroot(void **state)
{
    struct fixture *f = *state;
    struct policy_error err;

    assert_int_equal(ssh_tests(f,
                               "{\"action\": \"check\", \"src\": [\"thor@example.org\"], "
                               "\"dst\": [\"tag:server\"], \"users\": [\"autogroup:nonroot\"]}",
                               "{\"src\": \"thor@example.org\", \"dst\": [\"tag:server\"], "
                               "\"check\": [\"alice\"], \"accept\": [\"bob\"], "
                               "\"deny\": [\"root\"]}",
                               &err),
                     0);
    assert_int_equal(ssh_tests(f,
                               "{\"action\": \"accept\", \"src\": [\"autogroup:member\"], "
                               "\"dst\": [\"autogroup:self\"], \"users\": [\"root\"]}",
                               "{\"src\": \"thor@example.org\", \"dst\": [\"autogroup:self\"], "
                               "\"accept\": [\"root\"]},"
                               "{\"src\": \"thor@example.org\", \"dst\": [\"odin@example.com\"], "
                               "\"deny\": [\"root\"]}",
                               &err),
                     0);
}

static int users_check(struct fixture *f, const char *body, struct policy_error *err)
{
    use_policy(f, body);
    memset(err, 0, sizeof *err);
    return policy_users_check(f->p, f->e, err);
}

static void test_users_check_domains(void **state)
{
    struct fixture *f = *state;
    struct policy_error err;

    assert_int_equal(users_check(f,
                                 "\"groups\": {\"group:x\": [\"ghost@nowhere.invalid\"]},"
                                 "\"ssh\": [{\"action\": \"accept\", \"src\": "
                                 "[\"group:x\"], \"dst\": [\"tag:server\"], \"users\": "
                                 "[\"localpart:*@example.com\"]}]",
                                 &err),
                     0);
    /* thor's domain is in the tailnet only through an invited user. */
    assert_int_equal(users_check(f,
                                 "\"ssh\": [{\"action\": \"accept\", \"src\": "
                                 "[\"autogroup:member\"], \"dst\": [\"tag:server\"], \"users\": "
                                 "[\"localpart:*@example.org\"]}]",
                                 &err),
                     POLICY_EINVAL);
    assert_non_null(strstr(err.message, "example.org is not associated"));
    assert_int_equal(users_check(f,
                                 "\"ssh\": [{\"action\": \"accept\", \"src\": "
                                 "[\"autogroup:member\"], \"dst\": [\"tag:server\"], \"users\": "
                                 "[\"localpart:*@EXAMPLE.COM\"]}]",
                                 &err),
                     POLICY_EINVAL);
}

static void assert_capmap(struct fixture *f, uint64_t node, const char *extra)
{
    json_t *got = policy_capmap_compile(f->p, f->e, policy_engine_node_get(f->e, node));
    char *want = NULL;

    assert_true(asprintf(&want,
                         "{\"https://tailscale.com/cap/file-sharing\": null,"
                         "\"https://tailscale.com/cap/ssh\": null, \"ssh-behavior-v1\": null,"
                         "\"ssh-env-vars\": null %s}",
                         extra) > 0);
    assert_json(got, want);
    json_decref(got);
    free(want);
}

static void test_capmap(void **state)
{
    struct fixture *f = *state;
    json_t *peer;

    use_policy(f, "\"randomizeClientPort\": true, \"nodeAttrs\": ["
                  "{\"target\": [\"tag:server\"], \"attr\": [\"drive:share\", \"drive:access\"]},"
                  "{\"target\": [\"*\"], \"attr\": [\"drive:access\"]},"
                  "{\"target\": [\"autogroup:member\"], \"app\": {\"example.com/cap/x\": "
                  "[{\"a\": 1}]}},"
                  "{\"target\": [\"odin@example.com\"], \"app\": {\"example.com/cap/x\": "
                  "[{\"b\": 2}]}},"
                  "{\"target\": [\"tag:exit\"], \"attr\": [\"suggest-exit-node\"]}]");
    assert_capmap(f, SERVER,
                  ",\"randomize-client-port\": null, \"drive:share\": null,"
                  "\"drive:access\": null");
    assert_capmap(f, ODIN,
                  ",\"randomize-client-port\": null, \"drive:access\": null,"
                  "\"example.com/cap/x\": [{\"a\": 1}, {\"b\": 2}]");
    assert_capmap(f, MULTI,
                  ",\"randomize-client-port\": null, \"drive:access\": null,"
                  "\"suggest-exit-node\": null");

    peer = policy_peer_capmap_compile(f->p, f->e, policy_engine_node_get(f->e, MULTI));
    assert_json(peer, "{\"suggest-exit-node\": null}");
    json_decref(peer);
    assert_null(policy_peer_capmap_compile(f->p, f->e, policy_engine_node_get(f->e, SERVER)));
}

static void test_capmap_default_policy(void **state)
{
    struct fixture *f = *state;

    policy_free(f->p);
    f->p = NULL;
    assert_capmap(f, THOR, "");
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_accept_named_user_denies_root),
        T(test_nonroot_and_root),
        T(test_check_rules_come_first),
        T(test_autogroup_self),
        T(test_tagged_sources_once_per_tag),
        T(test_localpart),
        T(test_localpart_tagged_source),
        T(test_no_policy_no_rules),
        T(test_ssh_tests_pass),
        T(test_ssh_tests_fail),
        T(test_ssh_tests_check_and_nonroot),
        T(test_users_check_domains),
        T(test_capmap),
        T(test_capmap_default_policy),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
