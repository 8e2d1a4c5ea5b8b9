/*
 * redisloop.c — one asynchronous Redis connection on an event loop's epoll.
 *
 * Owns a hiredis asynchronous context, its socket's place in the loop's
 * epoll set (hiredis's addRead/delRead/addWrite/delWrite/cleanup hooks
 * become EPOLL_CTL_ADD/MOD/DEL), the commands it waits on with their
 * deadlines, and the connection's life: connect (bounded by
 * connect_timeout_ms), AUTH and SELECT, the caller's on-connect commands,
 * a PING that marks it ready; on any failure, a reconnection after a
 * backoff that doubles up to backoff_max_ms (with jitter, so the loops of
 * many brokers do not come back in step). A command that misses its
 * deadline ends with a NULL reply; when Redis answered nothing at all since
 * it was sent, the connection goes with it: a Redis that stalls is treated
 * as gone, so later requests do not each wait out the deadline, while one
 * that is merely slow keeps its connection.
 *
 * It must never block (the host is resolved once, by rloop_new, off the
 * loop), never run a caller's callback inside rloop_command, never run one
 * twice, and never log a password or a command's arguments.
 */
#include "redisloop.h"

#include <arpa/inet.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "clock.h"
#include "log.h"
#include "metrics.h"
#include "redis.h"

enum rl_state { RL_DOWN, RL_CONNECTING, RL_READY };

/* A command sent: in the deadline list until its reply or its deadline
 * (then fn is NULL); freed when hiredis is done with it. */
struct call {
	struct call *prev, *next;
	uint64_t sent, deadline;
	rloop_reply_fn *fn;
	void *arg;
	bool listed;
};

struct hello {
	int argc;
	char **argv;
	size_t *argvlen;
};

struct rloop {
	int epfd;
	void *tag;
	char host[INET6_ADDRSTRLEN];
	struct rloop_conf conf;
	char *user, *password; /* copies; the password zeroed when freed */

	redisAsyncContext *ac;
	enum rl_state state;
	uint32_t want;   /* EPOLLIN / EPOLLOUT hiredis asked for */
	uint32_t set;    /* what the epoll set holds for it */
	bool registered; /* the socket is in the epoll set */
	int fd;
	uint64_t deadline; /* RL_CONNECTING: connect and handshake; RL_DOWN: the reconnection */
	unsigned backoff;
	bool failed_once;   /* logged since the last time it was ready */
	uint64_t last_read; /* when the socket was last read: a stalled Redis reads nothing */

	struct call *head, *tail; /* by deadline */

	struct hello *hellos; /* rloop_on_connect's, in order */
	size_t n_hellos;
};

/* Whether some loop's connection is down and said so: the outage is logged
 * once for the process, and its end once. */
static atomic_bool announced_down;

/* ------------------------------------------------------ epoll hooks */

/* The epoll set made to match what hiredis wants. Called once per turn
 * (rloop_run, rloop_flush), not by every hook: a command sets EPOLLOUT and
 * its write clears it in the same turn, which then costs no system call. */
static void sync_epoll(struct rloop *rl)
{
	struct epoll_event ev = {.events = rl->want, .data.ptr = rl->tag};

	if (!rl->ac || (rl->registered && rl->set == rl->want && rl->fd == rl->ac->c.fd))
		return;
	if (rl->registered && rl->fd != rl->ac->c.fd) {
		epoll_ctl(rl->epfd, EPOLL_CTL_DEL, rl->fd, NULL);
		rl->registered = false;
	}
	rl->fd = rl->ac->c.fd;
	if (!rl->want) {
		if (rl->registered)
			epoll_ctl(rl->epfd, EPOLL_CTL_DEL, rl->fd, NULL);
		rl->registered = false;
		return;
	}
	if (epoll_ctl(rl->epfd, rl->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, rl->fd, &ev) == 0) {
		rl->registered = true;
		rl->set = rl->want;
	}
}

static void add_read(void *p)
{
	struct rloop *rl = p;
	rl->want |= EPOLLIN;
}

static void del_read(void *p)
{
	struct rloop *rl = p;
	rl->want &= ~(uint32_t)EPOLLIN;
}

static void add_write(void *p)
{
	struct rloop *rl = p;
	rl->want |= EPOLLOUT;
}

static void del_write(void *p)
{
	struct rloop *rl = p;
	rl->want &= ~(uint32_t)EPOLLOUT;
}

