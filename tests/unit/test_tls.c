/* test_tls.c — certificate and key pairs checked at load, the listener's
 * credentials, and a client context's identity (src/tls.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "config.h"
#include "secret.h"
#include "tls.h"

/* A fresh P-256 key. */
static EVP_PKEY *new_key(void)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");

	assert_non_null(k);
	return k;
}

/* A certificate for cn with key's public half, signed by signer (itself
 * when NULL), valid from `from` to `until` seconds from now. */
static X509 *new_cert(const char *cn, EVP_PKEY *key, EVP_PKEY *signer, long from, long until)
{
	X509 *c = X509_new();
	X509_NAME *n;

	assert_non_null(c);
	X509_set_version(c, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(c), 1);
	X509_gmtime_adj(X509_getm_notBefore(c), from);
	X509_gmtime_adj(X509_getm_notAfter(c), until);
	X509_set_pubkey(c, key);
	n = X509_get_subject_name(c);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(c, n);
	assert_true(X509_sign(c, signer ? signer : key, EVP_sha256()) > 0);
	return c;
}

/* PEM text of a certificate (or two) and a key, owned by the caller. */
static char *pem_certs(X509 *a, X509 *b, size_t *len)
{
	BIO *m = BIO_new(BIO_s_mem());
	char *p, *out;
	long n;

	PEM_write_bio_X509(m, a);
	if (b)
		PEM_write_bio_X509(m, b);
	n = BIO_get_mem_data(m, &p);
	out = malloc((size_t)n + 1);
	memcpy(out, p, (size_t)n);
	out[n] = '\0';
	*len = (size_t)n;
	BIO_free(m);
	return out;
}

static void key_secret(EVP_PKEY *k, const char *pass, struct secret *s)
{
	BIO *m = BIO_new(BIO_s_mem());
	char *p;
	long n;

	if (pass)
		PEM_write_bio_PrivateKey(m, k, EVP_aes_256_cbc(), (const unsigned char *)pass,
		                         (int)strlen(pass), NULL, NULL);
	else
		PEM_write_bio_PrivateKey(m, k, NULL, NULL, 0, NULL, NULL);
	n = BIO_get_mem_data(m, &p);
	assert_int_equal(secret_set(s, p, (size_t)n), 0);
	BIO_free(m);
}

static int check(X509 *cert, X509 *chain, EVP_PKEY *key, const char *pass, char *desc, char *err)
{
	struct secret s = {0};
	size_t len;
	char *pem = pem_certs(cert, chain, &len);
	int rc;

	key_secret(key, pass, &s);
	rc = tls_check_pair(pem, len, &s, desc, 384, err, 512);
	secret_clear(&s);
	free(pem);
	return rc;
}

static void t_pair(void **state)
{
	EVP_PKEY *ca = new_key(), *k = new_key(), *other = new_key();
	X509 *root = new_cert("test ca", ca, NULL, -3600, 86400);
	X509 *leaf = new_cert("broker.example", k, ca, -3600, 86400);
	char desc[384], err[512];

	(void)state;
	assert_int_equal(check(leaf, root, k, NULL, desc, err), 0);
	assert_non_null(strstr(desc, "CN=broker.example"));
	assert_non_null(strstr(desc, "2 in chain"));

	/* The key of another certificate: not a pair. */
	assert_int_equal(check(leaf, NULL, other, NULL, desc, err), -1);
	assert_non_null(strstr(err, "does not match the certificate"));
	/* The CA's key is not the leaf's either (only the first certificate counts). */
	assert_int_equal(check(leaf, root, ca, NULL, desc, err), -1);

	/* A passphrase-protected key is refused, never prompted for. */
	assert_int_equal(check(leaf, NULL, k, "hunter2", desc, err), -1);
	assert_non_null(strstr(err, "unencrypted PEM private key"));
	assert_null(strstr(err, "hunter2"));

	EVP_PKEY_free(ca);
	EVP_PKEY_free(k);
	EVP_PKEY_free(other);
	X509_free(root);
	X509_free(leaf);
}

