/* server/cli/cli.c: `concord <noun> <verb> [flags] [args]`, dispatched
 * through the noun and verb tables of the other files, with Headscale's
 * nouns, verbs and aliases. Global flags may appear anywhere. */
#include "server/cli/cli.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/cli/cli_internal.h"

#define CLI_DEFAULT_TIMEOUT_MS 120000

static const struct cli_noun *const nouns[] = {
    &cli_users_noun,   &cli_nodes_noun,  &cli_auth_noun,    &cli_preauthkeys_noun,
    &cli_apikeys_noun, &cli_policy_noun, &cli_cluster_noun, &cli_audit_noun,
};

/* Commands server/main.c runs itself; listed so that `concord help` is whole. */
static const char *const server_commands[][2] = {
    {"serve", "run a replica"},
    {"cluster init", "bootstrap a new cluster on its first replicas"},
    {"config check", "validate the configuration file and print the effective settings"},
    {"version", "print the version"},
    {"generate cluster-secret", "write a new secret shared by the replicas"},
};

enum global_flag { G_OUTPUT, G_STALE, G_FORCE, G_SOCKET, G_ADDRESS, G_API_KEY, G_HELP };

static const struct cli_flag global_flags[] = {
    [G_OUTPUT] = {"output", 'o', true, "FORMAT  json, json-line or yaml (default: tables)"},
    [G_STALE] = {"stale", 0, false, "read this replica's state without a Raft barrier"},
    [G_FORCE] = {"force", 0, false, "do not ask for confirmation"},
    [G_SOCKET] = {"socket", 0, true,
                  "PATH  the admin socket ($CONCORD_SOCKET, default " CLI_DEFAULT_SOCKET ")"},
    [G_ADDRESS] = {"address", 0, true,
                   "URL  a remote replica, http://host:port "
                   "($CONCORD_ADDRESS)"},
    [G_API_KEY] = {"api-key", 0, true, "KEY  the API key for --address ($CONCORD_API_KEY)"},
    [G_HELP] = {"help", 'h', false, "show help"},
};
#define N_GLOBAL_FLAGS (sizeof global_flags / sizeof global_flags[0])

bool cli_name_matches(const char *names, const char *name)
{
    size_t len = strlen(name);

    for (const char *p = names; *p != '\0';) {
        size_t n = strcspn(p, "|");
        if (n == len && strncmp(p, name, len) == 0)
            return true;
        p += n;
        if (*p == '|')
            p++;
    }
    return false;
}

/* The first of the '|'-separated names. */
static int name_len(const char *names)
{
    return (int)strcspn(names, "|");
}

