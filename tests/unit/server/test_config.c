/* tests/unit/server/test_config.c: the configuration table: every type,
 * defaults, errors naming file, line and key, printing that reads back, and
 * the cluster secret file (format and permissions). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sys/stat.h>

#include "server/config.h"
#include "server/log.h"
#include "tests/lib/testdir.h"

#define REQUIRED_KEYS "cluster:\n  id: 1\n  secret_path: /etc/concord/secret\n"

static struct config *parse_ok(const char *text)
{
    struct config *cfg = NULL;
    char errmsg[256] = "";
    int rv = config_parse("test.yaml", text, strlen(text), &cfg, errmsg);

    if (rv != 0)
        fail_msg("unexpected error: %s", errmsg);
    assert_non_null(cfg);
    return cfg;
}

/* Expects the parse to fail with code, and the message to be exactly want. */
static void parse_fails(const char *text, int code, const char *want)
{
    struct config *cfg = NULL;
    char errmsg[256] = "";

    assert_int_equal(config_parse("test.yaml", text, strlen(text), &cfg, errmsg), code);
    assert_null(cfg);
    assert_string_equal(errmsg, want);
}

static void fills_defaults_for_every_optional_key(void **state)
{
    struct config *cfg = parse_ok(REQUIRED_KEYS);

    (void)state;
    assert_string_equal(cfg->server_url, "http://127.0.0.1:8080");
    assert_string_equal(cfg->listen_addr, "127.0.0.1:8080");
    assert_string_equal(cfg->unix_socket, "/var/run/concord/concord.sock");
    assert_int_equal(cfg->unix_socket_permission, 0770);
    assert_string_equal(cfg->data_dir, "/var/lib/concord");
    assert_int_equal(cfg->log.level, LOG_LEVEL_INFO);
    assert_int_equal(cfg->log.format, LOG_FORMAT_TEXT);
    assert_int_equal(cfg->cluster.id, 1);
    assert_string_equal(cfg->cluster.raft_listen_addr, "127.0.0.1:7001");
    assert_string_equal(cfg->cluster.advertise_http_addr, "127.0.0.1:8080");
    assert_string_equal(cfg->cluster.secret_path, "/etc/concord/secret");
    assert_int_equal(cfg->cluster.initial_members.n, 0);
    assert_int_equal(cfg->cluster.join.n, 0);
    assert_int_equal(cfg->cluster.election_timeout_ms, 1000);
    assert_int_equal(cfg->cluster.heartbeat_timeout_ms, 100);
    assert_int_equal(cfg->cluster.snapshot_threshold, 65536);
    assert_int_equal(cfg->cluster.snapshot_trailing, 8192);
    assert_int_equal(cfg->cluster.ready_max_apply_lag, 100);
    assert_int_equal(cfg->http.max_body_bytes, 1024 * 1024);
    assert_int_equal(cfg->http.max_local_body_bytes, 1024 * 1024 * 1024);
    config_free(cfg);
}

static const char full_config[] = "# every key\n"
                                  "server_url: https://concord.example.net\n"
                                  "listen_addr: \"[::1]:8081\"\n"
                                  "unix_socket: ''\n"
                                  "unix_socket_permission: \"0700\"\n"
                                  "data_dir: /srv/concord\n"
                                  "log:\n"
                                  "  level: DEBUG\n"
                                  "  format: json\n"
                                  "cluster:\n"
                                  "  id: 2\n"
                                  "  raft_listen_addr: 10.0.0.2:7001\n"
                                  "  advertise_http_addr: 10.0.0.2:8081\n"
                                  "  secret_path: /srv/concord/secret\n"
                                  "  initial_members:\n"
                                  "    - 1@10.0.0.1:7001\n"
                                  "    - \"2@10.0.0.2:7001\"\n"
                                  "    - 3@db3.example.net:7001\n"
                                  "  join: [10.0.0.1:8081, 'peer.example.net:8081']\n"
                                  "  election_timeout_ms: 2000\n"
                                  "  heartbeat_timeout_ms: 200\n"
                                  "  snapshot_threshold: 10\n"
                                  "  snapshot_trailing: 0\n"
                                  "  ready_max_apply_lag: 7\n"
                                  "http:\n"
                                  "  max_body_bytes: 2048\n"
                                  "  max_local_body_bytes: 4096\n";

