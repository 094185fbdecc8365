/* tests/unit/derp/test_stun.c: the STUN codec against requests written byte
 * by byte from RFC 5389 (Tailscale's "tailnode" request with FINGERPRINT, and
 * the RFC 5769 sample request) and responses compared byte for byte with the
 * RFC 5769 XOR-MAPPED-ADDRESS vectors; then the UDP listener on a real loop
 * with a plain socket as the client. Every wait is bounded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include "server/derp/stun.h"
#include "server/log.h"

#define MAX_ITERATIONS 400 /* of at most TICK_MS each */
#define TICK_MS        5

/* The transaction id of the RFC 5769 samples. */
static const uint8_t rfc_txid[STUN_TXID_BYTES] = {0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34,
                                                  0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae};

/* What Tailscale's client sends: header (length 20), SOFTWARE "tailnode"
 * (8 bytes, no padding), FINGERPRINT = CRC-32 of the 32 bytes before it XOR
 * 0x5354554e (the CRC computed independently with Python's zlib.crc32). */
static const uint8_t tailnode_request[40] = {
    0x00, 0x01, 0x00, 0x14, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34,
    0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x08, 't',  'a',  'i',  'l',
    'n',  'o',  'd',  'e',  0x80, 0x28, 0x00, 0x04, 0x9e, 0x8d, 0xf0, 0xce,
};

/* RFC 5769 section 2.1: an ICE request (SOFTWARE, PRIORITY, ICE-CONTROLLED,
 * USERNAME, MESSAGE-INTEGRITY, FINGERPRINT). */
static const uint8_t rfc5769_request[108] = {
    0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74, 0x65, 0x73,
    0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x01, 0xff,
    0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36, 0x00, 0x06, 0x00, 0x09,
    0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20, 0x20, 0x00, 0x08, 0x00, 0x14,
    0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e, 0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49,
    0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5, 0x7a, 0x3b, 0xcf,
};

/* Parses and expects code; the txid must be written only on success. */
static void expect_parse(const uint8_t *packet, size_t len, int code)
{
    uint8_t txid[STUN_TXID_BYTES];
    uint8_t untouched[STUN_TXID_BYTES];

    memset(txid, 0x55, sizeof txid);
    memset(untouched, 0x55, sizeof untouched);
    assert_int_equal(stun_parse_binding_request(packet, len, txid), code);
    if (code == STUN_OK)
        assert_memory_equal(txid, packet + 8, STUN_TXID_BYTES);
    else
        assert_memory_equal(txid, untouched, STUN_TXID_BYTES);
}

/* A 20-byte header: type, attribute length, magic cookie, rfc_txid. */
static void put_header(uint8_t *p, uint16_t type, uint16_t attr_len)
{
    static const uint8_t cookie[4] = {0x21, 0x12, 0xa4, 0x42};

    p[0] = (uint8_t)(type >> 8);
    p[1] = (uint8_t)type;
    p[2] = (uint8_t)(attr_len >> 8);
    p[3] = (uint8_t)attr_len;
    memcpy(p + 4, cookie, sizeof cookie);
    memcpy(p + 8, rfc_txid, sizeof rfc_txid);
}

/* ---- parsing ---- */

static void tailnode_request_is_accepted(void **state)
{
    uint8_t txid[STUN_TXID_BYTES] = {0};

    (void)state;
    assert_int_equal(stun_parse_binding_request(tailnode_request, sizeof tailnode_request, txid),
                     STUN_OK);
    assert_memory_equal(txid, rfc_txid, sizeof txid);
}

static void minimal_and_padded_requests_are_accepted(void **state)
{
    uint8_t packet[32];

    (void)state;
    put_header(packet, 0x0001, 0);
    expect_parse(packet, 20, STUN_OK);
    /* SOFTWARE "hello": 5 bytes, 3 of padding (any value). */
    put_header(packet, 0x0001, 12);
    memcpy(packet + 20, "\x80\x22\x00\x05hello\xff\xff\xff", 12);
    expect_parse(packet, 32, STUN_OK);
}

static void rfc5769_request_fingerprint_verifies(void **state)
{
    uint8_t packet[sizeof rfc5769_request];

    (void)state;
    /* A correct FINGERPRINT lets the walk reach the attribute types: PRIORITY,
     * USERNAME and MESSAGE-INTEGRITY are comprehension-required. */
    expect_parse(rfc5769_request, sizeof rfc5769_request, STUN_UNKNOWN_ATTRIBUTE);
    memcpy(packet, rfc5769_request, sizeof packet);
    packet[sizeof packet - 1] ^= 0x01;
    expect_parse(packet, sizeof packet, STUN_BAD_FINGERPRINT);
    /* A damaged byte the CRC covers. */
    memcpy(packet, rfc5769_request, sizeof packet);
    packet[30] ^= 0x20;
    expect_parse(packet, sizeof packet, STUN_BAD_FINGERPRINT);
}

