/* server/cli/audit.c: `concord audit list`, who changed what. */
#include "server/cli/cli_internal.h"

#include <stdio.h>

static const struct cli_column audit_columns[] = {
    {"Index", "index"},   {"Time", "time"},     {"Actor", "actor"},
    {"Action", "action"}, {"Detail", "detail"},
};

enum { AUDIT_AFTER, AUDIT_LIMIT };

static int audit_list(struct cli *cli, const struct cli_args *args)
{
    char path[128] = "/api/v1/audit";
    size_t n = 13;
    json_t *answer;
    uint64_t v;
    int rv;

    if (args->values[AUDIT_AFTER] != NULL) {
        if (cli_parse_id(args->values[AUDIT_AFTER], &v) != 0)
            return cli_usage(cli, "--after: expected a log index");
        n += (size_t)snprintf(path + n, sizeof path - n, "?after=%s", args->values[AUDIT_AFTER]);
    }
    if (args->values[AUDIT_LIMIT] != NULL) {
        if (cli_parse_id(args->values[AUDIT_LIMIT], &v) != 0)
            return cli_usage(cli, "--limit: expected a positive number");
        snprintf(path + n, sizeof path - n, "%climit=%s", n > 13 ? '&' : '?',
                 args->values[AUDIT_LIMIT]);
    }
    rv = cli_call(cli, "GET", path, NULL, &answer, NULL);
    if (rv != CLI_EXIT_OK)
        return rv;
    cli_print_table(cli, json_object_get(answer, "entries"), audit_columns,
                    sizeof audit_columns / sizeof audit_columns[0]);
    json_decref(answer);
    return CLI_EXIT_OK;
}

static const struct cli_verb audit_verbs[] = {
    {"list|ls|show",
     "",
     "list audit log entries, oldest first",
     {{"after", 0, true, "INDEX  only entries after this log index"},
      {"limit", 'n', true, "N  at most N entries (100, at most 1000)"}},
     0,
     0,
     audit_list},
};

const struct cli_noun cli_audit_noun = {
    "audit",
    "read the audit log",
    audit_verbs,
    sizeof audit_verbs / sizeof audit_verbs[0],
};
