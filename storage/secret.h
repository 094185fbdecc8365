/* storage/secret.h: pre-auth and API key secrets. A token is
 * "<kind>-<prefix>-<secret>": a 12-character public prefix used for lookup and
 * a 256-bit random secret, both base64url without padding. Only the BLAKE2b-256
 * hash of the whole token is ever stored; the token is shown once. */
#ifndef CONCORD_STORAGE_SECRET_H
#define CONCORD_STORAGE_SECRET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SECRET_PREFIX_LEN   12
#define SECRET_HASH_BYTES   32
#define SECRET_TOKEN_MAX    96 /* with the terminating NUL */
#define SECRET_KIND_PREAUTH "concord-auth"
#define SECRET_KIND_APIKEY  "concord-api"

/* Makes a new token of the given kind (one of SECRET_KIND_*). Writes the
 * NUL-terminated token, its prefix (SECRET_PREFIX_LEN + 1 bytes) and hash. */
int secret_generate(const char *kind, char token[SECRET_TOKEN_MAX],
                    char prefix[SECRET_PREFIX_LEN + 1], uint8_t hash[SECRET_HASH_BYTES]);

/* Splits a presented token: 0 and the prefix if it has the shape of `kind`,
 * STORE_INVALID otherwise. Does not look anything up. */
int secret_parse_prefix(const char *kind, const char *token, char prefix[SECRET_PREFIX_LEN + 1]);

/* True when token hashes to `hash`; the comparison is constant-time. */
bool secret_verify(const char *token, const uint8_t hash[SECRET_HASH_BYTES]);

#endif
