/*
 * config.c — loading the broker's configuration from one Lua file.
 *
 * The file runs once in a throw-away Lua state with no I/O (base, string,
 * table, math; no load/require/dofile/setmetatable), a memory cap and an
 * instruction cap; the globals it assigns land in a private environment
 * table. That table is
 * then checked against `options`, the single declarative table of every
 * option: its dotted name, type, default, bounds, where it is stored and what
 * it means. Nothing else in the broker parses configuration, and the docs are
 * printed from the same table (config_print_options). Every error names the
 * file and the full key path; no error ever echoes a secret's value. The walk
 * reads the Lua values with raw accesses only, so no code from the file runs
 * after the chunk itself has returned.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <limits.h>
#include <lua.h>
#include <lualib.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cidr.h"
#include "duration.h"
#include "policy.h"
#include "scope.h"

#define CONFIG_FILE_MAX     (1024 * 1024) /* the configuration file itself */
#define POLICY_FILE_MAX     (1024 * 1024) /* each tenant's policy source, and each module */
#define DATA_FILE_MAX       (1024 * 1024) /* each tenant's data = "x.json" */
#define MODULES_MAX         64            /* modules beside one policy */
#define CONFIG_MEMORY_MAX   (64u << 20)   /* Lua heap while the file runs */
#define CONFIG_INSTRUCTIONS 10000000LL    /* Lua VM instructions while the file runs */
#define CONFIG_TIMEOUT_MS   1000          /* CPU time while the file runs */
#define TENANT_NAME_MAX     64

/* ------------------------------------------------------------------------ */
/* The table of options                                                      */
/* ------------------------------------------------------------------------ */

enum opt_type {
	OPT_TABLE, /* a section: its children are the rows named "<name>.<key>" */
	OPT_MAP,   /* name -> section "<name>.*" (tenants) */
	OPT_STRING,
	OPT_INT,
	OPT_NUMBER,
	OPT_BOOL,
	OPT_DURATION,   /* "1h", "7d": see duration.h; stored as whole seconds */
	OPT_SECRET,     /* { env = "NAME" } or { file = "PATH" } */
	OPT_LIST,       /* list of strings */
	OPT_TABLE_LIST, /* list of tables, read by the row's converter (client_keys) */
};

enum opt_flag {
	OPT_REQUIRED = 1u << 0,
	OPT_UNSUPPORTED = 1u << 1,   /* accepted name, refused value: "not supported yet" */
	OPT_PROSE_DEFAULT = 1u << 2, /* def is prose for the docs; the loader computes it */
	OPT_PRESENCE = 1u << 3,      /* a section that is skipped when absent; offset: bool */
};

/* A value read from the file, or parsed from a row's default text. */
struct value {
	bool present;    /* false: absent and no default */
	const char *str; /* OPT_STRING, OPT_DURATION (points into Lua or the row) */
	size_t len;
	long long i; /* OPT_INT */
	double num;  /* OPT_NUMBER */
	bool b;      /* OPT_BOOL */
	char **list; /* OPT_LIST, NULL-terminated, owned until a converter takes it */
	size_t n;
	struct secret_ref ref; /* OPT_SECRET, owned */
	int idx;               /* OPT_TABLE_LIST: absolute stack index of the list */
};

struct loader;
typedef int (*convert_fn)(struct loader *ld, const char *key, struct value *v, void *base);

struct option {
	const char *name; /* dotted; "*" stands for a tenant's name */
	enum opt_type type;
	const char *def; /* default as written in a config file, or NULL */
	double min, max; /* OPT_INT / OPT_NUMBER bounds (inclusive) */
	size_t offset;   /* into struct config, or struct tenant below "tenants.*" */
	size_t size;     /* of the member, 0 when a converter stores the value */
	unsigned flags;
	convert_fn convert; /* stores the value itself (custom checks); NULL: generic */
	const char *desc;
};

static int conv_listen(struct loader *ld, const char *key, struct value *v, void *base);
static int conv_admin_listen(struct loader *ld, const char *key, struct value *v, void *base);
static int conv_per_ip(struct loader *ld, const char *key, struct value *v, void *base);
static int conv_base_url(struct loader *ld, const char *key, struct value *v, void *base);
static int conv_policy(struct loader *ld, const char *key, struct value *v, void *base);
static int conv_data(struct loader *ld, const char *key, struct value *v, void *base);
static int conv_algorithms(struct loader *ld, const char *key, struct value *v, void *base);
static int conv_scopes(struct loader *ld, const char *key, struct value *v, void *base);
static int conv_cors(struct loader *ld, const char *key, struct value *v, void *base);
static int conv_burst(struct loader *ld, const char *key, struct value *v, void *base);
static int conv_requester_burst(struct loader *ld, const char *key, struct value *v, void *base);
static int conv_public_key(struct loader *ld, const char *key, struct value *v, void *base);
static int conv_jwks_file(struct loader *ld, const char *key, struct value *v, void *base);
static int conv_client_keys(struct loader *ld, const char *key, struct value *v, void *base);
static int conv_proxy_header(struct loader *ld, const char *key, struct value *v, void *base);
static int conv_proxy_from(struct loader *ld, const char *key, struct value *v, void *base);

#define CFG(m) offsetof(struct config, m), sizeof(((struct config *)0)->m)
#define TEN(m) offsetof(struct tenant, m), sizeof(((struct tenant *)0)->m)
/* A numeric macro as the option table's default text. */
#define NUMBER_TEXT(n) #n
#define NUMBER(n)      NUMBER_TEXT(n)
#define NOWHERE        0, 0

