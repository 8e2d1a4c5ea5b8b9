/*
 * policytest.c — the policy test runner: `test`, and the tests of `check`.
 *
 * Owns the test-file format, finding test files, coverage and the report. A
 * case's request goes through policyeval.c: the same engine (policy.c) and
 * the same ceiling (envelope.c) as a live request, so a passing test means
 * what production will do. Test files run
 * in the policies' sandbox under the policies' budgets (policy_sandbox_run),
 * as text, without I/O. It must never run a test file outside that sandbox,
 * and never calls Courier.
 */
#include "policytest.h"

#include <dirent.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "duration.h"
#include "fileio.h"
#include "json.h"
#include "lualex.h"
#include "policy.h"
#include "policyeval.h"
#include "scope.h"

#define MAX_TEST_FILE    (1024 * 1024)
#define MAX_DATA_FIXTURE (1024 * 1024) /* a data fixture file: as a tenant's data file */

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

/* ------------------------------------------------------------- coverage */

static char *read_text(const char *path, size_t *len);

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

static struct cov_file *cov_find(struct report *rep, const char *path, bool add)
{
	struct cov_file *f, *grown;
	char *text, err[512];
	size_t len, lines = 2;

	for (size_t i = 0; i < rep->n_cov; i++)
		if (strcmp(rep->cov[i].path, path) == 0)
			return &rep->cov[i];
	if (!add || !(text = read_text(path, &len)))
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

static void cov_hit(void *ctx, const char *path, int line)
{
	struct cov_file *f = cov_find(ctx, path, true);

	if (f && line > 0 && (size_t)line < f->nlines)
		f->hit[line] = 1;
}

static void cov_branch_hit(void *ctx, const char *path, int id, bool value)
{
	struct cov_file *f = cov_find(ctx, path, false);

	if (f && f->branches && id >= 1 && (size_t)id <= f->nsites)
		f->seen[2 * (size_t)(id - 1) + value] = 1;
}

/* For --coverage: *text (a policy's or a module's source at path) becomes
 * the same source with its conditions recorded (policy_branch_instrument);
 * left as it is when that fails (the file then has no branch figures). */
static void cov_instrument(struct report *rep, const char *path, char **text, size_t *len)
{
	struct cov_file *f = cov_find(rep, path, true);
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
static int cov_report(struct report *rep, int *lowest_branch)
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

/* -------------------------------------------------------- running a case */

/* Whether the grant's scopes, without the user_id one, are exactly the list at idx (any order). */
static bool same_scopes(lua_State *L, int idx, const struct grant *g, char *why, size_t whylen)
{
	char buf[sizeof(g->scope)];
	size_t n = 0, want = (size_t)lua_rawlen(L, idx);
	char *save = NULL;

	snprintf(buf, sizeof(buf), "%s", g->scope);
	for (char *tok = strtok_r(buf, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
		bool found = false;
		if (strncmp(tok, "user_id:", 8) == 0)
			continue;
		n++;
		for (size_t i = 1; i <= want && !found; i++) {
			lua_rawgeti(L, idx, (lua_Integer)i);
			found = lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), tok) == 0;
			lua_pop(L, 1);
		}
		if (!found) {
			snprintf(why, whylen, "unexpected scope %s (got \"%s\")", tok, g->scope);
			return false;
		}
	}
	if (n != want) {
		snprintf(why, whylen, "expected %zu scopes, got \"%s\"", want, g->scope);
		return false;
	}
	return true;
}

/* Appends the list of strings at idx as ["a", "b"] to buf. */
static void quote_list(lua_State *L, int idx, luaL_Buffer *b)
{
	lua_Integer n = (lua_Integer)lua_rawlen(L, idx);

	luaL_addchar(b, '[');
	for (lua_Integer i = 1; i <= n; i++) {
		if (i > 1)
			luaL_addstring(b, ", ");
		lua_rawgeti(L, idx, i);
		lua_pushfstring(L, "\"%s\"", lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
		lua_remove(L, -2);
		luaL_addvalue(b);
	}
	luaL_addchar(b, ']');
}

/* Whether the decision's broker.log lines are exactly the list at idx. */
static bool same_logs(lua_State *L, int idx, const char *log, char *why, size_t whylen)
{
	lua_Integer want = (lua_Integer)lua_rawlen(L, idx), n = 0;
	bool ok = true;
	int top = lua_gettop(L), got;

	lua_newtable(L);
	got = lua_gettop(L);
	for (const char *p = log, *nl; (nl = strchr(p, '\n')); p = nl + 1) {
		lua_pushlstring(L, p, (size_t)(nl - p));
		lua_rawseti(L, got, ++n);
	}
	for (lua_Integer i = 1; ok && i <= (n > want ? n : want); i++) {
		lua_rawgeti(L, idx, i);
		lua_rawgeti(L, got, i);
		ok = lua_type(L, -1) == LUA_TSTRING && lua_type(L, -2) == LUA_TSTRING &&
		     strcmp(lua_tostring(L, -1), lua_tostring(L, -2)) == 0;
		lua_pop(L, 2);
	}
	if (!ok) {
		luaL_Buffer b;
		luaL_buffinit(L, &b);
		luaL_addstring(&b, "expected logs ");
		quote_list(L, idx, &b);
		luaL_addstring(&b, ", got ");
		quote_list(L, got, &b);
		luaL_pushresult(&b);
		snprintf(why, whylen, "%s", lua_tostring(L, -1));
	}
	lua_settop(L, top);
	return ok;
}

static bool check_outcome(lua_State *L, int idx, const struct policyeval_outcome *o, char *why,
                          size_t whylen);

/* Compares the outcome (and the decision's broker.log lines, log) with the
 * case's expect table at idx. */
static bool check_expect(lua_State *L, int idx, const struct policyeval_outcome *o, const char *log,
                         char *why, size_t whylen)
{
	idx = lua_absindex(L, idx);
	if (o->invalid) {
		snprintf(why, whylen, "%s", o->err);
		return false;
	}
	if (!check_outcome(L, idx, o, why, whylen))
		return false;
	if (lua_getfield(L, idx, "logs") == LUA_TTABLE && !same_logs(L, lua_gettop(L), log, why, whylen)) {
		lua_pop(L, 1);
		return false;
	}
	lua_pop(L, 1);
	return true;
}

static bool check_outcome(lua_State *L, int idx, const struct policyeval_outcome *o, char *why, size_t whylen)
{
	bool ok = true;
	int top = lua_gettop(L);

	idx = lua_absindex(L, idx);
	lua_getfield(L, idx, "error");
	if (lua_toboolean(L, -1)) {
		ok = o->kind == POLICYEVAL_ERROR;
		if (!ok)
			snprintf(why, whylen, "expected a policy error, got %s",
			         o->kind == POLICYEVAL_ALLOW ? "allow" : "deny");
		goto out;
	}
	if (o->kind == POLICYEVAL_ERROR) {
		snprintf(why, whylen, "policy error: %s", o->err);
		ok = false;
		goto out;
	}
	lua_getfield(L, idx, "allow");
	if (!lua_isboolean(L, -1)) {
		snprintf(why, whylen, "expect.allow must be a boolean");
		ok = false;
		goto out;
	}
	if (lua_toboolean(L, -1) != (o->kind == POLICYEVAL_ALLOW)) {
		snprintf(why, whylen, "expected %s, got %s%s%s", lua_toboolean(L, -1) ? "allow" : "deny",
		         o->kind == POLICYEVAL_ALLOW ? "allow" : "deny", o->dec.reason[0] ? ": " : "",
		         o->dec.reason);
		ok = false;
		goto out;
	}
	if (o->kind == POLICYEVAL_ALLOW) {
		lua_getfield(L, idx, "scopes");
		if (lua_istable(L, -1) && !same_scopes(L, lua_gettop(L), &o->grant, why, whylen)) {
			ok = false;
			goto out;
		}
		lua_getfield(L, idx, "expires_in");
		if (!lua_isnil(L, -1)) {
			long long want = -1;
			size_t len;
			if (lua_isinteger(L, -1))
				want = (long long)lua_tointeger(L, -1);
			else if (lua_type(L, -1) == LUA_TSTRING) {
				const char *s = lua_tolstring(L, -1, &len);
				if (duration_parse(s, len, &want) != 0)
					want = -1;
			}
			if (want != o->grant.expires_s) {
				snprintf(why, whylen, "expected expires_in %lld s, got %lld s", want,
				         o->grant.expires_s);
				ok = false;
				goto out;
			}
		}
	}
	lua_getfield(L, idx, "reason");
	if (lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), o->dec.reason) != 0) {
		snprintf(why, whylen, "expected reason \"%s\", got \"%s\"", lua_tostring(L, -1),
		         o->dec.reason);
		ok = false;
	}
out:
	lua_settop(L, top);
	return ok;
}

