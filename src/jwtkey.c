/*
 * jwtkey.c — JWS algorithms and the keys that verify them.
 *
 * Owns the algorithm table (each algorithm bound to one key type), the
 * verification keys (an HMAC secret's keyed templates, RSA, EC P-256/P-384
 * and Ed25519 public keys) and the signature check of bytes under one key.
 * It must never let a key verify an algorithm outside its type (a public key
 * is never an HMAC secret), never accept an ECDSA r or s outside 1..n-1, and
 * never put key material into an error message.
 */
#include "jwtkey.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "secret.h"

/* ---- algorithms -------------------------------------------------------- */

/*
 * Every algorithm is bound to one key type: a token naming HS256 is only ever
 * checked with the HMAC secret, so a public key can never be used as an HMAC
 * secret (the classic RS256->HS256 confusion), and an RSA key never checks an
 * ES256 token. A key's type fixes the algorithms it may verify (key_algs).
 */
enum key_type {
	KEY_HMAC,
	KEY_RSA,
	KEY_EC_P256,
	KEY_EC_P384,
	KEY_ED25519,
};

enum sig_kind {
	SIG_HMAC,
	SIG_RSA_PKCS1,
	SIG_RSA_PSS,
	SIG_ECDSA,
	SIG_EDDSA,
};

struct alg {
	const char *name;
	unsigned bit;
	enum key_type key;
	enum sig_kind kind;
	const char *digest; /* OpenSSL digest name; NULL for EdDSA */
	size_t siglen;      /* exact signature length in bytes; 0: the RSA modulus' */
};

static const struct alg algs[] = {
    {"HS256", JWT_HS256, KEY_HMAC, SIG_HMAC, "SHA256", 32},
    {"HS384", JWT_HS384, KEY_HMAC, SIG_HMAC, "SHA384", 48},
    {"HS512", JWT_HS512, KEY_HMAC, SIG_HMAC, "SHA512", 64},
    {"RS256", JWT_RS256, KEY_RSA, SIG_RSA_PKCS1, "SHA256", 0},
    {"RS384", JWT_RS384, KEY_RSA, SIG_RSA_PKCS1, "SHA384", 0},
    {"RS512", JWT_RS512, KEY_RSA, SIG_RSA_PKCS1, "SHA512", 0},
    {"PS256", JWT_PS256, KEY_RSA, SIG_RSA_PSS, "SHA256", 0},
    {"PS384", JWT_PS384, KEY_RSA, SIG_RSA_PSS, "SHA384", 0},
    {"PS512", JWT_PS512, KEY_RSA, SIG_RSA_PSS, "SHA512", 0},
    {"ES256", JWT_ES256, KEY_EC_P256, SIG_ECDSA, "SHA256", 64},
    {"ES384", JWT_ES384, KEY_EC_P384, SIG_ECDSA, "SHA384", 96},
    {"EdDSA", JWT_EDDSA, KEY_ED25519, SIG_EDDSA, NULL, 64},
    /* RFC 9864's fully-specified name: the same signature, as only Ed25519
     * keys verify EdDSA here. Second, so jwt_alg_name keeps "EdDSA". */
    {"Ed25519", JWT_EDDSA, KEY_ED25519, SIG_EDDSA, NULL, 64},
};

#define N_ALGS (sizeof(algs) / sizeof(algs[0]))

static const struct alg *alg_lookup(const char *name, size_t len)
{
	for (size_t i = 0; i < N_ALGS; i++)
		if (strlen(algs[i].name) == len && memcmp(algs[i].name, name, len) == 0)
			return &algs[i];
	return NULL;
}

unsigned jwt_alg_from_name(const char *name)
{
	const struct alg *a = name ? alg_lookup(name, strlen(name)) : NULL;

	return a ? a->bit : 0;
}

const char *jwt_alg_name(unsigned alg)
{
	for (size_t i = 0; i < N_ALGS; i++)
		if (algs[i].bit == alg)
			return algs[i].name;
	return NULL;
}