static const struct option options[] = {
    {"listen", OPT_STRING, "127.0.0.1:8080", 0, 0, NOWHERE, 0, conv_listen,
     "Address to listen on: `host:port`, or `[ipv6]:port`; port 0 picks a free port (logged at start)."},
    {"threads", OPT_INT, "2", 1, 64, CFG(threads), 0, NULL,
     "Event loops, one thread each; a request is served start to end (HTTP, policy, Courier call) by one "
     "loop."},
    {"connection_timeout_s", OPT_INT, "30", 1, 3600, CFG(connection_timeout_s), 0, NULL,
     "Idle client connections are closed after this many seconds."},
    {"max_body_bytes", OPT_INT, "16384", 256, 1048576, CFG(max_body_bytes), 0, NULL,
     "Largest request body; larger ones get 413."},
    {"max_connections", OPT_INT, "4096", 1, 100000, CFG(max_connections), 0, NULL,
     "Client connections held at once, split evenly among the loops."},
    {"max_inflight", OPT_INT, "4096", 1, 100000, CFG(max_inflight), 0, NULL,
     "Courier calls in flight before new requests get 503."},
    {"drain_timeout_ms", OPT_INT, "10000", 0, 600000, CFG(drain_timeout_ms), 0, NULL,
     "On SIGTERM, how long to wait for in-flight requests."},
    {"reload_timeout_ms", OPT_INT, "30000", 100, 600000, CFG(reload_timeout_ms), 0, NULL,
     "On SIGHUP, how long a reload may take (loading, checking, compiling); one that takes longer is "
     "refused and the running generation keeps serving. The serving generation's value applies."},
    {"max_connections_per_ip", OPT_INT, "`max_connections` / 4", 0, 100000, NOWHERE, OPT_PROSE_DEFAULT,
     conv_per_ip,
     "Client connections one IPv4 address (or IPv6 /64) may hold at once; more are closed at accept. 0: no "
     "cap. Behind a proxy, raise it above the proxy's connections or set 0."},
    {"request_timeout_ms", OPT_INT, "10000", 0, 600000, CFG(request_timeout_ms), 0, NULL,
     "A request's line, headers and body must arrive within this, counted from the connection's accept "
     "(first request) or the request line (later ones), however slowly they trickle; else the connection "
     "is closed. 0: no deadline."},
    {"admin_listen", OPT_STRING, NULL, 0, 0, NOWHERE, 0, conv_admin_listen,
     "Second address serving only `/healthz`, `/readyz` and `/metrics`, on its own thread and connection "
     "budget, so client floods cannot starve probes. Absent: none (the probes stay on `listen` either "
     "way)."},

    {"courier", OPT_TABLE, NULL, 0, 0, NOWHERE, 0, NULL, "How to reach Courier."},
    {"courier.base_url", OPT_STRING, "https://api.courier.com", 0, 0, NOWHERE, 0, conv_base_url,
     "Courier API base URL (`https://`; `http://` only to 127.0.0.1, [::1] or localhost; no user name or "
     "password); env `COURIER_BASE_URL` "
     "overrides it."},
    {"courier.timeout_ms", OPT_INT, "5000", 1, 60000, CFG(courier_timeout_ms), 0, NULL,
     "Whole Courier call, queueing and connecting included."},
    {"courier.connect_timeout_ms", OPT_INT, "2000", 1, 60000, CFG(courier_connect_timeout_ms), 0, NULL,
     "Connecting to Courier."},
    {"courier.max_connections", OPT_INT, "64", 1, 1024, CFG(courier_max_connections), 0, NULL,
     "Connections to Courier's host, split evenly among the loops (at least one each)."},

    {"policy_limits", OPT_TABLE, NULL, 0, 0, NOWHERE, 0, NULL, "Budget of one policy decision."},
    {"policy_limits.max_instructions", OPT_INT, NUMBER(POLICY_DEFAULT_MAX_INSTRUCTIONS), 1000, 100000000,
     CFG(policy_max_instructions), 0, NULL,
     "Lua instructions per decision; work inside library functions (pattern matching steps, elements "
     "and bytes handled) is charged to it too. Breach: `policy_error`, even under `pcall`."},
    {"policy_limits.max_memory_bytes", OPT_INT, NUMBER(POLICY_DEFAULT_MAX_MEMORY_BYTES), 65536, 268435456,
     CFG(policy_max_memory_bytes), 0, NULL,
     "Lua memory a decision may add to its engine; `string.rep`/`string.format` results are capped at "
     "1 MiB besides."},
    {"policy_limits.timeout_ms", OPT_INT, NUMBER(POLICY_DEFAULT_TIMEOUT_MS), 1, 5000, CFG(policy_timeout_ms),
     0, NULL,
     "CPU time of one decision (checked every 1000 instructions, every 4096 units of charged library work "
     "and at every allocation of 64 KiB or more)."},

    {"tenants", OPT_MAP, NULL, 0, 0, NOWHERE, OPT_REQUIRED, NULL,
     "At least one tenant; names match `[A-Za-z0-9_-]{1,64}`; `default` serves `POST /v1/token`."},
    {"tenants.*", OPT_TABLE, NULL, 0, 0, NOWHERE, 0, NULL, "One tenant, keyed by its name."},
    {"tenants.*.api_key", OPT_SECRET, NULL, 0, 0, TEN(api_key), OPT_REQUIRED, NULL,
     "Courier API key of this tenant's workspace and environment."},
    {"tenants.*.policy", OPT_STRING, NULL, 0, 0, NOWHERE, OPT_REQUIRED, conv_policy,
     "Policy file (Lua), relative to the config file's folder."},
    {"tenants.*.data", OPT_STRING, NULL, 0, 0, NOWHERE, 0, conv_data,
     "JSON document the policy reads as `broker.data` (read-only), relative to the config file's folder; "
     "at most 1 MiB, part of the policy revision."},
    {"tenants.*.auth", OPT_TABLE, NULL, 0, 0, NOWHERE, 0, NULL,
     "How requesters authenticate: at least one of `jwt`, `client_keys`, `trusted_proxy`, `none = true`; "
     "tried in that order, the first that authenticates wins, a credential present but invalid is a 401."},
    {"tenants.*.auth.jwt", OPT_TABLE, NULL, 0, 0, TEN(auth.jwt.enabled), OPT_PRESENCE, NULL,
     "Requester presents a JWT from the app (`Authorization: Bearer`)."},
    {"tenants.*.auth.jwt.algorithms", OPT_LIST, NULL, 0, 0, NOWHERE, OPT_REQUIRED, conv_algorithms,
     "Allowed algorithms: `HS256`, `HS384`, `HS512` (with `hmac_secret`), `RS256`, `RS384`, `RS512`, "
     "`PS256`, "
     "`PS384`, `PS512` (RSA key), `ES256` (EC P-256 key), `ES384` (EC P-384 key), `EdDSA` (Ed25519 key)."},
    {"tenants.*.auth.jwt.hmac_secret", OPT_SECRET, NULL, 0, 0, TEN(auth.jwt.hmac_secret), 0, NULL,
     "Key for HS* algorithms (required with them; refused without them)."},
    {"tenants.*.auth.jwt.public_key", OPT_TABLE, NULL, 0, 0, TEN(auth.jwt.public_key_given), OPT_PRESENCE,
     NULL,
     "`{ file = \"PATH\" }`: one PEM public key (`-----BEGIN PUBLIC KEY-----`) for RS*/PS* (RSA, 2048..8192 "
     "bits), ES256 (P-256), ES384 (P-384) or EdDSA (Ed25519); not a secret, so any file mode is fine."},
    {"tenants.*.auth.jwt.public_key.file", OPT_STRING, NULL, 0, 0, NOWHERE, OPT_REQUIRED, conv_public_key,
     "PEM file, relative to the config file's folder."},
    {"tenants.*.auth.jwt.jwks", OPT_TABLE, NULL, 0, 0, TEN(auth.jwt.jwks_opts.enabled), OPT_PRESENCE, NULL,
     "A JSON Web Key Set: `{ file = \"PATH\" }` or `{ url = \"https://...\" }`; keys chosen by the token's "
     "`kid` and `alg`, never from `jku`/`x5u`/`x5c`/`jwk`."},
    {"tenants.*.auth.jwt.jwks.file", OPT_STRING, NULL, 0, 0, NOWHERE, 0, conv_jwks_file,
     "JWKS file, relative to the config file's folder; read at load and at each reload."},
    {"tenants.*.auth.jwt.jwks.url", OPT_STRING, NULL, 0, 0, TEN(auth.jwt.jwks_opts.url), 0, NULL,
     "JWKS URL (`https://`; `http://` only to 127.0.0.1, [::1] or localhost; no user name or password): "
     "fetched before the tenant is "
     "ready (a failed first fetch fails `check` and start), then refreshed in the background."},
    {"tenants.*.auth.jwt.jwks.min_refresh_s", OPT_INT, "60", 1, 86400, TEN(auth.jwt.jwks_opts.min_refresh_s),
     0, NULL,
     "Shortest time between scheduled fetches (lower bound on `Cache-Control: max-age`; retry delay "
     "after a failed fetch)."},
    {"tenants.*.auth.jwt.jwks.max_cache_s", OPT_INT, "3600", 1, 604800, TEN(auth.jwt.jwks_opts.max_cache_s),
     0, NULL,
     "Longest a fetched set is used before it is fetched again (upper bound on `max-age`; used when "
     "the response has none)."},
    {"tenants.*.auth.jwt.jwks.cooldown_s", OPT_INT, "30", 1, 3600, TEN(auth.jwt.jwks_opts.cooldown_s), 0,
     NULL,
     "A token with an unknown `kid` is refused and triggers one fetch, at most once per this many seconds "
     "since the last fetch; concurrent misses share it."},
    {"tenants.*.auth.jwt.jwks.timeout_ms", OPT_INT, "5000", 100, 60000, TEN(auth.jwt.jwks_opts.timeout_ms), 0,
     NULL, "One JWKS fetch, connecting included."},
    {"tenants.*.auth.jwt.issuer", OPT_STRING, NULL, 0, 0, TEN(auth.jwt.rules.issuer), 0, NULL,
     "Expected `iss` claim, compared exactly; not checked when absent."},
    {"tenants.*.auth.jwt.audience", OPT_STRING, NULL, 0, 0, TEN(auth.jwt.rules.audience), 0, NULL,
     "Expected `aud` (the claim may be a list), compared exactly; not checked when absent."},
    {"tenants.*.auth.jwt.leeway_s", OPT_INT, "30", 0, 600, TEN(auth.jwt.rules.leeway_s), 0, NULL,
     "Clock skew allowed on `exp` and `nbf`, in seconds."},
    {"tenants.*.auth.jwt.max_token_bytes", OPT_INT, "8192", 256, 65536, TEN(auth.jwt.rules.max_token_bytes),
     0, NULL, "Longer tokens are refused unread."},
    {"tenants.*.auth.jwt.subject_claim", OPT_STRING, "sub", 0, 0, TEN(auth.jwt.rules.subject_claim), 0, NULL,
     "Claim that names the requester (`req.identity.subject`)."},
    {"tenants.*.auth.jwt.max_age_s", OPT_INT, NULL, 1, 31536000, TEN(auth.jwt.rules.max_age_s), 0, NULL,
     "When set, `iat` is required and may be at most this many seconds old (plus `leeway_s`)."},
    {"tenants.*.auth.jwt.typ", OPT_STRING, NULL, 0, 0, TEN(auth.jwt.rules.typ), 0, NULL,
     "When set, the header's `typ` must equal it (case-insensitive, `application/` optional), e.g. "
     "`\"JWT\"`."},
    {"tenants.*.auth.client_keys", OPT_TABLE_LIST, NULL, 0, 0, NOWHERE, 0, conv_client_keys,
     "Server-to-server bearer keys: `{ { name = \"billing-backend\", key = { env = \"BILLING_KEY\" } }, ... "
     "}`; "
     "the bearer is compared in constant time with every key; `identity.subject` is the name. With `jwt` "
     "beside it, a bearer with two dots goes to `jwt`, any other to `client_keys`."},
    {"tenants.*.auth.trusted_proxy", OPT_TABLE, NULL, 0, 0, TEN(auth.proxy.enabled), OPT_PRESENCE, NULL,
     "An authenticating proxy in front: its identity header is honoured only from `from`; it also makes "
     "`req.client.ip` the right-most `X-Forwarded-For` entry that is not a trusted proxy."},
    {"tenants.*.auth.trusted_proxy.header", OPT_STRING, NULL, 0, 0, NOWHERE, OPT_REQUIRED, conv_proxy_header,
     "Header naming the user, e.g. `\"X-Forwarded-User\"` (1..256 bytes, no control characters)."},
    {"tenants.*.auth.trusted_proxy.from", OPT_LIST, NULL, 0, 0, NOWHERE, OPT_REQUIRED, conv_proxy_from,
     "CIDRs of the proxies, e.g. `{ \"10.0.0.0/8\", \"::1/128\" }`; no default: the header is ignored from "
     "anyone else."},
    {"tenants.*.auth.none", OPT_BOOL, "false", 0, 0, TEN(auth.none), 0, NULL,
     "Development only: unauthenticated requesters reach the policy."},
    {"tenants.*.max_expires_in", OPT_DURATION, "7d", 0, 0, TEN(max_expires_s), 0, NULL,
     "Ceiling on any token's lifetime."},
    {"tenants.*.default_expires_in", OPT_DURATION, "1h", 0, 0, TEN(default_expires_s), 0, NULL,
     "Lifetime when the policy's decision gives none; at most `max_expires_in`."},
    {"tenants.*.allowed_scopes", OPT_LIST, "the push tier", 0, 0, NOWHERE, OPT_PROSE_DEFAULT, conv_scopes,
     "Ceiling on the scopes of any token (`user_id:` scopes are added by the broker)."},
    {"tenants.*.cors_origins", OPT_LIST, NULL, 0, 0, NOWHERE, 0, conv_cors,
     "Browser origins allowed to call this tenant's token route (`https://app.example.com`, exact match; "
     "no `*`): they get CORS headers and preflight answers."},
    {"tenants.*.rate_limit", OPT_TABLE, NULL, 0, 0, NOWHERE, 0, NULL, "Token issuance per tenant."},
    {"tenants.*.rate_limit.per_second", OPT_NUMBER, "0", 0, 1e6, TEN(rate_limit.per_second), 0, NULL,
     "Sustained rate; 0 turns the limit off."},
    {"tenants.*.rate_limit.burst", OPT_NUMBER, "per_second", 0, 1e6, NOWHERE, OPT_PROSE_DEFAULT, conv_burst,
     "Bucket size; at least 1 when `per_second` > 0."},
    {"tenants.*.rate_limit.per_requester", OPT_TABLE, NULL, 0, 0, NOWHERE, 0, NULL,
     "Token issuance per requester of the tenant: the authenticated subject (JWT `sub`, proxy user), the "
     "client key's name, or the client IP when the request is unauthenticated or has no subject. Taken "
     "before the tenant's bucket, so one requester's refused requests never spend it."},
    {"tenants.*.rate_limit.per_requester.per_second", OPT_NUMBER, "0", 0, 1e6,
     TEN(rate_limit.per_requester.per_second), 0, NULL, "Sustained rate per requester; 0 turns it off."},
    {"tenants.*.rate_limit.per_requester.burst", OPT_NUMBER, "per_second", 0, 1e6, NOWHERE, OPT_PROSE_DEFAULT,
     conv_requester_burst, "Bucket size per requester; at least 1 when `per_second` > 0."},
};

