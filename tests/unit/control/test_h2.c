/* tests/unit/control/test_h2.c: the HTTP/2 server against an nghttp2 client
 * session in the same process, wired back to back: whatever one side sends is
 * fed to the other until both are quiet. Covers answers now and later, long
 * and large (flow-controlled) streams, the body and header caps, client
 * resets, the preface check, freeing with open streams, PING, GOAWAY and the
 * memory a session holds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <nghttp2/nghttp2.h>

#include "server/control/h2.h"

#define MAX_STREAMS    8
#define CLIENT_WINDOW  65536
#define SERVER_WINDOW  (1024 * 1024)
#define MAX_PUMP_ROUND 100000

/* Client side of one stream: the response as received. */
struct response {
    int32_t id;
    int status;
    char content_type[64];
    uint8_t *body;
    size_t len;
    size_t cap;
    bool closed;
    uint32_t error_code;
    const uint8_t *upload; /* request body the client is sending */
    size_t upload_len;
    size_t upload_pos;
};

/* Server side of one request, copied in on_request. */
struct request {
    struct h2_stream *st;
    char method[16];
    char path[128];
    char authority[64];
    char headers[256]; /* "name=value;" for each regular header */
    uint8_t *body;
    size_t body_len;
};

struct pair;
typedef void hook_fn(struct pair *p, int index);

struct pair {
    nghttp2_session *client;
    struct h2_session *server;
    uint8_t *wire; /* server to client, not yet fed to the client */
    size_t wire_len;
    size_t wire_cap;
    bool bytewise; /* feed the server one byte per call */
    struct response resp[MAX_STREAMS];
    int n_resp;
    int pings_received;
    int ping_acks_sent;
    int goaways_received;
    int resets_received;
    int32_t goaway_last_stream;
    struct request req[MAX_STREAMS];
    int n_req;
    hook_fn *on_request; /* called after a request is recorded */
    void *closed_users[MAX_STREAMS];
    int n_closed;
    hook_fn *on_close;             /* called after a close is recorded (index into closed_users) */
    int close_rv[2 * MAX_STREAMS]; /* return codes seen by on_close hooks */
    int n_close_rv;
};

static int users[MAX_STREAMS]; /* distinct addresses for h2_stream_set_user */

/* Server callbacks. */

static void on_request(void *arg, struct h2_stream *st, const struct h2_request *req)
{
    struct pair *p = arg;
    struct request *r;
    size_t used = 0;

    assert_true(p->n_req < MAX_STREAMS);
    r = &p->req[p->n_req];
    r->st = st;
    snprintf(r->method, sizeof r->method, "%s", req->method);
    snprintf(r->path, sizeof r->path, "%s", req->path);
    snprintf(r->authority, sizeof r->authority, "%s", req->authority);
    r->headers[0] = '\0';
    for (size_t i = 0; i < req->n_headers && used < sizeof r->headers - 1; i++)
        used += (size_t)snprintf(r->headers + used, sizeof r->headers - used, "%s=%s;",
                                 req->headers[i].name, req->headers[i].value);
    assert_int_equal(req->body[req->body_len], '\0');
    r->body = malloc(req->body_len + 1);
    assert_non_null(r->body);
    memcpy(r->body, req->body, req->body_len + 1);
    r->body_len = req->body_len;
    h2_stream_set_user(st, &users[p->n_req]);
    p->n_req++;
    if (p->on_request != NULL)
        p->on_request(p, p->n_req - 1);
}

static void on_stream_close(void *arg, struct h2_stream *st, void *user)
{
    struct pair *p = arg;

    (void)st;
    assert_true(p->n_closed < MAX_STREAMS);
    p->closed_users[p->n_closed++] = user;
    if (p->on_close != NULL)
        p->on_close(p, p->n_closed - 1);
}

static int server_send(void *arg, const uint8_t *data, size_t len)
{
    struct pair *p = arg;

    if (p->wire_len + len > p->wire_cap) {
        p->wire_cap = (p->wire_len + len) * 2;
        p->wire = realloc(p->wire, p->wire_cap);
        assert_non_null(p->wire);
    }
    memcpy(p->wire + p->wire_len, data, len);
    p->wire_len += len;
    return 0;
}

/* Client callbacks. */

static struct response *response_of(struct pair *p, int32_t id)
{
    for (int i = 0; i < p->n_resp; i++)
        if (p->resp[i].id == id)
            return &p->resp[i];
    return NULL;
}

