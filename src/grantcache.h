/*
 * grantcache.h — identical grants: their key, and the token cache.
 *
 * Two grants are identical when they name the same tenant, Courier URL and
 * API key, policy revision, final scope string (user_id:<id> included) and
 * final lifetime. Their key is a SHA-256 of those, so neither a user id nor
 * a scope is kept in clear. The token cache (tenants.*.token_cache) is
 * process-wide, bounded (the oldest entry goes first) and holds each token
 * like a secret: zeroed when dropped, never logged.
 */
#ifndef BROKER_GRANTCACHE_H
#define BROKER_GRANTCACHE_H

#include <stdbool.h>
#include <stddef.h>

struct secret;

#define GRANTCACHE_KEY_LEN 32

/* The default number of cached tokens (process-wide). */
#define GRANTCACHE_MAX_ENTRIES 10000

/* A cached token larger than this is not cached (Courier's are < 1 KiB). */
#define GRANTCACHE_TOKEN_MAX 4096

struct grantcache_key {
	unsigned char h[GRANTCACHE_KEY_LEN];
	unsigned char user[GRANTCACHE_KEY_LEN]; /* grantcache_user_hash of the scope's user_id */
};

/* The key of a grant. */
void grantcache_key(struct grantcache_key *k, const char *tenant, const char *courier_url,
                    const struct secret *api_key, const char *policy_revision, const char *scope,
                    long long expires_s);

/*
 * The cached token for k when at least half its lifetime remains at now (Unix
 * seconds, fractional): copies it into token (cap bytes, NUL-terminated),
 * its length in *len and its exp in *exp, and returns 0. Returns -1 on a
 * miss; an entry past its half-life is dropped (zeroed) then.
 */
int grantcache_get(const struct grantcache_key *k, double now, char *token, size_t cap, size_t *len,
                   long long *exp);

/* Keeps token (len bytes) for k, valid until exp, granted for lifetime_s,
 * for tenant; replaces an entry of the same key, evicts the oldest when full. */
void grantcache_put(const struct grantcache_key *k, const char *tenant, const char *token, size_t len,
                    long long exp, long long lifetime_s);

/* The hash that names tenant's user_id in keys (SHA-256, never the id). */
void grantcache_user_hash(const char *tenant, const char *user_id, unsigned char out[GRANTCACHE_KEY_LEN]);

/* Drops (zeroes) every entry of tenant whose user is one of users: n
 * grantcache_user_hash values sorted with memcmp (the kill switch). */
void grantcache_drop_users(const char *tenant, const unsigned char (*users)[GRANTCACHE_KEY_LEN], size_t n);

/* Drops (zeroes) every entry of tenant / every entry. */
void grantcache_drop_tenant(const char *tenant);
void grantcache_clear(void);

/* How many entries are held; the bound (0 < max) for the following puts. */
size_t grantcache_size(void);
void grantcache_set_max(size_t max);

#endif
