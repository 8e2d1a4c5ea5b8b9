/* test_grantcache.c — identical grants' keys and the token cache (src/grantcache.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "grantcache.h"
#include "secret.h"

#define URL "http://127.0.0.1:1/auth/issue-token"
#define NOW 1800000000.0

static struct secret key_a, key_b;

static int setup(void **state)
{
	(void)state;
	return secret_set(&key_a, "key-a", 5) || secret_set(&key_b, "key-b", 5);
}

static int teardown(void **state)
{
	(void)state;
	secret_clear(&key_a);
	secret_clear(&key_b);
	return 0;
}

static int reset(void **state)
{
	(void)state;
	grantcache_clear();
	grantcache_set_max(GRANTCACHE_MAX_ENTRIES);
	return 0;
}

static void key_for(struct grantcache_key *k, const char *user_scope, long long s)
{
	grantcache_key(k, "acme", URL, &key_a, "0123456789abcdef", user_scope, s);
}

/* Every part of a grant is in its key; the same parts give the same key. */
static void t_key_parts(void **state)
{
	struct grantcache_key a, b;

	(void)state;
	key_for(&a, "user_id:alice read:brands", 3600);
	key_for(&b, "user_id:alice read:brands", 3600);
	assert_memory_equal(a.h, b.h, sizeof(a.h));
	key_for(&b, "user_id:alice read:brands", 3601);
	assert_memory_not_equal(a.h, b.h, sizeof(a.h));
	key_for(&b, "user_id:bob read:brands", 3600);
	assert_memory_not_equal(a.h, b.h, sizeof(a.h));
	grantcache_key(&b, "other", URL, &key_a, "0123456789abcdef", "user_id:alice read:brands", 3600);
	assert_memory_not_equal(a.h, b.h, sizeof(a.h));
	grantcache_key(&b, "acme", URL, &key_b, "0123456789abcdef", "user_id:alice read:brands", 3600);
	assert_memory_not_equal(a.h, b.h, sizeof(a.h));
	grantcache_key(&b, "acme", URL, &key_a, "fedcba9876543210", "user_id:alice read:brands", 3600);
	assert_memory_not_equal(a.h, b.h, sizeof(a.h));
	grantcache_key(&b, "acme", "http://127.0.0.1:2/auth/issue-token", &key_a, "0123456789abcdef",
	               "user_id:alice read:brands", 3600);
	assert_memory_not_equal(a.h, b.h, sizeof(a.h));
	/* Length-prefixed parts: moving a byte from one part to the next changes the key. */
	grantcache_key(&a, "ab", URL, &key_a, "r", "c", 1);
	grantcache_key(&b, "a", URL, &key_a, "r", "bc", 1);
	assert_memory_not_equal(a.h, b.h, sizeof(a.h));
}

/* A hit while at least half the lifetime remains, with the token's own exp. */
static void t_half_life(void **state)
{
	struct grantcache_key k;
	char tok[GRANTCACHE_TOKEN_MAX + 1];
	long long exp = 0;
	size_t len = 0;

	(void)state;
	key_for(&k, "user_id:alice", 100);
	assert_int_equal(grantcache_get(&k, NOW, tok, sizeof(tok), &len, &exp), -1);
	grantcache_put(&k, "acme", "a.b.c", 5, (long long)NOW + 100, 100);
	assert_int_equal(grantcache_size(), 1);
	assert_int_equal(grantcache_get(&k, NOW, tok, sizeof(tok), &len, &exp), 0);
	assert_string_equal(tok, "a.b.c");
	assert_int_equal(len, 5);
	assert_int_equal(exp, (long long)NOW + 100);
	assert_int_equal(grantcache_get(&k, NOW + 50, tok, sizeof(tok), &len, &exp), 0);
	/* Past the half-life: a miss, and the entry is gone. */
	assert_int_equal(grantcache_get(&k, NOW + 50.5, tok, sizeof(tok), &len, &exp), -1);
	assert_int_equal(grantcache_size(), 0);
	assert_int_equal(grantcache_get(&k, NOW, tok, sizeof(tok), &len, &exp), -1);
}

