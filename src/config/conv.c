/*
 * conv.c — the converters: options that need more than a generic store.
 *
 * Owns the checks of one option's value that the table cannot express
 * (host:port, URLs, policy paths, algorithms, scopes, origins, client keys,
 * proxy headers and CIDRs) and their stores. It must never accept what it
 * cannot check, never echo a secret, and never reach beyond the option it
 * was handed but for earlier rows of the same table it documents.
 */
#include <arpa/inet.h>
#include <lauxlib.h>
#include <lua.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cidr.h"
#include "config.h"
#include "fileio.h"
#include "loader.h"
#include "log.h"
#include "scope.h"
#include "trust.h"

/* host:port or [ipv6]:port into *host_out (malloc'ed) and *port_out. */
static int parse_host_port(struct loader *ld, const char *key, struct value *v, char **host_out,
                           unsigned short *port_out)
{
	const char *s = v->str, *host, *port;
	size_t len = v->len, hostlen, portlen;
	unsigned long n = 0;

	if (s[0] == '[') {
		const char *close = memchr(s, ']', len);
		if (!close || close[1] != ':')
			goto bad;
		host = s + 1;
		hostlen = (size_t)(close - host);
		port = close + 2;
		for (size_t i = 0; i < hostlen; i++)
			if (!strchr("0123456789abcdefABCDEF:.%", host[i]))
				goto bad;
	} else {
		const char *colon = strrchr(s, ':');
		if (!colon)
			goto bad;
		host = s;
		hostlen = (size_t)(colon - s);
		port = colon + 1;
		if (memchr(host, ':', hostlen))
			return config_fail(
			    ld, key, "\"%s\": an IPv6 address goes in brackets, as in \"[::1]:8080\"", s);
		for (size_t i = 0; i < hostlen; i++)
			if (!strchr("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-",
			            host[i]))
				goto bad;
	}
	portlen = len - (size_t)(port - s);
	if (hostlen == 0 || hostlen > 255 || portlen == 0 || portlen > 5)
		goto bad;
	for (size_t i = 0; i < portlen; i++) {
		if (port[i] < '0' || port[i] > '9')
			goto bad;
		n = n * 10 + (unsigned long)(port[i] - '0');
	}
	if (n > 65535)
		return config_fail(
		    ld, key, "\"%s\": the port must be 0..65535 (0: any free port, logged at start)", s);
	*host_out = strndup(host, hostlen);
	if (!*host_out)
		return config_fail(ld, key, "out of memory");
	/* What serve can bind (listen_address): an IP address or localhost; a
	 * host name would pass here and fail at start, after `check` said ok. */
	{
		unsigned char addr[sizeof(struct in6_addr)];
		if (strcmp(*host_out, "localhost") != 0 && inet_pton(AF_INET, *host_out, addr) != 1 &&
		    inet_pton(AF_INET6, *host_out, addr) != 1) {
			free(*host_out);
			*host_out = NULL;
			return config_fail(ld, key,
			                   "\"%s\": the host must be an IP address or localhost, not a name "
			                   "(such as \"0.0.0.0:8080\" or \"[::]:8080\")",
			                   s);
		}
	}
	*port_out = (unsigned short)n;
	return 0;
bad:
	return config_fail(ld, key, "\"%s\" is not host:port (such as \"127.0.0.1:8080\" or \"[::1]:8080\")",
	                   s);
}

static const char *listen_override; /* serve --listen; set before any load */

void config_override_listen(const char *addr)
{
	listen_override = addr;
}

int config_conv_listen(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct config *cfg = base;
	struct value o = {.present = true};

	if (listen_override) {
		o.str = listen_override;
		o.len = strlen(listen_override);
		return parse_host_port(ld, "--listen", &o, &cfg->listen_host, &cfg->listen_port);
	}
	return parse_host_port(ld, key, v, &cfg->listen_host, &cfg->listen_port);
}

int config_conv_admin_listen(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct config *cfg = base;

	if (!v->present)
		return 0;
	if (parse_host_port(ld, key, v, &cfg->admin_host, &cfg->admin_port) != 0)
		return -1;
	if (strcmp(cfg->admin_host, cfg->listen_host) == 0 && cfg->admin_port == cfg->listen_port &&
	    cfg->admin_port != 0)
		return config_fail(ld, key, "\"%s\" is also `listen`: give the probes their own address",
		                   v->str);
	return 0;
}

