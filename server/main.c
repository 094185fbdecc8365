/* server/main.c: the concord binary, both the server and the CLI, and the
 * only place with process-wide state (struct replica, on main's stack).
 * `serve`, `version`, `config check|doc`, `cluster init` and `generate
 * cluster-secret` are handled here; every other command line goes to the CLI.
 *
 * serve, happy path: load the config, start logging, read the cluster secret,
 * open the store, bootstrap from cluster.initial_members on a pristine raft
 * dir, start the Raft replica, the admin API and the HTTP listeners (TCP and
 * Unix socket), then join through cluster.join if this replica is not a member
 * yet. The loop runs until SIGINT or SIGTERM.
 * Stopping (signal or a failed start): close the HTTP server, then the
 * cluster, then the admin API (once its thread-pool jobs, a backup copy
 * among them, have finished) and then the store; the loop then runs
 * dry and the process exits. A replica whose Raft instance became unavailable
 * exits with 1 at once so that its supervisor restarts it. */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <sys/stat.h>
#include <uv.h>

#include "raft/cluster.h"
#include "server/admin/admin.h"
#include "server/cli/cli.h"
#include "server/config.h"
#include "server/control/control.h"
#include "server/control/noise.h"
#include "server/derp/cert.h"
#include "server/derp/relay.h"
#include "server/log.h"
#include "server/net/address.h"
#include "server/net/http.h"
#include "storage/store.h"

#define HTTP_MAX_HEADER_BYTES (64 * 1024)
#define HTTP_IDLE_TIMEOUT_MS  60000
/* Above cluster/'s 10 s bound on a forwarded submission, so that the leader
 * answers before the follower gives up on it. */
#define PEER_TIMEOUT_MS     12000
#define ROLE_POLL_MS        1000
#define JOIN_BACKOFF_MIN_MS 500
#define JOIN_BACKOFF_MAX_MS 10000

struct replica {
    uv_loop_t loop;
    const struct config *cfg;
    char state_dir[PATH_MAX];
    char raft_dir[PATH_MAX];
    struct store *store;
    struct admin_peer_client peer; /* holds the cluster secret; wiped on exit */
    struct cluster *cluster;
    struct admin *admin;
    struct control *control;
    struct relay *relay;
    struct net_http_server *http;
    uv_signal_t sigint;
    uv_signal_t sigterm;
    uv_signal_t sighup;
    uv_timer_t role_timer;
    uv_timer_t join_timer;
    bool has_handles; /* the signals and timers above are initialised */
    size_t join_next; /* index into cfg->cluster.join of the next peer to ask */
    unsigned join_backoff_ms;
    bool is_stopping;
    int exit_code;
};

/* ---- options ---- */

/* Finds "-s VALUE", "--long VALUE" or "--long=VALUE" among args; any other
 * argument is a usage error. One option per command is all we need. */
static int parse_option(int argc, char **argv, const char *short_name, const char *long_name,
                        const char **value)
{
    size_t long_len = strlen(long_name);

    *value = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], short_name) == 0 || strcmp(argv[i], long_name) == 0) {
            if (i + 1 >= argc)
                return -1;
            *value = argv[++i];
        } else if (strncmp(argv[i], long_name, long_len) == 0 && argv[i][long_len] == '=') {
            *value = argv[i] + long_len + 1;
        } else {
            return -1;
        }
    }
    return 0;
}

/* -c/--config, else $CONCORD_CONFIG, else no file (defaults only). */
static int load_config(const char *command, int argc, char **argv, struct config **out)
{
    const char *path;
    char errmsg[256];

    if (parse_option(argc, argv, "-c", "--config", &path) != 0) {
        fprintf(stderr, "usage: concord %s [-c FILE]\n", command);
        return 2;
    }
    if (path == NULL) {
        path = getenv("CONCORD_CONFIG");
        if (path != NULL && path[0] == '\0')
            path = NULL;
    }
    if (config_load(path, out, errmsg) != 0) {
        fprintf(stderr, "concord %s: %s\n", command, errmsg);
        return 1;
    }
    return 0;
}

