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

struct lua_State;
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

/*
 * Checks the fields of a token request's body (the table at index body) that
 * the core owns, before any policy sees them: user_id present and a valid user
 * id; scopes absent (nil or null) or an array of at most DECISION_MAX_SCOPES
 * valid scope tokens; expires_in absent, a duration with a unit or a positive
 * integer of seconds. Returns 0 with *user_id pointing into the body's string
 * (valid while the body is) and its length in *user_id_len, or -1 with *msg
 * set to a static text fit for the client. Leaves the stack as it was. The
 * server and `courier-broker test` both call it, so a test case cannot pass
 * with a body the server refuses.
 */
int envelope_check_body(struct lua_State *L, int body, const char **user_id, size_t *user_id_len,
                        const char **msg);

#endif
