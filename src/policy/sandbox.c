/*
 * policy/sandbox.c — the sandbox every policy runs in.
 *
 * Owns the building of an engine's sandbox (the charged library copies,
 * the base environment, the string metatable, what a file that is not a
 * policy sees), the guards of rawset, rawget, setmetatable and load, and
 * require. It must never expose io, os beyond time and clock, debug,
 * coroutines, bytecode or __gc.
 */
#include "state.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <string.h>

#include "json.h"
#include "pmatch.h"

/* ------------------------------------------------------ sandboxed globals */

/* Upvalue of the guards: 1 RMT. */
static void check_writable(lua_State *L, const char *fn)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	if (view_is_ours(L, 1, lua_upvalueindex(1)))
		luaL_error(L, "%s: the table is read-only", fn);
}

static int sb_rawset(lua_State *L)
{
	check_writable(L, "rawset");
	luaL_checkany(L, 2);
	luaL_checkany(L, 3);
	lua_settop(L, 3);
	lua_rawset(L, 1);
	return 1;
}

static int sb_rawget(lua_State *L)
{
	check_writable(L, "rawget");
	luaL_checkany(L, 2);
	lua_settop(L, 2);
	lua_rawget(L, 1);
	return 1;
}

/* setmetatable without __gc: a finalizer runs with hooks off, at any later
 * time, outside every budget. */
static int sb_setmetatable(lua_State *L)
{
	int t = lua_type(L, 2);

	luaL_checktype(L, 1, LUA_TTABLE);
	luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
	if (t == LUA_TTABLE) {
		lua_pushliteral(L, "__gc");
		if (lua_rawget(L, 2) != LUA_TNIL)
			return luaL_error(L, "__gc metamethods are not allowed in policies");
		lua_pop(L, 1);
	}
	if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL)
		return luaL_error(L, "cannot change a protected metatable");
	lua_settop(L, 2);
	lua_setmetatable(L, 1);
	return 1;
}

int sandbox_env_newindex(lua_State *L)
{
	if (lua_type(L, 2) == LUA_TSTRING)
		return luaL_error(L,
		                  "cannot set global '%s': globals cannot be created in a policy (use local)",
		                  lua_tostring(L, 2));
	return luaL_error(L, "globals cannot be created in a policy (use local)");
}

/* Pushes a fresh, empty environment reading through to the base. */
static void push_fresh_env(lua_State *L, int envmt)
{
	lua_createtable(L, 0, 0);
	lua_pushvalue(L, envmt);
	lua_setmetatable(L, -2);
}

/* load(chunk [, chunkname [, mode [, env]]]): text only, strings only, a
 * fresh sandboxed environment (the running tenant's) unless env is given. */
static int sb_load(lua_State *L)
{
	size_t len;
	const char *s;
	const char *name = luaL_optstring(L, 2, "load");
	const char *mode = luaL_optstring(L, 3, "bt");
	int status;

	if (lua_type(L, 1) != LUA_TSTRING)
		return luaL_argerror(L, 1, "string expected (reader functions are not supported)");
	s = lua_tolstring(L, 1, &len);
	if (!strchr(mode, 't')) {
		luaL_pushfail(L);
		lua_pushfstring(
		    L, "attempt to load a text chunk (mode is '%s'): binary chunks are not allowed", mode);
		return 2;
	}
	if (len > LOAD_MAX) {
		luaL_pushfail(L);
		lua_pushliteral(L, "chunk too large for load");
		return 2;
	}
	/* Compiling is work in C too (about 7 ns a byte here): one step per 4
	 * bytes of source. */
	budget_charge(L, (long long)(len / 4) + 1, "load");
	lua_pushfstring(L, "=(%s)", name);
	status = luaL_loadbufferx(L, s, len, lua_tostring(L, -1), "t");
	if (status != LUA_OK) {
		luaL_pushfail(L);
		lua_insert(L, -2);
		return 2;
	}
	if (!lua_isnone(L, 4)) {
		lua_pushvalue(L, 4);
	} else {
		struct policy_engine *e = engine_of(L);
		lua_rawgeti(L, LUA_REGISTRYINDEX, e->envmts[e->cur]);
		push_fresh_env(L, lua_gettop(L));
		lua_remove(L, -2);
	}
	if (!lua_setupvalue(L, -2, 1))
		lua_pop(L, 1);
	return 1;
}

