/*
 * json.c — JSON through lua-cjson on a caller's Lua state.
 *
 * Owns the decoder's limits. The cjson module table lives in the state's
 * registry, out of reach of any policy. Must never be given a secret to encode.
 */
#include "json.h"

#include <lauxlib.h>
#include <lua-cjson.h>
#include <lua.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

#define REG_KEY "broker.cjson"

/* Registry keys of cjson.decode and cjson.encode: addresses, looked up
 * without hashing a string on every call. */
static const char DECODE_KEY = 'd';
static const char ENCODE_KEY = 'e';

static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;

/* Calls cjson.<fn>(arg) on the module table at the top of the stack. */
static int configure(lua_State *L, const char *fn, int arg, int is_bool)
{
	lua_getfield(L, -1, fn);
	if (is_bool)
		lua_pushboolean(L, arg);
	else
		lua_pushinteger(L, arg);
	return lua_pcall(L, 1, 0, 0) == LUA_OK ? 0 : (lua_pop(L, 1), -1);
}

int json_open(lua_State *L)
{
	int rc = 0;

	/* luaopen_cjson writes a static on its first call: one thread at a time. */
	pthread_mutex_lock(&open_lock);
	lua_pushcfunction(L, luaopen_cjson);
	rc = lua_pcall(L, 0, 1, 0) == LUA_OK ? 0 : -1;
	pthread_mutex_unlock(&open_lock);
	if (rc) {
		lua_pop(L, 1);
		return -1;
	}
	if (configure(L, "decode_invalid_numbers", 0, 1) || configure(L, "encode_invalid_numbers", 0, 1) ||
	    configure(L, "decode_max_depth", JSON_MAX_DEPTH, 0) ||
	    configure(L, "encode_max_depth", JSON_MAX_DEPTH, 0) ||
	    configure(L, "encode_sparse_array", 0, 1)) {
		lua_pop(L, 1);
		return -1;
	}
	/* Keep decode and encode as registry entries: one lookup per call. */
	lua_getfield(L, -1, "decode");
	lua_rawsetp(L, LUA_REGISTRYINDEX, &DECODE_KEY);
	lua_getfield(L, -1, "encode");
	lua_rawsetp(L, LUA_REGISTRYINDEX, &ENCODE_KEY);
	lua_setfield(L, LUA_REGISTRYINDEX, REG_KEY);
	return 0;
}

/*
 * The float at the top of the stack: raises when it overflowed to ±infinity
 * ("exp": 1e400 would be a token that never expires); replaces an integral
 * value within ±2^53 by the integer. Returns 1 when it replaced it.
 */
static int normalise_number(lua_State *L)
{
	lua_Number n = lua_tonumber(L, -1);
	lua_Integer i;

	if (!isfinite(n))
		luaL_error(L, "number out of range");
	if (n < -9007199254740992.0 || n > 9007199254740992.0 || !lua_numbertointeger(n, &i) ||
	    (lua_Number)i != n)
		return 0;
	lua_pop(L, 1);
	lua_pushinteger(L, i);
	return 1;
}

/* Turns integral floats into integers, in place, for the value at the top. */
static void integerise(lua_State *L, int depth)
{
	if (depth > JSON_MAX_DEPTH + 1 || lua_type(L, -1) != LUA_TTABLE)
		return;
	/* Two slots per level of nesting: make room (raises under our pcall). */
	luaL_checkstack(L, 4, "JSON nesting");
	lua_pushnil(L);
	while (lua_next(L, -2)) {
		if (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1)) {
			if (normalise_number(L)) {
				lua_pushvalue(L, -2);
				lua_pushvalue(L, -2);
				lua_rawset(L, -5);
			}
		} else if (lua_type(L, -1) == LUA_TTABLE) {
			integerise(L, depth + 1);
		}
		lua_pop(L, 1);
	}
}

static int decode_protected(lua_State *L)
{
	size_t len;
	const char *buf = lua_touserdata(L, 1);

	len = (size_t)lua_tointeger(L, 2);
	lua_rawgetp(L, LUA_REGISTRYINDEX, &DECODE_KEY);
	lua_pushlstring(L, buf, len);
	lua_call(L, 1, 1);
	if (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1))
		normalise_number(L);
	integerise(L, 0);
	return 1;
}

int json_decode(lua_State *L, const char *buf, size_t len)
{
	/* cjson stops at a NUL: "{...}\0{...}" would read as its first half. */
	if (memchr(buf, '\0', len))
		return -1;
	lua_pushcfunction(L, decode_protected);
	lua_pushlightuserdata(L, (void *)buf);
	lua_pushinteger(L, (lua_Integer)len);
	if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
		lua_pop(L, 1);
		return -1;
	}
	return 0;
}

int json_decode_object(lua_State *L, const char *buf, size_t len)
{
	size_t i = 0;

	while (i < len && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\r' || buf[i] == '\n'))
		i++;
	/* A document that starts with '{' and decodes is a table. */
	if (i == len || buf[i] != '{')
		return -1;
	return json_decode(L, buf, len);
}

const char *json_encode(lua_State *L, int idx, size_t *len)
{
	idx = lua_absindex(L, idx);
	lua_rawgetp(L, LUA_REGISTRYINDEX, &ENCODE_KEY);
	lua_pushvalue(L, idx);
	if (lua_pcall(L, 1, 1, 0) != LUA_OK || lua_type(L, -1) != LUA_TSTRING) {
		lua_pop(L, 1);
		return NULL;
	}
	return lua_tolstring(L, -1, len);
}
