/* server/control/noise.c: the ts2021 Noise IK handshake (both sides), the
 * transport records with their big-endian nonces, key text and the server's
 * key file (tailscale-control-protocol.md, sections 1.1 and 4). */
#include "server/control/noise.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <sys/stat.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <sodium.h>

#define PROTOCOL_NAME   "Noise_IK_25519_ChaChaPoly_BLAKE2s"
#define PROLOGUE_PREFIX "Tailscale Control Protocol v"
#define HASH_BYTES      32
#define NONCE_BYTES     crypto_aead_chacha20poly1305_ietf_NPUBBYTES
#define TYPE_INIT       0x01
#define TYPE_RESP       0x02
#define TYPE_RECORD     0x04
#define INIT_PAYLOAD    (NOISE_INIT_BYTES - 5)
#define RESP_PAYLOAD    (NOISE_RESP_BYTES - 3)
#define KEY_FILE_PREFIX "privkey:"
#define KEY_FILE_TEXT   (sizeof KEY_FILE_PREFIX - 1 + 2 * NOISE_KEY_BYTES)

static_assert(NOISE_TAG_BYTES == crypto_aead_chacha20poly1305_ietf_ABYTES, "Poly1305 tag");
static_assert(NOISE_KEY_BYTES == crypto_scalarmult_BYTES, "X25519 key");
static_assert(NONCE_BYTES == 12, "IETF nonce");
static_assert(NOISE_INIT_BYTES == 5 + NOISE_KEY_BYTES + NOISE_KEY_BYTES + 2 * NOISE_TAG_BYTES,
              "initiation layout");
static_assert(NOISE_RESP_BYTES == 3 + NOISE_KEY_BYTES + NOISE_TAG_BYTES, "response layout");

const char *noise_strerror(int code)
{
    switch (code) {
#define X(c, msg)                                                                                  \
    case c:                                                                                        \
        return msg;
        NOISE_CODES(X)
#undef X
    }
    return "unknown error";
}

/* --- Keys ---------------------------------------------------------------- */

/* priv may be out->priv (noise_keypair_generate). */
int noise_keypair_from_private(const uint8_t priv[NOISE_KEY_BYTES], struct noise_keypair *out)
{
    memmove(out->priv, priv, NOISE_KEY_BYTES);
    if (crypto_scalarmult_base(out->pub, out->priv) != 0)
        return NOISE_CRYPTO;
    return NOISE_OK;
}

int noise_keypair_generate(struct noise_keypair *out)
{
    randombytes_buf(out->priv, sizeof out->priv);
    return noise_keypair_from_private(out->priv, out);
}

void noise_key_format(const char *prefix, const uint8_t key[NOISE_KEY_BYTES],
                      char out[NOISE_KEY_TEXT_MAX])
{
    size_t plen = strlen(prefix);

    assert(plen + 2 * NOISE_KEY_BYTES < NOISE_KEY_TEXT_MAX);
    memcpy(out, prefix, plen);
    sodium_bin2hex(out + plen, NOISE_KEY_TEXT_MAX - plen, key, NOISE_KEY_BYTES);
}

int noise_key_parse(const char *prefix, const char *text, uint8_t out[NOISE_KEY_BYTES])
{
    size_t plen = strlen(prefix);
    size_t bin_len = 0;

    if (strncmp(text, prefix, plen) != 0 || strlen(text + plen) != 2 * NOISE_KEY_BYTES)
        return NOISE_MALFORMED;
    /* sodium_hex2bin accepts both cases and stops at the first non-hex digit,
     * which leaves bin_len short. */
    if (sodium_hex2bin(out, NOISE_KEY_BYTES, text + plen, 2 * NOISE_KEY_BYTES, NULL, &bin_len,
                       NULL) != 0 ||
        bin_len != NOISE_KEY_BYTES)
        return NOISE_MALFORMED;
    return NOISE_OK;
}

