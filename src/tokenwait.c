/*
 * tokenwait.c — a token request waiting on the cluster's Redis.
 *
 * Owns the two waits of the pipeline (token.c) on the loop's Redis
 * connection (redisloop.c): the cluster's rate limits (a token of each from
 * the loop's leases, ratelease.c, else one script call for the limits that
 * lack one, sent whole when Redis lost it) and the cluster's token cache (one GET, a SET
 * that nobody waits for). A waiting request is suspended; its body and
 * claims are kept in the engine's registry meanwhile (the stack is the next
 * request's), and Redis's answer resumes it at the stage that asked: a
 * request Redis's rate limits let through goes on inside the reply
 * (token.c's runner, lent through tokenwait_rate), the connection still suspended, and an answer the
 * handler must give is recorded for it. It must
 * never decide anything (token.c's stages do, with what it recorded), never
 * wait on Redis past the loop's deadline, and never keep a token it opened
 * (copied into the local cache, then zeroed).
 */
#include "tokenwait.h"

#include <hiredis/hiredis.h>
#include <lauxlib.h>
#include <lua.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "config.h"
#include "gen.h"
#include "grantcache.h"
#include "log.h"
#include "loop.h"
#include "redisloop.h"
#include "reply.h"
#include "sharedcache.h"

/* ------------------------------------------------------ the rate limits */

static void continue_in_reply(struct stage_wait *w);

/* The request's holds on the loop's leases once Redis answered: the tokens
 * granted fill the leases (the request takes one of each), or, when the
 * request was not let through, the tokens it held go back. */
static void settle_leases(struct stage_wait *w, bool let_through, const unsigned grants[2])
{
	struct ratelease *t = loop_leases(w->r->loop);

	uint64_t now = clock_ms();

	for (int i = 0; i < w->keys.n; i++) {
		if (let_through)
			ratelease_granted(t, &w->lease[i], grants[i] ? grants[i] - 1 : 0, w->sent_ms, now);
		else
			ratelease_release(t, &w->lease[i], now);
	}
}

/* A call that asks for a key's next lease ahead, nobody waiting on it. */
struct prefetch {
	struct ratelease *t; /* the loop's: freed after its connection's callbacks ran */
	struct ratelease_ref ref;
	uint64_t sent_ms;
	unsigned wait_ms;
	struct rloop *rl;
	struct clusterrate_cmd cmd;
	bool eval_sent;
};

static void on_prefetch_reply(const struct redisReply *reply, void *arg)
{
	struct prefetch *f = arg;
	enum clusterrate_level level;
	unsigned grants[2] = {0, 0};
	double retry;
	int rc = clusterrate_verdict(&f->cmd, reply, &level, &retry, grants);

	if (rc == 1 && !f->eval_sent) {
		f->eval_sent = true;
		clusterrate_as_eval(&f->cmd);
		if (rloop_command(f->rl, f->cmd.argc, f->cmd.argv, f->cmd.len, f->wait_ms, on_prefetch_reply,
		                  f) == 0)
			return;
	}
	if (rc == 0 && level == CLUSTERRATE_OK)
		ratelease_granted(f->t, &f->ref, grants[f->cmd.which[0]], f->sent_ms, clock_ms());
	else
		ratelease_release(f->t, &f->ref, clock_ms());
	free(f);
}

/* Asks for key i's next lease (ask tokens) ahead; ref is the request's
 * hold, which keeps its token and gives the filling to the call. */
static void prefetch(struct rloop *rl, unsigned wait_ms, struct ratelease *t,
                     const struct clusterrate_keys *k, int i, unsigned ask, struct ratelease_ref *ref,
                     uint64_t now)
{
	unsigned asks[2] = {0, 0};
	struct prefetch *f = calloc(1, sizeof(*f));

	if (f) {
		f->t = t;
		f->ref = *ref;
		f->ref.held = false;
		f->sent_ms = now;
		f->wait_ms = wait_ms;
		f->rl = rl;
		asks[i] = ask;
	}
	ref->filling = false;
	if (f && clusterrate_command_for(&f->cmd, false, k, asks) == 0 &&
	    rloop_command(rl, f->cmd.argc, f->cmd.argv, f->cmd.len, wait_ms, on_prefetch_reply, f) == 0)
		return;
	if (f)
		ratelease_release(t, &f->ref, now);
	else
		ratelease_release(
		    t, &(struct ratelease_ref){.slot = ref->slot, .stamp = ref->stamp, .filling = true}, now);
	free(f);
}

