/* server/control/control_internal.h: what the files of server/control share
 * and nobody else sees: the control object, a Noise connection, a request in
 * flight on one of its HTTP/2 streams, and a map session.
 *
 * Lifetimes: a connection (struct ctl_conn) lives from the upgrade until its
 * socket closes; closing it frees its HTTP/2 session, which ends every stream
 * (on_stream_close), so every request and map session on it is detached
 * before the connection memory goes (at the end of the loop iteration, never
 * from inside a callback of its own). A request (struct ctl_req) may outlive
 * its stream while a Raft submission is in flight: its `st` is then NULL and
 * the answer goes nowhere. */
#ifndef CONCORD_SERVER_CONTROL_CONTROL_INTERNAL_H
#define CONCORD_SERVER_CONTROL_CONTROL_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "server/control/control.h"
#include "server/control/h2.h"
#include "server/control/jsonw.h"
#include "server/control/mapenc.h"
#include "server/control/wire.h"
#include "server/policy/policy.h"

/* Clients older than Tailscale v1.80 (capability version 113) are refused,
 * as Headscale does: they need legacy fields concord does not send. */
#define CTL_MIN_CAPVER 113

/* uint64 -> uint64 open-addressing map (keys != 0). */
struct ctl_idmap {
    uint64_t *keys;
    uint64_t *vals;
    size_t cap; /* power of two, 0 when empty */
    size_t n;
};
bool ctl_idmap_get(const struct ctl_idmap *m, uint64_t key, uint64_t *val);
int ctl_idmap_put(struct ctl_idmap *m, uint64_t key, uint64_t val);
void ctl_idmap_del(struct ctl_idmap *m, uint64_t key);
void ctl_idmap_free(struct ctl_idmap *m);

struct ctl_conn {
    struct control *ctl;
    struct net_raw *raw; /* NULL once the socket is gone */
    struct noise_session noise;
    struct noise_reader reader;
    struct h2_session *h2;
    struct ctl_conn *prev, *next; /* in ctl->conns, or ctl->dead */
    bool is_dead;
    uint64_t id;
    char peer[64];
    uint64_t last_read_ms; /* uv_now of the last bytes from the client */
    uint64_t ping_sent_ms; /* uv_now of the last liveness PING; 0: none */
};

/* The user pointer of an HTTP/2 stream is a request or a map session; both
 * start with this tag. */
enum ctl_stream_user { CTL_USER_REQ = 1, CTL_USER_SESSION };

enum ctl_req_kind { CTL_REQ_REGISTER, CTL_REQ_FOLLOWUP, CTL_REQ_LITE_UPDATE };

struct ctl_req {
    enum ctl_stream_user tag; /* CTL_USER_REQ */
    struct control *ctl;
    struct ctl_conn *conn; /* only while st is set: the connection may go first */
    struct h2_stream *st;  /* NULL once the stream is gone */
    enum ctl_req_kind kind;
    char peer[64]; /* the client's address, for log lines */
    uint8_t machine_key[32];
    struct wire_register_request reg;
    char auth_id[40];            /* followups: the pending registration */
    struct ctl_req *prev, *next; /* followups: in ctl->followups */
    bool is_waiting;
    bool is_key_rechecked; /* an unknown auth key was looked up again after a barrier */
};

struct ctl_session {
    enum ctl_stream_user tag; /* CTL_USER_SESSION */
    struct control *ctl;
    struct ctl_conn *conn;
    struct h2_stream *st; /* NULL once the stream is gone */
    uint64_t node_id;
    uint64_t session_id;
    uint8_t node_key[32];
    bool compress;
    bool is_opening;    /* OpenSession in flight */
    bool is_registered; /* OpenSession applied: must propose CloseSession */
    bool is_stream_gone;
    bool is_timer_closed;
    unsigned pending_submits; /* the memory stays until their callbacks ran */
    struct ctl_idmap peers;   /* peer id -> static hash of what it was last sent */
    struct ctl_idmap users;   /* user ids whose profile it was sent */
    uint64_t self_hash;       /* of the self node last sent */
    uint64_t filter_hash;     /* of the PacketFilter last sent */
    uint64_t ssh_hash;        /* of the SSHPolicy last sent */
    uv_timer_t keepalive;
    struct ctl_session *prev, *next; /* in ctl->sessions */
};

