/* server/net/server.c: the listeners of the HTTP server.
 * Happy path: load the TLS certificate and key if given (tls.c), bind the TCP
 * address and the Unix socket (a stale socket file is removed first, the new
 * one gets unix_mode before anyone can connect), then hand each accepted
 * socket to a connection (conn.c).
 * Shutdown: net_http_server_close() closes the listeners and every
 * connection; the server is freed, and the caller told, once the last handle
 * has closed. A failed start closes what it opened the same way, silently. */
#include "server/net/http.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>
#include <unistd.h>

#include "server/log.h"
#include "server/net/address.h"
#include "server/net/net_internal.h"

#define LISTEN_BACKLOG 511

__attribute__((format(printf, 2, 3))) static void set_errmsg(char *errmsg, const char *fmt, ...)
{
    va_list ap;

    if (errmsg == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(errmsg, 256, fmt, ap);
    va_end(ap);
}

void net_server_maybe_finish(struct net_http_server *s)
{
    if (!s->is_closing || s->open_handles > 0 || s->conns != NULL)
        return;
    if (s->close_cb != NULL)
        s->close_cb(s->close_arg);
    net_tls_ctx_free(s->tls);
    free(s->unix_path);
    free(s);
}

static void listener_on_close(uv_handle_t *h)
{
    struct net_http_server *s = h->data;

    s->open_handles--;
    net_server_maybe_finish(s);
}

static void listener_on_connection(uv_stream_t *listener, int status)
{
    struct net_http_server *s = listener->data;

    if (status < 0) {
        LOG_WARN("http accept failed: %s", uv_strerror(status));
        return;
    }
    net_conn_accept(s, listener, listener == (uv_stream_t *)&s->pipe);
}

static int listen_tcp(struct net_http_server *s, const char *address, char *errmsg)
{
    struct sockaddr_storage addr;
    struct sockaddr_storage bound;
    int len = sizeof bound;
    int rv;

    if (net_address_numeric(address, &addr) != 0) {
        set_errmsg(errmsg, "listen address '%s': expected IPv4, [IPv6] or localhost with a port",
                   address);
        return NET_ADDRESS;
    }
    rv = uv_tcp_init(s->loop, &s->tcp);
    if (rv != 0)
        goto err;
    s->tcp.data = s;
    s->has_tcp = true;
    s->open_handles++;
    rv = uv_tcp_bind(&s->tcp, (const struct sockaddr *)&addr, 0);
    if (rv != 0)
        goto err;
    rv = uv_listen((uv_stream_t *)&s->tcp, LISTEN_BACKLOG, listener_on_connection);
    if (rv != 0)
        goto err;
    rv = uv_tcp_getsockname(&s->tcp, (struct sockaddr *)&bound, &len);
    if (rv != 0)
        goto err;
    s->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                : ((struct sockaddr_in *)&bound)->sin_port);
    return 0;

err:
    set_errmsg(errmsg, "listen on %s: %s", address, uv_strerror(rv));
    return NET_LISTEN;
}

static int listen_unix(struct net_http_server *s, const char *path, unsigned mode, char *errmsg)
{
    struct stat st;
    int rv;

    /* A socket file left by a process that died is stale; anything else at
     * that path is not ours to remove. */
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            set_errmsg(errmsg, "unix socket %s: exists and is not a socket", path);
            return NET_LISTEN;
        }
        if (unlink(path) != 0) {
            set_errmsg(errmsg, "unix socket %s: cannot remove the stale one: %s", path,
                       strerror(errno));
            return NET_LISTEN;
        }
    }
    rv = uv_pipe_init(s->loop, &s->pipe, 0);
    if (rv != 0)
        goto err;
    s->pipe.data = s;
    s->has_pipe = true;
    s->open_handles++;
    rv = uv_pipe_bind(&s->pipe, path);
    if (rv != 0)
        goto err;
    /* Bound: the file is ours now, and removed again on close. */
    s->unix_path = strdup(path);
    if (s->unix_path == NULL) {
        unlink(path);
        return NET_NOMEM;
    }
    /* Before listen: until then a connect is refused, so no client ever
     * reaches the socket under the umask's looser mode. */
    if (chmod(path, mode) != 0) {
        rv = uv_translate_sys_error(errno);
        goto err;
    }
    rv = uv_listen((uv_stream_t *)&s->pipe, LISTEN_BACKLOG, listener_on_connection);
    if (rv != 0)
        goto err;
    return 0;

err:
    set_errmsg(errmsg, "unix socket %s: %s", path, uv_strerror(rv));
    return NET_LISTEN;
}

static void close_listeners(struct net_http_server *s)
{
    if (s->has_tcp) {
        s->has_tcp = false;
        uv_close((uv_handle_t *)&s->tcp, listener_on_close);
    }
    if (s->has_pipe) {
        s->has_pipe = false;
        uv_close((uv_handle_t *)&s->pipe, listener_on_close);
        if (s->unix_path != NULL)
            unlink(s->unix_path);
    }
}

int net_http_server_new(uv_loop_t *loop, const struct net_http_server_options *opts,
                        struct net_http_server **out, char *errmsg)
{
    struct net_http_server *s;
    int rv;

    assert(opts->handler != NULL && opts->max_header_bytes > 0 && opts->idle_timeout_ms > 0);
    s = calloc(1, sizeof *s);
    if (s == NULL)
        return NET_NOMEM;
    s->loop = loop;
    s->handler = opts->handler;
    s->handler_arg = opts->handler_arg;
    s->body_limit = opts->body_limit;
    s->max_body_bytes = opts->max_body_bytes;
    s->max_local_body_bytes =
        opts->max_local_body_bytes != 0 ? opts->max_local_body_bytes : opts->max_body_bytes;
    s->max_header_bytes = opts->max_header_bytes;
    s->idle_timeout_ms = opts->idle_timeout_ms;
    s->next_conn_id = 1;
    if ((opts->tls_cert_path == NULL) != (opts->tls_key_path == NULL)) {
        set_errmsg(errmsg, "TLS needs both a certificate and a private key");
        rv = NET_TLS;
        goto err_after_alloc;
    }
    /* Before listening: a bad file must fail the start, not each handshake. */
    if (opts->tls_cert_path != NULL) {
        rv = net_tls_ctx_new(opts->tls_cert_path, opts->tls_key_path, &s->tls, errmsg);
        if (rv != 0)
            goto err_after_alloc;
    }
    if (opts->tcp_address != NULL) {
        rv = listen_tcp(s, opts->tcp_address, errmsg);
        if (rv != 0)
            goto err_after_alloc;
    }
    if (opts->unix_path != NULL) {
        rv = listen_unix(s, opts->unix_path, opts->unix_mode, errmsg);
        if (rv != 0)
            goto err_after_alloc;
    }
    *out = s;
    return 0;

err_after_alloc:
    /* Listener handles close asynchronously: the server frees itself once
     * they have, without a callback. */
    s->is_closing = true;
    close_listeners(s);
    net_server_maybe_finish(s);
    return rv;
}

int net_http_server_port(const struct net_http_server *s)
{
    return s->port;
}

void net_http_server_close(struct net_http_server *s, net_close_cb cb, void *arg)
{
    assert(!s->is_closing);
    s->is_closing = true;
    s->close_cb = cb;
    s->close_arg = arg;
    close_listeners(s);
    net_conn_close_all(s);
    net_server_maybe_finish(s);
}
