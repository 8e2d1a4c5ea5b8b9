/*
 * test_redis.c — unit tests for src/redis.c: the AUTH arguments and the key
 * names (connecting is tested against a real redis-server in
 * tests/integration/test_cluster.py; the URL's parsing in test_config.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "config.h"
#include "redis.h"

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

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_auth_args),
	    cmocka_unit_test(test_keys),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
