/* test_secret.c — key material by reference, zeroed, compared in constant time (src/secret.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "secret.h"

static char dir[] = "/tmp/test_secret_XXXXXX";

static int setup(void **state)
{
	(void)state;
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	static const char *const names[] = {"open.key", "group.key", "ok.key", "empty.key", "fifo.key"};
	char path[256];

	(void)state;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		unlink(path);
	}
	return rmdir(dir);
}

static const char *write_file(const char *name, const char *text, mode_t mode)
{
	static char path[256];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	assert_int_equal(chmod(path, mode), 0);
	return path;
}

static void t_env(void **state)
{
	struct secret s = {0};
	struct secret_ref ref = {.env = "TEST_SECRET_VALUE"};
	char err[256];

	(void)state;
	unsetenv("TEST_SECRET_VALUE");
	assert_int_equal(secret_load(&ref, &s, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "TEST_SECRET_VALUE"));
	setenv("TEST_SECRET_VALUE", "", 1);
	assert_int_equal(secret_load(&ref, &s, err, sizeof(err)), -1);
	setenv("TEST_SECRET_VALUE", "ck_live_abc", 1);
	assert_int_equal(secret_load(&ref, &s, err, sizeof(err)), 0);
	assert_int_equal(s.len, 11);
	assert_memory_equal(s.data, "ck_live_abc", 11);
	assert_int_equal(strlen(s.fingerprint), 16);
	assert_null(strstr(s.fingerprint, "ck_live"));
	secret_clear(&s);
	assert_null(s.data);
	assert_int_equal(s.len, 0);
}

static void t_file_modes(void **state)
{
	struct secret s = {0};
	struct secret_ref ref = {0};
	char err[256];

	(void)state;
	ref.file = (char *)write_file("open.key", "topsecret\n", 0644);
	assert_int_equal(secret_load(&ref, &s, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "group or others"));
	assert_null(strstr(err, "topsecret")); /* the value is never echoed */
	ref.file = (char *)write_file("group.key", "topsecret\n", 0640);
	assert_int_equal(secret_load(&ref, &s, err, sizeof(err)), -1);
	ref.file = (char *)write_file("ok.key", "topsecret\r\n", 0600);
	assert_int_equal(secret_load(&ref, &s, err, sizeof(err)), 0);
	assert_int_equal(s.len, 9); /* trailing CR LF dropped */
	assert_memory_equal(s.data, "topsecret", 9);
	secret_clear(&s);
	ref.file = (char *)write_file("empty.key", "\n", 0600);
	assert_int_equal(secret_load(&ref, &s, err, sizeof(err)), -1);
	ref.file = (char *)"/nonexistent/courier.key";
	assert_int_equal(secret_load(&ref, &s, err, sizeof(err)), -1);
	ref.file = (char *)dir; /* a folder is not a secret */
	assert_int_equal(secret_load(&ref, &s, err, sizeof(err)), -1);
	/* A FIFO is refused at once: opening it never waits for a writer. */
	{
		char fifo[256];
		snprintf(fifo, sizeof(fifo), "%s/fifo.key", dir);
		assert_int_equal(mkfifo(fifo, 0600), 0);
		ref.file = fifo;
		assert_int_equal(secret_load(&ref, &s, err, sizeof(err)), -1);
	}
}

/* A Kubernetes secret volume: KEY -> ..data/KEY, ..data -> ..TIMESTAMP/,
 * updated by re-pointing ..data. The rules hold for the file at the end. */
static void t_kubernetes_symlinks(void **state)
{
	struct secret s = {0};
	struct secret_ref ref = {0};
	char err[512], p[8][256];

	(void)state;
	snprintf(p[0], sizeof(p[0]), "%s/..2026_12_05", dir);
	snprintf(p[1], sizeof(p[1]), "%s/..2026_12_05/api-key", dir);
	snprintf(p[2], sizeof(p[2]), "%s/..data", dir);
	snprintf(p[3], sizeof(p[3]), "%s/api-key", dir);
	snprintf(p[4], sizeof(p[4]), "%s/..2026_12_06", dir);
	snprintf(p[5], sizeof(p[5]), "%s/..2026_12_06/api-key", dir);
	snprintf(p[6], sizeof(p[6]), "%s/..data_tmp", dir);
	snprintf(p[7], sizeof(p[7]), "%s/loose.key", dir);
	assert_int_equal(mkdir(p[0], 0755), 0);
	assert_int_equal(mkdir(p[4], 0755), 0);
	write_file("..2026_12_05/api-key", "first\n", 0400);
	write_file("..2026_12_06/api-key", "second\n", 0644);
	assert_int_equal(symlink("..2026_12_05", p[2]), 0);
	assert_int_equal(symlink("..data/api-key", p[3]), 0);
	ref.file = p[3];
	assert_int_equal(secret_load(&ref, &s, err, sizeof(err)), 0);
	assert_memory_equal(s.data, "first", 5);
	secret_clear(&s);
	/* The update re-points ..data: the next load reads the new file, and
	 * refuses it while its mode lets others read it, naming where it led. */
	assert_int_equal(symlink("..2026_12_06", p[6]), 0);
	assert_int_equal(rename(p[6], p[2]), 0);
	assert_int_equal(secret_load(&ref, &s, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "group or others"));
	assert_non_null(strstr(err, "..2026_12_06/api-key"));
	assert_null(strstr(err, "second"));
	assert_int_equal(chmod(p[5], 0600), 0);
	assert_int_equal(secret_load(&ref, &s, err, sizeof(err)), 0);
	assert_memory_equal(s.data, "second", 6);
	secret_clear(&s);
	/* A link to a folder or a missing file is still refused. */
	assert_int_equal(symlink("..2026_12_06", p[7]), 0);
	ref.file = p[7];
	assert_int_equal(secret_load(&ref, &s, err, sizeof(err)), -1);
	unlink(p[7]);
	assert_int_equal(symlink("nowhere", p[7]), 0);
	assert_int_equal(secret_load(&ref, &s, err, sizeof(err)), -1);
	unlink(p[7]);
	unlink(p[3]);
	unlink(p[2]);
	unlink(p[1]);
	unlink(p[5]);
	rmdir(p[0]);
	rmdir(p[4]);
}

