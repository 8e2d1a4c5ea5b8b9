/*
 * test_policy_request.c — the request a policy sees (src/policy/request.c, view.c): req and its
 * read-only views, its fields, nothing carried from one decision to the
 * next.
 */
#include "policy_fixture.h"

/* Nothing a decision does survives into the next one. */
static void test_no_state_between_requests(void **state)
{
	(void)state;
	must_engine("local calls = 0\n"
	            "local seen = {}\n"
	            "return function(req)\n"
	            "  calls = calls + 1\n"
	            "  seen[#seen + 1] = req.user_id\n"
	            "  return {allow=false, reason=tostring(calls) .. '/' .. #seen}\n"
	            "end\n",
	            NULL);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(decide(0), 0);
		assert_string_equal(fx.d.reason, "1/1");
	}
	policy_engine_free(fx.e);

	/* A global counter cannot even start. */
	must_engine("return function(req) count = (count or 0) + 1 end", NULL);
	assert_int_equal(decide(0), -1);
	assert_int_equal(decide(0), -1);
	assert_err_has("globals cannot be created");
	policy_engine_free(fx.e);
}

static void test_req_read_only(void **state)
{
	static const char *const policies[] = {
	    "return function(req) req.user_id = 'x' end",
	    "return function(req) req.new = 'x' end",
	    "return function(req) req.identity.claims.x = 1 end",
	    "return function(req) req.body.user_id = 'mallory' end",
	    "return function(req) req.body.nested.deep[1] = 'z' end",
	    "return function(req) table.insert(req.scopes, 'read:brands') end",
	    "return function(req) rawset(req, 'user_id', 'x') end",
	    "return function(req) rawset(req.identity, 'authenticated', true) end",
	    "return function(req) setmetatable(req, nil) end",
	    "return function(req) getmetatable(req).__index = {} end",
	};
	char body[] = "{\"user_id\":\"alice\",\"scopes\":[\"read:brands\"],\"nested\":{\"deep\":[\"a\"]}}";

	(void)state;
	for (size_t i = 0; i < sizeof(policies) / sizeof(policies[0]); i++) {
		must_engine(policies[i], NULL);
		if (decide_full(0, body, "{\"sub\":\"alice\"}", true, "alice") != -1)
			fail_msg("accepted: %s", policies[i]);
		policy_engine_free(fx.e);
	}
	assert_policy_error("return function(req) req.user_id = 'x' end", "cannot set field 'user_id'");
}

