/* tests/unit/server/test_cli_e2e.c: the CLI, and admin_peer_send, against a
 * real replica: a single-replica cluster, the admin handler and net/'s HTTP
 * server on a Unix socket and a loopback TCP port. The CLI blocks, so the loop runs on a
 * second thread while a command runs; the loop is only ever touched by one
 * thread at a time (handed over by pthread_create and pthread_join, stopped
 * through a uv_async). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "server/admin/admin.h"
#include "server/cli/cli_internal.h"
#include "storage/secret.h"
#include "tests/lib/testdir.h"

#define WAIT_MS 10000

struct e2e {
    char dir[256];
    char socket_path[300];
    char address[64];
    uv_loop_t loop;
    uv_async_t stop;
    pthread_t thread;
    struct store *store;
    struct cluster *cluster;
    struct admin *admin;
    struct admin_peer_client peer;
    struct net_http_server *server;
    unsigned closing;
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
    char path[300], raft_dir[300], tcp[64], errmsg[256];
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
    free_port(tcp, sizeof tcp);
    snprintf(m.http_address, sizeof m.http_address, "%s", tcp);
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

    so.tcp_address = tcp;
    so.unix_path = e->socket_path;
    so.unix_mode = 0600;
    so.max_body_bytes = 64 << 20;
    so.max_header_bytes = 65536;
    so.idle_timeout_ms = 30000;
    so.handler = admin_handle;
    so.handler_arg = e->admin;
    if (net_http_server_new(&e->loop, &so, &e->server, errmsg) != 0)
        fail_msg("server: %s", errmsg);
    snprintf(e->address, sizeof e->address, "http://127.0.0.1:%d", net_http_server_port(e->server));

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

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* ---- tests ---- */

static void cli_manages_users_over_the_socket(void **state)
{
    struct e2e *e = *state;
    json_t *j;

    assert_cli(e, 0, "users create alice --display-name Alice -e alice@example.org", "User created",
               NULL);
    assert_cli(e, 1, "users create alice", NULL, "Error: user \"alice\" already exists");
    assert_cli(e, 1, "users create a", NULL, "at least 2 characters");
    assert_cli(e, 0, "users list", "ID  Name", NULL);
    assert_non_null(strstr(e->out, "alice@example.org"));
    assert_cli(e, 0, "users ls -n alice -o json", NULL, NULL);
    j = json_loads(e->out, 0, NULL);
    assert_int_equal(json_array_size(j), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(j, 0), "name")), "alice");
    json_decref(j);
    assert_cli(e, 0, "users rename -n alice -r alicia", "User renamed", NULL);
    assert_cli(e, 0, "--stale users list -o json-line", "\"alicia\"", NULL);
    assert_cli(e, 1, "users destroy -n nobody --force", NULL, "user \"nobody\" not found");
}

static void cli_manages_keys_nodes_and_policy(void **state)
{
    struct e2e *e = *state;
    char words[512], path[300];

    assert_cli(e, 0, "users create bob", NULL, NULL);
    assert_cli(e, 0, "preauthkeys create -u bob --reusable -e 2h --tags tag:ci", "concord-auth-",
               NULL);
    assert_cli(e, 0, "preauthkeys list -o yaml", "reusable: true", NULL);
    assert_non_null(strstr(e->out, "- tag:ci"));
    assert_cli(e, 0, "preauthkeys expire -i 1", "Key expired", NULL);
    assert_cli(e, 1, "preauthkeys expire -i 99", NULL, "not found");

    assert_cli(e, 0, "nodes create --user bob --name web-1", "Node created", NULL);
    assert_cli(e, 0, "nodes list -u bob", "web-1", NULL);
    assert_cli(e, 0, "nodes tag -i 1 -t tag:web,tag:prod", "tag:web,tag:prod", NULL);
    assert_cli(e, 1, "nodes tag -i 1 -t Web", NULL, "must start with \"tag:\"");
    assert_cli(e, 1, "nodes approve-routes -i 1 -r 10.0.0.0/8", NULL,
               "10.0.0.0/8 is not advertised by node 1");
    assert_cli(e, 1, "nodes approve-routes -i 1 -r 10.0.0.1/8", NULL, "host bits set");
    assert_cli(e, 0, "nodes approve-routes -i 1 --routes=", "Node updated", NULL);
    assert_cli(e, 0, "nodes list-routes", "Serving", NULL);
    assert_cli(e, 0, "nodes list-routes -i 1", "web-1", NULL);
    assert_cli(e, 0, "nodes rename -i 1 www", "www", NULL);
    assert_cli(e, 0, "nodes expire -i 1", "Node expired", NULL);
    assert_cli(e, 1, "nodes delete -i 42 --force", NULL, "node 42 not found");
    assert_cli(e, 0, "nodes delete -i 1 --force", "Node deleted", NULL);

    snprintf(path, sizeof path, "%s/policy.hujson", e->dir);
    write_file(path, "{\n  // all\n  \"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], "
                     "\"dst\": [\"*:*\"]},],\n}\n");
    snprintf(words, sizeof words, "policy check -f %s", path);
    assert_cli(e, 0, words, "Policy is valid", NULL);
    snprintf(words, sizeof words, "policy set -f %s --if-version 0", path);
    assert_cli(e, 0, words, "Policy updated (version 1)", NULL);
    assert_cli(e, 1, words, NULL, "policy version is 1");
    assert_cli(e, 0, "policy get", "// all", NULL);
    assert_cli(e, 0, "policy get -o json", "\"version\": \"1\"", NULL);
    write_file(path, "{\n  \"acls\": [}\n");
    snprintf(words, sizeof words, "policy check -f %s", path);
    assert_cli(e, 1, words, NULL, "line 2, column 12");
}