static void report_case(struct report *rep, const char *file, const char *name, bool ok, const char *why)
{
	if (ok)
		rep->passed++;
	else {
		rep->failed++;
		if (!rep->first_failure[0])
			snprintf(rep->first_failure, sizeof(rep->first_failure), "%s: %s: %s", file, name,
			         why);
	}
	if (rep->quiet)
		return;
	if (rep->json && rep->L) {
		lua_State *L = rep->L;
		const char *s;
		size_t len;
		lua_createtable(L, 0, 4);
		lua_pushstring(L, file);
		lua_setfield(L, -2, "file");
		lua_pushstring(L, name);
		lua_setfield(L, -2, "case");
		lua_pushstring(L, ok ? "pass" : "fail");
		lua_setfield(L, -2, "result");
		if (!ok) {
			lua_pushstring(L, why);
			lua_setfield(L, -2, "error");
		}
		s = json_encode(L, -1, &len);
		if (s) {
			fprintf(rep->out, "%s\n", s);
			lua_pop(L, 1);
		}
		lua_pop(L, 1);
	} else if (ok)
		fprintf(rep->out, "PASS %s: %s\n", file, name);
	else
		fprintf(rep->out, "FAIL %s: %s: %s\n", file, name, why);
}

/*
 * Loads a test file on e and pushes its list of cases; its text goes to
 * *text (the caller frees it), to find the lines of cases. It runs in the one
 * sandbox of the broker (policy_sandbox_run): the policies' charged
 * libraries, memory cap, instruction and time budgets, its globals in its
 * own environment, so nothing it does outlives it, and a loop, a C loop or
 * a memory bomb in it fails the file (and a reload) quickly instead of
 * hanging or growing the process.
 */
