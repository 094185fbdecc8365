/* tests/unit/control/test_wire.c: the JSON writer (jsonw), the request
 * decoders (wire) and the map encoder and framing (mapenc): exact output
 * bytes, every decoder error, and a zstd round trip of the framing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zstd.h>

#include "server/control/jsonw.h"
#include "server/control/mapenc.h"
#include "server/control/wire.h"

/* 64 hex digits: a 32-byte key whose bytes are all 0xXY. */
#define X2(s)     s s
#define HEX64(s)  X2(X2(X2(X2(X2(s)))))
#define KEY_AB    "nodekey:" HEX64("ab")
#define KEY_ZERO  "nodekey:" HEX64("00")
#define DISCO_CD  "discokey:" HEX64("cd")
#define DISCO_0   "discokey:" HEX64("00")
#define MKEY_01   "mkey:" HEX64("01")
#define EXPIRY_MS 1802944800000LL /* 2027-02-18T10:00:00Z */
#define CREATE_MS 1785574800123LL /* 2026-08-01T09:00:00.123Z */
#define NOW_MS    1787392800000LL /* 2026-08-22T10:00:00Z */
#define SEEN_MS   1786350600000LL /* 2026-08-10T08:30:00Z */

/* ---- jsonw ---- */

static void assert_written(struct jw *w, const char *expected)
{
    assert_false(jw_failed(w));
    assert_string_equal(w->buf, expected);
    assert_int_equal(w->len, strlen(expected));
}

static void jw_escapes_strings(void **state)
{
    struct jw w;

    (void)state;
    jw_init(&w);
    jw_str(&w, "a\"b\\c\n\x01\x1f\t\r\x7f caf\xc3\xa9");
    assert_written(&w, "\"a\\\"b\\\\c\\n\\u0001\\u001f\\t\\r\x7f caf\xc3\xa9\"");
    jw_reset(&w);
    jw_strn(&w, "x\0y", 3);
    assert_written(&w, "\"x\\u0000y\"");
    jw_reset(&w);
    jw_str(&w, NULL);
    assert_written(&w, "\"\"");
    jw_free(&w);
}

static void jw_nests_with_commas(void **state)
{
    struct jw w;

    (void)state;
    jw_init(&w);
    jw_obj_begin(&w);
    jw_key(&w, "a");
    jw_arr_begin(&w);
    jw_int(&w, 1);
    jw_obj_begin(&w);
    jw_key(&w, "b");
    jw_null(&w);
    jw_obj_end(&w);
    jw_arr_begin(&w);
    jw_arr_end(&w);
    jw_arr_end(&w);
    jw_key(&w, "c");
    jw_obj_begin(&w);
    jw_obj_end(&w);
    jw_key(&w, "d\"");
    jw_bool(&w, true);
    jw_key(&w, "e");
    jw_int(&w, INT64_MIN);
    jw_key(&w, "f");
    jw_uint(&w, UINT64_MAX);
    jw_key(&w, "g");
    jw_raw(&w, "[1,2]", 5);
    jw_key(&w, "h");
    jw_bool(&w, false);
    jw_obj_end(&w);
    assert_written(&w, "{\"a\":[1,{\"b\":null},[]],\"c\":{},\"d\\\"\":true,"
                       "\"e\":-9223372036854775808,\"f\":18446744073709551615,\"g\":[1,2],"
                       "\"h\":false}");
    jw_free(&w);
}

static void jw_next_value_puts_values_back_to_back(void **state)
{
    struct jw w;

    (void)state;
    jw_init(&w);
    jw_obj_begin(&w);
    jw_key(&w, "a");
    jw_uint(&w, 1);
    jw_obj_end(&w);
    jw_next_value(&w);
    jw_arr_begin(&w);
    jw_bool(&w, true);
    jw_arr_end(&w);
    assert_false(jw_failed(&w));
    assert_string_equal(w.buf, "{\"a\":1}[true]");
    jw_free(&w);
}

static void jw_grows_and_resets(void **state)
{
    struct jw w;
    char big[5000];

    (void)state;
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    jw_init(&w);
    jw_arr_begin(&w);
    for (int i = 0; i < 10; i++)
        jw_str(&w, big);
    jw_arr_end(&w);
    assert_false(jw_failed(&w));
    assert_int_equal(w.len, 2 + 10 * (sizeof big + 1) + 9);
    size_t cap = w.cap;
    jw_reset(&w);
    assert_int_equal(w.cap, cap);
    jw_int(&w, 0);
    assert_written(&w, "0");
    jw_free(&w);
}

static void jw_fails_on_depth_and_misuse(void **state)
{
    struct jw w;

    (void)state;
    jw_init(&w);
    for (int i = 0; i < JW_MAX_DEPTH; i++)
        jw_arr_begin(&w);
    assert_false(jw_failed(&w));
    jw_arr_begin(&w);
    assert_true(jw_failed(&w));
    jw_reset(&w);
    assert_false(jw_failed(&w));
    jw_obj_end(&w);
    assert_true(jw_failed(&w));
    jw_reset(&w);
    jw_obj_begin(&w);
    jw_key(&w, "a");
    jw_obj_end(&w);
    assert_true(jw_failed(&w));
    jw_reset(&w);
    jw_host_prefix(&w, (const uint8_t *)"abcde", 5);
    assert_true(jw_failed(&w));
    jw_free(&w);
}

static void assert_time(int64_t ms, const char *expected)
{
    struct jw w;

    jw_init(&w);
    jw_time(&w, ms);
    assert_written(&w, expected);
    jw_free(&w);
}

