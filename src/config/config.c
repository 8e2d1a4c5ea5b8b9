/*
 * config.c — loading the broker's configuration from one Lua file.
 *
 * Loading has two phases. Parse: the file runs once in the Lua sandbox the
 * caller lends (struct config_sandbox; the broker's is policy_config_sandbox:
 * no I/O, no load/require/setmetatable, a memory cap, an instruction and a
 * CPU time budget); the globals it assigns land in a private environment
 * table, which is then walked against `config_options` (options.c), the
 * single declarative table of every option. The walk only parses and
 * validates: it reads no secret, opens no file and no JWKS source, starts no
 * thread. Resolve (resolve.c), once the sandbox is closed: secrets, policies
 * and their modules and data, public keys, JWKS sources. Nothing else in the
 * broker parses configuration.
 *
 * Owns config_load/free/tenant, the walk of the tables and the checks that
 * involve more than one option. It must never let an error echo a secret's
 * value, and never run code from the file after its chunk has returned: the
 * walk reads the Lua values with raw accesses only. Every error names the
 * file and the full key path. It never builds a Lua state of its own: with
 * no sandbox from the caller, it loads nothing.
 */
#include "config.h"

#include <errno.h>
#include <lauxlib.h>
#include <limits.h>
#include <lua.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "denyset.h"
#include "fileio.h"
#include "loader.h"
#include "redisio.h"
#include "trust.h"

#define CONFIG_FILE_MAX     (1024 * 1024) /* the configuration file itself */
#define CONFIG_MEMORY_MAX   (64u << 20)   /* Lua heap while the file runs */
#define CONFIG_INSTRUCTIONS 10000000LL    /* Lua VM instructions while the file runs */
#define CONFIG_TIMEOUT_MS   1000          /* CPU time while the file runs */
#define TENANT_NAME_MAX     64
/* Every loop's engine compiles every tenant's policy and modules, and a
 * reload builds them again: past this many, a reload would take seconds.
 * One broker process per group of tenants scales further. */
#define TENANTS_MAX 1000

#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
/* Fuzz builds (the Makefile defines the macro for SAN=-fsanitize=fuzzer...):
 * the same sandbox with a tenth of each budget, so that an input that spends
 * one (1% of fuzz_config's inputs took 97% of its time) stops ten times
 * sooner, along the same path. tests/fuzz/fuzz_config.c knows these. */
#undef CONFIG_MEMORY_MAX
#undef CONFIG_INSTRUCTIONS
#undef CONFIG_TIMEOUT_MS
#define CONFIG_MEMORY_MAX   ((64u << 20) / 10)
#define CONFIG_INSTRUCTIONS 1000000LL
#define CONFIG_TIMEOUT_MS   100
#endif

/* ------------------------------------------------------------------------ */
/* Walking the tables                                                        */
/* ------------------------------------------------------------------------ */

static int walk_table(struct loader *ld, const char *pattern, const char *path, int idx, void *base);

static bool tenant_name_valid(const char *s, size_t len)
{
	if (len == 0 || len > TENANT_NAME_MAX || strlen(s) != len)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-'))
			return false;
	}
	return true;
}

/* The tenant's JWT options against each other (its keys are read, and
 * checked against the algorithms, by config_resolve). */
static int check_jwt(struct loader *ld, const char *path, struct tenant *t)
{
	struct jwt_config *j = &t->auth.jwt;
	unsigned asym = j->rules.algorithms & ~(unsigned)JWT_HMAC_ALGS;
	char key[256];

	if (config_secret_given(ld, &j->hmac_secret) && !(j->rules.algorithms & JWT_HMAC_ALGS)) {
		config_key_printf(key, sizeof(key), "%s.auth.jwt.hmac_secret", path);
		return config_fail(ld, key, "is given but no HS* algorithm is listed");
	}
	if (asym && !j->public_key_given && !j->jwks_opts.enabled) {
		config_key_printf(key, sizeof(key), "%s.auth.jwt", path);
		return config_fail(ld, key,
		                   "%s is listed: give public_key = { file = ... } or jwks = { ... }",
		                   jwt_alg_name(asym & -asym));
	}
	if (j->jwks_opts.enabled) {
		config_key_printf(key, sizeof(key), "%s.auth.jwt.jwks", path);
		if (!j->jwks_opts.file == !j->jwks_opts.url)
			return config_fail(ld, key, "give exactly one of file and url");
		if (j->jwks_opts.min_refresh_s > j->jwks_opts.max_cache_s)
			return config_fail(ld, key, "min_refresh_s (%ld) is more than max_cache_s (%ld)",
			                   j->jwks_opts.min_refresh_s, j->jwks_opts.max_cache_s);
		if (!asym)
			return config_fail(
			    ld, key,
			    "is given but only HS* algorithms are listed (a JWKS holds public keys)");
	}
	return 0;
}

