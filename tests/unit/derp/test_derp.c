/* tests/unit/derp/test_derp.c: the DERP relay core against fake clients
 * written here: each builds its frames, boxes its client info with
 * libsodium and reads back the exact bytes the core sends. The mesh tests
 * run two servers in this process, joined by an in-memory pipe. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "server/derp/derp.h"

#define HDR          5
#define NONCE        crypto_box_NONCEBYTES
#define MAC          crypto_box_MACBYTES
#define MESH_HEX     "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define OTHER_HEX    "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
#define REGULAR_INFO "{\"version\":2,\"CanAckPings\":true}"

enum {
    T_SERVER_KEY = 0x01,
    T_CLIENT_INFO = 0x02,
    T_SERVER_INFO = 0x03,
    T_SEND = 0x04,
    T_RECV = 0x05,
    T_KEEP_ALIVE = 0x06,
    T_NOTE_PREFERRED = 0x07,
    T_PEER_GONE = 0x08,
    T_PEER_PRESENT = 0x09,
    T_FORWARD = 0x0a,
    T_WATCH = 0x10,
    T_CLOSE_PEER = 0x11,
    T_PING = 0x12,
    T_PONG = 0x13,
};

/* --- Transport ends --------------------------------------------------------- */

/* What the core sent on one connection, and whether it asked to close it. */
struct end {
    uint8_t *buf;
    size_t len, cap;
    size_t rd; /* frames before this were already checked */
    bool closed;
    char reason[128];
};

static int end_send(void *arg, const uint8_t *data, size_t len)
{
    struct end *e = arg;

    if (e->len + len > e->cap) {
        size_t cap = (e->len + len) * 2;
        uint8_t *buf = realloc(e->buf, cap);

        assert_non_null(buf);
        e->buf = buf;
        e->cap = cap;
    }
    memcpy(e->buf + e->len, data, len);
    e->len += len;
    return 0;
}

static void end_close(void *arg, const char *reason)
{
    struct end *e = arg;

    assert_false(e->closed);
    e->closed = true;
    snprintf(e->reason, sizeof e->reason, "%s", reason);
}

static const struct derp_io end_io = {end_send, end_close};

struct frame {
    uint8_t type;
    uint32_t len;
    const uint8_t *p;
};

static bool next_frame(struct end *e, struct frame *f)
{
    const uint8_t *h = e->buf + e->rd;

    if (e->len - e->rd < HDR)
        return false;
    f->type = h[0];
    f->len = (uint32_t)h[1] << 24 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 8 | h[4];
    assert_true(e->len - e->rd - HDR >= f->len);
    f->p = h + HDR;
    e->rd += HDR + f->len;
    return true;
}

static void expect_frame(struct end *e, uint8_t type, const void *p, size_t len)
{
    struct frame f;

    assert_true(next_frame(e, &f));
    assert_int_equal(f.type, type);
    assert_int_equal(f.len, len);
    if (len > 0)
        assert_memory_equal(f.p, p, len);
}

static void expect_nothing(const struct end *e)
{
    assert_int_equal(e->rd, e->len);
}

static void expect_peer_gone(struct end *e, const uint8_t key[32], uint8_t reason)
{
    uint8_t want[33];

    memcpy(want, key, 32);
    want[32] = reason;
    expect_frame(e, T_PEER_GONE, want, sizeof want);
}

static void expect_recv(struct end *e, const uint8_t src[32], const void *pkt, size_t len)
{
    uint8_t *want = malloc(32 + len + 1);

    assert_non_null(want);
    memcpy(want, src, 32);
    memcpy(want + 32, pkt, len);
    expect_frame(e, T_RECV, want, 32 + len);
    free(want);
}

/* --- Frames --------------------------------------------------------------- */

static uint8_t *build(uint8_t type, const void *a, size_t alen, const void *b, size_t blen,
                      size_t *len)
{
    uint8_t *f = malloc(HDR + alen + blen + 1);

    assert_non_null(f);
    f[0] = type;
    f[1] = (uint8_t)((alen + blen) >> 24);
    f[2] = (uint8_t)((alen + blen) >> 16);
    f[3] = (uint8_t)((alen + blen) >> 8);
    f[4] = (uint8_t)(alen + blen);
    if (alen > 0)
        memcpy(f + HDR, a, alen);
    if (blen > 0)
        memcpy(f + HDR + alen, b, blen);
    *len = HDR + alen + blen;
    return f;
}

/* Feeds a frame of two payload pieces in slices of `step` bytes (0: whole). */
static int feed2(struct derp_client *c, uint8_t type, const void *a, size_t alen, const void *b,
                 size_t blen, size_t step)
{
    size_t len;
    uint8_t *f = build(type, a, alen, b, blen, &len);
    int rv = 0;

    if (step == 0)
        step = len;
    for (size_t off = 0; off < len && rv == 0; off += step)
        rv = derp_client_feed(c, f + off, len - off < step ? len - off : step);
    free(f);
    return rv;
}

static int feed(struct derp_client *c, uint8_t type, const void *p, size_t len)
{
    return feed2(c, type, p, len, NULL, 0, 0);
}

static int link_feed(struct derp_mesh_link *l, uint8_t type, const void *p, size_t len)
{
    size_t flen;
    uint8_t *f = build(type, p, len, NULL, 0, &flen);
    int rv = derp_mesh_link_feed(l, f, flen);

    free(f);
    return rv;
}