static void jw_formats_times(void **state)
{
    (void)state;
    assert_time(0, "\"0001-01-01T00:00:00Z\"");
    assert_time(NOW_MS, "\"2026-08-22T10:00:00Z\"");
    assert_time(NOW_MS + 123, "\"2026-08-22T10:00:00.123Z\"");
    assert_time(NOW_MS + 120, "\"2026-08-22T10:00:00.12Z\"");
    assert_time(NOW_MS + 100, "\"2026-08-22T10:00:00.1Z\"");
    assert_time(NOW_MS + 5, "\"2026-08-22T10:00:00.005Z\"");
    assert_time(1709208000000LL, "\"2024-02-29T12:00:00Z\"");
    assert_time(123000, "\"1970-01-01T00:02:03Z\"");
    assert_time(-1, "\"1969-12-31T23:59:59.999Z\"");
    assert_time(-2203891200000LL, "\"1900-03-01T00:00:00Z\"");
    assert_time(-62135596800000LL, "\"0001-01-01T00:00:00Z\"");
    assert_time(INT64_MIN, "\"0001-01-01T00:00:00Z\"");
    assert_time(INT64_MAX, "\"9999-12-31T23:59:59.999Z\"");
}

static void assert_prefix(const uint8_t *addr, size_t len, const char *expected)
{
    struct jw w;

    jw_init(&w);
    jw_host_prefix(&w, addr, len);
    assert_written(&w, expected);
    jw_free(&w);
}

static void jw_formats_addresses_and_keys(void **state)
{
    static const uint8_t v4[4] = {100, 64, 0, 7};
    static const uint8_t zeros[16];
    static const uint8_t ts[16] = {0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0, [15] = 7};
    /* Two zero runs of equal length: RFC 5952 compresses the first. */
    static const uint8_t runs[16] = {0x20, 0x01, 0x0d, 0xb8, [9] = 1, [15] = 1};
    static const uint8_t mapped[16] = {[10] = 0xff, [11] = 0xff, 1, 2, 3, 4};
    uint8_t key[32];
    struct jw w;

    (void)state;
    assert_prefix(v4, 4, "\"100.64.0.7/32\"");
    assert_prefix(zeros, 4, "\"0.0.0.0/32\"");
    assert_prefix(ts, 16, "\"fd7a:115c:a1e0::7/128\"");
    assert_prefix(runs, 16, "\"2001:db8::1:0:0:1/128\"");
    assert_prefix(zeros, 16, "\"::/128\"");
    assert_prefix(mapped, 16, "\"::ffff:1.2.3.4/128\"");
    memset(key, 0xab, sizeof key);
    jw_init(&w);
    jw_key_hex(&w, "nodekey:", key);
    assert_written(&w, "\"" KEY_AB "\"");
    jw_free(&w);
}

/* ---- wire ---- */

static void wire_parses_times(void **state)
{
    int64_t ms;

    (void)state;
    assert_true(wire_parse_time("1969-12-31T19:02:03-05:00", &ms));
    assert_int_equal(ms, 123000);
    assert_true(wire_parse_time("2026-08-22T10:00:00.123456789Z", &ms));
    assert_int_equal(ms, NOW_MS + 123);
    assert_true(wire_parse_time("2026-08-22T15:30:00.5+05:30", &ms));
    assert_int_equal(ms, NOW_MS + 500);
    assert_true(wire_parse_time("1969-12-31T23:59:59.9999Z", &ms));
    assert_int_equal(ms, -1);
    assert_true(wire_parse_time("2024-02-29T12:00:00Z", &ms));
    assert_int_equal(ms, 1709208000000LL);
    assert_true(wire_parse_time("0001-01-01T00:00:00Z", &ms));
    assert_true(ms == INT64_MIN);
    assert_true(wire_parse_time("0001-01-01T01:00:00+01:00", &ms));
    assert_true(ms == INT64_MIN);
    assert_true(wire_parse_time("0001-01-01T00:00:00.001Z", &ms));
    assert_int_equal(ms, -62135596799999LL);

    static const char *const bad[] = {
        "",
        "2026-08-22",
        "2026-08-22T10:00:00",
        "2026-08-22 10:00:00Z",
        "2026-08-22T10:00:00.Z",
        "2026-08-22T10:00:00.1234567891Z",
        "2026-08-22T10:00:00Zx",
        "2026-08-22T10:00:00+24:00",
        "2026-08-22T10:00:00+0500",
        "2026-02-29T10:00:00Z",
        "2026-13-01T10:00:00Z",
        "2026-08-22T24:00:00Z",
        "2026-08-22T10:60:00Z",
        "2026-08-22T10:00:60Z",
        "226-08-22T10:00:00Z",
        "+2026-08-22T10:00:00Z",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (wire_parse_time(bad[i], &ms))
            fail_msg("accepted \"%s\"", bad[i]);
    }
}

static const char register_example[] =
    "{\n  \"Version\": 142,\n  \"NodeKey\": \"" KEY_AB "\",\n"
    "  \"OldNodeKey\": \"" KEY_ZERO "\",\n  \"NLKey\": \"nlpub:" HEX64(
        "12") "\",\n"
              "  \"Auth\": {\"AuthKey\": \"tskey-auth-k1\"},\n"
              "  \"Expiry\": \"1969-12-31T19:02:03-05:00\",\n  \"Followup\": \"\",\n"
              "  \"Hostinfo\": { \"IPNVersion\": \"1.102.3-t1\", \"BackendLogID\": \"b1\", \"OS\": "
              "\"linux\",\n"
              "                \"Hostname\": \"host1\", \"RequestTags\": [\"tag:ci\", "
              "\"tag:Web-2\"],\n"
              "                \"RoutableIPs\": [\"10.0.0.0/24\", \"FD00:1::/64\"],\n"
              "                \"NetInfo\": {\"PreferredDERP\": 900, \"LinkType\": \"wired\"} },\n"
              "  \"NodeKeySignature\": null\n}";

static int parse_register(const char *body, struct wire_register_request *r, char *errmsg)
{
    return wire_register_request_parse((const uint8_t *)body, strlen(body), r, errmsg);
}

static int parse_map(const char *body, struct wire_map_request *r, char *errmsg)
{
    return wire_map_request_parse((const uint8_t *)body, strlen(body), r, errmsg);
}

