/* raft/cluster.h: the replicated state machine, as the rest of concord sees it.
 * It hides libraft entirely (no raft_* type leaves raft/): start a replica,
 * submit commands from any replica and learn their result once applied
 * locally, barrier for linearizable reads, change membership.
 *
 * Every replica applies the same committed Commands in the same order to its
 * own LMDB store, idempotent on replay. The entries libraft applies in one
 * loop iteration form a batch: one write transaction, each entry seeing the
 * effects of the ones before it, committed together with the applied index
 * at the end of the iteration. A follower forwards submissions to the leader
 * through the peer transport the caller provides (struct cluster_transport),
 * then waits until it has applied the entry itself, so the caller reads its
 * own write on the replica it talks to.
 *
 * Visibility: a read transaction sees the store as of the last committed
 * batch. Every answer (submit, barrier, membership), every applied event and
 * every cluster_status_get() applied index is delivered only after the batch
 * holding what it reports has committed, so a caller that reads the store from
 * a callback sees at least that much; nothing else needs flushing.
 *
 * Everything runs on the loop thread given to cluster_new(). The process must
 * ignore SIGPIPE: the Raft transport writes to peers that may have gone away. */
#ifndef CONCORD_RAFT_CLUSTER_H
#define CONCORD_RAFT_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "proto/concord.pb-c.h"
#include "storage/store.h"

/* Errors of the machinery (the "did it happen" axis). */
#define CLUSTER_CODES(X)                                                                           \
    X(CLUSTER_OK, "ok")                                                                            \
    X(CLUSTER_NOMEM, "out of memory")                                                              \
    X(CLUSTER_NOLEADER, "no leader: the cluster has no quorum; nothing was applied")               \
    X(CLUSTER_UNKNOWN, "outcome unknown: leadership was lost or the leader did not answer")        \
    X(CLUSTER_TIMEOUT, "timed out waiting for the entry to be applied on this replica")            \
    X(CLUSTER_SHUTDOWN, "replica is shutting down")                                                \
    X(CLUSTER_TOOBIG, "command too large")                                                         \
    X(CLUSTER_INVALID, "invalid argument")                                                         \
    X(CLUSTER_BUSY, "a membership change is already in progress")                                  \
    X(CLUSTER_NOTFOUND, "no such replica")                                                         \
    X(CLUSTER_EXISTS, "already bootstrapped or already a member")                                  \
    X(CLUSTER_IO, "I/O error")                                                                     \
    X(CLUSTER_TRANSPORT, "peer transport failed")                                                  \
    X(CLUSTER_INTERNAL, "internal error")

enum cluster_code {
#define X(code, msg) code,
    CLUSTER_CODES(X)
#undef X
};
const char *cluster_strerror(int code);

/* Outcomes of applying a Command (CommandResult.code): deterministic, the
 * same on every replica; an applied command that failed changed nothing. */
#define CLUSTER_RESULTS(X)                                                                         \
    X(CLUSTER_RESULT_OK, "ok")                                                                     \
    X(CLUSTER_RESULT_NOTFOUND, "not found")                                                        \
    X(CLUSTER_RESULT_CONFLICT, "conflict")                                                         \
    X(CLUSTER_RESULT_INVALID, "invalid")                                                           \
    X(CLUSTER_RESULT_PRECONDITION, "precondition failed")

enum cluster_result {
#define X(code, msg) code,
    CLUSTER_RESULTS(X)
#undef X
};

enum cluster_log_level { CLUSTER_LOG_ERROR, CLUSTER_LOG_WARN, CLUSTER_LOG_INFO, CLUSTER_LOG_DEBUG };
typedef void (*cluster_log_cb)(void *arg, enum cluster_log_level level, const char *msg);

/* Peer transport, provided by the caller (server/ today: an authenticated
 * internal HTTP route). `send` delivers a packed PeerRequest to the replica
 * whose client listener is `http_address` and calls done exactly once, on the
 * loop thread, with CLUSTER_OK and the packed PeerReply bytes (borrowed for
 * the call), or with CLUSTER_TRANSPORT when the request may or may not have
 * arrived. Returns non-zero if it could not start (done is then not called). */
typedef void (*cluster_transport_done_cb)(void *req_arg, int status, const uint8_t *reply,
                                          size_t len);
struct cluster_transport {
    int (*send)(void *arg, const char *http_address, const uint8_t *request, size_t len,
                cluster_transport_done_cb done, void *req_arg);
    void *arg;
};

/* Called after each applied command (on every replica, in log order), once
 * the batch holding it has committed: the change event the rest of the server
 * follows. It runs at the end of a loop iteration, or from inside libraft
 * (before a snapshot or restore) or cluster_close(): keep it short, and do not
 * close the cluster from it; cluster_* calls made from it take effect on a
 * later loop iteration. A storage failure while applying or committing (map
 * full, I/O error) is not deterministic across replicas, so it is logged and
 * the process aborts instead of letting this replica diverge. */
typedef void (*cluster_applied_cb)(void *arg, uint64_t index, const Concord__Command *cmd,
                                   const Concord__CommandResult *result);

struct cluster_options {
    uint64_t id;                   /* Raft server id, > 0 */
    const char *raft_address;      /* "host:port" the Raft transport listens on */
    const char *http_address;      /* "host:port" of this replica's client listener */
    const char *raft_dir;          /* Raft log and snapshots (created if missing) */
    struct store *store;           /* the FSM's state; borrowed, outlives the cluster */
    unsigned election_timeout_ms;  /* 0: 1000 */
    unsigned heartbeat_timeout_ms; /* 0: 100 */
    unsigned snapshot_threshold;   /* 0: 65536 entries */
    unsigned snapshot_trailing;    /* 0: 8192 entries */
    unsigned submit_timeout_ms;    /* 0: 10000; bounds forwarding and apply waits */
    struct cluster_transport transport;
    cluster_log_cb log;
    void *log_arg;
    cluster_applied_cb applied;
    void *applied_arg;
};

