/*
 * test_fileio.c — unit tests for src/fileio.c.
 *
 * Owns the proof that the one file reader is bounded, refuses what is not a
 * regular file, and joins paths the way configuration paths are read.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"

static char dir[64];

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/test_fileio.XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static char *write_file(const char *name, size_t n)
{
	char *path = fileio_join(dir, name);
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	for (size_t i = 0; i < n; i++)
		fputc('a' + (int)(i % 26), f);
	fclose(f);
	return path;
}

static void test_reads_within_cap(void **state)
{
	char *path = write_file("small", 100000), *data, why[128];
	size_t len;

	(void)state;
	assert_int_equal(fileio_read(path, 100000, 0, &data, &len, why, sizeof(why)), 0);
	assert_int_equal(len, 100000);
	assert_int_equal(data[len], '\0');
	assert_int_equal(data[26], 'a');
	free(data);
	free(path);
}

static void test_refuses_past_cap(void **state)
{
	char *path = write_file("big", 100001), *data = NULL, why[128];
	size_t len;

	(void)state;
	assert_int_equal(fileio_read(path, 100000, 0, &data, &len, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "larger than 100000 bytes"));
	assert_null(data);
	free(path);
}

static void test_refuses_non_regular(void **state)
{
	char *data = NULL, why[128];
	size_t len;

	(void)state;
	assert_int_equal(fileio_read(dir, 100, 0, &data, &len, why, sizeof(why)), -1);
	assert_string_equal(why, "not a regular file");
	assert_int_equal(fileio_read("/nonexistent/x", 100, 0, &data, &len, why, sizeof(why)), -1);
	/* A FIFO is refused without waiting for a writer. */
	{
		char *fifo = fileio_join(dir, "fifo");
		assert_int_equal(mkfifo(fifo, 0600), 0);
		assert_int_equal(fileio_read(fifo, 100, 0, &data, &len, why, sizeof(why)), -1);
		assert_string_equal(why, "not a regular file");
		free(fifo);
	}
	/* "-" is a file name unless standard input is allowed. */
	assert_int_equal(fileio_read("-", 100, 0, &data, &len, why, sizeof(why)), -1);
}

/* The pid file's readers: no symbolic link, and a missing file is empty. */
static void test_flags(void **state)
{
	char *path = write_file("small", 5), *link = fileio_join(dir, "link"),
	     *gone = fileio_join(dir, "gone");
	char *data = NULL, why[128];
	size_t len = 99;

	(void)state;
	assert_int_equal(symlink(path, link), 0);
	assert_int_equal(fileio_read(link, 100, 0, &data, &len, why, sizeof(why)), 0);
	assert_int_equal(len, 5);
	free(data);
	data = NULL;
	assert_int_equal(fileio_read(link, 100, FILEIO_NOFOLLOW, &data, &len, why, sizeof(why)), -1);
	assert_null(data);
	assert_int_equal(fileio_read(gone, 100, FILEIO_NOFOLLOW, &data, &len, why, sizeof(why)), -1);
	assert_int_equal(fileio_read(gone, 100, FILEIO_ABSENT_EMPTY, &data, &len, why, sizeof(why)), 0);
	assert_non_null(data);
	assert_int_equal(len, 0);
	assert_string_equal(data, "");
	free(data);
	unlink(link);
	free(link);
	free(gone);
	free(path);
}

static void test_paths(void **state)
{
	char *p;

	(void)state;
	p = fileio_join("/etc/cb", "policies/a.lua");
	assert_string_equal(p, "/etc/cb/policies/a.lua");
	free(p);
	p = fileio_join("/etc/cb", "/abs/a.lua");
	assert_string_equal(p, "/abs/a.lua");
	free(p);
	p = fileio_dir("/etc/cb/x.lua");
	assert_string_equal(p, "/etc/cb");
	free(p);
	p = fileio_dir("x.lua");
	assert_string_equal(p, ".");
	free(p);
	p = fileio_dir("/x.lua");
	assert_string_equal(p, "/");
	free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_reads_within_cap),
	    cmocka_unit_test(test_refuses_past_cap),
	    cmocka_unit_test(test_refuses_non_regular),
	    cmocka_unit_test(test_flags),
	    cmocka_unit_test(test_paths),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