static void t_validity(void **state)
{
	EVP_PKEY *k = new_key();
	X509 *old = new_cert("old", k, NULL, -7200, -3600);
	X509 *future = new_cert("future", k, NULL, 3600, 7200);
	char desc[384], err[512];

	(void)state;
	assert_int_equal(check(old, NULL, k, NULL, desc, err), -1);
	assert_non_null(strstr(err, "expired"));
	assert_int_equal(check(future, NULL, k, NULL, desc, err), -1);
	assert_non_null(strstr(err, "not valid yet"));
	EVP_PKEY_free(k);
	X509_free(old);
	X509_free(future);
}

static void t_garbage(void **state)
{
	EVP_PKEY *k = new_key();
	X509 *c = new_cert("x", k, NULL, -60, 3600);
	struct secret s = {0};
	char desc[384], err[512], *pem, *bad;
	size_t len;

	(void)state;
	key_secret(k, NULL, &s);
	assert_int_equal(tls_check_pair("hello\n", 6, &s, desc, sizeof(desc), err, sizeof(err)), -1);
	assert_non_null(strstr(err, "not a PEM certificate"));
	/* A good leaf followed by a broken certificate. */
	pem = pem_certs(c, NULL, &len);
	bad = malloc(len + 200);
	len = (size_t)snprintf(bad, len + 200,
	                       "%s-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", pem);
	assert_int_equal(tls_check_pair(bad, len, &s, desc, sizeof(desc), err, sizeof(err)), -1);
	assert_non_null(strstr(err, "does not parse"));
	/* No key at all. */
	secret_clear(&s);
	assert_int_equal(tls_check_pair(pem, strlen(pem), &s, desc, sizeof(desc), err, sizeof(err)), -1);
	free(pem);
	free(bad);
	EVP_PKEY_free(k);
	X509_free(c);
}

/* A private key in the certificate's file is refused (that file is read
 * whatever its mode), before anything is parsed. */
static void t_key_in_cert_file(void **state)
{
	EVP_PKEY *k = new_key();
	X509 *c = new_cert("x", k, NULL, -60, 3600);
	struct secret s = {0};
	char desc[384], err[512], *pem, *both;
	size_t len;

	(void)state;
	key_secret(k, NULL, &s);
	pem = pem_certs(c, NULL, &len);
	both = malloc(len + s.len + 1);
	memcpy(both, pem, len);
	memcpy(both + len, s.data, s.len);
	assert_int_equal(tls_check_pair(both, len + s.len, &s, desc, sizeof(desc), err, sizeof(err)), -1);
	assert_non_null(strstr(err, "holds a private key"));
	assert_null(strstr(err, "BEGIN"));
	assert_int_equal(tls_check_pair(pem, len, &s, desc, sizeof(desc), err, sizeof(err)), 0);
	secret_clear(&s);
	free(pem);
	free(both);
	EVP_PKEY_free(k);
	X509_free(c);
}

/* cert, re-signed by signer with an extended key usage (such as "serverAuth"). */
static void with_eku(X509 *cert, EVP_PKEY *signer, const char *eku)
{
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, NULL, NID_ext_key_usage, eku);

	assert_non_null(e);
	assert_int_equal(X509_add_ext(cert, e, -1), 1);
	X509_EXTENSION_free(e);
	assert_true(X509_sign(cert, signer, EVP_sha256()) > 0);
}

/* The pair an OpenSSL client context presents (cluster.redis.cert): the
 * leaf, its chain and its key; checked as the listener's pair is, and a
 * certificate only for servers is refused. */
