/*
 * test_client.c — unit tests for src/client.c (the request deadlines).
 *
 * Owns the proof that the sweep cuts only what is past its deadline, in
 * deadline order, that a phase change moves a connection between the lists,
 * and that an unwatched connection is never cut.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>
#include <time.h>

#include "client.h"

struct cuts {
	struct client *who[8];
	int n;
};

static void record(void *ctx, struct client *c, const char *why)
{
	struct cuts *k = ctx;

	assert_non_null(why);
	assert_true(k->n < 8);
	k->who[k->n++] = c;
}

static void test_nothing_watched(void **state)
{
	struct client_watch w;
	struct cuts k = {0};

	(void)state;
	memset(&w, 0, sizeof(w));
	assert_int_equal(client_sweep(&w, record, &k), -1);
	assert_int_equal(k.n, 0);
}

static void test_idle_deadlines_in_order(void **state)
{
	struct client_watch w;
	struct client a, b;
	struct cuts k = {0};
	long long next;

	(void)state;
	memset(&w, 0, sizeof(w));
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	w.request_ms = 60000;
	w.idle_ms = 0; /* due at once */
	client_set_phase(&w, &a, CLIENT_IDLE);
	client_set_phase(&w, &b, CLIENT_IDLE);
	assert_ptr_equal(w.idle.head, &a);
	assert_ptr_equal(w.idle.tail, &b);
	next = client_sweep(&w, record, &k);
	assert_int_equal(k.n, 2);
	assert_ptr_equal(k.who[0], &a);
	assert_ptr_equal(k.who[1], &b);
	assert_int_equal(next, -1);
	assert_int_equal(a.phase, CLIENT_NONE);
	assert_null(w.idle.head);
}

static void test_phase_change_moves_and_unwatches(void **state)
{
	struct client_watch w;
	struct client a, b;
	struct cuts k = {0};
	long long next;

	(void)state;
	memset(&w, 0, sizeof(w));
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	w.request_ms = 60000;
	w.idle_ms = 0;
	client_set_phase(&w, &a, CLIENT_IDLE);
	client_set_phase(&w, &b, CLIENT_IDLE);
	client_set_phase(&w, &a, CLIENT_RECEIVING); /* a request line arrived */
	client_set_phase(&w, &b, CLIENT_NONE);      /* closed */
	assert_ptr_equal(w.receiving.head, &a);
	assert_null(w.idle.head);
	assert_null(w.idle.tail);
	next = client_sweep(&w, record, &k);
	assert_int_equal(k.n, 0); /* a is due in a minute */
	assert_true(next > 0 && next <= 60000);
	client_set_phase(&w, &a, CLIENT_NONE);
	assert_null(w.receiving.head);
	assert_int_equal(client_sweep(&w, record, &k), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_nothing_watched),
	    cmocka_unit_test(test_idle_deadlines_in_order),
	    cmocka_unit_test(test_phase_change_moves_and_unwatches),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
