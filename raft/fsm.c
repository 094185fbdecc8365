/* raft/fsm.c: libraft's state machine over a store.
 *
 * apply: the entry's index is raft_last_applied() + 1 (libraft passes none).
 * An entry at or below the last applied index was applied before a restart
 * and is skipped. Otherwise the command runs inside the batch's write
 * transaction (opened by the first entry of the batch, see struct cluster_fsm)
 * or its earlier result is found by request id, and the result is recorded for
 * de-duplication; claim sees the result at once, applied only once the batch
 * has committed. A command that fails its business rules is a result, never a
 * non-zero return (libraft would turn the replica unavailable for good). A
 * storage failure is not deterministic across replicas, so the replica stops
 * (abort) instead of diverging; a restart replays the log.
 *
 * snapshot: flushes, then a header with the dump's applied index plus
 * store_dump() from a read transaction; FSM version 2, so snapshot_finalize
 * frees what snapshot allocated. restore: flushes, skips a dump not newer than
 * the store, else loads it in one write transaction. libraft hands the buffer
 * over: it is freed here on success, and left to libraft on failure (both
 * paths of 0.22.1 do so). */
#include "raft/cluster.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "raft/cluster_internal.h"

static void fatal(struct cluster_fsm *f, uint64_t index, const char *what, int rv,
                  struct store_txn *t)
{
    const char *detail = t != NULL ? store_txn_errmsg(t) : store_errmsg(f->store);

    cluster_logf(f->log, f->log_arg, CLUSTER_LOG_ERROR,
                 "apply failed, stopping the replica so it cannot diverge index=%llu step=%s "
                 "error=\"%s\" detail=\"%s\"",
                 (unsigned long long)index, what, store_strerror(rv), detail);
    abort();
}

static int result_set_message(Concord__CommandResult *r, const char *msg)
{
    char *copy = strdup(msg);

    if (copy == NULL)
        return STORE_NOMEM;
    r->message = copy;
    return 0;
}

/* The result recorded for this request id, if any (*is_found). */
static int dedup_lookup(struct store_txn *t, const uint8_t *request_id, Concord__CommandResult *out,
                        bool *is_found)
{
    Concord__CommandResult *stored;
    uint8_t *bytes = NULL;
    size_t len = 0;
    int rv;

    *is_found = false;
    rv = store_dedup_get(t, request_id, &bytes, &len);
    if (rv == STORE_NOTFOUND)
        return 0;
    if (rv != 0)
        return rv;
    stored = concord__command_result__unpack(NULL, len, bytes);
    free(bytes);
    if (stored == NULL)
        return STORE_CORRUPT;
    out->code = stored->code;
    out->id = stored->id;
    out->index = stored->index;
    rv = result_set_message(out, stored->message != NULL ? stored->message : "");
    concord__command_result__free_unpacked(stored, NULL);
    if (rv != 0)
        return rv;
    *is_found = true;
    return 0;
}

static int dedup_record(struct store_txn *t, const uint8_t *request_id, uint64_t index,
                        const Concord__CommandResult *result)
{
    size_t len = concord__command_result__get_packed_size(result);
    uint8_t *buf = malloc(len != 0 ? len : 1);
    int rv;

    if (buf == NULL)
        return STORE_NOMEM;
    concord__command_result__pack(result, buf);
    rv = store_dedup_put(t, request_id, index, buf, len);
    free(buf);
    return rv;
}

static void invalid_entry(Concord__CommandResult *res, uint64_t index, const char *why)
{
    res->code = CLUSTER_RESULT_INVALID;
    res->index = index;
    res->message = (char *)why; /* static: never freed, see cluster_result_clear */
}

/* The open batch, begun by the first entry applied since the last flush. */
static struct store_txn *batch_txn(struct cluster_fsm *f, uint64_t index)
{
    int rv;

    if (f->batch == NULL) {
        rv = store_txn_begin(f->store, true, &f->batch);
        if (rv != 0)
            fatal(f, index, "begin", rv, NULL);
    }
    return f->batch;
}

/* Keeps the entry's command and result for the applied hook; false when out
 * of memory (fatal: the hook would miss an event). */