static int load_cases(struct policy_engine *e, const char *path, char **text, size_t *len, char *err,
                      size_t errlen)
{
	lua_State *L = policy_engine_lua(e);
	char why[128];
	int rc;

	*text = NULL;
	if (fileio_read(path, MAX_TEST_FILE, 0, text, len, why, sizeof(why)) != 0) {
		snprintf(err, errlen, "%s: %s", path, why);
		return -1;
	}
	rc = policy_sandbox_run(e, path, *text, *len, err, errlen);
	if (rc != 0)
		return -1;
	lua_remove(L, -2); /* the file's globals */
	if (!lua_istable(L, -1)) {
		snprintf(err, errlen, "%s: must return a list of cases", path);
		lua_pop(L, 1);
		return -1;
	}
	return 0;
}

/* ------------------------------------------------------ strict test files */

static const char *const case_keys[] = {"name", "req", "expect", "data", "now", "identity", NULL};
static const char *const expect_keys[] = {"allow", "scopes", "expires_in", "reason", "error", "logs", NULL};
static const char *const file_keys[] = {"data", "now", "identity", NULL};

/* Pushes, for the test file's text, { [NAME] = { line, line, ... } }: the
 * lines of each `name = "NAME"` in it, in order (read once per file with
 * the Lua tokenizer, so a name in a comment or in another string is none). */
static void push_case_lines(lua_State *L, const char *text, size_t len)
{
	struct lualex x;
	struct lualex_token t, eq, str;

	lua_newtable(L);
	if (!text)
		return;
	lualex_init(&x, text, len);
	while (lualex_next(&x, &t) != LUALEX_END && t.kind != LUALEX_BAD) {
		struct lualex save = x;
		if (!lualex_is(&x, &t, "name"))
			continue;
		if (lualex_next(&x, &eq) != LUALEX_OTHER || text[eq.start] != '=' ||
		    (x.pos < len && text[x.pos] == '=') || lualex_next(&x, &str) != LUALEX_STRING ||
		    str.escapes) {
			x = save;
			continue;
		}
		lua_pushlstring(L, text + str.body, str.body_len);
		if (lua_rawget(L, -2) != LUA_TTABLE) {
			lua_pop(L, 1);
			lua_newtable(L);
			lua_pushlstring(L, text + str.body, str.body_len);
			lua_pushvalue(L, -2);
			lua_rawset(L, -4);
		}
		lua_pushinteger(L, t.line);
		lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
		lua_pop(L, 1);
	}
}

/* The line of the nth (1-based) case named name, from the table at lines
 * (push_case_lines); 0 when unknown (a name built by code). */
static int case_line(lua_State *L, int lines, const char *name, int nth)
{
	int top = lua_gettop(L), line = 0;

	if (lua_getfield(L, lines, name) == LUA_TTABLE && lua_rawgeti(L, -1, nth) == LUA_TNUMBER)
		line = (int)lua_tointeger(L, -1);
	lua_settop(L, top);
	return line;
}

/* Whether the field of the table at t is nil or a list of strings. */
static bool string_list(lua_State *L, int t, const char *field)
{
	bool ok = true;

	if (lua_getfield(L, t, field) == LUA_TNIL) {
		lua_pop(L, 1);
		return true;
	}
	if (!lua_istable(L, -1)) {
		lua_pop(L, 1);
		return false;
	}
	lua_pushnil(L);
	while (ok && lua_next(L, -2)) {
		ok = lua_isinteger(L, -2) && lua_tointeger(L, -2) >= 1 &&
		     lua_tointeger(L, -2) <= (lua_Integer)lua_rawlen(L, -3) && lua_type(L, -1) == LUA_TSTRING;
		lua_pop(L, ok ? 1 : 2);
	}
	lua_pop(L, 1);
	return ok;
}

/* The case's expect table at idx says something, with known keys of the
 * right types. 0 or -1 with the reason. */
