/*
 * http.c — the HTTP front on libmicrohttpd: routing and the probes.
 *
 * Owns the routes: the token routes (handed to the token pipeline,
 * token.c), /healthz, /readyz and /metrics, and the framing checks every
 * request passes before routing. The event loops, acceptor and listeners that
 * call these handlers are loop.c's; answers and the log line are reply.c's.
 * A token request goes: headers (route, tenant, media type, size) → body →
 * identity → rate → policy → envelope → suspend while the Courier client
 * works → resume → answer.
 *
 * It must never route on a decoded path (the path is compared as sent), never
 * read a body sent to a route that takes none, and never put anything secret
 * in an answer: tokens appear only as a short hash in the log.
 */
#include "http.h"

#include <microhttpd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cluster.h"
#include "config.h"
#include "gen.h"
#include "ident.h"
#include "loop.h"
#include "metrics.h"
#include "reply.h"
#include "token.h"

/* A tenant name in a token route: longer ones route nowhere (a tenant's
 * name is shorter, config.c's TENANT_NAME_MAX). */
#define ROUTE_TENANT_MAX 80

/* A framing flaw's error body. */
#define FLAW_BODY_MAX 160

/* ------------------------------------------------- what MHD lets through */

/*
 * libmicrohttpd 0.9.75 is lax where a proxy in front may read a request
 * differently (request smuggling): it takes the first of duplicate
 * Content-Length and Authorization headers, passes a bare CR inside a value
 * on, and waits for the end of a body in a transfer coding it does not know.
 * Every request is checked here before routing; a flawed one is answered 400
 * with Connection: close. A malformed Content-Length ("-1", "1x") never
 * reaches the broker: MHD answers it itself (see docs/http-api.md).
 */
struct header_scan {
	unsigned content_length, transfer_encoding, authorization;
	bool bad_value, bad_length, bad_coding, body;
};

static bool all_digits(const char *v)
{
	if (!*v)
		return false;
	for (; *v; v++)
		if (*v < '0' || *v > '9')
			return false;
	return true;
}

static enum MHD_Result scan_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	struct header_scan *hs = cls;

	(void)kind;
	if (!value)
		value = "";
	if (strpbrk(key, "\r\n") || strpbrk(value, "\r\n"))
		hs->bad_value = true;
	if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
		hs->content_length++;
		if (!all_digits(value))
			hs->bad_length = true;
		else if (strspn(value, "0") != strlen(value))
			hs->body = true;
	} else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
		hs->transfer_encoding++;
		hs->body = true;
		/* Only the one coding MHD decodes, alone. */
		if (strcasecmp(value, "chunked") != 0)
			hs->bad_coding = true;
	} else if (strcasecmp(key, MHD_HTTP_HEADER_AUTHORIZATION) == 0) {
		hs->authorization++;
	}
	return MHD_YES;
}

/* Why the request must be refused before routing, or NULL. *body: whether
 * it announces a body. */
static const char *request_flaw(struct MHD_Connection *conn, const char *url, bool *body)
{
	struct header_scan hs = {0};

	MHD_get_connection_values(conn, MHD_HEADER_KIND, scan_header, &hs);
	*body = hs.body;
	/* The path is as sent (keep_escaped): no escape may make a route. */
	if (strchr(url, '%'))
		return "percent-encoded bytes are not accepted in the path";
	if (hs.bad_value)
		return "a header holds a bare CR or LF";
	if (hs.content_length > 1)
		return "more than one Content-Length header";
	if (hs.bad_length)
		return "malformed Content-Length header";
	if (hs.transfer_encoding > 1 || hs.bad_coding)
		return "unsupported Transfer-Encoding: only chunked is accepted";
	if (hs.transfer_encoding && hs.content_length)
		return "both Transfer-Encoding and Content-Length";
	if (hs.authorization > 1)
		return "more than one Authorization header";
	return NULL;
}

/* --------------------------------------------------------------- routing */

/* Returns the tenant name of a token route, or NULL. */
static const char *token_route(const char *url, char *name, size_t len)
{
	static const char prefix[] = "/v1/tenants/";
	const char *p, *end;

	if (strcmp(url, "/v1/token") == 0) {
		snprintf(name, len, "default");
		return name;
	}
	if (strncmp(url, prefix, sizeof(prefix) - 1) != 0)
		return NULL;
	p = url + sizeof(prefix) - 1;
	end = strchr(p, '/');
	if (!end || end == p || strcmp(end, "/token") != 0 || (size_t)(end - p) >= len)
		return NULL;
	memcpy(name, p, (size_t)(end - p));
	name[end - p] = '\0';
	return name;
}

/* --------------------------------------------------------------- probes */

static bool is_probe(const char *url)
{
	return strcmp(url, "/healthz") == 0 || strcmp(url, "/readyz") == 0 || strcmp(url, "/metrics") == 0;
}

/* Ready: a generation serves, no drain, and every tenant's keys are loaded. */
static enum MHD_Result serve_readyz(struct http_server *s, struct MHD_Connection *conn)
{
	struct gen *g = gen_acquire();
	enum MHD_Result ret;
	bool ready = g && !loop_draining(s);

