/*
 * policyeval.c — one request through a policy and the ceiling, for the tools.
 *
 * Owns turning a request description (a Lua table: a test case's req, or
 * `eval`'s JSON) into a policy_request, deciding it on an engine and applying
 * the envelope, exactly as a live request would be (policy.c, envelope.c),
 * and `eval`'s JSON answer with its warnings. It must never accept a body the
 * server would answer 400, never skip the ceiling, and never call Courier.
 */
#include "policyeval.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "envelope.h"
#include "json.h"
#include "policy.h"
#include "reqbody.h"
#include "scope.h"

#define MAX_HDRS 64

/* ------------------------------------------------------- building a req */

/* The request a case (or eval) describes, as the table at idx on L. Strings
 * point into Lua values kept on the stack, so the caller restores the stack
 * only after deciding. */
struct case_req {
	struct policy_request rq;
	struct policy_header hdrs[MAX_HDRS];
};

static const char *opt_string(lua_State *L, int t, const char *field)
{
	const char *s;

	lua_getfield(L, t, field);
	s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
	/* Left on the stack on purpose: s must stay valid. */
	return s;
}

/* req.body (or one made of req's user_id, scopes and expires_in), pushed and
 * checked as the server checks it. 0 or -1 with a message. */
static int build_body(lua_State *L, int idx, struct policy_request *rq, char *err, size_t errlen)
{
	const char *uid, *why;
	size_t uid_len;

	lua_getfield(L, idx, "body");
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		lua_createtable(L, 0, 3);
		lua_pushstring(L, rq->user_id);
		lua_setfield(L, -2, "user_id");
		lua_getfield(L, idx, "scopes");
		lua_setfield(L, -2, "scopes");
		lua_getfield(L, idx, "expires_in");
		lua_setfield(L, -2, "expires_in");
	} else if (!lua_istable(L, -1)) {
		snprintf(err, errlen, "req.body must be a table");
		return -1;
	}
	rq->body_idx = lua_gettop(L);
	/* The server's own check: a body it answers 400 never reaches a policy. */
	if (reqbody_check(L, rq->body_idx, &uid, &uid_len, &why) != 0) {
		snprintf(err, errlen, "the broker refuses this body (400): %s", why);
		return -1;
	}
	if (uid_len != strlen(rq->user_id) || memcmp(uid, rq->user_id, uid_len) != 0) {
		snprintf(err, errlen,
		         "req.user_id and req.body.user_id differ (the server takes the user from the body)");
		return -1;
	}
	return 0;
}

/* req.identity; pushes it and the values rq points into. */
static void build_identity(lua_State *L, int idx, struct policy_request *rq)
{
	int ident;

	lua_getfield(L, idx, "identity");
	ident = lua_gettop(L);
	if (lua_istable(L, ident)) {
		lua_getfield(L, ident, "authenticated");
		rq->authenticated = lua_toboolean(L, -1);
		rq->method = opt_string(L, ident, "method");
		rq->subject = opt_string(L, ident, "subject");
		lua_getfield(L, ident, "claims");
		if (lua_istable(L, -1))
			rq->claims_idx = lua_gettop(L);
		if (!rq->method)
			rq->method = rq->authenticated ? "jwt" : "none";
	} else {
		rq->method = "none";
	}
}

/* req.client and req.headers; pushes them and the values rq points into. */
static void build_client(lua_State *L, int idx, struct case_req *cr)
{
	struct policy_request *rq = &cr->rq;
	int client, hdrs;

	lua_getfield(L, idx, "client");
	client = lua_gettop(L);
	if (lua_istable(L, client)) {
		rq->client_ip = opt_string(L, client, "ip");
		rq->origin = opt_string(L, client, "origin");
		rq->user_agent = opt_string(L, client, "user_agent");
	}

	lua_getfield(L, idx, "headers");
	hdrs = lua_gettop(L);
	if (lua_istable(L, hdrs)) {
		lua_pushnil(L);
		/* Keys and values stay alive in the table, which stays on the stack. */
		while (lua_next(L, hdrs)) {
			if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING &&
			    rq->n_headers < MAX_HDRS) {
				cr->hdrs[rq->n_headers].name = lua_tostring(L, -2);
				cr->hdrs[rq->n_headers].value = lua_tostring(L, -1);
				rq->n_headers++;
			}
			lua_pop(L, 1);
		}
	}
	rq->headers = cr->hdrs;
}