static int make_dirs(const char *path)
{
    char buf[PATH_MAX];
    size_t len = strlen(path);

    if (len >= sizeof buf)
        return ENAMETOOLONG;
    memcpy(buf, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        buf[i] = '\0';
        if (mkdir(buf, 0700) != 0 && errno != EEXIST)
            return errno;
        buf[i] = path[i];
    }
    return 0;
}

static int data_paths(const struct config *cfg, char *state_dir, char *raft_dir)
{
    int rv = make_dirs(cfg->data_dir);

    if (rv != 0) {
        LOG_ERROR("data_dir %s: %s", cfg->data_dir, strerror(rv));
        return -1;
    }
    if (snprintf(state_dir, PATH_MAX, "%s/state", cfg->data_dir) >= PATH_MAX ||
        snprintf(raft_dir, PATH_MAX, "%s/raft", cfg->data_dir) >= PATH_MAX) {
        LOG_ERROR("data_dir %s: path too long", cfg->data_dir);
        return -1;
    }
    return 0;
}

static void cluster_options_fill(const struct config *cfg, const char *raft_dir,
                                 struct cluster_options *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->id = cfg->cluster.id;
    opts->raft_address = cfg->cluster.raft_listen_addr;
    opts->http_address = cfg->cluster.advertise_http_addr;
    opts->raft_dir = raft_dir;
    opts->election_timeout_ms = (unsigned)cfg->cluster.election_timeout_ms;
    opts->heartbeat_timeout_ms = (unsigned)cfg->cluster.heartbeat_timeout_ms;
    opts->snapshot_threshold = (unsigned)cfg->cluster.snapshot_threshold;
    opts->snapshot_trailing = (unsigned)cfg->cluster.snapshot_trailing;
    opts->log = log_cluster_cb;
}

/* cluster.initial_members as cluster_members; only this replica's own HTTP
 * address is known from the config. The caller frees *out. */
static int initial_members(const struct config *cfg, struct cluster_member **out)
{
    const struct config_members *m = &cfg->cluster.initial_members;
    struct cluster_member *members = calloc(m->n, sizeof *members);

    if (members == NULL)
        return -1;
    for (size_t i = 0; i < m->n; i++) {
        members[i].id = m->items[i].id;
        members[i].is_voter = true;
        snprintf(members[i].raft_address, sizeof members[i].raft_address, "%s",
                 m->items[i].raft_address);
        if (m->items[i].id == cfg->cluster.id)
            snprintf(members[i].http_address, sizeof members[i].http_address, "%s",
                     cfg->cluster.advertise_http_addr);
    }
    *out = members;
    return 0;
}

/* 0: bootstrapped now, CLUSTER_EXISTS: it was already, else a failure that
 * has been logged. */
static int bootstrap(const struct config *cfg, const char *raft_dir)
{
    struct cluster_options opts;
    struct cluster_member *members;
    char errmsg[256] = "";
    int rv;

    if (initial_members(cfg, &members) != 0) {
        LOG_ERROR("bootstrap: out of memory");
        return CLUSTER_NOMEM;
    }
    cluster_options_fill(cfg, raft_dir, &opts);
    rv = cluster_bootstrap(&opts, members, cfg->cluster.initial_members.n, errmsg);
    free(members);
    if (rv != 0 && rv != CLUSTER_EXISTS)
        LOG_ERROR("bootstrap of %s failed: %s: %s", raft_dir, cluster_strerror(rv), errmsg);
    return rv;
}

/* ---- serve: stopping ---- */

/* Last step: no thread-pool job of the admin API reads the store any more. */
static void replica_on_admin_closed(void *arg)
{
    struct replica *r = arg;

    r->admin = NULL;
    store_close(r->store);
    r->store = NULL;
    sodium_memzero(r->peer.cluster_secret, sizeof r->peer.cluster_secret);
    LOG_INFO("concord serve: stopped exit=%d", r->exit_code);
    /* The signal handlers stay until everything is closed, so a second
     * SIGINT/SIGTERM (a supervisor's, a shell's) cannot kill a replica in the
     * middle of its clean stop (a backup copy still running, for one). */
    if (r->has_handles) {
        uv_close((uv_handle_t *)&r->sigint, NULL);
        uv_close((uv_handle_t *)&r->sigterm, NULL);
        uv_close((uv_handle_t *)&r->sighup, NULL);
    }
}

