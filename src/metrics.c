/*
 * metrics.c — counters for /metrics, in Prometheus text format.
 *
 * Owns every counter the broker exports. Request-path updates are relaxed
 * atomic increments; the only lock guards interning a tenant name the first
 * time it is seen (bounded: past MAX_TENANTS they count under "_other").
 */
#include "metrics.h"

#include "audit.h"
#include "buf.h"
#include "grantcache.h"
#include "killswitch.h"
#include "log.h"
#include "version.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TENANTS 256

/* The rendered text's cap: far above what 256 tenants and the loops make. */
#define METRICS_TEXT_MAX (16u * 1024 * 1024)

static const int statuses[] = {200, 204, 400, 401, 403, 404, 405, 413, 415, 429, 500, 502, 503, 504, 0};
#define N_STATUS (sizeof(statuses) / sizeof(statuses[0])) /* last slot: any other */

static const double buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
#define N_BUCKETS (sizeof(buckets) / sizeof(buckets[0]))

static const char *const outcomes[] = {"allow", "deny", "error"};
#define N_OUTCOMES (sizeof(outcomes) / sizeof(outcomes[0]))

/* The request latency histogram's status classes: 1xx-2xx, 3xx-4xx, 5xx. */
static const char *const classes[] = {"2xx", "4xx", "5xx"};
#define N_CLASSES (sizeof(classes) / sizeof(classes[0]))

struct tenant_slot {
	char name[72];
	atomic_ullong requests[N_STATUS];
	atomic_ullong decisions[N_OUTCOMES];
	atomic_ullong killswitch[2]; /* by killswitch_reasons */
	atomic_ullong shadow[4];     /* by shadow_results */
};

static struct tenant_slot tenants[MAX_TENANTS + 1]; /* last: "_other" */
static atomic_uint n_tenants;
static pthread_mutex_t intern_lock = PTHREAD_MUTEX_INITIALIZER;

static atomic_ullong req_buckets[N_CLASSES][N_BUCKETS + 1];
static atomic_ullong req_count[N_CLASSES], req_sum_us[N_CLASSES];
static atomic_ullong up_buckets[N_BUCKETS + 1];
static atomic_ullong up_count, up_sum_us;
static atomic_ullong up_status_2xx, up_status_4xx, up_status_5xx, up_status_none;
static atomic_int inflight;
static atomic_ullong attempts[3]; /* by enum metrics_attempt */
static atomic_int breakers_open;
static atomic_ullong courier_paused;
static atomic_int cluster_redis_up;                           /* loops connected to the cluster's Redis */
static atomic_ullong cluster_rate_shared, cluster_rate_local; /* cluster rate checks */
static atomic_ullong cluster_rate_lease;                      /* ... answered by a lease */
static atomic_ullong limited_requester, limited_tenant;
static atomic_ullong grant_counts[3]; /* enum metrics_grant */
static atomic_ullong gen_id, gen_loaded_at;
static atomic_int gens_alive;
static atomic_ullong engines_reload, engines_loop;
static atomic_ullong reload_ok, reload_failed, reload_last_time, stale_since;
static atomic_int cluster_up = -1; /* -1: no cluster */
static atomic_ullong cluster_deny_entries, cluster_denied;
/* The configuration loaded at start counts as a success: no alert on a fresh start. */
static atomic_ullong reload_last_ok = 1;

static struct tenant_slot *slot_for(const char *name)
{
	unsigned n = atomic_load_explicit(&n_tenants, memory_order_acquire);

