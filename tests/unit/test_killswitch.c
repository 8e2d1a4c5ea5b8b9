/* test_killswitch.c — deny files, the verdict, the watcher (src/killswitch.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "denyset.h"
#include "grantcache.h"
#include "killswitch.h"
#include "secret.h"

#define URL "http://127.0.0.1:1/auth/issue-token"

static struct denyset *parse(const char *text, char *why)
{
	return denyset_parse("deny.txt", text, strlen(text), why, 256);
}

static void t_parse(void **state)
{
	char why[256] = "";
	struct denyset *s = parse("# incident 42\n  mallory \r\n\nbob\nmallory\n#\n#alice\n", why);

	(void)state;
	assert_non_null(s);
	assert_int_equal(denyset_size(s), 3); /* mallory once, bob, "#alice" is an id */
	assert_true(denyset_has(s, "mallory"));
	assert_true(denyset_has(s, "bob"));
	assert_true(denyset_has(s, "#alice"));
	assert_false(denyset_has(s, "alice"));
	assert_false(denyset_has(s, "# incident 42"));
	denyset_unref(s);

	s = parse("", why);
	assert_non_null(s);
	assert_int_equal(denyset_size(s), 0);
	assert_false(denyset_has(s, "x"));
	denyset_unref(s);
}

static void t_parse_refuses_invalid_ids(void **state)
{
	static const char *const bad[] = {"ok\nbad id\n", "ok\n\x01\n", "ok\nbad\x7fid\n", "ok\n\xff\xfe\n"};
	char why[256];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why[0] = '\0';
		assert_null(parse(bad[i], why));
		assert_non_null(strstr(why, "deny.txt:2: not a valid user id"));
	}
	/* 257 bytes: one too many. */
	{
		char long_id[300];
		memset(long_id, 'a', 257);
		long_id[257] = '\0';
		assert_null(parse(long_id, why));
	}
	/* A NUL inside a line is not a shorter id. */
	assert_null(denyset_parse("deny.txt", "ab\0cd\n", 6, why, sizeof(why)));
}

static void t_check(void **state)
{
	char why[256];
	struct tenant t;

	(void)state;
	memset(&t, 0, sizeof(t));
	t.name = "acme";
	t.enabled = true;
	assert_int_equal(killswitch_check(&t, "mallory"), KILLSWITCH_PASS);
	t.deny_path = "/nonexistent/deny.txt";
	t.deny_users = parse("mallory\n", why);
	assert_int_equal(killswitch_check(&t, "mallory"), KILLSWITCH_USER_DENIED);
	assert_int_equal(killswitch_check(&t, "alice"), KILLSWITCH_PASS);
	t.enabled = false;
	assert_int_equal(killswitch_check(&t, "alice"), KILLSWITCH_TENANT_DISABLED);
	assert_string_equal(killswitch_code(KILLSWITCH_TENANT_DISABLED), "tenant_disabled");
	assert_string_equal(killswitch_code(KILLSWITCH_USER_DENIED), "user_denied");
	denyset_unref(t.deny_users);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/* Polls the verdict until it is want, for at most 3 s (the switch applies
 * within about a second). */
static enum killswitch_verdict wait_verdict(const struct tenant *t, const char *user,
                                            enum killswitch_verdict want)
{
	enum killswitch_verdict v = killswitch_check(t, user);

	for (int i = 0; i < 300 && v != want; i++) {
		usleep(10000);
		v = killswitch_check(t, user);
	}
	return v;
}

static void t_watcher(void **state)
{
	char dir[] = "/tmp/test_killswitch.XXXXXX", path[256], tmp[256], why[256];
	struct tenant t;
	struct config cfg;
	struct secret key;
	struct grantcache_key k;
	unsigned long long ok0, ok, failed0, failed;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/deny.txt", dir);
	snprintf(tmp, sizeof(tmp), "%s/.deny.txt.new", dir);
	write_file(path, "mallory\n");
	memset(&t, 0, sizeof(t));
	memset(&cfg, 0, sizeof(cfg));
	t.name = "acme";
	t.enabled = true;
	t.deny_path = path;
	t.deny_users = denyset_load(path, why, sizeof(why));
	assert_non_null(t.deny_users);
	cfg.tenants = &t;
	cfg.n_tenants = 1;

	/* A cached token of bob's, dropped once bob is listed. */
	memset(&key, 0, sizeof(key));
	assert_int_equal(secret_set(&key, "k", 1), 0);
	grantcache_key(&k, "acme", URL, &key, "rev", "user_id:bob inbox:read:messages", 3600);
	grantcache_put(&k, "acme", "tok", 3, 4000000000LL, 3600);
	grantcache_key(&k, "acme", URL, &key, "rev", "user_id:carol inbox:read:messages", 3600);
	grantcache_put(&k, "acme", "tok", 3, 4000000000LL, 3600);
	assert_int_equal(grantcache_size(), 2);

	killswitch_counts(&ok0, &failed0);
	killswitch_configure(&cfg);
	assert_int_equal(killswitch_check(&t, "mallory"), KILLSWITCH_USER_DENIED);
	assert_int_equal(killswitch_check(&t, "bob"), KILLSWITCH_PASS);

	/* Edited in place. */
	write_file(path, "mallory\nbob\n");
	assert_int_equal(wait_verdict(&t, "bob", KILLSWITCH_USER_DENIED), KILLSWITCH_USER_DENIED);
	assert_int_equal(grantcache_size(), 1); /* bob's went, carol's stays */

	/* Replaced by a rename. */
	write_file(tmp, "bob\n");
	assert_int_equal(rename(tmp, path), 0);
	assert_int_equal(wait_verdict(&t, "mallory", KILLSWITCH_PASS), KILLSWITCH_PASS);

	/* Removed: the last list stays. */
	killswitch_counts(&ok, &failed);
	assert_int_equal(unlink(path), 0);
	for (int i = 0; i < 300 && failed == failed0; i++) {
		usleep(10000);
		killswitch_counts(&ok, &failed);
	}
	assert_true(failed > failed0);
	assert_true(ok > ok0);
	assert_int_equal(killswitch_check(&t, "bob"), KILLSWITCH_USER_DENIED);

	killswitch_stop();
	/* After stop: the load's list again (nothing watched). */
	assert_int_equal(killswitch_check(&t, "bob"), KILLSWITCH_PASS);
	assert_int_equal(killswitch_check(&t, "mallory"), KILLSWITCH_USER_DENIED);
	denyset_unref(t.deny_users);
	grantcache_clear();
	secret_clear(&key);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(t_parse),
	    cmocka_unit_test(t_parse_refuses_invalid_ids),
	    cmocka_unit_test(t_check),
	    cmocka_unit_test(t_watcher),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
