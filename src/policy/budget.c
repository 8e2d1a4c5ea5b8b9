/*
 * policy/budget.c — the budgets of one decision.
 *
 * Owns the count hook, the time budget (the thread's CPU time), the arming
 * and reading of a decision's budgets, and the charged wrappers of the
 * library functions that loop in C. It must never let work happen before it
 * is charged, nor raise where a yield ends the decision.
 */
#include "state.h"

#include <lauxlib.h>
#include <limits.h>
#include <lua.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "clock.h"
#include "config.h"
#include "pmatch.h"

/* ---------------------------------------------------------------- budget */

/* The time budget is the decision's own CPU time: a busy machine must not turn
 * a healthy policy into a policy_error (or refuse a reload whose tests merely
 * waited for a core). A policy cannot block, so CPU time bounds its latency.
 * Reading the thread's CPU clock is a system call (no vDSO: about 0.3 to
 * 0.7 us here), the raw monotonic clock is not: a thread cannot use more CPU
 * time than the time that passed, so before wall_deadline the budget cannot
 * be spent and the CPU clock is read only once a decision has run for as
 * long as its budget. */
bool budget_deadline_passed(const struct policy_engine *e)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC_RAW, &now);
	if (clock_before(&now, &e->wall_deadline))
		return false;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
	return !clock_before(&now, &e->deadline);
}

/*
 * The count hook. Once a budget is spent it fires on every instruction and
 * yields, which unwinds through any pcall of the policy back to the engine.
 * Where a yield is impossible (inside a sort comparator, a gsub callback, a
 * metamethod called from C) lua_yield raises instead; that error may be
 * caught, but the next instruction outside such a call yields for good.
 */
void budget_hook(lua_State *L, lua_Debug *ar)
{
	struct policy_engine *e = engine_of(L);

	if (ar->event == LUA_HOOKLINE) {
		if (e->stop == STOP_NONE)
			coverage_record_line(e, L, ar);
		return;
	}
	if (ar->event == LUA_HOOKRET) {
		if (e->stop == STOP_NONE)
			explain_return(e, L, ar);
		return;
	}
	if (e->stop == STOP_NONE) {
		e->steps += e->hook_step;
		if (e->mem_hit)
			e->stop = STOP_MEMORY;
		else if (e->steps > e->max_steps)
			e->stop = STOP_INSTRUCTIONS;
		else if (budget_deadline_passed(e))
			e->stop = STOP_TIME;
		else
			return;
		if (lua_getinfo(L, "Sl", ar) && ar->currentline > 0)
			snprintf(e->where, sizeof(e->where), "%s:%d: ", ar->short_src, ar->currentline);
		lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
	}
	lua_yield(L, 0);
}

/*
 * Sets the deadlines of a decision that starts now with a budget of ms.
 * The CPU clock is a system call that costs about as much as a small
 * decision, so a reading up to ms/100 old (on this thread) stands for the
 * decision's start: the CPU time the thread used since then counts against
 * the decision. The budget may thus be spent up to 1% early, never late: the
 * deadline is reading + ms, and the CPU clock only moves forward.
 */
static atomic_ulong threads_numbered;
static _Thread_local unsigned long thread_number; /* 0 until numbered: never reused */

static void budget_clock(struct policy_engine *e, long ms)
{
	struct timespec now;
	long long age_ns;

	if (!thread_number)
		thread_number = atomic_fetch_add(&threads_numbered, 1) + 1;

	clock_gettime(CLOCK_MONOTONIC_RAW, &now);
	age_ns =
	    (long long)(now.tv_sec - e->wall_ref.tv_sec) * 1000000000LL + (now.tv_nsec - e->wall_ref.tv_nsec);
	if (e->ref_thread != thread_number || age_ns < 0 || age_ns >= (long long)ms * 10000LL) {
		/* Wall clock first: the CPU time used after the CPU clock's
		 * reading is at most the wall time since the earlier wall reading. */
		e->wall_ref = now;
		clock_gettime(CLOCK_THREAD_CPUTIME_ID, &e->cpu_ref);
		e->ref_thread = thread_number;
	}
	e->deadline = clock_add_ms(e->cpu_ref, ms);
	e->wall_deadline = clock_add_ms(e->wall_ref, ms);
}

