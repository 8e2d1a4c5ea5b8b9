/*
 * courier.c — the Courier client: POST /auth/issue-token, asynchronously.
 *
 * Owns the libcurl multi handle and the thread that drives it. A slow Courier
 * costs a socket and a struct per request, never a thread. Easy handles are
 * pooled (curl_easy_reset keeps their TLS session cache). The Authorization
 * header holding the API key is zeroed before it is freed; the key is never
 * logged. This file never calls back into the HTTP front except through the
 * job's done callback.
 */
#include "courier.h"

#include <curl/curl.h>
#include <lauxlib.h>
#include <lua.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"
#include "json.h"
#include "jwt.h"
#include "secret.h"

#define RESP_MAX (64 * 1024)
#define POOL_MAX 256

struct courier_client {
	CURLM *multi;
	pthread_t thread;
	pthread_mutex_t lock;
	struct courier_job *queue, *queue_tail; /* submitted, not yet added */
	bool stopping, abort_all;
	struct courier_job *running; /* started jobs, owned by the thread */
	CURL *pool[POOL_MAX];
	int n_pool; /* owned by the thread */
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	struct courier_job *job = arg;
	size_t n = size * nmemb;

	if (job->resp_len + n > RESP_MAX)
		return 0; /* too big to be a token answer: fails the transfer */
	if (job->resp_len + n + 1 > job->resp_cap) {
		size_t cap = job->resp_cap ? job->resp_cap * 2 : 1024;
		while (cap < job->resp_len + n + 1)
			cap *= 2;
		char *p = realloc(job->resp, cap);
		if (!p)
			return 0;
		job->resp = p;
		job->resp_cap = cap;
	}
	memcpy(job->resp + job->resp_len, data, n);
	job->resp_len += n;
	job->resp[job->resp_len] = '\0';
	return n;
}

static void free_headers(struct courier_job *job)
{
	for (struct curl_slist *h = job->headers; h; h = h->next)
		OPENSSL_cleanse(h->data, strlen(h->data));
	curl_slist_free_all(job->headers);
	job->headers = NULL;
}

static int start_job(struct courier_client *c, struct courier_job *job)
{
	CURL *e = c->n_pool ? c->pool[--c->n_pool] : curl_easy_init();
	char *auth;
	size_t alen;

	if (!e)
		return -1;
	alen = sizeof("Authorization: Bearer ") + job->api_key->len;
	auth = malloc(alen);
	if (!auth) {
		curl_easy_cleanup(e);
		return -1;
	}
	memcpy(auth, "Authorization: Bearer ", sizeof("Authorization: Bearer ") - 1);
	memcpy(auth + sizeof("Authorization: Bearer ") - 1, job->api_key->data, job->api_key->len);
	auth[alen - 1] = '\0';
	job->headers = curl_slist_append(NULL, auth);
	OPENSSL_cleanse(auth, alen);
	free(auth);
	if (job->headers) {
		struct curl_slist *h = curl_slist_append(job->headers, "Content-Type: application/json");
		if (h)
			h = curl_slist_append(h, "Accept: application/json");
		if (h)
			h = curl_slist_append(h, "Expect:");
		if (!h) {
			free_headers(job);
		}
	}
	if (!job->headers) {
		curl_easy_cleanup(e);
		return -1;
	}
	curl_easy_setopt(e, CURLOPT_URL, job->url);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, job->headers);
	curl_easy_setopt(e, CURLOPT_POST, 1L);
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, job->body);
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)job->body_len);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, job);
	curl_easy_setopt(e, CURLOPT_PRIVATE, job);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, job->timeout_ms);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, job->connect_timeout_ms);
	curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "courier-broker/" BROKER_VERSION);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, job->error);
	job->error[0] = '\0';
	job->easy = e;
	if (curl_multi_add_handle(c->multi, e) != CURLM_OK) {
		free_headers(job);
		curl_easy_cleanup(e);
		return -1;
	}
	job->prev = NULL;
	job->next = c->running;
	if (c->running)
		c->running->prev = job;
	c->running = job;
	return 0;
}

static void finish(struct courier_client *c, struct courier_job *job, CURLcode rc)
{
	CURL *e = job->easy;
	double t = 0;

	if (rc == CURLE_OK) {
		curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &job->status);
	} else {
		job->status = 0;
		job->timed_out = rc == CURLE_OPERATION_TIMEDOUT;
		if (!job->error[0])
			snprintf(job->error, sizeof(job->error), "%s", curl_easy_strerror(rc));
	}
	curl_easy_getinfo(e, CURLINFO_TOTAL_TIME, &t);
	job->seconds = t;
	curl_multi_remove_handle(c->multi, e);
	if (job->prev)
		job->prev->next = job->next;
	else
		c->running = job->next;
	if (job->next)
		job->next->prev = job->prev;
	job->next = job->prev = NULL;
	free_headers(job);
	job->easy = NULL;
	if (c->n_pool < POOL_MAX) {
		curl_easy_reset(e);
		c->pool[c->n_pool++] = e;
	} else {
		curl_easy_cleanup(e);
	}
	job->done(job);
}

static void fail_unstarted(struct courier_job *job, const char *why)
{
	job->status = 0;
	snprintf(job->error, sizeof(job->error), "%s", why);
	job->done(job);
}

