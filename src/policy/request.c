/*
 * policy/request.c — the request a policy sees (req).
 *
 * Owns the real tables behind req and req.identity, rewritten whole before
 * every decision (request_fill), their lazy fields (body, client,
 * headers), the claims view, and the reqview views of req and identity. It
 * must never let one decision see what another left behind.
 */
#include "state.h"

#include <lauxlib.h>
#include <lua.h>
#include <string.h>

#include "config.h"

/* Makes registry[ref_claims] a new, empty view of claims; rmt: RMT's index. */
void request_claims_view_new(lua_State *L, struct policy_engine *e, int rmt)
{
	lua_createtable(L, 0, 1);
	lua_pushvalue(L, rmt);
	lua_setmetatable(L, -2);
	e->claims_view = lua_topointer(L, -1);
	lua_rawseti(L, LUA_REGISTRYINDEX, e->ref_claims);
}

static int reqview_pairs(lua_State *L);

/*
 * Replaces the table at the top, the real req or req.identity, with its
 * view: an empty table whose metatable has the real table as __index, so
 * the VM reads its fields without a C call (the tables it holds are views
 * already). A policy cannot write, rawset, rawget, next or getmetatable
 * the view; only reqview_next lists it, and only these views. Both views and
 * their real tables are made once per engine: the views have no entries
 * and no policy can give them any, their metatables are out of reach, and
 * request_fill writes every field of the real tables before each decision, so
 * nothing passes from one decision to the next through them. rmt: RMT's
 * absolute index.
 */
void reqview_new(lua_State *L, int rmt)
{
	int real = lua_gettop(L);

	lua_createtable(L, 0, 0);
	lua_createtable(L, 0, 8);
	lua_pushvalue(L, real);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, view_newindex);
	lua_setfield(L, -2, "__newindex");
	lua_pushcfunction(L, view_reqview_len);
	lua_setfield(L, -2, "__len");
	lua_pushvalue(L, rmt);
	lua_pushcclosure(L, reqview_pairs, 1);
	lua_setfield(L, -2, "__pairs");
	lua_pushboolean(L, 0);
	lua_setfield(L, -2, "__metatable");
	lua_pushboolean(L, 1);
	lua_rawsetp(L, -2, &view_env_key); /* ours: rawset and rawget refuse it */
	lua_pushboolean(L, 1);
	lua_rawsetp(L, -2, &view_view_key);
	lua_pushboolean(L, 1);
	lua_rawsetp(L, -2, &view_reqview_key);
	lua_setmetatable(L, -2);
	lua_replace(L, real);
}

/* ------------------------------------------------------------ requests */

static void set_str(lua_State *L, const char *k, const char *v)
{
	if (v) {
		lua_pushstring(L, v);
		lua_setfield(L, -2, k);
	}
}

/* Whether the table at idx is a list of 1.. strings and nothing else. */
static bool is_string_list(lua_State *L, int idx)
{
	lua_Integer n = (lua_Integer)lua_rawlen(L, idx), count = 0;

	lua_pushnil(L);
	while (lua_next(L, idx)) {
		bool ok = lua_type(L, -1) == LUA_TSTRING && lua_isinteger(L, -2) &&
		          lua_tointeger(L, -2) >= 1 && lua_tointeger(L, -2) <= n;
		lua_pop(L, 1);
		if (!ok) {
			lua_pop(L, 1);
			return false;
		}
		count++;
	}
	return count == n;
}

/* t[key k] = v, or nil when v is NULL; keys: the keys' table. */
static void put_str(lua_State *L, int t, int keys, enum req_key k, const char *v)
{
	lua_rawgeti(L, keys, k);
	if (v)
		lua_pushstring(L, v);
	else
		lua_pushnil(L);
	lua_rawset(L, t);
}

/*
 * The fields of req and req.identity that are often nil: e->held has bit k
 * set whenever field k may hold a value (set before any write of one: in
 * request_fill with hold, in request_fill_lazy), so clearing a field known to be nil is
 * no write at all.
 */
static void hold(struct policy_engine *e, enum req_key k)
{
	e->held |= 1u << k;
}

/* t[key k] = nil. */
static void clear_opt(lua_State *L, struct policy_engine *e, int t, int keys, enum req_key k)
{
	if (!(e->held & (1u << k)))
		return;
	lua_rawgeti(L, keys, k);
	lua_pushnil(L);
	lua_rawset(L, t);
	e->held &= ~(1u << k);
}

/*
 * Writes rq into the engine's real req and identity tables (made once, in
 * sandbox_setup_protected), behind views where they hold tables; body and claims
 * at the given indexes (0: none); keys: the keys' table. The two tables
 * are never handed to a policy (only their views, which read through
 * them), so only the engine writes them, and it writes every field of both
 * here, before the policy runs, nil where rq has nothing: no decision sees
 * anything of an earlier one's request, even of one that failed half way.
 * req.identity is the identity view, set once. A field added to req must
 * be added here. Between decisions the tables (and ref_body) still hold
 * the last request, which nothing reads: no policy code runs then, and
 * request_fill_lazy builds nothing without rq_now.
 */
