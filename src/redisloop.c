/*
 * redisloop.c — one asynchronous Redis connection on an event loop's epoll.
 *
 * Owns the connection's socket and its place in the loop's epoll set, its
 * bytes (plain or TLS, through redisio.c: the TCP connect and the TLS
 * handshake driven by epoll like the rest), the commands it waits on in
 * the order their replies come and with their deadlines, and the
 * connection's life: connect (bounded by connect_timeout_ms, the TLS
 * handshake, AUTH and SELECT included), the caller's on-connect commands,
 * a PING that marks it ready; on any failure, a reconnection after a
 * backoff that doubles up to backoff_max_ms (with jitter, so the loops of
 * many brokers do not come back in step). hiredis keeps the protocol:
 * redisFormatCommandArgv encodes, its reader (redis.h's inbox, capped)
 * parses. A command that misses its deadline ends with a NULL reply; when
 * Redis answered nothing at all since it was sent, or its reply is there
 * only in part (a huge reply dripped a byte at a time), the connection
 * goes with it: a Redis that stalls is treated as gone, so later requests
 * do not each wait out the deadline, while one that is merely slow keeps
 * its connection. A reply not yet whole that grows past reply_max bytes
 * ends the connection at once.
 *
 * It must never block (the host is resolved once, by rloop_new, off the
 * loop), never run a caller's callback inside rloop_command, never run one
 * twice, and never log a password or a command's arguments.
 */
#include "redisloop.h"

#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "buf.h"
#include "clock.h"
#include "log.h"
#include "metrics.h"
#include "redis.h"
#include "redisio.h"

/* Commands queued and not yet written (a loop's are a few hundred bytes
 * each; far more means Redis stopped reading). */
#define OUT_MAX ((size_t)16 * 1024 * 1024)

enum rl_state { RL_DOWN, RL_CONNECTING, RL_READY };

/* Who waits for a reply: the handshake's commands, its closing PING, or a
 * caller's command. */
enum call_kind { CALL_HELLO, CALL_PING, CALL_USER };

/* A command sent: in the reply queue until its reply (or the connection's
 * end); a caller's also in the deadline list until its reply or its
 * deadline (then fn is NULL: its late reply is dropped). */
struct call {
	struct call *prev, *next; /* the deadline list */
	struct call *qnext;       /* the reply queue */
	uint64_t sent, deadline;
	enum call_kind kind;
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
	char host[INET6_ADDRSTRLEN]; /* resolved: the log's */
	struct sockaddr_storage addr;
	socklen_t addrlen;
	char *tls_host; /* the configured host, which the certificate must name */
	struct rloop_conf conf;
	char *user, *password; /* copies; the password zeroed when freed */

	struct redisio io;
	struct redis_inbox in;
	struct buf out; /* commands not yet written, from out_off */
	size_t out_off;
	enum rl_state state;
	uint32_t set;      /* what the epoll set holds for it */
	bool registered;   /* the socket is in the epoll set */
	int fd;            /* the socket registered */
	uint64_t deadline; /* RL_CONNECTING: connect and handshake; RL_DOWN: the reconnection */
	unsigned backoff;
	bool failed_once;   /* logged since the last time it was ready */
	uint64_t last_read; /* when bytes last came: a stalled Redis sends none */
	unsigned epoch;     /* bumped by each drop: a callback may have dropped it */

	struct call *head, *tail;   /* by deadline */
	struct call *qhead, *qtail; /* in the order their replies come */

	struct hello *hellos; /* rloop_on_connect's, in order */
	size_t n_hellos;
};

/* Whether some loop's connection is down and said so: the outage is logged
 * once for the process, and its end once. */
static atomic_bool announced_down;

/* ------------------------------------------------------------- epoll */

/* What the socket waits for: its connect or handshake's wish, else replies
 * always, and writing while commands are queued or TLS asks for it. */