/* ------------------------------------------------------------- require */

static const char LOADING = 'l'; /* loaded[name] while the module runs */

/* Names require refuses even when such a file sits beside the policy: a
 * policy asking for one of these expects the real library. */
static const char *const reserved_modules[] = {"os",     "io",    "debug", "package", "coroutine",
                                               "string", "table", "math",  "utf8",    "_G",
                                               "ffi",    "jit",   "cjson", NULL};

static int require_done(lua_State *L, int status, lua_KContext ctx)
{
	(void)status;
	(void)ctx;
	/* 1 name, 2 loaded, 3 the module's result */
	if (lua_isnil(L, 3)) {
		lua_pushboolean(L, 1);
		lua_replace(L, 3);
	}
	lua_pushvalue(L, 3);
	lua_setfield(L, 2, lua_tostring(L, 1));
	return 1;
}

/*
 * require(name): NAME.lua beside the tenant's policy, compiled (text only)
 * when the engine was built, run once per decision in a fresh environment
 * of the sandbox and cached for the rest of that decision only. No file is
 * read here: config.c read the folder at load. Upvalue 1: tenant index.
 */
int sandbox_require(lua_State *L)
{
	struct policy_engine *e = engine_of(L);
	size_t len;
	const char *name = luaL_checklstring(L, 1, &len);
	size_t ti = (size_t)lua_tointeger(L, lua_upvalueindex(1));
	int ok = len > 0 && len <= 64;

	for (size_t i = 0; ok && i < len; i++)
		ok = (name[i] >= 'a' && name[i] <= 'z') || (name[i] >= 'A' && name[i] <= 'Z') ||
		     (name[i] >= '0' && name[i] <= '9') || name[i] == '_';
	if (!ok)
		return luaL_error(L,
		                  "require: \"%s\" is not a module name ([A-Za-z0-9_], a file NAME.lua "
		                  "beside the policy)",
		                  name);
	for (const char *const *lib = reserved_modules; *lib; lib++)
		if (strcmp(name, *lib) == 0)
			return luaL_error(
			    L, "require: '%s' is a standard library: policies have no %s module", name, name);
	lua_settop(L, 1);
	if (!e->loaded_valid) {
		lua_createtable(L, 0, 4);
		lua_rawseti(L, LUA_REGISTRYINDEX, e->ref_loaded);
		e->loaded_valid = true;
	}
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_loaded);
	if (lua_getfield(L, 2, name) != LUA_TNIL) {
		if (lua_touserdata(L, -1) == &LOADING)
			return luaL_error(L, "require: module '%s' requires itself (a loop)", name);
		return 1;
	}
	lua_pop(L, 1);
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->mods[ti]);
	if (lua_getfield(L, -1, name) != LUA_TFUNCTION)
		return luaL_error(L, "require: no module '%s' beside the policy", name);
	lua_remove(L, -2);
	lua_pushlightuserdata(L, (void *)&LOADING);
	lua_setfield(L, 2, name);
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->envmts[ti]);
	push_fresh_env(L, lua_gettop(L));
	lua_remove(L, -2);
	lua_setupvalue(L, -2, 1);
	lua_pushvalue(L, 1);
	lua_callk(L, 1, 1, 0, require_done);
	return require_done(L, LUA_OK, 0);
}

/*
 * xpcall without a message handler in C's sense: Lua runs a message handler
 * with hooks off when the error comes from a hook (a spent budget where a
 * yield is impossible), so a looping handler would escape every budget. This
 * one unwinds first (pcall) and then calls the handler as plain, hooked Lua.
 * Without the debug library a handler could not use the unwound stack anyway.
 */
