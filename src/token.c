/*
 * token.c — the token pipeline: one request from its headers to its answer.
 *
 * Owns the stages of a token request, in the order the README draws them:
 * headers (tenant, CORS, method, media type, size; token_begin) → body →
 * identity → rate (with cluster: the cluster's, the request suspended while
 * Redis answers) → deny list → policy → envelope → upstream (the token
 * cache, the cluster's too, or a call shared with identical grants on this
 * loop, or its own call: suspended while the Courier client works) → answer
 * (complete). Each stage returns an
 * answer code; the first that is not REPLY_GO is the answer. It must never
 * let a policy see a credential header, never charge a rate budget before the
 * requester is authenticated, never issue a token the envelope refused, and
 * never answer from the cache before the policy and the envelope allowed.
 * Only the decision runs on the generation's policy engine; everything else
 * uses the loop's JSON state. A stage's wait on the cluster's Redis (rate
 * limits, the shared token cache) is tokenwait.c's.
 */
#include "token.h"

#include <lauxlib.h>
#include <lua.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit.h"
#include "clock.h"
#include "cluster.h"
#include "clusterrate.h"
#include "config.h"
#include "courier.h"
#include "envelope.h"
#include "flight.h"
#include "gen.h"
#include "grantcache.h"
#include "ident.h"
#include "json.h"
#include "killswitch.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "policy.h"
#include "reply.h"
#include "reqbody.h"
#include "reqinfo.h"
#include "shadow.h"
#include "sharedcache.h"
#include "tokenwait.h"

/* The headers a policy may read (req.headers): how many, and their names' bytes. */
#define MAX_HEADERS 64
#define HEADER_BUF  8192

/* How long a browser may cache a preflight's answer (Access-Control-Max-Age). */
#define CORS_MAX_AGE_S "600"

/* A body past max_body_bytes is counted and dropped, and the connection is
 * closed once the client sent this many times the limit, and some more. */
#define DISCARD_FACTOR 4
#define DISCARD_SLACK  65536

struct header_set {
	struct policy_header h[MAX_HEADERS];
	size_t n;
	char buf[HEADER_BUF];
};

/* The loop's table of Courier calls that identical grants share. */

/* A loop's scratch for the decision (13 KiB, one request at a time on a
 * loop), and its flights (zeroed with the scratch). */
struct token_scratch {
	struct header_set hs;
	struct decision dec;
	struct flight *flights[FLIGHT_BUCKETS]; /* identical grants in flight (flight.c) */
};

static struct token_scratch *scratch_of(struct loop *lp)
{
	return loop_scratch(lp);
}

size_t token_scratch_size(void)
{
	return sizeof(struct token_scratch);
}

/* ------------------------------------------------------ reading a request */

/* policy_request.headers_of: the request's headers, gathered into its loop's
 * scratch set when (and only when) a policy reads req.headers. */
static const struct policy_header *request_headers(void *ctx, size_t *n)
{
	struct req *r = ctx;
	struct header_set *hs = &scratch_of(r->loop)->hs;

	hs->n = reqinfo_headers(r->conn, hs->h, MAX_HEADERS, hs->buf, sizeof(hs->buf));
	*n = hs->n;
	return hs->h;
}

/* ------------------------------------------------------------ the headers */

/* The tenant's configured origin equal to the request's Origin, or NULL. */
static const char *cors_match(const struct tenant *t, const char *origin)
{
	if (!origin)
		return NULL;
	for (size_t i = 0; i < t->n_cors_origins; i++)
		if (strcmp(t->cors_origins[i], origin) == 0)
			return t->cors_origins[i];
	return NULL;
}

/* A browser's CORS preflight for a token route. */
static enum MHD_Result preflight(struct req *r)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;

	if (!r->cors_origin)
		return reply_fail(r, REPLY_FORBIDDEN, "this origin may not ask for tokens", NULL, NULL);
	resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, "Access-Control-Allow-Origin", r->cors_origin);
	MHD_add_response_header(resp, "Access-Control-Allow-Methods", "POST");
	/* Tracing headers too (OpenTelemetry, W3C baggage, Sentry): SDKs add
	 * them to every fetch, and a preflight that refuses them fails the call. */
	MHD_add_response_header(resp, "Access-Control-Allow-Headers",
	                        "Authorization, Content-Type, traceparent, tracestate, baggage, "
	                        "sentry-trace, X-Request-Id");
	MHD_add_response_header(resp, "Access-Control-Max-Age", CORS_MAX_AGE_S);
	MHD_add_response_header(resp, "Vary", "Origin");
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	MHD_add_response_header(resp, "X-Request-Id", r->request_id);
	ret = MHD_queue_response(r->conn, MHD_HTTP_NO_CONTENT, resp);
	MHD_destroy_response(resp);
	metrics_request(r->tenant->name, 204);
	r->state = RS_DONE;
	return ret;
}

