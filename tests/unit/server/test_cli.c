/* tests/unit/server/test_cli.c: the command line without a server: flag and
 * argument parsing, durations, usage errors and their exit status, and the
 * output formats. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include <cmocka.h>

#include "server/cli/cli_internal.h"

/* A struct cli writing into memory, for looking at what a command printed. */
struct captured_cli {
    struct cli cli;
    char *out_text;
    size_t out_len;
    char *err_text;
    size_t err_len;
};

static void captured_init(struct captured_cli *c)
{
    memset(c, 0, sizeof *c);
    c->cli.output = CLI_OUTPUT_TABLE;
    c->cli.socket_path = "/nonexistent/concord-test.sock";
    c->cli.timeout_ms = 1000;
    c->cli.out = open_memstream(&c->out_text, &c->out_len);
    c->cli.err = open_memstream(&c->err_text, &c->err_len);
    assert_non_null(c->cli.out);
    assert_non_null(c->cli.err);
}

static void captured_finish(struct captured_cli *c)
{
    fclose(c->cli.out);
    fclose(c->cli.err);
}

static void captured_free(struct captured_cli *c)
{
    free(c->out_text);
    free(c->err_text);
}

/* Runs `concord <words...>`; returns the exit status, output kept in c. */
static int run_words(struct captured_cli *c, const char *words)
{
    char buf[512], *argv[16];
    int argc = 0, rv;

    snprintf(buf, sizeof buf, "concord %s", words);
    for (char *tok = strtok(buf, " "); tok != NULL && argc < 16; tok = strtok(NULL, " "))
        argv[argc++] = tok;
    captured_init(c);
    rv = cli_run(&c->cli, argc, argv);
    captured_finish(c);
    return rv;
}

static const struct cli_flag test_flags[] = {
    {"display-name", 'd', true, "NAME  x"},
    {"reusable", 0, false, "x"},
    {"expiration", 'e', true, "DURATION  x"},
};

static int parse(struct cli *cli, struct cli_args *args, char *err, int argc, ...)
{
    char *argv[16];
    va_list ap;

    va_start(ap, argc);
    for (int i = 0; i < argc; i++)
        argv[i] = va_arg(ap, char *);
    va_end(ap);
    return cli_args_parse(cli, test_flags, 3, argc, argv, args, err, 160);
}

static void args_accept_long_short_and_equals_forms(void **state)
{
    struct cli cli = {0};
    struct cli_args args;
    char err[160];

    (void)state;
    assert_int_equal(parse(&cli, &args, err, 5, "alice", "--display-name", "Alice A", "-e", "1h"),
                     0);
    assert_int_equal(args.n_pos, 1);
    assert_string_equal(args.pos[0], "alice");
    assert_string_equal(args.values[0], "Alice A");
    assert_null(args.values[1]);
    assert_string_equal(args.values[2], "1h");

    assert_int_equal(parse(&cli, &args, err, 3, "--display-name=Bob", "-e30m", "--reusable"), 0);
    assert_string_equal(args.values[0], "Bob");
    assert_string_equal(args.values[2], "30m");
    assert_string_equal(args.values[1], ""); /* a set switch */
    assert_int_equal(args.n_pos, 0);
}

static void args_take_global_flags_anywhere(void **state)
{
    struct cli cli = {0};
    struct cli_args args;
    char err[160];

    (void)state;
    assert_int_equal(parse(&cli, &args, err, 6, "-o", "yaml", "bob", "--stale", "--force",
                           "--socket=/tmp/s.sock"),
                     0);
    assert_int_equal(cli.output, CLI_OUTPUT_YAML);
    assert_true(cli.is_stale);
    assert_true(cli.is_force);
    assert_string_equal(cli.socket_path, "/tmp/s.sock");
    assert_int_equal(args.n_pos, 1);
    assert_int_equal(parse(&cli, &args, err, 2, "--output=json-line", "--api-key=k"), 0);
    assert_int_equal(cli.output, CLI_OUTPUT_JSON_LINE);
    assert_string_equal(cli.api_key, "k");
    assert_int_equal(parse(&cli, &args, err, 2, "--address", "http://h:1"), 0);
    assert_string_equal(cli.address, "http://h:1");
    assert_int_equal(parse(&cli, &args, err, 2, "x", "--help"), 1);
}

