/*
 * fuzz_jwt.c — libFuzzer driver for src/jwt.c.
 *
 * Feeds arbitrary bytes as a token to jwt_verify (every algorithm allowed:
 * a fixed HMAC secret, an EC P-256 public key, and a JWKS document holding
 * RSA, P-256, P-384 and Ed25519 keys with kids, offered through a key lookup
 * as a JWKS source would; issuer and audience checked), to
 * jwt_peek_claims and to the base64url decoder. Bytes of the form
 * "header JSON\npayload JSON" are also signed here (HS256 and ES256) so the
 * checks behind the signature are reached. The same bytes, read as "header JSON\npayload JSON", are
 * also signed here with the right secret, so the header and claims checks
 * behind the signature are reached too. Crashes, sanitizer reports, an
 * unbalanced Lua stack and a non-canonical base64url decode are findings; a
 * token that verifies is fine.
 */
#include <lauxlib.h>
#include <lua.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../unit/testkeys.h"
#include "json.h"
#include "jwk.h"
#include "jwt.h"
#include "secret.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lua_State *L;
static struct jwt_rules cfg;
static struct secret hmac_secret;
static struct jwks_set *set;
static struct jwt_keys keys;

/* The JWKS keys, as ident.c offers a source's current set. */
static const struct jwt_key *set_key(void *ctx, size_t i)
{
	return jwks_set_key(ctx, i);
}

static void init(void)
{
	L = luaL_newstate();
	if (!L || json_open(L))
		abort();
	char pem[4096], doc[8192], a[2048], b[600], c[600], d[600], err[256];

	cfg.algorithms = JWT_HS256 | JWT_HS384 | JWT_HS512 | JWT_RSA_ALGS | JWT_ES256 | JWT_ES384 | JWT_EDDSA;
	tk_pub_pem(tk_key(TK_P256), pem, sizeof(pem));
	if (!(keys.fixed = jwt_key_pem(pem, strlen(pem), err, sizeof(err))))
		abort();
	snprintf(doc, sizeof(doc), "{\"keys\":[%s,%s,%s,%s]}",
	         tk_jwk(tk_key(TK_RSA), "\"kid\":\"r1\",", a, sizeof(a)),
	         tk_jwk(tk_other_key(TK_P256), "\"kid\":\"e1\",", b, sizeof(b)),
	         tk_jwk(tk_key(TK_P384), "\"kid\":\"e2\",", c, sizeof(c)),
	         tk_jwk(tk_key(TK_ED25519), "", d, sizeof(d)));
	if (!(set = jwks_parse(doc, strlen(doc), NULL, NULL, err, sizeof(err))))
		abort();
	keys.key = set_key;
	keys.ctx = set;
	if (secret_set(&hmac_secret, "secret", 6))
		abort();
	cfg.issuer = "https://app.example.com";
	cfg.audience = "courier-broker";
	cfg.leeway_s = 30;
	cfg.max_token_bytes = 8192;
	cfg.subject_claim = "sub";
	if (!(keys.hmac = jwt_key_hmac(&hmac_secret, NULL, 0)))
		abort();
}

/* A successful decode must re-encode to exactly the input (canonical form). */
static void check_b64url(const uint8_t *data, size_t size)
{
	unsigned char out[1024], enc[1400];
	size_t n;
	int w;

	if (size > 1300 || jwt_b64url_decode((const char *)data, size, out, sizeof(out), &n))
		return;
	w = EVP_EncodeBlock(enc, out, (int)n);
	while (w > 0 && enc[w - 1] == '=')
		w--;
	for (int i = 0; i < w; i++)
		enc[i] = enc[i] == '+' ? '-' : enc[i] == '/' ? '_' : enc[i];
	if ((size_t)w != size || memcmp(enc, data, size) != 0)
		abort();
}

/* Verifies tok and checks the stack discipline of jwt_verify. */
static void verify_one(const char *tok, size_t len)
{
	char subject[257], err[160];
	int top = lua_gettop(L);

	if (jwt_verify(L, &cfg, &keys, tok, len, (time_t)1700000100, subject, sizeof(subject), err,
	               sizeof(err)) == 0) {
		if (lua_gettop(L) != top + 1 || lua_type(L, -1) != LUA_TTABLE)
			abort();
		lua_pop(L, 1);
	} else if (lua_gettop(L) != top || subject[0] != '\0' || err[0] == '\0') {
		abort();
	}
}

/* "header\npayload" signed with the HMAC secret and with the P-256 key. */
static void sign_and_verify(const uint8_t *data, size_t size)
{
	const uint8_t *nl = memchr(data, '\n', size);
	char header[1024], payload[2048], tok[8192];
	unsigned char mac[64];
	size_t hl, pl, n, maclen = 0;

	if (!nl)
		return;
	hl = (size_t)(nl - data);
	pl = size - hl - 1;
	if (hl >= sizeof(header) || pl >= sizeof(payload) || memchr(data, 0, size))
		return;
	memcpy(header, data, hl);
	header[hl] = '\0';
	memcpy(payload, nl + 1, pl);
	payload[pl] = '\0';
	tk_mint(tok, header, payload, "ES256", tk_key(TK_P256));
	verify_one(tok, strlen(tok));
	n = tk_b64url(tok, header, hl);
	tok[n++] = '.';
	n += tk_b64url(tok + n, payload, pl);
	if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, "secret", 6, (unsigned char *)tok, n, mac,
	               sizeof(mac), &maclen))
		abort();
	tok[n++] = '.';
	n += tk_b64url(tok + n, mac, maclen);
	verify_one(tok, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char subject[64], err[128];
	int top;

	if (!L)
		init();
	top = lua_gettop(L);
	if (jwt_verify(L, &cfg, &keys, (const char *)data, size, (time_t)1700000100, subject, sizeof(subject),
	               err, sizeof(err)) == 0) {
		if (lua_gettop(L) != top + 1 || lua_type(L, -1) != LUA_TTABLE)
			abort();
		lua_pop(L, 1);
	} else if (lua_gettop(L) != top || subject[0] != '\0' || err[0] == '\0') {
		abort();
	}
	if (jwt_peek_claims(L, (const char *)data, size) == 0) {
		if (lua_gettop(L) != top + 1 || lua_type(L, -1) != LUA_TTABLE)
			abort();
		lua_pop(L, 1);
	} else if (lua_gettop(L) != top) {
		abort();
	}
	check_b64url(data, size);
	sign_and_verify(data, size);
	/* Keep memory flat across millions of runs. */
	lua_gc(L, LUA_GCSTEP, 0);
	return 0;
}
