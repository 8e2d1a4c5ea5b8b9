/*
 * main.c — the command line: wires configuration, engines and the front.
 *
 * serve: blocks the signals before any thread starts and reads them here, in
 * one place (SIGHUP reloads, SIGTERM/SIGINT drain and exit). check: loads
 * everything and runs the policy tests. eval: one decision, never calling
 * Courier. Keeps no logic of its own beyond the order of things.
 */
#include <curl/curl.h>
#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "courier.h"
#include "envelope.h"
#include "gen.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "policy.h"
#include "policytest.h"
#include "scope.h"

static const char usage[] =
	"usage: courier-broker serve -c CONFIG         run the server (foreground, logs to stderr)\n"
	"       courier-broker check -c CONFIG         load config, keys and policies, run policy tests\n"
	"       courier-broker test [--run PATTERN] [--format text|json] PATH...\n"
	"                                              run policy test files (*_test.lua) or folders\n"
	"       courier-broker eval -c CONFIG --tenant NAME [--request FILE|-]\n"
	"                                              print the decision for one request as JSON\n"
	"       courier-broker --version | --help\n";

/* Keys live in this process's memory: keep them out of core dumps. */
static void harden_process(void)
{
	struct rlimit rl = {0, 0};

	(void)setrlimit(RLIMIT_CORE, &rl);
	(void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

/* Loads and fully checks a configuration: keys, every policy, their tests. */
static struct config *load_checked(const char *path, bool quiet_tests)
{
	char err[1024];
	struct config *cfg = config_load(path, err, sizeof(err));

	if (!cfg) {
		log_msg("error", "%s", err);
		return NULL;
	}
	if (policy_engine_check(cfg, err, sizeof(err)) != 0) {
		log_msg("error", "%s", err);
		config_free(cfg);
		return NULL;
	}
	if (policytest_config(cfg, quiet_tests, err, sizeof(err)) != 0) {
		log_msg("error", "%s", err);
		config_free(cfg);
		return NULL;
	}
	return cfg;
}

static int cmd_check(const char *path)
{
	struct config *cfg = load_checked(path, false);

	if (!cfg) {
		fprintf(stderr, "courier-broker: configuration %s: FAILED\n", path);
		return 1;
	}
	for (size_t i = 0; i < cfg->n_tenants; i++)
		fprintf(stderr, "tenant %s: policy %s (revision %s), api key %s\n", cfg->tenants[i].name,
			cfg->tenants[i].policy_path, cfg->tenants[i].policy_revision,
			cfg->tenants[i].api_key.fingerprint);
	fprintf(stderr, "courier-broker: configuration %s: ok\n", path);
	config_free(cfg);
	return 0;
}

static void reload(const char *path)
{
	struct config *cfg;

	log_msg("info", "SIGHUP: reloading %s", path);
	cfg = load_checked(path, true);
	if (!cfg || gen_install(cfg) != 0) {
		if (cfg)
			config_free(cfg);
		metrics_reload(false, time(NULL));
		log_msg("error", "reload refused: the running generation keeps serving");
		return;
	}
	metrics_reload(true, time(NULL));
	{
		struct gen *g = gen_acquire();
		log_msg("info", "reload done: generation %llu serving", g ? g->id : 0ULL);
		gen_release(g);
	}
}

static int cmd_serve(const char *path)
{
	struct courier_client *cc = NULL;
	struct http_server *srv = NULL;
	struct config *cfg;
	struct gen *g;
	sigset_t set;
	char err[512];
	unsigned drain_ms;
	int sig;

	harden_process();
	/* Before any thread exists, so every thread inherits the mask. */
	sigemptyset(&set);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	curl_global_init(CURL_GLOBAL_DEFAULT);

	cfg = load_checked(path, true);
	if (!cfg)
		return 1;
	if (gen_install(cfg) != 0) {
		config_free(cfg);
		log_msg("error", "out of memory");
		return 1;
	}
	g = gen_acquire();
	cc = courier_client_new(g->cfg->courier_max_connections, err, sizeof(err));
	if (cc)
		srv = http_start(g->cfg, cc, err, sizeof(err));
	if (!srv) {
		log_msg("error", "%s", err);
		gen_release(g);
		courier_client_free(cc);
		gen_shutdown();
		return 1;
	}
	log_msg("info", "courier-broker %s listening on %s:%u with %zu tenant(s), generation %llu", BROKER_VERSION,
		g->cfg->listen_host, http_port(srv), g->cfg->n_tenants, g->id);
	gen_release(g);

	for (;;) {
		if (sigwait(&set, &sig) != 0)
			continue;
		if (sig == SIGHUP) {
			reload(path);
			continue;
		}
		break;
	}
	g = gen_acquire();
	drain_ms = g ? g->cfg->drain_timeout_ms : 10000;
	gen_release(g);
	log_msg("info", "%s: draining (up to %u ms)", sig == SIGINT ? "SIGINT" : "SIGTERM", drain_ms);
	http_drain_and_stop(srv, drain_ms);
	courier_client_free(cc);
	gen_shutdown();
	curl_global_cleanup();
	log_msg("info", "stopped");
	return 0;
}

static int cmd_eval(const char *path, const char *tenant, const char *request)
{
	char err[1024];
	struct config *cfg;
	struct policy_engine *e = NULL;
	FILE *f = NULL;
	char *buf = NULL;
	size_t len = 0, cap = 0, n;
	int rc = 1;

	cfg = config_load(path, err, sizeof(err));
	if (!cfg) {
		fprintf(stderr, "courier-broker: %s\n", err);
		return 1;
	}
	if (!config_tenant(cfg, tenant)) {
		fprintf(stderr, "courier-broker: no tenant %s in %s\n", tenant, path);
		goto out;
	}
	f = (!request || strcmp(request, "-") == 0) ? stdin : fopen(request, "r");
	if (!f) {
		fprintf(stderr, "courier-broker: %s: %s\n", request, strerror(errno));
		goto out;
	}
	for (;;) {
		if (len + 4096 > cap) {
			char *p = realloc(buf, cap = cap * 2 + 4096);
			if (!p)
				goto out;
			buf = p;
		}
		n = fread(buf + len, 1, cap - len, f);
		if (n == 0)
			break;
		len += n;
		if (len > 1024 * 1024) {
			fprintf(stderr, "courier-broker: request larger than 1 MiB\n");
			goto out;
		}
	}
	e = policy_engine_new(cfg, err, sizeof(err));
	if (!e) {
		fprintf(stderr, "courier-broker: %s\n", err);
		goto out;
	}
	rc = policytest_eval(e, config_tenant(cfg, tenant), buf ? buf : "", len, stdout);
out:
	if (f && f != stdin)
		fclose(f);
	free(buf);
	policy_engine_free(e);
	config_free(cfg);
	return rc;
}

int main(int argc, char **argv)
{
	const char *cmd = argc > 1 ? argv[1] : NULL;
	const char *config = NULL, *tenant = NULL, *request = NULL;

	if (!cmd || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
		fputs(usage, cmd ? stdout : stderr);
		return cmd ? 0 : 2;
	}
	if (strcmp(cmd, "--version") == 0) {
		printf("courier-broker %s\n", BROKER_VERSION);
		return 0;
	}
	if (strcmp(cmd, "test") == 0)
		return policytest_main(argc - 2, argv + 2);

	for (int i = 2; i < argc; i++) {
		if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc)
			config = argv[++i];
		else if (strcmp(argv[i], "--tenant") == 0 && i + 1 < argc)
			tenant = argv[++i];
		else if (strcmp(argv[i], "--request") == 0 && i + 1 < argc)
			request = argv[++i];
		else {
			fprintf(stderr, "courier-broker: unexpected argument %s\n%s", argv[i], usage);
			return 2;
		}
	}
	if (!config) {
		fprintf(stderr, "courier-broker: %s needs -c CONFIG\n%s", cmd, usage);
		return 2;
	}
	if (strcmp(cmd, "serve") == 0)
		return cmd_serve(config);
	if (strcmp(cmd, "check") == 0)
		return cmd_check(config);
	if (strcmp(cmd, "eval") == 0) {
		if (!tenant) {
			fprintf(stderr, "courier-broker: eval needs --tenant NAME\n");
			return 2;
		}
		return cmd_eval(config, tenant, request);
	}
	fprintf(stderr, "courier-broker: unknown command %s\n%s", cmd, usage);
	return 2;
}
