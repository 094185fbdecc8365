/* tests/unit/policy/test_engine.c: packet filters, visibility, routes and
 * the policy check, on a small tailnet: two users with a laptop each (odin
 * has two), a tagged server, a subnet router pair for 10.33.0.0/16 and an
 * exit node. Also that a change recomputes only what it touches. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "server/policy/policy.h"

enum {
    ODIN1 = 1, /* odin@example.com */
    ODIN2,     /* odin@example.com */
    THOR,      /* thor@example.org */
    SERVER,    /* tag:server */
    ROUTER_A,  /* tag:router, 10.33.0.0/16 */
    ROUTER_B,  /* tag:router, 10.33.0.0/16 */
    EXIT,      /* tag:exit, 0.0.0.0/0 and ::/0 */
    N_NODES = EXIT,
};

#define TAG_OWNERS                                                                                 \
    "\"tagOwners\": {\"tag:server\": [\"odin@example.com\"], \"tag:router\": "                     \
    "[\"odin@example.com\"], \"tag:exit\": [\"odin@example.com\"]},"

#define ALL_PORTS "{\"First\":0,\"Last\":65535}"

struct fixture {
    struct policy_engine *e;
    struct policy *p;
    uint64_t online_since; /* what node_put gives nodes it puts online */
    struct policy_prefix subnet;
    struct policy_prefix exit[2];
};

static const char *const server_tags[] = {"tag:server"};
static const char *const router_tags[] = {"tag:router"};
static const char *const exit_tags[] = {"tag:exit"};

static void node_put(struct fixture *f, uint64_t id, bool online)
{
    struct policy_node n = {
        .id = id,
        .hostname = "node",
        .has_ipv4 = true,
        .has_ipv6 = true,
        .ipv4 = {100, 64, 0, (uint8_t)id},
        .ipv6 = {0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0, [15] = (uint8_t)id},
        .online = online,
        .online_since = online ? f->online_since : 0,
    };

    switch (id) {
    case ODIN1:
    case ODIN2:
        n.user_id = 1;
        break;
    case THOR:
        n.user_id = 2;
        break;
    case SERVER:
        n.tags = server_tags;
        n.n_tags = 1;
        break;
    case ROUTER_A:
    case ROUTER_B:
        n.tags = router_tags;
        n.n_tags = 1;
        n.advertised_routes = n.approved_routes = &f->subnet;
        n.n_advertised_routes = n.n_approved_routes = 1;
        break;
    case EXIT:
        n.tags = exit_tags;
        n.n_tags = 1;
        n.advertised_routes = n.approved_routes = f->exit;
        n.n_advertised_routes = n.n_approved_routes = 2;
        break;
    }
    assert_int_equal(policy_engine_node_put(f->e, &n), 0);
}