/* The algorithms a key of type t may verify. */
static unsigned key_algs(enum key_type t)
{
	unsigned m = 0;

	for (size_t i = 0; i < N_ALGS; i++)
		if (algs[i].key == t)
			m |= algs[i].bit;
	return m;
}

/* ---- keys ---------------------------------------------------------------- */

struct jwt_key {
	enum key_type type;
	unsigned algs;       /* a subset of key_algs(type) */
	char *kid;           /* NULL: none */
	EVP_PKEY *pkey;      /* public keys */
	BIGNUM *order;       /* EC keys: the group order, for the r and s range check */
	EVP_MAC_CTX *mac[3]; /* HMAC: keyed templates for SHA256/384/512, duplicated per use */
	const char *describe;
};

/* HMAC is fetched once for the process; each key keeps keyed templates, so a
 * verification costs one EVP_MAC_CTX_dup instead of a fetch and a key setup. */
static pthread_once_t hmac_once = PTHREAD_ONCE_INIT;
static EVP_MAC *hmac_mac;

static void hmac_fetch(void)
{
	hmac_mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
}

bool jwt_printable(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return false;
	return true;
}

/* Writes why into err (if any); returns -1. */
static int fail(char *err, size_t errlen, const char *why)
{
	if (err && errlen)
		snprintf(err, errlen, "%s", why);
	return -1;
}

void jwt_key_free(struct jwt_key *k)
{
	if (!k)
		return;
	for (size_t i = 0; i < 3; i++)
		EVP_MAC_CTX_free(k->mac[i]);
	EVP_PKEY_free(k->pkey);
	BN_free(k->order);
	free(k->kid);
	free(k);
}

struct jwt_key *jwt_key_hmac(const struct secret *s, char *err, size_t errlen)
{
	static const char *const digests[3] = {"SHA256", "SHA384", "SHA512"};
	struct jwt_key *k;

	if (!s || !s->data || s->len == 0) {
		fail(err, errlen, "empty HMAC secret");
		return NULL;
	}
	pthread_once(&hmac_once, hmac_fetch);
	if (!hmac_mac || !(k = calloc(1, sizeof(*k)))) {
		fail(err, errlen, "out of memory");
		return NULL;
	}
	k->type = KEY_HMAC;
	k->algs = key_algs(KEY_HMAC);
	k->describe = "HMAC";
	for (size_t i = 0; i < 3; i++) {
		OSSL_PARAM params[2] = {
		    OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)digests[i], 0),
		    OSSL_PARAM_construct_end()};
		k->mac[i] = EVP_MAC_CTX_new(hmac_mac);
		if (!k->mac[i] || !EVP_MAC_init(k->mac[i], s->data, s->len, params)) {
			jwt_key_free(k);
			fail(err, errlen, "HMAC key setup failed");
			return NULL;
		}
	}
	return k;
}

/* The NID of an EC key's named curve, or NID_undef (explicit parameters included). */
static int ec_curve_nid(const EVP_PKEY *pkey)
{
	char name[64];
	size_t n = 0;

	if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, name, sizeof(name), &n))
		return NID_undef;
	return OBJ_sn2nid(name);
}

struct jwt_key *jwt_key_pkey(EVP_PKEY *pkey, char *err, size_t errlen)
{
	struct jwt_key *k = NULL;
	char why[128];

