/* server/control/mapenc.c: the map stream encoder of mapenc.h: tailcfg
 * objects rendered from concord's records with jsonw, and the u32 LE +
 * zstd framing of each message (tailscale-control-protocol.md, 8.2-8.8). */
#include "server/control/mapenc.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#define ZSTD_LEVEL 1
/* given_name (a DNS label) + base domain (a DNS name) + dots, with room. */
#define NAME_BYTES 512
/* ["a.b.c.d/32","<IPv6>/128"] at its longest: 2 + 20 + 1 + 2 + 45 + 4. */
#define ADDRESSES_BYTES 80
#define HASH_SEED       0xcbf29ce484222325ULL /* FNV-1a's offset basis and prime */
#define HASH_PRIME      0x100000001b3ULL

static const uint8_t zero_key[32];

struct mapenc_compressor {
    ZSTD_CCtx *cctx;
};

/* A key field of a record: its 32 bytes, or the zero key when unset. */
static const uint8_t *key_or_zero(ProtobufCBinaryData b)
{
    return b.len == 32 ? b.data : zero_key;
}

static bool is_empty(const char *s)
{
    return s == NULL || s[0] == '\0';
}

bool mapenc_node_fqdn(const Concord__Node *n, const char *base_domain, char *out, size_t cap)
{
    size_t given_len;
    size_t base_len;

    if (cap == 0)
        return false;
    /* No name yet: Name "" makes clients fall back to Hostinfo.Hostname. */
    if (is_empty(n->given_name)) {
        out[0] = '\0';
        return true;
    }
    given_len = strlen(n->given_name);
    base_len = is_empty(base_domain) ? 0 : strlen(base_domain);
    if (given_len + 1 + (base_len != 0 ? base_len + 1 : 0) >= cap)
        return false;
    memcpy(out, n->given_name, given_len);
    out[given_len] = '.';
    out += given_len + 1;
    if (base_len != 0) {
        memcpy(out, base_domain, base_len);
        out[base_len] = '.';
        out += base_len + 1;
    }
    *out = '\0';
    return true;
}

void mapenc_stable_id(uint64_t id, char out[24])
{
    char digits[20];
    size_t n = 0;

    do {
        digits[n++] = (char)('0' + id % 10);
        id /= 10;
    } while (id != 0);
    out[0] = 'n';
    for (size_t i = 0; i < n; i++)
        out[1 + i] = digits[n - 1 - i];
    out[n + 1] = '\0';
}

static void write_addresses(struct jw *w, const Concord__Node *n)
{
    jw_arr_begin(w);
    if (n->ipv4.len == 4)
        jw_host_prefix(w, n->ipv4.data, 4);
    if (n->ipv6.len == 16)
        jw_host_prefix(w, n->ipv6.data, 16);
    jw_arr_end(w);
}

/* Addresses' value, then AllowedIPs with the same value: copied from the
 * buffer rather than formatted again (inet_ntop is the slow part). */
static void write_addresses_twice(struct jw *w, const Concord__Node *n)
{
    char copy[ADDRESSES_BYTES];
    size_t start = w->len;
    size_t len;

    write_addresses(w, n);
    len = w->len - start;
    jw_key(w, "AllowedIPs");
    if (jw_failed(w))
        return;
    assert(len <= sizeof copy);
    memcpy(copy, w->buf + start, len);
    jw_raw(w, copy, len);
}

static void write_strings(struct jw *w, char *const *list, size_t n)
{
    jw_arr_begin(w);
    for (size_t i = 0; i < n; i++)
        jw_str(w, list[i]);
    jw_arr_end(w);
}

static void write_key_expiry(struct jw *w, const Concord__Node *n)
{
    jw_key(w, "KeyExpiry");
    jw_time(w, n->expiry_unix_ms);
}

/* Online (omitted when unknown) and LastSeen (only offline and known). */
static void write_presence(struct jw *w, const struct mapenc_node_view *v)
{
    if (v->presence == MAPENC_PRESENCE_UNKNOWN)
        return;
    jw_key(w, "Online");
    jw_bool(w, v->presence == MAPENC_PRESENCE_ONLINE);
    if (v->presence == MAPENC_PRESENCE_OFFLINE && v->node->last_seen_unix_ms != 0) {
        jw_key(w, "LastSeen");
        jw_time(w, v->node->last_seen_unix_ms);
    }
}

