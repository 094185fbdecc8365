/* raft/ops.c: every request that may wait, retry or be forwarded.
 *
 * One struct cluster_op per request: a local submit, barrier or membership
 * change, a join sent to a peer, or a PeerRequest that arrived from another
 * replica. Its story:
 *   READY      dispatch: on the leader run it through libraft; on a follower
 *              forward it to the leader's http address (from the replicas
 *              table); with no known leader wait, the timer retries.
 *   RAFT       a raft_apply/raft_change/raft_transfer request is in flight.
 *   BARRIER_*  queued for, or riding on, the leader's next raft_barrier.
 *   FORWARDED  the peer transport carries it to the leader.
 *   CHILD      a membership change waits for the command recording addresses.
 *   WAIT       a follower waits until it has applied the leader's index.
 *   DONE       answered; freed once nothing is in flight any more.
 * Failure: "not leader" answers and transport failures go back to READY until
 * the deadline (submit_timeout_ms); with no leader for 2 x election timeout
 * the answer is NOLEADER when nothing can have been applied, UNKNOWN when an
 * attempt may have been. Retried submissions keep their request id, so the
 * FSM's de-duplication makes a retry harmless. Answers are queued and
 * delivered from an idle callback, so callers never re-enter from inside
 * libraft or from inside their own call, and only once the FSM's batch has
 * committed (ops_deliver flushes it first). */
#include "raft/cluster.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "raft/cluster_internal.h"

enum op_kind { OP_SUBMIT, OP_BARRIER, OP_ADD, OP_REMOVE, OP_TRANSFER, OP_JOIN };

enum op_phase {
    PH_READY,
    PH_RAFT,
    PH_BARRIER_QUEUED,
    PH_BARRIER_INFLIGHT,
    PH_FORWARDED,
    PH_CHILD,
    PH_WAIT,
    PH_DONE
};

struct cluster_op {
    struct cluster_op *prev; /* c->ops */
    struct cluster_op *next;
    struct cluster_op *completed_next; /* c->completed_head */
    struct cluster *c;
    enum op_kind kind;
    enum op_phase phase;
    bool may_forward;      /* false for requests a peer sent to us as leader */
    bool maybe_applied;    /* an attempt's outcome is unknown */
    bool was_member;       /* OP_REMOVE: the id was in the configuration */
    bool is_raft_inflight; /* req below belongs to libraft */
    bool is_transport_inflight;
    bool has_result;
    bool is_answered;       /* the caller has been called back */
    bool is_child_inflight; /* OP_ADD/OP_REMOVE: a child submission holds this op */
    bool is_due;            /* dispatch from the next idle callback */
    int status;             /* the answer, once PH_DONE */
    uint64_t deadline_ms;
    uint64_t no_leader_since_ms; /* 0: a leader was known at the last attempt */
    uint64_t wait_index;
    Concord__Command *cmd; /* OP_SUBMIT: owned */
    Concord__CommandResult result;
    uint64_t member_id;
    char raft_address[64];
    char http_address[64];
    char peer_address[64]; /* OP_JOIN: the replica asked */
    char errmsg[192];
    uint8_t *forward_buf;
    union {
        struct raft_apply apply;
        struct raft_change change;
        struct raft_transfer transfer;
    } req;
    cluster_submit_cb submit_cb;
    cluster_done_cb done_cb;
    cluster_reply_cb reply_cb;
    void *arg;
};

static void op_dispatch(struct cluster_op *op);
static void ops_on_idle(uv_idle_t *idle);

static uint64_t now_ms(struct cluster *c)
{
    return uv_now(c->loop);
}

/* Dispatches the op from the idle callback: on the next loop iteration,
 * outside of whatever called us (possibly libraft itself). */
static void op_kick(struct cluster_op *op)
{
    op->phase = PH_READY;
    op->is_due = true;
    if (!op->c->is_closing_handles)
        uv_idle_start(&op->c->idle, ops_on_idle);
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src != NULL ? src : "");
}

static int op_new(struct cluster *c, enum op_kind kind, struct cluster_op **out)
{
    struct cluster_op *op = calloc(1, sizeof *op);

    if (op == NULL)
        return CLUSTER_NOMEM;
    op->c = c;
    op->kind = kind;
    op->phase = PH_READY;
    op->may_forward = true;
    op->deadline_ms = now_ms(c) + cluster_submit_timeout_ms(c);
    concord__command_result__init(&op->result);
    op->next = c->ops;
    if (c->ops != NULL)
        c->ops->prev = op;
    c->ops = op;
    op_kick(op);
    *out = op;
    return 0;
}

static void op_free(struct cluster_op *op)
{
    struct cluster *c = op->c;

    if (op->prev != NULL)
        op->prev->next = op->next;
    else
        c->ops = op->next;
    if (op->next != NULL)
        op->next->prev = op->prev;
    if (op->cmd != NULL)
        concord__command__free_unpacked(op->cmd, NULL);
    cluster_result_clear(&op->result);
    free(op->forward_buf);
    free(op);
}

/* Frees the op once it has been answered and libraft and the transport are
 * done with it. */
static void op_release(struct cluster_op *op)
{
    if (op->phase == PH_DONE && op->is_answered && !op->is_raft_inflight &&
        !op->is_transport_inflight && !op->is_child_inflight)
        op_free(op);
}