/* A configuration's policy limits, defaults for those it does not set. */
void budget_limits_of(const struct config *cfg, struct policy_limits *lim)
{
	lim->max_instructions =
	    cfg->policy_max_instructions > 0 ? cfg->policy_max_instructions : POLICY_DEFAULT_MAX_INSTRUCTIONS;
	lim->timeout_ms = cfg->policy_timeout_ms > 0 ? cfg->policy_timeout_ms : POLICY_DEFAULT_TIMEOUT_MS;
	lim->max_memory_bytes = cfg->policy_max_memory_bytes ? cfg->policy_max_memory_bytes
	                                                     : (size_t)POLICY_DEFAULT_MAX_MEMORY_BYTES;
}

void budget_arm(struct policy_engine *e)
{
	long ms;

	if (e->cfg)
		budget_limits_of(e->cfg, &e->lim);
	ms = e->lim.timeout_ms;
	e->steps = 0;
	e->max_steps = e->lim.max_instructions;
	e->hook_step = e->max_steps < HOOK_STEP ? (int)e->max_steps : HOOK_STEP;
	e->stop = STOP_NONE;
	e->where[0] = '\0';
	e->detail[0] = '\0';
	e->unchecked = 0;
	e->mem_hit = false;
	e->log_len = 0;
	e->log[0] = '\0';
	e->log_lines = 0;
	e->loaded_valid = false;
	budget_clock(e, ms);
	if (e->explain)
		explain_begin(e);
	lua_sethook(e->co, budget_hook, budget_mask(e), e->hook_step);
	e->mem_cap = e->mem_used + e->lim.max_memory_bytes;
	e->cap_armed = true;
}

/* Writes the budget error, if any budget was spent; returns true then. clock:
 * whether to look at the clock too (else only at what the hook and the
 * guards noticed). */
bool budget_spent(struct policy_engine *e, bool clock, char *err, size_t errlen)
{
	if (e->stop == STOP_NONE && e->mem_hit)
		e->stop = STOP_MEMORY;
	if (e->stop == STOP_NONE && clock && budget_deadline_passed(e))
		e->stop = STOP_TIME;
	switch (e->stop) {
	case STOP_INSTRUCTIONS:
		snprintf(err, errlen, "%sinstruction budget exceeded (%lld instructions)%s%s", e->where,
		         e->max_steps, e->detail[0] ? ": " : "", e->detail);
		return true;
	case STOP_TIME:
		snprintf(err, errlen, "%stime budget exceeded (%ld ms)%s%s", e->where, e->lim.timeout_ms,
		         e->detail[0] ? ": " : "", e->detail);
		return true;
	case STOP_MEMORY:
		snprintf(err, errlen, "%smemory cap exceeded (%zu bytes)%s%s", e->where,
		         e->lim.max_memory_bytes, e->detail[0] ? ": " : "", e->detail);
		return true;
	case STOP_NONE:
		break;
	}
	return false;
}

