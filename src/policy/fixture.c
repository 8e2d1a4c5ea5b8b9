/*
 * policy/fixture.c — test fixtures on an engine: another broker.data for
 * the decisions of a test case.
 *
 * Owns swapping a tenant's broker.data for a test's fixture and putting the
 * tenant's own back. It must never be used on an engine that serves (only
 * `test` and the tests of `check` call it), and never leave a fixture in
 * place once its case is over (policytest.c restores before it returns).
 */
#include "state.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>

#include "config.h"
#include "json.h"

static const char saved_key = 'd'; /* registry[&saved_key][i + 1]: tenant i's own data, or false */

/* Pushes tenant i's broker table (the real one behind its view). */
static void push_broker_real(lua_State *L, struct policy_engine *e, size_t i)
{
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->envmts[i]); /* the environments' metatable */
	lua_pushliteral(L, "__index");
	lua_rawget(L, -2); /* the tenant's base: a plain table */
	lua_pushliteral(L, "broker");
	lua_rawget(L, -2); /* its view */
	lua_rawgetp(L, -1, &view_real_key);
	lua_replace(L, -4);
	lua_pop(L, 2);
}

struct set_ctx {
	struct policy_engine *e;
	size_t i;
	const char *json;
	size_t len;
	int rc;
};

static int set_protected(lua_State *L)
{
	struct set_ctx *c = lua_touserdata(L, 1);
	int broker, saved;

	push_broker_real(L, c->e, c->i);
	broker = lua_gettop(L);
	if (lua_rawgetp(L, LUA_REGISTRYINDEX, &saved_key) != LUA_TTABLE) {
		lua_pop(L, 1);
		lua_newtable(L);
		lua_pushvalue(L, -1);
		lua_rawsetp(L, LUA_REGISTRYINDEX, &saved_key);
	}
	saved = lua_gettop(L);
	if (lua_rawgeti(L, saved, (lua_Integer)c->i + 1) == LUA_TNIL) { /* first swap: keep the own */
		lua_pushliteral(L, "data");
		if (lua_rawget(L, broker) == LUA_TNIL) {
			lua_pop(L, 1);
			lua_pushboolean(L, 0);
		}
		lua_rawseti(L, saved, (lua_Integer)c->i + 1);
	}
	lua_pop(L, 1);
	lua_pushliteral(L, "data");
	if (!c->json) {
		lua_rawgeti(L, saved, (lua_Integer)c->i + 1);
		if (lua_type(L, -1) == LUA_TBOOLEAN) {
			lua_pop(L, 1);
			lua_pushnil(L);
		}
	} else if (c->len == 0) {
		lua_pushnil(L);
	} else if (json_decode(L, c->json, c->len) != 0) {
		return 0;
	}
	lua_rawset(L, broker);
	c->rc = 0;
	return 0;
}

int policy_engine_set_data(struct policy_engine *e, const struct tenant *t, const char *json, size_t len,
                           char *err, size_t errlen)
{
	struct set_ctx c = {.e = e, .json = json, .len = len, .rc = -1};
	int top = lua_gettop(e->L);

	if (!e->cfg || t < e->cfg->tenants || t >= e->cfg->tenants + e->cfg->n_tenants) {
		snprintf(err, errlen, "tenant is not part of this engine's configuration");
		return -1;
	}
	c.i = (size_t)(t - e->cfg->tenants);
	lua_pushcfunction(e->L, set_protected);
	lua_pushlightuserdata(e->L, &c);
	if (lua_pcall(e->L, 1, 0, 0) != LUA_OK)
		c.rc = -1;
	lua_settop(e->L, top);
	if (c.rc != 0)
		snprintf(err, errlen, "the data fixture is not valid JSON");
	return c.rc;
}
