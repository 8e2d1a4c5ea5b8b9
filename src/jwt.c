/*
 * jwt.c — verifying a requester's JWT (JWS compact serialisation).
 *
 * Owns the token's syntax (three canonical base64url segments), the binding
 * of each algorithm to a key type, signature checks and the registered claims
 * (exp, nbf, iat, iss, aud, the subject). It must never take the algorithm
 * from the token alone, never accept "none" or an unknown "crit" extension,
 * never parse a payload whose signature has not been checked, and never put
 * any part of a token into an error message.
 */
#include "jwt.h"

#include <lauxlib.h>
#include <lua.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "json.h"

/* ---- algorithms ---------------------------------------------------------- */

/*
 * Every algorithm is bound to one key type: a token naming HS256 is only ever
 * checked with the HMAC secret, so a public key can never be used as an HMAC
 * secret (the classic RS256→HS256 confusion). New families add a key type, a
 * row here and a case in verify_signature().
 */
enum key_type {
	KEY_HMAC,
};

struct alg {
	const char *name;
	unsigned bit;
	enum key_type key;
	const char *digest; /* OpenSSL digest name */
	size_t siglen;      /* exact signature length in bytes */
};

static const struct alg algs[] = {
    {"HS256", JWT_HS256, KEY_HMAC, "SHA256", 32},
    {"HS384", JWT_HS384, KEY_HMAC, "SHA384", 48},
    {"HS512", JWT_HS512, KEY_HMAC, "SHA512", 64},
};

#define N_ALGS  (sizeof(algs) / sizeof(algs[0]))
#define MAX_SIG 64

static const struct alg *alg_lookup(const char *name, size_t len)
{
	for (size_t i = 0; i < N_ALGS; i++)
		if (strlen(algs[i].name) == len && memcmp(algs[i].name, name, len) == 0)
			return &algs[i];
	return NULL;
}

unsigned jwt_alg_from_name(const char *name)
{
	const struct alg *a = name ? alg_lookup(name, strlen(name)) : NULL;

	return a ? a->bit : 0;
}

/* ---- base64url ----------------------------------------------------------- */

/* Value of a base64url character, or -1. */
static int b64url_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

/* Translates 4*n base64url characters (already validated) to the standard
 * alphabet in dst. */
static void to_std_alphabet(const char *src, size_t n, unsigned char *dst)
{
	for (size_t i = 0; i < n; i++)
		dst[i] = src[i] == '-' ? '+' : src[i] == '_' ? '/' : (unsigned char)src[i];
}

int jwt_b64url_decode(const char *in, size_t len, unsigned char *out, size_t outcap, size_t *outlen)
{
	unsigned char chunk[1024]; /* a multiple of 4 characters */
	unsigned char tail[4];
	size_t full = len / 4 * 4, rem = len % 4, need, done = 0;
	int last;

	*outlen = 0;
	if (rem == 1)
		return -1;
	for (size_t i = 0; i < len; i++)
		if (b64url_value((unsigned char)in[i]) < 0)
			return -1;
	need = full / 4 * 3 + (rem ? rem - 1 : 0);
	if (need > outcap)
		return -1;
	/* Canonical: the bits the last character carries beyond the data are 0. */
	if (rem) {
		last = b64url_value((unsigned char)in[len - 1]);
		if ((rem == 2 && (last & 0x0f)) || (rem == 3 && (last & 0x03)))
			return -1;
	}
	for (size_t off = 0; off < full; off += sizeof(chunk)) {
		size_t n = full - off < sizeof(chunk) ? full - off : sizeof(chunk);
		to_std_alphabet(in + off, n, chunk);
		if (EVP_DecodeBlock(out + done, chunk, (int)n) != (int)(n / 4 * 3))
			return -1;
		done += n / 4 * 3;
	}
	if (rem) {
		unsigned char three[3];
		to_std_alphabet(in + full, rem, tail);
		memset(tail + rem, '=', 4 - rem);
		if (EVP_DecodeBlock(three, tail, 4) != 3)
			return -1;
		memcpy(out + done, three, rem - 1);
		done += rem - 1;
	}
	*outlen = done;
	return 0;
}

/* ---- helpers ------------------------------------------------------------- */

static int fail(char *err, size_t errlen, const char *why)
{
	if (err && errlen)
		snprintf(err, errlen, "%s", why);
	return -1;
}

/* The three segments of a compact JWS: [0,d1), (d1,d2), (d2,len). */
struct segments {
	const char *part[3];
	size_t len[3];
};

