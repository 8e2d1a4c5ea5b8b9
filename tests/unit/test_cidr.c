/*
 * test_cidr.c — unit tests for src/cidr.c.
 *
 * Owns the proof that the broker reads a CIDR by one rule: the one that
 * trusted_proxy.from and broker.cidr_match both use.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>

#include "cidr.h"

static int parse(const char *s, struct cidr *n)
{
	return cidr_parse(s, strlen(s), n);
}

static bool in(const char *net, const char *ip)
{
	struct cidr n;

	assert_int_equal(parse(net, &n), 0);
	return cidr_match(&n, 1, ip);
}

static void test_accepts(void **state)
{
	static const char *const ok[] = {"10.0.0.0/8",    "10.1.2.3", "10.1.2.3/32", "0.0.0.0/0",     "::/0",
	                                 "2001:db8::/32", "::1",      "::1/128",     "192.168.0.0/16"};
	struct cidr n;

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		assert_int_equal(parse(ok[i], &n), 0);
}

static void test_refuses(void **state)
{
	static const char *const bad[] = {"",
	                                  "/8",
	                                  "10.1.2.3/8",
	                                  "10.1.2.3/08",
	                                  "10.0.0.0/08",
	                                  "10.0.0.0/33",
	                                  "10.0.0.0/",
	                                  "10.0.0.0/+8",
	                                  "10.0.0.0/ 8",
	                                  "10.0.0.0/8x",
	                                  "10.0.0/8",
	                                  "::1/129",
	                                  "2001:db8::1/32",
	                                  "host.example",
	                                  "10.0.0.0/-1",
	                                  "10.0.0.0/0008"};
	struct cidr n;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(parse(bad[i], &n), -1);
	/* An embedded NUL never passes as the end of the text. */
	assert_int_equal(cidr_parse("10.0.0.0/8\0junk", 15, &n), -1);
	assert_int_equal(cidr_parse("10.0.0.0\0/8", 11, &n), -1);
}

static void test_matches(void **state)
{
	(void)state;
	assert_true(in("10.0.0.0/8", "10.255.1.2"));
	assert_false(in("10.0.0.0/8", "11.0.0.1"));
	assert_true(in("192.168.1.128/25", "192.168.1.200"));
	assert_false(in("192.168.1.128/25", "192.168.1.127"));
	assert_true(in("2001:db8::/32", "2001:db8:1::5"));
	assert_false(in("2001:db8::/32", "2001:db9::5"));
	/* IPv4 networks never match IPv6 addresses. */
	assert_false(in("0.0.0.0/0", "::1"));
	assert_true(in("0.0.0.0/0", "203.0.113.9"));
	assert_false(in("10.0.0.0/8", "not an ip"));
	assert_false(in("10.0.0.0/8", ""));
}

static void test_match_list(void **state)
{
	struct cidr nets[2];

	(void)state;
	assert_int_equal(parse("10.0.0.0/8", &nets[0]), 0);
	assert_int_equal(parse("::1", &nets[1]), 0);
	assert_true(cidr_match(nets, 2, "::1"));
	assert_true(cidr_match(nets, 2, "10.9.9.9"));
	assert_false(cidr_match(nets, 2, "127.0.0.1"));
	assert_false(cidr_match(nets, 2, NULL));
	assert_false(cidr_match(nets, 0, "10.9.9.9"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_accepts),
	    cmocka_unit_test(test_refuses),
	    cmocka_unit_test(test_matches),
	    cmocka_unit_test(test_match_list),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