int config_conv_log_level(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct config *cfg = base;
	int lv = v->present ? log_level_parse(v->str) : LOG_INFO;

	if (lv < 0)
		return config_fail(ld, key, "\"%s\" is not a level: use debug, info, warn or error", v->str);
	cfg->log_level = lv;
	return 0;
}

int config_conv_audit_file(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct config *cfg = base;

	if (!v->present)
		return 0;
	if (!v->str[0])
		return config_fail(ld, key, "must name a file");
	if (!(cfg->audit_file = fileio_join(ld->cfg->dir, v->str)))
		return config_fail(ld, key, "out of memory");
	return 0;
}

int config_conv_per_ip(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct config *cfg = base;

	(void)ld;
	(void)key;
	/* max_connections is an earlier row, so it is already read. */
	cfg->max_connections_per_ip = v->present ? (unsigned)v->i : (cfg->max_connections + 3) / 4;
	return 0;
}

/* Checks the URL s (len bytes; from: "" or where it came from, for the
 * message) and stores a copy without trailing slashes in *out. */
static int take_base_url(struct loader *ld, const char *key, const char *s, size_t len, const char *from,
                         char **out)
{
	size_t skip;

	if (strncmp(s, "https://", 8) == 0)
		skip = 8;
	else if (strncmp(s, "http://", 7) == 0)
		skip = 7;
	else
		return config_fail(ld, key, "%smust start with https:// or http://", from);
	if (len == skip || s[skip] == '/')
		return config_fail(ld, key, "%shas no host", from);
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
			return config_fail(ld, key, "%smust not contain spaces, control or non-ASCII bytes",
			                   from);
	/* A password in a URL would be a secret outside {env=...}/{file=...}. */
	if (secret_in_url(s))
		return config_fail(
		    ld, key, "%smust not carry a user name or password (the key goes in api_key)", from);
	/* The API key goes in the Authorization header: never in clear text
	 * beyond this machine. */
	if (!secret_url_transport_ok(s))
		return config_fail(
		    ld, key, "%smust start with https:// (http:// only to 127.0.0.1, [::1] or localhost)",
		    from);
	/* "https://api.courier.com/" and ".../auth" joins must not yield "//auth". */
	while (len > skip + 1 && s[len - 1] == '/')
		len--;
	free(*out);
	*out = strndup(s, len);
	if (!*out)
		return config_fail(ld, key, "out of memory");
	return 0;
}

/* A region's name to its base URL into *out (the row before base_url). */
static int take_region(struct loader *ld, const char *key, struct value *v, char **out)
{
	const char *url = config_region_url(v->str);

	if (!url)
		return config_fail(ld, key, "unknown region \"%s\" (known: \"us\", \"eu\")", v->str);
	free(*out);
	*out = strdup(url);
	return *out ? 0 : config_fail(ld, key, "out of memory");
}

int config_conv_region(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct config *cfg = base;

	/* Absent: base_url's converter falls back to "us". */
	return v->present ? take_region(ld, key, v, &cfg->courier_base_url) : 0;
}

int config_conv_base_url(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct config *cfg = base;
	const char *env = getenv("COURIER_BASE_URL");

	/* region is the row before: a URL already there came from it. */
	if (v->present && cfg->courier_base_url)
		return config_fail(ld, key, "give region or base_url, not both");
	/* The official SDKs read COURIER_BASE_URL; the broker honours it the same way. */
	if (env && *env)
		return take_base_url(ld, key, env, strlen(env),
		                     "from the environment (COURIER_BASE_URL): ", &cfg->courier_base_url);
	if (v->present)
		return take_base_url(ld, key, v->str, v->len, "", &cfg->courier_base_url);
	if (cfg->courier_base_url)
		return 0;
	cfg->courier_base_url = strdup(config_region_url("us"));
	return cfg->courier_base_url ? 0 : config_fail(ld, key, "out of memory");
}

