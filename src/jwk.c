/*
 * jwk.c — JSON Web Keys: one JWK to a key, a JWKS document to a set.
 *
 * Owns the reading of JWK documents into jwt_keys (RSA n/e, EC P-256/P-384
 * x/y, OKP Ed25519 x, built with EVP_PKEY_fromdata) and the reference-counted
 * sets they make. It must never take a symmetric or private key from a
 * document, never keep a key its use, key_ops or alg does not allow for
 * verification, and never report key material (only a kid and a reason).
 */
#include "jwk.h"

#include <lauxlib.h>
#include <lua.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "jwt.h"

/* ------------------------------------------------------------------------ */
/* Sets                                                                      */
/* ------------------------------------------------------------------------ */

struct jwks_set {
	_Atomic int refs;
	size_t n;
	struct jwt_key *keys[JWKS_MAX_KEYS];
};

struct jwks_set *jwks_set_hold(struct jwks_set *set)
{
	if (set)
		atomic_fetch_add_explicit(&set->refs, 1, memory_order_relaxed);
	return set;
}

void jwks_set_release(struct jwks_set *set)
{
	if (!set || atomic_fetch_sub_explicit(&set->refs, 1, memory_order_acq_rel) != 1)
		return;
	for (size_t i = 0; i < set->n; i++)
		jwt_key_free(set->keys[i]);
	free(set);
}

size_t jwks_set_size(const struct jwks_set *set)
{
	return set ? set->n : 0;
}

const struct jwt_key *jwks_set_key(const struct jwks_set *set, size_t i)
{
	return set && i < set->n ? set->keys[i] : NULL;
}

/* ------------------------------------------------------------------------ */
/* Parsing one JWK                                                           */
/* ------------------------------------------------------------------------ */

/* The string field of the table at the top, or NULL (absent or not a string). */
static const char *str_field(lua_State *L, const char *name, size_t *len)
{
	const char *s = NULL;

	if (lua_getfield(L, -1, name) == LUA_TSTRING)
		s = lua_tolstring(L, -1, len);
	lua_pop(L, 1); /* the string stays alive: the table holds it */
	return s;
}

static bool has_field(lua_State *L, const char *name)
{
	bool present = lua_getfield(L, -1, name) != LUA_TNIL;

	lua_pop(L, 1);
	return present;
}

/* Decodes a base64url field into buf (cap bytes). Returns its length, or -1. */
static long b64_field(lua_State *L, const char *name, unsigned char *buf, size_t cap)
{
	size_t len = 0, n = 0;
	const char *s = str_field(L, name, &len);

	if (!s || len == 0 || jwt_b64url_decode(s, len, buf, cap, &n) || n == 0)
		return -1;
	return (long)n;
}

/* Runs fromdata for a public key of type name with the parameters in bld. */
static EVP_PKEY *pkey_fromdata(const char *name, OSSL_PARAM_BLD *bld)
{
	OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
	EVP_PKEY_CTX *ctx = params ? EVP_PKEY_CTX_new_from_name(NULL, name, NULL) : NULL;
	EVP_PKEY *pkey = NULL;

	if (!ctx || EVP_PKEY_fromdata_init(ctx) != 1 ||
	    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
		pkey = NULL;
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	return pkey;
}

static EVP_PKEY *rsa_from_jwk(lua_State *L, const char **why)
{
	unsigned char nb[JWT_RSA_MAX_BITS / 8 + 1], eb[16];
	long nl = b64_field(L, "n", nb, sizeof(nb)), el = b64_field(L, "e", eb, sizeof(eb));
	BIGNUM *n = NULL, *e = NULL;
	OSSL_PARAM_BLD *bld = NULL;
	EVP_PKEY *pkey = NULL;

	if (nl < 0 || el < 0) {
		*why = "RSA key without a valid n and e";
		return NULL;
	}
	n = BN_bin2bn(nb, (int)nl, NULL);
	e = BN_bin2bn(eb, (int)el, NULL);
	/* An even or tiny exponent is not an RSA public key anyone should use. */
	if (!n || !e || !BN_is_odd(e) || BN_is_one(e) || !BN_is_odd(n)) {
		*why = "RSA key with an invalid n or e";
		goto out;
	}
	if (!(bld = OSSL_PARAM_BLD_new()) || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) || !(pkey = pkey_fromdata("RSA", bld)))
		*why = "RSA key refused by OpenSSL";
out:
	OSSL_PARAM_BLD_free(bld);
	BN_free(n);
	BN_free(e);
	return pkey;
}

