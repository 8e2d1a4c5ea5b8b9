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

static void ordered_line(void)
{
	struct log_line l;

	assert_true(log_line_begin(&l, LOG_ERROR, "token_request"));
	log_line_str(&l, "zeta", "https://a/b");
	log_line_str(&l, "alpha", "q\"b\\s\n\x01\x7f");
	log_line_str(&l, "skipped", NULL);
	log_line_int(&l, "status", 502);
	log_line_ms(&l, "latency_ms", 1.23456);
	log_line_bool(&l, "capped", true);
	log_line_lines(&l, "policy_log", "one\ntwo/2\n");
	log_line_open(&l, "tenants", '[');
	log_line_open(&l, NULL, '{');
	log_line_str(&l, "name", "a");
	log_line_close(&l, '}');
	log_line_open(&l, NULL, '{');
	log_line_close(&l, '}');
	log_line_close(&l, ']');
	log_line_end(&l);
}

static void t_fields_in_the_order_written(void **state)
{
	char *out = capture(ordered_line);
	const char *want = "\"level\":\"error\",\"event\":\"token_request\",\"zeta\":\"https://a/b\","
	                   "\"alpha\":\"q\\\"b\\\\s\\n\\u0001\\u007f\",\"status\":502,"
	                   "\"latency_ms\":1.235,\"capped\":true,\"policy_log\":[\"one\",\"two/2\"],"
	                   "\"tenants\":[{\"name\":\"a\"},{}]}\n";

	(void)state;
	assert_true(strncmp(out, "{\"time\":\"", 9) == 0);
	assert_non_null(strstr(out, want));
	assert_null(strstr(out, "\\/"));
	free(out);
}

static void levels(void)
{
	log_set_level(LOG_WARN);
	log_msg("info", "hidden info");
	log_msg("debug", "hidden debug");
	log_msg("warn", "shown warn");
	log_msg("error", "shown error");
	log_set_level(LOG_INFO);
	log_msg("info", "shown info");
	log_msg("debug", "hidden debug");
}

static void t_levels_filter(void **state)
{
	char *out = capture(levels);

	(void)state;
	assert_null(strstr(out, "hidden"));
	assert_int_equal(count(out, "shown"), 3);
	assert_non_null(strstr(out, "\"level\":\"warn\",\"msg\":\"shown warn\""));
	assert_int_equal(log_level_parse("error"), LOG_ERROR);
	assert_int_equal(log_level_parse("debug"), LOG_DEBUG);
	assert_int_equal(log_level_parse("loud"), -1);
	assert_int_equal(log_level_parse(NULL), -1);
	free(out);
}

static void t_finish_repairs_utf8(void **state)
{
	struct log_line l;
	size_t len = 0;
	char *s;

	(void)state;
	log_line_init(&l);
	log_line_str(&l, "a", "x\xffy/z");
	s = log_line_finish(&l, &len);
	assert_non_null(s);
	assert_string_equal(s, "{\"a\":\"x\xef\xbf\xbdy/z\"}\n");
	assert_int_equal(len, strlen(s));
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(t_fields_in_the_order_written),
	    cmocka_unit_test(t_levels_filter),
	    cmocka_unit_test(t_finish_repairs_utf8),
	    cmocka_unit_test(t_warnings_are_limited_and_the_rest_reported),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
