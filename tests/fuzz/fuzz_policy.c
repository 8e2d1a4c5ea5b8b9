/*
 * fuzz_policy.c — libFuzzer driver for the policy engine (src/policy.c):
 * the input is the text of a tenant's policy.
 *
 * Each input builds an engine for a two-tenant configuration, with small
 * budgets: tenant "fuzz" runs the input, tenant "good" a fixed policy that
 * allows the inbox tier once it has checked that the libraries it sees are
 * pristine. The text may fail to compile (a refusal must say why); when it
 * compiles, one ordinary request is decided for "fuzz", then one for "good"
 * on the same engine, as a worker thread serves tenants one after another.
 *
 * Owns the properties (issue 10): whatever the text, the process never
 * crashes; neither the build nor a decision runs longer than twice the time
 * budget; the engine's stack is as it was after each decision; a grant built
 * from an allowing decision stays inside the tenant's ceiling (one user_id
 * scope, the user's; allowed scopes only; the lifetime capped); and the next
 * ordinary decision, for the other tenant, succeeds with exactly its inbox
 * grant and none of the fuzzed policy's log lines. A breach aborts with a
 * message naming it, so libFuzzer records the input.
 *
 * The time budget is the decision's CPU time (policy_limits.timeout_ms): the
 * verdict is read on the thread's user CPU time (fuzz_clock.h says why), with
 * wall and system time in the message; a hang is libFuzzer's -timeout.
 * Nothing is filtered: known findings (issue 10's C1, H1, L1) are found like
 * new ones.
 */
#include <lua.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "envelope.h"
#include "fuzz_clock.h"
#include "fuzz_lua.h"
#include "json.h"
#include "policy.h"
#include "scope.h"

#define MAX_INSTRUCTIONS 200000
#define MAX_MEMORY_BYTES (4 << 20)
#define TIMEOUT_MS       20
#define MAX_EXPIRES_S    (7 * 86400)

/* The other tenant's policy: it fails when a fuzzed policy left the shared
 * libraries or the shared module changed, or reached this tenant's
 * environment or data. */
static const char GOOD[] =
    "local clock = require('clock')\n"
    "assert(('x'):upper() == 'X' and string.upper('y') == 'Y')\n"
    "assert(#broker.tiers.inbox == 3 and broker.tiers.inbox[1] == 'inbox:read:messages')\n"
    "assert(math.pi > 3.14 and pwned == nil and type(table.insert) == 'function')\n"
    "assert(clock.weekday(0) == 4 and clock.pwned == nil and broker.data == nil)\n"
    "return function(req)\n"
    "  assert(req.user_id == 'alice' and req.body.user_id == 'alice' and pwned == nil)\n"
    "  return {allow = true, tier = 'inbox'}\n"
    "end\n";

/* The modules beside both policies (policies/clock.lua and a module that
 * loops), and the fuzzed tenant's broker.data. */
static const char CLOCK[] = "local M = {}\n"
                            "function M.weekday(t) return (t // 86400 + 4) % 7 end\n"
                            "function M.second_of_day(t) return t % 86400 end\n"
                            "return M\n";
static const char SPINNER[] = "local M = {}\n"
                              "function M.spin() pcall(function() while true do end end) end\n"
                              "return M\n";
static const char DATA[] = "{\"support_orgs\":{\"acme\":true},\"support_networks\":[\"10.20.0.0/16\","
                           "\"2001:db8:5::/48\"],\"limits\":[1,2.5,null,\"x\"]}";
static struct policy_module modules[] = {
    {"clock", "/fuzz/clock.lua", (char *)CLOCK, sizeof(CLOCK) - 1},
    {"spinner", "/fuzz/spinner.lua", (char *)SPINNER, sizeof(SPINNER) - 1}};

static const char BODY[] =
    "{\"user_id\":\"alice\",\"expires_in\":\"2h\",\"scopes\":[\"inbox:read:messages\"],"
    "\"groups\":[\"staff\",\"admin\"],\"n\":3}";
