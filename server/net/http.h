/* server/net/http.h: the HTTP/1.1 server (TCP and Unix socket listeners on
 * libuv, parsed with http-parser; optionally TLS on TCP, with OpenSSL) and a
 * small asynchronous HTTP/1.1 client for replica-to-replica requests.
 *
 * Server: each complete request is handed to the handler as a heap object the
 * handler owns until it calls net_http_respond() exactly once, now or later
 * (after a Raft round trip). If the connection dies meanwhile, respond only
 * frees the request. One request at a time per connection (keep-alive, no
 * pipelined concurrency): the next one is parsed after the response is queued. */
#ifndef CONCORD_SERVER_NET_HTTP_H
#define CONCORD_SERVER_NET_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#define NET_CODES(X)                                                                               \
    X(NET_OK, "ok")                                                                                \
    X(NET_NOMEM, "out of memory")                                                                  \
    X(NET_ADDRESS, "invalid address")                                                              \
    X(NET_LISTEN, "cannot listen")                                                                 \
    X(NET_CONNECT, "cannot connect")                                                               \
    X(NET_TIMEOUT, "timed out")                                                                    \
    X(NET_PROTOCOL, "malformed HTTP")                                                              \
    X(NET_TOOBIG, "message too large")                                                             \
    X(NET_CLOSED, "connection closed")                                                             \
    X(NET_TLS, "unusable TLS certificate or key")                                                  \
    X(NET_REFUSED, "protocol switch refused")

enum net_code {
#define X(code, msg) code,
    NET_CODES(X)
#undef X
};
const char *net_strerror(int code);

struct net_http_header {
    char *name; /* as received; compare case-insensitively */
    char *value;
};

struct net_http_request {
    uint64_t conn_id; /* appears in log lines */
    bool is_local;    /* arrived on the Unix socket: trusted by file permissions */
    char peer[64];    /* "ip:port" or "unix" */
    char method[16];  /* "GET", "POST", ... */
    char *path;       /* decoded path, no query: "/api/v1/user" */
    char *query;      /* raw query without '?', "" if none */
    struct net_http_header *headers;
    size_t n_headers;
    uint8_t *body; /* NUL-terminated for convenience; body_len excludes it */
    size_t body_len;
    void *internal; /* net/'s bookkeeping: do not touch */
};

/* Case-insensitive header lookup; NULL if absent. */
const char *net_http_header_get(const struct net_http_request *req, const char *name);
/* Finds `name` in the query string and URL-decodes its value into buf;
 * false if absent or too long. */
bool net_http_query_get(const struct net_http_request *req, const char *name, char *buf,
                        size_t cap);

/* Sends the response and frees req. extra_headers is NULL or preformatted
 * "Name: value\r\n" lines. body may be NULL when len is 0. */
void net_http_respond(struct net_http_request *req, int status, const char *content_type,
                      const char *extra_headers, const void *body, size_t len);

typedef void (*net_http_handler_cb)(void *arg, struct net_http_request *req);

/* Protocol switch ("101 Switching Protocols"): instead of responding, the
 * handler takes the connection over as a raw byte stream. `head` (the whole
 * 101 response head plus any bytes that must follow it at once, e.g. a
 * handshake reply) is written first; then bytes the client sent are handed
 * to on_read (borrowed for the call), starting with any it had already sent
 * after the request. No deadline applies any more: the new owner keeps its
 * own. on_close fires once when the connection ends for a reason the owner
 * did not ask for (peer EOF, I/O error, server shutdown); after it, and
 * after net_raw_close(), the handle is dead. req is freed either way; on a
 * NULL return (out of memory, or the connection already died) nothing was
 * taken over and no callback will fire. */
struct net_raw;
struct net_raw_callbacks {
    void (*on_read)(void *arg, const uint8_t *data, size_t len);
    void (*on_close)(void *arg, const char *reason);
};
struct net_raw *net_http_upgrade(struct net_http_request *req, const void *head, size_t head_len,
                                 const struct net_raw_callbacks *cb, void *arg);
/* Queues len bytes (copied) for writing. Non-zero: the connection is broken
 * (on_close follows on a later loop iteration). */
int net_raw_write(struct net_raw *r, const void *data, size_t len);
/* Bytes queued but not yet written to the socket (backpressure); over TLS,
 * the bytes of the records. */
size_t net_raw_write_queued(const struct net_raw *r);
/* Stops reading until resumed (backpressure on the input side). */
void net_raw_pause(struct net_raw *r, bool is_paused);
/* The peer's "ip:port" (or "unix"). */
const char *net_raw_peer(const struct net_raw *r);
uint64_t net_raw_id(const struct net_raw *r);
/* Closes after the queued bytes are written; on_close does not fire. */
void net_raw_close(struct net_raw *r, const char *reason);