/* Builds cr from the table at idx; pushes helper values. 0 or -1 with a message. */
static int build_req(lua_State *L, int idx, const struct tenant *t, struct case_req *cr, char *err,
                     size_t errlen)
{
	struct policy_request *rq = &cr->rq;

	memset(cr, 0, sizeof(*cr));
	idx = lua_absindex(L, idx);
	rq->tenant = t;
	rq->user_id = opt_string(L, idx, "user_id");
	if (!rq->user_id || !scope_user_id_valid(rq->user_id, strlen(rq->user_id))) {
		snprintf(err, errlen, "req.user_id must be a valid user id");
		return -1;
	}
	if (build_body(L, idx, rq, err, errlen) != 0)
		return -1;
	build_identity(L, idx, rq);
	build_client(L, idx, cr);
	lua_getfield(L, idx, "now");
	rq->now = lua_isinteger(L, -1) ? (long long)lua_tointeger(L, -1) : (long long)time(NULL);
	return 0;
}

void policyeval_decide(struct policy_engine *e, lua_State *L, int reqidx, const struct tenant *t,
                       struct policyeval_outcome *o)
{
	struct case_req *cr = calloc(1, sizeof(*cr));
	int top = lua_gettop(L);

	memset(o, 0, sizeof(*o));
	o->kind = POLICYEVAL_ERROR;
	if (!cr) {
		snprintf(o->err, sizeof(o->err), "out of memory");
		return;
	}
	if (build_req(L, reqidx, t, cr, o->err, sizeof(o->err)) != 0) {
		/* o->err says why */
	} else if (policy_decide(e, &cr->rq, &o->dec, o->err, sizeof(o->err)) != 0) {
		/* o->err says why */
	} else if (!o->dec.allow) {
		o->kind = POLICYEVAL_DENY;
	} else if (envelope_apply(t, cr->rq.user_id, &o->dec, &o->grant, o->err, sizeof(o->err)) == 0) {
		o->kind = POLICYEVAL_ALLOW;
	}
	lua_settop(L, top);
	free(cr);
}

/* The grant's scope string as a list. */
static void push_scope_list(lua_State *L, const char *scope)
{
	int n = 0;

	lua_newtable(L);
	for (const char *p = scope; *p;) {
		const char *sp = strchr(p, ' ');
		size_t len = sp ? (size_t)(sp - p) : strlen(p);
		if (len) {
			lua_pushlstring(L, p, len);
			lua_rawseti(L, -2, ++n);
		}
		p += len + (sp ? 1 : 0);
	}
}

/* What the envelope changed in an allowing decision, for `eval`. */
static void push_warnings(lua_State *L, const struct tenant *t, const struct policyeval_outcome *o)
{
	const struct decision *d = &o->dec;
	int n = 0;

	lua_newtable(L);
	for (size_t i = 0; i < d->n_scopes; i++) {
		if (envelope_scope_repeats(d, i)) {
			lua_pushfstring(L, "scope %s was given more than once: sent once", d->scopes[i]);
			lua_rawseti(L, -2, ++n);
		}
	}
	if (o->grant.capped) {
		lua_pushfstring(L, "lifetime capped: the policy asked for %I s, max_expires_in is %I s",
		                (lua_Integer)d->expires_s, (lua_Integer)t->max_expires_s);
		lua_rawseti(L, -2, ++n);
	}
	if (d->expires_s == 0) {
		lua_pushfstring(L, "the policy gave no expires_in: default_expires_in (%I s) applies",
		                (lua_Integer)t->default_expires_s);
		lua_rawseti(L, -2, ++n);
	}
}

