/*
 * jwt.c — verifying a requester's JWT (JWS compact serialisation).
 *
 * Owns the token's syntax (three canonical base64url segments), the binding
 * of each algorithm to a key type, signature checks and the registered claims
 * (exp, nbf, iat, iss, aud, the subject). It must never take the algorithm
 * from the token alone, never accept "none" or an unknown "crit" extension,
 * never parse a payload whose signature has not been checked, and never put
 * any part of a token into an error message.
 */
#include "jwt.h"

#include <lauxlib.h>
#include <lua.h>
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
#include <strings.h>

#include "config.h"
#include "json.h"
#include "jwks.h"

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
};

#define N_ALGS           (sizeof(algs) / sizeof(algs[0]))
#define MAX_SIG          (JWT_RSA_MAX_BITS / 8)
#define HEADER_CACHE_MAX 512 /* longest header text push_header keeps decoded */

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

int jwt_config_prepare(struct jwt_config *cfg, char *err, size_t errlen)
{
	if (cfg->hmac_secret.data && !cfg->hmac_key) {
		cfg->hmac_key = jwt_key_hmac(&cfg->hmac_secret, err, errlen);
		if (!cfg->hmac_key)
			return -1;
	}
	return 0;
}

void jwt_config_release(struct jwt_config *cfg)
{
	jwt_key_free(cfg->hmac_key);
	cfg->hmac_key = NULL;
	jwt_key_free(cfg->public_key);
	cfg->public_key = NULL;
	jwks_close(cfg->jwks);
	cfg->jwks = NULL;
}

/* ---- base64url ----------------------------------------------------------- */

/* Each base64url character as its standard-alphabet twin ('-' is '+', '_'
 * is '/'); 0 for a byte outside the alphabet. One table look-up per byte
 * both checks and translates. */
static const unsigned char std_alphabet[256] = {
    ['A'] = 'A', ['B'] = 'B', ['C'] = 'C', ['D'] = 'D', ['E'] = 'E', ['F'] = 'F', ['G'] = 'G', ['H'] = 'H',
    ['I'] = 'I', ['J'] = 'J', ['K'] = 'K', ['L'] = 'L', ['M'] = 'M', ['N'] = 'N', ['O'] = 'O', ['P'] = 'P',
    ['Q'] = 'Q', ['R'] = 'R', ['S'] = 'S', ['T'] = 'T', ['U'] = 'U', ['V'] = 'V', ['W'] = 'W', ['X'] = 'X',
    ['Y'] = 'Y', ['Z'] = 'Z', ['a'] = 'a', ['b'] = 'b', ['c'] = 'c', ['d'] = 'd', ['e'] = 'e', ['f'] = 'f',
    ['g'] = 'g', ['h'] = 'h', ['i'] = 'i', ['j'] = 'j', ['k'] = 'k', ['l'] = 'l', ['m'] = 'm', ['n'] = 'n',
    ['o'] = 'o', ['p'] = 'p', ['q'] = 'q', ['r'] = 'r', ['s'] = 's', ['t'] = 't', ['u'] = 'u', ['v'] = 'v',
    ['w'] = 'w', ['x'] = 'x', ['y'] = 'y', ['z'] = 'z', ['0'] = '0', ['1'] = '1', ['2'] = '2', ['3'] = '3',
    ['4'] = '4', ['5'] = '5', ['6'] = '6', ['7'] = '7', ['8'] = '8', ['9'] = '9', ['-'] = '+', ['_'] = '/',
};

bool jwt_is_compact(const char *s, size_t len)
{
	const char *d1, *d2, *end = s + len;
	size_t outside = 0;

	if (len < 5 || len > 16384 || !(d1 = memchr(s, '.', len)) ||
	    !(d2 = memchr(d1 + 1, '.', (size_t)(end - d1 - 1))))
		return false;
	if (d1 == s || d2 == d1 + 1 || d2 + 1 == end)
		return false;
	/* The two dots are the only bytes outside the alphabet (a third dot is
	 * one more): counted without a branch per byte. */
	for (size_t i = 0; i < len; i++)
		outside += std_alphabet[(unsigned char)s[i]] == 0;
	return outside == 2;
}

