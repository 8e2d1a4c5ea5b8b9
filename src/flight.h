/*
 * flight.h — single-flight of identical grants (flight.c).
 */
#ifndef BROKER_FLIGHT_H
#define BROKER_FLIGHT_H

#define FLIGHT_BUCKETS 256 /* the buckets of one loop's table */

struct flight;
struct grantcache_key;
struct req;

/* The flight of grant k in table (FLIGHT_BUCKETS buckets), or NULL. */
struct flight *flight_find(struct flight **table, const struct grantcache_key *k);

/* r's call has started: identical grants that arrive before it ends follow
 * it (r->flight). Without memory r simply leads no flight. */
void flight_lead(struct flight **table, struct req *r);

/* r waits on f's call (the caller suspends r's connection). */
void flight_follow(struct flight *f, struct req *r);

/* The leader's call is over: each follower gets a copy of its outcome and
 * is resumed; the flight is freed. */
void flight_land(struct flight **table, struct req *leader);

#endif