static uint32_t wanted(const struct rloop *rl)
{
	uint32_t w;

	if (rl->io.fd < 0)
		return 0;
	if (!rl->io.ready)
		return rl->io.want;
	w = EPOLLIN;
	if (rl->out_off < rl->out.len || rl->io.want == REDISIO_WANT_WRITE)
		w |= EPOLLOUT;
	return w;
}

/* The epoll set made to match: once per turn (rloop_run, rloop_flush). */
static void sync_epoll(struct rloop *rl)
{
	uint32_t want = wanted(rl);
	struct epoll_event ev = {.events = want, .data.ptr = rl->tag};

	if (rl->registered && (rl->fd != rl->io.fd || !want)) {
		epoll_ctl(rl->epfd, EPOLL_CTL_DEL, rl->fd, NULL);
		rl->registered = false;
	}
	if (!want || (rl->registered && rl->set == want))
		return;
	rl->fd = rl->io.fd;
	if (epoll_ctl(rl->epfd, rl->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, rl->fd, &ev) == 0) {
		rl->registered = true;
		rl->set = want;
	}
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

/* Closes the socket and ends every command waiting on it: a caller's
 * callback runs (NULL) once, after the state says down. */
static void close_conn(struct rloop *rl)
{
	struct call *c = rl->qhead;

	if (rl->registered)
		epoll_ctl(rl->epfd, EPOLL_CTL_DEL, rl->fd, NULL);
	rl->registered = false;
	rl->set = 0;
	rl->fd = -1;
	redisio_close(&rl->io);
	redis_inbox_free(&rl->in);
	buf_free(&rl->out);
	rl->out_off = 0;
	rl->qhead = rl->qtail = NULL;
	rl->head = rl->tail = NULL;
	rl->epoch++;
	while (c) {
		struct call *next = c->qnext;
		rloop_reply_fn *fn = c->kind == CALL_USER ? c->fn : NULL;
		if (fn)
			fn(NULL, c->arg);
		free(c);
		c = next;
	}
}

/* The connection is gone: say so once, plan the next attempt, and end what
 * waited on it. */
static void drop(struct rloop *rl, const char *why)
{
	unsigned jitter;

	if (rl->state == RL_READY)
		metrics_cluster_redis(-1);
	if (!rl->failed_once && !atomic_exchange(&announced_down, true))
		log_msg("warn",
		        "%s: Redis at %s:%d is unavailable (%s): serving on local state until it is back",
		        rl->conf.name, rl->host, rl->conf.port, why);
	rl->failed_once = true;
	rl->state = RL_DOWN;
	jitter = rl->backoff / 2 ? (unsigned)random() % (rl->backoff / 2 + 1) : 0;
	rl->deadline = clock_ms() + rl->backoff / 2 + jitter;
	rl->backoff = rl->backoff * 2 > rl->conf.backoff_max_ms ? rl->conf.backoff_max_ms : rl->backoff * 2;
	close_conn(rl);
}

/* Queues a command and the call its reply goes to: 0, or -1. */
static int send_call(struct rloop *rl, enum call_kind kind, int argc, const char **argv, const size_t *lens,
                     struct call **out)
{
	struct call *c = calloc(1, sizeof(*c));
	char *cmd = NULL;
	int n;

	if (!c)
		return -1;
	n = redisFormatCommandArgv(&cmd, argc, argv, lens);
	if (n <= 0 || buf_add(&rl->out, cmd, (size_t)n) != 0) {
		if (cmd)
			redisFreeCommand(cmd);
		free(c);
		return -1;
	}
	redisFreeCommand(cmd);
	c->kind = kind;
	if (rl->qtail)
		rl->qtail->qnext = c;
	else
		rl->qhead = c;
	rl->qtail = c;
	if (out)
		*out = c;
	return 0;
}

/* AUTH, SELECT, the on-connect commands and PING: queued now, written once
 * connected: one round trip for all. */
static int send_hello(struct rloop *rl)
{
	char db[16];
	const char *auth[3];
	size_t auth_len[3];
	int n = redis_auth_argv(rl->user, rl->password, rl->conf.password_len, auth, auth_len);

	if (n && send_call(rl, CALL_HELLO, n, auth, auth_len, NULL))
		return -1;
	if (rl->conf.db) {
		const char *argv[2] = {"SELECT", db};
		size_t len[2] = {6, (size_t)snprintf(db, sizeof(db), "%d", rl->conf.db)};
		if (send_call(rl, CALL_HELLO, 2, argv, len, NULL))
			return -1;
	}
	for (size_t i = 0; i < rl->n_hellos; i++)
		if (send_call(rl, CALL_HELLO, rl->hellos[i].argc, (const char **)rl->hellos[i].argv,
		              rl->hellos[i].argvlen, NULL))
			return -1;
	return send_call(rl, CALL_PING, 1, (const char *[]){"PING"}, (const size_t[]){4}, NULL);
}

static void start_connect(struct rloop *rl)
{
	char why[256];

	buf_init(&rl->out, OUT_MAX);
	rl->out_off = 0;
	if (redis_inbox_init(&rl->in, rl->conf.reply_max) != 0) {
		drop(rl, "out of memory");
		return;
	}
	if (redisio_open(&rl->io, (struct sockaddr *)&rl->addr, rl->addrlen, rl->conf.tls, rl->tls_host, why,
	                 sizeof(why)) != 0) {
		drop(rl, why);
		return;
	}
	rl->state = RL_CONNECTING;
	rl->deadline = clock_ms() + rl->conf.connect_timeout_ms;
	if (send_hello(rl) != 0)
		drop(rl, "out of memory");
}

/* The handshake's replies: any error fails it; PING's marks it ready. */
static void on_hello(struct rloop *rl, const struct call *c, const redisReply *r)
{
	char why[160];

	if (r->type == REDIS_REPLY_ERROR) {
		/* Redis's error text: never the password. */
		snprintf(why, sizeof(why), "%s refused: %.100s", c->kind == CALL_PING ? "PING" : "handshake",
		         r->str);
		drop(rl, why);
		return;
	}
	if (c->kind != CALL_PING || rl->state != RL_CONNECTING)
		return;
	rl->state = RL_READY;
	rl->backoff = rl->conf.backoff_min_ms;
	metrics_cluster_redis(1);
	if (atomic_exchange(&announced_down, false) || !rl->failed_once)
		log_msg("info", "%s: connected to Redis at %s:%d%s", rl->conf.name, rl->host, rl->conf.port,
		        rl->conf.tls ? " (TLS)" : "");
	rl->failed_once = false;
}

/* Each whole reply to the call at the queue's head. 0, or -1 when the
 * connection went. */
static int dispatch(struct rloop *rl)
{
	unsigned epoch = rl->epoch;
	char why[200];

	for (;;) {
		void *reply;
		struct call *c;
		if (redis_inbox_next(&rl->in, &reply, why, sizeof(why)) != 0) {
			drop(rl, why);
			return -1;
		}
		if (!reply)
			return 0;
		if (!(c = rl->qhead)) {
			freeReplyObject(reply);
			drop(rl, "a reply nobody asked for");
			return -1;
		}
		rl->qhead = c->qnext;
		if (!rl->qhead)
			rl->qtail = NULL;
		unlist(rl, c);
		if (c->kind != CALL_USER)
			on_hello(rl, c, reply);
		else if (c->fn)
			c->fn(reply, c->arg);
		freeReplyObject(reply);
		free(c);
		if (rl->epoch != epoch)
			return -1;
	}
}

/* Reads until the socket would block, handing each whole reply on. */
static int pump_read(struct rloop *rl)
{
	char chunk[16384], why[200];

	for (;;) {
		ssize_t n = redisio_read(&rl->io, chunk, sizeof(chunk), why, sizeof(why));
		if (n < 0) {
			drop(rl, why);
			return -1;
		}
		if (n == 0)
			return 0;
		rl->last_read = clock_ms();
		if (redis_inbox_feed(&rl->in, chunk, (size_t)n, why, sizeof(why)) != 0) {
			drop(rl, why);
			return -1;
		}
		if (dispatch(rl) != 0)
			return -1;
		/* A short read emptied the socket (epoll says when more comes):
		 * no read just to hear "would block", unless OpenSSL holds more. */
		if ((size_t)n < sizeof(chunk) && !redisio_pending(&rl->io)) {
			rl->io.want = REDISIO_WANT_READ;
			return 0;
		}
	}
}

/* Writes what is queued until the socket would block. */
static int pump_write(struct rloop *rl)
{
	char why[200];

	if (rl->out.failed) {
		drop(rl, "too many commands queued");
		return -1;
	}
	while (rl->out_off < rl->out.len) {
		ssize_t n = redisio_write(&rl->io, rl->out.data + rl->out_off, rl->out.len - rl->out_off, why,
		                          sizeof(why));
		if (n < 0) {
			drop(rl, why);
			return -1;
		}
		if (n == 0)
			return 0;
		rl->out_off += (size_t)n;
	}
	buf_reset(&rl->out);
	rl->out_off = 0;
	return 0;
}

/* The socket's events: connect and handshake first, then write, read. */
static void pump(struct rloop *rl, uint32_t events)
{
	char why[256];
	bool was_ready = rl->io.ready;
	int st;

	if (rl->io.fd < 0)
		return;
	if (!rl->io.ready) {
		st = redisio_handshake(&rl->io, why, sizeof(why));
		if (st < 0) {
			drop(rl, why);
			return;
		}
		if (st > 0)
			return;
	}
	if (rl->out_off < rl->out.len && pump_write(rl) != 0)
		return;
	/* Just ready: OpenSSL may already hold bytes the socket will not
	 * announce again. */
	if (!was_ready || (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) || rl->io.want == REDISIO_WANT_WRITE)
		pump_read(rl);
}

/* ------------------------------------------------------ the surface */

static int resolve(struct rloop *rl, const char *host, char *out, size_t outlen)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
	int rc = getaddrinfo(host, NULL, &hints, &res);

	if (rc != 0 || !res || res->ai_addrlen > sizeof(rl->addr)) {
		if (res)
			freeaddrinfo(res);
		return -1;
	}
	memcpy(&rl->addr, res->ai_addr, res->ai_addrlen);
	rl->addrlen = res->ai_addrlen;
	if (res->ai_family == AF_INET)
		((struct sockaddr_in *)(void *)&rl->addr)->sin_port = htons((uint16_t)rl->conf.port);
	else
		((struct sockaddr_in6 *)(void *)&rl->addr)->sin6_port = htons((uint16_t)rl->conf.port);
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
	rl->io.fd = -1;
	rl->conf = *conf;
	if (!rl->conf.name)
		rl->conf.name = "redis";
	if (!rl->conf.backoff_min_ms)
		rl->conf.backoff_min_ms = 100;
	if (rl->conf.backoff_max_ms < rl->conf.backoff_min_ms)
		rl->conf.backoff_max_ms = rl->conf.backoff_min_ms;
	if (!rl->conf.reply_max)
		rl->conf.reply_max = REDIS_REPLY_MAX_SMALL;
	rl->backoff = rl->conf.backoff_min_ms;
	rl->conf.host = NULL;
	rl->conf.tls = NULL;
	rl->conf.password = NULL;
	rl->conf.user = NULL;
	if (resolve(rl, conf->host, rl->host, sizeof(rl->host)) != 0) {
		snprintf(err, errlen, "%s: cannot resolve the Redis host %s", rl->conf.name, conf->host);
		goto fail;
	}
	if (!(rl->tls_host = strdup(conf->host)))
		goto oom;
	if (conf->password) {
		if (!(rl->password = malloc(conf->password_len + 1)))
			goto oom;
		memcpy(rl->password, conf->password, conf->password_len);
		rl->password[conf->password_len] = '\0';
	}
	if (conf->user && !(rl->user = strdup(conf->user)))
		goto oom;
	rl->conf.tls = redisio_tls_ref(conf->tls);
	/* The first attempt is made by the loop's first turn. */
	rl->state = RL_DOWN;
	rl->deadline = 0;
	return rl;
oom:
	snprintf(err, errlen, "out of memory");
fail:
	rloop_free(rl);
	return NULL;
}

