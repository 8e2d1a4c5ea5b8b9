/*
 * http.h — the HTTP front: routes, limits, statuses, and the request's life.
 *
 * The front parses and bounds what arrives, asks the engines (identity,
 * policy, envelope, Courier client) and answers. Engines never call back into
 * it, except the Courier client's completion callback, which only resumes a
 * suspended connection. Its files: http.c (routes and probes), token.c (the
 * token pipeline), reply.c (answers and the log line), loop.c (event loops,
 * acceptor, drain) with client.c, ipcap.c and listen.c.
 */
#ifndef BROKER_HTTP_H
#define BROKER_HTTP_H

#include <stddef.h>

struct config;
struct http_server;

/* Starts listening as cfg says (address, threads, limits): one event loop
 * per thread, each with its own Courier client. */
struct http_server *http_start(const struct config *cfg, char *err, size_t errlen);

/* The port it listens on (useful with port 0). */
unsigned short http_port(struct http_server *s);

/* Stops accepting, answers what is in flight (waiting up to deadline_ms,
 * then 503 for what still waits on Courier), and stops the server. Returns
 * 0, or -1 when a connection is still suspended about a second after the
 * deadline: the server is then left running (stopping it would be an API
 * violation) and the caller should exit without further cleanup. */
int http_drain_and_stop(struct http_server *s, unsigned deadline_ms);

#endif
