/*
 * bench_setup.h — what the policy benchmarks share (bench_decision.c,
 * bench_errpath.c): reading a policy file, a tenant as the configuration
 * would give it (the push tier's scopes, a week's cap, an hour's default)
 * and a configuration of such tenants under the policies' budgets.
 */
#ifndef BENCH_SETUP_H
#define BENCH_SETUP_H

#include <string.h>

#include "config.h"
#include "fileio.h"
#include "scope.h"

/* The file at path (at most 1 MiB), NUL-terminated and malloc'd, or NULL. */
static inline char *bench_read_policy(const char *path, size_t *len)
{
	char *text, why[256];

	return fileio_read(path, 1 << 20, 0, &text, len, why, sizeof(why)) == 0 ? text : NULL;
}

/* A tenant named name running the policy text of path. */
static inline void bench_tenant(struct tenant *t, const char *name, const char *path, char *text, size_t len)
{
	const char *const *push = scope_tier("push");

	memset(t, 0, sizeof(*t));
	t->name = (char *)name;
	t->policy_path = (char *)path;
	t->policy_text = text;
	t->policy_len = len;
	t->max_expires_s = 7 * 86400;
	t->default_expires_s = 3600;
	t->allowed_scopes = (char **)(void *)push;
	while (push[t->n_allowed_scopes])
		t->n_allowed_scopes++;
}

/* A configuration of the n tenants t; a loaded machine must not fail the
 * run, hence the time budget of a second. */
static inline void bench_config(struct config *cfg, struct tenant *t, size_t n)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->tenants = t;
	cfg->n_tenants = n;
	cfg->policy_max_instructions = 1000000;
	cfg->policy_max_memory_bytes = 8 << 20;
	cfg->policy_timeout_ms = 1000;
}

#endif
