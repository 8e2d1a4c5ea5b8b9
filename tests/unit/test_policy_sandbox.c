/*
 * test_policy_sandbox.c — the sandbox (src/policy/sandbox.c): broker.data and require, the
 * sealed string metatable, what a policy cannot reach or set.
 */
#include "policy_fixture.h"

/* broker.data is the tenant's own, read-only; require finds modules beside
 * the policy, runs them fresh in every decision, and nothing else. */
static void test_data_and_require(void **state)
{
	static struct policy_module mods[] = {
	    {"helpers", "/policies/helpers.lua",
	     "local n = 0\n"
	     "local M = {}\n"
	     "function M.bump() n = n + 1 return n end\n"
	     "function M.admins() return broker.data and broker.data.admins end\n"
	     "return M\n",
	     0},
	    {"loop", "/policies/loop.lua", "return require('loop')\n", 0},
	    {"bad", "/policies/bad.lua", "x = 1\nreturn 1\n", 0},
	};
	static const char data[] = "{\"admins\": [\"root\", \"alice\"], \"limits\": {\"max\": 3}}";

	(void)state;
	for (size_t i = 0; i < 3; i++)
		mods[i].len = strlen(mods[i].text);
	memset(&fx, 0, sizeof(fx));
	fx.t[0].name = "acme";
	fx.t[0].policy_path = "/policies/acme.lua";
	fx.t[0].policy_text = "local h = require('helpers')\n"
	                      "return function(req)\n"
	                      "  assert(require('helpers') == h)\n"
	                      "  assert(broker.data.limits.max == 3 and #broker.data.admins == 2)\n"
	                      "  assert(not pcall(function() broker.data.limits.max = 9 end))\n"
	                      "  assert(not pcall(function() broker.data.x = 1 end))\n"
	                      "  assert(not pcall(require, 'loop'))\n"
	                      "  assert(not pcall(require, 'bad'))\n"
	                      "  assert(not pcall(require, 'nope'))\n"
	                      "  assert(h.admins()[2] == 'alice')\n"
	                      "  return {allow=true, tier='inbox', reason=tostring(h.bump())}\n"
	                      "end\n";
	fx.t[0].policy_len = strlen(fx.t[0].policy_text);
	fx.t[0].modules = mods;
	fx.t[0].n_modules = 3;
	fx.t[0].data_text = (char *)data;
	fx.t[0].data_len = strlen(data);
	fx.t[1].name = "other";
	fx.t[1].policy_path = "/policies/other.lua";
	fx.t[1].policy_text = "return function(req)\n"
	                      "  assert(broker.data == nil and not pcall(require, 'helpers'))\n"
	                      "  return {allow=true, tier='inbox'}\n"
	                      "end\n";
	fx.t[1].policy_len = strlen(fx.t[1].policy_text);
	fx.cfg.tenants = fx.t;
	fx.cfg.n_tenants = 2;
	fx.cfg.policy_max_instructions = 1000000;
	fx.cfg.policy_max_memory_bytes = 1 << 20;
	fx.cfg.policy_timeout_ms = 50;
	fx.e = policy_engine_new(&fx.cfg, fx.err, sizeof(fx.err));
	if (!fx.e)
		fail_msg("%s", fx.err);
	for (int i = 0; i < 3; i++) {
		if (decide(0) != 0)
			fail_msg("%s", fx.err);
		assert_string_equal(fx.d.reason, "1"); /* the module's state is fresh each time */
		if (decide(1) != 0)
			fail_msg("%s", fx.err);
	}
	policy_engine_free(fx.e);

	/* Bad data is an engine error naming the tenant. */
	fx.t[0].data_text = "{nope";
	fx.t[0].data_len = 5;
	assert_null(policy_engine_new(&fx.cfg, fx.err, sizeof(fx.err)));
	assert_err_has("not valid JSON");
}