	if (!name)
		name = "-";
	for (unsigned i = 0; i < n; i++)
		if (strcmp(tenants[i].name, name) == 0)
			return &tenants[i];
	pthread_mutex_lock(&intern_lock);
	n = atomic_load_explicit(&n_tenants, memory_order_relaxed);
	for (unsigned i = 0; i < n; i++) {
		if (strcmp(tenants[i].name, name) == 0) {
			pthread_mutex_unlock(&intern_lock);
			return &tenants[i];
		}
	}
	if (n >= MAX_TENANTS || strlen(name) >= sizeof(tenants[0].name)) {
		pthread_mutex_unlock(&intern_lock);
		snprintf(tenants[MAX_TENANTS].name, sizeof(tenants[0].name), "_other");
		return &tenants[MAX_TENANTS];
	}
	snprintf(tenants[n].name, sizeof(tenants[n].name), "%s", name);
	atomic_store_explicit(&n_tenants, n + 1, memory_order_release);
	pthread_mutex_unlock(&intern_lock);
	return &tenants[n];
}

void metrics_request(const char *tenant, int status)
{
	struct tenant_slot *s = slot_for(tenant);
	size_t i;

	for (i = 0; i < N_STATUS - 1; i++)
		if (statuses[i] == status)
			break;
	atomic_fetch_add_explicit(&s->requests[i], 1, memory_order_relaxed);
}

static size_t bucket_of(double seconds)
{
	size_t i;

	for (i = 0; i < N_BUCKETS; i++)
		if (seconds <= buckets[i])
			break;
	return i;
}

void metrics_request_seconds(int status, double seconds)
{
	size_t c = status >= 500 ? 2 : status >= 300 ? 1 : 0;

	if (seconds < 0)
		seconds = 0;
	atomic_fetch_add_explicit(&req_buckets[c][bucket_of(seconds)], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&req_count[c], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&req_sum_us[c], (unsigned long long)(seconds * 1e6), memory_order_relaxed);
}

void metrics_decision(const char *tenant, const char *outcome)
{
	for (size_t i = 0; i < N_OUTCOMES; i++) {
		if (strcmp(outcomes[i], outcome) == 0) {
			atomic_fetch_add_explicit(&slot_for(tenant)->decisions[i], 1, memory_order_relaxed);
			return;
		}
	}
}

static const char *const killswitch_reasons[] = {"user_denied", "tenant_disabled"};

void metrics_killswitch(const char *tenant, const char *reason)
{
	for (size_t i = 0; i < 2; i++)
		if (strcmp(killswitch_reasons[i], reason) == 0)
			atomic_fetch_add_explicit(&slot_for(tenant)->killswitch[i], 1, memory_order_relaxed);
}

static const char *const shadow_results[] = {"same", "differs", "error", "dropped"};

void metrics_shadow(const char *tenant, const char *result)
{
	for (size_t i = 0; i < 4; i++)
		if (strcmp(shadow_results[i], result) == 0)
			atomic_fetch_add_explicit(&slot_for(tenant)->shadow[i], 1, memory_order_relaxed);
}

static void render_shadow(struct buf *b)
{
	unsigned n = atomic_load_explicit(&n_tenants, memory_order_acquire);

	buf_addf(
	    b, "# HELP broker_shadow_decisions_total Shadow policy decisions compared with the live ones, by "
	       "tenant and result (same, differs, error; dropped: the shadow queue was full).\n"
	       "# TYPE broker_shadow_decisions_total counter\n");
	for (unsigned t = 0; t <= MAX_TENANTS; t++) {
		if (t >= n && t != MAX_TENANTS)
			continue;
		for (size_t i = 0; i < 4; i++) {
			unsigned long long v =
			    atomic_load_explicit(&tenants[t].shadow[i], memory_order_relaxed);
			if (v)
				buf_addf(b,
				         "broker_shadow_decisions_total{tenant=\"%s\",result=\"%s\"} %llu\n",
				         tenants[t].name, shadow_results[i], v);
		}
	}
}

/* The kill switch: requests refused by tenant and reason, and the deny
 * files' reads by the watcher. */
