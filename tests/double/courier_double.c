/*
 * courier_double.c — a stand-in for Courier's POST /auth/issue-token.
 *
 * Serves the one Courier endpoint the broker calls, on 127.0.0.1 only, the way
 * Courier answers it (API key check, scope grammar, vercel/ms durations, an
 * HS256 token with Courier's claims), plus a /_double/ control API through
 * which tests read the last request and force latency, error statuses and
 * broken answers. It is also the baseline of the wrk benchmark, so the common
 * path takes one mutex and never blocks an MHD thread: forced latency suspends
 * the connection and a timer thread resumes it when it is due.
 *
 * It must never listen on anything but loopback, and never be mistaken for a
 * security boundary: its keys and secret are test fixtures.
 */
#include "fileio.h"
#include "json.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

#define BODY_MAX       (64 * 1024)
#define BODY_INLINE    1024
#define LATENCY_MAX_MS 600000
#define THREADS_MAX    256
#define MS_MAX_LEN     100 /* vercel/ms refuses longer strings */

#define PATH_ISSUE   "/auth/issue-token"
#define CT_JSON      "application/json"
#define JWT_HEADER   "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"
#define TENANT_SCOPE "published/production"
#define TENANT_ID    "double-workspace"

/* ---------------------------------------------------------------- state */

enum mode { MODE_OK, MODE_GARBAGE, MODE_NO_TOKEN, MODE_CLOSE };

enum route { ROUTE_ISSUE, ROUTE_LAST, ROUTE_STATS, ROUTE_CONFIG, ROUTE_RESET, ROUTE_NOT_FOUND };

struct settings {
	long latency_ms;
	int status; /* 0: answer normally */
	enum mode mode;
	long long exp;           /* 0: iat + expires_in; -1: no exp claim; else this exp */
	char retry_after[64];    /* Retry-After of a forced answer; "": none (429: "1") */
	char retry_after_ms[32]; /* retry-after-ms of a forced answer; "": none */
};

/* The last issue-token request, in one allocation: the strings point into data. */
struct last_req {
	const char *method;
	const char *authorization;
	const char *content_type;
	const char *body;
	size_t body_len;
	char data[];
};

/* Everything the control API changes, under one lock taken once per request. */
static struct {
	pthread_mutex_t lock;
	struct settings settings;
	unsigned long served;
	struct last_req *last;     /* owned here; NULL until the first request */
	long next;                 /* the settings hold for this many more requests; -1: for all */
	int fail_percent;          /* share of requests given the settings (the rest: the defaults) */
	unsigned long connections; /* TCP connections accepted since start or reset */
} shared = {PTHREAD_MUTEX_INITIALIZER, {0, 0, MODE_OK, 0, "", ""}, 0, NULL, -1, 100, 0};

/* Immutable after start. */
static char *api_keys_buf; /* the list, cut in place by load_keys */
static char **api_keys;
static size_t api_key_count;
static const char *signing_secret;
static EVP_MAC *hmac_alg;
static char jwt_header_b64[64];
static size_t jwt_header_b64_len;

/* One per MHD thread: a Lua state is not thread-safe, and a keyed HMAC
 * context saves a provider fetch per token. Freed by the key's destructor
 * when the thread exits. */
struct worker {
	lua_State *L;
	EVP_MAC_CTX *mac;
};

static pthread_key_t worker_key;

/* One per connection (MHD's con_cls); freed when MHD reports it complete. */
struct request {
	enum route route;
	int too_big;
	int recorded; /* counted and stored as "last"; settings snapshot taken */
	int resumed;
	struct settings settings;
	struct MHD_Connection *conn;
	struct timespec due;
	struct request *next; /* in the pending list while suspended */
	char *body;
	size_t len, cap;
	char inline_body[BODY_INLINE];
};

/* Suspended connections, ordered by deadline. A connection is suspended and
 * inserted under this lock, so the timer thread never resumes one that is not
 * yet suspended; once stopping is set nothing more is suspended. */
static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct request *head, *tail;
	int stopping;
} pending = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, NULL, 0};

/* ---------------------------------------------------------------- helpers */

static struct timespec mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts;
}

