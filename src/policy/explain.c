/*
 * policy/explain.c — which `return` of a policy decided, and the calls that
 * led there (eval --explain, test failures, the audit log, replay).
 *
 * Owns the return hook's records and the decision's origin. While a decision
 * runs on an engine with explain on, the budget's hook also fires on every
 * return (LUA_MASKRET): a return from a policy or module file ("@path")
 * whose first value is a table is recorded with the policy frames on the
 * stack (innermost first), in a ring of EXPLAIN_RING records. The table is
 * anchored in a registry array slot of the record, so that no other table
 * can take its address while the record lives. When the decision ends, the
 * earliest record of the table the policy returned is the innermost return
 * that produced it: helpers' `return { allow = ... }` and every `return d`
 * that handed it up share its address (a table already in the ring is not
 * recorded again). Off (the default) it costs nothing;
 * on, a return that yields no table costs one lua_getinfo and one
 * lua_getlocal. It must never charge a policy's budget, allocate under a
 * decision's memory cap, or hold a table past its decision.
 */
#include "state.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The Lua levels a record looks through for policy frames. */
#define EXPLAIN_LEVELS 24

struct explain_rec {
	const void *table;
	size_t n;
	struct policy_frame fr[POLICY_CHAIN_MAX]; /* innermost first */
};

struct explain {
	int ref_anchor;          /* registry: the tables of the records, by slot + 1 */
	unsigned long long seen; /* records this decision (the ring holds the last EXPLAIN_RING) */
	struct explain_rec rec[EXPLAIN_RING];
	struct policy_frame origin[POLICY_CHAIN_MAX]; /* outermost first */
	size_t n_origin;
};

static int anchor_new_protected(lua_State *L)
{
	struct policy_engine *e = engine_of(L);

	lua_createtable(L, EXPLAIN_RING, 0);
	for (int i = 1; i <= EXPLAIN_RING; i++) {
		lua_pushboolean(L, 0);
		lua_rawseti(L, -2, i); /* the array part exists: a record never allocates */
	}
	e->xp->ref_anchor = luaL_ref(L, LUA_REGISTRYINDEX);
	return 0;
}

int policy_engine_explain(struct policy_engine *e, bool on)
{
	if (on && !e->xp) {
		bool armed = e->cap_armed;
		if (!(e->xp = calloc(1, sizeof(*e->xp))))
			return -1;
		e->cap_armed = false;
		lua_pushcfunction(e->L, anchor_new_protected);
		if (lua_pcall(e->L, 0, 0, 0) != LUA_OK) {
			lua_pop(e->L, 1);
			free(e->xp);
			e->xp = NULL;
			e->cap_armed = armed;
			return -1;
		}
		e->cap_armed = armed;
	}
	e->explain = on;
	if (e->xp)
		e->xp->n_origin = 0;
	return 0;
}

void explain_free(struct policy_engine *e)
{
	free(e->xp);
	e->xp = NULL;
}

/* At the start of a decision: no record, no origin yet. */
void explain_begin(struct policy_engine *e)
{
	e->xp->n_origin = 0;
	e->xp->seen = 0;
}

/* At the end of a decision, whatever its outcome (on e->L, protected): let
 * go of the tables the records held, so that nothing of a request is kept
 * past its decision. Writes false into existing slots: never allocates. */
void explain_end(struct policy_engine *e)
{
	struct explain *xp = e->xp;
	unsigned long long used = xp && xp->seen < EXPLAIN_RING ? xp->seen : EXPLAIN_RING;

	if (!xp || !xp->seen || !lua_checkstack(e->L, 2))
		return;
	lua_rawgeti(e->L, LUA_REGISTRYINDEX, xp->ref_anchor);
	for (unsigned long long i = 1; i <= used; i++) {
		lua_pushboolean(e->L, 0);
		lua_rawseti(e->L, -2, (lua_Integer)i);
	}
	lua_pop(e->L, 1);
	xp->seen = 0;
}