static void args_reject_bad_input_with_a_reason(void **state)
{
    struct cli cli = {0};
    struct cli_args args;
    char err[160];

    (void)state;
    assert_int_equal(parse(&cli, &args, err, 1, "--nope"), -1);
    assert_non_null(strstr(err, "unknown flag --nope"));
    assert_int_equal(parse(&cli, &args, err, 1, "-z"), -1);
    assert_int_equal(parse(&cli, &args, err, 1, "--display-name"), -1);
    assert_non_null(strstr(err, "needs a value"));
    assert_int_equal(parse(&cli, &args, err, 1, "--reusable=yes"), -1);
    assert_non_null(strstr(err, "takes no value"));
    assert_int_equal(parse(&cli, &args, err, 2, "-o", "xml"), -1);
    assert_non_null(strstr(err, "json, json-line or yaml"));
    assert_int_equal(parse(&cli, &args, err, 5, "a", "b", "c", "d", "e"), -1);
    assert_non_null(strstr(err, "too many"));
}

static void args_after_double_dash_are_positional(void **state)
{
    struct cli cli = {0};
    struct cli_args args;
    char err[160];

    (void)state;
    assert_int_equal(parse(&cli, &args, err, 3, "--", "-weird-name", "--force"), 0);
    assert_int_equal(args.n_pos, 2);
    assert_string_equal(args.pos[0], "-weird-name");
    assert_false(cli.is_force);
    /* A lone "-" is a positional argument (stdin for -f). */
    assert_int_equal(parse(&cli, &args, err, 1, "-"), 0);
    assert_string_equal(args.pos[0], "-");
}

static void durations_parse_headscale_style(void **state)
{
    int64_t s;

    (void)state;
    assert_int_equal(cli_duration_parse("30m", &s), 0);
    assert_int_equal(s, 1800);
    assert_int_equal(cli_duration_parse("1h", &s), 0);
    assert_int_equal(s, 3600);
    assert_int_equal(cli_duration_parse("90d", &s), 0);
    assert_int_equal(s, 90 * 86400);
    assert_int_equal(cli_duration_parse("1h30m", &s), 0);
    assert_int_equal(s, 5400);
    assert_int_equal(cli_duration_parse("2w", &s), 0);
    assert_int_equal(s, 14 * 86400);
    assert_int_equal(cli_duration_parse("1y", &s), 0);
    assert_int_equal(s, 365 * 86400);
    assert_int_equal(cli_duration_parse("45s", &s), 0);
    assert_int_equal(s, 45);
}

static void durations_reject_malformed_zero_and_overflow(void **state)
{
    const char *bad[] = {"",
                         "h",
                         "10",
                         "5x",
                         "1h30",
                         "-1h",
                         "1.5h",
                         "0s",
                         "0h0m",
                         " 1h",
                         "1h ",
                         "1H",
                         "99999999999999999999y"};
    int64_t s;

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (cli_duration_parse(bad[i], &s) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
    }
}

static void expirations_are_rfc3339_utc(void **state)
{
    char buf[32];

    (void)state;
    cli_rfc3339_after(1767225600, 3600, buf);
    assert_string_equal(buf, "2026-01-01T01:00:00Z");
    cli_rfc3339_after(1767225600, INT64_MAX / 2, buf);
    assert_string_equal(buf, "9999-12-31T23:59:59Z");
}

static void names_match_any_alias(void **state)
{
    (void)state;
    assert_true(cli_name_matches("list|ls|show", "list"));
    assert_true(cli_name_matches("list|ls|show", "ls"));
    assert_true(cli_name_matches("list|ls|show", "show"));
    assert_false(cli_name_matches("list|ls|show", "l"));
    assert_false(cli_name_matches("list|ls|show", "lists"));
    assert_false(cli_name_matches("list|ls|show", ""));
}

static void url_encoding_escapes_reserved_bytes(void **state)
{
    char buf[64];

    (void)state;
    cli_url_encode("a b/c?d=é", buf, sizeof buf);
    assert_string_equal(buf, "a%20b%2Fc%3Fd%3D%C3%A9");
    cli_url_encode("node-1.x_y~", buf, sizeof buf);
    assert_string_equal(buf, "node-1.x_y~");
    cli_url_encode("////", buf, 8); /* truncated, never a partial escape */
    assert_string_equal(buf, "%2F%2F");
}

