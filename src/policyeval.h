/*
 * policyeval.h — deciding one described request, as the server would:
 * `courier-broker test` cases and `courier-broker eval`.
 *
 * A request description is a Lua table: user_id, body (or scopes and
 * expires_in), identity, client, headers, now. The same engine (policy.c)
 * and the same ceiling (envelope.c) as a live request decide it. Never calls
 * Courier.
 */
#ifndef BROKER_POLICYEVAL_H
#define BROKER_POLICYEVAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "envelope.h"

struct lua_State;
struct policy_engine;
struct tenant;

/* What became of one described request. */
struct policyeval_outcome {
	enum { POLICYEVAL_ALLOW, POLICYEVAL_DENY, POLICYEVAL_ERROR } kind;
	struct decision dec; /* what the policy returned */
	struct grant grant;  /* after the ceiling, when allowed */
	char err[512];       /* why, when POLICYEVAL_ERROR */
	bool invalid;        /* POLICYEVAL_ERROR: the description itself was refused, no policy ran */
};

/* Decides the request described by the table at reqidx on L (the engine's
 * state) for tenant t; fills o. Leaves the stack as it was. */
void policyeval_decide(struct policy_engine *e, struct lua_State *L, int reqidx, const struct tenant *t,
                       struct policyeval_outcome *o);

/* Whether every key of the table at idx is one of known (NULL-terminated).
 * Returns 0, or -1 with "unknown key 'WHAT.KEY' (known, ...)" in err. */
int policyeval_known_keys(struct lua_State *L, int idx, const char *what, const char *const *known, char *err,
                          size_t errlen);

/* `eval`: decodes a request description (JSON: user_id, body, identity, client,
 * headers, now), decides, applies the envelope and prints the result as JSON
 * to out. Returns the exit status (0 when a decision was printed). */
int policyeval_run(struct policy_engine *e, const struct tenant *t, const char *json, size_t len, FILE *out);

/* policyeval_run's second half: decides the request description at reqidx
 * on policy_engine_lua(e) and prints the result. Leaves the stack as it was. */
int policyeval_print(struct policy_engine *e, const struct tenant *t, int reqidx, FILE *out);

#endif