static void test_req_fields(void **state)
{
	(void)state;
	must_engine(
	    "return function(req)\n"
	    "  assert(req.tenant == 'acme', 'tenant')\n"
	    "  assert(req.user_id == 'alice', 'user_id')\n"
	    "  assert(req.body.user_id == 'alice' and req.body.nested.deep[2] == 'b', 'body')\n"
	    "  assert(req.body == req.body and req.body.nested == req.body.nested, 'identity')\n"
	    "  assert(#req.scopes == 2 and req.scopes[2] == 'read:brands', 'scopes')\n"
	    "  local n = 0\n"
	    "  for i, s in ipairs(req.scopes) do n = n + #s end\n"
	    "  assert(n == 30, 'ipairs')\n"
	    "  assert(table.concat(req.scopes, ' ') == 'inbox:read:messages read:brands', 'concat')\n"
	    "  assert(req.expires_in == '2h', 'expires_in')\n"
	    "  local id = req.identity\n"
	    "  assert(id.authenticated == true and id.method == 'jwt' and id.subject == 'alice', "
	    "'identity')\n"
	    "  assert(math.type(id.claims.iat) == 'integer' and id.claims.iat == 1700000000, 'iat')\n"
	    "  assert(id.claims.roles[1] == 'admin', 'roles')\n"
	    "  n = 0\n"
	    "  for k, v in pairs(id) do n = n + 1 end\n"
	    "  assert(n == 4, 'pairs')\n"
	    "  assert(next(id) == nil and next(req.body) == nil and next(req) == nil, 'views are empty')\n"
	    "  local rawnext = pairs({})\n"
	    "  assert(rawnext(req) == nil and rawnext(req.body.nested) == nil, 'next of pairs')\n"
	    "  assert(select('#', next(string)) == 1 and next(broker.tiers) == nil, 'library views')\n"
	    "  n = 0\n"
	    "  for k, v in pairs(req) do n = n + 1 end\n"
	    "  assert(n == 9, 'pairs(req) ' .. n)\n"
	    "  assert(req.client.ip == '10.0.0.1' and req.client.origin == 'https://app.example.com', "
	    "'client')\n"
	    "  assert(req.client.user_agent == nil, 'user_agent')\n"
	    "  assert(req.headers['x-trace'] == 't1' and req.headers.authorization == nil, 'headers')\n"
	    "  assert(math.type(req.now) == 'integer' and req.now == 1700000000, 'now')\n"
	    "  assert(type(req) == 'table' and type(req.body) == 'table', 'types')\n"
	    "  broker.log('checked', #req.scopes, true)\n"
	    "  print('again')\n"
	    "  return {allow=true, scopes=req.scopes}\n"
	    "end\n",
	    NULL);
	if (decide_full(0,
	                "{\"user_id\":\"alice\",\"scopes\":[\"inbox:read:messages\",\"read:brands\"],"
	                "\"expires_in\":\"2h\",\"nested\":{\"deep\":[\"a\",\"b\"]}}",
	                "{\"sub\":\"alice\",\"iat\":1700000000,\"roles\":[\"admin\"]}", true, "alice") != 0)
		fail_msg("%s", fx.err);
	assert_int_equal(fx.d.n_scopes, 2);
	assert_string_equal(policy_decision_log(fx.e), "checked 2 true\nagain\n");
	policy_engine_free(fx.e);
}

/* What the request does not carry is nil, not a placeholder. */
static void test_req_absent_fields(void **state)
{
	(void)state;
	must_engine(
	    "return function(req)\n"
	    "  assert(req.scopes == nil and req.expires_in == nil, 'asked')\n"
	    "  assert(req.identity.authenticated == false and req.identity.subject == nil, 'identity')\n"
	    "  assert(req.identity.method == 'none' and next(req.identity.claims) == nil, 'claims')\n"
	    "  return {allow=false}\n"
	    "end\n",
	    NULL);
	if (decide_full(0, "{\"user_id\":\"alice\",\"scopes\":[1,2],\"expires_in\":{}}", NULL, false, "") !=
	    0)
		fail_msg("%s", fx.err);
	if (decide_full(0, "{\"user_id\":\"alice\"}", NULL, false, NULL) != 0)
		fail_msg("%s", fx.err);
	assert_string_equal(policy_decision_log(fx.e), "");
	policy_engine_free(fx.e);
}

/* The fast views of req and req.identity: every table they hand out is a
 * view, their own next refuses every other table, and they never show a
 * previous decision's request. */
