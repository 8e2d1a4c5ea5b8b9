/*
 * test_clusterrate.c — unit tests for src/clusterrate.c: the script on a real redis-server.
 *
 * Owns the proof of the shared limits' arithmetic: a burst of N lets N
 * through and refuses the next with a Retry-After; the tenant's refusal
 * charges nothing of the requester's; the keys expire and name no
 * requester in clear; NOSCRIPT is answered by sending the script whole; a
 * lease: each key grants what it holds up to the ask, a refusal none.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "clusterrate.h"
#include "redis_fixture.h"

#define PREFIX "courier-broker:t1:"

static struct redis_server srv;
static int epfd;
static struct rloop *rl;

struct outcome {
	int calls;
	int rc;
	enum clusterrate_level level;
	double retry;
	long long integer;
	const struct clusterrate_cmd *cmd;
	unsigned grants[2];
};

static void on_reply(const struct redisReply *r, void *arg)
{
	struct outcome *o = arg;

	o->calls++;
	o->rc = clusterrate_verdict(o->cmd, r, &o->level, &o->retry, o->grants);
	if (r && r->type == REDIS_REPLY_INTEGER)
		o->integer = r->integer;
}

static bool got(void *arg)
{
	return ((struct outcome *)arg)->calls > 0;
}

/* One script call; returns the verdict's rc (level/retry in *o). */
static int take(const char *tenant, const char *who, const struct clusterrate_limits *lim, bool eval,
                struct outcome *o)
{
	static struct clusterrate_cmd c;

	memset(o, 0, sizeof(*o));
	assert_int_equal(clusterrate_command(&c, eval, PREFIX, tenant, who, strlen(who), lim), 0);
	o->cmd = &c;
	assert_int_equal(rloop_command(rl, c.argc, c.argv, c.len, 2000, on_reply, o), 0);
	assert_true(drive(rl, epfd, got, o, 5000));
	return o->rc;
}

static long long redis_int(int argc, const char **argv)
{
	struct outcome o = {0};
	size_t len[4];

	for (int i = 0; i < argc; i++)
		len[i] = strlen(argv[i]);
	assert_int_equal(rloop_command(rl, argc, argv, len, 2000, on_reply, &o), 0);
	assert_true(drive(rl, epfd, got, &o, 5000));
	return o.integer;
}

static int setup(void **state)
{
	struct rloop_conf conf = {.host = "127.0.0.1", .connect_timeout_ms = 1000, .name = "test"};
	char err[200];
	size_t len;
	const char *text = clusterrate_script(&len);
	const char *argv[3] = {"SCRIPT", "LOAD", text};
	size_t lens[3] = {6, 4, len};

	(void)state;
	if (redis_start(&srv, 0, NULL) != 0)
		return -1;
	epfd = epoll_create1(0);
	conf.port = srv.port;
	rl = rloop_new(epfd, &epfd, &conf, err, sizeof(err));
	if (!rl || rloop_on_connect(rl, 3, argv, lens) != 0)
		return -1;
	return drive(rl, epfd, is_ready, rl, 5000) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	rloop_free(rl);
	redis_stop(&srv);
	close(epfd);
	return 0;
}

/* per_requester burst 5 at a slow rate: exactly 5 through, then 429 with a wait. */
static void test_requester_burst(void **state)
{
	struct clusterrate_limits lim = {.requester_per_second = 0.1, .requester_burst = 5};
	struct outcome o;

	(void)state;
	for (int i = 0; i < 5; i++) {
		assert_int_equal(take("acme", "jwt:alice", &lim, false, &o), 0);
		assert_int_equal(o.level, CLUSTERRATE_OK);
	}
	assert_int_equal(take("acme", "jwt:alice", &lim, false, &o), 0);
	assert_int_equal(o.level, CLUSTERRATE_REQUESTER);
	assert_true(o.retry >= 5 && o.retry <= 10);
	/* Another requester has its own bucket. */
	assert_int_equal(take("acme", "jwt:bob", &lim, false, &o), 0);
	assert_int_equal(o.level, CLUSTERRATE_OK);
}

/* The tenant's bucket empty: refused as the tenant, and the requester's
 * bucket is not charged for it. */
