/*
 * policytest.h — policy tests: `courier-broker test`, and the tests `check` runs.
 *
 * A test file NAME_test.lua returns a list of cases
 *   { name = ..., req = { ... }, expect = { allow = ..., scopes = ..., expires_in = ..., logs = ... } }
 * (beside them, the fixtures data, now and identity; a case may have its
 * own data) run against NAME.lua in the same folder, through the same
 * engine and envelope as a live request. Strict: an unknown key, a
 * duplicate name or a case that expects nothing fails, naming file:line.
 * Never calls Courier.
 */
#ifndef BROKER_POLICYTEST_H
#define BROKER_POLICYTEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct config;
struct tenant;
struct policy_engine;

/* The command line of `test` (main.c's --help and the usage error quote it). */
#define POLICYTEST_USAGE                                                                                     \
	"courier-broker test [--run PATTERN] [--format text|json] [--coverage] [--threshold N] "             \
	"[--branch-threshold N] PATH..."

/* `courier-broker test` with the arguments after "test" (POLICYTEST_USAGE): exit status. */
int policytest_main(int argc, char **argv);

/* Runs, for every tenant of cfg, the tests beside its policy (<policy>_test.lua,
 * when present) under that tenant's ceiling, on e (an engine built for cfg:
 * the one that checked the policies compiled). Returns 0, or -1 with the first
 * failure in err. Prints one line per case unless quiet. */
int policytest_config(const struct config *cfg, struct policy_engine *e, bool quiet, char *err,
                      size_t errlen);

#endif
