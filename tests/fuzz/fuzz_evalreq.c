/*
 * fuzz_evalreq.c — libFuzzer driver for evalreq_run (src/evalreq.c): what
 * `courier-broker eval --request` reads, a JSON request description or a raw
 * HTTP request (request line, headers, blank line, body).
 *
 * Owns the properties: whatever the bytes, eval never crashes, answers 0 (a
 * decision printed) or 1 (refused, nothing printed), and leaves the engine's
 * stack as it found it. The configuration (one tenant, auth none, a policy
 * that reads every field of req) is written to a scratch folder and loaded
 * once; each input gets an engine of its own (freed after it, so that
 * LeakSanitizer sees what an input leaves behind).
 */
#include <lua.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "evalreq.h"
#include "fuzz_lua.h"
#include "policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct config *cfg;
static FILE *sink;

static void put(const char *dir, const char *name, const char *text)
{
	char path[256];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (!(f = fopen(path, "w")))
		abort();
	fputs(text, f);
	fclose(f);
}

static void setup(void)
{
	static char dir[] = "/tmp/fuzz_evalreq.XXXXXX";
	char path[256], err[1024];

	if (!mkdtemp(dir))
		abort();
	put(dir, "p.lua",
	    "return function(req)\n"
	    "  local n = 0\n"
	    "  for k, v in pairs(req.headers) do n = n + #k + #v end\n"
	    "  broker.log(req.user_id, req.client.ip, req.client.origin, req.client.user_agent, n)\n"
	    "  return { allow = req.identity.authenticated == false, tier = 'inbox' }\n"
	    "end\n");
	put(dir, "broker.conf.lua",
	    "tenants = { default = { api_key = { env = 'FUZZ_UNSET' }, policy = 'p.lua', auth = { none = "
	    "true } } }\n");
	snprintf(path, sizeof(path), "%s/broker.conf.lua", dir);
	if (!(cfg = config_load_for(path, &policy_config_sandbox, CONFIG_USE_EVAL, err, sizeof(err)))) {
		fprintf(stderr, "fuzz_evalreq: %s\n", err);
		abort();
	}
	if (!(sink = fopen("/dev/null", "w")))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct evalreq_options opt = {.peer = NULL};
	char *s = fuzz_copy(data, size), err[512];
	struct policy_engine *engine;
	lua_State *L;
	int top, rc;

	if (!s)
		return 0;
	if (!cfg)
		setup();
	if (!(engine = policy_engine_new(cfg, err, sizeof(err))))
		abort();
	L = policy_engine_lua(engine);
	top = lua_gettop(L);
	opt.explain = size > 0 && (data[0] & 1);
	rc = evalreq_run(engine, cfg, config_tenant(cfg, "default"), s, size, &opt, sink);
	if ((rc != 0 && rc != 1) || lua_gettop(L) != top)
		abort();
	policy_engine_free(engine);
	free(s);
	return 0;
}
