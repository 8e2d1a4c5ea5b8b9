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

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

struct lua_State;
struct jwt_config;

struct secret;
struct evp_pkey_st;

/* One bit per algorithm, so a tenant's allow-list is a mask. */
enum jwt_alg {
	JWT_HS256 = 1u << 0,
	JWT_HS384 = 1u << 1,
	JWT_HS512 = 1u << 2,
	JWT_RS256 = 1u << 3,
	JWT_RS384 = 1u << 4,
	JWT_RS512 = 1u << 5,
	JWT_PS256 = 1u << 6,
	JWT_PS384 = 1u << 7,
	JWT_PS512 = 1u << 8,
	JWT_ES256 = 1u << 9,
	JWT_ES384 = 1u << 10,
	JWT_EDDSA = 1u << 11,
};

#define JWT_HMAC_ALGS (JWT_HS256 | JWT_HS384 | JWT_HS512)
#define JWT_RSA_ALGS  (JWT_RS256 | JWT_RS384 | JWT_RS512 | JWT_PS256 | JWT_PS384 | JWT_PS512)

/* Longest `kid` accepted, in a token's header or a JWKS. */
#define JWT_KID_MAX 256

/* RSA moduli accepted for verification keys, in bits. */
#define JWT_RSA_MIN_BITS 2048
#define JWT_RSA_MAX_BITS 8192

/*
 * A verification key bound to the algorithms of its type: an HMAC secret
 * verifies HS* only, an RSA key RS* and PS*, an EC P-256 key ES256, a P-384
 * key ES384, an Ed25519 key EdDSA. Immutable once built, so it may be shared
 * by every thread. Opaque.
 */
struct jwt_key;

/* An HMAC key from a secret (copied into OpenSSL's keyed MAC templates). */
struct jwt_key *jwt_key_hmac(const struct secret *s, char *err, size_t errlen);

/* A public key from PEM text ("-----BEGIN PUBLIC KEY-----"). */
struct jwt_key *jwt_key_pem(const char *pem, size_t len, char *err, size_t errlen);

/*
 * A public key from an OpenSSL key; takes ownership of pkey whatever happens.
 * Refuses RSA keys outside JWT_RSA_MIN_BITS..JWT_RSA_MAX_BITS, EC curves other
 * than P-256 and P-384, and every other key type.
 */
struct jwt_key *jwt_key_pkey(struct evp_pkey_st *pkey, char *err, size_t errlen);

/* Narrows a key to the algorithms in algs (a JWK's "alg") and names it (its
 * "kid", NULL for none). Returns 0, or -1 when no algorithm would be left or
 * kid is longer than JWT_KID_MAX. */
int jwt_key_restrict(struct jwt_key *k, const char *kid, unsigned algs);

unsigned jwt_key_algs(const struct jwt_key *k);
const char *jwt_key_kid(const struct jwt_key *k);      /* NULL: no kid */
const char *jwt_key_describe(const struct jwt_key *k); /* "RSA", "EC P-256", ...: for logs */
void jwt_key_free(struct jwt_key *k);

/*
 * Builds cfg's HMAC key from cfg->hmac_secret (when set); config.c calls it
 * once at load, tests after filling a struct by hand. Returns 0 or -1.
 */
int jwt_config_prepare(struct jwt_config *cfg, char *err, size_t errlen);

/* Frees the keys jwt_config_prepare and the loader attached (hmac_key,
 * public_key, jwks); leaves the rest of cfg alone. */
void jwt_config_release(struct jwt_config *cfg);

/* Used when cfg->max_token_bytes is 0, and as the bound of jwt_peek_claims. */
#define JWT_DEFAULT_MAX_TOKEN_BYTES 8192

/* Whether n bytes hold no control character (below 0x20, or 0x7f): the rule
 * for kids, subjects and identity headers. */
bool jwt_printable(const char *s, size_t n);

/* "HS256" -> JWT_HS256; 0 for an unknown or unsupported name (and "none"). */
unsigned jwt_alg_from_name(const char *name);

/* JWT_HS256 -> "HS256"; NULL unless alg is exactly one known bit. */
const char *jwt_alg_name(unsigned alg);

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