static const char CLAIMS[] = "{\"sub\":\"alice\",\"iat\":1700000000,\"exp\":1700003600,\"tier\":\"inbox\"}";

static const struct policy_header HEADERS[] = {{"content-type", "application/json"},
                                               {"user-agent", "fuzz/1.0"},
                                               {"origin", "https://app.example.com"},
                                               {"x-request-id", "4f1c2a"}};

static void fail(const char *what, const char *detail)
{
	fprintf(stderr, "ERROR: fuzz_policy: %s%s%s\n", what, detail && detail[0] ? ": " : "",
	        detail ? detail : "");
	abort();
}

/* An input that overran runs once more (fuzz_clock.h says why). */
static void check_time(const struct fuzz_clock *c, double limit_ms, const char *what)
{
	fuzz_check_time(c, limit_ms, "fuzz_policy", what);
}

/* The configuration: tenant 0 runs the input, tenant 1 the good policy. */
static struct config cfg;
static struct tenant tenants[2];
static double build_slack_ms; /* what building an engine costs besides running the policies */

static void setup_tenant(struct tenant *t, const char *name, const char *path)
{
	const char *const *inbox = scope_tier("inbox");

	t->name = (char *)name;
	t->policy_path = (char *)path;
	t->policy_dir = "/fuzz";
	t->max_expires_s = MAX_EXPIRES_S;
	t->default_expires_s = 3600;
	t->allowed_scopes = (char **)(void *)inbox;
	for (t->n_allowed_scopes = 0; inbox[t->n_allowed_scopes]; t->n_allowed_scopes++)
		;
	t->modules = modules;
	t->n_modules = sizeof(modules) / sizeof(modules[0]);
}

static void setup(void)
{
	struct policy_engine *e;
	struct fuzz_clock c;
	char err[512];

	setup_tenant(&tenants[0], "fuzz", "/fuzz/fuzz.lua");
	setup_tenant(&tenants[1], "good", "/fuzz/good.lua");
	tenants[1].policy_text = (char *)GOOD;
	tenants[1].policy_len = sizeof(GOOD) - 1;
	cfg.tenants = tenants;
	cfg.n_tenants = 2;
	cfg.policy_max_instructions = MAX_INSTRUCTIONS;
	cfg.policy_max_memory_bytes = MAX_MEMORY_BYTES;
	cfg.policy_timeout_ms = TIMEOUT_MS;

	/* The cost of a build with two good policies, the slowest of three
	 * (the first warms the caches), is the build's allowance on top of
	 * twice the fuzzed policy's budget. */
	tenants[0].policy_text = (char *)GOOD;
	tenants[0].policy_len = sizeof(GOOD) - 1;
	for (int i = 0; i < 3; i++) {
		fuzz_clock_start(&c);
		e = policy_engine_new(&cfg, err, sizeof(err));
		if (!e)
			fail("the good policies do not compile", err);
		policy_engine_free(e);
		struct rusage ru;
		getrusage(RUSAGE_THREAD, &ru);
		double ms = fuzz_tv_ms(&c.ru.ru_utime, &ru.ru_utime);
		if (ms > build_slack_ms)
			build_slack_ms = ms;
	}
	build_slack_ms = 2 * build_slack_ms + 5;
	tenants[0].data_path = "/fuzz/data.json";
	tenants[0].data_text = (char *)DATA;
	tenants[0].data_len = sizeof(DATA) - 1;
}

