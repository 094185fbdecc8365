/* tests/unit/server/test_net_client_tls.c: the HTTP client speaking TLS
 * (use_tls), against the server with TLS on its listener, on one loop.
 * Covered: an exchange with its exact response, a host name (SNI) as well as
 * an IP literal, 1 MiB bodies both ways, the response size limit, TLS on one
 * side only failing fast and cleanly (no handler call, no wait for the
 * timeout), a server that never answers the handshake or the request bounded
 * by the timeout, and a certificate nobody could verify being accepted. The
 * certificate is made at test time. */
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
#define BIG_BYTES      ((size_t)1 << 20)
#define TIMEOUT_MS     10000 /* of an exchange expected to end well before */

struct fixture {
    uv_loop_t loop;
    char dir[256];
    char cert_path[300];
    char key_path[300];
    char address[64];
    struct net_http_server *server;
    bool is_server_closed;
    int n_requests;
    char last_header[64];          /* X-From of the last request */
    struct net_http_request *held; /* /hold: never answered by the handler */
    uv_tcp_t silent;               /* accepts, then says nothing */
    uv_tcp_t silent_conn;
    bool has_silent;
    int silent_open; /* handles of the silent server not yet closed */
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

static bool is_flag_set(void *arg)
{
    return *(bool *)arg;
}

/* ---- server ---- */

/* /echo: the body back; /big: BIG_BYTES of a pattern; /hold: no answer
 * until the test gives one; anything else: "<method> <path> <body>". */
static void handler(void *arg, struct net_http_request *req)
{
    struct fixture *f = arg;
    const char *from = net_http_header_get(req, "X-From");
    char body[512];
    int n;

    f->n_requests++;
    snprintf(f->last_header, sizeof f->last_header, "%s", from != NULL ? from : "");
    if (strcmp(req->path, "/echo") == 0) {
        net_http_respond(req, 200, "application/octet-stream", NULL, req->body, req->body_len);
        return;
    }
    if (strcmp(req->path, "/hold") == 0) {
        f->held = req;
        return;
    }
    n = snprintf(body, sizeof body, "%s %s %s", req->method, req->path, (const char *)req->body);
    net_http_respond(req, 201, "text/plain", NULL, body, (size_t)n);
}

static void server_start(struct fixture *f, bool is_tls)
{
    struct net_http_server_options opts = {
        .tcp_address = "127.0.0.1:0",
        .tls_cert_path = is_tls ? f->cert_path : NULL,
        .tls_key_path = is_tls ? f->key_path : NULL,
        .max_body_bytes = 2 * BIG_BYTES,
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

static void server_close(struct fixture *f)
{
    net_http_server_close(f->server, server_on_closed, f);
    assert_true(loop_run_until(&f->loop, is_flag_set, &f->is_server_closed, MAX_ITERATIONS));
    f->server = NULL;
}

/* A TCP listener that accepts one connection and never reads or writes. */
static void silent_on_connection(uv_stream_t *listener, int status)
{
    struct fixture *f = listener->data;

    assert_int_equal(status, 0);
    assert_int_equal(uv_tcp_init(&f->loop, &f->silent_conn), 0);
    f->silent_open++;
    assert_int_equal(uv_accept(listener, (uv_stream_t *)&f->silent_conn), 0);
}

static void silent_start(struct fixture *f)
{
    struct sockaddr_in addr;
    struct sockaddr_storage bound;
    int len = sizeof bound;

    assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &addr), 0);
    assert_int_equal(uv_tcp_init(&f->loop, &f->silent), 0);
    f->silent.data = f;
    f->has_silent = true;
    f->silent_open = 1;
    assert_int_equal(uv_tcp_bind(&f->silent, (const struct sockaddr *)&addr, 0), 0);
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

static void silent_close(struct fixture *f)
{
    if (f->silent_open == 2)
        uv_close((uv_handle_t *)&f->silent_conn, silent_on_close);
    uv_close((uv_handle_t *)&f->silent, silent_on_close);
    assert_true(loop_run_until(&f->loop, is_silent_closed, f, MAX_ITERATIONS));
    f->has_silent = false;
}

/* ---- client ---- */

struct result {
    bool is_done;
    int calls;
    int status;
    int http_status;
    uint8_t *body; /* a copy */
    size_t len;
};

static void client_on_done(void *arg, int status, int http_status, const uint8_t *body, size_t len)
{
    struct result *r = arg;

    r->calls++;
    r->is_done = true;
    r->status = status;
    r->http_status = http_status;
    r->len = len;
    r->body = malloc(len + 1);
    assert_non_null(r->body);
    if (len > 0)
        memcpy(r->body, body, len);
    r->body[len] = '\0';
}

struct send_options {
    const char *address; /* NULL: the fixture's */
    const char *path;
    const void *body;
    size_t body_len;
    bool use_tls;
    unsigned timeout_ms;       /* 0: TIMEOUT_MS */
    size_t max_response_bytes; /* 0: 2 * BIG_BYTES */
};

/* Sends one request and runs the loop until its callback fired. Returns the
 * milliseconds that took. */
static uint64_t exchange(struct fixture *f, const struct send_options *o, struct result *r)
{
    struct net_http_client_request req = {
        .address = o->address != NULL ? o->address : f->address,
        .method = o->body != NULL ? "POST" : "GET",
        .path = o->path,
        .extra_headers = "X-From: client-tls-test\r\n",
        .body = o->body,
        .body_len = o->body_len,
        .timeout_ms = o->timeout_ms != 0 ? o->timeout_ms : TIMEOUT_MS,
        .max_response_bytes = o->max_response_bytes != 0 ? o->max_response_bytes : 2 * BIG_BYTES,
        .use_tls = o->use_tls,
    };
    uint64_t start;

    uv_update_time(&f->loop);
    start = uv_now(&f->loop);
    assert_int_equal(net_http_client_send(&f->loop, &req, client_on_done, r), 0);
    assert_int_equal(r->calls, 0); /* never from inside the send */
    assert_true(loop_run_until(&f->loop, is_flag_set, &r->is_done, MAX_ITERATIONS));
    uv_update_time(&f->loop);
    return uv_now(&f->loop) - start;
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

    if (f->held != NULL)
        net_http_respond(f->held, 200, NULL, NULL, NULL, 0);
    if (f->server != NULL)
        server_close(f);
    if (f->has_silent)
        silent_close(f);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    testdir_remove(f->dir);
    free(f);
    return 0;
}

/* ---- tests ---- */

static void gets_the_response_over_tls(void **state)
{
    struct fixture *f = *state;
    struct send_options o = {.path = "/hello", .body = "ping", .body_len = 4, .use_tls = true};
    struct result r = {0};

    server_start(f, true);
    exchange(f, &o, &r);
    assert_int_equal(r.status, NET_OK);
    assert_int_equal(r.http_status, 201);
    assert_int_equal(r.len, 16);
    assert_memory_equal(r.body, "POST /hello ping", 16);
    assert_int_equal(f->n_requests, 1);
    assert_string_equal(f->last_header, "client-tls-test");
    free(r.body);
    loop_run_until(&f->loop, is_flag_set, &(bool){false}, 20); /* no second callback comes */
    assert_int_equal(r.calls, 1);
}

static void sends_to_a_host_name(void **state)
{
    struct fixture *f = *state;
    char address[64];
    struct send_options o = {.address = address, .path = "/named", .use_tls = true};
    struct result r = {0};

    server_start(f, true);
    snprintf(address, sizeof address, "localhost:%d", net_http_server_port(f->server));
    exchange(f, &o, &r);
    assert_int_equal(r.status, NET_OK);
    assert_int_equal(r.http_status, 201);
    assert_string_equal((const char *)r.body, "GET /named ");
    free(r.body);
}

static void carries_a_mebibyte_each_way(void **state)
{
    struct fixture *f = *state;
    uint8_t *big = malloc(BIG_BYTES);
    struct send_options o = {.path = "/echo", .body = big, .body_len = BIG_BYTES, .use_tls = true};
    struct result r = {0};

    assert_non_null(big);
    for (size_t i = 0; i < BIG_BYTES; i++)
        big[i] = (uint8_t)(i * 7 + i / 251);
    server_start(f, true);
    exchange(f, &o, &r);
    assert_int_equal(r.status, NET_OK);
    assert_int_equal(r.http_status, 200);
    assert_int_equal(r.len, BIG_BYTES);
    assert_memory_equal(r.body, big, BIG_BYTES);
    free(r.body);
    free(big);
}

static void refuses_a_response_over_the_limit(void **state)
{
    struct fixture *f = *state;
    uint8_t *big = calloc(1, BIG_BYTES);
    struct send_options o = {.path = "/echo",
                             .body = big,
                             .body_len = BIG_BYTES,
                             .use_tls = true,
                             .max_response_bytes = BIG_BYTES - 1};
    struct result r = {0};

    assert_non_null(big);
    server_start(f, true);
    exchange(f, &o, &r);
    assert_int_equal(r.status, NET_TOOBIG);
    assert_int_equal(r.http_status, 0);
    assert_int_equal(r.len, 0);
    free(r.body);
    free(big);
}

/* The server fails the handshake on the request line and hangs up. */
static void plain_client_fails_fast_against_tls(void **state)
{
    struct fixture *f = *state;
    struct send_options o = {.path = "/hello", .body = "ping", .body_len = 4};
    struct result r = {0};
    uint64_t ms;

    server_start(f, true);
    ms = exchange(f, &o, &r);
    if (r.status != NET_PROTOCOL && r.status != NET_CLOSED)
        fail_msg("status %s", net_strerror(r.status));
    assert_true(ms < TIMEOUT_MS / 2);
    assert_int_equal(r.len, 0);
    assert_int_equal(f->n_requests, 0);
    free(r.body);
}

/* The plain server answers the ClientHello with a 400 in clear text, which
 * is no TLS record. */
static void tls_client_fails_fast_against_plain(void **state)
{
    struct fixture *f = *state;
    struct send_options o = {.path = "/hello", .body = "ping", .body_len = 4, .use_tls = true};
    struct result r = {0};
    uint64_t ms;

    server_start(f, false);
    ms = exchange(f, &o, &r);
    if (r.status != NET_PROTOCOL && r.status != NET_CLOSED)
        fail_msg("status %s", net_strerror(r.status));
    assert_true(ms < TIMEOUT_MS / 2);
    assert_int_equal(r.len, 0);
    assert_int_equal(f->n_requests, 0);
    free(r.body);
}

static void times_out_on_a_silent_handshake(void **state)
{
    struct fixture *f = *state;
    struct send_options o = {.path = "/hello", .use_tls = true, .timeout_ms = 200};
    struct result r = {0};

    silent_start(f);
    exchange(f, &o, &r);
    assert_int_equal(r.status, NET_TIMEOUT);
    assert_int_equal(f->silent_open, 2); /* it did connect */
    free(r.body);
}

static void times_out_on_an_unanswered_request(void **state)
{
    struct fixture *f = *state;
    struct send_options o = {.path = "/hold", .use_tls = true, .timeout_ms = 300};
    struct result r = {0};

    server_start(f, true);
    exchange(f, &o, &r);
    assert_int_equal(r.status, NET_TIMEOUT);
    assert_non_null(f->held); /* the request did arrive, decrypted */
    free(r.body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(gets_the_response_over_tls, setup, teardown),
        cmocka_unit_test_setup_teardown(sends_to_a_host_name, setup, teardown),
        cmocka_unit_test_setup_teardown(carries_a_mebibyte_each_way, setup, teardown),
        cmocka_unit_test_setup_teardown(refuses_a_response_over_the_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(plain_client_fails_fast_against_tls, setup, teardown),
        cmocka_unit_test_setup_teardown(tls_client_fails_fast_against_plain, setup, teardown),
        cmocka_unit_test_setup_teardown(times_out_on_a_silent_handshake, setup, teardown),
        cmocka_unit_test_setup_teardown(times_out_on_an_unanswered_request, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