static void cli_uses_api_keys_over_tcp(void **state)
{
    struct e2e *e = *state;
    char words[512], token[SECRET_TOKEN_MAX];

    assert_cli(e, 0, "apikeys create -e 1d", "concord-api-", NULL);
    snprintf(token, sizeof token, "%.*s", (int)strcspn(e->out, "\n"), e->out);
    assert_cli(e, 0, "apikeys list", "Prefix", NULL);

    snprintf(words, sizeof words, "users list --address %s --api-key %s", e->address, token);
    assert_cli(e, 0, words, "ID  Name", NULL);
    token[strlen(token) - 1] = token[strlen(token) - 1] == 'A' ? 'B' : 'A';
    snprintf(words, sizeof words, "users list --address %s --api-key %s", e->address, token);
    assert_cli(e, 1, words, NULL, "Error: invalid API key");
    snprintf(words, sizeof words, "users list --address %s", e->address);
    assert_cli(e, 1, words, NULL, "needs an API key");
}

static void cli_reports_cluster_state_and_round_trips_snapshots(void **state)
{
    struct e2e *e = *state;
    char words[512], path[300];
    struct stat st;

    assert_cli(e, 0, "cluster status", "stateHash", NULL);
    assert_cli(e, 0, "cluster status -o json", "\"role\": \"leader\"", NULL);
    assert_cli(e, 0, "cluster members", "Raft address", NULL);
    assert_cli(e, 0, "audit list", "user.create", NULL);

    snprintf(path, sizeof path, "%s/backup.zst", e->dir);
    snprintf(words, sizeof words, "cluster snapshot save %s", path);
    assert_cli(e, 0, words, "Snapshot saved", NULL);
    assert_int_equal(stat(path, &st), 0);
    assert_true(st.st_size > 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_cli(e, 0, "users create carol", NULL, NULL);
    snprintf(words, sizeof words, "cluster snapshot restore %s --force", path);
    assert_cli(e, 0, words, "State restored at index", NULL);
    assert_cli(e, 0, "users list -n carol -o json", "[]", NULL);
}

static void cli_backs_up_into_a_new_directory_over_the_socket_only(void **state)
{
    struct e2e *e = *state;
    char words[700], dir[300], path[400], cwd[512];
    struct stat st;

    snprintf(dir, sizeof dir, "%s/lmdb-backup", e->dir);
    snprintf(words, sizeof words, "cluster backup %s", dir);
    assert_cli(e, 0, words, "Backup at applied index", NULL);
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    assert_int_equal(stat(path, &st), 0);
    assert_cli(e, 1, words, NULL, "is not empty");

    /* A relative DIR is where the operator is, not where the server runs. */
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(e->dir), 0);
    assert_cli(e, 0, "cluster backup relative-backup -o json", "\"appliedIndex\"", NULL);
    assert_int_equal(chdir(cwd), 0);
    snprintf(path, sizeof path, "%s/relative-backup/data.mdb", e->dir);
    assert_int_equal(stat(path, &st), 0);
    /* --stale skips the barrier, as for reads. */
    snprintf(words, sizeof words, "cluster backup %s/stale-backup --stale", e->dir);
    assert_cli(e, 0, words, "Backup at applied index", NULL);
    assert_cli(e, 2, "cluster backup", NULL, NULL);
}