static void replica_on_cluster_closed(void *arg)
{
    struct replica *r = arg;

    r->cluster = NULL;
    control_free(r->control);
    r->control = NULL;
    if (r->admin != NULL)
        admin_close(r->admin, replica_on_admin_closed, r);
    else
        replica_on_admin_closed(r);
}

static void replica_on_http_closed(void *arg)
{
    struct replica *r = arg;

    r->http = NULL;
    if (r->cluster != NULL)
        cluster_close(r->cluster, replica_on_cluster_closed, r);
    else
        replica_on_cluster_closed(r);
}

static void replica_on_relay_closed(void *arg)
{
    struct replica *r = arg;

    r->relay = NULL;
    if (r->http != NULL)
        net_http_server_close(r->http, replica_on_http_closed, r);
    else
        replica_on_http_closed(r);
}

/* Closes what exists, in dependency order; the loop runs dry afterwards. */
static void replica_stop(struct replica *r, int exit_code)
{
    if (r->is_stopping)
        return;
    r->is_stopping = true;
    r->exit_code = exit_code;
    control_close(r->control);
    if (r->has_handles) {
        uv_close((uv_handle_t *)&r->role_timer, NULL);
        uv_close((uv_handle_t *)&r->join_timer, NULL);
    }
    if (r->relay != NULL) {
        relay_close(r->relay, replica_on_relay_closed, r);
        return;
    }
    replica_on_relay_closed(r);
}

static void replica_on_signal(uv_signal_t *h, int signum)
{
    struct replica *r = h->data;

    if (r->is_stopping) {
        LOG_INFO("concord serve: %s received, already stopping", strsignal(signum));
        return;
    }
    LOG_INFO("concord serve: %s received, stopping", strsignal(signum));
    replica_stop(r, 0);
}

/* SIGHUP: policy.mode file re-reads the policy file (nothing else reloads). */
static void replica_on_sighup(uv_signal_t *h, int signum)
{
    struct replica *r = h->data;

    (void)signum;
    if (r->is_stopping || r->cfg->policy.mode != CONFIG_POLICY_FILE) {
        LOG_INFO("concord serve: SIGHUP ignored (only policy.mode file reloads)");
        return;
    }
    LOG_INFO("concord serve: SIGHUP: reading %s", r->cfg->policy.path);
    admin_policy_file_load(r->admin);
}

static void replica_on_role_timer(uv_timer_t *t)
{
    struct replica *r = t->data;
    struct cluster_status st;

    cluster_status_get(r->cluster, &st);
    if (st.role == CLUSTER_ROLE_UNAVAILABLE) {
        /* Raft stopped for good (I/O error, corrupt log): nothing here can
         * repair it, and a supervisor restart might. */
        LOG_ERROR("concord serve: replica %" PRIu64 " is unavailable; exiting", st.id);
        exit(1);
    }
    admin_policy_file_tick(r->admin);
}

/* ---- serve: joining ---- */

static bool replica_is_member(struct replica *r)
{
    struct cluster_member *members;
    size_t n;
    bool found = false;

    if (cluster_members(r->cluster, &members, &n) != 0)
        return false;
    for (size_t i = 0; i < n; i++)
        found = found || members[i].id == r->cfg->cluster.id;
    free(members);
    return found;
}

static void replica_join_next(struct replica *r);

static void replica_on_joined(void *arg, int status)
{
    struct replica *r = arg;
    const char *peer = r->cfg->cluster.join.items[r->join_next];

    if (r->is_stopping)
        return;
    if (status == CLUSTER_OK || status == CLUSTER_EXISTS) {
        LOG_INFO("concord serve: joined the cluster through %s", peer);
        return;
    }
    LOG_WARN("concord serve: join through %s failed: %s", peer, cluster_strerror(status));
    r->join_next++;
    replica_join_next(r);
}

static void replica_on_join_timer(uv_timer_t *t)
{
    replica_join_next(t->data);
}

/* Asks the next peer of cluster.join; after the last one, waits (doubling
 * the wait up to a bound) and starts over. */
