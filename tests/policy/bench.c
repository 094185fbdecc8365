/* tests/policy/bench.c: build/policy-bench, the policy engine's benchmark
 * (ops/bench policy). A synthetic tailnet of N nodes (1,000 and 10,000): 100
 * users in 10 groups, one node in five tagged with one of 10 tags, a tenth
 * of the tagged ones routers; a policy of 100 rules mixing users, groups,
 * tags, hosts, CIDRs, autogroup:member, autogroup:self and port lists, plus
 * SSH rules. Measures:
 *   compile_ms  engine from nothing (users, nodes, policy) to every node's
 *               packet filter and SSH policy computed once;
 *   change_ms   one node changes its tags, then every node's packet filter
 *               and SSH policy is asked for again (what the mapper does after
 *               a policy-relevant change), median of several changes;
 *   query_us    a packet filter asked for again with nothing changed.
 * Ends with `policy-bench compile_ms_1k=N compile_ms_10k=N change_ms_10k=N`. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/policy/policy.h"

#define N_USERS     100
#define N_GROUPS    10
#define N_TAGS      10
#define N_RULES     100
#define N_CHANGES   9
#define POLICY_SIZE (64 * 1024)

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void die(const char *what)
{
    fprintf(stderr, "policy-bench: %s\n", what);
    exit(1);
}

static size_t append(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static size_t append(char *buf, size_t len, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf + len, POLICY_SIZE - len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= POLICY_SIZE - len)
        die("policy text too long");
    return len + (size_t)n;
}

/* 100 rules of every kind the engine compiles, and SSH rules. */
static char *policy_text(void)
{
    char *p = malloc(POLICY_SIZE);
    size_t len = 0;

    if (p == NULL)
        die("out of memory");
    len = append(p, len, "{\n\"groups\": {\n");
    for (int g = 0; g < N_GROUPS; g++) {
        len = append(p, len, "  \"group:g%d\": [", g);
        for (int u = g; u < N_USERS; u += N_GROUPS)
            len = append(p, len, "%s\"user%d@\"", u == g ? "" : ", ", u);
        len = append(p, len, "]%s\n", g + 1 < N_GROUPS ? "," : "");
    }
    len = append(p, len, "},\n\"tagOwners\": {\n");
    for (int t = 0; t < N_TAGS; t++)
        len = append(p, len, "  \"tag:t%d\": [\"group:g%d\"]%s\n", t, t, t + 1 < N_TAGS ? "," : "");
    len = append(p, len, "},\n\"hosts\": {\"lab\": \"10.1.0.0/16\", \"db\": \"100.64.0.10\"},\n");
    len = append(p, len, "\"acls\": [\n");
    for (int r = 0; r < N_RULES; r++) {
        const char *sep = r + 1 < N_RULES ? "," : "";

        switch (r % 6) {
        case 0:
            len = append(p, len,
                         "  {\"action\": \"accept\", \"src\": [\"user%d@\"], \"dst\": "
                         "[\"tag:t%d:22,80,443\"]}%s\n",
                         r % N_USERS, r % N_TAGS, sep);
            break;
        case 1:
            len = append(p, len,
                         "  {\"action\": \"accept\", \"src\": [\"group:g%d\"], \"dst\": "
                         "[\"tag:t%d:8000-8999\", \"lab:*\"]}%s\n",
                         r % N_GROUPS, (r + 3) % N_TAGS, sep);
            break;
        case 2:
            len = append(p, len,
                         "  {\"action\": \"accept\", \"src\": [\"tag:t%d\"], \"dst\": "
                         "[\"tag:t%d:5432\", \"db:5432\"]}%s\n",
                         r % N_TAGS, (r + 1) % N_TAGS, sep);
            break;
        case 3:
            len = append(p, len,
                         "  {\"action\": \"accept\", \"src\": [\"autogroup:member\"], \"dst\": "
                         "[\"autogroup:self:*\"]}%s\n",
                         sep);
            break;
        case 4:
            len = append(p, len,
                         "  {\"action\": \"accept\", \"proto\": \"udp\", \"src\": "
                         "[\"100.64.0.0/16\"], \"dst\": [\"tag:t%d:53\"]}%s\n",
                         r % N_TAGS, sep);
            break;
        default:
            len = append(p, len,
                         "  {\"action\": \"accept\", \"src\": [\"group:g%d\", \"user%d@\"], "
                         "\"dst\": [\"user%d@:3000\"]}%s\n",
                         r % N_GROUPS, (r * 7) % N_USERS, (r * 13) % N_USERS, sep);
            break;
        }
    }
    len = append(p, len, "],\n\"ssh\": [\n");
    len = append(p, len,
                 "  {\"action\": \"accept\", \"src\": [\"autogroup:member\"], \"dst\": "
                 "[\"autogroup:self\"], \"users\": [\"autogroup:nonroot\"]},\n");
    len = append(p, len,
                 "  {\"action\": \"check\", \"src\": [\"group:g0\"], \"dst\": [\"tag:t0\"], "
                 "\"users\": [\"root\", \"ubuntu\"]}\n");
    append(p, len, "]\n}\n");
    return p;
}

struct tailnet {
    char names[N_USERS][16];
    char hostnames[10000][16];
    const char *tags[N_TAGS][1];
    char tag_names[N_TAGS][16];
    struct policy_prefix route;
};