static int client_on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name,
                            size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                            void *ud)
{
    struct response *r = response_of(ud, frame->hd.stream_id);

    (void)ng;
    (void)flags;
    assert_non_null(r);
    if (namelen == 7 && memcmp(name, ":status", 7) == 0)
        r->status = atoi((const char *)value);
    else if (namelen == 12 && memcmp(name, "content-type", 12) == 0)
        snprintf(r->content_type, sizeof r->content_type, "%.*s", (int)valuelen, value);
    return 0;
}

static int client_on_data(nghttp2_session *ng, uint8_t flags, int32_t stream_id,
                          const uint8_t *data, size_t len, void *ud)
{
    struct response *r = response_of(ud, stream_id);

    (void)ng;
    (void)flags;
    assert_non_null(r);
    if (r->len + len > r->cap) {
        r->cap = (r->len + len) * 2;
        r->body = realloc(r->body, r->cap);
        assert_non_null(r->body);
    }
    memcpy(r->body + r->len, data, len);
    r->len += len;
    return 0;
}

static int client_on_close(nghttp2_session *ng, int32_t stream_id, uint32_t error_code, void *ud)
{
    struct response *r = response_of(ud, stream_id);

    (void)ng;
    assert_non_null(r);
    assert_false(r->closed);
    r->closed = true;
    r->error_code = error_code;
    return 0;
}

static int client_on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
    struct pair *p = ud;

    (void)ng;
    if (frame->hd.type == NGHTTP2_PING && !(frame->hd.flags & NGHTTP2_FLAG_ACK))
        p->pings_received++;
    if (frame->hd.type == NGHTTP2_RST_STREAM) {
        assert_int_equal(frame->rst_stream.error_code, NGHTTP2_NO_ERROR);
        p->resets_received++;
    }
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        p->goaways_received++;
        p->goaway_last_stream = frame->goaway.last_stream_id;
    }
    return 0;
}

static int client_on_frame_send(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
    struct pair *p = ud;

    (void)ng;
    if (frame->hd.type == NGHTTP2_PING && (frame->hd.flags & NGHTTP2_FLAG_ACK))
        p->ping_acks_sent++;
    return 0;
}

static ssize_t read_upload(nghttp2_session *ng, int32_t stream_id, uint8_t *buf, size_t length,
                           uint32_t *data_flags, nghttp2_data_source *source, void *ud)
{
    struct response *r = source->ptr;
    size_t n = r->upload_len - r->upload_pos;

    (void)ng;
    (void)stream_id;
    (void)ud;
    if (n > length)
        n = length;
    memcpy(buf, r->upload + r->upload_pos, n);
    r->upload_pos += n;
    if (r->upload_pos == r->upload_len)
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* The pair. */

static void client_new(struct pair *p)
{
    nghttp2_session_callbacks *cbs;
    nghttp2_option *opt;
    const nghttp2_settings_entry settings[] = {
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, CLIENT_WINDOW},
    };

    assert_int_equal(nghttp2_session_callbacks_new(&cbs), 0);
    nghttp2_session_callbacks_set_on_header_callback(cbs, client_on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, client_on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, client_on_close);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, client_on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, client_on_frame_send);
    assert_int_equal(nghttp2_option_new(&opt), 0);
    /* Lets the header-cap test send more than nghttp2's 64 KiB default. */
    nghttp2_option_set_max_send_header_block_length(opt, 256 * 1024);
    assert_int_equal(nghttp2_session_client_new2(&p->client, cbs, p, opt), 0);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    assert_int_equal(nghttp2_submit_settings(p->client, NGHTTP2_FLAG_NONE, settings, 1), 0);
}

/* Feeds the server what the client has to send, in one call (or one byte
 * per call when bytewise). Returns false if the client had nothing. */
static bool client_to_server(struct pair *p)
{
    uint8_t *out = NULL;
    size_t len = 0;
    const uint8_t *data;
    ssize_t n;

    while ((n = nghttp2_session_mem_send(p->client, &data)) > 0) {
        out = realloc(out, len + (size_t)n);
        assert_non_null(out);
        memcpy(out + len, data, (size_t)n);
        len += (size_t)n;
    }
    assert_int_equal(n, 0);
    if (p->bytewise) {
        for (size_t i = 0; i < len; i++)
            assert_int_equal(h2_session_feed(p->server, out + i, 1), H2_OK);
    } else if (len > 0) {
        assert_int_equal(h2_session_feed(p->server, out, len), H2_OK);
    }
    free(out);
    return len > 0;
}

