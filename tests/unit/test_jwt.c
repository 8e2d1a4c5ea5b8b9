/*
 * test_jwt.c — tests for src/jwt.c.
 *
 * Tokens are minted here with OpenSSL's HMAC, and a few were generated once
 * with PyJWT 2.6 (an independent implementation) and pasted as constants.
 * Every call checks the Lua stack: one table more on success, unchanged on
 * failure.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "jwt.h"
#include "secret.h"
#include "testkeys.h"

#define NOW 1700000100LL

/* PyJWT 2.6.0: jwt.encode({"sub":"alice","iss":"https://app.example.com",
 * "aud":"courier-broker","iat":1700000000,"exp":1700003600}, "secret", alg) */
static const char PY_HS256[] =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiJhbGljZSIsImlzcyI6Imh0dHBzOi8vYXBwLmV4YW1wbGUuY29tIiwiYXVkIjoiY291cmllci1icm9rZXIiLCJpYXQi"
    "OjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMzYwMH0.z2cpplD9QN7jdA0tdSvLiFTtfzcJfgObH7emOuUta0s";
static const char PY_HS384[] =
    "eyJhbGciOiJIUzM4NCIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiJhbGljZSIsImlzcyI6Imh0dHBzOi8vYXBwLmV4YW1wbGUuY29tIiwiYXVkIjoiY291cmllci1icm9rZXIiLCJpYXQi"
    "OjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMzYwMH0.qKvraMlq8NzeZ5Z8K7vfmAns07pRCTdK2gMa3z4oZyF3Gqe7hVxMSb_"
    "eT2nEQ9NC";
static const char PY_HS512[] =
    "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiJhbGljZSIsImlzcyI6Imh0dHBzOi8vYXBwLmV4YW1wbGUuY29tIiwiYXVkIjoiY291cmllci1icm9rZXIiLCJpYXQi"
    "OjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMzYwMH0.qq1c0VC_gES3xeQkXTsuqOhbIyCIjW4KqD6newVaBEPLUmnFmgeOPnR2bUMO"
    "FsF38A6HDV4v9l0yPowHy-FmrA";
/* {"sub":"bob","aud":["other","courier-broker"],"exp":1700003600}, HS256 */
static const char PY_AUD_ARRAY[] =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiJib2IiLCJhdWQiOlsib3RoZXIiLCJjb3VyaWVyLWJyb2tlciJdLCJleHAiOjE3MDAwMDM2MDB9.-"
    "B6vjnzwXSkWOFqludcZn9AIiA-dzBZftFcpsbdmK5s";
/* {"uid":12345,"exp":1700003600}, headers={"kid":"k1"}, HS256 */
static const char PY_INT_SUB[] =
    "eyJhbGciOiJIUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJ1aWQiOjEyMzQ1LCJleHAiOjE3MDAwMDM2MDB9."
    "MKu5iQJ_y3MeKXO6NSx5MYgBah0cWykenIa4IUICxJ8";

#define GOOD_CLAIMS                                                                                          \
	"{\"sub\":\"alice\",\"iss\":\"https://app.example.com\",\"aud\":\"courier-broker\","                 \
	"\"iat\":1700000000,\"exp\":1700003600}"

struct fx {
	lua_State *L;
	struct jwt_rules rules;
	struct secret hmac_secret;
	struct jwt_key *hmac_key;   /* built from hmac_secret by prepare() */
	struct jwt_key *public_key; /* the lone public key (no kid) */
	struct jwt_keys keys;
	char subject[256];
	char err[128];
	char tok[16384];
};

/* The HMAC key from hmac_secret, when set and not built yet. 0 or -1. */
static int prepare(struct fx *f)
{
	if (f->hmac_secret.data && !f->hmac_key && !(f->hmac_key = jwt_key_hmac(&f->hmac_secret, NULL, 0)))
		return -1;
	return 0;
}

static void release(struct fx *f)
{
	jwt_key_free(f->hmac_key);
	f->hmac_key = NULL;
	jwt_key_free(f->public_key);
	f->public_key = NULL;
}

/* The keys jwt_verify is given: the HMAC key and the public key, no lookup. */
static const struct jwt_keys *keys_of(struct fx *f)
{
	f->keys.hmac = f->hmac_key;
	f->keys.fixed = f->public_key;
	return &f->keys;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	f->L = luaL_newstate();
	if (!f->L || json_open(f->L))
		return -1;
	f->rules.algorithms = JWT_HS256 | JWT_HS384 | JWT_HS512;
	if (secret_set(&f->hmac_secret, "secret", 6))
		return -1;
	f->rules.issuer = "https://app.example.com";
	f->rules.audience = "courier-broker";
	f->rules.leeway_s = 30;
	f->rules.max_token_bytes = 8192;
	f->rules.subject_claim = "sub";
	if (prepare(f))
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	secret_clear(&f->hmac_secret);
	release(f);
	lua_close(f->L);
	free(f);
	return 0;
}

/* ---- minting ------------------------------------------------------------- */

/* header.payload.HMAC(digest, key) into out. */
static const char *mint_with(char *out, const char *header, const char *payload, const char *digest,
                             const char *key)
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	size_t maclen = 0, n;

	char withexp[8192];

	/* The broker requires exp: give one to every object payload that has none. */
	if (payload[0] == '{' && !strstr(payload, "\"exp\"")) {
		snprintf(withexp, sizeof(withexp), "{\"exp\":9999999999%s%s", payload[1] == '}' ? "" : ",",
		         payload + 1);
		payload = withexp;
	}
	n = tk_b64url(out, header, strlen(header));
	out[n++] = '.';
	n += tk_b64url(out + n, payload, strlen(payload));
	assert_non_null(EVP_Q_mac(NULL, "HMAC", NULL, digest, NULL, key, strlen(key), (unsigned char *)out, n,
	                          mac, sizeof(mac), &maclen));
	out[n++] = '.';
	tk_b64url(out + n, mac, maclen);
	return out;
}

static const char *mint(struct fx *f, const char *payload)
{
	return mint_with(f->tok, "{\"alg\":\"HS256\",\"typ\":\"JWT\"}", payload, "SHA256", "secret");
}

/* ---- verifying ----------------------------------------------------------- */

static int verify_len(struct fx *f, const char *token, size_t len)
{
	int top = lua_gettop(f->L);
	int rc;

	f->err[0] = '\0';
	rc = jwt_verify(f->L, &f->rules, keys_of(f), token, len, (time_t)NOW, f->subject, sizeof(f->subject),
	                f->err, sizeof(f->err));
	if (rc == 0) {
		assert_int_equal(lua_gettop(f->L), top + 1);
		assert_int_equal(lua_type(f->L, -1), LUA_TTABLE);
	} else {
		assert_int_equal(rc, -1);
		assert_int_equal(lua_gettop(f->L), top);
		assert_string_equal(f->subject, "");
		assert_true(f->err[0] != '\0');
		/* The reason never quotes the token. */
		if (len > 12) {
			char head[13];
			memcpy(head, token, 12);
			head[12] = '\0';
			assert_null(strstr(f->err, head));
		}
	}
	return rc;
}

static int verify(struct fx *f, const char *token)
{
	return verify_len(f, token, strlen(token));
}

