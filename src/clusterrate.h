/*
 * clusterrate.h — the cluster's shared rate limits: one Redis script call a request.
 *
 * Both of a request's limits (the requester's, then the tenant's) are
 * checked and charged by one atomic server-side script (GCRA on Redis's
 * clock), sent as EVALSHA; the script is loaded on every connection
 * (SCRIPT LOAD) and sent whole (EVAL) when Redis answers NOSCRIPT.
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

/* One request's command, its strings held inside. */
struct clusterrate_cmd {
	int argc;
	const char *argv[9];
	size_t len[9];
	bool requester; /* the requester's key comes first */
	char sha[41];
	char keys[2][CLUSTERRATE_KEY_MAX];
	char nums[4][32];
};

/* The script's text, and its SHA-1 in hex (what EVALSHA names). */
const char *clusterrate_script(size_t *len);
const char *clusterrate_sha(void);

/* Builds the command (EVALSHA, or EVAL when eval) charging requester
 * (len bytes) and tenant under prefix (the cluster's key prefix, e.g.
 * "courier-broker:prod:"). Returns 0, or -1 when no limit is on or a key
 * would be too long. Keys: PREFIX rl:t:TENANT, and PREFIX rl:r:HEX where HEX
 * is a SHA-256 of the cluster prefix, tenant and requester (no subject in
 * clear in Redis). */
int clusterrate_command(struct clusterrate_cmd *c, bool eval, const char *prefix, const char *tenant,
                        const char *requester, size_t len, const struct clusterrate_limits *lim);

/* Turns an EVALSHA command into the EVAL of the same call. */
void clusterrate_as_eval(struct clusterrate_cmd *c);

/* Reads the script's reply: 0 with *level (and *retry_s, seconds >= 1, when
 * refused); 1 when Redis does not know the script (send it with EVAL); -1
 * when the reply is unusable. */
int clusterrate_verdict(const struct clusterrate_cmd *c, const struct redisReply *reply,
                        enum clusterrate_level *level, double *retry_s);

#endif