static int split(const char *token, size_t len, struct segments *seg)
{
	const char *d1 = memchr(token, '.', len), *d2;

	if (!d1)
		return -1;
	d2 = memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - token));
	if (!d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - token)))
		return -1;
	seg->part[0] = token;
	seg->len[0] = (size_t)(d1 - token);
	seg->part[1] = d1 + 1;
	seg->len[1] = (size_t)(d2 - d1 - 1);
	seg->part[2] = d2 + 1;
	seg->len[2] = len - (size_t)(d2 + 1 - token);
	return 0;
}

/* JSON whose first token is '{' decodes to an object (cjson gives a table for
 * arrays too, so the text is checked, not the Lua type). */
static bool is_json_object(const unsigned char *buf, size_t len)
{
	size_t i = 0;

	while (i < len && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\r' || buf[i] == '\n'))
		i++;
	return i < len && buf[i] == '{';
}

/* Decodes a base64url segment holding a JSON object and pushes the table. */
static int push_object(lua_State *L, const char *seg, size_t seglen, unsigned char *buf, size_t bufcap)
{
	size_t n;

	if (jwt_b64url_decode(seg, seglen, buf, bufcap, &n) || !is_json_object(buf, n))
		return -1;
	/* json_decode's integer pass walks nested tables two stack slots per
	 * level without lua_checkstack (json.c, integerise): a header nested 32
	 * deep wrote past the Lua stack before any signature was checked. Reserve
	 * the room here; harmless once json.c checks for itself. */
	if (!lua_checkstack(L, 2 * JSON_MAX_DEPTH + 24))
		return -1;
	if (json_decode(L, (const char *)buf, n))
		return -1;
	if (lua_type(L, -1) != LUA_TTABLE) {
		lua_pop(L, 1);
		return -1;
	}
	return 0;
}

/* Exact byte comparison of a Lua string at idx with a C string. */
static bool lua_string_equals(lua_State *L, int idx, const char *want)
{
	size_t n;
	const char *s;

	if (lua_type(L, idx) != LUA_TSTRING)
		return false;
	s = lua_tolstring(L, idx, &n);
	return n == strlen(want) && memcmp(s, want, n) == 0;
}

/* ---- signatures ---------------------------------------------------------- */

static int verify_hmac(const struct alg *a, const struct secret *key, const char *input, size_t inlen,
                       const unsigned char *sig, size_t siglen)
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	size_t maclen = 0;
	int ok;

	if (!key->data || key->len == 0)
		return -1;
	if (!EVP_Q_mac(NULL, "HMAC", NULL, a->digest, NULL, key->data, key->len, (const unsigned char *)input,
	               inlen, mac, sizeof(mac), &maclen))
		return -1;
	ok = maclen == a->siglen && siglen == maclen && CRYPTO_memcmp(mac, sig, maclen) == 0;
	OPENSSL_cleanse(mac, sizeof(mac));
	return ok ? 0 : -1;
}

/* Whether cfg holds a key usable with a's key type. */
static bool have_key(const struct jwt_config *cfg, const struct alg *a)
{
	switch (a->key) {
	case KEY_HMAC:
		return cfg->hmac_secret.data && cfg->hmac_secret.len > 0;
	}
	return false;
}

static int verify_signature(const struct jwt_config *cfg, const struct alg *a, const char *input,
                            size_t inlen, const unsigned char *sig, size_t siglen)
{
	switch (a->key) {
	case KEY_HMAC:
		return verify_hmac(a, &cfg->hmac_secret, input, inlen, sig, siglen);
	}
	return -1;
}

/* ---- header -------------------------------------------------------------- */

/* Checks the header table at the top of the stack; returns the algorithm. */
static const struct alg *check_header(lua_State *L, const struct jwt_config *cfg, const char **why)
{
	const struct alg *a;
	const char *name;
	size_t n;

	lua_getfield(L, -1, "alg");
	if (lua_type(L, -1) != LUA_TSTRING) {
		lua_pop(L, 1);
		*why = "header has no alg";
		return NULL;
	}
	name = lua_tolstring(L, -1, &n);
	a = alg_lookup(name, n);
	if (!a)
		*why = n == 4 && memcmp(name, "none", 4) == 0 ? "alg none refused" : "alg not supported";
	lua_pop(L, 1);
	if (!a)
		return NULL;
	if (!(cfg->algorithms & a->bit)) {
		*why = "alg not allowed";
		return NULL;
	}
	if (!have_key(cfg, a)) {
		*why = "no key for alg";
		return NULL;
	}
	/* We implement no JWS extension, so any crit is one we do not understand
	 * (RFC 7515 §4.1.11), b64=false (RFC 7797) included. */
	lua_getfield(L, -1, "crit");
	if (!lua_isnil(L, -1)) {
		lua_pop(L, 1);
		*why = "crit header not supported";
		return NULL;
	}
	lua_pop(L, 1);
	lua_getfield(L, -1, "typ");
	if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING) {
		lua_pop(L, 1);
		*why = "typ not a string";
		return NULL;
	}
	lua_pop(L, 1);
	return a;
}