__attribute__((format(printf, 2, 3))) static void set_errmsg(char *errmsg, const char *fmt, ...)
{
    va_list ap;

    if (errmsg == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(errmsg, 256, fmt, ap);
    va_end(ap);
}

/* Reads up to cap bytes (a short count only at end of file). */
static ssize_t read_full(int fd, char *buf, size_t cap)
{
    size_t got = 0;

    while (got < cap) {
        ssize_t n = read(fd, buf + got, cap - got);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

/* The file's text, checked: "privkey:<64 hex>" and at most a newline. */
static int key_file_parse(char *buf, ssize_t n, struct noise_keypair *out)
{
    uint8_t priv[NOISE_KEY_BYTES];
    int rv;

    if (n == (ssize_t)KEY_FILE_TEXT + 1 && buf[KEY_FILE_TEXT] == '\n')
        n--;
    if (n != (ssize_t)KEY_FILE_TEXT)
        return NOISE_KEYFILE;
    buf[n] = '\0';
    rv = noise_key_parse(KEY_FILE_PREFIX, buf, priv);
    if (rv == NOISE_OK)
        rv = noise_keypair_from_private(priv, out);
    else
        rv = NOISE_KEYFILE;
    sodium_memzero(priv, sizeof priv);
    return rv;
}

int noise_key_file_read(const char *path, struct noise_keypair *out, char *errmsg)
{
    /* +2: room for the newline and for one byte of trailing garbage. */
    char buf[KEY_FILE_TEXT + 2];
    struct stat st;
    ssize_t n;
    int fd;
    int rv = NOISE_KEYFILE;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        set_errmsg(errmsg, "noise key %s: %s", path, strerror(errno));
        return NOISE_IO;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        set_errmsg(errmsg, "noise key %s: not a regular file", path);
        goto out;
    }
    if ((st.st_mode & 077) != 0) {
        set_errmsg(errmsg, "noise key %s: mode %04o lets group or others read it; chmod 600 it",
                   path, (unsigned)(st.st_mode & 07777));
        goto out;
    }
    n = read_full(fd, buf, sizeof buf);
    if (n < 0) {
        set_errmsg(errmsg, "noise key %s: %s", path, strerror(errno));
        rv = NOISE_IO;
        goto out;
    }
    rv = key_file_parse(buf, n, out);
    if (rv == NOISE_KEYFILE)
        set_errmsg(errmsg,
                   "noise key %s: expected \"" KEY_FILE_PREFIX
                   "\", 64 hex digits and an optional newline",
                   path);
    else if (rv != NOISE_OK)
        set_errmsg(errmsg, "noise key %s: %s", path, noise_strerror(rv));
out:
    sodium_memzero(buf, sizeof buf);
    close(fd);
    return rv;
}

static int write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int noise_key_file_write(const char *path, const struct noise_keypair *kp, char *errmsg)
{
    char text[NOISE_KEY_TEXT_MAX + 1];
    size_t len;
    int fd;
    int rv = NOISE_OK;

    noise_key_format(KEY_FILE_PREFIX, kp->priv, text);
    len = strlen(text);
    text[len++] = '\n';
    /* O_EXCL: the key pins every client to this server (section 9.4), so an
     * existing one is never replaced. */
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        set_errmsg(errmsg, "noise key %s: %s", path,
                   errno == EEXIST ? "exists; refusing to overwrite it" : strerror(errno));
        rv = NOISE_IO;
        goto out;
    }
    /* fchmod: exactly 0600 whatever the umask. */
    if (fchmod(fd, 0600) != 0 || write_all(fd, text, len) != 0 || fsync(fd) != 0) {
        set_errmsg(errmsg, "noise key %s: %s", path, strerror(errno));
        rv = NOISE_IO;
        unlink(path);
    }
    close(fd);
out:
    sodium_memzero(text, sizeof text);
    return rv;
}

/* --- Handshake ----------------------------------------------------------- */

/* Noise's symmetric state; k is the one-shot key of the last MixKey. The
 * OpenSSL contexts live for one handshake message: set up once they cost
 * about one HMAC, while the one-shot HMAC() looks its algorithm up on every
 * call (3x slower, 18 HMACs per handshake). */
struct symmetric {
    uint8_t h[HASH_BYTES];
    uint8_t ck[HASH_BYTES];
    uint8_t k[NOISE_KEY_BYTES];
    EVP_MD *blake2s;
    EVP_MD_CTX *hash;
    EVP_MAC_CTX *hmac;
};

static void symmetric_close(struct symmetric *s)
{
    EVP_MAC_CTX_free(s->hmac);
    EVP_MD_CTX_free(s->hash);
    EVP_MD_free(s->blake2s);
    sodium_memzero(s, sizeof *s);
}

static int symmetric_open(struct symmetric *s)
{
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "BLAKE2S-256", 0),
        OSSL_PARAM_construct_end(),
    };
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);

    memset(s, 0, sizeof *s);
    s->blake2s = EVP_MD_fetch(NULL, "BLAKE2S-256", NULL);
    s->hash = EVP_MD_CTX_new();
    /* The context keeps its own reference to the MAC. */
    s->hmac = mac != NULL ? EVP_MAC_CTX_new(mac) : NULL;
    EVP_MAC_free(mac);
    if (s->blake2s == NULL || s->hash == NULL || s->hmac == NULL ||
        !EVP_MAC_CTX_set_params(s->hmac, params)) {
        symmetric_close(s);
        return NOISE_CRYPTO;
    }
    return NOISE_OK;
}