static void expect_ok(struct fx *f, const char *token)
{
	if (verify(f, token) != 0)
		fail_msg("refused: %s", f->err);
	lua_pop(f->L, 1);
}

static void expect_refused(struct fx *f, const char *token, const char *why)
{
	assert_int_equal(verify(f, token), -1);
	if (why && !strstr(f->err, why))
		fail_msg("reason \"%s\", expected \"%s\"", f->err, why);
}

/* ---- valid tokens -------------------------------------------------------- */

static void t_pyjwt_hs256_384_512(void **state)
{
	struct fx *f = *state;
	const char *toks[] = {PY_HS256, PY_HS384, PY_HS512};

	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(verify(f, toks[i]), 0);
		assert_string_equal(f->subject, "alice");
		lua_getfield(f->L, -1, "iss");
		assert_string_equal(lua_tostring(f->L, -1), "https://app.example.com");
		lua_pop(f->L, 2);
	}
}

static void t_minted_hs256_384_512(void **state)
{
	struct fx *f = *state;

	expect_ok(f, mint_with(f->tok, "{\"alg\":\"HS256\"}", GOOD_CLAIMS, "SHA256", "secret"));
	expect_ok(f, mint_with(f->tok, "{\"alg\":\"HS384\"}", GOOD_CLAIMS, "SHA384", "secret"));
	expect_ok(f, mint_with(f->tok, "{\"alg\":\"HS512\"}", GOOD_CLAIMS, "SHA512", "secret"));
	/* typ is free-form, other header fields (kid) are ignored for HMAC. */
	expect_ok(f, mint_with(f->tok, "{\"alg\":\"HS256\",\"typ\":\"at+jwt\",\"kid\":\"../../x\"}",
	                       GOOD_CLAIMS, "SHA256", "secret"));
	/* Minimal: no time claims at all (exp is optional). */
	f->rules.issuer = NULL;
	f->rules.audience = NULL;
	expect_ok(f, mint(f, "{}"));
}

static void t_integers_stay_integers(void **state)
{
	struct fx *f = *state;

	assert_int_equal(verify(f, PY_HS256), 0);
	lua_getfield(f->L, -1, "exp");
	assert_true(lua_isinteger(f->L, -1));
	assert_int_equal(lua_tointeger(f->L, -1), 1700003600);
	lua_getfield(f->L, -2, "iat");
	assert_true(lua_isinteger(f->L, -1));
	lua_pop(f->L, 3);
}

/* ---- algorithms ---------------------------------------------------------- */

static void t_alg_allow_list(void **state)
{
	struct fx *f = *state;

	f->rules.algorithms = JWT_HS512;
	expect_refused(f, PY_HS256, "alg not allowed");
	expect_refused(f, PY_HS384, "alg not allowed");
	expect_ok(f, PY_HS512);
	/* A token claiming HS256 but carrying an HS512 MAC is still HS256. */
	expect_refused(f, mint_with(f->tok, "{\"alg\":\"HS256\"}", GOOD_CLAIMS, "SHA512", "secret"),
	               "alg not allowed");
}

static void t_alg_none_and_unknown(void **state)
{
	struct fx *f = *state;
	char tok[512];
	size_t n;

	/* alg none, empty signature, and with a signature */
	n = tk_b64url(tok, "{\"alg\":\"none\"}", 14);
	tok[n++] = '.';
	n += tk_b64url(tok + n, GOOD_CLAIMS, strlen(GOOD_CLAIMS));
	tok[n++] = '.';
	tok[n] = '\0';
	expect_refused(f, tok, "none");
	strcpy(tok + n, "AAAA");
	expect_refused(f, tok, "none");
	expect_refused(f, mint_with(f->tok, "{\"alg\":\"None\"}", GOOD_CLAIMS, "SHA256", "secret"), "alg");
	expect_refused(f, mint_with(f->tok, "{\"alg\":\"hs256\"}", GOOD_CLAIMS, "SHA256", "secret"),
	               "alg not supported");
	expect_refused(f, mint_with(f->tok, "{\"alg\":\"RS256\"}", GOOD_CLAIMS, "SHA256", "secret"),
	               "alg not allowed");
	expect_refused(f, mint_with(f->tok, "{\"alg\":\"ES512\"}", GOOD_CLAIMS, "SHA256", "secret"),
	               "alg not supported");
	expect_refused(f, mint_with(f->tok, "{\"typ\":\"JWT\"}", GOOD_CLAIMS, "SHA256", "secret"), "no alg");
	expect_refused(f, mint_with(f->tok, "{\"alg\":256}", GOOD_CLAIMS, "SHA256", "secret"), "no alg");
	expect_refused(f, mint_with(f->tok, "{\"alg\":[\"HS256\"]}", GOOD_CLAIMS, "SHA256", "secret"),
	               "no alg");
}

static void t_no_key(void **state)
{
	struct fx *f = *state;

	secret_clear(&f->hmac_secret);
	release(f);
	expect_refused(f, PY_HS256, "no key");
}

static void t_crit_and_typ(void **state)
{
	struct fx *f = *state;

	expect_refused(f,
	               mint_with(f->tok, "{\"alg\":\"HS256\",\"crit\":[\"exp\"],\"exp\":1}", GOOD_CLAIMS,
	                         "SHA256", "secret"),
	               "crit");
	expect_refused(f,
	               mint_with(f->tok, "{\"alg\":\"HS256\",\"b64\":false,\"crit\":[\"b64\"]}", GOOD_CLAIMS,
	                         "SHA256", "secret"),
	               "crit");
	expect_refused(
	    f, mint_with(f->tok, "{\"alg\":\"HS256\",\"crit\":[]}", GOOD_CLAIMS, "SHA256", "secret"), "crit");
	expect_refused(f, mint_with(f->tok, "{\"alg\":\"HS256\",\"typ\":1}", GOOD_CLAIMS, "SHA256", "secret"),
	               "typ");
}

/* A header seen before is not decoded again, but every check of the
 * configuration still runs on it, and a different header replaces it. */
static void t_header_cache(void **state)
{
	struct fx *f = *state;
	char other[16384];

	expect_ok(f, PY_HS256);
	expect_ok(f, PY_HS256); /* the same header: from the cache */
	f->rules.algorithms = JWT_HS384;
	expect_refused(f, PY_HS256, "alg not allowed");
	f->rules.algorithms = JWT_HS256;
	f->rules.typ = "at+jwt";
	expect_refused(f, PY_HS256, "typ mismatch");
	f->rules.typ = NULL;
	expect_ok(f, PY_HS256);
	/* Another header, then the first again: each decoded as it is. */
	mint_with(other, "{\"alg\":\"HS256\",\"crit\":[\"x\"]}", GOOD_CLAIMS, "SHA256", "secret");
	expect_refused(f, other, "crit");
	expect_refused(f, other, "crit");
	expect_ok(f, PY_HS256);
	mint_with(other, "{\"alg\":\"HS256\",\"kid\":\"k\\u0001\"}", GOOD_CLAIMS, "SHA256", "secret");
	expect_refused(f, other, "kid invalid");
	expect_ok(f, mint_with(other, "{\"alg\":\"HS256\",\"kid\":\"k1\"}", GOOD_CLAIMS, "SHA256", "secret"));
	/* A tampered copy of a cached header is decoded, and refused. */
	snprintf(other, sizeof(other), "%s", PY_HS256);
	other[3] = 'c';
	expect_refused(f, other, NULL);
}

