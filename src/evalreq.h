/*
 * evalreq.h — what `courier-broker eval` reads: a described request (JSON,
 * strict) or a real one (raw HTTP, verified as the server verifies it).
 */
#ifndef BROKER_EVALREQ_H
#define BROKER_EVALREQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct config;
struct policy_engine;
struct tenant;

struct evalreq_options {
	const char *peer; /* the connection's address a raw request came from (default 127.0.0.1) */
	bool explain;     /* name the return that decided, and the calls that led there */
	bool has_now;     /* --now given: */
	long long now;    /* the clock (Unix seconds) for req.now and the credential's exp/nbf */
};

/*
 * `eval` of text (len bytes) for tenant t of cfg on e (an engine of cfg):
 * a JSON object is a described request (user_id, body, scopes, expires_in,
 * identity, client, headers, now; an unknown field is refused); anything
 * else is a raw HTTP request to the tenant's token route, whose credential is
 * verified with the tenant's auth exactly as the server does (ident.c). The
 * decision is printed to out as JSON. Returns the exit status: 0 when a
 * decision was printed, 1 when the request was refused before the policy (the
 * status the server would answer and why, on stderr).
 */
int evalreq_run(struct policy_engine *e, const struct config *cfg, const struct tenant *t, const char *text,
                size_t len, const struct evalreq_options *opt, FILE *out);

#endif
