/*
 * main.c — the command line: wires configuration, engines and the front.
 *
 * serve: blocks the signals before any thread starts and reads them here, in
 * one place (SIGHUP hands a reload to the reload thread, several pending ones
 * once; SIGTERM/SIGINT drain and exit, with a watchdog that bounds the exit
 * and takes a second SIGTERM/SIGINT as "exit now"). A forced exit returns
 * EX_SOFTWARE (70), a clean drain 0. check: loads everything and
 * runs the policy tests. reload: check, then SIGHUP the broker of a pid file
 * and wait for its own verdict (pidfile.h). serve --listen overrides listen.
 * eval: one decision, never calling Courier. replay: replay.c. Keeps no logic of its own beyond
 * the order of things.
 */
#include <curl/curl.h>
#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "clock.h"
#include "cluster.h"
#include "config.h"
#include "courier.h"
#include "denycmd.h"
#include "envelope.h"
#include "evalreq.h"
#include "fileio.h"
#include "gen.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "pidfile.h"
#include "policy.h"
#include "policyeval.h"
#include "policytest.h"
#include "reload.h"
#include "replay.h"
#include "scope.h"
#include "sdnotify.h"
#include "shadow.h"

/* The largest request `eval` reads. */
#define EVAL_REQUEST_MAX (1024 * 1024)

/* How often `reload` looks for the broker's verdict. */
#define RELOAD_POLL_MS 50

/* The one source of the command line's usage: README.md quotes this text
 * (`courier-broker --help`) and tests/integration/test_cli.py checks it does. */
static const char usage[] =
    "usage: courier-broker serve -c CONFIG [--pid-file PATH] [--listen ADDR]\n"
    "                                              run the server (foreground, logs to stderr)\n"
    "       courier-broker check -c CONFIG         load config, keys and every policy, run the\n"
    "                                              policy tests\n"
    "       courier-broker reload -c CONFIG [--pid-file PATH]\n"
    "                                              check CONFIG like `check`; only if it passes,\n"
    "                                              SIGHUP the broker named by the pid file and\n"
    "                                              wait for its verdict: exit 0 once it serves\n"
    "                                              the new generation, 1 when it refused\n"
    "                                              (default " PIDFILE_DEFAULT ")\n"
    "       " POLICYTEST_USAGE "\n"
    "                                              run policy test files (*_test.lua) or folders\n"
    "                                              of them\n"
    "       courier-broker eval -c CONFIG --tenant NAME [--request FILE|-] [--peer ADDR] [--explain]\n"
    "                          [--now UNIX_SECONDS]\n"
    "                                              print the decision for one request (JSON\n"
    "                                              description, or raw HTTP with its credential,\n"
    "                                              verified) as JSON; --explain: the return that\n"
    "                                              decided and its calls; never calls Courier\n"
    "       " REPLAY_USAGE "\n"
    "                                              decide audit-log lines again with CONFIG's\n"
    "                                              policies; print each decision that differs;\n"
    "                                              exit 1 when one does\n"
    "       " DENYCMD_USAGE "\n"
    "                                              with a cluster: add or remove users on the\n"
    "                                              tenant's shared deny list (every broker\n"
    "                                              applies it within a second)\n"
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
	struct config *cfg = reload_load(path, quiet_tests, err, sizeof(err));

	if (!cfg)
		log_msg("error", "%s", err);
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

/* `reload`: the same checks as `check`; only a configuration that passes
 * them gets the running broker a SIGHUP. Then the broker's own verdict
 * decides the exit code: its environment, files and keys are the ones that
 * count. It may first finish a reload under way, so the wait is two budgets
 * and some slack. */