static void parses_every_type(void **state)
{
    struct config *cfg = parse_ok(full_config);

    (void)state;
    assert_string_equal(cfg->server_url, "https://concord.example.net");
    assert_string_equal(cfg->listen_addr, "[::1]:8081");
    assert_string_equal(cfg->unix_socket, "");
    assert_int_equal(cfg->unix_socket_permission, 0700);
    assert_string_equal(cfg->data_dir, "/srv/concord");
    assert_int_equal(cfg->log.level, LOG_LEVEL_DEBUG);
    assert_int_equal(cfg->log.format, LOG_FORMAT_JSON);
    assert_int_equal(cfg->cluster.id, 2);
    assert_string_equal(cfg->cluster.raft_listen_addr, "10.0.0.2:7001");
    assert_string_equal(cfg->cluster.advertise_http_addr, "10.0.0.2:8081");
    assert_int_equal(cfg->cluster.initial_members.n, 3);
    assert_int_equal(cfg->cluster.initial_members.items[0].id, 1);
    assert_string_equal(cfg->cluster.initial_members.items[0].raft_address, "10.0.0.1:7001");
    assert_int_equal(cfg->cluster.initial_members.items[2].id, 3);
    assert_string_equal(cfg->cluster.initial_members.items[2].raft_address, "db3.example.net:7001");
    assert_int_equal(cfg->cluster.join.n, 2);
    assert_string_equal(cfg->cluster.join.items[0], "10.0.0.1:8081");
    assert_string_equal(cfg->cluster.join.items[1], "peer.example.net:8081");
    assert_int_equal(cfg->cluster.election_timeout_ms, 2000);
    assert_int_equal(cfg->cluster.heartbeat_timeout_ms, 200);
    assert_int_equal(cfg->cluster.snapshot_threshold, 10);
    assert_int_equal(cfg->cluster.snapshot_trailing, 0);
    assert_int_equal(cfg->cluster.ready_max_apply_lag, 7);
    assert_int_equal(cfg->http.max_body_bytes, 2048);
    assert_int_equal(cfg->http.max_local_body_bytes, 4096);
    config_free(cfg);
}

static void parses_flow_style_members_like_ops_start_writes(void **state)
{
    struct config *cfg = parse_ok("cluster:\n  id: 3\n  secret_path: /s\n"
                                  "  initial_members: [\"1@127.0.0.1:7001\", \"2@127.0.0.1:7002\", "
                                  "\"3@127.0.0.1:7003\"]\nlog:\n  level: info\n");

    (void)state;
    assert_int_equal(cfg->cluster.initial_members.n, 3);
    assert_string_equal(cfg->cluster.initial_members.items[1].raft_address, "127.0.0.1:7002");
    config_free(cfg);
}

static void derives_server_url_and_advertise_address_from_listen_addr(void **state)
{
    struct config *cfg = parse_ok(REQUIRED_KEYS "listen_addr: 127.0.0.1:9000\n");

    (void)state;
    assert_string_equal(cfg->server_url, "http://127.0.0.1:9000");
    assert_string_equal(cfg->cluster.advertise_http_addr, "127.0.0.1:9000");
    config_free(cfg);
}

static void requires_cluster_id_even_without_a_file(void **state)
{
    struct config *cfg = NULL;
    char errmsg[256] = "";

    (void)state;
    parse_fails("", CONFIG_INVALID, "test.yaml: key 'cluster.id': required (no default)");
    assert_int_equal(config_load(NULL, &cfg, errmsg), CONFIG_INVALID);
    assert_string_equal(errmsg, "(no config file): key 'cluster.id': required (no default)");
    parse_fails("cluster:\n  id: 1\n", CONFIG_INVALID,
                "test.yaml: key 'cluster.secret_path': required (no default)");
}