static void replica_join_next(struct replica *r)
{
    const struct config_strings *peers = &r->cfg->cluster.join;

    while (r->join_next < peers->n) {
        const char *peer = peers->items[r->join_next];
        int rv = cluster_join(r->cluster, peer, replica_on_joined, r);

        if (rv == 0) {
            LOG_INFO("concord serve: asking %s to add replica %" PRIu64, peer, r->cfg->cluster.id);
            return;
        }
        if (rv == CLUSTER_EXISTS) {
            LOG_INFO("concord serve: already a member");
            return;
        }
        LOG_WARN("concord serve: cannot join through %s: %s", peer, cluster_strerror(rv));
        r->join_next++;
    }
    r->join_next = 0;
    LOG_WARN("concord serve: no peer of cluster.join added this replica; retrying in %u ms",
             r->join_backoff_ms);
    uv_timer_start(&r->join_timer, replica_on_join_timer, r->join_backoff_ms, 0);
    r->join_backoff_ms =
        r->join_backoff_ms * 2 > JOIN_BACKOFF_MAX_MS ? JOIN_BACKOFF_MAX_MS : r->join_backoff_ms * 2;
}

/* ---- serve: starting ---- */

/* The cluster exists before the control protocol does (it replays its log
 * first), so applied commands reach it through the replica. */
static void replica_on_applied(void *arg, uint64_t index, const Concord__Command *cmd,
                               const Concord__CommandResult *result)
{
    struct replica *r = arg;

    if (r->control != NULL)
        control_applied(r->control, index, cmd, result);
}

/* One listener for the control protocol and the admin API. */
static void replica_handle(void *arg, struct net_http_request *req)
{
    struct replica *r = arg;

    if (r->control != NULL && control_handle(r->control, req))
        return;
    admin_handle(r->admin, req);
}

static size_t replica_body_limit(void *arg, const struct net_http_request *head, size_t limit)
{
    struct replica *r = arg;

    return admin_body_limit(r->admin, head, limit);
}

static char *read_file(const char *path, char *errmsg)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long len;

    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 ||
        fseek(f, 0, SEEK_SET) != 0 || (buf = malloc((size_t)len + 1)) == NULL ||
        fread(buf, 1, (size_t)len, f) != (size_t)len) {
        snprintf(errmsg, 256, "%s: %s", path, strerror(errno != 0 ? errno : EIO));
        free(buf);
        if (f != NULL)
            fclose(f);
        return NULL;
    }
    fclose(f);
    buf[len] = '\0';
    return buf;
}

/* The relay's certificate: its own, else the listener's, else a
 * self-signed one kept in <data_dir>/derp and pinned through CertName. */
static int relay_certificate(const struct config *cfg, const char *host, char *cert, char *key,
                             char *pin)
{
    char dir[PATH_MAX];
    char errmsg[256];

    pin[0] = '\0';
    if (cfg->derp.server.tls_cert_path[0] != '\0' || cfg->tls_cert_path[0] != '\0') {
        bool is_own = cfg->derp.server.tls_cert_path[0] != '\0';

        snprintf(cert, PATH_MAX, "%s",
                 is_own ? cfg->derp.server.tls_cert_path : cfg->tls_cert_path);
        snprintf(key, PATH_MAX, "%s", is_own ? cfg->derp.server.tls_key_path : cfg->tls_key_path);
        return 0;
    }
    snprintf(dir, sizeof dir, "%s/derp", cfg->data_dir);
    if (derp_cert_ensure(dir, host, cert, key, PATH_MAX, errmsg) != 0 ||
        derp_cert_pin(cert, pin, errmsg) != 0) {
        LOG_ERROR("derp: %s", errmsg);
        return -1;
    }
    return 0;
}

/* The relays' shared mesh key, derived from the cluster secret so that
 * replicas need no further shared file: the hex of HMAC-SHA256(secret,
 * "concord derp mesh v1"). */
static void relay_mesh_key(const struct replica *r, char hex[2 * crypto_auth_hmacsha256_BYTES + 1])
{
    static const char label[] = "concord derp mesh v1";
    crypto_auth_hmacsha256_state st;
    uint8_t mac[crypto_auth_hmacsha256_BYTES];

    crypto_auth_hmacsha256_init(&st, r->peer.cluster_secret, sizeof r->peer.cluster_secret);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)label, sizeof label - 1);
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_bin2hex(hex, 2 * sizeof mac + 1, mac, sizeof mac);
    sodium_memzero(mac, sizeof mac);
    sodium_memzero(&st, sizeof st);
}

