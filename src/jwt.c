/*
 * jwt.c — verifying a requester's JWT (JWS compact serialisation).
 *
 * Owns the token's syntax (three canonical base64url segments), the header
 * checks, the choice among the keys it is given (jwtkey.c checks each
 * signature) and the registered claims (exp, nbf, iat, iss, aud, the
 * subject). It must never take the algorithm from the token alone, never
 * accept "none" or an unknown "crit" extension, never parse a payload whose
 * signature has not been checked, and never put any part of a token into an
 * error message. Where keys come from is the caller's business.
 */
#include "jwt.h"

#include <lauxlib.h>
#include <lua.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "json.h"

#define HEADER_CACHE_MAX 512 /* longest header text push_header keeps decoded */

/* Writes why into err (if any); returns JWT_REFUSED. */
static enum jwt_status fail(char *err, size_t errlen, const char *why)
{
	if (err && errlen)
		snprintf(err, errlen, "%s", why);
	return JWT_REFUSED;
}

/* ---- base64url ----------------------------------------------------------- */

/* Each base64url character as its standard-alphabet twin ('-' is '+', '_'
 * is '/'); 0 for a byte outside the alphabet. One table look-up per byte
 * both checks and translates. */
static const unsigned char std_alphabet[256] = {
    ['A'] = 'A', ['B'] = 'B', ['C'] = 'C', ['D'] = 'D', ['E'] = 'E', ['F'] = 'F', ['G'] = 'G', ['H'] = 'H',
    ['I'] = 'I', ['J'] = 'J', ['K'] = 'K', ['L'] = 'L', ['M'] = 'M', ['N'] = 'N', ['O'] = 'O', ['P'] = 'P',
    ['Q'] = 'Q', ['R'] = 'R', ['S'] = 'S', ['T'] = 'T', ['U'] = 'U', ['V'] = 'V', ['W'] = 'W', ['X'] = 'X',
    ['Y'] = 'Y', ['Z'] = 'Z', ['a'] = 'a', ['b'] = 'b', ['c'] = 'c', ['d'] = 'd', ['e'] = 'e', ['f'] = 'f',
    ['g'] = 'g', ['h'] = 'h', ['i'] = 'i', ['j'] = 'j', ['k'] = 'k', ['l'] = 'l', ['m'] = 'm', ['n'] = 'n',
    ['o'] = 'o', ['p'] = 'p', ['q'] = 'q', ['r'] = 'r', ['s'] = 's', ['t'] = 't', ['u'] = 'u', ['v'] = 'v',
    ['w'] = 'w', ['x'] = 'x', ['y'] = 'y', ['z'] = 'z', ['0'] = '0', ['1'] = '1', ['2'] = '2', ['3'] = '3',
    ['4'] = '4', ['5'] = '5', ['6'] = '6', ['7'] = '7', ['8'] = '8', ['9'] = '9', ['-'] = '+', ['_'] = '/',
};

bool jwt_is_compact(const char *s, size_t len)
{
	const char *d1, *d2, *end = s + len;
	size_t outside = 0;

	if (len < 5 || len > 16384 || !(d1 = memchr(s, '.', len)) ||
	    !(d2 = memchr(d1 + 1, '.', (size_t)(end - d1 - 1))))
		return false;
	if (d1 == s || d2 == d1 + 1 || d2 + 1 == end)
		return false;
	/* The two dots are the only bytes outside the alphabet (a third dot is
	 * one more): counted without a branch per byte. */
	for (size_t i = 0; i < len; i++)
		outside += std_alphabet[(unsigned char)s[i]] == 0;
	return outside == 2;
}

/* Value of a base64url character (already checked). */
static int b64url_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	return c == '-' ? 62 : 63;
}

/* Translates n base64url characters to the standard alphabet in dst;
 * returns -1 at the first byte outside the alphabet. */
