/*
 * fileio.c — bounded whole-file reads (fileio.h).
 *
 * Owns the read loop. It must never read past its cap (a file that grows
 * while it is read is refused, not cut), never follow anything but a regular
 * file (or the caller's standard input when asked), and never quote content.
 */
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Reads fd to its end, at most max bytes: one byte past the cap tells a
 * file that is too large (or grew since it was looked at). */
static int read_all(int fd, size_t max, char **out, size_t *outlen, char *why, size_t whylen)
{
	size_t len = 0, cap = max < 65536 ? max + 2 : 65536;
	char *buf = malloc(cap), *p;
	ssize_t n;

	if (!buf) {
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	for (;;) {
		if (len + 1 >= cap) {
			if (cap >= max + 2)
				break;
			cap = cap > (max + 2) / 2 ? max + 2 : cap * 2;
			p = realloc(buf, cap);
			if (!p) {
				snprintf(why, whylen, "out of memory");
				goto fail;
			}
			buf = p;
		}
		n = read(fd, buf + len, cap - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			snprintf(why, whylen, "%s", strerror(errno));
			goto fail;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > max)
			break;
	}
	if (len > max) {
		snprintf(why, whylen, "larger than %zu bytes", max);
		goto fail;
	}
	buf[len] = '\0';
	*out = buf;
	*outlen = len;
	return 0;
fail:
	free(buf);
	return -1;
}

int fileio_read(const char *path, size_t max, int flags, char **out, size_t *outlen, char *why, size_t whylen)
{
	struct stat st;
	int fd, rc = -1;

	if ((flags & FILEIO_STDIN) && strcmp(path, "-") == 0)
		return read_all(STDIN_FILENO, max, out, outlen, why, whylen);
	/* O_NONBLOCK: a FIFO must not hold the open (it is refused just below). */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | ((flags & FILEIO_NOFOLLOW) ? O_NOFOLLOW : 0));
	if (fd < 0 && errno == ENOENT && (flags & FILEIO_ABSENT_EMPTY)) {
		if (!(*out = calloc(1, 1))) {
			snprintf(why, whylen, "out of memory");
			return -1;
		}
		*outlen = 0;
		return 0;
	}
	if (fd < 0) {
		snprintf(why, whylen, "%s", strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		snprintf(why, whylen, "not a regular file");
		goto out;
	}
	if ((unsigned long long)st.st_size > max) {
		snprintf(why, whylen, "larger than %zu bytes", max);
		goto out;
	}
	rc = read_all(fd, max, out, outlen, why, whylen);
out:
	close(fd);
	return rc;
}

char *fileio_join(const char *dir, const char *name)
{
	size_t dl, nl;
	char *p;

	if (!dir || name[0] == '/')
		return strdup(name);
	dl = strlen(dir);
	nl = strlen(name);
	p = malloc(dl + nl + 2);
	if (!p)
		return NULL;
	memcpy(p, dir, dl);
	p[dl] = '/';
	memcpy(p + dl + 1, name, nl + 1);
	return p;
}

char *fileio_dir(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		return strdup(".");
	if (slash == path)
		return strdup("/");
	return strndup(path, (size_t)(slash - path));
}
