/*
 * policy/engine.c — the per-tenant Lua policy engine.
 *
 * Owns one lua_State per engine (one engine per worker thread): the sandbox
 * every policy runs in (the broker's only Lua sandbox: test files and the
 * configuration file run in it too, through policy_sandbox_run), each
 * tenant's compiled chunk, the read-only request
 * a policy sees, the budgets of one decision (instructions, wall clock,
 * memory) and the type check of what a policy returns. It must never hand a
 * policy anything that outlives the decision or reaches the host: no I/O, no
 * debug, no bytecode, no coroutines, no writable shared table, no __gc. It
 * never applies the envelope (the caller does), and never calls the HTTP
 * front or Courier.
 *
 * How a decision runs: the chunk is compiled once, its _ENV upvalue the
 * tenant's environment (an empty table that can never be written, reading
 * through to the read-only base with the tenant's broker and require); for
 * every decision the chunk is run to get a fresh decide (so no upvalue
 * survives a decision), and decide is called with req: a view, made once,
 * of a table the engine rewrites whole before every decision (fill_req),
 * whose body, client and headers are built when first read. Library functions
 * that loop in C charge their work to the same budget (pmatch.c for
 * patterns). Both run on one coroutine of the engine, so the count
 * hook can end a runaway policy by yielding: an error raised from a hook
 * could be caught by pcall inside the policy, a yield cannot. Host flags
 * (budget spent, memory cap hit) make the decision a policy error whatever
 * the policy returns. A thread a policy failed on is dropped, never closed
 * (finish): closing would run its pending __close handlers outside every
 * budget.
 */
#include "state.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "envelope.h"
#include "json.h"

static int engine_panic(lua_State *L)
{
	const char *msg = lua_tostring(L, -1);
	fprintf(stderr, "policy: unprotected Lua error: %s\n", msg ? msg : "?");
	abort();
}

/* Replaces co with a new thread (protected: it allocates). */
static int new_co_protected(lua_State *L)
{
	struct policy_engine *e = engine_of(L);
	lua_State *co = lua_newthread(L);
	int ref = luaL_ref(L, LUA_REGISTRYINDEX);

	luaL_unref(L, LUA_REGISTRYINDEX, e->ref_co);
	e->co = co;
	e->ref_co = ref;
	return 0;
}

/* ------------------------------------------------------------ running */

/* Copies the error on top of co (after a failed resume) into err. */
static void resume_error(struct policy_engine *e, int status, char *err, size_t errlen)
{
	lua_State *co = e->co;

	if (status == LUA_ERRMEM) {
		snprintf(err, errlen, "%smemory cap exceeded (%zu bytes)", e->where, e->lim.max_memory_bytes);
	} else if (lua_type(co, -1) == LUA_TSTRING) {
		snprintf(err, errlen, "%s", lua_tostring(co, -1));
	} else {
		snprintf(err, errlen, "policy raised a non-string error (%s)", luaL_typename(co, -1));
	}
}

/* Appends where co stopped, innermost first: up to TRACE_FRAMES Lua frames,
 * for the log only (a failed resume leaves co's stack in place). */
static void append_traceback(struct policy_engine *e, char *err, size_t errlen)
{
	lua_Debug ar;
	size_t len = strlen(err);
	int shown = 0;

	for (int level = 0; shown < TRACE_FRAMES && lua_getstack(e->co, level, &ar); level++) {
		int n;
		if (!lua_getinfo(e->co, "Sln", &ar) || ar.currentline <= 0)
			continue;
		if (len + 1 >= errlen)
			break;
		if (ar.name)
			n = snprintf(err + len, errlen - len, "%s%s:%d in %s",
			             shown ? "; " : " [traceback: ", ar.short_src, ar.currentline, ar.name);
		else if (ar.what && strcmp(ar.what, "main") == 0)
			n = snprintf(err + len, errlen - len, "%s%s:%d in main chunk",
			             shown ? "; " : " [traceback: ", ar.short_src, ar.currentline);
		else
			n = snprintf(err + len, errlen - len, "%s%s:%d in function <line %d>",
			             shown ? "; " : " [traceback: ", ar.short_src, ar.currentline,
			             ar.linedefined);
		if (n < 0 || (size_t)n >= errlen - len) {
			len = errlen - 1;
			break;
		}
		len += (size_t)n;
		shown++;
	}
	if (shown && len + 2 < errlen) {
		err[len++] = ']';
		err[len] = '\0';
	}
}

