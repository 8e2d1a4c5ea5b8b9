/*
 * jwks.c — JSON Web Key Sets: parsing, and sources kept fresh.
 *
 * Owns the reading of JWK documents into jwt_keys (RSA n/e, EC P-256/P-384
 * x/y, OKP Ed25519 x, built with EVP_PKEY_fromdata), the snapshot of a
 * tenant's current set, and the thread that refreshes a URL source. Keys are
 * only ever taken from the configured file or URL: never from a token's
 * jku/x5u/x5c/jwk. The request path takes a reference under a short mutex
 * and, on an unknown kid, raises a flag: it must never wait on the network.
 * A failed fetch keeps the last good set. Never logs key material.
 */
#include "jwks.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <lua.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "json.h"
#include "jwt.h"
#include "log.h"
#include "secret.h"
#include "version.h"

/* ------------------------------------------------------------------------ */
/* Sets                                                                      */
/* ------------------------------------------------------------------------ */

struct jwks_set {
	_Atomic int refs;
	size_t n;
	struct jwt_key *keys[JWKS_MAX_KEYS];
};

void jwks_set_release(struct jwks_set *set)
{
	if (!set || atomic_fetch_sub_explicit(&set->refs, 1, memory_order_acq_rel) != 1)
		return;
	for (size_t i = 0; i < set->n; i++)
		jwt_key_free(set->keys[i]);
	free(set);
}

size_t jwks_set_size(const struct jwks_set *set)
{
	return set ? set->n : 0;
}

const struct jwt_key *jwks_set_key(const struct jwks_set *set, size_t i)
{
	return set && i < set->n ? set->keys[i] : NULL;
}

/* ------------------------------------------------------------------------ */
/* Parsing one JWK                                                           */
/* ------------------------------------------------------------------------ */

/* The string field of the table at the top, or NULL (absent or not a string). */
static const char *str_field(lua_State *L, const char *name, size_t *len)
{
	const char *s = NULL;

	if (lua_getfield(L, -1, name) == LUA_TSTRING)
		s = lua_tolstring(L, -1, len);
	lua_pop(L, 1); /* the string stays alive: the table holds it */
	return s;
}

static bool has_field(lua_State *L, const char *name)
{
	bool present = lua_getfield(L, -1, name) != LUA_TNIL;

	lua_pop(L, 1);
	return present;
}

/* Decodes a base64url field into buf (cap bytes). Returns its length, or -1. */
static long b64_field(lua_State *L, const char *name, unsigned char *buf, size_t cap)
{
	size_t len = 0, n = 0;
	const char *s = str_field(L, name, &len);

	if (!s || len == 0 || jwt_b64url_decode(s, len, buf, cap, &n) || n == 0)
		return -1;
	return (long)n;
}

/* Runs fromdata for a public key of type name with the parameters in bld. */
static EVP_PKEY *pkey_fromdata(const char *name, OSSL_PARAM_BLD *bld)
{
	OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
	EVP_PKEY_CTX *ctx = params ? EVP_PKEY_CTX_new_from_name(NULL, name, NULL) : NULL;
	EVP_PKEY *pkey = NULL;

	if (!ctx || EVP_PKEY_fromdata_init(ctx) != 1 ||
	    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
		pkey = NULL;
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	return pkey;
}

static EVP_PKEY *rsa_from_jwk(lua_State *L, const char **why)
{
	unsigned char nb[JWT_RSA_MAX_BITS / 8 + 1], eb[16];
	long nl = b64_field(L, "n", nb, sizeof(nb)), el = b64_field(L, "e", eb, sizeof(eb));
	BIGNUM *n = NULL, *e = NULL;
	OSSL_PARAM_BLD *bld = NULL;
	EVP_PKEY *pkey = NULL;

	if (nl < 0 || el < 0) {
		*why = "RSA key without a valid n and e";
		return NULL;
	}
	n = BN_bin2bn(nb, (int)nl, NULL);
	e = BN_bin2bn(eb, (int)el, NULL);
	/* An even or tiny exponent is not an RSA public key anyone should use. */
	if (!n || !e || !BN_is_odd(e) || BN_is_one(e) || !BN_is_odd(n)) {
		*why = "RSA key with an invalid n or e";
		goto out;
	}
	if (!(bld = OSSL_PARAM_BLD_new()) || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) || !(pkey = pkey_fromdata("RSA", bld)))
		*why = "RSA key refused by OpenSSL";
out:
	OSSL_PARAM_BLD_free(bld);
	BN_free(n);
	BN_free(e);
	return pkey;
}

