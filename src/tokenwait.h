/*
 * tokenwait.h — what the token pipeline (token.c) and its waits on the
 * cluster's Redis (tokenwait.c) share: the state of one request's stages,
 * and the record of a request suspended while Redis answers. Private to
 * the two files, like policy/state.h.
 */
#ifndef BROKER_TOKENWAIT_H
#define BROKER_TOKENWAIT_H

#include <arpa/inet.h>
#include <lua.h>
#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clusterrate.h"
#include "ident.h"
#include "ratelease.h"
#include "reply.h"

struct decision;
struct policy_engine;
struct shadow_job;

/* What the stages of one decision share. */
struct pipeline {
	lua_State *L; /* the engine's: the body and the claims the policy reads */
	struct policy_engine *e;
	int body; /* the body's index on L */
	struct ident_request irq;
	struct identity id;
	char client_ip[INET6_ADDRSTRLEN];
	struct decision *dec;
	/* The answer of the stage that stopped the request. */
	const char *msg;
	const char *extra_name, *extra_value;
	char err[512];
	char retry_after[32];
	/* A stage that answered itself (a cached token): what MHD gets. */
	bool answered;
	enum MHD_Result answer;
	struct shadow_job *shadow; /* the shadow policy's job, queued once decided */
	/* A stage that suspended the request (the cluster's rate limits). */
	bool suspended;
	/* Running inside Redis's reply (on_rate_reply): the connection is
	 * suspended already and nothing may be queued on it; an answer, or a
	 * stage that must answer itself (handoff: the token cache), resumes it. */
	bool in_reply, handoff;
};

/* A stage: REPLY_GO, or the answer. */
typedef enum reply_answer stage_fn(struct req *r, struct pipeline *p);

/* token.c's runner, lent to tokenwait_rate (the arrow points down): the
 * stages from first on (all when NULL); L back at top either way. A
 * request Redis let through goes on with it from inside the reply. */
typedef enum MHD_Result stage_runner(struct req *r, struct pipeline *p, stage_fn *first, int top);

/* A request waiting on Redis (the cluster's rate limits, then its shared
 * token cache): its pipeline, with the body and claims it decoded kept in
 * the engine's registry (the stack is the next request's meanwhile), the
 * stage it goes on from, and what Redis answered. */
struct stage_wait {
	struct req *r;
	struct pipeline p;
	int body_ref, claims_ref;
	stage_fn *resume_at; /* the stage it goes on from */
	stage_runner *run;   /* token.c's, to go on inside Redis's reply */
	bool cache_checked;  /* the shared token cache was asked */
	struct clusterrate_keys keys;
	struct ratelease_ref lease[2]; /* each key's hold on this loop's leases */
	uint64_t sent_ms;              /* when the call was sent (monotonic) */
	struct clusterrate_cmd cmd;
	bool eval_sent;
	bool answered; /* Redis decided: level and retry */
	enum clusterrate_level level;
	double retry;
	/* Decided inside Redis's reply: the answer the handler gives. */
	bool has_final;
	enum reply_answer final;
	bool final_has_msg;
	const char *final_name; /* a string literal */
	char final_msg[512], final_value[32];
};

/* With cluster: a token of each limit from this loop's leases, no call (2);
 * else asks Redis to charge the limits the leases lack in one script call
 * and suspends the request until it answers; it goes on at resume_at: 0.
 * 1: no cluster or no limit; -1: not asked (Redis not connected, shutting
 * down, out of memory): the local buckets decide either way. */
int tokenwait_rate(struct req *r, struct pipeline *p, const char *who, size_t len, stage_fn *resume_at,
                   stage_runner *run);

/* With cluster.cache_key: asks Redis for this grant's shared token and
 * suspends the request until it answers; it goes on at resume_at: 0. -1
 * when not asked (no shared cache, Redis not connected, asked already). */
int tokenwait_cache_ask(struct req *r, struct pipeline *p, stage_fn *resume_at);

/* The leader's token into the shared cache, sealed; expires with it. */
void tokenwait_cache_put(struct req *r, const char *token, size_t len, long long exp);

/* Lets go of the body and claims w kept in L's registry. */
void tokenwait_forget(lua_State *L, struct stage_wait *w);

/* The body and claims w kept while waiting back on p's stack: 0, or -1
 * (out of memory: the engine unpinned). */
int tokenwait_restore(struct req *r, struct stage_wait *w, struct pipeline *p);

#endif
