/*
 * tls.c — certificate and key pairs: the client listener's, and the one the
 * broker presents to Redis (cluster.redis.cert).
 *
 * Owns checking a configured pair (OpenSSL: every certificate parses, the
 * key is the leaf's, the leaf has not expired), making it an OpenSSL client
 * context's identity (tls_client_identity), turning it into GnuTLS
 * credentials for MHD, and the pair every new handshake presents: MHD calls
 * tls_cert_callback during each handshake, which hands out the pair
 * installed last, so a reload rotates the certificate on the running
 * listener. A replaced pair stays allocated until tls_shutdown (a session
 * that began with it keeps pointing at it; GnuTLS never copies it), a few
 * KiB per rotation.
 *
 * It must never log or return key bytes (only the certificate's subject and
 * expiry), never keep a copy of the key's PEM (GnuTLS parses it from the
 * configuration's secret and zeroes its own copy when freed), and never free
 * a pair a listener may still present.
 */
#include "tls.h"

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "secret.h"

/* Certificates in one file: the leaf and its chain. */
#define TLS_CHAIN_MAX 16

struct tls_creds {
	gnutls_pcert_st pcerts[TLS_CHAIN_MAX];
	unsigned n;
	gnutls_privkey_t key;
	unsigned char cert_md[SECRET_DIGEST_LEN]; /* SHA-256 of the certificate file */
	unsigned char key_md[SECRET_DIGEST_LEN];  /* the key secret's digest */
	char desc[384];
	struct tls_creds *next; /* on the retired list */
};

static _Atomic(struct tls_creds *) current;
static pthread_mutex_t retired_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tls_creds *retired;

/* OpenSSL's error queue as one reason (and emptied). */
static void ossl_reason(char *out, size_t len, const char *what)
{
	unsigned long e = ERR_get_error();
	char buf[256] = "";

	if (e)
		ERR_error_string_n(e, buf, sizeof(buf));
	snprintf(out, len, "%s%s%s", what, e ? ": " : "", buf);
	ERR_clear_error();
}

/* A key protected by a passphrase is refused: no prompt, ever. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

int tls_check_pair(const char *cert_pem, size_t cert_len, const struct secret *key, char *desc,
                   size_t desclen, char *err, size_t errlen)
{
	BIO *cb = NULL, *kb = NULL, *tb = NULL;
	X509 *leaf = NULL, *more;
	EVP_PKEY *pk = NULL;
	char subject[256], until[64] = "?";
	int rc = -1, n = 1, len;

	ERR_clear_error();
	if (!key->data || cert_len > (size_t)INT32_MAX || key->len > (size_t)INT32_MAX) {
		snprintf(err, errlen, "no certificate or key");
		goto out;
	}
	/* A key kept in the certificate's file (read whatever its mode, since a
	 * certificate is no secret) would sidestep the key's owner-only rule. */
	if (cert_pem && memmem(cert_pem, cert_len, "PRIVATE KEY", 11)) {
		snprintf(err, errlen,
		         "cert: the file holds a private key: keep the key in its own owner-only file");
		goto out;
	}
	cb = BIO_new_mem_buf(cert_pem, (int)cert_len);
	kb = BIO_new_mem_buf(key->data, (int)key->len);
	if (!cb || !kb) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	if (!(leaf = PEM_read_bio_X509(cb, NULL, no_passphrase, NULL))) {
		ossl_reason(err, errlen, "cert: not a PEM certificate");
		goto out;
	}
	/* The chain after the leaf: each must parse too. */
	while ((more = PEM_read_bio_X509(cb, NULL, no_passphrase, NULL))) {
		X509_free(more);
		if (++n > TLS_CHAIN_MAX) {
			snprintf(err, errlen, "cert: more than %d certificates", TLS_CHAIN_MAX);
			goto out;
		}
	}
	if (ERR_GET_REASON(ERR_peek_last_error()) != PEM_R_NO_START_LINE) {
		ossl_reason(err, errlen, "cert: a certificate of the chain does not parse");
		goto out;
	}
	ERR_clear_error();
	if (!(pk = PEM_read_bio_PrivateKey(kb, NULL, no_passphrase, NULL))) {
		ERR_clear_error(); /* its reason may quote the file: say only what it is not */
		snprintf(err, errlen, "key: not an unencrypted PEM private key");
		goto out;
	}
	if (X509_check_private_key(leaf, pk) != 1) {
		ERR_clear_error();
		snprintf(err, errlen, "key: does not match the certificate (cert and key are not a pair)");
		goto out;
	}
	if (X509_cmp_current_time(X509_get0_notAfter(leaf)) <= 0) {
		snprintf(err, errlen, "cert: has expired");
		goto out;
	}
	if (X509_cmp_current_time(X509_get0_notBefore(leaf)) > 0) {
		snprintf(err, errlen, "cert: is not valid yet");
		goto out;
	}
	X509_NAME_oneline(X509_get_subject_name(leaf), subject, sizeof(subject));
	if ((tb = BIO_new(BIO_s_mem())) && ASN1_TIME_print(tb, X509_get0_notAfter(leaf)) == 1 &&
	    (len = BIO_read(tb, until, (int)sizeof(until) - 1)) > 0)
		until[len] = '\0';
	snprintf(desc, desclen, "\"%s\" (%d in chain, expires %s)", subject, n, until);
	rc = 0;
