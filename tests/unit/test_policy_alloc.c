/*
 * test_policy_alloc.c — the engine's allocator (src/policy/alloc.c): memory given back after
 * a decision, small blocks reused.
 */
#include "policy_fixture.h"

/* Memory a decision leaves behind does not eat into the next one's cap. */
static void test_memory_reclaimed(void **state)
{
	(void)state;
	must_engine("return function(req)\n"
	            "  local t = {}\n"
	            "  for i = 1, 2000 do t[i] = ('y'):rep(200) .. i end\n"
	            "  return {allow=true, tier='inbox'}\n"
	            "end\n",
	            NULL);
	for (int i = 0; i < 50; i++)
		assert_int_equal(decide(0), 0);
	policy_engine_free(fx.e);
}

/* The engine's free lists of small blocks: decisions that allocate blocks of
 * every small size, grow them across sizes and free them keep memory flat,
 * and the memory cap counts what Lua asked for, no more and no less: a
 * decision just under it passes every time, one over it never does. */
static void test_small_blocks_reused(void **state)
{
	int kb;

	(void)state;
	must_engine("return function(req)\n"
	            "  local t, s = {}, ''\n"
	            "  for i = 1, 300 do\n"
	            "    t[i] = {i, tostring(i), ('z'):rep(i % 97)}\n"
	            "    if i % 30 == 0 then s = s .. ('q'):rep(i) end\n"
	            "    local f = function() return i end\n"
	            "  end\n"
	            "  local u = {}\n"
	            "  for i = 1, 100 do u['k' .. i] = i end\n"
	            "  for i = 1, 100, 2 do u['k' .. i] = nil end\n"
	            "  return {allow=#t == 300 and #s > 0, tier='inbox'}\n"
	            "end\n",
	            "return function(req)\n"
	            "  local s = ('x'):rep(tonumber(req.body.n))\n"
	            "  return {allow=true, tier='inbox'}\n"
	            "end\n");
	for (int i = 0; i < 20; i++)
		assert_int_equal(decide(0), 0);
	kb = engine_kb();
	for (int i = 0; i < 300; i++) {
		assert_int_equal(decide(0), 0);
		assert_true(fx.d.allow);
	}
	assert_true(engine_kb() < kb + 64);
	/* The cap is 1 MiB; string.rep of n bytes holds about 2n at its peak
	 * (its buffer and the string). */
	for (int i = 0; i < 50; i++) {
		if (decide_full(1, "{\"n\":\"450000\"}", NULL, true, "alice") != 0)
			fail_msg("%d: %s", i, fx.err);
		assert_int_equal(decide(0), 0);
	}
	assert_int_equal(decide_full(1, "{\"n\":\"600000\"}", NULL, true, "alice"), -1);
	assert_err_has("memory cap exceeded");
	assert_int_equal(decide_full(1, "{\"n\":\"450000\"}", NULL, true, "alice"), 0);
	policy_engine_free(fx.e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_memory_reclaimed),
	    cmocka_unit_test(test_small_blocks_reused),
	};
	return cmocka_run_group_tests_name("policy_alloc", tests, NULL, NULL);
}
