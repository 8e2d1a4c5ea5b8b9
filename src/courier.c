/*
 * courier.c — the Courier client: POST /auth/issue-token, asynchronously.
 *
 * Owns a libcurl multi handle and the epoll set (its sockets and its timer)
 * that drives it; the owner's event loop watches that set's descriptor and
 * calls courier_run when it is ready. Everything runs on the owner's thread:
 * no locks, no hand-off. A slow Courier costs a socket and a struct per
 * request, never a thread. Easy handles are pooled. TLS costs once per loop,
 * not per connection: the CA store is libcurl's cached one (CURLOPT_CAPATH
 * cleared: with a CA path set, as Debian builds it, every connection would
 * parse the whole bundle again) and TLS sessions live in the client's share
 * handle, so a reconnect resumes them. The Authorization header holding the API key is
 * zeroed before it is freed; the key is never logged. This file never calls
 * back into the HTTP front except through the job's done callback.
 *
 * Also owns the retries (a failed attempt waits on the same timerfd, never
 * blocking the loop, then starts again within the job's timeout_ms); asks
 * the circuit breakers (breaker.c, one per Courier endpoint and API key)
 * before each call and tells them its outcome.
 */
#include "courier.h"

#include <ctype.h>
#include <curl/curl.h>
#include <lauxlib.h>
#include <lua.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "breaker.h"
#include "buf.h"
#include "clock.h"
#include "envelope.h"
#include "json.h"
#include "jwt.h"
#include "log.h"
#include "metrics.h"
#include "secret.h"
#include "trust.h"
#include "version.h"

#define RESP_MAX (64 * 1024)
#define POOL_MAX 256

/* Backoff before retry n (1, 2, ...): BACKOFF_BASE_MS << (n - 1), capped,
 * then between half and all of it (jitter spreads the loops' retries). */
#define BACKOFF_BASE_MS 100
#define BACKOFF_MAX_MS  2000
/* A retry is only worth starting with at least this much of timeout_ms left. */
#define ATTEMPT_MIN_MS 50
/* The retry budget (per loop, in hundredths of a retry): beyond job->retries,
 * a call may retry up to RETRY_EXTRA_MAX more times, each spending one retry
 * that calls Courier answered earned (retry_budget_percent each), saved up
 * to RETRY_BUDGET_CAP. Sporadic failures (a fifth of calls failing at random:
 * one call in 125 exhausts 2 retries) get their extra tries; an outage earns
 * nothing, so it never multiplies the load beyond job->retries. */
#define RETRY_EXTRA_MAX  3
#define RETRY_BUDGET_CAP 2000

struct courier_client {
	CURLM *multi;
	CURLSH *share;      /* TLS sessions and DNS of every easy handle; one thread: no locks */
	int epfd, tfd;      /* epoll set of libcurl's sockets and timer; the timer */
	long long armed_at; /* when the timerfd fires (CLOCK_MONOTONIC ms), 0: not armed */
	bool due_now;       /* libcurl asked for a timeout of 0: run it without waiting */
	int ended;          /* jobs whose done ran in this courier_run */
	struct courier_job *running;
	struct courier_job *waiting; /* failed attempts waiting for their retry */
	CURL *pool[POOL_MAX];
	int n_pool;
	uint64_t rng;      /* xorshift64 state, for the jitter */
	long retry_budget; /* hundredths of a retry beyond job->retries (RETRY_BUDGET_CAP) */
};

/* ------------------------------------------------------ circuit breakers */

/* The job's call as its breaker sees it (breaker.h). */
static struct breaker_call call_of(const struct courier_job *job)
{
	return (struct breaker_call){.url = job->url,
	                             .fingerprint = job->api_key->fingerprint,
	                             .failures_max = job->breaker_failures,
	                             .cooldown_ms = job->breaker_cooldown_ms,
	                             .guarded = job->guarded,
	                             .probe = job->probe};
}