/*
 * How every function a policy (or a test file, or the configuration file:
 * policy_sandbox_run) can reach is bounded. "O(1)": constant work, or work
 * bounded by a small constant (a number's digits). "hooked": runs Lua code,
 * which the count hook sees. Lengths are read once; work is charged before
 * it is done; breaches of a hard cap are fatal even when caught.
 *
 * base  assert error getmetatable rawequal select type _VERSION: O(1).
 *       rawlen: O(log n). rawget rawset next: O(1) amortised (hash lookup).
 *       ipairs pairs: O(1) per step; __pairs/__index are hooked.
 *       tostring: O(1), or hooked __tostring. pcall xpcall: hooked (xpcall's
 *       handler runs as plain hooked Lua, see XPCALL_LUA).
 *       tonumber: budget_tonumber, 1 unit per 16 bytes of a string argument.
 *       setmetatable: O(1), no __gc. load: LOAD_MAX bytes, 1 unit per 4.
 *       require: runs a compiled module, hooked. print = broker.log.
 * string  len: O(1). rep: empty result answered at once (no C loop), else
 *       REP_MAX result, charged per 16 bytes and per repetition. byte,
 *       char, utf8.codepoint, utf8.char: ITEMS_MAX values, 1 unit each.
 *       format: estimated result FORMAT_MAX, charged per 16 bytes and per
 *       argument. sub lower upper reverse: 1 unit per 16 bytes. pack
 *       packsize unpack: 1 unit per 4 format bytes + per 16 data bytes
 *       (padding grows a buffer: the memory cap). find match gmatch gsub:
 *       pmatch.c, every matcher step and every byte scanned charged.
 * table  concat unpack: the length read once (one __len call, hooked) and
 *       passed as explicit bounds; ITEMS_MAX elements, charged per element
 *       (and per 16 separator bytes). insert remove sort: a table with a
 *       __len of its own is refused (the real functions read it again), so
 *       the charged raw length is the one used; ITEMS_MAX; sort charges
 *       n log n comparisons, each by the longest string when it compares in
 *       C. move: MOVE_MAX elements, charged per element. pack: O(arguments).
 * math   every function: O(1) (max/min: O(arguments)).
 * utf8   len offset: 1 unit per 16 bytes. codes: O(1) amortised per step.
 *       charpattern: a constant.
 * os     time clock: O(1).
 * broker duration: DURATION_MAX_INPUT bytes. log: LOG_MAX bytes, LOG_LINES
 *       lines per decision. cidr_match: list length read once, ITEMS_MAX,
 *       charged per entry. tiers data: read-only views, O(1) per read.
 * the VM itself  Concatenation and every string result: allocations of
 *       BIG_ALLOC or more look at the clock, none exceeds STRING_MAX or the
 *       memory cap. String comparison (<, <=: strcoll), equality of long
 *       strings, converting a string operand to a number, hashing a long
 *       string key: O(length) inside one instruction, unseen by any hook;
 *       bounded by STRING_MAX and by the finer hook (FINE_STEP) that any
 *       string of BIG_STRING or more switches on (alloc_big_string). Measured: a
 *       50 ms budget ends within 52 ms on every one of these loops
 *       (test_c_escapes_bounded). Arithmetic metamethods of strings are
 *       wrapped by budget_tonumber as well.
 * Not reachable: io, os.execute/getenv/..., debug, coroutine, package,
 *       string.dump, collectgarbage, dofile, loadfile, binary chunks, __gc.
 */

/*
 * Work inside C functions. No hook runs while a library function loops in
 * C, so each one that can do work out of proportion to the instructions
 * that called it is wrapped: the wrapper charges its work (elements touched,
 * 16 bytes copied or compared, one step of pattern matching) to the
 * decision's instruction budget before the call, and looks at the clock
 * every CHECK_EVERY units. A breach sets the host flag first and then
 * raises: a pcall in the policy may catch the error, but the decision is a
 * policy error whatever it returns.
 */

/* Records where (the innermost Lua function) and what stopped the decision. */
static void note_breach(struct policy_engine *e, lua_State *L, const char *what)
{
	lua_Debug ar;

	for (int level = 1; !e->where[0] && level < 8 && lua_getstack(L, level, &ar); level++)
		if (lua_getinfo(L, "Sl", &ar) && ar.currentline > 0)
			snprintf(e->where, sizeof(e->where), "%s:%d: ", ar.short_src, ar.currentline);
	if (!e->detail[0])
		snprintf(e->detail, sizeof(e->detail), "%s", what);
}

/* Charges units of C work; returns 0, or 1 once a budget is spent (the flag
 * is set). */
static int charge_units(lua_State *L, long long units, const char *what)
{
	struct policy_engine *e = engine_of(L);

	if (e->stop != STOP_NONE || e->mem_hit)
		return 1;
	e->steps += units;
	e->unchecked += units;
	if (e->steps > e->max_steps)
		e->stop = STOP_INSTRUCTIONS;
	else if (e->unchecked >= CHECK_EVERY && (e->unchecked = 0, budget_deadline_passed(e)))
		e->stop = STOP_TIME;
	else
		return 0;
	note_breach(e, L, what);
	return 1;
}

