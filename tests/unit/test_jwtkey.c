/*
 * test_jwtkey.c — tests for src/jwtkey.c.
 *
 * Algorithm names, keys loaded from PEM (sizes, curves, private keys refused,
 * the algorithms each type may verify) and the signature check under one
 * key, which never lets a key verify an algorithm outside its type.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jwtkey.h"
#include "secret.h"
#include "testkeys.h"

static void t_alg_from_name(void **state)
{
	(void)state;
	assert_int_equal(jwt_alg_from_name("HS256"), JWT_HS256);
	assert_int_equal(jwt_alg_from_name("HS384"), JWT_HS384);
	assert_int_equal(jwt_alg_from_name("HS512"), JWT_HS512);
	assert_int_equal(jwt_alg_from_name("none"), 0);
	assert_int_equal(jwt_alg_from_name("hs256"), 0);
	/* RFC 9864's fully-specified name is the same algorithm as EdDSA here. */
	assert_int_equal(jwt_alg_from_name("Ed25519"), JWT_EDDSA);
	assert_string_equal(jwt_alg_name(JWT_EDDSA), "EdDSA");
	assert_int_equal(jwt_alg_from_name("HS2560"), 0);
	assert_int_equal(jwt_alg_from_name("RS256"), JWT_RS256);
	assert_int_equal(jwt_alg_from_name("PS512"), JWT_PS512);
	assert_int_equal(jwt_alg_from_name("ES384"), JWT_ES384);
	assert_int_equal(jwt_alg_from_name("EdDSA"), JWT_EDDSA);
	assert_int_equal(jwt_alg_from_name("ES512"), 0);
	assert_int_equal(jwt_alg_from_name("eddsa"), 0);
	assert_int_equal(jwt_alg_from_name(""), 0);
	assert_int_equal(jwt_alg_from_name(NULL), 0);
}

static void t_alg_from_text(void **state)
{
	(void)state;
	assert_int_equal(jwt_alg_from_text("HS256", 5), JWT_HS256);
	assert_int_equal(jwt_alg_from_text("HS2560", 5), JWT_HS256); /* only the len bytes */
	assert_int_equal(jwt_alg_from_text("HS256\0x", 7), 0);       /* an embedded NUL is unknown */
	assert_int_equal(jwt_alg_from_text("EdDSA", 5), JWT_EDDSA);
	assert_int_equal(jwt_alg_from_text("none", 4), 0);
	assert_int_equal(jwt_alg_from_text(NULL, 0), 0);
	assert_string_equal(jwt_alg_name(JWT_PS384), "PS384");
	assert_null(jwt_alg_name(JWT_HS256 | JWT_HS384));
	assert_null(jwt_alg_name(0));
}

static void t_key_loading(void **state)
{
	char pem[4096], err[160];
	struct jwt_key *k;
	BIO *b;
	char *p;
	long n;

	(void)state;
	/* RSA under 2048 bits is refused at load. */
	tk_pub_pem(tk_key(TK_RSA1024), pem, sizeof(pem));
	assert_null(jwt_key_pem(pem, strlen(pem), err, sizeof(err)));
	assert_non_null(strstr(err, "1024 bits"));
	/* P-521 is not supported (no ES512). */
	tk_pub_pem(tk_key(TK_P521), pem, sizeof(pem));
	assert_null(jwt_key_pem(pem, strlen(pem), err, sizeof(err)));
	assert_non_null(strstr(err, "curve"));
	/* A private key is named as such. */
	b = BIO_new(BIO_s_mem());
	assert_true(PEM_write_bio_PrivateKey(b, tk_key(TK_P256), NULL, NULL, 0, NULL, NULL));
	n = BIO_get_mem_data(b, &p);
	assert_null(jwt_key_pem(p, (size_t)n, err, sizeof(err)));
	assert_non_null(strstr(err, "private key"));
	BIO_free(b);
	assert_null(jwt_key_pem("hello", 5, err, sizeof(err)));
	assert_non_null(strstr(err, "PEM"));
	/* Bound algorithms per type. */
	tk_pub_pem(tk_key(TK_RSA), pem, sizeof(pem));
	assert_non_null(k = jwt_key_pem(pem, strlen(pem), err, sizeof(err)));
	assert_int_equal(jwt_key_algs(k), JWT_RSA_ALGS);
	assert_int_equal(jwt_key_restrict(k, "k1", JWT_ES256), -1);
	assert_int_equal(jwt_key_restrict(k, "k1", JWT_PS256), 0);
	assert_int_equal(jwt_key_algs(k), JWT_PS256);
	assert_string_equal(jwt_key_kid(k), "k1");
	jwt_key_free(k);
	tk_pub_pem(tk_key(TK_P384), pem, sizeof(pem));
	assert_non_null(k = jwt_key_pem(pem, strlen(pem), err, sizeof(err)));
	assert_int_equal(jwt_key_algs(k), JWT_ES384);
	jwt_key_free(k);
	tk_pub_pem(tk_key(TK_ED25519), pem, sizeof(pem));
	assert_non_null(k = jwt_key_pem(pem, strlen(pem), err, sizeof(err)));
	assert_int_equal(jwt_key_algs(k), JWT_EDDSA);
	jwt_key_free(k);
}

static void t_key_verify_binding(void **state)
{
	static const char input[] = "header.payload";
	unsigned char mac[EVP_MAX_MD_SIZE];
	size_t maclen = 0;
	struct secret s = {0};
	struct jwt_key *k;

	(void)state;
	assert_int_equal(secret_set(&s, "secret", 6), 0);
	assert_non_null(k = jwt_key_hmac(&s, NULL, 0));
	assert_string_equal(jwt_key_describe(k), "HMAC");
	assert_int_equal(jwt_key_algs(k), JWT_HS256 | JWT_HS384 | JWT_HS512);
	assert_non_null(EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, "secret", 6,
	                          (const unsigned char *)input, strlen(input), mac, sizeof(mac), &maclen));
	assert_int_equal(jwt_key_verify(k, JWT_HS256, input, strlen(input), mac, maclen), 0);
	/* The same bytes under another algorithm, a flipped bit, a short MAC. */
	assert_int_equal(jwt_key_verify(k, JWT_HS384, input, strlen(input), mac, maclen), -1);
	assert_int_equal(jwt_key_verify(k, JWT_RS256, input, strlen(input), mac, maclen), -1);
	assert_int_equal(jwt_key_verify(k, JWT_HS256 | JWT_HS384, input, strlen(input), mac, maclen), -1);
	mac[0] ^= 1;
	assert_int_equal(jwt_key_verify(k, JWT_HS256, input, strlen(input), mac, maclen), -1);
	mac[0] ^= 1;
	assert_int_equal(jwt_key_verify(k, JWT_HS256, input, strlen(input), mac, maclen - 1), -1);
	assert_int_equal(jwt_key_verify(NULL, JWT_HS256, input, strlen(input), mac, maclen), -1);
	/* Narrowed to HS512, the key no longer checks HS256. */
	assert_int_equal(jwt_key_restrict(k, NULL, JWT_HS512), 0);
	assert_int_equal(jwt_key_verify(k, JWT_HS256, input, strlen(input), mac, maclen), -1);
	jwt_key_free(k);
	secret_clear(&s);
	assert_null(jwt_key_hmac(&s, NULL, 0)); /* an empty secret */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(t_alg_from_name),
	    cmocka_unit_test(t_alg_from_text),
	    cmocka_unit_test(t_key_loading),
	    cmocka_unit_test(t_key_verify_binding),
	};

	return cmocka_run_group_tests_name("jwtkey", tests, NULL, NULL);
}
