/* tests/unit/storage/test_secret.c: token generation, shape checks and
 * verification. */
#include "tests/unit/storage/storage_tests.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "storage/secret.h"

static void generated_token_has_the_documented_shape(void **state)
{
    char token[SECRET_TOKEN_MAX], prefix[SECRET_PREFIX_LEN + 1], parsed[SECRET_PREFIX_LEN + 1];
    uint8_t hash[SECRET_HASH_BYTES];

    (void)state;
    assert_int_equal(secret_generate(SECRET_KIND_PREAUTH, token, prefix, hash), 0);
    assert_int_equal(strlen(prefix), SECRET_PREFIX_LEN);
    assert_int_equal(strlen(token), strlen(SECRET_KIND_PREAUTH) + 1 + 12 + 1 + 43);
    assert_int_equal(strncmp(token, SECRET_KIND_PREAUTH "-", strlen(SECRET_KIND_PREAUTH) + 1), 0);
    assert_memory_equal(token + strlen(SECRET_KIND_PREAUTH) + 1, prefix, SECRET_PREFIX_LEN);
    assert_int_equal(secret_parse_prefix(SECRET_KIND_PREAUTH, token, parsed), 0);
    assert_string_equal(parsed, prefix);

    assert_int_equal(secret_generate(SECRET_KIND_APIKEY, token, prefix, hash), 0);
    assert_int_equal(secret_parse_prefix(SECRET_KIND_APIKEY, token, parsed), 0);
    assert_string_equal(parsed, prefix);
}

static void generate_refuses_an_unknown_kind(void **state)
{
    char token[SECRET_TOKEN_MAX], prefix[SECRET_PREFIX_LEN + 1];
    uint8_t hash[SECRET_HASH_BYTES];

    (void)state;
    assert_int_equal(secret_generate("concord-other", token, prefix, hash), STORE_INVALID);
    assert_int_equal(secret_generate(NULL, token, prefix, hash), STORE_INVALID);
}

static void two_tokens_never_share_prefix_secret_or_hash(void **state)
{
    char t1[SECRET_TOKEN_MAX], t2[SECRET_TOKEN_MAX];
    char p1[SECRET_PREFIX_LEN + 1], p2[SECRET_PREFIX_LEN + 1];
    uint8_t h1[SECRET_HASH_BYTES], h2[SECRET_HASH_BYTES];

    (void)state;
    assert_int_equal(secret_generate(SECRET_KIND_APIKEY, t1, p1, h1), 0);
    assert_int_equal(secret_generate(SECRET_KIND_APIKEY, t2, p2, h2), 0);
    assert_string_not_equal(p1, p2);
    assert_string_not_equal(t1 + 26, t2 + 26);
    assert_memory_not_equal(h1, h2, SECRET_HASH_BYTES);
}

static void verify_accepts_only_the_exact_token(void **state)
{
    char token[SECRET_TOKEN_MAX], other[SECRET_TOKEN_MAX], prefix[SECRET_PREFIX_LEN + 1];
    uint8_t hash[SECRET_HASH_BYTES], other_hash[SECRET_HASH_BYTES];
    size_t len;

    (void)state;
    assert_int_equal(secret_generate(SECRET_KIND_PREAUTH, token, prefix, hash), 0);
    assert_true(secret_verify(token, hash));

    assert_int_equal(secret_generate(SECRET_KIND_PREAUTH, other, prefix, other_hash), 0);
    assert_false(secret_verify(other, hash));
    len = strlen(token);
    memcpy(other, token, len + 1);
    other[len - 1] = other[len - 1] == 'A' ? 'B' : 'A';
    assert_false(secret_verify(other, hash));
    other[len - 1] = '\0';
    assert_false(secret_verify(other, hash));
    assert_false(secret_verify("", hash));
    assert_false(secret_verify(NULL, hash));
}

static void parse_refuses_the_other_kind(void **state)
{
    char token[SECRET_TOKEN_MAX], prefix[SECRET_PREFIX_LEN + 1];
    uint8_t hash[SECRET_HASH_BYTES];

    (void)state;
    assert_int_equal(secret_generate(SECRET_KIND_PREAUTH, token, prefix, hash), 0);
    assert_int_equal(secret_parse_prefix(SECRET_KIND_APIKEY, token, prefix), STORE_INVALID);
    assert_int_equal(secret_generate(SECRET_KIND_APIKEY, token, prefix, hash), 0);
    assert_int_equal(secret_parse_prefix(SECRET_KIND_PREAUTH, token, prefix), STORE_INVALID);
}

static void parse_refuses_malformed_shapes(void **state)
{
    const char *good = "concord-auth-AAAAbbbb-_09-"
                       "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";
    char bad[SECRET_TOKEN_MAX * 2];
    char prefix[SECRET_PREFIX_LEN + 1];
    size_t len = strlen(good);
    const char *cases[] = {
        "",
        "concord-auth",
        "concord-auth-",
        "concord-auth-AAAAbbbb-_09-0123456789abcdefghijklmnopqrstuvwxyzABCDEF",   /* short */
        "concord-auth-AAAAbbbb-_09-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH", /* long */
        "concord-auth-AAAAbbbb-_0-90123456789abcdefghijklmnopqrstuvwxyzABCDEFG",  /* dash moved */
        "concord-auth_AAAAbbbb-_09-0123456789abcdefghijklmnopqrstuvwxyzABCDEFG",
        "concord-auth-AAAAbbbb+_09-0123456789abcdefghijklmnopqrstuvwxyzABCDEFG", /* '+' */
        "concord-auth-AAAAbbbb-_09-0123456789abcdefghijklmnopqrstuvwxyzABCDEF=", /* padding */
        "Concord-auth-AAAAbbbb-_09-0123456789abcdefghijklmnopqrstuvwxyzABCDEFG",
        " concord-auth-AAAAbbbb-_09-0123456789abcdefghijklmnopqrstuvwxyzABCDEFG",
    };

    (void)state;
    assert_int_equal(secret_parse_prefix(SECRET_KIND_PREAUTH, good, prefix), 0);
    assert_string_equal(prefix, "AAAAbbbb-_09");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (secret_parse_prefix(SECRET_KIND_PREAUTH, cases[i], prefix) != STORE_INVALID)
            fail_msg("accepted \"%s\"", cases[i]);
    }
    /* Bytes outside the alphabet, anywhere after the kind. */
    for (size_t at = strlen(SECRET_KIND_PREAUTH) + 1; at < len; at++) {
        if (at == strlen(SECRET_KIND_PREAUTH) + 1 + SECRET_PREFIX_LEN)
            continue;
        memcpy(bad, good, len + 1);
        bad[at] = (char)0xc3;
        assert_int_equal(secret_parse_prefix(SECRET_KIND_PREAUTH, bad, prefix), STORE_INVALID);
    }
    assert_int_equal(secret_parse_prefix(SECRET_KIND_PREAUTH, NULL, prefix), STORE_INVALID);
    assert_int_equal(secret_parse_prefix("concord", good, prefix), STORE_INVALID);
}

int test_secret_run(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(generated_token_has_the_documented_shape),
        cmocka_unit_test(generate_refuses_an_unknown_kind),
        cmocka_unit_test(two_tokens_never_share_prefix_secret_or_hash),
        cmocka_unit_test(verify_accepts_only_the_exact_token),
        cmocka_unit_test(parse_refuses_the_other_kind),
        cmocka_unit_test(parse_refuses_malformed_shapes),
    };

    return cmocka_run_group_tests_name("secret", tests, NULL, NULL);
}