#define N_OPTIONS (sizeof(options) / sizeof(options[0]))

/* ------------------------------------------------------------------------ */
/* Errors and small helpers                                                  */
/* ------------------------------------------------------------------------ */

struct loader {
	lua_State *L;
	struct config *cfg;
	const char *shown; /* the path as the caller wrote it: every message starts with it */
	char *err;
	size_t errlen;
};

/* "<file>: <key>: <reason>". Returns -1 so callers can `return fail(...)`. */
__attribute__((format(printf, 3, 4))) static int fail(struct loader *ld, const char *key, const char *fmt,
                                                      ...)
{
	size_t used;
	va_list ap;
	int n;

	if (!ld->err || ld->errlen == 0)
		return -1;
	n = key ? snprintf(ld->err, ld->errlen, "%s: %s: ", ld->shown, key)
	        : snprintf(ld->err, ld->errlen, "%s: ", ld->shown);
	used = n < 0 ? 0 : (size_t)n;
	if (used >= ld->errlen)
		return -1;
	va_start(ap, fmt);
	vsnprintf(ld->err + used, ld->errlen - used, fmt, ap);
	va_end(ap);
	return -1;
}

/* snprintf for key paths: a path too long for the buffer is cut, never overrun. */
__attribute__((format(printf, 3, 4))) static void key_printf(char *out, size_t outlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(out, outlen, fmt, ap);
	va_end(ap);
}

static const char *type_name(enum opt_type t)
{
	switch (t) {
	case OPT_TABLE:
		return "table";
	case OPT_MAP:
		return "table of tables";
	case OPT_STRING:
		return "string";
	case OPT_INT:
		return "integer";
	case OPT_NUMBER:
		return "number";
	case OPT_BOOL:
		return "boolean";
	case OPT_DURATION:
		return "duration";
	case OPT_SECRET:
		return "secret";
	case OPT_LIST:
		return "list of strings";
	case OPT_TABLE_LIST:
		return "list of tables";
	}
	return "?";
}

/* What the file gave instead, for "expected X, got Y". */
static const char *lua_value_kind(lua_State *L, int idx)
{
	if (lua_type(L, idx) == LUA_TNUMBER)
		return lua_isinteger(L, idx) ? "integer" : "number";
	return luaL_typename(L, idx);
}

static void free_list(char **list)
{
	if (!list)
		return;
	for (char **p = list; *p; p++)
		free(*p);
	free(list);
}

static void value_release(struct value *v)
{
	free_list(v->list);
	v->list = NULL;
	free(v->ref.env);
	free(v->ref.file);
	v->ref.env = v->ref.file = NULL;
}

/* base + "/" + path unless path is absolute. NULL when out of memory. */
static char *path_join(const char *dir, const char *path)
{
	size_t dl, pl;
	char *p;

	if (path[0] == '/')
		return strdup(path);
	dl = strlen(dir);
	pl = strlen(path);
	p = malloc(dl + pl + 2);
	if (!p)
		return NULL;
	memcpy(p, dir, dl);
	p[dl] = '/';
	memcpy(p + dl + 1, path, pl + 1);
	return p;
}

static char *dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');
	char *d;

	if (!slash)
		return strdup(".");
	if (slash == path)
		return strdup("/");
	d = strndup(path, (size_t)(slash - path));
	return d;
}