static void refuses_unknown_keys_with_their_line(void **state)
{
    (void)state;
    parse_fails(REQUIRED_KEYS "  bogus: 3\n", CONFIG_INVALID,
                "test.yaml:4: key 'cluster.bogus': unknown key");
    parse_fails("\n\nlisten: 1\n", CONFIG_INVALID, "test.yaml:3: key 'listen': unknown key");
    parse_fails(REQUIRED_KEYS "log:\n  level: info\n  colour: red\n", CONFIG_INVALID,
                "test.yaml:6: key 'log.colour': unknown key");
    parse_fails("cluster.id: 1\n", CONFIG_INVALID, "test.yaml:1: key 'cluster.id': unknown key");
    parse_fails(REQUIRED_KEYS "? [a]\n: 1\n", CONFIG_INVALID,
                "test.yaml:4: key '': keys must be strings, got a sequence");
}

static void refuses_values_of_the_wrong_type(void **state)
{
    (void)state;
    parse_fails(REQUIRED_KEYS "listen_addr: [a]\n", CONFIG_INVALID,
                "test.yaml:4: key 'listen_addr': expected a scalar, got a sequence");
    parse_fails("cluster: 5\n", CONFIG_INVALID,
                "test.yaml:1: key 'cluster': expected a mapping, got a scalar");
    parse_fails("cluster:\n  id: abc\n", CONFIG_INVALID,
                "test.yaml:2: key 'cluster.id': expected an unsigned integer");
    parse_fails("cluster:\n  id: -1\n", CONFIG_INVALID,
                "test.yaml:2: key 'cluster.id': expected an unsigned integer");
    parse_fails("cluster:\n  id: 99999999999999999999\n", CONFIG_INVALID,
                "test.yaml:2: key 'cluster.id': expected an unsigned integer");
    parse_fails(REQUIRED_KEYS "  initial_members: \"1@a:1\"\n", CONFIG_INVALID,
                "test.yaml:4: key 'cluster.initial_members': expected a sequence, got a scalar");
    parse_fails(REQUIRED_KEYS "log:\n  level: verbose\n", CONFIG_INVALID,
                "test.yaml:5: key 'log.level': 'verbose' is not one of error, warn, info, debug");
    parse_fails(REQUIRED_KEYS "unix_socket_permission: \"0999\"\n", CONFIG_INVALID,
                "test.yaml:4: key 'unix_socket_permission': expected an octal file mode, e.g. "
                "\"0770\"");
    parse_fails(REQUIRED_KEYS "unix_socket_permission: \"01777\"\n", CONFIG_INVALID,
                "test.yaml:4: key 'unix_socket_permission': expected an octal file mode, e.g. "
                "\"0770\"");
    parse_fails(REQUIRED_KEYS "data_dir:\n", CONFIG_INVALID,
                "test.yaml:4: key 'data_dir': missing value");
    parse_fails(REQUIRED_KEYS "data_dir: ''\n", CONFIG_INVALID,
                "test.yaml:4: key 'data_dir': must not be empty");
    parse_fails(REQUIRED_KEYS "listen_addr: localhost\n", CONFIG_INVALID,
                "test.yaml:4: key 'listen_addr': expected host:port, e.g. 127.0.0.1:8080");
    parse_fails(REQUIRED_KEYS "server_url: ftp://x\n", CONFIG_INVALID,
                "test.yaml:4: key 'server_url': expected a URL starting with http:// or https://");
    parse_fails(REQUIRED_KEYS "  join: [\"10.0.0.1\"]\n", CONFIG_INVALID,
                "test.yaml:4: key 'cluster.join': items must be host:port with a port");
    parse_fails(REQUIRED_KEYS "  join:\n    - 10.0.0.1:80\n    - [x]\n", CONFIG_INVALID,
                "test.yaml:6: key 'cluster.join': items must be strings");
    parse_fails("[1, 2]\n", CONFIG_INVALID,
                "test.yaml:1: key '(top level)': expected a mapping of keys, got a sequence");
}

