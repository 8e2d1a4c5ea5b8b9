/*
 * resolve.c — the second phase of loading: what the file names, read from
 * outside the sandbox.
 *
 * While the file's Lua runs, the walk only parses and validates: each
 * secret, policy, data file and public key it meets is written down
 * (config_defer_*, pending.c), with the key path its messages name. Once the sandbox is
 * closed, config_resolve reads them in the order the walk met them: secrets
 * (env or file), policies with their modules and data, PEM keys; then, per
 * tenant, binds the JWT algorithms to the keys, opens the JWKS source and
 * builds the HMAC key. It must never run inside the
 * configuration's Lua state, never echo a secret, and never leave a
 * resource it acquired unowned: everything lands in struct config, which
 * config_free releases.
 */
#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "denyset.h"
#include "fileio.h"
#include "loader.h"
#include "policyfiles.h"
#include "tls.h"

#define PUBLIC_KEY_FILE_MAX (1024 * 1024)
#define TLS_CERT_FILE_MAX   (1024 * 1024)

static int resolve_secret(struct loader *ld, struct pending *p)
{
	char why[512];

	if (secret_load(&p->ref, p->dst, why, sizeof(why)) != 0)
		return config_fail(ld, p->key, "%s", why);
	return 0;
}

/* The file p names: its real path into *real, its text into *text. */
static int read_named(struct loader *ld, struct pending *p, size_t max, char **real, char **text, size_t *len)
{
	char why[512];

	*real = realpath(p->path, NULL);
	if (!*real)
		return config_fail(ld, p->key, "%s: %s", p->path, strerror(errno));
	if (fileio_read(*real, max, 0, text, len, why, sizeof(why)))
		return config_fail(ld, p->key, "%s: %s", *real, why);
	return 0;
}

static int resolve_policy(struct loader *ld, struct pending *p)
{
	struct tenant *t = p->t;
	char why[512];

	if (read_named(ld, p, POLICY_FILE_MAX, &t->policy_path, &t->policy_text, &t->policy_len))
		return -1;
	t->policy_dir = fileio_dir(t->policy_path);
	if (!t->policy_dir)
		return config_fail(ld, p->key, "out of memory");
	if (policyfiles_load_modules(t, why, sizeof(why)) != 0)
		return config_fail(ld, p->key, "%s", why);
	policyfiles_revision(t);
	return 0;
}

/* After the tenant's policy (its row comes first). */
static int resolve_data(struct loader *ld, struct pending *p)
{
	struct tenant *t = p->t;

	if (read_named(ld, p, DATA_FILE_MAX, &t->data_path, &t->data_text, &t->data_len))
		return -1;
	policyfiles_revision(t);
	return 0;
}

static int resolve_public_key(struct loader *ld, struct pending *p)
{
	struct tenant *t = p->t;
	char why[256], *pem = NULL;
	size_t len = 0;

	/* A public key is not a secret: any file mode is fine. */
	if (fileio_read(p->path, PUBLIC_KEY_FILE_MAX, 0, &pem, &len, why, sizeof(why)) == 0)
		t->auth.jwt.public_key = jwt_key_pem(pem, len, why, sizeof(why));
	free(pem);
	if (!t->auth.jwt.public_key)
		return config_fail(ld, p->key, "%s: %s", p->path, why);
	return 0;
}

/* Loads one client key; two names for one key would make the identity
 * depend on list order, so it must differ from every earlier one. */
static int resolve_client_key(struct loader *ld, struct pending *p)
{
	struct client_key *keys = p->t->auth.client_keys, *ck = &keys[p->index];
	char sub[256], why[512];

	config_key_printf(sub, sizeof(sub), "%s[%zu].key", p->key, p->index + 1);
	if (secret_load(&p->ref, &ck->key, why, sizeof(why)))
		return config_fail(ld, sub, "%s", why);
	for (size_t j = 0; j < p->index; j++)
		if (secret_equals(&keys[j].key, ck->key.data, ck->key.len))
			return config_fail(ld, sub, "the same key as %s[%zu] (each caller needs its own key)",
			                   p->key, j + 1);
	return 0;
}