/* hiredis is about to close the socket. */
static void cleanup(void *p)
{
	struct rloop *rl = p;

	if (rl->registered)
		epoll_ctl(rl->epfd, EPOLL_CTL_DEL, rl->fd, NULL);
	rl->registered = false;
	rl->want = rl->set = 0;
	rl->fd = -1;
}

/* ------------------------------------------------- the deadline list */

static void unlist(struct rloop *rl, struct call *c)
{
	if (!c->listed)
		return;
	if (c->prev)
		c->prev->next = c->next;
	else
		rl->head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	else
		rl->tail = c->prev;
	c->prev = c->next = NULL;
	c->listed = false;
}

/* From the tail: deadlines are nearly always added in order. */
static void enlist(struct rloop *rl, struct call *c)
{
	struct call *after = rl->tail;

	while (after && after->deadline > c->deadline)
		after = after->prev;
	c->prev = after;
	c->next = after ? after->next : rl->head;
	if (c->next)
		c->next->prev = c;
	else
		rl->tail = c;
	if (after)
		after->next = c;
	else
		rl->head = c;
	c->listed = true;
}

/* ------------------------------------------------ connection's life */

/* The connection is gone (ac is being or has been freed by the caller or
 * by hiredis): say so once, and plan the next attempt. */
static void went_down(struct rloop *rl, const char *why)
{
	unsigned jitter;

	if (rl->state == RL_READY)
		metrics_cluster_redis(-1);
	if (!rl->failed_once && !atomic_exchange(&announced_down, true))
		log_msg("warn",
		        "%s: Redis at %s:%d is unavailable (%s): serving on local state until it is back",
		        rl->conf.name, rl->host, rl->conf.port, why);
	rl->failed_once = true;
	rl->ac = NULL;
	rl->state = RL_DOWN;
	jitter = rl->backoff / 2 ? (unsigned)random() % (rl->backoff / 2 + 1) : 0;
	rl->deadline = clock_ms() + rl->backoff / 2 + jitter;
	rl->backoff = rl->backoff * 2 > rl->conf.backoff_max_ms ? rl->conf.backoff_max_ms : rl->backoff * 2;
}

/* Takes the connection down ourselves: every pending callback runs (NULL). */
static void drop(struct rloop *rl, const char *why)
{
	redisAsyncContext *ac = rl->ac;

	went_down(rl, why);
	if (ac)
		redisAsyncFree(ac);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
	struct rloop *rl = ac->data;

	(void)status;
	if (rl && rl->ac == ac)
		went_down(rl, ac->errstr[0] ? ac->errstr : "connection closed");
}

static void on_connect(const redisAsyncContext *ac, int status)
{
	struct rloop *rl = ac->data;

	/* On failure hiredis frees the context itself after this returns. */
	if (status != REDIS_OK && rl && rl->ac == ac)
		went_down(rl, ac->errstr[0] ? ac->errstr : "cannot connect");
}

/* AUTH, SELECT and the on-connect commands: any error fails the handshake. */
static void on_hello(redisAsyncContext *ac, void *reply, void *p)
{
	struct rloop *rl = p;
	const redisReply *r = reply;
	char why[160];

	if (rl->ac != ac || !r)
		return; /* an old connection's, or this one is going */
	if (r->type == REDIS_REPLY_ERROR) {
		/* Redis's error text: never the password. */
		snprintf(why, sizeof(why), "handshake refused: %.100s", r->str);
		drop(rl, why);
	}
}

static void on_ping(redisAsyncContext *ac, void *reply, void *p)
{
	struct rloop *rl = p;
	const redisReply *r = reply;

	if (rl->ac != ac || !r || rl->state != RL_CONNECTING)
		return;
	if (r->type == REDIS_REPLY_ERROR) {
		drop(rl, "PING refused");
		return;
	}
	rl->state = RL_READY;
	rl->backoff = rl->conf.backoff_min_ms;
	metrics_cluster_redis(1);
	if (atomic_exchange(&announced_down, false) || !rl->failed_once)
		log_msg("info", "%s: connected to Redis at %s:%d", rl->conf.name, rl->host, rl->conf.port);
	rl->failed_once = false;
}

