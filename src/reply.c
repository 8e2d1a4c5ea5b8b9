/*
 * reply.c — how the front answers a token request, and its log line.
 *
 * Owns the table of error answers (a status and a code for each enum
 * reply_answer), the JSON error body, the headers every answer carries
 * (no-store, CORS, Connection: close while draining) and the per-request log
 * line. It must never put a secret in an answer or a log line (tokens appear
 * only as a short hash), and never build an answer on a policy engine: the
 * loop's own JSON state serves every generation.
 */
#include "reply.h"

#include <lauxlib.h>
#include <lua.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "audit.h"
#include "clock.h"
#include "config.h"
#include "json.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "secret.h"

static const struct {
	int status;
	const char *code;
} answers[] = {
    [REPLY_GO] = {200, "ok"},
    [REPLY_INVALID_REQUEST] = {400, "invalid_request"},
    [REPLY_UNAUTHENTICATED] = {401, "unauthenticated"},
    [REPLY_FORBIDDEN] = {403, "forbidden"},
    [REPLY_UNKNOWN_TENANT] = {404, "unknown_tenant"},
    [REPLY_METHOD_NOT_ALLOWED] = {405, "method_not_allowed"},
    [REPLY_PAYLOAD_TOO_LARGE] = {413, "payload_too_large"},
    [REPLY_UNSUPPORTED_MEDIA_TYPE] = {415, "unsupported_media_type"},
    [REPLY_RATE_LIMITED] = {429, "rate_limited"},
    [REPLY_POLICY_ERROR] = {500, "policy_error"},
    [REPLY_UPSTREAM_ERROR] = {502, "upstream_error"},
    [REPLY_UNAVAILABLE] = {503, "unavailable"},
    [REPLY_UPSTREAM_TIMEOUT] = {504, "upstream_timeout"},
    [REPLY_UPSTREAM_UNAVAILABLE] = {503, "upstream_unavailable"},
    [REPLY_USER_DENIED] = {403, "user_denied"},
    [REPLY_TENANT_DISABLED] = {403, "tenant_disabled"},
};

/* The fallback error body when even the JSON encoder fails. */
#define FALLBACK_BODY_MAX 160

/* ------------------------------------------------------------- request ids */

static bool id_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
	       c == '_' || c == '-';
}

/*
 * 16 random bytes for an id. OpenSSL's generator is asked for 64 ids at a
 * time, per thread: one RAND_bytes call a request was 3% of a request's
 * CPU (the generator's locks and fork check), the bytes are the same.
 */
#define ID_BYTES 16
#define ID_POOL  (64 * ID_BYTES)

static void id_random(unsigned char out[ID_BYTES])
{
	static _Thread_local unsigned char pool[ID_POOL];
	static _Thread_local size_t used = ID_POOL;

	if (used == ID_POOL) {
		if (RAND_bytes(pool, sizeof(pool)) != 1) {
			memset(out, 0, ID_BYTES);
			return;
		}
		used = 0;
	}
	memcpy(out, pool + used, ID_BYTES);
	memset(pool + used, 0, ID_BYTES); /* an id is handed out once */
	used += ID_BYTES;
}

void reply_request_id(struct MHD_Connection *conn, char *out)
{
	const char *v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
	unsigned char rnd[ID_BYTES];
	size_t n = 0;

	if (v) {
		while (n <= REPLY_REQUEST_ID_MAX && id_char(v[n]))
			n++;
		if (n >= 1 && n <= REPLY_REQUEST_ID_MAX && v[n] == '\0') {
			memcpy(out, v, n + 1);
			return;
		}
	}
	/* A client's id that is not sane is replaced, never echoed: it would
	 * reach the log and every system that reads it. */
	id_random(rnd);
	secret_hex(rnd, sizeof(rnd), out);
}

static bool lower_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

void reply_trace_id(struct MHD_Connection *conn, char out[33])
{
	/* version "-" trace-id "-" parent-id "-" flags (W3C Trace Context §3.2):
	 * 2, 32, 16 and 2 lowercase hex digits; version ff and all-zero ids are
	 * invalid; a later version may append "-..." fields. */
	const char *v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "traceparent");
	size_t len = v ? strlen(v) : 0;

	out[0] = '\0';
	if (len < 55 || (len > 55 && (v[55] != '-' || strncmp(v, "00", 2) == 0)))
		return;
	if (!lower_hex(v, 2) || strncmp(v, "ff", 2) == 0 || v[2] != '-' || !lower_hex(v + 3, 32) ||
	    v[35] != '-' || !lower_hex(v + 36, 16) || v[52] != '-' || !lower_hex(v + 53, 2))
		return;
	if (strspn(v + 3, "0") >= 32 || strspn(v + 36, "0") >= 16)
		return;
	memcpy(out, v + 3, 32);
	out[32] = '\0';
}

/* ----------------------------------------------------------------- answers */

