/* tests/unit/server/test_admin_auth.c: /api/v1/auth (approving and rejecting
 * interactive registrations) against a real store and a real single-replica
 * cluster, with requests parsed from raw HTTP text and answered into the
 * test (the fixture of test_admin.c). Pending registrations are proposed
 * directly as AddRegistration commands, as the control server does. Every
 * refusal is checked to leave the replicated state unchanged. */
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
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "server/admin/admin_internal.h"
#include "server/net/request.h"
#include "tests/lib/testdir.h"

#define WAIT_MS 10000
/* 2100-01-01T00:00:00Z: far enough that no registration expires mid-test. */
#define FAR_FUTURE_MS 4102444800000LL

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
    char *body;
    /* The last direct submission. */
    bool is_submitted;
    int submit_status;
    uint32_t submit_code;
};

/* ---- plumbing ---- */

static void on_answer(void *arg, struct net_http_request *req, int status, const char *content_type,
                      const char *extra_headers, const void *body, size_t len)
{
    struct fixture *f = arg;

    (void)extra_headers;
    assert_false(f->has_answer); /* exactly one answer per request */
    assert_string_equal(content_type, "application/json");
    f->has_answer = true;
    f->status = status;
    free(f->body);
    f->body = malloc(len + 1);
    assert_non_null(f->body);
    if (len > 0)
        memcpy(f->body, body, len);
    f->body[len] = '\0';
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

/* Sends one request as if it came from the Unix socket and waits for its
 * answer; returns the HTTP status. */
static int request(struct fixture *f, const char *method, const char *target, const char *body)
{
    const struct net_request_limits limits = {
        .max_header_bytes = 65536, .max_body_bytes = 1 << 20, .is_local = true};
    size_t body_len = body != NULL ? strlen(body) : 0, used, n;
    struct net_request_parser *p;
    struct net_http_request *req = NULL;
    char head[512];
    uint8_t *text;

    n = (size_t)snprintf(head, sizeof head,
                         "%s %s HTTP/1.1\r\nHost: test\r\nContent-Length: %zu\r\n\r\n", method,
                         target, body_len);
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

    f->has_answer = false;
    admin_handle(f->admin, req);
    run_until(f, &f->has_answer);
    return f->status;
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

static void state_hash(struct fixture *f, uint8_t out[32])
{
    struct store_txn *t;

    assert_int_equal(store_txn_begin(f->store, false, &t), 0);
    assert_int_equal(store_state_hash(t, out), 0);
    store_txn_abort(t);
}

/* Asserts the request is refused with `status` and a message containing
 * `fragment`, and that the replicated state did not change. */
static void assert_refused(struct fixture *f, int status, const char *fragment, const char *method,
                           const char *target, const char *body)
{
    uint8_t before[32], after[32];
    json_t *j;
    const char *message;

    state_hash(f, before);
    if (request(f, method, target, body) != status)
        fail_msg("%s %s %s: got %d, want %d: %s", method, target, body != NULL ? body : "",
                 f->status, status, f->body);
    j = answer_json(f);
    message = json_string_value(json_object_get(j, "message"));
    if (message == NULL || strstr(message, fragment) == NULL)
        fail_msg("%s %s %s: message \"%s\" lacks \"%s\"", method, target, body != NULL ? body : "",
                 message != NULL ? message : "(none)", fragment);
    json_decref(j);
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

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    struct cluster_options co = {0};
    struct cluster_member m = {.id = 1, .is_voter = true};
    struct admin_options ao = {0};
    struct store_options so = {0};
    char path[300], raft_dir[300], errmsg[256];
    uint64_t deadline;

    assert_non_null(f);
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
    snprintf(m.raft_address, sizeof m.raft_address, "%s", f->raft_address);
    snprintf(m.http_address, sizeof m.http_address, "%s", f->http_address);
    if (cluster_bootstrap(&co, &m, 1, errmsg) != 0)
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

    deadline = now_ms(&f->loop) + WAIT_MS;
    while (!is_leader(f)) {
        if (now_ms(&f->loop) > deadline)
            fail_msg("no leader elected");
        uv_run(&f->loop, UV_RUN_ONCE);
    }
    *state = f;
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

/* ---- state helpers ---- */

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

static void on_submitted(void *arg, int status, const Concord__CommandResult *result)
{
    struct fixture *f = arg;

    f->is_submitted = true;
    f->submit_status = status;
    f->submit_code = status == CLUSTER_OK ? result->code : 0;
}

static uint8_t *bytes_filled(uint8_t byte)
{
    uint8_t *b = malloc(32);

    assert_non_null(b);
    memset(b, byte, 32);
    return b;
}

static char *str_copy(const char *s)
{
    char *d = strdup(s);

    assert_non_null(d);
    return d;
}

/* Proposes a pending registration as the control server would: machine key
 * all `seed` bytes, node key all `seed + 0x80` bytes. */
static void pending_add(struct fixture *f, const char *auth_id, const char *hostname, uint8_t seed,
                        int64_t expires_unix_ms)
{
    Concord__Command *cmd = calloc(1, sizeof *cmd);
    Concord__AddRegistration *op = calloc(1, sizeof *op);
    Concord__PendingRegistration *p = calloc(1, sizeof *p);

    assert_non_null(cmd);
    assert_non_null(op);
    assert_non_null(p);
    concord__command__init(cmd);
    concord__add_registration__init(op);
    concord__pending_registration__init(p);
    cmd->proposed_unix_ms = admin_now_unix_ms();
    cmd->actor = str_copy("control");
    cmd->op_case = CONCORD__COMMAND__OP_ADD_REGISTRATION;
    cmd->add_registration = op;
    op->registration = p;
    p->auth_id = str_copy(auth_id);
    p->hostname = str_copy(hostname);
    p->machine_key = (ProtobufCBinaryData){.len = 32, .data = bytes_filled(seed)};
    p->node_key = (ProtobufCBinaryData){.len = 32, .data = bytes_filled((uint8_t)(seed + 0x80))};
    p->expires_unix_ms = expires_unix_ms;
    f->is_submitted = false;
    assert_int_equal(cluster_submit(f->cluster, cmd, on_submitted, f), 0);
    run_until(f, &f->is_submitted);
    assert_int_equal(f->submit_status, CLUSTER_OK);
    assert_int_equal(f->submit_code, CLUSTER_RESULT_OK);
}

static bool is_pending(struct fixture *f, const char *auth_id)
{
    Concord__PendingRegistration *p = NULL;
    struct store_txn *t;
    int rv;

    assert_int_equal(store_txn_begin(f->store, false, &t), 0);
    rv = store_registration_get(t, auth_id, &p);
    store_txn_abort(t);
    assert_true(rv == 0 || rv == STORE_NOTFOUND);
    store_record_free(p);
    return rv == 0;
}

/* The stored node with this id, as a record (free with store_record_free). */
static Concord__Node *node_stored(struct fixture *f, uint64_t id)
{
    Concord__Node *n = NULL;
    struct store_txn *t;

    assert_int_equal(store_txn_begin(f->store, false, &t), 0);
    assert_int_equal(store_node_get(t, id, &n), 0);
    store_txn_abort(t);
    return n;
}

static const char *member_string(const json_t *object, const char *path_a, const char *path_b)
{
    const json_t *v = json_object_get(object, path_a);

    if (path_b != NULL)
        v = json_object_get(v, path_b);
    return json_string_value(v);
}

/* ---- tests ---- */

static void pending_registrations_are_listed_in_auth_id_order(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(request(f, "GET", "/api/v1/auth/pending", NULL), 200);
    assert_string_equal(f->body, "{\"registrations\":[]}");
    pending_add(f, "list-b", "beta", 0x01, FAR_FUTURE_MS);
    pending_add(f, "list-a", "alpha", 0x02, FAR_FUTURE_MS + 1500);
    assert_int_equal(request(f, "GET", "/api/v1/auth/pending?consistent=false", NULL), 200);
    assert_string_equal(
        f->body,
        "{\"registrations\":["
        "{\"authId\":\"list-a\",\"hostname\":\"alpha\","
        "\"machineKey\":\"mkey:0202020202020202020202020202020202020202020202020202020202020202\","
        "\"nodeKey\":\"nodekey:8282828282828282828282828282828282828282828282828282828282828282\","
        "\"expiry\":\"2100-01-01T00:00:01.500Z\"},"
        "{\"authId\":\"list-b\",\"hostname\":\"beta\","
        "\"machineKey\":\"mkey:0101010101010101010101010101010101010101010101010101010101010101\","
        "\"nodeKey\":\"nodekey:8181818181818181818181818181818181818181818181818181818181818181\","
        "\"expiry\":\"2100-01-01T00:00:00Z\"}]}");
    assert_int_equal(request(f, "POST", "/api/v1/auth/reject", "{\"authId\": \"list-a\"}"), 200);
    assert_int_equal(request(f, "POST", "/api/v1/auth/reject", "{\"authId\": \"list-b\"}"), 200);
    assert_int_equal(request(f, "GET", "/api/v1/auth/pending", NULL), 200);
    assert_string_equal(f->body, "{\"registrations\":[]}");
}

static void register_approves_a_pending_registration_for_a_user(void **state)
{
    struct fixture *f = *state;
    uint64_t alice = user_create(f, "alice"), node_id;
    char target[64], body[128];
    Concord__Node *n;
    json_t *j, *node;

    pending_add(f, "reg-A_1", "laptop", 0x11, FAR_FUTURE_MS);
    assert_int_equal(request(f, "POST", "/api/v1/auth/register",
                             "{\"authId\": \"reg-A_1\", \"user\": \"alice\"}"),
                     200);
    j = answer_json(f);
    node = json_object_get(j, "node");
    assert_non_null(node);
    assert_int_equal(admin_parse_id(member_string(node, "id", NULL), &node_id), 0);
    assert_string_equal(member_string(node, "name", NULL), "laptop");
    assert_string_equal(member_string(node, "givenName", NULL), "laptop");
    assert_string_equal(member_string(node, "user", "name"), "alice");
    assert_string_equal(member_string(node, "registerMethod", NULL), "REGISTER_METHOD_CLI");
    assert_string_equal(member_string(node, "machineKey", NULL),
                        "mkey:1111111111111111111111111111111111111111111111111111111111111111");
    assert_string_equal(member_string(node, "nodeKey", NULL),
                        "nodekey:9191919191919191919191919191919191919191919191919191919191919191");
    assert_int_equal(json_array_size(json_object_get(node, "ipAddresses")), 2);
    json_decref(j);

    /* Replicated: the node is stored for alice, the registration is gone. */
    n = node_stored(f, node_id);
    assert_int_equal(n->user_id, alice);
    assert_string_equal(n->hostname, "laptop");
    store_record_free(n);
    assert_false(is_pending(f, "reg-A_1"));
    snprintf(target, sizeof target, "/api/v1/node/%llu", (unsigned long long)node_id);
    assert_int_equal(request(f, "GET", target, NULL), 200);
    j = answer_json(f);
    assert_string_equal(member_string(json_object_get(j, "node"), "user", "name"), "alice");
    json_decref(j);

    /* A numeric user is an id; snake_case field names work too. */
    pending_add(f, "reg-A_2", "phone", 0x12, FAR_FUTURE_MS);
    snprintf(body, sizeof body, "{\"auth_id\": \"reg-A_2\", \"user\": \"%llu\"}",
             (unsigned long long)alice);
    assert_int_equal(request(f, "POST", "/api/v1/auth/register", body), 200);
    j = answer_json(f);
    assert_string_equal(member_string(json_object_get(j, "node"), "user", "name"), "alice");
    assert_string_equal(member_string(json_object_get(j, "node"), "name", NULL), "phone");
    json_decref(j);
    assert_false(is_pending(f, "reg-A_2"));

    /* A null member is an absent one, under either name. */
    pending_add(f, "reg-A_3", "watch", 0x13, FAR_FUTURE_MS);
    assert_int_equal(request(f, "POST", "/api/v1/auth/register",
                             "{\"authId\": null, \"auth_id\": \"reg-A_3\", \"user\": \"alice\"}"),
                     200);
    assert_false(is_pending(f, "reg-A_3"));

    /* Approved once: a second approval finds nothing. */
    assert_refused(f, 404, "no pending registration with id reg-A_1", "POST",
                   "/api/v1/auth/register", "{\"authId\": \"reg-A_1\", \"user\": \"alice\"}");
}

static void unknown_auth_ids_and_users_are_404_and_change_nothing(void **state)
{
    struct fixture *f = *state;

    user_create(f, "bob");
    assert_refused(f, 404, "no pending registration with id never-issued", "POST",
                   "/api/v1/auth/register", "{\"authId\": \"never-issued\", \"user\": \"bob\"}");
    pending_add(f, "reg-B", "desktop", 0x21, FAR_FUTURE_MS);
    assert_refused(f, 404, "user \"nobody\" not found", "POST", "/api/v1/auth/register",
                   "{\"authId\": \"reg-B\", \"user\": \"nobody\"}");
    assert_refused(f, 404, "user \"999999\" not found", "POST", "/api/v1/auth/register",
                   "{\"authId\": \"reg-B\", \"user\": \"999999\"}");
    assert_true(is_pending(f, "reg-B"));
    assert_refused(f, 404, "no pending registration with id never-issued", "POST",
                   "/api/v1/auth/reject", "{\"authId\": \"never-issued\"}");
    assert_true(is_pending(f, "reg-B"));
}

static void bad_bodies_are_400_and_change_nothing(void **state)
{
    struct fixture *f = *state;
    char body[256], long_id[66];

    user_create(f, "carol");
    pending_add(f, "reg-C", "tablet", 0x31, FAR_FUTURE_MS);
    assert_refused(f, 400, "malformed JSON", "POST", "/api/v1/auth/register", "{\"authId\": ");
    assert_refused(f, 400, "must be a JSON object", "POST", "/api/v1/auth/register", "[]");
    assert_refused(f, 400, "\"authId\" is required", "POST", "/api/v1/auth/register", NULL);
    assert_refused(f, 400, "\"authId\" is required", "POST", "/api/v1/auth/register",
                   "{\"user\": \"carol\"}");
    assert_refused(f, 400, "\"authId\" is required", "POST", "/api/v1/auth/register",
                   "{\"authId\": \"\", \"user\": \"carol\"}");
    assert_refused(f, 400, "\"authId\" is required", "POST", "/api/v1/auth/register",
                   "{\"authId\": null, \"user\": \"carol\"}");
    assert_refused(f, 400, "\"user\" is required", "POST", "/api/v1/auth/register",
                   "{\"authId\": \"reg-C\"}");
    assert_refused(f, 400, "\"user\" is required", "POST", "/api/v1/auth/register",
                   "{\"authId\": \"reg-C\", \"user\": \"\"}");
    assert_refused(f, 400, "\"user\" must be a string", "POST", "/api/v1/auth/register",
                   "{\"authId\": \"reg-C\", \"user\": 1}");
    assert_refused(f, 400, "\"authId\" must be a string", "POST", "/api/v1/auth/register",
                   "{\"authId\": 7, \"user\": \"carol\"}");
    assert_refused(f, 400, "unknown field \"key\"", "POST", "/api/v1/auth/register",
                   "{\"authId\": \"reg-C\", \"user\": \"carol\", \"key\": \"x\"}");
    assert_refused(f, 400, "\"authId\" given twice", "POST", "/api/v1/auth/register",
                   "{\"authId\": \"reg-C\", \"auth_id\": \"reg-C\", \"user\": \"carol\"}");
    assert_refused(f, 400, "only contain letters, digits, - and _", "POST", "/api/v1/auth/register",
                   "{\"authId\": \"reg/C\", \"user\": \"carol\"}");
    assert_refused(f, 400, "only contain letters, digits, - and _", "POST", "/api/v1/auth/register",
                   "{\"authId\": \"reg C\", \"user\": \"carol\"}");
    assert_refused(f, 400, "only contain letters, digits, - and _", "POST", "/api/v1/auth/reject",
                   "{\"authId\": \"reg.C\"}");
    assert_refused(f, 400, "\"authId\" is required", "POST", "/api/v1/auth/reject", "{}");

    /* 65 characters are too many; 64 pass validation and reach the FSM. */
    memset(long_id, 'a', 65);
    long_id[65] = '\0';
    snprintf(body, sizeof body, "{\"authId\": \"%s\", \"user\": \"carol\"}", long_id);
    assert_refused(f, 400, "at most 64 characters", "POST", "/api/v1/auth/register", body);
    snprintf(body, sizeof body, "{\"authId\": \"%s\"}", long_id);
    assert_refused(f, 400, "at most 64 characters", "POST", "/api/v1/auth/reject", body);
    long_id[64] = '\0';
    snprintf(body, sizeof body, "{\"authId\": \"%s\", \"user\": \"carol\"}", long_id);
    assert_refused(f, 404, "no pending registration", "POST", "/api/v1/auth/register", body);
    assert_true(is_pending(f, "reg-C"));
}

static void reject_discards_a_pending_registration(void **state)
{
    struct fixture *f = *state;

    user_create(f, "dave");
    pending_add(f, "reg-D", "server", 0x41, FAR_FUTURE_MS);
    assert_true(is_pending(f, "reg-D"));
    assert_int_equal(request(f, "POST", "/api/v1/auth/reject", "{\"auth_id\": \"reg-D\"}"), 200);
    assert_string_equal(f->body, "{}");
    assert_false(is_pending(f, "reg-D"));
    assert_refused(f, 404, "no pending registration with id reg-D", "POST", "/api/v1/auth/reject",
                   "{\"authId\": \"reg-D\"}");
    assert_refused(f, 404, "no pending registration with id reg-D", "POST", "/api/v1/auth/register",
                   "{\"authId\": \"reg-D\", \"user\": \"dave\"}");
}

static void expired_registrations_are_412_and_not_listed(void **state)
{
    struct fixture *f = *state;

    user_create(f, "erin");
    /* The next AddRegistration would sweep it: nothing else is added here. */
    pending_add(f, "reg-E", "old", 0x51, admin_now_unix_ms() - 1000);
    assert_true(is_pending(f, "reg-E"));
    assert_int_equal(request(f, "GET", "/api/v1/auth/pending", NULL), 200);
    assert_null(strstr(f->body, "reg-E"));
    assert_refused(f, 412, "registration reg-E has expired", "POST", "/api/v1/auth/register",
                   "{\"authId\": \"reg-E\", \"user\": \"erin\"}");
    assert_true(is_pending(f, "reg-E"));
    assert_int_equal(request(f, "POST", "/api/v1/auth/reject", "{\"authId\": \"reg-E\"}"), 200);
    assert_false(is_pending(f, "reg-E"));
}

static void auth_routes_answer_only_their_methods(void **state)
{
    struct fixture *f = *state;

    assert_refused(f, 405, "method not allowed", "GET", "/api/v1/auth/register", NULL);
    assert_refused(f, 405, "method not allowed", "DELETE", "/api/v1/auth/reject", NULL);
    assert_refused(f, 405, "method not allowed", "POST", "/api/v1/auth/pending", "{}");
    assert_refused(f, 501, "not implemented", "POST", "/api/v1/auth/approve",
                   "{\"authId\": \"x\"}");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(pending_registrations_are_listed_in_auth_id_order),
        cmocka_unit_test(register_approves_a_pending_registration_for_a_user),
        cmocka_unit_test(unknown_auth_ids_and_users_are_404_and_change_nothing),
        cmocka_unit_test(bad_bodies_are_400_and_change_nothing),
        cmocka_unit_test(reject_discards_a_pending_registration),
        cmocka_unit_test(expired_registrations_are_412_and_not_listed),
        cmocka_unit_test(auth_routes_answer_only_their_methods),
    };

    return cmocka_run_group_tests_name("admin_auth", tests, setup, teardown);
}