/* ---- claims -------------------------------------------------------------- */

enum time_check { NOT_BEFORE_NOW, NOT_AFTER_NOW };

/*
 * Checks an optional numeric time claim of the table at the top. Compared as
 * doubles: exact for any realistic time, and no overflow on huge values.
 */
static int check_time(lua_State *L, const char *claim, enum time_check how, double now, double leeway,
                      const char **why, const char *bad_type, const char *bad_time)
{
	double t;
	int type = lua_getfield(L, -1, claim);

	if (type == LUA_TNIL) {
		lua_pop(L, 1);
		return 0;
	}
	if (type != LUA_TNUMBER) {
		lua_pop(L, 1);
		*why = bad_type;
		return -1;
	}
	t = lua_tonumber(L, -1);
	lua_pop(L, 1);
	/* exp: now must be before exp (RFC 7519 §4.1.4); nbf/iat: not after now. */
	if ((how == NOT_BEFORE_NOW && !(now - leeway < t)) ||
	    (how == NOT_AFTER_NOW && !(t <= now + leeway))) {
		*why = bad_time;
		return -1;
	}
	return 0;
}

static int check_audience(lua_State *L, const char *audience)
{
	int type = lua_getfield(L, -1, "aud");
	int ok = 0;

	if (type == LUA_TSTRING) {
		ok = lua_string_equals(L, -1, audience);
	} else if (type == LUA_TTABLE) {
		lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
		for (lua_Integer i = 1; i <= n && !ok; i++) {
			lua_rawgeti(L, -1, i);
			ok = lua_string_equals(L, -1, audience);
			lua_pop(L, 1);
		}
	}
	lua_pop(L, 1);
	return ok ? 0 : -1;
}

/* Writes the subject claim of the table at the top ("" when absent). */
static int read_subject(lua_State *L, const char *claim, char *subject, size_t subjectlen)
{
	int type = lua_getfield(L, -1, claim);
	int rc = 0;

	if (type == LUA_TNIL) {
		/* already "" */
	} else if (type == LUA_TSTRING) {
		size_t n;
		const char *s = lua_tolstring(L, -1, &n);
		if (n >= subjectlen)
			rc = -1;
		for (size_t i = 0; i < n && rc == 0; i++)
			if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
				rc = -1;
		if (rc == 0) {
			memcpy(subject, s, n);
			subject[n] = '\0';
		}
	} else if (type == LUA_TNUMBER && lua_isinteger(L, -1)) {
		int w = snprintf(subject, subjectlen, "%lld", (long long)lua_tointeger(L, -1));
		if (w < 0 || (size_t)w >= subjectlen) {
			subject[0] = '\0';
			rc = -1;
		}
	} else {
		rc = -1;
	}
	lua_pop(L, 1);
	return rc;
}

static int check_claims(lua_State *L, const struct jwt_config *cfg, time_t now, char *subject,
                        size_t subjectlen, const char **why)
{
	double leeway = cfg->leeway_s > 0 ? (double)cfg->leeway_s : 0.0;
	const char *claim = cfg->subject_claim ? cfg->subject_claim : "sub";
	int has_exp = lua_getfield(L, -1, "exp") != LUA_TNIL;

	/* A credential that never expires is refused (RFC 8725 §3.10's spirit). */
	lua_pop(L, 1);
	if (!has_exp) {
		*why = "token has no exp";
		return -1;
	}
	if (check_time(L, "exp", NOT_BEFORE_NOW, (double)now, leeway, why, "exp not a number",
	               "token expired") ||
	    check_time(L, "nbf", NOT_AFTER_NOW, (double)now, leeway, why, "nbf not a number",
	               "token not yet valid") ||
	    check_time(L, "iat", NOT_AFTER_NOW, (double)now, leeway, why, "iat not a number",
	               "iat in the future"))
		return -1;
	if (cfg->issuer) {
		lua_getfield(L, -1, "iss");
		bool ok = lua_string_equals(L, -1, cfg->issuer);
		lua_pop(L, 1);
		if (!ok) {
			*why = "issuer mismatch";
			return -1;
		}
	}
	if (cfg->audience && check_audience(L, cfg->audience)) {
		*why = "audience mismatch";
		return -1;
	}
	if (read_subject(L, claim, subject, subjectlen)) {
		subject[0] = '\0';
		*why = "subject claim invalid";
		return -1;
	}
	return 0;
}

