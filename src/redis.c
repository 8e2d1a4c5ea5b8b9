/*
 * redis.c — synchronous connections to the cluster's Redis, and its keys.
 *
 * Owns redis_connect (connect with a timeout, keepalive, AUTH, SELECT),
 * the AUTH arguments and the key names. It must never put the password in
 * a message or a log line, never be called on a request's loop (every call
 * here may block for up to cluster.redis.timeout_ms), and never write a key
 * outside "courier-broker:<name>:".
 */
#include "redis.h"

#include <hiredis.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>

#include "config.h"

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

/* Runs one command; 0 when Redis answered OK. */
static int command_ok(redisContext *rc, int argc, const char **argv, const size_t *lens, const char *what,
                      char *err, size_t errlen)
{
	redisReply *r = redisCommandArgv(rc, argc, argv, lens);
	int ok;

	if (!r) {
		snprintf(err, errlen, "%s: %s", what, rc->errstr[0] ? rc->errstr : "no answer");
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

struct redisContext *redis_connect(const struct cluster_conf *c, char *err, size_t errlen)
{
	struct timeval tv = {.tv_sec = c->timeout_ms / 1000, .tv_usec = (c->timeout_ms % 1000) * 1000};
	const char *argv[3];
	size_t lens[3];
	char db[16];
	redisContext *rc;
	int n;

	rc = redisConnectWithTimeout(c->host, c->port, tv);
	if (!rc) {
		snprintf(err, errlen, "redis %s:%u: out of memory", c->host, c->port);
		return NULL;
	}
	if (rc->err) {
		snprintf(err, errlen, "redis %s:%u: %s", c->host, c->port, rc->errstr);
		goto fail;
	}
	redis_reader_limit(rc->reader);
	if (redisSetTimeout(rc, tv) != REDIS_OK || redisEnableKeepAlive(rc) != REDIS_OK) {
		snprintf(err, errlen, "redis %s:%u: %s", c->host, c->port, rc->errstr);
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
	redisFree(rc);
	return NULL;
}

int redis_key(const struct cluster_conf *c, const char *suffix, char *out, size_t outlen)
{
	int n = snprintf(out, outlen, REDIS_KEY_ROOT "%s:%s", c->name, suffix);

	return n < 0 || (size_t)n >= outlen ? -1 : 0;
}