/* BLAKE2s-256(a || b). */
static int blake2s(struct symmetric *s, const uint8_t *a, size_t alen, const uint8_t *b,
                   size_t blen, uint8_t out[HASH_BYTES])
{
    if (!EVP_DigestInit_ex(s->hash, s->blake2s, NULL) || !EVP_DigestUpdate(s->hash, a, alen) ||
        !EVP_DigestUpdate(s->hash, b, blen) || !EVP_DigestFinal_ex(s->hash, out, NULL))
        return NOISE_CRYPTO;
    return NOISE_OK;
}

/* RFC 2104 HMAC over BLAKE2s-256 (not BLAKE2s's keyed mode). */
static int hmac(struct symmetric *s, const uint8_t key[HASH_BYTES], const uint8_t *data, size_t len,
                uint8_t out[HASH_BYTES])
{
    size_t out_len = 0;

    if (!EVP_MAC_init(s->hmac, key, HASH_BYTES, NULL) || !EVP_MAC_update(s->hmac, data, len) ||
        !EVP_MAC_final(s->hmac, out, &out_len, HASH_BYTES) || out_len != HASH_BYTES)
        return NOISE_CRYPTO;
    return NOISE_OK;
}

/* Noise's HKDF with two outputs: RFC 5869 with salt ck, input ikm, no info. */
static int hkdf(struct symmetric *s, const uint8_t *ikm, size_t ikm_len, uint8_t out1[HASH_BYTES],
                uint8_t out2[HASH_BYTES])
{
    uint8_t t[HASH_BYTES];
    uint8_t in[HASH_BYTES + 1];
    int rv;

    in[0] = 0x01;
    rv = hmac(s, s->ck, ikm, ikm_len, t);
    if (rv == NOISE_OK)
        rv = hmac(s, t, in, 1, out1);
    if (rv == NOISE_OK) {
        memcpy(in, out1, HASH_BYTES);
        in[HASH_BYTES] = 0x02;
        rv = hmac(s, t, in, sizeof in, out2);
    }
    sodium_memzero(t, sizeof t);
    sodium_memzero(in, sizeof in);
    return rv;
}

static int mix_hash(struct symmetric *s, const uint8_t *data, size_t len)
{
    return blake2s(s, s->h, HASH_BYTES, data, len, s->h);
}

/* MixKey(DH(priv, pub)). A low-order peer key makes X25519 all zeros, which
 * libsodium refuses: the handshake fails as if its tag had. */
static int mix_dh(struct symmetric *s, const uint8_t priv[NOISE_KEY_BYTES],
                  const uint8_t pub[NOISE_KEY_BYTES])
{
    uint8_t shared[NOISE_KEY_BYTES];
    int rv;

    if (crypto_scalarmult(shared, priv, pub) != 0) {
        rv = NOISE_DECRYPT;
    } else {
        rv = hkdf(s, shared, sizeof shared, s->ck, s->k);
    }
    sodium_memzero(shared, sizeof shared);
    return rv;
}