#define RUN_LAST     1
#define RUN_OPTIONAL 2

/*
 * Resumes co with the function and nargs arguments already on it. Returns 0
 * with exactly one result left on co, or -1 with err set. *dirty tells the
 * caller co must be reset before its next use. last: whether this is the
 * decision's last run; a run that succeeds and is not the last leaves the
 * clock to the last one (a clock reading is a good part of a small
 * decision), which fails the decision all the same. RUN_OPTIONAL in last:
 * returning nothing is a nil result (a configuration file), not an error.
 */
static int engine_run(struct policy_engine *e, int nargs, int last, const char *what, char *err,
                      size_t errlen, bool *dirty)
{
	lua_State *co = e->co;
	int nres = 0;
	int status = lua_resume(co, e->L, nargs, &nres);

	if (status != LUA_OK) {
		lua_Debug ar;
		*dirty = true;
		/* Where a budget ran out, when neither the hook nor a guard said
		 * (a plain error names its own line). */
		for (int level = 0; (e->mem_hit || status == LUA_ERRMEM) && !e->where[0] && level < 8 &&
		                    lua_getstack(co, level, &ar);
		     level++)
			if (lua_getinfo(co, "Sl", &ar) && ar.currentline > 0)
				snprintf(e->where, sizeof(e->where), "%s:%d: ", ar.short_src, ar.currentline);
	}
	if (budget_spent(e, (last & RUN_LAST) || status != LUA_OK, err, errlen)) {
		append_traceback(e, err, errlen);
		return -1;
	}
	if (status == LUA_YIELD) {
		snprintf(err, errlen, "%s: the policy yielded", what);
		return -1;
	}
	if (status != LUA_OK) {
		resume_error(e, status, err, errlen);
		append_traceback(e, err, errlen);
		return -1;
	}
	if (nres < 1 && (last & RUN_OPTIONAL) && lua_checkstack(co, 1)) {
		lua_pushnil(co);
		nres = 1;
	}
	if (nres < 1) {
		snprintf(err, errlen, "%s returned nothing", what);
		return -1;
	}
	lua_pop(co, nres - 1);
	return 0;
}

/* Puts the compiled chunk of tenant i on co (its _ENV is the tenant's
 * environment since compile_protected: nothing else ever holds the chunk). */
static void push_chunk(struct policy_engine *e, size_t i)
{
	e->cur = i;
	lua_rawgeti(e->co, LUA_REGISTRYINDEX, e->chunks[i]);
}

struct decide_ctx {
	struct policy_engine *e;
	const struct policy_request *rq;
	size_t tenant;
	struct decision *out;
	char *err;
	size_t errlen;
	int rc;
	bool dirty;
};

/* Runs protected on e->L: arguments ctx, body, claims. */
static int decide_protected(lua_State *L)
{
	struct decide_ctx *c = lua_touserdata(L, 1);
	struct policy_engine *e = c->e;
	const char *path = c->rq->tenant->policy_path ? c->rq->tenant->policy_path : c->rq->tenant->name;
	int keys;

	lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_keys);
	keys = lua_gettop(L);
	request_fill(L, e, keys, c->rq, lua_type(L, 2) == LUA_TNIL ? 0 : 2,
	             lua_type(L, 3) == LUA_TNIL ? 0 : 3);
	e->rq_now = c->rq;

	lua_settop(e->co, 0);
	push_chunk(e, c->tenant);
	budget_arm(e);
	if (engine_run(e, 0, 0, path, c->err, c->errlen, &c->dirty) != 0)
		goto out;
	if (lua_type(e->co, -1) != LUA_TFUNCTION) {
		snprintf(c->err, c->errlen, "%s: the policy must return a function decide(req), got %s", path,
		         luaL_typename(e->co, -1));
		goto out;
	}
	lua_rawgeti(e->co, LUA_REGISTRYINDEX, e->ref_reqview);
	if (engine_run(e, 1, RUN_LAST, "decide", c->err, c->errlen, &c->dirty) != 0)
		goto out;
	if (e->explain)
		explain_finish(e, lua_topointer(e->co, -1));
	lua_xmove(e->co, L, 1);
	e->cap_armed = false;
	c->rc = decision_check(L, e, lua_gettop(L), path, c->out, c->err, c->errlen);