static void wire_decodes_register_example(void **state)
{
    struct wire_register_request r;
    char errmsg[WIRE_ERRMSG_BYTES];
    uint8_t key[32];

    (void)state;
    memset(key, 0xab, sizeof key);
    assert_int_equal(parse_register(register_example, &r, errmsg), 0);
    assert_int_equal(r.version, 142);
    assert_memory_equal(r.node_key, key, 32);
    assert_false(r.has_old_node_key);
    assert_string_equal(r.auth_key, "tskey-auth-k1");
    assert_true(r.has_expiry);
    assert_int_equal(r.expiry_unix_ms, 123000);
    assert_null(r.followup);
    assert_false(r.ephemeral);
    assert_string_equal(r.hostinfo.json,
                        "{\"IPNVersion\":\"1.102.3-t1\",\"BackendLogID\":\"b1\",\"OS\":\"linux\","
                        "\"Hostname\":\"host1\",\"RequestTags\":[\"tag:ci\",\"tag:Web-2\"],"
                        "\"RoutableIPs\":[\"10.0.0.0/24\",\"FD00:1::/64\"],"
                        "\"NetInfo\":{\"PreferredDERP\":900,\"LinkType\":\"wired\"}}");
    assert_int_equal(r.hostinfo.json_len, strlen(r.hostinfo.json));
    assert_string_equal(r.hostinfo.hostname, "host1");
    assert_string_equal(r.hostinfo.os, "linux");
    assert_int_equal(r.hostinfo.preferred_derp, 900);
    assert_int_equal(r.hostinfo.n_request_tags, 2);
    assert_string_equal(r.hostinfo.request_tags[0], "tag:ci");
    assert_string_equal(r.hostinfo.request_tags[1], "tag:Web-2");
    assert_int_equal(r.hostinfo.n_routable_ips, 2);
    assert_string_equal(r.hostinfo.routable_ips[0], "10.0.0.0/24");
    assert_string_equal(r.hostinfo.routable_ips[1], "fd00:1::/64");
    wire_register_request_free(&r);
    assert_null(r.hostinfo.json);
}

static void wire_decodes_register_variants(void **state)
{
    struct wire_register_request r;
    char errmsg[WIRE_ERRMSG_BYTES];
    uint8_t key[32];

    (void)state;
    memset(key, 0xab, sizeof key);
    assert_int_equal(
        parse_register("{\"NodeKey\":\"nodekey:" HEX64(
                           "CD") "\",\"OldNodeKey\":\"" KEY_AB
                                 "\",\"Expiry\":\"0001-01-01T00:00:00Z\",\"Auth\":null,"
                                 "\"Followup\":\"https://c.example/a/1\",\"Ephemeral\":true,"
                                 "\"Hostinfo\":null,\"Version\":null}",
                       &r, errmsg),
        0);
    assert_int_equal(r.version, 0);
    assert_int_equal(r.node_key[0], 0xcd);
    assert_true(r.has_old_node_key);
    assert_memory_equal(r.old_node_key, key, 32);
    assert_null(r.auth_key);
    assert_false(r.has_expiry);
    assert_string_equal(r.followup, "https://c.example/a/1");
    assert_true(r.ephemeral);
    assert_null(r.hostinfo.json);
    assert_null(r.hostinfo.hostname);
    assert_null(r.hostinfo.os);
    wire_register_request_free(&r);

    assert_int_equal(parse_register("{\"NodeKey\":\"" KEY_AB "\",\"Auth\":{\"AuthKey\":\"\"},"
                                    "\"Hostinfo\":{\"Hostname\":\"\",\"OS\":\"\",\"NetInfo\":{},"
                                    "\"RequestTags\":[],\"RoutableIPs\":null}}",
                                    &r, errmsg),
                     0);
    assert_null(r.auth_key);
    assert_string_equal(r.hostinfo.json, "{\"Hostname\":\"\",\"OS\":\"\",\"NetInfo\":{},"
                                         "\"RequestTags\":[],\"RoutableIPs\":null}");
    assert_null(r.hostinfo.hostname);
    assert_string_equal(r.hostinfo.os, "");
    assert_int_equal(r.hostinfo.preferred_derp, 0);
    assert_int_equal(r.hostinfo.n_request_tags, 0);
    assert_null(r.hostinfo.request_tags);
    assert_int_equal(r.hostinfo.n_routable_ips, 0);
    wire_register_request_free(&r);
}

static void wire_decodes_map_lite_update(void **state)
{
    struct wire_map_request r;
    char errmsg[WIRE_ERRMSG_BYTES];
    uint8_t disco[32];

    (void)state;
    memset(disco, 0xcd, sizeof disco);
    assert_int_equal(
        parse_map("{\"Version\":142,\"Compress\":\"zstd\",\"NodeKey\":\"" KEY_AB
                  "\",\"DiscoKey\":\"" DISCO_CD
                  "\",\"OmitPeers\":true,\"Hostinfo\":{\"OS\":\"linux\",\"NetInfo\":"
                  "{\"PreferredDERP\":901}},\"Endpoints\":[\"192.0.2.7:41641\","
                  "\"[2001:DB8:0:0::7]:41641\",\"10.0.0.5:0\"],\"EndpointTypes\":[2,1,1],"
                  "\"DebugFlags\":[\"warn-router-unhealthy\"]}",
                  &r, errmsg),
        0);
    assert_int_equal(r.version, 142);
    assert_true(r.has_disco_key);
    assert_memory_equal(r.disco_key, disco, 32);
    assert_false(r.stream);
    assert_true(r.omit_peers);
    assert_false(r.keep_alive);
    assert_false(r.read_only);
    assert_true(r.compress_zstd);
    assert_int_equal(r.n_endpoints, 3);
    assert_string_equal(r.endpoints[0], "192.0.2.7:41641");
    assert_string_equal(r.endpoints[1], "[2001:db8::7]:41641");
    assert_string_equal(r.endpoints[2], "10.0.0.5:0");
    assert_int_equal(r.hostinfo.preferred_derp, 901);
    assert_string_equal(r.hostinfo.json, "{\"OS\":\"linux\",\"NetInfo\":{\"PreferredDERP\":901}}");
    wire_map_request_free(&r);
}

