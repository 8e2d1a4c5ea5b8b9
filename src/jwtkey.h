/*
 * jwtkey.h — JWS algorithms and the keys that verify them.
 *
 * An algorithm is one bit, so an allow-list is a mask; each algorithm is
 * bound to one key type. A key is immutable once built and may be shared by
 * every thread. No Lua, no JSON, no network: jwt.c (tokens) and jwk.c (JWK
 * documents) build on this.
 */
#ifndef BROKER_JWTKEY_H
#define BROKER_JWTKEY_H

#include <stdbool.h>
#include <stddef.h>

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
 * Verifies sig (siglen bytes, as the JWS carries it) over input with k under
 * the algorithm alg (one bit). Fails when k may not verify alg, when the
 * signature has the wrong length for alg or k, or does not verify. 0 or -1.
 */
int jwt_key_verify(const struct jwt_key *k, unsigned alg, const char *input, size_t inlen,
                   const unsigned char *sig, size_t siglen);

/* The longest signature of any algorithm, in bytes (an RSA-8192 one). */
#define JWT_SIG_MAX (JWT_RSA_MAX_BITS / 8)

/* Whether n bytes hold no control character (below 0x20, or 0x7f): the rule
 * for kids, subjects and identity headers. */
bool jwt_printable(const char *s, size_t n);

/* "HS256" -> JWT_HS256; 0 for an unknown or unsupported name (and "none"). */
unsigned jwt_alg_from_name(const char *name);

/* JWT_HS256 -> "HS256"; NULL unless alg is exactly one known bit. */
const char *jwt_alg_name(unsigned alg);

/* As jwt_alg_from_name for the len bytes at name (no NUL needed: a name
 * with an embedded NUL is unknown). */
unsigned jwt_alg_from_text(const char *name, size_t len);

#endif