static long job_admit(struct courier_job *job, long long now)
{
	struct breaker_call bc = call_of(job);
	long wait = breaker_admit(&bc, now);

	job->guarded = bc.guarded;
	job->probe = bc.probe;
	return wait;
}

static void job_record(struct courier_job *job, bool failed, bool aborted, long long now)
{
	struct breaker_call bc = call_of(job);

	breaker_record(&bc, failed, aborted, now);
	job->probe = bc.probe;
}

static bool job_breaker_open(const struct courier_job *job)
{
	struct breaker_call bc = call_of(job);

	return breaker_is_open(&bc);
}

/* ------------------------------------------------------------- retries */

bool courier_status_retryable(long status)
{
	return status == 408 || status == 409 || status == 429 || (status >= 500 && status <= 599);
}

/* The failures of a connection (never reaching an answer) worth a retry. */
static bool rc_retryable(CURLcode rc)
{
	switch (rc) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_COULDNT_CONNECT:
	case CURLE_OPERATION_TIMEDOUT: /* connecting; the whole budget is checked apart */
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		return true;
	default:
		return false;
	}
}

long courier_retry_after_ms(const char *value, long long now)
{
	const char *p = value;
	long long secs = 0;
	time_t t;

	while (*p == ' ' || *p == '\t')
		p++;
	if (isdigit((unsigned char)*p)) {
		for (; isdigit((unsigned char)*p); p++)
			if ((secs = secs * 10 + (*p - '0')) > 86400)
				secs = 86400;
		while (*p == ' ' || *p == '\t')
			p++;
		return *p ? -1 : (long)secs * 1000;
	}
	t = curl_getdate(p, NULL);
	if (t == (time_t)-1)
		return -1;
	return (long long)t <= now ? 0
	                           : (long)((long long)t - now > 86400 ? 86400 : (long long)t - now) * 1000;
}

/* The wait the answer asks for (retry-after-ms, else Retry-After), or -1. */
static long hinted_wait_ms(CURL *e)
{
	struct curl_header *h;

	if (curl_easy_header(e, "retry-after-ms", 0, CURLH_HEADER, -1, &h) == CURLHE_OK) {
		char *end;
		double ms = strtod(h->value, &end);
		if (end != h->value && ms >= 0 && ms <= 86400e3)
			return (long)ms;
	}
	if (curl_easy_header(e, "Retry-After", 0, CURLH_HEADER, -1, &h) == CURLHE_OK)
		return courier_retry_after_ms(h->value, (long long)time(NULL));
	return -1;
}

/* Whether a failed attempt may be followed by another: within job->retries,
 * or beyond them (retries on) on the loop's budget. */
static bool retry_left(const struct courier_client *c, const struct courier_job *job)
{
	if (job->attempts <= job->retries)
		return true;
	return job->retries > 0 && job->attempts <= job->retries + RETRY_EXTRA_MAX && c->retry_budget >= 100;
}

static long backoff_ms(struct courier_client *c, unsigned retry)
{
	long d = retry > 5 ? BACKOFF_MAX_MS : BACKOFF_BASE_MS << (retry - 1);

	if (d > BACKOFF_MAX_MS)
		d = BACKOFF_MAX_MS;
	c->rng ^= c->rng << 13;
	c->rng ^= c->rng >> 7;
	c->rng ^= c->rng << 17;
	return d / 2 + (long)(c->rng % (uint64_t)(d / 2 + 1));
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	struct courier_job *job = arg;
	size_t n = size * nmemb;

	/* Past RESP_MAX it is too big to be a token answer: fails the transfer. */
	return buf_add(&job->resp_buf, data, n) == 0 ? n : 0;
}

static void free_headers(struct courier_job *job)
{
	for (struct curl_slist *h = job->headers; h; h = h->next)
		OPENSSL_cleanse(h->data, strlen(h->data));
	curl_slist_free_all(job->headers);
	job->headers = NULL;
}

static void list_add(struct courier_job **head, struct courier_job *job)
{
	job->prev = NULL;
	job->next = *head;
	if (*head)
		(*head)->prev = job;
	*head = job;
}

