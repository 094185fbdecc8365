/* server/net/tls.c: TLS for the TCP listener, with OpenSSL 3 over memory
 * BIOs, so that libuv keeps doing every socket read and write (conn.c).
 * Records the connection read go into the session's input BIO; SSL_read runs
 * the handshake, then yields plaintext. Plaintext goes through SSL_write;
 * the records land in the output BIO, which the connection empties onto the
 * socket right away, so bytes waiting to be sent are always on the socket's
 * write queue, where backpressure counts them.
 * One SSL_CTX per server: TLS 1.2 or later, no renegotiation, ALPN
 * "http/1.1" or none, and no session resumption: each replica would have its
 * own ticket key and cache, clients keep one long-lived connection (a map
 * stream, a ts2021 tunnel) so full handshakes are rare, and without tickets
 * no key that could decrypt recorded sessions sits in memory or needs
 * rotating.
 * The client side (net_tls_client_new, for client.c's requests to peer
 * replicas) makes one short-lived session per request with its own SSL_CTX,
 * the same protocol limits, ALPN "http/1.1" offered, SNI for a host name,
 * and no certificate verification (the reasons are at that function). */
#include "server/net/net_internal.h"

#include <arpa/inet.h>
#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include "server/log.h"

#define ALPN_HTTP11 "http/1.1"

struct net_tls_ctx {
    SSL_CTX *ssl_ctx;
};

struct net_tls {
    SSL *ssl;
    BIO *in;          /* records from the peer; owned by ssl */
    BIO *out;         /* records for the peer; owned by ssl */
    uint64_t conn_id; /* 0 on the client side */
    bool is_client;
    bool is_established;
    char errmsg[128];
};

__attribute__((format(printf, 2, 3))) static void set_errmsg(char *errmsg, const char *fmt, ...)
{
    va_list ap;

    if (errmsg == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(errmsg, 256, fmt, ap);
    va_end(ap);
}

/* The reason of the first error OpenSSL queued (the cause; later entries
 * only say which call gave up), in words. */
static const char *ossl_reason(void)
{
    unsigned long e = ERR_peek_error();
    const char *reason;

    if (e == 0)
        return "unknown error";
    if (ERR_SYSTEM_ERROR(e))
        return strerror(ERR_GET_REASON(e));
    reason = ERR_reason_error_string(e);
    return reason != NULL ? reason : "unknown error";
}

/* Says why a file could not be used: the system's reason when it could not
 * be read, else that it does not hold what it should, and OpenSSL's reason. */
static void file_errmsg(char *errmsg, const char *what, const char *path, const char *expected)
{
    if (ERR_SYSTEM_ERROR(ERR_peek_error()))
        set_errmsg(errmsg, "%s %s: %s", what, path, ossl_reason());
    else
        set_errmsg(errmsg, "%s %s: not %s (%s)", what, path, expected, ossl_reason());
}

/* An encrypted PEM block would otherwise make OpenSSL ask on the terminal. */
static int refuse_passphrase(char *buf, int size, int rwflag, void *arg)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)arg;
    return 0;
}

/* Picks "http/1.1" from the client's list (names each prefixed by their
 * length). A client offering ALPN without it gets the fatal alert RFC 7301
 * asks for; a client offering none is never asked and speaks HTTP/1.1. */
