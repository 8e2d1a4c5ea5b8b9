/*
 * pending.c — the list of what the first phase of loading defers.
 *
 * While the file's Lua runs, the walk records each secret, policy, data
 * file, public key and tenant it meets (config_defer_*), with the key path
 * its messages name; resolve.c reads the list once the sandbox is closed.
 * Owns the list and what its entries hold. It must never read a file or a
 * variable itself (that is the second phase) and never lose an entry's
 * owned strings: a list that cannot grow frees what it was handed.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "loader.h"

/* Appends p, taking its ref and path (freed here when the list cannot grow). */
static int defer(struct loader *ld, struct pending *p)
{
	if (ld->n_pending == ld->cap_pending) {
		size_t cap = ld->cap_pending ? 2 * ld->cap_pending : 16;
		struct pending *grown = realloc(ld->pending, cap * sizeof(*grown));
		if (!grown) {
			free(p->ref.env);
			free(p->ref.file);
			free(p->path);
			return config_fail(ld, p->key, "out of memory");
		}
		ld->pending = grown;
		ld->cap_pending = cap;
	}
	ld->pending[ld->n_pending++] = *p;
	return 0;
}

int config_defer_secret(struct loader *ld, const char *key, struct secret_ref *ref, struct secret *dst)
{
	struct pending p = {.kind = PENDING_SECRET, .ref = *ref, .dst = dst};

	memset(ref, 0, sizeof(*ref));
	snprintf(p.key, sizeof(p.key), "%s", key);
	return defer(ld, &p);
}

int config_defer_file(struct loader *ld, enum pending_kind kind, const char *key, struct tenant *t,
                      char *path)
{
	struct pending p = {.kind = kind, .t = t, .path = path};

	snprintf(p.key, sizeof(p.key), "%s", key);
	return defer(ld, &p);
}

int config_defer_client_key(struct loader *ld, const char *list_key, struct tenant *t, size_t index,
                            struct secret_ref *ref)
{
	struct pending p = {.kind = PENDING_CLIENT_KEY, .t = t, .ref = *ref, .index = index};

	memset(ref, 0, sizeof(*ref));
	snprintf(p.key, sizeof(p.key), "%s", list_key);
	return defer(ld, &p);
}

int config_defer_tenant(struct loader *ld, const char *path, struct tenant *t)
{
	struct pending p = {.kind = PENDING_TENANT, .t = t};

	snprintf(p.key, sizeof(p.key), "%s", path);
	return defer(ld, &p);
}

bool config_secret_given(const struct loader *ld, const struct secret *dst)
{
	for (size_t i = 0; i < ld->n_pending; i++)
		if (ld->pending[i].kind == PENDING_SECRET && ld->pending[i].dst == dst)
			return true;
	return false;
}

void config_pending_free(struct loader *ld)
{
	for (size_t i = 0; i < ld->n_pending; i++) {
		free(ld->pending[i].ref.env);
		free(ld->pending[i].ref.file);
		free(ld->pending[i].path);
	}
	free(ld->pending);
	ld->pending = NULL;
	ld->n_pending = ld->cap_pending = 0;
}