/* Redis answered (or not: reply NULL): the request goes on where it stopped. */
static void on_rate_reply(const struct redisReply *reply, void *arg)
{
	struct stage_wait *w = arg;
	struct req *r = w->r;
	const char *prefix;
	unsigned wait_ms, grants[2] = {0, 0};
	struct rloop *rl = loop_redis(r->loop, &prefix, &wait_ms);
	int rc = clusterrate_verdict(&w->cmd, reply, &w->level, &w->retry, grants);

	(void)prefix;
	if (rc == 1 && !w->eval_sent) {
		/* Redis lost the script (SCRIPT FLUSH, a failover): send it whole. */
		w->eval_sent = true;
		clusterrate_as_eval(&w->cmd);
		if (rloop_command(rl, w->cmd.argc, w->cmd.argv, w->cmd.len, wait_ms, on_rate_reply, w) == 0)
			return;
	}
	w->answered = rc == 0;
	settle_leases(w, rc == 0 && w->level == CLUSTERRATE_OK, grants);
	if (rc != 0 && reply)
		log_warn_limited(
		    "cluster: Redis's rate-limit answer is unusable: deciding with local buckets");
	loop_upstream_end(r->srv);
	if (rc == 0) {
		/* The pipeline goes on here, the connection still suspended: a
		 * request that goes on to Courier is suspended and resumed once. */
		continue_in_reply(w);
		return;
	}
	MHD_resume_connection(r->conn);
	loop_resumed(r->loop);
}

/* Keeps a value of the engine's stack in its registry (protected: an
 * allocation failure is an error, not a panic). */
static int keep_values(lua_State *L)
{
	struct stage_wait *w = lua_touserdata(L, 1);

	lua_settop(L, 3);
	if (lua_isnil(L, 3))
		lua_pop(L, 1);
	else
		w->claims_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	w->body_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	return 0;
}

void tokenwait_forget(lua_State *L, struct stage_wait *w)
{
	luaL_unref(L, LUA_REGISTRYINDEX, w->body_ref);
	luaL_unref(L, LUA_REGISTRYINDEX, w->claims_ref);
	w->body_ref = w->claims_ref = LUA_NOREF;
}

/* With cluster: a token of each limit from this loop's leases, no call (2);
 * else asks Redis to charge the limits the leases lack in one script call
 * and suspends the request until it answers (on_rate_reply): 0. 1: no
 * cluster or no limit; -1: not asked (Redis not connected, shutting down,
 * out of memory): the local buckets decide either way. */
