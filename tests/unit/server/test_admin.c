/* tests/unit/server/test_admin.c: the admin API against a real store and a
 * real single-replica cluster (bootstrapped on a loopback port in a temp dir,
 * driven by the test's own loop). Requests are parsed from raw HTTP text by
 * net/'s request parser and answered into the test instead of a socket.
 * Every refusal is checked to leave the replicated state unchanged (same
 * store_state_hash before and after). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "server/admin/admin_internal.h"
#include "server/net/request.h"
#include "tests/lib/testdir.h"

#define WAIT_MS 10000

struct fixture {
    char dir[256];
    char raft_address[64];
    char http_address[64];
    uv_loop_t loop;
    struct store *store;
    struct cluster *cluster;
    struct admin *admin;
    struct admin_peer_client peer;
    bool is_closed;
    /* The last answer. */
    bool has_answer;
    int status;
    char content_type[64];
    char headers[256];
    char *body;
    size_t len;
};

/* ---- plumbing ---- */

static void on_answer(void *arg, struct net_http_request *req, int status, const char *content_type,
                      const char *extra_headers, const void *body, size_t len)
{
    struct fixture *f = arg;

    assert_false(f->has_answer); /* exactly one answer per request */
    f->has_answer = true;
    f->status = status;
    snprintf(f->content_type, sizeof f->content_type, "%s", content_type);
    snprintf(f->headers, sizeof f->headers, "%s", extra_headers != NULL ? extra_headers : "");
    free(f->body);
    f->body = malloc(len + 1);
    assert_non_null(f->body);
    if (len > 0)
        memcpy(f->body, body, len);
    f->body[len] = '\0';
    f->len = len;
    net_request_free(req);
}

static uint64_t now_ms(uv_loop_t *loop)
{
    uv_update_time(loop);
    return uv_now(loop);
}

/* Runs the loop until *flag is true; fails the test after WAIT_MS. */
static void run_until(struct fixture *f, const bool *flag)
{
    uint64_t deadline = now_ms(&f->loop) + WAIT_MS;

    while (!*flag) {
        if (now_ms(&f->loop) > deadline)
            fail_msg("timed out waiting for the loop");
        uv_run(&f->loop, UV_RUN_ONCE);
    }
}

/* A request as net/ would hand it over, parsed from raw HTTP text. headers:
 * NULL or "Name: value\r\n" lines. */
static struct net_http_request *request_new(bool is_local, const char *method, const char *target,
                                            const char *headers, const void *body, size_t body_len)
{
    const struct net_request_limits limits = {
        .max_header_bytes = 65536, .max_body_bytes = 64 << 20, .is_local = is_local};
    struct net_request_parser *p;
    struct net_http_request *req = NULL;
    char head[2048];
    uint8_t *text;
    size_t used, n;

    n = (size_t)snprintf(head, sizeof head,
                         "%s %s HTTP/1.1\r\nHost: test\r\n%sContent-Length: %zu\r\n\r\n", method,
                         target, headers != NULL ? headers : "", body_len);
    text = malloc(n + body_len);
    assert_non_null(text);
    memcpy(text, head, n);
    if (body_len > 0)
        memcpy(text + n, body, body_len);
    assert_int_equal(net_request_parser_new(&limits, &p), 0);
    assert_int_equal(net_request_parse(p, text, n + body_len, &used, &req), 0);
    assert_non_null(req);
    net_request_parser_free(p);
    free(text);
    return req;
}

/* Sends one request, as if it came from the Unix socket (is_local) or TCP,
 * and waits for its answer. */
static int request_raw(struct fixture *f, bool is_local, const char *method, const char *target,
                       const char *headers, const void *body, size_t body_len)
{
    struct net_http_request *req = request_new(is_local, method, target, headers, body, body_len);

    f->has_answer = false;
    admin_handle(f->admin, req);
    run_until(f, &f->has_answer);
    return f->status;
}

static int request(struct fixture *f, const char *method, const char *target, const char *body)
{
    return request_raw(f, true, method, target, NULL, body, body != NULL ? strlen(body) : 0);
}

/* The last answer as JSON (owned by the caller). */
static json_t *answer_json(struct fixture *f)
{
    json_error_t err;
    json_t *j = json_loads(f->body, 0, &err);

    if (j == NULL)
        fail_msg("answer is not JSON (%s): %s", err.text, f->body);
    return j;
}

static const char *answer_message(struct fixture *f, char *buf, size_t cap)
{
    json_t *j = answer_json(f);

    snprintf(buf, cap, "%s", json_string_value(json_object_get(j, "message")));
    json_decref(j);
    return buf;
}

static void state_hash(struct fixture *f, uint8_t out[32])
{
    struct store_txn *t;

    assert_int_equal(store_txn_begin(f->store, false, &t), 0);
    assert_int_equal(store_state_hash(t, out), 0);
    store_txn_abort(t);
}

/* Asserts the request is refused with `status`, changes nothing, and that
 * the error message contains `fragment`. */
static void assert_refused(struct fixture *f, int status, const char *fragment, const char *method,
                           const char *target, const char *headers, bool is_local, const char *body)
{
    uint8_t before[32], after[32];
    char message[512];

    state_hash(f, before);
    if (request_raw(f, is_local, method, target, headers, body, body != NULL ? strlen(body) : 0) !=
        status)
        fail_msg("%s %s %s: got %d, want %d: %s", method, target, body != NULL ? body : "",
                 f->status, status, f->body);
    answer_message(f, message, sizeof message);
    if (strstr(message, fragment) == NULL)
        fail_msg("%s %s: message \"%s\" lacks \"%s\"", method, target, message, fragment);
    state_hash(f, after);
    assert_memory_equal(before, after, 32);
}

static void free_port(char *buf, size_t cap)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    snprintf(buf, cap, "127.0.0.1:%u", ntohs(sa.sin_port));
    close(fd);
}

static void on_log(void *arg, enum cluster_log_level level, const char *msg)
{
    (void)arg;
    (void)level;
    (void)msg;
}

static bool is_leader(struct fixture *f)
{
    struct cluster_status st;

    cluster_status_get(f->cluster, &st);
    return st.role == CLUSTER_ROLE_LEADER && st.applied_index >= st.commit_index &&
           st.commit_index > 0;
}

/* A replica of a cluster whose configuration lists `n_voters` voters; only
 * this one runs, so with two or more it never has a quorum. */
static struct fixture *fixture_new(unsigned n_voters)
{
    struct fixture *f = calloc(1, sizeof *f);
    struct cluster_options co = {0};
    struct cluster_member m[2] = {{.id = 1, .is_voter = true}, {.id = 2, .is_voter = true}};
    struct admin_options ao = {0};
    struct store_options so = {0};
    char path[300], raft_dir[300], errmsg[256];