static struct tailnet net;

static void node_of(size_t i, unsigned tag_shift, struct policy_node *n)
{
    unsigned a = 1 + (unsigned)i;

    memset(n, 0, sizeof *n);
    n->id = i + 1;
    n->hostname = net.hostnames[i];
    n->user_id = 1 + i % N_USERS;
    if (i % 5 == 0) {
        n->tags = net.tags[(i / 5 + tag_shift) % N_TAGS];
        n->n_tags = 1;
        if (i % 50 == 0) {
            n->advertised_routes = &net.route;
            n->n_advertised_routes = 1;
            n->approved_routes = &net.route;
            n->n_approved_routes = 1;
        }
    }
    n->has_ipv4 = true;
    n->ipv4[0] = 100;
    n->ipv4[1] = 64 + (uint8_t)(a >> 16);
    n->ipv4[2] = (uint8_t)(a >> 8);
    n->ipv4[3] = (uint8_t)a;
    n->has_ipv6 = true;
    memcpy(n->ipv6, "\xfd\x7a\x11\x5c\xa1\xe0\0\0\0\0\0\0", 12);
    n->ipv6[12] = (uint8_t)(a >> 24);
    n->ipv6[13] = (uint8_t)(a >> 16);
    n->ipv6[14] = (uint8_t)(a >> 8);
    n->ipv6[15] = (uint8_t)a;
    n->online = true;
}

/* Every node's packet filter and SSH policy, as sessions would ask. */
static size_t ask_all(struct policy_engine *e, size_t n_nodes)
{
    size_t rules = 0;

    for (size_t i = 0; i < n_nodes; i++) {
        json_t *f = policy_engine_filter(e, i + 1);
        json_t *s = policy_engine_ssh(e, i + 1);

        if (f == NULL || s == NULL)
            die("a query failed");
        rules += json_array_size(f);
        json_decref(f);
        json_decref(s);
    }
    return rules;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;

    return (x > y) - (x < y);
}

struct result {
    double compile_ms;
    double change_ms;
    double query_us;
};

static struct result run(const struct policy *p, size_t n_nodes)
{
    struct result res;
    struct policy_engine *e;
    struct policy_node n;
    double changes[N_CHANGES];
    double t0 = now_ms();
    size_t rules;

    e = policy_engine_new(p);
    if (e == NULL)
        die("out of memory");
    for (size_t u = 0; u < N_USERS; u++) {
        struct policy_user user = {.id = u + 1, .name = net.names[u]};

        if (policy_engine_user_put(e, &user) != 0)
            die("user_put failed");
    }
    for (size_t i = 0; i < n_nodes; i++) {
        node_of(i, 0, &n);
        if (policy_engine_node_put(e, &n) != 0)
            die("node_put failed");
    }
    rules = ask_all(e, n_nodes);
    res.compile_ms = now_ms() - t0;
    for (int c = 0; c < N_CHANGES; c++) {
        size_t victim = (size_t)c * 5 * 37 % n_nodes / 5 * 5; /* a tagged node */

        t0 = now_ms();
        node_of(victim, (unsigned)c + 1, &n);
        if (policy_engine_node_put(e, &n) != 0)
            die("node_put failed");
        ask_all(e, n_nodes);
        changes[c] = now_ms() - t0;
    }
    qsort(changes, N_CHANGES, sizeof changes[0], cmp_double);
    res.change_ms = changes[N_CHANGES / 2];
    t0 = now_ms();
    for (size_t i = 0; i < n_nodes; i++)
        json_decref(policy_engine_filter(e, i + 1));
    res.query_us = (now_ms() - t0) * 1e3 / (double)n_nodes;
    printf("nodes=%zu rules=%d filter_rules_total=%zu compile_ms=%.1f change_ms=%.1f "
           "query_us=%.2f\n",
           n_nodes, N_RULES, rules, res.compile_ms, res.change_ms, res.query_us);
    fflush(stdout);
    policy_engine_free(e);
    return res;
}

int main(void)
{
    struct policy_error err;
    struct policy *p = NULL;
    struct result r1k;
    struct result r10k;
    char *text = policy_text();

    for (int u = 0; u < N_USERS; u++)
        snprintf(net.names[u], sizeof net.names[u], "user%d", u);
    for (int i = 0; i < 10000; i++)
        snprintf(net.hostnames[i], sizeof net.hostnames[i], "node%d", i);
    for (int t = 0; t < N_TAGS; t++) {
        snprintf(net.tag_names[t], sizeof net.tag_names[t], "tag:t%d", t);
        net.tags[t][0] = net.tag_names[t];
    }
    if (policy_prefix_parse("10.1.0.0/16", &net.route) != 0)
        die("route prefix");
    if (policy_parse(text, strlen(text), &p, &err) != 0) {
        fprintf(stderr, "policy-bench: policy rejected: line %u, column %u: %s\n", err.line,
                err.col, err.message);
        return 1;
    }
    r1k = run(p, 1000);
    r10k = run(p, 10000);
    printf("policy-bench compile_ms_1k=%.1f compile_ms_10k=%.1f change_ms_10k=%.1f\n",
           r1k.compile_ms, r10k.compile_ms, r10k.change_ms);
    policy_free(p);
    free(text);
    return 0;
}