static int ts_before(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/* base64url without padding of n bytes into out (room for 4*ceil(n/3)+1). */
static size_t b64url(char *out, const unsigned char *in, size_t n)
{
	int len = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
	size_t m = (size_t)len;

	while (m > 0 && out[m - 1] == '=')
		m--;
	for (size_t i = 0; i < m; i++) {
		if (out[i] == '+')
			out[i] = '-';
		else if (out[i] == '/')
			out[i] = '_';
	}
	out[m] = '\0';
	return m;
}

static struct worker *worker_get(void)
{
	struct worker *w = pthread_getspecific(worker_key);
	OSSL_PARAM params[2];

	if (w)
		return w;
	w = calloc(1, sizeof *w);
	if (!w)
		return NULL;
	w->L = luaL_newstate();
	if (!w->L || json_open(w->L))
		goto fail;
	w->mac = EVP_MAC_CTX_new(hmac_alg);
	if (!w->mac)
		goto fail;
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
	params[1] = OSSL_PARAM_construct_end();
	if (!EVP_MAC_init(w->mac, (const unsigned char *)signing_secret, strlen(signing_secret), params))
		goto fail;
	if (pthread_setspecific(worker_key, w))
		goto fail;
	return w;
fail:
	fprintf(stderr, "courier-double: cannot set up a worker thread\n");
	if (w->L)
		lua_close(w->L);
	EVP_MAC_CTX_free(w->mac);
	free(w);
	return NULL;
}

static void worker_free(void *p)
{
	struct worker *w = p;

	lua_close(w->L);
	EVP_MAC_CTX_free(w->mac);
	free(w);
}

/* ---------------------------------------------------------------- answers */

/* hint: the Retry-After / retry-after-ms to send (NULL: none); a 429
 * without its own Retry-After gets "1". */
static enum MHD_Result respond(struct MHD_Connection *conn, unsigned status, const char *body, size_t len,
                               const char *content_type, const struct settings *hint)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;
	const char *ra = hint && hint->retry_after[0]           ? hint->retry_after
	                 : status == MHD_HTTP_TOO_MANY_REQUESTS ? "1"
	                                                        : NULL;
	const char *ra_ms = hint && hint->retry_after_ms[0] ? hint->retry_after_ms : NULL;

	resp = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
	if (!resp)
		return MHD_NO;
	if (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type) == MHD_NO ||
	    (ra && MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, ra) == MHD_NO) ||
	    (ra_ms && MHD_add_response_header(resp, "retry-after-ms", ra_ms) == MHD_NO)) {
		MHD_destroy_response(resp);
		return MHD_NO;
	}
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result respond_literal(struct MHD_Connection *conn, unsigned status, const char *json)
{
	return respond(conn, status, json, strlen(json), CT_JSON, NULL);
}

/* Courier's error shape, {"type": ..., "message": ...}, encoded by cjson since
 * the message may quote the request. */
static enum MHD_Result respond_error_hint(lua_State *L, struct MHD_Connection *conn, unsigned status,
                                          const char *type, const char *message, const struct settings *hint)
{
	int top = lua_gettop(L);
	const char *json;
	size_t len;
	enum MHD_Result ret = MHD_NO;

	lua_createtable(L, 0, 2);
	lua_pushstring(L, type);
	lua_setfield(L, -2, "type");
	lua_pushstring(L, message);
	lua_setfield(L, -2, "message");
	json = json_encode(L, -1, &len);
	if (json)
		ret = respond(conn, status, json, len, CT_JSON, hint);
	lua_settop(L, top);
	return ret;
}

static enum MHD_Result respond_error(lua_State *L, struct MHD_Connection *conn, unsigned status,
                                     const char *type, const char *message)
{
	return respond_error_hint(L, conn, status, type, message, NULL);
}

static enum MHD_Result respond_forced(lua_State *L, struct MHD_Connection *conn, const struct settings *s)
{
	switch (s->status) {
	case 400:
		return respond_error_hint(L, conn, 400, "invalid_request_error", "forced", s);
	case 401:
		return respond_error_hint(L, conn, 401, "authentication_error", "Unauthorized", s);
	case 429:
		return respond_error_hint(L, conn, 429, "rate_limit_error", "forced", s);
	default:
		return respond_error_hint(L, conn, (unsigned)s->status, "api_error", "forced", s);
	}
}

/* ---------------------------------------------------------------- Courier's rules */

static int api_key_ok(const char *authorization)
{
	size_t n;

	if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
		return 0;
	authorization += 7;
	n = strlen(authorization);
	for (size_t i = 0; i < api_key_count; i++)
		if (strlen(api_keys[i]) == n && memcmp(api_keys[i], authorization, n) == 0)
			return 1;
	return 0;
}

static int scope_token_ok(const char *t, size_t n)
{
	static const char *const fixed[] = {
	    "read:messages",      "read:user-tokens", "write:user-tokens",
	    "read:brands",        "write:brands",     "inbox:read:messages",
	    "inbox:write:events", "read:preferences", "write:preferences",
	};
	static const char *const with_suffix[] = {"user_id:", "read:brands:", "write:brands:"};

	for (size_t i = 0; i < sizeof with_suffix / sizeof with_suffix[0]; i++) {
		size_t p = strlen(with_suffix[i]);
		if (n > p && memcmp(t, with_suffix[i], p) == 0)
			return 1;
	}
	for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
		if (strlen(fixed[i]) == n && memcmp(t, fixed[i], n) == 0)
			return 1;
	return 0;
}

/* Splits on single spaces; writes a message naming the first bad token. */
static int scope_ok(const char *s, size_t n, char *msg, size_t msg_size)
{
	size_t start = 0;

	for (size_t i = 0; i <= n; i++) {
		if (i < n && s[i] != ' ')
			continue;
		if (i == start) {
			snprintf(msg, msg_size, "Invalid scope: empty scope token");
			return 0;
		}
		if (!scope_token_ok(s + start, i - start)) {
			int shown = (int)(i - start > 200 ? 200 : i - start);
			snprintf(msg, msg_size, "Invalid scope: %.*s", shown, s + start);
			return 0;
		}
		start = i + 1;
	}
	return 1;
}

