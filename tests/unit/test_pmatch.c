/*
 * test_pmatch.c — the budgeted pattern matcher: the same answers as Lua's
 * own string library on a corpus of patterns (differential), the same
 * errors, and a bounded amount of work on patterns that backtrack.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "pmatch.h"

static unsigned long spent, limit;

static int count_steps(lua_State *L, unsigned long steps)
{
	(void)L;
	spent += steps;
	return spent > limit;
}

static const struct pmatch_budget budget = {count_steps};

/* A state with the real string library and ours as the global pm. */
static lua_State *state(void)
{
	lua_State *L = luaL_newstate();

	luaL_openlibs(L);
	lua_newtable(L);
	pmatch_register(L, -1, &budget);
	lua_setglobal(L, "pm");
	spent = 0;
	limit = 100000000;
	return L;
}

static void run(lua_State *L, const char *code)
{
	if (luaL_dostring(L, code) != LUA_OK)
		fail_msg("%s", lua_tostring(L, -1));
}

/* Every function on every subject and pattern of the corpus: the results
 * (or the error messages, without position) must be Lua's. */
static const char DIFF[] =
    "local subjects = { '', 'hello world', 'alice@example.com', '  x  ', 'a.b.c', '(foo(bar))baz',\n"
    "  'THE (quick) fox', 'aaa', 'key=val; k2=v2', '10.0.0.1', 'x\\0y', 'abcabcabc', 'f(a,b) g()' }\n"
    "local patterns = { '', 'o', 'l+', 'l*', 'l-', 'l?', '^h', 'd$', '^$', '.', '%a+', '%A+', '%d+',\n"
    "  '%s*(.-)%s*$', '(%w+)@(%w+)%.com', '()a()', '%b()', '%f[%w]%w+', '[%a.]+', '[^%s]+', '[a-c]+',\n"
    "  '(a)(b)(c)', '(a*(.)%2)', '%.', '[]]', '[^]]', '(%w+)=(%w+)', '%x+', '%p', '%u%l*', '$^', 'a-b',\n"
    "  '^(%d+)%.(%d+)%.(%d+)%.(%d+)$', '%z', '[%]]', '.-b', '(.)%1', 'x%zy', '^', '()', 'b*', '%f[%z]' }\n"
    "local bad = { '%', '[a', '(', ')', '%1', '%b', '%fx', '(()', 'a%', '[%' }\n"
    "local function pack(ok, ...) if ok then return { n = select('#', ...), ... } end\n"
    "  return { err = (tostring(...):gsub('^.-:%d+: ', '')) } end\n"
    "local function same(a, b, what)\n"
    "  if a.err or b.err then\n"
    "    if a.err ~= b.err then error(what .. ': ' .. tostring(a.err) .. ' vs ' .. tostring(b.err)) end\n"
    "    return\n"
    "  end\n"
    "  if a.n ~= b.n then error(what .. ': ' .. a.n .. ' results vs ' .. b.n) end\n"
    "  for i = 1, a.n do if a[i] ~= b[i] then error(what .. ': result ' .. i .. ' ' .. tostring(a[i]) ..\n"
    "    ' vs ' .. tostring(b[i])) end end\n"
    "end\n"
    "local all = {} for _, p in ipairs(patterns) do all[#all + 1] = p end\n"
    "for _, p in ipairs(bad) do all[#all + 1] = p end\n"
    "for _, s in ipairs(subjects) do for _, p in ipairs(all) do\n"
    "  local w = string.format('%q %q', s, p)\n"
    "  for _, init in ipairs({ 1, 2, -3, 100, 0 }) do\n"
    "    same(pack(pcall(string.find, s, p, init)), pack(pcall(pm.find, s, p, init)), 'find ' .. w)\n"
    "    same(pack(pcall(string.find, s, p, init, true)), pack(pcall(pm.find, s, p, init, true)), 'plain ' "
    ".. w)\n"
    "    same(pack(pcall(string.match, s, p, init)), pack(pcall(pm.match, s, p, init)), 'match ' .. w)\n"
    "  end\n"
    "  local function collect(f, ...) local out = {} local ok, e = pcall(function(...)\n"
    "    for a, b, c in f(...) do out[#out + 1] = tostring(a) .. '|' .. tostring(b) .. '|' .. tostring(c) "
    "end\n"
    "    end, ...) if not ok then return { err = (tostring(e):gsub('^.-:%d+: ', '')) } end\n"
    "    return { n = 1, table.concat(out, ',') } end\n"
    "  same(collect(string.gmatch, s, p), collect(pm.gmatch, s, p), 'gmatch ' .. w)\n"
    "  same(collect(string.gmatch, s, p, 3), collect(pm.gmatch, s, p, 3), 'gmatch init ' .. w)\n"
    "  for _, r in ipairs({ '<%0>', '%1-%1', '%%', '', 'x%2' }) do\n"
    "    same(pack(pcall(string.gsub, s, p, r)), pack(pcall(pm.gsub, s, p, r)), 'gsub ' .. w .. ' ' .. r)\n"
    "    same(pack(pcall(string.gsub, s, p, r, 1)), pack(pcall(pm.gsub, s, p, r, 1)), 'gsub1 ' .. w)\n"
    "  end\n"
    "  local f = function(a, b) if a == 'l' then return false end return (a or '') .. '!' end\n"
    "  same(pack(pcall(string.gsub, s, p, f)), pack(pcall(pm.gsub, s, p, f)), 'gsub fn ' .. w)\n"
    "  local t = { o = 'O', hello = 1, a = true }\n"
    "  same(pack(pcall(string.gsub, s, p, t)), pack(pcall(pm.gsub, s, p, t)), 'gsub table ' .. w)\n"
    "end end\n"
    "same(pack(pcall(string.gsub, 'abc', '%w', '%9')), pack(pcall(pm.gsub, 'abc', '%w', '%9')), 'cap')\n"
    "same(pack(pcall(string.gsub, 'abc', '%w', '%x')), pack(pcall(pm.gsub, 'abc', '%w', '%x')), 'esc')\n"
    "same(pack(pcall(string.gsub, 'abc', '%w', {b = {}})), pack(pcall(pm.gsub, 'abc', '%w', {b = {}})), "
    "'v')\n"
    "same(pack(pcall(string.find, 'abc', ('(a)'):rep(33))), pack(pcall(pm.find, 'abc', ('(a)'):rep(33))), "
    "'c')\n"
    "same(pack(pcall(string.find, ('a'):rep(300), ('a?'):rep(300))),\n"
    "     pack(pcall(pm.find, ('a'):rep(300), ('a?'):rep(300))), 'deep')\n";

