/*
 * grantcache.c — identical grants: their key, and the token cache.
 *
 * Owns the process-wide token cache: a hash table of entries under one
 * mutex, with an age list (oldest first) that bounds it. Lookups and puts
 * are O(1) and hold the lock for a copy of one token. It must never keep a
 * user id or a scope in clear (entries are found by a SHA-256 key), never
 * log a token, and never free a token without zeroing it (OPENSSL_cleanse).
 */
#include "grantcache.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "scope.h"
#include "secret.h"

#define N_BUCKETS  16384 /* a power of two */
#define TENANT_MAX 72

struct entry {
	struct grantcache_key key;
	char tenant[TENANT_MAX];
	long long exp, lifetime_s;
	struct entry *chain;         /* same bucket */
	struct entry *older, *newer; /* the age list */
	size_t len;
	char token[]; /* len bytes and a NUL */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct entry *buckets[N_BUCKETS];
static struct entry *oldest, *newest;
static size_t count, max_entries = GRANTCACHE_MAX_ENTRIES;

/* ------------------------------------------------------------------ the key */

static void feed(EVP_MD_CTX *c, const void *p, size_t n)
{
	uint64_t len = n;

	/* Length-prefixed, so no two different tuples hash the same bytes. */
	EVP_DigestUpdate(c, &len, sizeof(len));
	EVP_DigestUpdate(c, p, n);
}

/* k->user from the scope's one "user_id:" token (the envelope puts exactly
 * one there); all zero when it has none. */
static void key_user_hash(struct grantcache_key *k, const char *tenant, const char *scope)
{
	static const char tag[] = "user_id:";
	char id[SCOPE_USER_ID_MAX + 1];

	for (const char *s = scope; *s;) {
		size_t n = strcspn(s, " ");
		if (n > sizeof(tag) - 1 && strncmp(s, tag, sizeof(tag) - 1) == 0 &&
		    n - (sizeof(tag) - 1) < sizeof(id)) {
			memcpy(id, s + sizeof(tag) - 1, n - (sizeof(tag) - 1));
			id[n - (sizeof(tag) - 1)] = '\0';
			grantcache_user_hash(tenant, id, k->user);
			return;
		}
		s += n;
		s += strspn(s, " ");
	}
}

void grantcache_key(struct grantcache_key *k, const char *tenant, const char *courier_url,
                    const struct secret *api_key, const char *policy_revision, const char *scope,
                    long long expires_s)
{
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	unsigned n = 0;

	memset(k, 0, sizeof(*k));
	if (c && EVP_DigestInit_ex(c, EVP_sha256(), NULL)) {
		feed(c, tenant, strlen(tenant));
		feed(c, courier_url, strlen(courier_url));
		feed(c, api_key->digest, sizeof(api_key->digest));
		feed(c, policy_revision, strlen(policy_revision));
		feed(c, scope, strlen(scope));
		feed(c, &expires_s, sizeof(expires_s));
		if (EVP_DigestFinal_ex(c, k->h, &n) != 1 || n != sizeof(k->h))
			memset(k, 0, sizeof(*k));
	}
	/* On failure the key stays all zero: it then matches nothing cached
	 * (put refuses it) and shares no flight worth having. */
	EVP_MD_CTX_free(c);
	key_user_hash(k, tenant, scope);
}

void grantcache_user_hash(const char *tenant, const char *user_id, unsigned char out[GRANTCACHE_KEY_LEN])
{
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	unsigned n = 0;

	memset(out, 0, GRANTCACHE_KEY_LEN);
	if (c && EVP_DigestInit_ex(c, EVP_sha256(), NULL)) {
		feed(c, "user", 4);
		feed(c, tenant, strlen(tenant));
		feed(c, user_id, strlen(user_id));
		if (EVP_DigestFinal_ex(c, out, &n) != 1 || n != GRANTCACHE_KEY_LEN)
			memset(out, 0, GRANTCACHE_KEY_LEN);
	}
	EVP_MD_CTX_free(c);
}

static bool key_valid(const struct grantcache_key *k)
{
	for (size_t i = 0; i < sizeof(k->h); i++)
		if (k->h[i])
			return true;
	return false;
}

/* ---------------------------------------------------------------- the table */

static struct entry **slot(const struct grantcache_key *k)
{
	size_t b = ((size_t)k->h[0] | (size_t)k->h[1] << 8 | (size_t)k->h[2] << 16) & (N_BUCKETS - 1);