    assert_non_null(f);
    assert_true(n_voters >= 1 && n_voters <= 2);
    assert_true(sodium_init() >= 0);
    assert_int_equal(testdir_make(f->dir, sizeof f->dir), 0);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    snprintf(path, sizeof path, "%s/store", f->dir);
    snprintf(raft_dir, sizeof raft_dir, "%s/raft", f->dir);
    so.dir = path;
    so.map_size_bytes = 64 << 20;
    assert_int_equal(store_open(&so, &f->store, errmsg), 0);

    free_port(f->raft_address, sizeof f->raft_address);
    free_port(f->http_address, sizeof f->http_address);
    f->peer.loop = &f->loop;
    f->peer.timeout_ms = 2000;
    co.id = 1;
    co.raft_address = f->raft_address;
    co.http_address = f->http_address;
    co.raft_dir = raft_dir;
    co.store = f->store;
    co.election_timeout_ms = 200;
    co.heartbeat_timeout_ms = 50;
    co.transport.send = admin_peer_send;
    co.transport.arg = &f->peer;
    co.log = on_log;
    snprintf(m[0].raft_address, sizeof m[0].raft_address, "%s", f->raft_address);
    snprintf(m[0].http_address, sizeof m[0].http_address, "%s", f->http_address);
    free_port(m[1].raft_address, sizeof m[1].raft_address);
    free_port(m[1].http_address, sizeof m[1].http_address);
    if (cluster_bootstrap(&co, m, n_voters, errmsg) != 0)
        fail_msg("bootstrap: %s", errmsg);
    if (cluster_new(&f->loop, &co, &f->cluster, errmsg) != 0 ||
        cluster_start(f->cluster, errmsg) != 0)
        fail_msg("start: %s", errmsg);

    ao.cluster = f->cluster;
    ao.store = f->store;
    ao.loop = &f->loop;
    ao.ready_max_apply_lag = 100;
    assert_int_equal(admin_new(&ao, &f->admin), 0);
    f->admin->respond = on_answer;
    f->admin->respond_arg = f;
    return f;
}

static int setup(void **state)
{
    struct fixture *f = fixture_new(1);
    uint64_t deadline = now_ms(&f->loop) + WAIT_MS;

    while (!is_leader(f)) {
        if (now_ms(&f->loop) > deadline)
            fail_msg("no leader elected");
        uv_run(&f->loop, UV_RUN_ONCE);
    }
    *state = f;
    return 0;
}

static int setup_minority(void **state)
{
    *state = fixture_new(2);
    return 0;
}

static void on_closed(void *arg)
{
    struct fixture *f = arg;

    f->is_closed = true;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    admin_free(f->admin);
    cluster_close(f->cluster, on_closed, f);
    run_until(f, &f->is_closed);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    store_close(f->store);
    testdir_remove(f->dir);
    free(f->body);
    free(f);
    return 0;
}

/* Creates a user through the API and returns its id. */
static uint64_t user_create(struct fixture *f, const char *name)
{
    char body[128];
    uint64_t id;
    json_t *j;

    snprintf(body, sizeof body, "{\"name\": \"%s\"}", name);
    if (request(f, "POST", "/api/v1/user", body) != 200)
        fail_msg("creating %s: %d %s", name, f->status, f->body);
    j = answer_json(f);
    assert_int_equal(
        admin_parse_id(json_string_value(json_object_get(json_object_get(j, "user"), "id")), &id),
        0);
    json_decref(j);
    return id;
}

/* Creates a debug node for user `user` and returns its id. */
static uint64_t node_create(struct fixture *f, const char *user, const char *name)
{
    char body[256];
    uint64_t id;
    json_t *j;

    snprintf(body, sizeof body, "{\"user\": \"%s\", \"name\": \"%s\"}", user, name);
    if (request(f, "POST", "/api/v1/debug/node", body) != 200)
        fail_msg("creating node %s: %d %s", name, f->status, f->body);
    j = answer_json(f);
    assert_int_equal(
        admin_parse_id(json_string_value(json_object_get(json_object_get(j, "node"), "id")), &id),
        0);
    json_decref(j);
    return id;
}

/* ---- tests ---- */

static void health_and_ready_answer_load_balancers(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(request(f, "GET", "/health", NULL), 200);
    assert_string_equal(f->body, "{\"status\":\"pass\"}");
    assert_string_equal(f->content_type, "application/json");
    assert_int_equal(request(f, "GET", "/ready", NULL), 200);
    assert_string_equal(f->body, "{\"status\":\"pass\"}");
    /* Neither needs an API key. */
    assert_int_equal(request_raw(f, false, "GET", "/health", NULL, NULL, 0), 200);
    assert_int_equal(request(f, "GET", "/api/v1/health", NULL), 200);
    assert_string_equal(f->body, "{\"databaseConnectivity\":true}");
}

static void unknown_routes_are_404_and_wrong_methods_405(void **state)
{
    struct fixture *f = *state;

    assert_refused(f, 404, "no such route", "GET", "/api/v1/nothing", NULL, true, NULL);
    assert_refused(f, 404, "no such route", "GET", "/elsewhere", NULL, true, NULL);
    assert_refused(f, 405, "method not allowed", "PATCH", "/api/v1/user", NULL, true, NULL);
    assert_refused(f, 405, "method not allowed", "GET", "/api/v1/user/1/rename/x", NULL, true,
                   NULL);
    assert_refused(f, 501, "not implemented", "POST", "/api/v1/node/backfillips", NULL, true, "{}");
    assert_refused(f, 400, "consistent", "GET", "/api/v1/user?consistent=maybe", NULL, true, NULL);
}

static void users_are_created_and_listed_in_headscale_shape(void **state)
{
    struct fixture *f = *state;
    json_t *j, *u;

    assert_int_equal(request(f, "POST", "/api/v1/user",
                             "{\"name\": \"alice\", \"displayName\": \"Alice A\", "
                             "\"email\": \"alice@example.org\"}"),
                     200);
    j = answer_json(f);
    u = json_object_get(j, "user");
    assert_true(json_is_string(json_object_get(u, "id"))); /* protojson uint64 */
    assert_string_equal(json_string_value(json_object_get(u, "name")), "alice");
    assert_string_equal(json_string_value(json_object_get(u, "displayName")), "Alice A");
    assert_string_equal(json_string_value(json_object_get(u, "email")), "alice@example.org");
    assert_non_null(strchr(json_string_value(json_object_get(u, "createdAt")), 'Z'));
    assert_string_equal(json_string_value(json_object_get(u, "providerId")), "");
    json_decref(j);

    /* snake_case names are accepted too, as protojson does. */
    assert_int_equal(
        request(f, "POST", "/api/v1/user", "{\"name\": \"alice2\", \"display_name\": \"A2\"}"),
        200);

    assert_int_equal(request(f, "GET", "/api/v1/user?name=alice", NULL), 200);
    j = answer_json(f);
    assert_int_equal(json_array_size(json_object_get(j, "users")), 1);
    json_decref(j);
    assert_int_equal(request(f, "GET", "/api/v1/user?consistent=false", NULL), 200);
    j = answer_json(f);
    assert_true(json_array_size(json_object_get(j, "users")) >= 2);
    json_decref(j);
}

