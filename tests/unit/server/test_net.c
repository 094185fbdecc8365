/* tests/unit/server/test_net.c: the HTTP server and client on a real loop,
 * over loopback TCP and a Unix socket: exchanges, keep-alive, limits answered
 * without the handler, deadlines, and requests that outlive their connection.
 * Every wait is bounded; tear-down fails if a handle is left open. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include "server/net/http.h"
#include "tests/lib/testdir.h"

#define MAX_ITERATIONS 2000 /* of at most TICK_MS each */
#define TICK_MS        5

enum handler_mode { HANDLER_ECHO, HANDLER_HOLD };

struct fixture {
    uv_loop_t loop;
    char dir[256];
    char sock_path[300];
    struct net_http_server *server;
    bool is_server_closed;
    enum handler_mode mode;
    struct net_http_request *held;
    int n_requests;
    bool last_was_local;
    char last_peer[64];
    size_t last_body_len;
    /* What the body-limit hook saw. */
    int n_limit_calls;
    bool limit_saw_local;
    char limit_saw_path[64];
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

static bool is_flag_set(void *arg)
{
    return *(bool *)arg;
}

static bool is_request_held(void *arg)
{
    return ((struct fixture *)arg)->held != NULL;
}

/* ---- server ---- */

static void handler(void *arg, struct net_http_request *req)
{
    struct fixture *f = arg;
    char body[512];
    int n;

    f->n_requests++;
    f->last_was_local = req->is_local;
    f->last_body_len = req->body_len;
    memcpy(f->last_peer, req->peer, sizeof f->last_peer);
    if (f->mode == HANDLER_HOLD) {
        f->held = req;
        return;
    }
    /* Echoes the start of big bodies only. */
    n = snprintf(body, sizeof body, "%s %s %.100s", req->method, req->path,
                 (const char *)req->body);
    net_http_respond(req, 200, "text/plain", "X-Test: 1\r\n", body, (size_t)n);
}

/* The test's body-limit hook: /big may carry 1000 times the listener's
 * limit, /tiny one byte, anything else the listener's limit. */
static size_t body_limit(void *arg, const struct net_http_request *head, size_t limit)
{
    struct fixture *f = arg;

    f->n_limit_calls++;
    f->limit_saw_local = head->is_local;
    snprintf(f->limit_saw_path, sizeof f->limit_saw_path, "%s", head->path);
    if (strcmp(head->path, "/big") == 0)
        return limit * 1000;
    if (strcmp(head->path, "/tiny") == 0)
        return 1;
    return limit;
}

static void server_start_full(struct fixture *f, size_t max_body_bytes, size_t max_local_body_bytes,
                              net_http_body_limit_cb limit_cb, unsigned idle_timeout_ms,
                              const char *unix_path)
{
    struct net_http_server_options opts = {
        .tcp_address = "127.0.0.1:0",
        .unix_path = unix_path,
        .unix_mode = 0600,
        .max_body_bytes = max_body_bytes,
        .max_local_body_bytes = max_local_body_bytes,
        .max_header_bytes = 1024,
        .idle_timeout_ms = idle_timeout_ms,
        .handler = handler,
        .body_limit = limit_cb,
        .handler_arg = f,
    };
    char errmsg[256] = "";

    assert_int_equal(net_http_server_new(&f->loop, &opts, &f->server, errmsg), 0);
    assert_true(net_http_server_port(f->server) > 0);
}

static void server_start(struct fixture *f, size_t max_body_bytes, unsigned idle_timeout_ms,
                         const char *unix_path)
{
    server_start_full(f, max_body_bytes, 0, NULL, idle_timeout_ms, unix_path);
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

static void address_of(struct fixture *f, char *buf, size_t cap)
{
    snprintf(buf, cap, "127.0.0.1:%d", net_http_server_port(f->server));
}

/* ---- client ---- */

struct result {
    bool is_done;
    int calls;
    int status;
    int http_status;
    char body[1024];
    size_t len;
};

static void client_on_done(void *arg, int status, int http_status, const uint8_t *body, size_t len)
{
    struct result *r = arg;

    r->calls++;
    r->is_done = true;
    r->status = status;
    r->http_status = http_status;
    r->len = len < sizeof r->body - 1 ? len : sizeof r->body - 1;
    if (r->len > 0)
        memcpy(r->body, body, r->len);
    r->body[r->len] = '\0';
}

static void client_send(struct fixture *f, const char *address, const char *body,
                        unsigned timeout_ms, size_t max_response_bytes, struct result *r)
{
    struct net_http_client_request req = {
        .address = address,
        .method = body != NULL ? "POST" : "GET",
        .path = "/echo%20x?q=1",
        .extra_headers = "X-From: test\r\n",
        .body = body,
        .body_len = body != NULL ? strlen(body) : 0,
        .timeout_ms = timeout_ms,
        .max_response_bytes = max_response_bytes,
    };

    assert_int_equal(net_http_client_send(&f->loop, &req, client_on_done, r), 0);
}

/* ---- raw stream client: exact bytes in, everything out until EOF ---- */

struct raw {
    uv_loop_t *loop;
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } s;
    uv_connect_t connect;
    uv_write_t write;
    const char *text;
    char got[8192];
    size_t got_len;
    bool is_eof;
    bool is_closed;
};

static void raw_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct raw *r = h->data;

