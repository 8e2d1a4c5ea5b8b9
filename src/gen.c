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
 *
 * Also owns the rate-limit buckets: one per tenant, and with
 * rate_limit.per_requester a fixed table of requester buckets per tenant
 * (REQ_SETS x REQ_WAYS slots, allocated once: a flood of new requesters
 * never grows memory). A requester is known by a keyed hash of its name
 * (SipHash, a random key per process), so nobody can aim their names at the
 * set that holds someone else's bucket. A new requester takes a free slot of
 * its set, else the slot whose bucket holds the most tokens (a full bucket is
 * the same as a new one, so evicting it forgives nothing): to get rid of a
 * drained bucket, someone must first drain every other bucket of that set.
 * Buckets of a tenant whose limits did not change carry over a reload.
 */
#include "gen.h"

#include <math.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "grantcache.h"
#include "killswitch.h"
#include "log.h"
#include "metrics.h"
#include "policy.h"

/* Requesters tracked per tenant: REQ_SETS * REQ_WAYS (2,048; 64 KiB). */
#define REQ_SETS 256
#define REQ_WAYS 8

struct requester_slot {
	uint64_t tag; /* keyed hash of the requester; 0: free */
	double tokens;
	struct timespec last;
};

struct requester_table {
	pthread_mutex_t lock;
	struct requester_slot slot[REQ_SETS][REQ_WAYS];
};

struct ratelimit {
	pthread_mutex_t lock;
	double tokens;
	struct timespec last;
	struct requester_table *req; /* NULL without per_requester */
};

/* SipHash keyed once per process; each hash is a copy of this template. */
static pthread_once_t hash_once = PTHREAD_ONCE_INIT;
static EVP_MAC_CTX *hash_template;

static void hash_setup(void)
{
	unsigned char key[16];
	size_t size = 8;
	OSSL_PARAM params[] = {OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_SIZE, &size),
	                       OSSL_PARAM_construct_end()};
	EVP_MAC *mac = EVP_MAC_fetch(NULL, "SIPHASH", NULL);

	if (mac && RAND_bytes(key, sizeof(key)) == 1 && (hash_template = EVP_MAC_CTX_new(mac)) &&
	    EVP_MAC_init(hash_template, key, sizeof(key), params) != 1) {
		EVP_MAC_CTX_free(hash_template);
		hash_template = NULL;
	}
	OPENSSL_cleanse(key, sizeof(key));
	EVP_MAC_free(mac);
}

/* The requester's tag (never 0), or 0 when it cannot be computed. */
static uint64_t requester_tag(const char *name, size_t len)
{
	EVP_MAC_CTX *c;
	unsigned char md[8];
	size_t mdlen = 0;
	uint64_t tag = 0;

	pthread_once(&hash_once, hash_setup);
	if (!hash_template || !(c = EVP_MAC_CTX_dup(hash_template)))
		return 0;
	if (EVP_MAC_update(c, (const unsigned char *)name, len) == 1 &&
	    EVP_MAC_final(c, md, &mdlen, sizeof(md)) == 1 && mdlen == sizeof(md)) {
		memcpy(&tag, md, sizeof(tag));
		tag |= tag == 0;
	}
	EVP_MAC_CTX_free(c);
	return tag;
}

