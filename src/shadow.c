/*
 * shadow.c — shadow decisions: a candidate policy decided beside the live one.
 *
 * Owns the shadow thread, its bounded queue of jobs (one mutex, one
 * condition) and its policy engine (built for the shadow configuration of
 * the generation of the job in hand, rebuilt when a job of another
 * generation comes). A job carries copies of what the live policy saw and a
 * reference to its generation, so a shadow decision is made by the
 * configuration the live one was. It must never make a live request wait
 * (a full queue drops the job), never enforce or answer anything, and never
 * log a credential or a token (the inputs have none; the log line names the
 * outcomes only).
 */
#include "shadow.h"

#include <lua.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "envelope.h"
#include "gen.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "policy.h"

struct shadow_job {
	struct gen *gen; /* held */
	size_t tenant;   /* in gen->cfg->tenants */
	char *request_id, *user_id, *body_json, *claims_json;
	bool authenticated;
	char *method, *subject, *client_ip, *origin, *user_agent;
	struct policy_header *headers; /* names and values in hbuf */
	size_t n_headers;
	char *hbuf;
	long long now;
	/* The live outcome. */
	const char *live; /* "allow", "deny", "error" (static strings) */
	char *live_scope;
	long long live_expires_s;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER, idle = PTHREAD_COND_INITIALIZER;
static struct shadow_job *queue[SHADOW_QUEUE_MAX];
static size_t q_head, q_len;
static bool started, stopping, busy;
static pthread_t thread;

/* The shadow thread's own (only it touches them). */
static struct policy_engine *engine;
static unsigned long long engine_gen;
static struct decision dec;
static struct grant grant;

/* ------------------------------------------------------------------- jobs */

static char *dup_or_null(const char *s, bool *oom)
{
	char *d;

	if (!s)
		return NULL;
	if (!(d = strdup(s)))
		*oom = true;
	return d;
}

/* The headers, copied into one buffer. */
static int copy_headers(struct shadow_job *j, const struct policy_header *h, size_t n)
{
	size_t total = 0, o = 0;

	if (n == 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		total += strlen(h[i].name) + strlen(h[i].value) + 2;
	if (!(j->headers = calloc(n, sizeof(*j->headers))) || !(j->hbuf = malloc(total)))
		return -1;
	for (size_t i = 0; i < n; i++) {
		size_t nl = strlen(h[i].name) + 1, vl = strlen(h[i].value) + 1;
		memcpy(j->hbuf + o, h[i].name, nl);
		j->headers[i].name = j->hbuf + o;
		o += nl;
		memcpy(j->hbuf + o, h[i].value, vl);
		j->headers[i].value = j->hbuf + o;
		o += vl;
	}
	j->n_headers = n;
	return 0;
}

void shadow_job_free(struct shadow_job *j)
{
	if (!j)
		return;
	free(j->request_id);
	free(j->user_id);
	free(j->body_json);
	free(j->claims_json);
	free(j->method);
	free(j->subject);
	free(j->client_ip);
	free(j->origin);
	free(j->user_agent);
	free(j->headers);
	free(j->hbuf);
	free(j->live_scope);
	gen_release(j->gen);
	free(j);
}

struct shadow_job *shadow_capture(struct gen *g, size_t ti, struct shadow_input *in)
{
	struct shadow_job *j = calloc(1, sizeof(*j));
	bool oom = false;

	if (!j) {
		free(in->body_json);
		free(in->claims_json);
		return NULL;
	}
	gen_hold(g);
	j->gen = g;
	j->tenant = ti;
	j->body_json = in->body_json;
	j->claims_json = in->claims_json;
	in->body_json = in->claims_json = NULL;
	j->request_id = dup_or_null(in->request_id, &oom);
	j->user_id = dup_or_null(in->user_id, &oom);
	j->authenticated = in->authenticated;
	j->method = dup_or_null(in->method, &oom);
	j->subject = dup_or_null(in->subject, &oom);
	j->client_ip = dup_or_null(in->client_ip, &oom);
	j->origin = dup_or_null(in->origin, &oom);
	j->user_agent = dup_or_null(in->user_agent, &oom);
	j->now = in->now;
	if (oom || !j->body_json || copy_headers(j, in->headers, in->n_headers) != 0) {
		shadow_job_free(j);
		return NULL;
	}
	return j;
}

/* ---------------------------------------------------------------- deciding */

/* The engine for g's shadow configuration; NULL (err set) when it cannot be built. */
static struct policy_engine *engine_for(struct gen *g, char *err, size_t errlen)
{
	if (engine && engine_gen == g->id)
		return engine;
	/* Freeing never reads the engine's configuration (it may be gone). */
	policy_engine_free(engine);
	engine = policy_engine_new(g->cfg->shadow, err, errlen);
	engine_gen = g->id;
	return engine;
}

/* The shadow's outcome for j: "allow" (with grant), "deny" or "error" (why in err). */
static const char *decide(struct shadow_job *j, char *err, size_t errlen)
{
	const struct config *cfg = j->gen->cfg;
	const struct tenant *t = &cfg->tenants[j->tenant];
	struct policy_engine *e = engine_for(j->gen, err, errlen);
	struct policy_request prq;
	const char *out = "error";
	lua_State *L;
	int top;

	if (!e)
		return out;
	L = policy_engine_lua(e);
	top = lua_gettop(L);
	memset(&prq, 0, sizeof(prq));
	prq.tenant = &cfg->shadow->tenants[t->shadow_index];
	prq.user_id = j->user_id;
	if (json_decode(L, j->body_json, strlen(j->body_json)) != 0) {
		snprintf(err, errlen, "the body could not be decoded again");
		goto out;
	}
	prq.body_idx = lua_gettop(L);
	if (j->claims_json) {
		if (json_decode(L, j->claims_json, strlen(j->claims_json)) != 0) {
			snprintf(err, errlen, "the claims could not be decoded again");
			goto out;
		}
		prq.claims_idx = lua_gettop(L);
	}
	prq.authenticated = j->authenticated;
	prq.method = j->method;
	prq.subject = j->subject;
	prq.client_ip = j->client_ip;
	prq.origin = j->origin;
	prq.user_agent = j->user_agent;
	prq.headers = j->headers;
	prq.n_headers = j->n_headers;
	prq.now = j->now;
	if (policy_decide(e, &prq, &dec, err, errlen) != 0)
		goto out;
	if (!dec.allow) {
		snprintf(err, errlen, "%s", dec.reason);
		out = "deny";
		goto out;
	}
	/* The live tenant's ceiling, as a live allow would meet it. */
	if (envelope_apply(t, j->user_id, &dec, &grant, err, errlen) != 0)
		goto out;
	snprintf(err, errlen, "%s", dec.reason);
	out = "allow";
out:
	lua_settop(L, top);
	return out;
}

static void log_diff(const struct shadow_job *j, const char *result, const char *shadow, const char *why)
{
	const struct config *cfg = j->gen->cfg;
	const struct tenant *t = &cfg->tenants[j->tenant];
	bool allowed = strcmp(shadow, "allow") == 0;
	struct log_line l;

	if (!log_line_begin(&l, strcmp(result, "error") == 0 ? LOG_WARN : LOG_INFO, "shadow_diff"))
		return;
	log_line_str(&l, "tenant", t->name);
	log_line_str(&l, "request_id", j->request_id);
	log_line_str(&l, "user", j->user_id);
	log_line_str(&l, "result", result);
	log_line_str(&l, "policy_revision", t->policy_revision);
	log_line_str(&l, "shadow_revision", cfg->shadow->tenants[t->shadow_index].policy_revision);
	log_line_str(&l, "live_decision", j->live);
	if (j->live_scope) {
		log_line_str(&l, "live_scope", j->live_scope);
		log_line_int(&l, "live_expires_in", j->live_expires_s);
	}
	log_line_str(&l, "shadow_decision", shadow);
	if (allowed) {
		log_line_str(&l, "shadow_scope", grant.scope);
		log_line_int(&l, "shadow_expires_in", grant.expires_s);
	}
	if (why[0])
		log_line_str(&l, strcmp(shadow, "error") == 0 ? "shadow_error" : "shadow_reason", why);
	log_line_end(&l);
}

static void run(struct shadow_job *j)
{
	const struct tenant *t = &j->gen->cfg->tenants[j->tenant];
	char why[512] = "";
	const char *shadow = decide(j, why, sizeof(why));
	const char *result;

	if (strcmp(shadow, "error") == 0)
		result = "error";
	else if (strcmp(shadow, j->live) != 0)
		result = "differs";
	else if (strcmp(shadow, "allow") == 0 && (!j->live_scope || strcmp(j->live_scope, grant.scope) != 0 ||
	                                          j->live_expires_s != grant.expires_s))
		result = "differs";
	else
		result = "same";
	metrics_shadow(t->name, result);
	if (strcmp(result, "same") != 0)
		log_diff(j, result, shadow, why);
}

static void *shadow_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&lock);
	for (;;) {
		struct shadow_job *j;

		while (!stopping && q_len == 0) {
			busy = false;
			pthread_cond_broadcast(&idle);
			pthread_cond_wait(&wake, &lock);
		}
		if (stopping)
			break;
		j = queue[q_head];
		q_head = (q_head + 1) % SHADOW_QUEUE_MAX;
		q_len--;
		busy = true;
		pthread_mutex_unlock(&lock);
		run(j);
		shadow_job_free(j);
		pthread_mutex_lock(&lock);
	}
	busy = false;
	pthread_cond_broadcast(&idle);
	pthread_mutex_unlock(&lock);
	policy_engine_free(engine);
	engine = NULL;
	return NULL;
}

