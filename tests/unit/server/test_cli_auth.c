/* tests/unit/server/test_cli_auth.c: `concord auth` against a real replica
 * (the fixture of test_cli_e2e.c: a single-replica cluster, the admin
 * handler and net/'s HTTP server on a Unix socket). The CLI blocks, so the
 * loop runs on a second thread while a command runs; between commands the
 * test thread owns the loop and proposes pending registrations itself. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "server/admin/admin.h"
#include "server/cli/cli_internal.h"
#include "tests/lib/testdir.h"

#define WAIT_MS 10000
/* 2100-01-01T00:00:00Z */
#define FAR_FUTURE_MS 4102444800000LL

struct e2e {
    char dir[256];
    char socket_path[300];
    uv_loop_t loop;
    uv_async_t stop;
    pthread_t thread;
    struct store *store;
    struct cluster *cluster;
    struct admin *admin;
    struct admin_peer_client peer;
    struct net_http_server *server;
    unsigned closing;
    bool is_submitted;
    /* The last command's output. */
    char *out;
    size_t out_len;
    char *err;
    size_t err_len;
};

static uint64_t now_ms(uv_loop_t *loop)
{
    uv_update_time(loop);
    return uv_now(loop);
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

static void on_stop(uv_async_t *async)
{
    uv_stop(async->loop);
}

static void *loop_thread(void *arg)
{
    struct e2e *e = arg;

    uv_run(&e->loop, UV_RUN_DEFAULT);
    return NULL;
}

/* Lends the loop to a thread while the CLI runs `concord <words>`. */
static int cli(struct e2e *e, const char *words)
{
    struct cli c = {.output = CLI_OUTPUT_TABLE, .timeout_ms = WAIT_MS};
    char buf[1024], *argv[24];
    int argc = 0, rv;

    free(e->out);
    free(e->err);
    c.socket_path = e->socket_path;
    c.out = open_memstream(&e->out, &e->out_len);
    c.err = open_memstream(&e->err, &e->err_len);
    assert_non_null(c.out);
    assert_non_null(c.err);
    snprintf(buf, sizeof buf, "concord %s", words);
    for (char *tok = strtok(buf, " "); tok != NULL && argc < 24; tok = strtok(NULL, " "))
        argv[argc++] = tok;
    assert_int_equal(pthread_create(&e->thread, NULL, loop_thread, e), 0);
    rv = cli_run(&c, argc, argv);
    uv_async_send(&e->stop);
    assert_int_equal(pthread_join(e->thread, NULL), 0);
    fclose(c.out);
    fclose(c.err);
    return rv;
}

static void assert_cli(struct e2e *e, int want, const char *words, const char *out_fragment,
                       const char *err_fragment)
{
    int rv = cli(e, words);

    if (rv != want || (out_fragment != NULL && strstr(e->out, out_fragment) == NULL) ||
        (err_fragment != NULL && strstr(e->err, err_fragment) == NULL))
        fail_msg("concord %s: exit %d (want %d)\nstdout: %s\nstderr: %s", words, rv, want, e->out,
                 e->err);
}

static int setup(void **state)
{
    struct e2e *e = calloc(1, sizeof *e);
    struct cluster_options co = {0};
    struct cluster_member m = {.id = 1, .is_voter = true};
    struct admin_options ao = {0};
    struct net_http_server_options so = {0};
    struct store_options sto = {0};
    char path[300], raft_dir[300], errmsg[256];
    struct cluster_status st;
    uint64_t deadline;

    assert_non_null(e);
    assert_true(sodium_init() >= 0);
    assert_int_equal(testdir_make(e->dir, sizeof e->dir), 0);
    assert_int_equal(uv_loop_init(&e->loop), 0);
    assert_int_equal(uv_async_init(&e->loop, &e->stop, on_stop), 0);
    snprintf(path, sizeof path, "%s/store", e->dir);
    snprintf(raft_dir, sizeof raft_dir, "%s/raft", e->dir);
    snprintf(e->socket_path, sizeof e->socket_path, "%s/admin.sock", e->dir);
    sto.dir = path;
    sto.map_size_bytes = 64 << 20;
    assert_int_equal(store_open(&sto, &e->store, errmsg), 0);

    free_port(m.raft_address, sizeof m.raft_address);
    free_port(m.http_address, sizeof m.http_address);
    e->peer.loop = &e->loop;
    co.id = 1;
    co.raft_address = m.raft_address;
    co.http_address = m.http_address;
    co.raft_dir = raft_dir;
    co.store = e->store;
    co.transport.send = admin_peer_send;
    co.transport.arg = &e->peer;
    co.log = on_log;
    if (cluster_bootstrap(&co, &m, 1, errmsg) != 0 ||
        cluster_new(&e->loop, &co, &e->cluster, errmsg) != 0 ||
        cluster_start(e->cluster, errmsg) != 0)
        fail_msg("cluster: %s", errmsg);
    ao.cluster = e->cluster;
    ao.store = e->store;
    ao.loop = &e->loop;
    ao.ready_max_apply_lag = 100;
    assert_int_equal(admin_new(&ao, &e->admin), 0);

    so.unix_path = e->socket_path;
    so.unix_mode = 0600;
    so.max_body_bytes = 1 << 20;
    so.max_header_bytes = 65536;
    so.idle_timeout_ms = 30000;
    so.handler = admin_handle;
    so.handler_arg = e->admin;
    if (net_http_server_new(&e->loop, &so, &e->server, errmsg) != 0)
        fail_msg("server: %s", errmsg);

    deadline = now_ms(&e->loop) + WAIT_MS;
    for (;;) {
        cluster_status_get(e->cluster, &st);
        if (st.role == CLUSTER_ROLE_LEADER && st.commit_index > 0 &&
            st.applied_index >= st.commit_index)
            break;
        if (now_ms(&e->loop) > deadline)
            fail_msg("no leader elected");
        uv_run(&e->loop, UV_RUN_ONCE);
    }
    *state = e;
    return 0;
}

static void on_closed(void *arg)
{
    struct e2e *e = arg;

    e->closing--;
}

static void on_stop_closed(uv_handle_t *h)
{
    struct e2e *e = h->data;

    e->closing--;
}

static int teardown(void **state)
{
    struct e2e *e = *state;
    uint64_t deadline = now_ms(&e->loop) + WAIT_MS;

    e->closing = 3;
    e->stop.data = e;
    net_http_server_close(e->server, on_closed, e);
    cluster_close(e->cluster, on_closed, e);
    uv_close((uv_handle_t *)&e->stop, on_stop_closed);
    while (e->closing > 0) {
        if (now_ms(&e->loop) > deadline)
            fail_msg("teardown timed out");
        uv_run(&e->loop, UV_RUN_ONCE);
    }
    uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&e->loop), 0);
    admin_free(e->admin);
    store_close(e->store);
    testdir_remove(e->dir);
    free(e->out);
    free(e->err);
    free(e);
    return 0;
}