static void wire_decodes_map_stream(void **state)
{
    struct wire_map_request r;
    char errmsg[WIRE_ERRMSG_BYTES];

    (void)state;
    assert_int_equal(parse_map("{\"Version\":142,\"Compress\":\"gzip\",\"KeepAlive\":true,"
                               "\"NodeKey\":\"" KEY_AB "\",\"DiscoKey\":\"" DISCO_0 "\","
                               "\"Stream\":true,\"ReadOnly\":false,\"Hostinfo\":{},"
                               "\"Endpoints\":null}",
                               &r, errmsg),
                     0);
    assert_false(r.has_disco_key);
    assert_true(r.stream);
    assert_false(r.omit_peers);
    assert_true(r.keep_alive);
    assert_false(r.compress_zstd);
    assert_int_equal(r.n_endpoints, 0);
    assert_null(r.endpoints);
    assert_string_equal(r.hostinfo.json, "{}");
    wire_map_request_free(&r);
}

static void assert_register_error(const char *body, const char *expected)
{
    static const struct wire_register_request zero;
    struct wire_register_request r;
    char errmsg[WIRE_ERRMSG_BYTES] = "";

    if (parse_register(body, &r, errmsg) != -1)
        fail_msg("accepted %s", body);
    if (strncmp(errmsg, expected, strlen(expected)) != 0)
        fail_msg("%s: got \"%s\", want \"%s...\"", body, errmsg, expected);
    assert_memory_equal(&r, &zero, sizeof r);
}

static void assert_map_error(const char *body, const char *expected)
{
    static const struct wire_map_request zero;
    struct wire_map_request r;
    char errmsg[WIRE_ERRMSG_BYTES] = "";

    if (parse_map(body, &r, errmsg) != -1)
        fail_msg("accepted %s", body);
    if (strncmp(errmsg, expected, strlen(expected)) != 0)
        fail_msg("%s: got \"%s\", want \"%s...\"", body, errmsg, expected);
    assert_memory_equal(&r, &zero, sizeof r);
}

#define NK "\"NodeKey\":\"" KEY_AB "\""

static void wire_rejects_bad_bodies_and_keys(void **state)
{
    (void)state;
    assert_register_error("", "body: invalid JSON at byte 0: ");
    assert_register_error("[]", "body: not a JSON object");
    assert_register_error("42", "body: not a JSON object");
    assert_register_error("{" NK "} x", "body: invalid JSON at byte ");
    assert_register_error("{" NK ",}", "body: invalid JSON at byte ");
    assert_register_error("{\"NodeKey\":\"a\\u0000b\"}", "body: invalid JSON at byte ");
    assert_register_error("{\"Version\":142}", "NodeKey: missing");
    assert_register_error("{\"NodeKey\":null}", "NodeKey: missing");
    assert_register_error("{\"NodeKey\":\"" KEY_ZERO "\"}", "NodeKey: missing");
    assert_register_error("{\"NodeKey\":\"mkey:" HEX64("ab") "\"}", "NodeKey: not a node key");
    assert_register_error("{\"NodeKey\":\"nodekey:abab\"}", "NodeKey: not a node key");
    assert_register_error("{\"NodeKey\":\"" KEY_AB "00\"}", "NodeKey: not a node key");
    assert_register_error("{\"NodeKey\":\"nodekey:" HEX64("zz") "\"}", "NodeKey: not a node key");
    assert_register_error("{\"NodeKey\":\"\"}", "NodeKey: not a node key");
    assert_register_error("{\"NodeKey\":7}", "NodeKey: not a string");
    assert_register_error("{" NK ",\"OldNodeKey\":\"" DISCO_CD "\"}", "OldNodeKey: not a node key");
    assert_map_error("{" NK ",\"DiscoKey\":\"" KEY_AB "\"}", "DiscoKey: not a disco key");
}

static void wire_rejects_bad_fields(void **state)
{
    (void)state;
    assert_register_error("{" NK ",\"Version\":\"142\"}", "Version: not an integer");
    assert_register_error("{" NK ",\"Version\":142.0}", "Version: not an integer");
    assert_register_error("{" NK ",\"Version\":65536}", "Version: out of range");
    assert_register_error("{" NK ",\"Version\":-1}", "Version: out of range");
    assert_register_error("{" NK ",\"Auth\":\"tskey\"}", "Auth: not an object");
    assert_register_error("{" NK ",\"Auth\":{\"AuthKey\":1}}", "Auth.AuthKey: not a string");
    assert_register_error("{" NK ",\"Expiry\":\"yesterday\"}", "Expiry: not an RFC 3339 time");
    assert_register_error("{" NK ",\"Expiry\":0}", "Expiry: not a string");
    assert_register_error("{" NK ",\"Ephemeral\":1}", "Ephemeral: not a boolean");
    assert_register_error("{" NK ",\"Hostinfo\":[]}", "Hostinfo: not an object");
    assert_register_error("{" NK ",\"Hostinfo\":{\"Hostname\":5}}",
                          "Hostinfo.Hostname: not a string");
    assert_register_error("{" NK ",\"Hostinfo\":{\"NetInfo\":[]}}",
                          "Hostinfo.NetInfo: not an object");
    assert_register_error("{" NK ",\"Hostinfo\":{\"NetInfo\":{\"PreferredDERP\":\"900\"}}}",
                          "Hostinfo.NetInfo.PreferredDERP: not an integer");
    assert_register_error("{" NK ",\"Hostinfo\":{\"NetInfo\":{\"PreferredDERP\":-1}}}",
                          "Hostinfo.NetInfo.PreferredDERP: out of range");
    assert_map_error("{" NK ",\"Stream\":\"true\"}", "Stream: not a boolean");
    assert_map_error("{" NK ",\"OmitPeers\":0}", "OmitPeers: not a boolean");
    assert_map_error("{" NK ",\"Compress\":true}", "Compress: not a string");
}

