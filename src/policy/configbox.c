/*
 * policy/configbox.c — the broker's one Lua sandbox, lent to config_load.
 *
 * Owns policy_config_sandbox: struct config_sandbox (config.h) over
 * policy_sandbox_new/run, policy_engine_lua and policy_engine_free, so the
 * configuration file runs in the policies' own sandbox while config/ needs
 * nothing of policy/. It must never loosen what the sandbox is: it only
 * passes the loader's budgets and arguments through, unchanged.
 */
#include <stddef.h>

#include "config.h"
#include "policy.h"

static void *box_open(long long max_instructions, long timeout_ms, size_t max_memory_bytes, char *err,
                      size_t errlen)
{
	const struct policy_limits lim = {
	    .max_instructions = max_instructions,
	    .timeout_ms = timeout_ms,
	    .max_memory_bytes = max_memory_bytes,
	};

	return policy_sandbox_new(&lim, err, errlen);
}

static struct lua_State *box_lua(void *box)
{
	return policy_engine_lua(box);
}

static int box_run(void *box, const char *name, const char *text, size_t len, char *err, size_t errlen)
{
	return policy_sandbox_run(box, name, text, len, err, errlen);
}

static void box_close(void *box)
{
	policy_engine_free(box);
}

const struct config_sandbox policy_config_sandbox = {
    .open = box_open,
    .lua = box_lua,
    .run = box_run,
    .close = box_close,
};
