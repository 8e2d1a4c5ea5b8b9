/*
 * bench_decision.c — µs per policy decision for policies/default.lua.
 *
 * One decision as the HTTP front makes it: the request table built from the
 * decoded body and claims, the policy run in its sandbox under its budgets,
 * the decision type-checked (policy_decide); then again with the tenant's
 * envelope applied too (envelope_apply), as the HTTP front does next. The
 * body and claims are decoded once, outside the timing, as they come from
 * the JSON decoder and the JWT check. Prints the median and p99 of single
 * decisions timed one by one (clock_gettime around each). Then decisions
 * with explain off and on in turn: what the audit log's decided_by costs.
 *
 *   bench_decision [POLICY [N]]     (default: policies/default.lua, 200000)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lua.h>

#include "config.h"
#include "envelope.h"
#include "json.h"
#include "policy.h"
#include "scope.h"

#include "bench_setup.h"

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double now_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

int main(int argc, char **argv)
{
	const char *path = argc > 1 ? argv[1] : "policies/default.lua";
	long n = argc > 2 ? strtol(argv[2], NULL, 10) : 200000;
	static const char body[] = "{\"user_id\":\"alice\",\"expires_in\":\"2h\"}";
	static const char claims[] =
	    "{\"sub\":\"alice\",\"iat\":1700000000,\"exp\":1700003600,\"tier\":\"preferences\"}";
	struct policy_header hdrs[] = {{"content-type", "application/json"},
	                               {"user-agent", "bench/1.0"},
	                               {"origin", "https://app.example.com"},
	                               {"x-request-id", "4f1c2a"}};
	struct config cfg;
	struct tenant t;
	struct policy_engine *e;
	struct policy_request rq;
	struct decision *d = calloc(1, sizeof(*d));
	struct grant *g = calloc(1, sizeof(*g));
	double *lat = calloc((size_t)(n > 0 ? n : 1), sizeof(double));
	char err[512], *text;
	size_t len;
	lua_State *L;

	if (n < 100 || !d || !g || !lat) {
		fprintf(stderr, "usage: bench_decision [POLICY [N >= 100]]\n");
		return 2;
	}
	text = bench_read_policy(path, &len);
	if (!text) {
		fprintf(stderr, "bench_decision: cannot read %s\n", path);
		return 1;
	}
	bench_tenant(&t, "default", path, text, len);
	bench_config(&cfg, &t, 1);
	e = policy_engine_new(&cfg, err, sizeof(err));
	if (!e) {
		fprintf(stderr, "bench_decision: %s\n", err);
		return 1;
	}
	L = policy_engine_lua(e);
	if (json_decode(L, body, strlen(body)) != 0 || json_decode(L, claims, strlen(claims)) != 0) {
		fprintf(stderr, "bench_decision: JSON\n");
		return 1;
	}
	memset(&rq, 0, sizeof(rq));
	rq.tenant = &t;
	rq.user_id = "alice";
	rq.body_idx = lua_gettop(L) - 1;
	rq.claims_idx = lua_gettop(L);
	rq.authenticated = true;
	rq.method = "jwt";
	rq.subject = "alice";
	rq.client_ip = "127.0.0.1";
	rq.origin = "https://app.example.com";
	rq.user_agent = "bench/1.0";
	rq.headers = hdrs;
	rq.n_headers = sizeof(hdrs) / sizeof(hdrs[0]);
	rq.now = 1700000000;

	for (int with_envelope = 0; with_envelope <= 1; with_envelope++) {
		double total = 0;
		for (long i = -n / 10; i < n; i++) { /* a tenth to warm up */
			double t0 = now_us(), dt;
			if (policy_decide(e, &rq, d, err, sizeof(err)) != 0 || !d->allow ||
			    (with_envelope && envelope_apply(&t, rq.user_id, d, g, err, sizeof(err)) != 0)) {
				fprintf(stderr, "bench_decision: decision failed: %s\n", err);
				return 1;
			}
			dt = now_us() - t0;
			if (i >= 0) {
				lat[i] = dt;
				total += dt;
			}
		}
		qsort(lat, (size_t)n, sizeof(double), cmp_double);
		printf("%-40s median %5.2f us  p99 %5.2f us  mean %5.2f us  (%s, %ld runs)\n",
		       with_envelope ? "decision + envelope (grant built):"
		                     : "decision (req built, run, validated):",
		       lat[n / 2], lat[n * 99 / 100], total / (double)n, path, n);
	}
	/* Explain (the audit log's decided_by): off and on in turn, so that a
	 * loaded machine weighs on both alike. */
	{
		double *on = calloc((size_t)n, sizeof(double));
		if (!on || policy_engine_explain(e, true) != 0) {
			fprintf(stderr, "bench_decision: explain: out of memory\n");
			return 1;
		}
		for (long i = -n / 10; i < n; i++) {
			for (int x = 0; x <= 1; x++) {
				double t0, dt;
				policy_engine_explain(e, x == 1);
				t0 = now_us();
				if (policy_decide(e, &rq, d, err, sizeof(err)) != 0 || !d->allow) {
					fprintf(stderr, "bench_decision: decision failed: %s\n", err);
					return 1;
				}
				dt = now_us() - t0;
				if (i >= 0)
					(x ? on : lat)[i] = dt;
			}
		}
		qsort(lat, (size_t)n, sizeof(double), cmp_double);
		qsort(on, (size_t)n, sizeof(double), cmp_double);
		printf("%-40s median %5.2f us  p99 %5.2f us  (explain off, interleaved)\n",
		       "decision, explain off:", lat[n / 2], lat[n * 99 / 100]);
		printf("%-40s median %5.2f us  p99 %5.2f us  (+%.2f us at the median)\n",
		       "decision, explain on (audit log):", on[n / 2], on[n * 99 / 100],
		       on[n / 2] - lat[n / 2]);
		free(on);
	}
	policy_engine_free(e);
	free(t.policy_text);
	free(lat);
	free(d);
	free(g);
	return 0;
}