static bool event_push(struct cluster_fsm *f, uint64_t index, Concord__Command *cmd,
                       const Concord__CommandResult *res, bool is_static_message)
{
    struct cluster_fsm_event *ev;

    if (f->n_events == f->cap_events) {
        size_t cap = f->cap_events != 0 ? 2 * f->cap_events : 16;
        struct cluster_fsm_event *grown = realloc(f->events, cap * sizeof *grown);

        if (grown == NULL)
            return false;
        f->events = grown;
        f->cap_events = cap;
    }
    ev = &f->events[f->n_events++];
    ev->index = index;
    ev->cmd = cmd;
    ev->result = *res;
    ev->is_static_message = is_static_message;
    return true;
}

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
    struct cluster_fsm *f = fsm->data;
    uint64_t index = raft_last_applied(f->raft) + 1;
    Concord__CommandResult res = CONCORD__COMMAND_RESULT__INIT;
    Concord__Command *cmd = NULL;
    struct store_txn *t;
    const uint8_t *request_id = NULL;
    bool is_static_message = false;
    bool is_duplicate = false;
    int rv;

    *result = NULL;
    if (index <= f->applied_index)
        return 0;
    t = batch_txn(f, index);
    if (cluster_command_decode(buf->base, buf->len, &cmd) != 0) {
        invalid_entry(&res, index, "undecodable log entry");
        is_static_message = true;
    } else if (cmd->request_id.len != 0 && cmd->request_id.len != CLUSTER_REQUEST_ID_BYTES) {
        invalid_entry(&res, index, "request id must be 16 bytes");
        is_static_message = true;
    } else {
        if (cmd->request_id.len == CLUSTER_REQUEST_ID_BYTES)
            request_id = cmd->request_id.data;
        if (request_id != NULL) {
            rv = dedup_lookup(t, request_id, &res, &is_duplicate);
            if (rv != 0)
                fatal(f, index, "dedup lookup", rv, t);
        }
        if (!is_duplicate) {
            rv = cluster_fsm_execute(t, cmd, index, &res);
            if (rv != 0)
                fatal(f, index, "execute", rv, t);
        }
    }
    if (request_id != NULL && !is_duplicate) {
        rv = dedup_record(t, request_id, index, &res);
        if (rv != 0)
            fatal(f, index, "dedup record", rv, t);
    }
    /* Per entry, not per batch: what a later entry of the batch finds by
     * request id must not depend on where the batch boundaries fell. */
    if (index > CLUSTER_DEDUP_WINDOW) {
        rv = store_dedup_trim(t, index - CLUSTER_DEDUP_WINDOW);
        if (rv != 0)
            fatal(f, index, "dedup trim", rv, t);
    }
    f->applied_index = index;
    if (cmd == NULL) {
        if (!is_static_message)
            cluster_result_clear(&res);
        return 0;
    }
    if (f->claim != NULL)
        f->claim(f->claim_arg, index, cmd, &res);
    if (f->applied != NULL) {
        if (!event_push(f, index, cmd, &res, is_static_message))
            fatal(f, index, "queueing the applied event", STORE_NOMEM, t);
        return 0;
    }
    if (!is_static_message)
        cluster_result_clear(&res);
    concord__command__free_unpacked(cmd, NULL);
    return 0;
}

void cluster_fsm_flush(struct cluster_fsm *f)
{
    struct cluster_fsm_event *events = f->events;
    size_t n = f->n_events;
    size_t cap = f->cap_events;
    int rv;

    if (f->batch == NULL)
        return;
    rv = store_applied_index_put(f->batch, f->applied_index);
    if (rv != 0)
        fatal(f, f->applied_index, "applied index", rv, f->batch);
    rv = store_txn_commit(f->batch);
    f->batch = NULL;
    if (rv != 0)
        fatal(f, f->applied_index, "commit", rv, NULL);
    f->store_applied = f->applied_index;
    f->n_batches++;
    /* The hook may run cluster_* calls that flush again: hand it a detached
     * list, so a nested flush finds nothing to deliver. */
    f->events = NULL;
    f->n_events = 0;
    f->cap_events = 0;
    for (size_t i = 0; i < n; i++) {
        struct cluster_fsm_event *ev = &events[i];

        f->applied(f->applied_arg, ev->index, ev->cmd, &ev->result);
        if (!ev->is_static_message)
            cluster_result_clear(&ev->result);
        concord__command__free_unpacked(ev->cmd, NULL);
    }
    if (f->events == NULL) {
        f->events = events; /* keep the array for the next batch */
        f->cap_events = cap;
    } else {
        free(events);
    }
}

void cluster_fsm_close(struct cluster_fsm *f)
{
    cluster_fsm_flush(f);
    free(f->events);
    f->events = NULL;
    f->cap_events = 0;
}

