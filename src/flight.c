/*
 * flight.c — single-flight: concurrent identical grants share one Courier call.
 *
 * Single-flight: one Courier call for concurrent identical grants (same key,
 * grantcache.h). The table is per loop: a request never changes loops and its
 * answer must be made on its own loop, so the leader's done callback resumes
 * its followers directly, with no lock and no cross-thread wake-up. Identical
 * grants arriving on two loops make two calls (docs/operations.md). The
 * followers are suspended (no thread waits) and end with the leader's call,
 * which has its own timeout, so they need no deadline of their own.
 *
 * Owns the flights of one loop's table (the caller's: token.c keeps it per
 * loop) and the copying of the leader's outcome into each follower's job. It
 * must never resume a request on another loop, never free a follower, and
 * never leave a follower without the leader's answer.
 */
#include "flight.h"

#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "courier.h"
#include "reply.h"

struct flight {
	struct grantcache_key key;
	struct req *followers; /* linked by flight_next */
	struct flight *next;   /* same bucket */
};

static struct flight **flight_slot(struct flight **table, const struct grantcache_key *k)
{
	return &table[k->h[0] % FLIGHT_BUCKETS];
}

struct flight *flight_find(struct flight **table, const struct grantcache_key *k)
{
	struct flight *f = *flight_slot(table, k);

	while (f && memcmp(f->key.h, k->h, sizeof(k->h)) != 0)
		f = f->next;
	return f;
}

/* r's call has started: identical grants that arrive before it ends follow it.
 * Without memory r simply leads no flight. */
void flight_lead(struct flight **table, struct req *r)
{
	struct flight **slot = flight_slot(table, &r->gkey);
	struct flight *f = calloc(1, sizeof(*f));

	if (!f)
		return;
	f->key = r->gkey;
	f->next = *slot;
	*slot = f;
	r->flight = f;
}

/* The leader's outcome, copied into a follower's job (its answer body too:
 * the leader may be freed before the follower answers). */
static void flight_share(const struct courier_job *from, struct courier_job *to)
{
	to->status = from->status;
	to->timed_out = from->timed_out;
	to->aborted = from->aborted;
	to->seconds = from->seconds;
	memcpy(to->error, from->error, sizeof(to->error));
	buf_init(&to->resp_buf, from->resp_len + 1);
	if (from->resp_len && buf_add(&to->resp_buf, from->resp, from->resp_len) != 0) {
		to->status = 0;
		snprintf(to->error, sizeof(to->error), "out of memory sharing Courier's answer");
	}
	to->resp = to->resp_buf.data;
	to->resp_len = to->resp_buf.len;
}

/* The leader's call is over: its followers get its outcome and are resumed. */
void flight_follow(struct flight *f, struct req *r)
{
	r->flight_next = f->followers;
	f->followers = r;
	r->shared = true;
}

void flight_land(struct flight **table, struct req *leader)
{
	struct flight *f = leader->flight, **p = flight_slot(table, &f->key);

	while (*p != f)
		p = &(*p)->next;
	*p = f->next;
	for (struct req *r = f->followers, *next; r; r = next) {
		next = r->flight_next;
		r->flight_next = NULL;
		flight_share(&leader->job, &r->job);
		MHD_resume_connection(r->conn);
	}
	free(f);
	leader->flight = NULL;
}
