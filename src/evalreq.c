/*
 * evalreq.c — `eval`'s input: a described request, or a real one.
 *
 * Owns reading what `courier-broker eval --request` is given: a JSON request
 * description, whose every field must be one the description knows (a typo
 * is an error, never a field silently ignored); or a raw HTTP request (the
 * request line, headers with the session credential, a blank line, the
 * body), which is checked and verified as the server would (route, method,
 * media type, size, body, then identity through ident.c with the tenant's
 * own auth configuration) and turned into the description of what the policy
 * would see. Both are then decided by policyeval.c. It must never let a
 * credential header reach the description (the policy never sees one), never
 * accept a request the server would answer 4xx before the policy, and never
 * call Courier.
 */
#include "evalreq.h"

#include <arpa/inet.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "config.h"
#include "ident.h"
#include "json.h"
#include "policy.h"
#include "policyeval.h"
#include "reqbody.h"

#define RAW_HEADERS_MAX 100
#define JWKS_WAIT_MS    5000

/* ------------------------------------------------- a described request */

static bool credential_header(const char *name)
{
	return strcasecmp(name, "authorization") == 0 || strcasecmp(name, "cookie") == 0 ||
	       strcasecmp(name, "proxy-authorization") == 0;
}

/* The credential headers of the table at idx: a policy never sees one. */
static int check_headers(lua_State *L, int idx, char *err, size_t errlen)
{
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		lua_pop(L, 1);
		if (lua_type(L, -1) == LUA_TSTRING && credential_header(lua_tostring(L, -1))) {
			snprintf(
			    err, errlen,
			    "headers.%s: a policy never sees credential headers (give a raw HTTP request "
			    "to verify one)",
			    lua_tostring(L, -1));
			lua_pop(L, 1);
			return -1;
		}
	}
	return 0;
}

/* The description at idx names no credential header. Its shape (known
 * fields, their types) is checked where it is decided, as a test case's req
 * is (policyeval.c). Leaves the stack as it was. */
static int check_description(lua_State *L, int idx, char *err, size_t errlen)
{
	int top = lua_gettop(L), rc = 0;

	if (lua_getfield(L, idx, "headers") == LUA_TTABLE)
		rc = check_headers(L, lua_gettop(L), err, errlen);
	lua_settop(L, top);
	return rc;
}

/* ---------------------------------------------------- a raw HTTP request */

struct raw_header {
	char name[128]; /* lower-case */
	const char *value;
	size_t value_len;
};

struct raw_request {
	char method[16], path[512];
	struct raw_header h[RAW_HEADERS_MAX];
	char *values; /* the values, NUL-terminated, one block */
	size_t n;
	const char *body;
	size_t body_len;
};

/* The next line of text from *p (ending in "\n" or "\r\n", or at end);
 * its length in *n. NULL at the end. */
static const char *next_line(const char **p, const char *end, size_t *n)
{
	const char *s = *p, *nl;

	if (s >= end)
		return NULL;
	nl = memchr(s, '\n', (size_t)(end - s));
	*p = nl ? nl + 1 : end;
	*n = (size_t)((nl ? nl : end) - s);
	if (*n && s[*n - 1] == '\r')
		(*n)--;
	return s;
}

