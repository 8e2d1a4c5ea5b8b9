/*
 * fuzz_jwks.c — libFuzzer driver for src/jwk.c (JWKS documents).
 *
 * Feeds arbitrary bytes to jwks_parse. Findings: crashes, sanitizer reports,
 * a set with no key or more than JWKS_MAX_KEYS, a key with no algorithm or
 * with algorithms outside one key type, a kid longer than JWT_KID_MAX, and a
 * skip reason that is empty.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jwk.h"
#include "jwt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void on_skip(void *ctx, size_t index, const char *kid, const char *why)
{
	(void)ctx;
	(void)index;
	if (!kid || strlen(kid) > JWT_KID_MAX || !why || !why[0])
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const unsigned types[] = {JWT_RSA_ALGS, JWT_ES256, JWT_ES384, JWT_EDDSA};
	char err[256];
	struct jwks_set *set;

	err[0] = '\0';
	set = jwks_parse((const char *)data, size, on_skip, NULL, err, sizeof(err));
	if (!set) {
		if (!err[0])
			abort();
		return 0;
	}
	if (jwks_set_size(set) == 0 || jwks_set_size(set) > JWKS_MAX_KEYS)
		abort();
	for (size_t i = 0; i < jwks_set_size(set); i++) {
		const struct jwt_key *k = jwks_set_key(set, i);
		unsigned algs = jwt_key_algs(k);
		int within = 0;
		const char *kid = jwt_key_kid(k);
		for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++)
			within += algs && (algs & ~types[t]) == 0;
		if (within != 1 || (kid && (strlen(kid) == 0 || strlen(kid) > JWT_KID_MAX)))
			abort();
	}
	jwks_set_release(set);
	return 0;
}