static int cmd_reload(const char *path, const char *pid_file)
{
	struct config *cfg = load_checked(path, true);
	struct pidfile_verdict v;
	struct timespec t0;
	unsigned long long t0_ns;
	unsigned wait_ms;
	char err[512];
	pid_t pid;

	if (!cfg) {
		fprintf(stderr,
		        "courier-broker: configuration %s: FAILED; the running broker was not signalled\n",
		        path);
		return 1;
	}
	wait_ms = 2 * cfg->reload_timeout_ms + 5000;
	config_free(cfg);
	pid = pidfile_broker(pid_file, err, sizeof(err));
	if (pid < 0) {
		fprintf(stderr, "courier-broker: %s\n", err);
		return 1;
	}
	t0 = clock_now();
	t0_ns = (unsigned long long)t0.tv_sec * 1000000000ULL + (unsigned long long)t0.tv_nsec;
	if (kill(pid, SIGHUP) != 0) {
		fprintf(stderr, "courier-broker: cannot signal pid %ld: %s\n", (long)pid, strerror(errno));
		return 1;
	}
	for (unsigned waited = 0; waited <= wait_ms; waited += RELOAD_POLL_MS) {
		const struct timespec pause = {0, RELOAD_POLL_MS * 1000000L};
		int rc = pidfile_verdict_read(pid_file, &v, err, sizeof(err));

		if (rc < 0) {
			fprintf(stderr, "courier-broker: %s\n", err);
			return 1;
		}
		if (rc == 1 && v.pid == (long)pid && v.at_ns >= t0_ns) {
			if (v.ok) {
				fprintf(stderr,
				        "courier-broker: reload of pid %ld: ok, generation %llu serving\n",
				        (long)pid, v.generation);
				return 0;
			}
			fprintf(
			    stderr,
			    "courier-broker: reload of pid %ld: REFUSED: %s; generation %llu keeps serving\n",
			    (long)pid, v.reason, v.generation);
			return 1;
		}
		if (kill(pid, 0) != 0 && errno == ESRCH) {
			fprintf(stderr, "courier-broker: pid %ld exited before answering the reload\n",
			        (long)pid);
			return 1;
		}
		nanosleep(&pause, NULL);
	}
	fprintf(stderr, "courier-broker: pid %ld gave no verdict on the reload within %u ms (see its log)\n",
	        (long)pid, wait_ms);
	return 1;
}

/* ------------------------------------------------------------ the drain watchdog */

static unsigned watchdog_ms;
static sigset_t watchdog_signals;

/* An exit that skips the drain or the cleanup: a supervisor must be able to
 * tell it from a clean one. */
static _Noreturn void exit_forced(void)
{
	pidfile_remove();
	_exit(EX_SOFTWARE);
}

/* Bounds the exit whatever hangs: the drain, the Courier thread, MHD. The
 * signal thread is busy draining, so this one reads the signals meanwhile. */
static void *watchdog(void *arg)
{
	struct timespec until = clock_add_ms(clock_now(), (long)watchdog_ms), now, left;
	int sig;

	(void)arg;
	for (;;) {
		now = clock_now();
		left.tv_sec = until.tv_sec - now.tv_sec;
		left.tv_nsec = until.tv_nsec - now.tv_nsec;
		if (left.tv_nsec < 0) {
			left.tv_sec--;
			left.tv_nsec += 1000000000L;
		}
		if (left.tv_sec < 0)
			break;
		sig = sigtimedwait(&watchdog_signals, NULL, &left);
		if (sig == SIGTERM || sig == SIGINT) {
			log_msg("error", "%s during the drain: exiting now",
			        sig == SIGINT ? "SIGINT" : "SIGTERM");
			exit_forced();
		}
		if (sig == SIGHUP)
			log_msg("info", "SIGHUP ignored: draining");
	}
	log_msg("error", "shutdown did not finish within %u ms: exiting now", watchdog_ms);
	exit_forced();
	return NULL;
}

static void watchdog_start(unsigned ms, const sigset_t *signals)
{
	pthread_t t;

	watchdog_ms = ms;
	watchdog_signals = *signals;
	if (pthread_create(&t, NULL, watchdog, NULL) == 0)
		pthread_detach(t);
	else
		log_msg("warn", "cannot start the shutdown watchdog");
}

/* Waits for a signal. Several SIGHUPs already pending make one reload
 * (*hups counts them); a pending SIGTERM or SIGINT wins over them. */
