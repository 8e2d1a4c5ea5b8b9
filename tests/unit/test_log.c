/* test_log.c — log lines and the rate limit on client-caused warnings (src/log.c). */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"

/* Runs fn with stderr sent to a file; returns what it wrote (malloc'ed). */
static char *capture(void (*fn)(void))
{
	char path[] = "/tmp/test_log_XXXXXX", *out;
	int fd = mkstemp(path), saved = dup(STDERR_FILENO);
	off_t len;

	assert_true(fd >= 0 && saved >= 0);
	unlink(path);
	dup2(fd, STDERR_FILENO);
	fn();
	dup2(saved, STDERR_FILENO);
	close(saved);
	len = lseek(fd, 0, SEEK_END);
	out = calloc(1, (size_t)len + 1);
	assert_non_null(out);
	assert_int_equal(pread(fd, out, (size_t)len, 0), len);
	close(fd);
	return out;
}

static size_t count(const char *s, const char *what)
{
	size_t n = 0;

	for (const char *p = s; (p = strstr(p, what)); p += strlen(what))
		n++;
	return n;
}

static void flood(void)
{
	for (int i = 0; i < 100; i++)
		log_warn_limited("http: dropped connection %d", i);
}

static void after_a_second(void)
{
	usleep(1100 * 1000);
	/* The tick reports the dropped lines once their second is over; then nothing waits. */
	assert_int_equal(log_limited_tick(), 0);
	assert_int_equal(log_limited_tick(), 0);
}

static void t_warnings_are_limited_and_the_rest_reported(void **state)
{
	char *out;

	(void)state;
	out = capture(flood);
	assert_int_equal(count(out, "http: dropped connection"), LOG_LIMITED_PER_S);
	assert_int_equal(count(out, "\n"), LOG_LIMITED_PER_S);
	free(out);
	assert_int_equal(log_suppressed_total(), 100 - LOG_LIMITED_PER_S);

	out = capture(after_a_second);
	assert_int_equal(count(out, "\n"), 1);
	assert_non_null(strstr(out, "95 similar warnings suppressed"));
	assert_non_null(strstr(out, "\"level\":\"warn\""));
	free(out);

	/* A new second: lines pass again. */
	out = capture(flood);
	assert_int_equal(count(out, "http: dropped connection"), LOG_LIMITED_PER_S);
	free(out);
	assert_int_equal(log_suppressed_total(), 2 * (100 - LOG_LIMITED_PER_S));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(t_warnings_are_limited_and_the_rest_reported),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
