/* server/control/h2.c: the HTTP/2 server inside a Noise connection, on
 * nghttp2's in-memory interface (mem_recv for input, mem_send for output).
 *
 * nghttp2 calls back while it parses or serializes; those callbacks only
 * record what happened on the stream (a header, a body chunk, END_STREAM,
 * close) and queue the stream as an event. The user's callbacks run later,
 * from pump(), once nghttp2 has returned: so the user may answer or append to
 * any stream from on_request and on_stream_close without re-entering
 * nghttp2, and the send loop runs only at the outermost level. A stream
 * closed by nghttp2 stays allocated, marked closed (calls on it return
 * H2_CLOSED), until its on_stream_close has been delivered. Requests over a
 * cap (body: 413, headers: 431) are answered here and never reach the user.
 *
 * Every allocation of the session, nghttp2's included (through an nghttp2_mem
 * allocator), is counted for h2_session_memory(). */
#include "server/control/h2.h"

#include <assert.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#define DEFAULT_MAX_BODY_BYTES (1024 * 1024)
#define DEFAULT_MAX_STREAMS    100
#define INITIAL_WINDOW_BYTES   (1024 * 1024)
#define MAX_HEADER_BYTES       (64 * 1024)
#define DEFLATE_TABLE_BYTES    1024
#define SEND_COALESCE_BYTES    16384

enum stream_state {
    STREAM_RECEIVING, /* request headers and body arriving */
    STREAM_REFUSED,   /* answered by us (413, 431) or reset: never reaches on_request */
    STREAM_WAITING,   /* delivered to on_request, not answered yet */
    STREAM_ANSWERED,  /* response submitted: whole (ended) or long */
};

struct h2_stream {
    struct h2_session *s;
    struct h2_stream *prev, *next; /* every stream of the session */
    struct h2_stream *event_next;  /* in the session's event queue while queued */
    int32_t id;
    enum stream_state state;
    bool ready;     /* the request is complete: deliver it */
    bool closed;    /* nghttp2 is done with the stream: report it */
    bool queued;    /* in the event queue */
    bool head_full; /* the request headers went past MAX_HEADER_BYTES */
    bool ended;     /* no more bytes will be appended */
    bool deferred;  /* the data provider returned NGHTTP2_ERR_DEFERRED */
    bool head_only; /* a HEAD request: its answer carries no body */
    void *user;
    /* The request while it arrives: "name\0value\0" pairs, pseudo-headers
     * included, and the body; both freed once delivered. */
    char *head;
    size_t head_len;
    size_t head_cap;
    size_t n_headers; /* regular ones */
    uint8_t *body;
    size_t body_len;
    size_t body_cap;
    /* Response bytes not yet handed to nghttp2, from out_pos. */
    uint8_t *out;
    size_t out_pos;
    size_t out_len;
    size_t out_cap;
};

struct h2_session {
    nghttp2_session *ng;
    nghttp2_mem mem; /* counts into heap_bytes */
    struct h2_callbacks cb;
    void *arg;
    size_t max_body;
    struct h2_stream *streams;
    struct h2_stream *events_head, *events_tail;
    size_t heap_bytes;
    int depth;    /* > 0 while pump() runs: nested sends are left to it */
    bool fatal;   /* the connection is broken */
    bool nomem;   /* a callback failed for lack of memory */
    bool freeing; /* inside h2_session_free */
};

const char *h2_strerror(int code)
{
    switch (code) {
#define X(c, msg)                                                                                  \
    case c:                                                                                        \
        return msg;
        H2_CODES(X)
#undef X
    }
    return "unknown error";
}

/* Counting allocator, used by nghttp2 (mem_user_data is the session) and by
 * this file. malloc_usable_size: free() is not told the size. */

static void *count_malloc(size_t size, void *ud)
{
    struct h2_session *s = ud;
    void *p = malloc(size);

    if (p != NULL)
        s->heap_bytes += malloc_usable_size(p);
    return p;
}

static void count_free(void *p, void *ud)
{
    struct h2_session *s = ud;

    if (p == NULL)
        return;
    s->heap_bytes -= malloc_usable_size(p);
    free(p);
}

static void *count_calloc(size_t n, size_t size, void *ud)
{
    struct h2_session *s = ud;
    void *p = calloc(n, size);

    if (p != NULL)
        s->heap_bytes += malloc_usable_size(p);
    return p;
}