static void t_client_identity(void **state)
{
	EVP_PKEY *ca = new_key(), *mid = new_key(), *k = new_key(), *other = new_key();
	X509 *root = new_cert("test ca", ca, NULL, -3600, 86400);
	X509 *inter = new_cert("intermediate", mid, ca, -3600, 86400);
	X509 *leaf = new_cert("broker", k, mid, -3600, 86400);
	X509 *server = new_cert("server only", k, mid, -3600, 86400);
	X509 *client = new_cert("client", k, mid, -3600, 86400);
	STACK_OF(X509) *chain = NULL;
	struct secret s = {0};
	char err[512], *pem;
	size_t len;
	SSL_CTX *ctx;

	(void)state;
	(void)root;
	with_eku(server, mid, "serverAuth");
	with_eku(client, mid, "clientAuth,serverAuth");
	key_secret(k, NULL, &s);

	ctx = SSL_CTX_new(TLS_client_method());
	pem = pem_certs(leaf, inter, &len);
	assert_int_equal(tls_client_identity(ctx, pem, len, &s, err, sizeof(err)), 0);
	assert_int_equal(X509_cmp(SSL_CTX_get0_certificate(ctx), leaf), 0);
	assert_non_null(SSL_CTX_get0_privatekey(ctx));
	assert_int_equal(SSL_CTX_get0_chain_certs(ctx, &chain), 1);
	assert_int_equal(sk_X509_num(chain), 1);
	assert_int_equal(X509_cmp(sk_X509_value(chain, 0), inter), 0);
	free(pem);
	SSL_CTX_free(ctx);

	ctx = SSL_CTX_new(TLS_client_method());
	pem = pem_certs(client, NULL, &len);
	assert_int_equal(tls_client_identity(ctx, pem, len, &s, err, sizeof(err)), 0);
	free(pem);
	pem = pem_certs(server, inter, &len);
	assert_int_equal(tls_client_identity(ctx, pem, len, &s, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "not for a client"));
	free(pem);
	secret_clear(&s);
	key_secret(other, NULL, &s);
	pem = pem_certs(leaf, NULL, &len);
	assert_int_equal(tls_client_identity(ctx, pem, len, &s, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "does not match the certificate"));
	free(pem);
	SSL_CTX_free(ctx);

	secret_clear(&s);
	EVP_PKEY_free(ca);
	EVP_PKEY_free(mid);
	EVP_PKEY_free(k);
	EVP_PKEY_free(other);
	X509_free(root);
	X509_free(inter);
	X509_free(leaf);
	X509_free(server);
	X509_free(client);
}

/* The credentials GnuTLS gets, and which pair counts as the one installed. */
static void t_install(void **state)
{
	EVP_PKEY *k = new_key(), *k2 = new_key();
	X509 *c = new_cert("one", k, NULL, -60, 3600), *c2 = new_cert("two", k2, NULL, -60, 3600);
	struct config cfg, cfg2;
	struct tls_creds *a, *b;
	char err[512];

	(void)state;
	memset(&cfg, 0, sizeof(cfg));
	memset(&cfg2, 0, sizeof(cfg2));
	cfg.tls.enabled = cfg2.tls.enabled = true;
	cfg.tls.cert_pem = pem_certs(c, NULL, &cfg.tls.cert_len);
	key_secret(k, NULL, &cfg.tls.key);
	cfg2.tls.cert_pem = pem_certs(c2, NULL, &cfg2.tls.cert_len);
	key_secret(k2, NULL, &cfg2.tls.key);

	assert_false(tls_active());
	a = tls_prepare(cfg.tls.cert_pem, cfg.tls.cert_len, &cfg.tls.key, err, sizeof(err));
	assert_non_null(a);
	assert_false(tls_same(a));
	tls_install(a);
	assert_true(tls_active());
	b = tls_prepare(cfg.tls.cert_pem, cfg.tls.cert_len, &cfg.tls.key, err, sizeof(err));
	assert_true(tls_same(b)); /* the same files again: nothing to rotate */
	tls_creds_free(b);
	b = tls_prepare(cfg2.tls.cert_pem, cfg2.tls.cert_len, &cfg2.tls.key, err, sizeof(err));
	assert_non_null(b);
	assert_false(tls_same(b));
	tls_install(b);
	assert_non_null(tls_cert_callback());
	tls_shutdown();
	assert_false(tls_active());

	free(cfg.tls.cert_pem);
	free(cfg2.tls.cert_pem);
	secret_clear(&cfg.tls.key);
	secret_clear(&cfg2.tls.key);
	EVP_PKEY_free(k);
	EVP_PKEY_free(k2);
	X509_free(c);
	X509_free(c2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(t_pair),
	    cmocka_unit_test(t_validity),
	    cmocka_unit_test(t_garbage),
	    cmocka_unit_test(t_key_in_cert_file),
	    cmocka_unit_test(t_client_identity),
	    cmocka_unit_test(t_install),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