/* Queues the answer; the idle callback delivers it. */
static void op_finish_msg(struct cluster_op *op, int status, const char *msg)
{
    struct cluster *c = op->c;

    if (op->phase == PH_DONE)
        return;
    op->phase = PH_DONE;
    op->status = status;
    if (msg != NULL && op->errmsg[0] == '\0')
        copy_str(op->errmsg, sizeof op->errmsg, msg);
    op->completed_next = NULL;
    if (c->completed_tail != NULL)
        c->completed_tail->completed_next = op;
    else
        c->completed_head = op;
    c->completed_tail = op;
    if (!c->is_closing_handles)
        uv_idle_start(&c->idle, ops_on_idle);
}

static void op_finish(struct cluster_op *op, int status)
{
    op_finish_msg(op, status, NULL);
}

/* What a request that ran out of time answers. */
static int op_timeout_status(const struct cluster_op *op)
{
    if (op->phase == PH_WAIT)
        return CLUSTER_TIMEOUT;
    if (op->maybe_applied || op->phase == PH_RAFT || op->phase == PH_FORWARDED)
        return CLUSTER_UNKNOWN;
    return CLUSTER_NOLEADER;
}

static void op_reply(struct cluster_op *op, int status)
{
    Concord__PeerReply reply = CONCORD__PEER_REPLY__INIT;
    uint8_t small[256];
    uint8_t *buf = small;
    size_t len;

    reply.status = (uint32_t)status;
    reply.message = op->errmsg[0] != '\0' ? op->errmsg : (char *)cluster_strerror(status);
    if (status == CLUSTER_OK) {
        reply.result = op->has_result ? &op->result : NULL;
        reply.index = op->has_result ? op->result.index : op->wait_index;
    }
    len = concord__peer_reply__get_packed_size(&reply);
    if (len > sizeof small)
        buf = malloc(len);
    if (buf == NULL) {
        /* Still answer exactly once; the peer retries or gives up. */
        Concord__PeerReply oom = CONCORD__PEER_REPLY__INIT;

        oom.status = CLUSTER_NOMEM;
        len = concord__peer_reply__pack(&oom, small);
        op->reply_cb(op->arg, small, len);
        return;
    }
    len = concord__peer_reply__pack(&reply, buf);
    op->reply_cb(op->arg, buf, len);
    if (buf != small)
        free(buf);
}

/* A follower that forwarded a request answers its caller only once it has
 * applied the entry itself, so it must learn the new commit index. libraft
 * tells followers only with the next AppendEntries, which on an idle cluster
 * is a heartbeat up to two heartbeat periods away (~200 ms by default). An
 * empty barrier entry makes the leader send AppendEntries at once, carrying
 * the commit index that covers what was just answered. One barrier serves
 * every answer given while it is in flight; under load, entries flow anyway. */
static void nudge_on_done(struct raft_barrier *req, int status);

static void nudge_followers(struct cluster *c)
{
    c->is_nudge_wanted = true;
    if (c->is_nudge_inflight || c->is_closing)
        return;
    c->is_nudge_wanted = false;
    c->nudge.data = c;
    /* Not leader any more, or shutting down: the followers will hear the
     * commit index from whoever leads next. */
    c->is_nudge_inflight = raft_barrier(&c->raft, &c->nudge, nudge_on_done) == 0;
}

static void nudge_on_done(struct raft_barrier *req, int status)
{
    struct cluster *c = req->data;

    (void)status;
    c->is_nudge_inflight = false;
    if (c->is_nudge_wanted)
        nudge_followers(c);
}

static void op_notify(struct cluster_op *op, int status)
{
    if (op->reply_cb != NULL) {
        op_reply(op, status);
        if (status == CLUSTER_OK)
            nudge_followers(op->c);
    } else if (op->submit_cb != NULL) {
        op->submit_cb(op->arg, status, status == CLUSTER_OK ? &op->result : NULL);
    } else if (op->done_cb != NULL) {
        op->done_cb(op->arg, status);
    }
}

/* Every answer leaves from here, after the batch holding whatever it reports
 * has committed: a caller reads its own write, a barrier's reader sees every
 * entry before the barrier. */
static void ops_deliver(struct cluster *c)
{
    cluster_fsm_flush(&c->fsm);
    while (c->completed_head != NULL) {
        struct cluster_op *op = c->completed_head;

        c->completed_head = op->completed_next;
        if (c->completed_head == NULL)
            c->completed_tail = NULL;
        op->is_answered = true;
        op_notify(op, op->status);
        op_release(op);
    }
}

static void ops_on_idle(uv_idle_t *idle)
{
    struct cluster *c = idle->data;
    struct cluster_op *op;
    struct cluster_op *next;

    uv_idle_stop(idle);
    for (op = c->ops; op != NULL; op = next) {
        next = op->next;
        if (!op->is_due)
            continue;
        op->is_due = false;
        if (op->phase == PH_READY)
            op_dispatch(op);
    }
    ops_deliver(c);
    cluster_maybe_finish_close(c);
}

/* ---- leader side: running a request through libraft ---- */

/* libraft said "not leader" (or leadership is moving): a forwardable request
 * tries again shortly, a peer's request answers so the peer re-routes. */
static void op_not_leader(struct cluster_op *op)
{
    if (op->may_forward)
        op->phase = PH_READY;
    else
        op_finish_msg(op, CLUSTER_NOLEADER, "this replica is not the leader");
}

