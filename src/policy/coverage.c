/*
 * policy/coverage.c — line and branch coverage of policies (test --coverage).
 *
 * Owns the lines a coverage run records, the reader of a chunk's dumped
 * bytecode that lists a policy's code lines (policy_code_lines), and
 * branches: the instrumented source that reports each if/elseif
 * condition's value (policy_branch_instrument) and the outcomes recorded.
 * It must never charge coverage to a decision's budget, never change what a
 * condition evaluates to, and never move a line of the source.
 */
#include "state.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "lualex.h"

/* Coverage: cov[source][line] = true, outside the decision's memory cap. */
void coverage_record_line(struct policy_engine *e, lua_State *L, lua_Debug *ar)
{
	bool armed = e->cap_armed;

	if (!lua_getinfo(L, "S", ar) || ar->source[0] != '@' || !lua_checkstack(L, 4))
		return;
	e->cap_armed = false;
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_cov);
	if (lua_getfield(L, -1, ar->source + 1) != LUA_TTABLE) {
		lua_pop(L, 1);
		lua_newtable(L);
		lua_pushvalue(L, -1);
		lua_setfield(L, -3, ar->source + 1);
	}
	lua_pushboolean(L, 1);
	lua_rawseti(L, -2, ar->currentline);
	lua_pop(L, 2);
	e->cap_armed = armed;
}

/* A syntax error without its quote of the source (policy.h). */
void policy_scrub_syntax_error(char *msg)
{
	char *near = strstr(msg, " near '");

	if (near)
		*near = '\0';
}

/* ------------------------------------------------------------ coverage */

static void branch_on(lua_State *L, struct policy_engine *e);

static int cov_on_protected(lua_State *L)
{
	struct policy_engine *e = engine_of(L);

	lua_newtable(L);
	e->ref_cov = luaL_ref(L, LUA_REGISTRYINDEX);
	branch_on(L, e);
	return 0;
}

/* ------------------------------------------------------------ branches */

static const char branch_key = 'b'; /* registry[&branch_key][path][2 * id + value]: seen */

/* __cov_branch(id, v) in instrumented source: records that condition id of
 * the calling file was v (true or false) and returns v unchanged. */
static int cov_branch(lua_State *L)
{
	struct policy_engine *e = engine_of(L);
	lua_Debug ar;
	bool armed = e->cap_armed;
	lua_Integer id = lua_tointeger(L, 1);
	int truthy = lua_toboolean(L, 2);

	lua_settop(L, 2);
	if (!lua_getstack(L, 1, &ar) || !lua_getinfo(L, "S", &ar) || ar.source[0] != '@' || id < 1 ||
	    !lua_checkstack(L, 4))
		return 1;
	e->cap_armed = false;
	lua_rawgetp(L, LUA_REGISTRYINDEX, &branch_key);
	if (lua_getfield(L, -1, ar.source + 1) != LUA_TTABLE) {
		lua_pop(L, 1);
		lua_newtable(L);
		lua_pushvalue(L, -1);
		lua_setfield(L, -3, ar.source + 1);
	}
	lua_pushboolean(L, 1);
	lua_rawseti(L, -2, 2 * id + truthy);
	lua_settop(L, 2);
	e->cap_armed = armed;
	return 1;
}

/* Gives every tenant's environments __cov_branch. */
static void branch_on(lua_State *L, struct policy_engine *e)
{
	lua_newtable(L);
	lua_rawsetp(L, LUA_REGISTRYINDEX, &branch_key);
	for (size_t i = 0; i < e->n_chunks; i++) {
		if (e->envmts[i] == LUA_NOREF)
			continue;
		lua_rawgeti(L, LUA_REGISTRYINDEX, e->envmts[i]);
		lua_pushliteral(L, "__index");
		lua_rawget(L, -2); /* the tenant's base */
		lua_pushcfunction(L, cov_branch);
		lua_setfield(L, -2, "__cov_branch");
		lua_pop(L, 2);
	}
}

