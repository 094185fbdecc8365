/* server/net/conn.c: one accepted connection (TCP or Unix socket).
 * Happy path: READING a request -> HANDLING (the handler owns the request and
 * reading is paused) -> WRITING the response -> READING the next request of
 * a kept-alive connection, starting with the bytes already buffered.
 * A request past a limit or malformed is answered (400, 413, 414, 431)
 * without reaching the handler; then, as after any response that ends the
 * connection, the connection is DRAINING: our side is shut down and the
 * peer's remaining bytes are read and dropped for a short while, because
 * closing with unread input sends a reset that can destroy the answer before
 * the peer has read it.
 * A handler may instead switch protocols (net_http_upgrade): HANDLING -> RAW,
 * where bytes are passed through both ways for the new owner until either
 * side closes (RAW -> DRAINING when the owner closes after its last write).
 * Failure: a read or write error, the deadline timer or server shutdown calls
 * net_conn_close(); a request still with the handler is detached, so its
 * net_http_respond() only frees it. Memory is freed when the last handle has
 * closed.
 * TLS (TCP listener with a certificate): the states stay the same, only the
 * bytes change at the socket's edge. Records read are decrypted into the
 * same buffer plain bytes would have gone to, the handshake running inside
 * the first reads (in READING, under its deadline); everything written, the
 * raw stream included, is encrypted first, and the records go to the socket
 * at once in the order the session produced them. A failed handshake or a
 * bad record closes the connection. Plain connections take none of these
 * detours. */
#include "server/net/net_internal.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <http_parser.h>

#include "server/log.h"
#include "server/net/address.h"
#include "server/net/request.h"

/* Room offered to each read; the buffer holds only bytes not yet parsed. */
#define READ_CHUNK_BYTES (64 * 1024)
/* How long a closing connection keeps reading what the peer still sends. */
#define DRAIN_TIMEOUT_MS 2000

enum net_conn_state {
    NET_CONN_READING,
    NET_CONN_HANDLING,
    NET_CONN_WRITING,
    NET_CONN_DRAINING,
    NET_CONN_CLOSING,
    NET_CONN_RAW,
    NET_CONN_N_STATES
};

static const char *const state_names[NET_CONN_N_STATES] = {
    [NET_CONN_READING] = "reading", [NET_CONN_HANDLING] = "handling",
    [NET_CONN_WRITING] = "writing", [NET_CONN_DRAINING] = "draining",
    [NET_CONN_CLOSING] = "closing", [NET_CONN_RAW] = "raw",
};

static const bool transitions[NET_CONN_N_STATES][NET_CONN_N_STATES] = {
    [NET_CONN_READING] =
        {[NET_CONN_HANDLING] = true, [NET_CONN_WRITING] = true, [NET_CONN_CLOSING] = true},
    [NET_CONN_HANDLING] =
        {[NET_CONN_WRITING] = true, [NET_CONN_CLOSING] = true, [NET_CONN_RAW] = true},
    [NET_CONN_WRITING] =
        {[NET_CONN_READING] = true, [NET_CONN_DRAINING] = true, [NET_CONN_CLOSING] = true},
    [NET_CONN_DRAINING] = {[NET_CONN_CLOSING] = true},
    [NET_CONN_RAW] = {[NET_CONN_DRAINING] = true, [NET_CONN_CLOSING] = true},
};

struct net_conn {
    union net_stream sock; /* sock.handle.data == this */
    struct net_tls *tls;   /* NULL: plain (always on the Unix socket) */
    uv_timer_t deadline;   /* one timer, re-armed on each state change */
    enum net_conn_state state;
    unsigned open_handles;
    struct net_http_server *server;
    struct net_conn *prev; /* in server->conns */
    struct net_conn *next;
    struct net_request_parser *parser;
    uint8_t *in; /* received, not yet parsed */
    size_t in_len;
    size_t in_cap;
    uv_write_t write_req;
    char *out; /* the response being written; freed by the write callback */
    bool close_after_write;
    uv_write_t continue_req;
    uv_shutdown_t shutdown_req;
    struct net_http_request *req;    /* with the handler, not answered yet */
    struct net_raw_callbacks raw_cb; /* RAW: the owner's; on_close NULL once it closed */
    void *raw_arg;
    bool is_raw_paused;
    uint64_t id; /* appears in every log line */
    char peer[64];
};

