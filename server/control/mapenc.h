/* server/control/mapenc.h: encoding of what the map stream carries
 * (tailcfg.MapResponse pieces, tailscale-control-protocol.md section 8) from
 * concord's records, with the hand-written writer of jsonw.h, and the stream
 * framing: u32 little-endian length + one zstd frame per message.
 *
 * The encoder makes no decisions of its own about visibility or presence:
 * callers say what each node looks like to the receiver (struct
 * mapenc_node_view). */
#ifndef CONCORD_SERVER_CONTROL_MAPENC_H
#define CONCORD_SERVER_CONTROL_MAPENC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/concord.pb-c.h"
#include "server/control/jsonw.h"

/* Headscale's pseudo-user that owns tagged nodes. */
#define MAPENC_TAGGED_USER_ID   2147455555u
#define MAPENC_TAGGED_USER_NAME "tagged-devices"

enum mapenc_presence { MAPENC_PRESENCE_UNKNOWN, MAPENC_PRESENCE_ONLINE, MAPENC_PRESENCE_OFFLINE };

struct mapenc_node_view {
    const Concord__Node *node;
    const char *base_domain; /* MagicDNS suffix without dots around it; "" or NULL: none */
    enum mapenc_presence presence;
    int64_t now_unix_ms;      /* for Expired */
    const char *cap_map_json; /* raw JSON object for CapMap, NULL: omit */
    /* Raw JSON arrays of prefixes: AllowedIPs (NULL: the addresses) and
     * PrimaryRoutes (NULL: omitted). */
    const char *allowed_ips_json;
    const char *primary_routes_json;
};

/* The node's MagicDNS FQDN with trailing dot ("given.base.domain." or
 * "given." without a base domain) into out; false if it does not fit. */
bool mapenc_node_fqdn(const Concord__Node *n, const char *base_domain, char *out, size_t cap);
/* The StableID ("n" + decimal id). */
void mapenc_stable_id(uint64_t id, char out[24]);

/* A complete tailcfg.Node object: ID, StableID, Name, User (the tagged
 * pseudo-user when the node has tags), Key, KeyExpiry (omitted when 0),
 * Machine, DiscoKey (zero key form when unknown), Addresses, AllowedIPs (the
 * view's, else = Addresses), PrimaryRoutes (when given), Endpoints ([] when none), HomeDERP
 * (omitted when 0), Hostinfo (raw, {} when unknown), Created, Cap (omitted when 0), Tags (omitted
 * when none), Online (omitted when unknown), LastSeen (only when offline and known),
 * MachineAuthorized true, Expired (only when true), CapMap (when given). */
void mapenc_node(struct jw *w, const struct mapenc_node_view *v);

/* The part of a node that a PeersChangedPatch cannot carry, hashed: two
 * versions of a node with equal hashes differ only in patchable fields
 * (Endpoints, HomeDERP, Key, DiscoKey, KeyExpiry, Cap, Online, LastSeen). */
uint64_t mapenc_node_static_hash(const struct mapenc_node_view *v);
/* A tailcfg.PeerChange carrying every patchable field of the node:
 * NodeID, DERPRegion, Endpoints, Key, DiscoKey, KeyExpiry, Cap, Online,
 * LastSeen (as in mapenc_node). */
void mapenc_peer_patch(struct jw *w, const struct mapenc_node_view *v);

/* tailcfg.UserProfile: {"ID","LoginName","DisplayName","ProfilePicURL":""};
 * LoginName is the email when set, else the name; DisplayName falls back to
 * the name. mapenc_tagged_profile writes the tagged pseudo-user's. */
void mapenc_user_profile(struct jw *w, const Concord__User *u);
void mapenc_tagged_profile(struct jw *w);

struct mapenc_dns {
    bool magic_dns;
    const char *base_domain;
    const char *const *nameservers; /* IPs or DoH URLs */
    size_t n_nameservers;
    const char *const *search_domains;
    size_t n_search_domains;
};
/* tailcfg.DNSConfig: Resolvers ([{"Addr":..}]), Domains (base domain first
 * when MagicDNS is on, then the search domains), Proxied, Routes ({} , with
 * the base domain mapped to [] when MagicDNS is on). */
void mapenc_dns_config(struct jw *w, const struct mapenc_dns *d);

/* Frames one message: out = u32 LE length + a zstd frame of json[0..len).
 * A compressor is reused across messages (one per thread); level 1. */
struct mapenc_compressor;
struct mapenc_compressor *mapenc_compressor_new(void);
void mapenc_compressor_free(struct mapenc_compressor *c);
/* *out is malloc'd; with compress false the JSON is framed as is (clients
 * that did not ask for zstd). -1 on allocation or compression failure. */
int mapenc_frame(struct mapenc_compressor *c, bool compress, const char *json, size_t len,
                 uint8_t **out, size_t *out_len);

#endif