static void cells_render_json_values(void **state)
{
    json_t *v = json_pack("{s:s, s:b, s:n, s:[s,s], s:I}", "s", "x\ny", "b", 1, "n", "a", "t:a",
                          "t:b", "i", (json_int_t)42);
    char buf[64];

    (void)state;
    cli_cell_text(json_object_get(v, "s"), buf, sizeof buf);
    assert_string_equal(buf, "x y");
    cli_cell_text(json_object_get(v, "b"), buf, sizeof buf);
    assert_string_equal(buf, "yes");
    cli_cell_text(json_object_get(v, "n"), buf, sizeof buf);
    assert_string_equal(buf, "");
    cli_cell_text(json_object_get(v, "a"), buf, sizeof buf);
    assert_string_equal(buf, "t:a,t:b");
    cli_cell_text(json_object_get(v, "i"), buf, sizeof buf);
    assert_string_equal(buf, "42");
    cli_cell_text(json_object_get(v, "missing"), buf, sizeof buf);
    assert_string_equal(buf, "");
    json_decref(v);
}

static void tables_print_aligned_columns(void **state)
{
    static const struct cli_column cols[] = {{"ID", "id"}, {"User", "user.name"}};
    json_t *rows = json_pack("[{s:s, s:{s:s}}, {s:s, s:n}]", "id", "1", "user", "name", "alice",
                             "id", "22", "user");
    struct captured_cli c;

    (void)state;
    captured_init(&c);
    cli_print_table(&c.cli, rows, cols, 2);
    captured_finish(&c);
    assert_string_equal(c.out_text, "ID  User\n1   alice\n22  \n");
    captured_free(&c);
    json_decref(rows);
}

static void yaml_output_quotes_ambiguous_strings(void **state)
{
    json_t *v = json_pack("{s:s, s:s, s:s, s:b, s:[]}", "id", "12", "name", "alice", "flag", "true",
                          "ok", 1, "tags");
    struct captured_cli c;

    (void)state;
    captured_init(&c);
    c.cli.output = CLI_OUTPUT_YAML;
    cli_print_value(&c.cli, v);
    captured_finish(&c);
    assert_non_null(strstr(c.out_text, "id: '12'"));
    assert_non_null(strstr(c.out_text, "name: alice"));
    assert_non_null(strstr(c.out_text, "flag: 'true'"));
    assert_non_null(strstr(c.out_text, "ok: true"));
    assert_non_null(strstr(c.out_text, "tags: []"));
    captured_free(&c);
    json_decref(v);
}

static void usage_errors_exit_2_with_the_commands_usage(void **state)
{
    struct captured_cli c;

    (void)state;
    assert_int_equal(run_words(&c, "frobnicate"), CLI_EXIT_USAGE);
    assert_non_null(strstr(c.err_text, "unknown command \"frobnicate\""));
    captured_free(&c);

    assert_int_equal(run_words(&c, "users"), CLI_EXIT_USAGE);
    assert_non_null(strstr(c.err_text, "Usage: concord users <command>"));
    captured_free(&c);

    assert_int_equal(run_words(&c, "users create"), CLI_EXIT_USAGE);
    assert_non_null(strstr(c.err_text, "Usage: concord users create"));
    captured_free(&c);

    assert_int_equal(run_words(&c, "user c alice --bogus"), CLI_EXIT_USAGE);
    assert_non_null(strstr(c.err_text, "unknown flag --bogus"));
    captured_free(&c);

    assert_int_equal(run_words(&c, "nodes rename new-name"), CLI_EXIT_USAGE);
    assert_non_null(strstr(c.err_text, "-i ID"));
    assert_non_null(strstr(c.err_text, "Usage: concord nodes rename"));
    captured_free(&c);

    assert_int_equal(run_words(&c, "preauthkeys create -u 1 -e soon"), CLI_EXIT_USAGE);
    assert_non_null(strstr(c.err_text, "duration"));
    captured_free(&c);

    assert_int_equal(run_words(&c, "cluster snapshot load x"), CLI_EXIT_USAGE);
    captured_free(&c);
}

