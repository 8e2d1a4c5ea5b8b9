/*
 * reload.c — building, checking and installing the next generation.
 *
 * Owns the checks a configuration passes before it may serve, and the record
 * of each attempt (one log line with the reason, the reload metrics). Knows
 * which settings the running server took at start and cannot change. Never
 * touches a generation that is serving: gen_install swaps it atomically.
 */
#include "reload.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "gen.h"
#include "log.h"
#include "metrics.h"
#include "policy.h"
#include "policytest.h"

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
	bool set;
} started;

static unsigned restart_only_value(const struct config *cfg, size_t i)
{
	return *(const unsigned *)(const void *)((const char *)cfg + restart_only[i].off);
}

struct config *reload_load(const char *path, bool quiet_tests, char *err, size_t errlen)
{
	struct config *cfg = config_load(path, err, errlen);
	struct policy_engine *e;
	int rc;

	if (!cfg)
		return NULL;
	/* One engine compiles every policy (the check) and then runs their tests. */
	e = policy_engine_new(cfg, err, errlen);
	rc = e ? policytest_config(cfg, e, quiet_tests, err, errlen) : -1;
	policy_engine_free(e);
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

void reload_started_with(const struct config *cfg)
{
	snprintf(started.listen_host, sizeof(started.listen_host), "%s", cfg->listen_host);
	started.listen_port = cfg->listen_port;
	admin_text(cfg, started.admin, sizeof(started.admin));
	for (size_t i = 0; i < N_RESTART_ONLY; i++)
		started.values[i] = restart_only_value(cfg, i);
	started.set = true;
}

/* One warning per setting the new configuration changes but cannot apply. */
static void warn_restart_only(const struct config *cfg)
{
	char admin[sizeof(started.admin)];

	if (!started.set)
		return;
	if (strcmp(cfg->listen_host, started.listen_host) != 0 || cfg->listen_port != started.listen_port)
		log_msg("warn", "reload: listen changed to %s:%u; still listening on %s:%u until a restart",
		        cfg->listen_host, cfg->listen_port, started.listen_host, started.listen_port);
	admin_text(cfg, admin, sizeof(admin));
	if (strcmp(admin, started.admin) != 0)
		log_msg("warn", "reload: admin_listen changed to \"%s\"; still \"%s\" until a restart", admin,
		        started.admin);
	for (size_t i = 0; i < N_RESTART_ONLY; i++) {
		unsigned now = restart_only_value(cfg, i);
		if (now != started.values[i])
			log_msg("warn", "reload: %s changed to %u; still %u until a restart",
			        restart_only[i].name, now, started.values[i]);
	}
}

static double ms_since(const struct timespec *t0)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t0->tv_sec) * 1e3 + (double)(now.tv_nsec - t0->tv_nsec) / 1e6;
}

int reload_run(const char *path, int signals)
{
	char err[1024];
	struct timespec t0;
	struct config *cfg;
	struct gen *g;
	unsigned long long running;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (signals > 1)
		log_msg("info", "SIGHUP: reloading %s (%d signals coalesced)", path, signals);
	else
		log_msg("info", "SIGHUP: reloading %s", path);
	cfg = reload_load(path, true, err, sizeof(err));
	if (cfg) {
		warn_restart_only(cfg);
		/* One engine per worker thread (as many as serve started with). */
		if (gen_install(cfg, started.set ? started.values[0] /* threads */ : cfg->threads) != 0) {
			config_free(cfg);
			cfg = NULL;
			snprintf(err, sizeof(err), "out of memory");
		}
	}
	g = gen_acquire();
	running = g ? g->id : 0ULL;
	gen_release(g);
	metrics_reload(cfg != NULL, time(NULL));
	if (!cfg) {
		log_msg("error", "reload refused: %s; generation %llu keeps serving", err, running);
		return -1;
	}
	log_msg("info", "reload done: generation %llu serving (%.1f ms)", running, ms_since(&t0));
	return 0;
}
