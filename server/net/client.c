/* server/net/client.c: one HTTP/1.1 request on a fresh connection, for
 * replica-to-replica calls, and the client side of a protocol switch.
 * Happy path: RESOLVING (numeric addresses and "localhost" skip it) ->
 * CONNECTING -> EXCHANGING (the request is written while the response is
 * read and parsed) -> the callback with the status and body -> CLOSING.
 * Failure: a resolve, connect, write, read or parse error, or the one timer
 * covering the whole exchange, reports once and closes. The callback fires
 * exactly once and never from inside net_http_client_send(); memory is freed
 * when both handles have closed and no address lookup is outstanding.
 * TLS (use_tls) changes only the bytes at the socket's edge, in EXCHANGING:
 * the ClientHello goes out first, records read are decrypted in place before
 * the parser sees them, and the request is encrypted and sent once the
 * handshake is done. A failed handshake or a bad record ends the exchange
 * with NET_PROTOCOL.
 * An upgrade (net_http_client_upgrade) is the same exchange that ends at the
 * response head: a 101 moves it to RAW (the timer stops, bytes pass through
 * both ways, TLS still at the edge), where an I/O error or the peer's end
 * closes the handles and on_close fires from their close callback; the
 * owner's close moves it to DRAINING (close_notify, shutdown after the
 * queued writes, the timer bounding the wait) and then CLOSING. */
#include "server/net/net_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <http_parser.h>

#include "server/log.h"
#include "server/net/address.h"

#define CLIENT_READ_BYTES (64 * 1024)
/* How long a closed upgraded stream may take to write what it had queued. */
#define DRAIN_TIMEOUT_MS 2000

enum exchange_state {
    EXCHANGE_RESOLVING,
    EXCHANGE_CONNECTING,
    EXCHANGE_EXCHANGING,
    EXCHANGE_RAW,
    EXCHANGE_DRAINING,
    EXCHANGE_CLOSING
};

/* One write that carries its own bytes; its callback frees it. */
struct queued_write {
    uv_write_t req;
    uint8_t data[];
};

struct exchange {
    uv_tcp_t tcp;     /* tcp.data == this */
    uv_timer_t timer; /* the whole exchange; for an upgrade, up to the answer, then the drain */
    uv_getaddrinfo_t resolve;
    uv_connect_t connect;
    uv_shutdown_t shutdown;
    enum exchange_state state;
    unsigned open_handles;
    bool is_resolving;              /* a lookup is outstanding: its callback must run before free */
    net_http_client_cb cb;          /* a request; NULL for an upgrade */
    net_http_upgrade_cb on_upgrade; /* an upgrade; NULL for a request */
    struct net_raw_callbacks raw_cb;
    const char *close_reason; /* RAW ended by itself: on_close fires with it once closed */
    void *arg;
    bool has_reported;
    char host[256];
    char port[16];
    struct queued_write *request; /* NULL once handed to the socket or the session */
    size_t request_len;
    struct net_tls *tls; /* NULL: plain HTTP */
    http_parser parser;  /* parser.data == this */
    int http_status;
    bool is_complete;
    bool is_too_big;
    uint8_t *body;
    size_t body_len;
    size_t body_cap;
    size_t max_response_bytes;
    char read_buf[CLIENT_READ_BYTES]; /* over TLS, the records' plaintext replaces them */
};

static void exchange_maybe_free(struct exchange *x)
{
    if (x->open_handles > 0 || x->is_resolving)
        return;
    free(x->request);
    net_tls_free(x->tls);
    free(x->body);
    free(x);
}

static void exchange_on_close(uv_handle_t *h)
{
    struct exchange *x = h->data;

    if (--x->open_handles == 0 && x->close_reason != NULL)
        x->raw_cb.on_close(x->arg, x->close_reason);
    exchange_maybe_free(x);
}

static void exchange_close_handles(struct exchange *x)
{
    x->state = EXCHANGE_CLOSING;
    if (x->is_resolving)
        uv_cancel((uv_req_t *)&x->resolve);
    uv_close((uv_handle_t *)&x->tcp, exchange_on_close);
    uv_close((uv_handle_t *)&x->timer, exchange_on_close);
}

