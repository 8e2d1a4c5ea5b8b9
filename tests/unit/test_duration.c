/*
 * test_duration.c — unit tests for src/duration.c.
 *
 * Owns the proof that lifetimes parse the way Courier reads them, that a bare
 * number or a sub-second, negative or over-ten-year value is refused, and that
 * what goes to Courier always carries a unit. Must never test through anything
 * but duration.h.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <locale.h>
#include <string.h>

#include "duration.h"

#define TEN_YEARS 315576000LL

/* Parses s; returns the seconds, or -1 when refused. A refusal must leave the
 * output untouched. */
static long long parse(const char *s)
{
	long long v = -12345;
	int rc = duration_parse(s, strlen(s), &v);
	if (rc != 0) {
		assert_int_equal(rc, -1);
		assert_int_equal(v, -12345);
		return -1;
	}
	return v;
}

static void test_contract_examples(void **state)
{
	(void)state;
	assert_int_equal(parse("1h"), 3600);
	assert_int_equal(parse("2 days"), 172800);
	assert_int_equal(parse("2.5 hrs"), 9000);
	assert_int_equal(parse("5s"), 5);
	assert_int_equal(parse("1y"), 31557600); /* 365.25 days */
	assert_int_equal(parse("90m"), 5400);
	assert_int_equal(parse("7d"), 604800);
	assert_int_equal(parse("1w"), 604800);
}

static void test_every_unit(void **state)
{
	static const struct {
		const char *s;
		long long v;
	} cases[] = {
	    {"2000ms", 2},
	    {"2000msec", 2},
	    {"2000msecs", 2},
	    {"2000millisecond", 2},
	    {"2000 milliseconds", 2},
	    {"3s", 3},
	    {"3sec", 3},
	    {"3secs", 3},
	    {"3second", 3},
	    {"3 seconds", 3},
	    {"2m", 120},
	    {"2min", 120},
	    {"2mins", 120},
	    {"2minute", 120},
	    {"2 minutes", 120},
	    {"2h", 7200},
	    {"2hr", 7200},
	    {"2hrs", 7200},
	    {"2hour", 7200},
	    {"2 hours", 7200},
	    {"1d", 86400},
	    {"1day", 86400},
	    {"1 days", 86400},
	    {"2w", 1209600},
	    {"2week", 1209600},
	    {"2 weeks", 1209600},
	    {"1yr", 31557600},
	    {"1yrs", 31557600},
	    {"1year", 31557600},
	    {"1 years", 31557600},
	};
	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		long long v = parse(cases[i].s);
		if (v != cases[i].v)
			fail_msg("\"%s\": got %lld, want %lld", cases[i].s, v, cases[i].v);
	}
}

static void test_case_insensitive(void **state)
{
	(void)state;
	assert_int_equal(parse("1H"), 3600);
	assert_int_equal(parse("2 DAYS"), 172800);
	assert_int_equal(parse("2.5 Hrs"), 9000);
	assert_int_equal(parse("1Y"), 31557600);
	assert_int_equal(parse("1500MS"), 1);
	assert_int_equal(parse("1 MiNuTe"), 60);
}

static void test_fractions(void **state)
{
	(void)state;
	assert_int_equal(parse("1.5s"), 1); /* floor, never up */
	assert_int_equal(parse("1.999s"), 1);
	assert_int_equal(parse("1.5m"), 90);
	assert_int_equal(parse("0.5h"), 1800);
	assert_int_equal(parse(".5h"), 1800);
	assert_int_equal(parse("1.25d"), 108000);
	assert_int_equal(parse("0.001h"), 3);  /* 3.6 s */
	assert_int_equal(parse("0.0003h"), 1); /* 1.08 s */
	assert_int_equal(parse("2.0000000000000000000001s"), 2);
	assert_int_equal(parse("0.99999999999999999999y"), 31557599);
	assert_int_equal(parse("1999ms"), 1);
	assert_int_equal(parse("1999.9ms"), 1);
	assert_int_equal(parse("0001h"), 3600);
	assert_int_equal(parse("1.h"), -1);
	assert_int_equal(parse("1..5h"), -1);
	assert_int_equal(parse("1.5.2h"), -1);
	assert_int_equal(parse(".h"), -1);
	assert_int_equal(parse("1,5h"), -1); /* no locale decimal comma */
}

