/*
 * test_ratelease.c — unit tests for src/ratelease.c: a loop's leases.
 *
 * Owns the proof of the table's rules on a clock the test moves: a lease's
 * tokens are spent without asking, and never past its end; its size starts
 * at 1, doubles while leases are spent in time and halves when one runs out
 * of time; a limit too small to lease (or a burst under 16) is asked for
 * one token a request, always; a token given back returns only to its own
 * lease; new limits drop the lease; the table stays bounded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "ratelease.h"

#define L   10 /* lease_ms */
#define KEY "courier-broker:t:rl:t:acme"

static struct ratelease *t;

static int setup(void **state)
{
	(void)state;
	t = ratelease_new(L);
	return t ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	ratelease_free(t);
	return 0;
}

/* A take of KEY under 2000/s, burst 100 (cap 12). */
static bool take(uint64_t now, unsigned *ask, struct ratelease_ref *ref)
{
	return ratelease_take(t, KEY, strlen(KEY), 2000, 100, now, ask, ref);
}

static void lease_of(uint64_t now, unsigned *left, unsigned *k, bool *in_force)
{
	assert_true(ratelease_peek(t, KEY, strlen(KEY), now, left, k, in_force));
}

static void test_cap(void **state)
{
	(void)state;
	assert_int_equal(ratelease_cap(L, 2000, 100), 12);    /* burst / 8 */
	assert_int_equal(ratelease_cap(L, 500, 1000), 5);     /* per_second * L / 1000 */
	assert_int_equal(ratelease_cap(L, 1e6, 1e6), 64);     /* RATELEASE_MAX */
	assert_int_equal(ratelease_cap(L, 150, 1000), 1);     /* under 2000 / L: never leased */
	assert_int_equal(ratelease_cap(L, 100000, 10), 1);    /* burst under 16: never leased */
	assert_int_equal(ratelease_cap(L, 0.01, 5), 1);       /* at least 1 */
	assert_int_equal(ratelease_cap(1000, 0.01, 1000), 1); /* whatever L */
}

/* Under 2000/L per second: every request asks Redis for exactly one token,
 * and nothing enters the table, whatever Redis grants. */
static void test_small_limit_never_leased(void **state)
{
	const char *key = "courier-broker:t:rl:r:0123";
	struct ratelease_ref ref;
	unsigned ask, left, k;
	bool in_force;

	(void)state;
	for (uint64_t now = 1000; now < 1100; now++) {
		assert_false(ratelease_take(t, key, strlen(key), 150, 1000, now, &ask, &ref));
		assert_int_equal(ask, 1);
		assert_int_equal(ref.slot, -1);
		assert_false(ref.filling);
		ratelease_granted(t, &ref, 40, now, now);
	}
	assert_false(ratelease_peek(t, key, strlen(key), 1100, &left, &k, &in_force));
	/* Nor a burst under 16 (cap burst / 8 < 2). */
	assert_false(ratelease_take(t, key, strlen(key), 100000, 15, 2000, &ask, &ref));
	assert_int_equal(ask, 1);
	assert_int_equal(ref.slot, -1);
}

/* A call ahead (ref held a token and fills the next lease) left out:
 * nobody will fill it. */
static void drop_fill(struct ratelease_ref *ref, uint64_t now)
{
	struct ratelease_ref f = *ref;

	f.held = false;
	ratelease_release(t, &f, now);
	ref->filling = false;
}