/* Starts the embedded relay and describes it as clients must see it. */
static int replica_start_relay(struct replica *r, Concord__DerpNode *node, char *host, char *pin)
{
    const struct config *cfg = r->cfg;
    char cert[PATH_MAX];
    char key[PATH_MAX];
    char mesh_key[2 * crypto_auth_hmacsha256_BYTES + 1];
    char errmsg[256] = "";
    unsigned port;
    struct relay_options opts = {
        .loop = &r->loop,
        .store = r->store,
        .listen_addr = cfg->derp.server.listen_addr,
        .stun_listen_addr = cfg->derp.server.stun_listen_addr,
        .replica_id = cfg->cluster.id,
        .mesh_key = cfg->derp.server.mesh ? mesh_key : NULL,
    };
    unsigned char addr[16];
    int rv;

    if (net_address_split(cfg->derp.server.advertise_addr, host, 256, &port) != 0) {
        LOG_ERROR("derp.server.advertise_addr: not host:port");
        return -1;
    }
    if (relay_certificate(cfg, host, cert, key, pin) != 0)
        return -1;
    opts.cert_path = cert;
    opts.key_path = key;
    relay_mesh_key(r, mesh_key);
    rv = relay_new(&opts, &r->relay, errmsg);
    sodium_memzero(mesh_key, sizeof mesh_key);
    if (rv != 0) {
        LOG_ERROR("derp: %s", errmsg);
        return -1;
    }
    node->host_name = host;
    /* An address literal is dialled as is; the other family is off. */
    node->ipv4 = inet_pton(AF_INET, host, addr) == 1 ? host : "";
    node->ipv6 = inet_pton(AF_INET6, host, addr) == 1 ? host : node->ipv4[0] != '\0' ? "none" : "";
    node->derp_port = port != 0 ? port : (unsigned)relay_derp_port(r->relay);
    node->stun_port = relay_stun_port(r->relay);
    node->cert_name = pin;
    LOG_INFO("derp: relay on %s (STUN port %d)%s", cfg->derp.server.listen_addr, node->stun_port,
             pin[0] != '\0' ? ", self-signed certificate pinned in the DERP map" : "");
    return 0;
}

static int replica_start_control(struct replica *r)
{
    const struct config *cfg = r->cfg;
    struct control_options opts = {
        .loop = &r->loop,
        .cluster = r->cluster,
        .store = r->store,
        .replica_id = cfg->cluster.id,
        .server_url = cfg->server_url,
        .dns =
            {
                .magic_dns = cfg->dns.magic_dns,
                .base_domain = cfg->dns.base_domain,
                .nameservers = (const char *const *)cfg->dns.nameservers.items,
                .n_nameservers = cfg->dns.nameservers.n,
                .search_domains = (const char *const *)cfg->dns.search_domains.items,
                .n_search_domains = cfg->dns.search_domains.n,
            },
        .ephemeral_inactivity_ms = cfg->ephemeral_node_inactivity_timeout_ms,
        .keepalive_ms = cfg->control.keepalive_interval_ms,
        .ping_interval_ms = cfg->control.liveness_interval_ms,
        .registration_ttl_ms = cfg->control.pending_registration_ttl_ms,
    };
    char errmsg[256] = "";
    char *derp = NULL;
    Concord__DerpNode node = CONCORD__DERP_NODE__INIT;
    char host[256];
    char pin[DERP_CERT_PIN_MAX];
    int rv;

    opts.derp_region_id = (uint32_t)cfg->derp.server.region_id;
    opts.derp_mesh = cfg->derp.server.mesh;
    opts.derp_region_code = cfg->derp.server.region_code;
    opts.derp_region_name = cfg->derp.server.region_name;
    if (cfg->derp.server.enabled) {
        if (replica_start_relay(r, &node, host, pin) != 0)
            return -1;
        opts.derp_node = &node;
    }
    rv = noise_key_file_read(cfg->noise.private_key_path, &opts.noise_key, errmsg);
    if (rv != 0) {
        LOG_ERROR("noise.private_key_path: %s (make one with `concord generate private-key -o "
                  "%s` and give every replica the same file)",
                  errmsg, cfg->noise.private_key_path);
        return -1;
    }
    if (cfg->derp.map_path[0] != '\0') {
        derp = read_file(cfg->derp.map_path, errmsg);
        if (derp == NULL) {
            LOG_ERROR("derp.map_path: %s", errmsg);
            sodium_memzero(&opts.noise_key, sizeof opts.noise_key);
            return -1;
        }
        opts.derp_map_json = derp;
    }
    rv = control_new(&opts, &r->control, errmsg);
    sodium_memzero(&opts.noise_key, sizeof opts.noise_key);
    free(derp);
    if (rv != 0) {
        LOG_ERROR("control protocol: %s", errmsg);
        return -1;
    }
    return 0;
}

