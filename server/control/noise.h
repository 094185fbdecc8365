/* server/control/noise.h: the Noise IK channel Tailscale clients open to the
 * control server ("ts2021"): Noise_IK_25519_ChaChaPoly_BLAKE2s with the
 * prologue "Tailscale Control Protocol v<version>", Tailscale's framing and
 * its big-endian transport nonces (tailscale-control-protocol.md, section 4),
 * plus the server's static key file.
 *
 * Pure computation: no I/O except the key file functions, nothing for the
 * caller to free (a handshake's OpenSSL contexts live for one call).
 * X25519 and ChaCha20-Poly1305 come from libsodium, BLAKE2s-256 and its HMAC
 * from OpenSSL 3. Callers must have called sodium_init(). */
#ifndef CONCORD_SERVER_CONTROL_NOISE_H
#define CONCORD_SERVER_CONTROL_NOISE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NOISE_KEY_BYTES        32
#define NOISE_INIT_BYTES       101 /* initiation message, header included */
#define NOISE_RESP_BYTES       51  /* response message, header included */
#define NOISE_HEADER_BYTES     3   /* transport record: type, u16 BE length */
#define NOISE_TAG_BYTES        16
#define NOISE_MAX_RECORD_BYTES 4096 /* header included: larger is a fatal error */
#define NOISE_MAX_PLAIN_BYTES  (NOISE_MAX_RECORD_BYTES - NOISE_HEADER_BYTES - NOISE_TAG_BYTES)
#define NOISE_KEY_TEXT_MAX     80 /* "privkey:" or "nodekey:" + 64 hex + NUL, with room */

#define NOISE_CODES(X)                                                                             \
    X(NOISE_OK, "ok")                                                                              \
    X(NOISE_MALFORMED, "malformed Noise message")                                                  \
    X(NOISE_DECRYPT, "Noise authentication failed")                                                \
    X(NOISE_TOOBIG, "Noise record too large")                                                      \
    X(NOISE_EXHAUSTED, "Noise nonce space exhausted")                                              \
    X(NOISE_CRYPTO, "cryptographic library failure")                                               \
    X(NOISE_IO, "key file I/O error")                                                              \
    X(NOISE_KEYFILE, "invalid key file")

enum noise_code {
#define X(code, msg) code,
    NOISE_CODES(X)
#undef X
};
const char *noise_strerror(int code);

struct noise_keypair {
    uint8_t priv[NOISE_KEY_BYTES];
    uint8_t pub[NOISE_KEY_BYTES];
};

/* A fresh random X25519 key pair. */
int noise_keypair_generate(struct noise_keypair *out);
/* The key pair of a given private key (X25519 clamps internally). */
int noise_keypair_from_private(const uint8_t priv[NOISE_KEY_BYTES], struct noise_keypair *out);

/* Key text: `prefix` + 64 lowercase hex digits ("mkey:", "nodekey:",
 * "discokey:", "privkey:", ...). format writes NUL-terminated text into out
 * (NOISE_KEY_TEXT_MAX bytes). parse accepts upper- or lowercase hex, requires
 * the exact prefix and length and nothing after; NOISE_MALFORMED otherwise. */
void noise_key_format(const char *prefix, const uint8_t key[NOISE_KEY_BYTES],
                      char out[NOISE_KEY_TEXT_MAX]);
int noise_key_parse(const char *prefix, const char *text, uint8_t out[NOISE_KEY_BYTES]);

/* The server key file, Headscale's format: "privkey:<64 hex>" and an optional
 * trailing newline. read: NOISE_KEYFILE (with errmsg, 256 bytes) if the file
 * is malformed or readable by group or others (mode & 077); NOISE_IO if it
 * cannot be read. write: creates `path` exclusively (an existing file is an
 * error, never overwritten) with mode 0600. */
int noise_key_file_read(const char *path, struct noise_keypair *out, char *errmsg);
int noise_key_file_write(const char *path, const struct noise_keypair *kp, char *errmsg);

