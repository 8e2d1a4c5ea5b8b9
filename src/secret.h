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

struct secret {
	unsigned char *data; /* owned; NULL when unset */
	size_t len;
	char fingerprint[17]; /* hex of SHA-256(data)[0..8), NUL-terminated */
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

#endif
