/*
 * secret.h — key material held only in C memory.
 *
 * A secret is read from the environment or from a file that only its owner can
 * read, kept in memory excluded from core dumps, and zeroed when freed. Nothing
 * but its SHA-256 fingerprint (first 8 bytes, hex) may ever be logged.
 */
#ifndef BROKER_SECRET_H
#define BROKER_SECRET_H

#include <stdbool.h>
#include <stddef.h>

#define SECRET_DIGEST_LEN 32 /* SHA-256 */

struct secret {
	unsigned char *data; /* owned; NULL when unset */
	size_t len;
	unsigned char digest[SECRET_DIGEST_LEN]; /* SHA-256(data), for secret_matches */
	char fingerprint[17];                    /* hex of digest[0..8), NUL-terminated */
};

/* Where a secret comes from, as written in the configuration. */
struct secret_ref {
	char *env;  /* environment variable name, or NULL */
	char *file; /* absolute path, or NULL */
};

/*
 * Loads the secret named by ref. A file readable by group or others is refused,
 * as is an empty value. Trailing "\n" / "\r\n" of a file is dropped.
 * Returns 0, or -1 with a message (never containing the value) in err.
 */
int secret_load(const struct secret_ref *ref, struct secret *out, char *err, size_t errlen);

/* Takes a copy of len bytes (used by tests and by the double). */
int secret_set(struct secret *s, const void *data, size_t len);

/* Zeroes and frees the data; the struct may be reused. */
void secret_clear(struct secret *s);

/* Constant-time comparison of a candidate against the secret. */
bool secret_equals(const struct secret *s, const void *candidate, size_t len);

/* For comparing one candidate with many secrets: its digest, taken once
 * (false when it cannot be, or it is longer than any secret can be), then
 * secret_matches for each secret, in constant time. */
bool secret_candidate_digest(const void *candidate, size_t len, unsigned char md[SECRET_DIGEST_LEN]);
bool secret_matches(const struct secret *s, const unsigned char md[SECRET_DIGEST_LEN]);

/* SHA-256 of len bytes into md (SHA-256 fetched once, a digest context per
 * thread); false on failure. */
bool secret_sha256(const void *data, size_t len, unsigned char md[SECRET_DIGEST_LEN]);

/* Whether a URL carries user information ("user:password@host"): a secret
 * written into a configuration, which the broker refuses. */
bool secret_in_url(const char *url);

/* Whether a credential may travel to url: https:// to any host, plain
 * http:// only to a loopback host (localhost, 127.0.0.0/8, [::1]). The one
 * rule for courier.base_url and JWKS URLs. */
bool secret_url_transport_ok(const char *url);

/* The first n bytes of md as 2n hex digits and a NUL, into out. */
void secret_hex(const unsigned char *md, size_t n, char *out);

#endif