static void wire_rejects_bad_lists(void **state)
{
    char body[4096];
    int n;

    (void)state;
    assert_map_error("{" NK ",\"Endpoints\":\"192.0.2.7:41641\"}", "Endpoints: not an array");
    assert_map_error("{" NK ",\"Endpoints\":[\"192.0.2.7:41641\",\"192.0.2.7\"]}",
                     "Endpoints[1]: not an ip:port");
    static const char *const bad_endpoints[] = {
        "1.2.3.4:65536",    "1.2.3.4:",   "1.2.3.4:-1", "01.2.3.4:1",
        "::1:41641",        "[::1]41641", "[::1]:",     "[1.2.3.4]:1",
        "[fe80::1%eth0]:1", "host:1",     "1.2.3.4:1 ",
    };
    for (size_t i = 0; i < sizeof bad_endpoints / sizeof bad_endpoints[0]; i++) {
        snprintf(body, sizeof body, "{" NK ",\"Endpoints\":[\"%s\"]}", bad_endpoints[i]);
        assert_map_error(body, "Endpoints[0]: not an ip:port");
    }
    assert_map_error("{" NK ",\"Endpoints\":[null]}", "Endpoints[0]: not an ip:port");
    n = snprintf(body, sizeof body, "{" NK ",\"Endpoints\":[");
    for (int i = 0; i <= WIRE_MAX_ENDPOINTS; i++)
        n += snprintf(body + n, sizeof body - (size_t)n, "%s\"10.0.0.1:%d\"", i ? "," : "", i);
    snprintf(body + n, sizeof body - (size_t)n, "]}");
    assert_map_error(body, "Endpoints: more than 64 entries");

    static const char *const bad_prefixes[] = {
        "10.0.0.1/24", "10.0.0.0/33", "10.0.0.0",     "10.0.0.0/",  "10.0.0.0/024",
        "fd00::1/64",  "::/129",      "10.0.0.0/8/8", "fd00::/+64",
    };
    for (size_t i = 0; i < sizeof bad_prefixes / sizeof bad_prefixes[0]; i++) {
        snprintf(body, sizeof body,
                 "{" NK ",\"Hostinfo\":{\"RoutableIPs\":[\"10.1.0.0/16\",\"%s\"]}}",
                 bad_prefixes[i]);
        assert_register_error(body, "Hostinfo.RoutableIPs[1]: not a canonical CIDR prefix");
    }
    static const char *const bad_tags[] = {"ci", "tag:", "tag:a b", "tag:a.b", "Tag:ci"};
    for (size_t i = 0; i < sizeof bad_tags / sizeof bad_tags[0]; i++) {
        snprintf(body, sizeof body, "{" NK ",\"Hostinfo\":{\"RequestTags\":[\"%s\"]}}",
                 bad_tags[i]);
        assert_register_error(body, "Hostinfo.RequestTags[0]: not a tag");
    }
}

/* A register request whose Hostinfo serializes to exactly `size` bytes. */
static char *hostinfo_of_size(size_t size)
{
    static const char head[] = "{" NK ",\"Hostinfo\":{\"Pad\":\"";
    size_t pad = size - strlen("{\"Pad\":\"\"}");
    char *body = malloc(sizeof head + pad + 3);

    assert_non_null(body);
    memcpy(body, head, sizeof head - 1);
    memset(body + sizeof head - 1, 'p', pad);
    memcpy(body + sizeof head - 1 + pad, "\"}}", 4);
    return body;
}

static void wire_limits_hostinfo(void **state)
{
    struct wire_register_request r;
    char errmsg[WIRE_ERRMSG_BYTES];
    char *body;

    (void)state;
    body = hostinfo_of_size(WIRE_MAX_HOSTINFO);
    assert_int_equal(parse_register(body, &r, errmsg), 0);
    assert_int_equal(r.hostinfo.json_len, WIRE_MAX_HOSTINFO);
    wire_register_request_free(&r);
    free(body);
    body = hostinfo_of_size(WIRE_MAX_HOSTINFO + 1);
    assert_register_error(body, "Hostinfo: too large (32769 bytes, at most 32768)");
    free(body);
    body = hostinfo_of_size(300);
    memcpy(strstr(body, "\"Pad\""), "\"OS\" ", 5);
    assert_register_error(body, "Hostinfo.OS: longer than 256 bytes");
    free(body);
}

/* ---- mapenc ---- */

struct fixture {
    Concord__Node node;
    uint8_t machine[32];
    uint8_t node_key[32];
    uint8_t disco[32];
    uint8_t ipv4[4];
    uint8_t ipv6[16];
    char *tags[2];
    char *endpoints[2];
    struct mapenc_node_view view;
};

/* A node with every field set, online, with a CapMap. */
static void full_node(struct fixture *f)
{
    static const char hostinfo[] = "{\"OS\":\"linux\",\"Hostname\":\"laptop\"}";
    static const uint8_t v6[16] = {0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0, [15] = 7};

    memset(f, 0, sizeof *f);
    concord__node__init(&f->node);
    memset(f->machine, 0x01, 32);
    memset(f->node_key, 0xab, 32);
    memset(f->disco, 0xcd, 32);
    memcpy(f->ipv4, (const uint8_t[]){100, 64, 0, 7}, 4);
    memcpy(f->ipv6, v6, 16);
    f->tags[0] = "tag:ci";
    f->tags[1] = "tag:web";
    f->endpoints[0] = "192.0.2.7:41641";
    f->endpoints[1] = "[2001:db8::7]:41641";
    f->node.id = 7;
    f->node.machine_key = (ProtobufCBinaryData){32, f->machine};
    f->node.node_key = (ProtobufCBinaryData){32, f->node_key};
    f->node.disco_key = (ProtobufCBinaryData){32, f->disco};
    f->node.user_id = 3;
    f->node.n_tags = 2;
    f->node.tags = f->tags;
    f->node.given_name = "laptop";
    f->node.ipv4 = (ProtobufCBinaryData){4, f->ipv4};
    f->node.ipv6 = (ProtobufCBinaryData){16, f->ipv6};
    f->node.expiry_unix_ms = EXPIRY_MS;
    f->node.created_unix_ms = CREATE_MS;
    f->node.last_seen_unix_ms = SEEN_MS;
    f->node.hostinfo = (ProtobufCBinaryData){sizeof hostinfo - 1, (uint8_t *)hostinfo};
    f->node.n_endpoints = 2;
    f->node.endpoints = f->endpoints;
    f->node.home_derp = 900;
    f->node.cap_version = 142;
    f->view = (struct mapenc_node_view){
        .node = &f->node,
        .base_domain = "tail.example.net",
        .presence = MAPENC_PRESENCE_ONLINE,
        .now_unix_ms = NOW_MS,
        .cap_map_json = "{\"https://tailscale.com/cap/is-admin\":[]}",
    };
}

