/*
 * ratelease.c — an event loop's leases on the cluster's shared rate limits.
 *
 * Owns a loop's table of leases: per Redis key, the tokens left, when they
 * stop counting (lease_ms after the call that took them was sent, before
 * Redis charged them, so the bound holds to the letter) and the size k of
 * the next lease. k starts at 1, doubles (up to the key's cap) when a lease
 * was all spent while still in force, halves when one ran out of time with
 * tokens left (decided once a lease, when it ends). One call fills a key's
 * lease at a time: the request that found it empty asks for k (and keeps
 * one), or, once a lease is half spent, a call of its own asks for the next
 * one ahead (kept beside, taking over when the current one ends), so that
 * requests seldom find it empty; those that do while a call is out ask
 * Redis for one token each.
 *
 * It must never let a token be spent after its lease's end, never put back
 * a token into a lease other than the one it came from, never keep a lease
 * taken under limits that changed (a reload), never grow (a fixed table:
 * the oldest entry near a new key's place is evicted) and never refuse: a
 * refusal is Redis's alone (an empty lease means "ask").
 */
#include "ratelease.h"

#include <stdlib.h>
#include <string.h>

#include "clusterrate.h"

#define PROBES        8        /* entries a key may sit in, from its hash's */
#define FILL_STALE_MS 10000ull /* past every command's deadline: a fill lost */

struct entry {
	bool used, filling;
	uint64_t hash;
	uint64_t stamp;      /* changes when the entry's key, limits or current lease change */
	uint64_t last_ms;    /* its last use: the oldest is evicted first */
	uint64_t expires_ms; /* the current lease's end (monotonic) */
	uint64_t next_ms;    /* the next lease's end */
	uint64_t fill_ms;    /* when the filling call was sent */
	double per_second, burst;
	unsigned left, next; /* tokens of the current lease, of the next one */
	unsigned k;          /* the next lease's size */
	size_t len;
	char key[CLUSTERRATE_KEY_MAX];
};

struct ratelease {
	unsigned lease_ms;
	uint64_t stamps;
	struct entry e[RATELEASE_SLOTS];
};

struct ratelease *ratelease_new(unsigned lease_ms)
{
	struct ratelease *t = lease_ms ? calloc(1, sizeof(*t)) : NULL;

	if (t)
		t->lease_ms = lease_ms;
	return t;
}

void ratelease_free(struct ratelease *t)
{
	free(t);
}

unsigned ratelease_cap(unsigned lease_ms, double per_second, double burst)
{
	double c = per_second * (double)lease_ms / 1000.0;

	if (burst / 8 < c)
		c = burst / 8;
	if (c > RATELEASE_MAX)
		c = RATELEASE_MAX;
	return c >= 1 ? (unsigned)c : 1;
}

/* FNV-1a. */
static uint64_t hash_of(const char *key, size_t len)
{
	uint64_t h = 14695981039346656037ull;

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)key[i];
		h *= 1099511628211ull;
	}
	return h;
}

/* key's entry, or -1. */
static int find(const struct ratelease *t, const char *key, size_t len, uint64_t h)
{
	for (int p = 0; p < PROBES; p++) {
		int i = (int)((h + (uint64_t)p) % RATELEASE_SLOTS);
		const struct entry *e = &t->e[i];

		if (e->used && e->hash == h && e->len == len && memcmp(e->key, key, len) == 0)
			return i;
	}
	return -1;
}

/* A new entry for key: a free place near its hash's, else the oldest there. */
static int place(struct ratelease *t, const char *key, size_t len, uint64_t h)
{
	int best = -1;

	for (int p = 0; p < PROBES; p++) {
		int i = (int)((h + (uint64_t)p) % RATELEASE_SLOTS);

		if (!t->e[i].used) {
			best = i;
			break;
		}
		if (best < 0 || t->e[i].last_ms < t->e[best].last_ms)
			best = i;
	}
	memset(&t->e[best], 0, offsetof(struct entry, key));
	t->e[best].used = true;
	t->e[best].hash = h;
	t->e[best].len = len;
	t->e[best].k = 1;
	t->e[best].stamp = ++t->stamps;
	memcpy(t->e[best].key, key, len);
	return best;
}

/* The current lease is over (spent, or out of time): the next one's size. */
static void end_lease(struct entry *e, uint64_t now_ms, unsigned cap)
{
	if (e->left == 0 && now_ms < e->expires_ms)
		e->k = e->k * 2 > cap ? cap : e->k * 2; /* all spent while in force */
	else if (e->left > 0)
		e->k = e->k / 2 ? e->k / 2 : 1; /* ran out of time with tokens left */
	e->left = 0;
	e->expires_ms = 0;
}

