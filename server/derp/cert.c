/* server/derp/cert.c: see cert.h. OpenSSL 3: an EC P-256 key and a v3
 * certificate valid from an hour ago for ten years, whose subject
 * alternative name matches the host clients dial (Go's client checks it
 * besides the pin). */
#include "server/derp/cert.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#define VALID_SECONDS (10L * 365 * 24 * 3600)

static bool file_exists(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int add_san(X509 *x, const char *host)
{
    unsigned char addr[16];
    char value[300];
    X509_EXTENSION *ext;
    bool is_ip = inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
    int rv;

    snprintf(value, sizeof value, "%s:%s", is_ip ? "IP" : "DNS", host);
    ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, value);
    if (ext == NULL)
        return -1;
    rv = X509_add_ext(x, ext, -1) == 1 ? 0 : -1;
    X509_EXTENSION_free(ext);
    return rv;
}

static X509 *make_cert(EVP_PKEY *key, const char *host)
{
    X509 *x = X509_new();
    X509_NAME *name;
    unsigned char serial[16];
    BIGNUM *bn = NULL;

    if (x == NULL || RAND_bytes(serial, sizeof serial) != 1)
        goto err;
    serial[0] &= 0x7f; /* a positive serial number */
    bn = BN_bin2bn(serial, sizeof serial, NULL);
    if (bn == NULL || BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) == NULL ||
        X509_set_version(x, 2) != 1 || X509_gmtime_adj(X509_getm_notBefore(x), -3600) == NULL ||
        X509_gmtime_adj(X509_getm_notAfter(x), VALID_SECONDS) == NULL ||
        X509_set_pubkey(x, key) != 1)
        goto err;
    name = X509_get_subject_name(x);
    if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)host, -1, -1,
                                   0) != 1 ||
        X509_set_issuer_name(x, name) != 1 || add_san(x, host) != 0 ||
        X509_sign(x, key, EVP_sha256()) == 0)
        goto err;
    BN_free(bn);
    return x;
err:
    BN_free(bn);
    X509_free(x);
    return NULL;
}

static int write_pem(const char *path, mode_t mode, EVP_PKEY *key, X509 *cert)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode);
    FILE *f;
    int ok;

    if (fd < 0)
        return -1;
    f = fdopen(fd, "w");
    if (f == NULL) {
        close(fd);
        return -1;
    }
    ok = key != NULL ? PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL)
                     : PEM_write_X509(f, cert);
    return fclose(f) == 0 && ok == 1 ? 0 : -1;
}

int derp_cert_ensure(const char *dir, const char *host, char *cert_path, char *key_path, size_t cap,
                     char *errmsg)
{
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    int rv = -1;

    if ((size_t)snprintf(cert_path, cap, "%s/cert.pem", dir) >= cap ||
        (size_t)snprintf(key_path, cap, "%s/key.pem", dir) >= cap) {
        snprintf(errmsg, 256, "%s: path too long", dir);
        return -1;
    }
    if (file_exists(cert_path) && file_exists(key_path))
        return 0;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(errmsg, 256, "%s: %s", dir, strerror(errno));
        return -1;
    }
    /* A half-written pair from an interrupted start is made again. */
    unlink(cert_path);
    unlink(key_path);
    key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    cert = key != NULL ? make_cert(key, host) : NULL;
    if (cert == NULL) {
        snprintf(errmsg, 256, "cannot make a self-signed certificate for %s", host);
        goto out;
    }
    if (write_pem(key_path, 0600, key, NULL) != 0 || write_pem(cert_path, 0644, NULL, cert) != 0) {
        snprintf(errmsg, 256, "cannot write %s: %s", dir, strerror(errno));
        goto out;
    }
    rv = 0;
out:
    X509_free(cert);
    EVP_PKEY_free(key);
    return rv;
}

int derp_cert_pin(const char *cert_path, char out[DERP_CERT_PIN_MAX], char *errmsg)
{
    FILE *f = fopen(cert_path, "r");
    X509 *cert = f != NULL ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    unsigned char *der = NULL;
    unsigned char digest[32];
    int len;
    size_t n;

    if (f != NULL)
        fclose(f);
    len = cert != NULL ? i2d_X509(cert, &der) : -1;
    X509_free(cert);
    if (len <= 0 || EVP_Digest(der, (size_t)len, digest, NULL, EVP_sha256(), NULL) != 1) {
        OPENSSL_free(der);
        snprintf(errmsg, 256, "%s: not a PEM certificate", cert_path);
        return -1;
    }
    OPENSSL_free(der);
    n = (size_t)snprintf(out, DERP_CERT_PIN_MAX, "sha256-raw:");
    for (size_t i = 0; i < sizeof digest; i++)
        n += (size_t)snprintf(out + n, DERP_CERT_PIN_MAX - n, "%02x", digest[i]);
    return 0;
}
