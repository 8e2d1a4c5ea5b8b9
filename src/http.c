/*
 * http.c — the HTTP front on libmicrohttpd.
 *
 * Owns routing, request limits (body size counted for Content-Length and
 * chunked bodies alike), the JSON answers and the per-request log line. A
 * token request goes: headers (route, tenant, media type, size, rate) →
 * body → identity → policy → envelope → suspend while the Courier client
 * works → resume → answer.
 *
 * Threads: `threads` event loops, each owning one MHD daemon (external epoll
 * mode), one Courier client (libcurl multi), a small lua_State with only
 * cjson for answers and log lines, and the policy engines (gen_engines) of
 * the generations its requests began on, and one acceptor that hands
 * each new connection to the loop holding the fewest (keep-alive clients
 * stay where they land: a loop that drew more of them would be the
 * bottleneck). A request lives on one loop from its first byte to its answer:
 * the Courier call that suspends it runs on the same loop, whose completion
 * resumes it there, so no request is handed between threads. Nothing secret
 * is ever put in an answer or a log line: tokens appear only as a short hash.
 *
 * Floods: the acceptor caps the connections one address holds
 * (max_connections_per_ip); each loop closes connections whose request does
 * not arrive whole within request_timeout_ms, however slowly it trickles
 * (MHD's own timeout is an idle one, reset by every byte), by a sweep of two
 * deadline-ordered lists, never by per-byte work; MHD's warnings go through
 * the log's rate limit. With admin_listen, one more MHD daemon on its own
 * thread, socket and connection budget serves only the probes and /metrics.
 */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <lauxlib.h>
#include <limits.h>
#include <lua.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "courier.h"
#include "duration.h"
#include "envelope.h"
#include "gen.h"
#include "ident.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "policy.h"
#include "reqbody.h"
#include "scope.h"

#define MAX_HEADERS 64
#define HEADER_BUF  8192

/* The admin listener's budget: probes and scrapes, a few at a time. */
#define ADMIN_MAX_CONNECTIONS 32
#define ADMIN_TIMEOUT_S       10

/* What the drain asks of a loop (bits of loop.cmd). */
enum { CMD_ABORT = 1, CMD_STOP = 2 };

/* How many connections one client address holds (max_connections_per_ip). */
struct ip_count {
	unsigned char key[16]; /* IPv4 as ::ffff:a.b.c.d; IPv6 cut to its /64 */
	unsigned n;
	struct ip_count *next;
};

/* Shared by the acceptor (which counts up) and the loops (which count down
 * when MHD closes a connection): one lock, taken once per accept and close. */
struct ip_table {
	pthread_mutex_t lock;
	struct ip_count **buckets; /* NULL: no cap */
	size_t mask;
	unsigned cap;
	uint64_t seed;
};

/* Where a connection stands for the request deadline. */
enum phase {
	PH_NONE,      /* not watched: answered, suspended, cut, or no deadline set */
	PH_RECEIVING, /* a request is arriving: the first from accept, a later one from its request line */
	PH_IDLE,      /* between requests: the next request line is due within the idle timeout */
};

/*
 * A client connection's record from accept to close. The acceptor fills it
 * and hands it to a loop (the `handed` list); the loop gives the socket to
 * its daemon, and keeps the record as MHD's socket context until MHD closes
 * the connection. While watched, it sits on its loop's list for its phase.
 */
struct client {
	int fd; /* MHD's once added: never closed here */
	socklen_t addrlen;
	struct sockaddr_storage addr;
	struct ip_count *ip; /* the count it holds, or NULL */
	struct MHD_Connection *conn;
	enum phase phase;
	long long deadline_ms;
	struct client *prev, *next; /* the handed list (next only), then its phase's list */
};

/* Each deadline on a list is "now + the list's fixed delay" when pushed, so
 * a list is in deadline order and the sweep looks at its head only. */
struct client_list {
	struct client *head, *tail;
};

/*
 * One event loop: its thread, MHD daemon and Courier client, its JSON state
 * and its policy engines. The engines name their generation by id only: the
 * loop holds no reference, so an idle loop never keeps an old generation
 * (and its keys) alive: the generation is freed when its last request ends,
 * and an idle engine's config pointer may then dangle. It is never
 * dereferenced again: an engine is used only by a request that pinned it
 * and holds its generation, and policy_engine_free does not read the
 * config. Ids are never reused, unlike addresses.
 *
 * Only process() runs on an engine (the body and claims the policy reads,
 * and the decision). Every answer, error body and log line is built on the
 * loop's own JSON state, which no generation owns: answering never needs,
 * and never builds, a policy engine.
 */
struct loop {
	struct http_server *srv;
	struct MHD_Daemon *d;
	struct courier_client *cc;
	int epfd, wakefd; /* the loop's epoll set; wake-ups from the acceptor and the drain */
	atomic_int cmd;   /* CMD_* bits the loop has not acted on yet */
	bool resumed;     /* a connection was resumed: MHD must run before waiting */
	pthread_t thread;
	bool running;
	struct gen_engines engines;
	lua_State *json; /* cjson only: answers, error bodies, log lines */

	/* process()'s scratch (13 KiB, one request at a time on a loop). */
	struct header_set *hs;
	struct decision *dec;

	/* Connections: held by the daemon (counted by on_connection), and
	 * handed over by the acceptor (the list, under lock) but not yet added. */
	atomic_int live, pending;
	int limit; /* its share of max_connections */
	pthread_mutex_t lock;
	struct client *handed;

	/* The loop thread's alone. */
	struct client *adding;              /* the record MHD_add_connection is adding */
	struct client_list receiving, idle; /* PH_RECEIVING, PH_IDLE */
	long long request_ms, idle_ms;      /* their delays; request_ms 0: no deadline */
};

struct http_server {
	struct loop *loops;
	size_t n_loops;
	int listen_fd;
	pthread_t acceptor;
	bool accepting;
	atomic_bool stop_accept;
	size_t next_loop;    /* the acceptor's: where its search for the emptiest loop starts */
	atomic_int active;   /* token requests between arrival and completion */
	atomic_int upstream; /* of those, waiting on Courier */
	atomic_bool draining;
	atomic_bool stopping; /* drain deadline passed: no new Courier call may start */

	struct ip_table ips;
	atomic_ullong refused_per_ip; /* closed at accept: max_connections_per_ip */
	atomic_ullong cut_slow;       /* closed by the request deadline */

	struct MHD_Daemon *admin; /* admin_listen's, or NULL */
	int admin_fd;
};

enum req_state { RS_BODY, RS_WAITING, RS_DONE };

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

	char *body;
	size_t body_len, body_cap;
	bool too_large;
	size_t discarded; /* bytes past the limit, counted and dropped */

	/* What the log line reports. */
	char user_id[SCOPE_USER_ID_MAX + 1];
	char subject[257];
	const char *method;
	const char *decision; /* "allow", "deny", "error" or NULL */
	char reason[256];
	char client_ip[INET6_ADDRSTRLEN];

	char *courier_body;
	char *policy_log; /* broker.log lines of the decision ("a\nb\n"), or NULL */
	struct courier_job job;

	/* Last and not zeroed at allocation (8 KiB): begin_token and
	 * envelope_apply set each field, the strings up to their NUL. */
	struct grant grant;
};

/* -------------------------------------------------------------- answering */

static double elapsed_ms(const struct timespec *t0)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t0->tv_sec) * 1e3 + (double)(now.tv_nsec - t0->tv_nsec) / 1e6;
}

static enum MHD_Result queue(struct MHD_Connection *conn, struct http_server *s, int status,
                             const char *ctype, const char *body, size_t len, const char *extra_name,
                             const char *extra_value, const char *cors_origin)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;

	resp = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
	/* Tokens, and errors about them, must never sit in a cache. */
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	if (extra_name)
		MHD_add_response_header(resp, extra_name, extra_value);
	if (cors_origin) {
		/* Errors carry it too, so the frontend can read why. */
		MHD_add_response_header(resp, "Access-Control-Allow-Origin", cors_origin);
		MHD_add_response_header(resp, "Vary", "Origin");
	}
	if (s && atomic_load(&s->draining))
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
	ret = MHD_queue_response(conn, (unsigned)status, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* Writes the request's log line (on the loop's JSON state) and counts it. */