static bool filling(const struct entry *e, uint64_t now_ms)
{
	return e->filling && now_ms - e->fill_ms < FILL_STALE_MS;
}

static void start_fill(struct entry *e, uint64_t now_ms, unsigned *ask, struct ratelease_ref *ref)
{
	e->filling = true;
	e->fill_ms = now_ms;
	ref->filling = true;
	*ask = e->k;
}

bool ratelease_take(struct ratelease *t, const char *key, size_t len, double per_second, double burst,
                    uint64_t now_ms, unsigned *ask, struct ratelease_ref *ref)
{
	unsigned cap = ratelease_cap(t->lease_ms, per_second, burst);
	uint64_t h;
	struct entry *e;
	int i;

	*ask = 1;
	ref->slot = -1;
	ref->held = ref->filling = false;
	if (cap < 2 || len > sizeof(e->key))
		return false;
	h = hash_of(key, len);
	if ((i = find(t, key, len, h)) < 0)
		i = place(t, key, len, h);
	e = &t->e[i];
	e->last_ms = now_ms;
	if (e->per_second != per_second || e->burst != burst) {
		/* New limits (or a new entry): nothing taken under the old ones. */
		e->per_second = per_second;
		e->burst = burst;
		e->left = e->next = 0;
		e->expires_ms = e->next_ms = 0;
		e->filling = false;
		e->stamp = ++t->stamps;
	}
	if (e->k > cap)
		e->k = cap;
	if (!(e->left > 0 && now_ms < e->expires_ms) && e->next > 0 && now_ms < e->next_ms) {
		/* The next lease takes over. */
		end_lease(e, now_ms, cap);
		e->left = e->next;
		e->expires_ms = e->next_ms;
		e->next = 0;
		e->next_ms = 0;
		e->stamp = ++t->stamps;
	}
	ref->slot = i;
	ref->stamp = e->stamp;
	*ask = 0;
	if (e->left > 0 && now_ms < e->expires_ms) {
		e->left--;
		ref->held = true;
		/* Half spent: the next lease is asked for ahead, by a call of its own. */
		if (!filling(e, now_ms) && e->next == 0 && e->left <= e->k / 2)
			start_fill(e, now_ms, ask, ref);
		return true;
	}
	end_lease(e, now_ms, cap);
	e->next = 0;
	e->next_ms = 0;
	if (filling(e, now_ms)) {
		ref->slot = -1; /* another call fills it: one token for this one */
		*ask = 1;
		return false;
	}
	start_fill(e, now_ms, ask, ref);
	return false;
}

/* ref's entry if it still holds what ref took, else NULL. */
static struct entry *entry_of(struct ratelease *t, const struct ratelease_ref *ref)
{
	struct entry *e;

	if (!t || ref->slot < 0 || ref->slot >= RATELEASE_SLOTS)
		return NULL;
	e = &t->e[ref->slot];
	return e->used && e->stamp == ref->stamp ? e : NULL;
}

void ratelease_granted(struct ratelease *t, struct ratelease_ref *ref, unsigned tokens, uint64_t sent_ms,
                       uint64_t now_ms)
{
	struct entry *e = entry_of(t, ref);

	if (e && ref->filling && e->filling) {
		e->filling = false;
		if (e->left > 0 && now_ms < e->expires_ms) {
			e->next = tokens;
			e->next_ms = sent_ms + t->lease_ms;
		} else {
			end_lease(e, now_ms, ratelease_cap(t->lease_ms, e->per_second, e->burst));
			e->left = tokens;
			e->expires_ms = sent_ms + t->lease_ms;
			e->stamp = ++t->stamps; /* tokens of the lease before stay out */
		}
	}
	ref->held = ref->filling = false;
}

void ratelease_release(struct ratelease *t, struct ratelease_ref *ref, uint64_t now_ms)
{
	struct entry *e = entry_of(t, ref);

	if (e && ref->held && now_ms < e->expires_ms)
		e->left++;
	if (e && ref->filling)
		e->filling = false;
	ref->held = ref->filling = false;
}

bool ratelease_peek(const struct ratelease *t, const char *key, size_t len, uint64_t now_ms, unsigned *left,
                    unsigned *k, bool *in_force)
{
	int i = len <= CLUSTERRATE_KEY_MAX ? find(t, key, len, hash_of(key, len)) : -1;

	if (i < 0)
		return false;
	*left = t->e[i].left;
	*k = t->e[i].k;
	*in_force = now_ms < t->e[i].expires_ms;
	return true;
}
