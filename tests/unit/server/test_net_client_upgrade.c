/* tests/unit/server/test_net_client_upgrade.c: the client side of a
 * protocol switch (net_http_client_upgrade) against the server's
 * (net_http_upgrade), plain and over TLS, on one loop. The server's handler
 * switches at /echo, sending a greeting right behind its 101 head, then
 * echoes every byte; at /bye it says goodbye and closes.
 * Covered: the exact request the server receives, the greeting delivered
 * first, bytes echoed both ways (256 KiB over TLS), the handshake timeout
 * no longer applying after the switch, the owner's close reaching the
 * server with no on_close of its own, the server's close reaching the
 * client as one on_close, a non-101 answer reported with its status, a
 * refused connection, a silent server timing out, and an attempt abandoned
 * before the answer calling nothing back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <arpa/inet.h>
#include <signal.h>
#include <uv.h>

#include "server/net/http.h"
#include "tests/lib/testdir.h"
#include "tests/lib/tlscert.h"

#define MAX_ITERATIONS 4000 /* of at most TICK_MS each */
#define TICK_MS        5
#define TIMEOUT_MS     10000 /* of a handshake expected to end well before */
#define BIG_BYTES      (256 * 1024)

#define SWITCH_HEAD                                                                                \
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n"
#define GREETING "hello from the server"

struct fixture {
    uv_loop_t loop;
    char dir[256];
    char cert_path[300];
    char key_path[300];
    char address[64];
    struct net_http_server *server;
    bool is_server_closed;
    /* server side */
    int n_requests;
    char request_line[128];        /* "<method> <path>" of the last request */
    char request_upgrade[64];      /* its Upgrade header */
    char request_host[64];         /* its Host header */
    struct net_raw *raw;           /* the upgraded stream, NULL once closed */
    int server_close_calls;        /* on_close of the server's raw stream */
    struct net_http_request *held; /* /hold: never answered by the handler */
    /* client side */
    struct net_client_raw *client;
    int upgrade_calls;
    int upgrade_status;
    int upgrade_http_status;
    uint8_t *got; /* bytes the client read */
    size_t got_len;
    int client_close_calls;
    char client_close_reason[64];
    /* a listener that accepts and says nothing */
    uv_tcp_t silent;
    uv_tcp_t silent_conn;
    int silent_open;
};

/* ---- loop helpers ---- */

typedef bool (*pred_fn)(void *arg);

static void tick_on_timer(uv_timer_t *t)
{
    (void)t;
}

/* Runs the loop until pred holds, at most max_iterations turns; a ticking
 * timer keeps each turn short. Returns whether pred held. */
static bool loop_run_until(uv_loop_t *loop, pred_fn pred, void *arg, int max_iterations)
{
    uv_timer_t tick;
    bool ok = pred(arg);

    uv_timer_init(loop, &tick);
    uv_timer_start(&tick, tick_on_timer, TICK_MS, TICK_MS);
    for (int i = 0; i < max_iterations && !ok; i++) {
        uv_run(loop, UV_RUN_ONCE);
        ok = pred(arg);
    }
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return ok;
}

static bool never(void *arg)
{
    (void)arg;
    return false;
}

/* Runs the loop for about ms milliseconds. */
static void loop_run_for(uv_loop_t *loop, int ms)
{
    loop_run_until(loop, never, NULL, ms / TICK_MS);
}

static bool is_flag_set(void *arg)
{
    return *(bool *)arg;
}

/* ---- server ---- */

static void server_raw_on_read(void *arg, const uint8_t *data, size_t len)
{
    struct fixture *f = arg;

    assert_int_equal(net_raw_write(f->raw, data, len), 0);
}

static void server_raw_on_close(void *arg, const char *reason)
{
    struct fixture *f = arg;

    (void)reason;
    f->server_close_calls++;
    f->raw = NULL;
}

static void handler(void *arg, struct net_http_request *req)
{
    static const char head[] = SWITCH_HEAD GREETING;
    static const char bye[] = SWITCH_HEAD "bye";
    const struct net_raw_callbacks cb = {server_raw_on_read, server_raw_on_close};
    struct fixture *f = arg;
    const char *upgrade = net_http_header_get(req, "Upgrade");
    const char *host = net_http_header_get(req, "Host");

    f->n_requests++;
    snprintf(f->request_line, sizeof f->request_line, "%s %s", req->method, req->path);
    snprintf(f->request_upgrade, sizeof f->request_upgrade, "%s", upgrade ? upgrade : "");
    snprintf(f->request_host, sizeof f->request_host, "%s", host ? host : "");
    if (strcmp(req->path, "/echo") == 0) {
        f->raw = net_http_upgrade(req, head, sizeof head - 1, &cb, f);
        assert_non_null(f->raw);
    } else if (strcmp(req->path, "/bye") == 0) {
        f->raw = net_http_upgrade(req, bye, sizeof bye - 1, &cb, f);
        assert_non_null(f->raw);
        net_raw_close(f->raw, "said goodbye");
        f->raw = NULL;
    } else if (strcmp(req->path, "/hold") == 0) {
        f->held = req;
    } else {
        net_http_respond(req, 426, "text/plain", NULL, "no\n", 3);
    }
}

