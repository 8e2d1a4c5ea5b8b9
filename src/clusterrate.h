/*
 * clusterrate.h — the cluster's shared rate limits: one Redis script call, or a lease.
 *
 * Both of a request's limits (the requester's, then the tenant's) are
 * checked and charged by one atomic server-side script (GCRA on Redis's
 * clock), sent as EVALSHA; the script is loaded on every connection
 * (SCRIPT LOAD) and sent whole (EVAL) when Redis answers NOSCRIPT. A call
 * may ask a key for several tokens at once (a lease: ratelease.h).
 */
#ifndef BROKER_CLUSTERRATE_H
#define BROKER_CLUSTERRATE_H

#include <stdbool.h>
#include <stddef.h>

struct redisReply;

/* A tenant's limits (0 per_second: that limit is off). */
struct clusterrate_limits {
	double per_second, burst;
	double requester_per_second, requester_burst;
};

/* What the script decided. */
enum clusterrate_level { CLUSTERRATE_OK, CLUSTERRATE_REQUESTER, CLUSTERRATE_TENANT };

#define CLUSTERRATE_KEY_MAX 400

/* A request's buckets in Redis, the requester's first: their names and
 * limits, and what a refusal by each means. */
struct clusterrate_keys {
	int n;
	char name[2][CLUSTERRATE_KEY_MAX];
	size_t len[2];
	double per_second[2], burst[2];
	enum clusterrate_level level[2];
};

/* One script call, its strings held inside: some of a request's keys
 * (which[j]: the key the script's j-th is), each with its ask. */
struct clusterrate_cmd {
	int argc;
	const char *argv[11];
	size_t len[11];
	int nkeys;
	int which[2];
	enum clusterrate_level level[2]; /* a refusal by the script's j-th key */
	unsigned ask[2];                 /* the tokens the script's j-th key is asked for */
	char sha[41];
	char keys[2][CLUSTERRATE_KEY_MAX];
	char nums[6][32];
};

/* The script's text, and its SHA-1 in hex (what EVALSHA names). */
const char *clusterrate_script(size_t *len);
const char *clusterrate_sha(void);

/* The request's keys under prefix (the cluster's key prefix, e.g.
 * "courier-broker:prod:"): PREFIX rl:r:HEX for the requester (len bytes),
 * HEX a SHA-256 of the cluster prefix, tenant and requester (no subject in
 * clear in Redis), then PREFIX rl:t:TENANT. Returns 0, or -1 when no limit
 * is on or a key would be too long. */
int clusterrate_keys(struct clusterrate_keys *k, const char *prefix, const char *tenant,
                     const char *requester, size_t len, const struct clusterrate_limits *lim);

/* The command (EVALSHA, or EVAL when eval) charging the keys of k whose ask
 * is at least 1 (ask[i] tokens wanted from key i; 0: not sent). Returns 0,
 * or -1 when no key is asked. */
int clusterrate_command_for(struct clusterrate_cmd *c, bool eval, const struct clusterrate_keys *k,
                            const unsigned ask[2]);

/* Both keys, one token each: clusterrate_keys then clusterrate_command_for. */
int clusterrate_command(struct clusterrate_cmd *c, bool eval, const char *prefix, const char *tenant,
                        const char *requester, size_t len, const struct clusterrate_limits *lim);

/* Turns an EVALSHA command into the EVAL of the same call. */
void clusterrate_as_eval(struct clusterrate_cmd *c);

/* Reads the script's reply: 0 with *level (and *retry_s, seconds >= 1, when
 * refused; when let through, grants[i] the tokens key i of the request was
 * charged, 0 for a key not sent; grants may be NULL); 1 when Redis does not
 * know the script (send it with EVAL); -1 when the reply is unusable. */
int clusterrate_verdict(const struct clusterrate_cmd *c, const struct redisReply *reply,
                        enum clusterrate_level *level, double *retry_s, unsigned grants[2]);

#endif
