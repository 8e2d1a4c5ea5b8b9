/*
 * reload.c — building, checking and installing the next generation.
 *
 * Owns the checks a configuration passes before it may serve, the threads
 * that run reloads for `serve`, each reload's budget, and the record of each
 * attempt (one log line with the reason, the reload metrics). Knows which
 * settings the running server took at start and cannot change. Never touches
 * a generation that is serving (gen_publish swaps it atomically), and never
 * publishes one after its attempt was abandoned or the drain began.
 */
#include "reload.h"

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "audit.h"
#include "clock.h"
#include "config.h"
#include "gen.h"
#include "log.h"
#include "metrics.h"
#include "pidfile.h"
#include "policy.h"
#include "policytest.h"
#include "sdnotify.h"
#include "tls.h"

/* The settings a reload cannot apply (besides listen): their names, and
 * where they are in struct config (all unsigned). */
static const struct {
	const char *name;
	size_t off;
} restart_only[] = {
    {"threads", offsetof(struct config, threads)}, /* first: reload_run reads it */
    {"max_connections", offsetof(struct config, max_connections)},
    {"connection_timeout_s", offsetof(struct config, connection_timeout_s)},
    {"courier.max_connections", offsetof(struct config, courier_max_connections)},
    {"max_connections_per_ip", offsetof(struct config, max_connections_per_ip)},
    {"request_timeout_ms", offsetof(struct config, request_timeout_ms)},
};
#define N_RESTART_ONLY (sizeof(restart_only) / sizeof(restart_only[0]))

/* The settings serve started with: changing them needs a restart. */
static struct {
	char listen_host[256];
	unsigned short listen_port;
	char admin[300];                 /* admin_listen as host:port, "" when none */
	unsigned values[N_RESTART_ONLY]; /* of restart_only */
	bool tls;                        /* the listener speaks TLS */
	char cluster[9000];              /* cluster_text: "" when none */
	bool set;
} started;

static unsigned restart_only_value(const struct config *cfg, size_t i)
{
	return *(const unsigned *)(const void *)((const char *)cfg + restart_only[i].off);
}

/* Says which kind of policy failed (the message names its file). */
static void shadow_failed(char *err, size_t errlen)
{
	char was[1024];

	snprintf(was, sizeof(was), "%s", err);
	snprintf(err, errlen, "shadow_policy: %s", was);
}

struct config *reload_load(const char *path, bool quiet_tests, char *err, size_t errlen)
{
	struct config *cfg = config_load(path, &policy_config_sandbox, err, errlen);
	struct policy_engine *e;
	int rc;

	if (!cfg)
		return NULL;
	/* One engine compiles every policy (the check) and then runs their tests. */
	e = policy_engine_new(cfg, err, errlen);
	rc = e ? policytest_config(cfg, e, quiet_tests, err, errlen) : -1;
	policy_engine_free(e);
	/* The shadow policies too: a candidate that fails fails the load. */
	if (rc == 0 && cfg->shadow) {
		e = policy_engine_new(cfg->shadow, err, errlen);
		rc = e ? policytest_config(cfg->shadow, e, quiet_tests, err, errlen) : -1;
		policy_engine_free(e);
		if (rc != 0)
			shadow_failed(err, errlen);
	}
	if (rc != 0) {
		config_free(cfg);
		return NULL;
	}
	return cfg;
}

static void admin_text(const struct config *cfg, char *out, size_t len)
{
	if (cfg->admin_host)
		snprintf(out, len, "%s:%u", cfg->admin_host, cfg->admin_port);
	else
		snprintf(out, len, "%s", "");
}

/* The cluster block as comparable text: secrets by fingerprint only (and
 * the text is never logged), ca_file and the client certificate by their
 * content's digest too (renewed in place, they are a change); fixed-length
 * parts first, so that no cut of a long text hides a change of key. */
