/*
 * cluster.c — the shared deny list: one subscriber thread, one snapshot.
 *
 * Owns the subscriber thread (two synchronous hiredis connections: one
 * SUBSCRIBEd to the change channel, one for reading the sets), the deny
 * list snapshot the request path reads, and the cluster's up/down state.
 * The thread subscribes first and loads every set second, so no change
 * published in between is lost; each message names a tenant, whose whole
 * set is read again and swapped in. A lost connection (an error, a closed
 * socket, a PING unanswered) means reconnecting with backoff and loading
 * everything again; meanwhile the last snapshot stays in force.
 *
 * It must never call Redis on a request's thread (cluster_denied only
 * takes a short lock to read the snapshot), never stop serving because
 * Redis is away, never log a password, and never log an outage more than
 * once (once when it starts, once when it ends).
 */
#include "cluster.h"

#include <hiredis.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "redis.h"
#include "redisio.h"
#include "scope.h"

#define BACKOFF_MIN_MS 100  /* first retry after a failure */
#define BACKOFF_MAX_MS 5000 /* retries never wait longer (plus jitter) */
#define POLL_MS        100  /* how soon the thread notices cluster_stop */
#define PING_EVERY_MS  2000 /* a quiet subscription is checked this often */
#define TENANT_MAX     64   /* a tenant name's length (config.c) */
#define KEY_MAX        256

/* ------------------------------------------------------------------------ */
/* The snapshot                                                             */
/* ------------------------------------------------------------------------ */

/* One tenant's set, shared by the snapshots that hold it (refs: only the
 * subscriber thread, or cluster_stop after it, changes them). */
struct deny_tenant {
	int refs;
	char *name;
	char **users; /* sorted (strcmp) */
	size_t n;
};

struct deny_list {
	struct deny_tenant **t; /* sorted by name */
	size_t n;
	size_t total; /* users, all tenants */
};

static pthread_mutex_t list_lock = PTHREAD_MUTEX_INITIALIZER;
static struct deny_list *list; /* under list_lock; NULL: nothing loaded yet */
static atomic_bool active;     /* cluster_start ran: cluster_denied looks */
static atomic_int status = CLUSTER_NONE;

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_tenant(const void *a, const void *b)
{
	return strcmp((*(struct deny_tenant *const *)a)->name, (*(struct deny_tenant *const *)b)->name);
}

static void tenant_unref(struct deny_tenant *t)
{
	if (!t || --t->refs > 0)
		return;
	for (size_t i = 0; i < t->n; i++)
		free(t->users[i]);
	free(t->users);
	free(t->name);
	free(t);
}

static void list_free(struct deny_list *l)
{
	if (!l)
		return;
	for (size_t i = 0; i < l->n; i++)
		tenant_unref(l->t[i]);
	free(l->t);
	free(l);
}