/* Moves bytes both ways until neither side has anything to say. */
static void pump(struct pair *p)
{
    for (int round = 0; round < MAX_PUMP_ROUND; round++) {
        bool moved = client_to_server(p);

        if (p->wire_len > 0) {
            size_t len = p->wire_len;

            p->wire_len = 0;
            assert_int_equal(nghttp2_session_mem_recv(p->client, p->wire, len), (ssize_t)len);
            moved = true;
        }
        if (!moved)
            return;
    }
    fail_msg("the two sides never went quiet");
}

static void pair_open(struct pair *p, size_t max_body, uint32_t max_streams)
{
    struct h2_options opts = {
        .max_body_bytes = max_body,
        .max_concurrent_streams = max_streams,
        .cb = {.on_request = on_request, .on_stream_close = on_stream_close, .send = server_send},
        .arg = p,
    };

    memset(p, 0, sizeof *p);
    client_new(p);
    assert_int_equal(h2_session_new(&opts, &p->server), H2_OK);
    pump(p);
}

static void reset_responses(struct pair *p)
{
    for (int i = 0; i < p->n_resp; i++)
        free(p->resp[i].body);
    memset(p->resp, 0, sizeof p->resp);
    p->n_resp = 0;
}

static void pair_close(struct pair *p)
{
    h2_session_free(p->server);
    nghttp2_session_del(p->client);
    free(p->wire);
    reset_responses(p);
    for (int i = 0; i < p->n_req; i++)
        free(p->req[i].body);
}

#define NV(name, value)                                                                            \
    {                                                                                              \
        (uint8_t *)(name), (uint8_t *)(value), strlen(name), strlen(value), NGHTTP2_NV_FLAG_NONE   \
    }

/* Submits a request (END_STREAM after body, or on HEADERS without one);
 * returns the index of its response slot. */
static int client_request(struct pair *p, const char *method, const char *path, const void *body,
                          size_t len)
{
    const nghttp2_nv nv[] = {
        NV(":method", method),       NV(":scheme", "https"),      NV(":path", path),
        NV(":authority", "control"), NV("ts-lb", "nodekey:ab12"),
    };
    struct response *r;
    nghttp2_data_provider upload = {.read_callback = read_upload};

    assert_true(p->n_resp < MAX_STREAMS);
    r = &p->resp[p->n_resp];
    upload.source.ptr = r;
    r->upload = body;
    r->upload_len = len;
    r->id = nghttp2_submit_request(p->client, NULL, nv, sizeof nv / sizeof nv[0],
                                   body != NULL ? &upload : NULL, NULL);
    assert_true(r->id > 0);
    return p->n_resp++;
}

static void assert_response(const struct response *r, int status, const char *content_type,
                            const char *body)
{
    assert_true(r->closed);
    assert_int_equal(r->error_code, NGHTTP2_NO_ERROR);
    assert_int_equal(r->status, status);
    assert_string_equal(r->content_type, content_type);
    assert_int_equal(r->len, strlen(body));
    assert_memory_equal(r->body, body, r->len);
}

/* on_stream_close fired exactly once for each of the first n requests. */
static void assert_closed_once(const struct pair *p, int n)
{
    assert_int_equal(p->n_closed, n);
    for (int i = 0; i < n; i++) {
        int seen = 0;

        for (int j = 0; j < n; j++)
            seen += p->closed_users[j] == &users[i];
        assert_int_equal(seen, 1);
    }
}

static void flush_and_pump(struct pair *p)
{
    assert_int_equal(h2_session_flush(p->server), H2_OK);
    pump(p);
}

static int find_request(const struct pair *p, const char *path)
{
    for (int i = 0; i < p->n_req; i++)
        if (strcmp(p->req[i].path, path) == 0)
            return i;
    fail_msg("no request for %s", path);
    return -1;
}

/* Hooks. */

static void answer_now(struct pair *p, int i)
{
    struct request *r = &p->req[i];
    char text[256];
    int len = snprintf(text, sizeof text, "%s %s %zu:%.64s", r->method, r->path, r->body_len,
                       (const char *)r->body);

    assert_int_equal(h2_respond(p->server, r->st, 200, "application/json", text, (size_t)len),
                     H2_OK);
}

/* Each close writes to every stream handle still valid: its own (valid for
 * the call) and those not reported closed yet. */