static void short_packets_are_refused(void **state)
{
    (void)state;
    expect_parse(tailnode_request, 0, STUN_SHORT);
    expect_parse(tailnode_request, 19, STUN_SHORT);
    /* The header alone with its length field still saying 20. */
    expect_parse(tailnode_request, 20, STUN_BAD_LENGTH);
}

static void foreign_packets_are_refused(void **state)
{
    uint8_t packet[sizeof tailnode_request];

    (void)state;
    memcpy(packet, tailnode_request, sizeof packet);
    packet[4] = 0x21 ^ 0x01; /* cookie */
    expect_parse(packet, sizeof packet, STUN_NOT_STUN);
    memcpy(packet, tailnode_request, sizeof packet);
    packet[0] = 0x40; /* top bits */
    expect_parse(packet, sizeof packet, STUN_NOT_STUN);
}

static void other_message_types_are_refused(void **state)
{
    static const uint16_t types[] = {0x0101, 0x0111, 0x0011, 0x0002, 0x0000};
    uint8_t packet[20];

    (void)state;
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        put_header(packet, types[i], 0);
        expect_parse(packet, sizeof packet, STUN_NOT_BINDING_REQUEST);
    }
}

static void length_field_must_match_the_packet(void **state)
{
    uint8_t packet[sizeof tailnode_request + 4];

    (void)state;
    memcpy(packet, tailnode_request, sizeof tailnode_request);
    packet[3] = 0x18; /* says 24, 20 follow */
    expect_parse(packet, sizeof tailnode_request, STUN_BAD_LENGTH);
    packet[3] = 0x10; /* says 16 */
    expect_parse(packet, sizeof tailnode_request, STUN_BAD_LENGTH);
    /* Honest but not a multiple of 4. */
    put_header(packet, 0x0001, 2);
    packet[20] = 0;
    packet[21] = 0;
    expect_parse(packet, 22, STUN_BAD_LENGTH);
}

static void attribute_overrunning_the_packet_is_refused(void **state)
{
    uint8_t packet[28];

    (void)state;
    /* SOFTWARE says 8 bytes, 4 follow. */
    put_header(packet, 0x0001, 8);
    memcpy(packet + 20, "\x80\x22\x00\x08tail", 8);
    expect_parse(packet, sizeof packet, STUN_BAD_ATTRIBUTE);
    /* 5 bytes (8 with their padding) where 4 follow. */
    memcpy(packet + 20, "\x80\x22\x00\x05tail", 8);
    expect_parse(packet, sizeof packet, STUN_BAD_ATTRIBUTE);
    memcpy(packet + 20, "\x80\x22\xff\xfftail", 8);
    expect_parse(packet, sizeof packet, STUN_BAD_ATTRIBUTE);
}

static void fingerprint_must_be_right_and_last(void **state)
{
    uint8_t packet[sizeof tailnode_request + 8];

    (void)state;
    memcpy(packet, tailnode_request, sizeof tailnode_request);
    packet[sizeof tailnode_request - 1] ^= 0x80;
    expect_parse(packet, sizeof tailnode_request, STUN_BAD_FINGERPRINT);
    /* A FINGERPRINT followed by another attribute, its CRC right for the
     * header's new length (28; computed with Python's zlib.crc32). */
    memcpy(packet, tailnode_request, sizeof tailnode_request);
    packet[3] = 0x1c;
    memcpy(packet + 36, "\x30\x51\x35\x6c", 4);
    memcpy(packet + sizeof tailnode_request,
           "\x80\x22\x00\x04"
           "abcd",
           8);
    expect_parse(packet, sizeof packet, STUN_BAD_FINGERPRINT);
    /* FINGERPRINT with an 8-byte value. */
    put_header(packet, 0x0001, 12);
    memcpy(packet + 20, "\x80\x28\x00\x08\x01\x02\x03\x04\x05\x06\x07\x08", 12);
    expect_parse(packet, 32, STUN_BAD_FINGERPRINT);
}