static int setup(void **state)
{
    static const struct policy_user users[] = {
        {1, "odin", "odin@example.com"},
        {2, "thor", "thor@example.org"},
    };
    struct fixture *f = calloc(1, sizeof *f);

    assert_non_null(f);
    f->online_since = 1000;
    assert_int_equal(policy_prefix_parse("10.33.0.0/16", &f->subnet), 0);
    assert_int_equal(policy_prefix_parse("0.0.0.0/0", &f->exit[0]), 0);
    assert_int_equal(policy_prefix_parse("::/0", &f->exit[1]), 0);
    f->e = policy_engine_new(NULL);
    assert_non_null(f->e);
    for (size_t i = 0; i < 2; i++)
        assert_int_equal(policy_engine_user_put(f->e, &users[i]), 0);
    for (uint64_t id = 1; id <= N_NODES; id++)
        node_put(f, id, true);
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

static void use_policy(struct fixture *f, const char *body)
{
    struct policy_error err = {0};
    struct policy *old = f->p;
    char *text = NULL;

    assert_true(asprintf(&text, "{" TAG_OWNERS "%s}", body) > 0);
    if (policy_parse(text, strlen(text), &f->p, &err) != 0)
        fail_msg("policy refused at %u:%u: %s\n%s", err.line, err.col, err.message, text);
    free(text);
    policy_engine_set_policy(f->e, f->p);
    policy_free(old);
}

static void assert_json(json_t *got, const char *want_text)
{
    json_error_t jerr;
    json_t *want = json_loads(want_text, 0, &jerr);

    if (want == NULL)
        fail_msg("bad expectation: %s: %s", jerr.text, want_text);
    if (got == NULL || !json_equal(got, want)) {
        char *g = got == NULL ? strdup("NULL") : json_dumps(got, JSON_SORT_KEYS);
        char *w = json_dumps(want, JSON_SORT_KEYS);

        fail_msg("\n got: %s\nwant: %s", g, w);
    }
    json_decref(want);
    json_decref(got);
}

static void assert_filter(struct fixture *f, uint64_t node, const char *want)
{
    assert_json(policy_engine_filter(f->e, node), want);
}

/* Which of the nodes `viewer` sees, as a bit mask by id. */
static unsigned visible_mask(struct fixture *f, uint64_t viewer)
{
    unsigned mask = 0;

    for (uint64_t id = 1; id <= N_NODES; id++)
        if (policy_engine_visible(f->e, viewer, id))
            mask |= 1u << id;
    return mask;
}

#define BIT(id) (1u << (id))

static void default_policy_allows_everything(void **state)
{
    struct fixture *f = *state;

    assert_filter(f, THOR,
                  "[{\"SrcIPs\":[\"*\"],\"DstPorts\":[{\"IP\":\"*\",\"Ports\":" ALL_PORTS "}]}]");
    assert_int_equal(visible_mask(f, THOR), BIT(ODIN1) | BIT(ODIN2) | BIT(SERVER) | BIT(ROUTER_A) |
                                                BIT(ROUTER_B) | BIT(EXIT));
    assert_json(policy_engine_ssh(f->e, THOR), "{\"rules\":[]}");
}

static void tag_destination_names_only_the_node_itself(void **state)
{
    struct fixture *f = *state;

    use_policy(f, "\"acls\": [{\"action\": \"accept\", \"src\": [\"thor@example.org\"], "
                  "\"dst\": [\"tag:server:22,80\"], \"proto\": \"tcp\"}]");
    assert_filter(f, SERVER,
                  "[{\"SrcIPs\":[\"100.64.0.3\",\"fd7a:115c:a1e0::3\"],\"IPProto\":[6],"
                  "\"DstPorts\":["
                  "{\"IP\":\"100.64.0.4\",\"Ports\":{\"First\":22,\"Last\":22}},"
                  "{\"IP\":\"100.64.0.4\",\"Ports\":{\"First\":80,\"Last\":80}},"
                  "{\"IP\":\"fd7a:115c:a1e0::4\",\"Ports\":{\"First\":22,\"Last\":22}},"
                  "{\"IP\":\"fd7a:115c:a1e0::4\",\"Ports\":{\"First\":80,\"Last\":80}}]}]");
    assert_filter(f, THOR, "[]");
    assert_filter(f, ODIN1, "[]");
    /* Each side sees the other; nobody else is seen. */
    assert_int_equal(visible_mask(f, THOR), BIT(SERVER));
    assert_int_equal(visible_mask(f, SERVER), BIT(THOR));
    assert_int_equal(visible_mask(f, ODIN1), 0);
}

static void wildcard_source_is_the_tailnet_and_its_routes(void **state)
{
    struct fixture *f = *state;

    use_policy(f, "\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}]");
    assert_filter(f, ODIN1,
                  "[{\"SrcIPs\":[\"100.64.0.0-100.115.91.255\",\"100.115.94.0-100.127.255.255\","
                  "\"fd7a:115c:a1e0::/48\",\"10.33.0.0/16\"],"
                  "\"DstPorts\":[{\"IP\":\"*\",\"Ports\":" ALL_PORTS "}]}]");
}

static void subnet_destination_reaches_the_routers(void **state)
{
    struct fixture *f = *state;

    use_policy(f, "\"acls\": [{\"action\": \"accept\", \"src\": [\"autogroup:member\"], "
                  "\"dst\": [\"10.33.1.0/24:443\"]}]");
    assert_filter(
        f, ROUTER_A,
        "[{\"SrcIPs\":[\"100.64.0.1\",\"fd7a:115c:a1e0::1\",\"100.64.0.2\","
        "\"fd7a:115c:a1e0::2\",\"100.64.0.3\",\"fd7a:115c:a1e0::3\"],"
        "\"DstPorts\":[{\"IP\":\"10.33.1.0/24\",\"Ports\":{\"First\":443,\"Last\":443}}]}]");
    assert_filter(f, SERVER, "[]");
    assert_int_equal(visible_mask(f, THOR), BIT(ROUTER_A) | BIT(ROUTER_B));
}

static void internet_reaches_exit_nodes(void **state)
{
    struct fixture *f = *state;
    json_t *filter;

    use_policy(f, "\"acls\": [{\"action\": \"accept\", \"src\": [\"thor@example.org\"], "
                  "\"dst\": [\"autogroup:internet:*\"]}]");
    filter = policy_engine_filter(f->e, EXIT);
    assert_int_equal(json_array_size(filter), 1);
    assert_int_equal(json_array_size(json_object_get(json_array_get(filter, 0), "DstPorts")), 7);
    json_decref(filter);
    assert_filter(f, ROUTER_A, "[]");
    assert_int_equal(visible_mask(f, THOR), BIT(EXIT));
}

static void self_pairs_each_users_own_devices(void **state)
{
    struct fixture *f = *state;

    use_policy(f, "\"acls\": [{\"action\": \"accept\", \"src\": [\"autogroup:member\"], "
                  "\"dst\": [\"autogroup:self:*\"]}]");
    assert_filter(f, ODIN2,
                  "[{\"SrcIPs\":[\"100.64.0.1\",\"fd7a:115c:a1e0::1\",\"100.64.0.2\","
                  "\"fd7a:115c:a1e0::2\"],\"DstPorts\":["
                  "{\"IP\":\"100.64.0.2\",\"Ports\":" ALL_PORTS "},"
                  "{\"IP\":\"fd7a:115c:a1e0::2\",\"Ports\":" ALL_PORTS "}]}]");
    assert_filter(f, THOR,
                  "[{\"SrcIPs\":[\"100.64.0.3\",\"fd7a:115c:a1e0::3\"],\"DstPorts\":["
                  "{\"IP\":\"100.64.0.3\",\"Ports\":" ALL_PORTS "},"
                  "{\"IP\":\"fd7a:115c:a1e0::3\",\"Ports\":" ALL_PORTS "}]}]");
    assert_filter(f, SERVER, "[]");
    assert_int_equal(visible_mask(f, ODIN1), BIT(ODIN2));
    assert_int_equal(visible_mask(f, THOR), 0);
}

static void app_grant_becomes_a_capability_rule(void **state)
{
    struct fixture *f = *state;

    use_policy(f,
               "\"grants\": [{\"src\": [\"thor@example.org\"], \"dst\": [\"tag:server\"], "
               "\"ip\": [\"tcp:443\"], \"app\": {\"example.com/cap/web\": [{\"admin\": true}]}}]");
    assert_filter(f, SERVER,
                  "[{\"SrcIPs\":[\"100.64.0.3\",\"fd7a:115c:a1e0::3\"],\"IPProto\":[6],"
                  "\"DstPorts\":["
                  "{\"IP\":\"100.64.0.4\",\"Ports\":{\"First\":443,\"Last\":443}},"
                  "{\"IP\":\"fd7a:115c:a1e0::4\",\"Ports\":{\"First\":443,\"Last\":443}}]},"
                  "{\"SrcIPs\":[\"100.64.0.3\",\"fd7a:115c:a1e0::3\"],\"CapGrant\":["
                  "{\"Dsts\":[\"100.64.0.4/32\",\"fd7a:115c:a1e0::4/128\"],"
                  "\"CapMap\":{\"example.com/cap/web\":[{\"admin\":true}]}}]}]");
}

static void primary_routes_follow_the_election(void **state)
{
    struct fixture *f = *state;

    assert_json(policy_engine_primary_routes(f->e, ROUTER_A, ROUTER_A), "[\"10.33.0.0/16\"]");
    assert_json(policy_engine_primary_routes(f->e, ROUTER_B, ROUTER_B), "[]");
    assert_json(policy_engine_allowed_ips(f->e, ROUTER_B, ROUTER_B),
                "[\"100.64.0.6/32\",\"fd7a:115c:a1e0::6/128\"]");
    assert_json(policy_engine_allowed_ips(f->e, EXIT, EXIT),
                "[\"100.64.0.7/32\",\"fd7a:115c:a1e0::7/128\",\"0.0.0.0/0\",\"::/0\"]");
    assert_json(policy_engine_primary_routes(f->e, EXIT, EXIT), "[]");

    /* A goes offline: B takes over, and keeps the route when A returns
     * (A has been online for less time than B now). */
    node_put(f, ROUTER_A, false);
    assert_json(policy_engine_primary_routes(f->e, ROUTER_B, ROUTER_B), "[\"10.33.0.0/16\"]");
    assert_json(policy_engine_allowed_ips(f->e, ROUTER_A, ROUTER_A),
                "[\"100.64.0.5/32\",\"fd7a:115c:a1e0::5/128\"]");
    f->online_since = 2000;
    node_put(f, ROUTER_A, true);
    assert_json(policy_engine_primary_routes(f->e, ROUTER_B, ROUTER_B), "[\"10.33.0.0/16\"]");
    assert_json(policy_engine_primary_routes(f->e, ROUTER_A, ROUTER_A), "[]");
}

/* The router online the longest wins, the lowest id among equals; nobody
 * when none is online. */
static void election_prefers_the_longest_online(void **state)
{
    struct policy_prefix p;
    struct policy_router routers[2] = {{5, true, 100, &p, 1}, {9, true, 50, &p, 1}};
    struct policy_primary *out = NULL;

    (void)state;
    assert_int_equal(policy_prefix_parse("192.168.1.0/24", &p), 0);
    assert_int_equal(policy_elect_primaries(routers, 2, &out), 1);
    assert_int_equal(out[0].node_id, 9);
    free(out);
    routers[1].online_since = 100;
    assert_int_equal(policy_elect_primaries(routers, 2, &out), 1);
    assert_int_equal(out[0].node_id, 5);
    free(out);
    routers[0].online = false;
    assert_int_equal(policy_elect_primaries(routers, 2, &out), 1);
    assert_int_equal(out[0].node_id, 9);
    free(out);
    routers[1].online = false;
    assert_int_equal(policy_elect_primaries(routers, 2, &out), 1);
    assert_int_equal(out[0].node_id, 0);
    free(out);
}

/* A change recomputes what it touches: an unrelated node's cached filter is
 * the very same object afterwards. */
static void a_change_recomputes_only_what_it_touches(void **state)
{
    struct fixture *f = *state;
    json_t *thor_before;
    json_t *server_before;
    json_t *thor_after;
    json_t *server_after;

    use_policy(
        f,
        "\"acls\": [{\"action\": \"accept\", \"src\": [\"odin@example.com\"], "
        "\"dst\": [\"tag:server:22\"]},"
        "{\"action\": \"accept\", \"src\": [\"tag:server\"], \"dst\": [\"thor@example.org:80\"]}]");
    thor_before = policy_engine_filter(f->e, THOR);
    server_before = policy_engine_filter(f->e, SERVER);
    /* odin's second laptop goes offline and back: its addresses are what
     * they were, so nothing else changes. */
    node_put(f, ODIN2, false);
    thor_after = policy_engine_filter(f->e, THOR);
    server_after = policy_engine_filter(f->e, SERVER);
    assert_ptr_equal(thor_before, thor_after);
    assert_ptr_equal(server_before, server_after);
    json_decref(thor_after);
    json_decref(server_after);
    /* The laptop leaves: the server's filter (odin is its source) is
     * recomputed, thor's (the server is its source) is not. */
    policy_engine_node_remove(f->e, ODIN2);
    thor_after = policy_engine_filter(f->e, THOR);
    server_after = policy_engine_filter(f->e, SERVER);
    assert_ptr_equal(thor_before, thor_after);
    assert_ptr_not_equal(server_before, server_after);
    assert_int_equal(json_array_size(json_object_get(json_array_get(server_after, 0), "SrcIPs")),
                     2);
    json_decref(thor_before);
    json_decref(server_before);
    json_decref(thor_after);
    json_decref(server_after);
}

/* The state of a random tailnet for the incremental test. */
struct sim_node {
    bool present;
    uint64_t user;
    int tag; /* -1: user-owned */
    uint8_t host;
    bool routes;
    bool online;
    uint64_t since; /* online since */
};

static const char *const sim_tags[][1] = {{"tag:server"}, {"tag:router"}, {"tag:exit"}};

static void sim_put(struct policy_engine *e, uint64_t id, const struct sim_node *s,
                    const struct policy_prefix *subnet)
{
    struct policy_node n = {
        .id = id,
        .hostname = "sim",
        .user_id = s->tag < 0 ? s->user : 0,
        .tags = s->tag < 0 ? NULL : sim_tags[s->tag],
        .n_tags = s->tag < 0 ? 0 : 1,
        .has_ipv4 = true,
        .ipv4 = {100, 64, 1, s->host},
        .online = s->online,
        .online_since = s->online ? s->since : 0,
    };

    if (s->routes) {
        n.advertised_routes = n.approved_routes = subnet;
        n.n_advertised_routes = n.n_approved_routes = 1;
    }
    assert_int_equal(policy_engine_node_put(e, &n), 0);
}

/* Every answer of a and b agrees for the present nodes. */
static void assert_engines_agree(struct policy_engine *a, struct policy_engine *b,
                                 const struct sim_node *nodes, size_t n)
{
    for (uint64_t v = 1; v <= n; v++) {
        if (!nodes[v - 1].present)
            continue;
        json_t *fa = policy_engine_filter(a, v);
        json_t *fb = policy_engine_filter(b, v);
        json_t *sa = policy_engine_ssh(a, v);
        json_t *sb = policy_engine_ssh(b, v);

        assert_true(json_equal(fa, fb));
        assert_true(json_equal(sa, sb));
        json_decref(fa);
        json_decref(fb);
        json_decref(sa);
        json_decref(sb);
        for (uint64_t p = 1; p <= n; p++) {
            if (!nodes[p - 1].present)
                continue;
            json_t *ra = policy_engine_allowed_ips(a, v, p);
            json_t *rb = policy_engine_allowed_ips(b, v, p);

            assert_int_equal(policy_engine_visible(a, v, p), policy_engine_visible(b, v, p));
            assert_true(json_equal(ra, rb));
            json_decref(ra);
            json_decref(rb);
        }
    }
}

/* Random changes to one engine give the answers an engine built from
 * scratch gives: incremental recomputation never serves a stale answer. */
static void incremental_answers_match_a_fresh_engine(void **state)
{
    enum { N = 24, STEPS = 150 };
    static const struct policy_user users[] = {
        {1, "odin", "odin@example.com"}, {2, "thor", "thor@example.org"}, {3, "freya", NULL}};
    struct fixture *f = *state;
    struct sim_node nodes[N] = {{0}};
    uint32_t seed = 12345;

    use_policy(f,
               "\"groups\": {\"group:ops\": [\"odin@example.com\", \"freya@\"]},"
               "\"acls\": ["
               "{\"action\": \"accept\", \"src\": [\"group:ops\"], \"dst\": [\"tag:server:22\"]},"
               "{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"tag:router:80\"]},"
               "{\"action\": \"accept\", \"src\": [\"autogroup:member\"], "
               "\"dst\": [\"autogroup:self:*\", \"10.33.0.0/16:443\"]},"
               "{\"action\": \"accept\", \"src\": [\"tag:server\", \"100.64.1.0/28\"], "
               "\"dst\": [\"thor@example.org:*\", \"autogroup:internet:*\"]}],"
               "\"ssh\": [{\"action\": \"accept\", \"src\": [\"autogroup:member\"], "
               "\"dst\": [\"autogroup:self\"], \"users\": [\"autogroup:nonroot\"]}]");
    for (uint64_t id = 1; id <= N_NODES; id++)
        policy_engine_node_remove(f->e, id);
    assert_int_equal(policy_engine_user_put(f->e, &users[2]), 0);
    for (int step = 0; step < STEPS; step++) {
        struct policy_engine *fresh;
        size_t i;

        seed = seed * 1103515245u + 12345u;
        i = (seed >> 8) % N;
        if (nodes[i].present && (seed >> 20) % 4 == 0) {
            nodes[i].present = false;
            policy_engine_node_remove(f->e, i + 1);
        } else {
            nodes[i] = (struct sim_node){
                .present = true,
                .user = 1 + (seed >> 4) % 3,
                .tag = (int)((seed >> 12) % 5) - 2,
                .host = (uint8_t)(1 + (seed >> 16) % 40),
                .routes = (seed >> 24) % 3 == 0,
                .online = (seed >> 26) % 4 != 0,
                .since = (seed >> 28) % 3,
            };
            if (nodes[i].tag < 0)
                nodes[i].tag = -1;
            sim_put(f->e, i + 1, &nodes[i], nodes[i].tag == 2 ? f->exit : &f->subnet);
        }
        fresh = policy_engine_new(f->p);
        assert_non_null(fresh);
        for (size_t u = 0; u < 3; u++)
            assert_int_equal(policy_engine_user_put(fresh, &users[u]), 0);
        for (size_t k = 0; k < N; k++)
            if (nodes[k].present)
                sim_put(fresh, k + 1, &nodes[k], nodes[k].tag == 2 ? f->exit : &f->subnet);
        assert_engines_agree(f->e, fresh, nodes, N);
        policy_engine_free(fresh);
    }
}

static void check_runs_the_tests(void **state)
{
    struct fixture *f = *state;
    struct policy *p = NULL;
    struct policy_error err = {0};
    const char *pass =
        "{" TAG_OWNERS "\"acls\": [{\"action\": \"accept\", \"src\": [\"thor@example.org\"], "
        "\"dst\": [\"tag:server:22\"]}],"
        "\"tests\": [{\"src\": \"thor@example.org\", \"accept\": [\"tag:server:22\"], "
        "\"deny\": [\"tag:server:80\"]}]}";
    const char *fail =
        "{" TAG_OWNERS "\"acls\": [{\"action\": \"accept\", \"src\": [\"thor@example.org\"], "
        "\"dst\": [\"tag:server:22\"]}],"
        "\"tests\": [{\"src\": \"odin@example.com\", \"accept\": [\"tag:server:22\"]}]}";

    assert_int_equal(policy_parse(pass, strlen(pass), &p, &err), 0);
    assert_int_equal(policy_engine_check(f->e, p, &err), 0);
    policy_free(p);
    assert_int_equal(policy_parse(fail, strlen(fail), &p, &err), 0);
    assert_int_equal(policy_engine_check(f->e, p, &err), POLICY_ETEST);
    assert_non_null(strstr(err.message, "odin@example.com"));
    assert_true(err.line > 0);
    policy_free(p);
}

static void auto_approvers_cover_subnets_and_exits(void **state)
{
    struct fixture *f = *state;
    struct policy_prefix inside;
    struct policy_prefix outside;

    use_policy(f, "\"autoApprovers\": {\"routes\": {\"10.0.0.0/8\": [\"tag:router\"]}, "
                  "\"exitNode\": [\"tag:exit\"]}");
    assert_int_equal(policy_prefix_parse("10.33.0.0/16", &inside), 0);
    assert_int_equal(policy_prefix_parse("192.168.0.0/16", &outside), 0);
    assert_true(policy_engine_auto_approves(f->e, ROUTER_A, &inside));
    assert_false(policy_engine_auto_approves(f->e, ROUTER_A, &outside));
    assert_false(policy_engine_auto_approves(f->e, SERVER, &inside));
    assert_true(policy_engine_auto_approves(f->e, EXIT, &f->exit[0]));
    assert_false(policy_engine_auto_approves(f->e, ROUTER_A, &f->exit[0]));
}

static void unknown_nodes_have_no_answers(void **state)
{
    struct fixture *f = *state;

    assert_null(policy_engine_filter(f->e, 99));
    assert_null(policy_engine_ssh(f->e, 99));
    assert_false(policy_engine_visible(f->e, 99, THOR));
    assert_false(policy_engine_visible(f->e, THOR, THOR));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(default_policy_allows_everything, setup, teardown),
        cmocka_unit_test_setup_teardown(tag_destination_names_only_the_node_itself, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(wildcard_source_is_the_tailnet_and_its_routes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(subnet_destination_reaches_the_routers, setup, teardown),
        cmocka_unit_test_setup_teardown(internet_reaches_exit_nodes, setup, teardown),
        cmocka_unit_test_setup_teardown(self_pairs_each_users_own_devices, setup, teardown),
        cmocka_unit_test_setup_teardown(app_grant_becomes_a_capability_rule, setup, teardown),
        cmocka_unit_test_setup_teardown(primary_routes_follow_the_election, setup, teardown),
        cmocka_unit_test(election_prefers_the_longest_online),
        cmocka_unit_test_setup_teardown(a_change_recomputes_only_what_it_touches, setup, teardown),
        cmocka_unit_test_setup_teardown(incremental_answers_match_a_fresh_engine, setup, teardown),
        cmocka_unit_test_setup_teardown(check_runs_the_tests, setup, teardown),
        cmocka_unit_test_setup_teardown(auto_approvers_cover_subnets_and_exits, setup, teardown),
        cmocka_unit_test_setup_teardown(unknown_nodes_have_no_answers, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