static void conn_on_deadline(uv_timer_t *t)
{
    net_conn_close(t->data, "deadline");
}

static void conn_set_state(struct net_conn *c, enum net_conn_state next)
{
    const struct net_http_server *s = c->server;

    assert(transitions[c->state][next]);
    LOG_DEBUG("http conn=%" PRIu64 " state %s -> %s", c->id, state_names[c->state],
              state_names[next]);
    c->state = next;
    switch (next) {
    case NET_CONN_READING:
    case NET_CONN_WRITING:
        uv_timer_start(&c->deadline, conn_on_deadline, s->idle_timeout_ms, 0);
        break;
    case NET_CONN_DRAINING:
        uv_timer_start(&c->deadline, conn_on_deadline, DRAIN_TIMEOUT_MS, 0);
        break;
    case NET_CONN_HANDLING:
    case NET_CONN_RAW:
        /* The handler bounds its own work (Raft round trips time out); a
         * switched protocol keeps its own liveness. */
        uv_timer_stop(&c->deadline);
        break;
    case NET_CONN_CLOSING:
    case NET_CONN_N_STATES:
        break;
    }
}

static void conn_on_close(uv_handle_t *h)
{
    struct net_conn *c = h->data;
    struct net_http_server *s = c->server;

    if (--c->open_handles > 0)
        return;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    net_request_parser_free(c->parser);
    net_tls_free(c->tls);
    free(c->in);
    free(c);
    net_server_maybe_finish(s);
}

void net_conn_close(struct net_conn *c, const char *reason)
{
    bool was_raw = c->state == NET_CONN_RAW;

    if (c->state == NET_CONN_CLOSING)
        return;
    LOG_DEBUG("http conn=%" PRIu64 " close reason=%s", c->id, reason);
    if (c->req != NULL) {
        struct net_request_internal *in = c->req->internal;

        in->conn = NULL;
        c->req = NULL;
    }
    conn_set_state(c, NET_CONN_CLOSING);
    uv_close(&c->sock.handle, conn_on_close);
    uv_close((uv_handle_t *)&c->deadline, conn_on_close);
    if (was_raw && c->raw_cb.on_close != NULL)
        c->raw_cb.on_close(c->raw_arg, reason);
}

void net_conn_close_all(struct net_http_server *s)
{
    /* Closing only unlinks in the close callback, so the walk is safe. */
    for (struct net_conn *c = s->conns; c != NULL; c = c->next)
        net_conn_close(c, "server closing");
}

/* ---- writes that carry their own bytes: raw streams, TLS records ---- */

struct queued_write {
    uv_write_t req;
    uint8_t data[];
};

static void queued_on_written(uv_write_t *w, int status)
{
    struct net_conn *c = w->handle->data;

    free(w);
    if (status < 0 && c->state != NET_CONN_CLOSING)
        net_conn_close(c, uv_err_name(status));
}

/* Writes the len bytes of w, which the write callback frees. */
static int queued_write_start(struct net_conn *c, struct queued_write *w, size_t len)
{
    uv_buf_t buf = uv_buf_init((char *)w->data, (unsigned)len);

    if (uv_write(&w->req, &c->sock.stream, &buf, 1, queued_on_written) != 0) {
        free(w);
        return NET_CLOSED;
    }
    return 0;
}

/* Writes everything the TLS session has for the peer. */
static int tls_flush(struct net_conn *c)
{
    size_t len = net_tls_pending(c->tls);
    struct queued_write *w;

    if (len == 0)
        return 0;
    w = malloc(sizeof *w + len);
    if (w == NULL)
        return NET_NOMEM;
    net_tls_take(c->tls, w->data, len);
    return queued_write_start(c, w, len);
}

/* TLS: replaces the *len bytes of plaintext in c->out by their records, after
 * anything the session still had to send. */
static int tls_seal(struct net_conn *c, size_t *len)
{
    int rv = net_tls_write(c->tls, c->out, *len);
    char *records;

    if (rv != 0)
        return rv;
    *len = net_tls_pending(c->tls);
    records = malloc(*len);
    if (records == NULL)
        return NET_NOMEM;
    net_tls_take(c->tls, (uint8_t *)records, *len);
    free(c->out);
    c->out = records;
    return 0;
}

