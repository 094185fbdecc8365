/* tests/unit/derp/test_relay_mesh.c: two embedded relays in this process
 * joined by their mesh manager, end to end. Both share one store (in a
 * temporary directory) holding the replicas table, whose DerpNode entries
 * point at the relays' bound ports, and the two test clients' nodes. Each
 * test client is a DERP client written here (frames built by hand, client
 * info boxed with libsodium) on top of net_http_client_upgrade, connected
 * to a different relay; a packet between them can only travel over the
 * mesh link the relays made to each other.
 * Covered: packets both ways across the mesh with their exact source and
 * bytes; a relay that restarts on the same port is redialled (backoff) and
 * the mesh carries packets again; a relay with another mesh key is never
 * meshed with, so nothing crosses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <signal.h>
#include <sodium.h>
#include <uv.h>

#include "server/derp/cert.h"
#include "server/derp/relay.h"
#include "server/net/http.h"
#include "storage/store.h"
#include "tests/lib/testdir.h"

#define TICK_MS          5
#define MAX_ITERATIONS   4000 /* of at most TICK_MS each: 20 s */
#define MESH_HEX         "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
#define OTHER_HEX        "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100"
#define MAGIC            "DERP\xf0\x9f\x94\x91"
#define MAGIC_BYTES      8
#define HDR              5
#define KEY              32
#define CLIENT_INFO_JSON "{\"version\":2}"
#define RESEND_MS        50

enum {
    T_SERVER_KEY = 0x01,
    T_CLIENT_INFO = 0x02,
    T_SERVER_INFO = 0x03,
    T_SEND = 0x04,
    T_RECV = 0x05,
};

/* ---- the test's DERP client ---- */

struct tclient {
    struct net_client_raw *raw; /* NULL once closed */
    int upgrade_status;
    bool is_closed;
    uint8_t pub[KEY];
    uint8_t priv[KEY];
    uint8_t server_pub[KEY];
    bool is_ready; /* the server info arrived */
    uint8_t *in;   /* bytes not yet parsed into frames */
    size_t in_len;
    int n_received;
    uint8_t last_src[KEY];
    uint8_t last_pkt[64];
    size_t last_pkt_len;
};

static void put_header(uint8_t *h, uint8_t type, size_t len)
{
    h[0] = type;
    h[1] = (uint8_t)(len >> 24);
    h[2] = (uint8_t)(len >> 16);
    h[3] = (uint8_t)(len >> 8);
    h[4] = (uint8_t)len;
}

static void tclient_send_info(struct tclient *c)
{
    static const char json[] = CLIENT_INFO_JSON;
    uint8_t frame[HDR + KEY + crypto_box_NONCEBYTES + crypto_box_MACBYTES + sizeof json - 1];
    uint8_t *nonce = frame + HDR + KEY;

    put_header(frame, T_CLIENT_INFO, sizeof frame - HDR);
    memcpy(frame + HDR, c->pub, KEY);
    randombytes_buf(nonce, crypto_box_NONCEBYTES);
    assert_int_equal(crypto_box_easy(nonce + crypto_box_NONCEBYTES, (const uint8_t *)json,
                                     sizeof json - 1, nonce, c->server_pub, c->priv),
                     0);
    assert_int_equal(net_client_raw_write(c->raw, frame, sizeof frame), 0);
}

static void tclient_frame(struct tclient *c, uint8_t type, const uint8_t *p, size_t len)
{
    switch (type) {
    case T_SERVER_KEY:
        assert_int_equal(len, MAGIC_BYTES + KEY);
        assert_memory_equal(p, MAGIC, MAGIC_BYTES);
        memcpy(c->server_pub, p + MAGIC_BYTES, KEY);
        tclient_send_info(c);
        break;
    case T_SERVER_INFO:
        c->is_ready = true;
        break;
    case T_RECV:
        assert_true(len >= KEY && len - KEY <= sizeof c->last_pkt);
        c->n_received++;
        memcpy(c->last_src, p, KEY);
        memcpy(c->last_pkt, p + KEY, len - KEY);
        c->last_pkt_len = len - KEY;
        break;
    default: /* keepalives, peer gone: not looked at */
        break;
    }
}

