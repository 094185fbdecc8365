/* server/config.c: the configuration table and everything it drives.
 * Parsing: libyaml loads the document; the root mapping is walked, each key
 * (dotted inside sections: "cluster.id") looked up in the table and its value
 * checked and stored by the row's type. Defaults are stored first, from the
 * same table, through the same setters; derived defaults and checks that
 * involve two keys come last. Nothing is kept on error. */
#include "server/config.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <arpa/inet.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "server/log.h"
#include "server/net/address.h"

#define CONFIG_FILE_MAX_BYTES (1024 * 1024)
#define KEY_MAX               128
#define DURATION_TEXT_MAX     32 /* "18446744073709551615ms" and the NUL */
#define DNS_NAME_MAX          253
#define DNS_LABEL_MAX         63

const char *config_strerror(int code)
{
    switch (code) {
#define X(c, msg)                                                                                  \
    case c:                                                                                        \
        return msg;
        CONFIG_CODES(X)
#undef X
    }
    return "unknown error";
}

enum cfg_type {
    CFG_STRING,      /* char *, may be empty; else passes row->check if set */
    CFG_PATH,        /* char *, not empty */
    CFG_URL,         /* char *, http:// or https:// */
    CFG_ADDR,        /* char *, "host:port" to listen on (port 0: any) */
    CFG_UINT,        /* uint64_t within [min, max] */
    CFG_DURATION,    /* uint64_t milliseconds within [min, max], written "1h30m" */
    CFG_BOOL,        /* bool, a plain true or false */
    CFG_OCTAL,       /* unsigned file mode, "0770" */
    CFG_ENUM,        /* unsigned index into choices */
    CFG_STRING_LIST, /* struct config_strings, every item passing row->check */
    CFG_MEMBERS,     /* struct config_members from "ID@RAFT_ADDR" */
};

enum cfg_default {
    CFG_DEFAULT_TEXT,    /* def is the default, parsed like a value from the file */
    CFG_DEFAULT_EMPTY,   /* lists: empty */
    CFG_DEFAULT_DERIVED, /* computed from other keys after parsing (see derive_defaults) */
    CFG_REQUIRED,        /* no default: the file must say */
};

/* What a CFG_STRING or the items of a CFG_STRING_LIST must look like. */
struct cfg_check {
    const char *doc; /* the type column of the reference */
    bool (*valid)(const char *text);
    const char *reason; /* the error when not valid */
};

struct cfg_row {
    const char *name;
    enum cfg_type type;
    size_t offset;
    enum cfg_default default_kind;
    const char *def;
    uint64_t min;
    uint64_t max;
    const char *const *choices;    /* CFG_ENUM, NULL-terminated */
    const struct cfg_check *check; /* CFG_STRING, CFG_STRING_LIST; NULL: any string */
    const char *doc;
};

static int parse_uint(const char *s, uint64_t *out)
{
    uint64_t v = 0;

    if (*s == '\0')
        return -1;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9' || v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
            return -1;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return 0;
}

/* "host:port" with a port other than 0, short enough for a member record. */
static bool is_peer_address(const char *s)
{
    char host[CONFIG_ADDRESS_MAX];
    unsigned port;

    return strlen(s) < CONFIG_ADDRESS_MAX && net_address_split(s, host, sizeof host, &port) == 0 &&
           port > 0;
}

static bool is_port(const char *s)
{
    uint64_t v;

    return parse_uint(s, &v) == 0 && v >= 1 && v <= 65535;
}

/* Copies s[0..len) into buf, refusing what does not fit. */
static bool copy_span(char *buf, size_t cap, const char *s, size_t len)
{
    if (len >= cap)
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    return true;
}

/* Labels of a-z, 0-9 and - (RFC 1123: not first or last) of 1..63
 * characters, joined by dots, 253 characters in all; no root dot. Lower case
 * only, as clients compare names byte for byte. */
static bool is_dns_name(const char *s)
{
    size_t len = strlen(s);
    size_t label = 0;

    if (len == 0 || len > DNS_NAME_MAX)
        return false;
    for (size_t i = 0; i <= len; i++) {
        char c = s[i];

        if (c == '.' || c == '\0') {
            if (label == 0 || label > DNS_LABEL_MAX || s[i - 1] == '-')
                return false;
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (c == '-' && label > 0)) {
            label++;
        } else {
            return false;
        }
    }
    return true;
}

/* Printable ASCII without spaces: what a URL holds unescaped. */
static bool is_visible_ascii(const char *s)
{
    for (; *s != '\0'; s++) {
        if (*s <= ' ' || *s >= 0x7f)
            return false;
    }
    return true;
}

/* A resolver clients may use: "1.1.1.1", "2606:4700::1111", "1.1.1.1:53",
 * "[2606:4700::1111]:53", or a DNS-over-HTTPS URL "https://host/path". */
static bool is_nameserver(const char *s)
{
    char host[INET6_ADDRSTRLEN];
    struct in6_addr addr;
    const char *end;

    if (strncmp(s, "https://", 8) == 0)
        return s[8] != '\0' && s[8] != '/' && is_visible_ascii(s + 8);
    if (inet_pton(AF_INET, s, &addr) == 1 || inet_pton(AF_INET6, s, &addr) == 1)
        return true;
    if (s[0] == '[') {
        end = strchr(s, ']');
        return end != NULL && end[1] == ':' &&
               copy_span(host, sizeof host, s + 1, (size_t)(end - s - 1)) &&
               inet_pton(AF_INET6, host, &addr) == 1 && is_port(end + 2);
    }
    end = strchr(s, ':');
    return end != NULL && copy_span(host, sizeof host, s, (size_t)(end - s)) &&
           inet_pton(AF_INET, host, &addr) == 1 && is_port(end + 1);
}

static const char *const level_choices[] = {[LOG_LEVEL_ERROR] = "error",
                                            [LOG_LEVEL_WARN] = "warn",
                                            [LOG_LEVEL_INFO] = "info",
                                            [LOG_LEVEL_DEBUG] = "debug",
                                            NULL};
static const char *const format_choices[] = {
    [LOG_FORMAT_TEXT] = "text", [LOG_FORMAT_JSON] = "json", NULL};

static const char *const policy_mode_choices[] = {
    [CONFIG_POLICY_DATABASE] = "database", [CONFIG_POLICY_FILE] = "file", NULL};

static const struct cfg_check peer_items = {"list of host:port", is_peer_address,
                                            "items must be host:port with a port"};
static const struct cfg_check peer_address = {"host:port", is_peer_address,
                                              "must be host:port with a port"};
static const struct cfg_check dns_name = {
    "DNS name", is_dns_name,
    "must be a DNS name: labels of a-z, 0-9 and - (not first or last), joined by dots"};
static const struct cfg_check dns_name_items = {
    "list of DNS names", is_dns_name,
    "items must be DNS names: labels of a-z, 0-9 and - (not first or last), joined by dots"};