static void finish_log(struct req *r, int status, const char *error, const char *token, size_t token_len,
                       double upstream_ms)
{
	lua_State *L = r->loop->json;
	char ts[40], hash[13];
	int top;

	metrics_request(r->tenant ? r->tenant->name : NULL, status);
	top = lua_gettop(L);
	log_timestamp(ts, sizeof(ts));
	lua_createtable(L, 0, 20);
	lua_pushstring(L, ts);
	lua_setfield(L, -2, "time");
	lua_pushstring(L, "info");
	lua_setfield(L, -2, "level");
	lua_pushstring(L, "token_request");
	lua_setfield(L, -2, "event");
	if (r->tenant) {
		lua_pushstring(L, r->tenant->name);
		lua_setfield(L, -2, "tenant");
		lua_pushstring(L, r->tenant->policy_revision);
		lua_setfield(L, -2, "policy_revision");
	}
	if (r->user_id[0]) {
		lua_pushstring(L, r->user_id);
		lua_setfield(L, -2, "user");
	}
	if (r->method) {
		lua_pushstring(L, r->method);
		lua_setfield(L, -2, "auth");
	}
	if (r->subject[0]) {
		lua_pushstring(L, r->subject);
		lua_setfield(L, -2, "subject");
	}
	if (r->decision) {
		lua_pushstring(L, r->decision);
		lua_setfield(L, -2, "decision");
	}
	if (r->reason[0]) {
		lua_pushstring(L, r->reason);
		lua_setfield(L, -2, "reason");
	}
	if (r->grant.scope[0]) {
		lua_pushstring(L, r->grant.scope);
		lua_setfield(L, -2, "scope");
		lua_pushinteger(L, r->grant.expires_s);
		lua_setfield(L, -2, "expires_in");
		if (r->grant.capped) {
			lua_pushboolean(L, 1);
			lua_setfield(L, -2, "capped");
		}
	}
	lua_pushinteger(L, status);
	lua_setfield(L, -2, "status");
	if (error) {
		lua_pushstring(L, error);
		lua_setfield(L, -2, "error");
	}
	if (token) {
		log_token_hash(token, token_len, hash);
		lua_pushstring(L, hash);
		lua_setfield(L, -2, "token_sha256");
	}
	lua_pushnumber(L, (double)(long long)(elapsed_ms(&r->start) * 1000) / 1000);
	lua_setfield(L, -2, "latency_ms");
	if (upstream_ms >= 0) {
		lua_pushnumber(L, (double)(long long)(upstream_ms * 1000) / 1000);
		lua_setfield(L, -2, "upstream_ms");
	}
	if (r->client_ip[0]) {
		lua_pushstring(L, r->client_ip);
		lua_setfield(L, -2, "client_ip");
	}
	if (r->policy_log) {
		int n = 0;
		lua_createtable(L, 8, 0);
		for (const char *p = r->policy_log, *nl; (nl = strchr(p, '\n')); p = nl + 1) {
			lua_pushlstring(L, p, (size_t)(nl - p));
			lua_rawseti(L, -2, ++n);
		}
		lua_setfield(L, -2, "policy_log");
	}
	log_table(L, -1);
	lua_settop(L, top);
}

/* {"error": code, "message": message}, the log line, and the headers the
 * status calls for. Built on the loop's JSON state, whatever the generation. */
static enum MHD_Result fail(struct req *r, int status, const char *code, const char *message,
                            const char *extra_name, const char *extra_value)
{
	lua_State *L = r->loop->json;
	enum MHD_Result ret = MHD_NO;
	const char *json;
	size_t len = 0;
	int top = lua_gettop(L);
	char fallback[160];

	lua_createtable(L, 0, 2);
	lua_pushstring(L, code);
	lua_setfield(L, -2, "error");
	lua_pushstring(L, message);
	lua_setfield(L, -2, "message");
	json = json_encode(L, -1, &len);
	if (!json) {
		len = (size_t)snprintf(fallback, sizeof(fallback), "{\"error\":\"%s\"}", code);
		json = fallback;
	}
	if (status == 401) {
		extra_name = MHD_HTTP_HEADER_WWW_AUTHENTICATE;
		extra_value = "Bearer";
	}
	ret = queue(r->conn, r->srv, status, "application/json", json, len, extra_name, extra_value,
	            r->cors_origin);
	lua_settop(L, top);
	finish_log(r, status, code, NULL, 0, -1);
	r->state = RS_DONE;
	return ret;
}

/* A plain answer outside the token routes. */
static enum MHD_Result plain(struct MHD_Connection *conn, struct http_server *s, int status,
                             const char *ctype, const char *body, const char *extra_name,
                             const char *extra_value)
{
	return queue(conn, s, status, ctype, body, strlen(body), extra_name, extra_value, NULL);
}

/* ------------------------------------------------------ reading a request */

static const char *header(struct MHD_Connection *conn, const char *name)
{
	return MHD_lookup_connection_value(conn, MHD_HEADER_KIND, name);
}

static bool is_json_type(const char *ct)
{
	static const char want[] = "application/json";

	if (!ct || strncasecmp(ct, want, sizeof(want) - 1) != 0)
		return false;
	ct += sizeof(want) - 1;
	return *ct == '\0' || *ct == ';' || *ct == ' ' || *ct == '\t';
}

static void peer_ip(struct MHD_Connection *conn, char *out, size_t len)
{
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	const struct sockaddr *sa = ci ? ci->client_addr : NULL;

	out[0] = '\0';
	if (!sa)
		return;
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out,
		          (socklen_t)len);
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, out,
		          (socklen_t)len);
}

struct header_set {
	struct policy_header h[MAX_HEADERS];
	size_t n;
	char buf[HEADER_BUF];
	size_t used;
};

static enum MHD_Result collect_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	struct header_set *hs = cls;
	size_t klen = strlen(key);

	(void)kind;
	if (!value || strcasecmp(key, "authorization") == 0 || strcasecmp(key, "cookie") == 0 ||
	    strcasecmp(key, "proxy-authorization") == 0)
		return MHD_YES;
	if (hs->n >= MAX_HEADERS || hs->used + klen + 1 > sizeof(hs->buf))
		return MHD_NO;
	for (size_t i = 0; i < klen; i++) {
		char c = key[i];
		hs->buf[hs->used + i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
	}
	hs->buf[hs->used + klen] = '\0';
	hs->h[hs->n].name = hs->buf + hs->used;
	hs->h[hs->n].value = value;
	hs->n++;
	hs->used += klen + 1;
	return MHD_YES;
}

/* policy_request.headers_of: the request's headers, gathered into its loop's
 * scratch set when (and only when) a policy reads req.headers. */
static const struct policy_header *request_headers(void *ctx, size_t *n)
{
	struct req *r = ctx;
	struct header_set *hs = r->loop->hs;

	hs->n = hs->used = 0;
	MHD_get_connection_values(r->conn, MHD_HEADER_KIND, collect_header, hs);
	*n = hs->n;
	return hs->h;
}

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

/* MHD's unescaper for the path, replaced by one that keeps it as sent:
 * routing compares the raw path, so "%2F", "%78" or "%00" can never turn
 * into a route (request_flaw refuses any escape). Query strings, which no
 * route reads, are left undecoded too. */
static size_t keep_escaped(void *cls, struct MHD_Connection *conn, char *s)
{
	(void)cls;
	(void)conn;
	return strlen(s);
}

/* ------------------------------------------------------------ token flow */

static void on_courier_done(struct courier_job *job)
{
	struct req *r = job->arg;

	/* Runs on the request's loop: count the call as over (whether or not the
	 * client is still there to read the answer) and hand the connection back;
	 * the loop runs MHD before it waits again. */
	atomic_fetch_sub(&r->srv->upstream, 1);
	metrics_upstream(job->seconds, job->status);
	MHD_resume_connection(r->conn);
	r->loop->resumed = true;
}

/* ident's header lookup: the index-th value of a header, in the order received. */
struct nth_header {
	const char *name;
	unsigned want, seen;
	const char *found;
};

static enum MHD_Result nth_header_cb(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	struct nth_header *q = cls;

	(void)kind;
	if (strcasecmp(key, q->name) != 0)
		return MHD_YES;
	if (q->seen++ < q->want)
		return MHD_YES;
	q->found = value;
	return MHD_NO;
}

static const char *ident_header(void *ctx, const char *name, unsigned index)
{
	struct nth_header q = {.name = name, .want = index};

	MHD_get_connection_values(ctx, MHD_HEADER_KIND, nth_header_cb, &q);
	return q.found;
}