/* Checks that involve more than one option of a tenant. */
static int check_tenant(struct loader *ld, const char *path, struct tenant *t)
{
	char key[256];

	if (!t->auth.jwt.enabled && !t->auth.none && !t->auth.n_client_keys && !t->auth.proxy.enabled) {
		config_key_printf(key, sizeof(key), "%s.auth", path);
		return config_fail(
		    ld, key,
		    "no authentication mode: give jwt, client_keys or trusted_proxy (or none = true for "
		    "development)");
	}
	if (t->auth.jwt.enabled && (t->auth.jwt.rules.algorithms & (JWT_HS256 | JWT_HS384 | JWT_HS512)) &&
	    !config_secret_given(ld, &t->auth.jwt.hmac_secret)) {
		config_key_printf(key, sizeof(key), "%s.auth.jwt.hmac_secret", path);
		return config_fail(ld, key, "is required when an HS* algorithm is listed");
	}
	if (t->auth.jwt.enabled && check_jwt(ld, path, t))
		return -1;
	if (t->default_expires_s > t->max_expires_s) {
		config_key_printf(key, sizeof(key), "%s.default_expires_in", path);
		return config_fail(ld, key, "%llds is longer than max_expires_in (%llds)",
		                   t->default_expires_s, t->max_expires_s);
	}
	/* Options that would do nothing where they are: refused like a misspelt
	 * name, since their author believes they act. */
	if (t->rate_limit.burst >= 0 && t->rate_limit.per_second == 0) {
		config_key_printf(key, sizeof(key), "%s.rate_limit.burst", path);
		return config_fail(ld, key, "does nothing without rate_limit.per_second (0: no limit)");
	}
	if (t->rate_limit.per_requester.burst >= 0 && t->rate_limit.per_requester.per_second == 0) {
		config_key_printf(key, sizeof(key), "%s.rate_limit.per_requester.burst", path);
		return config_fail(ld, key,
		                   "does nothing without rate_limit.per_requester.per_second (0: no limit)");
	}
	if (t->rate_limit.burst < 0)
		t->rate_limit.burst = t->rate_limit.per_second;
	if (t->rate_limit.per_second > 0 && t->rate_limit.burst < 1) {
		config_key_printf(key, sizeof(key), "%s.rate_limit.burst", path);
		return config_fail(ld, key, "must be at least 1 when per_second is set");
	}
	if (t->rate_limit.per_requester.burst < 0)
		t->rate_limit.per_requester.burst = t->rate_limit.per_requester.per_second;
	if (t->rate_limit.per_requester.per_second > 0 && t->rate_limit.per_requester.burst < 1) {
		config_key_printf(key, sizeof(key), "%s.rate_limit.per_requester.burst", path);
		return config_fail(ld, key, "must be at least 1 when per_second is set");
	}
	return 0;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int walk_tenants(struct loader *ld, const struct option *o, int idx)
{
	lua_State *L = ld->L;
	struct config *cfg = ld->cfg;
	char path[256];
	size_t n = 0, i;
	char **names;

	if (lua_type(L, idx) != LUA_TTABLE)
		return config_fail(ld, o->name, "expected a table of tenants, got %s",
		                   config_value_kind(L, idx));
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		size_t len;
		const char *name;
		if (lua_type(L, -2) != LUA_TSTRING) {
			lua_pop(L, 2);
			return config_fail(
			    ld, o->name, "tenant names must be strings (write tenants = { name = { ... } })");
		}
		name = lua_tolstring(L, -2, &len);
		if (!tenant_name_valid(name, len)) {
			config_fail(ld, o->name,
			            "\"%s\" is not a valid tenant name (1..%d of A-Z a-z 0-9 _ -)", name,
			            TENANT_NAME_MAX);
			lua_pop(L, 2);
			return -1;
		}
		if (lua_type(L, -1) != LUA_TTABLE) {
			config_key_printf(path, sizeof(path), "%s.%s", o->name, name);
			config_fail(ld, path, "expected a table, got %s", config_value_kind(L, -1));
			lua_pop(L, 2);
			return -1;
		}
		lua_pop(L, 1);
		if (++n > TENANTS_MAX) {
			lua_pop(L, 1);
			return config_fail(ld, o->name, "more than %d tenants (run several brokers)",
			                   TENANTS_MAX);
		}
	}
	if (n == 0)
		return config_fail(ld, o->name, "at least one tenant is required");

	/* Sorted, so that the order of tenants does not depend on Lua's hashing. */
	names = calloc(n, sizeof(char *));
	cfg->tenants = calloc(n, sizeof(struct tenant));
	if (!names || !cfg->tenants) {
		free(names);
		return config_fail(ld, o->name, "out of memory");
	}
	cfg->n_tenants = n;
	i = 0;
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		lua_pop(L, 1);
		cfg->tenants[i].name = strdup(lua_tostring(L, -1));
		names[i] = cfg->tenants[i].name;
		if (!names[i]) {
			lua_pop(L, 1);
			free(names);
			return config_fail(ld, o->name, "out of memory");
		}
		i++;
	}
	qsort(names, n, sizeof(char *), cmp_names);
	for (i = 0; i < n; i++)
		cfg->tenants[i].name = names[i];
	free(names);

	for (i = 0; i < n; i++) {
		struct tenant *t = &cfg->tenants[i];
		int rc;
		config_key_printf(path, sizeof(path), "%s.%s", o->name, t->name);
		lua_pushstring(L, t->name);
		lua_rawget(L, idx);
		rc = walk_table(ld, "tenants.*", path, lua_absindex(L, -1), t);
		lua_pop(L, 1);
		if (rc || check_tenant(ld, path, t) || config_defer_tenant(ld, path, t))
			return -1;
	}
	return 0;
}