static void *count_realloc(void *p, size_t size, void *ud)
{
    struct h2_session *s = ud;
    size_t before = p != NULL ? malloc_usable_size(p) : 0;
    void *q;

    if (size == 0) {
        count_free(p, ud);
        return NULL;
    }
    q = realloc(p, size);
    if (q == NULL)
        return NULL;
    s->heap_bytes = s->heap_bytes - before + malloc_usable_size(q);
    return q;
}

/* Grows the byte buffer *buf to hold at least need bytes: doubling (linear
 * time for a body received in chunks), but never more than need at once (a
 * whole response body gets one exact allocation). */
static int reserve(struct h2_session *s, void *buf, size_t *cap, size_t need)
{
    void **bufp = buf;
    size_t next = *cap < 128 ? 256 : *cap * 2;
    void *bigger;

    if (need <= *cap)
        return 0;
    if (next < need)
        next = need;
    bigger = count_realloc(*bufp, next, s);
    if (bigger == NULL)
        return -1;
    *bufp = bigger;
    *cap = next;
    return 0;
}

static void free_request(struct h2_session *s, struct h2_stream *st)
{
    count_free(st->head, s);
    count_free(st->body, s);
    st->head = NULL;
    st->body = NULL;
    st->head_len = st->head_cap = st->n_headers = 0;
    st->body_len = st->body_cap = 0;
}

static void stream_free(struct h2_session *s, struct h2_stream *st)
{
    if (st->prev != NULL)
        st->prev->next = st->next;
    else
        s->streams = st->next;
    if (st->next != NULL)
        st->next->prev = st->prev;
    free_request(s, st);
    count_free(st->out, s);
    count_free(st, s);
}

static void enqueue(struct h2_session *s, struct h2_stream *st)
{
    if (st->queued)
        return;
    st->queued = true;
    st->event_next = NULL;
    if (s->events_tail != NULL)
        s->events_tail->event_next = st;
    else
        s->events_head = st;
    s->events_tail = st;
}

static struct h2_stream *dequeue(struct h2_session *s)
{
    struct h2_stream *st = s->events_head;

    if (st == NULL)
        return NULL;
    s->events_head = st->event_next;
    if (s->events_head == NULL)
        s->events_tail = NULL;
    st->queued = false;
    return st;
}

/* Response queue: bytes appended at out_pos + out_len, taken from out_pos. */

static int out_append(struct h2_session *s, struct h2_stream *st, const void *data, size_t len)
{
    /* Slide the unsent bytes to the front only when most of the buffer is
     * already sent, so a long queue is not moved on every append. */
    if (st->out_pos > 0 && st->out_pos >= st->out_len &&
        st->out_pos + st->out_len + len > st->out_cap) {
        memmove(st->out, st->out + st->out_pos, st->out_len);
        st->out_pos = 0;
    }
    if (reserve(s, &st->out, &st->out_cap, st->out_pos + st->out_len + len) != 0)
        return H2_NOMEM;
    memcpy(st->out + st->out_pos + st->out_len, data, len);
    st->out_len += len;
    return H2_OK;
}

/* Drained: an idle long poll should not hold its largest burst. */
static void out_release(struct h2_session *s, struct h2_stream *st)
{
    count_free(st->out, s);
    st->out = NULL;
    st->out_pos = st->out_len = st->out_cap = 0;
}

static ssize_t read_out(nghttp2_session *ng, int32_t stream_id, uint8_t *buf, size_t length,
                        uint32_t *data_flags, nghttp2_data_source *source, void *ud)
{
    struct h2_stream *st = source->ptr;
    size_t n = length < st->out_len ? length : st->out_len;

    (void)ng;
    (void)stream_id;
    (void)ud;
    if (n > 0) {
        memcpy(buf, st->out + st->out_pos, n);
        st->out_pos += n;
        st->out_len -= n;
    }
    if (st->out_len > 0)
        return (ssize_t)n;
    out_release(st->s, st);
    if (st->ended) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        return (ssize_t)n;
    }
    if (n > 0)
        return (ssize_t)n;
    st->deferred = true;
    return NGHTTP2_ERR_DEFERRED;
}

static int code_of(int ng_error)
{
    return ng_error == NGHTTP2_ERR_NOMEM ? H2_NOMEM : H2_PROTOCOL;
}

/* The connection is broken; a callback's lack of memory is the cause if any. */
static int fail(struct h2_session *s, int code)
{
    s->fatal = true;
    return s->nomem ? H2_NOMEM : code;
}