static void server_start(struct fixture *f, bool is_tls)
{
    struct net_http_server_options opts = {
        .tcp_address = "127.0.0.1:0",
        .tls_cert_path = is_tls ? f->cert_path : NULL,
        .tls_key_path = is_tls ? f->key_path : NULL,
        .max_body_bytes = 1024,
        .max_header_bytes = 4096,
        .idle_timeout_ms = 10000,
        .handler = handler,
        .handler_arg = f,
    };
    char errmsg[256] = "";

    if (net_http_server_new(&f->loop, &opts, &f->server, errmsg) != 0)
        fail_msg("server: %s", errmsg);
    snprintf(f->address, sizeof f->address, "127.0.0.1:%d", net_http_server_port(f->server));
}

static void server_on_closed(void *arg)
{
    ((struct fixture *)arg)->is_server_closed = true;
}

/* ---- a listener that never answers ---- */

static void silent_on_connection(uv_stream_t *listener, int status)
{
    struct fixture *f = listener->data;

    assert_int_equal(status, 0);
    assert_int_equal(uv_tcp_init(&f->loop, &f->silent_conn), 0);
    f->silent_open++;
    assert_int_equal(uv_accept(listener, (uv_stream_t *)&f->silent_conn), 0);
}

/* Binds 127.0.0.1 on a free port; listens only if asked (else connecting
 * is refused). */
static void silent_start(struct fixture *f, bool is_listening)
{
    struct sockaddr_in addr;
    struct sockaddr_storage bound;
    int len = sizeof bound;

    assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &addr), 0);
    assert_int_equal(uv_tcp_init(&f->loop, &f->silent), 0);
    f->silent.data = f;
    f->silent_open = 1;
    assert_int_equal(uv_tcp_bind(&f->silent, (const struct sockaddr *)&addr, 0), 0);
    if (is_listening)
        assert_int_equal(uv_listen((uv_stream_t *)&f->silent, 8, silent_on_connection), 0);
    assert_int_equal(uv_tcp_getsockname(&f->silent, (struct sockaddr *)&bound, &len), 0);
    snprintf(f->address, sizeof f->address, "127.0.0.1:%d",
             ntohs(((struct sockaddr_in *)&bound)->sin_port));
}

static void silent_on_close(uv_handle_t *h)
{
    struct fixture *f = h->loop->data;

    f->silent_open--;
}

static bool is_silent_closed(void *arg)
{
    return ((struct fixture *)arg)->silent_open == 0;
}

/* ---- client ---- */

static void client_on_upgrade(void *arg, int status, int http_status)
{
    struct fixture *f = arg;

    f->upgrade_calls++;
    f->upgrade_status = status;
    f->upgrade_http_status = http_status;
    if (status != NET_OK)
        f->client = NULL;
}

static void client_on_read(void *arg, const uint8_t *data, size_t len)
{
    struct fixture *f = arg;
    uint8_t *bigger = realloc(f->got, f->got_len + len);

    assert_non_null(bigger);
    memcpy(bigger + f->got_len, data, len);
    f->got = bigger;
    f->got_len += len;
}

static void client_on_close(void *arg, const char *reason)
{
    struct fixture *f = arg;

    f->client_close_calls++;
    snprintf(f->client_close_reason, sizeof f->client_close_reason, "%s", reason);
    f->client = NULL;
}

static bool has_upgrade_answer(void *arg)
{
    return ((struct fixture *)arg)->upgrade_calls > 0;
}

struct want_bytes {
    struct fixture *f;
    size_t len;
};

static bool has_bytes(void *arg)
{
    struct want_bytes *w = arg;

    return w->f->got_len >= w->len;
}

/* Starts an upgrade to path; the fixture collects what comes back. */
static void client_start(struct fixture *f, const char *path, bool use_tls, unsigned timeout_ms)
{
    const struct net_http_client_request req = {
        .address = f->address,
        .method = "GET",
        .path = path,
        .extra_headers = "Upgrade: echo\r\nConnection: Upgrade\r\n",
        .timeout_ms = timeout_ms != 0 ? timeout_ms : TIMEOUT_MS,
        .use_tls = use_tls,
    };
    const struct net_raw_callbacks cb = {client_on_read, client_on_close};

    assert_int_equal(net_http_client_upgrade(&f->loop, &req, client_on_upgrade, &cb, f, &f->client),
                     0);
    assert_non_null(f->client);
    assert_int_equal(f->upgrade_calls, 0); /* never from inside the call */
}