static const uint8_t zero_nonce[NONCE_BYTES];

/* EncryptAndHash: the ciphertext (len + tag) goes to out. */
static int encrypt_and_hash(struct symmetric *s, const uint8_t *plain, size_t len, uint8_t *out)
{
    if (crypto_aead_chacha20poly1305_ietf_encrypt(out, NULL, plain, len, s->h, HASH_BYTES, NULL,
                                                  zero_nonce, s->k) != 0)
        return NOISE_CRYPTO;
    return mix_hash(s, out, len + NOISE_TAG_BYTES);
}

/* DecryptAndHash of len bytes of ciphertext (tag included) into plain. */
static int decrypt_and_hash(struct symmetric *s, const uint8_t *cipher, size_t len, uint8_t *plain)
{
    if (crypto_aead_chacha20poly1305_ietf_decrypt(plain, NULL, NULL, cipher, len, s->h, HASH_BYTES,
                                                  zero_nonce, s->k) != 0)
        return NOISE_DECRYPT;
    return mix_hash(s, cipher, len);
}

/* Both sides' start: protocol name, prologue from the version, then the
 * responder's static key (IK's pre-message). */
static int symmetric_init(struct symmetric *s, uint16_t version,
                          const uint8_t server_pub[NOISE_KEY_BYTES])
{
    char prologue[sizeof PROLOGUE_PREFIX + 5];
    int n = snprintf(prologue, sizeof prologue, PROLOGUE_PREFIX "%u", (unsigned)version);
    int rv;

    assert(n > 0 && (size_t)n < sizeof prologue);
    rv = blake2s(s, (const uint8_t *)PROTOCOL_NAME, strlen(PROTOCOL_NAME), NULL, 0, s->h);
    if (rv != NOISE_OK)
        return rv;
    memcpy(s->ck, s->h, HASH_BYTES);
    rv = mix_hash(s, (const uint8_t *)prologue, (size_t)n);
    if (rv == NOISE_OK)
        rv = mix_hash(s, server_pub, NOISE_KEY_BYTES);
    return rv;
}

/* Split into a session; the initiator sends with the first key. */
static int split(struct symmetric *s, bool initiator, struct noise_session *out)
{
    uint8_t k1[NOISE_KEY_BYTES], k2[NOISE_KEY_BYTES];
    int rv = hkdf(s, (const uint8_t *)"", 0, k1, k2);

    if (rv == NOISE_OK) {
        memcpy(out->tx_key, initiator ? k1 : k2, NOISE_KEY_BYTES);
        memcpy(out->rx_key, initiator ? k2 : k1, NOISE_KEY_BYTES);
        memcpy(out->handshake_hash, s->h, HASH_BYTES);
        out->tx_nonce = 0;
        out->rx_nonce = 0;
    }
    sodium_memzero(k1, sizeof k1);
    sodium_memzero(k2, sizeof k2);
    return rv;
}

/* The responder's half of the initiation, header checked: e, es, s, ss. */
static int read_initiation(struct symmetric *s, const struct noise_keypair *server,
                           const uint8_t init[NOISE_INIT_BYTES], uint8_t machine[NOISE_KEY_BYTES])
{
    const uint8_t *e = init + 5;
    int rv;

    rv = symmetric_init(s, (uint16_t)(init[0] << 8 | init[1]), server->pub);
    if (rv == NOISE_OK)
        rv = mix_hash(s, e, NOISE_KEY_BYTES);
    if (rv == NOISE_OK)
        rv = mix_dh(s, server->priv, e);
    if (rv == NOISE_OK)
        rv = decrypt_and_hash(s, init + 37, NOISE_KEY_BYTES + NOISE_TAG_BYTES, machine);
    if (rv == NOISE_OK)
        rv = mix_dh(s, server->priv, machine);
    if (rv == NOISE_OK)
        rv = decrypt_and_hash(s, init + 85, NOISE_TAG_BYTES, NULL);
    return rv;
}