static EVP_PKEY *ec_from_jwk(lua_State *L, const char **why)
{
	unsigned char x[66], y[66], pub[1 + 2 * 48];
	size_t crvlen = 0, size;
	const char *crv = str_field(L, "crv", &crvlen), *group;
	long xl, yl;
	OSSL_PARAM_BLD *bld = NULL;
	EVP_PKEY *pkey = NULL;
	EVP_PKEY_CTX *check = NULL;

	if (crv && strcmp(crv, "P-256") == 0) {
		size = 32;
		group = "P-256";
	} else if (crv && strcmp(crv, "P-384") == 0) {
		size = 48;
		group = "P-384";
	} else {
		*why = "EC curve not supported (P-256, P-384)";
		return NULL;
	}
	xl = b64_field(L, "x", x, sizeof(x));
	yl = b64_field(L, "y", y, sizeof(y));
	/* RFC 7518 §6.2.1.2: x and y are exactly the curve's size. */
	if (xl != (long)size || yl != (long)size) {
		*why = "EC key with x or y of the wrong length";
		return NULL;
	}
	pub[0] = 0x04; /* uncompressed point */
	memcpy(pub + 1, x, size);
	memcpy(pub + 1 + size, y, size);
	if (!(bld = OSSL_PARAM_BLD_new()) ||
	    !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) ||
	    !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, 1 + 2 * size) ||
	    !(pkey = pkey_fromdata("EC", bld))) {
		*why = "EC key refused by OpenSSL (not a point on the curve?)";
		goto out;
	}
	/* The point must be on the curve and not the identity. */
	check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
	if (!check || EVP_PKEY_public_check(check) != 1) {
		*why = "EC key: not a valid point on the curve";
		EVP_PKEY_free(pkey);
		pkey = NULL;
	}
out:
	EVP_PKEY_CTX_free(check);
	OSSL_PARAM_BLD_free(bld);
	return pkey;
}

static EVP_PKEY *okp_from_jwk(lua_State *L, const char **why)
{
	unsigned char x[33];
	size_t crvlen = 0;
	const char *crv = str_field(L, "crv", &crvlen);
	long xl;
	EVP_PKEY *pkey;

	if (!crv || strcmp(crv, "Ed25519") != 0) {
		*why = "OKP curve not supported (Ed25519)";
		return NULL;
	}
	xl = b64_field(L, "x", x, sizeof(x));
	if (xl != 32) {
		*why = "Ed25519 key with x of the wrong length";
		return NULL;
	}
	pkey = EVP_PKEY_new_raw_public_key_ex(NULL, "ED25519", NULL, x, 32);
	if (!pkey)
		*why = "Ed25519 key refused by OpenSSL";
	return pkey;
}

/* Whether the JWK at the top lists "verify" in key_ops (absent: yes). */
static bool ops_allow_verify(lua_State *L)
{
	bool ok = false;
	int type = lua_getfield(L, -1, "key_ops");

	if (type == LUA_TNIL) {
		ok = true;
	} else if (type == LUA_TTABLE) {
		lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
		for (lua_Integer i = 1; i <= n && !ok && i <= 16; i++) {
			size_t len;
			const char *s;
			lua_rawgeti(L, -1, i);
			s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
			ok = s && strcmp(s, "verify") == 0;
			lua_pop(L, 1);
		}
	}
	lua_pop(L, 1);
	return ok;
}

/*
 * The JWK at the top of the stack as a key, or NULL with why. kid is copied
 * to kid_out ("" when absent) for the skip report.
 */