/* Only what every node has: keys, an IPv4 address, a user. */
static void minimal_node(struct fixture *f)
{
    memset(f, 0, sizeof *f);
    concord__node__init(&f->node);
    memset(f->machine, 0x01, 32);
    memset(f->node_key, 0xab, 32);
    memcpy(f->ipv4, (const uint8_t[]){100, 64, 0, 1}, 4);
    f->node.id = 1;
    f->node.machine_key = (ProtobufCBinaryData){32, f->machine};
    f->node.node_key = (ProtobufCBinaryData){32, f->node_key};
    f->node.user_id = 5;
    f->node.given_name = "host1";
    f->node.ipv4 = (ProtobufCBinaryData){4, f->ipv4};
    f->view = (struct mapenc_node_view){.node = &f->node, .now_unix_ms = NOW_MS};
}

static void assert_node(const struct mapenc_node_view *v, const char *expected)
{
    struct jw w;

    jw_init(&w);
    mapenc_node(&w, v);
    assert_written(&w, expected);
    jw_free(&w);
}

#define FULL_ADDRS "[\"100.64.0.7/32\",\"fd7a:115c:a1e0::7/128\"]"

static void mapenc_writes_full_node(void **state)
{
    struct fixture f;

    (void)state;
    full_node(&f);
    assert_node(&f.view, "{\"ID\":7,\"StableID\":\"n7\",\"Name\":\"laptop.tail.example.net.\","
                         "\"User\":2147455555,\"Key\":\"" KEY_AB "\","
                         "\"KeyExpiry\":\"2027-02-18T10:00:00Z\",\"Machine\":\"" MKEY_01 "\","
                         "\"DiscoKey\":\"" DISCO_CD "\",\"Addresses\":" FULL_ADDRS ","
                         "\"AllowedIPs\":" FULL_ADDRS ","
                         "\"Endpoints\":[\"192.0.2.7:41641\",\"[2001:db8::7]:41641\"],"
                         "\"HomeDERP\":900,\"Hostinfo\":{\"OS\":\"linux\",\"Hostname\":\"laptop\"},"
                         "\"Created\":\"2026-08-01T09:00:00.123Z\",\"Cap\":142,"
                         "\"Tags\":[\"tag:ci\",\"tag:web\"],\"Online\":true,"
                         "\"MachineAuthorized\":true,"
                         "\"CapMap\":{\"https://tailscale.com/cap/is-admin\":[]}}");
}

static void mapenc_writes_minimal_node(void **state)
{
    struct fixture f;

    (void)state;
    minimal_node(&f);
    assert_node(&f.view, "{\"ID\":1,\"StableID\":\"n1\",\"Name\":\"host1.\",\"User\":5,"
                         "\"Key\":\"" KEY_AB "\",\"Machine\":\"" MKEY_01 "\","
                         "\"DiscoKey\":\"" DISCO_0 "\",\"Addresses\":[\"100.64.0.1/32\"],"
                         "\"AllowedIPs\":[\"100.64.0.1/32\"],\"Endpoints\":[],\"Hostinfo\":{},"
                         "\"Created\":\"0001-01-01T00:00:00Z\",\"MachineAuthorized\":true}");
    f.node.given_name = "";
    f.node.ipv4.len = 0;
    assert_node(&f.view, "{\"ID\":1,\"StableID\":\"n1\",\"Name\":\"\",\"User\":5,"
                         "\"Key\":\"" KEY_AB "\",\"Machine\":\"" MKEY_01 "\","
                         "\"DiscoKey\":\"" DISCO_0 "\",\"Addresses\":[],\"AllowedIPs\":[],"
                         "\"Endpoints\":[],\"Hostinfo\":{},"
                         "\"Created\":\"0001-01-01T00:00:00Z\",\"MachineAuthorized\":true}");
}

static bool node_contains(const struct mapenc_node_view *v, const char *fragment)
{
    struct jw w;
    bool found;

    jw_init(&w);
    mapenc_node(&w, v);
    assert_false(jw_failed(&w));
    found = strstr(w.buf, fragment) != NULL;
    jw_free(&w);
    return found;
}

static void mapenc_marks_tagged_and_expired_nodes(void **state)
{
    struct fixture f;

    (void)state;
    minimal_node(&f);
    assert_true(node_contains(&f.view, "\"User\":5,"));
    f.tags[0] = "tag:ci";
    f.node.tags = f.tags;
    f.node.n_tags = 1;
    assert_true(node_contains(&f.view, "\"User\":2147455555,"));
    assert_true(node_contains(&f.view, "\"Tags\":[\"tag:ci\"],\"MachineAuthorized\":true}"));

    f.node.expiry_unix_ms = NOW_MS - 1;
    assert_node(&f.view, "{\"ID\":1,\"StableID\":\"n1\",\"Name\":\"host1.\",\"User\":2147455555,"
                         "\"Key\":\"" KEY_AB "\",\"KeyExpiry\":\"2026-08-22T09:59:59.999Z\","
                         "\"Machine\":\"" MKEY_01 "\",\"DiscoKey\":\"" DISCO_0 "\","
                         "\"Addresses\":[\"100.64.0.1/32\"],\"AllowedIPs\":[\"100.64.0.1/32\"],"
                         "\"Endpoints\":[],\"Hostinfo\":{},"
                         "\"Created\":\"0001-01-01T00:00:00Z\",\"Tags\":[\"tag:ci\"],"
                         "\"MachineAuthorized\":true,\"Expired\":true}");
    f.node.expiry_unix_ms = NOW_MS;
    assert_true(node_contains(&f.view, "\"Expired\":true"));
    f.node.expiry_unix_ms = NOW_MS + 1;
    assert_false(node_contains(&f.view, "Expired"));
}