static void bad_request_bodies_are_400_and_change_nothing(void **state)
{
    struct fixture *f = *state;

    assert_refused(f, 400, "malformed JSON", "POST", "/api/v1/user", NULL, true, "{\"name\":");
    assert_refused(f, 400, "malformed JSON", "POST", "/api/v1/user", NULL, true,
                   "{\"name\": \"a\", \"name\": \"b\"}");
    assert_refused(f, 400, "must be a JSON object", "POST", "/api/v1/user", NULL, true, "[]");
    assert_refused(f, 400, "unknown field \"nick\"", "POST", "/api/v1/user", NULL, true,
                   "{\"name\": \"bob\", \"nick\": \"b\"}");
    assert_refused(f, 400, "\"name\" must be a string", "POST", "/api/v1/user", NULL, true,
                   "{\"name\": 5}");
    assert_refused(f, 400, "is required", "POST", "/api/v1/user", NULL, true, "{}");
    assert_refused(f, 400, "at least 2 characters", "POST", "/api/v1/user", NULL, true,
                   "{\"name\": \"b\"}");
    assert_refused(f, 400, "invalid character ' '", "POST", "/api/v1/user", NULL, true,
                   "{\"name\": \"bob bob\"}");
    assert_refused(f, 400, "start with a letter", "POST", "/api/v1/user", NULL, true,
                   "{\"name\": \"1bob\"}");
    assert_refused(f, 400, "more than one '@'", "POST", "/api/v1/user", NULL, true,
                   "{\"name\": \"b@b@b\"}");
    assert_refused(f, 400, "\"reusable\" must be a boolean", "POST", "/api/v1/preauthkey", NULL,
                   true, "{\"user\": \"1\", \"reusable\": \"yes\"}");
    assert_refused(f, 400, "RFC 3339", "POST", "/api/v1/preauthkey", NULL, true,
                   "{\"user\": \"1\", \"expiration\": \"tomorrow\"}");
    assert_refused(f, 400, "in the future", "POST", "/api/v1/preauthkey", NULL, true,
                   "{\"user\": \"1\", \"expiration\": \"2001-01-01T00:00:00Z\"}");
    assert_refused(f, 400, "user id must be a positive integer", "POST",
                   "/api/v1/user/zero/rename/bob", NULL, true, NULL);
}

static void duplicate_user_names_are_409_and_change_nothing(void **state)
{
    struct fixture *f = *state;

    user_create(f, "carol");
    assert_refused(f, 409, "already exists", "POST", "/api/v1/user", NULL, true,
                   "{\"name\": \"carol\"}");
    user_create(f, "carol-2");
    assert_refused(f, 409, "already exists", "POST", "/api/v1/user/1/rename/carol", NULL, true,
                   NULL);
}

static void invalid_tags_are_400_and_change_nothing(void **state)
{
    struct fixture *f = *state;
    char target[64], body[64];
    uint64_t user = user_create(f, "erin"), node = node_create(f, "erin", "erin-laptop");

    snprintf(body, sizeof body, "{\"user\": \"%llu\", \"aclTags\": [", (unsigned long long)user);
    snprintf(target, sizeof target, "/api/v1/node/%llu/tags", (unsigned long long)node);
    {
        static const char *const bad[][2] = {
            {"\"Tag:web\"", "must start with"}, {"\"tag:\"", "name of 1 to"},
            {"\"tag:Web\"", "lower-case"},      {"\"tag:a b\"", "lower-case"},
            {"\"web\"", "must start with"},     {"\"tag:a\", \"tag:a\"", "listed twice"},
            {"7", "array of strings"},
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            char full[160];
            snprintf(full, sizeof full, "%s%s]}", body, bad[i][0]);
            assert_refused(f, 400, bad[i][1], "POST", "/api/v1/preauthkey", NULL, true, full);
            snprintf(full, sizeof full, "{\"tags\": [%s]}", bad[i][0]);
            assert_refused(f, 400, bad[i][1], "POST", target, NULL, true, full);
        }
    }
    assert_refused(f, 400, "at least one tag", "POST", target, NULL, true, "{\"tags\": []}");
    assert_int_equal(request(f, "POST", target, "{\"tags\": [\"tag:web\", \"tag:prod-1\"]}"), 200);
}

/* Routes are checked before anything is proposed (CIDR, no host bits,
 * canonical, once each), and the state machine refuses routes the node does
 * not advertise (a debug node advertises none). */
static void invalid_routes_are_400_and_change_nothing(void **state)
{
    struct fixture *f = *state;
    char target[64];
    uint64_t node;

    user_create(f, "judy");
    node = node_create(f, "judy", "judy-router");
    snprintf(target, sizeof target, "/api/v1/node/%llu/approve_routes", (unsigned long long)node);
    {
        static const char *const bad[][2] = {
            {"\"10.0.0.1/8\"", "host bits set"},
            {"\"10.0.0.0\"", "not a CIDR prefix"},
            {"\"10.0.0.0/33\"", "prefix length must be 0 to 32"},
            {"\"fd7a:115c:a1e0:0::/48\"", "canonical form: write fd7a:115c:a1e0::/48"},
            {"\"10.1.0.0/16\", \"10.1.0.0/16\"", "listed twice"},
            {"\"10.1.0.0/16\"", "is not advertised by node"},
            {"7", "array of strings"},
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            char full[160];

            snprintf(full, sizeof full, "{\"routes\": [%s]}", bad[i][0]);
            assert_refused(f, 400, bad[i][1], "POST", target, NULL, true, full);
        }
    }
    assert_refused(f, 400, "\"routes\" is required", "POST", target, NULL, true, "{}");
    assert_refused(f, 404, "not found", "POST", "/api/v1/node/999999/approve_routes", NULL, true,
                   "{\"routes\": []}");
    assert_int_equal(request(f, "POST", target, "{\"routes\": []}"), 200);
}