/* The shape check of tokens the broker receives from Courier. */
static void t_is_compact(void **state)
{
	static const char *good[] = {"a.b.c", "eyJ.eyJ.sig", "A-_.0-9.xyz_-"};
	static const char *bad[] = {"",          "a.b",       "a..c",    ".b.c",    "a.b.",
	                            "a.b.c.d",   "a.b.c=",    "a b.c.d", "a.b+c.d", "a/b.c.d",
	                            "ab.cd.e\n", "a.b.\"c\"", "..."};
	char big[16386];

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		assert_true(jwt_is_compact(good[i], strlen(good[i])));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (jwt_is_compact(bad[i], strlen(bad[i])))
			fail_msg("accepted \"%s\"", bad[i]);
	assert_false(jwt_is_compact("a.b\0c.d", 7)); /* a NUL inside */
	memset(big, 'a', sizeof(big));
	big[1] = '.';
	big[3] = '.';
	assert_true(jwt_is_compact(big, 16384));
	assert_false(jwt_is_compact(big, 16385));
}

/* ---- signatures ---------------------------------------------------------- */

static void t_wrong_secret(void **state)
{
	struct fx *f = *state;

	expect_refused(f, mint_with(f->tok, "{\"alg\":\"HS256\"}", GOOD_CLAIMS, "SHA256", "secreT"),
	               "bad signature");
	secret_set(&f->hmac_secret, "secret2", 7);
	release(f);
	assert_int_equal(prepare(f), 0);
	expect_refused(f, PY_HS256, "bad signature");
}

static void t_tampered_payload(void **state)
{
	struct fx *f = *state;
	char other[512], tok[1024];
	const char *d1 = strchr(PY_HS256, '.'), *d2 = strrchr(PY_HS256, '.');
	size_t n;

	/* PyJWT's header and signature around a payload naming someone else. */
	n = (size_t)(d1 - PY_HS256) + 1;
	memcpy(tok, PY_HS256, n);
	tk_b64url(other,
	          "{\"sub\":\"admin\",\"iss\":\"https://app.example.com\",\"aud\":\"courier-broker\","
	          "\"iat\":1700000000,\"exp\":1700003600}",
	          strlen("{\"sub\":\"admin\",\"iss\":\"https://app.example.com\",\"aud\":\"courier-broker\","
	                 "\"iat\":1700000000,\"exp\":1700003600}"));
	strcpy(tok + n, other);
	strcat(tok, d2);
	expect_refused(f, tok, "bad signature");
	/* One flipped bit in the payload. */
	strcpy(tok, PY_HS256);
	tok[d1 - PY_HS256 + 5] ^= 1;
	expect_refused(f, tok, NULL);
	/* A different header, same payload and signature. */
	strcpy(tok, PY_HS256);
	tok[3] = 'b';
	expect_refused(f, tok, NULL);
}

static void t_stripped_and_truncated_signature(void **state)
{
	struct fx *f = *state;
	char tok[1024];
	size_t n;

	strcpy(tok, PY_HS256);
	n = (size_t)(strrchr(tok, '.') - tok);
	tok[n + 1] = '\0';
	expect_refused(f, tok, "signature missing");
	tok[n] = '\0';
	expect_refused(f, tok, "three segments");

	strcpy(tok, PY_HS256);
	n = strlen(tok);
	tok[n - 1] = '\0'; /* 42 chars: decodes to 31 bytes or is non-canonical */
	expect_refused(f, tok, "bad signature");
	tok[n - 4] = '\0'; /* 39 chars: 29 bytes */
	expect_refused(f, tok, "bad signature");
	/* An extra byte of signature. */
	strcpy(tok, PY_HS256);
	strcat(tok, "AA");
	expect_refused(f, tok, "bad signature");
}

static void t_segments(void **state)
{
	struct fx *f = *state;
	char tok[1024];

	expect_refused(f, "abc", "three segments");
	expect_refused(f, "..", NULL);
	expect_refused(f, "", "empty");
	strcpy(tok, PY_HS256);
	strcat(tok, ".");
	expect_refused(f, tok, "three segments");
	strcpy(tok, PY_HS256);
	strcat(tok, ".AAAA");
	expect_refused(f, tok, "three segments");
	/* JWE-shaped: five segments */
	expect_refused(f, "eyJhbGciOiJIUzI1NiJ9.a.b.c.d", "three segments");
}

/* ---- base64url canonical form -------------------------------------------- */

static void t_padding_and_alphabet(void **state)
{
	struct fx *f = *state;
	char tok[1024];
	char *sig;

	strcpy(tok, PY_HS256);
	strcat(tok, "="); /* 44 chars, one pad */
	expect_refused(f, tok, "bad signature");

	/* Pad the header to a multiple of 4 with '=' (36 chars -> already 36). */
	snprintf(tok, sizeof(tok), "eyJhbGciOiJIUzI1NiJ9=%s", strchr(PY_HS256, '.'));
	expect_refused(f, tok, "header");

	/* PY_HS512's signature holds '_' and '-': the standard alphabet is refused. */
	strcpy(tok, PY_HS512);
	sig = strrchr(tok, '.') + 1;
	*strchr(sig, '_') = '/';
	expect_refused(f, tok, "bad signature");
	strcpy(tok, PY_HS512);
	sig = strrchr(tok, '.') + 1;
	*strchr(sig, '-') = '+';
	expect_refused(f, tok, "bad signature");

	/* Whitespace, anywhere. */
	strcpy(tok, PY_HS256);
	tok[10] = ' ';
	expect_refused(f, tok, NULL);
	snprintf(tok, sizeof(tok), "%s\n", PY_HS256);
	expect_refused(f, tok, NULL);
	snprintf(tok, sizeof(tok), " %s", PY_HS256);
	expect_refused(f, tok, NULL);
	/* An embedded NUL inside the given length. */
	strcpy(tok, PY_HS256);
	tok[20] = '\0';
	assert_int_equal(verify_len(f, tok, strlen(PY_HS256)), -1);
}

static void t_non_canonical_last_char(void **state)
{
	struct fx *f = *state;
	char tok[1024];
	unsigned char a[64], b[64];
	size_t alen, blen, n;

	/* 43 chars: the last one carries 2 unused bits. 's' (44) -> 't' (45)
	 * decodes to the same 32 bytes, yet must be refused. */
	strcpy(tok, PY_HS256);
	n = strlen(tok);
	assert_int_equal(tok[n - 1], 's');
	tok[n - 1] = 't';
	expect_refused(f, tok, "bad signature");

	assert_int_equal(jwt_b64url_decode("QQ", 2, a, sizeof(a), &alen), 0);
	assert_int_equal(alen, 1);
	assert_int_equal(a[0], 'A');
	assert_int_equal(jwt_b64url_decode("QR", 2, b, sizeof(b), &blen), -1);
	assert_int_equal(jwt_b64url_decode("QUI", 3, a, sizeof(a), &alen), 0);
	assert_memory_equal(a, "AB", 2);
	assert_int_equal(jwt_b64url_decode("QUJ", 3, b, sizeof(b), &blen), -1);
}