/* vercel/ms: ^(-?(?:\d+)?\.?\d+) *(unit)?$, case-insensitive; no unit = ms. */
static int ms_parse(const char *s, size_t n, double *ms)
{
	static const struct {
		const char *name;
		double factor;
	} units[] = {
	    {"milliseconds", 1},  {"millisecond", 1},  {"msecs", 1},
	    {"msec", 1},          {"ms", 1},           {"seconds", 1e3},
	    {"second", 1e3},      {"secs", 1e3},       {"sec", 1e3},
	    {"s", 1e3},           {"minutes", 6e4},    {"minute", 6e4},
	    {"mins", 6e4},        {"min", 6e4},        {"m", 6e4},
	    {"hours", 3.6e6},     {"hour", 3.6e6},     {"hrs", 3.6e6},
	    {"hr", 3.6e6},        {"h", 3.6e6},        {"days", 8.64e7},
	    {"day", 8.64e7},      {"d", 8.64e7},       {"weeks", 6.048e8},
	    {"week", 6.048e8},    {"w", 6.048e8},      {"years", 3.15576e10},
	    {"year", 3.15576e10}, {"yrs", 3.15576e10}, {"yr", 3.15576e10},
	    {"y", 3.15576e10},
	};
	char num[MS_MAX_LEN + 1];
	size_t i = 0, int_digits, frac_digits = 0, unit_len;
	double factor = 1;

	if (n == 0 || n > MS_MAX_LEN)
		return -1;
	if (s[i] == '-')
		i++;
	int_digits = i;
	while (i < n && isdigit((unsigned char)s[i]))
		i++;
	int_digits = i - int_digits;
	if (i < n && s[i] == '.') {
		size_t frac = ++i;
		while (i < n && isdigit((unsigned char)s[i]))
			i++;
		frac_digits = i - frac;
		if (frac_digits == 0)
			return -1;
	} else if (int_digits == 0) {
		return -1;
	}
	memcpy(num, s, i);
	num[i] = '\0';
	while (i < n && s[i] == ' ')
		i++;
	unit_len = n - i;
	if (unit_len > 0) {
		size_t u;
		for (u = 0; u < sizeof units / sizeof units[0]; u++)
			if (strlen(units[u].name) == unit_len &&
			    strncasecmp(units[u].name, s + i, unit_len) == 0)
				break;
		if (u == sizeof units / sizeof units[0])
			return -1;
		factor = units[u].factor;
	}
	*ms = strtod(num, NULL) * factor;
	return 0;
}

/* Builds the token on L's stack (pushes one string) or returns -1. */
static int token_push(struct worker *w, const char *scope, size_t scope_len, int has_exp, int64_t exp_delta,
                      long long exp_forced)
{
	lua_State *L = w->L;
	unsigned char jti_raw[16], sig[EVP_MAX_MD_SIZE];
	char jti[33], sig_b64[EVP_MAX_MD_SIZE * 2];
	const char *claims;
	size_t claims_len, sig_len = 0, b64_len;
	char *token;
	int64_t iat = (int64_t)time(NULL);
	luaL_Buffer b;

	if (RAND_bytes(jti_raw, sizeof jti_raw) != 1)
		return -1;
	for (size_t i = 0; i < sizeof jti_raw; i++)
		snprintf(jti + 2 * i, 3, "%02x", jti_raw[i]);

	lua_createtable(L, 0, 6);
	lua_pushlstring(L, scope, scope_len);
	lua_setfield(L, -2, "scope");
	lua_pushliteral(L, TENANT_SCOPE);
	lua_setfield(L, -2, "tenant_scope");
	lua_pushliteral(L, TENANT_ID);
	lua_setfield(L, -2, "tenant_id");
	lua_pushinteger(L, (lua_Integer)iat);
	lua_setfield(L, -2, "iat");
	lua_pushstring(L, jti);
	lua_setfield(L, -2, "jti");
	if (exp_forced > 0) {
		lua_pushinteger(L, (lua_Integer)exp_forced);
		lua_setfield(L, -2, "exp");
	} else if (has_exp && exp_forced == 0) {
		lua_pushinteger(L, (lua_Integer)(iat + exp_delta));
		lua_setfield(L, -2, "exp");
	}
	claims = json_encode(L, -1, &claims_len);
	if (!claims) {
		lua_pop(L, 1);
		return -1;
	}

	/* header.payload, then .signature over it, in one Lua buffer. */
	luaL_buffinit(L, &b);
	token = luaL_prepbuffsize(&b, jwt_header_b64_len + 1 + 4 * (claims_len / 3 + 1) + 1);
	memcpy(token, jwt_header_b64, jwt_header_b64_len);
	token[jwt_header_b64_len] = '.';
	b64_len = b64url(token + jwt_header_b64_len + 1, (const unsigned char *)claims, claims_len);
	b64_len += jwt_header_b64_len + 1;
	if (!EVP_MAC_init(w->mac, NULL, 0, NULL) ||
	    !EVP_MAC_update(w->mac, (unsigned char *)token, b64_len) ||
	    !EVP_MAC_final(w->mac, sig, &sig_len, sizeof sig)) {
		luaL_addsize(&b, 0);
		luaL_pushresult(&b);
		lua_pop(L, 3);
		return -1;
	}
	luaL_addsize(&b, b64_len);
	luaL_addchar(&b, '.');
	luaL_addlstring(&b, sig_b64, b64url(sig_b64, sig, sig_len));
	luaL_pushresult(&b);
	/* stack: claims table, claims json, token */
	lua_replace(L, -3);
	lua_pop(L, 1);
	return 0;
}