static void unknown_node_ids_are_404_and_change_nothing(void **state)
{
    struct fixture *f = *state;

    assert_refused(f, 404, "node 999999 not found", "GET", "/api/v1/node/999999", NULL, true, NULL);
    assert_refused(f, 404, "not found", "POST", "/api/v1/node/999999/expire", NULL, true, NULL);
    assert_refused(f, 404, "not found", "POST", "/api/v1/node/999999/rename/web", NULL, true, NULL);
    assert_refused(f, 404, "not found", "POST", "/api/v1/node/999999/tags", NULL, true,
                   "{\"tags\": [\"tag:web\"]}");
    assert_refused(f, 404, "not found", "DELETE", "/api/v1/node/999999", NULL, true, NULL);
    assert_refused(f, 400, "positive integer", "GET", "/api/v1/node/abc", NULL, true, NULL);
    assert_refused(f, 400, "positive integer", "DELETE", "/api/v1/node/0", NULL, true, NULL);
    assert_refused(f, 400, "positive integer", "GET", "/api/v1/node/-1", NULL, true, NULL);
    assert_refused(f, 404, "user \"nobody\" not found", "GET", "/api/v1/node?user=nobody", NULL,
                   true, NULL);
}

static void debug_nodes_can_be_renamed_tagged_expired_and_deleted(void **state)
{
    struct fixture *f = *state;
    char target[96];
    uint64_t id;
    json_t *j, *n;

    user_create(f, "dave");
    assert_int_equal(request(f, "POST", "/api/v1/debug/node",
                             "{\"user\": \"dave\", \"name\": \"web-1\", \"key\": \"nodekey:"
                             "0101010101010101010101010101010101010101010101010101010101010101\"}"),
                     200);
    j = answer_json(f);
    n = json_object_get(j, "node");
    assert_int_equal(admin_parse_id(json_string_value(json_object_get(n, "id")), &id), 0);
    assert_string_equal(json_string_value(json_object_get(n, "nodeKey")),
                        "nodekey:0101010101010101010101010101010101010101010101010101010101010101");
    assert_string_equal(json_string_value(json_object_get(n, "name")), "web-1");
    assert_string_equal(json_string_value(json_object_get(json_object_get(n, "user"), "name")),
                        "dave");
    assert_true(json_array_size(json_object_get(n, "ipAddresses")) >= 1);
    assert_true(json_is_null(json_object_get(n, "expiry")));
    assert_true(json_is_false(json_object_get(n, "online")));
    json_decref(j);

    assert_refused(f, 400, "DNS label", "POST", "/api/v1/debug/node", NULL, true,
                   "{\"user\": \"dave\", \"name\": \"Web_1\"}");
    assert_refused(f, 400, "nodekey:", "POST", "/api/v1/debug/node", NULL, true,
                   "{\"user\": \"dave\", \"name\": \"web-2\", \"key\": \"nodekey:zz\"}");
    assert_refused(f, 404, "user \"nobody\" not found", "POST", "/api/v1/debug/node", NULL, true,
                   "{\"user\": \"nobody\", \"name\": \"web-2\"}");
    assert_refused(f, 409, "node key", "POST", "/api/v1/debug/node", NULL, true,
                   "{\"user\": \"dave\", \"name\": \"web-3\", \"key\": \"nodekey:"
                   "0101010101010101010101010101010101010101010101010101010101010101\"}");

    snprintf(target, sizeof target, "/api/v1/node/%llu/rename/www", (unsigned long long)id);
    assert_int_equal(request(f, "POST", target, NULL), 200);
    j = answer_json(f);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "node"), "givenName")),
                        "www");
    json_decref(j);
    snprintf(target, sizeof target, "/api/v1/node/%llu/rename/-bad-", (unsigned long long)id);
    assert_refused(f, 400, "start or end with '-'", "POST", target, NULL, true, NULL);

    snprintf(target, sizeof target, "/api/v1/node/%llu/expire", (unsigned long long)id);
    assert_int_equal(request(f, "POST", target, NULL), 200);
    j = answer_json(f);
    assert_true(json_is_string(json_object_get(json_object_get(j, "node"), "expiry")));
    json_decref(j);
    snprintf(target, sizeof target,
             "/api/v1/node/%llu/expire?disableExpiry=true&expiry=2030-01-01T00:00:00Z",
             (unsigned long long)id);
    assert_refused(f, 400, "both", "POST", target, NULL, true, NULL);

    assert_int_equal(request(f, "GET", "/api/v1/node?user=dave", NULL), 200);
    j = answer_json(f);
    assert_int_equal(json_array_size(json_object_get(j, "nodes")), 1);
    json_decref(j);

    snprintf(target, sizeof target, "/api/v1/node/%llu", (unsigned long long)id);
    assert_int_equal(request(f, "DELETE", target, NULL), 200);
    assert_string_equal(f->body, "{}");
    assert_int_equal(request(f, "GET", target, NULL), 404);
}

struct submit_wait {
    bool is_done;
    int status;
    uint32_t code;
};

static void on_submitted(void *arg, int status, const Concord__CommandResult *result)
{
    struct submit_wait *w = arg;

    w->is_done = true;
    w->status = status;
    w->code = status == CLUSTER_OK ? result->code : 0;
}

/* Writes an API key straight through the cluster, so that one can already
 * be expired (the API refuses to create such keys). */
static void apikey_submit(struct fixture *f, int64_t expiration_unix_ms,
                          char token[SECRET_TOKEN_MAX])
{
    Concord__Command *cmd = malloc(sizeof *cmd);
    Concord__CreateApiKey *op = malloc(sizeof *op);
    char prefix[SECRET_PREFIX_LEN + 1];
    struct submit_wait w = {0};

    assert_non_null(cmd);
    assert_non_null(op);
    concord__command__init(cmd);
    concord__create_api_key__init(op);
    cmd->op_case = CONCORD__COMMAND__OP_CREATE_APIKEY;
    cmd->create_apikey = op;
    cmd->actor = admin_strdup("test");
    cmd->proposed_unix_ms = admin_now_unix_ms();
    op->hash.data = malloc(SECRET_HASH_BYTES);
    assert_non_null(op->hash.data);
    op->hash.len = SECRET_HASH_BYTES;
    assert_int_equal(secret_generate(SECRET_KIND_APIKEY, token, prefix, op->hash.data), 0);
    op->prefix = admin_strdup(prefix);
    op->expiration_unix_ms = expiration_unix_ms;
    assert_int_equal(cluster_submit(f->cluster, cmd, on_submitted, &w), 0);
    run_until(f, &w.is_done);
    assert_int_equal(w.status, CLUSTER_OK);
    assert_int_equal(w.code, CLUSTER_RESULT_OK);
}