/* HEADERS with ":status" (and content-type), then DATA from the stream's
 * queue when with_body, else END_STREAM on the HEADERS. */
static int submit(struct h2_session *s, struct h2_stream *st, int status, const char *content_type,
                  bool with_body)
{
    char code[4];
    nghttp2_nv nv[2] = {
        {(uint8_t *)":status", (uint8_t *)code, 7, 3, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"content-type", (uint8_t *)content_type, 12,
         content_type != NULL ? strlen(content_type) : 0, NGHTTP2_NV_FLAG_NONE},
    };
    nghttp2_data_provider body = {.source.ptr = st, .read_callback = read_out};
    int rv;

    assert(status >= 100 && status <= 999);
    snprintf(code, sizeof code, "%d", status);
    rv = nghttp2_submit_response(s->ng, st->id, nv, content_type != NULL ? 2 : 1,
                                 with_body ? &body : NULL);
    return rv == 0 ? H2_OK : code_of(rv);
}

/* Answers a request that will not reach on_request (body or headers too
 * large); whatever else the client sends on it is ignored. */
static int refuse(struct h2_session *s, struct h2_stream *st, int status, const char *why)
{
    st->state = STREAM_REFUSED;
    free_request(s, st);
    st->ended = true;
    if (out_append(s, st, why, strlen(why)) != H2_OK ||
        submit(s, st, status, "text/plain", true) != H2_OK) {
        s->nomem = true;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

/* nghttp2 callbacks: record, never call the user. */

static struct h2_stream *stream_of(struct h2_session *s, int32_t stream_id)
{
    return stream_id != 0 ? nghttp2_session_get_stream_user_data(s->ng, stream_id) : NULL;
}

static bool is_request_head(const nghttp2_frame *frame)
{
    return frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST;
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
    struct h2_session *s = ud;
    struct h2_stream *st;

    if (!is_request_head(frame))
        return 0;
    st = count_calloc(1, sizeof *st, s);
    if (st == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets this stream only */
    st->s = s;
    st->id = frame->hd.stream_id;
    if (nghttp2_session_set_stream_user_data(ng, st->id, st) != 0) {
        count_free(st, s);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    st->next = s->streams;
    if (s->streams != NULL)
        s->streams->prev = st;
    s->streams = st;
    return 0;
}

static int head_append(struct h2_session *s, struct h2_stream *st, const uint8_t *text, size_t len)
{
    if (reserve(s, &st->head, &st->head_cap, st->head_len + len + 1) != 0)
        return -1;
    memcpy(st->head + st->head_len, text, len);
    st->head_len += len;
    st->head[st->head_len++] = '\0';
    return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    struct h2_session *s = ud;
    struct h2_stream *st;

    (void)ng;
    (void)flags;
    if (!is_request_head(frame))
        return 0; /* trailers carry nothing we use */
    st = stream_of(s, frame->hd.stream_id);
    if (st == NULL || st->state != STREAM_RECEIVING || st->head_full)
        return 0;
    if (namelen + valuelen + 2 > MAX_HEADER_BYTES - st->head_len) {
        /* Answered 431 once the header block ends (on_frame_recv). */
        st->head_full = true;
        free_request(s, st);
        return 0;
    }
    /* deliver() splits the block at NULs. nghttp2's field validation
     * already refuses them; this keeps that invariant local. */
    if (memchr(name, '\0', namelen) != NULL || memchr(value, '\0', valuelen) != NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (head_append(s, st, name, namelen) != 0 || head_append(s, st, value, valuelen) != 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets this stream only */
    if (name[0] != ':')
        st->n_headers++;
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t stream_id, const uint8_t *data,
                         size_t len, void *ud)
{
    struct h2_session *s = ud;
    struct h2_stream *st = stream_of(s, stream_id);

    (void)ng;
    (void)flags;
    if (st == NULL || st->state != STREAM_RECEIVING)
        return 0;
    if (len > s->max_body - st->body_len)
        return refuse(s, st, 413, "request body too large\n");
    /* +1: the NUL after the body. */
    if (reserve(s, &st->body, &st->body_cap, st->body_len + len + 1) != 0) {
        st->state = STREAM_REFUSED;
        free_request(s, st);
        if (nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_INTERNAL_ERROR) !=
            0) {
            s->nomem = true;
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        return 0;
    }
    memcpy(st->body + st->body_len, data, len);
    st->body_len += len;
    st->body[st->body_len] = '\0';
    return 0;
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
    struct h2_session *s = ud;
    struct h2_stream *st = stream_of(s, frame->hd.stream_id);

    (void)ng;
    if (st == NULL || st->state != STREAM_RECEIVING)
        return 0;
    if (is_request_head(frame) && st->head_full)
        return refuse(s, st, 431, "request headers too large\n");
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        st->ready = true;
        enqueue(s, st);
    }
    return 0;
}

/* A response can only end before its request on a refused stream: tell the
 * client to stop sending, as RFC 9113 section 8.1 allows, instead of keeping
 * the stream (and a concurrency slot) until its upload is over. */
static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
    struct h2_session *s = ud;
    int32_t id = frame->hd.stream_id;

    if (id == 0 || !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM) ||
        (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) ||
        nghttp2_session_get_stream_remote_close(ng, id) != 0)
        return 0;
    if (nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_NO_ERROR) != 0) {
        s->nomem = true;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t stream_id, uint32_t error_code, void *ud)
{
    struct h2_session *s = ud;
    struct h2_stream *st = stream_of(s, stream_id);

    (void)ng;
    (void)error_code;
    if (st == NULL)
        return 0;
    st->closed = true;
    enqueue(s, st);
    return 0;
}

/* User callbacks, from pump(). */

/* Non-zero: out of memory even to reset the stream (fatal). */
static int deliver(struct h2_session *s, struct h2_stream *st)
{
    struct h2_request req = {
        .method = "", .path = "", .authority = "", .body = (const uint8_t *)""};
    struct h2_header *headers = NULL;
    size_t n = 0;

    if (st->n_headers > 0) {
        headers = count_malloc(st->n_headers * sizeof *headers, s);
        if (headers == NULL) {
            st->state = STREAM_REFUSED;
            free_request(s, st);
            return nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id,
                                             NGHTTP2_INTERNAL_ERROR) == 0
                       ? H2_OK
                       : H2_NOMEM;
        }
    }
    for (size_t pos = 0; pos < st->head_len;) {
        const char *name = st->head + pos;
        const char *value = name + strlen(name) + 1;

        pos = (size_t)(value - st->head) + strlen(value) + 1;
        if (strcmp(name, ":method") == 0)
            req.method = value;
        else if (strcmp(name, ":path") == 0)
            req.path = value;
        else if (strcmp(name, ":authority") == 0)
            req.authority = value;
        else if (name[0] != ':')
            headers[n++] = (struct h2_header){.name = name, .value = value};
    }
    req.headers = headers;
    req.n_headers = n;
    if (st->body != NULL) {
        req.body = st->body;
        req.body_len = st->body_len;
    }
    st->head_only = strcmp(req.method, "HEAD") == 0;
    st->state = STREAM_WAITING;
    s->cb.on_request(s->arg, st, &req);
    count_free(headers, s);
    free_request(s, st);
    return H2_OK;
}

static int run_events(struct h2_session *s)
{
    struct h2_stream *st;

    while ((st = dequeue(s)) != NULL) {
        if (st->closed) {
            if (st->state >= STREAM_WAITING)
                s->cb.on_stream_close(s->arg, st, st->user);
            stream_free(s, st);
        } else if (st->ready) {
            st->ready = false;
            if (deliver(s, st) != H2_OK)
                return fail(s, H2_NOMEM);
        }
    }
    return H2_OK;
}

static int emit(struct h2_session *s, const uint8_t *data, size_t len)
{
    if (len > 0 && s->cb.send(s->arg, data, len) != 0)
        return fail(s, H2_CLOSED);
    return H2_OK;
}

/* Hands everything nghttp2 has to send to the send callback. Small frames
 * are gathered into one call (a HEADERS and its short DATA become one Noise
 * record); a frame too big for the buffer goes out on its own. */
static int send_all(struct h2_session *s)
{
    uint8_t buf[SEND_COALESCE_BYTES];
    size_t used = 0;

    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(s->ng, &data);
        int rv;

        if (n < 0)
            return fail(s, code_of((int)n));
        if (n == 0)
            break;
        if (used + (size_t)n > sizeof buf) {
            if ((rv = emit(s, buf, used)) != H2_OK)
                return rv;
            used = 0;
        }
        if ((size_t)n >= sizeof buf) {
            if ((rv = emit(s, data, (size_t)n)) != H2_OK)
                return rv;
        } else {
            memcpy(buf + used, data, (size_t)n);
            used += (size_t)n;
        }
    }
    return emit(s, buf, used);
}

/* Delivers events and sends until neither produces more (sending can close
 * streams, and their callbacks can answer others). Nested calls, from inside
 * a user callback, return at once: the outermost one does the work. */
static int pump(struct h2_session *s)
{
    int rv;

    if (s->depth > 0)
        return H2_OK;
    if (s->fatal)
        return H2_CLOSED;
    s->depth++;
    do {
        rv = run_events(s);
        if (rv == H2_OK)
            rv = send_all(s);
    } while (rv == H2_OK && s->events_head != NULL);
    s->depth--;
    return rv;
}

static nghttp2_session_callbacks *make_callbacks(void)
{
    nghttp2_session_callbacks *cbs;

    if (nghttp2_session_callbacks_new(&cbs) != 0)
        return NULL;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    return cbs;
}

static nghttp2_option *make_option(void)
{
    nghttp2_option *opt;

    if (nghttp2_option_new(&opt) != 0)
        return NULL;
    /* Our response headers are :status and a few content-types: a small
     * HPACK encoder table holds them all, and bounds that table per
     * connection whatever table size the client allows. */
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, DEFLATE_TABLE_BYTES);
    return opt;
}

