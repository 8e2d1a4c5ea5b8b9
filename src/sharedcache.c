/*
 * sharedcache.c — the shared token cache's names and sealed values (OpenSSL).
 *
 * Owns two keys derived from cluster.cache_key (HMAC-SHA256 of a label):
 * one names entries (an HMAC of the grant's key, so a name reveals nothing
 * and cannot be computed without the key), one seals them (AES-256-GCM, a
 * random 96-bit nonce each time, the name as associated data). It must
 * never write a token, a user id or a scope in clear, never accept a value
 * whose tag does not verify, and never leave a key or a plaintext unzeroed.
 */
#include "sharedcache.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "grantcache.h"
#include "secret.h"

#define NONCE 12
#define TAG   16
#define HEAD  16 /* exp and lifetime, 8 bytes each, big-endian */

static int derive(const unsigned char *key, size_t len, const char *label, unsigned char out[32])
{
	unsigned int n = 0;

	return HMAC(EVP_sha256(), key, (int)len, (const unsigned char *)label, strlen(label), out, &n) &&
	               n == 32
	           ? 0
	           : -1;
}

int sharedcache_init(struct sharedcache *sc, const unsigned char *cache_key, size_t len)
{
	if (!cache_key || len != 32 ||
	    derive(cache_key, len, "courier-broker token cache: seal", sc->enc) != 0 ||
	    derive(cache_key, len, "courier-broker token cache: name", sc->name) != 0) {
		sharedcache_wipe(sc);
		return -1;
	}
	return 0;
}

void sharedcache_wipe(struct sharedcache *sc)
{
	OPENSSL_cleanse(sc, sizeof(*sc));
}

int sharedcache_name(const struct sharedcache *sc, const char *prefix, const struct grantcache_key *k,
                     char *out, size_t outlen)
{
	unsigned char md[32];
	unsigned int n = 0;
	char hex[33];
	int w;

	if (!HMAC(EVP_sha256(), sc->name, sizeof(sc->name), k->h, sizeof(k->h), md, &n) || n != 32)
		return -1;
	secret_hex(md, 16, hex);
	w = snprintf(out, outlen, "%stc:%s", prefix, hex);
	return w < 0 || (size_t)w >= outlen ? -1 : 0;
}

static void put64(unsigned char *p, long long v)
{
	uint64_t u = (uint64_t)v;

	for (int i = 7; i >= 0; i--, u >>= 8)
		p[i] = (unsigned char)u;
}

static long long get64(const unsigned char *p)
{
	uint64_t u = 0;

	for (int i = 0; i < 8; i++)
		u = (u << 8) | p[i];
	return (long long)u;
}

/* AES-256-GCM one way or the other: 0, or -1. */
static int gcm(bool seal, const struct sharedcache *sc, const unsigned char *nonce, const char *name,
               const unsigned char *in, size_t len, unsigned char *out, unsigned char *tag)
{
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	int n = 0, ok;

	ok = c && EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL, seal) == 1 &&
	     EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, NONCE, NULL) == 1 &&
	     EVP_CipherInit_ex(c, NULL, NULL, sc->enc, nonce, seal) == 1 &&
	     EVP_CipherUpdate(c, NULL, &n, (const unsigned char *)name, (int)strlen(name)) == 1 &&
	     EVP_CipherUpdate(c, out, &n, in, (int)len) == 1;
	if (ok && !seal)
		ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAG, tag) == 1;
	ok = ok && EVP_CipherFinal_ex(c, out + n, &n) == 1;
	if (ok && seal)
		ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TAG, tag) == 1;
	EVP_CIPHER_CTX_free(c);
	return ok ? 0 : -1;
}

int sharedcache_seal(const struct sharedcache *sc, const char *name, const char *token, size_t len,
                     long long exp, long long lifetime_s, unsigned char *out, size_t cap, size_t *outlen)
{
	unsigned char plain[HEAD + GRANTCACHE_TOKEN_MAX];
	int rc = -1;

	if (len > GRANTCACHE_TOKEN_MAX || cap < len + SHAREDCACHE_OVERHEAD || RAND_bytes(out, NONCE) != 1)
		return -1;
	put64(plain, exp);
	put64(plain + 8, lifetime_s);
	memcpy(plain + HEAD, token, len);
	if (gcm(true, sc, out, name, plain, HEAD + len, out + NONCE, out + NONCE + HEAD + len) == 0) {
		*outlen = NONCE + HEAD + len + TAG;
		rc = 0;
	}
	OPENSSL_cleanse(plain, HEAD + len);
	return rc;
}

int sharedcache_open(const struct sharedcache *sc, const char *name, const unsigned char *in, size_t inlen,
                     char *token, size_t cap, size_t *len, long long *exp, long long *lifetime_s)
{
	unsigned char plain[HEAD + GRANTCACHE_TOKEN_MAX], tag[TAG];
	size_t body;
	int rc = -1;

	if (inlen < SHAREDCACHE_OVERHEAD || inlen - SHAREDCACHE_OVERHEAD > GRANTCACHE_TOKEN_MAX ||
	    inlen - SHAREDCACHE_OVERHEAD + 1 > cap)
		return -1;
	body = inlen - NONCE - TAG;
	memcpy(tag, in + inlen - TAG, TAG);
	if (gcm(false, sc, in, name, in + NONCE, body, plain, tag) == 0) {
		*exp = get64(plain);
		*lifetime_s = get64(plain + 8);
		*len = body - HEAD;
		memcpy(token, plain + HEAD, *len);
		token[*len] = '\0';
		rc = 0;
	}
	OPENSSL_cleanse(plain, sizeof(plain));
	return rc;
}
