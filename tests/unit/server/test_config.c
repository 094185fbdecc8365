/* tests/unit/server/test_config.c: the configuration table: every type
 * (durations, booleans, DNS names and nameservers included), defaults, nested
 * sections, errors naming file, line and key, printing that reads back, and
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
    assert_int_equal(cfg->ephemeral_node_inactivity_timeout_ms, 30 * 60 * 1000);
    assert_string_equal(cfg->noise.private_key_path, "/var/lib/concord/noise_private.key");
    assert_true(cfg->dns.magic_dns);
    assert_string_equal(cfg->dns.base_domain, "concord.internal");
    assert_int_equal(cfg->dns.nameservers.n, 0);
    assert_null(cfg->dns.nameservers.items);
    assert_int_equal(cfg->dns.search_domains.n, 0);
    assert_string_equal(cfg->derp.map_path, "");
    assert_int_equal(cfg->control.keepalive_interval_ms, 50000);
    assert_int_equal(cfg->control.pending_registration_ttl_ms, 15 * 60 * 1000);
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
                                  "  max_local_body_bytes: 4096\n"
                                  "ephemeral_node_inactivity_timeout: 1h30m\n"
                                  "noise:\n"
                                  "  private_key_path: /srv/concord/noise.key\n"
                                  "dns:\n"
                                  "  magic_dns: false\n"
                                  "  base_domain: tail.example.net\n"
                                  "  nameservers:\n"
                                  "    global:\n"
                                  "      - 1.1.1.1\n"
                                  "      - \"2606:4700:4700::1111\"\n"
                                  "      - 9.9.9.9:5353\n"
                                  "      - \"[2620:fe::fe]:853\"\n"
                                  "      - https://dns.nextdns.io/abc123\n"
                                  "  search_domains: [corp.example.net, lab-2.example]\n"
                                  "derp:\n"
                                  "  map_path: /etc/concord/derp.json\n"
                                  "control:\n"
                                  "  keepalive_interval: 1m1s500ms\n"
                                  "  pending_registration_ttl: 2h\n";

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
    assert_int_equal(cfg->ephemeral_node_inactivity_timeout_ms, 5400000);
    assert_string_equal(cfg->noise.private_key_path, "/srv/concord/noise.key");
    assert_false(cfg->dns.magic_dns);
    assert_string_equal(cfg->dns.base_domain, "tail.example.net");
    assert_int_equal(cfg->dns.nameservers.n, 5);
    assert_string_equal(cfg->dns.nameservers.items[0], "1.1.1.1");
    assert_string_equal(cfg->dns.nameservers.items[1], "2606:4700:4700::1111");
    assert_string_equal(cfg->dns.nameservers.items[2], "9.9.9.9:5353");
    assert_string_equal(cfg->dns.nameservers.items[3], "[2620:fe::fe]:853");
    assert_string_equal(cfg->dns.nameservers.items[4], "https://dns.nextdns.io/abc123");
    assert_int_equal(cfg->dns.search_domains.n, 2);
    assert_string_equal(cfg->dns.search_domains.items[0], "corp.example.net");
    assert_string_equal(cfg->dns.search_domains.items[1], "lab-2.example");
    assert_string_equal(cfg->derp.map_path, "/etc/concord/derp.json");
    assert_int_equal(cfg->control.keepalive_interval_ms, 61500);
    assert_int_equal(cfg->control.pending_registration_ttl_ms, 2 * 3600 * 1000);
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

static void derives_the_noise_key_path_from_data_dir(void **state)
{
    struct config *cfg = parse_ok(REQUIRED_KEYS "data_dir: /srv/c\n");
    struct config *slash = parse_ok(REQUIRED_KEYS "data_dir: /srv/c/\n");

    (void)state;
    assert_string_equal(cfg->noise.private_key_path, "/srv/c/noise_private.key");
    assert_string_equal(slash->noise.private_key_path, "/srv/c/noise_private.key");
    config_free(cfg);
    config_free(slash);
    parse_fails(REQUIRED_KEYS "noise:\n  private_key_path: ''\n", CONFIG_INVALID,
                "test.yaml:5: key 'noise.private_key_path': must not be empty");
}

static struct config *parse_duration_key(const char *key, const char *value)
{
    char text[256];

    snprintf(text, sizeof text, REQUIRED_KEYS "%s: %s\n", key, value);
    return parse_ok(text);
}

static void parses_durations_like_go(void **state)
{
    static const struct {
        const char *text;
        uint64_t ms;
    } cases[] = {
        {"1h30m", 5400000}, {"2s", 2000},       {"1500ms", 1500},     {"90m", 5400000},
        {"30m1h", 5400000}, {"1m1s1ms", 61001}, {"720h", 2592000000}, {"\"45s\"", 45000},
    };

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct config *cfg = parse_duration_key("ephemeral_node_inactivity_timeout", cases[i].text);

        assert_int_equal(cfg->ephemeral_node_inactivity_timeout_ms, cases[i].ms);
        config_free(cfg);
    }
}

static void refuses_bad_durations(void **state)
{
    static const char *const malformed[] = {
        "5x",
        "-1s",
        "1.5h",
        "1h30",
        "ms",
        "s1",
        "1 s",
        "1S",
        "1us",
        "99999999999999999999h",
        "5124095576030432h",
        "\"\"",
    };
    char text[256];

    (void)state;
    for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++) {
        snprintf(text, sizeof text, REQUIRED_KEYS "ephemeral_node_inactivity_timeout: %s\n",
                 malformed[i]);
        parse_fails(text, CONFIG_INVALID,
                    "test.yaml:4: key 'ephemeral_node_inactivity_timeout': expected a duration "
                    "such as 30m, 1h30m or 500ms");
    }
    parse_fails(REQUIRED_KEYS "ephemeral_node_inactivity_timeout: 0s\n", CONFIG_INVALID,
                "test.yaml:4: key 'ephemeral_node_inactivity_timeout': 0s is out of range "
                "1s..720h");
    parse_fails(REQUIRED_KEYS "ephemeral_node_inactivity_timeout: 500ms\n", CONFIG_INVALID,
                "test.yaml:4: key 'ephemeral_node_inactivity_timeout': 500ms is out of range "
                "1s..720h");
    parse_fails(REQUIRED_KEYS "ephemeral_node_inactivity_timeout: 720h1ms\n", CONFIG_INVALID,
                "test.yaml:4: key 'ephemeral_node_inactivity_timeout': 720h1ms is out of range "
                "1s..720h");
    parse_fails(REQUIRED_KEYS "control:\n  keepalive_interval: 111s\n", CONFIG_INVALID,
                "test.yaml:5: key 'control.keepalive_interval': 111s is out of range 1s..110s");
    parse_fails(REQUIRED_KEYS "control:\n  keepalive_interval: 999ms\n", CONFIG_INVALID,
                "test.yaml:5: key 'control.keepalive_interval': 999ms is out of range 1s..110s");
    parse_fails(REQUIRED_KEYS "control:\n  pending_registration_ttl: 9s\n", CONFIG_INVALID,
                "test.yaml:5: key 'control.pending_registration_ttl': 9s is out of range "
                "10s..24h");
    parse_fails(REQUIRED_KEYS "control:\n  pending_registration_ttl: 24h1s\n", CONFIG_INVALID,
                "test.yaml:5: key 'control.pending_registration_ttl': 24h1s is out of range "
                "10s..24h");
}

static void accepts_duration_bounds(void **state)
{
    struct config *cfg = parse_ok(REQUIRED_KEYS "control:\n  keepalive_interval: 110s\n"
                                                "  pending_registration_ttl: 10s\n");
    struct config *low = parse_ok(REQUIRED_KEYS "control:\n  keepalive_interval: 1000ms\n"
                                                "  pending_registration_ttl: 24h\n");

    (void)state;
    assert_int_equal(cfg->control.keepalive_interval_ms, 110000);
    assert_int_equal(cfg->control.pending_registration_ttl_ms, 10000);
    assert_int_equal(low->control.keepalive_interval_ms, 1000);
    assert_int_equal(low->control.pending_registration_ttl_ms, 24 * 3600 * 1000);
    config_free(cfg);
    config_free(low);
}

static void refuses_booleans_other_than_plain_true_and_false(void **state)
{
    static const char *const bad[] = {"yes", "True", "1", "on"};
    char text[256];

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(text, sizeof text, REQUIRED_KEYS "dns:\n  magic_dns: %s\n", bad[i]);
        parse_fails(text, CONFIG_INVALID,
                    "test.yaml:5: key 'dns.magic_dns': expected true or false");
    }
    parse_fails(REQUIRED_KEYS "dns:\n  magic_dns: \"true\"\n", CONFIG_INVALID,
                "test.yaml:5: key 'dns.magic_dns': expected true or false, without quotes");
    parse_fails(REQUIRED_KEYS "dns:\n  magic_dns:\n", CONFIG_INVALID,
                "test.yaml:5: key 'dns.magic_dns': missing value");
}

static void refuses_bad_base_domains(void **state)
{
    static const char *const bad[] = {
        "Example.com",
        "-a.example",
        "a-.example",
        "a..example",
        ".example",
        "example.",
        "a_b.example",
        "\"a b\"",
        "xn--caf\xc3\xa9.example",
        /* a 64-character label */
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example",
    };
    char text[512];

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(text, sizeof text, REQUIRED_KEYS "dns:\n  base_domain: %s\n", bad[i]);
        parse_fails(text, CONFIG_INVALID,
                    "test.yaml:5: key 'dns.base_domain': must be a DNS name: labels of a-z, 0-9 "
                    "and - (not first or last), joined by dots");
    }
}

