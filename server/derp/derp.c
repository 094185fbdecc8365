/* server/derp/derp.c: the DERP relay core (derp.h): the handshake, relaying
 * between local clients by node key, the mesh (watchers, forwarded packets,
 * links to other replicas), PeerGone bookkeeping and per-client limits.
 *
 * State: one table of node keys ("peers"), each known as a local client,
 * on some mesh links (a bit per link), or both; a key is removed once it is
 * neither. A second table holds "edges": a local client that exchanged a
 * packet with a key (either direction) is told PeerGone when that key leaves
 * the region, so it can drop its route through this relay. Both tables use
 * open addressing keyed with SipHash under a per-server random key, since
 * node keys are chosen by clients. */
#include "server/derp/derp.h"

#include <arpa/inet.h>
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>
#include <sodium.h>

#include "server/derp/frame.h"

#define MAGIC            "DERP\xf0\x9f\x94\x91"
#define MAGIC_BYTES      8
#define NONCE_BYTES      crypto_box_NONCEBYTES
#define MAC_BYTES        crypto_box_MACBYTES
#define SERVER_INFO_JSON "{\"version\":2}"
#define PING_BYTES       8
#define MAX_PING_BYTES   1000 /* as derper: room for extensions, not for abuse */
#define ADDR_BYTES       18   /* IPv6 (or v4-mapped) address and big-endian port */
#define PRESENT_BYTES    (DERP_KEY_BYTES + ADDR_BYTES + 1)
#define GONE_BYTES       (DERP_KEY_BYTES + 1)
#define MAX_LINKS        64 /* one bit each in struct peer */
#define TABLE_MIN        16
#define MAX_OUT_PAYLOAD  (2 * DERP_KEY_BYTES + DERP_MAX_PACKET_BYTES)

#define DEFAULT_RATE    (5u * 1000 * 1000)
#define DEFAULT_BURST   (1024u * 1024)
#define DEFAULT_BACKLOG ((size_t)1024 * 1024)

enum gone_reason { GONE_DISCONNECTED = 0x00, GONE_NOT_HERE = 0x01 };
enum present_flags { PRESENT_REGULAR = 0x01, PRESENT_PROBER = 0x04 };

static_assert(sizeof MAGIC - 1 == MAGIC_BYTES, "DERP magic");
static_assert(DERP_KEY_BYTES == crypto_box_PUBLICKEYBYTES, "Curve25519 keys");
static_assert(DERP_KEY_BYTES == crypto_box_SECRETKEYBYTES, "Curve25519 keys");

/* --- Open-addressing table ------------------------------------------------ */

/* First member of every element: its hash, kept so that growing and
 * deleting never rehash. */
struct tnode {
    uint64_t hash;
};

struct table {
    struct tnode **slot;
    size_t cap; /* a power of two, or 0 */
    size_t count;
};

typedef int (*match_fn)(const struct tnode *n, const void *key);

static struct tnode *table_find(const struct table *t, uint64_t hash, match_fn match,
                                const void *key)
{
    size_t mask = t->cap - 1;

    if (t->cap == 0)
        return NULL;
    for (size_t i = hash & mask; t->slot[i] != NULL; i = (i + 1) & mask) {
        if (t->slot[i]->hash == hash && match(t->slot[i], key))
            return t->slot[i];
    }
    return NULL;
}

static void table_place(struct tnode **slot, size_t cap, struct tnode *n)
{
    size_t i = n->hash & (cap - 1);

    while (slot[i] != NULL)
        i = (i + 1) & (cap - 1);
    slot[i] = n;
}

static int table_insert(struct table *t, struct tnode *n)
{
    if ((t->count + 1) * 4 > t->cap * 3) {
        size_t cap = t->cap == 0 ? TABLE_MIN : t->cap * 2;
        struct tnode **slot = calloc(cap, sizeof *slot);

        if (slot == NULL)
            return -1;
        for (size_t i = 0; i < t->cap; i++) {
            if (t->slot[i] != NULL)
                table_place(slot, cap, t->slot[i]);
        }
        free(t->slot);
        t->slot = slot;
        t->cap = cap;
    }
    table_place(t->slot, t->cap, n);
    t->count++;
    return 0;
}

/* Backward-shift deletion: entries after the hole move into it when the
 * hole lies on their probe path, so lookups never need tombstones. Only
 * entries after the hole move, which keeps a forward scan that re-examines
 * the current slot after a removal complete. */
static void table_remove(struct table *t, const struct tnode *n)
{
    size_t mask = t->cap - 1;
    size_t hole = n->hash & mask;

    while (t->slot[hole] != n)
        hole = (hole + 1) & mask;
    for (size_t j = (hole + 1) & mask; t->slot[j] != NULL; j = (j + 1) & mask) {
        size_t home = t->slot[j]->hash & mask;

        if (((j - home) & mask) >= ((j - hole) & mask)) {
            t->slot[hole] = t->slot[j];
            hole = j;
        }
    }
    t->slot[hole] = NULL;
    t->count--;
}

/* --- Objects -------------------------------------------------------------- */

