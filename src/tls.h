/*
 * tls.h — certificate and key pairs (tls.c): the client listener's, and the
 * one presented to Redis.
 *
 * The configuration's pair is checked at load (tls_check_pair: OpenSSL),
 * turned into GnuTLS credentials for MHD (tls_prepare), and installed
 * (tls_install): every later handshake on the listener presents it, so a
 * reload rotates the certificate without restarting the listener.
 */
#ifndef BROKER_TLS_H
#define BROKER_TLS_H

#include <stdbool.h>
#include <stddef.h>

struct secret;
struct tls_creds;
struct ssl_ctx_st; /* OpenSSL's SSL_CTX */

/* The protocol versions and ciphers the listener accepts: TLS 1.2 and 1.3,
 * ECDHE key exchange, AEAD ciphers only (a GnuTLS priority string). */
#define TLS_PRIORITIES                                                                                       \
	"SECURE:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-CIPHER-ALL:+AES-256-GCM:+CHACHA20-POLY1305:"            \
	"+AES-128-GCM:-MAC-ALL:+AEAD:-KX-ALL:+ECDHE-ECDSA:+ECDHE-RSA:-SIGN-RSA-SHA1:-SIGN-ECDSA-SHA1:"       \
	"%SERVER_PRECEDENCE"

/* Whether cert_pem (the certificate, then any chain) and key (a PEM
 * private key, unencrypted) form a pair a listener can serve: every
 * certificate parses, the key is the first one's, it has not expired. On
 * success, a one-line description (subject, expiry) into desc. -1 and a
 * reason (never the key) in err otherwise. */
int tls_check_pair(const char *cert_pem, size_t cert_len, const struct secret *key, char *desc,
                   size_t desclen, char *err, size_t errlen);

/* Checks the pair as tls_check_pair does, then makes it what ctx (an
 * OpenSSL client context: redisio.h) presents when a server asks for a
 * client certificate. 0, or -1 and a reason (never the key) in err. */
int tls_client_identity(struct ssl_ctx_st *ctx, const char *cert_pem, size_t cert_len,
                        const struct secret *key, char *err, size_t errlen);

/* A certificate (PEM, leaf then chain) and its key as credentials for the
 * listener, or NULL and err. */
struct tls_creds *tls_prepare(const char *cert_pem, size_t cert_len, const struct secret *key_pem, char *err,
                              size_t errlen);

/* Whether c holds the same pair as the credentials installed now. */
bool tls_same(const struct tls_creds *c);

/* Makes c the pair every new handshake presents (takes it). The one it
 * replaces stays valid for connections that began with it, until
 * tls_shutdown. */
void tls_install(struct tls_creds *c);

/* Frees credentials never installed. NULL is fine. */
void tls_creds_free(struct tls_creds *c);

/* Whether credentials are installed (the listener speaks TLS). */
bool tls_active(void);

/* MHD_OPTION_HTTPS_CERT_CALLBACK's function (a gnutls_certificate_retrieve_function2). */
void *tls_cert_callback(void);

/* Frees every pair installed: only once no listener runs. */
void tls_shutdown(void);

#endif
