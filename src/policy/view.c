/*
 * policy/view.c — read-only views of tables.
 *
 * Owns the read-only views a policy reads shared and request data through,
 * the sandbox's next and pairs that skip their hidden keys, and the wrapping
 * of library tables. It must never hand a policy a raw reference to a table
 * behind a view.
 */
#include "state.h"

#include <lauxlib.h>
#include <lua.h>

/* ------------------------------------------------------ read-only proxies */

/*
 * A read-only view of a table T is a table whose only raw entries sit under
 * two light-userdata keys no policy can name: view[&view_real_key] = T and,
 * once a nested table is reached, view[real child] = its view (a key no
 * policy can hold).
 * Its metatable is the shared, protected RMT (upvalue 1 of the functions
 * below): a read goes through __index to T, a write finds no raw entry and
 * reaches __newindex, which refuses. The sandbox's next and pairs skip the
 * hidden keys, rawget and rawset refuse views: nothing raw reaches T.
 */
const char view_real_key = 'r';
const char view_view_key = 'v';    /* marks the views' metatables */
const char view_reqview_key = 's'; /* marks the metatables of req's and identity's views */

/* Replaces the table at the top with a new view; rmt: RMT's absolute or
 * pseudo-index. */
void view_new(lua_State *L, int rmt)
{
	lua_createtable(L, 0, 1);
	lua_insert(L, -2);
	lua_rawsetp(L, -2, &view_real_key);
	lua_pushvalue(L, rmt);
	lua_setmetatable(L, -2);
}

/* Pushes the table behind the view at idx. */
static void view_real(lua_State *L, int idx)
{
	if (lua_rawgetp(L, idx, &view_real_key) != LUA_TTABLE)
		luaL_error(L, "not a read-only view");
}

/* Replaces the table at the top, a table inside the real table of the view
 * at index view, with its view: made once per view and table, and kept in
 * the view under the real table as key (a key no policy can name, since no
 * policy ever holds a real table). */
static void view_child(lua_State *L, int view)
{
	lua_pushvalue(L, -1);
	if (lua_rawget(L, view) == LUA_TTABLE) {
		lua_replace(L, -2);
		return;
	}
	lua_pop(L, 1);
	lua_pushvalue(L, -1);
	view_new(L, UV_RMT); /* real, its view */
	lua_pushvalue(L, -2);
	lua_pushvalue(L, -2);
	lua_rawset(L, view);
	lua_replace(L, -2);
	if (lua_topointer(L, view) == engine_of(L)->claims_view)
		engine_of(L)->claims_cached = true; /* see request_fill */
}

int view_index(lua_State *L)
{
	view_real(L, 1);
	lua_pushvalue(L, 2);
	if (lua_rawget(L, -2) == LUA_TTABLE)
		view_child(L, 1);
	return 1;
}

int view_newindex(lua_State *L)
{
	if (lua_type(L, 2) == LUA_TSTRING)
		return luaL_error(L, "cannot set field '%s': the table is read-only", lua_tostring(L, 2));
	return luaL_error(L, "cannot modify a read-only table");
}

int view_len(lua_State *L)
{
	view_real(L, 1);
	lua_pushinteger(L, (lua_Integer)lua_rawlen(L, -1));
	return 1;
}

static int view_next(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_settop(L, 2);
	view_real(L, 1);
	lua_pushvalue(L, 2);
	if (!lua_next(L, 3))
		return 0;
	if (lua_type(L, -1) == LUA_TTABLE)
		view_child(L, 1);
	return 2;
}

int view_pairs(lua_State *L)
{
	lua_pushvalue(L, UV_RMT);
	lua_pushcclosure(L, view_next, 1);
	lua_pushvalue(L, 1);
	lua_pushnil(L);
	return 3;
}

/* next for policies: a view has no entries of its own (its raw entries
 * are the hidden real table and cached children). */
int view_sb_next(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_settop(L, 2);
	if (lua_getmetatable(L, 1)) {
		int view = lua_rawgetp(L, -1, &view_view_key) != LUA_TNIL;
		lua_pop(L, 2);
		if (view) {
			lua_pushnil(L);
			return 1;
		}
	}
	if (lua_next(L, 1))
		return 2;
	lua_pushnil(L);
	return 1;
}

/* pairs for policies: __pairs when there is one, else the sandbox's next
 * (the real one, which pairs would hand out, sees the hidden keys). */
int view_sb_pairs(lua_State *L)
{
	luaL_checkany(L, 1);
	if (luaL_getmetafield(L, 1, "__pairs") == LUA_TNIL) {
		lua_pushcfunction(L, view_sb_next);
		lua_pushvalue(L, 1);
		lua_pushnil(L);
	} else {
		lua_pushvalue(L, 1);
		lua_call(L, 1, 3);
	}
	return 3;
}

/* Replaces the table at the top with its view (engine-side). */
void view_wrap(lua_State *L, struct policy_engine *e)
{
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_rmt);
	lua_insert(L, -2);
	view_new(L, lua_absindex(L, -2));
	lua_remove(L, -2);
}

/* Marks the metatables of the environments (one per tenant, holding the
 * tenant's environment under this key) and of req's view. */
const char view_env_key = 'e';

/* Whether the value at idx is a view or an environment. */
bool view_is_ours(lua_State *L, int idx, int rmt)
{
	bool ours;

	if (!lua_getmetatable(L, idx))
		return false;
	if (lua_rawequal(L, -1, rmt)) {
		lua_pop(L, 1);
		return true;
	}
	ours = lua_rawgetp(L, -1, &view_env_key) != LUA_TNIL;
	lua_pop(L, 2);
	return ours;
}

/* If the value at idx is a view, replaces it with its table (engine-side). */
void view_unwrap(lua_State *L, struct policy_engine *e, int idx)
{
	idx = lua_absindex(L, idx);
	if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx))
		return;
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_rmt);
	if (lua_rawequal(L, -1, -2)) {
		lua_pop(L, 2);
		lua_rawgetp(L, idx, &view_real_key);
		lua_replace(L, idx);
		return;
	}
	lua_pop(L, 2);
}

/* Pushes the real table behind the req or identity view at idx: its
 * metatable's __index. */
void view_reqview_real(lua_State *L, int idx)
{
	if (!lua_getmetatable(L, idx) || lua_rawgetp(L, -1, &view_reqview_key) == LUA_TNIL)
		luaL_error(L, "not a read-only view");
	lua_pop(L, 1);
	lua_pushliteral(L, "__index");
	if (lua_rawget(L, -2) != LUA_TTABLE)
		luaL_error(L, "not a read-only view");
	lua_remove(L, -2);
}

int view_reqview_len(lua_State *L)
{
	view_reqview_real(L, 1);
	lua_pushinteger(L, (lua_Integer)lua_rawlen(L, -1));
	return 1;
}
