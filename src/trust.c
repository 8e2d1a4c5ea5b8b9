/*
 * trust.c — the trust anchors of Courier and JWKS calls.
 *
 * Owns building the X509 store a ca_file stands for (the system's bundle,
 * as libcurl would load it, plus the file's certificates) and handing it to
 * libcurl's OpenSSL through CURLOPT_SSL_CTX_FUNCTION, so each new TLS
 * connection verifies against it. The bundle is parsed once per store (a
 * configuration load), never per connection. It must never trust ca_file
 * alone in place of the system's anchors, nor accept an empty or unreadable
 * ca_file (fail closed), nor widen trust with a CA path.
 */
#include "trust.h"

#include <curl/curl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TRUST_CERTS_MAX 100000

/* The test override, or libcurl's built-in CA file; NULL: OpenSSL's default. */
static const char *system_bundle(char **owned)
{
	const char *env = getenv(TRUST_TEST_BUNDLE_ENV);
	CURL *e;
	char *path = NULL;

	*owned = NULL;
	if (env && *env)
		return env;
	e = curl_easy_init();
	if (!e)
		return NULL;
	if (curl_easy_getinfo(e, CURLINFO_CAINFO, &path) == CURLE_OK && path)
		*owned = strdup(path);
	curl_easy_cleanup(e);
	return *owned;
}

/* Adds every PEM certificate of path to store: their number, or -1. */
static int add_file(X509_STORE *store, const char *path)
{
	BIO *bio = BIO_new_file(path, "r");
	X509 *x;
	int n = 0;

	if (!bio)
		return -1;
	while (n < TRUST_CERTS_MAX && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
		if (!X509_STORE_add_cert(store, x)) {
			X509_free(x);
			n = -1;
			break;
		}
		X509_free(x);
		n++;
	}
	BIO_free(bio);
	ERR_clear_error();
	return n;
}

struct x509_store_st *trust_load(const char *ca_file, char *err, size_t errlen)
{
	X509_STORE *store = X509_STORE_new();
	char *owned = NULL;
	const char *bundle;
	int n;

	if (!store) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	/* As libcurl sets up its own store: trusted certificates first, and an
	 * intermediate in ca_file may be an anchor. */
	X509_STORE_set_flags(store, X509_V_FLAG_TRUSTED_FIRST | X509_V_FLAG_PARTIAL_CHAIN);
	bundle = system_bundle(&owned);
	if (bundle ? add_file(store, bundle) <= 0 : X509_STORE_set_default_paths(store) != 1) {
		snprintf(err, errlen, "cannot read the system's CA bundle %s",
		         bundle ? bundle : "(OpenSSL's default)");
		goto fail;
	}
	n = ca_file ? add_file(store, ca_file) : 1;
	if (n <= 0) {
		snprintf(err, errlen, n < 0 ? "cannot read %s" : "%s holds no PEM certificate", ca_file);
		goto fail;
	}
	free(owned);
	ERR_clear_error();
	return store;
fail:
	free(owned);
	X509_STORE_free(store);
	ERR_clear_error();
	return NULL;
}

void trust_free(struct x509_store_st *store)
{
	X509_STORE_free(store);
}

/* libcurl calls this for each new TLS connection, after it set up its own
 * store (ca_file's alone): the context verifies with ours instead. */
static CURLcode on_ssl_ctx(CURL *e, void *ctx, void *arg)
{
	(void)e;
	SSL_CTX_set1_cert_store(ctx, arg);
	return CURLE_OK;
}

void trust_apply(void *e, const char *ca_file, struct x509_store_st *store)
{
	const char *env = getenv(TRUST_TEST_BUNDLE_ENV);
	const char *file = store && ca_file ? ca_file : (env && *env ? env : NULL);

	curl_easy_setopt(e, CURLOPT_CAPATH, NULL);
	curl_easy_setopt(e, CURLOPT_PROXY_CAPATH, NULL);
	if (file) {
		curl_easy_setopt(e, CURLOPT_CAINFO, file);
		curl_easy_setopt(e, CURLOPT_PROXY_CAINFO, file);
	}
	curl_easy_setopt(e, CURLOPT_SSL_CTX_FUNCTION, store && ca_file ? on_ssl_ctx : NULL);
	curl_easy_setopt(e, CURLOPT_SSL_CTX_DATA, store && ca_file ? (void *)store : NULL);
}