int config_read_file(const char *path, size_t max, char **out, size_t *outlen, char *why, size_t whylen)
{
	struct stat st;
	char *buf = NULL;
	size_t len = 0;
	ssize_t n;
	int fd, rc = -1;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(why, whylen, "%s", strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		snprintf(why, whylen, "not a regular file");
		goto out;
	}
	if ((unsigned long long)st.st_size > max) {
		snprintf(why, whylen, "larger than %zu bytes", max);
		goto out;
	}
	buf = malloc(max + 2);
	if (!buf) {
		snprintf(why, whylen, "out of memory");
		goto out;
	}
	/* Read up to one byte past the cap: the file may have grown since fstat. */
	while (len <= max && (n = read(fd, buf + len, max + 1 - len)) > 0)
		len += (size_t)n;
	if (len > max) {
		snprintf(why, whylen, "larger than %zu bytes", max);
		goto out;
	}
	buf[len] = '\0';
	*out = buf;
	*outlen = len;
	buf = NULL;
	rc = 0;
out:
	free(buf);
	close(fd);
	return rc;
}

/* Levenshtein distance, for "did you mean". Short names only. */
static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), row[65];

	if (la > 64 || lb > 64)
		return SIZE_MAX;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t best = diag + (a[i - 1] != b[j - 1]);
			if (row[j] + 1 < best)
				best = row[j] + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

/* ------------------------------------------------------------------------ */
/* Rows                                                                      */
/* ------------------------------------------------------------------------ */

/* The row for pattern + "." + key (pattern "" at the top), or NULL. */
static const struct option *find_child(const char *pattern, const char *key)
{
	size_t pl = strlen(pattern);

	for (size_t i = 0; i < N_OPTIONS; i++) {
		const char *n = options[i].name;
		if (pl) {
			if (strncmp(n, pattern, pl) != 0 || n[pl] != '.')
				continue;
			n += pl + 1;
		}
		if (strcmp(n, key) == 0)
			return &options[i];
	}
	return NULL;
}

/* The last component of a row's name if the row is a direct child of pattern. */
static const char *child_key(const struct option *o, const char *pattern)
{
	size_t pl = strlen(pattern);
	const char *n = o->name;

	if (pl) {
		if (strncmp(n, pattern, pl) != 0 || n[pl] != '.')
			return NULL;
		n += pl + 1;
	}
	return strchr(n, '.') ? NULL : n;
}

static const char *suggest(const char *pattern, const char *key)
{
	const char *best = NULL;
	size_t bestd = 3; /* at most two edits away */

	for (size_t i = 0; i < N_OPTIONS; i++) {
		const char *k = child_key(&options[i], pattern);
		size_t d;
		if (!k || strcmp(k, "*") == 0)
			continue;
		d = edit_distance(k, key);
		if (d < bestd) {
			bestd = d;
			best = k;
		}
	}
	return best;
}

static void store_uint(void *p, size_t size, unsigned long long v)
{
	/* Every integer bound is non-negative, so the member's width is all that matters. */
	switch (size) {
	case 1: {
		uint8_t x = (uint8_t)v;
		memcpy(p, &x, 1);
		break;
	}
	case 2: {
		uint16_t x = (uint16_t)v;
		memcpy(p, &x, 2);
		break;
	}
	case 4: {
		uint32_t x = (uint32_t)v;
		memcpy(p, &x, 4);
		break;
	}
	default: {
		uint64_t x = (uint64_t)v;
		memcpy(p, &x, 8);
		break;
	}
	}
}

/* ------------------------------------------------------------------------ */
/* Reading one value                                                         */
/* ------------------------------------------------------------------------ */

static int read_string(struct loader *ld, const char *key, int idx, struct value *v)
{
	lua_State *L = ld->L;

	if (lua_type(L, idx) != LUA_TSTRING)
		return fail(ld, key, "expected a string, got %s", lua_value_kind(L, idx));
	v->str = lua_tolstring(L, idx, &v->len);
	if (v->len == 0)
		return fail(ld, key, "must not be empty");
	if (strlen(v->str) != v->len)
		return fail(ld, key, "must not contain a NUL byte");
	return 0;
}

static int read_list(struct loader *ld, const char *key, int idx, struct value *v)
{
	lua_State *L = ld->L;
	char sub[256];
	size_t n, count = 0;

	idx = lua_absindex(L, idx);
	if (lua_type(L, idx) != LUA_TTABLE)
		return fail(ld, key, "expected a list of strings, got %s", lua_value_kind(L, idx));
	n = (size_t)lua_rawlen(L, idx);
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		lua_pop(L, 1);
		count++;
		if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || (size_t)lua_tointeger(L, -1) > n) {
			lua_pop(L, 1);
			return fail(ld, key, "expected a list of strings, got a table with other keys");
		}
	}
	if (count != n)
		return fail(ld, key, "expected a list of strings, got a list with holes");
	v->list = calloc(n + 1, sizeof(char *));
	if (!v->list)
		return fail(ld, key, "out of memory");
	for (size_t i = 0; i < n; i++) {
		const char *s;
		size_t len;
		lua_rawgeti(L, idx, (lua_Integer)i + 1);
		key_printf(sub, sizeof(sub), "%s[%zu]", key, i + 1);
		if (lua_type(L, -1) != LUA_TSTRING) {
			fail(ld, sub, "expected a string, got %s", lua_value_kind(L, -1));
			lua_pop(L, 1);
			return -1;
		}
		s = lua_tolstring(L, -1, &len);
		if (len == 0 || strlen(s) != len) {
			lua_pop(L, 1);
			return fail(ld, sub, len ? "must not contain a NUL byte" : "must not be empty");
		}
		v->list[i] = strdup(s);
		lua_pop(L, 1);
		if (!v->list[i])
			return fail(ld, sub, "out of memory");
	}
	v->n = n;
	return 0;
}

static const char secret_shape[] = "must be { env = ... } or { file = ... }";

/* One string field of a secret table: { env = "NAME" } or { file = "PATH" }. */
static int secret_field(struct loader *ld, const char *key, int idx, const char *field, char **out)
{
	lua_State *L = ld->L;
	char sub[256];
	const char *s;
	size_t len;

	key_printf(sub, sizeof(sub), "%s.%s", key, field);
	lua_pushstring(L, field);
	lua_rawget(L, idx);
	if (lua_type(L, -1) != LUA_TSTRING) {
		fail(ld, sub, "expected a string, got %s", lua_value_kind(L, -1));
		lua_pop(L, 1);
		return -1;
	}
	s = lua_tolstring(L, -1, &len);
	if (len == 0 || strlen(s) != len || (field[0] == 'e' && strchr(s, '='))) {
		lua_pop(L, 1);
		return fail(ld, sub, field[0] == 'e' ? "not an environment variable name" : "not a path");
	}
	*out = field[0] == 'e' ? strdup(s) : path_join(ld->cfg->dir, s);
	lua_pop(L, 1);
	if (!*out)
		return fail(ld, key, "out of memory");
	return 0;
}

static int read_secret(struct loader *ld, const char *key, int idx, struct value *v)
{
	lua_State *L = ld->L;
	bool env = false, file = false, other = false;

	idx = lua_absindex(L, idx);
	/* Never print the value: a literal here is most likely the secret itself. */
	if (lua_type(L, idx) == LUA_TSTRING || lua_type(L, idx) == LUA_TNUMBER)
		return fail(ld, key, "%s: literal secrets are refused", secret_shape);
	if (lua_type(L, idx) != LUA_TTABLE)
		return fail(ld, key, "%s, got %s", secret_shape, lua_value_kind(L, idx));
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		lua_pop(L, 1);
		if (lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "env") == 0)
			env = true;
		else if (lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "file") == 0)
			file = true;
		else
			other = true;
	}
	if (other || env == file)
		return fail(ld, key, "%s, with exactly one of the two keys", secret_shape);
	if (env)
		return secret_field(ld, key, idx, "env", &v->ref.env);
	return secret_field(ld, key, idx, "file", &v->ref.file);
}

/* Fills v from the default text of a row, the way the file would have. */
static int read_default(struct loader *ld, const struct option *o, const char *key, struct value *v)
{
	char *end = NULL;

	v->present = true;
	switch (o->type) {
	case OPT_STRING:
	case OPT_DURATION:
		v->str = o->def;
		v->len = strlen(o->def);
		return 0;
	case OPT_INT:
		v->i = strtoll(o->def, &end, 10);
		break;
	case OPT_NUMBER:
		v->num = strtod(o->def, &end);
		break;
	case OPT_BOOL:
		v->b = strcmp(o->def, "true") == 0;
		return 0;
	default:
		break;
	}
	if (!end || *end)
		return fail(ld, key, "internal error: bad default \"%s\"", o->def);
	return 0;
}