/* Charges units, raising once a budget is spent. */
void budget_charge(lua_State *L, long long units, const char *what)
{
	if (charge_units(L, units, what))
		luaL_error(L, "%s: budget exceeded", what);
}

static int pattern_charge(lua_State *L, unsigned long steps)
{
	return charge_units(L, (long long)steps, "string pattern matching");
}

const struct pmatch_budget budget_pattern = {pattern_charge};

/* Calls upvalue 1 (the real function) with every argument, returns all. */
static int pass_on(lua_State *L)
{
	int base = lua_gettop(L);

	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_call(L, base, LUA_MULTRET);
	return lua_gettop(L);
}

/* The count of i..j, 0 when empty. */
static long long span(lua_Integer i, lua_Integer j)
{
	if (j < i)
		return 0;
	if ((lua_Unsigned)j - (lua_Unsigned)i >= (lua_Unsigned)LLONG_MAX / 2)
		return LLONG_MAX / 2;
	return (long long)((lua_Unsigned)j - (lua_Unsigned)i) + 1;
}

/* Refuses a call over ITEMS_MAX elements (fatal), else charges n. */
void budget_charge_items(lua_State *L, long long n, const char *what)
{
	if (n > ITEMS_MAX) {
		struct policy_engine *e = engine_of(L);
		if (e->stop == STOP_NONE)
			e->stop = STOP_INSTRUCTIONS;
		note_breach(e, L, what);
		luaL_error(L, "%s: more than %d elements in one call", what, ITEMS_MAX);
	}
	budget_charge(L, n, what);
}

/* string.rep with a bounded result. Upvalue 1: the real string.rep. */
static int sb_rep(lua_State *L)
{
	size_t l, lsep;
	lua_Integer n;

	luaL_checklstring(L, 1, &l);
	n = luaL_checkinteger(L, 2);
	luaL_optlstring(L, 3, "", &lsep);
	if (l + lsep == 0 || n <= 0) {
		/* Nothing to write: the real function would still loop n times
		 * (string.rep("", 2^40) ran for hours), so answer here. */
		lua_pushliteral(L, "");
		return 1;
	}
	if (n > 0 && (l + lsep) > 0 && (uint64_t)n > (uint64_t)(REP_MAX + lsep) / (l + lsep)) {
		struct policy_engine *e = engine_of(L);
		e->mem_hit = true; /* a bomb: fatal even if the policy catches it */
		note_breach(e, L, "string.rep");
		return luaL_error(L, "string.rep: result larger than %d bytes", REP_MAX);
	}
	if (n > 0 && l + lsep > 0)
		budget_charge(L, (long long)(((uint64_t)n * (l + lsep)) / 16) + n / 16 + 1, "string.rep");
	return pass_on(L);
}

/* table.move touching a bounded range: its loop runs in C, out of reach of
 * the count hook. Upvalue 1: the real table.move. */
static int sb_move(lua_State *L)
{
	lua_Integer f = luaL_checkinteger(L, 2);
	lua_Integer t = luaL_checkinteger(L, 3);

	if (t >= f && (lua_Unsigned)t - (lua_Unsigned)f >= MOVE_MAX) {
		struct policy_engine *e = engine_of(L);
		if (e->stop == STOP_NONE)
			e->stop = STOP_INSTRUCTIONS; /* fatal even if the policy catches it */
		note_breach(e, L, "table.move");
		return luaL_error(L, "table.move: more than %d elements", MOVE_MAX);
	}
	budget_charge(L, span(f, t), "table.move");
	return pass_on(L);
}

/*
 * The length of the list at 1, read once. The real table functions read it
 * again (luaL_len), so a __len answering 0 to the wrapper and 2^40 to the
 * real function got a loop of 2^40 steps in C for free. Where the real
 * function takes explicit bounds (concat, unpack) the wrapper passes the
 * length it charged; where it cannot (insert, remove, sort) a table with a
 * __len of its own is refused, so both reads see the raw length (the
 * sandbox's read-only views have a __len of the engine's: the raw length of
 * their table, the same on every read).
 */