/* A token already short of half its lifetime at put is never served. */
static void t_short_token(void **state)
{
	struct grantcache_key k;
	char tok[64];
	long long exp;
	size_t len;

	(void)state;
	key_for(&k, "user_id:alice", 100);
	grantcache_put(&k, "acme", "a.b.c", 5, (long long)NOW + 40, 100);
	assert_int_equal(grantcache_get(&k, NOW, tok, sizeof(tok), &len, &exp), -1);
	/* A caller's buffer too small for the token: a miss, never a cut token. */
	grantcache_put(&k, "acme", "a.b.c", 5, (long long)NOW + 100, 100);
	assert_int_equal(grantcache_get(&k, NOW, tok, 5, &len, &exp), -1);
}

/* Bounded: the oldest entry goes first; a put of the same key replaces. */
static void t_bounded_oldest_first(void **state)
{
	struct grantcache_key k[4];
	char tok[64], scope[32];
	long long exp;
	size_t len;

	(void)state;
	grantcache_set_max(3);
	for (int i = 0; i < 4; i++) {
		snprintf(scope, sizeof(scope), "user_id:u%d", i);
		key_for(&k[i], scope, 100);
	}
	for (int i = 0; i < 3; i++)
		grantcache_put(&k[i], "acme", "t.o.k", 5, (long long)NOW + 100, 100);
	grantcache_put(&k[0], "acme", "n.e.w", 5, (long long)NOW + 100, 100); /* now the newest */
	assert_int_equal(grantcache_size(), 3);
	grantcache_put(&k[3], "acme", "t.o.k", 5, (long long)NOW + 100, 100);
	assert_int_equal(grantcache_size(), 3);
	assert_int_equal(grantcache_get(&k[1], NOW, tok, sizeof(tok), &len, &exp), -1);
	assert_int_equal(grantcache_get(&k[0], NOW, tok, sizeof(tok), &len, &exp), 0);
	assert_string_equal(tok, "n.e.w");
	assert_int_equal(grantcache_get(&k[2], NOW, tok, sizeof(tok), &len, &exp), 0);
	assert_int_equal(grantcache_get(&k[3], NOW, tok, sizeof(tok), &len, &exp), 0);
}

/* Dropping a tenant's entries leaves the others'. */
static void t_drop_tenant(void **state)
{
	struct grantcache_key a, b;
	char tok[64];
	long long exp;
	size_t len;

	(void)state;
	grantcache_key(&a, "acme", URL, &key_a, "r", "user_id:alice", 100);
	grantcache_key(&b, "beta", URL, &key_a, "r", "user_id:alice", 100);
	grantcache_put(&a, "acme", "a.a.a", 5, (long long)NOW + 100, 100);
	grantcache_put(&b, "beta", "b.b.b", 5, (long long)NOW + 100, 100);
	grantcache_drop_tenant("acme");
	assert_int_equal(grantcache_get(&a, NOW, tok, sizeof(tok), &len, &exp), -1);
	assert_int_equal(grantcache_get(&b, NOW, tok, sizeof(tok), &len, &exp), 0);
	grantcache_clear();
	assert_int_equal(grantcache_size(), 0);
}

/* Tokens too large, and empty keys, are not kept. */
static void t_refused(void **state)
{
	static char big[GRANTCACHE_TOKEN_MAX + 2];
	struct grantcache_key k, zero;

	(void)state;
	memset(big, 'x', sizeof(big) - 1);
	key_for(&k, "user_id:alice", 100);
	grantcache_put(&k, "acme", big, sizeof(big) - 1, (long long)NOW + 100, 100);
	assert_int_equal(grantcache_size(), 0);
	memset(&zero, 0, sizeof(zero));
	grantcache_put(&zero, "acme", "a.b.c", 5, (long long)NOW + 100, 100);
	assert_int_equal(grantcache_size(), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(t_key_parts, reset),
	    cmocka_unit_test_setup(t_half_life, reset),
	    cmocka_unit_test_setup(t_short_token, reset),
	    cmocka_unit_test_setup(t_bounded_oldest_first, reset),
	    cmocka_unit_test_setup(t_drop_tenant, reset),
	    cmocka_unit_test_setup(t_refused, reset),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