static void tcp_requests_need_a_valid_api_key(void **state)
{
    struct fixture *f = *state;
    char token[SECRET_TOKEN_MAX], expired[SECRET_TOKEN_MAX], header[160];
    char body[] = "{\"name\": \"frank\"}";
    json_t *j;

    apikey_submit(f, admin_now_unix_ms() + 3600 * 1000, token);
    apikey_submit(f, admin_now_unix_ms() - 1000, expired);

    assert_refused(f, 401, "missing API key", "POST", "/api/v1/user", NULL, false, body);
    assert_refused(f, 401, "missing API key", "GET", "/api/v1/user", NULL, false, NULL);
    assert_refused(f, 401, "expected Bearer", "POST", "/api/v1/user",
                   "Authorization: Basic eDp5\r\n", false, body);
    assert_refused(f, 401, "malformed API key", "POST", "/api/v1/user",
                   "Authorization: Bearer hskey-api-abc\r\n", false, body);
    /* The right prefix with a wrong secret. */
    snprintf(header, sizeof header, "Authorization: Bearer %s\r\n", token);
    header[strlen(header) - 3] = header[strlen(header) - 3] == 'A' ? 'B' : 'A';
    assert_refused(f, 401, "invalid API key", "POST", "/api/v1/user", header, false, body);
    snprintf(header, sizeof header, "Authorization: Bearer %s\r\n", expired);
    assert_refused(f, 401, "expired", "POST", "/api/v1/user", header, false, body);

    snprintf(header, sizeof header, "Authorization: Bearer %s\r\n", token);
    assert_int_equal(request_raw(f, false, "POST", "/api/v1/user", header, body, strlen(body)),
                     200);
    /* The audit log names the key that did it. */
    assert_int_equal(request(f, "GET", "/api/v1/audit?limit=1000", NULL), 200);
    j = answer_json(f);
    {
        json_t *entries = json_object_get(j, "entries"), *last;
        char actor[64];
        char prefix[SECRET_PREFIX_LEN + 1];
        assert_true(json_array_size(entries) > 0);
        last = json_array_get(entries, json_array_size(entries) - 1);
        assert_int_equal(secret_parse_prefix(SECRET_KIND_APIKEY, token, prefix), 0);
        snprintf(actor, sizeof actor, "apikey:%s", prefix);
        assert_string_equal(json_string_value(json_object_get(last, "actor")), actor);
        assert_string_equal(json_string_value(json_object_get(last, "action")), "user.create");
    }
    json_decref(j);
}

static void policy_is_a_compare_and_set_register(void **state)
{
    struct fixture *f = *state;
    const char *policy = "{\n  // everyone\n  \"acls\": [{\"action\": \"accept\", \"src\": "
                         "[\"*\"], \"dst\": [\"*:*\"]},],\n}\n";
    json_t *body = json_pack("{s:s}", "policy", policy), *j;
    char *text = json_dumps(body, 0);

    assert_int_equal(request(f, "GET", "/api/v1/policy", NULL), 200);
    assert_string_equal(f->headers, "ETag: \"0\"\r\n");
    j = answer_json(f);
    assert_string_equal(json_string_value(json_object_get(j, "policy")), "");
    assert_true(json_is_null(json_object_get(j, "updatedAt")));
    json_decref(j);

    assert_refused(f, 412, "policy version is 0", "PUT", "/api/v1/policy", "If-Match: \"3\"\r\n",
                   true, text);
    assert_int_equal(
        request_raw(f, true, "PUT", "/api/v1/policy", "If-Match: \"0\"\r\n", text, strlen(text)),
        200);
    assert_string_equal(f->headers, "ETag: \"1\"\r\n");
    assert_int_equal(request(f, "GET", "/api/v1/policy", NULL), 200);
    assert_string_equal(f->headers, "ETag: \"1\"\r\n");
    j = answer_json(f);
    assert_string_equal(json_string_value(json_object_get(j, "policy")), policy);
    assert_true(json_is_string(json_object_get(j, "updatedAt")));
    json_decref(j);
    /* A second writer that read version 0 loses. Quotes are optional. */
    assert_refused(f, 412, "policy version is 1", "PUT", "/api/v1/policy", "If-Match: 0\r\n", true,
                   text);
    assert_int_equal(
        request_raw(f, true, "PUT", "/api/v1/policy", "If-Match: 1\r\n", text, strlen(text)), 200);
    assert_string_equal(f->headers, "ETag: \"2\"\r\n");
    /* Without If-Match the write is unconditional. */
    assert_int_equal(request(f, "PUT", "/api/v1/policy", text), 200);
    assert_string_equal(f->headers, "ETag: \"3\"\r\n");

    assert_refused(f, 400, "If-Match", "PUT", "/api/v1/policy", "If-Match: \"v1\"\r\n", true, text);
    assert_refused(f, 400, "line 2, column 3", "PUT", "/api/v1/policy", NULL, true,
                   "{\"policy\": \"{\\n  acls: []\\n}\"}");
    assert_refused(f, 400, "line 1, column 1: unexpected end of text", "PUT", "/api/v1/policy",
                   NULL, true, "{\"policy\": \"\"}");
    assert_refused(f, 400, "is required", "PUT", "/api/v1/policy", NULL, true, "{}");
    assert_refused(f, 400, "line 1, column 2: invalid character", "POST", "/api/v1/policy/check",
                   NULL, true, "{\"policy\": \"{,}\"}");
    assert_int_equal(request(f, "POST", "/api/v1/policy/check", text), 200);
    assert_string_equal(f->body, "{}");
    free(text);
    json_decref(body);
}

static void preauthkey_tokens_are_shown_once(void **state)
{
    struct fixture *f = *state;
    char body[160], target[64], token[SECRET_TOKEN_MAX];
    uint64_t user = user_create(f, "grace"), id;
    json_t *j, *k;

    snprintf(body, sizeof body,
             "{\"user\": \"%llu\", \"reusable\": true, \"aclTags\": [\"tag:ci\"], "
             "\"expiration\": \"2099-01-01T00:00:00Z\"}",
             (unsigned long long)user);
    assert_int_equal(request(f, "POST", "/api/v1/preauthkey", body), 200);
    j = answer_json(f);
    k = json_object_get(j, "preAuthKey");
    snprintf(token, sizeof token, "%s", json_string_value(json_object_get(k, "key")));
    assert_int_equal(strncmp(token, SECRET_KIND_PREAUTH "-", strlen(SECRET_KIND_PREAUTH) + 1), 0);
    assert_null(strstr(token, "***"));
    assert_true(json_is_true(json_object_get(k, "reusable")));
    assert_string_equal(json_string_value(json_object_get(k, "expiration")),
                        "2099-01-01T00:00:00Z");
    assert_string_equal(json_string_value(json_object_get(json_object_get(k, "user"), "name")),
                        "grace");
    assert_int_equal(admin_parse_id(json_string_value(json_object_get(k, "id")), &id), 0);
    json_decref(j);

    assert_int_equal(request(f, "GET", "/api/v1/preauthkey", NULL), 200);
    assert_null(strstr(f->body, token));
    assert_non_null(strstr(f->body, "-***\""));

    snprintf(body, sizeof body, "{\"id\": \"%llu\"}", (unsigned long long)id);
    assert_int_equal(request(f, "POST", "/api/v1/preauthkey/expire", body), 200);
    assert_refused(f, 400, "either", "POST", "/api/v1/preauthkey/expire", NULL, true, "{}");
    assert_refused(f, 404, "not found", "POST", "/api/v1/preauthkey/expire", NULL, true,
                   "{\"id\": \"99999\"}");
    snprintf(target, sizeof target, "/api/v1/preauthkey?id=%llu", (unsigned long long)id);
    assert_int_equal(request(f, "DELETE", target, NULL), 200);
    assert_refused(f, 404, "not found", "DELETE", target, NULL, true, NULL);
    assert_refused(f, 400, "?id=", "DELETE", "/api/v1/preauthkey", NULL, true, NULL);
    assert_refused(f, 404, "user 99999 not found", "POST", "/api/v1/preauthkey", NULL, true,
                   "{\"user\": \"99999\"}");
}