/* Value of a base64url character (already checked). */
static int b64url_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	return c == '-' ? 62 : 63;
}

/* Translates n base64url characters to the standard alphabet in dst;
 * returns -1 at the first byte outside the alphabet. */
static int to_std_alphabet(const char *src, size_t n, unsigned char *dst)
{
	unsigned char bad = 0;

	for (size_t i = 0; i < n; i++) {
		dst[i] = std_alphabet[(unsigned char)src[i]];
		bad |= (unsigned char)(dst[i] == 0);
	}
	return bad ? -1 : 0;
}

int jwt_b64url_decode(const char *in, size_t len, unsigned char *out, size_t outcap, size_t *outlen)
{
	unsigned char chunk[1024]; /* a multiple of 4 characters */
	unsigned char tail[4];
	size_t full = len / 4 * 4, rem = len % 4, need, done = 0;
	int last;

	*outlen = 0;
	if (rem == 1)
		return -1;
	need = full / 4 * 3 + (rem ? rem - 1 : 0);
	if (need > outcap)
		return -1;
	/* Canonical: the bits the last character carries beyond the data are 0. */
	if (rem) {
		if (to_std_alphabet(in + full, rem, tail))
			return -1;
		last = b64url_value((unsigned char)in[len - 1]);
		if ((rem == 2 && (last & 0x0f)) || (rem == 3 && (last & 0x03)))
			return -1;
	}
	for (size_t off = 0; off < full; off += sizeof(chunk)) {
		size_t n = full - off < sizeof(chunk) ? full - off : sizeof(chunk);
		if (to_std_alphabet(in + off, n, chunk) ||
		    EVP_DecodeBlock(out + done, chunk, (int)n) != (int)(n / 4 * 3))
			return -1;
		done += n / 4 * 3;
	}
	if (rem) {
		unsigned char three[3];
		memset(tail + rem, '=', 4 - rem);
		if (EVP_DecodeBlock(three, tail, 4) != 3)
			return -1;
		memcpy(out + done, three, rem - 1);
		done += rem - 1;
	}
	*outlen = done;
	return 0;
}

/* ---- helpers ------------------------------------------------------------- */

/* The three segments of a compact JWS: [0,d1), (d1,d2), (d2,len). */
struct segments {
	const char *part[3];
	size_t len[3];
};

static int split(const char *token, size_t len, struct segments *seg)
{
	const char *d1 = memchr(token, '.', len), *d2;

	if (!d1)
		return -1;
	d2 = memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - token));
	if (!d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - token)))
		return -1;
	seg->part[0] = token;
	seg->len[0] = (size_t)(d1 - token);
	seg->part[1] = d1 + 1;
	seg->len[1] = (size_t)(d2 - d1 - 1);
	seg->part[2] = d2 + 1;
	seg->len[2] = len - (size_t)(d2 + 1 - token);
	return 0;
}

/* Decodes a base64url segment holding a JSON object and pushes the table. */
static int push_object(lua_State *L, const char *seg, size_t seglen, unsigned char *buf, size_t bufcap)
{
	size_t n;

	if (jwt_b64url_decode(seg, seglen, buf, bufcap, &n))
		return -1;
	return json_decode_object(L, (const char *)buf, n);
}

/*
 * push_object for a header, through a one-entry cache in L's registry: the
 * base64url text of the last header decoded, and its table. Tokens from one
 * issuer share their header byte for byte, so it is decoded once per issuer
 * and thread, not once per token. The table is only ever read (check_header);
 * what the configuration allows is checked afresh each time.
 */
static const char LAST_HEADER_TEXT = 't';
static const char LAST_HEADER = 'h';