/* A request libraft failed after accepting it (leadership lost, shutdown). */
static void op_raft_lost(struct cluster_op *op, bool may_have_applied)
{
    if (op->c->is_closing) {
        op_finish(op, CLUSTER_SHUTDOWN);
        return;
    }
    if (may_have_applied)
        op->maybe_applied = true;
    if (op->may_forward)
        op->phase = PH_READY;
    else
        op_finish(op, may_have_applied ? CLUSTER_UNKNOWN : CLUSTER_NOLEADER);
}

static void op_raft_error(struct cluster_op *op, int rv)
{
    copy_str(op->errmsg, sizeof op->errmsg, raft_errmsg(&op->c->raft));
    op_finish(op, cluster_code_from_raft(rv));
}

static void op_on_apply(struct raft_apply *req, int status, void *result)
{
    struct cluster_op *op = req->data;

    (void)result; /* results arrive through cluster_ops_claim_result() */
    op->is_raft_inflight = false;
    if (op->phase == PH_DONE) {
        op_release(op);
        return;
    }
    if (status == 0) {
        if (op->has_result)
            op_finish(op, CLUSTER_OK);
        else
            op_finish_msg(op, CLUSTER_INTERNAL, "applied without a result");
        return;
    }
    if (status == RAFT_LEADERSHIPLOST || status == RAFT_SHUTDOWN) {
        op_raft_lost(op, true);
        return;
    }
    op_raft_error(op, status);
}

static void submit_local(struct cluster_op *op)
{
    struct cluster *c = op->c;
    struct raft_buffer buf;
    uint8_t *bytes;
    size_t len;
    int rv;

    rv = cluster_command_encode(op->cmd, &bytes, &len);
    if (rv != 0) {
        op_finish(op, rv);
        return;
    }
    buf.base = bytes;
    buf.len = len;
    op->req.apply.data = op;
    rv = raft_apply(&c->raft, &op->req.apply, &buf, 1, op_on_apply);
    if (rv == 0) {
        op->phase = PH_RAFT;
        op->is_raft_inflight = true;
        return;
    }
    raft_free(bytes);
    if (rv == RAFT_NOTLEADER)
        op_not_leader(op);
    else
        op_raft_error(op, rv);
}

static void barrier_on_done(struct raft_barrier *req, int status);

static void barrier_maybe_start(struct cluster *c)
{
    struct cluster_op *op;
    struct cluster_op *next;
    bool has_queued = false;
    int rv;

    if (c->is_barrier_inflight || c->is_closing)
        return;
    for (op = c->ops; op != NULL && !has_queued; op = op->next)
        has_queued = op->phase == PH_BARRIER_QUEUED;
    if (!has_queued)
        return;
    c->barrier.data = c;
    rv = raft_barrier(&c->raft, &c->barrier, barrier_on_done);
    for (op = c->ops; op != NULL; op = next) {
        next = op->next;
        if (op->phase != PH_BARRIER_QUEUED)
            continue;
        if (rv == 0)
            op->phase = PH_BARRIER_INFLIGHT;
        else if (rv == RAFT_NOTLEADER)
            op_not_leader(op);
        else
            op_raft_error(op, rv);
    }
    c->is_barrier_inflight = rv == 0;
}

static void barrier_on_done(struct raft_barrier *req, int status)
{
    struct cluster *c = req->data;
    struct cluster_op *op;
    struct cluster_op *next;

    c->is_barrier_inflight = false;
    for (op = c->ops; op != NULL; op = next) {
        next = op->next;
        if (op->phase != PH_BARRIER_INFLIGHT)
            continue;
        if (status == 0) {
            op->wait_index = req->index;
            op_finish(op, CLUSTER_OK);
        } else if (status == RAFT_LEADERSHIPLOST || status == RAFT_SHUTDOWN) {
            op_raft_lost(op, false);
        } else {
            op_raft_error(op, status);
        }
    }
    barrier_maybe_start(c);
}

/* Role of server `id` in the current configuration, -1 when absent. */
static int config_role(struct cluster *c, uint64_t id)
{
    const struct raft_configuration *conf = &c->raft.configuration;

    for (unsigned i = 0; i < conf->n; i++) {
        if (conf->servers[i].id == id)
            return conf->servers[i].role;
    }
    return -1;
}

static void op_on_change(struct raft_change *req, int status)
{
    struct cluster_op *op = req->data;

    op->is_raft_inflight = false;
    op->c->is_change_inflight = false;
    if (op->phase == PH_DONE) {
        op_release(op);
        return;
    }
    switch (status) {
    case 0:
        op_kick(op); /* the next step is chosen from the new configuration */
        return;
    case RAFT_LEADERSHIPLOST:
    case RAFT_SHUTDOWN:
        op_raft_lost(op, true);
        return;
    case RAFT_NOCONNECTION:
        op_finish_msg(op, CLUSTER_TRANSPORT,
                      "the new replica did not catch up with the log (unreachable?)");
        return;
    default:
        op_raft_error(op, status);
    }
}

static bool change_begin(struct cluster_op *op)
{
    if (op->c->is_change_inflight) {
        op_finish(op, CLUSTER_BUSY);
        return false;
    }
    op->req.change.data = op;
    return true;
}