void policy_branch_each(struct policy_engine *e, void (*fn)(void *ctx, const char *path, int id, bool value),
                        void *ctx)
{
	lua_State *L = e->L;
	int top = lua_gettop(L);

	if (!e->coverage || lua_rawgetp(L, LUA_REGISTRYINDEX, &branch_key) != LUA_TTABLE) {
		lua_settop(L, top);
		return;
	}
	lua_pushnil(L);
	while (lua_next(L, -2)) {
		const char *path = lua_tostring(L, -2);
		lua_pushnil(L);
		while (lua_next(L, -2)) {
			if (lua_isinteger(L, -2)) {
				lua_Integer k = lua_tointeger(L, -2);
				fn(ctx, path, (int)(k / 2), k % 2 != 0);
			}
			lua_pop(L, 1);
		}
		lua_pop(L, 1);
	}
	lua_settop(L, top);
}

/* What goes after `if`/`elseif`, and before its `then`: the condition's
 * value passes through __cov_branch (or, while the policy is compiled and
 * before coverage is on, through a function that only returns it). */
#define BRANCH_OPEN  " (__cov_branch or function(_, v) return v end)(%d, ("
#define BRANCH_CLOSE ")) "

struct branch_insert {
	size_t at;
	int id; /* 0: BRANCH_CLOSE */
};

static bool opens_block(const struct lualex *x, const struct lualex_token *t)
{
	return lualex_is(x, t, "function") || lualex_is(x, t, "if") || lualex_is(x, t, "do") ||
	       lualex_is(x, t, "repeat");
}

static bool closes_block(const struct lualex *x, const struct lualex_token *t)
{
	return lualex_is(x, t, "end") || lualex_is(x, t, "until");
}

static int cmp_insert(const void *a, const void *b)
{
	const struct branch_insert *x = a, *y = b;

	/* Never two at one place: an `if` never ends where a `then` starts. */
	return x->at < y->at ? -1 : x->at > y->at;
}

/* Whether text is a Lua chunk (compiled in a state of its own, not run). */
static bool compiles(const char *text, size_t len)
{
	lua_State *L = luaL_newstate();
	bool ok;

	if (!L)
		return false;
	ok = luaL_loadbufferx(L, text, len, "=branches", "t") == LUA_OK;
	lua_close(L);
	return ok;
}

int policy_branch_instrument(const char *text, size_t len, char **out, size_t *outlen, int **lines,
                             size_t *nsites)
{
	struct lualex x, scan;
	struct lualex_token t, u;
	struct branch_insert *ins = NULL;
	size_t n_ins = 0, cap = 0, used = 0, from = 0, size;
	int *sl = NULL, id = 0;
	char *o = NULL;

	*out = NULL;
	*lines = NULL;
	*nsites = 0;
	/* Only text Lua compiles: its conditions are short (nesting is bounded
	 * by Lua's own limits), so finding each `then` stays linear; text that
	 * is not Lua could make it quadratic. */
	if (!compiles(text, len))
		return -1;
	lualex_init(&x, text, len);
	while (lualex_next(&x, &t) != LUALEX_END) {
		int depth = 0;
		if (t.kind == LUALEX_BAD)
			goto fail;
		if (!lualex_is(&x, &t, "if") && !lualex_is(&x, &t, "elseif"))
			continue;
		scan = x;
		while (lualex_next(&scan, &u) != LUALEX_END && u.kind != LUALEX_BAD) {
			if (depth == 0 && lualex_is(&scan, &u, "then"))
				break;
			depth += opens_block(&scan, &u) ? 1 : closes_block(&scan, &u) ? -1 : 0;
		}
		if (!lualex_is(&scan, &u, "then"))
			goto fail; /* not Lua: left as it is */
		if (n_ins + 2 > cap) {
			struct branch_insert *g = realloc(ins, (cap = cap * 2 + 32) * sizeof(*ins));
			int *gl = realloc(sl, (cap / 2 + 1) * sizeof(*sl));
			if (g)
				ins = g;
			if (gl)
				sl = gl;
			if (!g || !gl)
				goto fail;
		}
		sl[id++] = t.line;
		ins[n_ins++] = (struct branch_insert){.at = t.start + t.len, .id = id};
		ins[n_ins++] = (struct branch_insert){.at = u.start, .id = 0};
	}
	if (n_ins)
		qsort(ins, n_ins, sizeof(*ins), cmp_insert);
	size = len + n_ins * sizeof(BRANCH_OPEN) + n_ins * 12 + 1;
	o = malloc(size);
	if (!o)
		goto fail;
	for (size_t i = 0; i < n_ins; i++) {
		memcpy(o + used, text + from, ins[i].at - from);
		used += ins[i].at - from;
		from = ins[i].at;
		if (ins[i].id)
			used += (size_t)snprintf(o + used, size - used, BRANCH_OPEN, ins[i].id);
		else
			used += (size_t)snprintf(o + used, size - used, "%s", BRANCH_CLOSE);
	}
	memcpy(o + used, text + from, len - from);
	used += len - from;
	o[used] = '\0';
	free(ins);
	*out = o;
	*outlen = used;
	*lines = sl;
	*nsites = (size_t)id;
	return 0;
fail:
	free(ins);
	free(sl);
	free(o);
	return -1;
}