static int submit_settings(struct h2_session *s, uint32_t max_streams)
{
    const nghttp2_settings_entry settings[] = {
        /* The client multiplexes the long poll and every RPC on one
         * connection (spec 6.1): allow at least 100. */
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, max_streams},
        /* A whole request body (1 MiB cap) can arrive without waiting for a
         * WINDOW_UPDATE; the window is a promise, not an allocation. */
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, INITIAL_WINDOW_BYTES},
        /* Tells the client the header cap we enforce with 431. */
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_BYTES},
        /* No RFC 7540 priorities (streams are few and mostly small): nghttp2
         * then keeps no priority tree, so neither closed streams nor idle
         * ones created by PRIORITY frames stay allocated. */
        {NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1},
    };
    int rv = nghttp2_submit_settings(s->ng, NGHTTP2_FLAG_NONE, settings,
                                     sizeof settings / sizeof settings[0]);

    /* The connection window starts at 64 KiB whatever SETTINGS say: raise it
     * too, or concurrent uploads share 64 KiB. */
    if (rv == 0)
        rv = nghttp2_session_set_local_window_size(s->ng, NGHTTP2_FLAG_NONE, 0,
                                                   INITIAL_WINDOW_BYTES);
    return rv == 0 ? H2_OK : code_of(rv);
}

