/*
 * pidfile.h — the pid file of `serve`, and finding the broker it names.
 *
 * serve checks the file before it starts (a file naming a running broker
 * refuses the start; a stale one is replaced), writes it once listening and
 * removes it at exit, only while it still names this process. `reload` reads
 * it to find the broker to signal, then waits for the broker's verdict in the
 * file beside it (PATH.reload). A pid names a broker only when that
 * process is alive and its name is courier-broker, so a stale file whose pid
 * was reused never gets an unrelated process a SIGHUP.
 */
#ifndef BROKER_PIDFILE_H
#define BROKER_PIDFILE_H

#include <stddef.h>
#include <sys/types.h>

/* Where `reload` looks when no --pid-file is given (the systemd unit's path). */
#define PIDFILE_DEFAULT "/run/courier-broker/courier-broker.pid"

/* Before starting: 0 when path is absent, unreadable as a pid, or names no
 * running broker; -1 with the reason in err when a broker runs under it. */
int pidfile_check(const char *path, char *err, size_t errlen);

/* Writes this process's pid to path (via a temporary file and rename) and
 * remembers path for pidfile_remove. 0, or -1 with the reason in err. */
int pidfile_write(const char *path, char *err, size_t errlen);

/* Removes the file written by pidfile_write if it still holds this pid.
 * Allocates nothing: safe on the drain watchdog's way to _exit. */
void pidfile_remove(void);

/* The pid of the running broker named by path, or -1 with the reason in err. */
pid_t pidfile_broker(const char *path, char *err, size_t errlen);

/*
 * The verdict file, PATH.reload beside the pid file: the running broker's
 * answer to its latest reload, which `reload` waits for. One line, replaced
 * atomically: "AT PID ok|refused GENERATION REASON", where AT is when the
 * attempt took its SIGHUPs (CLOCK_MONOTONIC, ns): a verdict with AT after the
 * caller's kill() began answers a configuration read after that moment.
 */
#define PIDFILE_VERDICT_SUFFIX ".reload"
#define PIDFILE_REASON_MAX     1024

struct pidfile_verdict {
	unsigned long long at_ns;
	long pid;
	int ok;
	unsigned long long generation; /* serving after the attempt */
	char reason[PIDFILE_REASON_MAX];
};

/* serve: records a verdict beside the pid file this process wrote (nothing
 * when it wrote none). Best effort: a failure is logged by the caller's log. */
int pidfile_verdict_write(const struct pidfile_verdict *v);

/* reload: the verdict beside the pid file at path: 1 read, 0 none (yet), -1
 * unreadable with the reason in err. */
int pidfile_verdict_read(const char *path, struct pidfile_verdict *v, char *err, size_t errlen);

#endif
