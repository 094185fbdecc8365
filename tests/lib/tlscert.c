/* tests/lib/tlscert.c: see tlscert.h. */
#include "tests/lib/tlscert.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

/* Writes cert, or else key (under passphrase when it is not NULL). */
static void write_pem(const char *path, X509 *cert, EVP_PKEY *key, const char *passphrase)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    if (cert != NULL)
        assert_int_equal(PEM_write_X509(f, cert), 1);
    else if (passphrase != NULL)
        assert_int_equal(
            PEM_write_PrivateKey(f, key, EVP_aes_256_cbc(), NULL, 0, NULL, (void *)passphrase), 1);
    else
        assert_int_equal(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL), 1);
    assert_int_equal(fclose(f), 0);
}

void testlib_make_certificate(const char *common_name, const char *cert_path, const char *key_path,
                              const char *encrypted_key_path)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *cert = X509_new();
    X509_NAME *name;

    assert_non_null(key);
    assert_non_null(cert);
    assert_int_equal(X509_set_version(cert, X509_VERSION_3), 1);
    assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(cert), 1), 1);
    assert_non_null(X509_gmtime_adj(X509_getm_notBefore(cert), -60));
    assert_non_null(X509_gmtime_adj(X509_getm_notAfter(cert), 3600));
    assert_int_equal(X509_set_pubkey(cert, key), 1);
    name = X509_get_subject_name(cert);
    assert_int_equal(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                                (const unsigned char *)common_name, -1, -1, 0),
                     1);
    assert_int_equal(X509_set_issuer_name(cert, name), 1);
    assert_true(X509_sign(cert, key, EVP_sha256()) > 0);
    write_pem(cert_path, cert, NULL, NULL);
    write_pem(key_path, NULL, key, NULL);
    if (encrypted_key_path != NULL)
        write_pem(encrypted_key_path, NULL, key, "secret");
    X509_free(cert);
    EVP_PKEY_free(key);
}
