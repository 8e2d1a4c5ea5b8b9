/*
 * test_policy_explain.c — unit tests for src/policy/explain.c: the `return`
 * that decided and the calls that led there (policy_decision_origin).
 */
#include "policy_fixture.h"

/* The chain of the last decision, as "line,line,..." (paths checked apart). */
static const char *chain(char *buf, size_t len)
{
	struct policy_frame fr[POLICY_CHAIN_MAX];
	size_t n = policy_decision_origin(fx.e, fr, POLICY_CHAIN_MAX), used = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		assert_string_equal(fr[i].source, "/policies/acme.lua");
		used += (size_t)snprintf(buf + used, len - used, "%s%d%s", i ? "," : "", fr[i].line,
		                         fr[i].tail ? "t" : "");
	}
	return buf;
}

static const char *const HELPERS = "local function deny(why)\n"                        /* 1 */
                                   "  return { allow = false, reason = why }\n"        /* 2 */
                                   "end\n"                                             /* 3 */
                                   "local function admin(req)\n"                       /* 4 */
                                   "  if req.body.admin then\n"                        /* 5 */
                                   "    return { allow = true, tier = 'inbox' }\n"     /* 6 */
                                   "  end\n"                                           /* 7 */
                                   "  local d = deny('not admin')\n"                   /* 8 */
                                   "  return d\n"                                      /* 9 */
                                   "end\n"                                             /* 10 */
                                   "return function(req)\n"                            /* 11 */
                                   "  for i = 1, 100 do local _ = { i } end\n"         /* 12 */
                                   "  if req.body.tail then return deny('tail') end\n" /* 13 */
                                   "  local ok, d = pcall(admin, req)\n"               /* 14 */
                                   "  return d\n"                                      /* 15 */
                                   "end\n";

/* The innermost return that built the table, not the ones that handed it up. */
static void test_innermost_return(void **state)
{
	char buf[128];

	(void)state;
	must_engine(HELPERS, NULL);
	assert_int_equal(policy_engine_explain(fx.e, true), 0);
	assert_int_equal(decide_full(0, "{\"admin\":true}", NULL, false, NULL), 0);
	assert_true(fx.d.allow);
	/* decide's pcall (line 14, through a C function) then admin's return. */
	assert_string_equal(chain(buf, sizeof(buf)), "14,6");
	assert_int_equal(decide_full(0, "{}", NULL, false, NULL), 0);
	assert_false(fx.d.allow);
	assert_string_equal(chain(buf, sizeof(buf)), "14,8,2");
	/* A tail call leaves no frame of its caller: the record says so. */
	assert_int_equal(decide_full(0, "{\"tail\":true}", NULL, false, NULL), 0);
	assert_string_equal(chain(buf, sizeof(buf)), "2t");
	policy_origin_line(fx.e, "/policies", buf, sizeof(buf));
	assert_string_equal(buf, "decided at acme.lua:2 (through a tail call)");
	policy_engine_free(fx.e);
}

/* More table returns than the ring holds after the decision's table was
 * made: the origin is a return of that table, never another table's. */
static void test_ring_overflow(void **state)
{
	char buf[128];

	(void)state;
	must_engine("local function mk(i) return { i } end\n"
	            "return function(req)\n"
	            "  local d = { allow = true, tier = 'inbox' }\n"
	            "  for i = 1, 200 do mk(i) end\n"
	            "  return d\n"
	            "end\n",
	            NULL);
	assert_int_equal(policy_engine_explain(fx.e, true), 0);
	assert_int_equal(decide_full(0, "{}", NULL, false, NULL), 0);
	assert_string_equal(chain(buf, sizeof(buf)), "5");
	policy_engine_free(fx.e);
}

/* Off: nothing recorded; a policy error or a spent budget: no origin. */
/* The same table handed back from many places (a helper that returns its
 * argument, called in a loop) does not push the return that made it out
 * of the ring: the decision is still said to come from where it was made. */
static void test_same_table_returned_often(void **state)
{
	char buf[128];

	(void)state;
	must_engine("local function pick(req) return { allow = true, tier = 'inbox' } end\n" /* 1 */
	            "local function same(d) return d end\n"                                  /* 2 */
	            "return function(req)\n"                                                 /* 3 */
	            "  local d = pick(req)\n"                                                /* 4 */
	            "  for i = 1, 100 do same(d) end\n"                                      /* 5 */
	            "  return d\n"                                                           /* 6 */
	            "end\n",
	            NULL);
	assert_int_equal(policy_engine_explain(fx.e, true), 0);
	assert_int_equal(decide_full(0, "{}", NULL, false, NULL), 0);
	assert_true(fx.d.allow);
	assert_string_equal(chain(buf, sizeof(buf)), "4,1");
	policy_engine_free(fx.e);
}

static void test_off_and_errors(void **state)
{
	char buf[128];

	(void)state;
	must_engine("return function(req)\n"
	            "  if req.body.loop then while true do local _ = { 1 } end end\n"
	            "  if req.body.fail then error('no') end\n"
	            "  return { allow = true, tier = 'inbox' }\n"
	            "end\n",
	            NULL);
	assert_int_equal(decide_full(0, "{}", NULL, false, NULL), 0);
	assert_string_equal(chain(buf, sizeof(buf)), "");
	assert_int_equal(policy_engine_explain(fx.e, true), 0);
	assert_int_equal(decide_full(0, "{}", NULL, false, NULL), 0);
	assert_string_equal(chain(buf, sizeof(buf)), "4");
	assert_int_equal(decide_full(0, "{\"fail\":true}", NULL, false, NULL), -1);
	assert_string_equal(chain(buf, sizeof(buf)), "");
	assert_int_equal(decide_full(0, "{\"loop\":true}", NULL, false, NULL), -1);
	assert_non_null(strstr(fx.err, "instruction"));
	assert_string_equal(chain(buf, sizeof(buf)), "");
	/* The engine still decides, and explains, after both. */
	assert_int_equal(decide_full(0, "{}", NULL, false, NULL), 0);
	assert_string_equal(chain(buf, sizeof(buf)), "4");
	policy_engine_explain(fx.e, false);
	assert_int_equal(decide_full(0, "{}", NULL, false, NULL), 0);
	assert_string_equal(chain(buf, sizeof(buf)), "");
	policy_engine_free(fx.e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_innermost_return),
	    cmocka_unit_test(test_ring_overflow),
	    cmocka_unit_test(test_same_table_returned_often),
	    cmocka_unit_test(test_off_and_errors),
	};
	return cmocka_run_group_tests_name("policy_explain", tests, NULL, NULL);
}