static int next_signal(const sigset_t *set, int *hups)
{
	static const struct timespec now = {0, 0};
	int sig, more;

	while (sigwait(set, &sig) != 0)
		;
	*hups = sig == SIGHUP;
	while (sig == SIGHUP && (more = sigtimedwait(set, NULL, &now)) > 0) {
		if (more == SIGHUP)
			(*hups)++;
		else
			sig = more;
	}
	return sig;
}

static int cmd_serve(const char *path, const char *pid_file)
{
	struct http_server *srv = NULL;
	struct config *cfg;
	struct gen *g;
	sigset_t set;
	char err[512];
	unsigned drain_ms;
	int sig, hups, rc;

	harden_process();
	/* Before any thread exists, so every thread inherits the mask. */
	sigemptyset(&set);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	(void)sdnotify_init();

	if (pid_file && pidfile_check(pid_file, err, sizeof(err)) != 0) {
		log_msg("error", "%s", err);
		return 1;
	}
	cfg = load_checked(path, true);
	if (!cfg)
		return 1;
	if (reload_apply_process(cfg, err, sizeof(err)) != 0) {
		log_msg("error", "%s", err);
		config_free(cfg);
		return 1;
	}
	reload_started_with(cfg);
	if (gen_install(cfg, cfg->threads) != 0) {
		config_free(cfg);
		log_msg("error", "out of memory");
		return 1;
	}
	g = gen_acquire();
	/* Before the listener: with Redis up, the first request sees the deny list. */
	if (cluster_start(&g->cfg->cluster, err, sizeof(err)) != 0)
		log_msg("warn", "%s: the cluster's deny list is not followed", err);
	srv = http_start(g->cfg, err, sizeof(err));
	if (!srv) {
		log_msg("error", "%s", err);
		gen_release(g);
		gen_shutdown();
		shadow_stop();
		return 1;
	}
	/* Before the "listening" line, so whoever waits for that line finds it. */
	if (pid_file && pidfile_write(pid_file, err, sizeof(err)) != 0)
		log_msg("warn", "%s: `courier-broker reload` will not find this broker", err);
	{
		char msg[512];
		snprintf(msg, sizeof(msg),
		         "courier-broker %s listening on %s:%u with %zu tenant(s), generation %llu",
		         BROKER_VERSION, g->cfg->listen_host, http_port(srv), g->cfg->n_tenants, g->id);
		reload_log_generation(g, "start", msg);
	}
	sdnotify_ready(g->id);
	gen_release(g);

	if (reload_start(path) != 0)
		log_msg("warn", "cannot start the reload thread: SIGHUP will not reload");
	while ((sig = next_signal(&set, &hups)) == SIGHUP || sig == SIGUSR1) {
		if (sig == SIGUSR1)
			audit_reopen(); /* logrotate renamed the audit log */
		if (hups)
			reload_request(hups);
	}
	/* First: no reload may install a generation once the drain began. */
	reload_stop();
	sdnotify_stopping();
	g = gen_acquire();
	drain_ms = g ? g->cfg->drain_timeout_ms : 10000;
	gen_release(g);
	log_msg("info", "%s: draining (up to %u ms)", sig == SIGINT ? "SIGINT" : "SIGTERM", drain_ms);
	/* The drain returns at most 1.5 s after its deadline (aborted Courier
	 * calls, answers flushed); 2 s is a hang. */
	watchdog_start(drain_ms + 2000, &set);
	rc = http_drain_and_stop(srv, drain_ms);
	if (rc != 0) {
		/* Connections are still suspended: freeing what they use would crash. */
		log_msg("error", "exiting without cleanup");
		exit_forced();
	}
	if (reload_busy()) {
		/* The drain was clean, but an abandoned reload's thread may be inside
		 * libcurl or OpenSSL: no global cleanup (nor exit's) may run under it. */
		pidfile_remove();
		log_msg("info",
		        "stopped (an abandoned reload was still running: nothing of it was installed)");
		_exit(0);
	}
	cluster_stop();
	gen_shutdown();
	shadow_stop(); /* its queued jobs hold generations: released here, as gen_shutdown released the
	                  current */
	/* The generation's JWKS refreshers end before libcurl and OpenSSL are torn down. */
	if (jwks_shutdown(1000) != 0)
		log_msg("warn", "a JWKS refresher was still running at exit");
	curl_global_cleanup();
	pidfile_remove();
	audit_close();
	log_msg("info", "stopped");
	return 0;
}

