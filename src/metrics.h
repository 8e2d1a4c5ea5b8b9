/*
 * metrics.h — counters for /metrics, in Prometheus text format.
 *
 * Lock-free on the request path (atomics); tenant names are interned once.
 * Labels carry tenant names and status codes only: never a user, a subject,
 * a key or a token.
 */
#ifndef BROKER_METRICS_H
#define BROKER_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

/* One finished request on the token routes. tenant may be NULL ("-"). */
void metrics_request(const char *tenant, int status);

/* One answered token request's latency, by status class (route "token"). */
void metrics_request_seconds(int status, double seconds);

/* One policy decision: outcome "allow", "deny" or "error". tenant may be NULL. */
void metrics_decision(const char *tenant, const char *outcome);

/* One token request refused by the kill switch before its policy ran:
 * reason "user_denied" or "tenant_disabled". */
void metrics_killswitch(const char *tenant, const char *reason);
/* One shadow decision (shadow.h): result "same", "differs", "error" or
 * "dropped" (the shadow queue was full). */
void metrics_shadow(const char *tenant, const char *result);
/* One token request refused with 429, by the requester's own bucket
 * (rate_limit.per_requester) or by the tenant's. */
void metrics_rate_limited(bool by_requester);

/* Identical grants (grantcache.h): a token served from the cache, a cache
 * lookup that missed, a request that shared another's Courier call. */
enum metrics_grant { METRICS_CACHE_HIT, METRICS_CACHE_MISS, METRICS_FLIGHT_SHARED };
void metrics_grant(enum metrics_grant what);

/* One Courier call, whatever its outcome. */
void metrics_upstream(double seconds, long http_status);

/* One attempt of a Courier call: answered (the call is over), failed and
 * retried, or failed for good (no retry left, or no time for one). */
enum metrics_attempt { METRICS_ATTEMPT_ANSWERED, METRICS_ATTEMPT_RETRIED, METRICS_ATTEMPT_FAILED };
void metrics_courier_attempt(enum metrics_attempt outcome);

/* A circuit breaker (one per Courier endpoint and key) opened (+1) or
 * closed (-1); and one request answered 503 at once because it was open. */
void metrics_courier_breaker_open(int delta);
void metrics_courier_paused(void);

/* The cluster (cluster.h): whether its Redis is reachable (set once a
 * cluster starts: no cluster, no lines), the users on its deny list, and a
 * token request refused because its user is on it. */
void metrics_cluster_up(bool up);
void metrics_cluster_deny_entries(size_t n);
void metrics_cluster_denied(void);

/* The cluster (cluster.redis): a loop's Redis connection became ready (+1)
 * or went down (-1); one rate-limit check decided by Redis (shared) or, Redis
 * being unavailable or slow, by the local buckets. */
void metrics_cluster_redis(int delta);
void metrics_cluster_rate(bool shared);
/* A cluster rate-limit check answered from a loop's leases (no Redis call). */
void metrics_cluster_rate_lease(void);

/* Requests currently between arrival and answer on the token routes. */
void metrics_inflight_add(int delta);

/* Generation and reload bookkeeping. */
void metrics_generation(unsigned long long id, time_t loaded_at);
void metrics_reload(bool ok, time_t when);

/* Generations not yet freed: the running one plus those that requests still
 * hold. Back to 1 once the requests that started before a reload are done. */
void metrics_generations_alive(int delta);

/* One policy engine built for serving: by a reload (or the start) before its
 * generation serves (on_loop false), or by an event loop on a request's time
 * (on_loop true: the fallback when no spare engine was left for it). */
void metrics_engine_built(bool on_loop);

/* The front's figures, read when /metrics is rendered. */
struct metrics_front {
	size_t n_loops;
	int (*loop_connections)(void *ctx, size_t i); /* connections loop i holds */
	void *ctx;
	unsigned long long refused_per_ip;   /* closed at accept: max_connections_per_ip */
	unsigned long long request_timeouts; /* closed by the request deadline */
};

/* Renders everything; returns a malloc'ed string (caller frees) or NULL. */
char *metrics_render(size_t *len);

/* The same, followed by the front's figures (what GET /metrics answers). */
char *metrics_render_front(const struct metrics_front *front, size_t *len);

#endif
