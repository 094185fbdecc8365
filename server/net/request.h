/* server/net/request.h: the HTTP/1.1 request parser, apart from any socket.
 * Bytes go in as they arrive, in pieces of any size; complete requests
 * (struct net_http_request, as handlers receive them) come out one at a time.
 * The connection code feeds it from its read buffer; the unit tests and the
 * fuzz target feed it directly. */
#ifndef CONCORD_SERVER_NET_REQUEST_H
#define CONCORD_SERVER_NET_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "server/net/http.h"

struct net_request_limits {
    size_t max_header_bytes; /* request line + headers (+ chunked trailers): 431 past it */
    size_t max_body_bytes;   /* declared or streamed body: 413 past it */
    /* NULL, or asked once per request when its head is complete, with
     * max_body_bytes as `limit`: the answer is that request's body limit. */
    net_http_body_limit_cb body_limit;
    void *body_limit_arg;
    bool is_local; /* stamped on every request (struct net_http_request.is_local) */
};

struct net_request_parser; /* opaque: wraps an http_parser and the request being built */

int net_request_parser_new(const struct net_request_limits *limits,
                           struct net_request_parser **out);
void net_request_parser_free(struct net_request_parser *p); /* NULL is fine */

/* Feeds len bytes. Returns 0 with *used set and *out either a complete
 * request (yours: pass it to net_http_respond() or net_request_free()) or
 * NULL when everything was consumed and more input is needed. The parser
 * stops right after a complete request, so *used may be less than len: the
 * rest starts the next request and is fed again later. On error the parser
 * is dead and every further call fails the same way: NET_PROTOCOL (answer
 * 400), NET_TOOBIG (413, 414 or 431) or NET_NOMEM (500);
 * net_request_parser_status() gives the HTTP status to answer with and
 * net_request_parser_errmsg() the reason. */
int net_request_parse(struct net_request_parser *p, const uint8_t *data, size_t len, size_t *used,
                      struct net_http_request **out);
int net_request_parser_status(const struct net_request_parser *p);
const char *net_request_parser_errmsg(const struct net_request_parser *p);

/* True once per request whose head asked "Expect: 100-continue" and was
 * accepted: the caller writes an interim "100 Continue" so the client sends
 * its body. */
bool net_request_parser_take_continue(struct net_request_parser *p);

/* Whether the connection may carry another request after answering req
 * (HTTP/1.1 without "Connection: close", or HTTP/1.0 with keep-alive). */
bool net_request_keep_alive(const struct net_http_request *req);
/* Frees a request the parser produced. NULL is fine. */
void net_request_free(struct net_http_request *req);

#endif