static void render_killswitch(struct buf *b)
{
	unsigned n = atomic_load_explicit(&n_tenants, memory_order_acquire);
	unsigned long long ok, failed;

	buf_addf(b,
	         "# HELP broker_killswitch_denied_total Token requests refused by the kill switch before the "
	         "policy ran, by tenant and reason (user_denied, tenant_disabled).\n"
	         "# TYPE broker_killswitch_denied_total counter\n");
	for (unsigned t = 0; t <= MAX_TENANTS; t++) {
		if (t >= n && t != MAX_TENANTS)
			continue;
		for (size_t i = 0; i < 2; i++) {
			unsigned long long v =
			    atomic_load_explicit(&tenants[t].killswitch[i], memory_order_relaxed);
			if (v)
				buf_addf(b,
				         "broker_killswitch_denied_total{tenant=\"%s\",reason=\"%s\"} %llu\n",
				         tenants[t].name, killswitch_reasons[i], v);
		}
	}
	killswitch_counts(&ok, &failed);
	buf_addf(b,
	         "# HELP broker_deny_list_reads_total Reads of deny_users files after a change or a reload, "
	         "by result (failed: the last list stays in force).\n"
	         "# TYPE broker_deny_list_reads_total counter\n"
	         "broker_deny_list_reads_total{result=\"ok\"} %llu\n"
	         "broker_deny_list_reads_total{result=\"failed\"} %llu\n",
	         ok, failed);
}

void metrics_rate_limited(bool by_requester)
{
	atomic_fetch_add_explicit(by_requester ? &limited_requester : &limited_tenant, 1,
	                          memory_order_relaxed);
}

void metrics_courier_attempt(enum metrics_attempt outcome)
{
	atomic_fetch_add_explicit(&attempts[outcome], 1, memory_order_relaxed);
}

void metrics_courier_breaker_open(int delta)
{
	atomic_fetch_add_explicit(&breakers_open, delta, memory_order_relaxed);
}

void metrics_courier_paused(void)
{
	atomic_fetch_add_explicit(&courier_paused, 1, memory_order_relaxed);
}

void metrics_cluster_redis(int delta)
{
	atomic_fetch_add_explicit(&cluster_redis_up, delta, memory_order_relaxed);
}

void metrics_cluster_rate(bool shared)
{
	atomic_fetch_add_explicit(shared ? &cluster_rate_shared : &cluster_rate_local, 1,
	                          memory_order_relaxed);
}

void metrics_cluster_rate_lease(void)
{
	atomic_fetch_add_explicit(&cluster_rate_lease, 1, memory_order_relaxed);
}

void metrics_grant(enum metrics_grant what)
{
	atomic_fetch_add_explicit(&grant_counts[what], 1, memory_order_relaxed);
}

void metrics_upstream(double seconds, long http_status)
{
	atomic_fetch_add_explicit(&up_buckets[bucket_of(seconds)], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&up_count, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&up_sum_us, (unsigned long long)(seconds * 1e6), memory_order_relaxed);
	if (http_status >= 200 && http_status < 300)
		atomic_fetch_add_explicit(&up_status_2xx, 1, memory_order_relaxed);
	else if (http_status >= 400 && http_status < 500)
		atomic_fetch_add_explicit(&up_status_4xx, 1, memory_order_relaxed);
	else if (http_status >= 500)
		atomic_fetch_add_explicit(&up_status_5xx, 1, memory_order_relaxed);
	else
		atomic_fetch_add_explicit(&up_status_none, 1, memory_order_relaxed);
}

void metrics_inflight_add(int delta)
{
	atomic_fetch_add_explicit(&inflight, delta, memory_order_relaxed);
}

void metrics_generation(unsigned long long id, time_t loaded_at)
{
	atomic_store(&gen_id, id);
	atomic_store(&gen_loaded_at, (unsigned long long)loaded_at);
}

void metrics_generations_alive(int delta)
{
	atomic_fetch_add(&gens_alive, delta);
}