static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *out_len,
                       const unsigned char *in, unsigned int in_len, void *arg)
{
    const size_t want_len = sizeof ALPN_HTTP11 - 1;

    (void)ssl;
    (void)arg;
    for (unsigned i = 0; i < in_len; i += 1u + in[i]) {
        if (in[i] == want_len && i + 1 + want_len <= in_len &&
            memcmp(in + i + 1, ALPN_HTTP11, want_len) == 0) {
            *out = in + i + 1;
            *out_len = (unsigned char)want_len;
            return SSL_TLSEXT_ERR_OK;
        }
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* Both sides: TLS 1.2 or later, no renegotiation, no session resumption. */
static int configure_common(SSL_CTX *ctx)
{
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
        return -1;
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    return 0;
}

static int configure(SSL_CTX *ctx)
{
    if (configure_common(ctx) != 0 || SSL_CTX_set_num_tickets(ctx, 0) != 1)
        return -1;
    /* Idle connections (most of them: map streams) give their buffers back. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_default_passwd_cb(ctx, refuse_passphrase);
    SSL_CTX_set_alpn_select_cb(ctx, select_alpn, NULL);
    return 0;
}

static EVP_PKEY *load_key(const char *path)
{
    BIO *bio = BIO_new_file(path, "r");
    EVP_PKEY *key;

    if (bio == NULL)
        return NULL;
    key = PEM_read_bio_PrivateKey(bio, NULL, refuse_passphrase, NULL);
    BIO_free(bio);
    return key;
}

static int load_pair(SSL_CTX *ctx, const char *cert_path, const char *key_path, char *errmsg)
{
    EVP_PKEY *key;
    int rv = NET_TLS;

    if (SSL_CTX_use_certificate_chain_file(ctx, cert_path) != 1) {
        file_errmsg(errmsg, "TLS certificate", cert_path, "a PEM certificate chain");
        return NET_TLS;
    }
    key = load_key(key_path);
    if (key == NULL)
        file_errmsg(errmsg, "TLS private key", key_path, "an unencrypted PEM private key");
    else if (X509_check_private_key(SSL_CTX_get0_certificate(ctx), key) != 1)
        set_errmsg(errmsg, "TLS private key %s does not match the certificate %s", key_path,
                   cert_path);
    else if (SSL_CTX_use_PrivateKey(ctx, key) != 1)
        set_errmsg(errmsg, "TLS private key %s: %s", key_path, ossl_reason());
    else
        rv = 0;
    EVP_PKEY_free(key);
    return rv;
}

int net_tls_ctx_new(const char *cert_path, const char *key_path, struct net_tls_ctx **out,
                    char *errmsg)
{
    struct net_tls_ctx *t = calloc(1, sizeof *t);
    int rv = NET_NOMEM;

    if (t == NULL)
        return NET_NOMEM;
    ERR_clear_error();
    t->ssl_ctx = SSL_CTX_new(TLS_server_method());
    if (t->ssl_ctx == NULL || configure(t->ssl_ctx) != 0) {
        set_errmsg(errmsg, "TLS setup: %s", ossl_reason());
        goto err;
    }
    rv = load_pair(t->ssl_ctx, cert_path, key_path, errmsg);
    if (rv != 0)
        goto err;
    *out = t;
    return 0;

err:
    ERR_clear_error();
    net_tls_ctx_free(t);
    return rv;
}

void net_tls_ctx_free(struct net_tls_ctx *ctx)
{
    if (ctx == NULL)
        return;
    SSL_CTX_free(ctx->ssl_ctx);
    free(ctx);
}

/* A session of ssl_ctx over two memory BIOs, not yet told its side. */
static struct net_tls *session_new(SSL_CTX *ssl_ctx)
{
    struct net_tls *t = calloc(1, sizeof *t);
    BIO *in = BIO_new(BIO_s_mem());
    BIO *out = BIO_new(BIO_s_mem());

    if (t == NULL || in == NULL || out == NULL)
        goto err;
    t->ssl = SSL_new(ssl_ctx);
    if (t->ssl == NULL)
        goto err;
    /* From here on ssl owns both BIOs; an empty input BIO means "retry
     * later", which is the BIO_s_mem default. */
    SSL_set_bio(t->ssl, in, out);
    t->in = in;
    t->out = out;
    return t;

err:
    ERR_clear_error();
    BIO_free(in);
    BIO_free(out);
    free(t);
    return NULL;
}

struct net_tls *net_tls_new(struct net_tls_ctx *ctx, uint64_t conn_id)
{
    struct net_tls *t = session_new(ctx->ssl_ctx);

    if (t == NULL)
        return NULL;
    SSL_set_accept_state(t->ssl);
    t->conn_id = conn_id;
    return t;
}

/* RFC 6066 allows only host names in server_name, never IP literals. */
static bool is_host_name(const char *host)
{
    struct in_addr v4;

    return strchr(host, ':') == NULL && inet_pton(AF_INET, host, &v4) != 1;
}

/* Starts the handshake: the ClientHello lands in the output BIO. */
static int client_start(struct net_tls *t, const char *host)
{
    static const unsigned char alpn[] = "\x08" ALPN_HTTP11;
    int rv;

    /* SSL_set_alpn_protos() alone returns 0 on success. */
    if (SSL_set_alpn_protos(t->ssl, alpn, sizeof alpn - 1) != 0 ||
        (is_host_name(host) && SSL_set_tlsext_host_name(t->ssl, host) != 1))
        return -1;
    SSL_set_connect_state(t->ssl);
    rv = SSL_do_handshake(t->ssl);
    return rv == 1 || SSL_get_error(t->ssl, rv) == SSL_ERROR_WANT_READ ? 0 : -1;
}

/* The server's certificate is not verified (SSL_VERIFY_NONE), as an interim
 * until the encrypted, mutually authenticated peer channel replaces this
 * route: replicas advertise IP addresses and may carry certificates for
 * public names, or self-signed ones, so no one name check or trust store fits
 * every cluster. This keeps out passive eavesdroppers only. An active man in
 * the middle can finish the handshake in the peer's place: it does not learn
 * the cluster secret (requests carry an HMAC of it, and raft/ de-duplicates a
 * replayed request), but it reads the forwarded commands and can forge
 * replies, which carry no MAC. Hence docs/operations.md: keep peer traffic
 * on a private network until then. */
struct net_tls *net_tls_client_new(const char *host)
{
    SSL_CTX *ssl_ctx;
    struct net_tls *t = NULL;

    ERR_clear_error(); /* SSL_get_error() must see this call's errors only */
    ssl_ctx = SSL_CTX_new(TLS_client_method());
    if (ssl_ctx != NULL && configure_common(ssl_ctx) == 0) {
        SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_NONE, NULL);
        t = session_new(ssl_ctx);
    }
    /* The session, if any, holds its own reference to the context. */
    SSL_CTX_free(ssl_ctx);
    if (t != NULL) {
        t->is_client = true;
        if (client_start(t, host) != 0) {
            net_tls_free(t);
            t = NULL;
        }
    }
    ERR_clear_error();
    return t;
}

void net_tls_free(struct net_tls *t)
{
    if (t == NULL)
        return;
    SSL_free(t->ssl);
    free(t);
}

/* Records why the session failed, and leaves the error queue empty. */
static int fail(struct net_tls *t)
{
    snprintf(t->errmsg, sizeof t->errmsg, "tls: %s", ossl_reason());
    ERR_clear_error();
    return NET_PROTOCOL;
}

int net_tls_feed(struct net_tls *t, const uint8_t *data, size_t len)
{
    size_t written;

    if (BIO_write_ex(t->in, data, len, &written) != 1) {
        ERR_clear_error();
        return NET_NOMEM;
    }
    return 0;
}

static void log_established(const struct net_tls *t)
{
    const unsigned char *alpn;
    unsigned alpn_len;
    char who[32];

    SSL_get0_alpn_selected(t->ssl, &alpn, &alpn_len);
    if (t->is_client)
        snprintf(who, sizeof who, "client");
    else
        snprintf(who, sizeof who, "conn=%" PRIu64, t->conn_id);
    LOG_DEBUG("http %s tls %s %s alpn=%.*s", who, SSL_get_version(t->ssl),
              SSL_get_cipher_name(t->ssl), alpn_len > 0 ? (int)alpn_len : 4,
              alpn_len > 0 ? (const char *)alpn : "none");
}

int net_tls_read(struct net_tls *t, uint8_t *buf, size_t cap, size_t *got)
{
    int rv;

    ERR_clear_error(); /* SSL_get_error() must see this call's errors only */
    rv = SSL_read_ex(t->ssl, buf, cap, got);
    if (!t->is_established && SSL_is_init_finished(t->ssl)) {
        t->is_established = true;
        log_established(t);
    }
    if (rv == 1)
        return 0;
    *got = 0;
    switch (SSL_get_error(t->ssl, rv)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    default:
        return fail(t);
    }
}

int net_tls_write(struct net_tls *t, const void *data, size_t len)
{
    size_t written;

    /* Without SSL_MODE_ENABLE_PARTIAL_WRITE it is all or nothing, and a
     * memory BIO takes everything. */
    ERR_clear_error();
    if (SSL_write_ex(t->ssl, data, len, &written) != 1)
        return fail(t);
    return 0;
}

void net_tls_close_notify(struct net_tls *t)
{
    if (SSL_is_init_finished(t->ssl))
        SSL_shutdown(t->ssl); /* 0: sent, the peer's not seen; we do not wait for it */
    ERR_clear_error();
}

bool net_tls_is_established(const struct net_tls *t)
{
    return t->is_established;
}

size_t net_tls_pending(const struct net_tls *t)
{
    return BIO_ctrl_pending(t->out);
}

void net_tls_take(struct net_tls *t, uint8_t *buf, size_t len)
{
    size_t n = 0;
    int rv = BIO_read_ex(t->out, buf, len, &n);

    assert(rv == 1 && n == len);
}

const char *net_tls_errmsg(const struct net_tls *t)
{
    return t->errmsg;
}