    (void)suggested;
    *buf = uv_buf_init(r->got + r->got_len, (unsigned)(sizeof r->got - 1 - r->got_len));
}

static void raw_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct raw *r = s->data;

    (void)buf;
    if (nread < 0) {
        r->is_eof = true;
        uv_read_stop(s);
        return;
    }
    r->got_len += (size_t)nread;
    r->got[r->got_len] = '\0';
}

static void raw_on_written(uv_write_t *w, int status)
{
    (void)w;
    (void)status;
}

static void raw_on_connect(uv_connect_t *c, int status)
{
    struct raw *r = c->handle->data;
    uv_buf_t buf = uv_buf_init((char *)r->text, (unsigned)strlen(r->text));

    assert_int_equal(status, 0);
    if (buf.len > 0)
        assert_int_equal(uv_write(&r->write, &r->s.stream, &buf, 1, raw_on_written), 0);
    assert_int_equal(uv_read_start(&r->s.stream, raw_on_alloc, raw_on_read), 0);
}

static void raw_open_tcp(struct fixture *f, struct raw *r, const char *text)
{
    struct sockaddr_in addr;

    memset(r, 0, sizeof *r);
    r->loop = &f->loop;
    r->text = text;
    uv_tcp_init(&f->loop, &r->s.tcp);
    r->s.handle.data = r;
    uv_ip4_addr("127.0.0.1", net_http_server_port(f->server), &addr);
    assert_int_equal(
        uv_tcp_connect(&r->connect, &r->s.tcp, (const struct sockaddr *)&addr, raw_on_connect), 0);
}

static void raw_open_unix(struct fixture *f, struct raw *r, const char *path, const char *text)
{
    memset(r, 0, sizeof *r);
    r->loop = &f->loop;
    r->text = text;
    uv_pipe_init(&f->loop, &r->s.pipe, 0);
    r->s.handle.data = r;
    uv_pipe_connect(&r->connect, &r->s.pipe, path, raw_on_connect);
}

static void raw_on_close(uv_handle_t *h)
{
    ((struct raw *)h->data)->is_closed = true;
}

/* Waits for the close: the handle lives on the test's stack. */
static void raw_close(struct raw *r)
{
    uv_close(&r->s.handle, raw_on_close);
    assert_true(loop_run_until(r->loop, is_flag_set, &r->is_closed, MAX_ITERATIONS));
}

static int count_of(const char *hay, const char *needle)
{
    int n = 0;

    for (const char *p = strstr(hay, needle); p != NULL; p = strstr(p + 1, needle))
        n++;
    return n;
}

struct raw_wait {
    struct raw *raw;
    const char *needle;
    int count;
};

static bool raw_has(void *arg)
{
    struct raw_wait *w = arg;

    return count_of(w->raw->got, w->needle) >= w->count;
}