static void write_everywhere(struct pair *p, int closed_index)
{
    for (int i = 0; i < p->n_req; i++) {
        bool dead = false;

        for (int j = 0; j < closed_index; j++)
            dead = dead || p->closed_users[j] == &users[i];
        if (!dead)
            p->close_rv[p->n_close_rv++] = h2_stream_write(p->server, p->req[i].st, "x", 1);
    }
}

/* Answers /first at once and tries to send from inside the callback, which
 * is left to the outermost call. */
static void answer_first_flush_inside(struct pair *p, int i)
{
    size_t wire_before = p->wire_len;

    if (strcmp(p->req[i].path, "/first") != 0)
        return;
    assert_int_equal(h2_respond(p->server, p->req[i].st, 200, NULL, "1", 1), H2_OK);
    assert_int_equal(h2_session_flush(p->server), H2_OK);
    assert_int_equal(h2_session_ping(p->server), H2_OK);
    assert_int_equal(h2_session_feed(p->server, (const uint8_t *)"x", 1), H2_STATE);
    assert_int_equal(p->wire_len, wire_before);
}

/* When /first is closed, answers /second. */
static void answer_second_on_close(struct pair *p, int closed_index)
{
    int second = find_request(p, "/second");

    if (p->closed_users[closed_index] != &users[second])
        assert_int_equal(h2_respond(p->server, p->req[second].st, 200, NULL, "2", 1), H2_OK);
}

/* Tests. */

static void get_and_post_get_their_responses(void **state)
{
    struct pair p;
    static const char json[] = "{\"NodeKey\":\"nodekey:ab12\"}";
    int rg, rp;

    (void)state;
    for (int bytewise = 0; bytewise < 2; bytewise++) {
        pair_open(&p, 0, 0);
        p.bytewise = bytewise;
        p.on_request = answer_now;
        int get = client_request(&p, "GET", "/machine/whoami?x=1", NULL, 0);
        int post = client_request(&p, "POST", "/machine/register", json, strlen(json));
        int head = client_request(&p, "HEAD", "/ping", NULL, 0);
        pump(&p);

        assert_int_equal(p.n_req, 3);
        rg = find_request(&p, "/machine/whoami?x=1");
        rp = find_request(&p, "/machine/register");
        assert_string_equal(p.req[rg].method, "GET");
        assert_string_equal(p.req[rg].authority, "control");
        assert_string_equal(p.req[rg].headers, "ts-lb=nodekey:ab12;");
        assert_int_equal(p.req[rg].body_len, 0);
        assert_string_equal(p.req[rp].method, "POST");
        assert_string_equal((const char *)p.req[rp].body, json);
        assert_string_equal(p.req[find_request(&p, "/ping")].method, "HEAD");
        assert_response(&p.resp[get], 200, "application/json", "GET /machine/whoami?x=1 0:");
        assert_response(&p.resp[post], 200, "application/json",
                        "POST /machine/register 26:{\"NodeKey\":\"nodekey:ab12\"}");
        assert_response(&p.resp[head], 200, "application/json", "");
        assert_closed_once(&p, 3);
        pair_close(&p);
    }
}

static void concurrent_streams_answered_later_out_of_order(void **state)
{
    struct pair p;
    int a, b, c;

    (void)state;
    pair_open(&p, 0, 0);
    a = client_request(&p, "GET", "/a", NULL, 0);
    b = client_request(&p, "GET", "/b", NULL, 0);
    c = client_request(&p, "POST", "/c", "body", 4);
    pump(&p);
    assert_int_equal(p.n_req, 3);
    assert_false(p.resp[a].closed || p.resp[b].closed || p.resp[c].closed);

    assert_int_equal(h2_respond(p.server, p.req[2].st, 201, NULL, "C", 1), H2_OK);
    flush_and_pump(&p);
    assert_response(&p.resp[c], 201, "", "C");
    assert_false(p.resp[a].closed || p.resp[b].closed);
    /* Both answered before one flush: b (headers only) closes first. */
    assert_int_equal(h2_respond(p.server, p.req[0].st, 404, "text/plain", "not here", 8), H2_OK);
    assert_int_equal(h2_respond(p.server, p.req[1].st, 204, NULL, NULL, 0), H2_OK);
    flush_and_pump(&p);
    assert_response(&p.resp[a], 404, "text/plain", "not here");
    assert_response(&p.resp[b], 204, "", "");
    assert_int_equal(p.n_closed, 3);
    assert_ptr_equal(p.closed_users[0], &users[2]);
    assert_ptr_equal(p.closed_users[1], &users[1]);
    assert_ptr_equal(p.closed_users[2], &users[0]);
    pair_close(&p);
}