static void cli_backup_over_tcp_is_refused_and_writes_nothing(void **state)
{
    struct e2e *e = *state;
    char words[700], dir[300], token[SECRET_TOKEN_MAX];
    struct stat st;

    assert_cli(e, 0, "apikeys create -e 1d", "concord-api-", NULL);
    snprintf(token, sizeof token, "%.*s", (int)strcspn(e->out, "\n"), e->out);
    snprintf(dir, sizeof dir, "%s/tcp-backup", e->dir);
    snprintf(words, sizeof words, "cluster backup %s --address %s --api-key %s", dir, e->address,
             token);
    assert_cli(e, 1, words, NULL, "only over its Unix socket");
    assert_int_equal(stat(dir, &st), -1);
}

struct peer_wait {
    bool is_done;
    int status;
    uint32_t reply_status;
};

static void on_peer_done(void *arg, int status, const uint8_t *reply, size_t len)
{
    struct peer_wait *w = arg;
    Concord__PeerReply *r;

    w->is_done = true;
    w->status = status;
    if (status == CLUSTER_OK) {
        r = concord__peer_reply__unpack(NULL, len, reply);
        assert_non_null(r);
        w->reply_status = r->status;
        concord__peer_reply__free_unpacked(r, NULL);
    }
}

/* Sends a barrier PeerRequest to `address` with `secret`; returns the status
 * the transport reported. */
static int peer_barrier(struct e2e *e, const char *address, const uint8_t *secret,
                        uint32_t *reply_status)
{
    Concord__PeerRequest pr = CONCORD__PEER_REQUEST__INIT;
    struct admin_peer_client client = {.loop = &e->loop, .timeout_ms = 2000};
    struct peer_wait w = {0};
    uint8_t packed[16];
    size_t len;
    uint64_t deadline = now_ms(&e->loop) + WAIT_MS;

    memcpy(client.cluster_secret, secret, sizeof client.cluster_secret);
    pr.op_case = CONCORD__PEER_REQUEST__OP_BARRIER;
    pr.barrier = true;
    len = concord__peer_request__pack(&pr, packed);
    assert_int_equal(admin_peer_send(&client, address, packed, len, on_peer_done, &w), 0);
    while (!w.is_done) {
        if (now_ms(&e->loop) > deadline)
            fail_msg("peer request timed out");
        uv_run(&e->loop, UV_RUN_ONCE);
    }
    *reply_status = w.reply_status;
    return w.status;
}

static void peer_send_reaches_the_peer_route_and_maps_failures(void **state)
{
    struct e2e *e = *state;
    uint8_t secret[ADMIN_CLUSTER_SECRET_BYTES] = {0}, wrong[ADMIN_CLUSTER_SECRET_BYTES] = {1};
    char closed[64];
    uint32_t reply = 99;

    /* The fixture's admin has the all-zero secret. */
    assert_int_equal(peer_barrier(e, e->address + 7, secret, &reply), CLUSTER_OK);
    assert_int_equal(reply, CLUSTER_OK);
    assert_int_equal(peer_barrier(e, e->address + 7, wrong, &reply), CLUSTER_TRANSPORT);
    free_port(closed, sizeof closed);
    assert_int_equal(peer_barrier(e, closed, secret, &reply), CLUSTER_TRANSPORT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cli_manages_users_over_the_socket),
        cmocka_unit_test(cli_manages_keys_nodes_and_policy),
        cmocka_unit_test(cli_uses_api_keys_over_tcp),
        cmocka_unit_test(cli_reports_cluster_state_and_round_trips_snapshots),
        cmocka_unit_test(cli_backs_up_into_a_new_directory_over_the_socket_only),
        cmocka_unit_test(cli_backup_over_tcp_is_refused_and_writes_nothing),
        cmocka_unit_test(peer_send_reaches_the_peer_route_and_maps_failures),
    };

    return cmocka_run_group_tests_name("cli_e2e", tests, setup, teardown);
}