static void test_locale_has_no_effect(void **state)
{
	(void)state;
	/* Where a comma locale exists, a strtod-based parser would change. */
	if (setlocale(LC_NUMERIC, "de_DE.UTF-8") == NULL)
		setlocale(LC_NUMERIC, "fr_FR.UTF-8");
	assert_int_equal(parse("2.5 hrs"), 9000);
	assert_int_equal(parse("2,5 hrs"), -1);
	setlocale(LC_ALL, "tr_TR.UTF-8"); /* dotless i */
	assert_int_equal(parse("1 MIN"), 60);
	setlocale(LC_ALL, "C");
}

static void test_bare_number_refused(void **state)
{
	(void)state;
	assert_int_equal(parse("3600"), -1); /* Courier would read milliseconds */
	assert_int_equal(parse("1"), -1);
	assert_int_equal(parse("2.5"), -1);
	assert_int_equal(parse("1 "), -1);
	assert_int_equal(parse(""), -1);
	assert_int_equal(parse("h"), -1);
	assert_int_equal(parse(" "), -1);
}

static void test_whitespace(void **state)
{
	(void)state;
	assert_int_equal(parse(" 1h"), -1);
	assert_int_equal(parse("1h "), -1);
	assert_int_equal(parse("1  h"), -1);
	assert_int_equal(parse("1\th"), -1);
	assert_int_equal(parse("1\nh"), -1);
	assert_int_equal(parse("1h\n"), -1);
	assert_int_equal(parse("1\xc2\xa0h"), -1);
}

static void test_sign_zero_and_subsecond(void **state)
{
	(void)state;
	assert_int_equal(parse("-1h"), -1);
	assert_int_equal(parse("+1h"), -1);
	assert_int_equal(parse("-0s"), -1);
	assert_int_equal(parse("0s"), -1);
	assert_int_equal(parse("0h"), -1);
	assert_int_equal(parse("0.0h"), -1);
	assert_int_equal(parse("500ms"), -1);
	assert_int_equal(parse("999ms"), -1);
	assert_int_equal(parse("0.9s"), -1);
	assert_int_equal(parse("0.0002h"), -1); /* 0.72 s */
	assert_int_equal(parse("1000ms"), 1);
	assert_int_equal(parse("1s"), 1);
}

static void test_ten_year_ceiling(void **state)
{
	(void)state;
	assert_int_equal(parse("10y"), TEN_YEARS);
	assert_int_equal(parse("3652.5d"), TEN_YEARS);
	assert_int_equal(parse("315576000s"), TEN_YEARS);
	assert_int_equal(parse("315576000999ms"), TEN_YEARS);
	assert_int_equal(parse("315576001s"), -1);
	assert_int_equal(parse("315576001000ms"), -1);
	assert_int_equal(parse("10.000001y"), -1);
	assert_int_equal(parse("3653d"), -1);
	assert_int_equal(parse("11y"), -1);
	/* Over the ceiling only through the fraction: 5259600 m is exactly 10 y. */
	assert_int_equal(parse("5259600m"), TEN_YEARS);
	assert_int_equal(parse("5259600.01m"), TEN_YEARS);
	assert_int_equal(parse("5259600.02m"), -1);
	assert_int_equal(parse("87660.0002h"), TEN_YEARS); /* + 0.72 s */
	assert_int_equal(parse("87660.0003h"), -1);
	assert_int_equal(parse("522w"), -1);
	assert_int_equal(parse("521w"), 521LL * 604800);
}

static void test_huge_numbers(void **state)
{
	(void)state;
	assert_int_equal(parse("99999999999999999999y"), -1);
	assert_int_equal(parse("18446744073709551617s"), -1); /* 2^64 + 1 */
	assert_int_equal(parse("9223372036854775808ms"), -1);
	assert_int_equal(parse("9223372036854775807s"), -1);
	assert_int_equal(parse("307445734561825861s"), -1); /* wraps to small if multiplied by 60 */
	assert_int_equal(parse("307445734561825861m"), -1);
	/* Products that wrap 64 bits to a small, plausible lifetime. */
	assert_int_equal(parse("584542046091y"), -1);                    /* 2^64 + 11789984 s */
	assert_int_equal(parse("213503982334602d"), -1);                 /* 2^64 + 61184 s */
	assert_int_equal(parse("30500568904944w"), -1);                  /* 2^64 + 579584 s */
	assert_int_equal(parse("00000000000000000000000000001h"), 3600); /* 31 bytes */
}

