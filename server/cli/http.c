/* server/cli/http.c: one blocking HTTP/1.1 exchange per command, over the
 * admin Unix socket or TCP to --address, with `Connection: close` and the
 * response parsed by http-parser. A deadline bounds the whole exchange. */
#include "server/cli/cli_internal.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <http_parser.h>

#define RESPONSE_MAX_BYTES ((size_t)1024 * 1024 * 1024)

struct target {
    char host[256]; /* for TCP, and the Host header */
    char port[8];
    char base_path[256]; /* a path prefix given in --address, "" if none */
};

/* "http://host[:port][/base]", "host:port" or "[v6]:port". */
static int target_parse(const char *address, struct target *t, char *err, size_t cap)
{
    const char *p = address, *host, *rest;
    size_t host_len;

    memset(t, 0, sizeof *t);
    if (strncmp(p, "https://", 8) == 0) {
        snprintf(err, cap,
                 "https:// is not supported by the CLI yet: use the Unix socket, or http:// "
                 "through a trusted network or tunnel");
        return -1;
    }
    if (strncmp(p, "http://", 7) == 0)
        p += 7;
    else if (strstr(p, "://") != NULL)
        goto err_invalid;
    if (*p == '[') {
        const char *close = strchr(p, ']');
        if (close == NULL)
            goto err_invalid;
        host = p + 1;
        host_len = (size_t)(close - host);
        rest = close + 1;
    } else {
        host = p;
        host_len = strcspn(p, ":/");
        rest = p + host_len;
    }
    if (host_len == 0 || host_len >= sizeof t->host)
        goto err_invalid;
    memcpy(t->host, host, host_len);
    if (*rest == ':') {
        size_t n = strcspn(rest + 1, "/");
        if (n == 0 || n >= sizeof t->port || strspn(rest + 1, "0123456789") != n)
            goto err_invalid;
        memcpy(t->port, rest + 1, n);
        rest += 1 + n;
    } else {
        strcpy(t->port, "80");
    }
    if ((*rest != '\0' && *rest != '/') || strlen(rest) >= sizeof t->base_path)
        goto err_invalid;
    strcpy(t->base_path, rest);
    if (t->base_path[0] != '\0' && t->base_path[strlen(t->base_path) - 1] == '/')
        t->base_path[strlen(t->base_path) - 1] = '\0';
    return 0;

err_invalid:
    snprintf(err, cap, "--address: cannot parse \"%s\": expected http://host:port", address);
    return -1;
}

static int connect_unix(const char *path, char *err, size_t cap)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd;

    if (strlen(path) >= sizeof sa.sun_path) {
        snprintf(err, cap, "socket path too long: %s", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, cap, "socket: %s", strerror(errno));
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        snprintf(err, cap, "cannot connect to %s: %s (is concord running? --socket or --address)",
                 path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int connect_tcp(const struct target *t, char *err, size_t cap)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res, *ai;
    int fd = -1, rv = getaddrinfo(t->host, t->port, &hints, &res);

    if (rv != 0) {
        snprintf(err, cap, "cannot resolve %s: %s", t->host, gai_strerror(rv));
        return -1;
    }
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0)
            continue;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        rv = errno;
        close(fd);
        fd = -1;
        errno = rv;
    }
    if (fd < 0)
        snprintf(err, cap, "cannot connect to %s:%s: %s", t->host, t->port, strerror(errno));
    freeaddrinfo(res);
    return fd;
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until fd is ready for `events` or the deadline passes. */
static int wait_fd(int fd, short events, int64_t deadline_ms, char *err, size_t cap)
{
    struct pollfd pfd = {.fd = fd, .events = events};

    for (;;) {
        int64_t left = deadline_ms - now_ms();
        int rv;
        if (left <= 0) {
            snprintf(err, cap, "timed out waiting for the server");
            return -1;
        }
        rv = poll(&pfd, 1, (int)(left > 60000 ? 60000 : left));
        if (rv > 0)
            return 0;
        if (rv < 0 && errno != EINTR) {
            snprintf(err, cap, "poll: %s", strerror(errno));
            return -1;
        }
    }
}