static void long_stream_gets_chunks_in_order(void **state)
{
    struct pair p;
    struct h2_stream *st;
    int r;

    (void)state;
    pair_open(&p, 0, 0);
    r = client_request(&p, "POST", "/machine/map", "{}", 2);
    pump(&p);
    st = p.req[0].st;
    assert_int_equal(h2_stream_write(p.server, st, "early", 5), H2_STATE);
    assert_int_equal(h2_stream_start(p.server, st, 200, "application/octet-stream"), H2_OK);
    assert_int_equal(h2_stream_start(p.server, st, 200, NULL), H2_STATE);
    assert_int_equal(h2_respond(p.server, st, 200, NULL, "x", 1), H2_STATE);
    flush_and_pump(&p);
    assert_int_equal(p.resp[r].status, 200);
    assert_string_equal(p.resp[r].content_type, "application/octet-stream");
    assert_int_equal(p.resp[r].len, 0);
    assert_false(p.resp[r].closed);

    assert_int_equal(h2_stream_write(p.server, st, "first,", 6), H2_OK);
    assert_int_equal(h2_stream_pending(st), 6);
    flush_and_pump(&p);
    assert_int_equal(h2_stream_pending(st), 0);
    assert_int_equal(p.resp[r].len, 6);
    assert_int_equal(h2_stream_write(p.server, st, "second,", 7), H2_OK);
    assert_int_equal(h2_stream_write(p.server, st, "", 0), H2_OK);
    assert_int_equal(h2_stream_write(p.server, st, "third", 5), H2_OK);
    flush_and_pump(&p);
    assert_false(p.resp[r].closed);
    assert_int_equal(p.n_closed, 0);
    assert_int_equal(h2_stream_end(p.server, st), H2_OK);
    assert_int_equal(h2_stream_end(p.server, st), H2_STATE);
    flush_and_pump(&p);
    assert_response(&p.resp[r], 200, "application/octet-stream", "first,second,third");
    assert_int_equal(p.n_closed, 1);
    pair_close(&p);
}

static void large_stream_respects_client_window(void **state)
{
    const size_t total = 8u << 20, chunk = 128u << 10;
    struct pair p;
    struct h2_stream *st;
    uint8_t *data = malloc(total);
    int r;

    (void)state;
    assert_non_null(data);
    for (size_t i = 0; i < total; i++)
        data[i] = (uint8_t)(i * 7 + i / 251);
    pair_open(&p, 0, 0);
    r = client_request(&p, "POST", "/machine/map", "{}", 2);
    pump(&p);
    st = p.req[0].st;
    assert_int_equal(h2_stream_start(p.server, st, 200, NULL), H2_OK);
    flush_and_pump(&p);
    for (size_t off = 0; off < total; off += chunk)
        assert_int_equal(h2_stream_write(p.server, st, data + off, chunk), H2_OK);
    assert_int_equal(h2_stream_end(p.server, st), H2_OK);
    /* Alone, the server may only fill the client's windows: 65,535 bytes
     * (the connection window; the stream's is 65,536). */
    assert_int_equal(h2_session_flush(p.server), H2_OK);
    assert_int_equal(h2_stream_pending(st), total - 65535);
    assert_int_equal(p.n_closed, 0);
    pump(&p);
    assert_true(p.resp[r].closed);
    assert_int_equal(p.resp[r].error_code, NGHTTP2_NO_ERROR);
    assert_int_equal(p.resp[r].len, total);
    assert_memory_equal(p.resp[r].body, data, total);
    assert_int_equal(p.n_closed, 1);
    pair_close(&p);
    free(data);
}