/* --- Fake clients ------------------------------------------------------------ */

struct fake {
    struct end end;
    struct derp_client *c;
    uint8_t pub[32], priv[32];
    uint8_t server_pub[32];
};

static void seed_keypair(uint8_t seed, uint8_t pub[32], uint8_t priv[32])
{
    uint8_t s[crypto_box_SEEDBYTES];

    memset(s, seed, sizeof s);
    assert_int_equal(crypto_box_seed_keypair(pub, priv, s), 0);
}

/* Connects and checks the server key frame byte for byte. */
static void fake_open(struct fake *f, struct derp_server *s, uint8_t seed, const char *addr)
{
    uint8_t want[40];

    memset(f, 0, sizeof *f);
    seed_keypair(seed, f->pub, f->priv);
    f->c = derp_client_new(s, &end_io, &f->end, addr);
    assert_non_null(f->c);
    memcpy(want, "DERP\xf0\x9f\x94\x91", 8);
    derp_server_public_key(s, want + 8);
    expect_frame(&f->end, T_SERVER_KEY, want, sizeof want);
    memcpy(f->server_pub, want + 8, 32);
    assert_false(derp_client_key(f->c, want));
}

static int fake_send_info(struct fake *f, const char *json)
{
    size_t jlen = strlen(json);
    uint8_t *body = malloc(NONCE + MAC + jlen);
    int rv;

    assert_non_null(body);
    randombytes_buf(body, NONCE);
    assert_int_equal(
        crypto_box_easy(body + NONCE, (const uint8_t *)json, jlen, body, f->server_pub, f->priv),
        0);
    rv = feed2(f->c, T_CLIENT_INFO, f->pub, 32, body, NONCE + MAC + jlen, 0);
    free(body);
    return rv;
}

/* The server info must open with this client's key to {"version":2}. */
static void expect_server_info(struct fake *f)
{
    struct frame fr;
    uint8_t msg[64];

    assert_true(next_frame(&f->end, &fr));
    assert_int_equal(fr.type, T_SERVER_INFO);
    assert_int_equal(fr.len, NONCE + MAC + 13);
    assert_int_equal(
        crypto_box_open_easy(msg, fr.p + NONCE, fr.len - NONCE, fr.p, f->server_pub, f->priv), 0);
    assert_memory_equal(msg, "{\"version\":2}", 13);
}

static void fake_connect_info(struct fake *f, struct derp_server *s, uint8_t seed, const char *addr,
                              const char *json)
{
    fake_open(f, s, seed, addr);
    assert_int_equal(fake_send_info(f, json), 0);
    expect_server_info(f);
    assert_false(f->end.closed);
}

static void fake_connect(struct fake *f, struct derp_server *s, uint8_t seed)
{
    fake_connect_info(f, s, seed, "192.0.2.1:1000", REGULAR_INFO);
}

static void fake_free(struct fake *f)
{
    derp_client_free(f->c);
    free(f->end.buf);
}

static int send_pkt(struct fake *from, const uint8_t dst[32], const char *pkt)
{
    return feed2(from->c, T_SEND, dst, 32, pkt, strlen(pkt), 0);
}

/* --- Servers -------------------------------------------------------------- */

struct verifier {
    bool allow;
    unsigned calls;
    uint8_t last[32];
};

static bool verify_cb(void *arg, const uint8_t key[32])
{
    struct verifier *v = arg;

    v->calls++;
    memcpy(v->last, key, 32);
    return v->allow;
}

static struct verifier verifier;

static struct derp_server *server_with(uint8_t seed, const char *mesh, uint64_t rate,
                                       uint64_t burst)
{
    struct derp_options o = {.mesh_key = mesh,
                             .verify = verify_cb,
                             .verify_arg = &verifier,
                             .rate_bytes_per_s = rate,
                             .burst_bytes = burst};
    struct derp_server *s = NULL;
    uint8_t pub[32];

    seed_keypair(seed, pub, o.private_key);
    verifier.allow = true;
    verifier.calls = 0;
    assert_int_equal(derp_server_new(&o, &s), 0);
    assert_non_null(s);
    return s;
}

static struct derp_server *server(void)
{
    return server_with(100, MESH_HEX, 0, 0);
}

static struct derp_stats stats(const struct derp_server *s)
{
    struct derp_stats st;

    derp_server_stats(s, &st);
    return st;
}

/* --- Handshake ------------------------------------------------------------- */

static void handshake_sends_server_key_and_boxed_server_info(void **state)
{
    struct derp_server *s = server();
    struct fake a;
    uint8_t key[32], pub[32], priv[32];

    (void)state;
    fake_open(&a, s, 1, "192.0.2.1:1000");
    seed_keypair(100, pub, priv);
    assert_memory_equal(a.server_pub, pub, 32);
    assert_int_equal(stats(s).clients, 0);
    assert_int_equal(fake_send_info(&a, REGULAR_INFO), 0);
    expect_server_info(&a);
    expect_nothing(&a.end);
    assert_true(derp_client_key(a.c, key));
    assert_memory_equal(key, a.pub, 32);
    assert_int_equal(verifier.calls, 1);
    assert_memory_equal(verifier.last, a.pub, 32);
    assert_int_equal(stats(s).clients, 1);
    fake_free(&a);
    assert_int_equal(stats(s).clients, 0);
    derp_server_free(s);
}

