/* server/net/request.c: HTTP/1.1 requests from bytes, with http-parser 2.9.
 * http-parser calls back with pieces of the URL, header names and values as
 * they arrive; they are appended to one string block (each NUL-terminated),
 * recording where each string starts. When the head is complete the block
 * becomes the request's, the body is collected next, and on message complete
 * the parser pauses so that the request is handed out before any byte of the
 * next one is looked at. Limits are checked while the bytes arrive, so a
 * request past them never costs more than the limit in memory; the body limit
 * of each request is decided once its head is complete (by the limits' hook,
 * if any). A body of declared length gets one exact allocation and a chunked
 * one grows by doubling, so receiving a big body takes linear time. */
#include "server/net/request.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <http_parser.h>

#include "server/net/net_internal.h"

/* http_parser_url keeps 16-bit offsets. */
#define URL_MAX_BYTES 65535
/* Per header line, beyond its name and value: ": " and CRLF. */
#define HEADER_LINE_OVERHEAD 4

enum piece { PIECE_NONE, PIECE_URL, PIECE_FIELD, PIECE_VALUE };

struct header_offsets {
    size_t name;
    size_t value;
};

struct net_request_parser {
    http_parser hp; /* hp.data == this */
    struct net_request_limits limits;
    /* The head being received: URL, then name and value of each header. */
    char *strings;
    size_t strings_len;
    size_t strings_cap;
    enum piece last_piece;
    size_t url_len;
    struct header_offsets *headers;
    size_t n_headers;
    size_t headers_cap;
    size_t head_bytes;
    /* Set once the head is complete; the body (and trailers) follow. */
    struct net_request_box *box;
    size_t body_cap;
    size_t body_limit; /* of the request being received, decided from its head */
    bool wants_continue;
    /* Set by on_message_complete; handed out by net_request_parse(). */
    struct net_http_request *done;
    int error_code;
    int error_status;
    char errmsg[256];
};

static int fail(struct net_request_parser *p, int code, int status, const char *why)
{
    p->error_code = code;
    p->error_status = status;
    snprintf(p->errmsg, sizeof p->errmsg, "%s", why);
    return -1;
}

static void reset_head(struct net_request_parser *p)
{
    free(p->strings);
    p->strings = NULL;
    p->strings_len = 0;
    p->strings_cap = 0;
    p->last_piece = PIECE_NONE;
    p->url_len = 0;
    p->n_headers = 0;
    p->head_bytes = 0;
}

static int grow(void **buf, size_t *cap, size_t need, size_t elem)
{
    size_t next = *cap == 0 ? 16 : *cap;
    void *bigger;

    if (need <= *cap)
        return 0;
    while (next < need)
        next *= 2;
    bigger = realloc(*buf, next * elem);
    if (bigger == NULL)
        return -1;
    *buf = bigger;
    *cap = next;
    return 0;
}

static int strings_append(struct net_request_parser *p, const char *at, size_t len)
{
    void *buf = p->strings;

    /* +1: room for the NUL that ends this string when the next one starts. */
    if (grow(&buf, &p->strings_cap, p->strings_len + len + 1, 1) != 0)
        return fail(p, NET_NOMEM, 500, "out of memory");
    p->strings = buf;
    memcpy(p->strings + p->strings_len, at, len);
    p->strings_len += len;
    return 0;
}

/* Ends the string being received; the next piece starts a new one. */
static int strings_terminate(struct net_request_parser *p)
{
    if (strings_append(p, "", 0) != 0)
        return -1;
    p->strings[p->strings_len++] = '\0';
    return 0;
}

static int count_head_bytes(struct net_request_parser *p, size_t len)
{
    p->head_bytes += len;
    if (p->head_bytes > p->limits.max_header_bytes)
        return fail(p, NET_TOOBIG, 431, "request header fields too large");
    return 0;
}

static int on_message_begin(http_parser *hp)
{
    struct net_request_parser *p = hp->data;

    reset_head(p);
    p->wants_continue = false;
    return 0;
}

static int on_url(http_parser *hp, const char *at, size_t len)
{
    struct net_request_parser *p = hp->data;

    if (count_head_bytes(p, len) != 0)
        return -1;
    p->url_len += len;
    if (p->url_len > URL_MAX_BYTES)
        return fail(p, NET_TOOBIG, 414, "URI too long");
    p->last_piece = PIECE_URL;
    return strings_append(p, at, len);
}