/* Decides how many body bytes one request may carry, from its head alone:
 * method, path, query, headers and is_local are set, the body is not (and
 * peer is not yet). `limit` is the listener's; return it to keep it. Runs on
 * the loop thread before any body byte is accepted, so a request refused here
 * costs no more than its head; a body past the answer gets 413. */
typedef size_t (*net_http_body_limit_cb)(void *arg, const struct net_http_request *head,
                                         size_t limit);

struct net_http_server_options {
    const char *tcp_address; /* "host:port"; NULL: no TCP listener */
    /* PEM files: certificate chain (leaf first) and its unencrypted private
     * key. Both set: the TCP listener speaks only TLS (1.2 or later, ALPN
     * "http/1.1"), upgraded streams included; both NULL: plain HTTP. The
     * Unix socket is never TLS. */
    const char *tls_cert_path;
    const char *tls_key_path;
    const char *unix_path; /* NULL: no Unix socket */
    unsigned unix_mode;    /* e.g. 0770 */
    size_t max_body_bytes; /* TCP: larger bodies get 413 without reaching the handler */
    /* The Unix socket's body limit (it is trusted by file permissions, and
     * carries snapshot restores); 0: max_body_bytes. */
    size_t max_local_body_bytes;
    size_t max_header_bytes;  /* larger heads get 431 */
    unsigned idle_timeout_ms; /* keep-alive idle and slow-request deadline */
    net_http_handler_cb handler;
    /* NULL: every request gets its listener's limit. Called with handler_arg. */
    net_http_body_limit_cb body_limit;
    void *handler_arg;
};

struct net_http_server;
int net_http_server_new(uv_loop_t *loop, const struct net_http_server_options *opts,
                        struct net_http_server **out, char *errmsg);
/* The bound TCP port (useful with port 0). */
int net_http_server_port(const struct net_http_server *s);
/* Stops listening and closes every connection; in-flight requests are
 * answered into the void. cb fires once all handles are closed. */
typedef void (*net_close_cb)(void *arg);
void net_http_server_close(struct net_http_server *s, net_close_cb cb, void *arg);

/* Client: one request on a fresh connection to "host:port". cb fires exactly
 * once on the loop thread: status NET_OK with the HTTP status and body
 * (borrowed for the call), or an error (NET_CONNECT, NET_TIMEOUT, ...; a
 * failed TLS handshake, or TLS on one side only, gives NET_PROTOCOL or
 * NET_CLOSED). */
typedef void (*net_http_client_cb)(void *arg, int status, int http_status, const uint8_t *body,
                                   size_t len);
struct net_http_client_request {
    const char *address; /* "host:port" */
    const char *method;
    const char *path;          /* with query */
    const char *extra_headers; /* NULL or "Name: value\r\n" lines */
    const void *body;
    size_t body_len;
    unsigned timeout_ms; /* whole exchange */
    size_t max_response_bytes;
    /* Speak TLS (to a TLS listener). The server's certificate is not
     * verified: see net_tls_client_new() in tls.c for why, and what that
     * leaves open. */
    bool use_tls;
};
int net_http_client_send(uv_loop_t *loop, const struct net_http_client_request *r,
                         net_http_client_cb cb, void *arg);

/* Client side of a protocol switch (a DERP mesh link to another replica's
 * relay): r is sent on a fresh connection with extra_headers carrying
 * Upgrade and Connection, no body; timeout_ms bounds the exchange up to the
 * server's answer, nothing after it. *out is the connection's handle from
 * the start. on_upgrade fires exactly once, never from inside this call:
 * NET_OK once the server answered 101, from then on the connection is a raw
 * byte stream and the bytes the server sends go to cb->on_read (borrowed for
 * the call), starting with any that followed the 101 head; NET_REFUSED with
 * the server's http_status for any other answer; or an error as for
 * net_http_client_send. After anything but NET_OK the handle is dead.
 * cb->on_close fires once when an upgraded stream ends for a reason the
 * owner did not ask for (peer EOF, I/O error), on a loop iteration of its
 * own; after it the handle is dead. Non-zero return: nothing was started. */
struct net_client_raw;
typedef void (*net_http_upgrade_cb)(void *arg, int status, int http_status);
int net_http_client_upgrade(uv_loop_t *loop, const struct net_http_client_request *r,
                            net_http_upgrade_cb on_upgrade, const struct net_raw_callbacks *cb,
                            void *arg, struct net_client_raw **out);
/* As net_raw_write and net_raw_write_queued, for an upgraded client stream;
 * a failed write is followed by on_close. */
int net_client_raw_write(struct net_client_raw *c, const void *data, size_t len);
size_t net_client_raw_write_queued(const struct net_client_raw *c);
/* Before the answer: abandons the attempt (on_upgrade does not fire). After
 * it: closes once the queued bytes are written (on_close does not fire).
 * The handle is dead either way. */
void net_client_raw_close(struct net_client_raw *c, const char *reason);

#endif