static bool raw_is_eof(void *arg)
{
    return ((struct raw *)arg)->is_eof;
}

/* ---- fixture ---- */

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);

    if (f == NULL || uv_loop_init(&f->loop) != 0 || testdir_make(f->dir, sizeof f->dir) != 0)
        return -1;
    snprintf(f->sock_path, sizeof f->sock_path, "%s/concord.sock", f->dir);
    signal(SIGPIPE, SIG_IGN);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    if (f->server != NULL)
        server_close(f);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    testdir_remove(f->dir);
    free(f);
    return 0;
}

/* ---- tests ---- */

static void client_and_server_exchange_a_request_over_tcp(void **state)
{
    struct fixture *f = *state;
    struct result r = {0};
    char address[64];

    server_start(f, 1024, 5000, NULL);
    address_of(f, address, sizeof address);
    client_send(f, address, "hello", 5000, 4096, &r);
    assert_true(loop_run_until(&f->loop, is_flag_set, &r.is_done, MAX_ITERATIONS));
    assert_int_equal(r.status, NET_OK);
    assert_int_equal(r.http_status, 200);
    assert_string_equal(r.body, "POST /echo x hello");
    assert_int_equal(f->n_requests, 1);
    assert_false(f->last_was_local);
    assert_true(strncmp(f->last_peer, "127.0.0.1:", 10) == 0);
    loop_run_until(&f->loop, never, NULL, 20); /* no second callback comes */
    assert_int_equal(r.calls, 1);
}

static void client_resolves_localhost(void **state)
{
    struct fixture *f = *state;
    struct result r = {0};
    char address[64];

    server_start(f, 1024, 5000, NULL);
    snprintf(address, sizeof address, "localhost:%d", net_http_server_port(f->server));
    client_send(f, address, NULL, 5000, 4096, &r);
    assert_true(loop_run_until(&f->loop, is_flag_set, &r.is_done, MAX_ITERATIONS));
    assert_int_equal(r.status, NET_OK);
    assert_string_equal(r.body, "GET /echo x ");
}