static const char XPCALL_LUA[] = "local pcall, type, error = ...\n"
                                 "local function finish(h, ok, ...)\n"
                                 "  if ok then return true, ... end\n"
                                 "  return false, (h((...)))\n"
                                 "end\n"
                                 "return function(f, h, ...)\n"
                                 "  if type(h) ~= 'function' then\n"
                                 "    error(\"bad argument #2 to 'xpcall' (function expected)\", 2)\n"
                                 "  end\n"
                                 "  return finish(h, pcall(f, ...))\n"
                                 "end\n";

/* Pushes the sandbox's xpcall, built from the base library at g. */
static void push_xpcall(lua_State *L, int g)
{
	if (luaL_loadbufferx(L, XPCALL_LUA, sizeof(XPCALL_LUA) - 1, "=xpcall", "t") != LUA_OK)
		lua_error(L);
	lua_pushnil(L);
	lua_setupvalue(L, -2, 1); /* no _ENV: it uses only what it is given */
	lua_getfield(L, g, "pcall");
	lua_getfield(L, g, "type");
	lua_getfield(L, g, "error");
	lua_call(L, 3, 1);
}

/* Copies the named fields of the table at src into the table at the top;
 * a NULL-terminated list. */
static void copy_fields(lua_State *L, int src, const char *const *names)
{
	for (; *names; names++) {
		lua_getfield(L, src, *names);
		lua_setfield(L, -2, *names);
	}
}

/* Sets each wrapped function of the table at src into the table at the top. */
static void wrap_fields(lua_State *L, int src, const struct budget_wrap *w)
{
	for (; w->name; w++) {
		lua_getfield(L, src, w->name);
		lua_pushcclosure(L, w->fn, 1);
		lua_setfield(L, -2, w->name);
	}
}

/* The views' metatable (RMT, registry ref_rmt), left at the top; returns
 * its index. */
static int make_view_mt(lua_State *L, struct policy_engine *e)
{
	int rmt;

	lua_createtable(L, 0, 5);
	rmt = lua_gettop(L);
	lua_pushvalue(L, rmt);
	lua_pushcclosure(L, view_index, 1);
	lua_setfield(L, rmt, "__index");
	lua_pushcfunction(L, view_newindex);
	lua_setfield(L, rmt, "__newindex");
	lua_pushcfunction(L, view_len);
	lua_setfield(L, rmt, "__len");
	lua_pushvalue(L, rmt);
	lua_pushcclosure(L, view_pairs, 1);
	lua_setfield(L, rmt, "__pairs");
	lua_pushboolean(L, 0);
	lua_setfield(L, rmt, "__metatable");
	lua_pushboolean(L, 1);
	lua_rawsetp(L, rmt, &view_view_key);
	lua_pushvalue(L, rmt);
	e->ref_rmt = luaL_ref(L, LUA_REGISTRYINDEX);
	return rmt;
}

/* The real tables of req and req.identity (see request_fill) and their
 * views (see reqview_new). The real req's own metatable builds body,
 * client and headers on demand. */
static void make_req_tables(lua_State *L, struct policy_engine *e, int rmt)
{
	lua_createtable(L, 0, 4);
	lua_pushvalue(L, -1);
	e->ref_idreal = luaL_ref(L, LUA_REGISTRYINDEX);
	reqview_new(L, rmt);
	e->ref_idview = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_createtable(L, 0, REQ_FIELDS);
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_idview);
	lua_setfield(L, -2, "identity");
	lua_createtable(L, 0, 1);
	lua_pushvalue(L, rmt);
	lua_pushcclosure(L, request_lazy, 1);
	lua_setfield(L, -2, "__index");
	lua_setmetatable(L, -2);
	lua_pushvalue(L, -1);
	e->ref_reqreal = luaL_ref(L, LUA_REGISTRYINDEX);
	reqview_new(L, rmt);
	e->ref_reqview = luaL_ref(L, LUA_REGISTRYINDEX);
}

/* The base every tenant's environment reads through to (engine_tenant_setup
 * builds each tenant's environment metatable on it), left at the top (its
 * index returned), and the registry's other shared pieces: the keys of
 * every decision, the claims view. */