int config_conv_tenant_region(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct tenant *t = base;

	return v->present ? take_region(ld, key, v, &t->courier_base_url) : 0;
}

/* The tenant's own upstream; COURIER_BASE_URL overrides only the global one. */
int config_conv_tenant_base_url(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct tenant *t = base;

	if (!v->present)
		return 0;
	if (t->courier_base_url)
		return config_fail(ld, key, "give region or base_url, not both");
	return take_base_url(ld, key, v->str, v->len, "", &t->courier_base_url);
}

/* A PEM file of trust anchors, relative to the config's folder: read now so
 * a missing or empty file fails the load, not the first call. */
static int take_ca_file(struct loader *ld, const char *key, struct value *v, char **out)
{
	char *path = fileio_join(ld->cfg->dir, v->str);
	BIO *bio;
	X509 *x;
	int n = 0;

	if (!path)
		return config_fail(ld, key, "out of memory");
	bio = BIO_new_file(path, "r");
	if (!bio) {
		free(path);
		return config_fail(ld, key, "cannot read %s", v->str);
	}
	while (n < 100000 && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
		X509_free(x);
		n++;
	}
	BIO_free(bio);
	ERR_clear_error();
	if (n == 0) {
		free(path);
		return config_fail(ld, key, "%s holds no PEM certificate", v->str);
	}
	free(*out);
	*out = path;
	return 0;
}

int config_conv_ca_file(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct config *cfg = base;

	char err[512];

	if (!v->present)
		return 0;
	if (take_ca_file(ld, key, v, &cfg->courier_ca_file))
		return -1;
	/* Added to the system's anchors, not in their place (trust.c). */
	trust_free(cfg->courier_trust);
	if (!(cfg->courier_trust = trust_load(cfg->courier_ca_file, err, sizeof(err))))
		return config_fail(ld, key, "%s", err);
	return 0;
}

/* The row after url: only a fetched set has a TLS peer to trust. */
int config_conv_jwks_ca_file(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct tenant *t = base;

	if (!v->present)
		return 0;
	if (!t->auth.jwt.jwks_opts.url)
		return config_fail(ld, key, "only with url");
	return take_ca_file(ld, key, v, &t->auth.jwt.jwks_opts.ca_file);
}

int config_conv_policy(struct loader *ld, const char *key, struct value *v, void *base)
{
	char *joined = fileio_join(ld->cfg->dir, v->str);

	if (!joined)
		return config_fail(ld, key, "out of memory");
	/* Read, with its modules, by config_resolve. */
	return config_defer_file(ld, PENDING_POLICY, key, base, joined);
}

/* Runs after config_conv_policy (the row follows it), present or not. */
int config_conv_data(struct loader *ld, const char *key, struct value *v, void *base)
{
	char *joined;

	if (!v->present)
		return 0;
	joined = fileio_join(ld->cfg->dir, v->str);
	if (!joined)
		return config_fail(ld, key, "out of memory");
	return config_defer_file(ld, PENDING_DATA, key, base, joined);
}

/* tenants.*.deny_users.file: read (and parsed) by config_resolve. */
int config_conv_deny_file(struct loader *ld, const char *key, struct value *v, void *base)
{
	char *joined = fileio_join(ld->cfg->dir, v->str);

	if (!joined)
		return config_fail(ld, key, "out of memory");
	return config_defer_file(ld, PENDING_DENY, key, base, joined);
}

/* tenants.*.shadow_policy: read by config_shadow_build once the live policy is. */
int config_conv_shadow_policy(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct tenant *t = base;

	if (!v->present)
		return 0;
	if (!(t->shadow_path = fileio_join(ld->cfg->dir, v->str)))
		return config_fail(ld, key, "out of memory");
	return 0;
}