void metrics_engine_built(bool on_loop)
{
	atomic_fetch_add_explicit(on_loop ? &engines_loop : &engines_reload, 1, memory_order_relaxed);
}

void metrics_reload(bool ok, time_t when)
{
	atomic_fetch_add(ok ? &reload_ok : &reload_failed, 1);
	atomic_store(&reload_last_time, (unsigned long long)when);
	atomic_store(&reload_last_ok, ok ? 1 : 0);
	if (ok)
		atomic_store(&stale_since, 0);
	else if (atomic_load(&stale_since) == 0)
		atomic_store(&stale_since, (unsigned long long)when);
}

/* The counters this file keeps. */
/* Build info, and what the token requests got: answers, decisions, latency, rate
 * limits, the token cache and shared calls. */
static void render_requests(struct buf *b)
{
	unsigned n = atomic_load_explicit(&n_tenants, memory_order_acquire);

	buf_addf(b,
	         "# HELP broker_build_info The running build (value 1).\n"
	         "# TYPE broker_build_info gauge\nbroker_build_info{version=\"%s\"} 1\n",
	         BROKER_VERSION);
	buf_addf(b, "# HELP broker_requests_total Token requests answered, by tenant and status.\n"
	            "# TYPE broker_requests_total counter\n");
	for (unsigned t = 0; t <= MAX_TENANTS; t++) {
		if (t >= n && t != MAX_TENANTS)
			continue;
		for (size_t i = 0; i < N_STATUS; i++) {
			unsigned long long v =
			    atomic_load_explicit(&tenants[t].requests[i], memory_order_relaxed);
			if (!v)
				continue;
			if (statuses[i])
				buf_addf(b, "broker_requests_total{tenant=\"%s\",status=\"%d\"} %llu\n",
				         tenants[t].name, statuses[i], v);
			else
				buf_addf(b, "broker_requests_total{tenant=\"%s\",status=\"other\"} %llu\n",
				         tenants[t].name, v);
		}
	}
	buf_addf(b, "# HELP broker_decisions_total Policy decisions, by tenant and outcome (allow, deny, "
	            "error).\n# TYPE broker_decisions_total counter\n");
	for (unsigned t = 0; t <= MAX_TENANTS; t++) {
		if (t >= n && t != MAX_TENANTS)
			continue;
		for (size_t i = 0; i < N_OUTCOMES; i++) {
			unsigned long long v =
			    atomic_load_explicit(&tenants[t].decisions[i], memory_order_relaxed);
			if (v)
				buf_addf(b, "broker_decisions_total{tenant=\"%s\",outcome=\"%s\"} %llu\n",
				         tenants[t].name, outcomes[i], v);
		}
	}
	buf_addf(b, "# HELP broker_request_duration_seconds Token request latency, arrival to answer, by "
	            "route and status class.\n# TYPE broker_request_duration_seconds histogram\n");
	for (size_t c = 0; c < N_CLASSES; c++) {
		unsigned long long acc = 0;
		for (size_t i = 0; i <= N_BUCKETS; i++) {
			acc += atomic_load_explicit(&req_buckets[c][i], memory_order_relaxed);
			if (i < N_BUCKETS)
				buf_addf(
				    b,
				    "broker_request_duration_seconds_bucket{route=\"token\",class=\"%s\","
				    "le=\"%g\"} %llu\n",
				    classes[c], buckets[i], acc);
			else
				buf_addf(
				    b,
				    "broker_request_duration_seconds_bucket{route=\"token\",class=\"%s\","
				    "le=\"+Inf\"} %llu\n",
				    classes[c], acc);
		}
		buf_addf(b,
		         "broker_request_duration_seconds_sum{route=\"token\",class=\"%s\"} %.6f\n"
		         "broker_request_duration_seconds_count{route=\"token\",class=\"%s\"} %llu\n",
		         classes[c], (double)atomic_load(&req_sum_us[c]) / 1e6, classes[c],
		         atomic_load(&req_count[c]));
	}
	buf_addf(
	    b,
	    "# HELP broker_rate_limited_total Token requests refused with 429, by the bucket that refused "
	    "them.\n# TYPE broker_rate_limited_total counter\n"
	    "broker_rate_limited_total{level=\"requester\"} "
	    "%llu\nbroker_rate_limited_total{level=\"tenant\"} "
	    "%llu\n",
	    atomic_load(&limited_requester), atomic_load(&limited_tenant));
	buf_addf(b,
	         "# HELP broker_token_cache_total Token cache lookups (tenants with token_cache).\n"
	         "# TYPE broker_token_cache_total counter\n"
	         "broker_token_cache_total{result=\"hit\"} %llu\n"
	         "broker_token_cache_total{result=\"miss\"} %llu\n"
	         "# HELP broker_upstream_shared_total Token requests that waited on an identical grant's "
	         "Courier call instead of making their own.\n"
	         "# TYPE broker_upstream_shared_total counter\n"
	         "broker_upstream_shared_total %llu\n"
	         "# HELP broker_token_cache_entries Tokens held by the token cache.\n"
	         "# TYPE broker_token_cache_entries gauge\n"
	         "broker_token_cache_entries %zu\n",
	         atomic_load(&grant_counts[METRICS_CACHE_HIT]),
	         atomic_load(&grant_counts[METRICS_CACHE_MISS]),
	         atomic_load(&grant_counts[METRICS_FLIGHT_SHARED]), grantcache_size());
}

