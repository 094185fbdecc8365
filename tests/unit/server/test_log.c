/* tests/unit/server/test_log.c: log line formatting (text and JSON), escaping
 * that keeps one event on one line, cutting of long messages, and the level
 * gate of the macros. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "server/log.h"

/* 2026-11-23T20:50:00.123Z */
#define SAMPLE_MS 1795467000123LL

static void formats_text_lines(void **state)
{
    char buf[256];
    size_t n = log_format_line(buf, sizeof buf, LOG_FORMAT_TEXT, LOG_LEVEL_INFO, SAMPLE_MS,
                               "session open node=7");

    (void)state;
    assert_string_equal(buf, "2026-11-23T20:50:00.123Z INFO session open node=7\n");
    assert_int_equal(n, strlen(buf));
}

static void formats_json_lines(void **state)
{
    char buf[256];

    (void)state;
    log_format_line(buf, sizeof buf, LOG_FORMAT_JSON, LOG_LEVEL_WARN, SAMPLE_MS, "peer \"x\" \\ y");
    assert_string_equal(buf, "{\"time\":\"2026-11-23T20:50:00.123Z\",\"level\":\"warn\",\"msg\":"
                             "\"peer \\\"x\\\" \\\\ y\"}\n");
}

static void escapes_control_bytes_so_one_event_stays_one_line(void **state)
{
    char buf[256];

    (void)state;
    log_format_line(buf, sizeof buf, LOG_FORMAT_TEXT, LOG_LEVEL_ERROR, SAMPLE_MS,
                    "path=/a\nFAKE LINE\t\x1b[31m");
    assert_string_equal(buf, "2026-11-23T20:50:00.123Z ERROR path=/a\\nFAKE LINE\\t\\x1b[31m\n");
    log_format_line(buf, sizeof buf, LOG_FORMAT_JSON, LOG_LEVEL_ERROR, SAMPLE_MS,
                    "a\nb\x01 \xc3\xa9 \xff");
    assert_string_equal(buf, "{\"time\":\"2026-11-23T20:50:00.123Z\",\"level\":\"error\","
                             "\"msg\":\"a\\nb\\u0001 \xc3\xa9 \\ufffd\"}\n");
}

static void cuts_long_messages_and_keeps_the_line_whole(void **state)
{
    char msg[300];
    char buf[80];
    size_t n;

    (void)state;
    memset(msg, 'm', sizeof msg - 1);
    msg[sizeof msg - 1] = '\0';
    n = log_format_line(buf, sizeof buf, LOG_FORMAT_JSON, LOG_LEVEL_INFO, SAMPLE_MS, msg);
    assert_true(n < sizeof buf);
    assert_int_equal(strlen(buf), n);
    assert_string_equal(buf + n - 6, "...\"}\n");
    n = log_format_line(buf, sizeof buf, LOG_FORMAT_TEXT, LOG_LEVEL_INFO, SAMPLE_MS, msg);
    assert_string_equal(buf + n - 4, "...\n");
}

static int count_calls;

static const char *counted(void)
{
    count_calls++;
    return "x";
}

static void skips_arguments_of_disabled_levels(void **state)
{
    (void)state;
    log_init(LOG_LEVEL_ERROR, LOG_FORMAT_TEXT);
    count_calls = 0;
    LOG_DEBUG("never %s", counted());
    LOG_INFO("never %s", counted());
    assert_int_equal(count_calls, 0);
    assert_true(log_enabled(LOG_LEVEL_ERROR));
    assert_false(log_enabled(LOG_LEVEL_WARN));
    log_init(LOG_LEVEL_INFO, LOG_FORMAT_TEXT);
    assert_string_equal(log_level_name(LOG_LEVEL_DEBUG), "debug");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(formats_text_lines),
        cmocka_unit_test(formats_json_lines),
        cmocka_unit_test(escapes_control_bytes_so_one_event_stays_one_line),
        cmocka_unit_test(cuts_long_messages_and_keeps_the_line_whole),
        cmocka_unit_test(skips_arguments_of_disabled_levels),
    };

    return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
