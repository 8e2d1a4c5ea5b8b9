/*
 * redis.h — reaching the cluster's Redis (cluster.redis in the config).
 *
 * One way to open a connection for the synchronous uses off the request
 * path (the deny list's subscriber thread, the `deny`/`allow` commands):
 * connect within the configured timeout (TLS for rediss://: redisio.h),
 * AUTH, SELECT, then commands each bounded by that timeout; and the names
 * of the keys, all under "courier-broker:<cluster.name>:". The AUTH
 * command's arguments come from redis_auth_args, and every connection's
 * replies go through a struct redis_inbox, so asynchronous connections
 * (redisloop.c) log in and read the same way. Nothing here runs on a
 * request's loop.
 */
#ifndef BROKER_REDIS_H
#define BROKER_REDIS_H

#include <stdbool.h>
#include <stddef.h>

struct cluster_conf;
struct redisReader;
struct redisReply;
struct redis_conn;

/* The most elements a reply may announce (a deny set is at most 1,000,000
 * users, as a deny_users file). */
#define REDIS_ARRAY_MAX 1048576

/* Every key starts with this, then the cluster's name and ':'. */
#define REDIS_KEY_ROOT "courier-broker:"

/*
 * The most bytes of replies not yet whole a connection holds (a Redis, or
 * someone between, that sends a huge reply a byte at a time must not grow
 * memory without bound). LARGE fits the largest reply the broker reads: a
 * deny set of REDIS_ARRAY_MAX user ids of 256 bytes ("$256\r\n" id "\r\n"
 * each), read by the subscriber's resync; SMALL is for connections that
 * only ever get short replies (the loops', the subscription).
 */
#define REDIS_REPLY_MAX_LARGE ((size_t)REDIS_ARRAY_MAX * 264 + 64)
#define REDIS_REPLY_MAX_SMALL ((size_t)64 * 1024)

/* The replies arriving on one connection: hiredis's reader (with
 * redis_reader_limit) and the bytes fed to it since its last whole reply,
 * at most max. */
struct redis_inbox {
	struct redisReader *reader;
	size_t partial;
	size_t max;
};

/* 0, or -1 when out of memory. */
int redis_inbox_init(struct redis_inbox *in, size_t max);
void redis_inbox_free(struct redis_inbox *in);

/* Feeds n bytes read from the connection: 0, or -1 (and why in err) when
 * a reply not yet whole would hold more than max bytes. */
int redis_inbox_feed(struct redis_inbox *in, const char *buf, size_t n, char *err, size_t errlen);

/* The next whole reply (for freeReplyObject) into *reply, NULL when none is
 * whole yet: 0, or -1 on a reply the reader refuses (err). */
int redis_inbox_next(struct redis_inbox *in, void **reply, char *err, size_t errlen);

/* Whether part of a reply has arrived and waits for the rest. */
bool redis_inbox_pending(const struct redis_inbox *in);

/*
 * Connects to c's Redis within c->timeout_ms, with TCP keepalive; over TLS
 * for rediss:// (c->tls_ctx: the certificate and the host checked), then
 * AUTH (when c has a password) and SELECT (when c->db is not 0). Replies
 * not yet whole hold at most reply_max bytes (REDIS_REPLY_MAX_*). Returns
 * the connection (for redis_close), or NULL with a reason in err (never the
 * password).
 */
struct redis_conn *redis_connect(const struct cluster_conf *c, size_t reply_max, char *err, size_t errlen);
void redis_close(struct redis_conn *rc);

/* A connection on fd, a plain socket already connected (taken: closed by
 * redis_close), for the tests and fuzzers; NULL when out of memory. */
struct redis_conn *redis_conn_fd(int fd, unsigned timeout_ms, size_t reply_max);

/* Queues a command (written by redis_flush or redis_get_reply): 0 or -1. */
int redis_append(struct redis_conn *rc, int argc, const char **argv, const size_t *lens);

/* Writes what is queued within the timeout: 0, or -1 (redis_error). */
int redis_flush(struct redis_conn *rc);

/* Writes what is queued, then waits for the next reply: the whole reply
 * must be there within the timeout (one dripped a byte at a time misses
 * it: a stalled Redis). The reply (freeReplyObject), or NULL (redis_error);
 * after NULL the connection is unusable. */
struct redisReply *redis_get_reply(struct redis_conn *rc);

/* redis_append, then redis_get_reply. */
struct redisReply *redis_command(struct redis_conn *rc, int argc, const char **argv, const size_t *lens);

/* For a connection that waits for messages (a subscription): its socket
 * to poll for reading; redis_receive reads what arrived without waiting
 * (0, or -1: redis_error); redis_take gives a whole reply already read
 * (NULL: none, or a failure: redis_error then says so). */
int redis_fd(const struct redis_conn *rc);
int redis_receive(struct redis_conn *rc);
struct redisReply *redis_take(struct redis_conn *rc);

/* Why the last call failed ("" when none did): never a secret. */
const char *redis_error(const struct redis_conn *rc);

/* The AUTH command for c: its arguments into argv/lens (at most 3:
 * "AUTH" [user] password; they point into c) and their count, or 0 when c
 * has no password. */
int redis_auth_args(const struct cluster_conf *c, const char *argv[3], size_t lens[3]);

/* Makes r refuse a reply announcing more than REDIS_ARRAY_MAX elements
 * (an out-of-memory error: the connection fails) instead of allocating what
 * any number a server sends asks for (hiredis 0.14 has no such cap: "*N"
 * allocates N pointers before a single element comes). Every connection
 * to Redis gets it. */
void redis_reader_limit(struct redisReader *r);

/* The same from a user (NULL: none) and a password (NULL: no AUTH), for a
 * connection that keeps its own copies (redisloop.c). */
int redis_auth_argv(const char *user, const char *password, size_t password_len, const char *argv[3],
                    size_t lens[3]);

/* "courier-broker:<name>:<suffix>" into out; -1 when it does not fit. */
int redis_key(const struct cluster_conf *c, const char *suffix, char *out, size_t outlen);

#endif