static void list_del(struct courier_job **head, struct courier_job *job)
{
	if (job->prev)
		job->prev->next = job->next;
	else
		*head = job->next;
	if (job->next)
		job->next->prev = job->prev;
	job->next = job->prev = NULL;
}

/* Starts one attempt of job with what is left of its timeout_ms (remaining). */
static int start_attempt(struct courier_client *c, struct courier_job *job, long remaining)
{
	CURL *e = c->n_pool ? c->pool[--c->n_pool] : curl_easy_init();

	if (!e)
		return -1;
	curl_easy_setopt(e, CURLOPT_URL, job->url);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, job->headers);
	curl_easy_setopt(e, CURLOPT_POST, 1L);
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, job->body);
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)job->body_len);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, job);
	curl_easy_setopt(e, CURLOPT_PRIVATE, job);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, remaining);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
	                 job->connect_timeout_ms < remaining ? job->connect_timeout_ms : remaining);
	curl_easy_setopt(e, CURLOPT_SHARE, c->share);
	/* The cached X509 store is used only without a CA path; the CA file
	 * is parsed once per loop and day; ca_file's anchors are added to the
	 * system's through the store built at load (trust.c). */
	trust_apply(e, job->ca_file, job->trust);
	curl_easy_setopt(e, CURLOPT_CA_CACHE_TIMEOUT, 86400L);
	/* HTTP/2 where the server offers it in ALPN, HTTP/1.1 otherwise. The
	 * proxy comes from HTTPS_PROXY / NO_PROXY, as libcurl reads them. */
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
	/* Waiting to multiplex only makes sense where HTTP/2 can be negotiated
	 * (TLS); on plain http:// it would queue every call behind the first. */
	if (strncmp(job->url, "https://", 8) == 0)
		curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, job->error);
	job->error[0] = '\0';
	buf_reset(&job->resp_buf);
	job->easy = e;
	if (curl_multi_add_handle(c->multi, e) != CURLM_OK) {
		job->easy = NULL;
		curl_easy_cleanup(e);
		return -1;
	}
	job->attempts++;
	list_add(&c->running, job);
	return 0;
}

int courier_submit(struct courier_client *c, struct courier_job *job)
{
	char *auth;
	size_t alen;
	long long now = (long long)clock_ms();

	job->attempts = 0;
	buf_init(&job->resp_buf, RESP_MAX);
	job->retry_after_s = job_admit(job, now);
	if (job->retry_after_s > 0) {
		metrics_courier_paused();
		return COURIER_PAUSED;
	}
	alen = sizeof("Authorization: Bearer ") + job->api_key->len;
	auth = malloc(alen);
	if (!auth)
		goto fail;
	memcpy(auth, "Authorization: Bearer ", sizeof("Authorization: Bearer ") - 1);
	memcpy(auth + sizeof("Authorization: Bearer ") - 1, job->api_key->data, job->api_key->len);
	auth[alen - 1] = '\0';
	job->headers = curl_slist_append(NULL, auth);
	OPENSSL_cleanse(auth, alen);
	free(auth);
	if (job->headers) {
		struct curl_slist *h = curl_slist_append(job->headers, "Content-Type: application/json");
		/* The User-Agent travels as a plain header: as CURLOPT_USERAGENT,
		 * libcurl would format it twice per call. No Accept: Courier
		 * answers JSON whatever it is sent, and each header byte is
		 * formatted one by one. */
		if (h)
			h = curl_slist_append(h, "User-Agent: " BROKER_USER_AGENT);
		if (h)
			h = curl_slist_append(h, "Accept:");
		if (h)
			h = curl_slist_append(h, "Expect:");
		if (!h) {
			free_headers(job);
		}
	}
	if (!job->headers)
		goto fail;
	job->started_ms = now;
	if (start_attempt(c, job, job->timeout_ms) != 0) {
		free_headers(job);
		goto fail;
	}
	return 0;
fail:
	job_record(job, false, true, now);
	return -1;
}