/* Courier calls (latency, attempts, breakers), reloads, generations and the rest. */
static void render_upstream(struct buf *b)
{
	unsigned long long cum = 0;
	time_t now = time(NULL);

	buf_addf(b, "# HELP broker_upstream_seconds Latency of Courier calls.\n"
	            "# TYPE broker_upstream_seconds histogram\n");
	for (size_t i = 0; i < N_BUCKETS; i++) {
		cum += atomic_load_explicit(&up_buckets[i], memory_order_relaxed);
		buf_addf(b, "broker_upstream_seconds_bucket{le=\"%g\"} %llu\n", buckets[i], cum);
	}
	cum += atomic_load_explicit(&up_buckets[N_BUCKETS], memory_order_relaxed);
	buf_addf(b, "broker_upstream_seconds_bucket{le=\"+Inf\"} %llu\n", cum);
	buf_addf(b, "broker_upstream_seconds_sum %.6f\n", (double)atomic_load(&up_sum_us) / 1e6);
	buf_addf(b, "broker_upstream_seconds_count %llu\n", atomic_load(&up_count));
	buf_addf(b,
	         "# HELP broker_upstream_responses_total Courier answers by class.\n"
	         "# TYPE broker_upstream_responses_total counter\n"
	         "broker_upstream_responses_total{class=\"2xx\"} %llu\n"
	         "broker_upstream_responses_total{class=\"4xx\"} %llu\n"
	         "broker_upstream_responses_total{class=\"5xx\"} %llu\n"
	         "broker_upstream_responses_total{class=\"none\"} %llu\n",
	         atomic_load(&up_status_2xx), atomic_load(&up_status_4xx), atomic_load(&up_status_5xx),
	         atomic_load(&up_status_none));
	buf_addf(b,
	         "# HELP broker_courier_attempts_total Courier call attempts by outcome (retried: failed "
	         "and tried again).\n"
	         "# TYPE broker_courier_attempts_total counter\n"
	         "broker_courier_attempts_total{outcome=\"answered\"} %llu\n"
	         "broker_courier_attempts_total{outcome=\"retried\"} %llu\n"
	         "broker_courier_attempts_total{outcome=\"failed\"} %llu\n"
	         "# HELP broker_courier_breakers_open Circuit breakers (Courier endpoint and key) open or "
	         "probing: calls paused.\n"
	         "# TYPE broker_courier_breakers_open gauge\nbroker_courier_breakers_open %d\n"
	         "# HELP broker_courier_paused_total Token requests answered 503 upstream_unavailable by an "
	         "open breaker.\n"
	         "# TYPE broker_courier_paused_total counter\nbroker_courier_paused_total %llu\n",
	         atomic_load(&attempts[METRICS_ATTEMPT_ANSWERED]),
	         atomic_load(&attempts[METRICS_ATTEMPT_RETRIED]),
	         atomic_load(&attempts[METRICS_ATTEMPT_FAILED]), atomic_load(&breakers_open),
	         atomic_load(&courier_paused));
	buf_addf(b,
	         "# HELP broker_inflight_requests Token requests being handled.\n"
	         "# TYPE broker_inflight_requests gauge\nbroker_inflight_requests %d\n",
	         atomic_load(&inflight));
	buf_addf(
	    b,
	    "# HELP broker_generation Id of the running configuration generation.\n"
	    "# TYPE broker_generation gauge\nbroker_generation %llu\n"
	    "# HELP broker_generation_loaded_timestamp_seconds When it was loaded.\n"
	    "# TYPE broker_generation_loaded_timestamp_seconds gauge\n"
	    "broker_generation_loaded_timestamp_seconds %llu\n"
	    "# HELP broker_generations_alive Generations not yet freed (the running one and those held by "
	    "requests).\n"
	    "# TYPE broker_generations_alive gauge\nbroker_generations_alive %d\n",
	    atomic_load(&gen_id), atomic_load(&gen_loaded_at), atomic_load(&gens_alive));
	buf_addf(b,
	         "# HELP broker_reloads_total Reload attempts by result.\n"
	         "# TYPE broker_reloads_total counter\n"
	         "broker_reloads_total{result=\"ok\"} %llu\nbroker_reloads_total{result=\"failed\"} %llu\n"
	         "# HELP broker_last_reload_timestamp_seconds Time of the last reload attempt.\n"
	         "# TYPE broker_last_reload_timestamp_seconds gauge\n"
	         "broker_last_reload_timestamp_seconds %llu\n"
	         "# HELP broker_last_reload_success Whether the last reload attempt succeeded.\n"
	         "# TYPE broker_last_reload_success gauge\nbroker_last_reload_success %llu\n",
	         atomic_load(&reload_ok), atomic_load(&reload_failed), atomic_load(&reload_last_time),
	         atomic_load(&reload_last_ok));
	buf_addf(b,
	         "# HELP broker_policy_engines_built_total Policy engines compiled for serving: by a reload "
	         "before its generation serves, or by an event loop on a request's time.\n"
	         "# TYPE broker_policy_engines_built_total counter\n"
	         "broker_policy_engines_built_total{where=\"reload\"} %llu\n"
	         "broker_policy_engines_built_total{where=\"loop\"} %llu\n",
	         atomic_load(&engines_reload), atomic_load(&engines_loop));
	{
		unsigned long long since = atomic_load(&stale_since);
		buf_addf(
		    b,
		    "# HELP broker_policy_stale_seconds How long the running generation has been behind a "
		    "failed reload.\n# TYPE broker_policy_stale_seconds gauge\nbroker_policy_stale_seconds "
		    "%llu\n",
		    since ? (unsigned long long)now - since : 0ULL);
	}
}

