/*
 * test_courier.c — unit tests for src/courier.c.
 *
 * Owns the proof that the Courier client works when driven the way an event
 * loop drives it (courier_fd, courier_due, courier_run on one thread): the
 * exact request Courier receives, one done per job whatever the outcome
 * (answer, refused connection, timeout, abort), and the protocol helpers.
 * The Courier side is a libmicrohttpd server on 127.0.0.1, or a listening
 * socket that never accepts (a Courier that never answers). Every wait is
 * bounded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <lauxlib.h>
#include <lua.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "courier.h"
#include "envelope.h"
#include "json.h"
#include "secret.h"

/* {"alg":"HS256"}.{"exp":2000000000}.sig, base64url */
#define TOKEN "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjIwMDAwMDAwMDB9.c2ln"

/* ------------------------------------------------------- a fake Courier */

struct seen {
	pthread_mutex_t lock;
	char auth[256];
	char body[1024];
	size_t body_len;
	int calls;
};

static enum MHD_Result on_courier(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **ctx)
{
	struct seen *s = cls;
	static const char answer[] = "{\"token\":\"" TOKEN "\"}";
	struct MHD_Response *resp;
	enum MHD_Result ret;
	const char *auth;

	(void)url;
	(void)method;
	(void)version;
	if (!*ctx) {
		*ctx = s;
		return MHD_YES;
	}
	pthread_mutex_lock(&s->lock);
	if (*upload_size) {
		size_t n = *upload_size;
		if (n > sizeof(s->body) - 1 - s->body_len)
			n = sizeof(s->body) - 1 - s->body_len;
		memcpy(s->body + s->body_len, upload, n);
		s->body_len += n;
		s->body[s->body_len] = '\0';
		*upload_size = 0;
		pthread_mutex_unlock(&s->lock);
		return MHD_YES;
	}
	auth = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
	snprintf(s->auth, sizeof(s->auth), "%s", auth ? auth : "");
	s->calls++;
	pthread_mutex_unlock(&s->lock);
	resp = MHD_create_response_from_buffer(sizeof(answer) - 1, (void *)answer, MHD_RESPMEM_PERSISTENT);
	MHD_add_response_header(resp, "Content-Type", "application/json");
	ret = MHD_queue_response(conn, 200, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* A listening socket on 127.0.0.1 that never accepts: connections complete
 * (the backlog) and requests are never answered. */
static int blackhole(unsigned short *port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 16), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	*port = ntohs(sa.sin_port);
	return fd;
}

/* A port on 127.0.0.1 where nothing listens. */
static unsigned short closed_port(void)
{
	unsigned short port;
	int fd = blackhole(&port);

	close(fd);
	return port;
}

/* ---------------------------------------------------------- the client */

struct outcome {
	int done;
	long status;
	bool timed_out;
	bool aborted;
	char error[256];
	char resp[512];
};

static void on_done(struct courier_job *job)
{
	struct outcome *o = job->arg;

	o->done++;
	o->status = job->status;
	o->timed_out = job->timed_out;
	o->aborted = job->aborted;
	snprintf(o->error, sizeof(o->error), "%s", job->error);
	snprintf(o->resp, sizeof(o->resp), "%.*s", (int)job->resp_len, job->resp ? job->resp : "");
}

static double now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* Drives c as an event loop would until o is done or ms pass. */
static void drive(struct courier_client *c, struct outcome *o, double ms)
{
	struct epoll_event ev = {.events = EPOLLIN};
	double end = now_ms() + ms;
	int ep = epoll_create1(0);

	assert_true(ep >= 0);
	assert_int_equal(epoll_ctl(ep, EPOLL_CTL_ADD, courier_fd(c), &ev), 0);
	while (!o->done && now_ms() < end) {
		int n = epoll_wait(ep, &ev, 1, courier_due(c) ? 0 : 20);
		courier_run(c, n > 0);
	}
	close(ep);
}

static struct secret api_key = {.data = (unsigned char *)"test-courier-key", .len = 16};

static void prepare(struct courier_job *job, struct outcome *o, const char *url, long timeout_ms)
{
	static const char body[] =
	    "{\"scope\":\"user_id:alice inbox:read:messages\",\"expires_in\":\"3600s\"}";

	memset(job, 0, sizeof(*job));
	memset(o, 0, sizeof(*o));
	job->url = url;
	job->api_key = &api_key;
	job->body = body;
	job->body_len = sizeof(body) - 1;
	job->timeout_ms = timeout_ms;
	job->connect_timeout_ms = 1000;
	job->done = on_done;
	job->arg = o;
}

static void test_call_sends_exactly_the_request(void **state)
{
	struct seen seen = {.lock = PTHREAD_MUTEX_INITIALIZER};
	struct MHD_Daemon *d;
	const union MHD_DaemonInfo *di;
	struct courier_client *c;
	struct courier_job job;
	struct outcome o;
	char err[128], url[96];

	(void)state;
	d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL, on_courier,
	                     &seen, MHD_OPTION_END);
	assert_non_null(d);
	di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/auth/issue-token", di->port);
	c = courier_client_new(4, err, sizeof(err));
	assert_non_null(c);