static int on_header_field(http_parser *hp, const char *at, size_t len)
{
    struct net_request_parser *p = hp->data;
    void *headers = p->headers;

    if (count_head_bytes(p, len + (p->last_piece != PIECE_FIELD ? HEADER_LINE_OVERHEAD : 0)) != 0)
        return -1;
    if (p->box != NULL)
        return 0; /* a trailer of a chunked body: counted, not kept */
    if (p->last_piece != PIECE_FIELD) {
        if (grow(&headers, &p->headers_cap, p->n_headers + 1, sizeof *p->headers) != 0)
            return fail(p, NET_NOMEM, 500, "out of memory");
        p->headers = headers;
        if (strings_terminate(p) != 0) /* ends the URL or the previous value */
            return -1;
        p->headers[p->n_headers++] = (struct header_offsets){.name = p->strings_len};
        p->last_piece = PIECE_FIELD;
    }
    return strings_append(p, at, len);
}

static int on_header_value(http_parser *hp, const char *at, size_t len)
{
    struct net_request_parser *p = hp->data;

    if (count_head_bytes(p, len) != 0)
        return -1;
    if (p->box != NULL)
        return 0;
    if (p->last_piece != PIECE_VALUE) {
        if (strings_terminate(p) != 0) /* ends the name */
            return -1;
        p->headers[p->n_headers - 1].value = p->strings_len;
        p->last_piece = PIECE_VALUE;
    }
    return strings_append(p, at, len);
}

/* Splits the URL into the decoded path and the raw query. */
static int split_url(struct net_request_parser *p, struct net_http_request *req, const char *url)
{
    struct http_parser_url u;
    const char *path = "/";
    size_t path_len = 1;
    const char *query = "";
    size_t query_len = 0;
    long decoded;

    http_parser_url_init(&u);
    if (http_parser_parse_url(url, p->url_len, p->hp.method == HTTP_CONNECT, &u) != 0)
        return fail(p, NET_PROTOCOL, 400, "invalid request target");
    if (u.field_set & (1u << UF_PATH)) {
        path = url + u.field_data[UF_PATH].off;
        path_len = u.field_data[UF_PATH].len;
    }
    if (u.field_set & (1u << UF_QUERY)) {
        query = url + u.field_data[UF_QUERY].off;
        query_len = u.field_data[UF_QUERY].len;
    }
    req->path = malloc(path_len + 1);
    req->query = malloc(query_len + 1);
    if (req->path == NULL || req->query == NULL)
        return fail(p, NET_NOMEM, 500, "out of memory");
    decoded = net_percent_decode(path, path_len, req->path, path_len + 1, false);
    if (decoded < 0)
        return fail(p, NET_PROTOCOL, 400, "malformed percent-encoding or NUL in path");
    memcpy(req->query, query, query_len);
    req->query[query_len] = '\0';
    return 0;
}

static void trim_trailing_space(char *s)
{
    size_t n = strlen(s);

    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
}

static bool header_is(const struct net_http_request *req, const char *name, const char *value)
{
    const char *got = net_http_header_get(req, name);

    return got != NULL && strcasecmp(got, value) == 0;
}

static int on_headers_complete(http_parser *hp)
{
    struct net_request_parser *p = hp->data;
    struct net_request_box *box;
    struct net_http_request *req;

    if (p->strings == NULL || p->url_len == 0)
        return fail(p, NET_PROTOCOL, 400, "missing request target");
    if (strings_terminate(p) != 0)
        return -1;
    box = calloc(1, sizeof *box);
    if (box == NULL)
        return fail(p, NET_NOMEM, 500, "out of memory");
    req = &box->req;
    req->internal = &box->in;
    p->box = box;
    box->in.strings = p->strings;
    p->strings = NULL;
    p->strings_cap = 0;
    req->is_local = p->limits.is_local;
    snprintf(req->method, sizeof req->method, "%s", http_method_str(hp->method));
    box->in.is_head = hp->method == HTTP_HEAD;
    box->in.is_http10 = hp->http_major == 1 && hp->http_minor == 0;
    req->headers = calloc(p->n_headers + 1, sizeof *req->headers);
    if (req->headers == NULL)
        return fail(p, NET_NOMEM, 500, "out of memory");
    for (size_t i = 0; i < p->n_headers; i++) {
        req->headers[i].name = box->in.strings + p->headers[i].name;
        /* A header without value gets the empty string ending its name. */
        req->headers[i].value = p->headers[i].value != 0 ? box->in.strings + p->headers[i].value
                                                         : box->in.strings + p->headers[i].name +
                                                               strlen(req->headers[i].name);
        trim_trailing_space(req->headers[i].value);
    }
    req->n_headers = p->n_headers;
    if (split_url(p, req, box->in.strings) != 0)
        return -1;
    p->body_limit =
        p->limits.body_limit != NULL
            ? p->limits.body_limit(p->limits.body_limit_arg, req, p->limits.max_body_bytes)
            : p->limits.max_body_bytes;
    if ((hp->flags & F_CONTENTLENGTH) && hp->content_length > p->body_limit)
        return fail(p, NET_TOOBIG, 413, "request body too large");
    if ((hp->flags & F_CONTENTLENGTH) && hp->content_length > 0) {
        /* The length is known and within the limit: one exact allocation. */
        p->body_cap = (size_t)hp->content_length + 1;
        req->body = malloc(p->body_cap);
        if (req->body == NULL)
            return fail(p, NET_NOMEM, 500, "out of memory");
        p->wants_continue = header_is(req, "Expect", "100-continue");
    } else if (hp->flags & F_CHUNKED) {
        p->wants_continue = header_is(req, "Expect", "100-continue");
    }
    return 0;
}