static int to_std_alphabet(const char *src, size_t n, unsigned char *dst)
{
	unsigned char bad = 0;

	for (size_t i = 0; i < n; i++) {
		dst[i] = std_alphabet[(unsigned char)src[i]];
		bad |= (unsigned char)(dst[i] == 0);
	}
	return bad ? -1 : 0;
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
	need = full / 4 * 3 + (rem ? rem - 1 : 0);
	if (need > outcap)
		return -1;
	/* Canonical: the bits the last character carries beyond the data are 0. */
	if (rem) {
		if (to_std_alphabet(in + full, rem, tail))
			return -1;
		last = b64url_value((unsigned char)in[len - 1]);
		if ((rem == 2 && (last & 0x0f)) || (rem == 3 && (last & 0x03)))
			return -1;
	}
	for (size_t off = 0; off < full; off += sizeof(chunk)) {
		size_t n = full - off < sizeof(chunk) ? full - off : sizeof(chunk);
		if (to_std_alphabet(in + off, n, chunk) ||
		    EVP_DecodeBlock(out + done, chunk, (int)n) != (int)(n / 4 * 3))
			return -1;
		done += n / 4 * 3;
	}
	if (rem) {
		unsigned char three[3];
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

/* Decodes a base64url segment holding a JSON object and pushes the table. */
static int push_object(lua_State *L, const char *seg, size_t seglen, unsigned char *buf, size_t bufcap)
{
	size_t n;

	if (jwt_b64url_decode(seg, seglen, buf, bufcap, &n))
		return -1;
	return json_decode_object(L, (const char *)buf, n);
}

/*
 * push_object for a header, through a one-entry cache in L's registry: the
 * base64url text of the last header decoded, and its table. Tokens from one
 * issuer share their header byte for byte, so it is decoded once per issuer
 * and thread, not once per token. The table is only ever read (check_header);
 * what the configuration allows is checked afresh each time.
 */
static const char LAST_HEADER_TEXT = 't';
static const char LAST_HEADER = 'h';

static int push_header(lua_State *L, const char *seg, size_t seglen, unsigned char *buf, size_t bufcap)
{
	const char *text;
	size_t n;
	bool same;

	lua_rawgetp(L, LUA_REGISTRYINDEX, &LAST_HEADER_TEXT);
	text = lua_tolstring(L, -1, &n);
	same = text && n == seglen && memcmp(text, seg, n) == 0;
	lua_pop(L, 1);
	if (same) {
		if (lua_rawgetp(L, LUA_REGISTRYINDEX, &LAST_HEADER) == LUA_TTABLE)
			return 0;
		lua_pop(L, 1);
	}
	if (push_object(L, seg, seglen, buf, bufcap))
		return -1;
	if (seglen <= HEADER_CACHE_MAX) {
		lua_pushvalue(L, -1);
		lua_rawsetp(L, LUA_REGISTRYINDEX, &LAST_HEADER);
		lua_pushlstring(L, seg, seglen);
		lua_rawsetp(L, LUA_REGISTRYINDEX, &LAST_HEADER_TEXT);
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

/* ---- header -------------------------------------------------------------- */

/* Whether keys hold, or may hold (a lookup), a key usable with alg. */
static bool have_key(const struct jwt_keys *keys, unsigned alg)
{
	if (alg & JWT_HMAC_ALGS)
		return keys->hmac != NULL;
	return (jwt_key_algs(keys->fixed) & alg) || keys->key;
}

/* typ values compare case-insensitively, "application/" optional (RFC 7515 §4.1.9). */
static bool typ_equals(const char *got, size_t n, const char *want)
{
	static const char app[] = "application/";
	size_t wn = strlen(want);

	if (n >= sizeof(app) - 1 && strncasecmp(got, app, sizeof(app) - 1) == 0) {
		got += sizeof(app) - 1;
		n -= sizeof(app) - 1;
	}
	if (wn >= sizeof(app) - 1 && strncasecmp(want, app, sizeof(app) - 1) == 0) {
		want += sizeof(app) - 1;
		wn -= sizeof(app) - 1;
	}
	return n == wn && strncasecmp(got, want, n) == 0 && memchr(got, '\0', n) == NULL;
}

/*
 * Checks the header table at the top of the stack; returns the algorithm and
 * copies the kid, if any, to kid ("" when absent). kid is attacker input:
 * bounded, printable, compared exactly later. jku, x5u, x5c and jwk are
 * ignored: keys never come from the token.
 */
static unsigned check_header(lua_State *L, const struct jwt_rules *rules, const struct jwt_keys *keys,
                             char *kid, const char **why)
{
	unsigned a;
	const char *name;
	size_t n;
	int type;

	lua_getfield(L, -1, "alg");
	if (lua_type(L, -1) != LUA_TSTRING) {
		lua_pop(L, 1);
		*why = "header has no alg";
		return 0;
	}
	name = lua_tolstring(L, -1, &n);
	a = jwt_alg_from_text(name, n);
	if (!a)
		*why = n == 4 && memcmp(name, "none", 4) == 0 ? "alg none refused" : "alg not supported";
	lua_pop(L, 1);
	if (!a)
		return 0;
	if (!(rules->algorithms & a)) {
		*why = "alg not allowed";
		return 0;
	}
	if (!have_key(keys, a)) {
		*why = "no key for alg";
		return 0;
	}
	/* We implement no JWS extension, so any crit is one we do not understand
	 * (RFC 7515 §4.1.11), b64=false (RFC 7797) included. */
	lua_getfield(L, -1, "crit");
	if (!lua_isnil(L, -1)) {
		lua_pop(L, 1);
		*why = "crit header not supported";
		return 0;
	}
	lua_pop(L, 1);
	type = lua_getfield(L, -1, "typ");
	if (type != LUA_TNIL && type != LUA_TSTRING) {
		lua_pop(L, 1);
		*why = "typ not a string";
		return 0;
	}
	if (rules->typ) {
		const char *t = type == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
		if (!t || !typ_equals(t, n, rules->typ)) {
			lua_pop(L, 1);
			*why = "typ mismatch";
			return 0;
		}
	}
	lua_pop(L, 1);
	kid[0] = '\0';
	type = lua_getfield(L, -1, "kid");
	if (type != LUA_TNIL) {
		const char *k = type == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
		if (!k || n == 0 || n > JWT_KID_MAX || !jwt_printable(k, n)) {
			lua_pop(L, 1);
			*why = "kid invalid";
			return 0;
		}
		memcpy(kid, k, n);
		kid[n] = '\0';
	}
	lua_pop(L, 1);
	return a;
}

/*
 * Verifies the signature with the keys that may check alg: the HMAC key for
 * HS*; else the fixed key and the looked-up keys bound to alg, restricted to
 * the token's kid when it names one (the fixed key has no kid and is tried
 * whatever the token names). JWT_UNKNOWN_KID when no looked-up key has the
 * kid (the caller may ask its source for a refresh).
 */
static enum jwt_status verify_signature(const struct jwt_keys *keys, unsigned alg, const char *kid,
                                        const char *input, size_t inlen, const unsigned char *sig,
                                        size_t siglen, const char **why)
{
	const struct jwt_key *k;
	bool tried = false, kid_seen = false;
	int rc = -1;

	*why = "bad signature";
	if (alg & JWT_HMAC_ALGS)
		return jwt_key_verify(keys->hmac, alg, input, inlen, sig, siglen) ? JWT_REFUSED : JWT_OK;
	if (jwt_key_algs(keys->fixed) & alg) {
		tried = true;
		if (jwt_key_verify(keys->fixed, alg, input, inlen, sig, siglen) == 0)
			return JWT_OK;
	}
	if (!keys->key || !keys->key(keys->ctx, 0)) {
		if (!tried)
			*why = "no key for alg";
		return JWT_REFUSED;
	}
	for (size_t i = 0; rc != 0 && (k = keys->key(keys->ctx, i)); i++) {
		const char *kk = jwt_key_kid(k);
		if (kid[0]) {
			if (!kk || strcmp(kk, kid) != 0)
				continue;
			kid_seen = true;
		}
		if (!(jwt_key_algs(k) & alg))
			continue;
		tried = true;
		rc = jwt_key_verify(k, alg, input, inlen, sig, siglen);
	}
	if (rc == 0)
		return JWT_OK;
	/* No looked-up key has this kid (a key with the kid is always tried). */
	if (kid[0] && !kid_seen) {
		*why = tried ? "bad signature (public_key), unknown kid (jwks)" : "unknown kid";
		return JWT_UNKNOWN_KID;
	}
	if (!tried)
		*why = kid_seen ? "key for kid not bound to alg" : "no key for alg";
	return JWT_REFUSED;
}

/* ---- claims -------------------------------------------------------------- */

enum time_check { NOT_BEFORE_NOW, NOT_AFTER_NOW };

/*
 * Checks a numeric time claim of the table at the top, read once. Absent: an
 * error when missing says so (a required claim), else fine. Present, its value
 * goes to *value when given. Compared as doubles: exact for any realistic
 * time, and no overflow on huge values.
 */
struct time_claim {
	const char *name;
	enum time_check how;
	const char *missing;  /* NULL: optional */
	const char *bad_type; /* not a number */
	const char *bad_time; /* outside the window */
};

static int check_time(lua_State *L, const struct time_claim *c, double now, double leeway, double *value,
                      const char **why)
{
	double t;
	int type = lua_getfield(L, -1, c->name);

	if (type == LUA_TNIL) {
		lua_pop(L, 1);
		if (!c->missing)
			return 0;
		*why = c->missing;
		return -1;
	}
	if (type != LUA_TNUMBER) {
		lua_pop(L, 1);
		*why = c->bad_type;
		return -1;
	}
	t = lua_tonumber(L, -1);
	lua_pop(L, 1);
	/* exp: now must be before exp (RFC 7519 §4.1.4); nbf/iat: not after now. */
	if ((c->how == NOT_BEFORE_NOW && !(now - leeway < t)) ||
	    (c->how == NOT_AFTER_NOW && !(t <= now + leeway))) {
		*why = c->bad_time;
		return -1;
	}
	if (value)
		*value = t;
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
		if (n >= subjectlen || !jwt_printable(s, n))
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

static int check_claims(lua_State *L, const struct jwt_rules *cfg, time_t now, char *subject,
                        size_t subjectlen, const char **why)
{
	/* A credential that never expires is refused (RFC 8725 §3.10's spirit). */
	static const struct time_claim exp = {"exp", NOT_BEFORE_NOW, "token has no exp", "exp not a number",
	                                      "token expired"};
	static const struct time_claim nbf = {"nbf", NOT_AFTER_NOW, NULL, "nbf not a number",
	                                      "token not yet valid"};
	struct time_claim iat = {"iat", NOT_AFTER_NOW, NULL, "iat not a number", "iat in the future"};
	double leeway = cfg->leeway_s > 0 ? (double)cfg->leeway_s : 0.0, issued = 0;
	const char *claim = cfg->subject_claim ? cfg->subject_claim : "sub";

	if (cfg->max_age_s > 0)
		iat.missing = "token has no iat (max_age_s is set)";
	if (check_time(L, &exp, (double)now, leeway, NULL, why) ||
	    check_time(L, &nbf, (double)now, leeway, NULL, why) ||
	    check_time(L, &iat, (double)now, leeway, &issued, why))
		return -1;
	if (cfg->max_age_s > 0 && !((double)now - issued <= (double)cfg->max_age_s + leeway)) {
		*why = "token too old (max_age_s)";
		return -1;
	}
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
	const struct jwt_rules *rules;
	const struct jwt_keys *keys;
	const char *token;
	struct segments seg;
	unsigned char *buf; /* room for any decoded segment */
	size_t bufcap;
	time_t now;
	char *subject;
	size_t subjectlen;
	const char *why;
	enum jwt_status status; /* of the signature check */
};

/*
 * Runs under lua_pcall, so that running out of Lua memory (a capped
 * allocator) is a refusal, not a panic. Returns the claims table, or nothing
 * with v->why set.
 */
static int verify_protected(lua_State *L)
{
	struct verify_ctx *v = lua_touserdata(L, 1);
	unsigned char sig[JWT_SIG_MAX];
	char kid[JWT_KID_MAX + 1];
	unsigned a;
	size_t siglen;

	lua_settop(L, 0);
	if (!lua_checkstack(L, 8)) {
		v->why = "out of memory";
		return 0;
	}
	if (push_header(L, v->seg.part[0], v->seg.len[0], v->buf, v->bufcap)) {
		v->why = "header not a base64url JSON object";
		return 0;
	}
	if (!(a = check_header(L, v->rules, v->keys, kid, &v->why)))
		return 0;
	lua_pop(L, 1);

	/* The signature covers the ASCII bytes "header.payload", as sent; the
	 * payload is not parsed before it is checked. */
	if (v->seg.len[2] == 0) {
		v->why = "signature missing";
		return 0;
	}
	if (jwt_b64url_decode(v->seg.part[2], v->seg.len[2], sig, sizeof(sig), &siglen)) {
		v->why = "bad signature";
		return 0;
	}
	v->status = verify_signature(v->keys, a, kid, v->token, v->seg.len[0] + 1 + v->seg.len[1], sig,
	                             siglen, &v->why);
	if (v->status != JWT_OK)
		return 0;

	if (push_object(L, v->seg.part[1], v->seg.len[1], v->buf, v->bufcap)) {
		v->why = "payload not a base64url JSON object";
		return 0;
	}
	if (check_claims(L, v->rules, v->now, v->subject, v->subjectlen, &v->why))
		return 0;
	return 1;
}

enum jwt_status jwt_verify(lua_State *L, const struct jwt_rules *rules, const struct jwt_keys *keys,
                           const char *token, size_t len, time_t now, char *subject, size_t subjectlen,
                           char *err, size_t errlen)
{
	size_t max = rules->max_token_bytes ? rules->max_token_bytes : JWT_DEFAULT_MAX_TOKEN_BYTES;
	struct verify_ctx v = {.rules = rules,
	                       .keys = keys,
	                       .token = token,
	                       .now = now,
	                       .subject = subject,
	                       .subjectlen = subjectlen,
	                       .why = "malformed token",
	                       .status = JWT_REFUSED};
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
		return JWT_OK;
	lua_settop(L, base);
	subject[0] = '\0';
	fail(err, errlen, status == LUA_OK ? v.why : "out of memory");
	return status == LUA_OK && v.status == JWT_UNKNOWN_KID ? JWT_UNKNOWN_KID : JWT_REFUSED;
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
