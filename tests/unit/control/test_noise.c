/* tests/unit/control/test_noise.c: the Noise IK handshake and transport
 * against the test vector of tailscale-control-protocol.md Appendix A, round
 * trips with random keys, the record reader's errors, key text and the key
 * file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>
#include <sys/stat.h>

#include "server/control/noise.h"
#include "tests/lib/testdir.h"

/* Appendix A, version 145. */
#define VEC_VERSION            145
#define VEC_SERVER_STATIC_PRIV "42b0f52facd91e6603b9a1c026de0eb46ebcfc33fcf136a5a1c9b4980f664fb3"
#define VEC_SERVER_STATIC_PUB  "427265d836c915925b7db24ebb0e6be96b23a96d50dcfd9f9866aba150a5a50c"
#define VEC_MACHINE_PRIV       "3f04dfcc6f889a3da8601006b01b29a0273542b2534aafe6a5391311beb4f32c"
#define VEC_MACHINE_PUB        "ef0780c591240229d903552fc6cb4f564b6b88b033814d90bf5bdd145e669b37"
#define VEC_CLIENT_EPH_PRIV    "31939c5adddec942290b637530898a70f2d32453e5241f30a0550780e7586b07"
#define VEC_SERVER_EPH_PRIV    "5be551a192e32372d3dfca3025e3a6129aa00350e5ffceeb0184f61b25e23481"
#define VEC_INITIATION                                                                             \
    "0091010060f01e3feed2953d4221feddad1b6baa06ee321666eb0e170d33428905b0057d4e7f3b97e2294fe419"   \
    "871b91740b5fc5d30146a392efeeaef47d5e7feae6cb620e7894d7180cdb02c57fbaf4fa61bac4082d68bc01a4"   \
    "2fbe6a8d6e2b9640ab8b46"
#define VEC_HANDSHAKE_HEADER                                                                       \
    "AJEBAGDwHj/u0pU9QiH+3a0ba6oG7jIWZusOFw0zQokFsAV9Tn87l+IpT+QZhxuRdAtfxdMBRqOS7+6u9H1ef+rmy2IO" \
    "eJTXGAzbAsV/uvT6YbrECC1ovAGkL75qjW4rlkCri0Y="
#define VEC_RESPONSE                                                                               \
    "02003098ce40bd9d69d7950579450cfcb9844f328d214b045f825a96bf70f9ae37b37d7952da36ecde06ed3831"   \
    "1d60a9220956"
#define VEC_FINAL_H        "ab00cd866fc2a6798fd5e5a349be2fcaf98e2af5bfdb4561c2a7e873f3e1ceea"
#define VEC_K1             "645bdd18b220ba61f65b62936a20cf6c6d961a28b3f9e4712c2eb1ddc6378d48"
#define VEC_K2             "5c61930cdb4745db7a544b6aed743ed5e92234ec0bb92425cfa0365ca3f5eba5"
#define VEC_CLIENT_RECORD0 "040013d511846bced007700ab13e4b4570342e7f2170"
#define VEC_CLIENT_RECORD1 "0400138d8fff1cb585aa140224a7ab5aff09ce69ebc6"
#define VEC_SERVER_RECORD0                                                                         \
    "0400784d83f92692917d4768cf06401f655353c7e4f50d84016cb00e5e73ed126f60d725ac98c54ee86e2f9f24"   \
    "16c598926106ed695e9b65d531ba448e96e3b5b4b5ad59fefcaed004446ee2c2ad46b56d8de8b72ed820165165"   \
    "79daa14eab5f41b2a2b3fa41ed23b818a6528ecb91978cc54acf76b6fb895cf11b"
#define EARLY_JSON                                                                                 \
    "{\"nodeKeyChallenge\":\"chalpub:"                                                             \
    "0000000000000000000000000000000000000000000000000000000000000000\"}"

#define KEY_HEX "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

/* Decodes hex that must be exactly len bytes. */
static void unhex(const char *hex, uint8_t *out, size_t len)
{
    size_t bin_len = 0;

    assert_int_equal(strlen(hex), 2 * len);
    assert_int_equal(sodium_hex2bin(out, len, hex, strlen(hex), NULL, &bin_len, NULL), 0);
    assert_int_equal(bin_len, len);
}

/* The vector's key pair for a label: the private key is SHA-256(label). */
static void label_keypair(const char *label, struct noise_keypair *kp)
{
    uint8_t priv[NOISE_KEY_BYTES];

    crypto_hash_sha256(priv, (const uint8_t *)label, strlen(label));
    assert_int_equal(noise_keypair_from_private(priv, kp), NOISE_OK);
}

/* Collects every plaintext handed out by a reader, with the record sizes. */
struct sink {
    uint8_t data[64 * 1024];
    size_t len;
    size_t sizes[32];
    size_t calls;
    int fail_on_call; /* 1-based call that returns -7; 0: never */
};

