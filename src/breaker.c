/*
 * breaker.c — circuit breakers for Courier: one per endpoint and API key.
 *
 * Owns a small process-wide table under one lock (every loop calls the same
 * Courier): after failures_max failed calls in a row a breaker opens and
 * calls pause for its cool-down; then one probe call is let through, whose
 * success closes it and whose failure doubles the pause (up to
 * BREAKER_COOLDOWN_MAX_MS). Each transition is logged and counted. It must
 * never refuse a call for want of a slot (a full table leaves calls
 * unguarded), never hold a key (only its fingerprint), and never call
 * Courier or the front.
 */
#include "breaker.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"

/* An open breaker's pause grows (doubles per failed probe) up to this. */
#define BREAKER_COOLDOWN_MAX_MS 60000
#define BREAKERS_MAX            256

enum breaker_state { BREAKER_CLOSED, BREAKER_OPEN, BREAKER_PROBING };

static const char *const breaker_state_names[] = {"closed", "open", "half-open (probing)"};

/* One Courier endpoint (the call's URL) and API key (its fingerprint). Slots
 * are never freed: a closed breaker with no failure holds no information and
 * is reused when the table is full (keys rotate). Jobs never hold a pointer
 * to a slot: they find theirs again by URL and fingerprint. */
struct breaker {
	char *url;
	char fingerprint[17];
	enum breaker_state state;
	unsigned failures;    /* consecutive, while closed */
	long cooldown_ms;     /* the current pause */
	long long open_until; /* CLOCK_MONOTONIC ms */
};

static struct breaker breakers[BREAKERS_MAX];
static size_t n_breakers;
static pthread_mutex_t breakers_lock = PTHREAD_MUTEX_INITIALIZER;

/* Under breakers_lock. NULL when the table is full of breakers in use (then
 * calls go unguarded: a breaker is a protection, never a reason to refuse). */
static struct breaker *breaker_find(const char *url, const char *fingerprint)
{
	struct breaker *spare = NULL;
	char *copy;

	for (size_t i = 0; i < n_breakers; i++) {
		struct breaker *b = &breakers[i];
		if (strcmp(b->fingerprint, fingerprint) == 0 && strcmp(b->url, url) == 0)
			return b;
		if (!spare && b->state == BREAKER_CLOSED && b->failures == 0)
			spare = b;
	}
	if (!(copy = strdup(url)))
		return NULL;
	if (n_breakers < BREAKERS_MAX)
		spare = &breakers[n_breakers++];
	if (!spare) {
		free(copy);
		return NULL;
	}
	free(spare->url);
	*spare = (struct breaker){.url = copy, .state = BREAKER_CLOSED};
	snprintf(spare->fingerprint, sizeof(spare->fingerprint), "%s", fingerprint);
	return spare;
}

/* Under breakers_lock: moves b to state, logs and counts it. */
static void breaker_set(struct breaker *b, enum breaker_state to, const char *why)
{
	bool was_open = b->state != BREAKER_CLOSED, is_open = to != BREAKER_CLOSED;

	if (b->state == to)
		return;
	if (to == BREAKER_OPEN)
		log_msg("warn",
		        "Courier circuit breaker for %s (key fingerprint %s): %s -> open (%s); calls paused "
		        "for %ld ms",
		        b->url, b->fingerprint, breaker_state_names[b->state], why, b->cooldown_ms);
	else
		log_msg("info", "Courier circuit breaker for %s (key fingerprint %s): %s -> %s (%s)", b->url,
		        b->fingerprint, breaker_state_names[b->state], breaker_state_names[to], why);
	b->state = to;
	if (was_open != is_open)
		metrics_courier_breaker_open(is_open ? 1 : -1);
}

/* Whether job may call now: 0 (job->probe set when it is the probe), or the
 * seconds to wait (the breaker is open). */
long breaker_admit(struct breaker_call *job, long long now)
{
	struct breaker *b;
	long wait = 0;

	job->guarded = false;
	job->probe = false;
	if (!job->failures_max)
		return 0;
	pthread_mutex_lock(&breakers_lock);
	b = breaker_find(job->url, job->fingerprint);
	job->guarded = b != NULL;
	if (b && b->state == BREAKER_OPEN) {
		if (now >= b->open_until) {
			breaker_set(b, BREAKER_PROBING, "pause over, one call let through");
			job->probe = true;
		} else {
			wait = (long)((b->open_until - now + 999) / 1000);
		}
	} else if (b && b->state == BREAKER_PROBING) {
		wait = 1; /* the probe is on its way */
	}
	pthread_mutex_unlock(&breakers_lock);
	return wait;
}

/* A call's outcome (its last attempt's) for job's breaker: failed
 * (connection error, timeout, 5xx, 429, 408, 409), or not (Courier answered). aborted: the call ended without
 * an outcome (the drain); a probe then gives its turn to the next call. */
void breaker_record(struct breaker_call *job, bool failed, bool aborted, long long now)
{
	struct breaker *b;

	if (!job->guarded)
		return;
	pthread_mutex_lock(&breakers_lock);
	b = breaker_find(job->url, job->fingerprint);
	if (!b) {
		job->probe = false;
		pthread_mutex_unlock(&breakers_lock);
		return;
	}
	if (aborted) {
		if (job->probe && b->state == BREAKER_PROBING) {
			b->state = BREAKER_OPEN;
			b->open_until = now;
		}
	} else if (!failed) {
		b->failures = 0;
		if (b->state != BREAKER_CLOSED) {
			breaker_set(b, BREAKER_CLOSED, "Courier answered");
			b->cooldown_ms = 0;
		}
	} else if (job->probe && b->state == BREAKER_PROBING) {
		b->cooldown_ms = b->cooldown_ms * 2 > BREAKER_COOLDOWN_MAX_MS ? BREAKER_COOLDOWN_MAX_MS
		                                                              : b->cooldown_ms * 2;
		b->open_until = now + b->cooldown_ms;
		breaker_set(b, BREAKER_OPEN, "the probe failed");
	} else if (b->state == BREAKER_CLOSED && ++b->failures >= job->failures_max) {
		b->cooldown_ms = job->cooldown_ms;
		b->open_until = now + b->cooldown_ms;
		breaker_set(b, BREAKER_OPEN, "consecutive failures");
	}
	job->probe = false;
	pthread_mutex_unlock(&breakers_lock);
}

bool breaker_is_open(const struct breaker_call *job)
{
	struct breaker *b;
	bool open;

	if (!job->guarded)
		return false;
	pthread_mutex_lock(&breakers_lock);
	b = breaker_find(job->url, job->fingerprint);
	open = b && b->state == BREAKER_OPEN;
	pthread_mutex_unlock(&breakers_lock);
	return open;
}