static void join_key(char *out, size_t outlen, const char *path, const char *key)
{
	if (path[0])
		config_key_printf(out, outlen, "%s.%s", path, key);
	else
		config_key_printf(out, outlen, "%s", key);
}

/*
 * Walks the Lua table at idx, the section named pattern ("" at the top, or
 * "tenants.*"), found at path ("tenants.default"), storing into base. Unknown
 * keys are reported first: a misspelt name is the likeliest mistake and the
 * most useful message.
 */
static int walk_table(struct loader *ld, const char *pattern, const char *path, int idx, void *base)
{
	lua_State *L = ld->L;
	char key[256];

	luaL_checkstack(L, 8, "configuration nested too deeply");
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		const char *k, *hint;
		lua_pop(L, 1);
		if (lua_type(L, -1) != LUA_TSTRING) {
			const char *kind = config_value_kind(L, -1);
			lua_pop(L, 1);
			return config_fail(ld, path[0] ? path : NULL,
			                   "unexpected %s key: expected names = values", kind);
		}
		k = lua_tostring(L, -1);
		if (strcmp(k, "*") != 0 && config_find_child(pattern, k))
			continue;
		join_key(key, sizeof(key), path, k);
		hint = config_suggest(pattern, k);
		if (hint)
			config_fail(ld, NULL, "unknown key \"%s\" (did you mean \"%s\"?)", key, hint);
		else if (!path[0])
			config_fail(ld, NULL, "unknown key \"%s\" (helper variables must be local)", key);
		else
			config_fail(ld, NULL, "unknown key \"%s\"", key);
		lua_pop(L, 1);
		return -1;
	}

	for (size_t i = 0; i < config_n_options; i++) {
		const struct option *o = &config_options[i];
		const char *k = config_child_key(o, pattern);
		int rc = 0;

		if (!k || strcmp(k, "*") == 0)
			continue;
		join_key(key, sizeof(key), path, k);
		lua_pushstring(L, k);
		lua_rawget(L, idx);
		if (o->type == OPT_MAP) {
			if (lua_isnil(L, -1))
				rc = config_fail(ld, key, "is required (at least one tenant)");
			else
				rc = walk_tenants(ld, o, lua_absindex(L, -1));
		} else if (o->type == OPT_TABLE) {
			bool present = !lua_isnil(L, -1);
			if (present && (o->flags & OPT_UNSUPPORTED))
				rc = config_fail(ld, key, "not supported yet in this version");
			else if (present && lua_type(L, -1) != LUA_TTABLE)
				rc = config_fail(ld, key, "expected a table, got %s",
				                 config_value_kind(L, -1));
			else if (present || !(o->flags & (OPT_PRESENCE | OPT_UNSUPPORTED))) {
				if (!present) {
					lua_pop(L, 1);
					lua_newtable(L); /* absent: every default applies */
				}
				if (o->flags & OPT_PRESENCE)
					memcpy((char *)base + o->offset, &present, sizeof(present));
				rc = walk_table(ld, o->name, key, lua_absindex(L, -1), base);
			}
		} else {
			struct value v;
			memset(&v, 0, sizeof(v));
			rc = config_read_value(ld, o, key, -1, &v);
			if (rc == 0)
				rc = config_store_value(ld, o, key, &v, base);
			config_value_release(&v);
		}
		lua_pop(L, 1);
		if (rc)
			return -1;
	}
	return 0;
}