static void checks_base_domain_length_limits(void **state)
{
    char label[64];
    char name[300];
    char text[512];
    struct config *cfg;

    (void)state;
    memset(label, 'a', 63);
    label[63] = '\0';
    /* 4 labels of 63 and 3 dots: 255 characters, too long; 3 labels and a
     * 61-character one: 253, the longest allowed. */
    snprintf(name, sizeof name, "%s.%s.%s.%s", label, label, label, label);
    snprintf(text, sizeof text, REQUIRED_KEYS "dns:\n  base_domain: %s\n", name);
    parse_fails(text, CONFIG_INVALID,
                "test.yaml:5: key 'dns.base_domain': must be a DNS name: labels of a-z, 0-9 "
                "and - (not first or last), joined by dots");
    name[253] = '\0';
    snprintf(text, sizeof text, REQUIRED_KEYS "dns:\n  base_domain: %s\n", name);
    cfg = parse_ok(text);
    assert_int_equal(strlen(cfg->dns.base_domain), 253);
    config_free(cfg);
    cfg = parse_ok(REQUIRED_KEYS "dns:\n  base_domain: ts\n");
    assert_string_equal(cfg->dns.base_domain, "ts");
    config_free(cfg);
}

static void requires_a_base_domain_for_magic_dns(void **state)
{
    struct config *cfg;

    (void)state;
    parse_fails(REQUIRED_KEYS "dns:\n  base_domain: ''\n", CONFIG_INVALID,
                "test.yaml:5: key 'dns.base_domain': must not be empty while dns.magic_dns is "
                "true");
    parse_fails(REQUIRED_KEYS "dns:\n  magic_dns: true\n  base_domain: \"\"\n", CONFIG_INVALID,
                "test.yaml:6: key 'dns.base_domain': must not be empty while dns.magic_dns is "
                "true");
    cfg = parse_ok(REQUIRED_KEYS "dns:\n  magic_dns: false\n  base_domain: ''\n");
    assert_false(cfg->dns.magic_dns);
    assert_string_equal(cfg->dns.base_domain, "");
    config_free(cfg);
}

