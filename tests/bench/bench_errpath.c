/*
 * bench_errpath.c — decisions per second of a multi-tenant engine on the
 * deny path and on the error path (a policy that raises).
 *
 * 101 tenants (issue 10, class 5): 100 run policies/default.lua, one runs a
 * policy that denies, raises or runs out of its memory cap as the request's
 * body says. An error must
 * not cost a collection of every tenant's compiled policies: the error
 * path's rate should stay within half of the deny path's. Prints both.
 *
 *   bench_errpath [N]     (default 20000 decisions per path)
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

#define TENANTS 101

static const char probe[] = "return function(req)\n"
                            "  if req.body.attack == 'error' then error('boom') end\n"
                            "  if req.body.attack == 'memory' then\n"
                            "    local t = {} for i = 1, 1e9 do t[i] = i end\n"
                            "  end\n"
                            "  return { allow = false, reason = 'no' }\n"
                            "end\n";

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? strtol(argv[1], NULL, 10) : 20000;
	static const char *const bodies[] = {"{\"user_id\":\"alice\",\"attack\":\"deny\"}",
	                                     "{\"user_id\":\"alice\",\"attack\":\"error\"}",
	                                     "{\"user_id\":\"alice\",\"attack\":\"memory\"}"};
	static struct tenant t[TENANTS];
	static char names[TENANTS][16];
	struct config cfg;
	struct policy_engine *e;
	struct decision *d = calloc(1, sizeof(*d));
	size_t dlen;
	char *deflt = bench_read_policy("policies/default.lua", &dlen);
	char err[512];
	double rate[3];
	lua_State *L;

	if (!deflt || !d || n < 100) {
		fprintf(stderr, "bench_errpath: run from the repository root; N >= 100\n");
		return 2;
	}
	for (int i = 0; i < TENANTS; i++) {
		snprintf(names[i], sizeof(names[i]), "t%d", i);
		if (i < TENANTS - 1)
			bench_tenant(&t[i], names[i], "policies/default.lua", deflt, dlen);
		else
			bench_tenant(&t[i], names[i], "probe.lua", (char *)probe, sizeof(probe) - 1);
	}
	bench_config(&cfg, t, TENANTS);
	e = policy_engine_new(&cfg, err, sizeof(err));
	if (!e) {
		fprintf(stderr, "bench_errpath: %s\n", err);
		return 1;
	}
	L = policy_engine_lua(e);
	for (int path = 0; path < 3; path++) {
		long runs = path == 2 ? n / 100 : n;
		struct policy_request rq;
		double t0 = now_s();

		if (json_decode(L, bodies[path], strlen(bodies[path])) != 0)
			return 1;
		memset(&rq, 0, sizeof(rq));
		rq.tenant = &t[TENANTS - 1];
		rq.user_id = "alice";
		rq.body_idx = lua_gettop(L);
		rq.method = "none";
		rq.now = 1700000000;
		for (long i = -runs / 10; i < runs; i++) {
			int rc;
			if (i == 0)
				t0 = now_s();
			rc = policy_decide(e, &rq, d, err, sizeof(err));
			if ((path == 0) != (rc == 0)) {
				fprintf(stderr, "bench_errpath: unexpected outcome: %s\n", err);
				return 1;
			}
		}
		rate[path] = (double)runs / (now_s() - t0);
		lua_pop(L, 1);
	}
	printf("101 tenants: deny path %.0f decisions/s, error path %.0f decisions/s (ratio %.2f), "
	       "memory-cap path (%zu MiB cap) %.0f decisions/s\n",
	       rate[0], rate[1], rate[1] / rate[0], cfg.policy_max_memory_bytes >> 20, rate[2]);
	policy_engine_free(e);
	free(deflt);
	free(d);
	return 0;
}