int policy_engine_coverage(struct policy_engine *e)
{
	lua_pushcfunction(e->L, cov_on_protected);
	if (lua_pcall(e->L, 0, 0, 0) != LUA_OK) {
		lua_pop(e->L, 1);
		return -1;
	}
	e->coverage = true;
	return 0;
}

void policy_coverage_each(struct policy_engine *e, void (*fn)(void *ctx, const char *path, int line),
                          void *ctx)
{
	lua_State *L = e->L;
	int top = lua_gettop(L);

	if (!e->coverage)
		return;
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_cov);
	lua_pushnil(L);
	while (lua_next(L, -2)) {
		const char *path = lua_tostring(L, -2);
		lua_pushnil(L);
		while (lua_next(L, -2)) {
			if (lua_isinteger(L, -2))
				fn(ctx, path, (int)lua_tointeger(L, -2));
			lua_pop(L, 1);
		}
		lua_pop(L, 1);
	}
	lua_settop(L, top);
}

/*
 * Which lines hold code: the lines of every instruction of the chunk and of
 * every function nested in it, read from the chunk's own dump (the debug
 * API reaches nested prototypes only once their closures exist). As Lua's
 * activelines does, a vararg function's first instruction (VARARGPREP) is
 * not a line; unlike it, neither is each function's implicit final return,
 * which never runs in a function that returns explicitly. The dump format
 * is Lua 5.4's (ldump.c); it is only ever produced here, from text.
 */
struct dump_reader {
	const unsigned char *p, *end;
	bool bad;
	unsigned char *lines;
	size_t nlines;
};

static unsigned rd_byte(struct dump_reader *r)
{
	if (r->p >= r->end) {
		r->bad = true;
		return 0;
	}
	return *r->p++;
}

static size_t rd_size(struct dump_reader *r)
{
	size_t x = 0;
	unsigned b;

	do {
		b = rd_byte(r);
		if (x > (SIZE_MAX >> 7)) {
			r->bad = true;
			return 0;
		}
		x = (x << 7) | (b & 0x7f);
	} while (!(b & 0x80) && !r->bad);
	return x;
}

static void rd_skip(struct dump_reader *r, size_t n)
{
	if ((size_t)(r->end - r->p) < n) {
		r->bad = true;
		r->p = r->end;
	} else {
		r->p += n;
	}
}

static void rd_string(struct dump_reader *r)
{
	size_t n = rd_size(r);
	if (n)
		rd_skip(r, n - 1);
}