/* Writes a copy of data, encrypted on a TLS connection. */
static int conn_queue(struct net_conn *c, const void *data, size_t len)
{
    struct queued_write *w;
    int rv;

    if (len == 0)
        return 0;
    if (c->tls != NULL) {
        rv = net_tls_write(c->tls, data, len);
        return rv != 0 ? rv : tls_flush(c);
    }
    w = malloc(sizeof *w + len);
    if (w == NULL)
        return NET_NOMEM;
    memcpy(w->data, data, len);
    return queued_write_start(c, w, len);
}

/* ---- reading ---- */

/* Makes room for at least `room` bytes after the buffered ones, growing the
 * buffer to a whole read chunk past them. */
static int conn_reserve(struct net_conn *c, size_t room)
{
    if (c->in_cap - c->in_len < room) {
        size_t cap = c->in_len + READ_CHUNK_BYTES;
        uint8_t *bigger = realloc(c->in, cap);

        if (bigger == NULL)
            return NET_NOMEM;
        c->in = bigger;
        c->in_cap = cap;
    }
    return 0;
}

static void conn_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct net_conn *c = h->data;

    (void)suggested;
    if (conn_reserve(c, READ_CHUNK_BYTES) != 0) {
        *buf = uv_buf_init(NULL, 0); /* the read callback gets UV_ENOBUFS */
        return;
    }
    *buf = uv_buf_init((char *)c->in + c->in_len, (unsigned)(c->in_cap - c->in_len));
}

static void conn_process_input(struct net_conn *c);

/* TLS: the n bytes of records just read sit at c->in + c->in_len, where
 * their plaintext belongs; the session copies them before decrypting in
 * their place. Sends what the session has to say (handshake messages).
 * Non-zero: c is closing. */
static int tls_decrypt(struct net_conn *c, size_t n)
{
    size_t got = 1;
    int rv = net_tls_feed(c->tls, c->in + c->in_len, n);

    while (rv == 0 && got > 0) {
        rv = conn_reserve(c, 1);
        if (rv == 0)
            rv = net_tls_read(c->tls, c->in + c->in_len, c->in_cap - c->in_len, &got);
        if (rv == 0)
            c->in_len += got;
    }
    if (rv == NET_PROTOCOL) {
        /* The alert, if the session made one, tells the peer why; with the
         * write queue empty, as it is during a handshake, uv_write() hands
         * it to the kernel before the close. */
        tls_flush(c);
        net_conn_close(c, net_tls_errmsg(c->tls));
        return rv;
    }
    if (rv == 0)
        rv = tls_flush(c);
    if (rv != 0)
        net_conn_close(c, net_strerror(rv));
    return rv;
}

static void conn_on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct net_conn *c = stream->data;

    (void)buf;
    if (nread == 0)
        return;
    if (nread < 0) {
        net_conn_close(c, nread == UV_EOF ? "eof" : uv_err_name((int)nread));
        return;
    }
    if (c->state == NET_CONN_DRAINING)
        return; /* dropped: the buffer space is offered again */
    if (c->tls == NULL)
        c->in_len += (size_t)nread;
    else if (tls_decrypt(c, (size_t)nread) != 0)
        return; /* c is closing */
    if (c->in_len == 0)
        return; /* TLS records without plaintext, e.g. the handshake */
    if (c->state == NET_CONN_RAW) {
        size_t len = c->in_len;

        c->in_len = 0; /* the owner may close c from inside on_read */
        c->raw_cb.on_read(c->raw_arg, c->in, len);
        return;
    }
    conn_process_input(c); /* may close c: do nothing with c after this */
}

static void conn_start_reading(struct net_conn *c)
{
    int rv = uv_read_start(&c->sock.stream, conn_on_alloc, conn_on_read);

    if (rv != 0)
        net_conn_close(c, uv_err_name(rv));
}

static void conn_on_shutdown(uv_shutdown_t *req, int status)
{
    struct net_conn *c = req->handle->data;

    if (c->state != NET_CONN_CLOSING && status < 0)
        net_conn_close(c, uv_err_name(status));
}

