/* server/cli/auth.c: `concord auth` (Headscale: headscale auth), approving
 * or rejecting the interactive registrations clients wait on, and listing
 * them. Any replica will do: the server forwards the write to the leader. */
#include "server/cli/cli_internal.h"

#include <stdio.h>

static const struct cli_column node_columns[] = {
    {"ID", "id"},
    {"Hostname", "name"},
    {"Name", "givenName"},
    {"User", "user.name"},
    {"IP addresses", "ipAddresses"},
};

static const struct cli_column pending_columns[] = {
    {"Auth ID", "authId"},
    {"Hostname", "hostname"},
    {"Machine key", "machineKey"},
    {"Expiration", "expiry"},
};

enum { REGISTER_AUTH_ID, REGISTER_USER };

static int auth_register(struct cli *cli, const struct cli_args *args)
{
    json_t *body, *answer, *node;
    int rv;

    if (args->values[REGISTER_AUTH_ID] == NULL || args->values[REGISTER_USER] == NULL)
        return cli_usage(cli, "give --auth-id and --user");
    body = json_pack("{s:s, s:s}", "authId", args->values[REGISTER_AUTH_ID], "user",
                     args->values[REGISTER_USER]);
    if (body == NULL) {
        fprintf(cli->err, "Error: out of memory\n");
        return CLI_EXIT_FAIL;
    }
    rv = cli_call(cli, "POST", "/api/v1/auth/register", body, &answer, NULL);
    json_decref(body);
    if (rv != CLI_EXIT_OK)
        return rv;
    node = json_object_get(answer, "node");
    if (cli->output == CLI_OUTPUT_TABLE) {
        json_t *rows = json_pack("[O]", node);

        fprintf(cli->out, "Node registered\n");
        if (rows != NULL)
            cli_print_table(cli, rows, node_columns, sizeof node_columns / sizeof node_columns[0]);
        json_decref(rows);
    } else {
        cli_print_value(cli, node);
    }
    json_decref(answer);
    return CLI_EXIT_OK;
}

static int auth_reject(struct cli *cli, const struct cli_args *args)
{
    json_t *body, *answer;
    int rv;

    if (args->values[0] == NULL)
        return cli_usage(cli, "give --auth-id");
    body = json_pack("{s:s}", "authId", args->values[0]);
    if (body == NULL) {
        fprintf(cli->err, "Error: out of memory\n");
        return CLI_EXIT_FAIL;
    }
    rv = cli_call(cli, "POST", "/api/v1/auth/reject", body, &answer, NULL);
    json_decref(body);
    if (rv != CLI_EXIT_OK)
        return rv;
    cli_print_result(cli, answer, "Registration rejected");
    json_decref(answer);
    return CLI_EXIT_OK;
}

static int auth_list(struct cli *cli, const struct cli_args *args)
{
    json_t *answer;
    int rv;

    (void)args;
    rv = cli_call(cli, "GET", "/api/v1/auth/pending", NULL, &answer, NULL);
    if (rv != CLI_EXIT_OK)
        return rv;
    cli_print_table(cli, json_object_get(answer, "registrations"), pending_columns,
                    sizeof pending_columns / sizeof pending_columns[0]);
    json_decref(answer);
    return CLI_EXIT_OK;
}

static const struct cli_verb auth_verbs[] = {
    {"register",
     "",
     "approve a pending registration: register its node for a user",
     {{"auth-id", 0, true, "ID  the auth id from the client's login URL"},
      {"user", 'u', true, "USER  the owner (name or id)"}},
     0,
     0,
     auth_register},
    {"reject",
     "",
     "reject a pending registration",
     {{"auth-id", 0, true, "ID  the auth id from the client's login URL"}},
     0,
     0,
     auth_reject},
    {"list|ls|show", "", "list the registrations waiting for approval", {{0}}, 0, 0, auth_list},
};

const struct cli_noun cli_auth_noun = {
    "auth",
    "approve or reject clients waiting to log in",
    auth_verbs,
    sizeof auth_verbs / sizeof auth_verbs[0],
};