static int check_expect_shape(lua_State *L, int idx, char *err, size_t errlen)
{
	int allow, error;

	if (policyeval_known_keys(L, idx, "expect", expect_keys, err, errlen) != 0)
		return -1;
	allow = lua_getfield(L, idx, "allow");
	error = lua_getfield(L, idx, "error");
	lua_pop(L, 2);
	if (error != LUA_TNIL && error != LUA_TBOOLEAN) {
		snprintf(err, errlen, "expect.error must be true or false");
		return -1;
	}
	lua_getfield(L, idx, "error");
	error = lua_toboolean(L, -1) ? 1 : 0;
	lua_pop(L, 1);
	if (error) {
		for (const char *const *k = expect_keys; *k; k++) {
			if (strcmp(*k, "error") == 0 || strcmp(*k, "logs") == 0)
				continue;
			if (lua_getfield(L, idx, *k) != LUA_TNIL) {
				snprintf(err, errlen,
				         "expect.error = true expects a policy error: expect.%s can never be "
				         "checked",
				         *k);
				lua_pop(L, 1);
				return -1;
			}
			lua_pop(L, 1);
		}
	} else if (allow != LUA_TBOOLEAN) {
		snprintf(err, errlen, "%s",
		         allow == LUA_TNIL ? "expect.allow is missing: say whether the request is allowed "
		                             "(or expect.error = true)"
		                           : "expect.allow must be true or false");
		return -1;
	}
	if (!string_list(L, idx, "scopes")) {
		snprintf(err, errlen, "expect.scopes must be a list of strings");
		return -1;
	}
	if (!string_list(L, idx, "logs")) {
		snprintf(err, errlen,
		         "expect.logs must be a list of strings (the broker.log lines, in order)");
		return -1;
	}
	if (lua_getfield(L, idx, "reason") > LUA_TNIL && !lua_isstring(L, -1)) {
		lua_pop(L, 1);
		snprintf(err, errlen, "expect.reason must be a string");
		return -1;
	}
	lua_pop(L, 1);
	if (lua_getfield(L, idx, "expires_in") > LUA_TNIL && !lua_isinteger(L, -1) &&
	    lua_type(L, -1) != LUA_TSTRING) {
		lua_pop(L, 1);
		snprintf(err, errlen, "expect.expires_in must be whole seconds or a duration (\"15m\")");
		return -1;
	}
	lua_pop(L, 1);
	lua_getfield(L, idx, "allow");
	allow = lua_toboolean(L, -1);
	lua_pop(L, 1);
	for (int i = 0; !error && !allow && i < 2; i++) {
		const char *f = i ? "expires_in" : "scopes";
		if (lua_getfield(L, idx, f) != LUA_TNIL) {
			snprintf(err, errlen, "expect.%s is never checked on a deny (allow = false)", f);
			lua_pop(L, 1);
			return -1;
		}
		lua_pop(L, 1);
	}
	return 0;
}

/* The file's own keys (fixtures) and its list: 0 or -1 with the reason. */
static int check_file_shape(lua_State *L, int cases, char *err, size_t errlen)
{
	lua_Integer n = (lua_Integer)lua_rawlen(L, cases);

	lua_pushnil(L);
	while (lua_next(L, cases)) {
		lua_pop(L, 1);
		if (lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 1 && lua_tointeger(L, -1) <= n)
			continue;
		if (lua_type(L, -1) == LUA_TSTRING) {
			bool known = false;
			for (const char *const *k = file_keys; *k && !known; k++)
				known = strcmp(*k, lua_tostring(L, -1)) == 0;
			if (known)
				continue;
			snprintf(err, errlen,
			         "unknown key '%s' in the file's table (data, now, identity, and the cases)",
			         lua_tostring(L, -1));
		} else {
			snprintf(err, errlen, "the list of cases has a hole or a key that is not a case (%s)",
			         luaL_typename(L, -1));
		}
		lua_pop(L, 1);
		return -1;
	}
	if (lua_getfield(L, cases, "now") != LUA_TNIL && !lua_isinteger(L, -1)) {
		lua_pop(L, 1);
		snprintf(err, errlen, "now must be an integer (Unix time in seconds)");
		return -1;
	}
	lua_pop(L, 1);
	if (lua_getfield(L, cases, "identity") != LUA_TNIL && !lua_istable(L, -1)) {
		lua_pop(L, 1);
		snprintf(err, errlen, "identity must be a table (the cases' default req.identity)");
		return -1;
	}
	lua_pop(L, 1);
	return 0;
}

