/*
 * pmatch.c — Lua 5.4 string patterns with a step budget.
 *
 * Owns string.find/match/gmatch/gsub as policies see them. The semantics are
 * those of the Lua 5.4 manual (§6.4.1): classes, sets, the four repetitions,
 * anchors, captures and position captures, %b, %f and back-references, with
 * the same limits (32 captures, a recursion depth of 200) and the same error
 * messages. What differs is that the matcher counts its work and hands it to
 * the host (pmatch_budget.charge) every PMATCH_CHUNK steps: backtracking is
 * exponential in the number of repetitions, and runs in C where no hook can
 * stop it. A step is one entry into the matcher at one subject position, one
 * character consumed by a repetition or a balance, one candidate of a plain
 * search plus one per 16 bytes compared or scanned. It must never touch a
 * Lua value other than its arguments, and never run unbounded work between
 * two charges.
 */
#include "pmatch.h"

#include <ctype.h>
#include <lauxlib.h>
#include <lua.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define MAX_CAPTURES   32
#define MAX_DEPTH      200 /* C recursion of the matcher */
#define CAP_UNFINISHED (-1)
#define CAP_POSITION   (-2)
#define ESC            '%'
#define SPECIALS       "^$*+?.([%-"

struct mstate {
	const char *src_init, *src_end, *p_end;
	lua_State *L;
	const struct pmatch_budget *b;
	long left; /* steps before the next charge */
	int depth; /* recursion left */
	int level; /* captures open or closed */
	struct {
		const char *init;
		ptrdiff_t len;
	} cap[MAX_CAPTURES];
};

/* ------------------------------------------------------------- budget */

static void charge_now(struct mstate *ms)
{
	unsigned long spent = (unsigned long)(PMATCH_CHUNK - ms->left);

	ms->left = PMATCH_CHUNK;
	if (ms->b->charge(ms->L, spent))
		luaL_error(ms->L, "pattern matching budget exceeded");
}

static void step(struct mstate *ms, long n)
{
	ms->left -= n;
	if (ms->left <= 0)
		charge_now(ms);
}

/* Charges what is left over at the end of a call. */
static void settle(struct mstate *ms)
{
	if (ms->left != PMATCH_CHUNK)
		charge_now(ms);
}

static void prep(struct mstate *ms, lua_State *L, const struct pmatch_budget *b, const char *s, size_t ls,
                 const char *p, size_t lp)
{
	ms->L = L;
	ms->b = b;
	ms->left = PMATCH_CHUNK;
	ms->src_init = s;
	ms->src_end = s + ls;
	ms->p_end = p + lp;
	ms->depth = MAX_DEPTH;
	ms->level = 0;
}

/* ------------------------------------------------------------ classes */

/* The end of the single-character class starting at p. */
static const char *class_end(struct mstate *ms, const char *p)
{
	char c = *p++;

	if (c == ESC) {
		if (p >= ms->p_end)
			luaL_error(ms->L, "malformed pattern (ends with '%%')");
		return p + 1;
	}
	if (c == '[') {
		if (*p == '^')
			p++;
		do { /* the first character of a set may be ']' */
			if (p >= ms->p_end)
				luaL_error(ms->L, "malformed pattern (missing ']')");
			if (*(p++) == ESC && p < ms->p_end)
				p++;
		} while (*p != ']');
		return p + 1;
	}
	return p;
}

static int match_class(int c, int cl)
{
	int res;

	switch (tolower(cl)) {
	case 'a':
		res = isalpha(c);
		break;
	case 'c':
		res = iscntrl(c);
		break;
	case 'd':
		res = isdigit(c);
		break;
	case 'g':
		res = isgraph(c);
		break;
	case 'l':
		res = islower(c);
		break;
	case 'p':
		res = ispunct(c);
		break;
	case 's':
		res = isspace(c);
		break;
	case 'u':
		res = isupper(c);
		break;
	case 'w':
		res = isalnum(c);
		break;
	case 'x':
		res = isxdigit(c);
		break;
	case 'z':
		res = c == 0;
		break; /* deprecated in Lua, still honoured */
	default:
		return cl == c;
	}
	return isupper(cl) ? !res : res != 0;
}