static void test_garbage(void **state)
{
	(void)state;
	assert_int_equal(parse("1hh"), -1);
	assert_int_equal(parse("1hx"), -1);
	assert_int_equal(parse("1e3s"), -1);
	assert_int_equal(parse("1E3s"), -1);
	assert_int_equal(parse("0x10s"), -1);
	assert_int_equal(parse("1h30m"), -1);
	assert_int_equal(parse("1 h 30 m"), -1);
	assert_int_equal(parse("inf s"), -1);
	assert_int_equal(parse("nan s"), -1);
	assert_int_equal(parse("1 hours ago"), -1);
	assert_int_equal(parse("1mo"), -1);
	assert_int_equal(parse("1 fortnight"), -1);
	assert_int_equal(parse("1\xc4\xb1"), -1); /* dotless i is not "i" */
	assert_int_equal(parse("1 m\xc4\xb1n"), -1);
	assert_int_equal(parse("1 hour\xef\xbb\xbf"), -1);
}

static void test_length_and_nul(void **state)
{
	char buf[40];
	long long v = 0;
	(void)state;
	assert_int_equal(duration_parse("1h\0garbage", 2, &v), 0);
	assert_int_equal(v, 3600);
	assert_int_equal(duration_parse("1h\0", 3, &v), -1);
	assert_int_equal(duration_parse("1\0h", 3, &v), -1);
	assert_int_equal(duration_parse("\0", 1, &v), -1);
	assert_int_equal(duration_parse(NULL, 2, &v), -1);
	assert_int_equal(duration_parse("1h", 2, NULL), -1);
	assert_int_equal(duration_parse("1h", 0, &v), -1);
	/* 32 bytes is the limit, 33 is refused even when the value is fine. */
	memset(buf, '0', sizeof buf);
	memcpy(buf + 30, "1h", 2);
	assert_int_equal(duration_parse(buf, 32, &v), 0);
	assert_int_equal(v, 3600);
	memset(buf, '0', sizeof buf);
	memcpy(buf + 31, "1h", 2);
	assert_int_equal(duration_parse(buf, 33, &v), -1);
	/* The length bounds the read: "1hour" cut at 2 is "1h". */
	assert_int_equal(duration_parse("1hour", 2, &v), 0);
	assert_int_equal(v, 3600);
	assert_int_equal(duration_parse("12h", 1, &v), -1);
}

static void test_format(void **state)
{
	char buf[32];
	char small[5];
	long long v = 0;
	(void)state;
	assert_int_equal(duration_format(3600, buf, sizeof buf), 0);
	assert_string_equal(buf, "3600s");
	assert_int_equal(duration_format(1, buf, sizeof buf), 0);
	assert_string_equal(buf, "1s");
	assert_int_equal(duration_format(TEN_YEARS, buf, sizeof buf), 0);
	assert_string_equal(buf, "315576000s");
	/* Whatever it writes, the parser reads back the same seconds. */
	assert_int_equal(duration_parse(buf, strlen(buf), &v), 0);
	assert_int_equal(v, TEN_YEARS);

	assert_int_equal(duration_format(0, buf, sizeof buf), -1);
	assert_int_equal(duration_format(-1, buf, sizeof buf), -1);
	assert_int_equal(duration_format(3600, NULL, 10), -1);
	assert_int_equal(duration_format(3600, buf, 0), -1);
	/* Too small: refused, and no truncated "360" (milliseconds!) left. */
	assert_int_equal(duration_format(3600, small, 5), -1);
	assert_string_equal(small, "");
	assert_int_equal(duration_format(360, small, 5), 0);
	assert_string_equal(small, "360s");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_contract_examples),
	    cmocka_unit_test(test_every_unit),
	    cmocka_unit_test(test_case_insensitive),
	    cmocka_unit_test(test_fractions),
	    cmocka_unit_test(test_locale_has_no_effect),
	    cmocka_unit_test(test_bare_number_refused),
	    cmocka_unit_test(test_whitespace),
	    cmocka_unit_test(test_sign_zero_and_subsecond),
	    cmocka_unit_test(test_ten_year_ceiling),
	    cmocka_unit_test(test_huge_numbers),
	    cmocka_unit_test(test_garbage),
	    cmocka_unit_test(test_length_and_nul),
	    cmocka_unit_test(test_format),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