static int sink_cb(void *arg, const uint8_t *plain, size_t len)
{
    struct sink *k = arg;

    assert_true(k->len + len <= sizeof k->data);
    assert_true(k->calls < sizeof k->sizes / sizeof k->sizes[0]);
    if (len > 0)
        memcpy(k->data + k->len, plain, len);
    k->len += len;
    k->sizes[k->calls++] = len;
    return k->calls == (size_t)k->fail_on_call ? -7 : 0;
}

static int setup(void **state)
{
    (void)state;
    return sodium_init() < 0 ? -1 : 0;
}

static void vector_keys_come_from_the_labels(void **state)
{
    struct noise_keypair kp;
    uint8_t want[NOISE_KEY_BYTES];

    (void)state;
    label_keypair("server-static", &kp);
    unhex(VEC_SERVER_STATIC_PRIV, want, sizeof want);
    assert_memory_equal(kp.priv, want, sizeof want);
    unhex(VEC_SERVER_STATIC_PUB, want, sizeof want);
    assert_memory_equal(kp.pub, want, sizeof want);

    label_keypair("client-machine", &kp);
    unhex(VEC_MACHINE_PRIV, want, sizeof want);
    assert_memory_equal(kp.priv, want, sizeof want);
    unhex(VEC_MACHINE_PUB, want, sizeof want);
    assert_memory_equal(kp.pub, want, sizeof want);

    label_keypair("client-ephemeral", &kp);
    unhex(VEC_CLIENT_EPH_PRIV, want, sizeof want);
    assert_memory_equal(kp.priv, want, sizeof want);
    label_keypair("server-ephemeral", &kp);
    unhex(VEC_SERVER_EPH_PRIV, want, sizeof want);
    assert_memory_equal(kp.priv, want, sizeof want);
}

static void vector_initiation_is_exact(void **state)
{
    struct noise_keypair server, machine, eph;
    struct noise_initiator st;
    uint8_t init[NOISE_INIT_BYTES], want[NOISE_INIT_BYTES];
    char b64[sodium_base64_ENCODED_LEN(NOISE_INIT_BYTES, sodium_base64_VARIANT_ORIGINAL)];

    (void)state;
    label_keypair("server-static", &server);
    label_keypair("client-machine", &machine);
    label_keypair("client-ephemeral", &eph);
    assert_int_equal(noise_initiate(&st, VEC_VERSION, &machine, server.pub, &eph, init), NOISE_OK);
    unhex(VEC_INITIATION, want, sizeof want);
    assert_memory_equal(init, want, sizeof want);
    sodium_bin2base64(b64, sizeof b64, init, sizeof init, sodium_base64_VARIANT_ORIGINAL);
    assert_string_equal(b64, VEC_HANDSHAKE_HEADER);
}

/* The server side of the vector: the response and the session. */
static void vector_respond(struct noise_session *srv)
{
    struct noise_keypair server, eph;
    uint8_t init[NOISE_INIT_BYTES], resp[NOISE_RESP_BYTES], want[NOISE_RESP_BYTES];

    label_keypair("server-static", &server);
    label_keypair("server-ephemeral", &eph);
    unhex(VEC_INITIATION, init, sizeof init);
    assert_int_equal(noise_respond(&server, init, &eph, resp, srv), NOISE_OK);
    unhex(VEC_RESPONSE, want, sizeof want);
    assert_memory_equal(resp, want, sizeof want);
}

/* The client side of the vector, through its response. */
static void vector_initiate(struct noise_session *cli)
{
    struct noise_keypair server, machine, eph;
    struct noise_initiator st;
    uint8_t init[NOISE_INIT_BYTES], resp[NOISE_RESP_BYTES];

    label_keypair("server-static", &server);
    label_keypair("client-machine", &machine);
    label_keypair("client-ephemeral", &eph);
    assert_int_equal(noise_initiate(&st, VEC_VERSION, &machine, server.pub, &eph, init), NOISE_OK);
    unhex(VEC_RESPONSE, resp, sizeof resp);
    assert_int_equal(noise_initiator_finish(&st, resp, cli), NOISE_OK);
}

static void vector_response_and_keys_are_exact(void **state)
{
    struct noise_session srv;
    uint8_t want[32];

    (void)state;
    vector_respond(&srv);
    unhex(VEC_FINAL_H, want, sizeof want);
    assert_memory_equal(srv.handshake_hash, want, sizeof want);
    unhex(VEC_K2, want, sizeof want);
    assert_memory_equal(srv.tx_key, want, sizeof want);
    unhex(VEC_K1, want, sizeof want);
    assert_memory_equal(srv.rx_key, want, sizeof want);
    unhex(VEC_MACHINE_PUB, want, sizeof want);
    assert_memory_equal(srv.peer_static, want, sizeof want);
    assert_int_equal(srv.version, VEC_VERSION);
    assert_int_equal(srv.tx_nonce, 0);
    assert_int_equal(srv.rx_nonce, 0);
    noise_session_wipe(&srv);
    memset(want, 0, sizeof want);
    assert_memory_equal(srv.tx_key, want, sizeof want);
}