	return &buckets[b];
}

static struct entry **find(const struct grantcache_key *k)
{
	struct entry **p = slot(k);

	while (*p && memcmp((*p)->key.h, k->h, sizeof(k->h)) != 0)
		p = &(*p)->chain;
	return p;
}

/* Unlinks *p (found by find) and zeroes and frees it. Lock held. */
static void drop(struct entry **p)
{
	struct entry *e = *p;

	*p = e->chain;
	if (e->older)
		e->older->newer = e->newer;
	else
		oldest = e->newer;
	if (e->newer)
		e->newer->older = e->older;
	else
		newest = e->older;
	count--;
	OPENSSL_cleanse(e, sizeof(*e) + e->len + 1);
	free(e);
}

int grantcache_get(const struct grantcache_key *k, double now, char *token, size_t cap, size_t *len,
                   long long *exp)
{
	struct entry **p;
	int rc = -1;

	pthread_mutex_lock(&lock);
	p = find(k);
	if (*p) {
		struct entry *e = *p;
		double left = (double)e->exp - now;

		if (left < 1 || 2 * left < (double)e->lifetime_s)
			drop(p); /* past its half-life: a new call replaces it */
		else if (e->len < cap) {
			memcpy(token, e->token, e->len + 1);
			*len = e->len;
			*exp = e->exp;
			rc = 0;
		}
	}
	pthread_mutex_unlock(&lock);
	return rc;
}

void grantcache_put(const struct grantcache_key *k, const char *tenant, const char *token, size_t len,
                    long long exp, long long lifetime_s)
{
	struct entry **p, *e;

	if (!key_valid(k) || len > GRANTCACHE_TOKEN_MAX || lifetime_s <= 0 || strlen(tenant) >= TENANT_MAX ||
	    !(e = malloc(sizeof(*e) + len + 1)))
		return;
	memset(e, 0, sizeof(*e));
	e->key = *k;
	memcpy(e->tenant, tenant, strlen(tenant) + 1);
	e->exp = exp;
	e->lifetime_s = lifetime_s;
	e->len = len;
	memcpy(e->token, token, len);
	e->token[len] = '\0';

	pthread_mutex_lock(&lock);
	p = find(k);
	if (*p)
		drop(p);
	while (count >= max_entries && oldest)
		drop(find(&oldest->key));
	e->chain = *slot(k);
	*slot(k) = e;
	e->older = newest;
	if (newest)
		newest->newer = e;
	else
		oldest = e;
	newest = e;
	count++;
	pthread_mutex_unlock(&lock);
}

void grantcache_drop_tenant(const char *tenant)
{
	pthread_mutex_lock(&lock);
	for (struct entry *e = oldest, *next; e; e = next) {
		next = e->newer;
		if (!tenant || strcmp(e->tenant, tenant) == 0)
			drop(find(&e->key));
	}
	pthread_mutex_unlock(&lock);
}

static int user_cmp(const void *a, const void *b)
{
	return memcmp(a, b, GRANTCACHE_KEY_LEN);
}

void grantcache_drop_users(const char *tenant, const unsigned char (*users)[GRANTCACHE_KEY_LEN], size_t n)
{
	if (n == 0)
		return;
	pthread_mutex_lock(&lock);
	for (struct entry *e = oldest, *next; e; e = next) {
		next = e->newer;
		if (strcmp(e->tenant, tenant) == 0 &&
		    bsearch(e->key.user, users, n, GRANTCACHE_KEY_LEN, user_cmp))
			drop(find(&e->key));
	}
	pthread_mutex_unlock(&lock);
}

void grantcache_clear(void)
{
	grantcache_drop_tenant(NULL);
}

size_t grantcache_size(void)
{
	size_t n;

	pthread_mutex_lock(&lock);
	n = count;
	pthread_mutex_unlock(&lock);
	return n;
}

void grantcache_set_max(size_t max)
{
	pthread_mutex_lock(&lock);
	max_entries = max ? max : 1;
	while (count > max_entries && oldest)
		drop(find(&oldest->key));
	pthread_mutex_unlock(&lock);
}
