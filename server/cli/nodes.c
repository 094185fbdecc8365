/* server/cli/nodes.c: `concord nodes` (Headscale: headscale nodes, and
 * `debug create-node` as `nodes create`). */
#include "server/cli/cli_internal.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static const struct cli_column node_columns[] = {
    {"ID", "id"},          {"Hostname", "name"},      {"Name", "givenName"},
    {"User", "user.name"}, {"Tags", "tags"},          {"IP addresses", "ipAddresses"},
    {"Online", "online"},  {"Last seen", "lastSeen"}, {"Expiration", "expiry"},
};

/* The -i ID flag every node command takes (flag 0); CLI_EXIT_OK or usage. */
static int node_id(const struct cli *cli, const struct cli_args *args, uint64_t *id)
{
    if (args->values[0] == NULL)
        return cli_usage(cli, "give the node with -i ID");
    if (cli_parse_id(args->values[0], id) != 0)
        return cli_usage(cli, "-i: expected a positive integer, not \"%s\"", args->values[0]);
    return CLI_EXIT_OK;
}

/* Sends a node request and prints the node it answers with. */
static int node_call(struct cli *cli, const char *method, const char *path, json_t *body,
                     const char *message)
{
    json_t *answer;
    int rv = cli_call(cli, method, path, body, &answer, NULL);

    json_decref(body);
    if (rv != CLI_EXIT_OK)
        return rv;
    if (cli->output == CLI_OUTPUT_TABLE && json_object_get(answer, "node") != NULL) {
        json_t *rows = json_pack("[O]", json_object_get(answer, "node"));
        fprintf(cli->out, "%s\n", message);
        cli_print_table(cli, rows, node_columns, sizeof node_columns / sizeof node_columns[0]);
        json_decref(rows);
    } else {
        cli_print_result(cli, json_object_get(answer, "node"), message);
    }
    json_decref(answer);
    return CLI_EXIT_OK;
}

static int nodes_list(struct cli *cli, const struct cli_args *args)
{
    char path[512] = "/api/v1/node", encoded[400];
    json_t *answer;
    int rv;

    if (args->values[0] != NULL) {
        cli_url_encode(args->values[0], encoded, sizeof encoded);
        snprintf(path, sizeof path, "/api/v1/node?user=%s", encoded);
    }
    rv = cli_call(cli, "GET", path, NULL, &answer, NULL);
    if (rv != CLI_EXIT_OK)
        return rv;
    cli_print_table(cli, json_object_get(answer, "nodes"), node_columns,
                    sizeof node_columns / sizeof node_columns[0]);
    json_decref(answer);
    return CLI_EXIT_OK;
}

static int nodes_rename(struct cli *cli, const struct cli_args *args)
{
    char path[512], encoded[400];
    uint64_t id;
    int rv = node_id(cli, args, &id);

    if (rv != CLI_EXIT_OK)
        return rv;
    cli_url_encode(args->pos[0], encoded, sizeof encoded);
    snprintf(path, sizeof path, "/api/v1/node/%" PRIu64 "/rename/%s", id, encoded);
    return node_call(cli, "POST", path, NULL, "Node renamed");
}

enum { EXPIRE_ID, EXPIRE_EXPIRY, EXPIRE_DISABLE };

static int nodes_expire(struct cli *cli, const struct cli_args *args)
{
    char path[256], encoded[128];
    uint64_t id;
    int rv = node_id(cli, args, &id);

    if (rv != CLI_EXIT_OK)
        return rv;
    if (args->values[EXPIRE_EXPIRY] != NULL && args->values[EXPIRE_DISABLE] != NULL)
        return cli_usage(cli, "give either --expiry or --disable");
    if (args->values[EXPIRE_EXPIRY] != NULL) {
        cli_url_encode(args->values[EXPIRE_EXPIRY], encoded, sizeof encoded);
        snprintf(path, sizeof path, "/api/v1/node/%" PRIu64 "/expire?expiry=%s", id, encoded);
    } else if (args->values[EXPIRE_DISABLE] != NULL) {
        snprintf(path, sizeof path, "/api/v1/node/%" PRIu64 "/expire?disableExpiry=true", id);
    } else {
        snprintf(path, sizeof path, "/api/v1/node/%" PRIu64 "/expire", id);
    }
    return node_call(cli, "POST", path, NULL, "Node expired");
}

static int nodes_delete(struct cli *cli, const struct cli_args *args)
{
    char path[64], question[96];
    json_t *answer;
    uint64_t id;
    int rv = node_id(cli, args, &id);

    if (rv != CLI_EXIT_OK)
        return rv;
    snprintf(question, sizeof question, "Do you want to delete the node %" PRIu64 "?", id);
    if (!cli_confirm(cli, question))
        return CLI_EXIT_FAIL;
    snprintf(path, sizeof path, "/api/v1/node/%" PRIu64, id);
    rv = cli_call(cli, "DELETE", path, NULL, &answer, NULL);
    if (rv != CLI_EXIT_OK)
        return rv;
    cli_print_result(cli, answer, "Node deleted");
    json_decref(answer);
    return CLI_EXIT_OK;
}

static int nodes_tag(struct cli *cli, const struct cli_args *args)
{
    char path[64];
    json_t *tags;
    uint64_t id;
    int rv = node_id(cli, args, &id);

    if (rv != CLI_EXIT_OK)
        return rv;
    if (args->values[1] == NULL)
        return cli_usage(cli, "give the tags with -t tag:a,tag:b");
    tags = cli_split_list(args->values[1]);
    if (tags == NULL)
        return CLI_EXIT_FAIL;
    snprintf(path, sizeof path, "/api/v1/node/%" PRIu64 "/tags", id);
    return node_call(cli, "POST", path, json_pack("{s:o}", "tags", tags), "Node tagged");
}