static void conn_drain(struct net_conn *c)
{
    int rv;

    conn_set_state(c, NET_CONN_DRAINING);
    if (c->tls != NULL) {
        net_tls_close_notify(c->tls);
        rv = tls_flush(c);
        if (rv != 0) {
            net_conn_close(c, net_strerror(rv));
            return;
        }
    }
    rv = uv_shutdown(&c->shutdown_req, &c->sock.stream, conn_on_shutdown);
    if (rv != 0) {
        net_conn_close(c, uv_err_name(rv));
        return;
    }
    c->in_len = 0;
    conn_start_reading(c);
}

static void conn_on_written(uv_write_t *w, int status)
{
    struct net_conn *c = w->handle->data;

    free(c->out);
    c->out = NULL;
    if (c->state == NET_CONN_CLOSING)
        return;
    if (status < 0) {
        net_conn_close(c, uv_err_name(status));
        return;
    }
    if (c->close_after_write) {
        conn_drain(c);
        return;
    }
    conn_set_state(c, NET_CONN_READING);
    conn_start_reading(c);
    if (c->state == NET_CONN_READING)
        conn_process_input(c); /* a request may already be buffered */
}

/* Queues the whole response; moves to WRITING. On failure closes c. */
static void conn_write_response(struct net_conn *c, int status, const char *content_type,
                                const char *extra_headers, const void *body, size_t body_len,
                                size_t content_length, bool keep_alive, bool is_http10)
{
    static const char fmt[] = "HTTP/1.1 %d %s\r\n%s%s%sContent-Length: %zu\r\n%s%s\r\n";
    const char *connection = !keep_alive ? "Connection: close\r\n"
                             : is_http10 ? "Connection: keep-alive\r\n"
                                         : "";
    const char *ct_open = content_type != NULL ? "Content-Type: " : "";
    const char *ct = content_type != NULL ? content_type : "";
    const char *ct_close = content_type != NULL ? "\r\n" : "";
    const char *extra = extra_headers != NULL ? extra_headers : "";
    const char *reason = http_status_str((enum http_status)status);
    int head_len = snprintf(NULL, 0, fmt, status, reason, ct_open, ct, ct_close, content_length,
                            connection, extra);
    size_t out_len;
    uv_buf_t buf;
    int rv;

    if (head_len < 0) {
        net_conn_close(c, "cannot format response");
        return;
    }
    c->out = malloc((size_t)head_len + 1 + body_len);
    if (c->out == NULL) {
        net_conn_close(c, "out of memory");
        return;
    }
    snprintf(c->out, (size_t)head_len + 1, fmt, status, reason, ct_open, ct, ct_close,
             content_length, connection, extra);
    if (body_len > 0)
        memcpy(c->out + head_len, body, body_len);
    out_len = (size_t)head_len + body_len;
    if (c->tls != NULL) {
        rv = tls_seal(c, &out_len);
        if (rv != 0) {
            free(c->out);
            c->out = NULL;
            net_conn_close(c, rv == NET_PROTOCOL ? net_tls_errmsg(c->tls) : net_strerror(rv));
            return;
        }
    }
    c->close_after_write = !keep_alive;
    conn_set_state(c, NET_CONN_WRITING);
    buf = uv_buf_init(c->out, (unsigned)out_len);
    rv = uv_write(&c->write_req, &c->sock.stream, &buf, 1, conn_on_written);
    if (rv != 0) {
        free(c->out);
        c->out = NULL;
        net_conn_close(c, uv_err_name(rv));
    }
}

static void conn_on_continue_written(uv_write_t *w, int status)
{
    struct net_conn *c = w->handle->data;

    if (c->state != NET_CONN_CLOSING && status < 0)
        net_conn_close(c, uv_err_name(status));
}

static void conn_write_continue(struct net_conn *c)
{
    static char interim[] = "HTTP/1.1 100 Continue\r\n\r\n";
    uv_buf_t buf = uv_buf_init(interim, sizeof interim - 1);
    int rv;

    if (c->tls != NULL) {
        rv = conn_queue(c, interim, sizeof interim - 1);
        if (rv != 0)
            net_conn_close(c, net_strerror(rv));
        return;
    }
    rv = uv_write(&c->continue_req, &c->sock.stream, &buf, 1, conn_on_continue_written);
    if (rv != 0)
        net_conn_close(c, uv_err_name(rv));
}