/* ID through User: the identity part, never patchable. */
static void write_identity(struct jw *w, const struct mapenc_node_view *v)
{
    const Concord__Node *n = v->node;
    char stable_id[24];
    char name[NAME_BYTES];

    jw_key(w, "ID");
    jw_uint(w, n->id);
    mapenc_stable_id(n->id, stable_id);
    jw_key(w, "StableID");
    jw_str(w, stable_id);
    if (!mapenc_node_fqdn(n, v->base_domain, name, sizeof name))
        name[0] = '\0';
    jw_key(w, "Name");
    jw_str(w, name);
    jw_key(w, "User");
    jw_uint(w, n->n_tags > 0 ? MAPENC_TAGGED_USER_ID : n->user_id);
}

/* The node in mapenc_node's field order; without_patchable leaves out what a
 * PeerChange can carry (the rendering mapenc_node_static_hash hashes). */
static void write_node(struct jw *w, const struct mapenc_node_view *v, bool with_patchable)
{
    const Concord__Node *n = v->node;

    jw_obj_begin(w);
    write_identity(w, v);
    if (with_patchable) {
        jw_key(w, "Key");
        jw_key_hex(w, "nodekey:", key_or_zero(n->node_key));
        if (n->expiry_unix_ms != 0)
            write_key_expiry(w, n);
    }
    jw_key(w, "Machine");
    jw_key_hex(w, "mkey:", key_or_zero(n->machine_key));
    if (with_patchable) {
        jw_key(w, "DiscoKey");
        jw_key_hex(w, "discokey:", key_or_zero(n->disco_key));
    }
    jw_key(w, "Addresses");
    if (v->allowed_ips_json != NULL) {
        write_addresses(w, n);
        jw_key(w, "AllowedIPs");
        jw_raw(w, v->allowed_ips_json, strlen(v->allowed_ips_json));
    } else {
        write_addresses_twice(w, n);
    }
    if (v->primary_routes_json != NULL) {
        jw_key(w, "PrimaryRoutes");
        jw_raw(w, v->primary_routes_json, strlen(v->primary_routes_json));
    }
    if (with_patchable) {
        jw_key(w, "Endpoints");
        write_strings(w, n->endpoints, n->n_endpoints);
        if (n->home_derp != 0) {
            jw_key(w, "HomeDERP");
            jw_uint(w, n->home_derp);
        }
    }
    jw_key(w, "Hostinfo");
    if (n->hostinfo.len > 0)
        jw_raw(w, (const char *)n->hostinfo.data, n->hostinfo.len);
    else
        jw_raw(w, "{}", 2);
    jw_key(w, "Created");
    jw_time(w, n->created_unix_ms);
    if (with_patchable && n->cap_version != 0) {
        jw_key(w, "Cap");
        jw_uint(w, n->cap_version);
    }
    if (n->n_tags > 0) {
        jw_key(w, "Tags");
        write_strings(w, n->tags, n->n_tags);
    }
    if (with_patchable)
        write_presence(w, v);
    jw_key(w, "MachineAuthorized");
    jw_bool(w, true);
    /* Expired is not a PeerChange field: it belongs to the static part. */
    if (n->expiry_unix_ms != 0 && n->expiry_unix_ms <= v->now_unix_ms) {
        jw_key(w, "Expired");
        jw_bool(w, true);
    }
    if (v->cap_map_json != NULL) {
        jw_key(w, "CapMap");
        jw_raw(w, v->cap_map_json, strlen(v->cap_map_json));
    }
    jw_obj_end(w);
}

void mapenc_node(struct jw *w, const struct mapenc_node_view *v)
{
    write_node(w, v, true);
}

/* FNV-1a's multiply, on 8-byte words rather than bytes, with a shift after
 * each step so that high bits reach the low ones, then splitmix64's
 * finalizer. The hash only detects changes: no strength is needed, speed is
 * (it runs over the whole rendering, Hostinfo included). */
static uint64_t mix(uint64_t h, uint64_t word)
{
    h = (h ^ word) * HASH_PRIME;
    return h ^ (h >> 29);
}

static uint64_t hash_bytes(const char *data, size_t len)
{
    uint64_t h = HASH_SEED ^ len;
    uint64_t word;
    size_t i = 0;

    for (; i + 8 <= len; i += 8) {
        memcpy(&word, data + i, 8);
        h = mix(h, word);
    }
    word = 0;
    memcpy(&word, data + i, len - i);
    h = mix(h, word);
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ULL;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebULL;
    return h ^ (h >> 31);
}

uint64_t mapenc_node_static_hash(const struct mapenc_node_view *v)
{
    struct jw w;
    uint64_t h;

    jw_init(&w);
    write_node(&w, v, false);
    /* Out of memory: 0 compares unequal to any real rendering's hash with
     * overwhelming probability, so the caller sends the full node. */
    h = jw_failed(&w) ? 0 : hash_bytes(w.buf, w.len);
    jw_free(&w);
    return h;
}