static void refuses_values_out_of_bounds(void **state)
{
    (void)state;
    parse_fails(REQUIRED_KEYS "  election_timeout_ms: 50\n", CONFIG_INVALID,
                "test.yaml:4: key 'cluster.election_timeout_ms': 50 is out of range 100..60000");
    parse_fails(REQUIRED_KEYS "  heartbeat_timeout_ms: 10001\n", CONFIG_INVALID,
                "test.yaml:4: key 'cluster.heartbeat_timeout_ms': 10001 is out of range "
                "10..10000");
    parse_fails("cluster:\n  id: 0\n", CONFIG_INVALID,
                "test.yaml:2: key 'cluster.id': 0 is out of range 1..18446744073709551615");
    parse_fails(REQUIRED_KEYS "http:\n  max_body_bytes: 10\n", CONFIG_INVALID,
                "test.yaml:5: key 'http.max_body_bytes': 10 is out of range 1024..1073741824");
    parse_fails(REQUIRED_KEYS "http:\n  max_local_body_bytes: 2147483648\n", CONFIG_INVALID,
                "test.yaml:5: key 'http.max_local_body_bytes': 2147483648 is out of range "
                "1024..1073741824");
    parse_fails(REQUIRED_KEYS "  election_timeout_ms: 500\n  heartbeat_timeout_ms: 500\n",
                CONFIG_INVALID,
                "test.yaml:5: key 'cluster.heartbeat_timeout_ms': must be below "
                "cluster.election_timeout_ms (500)");
}

static void refuses_bad_initial_members(void **state)
{
    (void)state;
    parse_fails(REQUIRED_KEYS "  initial_members: [\"x@1.2.3.4:7001\"]\n", CONFIG_INVALID,
                "test.yaml:4: key 'cluster.initial_members': member id must be an integer >= 1");
    parse_fails(REQUIRED_KEYS "  initial_members: [\"0@1.2.3.4:7001\"]\n", CONFIG_INVALID,
                "test.yaml:4: key 'cluster.initial_members': member id must be an integer >= 1");
    parse_fails(REQUIRED_KEYS "  initial_members: [\"1.2.3.4:7001\"]\n", CONFIG_INVALID,
                "test.yaml:4: key 'cluster.initial_members': expected \"ID@RAFT_ADDR\", e.g. "
                "\"1@10.0.0.1:7001\"");
    parse_fails(REQUIRED_KEYS "  initial_members: [\"1@1.2.3.4\"]\n", CONFIG_INVALID,
                "test.yaml:4: key 'cluster.initial_members': member address must be host:port "
                "with a port");
    parse_fails(REQUIRED_KEYS "  initial_members:\n    - 1@a:1\n    - 1@b:1\n", CONFIG_INVALID,
                "test.yaml:6: key 'cluster.initial_members': member id 1 appears twice");
    parse_fails(REQUIRED_KEYS "  initial_members:\n    - 1@a:1\n    - 2@a:1\n", CONFIG_INVALID,
                "test.yaml:6: key 'cluster.initial_members': address a:1 appears twice");
    parse_fails(REQUIRED_KEYS "  initial_members: [\"2@a:1\", \"3@b:1\"]\n", CONFIG_INVALID,
                "test.yaml:4: key 'cluster.initial_members': does not include this replica "
                "(cluster.id 1)");
}

static void refuses_duplicate_keys_and_documents(void **state)
{
    (void)state;
    parse_fails(REQUIRED_KEYS "  id: 2\n", CONFIG_INVALID,
                "test.yaml:4: key 'cluster.id': appears twice");
    parse_fails(REQUIRED_KEYS "cluster:\n  election_timeout_ms: 2000\n", CONFIG_INVALID,
                "test.yaml:4: key 'cluster': appears twice");
    parse_fails(REQUIRED_KEYS "---\nlisten_addr: 1.2.3.4:5\n", CONFIG_INVALID,
                "test.yaml:5: key '(top level)': a second YAML document is not allowed");
}

static void reports_yaml_syntax_errors_with_their_line(void **state)
{
    struct config *cfg = NULL;
    char errmsg[256] = "";
    const char *text = REQUIRED_KEYS "log: [\n";

    (void)state;
    assert_int_equal(config_parse("test.yaml", text, strlen(text), &cfg, errmsg), CONFIG_SYNTAX);
    assert_null(cfg);
    assert_true(strncmp(errmsg, "test.yaml:5: YAML: ", 19) == 0);
}

