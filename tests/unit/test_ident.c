/*
 * test_ident.c — tests for src/ident.c.
 *
 * The requester's identity per tenant auth modes: Bearer parsing, the jwt
 * mode, the none mode, and that a credential which is present but cannot be
 * verified never falls through to "none".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <lauxlib.h>
#include <lua.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "ident.h"
#include "json.h"
#include "jwt.h"
#include "secret.h"

#define NOW 1700000100LL

/* PyJWT 2.6.0: jwt.encode({"sub":"alice","iss":"https://app.example.com",
 * "aud":"courier-broker","iat":1700000000,"exp":1700003600}, "secret", "HS256") */
static const char PY_HS256[] =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiJhbGljZSIsImlzcyI6Imh0dHBzOi8vYXBwLmV4YW1wbGUuY29tIiwiYXVkIjoiY291cmllci1icm9rZXIiLCJpYXQi"
    "OjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMzYwMH0.z2cpplD9QN7jdA0tdSvLiFTtfzcJfgObH7emOuUta0s";

struct fx {
	lua_State *L;
	struct auth_config auth;
	struct identity id;
	char err[160];
	char hdr[1024];
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	f->L = luaL_newstate();
	if (!f->L || json_open(f->L))
		return -1;
	f->auth.jwt.enabled = true;
	f->auth.jwt.algorithms = JWT_HS256;
	if (secret_set(&f->auth.jwt.hmac_secret, "secret", 6))
		return -1;
	f->auth.jwt.issuer = "https://app.example.com";
	f->auth.jwt.audience = "courier-broker";
	f->auth.jwt.leeway_s = 30;
	f->auth.jwt.max_token_bytes = 8192;
	f->auth.jwt.subject_claim = "sub";
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	secret_clear(&f->auth.jwt.hmac_secret);
	lua_close(f->L);
	free(f);
	return 0;
}

/* Runs ident_authenticate with that header; checks the stack discipline. */
static int auth(struct fx *f, const char *authorization)
{
	struct ident_request rq = {.authorization = authorization, .peer_ip = "127.0.0.1", .now = NOW};
	int top = lua_gettop(f->L), rc;

	f->err[0] = '\0';
	rc = ident_authenticate(f->L, &f->auth, &rq, &f->id, f->err, sizeof(f->err));
	if (rc == 0 && f->id.claims_idx) {
		assert_int_equal(lua_gettop(f->L), top + 1);
		assert_int_equal(f->id.claims_idx, top + 1);
		assert_int_equal(lua_type(f->L, f->id.claims_idx), LUA_TTABLE);
	} else {
		assert_int_equal(lua_gettop(f->L), top);
		assert_int_equal(f->id.claims_idx, 0);
	}
	if (rc) {
		assert_int_equal(rc, -1);
		assert_false(f->id.authenticated);
		assert_string_equal(f->id.subject, "");
		assert_true(f->err[0] != '\0');
		/* The reason never quotes the credential. */
		assert_null(strstr(f->err, "eyJ"));
		assert_null(strstr(f->err, "dXNlcjpwYXNz"));
	}
	return rc;
}

static void expect_jwt(struct fx *f, const char *authorization)
{
	if (auth(f, authorization))
		fail_msg("refused: %s", f->err);
	assert_true(f->id.authenticated);
	assert_string_equal(f->id.method, "jwt");
	assert_string_equal(f->id.subject, "alice");
	lua_getfield(f->L, f->id.claims_idx, "iss");
	assert_string_equal(lua_tostring(f->L, -1), "https://app.example.com");
	lua_settop(f->L, 0);
}

static void expect_refused(struct fx *f, const char *authorization, const char *why)
{
	assert_int_equal(auth(f, authorization), -1);
	if (why && !strstr(f->err, why))
		fail_msg("reason \"%s\", expected \"%s\"", f->err, why);
}

/* ---- Bearer parsing ------------------------------------------------------ */

static void t_bearer_ok(void **state)
{
	struct fx *f = *state;

	snprintf(f->hdr, sizeof(f->hdr), "Bearer %s", PY_HS256);
	expect_jwt(f, f->hdr);
	snprintf(f->hdr, sizeof(f->hdr), "bearer %s", PY_HS256);
	expect_jwt(f, f->hdr);
	snprintf(f->hdr, sizeof(f->hdr), "BEARER   %s", PY_HS256);
	expect_jwt(f, f->hdr);
}

static void t_claims_idx_is_absolute(void **state)
{
	struct fx *f = *state;

	lua_pushinteger(f->L, 1);
	lua_pushinteger(f->L, 2);
	snprintf(f->hdr, sizeof(f->hdr), "Bearer %s", PY_HS256);
	assert_int_equal(auth(f, f->hdr), 0);
	assert_int_equal(f->id.claims_idx, 3);
	lua_pushinteger(f->L, 4); /* still points at the claims after more pushes */
	assert_int_equal(lua_type(f->L, f->id.claims_idx), LUA_TTABLE);
	lua_settop(f->L, 0);
}

