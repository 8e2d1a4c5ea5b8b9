/*
 * testkeys.h — keys and tokens minted with OpenSSL for the jwt/jwks/ident
 * tests and the benchmark: key generation (EVP_PKEY_Q_keygen), PEM and JWK
 * export, JWS signing with EVP_DigestSign (ECDSA DER turned into JWS r||s).
 * Independent of src/: nothing here calls the code under test.
 */
#ifndef BROKER_TESTKEYS_H
#define BROKER_TESTKEYS_H

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum tk_kind { TK_RSA, TK_P256, TK_P384, TK_ED25519, TK_RSA1024, TK_P521, TK_N };

/* One key of each kind per process (RSA generation is slow). */
static inline EVP_PKEY *tk_key(enum tk_kind k)
{
	static EVP_PKEY *cache[TK_N];

	if (!cache[k]) {
		switch (k) {
		case TK_RSA:
			cache[k] = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
			break;
		case TK_RSA1024:
			cache[k] = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
			break;
		case TK_P256:
			cache[k] = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
			break;
		case TK_P384:
			cache[k] = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
			break;
		case TK_P521:
			cache[k] = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-521");
			break;
		case TK_ED25519:
			cache[k] = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
			break;
		case TK_N:
			break;
		}
		if (!cache[k])
			abort();
	}
	return cache[k];
}

/* A second key of the same kind, for "wrong key" tests. */
static inline EVP_PKEY *tk_other_key(enum tk_kind k)
{
	static EVP_PKEY *cache[TK_N];

	if (!cache[k]) {
		cache[k] = k == TK_RSA    ? EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048)
		           : k == TK_P256 ? EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256")
		           : k == TK_P384 ? EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384")
		                          : EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
		if (!cache[k])
			abort();
	}
	return cache[k];
}

/* The public half as PEM text (static buffer per call site: copy if kept). */
static inline const char *tk_pub_pem(EVP_PKEY *pkey, char *out, size_t cap)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *p;
	long n;

	if (!b || !PEM_write_bio_PUBKEY(b, pkey))
		abort();
	n = BIO_get_mem_data(b, &p);
	if (n <= 0 || (size_t)n >= cap)
		abort();
	memcpy(out, p, (size_t)n);
	out[n] = '\0';
	BIO_free(b);
	return out;
}

/* base64url without padding; returns chars written at dst (NUL-terminated). */
static inline size_t tk_b64url(char *dst, const void *src, size_t n)
{
	unsigned char *tmp = malloc(n / 3 * 4 + 8);
	int w;

	if (!tmp)
		abort();
	w = EVP_EncodeBlock(tmp, src, (int)n);
	while (w > 0 && tmp[w - 1] == '=')
		w--;
	for (int i = 0; i < w; i++)
		dst[i] = tmp[i] == '+' ? '-' : tmp[i] == '/' ? '_' : (char)tmp[i];
	dst[w] = '\0';
	free(tmp);
	return (size_t)w;
}

static inline size_t tk_b64url_bn(char *dst, const BIGNUM *bn, int pad)
{
	unsigned char buf[1100];
	int n = pad ? BN_bn2binpad(bn, buf, pad) : BN_bn2bin(bn, buf);

	if (n <= 0)
		abort();
	return tk_b64url(dst, buf, (size_t)n);
}

