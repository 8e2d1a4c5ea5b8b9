/*
 * policyfiles.c — a tenant's policy files: the modules beside its policy and
 * the policy revision.
 *
 * Owns reading the modules a policy may require (NAME.lua beside it), their
 * order, and the revision hash over the policy, its modules and its data.
 * Used by the configuration loader and by `courier-broker test`. It must
 * never read anything but regular files of the policy's own folder, never
 * more than MODULES_MAX of them nor more than POLICY_FILE_MAX bytes each.
 */
#include "policyfiles.h"

#include <dirent.h>
#include <errno.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fileio.h"

#define MODULES_MAX 64 /* modules beside one policy */

static int cmp_modules(const void *a, const void *b)
{
	return strcmp(((const struct policy_module *)a)->name, ((const struct policy_module *)b)->name);
}

/* Whether a file name is NAME.lua with NAME of [A-Za-z0-9_], not NAME_test.lua. */
static bool module_file(const char *fname, size_t *namelen)
{
	size_t n = strlen(fname);

	if (n <= 4 || strcmp(fname + n - 4, ".lua") != 0 || n - 4 > 64)
		return false;
	if (n >= 9 && strcmp(fname + n - 9, "_test.lua") == 0)
		return false;
	for (size_t i = 0; i < n - 4; i++) {
		char c = fname[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
			return false;
	}
	*namelen = n - 4;
	return true;
}

int policyfiles_load_modules(struct tenant *t, char *err, size_t errlen)
{
	DIR *d = opendir(t->policy_dir);
	struct dirent *de;
	char why[256];
	int rc = -1;

	if (!d) {
		snprintf(err, errlen, "%s: %s", t->policy_dir, strerror(errno));
		return -1;
	}
	while ((de = readdir(d))) {
		struct policy_module *m;
		size_t namelen;
		if (!module_file(de->d_name, &namelen))
			continue;
		if (t->n_modules == MODULES_MAX) {
			snprintf(err, errlen, "%s: more than %d modules beside the policy", t->policy_dir,
			         MODULES_MAX);
			goto out;
		}
		if (!t->modules && !(t->modules = calloc(MODULES_MAX, sizeof(*t->modules)))) {
			snprintf(err, errlen, "out of memory");
			goto out;
		}
		m = &t->modules[t->n_modules];
		m->name = strndup(de->d_name, namelen);
		m->path = fileio_join(t->policy_dir, de->d_name);
		if (!m->name || !m->path) {
			free(m->name);
			free(m->path);
			snprintf(err, errlen, "out of memory");
			goto out;
		}
		t->n_modules++;
		if (strcmp(m->path, t->policy_path) == 0) {
			t->n_modules--; /* the policy itself is not a module */
			free(m->name);
			free(m->path);
			continue;
		}
		if (fileio_read(m->path, POLICY_FILE_MAX, 0, &m->text, &m->len, why, sizeof(why))) {
			snprintf(err, errlen, "module %s: %s", m->path, why);
			goto out;
		}
	}
	if (t->n_modules)
		qsort(t->modules, t->n_modules, sizeof(*t->modules), cmp_modules);
	rc = 0;
out:
	closedir(d);
	return rc;
}

/* SHA-256 over each part, each preceded by its length and a tag, so that
 * moving bytes between parts changes the revision. */
void policyfiles_revision(struct tenant *t)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	char head[128];
	int ok;

	t->policy_revision[0] = '\0';
	if (!ctx)
		return;
	ok = EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	if (ok && t->n_modules == 0 && !t->data_text) {
		/* A lone policy: the revision is the SHA-256 of its source. */
		ok = EVP_DigestUpdate(ctx, t->policy_text, t->policy_len);
	} else if (ok) {
		snprintf(head, sizeof(head), "policy %zu\n", t->policy_len);
		ok = EVP_DigestUpdate(ctx, head, strlen(head)) &&
		     EVP_DigestUpdate(ctx, t->policy_text, t->policy_len);
		for (size_t i = 0; ok && i < t->n_modules; i++) {
			snprintf(head, sizeof(head), "module %s %zu\n", t->modules[i].name,
			         t->modules[i].len);
			ok = EVP_DigestUpdate(ctx, head, strlen(head)) &&
			     EVP_DigestUpdate(ctx, t->modules[i].text, t->modules[i].len);
		}
		if (ok && t->data_text) {
			snprintf(head, sizeof(head), "data %zu\n", t->data_len);
			ok = EVP_DigestUpdate(ctx, head, strlen(head)) &&
			     EVP_DigestUpdate(ctx, t->data_text, t->data_len);
		}
	}
	if (ok && EVP_DigestFinal_ex(ctx, md, &mdlen) && mdlen >= 8) {
		for (int i = 0; i < 8; i++) {
			t->policy_revision[2 * i] = hex[md[i] >> 4];
			t->policy_revision[2 * i + 1] = hex[md[i] & 15];
		}
		t->policy_revision[16] = '\0';
	}
	EVP_MD_CTX_free(ctx);
}

void policyfiles_free(struct tenant *t)
{
	for (size_t i = 0; i < t->n_modules; i++) {
		free(t->modules[i].name);
		free(t->modules[i].path);
		free(t->modules[i].text);
	}
	free(t->modules);
	t->modules = NULL;
	t->n_modules = 0;
	free(t->data_path);
	free(t->data_text);
	t->data_path = NULL;
	t->data_text = NULL;
	t->data_len = 0;
}