static void conn_answer_error(struct net_conn *c)
{
    int status = net_request_parser_status(c->parser);
    const char *why = net_request_parser_errmsg(c->parser);
    char body[300];
    int n = snprintf(body, sizeof body, "%s\n", why);

    LOG_DEBUG("http conn=%" PRIu64 " peer=%s rejected status=%d reason=%s", c->id, c->peer, status,
              why);
    uv_read_stop(&c->sock.stream);
    conn_write_response(c, status, "text/plain; charset=utf-8", NULL, body, (size_t)n, (size_t)n,
                        false, false);
}

static void conn_hand_over(struct net_conn *c, struct net_http_request *req)
{
    struct net_request_internal *in = req->internal;
    const struct net_http_server *s = c->server;

    req->conn_id = c->id;
    memcpy(req->peer, c->peer, sizeof req->peer);
    in->conn = c;
    c->req = req;
    uv_read_stop(&c->sock.stream);
    conn_set_state(c, NET_CONN_HANDLING);
    LOG_DEBUG("http conn=%" PRIu64 " request %s %s", c->id, req->method, req->path);
    s->handler(s->handler_arg, req);
}

static void conn_process_input(struct net_conn *c)
{
    while (c->state == NET_CONN_READING && c->in_len > 0) {
        struct net_http_request *req;
        size_t used;
        int rv = net_request_parse(c->parser, c->in, c->in_len, &used, &req);

        memmove(c->in, c->in + used, c->in_len - used);
        c->in_len -= used;
        if (net_request_parser_take_continue(c->parser))
            conn_write_continue(c);
        if (rv != 0) {
            if (c->state == NET_CONN_READING)
                conn_answer_error(c);
            return;
        }
        if (req == NULL)
            return;
        if (c->state != NET_CONN_READING) {
            net_request_free(req); /* the interim write failed: c is closing */
            return;
        }
        conn_hand_over(c, req); /* the handler may answer, or close, right away */
        return;
    }
}

void net_http_respond(struct net_http_request *req, int status, const char *content_type,
                      const char *extra_headers, const void *body, size_t len)
{
    struct net_request_internal *in = req->internal;
    struct net_conn *c = in->conn;

    if (c != NULL) {
        assert(c->req == req && c->state == NET_CONN_HANDLING);
        c->req = NULL;
        in->conn = NULL;
        /* The body is copied before req (which it may point into) is freed. */
        conn_write_response(c, status, content_type, extra_headers, in->is_head ? NULL : body,
                            in->is_head ? 0 : len, len, in->keep_alive && !c->server->is_closing,
                            in->is_http10);
    }
    net_request_free(req);
}

/* ---- switched protocols (struct net_raw is a struct net_conn in RAW) ---- */

struct net_raw *net_http_upgrade(struct net_http_request *req, const void *head, size_t head_len,
                                 const struct net_raw_callbacks *cb, void *arg)
{
    struct net_request_internal *in = req->internal;
    struct net_conn *c = in->conn;

    net_request_free(req);
    if (c == NULL)
        return NULL;
    assert(c->req == req && c->state == NET_CONN_HANDLING);
    c->req = NULL;
    if (conn_queue(c, head, head_len) != 0) {
        net_conn_close(c, "cannot write the upgrade response");
        return NULL;
    }
    c->raw_cb = *cb;
    c->raw_arg = arg;
    conn_set_state(c, NET_CONN_RAW);
    LOG_DEBUG("http conn=%" PRIu64 " switched protocols", c->id);
    conn_start_reading(c);
    if (c->state == NET_CONN_RAW && c->in_len > 0) {
        size_t len = c->in_len;

        c->in_len = 0;
        c->raw_cb.on_read(c->raw_arg, c->in, len);
    }
    return (struct net_raw *)c;
}

int net_raw_write(struct net_raw *r, const void *data, size_t len)
{
    struct net_conn *c = (struct net_conn *)r;
    int rv;

    if (c->state != NET_CONN_RAW)
        return NET_CLOSED;
    rv = conn_queue(c, data, len);
    if (rv != 0)
        net_conn_close(c, net_strerror(rv));
    return rv;
}

size_t net_raw_write_queued(const struct net_raw *r)
{
    const struct net_conn *c = (const struct net_conn *)r;

    return c->sock.stream.write_queue_size;
}

void net_raw_pause(struct net_raw *r, bool is_paused)
{
    struct net_conn *c = (struct net_conn *)r;

    if (c->state != NET_CONN_RAW || c->is_raw_paused == is_paused)
        return;
    c->is_raw_paused = is_paused;
    if (is_paused)
        uv_read_stop(&c->sock.stream);
    else
        conn_start_reading(c);
}

