/*
 * testcov.c — `test --coverage` (policytest.c): which lines and branches
 * of the policies and modules under test ran, merged over test files, and
 * the report of it (text or JSON lines).
 *
 * Owns the per-file tallies (struct cov_file) and their report. The lines
 * that hold code come from policy/coverage.c, the recorded conditions from
 * policy_branch_instrument. It must never run a policy or a test file, nor
 * give figures for a file it could not read.
 */
#include "testcov.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"
#include "policy.h"

/* One policy or module file: which lines hold code, which ran. */
struct cov_file {
	char *path;
	size_t nlines; /* entries of code and hit: lines 0 .. nlines - 1 */
	unsigned char *code, *hit;
	bool policy; /* a policy under test (reported even when nothing ran) */
	/* Branches: the if/elseif conditions (site k on line site_line[k - 1]),
	 * and whether each was seen false (seen[2k - 2]) and true (seen[2k - 1]). */
	bool branches;
	size_t nsites;
	int *site_line;
	unsigned char *seen;
};

char *testcov_read_text(const char *path, size_t *len)
{
	char *buf, why[128];

	return fileio_read(path, MAX_TEST_FILE, 0, &buf, len, why, sizeof(why)) == 0 ? buf : NULL;
}

struct cov_file *testcov_find(struct report *rep, const char *path, bool add)
{
	struct cov_file *f, *grown;
	char *text, err[512];
	size_t len, lines = 2;

	for (size_t i = 0; i < rep->n_cov; i++)
		if (strcmp(rep->cov[i].path, path) == 0)
			return &rep->cov[i];
	if (!add || !(text = testcov_read_text(path, &len)))
		return NULL;
	for (size_t i = 0; i < len; i++)
		lines += text[i] == '\n';
	grown = realloc(rep->cov, (rep->n_cov + 1) * sizeof(*rep->cov));
	if (!grown) {
		free(text);
		return NULL;
	}
	rep->cov = grown;
	f = &rep->cov[rep->n_cov];
	memset(f, 0, sizeof(*f));
	f->path = strdup(path);
	f->nlines = lines;
	f->code = calloc(lines, 1);
	f->hit = calloc(lines, 1);
	if (!f->path || !f->code || !f->hit ||
	    policy_code_lines(path, text, len, f->code, lines, err, sizeof(err)) != 0) {
		free(f->path);
		free(f->code);
		free(f->hit);
		free(text);
		return NULL;
	}
	free(text);
	rep->n_cov++;
	return f;
}

void testcov_hit(void *ctx, const char *path, int line)
{
	struct cov_file *f = testcov_find(ctx, path, true);

	if (f && line > 0 && (size_t)line < f->nlines)
		f->hit[line] = 1;
}

void testcov_branch_hit(void *ctx, const char *path, int id, bool value)
{
	struct cov_file *f = testcov_find(ctx, path, false);

	if (f && f->branches && id >= 1 && (size_t)id <= f->nsites)
		f->seen[2 * (size_t)(id - 1) + value] = 1;
}

/* For --coverage: *text (a policy's or a module's source at path) becomes
 * the same source with its conditions recorded (policy_branch_instrument);
 * left as it is when that fails (the file then has no branch figures). */
void testcov_instrument(struct report *rep, const char *path, char **text, size_t *len)
{
	struct cov_file *f = testcov_find(rep, path, true);
	char *out;
	size_t outlen, n;
	int *lines;

	if (!f || policy_branch_instrument(*text, *len, &out, &outlen, &lines, &n) != 0)
		return;
	if (!f->branches) {
		f->seen = calloc(2 * n + 2, 1);
		if (!f->seen) {
			free(out);
			free(lines);
			return;
		}
		f->branches = true;
		f->nsites = n;
		f->site_line = lines;
	} else {
		free(lines);
	}
	free(*text);
	*text = out;
	*len = outlen;
}

/* Prints "file: N% (taken/total branches), not taken: LINE (true) ..."
 * for a file with conditions; returns its percentage (100 without). */
static int cov_report_branches(struct report *rep, struct cov_file *f)
{
	size_t total = 2 * f->nsites, taken = 0;
	const char *sep = ", not taken: ";
	int pct;

	for (size_t k = 0; k < total; k++)
		taken += f->seen[k];
	pct = total ? (int)(taken * 100 / total) : 100;
	if (!total || rep->json)
		return pct;
	fprintf(rep->out, "%s: %d%% (%zu/%zu branches)", f->path, pct, taken, total);
	for (size_t k = 0; k < total; k++) {
		if (f->seen[k])
			continue;
		fprintf(rep->out, "%s%d (%s)", sep, f->site_line[k / 2], k % 2 ? "true" : "false");
		sep = " ";
	}
	fputc('\n', rep->out);
	return pct;
}

static int cmp_cov(const void *a, const void *b)
{
	return strcmp(((const struct cov_file *)a)->path, ((const struct cov_file *)b)->path);
}

/* Prints "file: N% (covered/total lines)" per file, and its branches; returns
 * the lowest percentage of lines (rounded down), 100 when there is no file,
 * and the lowest of branches in *lowest_branch. */
int testcov_report(struct report *rep, int *lowest_branch)
{
	int lowest = 100;

	*lowest_branch = 100;

	if (rep->n_cov)
		qsort(rep->cov, rep->n_cov, sizeof(*rep->cov), cmp_cov);
	for (size_t i = 0; i < rep->n_cov; i++) {
		struct cov_file *f = &rep->cov[i];
		size_t total = 0, covered = 0;
		int pct;
		for (size_t l = 0; l < f->nlines; l++) {
			total += f->code[l];
			covered += f->code[l] && f->hit[l];
		}
		pct = total ? (int)(covered * 100 / total) : 100;
		if (pct < lowest)
			lowest = pct;
		if (rep->json) {
			size_t taken = 0;
			for (size_t k = 0; f->branches && k < 2 * f->nsites; k++)
				taken += f->seen[k];
			fprintf(rep->out,
			        "{\"coverage\":{\"file\":\"%s\",\"percent\":%d,\"covered\":%zu,\"total\":%zu",
			        f->path, pct, covered, total);
			if (f->branches)
				fprintf(
				    rep->out,
				    ",\"branch_percent\":%d,\"branches_taken\":%zu,\"branches_total\":%zu",
				    f->nsites ? (int)(taken * 100 / (2 * f->nsites)) : 100, taken,
				    2 * f->nsites);
			fprintf(rep->out, "}}\n");
		} else {
			const char *sep = ", not covered: ";
			fprintf(rep->out, "%s: %d%% (%zu/%zu lines)", f->path, pct, covered, total);
			for (size_t l = 0; l < f->nlines; l++) {
				if (!f->code[l] || f->hit[l])
					continue;
				fprintf(rep->out, "%s%zu", sep, l);
				sep = " ";
			}
			fputc('\n', rep->out);
		}
		if (f->branches) {
			int bpct = cov_report_branches(rep, f);
			if (bpct < *lowest_branch)
				*lowest_branch = bpct;
		}
		free(f->path);
		free(f->code);
		free(f->hit);
		free(f->site_line);
		free(f->seen);
	}
	free(rep->cov);
	rep->cov = NULL;
	rep->n_cov = 0;
	return lowest;
}