/* Decides the request on its generation's engine (pinned by begin_token),
 * then hands it to Courier or answers; unpins the engine either way. */
static enum MHD_Result process(struct req *r)
{
	struct http_server *s = r->srv;
	const struct tenant *t = r->tenant;
	struct policy_engine *e = r->engine ? r->engine->engine : NULL;
	struct ident_request irq;
	struct identity id;
	struct policy_request prq;
	char client_ip[INET6_ADDRSTRLEN];
	struct decision *dec = r->loop->dec;
	const char *msg = NULL;
	char err[512];
	int decided;
	lua_State *L;
	enum MHD_Result ret;
	double retry;
	int top, body;
	size_t blen, uid_len;
	const char *b, *uid;

	if (!e)
		return fail(r, 503, "unavailable", "the policy engine is not available", NULL, NULL);
	L = policy_engine_lua(e);
	top = lua_gettop(L);

	if (json_decode(L, r->body ? r->body : "", r->body_len) != 0 || lua_type(L, -1) != LUA_TTABLE) {
		ret = fail(r, 400, "invalid_request", "the body must be a JSON object", NULL, NULL);
		goto out;
	}
	body = lua_gettop(L);
	if (reqbody_check(L, body, &uid, &uid_len, &msg) != 0) {
		ret = fail(r, 400, "invalid_request", msg, NULL, NULL);
		goto out;
	}
	memcpy(r->user_id, uid, uid_len + 1);

	memset(&irq, 0, sizeof(irq));
	irq.authorization = header(r->conn, MHD_HTTP_HEADER_AUTHORIZATION);
	irq.peer_ip = r->client_ip;
	irq.now = (long long)time(NULL);
	irq.header = ident_header;
	irq.header_ctx = r->conn;
	if (ident_client_ip(&t->auth, &irq, client_ip, sizeof(client_ip)) != 0) {
		ret = fail(r, 400, "invalid_request", "too many X-Forwarded-For header lines", NULL, NULL);
		goto out;
	}
	if (ident_authenticate(L, &t->auth, &irq, &id, err, sizeof(err)) != 0) {
		snprintf(r->reason, sizeof(r->reason), "%.*s", (int)sizeof(r->reason) - 1, err);
		ret = fail(r, 401, "unauthenticated", "missing or invalid credential", NULL, NULL);
		goto out;
	}
	r->method = id.method;
	snprintf(r->subject, sizeof(r->subject), "%s", id.subject);
	/* Charged after authentication, so strangers cannot spend a tenant's
	 * budget. The requester is its subject, or its address when it has none. */
	{
		char who[300], after[32];
		int n = id.subject[0] ? snprintf(who, sizeof(who), "%s:%s", id.method, id.subject)
		                      : snprintf(who, sizeof(who), "ip:%s", client_ip);
		enum gen_rate_level lv = gen_rate_take(r->gen, t, who, n > 0 ? (size_t)n : 0, &retry);
		if (lv != GEN_RATE_OK) {
			metrics_rate_limited(lv == GEN_RATE_REQUESTER);
			snprintf(after, sizeof(after), "%.0f", retry < 1 ? 1 : retry);
			ret = fail(r, 429, "rate_limited",
			           lv == GEN_RATE_REQUESTER ? "too many token requests from this requester"
			                                    : "too many token requests for this tenant",
			           "Retry-After", after);
			goto out;
		}
	}

	/* dec is initialised by policy_decide: no need to zero 13 KiB per request. */
	memset(&prq, 0, sizeof(prq));
	prq.tenant = t;
	prq.user_id = r->user_id;
	prq.body_idx = body;
	prq.authenticated = id.authenticated;
	prq.method = id.method;
	prq.subject = id.subject;
	prq.claims_idx = id.claims_idx;
	prq.client_ip = client_ip;
	prq.origin = r->origin;
	prq.user_agent = header(r->conn, MHD_HTTP_HEADER_USER_AGENT);
	prq.headers_of = request_headers;
	prq.headers_ctx = r;
	prq.now = irq.now;

	decided = policy_decide(e, &prq, dec, err, sizeof(err));
	if (policy_decision_log(e)[0])
		r->policy_log = strdup(policy_decision_log(e)); /* the engine's copy lasts one decision */
	if (decided != 0) {
		r->decision = "error";
		snprintf(r->reason, sizeof(r->reason), "%.*s", (int)sizeof(r->reason) - 1, err);
		log_msg("error", "tenant %s: policy error: %s", t->name, err);
		ret = fail(r, 500, "policy_error", "the policy failed; no token was issued", NULL, NULL);
		goto out;
	}
	snprintf(r->reason, sizeof(r->reason), "%s", dec->reason);
	if (!dec->allow) {
		r->decision = "deny";
		ret =
		    fail(r, 403, "forbidden", dec->reason[0] ? dec->reason : "denied by policy", NULL, NULL);
		goto out;
	}
	if (envelope_apply(t, r->user_id, dec, &r->grant, err, sizeof(err)) != 0) {
		r->decision = "error";
		r->grant.scope[0] = '\0';
		snprintf(r->reason, sizeof(r->reason), "%.*s", (int)sizeof(r->reason) - 1, err);
		log_msg("error", "tenant %s: decision outside the envelope: %s", t->name, err);
		ret = fail(r, 500, "policy_error", "the policy's decision was refused; no token was issued",
		           NULL, NULL);
		goto out;
	}
	r->decision = "allow";

	if ((unsigned)atomic_load(&s->upstream) >= r->gen->cfg->max_inflight) {
		ret = fail(r, 503, "unavailable", "too many requests waiting on Courier", "Retry-After", "1");
		goto out;
	}
	b = courier_request_body(r->loop->json, &r->grant, &blen);
	if (!b || !(r->courier_body = malloc(blen + 1))) {
		if (b)
			lua_pop(r->loop->json, 1);
		ret = fail(r, 503, "unavailable", "out of memory", NULL, NULL);
		goto out;
	}
	memcpy(r->courier_body, b, blen + 1);
	lua_pop(r->loop->json, 1);

	r->job.url = r->gen->courier_url;
	r->job.api_key = &t->api_key;
	r->job.body = r->courier_body;
	r->job.body_len = blen;
	r->job.timeout_ms = r->gen->cfg->courier_timeout_ms;
	r->job.connect_timeout_ms = r->gen->cfg->courier_connect_timeout_ms;
	r->job.done = on_courier_done;
	r->job.arg = r;

	/* Counted before the stopping check (the drain sets stopping before it
	 * reads the count): either the drain sees this call, or it is refused. */
	atomic_fetch_add(&s->upstream, 1);
	if (atomic_load(&s->stopping)) {
		atomic_fetch_sub(&s->upstream, 1);
		ret = fail(r, 503, "unavailable", "shutting down", NULL, NULL);
		goto out;
	}
	/* The job cannot end before this handler returns (it ends only in
	 * courier_run, on this loop), so the order of the two is free. */
	if (courier_submit(r->loop->cc, &r->job) != 0) {
		atomic_fetch_sub(&s->upstream, 1);
		ret = fail(r, 503, "unavailable", "out of memory", NULL, NULL);
		goto out;
	}
	r->state = RS_WAITING;
	MHD_suspend_connection(r->conn);
	ret = MHD_YES;
out:
	lua_settop(L, top);
	gen_engine_unpin(&r->loop->engines, r->engine);
	r->engine = NULL;
	return ret;
}

/* Answers after Courier (or the timeout) is done. */
static enum MHD_Result complete(struct req *r)
{
	struct http_server *s = r->srv;
	struct courier_job *job = &r->job;
	lua_State *L = r->loop->json;
	double up_ms = job->seconds * 1e3;
	const char *token, *json;
	size_t tlen, jlen;
	long long exp;
	char when[40];
	enum MHD_Result ret;
	int top;

	top = lua_gettop(L);