/* ------------------------------------------------------------------------ */
/* The sandbox the file runs in                                              */
/* ------------------------------------------------------------------------ */

/*
 * The file runs in the sandbox the caller lends (ld->box; the broker's one
 * Lua sandbox, policy_config_sandbox, the policies' own): the charged string,
 * table, math and utf8 libraries (a C loop is charged before it runs), the
 * sealed string metatable, no I/O, load, require, print or setmetatable (so
 * no __gc or __close of the file's can run after it returns, nor any of its
 * code while the walk reads its globals), under an instruction budget, a CPU
 * time budget and a memory cap. A syntax error never quotes the file's text.
 * The walk it runs reads and checks values only; config_resolve does the rest
 * after box->close has closed the state.
 */
struct walk_ctx {
	struct loader *ld;
	int rc;
};

/* Runs protected on the sandbox's state: arguments ctx, the file's globals. */
static int walk_protected(lua_State *L)
{
	struct walk_ctx *w = lua_touserdata(L, 1);

	w->rc = walk_table(w->ld, "", "", 2, w->ld->cfg);
	return 0;
}

static int run_file(struct loader *ld, const char *text, size_t len)
{
	const struct config_sandbox *sb = ld->box;
	struct walk_ctx w = {.ld = ld, .rc = -1};
	void *box;
	char why[512];
	lua_State *L;
	int rc = -1;

	box = sb->open(CONFIG_INSTRUCTIONS, CONFIG_TIMEOUT_MS, CONFIG_MEMORY_MAX, why, sizeof(why));
	if (!box)
		return config_fail(ld, NULL, "%s", why);
	L = sb->lua(box);
	ld->L = L;
	if (sb->run(box, ld->shown, text, len, why, sizeof(why)) != 0) {
		/* Lua's messages start with "<file>:<line>:" already (Lua
		 * shortens long names). */
		if (strncmp(why, ld->shown, strlen(ld->shown)) == 0)
			snprintf(ld->err, ld->errlen, "%s", why);
		else
			config_fail(ld, NULL, "%s", why);
		goto out;
	}
	lua_pop(L, 1); /* the file's result: its globals are the configuration */
	lua_pushcfunction(L, walk_protected);
	lua_pushlightuserdata(L, &w);
	lua_pushvalue(L, -3);
	if (lua_pcall(L, 2, 0, 0) != LUA_OK)
		config_fail(ld, NULL, "out of memory");
	else if (w.rc == 0)
		rc = 0;
out:
	ld->L = NULL;
	sb->close(box);
	return rc;
}

/* ------------------------------------------------------------------------ */
/* Public functions                                                          */
/* ------------------------------------------------------------------------ */

/* Phase one: the file, parsed and validated in the sandbox into ld->cfg;
 * what needs the environment, other files or the network is only noted. */
static int parse(struct loader *ld, const char *path)
{
	struct config *cfg = ld->cfg;
	char why[512], *text = NULL;
	size_t len = 0;
	int rc;

	cfg->path = realpath(path, NULL);
	if (!cfg->path)
		return config_fail(ld, NULL, "%s", strerror(errno));
	cfg->dir = fileio_dir(cfg->path);
	if (!cfg->dir)
		return config_fail(ld, NULL, "out of memory");
	if (fileio_read(cfg->path, CONFIG_FILE_MAX, 0, &text, &len, why, sizeof(why)) != 0)
		return config_fail(ld, NULL, "%s", why);
	rc = run_file(ld, text, len);
	free(text);
	return rc;
}

