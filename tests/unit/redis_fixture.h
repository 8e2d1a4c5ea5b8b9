/*
 * redis_fixture.h — a real redis-server on a free loopback port, and an
 * epoll loop that drives one struct rloop, for the unit tests of the
 * cluster's Redis parts; the same with TLS (a test CA made with openssl at
 * test time); and a hostile fake Redis (huge or dripped replies). Every
 * wait is bounded.
 */
#ifndef TEST_REDIS_FIXTURE_H
#define TEST_REDIS_FIXTURE_H

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
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

static inline long long fixture_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

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
 * password is given; with tls_dir, TLS only on that port, with the
 * certificate tls_dir/<cert>.pem and its key (tls_make_files), asking
 * clients for a certificate signed by tls_dir/ca.pem when client_certs;
 * waits (up to 5 s) until it accepts connections. */
static inline int redis_start_tls(struct redis_server *s, int port, const char *password, const char *tls_dir,
                                  const char *cert, bool client_certs)
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
		const char *argv[32] = {"redis-server", "--bind", "127.0.0.1",  "--save", "",
		                        "--appendonly", "no",     "--loglevel", "warning"};
		char crt[512], key[512], ca[512];
		int n = 9;
		if (tls_dir) {
			snprintf(crt, sizeof(crt), "%s/%s.pem", tls_dir, cert);
			snprintf(key, sizeof(key), "%s/%s.key", tls_dir, cert);
			snprintf(ca, sizeof(ca), "%s/ca.pem", tls_dir);
			const char *more[] = {"--port",
			                      "0",
			                      "--tls-port",
			                      p,
			                      "--tls-cert-file",
			                      crt,
			                      "--tls-key-file",
			                      key,
			                      "--tls-ca-cert-file",
			                      ca,
			                      "--tls-auth-clients",
			                      client_certs ? "yes" : "no"};
			for (size_t i = 0; i < sizeof(more) / sizeof(more[0]); i++)
				argv[n++] = more[i];
		} else {
			argv[n++] = "--port";
			argv[n++] = p;
		}
		if (password) {
			argv[n++] = "--requirepass";
			argv[n++] = password;
		}
		execvp("redis-server", (char *const *)argv);
		_exit(127);
	}
	for (int i = 0; i < 500; i++) {
		if (fixture_port_open(s->port))
			return 0;
		usleep(10000);
	}
	return -1;
}

static inline int redis_start(struct redis_server *s, int port, const char *password)
{
	return redis_start_tls(s, port, password, NULL, NULL, false);
}

/* In dir: ca.pem (a test CA) and other-ca.pem (another); server.pem/.key
 * for IP 127.0.0.1 and localhost, wronghost.pem/.key for another name, and
 * client.pem/.key (a client's, "broker"), all signed by ca.pem. 0, or -1. */
static inline int tls_make_files(const char *dir)
{
	char cmd[4096];

	snprintf(cmd, sizeof(cmd),
	         "cd '%s' && exec >/dev/null 2>&1 && "
	         "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key "
	         "-out ca.pem -days 2 -subj /CN=test-redis-ca && "
	         "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout other-ca.key "
	         "-out other-ca.pem -days 2 -subj /CN=other-ca && "
	         "for n in server:IP:127.0.0.1,DNS:localhost wronghost:DNS:redis.elsewhere.test "
	         "client:DNS:broker; do "
	         "f=${n%%%%:*}; printf 'subjectAltName=%%s\n' \"${n#*:}\" > $f.ext && "
	         "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $f.key -out $f.csr "
	         "-subj /CN=$f && "
	         "openssl x509 -req -in $f.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $f.pem -days 2 "
	         "-extfile $f.ext || exit 1; done",
	         dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* A hostile fake Redis on 127.0.0.1, one connection: answers PING with
 * +PONG (pong), and the first other command with answer, all at once or one
 * byte every drip_ms (for at most 10 s), then waits (at most 5 s) for the
 * client to go (an empty answer: a server that takes the client's first
 * bytes, a TLS ClientHello too, and never answers). */
struct hostile {
	int lfd, port;
	const char *answer;
	size_t answer_len; /* 0: strlen(answer) */
	unsigned drip_ms;
	bool pong;
	bool peer_closed; /* set when the client closed its end */
	pthread_t th;
};

static inline bool hostile_wait(int fd, int ms)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};

	return poll(&pfd, 1, ms) > 0;
}

static inline void *hostile_run(void *arg)
{
	struct hostile *h = arg;
	int fd = accept(h->lfd, NULL, NULL);
	size_t len = h->answer_len ? h->answer_len : strlen(h->answer);
	char buf[4096];
	ssize_t n;

	if (fd < 0)
		return NULL;
	while (hostile_wait(fd, 5000) && (n = read(fd, buf, sizeof(buf) - 1)) > 0) {
		buf[n] = '\0';
		if (h->pong && strstr(buf, "PING") && strlen(buf) == (size_t)n) {
			if (write(fd, "+PONG\r\n", 7) < 0)
				goto out;
			continue;
		}
		break;
	}
	if (!h->drip_ms) {
		if (write(fd, h->answer, len) < 0)
			goto out;
	} else {
		long long end = fixture_ms() + 10000;
		for (size_t i = 0; i < len && fixture_ms() < end; i++) {
			if (write(fd, h->answer + i, 1) < 0)
				goto out;
			/* Gone: the client dropped the connection. */
			if (hostile_wait(fd, (int)h->drip_ms) && read(fd, buf, sizeof(buf)) <= 0) {
				h->peer_closed = true;
				goto out;
			}
		}
	}
	while (hostile_wait(fd, 5000)) {
		if (read(fd, buf, sizeof(buf)) <= 0) {
			h->peer_closed = true;
			break;
		}
	}
out:
	close(fd);
	return NULL;
}

static inline int hostile_start(struct hostile *h)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);

	h->lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (h->lfd < 0 || bind(h->lfd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(h->lfd, 1) != 0 ||
	    getsockname(h->lfd, (struct sockaddr *)&a, &alen) != 0)
		return -1;
	h->port = ntohs(a.sin_port);
	return pthread_create(&h->th, NULL, hostile_run, h) == 0 ? 0 : -1;
}

static inline void hostile_stop(struct hostile *h)
{
	pthread_join(h->th, NULL);
	close(h->lfd);
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