/* Whether c is in the set [p .. ec], p at '[' and ec at its ']'. */
static int match_set(int c, const char *p, const char *ec)
{
	int found = 1;

	if (*(p + 1) == '^') {
		found = 0;
		p++;
	}
	while (++p < ec) {
		if (*p == ESC) {
			p++;
			if (match_class(c, (unsigned char)*p))
				return found;
		} else if (*(p + 1) == '-' && p + 2 < ec) {
			p += 2;
			if ((unsigned char)*(p - 2) <= c && c <= (unsigned char)*p)
				return found;
		} else if ((unsigned char)*p == c) {
			return found;
		}
	}
	return !found;
}

static int single_match(struct mstate *ms, const char *s, const char *p, const char *ep)
{
	int c;

	if (s >= ms->src_end)
		return 0;
	c = (unsigned char)*s;
	switch (*p) {
	case '.':
		return 1;
	case ESC:
		return match_class(c, (unsigned char)*(p + 1));
	case '[':
		return match_set(c, p, ep - 1);
	default:
		return (unsigned char)*p == c;
	}
}

/* ------------------------------------------------------------ matching */

static const char *do_match(struct mstate *ms, const char *s, const char *p);

static const char *match_balance(struct mstate *ms, const char *s, const char *p)
{
	int open, close, depth = 1;

	if (p >= ms->p_end - 1)
		luaL_error(ms->L, "malformed pattern (missing arguments to '%%b')");
	if (s >= ms->src_end || *s != *p)
		return NULL;
	open = *p;
	close = *(p + 1);
	while (++s < ms->src_end) {
		step(ms, 1);
		if (*s == close) {
			if (--depth == 0)
				return s + 1;
		} else if (*s == open) {
			depth++;
		}
	}
	return NULL;
}

static const char *max_expand(struct mstate *ms, const char *s, const char *p, const char *ep)
{
	ptrdiff_t i = 0;

	while (single_match(ms, s + i, p, ep)) {
		i++;
		step(ms, 1);
	}
	for (; i >= 0; i--) {
		const char *r = do_match(ms, s + i, ep + 1);
		if (r)
			return r;
	}
	return NULL;
}

static const char *min_expand(struct mstate *ms, const char *s, const char *p, const char *ep)
{
	for (;;) {
		const char *r = do_match(ms, s, ep + 1);
		if (r)
			return r;
		if (!single_match(ms, s, p, ep))
			return NULL;
		s++;
	}
}

static const char *start_capture(struct mstate *ms, const char *s, const char *p, ptrdiff_t what)
{
	const char *r;

	if (ms->level >= MAX_CAPTURES)
		luaL_error(ms->L, "too many captures");
	ms->cap[ms->level].init = s;
	ms->cap[ms->level].len = what;
	ms->level++;
	r = do_match(ms, s, p);
	if (!r)
		ms->level--;
	return r;
}

static const char *end_capture(struct mstate *ms, const char *s, const char *p)
{
	int l = ms->level - 1;
	const char *r;

	while (l >= 0 && ms->cap[l].len != CAP_UNFINISHED)
		l--;
	if (l < 0)
		luaL_error(ms->L, "invalid pattern capture");
	ms->cap[l].len = s - ms->cap[l].init;
	r = do_match(ms, s, p);
	if (!r)
		ms->cap[l].len = CAP_UNFINISHED;
	return r;
}

static const char *match_backref(struct mstate *ms, const char *s, int digit)
{
	int l = digit - '1';
	ptrdiff_t len;

	if (l < 0 || l >= ms->level || ms->cap[l].len == CAP_UNFINISHED)
		luaL_error(ms->L, "invalid capture index %%%d", l + 1);
	len = ms->cap[l].len;
	if (len < 0) /* a position capture matches no text */
		return NULL;
	step(ms, (long)(len / 16));
	if (ms->src_end - s >= len && memcmp(ms->cap[l].init, s, (size_t)len) == 0)
		return s + len;
	return NULL;
}

/* Matches the pattern at p against the subject at s: the end of the match,
 * or NULL. */
