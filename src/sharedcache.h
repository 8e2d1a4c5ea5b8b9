/*
 * sharedcache.h — the cluster's shared token cache: names and sealed values.
 *
 * A token cached for the cluster (tenants.*.token_cache with cluster.cache_key)
 * sits in Redis under a name derived from the grant's key with a key only
 * brokers hold, sealed with AES-256-GCM under another such key, the name as
 * associated data (a value moved to another name does not open).
 */
#ifndef BROKER_SHAREDCACHE_H
#define BROKER_SHAREDCACHE_H

#include <stddef.h>

struct grantcache_key;

/* The keys derived from cluster.cache_key (zeroed by sharedcache_wipe). */
struct sharedcache {
	unsigned char enc[32], name[32];
};

/* A sealed value: nonce, exp and lifetime, the token, the tag. */
#define SHAREDCACHE_OVERHEAD (12 + 16 + 16)
#define SHAREDCACHE_NAME_MAX 160

/* Derives sc's keys from cache_key (32 bytes). 0, or -1. */
int sharedcache_init(struct sharedcache *sc, const unsigned char *cache_key, size_t len);
void sharedcache_wipe(struct sharedcache *sc);

/* "<prefix>tc:<32 hex>" for grant k into out. 0, or -1. */
int sharedcache_name(const struct sharedcache *sc, const char *prefix, const struct grantcache_key *k,
                     char *out, size_t outlen);

/* Seals token (len bytes) valid until exp (Unix s), granted for lifetime_s,
 * for name into out (cap >= len + SHAREDCACHE_OVERHEAD): 0 and *outlen, or -1. */
int sharedcache_seal(const struct sharedcache *sc, const char *name, const char *token, size_t len,
                     long long exp, long long lifetime_s, unsigned char *out, size_t cap, size_t *outlen);

/* Opens a value sealed for name: the token into token (cap bytes, NUL
 * terminated), its exp and lifetime: 0, or -1 (tampered, another name,
 * another key, too long). */
int sharedcache_open(const struct sharedcache *sc, const char *name, const unsigned char *in, size_t inlen,
                     char *token, size_t cap, size_t *len, long long *exp, long long *lifetime_s);

#endif
