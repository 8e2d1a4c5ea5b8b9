/*
 * test_policy_brokerlib.c — the broker library (src/policy/brokerlib.c): broker.cidr_match with
 * cidr.h's one rule, broker.log, broker.duration.
 */
#include "policy_fixture.h"

static void test_cidr_match(void **state)
{
	(void)state;
	must_engine(
	    "local m = broker.cidr_match\n"
	    "return function(req)\n"
	    "  assert(m('10.1.2.3', '10.0.0.0/8') and not m('11.1.2.3', '10.0.0.0/8'))\n"
	    "  assert(m('192.168.1.7', '192.168.1.0/25') and not m('192.168.1.200', '192.168.1.0/25'))\n"
	    "  assert(m('10.0.0.1', '10.0.0.1') and m('1.2.3.4', '0.0.0.0/0'))\n"
	    "  assert(m('::ffff:10.1.2.3', '10.0.0.0/8') and m('10.1.2.3', '::ffff:10.0.0.0/104'))\n"
	    "  assert(m('2001:db8::1', '2001:db8::/32') and not m('2001:db9::1', '2001:db8::/32'))\n"
	    "  assert(not m('2001:db8::1', '10.0.0.0/8') and not m('10.0.0.1', '2001:db8::/32'))\n"
	    "  assert(m('10.0.0.1', {'192.168.0.0/16', '10.0.0.0/8'}) and not m('8.8.8.8', {'10.0.0.0/8'}))\n"
	    "  assert(not m('not an ip', '10.0.0.0/8') and not m(nil, '10.0.0.0/8') and not m('', "
	    "'0.0.0.0/0'))\n"
	    "  assert(not m('10.0.0.1 ', '10.0.0.0/8') and not m('10.0.0.1/8', '10.0.0.0/8'))\n"
	    "  for _, bad in ipairs({'10.0.0.0/33', '10.0.0.0/', '10.0.0/8', 'x', '10.0.0.0/8x', '::/129', "
	    "'10.0.0.0/-1'}) do\n"
	    "    assert(not pcall(m, '10.0.0.1', bad), bad)\n"
	    "  end\n"
	    "  assert(not pcall(m, '10.0.0.1', 8))\n"
	    "  return {allow = m(req.client.ip, '10.0.0.0/8'), tier='inbox'}\n"
	    "end\n",
	    NULL);
	if (decide(0) != 0)
		fail_msg("%s", fx.err);
	assert_true(fx.d.allow);
	policy_engine_free(fx.e);
}

/* broker.cidr_match reads a CIDR by trusted_proxy.from's one rule (cidr.h):
 * a prefix with a leading zero or a network with host bits set is a
 * mistake in the policy, raised to it: uncaught, a policy error. */
static void test_cidr_match_one_rule(void **state)
{
	(void)state;
	must_engine("local m = broker.cidr_match\n"
	            "return function(req)\n"
	            "  for _, bad in ipairs({'10.1.2.3/08', '10.1.2.3/8', '10.0.0.0/08', '2001:db8::1/32', "
	            "'10.0.0.0/8\\0'}) do\n"
	            "    assert(not pcall(m, '10.0.0.1', bad), bad)\n"
	            "    assert(not pcall(m, '10.0.0.1', {'192.168.0.0/16', bad}), bad)\n"
	            "  end\n"
	            "  assert(m('10.1.2.3', '10.0.0.0/8') and m('10.1.2.3', '10.1.2.3/32'))\n"
	            "  return {allow=true, tier='inbox'}\n"
	            "end\n",
	            NULL);
	if (decide(0) != 0)
		fail_msg("%s", fx.err);
	policy_engine_free(fx.e);
	assert_policy_error("return function(req)\n"
	                    "  broker.cidr_match('10.1.2.3', '10.1.2.3/08')\n"
	                    "  return {allow=true, tier='inbox'}\n"
	                    "end\n",
	                    "is not a CIDR");
}

/* broker.log lines: one per call, bounded, reset per decision. */
static void test_log_lines(void **state)
{
	(void)state;
	must_engine("return function(req)\n"
	            "  broker.log('hello', 42, true)\n"
	            "  print('two\\nlines')\n"
	            "  if req.body.many then for i = 1, 100 do broker.log(('x'):rep(100)) end end\n"
	            "  return {allow=true, tier='inbox'}\n"
	            "end\n",
	            NULL);
	assert_int_equal(decide(0), 0);
	assert_string_equal(policy_decision_log(fx.e), "hello 42 true\ntwo lines\n");
	assert_int_equal(decide_full(0, "{\"many\":true}", NULL, true, "alice"), 0);
	assert_true(strlen(policy_decision_log(fx.e)) <= 2048);
	assert_int_equal(decide(1), 0);
	assert_string_equal(policy_decision_log(fx.e), "");
	policy_engine_free(fx.e);
}

/* broker.duration takes whole seconds as well as a duration string
 * (clients send expires_in both ways), with the same bounds. */
static void test_duration_accepts_seconds(void **state)
{
	(void)state;
	must_engine("return function(req)\n"
	            "  local d = broker.duration\n"
	            "  assert(d(3600) == 3600 and math.type(d(3600)) == 'integer')\n"
	            "  assert(d(900.0) == 900 and math.type(d(900.0)) == 'integer')\n"
	            "  assert(d('1h') == 3600 and d('90m') == 5400)\n"
	            "  assert(d(req.body.expires_in) == 600)\n"
	            "  for _, bad in ipairs({ 0, -5, 1.5, 315576001, '3600', 'soon', true }) do\n"
	            "    assert(not pcall(d, bad), tostring(bad))\n"
	            "  end\n"
	            "  assert(d(315576000) == 315576000)\n"
	            "  return {allow=true, tier='inbox', expires_in=d(req.body.expires_in)}\n"
	            "end\n",
	            NULL);
	if (decide_full(0, "{\"user_id\":\"alice\",\"expires_in\":600}", NULL, true, "alice") != 0)
		fail_msg("%s", fx.err);
	assert_true(fx.d.allow);
	assert_int_equal(fx.d.expires_s, 600);
	policy_engine_free(fx.e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cidr_match),
	    cmocka_unit_test(test_cidr_match_one_rule),
	    cmocka_unit_test(test_log_lines),
	    cmocka_unit_test(test_duration_accepts_seconds),
	};
	return cmocka_run_group_tests_name("policy_brokerlib", tests, NULL, NULL);
}