static const char *do_match(struct mstate *ms, const char *s, const char *p)
{
	if (ms->depth-- == 0)
		luaL_error(ms->L, "pattern too complex");
again:
	step(ms, 1);
	if (p == ms->p_end)
		goto out;
	switch (*p) {
	case '(':
		if (*(p + 1) == ')')
			s = start_capture(ms, s, p + 2, CAP_POSITION);
		else
			s = start_capture(ms, s, p + 1, CAP_UNFINISHED);
		goto out;
	case ')':
		s = end_capture(ms, s, p + 1);
		goto out;
	case '$':
		if (p + 1 != ms->p_end)
			break; /* an ordinary '$' */
		s = s == ms->src_end ? s : NULL;
		goto out;
	case ESC:
		switch (*(p + 1)) {
		case 'b':
			s = match_balance(ms, s, p + 2);
			if (s) {
				p += 4;
				goto again;
			}
			goto out;
		case 'f': {
			const char *ep;
			int prev, cur;
			p += 2;
			if (*p != '[')
				luaL_error(ms->L, "missing '[' after '%%f' in pattern");
			ep = class_end(ms, p);
			prev = s == ms->src_init ? '\0' : (unsigned char)*(s - 1);
			cur = s < ms->src_end ? (unsigned char)*s : '\0';
			if (!match_set(prev, p, ep - 1) && match_set(cur, p, ep - 1)) {
				p = ep;
				goto again;
			}
			s = NULL;
			goto out;
		}
		case '0':
		case '1':
		case '2':
		case '3':
		case '4':
		case '5':
		case '6':
		case '7':
		case '8':
		case '9':
			s = match_backref(ms, s, (unsigned char)*(p + 1));
			if (s) {
				p += 2;
				goto again;
			}
			goto out;
		default:
			break;
		}
		break;
	default:
		break;
	}

	/* A single-character class, perhaps with a repetition. */
	{
		const char *ep = class_end(ms, p);
		if (!single_match(ms, s, p, ep)) {
			if (*ep == '*' || *ep == '?' || *ep == '-') {
				p = ep + 1;
				goto again;
			}
			s = NULL;
			goto out;
		}
		switch (*ep) {
		case '?': {
			const char *r = do_match(ms, s + 1, ep + 1);
			if (r) {
				s = r;
				goto out;
			}
			p = ep + 1;
			goto again;
		}
		case '+':
			s = max_expand(ms, s + 1, p, ep);
			goto out;
		case '*':
			s = max_expand(ms, s, p, ep);
			goto out;
		case '-':
			s = min_expand(ms, s, p, ep);
			goto out;
		default:
			s++;
			p = ep;
			goto again;
		}
	}
out:
	ms->depth++;
	return s;
}

/* ------------------------------------------------------------ captures */

static void push_capture(struct mstate *ms, int i, const char *s, const char *e)
{
	if (i >= ms->level) {
		if (i != 0)
			luaL_error(ms->L, "invalid capture index %%%d", i + 1);
		lua_pushlstring(ms->L, s, (size_t)(e - s));
		return;
	}
	if (ms->cap[i].len == CAP_UNFINISHED)
		luaL_error(ms->L, "unfinished capture");
	if (ms->cap[i].len == CAP_POSITION)
		lua_pushinteger(ms->L, (lua_Integer)(ms->cap[i].init - ms->src_init) + 1);
	else
		lua_pushlstring(ms->L, ms->cap[i].init, (size_t)ms->cap[i].len);
}

/* Pushes every capture, or the whole match when there is none (s non-NULL). */
static int push_captures(struct mstate *ms, const char *s, const char *e)
{
	int n = ms->level == 0 && s ? 1 : ms->level;

	luaL_checkstack(ms->L, n, "too many captures");
	for (int i = 0; i < n; i++)
		push_capture(ms, i, s, e);
	return n;
}

/* ------------------------------------------------------------ functions */

static const struct pmatch_budget *budget_of(lua_State *L)
{
	return lua_touserdata(L, lua_upvalueindex(1));
}

/* A 1-based start position, clipped to 1.. (may be past the end). */
static size_t start_pos(lua_Integer pos, size_t len)
{
	if (pos > 0)
		return (size_t)pos;
	if (pos == 0 || pos < -(lua_Integer)len)
		return 1;
	return len + (size_t)pos + 1;
}

static int no_specials(const char *p, size_t lp)
{
	for (size_t i = 0; i < lp; i++)
		if (p[i] && strchr(SPECIALS, p[i]))
			return 0;
	return 1;
}