struct cluster_member {
    uint64_t id;
    char raft_address[64];
    char http_address[64];
    bool is_voter;
    bool is_leader;
};

enum cluster_role {
    CLUSTER_ROLE_FOLLOWER,
    CLUSTER_ROLE_CANDIDATE,
    CLUSTER_ROLE_LEADER,
    CLUSTER_ROLE_UNAVAILABLE
};
const char *cluster_role_name(enum cluster_role role);

struct cluster_status {
    uint64_t id;
    enum cluster_role role;
    uint64_t leader_id;           /* 0: no known leader */
    char leader_http_address[64]; /* "" when unknown */
    uint64_t term;
    uint64_t commit_index;
    uint64_t applied_index;
    uint64_t last_log_index;
    uint64_t leader_changes; /* leader changes seen by this replica */
    unsigned n_voters;
};

struct cluster;

/* Writes the initial configuration into a pristine raft_dir, so that the
 * first cluster_start() elects a leader among `members`. Every initial voter
 * may be bootstrapped with the same list. CLUSTER_EXISTS if raft_dir already
 * holds state (restarting never bootstraps twice). Blocking, before start. */
int cluster_bootstrap(const struct cluster_options *opts, const struct cluster_member *members,
                      size_t n_members, char *errmsg);

/* Creates the replica on `loop`. On 0, *out is yours until cluster_close(). */
int cluster_new(uv_loop_t *loop, const struct cluster_options *opts, struct cluster **out,
                char *errmsg);
/* Loads snapshot and log (restoring the store when it is behind) and starts
 * the Raft timers and transport. */
int cluster_start(struct cluster *c, char *errmsg);
/* Stops Raft; pending submissions complete with CLUSTER_SHUTDOWN; cb fires
 * once every handle is closed, then the object is freed. */
typedef void (*cluster_close_cb)(void *arg);
void cluster_close(struct cluster *c, cluster_close_cb cb, void *arg);

/* Submits a command from any replica. On 0 the cluster takes ownership of
 * `cmd` (freed with concord__command__free_unpacked) and calls cb exactly once:
 * status CLUSTER_OK with the result (borrowed for the call) once the entry is
 * applied on THIS replica, or an error status (NOLEADER: definitely not
 * applied; UNKNOWN/TIMEOUT: may have been applied). An empty request_id gets a
 * unique one, so a forwarded retry can never apply twice. On error the caller
 * still owns cmd and cb is not called. */
typedef void (*cluster_submit_cb)(void *arg, int status, const Concord__CommandResult *result);
int cluster_submit(struct cluster *c, Concord__Command *cmd, cluster_submit_cb cb, void *arg);

/* Linearizable read point: cb(arg, CLUSTER_OK) once this replica has applied
 * everything committed before the call (a Raft barrier on the leader, forwarded
 * from a follower). Reads done in cb see a state at least that recent. */
typedef void (*cluster_done_cb)(void *arg, int status);
int cluster_barrier(struct cluster *c, cluster_done_cb cb, void *arg);

/* Membership; run on any replica (forwarded to the leader). */
int cluster_member_add(struct cluster *c, const struct cluster_member *m, cluster_done_cb cb,
                       void *arg);
int cluster_member_remove(struct cluster *c, uint64_t id, cluster_done_cb cb, void *arg);
int cluster_transfer_leadership(struct cluster *c, uint64_t id, cluster_done_cb cb, void *arg);
/* On a replica started with an empty raft_dir and not bootstrapped: asks the
 * replica at peer_http_address to add this one as a voter. */
int cluster_join(struct cluster *c, const char *peer_http_address, cluster_done_cb cb, void *arg);

/* The server side of the peer transport: handle a packed PeerRequest that
 * arrived from another replica; reply is called exactly once with the packed
 * PeerReply (borrowed for the call). */
typedef void (*cluster_reply_cb)(void *arg, const uint8_t *reply, size_t len);
void cluster_peer_handle(struct cluster *c, const uint8_t *request, size_t len,
                         cluster_reply_cb reply, void *arg);

void cluster_status_get(struct cluster *c, struct cluster_status *out);
/* Current configuration with addresses; *out is malloc'd, free() it. */
int cluster_members(struct cluster *c, struct cluster_member **out, size_t *n);

/* Log-entry codec: [u32 little-endian length][packed Command][zero pad to 8].
 * Exposed for tests and benchmarks. encode: on 0, *out is yours, release it
 * with cluster_command_buf_free(); CLUSTER_TOOBIG past the size limit.
 * decode: CLUSTER_INVALID for truncated, mispadded or unparsable bytes; on 0
 * free *out with concord__command__free_unpacked(). */
int cluster_command_encode(const Concord__Command *cmd, uint8_t **out, size_t *len);
void cluster_command_buf_free(uint8_t *buf); /* NULL is fine */
int cluster_command_decode(const uint8_t *buf, size_t len, Concord__Command **out);

/* The FSM's pure part: applies one decoded command at `index` inside the write
 * transaction t, filling *result (its message is malloc'd into result->message,
 * free with cluster_result_clear). Returns non-zero only for storage failures,
 * which are fatal for the replica; business failures are results. */
int cluster_fsm_execute(struct store_txn *t, const Concord__Command *cmd, uint64_t index,
                        Concord__CommandResult *result);
void cluster_result_clear(Concord__CommandResult *result);

#endif
