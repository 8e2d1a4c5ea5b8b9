/*
 * test_policy.c — the policy engine (src/policy/engine.c, decision.c): decisions and
 * their type check, errors that name their line, engines that refuse to
 * build.
 */
#include "policy_fixture.h"

static void test_allow_tier(void **state)
{
	(void)state;
	must_engine("return function(req)\n"
	            "  return {allow=true, tier='preferences', expires_in='2h', reason='own inbox'}\n"
	            "end\n",
	            NULL);
	assert_int_equal(decide(0), 0);
	assert_true(fx.d.allow);
	assert_int_equal(fx.d.n_scopes, 5);
	assert_string_equal(fx.d.scopes[0], "inbox:read:messages");
	assert_string_equal(fx.d.scopes[4], "write:preferences");
	assert_int_equal(fx.d.expires_s, 7200);
	assert_string_equal(fx.d.reason, "own inbox");
	policy_engine_free(fx.e);
}

static void test_allow_scopes(void **state)
{
	(void)state;
	must_engine("return function(req)\n"
	            "  return {allow=true, scopes={'inbox:read:messages', 'read:brands'}, expires_in=600}\n"
	            "end\n",
	            NULL);
	assert_int_equal(decide(0), 0);
	assert_true(fx.d.allow);
	assert_int_equal(fx.d.n_scopes, 2);
	assert_string_equal(fx.d.scopes[0], "inbox:read:messages");
	assert_string_equal(fx.d.scopes[1], "read:brands");
	assert_int_equal(fx.d.expires_s, 600);
	assert_string_equal(fx.d.reason, "");
	policy_engine_free(fx.e);
}

/* Read-only lists (the request's, broker.tiers') are valid scope lists. */
static void test_allow_readonly_lists(void **state)
{
	(void)state;
	must_engine(
	    "return function(req) return {allow=true, scopes=req.scopes} end",
	    "return function(req) return {allow=true, scopes=broker.tiers.push, expires_in=3600.0} end");
	assert_int_equal(
	    decide_full(0, "{\"user_id\":\"alice\",\"scopes\":[\"read:brands\"]}", NULL, true, "alice"), 0);
	assert_int_equal(fx.d.n_scopes, 1);
	assert_string_equal(fx.d.scopes[0], "read:brands");
	assert_int_equal(decide(1), 0);
	assert_int_equal(fx.d.n_scopes, 7);
	assert_string_equal(fx.d.scopes[6], "write:user-tokens");
	assert_int_equal(fx.d.expires_s, 3600);
	policy_engine_free(fx.e);
}

static void test_deny_reason(void **state)
{
	(void)state;
	must_engine("return function(req) return {allow=false, reason='not yours'} end", NULL);
	assert_int_equal(decide(0), 0);
	assert_false(fx.d.allow);
	assert_int_equal(fx.d.n_scopes, 0);
	assert_string_equal(fx.d.reason, "not yours");
	policy_engine_free(fx.e);
}

static void test_reason_truncated(void **state)
{
	(void)state;
	must_engine("return function(req) return {allow=false, reason=('r'):rep(1000)} end", NULL);
	assert_int_equal(decide(0), 0);
	assert_int_equal(strlen(fx.d.reason), 255);
	policy_engine_free(fx.e);
}

/* Whether s is well-formed UTF-8 (RFC 3629), for the tests. */
static bool valid_utf8(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	while (*p) {
		int n = *p < 0x80                  ? 1
		        : *p >= 0xc2 && *p <= 0xdf ? 2
		        : *p >= 0xe0 && *p <= 0xef ? 3
		        : *p >= 0xf0 && *p <= 0xf4 ? 4
		                                   : 0;
		if (!n)
			return false;
		for (int i = 1; i < n; i++)
			if ((p[i] & 0xc0) != 0x80)
				return false;
		p += n;
	}
	return true;
}

/* reason and broker.log reach JSON log lines and 403 bodies: valid UTF-8,
 * never cut inside a character, invalid bytes as U+FFFD (issue 10, L2). */