	if (job->status == 0) {
		log_msg("warn", "tenant %s: Courier call failed: %s", r->tenant->name, job->error);
		if (job->timed_out)
			return fail(r, 504, "upstream_timeout", "Courier did not answer in time", NULL, NULL);
		if (job->aborted)
			return fail(r, 503, "unavailable", "shutting down", NULL, NULL);
		return fail(r, 502, "upstream_error", "Courier could not be reached", NULL, NULL);
	}
	if (job->status == 401 || job->status == 403) {
		log_msg("error",
		        "tenant %s: Courier refused the API key (HTTP %ld) with fingerprint %s: check the "
		        "key and "
		        "its environment",
		        r->tenant->name, job->status, r->tenant->api_key.fingerprint);
		return fail(r, 502, "upstream_error", "Courier refused the broker's credentials", NULL, NULL);
	}
	if (job->status != 200) {
		log_msg("warn", "tenant %s: Courier answered HTTP %ld", r->tenant->name, job->status);
		return fail(r, 502, "upstream_error", "Courier refused the call", NULL, NULL);
	}
	token = courier_read_token(L, job->resp, job->resp_len, &tlen, &exp);
	if (!token) {
		log_msg("warn", "tenant %s: Courier answered 200 without a usable token", r->tenant->name);
		return fail(r, 502, "upstream_error", "Courier answered something unusable", NULL, NULL);
	}
	{
		char why[160];
		if (courier_check_expiry(exp, (long long)time(NULL), r->grant.expires_s, why, sizeof(why)) !=
		    0) {
			log_msg("warn", "tenant %s: Courier's token does not match the grant: %s",
			        r->tenant->name, why);
			lua_settop(L, top);
			return fail(r, 502, "upstream_error", "Courier answered something unusable", NULL,
			            NULL);
		}
	}
	{
		time_t te = (time_t)exp;
		struct tm tm;
		gmtime_r(&te, &tm);
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	}
	lua_createtable(L, 0, 5);
	lua_pushvalue(L, -2);
	lua_setfield(L, -2, "token");
	lua_pushstring(L, r->user_id);
	lua_setfield(L, -2, "user_id");
	lua_pushstring(L, r->grant.scope);
	lua_setfield(L, -2, "scope");
	lua_pushinteger(L, r->grant.expires_s);
	lua_setfield(L, -2, "expires_in");
	lua_pushstring(L, when);
	lua_setfield(L, -2, "expires_at");
	json = json_encode(L, -1, &jlen);
	if (!json) {
		lua_settop(L, top);
		return fail(r, 503, "unavailable", "out of memory", NULL, NULL);
	}
	ret = queue(r->conn, s, 200, "application/json", json, jlen, "X-Policy-Revision",
	            r->tenant->policy_revision, r->cors_origin);
	finish_log(r, 200, NULL, token, tlen, up_ms);
	r->state = RS_DONE;
	lua_settop(L, top);
	return ret;
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

/* Appends each loop's connection count and the flood counters to the
 * metrics text (malloc'ed, of *len bytes); returns the new text, or NULL
 * (text freed). */
static char *append_loop_metrics(struct http_server *s, char *text, size_t *len)
{
	static const char head[] =
	    "# HELP broker_loop_connections Client connections each event loop holds.\n"
	    "# TYPE broker_loop_connections gauge\n";
	static const char flood[] =
	    "# HELP broker_connections_refused_total Client connections closed at accept: their address "
	    "held max_connections_per_ip.\n"
	    "# TYPE broker_connections_refused_total counter\n"
	    "broker_connections_refused_total %llu\n"
	    "# HELP broker_request_timeouts_total Client connections closed because a request did not "
	    "arrive whole within request_timeout_ms (or no request line within connection_timeout_s "
	    "after the last).\n"
	    "# TYPE broker_request_timeouts_total counter\n"
	    "broker_request_timeouts_total %llu\n"
	    "# HELP broker_log_suppressed_total Warning lines dropped by the log's rate limit.\n"
	    "# TYPE broker_log_suppressed_total counter\n"
	    "broker_log_suppressed_total %llu\n";
	size_t cap = *len + sizeof(head) + s->n_loops * 64 + sizeof(flood) + 3 * 20;
	char *p = realloc(text, cap);

	if (!p) {
		free(text);
		return NULL;
	}
	memcpy(p + *len, head, sizeof(head) - 1);
	*len += sizeof(head) - 1;
	for (size_t i = 0; i < s->n_loops; i++) {
		int n = snprintf(p + *len, cap - *len, "broker_loop_connections{loop=\"%zu\"} %d\n", i,
		                 atomic_load(&s->loops[i].live));
		if (n < 0 || (size_t)n >= cap - *len)
			break; /* cannot happen: 64 bytes a line are plenty */
		*len += (size_t)n;
	}
	{
		int n = snprintf(p + *len, cap - *len, flood, atomic_load(&s->refused_per_ip),
		                 atomic_load(&s->cut_slow), log_suppressed_total());
		if (n > 0 && (size_t)n < cap - *len)
			*len += (size_t)n;
	}
	return p;
}

static enum MHD_Result serve_other(struct http_server *s, struct MHD_Connection *conn, const char *url,
                                   const char *method, const char *flaw)
{
	bool get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
	char msg[160];

	if (flaw) {
		snprintf(msg, sizeof(msg), "{\"error\":\"invalid_request\",\"message\":\"%s\"}", flaw);
		return plain(conn, s, 400, "application/json", msg, MHD_HTTP_HEADER_CONNECTION, "close");
	}

	if (strcmp(url, "/healthz") == 0 || strcmp(url, "/readyz") == 0 || strcmp(url, "/metrics") == 0) {
		if (!get)
			return plain(conn, s, 405, "application/json",
			             "{\"error\":\"method_not_allowed\",\"message\":\"use GET\"}",
			             MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
		if (strcmp(url, "/healthz") == 0)
			return plain(conn, s, 200, "application/json", "{\"status\":\"ok\"}", NULL, NULL);
		if (strcmp(url, "/readyz") == 0) {
			struct gen *g = gen_acquire();
			enum MHD_Result ret;
			bool ready = g && !atomic_load(&s->draining);
			for (size_t i = 0; ready && i < g->cfg->n_tenants; i++)
				ready = ident_ready(&g->cfg->tenants[i].auth);
			if (ready)
				ret = plain(conn, s, 200, "application/json", "{\"status\":\"ready\"}", NULL,
				            NULL);
			else
				ret = plain(conn, s, 503, "application/json", "{\"status\":\"not ready\"}",
				            NULL, NULL);
			gen_release(g);
			return ret;
		} else {
			size_t len = 0;
			char *text = metrics_render(&len);
			enum MHD_Result ret;
			if (text)
				text = append_loop_metrics(s, text, &len);
			if (!text)
				return plain(conn, s, 503, "text/plain", "out of memory\n", NULL, NULL);
			ret = queue(conn, s, 200, "text/plain; version=0.0.4", text, len, NULL, NULL, NULL);
			free(text);
			return ret;
		}
	}
	return plain(conn, s, 404, "application/json",
	             "{\"error\":\"not_found\",\"message\":\"no such path\"}", NULL, NULL);
}

/* The tenant's configured origin equal to the request's Origin, or NULL. */
static const char *cors_match(const struct tenant *t, const char *origin)
{
	if (!origin)
		return NULL;
	for (size_t i = 0; i < t->n_cors_origins; i++)
		if (strcmp(t->cors_origins[i], origin) == 0)
			return t->cors_origins[i];
	return NULL;
}

/* A browser's CORS preflight for a token route. */
static enum MHD_Result preflight(struct req *r)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;

	if (!r->cors_origin)
		return fail(r, 403, "forbidden", "this origin may not ask for tokens", NULL, NULL);
	resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, "Access-Control-Allow-Origin", r->cors_origin);
	MHD_add_response_header(resp, "Access-Control-Allow-Methods", "POST");
	MHD_add_response_header(resp, "Access-Control-Allow-Headers", "Authorization, Content-Type");
	MHD_add_response_header(resp, "Access-Control-Max-Age", "600");
	MHD_add_response_header(resp, "Vary", "Origin");
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	ret = MHD_queue_response(r->conn, MHD_HTTP_NO_CONTENT, resp);
	MHD_destroy_response(resp);
	metrics_request(r->tenant->name, 204);
	r->state = RS_DONE;
	return ret;
}