static void test_req_views_sealed(void **state)
{
	(void)state;
	must_engine(
	    "local function sealed(v)\n"
	    "  return not pcall(function() v.x = 1 end) and not pcall(rawset, v, 'x', 1)\n"
	    "    and not pcall(rawget, v, 'x') and next(v) == nil and getmetatable(v) == false\n"
	    "end\n"
	    "return function(req)\n"
	    "  local f, s, k = pairs(req)\n"
	    "  assert(s == req and k == nil, 'pairs')\n"
	    "  for _, t in ipairs({req.body, req.body.nested, req.identity.claims, {}, string}) do\n"
	    "    assert(not pcall(f, t), 'next of another table')\n"
	    "  end\n"
	    "  local n = 0\n"
	    "  for key, v in pairs(req) do\n"
	    "    n = n + 1\n"
	    "    if type(v) == 'table' then assert(sealed(v), key) end\n"
	    "  end\n"
	    "  for key, v in pairs(req.identity) do\n"
	    "    if type(v) == 'table' then assert(sealed(v), 'identity.' .. key) end\n"
	    "  end\n"
	    "  assert(sealed(req) and sealed(req.identity) and sealed(req.client), 'views')\n"
	    "  assert(req.identity == req.identity and req.client == req.client, 'same views')\n"
	    "  assert(req.nothing == nil and req[1] == nil and #req == 0, 'absent')\n"
	    "  assert(not pcall(setmetatable, req.identity, nil), 'setmetatable')\n"
	    "  return {allow=false, reason=req.body.user_id .. ' ' .. tostring(req.identity.subject)\n"
	    "    .. ' ' .. tostring(req.identity.claims.sub) .. ' ' .. n}\n"
	    "end\n",
	    NULL);
	assert_int_equal(decide_full(0, "{\"user_id\":\"alice\",\"nested\":{\"a\":[1]}}",
	                             "{\"sub\":\"alice\"}", true, "alice"),
	                 0);
	assert_string_equal(fx.d.reason, "alice alice alice 7");
	/* The next decision sees its own request only, also after a failed one. */
	assert_int_equal(
	    decide_full(0, "{\"user_id\":\"bob\",\"nested\":{}}", "{\"sub\":\"bob\"}", true, "bob"), 0);
	assert_string_equal(fx.d.reason, "bob bob bob 7");
	assert_int_equal(decide_full(0, "{\"x\":1}", NULL, false, NULL), -1);
	assert_int_equal(decide_full(0, "{\"user_id\":\"carol\",\"nested\":{}}", NULL, false, NULL), 0);
	assert_string_equal(fx.d.reason, "carol nil nil 7");
	assert_int_equal(decide(1), 0);
	policy_engine_free(fx.e);
}

/* req and req.identity are written anew for every decision into tables the
 * engine keeps: whatever a request does not carry is nil, whatever the
 * previous one carried (and whatever a policy built from it, such as
 * client, headers, body and the views of claims), even when that decision
 * failed, and whichever tenant it was for. */
static void test_req_nothing_carried_over(void **state)
{
	static const char *const fingerprint =
	    "return function(req)\n"
	    "  local id = req.identity\n"
	    "  local roles = id.claims.roles\n"
	    "  local seen = {req.tenant, req.user_id, tostring(req.scopes and #req.scopes),\n"
	    "    tostring(req.expires_in), tostring(req.body.x), tostring(req.client.ip),\n"
	    "    tostring(req.headers['x-trace']), tostring(id.authenticated), tostring(id.method),\n"
	    "    tostring(id.subject), tostring(id.claims.sub), tostring(roles and roles[1]),\n"
	    "    tostring(req.now)}\n"
	    "  local n = 0\n"
	    "  for _ in pairs(req) do n = n + 1 end\n"
	    "  seen[#seen + 1] = tostring(n)\n"
	    "  if req.body.fail then error('failed after reading everything') end\n"
	    "  return {allow=false, reason=table.concat(seen, ' ')}\n"
	    "end\n";
	static const char *const full_body =
	    "{\"user_id\":\"alice\",\"x\":\"y\",\"scopes\":[\"read:brands\"],\"expires_in\":\"2h\"}";
	static const char *const full_claims = "{\"sub\":\"alice\",\"roles\":[\"admin\"]}";
	static const char *const full =
	    "acme alice 1 2h y 10.0.0.1 t1 true jwt alice alice admin 1700000000 9";
	static const char *const bare = "acme bob nil nil nil nil nil false none nil nil nil 1700000001 7";

	(void)state;
	must_engine(fingerprint, fingerprint);
	for (int round = 0; round < 3; round++) {
		assert_int_equal(decide_full(0, full_body, full_claims, true, "alice"), 0);
		assert_string_equal(fx.d.reason, full);
		assert_int_equal(decide_bare(0, "bob", "{\"user_id\":\"bob\"}"), 0);
		assert_string_equal(fx.d.reason, bare);
		/* A failed decision that read everything leaves nothing either. */
		assert_int_equal(decide_full(0,
		                             "{\"user_id\":\"alice\",\"x\":\"y\",\"fail\":true,"
		                             "\"scopes\":[\"read:brands\"],\"expires_in\":\"2h\"}",
		                             full_claims, true, "alice"),
		                 -1);
		assert_err_has("failed after reading everything");
		assert_int_equal(decide_bare(0, "bob", "{\"user_id\":\"bob\"}"), 0);
		assert_string_equal(fx.d.reason, bare);
		/* Nor does one of another tenant. */
		assert_int_equal(decide_full(1, full_body, full_claims, true, "alice"), 0);
		assert_string_equal(fx.d.reason,
		                    "other alice 1 2h y 10.0.0.1 t1 true jwt alice alice admin 1700000000 9");
		assert_int_equal(decide_bare(1, "bob", "[]"), 0);
		assert_string_equal(fx.d.reason,
		                    "other bob nil nil nil nil nil false none nil nil nil 1700000001 7");
	}
	policy_engine_free(fx.e);
}

