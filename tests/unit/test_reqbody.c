/*
 * test_reqbody.c — unit tests for src/reqbody.c.
 *
 * Owns the proof that the body of a token request is checked before any
 * policy sees it: user_id present and valid, scopes an array of valid scope
 * tokens, expires_in a duration or positive seconds, JSON null as absent, and
 * the Lua stack left as it was.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <string.h>

#include "reqbody.h"

/* Runs reqbody_check on the table `code` returns; the message or NULL. */
static const char *check_body_of(lua_State *L, const char *code, const char **uid)
{
	const char *msg = NULL;
	size_t len = 0;
	int top;

	assert_int_equal(luaL_dostring(L, code), 0);
	top = lua_gettop(L);
	*uid = NULL;
	if (reqbody_check(L, -1, uid, &len, &msg) == 0) {
		assert_non_null(*uid);
		assert_int_equal(strlen(*uid), len);
		msg = NULL;
	} else {
		assert_non_null(msg);
	}
	assert_int_equal(lua_gettop(L), top); /* the stack as it was */
	return msg;
}

static void test_check_body(void **state)
{
	static const struct {
		const char *code, *why; /* why: NULL when accepted */
	} cases[] = {
	    {"return { user_id = 'alice' }", NULL},
	    {"return { user_id = 'alice', scopes = { 'inbox:read:messages', 'read:brands' }, expires_in = "
	     "'1h' }",
	     NULL},
	    {"return { user_id = 'alice', scopes = {}, expires_in = 3600 }", NULL},
	    {"return { user_id = 'alice', expires_in = '2 days' }", NULL},
	    {"return {}", "user_id is required"},
	    {"return { user_id = 42 }", "user_id is required"},
	    {"return { user_id = 'al ice' }", "user_id must be"},
	    {"return { user_id = 'alice\\tx' }", "user_id must be"},
	    {"return { user_id = 'alice\\nuser_id:bob' }", "user_id must be"},
	    {"return { user_id = '' }", "user_id must be"},
	    {"return { user_id = string.rep('a', 257) }", "user_id must be"},
	    {"return { user_id = 'alice', scopes = 'inbox:read:messages' }", "scopes must be an array"},
	    {"return { user_id = 'alice', scopes = { 'inbox:read:messages', 7 } }",
	     "scopes must be an array"},
	    {"return { user_id = 'alice', scopes = { a = 'inbox:read:messages' } }",
	     "scopes must be an array"},
	    {"return { user_id = 'alice', scopes = { [1] = 'read:brands', [3] = 'read:brands' } }",
	     "scopes must be an array"},
	    {"return { user_id = 'alice', scopes = { 'read:brands user_id:bob' } }", "invalid characters"},
	    {"local t = {} for i = 1, 33 do t[i] = 'read:brands' end return { user_id = 'alice', scopes = t "
	     "}",
	     "too many scopes"},
	    {"return { user_id = 'alice', expires_in = '1 fortnight' }", "expires_in must be"},
	    {"return { user_id = 'alice', expires_in = 3600.5 }", "expires_in must be"},
	    {"return { user_id = 'alice', expires_in = 0 }", "expires_in must be"},
	    {"return { user_id = 'alice', expires_in = -60 }", "expires_in must be"},
	    {"return { user_id = 'alice', expires_in = true }", "expires_in must be"},
	};
	lua_State *L = luaL_newstate();
	const char *uid, *msg;

	(void)state;
	assert_non_null(L);
	luaL_openlibs(L);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		msg = check_body_of(L, cases[i].code, &uid);
		if (!cases[i].why && msg)
			fail_msg("refused %s: %s", cases[i].code, msg);
		if (cases[i].why && (!msg || !strstr(msg, cases[i].why)))
			fail_msg("%s: got \"%s\", expected \"%s\"", cases[i].code, msg ? msg : "(accepted)",
			         cases[i].why);
		if (!msg)
			assert_string_equal(uid, "alice");
		lua_settop(L, 0);
	}
	/* JSON null (cjson's NULL light userdata) is absent, like nil. */
	assert_int_equal(luaL_dostring(L, "return { user_id = 'alice' }"), 0);
	lua_pushlightuserdata(L, NULL);
	lua_setfield(L, -2, "scopes");
	lua_pushlightuserdata(L, NULL);
	lua_setfield(L, -2, "expires_in");
	{
		size_t len;
		assert_int_equal(reqbody_check(L, -1, &uid, &len, &msg), 0);
		assert_int_equal(len, 5);
	}
	lua_close(L);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_check_body),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
