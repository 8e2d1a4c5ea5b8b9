/*
 * test_jwk.c — tests for src/jwk.c.
 *
 * JWK documents are built here from keys OpenSSL generates (testkeys.h).
 * Covers parsing: good keys of each type, bad keys skipped each with a
 * reason that quotes no key material, and documents refused as a whole.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jwk.h"
#include "jwt.h"
#include "testkeys.h"

struct fx {
	char err[160];
	char doc[32768];
	char skipped[4096]; /* "index:why;" for each skipped key */
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	free(*state);
	return 0;
}

static void on_skip(void *ctx, size_t index, const char *kid, const char *why)
{
	struct fx *f = ctx;
	size_t n = strlen(f->skipped);

	(void)kid;
	snprintf(f->skipped + n, sizeof(f->skipped) - n, "%zu:%s;", index, why);
}

/* {"keys":[jwk, jwk, ...]} from NULL-terminated JWK texts. */
static const char *doc_of(struct fx *f, const char *const *jwks)
{
	size_t n = (size_t)snprintf(f->doc, sizeof(f->doc), "{\"keys\":[");

	for (size_t i = 0; jwks[i]; i++)
		n += (size_t)snprintf(f->doc + n, sizeof(f->doc) - n, "%s%s", i ? "," : "", jwks[i]);
	snprintf(f->doc + n, sizeof(f->doc) - n, "]}");
	return f->doc;
}

/* ---- parsing ----------------------------------------------------------------- */

static void t_parse_good_keys(void **state)
{
	struct fx *f = *state;
	char a[2048], b[512], c[512], d[512];
	const char *keys[] = {
	    tk_jwk(tk_key(TK_RSA), "\"kid\":\"rsa\",\"use\":\"sig\",\"alg\":\"RS256\",", a, sizeof(a)),
	    tk_jwk(tk_key(TK_P256), "\"kid\":\"p256\",", b, sizeof(b)),
	    tk_jwk(tk_key(TK_P384), "\"kid\":\"p384\",\"key_ops\":[\"verify\"],", c, sizeof(c)),
	    tk_jwk(tk_key(TK_ED25519), "", d, sizeof(d)), NULL};
	struct jwks_set *set;

	doc_of(f, keys);
	set = jwks_parse(f->doc, strlen(f->doc), on_skip, f, f->err, sizeof(f->err));
	if (!set)
		fail_msg("parse: %s; skipped %s", f->err, f->skipped);
	assert_string_equal(f->skipped, "");
	assert_int_equal(jwks_set_size(set), 4);
	assert_string_equal(jwt_key_kid(jwks_set_key(set, 0)), "rsa");
	assert_int_equal(jwt_key_algs(jwks_set_key(set, 0)), JWT_RS256); /* narrowed by "alg" */
	assert_int_equal(jwt_key_algs(jwks_set_key(set, 1)), JWT_ES256);
	assert_int_equal(jwt_key_algs(jwks_set_key(set, 2)), JWT_ES384);
	assert_int_equal(jwt_key_algs(jwks_set_key(set, 3)), JWT_EDDSA);
	assert_null(jwt_key_kid(jwks_set_key(set, 3)));
	assert_null(jwks_set_key(set, 4));
	jwks_set_release(set);
}