struct config *config_load(const char *path, const struct config_sandbox *box, char *err, size_t errlen)
{
	return config_load_for(path, box, CONFIG_USE_SERVE, err, errlen);
}

struct config *config_load_for(const char *path, const struct config_sandbox *box, enum config_use use,
                               char *err, size_t errlen)
{
	char fallback[8];
	struct loader ld = {.shown = path, .box = box, .use = use, .err = err, .errlen = errlen};
	int rc;

	if (!err || errlen == 0) {
		ld.err = fallback;
		ld.errlen = sizeof(fallback);
	}
	ld.err[0] = '\0';
	if (!box || !box->open || !box->lua || !box->run || !box->close) {
		config_fail(&ld, NULL, "no sandbox to run the configuration file in");
		return NULL;
	}
	ld.cfg = calloc(1, sizeof(*ld.cfg));
	if (!ld.cfg) {
		config_fail(&ld, NULL, "out of memory");
		return NULL;
	}
	/* Phase two, outside the sandbox: secrets, policy files, keys, JWKS. */
	rc = parse(&ld, path) == 0 && config_resolve(&ld) == 0 && config_shadow_build(&ld) == 0 ? 0 : -1;
	config_pending_free(&ld);
	if (rc != 0) {
		config_free(ld.cfg);
		return NULL;
	}
	return ld.cfg;
}

void config_free(struct config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < cfg->n_tenants; i++) {
		struct tenant *t = &cfg->tenants[i];
		free(t->name);
		secret_clear(&t->api_key);
		free(t->policy_path);
		free(t->policy_dir);
		free(t->policy_text);
		policyfiles_free(t);
		secret_clear(&t->auth.jwt.hmac_secret);
		ident_jwt_release(&t->auth.jwt);
		free(t->auth.jwt.jwks_opts.file);
		free(t->auth.jwt.jwks_opts.url);
		free(t->auth.jwt.jwks_opts.ca_file);
		free(t->courier_base_url);
		free(t->auth.jwt.rules.typ);
		for (size_t k = 0; k < t->auth.n_client_keys; k++) {
			free(t->auth.client_keys[k].name);
			secret_clear(&t->auth.client_keys[k].key);
		}
		free(t->auth.client_keys);
		free(t->auth.proxy.header);
		free(t->auth.proxy.from);
		free(t->auth.jwt.rules.issuer);
		free(t->auth.jwt.rules.audience);
		free(t->auth.jwt.rules.subject_claim);
		config_free_list(t->allowed_scopes);
		config_free_list(t->cors_origins);
		free(t->deny_path);
		denyset_unref(t->deny_users);
		free(t->shadow_path);
	}
	config_shadow_free(cfg->shadow);
	free(cfg->tenants);
	free(cfg->path);
	free(cfg->dir);
	free(cfg->listen_host);
	free(cfg->admin_host);
	free(cfg->tls.cert_path);
	if (cfg->tls.cert_pem) /* a refused file may have held a key */
		OPENSSL_cleanse(cfg->tls.cert_pem, cfg->tls.cert_len);
	free(cfg->tls.cert_pem);
	secret_clear(&cfg->tls.key);
	free(cfg->audit_file);
	free(cfg->courier_base_url);
	free(cfg->courier_ca_file);
	trust_free(cfg->courier_trust);
	free(cfg->cluster.host);
	free(cfg->cluster.user);
	free(cfg->cluster.name);
	free(cfg->cluster.ca_file);
	free(cfg->cluster.cert_path);
	secret_clear(&cfg->cluster.key);
	redisio_tls_free(cfg->cluster.tls_ctx);
	secret_clear(&cfg->cluster.password);
	secret_clear(&cfg->cluster.cache_key);
	free(cfg);
}

const struct tenant *config_tenant(const struct config *cfg, const char *name)
{
	if (!cfg || !name)
		return NULL;
	for (size_t i = 0; i < cfg->n_tenants; i++)
		if (strcmp(cfg->tenants[i].name, name) == 0)
			return &cfg->tenants[i];
	return NULL;
}
