/*
 * bench_jwt.c — microseconds per JWT verification, per algorithm.
 *
 * Mints one token per algorithm with keys OpenSSL generates, then times
 * ident_jwt_verify (the whole path: split, base64url, header and claims JSON,
 * signature, claims checks) over many runs; prints the best of five rounds,
 * so a busy machine shows less noise. Also times the HMAC step alone, the
 * one-shot EVP_Q_mac the verifier used to call against the keyed template
 * it now duplicates per verification.
 *   bench_jwt [seconds-per-round, default 0.2]
 */
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ident.h"
#include "json.h"
#include "jwt.h"
#include "secret.h"

#include "../unit/testkeys.h"

#define NOW 1700000100LL
#define CLAIMS                                                                                               \
	"{\"sub\":\"alice\",\"iss\":\"https://app.example.com\",\"aud\":\"courier-broker\","                 \
	"\"iat\":1700000000,\"exp\":1700003600}"
#define ROUNDS 5

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Best-of-ROUNDS microseconds per ident_jwt_verify of tok under cfg; each round
 * runs for at least min_s seconds (so slow algorithms do not take minutes). */
static double time_verify(lua_State *L, struct jwt_config *cfg, const char *tok, double min_s)
{
	char subject[257], err[160];
	double best = 1e9;
	size_t len = strlen(tok);

	for (int r = 0; r < ROUNDS; r++) {
		double t0 = now_s(), el;
		long i = 0;
		do {
			for (int k = 0; k < 16; k++, i++) {
				if (ident_jwt_verify(L, cfg, tok, len, (time_t)NOW, subject, sizeof(subject),
				                     err, sizeof(err))) {
					fprintf(stderr, "bench_jwt: refused: %s\n", err);
					exit(1);
				}
				lua_settop(L, 0);
			}
		} while ((el = now_s() - t0) < min_s);
		if (el / (double)i * 1e6 < best)
			best = el / (double)i * 1e6;
	}
	return best;
}

int main(int argc, char **argv)
{
	static const struct {
		const char *alg;
		enum tk_kind kind;
		unsigned bit;
	} rows[] = {
	    {"RS256", TK_RSA, JWT_RS256},  {"PS256", TK_RSA, JWT_PS256},     {"ES256", TK_P256, JWT_ES256},
	    {"ES384", TK_P384, JWT_ES384}, {"EdDSA", TK_ED25519, JWT_EDDSA},
	};
	double secs = argc > 1 ? atof(argv[1]) : 0.2;
	long n = 100000;
	lua_State *L = luaL_newstate();
	struct jwt_config cfg;
	char tok[4096], hdr[64], pem[4096], err[160];
	unsigned char mac[64];
	size_t maclen, len;
	double best_q = 1e9, best_t = 1e9;

	if (!L || json_open(L) || secs <= 0)
		return 1;
	memset(&cfg, 0, sizeof(cfg));
	cfg.enabled = true;
	cfg.rules.issuer = "https://app.example.com";
	cfg.rules.audience = "courier-broker";
	cfg.rules.leeway_s = 30;
	cfg.rules.subject_claim = "sub";
	printf("JWT verification, whole path (best of %d rounds of %.1fs):\n", ROUNDS, secs);

	cfg.rules.algorithms = JWT_HS256;
	if (secret_set(&cfg.hmac_secret, "bench-app-secret-0123456789", 27) ||
	    ident_jwt_prepare(&cfg, err, sizeof(err)))
		return 1;
	len = tk_b64url(tok, "{\"alg\":\"HS256\",\"typ\":\"JWT\"}", 27);
	tok[len++] = '.';
	len += tk_b64url(tok + len, CLAIMS, strlen(CLAIMS));
	if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, cfg.hmac_secret.data, cfg.hmac_secret.len,
	               (unsigned char *)tok, len, mac, sizeof(mac), &maclen))
		return 1;
	tok[len++] = '.';
	tk_b64url(tok + len, mac, maclen);
	printf("  %-6s %8.2f us\n", "HS256", time_verify(L, &cfg, tok, secs));

	/* The HMAC step alone: before (one-shot, a fetch and key setup per call) and after. */
	{
		EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
		EVP_MAC_CTX *tmpl = EVP_MAC_CTX_new(m);
		OSSL_PARAM p[2] = {OSSL_PARAM_construct_utf8_string("digest", "SHA256", 0),
		                   OSSL_PARAM_construct_end()};
		if (!tmpl || !EVP_MAC_init(tmpl, cfg.hmac_secret.data, cfg.hmac_secret.len, p))
			return 1;
		for (int r = 0; r < ROUNDS; r++) {
			double t0 = now_s(), t1, t2;
			for (long i = 0; i < n; i++)
				EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, cfg.hmac_secret.data,
				          cfg.hmac_secret.len, (unsigned char *)tok, len, mac, sizeof(mac),
				          &maclen);
			t1 = now_s();
			for (long i = 0; i < n; i++) {
				EVP_MAC_CTX *c = EVP_MAC_CTX_dup(tmpl);
				EVP_MAC_update(c, (unsigned char *)tok, len);
				EVP_MAC_final(c, mac, &maclen, sizeof(mac));
				EVP_MAC_CTX_free(c);
			}
			t2 = now_s();
			if ((t1 - t0) / (double)n * 1e6 < best_q)
				best_q = (t1 - t0) / (double)n * 1e6;
			if ((t2 - t1) / (double)n * 1e6 < best_t)
				best_t = (t2 - t1) / (double)n * 1e6;
		}
		EVP_MAC_CTX_free(tmpl);
		EVP_MAC_free(m);
	}
	ident_jwt_release(&cfg);
	secret_clear(&cfg.hmac_secret);

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		EVP_PKEY *k = tk_key(rows[i].kind);
		cfg.rules.algorithms = rows[i].bit;
		tk_pub_pem(k, pem, sizeof(pem));
		if (!(cfg.public_key = jwt_key_pem(pem, strlen(pem), err, sizeof(err))))
			return 1;
		snprintf(hdr, sizeof(hdr), "{\"alg\":\"%s\",\"typ\":\"JWT\"}", rows[i].alg);
		tk_mint(tok, hdr, CLAIMS, rows[i].alg, k);
		printf("  %-6s %8.2f us%s\n", rows[i].alg, time_verify(L, &cfg, tok, secs),
		       rows[i].kind == TK_RSA ? "  (RSA 2048)" : "");
		ident_jwt_release(&cfg);
	}
	printf("HMAC-SHA256 step alone: EVP_Q_mac %.2f us, keyed template dup %.2f us\n", best_q, best_t);
	lua_close(L);
	return 0;
}
