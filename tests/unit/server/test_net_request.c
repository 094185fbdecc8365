/* tests/unit/server/test_net_request.c: the HTTP request parser on bytes
 * alone (no socket): split input, limits, malformed input, keep-alive, percent
 * decoding, header and query lookup. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "server/net/http.h"
#include "server/net/request.h"

static const struct net_request_limits default_limits = {.max_header_bytes = 4096,
                                                         .max_body_bytes = 1024};

static struct net_request_parser *parser_new(const struct net_request_limits *limits)
{
    struct net_request_parser *p;

    assert_int_equal(net_request_parser_new(limits, &p), 0);
    return p;
}

/* Feeds the whole text in one call; expects exactly one complete request. */
static struct net_http_request *parse_one(struct net_request_parser *p, const char *text)
{
    struct net_http_request *req;
    size_t used;

    assert_int_equal(net_request_parse(p, (const uint8_t *)text, strlen(text), &used, &req), 0);
    assert_non_null(req);
    assert_int_equal(used, strlen(text));
    return req;
}

/* Feeds one byte per call, checking the request completes on the last byte. */
static struct net_http_request *parse_bytewise(struct net_request_parser *p, const char *text)
{
    size_t len = strlen(text);
    struct net_http_request *req = NULL;

    for (size_t i = 0; i < len; i++) {
        size_t used;

        assert_int_equal(net_request_parse(p, (const uint8_t *)text + i, 1, &used, &req), 0);
        assert_int_equal(used, 1);
        if (i + 1 < len)
            assert_null(req);
    }
    assert_non_null(req);
    return req;
}

/* Feeds the text expecting an error; returns the HTTP status to answer. */
static int parse_error(struct net_request_parser *p, const char *text, int want_code)
{
    struct net_http_request *req;
    size_t used;

    assert_int_equal(net_request_parse(p, (const uint8_t *)text, strlen(text), &used, &req),
                     want_code);
    assert_null(req);
    return net_request_parser_status(p);
}

static void parses_get_with_query_and_headers(void **state)
{
    struct net_request_parser *p = parser_new(&default_limits);
    struct net_http_request *req =
        parse_one(p, "GET /api/v1/user?name=a%20b&x HTTP/1.1\r\nHost: example\r\n"
                     "X-Trailing:  spaced  \r\nX-Empty:\r\n\r\n");

    (void)state;
    assert_string_equal(req->method, "GET");
    assert_string_equal(req->path, "/api/v1/user");
    assert_string_equal(req->query, "name=a%20b&x");
    assert_int_equal(req->n_headers, 3);
    assert_string_equal(net_http_header_get(req, "host"), "example");
    assert_string_equal(net_http_header_get(req, "X-TRAILING"), "spaced");
    assert_string_equal(net_http_header_get(req, "x-empty"), "");
    assert_null(net_http_header_get(req, "Missing"));
    assert_int_equal(req->body_len, 0);
    assert_non_null(req->body);
    assert_int_equal(req->body[0], '\0');
    assert_true(net_request_keep_alive(req));
    net_request_free(req);
    net_request_parser_free(p);
}

static void parses_post_fed_one_byte_at_a_time(void **state)
{
    struct net_request_parser *p = parser_new(&default_limits);
    struct net_http_request *req =
        parse_bytewise(p, "POST /api/v1/user HTTP/1.1\r\nContent-Type: application/json\r\n"
                          "Content-Length: 16\r\n\r\n{\"name\":\"alice\"}");

    (void)state;
    assert_string_equal(req->method, "POST");
    assert_string_equal(req->path, "/api/v1/user");
    assert_string_equal(net_http_header_get(req, "content-type"), "application/json");
    assert_int_equal(req->body_len, 16);
    assert_string_equal((const char *)req->body, "{\"name\":\"alice\"}");
    net_request_free(req);
    net_request_parser_free(p);
}