static void cluster_text(const struct config *cfg, char *out, size_t len)
{
	const struct cluster_conf *c = &cfg->cluster;

	if (!c->enabled)
		snprintf(out, len, "%s", "");
	else
		snprintf(out, len, "%s %s %s %s %s %u %s%s@%s:%u/%u %s %s %s",
		         c->password.data ? c->password.fingerprint : "-",
		         c->cache_key.data ? c->cache_key.fingerprint : "-",
		         c->key.data ? c->key.fingerprint : "-", c->cert_digest[0] ? c->cert_digest : "-",
		         c->ca_digest[0] ? c->ca_digest : "-", c->timeout_ms,
		         c->tls ? "rediss:" : "redis:", c->user ? c->user : "", c->host, c->port, c->db,
		         c->name, c->ca_file ? c->ca_file : "-", c->cert_path ? c->cert_path : "-");
}

void reload_started_with(const struct config *cfg)
{
	snprintf(started.listen_host, sizeof(started.listen_host), "%s", cfg->listen_host);
	started.listen_port = cfg->listen_port;
	admin_text(cfg, started.admin, sizeof(started.admin));
	for (size_t i = 0; i < N_RESTART_ONLY; i++)
		started.values[i] = restart_only_value(cfg, i);
	started.tls = cfg->tls.enabled;
	cluster_text(cfg, started.cluster, sizeof(started.cluster));
	started.set = true;
}

/* One warning per setting the new configuration changes but cannot apply. */
static void warn_restart_only(const struct config *cfg)
{
	char admin[sizeof(started.admin)], cluster[sizeof(started.cluster)];

	if (!started.set)
		return;
	if (strcmp(cfg->listen_host, started.listen_host) != 0 || cfg->listen_port != started.listen_port)
		log_msg("warn", "reload: listen changed to %s:%u; still listening on %s:%u until a restart",
		        cfg->listen_host, cfg->listen_port, started.listen_host, started.listen_port);
	if (cfg->tls.enabled != started.tls)
		log_msg("warn", "reload: tls %s; the listener stays %s until a restart",
		        cfg->tls.enabled ? "added" : "removed",
		        started.tls ? "HTTPS with the certificate it has" : "plain HTTP");
	admin_text(cfg, admin, sizeof(admin));
	if (strcmp(admin, started.admin) != 0)
		log_msg("warn", "reload: admin_listen changed to \"%s\"; still \"%s\" until a restart", admin,
		        started.admin);
	cluster_text(cfg, cluster, sizeof(cluster));
	if (strcmp(cluster, started.cluster) != 0)
		log_msg("warn",
		        "reload: cluster changed; the broker keeps the cluster it started with until a "
		        "restart");
	for (size_t i = 0; i < N_RESTART_ONLY; i++) {
		unsigned now = restart_only_value(cfg, i);
		if (now != started.values[i])
			log_msg("warn", "reload: %s changed to %u; still %u until a restart",
			        restart_only[i].name, now, started.values[i]);
	}
}

/* ------------------------------------------------------------ the reload threads */

/*
 * Two kinds of thread, so that the thread reading signals never waits on a
 * reload. The reload thread (one, for the life of `serve`) takes the SIGHUPs
 * the signal thread hands it, starts one builder thread per attempt and holds
 * each attempt to its budget. A builder loads and checks the configuration,
 * builds the generation, and publishes it, under the lock, only if its
 * attempt still stands.
 *
 * A builder cannot be stopped from outside (it may be waiting on a JWKS URL
 * or running policy tests, each with budgets of their own): one that overruns
 * is abandoned, which it learns under the lock when it is done, and it then
 * frees what it built unseen. At most one builder is alive at a time, so
 * there are never two publishers and what an abandoned attempt holds is
 * bounded: SIGHUPs that come while an abandoned builder runs wait for it up to
 * one budget, then are refused.
 */
