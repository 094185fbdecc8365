/* server/admin/snapshot.c: logical backups. Save: barrier, store_dump in one
 * read transaction (a consistent cut), zstd-compress (with a frame checksum)
 * on the thread pool, answer the bytes. Restore: decompress on the thread pool with a size cap,
 * then submit RestoreState, so every replica replaces its state at the same
 * log index; the FSM checks the dump's format and checksum and changes
 * nothing if they are wrong. */
#include "server/admin/admin_internal.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <zstd.h>

/* A restore is one Raft entry; far past this the log is the wrong vehicle. */
#define RESTORE_MAX_BYTES ((size_t)512 * 1024 * 1024)
#define COMPRESS_LEVEL    3

enum work_status { WORK_OK, WORK_NOMEM, WORK_CORRUPT, WORK_TOOBIG };

/* With zstd's frame checksum, so that a file damaged since it was saved is
 * refused while decompressing, before anything is proposed. */
static void compress_work(uv_work_t *w)
{
    struct admin_call *call = w->data;
    size_t cap = ZSTD_compressBound(call->blob_len);
    uint8_t *out = malloc(cap > 0 ? cap : 1);
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    size_t n;

    if (out == NULL || cctx == NULL) {
        ZSTD_freeCCtx(cctx);
        free(out);
        call->work_status = WORK_NOMEM;
        return;
    }
    n = ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, COMPRESS_LEVEL);
    if (!ZSTD_isError(n))
        n = ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
    if (!ZSTD_isError(n))
        n = ZSTD_compress2(cctx, out, cap, call->blob, call->blob_len);
    ZSTD_freeCCtx(cctx);
    if (ZSTD_isError(n)) {
        free(out);
        call->work_status = WORK_NOMEM;
        return;
    }
    free(call->blob);
    call->blob = out;
    call->blob_len = n;
    call->work_status = WORK_OK;
}

static void compress_after(uv_work_t *w, int status)
{
    struct admin_call *call = w->data;
    struct admin *a = call->admin;

    if (admin_work_end(a)) {
        admin_fail(call, ADMIN_UNAVAILABLE, "replica is shutting down");
        admin_work_release(a);
        return;
    }
    if (status != 0 || call->work_status != WORK_OK) {
        admin_fail(call, ADMIN_INTERNAL, "cannot compress the snapshot");
        return;
    }
    admin_reply_raw(call, 200, "application/octet-stream", call->blob, call->blob_len);
}

static void snapshot_read(struct admin_call *call, struct store_txn *t)
{
    int rv = store_dump(t, &call->blob, &call->blob_len);

    if (rv != 0) {
        admin_fail_store(call, rv, "cannot dump the state");
        return;
    }
    if (admin_queue_work(call, compress_work, compress_after) != 0)
        admin_fail(call, ADMIN_INTERNAL, "cannot queue the compression");
}

void admin_cluster_snapshot_save(struct admin_call *call)
{
    admin_read(call, snapshot_read);
}

/* Streams the frames so that a lying or absent content size cannot make us
 * allocate more than RESTORE_MAX_BYTES. */
static void decompress_work(uv_work_t *w)
{
    struct admin_call *call = w->data;
    ZSTD_inBuffer in = {call->req->body, call->req->body_len, 0};
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    size_t cap = ZSTD_DStreamOutSize(), left = 1;
    ZSTD_outBuffer out = {malloc(cap), cap, 0};

    call->work_status = WORK_OK;
    if (dctx == NULL || out.dst == NULL) {
        call->work_status = WORK_NOMEM;
        goto out;
    }
    /* A full output buffer may hide more to flush, even with no input left. */
    while (in.pos < in.size || out.pos == out.size) {
        if (out.pos == out.size) {
            size_t grown = out.size * 2 > RESTORE_MAX_BYTES ? RESTORE_MAX_BYTES : out.size * 2;
            void *p;
            if (out.size >= RESTORE_MAX_BYTES) {
                call->work_status = WORK_TOOBIG;
                goto out;
            }
            p = realloc(out.dst, grown);
            if (p == NULL) {
                call->work_status = WORK_NOMEM;
                goto out;
            }
            out.dst = p;
            out.size = grown;
        }
        left = ZSTD_decompressStream(dctx, &out, &in);
        if (ZSTD_isError(left)) {
            call->work_status = WORK_CORRUPT;
            goto out;
        }
    }
    if (left != 0) /* input ended inside a frame: truncated */
        call->work_status = WORK_CORRUPT;
out:
    ZSTD_freeDCtx(dctx);
    if (call->work_status != WORK_OK) {
        free(out.dst);
        return;
    }
    call->blob = out.dst;
    call->blob_len = out.pos;
}

static void restore_done(struct admin_call *call, struct store_txn *t,
                         const Concord__CommandResult *result)
{
    uint8_t hash[32];
    char hex[65];
    int rv = store_state_hash(t, hash);

    if (rv != 0) {
        admin_fail_store(call, rv, "restored, but cannot hash the state");
        return;
    }
    sodium_bin2hex(hex, sizeof hex, hash, sizeof hash);
    admin_reply_json(
        call, 200, json_pack("{s:o, s:s}", "index", admin_json_id(result->index), "stateHash", hex),
        NULL);
}

static void decompress_after(uv_work_t *w, int status)
{
    struct admin_call *call = w->data;
    struct admin *a = call->admin;
    Concord__RestoreState *op;
    Concord__Command *cmd;

    if (admin_work_end(a)) {
        admin_fail(call, ADMIN_UNAVAILABLE, "replica is shutting down: nothing was restored");
        admin_work_release(a);
        return;
    }
    if (status != 0 || call->work_status == WORK_NOMEM) {
        admin_fail(call, ADMIN_INTERNAL, "cannot decompress the snapshot: out of memory");
        return;
    }
    if (call->work_status == WORK_CORRUPT) {
        admin_fail(call, ADMIN_INVALID,
                   "the body is not a zstd-compressed concord snapshot, or it is truncated or "
                   "corrupted");
        return;
    }
    if (call->work_status == WORK_TOOBIG) {
        admin_fail(call, ADMIN_TOOBIG, "the snapshot decompresses to more than %zu MiB",
                   RESTORE_MAX_BYTES >> 20);
        return;
    }
    if ((cmd = admin_command_new(call)) == NULL ||
        (op = admin_op_alloc(call, cmd, sizeof *op)) == NULL)
        return;
    concord__restore_state__init(op);
    cmd->op_case = CONCORD__COMMAND__OP_RESTORE_STATE;
    cmd->restore_state = op;
    op->dump.data = call->blob; /* moves into the command */
    op->dump.len = call->blob_len;
    call->blob = NULL;
    call->blob_len = 0;
    admin_submit(call, cmd, restore_done);
}

void admin_cluster_snapshot_restore(struct admin_call *call)
{
    if (call->req->body_len == 0) {
        admin_fail(call, ADMIN_INVALID, "the body must be a snapshot file");
        return;
    }
    if (admin_queue_work(call, decompress_work, decompress_after) != 0)
        admin_fail(call, ADMIN_INTERNAL, "cannot queue the decompression");
}