static void test_reason_and_log_are_utf8(void **state)
{
	(void)state;
	must_engine("return function(req)\n"
	            "  broker.log('\\255\\254', 'ok\\195', ('\\195\\169'):rep(2000))\n"
	            "  return {allow=false, reason=('\\195\\169'):rep(200)}\n"
	            "end\n",
	            "return function(req) return {allow=false, reason='a\\255b\\237\\160\\128c'} end\n");
	assert_int_equal(decide(0), 0);
	assert_int_equal(strlen(fx.d.reason), 254); /* 127 whole characters of 2 bytes */
	assert_true(valid_utf8(fx.d.reason));
	assert_true(valid_utf8(policy_decision_log(fx.e)));
	assert_non_null(
	    strstr(policy_decision_log(fx.e), "\xef\xbf\xbd\xef\xbf\xbd ok\xef\xbf\xbd \xc3\xa9"));
	assert_int_equal(decide(1), 0);
	assert_string_equal(fx.d.reason, "a\xef\xbf\xbd"
	                                 "b\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
	                                 "c");
	policy_engine_free(fx.e);
}

static void test_malformed_decisions(void **state)
{
	static const struct {
		const char *ret, *needle;
	} cases[] = {
	    {"42", "must return a table"},
	    {"nil", "must return a table"},
	    {"{tier='inbox'}", "allow must be true or false"},
	    {"{allow='yes', tier='inbox'}", "allow must be true or false"},
	    {"{allow=1, tier='inbox'}", "allow must be true or false"},
	    {"{allow=true}", "exactly one of scopes and tier"},
	    {"{allow=true, tier='inbox', scopes={'read:brands'}}", "exactly one of scopes and tier"},
	    {"{allow=true, tier='admin'}", "unknown tier"},
	    {"{allow=true, tier=1}", "tier must be a string"},
	    {"{allow=true, scopes={'read:brands', 7}}", "must be strings"},
	    {"{allow=true, scopes='read:brands'}", "list of strings"},
	    {"{allow=true, scopes={}}", "1 to 32"},
	    {"{allow=true, scopes={'a', nil, 'b'}}", "without holes"},
	    {"{allow=true, scopes={'a', x='b'}}", "without holes"},
	    {"{allow=true, scopes={''}}", "empty"},
	    {"{allow=true, scopes={'a\\0b'}}", "NUL"},
	    {"(function() local s = {} for i = 1, 33 do s[i] = 'read:brands' end "
	     "return {allow=true, scopes=s} end)()",
	     "more than 32"},
	    {"{allow=true, tier='inbox', expires_in=-5}", "positive"},
	    {"{allow=true, tier='inbox', expires_in=0}", "positive"},
	    {"{allow=true, tier='inbox', expires_in=1.5}", "whole number"},
	    {"{allow=true, tier='inbox', expires_in='3600'}", "not a duration with a unit"},
	    {"{allow=true, tier='inbox', expires_in='soon'}", "not a duration"},
	    {"{allow=true, tier='inbox', expires_in={}}", "expires_in must be"},
	    {"{allow=true, tier='inbox', reason=false}", "reason must be a string"},
	    {"{alow=true, tier='inbox'}", "unknown field 'alow'"},
	    {"{allow=false, why='no'}", "unknown field 'why'"},
	    {"{allow=true, tier='inbox', [1]=2}", "unknown field of type number"},
	};
	char policy[512];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(policy, sizeof(policy), "return function(req)\n  return %s\nend\n", cases[i].ret);
		must_engine(policy, NULL);
		if (decide(0) != -1)
			fail_msg("accepted: %s", cases[i].ret);
		assert_false(fx.d.allow);
		assert_int_equal(fx.d.n_scopes, 0);
		assert_err_has("/policies/acme.lua: invalid decision: ");
		assert_err_has(cases[i].needle);
		policy_engine_free(fx.e);
	}
}

