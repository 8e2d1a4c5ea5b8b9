/*
 * loader.h — private to src/config/: the loader's state, the option table's
 * shape, and what the loader's files call in each other.
 *
 * config.c walks the file's tables (config_load), options.c holds the table
 * of options, value.c reads and stores one value, conv.c holds the
 * converters, pending.c the list of what the walk defers (secrets, files,
 * keys, JWKS), resolve.c the second phase that reads it, report.c the text
 * of every message. Includes run one way: config -> conv -> value ->
 * pending -> report; resolve -> pending, report. Nothing outside src/config/
 * includes this header.
 */
#ifndef BROKER_CONFIG_LOADER_H
#define BROKER_CONFIG_LOADER_H

#include <lua.h>
#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "secret.h"

struct config;
struct tenant;

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

struct loader {
	lua_State *L;
	const struct config_sandbox *box; /* the caller's: the file runs in one of its sandboxes */
	struct config *cfg;
	enum config_use use; /* what config_resolve reads (config.h) */
	const char *shown;   /* the path as the caller wrote it: every message starts with it */
	char *err;
	size_t errlen;
	struct pending *pending; /* what config_resolve reads, in walk order (pending.c) */
	size_t n_pending, cap_pending;
};

#define CFG(m) offsetof(struct config, m), sizeof(((struct config *)0)->m)
#define TEN(m) offsetof(struct tenant, m), sizeof(((struct tenant *)0)->m)
/* A numeric macro as the option table's default text. */
#define NUMBER_TEXT(n) #n
#define NUMBER(n)      NUMBER_TEXT(n)
#define NOWHERE        0, 0

/* options.c: the table, in the order the loader walks it (a row may read
 * earlier rows of its section: see conv.c). */
extern const struct option config_options[];
extern const size_t config_n_options;

/* The row for pattern + "." + key (pattern "" at the top), or NULL. */
const struct option *config_find_child(const char *pattern, const char *key);
/* The last component of a row's name if the row is a direct child of pattern. */
const char *config_child_key(const struct option *o, const char *pattern);
/* The child of pattern at most two edits from key, or NULL. */
const char *config_suggest(const char *pattern, const char *key);

/* value.c */
/* "<file>: <key>: <reason>" into ld->err. Returns -1 so callers can `return config_fail(...)`. */
__attribute__((format(printf, 3, 4))) int config_fail(struct loader *ld, const char *key, const char *fmt,
                                                      ...);
/* snprintf for key paths: a path too long for the buffer is cut, never overrun. */
__attribute__((format(printf, 3, 4))) void config_key_printf(char *out, size_t outlen, const char *fmt, ...);
/* What the file gave instead, for "expected X, got Y". */
const char *config_value_kind(lua_State *L, int idx);
void config_free_list(char **list);
/* The length n of the table at idx (an absolute index) when its keys are
 * exactly 1..n: 0; -1 when it has other keys, -2 when it has holes. */
int config_list_length(lua_State *L, int idx, size_t *n_out);
void config_value_release(struct value *v);
/* { env = "NAME" } or { file = "PATH" } at idx into v->ref. */
int config_read_secret(struct loader *ld, const char *key, int idx, struct value *v);
/* Fills v from the Lua value at idx (nil: absent, then the row's default). */
int config_read_value(struct loader *ld, const struct option *o, const char *key, int idx, struct value *v);
/* Stores a value at the row's member, or hands it to the row's converter. */
int config_store_value(struct loader *ld, const struct option *o, const char *key, struct value *v,
                       void *base);