/* A node key known here: connected locally, on mesh links, or both. */
struct peer {
    struct tnode node;
    uint8_t key[DERP_KEY_BYTES];
    struct derp_client *local; /* the active local connection */
    uint64_t links;            /* bit i: present on s->links[i] */
    struct edge *watchers;     /* local clients to tell when it leaves */
};

/* A local client that exchanged packets with a peer. */
struct edge {
    struct tnode node;
    struct peer *peer;
    struct derp_client *client;
    struct edge *peer_prev, *peer_next;
    struct edge *client_prev, *client_next;
};

struct derp_server {
    uint8_t priv[DERP_KEY_BYTES];
    uint8_t pub[DERP_KEY_BYTES];
    uint8_t mesh_key[DERP_KEY_BYTES];
    char mesh_hex[2 * DERP_KEY_BYTES + 1]; /* "" without a mesh */
    bool (*verify)(void *arg, const uint8_t node_key[DERP_KEY_BYTES]);
    void *verify_arg;
    double rate; /* bytes per second */
    double burst;
    size_t max_backlog;
    uint8_t hash_key[crypto_shorthash_KEYBYTES];
    struct table peers;
    struct table edges;
    struct derp_client *clients; /* every connection, for keepalives */
    struct derp_client **watchers;
    size_t n_watchers, cap_watchers;
    struct derp_mesh_link *links[MAX_LINKS];
    struct derp_stats stats;
    /* The frame being sent: every frame is built here and handed to one send
     * call (callbacks never re-enter the core, so one buffer suffices). */
    uint8_t *out;
};

enum client_state { CLIENT_HANDSHAKE, CLIENT_READY };

struct derp_client {
    struct derp_server *s;
    struct derp_io io;
    void *arg;
    struct derp_client *prev, *next; /* s->clients */
    struct peer *peer;               /* set while the active connection of its key */
    struct edge *edges;              /* peers it watches */
    struct derp_reader rd;
    uint8_t key[DERP_KEY_BYTES];
    uint8_t addr[ADDR_BYTES];
    uint8_t state;
    bool mesh;   /* proved the mesh key */
    bool prober; /* said so in its client info */
    bool watching;
    bool preferred;
    bool closing; /* close requested: nothing more is read or sent */
    bool sent_since_tick;
    double tokens;
    uint64_t tokens_ns;
    size_t backlog;
};

struct derp_mesh_link {
    struct derp_server *s;
    struct derp_io io;
    void *arg;
    struct derp_reader rd;
    uint8_t server_key[DERP_KEY_BYTES];
    unsigned slot;
    bool have_key;
    bool closing;
};

/* --- Helpers -------------------------------------------------------------- */

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t hash_bytes(const struct derp_server *s, const void *data, size_t len)
{
    uint8_t out[crypto_shorthash_BYTES];
    uint64_t h;

    crypto_shorthash(out, data, len, s->hash_key);
    memcpy(&h, out, sizeof h);
    return h;
}

static uint8_t *payload(struct derp_server *s)
{
    return s->out + DERP_HEADER_BYTES;
}

/* "ip:port" or "[ipv6]:port" into 16 address bytes (v4-mapped) and a
 * big-endian port; anything else leaves zeros (PeerPresent then carries no
 * address, as for derper's non-IP listeners). */
static void parse_addr(const char *text, uint8_t out[ADDR_BYTES])
{
    char host[64];
    const char *colon, *start = text;
    size_t host_len;
    char *end;
    unsigned long port;
    struct in_addr v4;
    struct in6_addr v6;

    memset(out, 0, ADDR_BYTES);
    if (text == NULL || (colon = strrchr(text, ':')) == NULL)
        return;
    host_len = (size_t)(colon - text);
    if (text[0] == '[' && host_len >= 2 && text[host_len - 1] == ']') {
        start = text + 1;
        host_len -= 2;
    }
    if (host_len >= sizeof host)
        return;
    memcpy(host, start, host_len);
    host[host_len] = '\0';
    port = strtoul(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || port > 65535)
        return;
    if (inet_pton(AF_INET, host, &v4) == 1) {
        out[10] = 0xff;
        out[11] = 0xff;
        memcpy(out + 12, &v4, 4);
    } else if (inet_pton(AF_INET6, host, &v6) == 1) {
        memcpy(out, &v6, 16);
    } else {
        return;
    }
    out[16] = (uint8_t)(port >> 8);
    out[17] = (uint8_t)port;
}

/* --- Peers and edges ------------------------------------------------------ */

static int peer_match(const struct tnode *n, const void *key)
{
    return memcmp(((const struct peer *)n)->key, key, DERP_KEY_BYTES) == 0;
}

static struct peer *peer_find(const struct derp_server *s, const uint8_t key[DERP_KEY_BYTES])
{
    return (struct peer *)table_find(&s->peers, hash_bytes(s, key, DERP_KEY_BYTES), peer_match,
                                     key);
}

/* The entry for key, created if needed; NULL when out of memory. */
static struct peer *peer_get(struct derp_server *s, const uint8_t key[DERP_KEY_BYTES])
{
    uint64_t hash = hash_bytes(s, key, DERP_KEY_BYTES);
    struct peer *p = (struct peer *)table_find(&s->peers, hash, peer_match, key);