static void help_lists_every_command_and_exits_0(void **state)
{
    static const char *const want[] = {
        "users", "nodes", "preauthkeys",  "apikeys",      "policy",  "cluster",
        "audit", "serve", "cluster init", "config check", "version", "generate",
    };
    struct captured_cli c;

    (void)state;
    assert_int_equal(run_words(&c, "help"), CLI_EXIT_OK);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        if (strstr(c.out_text, want[i]) == NULL)
            fail_msg("help does not list %s", want[i]);
    }
    captured_free(&c);

    assert_int_equal(run_words(&c, "users --help"), CLI_EXIT_OK);
    assert_non_null(strstr(c.out_text, "rename"));
    captured_free(&c);

    assert_int_equal(run_words(&c, "help users create"), CLI_EXIT_OK);
    assert_non_null(strstr(c.out_text, "--display-name"));
    captured_free(&c);

    assert_int_equal(run_words(&c, "preauthkeys create --help"), CLI_EXIT_OK);
    assert_non_null(strstr(c.out_text, "--reusable"));
    captured_free(&c);
}

static void commands_fail_with_exit_1_when_the_server_is_unreachable(void **state)
{
    struct captured_cli c;

    (void)state;
    assert_int_equal(run_words(&c, "users list"), CLI_EXIT_FAIL);
    assert_non_null(strstr(c.err_text, "Error: cannot connect to /nonexistent/concord-test.sock"));
    captured_free(&c);

    assert_int_equal(run_words(&c, "users list --address https://example.org --api-key k"),
                     CLI_EXIT_FAIL);
    assert_non_null(strstr(c.err_text, "https://"));
    captured_free(&c);

    assert_int_equal(run_words(&c, "users list --address http://127.0.0.1:1"), CLI_EXIT_FAIL);
    assert_non_null(strstr(c.err_text, "API key"));
    captured_free(&c);
}

static void destructive_commands_refuse_without_a_terminal(void **state)
{
    struct captured_cli c;
    int saved = dup(STDIN_FILENO), null_fd = open("/dev/null", O_RDONLY);

    (void)state;
    assert_true(saved >= 0 && null_fd >= 0);
    assert_int_equal(dup2(null_fd, STDIN_FILENO), STDIN_FILENO);
    close(null_fd);
    /* Nothing is sent without --force: the socket does not even exist. */
    assert_int_equal(run_words(&c, "nodes delete -i 3"), CLI_EXIT_FAIL);
    assert_non_null(strstr(c.err_text, "pass --force"));
    assert_null(strstr(c.err_text, "cannot connect"));
    captured_free(&c);
    assert_int_equal(run_words(&c, "users destroy -i 3 --force"), CLI_EXIT_FAIL);
    assert_non_null(strstr(c.err_text, "cannot connect"));
    captured_free(&c);
    assert_int_equal(dup2(saved, STDIN_FILENO), STDIN_FILENO);
    close(saved);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(args_accept_long_short_and_equals_forms),
        cmocka_unit_test(args_take_global_flags_anywhere),
        cmocka_unit_test(args_reject_bad_input_with_a_reason),
        cmocka_unit_test(args_after_double_dash_are_positional),
        cmocka_unit_test(durations_parse_headscale_style),
        cmocka_unit_test(durations_reject_malformed_zero_and_overflow),
        cmocka_unit_test(expirations_are_rfc3339_utc),
        cmocka_unit_test(names_match_any_alias),
        cmocka_unit_test(url_encoding_escapes_reserved_bytes),
        cmocka_unit_test(cells_render_json_values),
        cmocka_unit_test(tables_print_aligned_columns),
        cmocka_unit_test(yaml_output_quotes_ambiguous_strings),
        cmocka_unit_test(usage_errors_exit_2_with_the_commands_usage),
        cmocka_unit_test(help_lists_every_command_and_exits_0),
        cmocka_unit_test(commands_fail_with_exit_1_when_the_server_is_unreachable),
        cmocka_unit_test(destructive_commands_refuse_without_a_terminal),
    };

    return cmocka_run_group_tests_name("cli", tests, NULL, NULL);
}