static int make_registry_refs(lua_State *L, struct policy_engine *e, int rmt)
{
	int base;

	lua_createtable(L, 0, 32);
	base = lua_gettop(L);
	lua_pushvalue(L, base);
	e->ref_base = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_pushboolean(L, 0);
	e->ref_loaded = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_newtable(L);
	e->ref_modcache = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_pushboolean(L, 0);
	e->ref_body = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_createtable(L, K_END - 1, 0);
	for (int k = 1; k < K_END; k++) {
		lua_pushstring(L, key_names[k]);
		lua_rawseti(L, -2, k);
	}
	for (int i = 0; i < DECISION_FIELDS; i++) {
		lua_rawgeti(L, -1, decision_keys[i]);
		e->field_names[i] = lua_tostring(L, -1); /* kept alive by ref_keys */
		lua_pop(L, 1);
	}
	e->ref_keys = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_createtable(L, 0, 0);
	e->ref_noclaims = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_pushboolean(L, 0);
	e->ref_claims = luaL_ref(L, LUA_REGISTRYINDEX);
	request_claims_view_new(L, e, rmt);
	return base;
}

/* The base library's functions a policy sees, guarded where they could
 * reach past a view or the budget, into base from the real _G at g. */
static void fill_base_globals(lua_State *L, int g, int base, int rmt)
{
	static const char *const base_names[] = {"assert",   "error",    "ipairs",       "pcall",
	                                         "rawequal", "rawlen",   "select",       "tostring",
	                                         "type",     "_VERSION", "getmetatable", NULL};

	lua_pushvalue(L, base);
	copy_fields(L, g, base_names);
	lua_getfield(L, g, "tonumber");
	lua_pushcclosure(L, budget_tonumber, 1);
	lua_setfield(L, base, "tonumber");
	lua_pushvalue(L, rmt);
	lua_pushcclosure(L, sb_rawset, 1);
	lua_setfield(L, base, "rawset");
	lua_pushvalue(L, rmt);
	lua_pushcclosure(L, sb_rawget, 1);
	lua_setfield(L, base, "rawget");
	lua_pushcfunction(L, sb_setmetatable);
	lua_setfield(L, base, "setmetatable");
	lua_pushcfunction(L, sb_load);
	lua_setfield(L, base, "load");
	lua_pushcfunction(L, brokerlib_log);
	lua_setfield(L, base, "print");
	push_xpcall(L, g);
	lua_setfield(L, base, "xpcall");
	lua_pushcfunction(L, view_sb_next);
	lua_setfield(L, base, "next");
	lua_pushcfunction(L, view_sb_pairs);
	lua_setfield(L, base, "pairs");
	lua_pop(L, 1);
}

/* The sandbox's string table (at str) gets the charged pattern functions
 * and becomes the strings' __index; the strings' metatable is sealed and
 * its arithmetic metamethods charged like tonumber. */
static void seal_string_mt(lua_State *L, int str)
{
	static const char *const string_arith[] = {"__add", "__sub",  "__mul", "__mod", "__pow",
	                                           "__div", "__idiv", "__unm", NULL};

	pmatch_register(L, str, &budget_pattern);
	lua_pushliteral(L, "");
	if (!lua_getmetatable(L, -1))
		luaL_error(L, "strings have no metatable");
	lua_pushvalue(L, str);
	lua_setfield(L, -2, "__index");
	lua_pushboolean(L, 0);
	lua_setfield(L, -2, "__metatable");
	for (const char *const *mm = string_arith; *mm; mm++) {
		if (lua_getfield(L, -1, *mm) == LUA_TNIL) {
			lua_pop(L, 1);
			continue;
		}
		lua_pushcclosure(L, budget_tonumber, 1);
		lua_setfield(L, -2, *mm);
	}
	lua_pop(L, 2);
}

static const char *const string_names[] = {"len", NULL};
static const char *const table_names[] = {"pack", NULL};
static const char *const math_names[] = {
    "abs",  "ceil",       "cos",       "deg",        "exp",  "floor", "fmod", "huge",   "log",
    "max",  "maxinteger", "min",       "mininteger", "modf", "pi",    "rad",  "random", "sin",
    "sqrt", "tan",        "tointeger", "type",       "ult",  "acos",  "asin", "atan",   NULL};