static enum MHD_Result issue_token(struct worker *w, struct request *r)
{
	lua_State *L = w->L;
	int top = lua_gettop(L);
	const char *scope, *json;
	size_t scope_len, len;
	int has_exp = 0;
	int64_t exp_delta = 0;
	char msg[256];
	enum MHD_Result ret;

	if (!api_key_ok(MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION)))
		return respond_literal(r->conn, 401,
		                       "{\"type\":\"authentication_error\",\"message\":\"Unauthorized\"}");
	if (json_decode(L, r->body, r->len) || lua_type(L, -1) != LUA_TTABLE) {
		ret = respond_error(L, r->conn, 400, "invalid_request_error", "Body must be a JSON object");
		goto out;
	}
	lua_getfield(L, top + 1, "scope");
	if (lua_type(L, -1) != LUA_TSTRING) {
		ret = respond_error(L, r->conn, 400, "invalid_request_error", "scope must be a string");
		goto out;
	}
	scope = lua_tolstring(L, -1, &scope_len);
	if (!scope_ok(scope, scope_len, msg, sizeof msg)) {
		ret = respond_error(L, r->conn, 400, "invalid_request_error", msg);
		goto out;
	}
	lua_getfield(L, top + 1, "expires_in");
	if (lua_type(L, -1) != LUA_TNIL) {
		const char *s;
		size_t n;
		double ms, secs;

		if (lua_type(L, -1) != LUA_TSTRING) {
			ret = respond_error(L, r->conn, 400, "invalid_request_error",
			                    "expires_in must be a string");
			goto out;
		}
		s = lua_tolstring(L, -1, &n);
		if (ms_parse(s, n, &ms)) {
			ret = respond_error(L, r->conn, 400, "invalid_request_error", "Invalid expires_in");
			goto out;
		}
		secs = floor(ms / 1000.0);
		if (!(secs > -1e12 && secs < 1e12)) {
			ret = respond_error(L, r->conn, 400, "invalid_request_error",
			                    "expires_in out of range");
			goto out;
		}
		has_exp = 1;
		exp_delta = (int64_t)secs;
	}
	if (token_push(w, scope, scope_len, has_exp, exp_delta, r->settings.exp)) {
		ret = respond_error(L, r->conn, 500, "api_error", "cannot sign the token");
		goto out;
	}
	lua_createtable(L, 0, 1);
	lua_insert(L, -2);
	lua_setfield(L, -2, "token");
	json = json_encode(L, -1, &len);
	ret = json ? respond(r->conn, 200, json, len, CT_JSON, NULL) : MHD_NO;
out:
	lua_settop(L, top);
	return ret;
}

/* ---------------------------------------------------------------- latency */

static void resume_all(struct request *r)
{
	while (r) {
		/* r may be freed as soon as its connection is resumed. */
		struct request *next = r->next;
		MHD_resume_connection(r->conn);
		r = next;
	}
}

/* Suspends r's connection until latency_ms from now. Returns 0 when shutting
 * down (answer at once instead). */
static int delay(struct request *r)
{
	struct timespec due = mono_now();
	long ms = r->settings.latency_ms;

	due.tv_sec += ms / 1000;
	due.tv_nsec += (ms % 1000) * 1000000L;
	if (due.tv_nsec >= 1000000000L) {
		due.tv_sec++;
		due.tv_nsec -= 1000000000L;
	}
	r->due = due;
	r->next = NULL;

	pthread_mutex_lock(&pending.lock);
	if (pending.stopping) {
		pthread_mutex_unlock(&pending.lock);
		return 0;
	}
	MHD_suspend_connection(r->conn);
	if (!pending.tail || !ts_before(&due, &pending.tail->due)) {
		/* A fixed latency makes deadlines arrive in order: append. */
		if (pending.tail)
			pending.tail->next = r;
		else
			pending.head = r;
		pending.tail = r;
	} else {
		struct request **p = &pending.head;
		while (*p && !ts_before(&due, &(*p)->due))
			p = &(*p)->next;
		r->next = *p;
		*p = r;
	}
	if (pending.head == r)
		pthread_cond_signal(&pending.cond);
	pthread_mutex_unlock(&pending.lock);
	return 1;
}