enum builder_state {
	B_IDLE,      /* no builder */
	B_RUNNING,   /* its attempt stands */
	B_ABANDONED, /* over budget or draining: it publishes nothing */
	B_FINISHING, /* its result is recorded; it frees what was left and exits */
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t wake; /* CLOCK_MONOTONIC */
	const char *path;
	pthread_t thread;
	bool running;  /* the reload thread */
	bool stopping; /* draining: no attempt starts or publishes any more */

	int pending;                   /* SIGHUPs no attempt answers yet */
	struct timespec pending_until; /* refused then, if still behind an abandoned builder */

	enum builder_state state;
	struct timespec t0;       /* of the builder's attempt */
	struct timespec deadline; /* t0 + budget_ms */
	unsigned budget_ms;
} rl = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* Whether the monotonic clock reached t. */
static bool passed(const struct timespec *t)
{
	struct timespec now = clock_now();

	return !clock_before(&now, t);
}

static unsigned long long serving_id(void)
{
	struct gen *g = gen_acquire();
	unsigned long long id = g ? g->id : 0ULL;

	gen_release(g);
	return id;
}

/* The budget of an attempt that starts now: the serving generation's. */
static unsigned serving_budget(void)
{
	struct gen *g = gen_acquire();
	unsigned ms = g ? g->cfg->reload_timeout_ms : 30000;

	gen_release(g);
	return ms;
}

/* The verdict for `courier-broker reload`, beside the pid file: at is when
 * the attempt took its SIGHUPs. */
static void record_verdict(const struct timespec *at, bool ok, unsigned long long id, const char *why)
{
	struct pidfile_verdict v = {
	    .at_ns = (unsigned long long)at->tv_sec * 1000000000ULL + (unsigned long long)at->tv_nsec,
	    .ok = ok,
	    .generation = id,
	};

	snprintf(v.reason, sizeof(v.reason), "%s", why);
	if (pidfile_verdict_write(&v) != 0)
		log_msg("warn", "cannot write the reload verdict beside the pid file: %s", strerror(errno));
}

/* The verdict of a refused reload: one log line, the failed-reload metric,
 * the verdict file. at: when the refused attempt took its SIGHUPs. */
static void refuse(const char *why, const struct timespec *at)
{
	unsigned long long id = serving_id();

	metrics_reload(false, time(NULL));
	log_msg("error", "reload refused: %s; generation %llu keeps serving", why, id);
	record_verdict(at, false, id, why);
	sdnotify_ready(id);
}

/* The builder's result, under the lock, when its attempt still stands:
 * g (now the serving generation's) or, when NULL, the reason in err; its
 * listener certificate (NULL when TLS is off or the pair is the one
 * served), installed with it. */
static void settle(struct gen *g, struct tls_creds *creds, const char *err)
{
	if (!g) {
		refuse(err, &rl.t0);
		return;
	}
	char msg[160], aerr[512];

	warn_restart_only(g->cfg);
	tls_install(creds);
	gen_publish(g);
	metrics_reload(true, time(NULL));
	/* Checked by the builder; should the file vanish since, the old one
	 * stays open: the generation already serves, so the line says so. */
	if (reload_apply_process(g->cfg, aerr, sizeof(aerr)) != 0)
		log_msg("error", "reload: %s; audit lines still go to the previous file", aerr);
	snprintf(msg, sizeof(msg), "reload done: generation %llu serving (%.1f ms)", g->id,
	         clock_since_ms(&rl.t0));
	reload_log_generation(g, "reload", msg);
	/* After the publish: whoever reads "ok" finds the new generation serving. */
	record_verdict(&rl.t0, true, g->id, "");
	sdnotify_ready(g->id);
}