int tokenwait_rate(struct req *r, struct pipeline *p, const char *who, size_t len, stage_fn *resume_at,
                   stage_runner *run)
{
	const struct rate_limit *rl_conf = &r->tenant->rate_limit;
	struct clusterrate_limits lim = {rl_conf->per_second, rl_conf->burst,
	                                 rl_conf->per_requester.per_second, rl_conf->per_requester.burst};
	struct ratelease *leases = loop_leases(r->loop);
	struct ratelease_ref lease[2] = {{.slot = -1}, {.slot = -1}};
	unsigned ask[2] = {1, 1};
	struct clusterrate_keys keys;
	struct stage_wait *w = NULL;
	struct rloop *rl;
	const char *prefix;
	unsigned wait_ms;
	uint64_t now;
	int held = 0;

	if (!(rl = loop_redis(r->loop, &prefix, &wait_ms)) ||
	    (lim.per_second <= 0 && lim.requester_per_second <= 0))
		return 1;
	if (!rloop_ready(rl) || clusterrate_keys(&keys, prefix, r->tenant->name, who, len, &lim) != 0)
		return -1;
	now = clock_ms();
	for (int i = 0; leases && i < keys.n; i++) {
		if (ratelease_take(leases, keys.name[i], keys.len[i], keys.per_second[i], keys.burst[i], now,
		                   &ask[i], &lease[i])) {
			if (lease[i].filling)
				prefetch(rl, wait_ms, leases, &keys, i, ask[i], &lease[i], now);
			ask[i] = 0; /* not sent: a token of the lease */
			held++;
		}
	}
	if (held == keys.n)
		return 2; /* every limit had a token leased: no round trip */
	if (!(w = calloc(1, sizeof(*w))))
		goto fail;
	w->r = r;
	w->body_ref = w->claims_ref = LUA_NOREF;
	w->resume_at = resume_at;
	w->run = run;
	w->keys = keys;
	w->sent_ms = now;
	if (clusterrate_command_for(&w->cmd, false, &w->keys, ask) != 0 || !lua_checkstack(p->L, 4))
		goto fail;
	lua_pushcfunction(p->L, keep_values);
	lua_pushlightuserdata(p->L, w);
	lua_pushvalue(p->L, p->body);
	if (p->id.claims_idx)
		lua_pushvalue(p->L, p->id.claims_idx);
	else
		lua_pushnil(p->L);
	if (lua_pcall(p->L, 3, 0, 0) != LUA_OK) {
		lua_pop(p->L, 1);
		goto fail;
	}
	if (loop_upstream_begin(r->srv) != 0)
		goto fail;
	if (rloop_command(rl, w->cmd.argc, w->cmd.argv, w->cmd.len, wait_ms, on_rate_reply, w) != 0) {
		loop_upstream_end(r->srv);
		goto fail;
	}
	memcpy(w->lease, lease, sizeof(lease));
	r->wait = w;
	p->suspended = true;
	return 0;
fail:
	for (int i = 0; i < keys.n; i++)
		ratelease_release(leases, &lease[i], now);
	if (w) {
		tokenwait_forget(p->L, w);
		free(w);
	}
	return -1;
}

/* ------------------------------------------------- going on in the reply */

/* The body and claims kept while waiting back on p's stack: 0, or -1
 * (out of memory: the engine unpinned). */
int tokenwait_restore(struct req *r, struct stage_wait *w, struct pipeline *p)
{
	if (!lua_checkstack(p->L, 2)) {
		tokenwait_forget(p->L, w);
		gen_engine_unpin(loop_engines(r->loop), r->engine);
		r->engine = NULL;
		return -1;
	}
	if (w->body_ref != LUA_NOREF) {
		lua_rawgeti(p->L, LUA_REGISTRYINDEX, w->body_ref);
		p->body = lua_gettop(p->L);
	}
	if (w->claims_ref != LUA_NOREF) {
		lua_rawgeti(p->L, LUA_REGISTRYINDEX, w->claims_ref);
		p->id.claims_idx = lua_gettop(p->L);
	}
	tokenwait_forget(p->L, w);
	return 0;
}

/* Redis allowed (or refused) the request: its stages go on inside the
 * reply, the connection still suspended. A request that goes on to Courier
 * (or follows an identical grant's call) stays suspended until that call
 * ends; an answer, or the token cache, resumes it for the handler. */
static void continue_in_reply(struct stage_wait *w)
{
	struct req *r = w->r;
	struct pipeline p = w->p;
	int top = lua_gettop(p.L);

	r->state = RS_BODY;
	if (tokenwait_restore(r, w, &p) != 0) {
		w->has_final = true;
		w->final = REPLY_UNAVAILABLE;
		w->final_has_msg = true;
		snprintf(w->final_msg, sizeof(w->final_msg), "%s", "out of memory");
		w->final_name = NULL;
		r->state = RS_REDIS;
		MHD_resume_connection(r->conn);
		loop_resumed(r->loop);
		return;
	}
	p.in_reply = true;
	w->run(r, &p, w->resume_at, top);
}

/* --------------------------------------------------- the shared token cache */

/* The shared token cache's answer: a token sealed for this grant goes into
 * the local cache (which then answers, if at least half its lifetime
 * remains); anything else is a miss. The request goes on either way. */