/* The first call for a token route: everything that can be decided from the headers. */
static enum MHD_Result begin_token(struct loop *lp, struct MHD_Connection *conn, const char *name,
                                   const char *method, const char *flaw, void **con_cls)
{
	struct http_server *s = lp->srv;
	struct req *r = malloc(sizeof(*r));
	const char *cl;
	char msg[160];

	if (!r)
		return MHD_NO;
	memset(r, 0, offsetof(struct req, grant));
	r->grant.scope[0] = '\0';
	r->grant.expires_s = 0;
	r->grant.capped = false;
	r->grant.courier_expires[0] = '\0';
	r->srv = s;
	r->loop = lp;
	r->conn = conn;
	r->state = RS_BODY;
	clock_gettime(CLOCK_MONOTONIC, &r->start);
	peer_ip(conn, r->client_ip, sizeof(r->client_ip));
	*con_cls = r;
	atomic_fetch_add(&s->active, 1);
	metrics_inflight_add(1);

	r->gen = gen_acquire();
	if (flaw)
		return fail(r, 400, "invalid_request", flaw, MHD_HTTP_HEADER_CONNECTION, "close");
	if (atomic_load(&s->draining) || !r->gen)
		return fail(r, 503, "unavailable", "the broker is not serving", "Retry-After", "1");
	r->tenant = config_tenant(r->gen->cfg, name);
	if (!r->tenant)
		return fail(r, 404, "unknown_tenant", "no such tenant", NULL, NULL);
	r->origin = header(conn, "Origin");
	r->cors_origin = cors_match(r->tenant, r->origin);
	if (strcmp(method, MHD_HTTP_METHOD_OPTIONS) == 0)
		return preflight(r);
	if (strcmp(method, MHD_HTTP_METHOD_POST) != 0)
		return fail(r, 405, "method_not_allowed", "use POST", MHD_HTTP_HEADER_ALLOW, "POST");
	if (!is_json_type(header(conn, MHD_HTTP_HEADER_CONTENT_TYPE)))
		return fail(r, 415, "unsupported_media_type", "the body must be application/json", NULL,
		            NULL);
	cl = header(conn, MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (cl) {
		char *end;
		unsigned long long n = strtoull(cl, &end, 10);
		if (end == cl || *end || n > r->gen->cfg->max_body_bytes) {
			snprintf(msg, sizeof(msg), "the body is limited to %zu bytes",
			         r->gen->cfg->max_body_bytes);
			return fail(r, 413, "payload_too_large", msg, MHD_HTTP_HEADER_CONNECTION, "close");
		}
	}
	/* The request is decided by the generation it began on: its engine is
	 * pinned now, whatever reloads happen while the body arrives. */
	r->engine = gen_engine_pin(&lp->engines, r->gen);
	if (!r->engine)
		return fail(r, 503, "unavailable", "the policy engine is not available", NULL, NULL);
	return MHD_YES;
}

/* The request context of a route other than the token routes, between
 * MHD's first call and the one that answers. */
static const char other_route = 'o';

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
	struct loop *lp = cls;
	struct http_server *s = lp->srv;
	struct req *r = *con_cls;
	char name[80];

	(void)version;
	if (!r) {
		bool body;
		const char *flaw = request_flaw(conn, url, &body);
		if (token_route(url, name, sizeof(name)))
			return begin_token(lp, conn, name, method, flaw, con_cls);
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
	switch (r->state) {
	case RS_DONE:
		/* Answered early; discard whatever body still arrives. */
		*upload_data_size = 0;
		return MHD_YES;
	case RS_WAITING:
		return complete(r);
	case RS_BODY:
		break;
	}
	if (*upload_data_size) {
		size_t n = *upload_data_size, max = r->gen->cfg->max_body_bytes;
		*upload_data_size = 0;
		if (r->too_large || r->body_len + n > max) {
			/* MHD cannot answer mid-upload: count what arrives, answer 413 at
			 * its end, and close the connection once a client sends far more. */
			r->too_large = true;
			r->discarded += n;
			return r->discarded > 4 * max + 65536 ? MHD_NO : MHD_YES;
		}
		if (r->body_len + n + 1 > r->body_cap) {
			size_t cap = r->body_cap ? r->body_cap : 1024;
			while (cap < r->body_len + n + 1)
				cap *= 2;
			char *p = realloc(r->body, cap);
			if (!p)
				return MHD_NO;
			r->body = p;
			r->body_cap = cap;
		}
		memcpy(r->body + r->body_len, upload_data, n);
		r->body_len += n;
		r->body[r->body_len] = '\0';
		return MHD_YES;
	}
	if (r->too_large) {
		char msg[96];
		snprintf(msg, sizeof(msg), "the body is limited to %zu bytes", r->gen->cfg->max_body_bytes);
		return fail(r, 413, "payload_too_large", msg, MHD_HTTP_HEADER_CONNECTION, "close");
	}
	return process(r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
	struct http_server *s = ((struct loop *)cls)->srv;
	struct req *r = *con_cls;

	(void)conn;
	(void)toe;
	if (!r || *con_cls == (void *)&other_route) {
		*con_cls = NULL;
		return;
	}
	*con_cls = NULL;
	if (r->state != RS_DONE) {
		/* The client left before an answer (never while suspended: MHD does not
		 * notice, and every suspended request ends with Courier's call). */
		metrics_request(r->tenant ? r->tenant->name : NULL, 499);
	}
	gen_engine_unpin(&((struct loop *)cls)->engines, r->engine); /* never decided */
	courier_job_cleanup(&r->job);
	free(r->courier_body);
	free(r->policy_log);
	free(r->body);
	gen_release(r->gen);
	free(r);
	atomic_fetch_sub(&s->active, 1);
	metrics_inflight_add(-1);
}

/* MHD's warnings ("closed by remote side with incomplete request", ...):
 * a client causes one per connection it drops, so they are rate-limited. */
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[512];

	(void)cls;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	msg[strcspn(msg, "\n")] = '\0';
	log_warn_limited("http: %s", msg);
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
	if (strcmp(url, "/healthz") != 0 && strcmp(url, "/readyz") != 0 && strcmp(url, "/metrics") != 0)
		return plain(conn, cls, 404, "application/json",
		             "{\"error\":\"not_found\",\"message\":\"no such path\"}", NULL, NULL);
	return serve_other(cls, conn, url, method, NULL);
}

/* ------------------------------------------------------- per-IP counts */

static void ip_key(const struct sockaddr_storage *ss, unsigned char key[16])
{
	memset(key, 0, 16);
	if (ss->ss_family == AF_INET) {
		key[10] = key[11] = 0xff;
		memcpy(key + 12, &((const struct sockaddr_in *)(const void *)ss)->sin_addr, 4);
	} else if (ss->ss_family == AF_INET6) {
		/* A /64 is one subscriber's block: counting its addresses one by
		 * one would let a single host hold the whole server. */
		memcpy(key, &((const struct sockaddr_in6 *)(const void *)ss)->sin6_addr, 8);
	}
}

/* Keyed with a random seed, so chosen addresses cannot pile into one chain. */
static size_t ip_hash(const struct ip_table *t, const unsigned char key[16])
{
	uint64_t a, b, h;

	memcpy(&a, key, 8);
	memcpy(&b, key + 8, 8);
	h = (a ^ t->seed) * 0x9E3779B97F4A7C15ull;
	h ^= h >> 29;
	h = (h + b) * 0xBF58476D1CE4E5B9ull;
	h ^= h >> 32;
	return (size_t)h & t->mask;
}

static int ip_table_init(struct ip_table *t, unsigned cap, unsigned max_connections)
{
	size_t n = 64;

	pthread_mutex_init(&t->lock, NULL);
	t->cap = cap;
	if (!cap)
		return 0;
	while (n < max_connections)
		n *= 2;
	t->buckets = calloc(n, sizeof(*t->buckets));
	if (!t->buckets)
		return -1;
	t->mask = n - 1;
	if (getrandom(&t->seed, sizeof(t->seed), GRND_NONBLOCK) != (ssize_t)sizeof(t->seed))
		t->seed = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)t;
	return 0;
}

static void ip_table_free(struct ip_table *t)
{
	for (size_t i = 0; t->buckets && i <= t->mask; i++) {
		while (t->buckets[i]) {
			struct ip_count *c = t->buckets[i];
			t->buckets[i] = c->next;
			free(c);
		}
	}
	free(t->buckets);
	t->buckets = NULL;
	pthread_mutex_destroy(&t->lock);
}

/* Counts one more connection from ss: its count, or NULL when the address
 * already holds cap (or memory ran out: refused too). */
static struct ip_count *ip_take(struct ip_table *t, const struct sockaddr_storage *ss)
{
	unsigned char key[16];
	struct ip_count *c;
	size_t b;

