/* server/cli/keys.c: `concord preauthkeys` and `concord apikeys`
 * (Headscale: headscale preauthkeys, headscale apikeys). A created key is
 * printed once; the server keeps only its hash. */
#include "server/cli/cli_internal.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PREAUTHKEY_DEFAULT_EXPIRATION "1h"
#define APIKEY_DEFAULT_EXPIRATION     "90d"

/* An RFC 3339 time `duration` from now; CLI_EXIT_OK or a usage error. */
static int expiration_from(const struct cli *cli, const char *duration, char buf[32])
{
    int64_t seconds;

    if (cli_duration_parse(duration, &seconds) != 0)
        return cli_usage(cli, "-e: expected a duration like 30m, 1h or 90d, not \"%s\"", duration);
    cli_rfc3339_after((int64_t)time(NULL), seconds, buf);
    return CLI_EXIT_OK;
}

/* ---- pre-auth keys ---- */

static const struct cli_column preauthkey_columns[] = {
    {"ID", "id"},
    {"Key", "key"},
    {"User", "user.name"},
    {"Reusable", "reusable"},
    {"Ephemeral", "ephemeral"},
    {"Used", "used"},
    {"Expiration", "expiration"},
    {"Created", "createdAt"},
    {"Tags", "aclTags"},
};

static int preauthkeys_list(struct cli *cli, const struct cli_args *args)
{
    json_t *answer;
    int rv = cli_call(cli, "GET", "/api/v1/preauthkey", NULL, &answer, NULL);

    (void)args;
    if (rv != CLI_EXIT_OK)
        return rv;
    cli_print_table(cli, json_object_get(answer, "preAuthKeys"), preauthkey_columns,
                    sizeof preauthkey_columns / sizeof preauthkey_columns[0]);
    json_decref(answer);
    return CLI_EXIT_OK;
}

enum { PAK_USER, PAK_REUSABLE, PAK_EPHEMERAL, PAK_EXPIRATION, PAK_TAGS };

static int preauthkeys_create(struct cli *cli, const struct cli_args *args)
{
    const char *duration = args->values[PAK_EXPIRATION];
    char expiration[32], user[24];
    json_t *body, *answer;
    uint64_t user_id = 0;
    int rv;

    if (args->values[PAK_USER] == NULL && args->values[PAK_TAGS] == NULL)
        return cli_usage(cli, "give the owner with -u USER, or tags with --tags");
    rv = expiration_from(cli, duration != NULL ? duration : PREAUTHKEY_DEFAULT_EXPIRATION,
                         expiration);
    if (rv != CLI_EXIT_OK)
        return rv;
    if (args->values[PAK_USER] != NULL) {
        rv = cli_user_id(cli, args->values[PAK_USER], true, &user_id);
        if (rv != CLI_EXIT_OK)
            return rv;
    }
    body = json_pack("{s:b, s:b, s:s}", "reusable", args->values[PAK_REUSABLE] != NULL, "ephemeral",
                     args->values[PAK_EPHEMERAL] != NULL, "expiration", expiration);
    if (body == NULL)
        return CLI_EXIT_FAIL;
    if (user_id != 0) {
        snprintf(user, sizeof user, "%" PRIu64, user_id);
        json_object_set_new(body, "user", json_string(user));
    }
    if (args->values[PAK_TAGS] != NULL)
        json_object_set_new(body, "aclTags", cli_split_list(args->values[PAK_TAGS]));
    rv = cli_call(cli, "POST", "/api/v1/preauthkey", body, &answer, NULL);
    json_decref(body);
    if (rv != CLI_EXIT_OK)
        return rv;
    {
        const json_t *key = json_object_get(answer, "preAuthKey");
        if (cli->output == CLI_OUTPUT_TABLE)
            fprintf(cli->out, "%s\n", json_string_value(json_object_get(key, "key")));
        else
            cli_print_value(cli, key);
    }
    json_decref(answer);
    return CLI_EXIT_OK;
}

/* The -i ID of a pre-auth key command. */
static int preauthkey_id(const struct cli *cli, const struct cli_args *args, uint64_t *id)
{
    if (args->values[0] == NULL)
        return cli_usage(cli, "give the key with -i ID");
    if (cli_parse_id(args->values[0], id) != 0)
        return cli_usage(cli, "-i: expected a positive integer, not \"%s\"", args->values[0]);
    return CLI_EXIT_OK;
}