/* k: 1, then doubles while each lease is spent in time, up to the cap. */
static void test_k_grows_then_spends_without_asking(void **state)
{
	struct ratelease_ref ref, ahead;
	unsigned ask, left, k, calls = 0, takes = 0;
	bool in_force;
	uint64_t now = 5000;

	(void)state;
	/* The first request asks for 1 (and keeps it): a lease of 0 until now + L. */
	assert_false(take(now, &ask, &ref));
	assert_int_equal(ask, 1);
	assert_true(ref.filling);
	ratelease_granted(t, &ref, 0, now, now + 1);
	/* Spent in time: the next asks 2, keeps one, the lease holds one. */
	now += 2;
	assert_false(take(now, &ask, &ref));
	assert_int_equal(ask, 2);
	ratelease_granted(t, &ref, 1, now, now + 1);
	lease_of(now + 1, &left, &k, &in_force);
	assert_int_equal(left, 1);
	assert_true(in_force);
	/* A token of the lease: no call for this request; the lease is half
	 * spent, so the next one (k = 2) is asked ahead by a call of its own. */
	assert_true(take(now + 1, &ask, &ahead));
	assert_true(ahead.held);
	assert_true(ahead.filling);
	assert_int_equal(ask, 2);
	/* Only one call fills a lease at a time: this one asks for one token. */
	assert_false(take(now + 2, &ask, &ref));
	assert_int_equal(ask, 1);
	assert_int_equal(ref.slot, -1);
	ahead.held = false;
	ratelease_granted(t, &ahead, 2, now + 1, now + 2);
	/* 4 requests a ms (40 a lease): k grows to the cap, 12, and most
	 * requests spend a leased token, no call. */
	for (int i = 0; i < 400; i++) {
		bool held = take(now, &ask, &ref);

		takes++;
		if (ref.filling) {
			calls++;
			ratelease_granted(
			    t, &(struct ratelease_ref){.slot = ref.slot, .stamp = ref.stamp, .filling = true},
			    held ? ask : ask - 1, now, now);
		} else if (!held) {
			calls++; /* one token, asked while another call fills */
		}
		now += i % 4 == 0;
	}
	lease_of(now, &left, &k, &in_force);
	assert_int_equal(k, 12);
	assert_true(left <= 12);
	assert_true(calls * 8 < takes);
}

/* A lease past its end: its tokens are gone (asked again), and k halves. */
static void test_expiry_drops_leftovers_and_halves(void **state)
{
	const char *key = "courier-broker:t:rl:t:exp";
	struct ratelease_ref ref;
	unsigned ask, left, k, before;
	bool in_force;
	uint64_t now = 9000;

	(void)state;
	/* Grow k with leases spent in time (each call's answer at once). */
	assert_false(ratelease_take(t, key, strlen(key), 10000, 1000, now, &ask, &ref));
	for (int i = 0; i < 4; i++) {
		ratelease_granted(t, &ref, ask - 1, now, now);
		while (ratelease_take(t, key, strlen(key), 10000, 1000, now, &ask, &ref))
			if (ref.filling)
				drop_fill(&ref, now);
		assert_true(ref.filling); /* the lease is spent: this request fills the next */
		now += 1;
	}
	before = ask;
	assert_int_equal(before, 16);
	/* A full lease, then nothing for L ms: at L it is over. */
	ratelease_granted(t, &ref, ask - 1, now, now);
	assert_true(ratelease_peek(t, key, strlen(key), now + L - 1, &left, &k, &in_force));
	assert_int_equal(left, before - 1);
	assert_true(in_force);
	now += L;
	assert_true(ratelease_peek(t, key, strlen(key), now, &left, &k, &in_force));
	assert_false(in_force);
	/* Not spent: the request asks Redis, for half as many. */
	assert_false(ratelease_take(t, key, strlen(key), 10000, 1000, now, &ask, &ref));
	assert_int_equal(ask, before / 2);
	assert_true(ratelease_peek(t, key, strlen(key), now, &left, &k, &in_force));
	assert_int_equal(left, 0);
}

/* A token given back returns to its lease while it is in force, never to
 * a lease taken since; a refused fill leaves no lease. */