/* The JWK of the public half; extra is spliced in (e.g. "\"kid\":\"k1\","). */
static inline const char *tk_jwk(EVP_PKEY *pkey, const char *extra, char *out, size_t cap)
{
	char a[1500], b[200];

	if (EVP_PKEY_is_a(pkey, "RSA")) {
		BIGNUM *n = NULL, *e = NULL;
		if (!EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_N, &n) ||
		    !EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, &e))
			abort();
		tk_b64url_bn(a, n, 0);
		tk_b64url_bn(b, e, 0);
		snprintf(out, cap, "{%s\"kty\":\"RSA\",\"n\":\"%s\",\"e\":\"%s\"}", extra, a, b);
		BN_free(n);
		BN_free(e);
	} else if (EVP_PKEY_is_a(pkey, "EC")) {
		BIGNUM *x = NULL, *y = NULL;
		int bits = EVP_PKEY_get_bits(pkey), size = (bits + 7) / 8;
		if (!EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_X, &x) ||
		    !EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, &y))
			abort();
		tk_b64url_bn(a, x, size);
		tk_b64url_bn(b, y, size);
		snprintf(out, cap, "{%s\"kty\":\"EC\",\"crv\":\"%s\",\"x\":\"%s\",\"y\":\"%s\"}", extra,
		         bits == 256   ? "P-256"
		         : bits == 384 ? "P-384"
		                       : "P-521",
		         a, b);
		BN_free(x);
		BN_free(y);
	} else {
		unsigned char raw[32];
		size_t n = sizeof(raw);
		if (!EVP_PKEY_get_raw_public_key(pkey, raw, &n))
			abort();
		tk_b64url(a, raw, n);
		snprintf(out, cap, "{%s\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\"}", extra, a);
	}
	return out;
}

/* The digest and padding of a JWS algorithm name. */
static inline const char *tk_digest(const char *alg)
{
	return strstr(alg, "256")   ? "SHA256"
	       : strstr(alg, "384") ? "SHA384"
	       : strstr(alg, "512") ? "SHA512"
	                            : NULL;
}

/*
 * Signs input with pkey the JWS way for alg (RS*, PS*, ES*, EdDSA). Writes
 * the raw signature (r||s for ECDSA) to sig and returns its length.
 */
static inline size_t tk_sign(const char *alg, EVP_PKEY *pkey, const void *input, size_t inlen,
                             unsigned char *sig, size_t cap)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	EVP_PKEY_CTX *pctx = NULL;
	const char *digest = strcmp(alg, "EdDSA") == 0 ? NULL : tk_digest(alg);
	unsigned char der[1100];
	size_t n = sizeof(der);

	if (!md || EVP_DigestSignInit_ex(md, &pctx, digest, NULL, NULL, pkey, NULL) != 1)
		abort();
	if (alg[0] == 'P' && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
	                      EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1))
		abort();
	if (EVP_DigestSign(md, der, &n, input, inlen) != 1)
		abort();
	EVP_MD_CTX_free(md);
	if (alg[0] == 'E' && alg[1] == 'S') {
		const unsigned char *p = der;
		ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)n);
		int size = (EVP_PKEY_get_bits(pkey) + 7) / 8;
		if (!es || (size_t)(2 * size) > cap)
			abort();
		BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, size);
		BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + size, size);
		ECDSA_SIG_free(es);
		return (size_t)(2 * size);
	}
	if (n > cap)
		abort();
	memcpy(sig, der, n);
	return n;
}

/* header.payload.signature into out; header and payload are JSON text. */
static inline const char *tk_mint(char *out, const char *header, const char *payload, const char *alg,
                                  EVP_PKEY *pkey)
{
	unsigned char sig[1100];
	size_t n, s;

	n = tk_b64url(out, header, strlen(header));
	out[n++] = '.';
	n += tk_b64url(out + n, payload, strlen(payload));
	s = tk_sign(alg, pkey, out, n, sig, sizeof(sig));
	out[n++] = '.';
	tk_b64url(out + n, sig, s);
	return out;
}

/* Same, with a raw signature given (for forged r||s and wrong lengths). */
static inline const char *tk_mint_sig(char *out, const char *header, const char *payload,
                                      const unsigned char *sig, size_t siglen)
{
	size_t n;

	n = tk_b64url(out, header, strlen(header));
	out[n++] = '.';
	n += tk_b64url(out + n, payload, strlen(payload));
	out[n++] = '.';
	tk_b64url(out + n, sig, siglen);
	return out;
}

#endif