static void vector_initiator_reaches_the_same_keys(void **state)
{
    struct noise_session cli;
    uint8_t want[32];

    (void)state;
    vector_initiate(&cli);
    unhex(VEC_FINAL_H, want, sizeof want);
    assert_memory_equal(cli.handshake_hash, want, sizeof want);
    unhex(VEC_K1, want, sizeof want);
    assert_memory_equal(cli.tx_key, want, sizeof want);
    unhex(VEC_K2, want, sizeof want);
    assert_memory_equal(cli.rx_key, want, sizeof want);
    unhex(VEC_SERVER_STATIC_PUB, want, sizeof want);
    assert_memory_equal(cli.peer_static, want, sizeof want);
    assert_int_equal(cli.version, VEC_VERSION);
}

static void vector_client_records_are_exact(void **state)
{
    struct noise_session cli, srv;
    struct noise_reader r;
    struct sink *k = calloc(1, sizeof *k);
    uint8_t out[64], want[22];
    size_t out_len = 0;

    (void)state;
    assert_non_null(k);
    vector_initiate(&cli);
    vector_respond(&srv);
    noise_reader_init(&r, &srv);

    assert_int_equal(noise_seal(&cli, (const uint8_t *)"PRI", 3, out, &out_len), NOISE_OK);
    assert_int_equal(out_len, sizeof want);
    unhex(VEC_CLIENT_RECORD0, want, sizeof want);
    assert_memory_equal(out, want, sizeof want);
    assert_int_equal(noise_reader_feed(&r, out, out_len, sink_cb, k), NOISE_OK);

    assert_int_equal(noise_seal(&cli, (const uint8_t *)"PRI", 3, out, &out_len), NOISE_OK);
    unhex(VEC_CLIENT_RECORD1, want, sizeof want);
    assert_memory_equal(out, want, sizeof want);
    assert_int_equal(noise_reader_feed(&r, out, out_len, sink_cb, k), NOISE_OK);

    assert_int_equal(k->calls, 2);
    assert_int_equal(k->len, 6);
    assert_memory_equal(k->data, "PRIPRI", 6);
    assert_int_equal(cli.tx_nonce, 2);
    assert_int_equal(srv.rx_nonce, 2);
    free(k);
}

static void vector_early_payload_record_is_exact(void **state)
{
    static const uint8_t magic[9] = {0xff, 0xff, 0xff, 'T', 'S', 0, 0, 0, 95};
    struct noise_session cli, srv;
    struct noise_reader r;
    struct sink *k = calloc(1, sizeof *k);
    uint8_t plain[9 + 95], out[200], want[3 + 120];
    size_t out_len = 0;

    (void)state;
    assert_non_null(k);
    assert_int_equal(strlen(EARLY_JSON), 95);
    memcpy(plain, magic, sizeof magic);
    memcpy(plain + sizeof magic, EARLY_JSON, 95);
    vector_initiate(&cli);
    vector_respond(&srv);

    assert_int_equal(noise_seal(&srv, plain, sizeof plain, out, &out_len), NOISE_OK);
    assert_int_equal(out_len, sizeof want);
    unhex(VEC_SERVER_RECORD0, want, sizeof want);
    assert_memory_equal(out, want, sizeof want);

    noise_reader_init(&r, &cli);
    assert_int_equal(noise_reader_feed(&r, out, out_len, sink_cb, k), NOISE_OK);
    assert_int_equal(k->len, sizeof plain);
    assert_memory_equal(k->data, plain, sizeof plain);
    free(k);
}

/* A fresh handshake with random keys; the responder's ephemeral is random too. */
static void random_sessions(struct noise_session *cli, struct noise_session *srv)
{
    struct noise_keypair server, machine;
    struct noise_initiator st;
    uint8_t init[NOISE_INIT_BYTES], resp[NOISE_RESP_BYTES];

    assert_int_equal(noise_keypair_generate(&server), NOISE_OK);
    assert_int_equal(noise_keypair_generate(&machine), NOISE_OK);
    assert_int_equal(noise_initiate(&st, 142, &machine, server.pub, NULL, init), NOISE_OK);
    assert_int_equal(init[0], 0);
    assert_int_equal(init[1], 142);
    assert_int_equal(noise_respond(&server, init, NULL, resp, srv), NOISE_OK);
    assert_int_equal(noise_initiator_finish(&st, resp, cli), NOISE_OK);
    assert_memory_equal(cli->handshake_hash, srv->handshake_hash, 32);
    assert_memory_equal(cli->tx_key, srv->rx_key, NOISE_KEY_BYTES);
    assert_memory_equal(cli->rx_key, srv->tx_key, NOISE_KEY_BYTES);
    assert_memory_not_equal(cli->tx_key, cli->rx_key, NOISE_KEY_BYTES);
    assert_memory_equal(srv->peer_static, machine.pub, NOISE_KEY_BYTES);
    assert_memory_equal(cli->peer_static, server.pub, NOISE_KEY_BYTES);
    assert_int_equal(srv->version, 142);
}

/* Feeds stream to a reader on a copy of session (counters from zero) in
 * chunks of the given sizes, cycled; returns the collected plaintext. */