static void apikeys_can_be_created_expired_and_deleted(void **state)
{
    struct fixture *f = *state;
    char token[SECRET_TOKEN_MAX], prefix[SECRET_PREFIX_LEN + 1], header[160], target[64], body[96];
    json_t *j;

    assert_int_equal(
        request(f, "POST", "/api/v1/apikey", "{\"expiration\": \"2099-01-01T00:00:00Z\"}"), 200);
    j = answer_json(f);
    snprintf(token, sizeof token, "%s", json_string_value(json_object_get(j, "apiKey")));
    json_decref(j);
    assert_int_equal(secret_parse_prefix(SECRET_KIND_APIKEY, token, prefix), 0);
    snprintf(header, sizeof header, "Authorization: Bearer %s\r\n", token);
    assert_int_equal(request_raw(f, false, "GET", "/api/v1/apikey", header, NULL, 0), 200);
    assert_non_null(strstr(f->body, prefix));
    assert_null(strstr(f->body, token));

    snprintf(body, sizeof body, "{\"prefix\": \"%s\"}", prefix);
    assert_int_equal(request(f, "POST", "/api/v1/apikey/expire", body), 200);
    assert_refused(f, 401, "expired", "GET", "/api/v1/apikey", header, false, NULL);
    assert_refused(f, 400, "not both", "POST", "/api/v1/apikey/expire", NULL, true,
                   "{\"prefix\": \"x\", \"id\": \"1\"}");
    assert_refused(f, 400, "not an API key prefix", "POST", "/api/v1/apikey/expire", NULL, true,
                   "{\"prefix\": \"short\"}");
    snprintf(target, sizeof target, "/api/v1/apikey/%s", prefix);
    assert_int_equal(request(f, "DELETE", target, NULL), 200);
    assert_refused(f, 404, "not found", "DELETE", target, NULL, true, NULL);
    assert_refused(f, 401, "invalid API key", "GET", "/api/v1/apikey", header, false, NULL);
    assert_refused(f, 400, "in the future", "POST", "/api/v1/apikey", NULL, true,
                   "{\"expiration\": \"2020-01-01T00:00:00Z\"}");
}

static void cluster_status_reports_role_and_state_hash(void **state)
{
    struct fixture *f = *state;
    uint8_t hash[32];
    char hex[65];
    json_t *j, *m;

    assert_int_equal(request(f, "GET", "/api/v1/cluster/status", NULL), 200);
    state_hash(f, hash);
    sodium_bin2hex(hex, sizeof hex, hash, sizeof hash);
    j = answer_json(f);
    assert_string_equal(json_string_value(json_object_get(j, "stateHash")), hex);
    assert_string_equal(json_string_value(json_object_get(j, "role")),
                        cluster_role_name(CLUSTER_ROLE_LEADER));
    assert_string_equal(json_string_value(json_object_get(j, "leaderId")), "1");
    json_decref(j);

    assert_int_equal(request(f, "GET", "/api/v1/cluster/members", NULL), 200);
    j = answer_json(f);
    assert_int_equal(json_array_size(json_object_get(j, "members")), 1);
    m = json_array_get(json_object_get(j, "members"), 0);
    assert_string_equal(json_string_value(json_object_get(m, "raftAddress")), f->raft_address);
    assert_true(json_is_true(json_object_get(m, "leader")));
    json_decref(j);

    assert_refused(f, 400, "host:port", "POST", "/api/v1/cluster/members", NULL, true,
                   "{\"id\": \"2\", \"raftAddress\": \"nowhere\", \"httpAddress\": "
                   "\"127.0.0.1:1\"}");
    assert_refused(f, 400, "are required", "POST", "/api/v1/cluster/members", NULL, true,
                   "{\"id\": \"2\"}");
    assert_refused(f, 400, "positive integer", "DELETE", "/api/v1/cluster/members/x", NULL, true,
                   NULL);
    assert_refused(f, 400, "required", "POST", "/api/v1/cluster/join", NULL, true, "{}");
}

static void snapshots_restore_an_earlier_state(void **state)
{
    struct fixture *f = *state;
    uint8_t before[32], changed[32], hash[32];
    char hex[65];
    uint8_t *snapshot;
    size_t len;
    json_t *j;

    state_hash(f, before);
    assert_int_equal(request(f, "GET", "/api/v1/cluster/snapshot", NULL), 200);
    assert_string_equal(f->content_type, "application/octet-stream");
    len = f->len;
    snapshot = malloc(len);
    assert_non_null(snapshot);
    memcpy(snapshot, f->body, len);

    user_create(f, "heidi");
    state_hash(f, changed);
    assert_memory_not_equal(before, changed, 32);

    /* Garbage and a truncated file change nothing. */
    assert_refused(f, 400, "zstd", "POST", "/api/v1/cluster/snapshot/restore", NULL, true,
                   "not a snapshot");
    {
        char *truncated = malloc(len);
        uint8_t h1[32], h2[32];
        assert_non_null(truncated);
        memcpy(truncated, snapshot, len);
        state_hash(f, h1);
        assert_int_equal(request_raw(f, true, "POST", "/api/v1/cluster/snapshot/restore", NULL,
                                     truncated, len / 2),
                         400);
        state_hash(f, h2);
        assert_memory_equal(h1, h2, 32);
        free(truncated);
    }
    {
        /* Bytes flipped in the middle: zstd's frame checksum catches them
         * before anything is proposed. */
        char *flipped = malloc(len);
        uint8_t h1[32], h2[32];
        assert_non_null(flipped);
        memcpy(flipped, snapshot, len);
        for (size_t i = len / 2; i < len / 2 + 4 && i < len; i++)
            flipped[i] ^= 0x5a;
        state_hash(f, h1);
        assert_int_equal(
            request_raw(f, true, "POST", "/api/v1/cluster/snapshot/restore", NULL, flipped, len),
            400);
        state_hash(f, h2);
        assert_memory_equal(h1, h2, 32);
        free(flipped);
    }

    assert_int_equal(
        request_raw(f, true, "POST", "/api/v1/cluster/snapshot/restore", NULL, snapshot, len), 200);
    state_hash(f, hash);
    sodium_bin2hex(hex, sizeof hex, hash, sizeof hash);
    j = answer_json(f);
    assert_string_equal(json_string_value(json_object_get(j, "stateHash")), hex);
    json_decref(j);
    free(snapshot);
    /* The user created after the save is gone; the earlier ones are back.
     * (The hash differs from `before` by the restore's own audit entry.) */
    assert_int_equal(request(f, "GET", "/api/v1/user?name=heidi", NULL), 200);
    assert_string_equal(f->body, "{\"users\":[]}");
    assert_int_equal(request(f, "GET", "/api/v1/user?name=alice", NULL), 200);
    j = answer_json(f);
    assert_int_equal(json_array_size(json_object_get(j, "users")), 1);
    json_decref(j);
    assert_int_equal(request(f, "GET", "/api/v1/audit?limit=1000", NULL), 200);
    assert_non_null(strstr(f->body, "\"state.restore\""));
}

