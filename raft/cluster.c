/* raft/cluster.c: one replica. It owns the libraft instance with raft_uv's
 * disk log and TCP transport, the FSM over the caller's store, and three loop
 * handles: a 50 ms timer (retries, deadlines, role polling), a check handle
 * (after each iteration's I/O: commits the FSM's batch, then leader changes
 * and followers waiting to have applied an index) and the idle handle ops.c
 * answers callers from (after committing whatever batch is still open).
 *
 * Happy path: cluster_new -> cluster_start (loads snapshot and log) -> leader
 * known -> the replica makes sure its own address record is in the store, so
 * followers can always find the leader's client listener for forwarding.
 * Close: cluster_close stops the handles' work, raft_close() fails libraft's
 * requests, every pending request is answered CLUSTER_SHUTDOWN; once libraft
 * has closed, every answer is delivered and no transport request is in
 * flight, the handles close and the last close callback frees. */
#include "raft/cluster.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "raft/cluster_internal.h"

#define DEFAULT_ELECTION_TIMEOUT_MS  1000u
#define DEFAULT_HEARTBEAT_TIMEOUT_MS 100u
#define DEFAULT_SNAPSHOT_TRAILING    8192u
#define DEFAULT_SUBMIT_TIMEOUT_MS    10000u
#define TICK_MS                      50u
#define SELF_RECORD_RETRY_MS         1000u
/* A snapshot dumps the whole state on the loop thread (libraft 0.22.1 calls
 * the FSM synchronously), then libraft compresses and writes all of it: for
 * 150k users, 21 MB and an ~85 ms stall on the reference 2-core box. Every
 * 64k entries that is ~1 us per entry; every 4k entries it was ~20 us per
 * entry and a stall every second under load. Meanwhile libraft keeps the log
 * since the last snapshot in memory: a few hundred bytes per entry. */
#define DEFAULT_SNAPSHOT_THRESHOLD 65536u
/* libraft's default (32) caps the entries sent to a follower and not yet
 * acknowledged: under load the leader then idles a round trip per 32 entries
 * and sends a heartbeat per proposal instead. Entries are not copied per
 * message, so a higher cap costs no memory of its own. */
#define MAX_INFLIGHT_ENTRIES 1024u

const char *cluster_strerror(int code)
{
    switch (code) {
#define X(c, msg)                                                                                  \
    case c:                                                                                        \
        return msg;
        CLUSTER_CODES(X)
#undef X
    default:
        return "unknown error";
    }
}

const char *cluster_role_name(enum cluster_role role)
{
    switch (role) {
    case CLUSTER_ROLE_FOLLOWER:
        return "follower";
    case CLUSTER_ROLE_CANDIDATE:
        return "candidate";
    case CLUSTER_ROLE_LEADER:
        return "leader";
    case CLUSTER_ROLE_UNAVAILABLE:
        return "unavailable";
    }
    return "unknown";
}