    if (p != NULL)
        return p;
    p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    p->node.hash = hash;
    memcpy(p->key, key, DERP_KEY_BYTES);
    if (table_insert(&s->peers, &p->node) != 0) {
        free(p);
        return NULL;
    }
    return p;
}

struct edge_key {
    const struct derp_client *client;
    const struct peer *peer;
};

static int edge_match(const struct tnode *n, const void *key)
{
    const struct edge *e = (const struct edge *)n;
    const struct edge_key *k = key;

    return e->client == k->client && e->peer == k->peer;
}

static uint64_t edge_hash(const struct derp_server *s, const struct edge_key *k)
{
    uint8_t raw[2 * sizeof(void *)];

    memcpy(raw, &k->client, sizeof k->client);
    memcpy(raw + sizeof k->client, &k->peer, sizeof k->peer);
    return hash_bytes(s, raw, sizeof raw);
}

/* Client c will be told when p leaves. Best effort: without memory the
 * notice is lost, which only delays the client's own route expiry. */
static void watch(struct derp_client *c, struct peer *p)
{
    struct derp_server *s = c->s;
    struct edge_key k = {c, p};
    uint64_t hash;
    struct edge *e;

    if (p == NULL || c->mesh || c->peer == p)
        return;
    hash = edge_hash(s, &k);
    if (table_find(&s->edges, hash, edge_match, &k) != NULL)
        return;
    e = calloc(1, sizeof *e);
    if (e == NULL)
        return;
    e->node.hash = hash;
    e->peer = p;
    e->client = c;
    if (table_insert(&s->edges, &e->node) != 0) {
        free(e);
        return;
    }
    e->peer_next = p->watchers;
    if (p->watchers != NULL)
        p->watchers->peer_prev = e;
    p->watchers = e;
    e->client_next = c->edges;
    if (c->edges != NULL)
        c->edges->client_prev = e;
    c->edges = e;
}

static void edge_remove(struct derp_server *s, struct edge *e)
{
    if (e->peer_prev != NULL)
        e->peer_prev->peer_next = e->peer_next;
    else
        e->peer->watchers = e->peer_next;
    if (e->peer_next != NULL)
        e->peer_next->peer_prev = e->peer_prev;
    if (e->client_prev != NULL)
        e->client_prev->client_next = e->client_next;
    else
        e->client->edges = e->client_next;
    if (e->client_next != NULL)
        e->client_next->client_prev = e->client_prev;
    table_remove(&s->edges, &e->node);
    free(e);
}

/* --- Sending -------------------------------------------------------------- */

static void client_close(struct derp_client *c, const char *reason)
{
    if (c->closing)
        return;
    c->closing = true;
    c->io.close(c->arg, reason);
}

/* Sends the frame whose payload (len bytes) is already in s->out. */
static int client_send(struct derp_client *c, uint8_t type, size_t len)
{
    struct derp_server *s = c->s;

    if (c->closing)
        return -1;
    derp_put_header(s->out, type, (uint32_t)len);
    if (c->io.send(c->arg, s->out, DERP_HEADER_BYTES + len) != 0) {
        client_close(c, "send failed");
        return -1;
    }
    c->sent_since_tick = true;
    return 0;
}

static void send_peer_gone(struct derp_client *c, const uint8_t key[DERP_KEY_BYTES],
                           enum gone_reason reason)
{
    uint8_t *p = payload(c->s);

    memcpy(p, key, DERP_KEY_BYTES);
    p[DERP_KEY_BYTES] = (uint8_t)reason;
    client_send(c, DERP_FRAME_PEER_GONE, GONE_BYTES);
}

static void send_peer_present(struct derp_client *watcher, const struct derp_client *c)
{
    uint8_t *p = payload(watcher->s);

    memcpy(p, c->key, DERP_KEY_BYTES);
    memcpy(p + DERP_KEY_BYTES, c->addr, ADDR_BYTES);
    p[DERP_KEY_BYTES + ADDR_BYTES] = c->prober ? PRESENT_PROBER : PRESENT_REGULAR;
    client_send(watcher, DERP_FRAME_PEER_PRESENT, PRESENT_BYTES);
}

static int link_send(struct derp_mesh_link *l, uint8_t type, size_t len);

/* A packet for a local client, from src (a local client or, forwarded, a
 * client of another replica). */
static void deliver(struct derp_client *dst, const uint8_t src[DERP_KEY_BYTES], const uint8_t *pkt,
                    size_t len)
{
    struct derp_server *s = dst->s;
    uint8_t *p = payload(s);

    if (dst->closing || dst->backlog >= s->max_backlog) {
        s->stats.packets_dropped++;
        return;
    }
    memcpy(p, src, DERP_KEY_BYTES);
    memcpy(p + DERP_KEY_BYTES, pkt, len);
    if (client_send(dst, DERP_FRAME_RECV_PACKET, DERP_KEY_BYTES + len) != 0) {
        s->stats.packets_dropped++;
        return;
    }
    s->stats.packets_relayed++;
}