static void keeps_connection_alive_across_pipelined_requests(void **state)
{
    struct fixture *f = *state;
    struct raw raw;
    struct raw_wait w = {&raw, "HTTP/1.1 200 OK", 2};

    server_start(f, 1024, 5000, NULL);
    raw_open_tcp(f, &raw,
                 "GET /one HTTP/1.1\r\nHost: x\r\n\r\n"
                 "POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
    assert_true(loop_run_until(&f->loop, raw_has, &w, MAX_ITERATIONS));
    assert_false(raw.is_eof);
    assert_int_equal(f->n_requests, 2);
    assert_non_null(strstr(raw.got, "GET /one "));
    assert_non_null(strstr(raw.got, "POST /two abc"));
    assert_non_null(strstr(raw.got, "X-Test: 1\r\n"));
    assert_null(strstr(raw.got, "Connection: close"));
    raw_close(&raw);
}

static void honours_connection_close(void **state)
{
    struct fixture *f = *state;
    struct raw raw;

    server_start(f, 1024, 5000, NULL);
    raw_open_tcp(f, &raw, "GET /bye HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_true(loop_run_until(&f->loop, raw_is_eof, &raw, MAX_ITERATIONS));
    assert_int_equal(count_of(raw.got, "HTTP/1.1 200 OK"), 1);
    assert_non_null(strstr(raw.got, "Connection: close\r\n"));
    raw_close(&raw);
}

static void answers_head_without_body(void **state)
{
    struct fixture *f = *state;
    struct raw raw;
    size_t len;

    server_start(f, 1024, 5000, NULL);
    raw_open_tcp(f, &raw, "HEAD /h HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_true(loop_run_until(&f->loop, raw_is_eof, &raw, MAX_ITERATIONS));
    len = strlen(raw.got);
    assert_true(len > 4);
    assert_string_equal(raw.got + len - 4, "\r\n\r\n");
    assert_non_null(strstr(raw.got, "Content-Length: 8\r\n")); /* "HEAD /h " */
    raw_close(&raw);
}

static void answers_413_without_calling_the_handler(void **state)
{
    struct fixture *f = *state;
    struct result r = {0};
    char address[64];
    char body[101];

    memset(body, 'x', 100);
    body[100] = '\0';
    server_start(f, 16, 5000, NULL);
    address_of(f, address, sizeof address);
    client_send(f, address, body, 5000, 4096, &r);
    assert_true(loop_run_until(&f->loop, is_flag_set, &r.is_done, MAX_ITERATIONS));
    assert_int_equal(r.status, NET_OK);
    assert_int_equal(r.http_status, 413);
    assert_int_equal(f->n_requests, 0);
}

/* "POST <path>" with a body of n bytes of 'x', declared or chunked in
 * pieces of 64 KiB; free() it. */
static char *big_request(const char *path, size_t n, bool is_chunked)
{
    const size_t piece = 64 * 1024;
    size_t cap = n + n / piece * 16 + 256, len;
    char *text = malloc(cap);

    assert_non_null(text);
    if (!is_chunked) {
        len =
            (size_t)snprintf(text, cap, "POST %s HTTP/1.1\r\nContent-Length: %zu\r\n\r\n", path, n);
        memset(text + len, 'x', n);
        text[len + n] = '\0';
        return text;
    }
    len =
        (size_t)snprintf(text, cap, "POST %s HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", path);
    for (size_t sent = 0; sent < n; sent += piece) {
        size_t k = n - sent < piece ? n - sent : piece;
        len += (size_t)snprintf(text + len, cap - len, "%zx\r\n", k);
        memset(text + len, 'x', k);
        len += k;
        len += (size_t)snprintf(text + len, cap - len, "\r\n");
    }
    snprintf(text + len, cap - len, "0\r\n\r\n");
    return text;
}

/* Sends text on a fresh connection (Unix socket when unix_path is set) and
 * waits for the status line `want`. */
static void exchange_expect(struct fixture *f, const char *unix_path, const char *text,
                            const char *want)
{
    struct raw raw;
    struct raw_wait w = {&raw, want, 1};

    if (unix_path != NULL)
        raw_open_unix(f, &raw, unix_path, text);
    else
        raw_open_tcp(f, &raw, text);
    if (!loop_run_until(&f->loop, raw_has, &w, MAX_ITERATIONS))
        fail_msg("wanted \"%s\", got \"%.200s\"", want, raw.got);
    raw_close(&raw);
}

static void unix_socket_has_its_own_body_limit(void **state)
{
    struct fixture *f = *state;
    const size_t n = 4u << 20;
    char *declared = big_request("/restore", n, false);
    char *chunked = big_request("/restore", n, true);

    server_start_full(f, 1024, 8u << 20, NULL, 5000, f->sock_path);
    /* Both ways of sending a body arrive whole on the Unix socket... */
    exchange_expect(f, f->sock_path, declared, "HTTP/1.1 200 OK");
    assert_int_equal(f->n_requests, 1);
    assert_int_equal(f->last_body_len, n);
    exchange_expect(f, f->sock_path, chunked, "HTTP/1.1 200 OK");
    assert_int_equal(f->n_requests, 2);
    assert_int_equal(f->last_body_len, n);
    /* ...and get 413 on TCP without reaching the handler. */
    exchange_expect(f, NULL, declared, "HTTP/1.1 413");
    exchange_expect(f, NULL, chunked, "HTTP/1.1 413");
    assert_int_equal(f->n_requests, 2);
    free(declared);
    free(chunked);
}

static void unix_socket_limit_defaults_to_the_tcp_one(void **state)
{
    struct fixture *f = *state;
    char *text = big_request("/restore", 2048, false);

    server_start(f, 1024, 5000, f->sock_path);
    exchange_expect(f, f->sock_path, text, "HTTP/1.1 413");
    assert_int_equal(f->n_requests, 0);
    free(text);
}

static void body_limit_hook_decides_each_request_from_its_head(void **state)
{
    struct fixture *f = *state;
    char *big = big_request("/big", 100000, false);
    char *big_chunked = big_request("/big", 100000, true);
    char *other = big_request("/other", 2000, false);

    server_start_full(f, 1024, 0, body_limit, 5000, f->sock_path);
    exchange_expect(f, NULL, big, "HTTP/1.1 200 OK");
    assert_int_equal(f->last_body_len, 100000);
    assert_false(f->limit_saw_local);
    assert_string_equal(f->limit_saw_path, "/big");
    exchange_expect(f, f->sock_path, big_chunked, "HTTP/1.1 200 OK");
    assert_int_equal(f->last_body_len, 100000);
    assert_true(f->limit_saw_local);
    exchange_expect(f, NULL, other, "HTTP/1.1 413");
    exchange_expect(f, NULL, "POST /tiny HTTP/1.1\r\nContent-Length: 2\r\n\r\nab", "HTTP/1.1 413");
    exchange_expect(f, NULL, "POST /tiny HTTP/1.1\r\nContent-Length: 1\r\n\r\na",
                    "HTTP/1.1 200 OK");
    assert_int_equal(f->n_requests, 3);
    assert_int_equal(f->n_limit_calls, 5);
    free(big);
    free(big_chunked);
    free(other);
}

static void answers_431_and_closes(void **state)
{
    struct fixture *f = *state;
    struct raw raw;
    char text[2048];

    server_start(f, 1024, 5000, NULL);
    snprintf(text, sizeof text, "GET / HTTP/1.1\r\nX-Big: %01500d\r\n\r\n", 7);
    raw_open_tcp(f, &raw, text);
    assert_true(loop_run_until(&f->loop, raw_is_eof, &raw, MAX_ITERATIONS));
    assert_true(strncmp(raw.got, "HTTP/1.1 431 ", 13) == 0);
    assert_int_equal(f->n_requests, 0);
    raw_close(&raw);
}

static void answers_400_to_garbage_and_closes(void **state)
{
    struct fixture *f = *state;
    struct raw raw;

    server_start(f, 1024, 5000, NULL);
    raw_open_tcp(f, &raw, "NONSENSE\r\n\r\n");
    assert_true(loop_run_until(&f->loop, raw_is_eof, &raw, MAX_ITERATIONS));
    assert_true(strncmp(raw.got, "HTTP/1.1 400 ", 13) == 0);
    assert_non_null(strstr(raw.got, "Connection: close\r\n"));
    assert_int_equal(f->n_requests, 0);
    raw_close(&raw);
}

static void closes_idle_connection_at_deadline(void **state)
{
    struct fixture *f = *state;
    struct raw raw;

    server_start(f, 1024, 50, NULL);
    raw_open_tcp(f, &raw, "");
    assert_true(loop_run_until(&f->loop, raw_is_eof, &raw, MAX_ITERATIONS));
    assert_int_equal(raw.got_len, 0);
    raw_close(&raw);
}

static void serves_unix_socket_with_its_mode(void **state)
{
    struct fixture *f = *state;
    struct raw raw;
    struct raw_wait w = {&raw, "HTTP/1.1 200 OK", 1};
    struct stat st;

    server_start(f, 1024, 5000, f->sock_path);
    assert_int_equal(stat(f->sock_path, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);
    raw_open_unix(f, &raw, f->sock_path, "GET /local HTTP/1.1\r\n\r\n");
    assert_true(loop_run_until(&f->loop, raw_has, &w, MAX_ITERATIONS));
    assert_true(f->last_was_local);
    assert_string_equal(f->last_peer, "unix");
    raw_close(&raw);
    server_close(f);
    assert_int_equal(stat(f->sock_path, &st), -1); /* removed on close */
}

static void replaces_stale_unix_socket_file(void **state)
{
    struct fixture *f = *state;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    assert_true(strlen(f->sock_path) < sizeof addr.sun_path);
    memcpy(addr.sun_path, f->sock_path, strlen(f->sock_path) + 1);
    assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
    close(fd); /* the file stays behind, as after a crash */
    server_start(f, 1024, 5000, f->sock_path);
}

static void refuses_to_remove_a_file_that_is_not_a_socket(void **state)
{
    struct fixture *f = *state;
    struct net_http_server_options opts = {
        .unix_path = f->sock_path,
        .unix_mode = 0600,
        .max_header_bytes = 1024,
        .idle_timeout_ms = 1000,
        .handler = handler,
        .handler_arg = f,
    };
    struct net_http_server *s = NULL;
    char errmsg[256] = "";
    FILE *file = fopen(f->sock_path, "w");
    struct stat st;

    assert_non_null(file);
    fclose(file);
    assert_int_equal(net_http_server_new(&f->loop, &opts, &s, errmsg), NET_LISTEN);
    assert_non_null(strstr(errmsg, "not a socket"));
    assert_int_equal(stat(f->sock_path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
}

static void refuses_a_tcp_address_it_cannot_bind(void **state)
{
    struct fixture *f = *state;
    struct net_http_server_options opts = {
        .tcp_address = "not-an-ip:80",
        .max_header_bytes = 1024,
        .idle_timeout_ms = 1000,
        .handler = handler,
    };
    struct net_http_server *s = NULL;
    char errmsg[256] = "";

    assert_int_equal(net_http_server_new(&f->loop, &opts, &s, errmsg), NET_ADDRESS);
    assert_non_null(strstr(errmsg, "not-an-ip:80"));
}

static void handler_may_answer_later(void **state)
{
    struct fixture *f = *state;
    struct result r = {0};
    char address[64];

    f->mode = HANDLER_HOLD;
    server_start(f, 1024, 5000, NULL);
    address_of(f, address, sizeof address);
    client_send(f, address, NULL, 5000, 4096, &r);
    assert_true(loop_run_until(&f->loop, is_request_held, f, MAX_ITERATIONS));
    assert_false(loop_run_until(&f->loop, is_flag_set, &r.is_done, 20));
    net_http_respond(f->held, 202, NULL, NULL, "later", 5);
    f->held = NULL;
    assert_true(loop_run_until(&f->loop, is_flag_set, &r.is_done, MAX_ITERATIONS));
    assert_int_equal(r.http_status, 202);
    assert_string_equal(r.body, "later");
}

static void respond_after_the_connection_closed_only_frees_the_request(void **state)
{
    struct fixture *f = *state;
    struct result r = {0};
    char address[64];

    f->mode = HANDLER_HOLD;
    server_start(f, 1024, 5000, NULL);
    address_of(f, address, sizeof address);
    client_send(f, address, "data", 5000, 4096, &r);
    assert_true(loop_run_until(&f->loop, is_request_held, f, MAX_ITERATIONS));
    server_close(f); /* closes the connection under the held request */
    assert_true(loop_run_until(&f->loop, is_flag_set, &r.is_done, MAX_ITERATIONS));
    assert_int_equal(r.status, NET_CLOSED);
    net_http_respond(f->held, 200, "text/plain", NULL, "void", 4);
    f->held = NULL;
}

static void client_times_out_when_no_answer_comes(void **state)
{
    struct fixture *f = *state;
    struct result r = {0};
    char address[64];

    f->mode = HANDLER_HOLD;
    server_start(f, 1024, 5000, NULL);
    address_of(f, address, sizeof address);
    client_send(f, address, NULL, 50, 4096, &r);
    assert_true(loop_run_until(&f->loop, is_flag_set, &r.is_done, MAX_ITERATIONS));
    assert_int_equal(r.status, NET_TIMEOUT);
    assert_int_equal(r.calls, 1);
    if (f->held != NULL) {
        net_http_respond(f->held, 200, NULL, NULL, NULL, 0);
        f->held = NULL;
    }
}

static void client_reports_connection_refused(void **state)
{
    struct fixture *f = *state;
    struct result r = {0};
    uv_tcp_t probe;
    struct sockaddr_in addr;
    struct sockaddr_storage bound;
    int len = sizeof bound;
    char address[64];

    /* A port that was free a moment ago and has nobody listening now. */
    uv_ip4_addr("127.0.0.1", 0, &addr);
    uv_tcp_init(&f->loop, &probe);
    assert_int_equal(uv_tcp_bind(&probe, (const struct sockaddr *)&addr, 0), 0);
    assert_int_equal(uv_tcp_getsockname(&probe, (struct sockaddr *)&bound, &len), 0);
    snprintf(address, sizeof address, "127.0.0.1:%d",
             ntohs(((struct sockaddr_in *)&bound)->sin_port));
    uv_close((uv_handle_t *)&probe, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    client_send(f, address, NULL, 5000, 4096, &r);
    assert_true(loop_run_until(&f->loop, is_flag_set, &r.is_done, MAX_ITERATIONS));
    assert_int_equal(r.status, NET_CONNECT);
}

static void client_refuses_bad_address_without_calling_back(void **state)
{
    struct fixture *f = *state;
    struct result r = {0};
    struct net_http_client_request req = {
        .address = "no-port-here",
        .method = "GET",
        .path = "/",
        .timeout_ms = 1000,
        .max_response_bytes = 1024,
    };

    assert_int_equal(net_http_client_send(&f->loop, &req, client_on_done, &r), NET_ADDRESS);
    req.address = "[::1:80";
    assert_int_equal(net_http_client_send(&f->loop, &req, client_on_done, &r), NET_ADDRESS);
    assert_false(loop_run_until(&f->loop, is_flag_set, &r.is_done, 10));
    assert_int_equal(r.calls, 0);
}

static void client_refuses_response_over_its_limit(void **state)
{
    struct fixture *f = *state;
    struct result r = {0};
    char address[64];

    server_start(f, 1024, 5000, NULL);
    address_of(f, address, sizeof address);
    client_send(f, address, "a body longer than four bytes", 5000, 4, &r);
    assert_true(loop_run_until(&f->loop, is_flag_set, &r.is_done, MAX_ITERATIONS));
    assert_int_equal(r.status, NET_TOOBIG);
    assert_int_equal(r.calls, 1);
}

static void closing_server_closes_kept_alive_connections(void **state)
{
    struct fixture *f = *state;
    struct raw raw;
    struct raw_wait w = {&raw, "HTTP/1.1 200 OK", 1};

    server_start(f, 1024, 5000, NULL);
    raw_open_tcp(f, &raw, "GET / HTTP/1.1\r\n\r\n");
    assert_true(loop_run_until(&f->loop, raw_has, &w, MAX_ITERATIONS));
    server_close(f);
    assert_true(loop_run_until(&f->loop, raw_is_eof, &raw, MAX_ITERATIONS));
    raw_close(&raw);
}

static void strerror_names_every_code(void **state)
{
    (void)state;
    assert_string_equal(net_strerror(NET_OK), "ok");
    assert_string_equal(net_strerror(NET_TOOBIG), "message too large");
    assert_string_equal(net_strerror(-1), "unknown error");
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(client_and_server_exchange_a_request_over_tcp),
        T(client_resolves_localhost),
        T(keeps_connection_alive_across_pipelined_requests),
        T(honours_connection_close),
        T(answers_head_without_body),
        T(answers_413_without_calling_the_handler),
        T(unix_socket_has_its_own_body_limit),
        T(unix_socket_limit_defaults_to_the_tcp_one),
        T(body_limit_hook_decides_each_request_from_its_head),
        T(answers_431_and_closes),
        T(answers_400_to_garbage_and_closes),
        T(closes_idle_connection_at_deadline),
        T(serves_unix_socket_with_its_mode),
        T(replaces_stale_unix_socket_file),
        T(refuses_to_remove_a_file_that_is_not_a_socket),
        T(refuses_a_tcp_address_it_cannot_bind),
        T(handler_may_answer_later),
        T(respond_after_the_connection_closed_only_frees_the_request),
        T(client_times_out_when_no_answer_comes),
        T(client_reports_connection_refused),
        T(client_refuses_bad_address_without_calling_back),
        T(client_refuses_response_over_its_limit),
        T(closing_server_closes_kept_alive_connections),
        cmocka_unit_test(strerror_names_every_code),
    };
#undef T

    return cmocka_run_group_tests_name("net", tests, NULL, NULL);
}