static void policy_file_mode_needs_a_path(void **state)
{
    struct config *cfg;

    (void)state;
    cfg = parse_ok(REQUIRED_KEYS);
    assert_int_equal(cfg->policy.mode, CONFIG_POLICY_DATABASE);
    assert_string_equal(cfg->policy.path, "");
    config_free(cfg);
    parse_fails(REQUIRED_KEYS "policy:\n  mode: file\n", CONFIG_INVALID,
                "test.yaml:5: key 'policy.path': required when policy.mode is file");
    parse_fails(REQUIRED_KEYS "policy:\n  mode: git\n", CONFIG_INVALID,
                "test.yaml:5: key 'policy.mode': 'git' is not one of database, file");
    cfg = parse_ok(REQUIRED_KEYS "policy:\n  mode: file\n  path: /etc/concord/policy.hujson\n");
    assert_int_equal(cfg->policy.mode, CONFIG_POLICY_FILE);
    assert_string_equal(cfg->policy.path, "/etc/concord/policy.hujson");
    config_free(cfg);
}

static void refuses_bad_nameservers_and_search_domains(void **state)
{
    static const char *const bad[] = {
        "dns.google",   "1.1.1.256",      "1.1.1.1:0",     "1.1.1.1:65536",
        "1.1.1.1:",     "1.1.1.1:53:1",   "[::1]",         "[::1]53",
        "[1.1.1.1]:53", "[::1]:x",        "https://",      "https:///query",
        "https://a b",  "http://1.1.1.1", "tls://1.1.1.1", "",
    };
    char text[256];

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(text, sizeof text,
                 REQUIRED_KEYS "dns:\n  nameservers:\n    global:\n      - \"%s\"\n", bad[i]);
        parse_fails(text, CONFIG_INVALID,
                    "test.yaml:7: key 'dns.nameservers.global': items must be IP, IPv4:port, "
                    "[IPv6]:port or an https:// URL");
    }
    parse_fails(REQUIRED_KEYS "dns:\n  nameservers:\n    global: 1.1.1.1\n", CONFIG_INVALID,
                "test.yaml:6: key 'dns.nameservers.global': expected a sequence, got a scalar");
    parse_fails(REQUIRED_KEYS "dns:\n  search_domains: [ok.example, Bad.example]\n", CONFIG_INVALID,
                "test.yaml:5: key 'dns.search_domains': items must be DNS names: labels of a-z, "
                "0-9 and - (not first or last), joined by dots");
    parse_fails(REQUIRED_KEYS "dns:\n  search_domains: ['']\n", CONFIG_INVALID,
                "test.yaml:5: key 'dns.search_domains': items must be DNS names: labels of a-z, "
                "0-9 and - (not first or last), joined by dots");
}