/* A file someone else owns could be rewritten by them: refused, whatever its
 * mode (only root can make one here; elsewhere the case cannot arise). */
static void t_owner(void **state)
{
	struct secret s = {0};
	struct secret_ref ref = {0};
	char err[512];

	(void)state;
	if (geteuid() != 0)
		skip();
	ref.file = (char *)write_file("ok.key", "topsecret\n", 0600);
	assert_int_equal(chown(ref.file, 4321, 4321), 0);
	assert_int_equal(secret_load(&ref, &s, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "owned by uid 4321"));
	assert_int_equal(chown(ref.file, 0, 0), 0);
	assert_int_equal(secret_load(&ref, &s, err, sizeof(err)), 0);
	secret_clear(&s);
}

static void t_equals(void **state)
{
	struct secret s = {0};

	(void)state;
	assert_false(secret_equals(&s, "x", 1)); /* unset never matches */
	assert_int_equal(secret_set(&s, "billing-key", 11), 0);
	assert_true(secret_equals(&s, "billing-key", 11));
	assert_false(secret_equals(&s, "billing-kez", 11));
	assert_false(secret_equals(&s, "billing-key ", 12));
	assert_false(secret_equals(&s, "billing-ke", 10));
	assert_false(secret_equals(&s, "", 0));
	assert_false(secret_equals(&s, NULL, 0));
	secret_clear(&s);
	assert_int_equal(secret_set(&s, "", 0), -1); /* empty secrets are refused */
}

/* One candidate digest against many secrets, as the client_keys check does. */
static void t_digest_once(void **state)
{
	struct secret a = {0}, b = {0};
	unsigned char md[SECRET_DIGEST_LEN];
	char hex[17];
	static char big[70000];

	(void)state;
	assert_int_equal(secret_set(&a, "key-a", 5), 0);
	assert_int_equal(secret_set(&b, "key-b", 5), 0);
	assert_true(secret_candidate_digest("key-b", 5, md));
	assert_false(secret_matches(&a, md));
	assert_true(secret_matches(&b, md));
	/* The fingerprint is the digest's start. */
	secret_hex(b.digest, 8, hex);
	assert_string_equal(hex, b.fingerprint);
	/* Longer than any secret: matches nothing, and is not even hashed. */
	memset(big, 'k', sizeof(big));
	assert_false(secret_candidate_digest(big, sizeof(big), md));
	assert_false(secret_equals(&b, big, sizeof(big)));
	secret_clear(&b);
	assert_true(secret_candidate_digest("key-b", 5, md));
	assert_false(secret_matches(&b, md)); /* cleared: digest gone */
	secret_clear(&a);
}

/* User information in a URL's authority, and only there. */
static void t_secret_in_url(void **state)
{
	(void)state;
	assert_true(secret_in_url("https://me:pw@api.courier.com"));
	assert_true(secret_in_url("https://me@api.courier.com/v1"));
	assert_true(secret_in_url("http://127.0.0.1@example.com/"));
	assert_false(secret_in_url("https://api.courier.com"));
	assert_false(secret_in_url("https://api.courier.com/a@b"));
	assert_false(secret_in_url("https://api.courier.com?next=a@b"));
	assert_false(secret_in_url("https://api.courier.com#a@b"));
}

static void t_fingerprints_differ(void **state)
{
	struct secret a = {0}, b = {0};

	(void)state;
	assert_int_equal(secret_set(&a, "key-one", 7), 0);
	assert_int_equal(secret_set(&b, "key-two", 7), 0);
	assert_string_not_equal(a.fingerprint, b.fingerprint);
	secret_clear(&a);
	secret_clear(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(t_env),
	    cmocka_unit_test(t_file_modes),
	    cmocka_unit_test(t_kubernetes_symlinks),
	    cmocka_unit_test(t_owner),
	    cmocka_unit_test(t_equals),
	    cmocka_unit_test(t_digest_once),
	    cmocka_unit_test(t_fingerprints_differ),
	    cmocka_unit_test(t_secret_in_url),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