out:
	e->cap_armed = false;
	e->rq_now = NULL; /* nothing is built for req once its decision is over */
	if (e->explain)
		explain_end(e);
	return 0;
}

/*
 * Cleans up after a decision. A thread a policy failed on (an error, a
 * yield from the budget hook, any breach) is dropped without being touched:
 * lua_settop, lua_closethread and lua_resetthread on it would run the
 * policy's pending __close handlers in C, outside any protected call and
 * with the spent budget's hook still armed (count 1, yielding): Lua raises
 * "attempt to yield across a C-call boundary" with no handler and the
 * process aborts. A dropped thread is never closed: the collector frees it
 * (luaE_freethread closes upvalues only, never to-be-closed variables).
 * Only a thread whose last resume returned normally, with nothing pending,
 * is reset here. (Reusing a thread a plain error ended would save one
 * lua_newthread per error, but measured no difference, and an error raised
 * from a hook leaves the thread's hooks off: not worth a second rule.)
 *
 * No full collection here: the engine holds every tenant's compiled
 * policies, so a full collection per failed decision costs O(tenants) and
 * lets any client who can make a policy raise slow every tenant down
 * (issue 10, class 5). A failure leaves at most the decision's own garbage
 * (bounded by the memory cap) and one dropped thread; the generational
 * collector's step (a young collection, or a major one when its own pacing
 * calls for it) reclaims that in time proportional to what the decision
 * allocated, and only when the decision grew the heap by GC_STEP_AFTER or
 * hit the cap.
 */
static void engine_finish(struct policy_engine *e, bool dirty, size_t used_before)
{
	e->cap_armed = false;
	if (!dirty) {
		lua_settop(e->co, 0);
	} else {
		lua_pushcfunction(e->L, new_co_protected);
		if (lua_pcall(e->L, 0, 0, 0) != LUA_OK) {
			lua_pop(e->L, 1);
			e->broken = true;
		}
	}
	if (e->mem_hit || e->mem_used > used_before + GC_STEP_AFTER)
		lua_gc(e->L, LUA_GCSTEP, 0);
}

int policy_decide(struct policy_engine *e, const struct policy_request *rq, struct decision *out, char *err,
                  size_t errlen)
{
	lua_State *L = e->L;
	int top = lua_gettop(L);
	size_t used_before = e->mem_used;
	struct decide_ctx c = {.e = e, .rq = rq, .out = out, .err = err, .errlen = errlen, .rc = -1};
	int status;

	err[0] = '\0';
	out->allow = false;
	out->n_scopes = 0;
	out->expires_s = 0;
	out->reason[0] = '\0';
	out->strbuf_used = 0;
	if (!e->cfg || !rq->tenant || rq->tenant < e->cfg->tenants ||
	    rq->tenant >= e->cfg->tenants + e->cfg->n_tenants) {
		snprintf(err, errlen, "tenant is not part of this engine's configuration");
		return -1;
	}
	c.tenant = (size_t)(rq->tenant - e->cfg->tenants);
	if (e->broken) {
		snprintf(err, errlen, "policy engine out of memory");
		return -1;
	}

	lua_pushcfunction(L, decide_protected);
	lua_pushlightuserdata(L, &c);
	if (rq->body_idx > 0)
		lua_pushvalue(L, rq->body_idx);
	else
		lua_pushnil(L);
	if (rq->claims_idx > 0)
		lua_pushvalue(L, rq->claims_idx);
	else
		lua_pushnil(L);
	status = lua_pcall(L, 3, 0, 0);
	if (status != LUA_OK) {
		snprintf(err, errlen, "policy engine: %s",
		         lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "out of memory");
		c.rc = -1;
		c.dirty = true;
	}
	engine_finish(e, c.dirty, used_before);
	lua_settop(L, top);
	if (c.rc != 0) {
		out->allow = false;
		out->n_scopes = 0;
		out->strbuf_used = 0;
		if (!err[0])
			snprintf(err, errlen, "policy error");
	}
	return c.rc;
}

const char *policy_decision_log(const struct policy_engine *e)
{
	return e->log;
}

