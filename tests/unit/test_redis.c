/*
 * test_redis.c — unit tests for src/redis.c: the AUTH arguments and the key
 * names, and a hostile server's huge reply (connecting is tested against a real redis-server in
 * tests/integration/test_cluster.py; the URL's parsing in test_config.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <hiredis.h>
#include <string.h>

#include "config.h"
#include "redis.h"
#include "redis_fixture.h"

static void test_auth_args(void **state)
{
	struct cluster_conf c;
	const char *argv[3];
	size_t lens[3];

	(void)state;
	memset(&c, 0, sizeof(c));
	/* No password: no AUTH at all. */
	assert_int_equal(redis_auth_args(&c, argv, lens), 0);
	assert_int_equal(secret_set(&c.password, "s3cret", 6), 0);
	assert_int_equal(redis_auth_args(&c, argv, lens), 2);
	assert_string_equal(argv[0], "AUTH");
	assert_int_equal(lens[1], 6);
	assert_memory_equal(argv[1], "s3cret", 6);
	/* An ACL user goes before the password. */
	c.user = "broker";
	assert_int_equal(redis_auth_args(&c, argv, lens), 3);
	assert_string_equal(argv[1], "broker");
	assert_int_equal(lens[1], 6);
	assert_memory_equal(argv[2], "s3cret", 6);
	secret_clear(&c.password);
}

static void test_keys(void **state)
{
	struct cluster_conf c;
	char out[64], tiny[16];

	(void)state;
	memset(&c, 0, sizeof(c));
	c.name = "prod";
	assert_int_equal(redis_key(&c, "deny:acme", out, sizeof(out)), 0);
	assert_string_equal(out, "courier-broker:prod:deny:acme");
	/* Cut short is an error, never a shorter key. */
	assert_int_equal(redis_key(&c, "deny:acme", tiny, sizeof(tiny)), -1);
}

/* SMEMBERS x on rc. */
static redisReply *smembers(struct redis_conn *rc)
{
	const char *argv[2] = {"SMEMBERS", "x"};
	size_t lens[2] = {8, 1};

	return redis_command(rc, 2, argv, lens);
}

/* A reply announcing two billion elements fails the connection at once
 * (an out-of-memory error from the reader) instead of allocating 16 GB of
 * pointers and waiting for them; a reply of ordinary size still reads. */
static void test_huge_array_refused(void **state)
{
	struct cluster_conf c;
	struct hostile h = {0};
	struct redis_conn *rc;
	redisReply *r;
	char err[256] = "";

	(void)state;
	memset(&c, 0, sizeof(c));
	c.host = "127.0.0.1";
	c.timeout_ms = 3000;

	h.answer = "*2000000000\r\n";
	assert_int_equal(hostile_start(&h), 0);
	c.port = (unsigned short)h.port;
	rc = redis_connect(&c, REDIS_REPLY_MAX_LARGE, err, sizeof(err));
	assert_non_null(rc);
	r = smembers(rc);
	assert_null(r);
	/* Refused by the cap, not a timeout after a 16 GB calloc. */
	assert_non_null(strstr(redis_error(rc), "too many elements"));
	redis_close(rc);
	hostile_stop(&h);

	h.answer = "*2\r\n$3\r\nbob\r\n$5\r\nalice\r\n";
	assert_int_equal(hostile_start(&h), 0);
	c.port = (unsigned short)h.port;
	rc = redis_connect(&c, REDIS_REPLY_MAX_LARGE, err, sizeof(err));
	assert_non_null(rc);
	r = smembers(rc);
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_ARRAY);
	assert_int_equal(r->elements, 2);
	freeReplyObject(r);
	redis_close(rc);
	hostile_stop(&h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_auth_args),
	    cmocka_unit_test(test_keys),
	    cmocka_unit_test(test_huge_array_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