void request_fill(lua_State *L, struct policy_engine *e, int keys, const struct policy_request *rq, int body,
                  int claims)
{
	int rmt, real, id;

	lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_rmt);
	rmt = lua_gettop(L);
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_reqreal);
	real = rmt + 1;
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_idreal);
	id = rmt + 2;

	put_str(L, real, keys, K_TENANT, rq->tenant->name);
	put_str(L, real, keys, K_USER_ID, rq->user_id);
	if (body && lua_type(L, body) == LUA_TTABLE) {
		int t;
		lua_rawgeti(L, keys, K_SCOPES);
		lua_pushvalue(L, -1);
		if (lua_rawget(L, body) == LUA_TTABLE && is_string_list(L, lua_gettop(L))) {
			view_new(L, rmt);
			hold(e, K_SCOPES);
			lua_rawset(L, real);
		} else {
			lua_pop(L, 2);
			clear_opt(L, e, real, keys, K_SCOPES);
		}
		lua_rawgeti(L, keys, K_EXPIRES_IN);
		lua_pushvalue(L, -1);
		t = lua_rawget(L, body);
		if (t == LUA_TSTRING || t == LUA_TNUMBER) {
			hold(e, K_EXPIRES_IN);
			lua_rawset(L, real);
		} else {
			lua_pop(L, 2);
			clear_opt(L, e, real, keys, K_EXPIRES_IN);
		}
		lua_pushvalue(L, body);
	} else {
		clear_opt(L, e, real, keys, K_SCOPES);
		clear_opt(L, e, real, keys, K_EXPIRES_IN);
		lua_pushboolean(L, 0);
	}
	lua_rawseti(L, LUA_REGISTRYINDEX, e->ref_body);
	/* body, client and headers are built when first read (request_fill_lazy). */
	clear_opt(L, e, real, keys, K_BODY);
	clear_opt(L, e, real, keys, K_CLIENT);
	clear_opt(L, e, real, keys, K_HEADERS);
	lua_rawgeti(L, keys, K_NOW);
	lua_pushinteger(L, (lua_Integer)rq->now);
	lua_rawset(L, real);

	lua_rawgeti(L, keys, K_AUTHENTICATED);
	lua_pushboolean(L, rq->authenticated);
	lua_rawset(L, id);
	put_str(L, id, keys, K_METHOD, rq->method);
	if (rq->subject && rq->subject[0]) {
		hold(e, K_SUBJECT);
		put_str(L, id, keys, K_SUBJECT, rq->subject);
	} else {
		clear_opt(L, e, id, keys, K_SUBJECT);
	}
	/* The claims' view holds nothing but its real table until a policy
	 * reads a table inside: then the views of those tables are kept in it
	 * (view_child), and the next decision gets a new view. */
	if (e->claims_cached) {
		request_claims_view_new(L, e, rmt);
		e->claims_cached = false;
	}
	lua_rawgeti(L, keys, K_CLAIMS);
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_claims);
	if (claims && lua_type(L, claims) == LUA_TTABLE)
		lua_pushvalue(L, claims);
	else
		lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_noclaims);
	lua_rawsetp(L, -2, &view_real_key);
	lua_rawset(L, id);
	lua_settop(L, rmt - 1);
}

/* Pushes the view of req.body, req.client or req.headers (k) of the running
 * decision, storing it in the real req at index real; pushes nil when no
 * decision runs. Upvalue 1: RMT. */
static void request_fill_lazy(lua_State *L, int real, enum req_key k)
{
	struct policy_engine *e = engine_of(L);
	const struct policy_request *rq = e->rq_now;

	if (!rq) {
		lua_pushnil(L);
		return;
	}
	if (k == K_BODY) {
		if (lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_body) != LUA_TTABLE) {
			lua_pop(L, 1);
			lua_createtable(L, 0, 0);
		}
	} else if (k == K_CLIENT) {
		lua_createtable(L, 0, 3);
		set_str(L, "ip", rq->client_ip);
		set_str(L, "origin", rq->origin);
		set_str(L, "user_agent", rq->user_agent);
	} else if (k == K_HEADERS) {
		size_t n = rq->n_headers;
		const struct policy_header *h =
		    rq->headers_of ? rq->headers_of(rq->headers_ctx, &n) : rq->headers;
		lua_createtable(L, 0, (int)(n < 64 ? n : 64));
		for (size_t i = 0; h && i < n; i++)
			if (h[i].name && h[i].value)
				set_str(L, h[i].name, h[i].value);
	} else {
		lua_pushnil(L);
		return;
	}
	view_new(L, UV_RMT);
	hold(e, k);
	lua_pushvalue(L, -1);
	lua_setfield(L, real, key_names[k]);
}

/* __index of the real req (reached through its view when a field is not
 * there yet): builds the lazy fields K_BODY .. K_HEADERS. Upvalue 1: RMT. */
int request_lazy(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	if (lua_type(L, 2) != LUA_TSTRING) {
		lua_pushnil(L);
		return 1;
	}
	for (enum req_key k = K_BODY; k <= K_HEADERS; k++) {
		if (strcmp(lua_tostring(L, 2), key_names[k]) == 0) {
			request_fill_lazy(L, 1, k);
			return 1;
		}
	}
	lua_pushnil(L);
	return 1;
}

/* next over req's and identity's views (and no other table): their real
 * tables hold only plain values and views. */
static int reqview_next(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_settop(L, 2);
	view_reqview_real(L, 1);
	lua_pushvalue(L, 2);
	if (!lua_next(L, 3))
		return 0;
	return 2;
}

/* __pairs of req's and identity's views; upvalue 1: RMT. For req, every
 * field: the lazy ones are built first. */
static int reqview_pairs(lua_State *L)
{
	int real;

	view_reqview_real(L, 1);
	real = lua_gettop(L);
	if (lua_getmetatable(L, real)) { /* the real req: lazymt */
		lua_pop(L, 1);
		for (enum req_key k = K_BODY; k <= K_HEADERS; k++) {
			lua_pushstring(L, key_names[k]);
			if (lua_rawget(L, real) == LUA_TNIL) {
				lua_pop(L, 1);
				request_fill_lazy(L, real, k);
			}
			lua_pop(L, 1);
		}
	}
	lua_pushcfunction(L, reqview_next);
	lua_pushvalue(L, 1);
	lua_pushnil(L);
	return 3;
}