static int preauthkeys_expire(struct cli *cli, const struct cli_args *args)
{
    char id_text[24];
    json_t *body, *answer;
    uint64_t id;
    int rv = preauthkey_id(cli, args, &id);

    if (rv != CLI_EXIT_OK)
        return rv;
    snprintf(id_text, sizeof id_text, "%" PRIu64, id);
    body = json_pack("{s:s}", "id", id_text);
    rv = cli_call(cli, "POST", "/api/v1/preauthkey/expire", body, &answer, NULL);
    json_decref(body);
    if (rv != CLI_EXIT_OK)
        return rv;
    cli_print_result(cli, answer, "Key expired");
    json_decref(answer);
    return CLI_EXIT_OK;
}

static int preauthkeys_delete(struct cli *cli, const struct cli_args *args)
{
    char path[64], question[96];
    json_t *answer;
    uint64_t id;
    int rv = preauthkey_id(cli, args, &id);

    if (rv != CLI_EXIT_OK)
        return rv;
    snprintf(question, sizeof question, "Do you want to delete the pre-auth key %" PRIu64 "?", id);
    if (!cli_confirm(cli, question))
        return CLI_EXIT_FAIL;
    snprintf(path, sizeof path, "/api/v1/preauthkey?id=%" PRIu64, id);
    rv = cli_call(cli, "DELETE", path, NULL, &answer, NULL);
    if (rv != CLI_EXIT_OK)
        return rv;
    cli_print_result(cli, answer, "Key deleted");
    json_decref(answer);
    return CLI_EXIT_OK;
}

static const struct cli_verb preauthkey_verbs[] = {
    {"list|ls|show", "", "list pre-auth keys", {{0}}, 0, 0, preauthkeys_list},
    {"create|c|new",
     "",
     "create a pre-auth key",
     {{"user", 'u', true, "USER  the owner's id (or name)"},
      {"reusable", 0, false, "the key may register several nodes"},
      {"ephemeral", 0, false, "nodes registered with it are removed when they go offline"},
      {"expiration", 'e', true, "DURATION  how long the key is valid, like 30m or 90d (1h)"},
      {"tags", 0, true, "TAGS  ACL tags for its nodes, like tag:web,tag:prod"}},
     0,
     0,
     preauthkeys_create},
    {"expire|revoke|exp|e",
     "",
     "expire a pre-auth key",
     {{"id", 'i', true, "ID  the key's id"}},
     0,
     0,
     preauthkeys_expire},
    {"delete|del|rm|d",
     "",
     "delete a pre-auth key",
     {{"id", 'i', true, "ID  the key's id"}},
     0,
     0,
     preauthkeys_delete},
};

const struct cli_noun cli_preauthkeys_noun = {
    "preauthkeys|preauthkey|authkey|pre",
    "manage pre-auth keys (register nodes without interaction)",
    preauthkey_verbs,
    sizeof preauthkey_verbs / sizeof preauthkey_verbs[0],
};

/* ---- API keys ---- */

static const struct cli_column apikey_columns[] = {
    {"ID", "id"},
    {"Prefix", "prefix"},
    {"Expiration", "expiration"},
    {"Created", "createdAt"},
    {"Last seen", "lastSeen"},
};

static int apikeys_list(struct cli *cli, const struct cli_args *args)
{
    json_t *answer;
    int rv = cli_call(cli, "GET", "/api/v1/apikey", NULL, &answer, NULL);

    (void)args;
    if (rv != CLI_EXIT_OK)
        return rv;
    cli_print_table(cli, json_object_get(answer, "apiKeys"), apikey_columns,
                    sizeof apikey_columns / sizeof apikey_columns[0]);
    json_decref(answer);
    return CLI_EXIT_OK;
}

static int apikeys_create(struct cli *cli, const struct cli_args *args)
{
    char expiration[32];
    json_t *body, *answer;
    int rv = expiration_from(
        cli, args->values[0] != NULL ? args->values[0] : APIKEY_DEFAULT_EXPIRATION, expiration);

    if (rv != CLI_EXIT_OK)
        return rv;
    body = json_pack("{s:s}", "expiration", expiration);
    rv = cli_call(cli, "POST", "/api/v1/apikey", body, &answer, NULL);
    json_decref(body);
    if (rv != CLI_EXIT_OK)
        return rv;
    if (cli->output == CLI_OUTPUT_TABLE)
        fprintf(cli->out, "%s\n", json_string_value(json_object_get(answer, "apiKey")));
    else
        cli_print_value(cli, answer);
    json_decref(answer);
    return CLI_EXIT_OK;
}