/* Splits text into request line, headers and body. 0, or -1 with err. */
static int parse_raw(const char *text, size_t len, struct raw_request *rq, char *err, size_t errlen)
{
	const char *p = text, *end = text + len, *line, *colon;
	size_t n, used = 0;
	char version[16], first[1024];

	memset(rq, 0, sizeof(*rq));
	if (!(rq->values = malloc(len + 1))) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	line = next_line(&p, end, &n);
	snprintf(first, sizeof(first), "%.*s", line ? (int)(n < sizeof(first) ? n : sizeof(first) - 1) : 0,
	         line ? line : "");
	if (sscanf(first, "%15s %511s %15s", rq->method, rq->path, version) != 3 ||
	    strncmp(version, "HTTP/1.", 7) != 0) {
		snprintf(err, errlen,
		         "a raw request starts with its request line, e.g. \"POST /v1/token HTTP/1.1\"");
		return -1;
	}
	while ((line = next_line(&p, end, &n)) && n > 0) {
		struct raw_header *h = &rq->h[rq->n];
		size_t nlen;
		if (rq->n >= RAW_HEADERS_MAX) {
			snprintf(err, errlen, "more than %d header lines", RAW_HEADERS_MAX);
			return -1;
		}
		colon = memchr(line, ':', n);
		nlen = colon ? (size_t)(colon - line) : 0;
		if (line[0] == ' ' || line[0] == '\t' || !colon || nlen == 0 || nlen >= sizeof(h->name)) {
			snprintf(err, errlen, "header line %zu is not \"Name: value\"", rq->n + 1);
			return -1;
		}
		for (size_t i = 0; i < nlen; i++) {
			char c = line[i];
			if (c == ' ' || c == '\t') {
				snprintf(err, errlen, "header line %zu: a space in its name", rq->n + 1);
				return -1;
			}
			h->name[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
		}
		h->name[nlen] = '\0';
		colon++;
		while (colon < line + n && (*colon == ' ' || *colon == '\t'))
			colon++;
		h->value_len = (size_t)(line + n - colon);
		while (h->value_len && (colon[h->value_len - 1] == ' ' || colon[h->value_len - 1] == '\t'))
			h->value_len--;
		memcpy(rq->values + used, colon, h->value_len);
		rq->values[used + h->value_len] = '\0';
		h->value = rq->values + used;
		used += h->value_len + 1;
		rq->n++;
	}
	if (!line) {
		snprintf(err, errlen, "no blank line after the headers (the body follows one)");
		return -1;
	}
	rq->body = p;
	rq->body_len = (size_t)(end - p);
	return 0;
}

/* The index-th value of header name (any case), or NULL: ident's lookup. */
static const char *raw_header(void *ctx, const char *name, unsigned index)
{
	struct raw_request *rq = ctx;

	for (size_t i = 0; i < rq->n; i++)
		if (strcasecmp(rq->h[i].name, name) == 0 && index-- == 0)
			return rq->h[i].value;
	return NULL;
}

/* The tenant the path routes to (the server's routes). */
static bool routes_to(const char *path, const char *tenant)
{
	static const char prefix[] = "/v1/tenants/";
	size_t n = strlen(tenant);

	if (strcmp(path, "/v1/token") == 0)
		return strcmp(tenant, "default") == 0;
	return strncmp(path, prefix, sizeof(prefix) - 1) == 0 &&
	       strncmp(path + sizeof(prefix) - 1, tenant, n) == 0 &&
	       strcmp(path + sizeof(prefix) - 1 + n, "/token") == 0;
}

/* What the server answers before the policy runs, or 0 when the request
 * reaches it: the checks of token_begin and stage_body, in their order. */
static int refused_before_policy(const struct config *cfg, const struct tenant *t, struct raw_request *rq,
                                 char *err, size_t errlen)
{
	const char *ct = raw_header(rq, "content-type", 0), *cl = raw_header(rq, "content-length", 0);

	if (!routes_to(rq->path, t->name)) {
		snprintf(err, errlen, "%s is not tenant %s's token route (/v1/tenants/%s/token%s)", rq->path,
		         t->name, t->name, strcmp(t->name, "default") == 0 ? " or /v1/token" : "");
		return 404;
	}
	if (strcmp(rq->method, "POST") != 0) {
		snprintf(err, errlen, "use POST");
		return 405;
	}
	if (raw_header(rq, "authorization", 1)) {
		snprintf(err, errlen, "more than one Authorization header");
		return 400;
	}
	if (!ct || strncasecmp(ct, "application/json", 16) != 0 ||
	    (ct[16] != '\0' && ct[16] != ';' && ct[16] != ' ' && ct[16] != '\t')) {
		snprintf(err, errlen, "the body must be application/json (Content-Type)");
		return 415;
	}
	if (cl) {
		char *endp;
		unsigned long long v = strtoull(cl, &endp, 10);
		if (endp == cl || *endp || v > rq->body_len) {
			snprintf(err, errlen,
			         "Content-Length %s does not match the %zu bytes after the headers", cl,
			         rq->body_len);
			return 400;
		}
		rq->body_len = (size_t)v;
	}
	if (rq->body_len > cfg->max_body_bytes) {
		snprintf(err, errlen, "the body is limited to %zu bytes", cfg->max_body_bytes);
		return 413;
	}
	return 0;
}

/* Waits (bounded) for the tenant's JWKS to be fetched, as /readyz would. */
static void wait_keys(const struct tenant *t)
{
	struct timespec step = {0, 20 * 1000 * 1000};

	for (int waited = 0; !ident_ready(&t->auth) && waited < JWKS_WAIT_MS; waited += 20)
		nanosleep(&step, NULL);
}

/* Pushes the description of what the policy sees for the raw request: the
 * server's stages up to the policy (body, identity), with the tenant's auth.
 * 0, or an HTTP status with err. */
static int describe_raw(lua_State *L, const struct config *cfg, const struct tenant *t,
                        struct raw_request *rq, const char *peer, const struct evalreq_options *opt,
                        char *err, size_t errlen)
{
	struct ident_request irq = {0};
	struct identity id;
	char ip[64], why[512];
	const char *uid, *msg;
	size_t uid_len;
	int body, status;

	if ((status = refused_before_policy(cfg, t, rq, err, errlen)) != 0)
		return status;
	if (json_decode(L, rq->body, rq->body_len) != 0 || lua_type(L, -1) != LUA_TTABLE) {
		snprintf(err, errlen, "the body must be a JSON object");
		return 400;
	}
	body = lua_gettop(L);
	if (reqbody_check(L, body, &uid, &uid_len, &msg) != 0) {
		snprintf(err, errlen, "%s", msg);
		return 400;
	}
	irq.authorization = raw_header(rq, "authorization", 0);
	irq.peer_ip = peer;
	/* --now: a captured request decided as at its time (its credential's
	 * exp and nbf too), not as at the time eval runs. */
	irq.now = opt->has_now ? opt->now : (long long)time(NULL);
	irq.header = raw_header;
	irq.header_ctx = rq;
	if (ident_client_ip(&t->auth, &irq, ip, sizeof(ip)) != 0) {
		snprintf(err, errlen, "too many X-Forwarded-For header lines");
		return 400;
	}
	wait_keys(t);
	if (ident_authenticate(L, &t->auth, &irq, &id, why, sizeof(why)) != 0) {
		snprintf(err, errlen, "missing or invalid credential: %s", why);
		return 401;
	}

	lua_createtable(L, 0, 6);
	lua_pushlstring(L, uid, uid_len);
	lua_setfield(L, -2, "user_id");
	lua_pushvalue(L, body);
	lua_setfield(L, -2, "body");
	lua_createtable(L, 0, 4);
	lua_pushboolean(L, id.authenticated);
	lua_setfield(L, -2, "authenticated");
	lua_pushstring(L, id.method);
	lua_setfield(L, -2, "method");
	if (id.subject[0]) {
		lua_pushstring(L, id.subject);
		lua_setfield(L, -2, "subject");
	}
	if (id.claims_idx) {
		lua_pushvalue(L, id.claims_idx);
		lua_setfield(L, -2, "claims");
	}
	lua_setfield(L, -2, "identity");
	lua_createtable(L, 0, 3);
	lua_pushstring(L, ip);
	lua_setfield(L, -2, "ip");
	lua_pushstring(L, raw_header(rq, "origin", 0));
	lua_setfield(L, -2, "origin");
	lua_pushstring(L, raw_header(rq, "user-agent", 0));
	lua_setfield(L, -2, "user_agent");
	lua_setfield(L, -2, "client");
	/* req.headers: every header but the credentials, the first of duplicates. */
	lua_createtable(L, 0, (int)rq->n);
	for (size_t i = 0; i < rq->n; i++) {
		bool seen;
		if (credential_header(rq->h[i].name))
			continue;
		seen = lua_getfield(L, -1, rq->h[i].name) != LUA_TNIL;
		lua_pop(L, 1);
		if (seen)
			continue;
		lua_pushlstring(L, rq->h[i].value, rq->h[i].value_len);
		lua_setfield(L, -2, rq->h[i].name);
	}
	lua_setfield(L, -2, "headers");
	lua_pushinteger(L, (lua_Integer)irq.now);
	lua_setfield(L, -2, "now");
	return 0;
}

/* ---------------------------------------------------------------- eval */

static bool is_json(const char *text, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (text[i] != ' ' && text[i] != '\t' && text[i] != '\r' && text[i] != '\n')
			return text[i] == '{';
	return false;
}

static bool numeric_ip(const char *s)
{
	unsigned char a[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1;
}

int evalreq_run(struct policy_engine *e, const struct config *cfg, const struct tenant *t, const char *text,
                size_t len, const struct evalreq_options *opt, FILE *out)
{
	lua_State *L = policy_engine_lua(e);
	int top = lua_gettop(L), status, rc = 1;
	struct raw_request *rq = NULL;
	char err[768];

	if (opt->peer && !numeric_ip(opt->peer)) {
		fprintf(stderr, "courier-broker eval: --peer %s is not a numeric IPv4 or IPv6 address\n",
		        opt->peer);
		return 1;
	}
	if (opt->explain && policy_engine_explain(e, true) != 0) {
		fprintf(stderr, "courier-broker eval: --explain: out of memory\n");
		return 1;
	}
	if (is_json(text, len)) {
		if (json_decode(L, text, len) != 0 || !lua_istable(L, -1)) {
			fprintf(stderr, "courier-broker eval: the request is not a JSON object\n");
			goto out;
		}
		if (check_description(L, lua_gettop(L), err, sizeof(err)) != 0) {
			fprintf(stderr, "courier-broker eval: %s\n", err);
			goto out;
		}
		/* --now is the clock of a description without its own now. */
		if (opt->has_now) {
			if (lua_getfield(L, -1, "now") == LUA_TNIL) {
				lua_pushinteger(L, (lua_Integer)opt->now);
				lua_setfield(L, -3, "now");
			}
			lua_pop(L, 1);
		}
	} else {
		if (!(rq = calloc(1, sizeof(*rq))) || parse_raw(text, len, rq, err, sizeof(err)) != 0) {
			fprintf(stderr, "courier-broker eval: %s\n", rq ? err : "out of memory");
			goto out;
		}
		status =
		    describe_raw(L, cfg, t, rq, opt->peer ? opt->peer : "127.0.0.1", opt, err, sizeof(err));
		if (status != 0) {
			fprintf(stderr,
			        "courier-broker eval: the broker answers %d before the policy runs: %s\n",
			        status, err);
			goto out;
		}
	}
	rc = policyeval_print(e, t, lua_gettop(L), out);
out:
	if (rq)
		free(rq->values);
	free(rq);
	lua_settop(L, top);
	return rc;
}
