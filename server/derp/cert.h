/* server/derp/cert.h: the relay's self-signed certificate, for replicas with
 * no certificate of their own (the local quickstart): made once, kept in a
 * directory, and pinned in the DERP map through the node's CertName
 * ("sha256-raw:<hex of the SHA-256 of the DER>"), which stock clients
 * verify with no flag of their own. */
#ifndef CONCORD_SERVER_DERP_CERT_H
#define CONCORD_SERVER_DERP_CERT_H

#include <stddef.h>

#define DERP_CERT_PIN_MAX 80 /* "sha256-raw:" + 64 hex + NUL */

/* Makes dir/cert.pem and dir/key.pem (0600) for `host` (an IP address gets
 * an IP SAN, a name a DNS SAN), or keeps them when both exist. The paths
 * are written to cert_path and key_path (cap bytes each). 0 or -1 with
 * errmsg (256 bytes). */
int derp_cert_ensure(const char *dir, const char *host, char *cert_path, char *key_path, size_t cap,
                     char *errmsg);
/* The CertName pin of the first certificate in a PEM file. */
int derp_cert_pin(const char *cert_path, char out[DERP_CERT_PIN_MAX], char *errmsg);

#endif