static void tclient_on_read(void *arg, const uint8_t *data, size_t len)
{
    struct tclient *c = arg;
    uint8_t *bigger = realloc(c->in, c->in_len + len);
    size_t off = 0;

    assert_non_null(bigger);
    c->in = bigger;
    memcpy(c->in + c->in_len, data, len);
    c->in_len += len;
    while (c->in_len - off >= HDR) {
        const uint8_t *h = c->in + off;
        size_t flen = (size_t)h[1] << 24 | (size_t)h[2] << 16 | (size_t)h[3] << 8 | h[4];

        if (c->in_len - off - HDR < flen)
            break;
        tclient_frame(c, h[0], h + HDR, flen);
        off += HDR + flen;
    }
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
}

static void tclient_on_close(void *arg, const char *reason)
{
    struct tclient *c = arg;

    (void)reason;
    c->raw = NULL;
    c->is_closed = true;
}

static void tclient_on_upgrade(void *arg, int status, int http_status)
{
    struct tclient *c = arg;

    (void)http_status;
    c->upgrade_status = status;
    if (status != NET_OK) {
        c->raw = NULL;
        c->is_closed = true;
    }
}

static void tclient_connect(struct tclient *c, uv_loop_t *loop, int port)
{
    char address[64];
    const struct net_http_client_request req = {
        .address = address,
        .method = "GET",
        .path = "/derp",
        .extra_headers = "Upgrade: DERP\r\nConnection: Upgrade\r\n",
        .timeout_ms = 10000,
        .use_tls = true,
    };
    const struct net_raw_callbacks cb = {tclient_on_read, tclient_on_close};

    snprintf(address, sizeof address, "127.0.0.1:%d", port);
    c->is_ready = false;
    c->is_closed = false;
    c->in_len = 0;
    assert_int_equal(net_http_client_upgrade(loop, &req, tclient_on_upgrade, &cb, c, &c->raw), 0);
}

static void tclient_send(struct tclient *c, const uint8_t dst[KEY], const void *pkt, size_t len)
{
    uint8_t frame[HDR + KEY + 64];

    assert_true(len <= 64);
    put_header(frame, T_SEND, KEY + len);
    memcpy(frame + HDR, dst, KEY);
    memcpy(frame + HDR + KEY, pkt, len);
    assert_int_equal(net_client_raw_write(c->raw, frame, HDR + KEY + len), 0);
}

static void tclient_close(struct tclient *c)
{
    if (c->raw != NULL)
        net_client_raw_close(c->raw, "test done");
    c->raw = NULL;
    free(c->in);
    c->in = NULL;
}

/* ---- loop helpers ---- */

typedef bool (*pred_fn)(void *arg);

static void tick_on_timer(uv_timer_t *t)
{
    (void)t;
}

/* Runs the loop until pred holds, at most max_iterations turns; a ticking
 * timer keeps each turn short. Returns whether pred held. */
static bool loop_run_until(uv_loop_t *loop, pred_fn pred, void *arg, int max_iterations)
{
    uv_timer_t tick;
    bool ok = pred(arg);

    uv_timer_init(loop, &tick);
    uv_timer_start(&tick, tick_on_timer, TICK_MS, TICK_MS);
    for (int i = 0; i < max_iterations && !ok; i++) {
        uv_run(loop, UV_RUN_ONCE);
        ok = pred(arg);
    }
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return ok;
}

static bool is_ready(void *arg)
{
    return ((struct tclient *)arg)->is_ready;
}

static bool is_flag_set(void *arg)
{
    return *(bool *)arg;
}

/* ---- fixture: one store, two relays ---- */

struct fixture {
    uv_loop_t loop;
    char dir[256];
    char cert_path[300];
    char key_path[300];
    struct store *store;
    struct relay *relay[2]; /* replicas 1 and 2 */
    bool is_closed[2];
    int port[2];
    struct tclient client[2]; /* client i on relay i */
};