const char *net_raw_peer(const struct net_raw *r)
{
    return ((const struct net_conn *)r)->peer;
}

uint64_t net_raw_id(const struct net_raw *r)
{
    return ((const struct net_conn *)r)->id;
}

void net_raw_close(struct net_raw *r, const char *reason)
{
    struct net_conn *c = (struct net_conn *)r;

    c->raw_cb.on_close = NULL;
    if (c->state != NET_CONN_RAW)
        return;
    LOG_DEBUG("http conn=%" PRIu64 " closing raw stream: %s", c->id, reason);
    uv_read_stop(&c->sock.stream);
    conn_drain(c); /* the shutdown waits for the queued writes */
}

static void reject_on_close(uv_handle_t *h)
{
    struct net_http_server *s = h->data;

    s->is_reject_busy = false;
    s->open_handles--;
    net_server_maybe_finish(s);
}

/* No memory for a connection: accept and close the socket at once, so the
 * listener keeps going (libuv stops polling it until the socket is taken). */
static void reject(struct net_http_server *s, uv_stream_t *listener, bool is_local)
{
    int rv;

    LOG_ERROR("http accept: out of memory, dropping a connection");
    if (s->is_reject_busy)
        return;
    rv =
        is_local ? uv_pipe_init(s->loop, &s->reject.pipe, 0) : uv_tcp_init(s->loop, &s->reject.tcp);
    if (rv != 0)
        return;
    s->reject.handle.data = s;
    s->is_reject_busy = true;
    s->open_handles++;
    uv_accept(listener, &s->reject.stream);
    uv_close(&s->reject.handle, reject_on_close);
}

void net_conn_accept(struct net_http_server *s, uv_stream_t *listener, bool is_local)
{
    struct net_request_limits limits = {
        .max_header_bytes = s->max_header_bytes,
        .max_body_bytes = is_local ? s->max_local_body_bytes : s->max_body_bytes,
        .body_limit = s->body_limit,
        .body_limit_arg = s->handler_arg,
        .is_local = is_local,
    };
    struct net_conn *c = calloc(1, sizeof *c);
    int rv;

    if (c == NULL)
        goto err;
    if (net_request_parser_new(&limits, &c->parser) != 0)
        goto err_after_alloc;
    rv = is_local ? uv_pipe_init(s->loop, &c->sock.pipe, 0) : uv_tcp_init(s->loop, &c->sock.tcp);
    if (rv != 0)
        goto err_after_parser;
    uv_timer_init(s->loop, &c->deadline);
    c->sock.handle.data = c;
    c->deadline.data = c;
    c->open_handles = 2;
    c->server = s;
    c->id = s->next_conn_id++;
    c->state = NET_CONN_READING;
    c->next = s->conns;
    if (s->conns != NULL)
        s->conns->prev = c;
    s->conns = c;
    /* From here on the handles exist: every failure closes c. */
    rv = uv_accept(listener, &c->sock.stream);
    if (rv != 0) {
        net_conn_close(c, uv_err_name(rv));
        return;
    }
    if (is_local) {
        snprintf(c->peer, sizeof c->peer, "unix");
    } else {
        struct sockaddr_storage peer;
        int len = sizeof peer;

        uv_tcp_nodelay(&c->sock.tcp, 1);
        if (uv_tcp_getpeername(&c->sock.tcp, (struct sockaddr *)&peer, &len) == 0)
            net_address_format((struct sockaddr *)&peer, c->peer, sizeof c->peer);
        else
            snprintf(c->peer, sizeof c->peer, "unknown");
        if (s->tls != NULL) {
            c->tls = net_tls_new(s->tls, c->id);
            if (c->tls == NULL) {
                net_conn_close(c, "out of memory");
                return;
            }
        }
    }
    LOG_DEBUG("http conn=%" PRIu64 " open peer=%s%s", c->id, c->peer, c->tls != NULL ? " tls" : "");
    uv_timer_start(&c->deadline, conn_on_deadline, s->idle_timeout_ms, 0);
    conn_start_reading(c);
    return;

err_after_parser:
    net_request_parser_free(c->parser);
err_after_alloc:
    free(c);
err:
    reject(s, listener, is_local);
}