static void exchange_report(struct exchange *x, int status)
{
    bool is_ok = status == NET_OK || status == NET_REFUSED;

    x->has_reported = true;
    if (x->on_upgrade != NULL)
        x->on_upgrade(x->arg, status, is_ok ? x->http_status : 0);
    else
        x->cb(x->arg, status, is_ok ? x->http_status : 0, is_ok ? x->body : NULL,
              is_ok ? x->body_len : 0);
}

/* An upgraded stream ends: by itself in RAW (on_close follows, with
 * reason, once the handles closed), or at the end of the owner's close. */
static void raw_end(struct exchange *x, const char *reason)
{
    if (x->state == EXCHANGE_CLOSING)
        return;
    if (x->state == EXCHANGE_RAW)
        x->close_reason = reason;
    exchange_close_handles(x);
}

/* Ends x for good: before an upgrade's answer or a request's response,
 * reports status (once); in RAW, on_close follows once the handles closed.
 * x is freed later. */
static void exchange_finish(struct exchange *x, int status)
{
    switch (x->state) {
    case EXCHANGE_CLOSING:
        return;
    case EXCHANGE_RAW:
    case EXCHANGE_DRAINING:
        raw_end(x, status == NET_PROTOCOL && x->tls != NULL ? net_tls_errmsg(x->tls)
                                                            : net_strerror(status));
        return;
    case EXCHANGE_RESOLVING:
    case EXCHANGE_CONNECTING:
    case EXCHANGE_EXCHANGING:
        x->state = EXCHANGE_CLOSING; /* a callback that closes the handle finds it closing */
        if (!x->has_reported)
            exchange_report(x, status);
        break;
    }
    exchange_close_handles(x);
}

static int parser_on_body(http_parser *hp, const char *at, size_t len)
{
    struct exchange *x = hp->data;

    if (len > x->max_response_bytes - x->body_len) {
        x->is_too_big = true;
        return -1;
    }
    if (x->body_len + len + 1 > x->body_cap) {
        size_t cap = x->body_cap == 0 ? 4096 : x->body_cap;
        uint8_t *bigger;

        while (cap < x->body_len + len + 1)
            cap *= 2;
        bigger = realloc(x->body, cap);
        if (bigger == NULL)
            return -1;
        x->body = bigger;
        x->body_cap = cap;
    }
    memcpy(x->body + x->body_len, at, len);
    x->body_len += len;
    x->body[x->body_len] = '\0';
    return 0;
}

static int parser_on_message_complete(http_parser *hp)
{
    struct exchange *x = hp->data;

    /* An interim 1xx answer is followed by the real one. */
    if (hp->status_code >= 100 && hp->status_code < 200)
        return 0;
    x->http_status = (int)hp->status_code;
    x->is_complete = true;
    http_parser_pause(hp, 1);
    return 0;
}

/* An upgrade's answer ends with its head: a 101 hands the rest of the
 * bytes to the new protocol (2: no body, no further message), anything but
 * an interim 1xx is reported as it is. */
static int parser_on_headers_complete(http_parser *hp)
{
    struct exchange *x = hp->data;
    bool is_interim = hp->status_code >= 100 && hp->status_code < 200 && hp->status_code != 101;

    if (x->on_upgrade == NULL || is_interim)
        return 0;
    x->http_status = (int)hp->status_code;
    x->is_complete = true;
    if (hp->status_code == 101)
        return 2;
    http_parser_pause(hp, 1);
    return 0;
}

static const http_parser_settings response_settings = {
    .on_headers_complete = parser_on_headers_complete,
    .on_body = parser_on_body,
    .on_message_complete = parser_on_message_complete,
};

/* Before the answer: the exchange's deadline. DRAINING: the queued writes
 * took too long. */
static void exchange_on_timeout(uv_timer_t *t)
{
    exchange_finish(t->data, NET_TIMEOUT);
}

static void exchange_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct exchange *x = h->data;

    (void)suggested;
    *buf = uv_buf_init(x->read_buf, sizeof x->read_buf);
}

static void exchange_on_written(uv_write_t *w, int status)
{
    struct exchange *x = w->handle->data;

    free(w);
    /* The request may or may not have arrived: the caller must not assume. */
    if (status < 0)
        exchange_finish(x, NET_CLOSED);
}