/* ------------------------------------------------------------ engines */

struct compile_ctx {
	struct policy_engine *e;
	char *err;
	size_t errlen;
	int rc;
	bool dirty;
};

/* Copies every field of the table at registry[ref] into the table at into. */
static void copy_ref_table(lua_State *L, int ref, int into)
{
	lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
	lua_pushnil(L);
	while (lua_next(L, -2)) {
		lua_pushvalue(L, -2);
		lua_insert(L, -2);
		lua_rawset(L, into);
	}
	lua_pop(L, 1);
}

/* Sets the tenant's broker (the shared one plus its broker.data) and its
 * require into its base at tbase. */
static int set_tenant_broker(lua_State *L, struct policy_engine *e, size_t i, int tbase, char *err,
                             size_t errlen)
{
	const struct tenant *t = &e->cfg->tenants[i];
	int broker;

	lua_createtable(L, 0, 8);
	broker = lua_gettop(L);
	copy_ref_table(L, e->ref_broker, broker);
	if (t->data_text) {
		if (json_decode(L, t->data_text, t->data_len) != 0) {
			snprintf(err, errlen, "%s: not valid JSON (broker.data of tenant %s)",
			         t->data_path ? t->data_path : "data", t->name);
			return -1;
		}
		lua_setfield(L, broker, "data"); /* the broker view wraps it when read */
	}
	view_wrap(L, e);
	lua_setfield(L, tbase, "broker");
	lua_pushinteger(L, (lua_Integer)i);
	lua_pushcclosure(L, sandbox_require, 1);
	lua_setfield(L, tbase, "require");
	return 0;
}

/* Makes tenant i's environments' metatable (registry envmts[i]) over its
 * base at tbase. */
static void make_env_mt(lua_State *L, struct policy_engine *e, size_t i, int tbase)
{
	lua_createtable(L, 0, 4);
	lua_pushvalue(L, tbase);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, sandbox_env_newindex);
	lua_setfield(L, -2, "__newindex");
	lua_pushboolean(L, 0);
	lua_setfield(L, -2, "__metatable");
	/* The tenant's environment, kept under view_env_key: one for every decision,
	 * since nothing can ever be written into it (__newindex refuses, rawset
	 * and setmetatable refuse environments), it is always empty. */
	lua_createtable(L, 0, 0);
	lua_pushvalue(L, -2);
	lua_setmetatable(L, -2);
	lua_rawsetp(L, -2, &view_env_key);
	e->envmts[i] = luaL_ref(L, LUA_REGISTRYINDEX);
}

/* Compiles tenant i's modules into its table of modules (registry
 * mods[i]). Tenants sharing a folder share the compiled modules (by path):
 * the require of each decision sets the _ENV it runs with. */
static int compile_modules(lua_State *L, struct policy_engine *e, size_t i, char *err, size_t errlen)
{
	const struct tenant *t = &e->cfg->tenants[i];

	lua_createtable(L, 0, (int)t->n_modules);
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_modcache);
	for (size_t k = 0; k < t->n_modules; k++) {
		const struct policy_module *m = &t->modules[k];
		if (lua_getfield(L, -1, m->path) != LUA_TFUNCTION) {
			lua_pop(L, 1);
			lua_pushfstring(L, "@%s", m->path);
			if (luaL_loadbufferx(L, m->text, m->len, lua_tostring(L, -1), "t") != LUA_OK) {
				snprintf(err, errlen, "%s", lua_tostring(L, -1));
				policy_scrub_syntax_error(err);
				return -1;
			}
			lua_remove(L, -2);
			lua_pushvalue(L, -1);
			lua_setfield(L, -3, m->path);
		}
		lua_setfield(L, -3, m->name);
	}
	lua_pop(L, 1);
	e->mods[i] = luaL_ref(L, LUA_REGISTRYINDEX);
	return 0;
}

/* Builds tenant i's environments' metatable (the shared base plus its own
 * broker, with broker.data, and require) and compiles its modules. */
static int engine_tenant_setup(struct policy_engine *e, size_t i, char *err, size_t errlen)
{
	lua_State *L = e->L;
	int tbase;

	lua_createtable(L, 0, 40);
	tbase = lua_gettop(L);
	copy_ref_table(L, e->ref_base, tbase);
	if (set_tenant_broker(L, e, i, tbase, err, errlen) != 0)
		return -1;
	make_env_mt(L, e, i, tbase);
	lua_pop(L, 1);
	return compile_modules(L, e, i, err, errlen);
}

