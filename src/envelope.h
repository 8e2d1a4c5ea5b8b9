/*
 * envelope.h — the ceiling no policy can exceed.
 *
 * A policy's decision is checked here, in C, against the tenant: exactly one
 * user_id scope equal to the user asked for (added when the policy gives none),
 * every other scope inside allowed_scopes, the lifetime capped at
 * max_expires_in, and an explicit unit for Courier. Anything that does not fit
 * is a policy error: never a token.
 */
#ifndef BROKER_ENVELOPE_H
#define BROKER_ENVELOPE_H

#include <stdbool.h>
#include <stddef.h>

struct tenant;

#define DECISION_MAX_SCOPES 32

/* What a policy returned, already type-checked (policy.c fills it). */
struct decision {
	bool allow;
	const char *scopes[DECISION_MAX_SCOPES]; /* point into strbuf */
	size_t n_scopes;
	long long expires_s; /* 0: the policy gave none */
	char reason[256];
	char strbuf[4096];
	size_t strbuf_used;
};

/* Copies scope into d->strbuf and appends it. Returns 0, or -1 when full. */
int envelope_add_scope(struct decision *d, const char *scope, size_t len);

/* Whether scope i repeats one of the decision's earlier scopes (sent once). */
bool envelope_scope_repeats(const struct decision *d, size_t i);

/* What the core lets through to Courier. */
struct grant {
	char scope[8192];         /* "user_id:<id> <scope> ..." */
	long long expires_s;      /* after the cap */
	bool capped;              /* the policy asked for more than max_expires_in */
	char courier_expires[32]; /* explicit unit, e.g. "3600s" */
};

/*
 * Applies the tenant's ceiling to an allowing decision for user_id (already
 * validated by scope_user_id_valid). Returns 0 and fills g, or -1 with the
 * reason in err (a policy_error).
 */
int envelope_apply(const struct tenant *t, const char *user_id, const struct decision *d, struct grant *g,
                   char *err, size_t errlen);

/* Whether scope (len bytes) is in the tenant's allowed_scopes. */
bool envelope_scope_allowed(const struct tenant *t, const char *scope, size_t len);

#endif
