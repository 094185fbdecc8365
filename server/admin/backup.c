/* server/admin/backup.c: POST /api/v1/cluster/backup {"path": DIR}, a
 * compacted copy of THIS replica's LMDB environment into a new directory on
 * its own disk, for offline inspection or for seeding a replica. Unlike a
 * snapshot it is not a logical dump and is not restored through Raft.
 * Only over the Unix socket: it writes files where the server runs, which an
 * API key alone must not allow.
 * Happy path: barrier (the copy then holds every write acknowledged before
 * the request; ?consistent=false skips it), then on the thread pool:
 * store_backup_copy, flush the copy to disk, open it to read its applied
 * index (which also proves it readable), answer {path, appliedIndex, bytes}.
 * Failure: a directory that exists and is not empty is 409 and untouched; a
 * copy that failed part-way is removed again. One backup at a time per
 * replica: it holds a thread-pool thread, which raft_uv's disk I/O may also
 * need. */
#include "server/admin/admin_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum backup_status { BACKUP_OK, BACKUP_INVALID, BACKUP_EXISTS, BACKUP_FAILED };

__attribute__((format(printf, 3, 4))) static int backup_fail(struct admin_call *call, int status,
                                                             const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(call->backup.errmsg, sizeof call->backup.errmsg, fmt, ap);
    va_end(ap);
    call->work_status = status;
    return -1;
}

static int file_path(const char *dir, const char *name, char out[PATH_MAX])
{
    return snprintf(out, PATH_MAX, "%s/%s", dir, name) < PATH_MAX ? 0 : -1;
}

/* Removes what a failed copy may have left: the LMDB files, and the
 * directory itself when the backup created it. */
static void backup_remove(const char *dir, bool did_create)
{
    char path[PATH_MAX];

    if (file_path(dir, "data.mdb", path) == 0)
        unlink(path);
    if (file_path(dir, "lock.mdb", path) == 0)
        unlink(path);
    if (did_create)
        rmdir(dir);
}

/* Refuses, before anything is written, a path that cannot become a backup
 * directory; *exists says whether the directory is already there (empty or
 * not: store_backup_copy refuses a non-empty one). */
static int backup_check_target(struct admin_call *call, const char *dir, bool *exists)
{
    char parent[PATH_MAX];
    struct stat st;
    char *slash;

    if (lstat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode))
            return backup_fail(call, BACKUP_EXISTS, "%s exists and is not a directory", dir);
        *exists = true;
        return 0;
    }
    if (errno != ENOENT)
        return backup_fail(call, BACKUP_INVALID, "%s: %s", dir, strerror(errno));
    *exists = false;
    snprintf(parent, sizeof parent, "%s", dir);
    slash = strrchr(parent, '/');
    if (slash == parent)
        slash[1] = '\0'; /* a directory right under / */
    else
        *slash = '\0';
    if (stat(parent, &st) != 0 || !S_ISDIR(st.st_mode))
        return backup_fail(call, BACKUP_INVALID, "parent directory %s does not exist", parent);
    return 0;
}

/* The copy is ours until we answer: make it durable, then read its applied
 * index and size. lock.mdb, created by opening it, is removed again so that
 * the backup is data.mdb alone. */
static int backup_inspect(struct admin_call *call, const char *dir)
{
    struct store_options opts = {.dir = dir};
    char data_path[PATH_MAX], lock_path[PATH_MAX], errmsg[256] = "";
    struct store_txn *t;
    struct store *copy;
    struct stat st;
    int fd, rv;

    if (file_path(dir, "data.mdb", data_path) != 0 || file_path(dir, "lock.mdb", lock_path) != 0)
        return backup_fail(call, BACKUP_INVALID, "path too long: %s", dir);
    fd = open(data_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0 || fstat(fd, &st) != 0) {
        rv = errno;
        if (fd >= 0)
            close(fd);
        return backup_fail(call, BACKUP_FAILED, "cannot flush %s: %s", data_path, strerror(rv));
    }
    close(fd);
    call->backup.bytes = (uint64_t)st.st_size;
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
        rv = errno;
        if (fd >= 0)
            close(fd);
        return backup_fail(call, BACKUP_FAILED, "cannot flush %s: %s", dir, strerror(rv));
    }
    close(fd);
    rv = store_open(&opts, &copy, errmsg);
    if (rv != 0)
        return backup_fail(call, BACKUP_FAILED, "the copy cannot be opened: %s", errmsg);
    rv = store_txn_begin(copy, false, &t);
    if (rv == 0) {
        rv = store_applied_index_get(t, &call->backup.applied_index);
        store_txn_abort(t);
    }
    store_close(copy);
    unlink(lock_path);
    if (rv != 0)
        return backup_fail(call, BACKUP_FAILED, "the copy cannot be read: %s", store_strerror(rv));
    return 0;
}