	ip_key(ss, key);
	b = ip_hash(t, key);
	pthread_mutex_lock(&t->lock);
	for (c = t->buckets[b]; c && memcmp(c->key, key, 16) != 0; c = c->next)
		;
	if (!c && (c = calloc(1, sizeof(*c)))) {
		memcpy(c->key, key, 16);
		c->next = t->buckets[b];
		t->buckets[b] = c;
	}
	if (c && c->n >= t->cap)
		c = NULL;
	else if (c)
		c->n++;
	pthread_mutex_unlock(&t->lock);
	return c;
}

static void ip_release(struct ip_table *t, struct ip_count *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&t->lock);
	if (--c->n == 0) {
		struct ip_count **pp = &t->buckets[ip_hash(t, c->key)];
		while (*pp != c)
			pp = &(*pp)->next;
		*pp = c->next;
		free(c);
	}
	pthread_mutex_unlock(&t->lock);
}

static void addr_text(const struct sockaddr_storage *ss, char *out, size_t len)
{
	const void *a = ss->ss_family == AF_INET6
	                    ? (const void *)&((const struct sockaddr_in6 *)(const void *)ss)->sin6_addr
	                    : (const void *)&((const struct sockaddr_in *)(const void *)ss)->sin_addr;

	if (!inet_ntop(ss->ss_family, a, out, (socklen_t)len))
		snprintf(out, len, "?");
}

/* ---------------------------------------------------- request deadlines */

static long long mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct client_list *phase_list(struct loop *lp, enum phase ph)
{
	return ph == PH_RECEIVING ? &lp->receiving : ph == PH_IDLE ? &lp->idle : NULL;
}

/* Moves c to the tail of ph's list (none for PH_NONE), due delay_ms from now. */
static void set_phase(struct loop *lp, struct client *c, enum phase ph, long long delay_ms)
{
	struct client_list *l = phase_list(lp, c->phase);

	if (l) {
		if (c->prev)
			c->prev->next = c->next;
		else
			l->head = c->next;
		if (c->next)
			c->next->prev = c->prev;
		else
			l->tail = c->prev;
	}
	c->prev = c->next = NULL;
	c->phase = ph;
	l = phase_list(lp, ph);
	if (!l)
		return;
	c->deadline_ms = mono_ms() + delay_ms;
	c->prev = l->tail;
	if (l->tail)
		l->tail->next = c;
	else
		l->head = c;
	l->tail = c;
}

static struct client *client_of(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

	return ci ? ci->socket_context : NULL;
}

/* Unwatches c, gives its per-IP count back and frees it (not its socket). */
static void client_free(struct loop *lp, struct client *c)
{
	set_phase(lp, c, PH_NONE, 0);
	ip_release(&lp->srv->ips, c->ip);
	free(c);
}

/* Called when a request line has been read. A later request on a kept-alive
 * connection starts its own deadline now (the first one's started at
 * accept, so trickling the first request line gains nothing). */
static void *on_request_line(void *cls, const char *uri, struct MHD_Connection *conn)
{
	struct loop *lp = cls;
	struct client *c = client_of(conn);

	(void)uri;
	if (c && c->phase == PH_IDLE)
		set_phase(lp, c, PH_RECEIVING, lp->request_ms);
	return NULL; /* con_cls stays NULL: on_request knows its first call by that */
}

/* A request is over (answered, or the client left): the connection is idle
 * until the next request line, which must come within the idle timeout. */
static void on_request_done(void *cls, struct MHD_Connection *conn, void **con_cls,
                            enum MHD_RequestTerminationCode toe)
{
	struct loop *lp = cls;
	struct client *c = client_of(conn);

	if (c && lp->request_ms)
		set_phase(lp, c, PH_IDLE, lp->idle_ms);
	on_completed(cls, conn, con_cls, toe);
}

/* Done receiving: suspended on Courier (its own deadline) or answered. */
static bool past_receiving(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci;

	ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_SUSPENDED);
	if (ci && ci->suspended == MHD_YES)
		return true;
	return MHD_get_connection_info(conn, MHD_CONNECTION_INFO_HTTP_STATUS) != NULL;
}

/* Closes a connection under MHD's feet the safe way: shutting the socket
 * down makes MHD read its end and close it on this loop, as if the client
 * had left. */
static void cut(struct loop *lp, struct client *c, const char *why)
{
	char ip[INET6_ADDRSTRLEN];

	shutdown(c->fd, SHUT_RDWR);
	atomic_fetch_add(&lp->srv->cut_slow, 1);
	addr_text(&c->addr, ip, sizeof(ip));
	log_warn_limited("http: closed a connection from %s: %s", ip, why);
}

/* Cuts the connections past their deadline; returns the milliseconds until
 * the next deadline, or -1 when none is watched. Looks at list heads only. */
static long long sweep(struct loop *lp)
{
	struct client *c;
	long long now, next = -1;

	if (!lp->receiving.head && !lp->idle.head)
		return -1;
	now = mono_ms();
	while ((c = lp->receiving.head) && c->deadline_ms <= now) {
		set_phase(lp, c, PH_NONE, 0);
		if (!past_receiving(c->conn))
			cut(lp, c, "its request did not arrive within request_timeout_ms");
	}
	while ((c = lp->idle.head) && c->deadline_ms <= now) {
		set_phase(lp, c, PH_NONE, 0);
		cut(lp, c, "no request line within connection_timeout_s of the last request");
	}
	if (lp->receiving.head)
		next = lp->receiving.head->deadline_ms - now;
	if (lp->idle.head && (next < 0 || lp->idle.head->deadline_ms - now < next))
		next = lp->idle.head->deadline_ms - now;
	return next;
}

/* ------------------------------------------------------------- the loops */

/* MHD's connection notifications: the loop's count of live connections,
 * and the connection's record (MHD calls STARTED inside MHD_add_connection,
 * and CLOSED exactly once after it). */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
	struct loop *lp = cls;
	struct client *c;

	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		atomic_fetch_add(&lp->live, 1);
		c = lp->adding;
		lp->adding = NULL;
		*socket_context = c;
		if (c) {
			c->conn = conn;
			if (lp->request_ms)
				set_phase(lp, c, PH_RECEIVING, lp->request_ms);
		}
		return;
	}
	atomic_fetch_sub(&lp->live, 1);
	c = *socket_context;
	*socket_context = NULL;
	if (c)
		client_free(lp, c);
}

/* Gives the connections the acceptor handed over to the loop's daemon. */
static void take_handed(struct loop *lp)
{
	struct client *c;

	pthread_mutex_lock(&lp->lock);
	c = lp->handed;
	lp->handed = NULL;
	pthread_mutex_unlock(&lp->lock);
	while (c) {
		struct client *next = c->next;
		c->next = NULL;
		/* On failure MHD closes the socket itself; a record on_connection
		 * did not take is not MHD's. Uncounted as pending only after
		 * on_connection counted it as live: the acceptor may see a loop
		 * fuller than it is, never emptier. */
		lp->adding = c;
		MHD_add_connection(lp->d, c->fd, (const struct sockaddr *)&c->addr, c->addrlen);
		if (lp->adding == c) {
			lp->adding = NULL;
			client_free(lp, c);
		}
		atomic_fetch_sub(&lp->pending, 1);
		c = next;
	}
}

/* The loop's thread: waits on MHD's epoll set, the Courier client's and the
 * drain's wake-ups; runs whichever is ready. */
