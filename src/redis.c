/*
 * redis.c — synchronous connections to the cluster's Redis, and its keys.
 *
 * Owns the synchronous connection (struct redis_conn: connect with a
 * timeout, TLS through redisio.c, AUTH, SELECT, commands each bounded by
 * the timeout, a subscription's reads), the replies' inbox every connection
 * reads through (hiredis's reader, the element cap, the cap on a reply not
 * yet whole), the AUTH arguments and the key names. It must never put the
 * password in a message or a log line, never be called on a request's loop
 * (every call here may block for up to cluster.redis.timeout_ms), and never
 * write a key outside "courier-broker:<name>:".
 */
#include "redis.h"

#include <errno.h>
#include <fcntl.h>
#include <hiredis.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "clock.h"
#include "config.h"
#include "redisio.h"

int redis_auth_argv(const char *user, const char *password, size_t password_len, const char *argv[3],
                    size_t lens[3])
{
	int n = 0;

	if (!password)
		return 0;
	argv[n] = "AUTH";
	lens[n++] = 4;
	if (user) {
		argv[n] = user;
		lens[n++] = strlen(user);
	}
	argv[n] = password;
	lens[n++] = password_len;
	return n;
}

/* hiredis's own functions, but for an array too long to be ours. */
static redisReplyObjectFunctions limited;
static void *(*create_array)(const redisReadTask *, int);
static pthread_once_t limited_once = PTHREAD_ONCE_INIT;

static void *limited_array(const redisReadTask *task, int elements)
{
	return elements > REDIS_ARRAY_MAX ? NULL : create_array(task, elements);
}

/* hiredis does not export its default functions: a reader holds them. */
static void limited_init(void)
{
	redisReader *r = redisReaderCreate();

	if (!r || !r->fn)
		goto out;
	limited = *r->fn;
	create_array = limited.createArray;
	limited.createArray = limited_array;
out:
	if (r)
		redisReaderFree(r);
}

void redis_reader_limit(struct redisReader *r)
{
	pthread_once(&limited_once, limited_init);
	if (r && create_array)
		r->fn = &limited;
}

int redis_auth_args(const struct cluster_conf *c, const char *argv[3], size_t lens[3])
{
	return redis_auth_argv(c->user, (const char *)c->password.data, c->password.len, argv, lens);
}

/* ------------------------------------------------------------------------ */
/* The replies' inbox                                                       */
/* ------------------------------------------------------------------------ */

int redis_inbox_init(struct redis_inbox *in, size_t max)
{
	in->partial = 0;
	in->max = max;
	if (!(in->reader = redisReaderCreate()))
		return -1;
	redis_reader_limit(in->reader);
	return 0;
}

void redis_inbox_free(struct redis_inbox *in)
{
	if (in->reader)
		redisReaderFree(in->reader);
	in->reader = NULL;
	in->partial = 0;
}

