/* server/cli/policy.c: `concord policy` (Headscale: headscale policy). The
 * policy's version travels as the HTTP ETag; --if-version makes `set` a
 * compare-and-set. */
#include "server/cli/cli_internal.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define POLICY_MAX_BYTES ((size_t)4 * 1024 * 1024)

static int policy_get(struct cli *cli, const struct cli_args *args)
{
    struct cli_response raw;
    const char *text;
    json_t *answer;
    int rv = cli_call(cli, "GET", "/api/v1/policy", NULL, &answer, &raw);

    (void)args;
    if (rv != CLI_EXIT_OK)
        return rv;
    if (cli->output == CLI_OUTPUT_TABLE) {
        text = json_string_value(json_object_get(answer, "policy"));
        if (text == NULL || text[0] == '\0')
            fprintf(cli->err, "No policy set yet (version 0)\n");
        else
            fprintf(cli->out, "%s%s", text, text[strlen(text) - 1] == '\n' ? "" : "\n");
    } else {
        json_object_set_new(answer, "version", json_string(raw.etag));
        cli_print_value(cli, answer);
    }
    free(raw.body);
    json_decref(answer);
    return CLI_EXIT_OK;
}

/* Reads -f FILE and wraps it as {"policy": text}; NULL with the error
 * printed. */
static json_t *policy_body(const struct cli *cli, const char *path)
{
    size_t len;
    char *text = cli_file_read(cli, path, POLICY_MAX_BYTES, &len);
    json_t *body;

    if (text == NULL)
        return NULL;
    body = json_pack("{s:s%}", "policy", text, len);
    free(text);
    if (body == NULL)
        fprintf(cli->err, "Error: %s is not UTF-8 text\n", path);
    return body;
}

enum { SET_FILE, SET_IF_VERSION };

static int policy_set(struct cli *cli, const struct cli_args *args)
{
    char header[64] = "";
    struct cli_response raw;
    json_t *body, *answer;
    uint64_t version;
    int rv;

    if (args->values[SET_FILE] == NULL)
        return cli_usage(cli, "give the policy file with -f FILE");
    if (args->values[SET_IF_VERSION] != NULL) {
        if (strcmp(args->values[SET_IF_VERSION], "0") != 0 &&
            cli_parse_id(args->values[SET_IF_VERSION], &version) != 0)
            return cli_usage(cli, "--if-version: expected a version number");
        snprintf(header, sizeof header, "If-Match: \"%s\"\r\n", args->values[SET_IF_VERSION]);
    }
    body = policy_body(cli, args->values[SET_FILE]);
    if (body == NULL)
        return CLI_EXIT_FAIL;
    rv = cli_call_ex(cli, "PUT", "/api/v1/policy", body, header[0] != '\0' ? header : NULL, &answer,
                     &raw);
    json_decref(body);
    if (rv != CLI_EXIT_OK)
        return rv;
    if (cli->output == CLI_OUTPUT_TABLE) {
        fprintf(cli->out, "Policy updated (version %s)\n", raw.etag);
    } else {
        json_object_set_new(answer, "version", json_string(raw.etag));
        cli_print_value(cli, answer);
    }
    free(raw.body);
    json_decref(answer);
    return CLI_EXIT_OK;
}

static int policy_check(struct cli *cli, const struct cli_args *args)
{
    json_t *body, *answer;
    int rv;

    if (args->values[0] == NULL)
        return cli_usage(cli, "give the policy file with -f FILE");
    body = policy_body(cli, args->values[0]);
    if (body == NULL)
        return CLI_EXIT_FAIL;
    rv = cli_call(cli, "POST", "/api/v1/policy/check", body, &answer, NULL);
    json_decref(body);
    if (rv != CLI_EXIT_OK)
        return rv;
    cli_print_result(cli, answer, "Policy is valid");
    json_decref(answer);
    return CLI_EXIT_OK;
}

static const struct cli_verb policy_verbs[] = {
    {"get|show|view|fetch", "", "print the current policy", {{0}}, 0, 0, policy_get},
    {"set|put|update",
     "",
     "replace the policy",
     {{"file", 'f', true, "FILE  the HuJSON policy (- for stdin)"},
      {"if-version", 0, true, "N  only if the current version is N (0: no policy yet)"}},
     0,
     0,
     policy_set},
    {"check",
     "",
     "check a policy file without storing it",
     {{"file", 'f', true, "FILE  the HuJSON policy (- for stdin)"}},
     0,
     0,
     policy_check},
};

const struct cli_noun cli_policy_noun = {
    "policy",
    "manage the ACL policy",
    policy_verbs,
    sizeof policy_verbs / sizeof policy_verbs[0],
};
