/* tests/fuzz/noise_reader.c: arbitrary bytes into the Noise transport record
 * reader, keyed with k1 of the Appendix A test vector (so the corpus can hold
 * records that authenticate). The input is fed twice: in pieces whose sizes
 * come from the input, and whole; both must deliver the same plaintext and
 * end with the same code. The input is then also sealed as plaintext and read
 * back in pieces, which must reproduce it exactly. Properties: no crash, no
 * leak, only the documented codes, errors are final, records within limits. */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "server/control/noise.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* k1 (client -> server) of tailscale-control-protocol.md Appendix A. */
static const uint8_t vector_k1[NOISE_KEY_BYTES] = {
    0x64, 0x5b, 0xdd, 0x18, 0xb2, 0x20, 0xba, 0x61, 0xf6, 0x5b, 0x62, 0x93, 0x6a, 0x20, 0xcf, 0x6c,
    0x6d, 0x96, 0x1a, 0x28, 0xb3, 0xf9, 0xe4, 0x71, 0x2c, 0x2e, 0xb1, 0xdd, 0xc6, 0x37, 0x8d, 0x48,
};

/* The plaintext a reader delivered, in order. */
struct collect {
    uint8_t *buf;
    size_t len;
    size_t cap;
    uint64_t records;
};

static int collect_cb(void *arg, const uint8_t *plain, size_t len)
{
    struct collect *c = arg;

    if (len > NOISE_MAX_PLAIN_BYTES || len > c->cap - c->len)
        abort();
    if (len > 0)
        memcpy(c->buf + c->len, plain, len);
    c->len += len;
    c->records++;
    return 0;
}

static void session_init(struct noise_session *s)
{
    memset(s, 0, sizeof *s);
    memcpy(s->tx_key, vector_k1, NOISE_KEY_BYTES);
    memcpy(s->rx_key, vector_k1, NOISE_KEY_BYTES);
}

/* Feeds stream in pieces of step, 3*step%29+1, ... bytes (step SIZE_MAX:
 * whole) and returns the reader's final code. */
static int read_stream(const uint8_t *stream, size_t len, size_t step, struct collect *c)
{
    struct noise_session s;
    struct noise_reader r;
    size_t pos = 0;
    int rv = NOISE_OK;

    session_init(&s);
    noise_reader_init(&r, &s);
    while (pos < len && rv == NOISE_OK) {
        size_t n = len - pos < step ? len - pos : step;

        rv = noise_reader_feed(&r, stream + pos, n, collect_cb, c);
        pos += n;
        if (step != SIZE_MAX)
            step = step * 3 % 29 + 1;
        if (r.have > NOISE_MAX_RECORD_BYTES || s.rx_nonce != c->records)
            abort();
    }
    if (rv != NOISE_OK && rv != NOISE_MALFORMED && rv != NOISE_TOOBIG && rv != NOISE_DECRYPT)
        abort();
    /* Errors are final, even for bytes that would be a valid record. */
    if (rv != NOISE_OK && noise_reader_feed(&r, stream, len, collect_cb, c) != rv)
        abort();
    return rv;
}

static void check_raw(const uint8_t *data, size_t size, struct collect *pieces,
                      struct collect *whole)
{
    size_t step = size > 0 ? (size_t)data[0] % 17 + 1 : 1;
    int rv_pieces = read_stream(data, size, step, pieces);
    int rv_whole = read_stream(data, size, SIZE_MAX, whole);

    if (rv_pieces != rv_whole || pieces->len != whole->len || pieces->records != whole->records ||
        (pieces->len > 0 && memcmp(pieces->buf, whole->buf, pieces->len) != 0))
        abort();
}

static void check_round_trip(const uint8_t *data, size_t size, struct collect *c)
{
    struct noise_session s;
    size_t sealed_len = 0;
    uint8_t *sealed = malloc(noise_sealed_size(size));

    if (sealed == NULL)
        return;
    session_init(&s);
    if (noise_seal(&s, data, size, sealed, &sealed_len) != NOISE_OK ||
        sealed_len != noise_sealed_size(size) ||
        read_stream(sealed, sealed_len, size > 0 ? data[size - 1] % 31 + 1 : 1, c) != NOISE_OK ||
        c->len != size || c->records != s.tx_nonce || (size > 0 && memcmp(c->buf, data, size) != 0))
        abort();
    free(sealed);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* +1: a valid pointer for empty input. Plaintext never exceeds input. */
    uint8_t *bufs = malloc(3 * size + 3);
    struct collect pieces = {.buf = bufs, .cap = size};
    struct collect whole = {.buf = bufs + size + 1, .cap = size};
    struct collect round = {.buf = bufs + 2 * size + 2, .cap = size};

    if (bufs == NULL || sodium_init() < 0) {
        free(bufs);
        return 0;
    }
    check_raw(data, size, &pieces, &whole);
    check_round_trip(data, size, &round);
    free(bufs);
    return 0;
}
