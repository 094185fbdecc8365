/* server/derp/stun.h: the STUN server of the embedded DERP region (RFC 5389
 * Binding only), which tells Tailscale clients the address and port their
 * packets come from (netcheck, endpoint discovery).
 *
 * The codec (stun.c) is pure computation. A request is answered when it is a
 * well-formed Binding Request with the magic cookie (RFC 3489 clients, which
 * lack it, are not served), every attribute is comprehension-optional (this
 * server implements none of the comprehension-required ones: CHANGE-REQUEST,
 * USERNAME, MESSAGE-INTEGRITY..., so answering would mislead the client), and
 * a FINGERPRINT, if present, is last and correct. Tailscale's request carries
 * SOFTWARE "tailnode" and FINGERPRINT; both are optional here, so standard
 * STUN tools can probe the server too.
 *
 * The answer is a Binding Success Response with XOR-MAPPED-ADDRESS only:
 * Tailscale's client reads nothing else, and every extra byte would make the
 * server a better amplifier for spoofed requests. An IPv4-mapped IPv6 source
 * (a dual-stack socket) is answered as the IPv4 address it is.
 *
 * The listener (stun_udp.c) is one libuv UDP socket per replica: every
 * datagram is parsed and answered at once from the loop thread; anything
 * else is dropped silently (a debug log line and a counter). */
#ifndef CONCORD_SERVER_DERP_STUN_H
#define CONCORD_SERVER_DERP_STUN_H

#include <stddef.h>
#include <stdint.h>

#include <sys/socket.h>
#include <uv.h>

#define STUN_HEADER_BYTES 20
#define STUN_TXID_BYTES   12
/* Header + XOR-MAPPED-ADDRESS of an IPv6 address (4 + 4 + 16). */
#define STUN_MAX_RESPONSE_BYTES (STUN_HEADER_BYTES + 24)
#define STUN_ERRMSG_BYTES       256

#define STUN_CODES(X)                                                                              \
    X(STUN_OK, "ok")                                                                               \
    X(STUN_SHORT, "shorter than a STUN header")                                                    \
    X(STUN_NOT_STUN, "not a STUN message")                                                         \
    X(STUN_NOT_BINDING_REQUEST, "not a Binding Request")                                           \
    X(STUN_BAD_LENGTH, "message length does not match the packet")                                 \
    X(STUN_BAD_ATTRIBUTE, "attribute overruns the message")                                        \
    X(STUN_BAD_FINGERPRINT, "wrong or misplaced FINGERPRINT")                                      \
    X(STUN_UNKNOWN_ATTRIBUTE, "comprehension-required attribute")                                  \
    X(STUN_TRUNCATED, "datagram larger than the receive buffer")                                   \
    X(STUN_ADDRESS, "invalid address")                                                             \
    X(STUN_NOMEM, "out of memory")                                                                 \
    X(STUN_LISTEN, "cannot listen")

enum stun_code {
#define X(code, msg) code,
    STUN_CODES(X)
#undef X
};
const char *stun_strerror(int code);

/* Checks that packet[0..len) is a Binding Request this server answers (see
 * above) and copies its transaction id to txid. Returns STUN_OK or why not
 * (a damaged FINGERPRINT before an unknown attribute); txid is untouched on
 * error. */
int stun_parse_binding_request(const uint8_t *packet, size_t len, uint8_t txid[STUN_TXID_BYTES]);

/* Writes the Binding Success Response for txid telling the client its source
 * address (AF_INET or AF_INET6) into out and its length into *out_len.
 * STUN_ADDRESS for any other family. */
int stun_binding_response(const uint8_t txid[STUN_TXID_BYTES], const struct sockaddr *source,
                          uint8_t out[STUN_MAX_RESPONSE_BYTES], size_t *out_len);

/* ---- the UDP listener ---- */

struct stun_server;

struct stun_stats {
    uint64_t answered;    /* responses handed to the socket */
    uint64_t dropped;     /* datagrams that were not a request we answer */
    uint64_t send_failed; /* answers the socket refused (full buffer, unreachable) */
};

/* Binds a UDP socket to address ("127.0.0.1:3478", "localhost:3478", or
 * "[::]:3478", which also serves IPv4; port 0 picks a free one) on loop and
 * starts answering.
 * On error *out is untouched, errmsg (STUN_ERRMSG_BYTES, may be NULL) says
 * why, and the half-opened socket frees itself once the loop runs again. */
int stun_server_new(uv_loop_t *loop, const char *address, struct stun_server **out, char *errmsg);
/* The bound port (useful with port 0). */
int stun_server_port(const struct stun_server *s);
void stun_server_stats(const struct stun_server *s, struct stun_stats *out);

/* Stops answering and closes the socket; once the handle has closed, cb
 * (may be NULL) is called with arg and s is freed. s must not be used after
 * this call. */
typedef void (*stun_close_cb)(void *arg);
void stun_server_close(struct stun_server *s, stun_close_cb cb, void *arg);

#endif
