/*
 * fuzz_clock.h — what the drivers that check a budget share: the time a
 * piece of work took, and an abort (a finding for libFuzzer) when it ran
 * longer than allowed.
 *
 * The verdict is the thread's user CPU time. The broker's budgets are CPU
 * time, so waiting for a core on a busy machine is no finding; and system
 * time is left out too: on this shared machine the kernel took from 0.1 to
 * 40 ms for the same 600 page faults of one allowed allocation, which says
 * nothing about the code under test. Uncharged work in the engine (a C loop
 * the budget does not see) is user time. All figures are in the message.
 * FUZZ_VERBOSE=1 prints them for every piece of work (to triage a finding,
 * run its input again with -runs=N).
 */
#ifndef FUZZ_CLOCK_H
#define FUZZ_CLOCK_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

struct fuzz_clock {
	struct timespec wall;
	struct rusage ru;
};

static inline void fuzz_clock_start(struct fuzz_clock *c)
{
	clock_gettime(CLOCK_MONOTONIC, &c->wall);
	getrusage(RUSAGE_THREAD, &c->ru);
}

static inline double fuzz_tv_ms(const struct timeval *a, const struct timeval *b)
{
	return (double)(b->tv_sec - a->tv_sec) * 1e3 + (double)(b->tv_usec - a->tv_usec) / 1e3;
}

static inline int fuzz_verbose(void)
{
	static int v = -1;

	if (v < 0)
		v = getenv("FUZZ_VERBOSE") && atoi(getenv("FUZZ_VERBOSE")) > 0;
	return v;
}

/* Whether the work since c took more than limit_ms of the thread's user CPU
 * time; the figures are printed then (and always under FUZZ_VERBOSE), after
 * "ERROR: " when final: the line libFuzzer's -fork mode shows of a child.
 * A driver runs an input that overran once more and fails only if final
 * overruns too: a transient cost of the sanitizers (ASan emptying its
 * quarantine inside whatever free() comes next: 53 ms of user time seen
 * during the build of an engine that takes 0.5 ms) is not the code's. */
static inline int fuzz_clock_over(const struct fuzz_clock *c, double limit_ms, const char *driver,
                                  const char *what, int final)
{
	struct timespec now;
	struct rusage ru;
	double user, sys, wall;

	getrusage(RUSAGE_THREAD, &ru);
	clock_gettime(CLOCK_MONOTONIC, &now);
	user = fuzz_tv_ms(&c->ru.ru_utime, &ru.ru_utime);
	sys = fuzz_tv_ms(&c->ru.ru_stime, &ru.ru_stime);
	wall = (double)(now.tv_sec - c->wall.tv_sec) * 1e3 + (double)(now.tv_nsec - c->wall.tv_nsec) / 1e6;
	if (fuzz_verbose() || user > limit_ms)
		fprintf(stderr,
		        "%s%s: %s ran %.1f ms of user CPU (%.1f ms system, %.1f ms wall, %ld page "
		        "faults)%s%.1f ms%s\n",
		        user > limit_ms && final ? "ERROR: " : "", driver, what, user, sys, wall,
		        ru.ru_minflt - c->ru.ru_minflt, user > limit_ms ? ", more than " : ", limit ",
		        limit_ms, user > limit_ms && !final ? " (the input runs again)" : "");
	return user > limit_ms;
}

/* An input that overran runs once more, confirming (why: above); only a
 * second overrun is a finding. One state a driver (a driver is one file). */
struct fuzz_retry {
	int confirming, overran;
};

static inline struct fuzz_retry *fuzz_retry(void)
{
	static struct fuzz_retry r;
	return &r;
}

/* fuzz_clock_over for a driver run by fuzz_run_input: a first overrun is
 * noted, a confirmed one aborts. */
static inline void fuzz_check_time(const struct fuzz_clock *c, double limit_ms, const char *driver,
                                   const char *what)
{
	struct fuzz_retry *r = fuzz_retry();

	if (fuzz_clock_over(c, limit_ms, driver, what, r->confirming)) {
		if (r->confirming)
			abort();
		r->overran = 1;
	}
}

/* What LLVMFuzzerTestOneInput does: run the input, and once more if it
 * overran. */
static inline void fuzz_run_input(void (*run)(const uint8_t *, size_t), const uint8_t *data, size_t size)
{
	struct fuzz_retry *r = fuzz_retry();

	r->overran = 0;
	run(data, size);
	if (r->overran) {
		r->confirming = 1;
		run(data, size);
		r->confirming = 0;
	}
}

#endif