static bool tenant_name_ok(const char *s, size_t len)
{
	if (len == 0 || len > TENANT_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (s[i] == '\0' ||
		    !strchr("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_-", s[i]))
			return false;
	return true;
}

/* A tenant's set from an SMEMBERS answer: the valid user ids, sorted (a
 * value that is not a user id, written by hand, can match no request). */
static struct deny_tenant *tenant_from(const char *name, const redisReply *r)
{
	struct deny_tenant *t = calloc(1, sizeof(*t));

	if (!t || !(t->name = strdup(name)) ||
	    (r->elements && !(t->users = calloc(r->elements, sizeof(char *)))))
		goto fail;
	t->refs = 1;
	for (size_t i = 0; i < r->elements; i++) {
		const redisReply *e = r->element[i];
		if (e->type != REDIS_REPLY_STRING || !scope_user_id_valid(e->str, (size_t)e->len) ||
		    strlen(e->str) != (size_t)e->len)
			continue;
		if (!(t->users[t->n] = strndup(e->str, (size_t)e->len)))
			goto fail;
		t->n++;
	}
	if (t->n)
		qsort(t->users, t->n, sizeof(char *), cmp_str);
	return t;
fail:
	if (t) {
		t->refs = 1;
		tenant_unref(t);
	}
	return NULL;
}

/* A new list: old's tenants with t in place of its namesake (t taken; an
 * empty t drops the tenant). NULL when out of memory (t released). */
static struct deny_list *list_with(const struct deny_list *old, struct deny_tenant *t)
{
	struct deny_list *l = calloc(1, sizeof(*l));
	size_t cap = (old ? old->n : 0) + 1;

	if (!l || !(l->t = calloc(cap, sizeof(*l->t)))) {
		free(l);
		tenant_unref(t);
		return NULL;
	}
	for (size_t i = 0; old && i < old->n; i++) {
		if (strcmp(old->t[i]->name, t->name) == 0)
			continue;
		old->t[i]->refs++;
		l->t[l->n++] = old->t[i];
		l->total += old->t[i]->n;
	}
	if (t->n) {
		l->t[l->n++] = t;
		l->total += t->n;
	} else {
		tenant_unref(t);
	}
	if (l->n)
		qsort(l->t, l->n, sizeof(*l->t), cmp_tenant);
	return l;
}

/* Makes l the list requests see; frees the one it replaces. */
static void list_publish(struct deny_list *l)
{
	struct deny_list *old;

	pthread_mutex_lock(&list_lock);
	old = list;
	list = l;
	pthread_mutex_unlock(&list_lock);
	metrics_cluster_deny_entries(l ? l->total : 0);
	list_free(old);
}

bool cluster_denied(const char *tenant, const char *user_id)
{
	struct deny_tenant key = {.name = (char *)tenant}, *kp = &key, **tp;
	bool hit = false;

	if (!atomic_load_explicit(&active, memory_order_acquire))
		return false;
	pthread_mutex_lock(&list_lock);
	/* bsearch must not see a NULL array, even an empty one. */
	if (list && list->n && (tp = bsearch(&kp, list->t, list->n, sizeof(*list->t), cmp_tenant)) &&
	    (*tp)->n)
		hit = bsearch(&user_id, (*tp)->users, (*tp)->n, sizeof(char *), cmp_str) != NULL;
	pthread_mutex_unlock(&list_lock);
	return hit;
}

enum cluster_status cluster_status(void)
{
	return (enum cluster_status)atomic_load(&status);
}

/* ------------------------------------------------------------------------ */
/* Reading Redis                                                            */
/* ------------------------------------------------------------------------ */

/* The subscriber's copy of the configuration (a reload never changes it). */
static struct cluster_conf conf;

/* One command of two arguments (name, then an argument): the reply, or
 * NULL (redis_error). */
static redisReply *command2(struct redis_conn *rc, const char *name, const char *arg)
{
	const char *argv[2] = {name, arg};
	size_t lens[2] = {strlen(name), strlen(arg)};

	return redis_command(rc, 2, argv, lens);
}

/* SMEMBERS of "<prefix><suffix><name>": an array reply, or NULL with err. */
static redisReply *smembers(struct redis_conn *rc, const char *suffix, const char *name, char *err,
                            size_t errlen)
{
	char key[KEY_MAX], rest[KEY_MAX];
	redisReply *r;

	snprintf(rest, sizeof(rest), "%s%s", suffix, name);
	if (redis_key(&conf, rest, key, sizeof(key)) != 0) {
		snprintf(err, errlen, "key too long");
		return NULL;
	}
	r = command2(rc, "SMEMBERS", key);
	if (!r) {
		snprintf(err, errlen, "SMEMBERS: %s", redis_error(rc));
		return NULL;
	}
	if (r->type != REDIS_REPLY_ARRAY) {
		snprintf(err, errlen, "SMEMBERS %s: %s", key,
		         r->type == REDIS_REPLY_ERROR ? r->str : "not a set");
		freeReplyObject(r);
		return NULL;
	}
	return r;
}

/* tenant's set, read again and swapped in. */
static int reload_tenant(struct redis_conn *rc, const char *tenant, char *err, size_t errlen)
{
	redisReply *r = smembers(rc, CLUSTER_DENY_KEY, tenant, err, errlen);
	struct deny_tenant *t;
	struct deny_list *l;

	if (!r)
		return -1;
	t = tenant_from(tenant, r);
	freeReplyObject(r);
	/* list changes only on this thread: reading it here needs no lock. */
	if (!t || !(l = list_with(list, t))) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	list_publish(l);
	return 0;
}

/* Every tenant's set, as a new list (published only when whole). */
static int load_all(struct redis_conn *rc, char *err, size_t errlen)
{
	redisReply *names = smembers(rc, CLUSTER_DENY_TENANTS, "", err, errlen);
	struct deny_list *l = calloc(1, sizeof(*l));
	int rc_ = -1;

	if (!names || !l)
		goto out;
	for (size_t i = 0; i < names->elements; i++) {
		const redisReply *e = names->element[i];
		struct deny_list *next;
		struct deny_tenant *t;
		redisReply *r;
		if (e->type != REDIS_REPLY_STRING || !tenant_name_ok(e->str, (size_t)e->len))
			continue;
		if (!(r = smembers(rc, CLUSTER_DENY_KEY, e->str, err, errlen)))
			goto out;
		t = tenant_from(e->str, r);
		freeReplyObject(r);
		if (!t || !(next = list_with(l, t))) {
			snprintf(err, errlen, "out of memory");
			goto out;
		}
		list_free(l);
		l = next;
	}
	list_publish(l);
	l = NULL;
	rc_ = 0;
out:
	if (!names && !err[0])
		snprintf(err, errlen, "out of memory");
	if (names)
		freeReplyObject(names);
	list_free(l);
	return rc_;
}

/* Both connections, subscribed, and the whole list loaded. */
static int session_open(struct redis_conn **sub, struct redis_conn **cmd, char *err, size_t errlen)
{
	char chan[KEY_MAX];
	redisReply *r;
	int ok;

	if (redis_key(&conf, CLUSTER_DENY_CHANNEL, chan, sizeof(chan)) != 0) {
		snprintf(err, errlen, "channel name too long");
		return -1;
	}
	/* The subscription only ever gets short messages; the other reads
	 * whole deny sets. */
	if (!(*sub = redis_connect(&conf, REDIS_REPLY_MAX_SMALL, err, errlen)))
		return -1;
	r = command2(*sub, "SUBSCRIBE", chan);
	ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
	     r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, "subscribe") == 0;
	if (!ok)
		snprintf(err, errlen, "SUBSCRIBE: %s",
		         !r                             ? redis_error(*sub)
		         : r->type == REDIS_REPLY_ERROR ? r->str
		                                        : "unexpected answer");
	if (r)
		freeReplyObject(r);
	if (!ok)
		return -1;
	if (!(*cmd = redis_connect(&conf, REDIS_REPLY_MAX_LARGE, err, errlen)))
		return -1;
	return load_all(*cmd, err, errlen);
}

