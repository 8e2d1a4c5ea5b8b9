/*
 * config.h — the broker's configuration, as loaded from one Lua file.
 *
 * The file is evaluated in a Lua sandbox without I/O; its result is checked
 * against one declarative table of options (src/config/options.c) with types,
 * defaults and bounds; unknown keys and wrong types are errors naming the key
 * and the file. Secrets, policy files, keys and JWKS sources are read after
 * the sandbox is closed (src/config/resolve.c).
 * Secrets are never literals: only { env = "NAME" } or { file = "PATH" }.
 * A struct config is immutable once loaded and owns everything it points to.
 */
#ifndef BROKER_CONFIG_H
#define BROKER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "config/policyfiles.h"
#include "ident.h"
#include "jwks.h"
#include "jwt.h"
#include "secret.h"

/* A decision's budget when policy_limits says nothing (also what
 * `courier-broker test` uses without a configuration): plain numbers, so the
 * option table can show them as its defaults. */
#define POLICY_DEFAULT_MAX_INSTRUCTIONS 1000000
#define POLICY_DEFAULT_MAX_MEMORY_BYTES 8388608
#define POLICY_DEFAULT_TIMEOUT_MS       50

struct denyset;

struct rate_limit {
	double per_second; /* 0: no limit */
	double burst;
	/* Each requester's own bucket (subject, client key, or client IP), taken
	 * before the tenant's: 0 per_second turns it off. */
	struct {
		double per_second;
		double burst;
	} per_requester;
};

struct tenant {
	char *name;
	struct secret api_key;
	char *policy_path; /* absolute */
	char *policy_dir;  /* absolute, folder of policy_path */
	char *policy_text; /* the policy's source, read once at load */
	size_t policy_len;
	char policy_revision[17];      /* hex of SHA-256(policy, modules, data)[0..8) */
	struct policy_module *modules; /* the other *.lua of policy_dir, for require */
	size_t n_modules;
	char *data_path; /* absolute, NULL when no data = ... */
	char *data_text; /* JSON, read once at load; broker.data */
	size_t data_len;
	struct auth_config auth;
	long long max_expires_s;     /* default 7d */
	long long default_expires_s; /* used when the policy gives none; default 1h */
	char **allowed_scopes;       /* NULL-terminated; default: the push tier */
	size_t n_allowed_scopes;
	char **cors_origins; /* NULL-terminated, or NULL: no CORS */
	size_t n_cors_origins;
	struct rate_limit rate_limit;
	char *courier_base_url; /* tenants.*.courier = { region | base_url }; NULL: the global one */
	bool token_cache;       /* reuse a token for an identical grant (grantcache.h) */
	/* The kill switch (killswitch.h): enabled = false refuses every request;
	 * deny_users = { file } lists users refused whatever the policy says. */
	bool enabled;
	bool deny_given;            /* deny_users = { ... } is present */
	char *deny_path;            /* absolute, NULL when none */
	struct denyset *deny_users; /* read at load (denyset.h); the watcher keeps newer ones */
	/* shadow_policy: decided beside the live policy, never enforced (shadow.h). */
	char *shadow_path; /* as configured (absolute), NULL when none */
	long shadow_index; /* its tenant in cfg->shadow, or -1 */
};

/* cluster: brokers that share one Redis (redis.h). Absent: enabled false,
 * and nothing touches Redis. Keys start "courier-broker:<name>:". */
struct cluster_conf {
	bool enabled;
	char *host;              /* from cluster.redis.url: a name, IPv4 or IPv6 (no brackets) */
	unsigned short port;     /* default 6379 */
	unsigned db;             /* SELECTed after AUTH; default 0 */
	char *user;              /* ACL user ("redis://user@host"), or NULL: AUTH with the password only */
	struct secret password;  /* cluster.redis.password; unset (data NULL): no AUTH */
	unsigned timeout_ms;     /* connecting, and each synchronous command; default 1000 */
	char *name;              /* the cluster's name, in every key: [A-Za-z0-9_.-]{1,64} */
	struct secret cache_key; /* cluster.cache_key: exactly 32 bytes, or unset */
	/* cluster.redis.rate_timeout_ms: a request's wait for the shared rate limits */
	unsigned rate_timeout_ms;
	/* rediss://: TLS, verified against the system's anchors and
	 * cluster.redis.ca_file's (absolute path, or NULL); the client context
	 * is built at load (redisio.h). */
	bool tls;
	char *ca_file;
	char ca_digest[65]; /* SHA-256 of ca_file's content, hex; "" without */
	struct ssl_ctx_st *tls_ctx;
	/* cluster.redis.cert and .key: the client certificate tls_ctx presents
	 * (absolute path, or NULL: none) and its key, loaded with the secrets */
	char *cert_path;
	struct secret key;
	char cert_digest[65]; /* SHA-256 of the certificate's file, hex; "" without */
	/* cluster.rate_lease_ms: how long leased tokens may be spent; 0: no leases */
	unsigned rate_lease_ms;
};

struct config {
	char *path; /* absolute path of the file */
	char *dir;  /* its folder: relative paths are relative to it */