static void body_over_the_limit_gets_413(void **state)
{
    static uint8_t big[4096];
    const nghttp2_nv nv[] = {
        NV(":method", "POST"),
        NV(":scheme", "https"),
        NV(":path", "/machine/register"),
        NV(":authority", "c"),
    };
    nghttp2_data_provider part = {.read_callback = read_upload};
    struct pair p;
    int over, exact, after;

    (void)state;
    memset(big, 'b', sizeof big);
    pair_open(&p, 1024, 0);
    p.on_request = answer_now;
    over = client_request(&p, "POST", "/machine/register", big, sizeof big);
    pump(&p);
    assert_int_equal(p.n_req, 0);
    assert_int_equal(p.n_closed, 0);
    assert_true(p.resp[over].closed);
    assert_int_equal(p.resets_received, 0);
    assert_int_equal(p.resp[over].status, 413);
    assert_string_equal(p.resp[over].content_type, "text/plain");
    assert_int_equal(p.resp[over].len, strlen("request body too large\n"));
    assert_memory_equal(p.resp[over].body, "request body too large\n", p.resp[over].len);

    /* Refused while the client is still sending: the server resets the
     * stream once its answer is out, and drops what was already on its way. */
    assert_int_equal(nghttp2_submit_headers(p.client, NGHTTP2_FLAG_NONE, -1, NULL, nv, 4, NULL), 3);
    pump(&p);
    p.resp[p.n_resp] = (struct response){.id = 3, .upload = big, .upload_len = 2048};
    part.source.ptr = &p.resp[p.n_resp++];
    assert_int_equal(nghttp2_submit_data(p.client, NGHTTP2_FLAG_NONE, 3, &part), 0);
    assert_true(client_to_server(&p));
    p.resp[1].upload_pos = 0;
    assert_int_equal(nghttp2_submit_data(p.client, NGHTTP2_FLAG_END_STREAM, 3, &part), 0);
    assert_true(client_to_server(&p));
    pump(&p);
    assert_int_equal(p.resp[1].status, 413);
    assert_true(p.resp[1].closed);
    assert_int_equal(p.resp[1].error_code, NGHTTP2_NO_ERROR);
    assert_int_equal(p.resets_received, 1);
    assert_int_equal(p.n_req, 0);
    assert_int_equal(p.n_closed, 0);

    exact = client_request(&p, "POST", "/exact", big, 1024);
    pump(&p);
    assert_int_equal(p.n_req, 1);
    assert_int_equal(p.req[0].body_len, 1024);
    assert_int_equal(p.resp[exact].status, 200);
    after = client_request(&p, "GET", "/after", NULL, 0);
    pump(&p);
    assert_response(&p.resp[after], 200, "application/json", "GET /after 0:");
    assert_int_equal(p.n_closed, 2);
    pair_close(&p);
}

static void headers_over_the_limit_get_431(void **state)
{
    static char value[16000];
    nghttp2_nv nv[] = {
        NV(":method", "GET"),  NV(":scheme", "https"), NV(":path", "/"),
        NV(":authority", "c"), NV("a", value),         NV("b", value),
        NV("c", value),        NV("d", value),         NV("e", value),
    };
    struct pair p;
    int32_t id;

    (void)state;
    memset(value, 'v', sizeof value - 1);
    for (size_t i = 4; i < sizeof nv / sizeof nv[0]; i++)
        nv[i].valuelen = sizeof value - 1;
    pair_open(&p, 0, 0);
    p.on_request = answer_now;
    id = nghttp2_submit_request(p.client, NULL, nv, sizeof nv / sizeof nv[0], NULL, NULL);
    assert_true(id > 0);
    p.resp[p.n_resp++].id = id;
    pump(&p);
    assert_int_equal(p.n_req, 0);
    assert_int_equal(p.resp[0].status, 431);
    assert_true(p.resp[0].closed);
    /* Four of them fit. */
    id = nghttp2_submit_request(p.client, NULL, nv, sizeof nv / sizeof nv[0] - 1, NULL, NULL);
    p.resp[p.n_resp++].id = id;
    pump(&p);
    assert_int_equal(p.n_req, 1);
    assert_int_equal(p.resp[1].status, 200);
    pair_close(&p);
}

