/*
 * test_buf.c — unit tests for src/buf.c.
 *
 * Owns the proof that a buffer never passes its cap, fails for good once it
 * failed, and hands over NUL-terminated data.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

static void test_grows_and_takes(void **state)
{
	struct buf b;
	char *p;
	size_t len;

	(void)state;
	buf_init(&b, 1 << 20);
	for (int i = 0; i < 1000; i++)
		assert_int_equal(buf_add(&b, "abc", 3), 0);
	assert_int_equal(b.len, 3000);
	assert_int_equal(b.data[3000], '\0');
	assert_int_equal(buf_addf(&b, "[%d:%s]", 42, "x"), 0);
	assert_string_equal(b.data + 3000, "[42:x]");
	p = buf_take(&b, &len);
	assert_non_null(p);
	assert_int_equal(len, 3006);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	free(p);
}

static void test_cap_is_exact(void **state)
{
	struct buf b;

	(void)state;
	buf_init(&b, 8);
	assert_int_equal(buf_add(&b, "12345678", 8), 0); /* exactly the cap */
	assert_true(b.cap <= 9);
	assert_int_equal(buf_add(&b, "9", 1), -1);
	assert_null(b.data);                      /* freed on failure */
	assert_int_equal(buf_add(&b, "", 0), -1); /* failed for good */
	assert_int_equal(buf_addf(&b, "x"), -1);
	assert_null(buf_take(&b, NULL));
	buf_free(&b); /* usable again, empty */
	assert_int_equal(buf_add(&b, "ok", 2), 0);
	assert_string_equal(b.data, "ok");
	buf_free(&b);
}

static void test_addf_over_cap(void **state)
{
	struct buf b;

	(void)state;
	buf_init(&b, 10);
	assert_int_equal(buf_addf(&b, "%s", "0123456789"), 0);
	assert_int_equal(buf_addf(&b, "%d", 1), -1);
	assert_null(b.data);
	buf_free(&b);
}

static void test_reset_and_empty_take(void **state)
{
	struct buf b;
	char *p;
	size_t len = 99;

	(void)state;
	buf_init(&b, 100);
	p = buf_take(&b, &len);
	assert_string_equal(p, "");
	assert_int_equal(len, 0);
	free(p);
	assert_int_equal(buf_add(&b, "abc", 3), 0);
	buf_reset(&b);
	assert_int_equal(b.len, 0);
	assert_string_equal(b.data, "");
	assert_int_equal(buf_add(&b, "de", 2), 0);
	assert_string_equal(b.data, "de");
	buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_grows_and_takes),
	    cmocka_unit_test(test_cap_is_exact),
	    cmocka_unit_test(test_addf_over_cap),
	    cmocka_unit_test(test_reset_and_empty_take),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
