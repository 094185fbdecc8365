/* tests/fuzz/http_request.c: arbitrary bytes into the HTTP request parser.
 * The input is fed in pieces whose sizes come from the input itself, so
 * split points are explored too, and parsing goes on after each complete
 * request as on a kept-alive connection. Every request produced has its
 * headers and query looked up. Properties: no crash, no leak, and every call
 * consumes something but never more than it was offered. */
#include <stdint.h>
#include <stdlib.h>

#include "server/net/http.h"
#include "server/net/request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void inspect(const struct net_http_request *req)
{
    char value[64];

    (void)net_http_header_get(req, "content-type");
    (void)net_http_query_get(req, "consistent", value, sizeof value);
    if (req->body == NULL || req->body[req->body_len] != '\0')
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Small limits, so that 413, 414 and 431 are within the fuzzer's reach. */
    struct net_request_limits limits = {.max_header_bytes = 512, .max_body_bytes = 256};
    struct net_request_parser *p;
    size_t pos = 0;
    size_t step = size > 0 ? (size_t)data[0] % 17 + 1 : 1;

    if (net_request_parser_new(&limits, &p) != 0)
        return 0;
    while (pos < size) {
        size_t offered = size - pos < step ? size - pos : step;
        struct net_http_request *req;
        size_t used;

        if (net_request_parse(p, data + pos, offered, &used, &req) != 0)
            break;
        /* Progress on every call: a stall would hang a real connection. */
        if (used > offered || (used == 0 && req == NULL))
            abort();
        pos += used;
        if (req != NULL) {
            inspect(req);
            net_request_free(req);
        }
        step = step * 3 % 29 + 1;
    }
    net_request_parser_free(p);
    return 0;
}