static void t_b64url_decode(void **state)
{
	unsigned char out[64];
	size_t n = 99;

	(void)state;
	assert_int_equal(jwt_b64url_decode("", 0, out, sizeof(out), &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(jwt_b64url_decode("QUJD", 4, out, sizeof(out), &n), 0);
	assert_int_equal(n, 3);
	assert_memory_equal(out, "ABC", 3);
	assert_int_equal(jwt_b64url_decode("-_-_", 4, out, sizeof(out), &n), 0);
	assert_int_equal(n, 3);
	assert_memory_equal(out, "\xfb\xff\xbf", 3);
	assert_int_equal(jwt_b64url_decode("+/+/", 4, out, sizeof(out), &n), -1);
	assert_int_equal(jwt_b64url_decode("QQ==", 4, out, sizeof(out), &n), -1);
	assert_int_equal(jwt_b64url_decode("Q", 1, out, sizeof(out), &n), -1);
	assert_int_equal(jwt_b64url_decode("QUJDR", 5, out, sizeof(out), &n), -1);
	assert_int_equal(jwt_b64url_decode("QU JD", 5, out, sizeof(out), &n), -1);
	assert_int_equal(jwt_b64url_decode("QUJD", 4, out, 2, &n), -1); /* outcap */
	assert_int_equal(jwt_b64url_decode("QUJDRA", 6, out, 4, &n), 0);
	assert_int_equal(n, 4);
	/* Longer than the internal chunk: every byte value round-trips. */
	{
		unsigned char raw[2000], dec[2000];
		char enc[2700];
		size_t elen;
		for (int i = 0; i < 2000; i++)
			raw[i] = (unsigned char)(i * 7 + 3);
		elen = tk_b64url(enc, raw, sizeof(raw));
		assert_int_equal(jwt_b64url_decode(enc, elen, dec, sizeof(dec), &n), 0);
		assert_int_equal(n, sizeof(raw));
		assert_memory_equal(dec, raw, sizeof(raw));
	}
}

static void t_oversized(void **state)
{
	struct fx *f = *state;
	char big[9000];
	char *payload = malloc(7000);

	f->rules.max_token_bytes = 100;
	expect_refused(f, PY_HS256, "too large");
	f->rules.max_token_bytes = 8192;
	expect_ok(f, PY_HS256);
	/* A properly signed token just over the default limit. */
	assert_non_null(payload);
	memset(payload, 'x', 6999);
	payload[6999] = '\0';
	snprintf(big, sizeof(big), "{\"pad\":\"%.6100s\"}", payload);
	mint(f, big);
	assert_true(strlen(f->tok) > 8192);
	expect_refused(f, f->tok, "too large");
	free(payload);
}

/* ---- JSON shapes --------------------------------------------------------- */

static void t_header_not_object(void **state)
{
	struct fx *f = *state;

	expect_refused(f, mint_with(f->tok, "[\"HS256\"]", GOOD_CLAIMS, "SHA256", "secret"), "header");
	expect_refused(f, mint_with(f->tok, "\"HS256\"", GOOD_CLAIMS, "SHA256", "secret"), "header");
	expect_refused(f, mint_with(f->tok, "null", GOOD_CLAIMS, "SHA256", "secret"), "header");
	expect_refused(f, mint_with(f->tok, "{\"alg\":\"HS256\"", GOOD_CLAIMS, "SHA256", "secret"), "header");
	expect_refused(f, mint_with(f->tok, "{\"alg\":\"HS256\"} x", GOOD_CLAIMS, "SHA256", "secret"),
	               "header");
	expect_refused(f, mint_with(f->tok, "", GOOD_CLAIMS, "SHA256", "secret"), "header");
}

static void t_payload_not_object(void **state)
{
	struct fx *f = *state;

	f->rules.issuer = NULL;
	f->rules.audience = NULL;
	expect_refused(f, mint(f, "[1,2]"), "payload");
	expect_refused(f, mint(f, "[]"), "payload");
	expect_refused(f, mint(f, "\"x\""), "payload");
	expect_refused(f, mint(f, "null"), "payload");
	expect_refused(f, mint(f, "1700000000"), "payload");
	expect_refused(f, mint(f, "{\"exp\":NaN}"), "payload");
	expect_refused(f, mint(f, "{\"exp\":0x10}"), "payload");
	expect_refused(f, mint(f, ""), "payload");
	/* Whitespace before the object is valid JSON. */
	expect_ok(f, mint(f, " \n{\"sub\":\"a\",\"exp\":9999999999}"));
	/* A credential without exp never expires: refused. */
	expect_refused(f, mint(f, " {\"sub\":\"a\"}"), "no exp");
}

static void t_deep_nesting(void **state)
{
	struct fx *f = *state;
	char p[256];
	int n = 0;

	f->rules.issuer = NULL;
	f->rules.audience = NULL;
	/* 30 arrays inside the claims object: 31 levels, within the limit of 32. */
	n += snprintf(p + n, sizeof(p) - (size_t)n, "{\"x\":");
	for (int i = 0; i < 30; i++)
		p[n++] = '[';
	p[n++] = '1';
	for (int i = 0; i < 30; i++)
		p[n++] = ']';
	snprintf(p + n, sizeof(p) - (size_t)n, "}");
	expect_ok(f, mint(f, p));
	/* The header is parsed before any signature check: the same nesting
	 * there, under a bad signature, is refused cleanly. */
	n = snprintf(p, sizeof(p), "{\"alg\":\"HS256\",\"x\":");
	for (int i = 0; i < 30; i++)
		p[n++] = '[';
	for (int i = 0; i < 30; i++)
		p[n++] = ']';
	snprintf(p + n, sizeof(p) - (size_t)n, "}");
	mint_with(f->tok, p, "{}", "SHA256", "wrong");
	expect_refused(f, f->tok, "bad signature");
	/* Over it. */
	n = snprintf(p, sizeof(p), "{\"x\":");
	for (int i = 0; i < 60; i++)
		p[n++] = '[';
	for (int i = 0; i < 60; i++)
		p[n++] = ']';
	snprintf(p + n, sizeof(p) - (size_t)n, "}");
	expect_refused(f, mint(f, p), "payload");
}

/* ---- time claims --------------------------------------------------------- */

static void t_exp(void **state)
{
	struct fx *f = *state;
	char p[256];

	f->rules.issuer = NULL;
	f->rules.audience = NULL;
	snprintf(p, sizeof(p), "{\"exp\":%lld}", NOW - 31);
	expect_refused(f, mint(f, p), "expired");
	snprintf(p, sizeof(p), "{\"exp\":%lld}", NOW - 30);
	expect_refused(f, mint(f, p), "expired");
	snprintf(p, sizeof(p), "{\"exp\":%lld}", NOW - 29); /* within leeway */
	expect_ok(f, mint(f, p));
	snprintf(p, sizeof(p), "{\"exp\":%lld.5}", NOW);
	expect_ok(f, mint(f, p));
	f->rules.leeway_s = 0;
	snprintf(p, sizeof(p), "{\"exp\":%lld}", NOW);
	expect_refused(f, mint(f, p), "expired");
	snprintf(p, sizeof(p), "{\"exp\":%lld}", NOW + 1);
	expect_ok(f, mint(f, p));
	expect_refused(f, mint(f, "{\"exp\":\"4102444800\"}"), "exp not a number");
	expect_refused(f, mint(f, "{\"exp\":null}"), "exp not a number");
	expect_refused(f, mint(f, "{\"exp\":true}"), "exp not a number");
	expect_ok(f, mint(f, "{\"exp\":1e300}"));
	expect_refused(f, mint(f, "{\"exp\":-1e300}"), "expired");
	/* PyJWT's tokens expire at 1700003600. */
	f->rules.leeway_s = 30;
	f->rules.issuer = "https://app.example.com";
	f->rules.audience = "courier-broker";
	assert_int_equal(jwt_verify(f->L, &f->rules, keys_of(f), PY_HS256, strlen(PY_HS256),
	                            (time_t)1700003629, f->subject, sizeof(f->subject), f->err,
	                            sizeof(f->err)),
	                 0);
	lua_pop(f->L, 1);
	assert_int_equal(jwt_verify(f->L, &f->rules, keys_of(f), PY_HS256, strlen(PY_HS256),
	                            (time_t)1700003630, f->subject, sizeof(f->subject), f->err,
	                            sizeof(f->err)),
	                 -1);
	assert_int_equal(lua_gettop(f->L), 0);
}

static void t_nbf_iat(void **state)
{
	struct fx *f = *state;
	char p[256];

	f->rules.issuer = NULL;
	f->rules.audience = NULL;
	snprintf(p, sizeof(p), "{\"nbf\":%lld}", NOW + 31);
	expect_refused(f, mint(f, p), "not yet valid");
	snprintf(p, sizeof(p), "{\"nbf\":%lld}", NOW + 30);
	expect_ok(f, mint(f, p));
	snprintf(p, sizeof(p), "{\"nbf\":%lld}", NOW - 1000);
	expect_ok(f, mint(f, p));
	expect_refused(f, mint(f, "{\"nbf\":\"0\"}"), "nbf not a number");

	snprintf(p, sizeof(p), "{\"iat\":%lld}", NOW + 100);
	expect_refused(f, mint(f, p), "iat in the future");
	snprintf(p, sizeof(p), "{\"iat\":%lld}", NOW + 30);
	expect_ok(f, mint(f, p));
	expect_refused(f, mint(f, "{\"iat\":\"1700000000\"}"), "iat not a number");
	expect_refused(f, mint(f, "{\"iat\":{}}"), "iat not a number");
}

/* ---- iss and aud --------------------------------------------------------- */

static void t_issuer(void **state)
{
	struct fx *f = *state;

	f->rules.audience = NULL;
	expect_ok(f, mint(f, "{\"iss\":\"https://app.example.com\"}"));
	expect_refused(f, mint(f, "{\"iss\":\"https://app.example.com.evil\"}"), "issuer");
	expect_refused(f, mint(f, "{\"iss\":\"https://app.example.co\"}"), "issuer");
	expect_refused(f, mint(f, "{\"iss\":\"https://APP.example.com\"}"), "issuer");
	expect_refused(f, mint(f, "{\"iss\":\"https://app.example.com/\"}"), "issuer");
	expect_refused(f, mint(f, "{\"iss\":\"https://app.example.com\\u0000x\"}"), "issuer");
	expect_refused(f, mint(f, "{\"iss\":[\"https://app.example.com\"]}"), "issuer");
	expect_refused(f, mint(f, "{\"sub\":\"a\"}"), "issuer");
	/* Not configured: not checked. */
	f->rules.issuer = NULL;
	expect_ok(f, mint(f, "{\"iss\":\"anyone\"}"));
}

static void t_audience(void **state)
{
	struct fx *f = *state;

	f->rules.issuer = NULL;
	expect_ok(f, mint(f, "{\"aud\":\"courier-broker\"}"));
	expect_ok(f, mint(f, "{\"aud\":[\"a\",\"courier-broker\"]}"));
	expect_ok(f, PY_AUD_ARRAY);
	assert_int_equal(verify(f, PY_AUD_ARRAY), 0);
	assert_string_equal(f->subject, "bob");
	lua_pop(f->L, 1);
	expect_refused(f, mint(f, "{\"aud\":\"courier-broker2\"}"), "audience");
	expect_refused(f, mint(f, "{\"aud\":\"courier\"}"), "audience");
	expect_refused(f, mint(f, "{\"aud\":[\"a\",\"b\"]}"), "audience");
	expect_refused(f, mint(f, "{\"aud\":[]}"), "audience");
	expect_refused(f, mint(f, "{\"aud\":[[\"courier-broker\"]]}"), "audience");
	expect_refused(f, mint(f, "{\"aud\":{\"1\":\"courier-broker\"}}"), "audience");
	expect_refused(f, mint(f, "{\"aud\":1}"), "audience");
	expect_refused(f, mint(f, "{\"sub\":\"a\"}"), "audience");
	f->rules.audience = NULL;
	expect_ok(f, mint(f, "{\"aud\":\"someone-else\"}"));
}

/* ---- subject ------------------------------------------------------------- */

static void t_subject(void **state)
{
	struct fx *f = *state;
	char p[512];

	f->rules.issuer = NULL;
	f->rules.audience = NULL;
	assert_int_equal(verify(f, mint(f, "{\"sub\":\"u-1\"}")), 0);
	assert_string_equal(f->subject, "u-1");
	lua_pop(f->L, 1);
	assert_int_equal(verify(f, mint(f, "{\"exp\":4102444800}")), 0);
	assert_string_equal(f->subject, "");
	lua_pop(f->L, 1);

	f->rules.subject_claim = "email";
	assert_int_equal(verify(f, mint(f, "{\"sub\":\"u-1\",\"email\":\"a@example.com\"}")), 0);
	assert_string_equal(f->subject, "a@example.com");
	lua_pop(f->L, 1);

	f->rules.subject_claim = "uid";
	assert_int_equal(verify(f, PY_INT_SUB), 0);
	assert_string_equal(f->subject, "12345");
	lua_pop(f->L, 1);
	assert_int_equal(verify(f, mint(f, "{\"uid\":-7}")), 0);
	assert_string_equal(f->subject, "-7");
	lua_pop(f->L, 1);
	assert_int_equal(verify(f, mint(f, "{\"uid\":9007199254740992}")), 0);
	assert_string_equal(f->subject, "9007199254740992");
	lua_pop(f->L, 1);
	expect_refused(f, mint(f, "{\"uid\":1.5}"), "subject");
	expect_refused(f, mint(f, "{\"uid\":1e20}"), "subject");
	expect_refused(f, mint(f, "{\"uid\":true}"), "subject");
	expect_refused(f, mint(f, "{\"uid\":[\"a\"]}"), "subject");
	expect_refused(f, mint(f, "{\"uid\":\"a\\nb\"}"), "subject");
	expect_refused(f, mint(f, "{\"uid\":\"a\\u0000b\"}"), "subject");
	expect_refused(f, mint(f, "{\"uid\":\"a\\u007fb\"}"), "subject");

	/* 255 bytes fit a 256-byte buffer; 256 do not. */
	memset(p, 0, sizeof(p));
	memcpy(p, "{\"uid\":\"", 8);
	memset(p + 8, 'a', 255);
	strcat(p, "\"}");
	assert_int_equal(verify(f, mint(f, p)), 0);
	assert_int_equal(strlen(f->subject), 255);
	lua_pop(f->L, 1);
	memset(p, 0, sizeof(p));
	memcpy(p, "{\"uid\":\"", 8);
	memset(p + 8, 'a', 256);
	strcat(p, "\"}");
	expect_refused(f, mint(f, p), "subject");
	/* A small buffer and a long integer. */
	assert_int_equal(jwt_verify(f->L, &f->rules, keys_of(f), mint(f, "{\"uid\":123456}"), strlen(f->tok),
	                            (time_t)NOW, f->subject, 4, f->err, sizeof(f->err)),
	                 -1);
	assert_int_equal(lua_gettop(f->L), 0);
}

/* ---- Lua out of memory ---------------------------------------------------- */

/*
 * lua-cjson 2.1.0 mallocs its string buffer outside Lua and leaks it when a
 * Lua memory error unwinds through json_decode (~110 bytes each time). Known
 * and third-party: tell LeakSanitizer (make check) about it, for this binary.
 */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
	return "leak:strbuf_new\nleak:strbuf_init\n";
}

static lua_Alloc real_alloc;
static void *real_ud;
static int allocs_left;

/* Fails every growing allocation once allocs_left reaches 0. */
static void *tight_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	(void)ud;
	if (nsize > (ptr ? osize : 0) && allocs_left-- <= 0)
		return NULL;
	return real_alloc(real_ud, ptr, osize, nsize);
}