/* The call is over: its outcome is the last attempt's; done runs. */
static void complete_job(struct courier_client *c, struct courier_job *job)
{
	free_headers(job);
	job->seconds = (double)((long long)clock_ms() - job->started_ms) / 1e3;
	job->resp = job->resp_buf.data;
	job->resp_len = job->resp_buf.len;
	c->ended++;
	job->done(job);
}

/* Arms the timerfd for due (CLOCK_MONOTONIC ms) unless it fires earlier. */
static void arm(struct courier_client *c, long long due)
{
	struct itimerspec its = {0};

	if (c->armed_at && c->armed_at <= due)
		return;
	its.it_value.tv_sec = due / 1000;
	its.it_value.tv_nsec = (due % 1000) * 1000000L;
	timerfd_settime(c->tfd, TFD_TIMER_ABSTIME, &its, NULL);
	c->armed_at = due;
}

/*
 * One attempt ended with rc. Retried (job parked on the waiting list until
 * its wait is over) when the failure is one worth retrying, retries are left
 * (job->retries, then the loop's retry budget),
 * the breaker did not open, and the wait plus ATTEMPT_MIN_MS fits in what is
 * left of timeout_ms; otherwise the call completes.
 */
static void finish(struct courier_client *c, struct courier_job *job, CURLcode rc)
{
	CURL *e = job->easy;
	long long now = (long long)clock_ms();
	long remaining = job->timeout_ms - (long)(now - job->started_ms), wait = -1;
	bool retryable, failed;

	job->timed_out = job->aborted = false;
	if (rc == CURLE_OK) {
		curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &job->status);
		retryable = failed = courier_status_retryable(job->status);
		if (retryable)
			wait = hinted_wait_ms(e);
	} else {
		job->status = 0;
		job->timed_out = rc == CURLE_OPERATION_TIMEDOUT;
		job->aborted = rc == CURLE_ABORTED_BY_CALLBACK; /* only courier_abort_all ends a job so */
		if (!job->error[0])
			snprintf(job->error, sizeof(job->error), "%s", curl_easy_strerror(rc));
		retryable = rc_retryable(rc);
		failed = !job->aborted && rc != CURLE_WRITE_ERROR; /* too big an answer: Courier is up */
	}
	curl_multi_remove_handle(c->multi, e);
	list_del(&c->running, job);
	job->easy = NULL;
	if (c->n_pool < POOL_MAX) {
		curl_easy_reset(e);
		c->pool[c->n_pool++] = e;
	} else {
		curl_easy_cleanup(e);
	}
	if (retryable && !job->aborted && retry_left(c, job) && !job_breaker_open(job)) {
		/* An extra retry is only granted while Courier mostly answers (the
		 * budget): the failure is sporadic, the first backoff is enough. */
		if (wait < 0)
			wait = backoff_ms(c, job->attempts > job->retries ? 1 : job->attempts);
		if (wait + ATTEMPT_MIN_MS <= remaining) {
			if (job->status)
				log_warn_limited("Courier attempt %u answered HTTP %ld: retrying in %ld ms",
				                 job->attempts, job->status, wait);
			else
				log_warn_limited("Courier attempt %u failed (%s): retrying in %ld ms",
				                 job->attempts, job->error, wait);
			metrics_courier_attempt(METRICS_ATTEMPT_RETRIED);
			if (job->attempts > job->retries)
				c->retry_budget -= 100;
			job->wait_until_ms = now + wait;
			list_add(&c->waiting, job);
			arm(c, job->wait_until_ms);
			return;
		}
		log_warn_limited(
		    "Courier attempt %u failed; no retry: a wait of %ld ms does not fit in the %ld ms left",
		    job->attempts, wait, remaining);
	}
	metrics_courier_attempt(failed ? METRICS_ATTEMPT_FAILED : METRICS_ATTEMPT_ANSWERED);
	if (!failed && !job->aborted) {
		c->retry_budget += job->retry_budget_percent;
		if (c->retry_budget > RETRY_BUDGET_CAP)
			c->retry_budget = RETRY_BUDGET_CAP;
	}
	job_record(job, failed, job->aborted, now);
	complete_job(c, job);
}