static void change_started(struct cluster_op *op, int rv)
{
    if (rv == 0) {
        op->phase = PH_RAFT;
        op->is_raft_inflight = true;
        op->c->is_change_inflight = true;
    } else if (rv == RAFT_NOTLEADER) {
        op_not_leader(op);
    } else if (rv == RAFT_CANTCHANGE) {
        op_finish(op, CLUSTER_BUSY);
    } else if (rv == RAFT_DUPLICATEADDRESS) {
        op_finish_msg(op, CLUSTER_EXISTS, "another replica already uses this raft address");
    } else {
        op_raft_error(op, rv);
    }
}

/* A command of raft/'s own (membership bookkeeping), stamped like an operator's:
 * the proposer's wall clock, data for the audit log only. */
static Concord__Command *command_new(struct cluster *c)
{
    Concord__Command *cmd = malloc(sizeof *cmd);
    struct timespec now;
    char actor[40];

    if (cmd == NULL)
        return NULL;
    concord__command__init(cmd);
    clock_gettime(CLOCK_REALTIME, &now);
    cmd->proposed_unix_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    snprintf(actor, sizeof actor, "replica:%llu", (unsigned long long)c->opts.id);
    cmd->actor = strdup(actor);
    if (cmd->actor == NULL) {
        free(cmd);
        return NULL;
    }
    return cmd;
}

Concord__Command *cluster_upsert_replica_command(struct cluster *c, uint64_t id,
                                                 const char *raft_address, const char *http_address)
{
    Concord__Command *cmd = command_new(c);
    Concord__UpsertReplica *op;

    if (cmd == NULL)
        return NULL;
    op = malloc(sizeof *op);
    if (op == NULL)
        goto err;
    concord__upsert_replica__init(op);
    cmd->op_case = CONCORD__COMMAND__OP_UPSERT_REPLICA;
    cmd->upsert_replica = op;
    op->id = id;
    op->raft_address = strdup(raft_address);
    op->http_address = strdup(http_address);
    if (op->raft_address == NULL || op->http_address == NULL)
        goto err;
    return cmd;
err:
    concord__command__free_unpacked(cmd, NULL);
    return NULL;
}

static Concord__Command *remove_replica_command(struct cluster *c, uint64_t id)
{
    Concord__Command *cmd = command_new(c);
    Concord__RemoveReplica *op;

    if (cmd == NULL)
        return NULL;
    op = malloc(sizeof *op);
    if (op == NULL) {
        concord__command__free_unpacked(cmd, NULL);
        return NULL;
    }
    concord__remove_replica__init(op);
    op->id = id;
    cmd->op_case = CONCORD__COMMAND__OP_REMOVE_REPLICA;
    cmd->remove_replica = op;
    return cmd;
}

static void op_on_child_done(void *arg, int status, const Concord__CommandResult *result)
{
    struct cluster_op *op = arg;

    op->is_child_inflight = false;
    if (op->phase == PH_DONE) {
        op_release(op);
        return;
    }
    if (status != CLUSTER_OK) {
        op_finish(op, status);
        return;
    }
    if (result->code == CLUSTER_RESULT_OK ||
        (op->kind == OP_REMOVE && op->was_member && result->code == CLUSTER_RESULT_NOTFOUND)) {
        cluster_logf(op->c->opts.log, op->c->opts.log_arg, CLUSTER_LOG_INFO,
                     "membership changed %s id=%llu raft=%s http=%s",
                     op->kind == OP_ADD ? "added" : "removed", (unsigned long long)op->member_id,
                     op->raft_address, op->http_address);
        op->wait_index = result->index;
        op_finish(op, CLUSTER_OK);
        return;
    }
    if (op->kind == OP_REMOVE && result->code == CLUSTER_RESULT_NOTFOUND) {
        op_finish_msg(op, CLUSTER_NOTFOUND, result->message);
        return;
    }
    op_finish_msg(op, CLUSTER_INTERNAL, result->message);
}

/* The membership change is in the configuration; record the addresses
 * (or forget them) through the log so every replica can reach the others. */
static void op_start_child(struct cluster_op *op, Concord__Command *cmd)
{
    int rv;

    if (cmd == NULL) {
        op_finish(op, CLUSTER_NOMEM);
        return;
    }
    rv = cluster_submit_internal(op->c, cmd, op_on_child_done, op);
    if (rv != 0) {
        concord__command__free_unpacked(cmd, NULL);
        op_finish(op, rv);
        return;
    }
    op->phase = PH_CHILD;
    op->is_child_inflight = true;
}

static void add_local(struct cluster_op *op)
{
    struct cluster *c = op->c;
    int role = config_role(c, op->member_id);
    int rv;

    if (role == RAFT_VOTER) {
        op_start_child(op, cluster_upsert_replica_command(c, op->member_id, op->raft_address,
                                                          op->http_address));
        return;
    }
    if (!change_begin(op))
        return;
    if (role < 0)
        rv = raft_add(&c->raft, &op->req.change, op->member_id, op->raft_address, op_on_change);
    else
        rv = raft_assign(&c->raft, &op->req.change, op->member_id, RAFT_VOTER, op_on_change);
    change_started(op, rv);
}

static void remove_local(struct cluster_op *op)
{
    struct cluster *c = op->c;
    int rv;

    if (config_role(c, op->member_id) < 0) {
        op_start_child(op, remove_replica_command(c, op->member_id));
        return;
    }
    op->was_member = true;
    if (!change_begin(op))
        return;
    rv = raft_remove(&c->raft, &op->req.change, op->member_id, op_on_change);
    change_started(op, rv);
}

