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
#include <stdio.h>
#include <string.h>

#include "clock.h"
#include "config.h"
#include "json.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"

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
};

/* The fallback error body when even the JSON encoder fails. */
#define FALLBACK_BODY_MAX 160

enum MHD_Result reply_queue(struct MHD_Connection *conn, struct http_server *s, int status, const char *ctype,
                            const char *body, size_t len, const char *extra_name, const char *extra_value,
                            const char *cors_origin)
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

enum MHD_Result reply_plain(struct MHD_Connection *conn, struct http_server *s, int status, const char *ctype,
                            const char *body, const char *extra_name, const char *extra_value)
{
	return reply_queue(conn, s, status, ctype, body, strlen(body), extra_name, extra_value, NULL);
}

/* Sets t[name] = value (t on top of L), unless value is NULL or empty. */
static void put_str(lua_State *L, const char *name, const char *value)
{
	if (!value || !value[0])
		return;
	lua_pushstring(L, value);
	lua_setfield(L, -2, name);
}

/* Sets t[name] = ms, to the microsecond. */
static void put_ms(lua_State *L, const char *name, double ms)
{
	lua_pushnumber(L, (double)(long long)(ms * 1000) / 1000);
	lua_setfield(L, -2, name);
}

/* t.policy_log = the decision's broker.log lines, as an array. */
static void put_lines(lua_State *L, const char *name, const char *text)
{
	int n = 0;

	if (!text)
		return;
	lua_createtable(L, 8, 0);
	for (const char *p = text, *nl; (nl = strchr(p, '\n')); p = nl + 1) {
		lua_pushlstring(L, p, (size_t)(nl - p));
		lua_rawseti(L, -2, ++n);
	}
	lua_setfield(L, -2, name);
}

void reply_log(struct req *r, int status, const char *error, const char *token, size_t token_len,
               double upstream_ms)
{
	lua_State *L = loop_json(r->loop);
	char ts[40], hash[13];
	int top;

	metrics_request(r->tenant ? r->tenant->name : NULL, status);
	top = lua_gettop(L);
	log_timestamp(ts, sizeof(ts));
	lua_createtable(L, 0, 20);
	put_str(L, "time", ts);
	put_str(L, "level", "info");
	put_str(L, "event", "token_request");
	if (r->tenant) {
		/* Both always present for a tenant, even when empty. */
		lua_pushstring(L, r->tenant->name);
		lua_setfield(L, -2, "tenant");
		lua_pushstring(L, r->tenant->policy_revision);
		lua_setfield(L, -2, "policy_revision");
	}
	put_str(L, "user", r->user_id);
	put_str(L, "auth", r->method);
	put_str(L, "subject", r->subject);
	put_str(L, "decision", r->decision);
	put_str(L, "reason", r->reason);
	if (r->grant.scope[0]) {
		put_str(L, "scope", r->grant.scope);
		lua_pushinteger(L, r->grant.expires_s);
		lua_setfield(L, -2, "expires_in");
		if (r->grant.capped) {
			lua_pushboolean(L, 1);
			lua_setfield(L, -2, "capped");
		}
	}
	lua_pushinteger(L, status);
	lua_setfield(L, -2, "status");
	put_str(L, "error", error);
	if (token) {
		log_token_hash(token, token_len, hash);
		put_str(L, "token_sha256", hash);
	}
	put_ms(L, "latency_ms", clock_since_ms(&r->start));
	if (upstream_ms >= 0)
		put_ms(L, "upstream_ms", upstream_ms);
	put_str(L, "client_ip", r->client_ip);
	put_lines(L, "policy_log", r->policy_log);
	log_table(L, -1);
	lua_settop(L, top);
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
	ret = reply_queue(r->conn, r->srv, status, "application/json", json, len, extra_name, extra_value,
	                  r->cors_origin);
	lua_settop(L, top);
	reply_log(r, status, code, NULL, 0, -1);
	r->state = RS_DONE;
	return ret;
}
