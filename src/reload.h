/*
 * reload.h — building, checking and installing the next generation.
 *
 * A configuration becomes a generation only when all of it loads (config,
 * keys from env and files, identity keys), every tenant's policy compiles and
 * every tenant's policy tests pass: the same checks as `courier-broker check`.
 * A refused reload changes nothing but its record (log line, /metrics).
 * Runs on the thread that reads signals, never on the request path.
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

/* The SIGHUP work: load and check path, warn about settings that need a
 * restart, install it. signals: how many SIGHUPs this reload answers.
 * Returns 0 when the new generation serves, -1 when it was refused. */
int reload_run(const char *path, int signals);

#endif