static lua_Integer list_len(lua_State *L, int fixed, const char *what)
{
	if (!fixed && luaL_getmetafield(L, 1, "__len") != LUA_TNIL) {
		lua_CFunction f = lua_tocfunction(L, -1);
		lua_pop(L, 1);
		if (f != view_len && f != view_reqview_len)
			luaL_error(L, "%s: tables with a __len metamethod are not supported in policies",
			           what);
	}
	return luaL_len(L, 1);
}

/* table.concat(list [, sep [, i [, j]]]) */
static int sb_concat(lua_State *L)
{
	size_t lsep = 0;
	lua_Integer i, j;

	luaL_checkany(L, 1);
	luaL_optlstring(L, 2, "", &lsep);
	i = luaL_optinteger(L, 3, 1);
	j = lua_isnoneornil(L, 4) ? list_len(L, 1, "table.concat") : luaL_checkinteger(L, 4);
	budget_charge_items(L, span(i, j), "table.concat");
	budget_charge(L, span(i, j) * (long long)(lsep / 16), "table.concat");
	lua_settop(L, 4);
	lua_pushinteger(L, j);
	lua_replace(L, 4);
	return pass_on(L);
}

/* table.unpack(list [, i [, j]]) */
static int sb_unpack(lua_State *L)
{
	lua_Integer i = luaL_optinteger(L, 2, 1);
	lua_Integer j = lua_isnoneornil(L, 3) ? list_len(L, 1, "table.unpack") : luaL_checkinteger(L, 3);

	budget_charge_items(L, span(i, j), "table.unpack");
	lua_settop(L, 3);
	lua_pushinteger(L, j);
	lua_replace(L, 3);
	return pass_on(L);
}

/* table.sort(list [, comp]): n log n comparisons in C. Without comp, each
 * compares two values in C: strings byte by byte (strcoll), out of the
 * hook's reach, so each comparison is charged by the longest string. */
static int sb_sort(lua_State *L)
{
	lua_Integer n;
	long long cost, per = 1;

	/* Before any raw read: lua_rawgeti on a string crashes the process. */
	luaL_checktype(L, 1, LUA_TTABLE);
	n = list_len(L, 0, "table.sort");
	cost = n;

	budget_charge_items(L, n, "table.sort");
	if (lua_isnoneornil(L, 2)) {
		size_t longest = 0;
		for (lua_Integer k = 1; k <= n; k++) {
			if (lua_rawgeti(L, 1, k) == LUA_TSTRING) {
				size_t l;
				lua_tolstring(L, -1, &l);
				if (l > longest)
					longest = l;
			}
			lua_pop(L, 1);
		}
		per += (long long)(longest / 16);
	}
	for (lua_Integer k = n; k > 1; k >>= 1)
		cost += n;
	if (per > 1 && cost > (LLONG_MAX / 4) / per)
		cost = LLONG_MAX / 4;
	else
		cost *= per;
	budget_charge(L, cost, "table.sort");
	return pass_on(L);
}

/* table.insert and table.remove shift up to #list elements in C. */
static int sb_shift(lua_State *L)
{
	lua_Integer n;

	luaL_checktype(L, 1, LUA_TTABLE); /* what the real functions require */
	n = list_len(L, 0, "table.insert/remove");

	budget_charge_items(L, n < 0 ? 0 : n, "table.insert/remove");
	return pass_on(L);
}

/* tonumber(v [, base]) and the strings' arithmetic metamethods (which
 * convert their string operands): converting a string walks all of it. */
int budget_tonumber(lua_State *L)
{
	long long units = 1;

	for (int i = 1; i <= 2; i++) {
		if (lua_type(L, i) == LUA_TSTRING) {
			size_t l;
			lua_tolstring(L, i, &l);
			units += (long long)(l / 16);
		}
	}
	budget_charge(L, units, "string to number");
	return pass_on(L);
}