/* With explain on: decided_at (the `return` that decided, "file:line") and
 * decided_by (the policy frames that led there, outermost first). */
static void push_origin(lua_State *L, struct policy_engine *e)
{
	struct policy_frame fr[POLICY_CHAIN_MAX];
	size_t n = policy_decision_origin(e, fr, POLICY_CHAIN_MAX);

	if (n == 0)
		return;
	lua_pushfstring(L, "%s:%d", fr[n - 1].source, fr[n - 1].line);
	lua_setfield(L, -2, "decided_at");
	lua_createtable(L, (int)n, 0);
	for (size_t i = 0; i < n; i++) {
		lua_pushfstring(L, "%s:%d%s", fr[i].source, fr[i].line, fr[i].tail ? " (tail call)" : "");
		lua_rawseti(L, -2, (lua_Integer)i + 1);
	}
	lua_setfield(L, -2, "decided_by");
}

int policyeval_run(struct policy_engine *e, const struct tenant *t, const char *json, size_t len, FILE *out)
{
	lua_State *L = policy_engine_lua(e);
	int top = lua_gettop(L), rc;

	if (json_decode(L, json, len) != 0 || !lua_istable(L, -1)) {
		fprintf(stderr, "courier-broker eval: the request must be a JSON object\n");
		lua_settop(L, top);
		return 1;
	}
	rc = policyeval_print(e, t, lua_gettop(L), out);
	lua_settop(L, top);
	return rc;
}

int policyeval_print(struct policy_engine *e, const struct tenant *t, int reqidx, FILE *out)
{
	lua_State *L = policy_engine_lua(e);
	int top = lua_gettop(L);
	struct policyeval_outcome *o;
	const char *s;
	size_t slen;

	o = calloc(1, sizeof(*o));
	if (!o)
		return 1;
	policyeval_decide(e, L, reqidx, t, o);
	lua_createtable(L, 0, 8);
	lua_pushstring(L, t->name);
	lua_setfield(L, -2, "tenant");
	lua_pushstring(L, t->policy_revision);
	lua_setfield(L, -2, "policy_revision");
	lua_pushstring(L, o->kind == POLICYEVAL_ALLOW  ? "allow"
	                  : o->kind == POLICYEVAL_DENY ? "deny"
	                                               : "policy_error");
	lua_setfield(L, -2, "decision");
	lua_pushboolean(L, o->kind == POLICYEVAL_ALLOW);
	lua_setfield(L, -2, "allow");
	if (o->dec.reason[0]) {
		lua_pushstring(L, o->dec.reason);
		lua_setfield(L, -2, "reason");
	}
	if (o->kind == POLICYEVAL_ERROR) {
		lua_pushstring(L, o->err);
		lua_setfield(L, -2, "error");
	}
	if (policy_decision_log(e)[0]) {
		int n = 0;
		lua_newtable(L);
		for (const char *p = policy_decision_log(e), *nl; (nl = strchr(p, '\n')); p = nl + 1) {
			lua_pushlstring(L, p, (size_t)(nl - p));
			lua_rawseti(L, -2, ++n);
		}
		lua_setfield(L, -2, "policy_log");
	}
	if (o->kind != POLICYEVAL_ERROR)
		push_origin(L, e);
	if (o->kind == POLICYEVAL_ALLOW) {
		lua_pushstring(L, o->grant.scope);
		lua_setfield(L, -2, "scope");
		lua_pushinteger(L, o->grant.expires_s);
		lua_setfield(L, -2, "expires_in");
		lua_pushstring(L, o->grant.courier_expires);
		lua_setfield(L, -2, "courier_expires_in");
		push_scope_list(L, o->grant.scope);
		lua_setfield(L, -2, "scopes");
		push_warnings(L, t, o);
		if (lua_rawlen(L, -1) > 0)
			lua_setfield(L, -2, "warnings");
		else
			lua_pop(L, 1);
	}
	s = json_encode(L, -1, &slen);
	if (s)
		fprintf(out, "%s\n", s);
	lua_settop(L, top);
	free(o);
	return s ? 0 : 1;
}