/* Over the lowest-numbered usable link that has dst. */
static void forward(struct derp_server *s, const struct peer *dst,
                    const uint8_t src[DERP_KEY_BYTES], const uint8_t *pkt, size_t len)
{
    uint8_t *p = payload(s);

    for (uint64_t bits = dst->links; bits != 0; bits &= bits - 1) {
        struct derp_mesh_link *l = s->links[__builtin_ctzll(bits)];

        if (l->closing)
            continue;
        memcpy(p, src, DERP_KEY_BYTES);
        memcpy(p + DERP_KEY_BYTES, dst->key, DERP_KEY_BYTES);
        memcpy(p + 2 * DERP_KEY_BYTES, pkt, len);
        if (link_send(l, DERP_FRAME_FORWARD_PACKET, 2 * DERP_KEY_BYTES + len) == 0) {
            s->stats.packets_forwarded_to_mesh++;
            return;
        }
    }
    s->stats.packets_dropped++;
}

/* --- Presence ------------------------------------------------------------- */

/* p is no longer anywhere in the region: its correspondents hear of it and
 * the entry goes. */
static void peer_gone(struct derp_server *s, struct peer *p)
{
    while (p->watchers != NULL) {
        struct edge *e = p->watchers;

        send_peer_gone(e->client, p->key, GONE_DISCONNECTED);
        edge_remove(s, e);
    }
    table_remove(&s->peers, &p->node);
    free(p);
}

static void peer_update(struct derp_server *s, struct peer *p)
{
    if (p->local == NULL && p->links == 0)
        peer_gone(s, p);
}

/* c finished its handshake as a regular client: it becomes the connection
 * of its key. An older one is closed rather than kept as a duplicate (which
 * derper does, to watch which one is alive): the newest is the one whose
 * client is still dialling, and one connection per key keeps state small. */
static int client_register(struct derp_client *c)
{
    struct derp_server *s = c->s;
    struct peer *p = peer_get(s, c->key);

    if (p == NULL)
        return -1;
    if (p->local != NULL) {
        p->local->peer = NULL;
        client_close(p->local, "replaced by a newer connection of the same key");
    } else {
        s->stats.clients++;
    }
    p->local = c;
    c->peer = p;
    for (size_t i = 0; i < s->n_watchers; i++)
        send_peer_present(s->watchers[i], c);
    return 0;
}

static void client_leave(struct derp_client *c)
{
    struct derp_server *s = c->s;
    struct peer *p = c->peer;

    c->peer = NULL;
    p->local = NULL;
    s->stats.clients--;
    for (size_t i = 0; i < s->n_watchers; i++)
        send_peer_gone(s->watchers[i], p->key, GONE_DISCONNECTED);
    peer_update(s, p);
}

/* --- Handshake ------------------------------------------------------------ */

static int refuse(struct derp_client *c, const char *reason)
{
    c->s->stats.refused++;
    client_close(c, reason);
    return -1;
}

struct client_info {
    bool has_mesh_key;
    bool mesh_key_ok;
    uint8_t mesh_key[DERP_KEY_BYTES];
    bool prober;
};

/* Go's encoding/json matches field names case-insensitively; so does this. */
static int parse_client_info(const uint8_t *msg, size_t len, struct client_info *info)
{
    json_t *root = json_loadb((const char *)msg, len, 0, NULL);
    const char *name;
    json_t *value;

    memset(info, 0, sizeof *info);
    if (root == NULL)
        return -1;
    if (!json_is_object(root)) {
        json_decref(root);
        return -1;
    }
    json_object_foreach(root, name, value)
    {
        if (strcasecmp(name, "meshKey") == 0) {
            const char *hex = json_string_value(value);

            info->has_mesh_key = true;
            info->mesh_key_ok = hex != NULL && strlen(hex) == 2 * DERP_KEY_BYTES &&
                                sodium_hex2bin(info->mesh_key, DERP_KEY_BYTES, hex,
                                               2 * DERP_KEY_BYTES, NULL, NULL, NULL) == 0;
        } else if (strcasecmp(name, "isProber") == 0) {
            info->prober = json_is_true(value);
        }
    }
    json_decref(root);
    return 0;
}

static int send_server_info(struct derp_client *c)
{
    struct derp_server *s = c->s;
    uint8_t *p = payload(s);
    size_t len = sizeof SERVER_INFO_JSON - 1;

    randombytes_buf(p, NONCE_BYTES);
    if (crypto_box_easy(p + NONCE_BYTES, (const uint8_t *)SERVER_INFO_JSON, len, p, c->key,
                        s->priv) != 0) {
        client_close(c, "cannot seal server info");
        return -1;
    }
    return client_send(c, DERP_FRAME_SERVER_INFO, NONCE_BYTES + MAC_BYTES + len);
}

