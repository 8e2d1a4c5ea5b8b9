/*
 * breaker.h — circuit breakers for Courier calls (breaker.c).
 */
#ifndef BROKER_BREAKER_H
#define BROKER_BREAKER_H

#include <stdbool.h>

/* One call as its breaker sees it. The caller fills url, fingerprint (of the
 * API key), failures_max (0: no breaker) and cooldown_ms; breaker_admit sets
 * guarded and probe, which the later calls for the same call read. */
struct breaker_call {
	const char *url;
	const char *fingerprint;
	unsigned failures_max;
	long cooldown_ms;
	bool guarded; /* a breaker watches this call */
	bool probe;   /* this call is its breaker's probe */
};

/* Whether the call may go now: 0 (c->probe set when it is the probe), or the
 * seconds to wait while the breaker is open. now: CLOCK_MONOTONIC ms. */
long breaker_admit(struct breaker_call *c, long long now);

/* The call's outcome: failed (connection error, timeout, 5xx, 429, 408,
 * 409) or not; aborted: ended without an outcome (the drain). */
void breaker_record(struct breaker_call *c, bool failed, bool aborted, long long now);

/* Whether the call's breaker is open (a retry must not start then). */
bool breaker_is_open(const struct breaker_call *c);

#endif