/* One reply on the subscription: a change (reload that tenant) or a pong.
 * -1 on a failure that calls for a new session. */
static int on_reply(struct redis_conn *cmd, const redisReply *r, bool *pong, char *err, size_t errlen)
{
	const redisReply *kind;

	if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 || r->element[0]->type != REDIS_REPLY_STRING) {
		snprintf(err, errlen, "unexpected message on the subscription");
		return -1;
	}
	kind = r->element[0];
	if (strcmp(kind->str, "pong") == 0) {
		*pong = true;
		return 0;
	}
	if (strcmp(kind->str, "message") != 0 || r->elements != 3 ||
	    r->element[2]->type != REDIS_REPLY_STRING)
		return 0;
	if (!tenant_name_ok(r->element[2]->str, (size_t)r->element[2]->len))
		return 0; /* not a tenant's name: nothing of ours changed */
	return reload_tenant(cmd, r->element[2]->str, err, errlen);
}

static atomic_bool stopping;

/* Follows the subscription until it fails or cluster_stop. */
static void session_listen(struct redis_conn *sub, struct redis_conn *cmd, char *err, size_t errlen)
{
	uint64_t last_ping = clock_ms();
	bool pong = true;

	while (!atomic_load(&stopping)) {
		struct pollfd pfd = {.fd = redis_fd(sub), .events = POLLIN};
		redisReply *reply;
		int n;

		if (clock_ms() - last_ping >= PING_EVERY_MS) {
			const char *ping = "PING";
			size_t len = 4;
			/* A PING whose answer did not come whole (a message dripped
			 * ahead of it included) is a stalled Redis. */
			if (!pong) {
				snprintf(err, errlen, "no answer to PING within %d ms", PING_EVERY_MS);
				return;
			}
			pong = false;
			last_ping = clock_ms();
			if (redis_append(sub, 1, &ping, &len) != 0 || redis_flush(sub) != 0)
				goto io;
		}
		/* Replies already read (with SUBSCRIBE's, or before the last
		 * one handled) first: the socket will not announce them again. */
		while ((reply = redis_take(sub))) {
			int rc = on_reply(cmd, reply, &pong, err, errlen);
			freeReplyObject(reply);
			if (rc)
				return;
		}
		if (redis_error(sub)[0])
			goto io;
		n = poll(&pfd, 1, POLL_MS);
		if (n < 0)
			continue; /* EINTR */
		if (n == 0)
			continue;
		if (redis_receive(sub) != 0)
			goto io;
	}
	return;
io:
	snprintf(err, errlen, "%s", redis_error(sub)[0] ? redis_error(sub) : "connection lost");
}

/* ------------------------------------------------------------------------ */
/* The subscriber thread                                                    */
/* ------------------------------------------------------------------------ */

static pthread_t thread;
static bool thread_started;
static pthread_mutex_t first_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t first_cond;
static bool first_done; /* the first session opened or failed */

static size_t list_total(void)
{
	size_t n;

	pthread_mutex_lock(&list_lock);
	n = list ? list->total : 0;
	pthread_mutex_unlock(&list_lock);
	return n;
}

/* Logs a change of state only: one line when the outage starts, one when
 * it ends (said: what the log last said, CLUSTER_NONE before the first). */