/* FrameClientInfo: client key, nonce, box of the JSON info. */
static int on_client_info(struct derp_client *c, const uint8_t *frame, uint32_t len)
{
    struct derp_server *s = c->s;
    const uint8_t *nonce = frame + DERP_KEY_BYTES;
    const uint8_t *box = nonce + NONCE_BYTES;
    size_t box_len = len - DERP_KEY_BYTES - NONCE_BYTES;
    uint8_t *msg = malloc(box_len - MAC_BYTES + 1);
    struct client_info info;
    int rv;

    if (msg == NULL)
        return refuse(c, "out of memory");
    rv = crypto_box_open_easy(msg, box, box_len, nonce, frame, s->priv);
    if (rv == 0)
        rv = parse_client_info(msg, box_len - MAC_BYTES, &info);
    free(msg);
    if (rv != 0)
        return refuse(c, "client info does not open or is not JSON");
    if (info.has_mesh_key) {
        if (!info.mesh_key_ok || s->mesh_hex[0] == '\0' ||
            sodium_memcmp(info.mesh_key, s->mesh_key, DERP_KEY_BYTES) != 0)
            return refuse(c, "wrong mesh key");
        c->mesh = true;
    }
    memcpy(c->key, frame, DERP_KEY_BYTES);
    c->prober = info.prober;
    if (!c->mesh && s->verify != NULL && !s->verify(s->verify_arg, c->key))
        return refuse(c, "node key not allowed");
    if (!c->mesh && client_register(c) != 0)
        return refuse(c, "out of memory");
    c->state = CLIENT_READY;
    c->tokens = s->burst;
    c->tokens_ns = now_ns();
    return send_server_info(c);
}

/* --- Frames from a connection --------------------------------------------- */

static int fail(struct derp_client *c, const char *reason)
{
    client_close(c, reason);
    return -1;
}

/* Token bucket over FrameSendPacket payload bytes; mesh peers are exempt. */
static bool take_tokens(struct derp_client *c, size_t len)
{
    struct derp_server *s = c->s;
    uint64_t now = now_ns();

    c->tokens += (double)(now - c->tokens_ns) * s->rate / 1e9;
    c->tokens_ns = now;
    if (c->tokens > s->burst)
        c->tokens = s->burst;
    if (c->tokens < (double)len)
        return false;
    c->tokens -= (double)len;
    return true;
}

static void on_send_packet(struct derp_client *c, const uint8_t *frame, uint32_t len)
{
    struct derp_server *s = c->s;
    const uint8_t *pkt = frame + DERP_KEY_BYTES;
    size_t pkt_len = len - DERP_KEY_BYTES;
    struct peer *dst;

    if ((!c->mesh && !take_tokens(c, pkt_len)) || memcmp(frame, c->key, DERP_KEY_BYTES) == 0) {
        s->stats.packets_dropped++;
        return;
    }
    dst = peer_find(s, frame);
    if (dst == NULL) {
        s->stats.packets_dropped++;
        send_peer_gone(c, frame, GONE_NOT_HERE);
        return;
    }
    if (dst->local != NULL) {
        deliver(dst->local, c->key, pkt, pkt_len);
        watch(dst->local, c->peer);
    } else {
        forward(s, dst, c->key, pkt, pkt_len);
    }
    watch(c, dst);
}

/* From a mesh peer: a packet one of its clients sent to one of ours. It is
 * never forwarded again. */
static void on_forward_packet(struct derp_client *c, const uint8_t *frame, uint32_t len)
{
    struct derp_server *s = c->s;
    const uint8_t *src = frame;
    struct peer *dst = peer_find(s, frame + DERP_KEY_BYTES);

    if (dst == NULL || dst->local == NULL) {
        s->stats.packets_dropped++;
        return;
    }
    deliver(dst->local, src, frame + 2 * DERP_KEY_BYTES, len - 2 * DERP_KEY_BYTES);
    watch(dst->local, peer_find(s, src));
}

/* A mesh peer subscribes: every local client now, then each change. */
static int on_watch_conns(struct derp_client *c)
{
    struct derp_server *s = c->s;

    /* A replica watching itself learns nothing useful. */
    if (c->watching || memcmp(c->key, s->pub, DERP_KEY_BYTES) == 0)
        return 0;
    if (s->n_watchers == s->cap_watchers) {
        size_t cap = s->cap_watchers == 0 ? 4 : 2 * s->cap_watchers;
        struct derp_client **w = realloc(s->watchers, cap * sizeof *w);

        if (w == NULL)
            return fail(c, "out of memory");
        s->watchers = w;
        s->cap_watchers = cap;
    }
    s->watchers[s->n_watchers++] = c;
    c->watching = true;
    for (size_t i = 0; i < s->peers.cap; i++) {
        const struct peer *p = (const struct peer *)s->peers.slot[i];

        if (p != NULL && p->local != NULL)
            send_peer_present(c, p->local);
    }
    return 0;
}

static void on_note_preferred(struct derp_client *c, bool preferred)
{
    if (c->mesh || preferred == c->preferred)
        return;
    c->preferred = preferred;
    if (preferred)
        c->s->stats.home_clients++;
    else
        c->s->stats.home_clients--;
}

static enum derp_verdict handshake_header(struct derp_client *c, uint8_t type, uint32_t len)
{
    if (type != DERP_FRAME_CLIENT_INFO)
        refuse(c, "expected client info");
    else if (len < DERP_KEY_BYTES + NONCE_BYTES + MAC_BYTES)
        refuse(c, "short client info");
    else if (len > DERP_MAX_FRAME_BYTES)
        refuse(c, "client info too long");
    else
        return DERP_READ;
    return DERP_FAIL;
}

/* Frame sizes as derper checks them; a packet over DERP_MAX_PACKET_BYTES is
 * dropped (skipped unread) rather than fatal. */