static void op_on_transfer(struct raft_transfer *req)
{
    struct cluster_op *op = req->data;
    struct cluster *c = op->c;
    raft_id leader_id = 0;
    const char *leader_address = NULL;

    op->is_raft_inflight = false;
    c->is_transfer_inflight = false;
    if (op->phase == PH_DONE) {
        op_release(op);
        return;
    }
    if (c->is_closing) {
        op_finish(op, CLUSTER_SHUTDOWN);
        return;
    }
    /* libraft reports no outcome: leadership moved iff this replica no longer
     * leads (and, when a target was named, nobody else but it does). */
    raft_leader(&c->raft, &leader_id, &leader_address);
    if (raft_state(&c->raft) == RAFT_LEADER ||
        (op->member_id != 0 && leader_id != 0 && leader_id != op->member_id)) {
        op_finish_msg(op, CLUSTER_TIMEOUT, "leadership did not move within the election timeout");
        return;
    }
    cluster_logf(c->opts.log, c->opts.log_arg, CLUSTER_LOG_INFO,
                 "leadership transferred from=%llu to=%llu", (unsigned long long)c->opts.id,
                 (unsigned long long)leader_id);
    op_finish(op, CLUSTER_OK);
}

static void transfer_local(struct cluster_op *op)
{
    struct cluster *c = op->c;
    int rv;

    if (op->member_id == c->opts.id) {
        op_finish(op, CLUSTER_OK);
        return;
    }
    if (c->is_transfer_inflight) {
        op_finish_msg(op, CLUSTER_BUSY, "a leadership transfer is already in progress");
        return;
    }
    op->req.transfer.data = op;
    rv = raft_transfer(&c->raft, &op->req.transfer, op->member_id, op_on_transfer);
    if (rv == 0) {
        op->phase = PH_RAFT;
        op->is_raft_inflight = true;
        c->is_transfer_inflight = true;
    } else if (rv == RAFT_NOTLEADER) {
        op_not_leader(op);
    } else if (rv == RAFT_BADID || rv == RAFT_NOTFOUND) {
        op_finish_msg(op, CLUSTER_NOTFOUND, "no such voter to transfer leadership to");
    } else {
        op_raft_error(op, rv);
    }
}

static void op_run_local(struct cluster_op *op)
{
    switch (op->kind) {
    case OP_SUBMIT:
        submit_local(op);
        break;
    case OP_BARRIER:
        op->phase = PH_BARRIER_QUEUED;
        barrier_maybe_start(op->c);
        break;
    case OP_ADD:
        add_local(op);
        break;
    case OP_REMOVE:
        remove_local(op);
        break;
    case OP_TRANSFER:
        transfer_local(op);
        break;
    case OP_JOIN:
        break; /* always forwarded, see op_dispatch */
    }
}

/* ---- follower side: forwarding ---- */

static void op_wait_applied(struct cluster_op *op)
{
    if (raft_last_applied(&op->c->raft) >= op->wait_index) {
        op_finish(op, CLUSTER_OK);
        return;
    }
    op->phase = PH_WAIT;
}

static bool op_is_mutation(const struct cluster_op *op)
{
    return op->kind != OP_BARRIER && op->kind != OP_TRANSFER;
}

static void op_on_reply(struct cluster_op *op, const Concord__PeerReply *r)
{
    switch (r->status) {
    case CLUSTER_OK:
        if (op->kind == OP_SUBMIT) {
            if (r->result == NULL) {
                op->maybe_applied = true;
                op->phase = PH_READY;
                return;
            }
            cluster_result_clear(&op->result);
            op->result.code = r->result->code;
            op->result.id = r->result->id;
            op->result.index = r->result->index;
            if (r->result->message != NULL && r->result->message[0] != '\0') {
                op->result.message = strdup(r->result->message);
                if (op->result.message == NULL) {
                    op->result.message = (char *)protobuf_c_empty_string;
                    op_finish(op, CLUSTER_NOMEM);
                    return;
                }
            }
            op->has_result = true;
            op->wait_index = r->result->index;
        } else {
            op->wait_index = r->index;
        }
        if (op->kind == OP_JOIN)
            op_finish(op, CLUSTER_OK);
        else
            op_wait_applied(op);
        return;
    case CLUSTER_NOLEADER:
        op->phase = PH_READY;
        return;
    case CLUSTER_UNKNOWN:
    case CLUSTER_SHUTDOWN:
    case CLUSTER_TIMEOUT:
    case CLUSTER_TRANSPORT:
        if (op_is_mutation(op))
            op->maybe_applied = true;
        op->phase = PH_READY;
        return;
    default:
        op_finish_msg(op, (int)r->status, r->message);
    }
}

static void op_on_forward_done(void *req_arg, int status, const uint8_t *reply, size_t len)
{
    struct cluster_op *op = req_arg;
    struct cluster *c = op->c;
    Concord__PeerReply *r;

    op->is_transport_inflight = false;
    c->n_transport_inflight--;
    free(op->forward_buf);
    op->forward_buf = NULL;
    if (op->phase == PH_DONE) {
        op_release(op);
        cluster_maybe_finish_close(c);
        return;
    }
    if (c->is_closing) {
        op_finish(op, CLUSTER_SHUTDOWN);
        return;
    }
    r = status == CLUSTER_OK ? concord__peer_reply__unpack(NULL, len, reply) : NULL;
    if (r == NULL) {
        /* The request may have arrived and been applied: retry with the same
         * request id, the FSM answers a duplicate with the first result. */
        if (op_is_mutation(op))
            op->maybe_applied = true;
        op->phase = PH_READY;
        return;
    }
    op_on_reply(op, r);
    concord__peer_reply__free_unpacked(r, NULL);
}

