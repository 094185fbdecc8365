/* server/admin/admin.h: the REST admin API (/api/v1, Headscale 0.29's routes
 * and JSON shapes), /health and /ready for load balancers, and the internal
 * replica-to-replica route (/internal/v1/peer) that carries raft/'s
 * forwarding. One handler for every request of the client listener and the
 * local Unix socket. */
#ifndef CONCORD_SERVER_ADMIN_ADMIN_H
#define CONCORD_SERVER_ADMIN_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft/cluster.h"
#include "server/net/http.h"
#include "storage/store.h"

#define ADMIN_CLUSTER_SECRET_BYTES 32

struct admin_options {
    struct cluster *cluster; /* borrowed */
    struct store *store;     /* borrowed */
    uv_loop_t *loop;
    /* Shared by every replica (cluster.secret_path): authenticates
     * /internal/v1/peer. */
    uint8_t cluster_secret[ADMIN_CLUSTER_SECRET_BYTES];
    unsigned ready_max_apply_lag; /* /ready fails when commit - applied exceeds it */
    const char *policy_path;      /* policy.mode file: the file (borrowed); else NULL */
};

struct admin;
int admin_new(const struct admin_options *opts, struct admin **out);
/* Call once the cluster is closed. A job still on the thread pool (snapshot
 * compression, a backup copy reading the store) finishes first: cb (may be
 * NULL) fires once none is left, at once from inside admin_close when none
 * runs, and only then may the caller close the store. The memory goes with
 * the last job. */
typedef void (*admin_close_cb)(void *arg);
void admin_close(struct admin *a, admin_close_cb cb, void *arg);
/* admin_close without a callback, for callers whose store outlives every
 * job (no backup can be running). NULL is fine. */
void admin_free(struct admin *a);

/* policy.mode file: reads and checks the policy file and proposes it when it
 * differs from the applied policy (at start and on SIGHUP); a file that does
 * not check is logged and changes nothing. admin_policy_file_tick retries a
 * proposal that has not applied yet (call it periodically). */
void admin_policy_file_load(struct admin *a);
void admin_policy_file_tick(struct admin *a);

/* net_http_handler_cb for the client listener and the Unix socket. */
void admin_handle(void *arg, struct net_http_request *req);
/* net_http_body_limit_cb for the same listeners (arg: the struct admin).
 * Every request keeps its listener's limit except the internal peer route,
 * whose forwarded commands (a snapshot restore is one) may be far larger than
 * what clients send: a POST to it whose head proves the cluster secret
 * (ADMIN_PEER_LENGTH_HEADER, matching Content-Length) may carry up to
 * ADMIN_PEER_MAX_BODY_BYTES. */
size_t admin_body_limit(void *arg, const struct net_http_request *head, size_t limit);
/* Above raft/'s largest command (64 MiB) with room for the PeerRequest
 * around it. */
#define ADMIN_PEER_MAX_BODY_BYTES ((size_t)80 * 1024 * 1024)

/* raft/'s peer transport over the internal HTTP route: pass
 * { .send = admin_peer_send, .arg = <struct admin_peer_client *> }. The
 * client needs only the loop and the secret, so it exists before the cluster. */
struct admin_peer_client {
    uv_loop_t *loop;
    uint8_t cluster_secret[ADMIN_CLUSTER_SECRET_BYTES];
    unsigned timeout_ms;
    /* Peers' listeners speak TLS: set when this replica's own listener does,
     * since every replica of a cluster is configured alike. Certificates are
     * not verified (see net_tls_client_new() in server/net/tls.c). */
    bool use_tls;
};
int admin_peer_send(void *arg, const char *http_address, const uint8_t *request, size_t len,
                    cluster_transport_done_cb done, void *req_arg);

#endif