static void feed_in_chunks(const struct noise_session *session, const uint8_t *stream, size_t len,
                           const size_t *chunks, size_t n_chunks, struct sink *k)
{
    struct noise_session s = *session;
    struct noise_reader r;
    size_t pos = 0;

    memset(k, 0, sizeof *k);
    noise_reader_init(&r, &s);
    for (size_t i = 0; pos < len; i++) {
        size_t n = chunks[i % n_chunks];

        if (n > len - pos)
            n = len - pos;
        assert_int_equal(noise_reader_feed(&r, stream + pos, n, sink_cb, k), NOISE_OK);
        pos += n;
    }
    assert_int_equal(r.have, 0);
}

static void round_trip_splits_and_reassembles_records(void **state)
{
    enum { PLAIN = 3 * NOISE_MAX_PLAIN_BYTES + 1234 };
    static const size_t bytewise[] = {1};
    static const size_t odd[] = {7, 13, 4093, 1, 4100, 2, 9000, 3};
    static const size_t whole[] = {SIZE_MAX};
    struct noise_session cli, srv;
    struct sink *k = malloc(sizeof *k);
    uint8_t *plain = malloc(PLAIN);
    uint8_t *sealed = malloc(noise_sealed_size(PLAIN));
    size_t sealed_len = 0;

    (void)state;
    assert_non_null(k);
    assert_non_null(plain);
    assert_non_null(sealed);
    randombytes_buf(plain, PLAIN);
    random_sessions(&cli, &srv);

    assert_int_equal(noise_sealed_size(PLAIN), PLAIN + 4 * (NOISE_HEADER_BYTES + NOISE_TAG_BYTES));
    assert_int_equal(noise_seal(&cli, plain, PLAIN, sealed, &sealed_len), NOISE_OK);
    assert_int_equal(sealed_len, noise_sealed_size(PLAIN));
    assert_int_equal(cli.tx_nonce, 4);
    /* The first record is as large as allowed: 4096 bytes on the wire. */
    assert_int_equal(sealed[0], 0x04);
    assert_int_equal(sealed[1] << 8 | sealed[2], NOISE_MAX_RECORD_BYTES - NOISE_HEADER_BYTES);

    feed_in_chunks(&srv, sealed, sealed_len, bytewise, 1, k);
    assert_int_equal(k->len, PLAIN);
    assert_memory_equal(k->data, plain, PLAIN);
    assert_int_equal(k->calls, 4);
    assert_int_equal(k->sizes[0], NOISE_MAX_PLAIN_BYTES);
    assert_int_equal(k->sizes[3], 1234);

    feed_in_chunks(&srv, sealed, sealed_len, odd, sizeof odd / sizeof odd[0], k);
    assert_int_equal(k->len, PLAIN);
    assert_memory_equal(k->data, plain, PLAIN);

    feed_in_chunks(&srv, sealed, sealed_len, whole, 1, k);
    assert_int_equal(k->len, PLAIN);
    assert_memory_equal(k->data, plain, PLAIN);

    /* And the other direction, with the other key. */
    assert_int_equal(noise_seal(&srv, plain, PLAIN, sealed, &sealed_len), NOISE_OK);
    feed_in_chunks(&cli, sealed, sealed_len, odd, sizeof odd / sizeof odd[0], k);
    assert_int_equal(k->len, PLAIN);
    assert_memory_equal(k->data, plain, PLAIN);
    free(sealed);
    free(plain);
    free(k);
}

static void empty_records_are_delivered_with_length_zero(void **state)
{
    static const size_t bytewise[] = {1};
    struct noise_session cli, srv;
    struct sink *k = malloc(sizeof *k);
    uint8_t sealed[2 * (NOISE_HEADER_BYTES + NOISE_TAG_BYTES) + 2];
    size_t n1 = 0, n2 = 0;

    (void)state;
    assert_non_null(k);
    random_sessions(&cli, &srv);
    assert_int_equal(noise_sealed_size(0), NOISE_HEADER_BYTES + NOISE_TAG_BYTES);
    assert_int_equal(noise_seal(&cli, NULL, 0, sealed, &n1), NOISE_OK);
    assert_int_equal(n1, NOISE_HEADER_BYTES + NOISE_TAG_BYTES);
    assert_memory_equal(sealed, "\x04\x00\x10", 3);
    assert_int_equal(noise_seal(&cli, (const uint8_t *)"hi", 2, sealed + n1, &n2), NOISE_OK);

    feed_in_chunks(&srv, sealed, n1 + n2, bytewise, 1, k);
    assert_int_equal(k->calls, 2);
    assert_int_equal(k->sizes[0], 0);
    assert_int_equal(k->sizes[1], 2);
    assert_memory_equal(k->data, "hi", 2);
    free(k);
}