	for (int i = 0; i < 3; i++) { /* the connection is reused: every call still complete */
		prepare(&job, &o, url, 5000);
		seen.body_len = 0;
		assert_int_equal(courier_submit(c, &job), 0);
		drive(c, &o, 5000);
		assert_int_equal(o.done, 1);
		assert_int_equal(o.status, 200);
		assert_string_equal(o.resp, "{\"token\":\"" TOKEN "\"}");
		assert_string_equal(seen.auth, "Bearer test-courier-key");
		assert_string_equal(seen.body, job.body);
		courier_job_cleanup(&job);
	}
	assert_int_equal(seen.calls, 3);
	courier_client_free(c);
	MHD_stop_daemon(d);
}

static void test_refused_connection_ends_the_job(void **state)
{
	struct courier_client *c;
	struct courier_job job;
	struct outcome o;
	char err[128], url[96];

	(void)state;
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/auth/issue-token", closed_port());
	c = courier_client_new(4, err, sizeof(err));
	assert_non_null(c);
	prepare(&job, &o, url, 5000);
	assert_int_equal(courier_submit(c, &job), 0);
	drive(c, &o, 5000);
	assert_int_equal(o.done, 1);
	assert_int_equal(o.status, 0);
	assert_false(o.timed_out);
	assert_true(o.error[0] != '\0');
	courier_job_cleanup(&job);
	courier_client_free(c);
}

static void test_silent_courier_times_out(void **state)
{
	unsigned short port;
	int fd = blackhole(&port);
	struct courier_client *c;
	struct courier_job job;
	struct outcome o;
	char err[128], url[96];
	double t0;

	(void)state;
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/auth/issue-token", port);
	c = courier_client_new(4, err, sizeof(err));
	assert_non_null(c);
	prepare(&job, &o, url, 200);
	t0 = now_ms();
	assert_int_equal(courier_submit(c, &job), 0);
	drive(c, &o, 5000);
	assert_int_equal(o.done, 1);
	assert_int_equal(o.status, 0);
	assert_true(o.timed_out);
	assert_false(o.aborted);
	assert_true(now_ms() - t0 >= 150);
	courier_job_cleanup(&job);
	courier_client_free(c);
	close(fd);
}

static void test_abort_all_ends_running_jobs(void **state)
{
	unsigned short port;
	int fd = blackhole(&port);
	struct courier_client *c;
	struct courier_job jobs[3];
	struct outcome o[3];
	char err[128], url[96];

	(void)state;
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/auth/issue-token", port);
	c = courier_client_new(4, err, sizeof(err));
	assert_non_null(c);
	for (int i = 0; i < 3; i++) {
		prepare(&jobs[i], &o[i], url, 60000);
		assert_int_equal(courier_submit(c, &jobs[i]), 0);
	}
	drive(c, &o[0], 200); /* started and waiting: nothing ends */
	for (int i = 0; i < 3; i++)
		assert_int_equal(o[i].done, 0);
	courier_abort_all(c);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(o[i].done, 1);
		assert_int_equal(o[i].status, 0);
		assert_string_equal(o[i].error, "aborted");
		assert_true(o[i].aborted);
		courier_job_cleanup(&jobs[i]);
	}
	courier_client_free(c);
	close(fd);
}

/* ------------------------------------------------------- the protocol */

static lua_State *new_state(void)
{
	lua_State *L = luaL_newstate();
	assert_non_null(L);
	assert_int_equal(json_open(L), 0);
	return L;
}

