/* server/control/presence.c: presence that survives a replica's crash.
 *
 * A node is online while some replica holds a map session for it, recorded
 * in the replicated sessions table. A replica that dies (SIGKILL, power,
 * partition) cannot close its sessions, so every replica proposes a
 * ReplicaHeartbeat each HEARTBEAT_MS, and the leader expires the sessions of
 * any replica it has not heard from for REPLICA_TIMEOUT_MS: those nodes go
 * offline (their routes fail over) unless they have already reconnected to
 * another replica, whose session keeps them online. Time is the leader's own
 * monotonic clock from the moment it applied each heartbeat, so clock skew
 * between replicas plays no part; a new leader gives every replica a full
 * timeout before judging it. */
#include "server/control/control_internal.h"

#include <stdlib.h>

#include "server/log.h"

#define HEARTBEAT_MS       1000
#define REPLICA_TIMEOUT_MS 4000
#define EXPIRED_MAX        256 /* sessions closed per tick; the rest next tick */

static void on_heartbeat_done(void *arg, int status, const Concord__CommandResult *result)
{
    (void)arg;
    (void)result;
    if (status != CLUSTER_OK)
        LOG_DEBUG("control: replica heartbeat not applied: %s", cluster_strerror(status));
}

static void heartbeat_propose(struct control *c)
{
    Concord__Command *cmd = ctl_command_new(c);
    Concord__ReplicaHeartbeat *op = calloc(1, sizeof *op);

    if (cmd == NULL || op == NULL) {
        free(op);
        if (cmd != NULL)
            concord__command__free_unpacked(cmd, NULL);
        return;
    }
    concord__replica_heartbeat__init(op);
    op->id = c->opt.replica_id;
    cmd->op_case = CONCORD__COMMAND__OP_REPLICA_HEARTBEAT;
    cmd->replica_heartbeat = op;
    if (cluster_submit(c->opt.cluster, cmd, on_heartbeat_done, NULL) != 0)
        concord__command__free_unpacked(cmd, NULL);
}

struct expiry_walk {
    struct control *c;
    uint64_t now;
    Concord__Session found[EXPIRED_MAX];
    size_t n;
};

/* When the leader last heard from replica id (its heartbeat applied). */
static uint64_t last_heard(const struct control *c, uint64_t id)
{
    uint64_t at;

    if (ctl_idmap_get(&c->replica_heard, id, &at) && at > c->leader_since_ms)
        return at;
    return c->leader_since_ms;
}

static int expiry_consider(const ProtobufCMessage *record, void *arg)
{
    const Concord__Session *s = (const Concord__Session *)record;
    struct expiry_walk *w = arg;

    if (s->replica_id == w->c->opt.replica_id || w->n == EXPIRED_MAX ||
        w->now - last_heard(w->c, s->replica_id) < REPLICA_TIMEOUT_MS)
        return 0;
    w->found[w->n++] = (Concord__Session){.node_id = s->node_id, .session_id = s->session_id};
    return 0;
}

/* On the leader: closes the sessions of replicas gone silent. Proposed
 * again on the next tick until they are gone (closing a closed session
 * changes nothing). */
static void expire_silent_replicas(struct control *c, uint64_t now)
{
    struct expiry_walk *w = calloc(1, sizeof *w);
    struct store_txn *t;

    if (w == NULL)
        return;
    w->c = c;
    w->now = now;
    if (store_txn_begin(c->opt.store, false, &t) != 0) {
        free(w);
        return;
    }
    store_session_each(t, expiry_consider, w);
    store_txn_abort(t);
    if (w->n > 0)
        LOG_WARN("control: closing %zu sessions of replicas silent for %d ms", w->n,
                 REPLICA_TIMEOUT_MS);
    for (size_t i = 0; i < w->n; i++)
        if (!ctl_propose_close_session(c, w->found[i].node_id, w->found[i].session_id,
                                       "held by a silent replica"))
            break;
    free(w);
}

static void on_presence_timer(uv_timer_t *t)
{
    struct control *c = t->data;
    uint64_t now = uv_now(c->opt.loop);
    struct cluster_status st;

    if (c->is_closing)
        return;
    heartbeat_propose(c);
    cluster_status_get(c->opt.cluster, &st);
    if (st.role != CLUSTER_ROLE_LEADER) {
        c->leader_since_ms = 0;
        return;
    }
    if (c->leader_since_ms == 0) {
        /* Newly leader: what others heard before counts for nothing here. */
        c->leader_since_ms = now > 0 ? now : 1;
        ctl_idmap_free(&c->replica_heard);
        return;
    }
    expire_silent_replicas(c, now);
}

void ctl_presence_start(struct control *c)
{
    uv_timer_init(c->opt.loop, &c->presence_timer);
    c->presence_timer.data = c;
    uv_timer_start(&c->presence_timer, on_presence_timer, HEARTBEAT_MS, HEARTBEAT_MS);
}

void ctl_presence_applied(struct control *c, const Concord__Command *cmd)
{
    if (cmd->op_case != CONCORD__COMMAND__OP_REPLICA_HEARTBEAT || c->leader_since_ms == 0)
        return;
    if (ctl_idmap_put(&c->replica_heard, cmd->replica_heartbeat->id, uv_now(c->opt.loop)) != 0)
        LOG_ERROR("control: out of memory recording a replica heartbeat");
}