static void test_string_metatable_protected(void **state)
{
	static const char *const policies[] = {
	    "return function(req) getmetatable('').__index = {} end",
	    "return function(req) getmetatable('').__index.upper = function() return 'x' end end",
	    "return function(req) string.upper = function() return 'x' end end",
	    "return function(req) rawset(string, 'upper', function() return 'x' end) end",
	    "return function(req) setmetatable(string, {}) end",
	    "return function(req) ('').upper = 1 end",
	    "return function(req) table.insert = print end",
	};
	static const char *const check = "return function(req)\n"
	                                 "  return {allow=true, tier='inbox', reason=('ab'):upper() .. "
	                                 "string.upper('c') .. tostring(getmetatable(''))}\n"
	                                 "end\n";

	(void)state;
	for (size_t i = 0; i < sizeof(policies) / sizeof(policies[0]); i++) {
		must_engine(policies[i], check);
		if (decide(0) != -1)
			fail_msg("accepted: %s", policies[i]);
		assert_int_equal(decide(1), 0);
		assert_string_equal(fx.d.reason, "ABCfalse");
		policy_engine_free(fx.e);
	}
}

static void test_unavailable(void **state)
{
	(void)state;
	must_engine(
	    "return function(req)\n"
	    "  assert(io == nil and debug == nil and package == nil)\n"
	    "  assert(not pcall(require, 'os') and not pcall(require, '../acme') and not pcall(require, "
	    "'/etc/x'))\n"
	    "  assert(not pcall(require, 'string') and not pcall(require, 'a.b'))\n"
	    "  assert(dofile == nil and loadfile == nil and collectgarbage == nil and coroutine == nil)\n"
	    "  assert(_G == nil and string.dump == nil and ('').dump == nil and math.randomseed == nil)\n"
	    "  assert(os.execute == nil and os.getenv == nil and os.exit == nil and os.remove == nil)\n"
	    "  assert(type(os.time()) == 'number' and type(os.clock()) == 'number')\n"
	    "  local f, e = load(string.char(27) .. 'LuaT' .. string.char(0, 25, 147, 13, 10, 26, 10))\n"
	    "  assert(f == nil and e:find('binary'), e)\n"
	    "  f, e = load(string.char(27) .. 'Lua', 'x', 'b')\n"
	    "  assert(f == nil and e:find('binary'), e)\n"
	    "  assert(load('return 1 + 1')() == 2)\n"
	    "  assert(not pcall(load('y = 1')))\n"
	    "  assert(load('return x', 'c', 't', {x = 3})() == 3)\n"
	    "  assert(not pcall(load, function() return nil end))\n"
	    "  assert(not pcall(setmetatable, {}, {__gc = function() end}))\n"
	    "  assert(select(2, pcall(error, 'x', 0)) == 'x')\n"
	    "  assert(broker.duration('1d') == 86400 and not pcall(broker.duration, '3600'))\n"
	    "  assert(broker.tiers.inbox[3] == 'read:brands' and #broker.tiers.push == 7)\n"
	    "  assert(not pcall(function() broker.tiers.inbox[1] = 'x' end))\n"
	    "  assert(not pcall(function() broker.tiers = {} end))\n"
	    "  assert(not pcall(rawset, _ENV, 'x', 1))\n"
	    "  return {allow=true, tier='inbox'}\n"
	    "end\n",
	    NULL);
	if (decide(0) != 0)
		fail_msg("%s", fx.err);
	policy_engine_free(fx.e);
}

static void test_globals_cannot_be_set(void **state)
{
	(void)state;
	/* At the top of the chunk: caught when the engine is built. */
	assert_null(engine_for("x = 1\nreturn function(req) return {allow=true, tier='inbox'} end", NULL));
	assert_non_null(strstr(fx.err, "acme.lua:1: cannot set global 'x'"));
	assert_null(engine_for("function helper() end\nreturn function(req) end", NULL));
	assert_non_null(strstr(fx.err, "globals cannot be created"));
	/* In decide. */
	assert_policy_error("return function(req)\n  count = (count or 0) + 1\nend\n",
	                    "acme.lua:2: cannot set global 'count': globals cannot be created");
	assert_policy_error("return function(req) _ENV.x = 1 end", "cannot set global 'x'");
	must_engine("return function(req)\n"
	            "  local ok = pcall(rawset, _ENV, 'x', 1)\n"
	            "  return {allow=false, reason=tostring(ok) .. ' ' .. tostring(x)}\n"
	            "end\n",
	            NULL);
	assert_int_equal(decide(0), 0);
	assert_string_equal(fx.d.reason, "false nil");
	policy_engine_free(fx.e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_data_and_require),
	    cmocka_unit_test(test_string_metatable_protected),
	    cmocka_unit_test(test_unavailable),
	    cmocka_unit_test(test_globals_cannot_be_set),
	};
	return cmocka_run_group_tests_name("policy_sandbox", tests, NULL, NULL);
}
