/* raft/cluster_internal.h: what the files of raft/ share with each other and
 * with tests/unit/raft. libraft's types appear here and in no public header.
 *
 * cluster.c  the replica: raft_uv disk and TCP I/O, start/close, status,
 *            membership view, leader polling, keeping its own address record.
 * ops.c      every request that may wait or be forwarded: submit, barrier,
 *            membership changes, join, and the peer side (cluster_peer_handle).
 * fsm.c      struct raft_fsm over a store: apply, snapshot, restore.
 * execute.c  the business rules of each Command (cluster_fsm_execute).
 * codec.c    log-entry and snapshot framing. */
#ifndef CONCORD_RAFT_CLUSTER_INTERNAL_H
#define CONCORD_RAFT_CLUSTER_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include <raft.h>
#include <raft/uv.h>
#include <uv.h>

#include "raft/cluster.h"
#include "storage/store.h"

/* Largest packed Command accepted (a RestoreState carries a whole dump). */
#define CLUSTER_MAX_COMMAND_BYTES (64u << 20)
/* De-duplication entries older than this many indexes are forgotten; a retry
 * arrives within seconds, far fewer entries than this. */
#define CLUSTER_DEDUP_WINDOW     100000u
#define CLUSTER_REQUEST_ID_BYTES 16u