static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    struct cluster_fsm *f = fsm->data;
    struct raft_buffer *out = NULL;
    struct store_txn *t = NULL;
    uint8_t *header = NULL;
    uint8_t *dump = NULL;
    size_t dump_len = 0;
    uint64_t applied = 0;
    uint64_t start_ns = uv_hrtime();
    int rv;

    cluster_fsm_flush(f);
    rv = store_txn_begin(f->store, false, &t);
    if (rv != 0)
        goto err;
    rv = store_applied_index_get(t, &applied);
    if (rv == 0)
        rv = store_dump(t, &dump, &dump_len);
    if (rv != 0) {
        cluster_logf(f->log, f->log_arg, CLUSTER_LOG_WARN,
                     "snapshot failed error=\"%s\" detail=\"%s\"", store_strerror(rv),
                     store_txn_errmsg(t));
        store_txn_abort(t);
        return rv == STORE_NOMEM ? RAFT_NOMEM : RAFT_IOERR;
    }
    store_txn_abort(t);
    header = malloc(CLUSTER_SNAPSHOT_HEADER_BYTES);
    out = malloc(2 * sizeof *out);
    if (header == NULL || out == NULL) {
        rv = STORE_NOMEM;
        goto err_after_dump;
    }
    cluster_snapshot_header_encode(applied, header);
    out[0] = (struct raft_buffer){.base = header, .len = CLUSTER_SNAPSHOT_HEADER_BYTES};
    out[1] = (struct raft_buffer){.base = dump, .len = dump_len};
    *bufs = out;
    *n_bufs = 2;
    /* The dump runs on the loop thread: its duration is how long the replica
     * stalls (heartbeats, answers) once per snapshot_threshold entries. */
    cluster_logf(f->log, f->log_arg, CLUSTER_LOG_INFO,
                 "snapshot taken applied=%llu bytes=%zu dump_ms=%.1f", (unsigned long long)applied,
                 dump_len, (double)(uv_hrtime() - start_ns) / 1e6);
    return 0;

err_after_dump:
    free(out);
    free(header);
    free(dump);
err:
    cluster_logf(f->log, f->log_arg, CLUSTER_LOG_WARN, "snapshot failed error=\"%s\"",
                 store_strerror(rv));
    return rv == STORE_NOMEM ? RAFT_NOMEM : RAFT_IOERR;
}

static int fsm_snapshot_finalize(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    (void)fsm;
    for (unsigned i = 0; i < *n_bufs; i++)
        free((*bufs)[i].base);
    free(*bufs);
    *bufs = NULL;
    *n_bufs = 0;
    return 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    struct cluster_fsm *f = fsm->data;
    const uint8_t *base = buf->base;
    struct store_txn *t = NULL;
    uint64_t dump_index;
    uint64_t loaded_index = 0;
    int rv;

    cluster_fsm_flush(f);
    if (cluster_snapshot_header_decode(base, buf->len, &dump_index) != 0) {
        cluster_logf(f->log, f->log_arg, CLUSTER_LOG_ERROR,
                     "restore refused: not a concord snapshot bytes=%zu", buf->len);
        return RAFT_CORRUPT;
    }
    if (f->store_applied >= dump_index) {
        cluster_logf(f->log, f->log_arg, CLUSTER_LOG_INFO,
                     "restore skipped: store is as recent store_applied=%llu snapshot=%llu",
                     (unsigned long long)f->store_applied, (unsigned long long)dump_index);
        raft_free(buf->base);
        return 0;
    }
    rv = store_txn_begin(f->store, true, &t);
    if (rv == 0) {
        rv = store_load(t, base + CLUSTER_SNAPSHOT_HEADER_BYTES,
                        buf->len - CLUSTER_SNAPSHOT_HEADER_BYTES, &loaded_index);
        if (rv != 0) {
            cluster_logf(f->log, f->log_arg, CLUSTER_LOG_ERROR,
                         "restore failed error=\"%s\" detail=\"%s\"", store_strerror(rv),
                         store_txn_errmsg(t));
            store_txn_abort(t);
            return rv == STORE_CORRUPT ? RAFT_CORRUPT : RAFT_IOERR;
        }
        rv = store_txn_commit(t);
    }
    if (rv != 0) {
        cluster_logf(f->log, f->log_arg, CLUSTER_LOG_ERROR,
                     "restore failed error=\"%s\" detail=\"%s\"", store_strerror(rv),
                     store_errmsg(f->store));
        return RAFT_IOERR;
    }
    cluster_logf(f->log, f->log_arg, CLUSTER_LOG_INFO,
                 "snapshot restored applied=%llu previous=%llu bytes=%zu",
                 (unsigned long long)loaded_index, (unsigned long long)f->store_applied, buf->len);
    f->store_applied = loaded_index;
    f->applied_index = loaded_index;
    raft_free(buf->base);
    return 0;
}

int cluster_fsm_init(struct cluster_fsm *f, struct store *store, cluster_log_cb log, void *log_arg,
                     char *errmsg)
{
    struct store_txn *t = NULL;
    uint64_t applied = 0;
    int rv;

    memset(f, 0, sizeof *f);
    rv = store_txn_begin(store, false, &t);
    if (rv == 0) {
        rv = store_applied_index_get(t, &applied);
        store_txn_abort(t);
    }
    if (rv != 0) {
        if (errmsg != NULL)
            snprintf(errmsg, 256, "reading the store's applied index: %s", store_strerror(rv));
        return CLUSTER_IO;
    }
    f->fsm.version = 2;
    f->fsm.data = f;
    f->fsm.apply = fsm_apply;
    f->fsm.snapshot = fsm_snapshot;
    f->fsm.restore = fsm_restore;
    f->fsm.snapshot_finalize = fsm_snapshot_finalize;
    f->store = store;
    f->applied_index = applied;
    f->store_applied = applied;
    f->log = log;
    f->log_arg = log_arg;
    return 0;
}