/* Starts the retries whose wait is over; re-arms the timer for the next one. */
static void start_due_retries(struct courier_client *c)
{
	long long now = (long long)clock_ms(), next = 0;
	struct courier_job *job = c->waiting, *n;

	for (; job; job = n) {
		long remaining = job->timeout_ms - (long)(now - job->started_ms);
		n = job->next;
		if (job->wait_until_ms > now) {
			if (!next || job->wait_until_ms < next)
				next = job->wait_until_ms;
			continue;
		}
		list_del(&c->waiting, job);
		/* remaining > 0: libcurl reads a timeout of 0 as none at all. */
		if (remaining <= 0 || job_breaker_open(job) || start_attempt(c, job, remaining) != 0) {
			metrics_courier_attempt(METRICS_ATTEMPT_FAILED);
			job_record(job, true, false, now);
			complete_job(c, job); /* the last attempt's outcome stands */
		}
	}
	if (next)
		arm(c, next);
}

/* ------------------------------------------------ the event loop (epoll) */

/* libcurl tells us which sockets to watch; we keep epoll in step. */
static int on_socket(CURL *e, curl_socket_t fd, int what, void *arg, void *sockp)
{
	struct courier_client *c = arg;
	struct epoll_event ev = {0};

	(void)e;
	if (what == CURL_POLL_REMOVE) {
		epoll_ctl(c->epfd, EPOLL_CTL_DEL, fd, NULL);
		curl_multi_assign(c->multi, fd, NULL);
		return 0;
	}
	ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
	ev.data.fd = fd;
	if (sockp) {
		epoll_ctl(c->epfd, EPOLL_CTL_MOD, fd, &ev);
	} else {
		/* Mark the socket known; the pointer only needs to be non-NULL. */
		epoll_ctl(c->epfd, EPOLL_CTL_ADD, fd, &ev);
		curl_multi_assign(c->multi, fd, c);
	}
	return 0;
}

/*
 * Never calls libcurl. libcurl moves its timer several times per transfer, so
 * the timerfd is only re-armed when the deadline comes earlier than the one
 * armed: a timer that fires early costs one cheap socket_action, a syscall
 * per update cost a sixth of the broker's CPU. A zero timeout is run by the
 * loop itself, right after the events at hand.
 */
static int on_timer(CURLM *multi, long timeout_ms, void *arg)
{
	struct courier_client *c = arg;

	(void)multi;
	if (timeout_ms < 0)
		return 0; /* nothing due: a stale timer firing later is harmless */
	if (timeout_ms == 0) {
		c->due_now = true;
		return 0;
	}
	arm(c, (long long)clock_ms() + timeout_ms);
	return 0;
}

static void reap(struct courier_client *c)
{
	CURLMsg *m;
	int left;

	while ((m = curl_multi_info_read(c->multi, &left))) {
		if (m->msg == CURLMSG_DONE) {
			struct courier_job *job;
			CURLcode rc = m->data.result;
			curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&job);
			finish(c, job, rc);
		}
	}
}

int courier_run(struct courier_client *c, bool ready)
{
	struct epoll_event evs[64];
	int n, still;

	c->ended = 0;
	do {
		/* Only due work: the set was not seen ready, no need to ask it. */
		n = ready ? epoll_wait(c->epfd, evs, 64, 0) : 0;
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			uint64_t v;
			if (fd == c->tfd) {
				long t;
				c->armed_at = 0;
				if (read(c->tfd, &v, sizeof(v)) > 0)
					curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &still);
				/* The timer may have fired for a retry, before libcurl's
				 * deadline: libcurl does not repeat a deadline it gave. */
				if (curl_multi_timeout(c->multi, &t) == CURLM_OK)
					on_timer(c->multi, t, c);
				start_due_retries(c);
			} else {
				int flags = (evs[i].events & EPOLLIN ? CURL_CSELECT_IN : 0) |
				            (evs[i].events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
				            (evs[i].events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
				curl_multi_socket_action(c->multi, fd, flags, &still);
			}
		}
		while (c->due_now) {
			c->due_now = false;
			curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &still);
		}
		reap(c);
	} while (n == 64);
	return c->ended;
}