static void test_same_as_lua(void **state_)
{
	lua_State *L = state();

	(void)state_;
	run(L, DIFF);
	lua_close(L);
}

static double ms_since(const struct timespec *t0)
{
	struct timespec t1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/* The pattern of the field notes stops once its budget is spent, fast. */
static void test_backtracking_is_bounded(void **state_)
{
	static const char *const bombs[] = {
	    "return pm.find(('a'):rep(5000), ('a*'):rep(30) .. 'b')",
	    "return pm.match(('a'):rep(5000), ('.-'):rep(20) .. 'b')",
	    "return pm.gsub(('a'):rep(5000), ('a?'):rep(50) .. 'b', '')",
	    "for x in pm.gmatch(('a'):rep(5000), ('a*'):rep(10) .. 'b') do end",
	    "return pm.find(('a'):rep(100000), ('a'):rep(50000) .. 'b', 1, true)",
	    "return pm.find(('(('):rep(50000), '%b()')",
	};

	(void)state_;
	for (size_t i = 0; i < sizeof(bombs) / sizeof(bombs[0]); i++) {
		lua_State *L = state();
		struct timespec t0;
		limit = 1000000;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		if (luaL_dostring(L, bombs[i]) == LUA_OK)
			fail_msg("finished: %s", bombs[i]);
		if (!strstr(lua_tostring(L, -1), "pattern matching budget exceeded"))
			fail_msg("%s: %s", bombs[i], lua_tostring(L, -1));
		if (ms_since(&t0) > 100)
			fail_msg("%s took %.1f ms", bombs[i], ms_since(&t0));
		lua_close(L);
	}
}

/* Ordinary work costs about what it does. */
static void test_ordinary_work_is_cheap(void **state_)
{
	lua_State *L = state();

	(void)state_;
	run(L, "assert(pm.match('alice@example.com', '^[%w.]+@([%w.]+)$') == 'example.com')");
	assert_true(spent < 100);
	spent = 0;
	run(L, "assert(pm.find(('x'):rep(16384) .. '@', '@', 1, true) == 16385)");
	assert_true(spent < 2000);
	lua_close(L);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_same_as_lua),
	    cmocka_unit_test(test_backtracking_is_bounded),
	    cmocka_unit_test(test_ordinary_work_is_cheap),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
