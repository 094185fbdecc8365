/* tests/lib/tlscert.h: a throwaway self-signed certificate for the TLS tests
 * (OpenSSL 3, EC P-256, valid from a minute ago for an hour). Failures are
 * cmocka assertion failures. */
#ifndef CONCORD_TESTS_LIB_TLSCERT_H
#define CONCORD_TESTS_LIB_TLSCERT_H

/* Writes a PEM certificate for CN=common_name to cert_path and its key to
 * key_path, and the same key encrypted under the passphrase "secret" to
 * encrypted_key_path unless that is NULL. */
void testlib_make_certificate(const char *common_name, const char *cert_path, const char *key_path,
                              const char *encrypted_key_path);

#endif