/* A case's own shape at idx (not its request: policyeval.c checks that). */
static int check_case_shape(lua_State *L, int idx, char *err, size_t errlen)
{
	int data;

	if (policyeval_known_keys(L, idx, "case", case_keys, err, errlen) != 0)
		return -1;
	if (lua_getfield(L, idx, "req") != LUA_TTABLE) {
		lua_pop(L, 1);
		snprintf(err, errlen, "a case needs a req table");
		return -1;
	}
	lua_pop(L, 1);
	if (lua_getfield(L, idx, "expect") != LUA_TTABLE) {
		lua_pop(L, 1);
		snprintf(err, errlen, "a case needs an expect table: what must come out");
		return -1;
	}
	if (check_expect_shape(L, lua_gettop(L), err, errlen) != 0) {
		lua_pop(L, 1);
		return -1;
	}
	lua_pop(L, 1);
	data = lua_getfield(L, idx, "data");
	lua_pop(L, 1);
	if (data != LUA_TNIL && data != LUA_TTABLE && data != LUA_TBOOLEAN && data != LUA_TSTRING) {
		snprintf(
		    err, errlen,
		    "data must be a table (broker.data for this case), a JSON file's path or false (none)");
		return -1;
	}
	/* now and identity: the case's own, as req.now and req.identity are
	 * (one place for each: both would leave a reader guessing which wins). */
	for (int i = 0; i < 2; i++) {
		const char *k = i == 0 ? "now" : "identity";
		int type = lua_getfield(L, idx, k);
		bool ok = type == LUA_TNIL || (i == 0 ? lua_isinteger(L, -1) : type == LUA_TTABLE);
		lua_pop(L, 1);
		if (!ok) {
			snprintf(err, errlen, "%s",
			         i == 0 ? "now must be an integer (Unix time in seconds)"
			                : "identity must be a table (this case's req.identity)");
			return -1;
		}
		if (type == LUA_TNIL)
			continue;
		lua_getfield(L, idx, "req");
		type = lua_getfield(L, -1, k);
		lua_pop(L, 2);
		if (type != LUA_TNIL) {
			snprintf(err, errlen, "the case gives both %s and req.%s: keep one", k, k);
			return -1;
		}
	}
	return 0;
}

/* ------------------------------------------------------------ fixtures */

/* The JSON of a data fixture at idx (a table; a string: the path of a JSON
 * file, relative to the test file at test; false: "" = none), pushed, or
 * NULL with the reason. */
static const char *fixture_json(lua_State *L, int idx, const char *test, size_t *len, char *err,
                                size_t errlen)
{
	const char *s;

	if (lua_type(L, idx) == LUA_TSTRING) {
		char *dir = fileio_dir(test), *path = dir ? fileio_join(dir, lua_tostring(L, idx)) : NULL;
		char *buf = NULL, why[256];
		int rc = path ? fileio_read(path, MAX_DATA_FIXTURE, 0, &buf, len, why, sizeof(why)) : -1;

		if (rc == 0 && *len == 0)
			snprintf(why, sizeof(why),
			         "empty (write {} for empty data, or data = false for none)");
		if (rc != 0 || *len == 0)
			snprintf(err, errlen, "data file %s: %s", path ? path : lua_tostring(L, idx),
			         path ? why : "out of memory");
		else
			lua_pushlstring(L, buf, *len);
		free(buf);
		free(path);
		free(dir);
		return rc == 0 && *len ? lua_tostring(L, -1) : NULL;
	}

	if (lua_type(L, idx) == LUA_TBOOLEAN) {
		if (lua_toboolean(L, idx)) {
			snprintf(err, errlen, "data must be a table or false");
			return NULL;
		}
		lua_pushliteral(L, "");
		*len = 0;
		return lua_tostring(L, -1);
	}
	s = json_encode(L, idx, len);
	if (!s)
		snprintf(err, errlen,
		         "data cannot be written as JSON (a data file could not hold it: "
		         "functions, mixed or sparse lists)");
	return s;
}

/* Pushes the request the case describes (req at ridx), with the case's own
 * now and identity (at kase), else the file's defaults, for what it leaves
 * out. */
static void push_req_with_defaults(lua_State *L, int ridx, int kase, int cases)
{
	static const char *const defaults[] = {"now", "identity"};

	lua_newtable(L);
	lua_pushnil(L);
	while (lua_next(L, ridx)) {
		lua_pushvalue(L, -2);
		lua_insert(L, -2);
		lua_rawset(L, -4);
	}
	for (size_t i = 0; i < 2; i++) {
		if (lua_getfield(L, -1, defaults[i]) == LUA_TNIL) {
			if (lua_getfield(L, kase, defaults[i]) == LUA_TNIL) {
				lua_pop(L, 1);
				lua_getfield(L, cases, defaults[i]);
			}
			lua_setfield(L, -3, defaults[i]);
		}
		lua_pop(L, 1);
	}
}

static void report_case_at(struct report *rep, const char *file, const char *name, int line, const char *why)
{
	char msg[768];

	if (line > 0)
		snprintf(msg, sizeof(msg), "%s:%d: %s", file, line, why);
	else
		snprintf(msg, sizeof(msg), "%s: %s", file, why);
	report_case(rep, file, name, false, msg);
}