out:
	ERR_clear_error();
	BIO_free(tb);
	BIO_free(cb);
	BIO_free(kb);
	X509_free(leaf);
	EVP_PKEY_free(pk);
	return rc;
}

int tls_client_identity(struct ssl_ctx_st *ctx, const char *cert_pem, size_t cert_len,
                        const struct secret *key, char *err, size_t errlen)
{
	BIO *cb = NULL, *kb = NULL;
	X509 *leaf = NULL, *more;
	EVP_PKEY *pk = NULL;
	char desc[384];
	int rc = -1;

	if (tls_check_pair(cert_pem, cert_len, key, desc, sizeof(desc), err, errlen) != 0)
		return -1;
	if (!(cb = BIO_new_mem_buf(cert_pem, (int)cert_len)) ||
	    !(kb = BIO_new_mem_buf(key->data, (int)key->len)) ||
	    !(leaf = PEM_read_bio_X509(cb, NULL, no_passphrase, NULL))) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	/* A server's certificate (extended key usage without clientAuth) would
	 * pass every check here and fail every handshake. */
	if (X509_check_purpose(leaf, X509_PURPOSE_SSL_CLIENT, 0) != 1) {
		snprintf(err, errlen,
		         "cert: not for a client (its extended key usage leaves out clientAuth)");
		goto out;
	}
	/* The pair parsed above: what fails now is memory, or OpenSSL refusing
	 * a key or signature too weak for its security level (its reason says
	 * which; a certificate's reason never holds key material). */
	if (SSL_CTX_use_certificate(ctx, leaf) != 1 || SSL_CTX_clear_chain_certs(ctx) != 1) {
		ossl_reason(err, errlen, "cert: OpenSSL cannot present it");
		goto out;
	}
	while ((more = PEM_read_bio_X509(cb, NULL, no_passphrase, NULL)))
		if (SSL_CTX_add0_chain_cert(ctx, more) != 1) {
			X509_free(more);
			ossl_reason(err, errlen, "cert: OpenSSL cannot present its chain");
			goto out;
		}
	ERR_clear_error(); /* the chain's end */
	if (!(pk = PEM_read_bio_PrivateKey(kb, NULL, no_passphrase, NULL)) ||
	    SSL_CTX_use_PrivateKey(ctx, pk) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
		ERR_clear_error(); /* say only what failed */
		snprintf(
		    err, errlen,
		    "key: OpenSSL cannot use it with the certificate (too weak for its security level?)");
		goto out;
	}
	rc = 0;
out:
	ERR_clear_error();
	BIO_free(cb);
	BIO_free(kb);
	X509_free(leaf);
	EVP_PKEY_free(pk);
	return rc;
}