static void handshake_refused_when_verify_says_no(void **state)
{
    struct derp_server *s = server();
    struct fake a;

    (void)state;
    verifier.allow = false;
    fake_open(&a, s, 1, NULL);
    assert_int_not_equal(fake_send_info(&a, REGULAR_INFO), 0);
    assert_true(a.end.closed);
    assert_string_equal(a.end.reason, "node key not allowed");
    expect_nothing(&a.end);
    assert_int_equal(stats(s).refused, 1);
    assert_int_equal(stats(s).clients, 0);
    assert_int_not_equal(feed(a.c, T_PING, "12345678", 8), 0);
    expect_nothing(&a.end);
    fake_free(&a);
    derp_server_free(s);
}

static void handshake_refuses_bad_boxes_and_wrong_frames(void **state)
{
    struct derp_server *s = server();
    struct fake a, b, c;
    uint8_t body[NONCE + MAC + 2];

    (void)state;
    /* Boxed to the wrong key: the server cannot open it. */
    fake_open(&a, s, 1, NULL);
    memset(a.server_pub, 7, 32);
    assert_int_not_equal(fake_send_info(&a, REGULAR_INFO), 0);
    assert_true(a.end.closed);
    expect_nothing(&a.end);
    /* Anything before the client info. */
    fake_open(&b, s, 2, NULL);
    assert_int_not_equal(feed(b.c, T_PING, "12345678", 8), 0);
    assert_true(b.end.closed);
    /* A box that opens but holds no JSON object. */
    fake_open(&c, s, 3, NULL);
    randombytes_buf(body, NONCE);
    assert_int_equal(
        crypto_box_easy(body + NONCE, (const uint8_t *)"[]", 2, body, c.server_pub, c.priv), 0);
    assert_int_not_equal(feed2(c.c, T_CLIENT_INFO, c.pub, 32, body, sizeof body, 0), 0);
    assert_true(c.end.closed);
    assert_int_equal(stats(s).refused, 3);
    assert_int_equal(verifier.calls, 0);
    fake_free(&a);
    fake_free(&b);
    fake_free(&c);
    derp_server_free(s);
}

static void handshake_checks_the_mesh_key(void **state)
{
    struct derp_server *s = server();
    struct derp_server *plain = server_with(101, NULL, 0, 0);
    struct fake bad, malformed, nomesh, good;

    (void)state;
    fake_open(&bad, s, 1, NULL);
    assert_int_not_equal(fake_send_info(&bad, "{\"version\":2,\"meshKey\":\"" OTHER_HEX "\"}"), 0);
    fake_open(&malformed, s, 2, NULL);
    assert_int_not_equal(fake_send_info(&malformed, "{\"meshKey\":\"0123\"}"), 0);
    fake_open(&nomesh, plain, 3, NULL);
    assert_int_not_equal(fake_send_info(&nomesh, "{\"meshKey\":\"" MESH_HEX "\"}"), 0);
    assert_true(bad.end.closed && malformed.end.closed && nomesh.end.closed);
    assert_string_equal(bad.end.reason, "wrong mesh key");
    assert_string_equal(malformed.end.reason, "wrong mesh key");
    assert_int_equal(stats(s).refused, 2);
    assert_int_equal(stats(plain).refused, 1);
    /* Field names match case-insensitively, as in Go; mesh peers skip verify
     * and are not counted as clients. */
    verifier.allow = false;
    fake_connect_info(&good, s, 4, NULL, "{\"MeshKey\":\"" MESH_HEX "\"}");
    assert_int_equal(verifier.calls, 0);
    assert_int_equal(stats(s).clients, 0);
    fake_free(&bad);
    fake_free(&malformed);
    fake_free(&nomesh);
    fake_free(&good);
    derp_server_free(s);
    derp_server_free(plain);
}

/* --- Relay ---------------------------------------------------------------- */

static void packets_are_relayed_both_ways(void **state)
{
    struct derp_server *s = server();
    struct fake a, b;

    (void)state;
    fake_connect(&a, s, 1);
    fake_connect(&b, s, 2);
    assert_int_equal(send_pkt(&a, b.pub, "hello"), 0);
    expect_recv(&b.end, a.pub, "hello", 5);
    /* One byte at a time. */
    assert_int_equal(feed2(b.c, T_SEND, a.pub, 32, "world!", 6, 1), 0);
    expect_recv(&a.end, b.pub, "world!", 6);
    /* An empty packet is a packet. */
    assert_int_equal(send_pkt(&a, b.pub, ""), 0);
    expect_recv(&b.end, a.pub, "", 0);
    expect_nothing(&a.end);
    expect_nothing(&b.end);
    assert_int_equal(stats(s).packets_relayed, 3);
    assert_int_equal(stats(s).packets_dropped, 0);
    fake_free(&a);
    fake_free(&b);
    derp_server_free(s);
}