static int run_file(struct policy_engine *e, const struct tenant *t, const char *path, struct report *rep)
{
	lua_State *L = policy_engine_lua(e);
	int top = lua_gettop(L), cases, lines, seen;
	char err[512], label[64];
	char *text = NULL;
	size_t text_len = 0;
	lua_Integer n;

	if (load_cases(e, path, &text, &text_len, err, sizeof(err)) != 0) {
		report_case(rep, path, "(load)", false, err);
		free(text);
		return -1;
	}
	policy_engine_explain(e, true); /* a failure names the return that decided */
	cases = lua_gettop(L);
	if (check_file_shape(L, cases, err, sizeof(err)) != 0) {
		report_case_at(rep, path, "(file)", 0, err);
		lua_settop(L, top);
		free(text);
		return -1;
	}
	push_case_lines(L, text, text_len);
	lines = lua_gettop(L);
	lua_newtable(L); /* name -> how many cases so far had it */
	seen = lua_gettop(L);
	n = (lua_Integer)lua_rawlen(L, cases);
	for (lua_Integer i = 1; i <= n; i++) {
		struct policyeval_outcome *o;
		const char *name = label, *json = NULL;
		char why[512] = "";
		int line = 0, nth = 1, data;
		size_t jlen = 0;
		bool ok;

		snprintf(label, sizeof(label), "(case %lld)", (long long)i);
		lua_rawgeti(L, cases, i);
		if (!lua_istable(L, -1)) {
			report_case_at(rep, path, label, 0, "each case must be a table");
			lua_settop(L, seen);
			continue;
		}
		if (lua_getfield(L, -1, "name") == LUA_TSTRING && lua_rawlen(L, -1) > 0) {
			name = lua_tostring(L, -1);
			lua_pushvalue(L, -1);
			if (lua_rawget(L, seen) == LUA_TNUMBER)
				nth = (int)lua_tointeger(L, -1) + 1;
			lua_pop(L, 1);
			lua_pushvalue(L, -1);
			lua_pushinteger(L, nth);
			lua_rawset(L, seen);
			line = case_line(L, lines, name, nth);
		}
		if (rep->pattern && !strstr(name, rep->pattern)) {
			lua_settop(L, seen);
			continue;
		}
		if (name == label) {
			report_case_at(rep, path, label, 0, "a case needs a name (a non-empty string)");
			lua_settop(L, seen);
			continue;
		}
		if (nth > 1) {
			snprintf(why, sizeof(why), "duplicate case name (case %d of that name)", nth);
			report_case_at(rep, path, name, line, why);
			lua_settop(L, seen);
			continue;
		}
		if (check_case_shape(L, seen + 1, why, sizeof(why)) != 0) {
			report_case_at(rep, path, name, line, why);
			lua_settop(L, seen);
			continue;
		}
		/* The data fixture: the case's, else the file's, else the tenant's own. */
		data = lua_getfield(L, seen + 1, "data");
		if (data == LUA_TNIL) {
			lua_pop(L, 1);
			data = lua_getfield(L, cases, "data");
		}
		if (data != LUA_TNIL &&
		    (!(json = fixture_json(L, lua_gettop(L), path, &jlen, why, sizeof(why))) ||
		     policy_engine_set_data(e, t, json, jlen, why, sizeof(why)) != 0)) {
			report_case_at(rep, path, name, line, why);
			if (json)
				policy_engine_set_data(e, t, NULL, 0, err, sizeof(err));
			lua_settop(L, seen);
			continue;
		}
		lua_getfield(L, seen + 1, "req");
		push_req_with_defaults(L, lua_gettop(L), seen + 1, cases);
		lua_getfield(L, seen + 1, "expect");
		o = calloc(1, sizeof(*o));
		if (!o) {
			lua_settop(L, top);
			free(text);
			return -1;
		}
		policyeval_decide(e, L, -2, t, o);
		ok = check_expect(L, -1, o, policy_decision_log(e), why, sizeof(why));
		if (!ok && o->kind != POLICYEVAL_ERROR && !o->invalid) {
			char at[256];
			if (policy_origin_line(e, t->policy_dir, at, sizeof(at)))
				snprintf(why + strlen(why), sizeof(why) - strlen(why), " (%s)", at);
		}
		if (json)
			policy_engine_set_data(e, t, NULL, 0, err, sizeof(err));
		if (ok || !o->invalid)
			report_case(rep, path, name, ok, why);
		else
			report_case_at(rep, path, name, line, why);
		free(o);
		lua_settop(L, seen);
	}
	lua_settop(L, top);
	free(text);
	return 0;
}

/* ---------------------------------------------- a tenant for `test` alone */