/* A node's lite update waiting for the next batch (coalesced per node). */
struct ctl_update {
    struct control *ctl;
    Concord__NodeUpdate *update; /* NULL once handed to the command */
    struct ctl_req **waiters;
    size_t n_waiters;
    struct ctl_update *next;
};

struct control {
    struct control_options opt;
    char *server_url;
    /* The DERP map clients get: the file's regions plus the embedded region
     * built from the replicas table, rebuilt when that table changes. */
    char *derp_map_json; /* NULL: no map */
    size_t derp_map_len;
    struct json_t *derp_file;     /* the parsed derp.map_path, or NULL */
    Concord__DerpNode *derp_node; /* this replica's relay, or NULL */
    char *derp_region_code;
    char *derp_region_name;
    bool is_derp_announced;
    bool needs_derp_rebuild;
    char *base_domain;
    char **nameservers;
    char **search_domains;
    struct ctl_conn *conns;
    struct ctl_conn *dead; /* closed, freed at the end of the loop iteration */
    uv_check_t reaper;
    struct ctl_session *sessions;
    size_t n_conns;
    size_t n_sessions;
    struct ctl_req *followups;
    /* Lite updates: a batch collects for a short while, then one command. */
    struct ctl_update *updates;
    size_t n_updates;
    uv_timer_t update_timer;
    bool is_update_in_flight;
    /* Changes applied since the last delta round. */
    struct ctl_idmap changed_nodes; /* node id -> 1 */
    struct ctl_idmap changed_users;
    bool needs_full_resync;
    /* The policy engine and what it was last given (policy.c). */
    struct policy_engine *engine;
    struct policy *policy;         /* the applied policy, parsed; NULL: none */
    uint64_t policy_version;       /* 0: none applied */
    struct ctl_idmap policy_nodes; /* node id -> hash of what the engine has */
    struct ctl_idmap policy_users; /* user ids changed since the last round */
    bool needs_policy_reload;
    bool needs_engine_reload;
    bool is_policy_dirty;        /* since the last delta round */
    bool needs_auto_approve_all; /* the policy changed: every node's routes */
    uv_timer_t delta_timer;
    uv_timer_t gc_timer;
    uv_timer_t ping_timer;          /* liveness PINGs (opt.ping_interval_ms) */
    uv_timer_t presence_timer;      /* heartbeats; on the leader, silent replicas */
    struct ctl_idmap replica_heard; /* replica id -> uv_now its heartbeat applied */
    uint64_t leader_since_ms;       /* uv_now this replica saw itself leader; 0: not */
    bool is_key_recorded;
    bool are_stale_sessions_closed;
    int64_t started_unix_ms;
    bool is_key_rejected;
    struct mapenc_compressor *zstd;
    struct jw scratch;
    uint64_t next_conn_id;
    unsigned open_handles;
    bool is_closing;
};

/* ---- machine.c: the requests inside Noise ---- */
void ctl_machine_request(struct ctl_conn *conn, struct h2_stream *st, const struct h2_request *req);
void ctl_machine_stream_closed(struct ctl_conn *conn, struct h2_stream *st, void *user);
/* An approval was applied: answer the followups that wait for auth_id. */
void ctl_followups_wake(struct control *c, const char *auth_id);
void ctl_followups_free(struct control *c);
/* Answers a request (if its stream still exists) and frees it. */
void ctl_req_finish(struct ctl_req *r, int status, const char *content_type, const void *body,
                    size_t len);

/* ---- mapsess.c: map streams, lite updates, deltas ---- */
void ctl_map_request(struct ctl_conn *conn, struct h2_stream *st, const uint8_t machine_key[32],
                     const uint8_t *body, size_t len);
void ctl_session_stream_closed(struct ctl_session *s);
/* A new request bound to a stream (its user pointer); NULL on no memory. */
struct ctl_req *ctl_req_new(struct ctl_conn *conn, struct h2_stream *st, enum ctl_req_kind kind);
void ctl_sessions_close_all(struct control *c);
void ctl_updates_free(struct control *c);
/* Records what an applied command changed and schedules a delta round. */
void ctl_map_note_applied(struct control *c, const Concord__Command *cmd,
                          const Concord__CommandResult *result);
