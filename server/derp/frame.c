/* server/derp/frame.c: the DERP frame header and the incremental frame
 * reader (frame.h). A frame that arrives whole in one feed is handed out in
 * place; only a split one is copied, into a buffer that grows with the bytes
 * actually received (a header announcing 1 MiB costs nothing until the
 * bytes come) and is released as soon as the frame is complete. */
#include "server/derp/frame.h"

#include <stdlib.h>
#include <string.h>

#define MIN_BUFFER 256

void derp_put_header(uint8_t out[DERP_HEADER_BYTES], uint8_t type, uint32_t len)
{
    out[0] = type;
    out[1] = (uint8_t)(len >> 24);
    out[2] = (uint8_t)(len >> 16);
    out[3] = (uint8_t)(len >> 8);
    out[4] = (uint8_t)len;
}

void derp_reader_free(struct derp_reader *r)
{
    free(r->buf);
    r->buf = NULL;
    r->cap = 0;
}

static size_t min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

/* Takes header bytes from *data; returns 1 once the header is complete. */
static int take_header(struct derp_reader *r, const uint8_t **data, size_t *len)
{
    size_t n = min_size(DERP_HEADER_BYTES - r->header_have, *len);

    memcpy(r->header + r->header_have, *data, n);
    r->header_have += (uint8_t)n;
    *data += n;
    *len -= n;
    if (r->header_have < DERP_HEADER_BYTES)
        return 0;
    r->header_have = 0;
    r->type = r->header[0];
    r->len = (uint32_t)r->header[1] << 24 | (uint32_t)r->header[2] << 16 |
             (uint32_t)r->header[3] << 8 | r->header[4];
    r->have = 0;
    return 1;
}

static int grow(struct derp_reader *r, uint32_t need)
{
    uint32_t cap = r->cap < MIN_BUFFER ? MIN_BUFFER : r->cap;
    uint8_t *buf;

    while (cap < need)
        cap = cap > UINT32_MAX / 2 ? UINT32_MAX : cap * 2;
    if (cap > r->len)
        cap = r->len;
    buf = realloc(r->buf, cap);
    if (buf == NULL)
        return -1;
    r->buf = buf;
    r->cap = cap;
    return 0;
}

/* Payload bytes of the pending frame; returns -1 to stop. */
static int take_payload(struct derp_reader *r, const uint8_t **data, size_t *len,
                        const struct derp_reader_ops *ops, void *arg)
{
    size_t n = min_size(r->len - r->have, *len);
    int rv = 0;

    if (!r->skipping && n > 0) {
        if (r->have + n > r->cap && grow(r, r->have + (uint32_t)n) != 0)
            return -1;
        memcpy(r->buf + r->have, *data, n);
    }
    r->have += (uint32_t)n;
    *data += n;
    *len -= n;
    if (r->have < r->len)
        return 0;
    r->in_frame = 0;
    if (!r->skipping)
        rv = ops->on_frame(arg, r->type, r->buf, r->len);
    derp_reader_free(r);
    return rv != 0 ? -1 : 0;
}

int derp_reader_feed(struct derp_reader *r, const uint8_t *data, size_t len,
                     const struct derp_reader_ops *ops, void *arg)
{
    while (len > 0) {
        enum derp_verdict v;

        if (r->in_frame) {
            if (take_payload(r, &data, &len, ops, arg) != 0)
                return -1;
            continue;
        }
        if (!take_header(r, &data, &len))
            return 0;
        v = ops->on_header(arg, r->type, r->len);
        if (v == DERP_FAIL)
            return -1;
        r->skipping = v == DERP_SKIP;
        if (v == DERP_READ && r->len <= len) {
            /* Whole in this feed: no copy. */
            int rv = ops->on_frame(arg, r->type, data, r->len);

            data += r->len;
            len -= r->len;
            if (rv != 0)
                return -1;
            continue;
        }
        r->in_frame = 1;
        if (take_payload(r, &data, &len, ops, arg) != 0)
            return -1;
    }
    return 0;
}
