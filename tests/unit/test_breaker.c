/*
 * test_breaker.c — unit tests for src/breaker.c.
 *
 * Owns the proof of a breaker's life: closed until failures_max failures in
 * a row, open (a wait, no call) for its cool-down, one probe, closed again by
 * a success or open for twice as long by a failure; per endpoint and key.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "breaker.h"

static struct breaker_call call(const char *url, const char *fp)
{
	return (struct breaker_call){.url = url, .fingerprint = fp, .failures_max = 3, .cooldown_ms = 1000};
}

/* One call: admitted or not, then its outcome when it went. */
static long attempt(struct breaker_call *c, bool failed, long long now)
{
	long wait = breaker_admit(c, now);

	if (wait == 0)
		breaker_record(c, failed, false, now);
	return wait;
}

static void test_opens_after_failures_in_a_row(void **state)
{
	struct breaker_call c = call("http://a/auth/issue-token", "fp-open");

	(void)state;
	assert_int_equal(attempt(&c, true, 0), 0);
	assert_int_equal(attempt(&c, false, 1), 0); /* a success resets the count */
	assert_int_equal(attempt(&c, true, 2), 0);
	assert_int_equal(attempt(&c, true, 3), 0);
	assert_false(breaker_is_open(&c));
	assert_int_equal(attempt(&c, true, 4), 0); /* the third in a row opens it */
	assert_true(breaker_is_open(&c));
	assert_int_equal(breaker_admit(&c, 5), 1); /* about 1 s left */
	assert_int_equal(breaker_admit(&c, 500), 1);
}

static void test_probe_closes_or_doubles(void **state)
{
	struct breaker_call c = call("http://a/auth/issue-token", "fp-probe");
	struct breaker_call other;

	(void)state;
	for (int i = 0; i < 3; i++)
		attempt(&c, true, 0);
	assert_true(breaker_is_open(&c));
	/* After the pause one probe goes; others wait for it. */
	assert_int_equal(breaker_admit(&c, 1000), 0);
	assert_true(c.probe);
	other = call("http://a/auth/issue-token", "fp-probe");
	assert_int_equal(breaker_admit(&other, 1001), 1);
	breaker_record(&c, true, false, 1002); /* the probe failed: 2 s now */
	assert_true(breaker_is_open(&c));
	assert_int_equal(breaker_admit(&c, 2500), 1);
	assert_int_equal(breaker_admit(&c, 3002), 0); /* 1002 + 2000 */
	assert_true(c.probe);
	breaker_record(&c, false, false, 3003); /* the probe succeeded */
	assert_false(breaker_is_open(&c));
	assert_int_equal(attempt(&c, true, 3004), 0);
}

static void test_per_endpoint_and_key(void **state)
{
	struct breaker_call a = call("http://a/auth/issue-token", "fp-k1");
	struct breaker_call b = call("http://a/auth/issue-token", "fp-k2");
	struct breaker_call eu = call("http://eu/auth/issue-token", "fp-k1");
	struct breaker_call off = call("http://a/auth/issue-token", "fp-k1");

	(void)state;
	for (int i = 0; i < 3; i++)
		attempt(&a, true, 0);
	assert_true(breaker_is_open(&a));
	assert_int_equal(breaker_admit(&b, 1), 0);
	assert_int_equal(breaker_admit(&eu, 1), 0);
	off.failures_max = 0; /* no breaker: never guarded, never paused */
	assert_int_equal(breaker_admit(&off, 1), 0);
	assert_false(off.guarded);
	assert_false(breaker_is_open(&off));
}

static void test_aborted_probe_gives_its_turn(void **state)
{
	struct breaker_call c = call("http://a/auth/issue-token", "fp-abort");

	(void)state;
	for (int i = 0; i < 3; i++)
		attempt(&c, true, 0);
	assert_int_equal(breaker_admit(&c, 1000), 0);
	breaker_record(&c, false, true, 1001);        /* the drain ended it */
	assert_int_equal(breaker_admit(&c, 1002), 0); /* the next call probes */
	assert_true(c.probe);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_opens_after_failures_in_a_row),
	    cmocka_unit_test(test_probe_closes_or_doubles),
	    cmocka_unit_test(test_per_endpoint_and_key),
	    cmocka_unit_test(test_aborted_probe_gives_its_turn),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