static void backup_work(uv_work_t *w)
{
    struct admin_call *call = w->data;
    struct store *s = call->admin->opts.store;
    const char *dir = call->backup.dir;
    bool exists;
    int rv;

    call->work_status = BACKUP_OK;
    if (backup_check_target(call, dir, &exists) != 0)
        return;
    rv = store_backup_copy(s, dir);
    if (rv == STORE_EXISTS) { /* not empty: nothing was written */
        backup_fail(call, BACKUP_EXISTS, "%s is not empty: a backup needs a new directory", dir);
        return;
    }
    if (rv != 0) {
        /* store_errmsg is the live store's, shared with the loop thread:
         * right after the failure it is still this copy's reason. */
        backup_fail(call, BACKUP_FAILED, "%s", store_errmsg(s));
        backup_remove(dir, !exists);
        return;
    }
    if (backup_inspect(call, dir) != 0)
        backup_remove(dir, !exists);
}

static void backup_after(uv_work_t *w, int status)
{
    struct admin_call *call = w->data;
    struct admin *a = call->admin;
    bool is_stopping = admin_work_end(a);

    /* The job ran to its end (or never started), stopping or not: its
     * outcome is answered as it is, without touching the cluster. */
    a->is_backup_running = false;
    if (status != 0)
        admin_fail(call, ADMIN_UNAVAILABLE, "the backup did not run: %s", uv_strerror(status));
    else if (call->work_status == BACKUP_INVALID)
        admin_fail(call, ADMIN_INVALID, "%s", call->backup.errmsg);
    else if (call->work_status == BACKUP_EXISTS)
        admin_fail(call, ADMIN_CONFLICT, "%s", call->backup.errmsg);
    else if (call->work_status != BACKUP_OK)
        admin_fail(call, ADMIN_INTERNAL, "backup failed: %s", call->backup.errmsg);
    else
        admin_reply_json(call, 200,
                         json_pack("{s:s, s:o, s:I}", "path", call->backup.dir, "appliedIndex",
                                   admin_json_id(call->backup.applied_index), "bytes",
                                   (json_int_t)call->backup.bytes),
                         NULL);
    if (is_stopping)
        admin_work_release(a);
}

static void backup_start(struct admin_call *call, struct store_txn *t)
{
    struct admin *a = call->admin;

    (void)t; /* the copy takes its own consistent read transaction */
    if (a->is_backup_running) {
        admin_fail(call, ADMIN_CONFLICT, "a backup is already running on this replica");
        return;
    }
    if (admin_queue_work(call, backup_work, backup_after) != 0) {
        admin_fail(call, ADMIN_INTERNAL, "cannot queue the backup");
        return;
    }
    a->is_backup_running = true;
}

void admin_cluster_backup(struct admin_call *call)
{
    static const struct admin_field fields[] = {{"path", NULL, ADMIN_FIELD_STRING}};
    struct admin_value v[1];
    size_t len;

    if (!call->req->is_local) {
        admin_fail(call, ADMIN_FORBIDDEN,
                   "a backup writes files on the replica's own disk: only over its Unix socket "
                   "(run concord cluster backup on that machine)");
        return;
    }
    if (admin_body_parse(call, fields, 1, v) != 0)
        return;
    if (!v[0].is_present || v[0].str[0] != '/') {
        admin_fail(call, ADMIN_INVALID, "path: expected the absolute path of a new directory");
        return;
    }
    len = strlen(v[0].str);
    while (len > 1 && v[0].str[len - 1] == '/')
        len--;
    if (len == 1 || len >= PATH_MAX - sizeof "/data.mdb") {
        admin_fail(call, ADMIN_INVALID, "path: not a usable backup directory");
        return;
    }
    call->backup.dir = strndup(v[0].str, len);
    if (call->backup.dir == NULL) {
        admin_fail(call, ADMIN_INTERNAL, "out of memory");
        return;
    }
    admin_read(call, backup_start);
}