static int make_nghttp2(struct h2_session *s, uint32_t max_streams)
{
    nghttp2_session_callbacks *cbs = make_callbacks();
    nghttp2_option *opt = make_option();
    int rv = H2_NOMEM;

    if (cbs != NULL && opt != NULL &&
        nghttp2_session_server_new3(&s->ng, cbs, s, opt, &s->mem) == 0)
        rv = submit_settings(s, max_streams);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
    return rv;
}

int h2_session_new(const struct h2_options *opts, struct h2_session **out)
{
    struct h2_session *s = calloc(1, sizeof *s);
    int rv;

    *out = NULL;
    if (s == NULL)
        return H2_NOMEM;
    s->heap_bytes = malloc_usable_size(s);
    s->mem = (nghttp2_mem){s, count_malloc, count_free, count_calloc, count_realloc};
    s->cb = opts->cb;
    s->arg = opts->arg;
    s->max_body = opts->max_body_bytes != 0 ? opts->max_body_bytes : DEFAULT_MAX_BODY_BYTES;
    rv = make_nghttp2(s, opts->max_concurrent_streams != 0 ? opts->max_concurrent_streams
                                                           : DEFAULT_MAX_STREAMS);
    if (rv != H2_OK) {
        nghttp2_session_del(s->ng);
        free(s);
        return rv;
    }
    *out = s;
    return H2_OK;
}

void h2_session_free(struct h2_session *s)
{
    if (s == NULL)
        return;
    assert(s->depth == 0);
    /* nghttp2 first (it calls no callback while freeing), so that calls
     * made from the on_stream_close below find every stream closed. */
    s->freeing = true;
    nghttp2_session_del(s->ng);
    s->ng = NULL;
    s->events_head = s->events_tail = NULL;
    for (struct h2_stream *st = s->streams; st != NULL; st = st->next)
        st->closed = true;
    while (s->streams != NULL) {
        struct h2_stream *st = s->streams;

        if (st->state >= STREAM_WAITING)
            s->cb.on_stream_close(s->arg, st, st->user);
        stream_free(s, st);
    }
    free(s);
}