	if (!pkey) {
		fail(err, errlen, "no key");
		return NULL;
	}
	if (!(k = calloc(1, sizeof(*k)))) {
		fail(err, errlen, "out of memory");
		goto bad;
	}
	k->pkey = pkey;
	if (EVP_PKEY_is_a(pkey, "RSA")) {
		int bits = EVP_PKEY_get_bits(pkey);
		if (bits < JWT_RSA_MIN_BITS || bits > JWT_RSA_MAX_BITS) {
			snprintf(why, sizeof(why), "RSA key of %d bits refused (%d..%d)", bits,
			         JWT_RSA_MIN_BITS, JWT_RSA_MAX_BITS);
			fail(err, errlen, why);
			goto bad;
		}
		k->type = KEY_RSA;
		k->describe = "RSA";
	} else if (EVP_PKEY_is_a(pkey, "EC")) {
		int nid = ec_curve_nid(pkey);
		EC_GROUP *g;
		if (nid != NID_X9_62_prime256v1 && nid != NID_secp384r1) {
			fail(err, errlen,
			     "EC key on a curve other than P-256 or P-384 (or explicit parameters)");
			goto bad;
		}
		k->type = nid == NID_secp384r1 ? KEY_EC_P384 : KEY_EC_P256;
		k->describe = nid == NID_secp384r1 ? "EC P-384" : "EC P-256";
		g = EC_GROUP_new_by_curve_name(nid);
		k->order = g ? BN_dup(EC_GROUP_get0_order(g)) : NULL;
		EC_GROUP_free(g);
		if (!k->order) {
			fail(err, errlen, "out of memory");
			goto bad;
		}
	} else if (EVP_PKEY_is_a(pkey, "ED25519")) {
		k->type = KEY_ED25519;
		k->describe = "Ed25519";
	} else {
		const char *t = EVP_PKEY_get0_type_name(pkey);
		snprintf(why, sizeof(why), "key type %s not supported (RSA, EC P-256/P-384, Ed25519)",
		         t ? t : "?");
		fail(err, errlen, why);
		goto bad;
	}
	k->algs = key_algs(k->type);
	return k;
bad:
	if (k)
		jwt_key_free(k);
	else
		EVP_PKEY_free(pkey);
	return NULL;
}

struct jwt_key *jwt_key_pem(const char *pem, size_t len, char *err, size_t errlen)
{
	EVP_PKEY *pkey = NULL;
	BIO *bio;

	if (!pem || len == 0 || len > 1024 * 1024) {
		fail(err, errlen, "empty or oversized PEM");
		return NULL;
	}
	/* A private key where a public one belongs is an operator error worth naming. */
	if (memmem(pem, len, "PRIVATE KEY-----", 16)) {
		fail(err, errlen, "holds a private key: give the public key (openssl pkey -pubout)");
		return NULL;
	}
	bio = BIO_new_mem_buf(pem, (int)len);
	if (bio)
		pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
	BIO_free(bio);
	if (!pkey) {
		fail(err, errlen, "not a PEM public key (-----BEGIN PUBLIC KEY-----)");
		return NULL;
	}
	return jwt_key_pkey(pkey, err, errlen);
}

int jwt_key_restrict(struct jwt_key *k, const char *kid, unsigned allowed)
{
	if (!(k->algs & allowed))
		return -1;
	if (kid) {
		size_t n = strlen(kid);
		if (n == 0 || n > JWT_KID_MAX)
			return -1;
		free(k->kid);
		if (!(k->kid = strdup(kid)))
			return -1;
	}
	k->algs &= allowed;
	return 0;
}

unsigned jwt_key_algs(const struct jwt_key *k)
{
	return k ? k->algs : 0;
}

const char *jwt_key_kid(const struct jwt_key *k)
{
	return k ? k->kid : NULL;
}

const char *jwt_key_describe(const struct jwt_key *k)
{
	return k ? k->describe : "none";
}

/* ---- signatures -------------------------------------------------------- */

static int verify_hmac(const struct alg *a, const struct jwt_key *k, const char *input, size_t inlen,
                       const unsigned char *sig, size_t siglen)
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	size_t maclen = 0;
	EVP_MAC_CTX *ctx;
	int ok;
	size_t slot = a->bit == JWT_HS256 ? 0 : a->bit == JWT_HS384 ? 1 : 2;

	if (!k || k->type != KEY_HMAC || siglen != a->siglen || !(ctx = EVP_MAC_CTX_dup(k->mac[slot])))
		return -1;
	ok = EVP_MAC_update(ctx, (const unsigned char *)input, inlen) &&
	     EVP_MAC_final(ctx, mac, &maclen, sizeof(mac)) && maclen == a->siglen &&
	     CRYPTO_memcmp(mac, sig, maclen) == 0;
	EVP_MAC_CTX_free(ctx);
	OPENSSL_cleanse(mac, sizeof(mac));
	return ok ? 0 : -1;
}

