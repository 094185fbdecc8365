/* tests/unit/server/test_net_tls.c: the HTTP server with TLS on its TCP
 * listener. The loop runs on the test's thread; the client runs on another
 * one, with OpenSSL over a blocking loopback socket, and follows a script of
 * exact bytes to send and to get back. Covered: requests and keep-alive,
 * requests cut into one-byte records, 100-continue, large bodies both ways,
 * a protocol switch whose raw bytes travel inside TLS (and its backpressure
 * count), ALPN, plain HTTP and garbage refused on the TLS port, the Unix
 * socket staying plain, unusable certificate and key files refused at start,
 * and the two configuration keys. The certificate is made at test time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include "server/config.h"
#include "server/net/http.h"
#include "tests/lib/testdir.h"
#include "tests/lib/tlscert.h"

#define MAX_ITERATIONS 4000 /* of at most TICK_MS each */
#define TICK_MS        5
#define IO_TIMEOUT_S   10
#define BIG_BYTES      300000
#define FLOOD_BYTES    (16u << 20)

#define UPGRADE_HEAD                                                                               \
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n"

struct fixture {
    uv_loop_t loop;
    char dir[256];
    char cert_path[300];
    char key_path[300];
    char other_key_path[300];     /* the key of a second certificate */
    char encrypted_key_path[300]; /* the first key, under a passphrase */
    char sock_path[300];
    struct net_http_server *server;
    bool is_server_closed;
    int n_requests;
    struct net_raw *raw;
    bool is_raw_closed; /* its on_close fired */
    size_t flood_queued;
};

/* ---- loop helpers ---- */

typedef bool (*pred_fn)(void *arg);

static void tick_on_timer(uv_timer_t *t)
{
    (void)t;
}

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

static void echo_on_read(void *arg, const uint8_t *data, size_t len)
{
    struct fixture *f = arg;

    assert_int_equal(net_raw_write(f->raw, data, len), 0);
    if (len >= 3 && memcmp(data + len - 3, "bye", 3) == 0) {
        net_raw_close(f->raw, "bye");
        f->raw = NULL;
    }
}

static void echo_on_close(void *arg, const char *reason)
{
    struct fixture *f = arg;

    (void)reason;
    f->is_raw_closed = true;
    f->raw = NULL;
}

static const struct net_raw_callbacks echo_callbacks = {echo_on_read, echo_on_close};

static void switch_protocols(struct fixture *f, struct net_http_request *req)
{
    f->raw = net_http_upgrade(req, UPGRADE_HEAD, sizeof UPGRADE_HEAD - 1, &echo_callbacks, f);
    assert_non_null(f->raw);
}

/* /upgrade: an echo stream; /flood: a stream that writes FLOOD_BYTES at once;
 * /echo: the body back; anything else: "<method> <path> <body>". */
static void handler(void *arg, struct net_http_request *req)
{
    struct fixture *f = arg;
    char body[512];
    int n;

    f->n_requests++;
    if (strcmp(req->path, "/upgrade") == 0) {
        switch_protocols(f, req);
        return;
    }
    if (strcmp(req->path, "/flood") == 0) {
        char *flood = malloc(FLOOD_BYTES);

        assert_non_null(flood);
        memset(flood, 'z', FLOOD_BYTES);
        switch_protocols(f, req);
        assert_int_equal(net_raw_write(f->raw, flood, FLOOD_BYTES), 0);
        f->flood_queued = net_raw_write_queued(f->raw);
        free(flood);
        return;
    }
    if (strcmp(req->path, "/echo") == 0) {
        net_http_respond(req, 200, "text/plain", NULL, req->body, req->body_len);
        return;
    }
    n = snprintf(body, sizeof body, "%s %s %s", req->method, req->path, (const char *)req->body);
    net_http_respond(req, 200, "text/plain", NULL, body, (size_t)n);
}

static struct net_http_server_options server_options(struct fixture *f)
{
    struct net_http_server_options opts = {
        .tcp_address = "127.0.0.1:0",
        .tls_cert_path = f->cert_path,
        .tls_key_path = f->key_path,
        .max_body_bytes = 1024 * 1024,
        .max_header_bytes = 4096,
        .idle_timeout_ms = 10000,
        .handler = handler,
        .handler_arg = f,
    };

    return opts;
}

static void server_start_opts(struct fixture *f, const struct net_http_server_options *opts)
{
    char errmsg[256] = "";

    if (net_http_server_new(&f->loop, opts, &f->server, errmsg) != 0)
        fail_msg("server: %s", errmsg);
}