static void peer_route_answers_only_authenticated_replicas(void **state)
{
    struct fixture *f = *state;
    Concord__PeerRequest pr = CONCORD__PEER_REQUEST__INIT;
    Concord__PeerReply *reply;
    char auth[ADMIN_PEER_AUTH_BYTES], header[ADMIN_PEER_AUTH_BYTES + 64];
    uint8_t packed[16];
    size_t len;

    pr.op_case = CONCORD__PEER_REQUEST__OP_BARRIER;
    pr.barrier = true;
    len = concord__peer_request__pack(&pr, packed);

    assert_int_equal(request_raw(f, false, "POST", "/internal/v1/peer", NULL, packed, len), 401);
    admin_peer_auth_make(f->admin->opts.cluster_secret, admin_now_unix_ms() - 120000, packed, len,
                         auth);
    snprintf(header, sizeof header, ADMIN_PEER_AUTH_HEADER ": %s\r\n", auth);
    assert_int_equal(request_raw(f, false, "POST", "/internal/v1/peer", header, packed, len), 401);
    assert_int_equal(request_raw(f, false, "GET", "/internal/v1/peer", header, NULL, 0), 405);

    admin_peer_auth_make(f->admin->opts.cluster_secret, admin_now_unix_ms(), packed, len, auth);
    snprintf(header, sizeof header, ADMIN_PEER_AUTH_HEADER ": %s\r\n", auth);
    assert_int_equal(request_raw(f, false, "POST", "/internal/v1/peer", header, packed, len), 200);
    assert_string_equal(f->content_type, "application/x-protobuf");
    reply = concord__peer_reply__unpack(NULL, f->len, (const uint8_t *)f->body);
    assert_non_null(reply);
    assert_int_equal(reply->status, CLUSTER_OK);
    concord__peer_reply__free_unpacked(reply, NULL);
}

static void snapshot_in_flight_survives_admin_free(void **state)
{
    struct fixture *f = *state;
    struct admin *second;
    char message[256];

    /* A stale read dumps at once and queues the compression: the job is in
     * flight when the admin is freed, as at shutdown. */
    assert_int_equal(admin_new(&f->admin->opts, &second), 0);
    second->respond = on_answer;
    second->respond_arg = f;
    f->has_answer = false;
    admin_handle(second, request_new(true, "GET", "/api/v1/cluster/snapshot?consistent=false", NULL,
                                     NULL, 0));
    assert_false(f->has_answer);
    admin_free(second);
    run_until(f, &f->has_answer);
    assert_int_equal(f->status, 503);
    assert_non_null(strstr(answer_message(f, message, sizeof message), "shutting down"));
}

/* ---- backups ---- */

static void backup_body(char *buf, size_t cap, const char *dir)
{
    snprintf(buf, cap, "{\"path\": \"%s\"}", dir);
}

static bool path_exists(const char *path)
{
    struct stat st;

    return lstat(path, &st) == 0;
}

