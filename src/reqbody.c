/*
 * reqbody.c — the fields of a token request's body the core owns.
 *
 * Owns the first check of a request, before identity and before any policy:
 * user_id, scopes and expires_in have the right types and shapes. Every
 * message it gives is static text fit for the client. It must never quote
 * the body, never keep a reference into it beyond the body's life, and never
 * leave the Lua stack changed. (The ceiling on what a policy grants is
 * envelope.c's: a body that passes here grants nothing yet.)
 */
#include "reqbody.h"

#include <lua.h>
#include <stdbool.h>

#include "duration.h"
#include "envelope.h"
#include "scope.h"

/* nil, or JSON null (cjson's null is a NULL light userdata). */
static bool is_absent(lua_State *L, int idx)
{
	return lua_isnil(L, idx) || (lua_islightuserdata(L, idx) && lua_touserdata(L, idx) == NULL);
}

static int check_scopes(lua_State *L, int list, const char **msg)
{
	lua_Integer n;
	size_t len;
	const char *s;

	if (lua_type(L, list) != LUA_TTABLE) {
		*msg = "scopes must be an array of strings";
		return -1;
	}
	n = (lua_Integer)lua_rawlen(L, list);
	if (n > DECISION_MAX_SCOPES) {
		*msg = "too many scopes";
		return -1;
	}
	for (lua_Integer i = 1; i <= n; i++) {
		lua_rawgeti(L, list, i);
		if (lua_type(L, -1) != LUA_TSTRING) {
			*msg = "scopes must be an array of strings";
			return -1;
		}
		s = lua_tolstring(L, -1, &len);
		if (!scope_token_valid(s, len)) {
			*msg = "a scope has invalid characters";
			return -1;
		}
		lua_pop(L, 1);
	}
	/* An object, or an array with holes, has keys beyond 1..n. */
	lua_pushnil(L);
	while (lua_next(L, list)) {
		lua_pop(L, 1);
		if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || lua_tointeger(L, -1) > n) {
			*msg = "scopes must be an array of strings";
			return -1;
		}
	}
	return 0;
}

static int check_expires(lua_State *L, int idx, const char **msg)
{
	long long secs;
	size_t len;
	const char *s;

	if (lua_type(L, idx) == LUA_TSTRING) {
		s = lua_tolstring(L, idx, &len);
		if (duration_parse(s, len, &secs) == 0)
			return 0;
	} else if (lua_isinteger(L, idx) && lua_tointeger(L, idx) > 0) {
		return 0;
	}
	*msg = "expires_in must be a duration with a unit (\"1h\", \"30m\") or seconds as a number";
	return -1;
}

int reqbody_check(lua_State *L, int body, const char **user_id, size_t *user_id_len, const char **msg)
{
	int top = lua_gettop(L), rc = -1;

	body = lua_absindex(L, body);
	lua_getfield(L, body, "user_id");
	if (lua_type(L, -1) != LUA_TSTRING) {
		*msg = "user_id is required and must be a string";
		goto out;
	}
	*user_id = lua_tolstring(L, -1, user_id_len); /* the body keeps the string */
	if (!scope_user_id_valid(*user_id, *user_id_len)) {
		*msg = "user_id must be 1-256 bytes of UTF-8 without whitespace, control or invisible "
		       "characters";
		goto out;
	}
	lua_getfield(L, body, "scopes");
	if (!is_absent(L, -1) && check_scopes(L, lua_gettop(L), msg) != 0)
		goto out;
	lua_settop(L, top + 1);
	lua_getfield(L, body, "expires_in");
	if (!is_absent(L, -1) && check_expires(L, lua_gettop(L), msg) != 0)
		goto out;
	rc = 0;
out:
	lua_settop(L, top);
	return rc;
}
