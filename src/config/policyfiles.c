/*
 * policyfiles.c — a tenant's policy files: the modules beside its policy and
 * the policy revision.
 *
 * Owns finding and reading the modules a policy requires (NAME.lua beside
 * it, named literally by a require in the policy or in a module it
 * requires), their order, and the revision hash over the policy, its modules
 * and its data. Used by the configuration loader and by `courier-broker
 * test`. It must never read a file of the folder no require names (a stray
 * NAME.lua must not break a tenant), never anything but regular files of the
 * policy's own folder, never more than MODULES_MAX of them nor more than
 * POLICY_FILE_MAX bytes each.
 */
#include "policyfiles.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"
#include "fileio.h"
#include "lualex.h"
#include "secret.h"

#define MODULES_MAX 64 /* modules beside one policy */

static int cmp_modules(const void *a, const void *b)
{
	return strcmp(((const struct policy_module *)a)->name, ((const struct policy_module *)b)->name);
}

/* Whether name (n bytes) may be a module: [A-Za-z0-9_], 1 to 64 bytes, not NAME_test. */
static bool module_name(const char *name, size_t n)
{
	if (n == 0 || n > 64 || (n >= 5 && memcmp(name + n - 5, "_test", 5) == 0))
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
			return false;
	}
	return true;
}

/* Reads module name (n bytes) beside t's policy into t->modules, unless it
 * is there already, is the policy itself, or has no file (require raises
 * then, when it runs). 0 or -1 with the reason. */
static int add_module(struct tenant *t, const char *name, size_t n, char *err, size_t errlen)
{
	struct policy_module *m;
	char fname[80], why[256];
	struct stat st;

	if (!module_name(name, n))
		return 0;
	for (size_t i = 0; i < t->n_modules; i++)
		if (strlen(t->modules[i].name) == n && memcmp(t->modules[i].name, name, n) == 0)
			return 0;
	snprintf(fname, sizeof(fname), "%.*s.lua", (int)n, name);
	if (t->n_modules == MODULES_MAX) {
		snprintf(err, errlen, "%s: the policy requires more than %d modules", t->policy_dir,
		         MODULES_MAX);
		return -1;
	}
	if (!t->modules && !(t->modules = calloc(MODULES_MAX, sizeof(*t->modules)))) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	m = &t->modules[t->n_modules];
	m->name = strndup(name, n);
	m->path = fileio_join(t->policy_dir, fname);
	if (!m->name || !m->path || strcmp(m->path, t->policy_path) == 0 ||
	    (stat(m->path, &st) != 0 && errno == ENOENT)) {
		bool oom = !m->name || !m->path;
		free(m->name);
		free(m->path);
		m->name = m->path = NULL;
		if (oom)
			snprintf(err, errlen, "out of memory");
		return oom ? -1 : 0;
	}
	t->n_modules++;
	if (fileio_read(m->path, POLICY_FILE_MAX, 0, &m->text, &m->len, why, sizeof(why))) {
		snprintf(err, errlen, "module %s: %s", m->path, why);
		return -1;
	}
	return 0;
}

/*
 * The names text requires literally: require("name"), require "name",
 * require 'name' or require [[name]], not a field or method call
 * (x.require). Each is added (add_module). A name computed at run time is
 * not found here: such a require raises, since its module was never read.
 */
static int scan_requires(struct tenant *t, const char *text, size_t len, char *err, size_t errlen)
{
	struct lualex x;
	struct lualex_token tok, prev = {0};

	lualex_init(&x, text, len);
	while (lualex_next(&x, &tok) != LUALEX_END && tok.kind != LUALEX_BAD) {
		bool field = prev.kind == LUALEX_OTHER && prev.len == 1 &&
		             (text[prev.start] == '.' || text[prev.start] == ':');
		prev = tok;
		if (field || !lualex_is(&x, &tok, "require"))
			continue;
		if (lualex_next(&x, &tok) == LUALEX_OTHER && tok.len == 1 && text[tok.start] == '(') {
			struct lualex_token close;
			struct lualex save = x;
			if (lualex_next(&x, &tok) != LUALEX_STRING ||
			    lualex_next(&x, &close) != LUALEX_OTHER || text[close.start] != ')') {
				x = save; /* not a literal: scan on from the '(' */
				continue;
			}
		} else if (tok.kind != LUALEX_STRING) {
			prev = tok;
			continue;
		}
		prev = tok;
		if (!tok.escapes && add_module(t, text + tok.body, tok.body_len, err, errlen) != 0)
			return -1;
	}
	return 0;
}

int policyfiles_load_modules(struct tenant *t, char *err, size_t errlen)
{
	if (scan_requires(t, t->policy_text, t->policy_len, err, errlen) != 0)
		return -1;
	/* The modules the modules require, breadth first: n_modules grows. */
	for (size_t i = 0; i < t->n_modules; i++)
		if (scan_requires(t, t->modules[i].text, t->modules[i].len, err, errlen) != 0)
			return -1;
	if (t->n_modules)
		qsort(t->modules, t->n_modules, sizeof(*t->modules), cmp_modules);
	return 0;
}

/* SHA-256 over each part, each preceded by its length and a tag, so that
 * moving bytes between parts changes the revision. */
void policyfiles_revision(struct tenant *t)
{
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
	if (ok && EVP_DigestFinal_ex(ctx, md, &mdlen) && mdlen >= 8)
		secret_hex(md, 8, t->policy_revision);
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
