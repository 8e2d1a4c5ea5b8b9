/* test_json.c — the decoder's limits (src/json.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <lauxlib.h>
#include <lua.h>

#include "json.h"

static int setup(void **state)
{
	lua_State *L = luaL_newstate();

	if (!L || json_open(L) != 0)
		return -1;
	*state = L;
	return 0;
}

static int teardown(void **state)
{
	lua_close(*state);
	return 0;
}

static int decodes(lua_State *L, const char *s, size_t len)
{
	int top = lua_gettop(L), rc = json_decode(L, s, len);

	if (rc == 0)
		assert_int_equal(lua_gettop(L), top + 1);
	else
		assert_int_equal(lua_gettop(L), top);
	lua_settop(L, top);
	return rc;
}

static void t_integers_stay_integers(void **state)
{
	lua_State *L = *state;
	static const char doc[] = "{\"exp\":1700000000,\"f\":1.5,\"a\":[1,{\"n\":2}]}";

	assert_int_equal(json_decode(L, doc, strlen(doc)), 0);
	lua_getfield(L, -1, "exp");
	assert_true(lua_isinteger(L, -1));
	assert_int_equal(lua_tointeger(L, -1), 1700000000);
	lua_getfield(L, -2, "f");
	assert_false(lua_isinteger(L, -1));
	lua_getfield(L, -3, "a");
	lua_rawgeti(L, -1, 2);
	lua_getfield(L, -1, "n");
	assert_true(lua_isinteger(L, -1));
	lua_settop(L, 0);
}

static void t_refused(void **state)
{
	lua_State *L = *state;
	static const char nul[] = "{\"user_id\":\"alice\"}\0{\"user_id\":\"bob\"}";
	char deep[80];

	assert_int_equal(decodes(L, nul, sizeof(nul) - 1), -1);
	assert_int_equal(decodes(L, "{\"exp\":1e400}", 13), -1);
	assert_int_equal(decodes(L, "-1e400", 6), -1);
	assert_int_equal(decodes(L, "{\"x\":NaN}", 9), -1);
	assert_int_equal(decodes(L, "{\"x\":Infinity}", 14), -1);
	assert_int_equal(decodes(L, "{\"x\":0x10}", 10), -1);
	assert_int_equal(decodes(L, "{\"x\":", 5), -1);
	assert_int_equal(decodes(L, "", 0), -1);
	memset(deep, '[', 40);
	memset(deep + 40, ']', 40);
	assert_int_equal(decodes(L, deep, 80), -1); /* deeper than JSON_MAX_DEPTH */
	memset(deep, '[', 20);
	memset(deep + 20, ']', 20);
	assert_int_equal(decodes(L, deep, 40), 0);
}

static void t_objects_only(void **state)
{
	lua_State *L = *state;
	static const char *const refused[] = {"[]", "[{\"a\":1}]", "1", "\"s\"", "null", "", "  ", " [", "{"};
	static const char ok[] = " \r\n\t{\"a\":1}";
	int top = lua_gettop(L);

	assert_int_equal(json_decode_object(L, ok, sizeof(ok) - 1), 0);
	assert_int_equal(lua_type(L, -1), LUA_TTABLE);
	lua_settop(L, top);
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		assert_int_equal(json_decode_object(L, refused[i], strlen(refused[i])), -1);
		assert_int_equal(lua_gettop(L), top); /* nothing pushed */
	}
}

static void t_encode(void **state)
{
	lua_State *L = *state;
	size_t len;
	const char *s;

	lua_createtable(L, 0, 1);
	lua_pushstring(L, "a\"b\n");
	lua_setfield(L, -2, "k");
	s = json_encode(L, -1, &len);
	assert_non_null(s);
	assert_string_equal(s, "{\"k\":\"a\\\"b\\n\"}");
	lua_settop(L, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(t_integers_stay_integers),
	    cmocka_unit_test(t_refused),
	    cmocka_unit_test(t_objects_only),
	    cmocka_unit_test(t_encode),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