static int replica_start_cluster(struct replica *r)
{
    struct cluster_options opts;
    char errmsg[256] = "";
    int rv;

    cluster_options_fill(r->cfg, r->raft_dir, &opts);
    opts.store = r->store;
    opts.transport.send = admin_peer_send;
    opts.transport.arg = &r->peer;
    opts.applied = replica_on_applied;
    opts.applied_arg = r;
    rv = cluster_new(&r->loop, &opts, &r->cluster, errmsg);
    if (rv != 0) {
        LOG_ERROR("cluster: %s: %s", cluster_strerror(rv), errmsg);
        return -1;
    }
    rv = cluster_start(r->cluster, errmsg);
    if (rv != 0) {
        LOG_ERROR("cluster start: %s: %s", cluster_strerror(rv), errmsg);
        return -1;
    }
    return 0;
}

static int replica_start_http(struct replica *r)
{
    const struct config *cfg = r->cfg;
    struct admin_options admin_opts = {
        .cluster = r->cluster,
        .store = r->store,
        .loop = &r->loop,
        .ready_max_apply_lag = (unsigned)cfg->cluster.ready_max_apply_lag,
        .policy_path = cfg->policy.mode == CONFIG_POLICY_FILE ? cfg->policy.path : NULL,
    };
    struct net_http_server_options http_opts = {
        .tcp_address = cfg->listen_addr,
        .tls_cert_path = cfg->tls_cert_path[0] != '\0' ? cfg->tls_cert_path : NULL,
        .tls_key_path = cfg->tls_key_path[0] != '\0' ? cfg->tls_key_path : NULL,
        .unix_path = cfg->unix_socket[0] != '\0' ? cfg->unix_socket : NULL,
        .unix_mode = cfg->unix_socket_permission,
        .max_body_bytes = (size_t)cfg->http.max_body_bytes,
        .max_local_body_bytes = (size_t)cfg->http.max_local_body_bytes,
        .max_header_bytes = HTTP_MAX_HEADER_BYTES,
        .idle_timeout_ms = HTTP_IDLE_TIMEOUT_MS,
        .handler = replica_handle,
        .body_limit = replica_body_limit,
    };
    char errmsg[256] = "";
    int rv;

    memcpy(admin_opts.cluster_secret, r->peer.cluster_secret, sizeof admin_opts.cluster_secret);
    rv = admin_new(&admin_opts, &r->admin);
    sodium_memzero(admin_opts.cluster_secret, sizeof admin_opts.cluster_secret);
    if (rv != 0) {
        LOG_ERROR("admin API: cannot start (code %d)", rv);
        return -1;
    }
    http_opts.handler_arg = r;
    rv = net_http_server_new(&r->loop, &http_opts, &r->http, errmsg);
    if (rv != 0) {
        LOG_ERROR("http: %s: %s", net_strerror(rv), errmsg);
        return -1;
    }
    return 0;
}

static int replica_start_handles(struct replica *r)
{
    uv_signal_init(&r->loop, &r->sigint);
    uv_signal_init(&r->loop, &r->sigterm);
    uv_signal_init(&r->loop, &r->sighup);
    uv_timer_init(&r->loop, &r->role_timer);
    uv_timer_init(&r->loop, &r->join_timer);
    r->sigint.data = r;
    r->sigterm.data = r;
    r->sighup.data = r;
    r->role_timer.data = r;
    r->join_timer.data = r;
    r->has_handles = true;
    if (uv_signal_start(&r->sigint, replica_on_signal, SIGINT) != 0 ||
        uv_signal_start(&r->sigterm, replica_on_signal, SIGTERM) != 0 ||
        uv_signal_start(&r->sighup, replica_on_sighup, SIGHUP) != 0) {
        LOG_ERROR("cannot install signal handlers");
        return -1;
    }
    uv_timer_start(&r->role_timer, replica_on_role_timer, ROLE_POLL_MS, ROLE_POLL_MS);
    return 0;
}

