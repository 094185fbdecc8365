/* server/admin/policyfile.c: policy.mode file. The replica reads its policy
 * file at start and on SIGHUP, checks it as the API would, and proposes it
 * through Raft when it differs from the applied policy, so that every replica
 * enforces one version even when their files differ for a while. A file that
 * does not check is logged and changes nothing. A replica proposes what it
 * read as a compare-and-set on the version applied when it read it, and
 * gives up once the policy changed after the read: a replica holding an
 * older read (its file not re-read yet) never reverts a newer policy. Until the applied policy is
 * the file's text, /ready says so (admin_policy_file_mismatch): the docs
 * recommend database mode for clusters for this reason. */
#include "server/admin/admin_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/control/control.h"
#include "server/log.h"

#define POLICY_FILE_MAX_BYTES (4u * 1024 * 1024)

static char *file_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    size_t n;

    if (f == NULL)
        return NULL;
    buf = malloc(POLICY_FILE_MAX_BYTES + 1);
    if (buf == NULL) {
        fclose(f);
        errno = ENOMEM;
        return NULL;
    }
    n = fread(buf, 1, POLICY_FILE_MAX_BYTES + 1, f);
    if (ferror(f) || n > POLICY_FILE_MAX_BYTES) {
        errno = ferror(f) ? EIO : EFBIG;
        fclose(f);
        free(buf);
        return NULL;
    }
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

static void on_file_policy_applied(void *arg, int status, const Concord__CommandResult *result)
{
    struct admin *a = arg;

    a->is_policy_file_proposing = false;
    if (status == CLUSTER_OK && result->code == CLUSTER_RESULT_OK) {
        LOG_INFO("policy: %s applied as policy version %" PRIu64, a->opts.policy_path, result->id);
        /* Our own version is no newer news than the read: if the file was
         * read again meanwhile, the next tick proposes that text. */
        if (result->id > a->policy_file_base)
            a->policy_file_base = result->id;
        admin_policy_file_tick(a);
    } else {
        LOG_WARN("policy: proposing %s failed (%s); trying again", a->opts.policy_path,
                 status != CLUSTER_OK ? cluster_strerror(status) : result->message);
    }
}

/* The applied policy's text, or NULL when none (or unreadable), and its
 * version (0: none). */
static char *applied_text(struct admin *a, uint64_t *version)
{
    Concord__Policy *p = NULL;
    struct store_txn *t;
    char *text = NULL;

    *version = 0;
    if (store_txn_begin(a->opts.store, false, &t) != 0)
        return NULL;
    if (store_policy_get(t, &p) == 0) {
        text = strdup(p->text);
        *version = p->version;
    }
    store_record_free(p);
    store_txn_abort(t);
    return text;
}

static void propose(struct admin *a)
{
    Concord__Command *cmd = malloc(sizeof *cmd);
    Concord__SetPolicy *op = malloc(sizeof *op);

    if (cmd == NULL || op == NULL) {
        free(cmd);
        free(op);
        return;
    }
    concord__command__init(cmd);
    concord__set_policy__init(op);
    cmd->proposed_unix_ms = admin_now_unix_ms();
    cmd->actor = strdup("policy-file");
    op->text = strdup(a->policy_file_text);
    /* A compare-and-set on the version the file was read against: a
     * replica's older read can never overwrite a newer policy. */
    op->has_if_version = true;
    op->if_version = a->policy_file_base;
    cmd->op_case = CONCORD__COMMAND__OP_SET_POLICY;
    cmd->set_policy = op;
    if (cmd->actor == NULL || op->text == NULL ||
        cluster_submit(a->opts.cluster, cmd, on_file_policy_applied, a) != 0) {
        concord__command__free_unpacked(cmd, NULL);
        return;
    }
    a->is_policy_file_proposing = true;
}

void admin_policy_file_load(struct admin *a)
{
    struct policy_error err;
    struct store_txn *t;
    size_t len = 0;
    char *text;
    int rv;

    if (a->opts.policy_path == NULL)
        return;
    text = file_read(a->opts.policy_path, &len);
    if (text == NULL) {
        LOG_ERROR("policy: cannot read %s: %s; the applied policy stays", a->opts.policy_path,
                  strerror(errno));
        a->is_policy_file_bad = true;
        return;
    }
    rv = store_txn_begin(a->opts.store, false, &t);
    if (rv == 0) {
        rv = control_policy_check(t, text, len, &err);
        store_txn_abort(t);
    } else {
        snprintf(err.message, sizeof err.message, "cannot read the state");
        err.line = 0;
    }
    if (rv != 0) {
        if (err.line != 0)
            LOG_ERROR("policy: %s rejected: line %u, column %u: %s; the applied policy stays",
                      a->opts.policy_path, err.line, err.col, err.message);
        else
            LOG_ERROR("policy: %s rejected: %s; the applied policy stays", a->opts.policy_path,
                      err.message);
        free(text);
        a->is_policy_file_bad = true;
        return;
    }
    a->is_policy_file_bad = false;
    free(a->policy_file_text);
    a->policy_file_text = text;
    a->is_policy_file_pending = true;
    free(applied_text(a, &a->policy_file_base));
    admin_policy_file_tick(a);
}

void admin_policy_file_tick(struct admin *a)
{
    uint64_t version;
    char *applied;

    if (!a->is_policy_file_pending || a->is_policy_file_proposing)
        return;
    applied = applied_text(a, &version);
    if (applied != NULL && strcmp(applied, a->policy_file_text) == 0) {
        a->is_policy_file_pending = false;
    } else if (version > a->policy_file_base) {
        /* Someone set a policy after this read: ours is older news. */
        LOG_WARN("policy: version %" PRIu64 " was applied after %s was read; not proposing it "
                 "(send SIGHUP to read it again)",
                 version, a->opts.policy_path);
        a->is_policy_file_pending = false;
    } else {
        propose(a);
    }
    free(applied);
}

bool admin_policy_file_mismatch(struct admin *a)
{
    uint64_t version;
    char *applied;
    bool differs;

    if (a->opts.policy_path == NULL)
        return false;
    if (a->is_policy_file_bad || a->policy_file_text == NULL)
        return true;
    applied = applied_text(a, &version);
    differs = applied == NULL || strcmp(applied, a->policy_file_text) != 0;
    free(applied);
    return differs;
}