static void t_bearer_malformed(void **state)
{
	struct fx *f = *state;

	expect_refused(f, "Basic dXNlcjpwYXNz", "unsupported authorization scheme");
	expect_refused(f, "Bearer", "malformed");
	expect_refused(f, "Bearer ", "malformed");
	expect_refused(f, "Bearer    ", "malformed");
	expect_refused(f, "", "unsupported");
	snprintf(f->hdr, sizeof(f->hdr), "Bearer\t%s", PY_HS256);
	expect_refused(f, f->hdr, NULL);
	snprintf(f->hdr, sizeof(f->hdr), "Bearer%s", PY_HS256);
	expect_refused(f, f->hdr, "unsupported");
	snprintf(f->hdr, sizeof(f->hdr), "Bearer %s x", PY_HS256);
	expect_refused(f, f->hdr, "malformed");
	snprintf(f->hdr, sizeof(f->hdr), "Bearer %s ", PY_HS256);
	expect_refused(f, f->hdr, "malformed");
	snprintf(f->hdr, sizeof(f->hdr), " Bearer %s", PY_HS256);
	expect_refused(f, f->hdr, "unsupported");
	snprintf(f->hdr, sizeof(f->hdr), "Bearerx %s", PY_HS256);
	expect_refused(f, f->hdr, "unsupported");
	snprintf(f->hdr, sizeof(f->hdr), "Token %s", PY_HS256);
	expect_refused(f, f->hdr, "unsupported");
}

static void t_bad_jwt(void **state)
{
	struct fx *f = *state;

	snprintf(f->hdr, sizeof(f->hdr), "Bearer %s", PY_HS256);
	f->hdr[strlen(f->hdr) - 2] ^= 1;
	expect_refused(f, f->hdr, "jwt: bad signature");
	expect_refused(f, "Bearer not-a-jwt", "jwt:");
	f->auth.jwt.audience = "someone-else";
	snprintf(f->hdr, sizeof(f->hdr), "Bearer %s", PY_HS256);
	expect_refused(f, f->hdr, "jwt: audience");
}

/* ---- modes --------------------------------------------------------------- */

static void t_no_credential(void **state)
{
	struct fx *f = *state;

	expect_refused(f, NULL, "no credential");
}

static void t_none_mode(void **state)
{
	struct fx *f = *state;

	f->auth.none = true;
	assert_int_equal(auth(f, NULL), 0);
	assert_false(f->id.authenticated);
	assert_string_equal(f->id.method, "none");
	assert_string_equal(f->id.subject, "");
	assert_int_equal(f->id.claims_idx, 0);
	/* jwt and none together: a good token still authenticates. */
	snprintf(f->hdr, sizeof(f->hdr), "Bearer %s", PY_HS256);
	expect_jwt(f, f->hdr);
}

static void t_present_invalid_with_none_enabled(void **state)
{
	struct fx *f = *state;

	f->auth.none = true;
	snprintf(f->hdr, sizeof(f->hdr), "Bearer %s", PY_HS256);
	f->hdr[strlen(f->hdr) - 2] ^= 1;
	expect_refused(f, f->hdr, "bad signature");
	expect_refused(f, "Bearer garbage", "jwt:");
	expect_refused(f, "Basic dXNlcjpwYXNz", "unsupported");
	expect_refused(f, "Bearer", "malformed");
	expect_refused(f, "", NULL);
}

static void t_none_only_refuses_any_credential(void **state)
{
	struct fx *f = *state;

	f->auth.jwt.enabled = false;
	f->auth.none = true;
	assert_int_equal(auth(f, NULL), 0);
	assert_string_equal(f->id.method, "none");
	/* A valid JWT, but this tenant cannot verify JWTs: fail closed. */
	snprintf(f->hdr, sizeof(f->hdr), "Bearer %s", PY_HS256);
	expect_refused(f, f->hdr, "not accepted");
	expect_refused(f, "Basic dXNlcjpwYXNz", "unsupported");
}

static void t_nothing_enabled(void **state)
{
	struct fx *f = *state;

	f->auth.jwt.enabled = false;
	f->auth.none = false;
	expect_refused(f, NULL, "no credential");
	snprintf(f->hdr, sizeof(f->hdr), "Bearer %s", PY_HS256);
	expect_refused(f, f->hdr, "not accepted");
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(t_bearer_ok),
	    T(t_claims_idx_is_absolute),
	    T(t_bearer_malformed),
	    T(t_bad_jwt),
	    T(t_no_credential),
	    T(t_none_mode),
	    T(t_present_invalid_with_none_enabled),
	    T(t_none_only_refuses_any_credential),
	    T(t_nothing_enabled),
	};

	return cmocka_run_group_tests_name("ident", tests, NULL, NULL);
}
