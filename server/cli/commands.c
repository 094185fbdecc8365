/* server/cli/commands.c: one request with the error handling every command
 * shares: transport failures and error answers become "Error: <message>"
 * on stderr and exit status 1. */
#include "server/cli/cli_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int cli_call(const struct cli *cli, const char *method, const char *path, json_t *body,
             json_t **out, struct cli_response *raw)
{
    return cli_call_ex(cli, method, path, body, NULL, out, raw);
}

int cli_call_ex(const struct cli *cli, const char *method, const char *path, json_t *body,
                const char *extra_headers, json_t **out, struct cli_response *raw)
{
    char *text = NULL;
    int rv;

    if (body != NULL && (text = json_dumps(body, JSON_COMPACT)) == NULL) {
        fprintf(cli->err, "Error: out of memory\n");
        return CLI_EXIT_FAIL;
    }
    rv = cli_call_raw(cli, method, path, text != NULL ? "application/json" : NULL, text,
                      text != NULL ? strlen(text) : 0, extra_headers, out, raw);
    free(text);
    return rv;
}

int cli_call_raw(const struct cli *cli, const char *method, const char *path,
                 const char *content_type, const void *body, size_t len, const char *extra_headers,
                 json_t **out, struct cli_response *raw)
{
    struct cli_response resp;
    char *full_path = NULL;
    json_error_t jerr;
    char err[256];
    int rv = CLI_EXIT_FAIL;

    if (strcmp(method, "GET") == 0 && cli->is_stale) {
        if (asprintf(&full_path, "%s%cconsistent=false", path,
                     strchr(path, '?') != NULL ? '&' : '?') < 0) {
            fprintf(cli->err, "Error: out of memory\n");
            return CLI_EXIT_FAIL;
        }
        path = full_path;
    }
    if (cli_http(cli, method, path, content_type, body, len, extra_headers, &resp, err,
                 sizeof err) != 0) {
        fprintf(cli->err, "Error: %s\n", err);
        goto out;
    }
    if (resp.status < 200 || resp.status > 299) {
        json_t *e = json_loads(resp.body, 0, NULL);
        const char *message = json_string_value(json_object_get(e, "message"));
        if (message != NULL)
            fprintf(cli->err, "Error: %s\n", message);
        else
            fprintf(cli->err, "Error: the server answered HTTP %d%s%.200s\n", resp.status,
                    resp.len > 0 ? ": " : "", resp.body);
        json_decref(e);
        free(resp.body);
        goto out;
    }
    if (out != NULL) {
        *out = json_loads(resp.len > 0 ? resp.body : "{}", 0, &jerr);
        if (*out == NULL) {
            fprintf(cli->err, "Error: malformed answer from the server: %s\n", jerr.text);
            free(resp.body);
            goto out;
        }
    }
    if (raw != NULL)
        *raw = resp;
    else
        free(resp.body);
    rv = CLI_EXIT_OK;
out:
    free(full_path);
    return rv;
}

void cli_print_result(const struct cli *cli, const json_t *value, const char *message)
{
    if (cli->output == CLI_OUTPUT_TABLE)
        fprintf(cli->out, "%s\n", message);
    else
        cli_print_value(cli, value);
}

json_t *cli_split_list(const char *text)
{
    json_t *a = json_array();

    while (a != NULL) {
        size_t n = strcspn(text, ",");
        if (json_array_append_new(a, json_stringn(text, n)) != 0) {
            json_decref(a);
            return NULL;
        }
        if (text[n] == '\0')
            break;
        text += n + 1;
    }
    return a;
}

int cli_user_id(const struct cli *cli, const char *text, bool is_id_allowed, uint64_t *id)
{
    char path[512], encoded[400];
    json_t *answer, *users;
    int rv;

    if (is_id_allowed && cli_parse_id(text, id) == 0)
        return CLI_EXIT_OK;
    cli_url_encode(text, encoded, sizeof encoded);
    snprintf(path, sizeof path, "/api/v1/user?name=%s", encoded);
    rv = cli_call(cli, "GET", path, NULL, &answer, NULL);
    if (rv != CLI_EXIT_OK)
        return rv;
    users = json_object_get(answer, "users");
    if (json_array_size(users) != 1 ||
        cli_parse_id(json_string_value(json_object_get(json_array_get(users, 0), "id")), id) != 0) {
        fprintf(cli->err, "Error: user \"%s\" not found\n", text);
        rv = CLI_EXIT_FAIL;
    }
    json_decref(answer);
    return rv;
}

char *cli_file_read(const struct cli *cli, const char *path, size_t max_bytes, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    size_t cap = 65536, n = 0;
    char *buf = NULL;

    if (f == NULL) {
        fprintf(cli->err, "Error: cannot open %s: %s\n", path, strerror(errno));
        return NULL;
    }
    for (;;) {
        char *grown;
        size_t got;
        if (n + 1 >= cap || buf == NULL) {
            cap = buf == NULL ? cap : cap * 2;
            grown = realloc(buf, cap);
            if (grown == NULL) {
                fprintf(cli->err, "Error: out of memory reading %s\n", path);
                goto err;
            }
            buf = grown;
        }
        got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (n > max_bytes) {
            fprintf(cli->err, "Error: %s is larger than %zu bytes\n", path, max_bytes);
            goto err;
        }
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        fprintf(cli->err, "Error: cannot read %s\n", path);
        goto err;
    }
    if (f != stdin)
        fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;

err:
    if (f != stdin)
        fclose(f);
    free(buf);
    return NULL;
}
