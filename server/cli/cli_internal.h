/* server/cli/cli_internal.h: what the files of server/cli/ share, and what
 * the unit tests reach: the argument parser, durations, the blocking HTTP
 * client and the output formats. */
#ifndef CONCORD_SERVER_CLI_CLI_INTERNAL_H
#define CONCORD_SERVER_CLI_CLI_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#define CLI_EXIT_OK    0
#define CLI_EXIT_FAIL  1
#define CLI_EXIT_USAGE 2

#define CLI_DEFAULT_SOCKET "/var/run/concord/concord.sock"

enum cli_output { CLI_OUTPUT_TABLE, CLI_OUTPUT_JSON, CLI_OUTPUT_JSON_LINE, CLI_OUTPUT_YAML };

/* Global options and where output goes. */
struct cli {
    enum cli_output output;
    bool is_stale; /* reads with ?consistent=false */
    bool is_force; /* no confirmation prompts */
    const char *socket_path;
    const char *address; /* "http://host:port"; NULL: use the socket */
    const char *api_key;
    unsigned timeout_ms;
    FILE *out;
    FILE *err;
};

/* cli_main with the options struct given (tests point out and err at
 * memory streams). */
int cli_run(struct cli *cli, int argc, char **argv);

/* ---- arguments ---- */
#define CLI_MAX_FLAGS 8
#define CLI_MAX_ARGS  4

struct cli_flag {
    const char *long_name; /* "display-name" */
    char short_name;       /* 'd', or 0 */
    bool takes_value;
    const char *help; /* "NAME  the display name"; shown in usage */
};

struct cli_args {
    const char *values[CLI_MAX_FLAGS]; /* by flag index: the value, "" for a set switch */
    const char *pos[CLI_MAX_ARGS];
    size_t n_pos;
};

/* Global flags (-o, --stale, --force, --socket, --address, --api-key,
 * --help) are recognized wherever they appear; cli->... is set from them.
 * Parses argv[0..argc) against `flags` (n <= CLI_MAX_FLAGS) into out,
 * accepting "--name value", "--name=value", "-n value" and "--" ending the
 * flags. Returns 0, 1 when --help was asked for, or -1 with a message in err. */
int cli_args_parse(struct cli *cli, const struct cli_flag *flags, size_t n, int argc, char **argv,
                   struct cli_args *out, char *err, size_t cap);

/* Durations like 30m, 1h, 90d, 1h30m (units s m h d w y; y = 365 d) into
 * seconds; -1 if malformed, zero or overflowing. */
int cli_duration_parse(const char *text, int64_t *seconds);
/* now + seconds as RFC 3339 UTC ("2026-01-02T03:04:05Z") into buf[32]. */
void cli_rfc3339_after(int64_t now_unix_s, int64_t seconds, char buf[32]);

/* ---- HTTP ---- */
struct cli_response {
    int status; /* HTTP status */
    char *body; /* NUL-terminated; free() it */
    size_t len;
    char etag[64]; /* ETag header without quotes, "" if none */
};

/* One blocking request to the server cli points at (Unix socket or
 * address). path includes any query. body may be NULL. Returns 0 with *out
 * filled (whatever the status), or -1 with a message in err. */
int cli_http(const struct cli *cli, const char *method, const char *path, const char *content_type,
             const void *body, size_t len, const char *extra_headers, struct cli_response *out,
             char *err, size_t cap);

/* Percent-encodes text for one path segment or query value. */
void cli_url_encode(const char *text, char *buf, size_t cap);

/* ---- requests with the usual error handling (commands.c) ---- */
/* Sends a JSON request (body may be NULL), appends ?consistent=false for GETs
 * under --stale, and parses a JSON answer into *out (may be NULL to ignore).
 * On a transport or server error prints "Error: <message>" and returns
 * CLI_EXIT_FAIL; otherwise CLI_EXIT_OK. */
int cli_call(const struct cli *cli, const char *method, const char *path, json_t *body,
             json_t **out, struct cli_response *raw);
/* The same with extra "Name: value\r\n" header lines. */
int cli_call_ex(const struct cli *cli, const char *method, const char *path, json_t *body,
                const char *extra_headers, json_t **out, struct cli_response *raw);
/* The same with a body that is not JSON. */
int cli_call_raw(const struct cli *cli, const char *method, const char *path,
                 const char *content_type, const void *body, size_t len, const char *extra_headers,
                 json_t **out, struct cli_response *raw);
/* Reads a whole file ("-" is stdin) of at most max_bytes; NULL with the
 * error printed. *len excludes the NUL added at the end. */
char *cli_file_read(const struct cli *cli, const char *path, size_t max_bytes, size_t *len);

/* Prints what a command got back: `message` in human mode, the value
 * otherwise. */
void cli_print_result(const struct cli *cli, const json_t *value, const char *message);
/* A user's id from its name, or from an id when is_id_allowed and text is
 * a number; CLI_EXIT_OK or an exit status (the error printed). */
int cli_user_id(const struct cli *cli, const char *text, bool is_id_allowed, uint64_t *id);
/* "a,b,c" as a JSON array of strings; NULL on out-of-memory. */
json_t *cli_split_list(const char *text);

/* Asks "<question> [y/N]" on a terminal; --force answers yes; without a
 * terminal refuses. Returns true to go ahead. */
bool cli_confirm(const struct cli *cli, const char *question);

/* ---- output (output.c) ---- */
/* Prints value as JSON, JSON lines or YAML according to cli->output. */
void cli_print_value(const struct cli *cli, const json_t *value);

struct cli_column {
    const char *title;
    const char *key; /* member of each row object; dotted for nested ("user.name") */
};
/* Prints rows (a JSON array of objects) as a table in human mode, else as
 * the value itself. */
void cli_print_table(const struct cli *cli, const json_t *rows, const struct cli_column *cols,
                     size_t n_cols);
/* Renders one cell: strings as is, arrays joined with ",", null as "",
 * booleans as yes/no. */
void cli_cell_text(const json_t *v, char *buf, size_t cap);

/* ---- commands ---- */
struct cli_verb {
    const char *names; /* "list|ls|show": the first is the canonical name */
    const char *args;  /* positional arguments for the usage line, "" if none */
    const char *summary;
    struct cli_flag flags[CLI_MAX_FLAGS];
    size_t min_args, max_args;
    int (*run)(struct cli *cli, const struct cli_args *args);
};

struct cli_noun {
    const char *names; /* "users|user" */
    const char *summary;
    const struct cli_verb *verbs;
    size_t n_verbs;
};

extern const struct cli_noun cli_users_noun;
extern const struct cli_noun cli_nodes_noun;
extern const struct cli_noun cli_auth_noun;
extern const struct cli_noun cli_preauthkeys_noun;
extern const struct cli_noun cli_apikeys_noun;
extern const struct cli_noun cli_policy_noun;
extern const struct cli_noun cli_cluster_noun;
extern const struct cli_noun cli_audit_noun;

/* True if `name` is one of the '|'-separated names. */
bool cli_name_matches(const char *names, const char *name);
/* Prints the usage of one verb to f. */
void cli_verb_usage(FILE *f, const struct cli_noun *noun, const struct cli_verb *verb);
/* A usage error found by a command: prints "Error: <message>" and returns
 * CLI_EXIT_USAGE, after which cli_main prints the command's usage. */
int cli_usage(const struct cli *cli, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A positive decimal id; -1 otherwise. */
int cli_parse_id(const char *text, uint64_t *id);

#endif