static enum MHD_Result queue(struct MHD_Connection *conn, struct http_server *s, int status,
                             const char *ctype, const char *body, size_t len, const char *extra_name,
                             const char *extra_value, const char *cors_origin, const char *request_id,
                             const char *revision)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;

	resp = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
	/* Tokens, and errors about them, must never sit in a cache. */
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	MHD_add_response_header(resp, "X-Request-Id", request_id);
	if (extra_name)
		MHD_add_response_header(resp, extra_name, extra_value);
	if (revision)
		MHD_add_response_header(resp, "X-Policy-Revision", revision);
	if (cors_origin) {
		/* Errors carry it too, so the frontend can read why. */
		MHD_add_response_header(resp, "Access-Control-Allow-Origin", cors_origin);
		/* What page code needs: when to retry a 429/503, which request it
		 * was, which policy decided (CONTRACT.md). */
		MHD_add_response_header(resp, "Access-Control-Expose-Headers",
		                        "Retry-After, X-Request-Id, X-Policy-Revision");
		MHD_add_response_header(resp, "Vary", "Origin");
	}
	if (s && loop_draining(s))
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
	ret = MHD_queue_response(conn, (unsigned)status, resp);
	MHD_destroy_response(resp);
	return ret;
}

enum MHD_Result reply_queue(struct MHD_Connection *conn, struct http_server *s, int status, const char *ctype,
                            const char *body, size_t len, const char *extra_name, const char *extra_value,
                            const char *cors_origin)
{
	char id[REPLY_REQUEST_ID_MAX + 1];

	reply_request_id(conn, id);
	return queue(conn, s, status, ctype, body, len, extra_name, extra_value, cors_origin, id, NULL);
}

enum MHD_Result reply_queue_req(struct req *r, int status, const char *ctype, const char *body, size_t len,
                                const char *extra_name, const char *extra_value)
{
	/* Every answer to a decided request names the revision that decided it,
	 * 403s and the errors after an allow included (CONTRACT.md). */
	const char *revision = r->decision && r->tenant ? r->tenant->policy_revision : NULL;

	return queue(r->conn, r->srv, status, ctype, body, len, extra_name, extra_value, r->cors_origin,
	             r->request_id, revision);
}

enum MHD_Result reply_plain(struct MHD_Connection *conn, struct http_server *s, int status, const char *ctype,
                            const char *body, const char *extra_name, const char *extra_value)
{
	return reply_queue(conn, s, status, ctype, body, strlen(body), extra_name, extra_value, NULL);
}

/* ---------------------------------------------------------------- the log */

static bool credential_header(const char *name)
{
	return strcasecmp(name, "authorization") == 0 || strcasecmp(name, "cookie") == 0 ||
	       strcasecmp(name, "proxy-authorization") == 0;
}

/* One req.headers entry: lower-case name, as the policy reads it. */
static enum MHD_Result audit_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	struct log_line *l = cls;
	char name[128];
	size_t n = strlen(key);

	(void)kind;
	if (!value || credential_header(key) || n >= sizeof(name))
		return MHD_YES;
	for (size_t i = 0; i <= n; i++)
		name[i] = (key[i] >= 'A' && key[i] <= 'Z') ? (char)(key[i] - 'A' + 'a') : key[i];
	log_line_str(l, name, value);
	return MHD_YES;
}

/* req as the policy saw it (docs/policies.md), credentials removed. */
static void audit_request(struct req *r, struct log_line *l)
{
	const char *origin = r->origin;
	const char *ua = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_USER_AGENT);

	log_line_open(l, "request", '{');
	log_line_str(l, "tenant", r->tenant->name);
	log_line_str(l, "user_id", r->user_id);
	if (r->audit_body)
		log_line_raw(l, "body", r->audit_body, strlen(r->audit_body));
	log_line_open(l, "identity", '{');
	log_line_bool(l, "authenticated", r->authenticated);
	log_line_str(l, "method", r->method);
	if (r->subject[0])
		log_line_str(l, "subject", r->subject);
	if (r->audit_claims)
		log_line_raw(l, "claims", r->audit_claims, strlen(r->audit_claims));
	log_line_close(l, '}');
	log_line_open(l, "client", '{');
	log_line_str(l, "ip", r->policy_ip);
	log_line_str(l, "origin", origin);
	log_line_str(l, "user_agent", ua);
	log_line_close(l, '}');
	/* Duplicate names keep the first, as req.headers does. */
	log_line_open(l, "headers", '{');
	MHD_get_connection_values(r->conn, MHD_HEADER_KIND, audit_header, l);
	log_line_close(l, '}');
	log_line_int(l, "now", r->now);
	log_line_close(l, '}');
}

/* decided_at: the policy's `return` that decided ("file:line"), and
 * decided_by: the policy frames that led there, outermost first. */