/* Leader-only sweep of inactive ephemeral nodes. */
void ctl_gc_ephemeral(struct control *c);
/* Withdraws the sessions an earlier run of this replica never closed (it
 * crashed); repeated on each tick until none is left. */
void ctl_close_stale_sessions(struct control *c);

/* Proposes closing a session another replica (or an earlier run) left
 * open; why completes the log line when it is closed (a string literal).
 * False when out of memory. */
bool ctl_propose_close_session(struct control *c, uint64_t node_id, uint64_t session_id,
                               const char *why);
/* Whether node_id has a live map session on some replica. */
bool ctl_node_is_online(struct store_txn *t, uint64_t node_id);
/* The Raft index at which the oldest of node_id's live sessions opened
 * (the same on every replica); 0 when it has none. */
uint64_t ctl_node_online_since(struct store_txn *t, uint64_t node_id);

/* ---- policy.c: the policy engine, kept in step with the applied state ---- */
enum ctl_policy_change { CTL_POLICY_DOCUMENT, CTL_POLICY_USER, CTL_POLICY_EVERYTHING };
/* Loads the whole state; -1 when out of memory. */
int ctl_policy_init(struct control *c);
void ctl_policy_free(struct control *c);
/* Records a change for the next ctl_policy_sync (nodes come from
 * c->changed_nodes). */
void ctl_policy_note(struct control *c, enum ctl_policy_change what, uint64_t id);
/* Brings the engine up to date with what was noted and with c->changed_nodes
 * (which it leaves for the delta round); sets c->is_policy_dirty when what the
 * policy gives any node may have changed. Called before a full map and at the
 * start of each delta round, which clears is_policy_dirty. */
void ctl_policy_sync(struct control *c, struct store_txn *t);
/* Per-node answers as compact JSON (free()); NULL when out of memory. */
/* autoApprovers: on the leader, proposes the approval of every advertised
 * route the policy approves for the nodes that changed this round (every
 * node after a policy change). Call after ctl_policy_sync. */
void ctl_policy_auto_approve(struct control *c, struct store_txn *t);
/* ---- presence.c ---- */

/* Starts the heartbeat timer (one more handle for control_close). */
void ctl_presence_start(struct control *c);
/* Every applied command: the leader notes replicas' heartbeats. */
void ctl_presence_applied(struct control *c, const Concord__Command *cmd);

char *ctl_policy_filter_json(struct control *c, uint64_t node_id);
char *ctl_policy_ssh_json(struct control *c, uint64_t node_id);
char *ctl_policy_capmap_json(struct control *c, uint64_t node_id);
/* The node's CapMap as its peers see it, or NULL: none (then omitted). */
char *ctl_policy_peer_capmap_json(struct control *c, uint64_t node_id);
bool ctl_policy_visible(struct control *c, uint64_t viewer_id, uint64_t peer_id);
/* AllowedIPs and PrimaryRoutes of a node that has approved routes, as
 * viewer_id sees them (both NULL otherwise: its addresses are its
 * AllowedIPs); -1 when out of memory. A node viewing itself, and a round's
 * shared encoding, see all its routes. */
int ctl_policy_routes_json(struct control *c, uint64_t viewer_id, const Concord__Node *n,
                           char **allowed_ips, char **primary_routes);

/* ---- derpmap.c ---- */
int ctl_derpmap_init(struct control *c, const char *file_json, char *errmsg);
void ctl_derpmap_free(struct control *c);
/* Recomputes the map from the replicas table; true when it changed. */
bool ctl_derpmap_rebuild(struct control *c);
/* Proposes this replica's relay until the replicas table has it. */
void ctl_derpmap_announce(struct control *c);

/* ---- control.c ---- */
void ctl_conn_close(struct ctl_conn *conn, const char *reason);
/* A Command stamped with this replica's actor and clock; NULL on no memory. */
Concord__Command *ctl_command_new(struct control *c);
int64_t ctl_now_ms(void);

#endif