static void parses_chunked_body_fed_one_byte_at_a_time(void **state)
{
    struct net_request_parser *p = parser_new(&default_limits);
    struct net_http_request *req =
        parse_bytewise(p, "PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                          "5\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n");

    (void)state;
    assert_int_equal(req->body_len, 11);
    assert_string_equal((const char *)req->body, "hello world");
    assert_null(net_http_header_get(req, "X-Trailer"));
    net_request_free(req);
    net_request_parser_free(p);
}

static void parses_two_pipelined_requests_one_at_a_time(void **state)
{
    const char *two = "GET /first HTTP/1.1\r\nHost: a\r\n\r\n"
                      "POST /second HTTP/1.1\r\nContent-Length: 2\r\n\r\nok";
    struct net_request_parser *p = parser_new(&default_limits);
    struct net_http_request *req;
    size_t used;
    size_t first_len = strlen("GET /first HTTP/1.1\r\nHost: a\r\n\r\n");

    (void)state;
    assert_int_equal(net_request_parse(p, (const uint8_t *)two, strlen(two), &used, &req), 0);
    assert_non_null(req);
    assert_int_equal(used, first_len);
    assert_string_equal(req->path, "/first");
    assert_true(net_request_keep_alive(req));
    net_request_free(req);
    assert_int_equal(net_request_parse(p, (const uint8_t *)two + first_len, strlen(two) - first_len,
                                       &used, &req),
                     0);
    assert_non_null(req);
    assert_int_equal(used, strlen(two) - first_len);
    assert_string_equal(req->path, "/second");
    assert_string_equal((const char *)req->body, "ok");
    net_request_free(req);
    net_request_parser_free(p);
}

static void connection_close_and_http10_end_keep_alive(void **state)
{
    struct net_request_parser *p = parser_new(&default_limits);
    struct net_http_request *req;

    (void)state;
    req = parse_one(p, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_false(net_request_keep_alive(req));
    net_request_free(req);
    net_request_parser_free(p);

    p = parser_new(&default_limits);
    req = parse_one(p, "GET / HTTP/1.0\r\n\r\n");
    assert_false(net_request_keep_alive(req));
    net_request_free(req);
    net_request_parser_free(p);

    p = parser_new(&default_limits);
    req = parse_one(p, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_true(net_request_keep_alive(req));
    net_request_free(req);
    net_request_parser_free(p);
}

static void rejects_declared_body_over_limit_with_413_before_it_arrives(void **state)
{
    struct net_request_parser *p = parser_new(&default_limits);

    (void)state;
    assert_int_equal(parse_error(p, "POST /x HTTP/1.1\r\nContent-Length: 1025\r\n\r\n", NET_TOOBIG),
                     413);
    net_request_parser_free(p);
}

static void rejects_streamed_chunked_body_over_limit_with_413(void **state)
{
    struct net_request_limits small = {.max_header_bytes = 4096, .max_body_bytes = 8};
    struct net_request_parser *p = parser_new(&small);

    (void)state;
    assert_int_equal(parse_error(p,
                                 "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 "5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n",
                                 NET_TOOBIG),
                     413);
    net_request_parser_free(p);
}

static void accepts_body_exactly_at_limit(void **state)
{
    struct net_request_limits small = {.max_header_bytes = 4096, .max_body_bytes = 5};
    struct net_request_parser *p = parser_new(&small);
    struct net_http_request *req =
        parse_one(p, "POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");

    (void)state;
    assert_string_equal((const char *)req->body, "hello");
    net_request_free(req);
    net_request_parser_free(p);
}

/* A hook that remembers the head it saw and allows what X-Allow says. */
struct limit_seen {
    int calls;
    char path[32];
    bool is_local;
    bool had_body;
};

static size_t limit_from_header(void *arg, const struct net_http_request *head, size_t limit)
{
    struct limit_seen *seen = arg;
    const char *allow = net_http_header_get(head, "X-Allow");

    seen->calls++;
    snprintf(seen->path, sizeof seen->path, "%s", head->path);
    seen->is_local = head->is_local;
    seen->had_body = head->body_len > 0;
    return allow != NULL ? (size_t)strtoul(allow, NULL, 10) : limit;
}

static void body_limit_hook_decides_from_the_head_before_the_body(void **state)
{
    struct limit_seen seen = {0};
    struct net_request_limits limits = {.max_header_bytes = 4096,
                                        .max_body_bytes = 4,
                                        .body_limit = limit_from_header,
                                        .body_limit_arg = &seen,
                                        .is_local = true};
    struct net_request_parser *p = parser_new(&limits);
    struct net_http_request *req;

    (void)state;
    req = parse_bytewise(p, "POST /raised HTTP/1.1\r\nX-Allow: 10\r\nContent-Length: 10\r\n\r\n"
                            "0123456789");
    assert_int_equal(req->body_len, 10);
    assert_true(req->is_local);
    assert_int_equal(seen.calls, 1);
    assert_string_equal(seen.path, "/raised");
    assert_true(seen.is_local);
    assert_false(seen.had_body);
    net_request_free(req);
    /* The listener's limit for a request that does not ask. */
    req = parse_one(p, "POST /plain HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd");
    assert_int_equal(seen.calls, 2);
    net_request_free(req);
    net_request_parser_free(p);

    /* Lowered below the listener's limit, declared or streamed. */
    p = parser_new(&limits);
    assert_int_equal(parse_error(p,
                                 "POST /x HTTP/1.1\r\nX-Allow: 2\r\nContent-Length: 3\r\n\r\nabc",
                                 NET_TOOBIG),
                     413);
    net_request_parser_free(p);
    p = parser_new(&limits);
    assert_int_equal(parse_error(p,
                                 "POST /x HTTP/1.1\r\nX-Allow: 2\r\nTransfer-Encoding: chunked\r\n"
                                 "\r\n3\r\nabc\r\n0\r\n\r\n",
                                 NET_TOOBIG),
                     413);
    net_request_parser_free(p);
}

static void rejects_head_over_limit_with_431(void **state)
{
    struct net_request_limits small = {.max_header_bytes = 64, .max_body_bytes = 1024};
    struct net_request_parser *p = parser_new(&small);
    char text[512];

    (void)state;
    snprintf(text, sizeof text, "GET / HTTP/1.1\r\nX-Big: %0100d\r\n\r\n", 0);
    assert_int_equal(parse_error(p, text, NET_TOOBIG), 431);
    net_request_parser_free(p);
}

static void rejects_many_small_headers_over_limit_with_431(void **state)
{
    struct net_request_limits small = {.max_header_bytes = 100, .max_body_bytes = 1024};
    struct net_request_parser *p = parser_new(&small);
    struct net_http_request *req;
    size_t used;
    int rv = 0;

    (void)state;
    assert_int_equal(net_request_parse(p, (const uint8_t *)"GET / HTTP/1.1\r\n", 16, &used, &req),
                     0);
    for (int i = 0; i < 100 && rv == 0; i++)
        rv = net_request_parse(p, (const uint8_t *)"A: b\r\n", 6, &used, &req);
    assert_int_equal(rv, NET_TOOBIG);
    assert_int_equal(net_request_parser_status(p), 431);
    net_request_parser_free(p);
}

static void rejects_malformed_requests_with_400(void **state)
{
    static const char *const bad[] = {
        "GARBAGE\r\n\r\n",
        "GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
        "GET / HTTP/9.9x\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "GET /a%zz HTTP/1.1\r\n\r\n",
        "GET /a%00b HTTP/1.1\r\n\r\n",
        "GET /a%4 HTTP/1.1\r\n\r\n",
        "GET /a b c HTTP/1.1\r\n\r\n",
    };

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct net_request_parser *p = parser_new(&default_limits);

        assert_int_equal(parse_error(p, bad[i], NET_PROTOCOL), 400);
        assert_true(strlen(net_request_parser_errmsg(p)) > 0);
        net_request_parser_free(p);
    }
}

static void dead_parser_keeps_failing(void **state)
{
    struct net_request_parser *p = parser_new(&default_limits);
    struct net_http_request *req;
    size_t used;

    (void)state;
    assert_int_equal(parse_error(p, "BAD\r\n\r\n", NET_PROTOCOL), 400);
    assert_int_equal(
        net_request_parse(p, (const uint8_t *)"GET / HTTP/1.1\r\n\r\n", 18, &used, &req),
        NET_PROTOCOL);
    assert_null(req);
    assert_int_equal(used, 0);
    net_request_parser_free(p);
}

static void rejects_error_midway_through_a_body_without_leaking(void **state)
{
    struct net_request_parser *p = parser_new(&default_limits);

    (void)state;
    assert_int_equal(parse_error(p,
                                 "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 "3\r\nabc\r\nQ\r\n",
                                 NET_PROTOCOL),
                     400);
    net_request_parser_free(p);
}

static void frees_a_partial_request_with_the_parser(void **state)
{
    struct net_request_parser *p = parser_new(&default_limits);
    struct net_http_request *req;
    size_t used;
    const char *partial = "POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc";

    (void)state;
    assert_int_equal(net_request_parse(p, (const uint8_t *)partial, strlen(partial), &used, &req),
                     0);
    assert_null(req);
    net_request_parser_free(p);
}

static void decodes_percent_escapes_in_path_but_not_query(void **state)
{
    struct net_request_parser *p = parser_new(&default_limits);
    struct net_http_request *req = parse_one(p, "GET /a%2Fb%20c+d/%C3%A9?q=%2F+x HTTP/1.1\r\n\r\n");

    (void)state;
    assert_string_equal(req->path, "/a/b c+d/\xc3\xa9");
    assert_string_equal(req->query, "q=%2F+x");
    net_request_free(req);
    net_request_parser_free(p);
}

static void accepts_absolute_form_target(void **state)
{
    struct net_request_parser *p = parser_new(&default_limits);
    struct net_http_request *req = parse_one(p, "GET http://example.com HTTP/1.1\r\n\r\n");

    (void)state;
    assert_string_equal(req->path, "/");
    assert_string_equal(req->query, "");
    net_request_free(req);
    net_request_parser_free(p);
}

static void finds_query_values_decoded(void **state)
{
    struct net_request_parser *p = parser_new(&default_limits);
    struct net_http_request *req =
        parse_one(p, "GET /x?a=1&b=x%20y&c=p+q&d&e=&f%5Fg=h&bad=%zz HTTP/1.1\r\n\r\n");
    char buf[16];

    (void)state;
    assert_true(net_http_query_get(req, "a", buf, sizeof buf));
    assert_string_equal(buf, "1");
    assert_true(net_http_query_get(req, "b", buf, sizeof buf));
    assert_string_equal(buf, "x y");
    assert_true(net_http_query_get(req, "c", buf, sizeof buf));
    assert_string_equal(buf, "p q");
    assert_true(net_http_query_get(req, "d", buf, sizeof buf));
    assert_string_equal(buf, "");
    assert_true(net_http_query_get(req, "e", buf, sizeof buf));
    assert_string_equal(buf, "");
    assert_true(net_http_query_get(req, "f_g", buf, sizeof buf));
    assert_string_equal(buf, "h");
    assert_false(net_http_query_get(req, "bad", buf, sizeof buf));
    assert_false(net_http_query_get(req, "missing", buf, sizeof buf));
    assert_false(net_http_query_get(req, "b", buf, 3)); /* "x y" needs 4 bytes */
    assert_true(net_http_query_get(req, "b", buf, 4));
    net_request_free(req);
    net_request_parser_free(p);
}

static void flags_expect_continue_once(void **state)
{
    struct net_request_parser *p = parser_new(&default_limits);
    struct net_http_request *req;
    size_t used;
    const char *head = "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";

    (void)state;
    assert_int_equal(net_request_parse(p, (const uint8_t *)head, strlen(head), &used, &req), 0);
    assert_null(req);
    assert_true(net_request_parser_take_continue(p));
    assert_false(net_request_parser_take_continue(p));
    assert_int_equal(net_request_parse(p, (const uint8_t *)"hi", 2, &used, &req), 0);
    assert_non_null(req);
    net_request_free(req);
    net_request_parser_free(p);
}

static void rejects_overlong_uri_with_414(void **state)
{
    struct net_request_limits big = {.max_header_bytes = 200000, .max_body_bytes = 1024};
    struct net_request_parser *p = parser_new(&big);
    size_t len = 70000;
    char *text = malloc(len + 32);

    (void)state;
    assert_non_null(text);
    memcpy(text, "GET /", 5);
    memset(text + 5, 'a', len);
    memcpy(text + 5 + len, " HTTP/1.1\r\n\r\n", 14);
    assert_int_equal(parse_error(p, text, NET_TOOBIG), 414);
    free(text);
    net_request_parser_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_get_with_query_and_headers),
        cmocka_unit_test(parses_post_fed_one_byte_at_a_time),
        cmocka_unit_test(parses_chunked_body_fed_one_byte_at_a_time),
        cmocka_unit_test(parses_two_pipelined_requests_one_at_a_time),
        cmocka_unit_test(connection_close_and_http10_end_keep_alive),
        cmocka_unit_test(rejects_declared_body_over_limit_with_413_before_it_arrives),
        cmocka_unit_test(rejects_streamed_chunked_body_over_limit_with_413),
        cmocka_unit_test(accepts_body_exactly_at_limit),
        cmocka_unit_test(rejects_head_over_limit_with_431),
        cmocka_unit_test(rejects_many_small_headers_over_limit_with_431),
        cmocka_unit_test(rejects_malformed_requests_with_400),
        cmocka_unit_test(dead_parser_keeps_failing),
        cmocka_unit_test(rejects_error_midway_through_a_body_without_leaking),
        cmocka_unit_test(frees_a_partial_request_with_the_parser),
        cmocka_unit_test(decodes_percent_escapes_in_path_but_not_query),
        cmocka_unit_test(accepts_absolute_form_target),
        cmocka_unit_test(finds_query_values_decoded),
        cmocka_unit_test(flags_expect_continue_once),
        cmocka_unit_test(rejects_overlong_uri_with_414),
        cmocka_unit_test(body_limit_hook_decides_from_the_head_before_the_body),
    };

    return cmocka_run_group_tests_name("net_request", tests, NULL, NULL);
}