static void *loop_run(void *arg)
{
	struct loop *lp = arg;
	struct epoll_event evs[4];
	bool looked = false;

	log_batch(1);
	for (;;) {
		MHD_UNSIGNED_LONG_LONG mt;
		bool mhd_ready = false, courier_ready = false;
		int timeout = -1, n = 0, cmd;
		long long due = sweep(lp);

		if (MHD_get_timeout(lp->d, &mt) == MHD_YES)
			timeout = mt > INT_MAX ? INT_MAX : (int)mt;
		if (due >= 0 && (timeout < 0 || due < timeout))
			timeout = (int)due;
		/* Suppressed warnings are reported within about a second. */
		if (log_limited_tick() && (timeout < 0 || timeout > 1000))
			timeout = 1000;
		if (lp->resumed || courier_due(lp->cc))
			timeout = 0;
		/* Work is pending (MHD's own ready list, a resumed connection, a
		 * call to start): do it without asking epoll first, but ask every
		 * other turn, so that the other sources are never starved. */
		if (timeout != 0 || looked)
			n = epoll_wait(lp->epfd, evs, 4, timeout);
		looked = timeout == 0 && !looked;
		if (n == 0 && timeout >= 0)
			mhd_ready = true; /* a connection's timeout, or work already pending */
		for (int i = 0; i < n; i++) {
			if (evs[i].data.ptr == lp->cc) {
				courier_ready = true;
			} else if (evs[i].data.ptr == lp->d) {
				mhd_ready = true;
			} else {
				uint64_t v;
				ssize_t r = read(lp->wakefd, &v, sizeof(v));
				(void)r;
				take_handed(lp);
				mhd_ready = true; /* a new connection may have sent already */
			}
		}
		cmd = atomic_exchange(&lp->cmd, 0);
		if (cmd & CMD_STOP)
			break;
		if (cmd & CMD_ABORT)
			courier_abort_all(lp->cc);
		if (courier_ready || courier_due(lp->cc))
			courier_run(lp->cc, courier_ready);
		if (mhd_ready || lp->resumed) {
			lp->resumed = false;
			MHD_run(lp->d);
		}
		/* Calls MHD just started: send them now, not after another wait. */
		if (courier_due(lp->cc))
			courier_run(lp->cc, false);
		log_flush(); /* this turn's lines: one write, before waiting */
	}
	log_batch(0);
	return NULL;
}

static void loop_wake(struct loop *lp)
{
	uint64_t one = 1;
	ssize_t n = write(lp->wakefd, &one, sizeof(one));

	(void)n;
}

static void loop_tell(struct loop *lp, int cmd)
{
	atomic_fetch_or(&lp->cmd, cmd);
	loop_wake(lp);
}

/* The connections a loop holds or was handed. */
static int loop_load(struct loop *lp)
{
	return atomic_load(&lp->live) + atomic_load(&lp->pending);
}

/* The loop with the fewest connections, held or handed over, or NULL when
 * every loop holds its share of max_connections. Ties go round: a pick
 * (take) moves the search's start on; a look does not. */
static struct loop *emptiest(struct http_server *s, bool take)
{
	struct loop *best = NULL;
	int least = INT_MAX;

	for (size_t k = 0; k < s->n_loops; k++) {
		struct loop *lp = &s->loops[(s->next_loop + k) % s->n_loops];
		int load = loop_load(lp);
		if (load < lp->limit && load < least) {
			least = load;
			best = lp;
		}
	}
	if (take)
		s->next_loop = (s->next_loop + 1) % s->n_loops;
	return best;
}

/* The acceptor's thread: blocks in accept until the drain shuts the
 * listening socket down, handing each connection to the emptiest loop. */
static void *accept_run(void *arg)
{
	struct http_server *s = arg;
	bool warned = false;

	while (!atomic_load(&s->stop_accept)) {
		struct loop *lp;
		struct client *h;
		bool was_empty;
		int fd;

		/* Every loop full: new connections wait in the kernel's backlog
		 * until one closes, as when MHD accepts by itself. */
		if (!emptiest(s, false) || !(h = malloc(sizeof(*h)))) {
			usleep(10000);
			continue;
		}
		h->addrlen = sizeof(h->addr);
		fd = accept4(s->listen_fd, (struct sockaddr *)&h->addr, &h->addrlen,
		             SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			int e = errno;
			free(h);
			if (e == EINTR || e == ECONNABORTED || e == EPROTO)
				continue;
			if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
				/* Out of descriptors or memory: let connections close. */
				if (!warned)
					log_msg("warn", "http: cannot accept connections: %s", strerror(e));
				warned = true;
				usleep(10000);
				continue;
			}
			break; /* shut down by the drain (EINVAL), or unusable */
		}
		warned = false;
		memset((char *)h + offsetof(struct client, ip), 0, sizeof(*h) - offsetof(struct client, ip));
		h->fd = fd;
		if (s->ips.cap && !(h->ip = ip_take(&s->ips, &h->addr))) {
			char ip[INET6_ADDRSTRLEN];
			addr_text(&h->addr, ip, sizeof(ip));
			close(fd);
			free(h);
			atomic_fetch_add(&s->refused_per_ip, 1);
			log_warn_limited(
			    "http: refused a connection from %s: it holds max_connections_per_ip "
			    "(%u)",
			    ip, s->ips.cap);
			continue;
		}
		/* Usually a loop has room (loads only fall while accept waits, but
		 * for a connection being counted twice for a moment): else the
		 * connection waits here, as it would in the backlog. */
		while (!(lp = emptiest(s, true)) && !atomic_load(&s->stop_accept))
			usleep(1000);
		if (!lp) {
			close(fd);
			ip_release(&s->ips, h->ip);
			free(h);
			break;
		}
		atomic_fetch_add(&lp->pending, 1);
		pthread_mutex_lock(&lp->lock);
		was_empty = lp->handed == NULL;
		h->next = lp->handed;
		lp->handed = h;
		pthread_mutex_unlock(&lp->lock);
		/* A list that was not empty already has a wake-up pending. */
		if (was_empty)
			loop_wake(lp);
	}
	return NULL;
}

/* Stops accepting (connections already handed over are served). */
static void stop_accepting(struct http_server *s)
{
	if (s->accepting) {
		atomic_store(&s->stop_accept, true);
		shutdown(s->listen_fd, SHUT_RDWR); /* wakes accept with EINVAL */
		pthread_join(s->acceptor, NULL);
		s->accepting = false;
	}
	if (s->listen_fd >= 0) {
		close(s->listen_fd);
		s->listen_fd = -1;
	}
}

/* Stops the loop's thread (if it runs) and frees what it owns. */
static void loop_free(struct loop *lp)
{
	if (lp->running) {
		loop_tell(lp, CMD_STOP);
		pthread_join(lp->thread, NULL);
		lp->running = false;
	}
	while (lp->handed) {
		struct client *c = lp->handed;
		lp->handed = c->next;
		close(c->fd);
		client_free(lp, c);
	}
	/* Closes the loop's connections: their on_completed runs here. */
	if (lp->d)
		MHD_stop_daemon(lp->d);
	courier_client_free(lp->cc);
	gen_engines_free(&lp->engines);
	if (lp->json)
		lua_close(lp->json);
	if (lp->epfd >= 0)
		close(lp->epfd);
	if (lp->wakefd >= 0)
		close(lp->wakefd);
	pthread_mutex_destroy(&lp->lock);
	free(lp->hs);
	free(lp->dec);
}

static void http_free(struct http_server *s)
{
	/* First: its probes read the loops. */
	if (s->admin)
		MHD_stop_daemon(s->admin);
	stop_accepting(s);
	for (size_t i = 0; i < s->n_loops; i++)
		loop_free(&s->loops[i]);
	/* Last: closing the loops' connections gave their counts back. */
	ip_table_free(&s->ips);
	free(s->loops);
	free(s);
}

static int watch(int epfd, int fd, void *tag)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = tag};

	return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