static void t_lua_out_of_memory(void **state)
{
	struct fx *f = *state;
	int refused = 0;

	real_alloc = lua_getallocf(f->L, &real_ud);
	lua_setallocf(f->L, tight_alloc, NULL);
	/* Fail the 1st, 2nd, ... allocation: always a clean refusal or success,
	 * never a panic, and the stack is unchanged on failure. */
	for (int i = 0; i < 200; i++) {
		allocs_left = i;
		if (verify(f, PY_HS256) == 0)
			lua_pop(f->L, 1);
		else
			refused++;
	}
	lua_setallocf(f->L, real_alloc, real_ud);
	assert_true(refused > 0);
	expect_ok(f, PY_HS256);
}

/* ---- asymmetric algorithms ------------------------------------------------ */

static const char *const ASYM[] = {"RS256", "RS384", "RS512", "PS256", "PS384",
                                   "PS512", "ES256", "ES384", "EdDSA"};
#define N_ASYM (sizeof(ASYM) / sizeof(ASYM[0]))
#define ALL_ASYM                                                                                             \
	(JWT_RS256 | JWT_RS384 | JWT_RS512 | JWT_PS256 | JWT_PS384 | JWT_PS512 | JWT_ES256 | JWT_ES384 |     \
	 JWT_EDDSA)