static void ping_is_answered_with_pong(void **state)
{
    struct derp_server *s = server();
    struct fake a;

    (void)state;
    fake_connect(&a, s, 1);
    assert_int_equal(feed(a.c, T_PING, "\x01\x02\x03\x04\x05\x06\x07\x08", 8), 0);
    expect_frame(&a.end, T_PONG, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
    /* Extra bytes are allowed and not echoed. */
    assert_int_equal(feed(a.c, T_PING, "abcdefghXYZ", 11), 0);
    expect_frame(&a.end, T_PONG, "abcdefgh", 8);
    expect_nothing(&a.end);
    assert_int_not_equal(feed(a.c, T_PING, "short", 5), 0);
    assert_string_equal(a.end.reason, "bad ping size");
    fake_free(&a);
    derp_server_free(s);
}

static void unknown_destination_gets_peer_gone_not_here(void **state)
{
    struct derp_server *s = server();
    struct fake a;
    uint8_t nobody[32];

    (void)state;
    memset(nobody, 0x42, sizeof nobody);
    fake_connect(&a, s, 1);
    assert_int_equal(send_pkt(&a, nobody, "hi"), 0);
    expect_peer_gone(&a.end, nobody, 0x01);
    /* To itself: dropped without a word. */
    assert_int_equal(send_pkt(&a, a.pub, "hi"), 0);
    expect_nothing(&a.end);
    assert_int_equal(stats(s).packets_dropped, 2);
    assert_int_equal(stats(s).packets_relayed, 0);
    fake_free(&a);
    derp_server_free(s);
}

static void correspondents_get_peer_gone_on_disconnect(void **state)
{
    struct derp_server *s = server();
    struct fake a, b, c, d;

    (void)state;
    fake_connect(&a, s, 1);
    fake_connect(&b, s, 2);
    fake_connect(&c, s, 3);
    fake_connect(&d, s, 4);
    assert_int_equal(send_pkt(&a, b.pub, "to b"), 0);
    assert_int_equal(send_pkt(&a, b.pub, "again"), 0);
    assert_int_equal(send_pkt(&a, c.pub, "to c"), 0);
    expect_recv(&b.end, a.pub, "to b", 4);
    expect_recv(&b.end, a.pub, "again", 5);
    expect_recv(&c.end, a.pub, "to c", 4);
    /* b leaves: a, which sent to it, hears once. */
    fake_free(&b);
    expect_peer_gone(&a.end, b.pub, 0x00);
    expect_nothing(&a.end);
    /* a leaves: c, which received from it, hears (as derper tells
     * receivers); d never exchanged anything. */
    fake_free(&a);
    expect_peer_gone(&c.end, a.pub, 0x00);
    expect_nothing(&c.end);
    expect_nothing(&d.end);
    fake_free(&c);
    fake_free(&d);
    derp_server_free(s);
}

static void second_connection_of_a_key_replaces_the_first(void **state)
{
    struct derp_server *s = server();
    struct fake a1, a2, b;

    (void)state;
    fake_connect(&a1, s, 1);
    fake_connect(&b, s, 2);
    assert_int_equal(send_pkt(&b, a1.pub, "one"), 0);
    expect_recv(&a1.end, b.pub, "one", 3);
    fake_connect(&a2, s, 1);
    assert_true(a1.end.closed);
    assert_string_equal(a1.end.reason, "replaced by a newer connection of the same key");
    assert_false(a2.end.closed);
    assert_int_equal(stats(s).clients, 2);
    assert_int_not_equal(feed(a1.c, T_PING, "12345678", 8), 0);
    assert_int_equal(send_pkt(&b, a2.pub, "two"), 0);
    expect_recv(&a2.end, b.pub, "two", 3);
    expect_nothing(&a1.end);
    /* The replaced connection leaving says nothing; the key leaving does. */
    fake_free(&a1);
    expect_nothing(&b.end);
    assert_int_equal(stats(s).clients, 2);
    fake_free(&a2);
    expect_peer_gone(&b.end, a2.pub, 0x00);
    assert_int_equal(stats(s).clients, 1);
    fake_free(&b);
    derp_server_free(s);
}

static void oversize_packet_is_dropped_and_counted(void **state)
{
    struct derp_server *s = server();
    struct fake a, b;
    char *big = malloc(DERP_MAX_PACKET_BYTES + 2);

    (void)state;
    assert_non_null(big);
    memset(big, 'x', DERP_MAX_PACKET_BYTES + 1);
    fake_connect(&a, s, 1);
    fake_connect(&b, s, 2);
    assert_int_equal(feed2(a.c, T_SEND, b.pub, 32, big, DERP_MAX_PACKET_BYTES + 1, 1000), 0);
    expect_nothing(&b.end);
    assert_false(a.end.closed);
    assert_int_equal(stats(s).packets_dropped, 1);
    /* The largest allowed packet goes through, split across feeds. */
    assert_int_equal(feed2(a.c, T_SEND, b.pub, 32, big, DERP_MAX_PACKET_BYTES, 999), 0);
    expect_recv(&b.end, a.pub, big, DERP_MAX_PACKET_BYTES);
    assert_int_equal(stats(s).packets_relayed, 1);
    free(big);
    fake_free(&a);
    fake_free(&b);
    derp_server_free(s);
}

/* Enough keys to grow the tables several times, then half of them leave
 * (removals shift entries back): every lookup must still find its key. */
static void many_clients_exercise_the_tables(void **state)
{
    enum { N = 150 };
    struct derp_server *s = server();
    struct fake *f = calloc(N, sizeof *f);

    (void)state;
    assert_non_null(f);
    for (int i = 0; i < N; i++)
        fake_connect(&f[i], s, (uint8_t)(i + 1));
    for (int i = 0; i < N; i++) {
        assert_int_equal(send_pkt(&f[i], f[(i + 1) % N].pub, "ring"), 0);
        expect_recv(&f[(i + 1) % N].end, f[i].pub, "ring", 4);
    }
    for (int i = 1; i < N; i += 2)
        fake_free(&f[i]);
    assert_int_equal(stats(s).clients, N / 2);
    for (int i = 0; i < N; i += 2) {
        /* Its predecessor (it received from it) and successor (it sent to
         * it) left, in the order they were freed. */
        const struct fake *pred = &f[(i + N - 1) % N], *succ = &f[i + 1];

        expect_peer_gone(&f[i].end, (i == 0 ? succ : pred)->pub, 0x00);
        expect_peer_gone(&f[i].end, (i == 0 ? pred : succ)->pub, 0x00);
        expect_nothing(&f[i].end);
    }
    for (int i = 0; i < N; i += 2) {
        assert_int_equal(send_pkt(&f[i], f[(i + 2) % N].pub, "skip"), 0);
        expect_recv(&f[(i + 2) % N].end, f[i].pub, "skip", 4);
        assert_int_equal(send_pkt(&f[i], f[i + 1].pub, "gone"), 0);
        expect_peer_gone(&f[i].end, f[i + 1].pub, 0x01);
    }
    for (int i = 0; i < N; i += 2)
        fake_free(&f[i]);
    assert_int_equal(stats(s).clients, 0);
    free(f);
    derp_server_free(s);
}

/* 1 byte/s: the burst is all a flood gets during the test, whatever the
 * machine's speed. */
static void rate_limit_drops_a_flood_but_not_other_clients(void **state)
{
    struct derp_server *s = server_with(100, MESH_HEX, 1, 1000);
    struct fake a, b, c;
    char pkt[101];
    unsigned from_a = 0, from_c = 0;
    struct frame f;

    (void)state;
    memset(pkt, 'p', 100);
    pkt[100] = '\0';
    fake_connect(&a, s, 1);
    fake_connect(&b, s, 2);
    fake_connect(&c, s, 3);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(send_pkt(&a, b.pub, pkt), 0);
        if (i % 20 == 0)
            assert_int_equal(send_pkt(&c, b.pub, "c"), 0);
    }
    while (next_frame(&b.end, &f)) {
        assert_int_equal(f.type, T_RECV);
        if (memcmp(f.p, a.pub, 32) == 0)
            from_a++;
        else if (memcmp(f.p, c.pub, 32) == 0)
            from_c++;
    }
    assert_int_equal(from_a, 10);
    assert_int_equal(from_c, 5);
    assert_int_equal(stats(s).packets_dropped, 90);
    assert_false(a.end.closed);
    fake_free(&a);
    fake_free(&b);
    fake_free(&c);
    derp_server_free(s);
}

