/*
 * config/shadow.c — the shadow policies of a configuration (tenants.*.shadow_policy).
 *
 * Owns cfg->shadow: a configuration beside the live one whose tenants are
 * the tenants that name a shadow policy, each a copy of its live tenant
 * (same name, ceiling, data) with the shadow's source, modules and
 * revision, so one policy engine compiles and runs them like live
 * policies (shadow.c decides them beside the live ones). It must never free
 * what the copies share with the live tenants (everything but the policy's
 * path, folder, source and modules), and never let a shadow that cannot be
 * read or compiled pass a load (reload.c compiles and tests it).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fileio.h"
#include "loader.h"
#include "policyfiles.h"

/* Frees what a shadow tenant owns (not what it shares with its live one). */
static void shadow_tenant_free(struct tenant *st)
{
	free(st->policy_path);
	free(st->policy_dir);
	free(st->policy_text);
	for (size_t i = 0; i < st->n_modules; i++) {
		free(st->modules[i].name);
		free(st->modules[i].path);
		free(st->modules[i].text);
	}
	free(st->modules);
}

void config_shadow_free(struct config *shadow)
{
	if (!shadow)
		return;
	for (size_t i = 0; i < shadow->n_tenants; i++)
		shadow_tenant_free(&shadow->tenants[i]);
	free(shadow->tenants);
	free(shadow);
}

/* st (a copy of t) gets the shadow's source and modules. */
static int shadow_tenant_read(struct loader *ld, const struct tenant *t, struct tenant *st)
{
	char key[256], why[512];

	config_key_printf(key, sizeof(key), "tenants.%s.shadow_policy", t->name);
	*st = *t;
	st->policy_path = st->policy_dir = st->policy_text = NULL;
	st->modules = NULL;
	st->n_modules = 0;
	st->shadow_path = NULL;
	st->shadow_index = -1;
	st->policy_path = realpath(t->shadow_path, NULL);
	if (!st->policy_path)
		return config_fail(ld, key, "%s: %s", t->shadow_path, strerror(errno));
	if (strcmp(st->policy_path, t->policy_path) == 0)
		return config_fail(ld, key,
		                   "is the live policy itself: a shadow is the candidate next to it");
	if (fileio_read(st->policy_path, POLICY_FILE_MAX, 0, &st->policy_text, &st->policy_len, why,
	                sizeof(why)) != 0)
		return config_fail(ld, key, "%s: %s", st->policy_path, why);
	if (!(st->policy_dir = fileio_dir(st->policy_path)))
		return config_fail(ld, key, "out of memory");
	if (policyfiles_load_modules(st, why, sizeof(why)) != 0)
		return config_fail(ld, key, "%s", why);
	policyfiles_revision(st); /* over the shadow, its modules and the live data */
	return 0;
}

int config_shadow_build(struct loader *ld)
{
	struct config *cfg = ld->cfg, *sh;
	size_t n = 0;

	for (size_t i = 0; i < cfg->n_tenants; i++)
		cfg->tenants[i].shadow_index = -1;
	for (size_t i = 0; i < cfg->n_tenants; i++)
		n += cfg->tenants[i].shadow_path != NULL;
	if (n == 0)
		return 0;
	sh = calloc(1, sizeof(*sh));
	if (!sh || !(sh->tenants = calloc(n, sizeof(*sh->tenants)))) {
		free(sh);
		return config_fail(ld, NULL, "out of memory");
	}
	*sh = (struct config){.path = cfg->path,
	                      .dir = cfg->dir,
	                      .tenants = sh->tenants,
	                      .policy_max_instructions = cfg->policy_max_instructions,
	                      .policy_max_memory_bytes = cfg->policy_max_memory_bytes,
	                      .policy_timeout_ms = cfg->policy_timeout_ms};
	cfg->shadow = sh;
	for (size_t i = 0; i < cfg->n_tenants; i++) {
		struct tenant *t = &cfg->tenants[i];
		if (!t->shadow_path)
			continue;
		if (shadow_tenant_read(ld, t, &sh->tenants[sh->n_tenants]) != 0) {
			sh->n_tenants++; /* its parts are freed with the rest */
			return -1;
		}
		t->shadow_index = (long)sh->n_tenants++;
	}
	return 0;
}
