/*
 * jwks.c — JSON Web Key Sets: sources kept fresh.
 *
 * Owns a tenant's JWKS source (a file read once, or a URL fetched once at
 * load and then refreshed by a background thread from the response's
 * Cache-Control), the snapshot of its current set (jwk.c parses it), and the
 * refresher threads. Keys are only ever taken from the configured file or
 * URL: never from a token's jku/x5u/x5c/jwk. The request path takes a
 * reference under a short mutex and, on an unknown kid, raises a flag: it
 * must never wait on the network. A failed fetch keeps the last good set.
 * Never logs key material.
 */
#include "jwks.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "buf.h"
#include "clock.h"
#include "fileio.h"
#include "jwk.h"
#include "log.h"
#include "secret.h"
#include "trust.h"
#include "version.h"

/* ------------------------------------------------------------------------ */
/* Sources                                                                   */
/* ------------------------------------------------------------------------ */

struct jwks {
	_Atomic int refs; /* the opener's, and the refresher thread's */
	char *name;       /* "tenant NAME", for log lines */
	char *file;
	char *url;
	char *ca_file;               /* NULL: the system's CA bundle */
	struct x509_store_st *trust; /* the system's anchors and ca_file's; NULL without ca_file */
	long min_refresh_s, max_cache_s, cooldown_s, timeout_ms;

	pthread_mutex_t lock; /* everything below */
	pthread_cond_t wake;  /* the refresher: a stop, or an unknown kid */
	struct jwks_set *set;
	bool stop;
	bool want; /* an unknown kid asked for a fetch */
	bool fetching;
	struct timespec last_attempt; /* CLOCK_MONOTONIC: start of the last fetch */
	struct timespec next_fetch;   /* scheduled refresh */
	unsigned long fetches;
};

/* Live refresher threads, for jwks_shutdown. */
static pthread_mutex_t threads_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t threads_done = PTHREAD_COND_INITIALIZER;
static int threads_live;

static void source_release(struct jwks *src)
{
	if (!src || atomic_fetch_sub_explicit(&src->refs, 1, memory_order_acq_rel) != 1)
		return;
	jwks_set_release(src->set);
	pthread_mutex_destroy(&src->lock);
	pthread_cond_destroy(&src->wake);
	free(src->name);
	free(src->file);
	free(src->url);
	free(src->ca_file);
	trust_free(src->trust);
	free(src);
}

/* Seconds on the monotonic clock (clock.h). */
static double ts_seconds(const struct timespec *ts)
{
	return (double)ts->tv_sec + (double)ts->tv_nsec / 1e9;
}

static double mono_now(void)
{
	struct timespec t = clock_now();

	return ts_seconds(&t);
}

/* Now plus seconds, on the monotonic clock. */
static struct timespec ts_in(double seconds)
{
	struct timespec ts;
	double t = mono_now() + seconds;

	ts.tv_sec = (time_t)t;
	ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
	return ts;
}

static void log_skip(void *ctx, size_t index, const char *kid, const char *why)
{
	const struct jwks *src = ctx;

	log_msg("warn", "%s: jwks key %zu%s%s%s skipped: %s", src->name, index, kid[0] ? " (kid \"" : "", kid,
	        kid[0] ? "\")" : "", why);
}

/* ---- fetching ------------------------------------------------------------ */

struct fetch {
	struct jwks *src;
	struct buf body; /* capped at JWKS_MAX_BYTES */
	bool too_big;
	long max_age; /* -1: none given; 0: no-store/no-cache */
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
	struct fetch *f = ud;
	size_t n = size * nmemb;

	if (f->body.len + n > JWKS_MAX_BYTES) {
		f->too_big = true;
		return 0;
	}
	return buf_add(&f->body, data, n) ? 0 : n;
}

