/* server/control/wire.h: decoding of the JSON requests Tailscale clients send
 * over Noise (tailcfg.RegisterRequest, tailcfg.MapRequest) into plain C
 * structs, with every limit checked. Untrusted input from anyone who can do a
 * handshake: a malformed or oversized field is an error naming the field,
 * never a crash; unknown fields are ignored (as Go's decoder does). Keys use
 * the wire text form (noise_key_parse); times are RFC 3339 with any offset. */
#ifndef CONCORD_SERVER_CONTROL_WIRE_H
#define CONCORD_SERVER_CONTROL_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WIRE_ERRMSG_BYTES  256
#define WIRE_MAX_HOSTINFO  (32 * 1024) /* compact JSON of Hostinfo */
#define WIRE_MAX_ENDPOINTS 64
#define WIRE_MAX_TAGS      64
#define WIRE_MAX_ROUTES    256
#define WIRE_MAX_STRING    256 /* hostname, auth key, tags, endpoints, followup URL */

/* Parses an RFC 3339 time ("2026-08-22T10:00:00.123456789Z",
 * "1969-12-31T19:02:03-05:00") to Unix milliseconds (floor). Go's zero time
 * "0001-01-01T00:00:00Z" parses to INT64_MIN. false if malformed. */
bool wire_parse_time(const char *text, int64_t *unix_ms);

/* What the server needs of Hostinfo, plus the whole object re-serialized
 * compactly (jansson, JSON_COMPACT) to pass through to peers. */
struct wire_hostinfo {
    char *json; /* NULL when absent or null */
    size_t json_len;
    char *hostname;         /* Hostname, NULL if absent or empty */
    char *os;               /* OS, NULL if absent */
    int32_t preferred_derp; /* NetInfo.PreferredDERP, 0 if absent */
    char **request_tags;    /* RequestTags */
    size_t n_request_tags;
    char **routable_ips; /* RoutableIPs, each a valid CIDR prefix */
    size_t n_routable_ips;
};

struct wire_register_request {
    uint32_t version;
    uint8_t node_key[32];
    uint8_t old_node_key[32];
    bool has_old_node_key; /* present and not all zero */
    char *auth_key;        /* Auth.AuthKey; NULL if absent or empty */
    int64_t expiry_unix_ms;
    bool has_expiry; /* Expiry present and not the zero time */
    char *followup;  /* NULL if absent or empty */
    bool ephemeral;
    struct wire_hostinfo hostinfo;
};

struct wire_map_request {
    uint32_t version;
    uint8_t node_key[32];
    uint8_t disco_key[32];
    bool has_disco_key; /* present and not all zero */
    bool stream;
    bool omit_peers;
    bool keep_alive;
    bool read_only;
    bool compress_zstd; /* Compress == "zstd" */
    char **endpoints;   /* each a valid "ip:port" / "[ip6]:port" */
    size_t n_endpoints;
    struct wire_hostinfo hostinfo;
};

/* Both return 0, or -1 with errmsg (WIRE_ERRMSG_BYTES) naming the problem;
 * on -1 the struct is already freed (all pointers NULL). Missing NodeKey is
 * an error; other missing fields take their zero values. */
int wire_register_request_parse(const uint8_t *body, size_t len, struct wire_register_request *out,
                                char *errmsg);
void wire_register_request_free(struct wire_register_request *r);
int wire_map_request_parse(const uint8_t *body, size_t len, struct wire_map_request *out,
                           char *errmsg);
void wire_map_request_free(struct wire_map_request *r);

#endif
