/*
 * trust.h — the trust anchors of Courier and JWKS calls (trust.c).
 *
 * A ca_file ADDS anchors to the system's (a private CA, a TLS-inspecting
 * proxy): trust_load builds one X509 store of both, once per load, and
 * trust_apply makes an easy handle verify with it (libcurl over OpenSSL).
 */
#ifndef BROKER_TRUST_H
#define BROKER_TRUST_H

#include <stddef.h>

struct x509_store_st; /* OpenSSL's X509_STORE */

/* The environment variable that replaces the system's CA bundle, for tests
 * only (a bundle the test controls stands in for /etc/ssl/certs). */
#define TRUST_TEST_BUNDLE_ENV "BROKER_TEST_SYSTEM_CA_BUNDLE"

/* The system's anchors plus every certificate of ca_file (PEM; NULL: the
 * system's alone), as a store (one reference, for trust_free), or NULL and
 * a reason in err: ca_file unreadable or without a certificate, or the
 * system's bundle unreadable. */
struct x509_store_st *trust_load(const char *ca_file, char *err, size_t errlen);

/* Drops a reference. NULL is fine. */
void trust_free(struct x509_store_st *store);

/* Sets how the easy handle e verifies its server (and an HTTPS proxy): with
 * store, the system's anchors and ca_file's (ca_file names the handle's TLS
 * configuration, so connections and sessions made under another trust are
 * never reused); without, the system's alone. Never a CA path: with one,
 * libcurl would parse the whole bundle again for each connection. The
 * store must live until e's transfer ends. */
void trust_apply(void *e, const char *ca_file, struct x509_store_st *store);

#endif