/* A deny may still name what it would have granted. */
static void test_deny_ignores_grant_fields(void **state)
{
	(void)state;
	must_engine(
	    "return function(req) return {allow=false, tier='inbox', scopes={'x'}, expires_in='1h'} end",
	    NULL);
	assert_int_equal(decide(0), 0);
	assert_false(fx.d.allow);
	assert_int_equal(fx.d.n_scopes, 0);
	assert_int_equal(fx.d.expires_s, 0);
	policy_engine_free(fx.e);
}

static void test_error_names_line(void **state)
{
	(void)state;
	must_engine("return function(req)\n"
	            "  local x = 1\n"
	            "  error('boom')\n"
	            "end\n",
	            NULL);
	assert_int_equal(decide(0), -1);
	assert_err_has("acme.lua:3: boom");
	assert_int_equal(decide(0), -1);
	assert_int_equal(decide(1), 0);
	policy_engine_free(fx.e);

	must_engine("return function(req) return req.nope.deeper end", NULL);
	assert_int_equal(decide(0), -1);
	assert_err_has("acme.lua:1: attempt to index a nil value");
	policy_engine_free(fx.e);

	must_engine("return function(req) error({code = 1}) end", NULL);
	assert_int_equal(decide(0), -1);
	assert_err_has("non-string error (table)");
	policy_engine_free(fx.e);
}

static void test_engine_new_errors(void **state)
{
	(void)state;
	assert_null(engine_for("return function(req)\n  return {allow=\nend\n", NULL));
	assert_non_null(strstr(fx.err, "acme.lua:3:"));
	assert_null(engine_for("return 42", NULL));
	assert_non_null(strstr(fx.err, "must return a function decide(req), got number"));
	assert_null(engine_for(ALLOW_INBOX, "error('at load')"));
	assert_non_null(strstr(fx.err, "other.lua:1: at load"));
	assert_null(engine_for("while true do end", NULL));
	assert_non_null(strstr(fx.err, "budget exceeded"));
	assert_null(engine_for("\x1bLua\x54\x00", NULL));
	assert_non_null(strstr(fx.err, "binary"));

	memset(&fx, 0, sizeof(fx));
	fx.t[0].name = "acme";
	fx.t[0].policy_path = "/p.lua";
	fx.t[0].policy_text = (char *)ALLOW_INBOX;
	fx.t[0].policy_len = strlen(ALLOW_INBOX);
	fx.cfg.tenants = fx.t;
	fx.cfg.n_tenants = 1;
	fx.cfg.policy_max_instructions = 1000000;
	fx.cfg.policy_max_memory_bytes = 1 << 20;
	fx.cfg.policy_timeout_ms = 50;
	{
		struct policy_engine *e = policy_engine_new(&fx.cfg, fx.err, sizeof(fx.err));
		assert_non_null(e);
		policy_engine_free(e);
	}
	fx.t[0].policy_text = (char *)"return function(";
	fx.t[0].policy_len = strlen(fx.t[0].policy_text);
	assert_null(policy_engine_new(&fx.cfg, fx.err, sizeof(fx.err)));
	assert_non_null(strstr(fx.err, "p.lua:1:"));
}

/* Many decisions on one engine stay correct and keep memory flat. */
static void test_many_decisions(void **state)
{
	(void)state;
	must_engine(
	    "return function(req) return {allow=req.identity.subject == req.user_id, tier='push'} end", NULL);
	for (int i = 0; i < 20000; i++) {
		assert_int_equal(decide(0), 0);
		assert_true(fx.d.allow);
	}
	policy_engine_free(fx.e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_allow_tier),           cmocka_unit_test(test_allow_scopes),
	    cmocka_unit_test(test_allow_readonly_lists), cmocka_unit_test(test_deny_reason),
	    cmocka_unit_test(test_reason_truncated),     cmocka_unit_test(test_reason_and_log_are_utf8),
	    cmocka_unit_test(test_malformed_decisions),  cmocka_unit_test(test_deny_ignores_grant_fields),
	    cmocka_unit_test(test_error_names_line),     cmocka_unit_test(test_engine_new_errors),
	    cmocka_unit_test(test_many_decisions),
	};
	return cmocka_run_group_tests_name("policy", tests, NULL, NULL);
}