/* Reads Cache-Control: max-age=N (s-maxage ignored), no-store, no-cache. */
static size_t on_header(char *data, size_t size, size_t nmemb, void *ud)
{
	static const char name[] = "cache-control:";
	struct fetch *f = ud;
	size_t n = size * nmemb;
	char line[512];

	if (n < sizeof(name) - 1 || strncasecmp(data, name, sizeof(name) - 1) != 0)
		return n;
	snprintf(line, sizeof(line), "%.*s", (int)(n < sizeof(line) - 1 ? n : sizeof(line) - 1), data);
	for (char *c = line; *c; c++)
		*c = (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
	if (strstr(line, "no-store") || strstr(line, "no-cache")) {
		f->max_age = 0;
	} else {
		const char *m = strstr(line, "max-age=");
		if (m && (m == line || m[-1] == ' ' || m[-1] == ',' || m[-1] == ':')) {
			char *end;
			long v = strtol(m + 8, &end, 10);
			if (end != m + 8 && v >= 0)
				f->max_age = v;
		}
	}
	return n;
}

static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
	struct fetch *f = ud;
	bool stop;

	(void)dt;
	(void)dn;
	(void)ut;
	(void)un;
	pthread_mutex_lock(&f->src->lock);
	stop = f->src->stop;
	pthread_mutex_unlock(&f->src->lock);
	return stop ? 1 : 0;
}

/* GETs the URL. Returns 0 with the body in f, or -1 with a reason in err. */
static int http_get(struct jwks *src, struct fetch *f, char *err, size_t errlen)
{
	CURL *c = curl_easy_init();
	CURLcode rc;
	long status = 0;

	if (!c) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	curl_easy_setopt(c, CURLOPT_URL, src->url);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https,http");
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, src->timeout_ms);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, src->timeout_ms);
	/* The system's anchors, and ca_file's added to them (trust.c); never a
	 * CA path. HTTPS_PROXY applies. */
	trust_apply(c, src->ca_file, src->trust);
	curl_easy_setopt(c, CURLOPT_USERAGENT, BROKER_USER_AGENT);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, f);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, f);
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(c, CURLOPT_XFERINFODATA, f);
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	rc = curl_easy_perform(c);
	if (rc == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(c);
	if (f->too_big) {
		snprintf(err, errlen, "response larger than %d bytes", JWKS_MAX_BYTES);
		return -1;
	}
	if (rc != CURLE_OK) {
		snprintf(err, errlen, "%s", curl_easy_strerror(rc));
		return -1;
	}
	if (status != 200) {
		snprintf(err, errlen, "HTTP status %ld", status);
		return -1;
	}
	return 0;
}

