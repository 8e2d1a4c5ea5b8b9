/*
 * test_sdnotify.c — unit tests for src/sdnotify.c.
 *
 * Owns the proof that the messages are systemd's (READY=1, RELOADING=1 with
 * MONOTONIC_USEC, STOPPING=1), that they reach a path or an abstract socket,
 * and that a NOTIFY_SOCKET that is absent, unusable or not listened on never
 * fails or blocks the caller. A datagram socket bound here stands in for
 * systemd. Must never test through anything but sdnotify.h.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "sdnotify.h"

static char dir[] = "/tmp/test_sdnotify.XXXXXX";
static char path[256];

/* A socket bound at name ("@x": abstract), with a receive timeout. */
static int listener(const char *name)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	struct timeval tv = {5, 0}; /* bounded: a lost message fails, never hangs */
	size_t n = strlen(name);
	int fd = socket(AF_UNIX, SOCK_DGRAM, 0);

	assert_true(fd >= 0);
	memcpy(a.sun_path, name, n);
	if (name[0] == '@')
		a.sun_path[0] = '\0';
	assert_int_equal(
	    bind(fd, (struct sockaddr *)&a, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)), 0);
	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
	return fd;
}

static void next(int fd, char *buf, size_t len)
{
	ssize_t n = recv(fd, buf, len - 1, 0);

	assert_true(n > 0);
	buf[n] = '\0';
}

static int setup(void **state)
{
	(void)state;
	if (!mkdtemp(dir))
		return -1;
	snprintf(path, sizeof(path), "%s/notify", dir);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	unlink(path);
	rmdir(dir);
	unsetenv("NOTIFY_SOCKET");
	return 0;
}

static void test_messages_to_a_path(void **state)
{
	int fd = listener(path);
	char buf[256];
	struct timespec t0, t1;
	unsigned long long usec;

	(void)state;
	setenv("NOTIFY_SOCKET", path, 1);
	assert_int_equal(sdnotify_init(), 0);

	sdnotify_ready(7);
	next(fd, buf, sizeof(buf));
	assert_string_equal(buf, "READY=1\nSTATUS=serving generation 7");

	clock_gettime(CLOCK_MONOTONIC, &t0);
	sdnotify_reloading();
	clock_gettime(CLOCK_MONOTONIC, &t1);
	next(fd, buf, sizeof(buf));
	assert_int_equal(sscanf(buf, "RELOADING=1\nMONOTONIC_USEC=%llu\n", &usec), 1);
	assert_true(usec >=
	            (unsigned long long)t0.tv_sec * 1000000ULL + (unsigned long long)t0.tv_nsec / 1000);
	assert_true(usec <=
	            (unsigned long long)t1.tv_sec * 1000000ULL + (unsigned long long)t1.tv_nsec / 1000);

	sdnotify_stopping();
	next(fd, buf, sizeof(buf));
	assert_non_null(strstr(buf, "STOPPING=1\n"));
	close(fd);
}

static void test_abstract_socket(void **state)
{
	char name[64], buf[256];
	int fd;

	(void)state;
	snprintf(name, sizeof(name), "@test_sdnotify.%ld", (long)getpid());
	fd = listener(name);
	setenv("NOTIFY_SOCKET", name, 1);
	assert_int_equal(sdnotify_init(), 0);
	sdnotify_ready(1);
	next(fd, buf, sizeof(buf));
	assert_string_equal(buf, "READY=1\nSTATUS=serving generation 1");
	close(fd);
}

/* None of these may fail, block or crash: the calls simply send nothing. */
static void test_unusable_addresses(void **state)
{
	char longname[200];

	(void)state;
	unsetenv("NOTIFY_SOCKET");
	assert_int_equal(sdnotify_init(), 0);
	sdnotify_ready(1);

	setenv("NOTIFY_SOCKET", "relative/notify", 1);
	assert_int_equal(sdnotify_init(), -1);
	sdnotify_ready(1);

	memset(longname, 'x', sizeof(longname) - 1);
	longname[0] = '/';
	longname[sizeof(longname) - 1] = '\0';
	setenv("NOTIFY_SOCKET", longname, 1);
	assert_int_equal(sdnotify_init(), -1);
	sdnotify_stopping();

	/* Set and well-formed, but nobody listens: a warning, nothing more. */
	setenv("NOTIFY_SOCKET", path, 1);
	assert_int_equal(sdnotify_init(), 0);
	sdnotify_reloading();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_messages_to_a_path),
	    cmocka_unit_test(test_abstract_socket),
	    cmocka_unit_test(test_unusable_addresses),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