static void op_forward(struct cluster_op *op, const char *http_address)
{
    struct cluster *c = op->c;
    Concord__PeerRequest req = CONCORD__PEER_REQUEST__INIT;
    Concord__JoinRequest join = CONCORD__JOIN_REQUEST__INIT;
    size_t len;
    int rv;

    if (c->opts.transport.send == NULL) {
        op_finish_msg(op, CLUSTER_TRANSPORT, "no peer transport to reach the leader");
        return;
    }
    switch (op->kind) {
    case OP_SUBMIT:
        req.op_case = CONCORD__PEER_REQUEST__OP_PROPOSE;
        req.propose = op->cmd;
        break;
    case OP_BARRIER:
        req.op_case = CONCORD__PEER_REQUEST__OP_BARRIER;
        req.barrier = true;
        break;
    case OP_ADD:
    case OP_JOIN:
        join.id = op->member_id;
        join.raft_address = op->raft_address;
        join.http_address = op->http_address;
        req.op_case = CONCORD__PEER_REQUEST__OP_JOIN;
        req.join = &join;
        break;
    case OP_REMOVE:
        req.op_case = CONCORD__PEER_REQUEST__OP_REMOVE;
        req.remove = op->member_id;
        break;
    case OP_TRANSFER:
        req.op_case = CONCORD__PEER_REQUEST__OP_TRANSFER;
        req.transfer = op->member_id;
        break;
    }
    len = concord__peer_request__get_packed_size(&req);
    op->forward_buf = malloc(len != 0 ? len : 1);
    if (op->forward_buf == NULL) {
        op_finish(op, CLUSTER_NOMEM);
        return;
    }
    concord__peer_request__pack(&req, op->forward_buf);
    op->phase = PH_FORWARDED;
    op->is_transport_inflight = true;
    c->n_transport_inflight++;
    rv = c->opts.transport.send(c->opts.transport.arg, http_address, op->forward_buf, len,
                                op_on_forward_done, op);
    if (rv != 0) {
        /* Could not start: the request surely did not arrive. */
        op->is_transport_inflight = false;
        c->n_transport_inflight--;
        free(op->forward_buf);
        op->forward_buf = NULL;
        op->phase = PH_READY;
    }
}

/* ---- dispatch ---- */

static void op_dispatch(struct cluster_op *op)
{
    struct cluster *c = op->c;
    uint64_t now = now_ms(c);
    raft_id leader_id = 0;
    const char *leader_raft_address = NULL;
    char http_address[64];

    if (c->is_closing) {
        op_finish(op, CLUSTER_SHUTDOWN);
        return;
    }
    if (now >= op->deadline_ms) {
        op_finish(op, op_timeout_status(op));
        return;
    }
    if (op->kind == OP_JOIN) {
        op_forward(op, op->peer_address);
        return;
    }
    if (raft_state(&c->raft) == RAFT_LEADER) {
        op->no_leader_since_ms = 0;
        op_run_local(op);
        return;
    }
    if (!op->may_forward) {
        op_not_leader(op);
        return;
    }
    raft_leader(&c->raft, &leader_id, &leader_raft_address);
    if (leader_id != 0 && leader_id != c->opts.id &&
        cluster_replica_http_address(c, leader_id, http_address, sizeof http_address)) {
        op->no_leader_since_ms = 0;
        op_forward(op, http_address);
        return;
    }
    /* The first election after start takes up to 2 x election timeout
     * itself: the window opens no earlier than one timeout after start. */
    if (op->no_leader_since_ms == 0)
        op->no_leader_since_ms = now > c->started_ms + cluster_election_timeout_ms(c)
                                     ? now
                                     : c->started_ms + cluster_election_timeout_ms(c);
    if (now >= op->no_leader_since_ms + 2 * cluster_election_timeout_ms(c)) {
        op_finish(op, op->maybe_applied ? CLUSTER_UNKNOWN : CLUSTER_NOLEADER);
        return;
    }
    op->phase = PH_READY;
}

void cluster_ops_on_timer(struct cluster *c)
{
    uint64_t now = now_ms(c);
    struct cluster_op *op;
    struct cluster_op *next;

    for (op = c->ops; op != NULL; op = next) {
        next = op->next;
        switch (op->phase) {
        case PH_READY:
            op_dispatch(op);
            break;
        case PH_CHILD:
        case PH_DONE:
            break; /* a child has its own deadline */
        default:
            if (now >= op->deadline_ms)
                op_finish(op, op_timeout_status(op));
        }
    }
}

void cluster_ops_on_applied(struct cluster *c)
{
    uint64_t applied = raft_last_applied(&c->raft);
    struct cluster_op *op;

    for (op = c->ops; op != NULL; op = op->next) {
        if (op->phase == PH_WAIT && applied >= op->wait_index)
            op_finish(op, CLUSTER_OK);
    }
}

