/*
 * reload.h — building, checking and installing the next generation.
 *
 * A configuration becomes a generation only when all of it loads (config,
 * keys from env and files, identity keys), every tenant's policy compiles and
 * every tenant's policy tests pass: the same checks as `courier-broker check`.
 * A refused reload changes nothing but its record (log line, /metrics).
 * For `serve`, reloads run on threads of their own, never on the thread that
 * reads signals nor on the request path, each within a budget
 * (reload_timeout_ms): one that overruns it is abandoned and refused.
 */
#ifndef BROKER_RELOAD_H
#define BROKER_RELOAD_H

#include <stdbool.h>
#include <stddef.h>

struct config;

/* Loads and fully checks the configuration at path. Returns it, or NULL with
 * the reason (naming tenant, file, line or key where known) in err. */
struct config *reload_load(const char *path, bool quiet_tests, char *err, size_t errlen);

/* Remembers the settings that only a restart applies (listen, threads,
 * connection limits), from the configuration serve started with. */
void reload_started_with(const struct config *cfg);

/* Starts the reload thread of `serve` (after the first generation serves);
 * path is the configuration file, kept for its life. Returns 0 or -1. */
int reload_start(const char *path);

/* The SIGHUP work, handed over without waiting: load and check the
 * configuration, warn about settings that need a restart, install it. SIGHUPs
 * (signals counts them) that come while a reload runs make one more after it.
 * The verdict is in the log, the reload metrics and, when serve wrote a pid
 * file, the verdict file beside it that `courier-broker reload` waits for. */
void reload_request(int signals);

/* At SIGTERM: from now on no reload starts or installs anything; one under
 * way is abandoned. Never waits on the reload itself. */
void reload_stop(void);

/* Whether a reload's thread is still at work (abandoned ones included): it
 * may be inside libcurl, OpenSSL or Lua, so no global cleanup may run. */
bool reload_busy(void);

/* The start ("start") and reload ("reload") lines: msg, then the generation,
 * the log level, the audit log, and each tenant with its policy revision and
 * the Courier URL in force. */
struct gen;
void reload_log_generation(const struct gen *g, const char *event, const char *msg);

/* What a generation's configuration sets outside it: the log level and the
 * audit log. Returns 0, or -1 with the reason in err. */
int reload_apply_process(const struct config *cfg, char *err, size_t errlen);

#endif
