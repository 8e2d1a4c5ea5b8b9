/*
 * fuzz_ratereply.c — libFuzzer driver for clusterrate_verdict
 * (src/clusterrate.c) and sharedcache_open (src/sharedcache.c): what a
 * hostile or broken Redis can answer to the rate-limit script and to a
 * shared token's GET.
 *
 * The bytes are a Redis reply as Redis writes it (RESP): hiredis's own
 * reader turns them into the redisReply tree the loop would hand over, so
 * every shape (nested arrays, nil, errors, huge integers, strings with NULs)
 * is reached. Each reply is judged with and without a requester key; a
 * string reply is also opened as a sealed token (as token.c does), and the
 * raw bytes are opened too. Owns the properties: never a crash; a verdict
 * is 0 (and then a level, and a retry of at least a second when limited),
 * 1 (NOSCRIPT) or -1, and a grant a key was sent for between 1 and
 * what it was asked; a sealed token forged without the key never opens;
 * a token sealed here opens back to what was sealed.
 */
#include <hiredis/hiredis.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clusterrate.h"
#include "grantcache.h"
#include "redis.h"
#include "sharedcache.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct sharedcache sc;
static bool ready;

static void judge(const redisReply *r, bool requester)
{
	struct clusterrate_cmd c;
	enum clusterrate_level level = (enum clusterrate_level) - 1;
	double retry = -1;
	unsigned grants[2] = {7, 7};
	int rc;

	memset(&c, 0, sizeof(c));
	c.nkeys = requester ? 2 : 1;
	c.which[0] = 0;
	c.which[1] = 1;
	c.level[0] = requester ? CLUSTERRATE_REQUESTER : CLUSTERRATE_TENANT;
	c.level[1] = CLUSTERRATE_TENANT;
	c.ask[0] = requester ? 1 : 64;
	c.ask[1] = 64;
	rc = clusterrate_verdict(&c, r, &level, &retry, grants);
	if (rc != 0 && rc != 1 && rc != -1)
		abort();
	if (rc == 0 && level != CLUSTERRATE_OK && level != CLUSTERRATE_REQUESTER &&
	    level != CLUSTERRATE_TENANT)
		abort();
	if (rc == 0 && level != CLUSTERRATE_OK && !(retry >= 1))
		abort();
	if (rc == 0 && level == CLUSTERRATE_REQUESTER && !requester)
		abort();
	/* Let through: every key sent was granted a sane count. */
	for (int j = 0; rc == 0 && level == CLUSTERRATE_OK && j < c.nkeys; j++)
		if (grants[c.which[j]] < 1 || grants[c.which[j]] > c.ask[j])
			abort();
}

static void open_bytes(const unsigned char *in, size_t len)
{
	char token[GRANTCACHE_TOKEN_MAX + 1];
	size_t n = 0;
	long long exp = 0, life = 0;

	/* Without the key's output nothing can authenticate: a forgery that
	 * opens is a finding. */
	if (sharedcache_open(&sc, "cb:t:x", in, len, token, sizeof(token), &n, &exp, &life) == 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	redisReader *rd;
	void *reply = NULL;

	if (!ready) {
		unsigned char key[32];
		memset(key, 7, sizeof(key));
		if (sharedcache_init(&sc, key, sizeof(key)) != 0)
			abort();
		ready = true;
	}
	judge(NULL, false);
	open_bytes(data, size);
	/* Seal and open back the bytes as a token (bounded by the cache's size). */
	if (size <= GRANTCACHE_TOKEN_MAX) {
		unsigned char sealed[GRANTCACHE_TOKEN_MAX + SHAREDCACHE_OVERHEAD];
		char token[GRANTCACHE_TOKEN_MAX + 1];
		size_t sl = 0, n = 0;
		long long exp = 0, life = 0;
		if (sharedcache_seal(&sc, "cb:t:x", (const char *)data, size, 1234, 56, sealed,
		                     sizeof(sealed), &sl) != 0)
			abort();
		if (sharedcache_open(&sc, "cb:t:x", sealed, sl, token, sizeof(token), &n, &exp, &life) != 0 ||
		    n != size || memcmp(token, data, size) != 0 || exp != 1234 || life != 56)
			abort();
		/* Under another name (a key of Redis moved by hand), never. */
		if (sharedcache_open(&sc, "cb:t:y", sealed, sl, token, sizeof(token), &n, &exp, &life) == 0)
			abort();
		if (sl > 0) {
			sealed[size % sl] ^= 1;
			if (sharedcache_open(&sc, "cb:t:x", sealed, sl, token, sizeof(token), &n, &exp,
			                     &life) == 0)
				abort();
		}
	}
	if (!(rd = redisReaderCreate()))
		return 0;
	redis_reader_limit(rd); /* as every connection's reader */
	if (redisReaderFeed(rd, (const char *)data, size) == REDIS_OK) {
		while (redisReaderGetReply(rd, &reply) == REDIS_OK && reply) {
			const redisReply *r = reply;
			judge(r, false);
			judge(r, true);
			if (r->type == REDIS_REPLY_STRING)
				open_bytes((const unsigned char *)r->str, r->len);
			freeReplyObject(reply);
			reply = NULL;
		}
	}
	redisReaderFree(rd);
	return 0;
}
