/*
 * test_policy_coverage.c — branch coverage (src/policy/coverage.c): the
 * instrumented source keeps every line and every condition's value, and
 * finds each if/elseif, never one in a string or a comment.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"

static size_t count_lines(const char *s, size_t len)
{
	size_t n = 0;
	for (size_t i = 0; i < len; i++)
		n += s[i] == '\n';
	return n;
}

static const char SRC[] = "local s = 'if x then' -- if y then\n"
                          "local function f(a)\n"
                          "  if a == 1 then return 'one'\n"
                          "  elseif (function() if a then return a > 5 end end)() then\n"
                          "    return 'big'\n"
                          "  elseif a == nil then return nil\n"
                          "  else return 'other' end\n"
                          "end\n"
                          "return f(1), f(9), f(2), f(nil), [[\nif]]\n";

static void test_instrument(void **state)
{
	char *out;
	size_t outlen, n;
	int *lines;
	lua_State *L;

	(void)state;
	assert_int_equal(policy_branch_instrument(SRC, strlen(SRC), &out, &outlen, &lines, &n), 0);
	assert_int_equal(n, 4);
	assert_int_equal(lines[0], 3);
	assert_int_equal(lines[1], 4);
	assert_int_equal(lines[2], 4); /* the if inside the condition's function */
	assert_int_equal(lines[3], 6);
	assert_int_equal(count_lines(out, outlen), count_lines(SRC, strlen(SRC)));
	/* Same results, with and without a recorder (here: none, the fallback). */
	L = luaL_newstate();
	assert_non_null(L);
	luaL_openlibs(L);
	assert_int_equal(luaL_loadbufferx(L, out, outlen, "=x", "t"), LUA_OK);
	assert_int_equal(lua_pcall(L, 0, 5, 0), LUA_OK);
	assert_string_equal(lua_tostring(L, 1), "one");
	assert_string_equal(lua_tostring(L, 2), "big");
	assert_string_equal(lua_tostring(L, 3), "other");
	assert_true(lua_isnil(L, 4));
	assert_string_equal(lua_tostring(L, 5), "if");
	lua_close(L);
	free(out);
	free(lines);
}

/* Text Lua would refuse is left alone. */
static void test_not_lua(void **state)
{
	char *out;
	size_t outlen, n;
	int *lines;

	(void)state;
	assert_int_equal(policy_branch_instrument("if x", 4, &out, &outlen, &lines, &n), -1);
	assert_int_equal(policy_branch_instrument("x = 'open", 9, &out, &outlen, &lines, &n), -1);
	assert_int_equal(policy_branch_instrument("return 1", 8, &out, &outlen, &lines, &n), 0);
	assert_int_equal(n, 0);
	assert_string_equal(out, "return 1");
	free(out);
	free(lines);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_instrument),
	    cmocka_unit_test(test_not_lua),
	};
	return cmocka_run_group_tests_name("policy_coverage", tests, NULL, NULL);
}