static void backlog_over_the_limit_drops_packets(void **state)
{
    struct derp_server *s = server();
    struct fake a, b;

    (void)state;
    fake_connect(&a, s, 1);
    fake_connect(&b, s, 2);
    derp_client_set_backlog(b.c, 1024 * 1024);
    assert_int_equal(send_pkt(&a, b.pub, "lost"), 0);
    expect_nothing(&b.end);
    assert_int_equal(stats(s).packets_dropped, 1);
    derp_client_set_backlog(b.c, 1024 * 1024 - 1);
    assert_int_equal(send_pkt(&a, b.pub, "kept"), 0);
    expect_recv(&b.end, a.pub, "kept", 4);
    fake_free(&a);
    fake_free(&b);
    derp_server_free(s);
}

static void frame_longer_than_allowed_closes(void **state)
{
    struct derp_server *s = server();
    struct fake a, b;
    const uint8_t too_long[] = {0x7f, 0x00, 0x10, 0x00, 0x01};

    (void)state;
    fake_connect(&a, s, 1);
    fake_connect(&b, s, 2);
    /* Unknown types are skipped, even split up. */
    assert_int_equal(feed2(a.c, 0x7f, "0123456789", 10, NULL, 0, 3), 0);
    assert_int_equal(feed(a.c, T_PONG, "12345678", 8), 0);
    assert_int_equal(feed(a.c, T_PING, "12345678", 8), 0);
    expect_frame(&a.end, T_PONG, "12345678", 8);
    assert_int_not_equal(derp_client_feed(a.c, too_long, sizeof too_long), 0);
    assert_true(a.end.closed);
    assert_string_equal(a.end.reason, "frame too long");
    expect_nothing(&a.end);
    /* A short send frame is a protocol error. */
    assert_int_not_equal(feed(b.c, T_SEND, "short", 5), 0);
    assert_true(b.end.closed);
    fake_free(&a);
    fake_free(&b);
    derp_server_free(s);
}

static void keepalive_only_to_idle_connections(void **state)
{
    struct derp_server *s = server();
    struct fake a, b, pending;

    (void)state;
    fake_connect(&a, s, 1);
    fake_connect(&b, s, 2);
    fake_open(&pending, s, 3, NULL);
    derp_server_keepalive(s); /* both just got their server info */
    expect_nothing(&a.end);
    assert_int_equal(feed(a.c, T_PING, "12345678", 8), 0);
    expect_frame(&a.end, T_PONG, "12345678", 8);
    derp_server_keepalive(s);
    expect_nothing(&a.end);
    expect_frame(&b.end, T_KEEP_ALIVE, NULL, 0);
    derp_server_keepalive(s);
    expect_frame(&a.end, T_KEEP_ALIVE, NULL, 0);
    expect_frame(&b.end, T_KEEP_ALIVE, NULL, 0); /* idle: one per call */
    expect_nothing(&a.end);
    expect_nothing(&b.end);
    expect_nothing(&pending.end);
    fake_free(&a);
    fake_free(&b);
    fake_free(&pending);
    derp_server_free(s);
}