static void on_submitted(void *arg, int status, const Concord__CommandResult *result)
{
    struct e2e *e = arg;

    assert_int_equal(status, CLUSTER_OK);
    assert_int_equal(result->code, CLUSTER_RESULT_OK);
    e->is_submitted = true;
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

/* Proposes a pending registration as the control server would, on the test
 * thread (no command is running, so the loop is the test's). */
static void pending_add(struct e2e *e, const char *auth_id, const char *hostname, uint8_t seed)
{
    Concord__Command *cmd = calloc(1, sizeof *cmd);
    Concord__AddRegistration *op = calloc(1, sizeof *op);
    Concord__PendingRegistration *p = calloc(1, sizeof *p);
    uint64_t deadline = now_ms(&e->loop) + WAIT_MS;

    assert_non_null(cmd);
    assert_non_null(op);
    assert_non_null(p);
    concord__command__init(cmd);
    concord__add_registration__init(op);
    concord__pending_registration__init(p);
    cmd->proposed_unix_ms = (int64_t)time(NULL) * 1000;
    cmd->actor = str_copy("control");
    cmd->op_case = CONCORD__COMMAND__OP_ADD_REGISTRATION;
    cmd->add_registration = op;
    op->registration = p;
    p->auth_id = str_copy(auth_id);
    p->hostname = str_copy(hostname);
    p->machine_key = (ProtobufCBinaryData){.len = 32, .data = bytes_filled(seed)};
    p->node_key = (ProtobufCBinaryData){.len = 32, .data = bytes_filled((uint8_t)(seed + 0x80))};
    p->expires_unix_ms = FAR_FUTURE_MS;
    e->is_submitted = false;
    assert_int_equal(cluster_submit(e->cluster, cmd, on_submitted, e), 0);
    while (!e->is_submitted) {
        if (now_ms(&e->loop) > deadline)
            fail_msg("submission timed out");
        uv_run(&e->loop, UV_RUN_ONCE);
    }
}

/* ---- tests ---- */

static void auth_list_shows_pending_registrations(void **state)
{
    struct e2e *e = *state;
    json_t *j;

    assert_cli(e, 0, "auth list", "Auth ID", NULL);
    assert_null(strstr(e->out, "cli-list"));
    pending_add(e, "cli-list", "kiosk", 0x61);
    assert_cli(e, 0, "auth ls", "cli-list", NULL);
    assert_non_null(strstr(e->out, "kiosk"));
    assert_non_null(
        strstr(e->out, "mkey:6161616161616161616161616161616161616161616161616161616161616161"));
    assert_non_null(strstr(e->out, "2100-01-01T00:00:00Z"));
    assert_cli(e, 0, "auth list -o json", NULL, NULL);
    j = json_loads(e->out, 0, NULL);
    assert_int_equal(json_array_size(j), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(j, 0), "authId")),
                        "cli-list");
    json_decref(j);
    assert_cli(e, 0, "auth reject --auth-id cli-list", "Registration rejected", NULL);
    assert_cli(e, 0, "--stale auth list -o json", "[]", NULL);
}

