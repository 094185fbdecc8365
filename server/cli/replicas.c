/* server/cli/replicas.c: `concord cluster` (concord's own): membership,
 * status, leadership, joining, logical snapshots and local LMDB backups. `cluster init` runs in
 * server/main.c, before any server exists to talk to. */
#include "server/cli/cli_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SNAPSHOT_MAX_BYTES ((size_t)1024 * 1024 * 1024)

static const struct cli_column member_columns[] = {
    {"ID", "id"},
    {"Raft address", "raftAddress"},
    {"HTTP address", "httpAddress"},
    {"Voter", "voter"},
    {"Leader", "leader"},
};

static int print_members(const struct cli *cli, json_t *answer)
{
    cli_print_table(cli, json_object_get(answer, "members"), member_columns,
                    sizeof member_columns / sizeof member_columns[0]);
    json_decref(answer);
    return CLI_EXIT_OK;
}

static int cluster_members(struct cli *cli, const struct cli_args *args)
{
    json_t *answer;
    int rv = cli_call(cli, "GET", "/api/v1/cluster/members", NULL, &answer, NULL);

    (void)args;
    return rv != CLI_EXIT_OK ? rv : print_members(cli, answer);
}

static int cluster_status(struct cli *cli, const struct cli_args *args)
{
    const char *key;
    json_t *answer, *value;
    char cell[256];
    int rv = cli_call(cli, "GET", "/api/v1/cluster/status", NULL, &answer, NULL);

    (void)args;
    if (rv != CLI_EXIT_OK)
        return rv;
    if (cli->output != CLI_OUTPUT_TABLE) {
        cli_print_value(cli, answer);
    } else {
        json_object_foreach(answer, key, value)
        {
            cli_cell_text(value, cell, sizeof cell);
            fprintf(cli->out, "%-18s %s\n", key, cell);
        }
    }
    json_decref(answer);
    return CLI_EXIT_OK;
}

static int cluster_remove(struct cli *cli, const struct cli_args *args)
{
    char path[64], question[96];
    json_t *answer;
    uint64_t id;
    int rv;

    if (cli_parse_id(args->pos[0], &id) != 0)
        return cli_usage(cli, "ID: expected a positive integer, not \"%s\"", args->pos[0]);
    snprintf(question, sizeof question, "Do you want to remove replica %s from the cluster?",
             args->pos[0]);
    if (!cli_confirm(cli, question))
        return CLI_EXIT_FAIL;
    snprintf(path, sizeof path, "/api/v1/cluster/members/%s", args->pos[0]);
    rv = cli_call(cli, "DELETE", path, NULL, &answer, NULL);
    return rv != CLI_EXIT_OK ? rv : print_members(cli, answer);
}

static int cluster_transfer(struct cli *cli, const struct cli_args *args)
{
    json_t *body = json_object(), *answer;
    uint64_t id;
    int rv;

    if (body == NULL)
        return CLI_EXIT_FAIL;
    if (args->n_pos == 1) {
        if (cli_parse_id(args->pos[0], &id) != 0) {
            json_decref(body);
            return cli_usage(cli, "ID: expected a positive integer, not \"%s\"", args->pos[0]);
        }
        json_object_set_new(body, "id", json_string(args->pos[0]));
    }
    rv = cli_call(cli, "POST", "/api/v1/cluster/leader/transfer", body, &answer, NULL);
    json_decref(body);
    if (rv != CLI_EXIT_OK)
        return rv;
    cli_print_result(cli, answer, "Leadership transferred");
    json_decref(answer);
    return CLI_EXIT_OK;
}

static int cluster_join(struct cli *cli, const struct cli_args *args)
{
    json_t *body = json_pack("{s:s}", "peer", args->pos[0]), *answer;
    int rv;

    if (body == NULL)
        return CLI_EXIT_FAIL;
    rv = cli_call(cli, "POST", "/api/v1/cluster/join", body, &answer, NULL);
    json_decref(body);
    if (rv != CLI_EXIT_OK)
        return rv;
    cli_print_result(cli, answer, "Joined the cluster");
    json_decref(answer);
    return CLI_EXIT_OK;
}

/* Writes the file next to its final name and renames it, so that a failed
 * save never leaves a truncated snapshot under the name asked for. */
static int file_write_atomic(const struct cli *cli, const char *path, const void *data, size_t len)
{
    char *tmp = NULL;
    const char *p = data;
    int fd;

    if (asprintf(&tmp, "%s.tmp", path) < 0) {
        fprintf(cli->err, "Error: out of memory\n");
        return CLI_EXIT_FAIL;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        goto err_open;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            goto err_after_open;
        p += n;
        len -= (size_t)n;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        fd = -1;
        goto err_after_open;
    }
    if (rename(tmp, path) != 0) {
        fd = -1;
        goto err_after_open;
    }
    free(tmp);
    return CLI_EXIT_OK;

err_after_open:
    fprintf(cli->err, "Error: cannot write %s: %s\n", tmp, strerror(errno));
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    free(tmp);
    return CLI_EXIT_FAIL;
err_open:
    fprintf(cli->err, "Error: cannot create %s: %s\n", tmp, strerror(errno));
    free(tmp);
    return CLI_EXIT_FAIL;
}

