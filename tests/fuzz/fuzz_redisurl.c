/*
 * fuzz_redisurl.c — libFuzzer driver for config_conv_cluster_url
 * (src/config/cluster.c): the bytes are the value of cluster.redis.url.
 *
 * Owns the properties: whatever the text, never a crash or a leak; a
 * refusal says why and never quotes what stands before an '@' (it may be a
 * password: "redis://user:secret@host"); a URL taken gives a host of 1-253
 * bytes without '/', '@' or ':' (brackets dropped, IPv6 only then), a port
 * of 1-65535, a user only when the URL had an '@', without ':', and TLS
 * exactly when it starts rediss://.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "config/loader.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The words of conv.c's messages (a "password" made of them is no leak). */
#define TEMPLATES                                                                                            \
	"fuzz.conf.lua: cluster.redis.url: \"(not quoted: it holds an '@')\" must start with redis:// "      \
	"or rediss:// (TLS) (redis://[user@]host[:port][/db]) no query, fragment or %-escape the port must " \
	"be 1..65535 the "                                                                                   \
	"database after '/' must be a number 0..65535 is not redis://[user@]host[:port][/db] (such as "      \
	"\"redis://10.0.0.5:6379/0\") must not carry a password: write redis://user@host and give the "      \
	"password as cluster.redis.password = { env = \"NAME\" } or { file = \"PATH\" } has an empty user "  \
	"name before '@' must not contain spaces, control or non-ASCII bytes must not contain a NUL byte"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config *cfg = calloc(1, sizeof(*cfg));
	char err[512] = "", *s = malloc(size + 1);
	struct loader ld = {.cfg = cfg, .shown = "fuzz.conf.lua", .err = err, .errlen = sizeof(err)};
	struct value v = {.present = true};
	const char *at, *auth;
	int rc;

	if (!cfg || !s)
		abort();
	memcpy(s, data, size);
	s[size] = '\0';
	v.str = s;
	v.len = size;
	rc = config_conv_cluster_url(&ld, "cluster.redis.url", &v, cfg);
	at = memrchr(s, '@', size);
	auth = strstr(s, "://");
	auth = auth ? auth + 3 : s;
	if (rc != 0) {
		if (!err[0])
			abort(); /* a refusal must say why */
		if (at && at > auth && memchr(auth, ':', (size_t)(at - auth))) {
			/* What stands between the first ':' of the userinfo and the
			 * last '@' (the password of "user:password@") must never be
			 * quoted; a short one may be a word of the message itself. */
			const char *pw = (const char *)memchr(auth, ':', (size_t)(at - auth)) + 1;
			char secret[600];
			size_t n = (size_t)(at - pw);
			if (n >= 6 && n < sizeof(secret) && memchr(pw, '\0', n) == NULL) {
				memcpy(secret, pw, n);
				secret[n] = '\0';
				if (strstr(err, secret) && !strstr(TEMPLATES, secret)) {
					fprintf(stderr, "the error quotes the password: %s\n", err);
					abort();
				}
			}
		}
	} else {
		const char *h = cfg->cluster.host;
		if (!h || !h[0] || strlen(h) > 253 || strpbrk(h, "/@[]"))
			abort();
		if (strchr(h, ':') && !memchr(s, '[', size))
			abort();
		if (cfg->cluster.port == 0)
			abort();
		if (cfg->cluster.tls != (size >= 9 && memcmp(s, "rediss://", 9) == 0))
			abort();
		if (cfg->cluster.user && (!at || strchr(cfg->cluster.user, ':') || !cfg->cluster.user[0]))
			abort();
	}
	free(cfg->cluster.host);
	free(cfg->cluster.user);
	free(cfg);
	free(s);
	return 0;
}