static void note_preferred_is_counted(void **state)
{
    struct derp_server *s = server();
    struct fake a, b;

    (void)state;
    fake_connect(&a, s, 1);
    fake_connect(&b, s, 2);
    assert_int_equal(feed(a.c, T_NOTE_PREFERRED, "\x01", 1), 0);
    assert_int_equal(feed(b.c, T_NOTE_PREFERRED, "\x01", 1), 0);
    assert_int_equal(feed(b.c, T_NOTE_PREFERRED, "\x00", 1), 0);
    assert_int_equal(stats(s).home_clients, 1);
    fake_free(&a);
    assert_int_equal(stats(s).home_clients, 0);
    assert_int_not_equal(feed(b.c, T_NOTE_PREFERRED, "\x01\x01", 2), 0);
    assert_true(b.end.closed);
    fake_free(&b);
    derp_server_free(s);
}

static void mesh_frames_from_regular_clients_close(void **state)
{
    struct derp_server *s = server();
    struct fake a, b, c;
    uint8_t fwd[70] = {0};

    (void)state;
    fake_connect(&a, s, 1);
    fake_connect(&b, s, 2);
    fake_connect(&c, s, 3);
    assert_int_not_equal(feed(a.c, T_WATCH, NULL, 0), 0);
    assert_string_equal(a.end.reason, "mesh frame from a non-mesh client");
    assert_int_not_equal(feed(b.c, T_CLOSE_PEER, c.pub, 32), 0);
    assert_true(b.end.closed);
    memcpy(fwd + 32, c.pub, 32);
    assert_int_not_equal(feed(c.c, T_FORWARD, fwd, sizeof fwd), 0);
    assert_string_equal(c.end.reason, "forward packet from a non-mesh client");
    expect_nothing(&a.end);
    expect_nothing(&c.end);
    fake_free(&a);
    fake_free(&b);
    fake_free(&c);
    derp_server_free(s);
}

/* --- Mesh ------------------------------------------------------------------ */

#define MESH_INFO "{\"version\":2,\"meshKey\":\"" MESH_HEX "\"}"

static void expect_present(struct end *e, const uint8_t key[32], const char *addr16, uint16_t port,
                           uint8_t flags)
{
    uint8_t want[51];

    memcpy(want, key, 32);
    memcpy(want + 32, addr16, 16);
    want[48] = (uint8_t)(port >> 8);
    want[49] = (uint8_t)port;
    want[50] = flags;
    expect_frame(e, T_PEER_PRESENT, want, sizeof want);
}

#define V4_192_0_2_1 "\0\0\0\0\0\0\0\0\0\0\xff\xff\xc0\x00\x02\x01"
#define V6_DB8_1     "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01"

static void watchers_see_presence_and_may_forward_and_close(void **state)
{
    struct derp_server *s = server();
    struct fake w, a, p, c, self;
    uint8_t src[32];
    uint8_t fwd[64 + 3];

    (void)state;
    fake_connect(&a, s, 1);
    fake_connect_info(&w, s, 9, NULL, MESH_INFO);
    assert_int_equal(feed(w.c, T_WATCH, NULL, 0), 0);
    expect_present(&w.end, a.pub, V4_192_0_2_1, 1000, 0x01);
    /* Subscribing again, or to itself (the server's own key), is a no-op. */
    assert_int_equal(feed(w.c, T_WATCH, NULL, 0), 0);
    expect_nothing(&w.end);
    fake_connect_info(&self, s, 100, NULL, MESH_INFO);
    assert_int_equal(feed(self.c, T_WATCH, NULL, 0), 0);
    expect_nothing(&self.end);
    fake_free(&self);
    fake_connect_info(&p, s, 2, "[2001:db8::1]:443", "{\"IsProber\":true}");
    expect_present(&w.end, p.pub, V6_DB8_1, 443, 0x04);
    fake_connect_info(&c, s, 3, "not an address", REGULAR_INFO);
    expect_present(&w.end, c.pub, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 0, 0x01);
    fake_free(&a);
    expect_peer_gone(&w.end, a.pub, 0x00);
    /* ClosePeer closes the target's connection. */
    assert_int_equal(feed(w.c, T_CLOSE_PEER, p.pub, 32), 0);
    assert_true(p.end.closed);
    assert_string_equal(p.end.reason, "closed by a mesh peer");
    /* ForwardPacket: delivered with the source key it names. */
    memset(src, 0x55, sizeof src);
    memcpy(fwd, src, 32);
    memcpy(fwd + 32, c.pub, 32);
    memcpy(fwd + 64, "fwd", 3);
    assert_int_equal(feed(w.c, T_FORWARD, fwd, sizeof fwd), 0);
    expect_recv(&c.end, src, "fwd", 3);
    /* Never forwarded again, never answered with PeerGone. */
    memset(fwd + 32, 0x66, 32);
    assert_int_equal(feed(w.c, T_FORWARD, fwd, sizeof fwd), 0);
    assert_int_equal(stats(s).packets_dropped, 1);
    expect_nothing(&w.end);
    fake_free(&p);
    expect_peer_gone(&w.end, p.pub, 0x00);
    fake_free(&w);
    fake_free(&c);
    derp_server_free(s);
}