static void *timer_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&pending.lock);
	while (!pending.stopping) {
		struct timespec now;
		struct request *due, *last;

		if (!pending.head) {
			pthread_cond_wait(&pending.cond, &pending.lock);
			continue;
		}
		now = mono_now();
		if (ts_before(&now, &pending.head->due)) {
			struct timespec until = pending.head->due;
			pthread_cond_timedwait(&pending.cond, &pending.lock, &until);
			continue;
		}
		/* Detach the due prefix [head, last]; the head itself is due. */
		due = last = pending.head;
		while (last->next && !ts_before(&now, &last->next->due))
			last = last->next;
		pending.head = last->next;
		if (!pending.head)
			pending.tail = NULL;
		last->next = NULL;
		pthread_mutex_unlock(&pending.lock);
		resume_all(due);
		pthread_mutex_lock(&pending.lock);
	}
	pthread_mutex_unlock(&pending.lock);
	return NULL;
}

/* ---------------------------------------------------------------- issue-token */

/* Counts r, stores it as the last request and snapshots the settings. */
static void record(struct request *r, const char *method)
{
	const char *auth =
	    MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	const char *ctype =
	    MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
	size_t ml = strlen(method), al, cl, bl = r->too_big ? 0 : r->len;
	struct last_req *l, *old;

	auth = auth ? auth : "";
	ctype = ctype ? ctype : "";
	al = strlen(auth);
	cl = strlen(ctype);
	l = malloc(sizeof *l + ml + al + cl + bl + 4);
	if (l) {
		char *p = l->data;
		l->method = memcpy(p, method, ml + 1);
		p += ml + 1;
		l->authorization = memcpy(p, auth, al + 1);
		p += al + 1;
		l->content_type = memcpy(p, ctype, cl + 1);
		p += cl + 1;
		if (bl)
			memcpy(p, r->body, bl);
		p[bl] = '\0';
		l->body = p;
		l->body_len = bl;
	}

	pthread_mutex_lock(&shared.lock);
	shared.served++;
	r->settings = shared.settings;
	if (shared.fail_percent < 100 && random() % 100 >= shared.fail_percent)
		r->settings = (struct settings){0, 0, MODE_OK, 0, "", ""};
	else if (shared.next > 0 && --shared.next == 0) {
		shared.settings = (struct settings){0, 0, MODE_OK, 0, "", ""};
		shared.next = -1;
	}
	old = l ? shared.last : NULL;
	if (l)
		shared.last = l;
	pthread_mutex_unlock(&shared.lock);
	free(old);
	r->recorded = 1;
}

static enum MHD_Result handle_issue(struct worker *w, struct request *r, const char *method)
{
	const struct settings *s = &r->settings;

	if (!r->recorded) {
		record(r, method);
		if (s->latency_ms > 0 && delay(r))
			return MHD_YES;
	}
	if (s->mode == MODE_CLOSE)
		return MHD_NO;
	if (r->too_big)
		return respond_error(w->L, r->conn, 413, "invalid_request_error", "Request body too large");
	if (s->mode == MODE_GARBAGE) {
		static const char garbage[] = "<html>not json";
		return respond(r->conn, s->status ? (unsigned)s->status : 200, garbage, sizeof garbage - 1,
		               "text/html", s);
	}
	if (s->mode == MODE_NO_TOKEN)
		return respond_literal(r->conn, s->status ? (unsigned)s->status : 200, "{}");
	if (s->status != 0 && s->status != 200)
		return respond_forced(w->L, r->conn, s);
	if (strcmp(method, MHD_HTTP_METHOD_POST) != 0)
		return respond_error(w->L, r->conn, 404, "invalid_request_error", "Not found");
	return issue_token(w, r);
}

/* ---------------------------------------------------------------- control API */

static enum MHD_Result handle_last(struct worker *w, struct request *r)
{
	lua_State *L = w->L;
	int top = lua_gettop(L);
	const char *json;
	size_t len;
	enum MHD_Result ret;

	lua_createtable(L, 0, 5);
	pthread_mutex_lock(&shared.lock);
	if (shared.last) {
		const struct last_req *l = shared.last;
		lua_pushstring(L, l->method);
		lua_setfield(L, -2, "method");
		lua_pushliteral(L, PATH_ISSUE);
		lua_setfield(L, -2, "path");
		lua_pushstring(L, l->authorization);
		lua_setfield(L, -2, "authorization");
		lua_pushstring(L, l->content_type);
		lua_setfield(L, -2, "content_type");
		lua_pushlstring(L, l->body, l->body_len);
		lua_setfield(L, -2, "body");
	}
	pthread_mutex_unlock(&shared.lock);
	json = json_encode(L, -1, &len);
	ret = json ? respond(r->conn, 200, json, len, CT_JSON, NULL) : MHD_NO;
	lua_settop(L, top);
	return ret;
}

static enum MHD_Result handle_stats(struct worker *w, struct request *r)
{
	lua_State *L = w->L;
	int top = lua_gettop(L);
	const char *json;
	size_t len;
	enum MHD_Result ret;