void tls_creds_free(struct tls_creds *c)
{
	if (!c)
		return;
	for (unsigned i = 0; i < c->n; i++)
		gnutls_pcert_deinit(&c->pcerts[i]);
	if (c->key)
		gnutls_privkey_deinit(c->key); /* GnuTLS zeroes the key's numbers */
	free(c);
}

struct tls_creds *tls_prepare(const char *cert_pem, size_t cert_len, const struct secret *key_pem, char *err,
                              size_t errlen)
{
	struct tls_creds *c = calloc(1, sizeof(*c));
	gnutls_datum_t cert = {(unsigned char *)cert_pem, (unsigned)cert_len};
	gnutls_datum_t key = {key_pem->data, (unsigned)key_pem->len};
	unsigned n = TLS_CHAIN_MAX;
	int rc;

	if (!c) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (tls_check_pair(cert_pem, cert_len, key_pem, c->desc, sizeof(c->desc), err, errlen) != 0)
		goto fail;
	rc = gnutls_pcert_list_import_x509_raw(c->pcerts, &n, &cert, GNUTLS_X509_FMT_PEM, 0);
	if (rc < 0) {
		snprintf(err, errlen, "cert: GnuTLS cannot use it: %s", gnutls_strerror(rc));
		goto fail;
	}
	c->n = n;
	if ((rc = gnutls_privkey_init(&c->key)) < 0 ||
	    (rc = gnutls_privkey_import_x509_raw(c->key, &key, GNUTLS_X509_FMT_PEM, NULL, 0)) < 0) {
		snprintf(err, errlen, "key: GnuTLS cannot use it: %s", gnutls_strerror(rc));
		goto fail;
	}
	if (!secret_sha256(cert_pem, cert_len, c->cert_md)) {
		snprintf(err, errlen, "cannot hash the certificate");
		goto fail;
	}
	memcpy(c->key_md, key_pem->digest, sizeof(c->key_md));
	return c;
fail:
	tls_creds_free(c);
	return NULL;
}

bool tls_same(const struct tls_creds *c)
{
	const struct tls_creds *now = atomic_load(&current);

	return now && c && memcmp(now->cert_md, c->cert_md, sizeof(c->cert_md)) == 0 &&
	       memcmp(now->key_md, c->key_md, sizeof(c->key_md)) == 0;
}

void tls_install(struct tls_creds *c)
{
	struct tls_creds *old;

	if (!c)
		return;
	log_msg("info", "tls: new connections get certificate %s", c->desc);
	pthread_mutex_lock(&retired_lock);
	old = atomic_exchange(&current, c);
	if (old) {
		old->next = retired;
		retired = old;
	}
	pthread_mutex_unlock(&retired_lock);
}

bool tls_active(void)
{
	return atomic_load(&current) != NULL;
}

/* Called by GnuTLS (through MHD) in every handshake on the listener. */
static int retrieve(gnutls_session_t session, const gnutls_datum_t *req_ca_rdn, int nreqs,
                    const gnutls_pk_algorithm_t *pk_algos, int pk_algos_length, gnutls_pcert_st **pcert,
                    unsigned int *pcert_length, gnutls_privkey_t *privkey)
{
	struct tls_creds *c = atomic_load(&current);

	(void)session;
	(void)req_ca_rdn;
	(void)nreqs;
	(void)pk_algos;
	(void)pk_algos_length;
	if (!c)
		return -1; /* fails the handshake */
	*pcert = c->pcerts;
	*pcert_length = c->n;
	*privkey = c->key;
	return 0;
}

void *tls_cert_callback(void)
{
	gnutls_certificate_retrieve_function2 *f = retrieve;

	return (void *)f;
}

void tls_shutdown(void)
{
	struct tls_creds *c;

	pthread_mutex_lock(&retired_lock);
	c = atomic_exchange(&current, NULL);
	tls_creds_free(c);
	while (retired) {
		c = retired;
		retired = c->next;
		tls_creds_free(c);
	}
	pthread_mutex_unlock(&retired_lock);
}