/* Binds the tenant's algorithms to its public key, opens its JWKS, builds
 * the HMAC key (what the walk's checks could not do without the files). */
static int resolve_tenant(struct loader *ld, struct pending *p)
{
	struct tenant *t = p->t;
	struct jwt_config *j = &t->auth.jwt;
	unsigned asym = j->rules.algorithms & ~(unsigned)JWT_HMAC_ALGS;
	char key[256], why[512];

	if (!j->enabled)
		return 0;
	if (j->public_key && !(jwt_key_algs(j->public_key) & j->rules.algorithms)) {
		config_key_printf(key, sizeof(key), "%s.auth.jwt.public_key", p->key);
		return config_fail(ld, key, "is an %s key, but no algorithm it verifies is listed",
		                   jwt_key_describe(j->public_key));
	}
	if (j->public_key && !j->jwks_opts.enabled && (asym & ~jwt_key_algs(j->public_key))) {
		unsigned bad = asym & ~jwt_key_algs(j->public_key);
		config_key_printf(key, sizeof(key), "%s.auth.jwt.algorithms", p->key);
		return config_fail(ld, key, "%s is listed, but the public key is %s (and there is no jwks)",
		                   jwt_alg_name(bad & -bad), jwt_key_describe(j->public_key));
	}
	if (j->jwks_opts.enabled && !(j->jwks = jwks_open(&j->jwks_opts, t->name, why, sizeof(why)))) {
		config_key_printf(key, sizeof(key), "%s.auth.jwt.jwks", p->key);
		return config_fail(ld, key, "%s", why);
	}
	if (ident_jwt_prepare(j, why, sizeof(why))) {
		config_key_printf(key, sizeof(key), "%s.auth.jwt.hmac_secret", p->key);
		return config_fail(ld, key, "%s", why);
	}
	return 0;
}

/* After tls.key (its secret comes first): the certificate file, and the
 * pair checked as the listener would use it. */
static int resolve_tls(struct loader *ld, struct pending *p)
{
	struct config *cfg = ld->cfg;
	char why[512], desc[384];

	/* A certificate is not a secret: any file mode is fine. */
	if (fileio_read(p->path, TLS_CERT_FILE_MAX, 0, &cfg->tls.cert_pem, &cfg->tls.cert_len, why,
	                sizeof(why)) != 0)
		return config_fail(ld, "tls.cert", "%s: %s", p->path, why);
	if (tls_check_pair(cfg->tls.cert_pem, cfg->tls.cert_len, &cfg->tls.key, desc, sizeof(desc), why,
	                   sizeof(why)) != 0)
		return config_fail(ld, p->key, "%s", why);
	return 0;
}

/* cluster.redis.cert with its key, loaded now: checked as tls.cert's pair
 * is, then the identity the rediss:// context presents. */
static int resolve_redis_tls(struct loader *ld, struct pending *p)
{
	struct cluster_conf *c = &ld->cfg->cluster;
	unsigned char md[SECRET_DIGEST_LEN];
	char why[512], *pem = NULL;
	size_t len = 0;
	int rc = 0;

	if (!c->tls_ctx)
		return config_fail(ld, p->key, "only with a rediss:// url (TLS)");
	if (fileio_read(p->path, TLS_CERT_FILE_MAX, 0, &pem, &len, why, sizeof(why)) != 0)
		return config_fail(ld, p->key, "%s: %s", p->path, why);
	if (tls_client_identity(c->tls_ctx, pem, len, &c->key, why, sizeof(why)) != 0)
		rc = config_fail(ld, p->key, "%s", why);
	else if (secret_sha256(pem, len, md))
		secret_hex(md, sizeof(md), c->cert_digest); /* a renewal in place is a change (reload.c) */
	else
		rc = config_fail(ld, p->key, "cannot hash the certificate");
	OPENSSL_cleanse(pem, len); /* a refused file may have held a key */
	free(pem);
	return rc;
}