/* The text of a file of at most MAX_TEST_FILE bytes, or NULL. */
static char *read_text(const char *path, size_t *len)
{
	char *buf, why[128];

	return fileio_read(path, MAX_TEST_FILE, 0, &buf, len, why, sizeof(why)) == 0 ? buf : NULL;
}

/* Runs path (a *_test.lua file) against the policy beside it under defaults. */
static int test_file_standalone(const char *path, struct report *rep)
{
	static const char suffix[] = "_test.lua";
	struct config cfg;
	struct tenant t;
	struct policy_engine *e;
	char policy[4096], data[4096], err[512];
	size_t plen = strlen(path);
	const char *const *push = scope_tier("push");
	size_t n_push = 0;
	int rc = -1;

	if (plen < sizeof(suffix) || strcmp(path + plen - (sizeof(suffix) - 1), suffix) != 0 ||
	    plen - (sizeof(suffix) - 1) + 4 >= sizeof(policy)) {
		report_case(rep, path, "(load)", false, "test files are named NAME_test.lua");
		return -1;
	}
	snprintf(policy, sizeof(policy), "%.*s.lua", (int)(plen - (sizeof(suffix) - 1)), path);
	while (push[n_push])
		n_push++;
	memset(&cfg, 0, sizeof(cfg));
	memset(&t, 0, sizeof(t));
	t.name = "test";
	t.policy_path = realpath(policy, NULL);
	t.policy_text = t.policy_path ? read_text(t.policy_path, &t.policy_len) : NULL;
	if (!t.policy_text) {
		snprintf(err, sizeof(err), "cannot read the policy %s", policy);
		report_case(rep, path, "(load)", false, err);
		goto out;
	}
	t.policy_dir = fileio_dir(t.policy_path);
	if (t.policy_dir && policyfiles_load_modules(&t, err, sizeof(err)) != 0) {
		report_case(rep, path, "(load)", false, err);
		goto out;
	}
	/* Without a configuration, NAME_data.json beside the policy is broker.data. */
	snprintf(data, sizeof(data), "%.*s_data.json", (int)(plen - (sizeof(suffix) - 1)), path);
	if (access(data, F_OK) == 0 && !(t.data_text = read_text(data, &t.data_len))) {
		snprintf(err, sizeof(err), "cannot read %s", data);
		report_case(rep, path, "(load)", false, err);
		goto out;
	}
	if (rep->coverage) { /* branch coverage: conditions that report their value */
		cov_instrument(rep, t.policy_path, &t.policy_text, &t.policy_len);
		for (size_t i = 0; i < t.n_modules; i++)
			cov_instrument(rep, t.modules[i].path, &t.modules[i].text, &t.modules[i].len);
	}
	snprintf(t.policy_revision, sizeof(t.policy_revision), "test");
	t.max_expires_s = 7 * 86400;
	t.default_expires_s = 3600;
	t.allowed_scopes = (char **)(uintptr_t)push;
	t.n_allowed_scopes = n_push;
	t.auth.none = true;
	cfg.tenants = &t;
	cfg.n_tenants = 1;
	cfg.policy_max_instructions = POLICY_DEFAULT_MAX_INSTRUCTIONS;
	cfg.policy_max_memory_bytes = POLICY_DEFAULT_MAX_MEMORY_BYTES;
	cfg.policy_timeout_ms = POLICY_DEFAULT_TIMEOUT_MS;
	e = policy_engine_new(&cfg, err, sizeof(err));
	if (!e) {
		report_case(rep, path, "(load)", false, err);
		goto out;
	}
	if (rep->coverage && (policy_engine_coverage(e) != 0 || !cov_find(rep, t.policy_path, true))) {
		report_case(rep, path, "(load)", false, "coverage: out of memory");
		policy_engine_free(e);
		goto out;
	}
	rc = run_file(e, &t, path, rep);
	if (rep->coverage) {
		policy_coverage_each(e, cov_hit, rep);
		policy_branch_each(e, cov_branch_hit, rep);
	}
	policy_engine_free(e);
out:
	policyfiles_free(&t);
	free(t.policy_text);
	free(t.policy_dir);
	free(t.policy_path);
	return rc;
}