static void comprehension_required_attributes_are_refused(void **state)
{
    uint8_t packet[28];

    (void)state;
    /* CHANGE-REQUEST (RFC 5780): we cannot answer from another address. */
    put_header(packet, 0x0001, 8);
    memcpy(packet + 20, "\x00\x03\x00\x04\x00\x00\x00\x06", 8);
    expect_parse(packet, sizeof packet, STUN_UNKNOWN_ATTRIBUTE);
    /* Any comprehension-optional type is skipped. */
    memcpy(packet + 20, "\xff\xff\x00\x04\x00\x00\x00\x06", 8);
    expect_parse(packet, sizeof packet, STUN_OK);
}

/* ---- responses ---- */

static void ipv4_response_is_exact(void **state)
{
    /* RFC 5769 section 2.2's XOR-MAPPED-ADDRESS: 192.0.2.1 port 32853. */
    static const uint8_t want[] = {
        0x01, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7,
        0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae, 0x00, 0x20,
        0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43,
    };
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(32853)};
    uint8_t out[STUN_MAX_RESPONSE_BYTES];
    size_t len = 0;

    (void)state;
    sin.sin_addr.s_addr = htonl(0xc0000201);
    assert_int_equal(stun_binding_response(rfc_txid, (struct sockaddr *)&sin, out, &len), STUN_OK);
    assert_int_equal(len, sizeof want);
    assert_memory_equal(out, want, sizeof want);
}

static void ipv6_response_is_exact(void **state)
{
    /* RFC 5769 section 2.3: [2001:db8:1234:5678:11:2233:4455:6677]:32853. */
    static const uint8_t want[] = {
        0x01, 0x01, 0x00, 0x18, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01, 0x13,
        0xa9, 0xfa, 0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9,
    };
    static const uint8_t ip[16] = {0x20, 0x01, 0x0d, 0xb8, 0x12, 0x34, 0x56, 0x78,
                                   0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77};
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_port = htons(32853)};
    uint8_t out[STUN_MAX_RESPONSE_BYTES];
    size_t len = 0;

    (void)state;
    memcpy(sin6.sin6_addr.s6_addr, ip, sizeof ip);
    assert_int_equal(stun_binding_response(rfc_txid, (struct sockaddr *)&sin6, out, &len), STUN_OK);
    assert_int_equal(len, sizeof want);
    assert_int_equal(len, STUN_MAX_RESPONSE_BYTES);
    assert_memory_equal(out, want, sizeof want);
}

static void v4_mapped_source_is_answered_as_ipv4(void **state)
{
    static const uint8_t want_attr[] = {0x00, 0x20, 0x00, 0x08, 0x00, 0x01,
                                        0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43};
    static const uint8_t ip[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1};
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_port = htons(32853)};
    uint8_t out[STUN_MAX_RESPONSE_BYTES];
    size_t len = 0;

    (void)state;
    memcpy(sin6.sin6_addr.s6_addr, ip, sizeof ip);
    assert_int_equal(stun_binding_response(rfc_txid, (struct sockaddr *)&sin6, out, &len), STUN_OK);
    assert_int_equal(len, STUN_HEADER_BYTES + sizeof want_attr);
    assert_int_equal(out[3], sizeof want_attr);
    assert_memory_equal(out + STUN_HEADER_BYTES, want_attr, sizeof want_attr);
}

static void other_families_are_refused(void **state)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    uint8_t out[STUN_MAX_RESPONSE_BYTES];
    size_t len = 7;

    (void)state;
    assert_int_equal(stun_binding_response(rfc_txid, (struct sockaddr *)&sun, out, &len),
                     STUN_ADDRESS);
    assert_int_equal(len, 7);
}

static void every_code_has_a_message(void **state)
{
    (void)state;
    assert_string_equal(stun_strerror(STUN_OK), "ok");
    assert_string_equal(stun_strerror(STUN_BAD_FINGERPRINT), "wrong or misplaced FINGERPRINT");
    assert_string_equal(stun_strerror(-1), "unknown error");
}

/* ---- the UDP listener ---- */

struct fixture {
    uv_loop_t loop;
    struct stun_server *server;
    int n_closed;
    int client; /* a plain UDP socket */
};

static void tick_on_timer(uv_timer_t *t)
{
    (void)t;
}

typedef bool (*pred_fn)(struct fixture *f);

/* Runs the loop until pred holds or MAX_ITERATIONS turns have passed. */
static bool loop_run_until(struct fixture *f, pred_fn pred)
{
    uv_timer_t tick;
    bool ok = pred(f);

    uv_timer_init(&f->loop, &tick);
    uv_timer_start(&tick, tick_on_timer, TICK_MS, TICK_MS);
    for (int i = 0; i < MAX_ITERATIONS && !ok; i++) {
        uv_run(&f->loop, UV_RUN_ONCE);
        ok = pred(f);
    }
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    return ok;
}

