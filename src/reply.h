/*
 * reply.h — one token request's record, and how the front answers.
 *
 * Every error answer of the token routes is one of enum reply_answer: its
 * status and code come from one table (reply.c), the message from the
 * caller. Answers are built on the loop's JSON state, never on a policy
 * engine, and each one writes the request's log line.
 */
#ifndef BROKER_REPLY_H
#define BROKER_REPLY_H

#include <microhttpd.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "buf.h"
#include "courier.h"
#include "envelope.h"
#include "grantcache.h"
#include "ident.h"
#include "scope.h"

struct gen;
struct gen_engine;
struct http_server;
struct loop;
struct tenant;

enum req_state {
	RS_BODY,
	RS_WAITING,
	RS_DONE,
	RS_REDIS /* waiting on the cluster's Redis (rate limits, token cache) */
};

/* The longest X-Request-Id taken from a client (CONTRACT.md). */
#define REPLY_REQUEST_ID_MAX 128

/* One token request, from its first MHD call to on_completed. */
struct req {
	struct http_server *srv;
	struct loop *loop;
	struct MHD_Connection *conn;
	struct gen *gen;
	struct gen_engine *engine; /* gen's engine on this loop, pinned until decided */
	const struct tenant *tenant;
	const char *origin;      /* the Origin header, or NULL */
	const char *cors_origin; /* the tenant's listed origin equal to it, or NULL */
	enum req_state state;
	struct timespec start;
	char request_id[REPLY_REQUEST_ID_MAX + 1]; /* X-Request-Id: the client's if sane, else new */
	char trace_id[33];                         /* traceparent's trace id, or "" */

	struct buf body; /* capped at max_body_bytes once the request is routed */
	bool too_large;
	size_t discarded; /* bytes past the limit, counted and dropped */

	/* What the log line reports. */
	char user_id[SCOPE_USER_ID_MAX + 1];
	char subject[sizeof(((struct identity *)0)->subject)];
	const char *method;
	const char *decision; /* "allow", "deny", "error" or NULL */
	char reason[256];
	char client_ip[INET6_ADDRSTRLEN];

	/* The request as the policy saw it, for the audit log (inputs = true). */
	bool authenticated;
	long long now;
	char policy_ip[INET6_ADDRSTRLEN];
	char *audit_body, *audit_claims; /* JSON, or NULL */

	char *courier_body;
	char *policy_log; /* broker.log lines of the decision ("a\nb\n"), or NULL */
	char *decided_by; /* with an audit log: the frames to the deciding return ("f:1\ng:2\n"), or NULL */
	struct courier_job job;

	/* Identical grants (token.c): the grant's key, the flight this request
	 * leads (NULL when none), the next follower of a flight, and whether it
	 * waits on another request's Courier call. */
	struct grantcache_key gkey;
	struct flight *flight;
	struct req *flight_next;
	bool shared;

	/* Waiting on Redis (token.c): the pipeline kept meanwhile. */
	struct stage_wait *wait;

	/* Last and not zeroed at allocation (8 KiB): token_begin and
	 * envelope_apply set each field, the strings up to their NUL. */
	struct grant grant;
};

/* The error answers of the token routes (status and code in reply.c's table). */
enum reply_answer {
	REPLY_GO, /* no error: the request goes on */
	REPLY_INVALID_REQUEST,
	REPLY_UNAUTHENTICATED,
	REPLY_FORBIDDEN,
	REPLY_UNKNOWN_TENANT,
	REPLY_METHOD_NOT_ALLOWED,
	REPLY_PAYLOAD_TOO_LARGE,
	REPLY_UNSUPPORTED_MEDIA_TYPE,
	REPLY_RATE_LIMITED,
	REPLY_POLICY_ERROR,
	REPLY_UPSTREAM_ERROR,
	REPLY_UNAVAILABLE,
	REPLY_UPSTREAM_TIMEOUT,
	REPLY_UPSTREAM_UNAVAILABLE, /* the Courier circuit breaker is open */
	REPLY_USER_DENIED,     /* the kill switch or the cluster deny list: the user may not get tokens */
	REPLY_TENANT_DISABLED, /* the kill switch: the tenant has enabled = false */
};

/* The request's id: the client's X-Request-Id when it is 1-128 characters
 * of [A-Za-z0-9._-], else 32 new random hex digits. out: at least
 * REPLY_REQUEST_ID_MAX + 1 bytes. */
void reply_request_id(struct MHD_Connection *conn, char *out);

/* The trace id of a valid W3C traceparent header (32 lowercase hex digits,
 * not all zero) into out[33], or "" when none. */
void reply_trace_id(struct MHD_Connection *conn, char out[33]);

/* reply_queue for a token request: its X-Request-Id and CORS origin, and
 * X-Policy-Revision once the request was decided (r->decision set). */
enum MHD_Result reply_queue_req(struct req *r, int status, const char *ctype, const char *body, size_t len,
                                const char *extra_name, const char *extra_value);

/* Queues an answer (with an X-Request-Id of its own, reply_request_id): body (len bytes, copied) of type
 * ctype, no-store, one extra header if extra_name, CORS headers if cors_origin, and Connection: close while
 * the server drains. */
enum MHD_Result reply_queue(struct MHD_Connection *conn, struct http_server *s, int status, const char *ctype,
                            const char *body, size_t len, const char *extra_name, const char *extra_value,
                            const char *cors_origin);

/* A plain answer outside the token routes (body: a C string). */
enum MHD_Result reply_plain(struct MHD_Connection *conn, struct http_server *s, int status, const char *ctype,
                            const char *body, const char *extra_name, const char *extra_value);

/* {"error": code, "message": message} with a's status, the headers that
 * status calls for (and one extra if extra_name), and the log line; the
 * request is then done. */
enum MHD_Result reply_fail(struct req *r, enum reply_answer a, const char *message, const char *extra_name,
                           const char *extra_value);

/* Writes the request's log line (on the loop's JSON state) and counts it.
 * token (token_len bytes) appears as a short hash; upstream_ms < 0: none. */
void reply_log(struct req *r, int status, const char *error, const char *token, size_t token_len,
               double upstream_ms);

#endif