	char *listen_host; /* "127.0.0.1" */
	unsigned short listen_port;
	unsigned threads;              /* MHD pool size, default 2 */
	unsigned connection_timeout_s; /* idle client connections, default 30 */
	size_t max_body_bytes;         /* default 16 KiB */
	unsigned max_connections;      /* default 4096 */
	unsigned max_inflight;         /* upstream calls in flight before 503, default 4096 */
	unsigned drain_timeout_ms;     /* SIGTERM: wait for in-flight, default 10000 */
	unsigned reload_timeout_ms;    /* SIGHUP: budget of one reload, default 30000 */

	/* Floods and slow clients (operations.md). */
	unsigned max_connections_per_ip; /* 0: no cap; default max_connections / 4 */
	unsigned request_timeout_ms;     /* a request's line, headers and body; 0: none; default 10000 */
	char *admin_host;                /* admin_listen; NULL: no admin listener */
	unsigned short admin_port;

	int log_level;     /* enum log_level, default LOG_INFO */
	char *audit_file;  /* audit_log.file, absolute; NULL: no audit log */
	bool audit_inputs; /* audit_log.inputs */

	/* tls: HTTPS on listen; the pair is read and checked at every load (tls.h). */
	struct {
		bool enabled;
		char *cert_path; /* absolute */
		char *cert_pem;  /* the certificate file's text (leaf, then chain) */
		size_t cert_len;
		struct secret key; /* the PEM private key */
	} tls;

	char *courier_base_url;  /* from region (default "us") or base_url; env COURIER_BASE_URL overrides */
	char *courier_ca_file;   /* absolute; NULL: the system's CA bundle */
	long courier_timeout_ms; /* default 5000 */
	long courier_connect_timeout_ms;  /* default 2000 */
	unsigned courier_max_connections; /* per host, default 1024 */

	/* The system's anchors and ca_file's (trust.h); NULL without ca_file. */
	struct x509_store_st *courier_trust;

	/* Retries and the circuit breaker (courier.c). */
	unsigned courier_retries;          /* default 2 */
	unsigned courier_breaker_failures; /* consecutive failures that open it; 0: off; default 5 */
	long courier_breaker_cooldown_ms;  /* its first pause, default 5000 */

	/* Extra retries beyond courier_retries, earned per answered call (default 10). */
	unsigned courier_retry_budget_percent;

	long long policy_max_instructions; /* per decision, default 1,000,000 */
	size_t policy_max_memory_bytes;    /* per decision, default 8 MiB */
	long policy_timeout_ms;            /* per decision wall clock, default 50 */

	struct tenant *tenants;
	size_t n_tenants;

	/* The shadow policies: a configuration whose tenants are copies of the
	 * live ones that name a shadow_policy, with its source (config/shadow.c);
	 * NULL when none. Compiled and tested like the live one at every load. */
	struct config *shadow;
	struct cluster_conf cluster;
};

/*
 * The Lua sandbox the configuration file runs in, given by the caller of
 * config_load (the broker's one: policy_config_sandbox, policy.h), so that
 * config/ builds no Lua state of its own and needs nothing of policy/.
 * open: a fresh sandbox under these budgets (instructions, CPU time, heap),
 * or NULL with the reason in err. lua: its state. run: runs text once as the
 * chunk "@name" in a fresh environment; 0 with that environment and then the
 * chunk's first result pushed on lua(box), or -1 with the reason (file:line,
 * never a quote of the text) in err, pushing nothing. close: frees it all.
 */
struct lua_State;
struct config_sandbox {
	void *(*open)(long long max_instructions, long timeout_ms, size_t max_memory_bytes, char *err,
	              size_t errlen);
	struct lua_State *(*lua)(void *box);
	int (*run)(void *box, const char *name, const char *text, size_t len, char *err, size_t errlen);
	void (*close)(void *box);
};

/*
 * Loads and validates the file at path in two phases: the file is parsed and
 * checked in a sandbox of box's, then secrets (env or file), policy files,
 * keys and JWKS sources are resolved. Returns a new config, or NULL with a
 * message naming the file and key in err (also when box is NULL or lacks a
 * function: no sandbox, no configuration).
 */
struct config *config_load(const char *path, const struct config_sandbox *box, char *err, size_t errlen);

/* What a command needs of a configuration: `eval` and `replay` never call
 * Courier, so they never read its API keys (left empty), nor the TLS pair. */
enum config_use {
	CONFIG_USE_SERVE,    /* everything (config_load) */
	CONFIG_USE_EVAL,     /* the requesters' auth and the policies: no Courier key, no TLS */
	CONFIG_USE_POLICIES, /* the policies and their data only: no secret, key or JWKS at all */
};

/* config_load for a command that needs only part of the configuration: the
 * file is checked all the same, what use leaves out is never read. */
struct config *config_load_for(const char *path, const struct config_sandbox *box, enum config_use use,
                               char *err, size_t errlen);

/* Frees everything, zeroing every secret. NULL is fine. */
void config_free(struct config *cfg);

/* `serve --listen ADDR`: every later config_load takes addr (checked like
 * `listen`) instead of the file's `listen`. Call before any thread loads a
 * configuration; addr must outlive them. */
void config_override_listen(const char *addr);

/* The tenant with that name, or NULL. */
const struct tenant *config_tenant(const struct config *cfg, const char *name);

/* Writes every option with its default as Markdown rows (for docs). */
void config_print_options(void);

/* The base URL of a Courier region ("us", "eu"), or NULL for another name. */
const char *config_region_url(const char *region);

#endif