	for (size_t i = 0; ready && i < g->cfg->n_tenants; i++)
		ready = ident_ready(&g->cfg->tenants[i].auth);
	/* A cluster whose Redis is away is not a reason to stop serving: the
	 * body says so, the status stays 200. */
	if (ready && cluster_status() != CLUSTER_NONE)
		ret = reply_plain(conn, s, 200, "application/json",
		                  cluster_status() == CLUSTER_UP
		                      ? "{\"status\":\"ready\",\"cluster\":\"up\"}"
		                      : "{\"status\":\"ready\",\"cluster\":\"down\"}",
		                  NULL, NULL);
	else if (ready)
		ret = reply_plain(conn, s, 200, "application/json", "{\"status\":\"ready\"}", NULL, NULL);
	else
		ret = reply_plain(conn, s, 503, "application/json", "{\"status\":\"not ready\"}", NULL, NULL);
	gen_release(g);
	return ret;
}

static enum MHD_Result serve_metrics(struct http_server *s, struct MHD_Connection *conn)
{
	struct metrics_front front;
	size_t len = 0;
	char *text;
	enum MHD_Result ret;

	loop_metrics_front(s, &front);
	text = metrics_render_front(&front, &len);
	if (!text)
		return reply_plain(conn, s, 503, "text/plain", "out of memory\n", NULL, NULL);
	ret = reply_queue(conn, s, 200, "text/plain; version=0.0.4", text, len, NULL, NULL, NULL);
	free(text);
	return ret;
}

/* Every route but the token routes. flaw: why the request is refused, or NULL. */
static enum MHD_Result serve_other(struct http_server *s, struct MHD_Connection *conn, const char *url,
                                   const char *method, const char *flaw)
{
	bool get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
	char msg[FLAW_BODY_MAX];

	if (flaw) {
		snprintf(msg, sizeof(msg), "{\"error\":\"invalid_request\",\"message\":\"%s\"}", flaw);
		return reply_plain(conn, s, 400, "application/json", msg, MHD_HTTP_HEADER_CONNECTION,
		                   "close");
	}
	if (!is_probe(url))
		return reply_plain(conn, s, 404, "application/json",
		                   "{\"error\":\"not_found\",\"message\":\"no such path\"}", NULL, NULL);
	if (!get)
		return reply_plain(conn, s, 405, "application/json",
		                   "{\"error\":\"method_not_allowed\",\"message\":\"use GET\"}",
		                   MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	if (strcmp(url, "/healthz") == 0)
		return reply_plain(conn, s, 200, "application/json", "{\"status\":\"ok\"}", NULL, NULL);
	if (strcmp(url, "/readyz") == 0)
		return serve_readyz(s, conn);
	return serve_metrics(s, conn);
}

/* ------------------------------------------------------------ MHD's calls */

/* The request context of a route other than the token routes, between
 * MHD's first call and the one that answers. */
static const char other_route = 'o';

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
	struct loop *lp = cls;
	struct http_server *s = loop_server(lp);
	char name[ROUTE_TENANT_MAX];

	(void)version;
	if (!*con_cls) {
		bool body;
		const char *flaw = request_flaw(conn, url, &body);
		if (token_route(url, name, sizeof(name)))
			return token_begin(lp, conn, name, method, flaw, con_cls);
		/* MHD closes the connection after an answer queued before the
		 * request was read to its end: a request without a body is answered
		 * on the next call (at once), so the connection stays open for the
		 * requests pipelined behind it. Bodies sent to these routes are never
		 * read: answered now, and the connection closes. */
		if (!flaw && !body) {
			*con_cls = (void *)&other_route;
			return MHD_YES;
		}
		return serve_other(s, conn, url, method, flaw);
	}
	if (*con_cls == (void *)&other_route) {
		*con_cls = NULL;
		*upload_data_size = 0;
		return serve_other(s, conn, url, method, NULL);
	}
	return token_continue(*con_cls, upload_data, upload_data_size);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
	struct req *r = *con_cls;

	(void)cls;
	(void)conn;
	(void)toe;
	*con_cls = NULL;
	if (r && (void *)r != (void *)&other_route)
		token_end(r);
}

/* The admin listener: the probes and /metrics only (token routes and
 * anything else are 404 there). */
static enum MHD_Result on_admin_request(void *cls, struct MHD_Connection *conn, const char *url,
                                        const char *method, const char *version, const char *upload_data,
                                        size_t *upload_data_size, void **con_cls)
{
	(void)version;
	(void)upload_data;
	(void)upload_data_size;
	(void)con_cls;
	return serve_other(cls, conn, url, method, NULL);
}

/* --------------------------------------------------------------- the API */

struct http_server *http_start(const struct config *cfg, char *err, size_t errlen)
{
	const struct loop_routes routes = {
	    .on_request = on_request,
	    .on_completed = on_completed,
	    .on_admin_request = on_admin_request,
	    .scratch_size = token_scratch_size(),
	};

	return loop_server_start(cfg, &routes, err, errlen);
}

unsigned short http_port(struct http_server *s)
{
	return loop_server_port(s);
}

int http_drain_and_stop(struct http_server *s, unsigned deadline_ms)
{
	return loop_server_drain(s, deadline_ms);
}