/* Synchronous steps; on failure the caller stops what was started. */
static int replica_start(struct replica *r)
{
    const struct config *cfg = r->cfg;
    struct store_options store_opts = {0};
    char errmsg[256] = "";
    int rv;

    rv = config_secret_read(cfg->cluster.secret_path, r->peer.cluster_secret, errmsg);
    if (rv != 0) {
        LOG_ERROR("%s", errmsg);
        return -1;
    }
    r->peer.loop = &r->loop;
    r->peer.timeout_ms = PEER_TIMEOUT_MS;
    r->peer.use_tls = cfg->tls_cert_path[0] != '\0'; /* replicas are configured alike */
    if (data_paths(cfg, r->state_dir, r->raft_dir) != 0)
        return -1;
    store_opts.dir = r->state_dir;
    rv = store_open(&store_opts, &r->store, errmsg);
    if (rv != 0) {
        LOG_ERROR("store %s: %s: %s", r->state_dir, store_strerror(rv), errmsg);
        return -1;
    }
    if (cfg->cluster.initial_members.n > 0) {
        rv = bootstrap(cfg, r->raft_dir);
        if (rv == 0)
            LOG_INFO("concord serve: bootstrapped a new cluster of %zu voters",
                     cfg->cluster.initial_members.n);
        else if (rv != CLUSTER_EXISTS)
            return -1;
    }
    if (replica_start_cluster(r) != 0 || replica_start_control(r) != 0 ||
        replica_start_http(r) != 0 || replica_start_handles(r) != 0)
        return -1;
    admin_policy_file_load(r->admin); /* file mode only; retried by the role timer */
    LOG_INFO("concord serve: replica %" PRIu64 " listening on %s unix=%s raft=%s", cfg->cluster.id,
             cfg->listen_addr, cfg->unix_socket[0] != '\0' ? cfg->unix_socket : "off",
             cfg->cluster.raft_listen_addr);
    if (cfg->cluster.join.n > 0 && cfg->cluster.initial_members.n == 0 && !replica_is_member(r)) {
        r->join_backoff_ms = JOIN_BACKOFF_MIN_MS;
        replica_join_next(r);
    }
    return 0;
}

static void close_leftover(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static int cmd_serve(int argc, char **argv)
{
    struct replica r = {0};
    struct config *cfg;
    int rv = load_config("serve", argc, argv, &cfg);

    if (rv != 0)
        return rv;
    log_init((enum log_level)cfg->log.level, (enum log_format)cfg->log.format);
    /* A peer closing mid-write must be an error code, not a dead process. */
    signal(SIGPIPE, SIG_IGN);
    if (sodium_init() < 0) {
        LOG_ERROR("libsodium failed to initialise");
        config_free(cfg);
        return 1;
    }
    r.cfg = cfg;
    rv = uv_loop_init(&r.loop);
    if (rv != 0) {
        LOG_ERROR("event loop: %s", uv_strerror(rv));
        config_free(cfg);
        return 1;
    }
    if (replica_start(&r) != 0)
        replica_stop(&r, 1);
    uv_run(&r.loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&r.loop) == UV_EBUSY) {
        /* Someone left a handle open: close it rather than hang or leak. */
        LOG_WARN("concord serve: closing handles left open at exit");
        uv_walk(&r.loop, close_leftover, NULL);
        uv_run(&r.loop, UV_RUN_DEFAULT);
        uv_loop_close(&r.loop);
    }
    config_free(cfg);
    return r.exit_code;
}

/* ---- other commands ---- */

static int cmd_config_check(int argc, char **argv)
{
    struct config *cfg;
    int rv = load_config("config check", argc, argv, &cfg);

    if (rv != 0)
        return rv;
    config_print(cfg, stdout);
    config_free(cfg);
    return 0;
}