static int on_body(http_parser *hp, const char *at, size_t len)
{
    struct net_request_parser *p = hp->data;
    struct net_http_request *req = &p->box->req;
    void *body = req->body;

    if (len > p->body_limit - req->body_len)
        return fail(p, NET_TOOBIG, 413, "request body too large");
    if (grow(&body, &p->body_cap, req->body_len + len + 1, 1) != 0)
        return fail(p, NET_NOMEM, 500, "out of memory");
    req->body = body;
    memcpy(req->body + req->body_len, at, len);
    req->body_len += len;
    return 0;
}

static int on_message_complete(http_parser *hp)
{
    struct net_request_parser *p = hp->data;
    struct net_http_request *req = &p->box->req;

    if (req->body == NULL) {
        req->body = malloc(1);
        if (req->body == NULL)
            return fail(p, NET_NOMEM, 500, "out of memory");
    }
    req->body[req->body_len] = '\0';
    /* An upgrade is not spoken here yet: answer, then close. */
    p->box->in.keep_alive = http_should_keep_alive(hp) && !hp->upgrade;
    p->done = req;
    p->box = NULL;
    p->body_cap = 0;
    reset_head(p);
    http_parser_pause(hp, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

int net_request_parser_new(const struct net_request_limits *limits, struct net_request_parser **out)
{
    struct net_request_parser *p = calloc(1, sizeof *p);

    if (p == NULL)
        return NET_NOMEM;
    http_parser_init(&p->hp, HTTP_REQUEST);
    p->hp.data = p;
    p->limits = *limits;
    *out = p;
    return 0;
}

void net_request_parser_free(struct net_request_parser *p)
{
    if (p == NULL)
        return;
    if (p->box != NULL)
        net_request_free(&p->box->req);
    net_request_free(p->done);
    free(p->strings);
    free(p->headers);
    free(p);
}

int net_request_parse(struct net_request_parser *p, const uint8_t *data, size_t len, size_t *used,
                      struct net_http_request **out)
{
    size_t n;
    enum http_errno err;

    *used = 0;
    *out = NULL;
    if (p->error_code != 0)
        return p->error_code;
    if (HTTP_PARSER_ERRNO(&p->hp) == HPE_PAUSED)
        http_parser_pause(&p->hp, 0);
    if (len == 0)
        return 0;
    n = http_parser_execute(&p->hp, &parser_settings, (const char *)data, len);
    err = HTTP_PARSER_ERRNO(&p->hp);
    if (err == HPE_PAUSED) {
        *used = n;
        *out = p->done;
        p->done = NULL;
        return 0;
    }
    if (err != HPE_OK) {
        /* A callback that failed has said why; otherwise it is malformed. */
        if (p->error_code == 0)
            fail(p, NET_PROTOCOL, 400, http_errno_description(err));
        if (p->box != NULL) {
            net_request_free(&p->box->req);
            p->box = NULL;
            p->body_cap = 0;
        }
        return p->error_code;
    }
    *used = n;
    return 0;
}

int net_request_parser_status(const struct net_request_parser *p)
{
    return p->error_status;
}

const char *net_request_parser_errmsg(const struct net_request_parser *p)
{
    return p->errmsg;
}

bool net_request_parser_take_continue(struct net_request_parser *p)
{
    bool wants = p->wants_continue;

    p->wants_continue = false;
    return wants;
}

bool net_request_keep_alive(const struct net_http_request *req)
{
    const struct net_request_internal *in = req->internal;

    return in->keep_alive;
}

void net_request_free(struct net_http_request *req)
{
    struct net_request_internal *in;

    if (req == NULL)
        return;
    in = req->internal;
    free(in->strings);
    free(req->headers);
    free(req->path);
    free(req->query);
    free(req->body);
    free(req); /* the box: req is its first member */
}