	lua_createtable(L, 0, 2);
	pthread_mutex_lock(&shared.lock);
	lua_pushinteger(L, (lua_Integer)shared.served);
	lua_setfield(L, -2, "served");
	lua_pushinteger(L, (lua_Integer)shared.connections);
	lua_setfield(L, -2, "connections");
	pthread_mutex_unlock(&shared.lock);
	json = json_encode(L, -1, &len);
	ret = json ? respond(r->conn, 200, json, len, CT_JSON, NULL) : MHD_NO;
	lua_settop(L, top);
	return ret;
}

/* Validates the whole body first, then applies it: all or nothing. */
static enum MHD_Result handle_config(struct worker *w, struct request *r)
{
	static const char *const mode_names[] = {"ok", "garbage", "no_token", "close"};
	lua_State *L = w->L;
	int top = lua_gettop(L);
	struct settings next = {0, 0, MODE_OK, 0, "", ""};
	int has_latency = 0, has_status = 0, has_mode = 0, has_exp = 0, has_ra = 0, has_ra_ms = 0;
	long next_n = -1, percent = 100;
	const char *err = NULL;
	char msg[128];
	enum MHD_Result ret;

	if (json_decode(L, r->body, r->len) || lua_type(L, -1) != LUA_TTABLE) {
		err = "body must be a JSON object";
		goto out;
	}
	lua_pushnil(L);
	while (!err && lua_next(L, top + 1)) {
		const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
		if (strcmp(key, "latency_ms") == 0) {
			lua_Integer v = lua_tointeger(L, -1);
			if (!lua_isinteger(L, -1) || v < 0 || v > LATENCY_MAX_MS)
				err = "latency_ms must be an integer in 0..600000";
			next.latency_ms = (long)v;
			has_latency = 1;
		} else if (strcmp(key, "status") == 0) {
			lua_Integer v = lua_tointeger(L, -1);
			if (!lua_isinteger(L, -1) || (v != 0 && (v < 100 || v > 599)))
				err = "status must be 0 or an integer in 100..599";
			next.status = (int)v;
			has_status = 1;
		} else if (strcmp(key, "mode") == 0) {
			const char *m = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
			size_t i;
			for (i = 0; i < sizeof mode_names / sizeof mode_names[0]; i++)
				if (strcmp(m, mode_names[i]) == 0)
					break;
			if (i == sizeof mode_names / sizeof mode_names[0])
				err = "mode must be one of ok, garbage, no_token, close";
			next.mode = (enum mode)i;
			has_mode = 1;
		} else if (strcmp(key, "exp") == 0) {
			lua_Integer v = lua_tointeger(L, -1);
			if (!lua_isinteger(L, -1) || v < -1)
				err = "exp must be -1, 0 or a positive integer";
			next.exp = (long long)v;
			has_exp = 1;
		} else if (strcmp(key, "retry_after") == 0 || strcmp(key, "retry_after_ms") == 0) {
			int ms = key[11] != '\0';
			char *dst = ms ? next.retry_after_ms : next.retry_after;
			size_t cap = ms ? sizeof next.retry_after_ms : sizeof next.retry_after, n = 0;
			const char *v = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
			if (!v || n >= cap || strpbrk(v, "\r\n") || strlen(v) != n)
				err = "retry_after and retry_after_ms must be short strings (\"\": none)";
			else
				memcpy(dst, v, n + 1);
			*(ms ? &has_ra_ms : &has_ra) = 1;
		} else if (strcmp(key, "fail_percent") == 0) {
			lua_Integer v = lua_tointeger(L, -1);
			if (!lua_isinteger(L, -1) || v < 0 || v > 100)
				err = "fail_percent must be an integer in 0..100";
			percent = (long)v;
		} else if (strcmp(key, "next") == 0) {
			lua_Integer v = lua_tointeger(L, -1);
			if (!lua_isinteger(L, -1) || v < -1 || v == 0 || v > 1000000)
				err = "next must be -1 or an integer in 1..1000000";
			next_n = (long)v;
		} else {
			snprintf(msg, sizeof msg, "unknown setting: %.64s", key);
			err = msg;
		}
		lua_pop(L, 1);
	}
	if (err)
		goto out;
	pthread_mutex_lock(&shared.lock);
	if (has_latency)
		shared.settings.latency_ms = next.latency_ms;
	if (has_status)
		shared.settings.status = next.status;
	if (has_mode)
		shared.settings.mode = next.mode;
	if (has_exp)
		shared.settings.exp = next.exp;
	if (has_ra)
		memcpy(shared.settings.retry_after, next.retry_after, sizeof next.retry_after);
	if (has_ra_ms)
		memcpy(shared.settings.retry_after_ms, next.retry_after_ms, sizeof next.retry_after_ms);
	shared.next = next_n;
	shared.fail_percent = (int)percent;
	pthread_mutex_unlock(&shared.lock);
out:
	lua_settop(L, top);
	if (err)
		ret = respond_error(L, r->conn, 400, "invalid_request_error", err);
	else
		ret = respond_literal(r->conn, 200, "{\"ok\":true}");
	return ret;
}

static enum MHD_Result handle_reset(struct request *r)
{
	struct last_req *old;