static const struct cfg_check nameserver_items = {
    "list of nameservers", is_nameserver,
    "items must be IP, IPv4:port, [IPv6]:port or an https:// URL"};

#define OFF(field) offsetof(struct config, field)
#define TEXT       CFG_DEFAULT_TEXT
#define EMPTY      CFG_DEFAULT_EMPTY
#define DERIVED    CFG_DEFAULT_DERIVED
#define REQUIRED   CFG_REQUIRED
#define SECOND_MS  1000ULL
#define HOUR_MS    (3600 * SECOND_MS)

/* A section's rows are contiguous, nested ones too: config_print() opens a
 * section where the prefix changes, and a section opened twice would not
 * parse back. */
static const struct cfg_row rows[] = {
    {"server_url", CFG_URL, OFF(server_url), DERIVED, NULL, 0, 0, NULL, NULL,
     "URL clients use to reach this server; default http://<listen_addr>, https:// with TLS"},
    {"listen_addr", CFG_ADDR, OFF(listen_addr), TEXT, "127.0.0.1:8080", 0, 0, NULL, NULL,
     "TCP address of the client and admin HTTP listener"},
    {"tls_cert_path", CFG_STRING, OFF(tls_cert_path), TEXT, "", 0, 0, NULL, NULL,
     "PEM certificate chain (leaf first) for TLS on listen_addr, with tls_key_path; \"\": plain "
     "HTTP. Checked against the key at start. Set it on every replica or none: with it, this "
     "replica also uses TLS, without verifying certificates, to reach its peers' listeners"},
    {"tls_key_path", CFG_STRING, OFF(tls_key_path), TEXT, "", 0, 0, NULL, NULL,
     "PEM private key (unencrypted) of tls_cert_path; set both or neither"},
    {"unix_socket", CFG_STRING, OFF(unix_socket), TEXT, "/var/run/concord/concord.sock", 0, 0, NULL,
     NULL, "Unix socket of the local CLI, trusted by file permissions; \"\" disables it"},
    {"unix_socket_permission", CFG_OCTAL, OFF(unix_socket_permission), TEXT, "0770", 0, 0777, NULL,
     NULL, "file mode of the Unix socket"},
    {"data_dir", CFG_PATH, OFF(data_dir), TEXT, "/var/lib/concord", 0, 0, NULL, NULL,
     "state lives in <data_dir>/state (LMDB) and <data_dir>/raft (Raft log, snapshots)"},
    {"ephemeral_node_inactivity_timeout", CFG_DURATION, OFF(ephemeral_node_inactivity_timeout_ms),
     TEXT, "30m", SECOND_MS, 720 * HOUR_MS, NULL, NULL,
     "an ephemeral node disconnected for this long is deleted"},
    {"log.level", CFG_ENUM, OFF(log.level), TEXT, "info", 0, 0, level_choices, NULL,
     "error, warn, info or debug"},
    {"log.format", CFG_ENUM, OFF(log.format), TEXT, "text", 0, 0, format_choices, NULL,
     "text or json (one object per line)"},
    {"cluster.id", CFG_UINT, OFF(cluster.id), REQUIRED, NULL, 1, UINT64_MAX, NULL, NULL,
     "Raft id of this replica, unique in the cluster"},
    {"cluster.raft_listen_addr", CFG_ADDR, OFF(cluster.raft_listen_addr), TEXT, "127.0.0.1:7001", 0,
     0, NULL, NULL, "TCP address of the Raft transport"},
    {"cluster.advertise_http_addr", CFG_ADDR, OFF(cluster.advertise_http_addr), DERIVED, NULL, 0, 0,
     NULL, NULL, "address peers use to reach this replica's HTTP listener; default listen_addr"},
    {"cluster.secret_path", CFG_PATH, OFF(cluster.secret_path), REQUIRED, NULL, 0, 0, NULL, NULL,
     "file with the 32-byte secret shared by all replicas (64 hex chars, mode 0600)"},
    {"cluster.initial_members", CFG_MEMBERS, OFF(cluster.initial_members), EMPTY, NULL, 0, 0, NULL,
     NULL, "\"ID@RAFT_ADDR\" of every first voter; bootstraps a pristine raft dir"},
    {"cluster.join", CFG_STRING_LIST, OFF(cluster.join), EMPTY, NULL, 0, 0, NULL, &peer_items,
     "HTTP addresses of running replicas to join through when the raft dir is pristine"},
    {"cluster.election_timeout_ms", CFG_UINT, OFF(cluster.election_timeout_ms), TEXT, "1000", 100,
     60000, NULL, NULL, "time without a leader before a replica starts an election"},
    {"cluster.heartbeat_timeout_ms", CFG_UINT, OFF(cluster.heartbeat_timeout_ms), TEXT, "100", 10,
     10000, NULL, NULL, "interval of the leader's heartbeats; below the election timeout"},
    {"cluster.snapshot_threshold", CFG_UINT, OFF(cluster.snapshot_threshold), TEXT, "65536", 1,
     UINT32_MAX, NULL, NULL, "log entries between two snapshots"},
    {"cluster.snapshot_trailing", CFG_UINT, OFF(cluster.snapshot_trailing), TEXT, "8192", 0,
     UINT32_MAX, NULL, NULL, "log entries kept behind a snapshot for lagging followers"},
    {"cluster.ready_max_apply_lag", CFG_UINT, OFF(cluster.ready_max_apply_lag), TEXT, "100", 0,
     UINT32_MAX, NULL, NULL, "/ready fails while commit index - applied index exceeds this"},
    {"http.max_body_bytes", CFG_UINT, OFF(http.max_body_bytes), TEXT, "1048576", 1024,
     1024 * 1024 * 1024, NULL, NULL,
     "larger request bodies on the TCP listener are refused with 413"},
    {"http.max_local_body_bytes", CFG_UINT, OFF(http.max_local_body_bytes), TEXT, "1073741824",
     1024, 1024 * 1024 * 1024, NULL, NULL,
     "the same on the Unix socket (trusted by file permissions; carries snapshot restores)"},
    {"noise.private_key_path", CFG_PATH, OFF(noise.private_key_path), DERIVED, NULL, 0, 0, NULL,
     NULL,
     "the server's Noise key \"privkey:<64 hex>\", mode 0600, made by `concord generate "
     "private-key -o PATH`; the same file on every replica; default <data_dir>/noise_private.key"},
    {"dns.magic_dns", CFG_BOOL, OFF(dns.magic_dns), TEXT, "true", 0, 0, NULL, NULL,
     "clients resolve node names <node>.<base_domain> themselves (MagicDNS)"},
    {"dns.base_domain", CFG_STRING, OFF(dns.base_domain), TEXT, "concord.internal", 0, 0, NULL,
     &dns_name, "domain of the node names; \"\" only when magic_dns is false"},
    {"dns.nameservers.global", CFG_STRING_LIST, OFF(dns.nameservers), EMPTY, NULL, 0, 0, NULL,
     &nameserver_items,
     "resolvers clients use for every name: IP, IPv4:port, [IPv6]:port or a DNS-over-HTTPS "
     "https:// URL"},
    {"dns.search_domains", CFG_STRING_LIST, OFF(dns.search_domains), EMPTY, NULL, 0, 0, NULL,
     &dns_name_items, "domains clients try after a short name"},
    {"derp.map_path", CFG_STRING, OFF(derp.map_path), TEXT, "", 0, 0, NULL, NULL,
     "JSON file of a Tailscale DERPMap ({\"Regions\": {\"900\": {...}}}) sent to clients, "
     "besides the embedded region; \"\": none"},
    {"derp.server.enabled", CFG_BOOL, OFF(derp.server.enabled), TEXT, "false", 0, 0, NULL, NULL,
     "run the embedded DERP relay (and STUN) on this replica; the relays of all replicas are "
     "in the DERP map every replica sends"},
    {"derp.server.listen_addr", CFG_ADDR, OFF(derp.server.listen_addr), TEXT, "127.0.0.1:3340", 0,
     0, NULL, NULL,
     "TLS listener of the relay (clients connect to it directly, not through a load "
     "balancer)"},
    {"derp.server.advertise_addr", CFG_STRING, OFF(derp.server.advertise_addr), DERIVED, NULL, 0, 0,
     NULL, &peer_address, "host:port clients dial for this relay; default derp.server.listen_addr"},
    {"derp.server.stun_listen_addr", CFG_STRING, OFF(derp.server.stun_listen_addr), TEXT,
     "127.0.0.1:3478", 0, 0, NULL, NULL,
     "UDP address of the STUN server (its port is advertised); \"\": no STUN"},
    {"derp.server.mesh", CFG_BOOL, OFF(derp.server.mesh), TEXT, "true", 0, 0, NULL, NULL,
     "the relays connect to each other and forward packets (a mesh keyed from the cluster "
     "secret), so they form one region; false: one region per relay"},
    {"derp.server.region_id", CFG_UINT, OFF(derp.server.region_id), TEXT, "900", 1, 65535, NULL,
     NULL,
     "region of the meshed relays; without the mesh, replica N's relay is region "
     "region_id + N - 1 (900-999 are set aside for self-hosted relays)"},
    {"derp.server.region_code", CFG_STRING, OFF(derp.server.region_code), TEXT, "concord", 0, 0,
     NULL, NULL, "short region name shown by clients"},
    {"derp.server.region_name", CFG_STRING, OFF(derp.server.region_name), TEXT,
     "concord embedded relay", 0, 0, NULL, NULL, "long region name"},
    {"derp.server.tls_cert_path", CFG_STRING, OFF(derp.server.tls_cert_path), TEXT, "", 0, 0, NULL,
     NULL,
     "certificate of the relay listener, with derp.server.tls_key_path; \"\": tls_cert_path if "
     "set, else a self-signed one kept in <data_dir>/derp and pinned in the DERP map (CertName)"},
    {"derp.server.tls_key_path", CFG_STRING, OFF(derp.server.tls_key_path), TEXT, "", 0, 0, NULL,
     NULL, "private key of derp.server.tls_cert_path"},
    {"control.keepalive_interval", CFG_DURATION, OFF(control.keepalive_interval_ms), TEXT, "50s",
     SECOND_MS, 110 * SECOND_MS, NULL, NULL,
     "interval of keep-alives on a client's map stream (the client gives up after 120s)"},
    {"control.liveness_interval", CFG_DURATION, OFF(control.liveness_interval_ms), TEXT, "2s", 0,
     60 * SECOND_MS, NULL, NULL,
     "liveness: a client connection quiet this long gets an HTTP/2 PING and is dropped (its node "
     "offline) if nothing comes back within as long again; 0 turns it off"},
    {"control.pending_registration_ttl", CFG_DURATION, OFF(control.pending_registration_ttl_ms),
     TEXT, "15m", 10 * SECOND_MS, 24 * HOUR_MS, NULL, NULL,
     "how long an interactive registration waits for an operator's approval"},
    {"policy.mode", CFG_ENUM, OFF(policy.mode), TEXT, "database", 0, 0, policy_mode_choices, NULL,
     "database: the ACL policy is replicated state, set with `concord policy set` or PUT "
     "/api/v1/policy (recommended for clusters); file: each replica reads policy.path at start "
     "and on SIGHUP and proposes it when it differs from the applied policy"},
    {"policy.path", CFG_STRING, OFF(policy.path), TEXT, "", 0, 0, NULL, NULL,
     "the HuJSON policy file of file mode (required there)"},
};