void metrics_cluster_up(bool up)
{
	atomic_store(&cluster_up, up ? 1 : 0);
}

void metrics_cluster_deny_entries(size_t n)
{
	atomic_store(&cluster_deny_entries, (unsigned long long)n);
}

void metrics_cluster_denied(void)
{
	atomic_fetch_add_explicit(&cluster_denied, 1, memory_order_relaxed);
}

/* Only with a cluster: a broker alone shows no cluster lines. */
static void render_cluster(struct buf *b)
{
	int up = atomic_load(&cluster_up);

	if (up < 0)
		return;
	buf_addf(b,
	         "# HELP broker_cluster_up Whether the cluster's Redis is reachable (0: serving alone, with "
	         "the last deny list).\n"
	         "# TYPE broker_cluster_up gauge\nbroker_cluster_up %d\n"
	         "# HELP broker_cluster_deny_entries Users on the cluster's shared deny list, all tenants.\n"
	         "# TYPE broker_cluster_deny_entries gauge\nbroker_cluster_deny_entries %llu\n"
	         "# HELP broker_cluster_denied_total Token requests answered 403 user_denied by the shared "
	         "deny list.\n"
	         "# TYPE broker_cluster_denied_total counter\nbroker_cluster_denied_total %llu\n",
	         up, atomic_load(&cluster_deny_entries), atomic_load(&cluster_denied));
	buf_addf(b,
	         "# HELP broker_cluster_redis_connections Event loops connected to the cluster's Redis.\n"
	         "# TYPE broker_cluster_redis_connections gauge\nbroker_cluster_redis_connections %d\n"
	         "# HELP broker_cluster_rate_checks_total Cluster rate-limit checks: decided by Redis "
	         "(shared), by tokens leased from Redis (lease) or, Redis being unavailable or slow, by "
	         "this broker's buckets (local).\n"
	         "# TYPE broker_cluster_rate_checks_total counter\n"
	         "broker_cluster_rate_checks_total{by=\"shared\"} %llu\n"
	         "broker_cluster_rate_checks_total{by=\"lease\"} %llu\n"
	         "broker_cluster_rate_checks_total{by=\"local\"} %llu\n",
	         atomic_load(&cluster_redis_up), atomic_load(&cluster_rate_shared),
	         atomic_load(&cluster_rate_lease), atomic_load(&cluster_rate_local));
}