static void refuses_wildcard_listen_addr_without_advertise_addr(void **state)
{
    struct config *cfg;

    (void)state;
    parse_fails(REQUIRED_KEYS "listen_addr: 0.0.0.0:8080\n", CONFIG_INVALID,
                "test.yaml:4: key 'cluster.advertise_http_addr': required when listen_addr is "
                "a wildcard address (peers cannot use 0.0.0.0:8080)");
    cfg =
        parse_ok(REQUIRED_KEYS "  advertise_http_addr: 10.0.0.1:8080\nlisten_addr: 0.0.0.0:8080\n");
    assert_string_equal(cfg->cluster.advertise_http_addr, "10.0.0.1:8080");
    config_free(cfg);
}

static void accepts_empty_sections_and_lists(void **state)
{
    struct config *cfg = parse_ok(REQUIRED_KEYS "  join:\n  initial_members: []\nlog:\nhttp: {}\n");

    (void)state;
    assert_int_equal(cfg->cluster.join.n, 0);
    assert_int_equal(cfg->cluster.initial_members.n, 0);
    config_free(cfg);
}

static char *print_to_string(const struct config *cfg)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);

    assert_non_null(out);
    config_print(cfg, out);
    fclose(out);
    return text;
}

static void prints_yaml_that_reads_back_the_same(void **state)
{
    struct config *cfg = parse_ok(full_config);
    char *first = print_to_string(cfg);
    struct config *again = parse_ok(first);
    char *second = print_to_string(again);

    (void)state;
    assert_string_equal(first, second);
    assert_non_null(strstr(first, "cluster:\n"));
    assert_non_null(strstr(first, "  id: 2\n"));
    assert_non_null(strstr(first, "unix_socket_permission: \"0700\"\n"));
    assert_non_null(strstr(first, "  initial_members: [\"1@10.0.0.1:7001\", \"2@10.0.0.2:7001\", "
                                  "\"3@db3.example.net:7001\"]\n"));
    assert_non_null(strstr(first, "  level: debug\n"));
    free(first);
    free(second);
    config_free(cfg);
    config_free(again);
}

static void loads_a_file_and_reports_a_missing_one(void **state)
{
    char dir[256];
    char path[300];
    struct config *cfg = NULL;
    char errmsg[256] = "";
    FILE *f;

    (void)state;
    assert_int_equal(testdir_make(dir, sizeof dir), 0);
    snprintf(path, sizeof path, "%s/concord.yaml", dir);
    assert_int_equal(config_load(path, &cfg, errmsg), CONFIG_IO);
    assert_non_null(strstr(errmsg, "No such file"));
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(REQUIRED_KEYS "  bad_key: 1\n", f);
    fclose(f);
    assert_int_equal(config_load(path, &cfg, errmsg), CONFIG_INVALID);
    assert_true(strncmp(errmsg, path, strlen(path)) == 0);
    assert_non_null(strstr(errmsg, ":4: key 'cluster.bad_key': unknown key"));
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(REQUIRED_KEYS, f);
    fclose(f);
    assert_int_equal(config_load(path, &cfg, errmsg), 0);
    assert_int_equal(cfg->cluster.id, 1);
    config_free(cfg);
    testdir_remove(dir);
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
}

static void generates_a_secret_file_once_and_reads_it_back(void **state)
{
    char dir[256];
    char path[300];
    char errmsg[256] = "";
    uint8_t key[CONFIG_SECRET_BYTES];
    uint8_t zero[CONFIG_SECRET_BYTES] = {0};
    struct stat st;

    (void)state;
    assert_int_equal(testdir_make(dir, sizeof dir), 0);
    snprintf(path, sizeof path, "%s/cluster.secret", dir);
    assert_int_equal(config_secret_generate(path, NULL, errmsg), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_size, 65);
    assert_int_equal(config_secret_read(path, key, errmsg), 0);
    assert_memory_not_equal(key, zero, sizeof key);
    assert_int_equal(config_secret_generate(path, NULL, errmsg), CONFIG_IO);
    assert_non_null(strstr(errmsg, "refusing to overwrite"));
    testdir_remove(dir);
}

