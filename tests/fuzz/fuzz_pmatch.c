/*
 * fuzz_pmatch.c — differential libFuzzer driver for src/pmatch.c.
 *
 * The input is "pattern\nsubject". Whenever the budgeted matcher finishes
 * within its budget, Lua 5.4's own string.find and string.match must give
 * exactly the same results (or both raise). A budget breach must end the
 * match with an error, never a crash or a hang.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pmatch.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define BUDGET 200000UL

static lua_State *L;
static unsigned long spent;

static int charge(lua_State *Ls, unsigned long steps)
{
	(void)Ls;
	spent += steps;
	return spent > BUDGET;
}

static const struct pmatch_budget budget = {charge};

/* Calls lib.fn(subject, pattern) under pcall; pushes one string describing the outcome. */
static int outcome(const char *lib, const char *fn, const char *p, size_t plen, const char *s, size_t slen)
{
	int top = lua_gettop(L), rc;

	lua_getglobal(L, lib);
	lua_getfield(L, -1, fn);
	lua_pushlstring(L, s, slen);
	lua_pushlstring(L, p, plen);
	rc = lua_pcall(L, 2, LUA_MULTRET, 0);
	if (rc != LUA_OK) {
		lua_settop(L, top);
		lua_pushliteral(L, "error");
		return rc;
	}
	/* Join the results' tostring()s. */
	luaL_Buffer b;
	int n = lua_gettop(L) - top - 1;
	luaL_buffinit(L, &b);
	for (int i = 1; i <= n; i++) {
		luaL_tolstring(L, top + 1 + i, NULL);
		luaL_addvalue(&b);
		luaL_addchar(&b, '|');
	}
	luaL_pushresult(&b);
	lua_replace(L, top + 1);
	lua_settop(L, top + 1);
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nl = memchr(data, '\n', size);
	size_t plen, slen;
	static const char *const fns[] = {"find", "match"};

	if (!nl)
		return 0;
	plen = (size_t)(nl - data);
	slen = size - plen - 1;
	if (plen > 24 || slen > 256)
		return 0;
	if (!L) {
		L = luaL_newstate();
		if (!L)
			abort();
		luaL_openlibs(L);
		lua_newtable(L);
		pmatch_register(L, lua_gettop(L), &budget);
		lua_setglobal(L, "pm");
	}
	for (int f = 0; f < 2; f++) {
		int top = lua_gettop(L);
		spent = 0;
		outcome("pm", fns[f], (const char *)data, plen, (const char *)nl + 1, slen);
		if (spent > BUDGET) {
			/* Stopped by the budget: it must have been reported as an error. */
			if (strcmp(lua_tostring(L, -1), "error") != 0)
				abort();
		} else {
			outcome("string", fns[f], (const char *)data, plen, (const char *)nl + 1, slen);
			if (strcmp(lua_tostring(L, -1), lua_tostring(L, -2)) != 0)
				abort();
		}
		lua_settop(L, top);
	}
	return 0;
}