/* Writes the len bytes of w, which is freed either way. */
static int exchange_write(struct exchange *x, struct queued_write *w, size_t len)
{
    uv_buf_t buf = uv_buf_init((char *)w->data, (unsigned)len);

    if (uv_write(&w->req, (uv_stream_t *)&x->tcp, &buf, 1, exchange_on_written) != 0) {
        free(w);
        return NET_CLOSED;
    }
    return 0;
}

/* TLS: writes everything the session has for the server. */
static int exchange_flush(struct exchange *x)
{
    size_t len = net_tls_pending(x->tls);
    struct queued_write *w;

    if (len == 0)
        return 0;
    w = malloc(sizeof *w + len);
    if (w == NULL)
        return NET_NOMEM;
    net_tls_take(x->tls, w->data, len);
    return exchange_write(x, w, len);
}

/* TLS: encrypts the request; the plaintext goes at once. */
static int exchange_seal_request(struct exchange *x)
{
    int rv = net_tls_write(x->tls, x->request->data, x->request_len);

    free(x->request);
    x->request = NULL;
    return rv;
}

/* The server switched protocols; the len bytes at rest followed its head. */
static void exchange_switch(struct exchange *x, const char *rest, size_t len)
{
    x->state = EXCHANGE_RAW;
    uv_timer_stop(&x->timer);
    exchange_report(x, NET_OK);
    if (x->state == EXCHANGE_RAW && len > 0)
        x->raw_cb.on_read(x->arg, (const uint8_t *)rest, len);
}

/* Parses len bytes of the response (0: the connection has ended) and
 * finishes x once the outcome is known. */
static void exchange_parse(struct exchange *x, const char *data, size_t len)
{
    size_t used = http_parser_execute(&x->parser, &response_settings, data, len);
    enum http_errno err = HTTP_PARSER_ERRNO(&x->parser);

    if (x->is_complete && x->on_upgrade != NULL && x->http_status == 101)
        exchange_switch(x, data + used, len - used);
    else if (x->is_complete)
        exchange_finish(x, x->on_upgrade != NULL ? NET_REFUSED : NET_OK);
    else if (x->is_too_big)
        exchange_finish(x, NET_TOOBIG);
    else if (err == HPE_CB_body)
        exchange_finish(x, NET_NOMEM);
    else if (err != HPE_OK)
        exchange_finish(x, NET_PROTOCOL);
    else if (len == 0)
        exchange_finish(x, NET_CLOSED);
}

/* Bytes from the server: the response until the switch, the owner's after. */
static void exchange_input(struct exchange *x, const char *data, size_t len)
{
    if (x->state == EXCHANGE_RAW)
        x->raw_cb.on_read(x->arg, (const uint8_t *)data, len);
    else
        exchange_parse(x, data, len);
}

static bool exchange_is_open(const struct exchange *x)
{
    return x->state == EXCHANGE_EXCHANGING || x->state == EXCHANGE_RAW;
}

/* TLS: the n bytes of records just read sit in read_buf; once the session
 * has copied them, read_buf takes their plaintext, which is parsed or passed
 * on. Then sends what the session has to say: handshake messages, and the
 * request as soon as the handshake is done. */
static void exchange_decrypt(struct exchange *x, size_t n)
{
    uint8_t *buf = (uint8_t *)x->read_buf;
    size_t got = 0;
    int rv = net_tls_feed(x->tls, buf, n);
    int flush_rv;

    do {
        if (rv == 0)
            rv = net_tls_read(x->tls, buf, sizeof x->read_buf, &got);
        if (rv == 0 && got > 0)
            exchange_input(x, x->read_buf, got);
    } while (rv == 0 && got > 0 && exchange_is_open(x));
    if (!exchange_is_open(x))
        return;
    if (rv == 0 && x->request != NULL && net_tls_is_established(x->tls))
        rv = exchange_seal_request(x);
    if (rv == NET_PROTOCOL)
        LOG_WARN("http client to %s port %s: %s", x->host, x->port, net_tls_errmsg(x->tls));
    /* Handshake messages and the request; after a failure, the alert that
     * tells the server why, if the session made one. */
    flush_rv = exchange_flush(x);
    if (rv == 0)
        rv = flush_rv;
    if (rv != 0)
        exchange_finish(x, rv);
}