static enum derp_verdict client_header(void *arg, uint8_t type, uint32_t len)
{
    struct derp_client *c = arg;
    const char *bad = NULL;

    if (c->closing)
        return DERP_FAIL;
    if (c->state == CLIENT_HANDSHAKE)
        return handshake_header(c, type, len);
    if (len > DERP_MAX_FRAME_BYTES)
        bad = "frame too long";
    switch (type) {
    case DERP_FRAME_SEND_PACKET:
    case DERP_FRAME_FORWARD_PACKET: {
        uint32_t keys = type == DERP_FRAME_SEND_PACKET ? DERP_KEY_BYTES : 2 * DERP_KEY_BYTES;

        if (type == DERP_FRAME_FORWARD_PACKET && !c->mesh)
            bad = "forward packet from a non-mesh client";
        else if (len < keys)
            bad = "short packet frame";
        if (bad == NULL && len - keys > DERP_MAX_PACKET_BYTES) {
            c->s->stats.packets_dropped++;
            return DERP_SKIP;
        }
        break;
    }
    case DERP_FRAME_PING:
        if (len < PING_BYTES || len > MAX_PING_BYTES)
            bad = "bad ping size";
        break;
    case DERP_FRAME_NOTE_PREFERRED:
        if (len != 1)
            bad = "bad note preferred size";
        break;
    case DERP_FRAME_WATCH_CONNS:
    case DERP_FRAME_CLOSE_PEER:
        if (!c->mesh)
            bad = "mesh frame from a non-mesh client";
        else if (len != (type == DERP_FRAME_WATCH_CONNS ? 0 : DERP_KEY_BYTES))
            bad = "bad mesh frame size";
        break;
    default:
        if (bad == NULL)
            return DERP_SKIP;
        break;
    }
    if (bad != NULL) {
        fail(c, bad);
        return DERP_FAIL;
    }
    return DERP_READ;
}

static int client_frame(void *arg, uint8_t type, const uint8_t *p, uint32_t len)
{
    struct derp_client *c = arg;
    struct peer *target;

    if (c->state == CLIENT_HANDSHAKE)
        return on_client_info(c, p, len);
    switch (type) {
    case DERP_FRAME_SEND_PACKET:
        on_send_packet(c, p, len);
        break;
    case DERP_FRAME_FORWARD_PACKET:
        on_forward_packet(c, p, len);
        break;
    case DERP_FRAME_PING:
        memcpy(payload(c->s), p, PING_BYTES);
        client_send(c, DERP_FRAME_PONG, PING_BYTES);
        break;
    case DERP_FRAME_NOTE_PREFERRED:
        on_note_preferred(c, p[0] != 0);
        break;
    case DERP_FRAME_WATCH_CONNS:
        return on_watch_conns(c);
    case DERP_FRAME_CLOSE_PEER:
        target = peer_find(c->s, p);
        if (target != NULL && target->local != NULL)
            client_close(target->local, "closed by a mesh peer");
        break;
    }
    return c->closing ? -1 : 0;
}

static const struct derp_reader_ops client_ops = {client_header, client_frame};

/* --- Server --------------------------------------------------------------- */

int derp_server_new(const struct derp_options *opts, struct derp_server **out)
{
    struct derp_server *s;

    *out = NULL;
    if (sodium_init() < 0)
        return -1;
    s = calloc(1, sizeof *s);
    if (s == NULL)
        return -1;
    s->out = malloc(DERP_HEADER_BYTES + MAX_OUT_PAYLOAD);
    if (s->out == NULL) {
        free(s);
        return -1;
    }
    if (opts->mesh_key != NULL && (strlen(opts->mesh_key) != 2 * DERP_KEY_BYTES ||
                                   sodium_hex2bin(s->mesh_key, DERP_KEY_BYTES, opts->mesh_key,
                                                  2 * DERP_KEY_BYTES, NULL, NULL, NULL) != 0)) {
        derp_server_free(s);
        return -1;
    }
    if (opts->mesh_key != NULL)
        sodium_bin2hex(s->mesh_hex, sizeof s->mesh_hex, s->mesh_key, DERP_KEY_BYTES);
    memcpy(s->priv, opts->private_key, DERP_KEY_BYTES);
    crypto_scalarmult_base(s->pub, s->priv);
    s->verify = opts->verify;
    s->verify_arg = opts->verify_arg;
    s->rate = (double)(opts->rate_bytes_per_s != 0 ? opts->rate_bytes_per_s : DEFAULT_RATE);
    s->burst = (double)(opts->burst_bytes != 0 ? opts->burst_bytes : DEFAULT_BURST);
    s->max_backlog = opts->max_backlog_bytes != 0 ? opts->max_backlog_bytes : DEFAULT_BACKLOG;
    crypto_shorthash_keygen(s->hash_key);
    *out = s;
    return 0;
}

void derp_server_free(struct derp_server *s)
{
    if (s == NULL)
        return;
    assert(s->clients == NULL && s->peers.count == 0 && s->edges.count == 0);
    sodium_memzero(s->priv, sizeof s->priv);
    free(s->peers.slot);
    free(s->edges.slot);
    free(s->watchers);
    free(s->out);
    free(s);
}