static bool has_answered(struct fixture *f)
{
    struct stun_stats st;

    stun_server_stats(f->server, &st);
    return st.answered > 0;
}

static bool has_dropped(struct fixture *f)
{
    struct stun_stats st;

    stun_server_stats(f->server, &st);
    return st.dropped > 0;
}

static bool is_closed(struct fixture *f)
{
    return f->n_closed > 0;
}

static void on_server_closed(void *arg)
{
    ((struct fixture *)arg)->n_closed++;
}

static int setup(void **state)
{
    struct fixture *f = test_calloc(1, sizeof *f);

    if (f == NULL || uv_loop_init(&f->loop) != 0)
        return -1;
    f->client = -1;
    *state = f;
    return 0;
}

/* Closes what a failed test left open, then fails if a handle still is. */
static int teardown(void **state)
{
    struct fixture *f = *state;
    int rv;

    if (f->client >= 0)
        close(f->client);
    if (f->server != NULL)
        stun_server_close(f->server, NULL, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    rv = uv_loop_close(&f->loop);
    test_free(f);
    return rv == 0 ? 0 : -1;
}

static void close_server(struct fixture *f)
{
    stun_server_close(f->server, on_server_closed, f);
    f->server = NULL;
    assert_true(loop_run_until(f, is_closed));
    assert_int_equal(f->n_closed, 1);
}

/* Opens the client socket on the server's loopback address (bound, so that
 * getsockname tells the address the server sees) and sends packet. */
static void client_send(struct fixture *f, const struct sockaddr *server, socklen_t server_len,
                        const uint8_t *packet, size_t len)
{
    struct sockaddr_storage self;

    if (f->client < 0) {
        memcpy(&self, server, server_len);
        if (server->sa_family == AF_INET)
            ((struct sockaddr_in *)&self)->sin_port = 0;
        else
            ((struct sockaddr_in6 *)&self)->sin6_port = 0;
        f->client = socket(server->sa_family, SOCK_DGRAM, 0);
        assert_true(f->client >= 0);
        assert_int_equal(bind(f->client, (struct sockaddr *)&self, server_len), 0);
    }
    assert_int_equal(sendto(f->client, packet, len, 0, server, server_len), (ssize_t)len);
}

/* What the server must have answered to f->client: computed here from the
 * client's own address with RFC 5389's XOR rules, not with the codec. */
static size_t expected_answer(struct fixture *f, const uint8_t txid[STUN_TXID_BYTES], uint8_t *out)
{
    static const uint8_t cookie[4] = {0x21, 0x12, 0xa4, 0x42};
    struct sockaddr_storage self;
    socklen_t self_len = sizeof self;
    const uint8_t *ip;
    size_t ip_len;
    uint16_t port;

    assert_int_equal(getsockname(f->client, (struct sockaddr *)&self, &self_len), 0);
    if (self.ss_family == AF_INET) {
        ip = (const uint8_t *)&((struct sockaddr_in *)&self)->sin_addr;
        ip_len = 4;
        port = ntohs(((struct sockaddr_in *)&self)->sin_port);
    } else {
        ip = ((struct sockaddr_in6 *)&self)->sin6_addr.s6_addr;
        ip_len = 16;
        port = ntohs(((struct sockaddr_in6 *)&self)->sin6_port);
    }
    memcpy(out, "\x01\x01\x00", 3);
    out[3] = (uint8_t)(8 + ip_len);
    memcpy(out + 4, cookie, 4);
    memcpy(out + 8, txid, STUN_TXID_BYTES);
    out[20] = 0x00;
    out[21] = 0x20;
    out[22] = 0x00;
    out[23] = (uint8_t)(4 + ip_len);
    out[24] = 0;
    out[25] = ip_len == 4 ? 1 : 2;
    out[26] = (uint8_t)(port >> 8) ^ 0x21;
    out[27] = (uint8_t)port ^ 0x12;
    for (size_t i = 0; i < ip_len; i++)
        out[28 + i] = ip[i] ^ (i < 4 ? cookie[i] : txid[i - 4]);
    return 28 + ip_len;
}

/* One request, one exact answer, then garbage that gets no answer. */
static void round_trip(struct fixture *f, const struct sockaddr *server, socklen_t server_len)
{
    uint8_t want[STUN_MAX_RESPONSE_BYTES];
    uint8_t got[64];
    size_t want_len;
    struct stun_stats st;

    client_send(f, server, server_len, tailnode_request, sizeof tailnode_request);
    want_len = expected_answer(f, rfc_txid, want);
    assert_true(loop_run_until(f, has_answered));
    /* The answer was sent from inside the loop turn: it is queued now. */
    assert_int_equal(recv(f->client, got, sizeof got, MSG_DONTWAIT), (ssize_t)want_len);
    assert_memory_equal(got, want, want_len);

    client_send(f, server, server_len, (const uint8_t *)"hello", 5);
    assert_true(loop_run_until(f, has_dropped));
    assert_int_equal(recv(f->client, got, sizeof got, MSG_DONTWAIT), -1);
    assert_true(errno == EAGAIN || errno == EWOULDBLOCK);

    stun_server_stats(f->server, &st);
    assert_int_equal(st.answered, 1);
    assert_int_equal(st.dropped, 1);
    assert_int_equal(st.send_failed, 0);
}

static void udp_round_trip_ipv4(void **state)
{
    struct fixture *f = *state;
    struct sockaddr_in server = {.sin_family = AF_INET};
    char errmsg[STUN_ERRMSG_BYTES] = "";

    /* Debug logging on: the drop path formats its line. */
    log_init(LOG_LEVEL_DEBUG, LOG_FORMAT_TEXT);
    assert_int_equal(stun_server_new(&f->loop, "127.0.0.1:0", &f->server, errmsg), STUN_OK);
    assert_true(stun_server_port(f->server) > 0);
    server.sin_port = htons((uint16_t)stun_server_port(f->server));
    server.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    round_trip(f, (struct sockaddr *)&server, sizeof server);
    log_init(LOG_LEVEL_INFO, LOG_FORMAT_TEXT);
    close_server(f);
}

static void udp_round_trip_ipv6(void **state)
{
    struct fixture *f = *state;
    struct sockaddr_in6 server = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};

    if (stun_server_new(&f->loop, "[::1]:0", &f->server, NULL) != STUN_OK) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        skip(); /* no IPv6 on loopback here */
    }
    server.sin6_port = htons((uint16_t)stun_server_port(f->server));
    round_trip(f, (struct sockaddr *)&server, sizeof server);
    close_server(f);
}