/* ---- entry points -------------------------------------------------------- */

/* What the protected part of jwt_verify works on. */
struct verify_ctx {
	const struct jwt_config *cfg;
	const char *token;
	struct segments seg;
	unsigned char *buf; /* room for any decoded segment */
	size_t bufcap;
	time_t now;
	char *subject;
	size_t subjectlen;
	const char *why;
};

/*
 * Runs under lua_pcall, so that running out of Lua memory (a capped
 * allocator) is a refusal, not a panic. Returns the claims table, or nothing
 * with v->why set.
 */
static int verify_protected(lua_State *L)
{
	struct verify_ctx *v = lua_touserdata(L, 1);
	unsigned char sig[MAX_SIG];
	const struct alg *a;
	size_t siglen;

	lua_settop(L, 0);
	if (!lua_checkstack(L, 8)) {
		v->why = "out of memory";
		return 0;
	}
	if (push_object(L, v->seg.part[0], v->seg.len[0], v->buf, v->bufcap)) {
		v->why = "header not a base64url JSON object";
		return 0;
	}
	if (!(a = check_header(L, v->cfg, &v->why)))
		return 0;
	lua_pop(L, 1);

	/* The signature covers the ASCII bytes "header.payload", as sent; the
	 * payload is not parsed before it is checked. */
	if (v->seg.len[2] == 0) {
		v->why = "signature missing";
		return 0;
	}
	if (jwt_b64url_decode(v->seg.part[2], v->seg.len[2], sig, sizeof(sig), &siglen) ||
	    verify_signature(v->cfg, a, v->token, v->seg.len[0] + 1 + v->seg.len[1], sig, siglen)) {
		v->why = "bad signature";
		return 0;
	}

	if (push_object(L, v->seg.part[1], v->seg.len[1], v->buf, v->bufcap)) {
		v->why = "payload not a base64url JSON object";
		return 0;
	}
	if (check_claims(L, v->cfg, v->now, v->subject, v->subjectlen, &v->why))
		return 0;
	return 1;
}

int jwt_verify(lua_State *L, const struct jwt_config *cfg, const char *token, size_t len, time_t now,
               char *subject, size_t subjectlen, char *err, size_t errlen)
{
	size_t max = cfg->max_token_bytes ? cfg->max_token_bytes : JWT_DEFAULT_MAX_TOKEN_BYTES;
	struct verify_ctx v = {.cfg = cfg,
	                       .token = token,
	                       .now = now,
	                       .subject = subject,
	                       .subjectlen = subjectlen,
	                       .why = "malformed token"};
	int base = lua_gettop(L), status;

	if (!subject || subjectlen == 0)
		return fail(err, errlen, "no room for subject");
	subject[0] = '\0';
	if (!token || len == 0)
		return fail(err, errlen, "empty token");
	if (len > max)
		return fail(err, errlen, "token too large");
	if (split(token, len, &v.seg))
		return fail(err, errlen, "token is not three segments");
	if (!lua_checkstack(L, 4) || !(v.buf = malloc(len)))
		return fail(err, errlen, "out of memory");
	v.bufcap = len;

	lua_pushcfunction(L, verify_protected);
	lua_pushlightuserdata(L, &v);
	status = lua_pcall(L, 1, 1, 0);
	free(v.buf);
	if (status == LUA_OK && lua_type(L, -1) == LUA_TTABLE)
		return 0;
	lua_settop(L, base);
	subject[0] = '\0';
	return fail(err, errlen, status == LUA_OK ? v.why : "out of memory");
}

int jwt_peek_claims(lua_State *L, const char *token, size_t len)
{
	struct segments seg;
	unsigned char *buf;
	int rc;

	if (!token || len == 0 || len > JWT_DEFAULT_MAX_TOKEN_BYTES || split(token, len, &seg))
		return -1;
	if (seg.len[0] == 0 || seg.len[2] == 0 || !lua_checkstack(L, 4) || !(buf = malloc(len)))
		return -1;
	rc = push_object(L, seg.part[1], seg.len[1], buf, len);
	free(buf);
	return rc;
}