/* Fills v from the Lua value at idx (nil: absent, then the row's default). */
static int read_value(struct loader *ld, const struct option *o, const char *key, int idx, struct value *v)
{
	lua_State *L = ld->L;
	int isint = 0;

	if (lua_isnil(L, idx)) {
		if (o->flags & OPT_REQUIRED)
			return fail(ld, key, "is required");
		if (!o->def || (o->flags & OPT_PROSE_DEFAULT))
			return 0;
		return read_default(ld, o, key, v);
	}
	if (o->flags & OPT_UNSUPPORTED)
		return fail(ld, key, "not supported yet in this version");
	v->present = true;
	switch (o->type) {
	case OPT_STRING:
		return read_string(ld, key, idx, v);
	case OPT_DURATION:
		if (lua_type(L, idx) == LUA_TNUMBER)
			return fail(ld, key,
			            "expected a duration string such as \"1h\" or \"7d\", got a number "
			            "(write the unit: Courier reads a bare number as milliseconds)");
		return read_string(ld, key, idx, v);
	case OPT_INT:
		if (lua_type(L, idx) != LUA_TNUMBER)
			return fail(ld, key, "expected an integer, got %s", lua_value_kind(L, idx));
		v->i = (long long)lua_tointegerx(L, idx, &isint);
		if (!isint)
			return fail(ld, key, "expected an integer, got %s", lua_value_kind(L, idx));
		if ((double)v->i < o->min || (double)v->i > o->max)
			return fail(ld, key, "%lld is out of bounds (%.0f..%.0f)", v->i, o->min, o->max);
		return 0;
	case OPT_NUMBER:
		if (lua_type(L, idx) != LUA_TNUMBER)
			return fail(ld, key, "expected a number, got %s", lua_value_kind(L, idx));
		v->num = (double)lua_tonumber(L, idx);
		if (!isfinite(v->num) || v->num < o->min || v->num > o->max)
			return fail(ld, key, "%g is out of bounds (%g..%g)", v->num, o->min, o->max);
		return 0;
	case OPT_BOOL:
		if (lua_type(L, idx) != LUA_TBOOLEAN)
			return fail(ld, key, "expected a boolean, got %s", lua_value_kind(L, idx));
		v->b = lua_toboolean(L, idx);
		return 0;
	case OPT_SECRET:
		return read_secret(ld, key, idx, v);
	case OPT_LIST:
		return read_list(ld, key, idx, v);
	case OPT_TABLE_LIST:
		if (lua_type(L, idx) != LUA_TTABLE)
			return fail(ld, key, "expected a list of tables, got %s", lua_value_kind(L, idx));
		v->idx = lua_absindex(L, idx);
		return 0;
	case OPT_TABLE:
	case OPT_MAP:
		break;
	}
	return fail(ld, key, "internal error: not a value");
}

/* Stores a value at the row's member, or hands it to the row's converter. */
static int store_value(struct loader *ld, const struct option *o, const char *key, struct value *v,
                       void *base)
{
	char *p = (char *)base + o->offset;
	char why[512];

	if (o->convert)
		return o->convert(ld, key, v, base);
	if (!v->present || o->size == 0)
		return 0;
	switch (o->type) {
	case OPT_STRING: {
		char *s = strndup(v->str, v->len);
		if (!s)
			return fail(ld, key, "out of memory");
		memcpy(p, &s, sizeof(s));
		return 0;
	}
	case OPT_INT:
		store_uint(p, o->size, (unsigned long long)v->i);
		return 0;
	case OPT_NUMBER:
		memcpy(p, &v->num, sizeof(v->num));
		return 0;
	case OPT_BOOL:
		memcpy(p, &v->b, sizeof(v->b));
		return 0;
	case OPT_DURATION: {
		long long secs = 0;
		if (duration_parse(v->str, v->len, &secs) != 0)
			return fail(ld, key,
			            "\"%s\" is not a duration (write a number and a unit, such as \"30m\", "
			            "\"1h\", \"7d\"; at least 1s, at most 10y)",
			            v->str);
		memcpy(p, &secs, sizeof(secs));
		return 0;
	}
	case OPT_SECRET:
		if (secret_load(&v->ref, (struct secret *)(void *)p, why, sizeof(why)) != 0)
			return fail(ld, key, "%s", why);
		return 0;
	case OPT_LIST:
	case OPT_TABLE_LIST:
	case OPT_TABLE:
	case OPT_MAP:
		break;
	}
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Converters: options that need more than a store                           */
/* ------------------------------------------------------------------------ */

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
			return fail(ld, key, "\"%s\": an IPv6 address goes in brackets, as in \"[::1]:8080\"",
			            s);
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
		return fail(ld, key, "\"%s\": the port must be 0..65535 (0: any free port, logged at start)",
		            s);
	*host_out = strndup(host, hostlen);
	if (!*host_out)
		return fail(ld, key, "out of memory");
	*port_out = (unsigned short)n;
	return 0;
bad:
	return fail(ld, key, "\"%s\" is not host:port (such as \"127.0.0.1:8080\" or \"[::1]:8080\")", s);
}

static int conv_listen(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct config *cfg = base;

	return parse_host_port(ld, key, v, &cfg->listen_host, &cfg->listen_port);
}

static int conv_admin_listen(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct config *cfg = base;

	if (!v->present)
		return 0;
	if (parse_host_port(ld, key, v, &cfg->admin_host, &cfg->admin_port) != 0)
		return -1;
	if (strcmp(cfg->admin_host, cfg->listen_host) == 0 && cfg->admin_port == cfg->listen_port &&
	    cfg->admin_port != 0)
		return fail(ld, key, "\"%s\" is also `listen`: give the probes their own address", v->str);
	return 0;
}

static int conv_per_ip(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct config *cfg = base;

	(void)ld;
	(void)key;
	/* max_connections is an earlier row, so it is already read. */
	cfg->max_connections_per_ip = v->present ? (unsigned)v->i : (cfg->max_connections + 3) / 4;
	return 0;
}

static int conv_base_url(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct config *cfg = base;
	const char *s = v->str, *env = getenv("COURIER_BASE_URL"), *from = "";
	size_t len = v->len, skip;

	/* The official SDKs read COURIER_BASE_URL; the broker honours it the same way. */
	if (env && *env) {
		s = env;
		len = strlen(env);
		from = "from the environment (COURIER_BASE_URL): ";
	}
	if (strncmp(s, "https://", 8) == 0)
		skip = 8;
	else if (strncmp(s, "http://", 7) == 0)
		skip = 7;
	else
		return fail(ld, key, "%smust start with https:// or http://", from);
	if (len == skip || s[skip] == '/')
		return fail(ld, key, "%shas no host", from);
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
			return fail(ld, key, "%smust not contain spaces, control or non-ASCII bytes", from);
	/* A password in a URL would be a secret outside {env=...}/{file=...}. */
	if (secret_in_url(s))
		return fail(ld, key, "%smust not carry a user name or password (the key goes in api_key)",
		            from);
	/* The API key goes in the Authorization header: never in clear text
	 * beyond this machine. */
	if (!secret_url_transport_ok(s))
		return fail(ld, key,
		            "%smust start with https:// (http:// only to 127.0.0.1, [::1] or localhost)",
		            from);
	/* "https://api.courier.com/" and ".../auth" joins must not yield "//auth". */
	while (len > skip + 1 && s[len - 1] == '/')
		len--;
	cfg->courier_base_url = strndup(s, len);
	if (!cfg->courier_base_url)
		return fail(ld, key, "out of memory");
	return 0;
}

static int conv_policy(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct tenant *t = base;
	char why[512];
	char *joined;
	int rc = -1;

	joined = path_join(ld->cfg->dir, v->str);
	if (!joined)
		return fail(ld, key, "out of memory");
	t->policy_path = realpath(joined, NULL);
	if (!t->policy_path) {
		fail(ld, key, "%s: %s", joined, strerror(errno));
		goto out;
	}
	if (config_read_file(t->policy_path, POLICY_FILE_MAX, &t->policy_text, &t->policy_len, why,
	                     sizeof(why))) {
		fail(ld, key, "%s: %s", t->policy_path, why);
		goto out;
	}
	t->policy_dir = dir_of(t->policy_path);
	if (!t->policy_dir) {
		fail(ld, key, "out of memory");
		goto out;
	}
	if (config_load_modules(t, why, sizeof(why)) != 0) {
		fail(ld, key, "%s", why);
		goto out;
	}
	config_policy_revision(t);
	rc = 0;
out:
	free(joined);
	return rc;
}