static double seconds_between(const struct timespec *a, const struct timespec *b)
{
	return (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

/* The bucket's tokens refilled up to now (never above burst). */
static double refilled(double tokens, const struct timespec *last, const struct timespec *now, double rate,
                       double burst)
{
	double dt = seconds_between(last, now);

	/* A thread that read the clock before another took the lock may see a
	 * later last: no refill, never a negative one. */
	if (dt > 0)
		tokens += dt * rate;
	return tokens > burst ? burst : tokens;
}

static pthread_mutex_t cur_lock = PTHREAD_MUTEX_INITIALIZER;
static struct gen *current;
static unsigned long long next_id = 1;

static void free_tenant_urls(struct gen *g)
{
	for (size_t i = 0; g->tenant_urls && i < g->cfg->n_tenants; i++)
		free(g->tenant_urls[i]);
	free(g->tenant_urls);
	g->tenant_urls = NULL;
}

static void gen_free(struct gen *g)
{
	/* Engines point at the config: before it goes. */
	for (size_t i = 0; i < g->n_spare; i++)
		policy_engine_free(g->spare[i]);
	free(g->spare);
	pthread_mutex_destroy(&g->spare_lock);
	for (size_t i = 0; g->limits && i < g->cfg->n_tenants; i++) {
		pthread_mutex_destroy(&g->limits[i].lock);
		if (g->limits[i].req) {
			pthread_mutex_destroy(&g->limits[i].req->lock);
			free(g->limits[i].req);
		}
	}
	free(g->limits);
	free(g->courier_url);
	free_tenant_urls(g);
	config_free(g->cfg); /* zeroes keys */
	free(g);
	metrics_generations_alive(-1);
}

static bool same_limits(const struct rate_limit *a, const struct rate_limit *b)
{
	return a->per_second == b->per_second && a->burst == b->burst &&
	       a->per_requester.per_second == b->per_requester.per_second &&
	       a->per_requester.burst == b->per_requester.burst;
}

/* A reload must not hand every requester a full bucket (issue 10, I7): the
 * buckets of each tenant whose limits are unchanged start where old's are.
 * Tokens old still hands out to requests in flight are not seen here. */
static void carry_buckets(struct gen *old, struct gen *g)
{
	for (size_t i = 0; i < g->cfg->n_tenants; i++) {
		const struct tenant *t = &g->cfg->tenants[i];
		for (size_t j = 0; j < old->cfg->n_tenants; j++) {
			const struct tenant *o = &old->cfg->tenants[j];
			struct ratelimit *from = &old->limits[j], *to = &g->limits[i];
			if (strcmp(o->name, t->name) != 0)
				continue;
			if (!same_limits(&o->rate_limit, &t->rate_limit))
				break;
			pthread_mutex_lock(&from->lock);
			to->tokens = from->tokens;
			to->last = from->last;
			pthread_mutex_unlock(&from->lock);
			if (from->req && to->req) {
				pthread_mutex_lock(&from->req->lock);
				memcpy(to->req->slot, from->req->slot, sizeof(to->req->slot));
				pthread_mutex_unlock(&from->req->lock);
			}
			break;
		}
	}
}

/* base + "/auth/issue-token", trailing slashes of base dropped; NULL: out of memory. */
static char *issue_url(const char *base)
{
	size_t n = strlen(base);
	char *url;

	while (n > 0 && base[n - 1] == '/')
		n--;
	if (asprintf(&url, "%.*s/auth/issue-token", (int)n, base) < 0)
		return NULL;
	return url;
}

/* Each tenant with its own upstream gets its URL; 0 or -1 (out of memory). */
static int build_tenant_urls(struct gen *g)
{
	const struct config *cfg = g->cfg;

	g->tenant_urls = calloc(cfg->n_tenants ? cfg->n_tenants : 1, sizeof(*g->tenant_urls));
	if (!g->tenant_urls)
		return -1;
	for (size_t i = 0; i < cfg->n_tenants; i++)
		if (cfg->tenants[i].courier_base_url &&
		    !(g->tenant_urls[i] = issue_url(cfg->tenants[i].courier_base_url)))
			return -1;
	return 0;
}

const char *gen_courier_url(const struct gen *g, const struct tenant *t)
{
	size_t i = (size_t)(t - g->cfg->tenants);

	return i < g->cfg->n_tenants && g->tenant_urls[i] ? g->tenant_urls[i] : g->courier_url;
}

struct gen *gen_build(struct config *cfg, unsigned spare_engines)
{
	struct gen *g = calloc(1, sizeof(*g));

	if (!g)
		return NULL;
	g->cfg = cfg;
	g->loaded_at = time(NULL);
	g->courier_url = issue_url(cfg->courier_base_url);
	if (!g->courier_url || build_tenant_urls(g) != 0) {
		free(g->courier_url);
		free_tenant_urls(g);
		free(g);
		return NULL;
	}
	g->limits = calloc(cfg->n_tenants ? cfg->n_tenants : 1, sizeof(*g->limits));
	if (!g->limits) {
		free(g->courier_url);
		free_tenant_urls(g);
		free(g);
		return NULL;
	}
	for (size_t i = 0; i < cfg->n_tenants; i++) {
		pthread_mutex_init(&g->limits[i].lock, NULL);
		g->limits[i].tokens = cfg->tenants[i].rate_limit.burst;
		clock_gettime(CLOCK_MONOTONIC, &g->limits[i].last);
		if (cfg->tenants[i].rate_limit.per_requester.per_second > 0) {
			/* calloc: every tag 0, every slot free. */
			g->limits[i].req = calloc(1, sizeof(*g->limits[i].req));
			pthread_once(&hash_once, hash_setup);
			if (!g->limits[i].req || !hash_template) {
				log_msg("error", "tenant %s: per-requester rate limits cannot be set up",
				        cfg->tenants[i].name);
				free(g->limits[i].req);
				for (size_t k = 0; k < i; k++) {
					pthread_mutex_destroy(&g->limits[k].lock);
					if (g->limits[k].req) {
						pthread_mutex_destroy(&g->limits[k].req->lock);
						free(g->limits[k].req);
					}
				}
				pthread_mutex_destroy(&g->limits[i].lock);
				free(g->limits);
				free(g->courier_url);
				free_tenant_urls(g);
				free(g);
				return NULL;
			}
			pthread_mutex_init(&g->limits[i].req->lock, NULL);
		}
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

/* The token cache across a reload: a tenant keeps its cached tokens only
 * when it is still there with token_cache on, the same policy revision, the
 * same API key and the same Courier URL; every other tenant's are dropped
 * (zeroed) before the new generation serves. Their keys name the revision,
 * key and URL too, so an entry that slipped through could never match. */
static void carry_token_cache(const struct gen *old, const struct gen *g)
{
	bool same_url = strcmp(old->courier_url, g->courier_url) == 0;

	for (size_t i = 0; i < old->cfg->n_tenants; i++) {
		const struct tenant *o = &old->cfg->tenants[i];
		const struct tenant *n = config_tenant(g->cfg, o->name);

		if (!same_url || !n || !n->token_cache ||
		    strcmp(o->policy_revision, n->policy_revision) != 0 ||
		    memcmp(o->api_key.digest, n->api_key.digest, sizeof(o->api_key.digest)) != 0)
			grantcache_drop_tenant(o->name);
	}
}

void gen_publish(struct gen *g)
{
	struct gen *old;

	/* Last, just before the swap: the buckets are as recent as can be. */
	if ((old = gen_acquire())) {
		carry_buckets(old, g);
		carry_token_cache(old, g);
		gen_release(old);
	}

	killswitch_configure(g->cfg); /* its deny lists watched before it serves */
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

void gen_hold(struct gen *g)
{
	atomic_fetch_add_explicit(&g->refs, 1, memory_order_relaxed);
}

void gen_shutdown(void)
{
	struct gen *g;

	pthread_mutex_lock(&cur_lock);
	g = current;
	current = NULL;
	pthread_mutex_unlock(&cur_lock);
	gen_release(g);
	grantcache_clear(); /* the cached tokens go with the last generation, zeroed */
	killswitch_stop();
}

/* Takes one token from requester's bucket in tbl (refund: gives one back). */
static bool requester_take(struct requester_table *tbl, uint64_t tag, double rate, double burst, bool refund,
                           const struct timespec *now, double *retry_after)
{
	struct requester_slot *set = tbl->slot[tag % REQ_SETS], *s = NULL;
	bool ok = true;

	pthread_mutex_lock(&tbl->lock);
	for (size_t w = 0; w < REQ_WAYS && !s; w++)
		if (set[w].tag == tag)
			s = &set[w];
	if (!s && refund)
		goto out; /* evicted meanwhile: it starts full anyway */
	if (!s) {
		double most = -1;
		for (size_t w = 0; w < REQ_WAYS; w++) {
			double have =
			    set[w].tag ? refilled(set[w].tokens, &set[w].last, now, rate, burst) : burst + 1;
			if (have > most) {
				most = have;
				s = &set[w];
			}
		}
		s->tag = tag;
		s->tokens = burst;
		s->last = *now;
	}
	s->tokens = refilled(s->tokens, &s->last, now, rate, burst);
	s->last = *now;
	if (refund) {
		s->tokens = s->tokens + 1 > burst ? burst : s->tokens + 1;
	} else if (s->tokens >= 1.0) {
		s->tokens -= 1.0;
	} else {
		ok = false;
		*retry_after = ceil((1.0 - s->tokens) / rate);
	}
out:
	pthread_mutex_unlock(&tbl->lock);
	return ok;
}

enum gen_rate_level gen_rate_take(struct gen *g, const struct tenant *t, const char *requester, size_t len,
                                  double *retry_after)
{
	const struct rate_limit *rl = &t->rate_limit;
	struct ratelimit *b = &g->limits[t - g->cfg->tenants];
	struct timespec now;
	uint64_t tag = 0;
	bool ok = true;

	if (rl->per_second <= 0 && !b->req)
		return GEN_RATE_OK;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (b->req) {
		tag = requester_tag(requester, len);
		if (!tag) {
			/* Fail closed: without a tag the requester's bucket is unknown. */
			*retry_after = 1;
			return GEN_RATE_REQUESTER;
		}
		if (!requester_take(b->req, tag, rl->per_requester.per_second, rl->per_requester.burst, false,
		                    &now, retry_after))
			return GEN_RATE_REQUESTER;
	}
	if (rl->per_second <= 0)
		return GEN_RATE_OK;
	pthread_mutex_lock(&b->lock);
	b->tokens = refilled(b->tokens, &b->last, &now, rl->per_second, rl->burst);
	b->last = now;
	ok = b->tokens >= 1.0;
	if (ok)
		b->tokens -= 1.0;
	else
		*retry_after = ceil((1.0 - b->tokens) / rl->per_second);
	pthread_mutex_unlock(&b->lock);
	if (ok)
		return GEN_RATE_OK;
	if (b->req) {
		double unused;
		requester_take(b->req, tag, rl->per_requester.per_second, rl->per_requester.burst, true, &now,
		               &unused);
	}
	return GEN_RATE_TENANT;
}