enum { APIKEY_PREFIX, APIKEY_ID };

/* The key's prefix from -p PREFIX, or from -i ID through the listing. */
static int apikey_prefix(const struct cli *cli, const struct cli_args *args, char *buf, size_t cap)
{
    const char *prefix = args->values[APIKEY_PREFIX], *id_text = args->values[APIKEY_ID];
    json_t *answer, *key;
    size_t i;
    int rv;

    if ((prefix == NULL) == (id_text == NULL))
        return cli_usage(cli, "give the key as -p PREFIX or -i ID");
    if (prefix != NULL) {
        cli_url_encode(prefix, buf, cap);
        return CLI_EXIT_OK;
    }
    rv = cli_call(cli, "GET", "/api/v1/apikey", NULL, &answer, NULL);
    if (rv != CLI_EXIT_OK)
        return rv;
    rv = CLI_EXIT_FAIL;
    json_array_foreach(json_object_get(answer, "apiKeys"), i, key)
    {
        if (strcmp(json_string_value(json_object_get(key, "id")), id_text) == 0) {
            cli_url_encode(json_string_value(json_object_get(key, "prefix")), buf, cap);
            rv = CLI_EXIT_OK;
            break;
        }
    }
    json_decref(answer);
    if (rv != CLI_EXIT_OK)
        fprintf(cli->err, "Error: API key %s not found\n", id_text);
    return rv;
}

static int apikeys_expire(struct cli *cli, const struct cli_args *args)
{
    const char *prefix = args->values[APIKEY_PREFIX], *id_text = args->values[APIKEY_ID];
    json_t *body, *answer;
    uint64_t id;
    int rv;

    if ((prefix == NULL) == (id_text == NULL))
        return cli_usage(cli, "give the key as -p PREFIX or -i ID");
    if (id_text != NULL && cli_parse_id(id_text, &id) != 0)
        return cli_usage(cli, "-i: expected a positive integer, not \"%s\"", id_text);
    body =
        id_text != NULL ? json_pack("{s:s}", "id", id_text) : json_pack("{s:s}", "prefix", prefix);
    rv = cli_call(cli, "POST", "/api/v1/apikey/expire", body, &answer, NULL);
    json_decref(body);
    if (rv != CLI_EXIT_OK)
        return rv;
    cli_print_result(cli, answer, "Key expired");
    json_decref(answer);
    return CLI_EXIT_OK;
}

static int apikeys_delete(struct cli *cli, const struct cli_args *args)
{
    char prefix[128], path[192], question[192];
    json_t *answer;
    int rv = apikey_prefix(cli, args, prefix, sizeof prefix);

    if (rv != CLI_EXIT_OK)
        return rv;
    snprintf(question, sizeof question, "Do you want to delete the API key %s?", prefix);
    if (!cli_confirm(cli, question))
        return CLI_EXIT_FAIL;
    snprintf(path, sizeof path, "/api/v1/apikey/%s", prefix);
    rv = cli_call(cli, "DELETE", path, NULL, &answer, NULL);
    if (rv != CLI_EXIT_OK)
        return rv;
    cli_print_result(cli, answer, "Key deleted");
    json_decref(answer);
    return CLI_EXIT_OK;
}

static const struct cli_verb apikey_verbs[] = {
    {"list|ls|show", "", "list API keys", {{0}}, 0, 0, apikeys_list},
    {"create|c|new",
     "",
     "create an API key for the REST API and remote CLI",
     {{"expiration", 'e', true, "DURATION  how long the key is valid, like 30d (90d)"}},
     0,
     0,
     apikeys_create},
    {"expire|revoke|exp|e",
     "",
     "expire an API key",
     {{"prefix", 'p', true, "PREFIX  the key's prefix"}, {"id", 'i', true, "ID  the key's id"}},
     0,
     0,
     apikeys_expire},
    {"delete|remove|del",
     "",
     "delete an API key",
     {{"prefix", 'p', true, "PREFIX  the key's prefix"}, {"id", 'i', true, "ID  the key's id"}},
     0,
     0,
     apikeys_delete},
};

const struct cli_noun cli_apikeys_noun = {
    "apikeys|apikey|api",
    "manage API keys",
    apikey_verbs,
    sizeof apikey_verbs / sizeof apikey_verbs[0],
};