static void audit_decided(struct req *r, struct log_line *l)
{
	const char *last, *end;
	char at[512];

	if (!r->decided_by || !(end = strrchr(r->decided_by, '\n')))
		return;
	for (last = end; last > r->decided_by && last[-1] != '\n'; last--)
		;
	snprintf(at, sizeof(at), "%.*s", (int)(end - last), last);
	log_line_str(l, "decided_at", at);
	log_line_lines(l, "decided_by", r->decided_by);
}

/* The audit line of a decided request: who asked, for whom, what was
 * granted or why not, under which policy revision. */
static void audit_log(struct req *r, int status, const char *error)
{
	struct log_line l;
	char ts[40], *line;
	size_t len;

	if (!r->decision || !r->tenant || !audit_enabled())
		return;
	log_line_init(&l);
	log_timestamp(ts, sizeof(ts));
	log_line_str(&l, "time", ts);
	log_line_str(&l, "event", "decision");
	log_line_str(&l, "request_id", r->request_id);
	if (r->trace_id[0])
		log_line_str(&l, "trace_id", r->trace_id);
	log_line_str(&l, "tenant", r->tenant->name);
	log_line_str(&l, "policy_revision", r->tenant->policy_revision);
	log_line_str(&l, "user", r->user_id);
	log_line_str(&l, "auth", r->method);
	if (r->subject[0])
		log_line_str(&l, "subject", r->subject);
	log_line_str(&l, "client_ip", r->policy_ip);
	log_line_str(&l, "decision", r->decision);
	log_line_str(&l, "reason", r->reason);
	if (r->grant.scope[0]) {
		log_line_str(&l, "scope", r->grant.scope);
		log_line_int(&l, "expires_in", r->grant.expires_s);
	}
	log_line_int(&l, "status", status);
	log_line_str(&l, "error", error);
	audit_decided(r, &l);
	if (audit_inputs())
		audit_request(r, &l);
	line = log_line_finish(&l, &len);
	if (line)
		audit_write(line, len);
	else
		audit_write_failed("the line could not be built");
	free(line);
}

void reply_log(struct req *r, int status, const char *error, const char *token, size_t token_len,
               double upstream_ms)
{
	double ms = clock_since_ms(&r->start);
	const char *tenant = r->tenant ? r->tenant->name : NULL;
	struct log_line l;
	char hash[13];

	metrics_request(tenant, status);
	metrics_request_seconds(status, ms / 1e3);
	if (r->decision)
		metrics_decision(tenant, r->decision);
	audit_log(r, status, error);
	/* 5xx: the broker or Courier failed, which is someone's to fix. */
	if (!log_line_begin(&l, status >= 500 ? LOG_ERROR : LOG_INFO, "token_request"))
		return;
	log_line_str(&l, "request_id", r->request_id);
	if (r->trace_id[0])
		log_line_str(&l, "trace_id", r->trace_id);
	if (r->tenant) {
		/* Both always present for a tenant, even when empty. */
		log_line_str(&l, "tenant", r->tenant->name);
		log_line_str(&l, "policy_revision", r->tenant->policy_revision);
	}
	if (r->user_id[0])
		log_line_str(&l, "user", r->user_id);
	log_line_str(&l, "auth", r->method);
	if (r->subject[0])
		log_line_str(&l, "subject", r->subject);
	log_line_str(&l, "decision", r->decision);
	if (r->reason[0])
		log_line_str(&l, "reason", r->reason);
	if (r->grant.scope[0]) {
		log_line_str(&l, "scope", r->grant.scope);
		log_line_int(&l, "expires_in", r->grant.expires_s);
		if (r->grant.capped)
			log_line_bool(&l, "capped", true);
	}
	log_line_int(&l, "status", status);
	log_line_str(&l, "error", error);
	if (token) {
		log_token_hash(token, token_len, hash);
		log_line_str(&l, "token_sha256", hash);
	}
	log_line_ms(&l, "latency_ms", ms);
	if (upstream_ms >= 0)
		log_line_ms(&l, "upstream_ms", upstream_ms);
	if (r->client_ip[0])
		log_line_str(&l, "client_ip", r->client_ip);
	log_line_lines(&l, "policy_log", r->policy_log);
	log_line_end(&l);
}

enum MHD_Result reply_fail(struct req *r, enum reply_answer a, const char *message, const char *extra_name,
                           const char *extra_value)
{
	lua_State *L = loop_json(r->loop);
	int status = answers[a].status;
	const char *code = answers[a].code;
	enum MHD_Result ret = MHD_NO;
	const char *json;
	size_t len = 0;
	int top = lua_gettop(L);
	char fallback[FALLBACK_BODY_MAX];

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
	if (status == MHD_HTTP_UNAUTHORIZED) {
		extra_name = MHD_HTTP_HEADER_WWW_AUTHENTICATE;
		extra_value = "Bearer";
	}
	ret = reply_queue_req(r, status, "application/json", json, len, extra_name, extra_value);
	lua_settop(L, top);
	reply_log(r, status, code, NULL, 0, -1);
	r->state = RS_DONE;
	return ret;
}