/* Upgrades at /echo and checks the switch and the greeting. */
static void client_switch(struct fixture *f, bool use_tls, unsigned timeout_ms)
{
    struct want_bytes w = {f, sizeof GREETING - 1};

    client_start(f, "/echo", use_tls, timeout_ms);
    assert_true(loop_run_until(&f->loop, has_upgrade_answer, f, MAX_ITERATIONS));
    assert_int_equal(f->upgrade_status, NET_OK);
    assert_int_equal(f->upgrade_http_status, 101);
    assert_true(loop_run_until(&f->loop, has_bytes, &w, MAX_ITERATIONS));
    assert_int_equal(f->got_len, sizeof GREETING - 1);
    assert_memory_equal(f->got, GREETING, sizeof GREETING - 1);
    assert_int_equal(f->n_requests, 1);
    assert_string_equal(f->request_line, "GET /echo");
    assert_string_equal(f->request_upgrade, "echo");
    assert_string_equal(f->request_host, f->address);
    assert_non_null(f->raw);
    f->got_len = 0;
}

/* Sends len bytes of a pattern and checks that exactly they come back. */
static void client_echo(struct fixture *f, size_t len)
{
    uint8_t *data = malloc(len);
    struct want_bytes w = {f, len};

    assert_non_null(data);
    for (size_t i = 0; i < len; i++)
        data[i] = (uint8_t)(i * 13 + i / 509);
    assert_int_equal(net_client_raw_write(f->client, data, len), 0);
    assert_true(loop_run_until(&f->loop, has_bytes, &w, MAX_ITERATIONS));
    loop_run_for(&f->loop, 20); /* nothing more comes */
    assert_int_equal(f->got_len, len);
    assert_memory_equal(f->got, data, len);
    assert_int_equal(net_client_raw_write_queued(f->client), 0);
    f->got_len = 0;
    free(data);
}

static bool is_server_raw_closed(void *arg)
{
    return ((struct fixture *)arg)->server_close_calls > 0;
}

/* The owner's close: the server reads the end, the client hears nothing. */
static void client_close_and_check(struct fixture *f)
{
    net_client_raw_close(f->client, "test done");
    f->client = NULL;
    assert_true(loop_run_until(&f->loop, is_server_raw_closed, f, MAX_ITERATIONS));
    loop_run_for(&f->loop, 20);
    assert_int_equal(f->server_close_calls, 1);
    assert_int_equal(f->client_close_calls, 0);
    assert_int_equal(f->upgrade_calls, 1);
}

/* ---- fixture ---- */

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);

    if (f == NULL || uv_loop_init(&f->loop) != 0 || testdir_make(f->dir, sizeof f->dir) != 0)
        return -1;
    f->loop.data = f;
    snprintf(f->cert_path, sizeof f->cert_path, "%s/cert.pem", f->dir);
    snprintf(f->key_path, sizeof f->key_path, "%s/key.pem", f->dir);
    testlib_make_certificate("example.invalid", f->cert_path, f->key_path, NULL);
    signal(SIGPIPE, SIG_IGN);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    if (f->client != NULL)
        net_client_raw_close(f->client, "teardown");
    if (f->held != NULL)
        net_http_respond(f->held, 200, NULL, NULL, NULL, 0);
    if (f->server != NULL) {
        net_http_server_close(f->server, server_on_closed, f);
        assert_true(loop_run_until(&f->loop, is_flag_set, &f->is_server_closed, MAX_ITERATIONS));
    }
    if (f->silent_open == 2)
        uv_close((uv_handle_t *)&f->silent_conn, silent_on_close);
    if (f->silent_open > 0) {
        uv_close((uv_handle_t *)&f->silent, silent_on_close);
        assert_true(loop_run_until(&f->loop, is_silent_closed, f, MAX_ITERATIONS));
    }
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    testdir_remove(f->dir);
    free(f->got);
    free(f);
    return 0;
}

/* ---- tests ---- */

static void switches_and_echoes_plain(void **state)
{
    struct fixture *f = *state;

    server_start(f, false);
    client_switch(f, false, 0);
    client_echo(f, 5);
    client_echo(f, BIG_BYTES);
    client_close_and_check(f);
}