static void test_tenant_refusal_charges_nothing(void **state)
{
	struct clusterrate_limits lim = {
	    .per_second = 0.01, .burst = 2, .requester_per_second = 0.01, .requester_burst = 3};
	struct clusterrate_limits only_req = {.requester_per_second = 0.01, .requester_burst = 3};
	struct outcome o;

	(void)state;
	assert_int_equal(take("t2", "ip:10.0.0.1", &lim, false, &o), 0);
	assert_int_equal(o.level, CLUSTERRATE_OK);
	assert_int_equal(take("t2", "ip:10.0.0.1", &lim, false, &o), 0);
	assert_int_equal(o.level, CLUSTERRATE_OK);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(take("t2", "ip:10.0.0.1", &lim, false, &o), 0);
		assert_int_equal(o.level, CLUSTERRATE_TENANT);
	}
	/* The requester spent 2 of 3: one more passes its own bucket. */
	assert_int_equal(take("t2", "ip:10.0.0.1", &only_req, false, &o), 0);
	assert_int_equal(o.level, CLUSTERRATE_OK);
	assert_int_equal(take("t2", "ip:10.0.0.1", &only_req, false, &o), 0);
	assert_int_equal(o.level, CLUSTERRATE_REQUESTER);
}

/* Keys: under the prefix, with a TTL, no requester in clear. */
static void test_keys_expire_and_hide_the_requester(void **state)
{
	struct clusterrate_limits lim = {
	    .per_second = 100, .burst = 10, .requester_per_second = 1, .requester_burst = 5};
	static struct clusterrate_cmd c;
	struct outcome o;

	(void)state;
	assert_int_equal(take("t3", "jwt:carol@example.com", &lim, false, &o), 0);
	assert_int_equal(clusterrate_command(&c, false, PREFIX, "t3", "jwt:carol@example.com", 21, &lim), 0);
	assert_null(strstr(c.keys[0], "carol"));
	assert_true(strncmp(c.keys[0], PREFIX "rl:r:", strlen(PREFIX "rl:r:")) == 0);
	assert_string_equal(c.keys[1], PREFIX "rl:t:t3");
	for (int k = 0; k < 2; k++) {
		long long ttl = redis_int(2, (const char *[]){"PTTL", c.keys[k]});
		assert_true(ttl > 0 && ttl <= 1001);
	}
}

/* After SCRIPT FLUSH: EVALSHA answers NOSCRIPT (rc 1), EVAL works. */
static void test_noscript_then_eval(void **state)
{
	struct clusterrate_limits lim = {.per_second = 1000, .burst = 1000};
	struct outcome o;

	(void)state;
	redis_int(2, (const char *[]){"SCRIPT", "FLUSH"});
	assert_int_equal(take("t4", "x", &lim, false, &o), 1);
	assert_int_equal(take("t4", "x", &lim, true, &o), 0);
	assert_int_equal(o.level, CLUSTERRATE_OK);
}

/* One call asking ask_r tokens of the requester's key, ask_t of the
 * tenant's (0: that key not sent). */
static int take_n(const char *tenant, const char *who, const struct clusterrate_limits *lim, unsigned ask_r,
                  unsigned ask_t, struct outcome *o)
{
	static struct clusterrate_cmd c;
	struct clusterrate_keys k;
	unsigned asks[2];

	memset(o, 0, sizeof(*o));
	assert_int_equal(clusterrate_keys(&k, PREFIX, tenant, who, strlen(who), lim), 0);
	for (int i = 0; i < k.n; i++)
		asks[i] = k.level[i] == CLUSTERRATE_REQUESTER ? ask_r : ask_t;
	assert_int_equal(clusterrate_command_for(&c, false, &k, asks), 0);
	o->cmd = &c;
	assert_int_equal(rloop_command(rl, c.argc, c.argv, c.len, 2000, on_reply, o), 0);
	assert_true(drive(rl, epfd, got, o, 5000));
	return o->rc;
}

/* A lease: a key grants up to the ask, what its bucket holds; each key of
 * a call grants its own; once empty, refused with the wait as one token. */