static int cmd_cluster_init(int argc, char **argv)
{
    struct config *cfg;
    char state_dir[PATH_MAX];
    char raft_dir[PATH_MAX];
    int rv = load_config("cluster init", argc, argv, &cfg);

    if (rv != 0)
        return rv;
    log_init((enum log_level)cfg->log.level, (enum log_format)cfg->log.format);
    rv = 1;
    if (cfg->cluster.initial_members.n == 0) {
        fprintf(stderr, "concord cluster init: cluster.initial_members is empty: nothing to "
                        "bootstrap\n");
        goto out;
    }
    if (data_paths(cfg, state_dir, raft_dir) != 0)
        goto out;
    switch (bootstrap(cfg, raft_dir)) {
    case 0:
        printf("concord cluster init: bootstrapped %s with %zu voters:", raft_dir,
               cfg->cluster.initial_members.n);
        for (size_t i = 0; i < cfg->cluster.initial_members.n; i++)
            printf(" %" PRIu64 "@%s", cfg->cluster.initial_members.items[i].id,
                   cfg->cluster.initial_members.items[i].raft_address);
        printf("\n");
        rv = 0;
        break;
    case CLUSTER_EXISTS:
        fprintf(stderr, "concord cluster init: %s is already initialised; refusing\n", raft_dir);
        break;
    default:
        break; /* logged */
    }
out:
    config_free(cfg);
    return rv;
}

static int cmd_generate_secret(int argc, char **argv)
{
    const char *path;
    char errmsg[256];

    if (parse_option(argc, argv, "-o", "--output", &path) != 0) {
        fprintf(stderr, "usage: concord generate cluster-secret [-o FILE]\n");
        return 2;
    }
    if (config_secret_generate(path, stdout, errmsg) != 0) {
        fprintf(stderr, "concord generate cluster-secret: %s\n", errmsg);
        return 1;
    }
    if (path != NULL)
        printf("concord generate cluster-secret: wrote %s (mode 0600)\n", path);
    return 0;
}

static int cmd_generate_private_key(int argc, char **argv)
{
    struct noise_keypair kp;
    const char *path;
    char errmsg[256];
    int rv;

    if (parse_option(argc, argv, "-o", "--output", &path) != 0 || path == NULL) {
        fprintf(stderr, "usage: concord generate private-key -o FILE\n");
        return 2;
    }
    if (sodium_init() < 0 || noise_keypair_generate(&kp) != 0) {
        fprintf(stderr, "concord generate private-key: cannot generate a key\n");
        return 1;
    }
    rv = noise_key_file_write(path, &kp, errmsg);
    sodium_memzero(&kp, sizeof kp);
    if (rv != 0) {
        fprintf(stderr, "concord generate private-key: %s\n", errmsg);
        return 1;
    }
    printf("concord generate private-key: wrote %s (mode 0600); give every replica this file\n",
           path);
    return 0;
}

static bool is_command(int argc, char **argv, const char *first, const char *second)
{
    return argc >= 2 && strcmp(argv[1], first) == 0 &&
           (second == NULL || (argc >= 3 && strcmp(argv[2], second) == 0));
}

int main(int argc, char **argv)
{
    if (is_command(argc, argv, "serve", NULL))
        return cmd_serve(argc - 2, argv + 2);
    if (is_command(argc, argv, "version", NULL)) {
        printf("concord %s\n", CONCORD_VERSION);
        return 0;
    }
    if (is_command(argc, argv, "config", "check"))
        return cmd_config_check(argc - 3, argv + 3);
    if (is_command(argc, argv, "config", "doc") && argc == 3) {
        config_doc(stdout);
        return 0;
    }
    if (is_command(argc, argv, "cluster", "init"))
        return cmd_cluster_init(argc - 3, argv + 3);
    if (is_command(argc, argv, "generate", "cluster-secret"))
        return cmd_generate_secret(argc - 3, argv + 3);
    if (is_command(argc, argv, "generate", "private-key"))
        return cmd_generate_private_key(argc - 3, argv + 3);
    if (is_command(argc, argv, "config", NULL) || is_command(argc, argv, "generate", NULL)) {
        fprintf(stderr, "usage: concord config check [-c FILE]\n"
                        "       concord config doc\n"
                        "       concord generate cluster-secret [-o FILE]\n"
                        "       concord generate private-key -o FILE\n");
        return 2;
    }
    return cli_main(argc, argv);
}