static void send_hello(struct rloop *rl)
{
	redisAsyncContext *ac = rl->ac;
	char db[16];
	const char *auth[3];
	size_t auth_len[3];
	int n = redis_auth_argv(rl->user, rl->password, rl->conf.password_len, auth, auth_len);

	if (n)
		redisAsyncCommandArgv(ac, on_hello, rl, n, auth, auth_len);
	if (rl->conf.db) {
		const char *argv[2] = {"SELECT", db};
		size_t len[2] = {6, (size_t)snprintf(db, sizeof(db), "%d", rl->conf.db)};
		redisAsyncCommandArgv(ac, on_hello, rl, 2, argv, len);
	}
	for (size_t i = 0; i < rl->n_hellos; i++)
		redisAsyncCommandArgv(ac, on_hello, rl, rl->hellos[i].argc, (const char **)rl->hellos[i].argv,
		                      rl->hellos[i].argvlen);
	redisAsyncCommand(ac, on_ping, rl, "PING");
}

static void start_connect(struct rloop *rl)
{
	redisAsyncContext *ac = redisAsyncConnect(rl->host, rl->conf.port);

	if (ac)
		redis_reader_limit(ac->c.reader);
	if (!ac) {
		rl->ac = NULL;
		went_down(rl, "out of memory");
		return;
	}
	if (ac->err) {
		char why[128];
		snprintf(why, sizeof(why), "%.120s", ac->errstr);
		rl->ac = NULL;
		redisAsyncFree(ac);
		went_down(rl, why);
		return;
	}
	rl->ac = ac;
	rl->state = RL_CONNECTING;
	rl->deadline = clock_ms() + rl->conf.connect_timeout_ms;
	ac->data = rl;
	ac->ev.data = rl;
	ac->ev.addRead = add_read;
	ac->ev.delRead = del_read;
	ac->ev.addWrite = add_write;
	ac->ev.delWrite = del_write;
	ac->ev.cleanup = cleanup;
	redisAsyncSetConnectCallback(ac, on_connect);
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
	/* Queued now, written once connected: one round trip for all. */
	send_hello(rl);
}

/* ------------------------------------------------------ the surface */

static int resolve(const char *host, char *out, size_t outlen)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
	int rc = getaddrinfo(host, NULL, &hints, &res);

	if (rc != 0 || !res)
		return -1;
	if (res->ai_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)(void *)res->ai_addr)->sin_addr, out,
		          (socklen_t)outlen);
	else
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)(void *)res->ai_addr)->sin6_addr, out,
		          (socklen_t)outlen);
	freeaddrinfo(res);
	return 0;
}

struct rloop *rloop_new(int epfd, void *tag, const struct rloop_conf *conf, char *err, size_t errlen)
{
	struct rloop *rl = calloc(1, sizeof(*rl));

	if (!rl) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	rl->epfd = epfd;
	rl->tag = tag;
	rl->fd = -1;
	rl->conf = *conf;
	if (!rl->conf.name)
		rl->conf.name = "redis";
	if (!rl->conf.backoff_min_ms)
		rl->conf.backoff_min_ms = 100;
	if (rl->conf.backoff_max_ms < rl->conf.backoff_min_ms)
		rl->conf.backoff_max_ms = rl->conf.backoff_min_ms;
	rl->backoff = rl->conf.backoff_min_ms;
	rl->conf.host = NULL;
	if (resolve(conf->host, rl->host, sizeof(rl->host)) != 0) {
		snprintf(err, errlen, "%s: cannot resolve the Redis host %s", rl->conf.name, conf->host);
		free(rl);
		return NULL;
	}
	if (conf->password) {
		rl->password = malloc(conf->password_len + 1);
		if (!rl->password) {
			snprintf(err, errlen, "out of memory");
			free(rl);
			return NULL;
		}
		memcpy(rl->password, conf->password, conf->password_len);
		rl->password[conf->password_len] = '\0';
	}
	if (conf->user && !(rl->user = strdup(conf->user))) {
		snprintf(err, errlen, "out of memory");
		rloop_free(rl);
		return NULL;
	}
	rl->conf.password = NULL;
	rl->conf.user = NULL;
	/* The first attempt is made by the loop's first turn. */
	rl->state = RL_DOWN;
	rl->deadline = 0;
	return rl;
}

void rloop_free(struct rloop *rl)
{
	if (!rl)
		return;
	if (rl->ac) {
		redisAsyncContext *ac = rl->ac;
		if (rl->state == RL_READY)
			metrics_cluster_redis(-1);
		rl->ac = NULL;
		rl->state = RL_DOWN;
		redisAsyncFree(ac);
	}
	for (size_t i = 0; i < rl->n_hellos; i++) {
		for (int j = 0; j < rl->hellos[i].argc; j++)
			free(rl->hellos[i].argv[j]);
		free(rl->hellos[i].argv);
		free(rl->hellos[i].argvlen);
	}
	free(rl->hellos);
	free(rl->user);
	if (rl->password) {
		memset(rl->password, 0, rl->conf.password_len);
		free(rl->password);
	}
	free(rl);
}