static struct jwt_key *key_from_jwk(lua_State *L, char *kid_out, const char **why)
{
	static const char *const private_fields[] = {"d", "p", "q", "dp", "dq", "qi", "k"};
	size_t ktylen = 0, kidlen = 0, alglen = 0, uselen = 0;
	const char *kty, *kid, *alg, *use;
	unsigned allowed = ~0u;
	EVP_PKEY *pkey = NULL;
	struct jwt_key *k;
	char err[160];

	kid_out[0] = '\0';
	if (lua_type(L, -1) != LUA_TTABLE) {
		*why = "not a JSON object";
		return NULL;
	}
	kid = str_field(L, "kid", &kidlen);
	if (has_field(L, "kid")) {
		/* As jwt.c checks a token's kid: one accepted here must be matchable. */
		if (!kid || kidlen == 0 || kidlen > JWT_KID_MAX || !jwt_printable(kid, kidlen)) {
			*why = "kid is not a string of 1..256 printable characters";
			return NULL;
		}
		memcpy(kid_out, kid, kidlen + 1);
	} else {
		kid = NULL;
	}
	kty = str_field(L, "kty", &ktylen);
	if (!kty) {
		*why = "no kty";
		return NULL;
	}
	if (strcmp(kty, "oct") == 0) {
		*why = "symmetric (oct) keys are not taken from a JWKS: use hmac_secret";
		return NULL;
	}
	for (size_t i = 0; i < sizeof(private_fields) / sizeof(private_fields[0]); i++)
		if (has_field(L, private_fields[i])) {
			*why = "holds private key material: refused";
			return NULL;
		}
	use = str_field(L, "use", &uselen);
	if (has_field(L, "use") && (!use || strcmp(use, "sig") != 0)) {
		*why = "use is not \"sig\"";
		return NULL;
	}
	if (!ops_allow_verify(L)) {
		*why = "key_ops does not include \"verify\"";
		return NULL;
	}
	alg = str_field(L, "alg", &alglen);
	if (has_field(L, "alg")) {
		allowed = alg ? jwt_alg_from_name(alg) : 0;
		if (!allowed || (allowed & JWT_HMAC_ALGS)) {
			*why = "alg not supported for a public key";
			return NULL;
		}
	}
	if (strcmp(kty, "RSA") == 0)
		pkey = rsa_from_jwk(L, why);
	else if (strcmp(kty, "EC") == 0)
		pkey = ec_from_jwk(L, why);
	else if (strcmp(kty, "OKP") == 0)
		pkey = okp_from_jwk(L, why);
	else
		*why = "kty not supported (RSA, EC, OKP)";
	if (!pkey)
		return NULL;
	if (!(k = jwt_key_pkey(pkey, err, sizeof(err)))) {
		/* RSA size is the likely cause; the reason names no key material. */
		*why = strstr(err, "RSA key of") ? "RSA key shorter than 2048 bits (or over 8192)"
		                                 : "key refused";
		return NULL;
	}
	if (jwt_key_restrict(k, kid, allowed)) {
		*why = "alg does not match the key's type";
		jwt_key_free(k);
		return NULL;
	}
	return k;
}

/* ------------------------------------------------------------------------ */
/* Parsing a document                                                        */
/* ------------------------------------------------------------------------ */

struct parse_ctx {
	const char *json;
	size_t len;
	jwks_skip_fn skip;
	void *skip_ctx;
	struct jwks_set *set;
	const char *why;
};