static int push_header(lua_State *L, const char *seg, size_t seglen, unsigned char *buf, size_t bufcap)
{
	const char *text;
	size_t n;
	bool same;

	lua_rawgetp(L, LUA_REGISTRYINDEX, &LAST_HEADER_TEXT);
	text = lua_tolstring(L, -1, &n);
	same = text && n == seglen && memcmp(text, seg, n) == 0;
	lua_pop(L, 1);
	if (same) {
		if (lua_rawgetp(L, LUA_REGISTRYINDEX, &LAST_HEADER) == LUA_TTABLE)
			return 0;
		lua_pop(L, 1);
	}
	if (push_object(L, seg, seglen, buf, bufcap))
		return -1;
	if (seglen <= HEADER_CACHE_MAX) {
		lua_pushvalue(L, -1);
		lua_rawsetp(L, LUA_REGISTRYINDEX, &LAST_HEADER);
		lua_pushlstring(L, seg, seglen);
		lua_rawsetp(L, LUA_REGISTRYINDEX, &LAST_HEADER_TEXT);
	}
	return 0;
}

/* Exact byte comparison of a Lua string at idx with a C string. */
static bool lua_string_equals(lua_State *L, int idx, const char *want)
{
	size_t n;
	const char *s;

	if (lua_type(L, idx) != LUA_TSTRING)
		return false;
	s = lua_tolstring(L, idx, &n);
	return n == strlen(want) && memcmp(s, want, n) == 0;
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

/* Whether cfg holds, or may hold (a JWKS), a key usable with a. */
static bool have_key(const struct jwt_config *cfg, const struct alg *a)
{
	if (a->key == KEY_HMAC)
		return cfg->hmac_key != NULL;
	return (cfg->public_key && (cfg->public_key->algs & a->bit)) || cfg->jwks;
}

/* ---- header -------------------------------------------------------------- */

/* typ values compare case-insensitively, "application/" optional (RFC 7515 §4.1.9). */
static bool typ_equals(const char *got, size_t n, const char *want)
{
	static const char app[] = "application/";
	size_t wn = strlen(want);

	if (n >= sizeof(app) - 1 && strncasecmp(got, app, sizeof(app) - 1) == 0) {
		got += sizeof(app) - 1;
		n -= sizeof(app) - 1;
	}
	if (wn >= sizeof(app) - 1 && strncasecmp(want, app, sizeof(app) - 1) == 0) {
		want += sizeof(app) - 1;
		wn -= sizeof(app) - 1;
	}
	return n == wn && strncasecmp(got, want, n) == 0 && memchr(got, '\0', n) == NULL;
}

/*
 * Checks the header table at the top of the stack; returns the algorithm and
 * copies the kid, if any, to kid ("" when absent). kid is attacker input:
 * bounded, printable, compared exactly later. jku, x5u, x5c and jwk are
 * ignored: keys never come from the token.
 */
static const struct alg *check_header(lua_State *L, const struct jwt_config *cfg, char *kid, const char **why)
{
	const struct alg *a;
	const char *name;
	size_t n;
	int type;

	lua_getfield(L, -1, "alg");
	if (lua_type(L, -1) != LUA_TSTRING) {
		lua_pop(L, 1);
		*why = "header has no alg";
		return NULL;
	}
	name = lua_tolstring(L, -1, &n);
	a = alg_lookup(name, n);
	if (!a)
		*why = n == 4 && memcmp(name, "none", 4) == 0 ? "alg none refused" : "alg not supported";
	lua_pop(L, 1);
	if (!a)
		return NULL;
	if (!(cfg->algorithms & a->bit)) {
		*why = "alg not allowed";
		return NULL;
	}
	if (!have_key(cfg, a)) {
		*why = "no key for alg";
		return NULL;
	}
	/* We implement no JWS extension, so any crit is one we do not understand
	 * (RFC 7515 §4.1.11), b64=false (RFC 7797) included. */
	lua_getfield(L, -1, "crit");
	if (!lua_isnil(L, -1)) {
		lua_pop(L, 1);
		*why = "crit header not supported";
		return NULL;
	}
	lua_pop(L, 1);
	type = lua_getfield(L, -1, "typ");
	if (type != LUA_TNIL && type != LUA_TSTRING) {
		lua_pop(L, 1);
		*why = "typ not a string";
		return NULL;
	}
	if (cfg->typ) {
		const char *t = type == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
		if (!t || !typ_equals(t, n, cfg->typ)) {
			lua_pop(L, 1);
			*why = "typ mismatch";
			return NULL;
		}
	}
	lua_pop(L, 1);
	kid[0] = '\0';
	type = lua_getfield(L, -1, "kid");
	if (type != LUA_TNIL) {
		const char *k = type == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
		if (!k || n == 0 || n > JWT_KID_MAX || !jwt_printable(k, n)) {
			lua_pop(L, 1);
			*why = "kid invalid";
			return NULL;
		}
		memcpy(kid, k, n);
		kid[n] = '\0';
	}
	lua_pop(L, 1);
	return a;
}

/*
 * Verifies the signature with the keys that may check a: the HMAC key for
 * HS*; else the public key and the JWKS keys bound to a, restricted to the
 * token's kid when it names one (a lone public key has no kid and is tried
 * whatever the token names). An unknown kid asks the JWKS source for a
 * refresh and fails now.
 */
static int verify_signature(const struct jwt_config *cfg, const struct alg *a, const char *kid,
                            const char *input, size_t inlen, const unsigned char *sig, size_t siglen,
                            const char **why)
{
	struct jwks_set *set;
	bool tried = false, kid_seen = false;
	int rc = -1;

	*why = "bad signature";
	if (a->key == KEY_HMAC)
		return verify_with(a, cfg->hmac_key, input, inlen, sig, siglen);
	if (cfg->public_key && (cfg->public_key->algs & a->bit)) {
		tried = true;
		if (verify_with(a, cfg->public_key, input, inlen, sig, siglen) == 0)
			return 0;
	}
	if (!cfg->jwks || !(set = jwks_acquire(cfg->jwks))) {
		if (!tried)
			*why = "no key for alg";
		return -1;
	}
	for (size_t i = 0; rc != 0 && i < jwks_set_size(set); i++) {
		const struct jwt_key *k = jwks_set_key(set, i);
		if (kid[0]) {
			if (!k->kid || strcmp(k->kid, kid) != 0)
				continue;
			kid_seen = true;
		}
		if (!(k->algs & a->bit))
			continue;
		tried = true;
		rc = verify_with(a, k, input, inlen, sig, siglen);
	}
	jwks_set_release(set);
	/* No JWKS key has this kid (a key with the kid is always tried). */
	if (rc != 0 && kid[0] && !kid_seen) {
		*why = "unknown kid";
		jwks_unknown_kid(cfg->jwks);
		if (tried)
			*why = "bad signature (public_key), unknown kid (jwks)";
	} else if (rc != 0 && !tried) {
		*why = kid_seen ? "key for kid not bound to alg" : "no key for alg";
	}
	return rc;
}

/* ---- claims -------------------------------------------------------------- */

enum time_check { NOT_BEFORE_NOW, NOT_AFTER_NOW };

/*
 * Checks a numeric time claim of the table at the top, read once. Absent: an
 * error when missing says so (a required claim), else fine. Present, its value
 * goes to *value when given. Compared as doubles: exact for any realistic
 * time, and no overflow on huge values.
 */
struct time_claim {
	const char *name;
	enum time_check how;
	const char *missing;  /* NULL: optional */
	const char *bad_type; /* not a number */
	const char *bad_time; /* outside the window */
};

static int check_time(lua_State *L, const struct time_claim *c, double now, double leeway, double *value,
                      const char **why)
{
	double t;
	int type = lua_getfield(L, -1, c->name);

	if (type == LUA_TNIL) {
		lua_pop(L, 1);
		if (!c->missing)
			return 0;
		*why = c->missing;
		return -1;
	}
	if (type != LUA_TNUMBER) {
		lua_pop(L, 1);
		*why = c->bad_type;
		return -1;
	}
	t = lua_tonumber(L, -1);
	lua_pop(L, 1);
	/* exp: now must be before exp (RFC 7519 §4.1.4); nbf/iat: not after now. */
	if ((c->how == NOT_BEFORE_NOW && !(now - leeway < t)) ||
	    (c->how == NOT_AFTER_NOW && !(t <= now + leeway))) {
		*why = c->bad_time;
		return -1;
	}
	if (value)
		*value = t;
	return 0;
}

static int check_audience(lua_State *L, const char *audience)
{
	int type = lua_getfield(L, -1, "aud");
	int ok = 0;

	if (type == LUA_TSTRING) {
		ok = lua_string_equals(L, -1, audience);
	} else if (type == LUA_TTABLE) {
		lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
		for (lua_Integer i = 1; i <= n && !ok; i++) {
			lua_rawgeti(L, -1, i);
			ok = lua_string_equals(L, -1, audience);
			lua_pop(L, 1);
		}
	}
	lua_pop(L, 1);
	return ok ? 0 : -1;
}

/* Writes the subject claim of the table at the top ("" when absent). */
static int read_subject(lua_State *L, const char *claim, char *subject, size_t subjectlen)
{
	int type = lua_getfield(L, -1, claim);
	int rc = 0;

	if (type == LUA_TNIL) {
		/* already "" */
	} else if (type == LUA_TSTRING) {
		size_t n;
		const char *s = lua_tolstring(L, -1, &n);
		if (n >= subjectlen || !jwt_printable(s, n))
			rc = -1;
		if (rc == 0) {
			memcpy(subject, s, n);
			subject[n] = '\0';
		}
	} else if (type == LUA_TNUMBER && lua_isinteger(L, -1)) {
		int w = snprintf(subject, subjectlen, "%lld", (long long)lua_tointeger(L, -1));
		if (w < 0 || (size_t)w >= subjectlen) {
			subject[0] = '\0';
			rc = -1;
		}
	} else {
		rc = -1;
	}
	lua_pop(L, 1);
	return rc;
}

static int check_claims(lua_State *L, const struct jwt_config *cfg, time_t now, char *subject,
                        size_t subjectlen, const char **why)
{
	/* A credential that never expires is refused (RFC 8725 §3.10's spirit). */
	static const struct time_claim exp = {"exp", NOT_BEFORE_NOW, "token has no exp", "exp not a number",
	                                      "token expired"};
	static const struct time_claim nbf = {"nbf", NOT_AFTER_NOW, NULL, "nbf not a number",
	                                      "token not yet valid"};
	struct time_claim iat = {"iat", NOT_AFTER_NOW, NULL, "iat not a number", "iat in the future"};
	double leeway = cfg->leeway_s > 0 ? (double)cfg->leeway_s : 0.0, issued = 0;
	const char *claim = cfg->subject_claim ? cfg->subject_claim : "sub";

	if (cfg->max_age_s > 0)
		iat.missing = "token has no iat (max_age_s is set)";
	if (check_time(L, &exp, (double)now, leeway, NULL, why) ||
	    check_time(L, &nbf, (double)now, leeway, NULL, why) ||
	    check_time(L, &iat, (double)now, leeway, &issued, why))
		return -1;
	if (cfg->max_age_s > 0 && !((double)now - issued <= (double)cfg->max_age_s + leeway)) {
		*why = "token too old (max_age_s)";
		return -1;
	}
	if (cfg->issuer) {
		lua_getfield(L, -1, "iss");
		bool ok = lua_string_equals(L, -1, cfg->issuer);
		lua_pop(L, 1);
		if (!ok) {
			*why = "issuer mismatch";
			return -1;
		}
	}
	if (cfg->audience && check_audience(L, cfg->audience)) {
		*why = "audience mismatch";
		return -1;
	}
	if (read_subject(L, claim, subject, subjectlen)) {
		subject[0] = '\0';
		*why = "subject claim invalid";
		return -1;
	}
	return 0;
}

/* ---- entry points -------------------------------------------------------- */

/* What the protected part of jwt_verify works on. */
struct verify_ctx {
	const struct jwt_config *cfg;
	const char *token;
	struct segments seg;
	unsigned char *buf; /* room for any decoded segment */
	size_t bufcap;
	time_t now;
	char *subject;
	size_t subjectlen;
	const char *why;
};

/*
 * Runs under lua_pcall, so that running out of Lua memory (a capped
 * allocator) is a refusal, not a panic. Returns the claims table, or nothing
 * with v->why set.
 */
static int verify_protected(lua_State *L)
{
	struct verify_ctx *v = lua_touserdata(L, 1);
	unsigned char sig[MAX_SIG];
	char kid[JWT_KID_MAX + 1];
	const struct alg *a;
	size_t siglen;

	lua_settop(L, 0);
	if (!lua_checkstack(L, 8)) {
		v->why = "out of memory";
		return 0;
	}
	if (push_header(L, v->seg.part[0], v->seg.len[0], v->buf, v->bufcap)) {
		v->why = "header not a base64url JSON object";
		return 0;
	}
	if (!(a = check_header(L, v->cfg, kid, &v->why)))
		return 0;
	lua_pop(L, 1);

	/* The signature covers the ASCII bytes "header.payload", as sent; the
	 * payload is not parsed before it is checked. */
	if (v->seg.len[2] == 0) {
		v->why = "signature missing";
		return 0;
	}
	if (jwt_b64url_decode(v->seg.part[2], v->seg.len[2], sig, sizeof(sig), &siglen)) {
		v->why = "bad signature";
		return 0;
	}
	if (verify_signature(v->cfg, a, kid, v->token, v->seg.len[0] + 1 + v->seg.len[1], sig, siglen,
	                     &v->why))
		return 0;

	if (push_object(L, v->seg.part[1], v->seg.len[1], v->buf, v->bufcap)) {
		v->why = "payload not a base64url JSON object";
		return 0;
	}
	if (check_claims(L, v->cfg, v->now, v->subject, v->subjectlen, &v->why))
		return 0;
	return 1;
}

int jwt_verify(lua_State *L, const struct jwt_config *cfg, const char *token, size_t len, time_t now,
               char *subject, size_t subjectlen, char *err, size_t errlen)
{
	size_t max = cfg->max_token_bytes ? cfg->max_token_bytes : JWT_DEFAULT_MAX_TOKEN_BYTES;
	struct verify_ctx v = {.cfg = cfg,
	                       .token = token,
	                       .now = now,
	                       .subject = subject,
	                       .subjectlen = subjectlen,
	                       .why = "malformed token"};
	int base = lua_gettop(L), status;

	if (!subject || subjectlen == 0)
		return fail(err, errlen, "no room for subject");
	subject[0] = '\0';
	if (!token || len == 0)
		return fail(err, errlen, "empty token");
	if (len > max)
		return fail(err, errlen, "token too large");
	if (split(token, len, &v.seg))
		return fail(err, errlen, "token is not three segments");
	if (!lua_checkstack(L, 4) || !(v.buf = malloc(len)))
		return fail(err, errlen, "out of memory");
	v.bufcap = len;

	lua_pushcfunction(L, verify_protected);
	lua_pushlightuserdata(L, &v);
	status = lua_pcall(L, 1, 1, 0);
	free(v.buf);
	if (status == LUA_OK && lua_type(L, -1) == LUA_TTABLE)
		return 0;
	lua_settop(L, base);
	subject[0] = '\0';
	return fail(err, errlen, status == LUA_OK ? v.why : "out of memory");
}

int jwt_peek_claims(lua_State *L, const char *token, size_t len)
{
	struct segments seg;
	unsigned char *buf;
	int rc;

	if (!token || len == 0 || len > JWT_DEFAULT_MAX_TOKEN_BYTES || split(token, len, &seg))
		return -1;
	if (seg.len[0] == 0 || seg.len[2] == 0 || !lua_checkstack(L, 4) || !(buf = malloc(len)))
		return -1;
	rc = push_object(L, seg.part[1], seg.len[1], buf, len);
	free(buf);
	return rc;
}