static EVP_PKEY *ec_from_jwk(lua_State *L, const char **why)
{
	unsigned char x[66], y[66], pub[1 + 2 * 48];
	size_t crvlen = 0, size;
	const char *crv = str_field(L, "crv", &crvlen), *group;
	long xl, yl;
	OSSL_PARAM_BLD *bld = NULL;
	EVP_PKEY *pkey = NULL;
	EVP_PKEY_CTX *check = NULL;

	if (crv && strcmp(crv, "P-256") == 0) {
		size = 32;
		group = "P-256";
	} else if (crv && strcmp(crv, "P-384") == 0) {
		size = 48;
		group = "P-384";
	} else {
		*why = "EC curve not supported (P-256, P-384)";
		return NULL;
	}
	xl = b64_field(L, "x", x, sizeof(x));
	yl = b64_field(L, "y", y, sizeof(y));
	/* RFC 7518 §6.2.1.2: x and y are exactly the curve's size. */
	if (xl != (long)size || yl != (long)size) {
		*why = "EC key with x or y of the wrong length";
		return NULL;
	}
	pub[0] = 0x04; /* uncompressed point */
	memcpy(pub + 1, x, size);
	memcpy(pub + 1 + size, y, size);
	if (!(bld = OSSL_PARAM_BLD_new()) ||
	    !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) ||
	    !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, 1 + 2 * size) ||
	    !(pkey = pkey_fromdata("EC", bld))) {
		*why = "EC key refused by OpenSSL (not a point on the curve?)";
		goto out;
	}
	/* The point must be on the curve and not the identity. */
	check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
	if (!check || EVP_PKEY_public_check(check) != 1) {
		*why = "EC key: not a valid point on the curve";
		EVP_PKEY_free(pkey);
		pkey = NULL;
	}
out:
	EVP_PKEY_CTX_free(check);
	OSSL_PARAM_BLD_free(bld);
	return pkey;
}

static EVP_PKEY *okp_from_jwk(lua_State *L, const char **why)
{
	unsigned char x[33];
	size_t crvlen = 0;
	const char *crv = str_field(L, "crv", &crvlen);
	long xl;
	EVP_PKEY *pkey;

	if (!crv || strcmp(crv, "Ed25519") != 0) {
		*why = "OKP curve not supported (Ed25519)";
		return NULL;
	}
	xl = b64_field(L, "x", x, sizeof(x));
	if (xl != 32) {
		*why = "Ed25519 key with x of the wrong length";
		return NULL;
	}
	pkey = EVP_PKEY_new_raw_public_key_ex(NULL, "ED25519", NULL, x, 32);
	if (!pkey)
		*why = "Ed25519 key refused by OpenSSL";
	return pkey;
}

/* Whether the JWK at the top lists "verify" in key_ops (absent: yes). */
static bool ops_allow_verify(lua_State *L)
{
	bool ok = false;
	int type = lua_getfield(L, -1, "key_ops");

	if (type == LUA_TNIL) {
		ok = true;
	} else if (type == LUA_TTABLE) {
		lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
		for (lua_Integer i = 1; i <= n && !ok && i <= 16; i++) {
			size_t len;
			const char *s;
			lua_rawgeti(L, -1, i);
			s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
			ok = s && strcmp(s, "verify") == 0;
			lua_pop(L, 1);
		}
	}
	lua_pop(L, 1);
	return ok;
}

/*
 * The JWK at the top of the stack as a key, or NULL with why. kid is copied
 * to kid_out ("" when absent) for the skip report.
 */
static struct jwt_key *key_from_jwk(lua_State *L, char *kid_out, const char **why)
{
	static const char *const private_fields[] = {"d", "p", "q", "dp", "dq", "qi", "k"};
	size_t ktylen = 0, kidlen = 0, alglen = 0, uselen = 0;
	const char *kty, *kid, *alg, *use;
	unsigned allowed = ~0u;
	EVP_PKEY *pkey = NULL;
	struct jwt_key *k;
	char err[160];