/* The view of claims is kept from one decision to the next only while no
 * table inside claims was read: the views of such tables always show the
 * running decision's claims, and none pile up. */
static void test_claims_views_renewed(void **state)
{
	char claims[128];
	int kb;

	(void)state;
	must_engine("return function(req)\n"
	            "  local c = req.identity.claims\n"
	            "  local r = c.roles\n"
	            "  assert(r == c.roles and (r == nil or r.deep == c.roles.deep), 'same views')\n"
	            "  local n = 0\n"
	            "  for k, v in pairs(c) do n = n + 1 end\n"
	            "  return {allow=false, reason=tostring(r and r[1]) .. ' ' ..\n"
	            "    tostring(r and r.deep and r.deep[1]) .. ' ' .. n}\n"
	            "end\n",
	            NULL);
	assert_int_equal(decide_full(0, "{}", "{\"roles\":{\"1\":\"a\",\"deep\":[\"b\"]}}", true, "x"), 0);
	assert_string_equal(fx.d.reason, "nil b 1");
	assert_int_equal(decide_full(0, "{}", "{\"roles\":[\"admin\"]}", true, "x"), 0);
	assert_string_equal(fx.d.reason, "admin nil 1");
	assert_int_equal(decide_full(0, "{}", "{\"sub\":\"x\"}", true, "x"), 0);
	assert_string_equal(fx.d.reason, "nil nil 1");
	assert_int_equal(decide_full(0, "{}", NULL, true, "x"), 0);
	assert_string_equal(fx.d.reason, "nil nil 0");
	for (int i = 0; i < 200; i++)
		assert_int_equal(decide_full(0, "{}", "{\"roles\":[\"w\"]}", true, "x"), 0);
	kb = engine_kb();
	for (int i = 0; i < 5000; i++) {
		snprintf(claims, sizeof(claims), "{\"roles\":[\"r%d\"],\"n\":{\"deep\":[%d]}}", i, i);
		assert_int_equal(decide_full(0, "{}", claims, true, "x"), 0);
	}
	assert_true(engine_kb() < kb + 64);
	policy_engine_free(fx.e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_no_state_between_requests),
	    cmocka_unit_test(test_req_read_only),
	    cmocka_unit_test(test_req_fields),
	    cmocka_unit_test(test_req_absent_fields),
	    cmocka_unit_test(test_req_views_sealed),
	    cmocka_unit_test(test_req_nothing_carried_over),
	    cmocka_unit_test(test_claims_views_renewed),
	};
	return cmocka_run_group_tests_name("policy_request", tests, NULL, NULL);
}