int config_conv_algorithms(struct loader *ld, const char *key, struct value *v, void *base)
{
	/* Names worth probing for the "supported:" hint; jwt.c decides which are. */
	static const char *const known[] = {"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256",
	                                    "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519"};
	struct tenant *t = base;
	char sub[256], supported[128] = "";

	if (v->n == 0)
		return config_fail(ld, key, "must list at least one algorithm");
	for (size_t i = 0; i < v->n; i++) {
		unsigned a = jwt_alg_from_name(v->list[i]);
		if (a) {
			t->auth.jwt.rules.algorithms |= a;
			continue;
		}
		for (size_t k = 0; k < sizeof(known) / sizeof(known[0]); k++) {
			if (!jwt_alg_from_name(known[k]))
				continue;
			if (supported[0])
				strncat(supported, ", ", sizeof(supported) - strlen(supported) - 1);
			strncat(supported, known[k], sizeof(supported) - strlen(supported) - 1);
		}
		config_key_printf(sub, sizeof(sub), "%s[%zu]", key, i + 1);
		return config_fail(ld, sub, "unsupported algorithm \"%s\" (supported: %s)", v->list[i],
		                   supported);
	}
	return 0;
}

int config_conv_scopes(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct tenant *t = base;
	char sub[256];
	size_t n = 0;

	if (!v->present) {
		const char *const *tier = scope_tier("push");
		size_t k = 0;
		if (!tier)
			return config_fail(ld, key, "internal error: no push tier");
		while (tier[k])
			k++;
		t->allowed_scopes = calloc(k + 1, sizeof(char *));
		if (!t->allowed_scopes)
			return config_fail(ld, key, "out of memory");
		for (size_t i = 0; i < k; i++) {
			t->allowed_scopes[i] = strdup(tier[i]);
			if (!t->allowed_scopes[i])
				return config_fail(ld, key, "out of memory");
			t->n_allowed_scopes = i + 1;
		}
		return 0;
	}
	if (v->n == 0)
		return config_fail(ld, key,
		                   "must not be empty (leave it out for the default: the push tier)");
	for (size_t i = 0; i < v->n; i++) {
		const char *s = v->list[i];
		bool dup = false;
		config_key_printf(sub, sizeof(sub), "%s[%zu]", key, i + 1);
		if (!scope_token_valid(s, strlen(s)))
			return config_fail(
			    ld, sub,
			    "\"%s\" is not a valid scope (1..%d printable ASCII characters, no spaces)", s,
			    SCOPE_MAX_LEN);
		if (strncmp(s, "user_id:", 8) == 0)
			return config_fail(
			    ld, sub,
			    "\"%s\": user_id scopes are not allowed here (the broker adds the one for "
			    "the requested user)",
			    s);
		for (size_t j = 0; j < n; j++)
			dup = dup || strcmp(v->list[j], s) == 0;
		if (dup) {
			free(v->list[i]);
			continue;
		}
		v->list[n++] = v->list[i];
	}
	v->list[n] = NULL;
	t->allowed_scopes = v->list;
	t->n_allowed_scopes = n;
	v->list = NULL;
	return 0;
}

/* An origin is scheme://host[:port] exactly as a browser sends it. */
static bool origin_valid(const char *s)
{
	const char *host;
	size_t n = strlen(s);

	if (strncmp(s, "https://", 8) == 0)
		host = s + 8;
	else if (strncmp(s, "http://", 7) == 0)
		host = s + 7;
	else
		return false;
	if (!*host || n > 255)
		return false;
	for (const char *p = host; *p; p++)
		if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]", *p))
			return false;
	return true;
}

int config_conv_cors(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct tenant *t = base;
	char sub[256];

	if (!v->present)
		return 0;
	for (size_t i = 0; i < v->n; i++) {
		config_key_printf(sub, sizeof(sub), "%s[%zu]", key, i + 1);
		if (strcmp(v->list[i], "*") == 0)
			return config_fail(ld, sub,
			                   "\"*\" is refused: list each origin that may ask for tokens");
		if (!origin_valid(v->list[i]))
			return config_fail(ld, sub, "\"%s\" is not an origin (scheme://host[:port], no path)",
			                   v->list[i]);
	}
	t->cors_origins = v->list;
	t->n_cors_origins = v->n;
	v->list = NULL;
	return 0;
}

int config_conv_burst(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct tenant *t = base;

	(void)ld;
	(void)key;
	/* Absent: check_tenant makes it per_second, which is read after this row. */
	t->rate_limit.burst = v->present ? v->num : -1;
	return 0;
}