static void auth_register_approves_on_any_output_format(void **state)
{
    struct e2e *e = *state;
    json_t *j;

    assert_cli(e, 0, "users create frank", "User created", NULL);
    pending_add(e, "cli-reg-1", "desk", 0x71);
    assert_cli(e, 0, "auth register --auth-id cli-reg-1 -u frank", "Node registered", NULL);
    assert_non_null(strstr(e->out, "desk"));
    assert_non_null(strstr(e->out, "frank"));
    assert_cli(e, 0, "nodes list -u frank", "desk", NULL);
    assert_cli(e, 1, "auth register --auth-id cli-reg-1 --user frank", NULL,
               "Error: no pending registration with id cli-reg-1");

    pending_add(e, "cli-reg-2", "lab", 0x72);
    assert_cli(e, 0, "auth register --auth-id=cli-reg-2 --user frank -o json", NULL, NULL);
    j = json_loads(e->out, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "name")), "lab");
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "user"), "name")),
                        "frank");
    json_decref(j);

    pending_add(e, "cli-reg-3", "rack", 0x73);
    assert_cli(e, 1, "auth register --auth-id cli-reg-3 -u nobody", NULL,
               "Error: user \"nobody\" not found");
    assert_cli(e, 0, "auth register --auth-id cli-reg-3 -u frank -o yaml",
               "registerMethod: REGISTER_METHOD_CLI", NULL);
}

static void auth_reject_and_bad_input_fail_with_the_usual_exit_codes(void **state)
{
    struct e2e *e = *state;

    pending_add(e, "cli-rej", "spare", 0x74);
    assert_cli(e, 0, "auth reject --auth-id cli-rej -o json", "{}", NULL);
    assert_cli(e, 1, "auth reject --auth-id cli-rej", NULL,
               "Error: no pending registration with id cli-rej");
    assert_cli(e, 1, "auth reject --auth-id bad/id", NULL,
               "Error: authId may only contain letters, digits, - and _");
    assert_cli(e, 2, "auth register --auth-id cli-rej", NULL, "Error: give --auth-id and --user");
    assert_non_null(strstr(e->err, "Usage: concord auth register"));
    assert_cli(e, 2, "auth reject", NULL, "Error: give --auth-id");
    assert_cli(e, 2, "auth reject cli-rej", NULL, "this command takes no arguments");
    assert_cli(e, 2, "auth frobnicate", NULL, "unknown command \"auth frobnicate\"");
    assert_cli(e, 0, "help auth register", "--auth-id ID", NULL);
    assert_cli(e, 0, "help", "approve or reject clients waiting to log in", NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(auth_list_shows_pending_registrations),
        cmocka_unit_test(auth_register_approves_on_any_output_format),
        cmocka_unit_test(auth_reject_and_bad_input_fail_with_the_usual_exit_codes),
    };

    return cmocka_run_group_tests_name("cli_auth", tests, setup, teardown);
}
