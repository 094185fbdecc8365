/* tests/unit/server/test_admin_hujson.c: the HuJSON policy checker: what it
 * accepts beyond JSON (comments, trailing commas), and that every refusal
 * points at the right line and column. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "server/admin/hujson.h"

static int check(const char *text, struct admin_hujson_error *err)
{
    memset(err, 0, sizeof *err);
    return admin_hujson_check(text, strlen(text), err);
}

static void assert_valid(const char *text)
{
    struct admin_hujson_error err;

    if (check(text, &err) != 0)
        fail_msg("refused %s: %u:%u %s", text, err.line, err.col, err.message);
}

static void assert_error_at(const char *text, unsigned line, unsigned col, const char *fragment)
{
    struct admin_hujson_error err;

    assert_int_equal(check(text, &err), -1);
    if (err.line != line || err.col != col || strstr(err.message, fragment) == NULL)
        fail_msg("%s: got %u:%u \"%s\", want %u:%u \"...%s...\"", text, err.line, err.col,
                 err.message, line, col, fragment);
}

static void hujson_accepts_plain_json(void **state)
{
    (void)state;
    assert_valid("{\"acls\":[{\"action\":\"accept\",\"src\":[\"*\"],\"dst\":[\"*:*\"]}]}");
    assert_valid("[1, -0, 0.5, -12.5e+3, 1E9, true, false, null, \"\\u00e9\\n\\\"\"]");
    assert_valid("  \"a string\"  ");
    assert_valid("42");
    assert_valid("{}");
    assert_valid("\"caf\xc3\xa9 \xf0\x9f\x98\x80\"");
}

static void hujson_accepts_comments_and_trailing_commas(void **state)
{
    (void)state;
    assert_valid("// leading comment\n{\n  \"a\": 1, // after a member\n  /* block\n spanning "
                 "lines */ \"b\": [1, 2, 3,],\n}\n// trailing comment");
    assert_valid("[/* inside */ 1 /* between */, 2,]");
    assert_valid("{\"a\":1,}");
    assert_valid("/**/ null /***/");
    assert_valid("{\"url\": \"http://not-a-comment\"}");
}

static void hujson_rejects_empty_and_trailing_data(void **state)
{
    (void)state;
    assert_error_at("", 1, 1, "empty document");
    assert_error_at("  // only a comment\n", 2, 1, "empty document");
    assert_error_at("{} {}", 1, 4, "after the top-level value");
    assert_error_at("[1] x", 1, 5, "after the top-level value");
}

static void hujson_rejects_misplaced_commas(void **state)
{
    (void)state;
    assert_error_at("[,]", 1, 2, "expected a value");
    assert_error_at("[1,,2]", 1, 4, "expected a value");
    assert_error_at("{\"a\": 1,,}", 1, 9, "quoted member name");
    assert_error_at("{,}", 1, 2, "quoted member name");
    assert_error_at("[1 2]", 1, 4, "expected ',' or ']'");
}

static void hujson_reports_line_and_column(void **state)
{
    (void)state;
    assert_error_at("{\n  \"a\": 1,\n  \"b\": tru\n}", 3, 8, "expected a value");
    assert_error_at("{\n  \"a\": 1\n  \"b\": 2\n}", 3, 3, "',' or '}'");
    /* Columns count characters, not bytes: "é" is two bytes, one column. */
    assert_error_at("[\"\xc3\xa9\", x]", 1, 7, "expected a value");
}

static void hujson_rejects_bad_strings(void **state)
{
    (void)state;
    assert_error_at("[\"abc", 1, 2, "unterminated string");
    assert_error_at("[\n\"ab\ncd\"]", 2, 1, "unterminated string");
    assert_error_at("\"a\\qb\"", 1, 3, "invalid escape");
    assert_error_at("\"\\u12G4\"", 1, 2, "\\u escape");
    assert_error_at("\"tab\there\"", 1, 5, "control character");
    assert_error_at("\"\xc3\x28\"", 1, 2, "invalid UTF-8");
    assert_error_at("\"\xed\xa0\x80\"", 1, 2, "invalid UTF-8"); /* a UTF-16 surrogate */
    assert_error_at("\"\xc0\xaf\"", 1, 2, "invalid UTF-8");     /* overlong '/' */
    assert_error_at("{'single': 1}", 1, 2, "quoted member name");
    assert_error_at("{key: 1}", 1, 2, "quoted member name");
}