static void render_counters(struct buf *b)
{
	render_requests(b);
	render_killswitch(b);
	render_shadow(b);
	render_upstream(b);
	render_cluster(b);
}

/* The front's: each loop's connections and the flood counters. */
static void render_front(struct buf *b, const struct metrics_front *f)
{
	buf_addf(b, "# HELP broker_loop_connections Client connections each event loop holds.\n"
	            "# TYPE broker_loop_connections gauge\n");
	for (size_t i = 0; i < f->n_loops; i++)
		buf_addf(b, "broker_loop_connections{loop=\"%zu\"} %d\n", i, f->loop_connections(f->ctx, i));
	buf_addf(b,
	         "# HELP broker_connections_refused_total Client connections closed at accept: their "
	         "address held max_connections_per_ip.\n"
	         "# TYPE broker_connections_refused_total counter\n"
	         "broker_connections_refused_total %llu\n"
	         "# HELP broker_request_timeouts_total Client connections closed because a request did "
	         "not arrive whole within request_timeout_ms (or no request line within "
	         "connection_timeout_s after the last).\n"
	         "# TYPE broker_request_timeouts_total counter\n"
	         "broker_request_timeouts_total %llu\n"
	         "# HELP broker_log_suppressed_total Warning lines dropped by the log's rate limit.\n"
	         "# TYPE broker_log_suppressed_total counter\n"
	         "broker_log_suppressed_total %llu\n"
	         "# HELP broker_audit_write_failures_total Audit log lines that could not be written.\n"
	         "# TYPE broker_audit_write_failures_total counter\n"
	         "broker_audit_write_failures_total %llu\n",
	         f->refused_per_ip, f->request_timeouts, log_suppressed_total(), audit_failures());
}

char *metrics_render_front(const struct metrics_front *front, size_t *len)
{
	struct buf b;

	buf_init(&b, METRICS_TEXT_MAX);
	render_counters(&b);
	if (front)
		render_front(&b, front);
	return buf_take(&b, len);
}

char *metrics_render(size_t *len)
{
	return metrics_render_front(NULL, len);
}
