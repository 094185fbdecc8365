/* server/derp/stun_udp.c: the STUN listener, one UDP socket on libuv. Each
 * datagram is parsed in the receive callback and answered at once with a
 * non-blocking send: a response that does not fit in the socket buffer is
 * lost like any UDP packet, and the client asks again. */
#include "server/derp/stun.h"

#include <assert.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include <netinet/in.h>

#include "server/log.h"
#include "server/net/address.h"

/* RFC 5389 section 7.1: requests stay under the path MTU, 1280 bytes when
 * unknown. A longer datagram arrives truncated and is dropped. */
#define RECV_BUFFER_BYTES 1280

struct stun_server {
    uv_udp_t udp;
    int port;
    bool is_closing;
    stun_close_cb close_cb;
    void *close_arg;
    struct stun_stats stats;
    /* libuv fills one datagram at a time, on the loop thread. */
    uint8_t recv_buf[RECV_BUFFER_BYTES];
};

__attribute__((format(printf, 2, 3))) static void set_errmsg(char *errmsg, const char *fmt, ...)
{
    va_list ap;

    if (errmsg == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(errmsg, STUN_ERRMSG_BYTES, fmt, ap);
    va_end(ap);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct stun_server *s = h->data;

    (void)suggested;
    *buf = uv_buf_init((char *)s->recv_buf, sizeof s->recv_buf);
}

static void drop(struct stun_server *s, const struct sockaddr *from, ssize_t len, int code)
{
    char peer[64];

    s->stats.dropped++;
    if (!log_enabled(LOG_LEVEL_DEBUG))
        return;
    net_address_format(from, peer, sizeof peer);
    LOG_DEBUG("stun: dropped %zd bytes from %s: %s", len, peer, stun_strerror(code));
}

static void answer(struct stun_server *s, const struct sockaddr *to,
                   const uint8_t txid[STUN_TXID_BYTES])
{
    uint8_t response[STUN_MAX_RESPONSE_BYTES];
    size_t len;
    uv_buf_t buf;
    int rv;

    rv = stun_binding_response(txid, to, response, &len);
    if (rv != STUN_OK) {
        drop(s, to, 0, rv);
        return;
    }
    buf = uv_buf_init((char *)response, (unsigned)len);
    rv = uv_udp_try_send(&s->udp, &buf, 1, to);
    if (rv < 0) {
        char peer[64];

        s->stats.send_failed++;
        if (!log_enabled(LOG_LEVEL_DEBUG))
            return;
        net_address_format(to, peer, sizeof peer);
        LOG_DEBUG("stun: answer to %s not sent: %s", peer, uv_strerror(rv));
        return;
    }
    s->stats.answered++;
}

static void on_recv(uv_udp_t *udp, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *from,
                    unsigned flags)
{
    struct stun_server *s = udp->data;
    uint8_t txid[STUN_TXID_BYTES];
    int rv;

    /* Nothing (more) to read: libuv hands the buffer back. */
    if (nread == 0 && from == NULL)
        return;
    if (nread < 0) {
        LOG_DEBUG("stun: receive failed: %s", uv_strerror((int)nread));
        return;
    }
    if (flags & UV_UDP_PARTIAL) {
        drop(s, from, nread, STUN_TRUNCATED);
        return;
    }
    rv = stun_parse_binding_request((const uint8_t *)buf->base, (size_t)nread, txid);
    if (rv != STUN_OK) {
        drop(s, from, nread, rv);
        return;
    }
    answer(s, from, txid);
}

static void on_close(uv_handle_t *h)
{
    struct stun_server *s = h->data;

    if (s->close_cb != NULL)
        s->close_cb(s->close_arg);
    free(s);
}

/* Binds, starts receiving and records the port; a libuv error code. */
static int bind_and_start(struct stun_server *s, const struct sockaddr *addr)
{
    struct sockaddr_storage bound;
    int len = sizeof bound;
    int rv;

    rv = uv_udp_bind(&s->udp, addr, 0);
    if (rv != 0)
        return rv;
    rv = uv_udp_getsockname(&s->udp, (struct sockaddr *)&bound, &len);
    if (rv != 0)
        return rv;
    s->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                : ((struct sockaddr_in *)&bound)->sin_port);
    return uv_udp_recv_start(&s->udp, on_alloc, on_recv);
}

int stun_server_new(uv_loop_t *loop, const char *address, struct stun_server **out, char *errmsg)
{
    struct sockaddr_storage addr;
    struct stun_server *s;
    int rv;

    if (net_address_numeric(address, &addr) != 0) {
        set_errmsg(errmsg, "stun address '%s': expected IPv4, [IPv6] or localhost with a port",
                   address);
        return STUN_ADDRESS;
    }
    s = calloc(1, sizeof *s);
    if (s == NULL)
        return STUN_NOMEM;
    rv = uv_udp_init(loop, &s->udp);
    if (rv != 0) {
        free(s);
        set_errmsg(errmsg, "stun on %s: %s", address, uv_strerror(rv));
        return STUN_LISTEN;
    }
    s->udp.data = s;
    rv = bind_and_start(s, (const struct sockaddr *)&addr);
    if (rv != 0) {
        set_errmsg(errmsg, "stun on %s: %s", address, uv_strerror(rv));
        /* The handle is open: it frees s once closed, without a callback. */
        s->is_closing = true;
        uv_close((uv_handle_t *)&s->udp, on_close);
        return STUN_LISTEN;
    }
    *out = s;
    return STUN_OK;
}

int stun_server_port(const struct stun_server *s)
{
    return s->port;
}

void stun_server_stats(const struct stun_server *s, struct stun_stats *out)
{
    *out = s->stats;
}

void stun_server_close(struct stun_server *s, stun_close_cb cb, void *arg)
{
    assert(!s->is_closing);
    s->is_closing = true;
    s->close_cb = cb;
    s->close_arg = arg;
    /* uv_close stops receiving: no datagram is handled after this call. */
    uv_close((uv_handle_t *)&s->udp, on_close);
}