static void mapenc_writes_presence(void **state)
{
    struct fixture f;

    (void)state;
    full_node(&f);
    f.view.presence = MAPENC_PRESENCE_OFFLINE;
    assert_true(node_contains(&f.view, "\"Tags\":[\"tag:ci\",\"tag:web\"],\"Online\":false,"
                                       "\"LastSeen\":\"2026-08-10T08:30:00Z\","
                                       "\"MachineAuthorized\":true,"));
    f.node.last_seen_unix_ms = 0;
    assert_true(node_contains(&f.view, "\"Online\":false,\"MachineAuthorized\""));
    f.node.last_seen_unix_ms = SEEN_MS;
    f.view.presence = MAPENC_PRESENCE_UNKNOWN;
    assert_true(node_contains(&f.view, "\"Tags\":[\"tag:ci\",\"tag:web\"],\"MachineAuthorized\""));
    f.view.presence = MAPENC_PRESENCE_ONLINE;
    assert_false(node_contains(&f.view, "LastSeen"));
}

static void mapenc_writes_peer_patch(void **state)
{
    struct fixture f;
    struct jw w;

    (void)state;
    full_node(&f);
    f.view.presence = MAPENC_PRESENCE_OFFLINE;
    jw_init(&w);
    mapenc_peer_patch(&w, &f.view);
    assert_written(&w, "{\"NodeID\":7,\"DERPRegion\":900,"
                       "\"Endpoints\":[\"192.0.2.7:41641\",\"[2001:db8::7]:41641\"],"
                       "\"Key\":\"" KEY_AB "\",\"DiscoKey\":\"" DISCO_CD "\","
                       "\"KeyExpiry\":\"2027-02-18T10:00:00Z\",\"Cap\":142,\"Online\":false,"
                       "\"LastSeen\":\"2026-08-10T08:30:00Z\"}");
    jw_reset(&w);
    minimal_node(&f);
    mapenc_peer_patch(&w, &f.view);
    assert_written(&w, "{\"NodeID\":1,\"DERPRegion\":0,\"Endpoints\":[],"
                       "\"Key\":\"" KEY_AB "\",\"DiscoKey\":\"" DISCO_0 "\","
                       "\"KeyExpiry\":\"0001-01-01T00:00:00Z\",\"Cap\":0}");
    jw_free(&w);
}

static void mapenc_static_hash_ignores_patchable_fields(void **state)
{
    static const uint8_t other_ip[4] = {100, 64, 0, 8};
    static const char other_hostinfo[] = "{\"OS\":\"macOS\"}";
    struct fixture f;
    uint64_t h;
    uint8_t other_key[32];

    (void)state;
    memset(other_key, 0x77, sizeof other_key);
    full_node(&f);
    h = mapenc_node_static_hash(&f.view);
    f.node.n_endpoints = 1;
    f.node.home_derp = 901;
    f.node.node_key.data = other_key;
    f.node.disco_key.len = 0;
    f.node.expiry_unix_ms = EXPIRY_MS + 1000;
    f.node.cap_version = 150;
    f.node.last_seen_unix_ms = NOW_MS;
    f.view.presence = MAPENC_PRESENCE_OFFLINE;
    assert_true(mapenc_node_static_hash(&f.view) == h);

    full_node(&f);
    f.node.given_name = "laptop2";
    assert_true(mapenc_node_static_hash(&f.view) != h);
    full_node(&f);
    f.node.ipv4.data = (uint8_t *)other_ip;
    assert_true(mapenc_node_static_hash(&f.view) != h);
    full_node(&f);
    f.node.hostinfo = (ProtobufCBinaryData){sizeof other_hostinfo - 1, (uint8_t *)other_hostinfo};
    assert_true(mapenc_node_static_hash(&f.view) != h);
    full_node(&f);
    f.node.n_tags = 1;
    assert_true(mapenc_node_static_hash(&f.view) != h);
    full_node(&f);
    f.view.cap_map_json = NULL;
    assert_true(mapenc_node_static_hash(&f.view) != h);
    full_node(&f);
    f.node.machine_key.data = other_key;
    assert_true(mapenc_node_static_hash(&f.view) != h);
    full_node(&f);
    f.node.expiry_unix_ms = NOW_MS;
    assert_true(mapenc_node_static_hash(&f.view) != h);
}

static void mapenc_names_and_ids(void **state)
{
    struct fixture f;
    char out[24];
    char small[8];

    (void)state;
    minimal_node(&f);
    mapenc_stable_id(UINT64_MAX, out);
    assert_string_equal(out, "n18446744073709551615");
    assert_true(mapenc_node_fqdn(&f.node, "ts.net", out, sizeof out));
    assert_string_equal(out, "host1.ts.net.");
    assert_true(mapenc_node_fqdn(&f.node, NULL, out, sizeof out));
    assert_string_equal(out, "host1.");
    assert_true(mapenc_node_fqdn(&f.node, "", small, 7));
    assert_string_equal(small, "host1.");
    assert_false(mapenc_node_fqdn(&f.node, "", small, 6));
    assert_false(mapenc_node_fqdn(&f.node, "ts.net", small, sizeof small));
}