static void walks_nested_sections(void **state)
{
    struct config *cfg = parse_ok(REQUIRED_KEYS "dns:\n  nameservers:\n  search_domains: []\n"
                                                "derp:\nnoise: {}\n");

    (void)state;
    assert_int_equal(cfg->dns.nameservers.n, 0);
    assert_int_equal(cfg->dns.search_domains.n, 0);
    config_free(cfg);
    cfg = parse_ok(REQUIRED_KEYS "dns: {nameservers: {global: [\"8.8.8.8\"]}}\n");
    assert_int_equal(cfg->dns.nameservers.n, 1);
    assert_string_equal(cfg->dns.nameservers.items[0], "8.8.8.8");
    config_free(cfg);
    parse_fails(REQUIRED_KEYS "dns:\n  nameservers:\n    split: {}\n", CONFIG_INVALID,
                "test.yaml:6: key 'dns.nameservers.split': unknown key");
    parse_fails(REQUIRED_KEYS "dns:\n  nameservers: [1.1.1.1]\n", CONFIG_INVALID,
                "test.yaml:5: key 'dns.nameservers': expected a mapping, got a sequence");
    parse_fails(REQUIRED_KEYS "nameservers:\n  global: []\n", CONFIG_INVALID,
                "test.yaml:4: key 'nameservers': unknown key");
    parse_fails(REQUIRED_KEYS "dns:\n  nameservers:\n    global: []\n    global: []\n",
                CONFIG_INVALID, "test.yaml:7: key 'dns.nameservers.global': appears twice");
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
    assert_non_null(strstr(first, "\nephemeral_node_inactivity_timeout: 90m\n"));
    assert_non_null(strstr(first, "\nnoise:\n  # "));
    assert_non_null(strstr(first, "  private_key_path: \"/srv/concord/noise.key\"\n"));
    assert_non_null(strstr(first, "\ndns:\n  # "));
    assert_non_null(strstr(first, "  magic_dns: false\n"));
    assert_non_null(strstr(first, "  base_domain: \"tail.example.net\"\n"));
    assert_non_null(strstr(first, "\n  nameservers:\n    # "));
    assert_non_null(strstr(first, "    global: [\"1.1.1.1\", \"2606:4700:4700::1111\", "
                                  "\"9.9.9.9:5353\", \"[2620:fe::fe]:853\", "
                                  "\"https://dns.nextdns.io/abc123\"]\n  # "));
    assert_non_null(strstr(first, "  search_domains: [\"corp.example.net\", \"lab-2.example\"]\n"));
    assert_non_null(strstr(first, "\nderp:\n  # "));
    assert_non_null(strstr(first, "  map_path: \"/etc/concord/derp.json\"\n"));
    assert_non_null(strstr(first, "\ncontrol:\n  # "));
    assert_non_null(strstr(first, "  keepalive_interval: 61500ms\n"));
    assert_non_null(strstr(first, "  pending_registration_ttl: 2h\n"));
    assert_int_equal(again->control.keepalive_interval_ms, 61500);
    assert_int_equal(again->ephemeral_node_inactivity_timeout_ms, 5400000);
    assert_int_equal(again->dns.nameservers.n, 5);
    assert_false(again->dns.magic_dns);
    free(first);
    free(second);
    config_free(cfg);
    config_free(again);
}

