/*
 * gen.c — configuration generations, swapped atomically.
 *
 * Owns the pointer to the current generation. The swap and the taking of a
 * reference happen under one short mutex, so a reader never sees a
 * generation that is being freed. Never loads or validates anything itself:
 * callers hand it a configuration that has passed every check. It does build
 * the policy engines a new generation's worker threads will take, before the
 * swap, on the caller's (the reload's) thread, and keeps each loop's engines
 * (gen_engines): an event loop must never compile a policy on a request's
 * time while a spare is there to take.
 */
#include "gen.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "policy.h"

struct ratelimit {
	pthread_mutex_t lock;
	double tokens;
	struct timespec last;
};

static pthread_mutex_t cur_lock = PTHREAD_MUTEX_INITIALIZER;
static struct gen *current;
static unsigned long long next_id = 1;

static void gen_free(struct gen *g)
{
	/* Engines point at the config: before it goes. */
	for (size_t i = 0; i < g->n_spare; i++)
		policy_engine_free(g->spare[i]);
	free(g->spare);
	pthread_mutex_destroy(&g->spare_lock);
	for (size_t i = 0; g->limits && i < g->cfg->n_tenants; i++)
		pthread_mutex_destroy(&g->limits[i].lock);
	free(g->limits);
	free(g->courier_url);
	config_free(g->cfg); /* zeroes keys */
	free(g);
	metrics_generations_alive(-1);
}

struct gen *gen_build(struct config *cfg, unsigned spare_engines)
{
	struct gen *g = calloc(1, sizeof(*g));
	size_t n;

	if (!g)
		return NULL;
	g->cfg = cfg;
	g->loaded_at = time(NULL);
	n = strlen(cfg->courier_base_url);
	while (n > 0 && cfg->courier_base_url[n - 1] == '/')
		n--;
	if (asprintf(&g->courier_url, "%.*s/auth/issue-token", (int)n, cfg->courier_base_url) < 0) {
		g->courier_url = NULL;
		free(g);
		return NULL;
	}
	g->limits = calloc(cfg->n_tenants ? cfg->n_tenants : 1, sizeof(*g->limits));
	if (!g->limits) {
		free(g->courier_url);
		free(g);
		return NULL;
	}
	for (size_t i = 0; i < cfg->n_tenants; i++) {
		pthread_mutex_init(&g->limits[i].lock, NULL);
		g->limits[i].tokens = cfg->tenants[i].rate_limit.burst;
		clock_gettime(CLOCK_MONOTONIC, &g->limits[i].last);
	}
	atomic_init(&g->refs, 1);
	pthread_mutex_init(&g->spare_lock, NULL);
	g->spare = spare_engines ? calloc(spare_engines, sizeof(*g->spare)) : NULL;
	for (unsigned i = 0; g->spare && i < spare_engines; i++) {
		char err[256];
		/* A failure here is not fatal: a worker builds its own, and logs why. */
		if (!(g->spare[g->n_spare] = policy_engine_new(cfg, err, sizeof(err))))
			break;
		g->n_spare++;
		metrics_engine_built(false);
	}
	metrics_generations_alive(1);
	return g;
}

void gen_publish(struct gen *g)
{
	struct gen *old;

	pthread_mutex_lock(&cur_lock);
	g->id = next_id++;
	old = current;
	current = g;
	pthread_mutex_unlock(&cur_lock);

	metrics_generation(g->id, g->loaded_at);
	if (old)
		gen_release(old);
}

int gen_install(struct config *cfg, unsigned spare_engines)
{
	struct gen *g = gen_build(cfg, spare_engines);

	if (!g)
		return -1;
	gen_publish(g);
	return 0;
}

struct policy_engine *gen_take_engine(struct gen *g)
{
	struct policy_engine *e = NULL;

	pthread_mutex_lock(&g->spare_lock);
	if (g->n_spare > 0)
		e = g->spare[--g->n_spare];
	pthread_mutex_unlock(&g->spare_lock);
	return e;
}

static void engine_drop(struct gen_engines *c, struct gen_engine *e)
{
	for (struct gen_engine **p = &c->newest; *p; p = &(*p)->next) {
		if (*p == e) {
			*p = e->next;
			break;
		}
	}
	/* Its generation may be gone: policy_engine_free never reads the config. */
	policy_engine_free(e->engine);
	free(e);
}

struct gen_engine *gen_engine_pin(struct gen_engines *c, struct gen *g)
{
	struct gen_engine *e, *old = c->newest;
	char err[512];

	for (e = c->newest; e; e = e->next) {
		if (e->gen_id == g->id) {
			e->users++;
			return e;
		}
	}
	if (!(e = calloc(1, sizeof(*e))))
		return NULL;
	/* Usually the one the reload built for this loop; compiling here is the
	 * fallback (counted, so it shows). */
	e->engine = gen_take_engine(g);
	if (!e->engine) {
		e->engine = policy_engine_new(g->cfg, err, sizeof(err));
		if (!e->engine) {
			log_msg("error", "cannot build the policy engine: %s", err);
			free(e);
			return NULL;
		}
		metrics_engine_built(true);
	}
	e->gen_id = g->id;
	e->users = 1;
	if (!old || g->id > old->gen_id) {
		/* Generations only move forward: the usual case. */
		e->next = old;
		c->newest = e;
		if (old && old->users == 0)
			engine_drop(c, old);
	} else {
		e->next = old->next;
		old->next = e;
	}
	return e;
}

void gen_engine_unpin(struct gen_engines *c, struct gen_engine *e)
{
	if (e && --e->users == 0 && e != c->newest)
		engine_drop(c, e);
}

void gen_engines_free(struct gen_engines *c)
{
	while (c->newest)
		engine_drop(c, c->newest);
}

struct gen *gen_acquire(void)
{
	struct gen *g;

	pthread_mutex_lock(&cur_lock);
	g = current;
	if (g)
		atomic_fetch_add_explicit(&g->refs, 1, memory_order_relaxed);
	pthread_mutex_unlock(&cur_lock);
	return g;
}

void gen_release(struct gen *g)
{
	if (g && atomic_fetch_sub_explicit(&g->refs, 1, memory_order_acq_rel) == 1)
		gen_free(g);
}

void gen_shutdown(void)
{
	struct gen *g;

	pthread_mutex_lock(&cur_lock);
	g = current;
	current = NULL;
	pthread_mutex_unlock(&cur_lock);
	gen_release(g);
}

bool gen_rate_take(struct gen *g, const struct tenant *t, double *retry_after)
{
	const struct rate_limit *rl = &t->rate_limit;
	struct ratelimit *b;
	struct timespec now;
	bool ok;

	if (rl->per_second <= 0)
		return true;
	b = &g->limits[t - g->cfg->tenants];
	clock_gettime(CLOCK_MONOTONIC, &now);
	pthread_mutex_lock(&b->lock);
	b->tokens += ((double)(now.tv_sec - b->last.tv_sec) + (double)(now.tv_nsec - b->last.tv_nsec) / 1e9) *
	             rl->per_second;
	if (b->tokens > rl->burst)
		b->tokens = rl->burst;
	b->last = now;
	ok = b->tokens >= 1.0;
	if (ok)
		b->tokens -= 1.0;
	else
		*retry_after = ceil((1.0 - b->tokens) / rl->per_second);
	pthread_mutex_unlock(&b->lock);
	return ok;
}
