/*
 * shadow.h — shadow decisions: a candidate policy decided beside the live one.
 *
 * A tenant's shadow_policy sees every request its live policy decides, with
 * the same inputs, on a dedicated thread and a policy engine of its own
 * (its own budget): the live request only copies its inputs into a job
 * and queues it once its answer is decided. The queue is bounded; when it
 * is full the job is dropped and counted, never waited for. Each shadow
 * decision goes through the tenant's ceiling like a live one and is
 * compared with the live outcome (decision, scopes, lifetime): counted by
 * tenant as same, differs or error, and logged (`shadow_diff`) when not the
 * same. Never enforced.
 */
#ifndef BROKER_SHADOW_H
#define BROKER_SHADOW_H

#include <stdbool.h>
#include <stddef.h>

struct gen;
struct policy_header;

/* Jobs waiting for the shadow thread at most; more are dropped. */
#define SHADOW_QUEUE_MAX 1024

/* What the live policy saw (as policy_request, with the body and claims
 * as JSON text). Strings are copied; body_json and claims_json are taken
 * (malloc'ed, NULL when none). */
struct shadow_input {
	const char *request_id;
	const char *user_id;
	char *body_json, *claims_json;
	bool authenticated;
	const char *method, *subject;
	const char *client_ip, *origin, *user_agent;
	const struct policy_header *headers;
	size_t n_headers;
	long long now;
};

struct shadow_job;

/* A job for tenant index ti of g (which must name a shadow policy), holding a
 * reference to g; NULL (in's JSON freed) when out of memory. */
struct shadow_job *shadow_capture(struct gen *g, size_t ti, struct shadow_input *in);

/* Queues j with the live outcome ("allow", "deny" or "error"; for allow the
 * final scope and lifetime); j is the shadow thread's (or freed) after. */
void shadow_submit(struct shadow_job *j, const char *live_decision, const char *live_scope,
                   long long live_expires_s);

/* Frees a job never submitted. NULL is fine. */
void shadow_job_free(struct shadow_job *j);

/* Waits (bounded by each decision's budget) until every queued job is
 * decided; for tests and benchmarks. Returns at once when none is queued. */
void shadow_flush(void);

/* Stops the shadow thread, dropping what is queued (at exit). */
void shadow_stop(void);

#endif