void cluster_logf(cluster_log_cb log, void *arg, enum cluster_log_level level, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    if (log == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log(arg, level, msg);
}

#define CLOG(c, level, ...) cluster_logf((c)->opts.log, (c)->opts.log_arg, level, __VA_ARGS__)

int cluster_code_from_raft(int rv)
{
    switch (rv) {
    case 0:
        return CLUSTER_OK;
    case RAFT_NOMEM:
        return CLUSTER_NOMEM;
    case RAFT_NOTLEADER:
        return CLUSTER_NOLEADER;
    case RAFT_LEADERSHIPLOST:
        return CLUSTER_UNKNOWN;
    case RAFT_SHUTDOWN:
    case RAFT_CANCELED:
        return CLUSTER_SHUTDOWN;
    case RAFT_CANTBOOTSTRAP:
    case RAFT_DUPLICATEID:
    case RAFT_DUPLICATEADDRESS:
        return CLUSTER_EXISTS;
    case RAFT_CANTCHANGE:
    case RAFT_BUSY:
        return CLUSTER_BUSY;
    case RAFT_TOOBIG:
        return CLUSTER_TOOBIG;
    case RAFT_NOCONNECTION:
        return CLUSTER_TRANSPORT;
    case RAFT_BADID:
    case RAFT_NOTFOUND:
        return CLUSTER_NOTFOUND;
    case RAFT_IOERR:
    case RAFT_NOSPACE:
    case RAFT_CORRUPT:
        return CLUSTER_IO;
    case RAFT_BADROLE:
    case RAFT_MALFORMED:
    case RAFT_INVALID:
    case RAFT_NAMETOOLONG:
        return CLUSTER_INVALID;
    default:
        return CLUSTER_INTERNAL;
    }
}

static void set_errmsg(char *errmsg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_errmsg(char *errmsg, const char *fmt, ...)
{
    va_list ap;

    if (errmsg == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(errmsg, 256, fmt, ap);
    va_end(ap);
}

uint64_t cluster_election_timeout_ms(const struct cluster *c)
{
    return c->opts.election_timeout_ms != 0 ? c->opts.election_timeout_ms
                                            : DEFAULT_ELECTION_TIMEOUT_MS;
}

uint64_t cluster_submit_timeout_ms(const struct cluster *c)
{
    return c->opts.submit_timeout_ms != 0 ? c->opts.submit_timeout_ms : DEFAULT_SUBMIT_TIMEOUT_MS;
}

static uint64_t wall_clock_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* mkdir -p, mode 0700: the log is the replica's durable state. */
static int make_dirs(const char *path)
{
    char buf[4096];
    size_t len = strlen(path);

    if (len == 0 || len >= sizeof buf)
        return ENAMETOOLONG;
    memcpy(buf, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        buf[i] = '\0';
        if (mkdir(buf, 0700) != 0 && errno != EEXIST)
            return errno;
        buf[i] = i < len ? '/' : '\0';
    }
    return 0;
}

static bool address_fits(const char *address)
{
    return address != NULL && strlen(address) < 64;
}

static int check_options(const struct cluster_options *opts, char *errmsg)
{
    if (opts == NULL || opts->id == 0) {
        set_errmsg(errmsg, "replica id must be > 0");
        return CLUSTER_INVALID;
    }
    if (!address_fits(opts->raft_address) || opts->raft_address[0] == '\0') {
        set_errmsg(errmsg, "raft address must be \"host:port\" (at most 63 bytes)");
        return CLUSTER_INVALID;
    }
    if (opts->http_address != NULL && !address_fits(opts->http_address)) {
        set_errmsg(errmsg, "http address is longer than 63 bytes");
        return CLUSTER_INVALID;
    }
    if (opts->raft_dir == NULL || opts->raft_dir[0] == '\0') {
        set_errmsg(errmsg, "raft directory is required");
        return CLUSTER_INVALID;
    }
    return 0;
}

/* ---- bootstrap ---- */

int cluster_bootstrap(const struct cluster_options *opts, const struct cluster_member *members,
                      size_t n_members, char *errmsg)
{
    struct raft_uv_transport transport = {0};
    struct raft_configuration conf;
    struct raft_fsm fsm = {0};
    struct raft_io io = {0};
    struct raft raft = {0};
    uv_loop_t loop;
    int code = CLUSTER_OK;
    int rv;

    rv = check_options(opts, errmsg);
    if (rv != 0)
        return rv;
    if (members == NULL || n_members == 0) {
        set_errmsg(errmsg, "bootstrap needs at least one member");
        return CLUSTER_INVALID;
    }
    rv = make_dirs(opts->raft_dir);
    if (rv != 0) {
        set_errmsg(errmsg, "creating %s: %s", opts->raft_dir, strerror(rv));
        return CLUSTER_IO;
    }
    if (uv_loop_init(&loop) != 0) {
        set_errmsg(errmsg, "cannot create a loop");
        return CLUSTER_INTERNAL;
    }
    raft_configuration_init(&conf);
    for (size_t i = 0; i < n_members; i++) {
        rv = raft_configuration_add(&conf, members[i].id, members[i].raft_address,
                                    members[i].is_voter ? RAFT_VOTER : RAFT_STANDBY);
        if (rv != 0) {
            set_errmsg(errmsg, "member %llu: %s", (unsigned long long)members[i].id,
                       raft_strerror(rv));
            code = rv == RAFT_NOMEM ? CLUSTER_NOMEM : CLUSTER_INVALID;
            goto err_after_conf;
        }
    }
    transport.version = 1; /* raft_uv_tcp_init refuses an unset version */
    rv = raft_uv_tcp_init(&transport, &loop);
    if (rv != 0) {
        set_errmsg(errmsg, "raft transport: %s", transport.errmsg);
        code = cluster_code_from_raft(rv);
        goto err_after_conf;
    }
    rv = raft_uv_init(&io, &loop, opts->raft_dir, &transport);
    if (rv != 0) {
        set_errmsg(errmsg, "raft io: %s", io.errmsg);
        code = cluster_code_from_raft(rv);
        goto err_after_transport;
    }
    fsm.version = 2; /* never used: bootstrap writes the log, it applies nothing */
    rv = raft_init(&raft, &io, &fsm, opts->id, opts->raft_address);
    if (rv != 0) {
        set_errmsg(errmsg, "raft init: %s", raft_errmsg(&raft));
        code = cluster_code_from_raft(rv);
        goto err_after_io;
    }
    rv = raft_bootstrap(&raft, &conf);
    if (rv != 0) {
        code = rv == RAFT_CANTBOOTSTRAP ? CLUSTER_EXISTS : cluster_code_from_raft(rv);
        set_errmsg(errmsg, "%s: %s", opts->raft_dir,
                   code == CLUSTER_EXISTS ? "already holds raft state" : raft_errmsg(&raft));
    }
    raft_close(&raft, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
err_after_io:
    raft_uv_close(&io);
err_after_transport:
    raft_uv_tcp_close(&transport);
err_after_conf:
    raft_configuration_close(&conf);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return code;
}

/* ---- libraft 0.22.1: InstallSnapshot while a snapshot is being taken ----
 *
 * When an InstallSnapshot arrives while this replica is writing a snapshot of
 * its own, libraft parks it and, once the write completes, starts it through
 * a pointer it has just cleared (takeSnapshotCb in src/legacy.c: it sets
 * snapshot_pending to NULL, then reads it): the process crashes. And an
 * InstallSnapshot arriving while one is being installed is ignored without
 * freeing its data. Both happen to a replica catching up after a restart.
 * raft_uv's receive callback is wrapped: the first case is held back until
 * the snapshot write has completed (a delayed message, which Raft tolerates),
 * the second is dropped and freed (a lost message: the leader retries). */

static void install_snapshot_free(struct raft_message *m)
{
    raft_configuration_close(&m->install_snapshot.conf);
    raft_free(m->install_snapshot.data.base);
}

static void held_drop(struct cluster *c)
{
    if (!c->has_held)
        return;
    install_snapshot_free(&c->held);
    free(c->held_address);
    c->held_address = NULL;
    c->has_held = false;
}

static void io_on_recv(struct raft_io *io, struct raft_message *m)
{
    struct raft *r = io->data;
    struct cluster *c = r->data;

    if (m->type == RAFT_INSTALL_SNAPSHOT && !c->is_closing) {
        if (r->snapshot.installing) {
            install_snapshot_free(m);
            return;
        }
        if (r->legacy.snapshot_taking) {
            char *address = strdup(m->server_address != NULL ? m->server_address : "");

            held_drop(c); /* only the newest one matters */
            if (address == NULL) {
                install_snapshot_free(m);
                return;
            }
            c->held = *m;
            c->held.server_address = address;
            c->held_address = address;
            c->has_held = true;
            CLOG(c, CLUSTER_LOG_DEBUG, "snapshot install held until own snapshot is written");
            return;
        }
    }
    c->raft_recv(io, m);
}

static void held_maybe_deliver(struct cluster *c)
{
    struct raft_message m;
    char *address;

    if (!c->has_held || c->raft.legacy.snapshot_taking)
        return;
    m = c->held;
    address = c->held_address;
    c->has_held = false;
    c->held_address = NULL;
    io_on_recv(&c->io, &m);
    free(address);
}

static int io_start(struct raft_io *io, unsigned msecs, raft_io_tick_cb tick, raft_io_recv_cb recv)
{
    struct raft *r = io->data;
    struct cluster *c = r->data;

    c->raft_recv = recv;
    return c->uv_start(io, msecs, tick, io_on_recv);
}

/* ---- lifecycle ---- */

static void cluster_on_fsm_claim(void *arg, uint64_t index, const Concord__Command *cmd,
                                 const Concord__CommandResult *result)
{
    (void)cmd;
    cluster_ops_claim_result(arg, index, result);
}

static void cluster_on_fsm_applied(void *arg, uint64_t index, const Concord__Command *cmd,
                                   const Concord__CommandResult *result)
{
    struct cluster *c = arg;

    c->opts.applied(c->opts.applied_arg, index, cmd, result);
}

static void self_record_maybe_check(struct cluster *c);

static void poll_role(struct cluster *c)
{
    raft_id leader_id = 0;
    const char *leader_address = NULL;
    uint64_t term;

    if (raft_state(&c->raft) == RAFT_UNAVAILABLE) {
        if (!c->was_unavailable)
            CLOG(c, CLUSTER_LOG_ERROR, "replica unavailable id=%llu error=\"%s\"",
                 (unsigned long long)c->opts.id, raft_errmsg(&c->raft));
        c->was_unavailable = true;
        return;
    }
    raft_leader(&c->raft, &leader_id, &leader_address);
    term = raft_current_term(&c->raft);
    if (leader_id != 0 && (leader_id != c->last_leader_id || term != c->last_leader_term)) {
        c->leader_changes++;
        c->last_leader_id = leader_id;
        c->last_leader_term = term;
        c->is_self_record_ok = false;
        c->self_record_retry_ms = 0;
        CLOG(c, CLUSTER_LOG_INFO, "leader changed id=%llu term=%llu address=%s self=%llu",
             (unsigned long long)leader_id, (unsigned long long)term,
             leader_address != NULL ? leader_address : "", (unsigned long long)c->opts.id);
        self_record_maybe_check(c);
    }
}

static void cluster_on_check(uv_check_t *check)
{
    struct cluster *c = check->data;
    uint64_t applied;

    /* Everything libraft applied during this iteration's I/O is one batch. */
    cluster_fsm_flush(&c->fsm);
    if (c->is_closing)
        return;
    held_maybe_deliver(c);
    poll_role(c);
    applied = raft_last_applied(&c->raft);
    if (applied != c->last_checked_applied) {
        c->last_checked_applied = applied;
        cluster_ops_on_applied(c);
    }
}

static void cluster_on_timer(uv_timer_t *timer)
{
    struct cluster *c = timer->data;

    if (c->is_closing)
        return;
    poll_role(c);
    cluster_ops_on_timer(c);
    self_record_maybe_check(c);
}

int cluster_new(uv_loop_t *loop, const struct cluster_options *opts, struct cluster **out,
                char *errmsg)
{
    struct cluster *c;
    int rv;

    rv = check_options(opts, errmsg);
    if (rv != 0)
        return rv;
    if (loop == NULL || opts->store == NULL || out == NULL) {
        set_errmsg(errmsg, "a loop and a store are required");
        return CLUSTER_INVALID;
    }
    if (sodium_init() < 0) {
        set_errmsg(errmsg, "libsodium failed to initialise");
        return CLUSTER_INTERNAL;
    }
    rv = make_dirs(opts->raft_dir);
    if (rv != 0) {
        set_errmsg(errmsg, "creating %s: %s", opts->raft_dir, strerror(rv));
        return CLUSTER_IO;
    }
    c = calloc(1, sizeof *c);
    if (c == NULL)
        return CLUSTER_NOMEM;
    c->raft_dir = strdup(opts->raft_dir);
    if (c->raft_dir == NULL) {
        rv = CLUSTER_NOMEM;
        goto err_after_alloc;
    }
    c->loop = loop;
    c->opts = *opts;
    c->request_seq = wall_clock_ns();
    c->request_random_used = sizeof c->request_random; /* filled on first use */
    snprintf(c->raft_address, sizeof c->raft_address, "%s", opts->raft_address);
    snprintf(c->http_address, sizeof c->http_address, "%s",
             opts->http_address != NULL ? opts->http_address : "");
    c->opts.raft_address = c->raft_address;
    c->opts.http_address = c->http_address;
    c->opts.raft_dir = c->raft_dir;
    rv = cluster_fsm_init(&c->fsm, opts->store, opts->log, opts->log_arg, errmsg);
    if (rv != 0)
        goto err_after_dir;
    c->fsm.claim = cluster_on_fsm_claim;
    c->fsm.claim_arg = c;
    if (opts->applied != NULL) {
        c->fsm.applied = cluster_on_fsm_applied;
        c->fsm.applied_arg = c;
    }
    c->transport.version = 1; /* raft_uv_tcp_init refuses an unset version */
    rv = raft_uv_tcp_init(&c->transport, loop);
    if (rv != 0) {
        set_errmsg(errmsg, "raft transport: %s", c->transport.errmsg);
        rv = cluster_code_from_raft(rv);
        goto err_after_dir;
    }
    rv = raft_uv_init(&c->io, loop, c->raft_dir, &c->transport);
    if (rv != 0) {
        set_errmsg(errmsg, "raft io on %s: %s", c->raft_dir, c->io.errmsg);
        rv = cluster_code_from_raft(rv);
        goto err_after_transport;
    }
    /* A damaged log must stop the replica, not be silently truncated. */
    raft_uv_set_auto_recovery(&c->io, false);
    c->uv_start = c->io.start;
    c->io.start = io_start;
    rv = raft_init(&c->raft, &c->io, &c->fsm.fsm, opts->id, c->raft_address);
    if (rv != 0) {
        set_errmsg(errmsg, "raft init: %s", raft_errmsg(&c->raft));
        rv = cluster_code_from_raft(rv);
        goto err_after_io;
    }
    c->raft.data = c;
    c->fsm.raft = &c->raft;
    /* libraft's default tracers format every trace message (snprintf) before
     * finding out they are disabled, several times per entry. LIBRAFT_TRACE
     * in the environment keeps them, for debugging. */
    if (getenv("LIBRAFT_TRACE") == NULL) {
        c->raft.tracer = NULL;
        raft_uv_set_tracer(&c->io, NULL);
    }
    raft_set_election_timeout(&c->raft, (unsigned)cluster_election_timeout_ms(c));
    raft_set_heartbeat_timeout(&c->raft, opts->heartbeat_timeout_ms != 0
                                             ? opts->heartbeat_timeout_ms
                                             : DEFAULT_HEARTBEAT_TIMEOUT_MS);
    raft_set_pre_vote(&c->raft, true);
    raft_set_max_inflight_entries(&c->raft, MAX_INFLIGHT_ENTRIES);
    raft_set_snapshot_threshold(&c->raft, opts->snapshot_threshold != 0
                                              ? opts->snapshot_threshold
                                              : DEFAULT_SNAPSHOT_THRESHOLD);
    raft_set_snapshot_trailing(&c->raft, opts->snapshot_trailing != 0 ? opts->snapshot_trailing
                                                                      : DEFAULT_SNAPSHOT_TRAILING);
    /* Initialising these handles cannot fail; they are closed in cluster_close. */
    uv_timer_init(loop, &c->timer);
    uv_check_init(loop, &c->check);
    uv_idle_init(loop, &c->idle);
    c->timer.data = c;
    c->check.data = c;
    c->idle.data = c;
    *out = c;
    return 0;

err_after_io:
    raft_uv_close(&c->io);
err_after_transport:
    raft_uv_tcp_close(&c->transport);
err_after_dir:
    free(c->raft_dir);
err_after_alloc:
    free(c);
    return rv;
}

/* A raft_dir without metadata has never been bootstrapped nor joined. */
static bool raft_dir_is_pristine(const char *dir)
{
    char path[4200];

    for (int i = 1; i <= 2; i++) {
        snprintf(path, sizeof path, "%s/metadata%d", dir, i);
        if (access(path, F_OK) == 0)
            return false;
    }
    return true;
}

int cluster_start(struct cluster *c, char *errmsg)
{
    int rv;

    if (c == NULL || c->is_started || c->is_closing) {
        set_errmsg(errmsg, "replica already started or closing");
        return CLUSTER_INVALID;
    }
    /* The FSM skips entries the store already applied: a store filled by
     * another log would silently miss this log's first entries. */
    if (raft_dir_is_pristine(c->raft_dir) && c->fsm.store_applied > 0) {
        set_errmsg(errmsg,
                   "the store has applied up to index %llu but %s holds no raft state; move "
                   "the store aside to join or bootstrap with it",
                   (unsigned long long)c->fsm.store_applied, c->raft_dir);
        return CLUSTER_EXISTS;
    }
    rv = raft_start(&c->raft);
    if (rv != 0) {
        set_errmsg(errmsg, "raft start: %s", raft_errmsg(&c->raft));
        return cluster_code_from_raft(rv);
    }
    uv_timer_start(&c->timer, cluster_on_timer, TICK_MS, TICK_MS);
    uv_check_start(&c->check, cluster_on_check);
    c->is_started = true;
    c->started_ms = uv_now(c->loop);
    c->last_checked_applied = raft_last_applied(&c->raft);
    CLOG(c, CLUSTER_LOG_INFO,
         "replica started id=%llu raft=%s http=%s applied=%llu last_log=%llu term=%llu",
         (unsigned long long)c->opts.id, c->raft_address, c->http_address,
         (unsigned long long)raft_last_applied(&c->raft),
         (unsigned long long)raft_last_index(&c->raft),
         (unsigned long long)raft_current_term(&c->raft));
    return 0;
}

static void handle_on_close(uv_handle_t *handle)
{
    struct cluster *c = handle->data;
    cluster_close_cb cb;
    void *arg;

    if (--c->open_handles > 0)
        return;
    cluster_fsm_close(&c->fsm);
    /* libraft's I/O objects are freed only now, well after their own close
     * callbacks have returned. */
    raft_uv_close(&c->io);
    raft_uv_tcp_close(&c->transport);
    cb = c->close_cb;
    arg = c->close_arg;
    free(c->raft_dir);
    free(c);
    if (cb != NULL)
        cb(arg);
}

void cluster_maybe_finish_close(struct cluster *c)
{
    if (!c->is_closing || !c->is_raft_closed || c->is_closing_handles ||
        !cluster_ops_are_drained(c))
        return;
    cluster_fsm_flush(&c->fsm);
    c->is_closing_handles = true;
    c->open_handles = 3;
    uv_close((uv_handle_t *)&c->timer, handle_on_close);
    uv_close((uv_handle_t *)&c->check, handle_on_close);
    uv_close((uv_handle_t *)&c->idle, handle_on_close);
}

static void cluster_on_raft_close(struct raft *r)
{
    struct cluster *c = r->data;

    c->is_raft_closed = true;
    CLOG(c, CLUSTER_LOG_INFO, "replica stopped id=%llu", (unsigned long long)c->opts.id);
    cluster_maybe_finish_close(c);
}

void cluster_close(struct cluster *c, cluster_close_cb cb, void *arg)
{
    if (c == NULL || c->is_closing)
        return;
    c->is_closing = true;
    c->close_cb = cb;
    c->close_arg = arg;
    uv_timer_stop(&c->timer);
    uv_check_stop(&c->check);
    held_drop(c);
    cluster_fsm_flush(&c->fsm); /* the check handle that would have is stopped */
    /* Fails libraft's pending requests synchronously (their callbacks only
     * queue answers), then closes its I/O asynchronously. */
    raft_close(&c->raft, cluster_on_raft_close);
    cluster_ops_shutdown(c);
}

/* ---- own address record ---- */

bool cluster_replica_http_address(struct cluster *c, uint64_t id, char *out, size_t cap)
{
    struct store_txn *t = NULL;
    Concord__Replica *r = NULL;
    bool is_found = false;

    if (store_txn_begin(c->opts.store, false, &t) != 0)
        return false;
    if (store_replica_get(t, id, &r) == 0) {
        if (r->http_address != NULL && r->http_address[0] != '\0') {
            snprintf(out, cap, "%s", r->http_address);
            is_found = true;
        }
        store_record_free(r);
    }
    store_txn_abort(t);
    return is_found;
}

static bool self_record_is_current(struct cluster *c)
{
    struct store_txn *t = NULL;
    Concord__Replica *r = NULL;
    bool is_current = false;

    if (store_txn_begin(c->opts.store, false, &t) != 0)
        return false;
    if (store_replica_get(t, c->opts.id, &r) == 0) {
        is_current = strcmp(r->raft_address, c->raft_address) == 0 &&
                     strcmp(r->http_address, c->http_address) == 0;
        store_record_free(r);
    }
    store_txn_abort(t);
    return is_current;
}

static void self_record_on_done(void *arg, int status, const Concord__CommandResult *result)
{
    struct cluster *c = arg;

    c->is_self_record_inflight = false;
    if (status == CLUSTER_OK && result->code == CLUSTER_RESULT_OK) {
        c->is_self_record_ok = true;
        CLOG(c, CLUSTER_LOG_INFO, "own address recorded id=%llu index=%llu",
             (unsigned long long)c->opts.id, (unsigned long long)result->index);
        return;
    }
    c->self_record_retry_ms = uv_now(c->loop) + SELF_RECORD_RETRY_MS;
    if (!c->is_closing)
        CLOG(c, CLUSTER_LOG_WARN, "recording own address failed, will retry error=\"%s\"",
             status != CLUSTER_OK ? cluster_strerror(status) : result->message);
}

/* Once a leader is known, make sure the store maps this replica's id to its
 * current addresses (a leader does so right after its election). */
static void self_record_maybe_check(struct cluster *c)
{
    Concord__Command *cmd;
    raft_id leader_id = 0;
    const char *leader_address = NULL;
    int rv;

    if (c->is_self_record_ok || c->is_self_record_inflight || c->is_closing || !c->is_started)
        return;
    if (uv_now(c->loop) < c->self_record_retry_ms)
        return;
    raft_leader(&c->raft, &leader_id, &leader_address);
    if (leader_id == 0 || raft_role(&c->raft) < 0)
        return;
    if (self_record_is_current(c)) {
        c->is_self_record_ok = true;
        return;
    }
    cmd = cluster_upsert_replica_command(c, c->opts.id, c->raft_address, c->http_address);
    rv = cmd != NULL ? cluster_submit_internal(c, cmd, self_record_on_done, c) : CLUSTER_NOMEM;
    if (rv != 0) {
        if (cmd != NULL)
            concord__command__free_unpacked(cmd, NULL);
        c->self_record_retry_ms = uv_now(c->loop) + SELF_RECORD_RETRY_MS;
        return;
    }
    c->is_self_record_inflight = true;
}

/* ---- status ---- */

static enum cluster_role role_of(struct cluster *c)
{
    switch (raft_state(&c->raft)) {
    case RAFT_LEADER:
        return CLUSTER_ROLE_LEADER;
    case RAFT_CANDIDATE:
        return CLUSTER_ROLE_CANDIDATE;
    case RAFT_FOLLOWER:
        return CLUSTER_ROLE_FOLLOWER;
    default:
        return CLUSTER_ROLE_UNAVAILABLE;
    }
}

void cluster_status_get(struct cluster *c, struct cluster_status *out)
{
    const struct raft_configuration *conf = &c->raft.configuration;
    raft_id leader_id = 0;
    const char *leader_address = NULL;

    memset(out, 0, sizeof *out);
    out->id = c->opts.id;
    out->role = c->is_closing ? CLUSTER_ROLE_UNAVAILABLE : role_of(c);
    raft_leader(&c->raft, &leader_id, &leader_address);
    out->leader_id = leader_id;
    if (leader_id != 0)
        cluster_replica_http_address(c, leader_id, out->leader_http_address,
                                     sizeof out->leader_http_address);
    out->term = raft_current_term(&c->raft);
    out->commit_index = raft_commit_index(&c->raft);
    /* An index the store already shows: while a batch is open, the last
     * committed one (barrier and configuration entries never open one). */
    out->applied_index = c->fsm.batch != NULL ? c->fsm.store_applied : raft_last_applied(&c->raft);
    out->last_log_index = raft_last_index(&c->raft);
    out->leader_changes = c->leader_changes;
    for (unsigned i = 0; i < conf->n; i++) {
        if (conf->servers[i].role == RAFT_VOTER)
            out->n_voters++;
    }
}

int cluster_members(struct cluster *c, struct cluster_member **out, size_t *n)
{
    const struct raft_configuration *conf = &c->raft.configuration;
    struct cluster_member *members;
    raft_id leader_id = 0;
    const char *leader_address = NULL;

    members = calloc(conf->n != 0 ? conf->n : 1, sizeof *members);
    if (members == NULL)
        return CLUSTER_NOMEM;
    raft_leader(&c->raft, &leader_id, &leader_address);
    for (unsigned i = 0; i < conf->n; i++) {
        const struct raft_server *s = &conf->servers[i];
        struct cluster_member *m = &members[i];

        m->id = s->id;
        snprintf(m->raft_address, sizeof m->raft_address, "%s", s->address);
        cluster_replica_http_address(c, s->id, m->http_address, sizeof m->http_address);
        m->is_voter = s->role == RAFT_VOTER;
        m->is_leader = s->id == leader_id;
    }
    *out = members;
    *n = conf->n;
    return 0;
}