int config_conv_requester_burst(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct tenant *t = base;

	(void)ld;
	(void)key;
	t->rate_limit.per_requester.burst = v->present ? v->num : -1;
	return 0;
}

int config_conv_public_key(struct loader *ld, const char *key, struct value *v, void *base)
{
	char *path = fileio_join(ld->cfg->dir, v->str);

	if (!path)
		return config_fail(ld, key, "out of memory");
	return config_defer_file(ld, PENDING_PUBLIC_KEY, key, base, path);
}

int config_conv_jwks_file(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct tenant *t = base;

	if (!v->present)
		return 0;
	if (!(t->auth.jwt.jwks_opts.file = fileio_join(ld->cfg->dir, v->str)))
		return config_fail(ld, key, "out of memory");
	return 0;
}

#define CLIENT_KEYS_MAX     64
#define CLIENT_KEY_NAME_MAX 128

/* The list's shape: 1..CLIENT_KEYS_MAX entries at 1..n, no holes. */
static int client_keys_shape(struct loader *ld, const char *key, int idx, size_t *n_out)
{
	size_t n = 0;
	int shape = config_list_length(ld->L, idx, &n);

	if (shape == -1)
		return config_fail(ld, key, "expected a list { { name = ..., key = { env = ... } }, ... }");
	if (shape == -2 || n == 0)
		return config_fail(ld, key,
		                   n ? "expected a list without holes" : "must list at least one key");
	if (n > CLIENT_KEYS_MAX)
		return config_fail(ld, key, "at most %d keys", CLIENT_KEYS_MAX);
	*n_out = n;
	return 0;
}

/* The entry's name into *out: 0, -1 when it is not 1..CLIENT_KEY_NAME_MAX
 * printable ASCII characters without spaces, -2 when out of memory. */
static int client_key_name(lua_State *L, int entry, char **out)
{
	const char *name;
	size_t len = 0;
	int rc;

	lua_getfield(L, entry, "name");
	name = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
	rc = name && len > 0 && len <= CLIENT_KEY_NAME_MAX && strlen(name) == len ? 0 : -1;
	for (size_t c = 0; rc == 0 && c < len; c++)
		if ((unsigned char)name[c] <= 0x20 || (unsigned char)name[c] >= 0x7f)
			rc = -1;
	if (rc == 0 && !(*out = strdup(name)))
		rc = -2;
	lua_pop(L, 1);
	return rc;
}

/* One entry { name = ..., key = { env = ... } }, at the top of the stack:
 * its name stored and checked against the earlier ones, its key read as a
 * reference (loaded, and checked against the earlier keys, by
 * config_resolve). */
static int read_client_key(struct loader *ld, const char *key, struct tenant *t, size_t i)
{
	lua_State *L = ld->L;
	struct client_key *ck = &t->auth.client_keys[i];
	int entry = lua_gettop(L), rc;
	struct value kv;
	char sub[256];

	config_key_printf(sub, sizeof(sub), "%s[%zu]", key, i + 1);
	if (lua_type(L, entry) != LUA_TTABLE)
		return config_fail(ld, sub, "expected { name = ..., key = { env = ... } }, got %s",
		                   config_value_kind(L, entry));
	lua_pushnil(L);
	while (lua_next(L, entry)) {
		const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
		lua_pop(L, 1);
		if (!k || (strcmp(k, "name") != 0 && strcmp(k, "key") != 0)) {
			lua_pop(L, 1);
			return config_fail(ld, sub, "unknown key%s%s%s (expected name and key)",
			                   k ? " \"" : "", k ? k : "", k ? "\"" : "");
		}
	}
	rc = client_key_name(L, entry, &ck->name);
	t->auth.n_client_keys = i + 1;
	config_key_printf(sub, sizeof(sub), "%s[%zu].name", key, i + 1);
	if (rc)
		return config_fail(ld, sub,
		                   rc == -2 ? "out of memory"
		                            : "must be 1..%d printable ASCII characters without spaces",
		                   CLIENT_KEY_NAME_MAX);
	for (size_t j = 0; j < i; j++)
		if (strcmp(t->auth.client_keys[j].name, ck->name) == 0)
			return config_fail(ld, sub, "\"%s\" is listed twice", ck->name);
	config_key_printf(sub, sizeof(sub), "%s[%zu].key", key, i + 1);
	memset(&kv, 0, sizeof(kv));
	lua_getfield(L, entry, "key");
	if (lua_isnil(L, -1))
		rc = config_fail(ld, sub, "is required");
	else if ((rc = config_read_secret(ld, sub, -1, &kv)) == 0)
		rc = config_defer_client_key(ld, key, t, i, &kv.ref);
	config_value_release(&kv);
	lua_pop(L, 1);
	return rc;
}