/* Compiles every tenant's chunk and runs each once, to check it returns a
 * function. Runs protected on e->L. */
static int compile_protected(lua_State *L)
{
	struct compile_ctx *c = lua_touserdata(L, 1);
	struct policy_engine *e = c->e;

	for (size_t i = 0; i < e->n_chunks; i++) {
		const struct tenant *t = &e->cfg->tenants[i];
		const char *path = t->policy_path ? t->policy_path : t->name;
		if (!t->policy_text) {
			snprintf(c->err, c->errlen, "tenant %s: no policy", t->name);
			return 0;
		}
		if (engine_tenant_setup(e, i, c->err, c->errlen) != 0)
			return 0;
		lua_pushfstring(L, "@%s", path);
		if (luaL_loadbufferx(L, t->policy_text, t->policy_len, lua_tostring(L, -1), "t") != LUA_OK) {
			snprintf(c->err, c->errlen, "tenant %s: %s", t->name, lua_tostring(L, -1));
			policy_scrub_syntax_error(c->err);
			return 0;
		}
		lua_rawgeti(L, LUA_REGISTRYINDEX, e->envmts[i]);
		lua_rawgetp(L, -1, &view_env_key);
		lua_remove(L, -2);
		lua_setupvalue(L, -2, 1);
		e->chunks[i] = luaL_ref(L, LUA_REGISTRYINDEX);
		lua_pop(L, 1);

		lua_settop(e->co, 0);
		push_chunk(e, i);
		budget_arm(e);
		if (engine_run(e, 0, RUN_LAST, path, c->err, c->errlen, &c->dirty) != 0) {
			char why[512];
			e->cap_armed = false;
			snprintf(why, sizeof(why), "%s", c->err);
			snprintf(c->err, c->errlen, "tenant %s: %s", t->name, why);
			return 0;
		}
		e->cap_armed = false;
		if (lua_type(e->co, -1) != LUA_TFUNCTION) {
			snprintf(c->err, c->errlen,
			         "tenant %s: %s: the policy must return a function decide(req), got %s",
			         t->name, path, luaL_typename(e->co, -1));
			return 0;
		}
		lua_settop(e->co, 0);
	}
	c->rc = 0;
	return 0;
}

/* A state with the sandbox and no policy compiled yet, for n tenants of cfg
 * (or none) under lim. */
static struct policy_engine *engine_make(const struct config *cfg, size_t n, const struct policy_limits *lim,
                                         char *err, size_t errlen)
{
	struct policy_engine *e = calloc(1, sizeof(*e));
	lua_State *L;

	if (!e) {
		snprintf(err, errlen, "policy engine: out of memory");
		return NULL;
	}
	e->cfg = cfg;
	e->lim = *lim;
	e->n_chunks = n;
	e->chunks = calloc(n ? n : 1, sizeof(*e->chunks));
	e->envmts = calloc(n ? n : 1, sizeof(*e->envmts));
	e->mods = calloc(n ? n : 1, sizeof(*e->mods));
	L = e->chunks && e->envmts && e->mods ? lua_newstate(alloc_lua, e) : NULL;
	if (!L) {
		alloc_release_small(e); /* what a failed lua_newstate freed */
		free(e->chunks);
		free(e->envmts);
		free(e->mods);
		free(e);
		snprintf(err, errlen, "policy engine: out of memory");
		return NULL;
	}
	e->L = L;
	lua_atpanic(L, engine_panic);
	lua_gc(L, LUA_GCGEN, 0, 0);
	*(struct policy_engine **)lua_getextraspace(L) = e;
	for (size_t i = 0; i < e->n_chunks; i++)
		e->chunks[i] = e->envmts[i] = e->mods[i] = LUA_NOREF;

	lua_pushcfunction(L, sandbox_setup_protected);
	if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
		snprintf(err, errlen, "policy engine: %s",
		         lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "setup failed");
		policy_engine_free(e);
		return NULL;
	}
	return e;
}