#define N_ROWS (sizeof rows / sizeof rows[0])

struct parse_ctx {
    const char *name; /* of the file, for messages */
    yaml_document_t *doc;
    struct config *cfg;
    size_t line[N_ROWS]; /* where each key was set; 0: not in the file */
    char *errmsg;
};

static void *field(struct config *cfg, const struct cfg_row *row)
{
    return (char *)cfg + row->offset;
}

static const void *const_field(const struct config *cfg, const struct cfg_row *row)
{
    return (const char *)cfg + row->offset;
}

/* Copies s for a message: printable ASCII only, so a hostile file cannot
 * put escape sequences on the operator's terminal. */
static void printable(char *out, size_t cap, const char *s, size_t len)
{
    size_t n = 0;

    for (size_t i = 0; i < len && n + 1 < cap; i++)
        out[n++] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
    out[n] = '\0';
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

__attribute__((format(printf, 4, 5))) static int fail(struct parse_ctx *ctx, size_t line,
                                                      const char *key, const char *fmt, ...)
{
    char reason[200];
    char shown[KEY_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    printable(shown, sizeof shown, key, strlen(key));
    if (line > 0)
        set_errmsg(ctx->errmsg, "%s:%zu: key '%s': %s", ctx->name, line, shown, reason);
    else
        set_errmsg(ctx->errmsg, "%s: key '%s': %s", ctx->name, shown, reason);
    return CONFIG_INVALID;
}

static size_t node_line(const yaml_node_t *node)
{
    return node->start_mark.line + 1;
}

static const char *node_kind(const yaml_node_t *node)
{
    switch (node->type) {
    case YAML_SCALAR_NODE:
        return "a scalar";
    case YAML_SEQUENCE_NODE:
        return "a sequence";
    case YAML_MAPPING_NODE:
        return "a mapping";
    case YAML_NO_NODE:
        break;
    }
    return "nothing";
}

/* A plain empty, "~" or "null" scalar is YAML's null: a key without value. */
static bool is_null(const yaml_node_t *node)
{
    const char *v;

    if (node->type != YAML_SCALAR_NODE || node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    v = (const char *)node->data.scalar.value;
    return v[0] == '\0' || strcmp(v, "~") == 0 || strcasecmp(v, "null") == 0;
}

/* Units of a duration, largest first. */
static const struct {
    const char *name;
    uint64_t ms;
} duration_units[] = {{"h", HOUR_MS}, {"m", 60 * SECOND_MS}, {"s", SECOND_MS}, {"ms", 1}};

#define N_DURATION_UNITS (sizeof duration_units / sizeof duration_units[0])

/* Go's duration syntax in whole milliseconds, without sign or fractions: one
 * or more <digits><unit> ("1h30m", "500ms"), summed. */
static int parse_duration(const char *s, uint64_t *out_ms)
{
    uint64_t total = 0;

    if (*s == '\0')
        return -1;
    while (*s != '\0') {
        const char *digits = s;
        size_t unit = N_DURATION_UNITS;
        size_t unit_len = 0;
        uint64_t n = 0;

        for (; *s >= '0' && *s <= '9'; s++) {
            if (n > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
                return -1;
            n = n * 10 + (uint64_t)(*s - '0');
        }
        /* The longest unit that matches: "ms" before "m". */
        for (size_t u = 0; u < N_DURATION_UNITS; u++) {
            size_t len = strlen(duration_units[u].name);

            if (len > unit_len && strncmp(s, duration_units[u].name, len) == 0) {
                unit = u;
                unit_len = len;
            }
        }
        if (s == digits || unit == N_DURATION_UNITS ||
            n > (UINT64_MAX - total) / duration_units[unit].ms)
            return -1;
        total += n * duration_units[unit].ms;
        s += unit_len;
    }
    *out_ms = total;
    return 0;
}

/* In the largest unit that divides ms exactly ("90m", "1500ms"), which
 * parse_duration() reads back to the same value. */
static void format_duration(uint64_t ms, char buf[DURATION_TEXT_MAX])
{
    size_t u = 0;

    if (ms == 0) {
        snprintf(buf, DURATION_TEXT_MAX, "0s");
        return;
    }
    while (ms % duration_units[u].ms != 0)
        u++;
    snprintf(buf, DURATION_TEXT_MAX, "%llu%s", (unsigned long long)(ms / duration_units[u].ms),
             duration_units[u].name);
}

static int set_string(struct parse_ctx *ctx, const struct cfg_row *row, const char *text,
                      size_t line)
{
    char **slot = field(ctx->cfg, row);
    char host[CONFIG_ADDRESS_MAX];
    unsigned port;
    char *copy;

    switch (row->type) {
    case CFG_STRING:
        if (row->check != NULL && text[0] != '\0' && !row->check->valid(text))
            return fail(ctx, line, row->name, "%s", row->check->reason);
        break;
    case CFG_PATH:
        if (text[0] == '\0')
            return fail(ctx, line, row->name, "must not be empty");
        break;
    case CFG_URL:
        if (strncmp(text, "http://", 7) != 0 && strncmp(text, "https://", 8) != 0)
            return fail(ctx, line, row->name, "expected a URL starting with http:// or https://");
        break;
    case CFG_ADDR:
        if (strlen(text) >= CONFIG_ADDRESS_MAX ||
            net_address_split(text, host, sizeof host, &port) != 0)
            return fail(ctx, line, row->name, "expected host:port, e.g. 127.0.0.1:8080");
        break;
    default:
        break;
    }
    copy = strdup(text);
    if (copy == NULL)
        return CONFIG_NOMEM;
    free(*slot);
    *slot = copy;
    return 0;
}

static int set_duration(struct parse_ctx *ctx, const struct cfg_row *row, const char *text,
                        size_t line)
{
    char shown[DURATION_TEXT_MAX];
    char min[DURATION_TEXT_MAX];
    char max[DURATION_TEXT_MAX];
    uint64_t ms;

    if (parse_duration(text, &ms) != 0)
        return fail(ctx, line, row->name, "expected a duration such as 30m, 1h30m or 500ms");
    if (ms < row->min || ms > row->max) {
        printable(shown, sizeof shown, text, strlen(text));
        format_duration(row->min, min);
        format_duration(row->max, max);
        return fail(ctx, line, row->name, "%s is out of range %s..%s", shown, min, max);
    }
    *(uint64_t *)field(ctx->cfg, row) = ms;
    return 0;
}

/* Stores a scalar value; text is NUL-terminated and has no NUL inside. */
static int set_scalar(struct parse_ctx *ctx, const struct cfg_row *row, const char *text,
                      size_t line)
{
    uint64_t v;

    switch (row->type) {
    case CFG_STRING:
    case CFG_PATH:
    case CFG_URL:
    case CFG_ADDR:
        return set_string(ctx, row, text, line);
    case CFG_UINT:
        if (parse_uint(text, &v) != 0)
            return fail(ctx, line, row->name, "expected an unsigned integer");
        if (v < row->min || v > row->max)
            return fail(ctx, line, row->name, "%llu is out of range %llu..%llu",
                        (unsigned long long)v, (unsigned long long)row->min,
                        (unsigned long long)row->max);
        *(uint64_t *)field(ctx->cfg, row) = v;
        return 0;
    case CFG_DURATION:
        return set_duration(ctx, row, text, line);
    case CFG_BOOL:
        if (strcmp(text, "true") != 0 && strcmp(text, "false") != 0)
            return fail(ctx, line, row->name, "expected true or false");
        *(bool *)field(ctx->cfg, row) = text[0] == 't';
        return 0;
    case CFG_OCTAL:
        v = 0;
        for (const char *p = text; *p != '\0'; p++) {
            if (*p < '0' || *p > '7' || p - text >= 4)
                return fail(ctx, line, row->name, "expected an octal file mode, e.g. \"0770\"");
            v = v * 8 + (uint64_t)(*p - '0');
        }
        if (text[0] == '\0' || v > row->max)
            return fail(ctx, line, row->name, "expected an octal file mode, e.g. \"0770\"");
        *(unsigned *)field(ctx->cfg, row) = (unsigned)v;
        return 0;
    case CFG_ENUM:
        for (unsigned i = 0; row->choices[i] != NULL; i++) {
            if (strcasecmp(text, row->choices[i]) == 0) {
                *(unsigned *)field(ctx->cfg, row) = i;
                return 0;
            }
        }
        {
            char shown[64];
            char allowed[128] = "";

            for (unsigned i = 0; row->choices[i] != NULL; i++) {
                if (i > 0)
                    strcat(allowed, ", ");
                strcat(allowed, row->choices[i]);
            }
            printable(shown, sizeof shown, text, strlen(text));
            return fail(ctx, line, row->name, "'%s' is not one of %s", shown, allowed);
        }
    case CFG_STRING_LIST:
    case CFG_MEMBERS:
        break;
    }
    return fail(ctx, line, row->name, "expected a sequence");
}

static void strings_clear(struct config_strings *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

static int parse_member(struct parse_ctx *ctx, const struct cfg_row *row, const char *text,
                        size_t line, struct config_member *out)
{
    const char *at = strchr(text, '@');
    char id_text[24];
    size_t id_len = at != NULL ? (size_t)(at - text) : 0;

    if (at == NULL || id_len == 0 || id_len >= sizeof id_text)
        return fail(ctx, line, row->name, "expected \"ID@RAFT_ADDR\", e.g. \"1@10.0.0.1:7001\"");
    memcpy(id_text, text, id_len);
    id_text[id_len] = '\0';
    if (parse_uint(id_text, &out->id) != 0 || out->id == 0)
        return fail(ctx, line, row->name, "member id must be an integer >= 1");
    if (!is_peer_address(at + 1))
        return fail(ctx, line, row->name, "member address must be host:port with a port");
    snprintf(out->raft_address, sizeof out->raft_address, "%s", at + 1);
    return 0;
}

static int set_sequence(struct parse_ctx *ctx, const struct cfg_row *row, const yaml_node_t *seq)
{
    yaml_node_item_t *start = seq->data.sequence.items.start;
    size_t n = (size_t)(seq->data.sequence.items.top - start);
    struct config_strings strings = {0};
    struct config_members members = {0};
    int rv = 0;

    if (n > 0) {
        if (row->type == CFG_MEMBERS)
            members.items = calloc(n, sizeof *members.items);
        else
            strings.items = calloc(n, sizeof *strings.items);
        if (members.items == NULL && strings.items == NULL)
            return CONFIG_NOMEM;
    }
    for (size_t i = 0; i < n && rv == 0; i++) {
        yaml_node_t *item = yaml_document_get_node(ctx->doc, start[i]);
        const char *text;

        if (item == NULL || item->type != YAML_SCALAR_NODE || is_null(item)) {
            rv = fail(ctx, item != NULL ? node_line(item) : node_line(seq), row->name,
                      "items must be strings");
            break;
        }
        text = (const char *)item->data.scalar.value;
        if (strlen(text) != item->data.scalar.length) {
            rv = fail(ctx, node_line(item), row->name, "item contains a NUL byte");
            break;
        }
        if (row->type == CFG_MEMBERS) {
            rv = parse_member(ctx, row, text, node_line(item), &members.items[i]);
            for (size_t j = 0; rv == 0 && j < i; j++) {
                if (members.items[j].id == members.items[i].id)
                    rv = fail(ctx, node_line(item), row->name, "member id %llu appears twice",
                              (unsigned long long)members.items[i].id);
                else if (strcmp(members.items[j].raft_address, members.items[i].raft_address) == 0)
                    rv = fail(ctx, node_line(item), row->name, "address %s appears twice",
                              members.items[i].raft_address);
            }
            members.n = i + 1;
        } else if (row->check != NULL && !row->check->valid(text)) {
            rv = fail(ctx, node_line(item), row->name, "%s", row->check->reason);
        } else {
            strings.items[i] = strdup(text);
            if (strings.items[i] == NULL)
                rv = CONFIG_NOMEM;
            strings.n = i + 1;
        }
    }
    if (rv != 0) {
        free(members.items);
        strings_clear(&strings);
        return rv;
    }
    if (row->type == CFG_MEMBERS)
        *(struct config_members *)field(ctx->cfg, row) = members;
    else
        *(struct config_strings *)field(ctx->cfg, row) = strings;
    return 0;
}

static int set_value(struct parse_ctx *ctx, const struct cfg_row *row, const yaml_node_t *value)
{
    bool is_list = row->type == CFG_STRING_LIST || row->type == CFG_MEMBERS;
    const char *text;

    if (is_list) {
        if (is_null(value))
            return 0; /* stays empty */
        if (value->type != YAML_SEQUENCE_NODE)
            return fail(ctx, node_line(value), row->name, "expected a sequence, got %s",
                        node_kind(value));
        return set_sequence(ctx, row, value);
    }
    if (value->type != YAML_SCALAR_NODE)
        return fail(ctx, node_line(value), row->name, "expected a scalar, got %s",
                    node_kind(value));
    if (is_null(value))
        return fail(ctx, node_line(value), row->name, "missing value");
    /* YAML reads a quoted "true" as a string, not a boolean. */
    if (row->type == CFG_BOOL && value->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return fail(ctx, node_line(value), row->name, "expected true or false, without quotes");
    text = (const char *)value->data.scalar.value;
    if (strlen(text) != value->data.scalar.length)
        return fail(ctx, node_line(value), row->name, "value contains a NUL byte");
    return set_scalar(ctx, row, text, node_line(value));
}

static const struct cfg_row *find_row(const char *name)
{
    for (size_t i = 0; i < N_ROWS; i++) {
        if (strcmp(rows[i].name, name) == 0)
            return &rows[i];
    }
    return NULL;
}

static bool is_section(const char *name)
{
    size_t len = strlen(name);

    for (size_t i = 0; i < N_ROWS; i++) {
        if (strncmp(rows[i].name, name, len) == 0 && rows[i].name[len] == '.')
            return true;
    }
    return false;
}

static bool is_duplicate_key(const yaml_document_t *doc, const yaml_node_pair_t *first,
                             const yaml_node_pair_t *pair)
{
    const yaml_node_t *key = yaml_document_get_node((yaml_document_t *)doc, pair->key);

    for (const yaml_node_pair_t *p = first; p < pair; p++) {
        const yaml_node_t *other = yaml_document_get_node((yaml_document_t *)doc, p->key);

        if (other->data.scalar.length == key->data.scalar.length &&
            memcmp(other->data.scalar.value, key->data.scalar.value, key->data.scalar.length) == 0)
            return true;
    }
    return false;
}

/* Walks a mapping: the root (prefix "") or a section. Every key before the
 * current one was valid, which bounds the duplicate check by the table. */
static int walk_mapping(struct parse_ctx *ctx, const yaml_node_t *map, const char *prefix)
{
    const yaml_node_pair_t *first = map->data.mapping.pairs.start;

    for (const yaml_node_pair_t *pair = first; pair < map->data.mapping.pairs.top; pair++) {
        yaml_node_t *key = yaml_document_get_node(ctx->doc, pair->key);
        yaml_node_t *value = yaml_document_get_node(ctx->doc, pair->value);
        const struct cfg_row *row;
        char name[KEY_MAX];
        int rv;

        if (key == NULL || value == NULL)
            return fail(ctx, node_line(map), prefix, "malformed mapping");
        if (key->type != YAML_SCALAR_NODE)
            return fail(ctx, node_line(key), prefix, "keys must be strings, got %s",
                        node_kind(key));
        /* Names come from nesting only: a dotted key is not one of ours. */
        if (key->data.scalar.length >= KEY_MAX - strlen(prefix) - 1 ||
            strlen((const char *)key->data.scalar.value) != key->data.scalar.length ||
            strchr((const char *)key->data.scalar.value, '.') != NULL) {
            char shown[KEY_MAX];

            printable(shown, sizeof shown, (const char *)key->data.scalar.value,
                      strnlen((const char *)key->data.scalar.value, KEY_MAX - 1));
            return fail(ctx, node_line(key), shown, "unknown key");
        }
        snprintf(name, sizeof name, "%s%s%s", prefix, prefix[0] != '\0' ? "." : "",
                 (const char *)key->data.scalar.value);
        if (is_duplicate_key(ctx->doc, first, pair))
            return fail(ctx, node_line(key), name, "appears twice");
        row = find_row(name);
        if (row != NULL) {
            rv = set_value(ctx, row, value);
            if (rv != 0)
                return rv;
            ctx->line[row - rows] = node_line(key);
        } else if (is_section(name)) {
            if (is_null(value))
                continue; /* "log:" with nothing under it */
            if (value->type != YAML_MAPPING_NODE)
                return fail(ctx, node_line(value), name, "expected a mapping, got %s",
                            node_kind(value));
            rv = walk_mapping(ctx, value, name);
            if (rv != 0)
                return rv;
        } else {
            return fail(ctx, node_line(key), name, "unknown key");
        }
    }
    return 0;
}

static size_t row_index(const char *name)
{
    const struct cfg_row *row = find_row(name);

    return (size_t)(row - rows);
}

static bool is_wildcard(const char *addr)
{
    return strncmp(addr, "0.0.0.0:", 8) == 0 || strncmp(addr, "[::]:", 5) == 0;
}

/* Stores a + b in *slot, a new string. */
static int set_concat(char **slot, const char *a, const char *b)
{
    size_t len = strlen(a) + strlen(b) + 1;

    *slot = malloc(len);
    if (*slot == NULL)
        return CONFIG_NOMEM;
    snprintf(*slot, len, "%s%s", a, b);
    return 0;
}

static int derive_defaults(struct parse_ctx *ctx)
{
    struct config *cfg = ctx->cfg;
    size_t dir_len = strlen(cfg->data_dir);

    if (cfg->server_url == NULL &&
        set_concat(&cfg->server_url, cfg->tls_cert_path[0] != '\0' ? "https://" : "http://",
                   cfg->listen_addr) != 0)
        return CONFIG_NOMEM;
    if (cfg->cluster.advertise_http_addr == NULL) {
        if (is_wildcard(cfg->listen_addr))
            return fail(ctx, ctx->line[row_index("listen_addr")], "cluster.advertise_http_addr",
                        "required when listen_addr is a wildcard address (peers cannot use %s)",
                        cfg->listen_addr);
        if (set_concat(&cfg->cluster.advertise_http_addr, cfg->listen_addr, "") != 0)
            return CONFIG_NOMEM;
    }
    if (cfg->derp.server.advertise_addr == NULL) {
        if (cfg->derp.server.enabled && is_wildcard(cfg->derp.server.listen_addr))
            return fail(ctx, ctx->line[row_index("derp.server.listen_addr")],
                        "derp.server.advertise_addr",
                        "required when derp.server.listen_addr is a wildcard address");
        if (set_concat(&cfg->derp.server.advertise_addr, cfg->derp.server.listen_addr, "") != 0)
            return CONFIG_NOMEM;
    }
    if (cfg->noise.private_key_path == NULL &&
        set_concat(&cfg->noise.private_key_path, cfg->data_dir,
                   cfg->data_dir[dir_len - 1] == '/' ? "noise_private.key"
                                                     : "/noise_private.key") != 0)
        return CONFIG_NOMEM;
    return 0;
}

static int check_required(struct parse_ctx *ctx)
{
    for (size_t i = 0; i < N_ROWS; i++) {
        if (rows[i].default_kind == CFG_REQUIRED && ctx->line[i] == 0)
            return fail(ctx, 0, rows[i].name, "required (no default)");
    }
    return 0;
}

static int check_relations(struct parse_ctx *ctx)
{
    const struct config *cfg = ctx->cfg;
    const struct config_members *m = &cfg->cluster.initial_members;
    bool has_self = m->n == 0;

    if (cfg->cluster.heartbeat_timeout_ms >= cfg->cluster.election_timeout_ms)
        return fail(ctx, ctx->line[row_index("cluster.heartbeat_timeout_ms")],
                    "cluster.heartbeat_timeout_ms",
                    "must be below cluster.election_timeout_ms (%llu)",
                    (unsigned long long)cfg->cluster.election_timeout_ms);
    for (size_t i = 0; i < m->n; i++)
        has_self = has_self || m->items[i].id == cfg->cluster.id;
    if (!has_self)
        return fail(ctx, ctx->line[row_index("cluster.initial_members")], "cluster.initial_members",
                    "does not include this replica (cluster.id %llu)",
                    (unsigned long long)cfg->cluster.id);
    if ((cfg->tls_cert_path[0] == '\0') != (cfg->tls_key_path[0] == '\0')) {
        const char *missing = cfg->tls_cert_path[0] == '\0' ? "tls_cert_path" : "tls_key_path";
        const char *given = cfg->tls_cert_path[0] == '\0' ? "tls_key_path" : "tls_cert_path";

        return fail(ctx, ctx->line[row_index(given)], missing, "required with %s", given);
    }
    if ((cfg->derp.server.tls_cert_path[0] == '\0') != (cfg->derp.server.tls_key_path[0] == '\0'))
        return fail(ctx, ctx->line[row_index("derp.server.tls_cert_path")],
                    "derp.server.tls_key_path", "set both derp.server TLS paths or neither");
    if (cfg->policy.mode == CONFIG_POLICY_FILE && cfg->policy.path[0] == '\0')
        return fail(ctx, ctx->line[row_index("policy.mode")], "policy.path",
                    "required when policy.mode is file");
    /* Node names are <node>.<base_domain>: MagicDNS needs a domain. */
    if (cfg->dns.magic_dns && cfg->dns.base_domain[0] == '\0')
        return fail(ctx, ctx->line[row_index("dns.base_domain")], "dns.base_domain",
                    "must not be empty while dns.magic_dns is true");
    return 0;
}

static int apply_defaults(struct parse_ctx *ctx)
{
    for (size_t i = 0; i < N_ROWS; i++) {
        if (rows[i].default_kind == CFG_DEFAULT_TEXT) {
            int rv = set_scalar(ctx, &rows[i], rows[i].def, 0);

            if (rv == CONFIG_NOMEM)
                return rv;
            assert(rv == 0); /* a default its own row refuses is our bug */
        }
    }
    return 0;
}

static int load_document(struct parse_ctx *ctx, const char *buf, size_t len)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    yaml_document_t next;
    yaml_node_t *root;
    int rv = 0;

    if (!yaml_parser_initialize(&parser))
        return CONFIG_NOMEM;
    yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
    if (!yaml_parser_load(&parser, &doc))
        goto err_syntax;
    ctx->doc = &doc;
    root = yaml_document_get_root_node(&doc);
    if (root != NULL && root->type != YAML_MAPPING_NODE && !is_null(root))
        rv = fail(ctx, node_line(root), "(top level)", "expected a mapping of keys, got %s",
                  node_kind(root));
    else if (root != NULL && root->type == YAML_MAPPING_NODE)
        rv = walk_mapping(ctx, root, "");
    yaml_document_delete(&doc);
    ctx->doc = NULL;
    if (rv != 0)
        goto out;
    if (!yaml_parser_load(&parser, &next))
        goto err_syntax;
    root = yaml_document_get_root_node(&next);
    if (root != NULL)
        rv = fail(ctx, node_line(root), "(top level)", "a second YAML document is not allowed");
    yaml_document_delete(&next);
    goto out;

err_syntax:
    if (parser.error == YAML_MEMORY_ERROR) {
        rv = CONFIG_NOMEM;
    } else {
        rv = CONFIG_SYNTAX;
        set_errmsg(ctx->errmsg, "%s:%zu: YAML: %s%s%s", ctx->name, parser.problem_mark.line + 1,
                   parser.problem != NULL ? parser.problem : "error",
                   parser.context != NULL ? " " : "", parser.context != NULL ? parser.context : "");
    }
out:
    yaml_parser_delete(&parser);
    return rv;
}

void config_free(struct config *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < N_ROWS; i++) {
        void *slot = field(cfg, &rows[i]);

        switch (rows[i].type) {
        case CFG_STRING:
        case CFG_PATH:
        case CFG_URL:
        case CFG_ADDR:
            free(*(char **)slot);
            break;
        case CFG_STRING_LIST:
            strings_clear(slot);
            break;
        case CFG_MEMBERS:
            free(((struct config_members *)slot)->items);
            break;
        case CFG_UINT:
        case CFG_DURATION:
        case CFG_BOOL:
        case CFG_OCTAL:
        case CFG_ENUM:
            break;
        }
    }
    free(cfg);
}

int config_parse(const char *name, const char *buf, size_t len, struct config **out, char *errmsg)
{
    struct parse_ctx ctx = {.name = name, .errmsg = errmsg};
    int rv;

    ctx.cfg = calloc(1, sizeof *ctx.cfg);
    if (ctx.cfg == NULL)
        return CONFIG_NOMEM;
    rv = apply_defaults(&ctx);
    if (rv == 0)
        rv = load_document(&ctx, buf, len);
    if (rv == 0)
        rv = check_required(&ctx);
    if (rv == 0)
        rv = derive_defaults(&ctx);
    if (rv == 0)
        rv = check_relations(&ctx);
    if (rv != 0) {
        if (rv == CONFIG_NOMEM)
            set_errmsg(errmsg, "%s: out of memory", name);
        config_free(ctx.cfg);
        return rv;
    }
    *out = ctx.cfg;
    return 0;
}

int config_load(const char *path, struct config **out, char *errmsg)
{
    FILE *f;
    char *buf;
    size_t len;
    int rv;

    if (path == NULL)
        return config_parse("(no config file)", "", 0, out, errmsg);
    f = fopen(path, "rb");
    if (f == NULL) {
        set_errmsg(errmsg, "%s: %s", path, strerror(errno));
        return CONFIG_IO;
    }
    buf = malloc(CONFIG_FILE_MAX_BYTES + 1);
    if (buf == NULL) {
        fclose(f);
        return CONFIG_NOMEM;
    }
    len = fread(buf, 1, CONFIG_FILE_MAX_BYTES + 1, f);
    if (ferror(f) || len > CONFIG_FILE_MAX_BYTES) {
        set_errmsg(errmsg, "%s: %s", path,
                   ferror(f) ? "read error" : "larger than 1 MiB, not a config file");
        rv = CONFIG_IO;
    } else {
        rv = config_parse(path, buf, len, out, errmsg);
    }
    free(buf);
    fclose(f);
    return rv;
}

/* A YAML double-quoted scalar. */
static void print_quoted(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;

        if (ch == '"' || ch == '\\')
            fprintf(out, "\\%c", ch);
        else if (ch < 0x20 || ch == 0x7f)
            fprintf(out, "\\x%02x", ch);
        else
            fputc(ch, out);
    }
    fputc('"', out);
}

static void print_value(FILE *out, const struct config *cfg, const struct cfg_row *row)
{
    const void *slot = const_field(cfg, row);
    char text[DURATION_TEXT_MAX];

    switch (row->type) {
    case CFG_STRING:
    case CFG_PATH:
    case CFG_URL:
    case CFG_ADDR:
        print_quoted(out, *(char *const *)slot);
        break;
    case CFG_UINT:
        fprintf(out, "%llu", (unsigned long long)*(const uint64_t *)slot);
        break;
    case CFG_DURATION:
        format_duration(*(const uint64_t *)slot, text);
        fputs(text, out);
        break;
    case CFG_BOOL:
        fputs(*(const bool *)slot ? "true" : "false", out);
        break;
    case CFG_OCTAL:
        fprintf(out, "\"%04o\"", *(const unsigned *)slot);
        break;
    case CFG_ENUM:
        fputs(row->choices[*(const unsigned *)slot], out);
        break;
    case CFG_STRING_LIST: {
        const struct config_strings *l = slot;

        fputc('[', out);
        for (size_t i = 0; i < l->n; i++) {
            fputs(i > 0 ? ", " : "", out);
            print_quoted(out, l->items[i]);
        }
        fputc(']', out);
        break;
    }
    case CFG_MEMBERS: {
        const struct config_members *m = slot;

        fputc('[', out);
        for (size_t i = 0; i < m->n; i++)
            fprintf(out, "%s\"%llu@%s\"", i > 0 ? ", " : "", (unsigned long long)m->items[i].id,
                    m->items[i].raft_address);
        fputc(']', out);
        break;
    }
    }
}

/* Length of the sections part of a key: 15 ("dns.nameservers") for
 * "dns.nameservers.global", 0 for a top-level key. */
static size_t sections_len(const char *name)
{
    const char *dot = strrchr(name, '.');

    return dot != NULL ? (size_t)(dot - name) : 0;
}

/* Opens the sections of name that the previous key was not in; returns the
 * nesting depth of name. */
static int print_sections(FILE *out, const char *prev, const char *name)
{
    size_t prev_len = sections_len(prev);
    size_t len = sections_len(name);
    size_t start = 0;
    int depth = 0;

    while (start < len) {
        const char *dot = memchr(name + start, '.', len - start);
        size_t end = dot != NULL ? (size_t)(dot - name) : len;
        bool is_open = end <= prev_len && strncmp(prev, name, end) == 0 &&
                       (end == prev_len || prev[end] == '.');

        if (!is_open)
            fprintf(out, "%*s%.*s:\n", 2 * depth, "", (int)(end - start), name + start);
        start = end + 1;
        depth++;
    }
    return depth;
}

void config_print(const struct config *cfg, FILE *out)
{
    const char *prev = "";

    for (size_t i = 0; i < N_ROWS; i++) {
        const char *name = rows[i].name;
        int indent = 2 * print_sections(out, prev, name);
        size_t len = sections_len(name);

        fprintf(out, "%*s# %s\n%*s%s: ", indent, "", rows[i].doc, indent, "",
                name + len + (len > 0));
        print_value(out, cfg, &rows[i]);
        fputc('\n', out);
        prev = name;
    }
}

static const char *type_doc(const struct cfg_row *row)
{
    switch (row->type) {
    case CFG_STRING:
        return row->check != NULL ? row->check->doc : "string";
    case CFG_PATH:
        return "path";
    case CFG_URL:
        return "URL";
    case CFG_ADDR:
        return "host:port";
    case CFG_UINT:
        return "integer";
    case CFG_DURATION:
        return "duration";
    case CFG_BOOL:
        return "boolean";
    case CFG_OCTAL:
        return "octal mode";
    case CFG_ENUM:
        return "choice";
    case CFG_STRING_LIST:
        return row->check != NULL ? row->check->doc : "list of strings";
    case CFG_MEMBERS:
        return "list of ID@host:port";
    }
    return "?";
}

/* The range column: bounds of numbers and durations, enum choices. */
static void print_range(FILE *out, const struct cfg_row *row)
{
    char min[DURATION_TEXT_MAX];
    char max[DURATION_TEXT_MAX];

    if (row->type == CFG_UINT)
        fprintf(out, "%llu..%llu", (unsigned long long)row->min, (unsigned long long)row->max);
    if (row->type == CFG_DURATION) {
        format_duration(row->min, min);
        format_duration(row->max, max);
        fprintf(out, "%s..%s", min, max);
    }
    for (size_t c = 0; row->choices != NULL && row->choices[c] != NULL; c++)
        fprintf(out, "%s`%s`", c > 0 ? ", " : "", row->choices[c]);
}

void config_doc(FILE *out)
{
    fputs("# Configuration\n\n"
          "Generated by `concord config doc` from the table in server/config.c; do not edit by\n"
          "hand. The file is YAML; keys with a dot live in the section named before the dot\n"
          "(`cluster.id` is `id:` under `cluster:`, `dns.nameservers.global` is `global:` under\n"
          "`nameservers:` under `dns:`). Durations are written like Go's, in whole\n"
          "milliseconds: numbers with a unit `h`, `m`, `s` or `ms`, one after the other\n"
          "(`30m`, `1h30m`, `500ms`). Booleans are `true` or `false`, unquoted. Unknown keys and\n"
          "invalid values are refused at start with the file's name and line.\n"
          "`concord config check -c FILE` prints the effective configuration.\n\n"
          "| key | type | default | range | meaning |\n"
          "| --- | --- | --- | --- | --- |\n",
          out);
    for (size_t i = 0; i < N_ROWS; i++) {
        const struct cfg_row *row = &rows[i];

        fprintf(out, "| `%s` | %s | ", row->name, type_doc(row));
        switch (row->default_kind) {
        case CFG_DEFAULT_TEXT:
            fprintf(out, row->def[0] != '\0' ? "`%s`" : "`\"%s\"`", row->def);
            break;
        case CFG_DEFAULT_EMPTY:
            fputs("empty", out);
            break;
        case CFG_DEFAULT_DERIVED:
            fputs("derived", out);
            break;
        case CFG_REQUIRED:
            fputs("required", out);
            break;
        }
        fputs(" | ", out);
        print_range(out, row);
        fprintf(out, " | %s |\n", row->doc);
    }
}

static void secret_error(char *errmsg, const char *path, const char *why)
{
    set_errmsg(errmsg, "cluster secret %s: %s", path, why);
}

int config_secret_read(const char *path, uint8_t key[CONFIG_SECRET_BYTES], char *errmsg)
{
    char buf[2 * CONFIG_SECRET_BYTES + 2];
    char why[96];
    struct stat st;
    size_t bin_len = 0;
    ssize_t n;
    int fd;
    int rv = CONFIG_SECRET;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        secret_error(errmsg, path, strerror(errno));
        return CONFIG_IO;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        secret_error(errmsg, path, "not a regular file");
        goto out;
    }
    if ((st.st_mode & 077) != 0) {
        snprintf(why, sizeof why, "mode %04o lets group or others read it; chmod 600 it",
                 (unsigned)(st.st_mode & 07777));
        secret_error(errmsg, path, why);
        goto out;
    }
    n = read(fd, buf, sizeof buf);
    if (n < 0) {
        secret_error(errmsg, path, strerror(errno));
        rv = CONFIG_IO;
        goto out;
    }
    if (!(n == 2 * CONFIG_SECRET_BYTES ||
          (n == 2 * CONFIG_SECRET_BYTES + 1 && buf[2 * CONFIG_SECRET_BYTES] == '\n')) ||
        sodium_hex2bin(key, CONFIG_SECRET_BYTES, buf, 2 * CONFIG_SECRET_BYTES, NULL, &bin_len,
                       NULL) != 0 ||
        bin_len != CONFIG_SECRET_BYTES) {
        sodium_memzero(key, CONFIG_SECRET_BYTES);
        secret_error(errmsg, path, "expected 64 hex characters and an optional newline");
        goto out;
    }
    rv = 0;
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

int config_secret_generate(const char *path, FILE *out, char *errmsg)
{
    uint8_t key[CONFIG_SECRET_BYTES];
    char line[2 * CONFIG_SECRET_BYTES + 2];
    int fd;
    int rv = 0;

    if (sodium_init() < 0) {
        secret_error(errmsg, path != NULL ? path : "-", "libsodium failed to initialise");
        return CONFIG_SECRET;
    }
    randombytes_buf(key, sizeof key);
    sodium_bin2hex(line, sizeof line, key, sizeof key);
    line[2 * CONFIG_SECRET_BYTES] = '\n';
    if (path == NULL) {
        if (fwrite(line, 1, sizeof line - 1, out) != sizeof line - 1 || fflush(out) != 0)
            rv = CONFIG_IO;
        goto out;
    }
    /* O_EXCL: an existing secret is never replaced, or the replica would no
     * longer talk to its peers. */
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        secret_error(errmsg, path,
                     errno == EEXIST ? "exists; refusing to overwrite it" : strerror(errno));
        rv = CONFIG_IO;
        goto out;
    }
    if (write_all(fd, line, sizeof line - 1) != 0 || fsync(fd) != 0) {
        secret_error(errmsg, path, strerror(errno));
        rv = CONFIG_IO;
        unlink(path);
    }
    close(fd);
out:
    sodium_memzero(key, sizeof key);
    sodium_memzero(line, sizeof line);
    return rv;
}
