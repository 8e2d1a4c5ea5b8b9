/*
 * clock.h — the one clock: monotonic time for budgets, deadlines and
 * latencies (wall time is only for log stamps and token expiries).
 */
#ifndef CLOCK_H
#define CLOCK_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

/* Now, on the monotonic clock. */
static inline struct timespec clock_now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t;
}

/* Milliseconds on the monotonic clock (an arbitrary origin). */
static inline uint64_t clock_ms(void)
{
	struct timespec t = clock_now();

	return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

/* Milliseconds (fractional) from t0 to now. */
static inline double clock_since_ms(const struct timespec *t0)
{
	struct timespec t = clock_now();

	return (double)(t.tv_sec - t0->tv_sec) * 1e3 + (double)(t.tv_nsec - t0->tv_nsec) / 1e6;
}

/* t + ms. */
static inline struct timespec clock_add_ms(struct timespec t, long ms)
{
	t.tv_sec += ms / 1000;
	t.tv_nsec += (ms % 1000) * 1000000L;
	if (t.tv_nsec >= 1000000000L) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000L;
	}
	return t;
}

/* Whether a is before b. */
static inline bool clock_before(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

#endif