static void exchange_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct exchange *x = s->data;

    if (nread == 0 || !exchange_is_open(x))
        return;
    if (x->state == EXCHANGE_RAW && nread < 0)
        raw_end(x, nread == UV_EOF ? "eof" : uv_err_name((int)nread));
    else if (nread == UV_EOF)
        exchange_parse(x, NULL, 0); /* a body delimited by the end of the connection ends */
    else if (nread < 0)
        exchange_finish(x, NET_CLOSED);
    else if (x->tls != NULL)
        exchange_decrypt(x, (size_t)nread);
    else
        exchange_input(x, buf->base, (size_t)nread);
}

static void exchange_on_connect(uv_connect_t *req, int status)
{
    struct exchange *x = req->handle->data;
    int rv;

    if (x->state == EXCHANGE_CLOSING)
        return;
    if (status < 0) {
        exchange_finish(x, NET_CONNECT);
        return;
    }
    x->state = EXCHANGE_EXCHANGING;
    uv_tcp_nodelay(&x->tcp, 1);
    if (x->tls != NULL) {
        rv = exchange_flush(x); /* the ClientHello */
    } else {
        rv = exchange_write(x, x->request, x->request_len);
        x->request = NULL;
    }
    if (rv == 0)
        rv = uv_read_start((uv_stream_t *)&x->tcp, exchange_on_alloc, exchange_on_read);
    if (rv != 0)
        exchange_finish(x, NET_CONNECT);
}

static int exchange_connect(struct exchange *x, const struct sockaddr *addr)
{
    x->state = EXCHANGE_CONNECTING;
    return uv_tcp_connect(&x->connect, &x->tcp, addr, exchange_on_connect);
}

static void exchange_on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct exchange *x = req->data;

    x->is_resolving = false;
    if (x->state == EXCHANGE_CLOSING) {
        uv_freeaddrinfo(res);
        exchange_maybe_free(x);
        return;
    }
    if (status < 0 || res == NULL) {
        uv_freeaddrinfo(res);
        exchange_finish(x, NET_CONNECT);
        return;
    }
    if (exchange_connect(x, res->ai_addr) != 0)
        exchange_finish(x, NET_CONNECT);
    uv_freeaddrinfo(res);
}

/* A request carries its body and asks for the connection to be closed
 * after the response; an upgrade has no body, its extra headers ask for the
 * switch. */
static int format_request(struct exchange *x, const struct net_http_client_request *r,
                          const char *host_header)
{
    static const char fmt[] = "%s %s HTTP/1.1\r\nHost: %s\r\n%s%s\r\n";
    size_t body_len = x->on_upgrade != NULL ? 0 : r->body_len;
    const char *extra = r->extra_headers != NULL ? r->extra_headers : "";
    char framing[64] = "";
    int head_len;
    char *out;

    if (x->on_upgrade == NULL)
        snprintf(framing, sizeof framing, "Content-Length: %zu\r\nConnection: close\r\n", body_len);
    head_len = snprintf(NULL, 0, fmt, r->method, r->path, host_header, framing, extra);
    if (head_len < 0)
        return NET_PROTOCOL;
    x->request = malloc(sizeof *x->request + (size_t)head_len + 1 + body_len);
    if (x->request == NULL)
        return NET_NOMEM;
    out = (char *)x->request->data;
    snprintf(out, (size_t)head_len + 1, fmt, r->method, r->path, host_header, framing, extra);
    if (body_len > 0)
        memcpy(out + head_len, r->body, body_len);
    x->request_len = (size_t)head_len + body_len;
    return 0;
}

/* Starts the exchange x was set up for (its callbacks and arg). On failure
 * x is freed or closing, and no callback fires. */