static int parse_protected(lua_State *L)
{
	struct parse_ctx *p = lua_touserdata(L, 1);
	lua_Integer n;

	lua_settop(L, 0);
	if (json_decode_object(L, p->json, p->len) != 0) {
		p->why = "not a JSON object";
		return 0;
	}
	if (lua_getfield(L, -1, "keys") != LUA_TTABLE) {
		p->why = "no \"keys\" array";
		return 0;
	}
	n = (lua_Integer)lua_rawlen(L, -1);
	for (lua_Integer k = 1; k <= n; k++) {
		char kid[JWT_KID_MAX + 1];
		const char *why = NULL;
		struct jwt_key *key;
		if (p->set->n == JWKS_MAX_KEYS) {
			if (p->skip)
				p->skip(p->skip_ctx, (size_t)k - 1, "",
				        "more than 64 keys: the rest are ignored");
			break;
		}
		lua_rawgeti(L, -1, k);
		key = key_from_jwk(L, kid, &why);
		lua_pop(L, 1);
		if (key)
			p->set->keys[p->set->n++] = key;
		else if (p->skip)
			p->skip(p->skip_ctx, (size_t)k - 1, kid, why ? why : "unusable");
	}
	return 0;
}

struct jwks_set *jwks_parse(const char *json, size_t len, jwks_skip_fn skip, void *ctx, char *err,
                            size_t errlen)
{
	struct parse_ctx p = {.json = json, .len = len, .skip = skip, .skip_ctx = ctx};
	lua_State *L = NULL;
	int status;

	if (!json || len == 0 || len > JWKS_MAX_BYTES) {
		snprintf(err, errlen, "empty or larger than %d bytes", JWKS_MAX_BYTES);
		return NULL;
	}
	if (!(p.set = calloc(1, sizeof(*p.set))) || !(L = luaL_newstate()) || json_open(L)) {
		snprintf(err, errlen, "out of memory");
		goto bad;
	}
	atomic_init(&p.set->refs, 1);
	lua_pushcfunction(L, parse_protected);
	lua_pushlightuserdata(L, &p);
	status = lua_pcall(L, 1, 0, 0);
	if (status != LUA_OK) {
		snprintf(err, errlen, "out of memory");
		goto bad;
	}
	if (p.why) {
		snprintf(err, errlen, "%s", p.why);
		goto bad;
	}
	if (p.set->n == 0) {
		snprintf(err, errlen, "no usable key");
		goto bad;
	}
	lua_close(L);
	return p.set;
bad:
	if (L)
		lua_close(L);
	jwks_set_release(p.set);
	return NULL;
}

/* ------------------------------------------------------------------------ */
/* Sources                                                                   */
/* ------------------------------------------------------------------------ */

struct jwks {
	_Atomic int refs; /* the opener's, and the refresher thread's */
	char *name;       /* "tenant NAME", for log lines */
	char *file;
	char *url;
	long min_refresh_s, max_cache_s, cooldown_s, timeout_ms;

	pthread_mutex_t lock; /* everything below */
	pthread_cond_t wake;  /* the refresher: a stop, or an unknown kid */
	struct jwks_set *set;
	bool stop;
	bool want; /* an unknown kid asked for a fetch */
	bool fetching;
	struct timespec last_attempt; /* CLOCK_MONOTONIC: start of the last fetch */
	struct timespec next_fetch;   /* scheduled refresh */
	unsigned long fetches;
};

/* Live refresher threads, for jwks_shutdown. */
static pthread_mutex_t threads_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t threads_done = PTHREAD_COND_INITIALIZER;
static int threads_live;

static void source_release(struct jwks *src)
{
	if (!src || atomic_fetch_sub_explicit(&src->refs, 1, memory_order_acq_rel) != 1)
		return;
	jwks_set_release(src->set);
	pthread_mutex_destroy(&src->lock);
	pthread_cond_destroy(&src->wake);
	free(src->name);
	free(src->file);
	free(src->url);
	free(src);
}

static double mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double ts_seconds(const struct timespec *ts)
{
	return (double)ts->tv_sec + (double)ts->tv_nsec / 1e9;
}

static struct timespec ts_in(double seconds)
{
	struct timespec ts;
	double t = mono_now() + seconds;

	ts.tv_sec = (time_t)t;
	ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
	return ts;
}

static void log_skip(void *ctx, size_t index, const char *kid, const char *why)
{
	const struct jwks *src = ctx;

	log_msg("warn", "%s: jwks key %zu%s%s%s skipped: %s", src->name, index, kid[0] ? " (kid \"" : "", kid,
	        kid[0] ? "\")" : "", why);
}

