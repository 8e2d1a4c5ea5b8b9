/*
 * policytest.c — the policy test runner: `test`, and the tests of `check`.
 *
 * Owns running test files, finding them and the report (the strict checks
 * of a file and its cases: testcase.c; --coverage's tallies: testcov.c). A
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
#include "policy.h"
#include "policyeval.h"
#include "scope.h"
#include "testcase.h"
#include "testcov.h"

#define MAX_DATA_FIXTURE (1024 * 1024) /* a data fixture file: as a tenant's data file */

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
	if (testcase_check_file(L, cases, err, sizeof(err)) != 0) {
		report_case_at(rep, path, "(file)", 0, err);
		lua_settop(L, top);
		free(text);
		return -1;
	}
	testcase_push_lines(L, text, text_len);
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
			line = testcase_line(L, lines, name, nth);
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
		if (testcase_check_case(L, seen + 1, why, sizeof(why)) != 0) {
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
	t.policy_text = t.policy_path ? testcov_read_text(t.policy_path, &t.policy_len) : NULL;
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
	if (access(data, F_OK) == 0 && !(t.data_text = testcov_read_text(data, &t.data_len))) {
		snprintf(err, sizeof(err), "cannot read %s", data);
		report_case(rep, path, "(load)", false, err);
		goto out;
	}
	if (rep->coverage) { /* branch coverage: conditions that report their value */
		testcov_instrument(rep, t.policy_path, &t.policy_text, &t.policy_len);
		for (size_t i = 0; i < t.n_modules; i++)
			testcov_instrument(rep, t.modules[i].path, &t.modules[i].text, &t.modules[i].len);
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
	if (rep->coverage && (policy_engine_coverage(e) != 0 || !testcov_find(rep, t.policy_path, true))) {
		report_case(rep, path, "(load)", false, "coverage: out of memory");
		policy_engine_free(e);
		goto out;
	}
	rc = run_file(e, &t, path, rep);
	if (rep->coverage) {
		policy_coverage_each(e, testcov_hit, rep);
		policy_branch_each(e, testcov_branch_hit, rep);
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
		lowest = testcov_report(&rep, &lowest_branch);
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