/* One direction-keyed transport session, the result of a handshake. */
struct noise_session {
    uint8_t tx_key[NOISE_KEY_BYTES]; /* server: k2, initiator: k1 */
    uint8_t rx_key[NOISE_KEY_BYTES];
    uint64_t tx_nonce; /* next counter to use; 2^64-1 is never used */
    uint64_t rx_nonce;
    uint8_t peer_static[NOISE_KEY_BYTES]; /* server: the client's machine key */
    uint8_t handshake_hash[32];
    uint16_t version; /* the protocol version from the initiation (client capver) */
};

/* Responder. `init` is the 101-byte initiation (as carried base64-encoded in
 * X-Tailscale-Handshake): checks the header (type 1, length 96), builds the
 * prologue from its version, decrypts and authenticates the client's machine
 * key, and writes the 51-byte response into resp. `ephemeral` is NULL in
 * production (a fresh key is generated); tests pass a fixed one.
 * NOISE_MALFORMED for a bad header, NOISE_DECRYPT for a failed tag or a
 * low-order point. On error *out and resp are unspecified and must not be used. */
int noise_respond(const struct noise_keypair *server, const uint8_t init[NOISE_INIT_BYTES],
                  const struct noise_keypair *ephemeral, uint8_t resp[NOISE_RESP_BYTES],
                  struct noise_session *out);

/* Initiator, for tests and benchmarks (the client side of the same
 * handshake). start writes the initiation; finish consumes the response and
 * yields the client's session, and wipes *st either way. `ephemeral` NULL:
 * random. */
struct noise_initiator {
    uint8_t h[32];
    uint8_t ck[32];
    struct noise_keypair machine;
    struct noise_keypair ephemeral;
    uint8_t server_pub[NOISE_KEY_BYTES];
    uint16_t version;
};
int noise_initiate(struct noise_initiator *st, uint16_t version,
                   const struct noise_keypair *machine, const uint8_t server_pub[NOISE_KEY_BYTES],
                   const struct noise_keypair *ephemeral, uint8_t init[NOISE_INIT_BYTES]);
int noise_initiator_finish(struct noise_initiator *st, const uint8_t resp[NOISE_RESP_BYTES],
                           struct noise_session *out);

/* Transport. seal: encrypts `len` bytes (any length, 0 included) into
 * ceil(len / NOISE_MAX_PLAIN_BYTES) records (one empty record for len 0)
 * written to out, which must hold noise_sealed_size(len) bytes; *out_len gets
 * the bytes written. NOISE_EXHAUSTED if the counter would reach 2^64-1. */
size_t noise_sealed_size(size_t len);
int noise_seal(struct noise_session *s, const uint8_t *plain, size_t len, uint8_t *out,
               size_t *out_len);

/* Incremental reader of the peer's records: feed it any slice of the byte
 * stream; every complete record is authenticated and decrypted in order and
 * its plaintext (possibly empty: skip it) handed to cb, borrowed for the
 * call. A partial record is kept (up to NOISE_MAX_RECORD_BYTES) for the next
 * call. Errors are final for the connection: NOISE_MALFORMED (a type other
 * than 4), NOISE_TOOBIG (announced length past the limit), NOISE_DECRYPT,
 * or cb's own non-zero return, which stops the reader and is returned. */
typedef int (*noise_plain_cb)(void *arg, const uint8_t *plain, size_t len);
struct noise_reader {
    struct noise_session *session;
    uint8_t buf[NOISE_MAX_RECORD_BYTES];
    size_t have;
    int error; /* the first error, returned again by every later feed */
};
void noise_reader_init(struct noise_reader *r, struct noise_session *s);
int noise_reader_feed(struct noise_reader *r, const uint8_t *data, size_t len, noise_plain_cb cb,
                      void *arg);

/* Wipes keys (sodium_memzero). */
void noise_session_wipe(struct noise_session *s);

#endif
