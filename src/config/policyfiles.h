/*
 * policyfiles.h — the files of one tenant's policy: its modules and its revision.
 */
#ifndef BROKER_POLICYFILES_H
#define BROKER_POLICYFILES_H

#include <stddef.h>

#define POLICY_FILE_MAX (1024 * 1024) /* each tenant's policy source, and each module */
#define DATA_FILE_MAX   (1024 * 1024) /* each tenant's data = "x.json" */

struct tenant;

/* A module the policy requires: NAME.lua beside the policy, NAME of
 * [A-Za-z0-9_], not a test file, read once at load. */
struct policy_module {
	char *name;
	char *path; /* absolute */
	char *text;
	size_t len;
};

/* Reads the modules t's policy requires (t->policy_text and t->policy_dir
 * must be set): each require("NAME") with a literal NAME in the policy or
 * in a module so read, when NAME.lua exists beside the policy; into
 * t->modules, sorted by name; at most 64, each at most 1 MiB. No other file
 * of the folder is read. Returns 0, or -1 with the reason in err. */
int policyfiles_load_modules(struct tenant *t, char *err, size_t errlen);

/* Sets t->policy_revision from the policy, its modules and its data. */
void policyfiles_revision(struct tenant *t);

/* Frees t's modules and data (config_free calls it). */
void policyfiles_free(struct tenant *t);

#endif