static void switches_and_echoes_over_tls(void **state)
{
    struct fixture *f = *state;

    server_start(f, true);
    client_switch(f, true, 0);
    client_echo(f, 5);
    client_echo(f, BIG_BYTES);
    client_close_and_check(f);
}

/* The timeout covers the handshake only. */
static void stream_outlives_the_handshake_timeout(void **state)
{
    struct fixture *f = *state;

    server_start(f, true);
    client_switch(f, true, 100);
    loop_run_for(&f->loop, 300);
    assert_int_equal(f->client_close_calls, 0);
    client_echo(f, 7);
    client_close_and_check(f);
}

static bool has_client_closed(void *arg)
{
    return ((struct fixture *)arg)->client_close_calls > 0;
}

/* The server's goodbye arrives behind the 101 head, then its end. */
static void server_close_reaches_the_client(void **state)
{
    struct fixture *f = *state;

    server_start(f, false);
    client_start(f, "/bye", false, 0);
    assert_true(loop_run_until(&f->loop, has_client_closed, f, MAX_ITERATIONS));
    loop_run_for(&f->loop, 20);
    assert_int_equal(f->upgrade_calls, 1);
    assert_int_equal(f->upgrade_status, NET_OK);
    assert_int_equal(f->got_len, 3);
    assert_memory_equal(f->got, "bye", 3);
    assert_int_equal(f->client_close_calls, 1);
    assert_string_equal(f->client_close_reason, "eof");
    assert_null(f->client);
    assert_int_equal(f->server_close_calls, 0); /* the server closed it itself */
}

static void reports_a_refused_switch(void **state)
{
    struct fixture *f = *state;

    server_start(f, true);
    client_start(f, "/other", true, 0);
    assert_true(loop_run_until(&f->loop, has_upgrade_answer, f, MAX_ITERATIONS));
    loop_run_for(&f->loop, 20);
    assert_int_equal(f->upgrade_calls, 1);
    assert_int_equal(f->upgrade_status, NET_REFUSED);
    assert_int_equal(f->upgrade_http_status, 426);
    assert_int_equal(f->got_len, 0);
    assert_int_equal(f->client_close_calls, 0);
    assert_string_equal(net_strerror(NET_REFUSED), "protocol switch refused");
}

static void reports_a_refused_connection(void **state)
{
    struct fixture *f = *state;

    silent_start(f, false);
    client_start(f, "/echo", false, 0);
    assert_true(loop_run_until(&f->loop, has_upgrade_answer, f, MAX_ITERATIONS));
    assert_int_equal(f->upgrade_status, NET_CONNECT);
    assert_int_equal(f->upgrade_http_status, 0);
}

static void times_out_on_a_silent_server(void **state)
{
    struct fixture *f = *state;

    silent_start(f, true);
    client_start(f, "/echo", true, 200);
    assert_true(loop_run_until(&f->loop, has_upgrade_answer, f, MAX_ITERATIONS));
    assert_int_equal(f->upgrade_status, NET_TIMEOUT);
    assert_int_equal(f->silent_open, 2); /* it did connect */
}

static void times_out_on_an_unanswered_request(void **state)
{
    struct fixture *f = *state;

    server_start(f, false);
    client_start(f, "/hold", false, 200);
    assert_true(loop_run_until(&f->loop, has_upgrade_answer, f, MAX_ITERATIONS));
    assert_int_equal(f->upgrade_status, NET_TIMEOUT);
    assert_non_null(f->held);
}

/* Closed before the answer: no callback, now or when the answer comes. */
static void abandoned_attempt_calls_nothing_back(void **state)
{
    struct fixture *f = *state;

    server_start(f, true);
    client_start(f, "/echo", true, 0);
    loop_run_for(&f->loop, 1); /* connecting */
    net_client_raw_close(f->client, "not needed any more");
    f->client = NULL;
    loop_run_for(&f->loop, 200);
    assert_int_equal(f->upgrade_calls, 0);
    assert_int_equal(f->client_close_calls, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(switches_and_echoes_plain, setup, teardown),
        cmocka_unit_test_setup_teardown(switches_and_echoes_over_tls, setup, teardown),
        cmocka_unit_test_setup_teardown(stream_outlives_the_handshake_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(server_close_reaches_the_client, setup, teardown),
        cmocka_unit_test_setup_teardown(reports_a_refused_switch, setup, teardown),
        cmocka_unit_test_setup_teardown(reports_a_refused_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(times_out_on_a_silent_server, setup, teardown),
        cmocka_unit_test_setup_teardown(times_out_on_an_unanswered_request, setup, teardown),
        cmocka_unit_test_setup_teardown(abandoned_attempt_calls_nothing_back, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