static void bad_addresses_are_refused(void **state)
{
    struct fixture *f = *state;
    struct stun_server *s = NULL;
    char errmsg[STUN_ERRMSG_BYTES] = "";

    assert_int_equal(stun_server_new(&f->loop, "nonsense", &s, errmsg), STUN_ADDRESS);
    assert_non_null(strstr(errmsg, "nonsense"));
    /* Names other than localhost would need a resolver. */
    assert_int_equal(stun_server_new(&f->loop, "stun.example.net:3478", &s, NULL), STUN_ADDRESS);
    assert_null(s);
}

static void port_in_use_fails_and_frees_itself(void **state)
{
    struct fixture *f = *state;
    struct stun_server *second = NULL;
    char address[64];
    char errmsg[STUN_ERRMSG_BYTES] = "";

    assert_int_equal(stun_server_new(&f->loop, "localhost:0", &f->server, NULL), STUN_OK);
    snprintf(address, sizeof address, "127.0.0.1:%d", stun_server_port(f->server));
    assert_int_equal(stun_server_new(&f->loop, address, &second, errmsg), STUN_LISTEN);
    assert_null(second);
    assert_non_null(strstr(errmsg, address));
    close_server(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tailnode_request_is_accepted),
        cmocka_unit_test(minimal_and_padded_requests_are_accepted),
        cmocka_unit_test(rfc5769_request_fingerprint_verifies),
        cmocka_unit_test(short_packets_are_refused),
        cmocka_unit_test(foreign_packets_are_refused),
        cmocka_unit_test(other_message_types_are_refused),
        cmocka_unit_test(length_field_must_match_the_packet),
        cmocka_unit_test(attribute_overrunning_the_packet_is_refused),
        cmocka_unit_test(fingerprint_must_be_right_and_last),
        cmocka_unit_test(comprehension_required_attributes_are_refused),
        cmocka_unit_test(ipv4_response_is_exact),
        cmocka_unit_test(ipv6_response_is_exact),
        cmocka_unit_test(v4_mapped_source_is_answered_as_ipv4),
        cmocka_unit_test(other_families_are_refused),
        cmocka_unit_test(every_code_has_a_message),
        cmocka_unit_test_setup_teardown(udp_round_trip_ipv4, setup, teardown),
        cmocka_unit_test_setup_teardown(udp_round_trip_ipv6, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_addresses_are_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(port_in_use_fails_and_frees_itself, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