/* The test plays the other replica: it checks what the link sends. */
static void mesh_link_handshakes_learns_and_forwards(void **state)
{
    struct derp_server *s = server();
    struct end le = {0};
    struct derp_mesh_link *l = derp_mesh_link_new(s, &end_io, &le, "peer");
    uint8_t rpub[32], rpriv[32], spub[32], msg[128], skey[40], info[NONCE + MAC + 13];
    uint8_t present[51] = {0}, y[32], z[32], fwd[64 + 2];
    struct fake x;
    struct frame f;

    (void)state;
    assert_non_null(l);
    seed_keypair(77, rpub, rpriv);
    derp_server_public_key(s, spub);
    memcpy(skey, "DERP\xf0\x9f\x94\x91", 8);
    memcpy(skey + 8, rpub, 32);
    assert_int_equal(link_feed(l, T_SERVER_KEY, skey, sizeof skey), 0);
    assert_true(next_frame(&le, &f));
    assert_int_equal(f.type, T_CLIENT_INFO);
    assert_int_equal(f.len, 32 + NONCE + MAC + strlen(MESH_INFO));
    assert_memory_equal(f.p, spub, 32);
    assert_int_equal(
        crypto_box_open_easy(msg, f.p + 32 + NONCE, f.len - 32 - NONCE, f.p + 32, spub, rpriv), 0);
    assert_memory_equal(msg, MESH_INFO, strlen(MESH_INFO));
    expect_frame(&le, T_WATCH, NULL, 0);
    randombytes_buf(info, NONCE);
    assert_int_equal(
        crypto_box_easy(info + NONCE, (const uint8_t *)"{\"version\":2}", 13, info, spub, rpriv),
        0);
    assert_int_equal(link_feed(l, T_SERVER_INFO, info, sizeof info), 0);
    /* y arrives with address and flags, z with the key alone. */
    memset(y, 0x11, sizeof y);
    memset(z, 0x22, sizeof z);
    memcpy(present, y, 32);
    assert_int_equal(link_feed(l, T_PEER_PRESENT, present, sizeof present), 0);
    assert_int_equal(link_feed(l, T_PEER_PRESENT, z, 32), 0);
    fake_connect(&x, s, 1);
    assert_int_equal(send_pkt(&x, y, "yo"), 0);
    memcpy(fwd, x.pub, 32);
    memcpy(fwd + 32, y, 32);
    memcpy(fwd + 64, "yo", 2);
    expect_frame(&le, T_FORWARD, fwd, sizeof fwd);
    assert_int_equal(stats(s).packets_forwarded_to_mesh, 1);
    assert_int_equal(link_feed(l, T_PING, "pingpong", 8), 0);
    expect_frame(&le, T_PONG, "pingpong", 8);
    /* y leaves there: x, which sent to it, hears; then y is unknown. */
    assert_int_equal(link_feed(l, T_PEER_GONE, y, 32), 0);
    expect_peer_gone(&x.end, y, 0x00);
    assert_int_equal(send_pkt(&x, y, "yo"), 0);
    expect_peer_gone(&x.end, y, 0x01);
    expect_nothing(&le);
    assert_false(le.closed);
    /* The link goes: z with it. */
    derp_mesh_link_free(l);
    assert_int_equal(send_pkt(&x, z, "z?"), 0);
    expect_peer_gone(&x.end, z, 0x01);
    fake_free(&x);
    free(le.buf);
    derp_server_free(s);
}

static void mesh_link_rejects_bad_servers(void **state)
{
    struct derp_server *s = server();
    struct derp_server *plain = server_with(101, NULL, 0, 0);
    struct end e1 = {0}, e2 = {0}, e3 = {0};
    struct derp_mesh_link *bad_magic = derp_mesh_link_new(s, &end_io, &e1, "1");
    struct derp_mesh_link *self = derp_mesh_link_new(s, &end_io, &e2, "2");
    struct derp_mesh_link *bad_info = derp_mesh_link_new(s, &end_io, &e3, "3");
    uint8_t skey[40], rpriv[32], junk[NONCE + MAC + 4] = {0};

    (void)state;
    assert_null(derp_mesh_link_new(plain, &end_io, &e1, "no mesh key"));
    memcpy(skey, "DERQ\xf0\x9f\x94\x91", 8);
    seed_keypair(77, skey + 8, rpriv);
    assert_int_not_equal(link_feed(bad_magic, T_SERVER_KEY, skey, sizeof skey), 0);
    assert_string_equal(e1.reason, "bad server key frame");
    memcpy(skey, "DERP", 4);
    derp_server_public_key(s, skey + 8);
    assert_int_not_equal(link_feed(self, T_SERVER_KEY, skey, sizeof skey), 0);
    assert_string_equal(e2.reason, "connected to itself");
    seed_keypair(77, skey + 8, rpriv);
    assert_int_equal(link_feed(bad_info, T_SERVER_KEY, skey, sizeof skey), 0);
    assert_int_not_equal(link_feed(bad_info, T_SERVER_INFO, junk, sizeof junk), 0);
    assert_string_equal(e3.reason, "server info does not open");
    expect_nothing(&e1);
    derp_mesh_link_free(bad_magic);
    derp_mesh_link_free(self);
    derp_mesh_link_free(bad_info);
    free(e1.buf);
    free(e2.buf);
    free(e3.buf);
    derp_server_free(s);
    derp_server_free(plain);
}

/* A's link to B: bytes the link sends go to B's connection for it, and back. */
struct pipe {
    struct end to_b; /* sent by A's link */
    struct end to_a; /* sent by B's connection */
    struct derp_mesh_link *link;
    struct derp_client *conn;
};