static void mapenc_writes_profiles(void **state)
{
    Concord__User u;
    struct jw w;

    (void)state;
    concord__user__init(&u);
    u.id = 3;
    u.name = "alice";
    u.display_name = "Alice A.";
    u.email = "alice@example.com";
    jw_init(&w);
    jw_arr_begin(&w);
    mapenc_user_profile(&w, &u);
    u.email = "";
    u.display_name = "";
    mapenc_user_profile(&w, &u);
    mapenc_tagged_profile(&w);
    jw_arr_end(&w);
    assert_written(&w, "[{\"ID\":3,\"LoginName\":\"alice@example.com\",\"DisplayName\":\"Alice "
                       "A.\",\"ProfilePicURL\":\"\"},{\"ID\":3,\"LoginName\":\"alice\","
                       "\"DisplayName\":\"alice\",\"ProfilePicURL\":\"\"},"
                       "{\"ID\":2147455555,\"LoginName\":\"tagged-devices\","
                       "\"DisplayName\":\"tagged-devices\",\"ProfilePicURL\":\"\"}]");
    jw_free(&w);
}

static void mapenc_writes_dns_config(void **state)
{
    static const char *const servers[] = {"1.1.1.1", "https://dns.example/dns-query"};
    static const char *const search[] = {"corp.example"};
    struct mapenc_dns d = {
        .magic_dns = true,
        .base_domain = "tail.example.net",
        .nameservers = servers,
        .n_nameservers = 2,
        .search_domains = search,
        .n_search_domains = 1,
    };
    struct jw w;

    (void)state;
    jw_init(&w);
    mapenc_dns_config(&w, &d);
    assert_written(&w, "{\"Resolvers\":[{\"Addr\":\"1.1.1.1\"},"
                       "{\"Addr\":\"https://dns.example/dns-query\"}],"
                       "\"Domains\":[\"tail.example.net\",\"corp.example\"],\"Proxied\":true,"
                       "\"Routes\":{\"tail.example.net.\":[]}}");
    jw_reset(&w);
    d.magic_dns = false;
    d.n_nameservers = 1;
    d.n_search_domains = 0;
    mapenc_dns_config(&w, &d);
    assert_written(&w, "{\"Resolvers\":[{\"Addr\":\"1.1.1.1\"}],\"Domains\":[],"
                       "\"Proxied\":false,\"Routes\":{}}");
    jw_free(&w);
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void assert_frame_round_trip(struct mapenc_compressor *c, const char *json, size_t len)
{
    uint8_t *frame;
    size_t frame_len;
    char *plain = malloc(len + 1);

    assert_non_null(plain);
    assert_int_equal(mapenc_frame(c, true, json, len, &frame, &frame_len), 0);
    assert_true(frame_len > 4);
    assert_int_equal(le32(frame), frame_len - 4);
    assert_int_equal(ZSTD_getFrameContentSize(frame + 4, frame_len - 4), len);
    assert_int_equal(ZSTD_decompress(plain, len + 1, frame + 4, frame_len - 4), len);
    assert_memory_equal(plain, json, len);
    free(plain);
    free(frame);
}

static void mapenc_frames_messages(void **state)
{
    static const char keepalive[] = "{\"KeepAlive\":true}";
    struct mapenc_compressor *c = mapenc_compressor_new();
    uint8_t *frame;
    size_t frame_len;
    size_t big_len = 300000;
    char *big = malloc(big_len);
    uint64_t x = 88172645463325252ULL;

    (void)state;
    assert_non_null(c);
    assert_non_null(big);
    assert_frame_round_trip(c, keepalive, sizeof keepalive - 1);
    /* Incompressible text, so that the length needs the third prefix byte. */
    for (size_t i = 0; i < big_len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        big[i] = (char)('!' + x % 90);
    }
    assert_frame_round_trip(c, big, big_len);
    assert_frame_round_trip(c, keepalive, sizeof keepalive - 1);

    assert_int_equal(mapenc_frame(c, false, keepalive, sizeof keepalive - 1, &frame, &frame_len),
                     0);
    assert_int_equal(frame_len, 4 + sizeof keepalive - 1);
    assert_memory_equal(frame, "\x12\x00\x00\x00", 4);
    assert_memory_equal(frame + 4, keepalive, sizeof keepalive - 1);
    free(frame);
    assert_int_equal(mapenc_frame(c, false, big, 0x10203, &frame, &frame_len), 0);
    assert_memory_equal(frame, "\x03\x02\x01\x00", 4);
    free(frame);
    free(big);
    mapenc_compressor_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(jw_escapes_strings),
        cmocka_unit_test(jw_nests_with_commas),
        cmocka_unit_test(jw_next_value_puts_values_back_to_back),
        cmocka_unit_test(jw_grows_and_resets),
        cmocka_unit_test(jw_fails_on_depth_and_misuse),
        cmocka_unit_test(jw_formats_times),
        cmocka_unit_test(jw_formats_addresses_and_keys),
        cmocka_unit_test(wire_parses_times),
        cmocka_unit_test(wire_decodes_register_example),
        cmocka_unit_test(wire_decodes_register_variants),
        cmocka_unit_test(wire_decodes_map_lite_update),
        cmocka_unit_test(wire_decodes_map_stream),
        cmocka_unit_test(wire_rejects_bad_bodies_and_keys),
        cmocka_unit_test(wire_rejects_bad_fields),
        cmocka_unit_test(wire_rejects_bad_lists),
        cmocka_unit_test(wire_limits_hostinfo),
        cmocka_unit_test(mapenc_writes_full_node),
        cmocka_unit_test(mapenc_writes_minimal_node),
        cmocka_unit_test(mapenc_marks_tagged_and_expired_nodes),
        cmocka_unit_test(mapenc_writes_presence),
        cmocka_unit_test(mapenc_writes_peer_patch),
        cmocka_unit_test(mapenc_static_hash_ignores_patchable_fields),
        cmocka_unit_test(mapenc_names_and_ids),
        cmocka_unit_test(mapenc_writes_profiles),
        cmocka_unit_test(mapenc_writes_dns_config),
        cmocka_unit_test(mapenc_frames_messages),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