void rloop_free(struct rloop *rl)
{
	if (!rl)
		return;
	if (rl->state == RL_READY)
		metrics_cluster_redis(-1);
	rl->state = RL_DOWN;
	close_conn(rl);
	for (size_t i = 0; i < rl->n_hellos; i++) {
		for (int j = 0; j < rl->hellos[i].argc; j++)
			free(rl->hellos[i].argv[j]);
		free(rl->hellos[i].argv);
		free(rl->hellos[i].argvlen);
	}
	free(rl->hellos);
	free(rl->user);
	free(rl->tls_host);
	redisio_tls_free(rl->conf.tls);
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

/* The reply arriving now belongs to the queue's head: part of it there
 * past that command's deadline is a stall (a drip), whatever still comes. */
static bool reply_stalled(const struct rloop *rl, uint64_t now)
{
	return rl->qhead && rl->qhead->deadline && rl->qhead->deadline <= now && redis_inbox_pending(&rl->in);
}

long long rloop_due_ms(const struct rloop *rl)
{
	uint64_t now = clock_ms(), at;

	if (rl->state == RL_READY) {
		if (rl->head)
			at = rl->head->deadline;
		else if (rl->qhead && rl->qhead->deadline && redis_inbox_pending(&rl->in))
			at = rl->qhead->deadline;
		else
			return -1;
	} else {
		at = rl->deadline;
	}
	return at <= now ? 0 : (long long)(at - now);
}

/* Commands past their deadline end now, NULL (their late replies are
 * dropped). A Redis that answered nothing since the oldest of them was
 * sent, or whose reply is there only in part, is stalled: the connection
 * goes with them (drop ends the rest); one that is merely slow keeps it. */
static void expire(struct rloop *rl, uint64_t now)
{
	const char *why = NULL;

	if (reply_stalled(rl, now))
		why = "a reply still not whole at its command's deadline";
	else if (rl->head && rl->head->deadline <= now && rl->last_read <= rl->head->sent)
		why = "no answer within a command's deadline";
	while (rl->state == RL_READY && rl->head && rl->head->deadline <= now) {
		struct call *c = rl->head;
		rloop_reply_fn *fn = c->fn;
		unlist(rl, c);
		c->fn = NULL;
		if (fn)
			fn(NULL, c->arg);
	}
	if (why && rl->state == RL_READY)
		drop(rl, why);
}

void rloop_run(struct rloop *rl, uint32_t events)
{
	uint64_t now;

	if (rl->io.fd >= 0 && (events || (rl->io.ready && rl->out_off < rl->out.len)))
		pump(rl, events);
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
		expire(rl, now);
		break;
	}
	sync_epoll(rl);
}

void rloop_flush(struct rloop *rl)
{
	if (rl->state == RL_READY && (rl->out_off < rl->out.len || rl->out.failed))
		pump_write(rl);
	sync_epoll(rl);
}

int rloop_command(struct rloop *rl, int argc, const char **argv, const size_t *argvlen, unsigned timeout_ms,
                  rloop_reply_fn *fn, void *arg)
{
	struct call *c;

	if (!rloop_ready(rl) || send_call(rl, CALL_USER, argc, argv, argvlen, &c) != 0)
		return -1;
	c->fn = fn;
	c->arg = arg;
	c->sent = clock_ms();
	c->deadline = c->sent + timeout_ms;
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