/* The return hook (from budget_hook, the decision's budget not yet spent). */
void explain_return(struct policy_engine *e, lua_State *L, lua_Debug *ar)
{
	struct explain *xp = e->xp;
	struct explain_rec *r;
	lua_Debug fr;
	const void *table;
	bool armed;
	int slot;

	if (!xp || !lua_getinfo(L, "r", ar) || ar->ntransfer < 1)
		return;
	armed = e->cap_armed;
	e->cap_armed = false; /* nothing here is the policy's to pay */
	if (!lua_checkstack(L, 3) || !lua_getlocal(L, ar, ar->ftransfer))
		goto out;
	if (lua_type(L, -1) != LUA_TTABLE || !lua_getinfo(L, "S", ar) || ar->source[0] != '@') {
		lua_pop(L, 1);
		goto out;
	}
	table = lua_topointer(L, -1);
	/* A table the ring holds already keeps its first record: handing it
	 * back again (return d, from many places) must not push the return
	 * that made it out of the ring. Its record anchors it, so no other
	 * table has its address. */
	for (unsigned long long k = xp->seen > EXPLAIN_RING ? xp->seen - EXPLAIN_RING : 0; k < xp->seen; k++)
		if (xp->rec[k % EXPLAIN_RING].table == table) {
			lua_pop(L, 1);
			goto out;
		}
	slot = (int)(xp->seen % EXPLAIN_RING);
	lua_rawgeti(L, LUA_REGISTRYINDEX, xp->ref_anchor);
	lua_insert(L, -2);
	lua_rawseti(L, -2, slot + 1);
	lua_pop(L, 1);
	r = &xp->rec[slot];
	r->table = table;
	r->n = 0;
	for (int level = 0; level < EXPLAIN_LEVELS && r->n < POLICY_CHAIN_MAX && lua_getstack(L, level, &fr);
	     level++) {
		if (!lua_getinfo(L, "Slt", &fr) || fr.source[0] != '@' || fr.currentline <= 0)
			continue;
		r->fr[r->n].source = fr.source + 1;
		r->fr[r->n].line = fr.currentline;
		r->fr[r->n].tail = fr.istailcall;
		r->n++;
	}
	xp->seen++;
out:
	e->cap_armed = armed;
}

/* When the decision returned table: its origin, from the earliest record of it. */
void explain_finish(struct policy_engine *e, const void *table)
{
	struct explain *xp = e->xp;
	unsigned long long first = xp->seen > EXPLAIN_RING ? xp->seen - EXPLAIN_RING : 0;

	xp->n_origin = 0;
	for (unsigned long long k = first; k < xp->seen; k++) {
		const struct explain_rec *r = &xp->rec[k % EXPLAIN_RING];
		if (r->table != table)
			continue;
		for (size_t i = 0; i < r->n; i++)
			xp->origin[i] = r->fr[r->n - 1 - i];
		xp->n_origin = r->n;
		return;
	}
}

size_t policy_decision_origin(const struct policy_engine *e, struct policy_frame *out, size_t max)
{
	size_t n;

	if (!e->explain || !e->xp)
		return 0;
	n = e->xp->n_origin < max ? e->xp->n_origin : max;
	memcpy(out, e->xp->origin, n * sizeof(*out));
	return n;
}

size_t policy_origin_text(const struct policy_engine *e, char *buf, size_t len)
{
	struct policy_frame fr[POLICY_CHAIN_MAX];
	size_t n = policy_decision_origin(e, fr, POLICY_CHAIN_MAX), used = 0;

	if (len)
		buf[0] = '\0';
	for (size_t i = 0; i < n && used < len; i++) {
		int w = snprintf(buf + used, len - used, "%s:%d%s\n", fr[i].source, fr[i].line,
		                 fr[i].tail ? " (tail call)" : "");
		if (w < 0 || (size_t)w >= len - used) {
			buf[used] = '\0';
			break;
		}
		used += (size_t)w;
	}
	return n;
}

/* path without base + "/" when it starts with it. */
static const char *shown(const char *path, const char *base)
{
	size_t n = base ? strlen(base) : 0;

	return n && strncmp(path, base, n) == 0 && path[n] == '/' ? path + n + 1 : path;
}

size_t policy_origin_line(const struct policy_engine *e, const char *base, char *buf, size_t len)
{
	struct policy_frame fr[POLICY_CHAIN_MAX];
	size_t n = policy_decision_origin(e, fr, POLICY_CHAIN_MAX), used;
	int w;

	if (len)
		buf[0] = '\0';
	if (n == 0 || len == 0)
		return n;
	w = snprintf(buf, len, "decided at %s:%d", shown(fr[n - 1].source, base), fr[n - 1].line);
	used = w < 0 ? 0 : (size_t)w;
	for (size_t i = 0; i + 1 < n && used < len; i++) {
		w = snprintf(buf + used, len - used, "%s%s:%d", i ? " > " : ", called from ",
		             shown(fr[i].source, base), fr[i].line);
		used += w < 0 ? 0 : (size_t)w;
	}
	if (fr[n - 1].tail && used < len)
		snprintf(buf + used, len - used, " (through a tail call)");
	return n;
}
