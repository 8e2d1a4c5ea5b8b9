/*
 * jwt.h — verifying a requester's JWT (JWS compact serialisation).
 *
 * Pure verification: parse, check the algorithm against the tenant's
 * allow-list and the key's type, verify the signature with OpenSSL, check the
 * time and audience claims. JSON goes through lua-cjson on the caller's Lua
 * state; on success the claims table is left on that stack. Never takes the
 * algorithm from the token alone, never accepts "none".
 */
#ifndef BROKER_JWT_H
#define BROKER_JWT_H

#include <stddef.h>
#include <time.h>

struct lua_State;
struct jwt_config;

/* One bit per algorithm, so a tenant's allow-list is a mask. RS/PS/ES/EdDSA
 * take the next bits when their key types are supported. */
enum jwt_alg {
	JWT_HS256 = 1u << 0,
	JWT_HS384 = 1u << 1,
	JWT_HS512 = 1u << 2,
};

#define JWT_HMAC_ALGS (JWT_HS256 | JWT_HS384 | JWT_HS512)

/* Used when cfg->max_token_bytes is 0, and as the bound of jwt_peek_claims. */
#define JWT_DEFAULT_MAX_TOKEN_BYTES 8192

/* "HS256" -> JWT_HS256; 0 for an unknown or unsupported name (and "none"). */
unsigned jwt_alg_from_name(const char *name);

/*
 * Verifies token (len bytes, not NUL-terminated necessarily) under cfg at time
 * now. On success returns 0 and pushes the claims table (integral numbers as
 * Lua integers) and writes the subject (cfg->subject_claim, string or integer)
 * to subject, "" when absent. On failure returns -1, pushes nothing and writes
 * a short reason for the log to err (never the token).
 */
int jwt_verify(struct lua_State *L, const struct jwt_config *cfg, const char *token, size_t len, time_t now,
               char *subject, size_t subjectlen, char *err, size_t errlen);

/*
 * Decodes len bytes of canonical base64url without padding (RFC 7515 §2):
 * refuses '=', '+', '/', whitespace, a length of 4n+1 and unused trailing bits
 * that are not zero, so each byte string has exactly one accepted encoding.
 * Writes at most outcap bytes. Returns 0 with *outlen set, or -1.
 */
int jwt_b64url_decode(const char *in, size_t len, unsigned char *out, size_t outcap, size_t *outlen);

/*
 * Decodes the payload of a three-segment JWT WITHOUT verifying anything (for
 * reading exp from tokens the broker itself received from Courier). Never use
 * it on a requester's token. Returns 0 and pushes the claims table, or -1 and
 * pushes nothing. Tokens over JWT_DEFAULT_MAX_TOKEN_BYTES are refused.
 */
int jwt_peek_claims(struct lua_State *L, const char *token, size_t len);

#endif