static void nonce_is_big_endian_and_never_reaches_the_maximum(void **state)
{
    static const uint8_t nonce[12] = {0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8};
    struct noise_session cli, srv;
    uint8_t sealed[64], plain[8];
    uint8_t *big = calloc(1, noise_sealed_size(NOISE_MAX_PLAIN_BYTES + 1));
    size_t n = 0;
    unsigned long long plain_len = 0;

    (void)state;
    assert_non_null(big);
    random_sessions(&cli, &srv);
    cli.tx_nonce = 0x0102030405060708ULL;
    assert_int_equal(noise_seal(&cli, (const uint8_t *)"abc", 3, sealed, &n), NOISE_OK);
    assert_int_equal(crypto_aead_chacha20poly1305_ietf_decrypt(plain, &plain_len, NULL, sealed + 3,
                                                               n - 3, NULL, 0, nonce, srv.rx_key),
                     0);
    assert_int_equal(plain_len, 3);
    assert_memory_equal(plain, "abc", 3);

    /* Two records from 2^64-3 use 2^64-3 and 2^64-2: allowed. */
    cli.tx_nonce = UINT64_MAX - 2;
    assert_int_equal(noise_seal(&cli, NULL, 0, sealed, &n), NOISE_OK);
    assert_int_equal(noise_seal(&cli, NULL, 0, sealed, &n), NOISE_OK);
    assert_true(cli.tx_nonce == UINT64_MAX);
    assert_int_equal(noise_seal(&cli, NULL, 0, sealed, &n), NOISE_EXHAUSTED);

    /* Two records from 2^64-2 would need 2^64-1: refused, nothing used. */
    cli.tx_nonce = UINT64_MAX - 1;
    assert_int_equal(noise_seal(&cli, big, NOISE_MAX_PLAIN_BYTES + 1, big, &n), NOISE_EXHAUSTED);
    assert_true(cli.tx_nonce == UINT64_MAX - 1);
    free(big);
}

static void reader_refuses_a_counter_at_the_maximum(void **state)
{
    struct noise_session cli, srv;
    struct noise_reader r;
    struct sink *k = calloc(1, sizeof *k);
    uint8_t sealed[64];
    size_t n = 0;

    (void)state;
    assert_non_null(k);
    random_sessions(&cli, &srv);
    assert_int_equal(noise_seal(&cli, (const uint8_t *)"x", 1, sealed, &n), NOISE_OK);
    srv.rx_nonce = UINT64_MAX;
    noise_reader_init(&r, &srv);
    assert_int_equal(noise_reader_feed(&r, sealed, n, sink_cb, k), NOISE_EXHAUSTED);
    assert_int_equal(k->calls, 0);
    free(k);
}

/* A reader on a fresh random session, and one valid record of "ok". */
struct reader_case {
    struct noise_session cli, srv;
    struct noise_reader r;
    struct sink k;
    uint8_t good[NOISE_HEADER_BYTES + NOISE_TAG_BYTES + 2];
};

static struct reader_case *reader_case_new(void)
{
    struct reader_case *c = calloc(1, sizeof *c);
    size_t n = 0;

    assert_non_null(c);
    random_sessions(&c->cli, &c->srv);
    noise_reader_init(&c->r, &c->srv);
    assert_int_equal(noise_seal(&c->cli, (const uint8_t *)"ok", 2, c->good, &n), NOISE_OK);
    assert_int_equal(n, sizeof c->good);
    return c;
}

static void reader_errors_are_final(void **state)
{
    struct reader_case *c;
    uint8_t bad[sizeof c->good];

    (void)state;
    /* Wrong type: known from the first byte. */
    c = reader_case_new();
    assert_int_equal(noise_reader_feed(&c->r, (const uint8_t *)"\x02", 1, sink_cb, &c->k),
                     NOISE_MALFORMED);
    assert_int_equal(noise_reader_feed(&c->r, c->good, sizeof c->good, sink_cb, &c->k),
                     NOISE_MALFORMED);
    assert_int_equal(c->k.calls, 0);
    free(c);

    /* Wrong type after a good record in the same slice: the good one is delivered. */
    c = reader_case_new();
    {
        uint8_t two[2 * sizeof c->good];

        memcpy(two, c->good, sizeof c->good);
        memcpy(two + sizeof c->good, c->good, sizeof c->good);
        two[sizeof c->good] = 0x03;
        assert_int_equal(noise_reader_feed(&c->r, two, sizeof two, sink_cb, &c->k),
                         NOISE_MALFORMED);
        assert_int_equal(c->k.calls, 1);
    }
    free(c);

    /* 4093 bytes of ciphertext is the limit; one more is fatal. */
    c = reader_case_new();
    assert_int_equal(noise_reader_feed(&c->r, (const uint8_t *)"\x04\x0f\xfd", 3, sink_cb, &c->k),
                     NOISE_OK);
    free(c);
    c = reader_case_new();
    assert_int_equal(noise_reader_feed(&c->r, (const uint8_t *)"\x04\x0f\xfe", 3, sink_cb, &c->k),
                     NOISE_TOOBIG);
    assert_int_equal(noise_reader_feed(&c->r, c->good, sizeof c->good, sink_cb, &c->k),
                     NOISE_TOOBIG);
    free(c);
    c = reader_case_new();
    assert_int_equal(noise_reader_feed(&c->r, (const uint8_t *)"\x04\xff\xff", 3, sink_cb, &c->k),
                     NOISE_TOOBIG);
    free(c);

    /* A flipped bit anywhere past the header fails authentication, and the
     * good record that follows is refused too. */
    for (size_t i = NOISE_HEADER_BYTES; i < sizeof bad; i++) {
        c = reader_case_new();
        memcpy(bad, c->good, sizeof bad);
        bad[i] ^= 0x20;
        assert_int_equal(noise_reader_feed(&c->r, bad, sizeof bad, sink_cb, &c->k), NOISE_DECRYPT);
        assert_int_equal(noise_reader_feed(&c->r, c->good, sizeof c->good, sink_cb, &c->k),
                         NOISE_DECRYPT);
        assert_int_equal(c->k.calls, 0);
        free(c);
    }

    /* Shorter than a tag: cannot authenticate. */
    c = reader_case_new();
    assert_int_equal(noise_reader_feed(&c->r, (const uint8_t *)"\x04\x00\x0f", 3, sink_cb, &c->k),
                     NOISE_DECRYPT);
    free(c);
}

