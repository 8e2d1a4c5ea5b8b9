/*
 * testcase.c — the strict checks of a test file for `test` (policytest.c):
 * the file's own keys (its fixtures) and its list, each case's keys and
 * expect table (unknown keys, missing expectations, ones never checked),
 * and the lines cases are named on, for the report.
 *
 * Owns what a test file and its cases may say. A case's req is
 * policyeval.c's to check. It must never run a case, nor let a key it does
 * not know pass.
 */
#include "testcase.h"

#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

#include "lualex.h"
#include "policyeval.h"

static const char *const case_keys[] = {"name", "req", "expect", "data", "now", "identity", NULL};
static const char *const expect_keys[] = {"allow", "scopes", "expires_in", "reason", "error", "logs", NULL};
static const char *const file_keys[] = {"data", "now", "identity", NULL};

/* Pushes, for the test file's text, { [NAME] = { line, line, ... } }: the
 * lines of each `name = "NAME"` in it, in order (read once per file with
 * the Lua tokenizer, so a name in a comment or in another string is none). */
void testcase_push_lines(lua_State *L, const char *text, size_t len)
{
	struct lualex x;
	struct lualex_token t, eq, str;

	lua_newtable(L);
	if (!text)
		return;
	lualex_init(&x, text, len);
	while (lualex_next(&x, &t) != LUALEX_END && t.kind != LUALEX_BAD) {
		struct lualex save = x;
		if (!lualex_is(&x, &t, "name"))
			continue;
		if (lualex_next(&x, &eq) != LUALEX_OTHER || text[eq.start] != '=' ||
		    (x.pos < len && text[x.pos] == '=') || lualex_next(&x, &str) != LUALEX_STRING ||
		    str.escapes) {
			x = save;
			continue;
		}
		lua_pushlstring(L, text + str.body, str.body_len);
		if (lua_rawget(L, -2) != LUA_TTABLE) {
			lua_pop(L, 1);
			lua_newtable(L);
			lua_pushlstring(L, text + str.body, str.body_len);
			lua_pushvalue(L, -2);
			lua_rawset(L, -4);
		}
		lua_pushinteger(L, t.line);
		lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
		lua_pop(L, 1);
	}
}

/* The line of the nth (1-based) case named name, from the table at lines
 * (testcase_push_lines); 0 when unknown (a name built by code). */
int testcase_line(lua_State *L, int lines, const char *name, int nth)
{
	int top = lua_gettop(L), line = 0;

	if (lua_getfield(L, lines, name) == LUA_TTABLE && lua_rawgeti(L, -1, nth) == LUA_TNUMBER)
		line = (int)lua_tointeger(L, -1);
	lua_settop(L, top);
	return line;
}

/* Whether the field of the table at t is nil or a list of strings. */
static bool string_list(lua_State *L, int t, const char *field)
{
	bool ok = true;

	if (lua_getfield(L, t, field) == LUA_TNIL) {
		lua_pop(L, 1);
		return true;
	}
	if (!lua_istable(L, -1)) {
		lua_pop(L, 1);
		return false;
	}
	lua_pushnil(L);
	while (ok && lua_next(L, -2)) {
		ok = lua_isinteger(L, -2) && lua_tointeger(L, -2) >= 1 &&
		     lua_tointeger(L, -2) <= (lua_Integer)lua_rawlen(L, -3) && lua_type(L, -1) == LUA_TSTRING;
		lua_pop(L, ok ? 1 : 2);
	}
	lua_pop(L, 1);
	return ok;
}

/* The case's expect table at idx says something, with known keys of the
 * right types. 0 or -1 with the reason. */
static int check_expect_shape(lua_State *L, int idx, char *err, size_t errlen)
{
	int allow, error;

	if (policyeval_known_keys(L, idx, "expect", expect_keys, err, errlen) != 0)
		return -1;
	allow = lua_getfield(L, idx, "allow");
	error = lua_getfield(L, idx, "error");
	lua_pop(L, 2);
	if (error != LUA_TNIL && error != LUA_TBOOLEAN) {
		snprintf(err, errlen, "expect.error must be true or false");
		return -1;
	}
	lua_getfield(L, idx, "error");
	error = lua_toboolean(L, -1) ? 1 : 0;
	lua_pop(L, 1);
	if (error) {
		for (const char *const *k = expect_keys; *k; k++) {
			if (strcmp(*k, "error") == 0 || strcmp(*k, "logs") == 0)
				continue;
			if (lua_getfield(L, idx, *k) != LUA_TNIL) {
				snprintf(err, errlen,
				         "expect.error = true expects a policy error: expect.%s can never be "
				         "checked",
				         *k);
				lua_pop(L, 1);
				return -1;
			}
			lua_pop(L, 1);
		}
	} else if (allow != LUA_TBOOLEAN) {
		snprintf(err, errlen, "%s",
		         allow == LUA_TNIL ? "expect.allow is missing: say whether the request is allowed "
		                             "(or expect.error = true)"
		                           : "expect.allow must be true or false");
		return -1;
	}
	if (!string_list(L, idx, "scopes")) {
		snprintf(err, errlen, "expect.scopes must be a list of strings");
		return -1;
	}
	if (!string_list(L, idx, "logs")) {
		snprintf(err, errlen,
		         "expect.logs must be a list of strings (the broker.log lines, in order)");
		return -1;
	}
	if (lua_getfield(L, idx, "reason") > LUA_TNIL && !lua_isstring(L, -1)) {
		lua_pop(L, 1);
		snprintf(err, errlen, "expect.reason must be a string");
		return -1;
	}
	lua_pop(L, 1);
	if (lua_getfield(L, idx, "expires_in") > LUA_TNIL && !lua_isinteger(L, -1) &&
	    lua_type(L, -1) != LUA_TSTRING) {
		lua_pop(L, 1);
		snprintf(err, errlen, "expect.expires_in must be whole seconds or a duration (\"15m\")");
		return -1;
	}
	lua_pop(L, 1);
	lua_getfield(L, idx, "allow");
	allow = lua_toboolean(L, -1);
	lua_pop(L, 1);
	for (int i = 0; !error && !allow && i < 2; i++) {
		const char *f = i ? "expires_in" : "scopes";
		if (lua_getfield(L, idx, f) != LUA_TNIL) {
			snprintf(err, errlen, "expect.%s is never checked on a deny (allow = false)", f);
			lua_pop(L, 1);
			return -1;
		}
		lua_pop(L, 1);
	}
	return 0;
}

