/*
 * redis.h — reaching the cluster's Redis (cluster.redis in the config).
 *
 * One way to open a connection for the synchronous uses off the request
 * path (the deny list's subscriber thread, the `deny`/`allow` commands):
 * connect within the configured timeout, AUTH, SELECT; and the names of
 * the keys, all under "courier-broker:<cluster.name>:". The AUTH command's
 * arguments come from redis_auth_args, so asynchronous connections log in
 * the same way. Nothing here runs on a request's loop.
 */
#ifndef BROKER_REDIS_H
#define BROKER_REDIS_H

#include <stddef.h>

struct cluster_conf;
struct redisContext;
struct redisReader;

/* The most elements a reply may announce (a deny set is at most 1,000,000
 * users, as a deny_users file). */
#define REDIS_ARRAY_MAX 1048576

/* Every key starts with this, then the cluster's name and ':'. */
#define REDIS_KEY_ROOT "courier-broker:"

/*
 * Connects to c's Redis within c->timeout_ms (each later command times out
 * after it too), with TCP keepalive, then AUTH (when c has a password) and
 * SELECT (when c->db is not 0). Returns the connection (the caller frees it
 * with redisFree), or NULL with a reason in err (never the password).
 */
struct redisContext *redis_connect(const struct cluster_conf *c, char *err, size_t errlen);

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
