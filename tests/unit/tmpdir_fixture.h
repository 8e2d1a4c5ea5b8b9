/*
 * tmpdir_fixture.h — what the unit tests that read files share: a file
 * written into a test's temporary folder (the write checked), and the
 * folder removed with all it holds. The folder itself comes from mkdtemp
 * in each test's setup.
 */
#ifndef TEST_TMPDIR_FIXTURE_H
#define TEST_TMPDIR_FIXTURE_H

#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

/* dir/name (name may hold a folder that exists) holds text, mode 0644. */
static inline void tmpdir_write(const char *dir, const char *name, const char *text)
{
	char path[512];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

static inline int tmpdir_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* dir and everything below it, gone (links not followed). */
static inline void tmpdir_remove(const char *dir)
{
	nftw(dir, tmpdir_rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

#endif