/* The responder's response: e, ee, se. */
static int write_response(struct symmetric *s, const struct noise_keypair *re,
                          const uint8_t client_e[NOISE_KEY_BYTES],
                          const uint8_t machine[NOISE_KEY_BYTES], uint8_t resp[NOISE_RESP_BYTES])
{
    int rv;

    resp[0] = TYPE_RESP;
    resp[1] = 0;
    resp[2] = RESP_PAYLOAD;
    memcpy(resp + 3, re->pub, NOISE_KEY_BYTES);
    rv = mix_hash(s, re->pub, NOISE_KEY_BYTES);
    if (rv == NOISE_OK)
        rv = mix_dh(s, re->priv, client_e);
    if (rv == NOISE_OK)
        rv = mix_dh(s, re->priv, machine);
    if (rv == NOISE_OK)
        rv = encrypt_and_hash(s, NULL, 0, resp + 35);
    return rv;
}

int noise_respond(const struct noise_keypair *server, const uint8_t init[NOISE_INIT_BYTES],
                  const struct noise_keypair *ephemeral, uint8_t resp[NOISE_RESP_BYTES],
                  struct noise_session *out)
{
    struct symmetric s;
    struct noise_keypair re;
    int rv;

    if (init[2] != TYPE_INIT || init[3] != 0 || init[4] != INIT_PAYLOAD)
        return NOISE_MALFORMED;
    rv = symmetric_open(&s);
    if (rv != NOISE_OK)
        return rv;
    rv = read_initiation(&s, server, init, out->peer_static);
    if (rv == NOISE_OK) {
        if (ephemeral != NULL)
            re = *ephemeral;
        else
            rv = noise_keypair_generate(&re);
    }
    if (rv == NOISE_OK)
        rv = write_response(&s, &re, init + 5, out->peer_static, resp);
    if (rv == NOISE_OK)
        rv = split(&s, false, out);
    if (rv == NOISE_OK)
        out->version = (uint16_t)(init[0] << 8 | init[1]);
    symmetric_close(&s);
    sodium_memzero(&re, sizeof re);
    return rv;
}

/* The initiator's e, es, s, ss after the 5-byte header. */
static int write_initiation(struct symmetric *s, const struct noise_initiator *st,
                            uint8_t init[NOISE_INIT_BYTES])
{
    int rv = symmetric_init(s, st->version, st->server_pub);

    memcpy(init + 5, st->ephemeral.pub, NOISE_KEY_BYTES);
    if (rv == NOISE_OK)
        rv = mix_hash(s, st->ephemeral.pub, NOISE_KEY_BYTES);
    if (rv == NOISE_OK)
        rv = mix_dh(s, st->ephemeral.priv, st->server_pub);
    if (rv == NOISE_OK)
        rv = encrypt_and_hash(s, st->machine.pub, NOISE_KEY_BYTES, init + 37);
    if (rv == NOISE_OK)
        rv = mix_dh(s, st->machine.priv, st->server_pub);
    if (rv == NOISE_OK)
        rv = encrypt_and_hash(s, NULL, 0, init + 85);
    return rv;
}

int noise_initiate(struct noise_initiator *st, uint16_t version,
                   const struct noise_keypair *machine, const uint8_t server_pub[NOISE_KEY_BYTES],
                   const struct noise_keypair *ephemeral, uint8_t init[NOISE_INIT_BYTES])
{
    struct symmetric s;
    int rv;

    st->version = version;
    st->machine = *machine;
    memcpy(st->server_pub, server_pub, NOISE_KEY_BYTES);
    if (ephemeral != NULL)
        st->ephemeral = *ephemeral;
    else if ((rv = noise_keypair_generate(&st->ephemeral)) != NOISE_OK)
        return rv;
    init[0] = (uint8_t)(version >> 8);
    init[1] = (uint8_t)version;
    init[2] = TYPE_INIT;
    init[3] = 0;
    init[4] = INIT_PAYLOAD;
    rv = symmetric_open(&s);
    if (rv != NOISE_OK)
        return rv;
    rv = write_initiation(&s, st, init);
    /* k is not kept: the response starts with MixKeys of its own. */
    memcpy(st->h, s.h, HASH_BYTES);
    memcpy(st->ck, s.ck, HASH_BYTES);
    symmetric_close(&s);
    return rv;
}

