/* server/control/control.h: the Tailscale control protocol as one replica
 * serves it: GET /key, the POST /ts2021 upgrade into Noise and HTTP/2,
 * /machine/register (pre-auth keys, interactive approval, re-login, key
 * rotation, logout), /machine/map (lite updates and streaming sessions with a
 * full map first and deltas after), and the /register/<id> page.
 *
 * Every decision that must hold cluster-wide (a node's existence, keys,
 * addresses, names, pre-auth key use, pending registrations, sessions) is a
 * Raft command; this replica's own state is only its connections and map
 * sessions. Changes reach the sessions through control_applied(), which the
 * cluster calls for every applied command on every replica, so a change made
 * through any replica reaches every client. */
#ifndef CONCORD_SERVER_CONTROL_CONTROL_H
#define CONCORD_SERVER_CONTROL_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "raft/cluster.h"
#include "server/control/noise.h"
#include "server/net/http.h"
#include "server/policy/policy.h"
#include "storage/store.h"

struct control_dns {
    bool magic_dns;
    const char *base_domain;
    const char *const *nameservers;
    size_t n_nameservers;
    const char *const *search_domains;
    size_t n_search_domains;
};

struct control_options {
    uv_loop_t *loop;
    struct cluster *cluster; /* borrowed */
    struct store *store;     /* borrowed */
    uint64_t replica_id;
    struct noise_keypair noise_key; /* copied; wiped on close */
    const char *server_url;         /* public URL: AuthURLs point here */
    struct control_dns dns;         /* copied */
    /* A Tailscale DERPMap JSON object, checked by control_new; NULL: none. */
    const char *derp_map_json;
    /* This replica's embedded relay (NULL: none), announced in the replicated
     * replicas table; every replica's relay is a node of one region. */
    const Concord__DerpNode *derp_node; /* copied */
    uint32_t derp_region_id;
    bool derp_mesh; /* the relays mesh: one region; else one region per relay */
    const char *derp_region_code;
    const char *derp_region_name;
    uint64_t ephemeral_inactivity_ms;
    uint64_t keepalive_ms;
    uint64_t registration_ttl_ms;
    /* Liveness: every connection is sent an HTTP/2 PING each interval and
     * dropped when nothing (the PING's ACK or anything else) has come back
     * after another interval, so a client that vanished without a FIN is
     * noticed within two intervals. 0: off. */
    uint64_t ping_interval_ms;
};

struct control;

/* Checks the options (the DERP map parses; the Noise key matches the one the
 * cluster recorded, if any) and prepares serving. errmsg: 256 bytes. */
int control_new(const struct control_options *opts, struct control **out, char *errmsg);
/* Stopping, in two steps around the cluster's close: control_close ends every
 * client connection and proposes nothing more (call it before
 * cluster_close); control_free releases the memory once the cluster is
 * closed, so that every submission's callback has run. NULL is fine. */
void control_close(struct control *c);
void control_free(struct control *c);

/* Takes the requests of the control protocol's HTTP routes (/key, /ts2021,
 * /register/<id>, /generate_204) and returns true; false leaves req to the
 * caller. */
bool control_handle(struct control *c, struct net_http_request *req);

/* cluster_applied_cb: every applied command, in log order. */
void control_applied(void *arg, uint64_t index, const Concord__Command *cmd,
                     const Concord__CommandResult *result);

/* Whether the policy text may be applied: it parses and holds against the
 * state read through t (the users it names exist; its tests and sshTests
 * pass). 0, or a POLICY_* error with *err saying why. Changes nothing. */
int control_policy_check(struct store_txn *t, const char *text, size_t len,
                         struct policy_error *err);

/* Number of open Noise connections and map sessions (status, tests). */
void control_counts(const struct control *c, size_t *connections, size_t *sessions);

#endif