/* ---- fetching ------------------------------------------------------------ */

struct fetch {
	struct jwks *src;
	char *body;
	size_t len;
	bool too_big;
	long max_age; /* -1: none given; 0: no-store/no-cache */
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
	struct fetch *f = ud;
	size_t n = size * nmemb;
	char *p;

	if (f->len + n > JWKS_MAX_BYTES) {
		f->too_big = true;
		return 0;
	}
	if (!(p = realloc(f->body, f->len + n + 1)))
		return 0;
	f->body = p;
	memcpy(f->body + f->len, data, n);
	f->len += n;
	f->body[f->len] = '\0';
	return n;
}

/* Reads Cache-Control: max-age=N (s-maxage ignored), no-store, no-cache. */
static size_t on_header(char *data, size_t size, size_t nmemb, void *ud)
{
	static const char name[] = "cache-control:";
	struct fetch *f = ud;
	size_t n = size * nmemb;
	char line[512];

	if (n < sizeof(name) - 1 || strncasecmp(data, name, sizeof(name) - 1) != 0)
		return n;
	snprintf(line, sizeof(line), "%.*s", (int)(n < sizeof(line) - 1 ? n : sizeof(line) - 1), data);
	for (char *c = line; *c; c++)
		*c = (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
	if (strstr(line, "no-store") || strstr(line, "no-cache")) {
		f->max_age = 0;
	} else {
		const char *m = strstr(line, "max-age=");
		if (m && (m == line || m[-1] == ' ' || m[-1] == ',' || m[-1] == ':')) {
			char *end;
			long v = strtol(m + 8, &end, 10);
			if (end != m + 8 && v >= 0)
				f->max_age = v;
		}
	}
	return n;
}

static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
	struct fetch *f = ud;
	bool stop;

	(void)dt;
	(void)dn;
	(void)ut;
	(void)un;
	pthread_mutex_lock(&f->src->lock);
	stop = f->src->stop;
	pthread_mutex_unlock(&f->src->lock);
	return stop ? 1 : 0;
}

/* GETs the URL. Returns 0 with the body in f, or -1 with a reason in err. */
static int http_get(struct jwks *src, struct fetch *f, char *err, size_t errlen)
{
	CURL *c = curl_easy_init();
	CURLcode rc;
	long status = 0;

	if (!c) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	curl_easy_setopt(c, CURLOPT_URL, src->url);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https,http");
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, src->timeout_ms);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, src->timeout_ms);
	curl_easy_setopt(c, CURLOPT_USERAGENT, BROKER_USER_AGENT);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, f);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, f);
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(c, CURLOPT_XFERINFODATA, f);
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	rc = curl_easy_perform(c);
	if (rc == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(c);
	if (f->too_big) {
		snprintf(err, errlen, "response larger than %d bytes", JWKS_MAX_BYTES);
		return -1;
	}
	if (rc != CURLE_OK) {
		snprintf(err, errlen, "%s", curl_easy_strerror(rc));
		return -1;
	}
	if (status != 200) {
		snprintf(err, errlen, "HTTP status %ld", status);
		return -1;
	}
	return 0;
}

/* Reads the source's file (any mode: a JWKS is public). */
static int read_jwks_file(const char *path, struct fetch *f, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	ssize_t n;

	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > JWKS_MAX_BYTES) {
		snprintf(err, errlen, "%s: not a regular file of at most %d bytes", path, JWKS_MAX_BYTES);
		close(fd);
		return -1;
	}
	if (!(f->body = malloc((size_t)st.st_size + 1))) {
		close(fd);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	while (f->len < (size_t)st.st_size &&
	       (n = read(fd, f->body + f->len, (size_t)st.st_size - f->len)) > 0)
		f->len += (size_t)n;
	f->body[f->len] = '\0';
	close(fd);
	return 0;
}

/* The URL as it may be logged: scheme, host and path, without the user
 * information or query a URL can carry a credential in. */