static void set_status(enum cluster_status s, const char *why)
{
	static enum cluster_status said = CLUSTER_NONE; /* the subscriber thread's alone */

	atomic_store(&status, s);
	metrics_cluster_up(s == CLUSTER_UP);
	if (s == said)
		return;
	if (s == CLUSTER_UP)
		log_msg("info", "cluster %s: redis %s:%u %s; deny list loaded (%zu user(s))", conf.name,
		        conf.host, conf.port, said == CLUSTER_DOWN ? "reachable again" : "connected",
		        list_total());
	else
		log_msg("warn",
		        "cluster %s: redis %s:%u unreachable (%s): serving with the last deny list (%zu "
		        "user(s)); reconnecting in the background",
		        conf.name, conf.host, conf.port, why, list_total());
	said = s;
}

static void first_signal(void)
{
	pthread_mutex_lock(&first_lock);
	first_done = true;
	pthread_cond_broadcast(&first_cond);
	pthread_mutex_unlock(&first_lock);
}

/* Sleeps ms, or less when cluster_stop is called. */
static void pause_ms(unsigned ms)
{
	uint64_t until = clock_ms() + ms;

	while (!atomic_load(&stopping) && clock_ms() < until) {
		uint64_t left = until - clock_ms();
		struct timespec ts = {.tv_sec = 0,
		                      .tv_nsec = (long)(left < POLL_MS ? left : POLL_MS) * 1000000L};
		nanosleep(&ts, NULL);
	}
}

static void *subscriber(void *arg)
{
	unsigned backoff = BACKOFF_MIN_MS, seed = (unsigned)clock_ms() ^ (unsigned)(uintptr_t)&arg;
	char err[512];

	(void)arg;
	while (!atomic_load(&stopping)) {
		struct redis_conn *sub = NULL, *cmd = NULL;
		err[0] = '\0';
		if (session_open(&sub, &cmd, err, sizeof(err)) == 0) {
			set_status(CLUSTER_UP, NULL);
			first_signal();
			backoff = BACKOFF_MIN_MS;
			session_listen(sub, cmd, err, sizeof(err));
		}
		redis_close(sub);
		redis_close(cmd);
		if (atomic_load(&stopping))
			break;
		set_status(CLUSTER_DOWN, err[0] ? err : "connection lost");
		first_signal();
		/* Jitter: brokers that lost Redis together do not return in step. */
		pause_ms(backoff + (unsigned)rand_r(&seed) % (backoff / 2 + 1));
		backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
	}
	return NULL;
}

static void conf_clear(void)
{
	free(conf.host);
	free(conf.user);
	free(conf.name);
	secret_clear(&conf.password);
	secret_clear(&conf.cache_key);
	redisio_tls_free(conf.tls_ctx);
	memset(&conf, 0, sizeof(conf));
}

int cluster_start(const struct cluster_conf *c, char *err, size_t errlen)
{
	struct timespec until;
	pthread_condattr_t ca;

	if (!c->enabled || thread_started)
		return 0;
	conf = *c;
	conf.host = strdup(c->host);
	conf.user = c->user ? strdup(c->user) : NULL;
	conf.name = strdup(c->name);
	memset(&conf.password, 0, sizeof(conf.password));
	memset(&conf.cache_key, 0, sizeof(conf.cache_key));
	memset(&conf.key, 0, sizeof(conf.key));
	conf.ca_file = NULL;   /* read at load: its anchors are in tls_ctx, */
	conf.cert_path = NULL; /* and the client certificate with its key */
	conf.tls_ctx = redisio_tls_ref(c->tls_ctx);
	if (!conf.host || !conf.name || (c->user && !conf.user) ||
	    (c->password.data && secret_set(&conf.password, c->password.data, c->password.len) != 0)) {
		conf_clear();
		snprintf(err, errlen, "cluster: out of memory");
		return -1;
	}
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&first_cond, &ca);
	pthread_condattr_destroy(&ca);
	atomic_store(&status, CLUSTER_DOWN);
	metrics_cluster_up(false);
	atomic_store_explicit(&active, true, memory_order_release);
	if (pthread_create(&thread, NULL, subscriber, NULL) != 0) {
		atomic_store(&active, false);
		atomic_store(&status, CLUSTER_NONE);
		conf_clear();
		snprintf(err, errlen, "cluster: cannot start the deny list's thread");
		return -1;
	}
	thread_started = true;
	/* Connect and AUTH and SELECT, then SUBSCRIBE, then the reads: a few
	 * round trips each bounded by timeout_ms. */
	until = clock_add_ms(clock_now(), 2L * conf.timeout_ms + 500);
	pthread_mutex_lock(&first_lock);
	while (!first_done)
		if (pthread_cond_timedwait(&first_cond, &first_lock, &until) != 0)
			break;
	pthread_mutex_unlock(&first_lock);
	return 0;
}

void cluster_stop(void)
{
	if (!thread_started)
		return;
	atomic_store(&stopping, true);
	pthread_join(thread, NULL);
	thread_started = false;
	atomic_store(&active, false);
	list_publish(NULL);
	conf_clear();
}