static void hujson_rejects_bad_numbers_and_words(void **state)
{
    (void)state;
    assert_error_at("[01]", 1, 3, "leading zero");
    assert_error_at("[1.]", 1, 4, "decimal point");
    assert_error_at("[1e]", 1, 4, "exponent");
    assert_error_at("[-]", 1, 3, "digit");
    assert_error_at("[+1]", 1, 2, "expected a value");
    assert_error_at("[NaN]", 1, 2, "expected a value");
    assert_error_at("[True]", 1, 2, "expected a value");
    assert_error_at("[nul]", 1, 2, "expected a value");
}

static void hujson_rejects_bad_comments(void **state)
{
    (void)state;
    assert_error_at("[1] /* open", 1, 5, "unterminated /* comment");
    assert_error_at("{\n  /* open\n\n", 2, 3, "unterminated /* comment");
    assert_error_at("[1] / 2", 1, 5, "comments start with");
    assert_error_at("# hash comment\n{}", 1, 1, "expected a value");
}

static void hujson_rejects_unterminated_containers_at_their_opening(void **state)
{
    (void)state;
    assert_error_at("{\n  \"a\": [1,\n  2", 2, 8, "unterminated array");
    assert_error_at("\n\n  {\"a\": 1,", 3, 3, "unterminated object");
}

static void hujson_limits_nesting_depth(void **state)
{
    char deep[2 * ADMIN_HUJSON_MAX_DEPTH + 8];
    size_t n = 0;

    (void)state;
    for (int i = 0; i < ADMIN_HUJSON_MAX_DEPTH; i++)
        deep[n++] = '[';
    for (int i = 0; i < ADMIN_HUJSON_MAX_DEPTH; i++)
        deep[n++] = ']';
    deep[n] = '\0';
    assert_valid(deep);

    n = 0;
    for (int i = 0; i <= ADMIN_HUJSON_MAX_DEPTH; i++)
        deep[n++] = '[';
    deep[n] = '\0';
    assert_error_at(deep, 1, ADMIN_HUJSON_MAX_DEPTH + 1, "nesting deeper");
}

static void hujson_stops_at_the_given_length(void **state)
{
    struct admin_hujson_error err;
    const char text[] = "[1, 2]garbage";

    (void)state;
    assert_int_equal(admin_hujson_check(text, 6, &err), 0);
    assert_int_equal(admin_hujson_check("[1]\0[", 5, &err), -1);
    assert_int_equal(admin_hujson_check("\"a\0b\"", 5, &err), -1);
    assert_non_null(strstr(err.message, "control character"));
    assert_int_equal(admin_hujson_check("[1,", 3, NULL), -1); /* no error struct is fine */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hujson_accepts_plain_json),
        cmocka_unit_test(hujson_accepts_comments_and_trailing_commas),
        cmocka_unit_test(hujson_rejects_empty_and_trailing_data),
        cmocka_unit_test(hujson_rejects_misplaced_commas),
        cmocka_unit_test(hujson_reports_line_and_column),
        cmocka_unit_test(hujson_rejects_bad_strings),
        cmocka_unit_test(hujson_rejects_bad_numbers_and_words),
        cmocka_unit_test(hujson_rejects_bad_comments),
        cmocka_unit_test(hujson_rejects_unterminated_containers_at_their_opening),
        cmocka_unit_test(hujson_limits_nesting_depth),
        cmocka_unit_test(hujson_stops_at_the_given_length),
    };

    return cmocka_run_group_tests_name("admin_hujson", tests, NULL, NULL);
}