static void url_for_log(const char *url, char *out, size_t outlen)
{
	const char *sep = strstr(url, "://");
	const char *host = sep ? sep + 3 : url;
	const char *end = host + strcspn(host, "/?#");
	const char *at = memrchr(host, '@', (size_t)(end - host));
	const char *rest = at ? at + 1 : host;

	snprintf(out, outlen, "%.*s%.*s", (int)(host - url), url, (int)strcspn(rest, "?#"), rest);
}

/*
 * One load: fetch or read, parse, and on success swap the snapshot. Returns
 * the seconds until the next scheduled fetch (URL), or -1 on failure (the
 * previous set stays).
 */
static double load_once(struct jwks *src, char *err, size_t errlen)
{
	struct fetch f = {.src = src, .max_age = -1};
	struct jwks_set *set = NULL, *old;
	double next;

	pthread_mutex_lock(&src->lock);
	src->fetches++;
	clock_gettime(CLOCK_MONOTONIC, &src->last_attempt);
	pthread_mutex_unlock(&src->lock);
	if (src->url ? http_get(src, &f, err, errlen) : read_jwks_file(src->file, &f, err, errlen)) {
		free(f.body);
		return -1;
	}
	set = jwks_parse(f.body, f.len, log_skip, src, err, errlen);
	free(f.body);
	if (!set)
		return -1;
	next = f.max_age < 0 ? (double)src->max_cache_s : (double)f.max_age;
	if (next < (double)src->min_refresh_s)
		next = (double)src->min_refresh_s;
	if (next > (double)src->max_cache_s)
		next = (double)src->max_cache_s;
	pthread_mutex_lock(&src->lock);
	old = src->set;
	src->set = set;
	pthread_mutex_unlock(&src->lock);
	jwks_set_release(old);
	return next;
}

static void *refresher(void *arg)
{
	struct jwks *src = arg;
	char err[256];

	pthread_mutex_lock(&src->lock);
	while (!src->stop) {
		double wait;
		if (!src->want && mono_now() < ts_seconds(&src->next_fetch)) {
			/* wake is on CLOCK_MONOTONIC (see jwks_open) */
			pthread_cond_timedwait(&src->wake, &src->lock, &src->next_fetch);
			continue;
		}
		src->fetching = true;
		pthread_mutex_unlock(&src->lock);
		wait = load_once(src, err, sizeof(err));
		if (wait < 0) {
			char where[256];
			url_for_log(src->url, where, sizeof(where));
			log_msg("warn", "%s: jwks refresh from %s failed, keeping the last good set: %s",
			        src->name, where, err);
			wait = (double)src->min_refresh_s;
		}
		pthread_mutex_lock(&src->lock);
		src->fetching = false;
		src->want = false;
		src->next_fetch = ts_in(wait);
	}
	pthread_mutex_unlock(&src->lock);
	source_release(src);
	pthread_mutex_lock(&threads_lock);
	threads_live--;
	pthread_cond_broadcast(&threads_done);
	pthread_mutex_unlock(&threads_lock);
	return NULL;
}

struct jwks *jwks_open(const struct jwks_options *o, const char *name, char *err, size_t errlen)
{
	struct jwks *src = NULL;
	pthread_condattr_t ca;
	pthread_attr_t ta;
	pthread_t tid;
	char why[256];
	double next;