/* Runs after conv_policy (the row follows it), present or not. */
static int conv_data(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct tenant *t = base;
	char why[512];
	char *joined;

	if (!v->present)
		return 0;
	joined = path_join(ld->cfg->dir, v->str);
	if (!joined)
		return fail(ld, key, "out of memory");
	t->data_path = realpath(joined, NULL);
	if (!t->data_path) {
		fail(ld, key, "%s: %s", joined, strerror(errno));
		free(joined);
		return -1;
	}
	free(joined);
	if (config_read_file(t->data_path, DATA_FILE_MAX, &t->data_text, &t->data_len, why, sizeof(why)))
		return fail(ld, key, "%s: %s", t->data_path, why);
	config_policy_revision(t);
	return 0;
}

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

int config_load_modules(struct tenant *t, char *err, size_t errlen)
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
		m->path = path_join(t->policy_dir, de->d_name);
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
		if (config_read_file(m->path, POLICY_FILE_MAX, &m->text, &m->len, why, sizeof(why))) {
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
void config_policy_revision(struct tenant *t)
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

void config_free_policy_files(struct tenant *t)
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

static int conv_algorithms(struct loader *ld, const char *key, struct value *v, void *base)
{
	/* Names worth probing for the "supported:" hint; jwt.c decides which are. */
	static const char *const known[] = {"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256",
	                                    "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"};
	struct tenant *t = base;
	char sub[256], supported[128] = "";

	if (v->n == 0)
		return fail(ld, key, "must list at least one algorithm");
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
		key_printf(sub, sizeof(sub), "%s[%zu]", key, i + 1);
		return fail(ld, sub, "unsupported algorithm \"%s\" (supported: %s)", v->list[i], supported);
	}
	return 0;
}

