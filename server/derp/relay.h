/* server/derp/relay.h: the embedded DERP relay of one replica, as
 * `concord serve` runs it: a TLS listener taking the DERP upgrade at /derp
 * (plus /derp/probe, /derp/latency-check and /generate_204), the DERP core
 * relaying between the connected clients, and the STUN server. Only nodes of
 * the tailnet may connect: a node key must belong to a registered node whose
 * key has not expired (read from this replica's store).
 * With a mesh key, the relays of the replicas form one region: each keeps a
 * mesh link (TLS, the DERP upgrade, the mesh key in its client info) to
 * every other replica's relay listed in the replicas table, so that a
 * packet for a client connected to another relay is forwarded there. */
#ifndef CONCORD_SERVER_DERP_RELAY_H
#define CONCORD_SERVER_DERP_RELAY_H

#include <uv.h>

#include "storage/store.h"

struct relay_options {
    uv_loop_t *loop;
    struct store *store;          /* borrowed */
    const char *listen_addr;      /* TLS "host:port" */
    const char *cert_path;        /* PEM */
    const char *key_path;         /* PEM */
    const char *stun_listen_addr; /* UDP "host:port"; "": no STUN */
    uint64_t replica_id;          /* this replica's: its own relay is not linked to */
    /* 64 lowercase hex characters shared by the replicas (read by relay_new
     * only), or NULL: no mesh. */
    const char *mesh_key;
};

struct relay;

/* Starts listening; errmsg (256 bytes) says why not. */
int relay_new(const struct relay_options *opts, struct relay **out, char *errmsg);
int relay_derp_port(const struct relay *r);
int relay_stun_port(const struct relay *r); /* -1: no STUN */
/* Stops listening, drops every client; cb fires once everything is closed
 * and the memory freed. */
typedef void (*relay_close_cb)(void *arg);
void relay_close(struct relay *r, relay_close_cb cb, void *arg);

#endif