static void t_parse_bad_keys_skipped(void **state)
{
	struct fx *f = *state;
	char good[2048], small[1024], p521[600], mismatch[2048], hs[2048], kidlong[600];
	char kidbuf[300];
	/* Every bad key below is skipped with a reason; the good one stays. */
	const char *keys[] = {
	    "\"not an object\"",
	    "{\"kid\":\"nokty\"}",
	    "{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}",
	    "{\"kty\":\"RSA\",\"kid\":\"no-n\",\"e\":\"AQAB\"}",
	    tk_jwk(tk_key(TK_RSA1024), "\"kid\":\"small\",", small, sizeof(small)),
	    tk_jwk(tk_key(TK_P521), "\"kid\":\"p521\",", p521, sizeof(p521)),
	    tk_jwk(tk_key(TK_RSA), "\"kid\":\"mismatch\",\"alg\":\"ES256\",", mismatch, sizeof(mismatch)),
	    tk_jwk(tk_key(TK_RSA), "\"kid\":\"hs\",\"alg\":\"HS256\",", hs, sizeof(hs)),
	    "{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"offcurve\",\"x\":"
	    "\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE\","
	    "\"y\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE\"}",
	    "{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"short\",\"x\":\"AAAA\",\"y\":\"AAAA\"}",
	    "{\"kty\":\"OKP\",\"crv\":\"Ed448\",\"x\":\"AAAA\"}",
	    "{\"kty\":\"RSA\",\"kid\":\"enc\",\"use\":\"enc\",\"n\":\"AQAB\",\"e\":\"AQAB\"}",
	    "{\"kty\":\"RSA\",\"kid\":\"priv\",\"n\":\"AQAB\",\"e\":\"AQAB\",\"d\":\"AQAB\"}",
	    "{\"kty\":\"RSA\",\"kid\":7,\"n\":\"AQAB\",\"e\":\"AQAB\"}",
	    "{\"kty\":\"RSA\",\"kid\":\"pad\",\"n\":\"AQAB=\",\"e\":\"AQAB\"}",
	    NULL, /* kid too long, filled below */
	    tk_jwk(tk_key(TK_RSA), "\"kid\":\"good\",", good, sizeof(good)),
	    NULL};
	struct jwks_set *set;

	memset(kidbuf, 'k', 257);
	kidbuf[257] = '\0';
	snprintf(kidlong, sizeof(kidlong),
	         "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"%s\",\"x\":\"AAAA\"}", kidbuf);
	keys[15] = kidlong;
	doc_of(f, keys);
	set = jwks_parse(f->doc, strlen(f->doc), on_skip, f, f->err, sizeof(f->err));
	assert_non_null(set);
	assert_int_equal(jwks_set_size(set), 1);
	assert_string_equal(jwt_key_kid(jwks_set_key(set, 0)), "good");
	jwks_set_release(set);
	/* One reason per skipped key, none quoting key material. */
	{
		size_t n = 0;
		for (const char *p = f->skipped; (p = strchr(p, ';')); p++)
			n++;
		assert_int_equal(n, 16);
	}
	assert_non_null(strstr(f->skipped, "0:not a JSON object"));
	assert_non_null(strstr(f->skipped, "1:no kty"));
	assert_non_null(strstr(f->skipped, "2:symmetric"));
	assert_non_null(strstr(f->skipped, "3:RSA key without"));
	assert_non_null(strstr(f->skipped, "4:RSA key shorter than 2048"));
	assert_non_null(strstr(f->skipped, "5:EC curve not supported"));
	assert_non_null(strstr(f->skipped, "6:alg does not match"));
	assert_non_null(strstr(f->skipped, "7:alg not supported"));
	assert_non_null(strstr(f->skipped, "8:EC key"));
	assert_non_null(strstr(f->skipped, "9:EC key with x or y of the wrong length"));
	assert_non_null(strstr(f->skipped, "10:OKP curve"));
	assert_non_null(strstr(f->skipped, "11:use is not"));
	assert_non_null(strstr(f->skipped, "12:holds private key"));
	assert_non_null(strstr(f->skipped, "13:kid is not"));
	assert_non_null(strstr(f->skipped, "14:RSA key without"));
	assert_non_null(strstr(f->skipped, "15:kid is not"));
}

static void t_parse_documents(void **state)
{
	struct fx *f = *state;
	static const char *const bad[] = {"",
	                                  "[]",
	                                  "{\"keys\":{}}",
	                                  "{\"keys\":[]}",
	                                  "{\"keys\":1}",
	                                  "{}",
	                                  "nul",
	                                  "{\"keys\":[{\"kty\":\"oct\",\"k\":\"AA\"}]}"};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		f->err[0] = '\0';
		assert_null(jwks_parse(bad[i], strlen(bad[i]), NULL, NULL, f->err, sizeof(f->err)));
		assert_true(f->err[0] != '\0');
	}
	assert_null(jwks_parse("{\"keys\":[]}", JWKS_MAX_BYTES + 1, NULL, NULL, f->err, sizeof(f->err)));
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(t_parse_good_keys),
	    T(t_parse_bad_keys_skipped),
	    T(t_parse_documents),
	};

	return cmocka_run_group_tests_name("jwk", tests, NULL, NULL);
}