/* Reads the source's file (any mode: a JWKS is public). */
static int read_jwks_file(const char *path, struct fetch *f, char *err, size_t errlen)
{
	char why[160], *text = NULL;
	size_t len = 0;

	if (fileio_read(path, JWKS_MAX_BYTES, 0, &text, &len, why, sizeof(why))) {
		snprintf(err, errlen, "%s: %s", path, why);
		return -1;
	}
	if (buf_add(&f->body, text, len)) {
		free(text);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	free(text);
	return 0;
}

/* The URL as it may be logged: scheme, host and path, without the user
 * information or query a URL can carry a credential in. */
static void url_for_log(const char *url, char *out, size_t outlen)
{
	const char *sep = strstr(url, "://");
	const char *host = sep ? sep + 3 : url;
	const char *end = host + strcspn(host, "/?#");
	const char *at = memrchr(host, '@', (size_t)(end - host));
	const char *rest = at ? at + 1 : host;

	snprintf(out, outlen, "%.*s%.*s", (int)(host - url), url, (int)strcspn(rest, "?#"), rest);
}

/*
 * One load: fetch or read, parse, and on success swap the snapshot. Returns
 * the seconds until the next scheduled fetch (URL), or -1 on failure (the
 * previous set stays).
 */
static double load_once(struct jwks *src, char *err, size_t errlen)
{
	struct fetch f = {.src = src, .max_age = -1};
	struct jwks_set *set = NULL, *old;
	double next;

	buf_init(&f.body, JWKS_MAX_BYTES);
	pthread_mutex_lock(&src->lock);
	src->fetches++;
	src->last_attempt = clock_now();
	pthread_mutex_unlock(&src->lock);
	if (src->url ? http_get(src, &f, err, errlen) : read_jwks_file(src->file, &f, err, errlen)) {
		buf_free(&f.body);
		return -1;
	}
	set = jwks_parse(f.body.data, f.body.len, log_skip, src, err, errlen);
	buf_free(&f.body);
	if (!set)
		return -1;
	next = f.max_age < 0 ? (double)src->max_cache_s : (double)f.max_age;
	if (next < (double)src->min_refresh_s)
		next = (double)src->min_refresh_s;
	if (next > (double)src->max_cache_s)
		next = (double)src->max_cache_s;
	pthread_mutex_lock(&src->lock);
	old = src->set;
	src->set = set;
	pthread_mutex_unlock(&src->lock);
	jwks_set_release(old);
	return next;
}

static void *refresher(void *arg)
{
	struct jwks *src = arg;
	char err[256];

	pthread_mutex_lock(&src->lock);
	while (!src->stop) {
		double wait;
		if (!src->want && mono_now() < ts_seconds(&src->next_fetch)) {
			/* wake is on CLOCK_MONOTONIC (see jwks_open) */
			pthread_cond_timedwait(&src->wake, &src->lock, &src->next_fetch);
			continue;
		}
		src->fetching = true;
		pthread_mutex_unlock(&src->lock);
		wait = load_once(src, err, sizeof(err));
		if (wait < 0) {
			char where[256];
			url_for_log(src->url, where, sizeof(where));
			log_msg("warn", "%s: jwks refresh from %s failed, keeping the last good set: %s",
			        src->name, where, err);
			wait = (double)src->min_refresh_s;
		}
		pthread_mutex_lock(&src->lock);
		src->fetching = false;
		src->want = false;
		src->next_fetch = ts_in(wait);
	}
	pthread_mutex_unlock(&src->lock);
	source_release(src);
	pthread_mutex_lock(&threads_lock);
	threads_live--;
	pthread_cond_broadcast(&threads_done);
	pthread_mutex_unlock(&threads_lock);
	return NULL;
}

/* Refuses options no source can be opened under (the URL's form and transport). */
static int check_options(const struct jwks_options *o, char *err, size_t errlen)
{
	if (!o || (!o->file == !o->url)) {
		snprintf(err, errlen, "give exactly one of file and url");
		return -1;
	}
	for (const char *p = o->url; p && *p; p++)
		if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f) {
			snprintf(err, errlen, "url: must not contain spaces, control or non-ASCII bytes");
			return -1;
		}
	if (o->url && secret_in_url(o->url)) {
		snprintf(err, errlen, "url: must not carry a user name or password (a JWKS is public)");
		return -1;
	}
	if (o->url && !secret_url_transport_ok(o->url)) {
		snprintf(err, errlen,
		         "url: must start with https:// (http:// only to 127.0.0.1, [::1] or localhost)");
		return -1;
	}
	return 0;
}

/* A source under o with nothing loaded (defaults filled in), or NULL. */
static struct jwks *source_new(const struct jwks_options *o, const char *name)
{
	struct jwks *src = calloc(1, sizeof(*src));
	pthread_condattr_t ca;

	if (!src)
		return NULL;
	atomic_init(&src->refs, 1);
	pthread_mutex_init(&src->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&src->wake, &ca);
	pthread_condattr_destroy(&ca);
	src->min_refresh_s = o->min_refresh_s > 0 ? o->min_refresh_s : 60;
	src->max_cache_s = o->max_cache_s > 0 ? o->max_cache_s : 3600;
	src->cooldown_s = o->cooldown_s > 0 ? o->cooldown_s : 30;
	src->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 5000;
	if (asprintf(&src->name, "tenant %s", name ? name : "?") < 0) {
		src->name = NULL;
		source_release(src);
		return NULL;
	}
	if ((o->file && !(src->file = strdup(o->file))) || (o->url && !(src->url = strdup(o->url))) ||
	    (o->ca_file && !(src->ca_file = strdup(o->ca_file)))) {
		source_release(src);
		return NULL;
	}
	return src;
}