/* The file's own keys (fixtures) and its list: 0 or -1 with the reason. */
int testcase_check_file(lua_State *L, int cases, char *err, size_t errlen)
{
	lua_Integer n = (lua_Integer)lua_rawlen(L, cases);

	lua_pushnil(L);
	while (lua_next(L, cases)) {
		lua_pop(L, 1);
		if (lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 1 && lua_tointeger(L, -1) <= n)
			continue;
		if (lua_type(L, -1) == LUA_TSTRING) {
			bool known = false;
			for (const char *const *k = file_keys; *k && !known; k++)
				known = strcmp(*k, lua_tostring(L, -1)) == 0;
			if (known)
				continue;
			snprintf(err, errlen,
			         "unknown key '%s' in the file's table (data, now, identity, and the cases)",
			         lua_tostring(L, -1));
		} else {
			snprintf(err, errlen, "the list of cases has a hole or a key that is not a case (%s)",
			         luaL_typename(L, -1));
		}
		lua_pop(L, 1);
		return -1;
	}
	if (lua_getfield(L, cases, "now") != LUA_TNIL && !lua_isinteger(L, -1)) {
		lua_pop(L, 1);
		snprintf(err, errlen, "now must be an integer (Unix time in seconds)");
		return -1;
	}
	lua_pop(L, 1);
	if (lua_getfield(L, cases, "identity") != LUA_TNIL && !lua_istable(L, -1)) {
		lua_pop(L, 1);
		snprintf(err, errlen, "identity must be a table (the cases' default req.identity)");
		return -1;
	}
	lua_pop(L, 1);
	return 0;
}

/* A case's own shape at idx (not its request: policyeval.c checks that). */
int testcase_check_case(lua_State *L, int idx, char *err, size_t errlen)
{
	int data;

	if (policyeval_known_keys(L, idx, "case", case_keys, err, errlen) != 0)
		return -1;
	if (lua_getfield(L, idx, "req") != LUA_TTABLE) {
		lua_pop(L, 1);
		snprintf(err, errlen, "a case needs a req table");
		return -1;
	}
	lua_pop(L, 1);
	if (lua_getfield(L, idx, "expect") != LUA_TTABLE) {
		lua_pop(L, 1);
		snprintf(err, errlen, "a case needs an expect table: what must come out");
		return -1;
	}
	if (check_expect_shape(L, lua_gettop(L), err, errlen) != 0) {
		lua_pop(L, 1);
		return -1;
	}
	lua_pop(L, 1);
	data = lua_getfield(L, idx, "data");
	lua_pop(L, 1);
	if (data != LUA_TNIL && data != LUA_TTABLE && data != LUA_TBOOLEAN && data != LUA_TSTRING) {
		snprintf(
		    err, errlen,
		    "data must be a table (broker.data for this case), a JSON file's path or false (none)");
		return -1;
	}
	/* now and identity: the case's own, as req.now and req.identity are
	 * (one place for each: both would leave a reader guessing which wins). */
	for (int i = 0; i < 2; i++) {
		const char *k = i == 0 ? "now" : "identity";
		int type = lua_getfield(L, idx, k);
		bool ok = type == LUA_TNIL || (i == 0 ? lua_isinteger(L, -1) : type == LUA_TTABLE);
		lua_pop(L, 1);
		if (!ok) {
			snprintf(err, errlen, "%s",
			         i == 0 ? "now must be an integer (Unix time in seconds)"
			                : "identity must be a table (this case's req.identity)");
			return -1;
		}
		if (type == LUA_TNIL)
			continue;
		lua_getfield(L, idx, "req");
		type = lua_getfield(L, -1, k);
		lua_pop(L, 2);
		if (type != LUA_TNIL) {
			snprintf(err, errlen, "the case gives both %s and req.%s: keep one", k, k);
			return -1;
		}
	}
	return 0;
}