/* A plain search, charged per candidate and per 16 bytes compared or scanned. */
static const char *plain_find(struct mstate *ms, const char *s1, size_t l1, const char *s2, size_t l2)
{
	const char *hit;

	if (l2 == 0)
		return s1;
	if (l2 > l1)
		return NULL;
	l2--;     /* the first byte is found by memchr */
	l1 -= l2; /* candidate positions */
	while (l1 > 0 && (hit = memchr(s1, *s2, l1)) != NULL) {
		step(ms, (long)((hit - s1) / 16 + 1 + (ptrdiff_t)(l2 / 16)));
		hit++;
		if (memcmp(hit, s2 + 1, l2) == 0)
			return hit - 1;
		l1 -= (size_t)(hit - s1);
		s1 = hit;
	}
	step(ms, (long)(l1 / 16));
	return NULL;
}

static int find_aux(lua_State *L, int find)
{
	size_t ls, lp;
	const char *s = luaL_checklstring(L, 1, &ls);
	const char *p = luaL_checklstring(L, 2, &lp);
	size_t init = start_pos(luaL_optinteger(L, 3, 1), ls) - 1;
	struct mstate ms;

	if (init > ls) {
		luaL_pushfail(L);
		return 1;
	}
	prep(&ms, L, budget_of(L), s, ls, p, lp);
	if (find && (lua_toboolean(L, 4) || no_specials(p, lp))) {
		const char *hit = plain_find(&ms, s + init, ls - init, p, lp);
		settle(&ms);
		if (hit) {
			lua_pushinteger(L, (lua_Integer)(hit - s) + 1);
			lua_pushinteger(L, (lua_Integer)(hit - s) + (lua_Integer)lp);
			return 2;
		}
	} else {
		const char *s1 = s + init;
		int anchor = *p == '^';
		if (anchor) {
			p++;
			lp--;
			prep(&ms, L, budget_of(L), s, ls, p, lp);
		}
		do {
			const char *e;
			ms.level = 0;
			ms.depth = MAX_DEPTH;
			e = do_match(&ms, s1, p);
			if (e) {
				settle(&ms);
				if (find) {
					lua_pushinteger(L, (lua_Integer)(s1 - s) + 1);
					lua_pushinteger(L, (lua_Integer)(e - s));
					return push_captures(&ms, NULL, NULL) + 2;
				}
				return push_captures(&ms, s1, e);
			}
		} while (s1++ < ms.src_end && !anchor);
		settle(&ms);
	}
	luaL_pushfail(L);
	return 1;
}

static int pm_find(lua_State *L)
{
	return find_aux(L, 1);
}

static int pm_match(lua_State *L)
{
	return find_aux(L, 0);
}

struct gmatch_state {
	const char *src, *p, *lastmatch;
	struct mstate ms;
};

/* The iterator; upvalues: the subject, the pattern, the state. */
static int gmatch_next(lua_State *L)
{
	struct gmatch_state *gm = lua_touserdata(L, lua_upvalueindex(3));

	gm->ms.L = L;
	for (const char *src = gm->src; src <= gm->ms.src_end; src++) {
		const char *e;
		gm->ms.level = 0;
		gm->ms.depth = MAX_DEPTH;
		e = do_match(&gm->ms, src, gm->p);
		if (e && e != gm->lastmatch) {
			gm->src = gm->lastmatch = e;
			settle(&gm->ms);
			return push_captures(&gm->ms, src, e);
		}
	}
	gm->src = gm->ms.src_end + 1;
	settle(&gm->ms);
	return 0;
}

static int pm_gmatch(lua_State *L)
{
	size_t ls, lp;
	const char *s = luaL_checklstring(L, 1, &ls);
	const char *p = luaL_checklstring(L, 2, &lp);
	size_t init = start_pos(luaL_optinteger(L, 3, 1), ls) - 1;
	struct gmatch_state *gm;

	if (init > ls)
		init = ls + 1;
	lua_settop(L, 2);
	gm = lua_newuserdatauv(L, sizeof(*gm), 0);
	prep(&gm->ms, L, budget_of(L), s, ls, p, lp);
	gm->src = s + init;
	gm->p = p;
	gm->lastmatch = NULL;
	lua_pushcclosure(L, gmatch_next, 3);
	return 1;
}

