/* server/control/h2.h: the HTTP/2 server (prior knowledge, no TLS, no
 * upgrade) that runs inside one Noise connection, on nghttp2. Transport-
 * agnostic: the caller feeds it the decrypted bytes the client sent and gets
 * back, through the `send` callback, the plaintext bytes to encrypt and write.
 *
 * A request is delivered once its headers and whole body have arrived (the
 * body is capped; a larger one is answered 413 without reaching the handler).
 * The handler answers at once or later, with a whole response or with a
 * stream that stays open (the map long poll) and gets DATA appended as
 * messages are produced. A stream the client resets or that ends with the
 * connection is reported once through on_stream_close; after it the handle
 * is dead. Everything runs on one thread; no call may be made from inside the
 * send callback. */
#ifndef CONCORD_SERVER_CONTROL_H2_H
#define CONCORD_SERVER_CONTROL_H2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define H2_CODES(X)                                                                                \
    X(H2_OK, "ok")                                                                                 \
    X(H2_NOMEM, "out of memory")                                                                   \
    X(H2_PROTOCOL, "HTTP/2 protocol error")                                                        \
    X(H2_CLOSED, "stream or session closed")                                                       \
    X(H2_STATE, "call not valid in the stream's state")

enum h2_code {
#define X(code, msg) code,
    H2_CODES(X)
#undef X
};
const char *h2_strerror(int code);

struct h2_session;
struct h2_stream; /* one request; valid from on_request until on_stream_close */

struct h2_header {
    const char *name; /* lowercase, as HTTP/2 requires */
    const char *value;
};

struct h2_request {
    const char *method;              /* ":method" */
    const char *path;                /* ":path", with any query */
    const char *authority;           /* ":authority", "" if absent */
    const struct h2_header *headers; /* regular headers only */
    size_t n_headers;
    const uint8_t *body; /* NUL-terminated; body_len excludes the NUL */
    size_t body_len;
};

struct h2_callbacks {
    /* A complete request. Everything in *req is borrowed for the call: copy
     * what you keep. Answer with h2_respond or h2_stream_start, now or later. */
    void (*on_request)(void *arg, struct h2_stream *st, const struct h2_request *req);
    /* The stream is gone (answered and flushed, reset by the client, or the
     * session is being freed). Fires once per stream that reached
     * on_request, with its user pointer; drop every reference to st. */
    void (*on_stream_close)(void *arg, struct h2_stream *st, void *user);
    /* Plaintext bytes to deliver to the client, in order. Non-zero: the
     * connection is broken (the session is then unusable). */
    int (*send)(void *arg, const uint8_t *data, size_t len);
};

struct h2_options {
    size_t max_body_bytes;           /* per request; 0: 1 MiB */
    uint32_t max_concurrent_streams; /* 0: 100 */
    struct h2_callbacks cb;
    void *arg;
};

int h2_session_new(const struct h2_options *opts, struct h2_session **out);
/* Frees the session; every stream still open gets on_stream_close first.
 * NULL is fine. */
void h2_session_free(struct h2_session *s);

/* Feeds bytes received from the client (preface, frames) and sends whatever
 * the session has to say in reply (SETTINGS, WINDOW_UPDATE, answers). Any
 * non-zero return is fatal for the connection: close it. */
int h2_session_feed(struct h2_session *s, const uint8_t *data, size_t len);
/* Sends everything pending (call after answering or appending outside feed).
 * Non-zero: fatal, as above. */
int h2_session_flush(struct h2_session *s);
/* True once neither side wants more: the client sent GOAWAY or a fatal error
 * happened, and nothing is left to send. Close the connection then. */
bool h2_session_is_done(const struct h2_session *s);
/* Sends a PING; on_ack later is not reported (liveness uses its own path). */
int h2_session_ping(struct h2_session *s);
/* Sends GOAWAY (no new streams); existing streams continue. */
int h2_session_goaway(struct h2_session *s);
/* Heap bytes the session holds now: nghttp2's state (HPACK tables, streams,
 * frames not yet sent), requests being received and response bytes queued. */
size_t h2_session_memory(const struct h2_session *s);

void h2_stream_set_user(struct h2_stream *st, void *user);
void *h2_stream_user(const struct h2_stream *st);

/* Whole response, END_STREAM after the body. Headers: ":status" plus
 * content-type when non-NULL. The body is copied. A HEAD request's answer
 * never carries a body: it is dropped here, and a long response to HEAD
 * ends with its headers (writes then return H2_STATE). */
int h2_respond(struct h2_session *s, struct h2_stream *st, int status, const char *content_type,
               const void *body, size_t len);
/* Long response: headers now, DATA appended later, the stream stays open. */
int h2_stream_start(struct h2_session *s, struct h2_stream *st, int status,
                    const char *content_type);
/* Appends bytes to a started stream (copied), sent as flow control allows. */
int h2_stream_write(struct h2_session *s, struct h2_stream *st, const void *data, size_t len);
/* Ends a started stream once everything appended has been sent. */
int h2_stream_end(struct h2_session *s, struct h2_stream *st);
/* Bytes appended but not yet handed to `send` (backpressure). */
size_t h2_stream_pending(const struct h2_stream *st);

#endif
