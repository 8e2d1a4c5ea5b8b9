/*
 * redisloop.h — one asynchronous Redis connection driven by an event loop's epoll.
 *
 * The connection owns its socket on the loop's own epoll set (plain or TLS:
 * redisio.h), encodes with hiredis's redisFormatCommandArgv and parses with
 * its reader (redis.h's inbox): no thread, no blocking call. The loop asks
 * rloop_due_ms for its next timer, and calls rloop_run with the events of
 * the connection's socket (or 0 when only the time passed). Everything runs
 * on the loop's thread.
 */
#ifndef BROKER_REDISLOOP_H
#define BROKER_REDISLOOP_H

#include <stddef.h>
#include <stdint.h>

struct rloop;
struct redisReply;

/* Where and how to connect. host must be numeric or resolvable without the
 * network (it is resolved once, by rloop_new); password may be NULL. */
struct rloop_conf {
	const char *host;
	int port;
	int db;
	const char *user; /* AUTH user password (a Redis ACL user), or NULL */
	const char *password;
	size_t password_len;
	unsigned connect_timeout_ms; /* also the wait for AUTH/SELECT */
	unsigned backoff_min_ms, backoff_max_ms;
	const char *name; /* for the log ("cluster"), static */
	/* rediss://: the TLS context (redisio_tls_new; rloop_new takes its own
	 * reference), host then being the name the certificate must carry.
	 * NULL: plain TCP. */
	struct ssl_ctx_st *tls;
	/* Bytes of a reply not yet whole it may hold (0: REDIS_REPLY_MAX_SMALL). */
	size_t reply_max;
};

/* A command's end: reply is NULL when it timed out or the connection was
 * lost before its answer (never both: the callback runs exactly once). */
typedef void rloop_reply_fn(const struct redisReply *reply, void *arg);

/* A connection registered on epfd with tag as its epoll data (the loop
 * recognises its events by it); it starts connecting at once. NULL and err
 * on failure (the host cannot be resolved, out of memory). */
struct rloop *rloop_new(int epfd, void *tag, const struct rloop_conf *conf, char *err, size_t errlen);

/* Closes the connection: every pending command's callback runs (NULL). */
void rloop_free(struct rloop *rl);

/* Whether the connection is up and authenticated: commands may be sent. */
int rloop_ready(const struct rloop *rl);

/* Milliseconds until rloop_run must run for a timer (connect timeout,
 * a command's deadline, a reconnection), or -1 when none is pending. */
long long rloop_due_ms(const struct rloop *rl);

/* Handles the socket's epoll events (0: timers only). */
void rloop_run(struct rloop *rl, uint32_t events);

/* Writes what commands queued since the loop last waited (saves a turn),
 * and brings the epoll set up to date: call it before waiting whenever
 * commands were sent outside rloop_run. */
void rloop_flush(struct rloop *rl);

/* Sends a command; fn (NULL: nobody waits for the answer) runs later on
 * this loop, never inside this call.
 * Returns 0, or -1 (fn will not run) when the connection is not ready. */
int rloop_command(struct rloop *rl, int argc, const char **argv, const size_t *argvlen, unsigned timeout_ms,
                  rloop_reply_fn *fn, void *arg);

/* Commands sent once after every (re)connection, after AUTH and SELECT
 * (e.g. SCRIPT LOAD); their replies are ignored but for errors, logged. */
int rloop_on_connect(struct rloop *rl, int argc, const char **argv, const size_t *argvlen);

#endif