enum MHD_Result token_begin(struct loop *lp, struct MHD_Connection *conn, const char *name,
                            const char *method, const char *flaw, void **con_cls)
{
	struct http_server *s = loop_server(lp);
	struct req *r = malloc(sizeof(*r));
	const char *cl;
	char msg[160];

	if (!r)
		return MHD_NO;
	memset(r, 0, offsetof(struct req, grant));
	r->grant.scope[0] = '\0';
	r->grant.expires_s = 0;
	r->grant.capped = false;
	r->grant.courier_expires[0] = '\0';
	r->srv = s;
	r->loop = lp;
	r->conn = conn;
	r->state = RS_BODY;
	r->start = clock_now();
	reqinfo_peer_ip(conn, r->client_ip, sizeof(r->client_ip));
	reply_request_id(conn, r->request_id);
	reply_trace_id(conn, r->trace_id);
	*con_cls = r;
	loop_request_begin(s);
	metrics_inflight_add(1);

	r->gen = gen_acquire();
	if (flaw)
		return reply_fail(r, REPLY_INVALID_REQUEST, flaw, MHD_HTTP_HEADER_CONNECTION, "close");
	if (loop_draining(s) || !r->gen)
		return reply_fail(r, REPLY_UNAVAILABLE, "the broker is not serving", "Retry-After", "1");
	buf_init(&r->body, r->gen->cfg->max_body_bytes);
	r->tenant = config_tenant(r->gen->cfg, name);
	if (!r->tenant)
		return reply_fail(r, REPLY_UNKNOWN_TENANT, "no such tenant", NULL, NULL);
	r->origin = reqinfo_header(conn, "Origin");
	r->cors_origin = cors_match(r->tenant, r->origin);
	if (strcmp(method, MHD_HTTP_METHOD_OPTIONS) == 0)
		return preflight(r);
	if (strcmp(method, MHD_HTTP_METHOD_POST) != 0)
		return reply_fail(r, REPLY_METHOD_NOT_ALLOWED, "use POST", MHD_HTTP_HEADER_ALLOW, "POST");
	if (!reqinfo_is_json(reqinfo_header(conn, MHD_HTTP_HEADER_CONTENT_TYPE)))
		return reply_fail(r, REPLY_UNSUPPORTED_MEDIA_TYPE, "the body must be application/json", NULL,
		                  NULL);
	cl = reqinfo_header(conn, MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (cl) {
		char *end;
		unsigned long long n = strtoull(cl, &end, 10);
		if (end == cl || *end || n > r->gen->cfg->max_body_bytes) {
			snprintf(msg, sizeof(msg), "the body is limited to %zu bytes",
			         r->gen->cfg->max_body_bytes);
			return reply_fail(r, REPLY_PAYLOAD_TOO_LARGE, msg, MHD_HTTP_HEADER_CONNECTION,
			                  "close");
		}
	}
	/* The request is decided by the generation it began on: its engine is
	 * pinned now, whatever reloads happen while the body arrives. */
	r->engine = gen_engine_pin(loop_engines(lp), r->gen);
	if (!r->engine)
		return reply_fail(r, REPLY_UNAVAILABLE, "the policy engine is not available", NULL, NULL);
	return MHD_YES;
}

/* ---------------------------------------------------------- Courier call */

static void on_courier_done(struct courier_job *job)
{
	struct req *r = job->arg;

	/* With token_cache the flight lands once the token is in the cache
	 * (complete): an identical grant arriving in between follows it rather
	 * than finding neither and calling Courier again. */
	if (r->flight && !r->tenant->token_cache)
		flight_land(scratch_of(r->loop)->flights, r);

	/* Runs on the request's loop: count the call as over (whether or not the
	 * client is still there to read the answer) and hand the connection back;
	 * the loop runs MHD before it waits again. */
	loop_upstream_end(r->srv);
	metrics_upstream(job->seconds, job->status);
	MHD_resume_connection(r->conn);
	loop_resumed(r->loop);
}

/* ------------------------------------------------------------ the stages */

/* The two stages a request waiting on Redis goes on from (tokenwait.c). */
static stage_fn stage_rate, stage_upstream;
static stage_runner run_stages;

/* The body: a JSON object with a valid user_id. */
static enum reply_answer stage_body(struct req *r, struct pipeline *p)
{
	size_t uid_len;
	const char *uid;

	if (json_decode(p->L, r->body.data ? r->body.data : "", r->body.len) != 0 ||
	    lua_type(p->L, -1) != LUA_TTABLE) {
		p->msg = "the body must be a JSON object";
		return REPLY_INVALID_REQUEST;
	}
	p->body = lua_gettop(p->L);
	if (reqbody_check(p->L, p->body, &uid, &uid_len, &p->msg) != 0)
		return REPLY_INVALID_REQUEST;
	memcpy(r->user_id, uid, uid_len + 1);
	return REPLY_GO;
}

/* Who asks: the client's address (through trusted proxies) and its credential. */
static enum reply_answer stage_identity(struct req *r, struct pipeline *p)
{
	const struct tenant *t = r->tenant;

	memset(&p->irq, 0, sizeof(p->irq));
	p->irq.authorization = reqinfo_header(r->conn, MHD_HTTP_HEADER_AUTHORIZATION);
	p->irq.peer_ip = r->client_ip;
	p->irq.now = (long long)time(NULL);
	p->irq.header = reqinfo_nth_header;
	p->irq.header_ctx = r->conn;
	if (ident_client_ip(&t->auth, &p->irq, p->client_ip, sizeof(p->client_ip)) != 0) {
		p->msg = "too many X-Forwarded-For header lines";
		return REPLY_INVALID_REQUEST;
	}
	if (ident_authenticate(p->L, &t->auth, &p->irq, &p->id, p->err, sizeof(p->err)) != 0) {
		snprintf(r->reason, sizeof(r->reason), "%.*s", (int)sizeof(r->reason) - 1, p->err);
		p->msg = "missing or invalid credential";
		return REPLY_UNAUTHENTICATED;
	}
	r->method = p->id.method;
	snprintf(r->subject, sizeof(r->subject), "%s", p->id.subject);
	return REPLY_GO;
}

static void audit_inputs_of(struct req *r, struct pipeline *p);

/* The kill switch, before the policy: a disabled tenant, a denied user.
 * After authentication, so a stranger cannot learn who is denied. Its
 * refusal is audited with the request as the policy would have seen it. */
static enum reply_answer stage_killswitch(struct req *r, struct pipeline *p)
{
	enum killswitch_verdict v = killswitch_check(r->tenant, r->user_id);

	if (v == KILLSWITCH_PASS)
		return REPLY_GO;
	r->decision = "deny";
	audit_inputs_of(r, p);
	snprintf(r->reason, sizeof(r->reason), "kill switch: %s", killswitch_code(v));
	metrics_killswitch(r->tenant->name, killswitch_code(v));
	if (v == KILLSWITCH_TENANT_DISABLED) {
		p->msg = "this tenant is disabled; no token was issued";
		return REPLY_TENANT_DISABLED;
	}
	p->msg = "this user may not get tokens; no token was issued";
	return REPLY_USER_DENIED;
}

/* Charged after authentication, so strangers cannot spend a tenant's
 * budget. The requester is its subject, or its address when it has none.
 * With cluster the limits are the cluster's (Redis, or tokens this loop
 * leased from it), else, or while Redis is unavailable, this broker's own
 * buckets. */
static enum reply_answer stage_rate(struct req *r, struct pipeline *p)
{
	char who[300];
	double retry = 1;
	int n = p->id.subject[0] ? snprintf(who, sizeof(who), "%s:%s", p->id.method, p->id.subject)
	                         : snprintf(who, sizeof(who), "ip:%s", p->client_ip);
	struct stage_wait *w = r->wait;
	enum gen_rate_level lv;
	int asked = 1;

	if (n < 0 || (size_t)n >= sizeof(who))
		n = (int)strlen(who);
	if (!w && (asked = tokenwait_rate(r, p, who, (size_t)n, stage_rate, run_stages)) == 0)
		return REPLY_GO; /* suspended: on_rate_reply resumes it */
	if (asked == 2) {
		metrics_cluster_rate_lease(); /* a token of each limit leased on this loop */
		lv = GEN_RATE_OK;
	} else if (w && w->answered) {
		metrics_cluster_rate(true);
		lv = w->level == CLUSTERRATE_OK          ? GEN_RATE_OK
		     : w->level == CLUSTERRATE_REQUESTER ? GEN_RATE_REQUESTER
		                                         : GEN_RATE_TENANT;
		retry = w->retry;
	} else {
		if (w || asked < 0)
			metrics_cluster_rate(false); /* Redis unavailable, or late */
		lv = gen_rate_take(r->gen, r->tenant, who, (size_t)n, &retry);
	}

	if (lv == GEN_RATE_OK)
		return REPLY_GO;
	metrics_rate_limited(lv == GEN_RATE_REQUESTER);
	snprintf(p->retry_after, sizeof(p->retry_after), "%.0f", retry < 1 ? 1 : retry);
	p->msg = lv == GEN_RATE_REQUESTER ? "too many token requests from this requester"
	                                  : "too many token requests for this tenant";
	p->extra_name = "Retry-After";
	p->extra_value = p->retry_after;
	return REPLY_RATE_LIMITED;
}

/* The JSON of the value at idx on L, malloc'ed, without cjson's `\/`
 * escapes (a `\` always starts a two-character escape, so dropping the one
 * before `/` keeps the same JSON text); NULL when it cannot be encoded. */
static char *audit_json(lua_State *L, int idx)
{
	size_t len, o = 0;
	const char *j = json_encode(L, idx, &len);
	char *out = j ? malloc(len + 1) : NULL;

	for (size_t i = 0; out && i < len; i++) {
		if (j[i] == '\\' && i + 1 < len) {
			if (j[i + 1] != '/')
				out[o++] = j[i];
			out[o++] = j[++i];
			continue;
		}
		out[o++] = j[i];
	}
	if (out)
		out[o] = '\0';
	if (j)
		lua_pop(L, 1);
	return out;
}

/* What the audit log records of the request the policy sees. */
static void audit_inputs_of(struct req *r, struct pipeline *p)
{
	r->authenticated = p->id.authenticated;
	r->now = p->irq.now;
	snprintf(r->policy_ip, sizeof(r->policy_ip), "%s", p->client_ip);
	if (!audit_enabled() || !audit_inputs())
		return;
	r->audit_body = audit_json(p->L, p->body);
	if (p->id.claims_idx)
		r->audit_claims = audit_json(p->L, p->id.claims_idx);
}

/* With a shadow_policy: a copy of what the live policy sees, for the
 * shadow thread (shadow.h); queued by process once the live answer is. */
static void shadow_of(struct req *r, struct pipeline *p, const struct policy_request *prq)
{
	const struct tenant *t = r->tenant;
	struct shadow_input in;

	if (!t->shadow_path || !r->gen->cfg->shadow || t->shadow_index < 0)
		return;
	memset(&in, 0, sizeof(in));
	in.request_id = r->request_id;
	in.user_id = r->user_id;
	in.body_json = r->audit_body ? strdup(r->audit_body) : audit_json(p->L, p->body);
	in.claims_json = !p->id.claims_idx ? NULL
	                 : r->audit_claims ? strdup(r->audit_claims)
	                                   : audit_json(p->L, p->id.claims_idx);
	in.authenticated = prq->authenticated;
	in.method = prq->method;
	in.subject = prq->subject;
	in.client_ip = prq->client_ip;
	in.origin = prq->origin;
	in.user_agent = prq->user_agent;
	in.headers = request_headers(r, &in.n_headers);
	in.now = prq->now;
	p->shadow = shadow_capture(r->gen, (size_t)(t - r->gen->cfg->tenants), &in);
}

/* The cluster's shared deny list (`courier-broker deny`): a snapshot in
 * memory, never a call to Redis; the policy does not run for such a user. */
static enum reply_answer stage_cluster_deny(struct req *r, struct pipeline *p)
{
	if (!cluster_denied(r->tenant->name, r->user_id))
		return REPLY_GO;
	r->decision = "deny"; /* audited and counted as the kill switch's are */
	audit_inputs_of(r, p);
	metrics_cluster_denied();
	snprintf(r->reason, sizeof(r->reason), "%s", "on the cluster's deny list");
	p->msg = "this user may not get tokens (cluster deny list)";
	return REPLY_USER_DENIED;
}

/* The policy frames that led to the decision's `return`, "file:line\n"
 * lines (the engine's lasts one decision), or NULL. */
static char *audit_decided_by(struct policy_engine *e)
{
	char text[POLICY_CHAIN_MAX * 300];

	return policy_origin_text(e, text, sizeof(text)) ? strdup(text) : NULL;
}

/* The tenant's policy decides, on the engine pinned by token_begin. */
static enum reply_answer stage_decide(struct req *r, struct pipeline *p)
{
	const struct tenant *t = r->tenant;
	struct policy_request prq;
	int decided;

	/* dec is initialised by policy_decide: no need to zero 13 KiB per request. */
	memset(&prq, 0, sizeof(prq));
	prq.tenant = t;
	prq.user_id = r->user_id;
	prq.body_idx = p->body;
	prq.authenticated = p->id.authenticated;
	prq.method = p->id.method;
	prq.subject = p->id.subject;
	prq.claims_idx = p->id.claims_idx;
	prq.client_ip = p->client_ip;
	prq.origin = r->origin;
	prq.user_agent = reqinfo_header(r->conn, MHD_HTTP_HEADER_USER_AGENT);
	prq.headers_of = request_headers;
	prq.headers_ctx = r;
	prq.now = p->irq.now;
	audit_inputs_of(r, p);

	shadow_of(r, p, &prq);
	/* The audit line names the return that decided (a return hook while
	 * deciding: paid only with an audit log). */
	policy_engine_explain(p->e, audit_enabled());
	decided = policy_decide(p->e, &prq, p->dec, p->err, sizeof(p->err));
	if (policy_decision_log(p->e)[0])
		r->policy_log = strdup(policy_decision_log(p->e)); /* the engine's copy lasts one decision */
	r->decided_by = audit_decided_by(p->e);
	if (decided != 0) {
		r->decision = "error";
		snprintf(r->reason, sizeof(r->reason), "%.*s", (int)sizeof(r->reason) - 1, p->err);
		log_msg("error", "tenant %s: policy error: %s", t->name, p->err);
		p->msg = "the policy failed; no token was issued";
		return REPLY_POLICY_ERROR;
	}
	snprintf(r->reason, sizeof(r->reason), "%s", p->dec->reason);
	if (!p->dec->allow) {
		r->decision = "deny";
		p->msg = p->dec->reason[0] ? p->dec->reason : "denied by policy";
		return REPLY_FORBIDDEN;
	}
	return REPLY_GO;
}

/* The tenant's ceiling on what the policy granted. */
static enum reply_answer stage_envelope(struct req *r, struct pipeline *p)
{
	if (envelope_apply(r->tenant, r->user_id, p->dec, &r->grant, p->err, sizeof(p->err)) != 0) {
		r->decision = "error";
		r->grant.scope[0] = '\0';
		snprintf(r->reason, sizeof(r->reason), "%.*s", (int)sizeof(r->reason) - 1, p->err);
		log_msg("error", "tenant %s: decision outside the envelope: %s", r->tenant->name, p->err);
		p->msg = "the policy's decision was refused; no token was issued";
		return REPLY_POLICY_ERROR;
	}
	r->decision = "allow";
	return REPLY_GO;
}

/* The 200 answer for the token on top of L (tlen bytes, expiring at exp,
 * expires_in seconds from now); L back at top either way. */
static enum MHD_Result answer_token(struct req *r, lua_State *L, int top, size_t tlen, long long exp,
                                    long long expires_in, double up_ms)
{
	const char *json, *token = lua_tostring(L, -1);
	enum MHD_Result ret;
	char when[40];
	size_t jlen;
	time_t te = (time_t)exp;
	struct tm tm;

	gmtime_r(&te, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	lua_createtable(L, 0, 5);
	lua_pushvalue(L, -2);
	lua_setfield(L, -2, "token");
	lua_pushstring(L, r->user_id);
	lua_setfield(L, -2, "user_id");
	lua_pushstring(L, r->grant.scope);
	lua_setfield(L, -2, "scope");
	lua_pushinteger(L, expires_in);
	lua_setfield(L, -2, "expires_in");
	lua_pushstring(L, when);
	lua_setfield(L, -2, "expires_at");
	json = json_encode(L, -1, &jlen);
	if (!json) {
		lua_settop(L, top);
		return reply_fail(r, REPLY_UNAVAILABLE, "out of memory", NULL, NULL);
	}
	ret = reply_queue_req(r, 200, "application/json", json, jlen, NULL, NULL);
	reply_log(r, 200, NULL, token, tlen, up_ms);
	r->state = RS_DONE;
	lua_settop(L, top);
	return ret;
}

/* With token_cache: answers with the tenant's cached token for this grant
 * when at least half its lifetime remains. Its expires_in is what really
 * remains. Returns whether it answered. */
static bool answer_cached(struct req *r, struct pipeline *p)
{
	lua_State *L = loop_json(r->loop);
	char token[GRANTCACHE_TOKEN_MAX + 1];
	struct timespec ts;
	long long exp;
	size_t len;
	double now;

	clock_gettime(CLOCK_REALTIME, &ts);
	now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
	if (grantcache_get(&r->gkey, now, token, sizeof(token), &len, &exp) != 0)
		return false; /* a miss is counted once the shared cache missed too */
	metrics_grant(METRICS_CACHE_HIT);
	lua_pushlstring(L, token, len);
	OPENSSL_cleanse(token, len);
	p->answer = answer_token(r, L, lua_gettop(L) - 1, len, exp, exp - (long long)ts.tv_sec, 0);
	p->answered = true;
	return true;
}

/* Hands the grant to the loop's Courier client and suspends the connection
 * until the call ends (on_courier_done), unless the token cache answers or an
 * identical grant's call is already under way on this loop (then it waits for
 * that one). */
static enum reply_answer stage_upstream(struct req *r, struct pipeline *p)
{
	lua_State *J = loop_json(r->loop);
	const struct tenant *t = r->tenant;
	struct flight *f;
	const char *b;
	size_t blen;
	int rc;

	if (p->in_reply && t->token_cache) {
		/* The caches answer from the handler (answer_token queues). */
		p->handoff = true;
		return REPLY_GO;
	}
	grantcache_key(&r->gkey, t->name, r->gen->courier_url, &t->api_key, t->policy_revision,
	               r->grant.scope, r->grant.expires_s);
	if (t->token_cache && answer_cached(r, p))
		return REPLY_GO;
	if ((f = flight_find(scratch_of(r->loop)->flights, &r->gkey))) {
		/* An identical grant's call is under way: no need to ask Redis. */
		if (t->token_cache)
			metrics_grant(METRICS_CACHE_MISS);
		flight_follow(f, r);
		r->state = RS_WAITING;
		metrics_grant(METRICS_FLIGHT_SHARED);
		if (!p->in_reply)
			MHD_suspend_connection(r->conn);
		return REPLY_GO;
	}

	if (t->token_cache && tokenwait_cache_ask(r, p, stage_upstream) == 0)
		return REPLY_GO; /* suspended: on_cache_reply resumes it */
	if (t->token_cache)
		metrics_grant(METRICS_CACHE_MISS);
	p->msg = "out of memory";
	if (loop_upstream_count(r->srv) >= r->gen->cfg->max_inflight) {
		p->msg = "too many requests waiting on Courier";
		p->extra_name = "Retry-After";
		p->extra_value = "1";
		return REPLY_UNAVAILABLE;
	}
	b = courier_request_body(J, &r->grant, &blen);
	if (!b || !(r->courier_body = malloc(blen + 1))) {
		if (b)
			lua_pop(J, 1);
		return REPLY_UNAVAILABLE;
	}
	memcpy(r->courier_body, b, blen + 1);
	lua_pop(J, 1);

	r->job.url = gen_courier_url(r->gen, r->tenant);
	r->job.ca_file = r->gen->cfg->courier_ca_file;
	r->job.trust = r->gen->cfg->courier_trust;
	r->job.api_key = &r->tenant->api_key;
	r->job.body = r->courier_body;
	r->job.body_len = blen;
	r->job.timeout_ms = r->gen->cfg->courier_timeout_ms;
	r->job.connect_timeout_ms = r->gen->cfg->courier_connect_timeout_ms;
	r->job.retries = r->gen->cfg->courier_retries;
	r->job.retry_budget_percent = r->gen->cfg->courier_retry_budget_percent;
	r->job.breaker_failures = r->gen->cfg->courier_breaker_failures;
	r->job.breaker_cooldown_ms = r->gen->cfg->courier_breaker_cooldown_ms;
	r->job.done = on_courier_done;
	r->job.arg = r;

	if (loop_upstream_begin(r->srv) != 0) {
		p->msg = "shutting down";
		return REPLY_UNAVAILABLE;
	}
	/* The job cannot end before this handler returns (it ends only in
	 * courier_run, on this loop), so the order of the two is free. */
	rc = courier_submit(loop_courier(r->loop), &r->job);
	if (rc == COURIER_PAUSED) {
		loop_upstream_end(r->srv);
		snprintf(p->retry_after, sizeof(p->retry_after), "%ld", r->job.retry_after_s);
		p->msg = "Courier has failed repeatedly: calls are paused";
		p->extra_name = "Retry-After";
		p->extra_value = p->retry_after;
		return REPLY_UPSTREAM_UNAVAILABLE;
	}
	if (rc != 0) {
		loop_upstream_end(r->srv);
		return REPLY_UNAVAILABLE;
	}
	flight_lead(scratch_of(r->loop)->flights, r);
	r->state = RS_WAITING;
	if (!p->in_reply)
		MHD_suspend_connection(r->conn);
	return REPLY_GO;
}

static stage_fn *const stages[] = {
    stage_body, stage_identity, stage_killswitch, stage_cluster_deny,
    stage_rate, stage_decide,   stage_envelope,   stage_upstream,
};

/* The stages from `from` on; L back at top either way. The engine is
 * unpinned once decided, or kept for a request that suspended itself. */
static enum MHD_Result run_stages(struct req *r, struct pipeline *p, stage_fn *first, int top)
{
	enum reply_answer a = REPLY_GO;
	enum MHD_Result ret;
	size_t from = 0;

	while (first && from < sizeof(stages) / sizeof(stages[0]) && stages[from] != first)
		from++;

	p->suspended = p->handoff = false;
	for (size_t i = from;
	     a == REPLY_GO && !p->suspended && !p->handoff && i < sizeof(stages) / sizeof(stages[0]); i++)
		a = stages[i](r, p);
	if (p->suspended || p->handoff) {
		bool in_reply = p->in_reply, handoff = p->handoff;
		if (handoff)
			r->wait->resume_at = stage_upstream;
		p->in_reply = p->handoff = false;
		r->wait->p = *p;
		lua_settop(p->L, top);
		r->state = RS_REDIS;
		if (!in_reply) {
			MHD_suspend_connection(r->conn);
		} else if (handoff) { /* the handler goes on (resume_wait) */
			MHD_resume_connection(r->conn);
			loop_resumed(r->loop);
		}
		return MHD_YES;
	}
	if (p->in_reply && a != REPLY_GO) {
		/* Answered by the handler, which only it may do (resume_wait). */
		struct stage_wait *w = r->wait;
		w->has_final = true;
		w->final = a;
		w->final_has_msg = p->msg != NULL;
		snprintf(w->final_msg, sizeof(w->final_msg), "%s", p->msg ? p->msg : "");
		w->final_name = p->extra_name;
		snprintf(w->final_value, sizeof(w->final_value), "%s", p->extra_value ? p->extra_value : "");
		r->state = RS_REDIS;
		MHD_resume_connection(r->conn);
		loop_resumed(r->loop);
		ret = MHD_YES;
	} else {
		ret = a != REPLY_GO ? reply_fail(r, a, p->msg, p->extra_name, p->extra_value)
		      : p->answered ? p->answer
		                    : MHD_YES;
	}
	if (p->shadow) /* after the live answer: the shadow never delays it */
		shadow_submit(p->shadow, r->decision, r->grant.scope, r->grant.expires_s);
	p->shadow = NULL;
	lua_settop(p->L, top);
	gen_engine_unpin(loop_engines(r->loop), r->engine);
	r->engine = NULL;
	return ret;
}

/* The body has arrived: the stages in order, on the generation's engine
 * (pinned by token_begin, unpinned by run_stages once decided). */
static enum MHD_Result process(struct req *r)
{
	struct policy_engine *e = r->engine ? r->engine->engine : NULL;
	struct pipeline p;

	if (!e)
		return reply_fail(r, REPLY_UNAVAILABLE, "the policy engine is not available", NULL, NULL);
	p.e = e;
	p.L = policy_engine_lua(e);
	p.dec = &scratch_of(r->loop)->dec;
	p.msg = p.extra_name = p.extra_value = NULL;
	p.answered = false;
	p.shadow = NULL;
	p.in_reply = p.handoff = false;
	return run_stages(r, &p, NULL, lua_gettop(p.L));
}

/* Redis answered (or did not in time): the request's body and claims back
 * on the engine's stack, and on from the stage that asked. */
static enum MHD_Result resume_wait(struct req *r)
{
	struct stage_wait *w = r->wait;
	struct pipeline p = w->p;
	int top = lua_gettop(p.L);

	r->state = RS_BODY;
	if (w->has_final) {
		w->has_final = false;
		return reply_fail(r, w->final, w->final_has_msg ? w->final_msg : NULL, w->final_name,
		                  w->final_name ? w->final_value : NULL);
	}
	if (tokenwait_restore(r, w, &p) != 0)
		return reply_fail(r, REPLY_UNAVAILABLE, "out of memory", NULL, NULL);
	return run_stages(r, &p, w->resume_at, top);
}

/* ------------------------------------------------------------ the answer */

/* What Courier's call came to: REPLY_GO for an HTTP 200, else the answer
 * (and *msg), logged. */
static enum reply_answer courier_outcome(struct req *r, const char **msg)
{
	const struct courier_job *job = &r->job;

	if (job->status == 0) {
		log_msg("warn", "tenant %s: Courier call failed after %u attempt(s): %s", r->tenant->name,
		        job->attempts, job->error);
		if (job->timed_out) {
			*msg = "Courier did not answer in time";
			return REPLY_UPSTREAM_TIMEOUT;
		}
		if (job->aborted) {
			*msg = "shutting down";
			return REPLY_UNAVAILABLE;
		}
		*msg = "Courier could not be reached";
		return REPLY_UPSTREAM_ERROR;
	}
	if (job->status == 401 || job->status == 403) {
		log_msg("error",
		        "tenant %s: Courier refused the API key (HTTP %ld) with fingerprint %s: check the "
		        "key and its environment",
		        r->tenant->name, job->status, r->tenant->api_key.fingerprint);
		*msg = "Courier refused the broker's credentials";
		return REPLY_UPSTREAM_ERROR;
	}
	if (job->status != 200) {
		log_msg("warn", "tenant %s: Courier answered HTTP %ld (attempt %u)", r->tenant->name,
		        job->status, job->attempts);
		*msg = "Courier refused the call";
		return REPLY_UPSTREAM_ERROR;
	}
	return REPLY_GO;
}

/* Courier's token (pushed on L, *len bytes) expiring at *exp, which must
 * match the grant; NULL (logged, L back at top) when unusable. */
static const char *courier_token(struct req *r, lua_State *L, int top, size_t *len, long long *exp)
{
	const struct courier_job *job = &r->job;
	const char *token = courier_read_token(L, job->resp, job->resp_len, len, exp);
	char why[160];

	if (!token) {
		log_msg("warn", "tenant %s: Courier answered 200 without a usable token", r->tenant->name);
		return NULL;
	}
	if (courier_check_expiry(*exp, (long long)time(NULL), r->grant.expires_s, why, sizeof(why)) != 0) {
		log_msg("warn", "tenant %s: Courier's token does not match the grant: %s", r->tenant->name,
		        why);
		lua_settop(L, top);
		return NULL;
	}
	return token;
}

/* Answers after Courier (or the timeout) is done; with token_cache the
 * leader keeps the token for identical grants. */
static enum MHD_Result complete(struct req *r)
{
	lua_State *L = loop_json(r->loop);
	const char *msg, *token;
	enum reply_answer a;
	size_t tlen;
	long long exp;
	int top = lua_gettop(L);

	if ((a = courier_outcome(r, &msg)) != REPLY_GO) {
		if (r->flight) {
			flight_land(scratch_of(r->loop)->flights, r);
			loop_resumed(r->loop);
		}
		return reply_fail(r, a, msg, NULL, NULL);
	}
	token = courier_token(r, L, top, &tlen, &exp);
	if (!token) {
		if (r->flight) {
			flight_land(scratch_of(r->loop)->flights, r);
			loop_resumed(r->loop);
		}
		return reply_fail(r, REPLY_UPSTREAM_ERROR, "Courier answered something unusable", NULL, NULL);
	}
	if (r->tenant->token_cache && !r->shared) {
		grantcache_put(&r->gkey, r->tenant->name, token, tlen, exp, r->grant.expires_s);
		tokenwait_cache_put(r, token, tlen, exp);
	}
	if (r->flight) { /* token_cache: its followers resumed now (on_courier_done) */
		flight_land(scratch_of(r->loop)->flights, r);
		loop_resumed(r->loop);
	}
	return answer_token(r, L, top, tlen, exp, r->grant.expires_s, r->job.seconds * 1e3);
}

/* ------------------------------------------------- the body, and the end */

/* A piece of the body: kept up to max_body_bytes, counted and dropped past it. */
static enum MHD_Result take_body(struct req *r, const char *data, size_t n)
{
	size_t max = r->gen->cfg->max_body_bytes;

	if (r->too_large || r->body.len + n > max) {
		/* MHD cannot answer mid-upload: count what arrives, answer 413 at
		 * its end, and close the connection once a client sends far more. */
		r->too_large = true;
		r->discarded += n;
		return r->discarded > DISCARD_FACTOR * max + DISCARD_SLACK ? MHD_NO : MHD_YES;
	}
	return buf_add(&r->body, data, n) == 0 ? MHD_YES : MHD_NO;
}

enum MHD_Result token_continue(struct req *r, const char *upload_data, size_t *upload_data_size)
{
	switch (r->state) {
	case RS_DONE:
		/* Answered early; discard whatever body still arrives. */
		*upload_data_size = 0;
		return MHD_YES;
	case RS_WAITING:
		return complete(r);
	case RS_REDIS:
		return resume_wait(r);
	case RS_BODY:
		break;
	}
	if (*upload_data_size) {
		size_t n = *upload_data_size;
		*upload_data_size = 0;
		return take_body(r, upload_data, n);
	}
	if (r->too_large) {
		char msg[96];
		snprintf(msg, sizeof(msg), "the body is limited to %zu bytes", r->gen->cfg->max_body_bytes);
		return reply_fail(r, REPLY_PAYLOAD_TOO_LARGE, msg, MHD_HTTP_HEADER_CONNECTION, "close");
	}
	return process(r);
}

void token_end(struct req *r)
{
	struct http_server *s = r->srv;

	if (r->state != RS_DONE) {
		/* The client left before an answer (never while suspended: MHD does not
		 * notice, and every suspended request ends with Courier's call). */
		metrics_request(r->tenant ? r->tenant->name : NULL, 499);
	}
	gen_engine_unpin(loop_engines(r->loop), r->engine); /* never decided */
	if (r->flight) { /* a leader whose client left before complete: never strand followers */
		flight_land(scratch_of(r->loop)->flights, r);
		loop_resumed(r->loop);
	}
	if (r->wait && r->engine)
		tokenwait_forget(policy_engine_lua(r->engine->engine), r->wait);
	free(r->wait);
	courier_job_cleanup(&r->job);
	free(r->courier_body);
	free(r->policy_log);
	free(r->decided_by);
	free(r->audit_body);
	free(r->audit_claims);
	buf_free(&r->body);
	gen_release(r->gen);
	free(r);
	loop_request_end(s);
	metrics_inflight_add(-1);
}