static int cmd_eval(const char *path, const char *tenant, const char *request,
                    const struct evalreq_options *opt)
{
	char err[1024];
	struct config *cfg;
	struct policy_engine *e = NULL;
	char *buf = NULL, why[256];
	size_t len = 0;
	int rc = 1;

	/* Never calls Courier: its keys are not read (the requesters' auth is). */
	cfg = config_load_for(path, &policy_config_sandbox, CONFIG_USE_EVAL, err, sizeof(err));
	if (!cfg) {
		fprintf(stderr, "courier-broker: %s\n", err);
		return 1;
	}
	if (!config_tenant(cfg, tenant)) {
		fprintf(stderr, "courier-broker: no tenant %s in %s\n", tenant, path);
		goto out;
	}
	if (fileio_read(request ? request : "-", EVAL_REQUEST_MAX, 1, &buf, &len, why, sizeof(why)) != 0) {
		fprintf(stderr, "courier-broker: %s: %s\n", request ? request : "-", why);
		goto out;
	}
	e = policy_engine_new(cfg, err, sizeof(err));
	if (!e) {
		fprintf(stderr, "courier-broker: %s\n", err);
		goto out;
	}
	rc = evalreq_run(e, cfg, config_tenant(cfg, tenant), buf, len, opt, stdout);
out:
	free(buf);
	policy_engine_free(e);
	config_free(cfg);
	return rc;
}

int main(int argc, char **argv)
{
	const char *cmd = argc > 1 ? argv[1] : NULL;
	const char *config = NULL, *tenant = NULL, *request = NULL, *pid_file = NULL;
	struct evalreq_options eval_opt = {0};

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
	if (strcmp(cmd, "deny") == 0 || strcmp(cmd, "allow") == 0)
		return denycmd_main(cmd, argc - 2, argv + 2);
	if (strcmp(cmd, "replay") == 0)
		return replay_main(argc - 2, argv + 2);

	for (int i = 2; i < argc; i++) {
		if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc)
			config = argv[++i];
		else if (strcmp(argv[i], "--tenant") == 0 && i + 1 < argc)
			tenant = argv[++i];
		else if (strcmp(argv[i], "--request") == 0 && i + 1 < argc)
			request = argv[++i];
		else if (strcmp(argv[i], "--pid-file") == 0 && i + 1 < argc &&
		         (strcmp(cmd, "serve") == 0 || strcmp(cmd, "reload") == 0))
			pid_file = argv[++i];
		else if (strcmp(argv[i], "--peer") == 0 && i + 1 < argc && strcmp(cmd, "eval") == 0)
			eval_opt.peer = argv[++i];
		else if (strcmp(argv[i], "--explain") == 0 && strcmp(cmd, "eval") == 0)
			eval_opt.explain = true;
		else if (strcmp(argv[i], "--now") == 0 && i + 1 < argc && strcmp(cmd, "eval") == 0) {
			char *end;
			errno = 0;
			eval_opt.now = strtoll(argv[++i], &end, 10);
			if (errno || end == argv[i] || *end || eval_opt.now < 0) {
				fprintf(stderr, "courier-broker: --now takes Unix seconds, not %s\n",
				        argv[i]);
				return 2;
			}
			eval_opt.has_now = true;
		} else if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc && strcmp(cmd, "serve") == 0)
			config_override_listen(argv[++i]);
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
		return cmd_serve(config, pid_file);
	if (strcmp(cmd, "check") == 0)
		return cmd_check(config);
	if (strcmp(cmd, "reload") == 0)
		return cmd_reload(config, pid_file ? pid_file : PIDFILE_DEFAULT);
	if (strcmp(cmd, "eval") == 0) {
		if (!tenant) {
			fprintf(stderr, "courier-broker: eval needs --tenant NAME\n");
			return 2;
		}
		return cmd_eval(config, tenant, request, &eval_opt);
	}
	fprintf(stderr, "courier-broker: unknown command %s\n%s", cmd, usage);
	return 2;
}