/* client_keys = { { name = "billing-backend", key = { env = "BILLING_KEY" } }, ... } */
int config_conv_client_keys(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct tenant *t = base;
	lua_State *L = ld->L;
	size_t n = 0;

	if (!v->present)
		return 0;
	if (client_keys_shape(ld, key, v->idx, &n) != 0)
		return -1;
	if (!(t->auth.client_keys = calloc(n, sizeof(*t->auth.client_keys))))
		return config_fail(ld, key, "out of memory");
	for (size_t i = 0; i < n; i++) {
		int rc;
		lua_rawgeti(L, v->idx, (lua_Integer)i + 1);
		rc = read_client_key(ld, key, t, i);
		lua_pop(L, 1);
		if (rc)
			return -1;
	}
	return 0;
}

int config_conv_proxy_header(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct tenant *t = base;

	/* An HTTP field name (RFC 9110 token); never a credential header. */
	for (size_t i = 0; i < v->len; i++)
		if (!strchr("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
		            v->str[i]))
			return config_fail(ld, key, "\"%s\" is not a header name", v->str);
	if (strcasecmp(v->str, "Authorization") == 0 || strcasecmp(v->str, "Cookie") == 0 ||
	    strcasecmp(v->str, "Proxy-Authorization") == 0 || strcasecmp(v->str, "X-Forwarded-For") == 0)
		return config_fail(ld, key, "\"%s\" cannot carry the proxy's user", v->str);
	if (!(t->auth.proxy.header = strndup(v->str, v->len)))
		return config_fail(ld, key, "out of memory");
	return 0;
}

int config_conv_proxy_from(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct tenant *t = base;
	char sub[256];

	if (v->n == 0)
		return config_fail(ld, key, "must list at least one CIDR (there is no default)");
	if (!(t->auth.proxy.from = calloc(v->n, sizeof(*t->auth.proxy.from))))
		return config_fail(ld, key, "out of memory");
	for (size_t i = 0; i < v->n; i++) {
		config_key_printf(sub, sizeof(sub), "%s[%zu]", key, i + 1);
		if (cidr_parse(v->list[i], strlen(v->list[i]), &t->auth.proxy.from[i]))
			return config_fail(
			    ld, sub,
			    "\"%s\" is not a CIDR such as \"10.0.0.0/8\" or \"::1/128\" (no host bits set)",
			    v->list[i]);
		t->auth.proxy.n_from = i + 1;
	}
	return 0;
}

int config_conv_tls_cert(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct config *cfg = base;

	if (!(cfg->tls.cert_path = fileio_join(cfg->dir, v->str)))
		return config_fail(ld, key, "out of memory");
	return 0;
}

/* The key row comes after the cert row: the pair is read and checked
 * together, once the key is loaded (resolve.c). */
int config_conv_tls_key(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct config *cfg = base;
	char *path;

	if (config_defer_secret(ld, key, &v->ref, &cfg->tls.key) != 0)
		return -1;
	if (!cfg->tls.cert_path)
		return config_fail(ld, "tls.cert", "required with tls.key");
	if (!(path = strdup(cfg->tls.cert_path)))
		return config_fail(ld, key, "out of memory");
	return config_defer_file(ld, PENDING_TLS, "tls", NULL, path);
}

const char *config_region_url(const char *region)
{
	if (!region)
		return NULL;
	if (strcmp(region, "us") == 0)
		return "https://api.courier.com";
	if (strcmp(region, "eu") == 0)
		return "https://api.eu.courier.com";
	return NULL;
}