struct policy_engine *policy_engine_new(const struct config *cfg, char *err, size_t errlen)
{
	struct policy_limits lim;
	struct policy_engine *e;
	struct compile_ctx c;
	lua_State *L;

	budget_limits_of(cfg, &lim);
	e = engine_make(cfg, cfg->n_tenants, &lim, err, errlen);
	if (!e)
		return NULL;
	L = e->L;
	c = (struct compile_ctx){.e = e, .err = err, .errlen = errlen, .rc = -1};
	err[0] = '\0';
	lua_pushcfunction(L, compile_protected);
	lua_pushlightuserdata(L, &c);
	if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
		snprintf(err, errlen, "policy engine: %s",
		         lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "out of memory");
		c.rc = -1;
		c.dirty = true;
	}
	engine_finish(e, c.dirty, e->mem_used);
	lua_settop(L, 0);
	if (c.rc != 0) {
		policy_engine_free(e);
		return NULL;
	}
	return e;
}

/* ------------------------------------------------------------ files */

struct policy_engine *policy_sandbox_new(const struct policy_limits *lim, char *err, size_t errlen)
{
	return engine_make(NULL, 0, lim, err, errlen);
}

struct file_ctx {
	struct policy_engine *e;
	const char *name, *text;
	size_t len;
	char *err;
	size_t errlen;
	int rc;
	bool dirty;
};

/* Runs protected on e->L: argument ctx; returns the environment and the
 * file's result. The environment is the file's own, writable (its
 * globals), reading through to the file base; its metatable is sealed. */
static int file_protected(lua_State *L)
{
	struct file_ctx *c = lua_touserdata(L, 1);
	struct policy_engine *e = c->e;

	lua_createtable(L, 0, 0);
	lua_createtable(L, 0, 2);
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_filebase);
	lua_setfield(L, -2, "__index");
	lua_pushboolean(L, 0);
	lua_setfield(L, -2, "__metatable");
	lua_setmetatable(L, 2);
	lua_pushfstring(L, "@%s", c->name);
	if (luaL_loadbufferx(L, c->text, c->len, lua_tostring(L, -1), "t") != LUA_OK) {
		snprintf(c->err, c->errlen, "%s", lua_tostring(L, -1));
		policy_scrub_syntax_error(c->err);
		return 0;
	}
	lua_pushvalue(L, 2);
	if (!lua_setupvalue(L, -2, 1))
		lua_pop(L, 1);
	lua_settop(e->co, 0);
	lua_xmove(L, e->co, 1);
	budget_arm(e);
	if (engine_run(e, 0, RUN_LAST | RUN_OPTIONAL, c->name, c->err, c->errlen, &c->dirty) != 0)
		return 0;
	e->cap_armed = false;
	lua_pushvalue(L, 2);
	lua_xmove(e->co, L, 1);
	c->rc = 0;
	return 2;
}

int policy_sandbox_run(struct policy_engine *e, const char *name, const char *text, size_t len, char *err,
                       size_t errlen)
{
	lua_State *L = e->L;
	int top = lua_gettop(L);
	size_t used_before = e->mem_used;
	struct file_ctx c = {
	    .e = e, .name = name, .text = text, .len = len, .err = err, .errlen = errlen, .rc = -1};

	err[0] = '\0';
	if (e->broken) {
		snprintf(err, errlen, "%s: the Lua sandbox is out of memory", name);
		return -1;
	}
	lua_pushcfunction(L, file_protected);
	lua_pushlightuserdata(L, &c);
	if (lua_pcall(L, 1, 2, 0) != LUA_OK) {
		snprintf(err, errlen, "%s: %s", name,
		         lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "out of memory");
		c.rc = -1;
		c.dirty = true;
	}
	engine_finish(e, c.dirty, used_before);
	if (c.rc != 0) {
		lua_settop(L, top);
		if (!err[0])
			snprintf(err, errlen, "%s: failed", name);
		return -1;
	}
	return 0;
}

void policy_engine_free(struct policy_engine *e)
{
	if (!e)
		return;
	if (e->L) {
		e->cap_armed = false;
		lua_close(e->L);
	}
	alloc_release_small(e);
	explain_free(e);
	free(e->chunks);
	free(e->envmts);
	free(e->mods);
	free(e);
}

lua_State *policy_engine_lua(struct policy_engine *e)
{
	return e->L;
}