int cli_parse_id(const char *text, uint64_t *id)
{
    uint64_t v = 0;

    if (text == NULL || *text == '\0' || strlen(text) > 20)
        return -1;
    for (const char *p = text; *p != '\0'; p++) {
        if (*p < '0' || *p > '9' || v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
            return -1;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    if (v == 0)
        return -1;
    *id = v;
    return 0;
}

int cli_usage(const struct cli *cli, const char *fmt, ...)
{
    va_list ap;

    fprintf(cli->err, "Error: ");
    va_start(ap, fmt);
    vfprintf(cli->err, fmt, ap);
    va_end(ap);
    fprintf(cli->err, "\n");
    return CLI_EXIT_USAGE;
}

bool cli_confirm(const struct cli *cli, const char *question)
{
    char line[16];

    if (cli->is_force)
        return true;
    if (!isatty(STDIN_FILENO)) {
        fprintf(cli->err, "Error: %s: refusing without a terminal to confirm; pass --force\n",
                question);
        return false;
    }
    fprintf(cli->err, "%s [y/N] ", question);
    fflush(cli->err);
    if (fgets(line, sizeof line, stdin) == NULL)
        return false;
    return strcmp(line, "y\n") == 0 || strcmp(line, "yes\n") == 0 || strcmp(line, "Y\n") == 0;
}

/* ---- argument parsing ---- */

/* Finds a flag by long name (len bytes of name) or short name. */
static int flag_find(const struct cli_flag *flags, size_t n, const char *name, size_t len,
                     char short_name)
{
    for (size_t i = 0; i < n && flags[i].long_name != NULL; i++) {
        if (short_name != 0
                ? flags[i].short_name == short_name
                : strlen(flags[i].long_name) == len && strncmp(flags[i].long_name, name, len) == 0)
            return (int)i;
    }
    return -1;
}

/* Applies a global flag; 0, 1 for --help, or -1 with a message. */
static int global_apply(struct cli *cli, int which, const char *value, char *err, size_t cap)
{
    switch (which) {
    case G_OUTPUT:
        if (strcmp(value, "json") == 0)
            cli->output = CLI_OUTPUT_JSON;
        else if (strcmp(value, "json-line") == 0)
            cli->output = CLI_OUTPUT_JSON_LINE;
        else if (strcmp(value, "yaml") == 0)
            cli->output = CLI_OUTPUT_YAML;
        else {
            snprintf(err, cap, "--output: expected json, json-line or yaml, not \"%s\"", value);
            return -1;
        }
        return 0;
    case G_STALE:
        cli->is_stale = true;
        return 0;
    case G_FORCE:
        cli->is_force = true;
        return 0;
    case G_SOCKET:
        cli->socket_path = value;
        return 0;
    case G_ADDRESS:
        cli->address = value;
        return 0;
    case G_API_KEY:
        cli->api_key = value;
        return 0;
    default:
        return 1;
    }
}

/* Parses the flag at argv[*i] (which starts with '-'), advancing *i past it
 * and its value. Returns 0, 1 for --help, or -1 with a message. */
static int flag_take(struct cli *cli, const struct cli_flag *flags, size_t n, int argc, char **argv,
                     int *i, struct cli_args *out, char *err, size_t cap)
{
    const char *arg = argv[*i], *value = NULL, *name;
    size_t len;
    char short_name = 0;
    bool is_global = false;
    int k;

    if (arg[1] == '-') {
        name = arg + 2;
        len = strcspn(name, "=");
        if (name[len] == '=')
            value = name + len + 1;
    } else {
        name = arg + 1;
        len = 1;
        short_name = arg[1];
        if (arg[2] != '\0')
            value = arg + 2;
    }
    k = flags != NULL ? flag_find(flags, n, name, len, short_name) : -1;
    if (k < 0) {
        k = flag_find(global_flags, N_GLOBAL_FLAGS, name, len, short_name);
        is_global = true;
    }
    if (k < 0) {
        snprintf(err, cap, "unknown flag %s", arg);
        return -1;
    }
    const struct cli_flag *f = is_global ? &global_flags[k] : &flags[k];
    (*i)++;
    if (f->takes_value && value == NULL) {
        if (*i >= argc) {
            snprintf(err, cap, "flag --%s needs a value", f->long_name);
            return -1;
        }
        value = argv[(*i)++];
    } else if (!f->takes_value && value != NULL) {
        snprintf(err, cap, "flag --%s takes no value", f->long_name);
        return -1;
    }
    if (is_global)
        return global_apply(cli, k, value, err, cap);
    out->values[k] = value != NULL ? value : "";
    return 0;
}

static bool is_flag(const char *arg)
{
    return arg[0] == '-' && arg[1] != '\0';
}

int cli_args_parse(struct cli *cli, const struct cli_flag *flags, size_t n, int argc, char **argv,
                   struct cli_args *out, char *err, size_t cap)
{
    bool is_help = false;
    int i = 0;

    memset(out, 0, sizeof *out);
    while (i < argc) {
        if (strcmp(argv[i], "--") == 0) {
            for (i++; i < argc; i++) {
                if (out->n_pos == CLI_MAX_ARGS) {
                    snprintf(err, cap, "too many arguments");
                    return -1;
                }
                out->pos[out->n_pos++] = argv[i];
            }
            break;
        }
        if (is_flag(argv[i])) {
            int rv = flag_take(cli, flags, n, argc, argv, &i, out, err, cap);
            if (rv < 0)
                return -1;
            is_help = is_help || rv == 1;
            continue;
        }
        if (out->n_pos == CLI_MAX_ARGS) {
            snprintf(err, cap, "too many arguments");
            return -1;
        }
        out->pos[out->n_pos++] = argv[i++];
    }
    return is_help ? 1 : 0;
}

/* ---- help ---- */

static void flag_usage(FILE *f, const struct cli_flag *flag)
{
    const char *help = flag->help;
    const char *gap = strstr(help, "  ");
    char left[48];

    /* "NAME  text" documents the value's name before the text. */
    if (flag->takes_value && gap != NULL)
        snprintf(left, sizeof left, "--%s %.*s", flag->long_name, (int)(gap - help), help);
    else
        snprintf(left, sizeof left, "--%s", flag->long_name);
    if (flag->short_name != 0)
        fprintf(f, "  -%c, %-28s %s\n", flag->short_name, left,
                flag->takes_value && gap != NULL ? gap + 2 : help);
    else
        fprintf(f, "      %-28s %s\n", left, flag->takes_value && gap != NULL ? gap + 2 : help);
}

static void globals_usage(FILE *f)
{
    fprintf(f, "\nGlobal flags:\n");
    for (size_t i = 0; i < N_GLOBAL_FLAGS; i++)
        flag_usage(f, &global_flags[i]);
}

void cli_verb_usage(FILE *f, const struct cli_noun *noun, const struct cli_verb *verb)
{
    fprintf(f, "Usage: concord %.*s %.*s", name_len(noun->names), noun->names,
            name_len(verb->names), verb->names);
    for (size_t i = 0; i < CLI_MAX_FLAGS && verb->flags[i].long_name != NULL; i++)
        fprintf(f, " [--%s%s]", verb->flags[i].long_name, verb->flags[i].takes_value ? " ..." : "");
    fprintf(f, "%s%s\n\n%s\n", verb->args[0] != '\0' ? " " : "", verb->args, verb->summary);
    if (strchr(verb->names, '|') != NULL)
        fprintf(f, "Aliases: %s\n", verb->names);
    if (verb->flags[0].long_name != NULL) {
        fprintf(f, "\nFlags:\n");
        for (size_t i = 0; i < CLI_MAX_FLAGS && verb->flags[i].long_name != NULL; i++)
            flag_usage(f, &verb->flags[i]);
    }
    globals_usage(f);
}

static void noun_usage(FILE *f, const struct cli_noun *noun)
{
    fprintf(f, "Usage: concord %.*s <command> [flags]\n\n%s\n", name_len(noun->names), noun->names,
            noun->summary);
    if (strchr(noun->names, '|') != NULL)
        fprintf(f, "Aliases: %s\n", noun->names);
    fprintf(f, "\nCommands:\n");
    for (size_t i = 0; i < noun->n_verbs; i++) {
        char left[64];
        snprintf(left, sizeof left, "%.*s %s", name_len(noun->verbs[i].names), noun->verbs[i].names,
                 noun->verbs[i].args);
        fprintf(f, "  %-32s %s\n", left, noun->verbs[i].summary);
    }
    if (noun == &cli_cluster_noun)
        fprintf(f, "  %-32s %s\n", "init", server_commands[1][1]);
    globals_usage(f);
}

static void top_usage(FILE *f)
{
    fprintf(f, "Usage: concord <command> [flags]\n\nconcord is a replicated coordination "
               "server for Tailscale clients.\n\nAdministration (over the admin socket or "
               "--address):\n");
    for (size_t i = 0; i < sizeof nouns / sizeof nouns[0]; i++)
        fprintf(f, "  %-24.*s %s\n", name_len(nouns[i]->names), nouns[i]->names, nouns[i]->summary);
    fprintf(f, "\nServer:\n");
    for (size_t i = 0; i < sizeof server_commands / sizeof server_commands[0]; i++)
        fprintf(f, "  %-24s %s\n", server_commands[i][0], server_commands[i][1]);
    fprintf(f, "  %-24s %s\n", "help [command]", "show help for a command");
    globals_usage(f);
}

static const struct cli_noun *noun_find(const char *name)
{
    for (size_t i = 0; i < sizeof nouns / sizeof nouns[0]; i++) {
        if (cli_name_matches(nouns[i]->names, name))
            return nouns[i];
    }
    return NULL;
}

static const struct cli_verb *verb_find(const struct cli_noun *noun, const char *name)
{
    for (size_t i = 0; i < noun->n_verbs; i++) {
        if (cli_name_matches(noun->verbs[i].names, name))
            return &noun->verbs[i];
    }
    return NULL;
}

static int help(struct cli *cli, int argc, char **argv)
{
    const struct cli_noun *noun = argc > 0 ? noun_find(argv[0]) : NULL;
    const struct cli_verb *verb = noun != NULL && argc > 1 ? verb_find(noun, argv[1]) : NULL;

    if (argc > 0 && noun == NULL) {
        fprintf(cli->err, "Error: unknown command \"%s\"\n", argv[0]);
        top_usage(cli->err);
        return CLI_EXIT_USAGE;
    }
    if (verb != NULL)
        cli_verb_usage(cli->out, noun, verb);
    else if (noun != NULL)
        noun_usage(cli->out, noun);
    else
        top_usage(cli->out);
    return CLI_EXIT_OK;
}

/* Consumes global flags before the next word (a noun or verb); returns the
 * index of that word (argc if none), or -1 / -2 on error / --help. */
static int next_word(struct cli *cli, int argc, char **argv, int i, char *err, size_t cap)
{
    struct cli_args unused;

    while (i < argc && is_flag(argv[i])) {
        int rv = flag_take(cli, NULL, 0, argc, argv, &i, &unused, err, cap);
        if (rv != 0)
            return rv < 0 ? -1 : -2;
    }
    return i;
}

int cli_run(struct cli *cli, int argc, char **argv)
{
    const struct cli_noun *noun;
    const struct cli_verb *verb;
    struct cli_args args;
    char err[160];
    int i, j, rv;

    i = next_word(cli, argc, argv, 1, err, sizeof err);
    if (i == -2 || (i >= 0 && i < argc && strcmp(argv[i], "help") == 0))
        return help(cli, i < 0 ? 0 : argc - i - 1, argv + (i < 0 ? argc : i + 1));
    if (i < 0 || i >= argc) {
        if (i < 0)
            fprintf(cli->err, "Error: %s\n", err);
        top_usage(cli->err);
        return CLI_EXIT_USAGE;
    }
    noun = noun_find(argv[i]);
    if (noun == NULL) {
        fprintf(cli->err, "Error: unknown command \"%s\"\n\n", argv[i]);
        top_usage(cli->err);
        return CLI_EXIT_USAGE;
    }
    j = next_word(cli, argc, argv, i + 1, err, sizeof err);
    if (j == -2) {
        noun_usage(cli->out, noun);
        return CLI_EXIT_OK;
    }
    if (j < 0 || j >= argc || (verb = verb_find(noun, argv[j])) == NULL) {
        if (j < 0)
            fprintf(cli->err, "Error: %s\n\n", err);
        else if (j < argc)
            fprintf(cli->err, "Error: unknown command \"%s %s\"\n\n", argv[i], argv[j]);
        noun_usage(cli->err, noun);
        return CLI_EXIT_USAGE;
    }
    rv = cli_args_parse(cli, verb->flags, CLI_MAX_FLAGS, argc - j - 1, argv + j + 1, &args, err,
                        sizeof err);
    if (rv == 1) {
        cli_verb_usage(cli->out, noun, verb);
        return CLI_EXIT_OK;
    }
    if (rv == 0 && (args.n_pos < verb->min_args || args.n_pos > verb->max_args)) {
        if (verb->args[0] == '\0')
            snprintf(err, sizeof err, "this command takes no arguments");
        else
            snprintf(err, sizeof err, "wrong number of arguments: expected %s", verb->args);
        rv = -1;
    }
    if (rv < 0) {
        fprintf(cli->err, "Error: %s\n\n", err);
        cli_verb_usage(cli->err, noun, verb);
        return CLI_EXIT_USAGE;
    }
    rv = verb->run(cli, &args);
    if (rv == CLI_EXIT_USAGE) {
        fprintf(cli->err, "\n");
        cli_verb_usage(cli->err, noun, verb);
    }
    return rv;
}

int cli_main(int argc, char **argv)
{
    const char *socket_path = getenv("CONCORD_SOCKET");
    struct cli cli = {
        .output = CLI_OUTPUT_TABLE,
        .socket_path =
            socket_path != NULL && *socket_path != '\0' ? socket_path : CLI_DEFAULT_SOCKET,
        .address = getenv("CONCORD_ADDRESS"),
        .api_key = getenv("CONCORD_API_KEY"),
        .timeout_ms = CLI_DEFAULT_TIMEOUT_MS,
        .out = stdout,
        .err = stderr,
    };

    if (cli.address != NULL && *cli.address == '\0')
        cli.address = NULL;
    return cli_run(&cli, argc, argv);
}