int h2_session_feed(struct h2_session *s, const uint8_t *data, size_t len)
{
    ssize_t n;

    if (s->depth > 0 || s->freeing)
        return H2_STATE;
    if (s->fatal)
        return H2_CLOSED;
    n = nghttp2_session_mem_recv(s->ng, data, len);
    if (n < 0)
        return fail(s, code_of((int)n));
    return pump(s);
}

int h2_session_flush(struct h2_session *s)
{
    if (s->freeing)
        return H2_STATE;
    return pump(s);
}

bool h2_session_is_done(const struct h2_session *s)
{
    return s->fatal || (!nghttp2_session_want_read(s->ng) && !nghttp2_session_want_write(s->ng));
}

int h2_session_ping(struct h2_session *s)
{
    int rv;

    if (s->fatal || s->freeing)
        return H2_CLOSED;
    rv = nghttp2_submit_ping(s->ng, NGHTTP2_FLAG_NONE, NULL);
    return rv == 0 ? pump(s) : code_of(rv);
}

int h2_session_goaway(struct h2_session *s)
{
    int rv;

    if (s->fatal || s->freeing)
        return H2_CLOSED;
    rv = nghttp2_submit_goaway(s->ng, NGHTTP2_FLAG_NONE,
                               nghttp2_session_get_last_proc_stream_id(s->ng), NGHTTP2_NO_ERROR,
                               NULL, 0);
    return rv == 0 ? pump(s) : code_of(rv);
}

size_t h2_session_memory(const struct h2_session *s)
{
    return s->heap_bytes;
}

void h2_stream_set_user(struct h2_stream *st, void *user)
{
    st->user = user;
}

void *h2_stream_user(const struct h2_stream *st)
{
    return st->user;
}

/* H2_OK if the stream may get a response now. */
static int check_unanswered(const struct h2_session *s, const struct h2_stream *st)
{
    if (s->fatal || st->closed)
        return H2_CLOSED;
    return st->state == STREAM_WAITING ? H2_OK : H2_STATE;
}

/* H2_OK if the stream is a started long response not yet ended. */
static int check_open(const struct h2_session *s, const struct h2_stream *st)
{
    if (s->fatal || st->closed)
        return H2_CLOSED;
    return st->state == STREAM_ANSWERED && !st->ended ? H2_OK : H2_STATE;
}

static int resume(struct h2_session *s, struct h2_stream *st)
{
    int rv;

    if (!st->deferred)
        return H2_OK;
    st->deferred = false;
    rv = nghttp2_session_resume_data(s->ng, st->id);
    return rv == 0 ? H2_OK : code_of(rv);
}

int h2_respond(struct h2_session *s, struct h2_stream *st, int status, const char *content_type,
               const void *body, size_t len)
{
    int rv = check_unanswered(s, st);

    if (rv != H2_OK)
        return rv;
    if (st->head_only)
        len = 0;
    if (len > 0 && out_append(s, st, body, len) != H2_OK)
        return H2_NOMEM;
    st->ended = true;
    rv = submit(s, st, status, content_type, len > 0);
    if (rv != H2_OK) {
        out_release(s, st);
        st->ended = false;
        return rv;
    }
    st->state = STREAM_ANSWERED;
    return H2_OK;
}

int h2_stream_start(struct h2_session *s, struct h2_stream *st, int status,
                    const char *content_type)
{
    int rv = check_unanswered(s, st);

    if (rv != H2_OK)
        return rv;
    rv = submit(s, st, status, content_type, !st->head_only);
    if (rv == H2_OK) {
        st->state = STREAM_ANSWERED;
        st->ended = st->head_only;
    }
    return rv;
}

int h2_stream_write(struct h2_session *s, struct h2_stream *st, const void *data, size_t len)
{
    int rv = check_open(s, st);

    if (rv != H2_OK || len == 0)
        return rv;
    if (out_append(s, st, data, len) != H2_OK)
        return H2_NOMEM;
    return resume(s, st);
}

int h2_stream_end(struct h2_session *s, struct h2_stream *st)
{
    int rv = check_open(s, st);

    if (rv != H2_OK)
        return rv;
    st->ended = true;
    return resume(s, st);
}

size_t h2_stream_pending(const struct h2_stream *st)
{
    return st->out_len;
}
