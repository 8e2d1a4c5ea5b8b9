/*
 * jwks.h — JSON Web Key Sets: sources kept fresh.
 *
 * A set (jwk.h) is an immutable snapshot of verification keys. A source is where a tenant's set comes from: a
 * file, read once at load, or an https URL, fetched once at load (blocking) and then refreshed by a
 * background thread, within bounds, from the response's Cache-Control. The request path only takes a
 * reference to the current snapshot and, on an unknown kid, asks for a refresh: it never blocks on the
 * network.
 */
#ifndef BROKER_JWKS_H
#define BROKER_JWKS_H

#include <stdbool.h>
#include <stddef.h>

/* How a tenant's `jwks = { ... }` was configured. */
struct jwks_options {
	bool enabled;       /* jwks = { ... } was given */
	char *file;         /* absolute path, or NULL */
	char *url;          /* https:// (http:// to loopback only), or NULL */
	char *ca_file;      /* absolute; NULL: the system's CA bundle */
	long min_refresh_s; /* shortest time between two scheduled fetches, default 60 */
	long max_cache_s;   /* longest a fetched set is used before a refetch, default 3600 */
	long cooldown_s;    /* at most one unknown-kid refetch per cooldown, default 30 */
	long timeout_ms;    /* one fetch, default 5000 */
};

struct jwks_set;
struct jwks;

/*
 * Opens a source under o, for the tenant called name (for log lines): reads
 * the file or fetches the URL now, on the calling thread; for a URL starts
 * the refresher thread. Returns NULL with a reason in err when the first
 * load fails.
 */
struct jwks *jwks_open(const struct jwks_options *o, const char *name, char *err, size_t errlen);

/* Drops the opener's reference: the refresher stops (it never blocks the caller). */
void jwks_close(struct jwks *src);

/* The current snapshot with a reference taken, or NULL when none is loaded. */
struct jwks_set *jwks_acquire(struct jwks *src);

/* A token named a kid the current set lacks: asks the refresher for one
 * fetch, at most once per cooldown; concurrent misses share that fetch.
 * Never blocks. A file source ignores it. */
void jwks_unknown_kid(struct jwks *src);

/* Whether a set is loaded. */
bool jwks_ready(struct jwks *src);

/* Fetches attempted so far, the first included (for tests and metrics). */
unsigned long jwks_fetch_count(struct jwks *src);

/* Waits (at most timeout_ms) until every refresher thread has exited: at
 * exit, and in tests, so that nothing is left running. Returns 0 or -1. */
int jwks_shutdown(long timeout_ms);

#endif
