/* server/net/net_internal.h: what the files of server/net/ share and nobody
 * else sees: the request's bookkeeping, the server object, and the calls
 * between the listener (server.c) and its connections (conn.c). */
#ifndef CONCORD_SERVER_NET_NET_INTERNAL_H
#define CONCORD_SERVER_NET_NET_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "server/net/http.h"

struct net_conn;

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
    char *unix_path;       /* removed again on close */
    int port;              /* bound TCP port */
    unsigned open_handles; /* listeners (and the reject handle) not yet closed */
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

#endif
