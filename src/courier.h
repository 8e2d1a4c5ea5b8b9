/*
 * courier.h — the Courier client: POST /auth/issue-token, asynchronously.
 *
 * One thread owns a libcurl multi handle; callers submit jobs from any thread
 * and are told on completion through a callback run on that thread (which
 * must not block: it only resumes the waiting connection). Connections and
 * TLS sessions are reused across jobs. The protocol helpers (request body,
 * reading the answer) run on the caller's thread with its Lua state.
 */
#ifndef BROKER_COURIER_H
#define BROKER_COURIER_H

#include <stdbool.h>
#include <stddef.h>

struct lua_State;
struct secret;
struct grant;

struct courier_job;
typedef void (*courier_done_fn)(struct courier_job *job);

struct courier_job {
	/* Set by the caller; everything pointed to must live until done runs. */
	const char *url;
	const struct secret *api_key;
	const char *body;
	size_t body_len;
	long timeout_ms, connect_timeout_ms;
	courier_done_fn done;
	void *arg;

	/* Set by the client before done runs. */
	long status;     /* HTTP status; 0 when no answer came */
	bool timed_out;  /* the total timeout passed */
	char error[256]; /* libcurl's message when status is 0 */
	char *resp;      /* the answer's body (capped), freed by courier_job_cleanup */
	size_t resp_len;
	double seconds;

	/* The client's own. */
	void *easy;
	struct curl_slist *headers;
	size_t resp_cap;
	struct courier_job *next, *prev; /* the queue, then the running list */
};

struct courier_client;

/* Starts the client thread. max_host_connections bounds connections to Courier. */
struct courier_client *courier_client_new(unsigned max_host_connections, char *err, size_t errlen);

/* Queues job. Returns 0, or -1 when the client is stopping (done is not called). */
int courier_submit(struct courier_client *c, struct courier_job *job);

/* Ends every job still running with error "aborted" (their done runs). */
void courier_abort_all(struct courier_client *c);

/* Aborts what is left, stops the thread and frees the client. */
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

#endif