int redis_inbox_feed(struct redis_inbox *in, const char *buf, size_t n, char *err, size_t errlen)
{
	/* Counted before the reader takes them: the cap holds for what a
	 * reply not yet whole makes the reader keep (its unparsed bytes and
	 * the elements already parsed). */
	if (n > in->max || in->partial > in->max - n) {
		snprintf(err, errlen, "a reply grew past %zu bytes before it was whole", in->max);
		return -1;
	}
	in->partial += n;
	if (redisReaderFeed(in->reader, buf, n) != REDIS_OK) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

int redis_inbox_next(struct redis_inbox *in, void **reply, char *err, size_t errlen)
{
	redisReader *r = in->reader;

	*reply = NULL;
	if (redisReaderGetReply(r, reply) != REDIS_OK) {
		/* The element cap's refusal is an out-of-memory error. */
		snprintf(err, errlen, "reply refused: %s",
		         r->err == REDIS_ERR_OOM ? "too many elements" : r->errstr);
		return -1;
	}
	/* A whole reply: what follows it in the reader's buffer is all that is
	 * held of the next. */
	if (*reply)
		in->partial = r->len - r->pos;
	return 0;
}

bool redis_inbox_pending(const struct redis_inbox *in)
{
	return in->partial > 0;
}

/* ------------------------------------------------------------------------ */
/* The synchronous connection                                               */
/* ------------------------------------------------------------------------ */

/* Commands queued and not yet written: what `deny` sends is at most the
 * command line's users. */
#define OUT_MAX ((size_t)64 * 1024 * 1024)

struct redis_conn {
	struct redisio io;
	struct redis_inbox in;
	struct buf out;
	size_t out_off; /* written so far */
	unsigned timeout_ms;
	char errstr[256];
};

const char *redis_error(const struct redis_conn *rc)
{
	return rc->errstr;
}

int redis_fd(const struct redis_conn *rc)
{
	return rc->io.fd;
}

/* Waits until io wants something (io->want) or deadline: 0, or -1 (errstr). */
static int wait_io(struct redis_conn *rc, uint64_t deadline, const char *what)
{
	uint64_t now = clock_ms();
	struct pollfd pfd = {.fd = rc->io.fd, .events = (short)rc->io.want};
	int n;

	if (now >= deadline)
		goto late;
	n = poll(&pfd, 1, (int)(deadline - now));
	if (n > 0 || (n < 0 && errno == EINTR))
		return 0;
	if (n < 0) {
		snprintf(rc->errstr, sizeof(rc->errstr), "poll: %s", strerror(errno));
		return -1;
	}
late:
	snprintf(rc->errstr, sizeof(rc->errstr), "%s within %u ms", what, rc->timeout_ms);
	return -1;
}

void redis_close(struct redis_conn *rc)
{
	if (!rc)
		return;
	redisio_close(&rc->io);
	redis_inbox_free(&rc->in);
	buf_free(&rc->out);
	free(rc);
}

int redis_append(struct redis_conn *rc, int argc, const char **argv, const size_t *lens)
{
	char *cmd = NULL;
	int n = redisFormatCommandArgv(&cmd, argc, argv, lens);
	int ok = n > 0 && buf_add(&rc->out, cmd, (size_t)n) == 0;

	if (cmd)
		redisFreeCommand(cmd);
	if (!ok)
		snprintf(rc->errstr, sizeof(rc->errstr), "out of memory");
	return ok ? 0 : -1;
}

static int flush_until(struct redis_conn *rc, uint64_t deadline)
{
	while (rc->out_off < rc->out.len) {
		ssize_t n = redisio_write(&rc->io, rc->out.data + rc->out_off, rc->out.len - rc->out_off,
		                          rc->errstr, sizeof(rc->errstr));
		if (n < 0)
			return -1;
		if (n == 0 && wait_io(rc, deadline, "could not send") != 0)
			return -1;
		rc->out_off += (size_t)n;
	}
	buf_reset(&rc->out);
	rc->out_off = 0;
	return 0;
}

int redis_flush(struct redis_conn *rc)
{
	if (rc->out.failed) {
		snprintf(rc->errstr, sizeof(rc->errstr), "out of memory");
		return -1;
	}
	return flush_until(rc, clock_ms() + rc->timeout_ms);
}

/* Reads what the socket holds now (until it would block): 0 or -1. */
int redis_receive(struct redis_conn *rc)
{
	char chunk[16384];

	for (;;) {
		ssize_t n = redisio_read(&rc->io, chunk, sizeof(chunk), rc->errstr, sizeof(rc->errstr));
		if (n < 0)
			return -1;
		if (n == 0)
			return 0;
		if (redis_inbox_feed(&rc->in, chunk, (size_t)n, rc->errstr, sizeof(rc->errstr)) != 0)
			return -1;
	}
}

struct redisReply *redis_take(struct redis_conn *rc)
{
	void *reply;

	if (redis_inbox_next(&rc->in, &reply, rc->errstr, sizeof(rc->errstr)) != 0)
		return NULL;
	return reply;
}

struct redisReply *redis_get_reply(struct redis_conn *rc)
{
	uint64_t deadline = clock_ms() + rc->timeout_ms;
	void *reply = NULL;

	if (redis_flush(rc) != 0)
		return NULL;
	for (;;) {
		if (redis_inbox_next(&rc->in, &reply, rc->errstr, sizeof(rc->errstr)) != 0)
			return NULL;
		if (reply)
			return reply;
		if (redis_receive(rc) != 0)
			return NULL;
		if (redis_inbox_next(&rc->in, &reply, rc->errstr, sizeof(rc->errstr)) != 0)
			return NULL;
		if (reply)
			return reply;
		/* Not whole by the deadline, however much of it came: stalled. */
		if (wait_io(rc, deadline, redis_inbox_pending(&rc->in) ? "reply not whole" : "no answer") !=
		    0)
			return NULL;
	}
}

struct redisReply *redis_command(struct redis_conn *rc, int argc, const char **argv, const size_t *lens)
{
	if (redis_append(rc, argc, argv, lens) != 0)
		return NULL;
	return redis_get_reply(rc);
}

/* Runs one command; 0 when Redis answered OK. */
static int command_ok(struct redis_conn *rc, int argc, const char **argv, const size_t *lens,
                      const char *what, char *err, size_t errlen)
{
	redisReply *r = redis_command(rc, argc, argv, lens);
	int ok;

	if (!r) {
		snprintf(err, errlen, "%s: %s", what, rc->errstr);
		return -1;
	}
	ok = r->type == REDIS_REPLY_STATUS && strcmp(r->str, "OK") == 0;
	if (!ok)
		/* Redis's own error text names no secret ("WRONGPASS invalid
		 * username-password pair", "NOAUTH ..."). */
		snprintf(err, errlen, "%s: %s", what,
		         r->type == REDIS_REPLY_ERROR ? r->str : "unexpected answer");
	freeReplyObject(r);
	return ok ? 0 : -1;
}

/* The TCP connection and the TLS handshake to one of host's addresses,
 * within deadline: 0, or -1 (rc->errstr). */
static int open_socket(struct redis_conn *rc, const struct cluster_conf *c, uint64_t deadline)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *res = NULL, *ai;
	char port[8];
	int g;

	snprintf(port, sizeof(port), "%u", c->port);
	if ((g = getaddrinfo(c->host, port, &hints, &res)) != 0 || !res) {
		snprintf(rc->errstr, sizeof(rc->errstr), "cannot resolve: %s", gai_strerror(g));
		return -1;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		int st;
		if (redisio_open(&rc->io, ai->ai_addr, ai->ai_addrlen, c->tls ? c->tls_ctx : NULL, c->host,
		                 rc->errstr, sizeof(rc->errstr)) != 0)
			continue;
		while ((st = redisio_handshake(&rc->io, rc->errstr, sizeof(rc->errstr))) == 1)
			if (wait_io(rc, deadline,
			            rc->io.connected ? "no TLS handshake" : "could not connect") != 0)
				break;
		if (st == 0)
			break;
		redisio_close(&rc->io);
	}
	freeaddrinfo(res);
	return ai ? 0 : -1;
}