static void replica_put(struct fixture *f, uint64_t id, int port)
{
    struct store_txn *t;
    Concord__Replica rep = CONCORD__REPLICA__INIT;
    Concord__DerpNode node = CONCORD__DERP_NODE__INIT;

    node.host_name = "127.0.0.1";
    node.ipv4 = "127.0.0.1";
    node.ipv6 = "none";
    node.derp_port = (uint32_t)port;
    node.stun_port = -1;
    rep.id = id;
    rep.raft_address = "127.0.0.1:1";
    rep.http_address = "127.0.0.1:2";
    rep.derp = port != 0 ? &node : NULL;
    assert_int_equal(store_txn_begin(f->store, true, &t), 0);
    assert_int_equal(store_replica_put(t, &rep), 0);
    assert_int_equal(store_txn_commit(t), 0);
}

static void node_put(struct fixture *f, uint64_t id, const uint8_t node_key[KEY])
{
    struct store_txn *t;
    Concord__Node n = CONCORD__NODE__INIT;
    uint8_t machine_key[KEY];

    memset(machine_key, (int)id, sizeof machine_key);
    n.id = id;
    n.machine_key = (ProtobufCBinaryData){KEY, machine_key};
    n.node_key = (ProtobufCBinaryData){KEY, (uint8_t *)node_key};
    n.user_id = 1;
    assert_int_equal(store_txn_begin(f->store, true, &t), 0);
    assert_int_equal(store_node_put(t, &n), 0);
    assert_int_equal(store_txn_commit(t), 0);
}

/* Relay i for replica i + 1 on port (0: any), listed in the replicas table. */
static void relay_start(struct fixture *f, int i, int port, const char *mesh_key)
{
    char listen[64];
    char errmsg[256] = "";
    struct relay_options opts = {
        .loop = &f->loop,
        .store = f->store,
        .listen_addr = listen,
        .cert_path = f->cert_path,
        .key_path = f->key_path,
        .stun_listen_addr = "",
        .replica_id = (uint64_t)i + 1,
        .mesh_key = mesh_key,
    };

    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    if (relay_new(&opts, &f->relay[i], errmsg) != 0)
        fail_msg("relay: %s", errmsg);
    f->is_closed[i] = false;
    f->port[i] = relay_derp_port(f->relay[i]);
    if (port != 0)
        assert_int_equal(f->port[i], port);
    replica_put(f, (uint64_t)i + 1, f->port[i]);
}

static void relay_on_closed(void *arg)
{
    *(bool *)arg = true;
}

static void relay_stop(struct fixture *f, int i)
{
    relay_close(f->relay[i], relay_on_closed, &f->is_closed[i]);
    assert_true(loop_run_until(&f->loop, is_flag_set, &f->is_closed[i], MAX_ITERATIONS));
    f->relay[i] = NULL;
}

static void client_connect(struct fixture *f, int i)
{
    struct tclient *c = &f->client[i];

    tclient_connect(c, &f->loop, f->port[i]);
    assert_true(loop_run_until(&f->loop, is_ready, c, MAX_ITERATIONS));
    assert_int_equal(c->upgrade_status, NET_OK);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    struct store_options sopts = {.map_size_bytes = 64ULL << 20};
    char errmsg[256] = "";
    char certs[300];

    if (f == NULL || uv_loop_init(&f->loop) != 0 || testdir_make(f->dir, sizeof f->dir) != 0)
        return -1;
    sopts.dir = f->dir;
    if (store_open(&sopts, &f->store, errmsg) != 0)
        fail_msg("store: %s", errmsg);
    snprintf(certs, sizeof certs, "%s/certs", f->dir);
    if (derp_cert_ensure(certs, "127.0.0.1", f->cert_path, f->key_path, sizeof f->cert_path,
                         errmsg) != 0)
        fail_msg("certificate: %s", errmsg);
    for (int i = 0; i < 2; i++) {
        crypto_box_keypair(f->client[i].pub, f->client[i].priv);
        node_put(f, (uint64_t)i + 1, f->client[i].pub);
    }
    /* A replica with no relay, which nobody dials. */
    replica_put(f, 3, 0);
    signal(SIGPIPE, SIG_IGN);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    for (int i = 0; i < 2; i++)
        tclient_close(&f->client[i]);
    for (int i = 0; i < 2; i++) {
        if (f->relay[i] != NULL)
            relay_stop(f, i);
    }
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    store_close(f->store);
    testdir_remove(f->dir);
    free(f);
    return 0;
}