static int conv_scopes(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct tenant *t = base;
	char sub[256];
	size_t n = 0;

	if (!v->present) {
		const char *const *tier = scope_tier("push");
		size_t k = 0;
		if (!tier)
			return fail(ld, key, "internal error: no push tier");
		while (tier[k])
			k++;
		t->allowed_scopes = calloc(k + 1, sizeof(char *));
		if (!t->allowed_scopes)
			return fail(ld, key, "out of memory");
		for (size_t i = 0; i < k; i++) {
			t->allowed_scopes[i] = strdup(tier[i]);
			if (!t->allowed_scopes[i])
				return fail(ld, key, "out of memory");
			t->n_allowed_scopes = i + 1;
		}
		return 0;
	}
	if (v->n == 0)
		return fail(ld, key, "must not be empty (leave it out for the default: the push tier)");
	for (size_t i = 0; i < v->n; i++) {
		const char *s = v->list[i];
		bool dup = false;
		key_printf(sub, sizeof(sub), "%s[%zu]", key, i + 1);
		if (!scope_token_valid(s, strlen(s)))
			return fail(
			    ld, sub,
			    "\"%s\" is not a valid scope (1..%d printable ASCII characters, no spaces)", s,
			    SCOPE_MAX_LEN);
		if (strncmp(s, "user_id:", 8) == 0)
			return fail(
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

static int conv_cors(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct tenant *t = base;
	char sub[256];

	if (!v->present)
		return 0;
	for (size_t i = 0; i < v->n; i++) {
		key_printf(sub, sizeof(sub), "%s[%zu]", key, i + 1);
		if (strcmp(v->list[i], "*") == 0)
			return fail(ld, sub, "\"*\" is refused: list each origin that may ask for tokens");
		if (!origin_valid(v->list[i]))
			return fail(ld, sub, "\"%s\" is not an origin (scheme://host[:port], no path)",
			            v->list[i]);
	}
	t->cors_origins = v->list;
	t->n_cors_origins = v->n;
	v->list = NULL;
	return 0;
}

static int conv_burst(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct tenant *t = base;

	(void)ld;
	(void)key;
	/* Absent: check_tenant makes it per_second, which is read after this row. */
	t->rate_limit.burst = v->present ? v->num : -1;
	return 0;
}

static int conv_requester_burst(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct tenant *t = base;

	(void)ld;
	(void)key;
	t->rate_limit.per_requester.burst = v->present ? v->num : -1;
	return 0;
}

static int conv_public_key(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct tenant *t = base;
	char why[256], *path, *pem = NULL;
	size_t len = 0;

	if (!(path = path_join(ld->cfg->dir, v->str)))
		return fail(ld, key, "out of memory");
	/* A public key is not a secret: any file mode is fine. */
	if (config_read_file(path, 1024 * 1024, &pem, &len, why, sizeof(why)) == 0)
		t->auth.jwt.public_key = jwt_key_pem(pem, len, why, sizeof(why));
	free(pem);
	if (!t->auth.jwt.public_key) {
		fail(ld, key, "%s: %s", path, why);
		free(path);
		return -1;
	}
	free(path);
	return 0;
}

static int conv_jwks_file(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct tenant *t = base;

	if (!v->present)
		return 0;
	if (!(t->auth.jwt.jwks_opts.file = path_join(ld->cfg->dir, v->str)))
		return fail(ld, key, "out of memory");
	return 0;
}

#define CLIENT_KEYS_MAX     64
#define CLIENT_KEY_NAME_MAX 128

/* client_keys = { { name = "billing-backend", key = { env = "BILLING_KEY" } }, ... } */
static int conv_client_keys(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct tenant *t = base;
	lua_State *L = ld->L;
	char sub[256], why[512];
	size_t n, count = 0;

	if (!v->present)
		return 0;
	n = (size_t)lua_rawlen(L, v->idx);
	lua_pushnil(L);
	while (lua_next(L, v->idx)) {
		lua_pop(L, 1);
		count++;
		if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || (size_t)lua_tointeger(L, -1) > n) {
			lua_pop(L, 1);
			return fail(ld, key, "expected a list { { name = ..., key = { env = ... } }, ... }");
		}
	}
	if (count != n || n == 0)
		return fail(ld, key, n ? "expected a list without holes" : "must list at least one key");
	if (n > CLIENT_KEYS_MAX)
		return fail(ld, key, "at most %d keys", CLIENT_KEYS_MAX);
	if (!(t->auth.client_keys = calloc(n, sizeof(*t->auth.client_keys))))
		return fail(ld, key, "out of memory");
	for (size_t i = 0; i < n; i++) {
		struct client_key *ck = &t->auth.client_keys[i];
		struct value kv;
		const char *name;
		size_t len;
		int rc, entry;

		key_printf(sub, sizeof(sub), "%s[%zu]", key, i + 1);
		lua_rawgeti(L, v->idx, (lua_Integer)i + 1);
		entry = lua_gettop(L);
		if (lua_type(L, entry) != LUA_TTABLE) {
			fail(ld, sub, "expected { name = ..., key = { env = ... } }, got %s",
			     lua_value_kind(L, entry));
			lua_pop(L, 1);
			return -1;
		}
		lua_pushnil(L);
		while (lua_next(L, entry)) {
			const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
			lua_pop(L, 1);
			if (!k || (strcmp(k, "name") != 0 && strcmp(k, "key") != 0)) {
				lua_pop(L, 2);
				return fail(ld, sub, "unknown key%s%s%s (expected name and key)",
				            k ? " \"" : "", k ? k : "", k ? "\"" : "");
			}
		}
		lua_getfield(L, entry, "name");
		name = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
		rc = name && len > 0 && len <= CLIENT_KEY_NAME_MAX && strlen(name) == len ? 0 : -1;
		for (size_t c = 0; rc == 0 && c < len; c++)
			if ((unsigned char)name[c] <= 0x20 || (unsigned char)name[c] >= 0x7f)
				rc = -1;
		if (rc == 0 && !(ck->name = strdup(name)))
			rc = -2;
		lua_pop(L, 1);
		t->auth.n_client_keys = i + 1;
		if (rc) {
			lua_pop(L, 1);
			key_printf(sub, sizeof(sub), "%s[%zu].name", key, i + 1);
			return fail(ld, sub,
			            rc == -2 ? "out of memory"
			                     : "must be 1..%d printable ASCII characters without spaces",
			            CLIENT_KEY_NAME_MAX);
		}
		for (size_t j = 0; j < i; j++)
			if (strcmp(t->auth.client_keys[j].name, ck->name) == 0) {
				lua_pop(L, 1);
				key_printf(sub, sizeof(sub), "%s[%zu].name", key, i + 1);
				return fail(ld, sub, "\"%s\" is listed twice", ck->name);
			}
		key_printf(sub, sizeof(sub), "%s[%zu].key", key, i + 1);
		memset(&kv, 0, sizeof(kv));
		lua_getfield(L, entry, "key");
		if (lua_isnil(L, -1))
			rc = fail(ld, sub, "is required");
		else if ((rc = read_secret(ld, sub, -1, &kv)) == 0 &&
		         secret_load(&kv.ref, &ck->key, why, sizeof(why)))
			rc = fail(ld, sub, "%s", why);
		value_release(&kv);
		lua_pop(L, 2);
		if (rc)
			return -1;
		/* Two names for one key would make the identity depend on list order. */
		for (size_t j = 0; j < i; j++)
			if (secret_equals(&t->auth.client_keys[j].key, ck->key.data, ck->key.len))
				return fail(ld, sub,
				            "the same key as %s[%zu] (each caller needs its own key)", key,
				            j + 1);
	}
	return 0;
}

static int conv_proxy_header(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct tenant *t = base;

	/* An HTTP field name (RFC 9110 token); never a credential header. */
	for (size_t i = 0; i < v->len; i++)
		if (!strchr("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
		            v->str[i]))
			return fail(ld, key, "\"%s\" is not a header name", v->str);
	if (strcasecmp(v->str, "Authorization") == 0 || strcasecmp(v->str, "Cookie") == 0 ||
	    strcasecmp(v->str, "Proxy-Authorization") == 0 || strcasecmp(v->str, "X-Forwarded-For") == 0)
		return fail(ld, key, "\"%s\" cannot carry the proxy's user", v->str);
	if (!(t->auth.proxy.header = strndup(v->str, v->len)))
		return fail(ld, key, "out of memory");
	return 0;
}

static int conv_proxy_from(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct tenant *t = base;
	char sub[256];

	if (v->n == 0)
		return fail(ld, key, "must list at least one CIDR (there is no default)");
	if (!(t->auth.proxy.from = calloc(v->n, sizeof(*t->auth.proxy.from))))
		return fail(ld, key, "out of memory");
	for (size_t i = 0; i < v->n; i++) {
		key_printf(sub, sizeof(sub), "%s[%zu]", key, i + 1);
		if (cidr_parse(v->list[i], strlen(v->list[i]), &t->auth.proxy.from[i]))
			return fail(
			    ld, sub,
			    "\"%s\" is not a CIDR such as \"10.0.0.0/8\" or \"::1/128\" (no host bits set)",
			    v->list[i]);
		t->auth.proxy.n_from = i + 1;
	}
	return 0;
}

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

/* Binds the tenant's algorithms to its keys, opens its JWKS, builds the HMAC key. */
static int check_jwt_keys(struct loader *ld, const char *path, struct tenant *t)
{
	struct jwt_config *j = &t->auth.jwt;
	unsigned asym = j->rules.algorithms & ~(unsigned)JWT_HMAC_ALGS;
	char key[256], why[512];

	if (j->hmac_secret.data && !(j->rules.algorithms & JWT_HMAC_ALGS)) {
		key_printf(key, sizeof(key), "%s.auth.jwt.hmac_secret", path);
		return fail(ld, key, "is given but no HS* algorithm is listed");
	}
	if (asym && !j->public_key && !j->jwks_opts.enabled) {
		key_printf(key, sizeof(key), "%s.auth.jwt", path);
		return fail(ld, key, "%s is listed: give public_key = { file = ... } or jwks = { ... }",
		            jwt_alg_name(asym & -asym));
	}
	if (j->public_key && !(jwt_key_algs(j->public_key) & j->rules.algorithms)) {
		key_printf(key, sizeof(key), "%s.auth.jwt.public_key", path);
		return fail(ld, key, "is an %s key, but no algorithm it verifies is listed",
		            jwt_key_describe(j->public_key));
	}
	if (j->public_key && !j->jwks_opts.enabled && (asym & ~jwt_key_algs(j->public_key))) {
		unsigned bad = asym & ~jwt_key_algs(j->public_key);
		key_printf(key, sizeof(key), "%s.auth.jwt.algorithms", path);
		return fail(ld, key, "%s is listed, but the public key is %s (and there is no jwks)",
		            jwt_alg_name(bad & -bad), jwt_key_describe(j->public_key));
	}
	if (j->jwks_opts.enabled) {
		key_printf(key, sizeof(key), "%s.auth.jwt.jwks", path);
		if (!j->jwks_opts.file == !j->jwks_opts.url)
			return fail(ld, key, "give exactly one of file and url");
		if (j->jwks_opts.min_refresh_s > j->jwks_opts.max_cache_s)
			return fail(ld, key, "min_refresh_s (%ld) is more than max_cache_s (%ld)",
			            j->jwks_opts.min_refresh_s, j->jwks_opts.max_cache_s);
		if (!asym)
			return fail(ld, key,
			            "is given but only HS* algorithms are listed (a JWKS holds public keys)");
		if (!(j->jwks = jwks_open(&j->jwks_opts, t->name, why, sizeof(why))))
			return fail(ld, key, "%s", why);
	}
	if (ident_jwt_prepare(j, why, sizeof(why))) {
		key_printf(key, sizeof(key), "%s.auth.jwt.hmac_secret", path);
		return fail(ld, key, "%s", why);
	}
	return 0;
}

/* Checks that involve more than one option of a tenant. */
static int check_tenant(struct loader *ld, const char *path, struct tenant *t)
{
	char key[256];

	if (!t->auth.jwt.enabled && !t->auth.none && !t->auth.n_client_keys && !t->auth.proxy.enabled) {
		key_printf(key, sizeof(key), "%s.auth", path);
		return fail(
		    ld, key,
		    "no authentication mode: give jwt, client_keys or trusted_proxy (or none = true for "
		    "development)");
	}
	if (t->auth.jwt.enabled && (t->auth.jwt.rules.algorithms & (JWT_HS256 | JWT_HS384 | JWT_HS512)) &&
	    !t->auth.jwt.hmac_secret.data) {
		key_printf(key, sizeof(key), "%s.auth.jwt.hmac_secret", path);
		return fail(ld, key, "is required when an HS* algorithm is listed");
	}
	if (t->auth.jwt.enabled && check_jwt_keys(ld, path, t))
		return -1;
	if (t->default_expires_s > t->max_expires_s) {
		key_printf(key, sizeof(key), "%s.default_expires_in", path);
		return fail(ld, key, "%llds is longer than max_expires_in (%llds)", t->default_expires_s,
		            t->max_expires_s);
	}
	if (t->rate_limit.burst < 0)
		t->rate_limit.burst = t->rate_limit.per_second;
	if (t->rate_limit.per_second > 0 && t->rate_limit.burst < 1) {
		key_printf(key, sizeof(key), "%s.rate_limit.burst", path);
		return fail(ld, key, "must be at least 1 when per_second is set");
	}
	if (t->rate_limit.per_requester.burst < 0)
		t->rate_limit.per_requester.burst = t->rate_limit.per_requester.per_second;
	if (t->rate_limit.per_requester.per_second > 0 && t->rate_limit.per_requester.burst < 1) {
		key_printf(key, sizeof(key), "%s.rate_limit.per_requester.burst", path);
		return fail(ld, key, "must be at least 1 when per_second is set");
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
		return fail(ld, o->name, "expected a table of tenants, got %s", lua_value_kind(L, idx));
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		size_t len;
		const char *name;
		if (lua_type(L, -2) != LUA_TSTRING) {
			lua_pop(L, 2);
			return fail(ld, o->name,
			            "tenant names must be strings (write tenants = { name = { ... } })");
		}
		name = lua_tolstring(L, -2, &len);
		if (!tenant_name_valid(name, len)) {
			fail(ld, o->name, "\"%s\" is not a valid tenant name (1..%d of A-Z a-z 0-9 _ -)",
			     name, TENANT_NAME_MAX);
			lua_pop(L, 2);
			return -1;
		}
		if (lua_type(L, -1) != LUA_TTABLE) {
			key_printf(path, sizeof(path), "%s.%s", o->name, name);
			fail(ld, path, "expected a table, got %s", lua_value_kind(L, -1));
			lua_pop(L, 2);
			return -1;
		}
		lua_pop(L, 1);
		n++;
	}
	if (n == 0)
		return fail(ld, o->name, "at least one tenant is required");

	/* Sorted, so that the order of tenants does not depend on Lua's hashing. */
	names = calloc(n, sizeof(char *));
	cfg->tenants = calloc(n, sizeof(struct tenant));
	if (!names || !cfg->tenants) {
		free(names);
		return fail(ld, o->name, "out of memory");
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
			return fail(ld, o->name, "out of memory");
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
		key_printf(path, sizeof(path), "%s.%s", o->name, t->name);
		lua_pushstring(L, t->name);
		lua_rawget(L, idx);
		rc = walk_table(ld, "tenants.*", path, lua_absindex(L, -1), t);
		lua_pop(L, 1);
		if (rc || check_tenant(ld, path, t))
			return -1;
	}
	return 0;
}

static void join_key(char *out, size_t outlen, const char *path, const char *key)
{
	if (path[0])
		key_printf(out, outlen, "%s.%s", path, key);
	else
		key_printf(out, outlen, "%s", key);
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
			const char *kind = lua_value_kind(L, -1);
			lua_pop(L, 1);
			return fail(ld, path[0] ? path : NULL, "unexpected %s key: expected names = values",
			            kind);
		}
		k = lua_tostring(L, -1);
		if (strcmp(k, "*") != 0 && find_child(pattern, k))
			continue;
		join_key(key, sizeof(key), path, k);
		hint = suggest(pattern, k);
		if (hint)
			fail(ld, NULL, "unknown key \"%s\" (did you mean \"%s\"?)", key, hint);
		else if (!path[0])
			fail(ld, NULL, "unknown key \"%s\" (helper variables must be local)", key);
		else
			fail(ld, NULL, "unknown key \"%s\"", key);
		lua_pop(L, 1);
		return -1;
	}

	for (size_t i = 0; i < N_OPTIONS; i++) {
		const struct option *o = &options[i];
		const char *k = child_key(o, pattern);
		int rc = 0;

		if (!k || strcmp(k, "*") == 0)
			continue;
		join_key(key, sizeof(key), path, k);
		lua_pushstring(L, k);
		lua_rawget(L, idx);
		if (o->type == OPT_MAP) {
			if (lua_isnil(L, -1))
				rc = fail(ld, key, "is required (at least one tenant)");
			else
				rc = walk_tenants(ld, o, lua_absindex(L, -1));
		} else if (o->type == OPT_TABLE) {
			bool present = !lua_isnil(L, -1);
			if (present && (o->flags & OPT_UNSUPPORTED))
				rc = fail(ld, key, "not supported yet in this version");
			else if (present && lua_type(L, -1) != LUA_TTABLE)
				rc = fail(ld, key, "expected a table, got %s", lua_value_kind(L, -1));
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
			rc = read_value(ld, o, key, -1, &v);
			if (rc == 0)
				rc = store_value(ld, o, key, &v, base);
			value_release(&v);
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
 * The file runs in the broker's one Lua sandbox (policy_sandbox_run in
 * policy.c), the policies' own: the charged string, table, math and utf8
 * libraries (a C loop is charged before it runs), the sealed string
 * metatable, no I/O, load, require, print or setmetatable (so no __gc or
 * __close of the file's can run after it returns, nor any of its code while
 * the walk reads its globals), under an instruction budget, a CPU time
 * budget and a memory cap. A syntax error never quotes the file's text.
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
	static const struct policy_limits lim = {
	    .max_instructions = CONFIG_INSTRUCTIONS,
	    .timeout_ms = CONFIG_TIMEOUT_MS,
	    .max_memory_bytes = CONFIG_MEMORY_MAX,
	};
	struct walk_ctx w = {.ld = ld, .rc = -1};
	struct policy_engine *box;
	char why[512];
	lua_State *L;
	int rc = -1;

	box = policy_sandbox_new(&lim, why, sizeof(why));
	if (!box)
		return fail(ld, NULL, "%s", why);
	L = policy_engine_lua(box);
	ld->L = L;
	if (policy_sandbox_run(box, ld->shown, text, len, why, sizeof(why)) != 0) {
		/* Lua's messages start with "<file>:<line>:" already (Lua
		 * shortens long names). */
		if (strncmp(why, ld->shown, strlen(ld->shown)) == 0)
			snprintf(ld->err, ld->errlen, "%s", why);
		else
			fail(ld, NULL, "%s", why);
		goto out;
	}
	lua_pop(L, 1); /* the file's result: its globals are the configuration */
	lua_pushcfunction(L, walk_protected);
	lua_pushlightuserdata(L, &w);
	lua_pushvalue(L, -3);
	if (lua_pcall(L, 2, 0, 0) != LUA_OK)
		fail(ld, NULL, "out of memory");
	else if (w.rc == 0)
		rc = 0;
out:
	ld->L = NULL;
	policy_engine_free(box);
	return rc;
}

/* ------------------------------------------------------------------------ */
/* Public functions                                                          */
/* ------------------------------------------------------------------------ */

struct config *config_load(const char *path, char *err, size_t errlen)
{
	char fallback[8];
	struct loader ld = {.shown = path, .err = err, .errlen = errlen};
	struct config *cfg;
	char why[512], *text = NULL;
	size_t len = 0;

	if (!err || errlen == 0) {
		ld.err = fallback;
		ld.errlen = sizeof(fallback);
	}
	ld.err[0] = '\0';
	cfg = calloc(1, sizeof(*cfg));
	if (!cfg) {
		fail(&ld, NULL, "out of memory");
		return NULL;
	}
	ld.cfg = cfg;
	cfg->path = realpath(path, NULL);
	if (!cfg->path) {
		fail(&ld, NULL, "%s", strerror(errno));
		goto bad;
	}
	cfg->dir = dir_of(cfg->path);
	if (!cfg->dir) {
		fail(&ld, NULL, "out of memory");
		goto bad;
	}
	if (config_read_file(cfg->path, CONFIG_FILE_MAX, &text, &len, why, sizeof(why)) != 0) {
		fail(&ld, NULL, "%s", why);
		goto bad;
	}
	if (run_file(&ld, text, len) != 0)
		goto bad;
	free(text);
	return cfg;
bad:
	free(text);
	config_free(cfg);
	return NULL;
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
		config_free_policy_files(t);
		secret_clear(&t->auth.jwt.hmac_secret);
		ident_jwt_release(&t->auth.jwt);
		free(t->auth.jwt.jwks_opts.file);
		free(t->auth.jwt.jwks_opts.url);
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
		free_list(t->allowed_scopes);
		free_list(t->cors_origins);
	}
	free(cfg->tenants);
	free(cfg->path);
	free(cfg->dir);
	free(cfg->listen_host);
	free(cfg->admin_host);
	free(cfg->courier_base_url);
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

void config_print_options(void)
{
	printf("| name | type | default | bounds | description |\n");
	printf("|---|---|---|---|---|\n");
	for (size_t i = 0; i < N_OPTIONS; i++) {
		const struct option *o = &options[i];
		char def[96], bounds[64] = "";

		if (o->flags & OPT_UNSUPPORTED)
			snprintf(def, sizeof(def), "—");
		else if (o->flags & OPT_REQUIRED)
			snprintf(def, sizeof(def), "required");
		else if (!o->def)
			snprintf(def, sizeof(def), "—");
		else if (o->flags & OPT_PROSE_DEFAULT)
			snprintf(def, sizeof(def), "%s", o->def);
		else if (o->type == OPT_STRING || o->type == OPT_DURATION)
			snprintf(def, sizeof(def), "`\"%s\"`", o->def);
		else
			snprintf(def, sizeof(def), "`%s`", o->def);
		if (o->type == OPT_INT || o->type == OPT_NUMBER)
			snprintf(bounds, sizeof(bounds), "%.15g..%.15g", o->min, o->max);
		else if (o->type == OPT_DURATION)
			snprintf(bounds, sizeof(bounds), "1s..10y");
		printf("| `%s` | %s | %s | %s | %s |\n", o->name, type_name(o->type), def, bounds, o->desc);
	}
}