static struct redis_conn *conn_new(unsigned timeout_ms, size_t reply_max)
{
	struct redis_conn *rc = calloc(1, sizeof(*rc));

	if (!rc)
		return NULL;
	rc->io.fd = -1;
	rc->timeout_ms = timeout_ms;
	buf_init(&rc->out, OUT_MAX);
	if (redis_inbox_init(&rc->in, reply_max) != 0) {
		redis_close(rc);
		return NULL;
	}
	return rc;
}

struct redis_conn *redis_conn_fd(int fd, unsigned timeout_ms, size_t reply_max)
{
	struct redis_conn *rc = conn_new(timeout_ms, reply_max);
	int fl = fcntl(fd, F_GETFL);

	if (!rc || fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) {
		redis_close(rc);
		return NULL;
	}
	rc->io.fd = fd;
	rc->io.connected = rc->io.ready = true;
	return rc;
}

struct redis_conn *redis_connect(const struct cluster_conf *c, size_t reply_max, char *err, size_t errlen)
{
	struct redis_conn *rc = conn_new(c->timeout_ms, reply_max);
	const char *argv[3];
	size_t lens[3];
	char db[16];
	int n;

	if (!rc) {
		snprintf(err, errlen, "redis %s:%u: out of memory", c->host, c->port);
		goto fail;
	}
	if (c->tls && !c->tls_ctx) {
		snprintf(err, errlen, "redis %s:%u: no TLS context", c->host, c->port);
		goto fail;
	}
	if (open_socket(rc, c, clock_ms() + c->timeout_ms) != 0) {
		snprintf(err, errlen, "redis %s:%u: %s%s", c->host, c->port, c->tls ? "rediss: " : "",
		         rc->errstr);
		goto fail;
	}
	if ((n = redis_auth_args(c, argv, lens)) > 0 &&
	    command_ok(rc, n, argv, lens, "redis AUTH", err, errlen))
		goto fail;
	if (c->db) {
		snprintf(db, sizeof(db), "%u", c->db);
		argv[0] = "SELECT";
		lens[0] = 6;
		argv[1] = db;
		lens[1] = strlen(db);
		if (command_ok(rc, 2, argv, lens, "redis SELECT", err, errlen))
			goto fail;
	}
	return rc;
fail:
	redis_close(rc);
	return NULL;
}

int redis_key(const struct cluster_conf *c, const char *suffix, char *out, size_t outlen)
{
	int n = snprintf(out, outlen, REDIS_KEY_ROOT "%s:%s", c->name, suffix);

	return n < 0 || (size_t)n >= outlen ? -1 : 0;
}