/* A deny file that cannot be read at load fails the load (fail closed). */
static int resolve_deny(struct loader *ld, struct pending *p)
{
	struct tenant *t = p->t;
	char why[512];

	t->deny_users = denyset_load(p->path, why, sizeof(why));
	if (!t->deny_users)
		return config_fail(ld, p->key, "%s", why);
	t->deny_path = p->path;
	p->path = NULL;
	return 0;
}

/* After cluster.cache_key's secret: 64 hex digits (openssl rand -hex 32)
 * become the 32 bytes of an AES-256 key (OpenSSL decodes them). Never echoed. */
static int resolve_cache_key(struct loader *ld, struct pending *p)
{
	struct secret *k = &ld->cfg->cluster.cache_key;
	char hex[65];
	unsigned char raw[32];
	size_t n = 0;
	int rc = -1;

	if (k->len == sizeof(hex) - 1) {
		memcpy(hex, k->data, k->len);
		hex[k->len] = '\0';
		if (OPENSSL_hexstr2buf_ex(raw, sizeof(raw), &n, hex, '\0') == 1 && n == sizeof(raw))
			rc = 0;
	}
	if (rc == 0 && secret_set(k, raw, sizeof(raw)) != 0)
		rc = config_fail(ld, p->key, "out of memory");
	else if (rc != 0)
		config_fail(ld, p->key, "must be 64 hex digits (32 random bytes: openssl rand -hex 32)");
	OPENSSL_cleanse(hex, sizeof(hex));
	OPENSSL_cleanse(raw, sizeof(raw));
	return rc;
}

/* Whether ld's use needs what p names: `eval` never reads the Courier API
 * keys nor the TLS pair, `replay` only the policies and their data. */
static bool wanted(const struct loader *ld, const struct pending *p)
{
	if (ld->use == CONFIG_USE_POLICIES)
		return p->kind == PENDING_POLICY || p->kind == PENDING_DATA;
	if (ld->use != CONFIG_USE_EVAL)
		return true;
	if (p->kind == PENDING_TLS || (p->kind == PENDING_SECRET && p->dst == &ld->cfg->tls.key))
		return false;
	if (p->kind == PENDING_CACHE_KEY || p->kind == PENDING_REDIS_TLS ||
	    (p->kind == PENDING_SECRET &&
	     (p->dst == &ld->cfg->cluster.password || p->dst == &ld->cfg->cluster.cache_key ||
	      p->dst == &ld->cfg->cluster.key)))
		return false;
	for (size_t i = 0; p->kind == PENDING_SECRET && i < ld->cfg->n_tenants; i++)
		if (p->dst == &ld->cfg->tenants[i].api_key)
			return false;
	return true;
}

int config_resolve(struct loader *ld)
{
	static int (*const resolve[])(struct loader *, struct pending *) = {
	    [PENDING_SECRET] = resolve_secret,
	    [PENDING_POLICY] = resolve_policy,
	    [PENDING_DATA] = resolve_data,
	    [PENDING_PUBLIC_KEY] = resolve_public_key,
	    [PENDING_CLIENT_KEY] = resolve_client_key,
	    [PENDING_TENANT] = resolve_tenant,
	    [PENDING_TLS] = resolve_tls,
	    [PENDING_DENY] = resolve_deny,
	    [PENDING_CACHE_KEY] = resolve_cache_key,
	    [PENDING_REDIS_TLS] = resolve_redis_tls,
	};

	for (size_t i = 0; i < ld->n_pending; i++)
		if (wanted(ld, &ld->pending[i]) && resolve[ld->pending[i].kind](ld, &ld->pending[i]) != 0)
			return -1;
	return 0;
}
