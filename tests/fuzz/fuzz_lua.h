/*
 * fuzz_lua.h — what the drivers that parse through Lua share: one state with
 * cjson, made on the first input and kept (as the broker keeps its engines),
 * and a heap copy of each input, exactly its size, so ASan sees a read past
 * its end.
 */
#ifndef FUZZ_LUA_H
#define FUZZ_LUA_H

#include <lauxlib.h>
#include <lua.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

static inline lua_State *fuzz_lua(void)
{
	static lua_State *L;

	if (!L) {
		L = luaL_newstate();
		if (!L || json_open(L) != 0)
			abort();
	}
	return L;
}

/* The input as a malloc'ed buffer of exactly size bytes (one for size 0); NULL when out of memory. */
static inline char *fuzz_copy(const uint8_t *data, size_t size)
{
	char *s = malloc(size ? size : 1);

	if (s)
		memcpy(s, data, size);
	return s;
}

#endif