static void test_release(void **state)
{
	const char *key = "courier-broker:t:rl:t:rel";
	struct ratelease_ref ref, held;
	unsigned ask, left, k;
	bool in_force;
	uint64_t now = 20000;

	(void)state;
	assert_false(ratelease_take(t, key, strlen(key), 10000, 1000, now, &ask, &ref));
	/* Refused by Redis: nothing leased, the next request asks again. */
	ratelease_release(t, &ref, now);
	assert_false(ratelease_take(t, key, strlen(key), 10000, 1000, now, &ask, &ref));
	assert_true(ref.filling);
	ratelease_granted(t, &ref, 0, now, now);
	assert_false(ratelease_take(t, key, strlen(key), 10000, 1000, now + 1, &ask, &ref));
	assert_int_equal(ask, 2);
	ratelease_granted(t, &ref, 5, now, now + 1); /* a lease of 5 (as if asked 6) */
	assert_true(ratelease_take(t, key, strlen(key), 10000, 1000, now + 1, &ask, &held));
	assert_false(held.filling); /* 4 left of k = 2: nothing asked ahead */
	assert_true(ratelease_peek(t, key, strlen(key), now + 1, &left, &k, &in_force));
	assert_int_equal(left, 4);
	/* The request was refused (its other limit): the token goes back. */
	ratelease_release(t, &held, now + 2);
	assert_true(ratelease_peek(t, key, strlen(key), now + 2, &left, &k, &in_force));
	assert_int_equal(left, 5);
	/* Past the lease's end, a token given back stays out. */
	assert_true(ratelease_take(t, key, strlen(key), 10000, 1000, now + 2, &ask, &held));
	ratelease_release(t, &held, now + L + 1);
	assert_true(ratelease_peek(t, key, strlen(key), now + L + 1, &left, &k, &in_force));
	assert_false(in_force);
	assert_int_equal(left, 4);
}

/* New limits (a reload): the lease taken under the old ones is not spent,
 * and a call sent under them fills nothing. */
static void test_new_limits_drop_the_lease(void **state)
{
	const char *key = "courier-broker:t:rl:t:reload";
	struct ratelease_ref ref, old;
	unsigned ask;
	uint64_t now = 30000;

	(void)state;
	assert_false(ratelease_take(t, key, strlen(key), 10000, 1000, now, &ask, &ref));
	ratelease_granted(t, &ref, 20, now, now);
	assert_true(ratelease_take(t, key, strlen(key), 10000, 1000, now, &ask, &ref));
	/* Reloaded: 20 tokens left, none spent under the new limits. */
	assert_false(ratelease_take(t, key, strlen(key), 5000, 1000, now, &ask, &old));
	assert_true(old.filling);
	/* And back: the call sent under 5000/s fills nothing. */
	assert_false(ratelease_take(t, key, strlen(key), 10000, 1000, now, &ask, &ref));
	assert_true(ref.filling);
	ratelease_granted(t, &old, 20, now, now);
	assert_false(ratelease_take(t, key, strlen(key), 10000, 1000, now, &ask, &old));
	assert_int_equal(old.slot, -1);
}

/* Thousands of keys: the table keeps its size; the oldest go first. */
static void test_table_bounded(void **state)
{
	struct ratelease_ref ref;
	unsigned ask, left, k;
	bool in_force;
	char key[64];

	(void)state;
	for (int i = 0; i < 20000; i++) {
		int n = snprintf(key, sizeof(key), "courier-broker:t:rl:r:%08d", i);
		assert_false(ratelease_take(t, key, (size_t)n, 10000, 1000, 40000 + (uint64_t)i, &ask, &ref));
		ratelease_granted(t, &ref, 3, 40000 + (uint64_t)i, 40000 + (uint64_t)i);
	}
	assert_false(ratelease_peek(t, "courier-broker:t:rl:r:00000000", 30, 60000, &left, &k, &in_force));
	snprintf(key, sizeof(key), "courier-broker:t:rl:r:%08d", 19999);
	assert_true(ratelease_peek(t, key, strlen(key), 60000, &left, &k, &in_force));
	assert_int_equal(left, 3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cap),
	    cmocka_unit_test(test_small_limit_never_leased),
	    cmocka_unit_test(test_k_grows_then_spends_without_asking),
	    cmocka_unit_test(test_expiry_drops_leftovers_and_halves),
	    cmocka_unit_test(test_release),
	    cmocka_unit_test(test_new_limits_drop_the_lease),
	    cmocka_unit_test(test_table_bounded),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
