/* server/net/http.c: the helpers of http.h that need no connection: error
 * strings, header and query lookup, and percent-decoding. */
#include "server/net/http.h"

#include <string.h>
#include <strings.h>

#include "server/net/net_internal.h"

const char *net_strerror(int code)
{
    switch (code) {
#define X(c, msg)                                                                                  \
    case c:                                                                                        \
        return msg;
        NET_CODES(X)
#undef X
    }
    return "unknown error";
}

const char *net_http_header_get(const struct net_http_request *req, const char *name)
{
    for (size_t i = 0; i < req->n_headers; i++) {
        if (strcasecmp(req->headers[i].name, name) == 0)
            return req->headers[i].value;
    }
    return NULL;
}

static int hex_value(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

long net_percent_decode(const char *src, size_t len, char *dst, size_t dst_cap, bool plus_is_space)
{
    size_t out = 0;

    for (size_t i = 0; i < len; i++) {
        char ch = src[i];

        if (ch == '%') {
            int hi = i + 2 < len ? hex_value(src[i + 1]) : -1;
            int lo = i + 2 < len ? hex_value(src[i + 2]) : -1;

            if (hi < 0 || lo < 0)
                return -1;
            ch = (char)(hi * 16 + lo);
            i += 2;
        } else if (ch == '+' && plus_is_space) {
            ch = ' ';
        }
        if (ch == '\0' || out + 1 >= dst_cap)
            return -1;
        dst[out++] = ch;
    }
    if (dst_cap == 0)
        return -1;
    dst[out] = '\0';
    return (long)out;
}

bool net_http_query_get(const struct net_http_request *req, const char *name, char *buf, size_t cap)
{
    const char *q = req->query;
    size_t name_len = strlen(name);

    while (*q != '\0') {
        const char *end = strchr(q, '&');
        size_t pair_len = end != NULL ? (size_t)(end - q) : strlen(q);
        const char *eq = memchr(q, '=', pair_len);
        size_t key_len = eq != NULL ? (size_t)(eq - q) : pair_len;
        char key[256];

        /* Keys are compared decoded, so "a%5Fb" finds "a_b"; a key too long
         * for the buffer is longer than any name we look for. */
        if (net_percent_decode(q, key_len, key, sizeof key, true) == (long)name_len &&
            memcmp(key, name, name_len) == 0) {
            const char *value = eq != NULL ? eq + 1 : q + pair_len;

            return net_percent_decode(value, (size_t)(q + pair_len - value), buf, cap, true) >= 0;
        }
        if (end == NULL)
            break;
        q = end + 1;
    }
    return false;
}