/* Sets up loop i and starts its thread. */
static int loop_start(struct http_server *s, size_t i, const struct config *cfg, unsigned flags, char *err,
                      size_t errlen)
{
	struct loop *lp = &s->loops[i];
	size_t n = s->n_loops;
	/* Shares of the connection limits, as MHD's own thread pool splits them. */
	unsigned conns = (unsigned)(cfg->max_connections / n + (i < cfg->max_connections % n));
	unsigned upstream = (unsigned)(cfg->courier_max_connections / n);
	const union MHD_DaemonInfo *di;
	char name[16];

	lp->limit = conns ? (int)conns : 1;
	lp->request_ms = cfg->request_timeout_ms;
	/* A second past MHD's own idle timeout: an idle connection is gone by
	 * then, so what is left trickles a request line. */
	lp->idle_ms = (long long)cfg->connection_timeout_s * 1000 + 1000;

	lp->hs = malloc(sizeof(*lp->hs));
	lp->dec = malloc(sizeof(*lp->dec));
	lp->json = luaL_newstate();
	if (lp->json && json_open(lp->json) != 0) {
		lua_close(lp->json);
		lp->json = NULL;
	}
	if (!lp->hs || !lp->dec || !lp->json) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	lp->cc = courier_client_new(upstream ? upstream : 1, err, errlen);
	if (!lp->cc)
		return -1;
	lp->d = MHD_start_daemon(
	    flags, 0, NULL, NULL, on_request, lp, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
	    MHD_OPTION_UNESCAPE_CALLBACK, keep_escaped, NULL, MHD_OPTION_CONNECTION_TIMEOUT,
	    (unsigned)cfg->connection_timeout_s, MHD_OPTION_CONNECTION_LIMIT, (unsigned)lp->limit,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)32 * 1024, MHD_OPTION_NOTIFY_COMPLETED,
	    on_request_done, lp, MHD_OPTION_NOTIFY_CONNECTION, on_connection, lp, MHD_OPTION_URI_LOG_CALLBACK,
	    on_request_line, lp, MHD_OPTION_END);
	if (!lp->d) {
		snprintf(err, errlen, "cannot start the HTTP server");
		return -1;
	}
	di = MHD_get_daemon_info(lp->d, MHD_DAEMON_INFO_EPOLL_FD);
	lp->epfd = epoll_create1(EPOLL_CLOEXEC);
	lp->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (!di || lp->epfd < 0 || lp->wakefd < 0 || watch(lp->epfd, di->epoll_fd, lp->d) != 0 ||
	    watch(lp->epfd, courier_fd(lp->cc), lp->cc) != 0 ||
	    watch(lp->epfd, lp->wakefd, &lp->wakefd) != 0) {
		snprintf(err, errlen, "cannot set up the HTTP event loop");
		return -1;
	}
	if (pthread_create(&lp->thread, NULL, loop_run, lp) != 0) {
		snprintf(err, errlen, "cannot start the HTTP threads");
		return -1;
	}
	snprintf(name, sizeof(name), "broker-loop-%zu", i);
	pthread_setname_np(lp->thread, name);
	lp->running = true;
	return 0;
}

/* host (an IP address, or localhost) and port as a socket address;
 * returns its length, or 0 when host is not an address. */
static socklen_t socket_address(const char *host, unsigned short port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (strcmp(host, "localhost") == 0)
		host = "127.0.0.1";
	if (inet_pton(AF_INET, host, &((struct sockaddr_in *)ss)->sin_addr) == 1) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		return sizeof(*sin);
	}
	if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)ss)->sin6_addr) == 1) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		return sizeof(*sin6);
	}
	return 0;
}

static unsigned short socket_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
		return 0;
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* A listening socket (blocking: only the acceptor, or MHD's admin thread, uses it). */
static int listen_on(const char *host, unsigned short port, const struct sockaddr_storage *ss, socklen_t sl,
                     char *err, size_t errlen)
{
	int one = 1;
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0 &&
	    (ss->ss_family != AF_INET6 ||
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) == 0) &&
	    bind(fd, (const struct sockaddr *)ss, sl) == 0 && listen(fd, SOMAXCONN) == 0)
		return fd;
	snprintf(err, errlen, "cannot listen on %s:%u: %s", host, port, strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}

/* The admin listener: MHD's own thread, socket and small connection budget,
 * so that no number of client connections can starve the probes. */
static int admin_start(struct http_server *s, const struct config *cfg, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t sl = socket_address(cfg->admin_host, cfg->admin_port, &ss);
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG;

	if (!sl) {
		snprintf(err, errlen, "admin_listen: %s is not an IP address (or localhost)",
		         cfg->admin_host);
		return -1;
	}
	if (ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	s->admin_fd = listen_on(cfg->admin_host, cfg->admin_port, &ss, sl, err, errlen);
	if (s->admin_fd < 0)
		return -1;
	/* MHD owns the socket from here (and closes it when stopped). */
	s->admin =
	    MHD_start_daemon(flags, 0, NULL, NULL, on_admin_request, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log,
	                     NULL, MHD_OPTION_UNESCAPE_CALLBACK, keep_escaped, NULL, MHD_OPTION_LISTEN_SOCKET,
	                     s->admin_fd, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)ADMIN_TIMEOUT_S,
	                     MHD_OPTION_CONNECTION_LIMIT, (unsigned)ADMIN_MAX_CONNECTIONS,
	                     MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)16 * 1024, MHD_OPTION_END);
	if (!s->admin) {
		close(s->admin_fd);
		s->admin_fd = -1;
		snprintf(err, errlen, "cannot start the admin listener");
		return -1;
	}
	log_msg("info", "admin listener on %s:%u: /healthz /readyz /metrics", cfg->admin_host,
	        socket_port(s->admin_fd));
	return 0;
}

struct http_server *http_start(const struct config *cfg, char *err, size_t errlen)
{
	struct http_server *s = calloc(1, sizeof(*s));
	struct sockaddr_storage ss;
	socklen_t sl;
	unsigned flags =
	    MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG | MHD_USE_NO_LISTEN_SOCKET;

	if (!s) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	sl = socket_address(cfg->listen_host, cfg->listen_port, &ss);
	if (!sl) {
		snprintf(err, errlen, "listen: %s is not an IP address (or localhost)", cfg->listen_host);
		free(s);
		return NULL;
	}
	if (ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	s->n_loops = cfg->threads > 0 ? cfg->threads : 1;
	s->listen_fd = -1;
	s->admin_fd = -1;
	s->loops = calloc(s->n_loops, sizeof(*s->loops));
	if (!s->loops || ip_table_init(&s->ips, cfg->max_connections_per_ip, cfg->max_connections) != 0) {
		snprintf(err, errlen, "out of memory");
		if (s->loops)
			ip_table_free(&s->ips);
		free(s->loops);
		free(s);
		return NULL;
	}
	for (size_t i = 0; i < s->n_loops; i++) {
		s->loops[i].srv = s;
		s->loops[i].epfd = s->loops[i].wakefd = -1;
		pthread_mutex_init(&s->loops[i].lock, NULL);
	}
	s->listen_fd = listen_on(cfg->listen_host, cfg->listen_port, &ss, sl, err, errlen);
	if (s->listen_fd < 0 || (cfg->admin_host && admin_start(s, cfg, err, errlen) != 0)) {
		http_free(s);
		return NULL;
	}
	for (size_t i = 0; i < s->n_loops; i++) {
		if (loop_start(s, i, cfg, flags, err, errlen) != 0) {
			http_free(s);
			return NULL;
		}
	}
	if (pthread_create(&s->acceptor, NULL, accept_run, s) != 0) {
		snprintf(err, errlen, "cannot start the HTTP threads");
		http_free(s);
		return NULL;
	}
	pthread_setname_np(s->acceptor, "broker-accept");
	s->accepting = true;
	return s;
}

unsigned short http_port(struct http_server *s)
{
	return socket_port(s->listen_fd);
}

static void tell_all(struct http_server *s, int cmd)
{
	for (size_t i = 0; i < s->n_loops; i++)
		loop_tell(&s->loops[i], cmd);
}

int http_drain_and_stop(struct http_server *s, unsigned deadline_ms)
{
	struct timespec t0;

	if (!s)
		return 0;
	atomic_store(&s->draining, true);
	stop_accepting(s);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	/* Requests already under way finish normally, wherever they are: reading
	 * the body, in the policy, or waiting on Courier. Idle keep-alive
	 * connections are not waited for: MHD_stop_daemon closes them. */
	while (atomic_load(&s->active) > 0 && elapsed_ms(&t0) < deadline_ms)
		usleep(5000);
	atomic_store(&s->stopping, true);
	if (atomic_load(&s->upstream) > 0)
		log_msg("warn", "drain deadline passed with %d requests waiting on Courier: answering 503",
		        atomic_load(&s->upstream));
	/* Bounded: every aborted job resumes its connection at once. Aborting
	 * again now and then catches a job submitted just before stopping was set. */
	for (int i = 0; i < 200 && atomic_load(&s->upstream) > 0; i++) {
		if (i % 20 == 0)
			tell_all(s, CMD_ABORT);
		usleep(5000);
	}
	/* Let the answers just queued reach their sockets. */
	for (int i = 0; i < 100 && atomic_load(&s->active) > 0; i++)
		usleep(5000);
	/* MHD_stop_daemon with a suspended connection is an API violation: never. */
	if (atomic_load(&s->upstream) > 0) {
		log_msg("error",
		        "%d connections are still suspended after the drain: not stopping the HTTP server",
		        atomic_load(&s->upstream));
		return -1;
	}
	http_free(s);
	return 0;
}
