/*
 * test_ipcap.c — unit tests for src/ipcap.c.
 *
 * Owns the proof that an address holds at most cap connections, that an IPv6
 * address counts by its /64 and an IPv4 one alone, and that a count given
 * back makes room again.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "ipcap.h"

static struct sockaddr_storage addr(const char *text)
{
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof(ss));
	if (strchr(text, ':')) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		a->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, text, &a->sin6_addr), 1);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		a->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, text, &a->sin_addr), 1);
	}
	return ss;
}

static void test_cap_per_address(void **state)
{
	struct ipcap t;
	struct sockaddr_storage a = addr("10.0.0.1"), b = addr("10.0.0.2");
	struct ipcap_count *c1, *c2;

	(void)state;
	assert_int_equal(ipcap_init(&t, 2, 100), 0);
	c1 = ipcap_take(&t, &a);
	c2 = ipcap_take(&t, &a);
	assert_non_null(c1);
	assert_ptr_equal(c1, c2);
	assert_null(ipcap_take(&t, &a));     /* a holds 2 */
	assert_non_null(ipcap_take(&t, &b)); /* another address is counted apart */
	ipcap_release(&t, c1);
	c1 = ipcap_take(&t, &a); /* room again */
	assert_non_null(c1);
	assert_null(ipcap_take(&t, &a));
	ipcap_free(&t);
}

static void test_ipv6_counts_by_its_64(void **state)
{
	struct ipcap t;
	struct sockaddr_storage a = addr("2001:db8:1:2::1"), b = addr("2001:db8:1:2:ffff::9"),
	                        other = addr("2001:db8:1:3::1");

	(void)state;
	assert_int_equal(ipcap_init(&t, 1, 100), 0);
	assert_non_null(ipcap_take(&t, &a));
	assert_null(ipcap_take(&t, &b)); /* the same /64 */
	assert_non_null(ipcap_take(&t, &other));
	ipcap_free(&t);
}

static void test_release_frees_the_last_count(void **state)
{
	struct ipcap t;
	struct sockaddr_storage a = addr("192.0.2.7");
	struct ipcap_count *c;

	(void)state;
	assert_int_equal(ipcap_init(&t, 1, 10), 0);
	for (int i = 0; i < 1000; i++) {
		c = ipcap_take(&t, &a);
		assert_non_null(c);
		ipcap_release(&t, c); /* freed at zero: ASan would see a leak or a reuse */
	}
	ipcap_release(&t, NULL); /* nothing */
	for (size_t i = 0; i <= t.mask; i++)
		assert_null(t.buckets[i]);
	ipcap_free(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cap_per_address),
	    cmocka_unit_test(test_ipv6_counts_by_its_64),
	    cmocka_unit_test(test_release_frees_the_last_count),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