/* ---- sending across ---- */

struct crossing {
    struct fixture *f;
    int from;
    const char *pkt;
    uint64_t last_sent_ms;
};

/* Sends every RESEND_MS until the packet arrived: until the sender's relay
 * has learnt, over its mesh link, that the destination is connected to the
 * other relay, it answers "not here" and drops the packet. */
static bool has_crossed(void *arg)
{
    struct crossing *x = arg;
    struct tclient *src = &x->f->client[x->from];
    struct tclient *dst = &x->f->client[1 - x->from];
    uint64_t now = uv_now(&x->f->loop);

    if (dst->n_received > 0)
        return true;
    if (x->last_sent_ms == 0 || now - x->last_sent_ms >= RESEND_MS) {
        tclient_send(src, dst->pub, x->pkt, strlen(x->pkt));
        x->last_sent_ms = now;
    }
    return false;
}

/* Client `from` sends pkt to the other client, across the relays. */
static bool cross(struct fixture *f, int from, const char *pkt, int max_iterations)
{
    struct crossing x = {f, from, pkt, 0};
    struct tclient *dst = &f->client[1 - from];

    dst->n_received = 0;
    return loop_run_until(&f->loop, has_crossed, &x, max_iterations);
}

static void expect_received(const struct tclient *dst, const struct tclient *src, const char *pkt)
{
    assert_memory_equal(dst->last_src, src->pub, KEY);
    assert_int_equal(dst->last_pkt_len, strlen(pkt));
    assert_memory_equal(dst->last_pkt, pkt, strlen(pkt));
}

/* ---- tests ---- */

static void packets_cross_the_mesh_both_ways(void **state)
{
    struct fixture *f = *state;

    relay_start(f, 0, 0, MESH_HEX);
    relay_start(f, 1, 0, MESH_HEX);
    client_connect(f, 1);
    client_connect(f, 0);
    assert_true(cross(f, 0, "from A to B via the mesh", MAX_ITERATIONS));
    expect_received(&f->client[1], &f->client[0], "from A to B via the mesh");
    assert_true(cross(f, 1, "and back", MAX_ITERATIONS));
    expect_received(&f->client[0], &f->client[1], "and back");
}

/* Relay B goes away and comes back on its port: A's link went down and is
 * redialled on its backoff. */
static void relay_restart_is_redialled(void **state)
{
    struct fixture *f = *state;
    int port;

    relay_start(f, 0, 0, MESH_HEX);
    relay_start(f, 1, 0, MESH_HEX);
    client_connect(f, 0);
    client_connect(f, 1);
    assert_true(cross(f, 0, "before", MAX_ITERATIONS));
    port = f->port[1];
    tclient_close(&f->client[1]);
    relay_stop(f, 1);
    relay_start(f, 1, port, MESH_HEX);
    client_connect(f, 1);
    assert_true(cross(f, 0, "after the restart", MAX_ITERATIONS));
    expect_received(&f->client[1], &f->client[0], "after the restart");
}

/* B proves another key: A's link is refused, so B's client stays unknown
 * to A and nothing crosses, while each relay still serves its own. */
static void no_mesh_with_another_key(void **state)
{
    struct fixture *f = *state;

    relay_start(f, 0, 0, MESH_HEX);
    relay_start(f, 1, 0, OTHER_HEX);
    client_connect(f, 0);
    client_connect(f, 1);
    /* Two scans' worth: both relays dialled and were refused. */
    assert_false(cross(f, 0, "nowhere", 5000 / TICK_MS));
    assert_int_equal(f->client[1].n_received, 0);
    assert_false(f->client[0].is_closed);
    assert_false(f->client[1].is_closed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(packets_cross_the_mesh_both_ways, setup, teardown),
        cmocka_unit_test_setup_teardown(relay_restart_is_redialled, setup, teardown),
        cmocka_unit_test_setup_teardown(no_mesh_with_another_key, setup, teardown),
    };

    if (sodium_init() < 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
