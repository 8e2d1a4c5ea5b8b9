/*
 * gen.h — configuration generations, swapped atomically.
 *
 * A generation is one loaded configuration (keys, tenants, policy sources)
 * plus the little mutable state that belongs to it (rate-limit buckets).
 * Requests take a reference for their whole life, so a reload never changes
 * a request halfway; the last reference frees the generation and zeroes its
 * keys.
 */
#ifndef BROKER_GEN_H
#define BROKER_GEN_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

struct config;
struct tenant;
struct policy_engine;

struct gen {
	struct config *cfg; /* owned */
	unsigned long long id;
	time_t loaded_at;
	char *courier_url;        /* base_url + "/auth/issue-token" */
	char **tenant_urls;       /* per tenant, same order: its own base_url's, or NULL */
	struct ratelimit *limits; /* one per tenant, same order */
	_Atomic int refs;

	/* Policy engines built for this generation before it serves, so worker
	 * threads switch to it without compiling on a request's time. Taken
	 * once each (gen_take_engine); those never taken die with it. */
	struct policy_engine **spare;
	size_t n_spare;
	pthread_mutex_t spare_lock;
};

/* Makes cfg (ownership taken) the current generation, with up to
 * spare_engines policy engines built for it first (one per worker thread).
 * Returns 0 or -1 (cfg stays the caller's). gen_build then gen_publish. */
int gen_install(struct config *cfg, unsigned spare_engines);

/* The slow half of gen_install: a generation for cfg (ownership taken on
 * success; on NULL, out of memory, cfg stays the caller's) with its spare
 * engines compiled, not yet serving. The caller holds its one reference:
 * gen_publish it, or gen_release it to drop it unseen. */
struct gen *gen_build(struct config *cfg, unsigned spare_engines);

/* The fast half: makes g, from gen_build, the current generation (it takes
 * the caller's reference) and drops the one it replaces. */
void gen_publish(struct gen *g);

/* Where t (a tenant of g's config) gets its tokens: its own upstream
 * (tenants.*.courier) or the global one. */
const char *gen_courier_url(const struct gen *g, const struct tenant *t);

/* One of g's spare engines, now the caller's (policy_engine_free it), or
 * NULL when none is left. */
struct policy_engine *gen_take_engine(struct gen *g);

/*
 * An event loop's policy engines: the one of the newest generation it has
 * served, kept while idle, plus the engine of each older generation that
 * requests begun on it still need (pinned). A request pins its generation's
 * engine when it begins and unpins it once decided, so a request is decided
 * by the generation it began on and a loop never flips between generations:
 * it takes one spare engine per generation (gen_take_engine) and compiles
 * one itself only when none is left. Used by one thread (its loop).
 */
struct gen_engine {
	struct policy_engine *engine;
	unsigned long long gen_id;
	unsigned users;
	struct gen_engine *next; /* older */
};

struct gen_engines {
	struct gen_engine *newest; /* NULL before the first request */
};

/* g's engine on this loop, pinned (the caller holds g); NULL when none could
 * be built (logged). Releases the previous newest engine when unpinned. */
struct gen_engine *gen_engine_pin(struct gen_engines *c, struct gen *g);

/* Ends a pin; an engine that is no longer the newest goes with its last. */
void gen_engine_unpin(struct gen_engines *c, struct gen_engine *e);

/* Frees every engine (the loop's end: no pin is left). */
void gen_engines_free(struct gen_engines *c);

/* The current generation with a reference taken, or NULL before the first. */
struct gen *gen_acquire(void);

void gen_release(struct gen *g);

/* One more reference to g, which the caller already holds one of. */
void gen_hold(struct gen *g);

/* Drops the current generation, zeroes the token cache and stops the deny
 * files' watcher (at exit). The shadow thread, which holds generations, is
 * its caller's to stop (shadow_stop). */
void gen_shutdown(void);

/* Which bucket refused a request. */
enum gen_rate_level {
	GEN_RATE_OK,
	GEN_RATE_REQUESTER, /* the requester's own bucket (rate_limit.per_requester) */
	GEN_RATE_TENANT,    /* the tenant's bucket */
};

/* Takes one token from the requester's bucket (when the tenant has
 * per_requester; requester is a key of len bytes naming who asks), then one
 * from the tenant's. A requester refused by its own bucket spends nothing of
 * the tenant's; one refused by the tenant's gets its own token back. Returns
 * GEN_RATE_OK, or the level that refused with the seconds to wait in
 * *retry_after. */
enum gen_rate_level gen_rate_take(struct gen *g, const struct tenant *t, const char *requester, size_t len,
                                  double *retry_after);

#endif
