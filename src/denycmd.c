/*
 * denycmd.c — `deny` and `allow`: the cluster's shared deny list, edited.
 *
 * Owns the two commands: the arguments, the checks (the configuration has
 * a cluster and the tenant, each user id is one a request could carry),
 * and one MULTI/EXEC that changes the tenant's set in Redis, records the
 * tenant in the index and PUBLISHes the change, so every broker's
 * subscriber (cluster.c) reloads that tenant's set. It must never write
 * outside the cluster's keys, never print the Redis password, and never
 * report success for a change Redis did not make.
 */
#include "denycmd.h"

#include <hiredis.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "config.h"
#include "policy.h"
#include "redis.h"
#include "scope.h"

#define KEY_MAX 256

struct args {
	const char *config, *tenant;
	char **users;
	size_t n_users;
};

static int parse_args(int argc, char **argv, struct args *a)
{
	a->users = calloc((size_t)argc + 1, sizeof(char *));
	if (!a->users)
		return -1;
	for (int i = 0; i < argc; i++) {
		if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc)
			a->config = argv[++i];
		else if (strcmp(argv[i], "--tenant") == 0 && i + 1 < argc)
			a->tenant = argv[++i];
		else if (argv[i][0] == '-' && argv[i][1] != '\0') /* "-" alone is a user id */
			return -1;
		else
			a->users[a->n_users++] = argv[i];
	}
	return a->config && a->tenant && a->n_users ? 0 : -1;
}

/* The transaction's replies: SADD/SREM, [SADD index], SCARD, PUBLISH. */
static int report(const char *cmd, const struct args *a, const struct config *cfg, const redisReply *exec)
{
	bool deny = strcmp(cmd, "deny") == 0;
	size_t want = deny ? 4 : 3;
	const redisReply *changed, *card, *heard;

	if (!exec || exec->type != REDIS_REPLY_ARRAY || exec->elements != want) {
		fprintf(stderr, "courier-broker: %s: redis did not run the change (%s)\n", cmd,
		        exec && exec->type == REDIS_REPLY_ERROR ? exec->str : "transaction aborted");
		return 1;
	}
	for (size_t i = 0; i < want; i++)
		if (exec->element[i]->type != REDIS_REPLY_INTEGER) {
			fprintf(stderr, "courier-broker: %s: redis refused a step: %s\n", cmd,
			        exec->element[i]->type == REDIS_REPLY_ERROR ? exec->element[i]->str : "?");
			return 1;
		}
	changed = exec->element[0];
	card = exec->element[want - 2];
	heard = exec->element[want - 1];
	printf("tenant %s: %lld of %zu user(s) %s cluster %s's deny list (%lld on it now); %lld broker(s) "
	       "notified\n",
	       a->tenant, changed->integer, a->n_users, deny ? "added to" : "removed from", cfg->cluster.name,
	       card->integer, heard->integer);
	return 0;
}

/* Queues name [a1 [a2]]: 0 or -1. */
static int append(struct redis_conn *rc, const char *name, const char *a1, const char *a2)
{
	const char *argv[3] = {name, a1, a2};
	size_t lens[3] = {strlen(name), a1 ? strlen(a1) : 0, a2 ? strlen(a2) : 0};

	return redis_append(rc, a2 ? 3 : a1 ? 2 : 1, argv, lens);
}