void mapenc_peer_patch(struct jw *w, const struct mapenc_node_view *v)
{
    const Concord__Node *n = v->node;

    jw_obj_begin(w);
    jw_key(w, "NodeID");
    jw_uint(w, n->id);
    jw_key(w, "DERPRegion");
    jw_uint(w, n->home_derp);
    jw_key(w, "Endpoints");
    write_strings(w, n->endpoints, n->n_endpoints);
    jw_key(w, "Key");
    jw_key_hex(w, "nodekey:", key_or_zero(n->node_key));
    jw_key(w, "DiscoKey");
    jw_key_hex(w, "discokey:", key_or_zero(n->disco_key));
    /* The zero time clears an expiry the client still has. */
    write_key_expiry(w, n);
    jw_key(w, "Cap");
    jw_uint(w, n->cap_version);
    write_presence(w, v);
    jw_obj_end(w);
}

static void write_profile(struct jw *w, uint64_t id, const char *login, const char *display)
{
    jw_obj_begin(w);
    jw_key(w, "ID");
    jw_uint(w, id);
    jw_key(w, "LoginName");
    jw_str(w, login);
    jw_key(w, "DisplayName");
    jw_str(w, display);
    jw_key(w, "ProfilePicURL");
    jw_str(w, "");
    jw_obj_end(w);
}

void mapenc_user_profile(struct jw *w, const Concord__User *u)
{
    write_profile(w, u->id, is_empty(u->email) ? u->name : u->email,
                  is_empty(u->display_name) ? u->name : u->display_name);
}

void mapenc_tagged_profile(struct jw *w)
{
    write_profile(w, MAPENC_TAGGED_USER_ID, MAPENC_TAGGED_USER_NAME, MAPENC_TAGGED_USER_NAME);
}

void mapenc_dns_config(struct jw *w, const struct mapenc_dns *d)
{
    bool magic = d->magic_dns && !is_empty(d->base_domain);

    jw_obj_begin(w);
    jw_key(w, "Resolvers");
    jw_arr_begin(w);
    for (size_t i = 0; i < d->n_nameservers; i++) {
        jw_obj_begin(w);
        jw_key(w, "Addr");
        jw_str(w, d->nameservers[i]);
        jw_obj_end(w);
    }
    jw_arr_end(w);
    jw_key(w, "Domains");
    jw_arr_begin(w);
    if (magic)
        jw_str(w, d->base_domain);
    for (size_t i = 0; i < d->n_search_domains; i++)
        jw_str(w, d->search_domains[i]);
    jw_arr_end(w);
    jw_key(w, "Proxied");
    jw_bool(w, d->magic_dns);
    jw_key(w, "Routes");
    jw_obj_begin(w);
    if (magic) {
        /* An empty resolver list: the client answers the suffix itself. */
        char fqdn[NAME_BYTES];
        int len = snprintf(fqdn, sizeof fqdn, "%s.", d->base_domain);
        if (len > 0 && (size_t)len < sizeof fqdn) {
            jw_key(w, fqdn);
            jw_arr_begin(w);
            jw_arr_end(w);
        }
    }
    jw_obj_end(w);
    jw_obj_end(w);
}

struct mapenc_compressor *mapenc_compressor_new(void)
{
    struct mapenc_compressor *c = malloc(sizeof *c);

    if (c == NULL)
        return NULL;
    c->cctx = ZSTD_createCCtx();
    if (c->cctx == NULL) {
        free(c);
        return NULL;
    }
    return c;
}

void mapenc_compressor_free(struct mapenc_compressor *c)
{
    if (c == NULL)
        return;
    ZSTD_freeCCtx(c->cctx);
    free(c);
}

static void put_u32_le(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

int mapenc_frame(struct mapenc_compressor *c, bool compress, const char *json, size_t len,
                 uint8_t **out, size_t *out_len)
{
    size_t bound = compress ? ZSTD_compressBound(len) : len;
    size_t n;
    uint8_t *buf;

    *out = NULL;
    *out_len = 0;
    if (bound > UINT32_MAX)
        return -1;
    buf = malloc(4 + bound);
    if (buf == NULL)
        return -1;
    if (compress) {
        n = ZSTD_compressCCtx(c->cctx, buf + 4, bound, json, len, ZSTD_LEVEL);
        if (ZSTD_isError(n)) {
            free(buf);
            return -1;
        }
    } else {
        memcpy(buf + 4, json, len);
        n = len;
    }
    put_u32_le(buf, (uint32_t)n);
    *out = buf;
    *out_len = 4 + n;
    return 0;
}
