/* server/cli/users.c: `concord users` (Headscale: headscale users). */
#include "server/cli/cli_internal.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static const struct cli_column user_columns[] = {
    {"ID", "id"},       {"Name", "name"},         {"Display name", "displayName"},
    {"Email", "email"}, {"Created", "createdAt"},
};

/* The id of the user given by -i ID or -n NAME (flags `id_flag` and
 * `name_flag`); CLI_EXIT_OK with *id set, or an exit status. */
static int user_id_from_flags(const struct cli *cli, const struct cli_args *args, int id_flag,
                              int name_flag, uint64_t *id)
{
    const char *id_text = args->values[id_flag], *name = args->values[name_flag];

    if ((id_text == NULL) == (name == NULL))
        return cli_usage(cli, "give the user as -i ID or -n NAME");
    if (id_text != NULL && cli_parse_id(id_text, id) != 0)
        return cli_usage(cli, "-i: expected a positive integer, not \"%s\"", id_text);
    return id_text != NULL ? CLI_EXIT_OK : cli_user_id(cli, name, false, id);
}

enum { CREATE_DISPLAY_NAME, CREATE_EMAIL };

static int users_create(struct cli *cli, const struct cli_args *args)
{
    json_t *body = json_pack("{s:s}", "name", args->pos[0]), *answer;
    int rv;

    if (body == NULL)
        return CLI_EXIT_FAIL;
    if (args->values[CREATE_DISPLAY_NAME] != NULL)
        json_object_set_new(body, "displayName", json_string(args->values[CREATE_DISPLAY_NAME]));
    if (args->values[CREATE_EMAIL] != NULL)
        json_object_set_new(body, "email", json_string(args->values[CREATE_EMAIL]));
    rv = cli_call(cli, "POST", "/api/v1/user", body, &answer, NULL);
    json_decref(body);
    if (rv != CLI_EXIT_OK)
        return rv;
    cli_print_result(cli, json_object_get(answer, "user"), "User created");
    json_decref(answer);
    return CLI_EXIT_OK;
}

enum { LIST_ID, LIST_NAME, LIST_EMAIL };

static int users_list(struct cli *cli, const struct cli_args *args)
{
    static const char *const params[] = {"id", "name", "email"};
    char path[1024] = "/api/v1/user", encoded[400];
    size_t n = strlen(path);
    json_t *answer;
    uint64_t id;
    int rv;

    if (args->values[LIST_ID] != NULL && cli_parse_id(args->values[LIST_ID], &id) != 0)
        return cli_usage(cli, "-i: expected a positive integer");
    for (int i = LIST_ID; i <= LIST_EMAIL; i++) {
        if (args->values[i] == NULL)
            continue;
        cli_url_encode(args->values[i], encoded, sizeof encoded);
        n += (size_t)snprintf(path + n, sizeof path - n, "%c%s=%s", n > 12 ? '&' : '?', params[i],
                              encoded);
    }
    rv = cli_call(cli, "GET", path, NULL, &answer, NULL);
    if (rv != CLI_EXIT_OK)
        return rv;
    cli_print_table(cli, json_object_get(answer, "users"), user_columns,
                    sizeof user_columns / sizeof user_columns[0]);
    json_decref(answer);
    return CLI_EXIT_OK;
}

enum { RENAME_ID, RENAME_NAME, RENAME_NEW };

static int users_rename(struct cli *cli, const struct cli_args *args)
{
    char path[512], encoded[400];
    json_t *answer;
    uint64_t id;
    int rv;

    if (args->values[RENAME_NEW] == NULL)
        return cli_usage(cli, "give the new name with -r NEW");
    rv = user_id_from_flags(cli, args, RENAME_ID, RENAME_NAME, &id);
    if (rv != CLI_EXIT_OK)
        return rv;
    cli_url_encode(args->values[RENAME_NEW], encoded, sizeof encoded);
    snprintf(path, sizeof path, "/api/v1/user/%" PRIu64 "/rename/%s", id, encoded);
    rv = cli_call(cli, "POST", path, NULL, &answer, NULL);
    if (rv != CLI_EXIT_OK)
        return rv;
    cli_print_result(cli, json_object_get(answer, "user"), "User renamed");
    json_decref(answer);
    return CLI_EXIT_OK;
}

enum { DESTROY_ID, DESTROY_NAME };

static int users_destroy(struct cli *cli, const struct cli_args *args)
{
    char path[64], question[160];
    json_t *answer;
    uint64_t id;
    int rv = user_id_from_flags(cli, args, DESTROY_ID, DESTROY_NAME, &id);

    if (rv != CLI_EXIT_OK)
        return rv;
    snprintf(question, sizeof question, "Do you want to remove the user %" PRIu64 "?", id);
    if (!cli_confirm(cli, question))
        return CLI_EXIT_FAIL;
    snprintf(path, sizeof path, "/api/v1/user/%" PRIu64, id);
    rv = cli_call(cli, "DELETE", path, NULL, &answer, NULL);
    if (rv != CLI_EXIT_OK)
        return rv;
    cli_print_result(cli, answer, "User destroyed");
    json_decref(answer);
    return CLI_EXIT_OK;
}

static const struct cli_verb user_verbs[] = {
    {"create|c|new",
     "NAME",
     "create a user",
     {{"display-name", 'd', true, "NAME  the display name"},
      {"email", 'e', true, "EMAIL  the email address"}},
     1,
     1,
     users_create},
    {"list|ls|show",
     "",
     "list users",
     {{"identifier", 'i', true, "ID  only the user with this id"},
      {"name", 'n', true, "NAME  only the user with this name"},
      {"email", 'e', true, "EMAIL  only users with this email"}},
     0,
     0,
     users_list},
    {"rename|mv",
     "",
     "rename a user",
     {{"identifier", 'i', true, "ID  the user's id"},
      {"name", 'n', true, "NAME  the user's current name"},
      {"new-name", 'r', true, "NEW  the new name"}},
     0,
     0,
     users_rename},
    {"destroy|delete",
     "",
     "delete a user",
     {{"identifier", 'i', true, "ID  the user's id"}, {"name", 'n', true, "NAME  the user's name"}},
     0,
     0,
     users_destroy},
};

const struct cli_noun cli_users_noun = {
    "users|user",
    "manage users",
    user_verbs,
    sizeof user_verbs / sizeof user_verbs[0],
};
