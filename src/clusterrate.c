/*
 * clusterrate.c — the shared rate limits' script, its keys and its verdict.
 *
 * Owns the Lua script Redis runs for each request (GCRA: each key holds
 * its limit's theoretical arrival time in microseconds of Redis's own
 * clock, so brokers' clocks never matter), the names of the keys it
 * writes and the reading of its answer. A key expires when its bucket
 * would be full again: nothing accumulates for requesters who went away.
 *
 * It must never put a requester's subject or address in a key in clear,
 * never charge the requester's limit when the tenant's refuses (the script
 * checks both before it writes either), and never send anything but the
 * keys and numbers (no secret reaches Redis).
 */
#include "clusterrate.h"

#include <hiredis/hiredis.h>
#include <math.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "secret.h"

/* KEYS: one or two buckets, checked in order; ARGV: each one's period
 * (microseconds per token) and burst. Returns {0, 0} when every bucket had
 * a token (all are charged), else {i, wait_us} for the first that had none
 * (nothing charged). */
static const char script[] = "local t = redis.call('TIME')\n"
                             "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
                             "local tats = {}\n"
                             "for i = 1, #KEYS do\n"
                             "  local period, burst = tonumber(ARGV[2*i-1]), tonumber(ARGV[2*i])\n"
                             "  local tat = tonumber(redis.call('GET', KEYS[i]) or '0') or 0\n"
                             "  if tat < now then tat = now end\n"
                             "  local new = tat + period\n"
                             "  local wait = new - burst * period - now\n"
                             "  if wait > 0 then return {i, math.ceil(wait)} end\n"
                             "  tats[i] = new\n"
                             "end\n"
                             "for i = 1, #KEYS do\n"
                             "  redis.call('SET', KEYS[i], string.format('%.0f', tats[i]), 'PX',\n"
                             "             math.ceil((tats[i] - now) / 1000) + 1)\n"
                             "end\n"
                             "return {0, 0}\n";

static char sha_hex[41];
static pthread_once_t sha_once = PTHREAD_ONCE_INIT;

static void sha_setup(void)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;

	if (EVP_Digest(script, sizeof(script) - 1, md, &n, EVP_sha1(), NULL) == 1 && n == 20)
		secret_hex(md, 20, sha_hex);
}

const char *clusterrate_script(size_t *len)
{
	*len = sizeof(script) - 1;
	return script;
}

const char *clusterrate_sha(void)
{
	pthread_once(&sha_once, sha_setup);
	return sha_hex;
}

static EVP_MD *sha256;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

/* Fetched once: an implicit fetch per digest costs more than the digest. */
static void sha256_setup(void)
{
	sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
}

/* HEX: the requester's name in Redis. */
static int requester_name(const char *prefix, const char *tenant, const char *requester, size_t len,
                          char out[65])
{
	unsigned char in[CLUSTERRATE_KEY_MAX + 600], md[32];
	size_t pl = strlen(prefix) + 1, tl = strlen(tenant) + 1;
	unsigned int n = 0;

	pthread_once(&sha256_once, sha256_setup);
	if (!sha256 || pl + tl + len > sizeof(in))
		return -1;
	memcpy(in, prefix, pl);
	memcpy(in + pl, tenant, tl);
	memcpy(in + pl + tl, requester, len);
	if (EVP_Digest(in, pl + tl + len, md, &n, sha256, NULL) != 1 || n != 32)
		return -1;
	secret_hex(md, 16, out);
	return 0;
}

static void add(struct clusterrate_cmd *c, const char *s, size_t len)
{
	c->argv[c->argc] = s;
	c->len[c->argc] = len;
	c->argc++;
}

static void add_num(struct clusterrate_cmd *c, int i, double v)
{
	int n = snprintf(c->nums[i], sizeof(c->nums[i]), "%.3f", v);

	add(c, c->nums[i], (size_t)n);
}

int clusterrate_command(struct clusterrate_cmd *c, bool eval, const char *prefix, const char *tenant,
                        const char *requester, size_t len, const struct clusterrate_limits *lim)
{
	bool req = lim->requester_per_second > 0, ten = lim->per_second > 0;
	int nkeys = (int)req + (int)ten, k = 0, n;
	char name[65];
	size_t slen;

	if (!nkeys)
		return -1;
	c->argc = 0;
	c->requester = req;
	if (eval) {
		const char *text = clusterrate_script(&slen);
		add(c, "EVAL", 4);
		add(c, text, slen);
	} else {
		add(c, "EVALSHA", 7);
		snprintf(c->sha, sizeof(c->sha), "%s", clusterrate_sha());
		add(c, c->sha, strlen(c->sha));
	}
	add(c, nkeys == 2 ? "2" : "1", 1);
	if (req) {
		if (requester_name(prefix, tenant, requester, len, name) != 0)
			return -1;
		n = snprintf(c->keys[k], sizeof(c->keys[k]), "%srl:r:%s", prefix, name);
		if (n < 0 || (size_t)n >= sizeof(c->keys[k]))
			return -1;
		add(c, c->keys[k], (size_t)n);
		k++;
	}
	if (ten) {
		n = snprintf(c->keys[k], sizeof(c->keys[k]), "%srl:t:%s", prefix, tenant);
		if (n < 0 || (size_t)n >= sizeof(c->keys[k]))
			return -1;
		add(c, c->keys[k], (size_t)n);
	}
	k = 0;
	if (req) {
		add_num(c, k++, 1e6 / lim->requester_per_second);
		add_num(c, k++, lim->requester_burst < 1 ? 1 : lim->requester_burst);
	}
	if (ten) {
		add_num(c, k++, 1e6 / lim->per_second);
		add_num(c, k, lim->burst < 1 ? 1 : lim->burst);
	}
	return 0;
}

void clusterrate_as_eval(struct clusterrate_cmd *c)
{
	size_t len;
	const char *text = clusterrate_script(&len);

	c->argv[0] = "EVAL";
	c->len[0] = 4;
	c->argv[1] = text;
	c->len[1] = len;
}

int clusterrate_verdict(const struct clusterrate_cmd *c, const struct redisReply *r,
                        enum clusterrate_level *level, double *retry_s)
{
	long long which, wait;

	if (!r)
		return -1;
	if (r->type == REDIS_REPLY_ERROR)
		return r->str && strncasecmp(r->str, "NOSCRIPT", 8) == 0 ? 1 : -1;
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_REPLY_INTEGER ||
	    r->element[1]->type != REDIS_REPLY_INTEGER)
		return -1;
	which = r->element[0]->integer;
	wait = r->element[1]->integer;
	if (which == 0) {
		*level = CLUSTERRATE_OK;
		return 0;
	}
	if (which == 1 && c->requester)
		*level = CLUSTERRATE_REQUESTER;
	else if (which == 1 || which == 2)
		*level = CLUSTERRATE_TENANT;
	else
		return -1;
	*retry_s = ceil((double)wait / 1e6);
	if (*retry_s < 1)
		*retry_s = 1;
	return 0;
}
