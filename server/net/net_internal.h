/* server/net/net_internal.h: what the files of server/net/ share and nobody
 * else sees: the request's bookkeeping, the server object, the calls
 * between the listener (server.c) and its connections (conn.c), and the TLS
 * sessions those connections use (tls.c). */
#ifndef CONCORD_SERVER_NET_NET_INTERNAL_H
#define CONCORD_SERVER_NET_NET_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "server/net/http.h"

struct net_conn;
struct net_tls_ctx;

/* Behind net_http_request.internal. conn and the connection's pointer back
 * to the request are nulled together when either side goes away first. */
struct net_request_internal {
    struct net_conn *conn; /* NULL until handed out, and again once the connection closed */
    bool keep_alive;
    bool is_http10;
    bool is_head;  /* HEAD: the response carries no body */
    char *strings; /* one block holding the header names and values */
};

/* A request and its bookkeeping in one allocation; req comes first so that
 * a struct net_http_request * is also the block's address. */
struct net_request_box {
    struct net_http_request req;
    struct net_request_internal in;
};

/* Decodes %XX escapes of src[0..len) into dst (dst_cap bytes; len + 1 is
 * always enough), and '+' into ' ' when plus_is_space (query strings).
 * Returns the decoded length, or -1 for a malformed escape, a decoded NUL or
 * a result that does not fit with its NUL. */
long net_percent_decode(const char *src, size_t len, char *dst, size_t dst_cap, bool plus_is_space);

union net_stream {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
};

struct net_http_server {
    uv_loop_t *loop;
    net_http_handler_cb handler;
    void *handler_arg;
    net_http_body_limit_cb body_limit;
    size_t max_body_bytes;       /* TCP connections */
    size_t max_local_body_bytes; /* Unix socket connections */
    size_t max_header_bytes;
    unsigned idle_timeout_ms;
    uv_tcp_t tcp; /* tcp.data == this */
    uv_pipe_t pipe;
    bool has_tcp;
    bool has_pipe;
    struct net_tls_ctx *tls; /* NULL: the TCP listener is plain HTTP */
    char *unix_path;         /* removed again on close */
    int port;                /* bound TCP port */
    unsigned open_handles;   /* listeners (and the reject handle) not yet closed */
    /* Accepts and closes a connection when no memory is left for a real one,
     * so that the listener does not stall with the pending socket. */
    union net_stream reject;
    bool is_reject_busy;
    struct net_conn *conns; /* every live connection, to close them on shutdown */
    uint64_t next_conn_id;
    bool is_closing;
    net_close_cb close_cb; /* NULL when closing after a failed start */
    void *close_arg;
};

/* Accepts the pending connection of listener (conn.c). */
void net_conn_accept(struct net_http_server *s, uv_stream_t *listener, bool is_local);
/* Starts closing c unless it is already closing; reason is logged (conn.c). */
void net_conn_close(struct net_conn *c, const char *reason);
/* Starts closing every connection of s (conn.c). */
void net_conn_close_all(struct net_http_server *s);
/* Called by conn.c after a connection left s->conns: finishes a pending
 * server close once nothing is open any more (server.c). */
void net_server_maybe_finish(struct net_http_server *s);

/* ---- TLS (tls.c): OpenSSL sessions over memory buffers. The connection
 * (conn.c, or a request of client.c) keeps doing the socket I/O: it feeds
 * the records it reads and reads plaintext back; it writes plaintext and
 * sends the records that come out. */

/* Loads the PEM certificate chain and unencrypted private key and checks
 * that they belong together. NET_TLS with the file and the reason in errmsg
 * (256 bytes), or NET_NOMEM. */
int net_tls_ctx_new(const char *cert_path, const char *key_path, struct net_tls_ctx **out,
                    char *errmsg);
void net_tls_ctx_free(struct net_tls_ctx *ctx); /* NULL is fine */

/* One server-side session; conn_id appears in its log lines. NULL: out of
 * memory. */
struct net_tls;
struct net_tls *net_tls_new(struct net_tls_ctx *ctx, uint64_t conn_id);
void net_tls_free(struct net_tls *t); /* NULL is fine */
/* One client-side session to host (a DNS name or an IP literal), for a
 * request to a peer replica: TLS 1.2 or later, ALPN "http/1.1" offered, SNI
 * when host is a name. The server's certificate is NOT verified, an interim
 * whose reasons and limits tls.c spells out. The ClientHello is pending at
 * once. NULL: out of memory. */
struct net_tls *net_tls_client_new(const char *host);
/* Takes len bytes received from the peer (copied). 0 or NET_NOMEM. */
int net_tls_feed(struct net_tls *t, const uint8_t *data, size_t len);
/* Decrypts at most cap bytes of what was fed, running the handshake first.
 * 0 with *got 0 when more must be fed, or when the peer has ended TLS with
 * close_notify (nothing follows but its EOF). NET_PROTOCOL on a failed
 * handshake or a bad record: the session is dead, net_tls_errmsg() says
 * why. */
int net_tls_read(struct net_tls *t, uint8_t *buf, size_t cap, size_t *got);
/* The handshake is done (as seen by the last net_tls_read()): plaintext
 * may be written. */
bool net_tls_is_established(const struct net_tls *t);
/* Encrypts all len bytes (once the handshake is done). 0 or NET_PROTOCOL. */
int net_tls_write(struct net_tls *t, const void *data, size_t len);
/* Queues the close_notify alert, if the handshake was done. */
void net_tls_close_notify(struct net_tls *t);
/* Bytes waiting to be sent to the peer: handshake messages, records, alerts;
 * net_tls_take() moves the first len (at most that many) into buf. */
size_t net_tls_pending(const struct net_tls *t);
void net_tls_take(struct net_tls *t, uint8_t *buf, size_t len);
/* Why the last call failed, "tls: <reason>". */
const char *net_tls_errmsg(const struct net_tls *t);

#endif