static void rd_function(struct dump_reader *r, int depth)
{
	size_t ncode, n, nli, nabs;
	const signed char *li;
	const unsigned char *abs_at;
	long line;
	bool vararg;

	if (depth > 200) {
		r->bad = true;
		return;
	}
	rd_string(r);            /* source */
	line = (long)rd_size(r); /* linedefined */
	rd_size(r);              /* lastlinedefined */
	rd_byte(r);              /* numparams */
	vararg = rd_byte(r) != 0;
	rd_byte(r); /* maxstacksize */
	ncode = rd_size(r);
	rd_skip(r, ncode * 4);
	n = rd_size(r); /* constants */
	for (size_t i = 0; i < n && !r->bad; i++) {
		unsigned tag = rd_byte(r);
		if (tag == 0x03 || tag == 0x13) /* integer, float */
			rd_skip(r, 8);
		else if (tag == 0x04 || tag == 0x14) /* short, long string */
			rd_string(r);
	}
	n = rd_size(r); /* upvalues: instack, idx, kind */
	rd_skip(r, n * 3);
	n = rd_size(r); /* nested functions */
	for (size_t i = 0; i < n && !r->bad; i++)
		rd_function(r, depth + 1);
	nli = rd_size(r);
	li = (const signed char *)r->p;
	rd_skip(r, nli);
	nabs = rd_size(r);
	abs_at = r->p;
	for (size_t i = 0; i < nabs && !r->bad; i++) {
		rd_size(r);
		rd_size(r);
	}
	if (r->bad)
		return;
	/* Lines: deltas, or an absolute line (-128) taken from the next pair. */
	{
		struct dump_reader ab = {.p = abs_at, .end = r->p};
		for (size_t pc = 0; pc < nli; pc++) {
			if (li[pc] == -128) {
				rd_size(&ab);
				line = (long)rd_size(&ab);
			} else {
				line += li[pc];
			}
			if ((vararg && pc == 0) || pc + 1 == nli || ab.bad)
				continue;
			if (line > 0 && (size_t)line < r->nlines)
				r->lines[line] = 1;
		}
	}
	n = rd_size(r); /* local variables */
	for (size_t i = 0; i < n && !r->bad; i++) {
		rd_string(r);
		rd_size(r);
		rd_size(r);
	}
	n = rd_size(r); /* upvalue names */
	for (size_t i = 0; i < n && !r->bad; i++)
		rd_string(r);
}

struct dump_buf {
	unsigned char *p;
	size_t len, cap;
};

static int dump_write(lua_State *L, const void *p, size_t sz, void *ud)
{
	struct dump_buf *b = ud;

	(void)L;
	if (b->len + sz > b->cap) {
		size_t cap = (b->len + sz) * 2;
		unsigned char *np = realloc(b->p, cap);
		if (!np)
			return 1;
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->len, p, sz);
	b->len += sz;
	return 0;
}

int policy_code_lines(const char *name, const char *text, size_t len, unsigned char *lines, size_t nlines,
                      char *err, size_t errlen)
{
	lua_State *L = luaL_newstate();
	struct dump_buf b = {0};
	struct dump_reader r;
	int rc = -1;

	memset(lines, 0, nlines);
	if (!L) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	lua_pushfstring(L, "@%s", name);
	if (luaL_loadbufferx(L, text, len, lua_tostring(L, -1), "t") != LUA_OK) {
		snprintf(err, errlen, "%s", lua_tostring(L, -1));
		policy_scrub_syntax_error(err);
		goto out;
	}
	if (lua_dump(L, dump_write, &b, 0) != 0 || b.len < 32) {
		snprintf(err, errlen, "%s: cannot read its line information", name);
		goto out;
	}
	r = (struct dump_reader){.p = b.p + 32, .end = b.p + b.len, .lines = lines, .nlines = nlines};
	rd_function(&r, 0); /* after the 31-byte header and the upvalue count */
	if (r.bad) {
		snprintf(err, errlen, "%s: cannot read its line information", name);
		goto out;
	}
	rc = 0;
out:
	free(b.p);
	lua_close(L);
	return rc;
}
