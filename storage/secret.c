/* storage/secret.c: pre-auth and API key tokens. The prefix is public (it
 * is how a presented token finds its record); the secret has 256 bits of
 * entropy, so an unkeyed BLAKE2b-256 of the whole token is enough to store:
 * nobody can search that space, and a stolen database yields no token. */
#include "storage/secret.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "storage/store.h"

#define PREFIX_RAW_BYTES 9  /* 72 bits: exactly SECRET_PREFIX_LEN base64 characters */
#define SECRET_RAW_BYTES 32 /* 256 bits */
#define SECRET_TEXT_LEN  43 /* base64url of 32 bytes, unpadded */
#define B64_VARIANT      sodium_base64_VARIANT_URLSAFE_NO_PADDING

static_assert(SECRET_HASH_BYTES == crypto_generichash_BYTES, "BLAKE2b-256");
static_assert(sodium_base64_ENCODED_LEN(PREFIX_RAW_BYTES, B64_VARIANT) == SECRET_PREFIX_LEN + 1,
              "prefix length");
static_assert(sodium_base64_ENCODED_LEN(SECRET_RAW_BYTES, B64_VARIANT) == SECRET_TEXT_LEN + 1,
              "secret length");

static bool kind_is_known(const char *kind)
{
    return kind != NULL &&
           (strcmp(kind, SECRET_KIND_PREAUTH) == 0 || strcmp(kind, SECRET_KIND_APIKEY) == 0);
}

static bool is_base64url(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

int secret_generate(const char *kind, char token[SECRET_TOKEN_MAX],
                    char prefix[SECRET_PREFIX_LEN + 1], uint8_t hash[SECRET_HASH_BYTES])
{
    uint8_t prefix_raw[PREFIX_RAW_BYTES];
    uint8_t secret_raw[SECRET_RAW_BYTES];
    char secret[SECRET_TEXT_LEN + 1];
    int n;
    int rv = 0;

    if (!kind_is_known(kind))
        return STORE_INVALID;
    if (sodium_init() < 0)
        return STORE_IO;
    randombytes_buf(prefix_raw, sizeof prefix_raw);
    randombytes_buf(secret_raw, sizeof secret_raw);
    sodium_bin2base64(prefix, SECRET_PREFIX_LEN + 1, prefix_raw, sizeof prefix_raw, B64_VARIANT);
    sodium_bin2base64(secret, sizeof secret, secret_raw, sizeof secret_raw, B64_VARIANT);
    n = snprintf(token, SECRET_TOKEN_MAX, "%s-%s-%s", kind, prefix, secret);
    if (n < 0 || n >= SECRET_TOKEN_MAX) {
        rv = STORE_INVALID;
        goto out;
    }
    crypto_generichash(hash, SECRET_HASH_BYTES, (const uint8_t *)token, (size_t)n, NULL, 0);
out:
    sodium_memzero(secret_raw, sizeof secret_raw);
    sodium_memzero(secret, sizeof secret);
    return rv;
}

int secret_parse_prefix(const char *kind, const char *token, char prefix[SECRET_PREFIX_LEN + 1])
{
    size_t klen, want;
    const char *p, *s;

    if (!kind_is_known(kind) || token == NULL)
        return STORE_INVALID;
    klen = strlen(kind);
    want = klen + 1 + SECRET_PREFIX_LEN + 1 + SECRET_TEXT_LEN;
    /* Positions are fixed: the base64url alphabet itself contains '-'. */
    if (strnlen(token, want + 1) != want || memcmp(token, kind, klen) != 0 || token[klen] != '-' ||
        token[klen + 1 + SECRET_PREFIX_LEN] != '-')
        return STORE_INVALID;
    p = token + klen + 1;
    s = p + SECRET_PREFIX_LEN + 1;
    for (size_t i = 0; i < SECRET_PREFIX_LEN; i++) {
        if (!is_base64url(p[i]))
            return STORE_INVALID;
    }
    for (size_t i = 0; i < SECRET_TEXT_LEN; i++) {
        if (!is_base64url(s[i]))
            return STORE_INVALID;
    }
    memcpy(prefix, p, SECRET_PREFIX_LEN);
    prefix[SECRET_PREFIX_LEN] = '\0';
    return 0;
}

bool secret_verify(const char *token, const uint8_t hash[SECRET_HASH_BYTES])
{
    uint8_t computed[SECRET_HASH_BYTES];
    size_t n;
    bool is_match;

    if (token == NULL || hash == NULL)
        return false;
    n = strnlen(token, SECRET_TOKEN_MAX);
    if (n == 0 || n >= SECRET_TOKEN_MAX)
        return false;
    if (sodium_init() < 0)
        return false;
    crypto_generichash(computed, sizeof computed, (const uint8_t *)token, n, NULL, 0);
    is_match = sodium_memcmp(computed, hash, sizeof computed) == 0;
    sodium_memzero(computed, sizeof computed);
    return is_match;
}