/*
 * JWS carries ECDSA signatures as r||s, each the curve's size, big-endian;
 * OpenSSL verifies DER. r and s must be in 1..n-1 (CVE-2022-21449 accepted
 * r = s = 0): checked here before OpenSSL sees them, whatever it checks too.
 * Returns the DER length with *der allocated (OPENSSL_free), or -1.
 */
static int ecdsa_to_der(const struct jwt_key *k, const unsigned char *sig, size_t siglen, unsigned char **der)
{
	size_t half = siglen / 2;
	BIGNUM *r = BN_bin2bn(sig, (int)half, NULL), *s = BN_bin2bn(sig + half, (int)half, NULL);
	ECDSA_SIG *es = NULL;
	int n = -1;

	*der = NULL;
	if (!r || !s || BN_is_zero(r) || BN_is_zero(s) || BN_cmp(r, k->order) >= 0 ||
	    BN_cmp(s, k->order) >= 0)
		goto out;
	if (!(es = ECDSA_SIG_new()) || !ECDSA_SIG_set0(es, r, s))
		goto out;
	r = s = NULL; /* owned by es now */
	n = i2d_ECDSA_SIG(es, der);
	if (n <= 0) {
		OPENSSL_free(*der);
		*der = NULL;
		n = -1;
	}
out:
	BN_free(r);
	BN_free(s);
	ECDSA_SIG_free(es);
	return n;
}

static int verify_pkey(const struct alg *a, const struct jwt_key *k, const char *input, size_t inlen,
                       const unsigned char *sig, size_t siglen)
{
	EVP_MD_CTX *md = NULL;
	EVP_PKEY_CTX *pctx = NULL;
	unsigned char *der = NULL;
	int derlen, rc = -1;

	if (!(k->algs & a->bit))
		return -1;
	/* The exact length: an RSA signature is as long as the modulus. */
	if (siglen != (a->siglen ? a->siglen : (size_t)EVP_PKEY_get_size(k->pkey)))
		return -1;
	if (a->kind == SIG_ECDSA) {
		if ((derlen = ecdsa_to_der(k, sig, siglen, &der)) < 0)
			return -1;
		sig = der;
		siglen = (size_t)derlen;
	}
	if (!(md = EVP_MD_CTX_new()) ||
	    EVP_DigestVerifyInit_ex(md, &pctx, a->digest, NULL, NULL, k->pkey, NULL) != 1)
		goto out;
	/* RFC 7518 §3.5: MGF1 with the same hash, a salt as long as the hash. */
	if (a->kind == SIG_RSA_PSS && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
	                               EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1 ||
	                               EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx, a->digest, NULL) != 1))
		goto out;
	if (a->kind == SIG_RSA_PKCS1 && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1)
		goto out;
	if (EVP_DigestVerify(md, sig, siglen, (const unsigned char *)input, inlen) == 1)
		rc = 0;
out:
	EVP_MD_CTX_free(md);
	OPENSSL_free(der);
	return rc;
}

static int verify_with(const struct alg *a, const struct jwt_key *k, const char *input, size_t inlen,
                       const unsigned char *sig, size_t siglen)
{
	if (!k || !(k->algs & a->bit))
		return -1;
	return a->kind == SIG_HMAC ? verify_hmac(a, k, input, inlen, sig, siglen)
	                           : verify_pkey(a, k, input, inlen, sig, siglen);
}

unsigned jwt_alg_from_text(const char *name, size_t len)
{
	const struct alg *a = name ? alg_lookup(name, len) : NULL;

	return a ? a->bit : 0;
}

int jwt_key_verify(const struct jwt_key *k, unsigned alg, const char *input, size_t inlen,
                   const unsigned char *sig, size_t siglen)
{
	for (size_t i = 0; i < N_ALGS; i++)
		if (algs[i].bit == alg)
			return verify_with(&algs[i], k, input, inlen, sig, siglen);
	return -1;
}