/* ---- logging (through cluster_options.log only) ---- */
void cluster_logf(cluster_log_cb log, void *arg, enum cluster_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- codec.c ---- */
/* Snapshot framing: [u32 LE magic][u32 LE version][u64 LE applied index of the
 * dump][storage dump]. raft/ owns this frame (the index lets restore skip a
 * dump older than the store without loading it); storage/ owns the dump. */
#define CLUSTER_SNAPSHOT_HEADER_BYTES 16u
void cluster_snapshot_header_encode(uint64_t applied_index,
                                    uint8_t out[CLUSTER_SNAPSHOT_HEADER_BYTES]);
/* CLUSTER_INVALID when buf is not a snapshot of this format. */
int cluster_snapshot_header_decode(const uint8_t *buf, size_t len, uint64_t *applied_index);

/* ---- fsm.c ---- */
/* Hooks of an applied command. claim runs right after the entry was applied
 * into the open batch, before it is committed: it may only record the result
 * for a later answer, never publish it. applied runs once the batch holding
 * the entry has committed, in log order. */
typedef void (*cluster_fsm_applied_cb)(void *arg, uint64_t index, const Concord__Command *cmd,
                                       const Concord__CommandResult *result);

/* An applied command whose applied hook waits for its batch to commit. */
struct cluster_fsm_event {
    uint64_t index;
    Concord__Command *cmd; /* owned */
    Concord__CommandResult result;
    bool is_static_message; /* result.message is a literal, not to be freed */
};

/* Batching: the first entry libraft applies opens a write transaction; the
 * entries applied after it in the same loop iteration go into the same
 * transaction, each seeing the effects of the ones before; the applied index
 * is written once, at the commit. cluster_fsm_flush() commits it. Until then
 * nothing of the batch is visible to read transactions, so the owner must
 * flush before anything can observe the entries: before delivering any
 * answer or event, and on close. snapshot and restore flush themselves. A
 * crash before the commit loses the batch from the store only: the store's
 * applied index is older, so libraft applies the entries again from the log. */
struct cluster_fsm {
    struct raft_fsm fsm;     /* fsm.data == this; pass &fsm to raft_init() */
    struct raft *raft;       /* set before raft_start(): an entry's index is last_applied + 1 */
    struct store *store;     /* borrowed */
    struct store_txn *batch; /* the open batch, NULL when none */
    uint64_t applied_index;  /* last entry applied, in the open batch or committed */
    uint64_t store_applied;  /* the store's committed applied index */
    uint64_t n_batches;      /* batches committed so far */
    cluster_log_cb log;
    void *log_arg;
    cluster_fsm_applied_cb claim; /* may be NULL */
    void *claim_arg;
    cluster_fsm_applied_cb applied; /* may be NULL */
    void *applied_arg;
    struct cluster_fsm_event *events; /* only when applied is set */
    size_t n_events;
    size_t cap_events;
};

/* Reads the store's applied index. The FSM never hands a result to raft
 * (apply's *result is always NULL): results reach proposers through `claim`,
 * which also sees entries proposed elsewhere, so nothing leaks on a replica
 * that did not propose. */
int cluster_fsm_init(struct cluster_fsm *f, struct store *store, cluster_log_cb log, void *log_arg,
                     char *errmsg);
/* Commits the open batch, if any, then runs the applied hook of each of its
 * entries. A storage failure is fatal (abort), as for a single entry. */
void cluster_fsm_flush(struct cluster_fsm *f);
/* Flushes; call before the store closes. */
void cluster_fsm_close(struct cluster_fsm *f);

/* ---- cluster.c / ops.c ---- */
struct cluster_op;

struct cluster {
    uv_loop_t *loop;
    struct cluster_options opts; /* strings point into the arrays below */
    char raft_address[64];
    char http_address[64];
    char *raft_dir;

    struct raft_uv_transport transport;
    struct raft_io io;
    struct raft raft;
    struct cluster_fsm fsm;
    uv_timer_t timer; /* periodic: retries, deadlines, role polling */
    uv_check_t check; /* after each loop iteration's I/O: applied waiters, leader changes */
    bool is_closing_handles;

    bool is_started;
    uint64_t started_ms; /* uv_now() at cluster_start */
    bool is_closing;
    bool is_raft_closed;
    unsigned open_handles;
    cluster_close_cb close_cb;
    void *close_arg;

    struct cluster_op *ops; /* every live request, doubly linked */
    unsigned n_transport_inflight;
    /* Barriers on the leader: callers queued while one barrier is in flight
     * ride on the next one. */
    struct raft_barrier barrier;
    bool is_barrier_inflight;
    /* Commit-index nudge (see nudge_followers in ops.c). */
    struct raft_barrier nudge;
    bool is_nudge_inflight;
    bool is_nudge_wanted;
    /* libraft allows one membership change and one transfer at a time. */
    bool is_change_inflight;
    bool is_transfer_inflight;
    /* Answers are delivered from the idle callback, never from inside a call
     * into raft/ or libraft: callers may re-enter cluster_* from them. */
    uv_idle_t idle;
    struct cluster_op *completed_head;
    struct cluster_op *completed_tail;

    /* Request ids: see request_id_make() in ops.c. */
    uint64_t request_seq;
    uint8_t request_random[512];
    size_t request_random_used;

    /* libraft 0.22.1 workaround, see io_on_recv() in cluster.c. */
    int (*uv_start)(struct raft_io *io, unsigned msecs, raft_io_tick_cb tick, raft_io_recv_cb recv);
    raft_io_recv_cb raft_recv;
    struct raft_message held; /* an InstallSnapshot waiting for our own snapshot */
    char *held_address;
    bool has_held;

    uint64_t last_leader_id;
    uint64_t last_leader_term;
    uint64_t leader_changes;
    uint64_t last_checked_applied;
    bool was_unavailable;
    /* Own Replica record: checked after each leader change. */
    bool is_self_record_ok;
    bool is_self_record_inflight;
    uint64_t self_record_retry_ms;
};

uint64_t cluster_election_timeout_ms(const struct cluster *c);
uint64_t cluster_submit_timeout_ms(const struct cluster *c);
/* Looks the replica up in the store's replicas table; false when unknown. */
bool cluster_replica_http_address(struct cluster *c, uint64_t id, char *out, size_t cap);

/* ops.c, driven by cluster.c */
void cluster_ops_on_timer(struct cluster *c);
void cluster_ops_on_applied(struct cluster *c);
void cluster_ops_claim_result(struct cluster *c, uint64_t index,
                              const Concord__CommandResult *result);
/* Fails every request with CLUSTER_SHUTDOWN (after raft_close()). */
void cluster_ops_shutdown(struct cluster *c);
/* Submits a command built by raft/ itself (e.g. UpsertReplica). */
int cluster_submit_internal(struct cluster *c, Concord__Command *cmd, cluster_submit_cb cb,
                            void *arg);
/* True when no request is left, answered or in flight (close may finish). */
bool cluster_ops_are_drained(const struct cluster *c);
/* A command recording a replica's addresses, actor "replica:<own id>";
 * NULL when out of memory. Free with concord__command__free_unpacked(). */
Concord__Command *cluster_upsert_replica_command(struct cluster *c, uint64_t id,
                                                 const char *raft_address,
                                                 const char *http_address);
/* cluster.c: finishes cluster_close() once everything has drained. */
void cluster_maybe_finish_close(struct cluster *c);

int cluster_code_from_raft(int rv);

#endif