static void client_reset_closes_long_streams_once(void **state)
{
    struct pair p;
    int a, b, c, ra, rb, rc;

    (void)state;
    pair_open(&p, 0, 0);
    a = client_request(&p, "POST", "/machine/map?a", "{}", 2);
    b = client_request(&p, "POST", "/machine/map?b", "{}", 2);
    c = client_request(&p, "GET", "/other", NULL, 0);
    pump(&p);
    assert_int_equal(p.n_req, 3);
    ra = find_request(&p, "/machine/map?a");
    rb = find_request(&p, "/machine/map?b");
    rc = find_request(&p, "/other");
    assert_int_equal(h2_stream_start(p.server, p.req[ra].st, 200, NULL), H2_OK);
    assert_int_equal(h2_stream_start(p.server, p.req[rb].st, 200, NULL), H2_OK);
    assert_int_equal(h2_stream_write(p.server, p.req[ra].st, "hello", 5), H2_OK);
    flush_and_pump(&p);
    assert_int_equal(p.resp[a].len, 5);

    /* Both resets arrive in one feed: while the first close is reported the
     * second stream is already reset, and writes to either are refused. */
    p.on_close = write_everywhere;
    assert_int_equal(
        nghttp2_submit_rst_stream(p.client, NGHTTP2_FLAG_NONE, p.resp[a].id, NGHTTP2_CANCEL), 0);
    assert_int_equal(
        nghttp2_submit_rst_stream(p.client, NGHTTP2_FLAG_NONE, p.resp[b].id, NGHTTP2_CANCEL), 0);
    pump(&p);
    assert_int_equal(p.n_closed, 2);
    assert_ptr_equal(p.closed_users[0], &users[ra]);
    assert_ptr_equal(p.closed_users[1], &users[rb]);
    /* The first close writes to the three streams, the second to b and c
     * (in request order): refused as closed, except c, still unanswered. */
    assert_int_equal(p.n_close_rv, 5);
    for (int i = 0, k = 0; i < 2; i++) {
        for (int j = 0; j < 3; j++) {
            if (i == 1 && j == ra)
                continue;
            assert_int_equal(p.close_rv[k++], j == rc ? H2_STATE : H2_CLOSED);
        }
    }
    p.on_close = NULL;

    /* The connection goes on. */
    assert_false(h2_session_is_done(p.server));
    assert_int_equal(h2_respond(p.server, p.req[rc].st, 200, NULL, "ok", 2), H2_OK);
    flush_and_pump(&p);
    assert_response(&p.resp[c], 200, "", "ok");
    assert_true(p.resp[b].closed);
    assert_int_equal(p.n_closed, 3);
    pair_close(&p);
}

static void callbacks_may_answer_other_streams(void **state)
{
    struct pair p;
    int first, second;

    (void)state;
    pair_open(&p, 0, 0);
    p.on_request = answer_first_flush_inside;
    p.on_close = answer_second_on_close;
    first = client_request(&p, "GET", "/first", NULL, 0);
    second = client_request(&p, "GET", "/second", NULL, 0);
    pump(&p);
    assert_response(&p.resp[first], 200, "", "1");
    assert_response(&p.resp[second], 200, "", "2");
    assert_int_equal(p.pings_received, 1);
    assert_closed_once(&p, 2);
    pair_close(&p);
}

static void garbage_instead_of_preface_is_fatal(void **state)
{
    static const char http1[] = "GET / HTTP/1.1\r\nHost: control\r\n\r\n";
    struct pair p;
    struct h2_options opts = {
        .cb = {.on_request = on_request, .on_stream_close = on_stream_close, .send = server_send},
        .arg = &p,
    };

    (void)state;
    memset(&p, 0, sizeof p);
    assert_int_equal(h2_session_new(&opts, &p.server), H2_OK);
    assert_false(h2_session_is_done(p.server));
    assert_int_equal(h2_session_feed(p.server, (const uint8_t *)http1, strlen(http1)), H2_PROTOCOL);
    assert_true(h2_session_is_done(p.server));
    assert_int_equal(h2_session_feed(p.server, (const uint8_t *)"x", 1), H2_CLOSED);
    assert_int_equal(h2_session_flush(p.server), H2_CLOSED);
    assert_int_equal(p.n_req, 0);
    h2_session_free(p.server);
    free(p.wire);
}

static void free_reports_every_open_stream(void **state)
{
    const nghttp2_nv nv[] = {
        NV(":method", "POST"),
        NV(":scheme", "https"),
        NV(":path", "/unfinished"),
        NV(":authority", "c"),
    };
    struct pair p;

    (void)state;
    pair_open(&p, 0, 0);
    client_request(&p, "GET", "/waiting", NULL, 0);
    client_request(&p, "POST", "/machine/map", "{}", 2);
    client_request(&p, "GET", "/answered-not-flushed", NULL, 0);
    /* Headers without END_STREAM: never reaches on_request. */
    assert_true(nghttp2_submit_headers(p.client, NGHTTP2_FLAG_NONE, -1, NULL, nv, 4, NULL) > 0);
    pump(&p);
    assert_int_equal(p.n_req, 3);
    assert_int_equal(h2_stream_start(p.server, p.req[1].st, 200, NULL), H2_OK);
    assert_int_equal(h2_stream_write(p.server, p.req[1].st, "data", 4), H2_OK);
    flush_and_pump(&p);
    assert_int_equal(h2_respond(p.server, p.req[2].st, 200, NULL, "late", 4), H2_OK);

    p.on_close = write_everywhere;
    h2_session_free(p.server);
    p.server = NULL;
    assert_closed_once(&p, 3);
    assert_int_equal(p.n_close_rv, 6);
    for (int i = 0; i < 6; i++)
        assert_int_equal(p.close_rv[i], H2_CLOSED);
    pair_close(&p);
}