	if (!o || (!o->file == !o->url)) {
		snprintf(err, errlen, "give exactly one of file and url");
		return NULL;
	}
	for (const char *p = o->url; p && *p; p++)
		if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f) {
			snprintf(err, errlen, "url: must not contain spaces, control or non-ASCII bytes");
			return NULL;
		}
	if (o->url && secret_in_url(o->url)) {
		snprintf(err, errlen, "url: must not carry a user name or password (a JWKS is public)");
		return NULL;
	}
	if (o->url && !secret_url_transport_ok(o->url)) {
		snprintf(err, errlen,
		         "url: must start with https:// (http:// only to 127.0.0.1, [::1] or localhost)");
		return NULL;
	}
	if (!(src = calloc(1, sizeof(*src))))
		goto oom;
	atomic_init(&src->refs, 1);
	pthread_mutex_init(&src->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&src->wake, &ca);
	pthread_condattr_destroy(&ca);
	src->min_refresh_s = o->min_refresh_s > 0 ? o->min_refresh_s : 60;
	src->max_cache_s = o->max_cache_s > 0 ? o->max_cache_s : 3600;
	src->cooldown_s = o->cooldown_s > 0 ? o->cooldown_s : 30;
	src->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 5000;
	if (asprintf(&src->name, "tenant %s", name ? name : "?") < 0) {
		src->name = NULL;
		goto oom;
	}
	if ((o->file && !(src->file = strdup(o->file))) || (o->url && !(src->url = strdup(o->url))))
		goto oom;
	next = load_once(src, why, sizeof(why));
	if (next < 0) {
		char where[256];
		if (o->url)
			url_for_log(o->url, where, sizeof(where));
		snprintf(err, errlen, "%s%s: %s", o->url ? "fetching " : "", o->url ? where : o->file, why);
		source_release(src);
		return NULL;
	}
	if (!src->url)
		return src;
	src->next_fetch = ts_in(next);
	atomic_fetch_add(&src->refs, 1); /* the thread's */
	pthread_attr_init(&ta);
	pthread_attr_setdetachstate(&ta, PTHREAD_CREATE_DETACHED);
	pthread_mutex_lock(&threads_lock);
	if (pthread_create(&tid, &ta, refresher, src) != 0) {
		pthread_mutex_unlock(&threads_lock);
		pthread_attr_destroy(&ta);
		atomic_fetch_sub(&src->refs, 1);
		source_release(src);
		snprintf(err, errlen, "cannot start the refresh thread");
		return NULL;
	}
	threads_live++;
	pthread_mutex_unlock(&threads_lock);
	pthread_attr_destroy(&ta);
	return src;
oom:
	source_release(src);
	snprintf(err, errlen, "out of memory");
	return NULL;
}

void jwks_close(struct jwks *src)
{
	if (!src)
		return;
	pthread_mutex_lock(&src->lock);
	src->stop = true;
	pthread_cond_signal(&src->wake);
	pthread_mutex_unlock(&src->lock);
	source_release(src);
}

struct jwks_set *jwks_acquire(struct jwks *src)
{
	struct jwks_set *set;

	if (!src)
		return NULL;
	pthread_mutex_lock(&src->lock);
	set = src->set;
	if (set)
		atomic_fetch_add_explicit(&set->refs, 1, memory_order_relaxed);
	pthread_mutex_unlock(&src->lock);
	return set;
}

void jwks_unknown_kid(struct jwks *src)
{
	if (!src || !src->url)
		return;
	pthread_mutex_lock(&src->lock);
	if (!src->stop && !src->want && !src->fetching &&
	    mono_now() - ts_seconds(&src->last_attempt) >= (double)src->cooldown_s) {
		src->want = true;
		pthread_cond_signal(&src->wake);
	}
	pthread_mutex_unlock(&src->lock);
}

bool jwks_ready(struct jwks *src)
{
	bool ready;

	if (!src)
		return true;
	pthread_mutex_lock(&src->lock);
	ready = src->set != NULL;
	pthread_mutex_unlock(&src->lock);
	return ready;
}

unsigned long jwks_fetch_count(struct jwks *src)
{
	unsigned long n;

	if (!src)
		return 0;
	pthread_mutex_lock(&src->lock);
	n = src->fetches;
	pthread_mutex_unlock(&src->lock);
	return n;
}

int jwks_shutdown(long timeout_ms)
{
	struct timespec until;
	int rc = 0;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += timeout_ms / 1000;
	until.tv_nsec += (timeout_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&threads_lock);
	while (threads_live > 0 && rc == 0)
		rc = pthread_cond_timedwait(&threads_done, &threads_lock, &until);
	rc = threads_live > 0 ? -1 : 0;
	pthread_mutex_unlock(&threads_lock);
	return rc;
}