void cluster_ops_claim_result(struct cluster *c, uint64_t index,
                              const Concord__CommandResult *result)
{
    struct cluster_op *op;

    for (op = c->ops; op != NULL; op = op->next) {
        if (op->kind != OP_SUBMIT || !op->is_raft_inflight || op->req.apply.index != index)
            continue;
        cluster_result_clear(&op->result);
        op->result.code = result->code;
        op->result.id = result->id;
        op->result.index = result->index;
        if (result->message != NULL && result->message[0] != '\0') {
            op->result.message = strdup(result->message);
            if (op->result.message == NULL)
                op->result.message = (char *)protobuf_c_empty_string;
        }
        op->has_result = true;
        return;
    }
}

void cluster_ops_shutdown(struct cluster *c)
{
    struct cluster_op *op;

    for (op = c->ops; op != NULL; op = op->next) {
        if (op->phase != PH_DONE)
            op_finish(op, CLUSTER_SHUTDOWN);
    }
}

bool cluster_ops_are_drained(const struct cluster *c)
{
    return c->ops == NULL && c->completed_head == NULL && c->n_transport_inflight == 0;
}

/* ---- public entry points ---- */

static int check_accepting(struct cluster *c)
{
    if (c == NULL)
        return CLUSTER_INVALID;
    if (c->is_closing)
        return CLUSTER_SHUTDOWN;
    if (!c->is_started)
        return CLUSTER_INVALID;
    return 0;
}

/* A request id: [u64 big-endian sequence][8 random bytes]. The sequence
 * starts at the wall clock in ns when the replica starts and counts up, so
 * the ids one replica proposes are ascending keys: inserting them into the
 * de-duplication table touches the same few B-tree pages instead of one
 * random page per entry. Uniqueness does not rest on the clock: two ids
 * collide only if both their sequence and 64 random bits do. The random
 * bytes come from a buffer refilled from libsodium, not a syscall per id. */
static void request_id_make(struct cluster *c, uint8_t out[CLUSTER_REQUEST_ID_BYTES])
{
    uint64_t seq = c->request_seq++;

    if (c->request_random_used + 8 > sizeof c->request_random) {
        randombytes_buf(c->request_random, sizeof c->request_random);
        c->request_random_used = 0;
    }
    for (unsigned i = 0; i < 8; i++)
        out[i] = (uint8_t)(seq >> (56 - 8 * i));
    memcpy(out + 8, c->request_random + c->request_random_used, 8);
    c->request_random_used += 8;
}

static int submit(struct cluster *c, Concord__Command *cmd, cluster_submit_cb cb, void *arg)
{
    struct cluster_op *op;
    int rv;

    if (cmd == NULL || cb == NULL || cmd->op_case == CONCORD__COMMAND__OP__NOT_SET)
        return CLUSTER_INVALID;
    if (cmd->request_id.len != 0 && cmd->request_id.len != CLUSTER_REQUEST_ID_BYTES)
        return CLUSTER_INVALID;
    if (concord__command__get_packed_size(cmd) > CLUSTER_MAX_COMMAND_BYTES)
        return CLUSTER_TOOBIG;
    if (cmd->request_id.len == 0) {
        uint8_t *id = malloc(CLUSTER_REQUEST_ID_BYTES);
        if (id == NULL)
            return CLUSTER_NOMEM;
        request_id_make(c, id);
        cmd->request_id.data = id;
        cmd->request_id.len = CLUSTER_REQUEST_ID_BYTES;
    }
    rv = op_new(c, OP_SUBMIT, &op);
    if (rv != 0)
        return rv;
    op->cmd = cmd;
    op->submit_cb = cb;
    op->arg = arg;
    return 0;
}

int cluster_submit(struct cluster *c, Concord__Command *cmd, cluster_submit_cb cb, void *arg)
{
    int rv = check_accepting(c);

    return rv != 0 ? rv : submit(c, cmd, cb, arg);
}

int cluster_submit_internal(struct cluster *c, Concord__Command *cmd, cluster_submit_cb cb,
                            void *arg)
{
    return c->is_closing ? CLUSTER_SHUTDOWN : submit(c, cmd, cb, arg);
}

static int start_done_op(struct cluster *c, enum op_kind kind, cluster_done_cb cb, void *arg,
                         struct cluster_op **out)
{
    int rv = check_accepting(c);

    if (rv != 0)
        return rv;
    if (cb == NULL)
        return CLUSTER_INVALID;
    rv = op_new(c, kind, out);
    if (rv != 0)
        return rv;
    (*out)->done_cb = cb;
    (*out)->arg = arg;
    return 0;
}

int cluster_barrier(struct cluster *c, cluster_done_cb cb, void *arg)
{
    struct cluster_op *op;

    return start_done_op(c, OP_BARRIER, cb, arg, &op);
}

static bool address_is_valid(const char *address)
{
    return address != NULL && address[0] != '\0' && strlen(address) < 64;
}

int cluster_member_add(struct cluster *c, const struct cluster_member *m, cluster_done_cb cb,
                       void *arg)
{
    struct cluster_op *op;
    int rv;

    if (m == NULL || m->id == 0 || !address_is_valid(m->raft_address) ||
        strlen(m->http_address) >= sizeof op->http_address)
        return CLUSTER_INVALID;
    rv = start_done_op(c, OP_ADD, cb, arg, &op);
    if (rv != 0)
        return rv;
    op->member_id = m->id;
    copy_str(op->raft_address, sizeof op->raft_address, m->raft_address);
    copy_str(op->http_address, sizeof op->http_address, m->http_address);
    return 0;
}