static void ping_is_acked(void **state)
{
    struct pair p;

    (void)state;
    pair_open(&p, 0, 0);
    assert_int_equal(p.pings_received, 0);
    assert_int_equal(h2_session_ping(p.server), H2_OK);
    assert_true(p.wire_len == 17); /* PING: 9-byte header, 8 bytes of opaque data */
    pump(&p);
    assert_int_equal(p.pings_received, 1);
    assert_int_equal(p.ping_acks_sent, 1);
    assert_false(h2_session_is_done(p.server));
    pair_close(&p);
}

static void settings_are_advertised(void **state)
{
    struct pair p;

    (void)state;
    pair_open(&p, 0, 0);
    assert_int_equal(
        nghttp2_session_get_remote_settings(p.client, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS),
        100);
    assert_int_equal(
        nghttp2_session_get_remote_settings(p.client, NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE),
        SERVER_WINDOW);
    assert_int_equal(
        nghttp2_session_get_remote_settings(p.client, NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE),
        65536);
    assert_int_equal(nghttp2_session_get_remote_window_size(p.client), SERVER_WINDOW);
    pair_close(&p);

    pair_open(&p, 0, 7);
    assert_int_equal(
        nghttp2_session_get_remote_settings(p.client, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS), 7);
    pair_close(&p);
}

static void goaway_ends_the_session(void **state)
{
    struct pair p;
    int r;

    (void)state;
    pair_open(&p, 0, 0);
    p.on_request = answer_now;
    client_request(&p, "GET", "/one", NULL, 0);
    r = client_request(&p, "GET", "/two", NULL, 0);
    pump(&p);
    assert_false(h2_session_is_done(p.server));
    assert_int_equal(h2_session_goaway(p.server), H2_OK);
    pump(&p);
    assert_int_equal(p.goaways_received, 1);
    assert_int_equal(p.goaway_last_stream, p.resp[r].id);
    assert_true(h2_session_is_done(p.server));
    pair_close(&p);
}

static void memory_returns_to_idle(void **state)
{
    struct pair p;
    size_t fresh, idle, after_one, after_many;
    struct h2_options opts = {
        .cb = {.on_request = on_request, .on_stream_close = on_stream_close, .send = server_send},
        .arg = &p,
    };
    struct h2_session *unused;

    (void)state;
    memset(&p, 0, sizeof p);
    assert_int_equal(h2_session_new(&opts, &unused), H2_OK);
    fresh = h2_session_memory(unused);
    h2_session_free(unused);
    pair_open(&p, 0, 0);
    p.on_request = answer_now;
    idle = h2_session_memory(p.server);
    client_request(&p, "POST", "/machine/register", "{\"a\":1}", 7);
    pump(&p);
    reset_responses(&p);
    after_one = h2_session_memory(p.server);
    for (int i = 0; i < 5; i++) {
        client_request(&p, "POST", "/machine/register", "{\"a\":1}", 7);
        pump(&p);
        reset_responses(&p);
    }
    after_many = h2_session_memory(p.server);
    print_message("h2 session heap: %zu bytes new, %zu idle after handshake, %zu after a "
                  "request, %zu after six\n",
                  fresh, idle, after_one, after_many);
    assert_true(fresh > 0 && fresh < 32 * 1024);
    assert_true(idle < 32 * 1024);
    assert_int_equal(after_many, after_one);
    pair_close(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(get_and_post_get_their_responses),
        cmocka_unit_test(concurrent_streams_answered_later_out_of_order),
        cmocka_unit_test(long_stream_gets_chunks_in_order),
        cmocka_unit_test(large_stream_respects_client_window),
        cmocka_unit_test(body_over_the_limit_gets_413),
        cmocka_unit_test(headers_over_the_limit_get_431),
        cmocka_unit_test(client_reset_closes_long_streams_once),
        cmocka_unit_test(callbacks_may_answer_other_streams),
        cmocka_unit_test(garbage_instead_of_preface_is_fatal),
        cmocka_unit_test(free_reports_every_open_stream),
        cmocka_unit_test(ping_is_acked),
        cmocka_unit_test(settings_are_advertised),
        cmocka_unit_test(goaway_ends_the_session),
        cmocka_unit_test(memory_returns_to_idle),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