/* The kind of key that signs alg. */
static enum tk_kind kind_for(const char *alg)
{
	return alg[0] == 'R' || alg[0] == 'P' ? TK_RSA
	       : strcmp(alg, "ES256") == 0    ? TK_P256
	       : strcmp(alg, "ES384") == 0    ? TK_P384
	                                      : TK_ED25519;
}

/* Makes the key of kind k (its public PEM) the tenant's public_key. */
static void use_public_key(struct fx *f, EVP_PKEY *pkey)
{
	char pem[4096], err[160];

	jwt_key_free(f->public_key);
	tk_pub_pem(pkey, pem, sizeof(pem));
	f->public_key = jwt_key_pem(pem, strlen(pem), err, sizeof(err));
	if (!f->public_key)
		fail_msg("public key refused: %s", err);
}

static const char *mint_pk(struct fx *f, const char *alg, const char *payload, EVP_PKEY *pkey)
{
	char header[128];

	snprintf(header, sizeof(header), "{\"alg\":\"%s\",\"typ\":\"JWT\"}", alg);
	return tk_mint(f->tok, header, payload, alg, pkey);
}

/* Every algorithm verifies with a key of its type and is refused with every other key type. */
static void t_asym_each_alg_and_key(void **state)
{
	struct fx *f = *state;
	const enum tk_kind kinds[] = {TK_RSA, TK_P256, TK_P384, TK_ED25519};

	f->rules.algorithms = ALL_ASYM | JWT_HMAC_ALGS;
	for (size_t k = 0; k < 4; k++) {
		use_public_key(f, tk_key(kinds[k]));
		for (size_t i = 0; i < N_ASYM; i++) {
			const char *alg = ASYM[i];
			bool right = kind_for(alg) == kinds[k];
			/* Signed by the key of the algorithm's type; the tenant holds kinds[k]. */
			mint_pk(f, alg, GOOD_CLAIMS, tk_key(kind_for(alg)));
			if (right) {
				expect_ok(f, f->tok);
				assert_string_equal(f->subject, "alice");
			} else {
				expect_refused(f, f->tok, "no key for alg");
			}
			/* The HMAC secret never verifies an asymmetric token, nor the reverse. */
			assert_int_equal(verify(f, mint_with(f->tok, "{\"alg\":\"HS256\"}", GOOD_CLAIMS,
			                                     "SHA256", "secret")),
			                 0);
			lua_pop(f->L, 1);
		}
	}
}

static void t_asym_wrong_key_tampered(void **state)
{
	struct fx *f = *state;
	char tok[4096];

	f->rules.algorithms = ALL_ASYM;
	for (size_t i = 0; i < N_ASYM; i++) {
		enum tk_kind k = kind_for(ASYM[i]);
		char *dot;
		use_public_key(f, tk_key(k));
		expect_refused(f, mint_pk(f, ASYM[i], GOOD_CLAIMS, tk_other_key(k)), "bad signature");
		/* Tampered payload, signature kept. */
		mint_pk(f, ASYM[i], GOOD_CLAIMS, tk_key(k));
		dot = strchr(f->tok, '.');
		snprintf(tok, sizeof(tok), "%s", f->tok);
		mint_pk(f, ASYM[i], "{\"sub\":\"mallory\",\"exp\":1700003600}", tk_other_key(k));
		memcpy(strrchr(f->tok, '.') + 1, strrchr(tok, '.') + 1, strlen(strrchr(tok, '.')));
		expect_refused(f, f->tok, "bad signature");
		(void)dot;
		/* Stripped signature. */
		mint_pk(f, ASYM[i], GOOD_CLAIMS, tk_key(k));
		strrchr(f->tok, '.')[1] = '\0';
		expect_refused(f, f->tok, "signature missing");
	}
}

/* RFC 8725 §2.1: HS256 "signed" with the RSA public key's PEM as the secret. */
static void t_alg_confusion(void **state)
{
	struct fx *f = *state;
	char pem[4096];

	tk_pub_pem(tk_key(TK_RSA), pem, sizeof(pem));
	use_public_key(f, tk_key(TK_RSA));
	mint_with(f->tok, "{\"alg\":\"HS256\"}", GOOD_CLAIMS, "SHA256", pem);
	f->rules.algorithms = JWT_RS256;
	expect_refused(f, f->tok, "alg not allowed");
	/* Even with HS256 allowed, only the HMAC secret checks HS256. */
	f->rules.algorithms = JWT_RS256 | JWT_HS256;
	expect_refused(f, f->tok, "bad signature");
	/* With no HMAC secret at all there is no key for HS256. */
	jwt_key_free(f->hmac_key);
	f->hmac_key = NULL;
	expect_refused(f, f->tok, "no key for alg");
	/* And the RSA key does not check an ES256 token. */
	f->rules.algorithms = JWT_RS256 | JWT_ES256;
	expect_refused(f, mint_pk(f, "ES256", GOOD_CLAIMS, tk_key(TK_P256)), "no key for alg");
}