void derp_server_public_key(const struct derp_server *s, uint8_t out[DERP_KEY_BYTES])
{
    memcpy(out, s->pub, DERP_KEY_BYTES);
}

void derp_server_stats(const struct derp_server *s, struct derp_stats *out)
{
    *out = s->stats;
}

void derp_server_keepalive(struct derp_server *s)
{
    for (struct derp_client *c = s->clients; c != NULL; c = c->next) {
        if (c->state != CLIENT_READY)
            continue;
        if (!c->sent_since_tick)
            client_send(c, DERP_FRAME_KEEP_ALIVE, 0);
        c->sent_since_tick = false;
    }
}

/* --- Connections ---------------------------------------------------------- */

struct derp_client *derp_client_new(struct derp_server *s, const struct derp_io *io, void *arg,
                                    const char *peer_address)
{
    struct derp_client *c = calloc(1, sizeof *c);
    uint8_t *p = payload(s);

    if (c == NULL)
        return NULL;
    c->s = s;
    c->io = *io;
    c->arg = arg;
    parse_addr(peer_address, c->addr);
    memcpy(p, MAGIC, MAGIC_BYTES);
    memcpy(p + MAGIC_BYTES, s->pub, DERP_KEY_BYTES);
    derp_put_header(s->out, DERP_FRAME_SERVER_KEY, MAGIC_BYTES + DERP_KEY_BYTES);
    if (io->send(arg, s->out, DERP_HEADER_BYTES + MAGIC_BYTES + DERP_KEY_BYTES) != 0) {
        free(c);
        return NULL;
    }
    c->next = s->clients;
    if (s->clients != NULL)
        s->clients->prev = c;
    s->clients = c;
    return c;
}

int derp_client_feed(struct derp_client *c, const uint8_t *data, size_t len)
{
    if (c->closing)
        return -1;
    if (derp_reader_feed(&c->rd, data, len, &client_ops, c) != 0)
        client_close(c, "out of memory");
    return c->closing ? -1 : 0;
}

void derp_client_set_backlog(struct derp_client *c, size_t bytes)
{
    c->backlog = bytes;
}

bool derp_client_key(const struct derp_client *c, uint8_t out[DERP_KEY_BYTES])
{
    if (c->state != CLIENT_READY)
        return false;
    memcpy(out, c->key, DERP_KEY_BYTES);
    return true;
}

void derp_client_free(struct derp_client *c)
{
    struct derp_server *s;

    if (c == NULL)
        return;
    s = c->s;
    while (c->edges != NULL)
        edge_remove(s, c->edges);
    if (c->peer != NULL)
        client_leave(c);
    if (c->watching) {
        size_t i = 0;

        while (s->watchers[i] != c)
            i++;
        s->watchers[i] = s->watchers[--s->n_watchers];
    }
    if (c->preferred)
        s->stats.home_clients--;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        s->clients = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    derp_reader_free(&c->rd);
    free(c);
}

/* --- Mesh links ----------------------------------------------------------- */

static void link_close(struct derp_mesh_link *l, const char *reason)
{
    if (l->closing)
        return;
    l->closing = true;
    l->io.close(l->arg, reason);
}

static int link_send(struct derp_mesh_link *l, uint8_t type, size_t len)
{
    struct derp_server *s = l->s;

    if (l->closing)
        return -1;
    derp_put_header(s->out, type, (uint32_t)len);
    if (l->io.send(l->arg, s->out, DERP_HEADER_BYTES + len) != 0) {
        link_close(l, "send failed");
        return -1;
    }
    return 0;
}

/* Client info boxed to the other replica with this one's key pair, then the
 * subscription. */
static int link_hello(struct derp_mesh_link *l)
{
    struct derp_server *s = l->s;
    uint8_t *p = payload(s);
    char json[sizeof "{\"version\":2,\"meshKey\":\"\"}" + 2 * DERP_KEY_BYTES];
    size_t len =
        (size_t)snprintf(json, sizeof json, "{\"version\":2,\"meshKey\":\"%s\"}", s->mesh_hex);

    memcpy(p, s->pub, DERP_KEY_BYTES);
    randombytes_buf(p + DERP_KEY_BYTES, NONCE_BYTES);
    if (crypto_box_easy(p + DERP_KEY_BYTES + NONCE_BYTES, (const uint8_t *)json, len,
                        p + DERP_KEY_BYTES, l->server_key, s->priv) != 0) {
        link_close(l, "cannot seal client info");
        return -1;
    }
    if (link_send(l, DERP_FRAME_CLIENT_INFO, DERP_KEY_BYTES + NONCE_BYTES + MAC_BYTES + len) != 0)
        return -1;
    return link_send(l, DERP_FRAME_WATCH_CONNS, 0);
}

static int link_server_key(struct derp_mesh_link *l, const uint8_t *p, uint32_t len)
{
    if (len < MAGIC_BYTES + DERP_KEY_BYTES || memcmp(p, MAGIC, MAGIC_BYTES) != 0) {
        link_close(l, "bad server key frame");
        return -1;
    }
    memcpy(l->server_key, p + MAGIC_BYTES, DERP_KEY_BYTES);
    if (memcmp(l->server_key, l->s->pub, DERP_KEY_BYTES) == 0) {
        link_close(l, "connected to itself");
        return -1;
    }
    l->have_key = true;
    return link_hello(l);
}