static void test_request_body_is_scope_and_expires_in(void **state)
{
	lua_State *L = new_state();
	struct grant *g = calloc(1, sizeof(*g));
	const char *s;
	size_t len;

	(void)state;
	snprintf(g->scope, sizeof(g->scope), "user_id:alice inbox:read:messages");
	snprintf(g->courier_expires, sizeof(g->courier_expires), "3600s");
	s = courier_request_body(L, g, &len);
	assert_non_null(s);
	assert_int_equal(json_decode(L, s, len), 0);
	lua_getfield(L, -1, "scope");
	assert_string_equal(lua_tostring(L, -1), g->scope);
	lua_getfield(L, -2, "expires_in");
	assert_string_equal(lua_tostring(L, -1), "3600s");
	lua_pop(L, 2);
	lua_pushnil(L);
	for (int n = 0; lua_next(L, -2); n++) {
		assert_true(n < 2); /* exactly the two fields */
		lua_pop(L, 1);
	}
	free(g);
	lua_close(L);
}

static void test_read_token(void **state)
{
	static const char ok[] = "{\"token\":\"" TOKEN "\"}";
	static const char *const bad[] = {
	    "",
	    "not json",
	    "[]",
	    "{}",
	    "{\"token\":42}",
	    "{\"token\":\"not a jwt\"}",
	    "{\"token\":\"a.b\"}",
	    "{\"token\":\"a..c\"}",
	    "{\"token\":\"a.b.c.d\"}",
	    NULL,
	};
	lua_State *L = new_state();
	const char *tok;
	long long exp;
	size_t len;
	int top = lua_gettop(L);

	(void)state;
	tok = courier_read_token(L, ok, sizeof(ok) - 1, &len, &exp);
	assert_non_null(tok);
	assert_string_equal(tok, TOKEN);
	assert_int_equal(len, strlen(TOKEN));
	assert_int_equal(exp, 2000000000LL);
	lua_settop(L, top);
	for (const char *const *b = bad; *b; b++) {
		assert_null(courier_read_token(L, *b, strlen(*b), &len, &exp));
		assert_int_equal(lua_gettop(L), top); /* nothing pushed */
	}
	lua_close(L);
}

/* Issue 10, I4: Courier's exp must agree with the grant. */
static void test_check_expiry(void **state)
{
	const long long now = 1800000000LL;
	char why[160];

	(void)state;
	assert_int_equal(courier_check_expiry(now + 3600, now, 3600, why, sizeof(why)), 0);
	assert_int_equal(courier_check_expiry(now + 3600 + COURIER_EXP_SKEW_S, now, 3600, why, sizeof(why)),
	                 0);
	assert_int_equal(courier_check_expiry(now + 3600 - COURIER_EXP_SKEW_S, now, 3600, why, sizeof(why)),
	                 0);
	assert_int_equal(courier_check_expiry(now + 3601 + COURIER_EXP_SKEW_S, now, 3600, why, sizeof(why)),
	                 -1);
	assert_int_equal(courier_check_expiry(now + 3599 - COURIER_EXP_SKEW_S, now, 3600, why, sizeof(why)),
	                 -1);
	assert_int_equal(courier_check_expiry(1, now, 3600, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "3600s were granted"));
	assert_int_equal(courier_check_expiry(9007199254740992LL, now, 3600, why, sizeof(why)), -1);
	assert_int_equal(courier_check_expiry(0x7fffffffffffffffLL, now, 3600, why, sizeof(why)), -1);
	assert_int_equal(courier_check_expiry(0, now, 3600, why, sizeof(why)), -1);
	assert_string_equal(why, "the token has no usable exp");
	assert_int_equal(courier_check_expiry(-5, now, 3600, why, sizeof(why)), -1);
}

static void test_retryable_statuses(void **state)
{
	static const long yes[] = {408, 409, 429, 500, 502, 503, 504, 599};
	static const long no[] = {0, 200, 201, 301, 400, 401, 403, 404, 410, 422, 600};

	(void)state;
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
		assert_true(courier_status_retryable(yes[i]));
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		assert_false(courier_status_retryable(no[i]));
}

static void test_retry_after_values(void **state)
{
	long long now = 1445412480; /* Wed, 21 Oct 2015 07:28:00 GMT */

	(void)state;
	assert_int_equal(courier_retry_after_ms("0", now), 0);
	assert_int_equal(courier_retry_after_ms("3", now), 3000);
	assert_int_equal(courier_retry_after_ms(" 120 ", now), 120000);
	assert_int_equal(courier_retry_after_ms("99999999999999999999", now), 86400000L); /* capped */
	assert_int_equal(courier_retry_after_ms("Wed, 21 Oct 2015 07:28:02 GMT", now), 2000);
	assert_int_equal(courier_retry_after_ms("Wed, 21 Oct 2015 07:27:00 GMT", now), 0); /* past */
	assert_int_equal(courier_retry_after_ms("3x", now), -1);
	assert_int_equal(courier_retry_after_ms("-1", now), -1);
	assert_int_equal(courier_retry_after_ms("soon", now), -1);
	assert_int_equal(courier_retry_after_ms("", now), -1);
}