/* string.byte(s [, i [, j]]) and utf8.codepoint(s [, i [, j]]): one value
 * per byte on the stack. */
static int sb_bytes(lua_State *L)
{
	size_t l;
	lua_Integer i, j;

	luaL_checklstring(L, 1, &l);
	i = luaL_optinteger(L, 2, 1);
	j = luaL_optinteger(L, 3, i);
	if (i < 0)
		i = (lua_Integer)l + i + 1;
	if (j < 0)
		j = (lua_Integer)l + j + 1;
	budget_charge_items(L, span(i < 1 ? 1 : i, j > (lua_Integer)l ? (lua_Integer)l : j), "string.byte");
	return pass_on(L);
}

/* string.char(...) and utf8.char(...): one step per argument. */
static int sb_chars(lua_State *L)
{
	budget_charge_items(L, lua_gettop(L), "string.char/utf8.char");
	return pass_on(L);
}

/* string.reverse, lower, upper, sub: one step per 16 bytes. */
static int sb_copy(lua_State *L)
{
	size_t l;

	luaL_checklstring(L, 1, &l);
	budget_charge(L, (long long)(l / 16) + 1, "string copy");
	return pass_on(L);
}

/* utf8.len and utf8.offset, which walk their string: one step per 16 bytes. */
static int sb_walk(lua_State *L)
{
	size_t l;

	luaL_checklstring(L, 1, &l);
	budget_charge(L, (long long)(l / 16) + 1, "utf8 walk");
	return pass_on(L);
}

/* string.pack, packsize and unpack: they loop over their format in C (and
 * unpack over its data): one step per 4 format bytes, plus one per 16 data
 * bytes. */
static int sb_pack(lua_State *L)
{
	size_t fl, dl = 0;

	luaL_checklstring(L, 1, &fl);
	if (lua_type(L, 2) == LUA_TSTRING)
		lua_tolstring(L, 2, &dl);
	budget_charge(L, (long long)(fl / 4) + (long long)(dl / 16) + 1, "string.pack/unpack");
	return pass_on(L);
}

/* string.format with an estimated result of at most FORMAT_MAX bytes: a
 * conversion yields at most 99 digits of width and 99 of precision (Lua's
 * own limit) or a few hundred for %f of a huge number; %q at most 4 bytes
 * per byte of its string. */
static int sb_format(lua_State *L)
{
	int n = lua_gettop(L);
	size_t lfmt, est;

	luaL_checklstring(L, 1, &lfmt);
	est = lfmt;
	for (int i = 2; i <= n; i++) {
		size_t l = 0;
		if (lua_type(L, i) == LUA_TSTRING)
			lua_tolstring(L, i, &l);
		est += 4 * l + 512;
	}
	if (est > FORMAT_MAX) {
		struct policy_engine *e = engine_of(L);
		e->mem_hit = true;
		note_breach(e, L, "string.format");
		return luaL_error(L, "string.format: result may be larger than %d bytes", FORMAT_MAX);
	}
	budget_charge_items(L, n, "string.format");
	budget_charge(L, (long long)(est / 16), "string.format");
	return pass_on(L);
}

/* The wrapped library functions (sandbox.c copies them): each called with
 * the real function as upvalue 1. */
const struct budget_wrap budget_string_wraps[] = {
    {"rep", sb_rep},      {"byte", sb_bytes},    {"char", sb_chars},  {"format", sb_format},
    {"reverse", sb_copy}, {"lower", sb_copy},    {"upper", sb_copy},  {"sub", sb_copy},
    {"pack", sb_pack},    {"packsize", sb_pack}, {"unpack", sb_pack}, {NULL, NULL}};
const struct budget_wrap budget_table_wraps[] = {
    {"concat", sb_concat}, {"unpack", sb_unpack}, {"sort", sb_sort}, {"insert", sb_shift},
    {"remove", sb_shift},  {"move", sb_move},     {NULL, NULL}};
const struct budget_wrap budget_utf8_wraps[] = {
    {"char", sb_chars}, {"codepoint", sb_bytes}, {"len", sb_walk}, {"offset", sb_walk}, {NULL, NULL}};
