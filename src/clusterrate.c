/*
 * clusterrate.c — the shared rate limits' script, its keys and its verdict.
 *
 * Owns the Lua script Redis runs for each call (GCRA: each key holds
 * its limit's theoretical arrival time in microseconds of Redis's own
 * clock, so brokers' clocks never matter; a call may ask a key for several
 * tokens, a lease, and each key grants what it holds up to its ask), the
 * names of the keys it writes and the reading of its answer. A key expires when its bucket
 * would be full again: nothing accumulates for requesters who went away.
 *
 * It must never put a requester's subject or address in a key in clear,
 * never charge the requester's limit when the tenant's refuses (the script
 * checks every key before it writes any: a refusal charges nothing), and never send anything but the
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
 * (microseconds per token), burst and ask (the tokens wanted: a lease).
 * Each bucket can give floor((now + burst * period - tat) / period) tokens;
 * it grants that, capped by its ask. Returns {0, g1[, g2]} when every bucket
 * can give at least one (each is charged its grant), else {i, wait_us} for
 * the first that has none (nothing charged). An ask of 1 is the plain
 * check: the test below is the one a single token always had. */
static const char script[] = "local t = redis.call('TIME')\n"
                             "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
                             "local tats, grants = {}, {0}\n"
                             "for i = 1, #KEYS do\n"
                             "  local period, burst = tonumber(ARGV[3*i-2]), tonumber(ARGV[3*i-1])\n"
                             "  local ask = tonumber(ARGV[3*i]) or 1\n"
                             "  local tat = tonumber(redis.call('GET', KEYS[i]) or '0') or 0\n"
                             "  if tat < now then tat = now end\n"
                             "  local wait = tat + period - burst * period - now\n"
                             "  if wait > 0 then return {i, math.ceil(wait)} end\n"
                             "  local g = math.floor((now + burst * period - tat) / period)\n"
                             "  if g > ask then g = ask end\n"
                             "  if g < 1 then g = 1 end\n"
                             "  tats[i] = tat + g * period\n"
                             "  grants[i + 1] = g\n"
                             "end\n"
                             "for i = 1, #KEYS do\n"
                             "  redis.call('SET', KEYS[i], string.format('%.0f', tats[i]), 'PX',\n"
                             "             math.ceil((tats[i] - now) / 1000) + 1)\n"
                             "end\n"
                             "return grants\n";

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

int clusterrate_keys(struct clusterrate_keys *k, const char *prefix, const char *tenant,
                     const char *requester, size_t len, const struct clusterrate_limits *lim)
{
	char name[65];
	int n;

	k->n = 0;
	if (lim->requester_per_second > 0) {
		if (requester_name(prefix, tenant, requester, len, name) != 0)
			return -1;
		n = snprintf(k->name[0], sizeof(k->name[0]), "%srl:r:%s", prefix, name);
		if (n < 0 || (size_t)n >= sizeof(k->name[0]))
			return -1;
		k->len[0] = (size_t)n;
		k->per_second[0] = lim->requester_per_second;
		k->burst[0] = lim->requester_burst < 1 ? 1 : lim->requester_burst;
		k->level[0] = CLUSTERRATE_REQUESTER;
		k->n = 1;
	}
	if (lim->per_second > 0) {
		n = snprintf(k->name[k->n], sizeof(k->name[k->n]), "%srl:t:%s", prefix, tenant);
		if (n < 0 || (size_t)n >= sizeof(k->name[k->n]))
			return -1;
		k->len[k->n] = (size_t)n;
		k->per_second[k->n] = lim->per_second;
		k->burst[k->n] = lim->burst < 1 ? 1 : lim->burst;
		k->level[k->n] = CLUSTERRATE_TENANT;
		k->n++;
	}
	return k->n ? 0 : -1;
}

int clusterrate_command_for(struct clusterrate_cmd *c, bool eval, const struct clusterrate_keys *k,
                            const unsigned ask[2])
{
	static const char *const counts[] = {"0", "1", "2"};
	int nums = 0;
	size_t slen;

	c->argc = 0;
	c->nkeys = 0;
	for (int i = 0; i < k->n; i++)
		if (ask[i] > 0) {
			c->which[c->nkeys] = i;
			c->level[c->nkeys] = k->level[i];
			c->ask[c->nkeys] = ask[i];
			memcpy(c->keys[c->nkeys], k->name[i], k->len[i] + 1);
			c->nkeys++;
		}
	if (!c->nkeys)
		return -1;
	if (eval) {
		const char *text = clusterrate_script(&slen);
		add(c, "EVAL", 4);
		add(c, text, slen);
	} else {
		add(c, "EVALSHA", 7);
		snprintf(c->sha, sizeof(c->sha), "%s", clusterrate_sha());
		add(c, c->sha, strlen(c->sha));
	}
	add(c, counts[c->nkeys], 1);
	for (int j = 0; j < c->nkeys; j++)
		add(c, c->keys[j], k->len[c->which[j]]);
	for (int j = 0; j < c->nkeys; j++) {
		int i = c->which[j];
		add_num(c, nums++, 1e6 / k->per_second[i]);
		add_num(c, nums++, k->burst[i]);
		add_num(c, nums++, (double)ask[i]);
	}
	return 0;
}

int clusterrate_command(struct clusterrate_cmd *c, bool eval, const char *prefix, const char *tenant,
                        const char *requester, size_t len, const struct clusterrate_limits *lim)
{
	struct clusterrate_keys k;
	static const unsigned ones[2] = {1, 1};

	if (clusterrate_keys(&k, prefix, tenant, requester, len, lim) != 0)
		return -1;
	return clusterrate_command_for(c, eval, &k, ones);
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
                        enum clusterrate_level *level, double *retry_s, unsigned grants[2])
{
	long long which, wait;

	if (!r)
		return -1;
	if (r->type == REDIS_REPLY_ERROR)
		return r->str && strncasecmp(r->str, "NOSCRIPT", 8) == 0 ? 1 : -1;
	if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 || r->element[0]->type != REDIS_REPLY_INTEGER)
		return -1;
	which = r->element[0]->integer;
	if (which == 0) {
		/* Let through: each key sent, its grant (at least 1, at most
		 * what was asked: a reply granting more is unusable, never a
		 * larger lease). */
		if (r->elements != (size_t)c->nkeys + 1)
			return -1;
		for (int j = 0; j < c->nkeys; j++)
			if (r->element[j + 1]->type != REDIS_REPLY_INTEGER ||
			    r->element[j + 1]->integer < 1 ||
			    r->element[j + 1]->integer > (long long)c->ask[j])
				return -1;
		if (grants) {
			grants[0] = grants[1] = 0;
			for (int j = 0; j < c->nkeys; j++)
				grants[c->which[j]] = (unsigned)r->element[j + 1]->integer;
		}
		*level = CLUSTERRATE_OK;
		return 0;
	}
	if (r->elements != 2 || r->element[1]->type != REDIS_REPLY_INTEGER || which < 1 || which > c->nkeys)
		return -1;
	wait = r->element[1]->integer;
	*level = c->level[which - 1];
	*retry_s = ceil((double)wait / 1e6);
	if (*retry_s < 1)
		*retry_s = 1;
	return 0;
}