	pthread_mutex_lock(&shared.lock);
	shared.settings = (struct settings){0, 0, MODE_OK, 0, "", ""};
	shared.served = 0;
	shared.connections = 0;
	shared.next = -1;
	shared.fail_percent = 100;
	old = shared.last;
	shared.last = NULL;
	pthread_mutex_unlock(&shared.lock);
	free(old);
	return respond_literal(r->conn, 200, "{\"ok\":true}");
}

/* ---------------------------------------------------------------- MHD glue */

static enum route route_of(const char *url, const char *method)
{
	int get = strcmp(method, MHD_HTTP_METHOD_GET) == 0;
	int post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;

	if (strcmp(url, PATH_ISSUE) == 0)
		return ROUTE_ISSUE; /* any method is recorded; only POST issues */
	if (get && strcmp(url, "/_double/last") == 0)
		return ROUTE_LAST;
	if (get && strcmp(url, "/_double/stats") == 0)
		return ROUTE_STATS;
	if (post && strcmp(url, "/_double/config") == 0)
		return ROUTE_CONFIG;
	if (post && strcmp(url, "/_double/reset") == 0)
		return ROUTE_RESET;
	return ROUTE_NOT_FOUND;
}

static int body_append(struct request *r, const char *data, size_t n)
{
	if (r->too_big)
		return 0;
	if (n > BODY_MAX - r->len) {
		r->too_big = 1;
		return 0;
	}
	if (r->len + n > r->cap) {
		size_t cap = r->cap * 2 > r->len + n ? r->cap * 2 : r->len + n;
		char *p;
		if (cap > BODY_MAX)
			cap = BODY_MAX;
		if (r->body == r->inline_body) {
			p = malloc(cap);
			if (p)
				memcpy(p, r->body, r->len);
		} else {
			p = realloc(r->body, cap);
		}
		if (!p)
			return -1;
		r->body = p;
		r->cap = cap;
	}
	memcpy(r->body + r->len, data, n);
	r->len += n;
	return 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
	struct request *r = *con_cls;
	struct worker *w;

	(void)cls;
	(void)version;
	if (!r) {
		const char *cl;

		r = malloc(sizeof *r);
		if (!r)
			return MHD_NO;
		r->route = route_of(url, method);
		r->too_big = r->recorded = r->resumed = 0;
		r->conn = conn;
		r->next = NULL;
		r->body = r->inline_body;
		r->len = 0;
		r->cap = sizeof r->inline_body;
		*con_cls = r;
		cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (!cl || strtoull(cl, NULL, 10) <= BODY_MAX)
			return MHD_YES;
		/* Answer before reading a body we would refuse anyway. */
		r->too_big = 1;
		if (r->route == ROUTE_ISSUE) {
			record(r, method);
			if (r->settings.mode == MODE_CLOSE)
				return MHD_NO;
		}
		return respond_literal(
		    conn, 413, "{\"type\":\"invalid_request_error\",\"message\":\"Request body too large\"}");
	}
	if (*upload_data_size) {
		if (body_append(r, upload_data, *upload_data_size))
			return MHD_NO;
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (r->route == ROUTE_NOT_FOUND)
		return respond_literal(conn, 404,
		                       "{\"type\":\"invalid_request_error\",\"message\":\"Not found\"}");
	w = worker_get();
	if (!w)
		return MHD_NO;
	if (r->too_big && r->route != ROUTE_ISSUE)
		return respond_error(w->L, conn, 413, "invalid_request_error", "Request body too large");
	switch (r->route) {
	case ROUTE_ISSUE:
		return handle_issue(w, r, method);
	case ROUTE_LAST:
		return handle_last(w, r);
	case ROUTE_STATS:
		return handle_stats(w, r);
	case ROUTE_CONFIG:
		return handle_config(w, r);
	case ROUTE_RESET:
		return handle_reset(r);
	case ROUTE_NOT_FOUND:
		break;
	}
	return MHD_NO;
}

/* Counts the connections accepted, for tests of connection reuse. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
	(void)cls;
	(void)conn;
	(void)socket_context;
	if (toe != MHD_CONNECTION_NOTIFY_STARTED)
		return;
	pthread_mutex_lock(&shared.lock);
	shared.connections++;
	pthread_mutex_unlock(&shared.lock);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
	struct request *r = *con_cls;

	(void)cls;
	(void)conn;
	(void)toe;
	if (!r)
		return;
	if (r->body != r->inline_body)
		free(r->body);
	free(r);
	*con_cls = NULL;
}

/* ---------------------------------------------------------------- main */

static int load_keys(void)
{
	const char *env = getenv("COURIER_DOUBLE_KEYS");
	char *save = NULL;

	api_keys_buf = strdup(env ? env : "test-key");
	if (!api_keys_buf)
		return -1;
	/* At most one key per two bytes ("a,b,c"). */
	api_keys = calloc(strlen(api_keys_buf) / 2 + 1, sizeof *api_keys);
	if (!api_keys)
		return -1;
	for (char *k = strtok_r(api_keys_buf, ",", &save); k; k = strtok_r(NULL, ",", &save))
		api_keys[api_key_count++] = k;
	return 0;
}

static int parse_uint(const char *s, long max, long *out)
{
	char *end;
	long v;

	if (!s || !*s)
		return -1;
	v = strtol(s, &end, 10);
	if (*end || v < 0 || v > max)
		return -1;
	*out = v;
	return 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: courier-double [--port N] [--threads N] [--tls-cert PEM --tls-key PEM]\n");
}

int main(int argc, char **argv)
{
	long port = 0, threads = 1;
	const char *cert_path = NULL, *key_path = NULL;
	char *cert = NULL, *key = NULL, why[256];
	size_t cert_len, key_len;
	struct sockaddr_in sa;
	struct sockaddr_in bound;
	socklen_t bound_len = sizeof bound;
	struct MHD_OptionItem opts[10];
	size_t nopts = 0;
	const union MHD_DaemonInfo *info;
	struct MHD_Daemon *d;
	pthread_condattr_t ca;
	pthread_t timer;
	sigset_t sigs;
	struct rlimit rl;
	struct request *left;
	int sig;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
			if (parse_uint(argv[++i], 65535, &port)) {
				usage();
				return 2;
			}
		} else if (strcmp(argv[i], "--tls-cert") == 0 && i + 1 < argc) {
			cert_path = argv[++i];
		} else if (strcmp(argv[i], "--tls-key") == 0 && i + 1 < argc) {
			key_path = argv[++i];
		} else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
			if (parse_uint(argv[++i], THREADS_MAX, &threads) || threads < 1) {
				usage();
				return 2;
			}
		} else {
			usage();
			return 2;
		}
	}
	if (!cert_path != !key_path) {
		usage();
		return 2;
	}
	/* HTTPS mode: MHD (GnuTLS) serves the certificate chain and its key. */
	if (cert_path && (fileio_read(cert_path, 1 << 20, 0, &cert, &cert_len, why, sizeof(why)) ||
	                  fileio_read(key_path, 1 << 20, 0, &key, &key_len, why, sizeof(why)))) {
		fprintf(stderr, "courier-double: %s\n", why);
		return 1;
	}
	signing_secret = getenv("COURIER_DOUBLE_SIGNING_SECRET");
	if (!signing_secret)
		signing_secret = "double-signing-secret";
	if (load_keys()) {
		fprintf(stderr, "courier-double: out of memory\n");
		return 1;
	}
	jwt_header_b64_len = b64url(jwt_header_b64, (const unsigned char *)JWT_HEADER, strlen(JWT_HEADER));
	hmac_alg = EVP_MAC_fetch(NULL, "HMAC", NULL);
	if (!hmac_alg || pthread_key_create(&worker_key, worker_free)) {
		fprintf(stderr, "courier-double: cannot set up HMAC or thread keys\n");
		return 1;
	}
	/* Up to 10000 connections need as many descriptors. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}

	/* Threads inherit the mask: block before any starts, read with sigwait. */
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_destroy(&pending.cond);
	pthread_cond_init(&pending.cond, &ca);
	pthread_condattr_destroy(&ca);
	if (pthread_create(&timer, NULL, timer_main, NULL)) {
		fprintf(stderr, "courier-double: cannot start the timer thread\n");
		return 1;
	}

	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	opts[nopts++] = (struct MHD_OptionItem){MHD_OPTION_SOCK_ADDR, 0, &sa};
	opts[nopts++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT, 30, NULL};
	opts[nopts++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT, 10000, NULL};
	opts[nopts++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, NULL};
	opts[nopts++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)on_connection, NULL};
	if (threads > 1)
		opts[nopts++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, threads, NULL};
	if (cert) {
		opts[nopts++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, cert};
		opts[nopts++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, key};
	}
	opts[nopts++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};

	d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
	                         MHD_USE_ERROR_LOG | (cert ? MHD_USE_TLS : 0),
	                     0, NULL, NULL, on_request, NULL, MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
	if (!d) {
		fprintf(stderr, "courier-double: cannot listen on 127.0.0.1:%ld\n", port);
		return 1;
	}
	info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_LISTEN_FD);
	if (!info || getsockname(info->listen_fd, (struct sockaddr *)&bound, &bound_len)) {
		fprintf(stderr, "courier-double: cannot read the bound port\n");
		MHD_stop_daemon(d);
		return 1;
	}
	printf("PORT %u\n", (unsigned)ntohs(bound.sin_port));
	fflush(stdout);

	while (sigwait(&sigs, &sig) != 0)
		;

	/* Nothing may stay suspended across MHD_stop_daemon. */
	pthread_mutex_lock(&pending.lock);
	pending.stopping = 1;
	left = pending.head;
	pending.head = pending.tail = NULL;
	pthread_cond_signal(&pending.cond);
	pthread_mutex_unlock(&pending.lock);
	pthread_join(timer, NULL);
	resume_all(left);
	MHD_stop_daemon(d);

	free(shared.last);
	free(api_keys);
	free(api_keys_buf);
	EVP_MAC_free(hmac_alg);
	free(cert);
	free(key);
	return 0;
}
