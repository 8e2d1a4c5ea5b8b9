/*
 * fuzz_body.c — libFuzzer driver for reqbody_check (src/reqbody.c):
 * the check of a token request's JSON body before any policy sees it.
 *
 * Owns the properties: whatever the bytes, the check never crashes and leaves
 * the stack as it found it; a body it accepts names a user id that is itself
 * valid (no whitespace, no control byte, 1-256 bytes), and every scope it let
 * through is a valid scope token; a body it refuses says why.
 */
#include <lauxlib.h>
#include <lua.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_lua.h"
#include "json.h"
#include "reqbody.h"
#include "scope.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	lua_State *L = fuzz_lua();
	char *s = fuzz_copy(data, size);
	const char *uid = NULL, *msg = NULL;
	size_t uid_len = 0;
	int top, body;

	if (!s)
		return 0;
	top = lua_gettop(L);
	if (json_decode_object(L, s, size) == 0) {
		body = lua_gettop(L);
		if (reqbody_check(L, body, &uid, &uid_len, &msg) == 0) {
			if (!uid || !scope_user_id_valid(uid, uid_len) || strlen(uid) != uid_len)
				abort();
			if (lua_getfield(L, body, "scopes") == LUA_TTABLE) {
				for (lua_Integer i = 1; lua_rawgeti(L, -1, i) != LUA_TNIL; i++) {
					size_t n;
					const char *sc = lua_tolstring(L, -1, &n);
					if (!sc || !scope_token_valid(sc, n))
						abort();
					lua_pop(L, 1);
				}
				lua_pop(L, 1);
			}
			lua_pop(L, 1);
		} else if (!msg || !msg[0]) {
			abort();
		}
		if (lua_gettop(L) != body)
			abort();
	}
	lua_settop(L, top);
	free(s);
	return 0;
}