/* conv.c: the converters the table names. */
int config_conv_listen(struct loader *ld, const char *key, struct value *v, void *base);
int config_conv_admin_listen(struct loader *ld, const char *key, struct value *v, void *base);
int config_conv_log_level(struct loader *ld, const char *key, struct value *v, void *base);
int config_conv_audit_file(struct loader *ld, const char *key, struct value *v, void *base);
int config_conv_per_ip(struct loader *ld, const char *key, struct value *v, void *base);
int config_conv_region(struct loader *ld, const char *key, struct value *v, void *base);
int config_conv_base_url(struct loader *ld, const char *key, struct value *v, void *base);
int config_conv_ca_file(struct loader *ld, const char *key, struct value *v, void *base);
int config_conv_tenant_region(struct loader *ld, const char *key, struct value *v, void *base);
int config_conv_tenant_base_url(struct loader *ld, const char *key, struct value *v, void *base);
int config_conv_jwks_ca_file(struct loader *ld, const char *key, struct value *v, void *base);
int config_conv_policy(struct loader *ld, const char *key, struct value *v, void *base);
int config_conv_data(struct loader *ld, const char *key, struct value *v, void *base);
int config_conv_algorithms(struct loader *ld, const char *key, struct value *v, void *base);
int config_conv_scopes(struct loader *ld, const char *key, struct value *v, void *base);
int config_conv_cors(struct loader *ld, const char *key, struct value *v, void *base);
int config_conv_burst(struct loader *ld, const char *key, struct value *v, void *base);
int config_conv_requester_burst(struct loader *ld, const char *key, struct value *v, void *base);
int config_conv_public_key(struct loader *ld, const char *key, struct value *v, void *base);
int config_conv_jwks_file(struct loader *ld, const char *key, struct value *v, void *base);
int config_conv_client_keys(struct loader *ld, const char *key, struct value *v, void *base);
int config_conv_proxy_header(struct loader *ld, const char *key, struct value *v, void *base);
int config_conv_proxy_from(struct loader *ld, const char *key, struct value *v, void *base);
int config_conv_tls_cert(struct loader *ld, const char *key, struct value *v, void *base);
int config_conv_tls_key(struct loader *ld, const char *key, struct value *v, void *base);
int config_conv_deny_file(struct loader *ld, const char *key, struct value *v, void *base);
int config_conv_shadow_policy(struct loader *ld, const char *key, struct value *v, void *base);

/* shadow.c: cfg->shadow from the tenants' shadow_path, after config_resolve. */
int config_shadow_build(struct loader *ld);
void config_shadow_free(struct config *shadow);
int config_conv_cluster_url(struct loader *ld, const char *key, struct value *v, void *base);
int config_conv_cluster_ca_file(struct loader *ld, const char *key, struct value *v, void *base);
int config_conv_cluster_cert(struct loader *ld, const char *key, struct value *v, void *base);
int config_conv_cluster_key(struct loader *ld, const char *key, struct value *v, void *base);
int config_conv_cluster_password(struct loader *ld, const char *key, struct value *v, void *base);
int config_conv_cluster_name(struct loader *ld, const char *key, struct value *v, void *base);
int config_conv_cluster_cache_key(struct loader *ld, const char *key, struct value *v, void *base);

/* resolve.c: the second phase. The walk defers what needs a file, the
 * environment or the network; config_resolve does it outside the sandbox,
 * in the order the walk met it. Each config_defer_* takes what it is given
 * (ref, path), also when it fails. */
enum pending_kind {
	PENDING_SECRET,     /* ref -> *dst */
	PENDING_POLICY,     /* path -> t's policy, modules and revision */
	PENDING_DATA,       /* path -> t's data and revision */
	PENDING_PUBLIC_KEY, /* path -> t's JWT public key */
	PENDING_CLIENT_KEY, /* ref -> t's client key [index], unique in its list */
	PENDING_TENANT,     /* t's JWT keys, JWKS source and HMAC key */
	PENDING_TLS,        /* path (tls.cert) -> cfg->tls, checked with the key */
	PENDING_DENY,       /* path -> t's deny_users (denyset.h) */
	PENDING_CACHE_KEY,  /* cfg->cluster.cache_key, loaded: 64 hex digits -> 32 bytes */
	PENDING_REDIS_TLS,  /* path (cluster.redis.cert) -> cfg->cluster.tls_ctx's identity, with the key */
};

/* One thing the walk met that needs reading (pending.c writes the list,
 * resolve.c reads it). */
struct pending {
	enum pending_kind kind;
	char key[256]; /* the key path messages name */
	struct tenant *t;
	struct secret_ref ref; /* owned */
	struct secret *dst;
	char *path; /* owned */
	size_t index;
};

int config_defer_secret(struct loader *ld, const char *key, struct secret_ref *ref, struct secret *dst);
int config_defer_file(struct loader *ld, enum pending_kind kind, const char *key, struct tenant *t,
                      char *path);
int config_defer_client_key(struct loader *ld, const char *list_key, struct tenant *t, size_t index,
                            struct secret_ref *ref);
int config_defer_tenant(struct loader *ld, const char *path, struct tenant *t);
/* Whether the walk met a secret for dst (it is loaded later). */
bool config_secret_given(const struct loader *ld, const struct secret *dst);
int config_resolve(struct loader *ld);
void config_pending_free(struct loader *ld);

#endif