static int link_server_info(struct derp_mesh_link *l, const uint8_t *p, uint32_t len)
{
    uint8_t *msg;
    int rv = -1;

    if (len >= NONCE_BYTES + MAC_BYTES) {
        msg = malloc(len - NONCE_BYTES - MAC_BYTES + 1);
        if (msg == NULL) {
            link_close(l, "out of memory");
            return -1;
        }
        rv = crypto_box_open_easy(msg, p + NONCE_BYTES, len - NONCE_BYTES, p, l->server_key,
                                  l->s->priv);
        free(msg);
    }
    if (rv != 0)
        link_close(l, "server info does not open");
    return rv;
}

static int link_learn(struct derp_mesh_link *l, const uint8_t key[DERP_KEY_BYTES])
{
    struct peer *p = peer_get(l->s, key);

    if (p == NULL) {
        link_close(l, "out of memory");
        return -1;
    }
    p->links |= UINT64_C(1) << l->slot;
    return 0;
}

static void link_forget(struct derp_mesh_link *l, const uint8_t key[DERP_KEY_BYTES])
{
    struct peer *p = peer_find(l->s, key);

    if (p == NULL)
        return;
    p->links &= ~(UINT64_C(1) << l->slot);
    peer_update(l->s, p);
}

static enum derp_verdict link_header(void *arg, uint8_t type, uint32_t len)
{
    struct derp_mesh_link *l = arg;

    if (l->closing)
        return DERP_FAIL;
    if (len > DERP_MAX_FRAME_BYTES) {
        link_close(l, "frame too long");
        return DERP_FAIL;
    }
    if (!l->have_key && type != DERP_FRAME_SERVER_KEY) {
        link_close(l, "expected the server key");
        return DERP_FAIL;
    }
    switch (type) {
    case DERP_FRAME_SERVER_KEY:
    case DERP_FRAME_SERVER_INFO:
    case DERP_FRAME_PEER_PRESENT:
    case DERP_FRAME_PEER_GONE:
    case DERP_FRAME_PING:
        return DERP_READ;
    default:
        return DERP_SKIP;
    }
}

/* Short PeerPresent/PeerGone/Ping frames are ignored, as Tailscale's client
 * does; longer ones carry fields this side does not need. */
static int link_frame(void *arg, uint8_t type, const uint8_t *p, uint32_t len)
{
    struct derp_mesh_link *l = arg;

    switch (type) {
    case DERP_FRAME_SERVER_KEY:
        return l->have_key ? 0 : link_server_key(l, p, len);
    case DERP_FRAME_SERVER_INFO:
        return link_server_info(l, p, len);
    case DERP_FRAME_PEER_PRESENT:
        return len >= DERP_KEY_BYTES ? link_learn(l, p) : 0;
    case DERP_FRAME_PEER_GONE:
        if (len >= DERP_KEY_BYTES)
            link_forget(l, p);
        return 0;
    case DERP_FRAME_PING:
        if (len >= PING_BYTES) {
            memcpy(payload(l->s), p, PING_BYTES);
            return link_send(l, DERP_FRAME_PONG, PING_BYTES);
        }
        return 0;
    }
    return 0;
}

static const struct derp_reader_ops link_ops = {link_header, link_frame};

struct derp_mesh_link *derp_mesh_link_new(struct derp_server *s, const struct derp_io *io,
                                          void *arg, const char *name)
{
    struct derp_mesh_link *l;
    unsigned slot = 0;

    /* name is for the caller's logs; reasons passed to close are enough here. */
    (void)name;
    if (s->mesh_hex[0] == '\0')
        return NULL;
    while (slot < MAX_LINKS && s->links[slot] != NULL)
        slot++;
    if (slot == MAX_LINKS || (l = calloc(1, sizeof *l)) == NULL)
        return NULL;
    l->s = s;
    l->io = *io;
    l->arg = arg;
    l->slot = slot;
    s->links[slot] = l;
    return l;
}

int derp_mesh_link_feed(struct derp_mesh_link *l, const uint8_t *data, size_t len)
{
    if (l->closing)
        return -1;
    if (derp_reader_feed(&l->rd, data, len, &link_ops, l) != 0)
        link_close(l, "out of memory");
    return l->closing ? -1 : 0;
}

void derp_mesh_link_free(struct derp_mesh_link *l)
{
    struct derp_server *s;
    uint64_t bit;

    if (l == NULL)
        return;
    s = l->s;
    bit = UINT64_C(1) << l->slot;
    /* A removal refills slot i from later slots only: look at i again. */
    for (size_t i = 0; i < s->peers.cap;) {
        struct peer *p = (struct peer *)s->peers.slot[i];

        if (p != NULL && (p->links & bit) != 0) {
            p->links &= ~bit;
            if (p->local == NULL && p->links == 0) {
                peer_gone(s, p);
                continue;
            }
        }
        i++;
    }
    s->links[l->slot] = NULL;
    derp_reader_free(&l->rd);
    free(l);
}