static void test_lease_grants(void **state)
{
	struct clusterrate_limits ten = {.per_second = 0.01, .burst = 10};
	struct clusterrate_limits both = {
	    .per_second = 0.01, .burst = 100, .requester_per_second = 0.01, .requester_burst = 3};
	struct outcome o;

	(void)state;
	assert_int_equal(take_n("l1", "x", &ten, 0, 4, &o), 0);
	assert_int_equal(o.level, CLUSTERRATE_OK);
	assert_int_equal(o.grants[0], 4);
	/* 6 left: an ask of 8 gets 6, then nothing but a wait. */
	assert_int_equal(take_n("l1", "x", &ten, 0, 8, &o), 0);
	assert_int_equal(o.level, CLUSTERRATE_OK);
	assert_int_equal(o.grants[0], 6);
	assert_int_equal(take_n("l1", "x", &ten, 0, 8, &o), 0);
	assert_int_equal(o.level, CLUSTERRATE_TENANT);
	assert_true(o.retry >= 50);
	/* Two keys: the requester can give 3 of 8, the tenant all 8. */
	assert_int_equal(take_n("l2", "jwt:dave", &both, 8, 8, &o), 0);
	assert_int_equal(o.level, CLUSTERRATE_OK);
	assert_int_equal(o.grants[0], 3);
	assert_int_equal(o.grants[1], 8);
	/* Only the tenant's key sent (the requester's leased): grants[0] is 0. */
	assert_int_equal(take_n("l2", "jwt:dave", &both, 0, 5, &o), 0);
	assert_int_equal(o.level, CLUSTERRATE_OK);
	assert_int_equal(o.grants[0], 0);
	assert_int_equal(o.grants[1], 5);
	/* Only the requester's: empty, refused as the requester. */
	assert_int_equal(take_n("l2", "jwt:dave", &both, 1, 0, &o), 0);
	assert_int_equal(o.level, CLUSTERRATE_REQUESTER);
}

/* A refused lease charges nothing: the tenant empty, the requester's ask
 * of 5 is not taken, and 5 remain for it afterwards. */
static void test_lease_refusal_charges_nothing(void **state)
{
	struct clusterrate_limits lim = {
	    .per_second = 0.01, .burst = 1, .requester_per_second = 0.01, .requester_burst = 5};
	struct clusterrate_limits only_req = {.requester_per_second = 0.01, .requester_burst = 5};
	struct outcome o;

	(void)state;
	assert_int_equal(take_n("l3", "jwt:erin", &lim, 1, 1, &o), 0);
	assert_int_equal(o.level, CLUSTERRATE_OK);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(take_n("l3", "jwt:erin", &lim, 5, 5, &o), 0);
		assert_int_equal(o.level, CLUSTERRATE_TENANT);
	}
	assert_int_equal(take_n("l3", "jwt:erin", &only_req, 5, 0, &o), 0);
	assert_int_equal(o.level, CLUSTERRATE_OK);
	assert_int_equal(o.grants[0], 4);
}

/* No limit on: no command at all. */
static void test_no_limit_no_command(void **state)
{
	struct clusterrate_limits lim = {0};
	struct clusterrate_cmd c;

	(void)state;
	assert_int_equal(clusterrate_command(&c, false, PREFIX, "t", "x", 1, &lim), -1);
}

/* A reply that grants a key more than it was asked for (a Redis, or what
 * stands between, that lies) is unusable: never a larger lease. */
static void test_grant_over_the_ask_is_refused(void **state)
{
	struct clusterrate_cmd c;
	redisReply zero = {.type = REDIS_REPLY_INTEGER, .integer = 0};
	redisReply g = {.type = REDIS_REPLY_INTEGER};
	redisReply *el[2] = {&zero, &g};
	redisReply arr = {.type = REDIS_REPLY_ARRAY, .elements = 2, .element = el};
	enum clusterrate_level level;
	double retry = 0;
	unsigned grants[2] = {0, 0};

	(void)state;
	memset(&c, 0, sizeof(c));
	c.nkeys = 1;
	c.which[0] = 1;
	c.level[0] = CLUSTERRATE_TENANT;
	c.ask[0] = 3;
	g.integer = 3;
	assert_int_equal(clusterrate_verdict(&c, &arr, &level, &retry, grants), 0);
	assert_int_equal(level, CLUSTERRATE_OK);
	assert_int_equal(grants[1], 3);
	g.integer = 4;
	assert_int_equal(clusterrate_verdict(&c, &arr, &level, &retry, grants), -1);
	g.integer = 1000000;
	assert_int_equal(clusterrate_verdict(&c, &arr, &level, &retry, grants), -1);
	g.integer = 0;
	assert_int_equal(clusterrate_verdict(&c, &arr, &level, &retry, grants), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_requester_burst),
	    cmocka_unit_test(test_tenant_refusal_charges_nothing),
	    cmocka_unit_test(test_keys_expire_and_hide_the_requester),
	    cmocka_unit_test(test_noscript_then_eval),
	    cmocka_unit_test(test_no_limit_no_command),
	    cmocka_unit_test(test_lease_grants),
	    cmocka_unit_test(test_lease_refusal_charges_nothing),
	    cmocka_unit_test(test_grant_over_the_ask_is_refused),
	};
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, teardown);
}