static int exchange_start(struct exchange *x, uv_loop_t *loop,
                          const struct net_http_client_request *r)
{
    struct sockaddr_storage addr;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    unsigned port;
    int rv;

    if (net_address_split(r->address, x->host, sizeof x->host, &port) != 0 || port == 0) {
        free(x);
        return NET_ADDRESS;
    }
    snprintf(x->port, sizeof x->port, "%u", port);
    rv = format_request(x, r, r->address);
    if (rv == 0 && r->use_tls) {
        x->tls = net_tls_client_new(x->host);
        rv = x->tls == NULL ? NET_NOMEM : 0;
    }
    if (rv != 0) {
        free(x->request);
        free(x);
        return rv;
    }
    x->max_response_bytes = r->max_response_bytes;
    http_parser_init(&x->parser, HTTP_RESPONSE);
    x->parser.data = x;
    uv_tcp_init(loop, &x->tcp);
    uv_timer_init(loop, &x->timer);
    x->tcp.data = x;
    x->timer.data = x;
    x->resolve.data = x;
    x->open_handles = 2;
    /* From here on, failures close the handles; x frees itself afterwards.
     * has_reported keeps the callback from firing for a send that failed. */
    uv_timer_start(&x->timer, exchange_on_timeout, r->timeout_ms, 0);
    if (net_address_numeric(r->address, &addr) == 0) {
        rv = exchange_connect(x, (const struct sockaddr *)&addr);
    } else {
        x->state = EXCHANGE_RESOLVING;
        rv = uv_getaddrinfo(loop, &x->resolve, exchange_on_resolved, x->host, x->port, &hints);
        x->is_resolving = rv == 0;
    }
    if (rv != 0) {
        x->has_reported = true;
        exchange_finish(x, NET_CONNECT);
        return NET_CONNECT;
    }
    return 0;
}

int net_http_client_send(uv_loop_t *loop, const struct net_http_client_request *r,
                         net_http_client_cb cb, void *arg)
{
    struct exchange *x = calloc(1, sizeof *x);

    if (x == NULL)
        return NET_NOMEM;
    x->cb = cb;
    x->arg = arg;
    return exchange_start(x, loop, r);
}

/* ---- upgrades (struct net_client_raw is a struct exchange) ---- */

int net_http_client_upgrade(uv_loop_t *loop, const struct net_http_client_request *r,
                            net_http_upgrade_cb on_upgrade, const struct net_raw_callbacks *cb,
                            void *arg, struct net_client_raw **out)
{
    struct exchange *x = calloc(1, sizeof *x);
    int rv;

    if (x == NULL)
        return NET_NOMEM;
    x->on_upgrade = on_upgrade;
    x->raw_cb = *cb;
    x->arg = arg;
    rv = exchange_start(x, loop, r);
    if (rv == 0)
        *out = (struct net_client_raw *)x;
    return rv;
}

int net_client_raw_write(struct net_client_raw *c, const void *data, size_t len)
{
    struct exchange *x = (struct exchange *)c;
    struct queued_write *w;
    int rv;

    if (x->state != EXCHANGE_RAW)
        return NET_CLOSED;
    if (len == 0)
        return 0;
    if (x->tls != NULL) {
        rv = net_tls_write(x->tls, data, len);
        if (rv == 0)
            rv = exchange_flush(x);
    } else {
        w = malloc(sizeof *w + len);
        rv = w == NULL ? NET_NOMEM : 0;
        if (rv == 0) {
            memcpy(w->data, data, len);
            rv = exchange_write(x, w, len);
        }
    }
    if (rv != 0)
        exchange_finish(x, rv);
    return rv;
}

size_t net_client_raw_write_queued(const struct net_client_raw *c)
{
    return ((const struct exchange *)c)->tcp.write_queue_size;
}

static void exchange_on_shutdown(uv_shutdown_t *req, int status)
{
    struct exchange *x = req->handle->data;

    (void)status; /* either way, nothing more will be written */
    if (x->state == EXCHANGE_DRAINING)
        exchange_close_handles(x);
}

void net_client_raw_close(struct net_client_raw *c, const char *reason)
{
    struct exchange *x = (struct exchange *)c;

    x->close_reason = NULL; /* the owner's close is not reported back */
    if (x->state == EXCHANGE_CLOSING || x->state == EXCHANGE_DRAINING)
        return;
    if (x->state != EXCHANGE_RAW) {
        x->has_reported = true;
        exchange_finish(x, NET_CLOSED);
        return;
    }
    LOG_DEBUG("http client to %s port %s: closing the upgraded stream: %s", x->host, x->port,
              reason);
    x->state = EXCHANGE_DRAINING;
    uv_read_stop((uv_stream_t *)&x->tcp);
    if (x->tls != NULL) {
        net_tls_close_notify(x->tls);
        if (exchange_flush(x) != 0) {
            exchange_close_handles(x);
            return;
        }
    }
    if (uv_shutdown(&x->shutdown, (uv_stream_t *)&x->tcp, exchange_on_shutdown) != 0) {
        exchange_close_handles(x);
        return;
    }
    uv_timer_start(&x->timer, exchange_on_timeout, DRAIN_TIMEOUT_MS, 0);
}