/* Starts src's refresher thread, which holds a reference. 0 or -1. */
static int start_refresher(struct jwks *src)
{
	pthread_attr_t ta;
	pthread_t tid;
	int rc;

	atomic_fetch_add(&src->refs, 1); /* the thread's */
	pthread_attr_init(&ta);
	pthread_attr_setdetachstate(&ta, PTHREAD_CREATE_DETACHED);
	pthread_mutex_lock(&threads_lock);
	rc = pthread_create(&tid, &ta, refresher, src);
	if (rc == 0)
		threads_live++;
	pthread_mutex_unlock(&threads_lock);
	pthread_attr_destroy(&ta);
	if (rc != 0) {
		atomic_fetch_sub(&src->refs, 1);
		return -1;
	}
	return 0;
}

struct jwks *jwks_open(const struct jwks_options *o, const char *name, char *err, size_t errlen)
{
	struct jwks *src;
	char why[256];
	double next;

	if (check_options(o, err, errlen))
		return NULL;
	if (!(src = source_new(o, name))) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	/* ca_file adds to the system's anchors (trust.c): built once per source. */
	if (src->ca_file && src->url && !(src->trust = trust_load(src->ca_file, why, sizeof(why)))) {
		snprintf(err, errlen, "ca_file: %s", why);
		source_release(src);
		return NULL;
	}
	next = load_once(src, why, sizeof(why));
	if (next < 0) {
		char where[256];
		if (o->url)
			url_for_log(o->url, where, sizeof(where));
		snprintf(err, errlen, "%s%s: %s", o->url ? "fetching " : "", o->url ? where : o->file, why);
		source_release(src);
		return NULL;
	}
	if (!src->url)
		return src;
	src->next_fetch = ts_in(next);
	if (start_refresher(src)) {
		source_release(src);
		snprintf(err, errlen, "cannot start the refresh thread");
		return NULL;
	}
	return src;
}

void jwks_close(struct jwks *src)
{
	if (!src)
		return;
	pthread_mutex_lock(&src->lock);
	src->stop = true;
	pthread_cond_signal(&src->wake);
	pthread_mutex_unlock(&src->lock);
	source_release(src);
}

struct jwks_set *jwks_acquire(struct jwks *src)
{
	struct jwks_set *set;

	if (!src)
		return NULL;
	pthread_mutex_lock(&src->lock);
	set = jwks_set_hold(src->set);
	pthread_mutex_unlock(&src->lock);
	return set;
}

void jwks_unknown_kid(struct jwks *src)
{
	if (!src || !src->url)
		return;
	pthread_mutex_lock(&src->lock);
	if (!src->stop && !src->want && !src->fetching &&
	    mono_now() - ts_seconds(&src->last_attempt) >= (double)src->cooldown_s) {
		src->want = true;
		pthread_cond_signal(&src->wake);
	}
	pthread_mutex_unlock(&src->lock);
}

bool jwks_ready(struct jwks *src)
{
	bool ready;

	if (!src)
		return true;
	pthread_mutex_lock(&src->lock);
	ready = src->set != NULL;
	pthread_mutex_unlock(&src->lock);
	return ready;
}

unsigned long jwks_fetch_count(struct jwks *src)
{
	unsigned long n;

	if (!src)
		return 0;
	pthread_mutex_lock(&src->lock);
	n = src->fetches;
	pthread_mutex_unlock(&src->lock);
	return n;
}

int jwks_shutdown(long timeout_ms)
{
	struct timespec until;
	int rc = 0;

	/* threads_done waits on the realtime clock (its default). */
	clock_gettime(CLOCK_REALTIME, &until);
	until = clock_add_ms(until, timeout_ms);
	pthread_mutex_lock(&threads_lock);
	while (threads_live > 0 && rc == 0)
		rc = pthread_cond_timedwait(&threads_done, &threads_lock, &until);
	rc = threads_live > 0 ? -1 : 0;
	pthread_mutex_unlock(&threads_lock);
	return rc;
}