static bool is_test_file(const char *name)
{
	size_t n = strlen(name);
	return n > 9 && strcmp(name + n - 9, "_test.lua") == 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void run_path(const char *path, struct report *rep)
{
	struct stat st;
	DIR *d;
	struct dirent *de;
	char **names = NULL;
	size_t n = 0, cap = 0;

	if (stat(path, &st) != 0) {
		report_case(rep, path, "(load)", false, "no such file or folder");
		return;
	}
	if (!S_ISDIR(st.st_mode)) {
		test_file_standalone(path, rep);
		return;
	}
	d = opendir(path);
	if (!d) {
		report_case(rep, path, "(load)", false, "cannot open the folder");
		return;
	}
	while ((de = readdir(d))) {
		if (!is_test_file(de->d_name))
			continue;
		if (n == cap) {
			char **p = realloc(names, (cap = cap * 2 + 8) * sizeof(*names));
			if (!p)
				break;
			names = p;
		}
		if (asprintf(&names[n], "%s/%s", path, de->d_name) < 0)
			break;
		n++;
	}
	closedir(d);
	qsort(names, n, sizeof(*names), cmp_str);
	for (size_t i = 0; i < n; i++) {
		test_file_standalone(names[i], rep);
		free(names[i]);
	}
	free(names);
}

int policytest_main(int argc, char **argv)
{
	struct report rep = {.out = stdout};
	int npaths = 0, threshold = -1, branch_threshold = -1, lowest = 100, lowest_branch = 100;

	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--run") == 0 && i + 1 < argc)
			rep.pattern = argv[++i];
		else if (strcmp(argv[i], "--format") == 0 && i + 1 < argc) {
			const char *f = argv[++i];
			if (strcmp(f, "json") == 0)
				rep.json = true;
			else if (strcmp(f, "text") != 0) {
				fprintf(stderr, "courier-broker test: --format is text or json\n");
				return 2;
			}
		} else if (strcmp(argv[i], "--coverage") == 0) {
			rep.coverage = true;
		} else if ((strcmp(argv[i], "--threshold") == 0 ||
		            strcmp(argv[i], "--branch-threshold") == 0) &&
		           i + 1 < argc) {
			char *end;
			long n = strtol(argv[i + 1], &end, 10);
			if (*end || end == argv[i + 1] || n < 0 || n > 100) {
				fprintf(stderr, "courier-broker test: %s is a percentage, 0 to 100\n",
				        argv[i]);
				return 2;
			}
			if (strcmp(argv[i], "--threshold") == 0)
				threshold = (int)n;
			else
				branch_threshold = (int)n;
			i++;
			rep.coverage = true;
		} else if (argv[i][0] == '-' && argv[i][1]) {
			fprintf(stderr, "courier-broker test: unknown option %s\n", argv[i]);
			return 2;
		} else {
			npaths++;
		}
	}
	if (!npaths) {
		fprintf(stderr, "usage: " POLICYTEST_USAGE "\n");
		return 2;
	}
	if (rep.json && (!(rep.L = luaL_newstate()) || json_open(rep.L) != 0)) {
		fprintf(stderr, "courier-broker test: out of memory\n");
		return 1;
	}
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--run") == 0 || strcmp(argv[i], "--format") == 0 ||
		    strcmp(argv[i], "--threshold") == 0 || strcmp(argv[i], "--branch-threshold") == 0) {
			i++;
			continue;
		}
		if (strcmp(argv[i], "--coverage") == 0)
			continue;
		run_path(argv[i], &rep);
	}
	if (rep.coverage)
		lowest = cov_report(&rep, &lowest_branch);
	if (rep.json)
		fprintf(stdout, "{\"passed\":%d,\"failed\":%d}\n", rep.passed, rep.failed);
	if (rep.L)
		lua_close(rep.L);
	else
		fprintf(stdout, "%d passed, %d failed\n", rep.passed, rep.failed);
	if (rep.passed + rep.failed == 0) {
		fprintf(stderr, "courier-broker test: no test case ran\n");
		return 1;
	}
	if (threshold >= 0 && lowest < threshold) {
		fprintf(stderr, "courier-broker test: coverage %d%% is below the threshold of %d%%\n", lowest,
		        threshold);
		return 1;
	}
	if (branch_threshold >= 0 && lowest_branch < branch_threshold) {
		fprintf(stderr, "courier-broker test: branch coverage %d%% is below the threshold of %d%%\n",
		        lowest_branch, branch_threshold);
		return 1;
	}
	return rep.failed ? 1 : 0;
}

int policytest_config(const struct config *cfg, struct policy_engine *e, bool quiet, char *err, size_t errlen)
{
	struct report rep = {.out = stderr, .quiet = quiet};
	const char *failing = NULL; /* the tenant of the first failure */

	for (size_t i = 0; i < cfg->n_tenants; i++) {
		const struct tenant *t = &cfg->tenants[i];
		char path[4096];
		size_t n = strlen(t->policy_path);
		struct stat st;

		if (n < 4 || strcmp(t->policy_path + n - 4, ".lua") != 0)
			continue;
		snprintf(path, sizeof(path), "%.*s_test.lua", (int)(n - 4), t->policy_path);
		if (stat(path, &st) != 0)
			continue;
		run_file(e, t, path, &rep);
		if (rep.failed && !failing)
			failing = t->name;
	}
	if (rep.failed) {
		snprintf(err, errlen, "tenant %s: policy test failed: %s", failing ? failing : "?",
		         rep.first_failure);
		return -1;
	}
	return 0;
}