static void on_cache_reply(const struct redisReply *reply, void *arg)
{
	struct stage_wait *w = arg;
	struct req *r = w->r;
	const char *prefix;
	unsigned wait_ms;
	struct sharedcache *sc = loop_sharedcache(r->loop);
	char name[SHAREDCACHE_NAME_MAX], token[GRANTCACHE_TOKEN_MAX + 1];
	long long exp, lifetime;
	size_t len;

	loop_redis(r->loop, &prefix, &wait_ms);
	if (reply && reply->type == REDIS_REPLY_STRING && sc &&
	    sharedcache_name(sc, prefix, &r->gkey, name, sizeof(name)) == 0) {
		if (sharedcache_open(sc, name, (const unsigned char *)reply->str, reply->len, token,
		                     sizeof(token), &len, &exp, &lifetime) == 0) {
			grantcache_put(&r->gkey, r->tenant->name, token, len, exp, lifetime);
			OPENSSL_cleanse(token, len);
		} else {
			log_warn_limited("cluster: a shared cached token did not open (another cache_key?)");
		}
	}
	loop_upstream_end(r->srv);
	MHD_resume_connection(r->conn);
	loop_resumed(r->loop);
}

/* With cluster.cache_key: asks Redis for this grant's shared token and
 * suspends the request until it answers (on_cache_reply): 0; -1 when not
 * asked (no shared cache, Redis not connected, asked already). */
int tokenwait_cache_ask(struct req *r, struct pipeline *p, stage_fn *resume_at)
{
	struct sharedcache *sc = loop_sharedcache(r->loop);
	char name[SHAREDCACHE_NAME_MAX];
	const char *argv[2] = {"GET", name};
	size_t lens[2] = {3, 0};
	struct stage_wait *w = r->wait;
	const char *prefix;
	unsigned wait_ms;
	struct rloop *rl = loop_redis(r->loop, &prefix, &wait_ms);

	if (!sc || !rloop_ready(rl) || (w && w->cache_checked) ||
	    sharedcache_name(sc, prefix, &r->gkey, name, sizeof(name)) != 0)
		return -1;
	if (!w) {
		if (!(w = calloc(1, sizeof(*w))))
			return -1;
		w->r = r;
		w->body_ref = w->claims_ref = LUA_NOREF;
		r->wait = w;
	}
	w->cache_checked = true;
	w->resume_at = resume_at;
	lens[1] = strlen(name);
	if (loop_upstream_begin(r->srv) != 0)
		return -1;
	if (rloop_command(rl, 2, argv, lens, wait_ms, on_cache_reply, w) != 0) {
		loop_upstream_end(r->srv);
		return -1;
	}
	p->suspended = true;
	return 0;
}

/* The leader's token into the shared cache, sealed; expires with it. */
void tokenwait_cache_put(struct req *r, const char *token, size_t len, long long exp)
{
	struct sharedcache *sc = loop_sharedcache(r->loop);
	char name[SHAREDCACHE_NAME_MAX], ms[24];
	unsigned char value[GRANTCACHE_TOKEN_MAX + SHAREDCACHE_OVERHEAD];
	const char *argv[5] = {"SET", name, (const char *)value, "PX", ms};
	size_t lens[5] = {3, 0, 0, 2, 0};
	long long left = exp - (long long)time(NULL);
	const char *prefix;
	unsigned wait_ms;
	struct rloop *rl = loop_redis(r->loop, &prefix, &wait_ms);

	if (!sc || !rloop_ready(rl) || left <= 0 ||
	    sharedcache_name(sc, prefix, &r->gkey, name, sizeof(name)) != 0 ||
	    sharedcache_seal(sc, name, token, len, exp, r->grant.expires_s, value, sizeof(value), &lens[2]) !=
	        0)
		return;
	lens[1] = strlen(name);
	lens[4] = (size_t)snprintf(ms, sizeof(ms), "%lld", left * 1000);
	/* Nobody waits for the answer. */
	rloop_command(rl, 5, argv, lens, wait_ms, NULL, NULL);
}
