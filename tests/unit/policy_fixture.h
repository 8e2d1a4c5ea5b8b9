/*
 * policy_fixture.h — what the unit tests of src/policy/ share: an engine
 * over one or two tenants with inline policies on a hand-built config, one
 * decision at a time, and the checks of its error. Each test file that
 * includes it has its own fixture.
 */
#ifndef TEST_POLICY_FIXTURE_H
#define TEST_POLICY_FIXTURE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <lua.h>

#include "config.h"
#include "envelope.h"
#include "json.h"
#include "policy.h"

struct fixture {
	struct config cfg;
	struct tenant t[2];
	struct policy_engine *e;
	char err[512];
	struct decision d;
};

static struct fixture fx;

static const char *const ALLOW_INBOX = "return function(req) return {allow=true, tier='inbox'} end";

/* An engine over one or two tenants with inline policies. */
static inline struct policy_engine *engine_for(const char *p1, const char *p2)
{
	memset(&fx, 0, sizeof(fx));
	fx.t[0].name = "acme";
	fx.t[0].policy_path = "/policies/acme.lua";
	fx.t[0].policy_text = (char *)p1;
	fx.t[0].policy_len = strlen(p1);
	fx.t[1].name = "other";
	fx.t[1].policy_path = "/policies/other.lua";
	fx.t[1].policy_text = (char *)(p2 ? p2 : ALLOW_INBOX);
	fx.t[1].policy_len = strlen(fx.t[1].policy_text);
	fx.cfg.tenants = fx.t;
	fx.cfg.n_tenants = 2;
	fx.cfg.policy_max_instructions = 1000000;
	fx.cfg.policy_max_memory_bytes = 1 << 20;
	fx.cfg.policy_timeout_ms = 50;
	fx.e = policy_engine_new(&fx.cfg, fx.err, sizeof(fx.err));
	return fx.e;
}

static inline struct policy_engine *must_engine(const char *p1, const char *p2)
{
	struct policy_engine *e = engine_for(p1, p2);
	if (!e)
		fail_msg("engine: %s", fx.err);
	return e;
}

/* One decision for tenant ti with a JSON body and claims; the stack of the
 * engine's state must come back as it was. */
static inline int decide_full(int ti, const char *body, const char *claims, bool authenticated,
                              const char *subject)
{
	lua_State *L = policy_engine_lua(fx.e);
	int top = lua_gettop(L);
	struct policy_header h[] = {{"x-trace", "t1"}, {"content-type", "application/json"}};
	struct policy_request rq;
	int rc;

	memset(&rq, 0, sizeof(rq));
	assert_int_equal(json_decode(L, body, strlen(body)), 0);
	rq.body_idx = lua_gettop(L);
	if (claims) {
		assert_int_equal(json_decode(L, claims, strlen(claims)), 0);
		rq.claims_idx = lua_gettop(L);
	}
	rq.tenant = &fx.t[ti];
	rq.user_id = "alice";
	rq.authenticated = authenticated;
	rq.method = authenticated ? "jwt" : "none";
	rq.subject = subject;
	rq.client_ip = "10.0.0.1";
	rq.origin = "https://app.example.com";
	rq.headers = h;
	rq.n_headers = 2;
	rq.now = 1700000000;
	memset(&fx.d, 0xa5, sizeof(fx.d));
	fx.err[0] = '\0';
	rc = policy_decide(fx.e, &rq, &fx.d, fx.err, sizeof(fx.err));
	assert_int_equal(lua_gettop(L), top + (claims ? 2 : 1));
	lua_settop(L, top);
	return rc;
}

/* One decision for tenant ti on a request that carries as little as one
 * can: no client, no headers, no claims, no subject. */
static inline int decide_bare(int ti, const char *user_id, const char *body)
{
	lua_State *L = policy_engine_lua(fx.e);
	int top = lua_gettop(L);
	struct policy_request rq;
	int rc;

	memset(&rq, 0, sizeof(rq));
	assert_int_equal(json_decode(L, body, strlen(body)), 0);
	rq.body_idx = lua_gettop(L);
	rq.tenant = &fx.t[ti];
	rq.user_id = user_id;
	rq.method = "none";
	rq.now = 1700000001;
	memset(&fx.d, 0xa5, sizeof(fx.d));
	fx.err[0] = '\0';
	rc = policy_decide(fx.e, &rq, &fx.d, fx.err, sizeof(fx.err));
	assert_int_equal(lua_gettop(L), top + 1);
	lua_settop(L, top);
	return rc;
}

/* Kilobytes in use in the engine's state after a full collection. */
static inline int engine_kb(void)
{
	lua_State *L = policy_engine_lua(fx.e);

	lua_gc(L, LUA_GCCOLLECT);
	return lua_gc(L, LUA_GCCOUNT);
}

static inline int decide(int ti)
{
	return decide_full(ti, "{\"user_id\":\"alice\"}", NULL, true, "alice");
}

static inline void assert_err_has(const char *needle)
{
	if (!strstr(fx.err, needle))
		fail_msg("err \"%s\" lacks \"%s\"", fx.err, needle);
}

/* The tenant's policy fails with needle in err, and the engine still works. */
static inline void assert_policy_error(const char *policy, const char *needle)
{
	must_engine(policy, NULL);
	if (decide(0) != -1)
		fail_msg("policy accepted: %s", policy);
	assert_false(fx.d.allow);
	if (needle)
		assert_err_has(needle);
	assert_int_equal(decide(1), 0);
	assert_true(fx.d.allow);
	policy_engine_free(fx.e);
}

/* The CPU time this thread used since t0 (read with CLOCK_THREAD_CPUTIME_ID):
 * the clock a policy's time budget is kept in, so a bound on it holds
 * however busy the machine is. */
static inline double cpu_ms_since(const struct timespec *t0)
{
	struct timespec t1;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

#endif