static void reader_stops_on_the_callbacks_error(void **state)
{
    struct reader_case *c = reader_case_new();
    uint8_t two[2 * sizeof c->good];
    size_t n = 0;

    (void)state;
    memcpy(two, c->good, sizeof c->good);
    assert_int_equal(noise_seal(&c->cli, (const uint8_t *)"no", 2, two + sizeof c->good, &n),
                     NOISE_OK);
    c->k.fail_on_call = 1;
    assert_int_equal(noise_reader_feed(&c->r, two, sizeof two, sink_cb, &c->k), -7);
    assert_int_equal(c->k.calls, 1);
    assert_int_equal(noise_reader_feed(&c->r, two + sizeof c->good, n, sink_cb, &c->k), -7);
    assert_int_equal(c->k.calls, 1);
    free(c);
}

/* Responds to the vector's initiation after edit(init) and returns the code. */
static int respond_to_altered(void (*edit)(uint8_t *init))
{
    struct noise_keypair server;
    struct noise_session srv;
    uint8_t init[NOISE_INIT_BYTES], resp[NOISE_RESP_BYTES];

    label_keypair("server-static", &server);
    unhex(VEC_INITIATION, init, sizeof init);
    edit(init);
    return noise_respond(&server, init, NULL, resp, &srv);
}

static void edit_type(uint8_t *init)
{
    init[2] = 0x02;
}

static void edit_length(uint8_t *init)
{
    init[4] = 0x61;
}

static void edit_version(uint8_t *init)
{
    init[1] = 142;
}

static void edit_ephemeral(uint8_t *init)
{
    init[5] ^= 0x01;
}

static void edit_machine_key(uint8_t *init)
{
    init[40] ^= 0x80;
}

static void edit_machine_tag(uint8_t *init)
{
    init[80] ^= 0x01;
}

static void edit_final_tag(uint8_t *init)
{
    init[100] ^= 0x01;
}

static void edit_zero_ephemeral(uint8_t *init)
{
    memset(init + 5, 0, NOISE_KEY_BYTES);
}

/* u = 1: a point of order 4. */
static void edit_order4_ephemeral(uint8_t *init)
{
    memset(init + 5, 0, NOISE_KEY_BYTES);
    init[5] = 1;
}

static void tampered_initiations_are_refused(void **state)
{
    (void)state;
    assert_int_equal(respond_to_altered(edit_type), NOISE_MALFORMED);
    assert_int_equal(respond_to_altered(edit_length), NOISE_MALFORMED);
    /* The prologue comes from the version bytes: another version, another h. */
    assert_int_equal(respond_to_altered(edit_version), NOISE_DECRYPT);
    assert_int_equal(respond_to_altered(edit_ephemeral), NOISE_DECRYPT);
    assert_int_equal(respond_to_altered(edit_machine_key), NOISE_DECRYPT);
    assert_int_equal(respond_to_altered(edit_machine_tag), NOISE_DECRYPT);
    assert_int_equal(respond_to_altered(edit_final_tag), NOISE_DECRYPT);
}

static void low_order_points_fail_the_handshake(void **state)
{
    struct noise_keypair machine, server;
    struct noise_initiator st;
    struct noise_session cli;
    uint8_t zero[NOISE_KEY_BYTES] = {0};
    uint8_t init[NOISE_INIT_BYTES], resp[NOISE_RESP_BYTES];

    (void)state;
    assert_int_equal(respond_to_altered(edit_zero_ephemeral), NOISE_DECRYPT);
    assert_int_equal(respond_to_altered(edit_order4_ephemeral), NOISE_DECRYPT);

    /* The initiator has no tag to check before its first DH: only the
     * low-order check can fail here. */
    assert_int_equal(noise_keypair_generate(&machine), NOISE_OK);
    assert_int_equal(noise_initiate(&st, 145, &machine, zero, NULL, init), NOISE_DECRYPT);

    /* A response whose ephemeral is zero. */
    assert_int_equal(noise_keypair_generate(&server), NOISE_OK);
    assert_int_equal(noise_initiate(&st, 145, &machine, server.pub, NULL, init), NOISE_OK);
    memcpy(resp, "\x02\x00\x30", 3);
    memset(resp + 3, 0, sizeof resp - 3);
    assert_int_equal(noise_initiator_finish(&st, resp, &cli), NOISE_DECRYPT);
}