/* The initiator's half of the response, header checked: e, ee, se. */
static int read_response(struct symmetric *s, const struct noise_initiator *st,
                         const uint8_t resp[NOISE_RESP_BYTES])
{
    const uint8_t *re = resp + 3;
    int rv;

    memcpy(s->h, st->h, HASH_BYTES);
    memcpy(s->ck, st->ck, HASH_BYTES);
    rv = mix_hash(s, re, NOISE_KEY_BYTES);
    if (rv == NOISE_OK)
        rv = mix_dh(s, st->ephemeral.priv, re);
    if (rv == NOISE_OK)
        rv = mix_dh(s, st->machine.priv, re);
    if (rv == NOISE_OK)
        rv = decrypt_and_hash(s, resp + 35, NOISE_TAG_BYTES, NULL);
    return rv;
}

int noise_initiator_finish(struct noise_initiator *st, const uint8_t resp[NOISE_RESP_BYTES],
                           struct noise_session *out)
{
    struct symmetric s;
    int rv;

    if (resp[0] != TYPE_RESP || resp[1] != 0 || resp[2] != RESP_PAYLOAD)
        rv = NOISE_MALFORMED;
    else
        rv = symmetric_open(&s);
    if (rv == NOISE_OK) {
        rv = read_response(&s, st, resp);
        if (rv == NOISE_OK)
            rv = split(&s, true, out);
        symmetric_close(&s);
    }
    if (rv == NOISE_OK) {
        memcpy(out->peer_static, st->server_pub, NOISE_KEY_BYTES);
        out->version = st->version;
    }
    sodium_memzero(st, sizeof *st);
    return rv;
}

/* --- Transport ----------------------------------------------------------- */

/* Tailscale's nonce: 4 zero bytes and the counter big-endian (not Noise's
 * little-endian). */
static void transport_nonce(uint64_t counter, uint8_t nonce[NONCE_BYTES])
{
    memset(nonce, 0, 4);
    for (int i = 0; i < 8; i++)
        nonce[4 + i] = (uint8_t)(counter >> (56 - 8 * i));
}

static size_t record_count(size_t len)
{
    return len == 0 ? 1 : (len + NOISE_MAX_PLAIN_BYTES - 1) / NOISE_MAX_PLAIN_BYTES;
}

size_t noise_sealed_size(size_t len)
{
    return len + record_count(len) * (NOISE_HEADER_BYTES + NOISE_TAG_BYTES);
}

int noise_seal(struct noise_session *s, const uint8_t *plain, size_t len, uint8_t *out,
               size_t *out_len)
{
    size_t records = record_count(len);
    size_t pos = 0;
    uint8_t *p = out;

    /* The last counter used would be tx_nonce + records - 1, which must stay
     * below 2^64-1. */
    if (records > UINT64_MAX - s->tx_nonce)
        return NOISE_EXHAUSTED;
    for (size_t i = 0; i < records; i++) {
        size_t n = len - pos < NOISE_MAX_PLAIN_BYTES ? len - pos : NOISE_MAX_PLAIN_BYTES;
        size_t clen = n + NOISE_TAG_BYTES;
        uint8_t nonce[NONCE_BYTES];

        transport_nonce(s->tx_nonce, nonce);
        p[0] = TYPE_RECORD;
        p[1] = (uint8_t)(clen >> 8);
        p[2] = (uint8_t)clen;
        /* n == 0 only for len == 0, where plain may be NULL. */
        if (crypto_aead_chacha20poly1305_ietf_encrypt(p + NOISE_HEADER_BYTES, NULL,
                                                      n > 0 ? plain + pos : NULL, n, NULL, 0, NULL,
                                                      nonce, s->tx_key) != 0)
            return NOISE_CRYPTO;
        s->tx_nonce++;
        pos += n;
        p += NOISE_HEADER_BYTES + clen;
    }
    *out_len = (size_t)(p - out);
    return NOISE_OK;
}