static void *builder(void *arg)
{
	unsigned threads = (unsigned)(uintptr_t)arg;
	char err[1024];
	struct config *cfg;
	struct gen *g = NULL;
	struct tls_creds *creds = NULL;

	cfg = reload_load(rl.path, true, err, sizeof(err));
	if (cfg && audit_check(cfg->audit_file, err, sizeof(err)) != 0) {
		config_free(cfg);
		cfg = NULL;
	}
	/* The listener's pair, re-read with the file: a pair GnuTLS cannot
	 * use refuses the reload like any other error. */
	if (cfg && cfg->tls.enabled && tls_active()) {
		char why[512];
		if (!(creds = tls_prepare(cfg->tls.cert_pem, cfg->tls.cert_len, &cfg->tls.key, why,
		                          sizeof(why)))) {
			snprintf(err, sizeof(err), "tls: %s", why);
			config_free(cfg);
			cfg = NULL;
		} else if (tls_same(creds)) {
			tls_creds_free(creds);
			creds = NULL;
		}
	}
	if (cfg && !(g = gen_build(cfg, threads))) {
		config_free(cfg);
		snprintf(err, sizeof(err), "out of memory");
	}
	pthread_mutex_lock(&rl.lock);
	if (rl.state == B_RUNNING) {
		settle(g, g ? creds : NULL, err);
		if (g)
			creds = NULL;
		g = NULL;
		rl.state = B_FINISHING;
	} else {
		if (g)
			log_msg("info",
			        "abandoned reload finished after %.0f ms (it had passed its checks): %s",
			        clock_since_ms(&rl.t0), "its result is discarded");
		else
			log_msg("info", "abandoned reload finished after %.0f ms (it had failed: %s)",
			        clock_since_ms(&rl.t0), err);
	}
	pthread_mutex_unlock(&rl.lock);

	/* Outside the lock: freeing policy engines takes a while. Only then is
	 * the builder gone (reload_busy): nothing of it runs at exit. */
	gen_release(g);
	tls_creds_free(creds);

	pthread_mutex_lock(&rl.lock);
	rl.state = B_IDLE;
	pthread_cond_broadcast(&rl.wake);
	pthread_mutex_unlock(&rl.lock);
	return NULL;
}

/* Under the lock: starts a builder for the pending SIGHUPs. */
static void start_attempt(void)
{
	unsigned threads = started.set ? started.values[0] /* threads */ : 1;
	pthread_attr_t attr;
	pthread_t t;
	int signals = rl.pending, rc;
	char why[128];

	rl.pending = 0;
	if (signals > 1)
		log_msg("info", "SIGHUP: reloading %s (%d signals coalesced)", rl.path, signals);
	else
		log_msg("info", "SIGHUP: reloading %s", rl.path);
	sdnotify_reloading();
	rl.budget_ms = serving_budget();
	rl.t0 = clock_now();
	rl.deadline = clock_add_ms(rl.t0, (long)rl.budget_ms);
	rl.state = B_RUNNING;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	rc = pthread_create(&t, &attr, builder, (void *)(uintptr_t)threads);
	pthread_attr_destroy(&attr);
	if (rc != 0) {
		rl.state = B_IDLE;
		snprintf(why, sizeof(why), "cannot start a thread for it: %s", strerror(rc));
		refuse(why, &rl.t0);
	}
}

static void *reload_thread(void *arg)
{
	char why[128];

	(void)arg;
	pthread_mutex_lock(&rl.lock);
	while (!rl.stopping) {
		const struct timespec *until = NULL;

		if (rl.state == B_RUNNING && passed(&rl.deadline)) {
			rl.state = B_ABANDONED;
			snprintf(why, sizeof(why), "took longer than %u ms", rl.budget_ms);
			refuse(why, &rl.t0);
			if (rl.pending > 0)
				rl.pending_until = clock_add_ms(clock_now(), (long)serving_budget());
			continue;
		}
		if (rl.pending > 0 && rl.state == B_IDLE) {
			start_attempt();
			continue;
		}
		if (rl.pending > 0 && rl.state == B_ABANDONED && passed(&rl.pending_until)) {
			struct timespec now = clock_now();

			rl.pending = 0;
			snprintf(why, sizeof(why), "the reload abandoned after %u ms is still running",
			         rl.budget_ms);
			refuse(why, &now);
			continue;
		}
		if (rl.state == B_RUNNING)
			until = &rl.deadline;
		else if (rl.pending > 0 && rl.state == B_ABANDONED)
			until = &rl.pending_until;
		if (until)
			pthread_cond_timedwait(&rl.wake, &rl.lock, until);
		else
			pthread_cond_wait(&rl.wake, &rl.lock);
	}
	pthread_mutex_unlock(&rl.lock);
	return NULL;
}

