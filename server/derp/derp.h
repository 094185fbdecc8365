/* server/derp/derp.h: the DERP relay protocol (Tailscale's derp package,
 * protocol version 2) as a transport-agnostic server core: the caller
 * accepts the HTTP upgrade at /derp, then feeds each connection's bytes in
 * and writes what the send callback hands out. One struct derp_server holds
 * every connected client by node key and relays packets between them.
 *
 * Mesh: a connection that proves the shared mesh key in its client info is a
 * mesh peer (another replica). It may watch connections (FrameWatchConns:
 * it is told PeerPresent for every local client now and later, PeerGone when
 * one leaves) and forward packets to local clients (FrameForwardPacket). The
 * client side of a mesh link (this replica watching another) is
 * struct derp_mesh_link: it learns which node keys are connected there, and
 * a local client's packet for such a key is forwarded over it.
 *
 * Everything runs on one thread; callbacks must not free the object they
 * are called for (close requests are deferred by the caller). */
#ifndef CONCORD_SERVER_DERP_DERP_H
#define CONCORD_SERVER_DERP_DERP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DERP_KEY_BYTES        32
#define DERP_MAX_PACKET_BYTES (64 * 1024)   /* a relayed packet's payload */
#define DERP_MAX_FRAME_BYTES  (1024 * 1024) /* any frame (client info is the largest) */

struct derp_server;
struct derp_client;    /* one accepted connection (client or mesh peer) */
struct derp_mesh_link; /* this replica's connection to another replica's DERP */

struct derp_options {
    uint8_t private_key[DERP_KEY_BYTES]; /* the server's key (clients learn its public half) */
    /* 64 lowercase hex characters shared by the replicas, or NULL: no mesh. */
    const char *mesh_key;
    /* May this node key use the relay? (A node of this tailnet, not expired.)
     * Called once per connection, after the client info was opened; mesh
     * peers skip it. NULL: every key may. */
    bool (*verify)(void *arg, const uint8_t node_key[DERP_KEY_BYTES]);
    void *verify_arg;
    /* Per client: sustained bytes/s and burst of FrameSendPacket payloads;
     * packets past it are dropped (never queued). 0: defaults (5 MB/s,
     * 1 MB burst). */
    uint64_t rate_bytes_per_s;
    uint64_t burst_bytes;
    /* Bytes a client may have queued on its socket before packets to it are
     * dropped; the caller reports its queue through derp_client_set_backlog. */
    size_t max_backlog_bytes; /* 0: 1 MiB */
};

/* 0, or -1: mesh_key is not 64 hex characters, or out of memory. */
int derp_server_new(const struct derp_options *opts, struct derp_server **out);
void derp_server_free(struct derp_server *s); /* after every client and link is freed */
void derp_server_public_key(const struct derp_server *s, uint8_t out[DERP_KEY_BYTES]);

/* Counters for metrics and tests. */
struct derp_stats {
    uint64_t clients; /* connected now (mesh peers excluded) */
    uint64_t packets_relayed;
    uint64_t packets_forwarded_to_mesh;
    uint64_t packets_dropped; /* unknown destination, rate limit, backlog, too large */
    uint64_t refused;         /* handshakes refused (bad box, verify false, bad mesh key) */
    uint64_t home_clients;    /* clients whose FrameNotePreferred named this relay home */
};
void derp_server_stats(const struct derp_server *s, struct derp_stats *out);

struct derp_io {
    /* Bytes for this connection's peer, in order. Non-zero: broken. */
    int (*send)(void *arg, const uint8_t *data, size_t len);
    /* The core wants the connection closed (protocol error, refused,
     * replaced by a newer connection of the same key). The caller closes
     * the transport and then calls derp_client_free, not from inside. */
    void (*close)(void *arg, const char *reason);
};

/* A freshly upgraded connection: sends FrameServerKey at once. NULL: out of
 * memory or that send failed (close the transport; nothing to free). */
struct derp_client *derp_client_new(struct derp_server *s, const struct derp_io *io, void *arg,
                                    const char *peer_address);
/* Feeds received bytes (any slicing). Non-zero: fatal for the connection
 * (close is also requested). */
int derp_client_feed(struct derp_client *c, const uint8_t *data, size_t len);
/* Bytes the transport still has queued for this client. */
void derp_client_set_backlog(struct derp_client *c, size_t bytes);
/* Sends a keepalive to every connection that was sent nothing since the
 * previous call (the caller's timer calls this about every 60 s). */
void derp_server_keepalive(struct derp_server *s);
/* Leaves the server: watchers get PeerGone, and so do the local clients that
 * exchanged packets with it, unless its key is still present on a mesh link. */
void derp_client_free(struct derp_client *c);
/* The client's node key once its handshake is done; false before. */
bool derp_client_key(const struct derp_client *c, uint8_t out[DERP_KEY_BYTES]);

/* Mesh link: this replica as a watching client of another replica's DERP
 * (the caller made the connection and did the HTTP upgrade). Sends its
 * client info with the mesh key once the server key arrives, then
 * FrameWatchConns; keeps the set of node keys connected there, used to
 * forward local clients' packets for them. NULL: the server has no mesh
 * key, 64 links exist already, or out of memory. */
struct derp_mesh_link *derp_mesh_link_new(struct derp_server *s, const struct derp_io *io,
                                          void *arg, const char *name);
int derp_mesh_link_feed(struct derp_mesh_link *l, const uint8_t *data, size_t len);
/* Forgets every key learnt through it (the connection is gone). */
void derp_mesh_link_free(struct derp_mesh_link *l);

#endif