static void generates_a_secret_to_a_stream(void **state)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    char errmsg[256] = "";

    (void)state;
    assert_non_null(out);
    assert_int_equal(config_secret_generate(NULL, out, errmsg), 0);
    fclose(out);
    assert_int_equal(len, 65);
    assert_int_equal(strspn(text, "0123456789abcdef"), 64);
    assert_int_equal(text[64], '\n');
    free(text);
}

static void refuses_secret_readable_by_group_or_others(void **state)
{
    static const char hex[] = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    char dir[256];
    char path[300];
    char errmsg[256] = "";
    uint8_t key[CONFIG_SECRET_BYTES];

    (void)state;
    assert_int_equal(testdir_make(dir, sizeof dir), 0);
    snprintf(path, sizeof path, "%s/secret", dir);
    write_file(path, hex, 0640);
    assert_int_equal(config_secret_read(path, key, errmsg), CONFIG_SECRET);
    assert_non_null(strstr(errmsg, "mode 0640 lets group or others read it"));
    assert_int_equal(chmod(path, 0604), 0);
    assert_int_equal(config_secret_read(path, key, errmsg), CONFIG_SECRET);
    assert_int_equal(chmod(path, 0400), 0);
    assert_int_equal(config_secret_read(path, key, errmsg), 0);
    assert_int_equal(key[0], 0x00);
    assert_int_equal(key[1], 0x11);
    assert_int_equal(key[31], 0xff);
    testdir_remove(dir);
}

static void refuses_secret_of_the_wrong_shape(void **state)
{
    static const char *const bad[] = {
        "0011",
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeef",
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeffa",
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeezz",
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n\n",
        "",
    };
    char dir[256];
    char path[300];
    char errmsg[256] = "";
    uint8_t key[CONFIG_SECRET_BYTES];

    (void)state;
    assert_int_equal(testdir_make(dir, sizeof dir), 0);
    snprintf(path, sizeof path, "%s/secret", dir);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_file(path, bad[i], 0600);
        assert_int_equal(config_secret_read(path, key, errmsg), CONFIG_SECRET);
        assert_non_null(strstr(errmsg, "expected 64 hex characters"));
    }
    write_file(path, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n", 0600);
    assert_int_equal(config_secret_read(path, key, errmsg), 0);
    assert_int_equal(config_secret_read(dir, key, errmsg), CONFIG_SECRET);
    assert_non_null(strstr(errmsg, "not a regular file"));
    testdir_remove(dir);
    assert_int_equal(config_secret_read(path, key, errmsg), CONFIG_IO);
}

static void strerror_names_every_code(void **state)
{
    (void)state;
    assert_string_equal(config_strerror(CONFIG_OK), "ok");
    assert_string_equal(config_strerror(CONFIG_SECRET), "unusable cluster secret");
    assert_string_equal(config_strerror(99), "unknown error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fills_defaults_for_every_optional_key),
        cmocka_unit_test(parses_every_type),
        cmocka_unit_test(parses_flow_style_members_like_ops_start_writes),
        cmocka_unit_test(derives_server_url_and_advertise_address_from_listen_addr),
        cmocka_unit_test(requires_cluster_id_even_without_a_file),
        cmocka_unit_test(refuses_unknown_keys_with_their_line),
        cmocka_unit_test(refuses_values_of_the_wrong_type),
        cmocka_unit_test(refuses_values_out_of_bounds),
        cmocka_unit_test(refuses_bad_initial_members),
        cmocka_unit_test(refuses_duplicate_keys_and_documents),
        cmocka_unit_test(reports_yaml_syntax_errors_with_their_line),
        cmocka_unit_test(refuses_wildcard_listen_addr_without_advertise_addr),
        cmocka_unit_test(accepts_empty_sections_and_lists),
        cmocka_unit_test(prints_yaml_that_reads_back_the_same),
        cmocka_unit_test(loads_a_file_and_reports_a_missing_one),
        cmocka_unit_test(generates_a_secret_file_once_and_reads_it_back),
        cmocka_unit_test(generates_a_secret_to_a_stream),
        cmocka_unit_test(refuses_secret_readable_by_group_or_others),
        cmocka_unit_test(refuses_secret_of_the_wrong_shape),
        cmocka_unit_test(strerror_names_every_code),
    };

    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