static void tampered_responses_are_refused(void **state)
{
    struct noise_keypair server, machine;
    struct noise_initiator st;
    struct noise_session cli, srv;
    uint8_t init[NOISE_INIT_BYTES], resp[NOISE_RESP_BYTES];

    (void)state;
    assert_int_equal(noise_keypair_generate(&server), NOISE_OK);
    assert_int_equal(noise_keypair_generate(&machine), NOISE_OK);
    for (size_t i = 0; i < NOISE_RESP_BYTES; i += 10) {
        assert_int_equal(noise_initiate(&st, 145, &machine, server.pub, NULL, init), NOISE_OK);
        assert_int_equal(noise_respond(&server, init, NULL, resp, &srv), NOISE_OK);
        resp[i] ^= 0x04;
        assert_int_equal(noise_initiator_finish(&st, resp, &cli),
                         i < 3 ? NOISE_MALFORMED : NOISE_DECRYPT);
    }
}

static void key_text_round_trips_and_is_strict(void **state)
{
    uint8_t key[NOISE_KEY_BYTES], out[NOISE_KEY_BYTES];
    char text[NOISE_KEY_TEXT_MAX];

    (void)state;
    unhex(KEY_HEX, key, sizeof key);
    noise_key_format("mkey:", key, text);
    assert_string_equal(text, "mkey:" KEY_HEX);
    assert_int_equal(noise_key_parse("mkey:", text, out), NOISE_OK);
    assert_memory_equal(out, key, sizeof key);

    memset(out, 0, sizeof out);
    assert_int_equal(
        noise_key_parse(
            "nodekey:", "nodekey:000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
            out),
        NOISE_OK);
    assert_memory_equal(out, key, sizeof key);

    assert_int_equal(noise_key_parse("nodekey:", "mkey:" KEY_HEX, out), NOISE_MALFORMED);
    assert_int_equal(noise_key_parse("mkey:", "nodekey:" KEY_HEX, out), NOISE_MALFORMED);
    assert_int_equal(noise_key_parse("mkey:", KEY_HEX, out), NOISE_MALFORMED);
    assert_int_equal(noise_key_parse("mkey:", "MKEY:" KEY_HEX, out), NOISE_MALFORMED);
    assert_int_equal(noise_key_parse("mkey:", "mkey:" KEY_HEX "0", out), NOISE_MALFORMED);
    assert_int_equal(noise_key_parse("mkey:", "mkey:" KEY_HEX "\n", out), NOISE_MALFORMED);
    assert_int_equal(noise_key_parse("mkey:", "mkey:" KEY_HEX " ", out), NOISE_MALFORMED);
    assert_int_equal(
        noise_key_parse(
            "mkey:", "mkey:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1", out),
        NOISE_MALFORMED);
    assert_int_equal(
        noise_key_parse(
            "mkey:", "mkey:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1g", out),
        NOISE_MALFORMED);
    assert_int_equal(
        noise_key_parse(
            "mkey:", "mkey: 00102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", out),
        NOISE_MALFORMED);
    assert_int_equal(noise_key_parse("mkey:", "", out), NOISE_MALFORMED);
    assert_int_equal(noise_key_parse("mkey:", "mkey:", out), NOISE_MALFORMED);
}

/* Writes text to dir/name with the given mode; returns the path in path. */
static void write_text(const char *dir, const char *name, const char *text, mode_t mode, char *path,
                       size_t cap)
{
    FILE *f;

    snprintf(path, cap, "%s/%s", dir, name);
    f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, mode), 0);
}

static void key_file_is_written_once_with_mode_0600(void **state)
{
    struct noise_keypair kp, read_back, other;
    char dir[256], path[512], errmsg[256], text[128];
    struct stat st;
    FILE *f;
    size_t n;

    (void)state;
    assert_int_equal(testdir_make(dir, sizeof dir), 0);
    snprintf(path, sizeof path, "%s/noise.key", dir);
    assert_int_equal(noise_keypair_generate(&kp), NOISE_OK);
    assert_int_equal(noise_key_file_write(path, &kp, errmsg), NOISE_OK);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);

    f = fopen(path, "r");
    assert_non_null(f);
    n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    assert_int_equal(n, 8 + 64 + 1);
    assert_memory_equal(text, "privkey:", 8);
    assert_int_equal(text[72], '\n');

    assert_int_equal(noise_key_file_read(path, &read_back, errmsg), NOISE_OK);
    assert_memory_equal(read_back.priv, kp.priv, NOISE_KEY_BYTES);
    assert_memory_equal(read_back.pub, kp.pub, NOISE_KEY_BYTES);

    /* Never overwritten: the old key is still there. */
    assert_int_equal(noise_keypair_generate(&other), NOISE_OK);
    assert_int_equal(noise_key_file_write(path, &other, errmsg), NOISE_IO);
    assert_non_null(strstr(errmsg, "refusing to overwrite"));
    assert_int_equal(noise_key_file_read(path, &read_back, errmsg), NOISE_OK);
    assert_memory_equal(read_back.priv, kp.priv, NOISE_KEY_BYTES);
    testdir_remove(dir);
}