int rloop_ready(const struct rloop *rl)
{
	return rl && rl->state == RL_READY;
}

long long rloop_due_ms(const struct rloop *rl)
{
	uint64_t now = clock_ms(), at;

	if (rl->state == RL_READY) {
		if (!rl->head)
			return -1;
		at = rl->head->deadline;
	} else {
		at = rl->deadline;
	}
	return at <= now ? 0 : (long long)(at - now);
}

void rloop_run(struct rloop *rl, uint32_t events)
{
	redisAsyncContext *ac = rl->ac;
	uint64_t now;

	if (ac && (events & (EPOLLIN | EPOLLERR | EPOLLHUP))) {
		rl->last_read = clock_ms();
		redisAsyncHandleRead(ac);
	}
	if (ac && rl->ac == ac && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
		redisAsyncHandleWrite(ac);
	now = clock_ms();
	switch (rl->state) {
	case RL_DOWN:
		if (now >= rl->deadline)
			start_connect(rl);
		break;
	case RL_CONNECTING:
		if (now >= rl->deadline)
			drop(rl, "no answer within the connect timeout");
		break;
	case RL_READY:
		if (rl->head && rl->head->deadline <= now) {
			/* Every command past its deadline ends now, NULL (its late
			 * reply is dropped). A Redis that answered nothing since the
			 * oldest of them was sent is stalled: the connection goes
			 * with them (drop ends the rest); one that is merely slow
			 * keeps it. */
			bool stalled = rl->last_read <= rl->head->sent;
			while (rl->head && rl->head->deadline <= now) {
				struct call *c = rl->head;
				rloop_reply_fn *fn = c->fn;
				unlist(rl, c);
				c->fn = NULL;
				if (fn)
					fn(NULL, c->arg);
			}
			if (stalled)
				drop(rl, "no answer within a command's deadline");
		}
		break;
	}
	sync_epoll(rl);
}

void rloop_flush(struct rloop *rl)
{
	if (rl->ac && rl->state == RL_READY && (rl->want & EPOLLOUT))
		redisAsyncHandleWrite(rl->ac);
	sync_epoll(rl);
}

static void on_reply(redisAsyncContext *ac, void *reply, void *p)
{
	struct call *c = p;
	struct rloop *rl = ac->data;

	if (c->listed && rl)
		unlist(rl, c);
	if (c->fn)
		c->fn(reply, c->arg);
	free(c);
}

int rloop_command(struct rloop *rl, int argc, const char **argv, const size_t *argvlen, unsigned timeout_ms,
                  rloop_reply_fn *fn, void *arg)
{
	struct call *c;

	if (!rloop_ready(rl) || !(c = calloc(1, sizeof(*c))))
		return -1;
	c->fn = fn;
	c->arg = arg;
	c->sent = clock_ms();
	c->deadline = c->sent + timeout_ms;
	if (redisAsyncCommandArgv(rl->ac, on_reply, c, argc, argv, argvlen) != REDIS_OK) {
		free(c);
		return -1;
	}
	enlist(rl, c);
	return 0;
}

int rloop_on_connect(struct rloop *rl, int argc, const char **argv, const size_t *argvlen)
{
	struct hello *more = realloc(rl->hellos, (rl->n_hellos + 1) * sizeof(*more));
	struct hello *h;

	if (!more)
		return -1;
	rl->hellos = more;
	h = &rl->hellos[rl->n_hellos];
	h->argc = argc;
	h->argv = calloc((size_t)argc, sizeof(char *));
	h->argvlen = calloc((size_t)argc, sizeof(size_t));
	if (!h->argv || !h->argvlen)
		goto fail;
	for (int i = 0; i < argc; i++) {
		if (!(h->argv[i] = malloc(argvlen[i] + 1)))
			goto fail;
		memcpy(h->argv[i], argv[i], argvlen[i]);
		h->argv[i][argvlen[i]] = '\0';
		h->argvlen[i] = argvlen[i];
	}
	rl->n_hellos++;
	return 0;
fail:
	for (int i = 0; h->argv && i < argc; i++)
		free(h->argv[i]);
	free(h->argv);
	free(h->argvlen);
	return -1;
}