int reload_start(const char *path)
{
	pthread_condattr_t ca;
	int rc;

	rl.path = path;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&rl.wake, &ca);
	pthread_condattr_destroy(&ca);
	rc = pthread_create(&rl.thread, NULL, reload_thread, NULL);
	if (rc != 0) {
		pthread_cond_destroy(&rl.wake);
		return -1;
	}
	rl.running = true;
	return 0;
}

void reload_request(int signals)
{
	pthread_mutex_lock(&rl.lock);
	if (rl.running && !rl.stopping) {
		if (rl.pending == 0 && rl.state == B_ABANDONED) {
			unsigned ms = serving_budget();
			rl.pending_until = clock_add_ms(clock_now(), (long)ms);
			log_msg("info", "SIGHUP: waiting up to %u ms for the abandoned reload to finish", ms);
		} else if (rl.pending == 0 && rl.state != B_IDLE) {
			log_msg("info", "SIGHUP: a reload is under way; one more follows it");
		}
		rl.pending += signals;
		pthread_cond_broadcast(&rl.wake);
	}
	pthread_mutex_unlock(&rl.lock);
}

void reload_stop(void)
{
	pthread_mutex_lock(&rl.lock);
	if (!rl.running) {
		pthread_mutex_unlock(&rl.lock);
		return;
	}
	rl.stopping = true;
	rl.pending = 0;
	if (rl.state == B_RUNNING) {
		rl.state = B_ABANDONED;
		log_msg("info", "shutting down: the reload under way is abandoned and installs nothing");
	}
	pthread_cond_broadcast(&rl.wake);
	pthread_mutex_unlock(&rl.lock);
	pthread_join(rl.thread, NULL);
	rl.running = false;
}

bool reload_busy(void)
{
	bool busy;

	pthread_mutex_lock(&rl.lock);
	busy = rl.state != B_IDLE;
	pthread_mutex_unlock(&rl.lock);
	return busy;
}

/* ------------------------------------- what a generation sets process-wide */

void reload_log_generation(const struct gen *g, const char *event, const char *msg)
{
	struct log_line l;

	if (strcmp(event, "start") == 0)
		log_line_begin_always(&l, LOG_INFO, event);
	else if (!log_line_begin(&l, LOG_INFO, event))
		return;
	log_line_str(&l, "msg", msg);
	log_line_int(&l, "generation", (long long)g->id);
	log_line_str(&l, "log_level", log_level_name((enum log_level)g->cfg->log_level));
	if (g->cfg->audit_file)
		log_line_str(&l, "audit_log", g->cfg->audit_file);
	log_line_str(&l, "courier_url", g->courier_url);
	log_line_open(&l, "tenants", '[');
	for (size_t i = 0; i < g->cfg->n_tenants; i++) {
		const struct tenant *t = &g->cfg->tenants[i];
		log_line_open(&l, NULL, '{');
		log_line_str(&l, "name", t->name);
		log_line_str(&l, "policy_revision", t->policy_revision);
		log_line_str(&l, "courier_url", gen_courier_url(g, t)); /* its own region or base_url */
		log_line_close(&l, '}');
	}
	log_line_close(&l, ']');
	log_line_end(&l);
}

int reload_apply_process(const struct config *cfg, char *err, size_t errlen)
{
	log_set_level((enum log_level)cfg->log_level);
	return audit_configure(cfg->audit_file, cfg->audit_inputs, err, errlen);
}