int cluster_member_remove(struct cluster *c, uint64_t id, cluster_done_cb cb, void *arg)
{
    struct cluster_op *op;
    int rv;

    if (id == 0)
        return CLUSTER_INVALID;
    rv = start_done_op(c, OP_REMOVE, cb, arg, &op);
    if (rv != 0)
        return rv;
    op->member_id = id;
    return 0;
}

int cluster_transfer_leadership(struct cluster *c, uint64_t id, cluster_done_cb cb, void *arg)
{
    struct cluster_op *op;
    int rv = start_done_op(c, OP_TRANSFER, cb, arg, &op);

    if (rv != 0)
        return rv;
    op->member_id = id;
    return 0;
}

int cluster_join(struct cluster *c, const char *peer_http_address, cluster_done_cb cb, void *arg)
{
    struct cluster_op *op;
    int rv;

    if (!address_is_valid(peer_http_address))
        return CLUSTER_INVALID;
    rv = start_done_op(c, OP_JOIN, cb, arg, &op);
    if (rv != 0)
        return rv;
    op->member_id = c->opts.id;
    copy_str(op->raft_address, sizeof op->raft_address, c->raft_address);
    copy_str(op->http_address, sizeof op->http_address, c->http_address);
    copy_str(op->peer_address, sizeof op->peer_address, peer_http_address);
    return 0;
}

/* ---- the peer side ---- */

static void reply_now(cluster_reply_cb reply, void *arg, int status, const char *msg)
{
    Concord__PeerReply r = CONCORD__PEER_REPLY__INIT;
    uint8_t buf[256];
    size_t len;

    r.status = (uint32_t)status;
    r.message = (char *)msg;
    len = concord__peer_reply__pack(&r, buf);
    reply(arg, buf, len);
}

void cluster_peer_handle(struct cluster *c, const uint8_t *request, size_t len,
                         cluster_reply_cb reply, void *arg)
{
    Concord__PeerRequest *req;
    struct cluster_op *op = NULL;
    enum op_kind kind;
    int rv;

    if (c->is_closing || !c->is_started) {
        reply_now(reply, arg, CLUSTER_SHUTDOWN, "replica is not running");
        return;
    }
    req = concord__peer_request__unpack(NULL, len, request);
    if (req == NULL) {
        reply_now(reply, arg, CLUSTER_INVALID, "malformed peer request");
        return;
    }
    switch (req->op_case) {
    case CONCORD__PEER_REQUEST__OP_PROPOSE:
        kind = OP_SUBMIT;
        break;
    case CONCORD__PEER_REQUEST__OP_BARRIER:
        kind = OP_BARRIER;
        break;
    case CONCORD__PEER_REQUEST__OP_JOIN:
        kind = OP_ADD;
        break;
    case CONCORD__PEER_REQUEST__OP_REMOVE:
        kind = OP_REMOVE;
        break;
    case CONCORD__PEER_REQUEST__OP_TRANSFER:
        kind = OP_TRANSFER;
        break;
    default:
        concord__peer_request__free_unpacked(req, NULL);
        reply_now(reply, arg, CLUSTER_INVALID, "peer request has no operation");
        return;
    }
    if (kind == OP_SUBMIT && (req->propose->op_case == CONCORD__COMMAND__OP__NOT_SET ||
                              req->propose->request_id.len != CLUSTER_REQUEST_ID_BYTES)) {
        concord__peer_request__free_unpacked(req, NULL);
        reply_now(reply, arg, CLUSTER_INVALID,
                  "forwarded command needs an operation and a "
                  "16-byte request id");
        return;
    }
    if (kind == OP_ADD && (req->join->id == 0 || !address_is_valid(req->join->raft_address) ||
                           strlen(req->join->http_address) >= sizeof op->http_address)) {
        concord__peer_request__free_unpacked(req, NULL);
        reply_now(reply, arg, CLUSTER_INVALID, "join needs an id and a raft address");
        return;
    }
    rv = op_new(c, kind, &op);
    if (rv != 0) {
        concord__peer_request__free_unpacked(req, NULL);
        reply_now(reply, arg, rv, cluster_strerror(rv));
        return;
    }
    op->reply_cb = reply;
    op->arg = arg;
    /* Only a join may travel on (its sender knows any replica, not the
     * leader); everything else was sent to us as the leader. */
    op->may_forward = kind == OP_ADD;
    switch (kind) {
    case OP_SUBMIT:
        op->cmd = req->propose; /* taken over */
        req->propose = NULL;
        req->op_case = CONCORD__PEER_REQUEST__OP__NOT_SET;
        break;
    case OP_ADD:
        op->member_id = req->join->id;
        copy_str(op->raft_address, sizeof op->raft_address, req->join->raft_address);
        copy_str(op->http_address, sizeof op->http_address, req->join->http_address);
        break;
    case OP_REMOVE:
        op->member_id = req->remove;
        if (op->member_id == 0) {
            op_finish_msg(op, CLUSTER_INVALID, "remove needs a replica id");
            concord__peer_request__free_unpacked(req, NULL);
            return;
        }
        break;
    case OP_TRANSFER:
        op->member_id = req->transfer;
        break;
    default:
        break;
    }
    concord__peer_request__free_unpacked(req, NULL);
}