/* Appends the string replacement (argument 3) for the match s..e. */
static void add_string(struct mstate *ms, luaL_Buffer *b, const char *s, const char *e)
{
	lua_State *L = ms->L;
	size_t l;
	const char *news = lua_tolstring(L, 3, &l);
	const char *p;

	step(ms, (long)(l / 16));
	while ((p = memchr(news, ESC, l)) != NULL) {
		luaL_addlstring(b, news, (size_t)(p - news));
		p++;
		if (*p == ESC) {
			luaL_addchar(b, *p);
		} else if (*p == '0') {
			luaL_addlstring(b, s, (size_t)(e - s));
		} else if (isdigit((unsigned char)*p)) {
			push_capture(ms, *p - '1', s, e);
			luaL_tolstring(L, -1, NULL);
			lua_remove(L, -2);
			luaL_addvalue(b);
		} else {
			luaL_error(L, "invalid use of '%c' in replacement string", ESC);
		}
		l -= (size_t)(p + 1 - news);
		news = p + 1;
	}
	luaL_addlstring(b, news, l);
}

/* Appends the replacement for s..e; returns whether it changed the text. */
static int add_value(struct mstate *ms, luaL_Buffer *b, const char *s, const char *e, int tr)
{
	lua_State *L = ms->L;

	if (tr == LUA_TFUNCTION) {
		int n;
		lua_pushvalue(L, 3);
		n = push_captures(ms, s, e);
		lua_call(L, n, 1);
	} else if (tr == LUA_TTABLE) {
		push_capture(ms, 0, s, e);
		lua_gettable(L, 3);
	} else {
		add_string(ms, b, s, e);
		return 1;
	}
	if (!lua_toboolean(L, -1)) {
		lua_pop(L, 1);
		luaL_addlstring(b, s, (size_t)(e - s));
		return 0;
	}
	if (!lua_isstring(L, -1))
		return luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
	luaL_addvalue(b);
	return 1;
}

static int pm_gsub(lua_State *L)
{
	size_t srcl, lp;
	const char *src = luaL_checklstring(L, 1, &srcl);
	const char *p = luaL_checklstring(L, 2, &lp);
	const char *lastmatch = NULL;
	int tr = lua_type(L, 3);
	lua_Integer max_s = luaL_optinteger(L, 4, (lua_Integer)srcl + 1);
	int anchor = *p == '^';
	lua_Integer n = 0;
	int changed = 0;
	struct mstate ms;
	luaL_Buffer b;

	luaL_argexpected(L, tr == LUA_TNUMBER || tr == LUA_TSTRING || tr == LUA_TFUNCTION || tr == LUA_TTABLE,
	                 3, "string/function/table");
	luaL_buffinit(L, &b);
	if (anchor) {
		p++;
		lp--;
	}
	prep(&ms, L, budget_of(L), src, srcl, p, lp);
	while (n < max_s) {
		const char *e;
		ms.level = 0;
		ms.depth = MAX_DEPTH;
		e = do_match(&ms, src, p);
		if (e && e != lastmatch) {
			n++;
			changed = add_value(&ms, &b, src, e, tr) | changed;
			src = lastmatch = e;
		} else if (src < ms.src_end) {
			luaL_addchar(&b, *src++);
		} else {
			break;
		}
		if (anchor)
			break;
	}
	settle(&ms);
	if (!changed) {
		lua_pushvalue(L, 1);
	} else {
		luaL_addlstring(&b, src, (size_t)(ms.src_end - src));
		luaL_pushresult(&b);
	}
	lua_pushinteger(L, n);
	return 2;
}

void pmatch_register(lua_State *L, int t, const struct pmatch_budget *b)
{
	static const luaL_Reg fns[] = {
	    {"find", pm_find}, {"match", pm_match}, {"gmatch", pm_gmatch}, {"gsub", pm_gsub}, {NULL, NULL}};

	t = lua_absindex(L, t);
	for (const luaL_Reg *f = fns; f->name; f++) {
		lua_pushlightuserdata(L, (void *)(uintptr_t)b);
		lua_pushcclosure(L, f->func, 1);
		lua_setfield(L, t, f->name);
	}
}
