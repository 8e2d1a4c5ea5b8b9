/*
 * redis_fixture.h — a real redis-server on a free loopback port, and an
 * epoll loop that drives one struct rloop, for the unit tests of the
 * cluster's Redis parts. Every wait is bounded.
 */
#ifndef TEST_REDIS_FIXTURE_H
#define TEST_REDIS_FIXTURE_H

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "redisloop.h"

struct redis_server {
	pid_t pid;
	int port;
};

static inline int fixture_free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

	if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &al) == 0)
		port = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

static inline bool fixture_port_open(int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
	                        .sin_port = htons((uint16_t)port),
	                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;

	if (fd >= 0)
		close(fd);
	return ok;
}

/* Starts redis-server on port (a free one when 0), with requirepass when
 * password is given; waits (up to 5 s) until it accepts connections. */
static inline int redis_start(struct redis_server *s, int port, const char *password)
{
	char p[16];

	s->port = port ? port : fixture_free_port();
	snprintf(p, sizeof(p), "%d", s->port);
	s->pid = fork();
	if (s->pid == 0) {
		int null = open("/dev/null", O_WRONLY);
		/* Gone with the test, even one that failed before redis_stop. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(null, 1);
		dup2(null, 2);
		if (password)
			execlp("redis-server", "redis-server", "--port", p, "--bind", "127.0.0.1", "--save",
			       "", "--appendonly", "no", "--loglevel", "warning", "--requirepass", password,
			       (char *)NULL);
		else
			execlp("redis-server", "redis-server", "--port", p, "--bind", "127.0.0.1", "--save",
			       "", "--appendonly", "no", "--loglevel", "warning", (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 500; i++) {
		if (fixture_port_open(s->port))
			return 0;
		usleep(10000);
	}
	return -1;
}

static inline void redis_stop(struct redis_server *s)
{
	if (s->pid > 0) {
		kill(s->pid, SIGCONT);
		kill(s->pid, SIGKILL);
		waitpid(s->pid, NULL, 0);
	}
	s->pid = 0;
}

static inline long long fixture_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Runs rl on epfd until done(arg) or max_ms pass; returns done's last answer. */
static inline bool drive(struct rloop *rl, int epfd, bool (*done)(void *), void *arg, long long max_ms)
{
	long long end = fixture_ms() + max_ms;

	while (!done(arg) && fixture_ms() < end) {
		struct epoll_event ev;
		long long due;
		rloop_flush(rl);
		due = rloop_due_ms(rl);
		int timeout = due < 0 || due > 10 ? 10 : (int)due;
		int n = epoll_wait(epfd, &ev, 1, timeout);
		rloop_run(rl, n > 0 ? ev.events : 0);
	}
	return done(arg);
}

static inline bool is_ready(void *arg)
{
	return rloop_ready(arg);
}

static inline bool never(void *arg)
{
	(void)arg;
	return false;
}

#endif