static int snapshot_save(struct cli *cli, const char *path)
{
    struct cli_response raw;
    int rv = cli_call_raw(cli, "GET", "/api/v1/cluster/snapshot", NULL, NULL, 0, NULL, NULL, &raw);

    if (rv != CLI_EXIT_OK)
        return rv;
    rv = file_write_atomic(cli, path, raw.body, raw.len);
    if (rv == CLI_EXIT_OK) {
        json_t *info = json_pack("{s:s, s:I}", "file", path, "bytes", (json_int_t)raw.len);
        char message[512];
        snprintf(message, sizeof message, "Snapshot saved to %s (%zu bytes)", path, raw.len);
        cli_print_result(cli, info, message);
        json_decref(info);
    }
    free(raw.body);
    return rv;
}

static int snapshot_restore(struct cli *cli, const char *path)
{
    char question[512], message[256];
    json_t *answer;
    size_t len;
    char *data;
    int rv;

    snprintf(question, sizeof question, "Do you want to replace the whole cluster state with %s?",
             path);
    if (!cli_confirm(cli, question))
        return CLI_EXIT_FAIL;
    data = cli_file_read(cli, path, SNAPSHOT_MAX_BYTES, &len);
    if (data == NULL)
        return CLI_EXIT_FAIL;
    rv = cli_call_raw(cli, "POST", "/api/v1/cluster/snapshot/restore", "application/octet-stream",
                      data, len, NULL, &answer, NULL);
    free(data);
    if (rv != CLI_EXIT_OK)
        return rv;
    snprintf(message, sizeof message, "State restored at index %s (state hash %s)",
             json_string_value(json_object_get(answer, "index")),
             json_string_value(json_object_get(answer, "stateHash")));
    cli_print_result(cli, answer, message);
    json_decref(answer);
    return CLI_EXIT_OK;
}

/* The server resolves nothing against its own working directory: a
 * relative DIR is made absolute here, where the operator typed it. */
static int cluster_backup(struct cli *cli, const struct cli_args *args)
{
    const char *dir = args->pos[0];
    char cwd[PATH_MAX], *absolute = NULL, message[PATH_MAX + 128];
    json_t *body, *answer;
    int rv;

    if (dir[0] == '\0')
        return cli_usage(cli, "DIR: expected the path of a new directory");
    if (dir[0] != '/') {
        if (getcwd(cwd, sizeof cwd) == NULL) {
            fprintf(cli->err, "Error: cannot tell the current directory: %s\n", strerror(errno));
            return CLI_EXIT_FAIL;
        }
        if (asprintf(&absolute, "%s/%s", cwd, dir) < 0) {
            fprintf(cli->err, "Error: out of memory\n");
            return CLI_EXIT_FAIL;
        }
        dir = absolute;
    }
    body = json_pack("{s:s}", "path", dir);
    free(absolute);
    if (body == NULL) {
        fprintf(cli->err, "Error: out of memory\n");
        return CLI_EXIT_FAIL;
    }
    /* --stale applies to GETs only in cli_call: a backup is a read too. */
    rv = cli_call(cli, "POST",
                  cli->is_stale ? "/api/v1/cluster/backup?consistent=false"
                                : "/api/v1/cluster/backup",
                  body, &answer, NULL);
    json_decref(body);
    if (rv != CLI_EXIT_OK)
        return rv;
    snprintf(message, sizeof message,
             "Backup at applied index %s written to %s (%" JSON_INTEGER_FORMAT " bytes)",
             json_string_value(json_object_get(answer, "appliedIndex")),
             json_string_value(json_object_get(answer, "path")),
             json_integer_value(json_object_get(answer, "bytes")));
    cli_print_result(cli, answer, message);
    json_decref(answer);
    return CLI_EXIT_OK;
}

static int cluster_snapshot(struct cli *cli, const struct cli_args *args)
{
    if (strcmp(args->pos[0], "save") == 0)
        return snapshot_save(cli, args->pos[1]);
    if (strcmp(args->pos[0], "restore") == 0)
        return snapshot_restore(cli, args->pos[1]);
    return cli_usage(cli, "expected snapshot save FILE or snapshot restore FILE");
}

static const struct cli_verb cluster_verbs[] = {
    {"members|ls", "", "list the replicas", {{0}}, 0, 0, cluster_members},
    {"status", "", "this replica's Raft state and state hash", {{0}}, 0, 0, cluster_status},
    {"remove|rm", "ID", "remove a replica from the cluster", {{0}}, 1, 1, cluster_remove},
    {"transfer-leadership",
     "[ID]",
     "hand leadership to replica ID (default: the best voter)",
     {{0}},
     0,
     1,
     cluster_transfer},
    {"join",
     "PEER",
     "make this (empty) replica join through PEER's host:port",
     {{0}},
     1,
     1,
     cluster_join},
    {"snapshot",
     "save|restore FILE",
     "save a consistent backup, or restore one on every replica",
     {{0}},
     2,
     2,
     cluster_snapshot},
    {"backup",
     "DIR",
     "copy this replica's LMDB state into a new directory (Unix socket only)",
     {{0}},
     1,
     1,
     cluster_backup},
};

const struct cli_noun cli_cluster_noun = {
    "cluster",
    "inspect and change the replicas",
    cluster_verbs,
    sizeof cluster_verbs / sizeof cluster_verbs[0],
};
