/* server/config.h: the YAML configuration file, read once at start into an
 * immutable struct config. Keys follow Headscale's names where the meaning is
 * the same, plus cluster: and control: sections; one table in config.c
 * (name, type, default, bounds, doc) drives parsing, defaults, checking and
 * printing.
 * An unknown key, a value of the wrong type or out of bounds is an error
 * "FILE:LINE: key 'x.y': reason", and the server refuses to start.
 * The cluster secret file (cluster.secret_path) is read and written here too. */
#ifndef CONCORD_SERVER_CONFIG_H
#define CONCORD_SERVER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CONFIG_CODES(X)                                                                            \
    X(CONFIG_OK, "ok")                                                                             \
    X(CONFIG_NOMEM, "out of memory")                                                               \
    X(CONFIG_IO, "cannot read or write the file")                                                  \
    X(CONFIG_SYNTAX, "not valid YAML")                                                             \
    X(CONFIG_INVALID, "invalid configuration")                                                     \
    X(CONFIG_SECRET, "unusable cluster secret")

enum config_code {
#define X(code, msg) code,
    CONFIG_CODES(X)
#undef X
};
const char *config_strerror(int code);

#define CONFIG_SECRET_BYTES 32
#define CONFIG_ADDRESS_MAX  64 /* with the NUL, like struct cluster_member's addresses */

/* An entry of cluster.initial_members: "ID@RAFT_ADDR". */
struct config_member {
    uint64_t id;
    char raft_address[CONFIG_ADDRESS_MAX];
};

struct config_members {
    struct config_member *items;
    size_t n;
};

struct config_strings {
    char **items;
    size_t n;
};

struct config {
    char *server_url;
    char *listen_addr;
    char *tls_cert_path; /* "" (with tls_key_path ""): plain HTTP on listen_addr */
    char *tls_key_path;
    char *unix_socket; /* "" disables the Unix socket */
    unsigned unix_socket_permission;
    char *data_dir;
    uint64_t ephemeral_node_inactivity_timeout_ms;
    struct {
        unsigned level;  /* enum log_level */
        unsigned format; /* enum log_format */
    } log;
    struct {
        uint64_t id;
        char *raft_listen_addr;
        char *advertise_http_addr;
        char *secret_path;
        struct config_members initial_members; /* empty: no bootstrap from the config */
        struct config_strings join;            /* peer client addresses "host:port" */
        uint64_t election_timeout_ms;
        uint64_t heartbeat_timeout_ms;
        uint64_t snapshot_threshold;
        uint64_t snapshot_trailing;
        uint64_t ready_max_apply_lag;
    } cluster;
    struct {
        uint64_t max_body_bytes;       /* TCP listener */
        uint64_t max_local_body_bytes; /* Unix socket */
    } http;
    struct {
        char *private_key_path; /* "privkey:<64 hex>", the same file on every replica */
    } noise;
    struct {
        bool magic_dns;
        char *base_domain;                    /* "" only when !magic_dns */
        struct config_strings nameservers;    /* dns.nameservers.global */
        struct config_strings search_domains; /* DNS names */
    } dns;
    struct {
        char *map_path; /* JSON DERPMap file; "": none */
        struct {
            bool enabled;
            char *listen_addr;      /* TLS */
            char *advertise_addr;   /* host:port in the DERP map */
            char *stun_listen_addr; /* UDP; "": none */
            bool mesh;              /* one meshed region, else a region per relay */
            uint64_t region_id;
            char *region_code;
            char *region_name;
            char *tls_cert_path; /* "": tls_cert_path, else self-signed */
            char *tls_key_path;
        } server;
    } derp;
    struct {
        uint64_t keepalive_interval_ms;
        uint64_t liveness_interval_ms;
        uint64_t pending_registration_ttl_ms;
    } control;
    struct {
        unsigned mode; /* enum config_policy_mode */
        char *path;    /* file mode: the policy file */
    } policy;
};

/* Where the ACL policy comes from: the replicated state, set through the API
 * and CLI; or a file each replica reads at start and on SIGHUP and proposes
 * through Raft when it differs from the applied one. */
enum config_policy_mode { CONFIG_POLICY_DATABASE, CONFIG_POLICY_FILE };

/* Parses a YAML document from memory; `name` stands for the file in error
 * messages. An empty buffer gives the defaults, which fail only for the keys
 * that have none (cluster.id, cluster.secret_path). On 0, *out is yours until
 * config_free(); on error errmsg (256 bytes) says "NAME:LINE: key 'x': why"
 * and nothing is allocated. */
int config_parse(const char *name, const char *buf, size_t len, struct config **out, char *errmsg);
/* Reads the file at path and parses it. path NULL: no file, the defaults. */
int config_load(const char *path, struct config **out, char *errmsg);
void config_free(struct config *cfg); /* NULL is fine */

/* Writes the effective configuration (defaults included) as YAML that
 * config_parse() reads back to the same values. */
void config_print(const struct config *cfg, FILE *out);
/* Writes the reference of every key (docs/configuration.md) as Markdown. */
void config_doc(FILE *out);

/* Reads the cluster secret: 64 hex characters and an optional newline, in a
 * regular file that neither group nor others may access (0600 or stricter).
 * CONFIG_SECRET with the reason in errmsg otherwise. The caller wipes key. */
int config_secret_read(const char *path, uint8_t key[CONFIG_SECRET_BYTES], char *errmsg);
/* Writes a new random secret to path (created 0600, never overwritten:
 * CONFIG_IO if it exists), or to `out` when path is NULL. */
int config_secret_generate(const char *path, FILE *out, char *errmsg);

#endif