/* CVE-2022-21449 and friends: r or s zero or out of range, wrong lengths. */
static void t_ecdsa_forged(void **state)
{
	struct fx *f = *state;
	/* The order n of P-256 and of P-384, big-endian. */
	static const char n256[] = "FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551";
	static const char n384[] = "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB24"
	                           "8B0A77AECEC196ACCC52973";
	const char *hdr[2] = {"{\"alg\":\"ES256\"}", "{\"alg\":\"ES384\"}"};
	const char *order[2] = {n256, n384};
	size_t size[2] = {32, 48};

	f->rules.algorithms = JWT_ES256 | JWT_ES384;
	for (int c = 0; c < 2; c++) {
		unsigned char sig[200], good[200];
		BIGNUM *n = NULL;
		size_t glen;
		char *p;
		use_public_key(f, tk_key(c ? TK_P384 : TK_P256));
		mint_pk(f, c ? "ES384" : "ES256", GOOD_CLAIMS, tk_key(c ? TK_P384 : TK_P256));
		expect_ok(f, f->tok);
		p = strrchr(f->tok, '.') + 1;
		assert_int_equal(jwt_b64url_decode(p, strlen(p), good, sizeof(good), &glen), 0);
		assert_int_equal(glen, 2 * size[c]);
		/* r = s = 0 */
		memset(sig, 0, sizeof(sig));
		expect_refused(f, tk_mint_sig(f->tok, hdr[c], GOOD_CLAIMS, sig, 2 * size[c]),
		               "bad signature");
		/* r = n, s kept; then s = n, r kept; then r = n + 1 (all 0xff). */
		assert_true(BN_hex2bn(&n, order[c]) > 0);
		memcpy(sig, good, 2 * size[c]);
		BN_bn2binpad(n, sig, (int)size[c]);
		expect_refused(f, tk_mint_sig(f->tok, hdr[c], GOOD_CLAIMS, sig, 2 * size[c]),
		               "bad signature");
		memcpy(sig, good, 2 * size[c]);
		BN_bn2binpad(n, sig + size[c], (int)size[c]);
		expect_refused(f, tk_mint_sig(f->tok, hdr[c], GOOD_CLAIMS, sig, 2 * size[c]),
		               "bad signature");
		memset(sig, 0xff, size[c]);
		expect_refused(f, tk_mint_sig(f->tok, hdr[c], GOOD_CLAIMS, sig, 2 * size[c]),
		               "bad signature");
		BN_free(n);
		/* Wrong lengths: one byte short or long, the other curve's size, DER. */
		memcpy(sig, good, 2 * size[c]);
		expect_refused(f, tk_mint_sig(f->tok, hdr[c], GOOD_CLAIMS, sig, 2 * size[c] - 1),
		               "bad signature");
		sig[2 * size[c]] = 0;
		expect_refused(f, tk_mint_sig(f->tok, hdr[c], GOOD_CLAIMS, sig, 2 * size[c] + 1),
		               "bad signature");
		expect_refused(f, tk_mint_sig(f->tok, hdr[c], GOOD_CLAIMS, sig, c ? 64 : 96),
		               "bad signature");
		expect_refused(f, tk_mint_sig(f->tok, hdr[c], GOOD_CLAIMS, sig, 72), "bad signature");
	}
}

static void t_rsa_eddsa_lengths(void **state)
{
	struct fx *f = *state;
	unsigned char sig[600];
	size_t n;
	char *p;

	f->rules.algorithms = JWT_RS256 | JWT_PS256;
	use_public_key(f, tk_key(TK_RSA));
	mint_pk(f, "RS256", GOOD_CLAIMS, tk_key(TK_RSA));
	p = strrchr(f->tok, '.') + 1;
	assert_int_equal(jwt_b64url_decode(p, strlen(p), sig + 1, sizeof(sig) - 1, &n), 0);
	assert_int_equal(n, 256);
	/* A leading zero byte added, or the last byte dropped: not the modulus' length. */
	sig[0] = 0;
	expect_refused(f, tk_mint_sig(f->tok, "{\"alg\":\"RS256\"}", GOOD_CLAIMS, sig, 257), "bad signature");
	expect_refused(f, tk_mint_sig(f->tok, "{\"alg\":\"RS256\"}", GOOD_CLAIMS, sig + 1, 255),
	               "bad signature");
	/* An RS256 signature is not a PS256 one. */
	expect_refused(f, tk_mint_sig(f->tok, "{\"alg\":\"PS256\"}", GOOD_CLAIMS, sig + 1, 256),
	               "bad signature");

	f->rules.algorithms = JWT_EDDSA;
	use_public_key(f, tk_key(TK_ED25519));
	mint_pk(f, "EdDSA", GOOD_CLAIMS, tk_key(TK_ED25519));
	p = strrchr(f->tok, '.') + 1;
	assert_int_equal(jwt_b64url_decode(p, strlen(p), sig, sizeof(sig), &n), 0);
	assert_int_equal(n, 64);
	expect_refused(f, tk_mint_sig(f->tok, "{\"alg\":\"EdDSA\"}", GOOD_CLAIMS, sig, 63), "bad signature");
	expect_refused(f, tk_mint_sig(f->tok, "{\"alg\":\"EdDSA\"}", GOOD_CLAIMS, sig, 65), "bad signature");
	memset(sig, 0, 64);
	expect_refused(f, tk_mint_sig(f->tok, "{\"alg\":\"EdDSA\"}", GOOD_CLAIMS, sig, 64), "bad signature");
}

/* PS* needs a salt as long as the hash (RFC 7518 §3.5). */
static void t_pss_salt_length(void **state)
{
	struct fx *f = *state;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	EVP_PKEY_CTX *pctx = NULL;
	unsigned char sig[512];
	size_t n = sizeof(sig), len;

	f->rules.algorithms = JWT_PS256;
	use_public_key(f, tk_key(TK_RSA));
	len = tk_b64url(f->tok, "{\"alg\":\"PS256\"}", 15);
	f->tok[len++] = '.';
	len += tk_b64url(f->tok + len, GOOD_CLAIMS, strlen(GOOD_CLAIMS));
	assert_int_equal(EVP_DigestSignInit_ex(md, &pctx, "SHA256", NULL, NULL, tk_key(TK_RSA), NULL), 1);
	EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING);
	EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_MAX);
	assert_int_equal(EVP_DigestSign(md, sig, &n, (unsigned char *)f->tok, len), 1);
	EVP_MD_CTX_free(md);
	f->tok[len++] = '.';
	tk_b64url(f->tok + len, sig, n);
	expect_refused(f, f->tok, "bad signature");
}