static void prints_defaults_that_read_back_the_same(void **state)
{
    struct config *cfg = parse_ok(REQUIRED_KEYS);
    char *first = print_to_string(cfg);
    struct config *again = parse_ok(first);
    char *second = print_to_string(again);

    (void)state;
    assert_string_equal(first, second);
    assert_non_null(strstr(first, "\nephemeral_node_inactivity_timeout: 30m\n"));
    assert_non_null(strstr(first, "  magic_dns: true\n"));
    assert_non_null(strstr(first, "  nameservers:\n    # "));
    assert_non_null(strstr(first, "    global: []\n"));
    assert_non_null(strstr(first, "  map_path: \"\"\n"));
    assert_non_null(strstr(first, "  keepalive_interval: 50s\n"));
    assert_non_null(strstr(first, "  pending_registration_ttl: 15m\n"));
    assert_non_null(strstr(first, "  private_key_path: \"/var/lib/concord/noise_private.key\"\n"));
    free(first);
    free(second);
    config_free(cfg);
    config_free(again);
}

static char *doc_to_string(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);

    assert_non_null(out);
    config_doc(out);
    fclose(out);
    return text;
}

static void documents_the_new_types(void **state)
{
    char *doc = doc_to_string();

    (void)state;
    assert_non_null(strstr(doc, "| `ephemeral_node_inactivity_timeout` | duration | `30m` | "
                                "1s..720h | "));
    assert_non_null(strstr(doc, "| `dns.magic_dns` | boolean | `true` |  | "));
    assert_non_null(strstr(doc, "| `dns.base_domain` | DNS name | `concord.internal` |  | "));
    assert_non_null(strstr(doc, "| `dns.nameservers.global` | list of nameservers | empty |  | "));
    assert_non_null(strstr(doc, "| `dns.search_domains` | list of DNS names | empty |  | "));
    assert_non_null(strstr(doc, "| `derp.map_path` | string | `\"\"` |  | "));
    assert_non_null(strstr(doc, "| `noise.private_key_path` | path | derived |  | "));
    assert_non_null(strstr(doc, "| `control.keepalive_interval` | duration | `50s` | 1s..110s | "));
    assert_non_null(
        strstr(doc, "| `control.pending_registration_ttl` | duration | `15m` | 10s..24h | "));
    assert_non_null(strstr(doc, "| `cluster.join` | list of host:port | empty |  | "));
    free(doc);
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
        cmocka_unit_test(derives_the_noise_key_path_from_data_dir),
        cmocka_unit_test(parses_durations_like_go),
        cmocka_unit_test(refuses_bad_durations),
        cmocka_unit_test(accepts_duration_bounds),
        cmocka_unit_test(refuses_booleans_other_than_plain_true_and_false),
        cmocka_unit_test(refuses_bad_base_domains),
        cmocka_unit_test(checks_base_domain_length_limits),
        cmocka_unit_test(requires_a_base_domain_for_magic_dns),
        cmocka_unit_test(policy_file_mode_needs_a_path),
        cmocka_unit_test(refuses_bad_nameservers_and_search_domains),
        cmocka_unit_test(walks_nested_sections),
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
        cmocka_unit_test(prints_defaults_that_read_back_the_same),
        cmocka_unit_test(documents_the_new_types),
        cmocka_unit_test(loads_a_file_and_reports_a_missing_one),
        cmocka_unit_test(generates_a_secret_file_once_and_reads_it_back),
        cmocka_unit_test(generates_a_secret_to_a_stream),
        cmocka_unit_test(refuses_secret_readable_by_group_or_others),
        cmocka_unit_test(refuses_secret_of_the_wrong_shape),
        cmocka_unit_test(strerror_names_every_code),
    };

    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
