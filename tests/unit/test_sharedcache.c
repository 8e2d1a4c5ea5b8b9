/*
 * test_sharedcache.c — unit tests for src/sharedcache.c.
 *
 * Owns the proof that a shared cached token opens only with the brokers'
 * key and under its own name, and that neither name nor value shows the
 * token, the user or the scope.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>

#include "grantcache.h"
#include "secret.h"
#include "sharedcache.h"

static const unsigned char key1[32] = "0123456789abcdef0123456789abcdef";
static const unsigned char key2[32] = "fedcba9876543210fedcba9876543210";
static const char token[] = "eyJhbGciOiJIUzI1NiJ9.eyJzY29wZSI6InVzZXJfaWQ6YWxpY2UifQ.c2lnbmF0dXJl";

static void grant(struct grantcache_key *k, const char *scope)
{
	struct secret api = {0};

	memset(api.digest, 7, sizeof(api.digest));
	grantcache_key(k, "acme", "https://api.courier.com", &api, "rev1", scope, 3600);
}

static void test_roundtrip_and_names(void **state)
{
	struct sharedcache sc;
	struct grantcache_key k, k2;
	char name[SHAREDCACHE_NAME_MAX], name2[SHAREDCACHE_NAME_MAX], out[GRANTCACHE_TOKEN_MAX + 1];
	unsigned char v[sizeof(token) + SHAREDCACHE_OVERHEAD];
	size_t vlen, len;
	long long exp, life;

	(void)state;
	assert_int_equal(sharedcache_init(&sc, key1, 32), 0);
	grant(&k, "user_id:alice inbox:read:messages");
	grant(&k2, "user_id:bob inbox:read:messages");
	assert_int_equal(sharedcache_name(&sc, "courier-broker:p:", &k, name, sizeof(name)), 0);
	assert_int_equal(sharedcache_name(&sc, "courier-broker:p:", &k2, name2, sizeof(name2)), 0);
	assert_string_not_equal(name, name2);
	assert_true(strncmp(name, "courier-broker:p:tc:", 20) == 0);
	assert_int_equal(strlen(name), 20 + 32);
	assert_null(strstr(name, "alice"));
	assert_int_equal(
	    sharedcache_seal(&sc, name, token, strlen(token), 1700003600, 3600, v, sizeof(v), &vlen), 0);
	assert_int_equal(vlen, strlen(token) + SHAREDCACHE_OVERHEAD);
	assert_null(memmem(v, vlen, "eyJ", 3));
	assert_int_equal(sharedcache_open(&sc, name, v, vlen, out, sizeof(out), &len, &exp, &life), 0);
	assert_string_equal(out, token);
	assert_int_equal(exp, 1700003600);
	assert_int_equal(life, 3600);
	/* Two seals of one token differ (a fresh nonce each time). */
	{
		unsigned char v2[sizeof(v)];
		size_t v2len;
		assert_int_equal(sharedcache_seal(&sc, name, token, strlen(token), 1700003600, 3600, v2,
		                                  sizeof(v2), &v2len),
		                 0);
		assert_memory_not_equal(v, v2, vlen);
	}
	sharedcache_wipe(&sc);
}

static void test_refuses_tampering_other_names_and_keys(void **state)
{
	struct sharedcache sc, other;
	struct grantcache_key k, k2;
	char name[SHAREDCACHE_NAME_MAX], name2[SHAREDCACHE_NAME_MAX], out[GRANTCACHE_TOKEN_MAX + 1];
	unsigned char v[sizeof(token) + SHAREDCACHE_OVERHEAD];
	size_t vlen, len;
	long long exp, life;

	(void)state;
	assert_int_equal(sharedcache_init(&sc, key1, 32), 0);
	assert_int_equal(sharedcache_init(&other, key2, 32), 0);
	assert_int_equal(sharedcache_init(&other, key2, 31), -1);
	assert_int_equal(sharedcache_init(&other, key2, 32), 0);
	grant(&k, "user_id:alice");
	grant(&k2, "user_id:mallory");
	sharedcache_name(&sc, "p:", &k, name, sizeof(name));
	sharedcache_name(&sc, "p:", &k2, name2, sizeof(name2));
	assert_int_equal(sharedcache_seal(&sc, name, token, strlen(token), 1, 2, v, sizeof(v), &vlen), 0);
	/* Moved under another grant's name: refused. */
	assert_int_equal(sharedcache_open(&sc, name2, v, vlen, out, sizeof(out), &len, &exp, &life), -1);
	/* Another cluster's key: refused, and names differ. */
	assert_int_equal(sharedcache_open(&other, name, v, vlen, out, sizeof(out), &len, &exp, &life), -1);
	{
		char oname[SHAREDCACHE_NAME_MAX];
		sharedcache_name(&other, "p:", &k, oname, sizeof(oname));
		assert_string_not_equal(oname, name);
	}
	/* Any flipped byte: refused. */
	for (size_t i = 0; i < vlen; i += 7) {
		v[i] ^= 1;
		assert_int_equal(sharedcache_open(&sc, name, v, vlen, out, sizeof(out), &len, &exp, &life),
		                 -1);
		v[i] ^= 1;
	}
	/* Truncated: refused. */
	assert_int_equal(sharedcache_open(&sc, name, v, 10, out, sizeof(out), &len, &exp, &life), -1);
	assert_int_equal(sharedcache_open(&sc, name, v, vlen, out, sizeof(out), &len, &exp, &life), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_roundtrip_and_names),
	    cmocka_unit_test(test_refuses_tampering_other_names_and_keys),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
