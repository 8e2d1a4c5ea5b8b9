/*
 * audit.c — the audit log's file: open, append, reopen.
 *
 * Owns the audit file descriptor and its path. Writers hold a read lock for
 * one write(2), so SIGUSR1's reopen never closes a descriptor under a
 * writer (nor lets a line reach a file that reused its number). It must
 * never block a loop for longer than one write of one line, never write a
 * partial line on purpose, and never build the lines itself: reply.c does,
 * from what the decision saw.
 */
#include "audit.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static pthread_rwlock_t lock = PTHREAD_RWLOCK_INITIALIZER;
static int fd = -1; /* under lock */
static char *path;  /* under lock (write side) */
static atomic_bool enabled, inputs;
static atomic_ullong failures;

static int open_log(const char *p, char *err, size_t errlen)
{
	int f = open(p, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);

	if (f < 0 && err)
		snprintf(err, errlen, "audit_log.file %s: %s", p, strerror(errno));
	return f;
}

int audit_configure(const char *p, bool with_inputs, char *err, size_t errlen)
{
	int f = -1, old = -1;
	char *copy = NULL;

	if (p) {
		pthread_rwlock_rdlock(&lock);
		bool same = path && strcmp(path, p) == 0;
		pthread_rwlock_unlock(&lock);
		if (same) {
			atomic_store(&inputs, with_inputs);
			return 0;
		}
		if (!(copy = strdup(p))) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		if ((f = open_log(p, err, errlen)) < 0) {
			free(copy);
			return -1;
		}
	}
	pthread_rwlock_wrlock(&lock);
	old = fd;
	fd = f;
	free(path);
	path = copy;
	atomic_store(&inputs, with_inputs);
	atomic_store(&enabled, f >= 0);
	pthread_rwlock_unlock(&lock);
	if (old >= 0)
		close(old);
	return 0;
}

int audit_check(const char *p, char *err, size_t errlen)
{
	int f;

	if (!p)
		return 0;
	if ((f = open_log(p, err, errlen)) < 0)
		return -1;
	close(f);
	return 0;
}

bool audit_enabled(void)
{
	return atomic_load_explicit(&enabled, memory_order_relaxed);
}

bool audit_inputs(void)
{
	return atomic_load_explicit(&inputs, memory_order_relaxed);
}

void audit_reopen(void)
{
	char err[512], *p = NULL;
	int f, old;

	/* Opened outside the lock: a slow disk must not hold the writers. Only
	 * the signal thread reopens, and audit_configure runs on the reload
	 * thread at most once per reload: a race costs one reopen, not a line. */
	pthread_rwlock_rdlock(&lock);
	if (path)
		p = strdup(path);
	pthread_rwlock_unlock(&lock);
	if (!p)
		return;
	f = open_log(p, err, sizeof(err));
	if (f < 0) {
		/* Keep writing to the old file (renamed, maybe): better than nothing. */
		log_msg("error", "SIGUSR1: cannot reopen the audit log: %s", err);
		free(p);
		return;
	}
	pthread_rwlock_wrlock(&lock);
	if (path && strcmp(path, p) == 0) {
		old = fd;
		fd = f;
	} else {
		old = f; /* reconfigured meanwhile: keep the new configuration's file */
	}
	pthread_rwlock_unlock(&lock);
	free(p);
	if (old >= 0)
		close(old);
	log_msg("info", "SIGUSR1: audit log reopened");
}

void audit_write(const char *line, size_t len)
{
	ssize_t n = -1;
	int e = 0;

	pthread_rwlock_rdlock(&lock);
	if (fd >= 0) {
		n = write(fd, line, len);
		e = errno;
	}
	pthread_rwlock_unlock(&lock);
	if (n == (ssize_t)len)
		return;
	audit_write_failed(n < 0 ? strerror(e) : "short write");
}

void audit_write_failed(const char *why)
{
	atomic_fetch_add(&failures, 1);
	log_warn_limited("audit log: a line could not be written: %s", why);
}

unsigned long long audit_failures(void)
{
	return atomic_load(&failures);
}

void audit_close(void)
{
	char err[8];

	audit_configure(NULL, false, err, sizeof(err));
}