static void pump(struct pipe *p)
{
    while (p->to_b.rd < p->to_b.len || p->to_a.rd < p->to_a.len) {
        size_t n = p->to_b.len - p->to_b.rd;

        if (n > 0) {
            p->to_b.rd = p->to_b.len;
            assert_int_equal(derp_client_feed(p->conn, p->to_b.buf + p->to_b.len - n, n), 0);
        }
        n = p->to_a.len - p->to_a.rd;
        if (n > 0) {
            p->to_a.rd = p->to_a.len;
            assert_int_equal(derp_mesh_link_feed(p->link, p->to_a.buf + p->to_a.len - n, n), 0);
        }
    }
}

static void mesh_two_servers_forward_over_a_link(void **state)
{
    struct derp_server *a = server_with(100, MESH_HEX, 0, 0);
    struct derp_server *b = server_with(101, MESH_HEX, 0, 0);
    struct pipe p;
    struct fake x, y, w;

    (void)state;
    memset(&p, 0, sizeof p);
    fake_connect(&y, b, 2);
    fake_connect_info(&w, b, 9, NULL, MESH_INFO);
    assert_int_equal(feed(w.c, T_WATCH, NULL, 0), 0);
    expect_present(&w.end, y.pub, V4_192_0_2_1, 1000, 0x01);
    p.conn = derp_client_new(b, &end_io, &p.to_a, "192.0.2.99:3340");
    p.link = derp_mesh_link_new(a, &end_io, &p.to_b, "b");
    assert_non_null(p.conn);
    assert_non_null(p.link);
    pump(&p);
    assert_int_equal(stats(b).clients, 1); /* the link is not a client */
    fake_connect(&x, a, 1);
    assert_int_equal(send_pkt(&x, y.pub, "over the mesh"), 0);
    pump(&p);
    expect_recv(&y.end, x.pub, "over the mesh", 13);
    assert_int_equal(stats(a).packets_forwarded_to_mesh, 1);
    assert_int_equal(stats(b).packets_relayed, 1);
    /* y leaves B: A's link hears, and so does x, which sent to it. */
    fake_free(&y);
    expect_peer_gone(&w.end, y.pub, 0x00);
    pump(&p);
    expect_peer_gone(&x.end, y.pub, 0x00);
    assert_int_equal(send_pkt(&x, y.pub, "late"), 0);
    expect_peer_gone(&x.end, y.pub, 0x01);
    /* y comes back after the initial flood: learnt live. */
    fake_connect(&y, b, 2);
    expect_present(&w.end, y.pub, V4_192_0_2_1, 1000, 0x01);
    pump(&p);
    assert_int_equal(send_pkt(&x, y.pub, "back"), 0);
    pump(&p);
    expect_recv(&y.end, x.pub, "back", 4);
    expect_nothing(&x.end);
    expect_nothing(&w.end);
    /* The link goes: A forgets y, and x hears. */
    derp_mesh_link_free(p.link);
    expect_peer_gone(&x.end, y.pub, 0x00);
    derp_client_free(p.conn);
    expect_nothing(&w.end);
    fake_free(&x);
    fake_free(&y);
    fake_free(&w);
    free(p.to_a.buf);
    free(p.to_b.buf);
    derp_server_free(a);
    derp_server_free(b);
}

static void server_new_rejects_a_bad_mesh_key(void **state)
{
    struct derp_options o = {.mesh_key = "0123"};
    struct derp_server *s = NULL;

    (void)state;
    assert_int_equal(derp_server_new(&o, &s), -1);
    assert_null(s);
    o.mesh_key = MESH_HEX "00";
    assert_int_equal(derp_server_new(&o, &s), -1);
    o.mesh_key = "x123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    assert_int_equal(derp_server_new(&o, &s), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(handshake_sends_server_key_and_boxed_server_info),
        cmocka_unit_test(handshake_refused_when_verify_says_no),
        cmocka_unit_test(handshake_refuses_bad_boxes_and_wrong_frames),
        cmocka_unit_test(handshake_checks_the_mesh_key),
        cmocka_unit_test(packets_are_relayed_both_ways),
        cmocka_unit_test(ping_is_answered_with_pong),
        cmocka_unit_test(unknown_destination_gets_peer_gone_not_here),
        cmocka_unit_test(correspondents_get_peer_gone_on_disconnect),
        cmocka_unit_test(second_connection_of_a_key_replaces_the_first),
        cmocka_unit_test(oversize_packet_is_dropped_and_counted),
        cmocka_unit_test(many_clients_exercise_the_tables),
        cmocka_unit_test(rate_limit_drops_a_flood_but_not_other_clients),
        cmocka_unit_test(backlog_over_the_limit_drops_packets),
        cmocka_unit_test(frame_longer_than_allowed_closes),
        cmocka_unit_test(keepalive_only_to_idle_connections),
        cmocka_unit_test(note_preferred_is_counted),
        cmocka_unit_test(mesh_frames_from_regular_clients_close),
        cmocka_unit_test(watchers_see_presence_and_may_forward_and_close),
        cmocka_unit_test(mesh_link_handshakes_learns_and_forwards),
        cmocka_unit_test(mesh_link_rejects_bad_servers),
        cmocka_unit_test(mesh_two_servers_forward_over_a_link),
        cmocka_unit_test(server_new_rejects_a_bad_mesh_key),
    };

    if (sodium_init() < 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