/* A Courier answering 503 with Retry-After: 10 (cls counts the calls). */
static enum MHD_Result on_busy(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                               const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
	static const char answer[] = "{\"type\":\"api_error\"}";
	struct MHD_Response *r;
	enum MHD_Result ret;

	(void)url;
	(void)method;
	(void)version;
	(void)upload;
	if (!*con_cls) {
		*con_cls = conn;
		return MHD_YES;
	}
	if (*upload_size) {
		*upload_size = 0;
		return MHD_YES;
	}
	__atomic_add_fetch((int *)cls, 1, __ATOMIC_SEQ_CST);
	r = MHD_create_response_from_buffer(sizeof(answer) - 1, (void *)answer, MHD_RESPMEM_PERSISTENT);
	MHD_add_response_header(r, "Retry-After", "10");
	ret = MHD_queue_response(conn, 503, r);
	MHD_destroy_response(r);
	return ret;
}

/* A job waiting for its retry (Retry-After: 10 s, within its 60 s) holds
 * nothing running; courier_abort_all ends it as aborted, not timed out. */
static void test_abort_all_ends_jobs_waiting_to_retry(void **state)
{
	int calls = 0;
	struct MHD_Daemon *d;
	struct courier_client *c;
	struct courier_job job;
	struct outcome o;
	char err[128], url[96];

	(void)state;
	d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL, on_busy,
	                     &calls, MHD_OPTION_END);
	assert_non_null(d);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/retry-wait-unit-test",
	         MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT)->port);
	c = courier_client_new(4, err, sizeof(err));
	assert_non_null(c);
	prepare(&job, &o, url, 60000);
	job.retries = 2;
	assert_int_equal(courier_submit(c, &job), 0);
	for (int i = 0; i < 100 && __atomic_load_n(&calls, __ATOMIC_SEQ_CST) < 1; i++)
		drive(c, &o, 20);
	drive(c, &o, 300); /* the answer is read; the retry waits 10 s */
	assert_int_equal(calls, 1);
	assert_int_equal(o.done, 0);
	courier_abort_all(c);
	assert_int_equal(o.done, 1);
	assert_true(o.aborted);
	assert_false(o.timed_out);
	assert_int_equal(job.attempts, 1);
	courier_job_cleanup(&job);
	courier_client_free(c);
	MHD_stop_daemon(d);
}

/* Retries on a refused connection, then the breaker of that URL and key
 * opens: the next submit makes no call. */
static void test_refused_connection_retried_then_breaker_opens(void **state)
{
	struct courier_client *c;
	struct courier_job job;
	struct outcome o;
	char err[128], url[96];

	(void)state;
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/breaker-unit-test", closed_port());
	c = courier_client_new(4, err, sizeof(err));
	assert_non_null(c);
	for (int i = 0; i < 2; i++) {
		prepare(&job, &o, url, 5000);
		job.retries = 2;
		job.breaker_failures = 2;
		job.breaker_cooldown_ms = 30000;
		assert_int_equal(courier_submit(c, &job), 0);
		drive(c, &o, 5000);
		assert_int_equal(o.done, 1);
		assert_int_equal(o.status, 0);
		assert_int_equal(job.attempts, 3);
		courier_job_cleanup(&job);
	}
	prepare(&job, &o, url, 5000);
	job.breaker_failures = 2;
	job.breaker_cooldown_ms = 30000;
	assert_int_equal(courier_submit(c, &job), COURIER_PAUSED);
	assert_true(job.retry_after_s >= 29 && job.retry_after_s <= 30);
	assert_int_equal(o.done, 0);
	courier_job_cleanup(&job);
	courier_client_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_call_sends_exactly_the_request),
	    cmocka_unit_test(test_refused_connection_ends_the_job),
	    cmocka_unit_test(test_silent_courier_times_out),
	    cmocka_unit_test(test_abort_all_ends_running_jobs),
	    cmocka_unit_test(test_request_body_is_scope_and_expires_in),
	    cmocka_unit_test(test_read_token),
	    cmocka_unit_test(test_check_expiry),
	    cmocka_unit_test(test_retryable_statuses),
	    cmocka_unit_test(test_retry_after_values),
	    cmocka_unit_test(test_refused_connection_retried_then_breaker_opens),
	    cmocka_unit_test(test_abort_all_ends_jobs_waiting_to_retry),
	};
	int rc;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return rc;
}