static void *run(void *arg)
{
	struct courier_client *c = arg;

	for (;;) {
		struct courier_job *q;
		bool stopping, abort_all;
		CURLMsg *m;
		int left, still;

		pthread_mutex_lock(&c->lock);
		q = c->queue;
		c->queue = c->queue_tail = NULL;
		stopping = c->stopping;
		abort_all = c->abort_all;
		c->abort_all = false;
		pthread_mutex_unlock(&c->lock);

		while (q) {
			struct courier_job *next = q->next;
			q->next = NULL;
			if (abort_all || start_job(c, q) != 0)
				fail_unstarted(q, abort_all ? "aborted" : "could not start the call");
			q = next;
		}
		if (abort_all || stopping) {
			/* Stop every running transfer; each job still gets its answer. */
			while (c->running) {
				snprintf(c->running->error, sizeof(c->running->error), "aborted");
				finish(c, c->running, CURLE_ABORTED_BY_CALLBACK);
			}
			if (stopping)
				break;
		}

		curl_multi_perform(c->multi, &still);
		while ((m = curl_multi_info_read(c->multi, &left))) {
			if (m->msg == CURLMSG_DONE) {
				struct courier_job *job;
				curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&job);
				finish(c, job, m->data.result);
			}
		}
		curl_multi_poll(c->multi, NULL, 0, 1000, NULL);
	}
	return NULL;
}

struct courier_client *courier_client_new(unsigned max_host_connections, char *err, size_t errlen)
{
	struct courier_client *c = calloc(1, sizeof(*c));

	if (!c) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	c->multi = curl_multi_init();
	if (!c->multi) {
		snprintf(err, errlen, "curl_multi_init failed");
		free(c);
		return NULL;
	}
	curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)max_host_connections);
	curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, (long)max_host_connections);
	pthread_mutex_init(&c->lock, NULL);
	if (pthread_create(&c->thread, NULL, run, c) != 0) {
		snprintf(err, errlen, "cannot start the Courier client thread");
		curl_multi_cleanup(c->multi);
		pthread_mutex_destroy(&c->lock);
		free(c);
		return NULL;
	}
	return c;
}

int courier_submit(struct courier_client *c, struct courier_job *job)
{
	pthread_mutex_lock(&c->lock);
	if (c->stopping) {
		pthread_mutex_unlock(&c->lock);
		return -1;
	}
	job->next = NULL;
	if (c->queue_tail)
		c->queue_tail->next = job;
	else
		c->queue = job;
	c->queue_tail = job;
	pthread_mutex_unlock(&c->lock);
	curl_multi_wakeup(c->multi);
	return 0;
}

void courier_abort_all(struct courier_client *c)
{
	pthread_mutex_lock(&c->lock);
	c->abort_all = true;
	pthread_mutex_unlock(&c->lock);
	curl_multi_wakeup(c->multi);
}

void courier_client_free(struct courier_client *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	c->stopping = true;
	pthread_mutex_unlock(&c->lock);
	curl_multi_wakeup(c->multi);
	pthread_join(c->thread, NULL);
	for (int i = 0; i < c->n_pool; i++)
		curl_easy_cleanup(c->pool[i]);
	curl_multi_cleanup(c->multi);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

void courier_job_cleanup(struct courier_job *job)
{
	free(job->resp);
	job->resp = NULL;
	job->resp_len = job->resp_cap = 0;
}

const char *courier_request_body(lua_State *L, const struct grant *g, size_t *len)
{
	const char *s;

	lua_createtable(L, 0, 2);
	lua_pushstring(L, g->scope);
	lua_setfield(L, -2, "scope");
	lua_pushstring(L, g->courier_expires);
	lua_setfield(L, -2, "expires_in");
	s = json_encode(L, -1, len);
	if (!s) {
		lua_pop(L, 1);
		return NULL;
	}
	lua_remove(L, -2);
	return s;
}

/* A JWT is three non-empty base64url segments. */
static bool looks_like_jwt(const char *s, size_t len)
{
	int dots = 0;
	size_t seg = 0;

	if (len < 5 || len > 16384)
		return false;
	for (size_t i = 0; i < len; i++) {
		char ch = s[i];
		if (ch == '.') {
			if (seg == 0 || ++dots > 2)
				return false;
			seg = 0;
		} else if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
			   ch == '-' || ch == '_') {
			seg++;
		} else {
			return false;
		}
	}
	return dots == 2 && seg > 0;
}

const char *courier_read_token(lua_State *L, const char *resp, size_t resp_len, size_t *len, long long *exp)
{
	int top = lua_gettop(L);
	const char *tok;

	*exp = 0;
	if (!resp || json_decode(L, resp, resp_len) != 0)
		return NULL;
	if (lua_type(L, -1) != LUA_TTABLE)
		goto fail;
	lua_getfield(L, -1, "token");
	if (lua_type(L, -1) != LUA_TSTRING)
		goto fail;
	tok = lua_tolstring(L, -1, len);
	if (!looks_like_jwt(tok, *len))
		goto fail;
	if (jwt_peek_claims(L, tok, *len) == 0) {
		lua_getfield(L, -1, "exp");
		if (lua_isinteger(L, -1))
			*exp = (long long)lua_tointeger(L, -1);
		lua_pop(L, 2);
	}
	lua_remove(L, -2); /* the decoded answer; the token string stays */
	return lua_tolstring(L, -1, len);
fail:
	lua_settop(L, top);
	return NULL;
}