/* MULTI; SADD|SREM set users; [SADD index tenant]; SCARD set; PUBLISH; EXEC. */
static int apply(const char *cmd, const struct args *a, const struct config *cfg, struct redis_conn *rc)
{
	bool deny = strcmp(cmd, "deny") == 0;
	char set[KEY_MAX], idx[KEY_MAX], chan[KEY_MAX], rest[KEY_MAX];
	const char **argv = calloc(a->n_users + 2, sizeof(char *));
	size_t *lens = calloc(a->n_users + 2, sizeof(size_t));
	redisReply *r = NULL;
	int rc_ = 1, sent = 0;

	snprintf(rest, sizeof(rest), CLUSTER_DENY_KEY "%s", a->tenant);
	if (!argv || !lens || redis_key(&cfg->cluster, rest, set, sizeof(set)) ||
	    redis_key(&cfg->cluster, CLUSTER_DENY_TENANTS, idx, sizeof(idx)) ||
	    redis_key(&cfg->cluster, CLUSTER_DENY_CHANNEL, chan, sizeof(chan))) {
		fprintf(stderr, "courier-broker: %s: out of memory\n", cmd);
		goto out;
	}
	argv[0] = deny ? "SADD" : "SREM";
	argv[1] = set;
	for (size_t i = 0; i < a->n_users; i++)
		argv[i + 2] = a->users[i];
	for (size_t i = 0; i < a->n_users + 2; i++)
		lens[i] = strlen(argv[i]);
	if (append(rc, "MULTI", NULL, NULL) || redis_append(rc, (int)a->n_users + 2, argv, lens) ||
	    (deny && append(rc, "SADD", idx, a->tenant)) || append(rc, "SCARD", set, NULL) ||
	    append(rc, "PUBLISH", chan, a->tenant) || append(rc, "EXEC", NULL, NULL))
		goto io;
	sent = deny ? 6 : 5;
	/* MULTI's OK and each QUEUED, then EXEC's array. */
	for (int i = 0; i < sent; i++) {
		if (r)
			freeReplyObject(r);
		r = NULL;
		if (!(r = redis_get_reply(rc)))
			goto io;
		if (i < sent - 1 && r->type == REDIS_REPLY_ERROR) {
			fprintf(stderr, "courier-broker: %s: redis: %s\n", cmd, r->str);
			goto out;
		}
	}
	rc_ = report(cmd, a, cfg, r);
	goto out;
io:
	fprintf(stderr, "courier-broker: %s: redis %s:%u: %s\n", cmd, cfg->cluster.host, cfg->cluster.port,
	        redis_error(rc)[0] ? redis_error(rc) : "no answer");
out:
	if (r)
		freeReplyObject(r);
	free(argv);
	free(lens);
	return rc_;
}

int denycmd_main(const char *cmd, int argc, char **argv)
{
	struct args a = {0};
	struct config *cfg = NULL;
	struct redis_conn *rc = NULL;
	char err[1024];
	int code = 1;

	/* A TLS write to a Redis that hung up must be an error, not SIGPIPE
	 * (OpenSSL writes with write(2), without MSG_NOSIGNAL). */
	signal(SIGPIPE, SIG_IGN);
	if (parse_args(argc, argv, &a) != 0) {
		fprintf(stderr, "usage: " DENYCMD_USAGE "\n");
		free(a.users);
		return 2;
	}
	if (!(cfg = config_load(a.config, &policy_config_sandbox, err, sizeof(err)))) {
		fprintf(stderr, "courier-broker: %s\n", err);
		goto out;
	}
	if (!cfg->cluster.enabled) {
		fprintf(stderr,
		        "courier-broker: %s: %s has no cluster block: the deny list lives in the "
		        "cluster's Redis (cluster.redis)\n",
		        cmd, a.config);
		goto out;
	}
	if (!config_tenant(cfg, a.tenant)) {
		fprintf(stderr, "courier-broker: %s: no tenant %s in %s\n", cmd, a.tenant, a.config);
		goto out;
	}
	/* The ids a request's user_id could be: any other could never match. */
	for (size_t i = 0; i < a.n_users; i++)
		if (!scope_user_id_valid(a.users[i], strlen(a.users[i]))) {
			fprintf(stderr,
			        "courier-broker: %s: user id %zu is not valid (1-256 bytes of UTF-8 without "
			        "whitespace, control or invisible characters)\n",
			        cmd, i + 1);
			goto out;
		}
	if (!(rc = redis_connect(&cfg->cluster, REDIS_REPLY_MAX_SMALL, err, sizeof(err)))) {
		fprintf(stderr, "courier-broker: %s: %s\n", cmd, err);
		goto out;
	}
	code = apply(cmd, &a, cfg, rc);
out:
	redis_close(rc);
	config_free(cfg);
	free(a.users);
	return code;
}