static int send_all(int fd, const void *data, size_t len, int64_t deadline_ms, char *err,
                    size_t cap)
{
    const char *p = data;

    while (len > 0) {
        ssize_t n;
        if (wait_fd(fd, POLLOUT, deadline_ms, err, cap) != 0)
            return -1;
        n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            snprintf(err, cap, "send: %s", strerror(errno));
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* ---- response parsing ---- */

struct response_parse {
    struct cli_response *out;
    size_t cap;
    bool is_complete;
    bool is_too_big;
    bool is_etag; /* the header being read is ETag */
    char field[32];
    size_t field_len;
    bool in_value;
};

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct response_parse *r = p->data;

    if (r->in_value) {
        r->field_len = 0;
        r->in_value = false;
    }
    for (size_t i = 0; i < len && r->field_len + 1 < sizeof r->field; i++)
        r->field[r->field_len++] = at[i];
    r->field[r->field_len] = '\0';
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct response_parse *r = p->data;
    char *etag = r->out->etag;
    size_t have;

    if (!r->in_value) {
        r->in_value = true;
        r->is_etag = strcasecmp(r->field, "ETag") == 0;
        if (r->is_etag)
            etag[0] = '\0';
    }
    if (!r->is_etag)
        return 0;
    have = strlen(etag);
    for (size_t i = 0; i < len && have + 1 < sizeof r->out->etag; i++) {
        if (at[i] != '"')
            etag[have++] = at[i];
    }
    etag[have] = '\0';
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct response_parse *r = p->data;
    struct cli_response *out = r->out;

    if (out->len + len + 1 > RESPONSE_MAX_BYTES) {
        r->is_too_big = true;
        return -1;
    }
    if (out->len + len + 1 > r->cap) {
        size_t cap = r->cap == 0 ? 4096 : r->cap;
        char *b;
        while (cap < out->len + len + 1)
            cap *= 2;
        b = realloc(out->body, cap);
        if (b == NULL)
            return -1;
        out->body = b;
        r->cap = cap;
    }
    memcpy(out->body + out->len, at, len);
    out->len += len;
    out->body[out->len] = '\0';
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct response_parse *r = p->data;

    r->is_complete = true;
    return 0;
}

static int read_response(int fd, int64_t deadline_ms, struct cli_response *out, char *err,
                         size_t cap)
{
    http_parser_settings settings;
    struct response_parse r = {.out = out};
    http_parser parser;
    char buf[65536];

    http_parser_settings_init(&settings);
    settings.on_header_field = on_header_field;
    settings.on_header_value = on_header_value;
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;
    http_parser_init(&parser, HTTP_RESPONSE);
    parser.data = &r;
    while (!r.is_complete) {
        ssize_t n;
        size_t used;
        if (wait_fd(fd, POLLIN, deadline_ms, err, cap) != 0)
            return -1;
        n = recv(fd, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            snprintf(err, cap, "recv: %s", strerror(errno));
            return -1;
        }
        used = http_parser_execute(&parser, &settings, buf, (size_t)n);
        if (parser.http_errno != HPE_OK || (n > 0 && used != (size_t)n)) {
            snprintf(err, cap, "%s",
                     r.is_too_big ? "response too large" : "malformed response from the server");
            return -1;
        }
        if (n == 0 && !r.is_complete) {
            snprintf(err, cap, "the server closed the connection before answering");
            return -1;
        }
    }
    out->status = parser.status_code;
    if (out->body == NULL) {
        out->body = calloc(1, 1);
        if (out->body == NULL) {
            snprintf(err, cap, "out of memory");
            return -1;
        }
    }
    return 0;
}

int cli_http(const struct cli *cli, const char *method, const char *path, const char *content_type,
             const void *body, size_t len, const char *extra_headers, struct cli_response *out,
             char *err, size_t cap)
{
    int64_t deadline_ms = now_ms() + cli->timeout_ms;
    struct target t = {.host = "localhost"};
    char *head = NULL;
    size_t head_len = 0;
    FILE *f;
    int fd, rv = -1;

    memset(out, 0, sizeof *out);
    if (cli->address != NULL) {
        if (target_parse(cli->address, &t, err, cap) != 0)
            return -1;
        if (cli->api_key == NULL || cli->api_key[0] == '\0') {
            snprintf(err, cap, "--address needs an API key: --api-key or CONCORD_API_KEY");
            return -1;
        }
        fd = connect_tcp(&t, err, cap);
    } else {
        fd = connect_unix(cli->socket_path, err, cap);
    }
    if (fd < 0)
        return -1;
    f = open_memstream(&head, &head_len);
    if (f == NULL) {
        snprintf(err, cap, "out of memory");
        goto out;
    }
    fprintf(f,
            "%s %s%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: concord-cli\r\n"
            "Accept: application/json\r\nConnection: close\r\nContent-Length: %zu\r\n",
            method, t.base_path, path, t.host, len);
    if (cli->address != NULL)
        fprintf(f, "Authorization: Bearer %s\r\n", cli->api_key);
    if (content_type != NULL)
        fprintf(f, "Content-Type: %s\r\n", content_type);
    fprintf(f, "%s\r\n", extra_headers != NULL ? extra_headers : "");
    if (fclose(f) != 0 || head == NULL) {
        snprintf(err, cap, "out of memory");
        goto out;
    }
    if (send_all(fd, head, head_len, deadline_ms, err, cap) != 0 ||
        (len > 0 && send_all(fd, body, len, deadline_ms, err, cap) != 0))
        goto out;
    if (read_response(fd, deadline_ms, out, err, cap) != 0) {
        free(out->body);
        memset(out, 0, sizeof *out);
        goto out;
    }
    rv = 0;
out:
    free(head);
    close(fd);
    return rv;
}

void cli_url_encode(const char *text, char *buf, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;

    for (const unsigned char *p = (const unsigned char *)text; *p != '\0' && n + 4 < cap; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '.' || *p == '_' || *p == '~') {
            buf[n++] = (char)*p;
        } else {
            buf[n++] = '%';
            buf[n++] = hex[*p >> 4];
            buf[n++] = hex[*p & 15];
        }
    }
    buf[n] = '\0';
}
