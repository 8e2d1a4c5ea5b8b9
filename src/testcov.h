/*
 * testcov.h — what the `test` runner (policytest.c) and its coverage
 * (testcov.c) share: the report of one run, and the tallies of
 * --coverage. Private to the two files (testcase.c has its own header).
 */
#ifndef BROKER_TESTCOV_H
#define BROKER_TESTCOV_H

#include <lua.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct cov_file;

struct report {
	bool json;
	bool quiet;
	const char *pattern;
	int passed, failed;
	FILE *out;
	lua_State *L; /* a state of the report's own, to encode JSON lines */
	char first_failure[512];
	bool coverage;
	struct cov_file *cov; /* files seen by --coverage, merged over test files */
	size_t n_cov;
};

/* A test or policy file: at most MAX_TEST_FILE bytes. */
#define MAX_TEST_FILE (1024 * 1024)

/* The text of a file of at most MAX_TEST_FILE bytes, or NULL (fileio_read). */
char *testcov_read_text(const char *path, size_t *len);

/* The tally of the file at path; with add, read and added when new. NULL
 * when absent (without add) or unreadable. */
struct cov_file *testcov_find(struct report *rep, const char *path, bool add);

/* policy_coverage_each's and policy_branch_each's callbacks; ctx: the report. */
void testcov_hit(void *ctx, const char *path, int line);
void testcov_branch_hit(void *ctx, const char *path, int id, bool value);

/* For --coverage: *text (a policy's or a module's source at path) becomes
 * the same source with its conditions recorded; left as it is on failure. */
void testcov_instrument(struct report *rep, const char *path, char **text, size_t *len);

/* Prints each file's lines and branches and frees the tallies; returns the
 * lowest percentage of lines, and of branches in *lowest_branch. */
int testcov_report(struct report *rep, int *lowest_branch);

#endif
