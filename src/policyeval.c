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
#include <stdbool.h>
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

/* ------------------------------------------------------- strict shapes */

int policyeval_known_keys(lua_State *L, int idx, const char *what, const char *const *known, char *err,
                          size_t errlen)
{
	idx = lua_absindex(L, idx);
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		bool ok = false;
		lua_pop(L, 1);
		if (lua_type(L, -1) == LUA_TSTRING)
			for (const char *const *k = known; *k && !ok; k++)
				ok = strcmp(lua_tostring(L, -1), *k) == 0;
		if (!ok) {
			size_t used;
			if (lua_type(L, -1) == LUA_TSTRING)
				used = (size_t)snprintf(err, errlen, "unknown key '%s.%s' (", what,
				                        lua_tostring(L, -1));
			else if (lua_isinteger(L, -1))
				used = (size_t)snprintf(err, errlen, "unknown key %s[%lld] (", what,
				                        (long long)lua_tointeger(L, -1));
			else
				used = (size_t)snprintf(err, errlen, "unknown key in %s, a %s (", what,
				                        luaL_typename(L, -1));
			for (const char *const *k = known; *k && used < errlen; k++)
				used += (size_t)snprintf(err + used, errlen - used, "%s%s",
				                         k == known ? "" : ", ", *k);
			if (used < errlen)
				snprintf(err + used, errlen - used, ")");
			lua_pop(L, 1);
			return -1;
		}
	}
	return 0;
}

static const char *const req_keys[] = {"user_id", "scopes",  "expires_in", "body", "identity",
                                       "client",  "headers", "now",        NULL};
static const char *const identity_keys[] = {"authenticated", "method", "subject", "claims", NULL};
static const char *const client_keys[] = {"ip", "origin", "user_agent", NULL};

/* Whether field of the table at t is nil or of type want; else err. */
static int field_type(lua_State *L, int t, const char *what, const char *field, int want, char *err,
                      size_t errlen)
{
	int type = lua_getfield(L, t, field);

	lua_pop(L, 1);
	if (type == LUA_TNIL || type == want)
		return 0;
	snprintf(err, errlen, "%s.%s must be a %s, got %s", what, field, lua_typename(L, want),
	         type == LUA_TLIGHTUSERDATA ? "null" : lua_typename(L, type));
	return -1;
}

/*
 * The description at idx has only known keys (a typo such as req.identiy
 * would otherwise describe another request than the author thinks), and
 * each of its parts the type it must have. 0, or -1 with the reason.
 */
static int check_shape(lua_State *L, int idx, char *err, size_t errlen)
{
	int rc = -1;

	if (policyeval_known_keys(L, idx, "req", req_keys, err, errlen) != 0 ||
	    field_type(L, idx, "req", "identity", LUA_TTABLE, err, errlen) != 0 ||
	    field_type(L, idx, "req", "client", LUA_TTABLE, err, errlen) != 0 ||
	    field_type(L, idx, "req", "headers", LUA_TTABLE, err, errlen) != 0)
		return -1;
	if (lua_getfield(L, idx, "now") != LUA_TNIL && !lua_isinteger(L, -1)) {
		snprintf(err, errlen, "req.now must be an integer (Unix time in seconds)");
		goto out;
	}
	lua_pop(L, 1);
	if (lua_getfield(L, idx, "body") != LUA_TNIL) {
		for (int i = 0; i < 2; i++) {
			const char *f = i ? "expires_in" : "scopes";
			if (lua_getfield(L, idx, f) != LUA_TNIL) {
				snprintf(err, errlen,
				         "req.%s is ignored when req.body is given: put it in req.body", f);
				goto out;
			}
			lua_pop(L, 1);
		}
	}
	lua_pop(L, 1);
	if (lua_getfield(L, idx, "identity") == LUA_TTABLE) {
		int id = lua_gettop(L);
		if (policyeval_known_keys(L, id, "req.identity", identity_keys, err, errlen) != 0 ||
		    field_type(L, id, "req.identity", "authenticated", LUA_TBOOLEAN, err, errlen) != 0 ||
		    field_type(L, id, "req.identity", "method", LUA_TSTRING, err, errlen) != 0 ||
		    field_type(L, id, "req.identity", "subject", LUA_TSTRING, err, errlen) != 0 ||
		    field_type(L, id, "req.identity", "claims", LUA_TTABLE, err, errlen) != 0)
			goto out;
		if (lua_getfield(L, id, "method") == LUA_TSTRING) {
			const char *m = lua_tostring(L, -1);
			if (strcmp(m, "jwt") != 0 && strcmp(m, "client_key") != 0 &&
			    strcmp(m, "proxy") != 0 && strcmp(m, "none") != 0) {
				snprintf(
				    err, errlen,
				    "req.identity.method \"%s\" is not one of jwt, client_key, proxy, none",
				    m);
				goto out;
			}
		}
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
	if (lua_getfield(L, idx, "client") == LUA_TTABLE) {
		int c = lua_gettop(L);
		if (policyeval_known_keys(L, c, "req.client", client_keys, err, errlen) != 0)
			goto out;
		for (const char *const *k = client_keys; *k; k++)
			if (field_type(L, c, "req.client", *k, LUA_TSTRING, err, errlen) != 0)
				goto out;
	}
	lua_pop(L, 1);
	if (lua_getfield(L, idx, "headers") == LUA_TTABLE) {
		lua_pushnil(L);
		while (lua_next(L, -2)) {
			if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING) {
				snprintf(err, errlen, "req.headers maps names to strings (a %s to a %s)",
				         luaL_typename(L, -2), luaL_typename(L, -1));
				lua_pop(L, 2);
				goto out;
			}
			lua_pop(L, 1);
		}
	}
	lua_pop(L, 1);
	return 0;
out:
	lua_pop(L, 1);
	return rc;
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
	if (check_shape(L, idx, err, errlen) != 0)
		return -1;
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
		o->invalid = true; /* o->err says why */
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
	if (o->invalid) { /* a request that cannot be (a typo, a body the server refuses) */
		fprintf(stderr, "courier-broker eval: the request: %s\n", o->err);
		lua_settop(L, top);
		free(o);
		return 1;
	}
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
