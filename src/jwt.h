/*
 * jwt.h — verifying a requester's JWT (JWS compact serialisation).
 *
 * Pure verification: parse, check the algorithm against the tenant's
 * allow-list and the key's type, verify the signature with the keys the
 * caller gives, check the time and audience claims. JSON goes through
 * lua-cjson on the caller's Lua state; on success the claims table is left
 * on that stack. Never takes the algorithm from the token alone, never
 * accepts "none". Knows nothing of where keys come from (files, JWKS).
 */
#ifndef BROKER_JWT_H
#define BROKER_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "jwtkey.h"

struct lua_State;

/* What a tenant requires of a token besides its signature. */
struct jwt_rules {
	unsigned algorithms;    /* bitmask of enum jwt_alg; required, non-empty */
	char *issuer;           /* NULL: not checked */
	char *audience;         /* NULL: not checked */
	long leeway_s;          /* default 30 */
	size_t max_token_bytes; /* default 8192 */
	char *subject_claim;    /* default "sub" */
	long max_age_s;         /* 0: not checked; else iat required and not older */
	char *typ;              /* NULL: not checked; else the header's typ must match */
};

/*
 * The keys a token may be verified with. hmac checks HS*; fixed (a lone
 * public key, no kid) is tried for the other algorithms it is bound to,
 * whatever kid the token names. key, when set, offers more keys (a JWKS):
 * key(ctx, i) is the i-th, NULL past the last; each is tried when bound to
 * the token's alg and, if the token names a kid, when it has that kid. A
 * lookup that offers no key at all holds no keys yet (not an unknown kid).
 */
struct jwt_keys {
	const struct jwt_key *hmac;
	const struct jwt_key *fixed;
	const struct jwt_key *(*key)(void *ctx, size_t i);
	void *ctx;
};

enum jwt_status {
	JWT_OK = 0,
	JWT_REFUSED = -1,     /* malformed, not allowed, bad signature, claims: err says which */
	JWT_UNKNOWN_KID = -2, /* refused: the token names a kid no offered key has */
};

/* Used when rules->max_token_bytes is 0, and as the bound of jwt_peek_claims. */
#define JWT_DEFAULT_MAX_TOKEN_BYTES 8192

/*
 * Verifies token (len bytes, not NUL-terminated necessarily) under rules with
 * keys at time now. On JWT_OK pushes the claims table (integral numbers as
 * Lua integers) and writes the subject (rules->subject_claim, string or
 * integer) to subject, "" when absent. Otherwise pushes nothing and writes a
 * short reason for the log to err (never the token).
 */
enum jwt_status jwt_verify(struct lua_State *L, const struct jwt_rules *rules, const struct jwt_keys *keys,
                           const char *token, size_t len, time_t now, char *subject, size_t subjectlen,
                           char *err, size_t errlen);

/*
 * Decodes len bytes of canonical base64url without padding (RFC 7515 §2):
 * refuses '=', '+', '/', whitespace, a length of 4n+1 and unused trailing bits
 * that are not zero, so each byte string has exactly one accepted encoding.
 * Writes at most outcap bytes. Returns 0 with *outlen set, or -1.
 */
int jwt_b64url_decode(const char *in, size_t len, unsigned char *out, size_t outcap, size_t *outlen);

/* Whether s is three non-empty base64url segments joined by dots, at most
 * 16 KiB: the shape of a compact JWS (nothing decoded, nothing verified). */
bool jwt_is_compact(const char *s, size_t len);

/*
 * Decodes the payload of a three-segment JWT WITHOUT verifying anything (for
 * reading exp from tokens the broker itself received from Courier). Never use
 * it on a requester's token. Returns 0 and pushes the claims table, or -1 and
 * pushes nothing. Tokens over JWT_DEFAULT_MAX_TOKEN_BYTES are refused.
 */
int jwt_peek_claims(struct lua_State *L, const char *token, size_t len);

#endif
