/*
 * pidfile.c — the pid file of `serve`, and finding the broker it names.
 *
 * Owns the path of the file this process wrote (set once, before any other
 * thread can call pidfile_remove). Never signals anything itself: `reload`
 * does, with the pid this module vouches for.
 */
#include "pidfile.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fileio.h"

#define PROC_NAME "courier-broker"
/* What the readers take of a pid file and of its verdict beside it. */
#define PID_FILE_MAX     4096
#define VERDICT_FILE_MAX 65536

static char written[PATH_MAX];                                       /* "" until pidfile_write succeeds */
static char verdict_path[PATH_MAX + sizeof(PIDFILE_VERDICT_SUFFIX)]; /* beside it */

/* Reads a positive pid from path: 1 found, 0 absent or not a pid, -1 error. */
static int read_pid(const char *path, pid_t *pid, char *err, size_t errlen)
{
	char *buf, *end, why[256];
	size_t n;
	long v;
	int rc = 0;

	if (fileio_read(path, PID_FILE_MAX, FILEIO_NOFOLLOW | FILEIO_ABSENT_EMPTY, &buf, &n, why,
	                sizeof(why))) {
		snprintf(err, errlen, "pid file %s: %s", path, why);
		return -1;
	}
	errno = 0;
	v = strtol(buf, &end, 10);
	if (n > 0 && !errno && end != buf && (!*end || *end == '\n') && v > 0 && v <= INT_MAX) {
		*pid = (pid_t)v;
		rc = 1;
	}
	free(buf);
	return rc;
}

/* Alive, and (when /proc tells) called courier-broker. */
static bool is_broker(pid_t pid)
{
	char path[64], comm[32];
	ssize_t n;
	int fd;

	if (kill(pid, 0) != 0 && errno != EPERM)
		return false;
	snprintf(path, sizeof(path), "/proc/%ld/comm", (long)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return true; /* alive, name unknown: assume the worst */
	n = read(fd, comm, sizeof(comm) - 1);
	close(fd);
	if (n <= 0)
		return true;
	comm[n] = '\0';
	comm[strcspn(comm, "\n")] = '\0';
	return strcmp(comm, PROC_NAME) == 0;
}

int pidfile_check(const char *path, char *err, size_t errlen)
{
	pid_t pid;
	int rc = read_pid(path, &pid, err, errlen);

	if (rc <= 0)
		return rc;
	if (pid != getpid() && is_broker(pid)) {
		snprintf(err, errlen,
		         "pid file %s names a running courier-broker (pid %ld): not starting a second one",
		         path, (long)pid);
		return -1;
	}
	return 0;
}

int pidfile_write(const char *path, char *err, size_t errlen)
{
	char tmp[PATH_MAX], line[32];
	int fd, len;

	if (strlen(path) >= sizeof(written) ||
	    snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
		snprintf(err, errlen, "pid file %s: path too long", path);
		return -1;
	}
	len = snprintf(line, sizeof(line), "%ld\n", (long)getpid());
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0) {
		snprintf(err, errlen, "pid file %s: %s", tmp, strerror(errno));
		return -1;
	}
	if (write(fd, line, (size_t)len) != len || close(fd) != 0) {
		snprintf(err, errlen, "pid file %s: %s", tmp, strerror(errno));
		unlink(tmp);
		return -1;
	}
	if (rename(tmp, path) != 0) {
		snprintf(err, errlen, "pid file %s: %s", path, strerror(errno));
		unlink(tmp);
		return -1;
	}
	memcpy(written, path, strlen(path) + 1);
	snprintf(verdict_path, sizeof(verdict_path), "%s%s", path, PIDFILE_VERDICT_SUFFIX);
	return 0;
}

void pidfile_remove(void)
{
	char buf[32];
	pid_t pid = 0;
	int rc;

	if (!written[0])
		return;
	rc = read_pid(written, &pid, buf, sizeof(buf));
	if (rc == 1 && pid == getpid()) {
		unlink(written);
		unlink(verdict_path);
	}
	written[0] = '\0';
}

pid_t pidfile_broker(const char *path, char *err, size_t errlen)
{
	pid_t pid;
	int rc = read_pid(path, &pid, err, errlen);

	if (rc < 0)
		return -1;
	if (rc == 0) {
		snprintf(err, errlen,
		         "pid file %s: missing or holds no pid (is the broker running with --pid-file?)",
		         path);
		return -1;
	}
	if (!is_broker(pid)) {
		snprintf(err, errlen, "pid file %s: pid %ld is not a running courier-broker (stale file?)",
		         path, (long)pid);
		return -1;
	}
	return pid;
}

/* ------------------------------------------------------------ reload verdicts */

int pidfile_verdict_write(const struct pidfile_verdict *v)
{
	char tmp[sizeof(verdict_path) + 8], line[PIDFILE_REASON_MAX + 128];
	int fd, len, rc = -1;

	if (!written[0])
		return 0;
	snprintf(tmp, sizeof(tmp), "%s.tmp", verdict_path);
	len = snprintf(line, sizeof(line), "%llu %ld %s %llu %s", v->at_ns, (long)getpid(),
	               v->ok ? "ok" : "refused", v->generation, v->reason);
	if (len < 0)
		return -1;
	if ((size_t)len >= sizeof(line) - 1)
		len = (int)sizeof(line) - 2;
	/* One line: a reason that spans several is folded. */
	for (int i = 0; i < len; i++)
		if (line[i] == '\n' || line[i] == '\r')
			line[i] = ' ';
	line[len++] = '\n';
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		return -1;
	if (write(fd, line, (size_t)len) == len && close(fd) == 0) {
		fd = -1;
		rc = rename(tmp, verdict_path);
	}
	if (fd >= 0)
		close(fd);
	if (rc != 0)
		unlink(tmp);
	return rc;
}

int pidfile_verdict_read(const char *path, struct pidfile_verdict *v, char *err, size_t errlen)
{
	char file[PATH_MAX + sizeof(PIDFILE_VERDICT_SUFFIX)], *buf, word[16], why[256];
	size_t n;
	int used = 0, rc = -1;

	if (snprintf(file, sizeof(file), "%s%s", path, PIDFILE_VERDICT_SUFFIX) >= (int)sizeof(file)) {
		snprintf(err, errlen, "pid file %s: path too long", path);
		return -1;
	}
	if (fileio_read(file, VERDICT_FILE_MAX, FILEIO_NOFOLLOW | FILEIO_ABSENT_EMPTY, &buf, &n, why,
	                sizeof(why))) {
		snprintf(err, errlen, "%s: %s", file, why);
		return -1;
	}
	if (n == 0) {
		rc = 0;
		goto out;
	}
	buf[strcspn(buf, "\n")] = '\0';
	if (sscanf(buf, "%llu %ld %15s %llu %n", &v->at_ns, &v->pid, word, &v->generation, &used) < 4 ||
	    used == 0 || (strcmp(word, "ok") != 0 && strcmp(word, "refused") != 0)) {
		snprintf(err, errlen, "%s: not a reload verdict", file);
		goto out;
	}
	v->ok = strcmp(word, "ok") == 0;
	snprintf(v->reason, sizeof(v->reason), "%s", buf + used);
	rc = 1;
out:
	free(buf);
	return rc;
}