static void key_file_read_is_strict(void **state)
{
    static const char *const malformed[] = {
        "privkey:" KEY_HEX "\n\n",
        "privkey:" KEY_HEX "x",
        "privkey:" KEY_HEX " ",
        "privkey:" KEY_HEX "00\n",
        "privkey:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e\n",
        "nodekey:" KEY_HEX "\n",
        KEY_HEX "\n",
        "privkey:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1z\n",
        "",
    };
    struct noise_keypair kp, want;
    uint8_t priv[NOISE_KEY_BYTES];
    char dir[256], path[512], errmsg[256];

    (void)state;
    assert_int_equal(testdir_make(dir, sizeof dir), 0);
    unhex(KEY_HEX, priv, sizeof priv);
    assert_int_equal(noise_keypair_from_private(priv, &want), NOISE_OK);

    /* No newline, and uppercase hex, are fine. */
    write_text(dir, "plain", "privkey:" KEY_HEX, 0600, path, sizeof path);
    assert_int_equal(noise_key_file_read(path, &kp, errmsg), NOISE_OK);
    assert_memory_equal(kp.priv, want.priv, NOISE_KEY_BYTES);
    assert_memory_equal(kp.pub, want.pub, NOISE_KEY_BYTES);
    write_text(dir, "upper",
               "privkey:000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F\n", 0400,
               path, sizeof path);
    assert_int_equal(noise_key_file_read(path, &kp, errmsg), NOISE_OK);
    assert_memory_equal(kp.priv, want.priv, NOISE_KEY_BYTES);

    write_text(dir, "shared", "privkey:" KEY_HEX "\n", 0640, path, sizeof path);
    assert_int_equal(noise_key_file_read(path, &kp, errmsg), NOISE_KEYFILE);
    assert_non_null(strstr(errmsg, "0640"));
    write_text(dir, "world", "privkey:" KEY_HEX "\n", 0604, path, sizeof path);
    assert_int_equal(noise_key_file_read(path, &kp, errmsg), NOISE_KEYFILE);

    for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++) {
        char name[16];

        snprintf(name, sizeof name, "bad%zu", i);
        write_text(dir, name, malformed[i], 0600, path, sizeof path);
        errmsg[0] = '\0';
        assert_int_equal(noise_key_file_read(path, &kp, errmsg), NOISE_KEYFILE);
        assert_non_null(strstr(errmsg, path));
    }

    snprintf(path, sizeof path, "%s/missing", dir);
    assert_int_equal(noise_key_file_read(path, &kp, errmsg), NOISE_IO);
    assert_int_equal(noise_key_file_read(dir, &kp, NULL), NOISE_KEYFILE);
    testdir_remove(dir);
}

static void strerror_covers_every_code(void **state)
{
    (void)state;
    assert_string_equal(noise_strerror(NOISE_OK), "ok");
    assert_string_equal(noise_strerror(NOISE_DECRYPT), "Noise authentication failed");
    assert_string_equal(noise_strerror(NOISE_KEYFILE), "invalid key file");
    assert_string_equal(noise_strerror(-1), "unknown error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(vector_keys_come_from_the_labels),
        cmocka_unit_test(vector_initiation_is_exact),
        cmocka_unit_test(vector_response_and_keys_are_exact),
        cmocka_unit_test(vector_initiator_reaches_the_same_keys),
        cmocka_unit_test(vector_client_records_are_exact),
        cmocka_unit_test(vector_early_payload_record_is_exact),
        cmocka_unit_test(round_trip_splits_and_reassembles_records),
        cmocka_unit_test(empty_records_are_delivered_with_length_zero),
        cmocka_unit_test(nonce_is_big_endian_and_never_reaches_the_maximum),
        cmocka_unit_test(reader_refuses_a_counter_at_the_maximum),
        cmocka_unit_test(reader_errors_are_final),
        cmocka_unit_test(reader_stops_on_the_callbacks_error),
        cmocka_unit_test(tampered_initiations_are_refused),
        cmocka_unit_test(low_order_points_fail_the_handshake),
        cmocka_unit_test(tampered_responses_are_refused),
        cmocka_unit_test(key_text_round_trips_and_is_strict),
        cmocka_unit_test(key_file_is_written_once_with_mode_0600),
        cmocka_unit_test(key_file_read_is_strict),
        cmocka_unit_test(strerror_covers_every_code),
    };

    return cmocka_run_group_tests(tests, setup, NULL);
}