static const struct cli_column route_columns[] = {
    {"ID", "id"},
    {"Hostname", "name"},
    {"Approved", "approvedRoutes"},
    {"Available", "availableRoutes"},
    {"Serving", "subnetRoutes"},
};

/* Headscale's approve-routes: the node's approved routes become exactly
 * these (-r "" approves none). */
static int nodes_approve_routes(struct cli *cli, const struct cli_args *args)
{
    char path[64];
    json_t *routes;
    uint64_t id;
    int rv = node_id(cli, args, &id);

    if (rv != CLI_EXIT_OK)
        return rv;
    if (args->values[1] == NULL)
        return cli_usage(cli, "give the routes with -r 10.0.0.0/8,0.0.0.0/0 (-r \"\": none)");
    routes = args->values[1][0] == '\0' ? json_array() : cli_split_list(args->values[1]);
    if (routes == NULL)
        return CLI_EXIT_FAIL;
    snprintf(path, sizeof path, "/api/v1/node/%" PRIu64 "/approve_routes", id);
    return node_call(cli, "POST", path, json_pack("{s:o}", "routes", routes), "Node updated");
}

/* Every node's routes, or one node's with -i. */
static int nodes_list_routes(struct cli *cli, const struct cli_args *args)
{
    char path[64] = "/api/v1/node";
    json_t *answer;
    json_t *rows;
    uint64_t id = 0;
    int rv;

    if (args->values[0] != NULL && (rv = node_id(cli, args, &id)) != CLI_EXIT_OK)
        return rv;
    if (id != 0)
        snprintf(path, sizeof path, "/api/v1/node/%" PRIu64, id);
    rv = cli_call(cli, "GET", path, NULL, &answer, NULL);
    if (rv != CLI_EXIT_OK)
        return rv;
    rows = id != 0 ? json_pack("[O]", json_object_get(answer, "node"))
                   : json_incref(json_object_get(answer, "nodes"));
    cli_print_table(cli, rows, route_columns, sizeof route_columns / sizeof route_columns[0]);
    json_decref(rows);
    json_decref(answer);
    return CLI_EXIT_OK;
}

enum { CREATE_USER, CREATE_NAME, CREATE_KEY, CREATE_ROUTE };

static int nodes_create(struct cli *cli, const struct cli_args *args)
{
    json_t *body;

    if (args->values[CREATE_USER] == NULL || args->values[CREATE_NAME] == NULL)
        return cli_usage(cli, "give --user and --name");
    body = json_pack("{s:s, s:s}", "user", args->values[CREATE_USER], "name",
                     args->values[CREATE_NAME]);
    if (body == NULL)
        return CLI_EXIT_FAIL;
    if (args->values[CREATE_KEY] != NULL)
        json_object_set_new(body, "key", json_string(args->values[CREATE_KEY]));
    if (args->values[CREATE_ROUTE] != NULL)
        json_object_set_new(body, "routes", cli_split_list(args->values[CREATE_ROUTE]));
    return node_call(cli, "POST", "/api/v1/debug/node", body, "Node created");
}

static const struct cli_verb node_verbs[] = {
    {"list|ls|show",
     "",
     "list nodes",
     {{"user", 'u', true, "USER  only the nodes of this user (name or id)"}},
     0,
     0,
     nodes_list},
    {"rename",
     "NEW_NAME",
     "rename a node (its MagicDNS name)",
     {{"identifier", 'i', true, "ID  the node's id"}},
     1,
     1,
     nodes_rename},
    {"expire|logout|exp|e",
     "",
     "expire a node (it must log in again)",
     {{"identifier", 'i', true, "ID  the node's id"},
      {"expiry", 'e', true, "TIME  expire at this RFC 3339 time instead of now"},
      {"disable", 'd', false, "disable key expiry for the node"}},
     0,
     0,
     nodes_expire},
    {"delete|del",
     "",
     "delete a node",
     {{"identifier", 'i', true, "ID  the node's id"}},
     0,
     0,
     nodes_delete},
    {"tag|tags|t",
     "",
     "set a node's tags",
     {{"identifier", 'i', true, "ID  the node's id"},
      {"tags", 't', true, "TAGS  comma-separated, like tag:web,tag:prod"}},
     0,
     0,
     nodes_tag},
    {"approve-routes|approve|ar",
     "",
     "set a node's approved routes (exactly these; -r \"\" approves none)",
     {{"identifier", 'i', true, "ID  the node's id"},
      {"routes", 'r', true, "CIDRS  comma-separated, like 10.0.0.0/24,0.0.0.0/0,::/0"}},
     0,
     0,
     nodes_approve_routes},
    {"list-routes|routes|lr",
     "",
     "list nodes' routes: approved, available (advertised) and serving (both)",
     {{"identifier", 'i', true, "ID  only this node"}},
     0,
     0,
     nodes_list_routes},
    {"create",
     "",
     "register a node without a client, for tests (Headscale: debug create-node)",
     {{"user", 'u', true, "USER  the owner (name or id)"},
      {"name", 'n', true, "NAME  the hostname"},
      {"key", 'k', true, "KEY  the node key, nodekey:<hex> (default: random)"},
      {"route", 'r', true, "CIDRS  comma-separated advertised routes"}},
     0,
     0,
     nodes_create},
};

const struct cli_noun cli_nodes_noun = {
    "nodes|node",
    "manage nodes",
    node_verbs,
    sizeof node_verbs / sizeof node_verbs[0],
};
