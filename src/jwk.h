/*
 * jwk.h — JSON Web Keys: a JWKS document parsed into a set of keys.
 *
 * A set is an immutable snapshot of verification keys (struct jwt_key), each
 * with its kid and the algorithms it may verify; it is shared by reference
 * count, so any thread may hold it while a source swaps in a newer one.
 */
#ifndef BROKER_JWK_H
#define BROKER_JWK_H

#include <stddef.h>

struct jwt_key;

#define JWKS_MAX_BYTES (512 * 1024) /* a JWKS document */
#define JWKS_MAX_KEYS  64           /* keys read from one document */

struct jwks_set;

/* Called for each key of a document that is skipped, with why (never key material). */
typedef void (*jwks_skip_fn)(void *ctx, size_t index, const char *kid, const char *why);

/*
 * Parses a JWKS document ({"keys": [...]}). Keys that cannot be used are
 * skipped, each reported to skip (may be NULL). Returns a set with a
 * reference for the caller, or NULL with a reason in err (not JSON, no keys
 * array, no usable key).
 */
struct jwks_set *jwks_parse(const char *json, size_t len, jwks_skip_fn skip, void *ctx, char *err,
                            size_t errlen);

/* Takes one more reference (set may be NULL); returns set. */
struct jwks_set *jwks_set_hold(struct jwks_set *set);

void jwks_set_release(struct jwks_set *set);
size_t jwks_set_size(const struct jwks_set *set);
const struct jwt_key *jwks_set_key(const struct jwks_set *set, size_t i);

#endif
