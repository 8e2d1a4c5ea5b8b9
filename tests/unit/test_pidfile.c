/*
 * test_pidfile.c — unit tests for src/pidfile.c.
 *
 * Owns the proof that a pid file vouches only for a live process named
 * courier-broker (a stale file, or one whose pid was reused by another
 * program, never blocks a start nor gets that program a SIGHUP), and that
 * the file is removed only while it still names this process. Children stand
 * in for other brokers. Must never test through anything but pidfile.h.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pidfile.h"

static char dir[] = "/tmp/test_pidfile.XXXXXX";
static char path[256];
static char err[512];

static void put(const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void put_pid(pid_t pid)
{
	char line[32];

	snprintf(line, sizeof(line), "%ld\n", (long)pid);
	put(line);
}

/* A child that sleeps under the given process name until killed; returns
 * once /proc shows the name. */
static pid_t child_named(const char *name)
{
	char comm_path[64], comm[32] = "";
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		prctl(PR_SET_NAME, name, 0, 0, 0);
		for (;;)
			pause();
	}
	snprintf(comm_path, sizeof(comm_path), "/proc/%ld/comm", (long)pid);
	for (int i = 0; i < 200; i++) {
		FILE *f = fopen(comm_path, "r");
		if (f) {
			if (fgets(comm, sizeof(comm), f))
				comm[strcspn(comm, "\n")] = '\0';
			fclose(f);
		}
		if (strcmp(comm, name) == 0)
			return pid;
		nanosleep(&(struct timespec){0, 5000000}, NULL);
	}
	fail_msg("the child never took the name %s", name);
	return -1;
}

static void reap(pid_t pid)
{
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

static int setup(void **state)
{
	(void)state;
	if (!mkdtemp(dir))
		return -1;
	snprintf(path, sizeof(path), "%s/broker.pid", dir);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	unlink(path);
	rmdir(dir);
	return 0;
}

static void test_absent_file(void **state)
{
	(void)state;
	unlink(path);
	assert_int_equal(pidfile_check(path, err, sizeof(err)), 0);
	assert_int_equal(pidfile_broker(path, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "missing"));
}

static void test_not_a_pid(void **state)
{
	(void)state;
	put("hello\n");
	assert_int_equal(pidfile_check(path, err, sizeof(err)), 0);
	assert_int_equal(pidfile_broker(path, err, sizeof(err)), -1);
	put("-5\n");
	assert_int_equal(pidfile_broker(path, err, sizeof(err)), -1);
	put("");
	assert_int_equal(pidfile_broker(path, err, sizeof(err)), -1);
}

static void test_stale_pid(void **state)
{
	pid_t pid = fork();

	(void)state;
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(0);
	waitpid(pid, NULL, 0);
	put_pid(pid);
	assert_int_equal(pidfile_check(path, err, sizeof(err)), 0);
	assert_int_equal(pidfile_broker(path, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "not a running courier-broker"));
}

static void test_reused_pid_is_not_a_broker(void **state)
{
	pid_t pid = child_named("sleeper");

	(void)state;
	put_pid(pid);
	assert_int_equal(pidfile_check(path, err, sizeof(err)), 0);
	assert_int_equal(pidfile_broker(path, err, sizeof(err)), -1);
	reap(pid);
}

static void test_running_broker(void **state)
{
	pid_t pid = child_named("courier-broker");

	(void)state;
	put_pid(pid);
	assert_int_equal(pidfile_check(path, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "names a running courier-broker"));
	assert_int_equal(pidfile_broker(path, err, sizeof(err)), pid);
	reap(pid);
}

static void test_write_and_remove(void **state)
{
	char want[32], got[32] = "";
	FILE *f;

	(void)state;
	put_pid(1); /* whatever was there is replaced */
	assert_int_equal(pidfile_write(path, err, sizeof(err)), 0);
	f = fopen(path, "r");
	assert_non_null(f);
	assert_non_null(fgets(got, sizeof(got), f));
	fclose(f);
	snprintf(want, sizeof(want), "%ld\n", (long)getpid());
	assert_string_equal(got, want);
	pidfile_remove();
	assert_int_equal(access(path, F_OK), -1);
}

static void test_remove_leaves_another_process_file(void **state)
{
	(void)state;
	assert_int_equal(pidfile_write(path, err, sizeof(err)), 0);
	put_pid(getpid() + 1); /* a successor took the file over */
	pidfile_remove();
	assert_int_equal(access(path, F_OK), 0);
	unlink(path);
}

/* The reload verdict beside the pid file: written only by the process that
 * wrote the pid file, read back field by field, one line whatever the reason
 * holds, removed with the pid file. */
static void test_reload_verdict(void **state)
{
	struct pidfile_verdict v = {.at_ns = 123456789012ULL, .ok = 0, .generation = 7}, got;
	char vpath[300];

	(void)state;
	snprintf(vpath, sizeof(vpath), "%s%s", path, PIDFILE_VERDICT_SUFFIX);
	assert_int_equal(pidfile_verdict_read(path, &got, err, sizeof(err)), 0); /* none yet */
	assert_int_equal(pidfile_write(path, err, sizeof(err)), 0);
	snprintf(v.reason, sizeof(v.reason), "tenant a: policy x.lua:3: bad\nsecond line");
	assert_int_equal(pidfile_verdict_write(&v), 0);
	assert_int_equal(pidfile_verdict_read(path, &got, err, sizeof(err)), 1);
	assert_true(got.at_ns == v.at_ns);
	assert_int_equal(got.pid, (long)getpid());
	assert_int_equal(got.ok, 0);
	assert_true(got.generation == 7);
	assert_string_equal(got.reason, "tenant a: policy x.lua:3: bad second line");
	v.ok = 1;
	v.generation = 8;
	v.reason[0] = '\0';
	assert_int_equal(pidfile_verdict_write(&v), 0);
	assert_int_equal(pidfile_verdict_read(path, &got, err, sizeof(err)), 1);
	assert_int_equal(got.ok, 1);
	assert_true(got.generation == 8);
	assert_string_equal(got.reason, "");
	pidfile_remove();
	assert_int_equal(access(vpath, F_OK), -1);
	/* Garbage is an error, not a verdict. */
	{
		FILE *f = fopen(vpath, "w");
		assert_non_null(f);
		fputs("12 34 maybe 5 why\n", f);
		fclose(f);
	}
	assert_int_equal(pidfile_verdict_read(path, &got, err, sizeof(err)), -1);
	unlink(vpath);
	/* A process that wrote no pid file writes no verdict. */
	assert_int_equal(pidfile_verdict_write(&v), 0);
	assert_int_equal(access(vpath, F_OK), -1);
}

static void test_write_fails_cleanly(void **state)
{
	(void)state;
	assert_int_equal(pidfile_write("/nonexistent-dir/broker.pid", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "nonexistent-dir"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_absent_file),
	    cmocka_unit_test(test_not_a_pid),
	    cmocka_unit_test(test_stale_pid),
	    cmocka_unit_test(test_reused_pid_is_not_a_broker),
	    cmocka_unit_test(test_running_broker),
	    cmocka_unit_test(test_write_and_remove),
	    cmocka_unit_test(test_remove_leaves_another_process_file),
	    cmocka_unit_test(test_reload_verdict),
	    cmocka_unit_test(test_write_fails_cleanly),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