static void server_start(struct fixture *f)
{
    struct net_http_server_options opts = server_options(f);

    server_start_opts(f, &opts);
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

/* ---- the client thread ---- */

struct step {
    const char *send;   /* NULL: nothing */
    size_t send_len;    /* 0: strlen(send) */
    size_t piece;       /* bytes per write (over TLS: one record each); 0: all at once */
    const char *expect; /* NULL, or the exact bytes that must come back next */
    size_t expect_len;  /* 0: strlen(expect) */
};

struct client {
    int port;              /* TCP on loopback, unless unix_path */
    const char *unix_path; /* NULL: TCP */
    bool is_plain;         /* no TLS: the script's bytes go straight on the socket */
    const char *alpn;      /* wire format, NULL: offer none */
    const char *ca_path;   /* the certificate the server must present */
    const struct step *steps;
    size_t n_steps;
    bool wants_end; /* then the server must end the connection */
    /* Results, read after the join. */
    bool is_ok;
    char why[300];
    char alpn_got[32];
    atomic_bool is_done;
    pthread_t thread;
};

struct client_io {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl; /* NULL: plain */
};

__attribute__((format(printf, 2, 3))) static bool client_fail(struct client *cl, const char *fmt,
                                                              ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(cl->why, sizeof cl->why, fmt, ap);
    va_end(ap);
    return false;
}

static int client_connect(const struct client *cl)
{
    struct timeval timeout = {.tv_sec = IO_TIMEOUT_S};
    int fd = socket(cl->unix_path != NULL ? AF_UNIX : AF_INET, SOCK_STREAM, 0);
    int rv;

    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    if (cl->unix_path != NULL) {
        struct sockaddr_un addr = {.sun_family = AF_UNIX};

        snprintf(addr.sun_path, sizeof addr.sun_path, "%s", cl->unix_path);
        rv = connect(fd, (struct sockaddr *)&addr, sizeof addr);
    } else {
        struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)cl->port)};

        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        rv = connect(fd, (struct sockaddr *)&addr, sizeof addr);
    }
    if (rv != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Verifies the server's certificate against ca_path, for "localhost". */
static bool client_handshake(struct client *cl, struct client_io *io)
{
    const unsigned char *alpn;
    unsigned alpn_len;

    io->ctx = SSL_CTX_new(TLS_client_method());
    if (io->ctx == NULL || SSL_CTX_load_verify_locations(io->ctx, cl->ca_path, NULL) != 1)
        return client_fail(cl, "client context");
    SSL_CTX_set_verify(io->ctx, SSL_VERIFY_PEER, NULL);
    io->ssl = SSL_new(io->ctx);
    if (io->ssl == NULL || SSL_set_fd(io->ssl, io->fd) != 1 ||
        SSL_set1_host(io->ssl, "localhost") != 1 ||
        SSL_set_tlsext_host_name(io->ssl, "localhost") != 1 ||
        (cl->alpn != NULL && SSL_set_alpn_protos(io->ssl, (const unsigned char *)cl->alpn,
                                                 (unsigned)strlen(cl->alpn)) != 0))
        return client_fail(cl, "client session");
    if (SSL_connect(io->ssl) != 1)
        return client_fail(cl, "handshake: %s", ERR_reason_error_string(ERR_peek_error()));
    SSL_get0_alpn_selected(io->ssl, &alpn, &alpn_len);
    snprintf(cl->alpn_got, sizeof cl->alpn_got, "%.*s", (int)alpn_len, (const char *)alpn);
    return true;
}

static bool io_send(struct client_io *io, const char *data, size_t len)
{
    size_t done = 0;

    while (done < len) {
        size_t n = 0;

        if (io->ssl != NULL) {
            if (SSL_write_ex(io->ssl, data + done, len - done, &n) != 1)
                return false;
        } else {
            ssize_t k = send(io->fd, data + done, len - done, MSG_NOSIGNAL);

            if (k <= 0)
                return false;
            n = (size_t)k;
        }
        done += n;
    }
    return true;
}

/* > 0: bytes; 0: the server ended the connection (close_notify over TLS;
 * FIN or reset when plain); -1: an error or the timeout. */
static long io_recv(struct client_io *io, char *buf, size_t cap)
{
    ssize_t k;

    if (io->ssl != NULL) {
        size_t n = 0;

        if (SSL_read_ex(io->ssl, buf, cap, &n) == 1)
            return (long)n;
        return SSL_get_error(io->ssl, 0) == SSL_ERROR_ZERO_RETURN ? 0 : -1;
    }
    k = recv(io->fd, buf, cap, 0);
    if (k < 0 && errno == ECONNRESET)
        return 0;
    return k < 0 ? -1 : (long)k;
}

static bool run_step(struct client *cl, struct client_io *io, size_t i)
{
    const struct step *s = &cl->steps[i];
    size_t send_len = s->send == NULL ? 0 : s->send_len != 0 ? s->send_len : strlen(s->send);
    size_t want = s->expect == NULL ? 0 : s->expect_len != 0 ? s->expect_len : strlen(s->expect);
    size_t piece = s->piece != 0 ? s->piece : send_len;
    size_t got = 0;
    char *buf;

    for (size_t off = 0; off < send_len; off += piece) {
        if (!io_send(io, s->send + off, send_len - off < piece ? send_len - off : piece))
            return client_fail(cl, "step %zu: send failed", i);
    }
    buf = malloc(want + 1);
    if (buf == NULL)
        return client_fail(cl, "step %zu: out of memory", i);
    while (got < want) {
        long n = io_recv(io, buf + got, want - got);

        if (n <= 0) {
            free(buf);
            return client_fail(cl, "step %zu: %s after %zu of %zu bytes", i,
                               n == 0 ? "ended" : "error", got, want);
        }
        got += (size_t)n;
    }
    if (want > 0 && memcmp(buf, s->expect, want) != 0) {
        buf[want] = '\0';
        client_fail(cl, "step %zu: got \"%.200s\" (first bytes %02x %02x %02x %02x %02x %02x %02x)",
                    i, buf, (uint8_t)buf[0], want > 1 ? (uint8_t)buf[1] : 0,
                    want > 2 ? (uint8_t)buf[2] : 0, want > 3 ? (uint8_t)buf[3] : 0,
                    want > 4 ? (uint8_t)buf[4] : 0, want > 5 ? (uint8_t)buf[5] : 0,
                    want > 6 ? (uint8_t)buf[6] : 0);
        free(buf);
        return false;
    }
    free(buf);
    return true;
}

static bool client_run(struct client *cl, struct client_io *io)
{
    char byte;
    long n;

    io->fd = client_connect(cl);
    if (io->fd < 0)
        return client_fail(cl, "connect: %s", strerror(errno));
    if (!cl->is_plain && !client_handshake(cl, io))
        return false;
    for (size_t i = 0; i < cl->n_steps; i++) {
        if (!run_step(cl, io, i))
            return false;
    }
    if (!cl->wants_end)
        return true;
    n = io_recv(io, &byte, 1);
    if (n > 0)
        return client_fail(cl, "a byte more: 0x%02x", (unsigned char)byte);
    if (n < 0)
        return client_fail(cl, "no end: an error or the timeout");
    return true;
}

static void *client_main(void *arg)
{
    struct client *cl = arg;
    struct client_io io = {.fd = -1};

    cl->is_ok = client_run(cl, &io);
    SSL_free(io.ssl);
    SSL_CTX_free(io.ctx);
    if (io.fd >= 0)
        close(io.fd);
    ERR_clear_error();
    atomic_store(&cl->is_done, true);
    return NULL;
}

static bool is_client_done(void *arg)
{
    return atomic_load(&((struct client *)arg)->is_done);
}

/* Runs the client's script against the server, the loop turning meanwhile. */
static void client_exchange(struct fixture *f, struct client *cl)
{
    if (cl->unix_path == NULL)
        cl->port = net_http_server_port(f->server);
    if (cl->ca_path == NULL)
        cl->ca_path = f->cert_path;
    atomic_init(&cl->is_done, false);
    assert_int_equal(pthread_create(&cl->thread, NULL, client_main, cl), 0);
    assert_true(loop_run_until(&f->loop, is_client_done, cl, MAX_ITERATIONS));
    assert_int_equal(pthread_join(cl->thread, NULL), 0);
}

static void client_expect_ok(struct fixture *f, struct client *cl)
{
    client_exchange(f, cl);
    if (!cl->is_ok)
        fail_msg("client: %s", cl->why);
}

/* The response of handler() with body. */
static char *response_for(const char *body, size_t len)
{
    static const char fmt[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                              "%zu\r\n\r\n";
    int head = snprintf(NULL, 0, fmt, len);
    char *text = malloc((size_t)head + len + 1);

    assert_non_null(text);
    snprintf(text, (size_t)head + 1, fmt, len);
    memcpy(text + head, body, len);
    text[(size_t)head + len] = '\0';
    return text;
}

/* ---- fixture ---- */

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    char other_cert[300];

    if (f == NULL || uv_loop_init(&f->loop) != 0 || testdir_make(f->dir, sizeof f->dir) != 0)
        return -1;
    snprintf(f->cert_path, sizeof f->cert_path, "%s/cert.pem", f->dir);
    snprintf(f->key_path, sizeof f->key_path, "%s/key.pem", f->dir);
    snprintf(f->other_key_path, sizeof f->other_key_path, "%s/other-key.pem", f->dir);
    snprintf(f->sock_path, sizeof f->sock_path, "%s/concord.sock", f->dir);
    snprintf(other_cert, sizeof other_cert, "%s/other-cert.pem", f->dir);
    snprintf(f->encrypted_key_path, sizeof f->encrypted_key_path, "%s/encrypted-key.pem", f->dir);
    testlib_make_certificate("localhost", f->cert_path, f->key_path, f->encrypted_key_path);
    testlib_make_certificate("localhost", other_cert, f->other_key_path, NULL);
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

#define HELLO_REQUEST "GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n"
#define HELLO_RESPONSE                                                                             \
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nGET /hello "

static void serves_a_request_over_tls_with_alpn_http11(void **state)
{
    struct fixture *f = *state;
    const struct step steps[] = {{.send = HELLO_REQUEST, .expect = HELLO_RESPONSE}};
    struct client cl = {.alpn = "\x02h2\x08http/1.1", .steps = steps, .n_steps = 1};

    server_start(f);
    client_expect_ok(f, &cl);
    assert_string_equal(cl.alpn_got, "http/1.1");
    assert_int_equal(f->n_requests, 1);
}

static void keeps_a_tls_connection_alive_for_a_second_request(void **state)
{
    struct fixture *f = *state;
    const struct step steps[] = {
        {.send = HELLO_REQUEST, .expect = HELLO_RESPONSE},
        {.send = "POST /two HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
         .expect = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n"
                   "POST /two abc"},
        {.send = "GET /bye HTTP/1.1\r\nConnection: close\r\n\r\n",
         .expect = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n"
                   "Connection: close\r\n\r\nGET /bye "},
    };
    struct client cl = {.steps = steps, .n_steps = 3, .wants_end = true};

    server_start(f);
    client_expect_ok(f, &cl);
    assert_string_equal(cl.alpn_got, ""); /* offered none: none chosen */
    assert_int_equal(f->n_requests, 3);
}

static void reads_a_request_cut_into_one_byte_records(void **state)
{
    struct fixture *f = *state;
    const struct step steps[] = {
        {.send = "POST /split HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
         .piece = 1,
         .expect = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 17\r\n\r\n"
                   "POST /split hello"},
    };
    struct client cl = {.steps = steps, .n_steps = 1};

    server_start(f);
    client_expect_ok(f, &cl);
    assert_int_equal(f->n_requests, 1);
}

static void answers_100_continue_through_tls(void **state)
{
    struct fixture *f = *state;
    const struct step steps[] = {
        {.send = "POST /wait HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n",
         .expect = "HTTP/1.1 100 Continue\r\n\r\n"},
        {.send = "ok",
         .expect = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n"
                   "POST /wait ok"},
    };
    struct client cl = {.steps = steps, .n_steps = 2};

    server_start(f);
    client_expect_ok(f, &cl);
}

static void carries_large_bodies_both_ways(void **state)
{
    struct fixture *f = *state;
    char head[128];
    int head_len =
        snprintf(head, sizeof head, "POST /echo HTTP/1.1\r\nContent-Length: %d\r\n\r\n", BIG_BYTES);
    char *request = malloc((size_t)head_len + BIG_BYTES);
    char *body = request + head_len;
    char *response;
    struct client cl = {.n_steps = 1};
    struct step step = {.send = request, .send_len = (size_t)head_len + BIG_BYTES};

    assert_non_null(request);
    memcpy(request, head, (size_t)head_len);
    for (size_t i = 0; i < BIG_BYTES; i++)
        body[i] = (char)('a' + i % 26);
    response = response_for(body, BIG_BYTES);
    step.expect = response;
    cl.steps = &step;
    server_start(f);
    client_expect_ok(f, &cl);
    free(request);
    free(response);
}

static void switches_protocols_inside_tls(void **state)
{
    struct fixture *f = *state;
    const struct step steps[] = {
        {.send = "GET /upgrade HTTP/1.1\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n",
         .expect = UPGRADE_HEAD},
        {.send = "ping", .expect = "ping"},
        {.send = "raw\r\n\x00\xff", .send_len = 7, .expect = "raw\r\n\x00\xff", .expect_len = 7},
        {.send = "bye", .expect = "bye"},
    };
    struct client cl = {.steps = steps, .n_steps = 4, .wants_end = true};

    server_start(f);
    client_expect_ok(f, &cl);
    assert_null(f->raw);
    assert_false(f->is_raw_closed); /* closed by its owner: on_close does not fire */
}

static void counts_raw_records_queued_on_the_socket(void **state)
{
    struct fixture *f = *state;
    const struct step steps[] = {
        {.send = "GET /flood HTTP/1.1\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n",
         .expect = UPGRADE_HEAD},
    };
    struct client cl = {.steps = steps, .n_steps = 1};

    server_start(f);
    client_expect_ok(f, &cl);
    /* The client read only the head: most of the records wait on the socket,
     * none in the TLS session. */
    assert_true(f->flood_queued > FLOOD_BYTES / 2);
    assert_true(f->flood_queued < FLOOD_BYTES + FLOOD_BYTES / 16);
    assert_true(loop_run_until(&f->loop, is_flag_set, &f->is_raw_closed, MAX_ITERATIONS));
}

static void refuses_plain_http_and_garbage_on_the_tls_port(void **state)
{
    struct fixture *f = *state;
    const struct step plain[] = {{.send = HELLO_REQUEST}};
    /* A handshake record of an unknown message type: answered with the fatal
     * alert unexpected_message (10), then the end. */
    const struct step garbage[] = {{.send = "\x16\x03\x01\x00\x05hello",
                                    .send_len = 10,
                                    .expect = "\x15\x03\x03\x00\x02\x02\x0a",
                                    .expect_len = 7}};
    const struct step hello[] = {{.send = HELLO_REQUEST, .expect = HELLO_RESPONSE}};
    struct client cl_plain = {.is_plain = true, .steps = plain, .n_steps = 1, .wants_end = true};
    struct client cl_garbage = {
        .is_plain = true, .steps = garbage, .n_steps = 1, .wants_end = true};
    struct client cl_tls = {.steps = hello, .n_steps = 1};

    server_start(f);
    client_expect_ok(f, &cl_plain); /* ended without a byte in answer */
    client_expect_ok(f, &cl_garbage);
    assert_int_equal(f->n_requests, 0);
    client_expect_ok(f, &cl_tls); /* the listener lives on */
    assert_int_equal(f->n_requests, 1);
}

static void refuses_a_client_whose_alpn_lacks_http11(void **state)
{
    struct fixture *f = *state;
    const struct step steps[] = {{.send = HELLO_REQUEST, .expect = HELLO_RESPONSE}};
    struct client cl = {.alpn = "\x02h2", .steps = steps, .n_steps = 1};

    server_start(f);
    client_exchange(f, &cl);
    assert_false(cl.is_ok);
    assert_string_equal(cl.why, "handshake: tlsv1 alert no application protocol");
    assert_int_equal(f->n_requests, 0);
}

static void keeps_the_unix_socket_plain(void **state)
{
    struct fixture *f = *state;
    struct net_http_server_options opts = server_options(f);
    const struct step steps[] = {{.send = HELLO_REQUEST, .expect = HELLO_RESPONSE}};
    struct client cl = {.unix_path = f->sock_path, .is_plain = true, .steps = steps, .n_steps = 1};

    opts.unix_path = f->sock_path;
    opts.unix_mode = 0600;
    server_start_opts(f, &opts);
    client_expect_ok(f, &cl);
    assert_int_equal(f->n_requests, 1);
}

/* Expects net_http_server_new() to fail with NET_TLS and exactly want. */
static void start_fails(struct fixture *f, const char *cert_path, const char *key_path,
                        const char *want)
{
    struct net_http_server_options opts = server_options(f);
    struct net_http_server *s = NULL;
    char errmsg[256] = "";

    opts.tls_cert_path = cert_path;
    opts.tls_key_path = key_path;
    assert_int_equal(net_http_server_new(&f->loop, &opts, &s, errmsg), NET_TLS);
    assert_null(s);
    assert_string_equal(errmsg, want);
}

static void refuses_unusable_certificate_or_key_files(void **state)
{
    struct fixture *f = *state;
    char missing[320];
    char want[700];

    snprintf(missing, sizeof missing, "%s/missing.pem", f->dir);
    snprintf(want, sizeof want, "TLS certificate %s: No such file or directory", missing);
    start_fails(f, missing, f->key_path, want);
    snprintf(want, sizeof want, "TLS private key %s: No such file or directory", missing);
    start_fails(f, f->cert_path, missing, want);
    snprintf(want, sizeof want, "TLS certificate %s: not a PEM certificate chain (no start line)",
             f->key_path);
    start_fails(f, f->key_path, f->key_path, want);
    snprintf(want, sizeof want,
             "TLS private key %s: not an unencrypted PEM private key (unsupported)", f->cert_path);
    start_fails(f, f->cert_path, f->cert_path, want);
    snprintf(want, sizeof want,
             "TLS private key %s: not an unencrypted PEM private key (bad decrypt)",
             f->encrypted_key_path);
    start_fails(f, f->cert_path, f->encrypted_key_path, want);
    snprintf(want, sizeof want, "TLS private key %s does not match the certificate %s",
             f->other_key_path, f->cert_path);
    start_fails(f, f->cert_path, f->other_key_path, want);
    start_fails(f, f->cert_path, NULL, "TLS needs both a certificate and a private key");
    start_fails(f, NULL, f->key_path, "TLS needs both a certificate and a private key");
    assert_string_equal(net_strerror(NET_TLS), "unusable TLS certificate or key");
}

#define REQUIRED_KEYS "cluster:\n  id: 1\n  secret_path: /etc/concord/secret\n"

static void config_takes_both_tls_paths_or_neither(void **state)
{
    static const char both[] = REQUIRED_KEYS "tls_cert_path: /etc/concord/cert.pem\n"
                                             "tls_key_path: /etc/concord/key.pem\n";
    static const char cert_only[] = REQUIRED_KEYS "tls_cert_path: /etc/concord/cert.pem\n";
    static const char key_only[] = REQUIRED_KEYS "tls_key_path: /etc/concord/key.pem\n";
    struct config *cfg = NULL;
    char errmsg[256] = "";

    (void)state;
    assert_int_equal(config_parse("test.yaml", REQUIRED_KEYS, strlen(REQUIRED_KEYS), &cfg, errmsg),
                     0);
    assert_string_equal(cfg->tls_cert_path, "");
    assert_string_equal(cfg->tls_key_path, "");
    assert_string_equal(cfg->server_url, "http://127.0.0.1:8080");
    config_free(cfg);
    assert_int_equal(config_parse("test.yaml", both, strlen(both), &cfg, errmsg), 0);
    assert_string_equal(cfg->tls_cert_path, "/etc/concord/cert.pem");
    assert_string_equal(cfg->tls_key_path, "/etc/concord/key.pem");
    assert_string_equal(cfg->server_url, "https://127.0.0.1:8080");
    config_free(cfg);
    cfg = NULL;
    assert_int_equal(config_parse("test.yaml", cert_only, strlen(cert_only), &cfg, errmsg),
                     CONFIG_INVALID);
    assert_null(cfg);
    assert_string_equal(errmsg, "test.yaml:4: key 'tls_key_path': required with tls_cert_path");
    assert_int_equal(config_parse("test.yaml", key_only, strlen(key_only), &cfg, errmsg),
                     CONFIG_INVALID);
    assert_string_equal(errmsg, "test.yaml:4: key 'tls_cert_path': required with tls_key_path");
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(serves_a_request_over_tls_with_alpn_http11),
        T(keeps_a_tls_connection_alive_for_a_second_request),
        T(reads_a_request_cut_into_one_byte_records),
        T(answers_100_continue_through_tls),
        T(carries_large_bodies_both_ways),
        T(switches_protocols_inside_tls),
        T(counts_raw_records_queued_on_the_socket),
        T(refuses_plain_http_and_garbage_on_the_tls_port),
        T(refuses_a_client_whose_alpn_lacks_http11),
        T(keeps_the_unix_socket_plain),
        T(refuses_unusable_certificate_or_key_files),
        cmocka_unit_test(config_takes_both_tls_paths_or_neither),
    };
#undef T

    return cmocka_run_group_tests_name("net_tls", tests, NULL, NULL);
}