	kid_out[0] = '\0';
	if (lua_type(L, -1) != LUA_TTABLE) {
		*why = "not a JSON object";
		return NULL;
	}
	kid = str_field(L, "kid", &kidlen);
	if (has_field(L, "kid")) {
		/* As jwt.c checks a token's kid: one accepted here must be matchable. */
		if (!kid || kidlen == 0 || kidlen > JWT_KID_MAX || !jwt_printable(kid, kidlen)) {
			*why = "kid is not a string of 1..256 printable characters";
			return NULL;
		}
		memcpy(kid_out, kid, kidlen + 1);
	} else {
		kid = NULL;
	}
	kty = str_field(L, "kty", &ktylen);
	if (!kty) {
		*why = "no kty";
		return NULL;
	}
	if (strcmp(kty, "oct") == 0) {
		*why = "symmetric (oct) keys are not taken from a JWKS: use hmac_secret";
		return NULL;
	}
	for (size_t i = 0; i < sizeof(private_fields) / sizeof(private_fields[0]); i++)
		if (has_field(L, private_fields[i])) {
			*why = "holds private key material: refused";
			return NULL;
		}
	use = str_field(L, "use", &uselen);
	if (has_field(L, "use") && (!use || strcmp(use, "sig") != 0)) {
		*why = "use is not \"sig\"";
		return NULL;
	}
	if (!ops_allow_verify(L)) {
		*why = "key_ops does not include \"verify\"";
		return NULL;
	}
	alg = str_field(L, "alg", &alglen);
	if (has_field(L, "alg")) {
		allowed = alg ? jwt_alg_from_name(alg) : 0;
		if (!allowed || (allowed & JWT_HMAC_ALGS)) {
			*why = "alg not supported for a public key";
			return NULL;
		}
	}
	if (strcmp(kty, "RSA") == 0)
		pkey = rsa_from_jwk(L, why);
	else if (strcmp(kty, "EC") == 0)
		pkey = ec_from_jwk(L, why);
	else if (strcmp(kty, "OKP") == 0)
		pkey = okp_from_jwk(L, why);
	else
		*why = "kty not supported (RSA, EC, OKP)";
	if (!pkey)
		return NULL;
	if (!(k = jwt_key_pkey(pkey, err, sizeof(err)))) {
		/* RSA size is the likely cause; the reason names no key material. */
		*why = strstr(err, "RSA key of") ? "RSA key shorter than 2048 bits (or over 8192)"
		                                 : "key refused";
		return NULL;
	}
	if (jwt_key_restrict(k, kid, allowed)) {
		*why = "alg does not match the key's type";
		jwt_key_free(k);
		return NULL;
	}
	return k;
}

/* ------------------------------------------------------------------------ */
/* Parsing a document                                                        */
/* ------------------------------------------------------------------------ */

struct parse_ctx {
	const char *json;
	size_t len;
	jwks_skip_fn skip;
	void *skip_ctx;
	struct jwks_set *set;
	const char *why;
};

static int parse_protected(lua_State *L)
{
	struct parse_ctx *p = lua_touserdata(L, 1);
	lua_Integer n;

	lua_settop(L, 0);
	if (json_decode_object(L, p->json, p->len) != 0) {
		p->why = "not a JSON object";
		return 0;
	}
	if (lua_getfield(L, -1, "keys") != LUA_TTABLE) {
		p->why = "no \"keys\" array";
		return 0;
	}
	n = (lua_Integer)lua_rawlen(L, -1);
	for (lua_Integer k = 1; k <= n; k++) {
		char kid[JWT_KID_MAX + 1];
		const char *why = NULL;
		struct jwt_key *key;
		if (p->set->n == JWKS_MAX_KEYS) {
			if (p->skip)
				p->skip(p->skip_ctx, (size_t)k - 1, "",
				        "more than 64 keys: the rest are ignored");
			break;
		}
		lua_rawgeti(L, -1, k);
		key = key_from_jwk(L, kid, &why);
		lua_pop(L, 1);
		if (key)
			p->set->keys[p->set->n++] = key;
		else if (p->skip)
			p->skip(p->skip_ctx, (size_t)k - 1, kid, why ? why : "unusable");
	}
	return 0;
}

struct jwks_set *jwks_parse(const char *json, size_t len, jwks_skip_fn skip, void *ctx, char *err,
                            size_t errlen)
{
	struct parse_ctx p = {.json = json, .len = len, .skip = skip, .skip_ctx = ctx};
	lua_State *L = NULL;
	int status;

	if (!json || len == 0 || len > JWKS_MAX_BYTES) {
		snprintf(err, errlen, "empty or larger than %d bytes", JWKS_MAX_BYTES);
		return NULL;
	}
	if (!(p.set = calloc(1, sizeof(*p.set))) || !(L = luaL_newstate()) || json_open(L)) {
		snprintf(err, errlen, "out of memory");
		goto bad;
	}
	atomic_init(&p.set->refs, 1);
	lua_pushcfunction(L, parse_protected);
	lua_pushlightuserdata(L, &p);
	status = lua_pcall(L, 1, 0, 0);
	if (status != LUA_OK) {
		snprintf(err, errlen, "out of memory");
		goto bad;
	}
	if (p.why) {
		snprintf(err, errlen, "%s", p.why);
		goto bad;
	}
	if (p.set->n == 0) {
		snprintf(err, errlen, "no usable key");
		goto bad;
	}
	lua_close(L);
	return p.set;
bad:
	if (L)
		lua_close(L);
	jwks_set_release(p.set);
	return NULL;
}
