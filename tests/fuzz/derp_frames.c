/* tests/fuzz/derp_frames.c: arbitrary bytes into a fresh DERP connection
 * once it has sent its server key. The first byte chooses what the rest
 * follows (low two bits) and the slicing (the others):
 *   0: nothing, so the handshake itself is fuzzed;
 *   1: a valid client info of a regular client;
 *   2: a valid client info with the mesh key (mesh frames are allowed);
 *   3: the other end of a mesh link, after that end's server key.
 * A regular client, "b", is connected throughout so that packets have a
 * destination; afterwards it sends a packet to the key 0x11... (which a
 * mesh link may have learnt) and keepalives are sent. Every key pair and
 * nonce is fixed, so the corpus can hold frames that name these keys.
 * Properties: no crash, no leak, and every send is one whole frame of a
 * type the server or a link may send. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "server/derp/derp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MESH_HEX     "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define SEED_SERVER  100 /* the corpus generator uses the same seeds */
#define SEED_B       2
#define SEED_A       1
#define SEED_REMOTE  77
#define REGULAR_INFO "{\"version\":2}"
#define MESH_INFO    "{\"version\":2,\"meshKey\":\"" MESH_HEX "\"}"

static void seed_keypair(uint8_t seed, uint8_t pub[32], uint8_t priv[32])
{
    uint8_t s[crypto_box_SEEDBYTES];

    memset(s, seed, sizeof s);
    if (crypto_box_seed_keypair(pub, priv, s) != 0)
        abort();
}

/* Each send must be one frame: a 5-byte header announcing the rest. */
static int check_send(void *arg, const uint8_t *frame, size_t len)
{
    static const uint8_t types[] = {0x01, 0x02, 0x03, 0x05, 0x06, 0x08, 0x09, 0x0a, 0x10, 0x13};
    uint32_t flen;

    (void)arg;
    if (len < 5 || memchr(types, frame[0], sizeof types) == NULL)
        abort();
    flen = (uint32_t)frame[1] << 24 | (uint32_t)frame[2] << 16 | (uint32_t)frame[3] << 8 | frame[4];
    if (flen != len - 5 || flen > 2 * DERP_KEY_BYTES + DERP_MAX_PACKET_BYTES)
        abort();
    return 0;
}

static void note_close(void *arg, const char *reason)
{
    bool *closed = arg;

    if (reason == NULL || *closed)
        abort();
    *closed = true;
}

static const struct derp_io io = {check_send, note_close};

static bool verify(void *arg, const uint8_t key[DERP_KEY_BYTES])
{
    (void)arg;
    return key[0] != 0xff;
}

/* A client info frame for the key pair of seed, boxed with a zero nonce. */
static size_t client_info(uint8_t seed, const char *json, const uint8_t server_pub[32],
                          uint8_t out[256])
{
    size_t jlen = strlen(json);
    size_t len = 32 + crypto_box_NONCEBYTES + crypto_box_MACBYTES + jlen;
    uint8_t priv[32];

    out[0] = 0x02;
    out[1] = out[2] = 0;
    out[3] = (uint8_t)(len >> 8);
    out[4] = (uint8_t)len;
    seed_keypair(seed, out + 5, priv);
    memset(out + 5 + 32, 0, crypto_box_NONCEBYTES);
    if (crypto_box_easy(out + 5 + 32 + crypto_box_NONCEBYTES, (const uint8_t *)json, jlen,
                        out + 5 + 32, server_pub, priv) != 0)
        abort();
    return 5 + len;
}

struct target {
    struct derp_client *c;
    struct derp_mesh_link *l;
};

static int target_feed(struct target *t, const uint8_t *d, size_t len)
{
    return t->l != NULL ? derp_mesh_link_feed(t->l, d, len) : derp_client_feed(t->c, d, len);
}

/* The mode's preamble; non-zero when the target is already closing. */
static int start(struct derp_server *s, int mode, struct target *t, bool *closed)
{
    uint8_t buf[256], priv[32], spub[32];
    size_t len;

    derp_server_public_key(s, spub);
    if (mode == 3) {
        t->l = derp_mesh_link_new(s, &io, closed, "fuzz");
        if (t->l == NULL)
            abort();
        memcpy(buf,
               "\x01\x00\x00\x00\x28"
               "DERP\xf0\x9f\x94\x91",
               13);
        seed_keypair(SEED_REMOTE, buf + 13, priv);
        return derp_mesh_link_feed(t->l, buf, 45);
    }
    t->c = derp_client_new(s, &io, closed, "192.0.2.1:1000");
    if (t->c == NULL)
        abort();
    if (mode == 0)
        return 0;
    len = client_info(SEED_A, mode == 2 ? MESH_INFO : REGULAR_INFO, spub, buf);
    return derp_client_feed(t->c, buf, len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct derp_options o = {.mesh_key = MESH_HEX, .verify = verify};
    struct derp_server *s;
    struct derp_client *b;
    struct target t = {NULL, NULL};
    bool b_closed = false, t_closed = false;
    uint8_t buf[256], spub[32], pub[32], dst[32];
    size_t step, pos = 1;
    int rv;

    if (size == 0 || sodium_init() < 0)
        return 0;
    seed_keypair(SEED_SERVER, pub, o.private_key);
    if (derp_server_new(&o, &s) != 0)
        abort();
    derp_server_public_key(s, spub);
    b = derp_client_new(s, &io, &b_closed, "[2001:db8::2]:41641");
    if (b == NULL || derp_client_feed(b, buf, client_info(SEED_B, REGULAR_INFO, spub, buf)) != 0)
        abort();
    rv = start(s, data[0] & 3, &t, &t_closed);
    step = (size_t)(data[0] >> 2) + 1;
    while (rv == 0 && pos < size) {
        size_t n = size - pos < step ? size - pos : step;

        rv = target_feed(&t, data + pos, n);
        pos += n;
        step = step * 7 % 61 + 1;
    }
    if ((rv != 0) != t_closed)
        abort();
    memset(dst, 0x11, sizeof dst);
    memcpy(buf, "\x04\x00\x00\x00\x22", 5);
    memcpy(buf + 5, dst, 32);
    memcpy(buf + 37, "hi", 2);
    derp_client_feed(b, buf, 39);
    derp_server_keepalive(s);
    derp_mesh_link_free(t.l);
    derp_client_free(t.c);
    derp_client_free(b);
    derp_server_free(s);
    return 0;
}