static void backup_copies_the_state_at_its_applied_index(void **state)
{
    struct fixture *f = *state;
    char dir[300], path[400], body[400];
    struct store_options so = {0};
    uint64_t applied, copied;
    Concord__User *u = NULL;
    struct store_txn *t;
    struct store *copy;
    struct stat st;
    json_t *j;

    user_create(f, "bella");
    snprintf(dir, sizeof dir, "%s/backup-1", f->dir);
    backup_body(body, sizeof body, dir);
    assert_int_equal(request(f, "POST", "/api/v1/cluster/backup", body), 200);
    assert_int_equal(store_txn_begin(f->store, false, &t), 0);
    assert_int_equal(store_applied_index_get(t, &applied), 0);
    store_txn_abort(t);
    j = answer_json(f);
    assert_string_equal(json_string_value(json_object_get(j, "path")), dir);
    assert_int_equal(admin_parse_id(json_string_value(json_object_get(j, "appliedIndex")), &copied),
                     0);
    assert_int_equal(copied, applied); /* nothing was written since */
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(json_integer_value(json_object_get(j, "bytes")), st.st_size);
    json_decref(j);
    /* The backup is data.mdb alone, and a readable store. */
    snprintf(path, sizeof path, "%s/lock.mdb", dir);
    assert_false(path_exists(path));
    so.dir = dir;
    assert_int_equal(store_open(&so, &copy, NULL), 0);
    assert_int_equal(store_txn_begin(copy, false, &t), 0);
    assert_int_equal(store_user_get_by_name(t, "bella", &u), 0);
    store_record_free(u);
    store_txn_abort(t);
    store_close(copy);

    /* An existing empty directory is fine; a trailing slash too. */
    snprintf(dir, sizeof dir, "%s/backup-2", f->dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    snprintf(body, sizeof body, "{\"path\": \"%s/\"}", dir);
    assert_int_equal(request(f, "POST", "/api/v1/cluster/backup", body), 200);
    j = answer_json(f);
    assert_string_equal(json_string_value(json_object_get(j, "path")), dir);
    json_decref(j);
    /* Without quorum this would still work: ?consistent=false skips the barrier. */
    snprintf(dir, sizeof dir, "%s/backup-3", f->dir);
    backup_body(body, sizeof body, dir);
    assert_int_equal(request(f, "POST", "/api/v1/cluster/backup?consistent=false", body), 200);
}

static void backup_refusals_write_nothing(void **state)
{
    struct fixture *f = *state;
    char token[SECRET_TOKEN_MAX], header[160], dir[300], body[512], path[400];
    FILE *file;

    /* Over TCP even a valid API key is not enough: it writes on the server. */
    apikey_submit(f, admin_now_unix_ms() + 3600 * 1000, token);
    snprintf(header, sizeof header, "Authorization: Bearer %s\r\n", token);
    snprintf(dir, sizeof dir, "%s/tcp-backup", f->dir);
    backup_body(body, sizeof body, dir);
    assert_refused(f, 403, "only over its Unix socket", "POST", "/api/v1/cluster/backup", header,
                   false, body);
    assert_refused(f, 401, "missing API key", "POST", "/api/v1/cluster/backup", NULL, false, body);
    assert_false(path_exists(dir));

    assert_refused(f, 400, "absolute path", "POST", "/api/v1/cluster/backup", NULL, true,
                   "{\"path\": \"relative/dir\"}");
    assert_refused(f, 400, "absolute path", "POST", "/api/v1/cluster/backup", NULL, true, "{}");
    assert_refused(f, 400, "not a usable", "POST", "/api/v1/cluster/backup", NULL, true,
                   "{\"path\": \"//\"}");
    assert_refused(f, 400, "unknown field", "POST", "/api/v1/cluster/backup", NULL, true,
                   "{\"dir\": \"/tmp/x\"}");
    snprintf(dir, sizeof dir, "%s/no-such-parent/backup", f->dir);
    backup_body(body, sizeof body, dir);
    assert_refused(f, 400, "parent directory", "POST", "/api/v1/cluster/backup", NULL, true, body);
    snprintf(path, sizeof path, "%s/no-such-parent", f->dir);
    assert_false(path_exists(path));

    /* A directory that is not empty, or a file, is left as it was. */
    snprintf(dir, sizeof dir, "%s/full", f->dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    snprintf(path, sizeof path, "%s/keep.txt", dir);
    file = fopen(path, "w");
    assert_non_null(file);
    fputs("keep", file);
    fclose(file);
    backup_body(body, sizeof body, dir);
    assert_refused(f, 409, "not empty", "POST", "/api/v1/cluster/backup", NULL, true, body);
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    assert_false(path_exists(path));
    snprintf(path, sizeof path, "%s/keep.txt", dir);
    backup_body(body, sizeof body, path);
    assert_refused(f, 409, "not a directory", "POST", "/api/v1/cluster/backup", NULL, true, body);
    assert_refused(f, 405, "method not allowed", "GET", "/api/v1/cluster/backup", NULL, true, NULL);
}

static void on_admin_closed(void *arg)
{
    *(bool *)arg = true;
}

static void backup_in_flight_holds_admin_close_and_a_second_backup(void **state)
{
    struct fixture *f = *state;
    char dir[300], body[400], message[256];
    bool is_admin_closed = false;
    struct admin *second;

    /* A stale request queues the copy at once: it is on the thread pool
     * when a second backup arrives and when the admin closes, as at
     * shutdown. */
    assert_int_equal(admin_new(&f->admin->opts, &second), 0);
    second->respond = on_answer;
    second->respond_arg = f;
    snprintf(dir, sizeof dir, "%s/in-flight", f->dir);
    backup_body(body, sizeof body, dir);
    f->has_answer = false;
    admin_handle(second, request_new(true, "POST", "/api/v1/cluster/backup?consistent=false", NULL,
                                     body, strlen(body)));
    assert_false(f->has_answer);
    snprintf(dir, sizeof dir, "%s/in-flight-2", f->dir);
    backup_body(body, sizeof body, dir);
    admin_handle(second, request_new(true, "POST", "/api/v1/cluster/backup?consistent=false", NULL,
                                     body, strlen(body)));
    assert_true(f->has_answer);
    assert_int_equal(f->status, 409);
    assert_non_null(strstr(answer_message(f, message, sizeof message), "already running"));
    assert_false(path_exists(dir));

    f->has_answer = false;
    admin_close(second, on_admin_closed, &is_admin_closed);
    assert_false(is_admin_closed); /* the store must stay open for the copy */
    run_until(f, &is_admin_closed);
    assert_true(f->has_answer); /* answered before the close completed */
    assert_int_equal(f->status, 200);
}

/* ---- a replica without quorum ---- */

static void without_quorum_writes_fail_fast_and_stale_reads_work(void **state)
{
    struct fixture *f = *state;
    json_t *j;

    assert_int_equal(request(f, "GET", "/health", NULL), 200);
    assert_int_equal(request(f, "GET", "/ready", NULL), 503);
    j = answer_json(f);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "fail");
    assert_string_equal(json_string_value(json_array_get(json_object_get(j, "reasons"), 0)),
                        "no leader");
    json_decref(j);

    assert_refused(f, 503, "nothing was applied; reads with ?consistent=false", "POST",
                   "/api/v1/user", NULL, true, "{\"name\": \"ivan\"}");
    assert_refused(f, 503, "consistent read failed: no leader", "GET", "/api/v1/user", NULL, true,
                   NULL);
    assert_int_equal(request(f, "GET", "/api/v1/user?consistent=false", NULL), 200);
    assert_string_equal(f->body, "{\"users\":[]}");
    assert_int_equal(request(f, "GET", "/api/v1/cluster/status", NULL), 200);
    /* Bad input is still refused first, without waiting for a leader. */
    assert_refused(f, 400, "unknown field", "POST", "/api/v1/user", NULL, true,
                   "{\"nam\": \"ivan\"}");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(health_and_ready_answer_load_balancers),
        cmocka_unit_test(unknown_routes_are_404_and_wrong_methods_405),
        cmocka_unit_test(users_are_created_and_listed_in_headscale_shape),
        cmocka_unit_test(bad_request_bodies_are_400_and_change_nothing),
        cmocka_unit_test(duplicate_user_names_are_409_and_change_nothing),
        cmocka_unit_test(invalid_tags_are_400_and_change_nothing),
        cmocka_unit_test(invalid_routes_are_400_and_change_nothing),
        cmocka_unit_test(unknown_node_ids_are_404_and_change_nothing),
        cmocka_unit_test(debug_nodes_can_be_renamed_tagged_expired_and_deleted),
        cmocka_unit_test(tcp_requests_need_a_valid_api_key),
        cmocka_unit_test(policy_is_a_compare_and_set_register),
        cmocka_unit_test(preauthkey_tokens_are_shown_once),
        cmocka_unit_test(apikeys_can_be_created_expired_and_deleted),
        cmocka_unit_test(cluster_status_reports_role_and_state_hash),
        cmocka_unit_test(snapshots_restore_an_earlier_state),
        cmocka_unit_test(peer_route_answers_only_authenticated_replicas),
        cmocka_unit_test(snapshot_in_flight_survives_admin_free),
        cmocka_unit_test(backup_copies_the_state_at_its_applied_index),
        cmocka_unit_test(backup_refusals_write_nothing),
        cmocka_unit_test(backup_in_flight_holds_admin_close_and_a_second_backup),
    };

    const struct CMUnitTest minority_tests[] = {
        cmocka_unit_test(without_quorum_writes_fail_fast_and_stale_reads_work),
    };
    int failed = cmocka_run_group_tests_name("admin", tests, setup, teardown);

    return failed +
           cmocka_run_group_tests_name("admin_minority", minority_tests, setup_minority, teardown);
}
