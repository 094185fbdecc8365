/* tests/fuzz/h2_server.c: arbitrary bytes into the HTTP/2 server, after the
 * client connection preface (the 24-byte magic, which this target sends
 * itself: corpus files hold what a client sends after it). The input is fed
 * in pieces whose sizes come from the input, and every request is answered,
 * alternately with h2_respond and with a long response (start, write, end),
 * so both ways of sending run. Limits are small, so that 413 and the stream
 * limit are within reach. Properties: no crash, no leak, and on_stream_close
 * fires exactly once, with its user pointer, for every request delivered. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/control/h2.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct run {
    struct h2_session *s;
    unsigned requests;
    unsigned closes;
};

static void on_request(void *arg, struct h2_stream *st, const struct h2_request *req)
{
    struct run *r = arg;
    int rv;

    if (req->body[req->body_len] != '\0')
        abort();
    h2_stream_set_user(st, r);
    if (r->requests++ % 2 == 0) {
        rv = h2_respond(r->s, st, 200, "application/json", req->body, req->body_len);
    } else {
        rv = h2_stream_start(r->s, st, 200, NULL);
        if (rv == H2_OK)
            rv = h2_stream_write(r->s, st, req->path, strlen(req->path));
        if (rv == H2_OK)
            rv = h2_stream_end(r->s, st);
    }
    /* Only memory can fail on a stream just delivered, and a write after
     * the long answer to a HEAD, which ends with its headers. */
    if (rv != H2_OK && rv != H2_NOMEM && !(rv == H2_STATE && strcmp(req->method, "HEAD") == 0))
        abort();
}

static void on_stream_close(void *arg, struct h2_stream *st, void *user)
{
    struct run *r = arg;

    (void)st;
    if (user != r || ++r->closes > r->requests)
        abort();
}

static int discard(void *arg, const uint8_t *data, size_t len)
{
    (void)arg;
    (void)data;
    (void)len;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char magic[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    struct run r = {0};
    struct h2_options opts = {
        .max_body_bytes = 256,
        .max_concurrent_streams = 8,
        .cb = {.on_request = on_request, .on_stream_close = on_stream_close, .send = discard},
        .arg = &r,
    };
    size_t pos = 0;
    size_t step = size > 0 ? (size_t)data[0] % 61 + 1 : 1;

    if (h2_session_new(&opts, &r.s) != H2_OK)
        return 0;
    if (h2_session_feed(r.s, (const uint8_t *)magic, strlen(magic)) == H2_OK) {
        while (pos < size) {
            size_t n = size - pos < step ? size - pos : step;

            if (h2_session_feed(r.s, data + pos, n) != H2_OK)
                break;
            pos += n;
            step = step * 5 % 97 + 1;
        }
    }
    (void)h2_session_is_done(r.s);
    h2_session_free(r.s);
    if (r.closes != r.requests)
        abort();
    return 0;
}
