/*
 * ratelease.h — an event loop's leases on the cluster's shared rate limits.
 *
 * A lease is a few tokens of one limit (one Redis key) charged in Redis by
 * one script call (clusterrate.h) and spent by this loop's requests without
 * a round trip, for at most lease_ms from when the call was sent: so in any
 * interval the cluster admits at most what the limit allows plus
 * per_second * lease_ms / 1000, whatever the number of brokers. A limit
 * under 2 tokens a lease (per_second * lease_ms / 1000 < 2, or burst < 16)
 * is never leased: one call a request, exact. One table a loop, used by its
 * thread alone (no lock); bounded (the oldest entry near a new key's place
 * is evicted, its tokens lost: lost tokens only ever under-admit).
 */
#ifndef BROKER_RATELEASE_H
#define BROKER_RATELEASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RATELEASE_SLOTS 256 /* entries a loop's table holds */
#define RATELEASE_MAX   64  /* the largest lease, in tokens */

struct ratelease;

/* A request's hold on one key's entry: a token it took (held), or the
 * call it sends that fills the lease (filling). */
struct ratelease_ref {
	int slot; /* -1: no entry (the key is not leased) */
	uint64_t stamp;
	bool held, filling;
};

/* A table for leases of lease_ms (> 0); NULL when out of memory. */
struct ratelease *ratelease_new(unsigned lease_ms);
void ratelease_free(struct ratelease *t);

/* The largest lease of a limit: per_second * lease_ms / 1000, burst / 8
 * and RATELEASE_MAX, the smallest, rounded down; at least 1. */
unsigned ratelease_cap(unsigned lease_ms, double per_second, double burst);

/* One token of key's lease (len bytes, under these limits) at now_ms on
 * the monotonic clock: true, held in ref (spent once the request is let
 * through: ratelease_release gives it back otherwise); false: Redis must be
 * asked for *ask tokens of it. Either way, ref->filling says a call fills
 * the lease: the request's own when false (it keeps one of the grant), a
 * call of its own, asking *ask, when true (the next lease, asked ahead).
 * A lease taken under other limits (a reload) is dropped. */
bool ratelease_take(struct ratelease *t, const char *key, size_t len, double per_second, double burst,
                    uint64_t now_ms, unsigned *ask, struct ratelease_ref *ref);

/* Redis granted the call filling ref's lease, sent at sent_ms, `tokens`
 * for the lease (what the request did not keep): they count until sent_ms +
 * lease_ms. */
void ratelease_granted(struct ratelease *t, struct ratelease_ref *ref, unsigned tokens, uint64_t sent_ms,
                       uint64_t now_ms);

/* The request (or the call) was not let through by Redis (refused, no
 * answer): a held token goes back to its lease if that lease is still in
 * force, and a call that was to fill the lease no longer does. */
void ratelease_release(struct ratelease *t, struct ratelease_ref *ref, uint64_t now_ms);

/* For tests: key's lease (tokens left, its size k, whether in force at
 * now_ms); false when the key has no entry. */
bool ratelease_peek(const struct ratelease *t, const char *key, size_t len, uint64_t now_ms, unsigned *left,
                    unsigned *k, bool *in_force);

#endif
