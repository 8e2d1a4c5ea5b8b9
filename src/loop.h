/*
 * loop.h — the event loops, the acceptor and the listeners.
 *
 * The loops know no route: the front gives them its MHD handlers
 * (struct loop_routes), and the handlers reach the loop's parts through the
 * accessors below. A request lives on one loop from its first byte to its
 * answer, so everything a loop hands out is used on its thread only.
 */
#ifndef BROKER_LOOP_H
#define BROKER_LOOP_H

#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>

struct config;
struct courier_client;
struct gen_engines;
struct http_server;
struct loop;
struct lua_State;
struct metrics_front;
struct rloop;
struct ratelease;
struct sharedcache;

/* What the front gives every loop. */
struct loop_routes {
	/* MHD's handlers on the client listener: cls is the struct loop *. */
	MHD_AccessHandlerCallback on_request;
	MHD_RequestCompletedCallback on_completed;
	/* The admin listener's handler: cls is the struct http_server *. */
	MHD_AccessHandlerCallback on_admin_request;
	/* Bytes of per-loop scratch the handlers use (loop_scratch). */
	size_t scratch_size;
};

/* Starts listening as cfg says (address, threads, limits, admin_listen):
 * one event loop per thread, each with its own MHD daemon, Courier client and
 * JSON state, and one acceptor. NULL and err on failure. */
struct http_server *loop_server_start(const struct config *cfg, const struct loop_routes *routes, char *err,
                                      size_t errlen);

/* The port the client listener listens on. */
unsigned short loop_server_port(struct http_server *s);

/* http_drain_and_stop (http.h). */
int loop_server_drain(struct http_server *s, unsigned deadline_ms);

/* A loop's parts, for the handlers running on it. */
struct http_server *loop_server(struct loop *lp);
struct courier_client *loop_courier(struct loop *lp);
struct gen_engines *loop_engines(struct loop *lp);
/* The cluster's Redis connection (NULL without cluster), its keys' prefix
 * and how long a request may wait for it. */
struct rloop *loop_redis(struct loop *lp, const char **prefix, unsigned *wait_ms);
/* The shared token cache's keys (cluster.cache_key), or NULL. */
struct sharedcache *loop_sharedcache(struct loop *lp);
/* The loop's leases on the shared rate limits (cluster.rate_lease_ms), or NULL. */
struct ratelease *loop_leases(struct loop *lp);
struct lua_State *loop_json(struct loop *lp); /* cjson only: answers, error bodies, log lines */
void *loop_scratch(struct loop *lp);          /* routes.scratch_size bytes */

/* A connection of the loop was resumed: MHD must run before the loop waits. */
void loop_resumed(struct loop *lp);

/* Whether the server is draining (answers then close their connection). */
bool loop_draining(struct http_server *s);

/* A token request arrives / is over: the drain waits for them. */
void loop_request_begin(struct http_server *s);
void loop_request_end(struct http_server *s);

/* One more call waiting on Courier: 0, or -1 (not counted) once the drain
 * deadline has passed and no new call may start. */
int loop_upstream_begin(struct http_server *s);
void loop_upstream_end(struct http_server *s);

/* How many calls wait on Courier. */
unsigned loop_upstream_count(struct http_server *s);

/* The loops' figures for /metrics (valid while s runs). */
void loop_metrics_front(struct http_server *s, struct metrics_front *f);

#endif