/* One decision for tenant t; the engine's stack must come back as it was. */
static int decide(struct policy_engine *e, const struct tenant *t, struct decision *d, char *err,
                  size_t errlen)
{
	lua_State *L = policy_engine_lua(e);
	int top = lua_gettop(L);
	struct policy_request rq;
	struct fuzz_clock c;
	int rc;

	if (json_decode(L, BODY, sizeof(BODY) - 1) != 0 || json_decode(L, CLAIMS, sizeof(CLAIMS) - 1) != 0)
		fail("the request's JSON does not decode", NULL);
	memset(&rq, 0, sizeof(rq));
	rq.tenant = t;
	rq.user_id = "alice";
	rq.body_idx = top + 1;
	rq.claims_idx = top + 2;
	rq.authenticated = true;
	rq.method = "jwt";
	rq.subject = "alice";
	rq.client_ip = "10.1.2.3";
	rq.origin = "https://app.example.com";
	rq.user_agent = "fuzz/1.0";
	rq.headers = HEADERS;
	rq.n_headers = sizeof(HEADERS) / sizeof(HEADERS[0]);
	rq.now = 1700000000;
	fuzz_clock_start(&c);
	rc = policy_decide(e, &rq, d, err, errlen);
	check_time(&c, 2.0 * TIMEOUT_MS, t == &tenants[0] ? "the fuzzed decision" : "the good decision");
	if (fuzz_verbose())
		fprintf(stderr, "fuzz_policy: rc %d allow %d: %s\n", rc, (int)d->allow, err);
	if (lua_gettop(L) != top + 2)
		fail("the engine's stack is unbalanced after a decision", err);
	lua_settop(L, top);
	if (rc != 0 && !err[0])
		fail("a policy error without a reason", NULL);
	if (rc != 0 && d->allow)
		fail("a policy error that allows", err);
	return rc;
}

/* An allowing decision's grant, if the envelope lets it through, is inside
 * the tenant's ceiling. */
static void check_grant(const struct tenant *t, const struct decision *d)
{
	static struct grant g;
	char err[256], *save = NULL;
	const char *tok;
	int n = 0;

	if (envelope_apply(t, "alice", d, &g, err, sizeof(err)) != 0) {
		if (!err[0])
			fail("the envelope refused without a reason", NULL);
		return;
	}
	if (g.expires_s <= 0 || g.expires_s > t->max_expires_s)
		fail("a grant's lifetime is outside the ceiling", g.courier_expires);
	for (tok = strtok_r(g.scope, " ", &save); tok; tok = strtok_r(NULL, " ", &save), n++) {
		if (n == 0 ? strcmp(tok, "user_id:alice") != 0 : !envelope_scope_allowed(t, tok, strlen(tok)))
			fail("a grant's scope is outside the ceiling", tok);
	}
	if (n < 1)
		fail("a grant without scopes", NULL);
}

static void run_input(const uint8_t *data, size_t size)
{
	static struct decision d;
	const char *const *inbox = scope_tier("inbox");
	struct policy_engine *e;
	struct fuzz_clock c;
	char err[1024];
	char *text;

	if (!cfg.n_tenants)
		setup();
	text = fuzz_copy(data, size);
	if (!text)
		return;
	tenants[0].policy_text = text;
	tenants[0].policy_len = size;

	fuzz_clock_start(&c);
	e = policy_engine_new(&cfg, err, sizeof(err));
	check_time(&c, 2.0 * TIMEOUT_MS + build_slack_ms, "building the engine");
	if (!e) {
		if (fuzz_verbose())
			fprintf(stderr, "fuzz_policy: refused: %s\n", err);
		if (!err[0])
			fail("an engine refused without a reason", NULL);
		goto out;
	}

	if (decide(e, &tenants[0], &d, err, sizeof(err)) == 0 && d.allow)
		check_grant(&tenants[0], &d);

	if (decide(e, &tenants[1], &d, err, sizeof(err)) != 0)
		fail("the next ordinary decision, on the good tenant, failed", err);
	if (!d.allow || d.n_scopes != 3)
		fail("the good tenant's decision is not its inbox grant", d.reason);
	for (size_t i = 0; i < 3; i++)
		if (strcmp(d.scopes[i], inbox[i]) != 0)
			fail("the good tenant's decision has another scope", d.scopes[i]);
	if (policy_decision_log(e)[0])
		fail("the good tenant's decision shows log lines it never wrote", policy_decision_log(e));
	check_grant(&tenants[1], &d);
	policy_engine_free(e);
out:
	tenants[0].policy_text = NULL;
	free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_run_input(run_input, data, size);
	return 0;
}