static const char *const utf8_names[] = {"charpattern", "codes", NULL};
static const char *const os_names[] = {"time", "clock", NULL};

/* The libraries a policy sees: the named fields copied as they are, the
 * wrapped ones charged (budget.c), the copy a read-only view set into the
 * base. g_offset: the library's place after _G in sandbox_setup_protected's
 * luaL_requiref list. */
static const struct lib {
	const char *name;
	int g_offset;
	int size;
	const char *const *names;
	const struct budget_wrap *wraps;
	void (*seal)(lua_State *L, int lib);
} libs[] = {
    {"string", 1, 20, string_names, budget_string_wraps, seal_string_mt},
    {"table", 2, 8, table_names, budget_table_wraps, NULL},
    {"math", 3, 32, math_names, NULL, NULL},
    {"utf8", 4, 8, utf8_names, budget_utf8_wraps, NULL},
    {"os", 5, 2, os_names, NULL, NULL},
};

static void copy_libs(lua_State *L, struct policy_engine *e, int g, int base)
{
	for (size_t i = 0; i < sizeof(libs) / sizeof(libs[0]); i++) {
		const struct lib *lib = &libs[i];

		lua_createtable(L, 0, lib->size);
		copy_fields(L, g + lib->g_offset, lib->names);
		if (lib->wraps)
			wrap_fields(L, g + lib->g_offset, lib->wraps);
		if (lib->seal)
			lib->seal(L, lua_gettop(L));
		view_wrap(L, e);
		lua_setfield(L, base, lib->name);
	}
}

/* Nothing outside the sandbox may keep the os and io-free libraries' full
 * tables reachable by name. */
static void hide_os(lua_State *L, int g)
{
	lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
	lua_pushnil(L);
	lua_setfield(L, -2, "os");
	lua_pop(L, 1);
	lua_pushnil(L);
	lua_setfield(L, g, "os");
}

/* What a file that is not a policy sees (policy_sandbox_run): the same
 * functions and charged libraries, without load, require, print,
 * setmetatable and broker. */
static void make_file_base(lua_State *L, struct policy_engine *e, int base)
{
	static const char *const file_names[] = {
	    "assert",   "error",  "ipairs", "next",     "pairs",    "pcall", "rawequal", "rawget",
	    "rawlen",   "rawset", "select", "tonumber", "tostring", "type",  "xpcall",   "getmetatable",
	    "_VERSION", "string", "table",  "math",     "utf8",     NULL};

	lua_createtable(L, 0, 24);
	copy_fields(L, base, file_names);
	e->ref_filebase = luaL_ref(L, LUA_REGISTRYINDEX);
}

/*
 * Builds the sandbox on a fresh state: the shared view pieces, the base
 * environment (registry ref_base), the protected string
 * metatable. Runs protected; upvalue-free, the engine comes from extraspace.
 */
int sandbox_setup_protected(lua_State *L)
{
	struct policy_engine *e = engine_of(L);
	int g, rmt, base;

	luaL_requiref(L, "_G", luaopen_base, 0);
	g = lua_gettop(L);
	luaL_requiref(L, "string", luaopen_string, 0);
	luaL_requiref(L, "table", luaopen_table, 0);
	luaL_requiref(L, "math", luaopen_math, 0);
	luaL_requiref(L, "utf8", luaopen_utf8, 0);
	luaL_requiref(L, "os", luaopen_os, 0);
	/* stack: _G string table math utf8 os at g .. g+5 */
	if (json_open(L) != 0)
		return luaL_error(L, "cannot load cjson");

	rmt = make_view_mt(L, e);
	make_req_tables(L, e, rmt);
	base = make_registry_refs(L, e, rmt);
	fill_base_globals(L, g, base, rmt);
	copy_libs(L, e, g, base);
	brokerlib_open(L, e);
	view_wrap(L, e);
	lua_setfield(L, base, "broker");
	hide_os(L, g);
	make_file_base(L, e, base);

	/* The thread policies run on. */
	e->co = lua_newthread(L);
	e->ref_co = luaL_ref(L, LUA_REGISTRYINDEX);
	return 0;
}
