/*
 * courier.h — the Courier client: POST /auth/issue-token, asynchronously.
 *
 * A client belongs to one thread's event loop: every call below is made on
 * that thread. The loop waits for courier_fd to be readable (or calls at once
 * when courier_due) and then calls courier_run, which moves the transfers on
 * and runs the done callback of each job that ended (it must not block: it
 * only resumes the waiting connection). Connections and TLS sessions are
 * reused across jobs. The protocol helpers (request body, reading the
 * answer) use the caller's Lua state.
 */
#ifndef BROKER_COURIER_H
#define BROKER_COURIER_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

struct lua_State;
struct secret;
struct grant;

struct courier_job;
typedef void (*courier_done_fn)(struct courier_job *job);

struct courier_job {
	/* Set by the caller; everything pointed to must live until done runs. */
	const char *url;
	const char *ca_file;         /* PEM trust anchors added to the system's; NULL: the system's alone */
	struct x509_store_st *trust; /* both, with ca_file (trust.h) */
	const struct secret *api_key;
	const char *body;
	size_t body_len;
	long timeout_ms, connect_timeout_ms; /* timeout_ms: the whole call, retries and waits included */
	unsigned retries;                    /* attempts after the first (courier.retries) */
	unsigned retry_budget_percent;       /* of a retry each answered call earns for others (courier.c) */
	unsigned breaker_failures;           /* consecutive failures that open the breaker; 0: none */
	long breaker_cooldown_ms;            /* its first pause (doubles on each failed probe) */
	courier_done_fn done;
	void *arg;

	/* Set by the client before done runs. */
	long status;     /* HTTP status; 0 when no answer came */
	bool timed_out;  /* the total timeout passed */
	bool aborted;    /* ended by courier_abort_all (the drain) */
	char error[256]; /* libcurl's message when status is 0 */
	char *resp;      /* the answer's body (capped), freed by courier_job_cleanup */
	size_t resp_len;
	double seconds;     /* the whole call, every attempt and wait */
	unsigned attempts;  /* calls made (1 + retries done) */
	long retry_after_s; /* courier_submit returned COURIER_PAUSED: when to come back */

	/* The client's own. */
	long long started_ms, wait_until_ms; /* CLOCK_MONOTONIC ms */
	bool guarded;                        /* a breaker watches this call (found again by url and key) */
	bool probe;                          /* this call is the breaker's probe */
	void *easy;
	struct curl_slist *headers;
	struct buf resp_buf;             /* the answer as it arrives, capped; resp points into it */
	struct courier_job *next, *prev; /* the running list */
};

struct courier_client;

/* A client; max_host_connections bounds its connections to Courier. */
struct courier_client *courier_client_new(unsigned max_host_connections, char *err, size_t errlen);

/* The descriptor the owner's loop polls for readability (an epoll set). */
int courier_fd(const struct courier_client *c);

/* Whether courier_run must be called now, without waiting on courier_fd. */
bool courier_due(const struct courier_client *c);

/* Does the work that is due, and the socket work too when ready (courier_fd
 * was seen readable), without blocking; returns how many jobs ended (their
 * done has run). */
int courier_run(struct courier_client *c, bool ready);

/* courier_submit's answer when the breaker of the job's endpoint and key is
 * open: no call was made, job->retry_after_s says when to come back. */
#define COURIER_PAUSED (-2)

/*
 * Starts job; it runs as courier_run is called, retried on connection
 * failures, 408, 409, 429 and 5xx (up to job->retries times, with backoff and
 * jitter or the answer's Retry-After / retry-after-ms, within timeout_ms),
 * and done runs once with the last attempt's outcome. Returns 0, -1 when it
 * could not be started, or COURIER_PAUSED (in both, done is not called).
 */
int courier_submit(struct courier_client *c, struct courier_job *job);

/* Whether an answer of this HTTP status is retried (408, 409, 429, 5xx). */
bool courier_status_retryable(long status);

/* The wait (ms) a Retry-After value asks for at now (Unix seconds): seconds
 * or an HTTP date; -1 when unreadable. */
long courier_retry_after_ms(const char *value, long long now);

/* Ends every job still running, aborted set and error "aborted" (their done runs). */
void courier_abort_all(struct courier_client *c);

/* Aborts what is left and frees the client. */
void courier_client_free(struct courier_client *c);

/* Frees what the client put in job. */
void courier_job_cleanup(struct courier_job *job);

/* Pushes the JSON body {"scope": ..., "expires_in": ...} for g; returns it
 * (with its length) or NULL. */
const char *courier_request_body(struct lua_State *L, const struct grant *g, size_t *len);

/*
 * Reads a 200 answer: a JSON object with a "token" string that looks like a
 * JWT. Pushes the token string and returns it (length in *len) with the
 * token's "exp" in *exp (0 when absent), or returns NULL with nothing pushed.
 */
const char *courier_read_token(struct lua_State *L, const char *resp, size_t resp_len, size_t *len,
                               long long *exp);

/* How far the lifetime of Courier's token (its exp minus now) may stray from
 * the lifetime granted before the answer is refused: clock skew between
 * Courier and the broker, plus the time the call took. */
#define COURIER_EXP_SKEW_S 60

/*
 * Whether a token's exp (from courier_read_token; 0 when absent) agrees with
 * the granted lifetime of granted_s seconds at now (Unix seconds): present,
 * and exp - now within COURIER_EXP_SKEW_S of granted_s. Returns 0, or -1 with
 * the reason for the log in why (numbers only, never the token).
 */
int courier_check_expiry(long long exp, long long now, long long granted_s, char *why, size_t whylen);

#endif