/* ----------------------------------------------------------------- the queue */

void shadow_submit(struct shadow_job *j, const char *live_decision, const char *live_scope,
                   long long live_expires_s)
{
	const char *tenant = j->gen->cfg->tenants[j->tenant].name;
	bool queued = false;

	j->live = live_decision && strcmp(live_decision, "allow") == 0  ? "allow"
	          : live_decision && strcmp(live_decision, "deny") == 0 ? "deny"
	                                                                : "error";
	if (strcmp(j->live, "allow") == 0 && live_scope && !(j->live_scope = strdup(live_scope))) {
		shadow_job_free(j);
		return;
	}
	j->live_expires_s = live_expires_s;
	pthread_mutex_lock(&lock);
	if (!started && !stopping)
		if ((started = pthread_create(&thread, NULL, shadow_main, NULL) == 0))
			pthread_setname_np(thread, "broker-shadow");
	if (started && !stopping && q_len < SHADOW_QUEUE_MAX) {
		queue[(q_head + q_len) % SHADOW_QUEUE_MAX] = j;
		q_len++;
		busy = true;
		queued = true;
		pthread_cond_signal(&wake);
	}
	pthread_mutex_unlock(&lock);
	if (!queued) {
		metrics_shadow(tenant, "dropped");
		shadow_job_free(j);
	}
}

void shadow_flush(void)
{
	pthread_mutex_lock(&lock);
	while (started && !stopping && (q_len > 0 || busy))
		pthread_cond_wait(&idle, &lock);
	pthread_mutex_unlock(&lock);
}

void shadow_stop(void)
{
	bool join;

	pthread_mutex_lock(&lock);
	stopping = true;
	join = started;
	pthread_cond_broadcast(&wake);
	pthread_mutex_unlock(&lock);
	if (join)
		pthread_join(thread, NULL);
	pthread_mutex_lock(&lock);
	while (q_len > 0) {
		shadow_job_free(queue[q_head]);
		q_head = (q_head + 1) % SHADOW_QUEUE_MAX;
		q_len--;
	}
	started = false;
	stopping = false; /* a later start (tests) may begin again */
	pthread_mutex_unlock(&lock);
}