int courier_fd(const struct courier_client *c)
{
	return c->epfd;
}

bool courier_due(const struct courier_client *c)
{
	return c->due_now;
}

struct courier_client *courier_client_new(unsigned max_host_connections, char *err, size_t errlen)
{
	struct courier_client *c = calloc(1, sizeof(*c));
	struct epoll_event ev = {.events = EPOLLIN};

	if (!c) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	c->epfd = epoll_create1(EPOLL_CLOEXEC);
	c->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	c->multi = curl_multi_init();
	c->rng = (uint64_t)clock_ms() * 0x9E3779B97F4A7C15ull ^ (uint64_t)(uintptr_t)c;
	if (!c->rng)
		c->rng = 1;
	c->share = curl_share_init();
	if (c->epfd < 0 || c->tfd < 0 || !c->multi || !c->share ||
	    curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK ||
	    curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK) {
		snprintf(err, errlen, "cannot set up the Courier client's event loop");
		goto fail;
	}
	ev.data.fd = c->tfd;
	epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->tfd, &ev);
	curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
	curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
	curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_timer);
	curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
	curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)max_host_connections);
	curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, (long)max_host_connections);
	return c;
fail:
	if (c->multi)
		curl_multi_cleanup(c->multi);
	if (c->share)
		curl_share_cleanup(c->share);
	if (c->epfd >= 0)
		close(c->epfd);
	if (c->tfd >= 0)
		close(c->tfd);
	free(c);
	return NULL;
}

void courier_abort_all(struct courier_client *c)
{
	/* Stop every running transfer; each job still gets its answer. */
	while (c->running) {
		snprintf(c->running->error, sizeof(c->running->error), "aborted");
		finish(c, c->running, CURLE_ABORTED_BY_CALLBACK);
	}
	while (c->waiting) {
		struct courier_job *job = c->waiting;
		list_del(&c->waiting, job);
		job->status = 0;
		job->timed_out = false;
		job->aborted = true;
		snprintf(job->error, sizeof(job->error), "aborted");
		job_record(job, false, true, (long long)clock_ms());
		complete_job(c, job);
	}
}

void courier_client_free(struct courier_client *c)
{
	if (!c)
		return;
	courier_abort_all(c);
	for (int i = 0; i < c->n_pool; i++)
		curl_easy_cleanup(c->pool[i]);
	curl_multi_cleanup(c->multi);
	curl_share_cleanup(c->share); /* after every easy handle that used it */
	close(c->epfd);
	close(c->tfd);
	free(c);
}

void courier_job_cleanup(struct courier_job *job)
{
	buf_free(&job->resp_buf);
	job->resp = NULL;
	job->resp_len = 0;
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
	if (!jwt_is_compact(tok, *len))
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

int courier_check_expiry(long long exp, long long now, long long granted_s, char *why, size_t whylen)
{
	long long lifetime;

	/* Without exp the token never expires, and Courier tokens cannot be
	 * revoked: never hand one out. */
	if (exp <= 0) {
		snprintf(why, whylen, "the token has no usable exp");
		return -1;
	}
	/* exp > 0 and now > 0: the difference cannot overflow. */
	lifetime = exp - now;
	if (lifetime < granted_s - COURIER_EXP_SKEW_S || lifetime > granted_s + COURIER_EXP_SKEW_S) {
		snprintf(why, whylen,
		         "the token lives %llds from now, %llds were granted (skew allowed: %ds)", lifetime,
		         granted_s, COURIER_EXP_SKEW_S);
		return -1;
	}
	return 0;
}