static void t_max_age(void **state)
{
	struct fx *f = *state;
	char payload[256];

	f->rules.max_age_s = 60;
	f->rules.leeway_s = 30;
	f->rules.issuer = NULL;
	f->rules.audience = NULL;
	expect_refused(f, mint(f, "{\"sub\":\"a\",\"exp\":1700003600}"), "no iat");
	snprintf(payload, sizeof(payload), "{\"sub\":\"a\",\"iat\":%lld}", NOW - 91);
	expect_refused(f, mint(f, payload), "too old");
	snprintf(payload, sizeof(payload), "{\"sub\":\"a\",\"iat\":%lld}", NOW - 90);
	expect_ok(f, mint(f, payload));
	f->rules.leeway_s = 0;
	expect_refused(f, mint(f, payload), "too old");
	snprintf(payload, sizeof(payload), "{\"sub\":\"a\",\"iat\":%lld}", NOW - 60);
	expect_ok(f, mint(f, payload));
	expect_refused(f, mint(f, "{\"sub\":\"a\",\"iat\":\"1700000000\"}"), "iat not a number");
}

static void t_typ_required(void **state)
{
	struct fx *f = *state;

	f->rules.typ = "JWT";
	expect_ok(f,
	          mint_with(f->tok, "{\"alg\":\"HS256\",\"typ\":\"JWT\"}", GOOD_CLAIMS, "SHA256", "secret"));
	expect_ok(f,
	          mint_with(f->tok, "{\"alg\":\"HS256\",\"typ\":\"jwt\"}", GOOD_CLAIMS, "SHA256", "secret"));
	expect_ok(f, mint_with(f->tok, "{\"alg\":\"HS256\",\"typ\":\"application/JWT\"}", GOOD_CLAIMS,
	                       "SHA256", "secret"));
	expect_refused(f, mint_with(f->tok, "{\"alg\":\"HS256\"}", GOOD_CLAIMS, "SHA256", "secret"),
	               "typ mismatch");
	expect_refused(
	    f, mint_with(f->tok, "{\"alg\":\"HS256\",\"typ\":\"at+jwt\"}", GOOD_CLAIMS, "SHA256", "secret"),
	    "typ mismatch");
	expect_refused(
	    f, mint_with(f->tok, "{\"alg\":\"HS256\",\"typ\":\"JWTX\"}", GOOD_CLAIMS, "SHA256", "secret"),
	    "typ mismatch");
	f->rules.typ = "at+jwt";
	expect_ok(f, mint_with(f->tok, "{\"alg\":\"HS256\",\"typ\":\"application/at+JWT\"}", GOOD_CLAIMS,
	                       "SHA256", "secret"));
}

static void t_kid_bounds(void **state)
{
	struct fx *f = *state;
	char header[600];

	snprintf(header, sizeof(header), "{\"alg\":\"HS256\",\"kid\":\"%0256d\"}", 0);
	expect_ok(f, mint_with(f->tok, header, GOOD_CLAIMS, "SHA256", "secret"));
	snprintf(header, sizeof(header), "{\"alg\":\"HS256\",\"kid\":\"%0257d\"}", 0);
	expect_refused(f, mint_with(f->tok, header, GOOD_CLAIMS, "SHA256", "secret"), "kid invalid");
	expect_refused(f, mint_with(f->tok, "{\"alg\":\"HS256\",\"kid\":7}", GOOD_CLAIMS, "SHA256", "secret"),
	               "kid invalid");
	expect_refused(f,
	               mint_with(f->tok, "{\"alg\":\"HS256\",\"kid\":\"\"}", GOOD_CLAIMS, "SHA256", "secret"),
	               "kid invalid");
	expect_refused(
	    f, mint_with(f->tok, "{\"alg\":\"HS256\",\"kid\":\"a\\nb\"}", GOOD_CLAIMS, "SHA256", "secret"),
	    "kid invalid");
	/* jku/x5u/jwk are ignored: the token still verifies with the configured key only. */
	expect_ok(f, mint_with(f->tok,
	                       "{\"alg\":\"HS256\",\"jku\":\"https://evil/jwks\",\"x5u\":\"https://evil\"}",
	                       GOOD_CLAIMS, "SHA256", "secret"));
}

/* ---- peek ---------------------------------------------------------------- */

static void t_peek_claims(void **state)
{
	struct fx *f = *state;

	/* No verification: a wrong key or bad signature still reads. */
	mint_with(f->tok, "{\"alg\":\"HS256\"}", "{\"scope\":\"user_id:alice\",\"exp\":1700003600}", "SHA256",
	          "courier-key");
	assert_int_equal(jwt_peek_claims(f->L, f->tok, strlen(f->tok)), 0);
	assert_int_equal(lua_gettop(f->L), 1);
	lua_getfield(f->L, -1, "exp");
	assert_true(lua_isinteger(f->L, -1));
	assert_int_equal(lua_tointeger(f->L, -1), 1700003600);
	lua_settop(f->L, 0);

	assert_int_equal(jwt_peek_claims(f->L, "a.b", 3), -1);
	assert_int_equal(jwt_peek_claims(f->L, "a.b.c.d", 7), -1);
	assert_int_equal(jwt_peek_claims(f->L, "", 0), -1);
	assert_int_equal(jwt_peek_claims(f->L, "eyJhIjoxfQ.WzFd.x", 17), -1); /* payload [1] */
	assert_int_equal(jwt_peek_claims(f->L, "eyJhIjoxfQ.eyJhIjoxfQ=.x", 24), -1);
	assert_int_equal(jwt_peek_claims(f->L, "eyJhIjoxfQ.eyJhIjoxfQ.x", 23), 0);
	lua_settop(f->L, 0);
	assert_int_equal(jwt_peek_claims(f->L, ".eyJhIjoxfQ.x", 13), -1);
	assert_int_equal(jwt_peek_claims(f->L, "x.eyJhIjoxfQ.", 13), -1);
	assert_int_equal(lua_gettop(f->L), 0);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(t_pyjwt_hs256_384_512),
	    T(t_minted_hs256_384_512),
	    T(t_integers_stay_integers),
	    T(t_alg_allow_list),
	    T(t_alg_none_and_unknown),
	    T(t_no_key),
	    T(t_crit_and_typ),
	    T(t_header_cache),
	    cmocka_unit_test(t_is_compact),
	    T(t_wrong_secret),
	    T(t_tampered_payload),
	    T(t_stripped_and_truncated_signature),
	    T(t_segments),
	    T(t_padding_and_alphabet),
	    T(t_non_canonical_last_char),
	    T(t_b64url_decode),
	    T(t_oversized),
	    T(t_header_not_object),
	    T(t_payload_not_object),
	    T(t_deep_nesting),
	    T(t_exp),
	    T(t_nbf_iat),
	    T(t_issuer),
	    T(t_audience),
	    T(t_subject),
	    T(t_lua_out_of_memory),
	    T(t_peek_claims),
	    T(t_asym_each_alg_and_key),
	    T(t_asym_wrong_key_tampered),
	    T(t_alg_confusion),
	    T(t_ecdsa_forged),
	    T(t_rsa_eddsa_lengths),
	    T(t_pss_salt_length),
	    T(t_max_age),
	    T(t_typ_required),
	    T(t_kid_bounds),
	};

	return cmocka_run_group_tests_name("jwt", tests, NULL, NULL);
}