void noise_reader_init(struct noise_reader *r, struct noise_session *s)
{
    r->session = s;
    r->have = 0;
    r->error = NOISE_OK;
}

/* The record length a header announces, or an error for a bad header. Only
 * as many bytes as are present are judged, so that errors come early. */
static int check_header(const uint8_t *hdr, size_t have, size_t *clen)
{
    if (have >= 1 && hdr[0] != TYPE_RECORD)
        return NOISE_MALFORMED;
    if (have < NOISE_HEADER_BYTES)
        return NOISE_OK;
    *clen = (size_t)hdr[1] << 8 | hdr[2];
    if (*clen > NOISE_MAX_RECORD_BYTES - NOISE_HEADER_BYTES)
        return NOISE_TOOBIG;
    /* Shorter than a tag: it cannot authenticate. */
    if (*clen < NOISE_TAG_BYTES)
        return NOISE_DECRYPT;
    return NOISE_OK;
}

/* Authenticates and decrypts one record's ciphertext into plain and hands
 * the plaintext to cb. plain may be the ciphertext itself: libsodium checks
 * the tag first, then XORs the key stream in place. */
static int open_record(struct noise_reader *r, const uint8_t *cipher, size_t clen, uint8_t *plain,
                       noise_plain_cb cb, void *arg)
{
    struct noise_session *s = r->session;
    uint8_t nonce[NONCE_BYTES];

    if (s->rx_nonce == UINT64_MAX)
        return NOISE_EXHAUSTED;
    transport_nonce(s->rx_nonce, nonce);
    if (crypto_aead_chacha20poly1305_ietf_decrypt(plain, NULL, NULL, cipher, clen, NULL, 0, nonce,
                                                  s->rx_key) != 0)
        return NOISE_DECRYPT;
    s->rx_nonce++;
    return cb(arg, plain, clen - NOISE_TAG_BYTES);
}

/* Moves bytes of data into the partial record in r->buf; opens the record
 * once complete. *used gets the bytes taken. */
static int feed_partial(struct noise_reader *r, const uint8_t *data, size_t len, size_t *used,
                        noise_plain_cb cb, void *arg)
{
    size_t clen = 0;
    size_t want = NOISE_HEADER_BYTES;
    size_t take;
    int rv;

    if (r->have >= NOISE_HEADER_BYTES)
        want += (size_t)r->buf[1] << 8 | r->buf[2];
    take = want - r->have < len ? want - r->have : len;
    memcpy(r->buf + r->have, data, take);
    r->have += take;
    *used = take;
    rv = check_header(r->buf, r->have, &clen);
    if (rv != NOISE_OK || r->have < NOISE_HEADER_BYTES + clen)
        return rv;
    r->have = 0;
    return open_record(r, r->buf + NOISE_HEADER_BYTES, clen, r->buf + NOISE_HEADER_BYTES, cb, arg);
}

/* Whether data starts with a whole, well-formed record. */
static bool whole_record(const uint8_t *data, size_t len, size_t *clen)
{
    return len >= NOISE_HEADER_BYTES && check_header(data, len, clen) == NOISE_OK &&
           len >= NOISE_HEADER_BYTES + *clen;
}

int noise_reader_feed(struct noise_reader *r, const uint8_t *data, size_t len, noise_plain_cb cb,
                      void *arg)
{
    int rv = r->error;

    while (rv == NOISE_OK && len > 0) {
        size_t clen = 0;
        size_t used;

        /* Whole records in the caller's buffer are opened where they are,
         * everything else (and every error) goes through r->buf. */
        if (r->have == 0 && whole_record(data, len, &clen)) {
            rv = open_record(r, data + NOISE_HEADER_BYTES, clen, r->buf, cb, arg);
            used = NOISE_HEADER_BYTES + clen;
        } else {
            rv = feed_partial(r, data, len, &used, cb, arg);
        }
        data += used;
        len -= used;
    }
    r->error = rv;
    return rv;
}

void noise_session_wipe(struct noise_session *s)
{
    sodium_memzero(s, sizeof *s);
}
