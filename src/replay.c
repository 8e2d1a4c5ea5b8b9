/*
 * replay.c — `courier-broker replay`: what a configuration's policies would
 * have decided for recorded requests.
 *
 * Owns reading audit-log lines (one JSON object a line, audit.c's), deciding
 * the request each one recorded again (policyeval_decide: the engine and the
 * ceiling of a live request), comparing the outcome with the recorded one
 * (decision, scope, lifetime) and printing each difference, as text or JSON
 * lines, then a summary with the count of every line that could not be
 * decided again. It must never call Courier, never read a secret (the
 * configuration is loaded for its policies only), and never pass over a
 * line in silence: a line without inputs, not JSON or of an unknown tenant is
 * counted, and the first of each kind is named. A line the C core refused
 * before the policy ran (the kill switch: error user_denied or
 * tenant_disabled; the cluster's deny list) records no policy decision: it is
 * counted as refused before the policy and never compared, whatever the
 * candidate's policy would say (the kill switch is an incident's switch, not
 * part of the policy under review).
 */
#include "replay.h"

#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "config.h"
#include "json.h"
#include "policy.h"
#include "policyeval.h"

/* The longest audit line read; a longer one is counted as unreadable. */
#define REPLAY_LINE_MAX (1024 * 1024)

enum skip_kind { SKIP_UNREADABLE, SKIP_NO_INPUTS, SKIP_UNKNOWN_TENANT, SKIP_KINDS };

static const char *const skip_what[SKIP_KINDS] = {
    [SKIP_UNREADABLE] = "not an audit line (not a JSON object, or too long)",
    [SKIP_NO_INPUTS] = "without inputs (written with audit_log.inputs = false)",
    [SKIP_UNKNOWN_TENANT] = "of a tenant the configuration lacks",
};

struct replay {
	struct config *cfg;
	struct policy_engine *e;
	lua_State *L;
	const char *tenant; /* --tenant, or NULL: every tenant */
	bool json;
	struct policyeval_outcome *o;
	unsigned long long lines, decided, differ, skipped[SKIP_KINDS], refused;
	char first_skip[SKIP_KINDS][300]; /* "FILE:LINE" of the first of each kind */
	char first_refused[300];
	double decide_ms;
};

/* ------------------------------------------------------------ one line */

static const char *field_str(lua_State *L, int t, const char *name)
{
	const char *s;

	lua_getfield(L, t, name);
	s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
	lua_pop(L, 1); /* the string stays alive in the table */
	return s;
}

static const char *outcome_name(const struct policyeval_outcome *o)
{
	return o->kind == POLICYEVAL_ALLOW ? "allow" : o->kind == POLICYEVAL_DENY ? "deny" : "error";
}

/* Whether the recorded line at rec and the new outcome o decide the same:
 * the same decision and, when allowed, the same scope and lifetime. */
static bool same_outcome(lua_State *L, int rec, const struct policyeval_outcome *o)
{
	const char *was = field_str(L, rec, "decision");
	const char *scope;
	lua_Integer expires;

	if (!was || strcmp(was, outcome_name(o)) != 0)
		return false;
	if (o->kind != POLICYEVAL_ALLOW)
		return true;
	scope = field_str(L, rec, "scope");
	lua_getfield(L, rec, "expires_in");
	expires = lua_isnumber(L, -1) ? (lua_Integer)lua_tonumber(L, -1) : -1;
	lua_pop(L, 1);
	return scope && strcmp(scope, o->grant.scope) == 0 && expires == o->grant.expires_s;
}

/* The explanation of the last decision on e as a list of "file:line",
 * outermost call first, pushed (an empty list when unknown). */
static void push_chain(lua_State *L, struct policy_engine *e)
{
	struct policy_frame fr[POLICY_CHAIN_MAX];
	size_t n = policy_decision_origin(e, fr, POLICY_CHAIN_MAX);

	lua_createtable(L, (int)n, 0);
	for (size_t i = 0; i < n; i++) {
		lua_pushfstring(L, "%s:%d", fr[i].source, fr[i].line);
		lua_rawseti(L, -2, (lua_Integer)i + 1);
	}
}

/* One difference as a JSON line: where, who, what was recorded, what the
 * configuration decides now (and where its policy decided it). */
static void print_json(struct replay *rp, const char *file, unsigned long long lineno, int rec)
{
	lua_State *L = rp->L;
	const struct policyeval_outcome *o = rp->o;
	static const char *const copied[] = {"request_id", "tenant",     "user",   "decision",       "reason",
	                                     "scope",      "expires_in", "status", "policy_revision"};
	const char *s;
	size_t len;
	int top = lua_gettop(L);

	lua_createtable(L, 0, 8);
	lua_pushstring(L, file);
	lua_setfield(L, -2, "file");
	lua_pushinteger(L, (lua_Integer)lineno);
	lua_setfield(L, -2, "line");
	for (size_t i = 0; i < 3; i++) {
		lua_getfield(L, rec, copied[i]);
		lua_setfield(L, -2, copied[i]);
	}
	lua_createtable(L, 0, 6);
	for (size_t i = 3; i < sizeof(copied) / sizeof(copied[0]); i++) {
		lua_getfield(L, rec, copied[i]);
		lua_setfield(L, -2, copied[i]);
	}
	lua_setfield(L, -2, "recorded");
	lua_createtable(L, 0, 6);
	lua_pushstring(L, outcome_name(o));
	lua_setfield(L, -2, "decision");
	if (o->dec.reason[0]) {
		lua_pushstring(L, o->dec.reason);
		lua_setfield(L, -2, "reason");
	}
	if (o->kind == POLICYEVAL_ALLOW) {
		lua_pushstring(L, o->grant.scope);
		lua_setfield(L, -2, "scope");
		lua_pushinteger(L, o->grant.expires_s);
		lua_setfield(L, -2, "expires_in");
	}
	if (o->kind == POLICYEVAL_ERROR) {
		lua_pushstring(L, o->err);
		lua_setfield(L, -2, "error");
	}
	lua_getfield(L, rec, "tenant");
	lua_pushstring(L, config_tenant(rp->cfg, lua_tostring(L, -1))->policy_revision);
	lua_setfield(L, -3, "policy_revision");
	lua_pop(L, 1);
	if (o->kind != POLICYEVAL_ERROR) {
		push_chain(L, rp->e);
		lua_setfield(L, -2, "decided_by");
	}
	lua_setfield(L, -2, "replayed");
	s = json_encode(L, -1, &len);
	if (s)
		printf("%s\n", s);
	lua_settop(L, top);
}

/* "allow user_id:alice inbox:read:messages for 3600 s", "deny (why)", "error (why)". */
static void print_side(const char *decision, const char *scope, long long expires, const char *why)
{
	printf("%s", decision ? decision : "?");
	if (decision && strcmp(decision, "allow") == 0 && scope)
		printf(" %s for %lld s", scope, expires);
	else if (why && why[0])
		printf(" (%s)", why);
}

static void print_text(struct replay *rp, const char *file, unsigned long long lineno, int rec)
{
	lua_State *L = rp->L;
	const struct policyeval_outcome *o = rp->o;
	const char *id = field_str(L, rec, "request_id"), *tenant = field_str(L, rec, "tenant");
	const char *user = field_str(L, rec, "user");
	struct policy_frame fr[POLICY_CHAIN_MAX];
	size_t n;
	long long expires;

	lua_getfield(L, rec, "expires_in");
	expires = lua_isnumber(L, -1) ? (long long)lua_tonumber(L, -1) : 0;
	lua_pop(L, 1);
	printf("%s:%llu: request %s, tenant %s, user %s: ", file, lineno, id ? id : "-",
	       tenant ? tenant : "-", user ? user : "-");
	print_side(field_str(L, rec, "decision"), field_str(L, rec, "scope"), expires,
	           field_str(L, rec, "reason"));
	printf(" -> ");
	print_side(outcome_name(o), o->grant.scope, o->grant.expires_s,
	           o->kind == POLICYEVAL_ERROR ? o->err : o->dec.reason);
	n = o->kind == POLICYEVAL_ERROR ? 0 : policy_decision_origin(rp->e, fr, POLICY_CHAIN_MAX);
	if (n)
		printf(" [decided at %s:%d]", fr[n - 1].source, fr[n - 1].line);
	printf("\n");
}

/* Whether the recorded line at rec was refused by the C core before the
 * policy ran: the kill switch (token.c's stage_killswitch: error
 * user_denied or tenant_disabled, reason "kill switch: ...") or the
 * cluster's deny list (reason "on the cluster's deny list"). */
static bool refused_before_policy(lua_State *L, int rec)
{
	const char *error = field_str(L, rec, "error"), *reason = field_str(L, rec, "reason");

	if (error && (strcmp(error, "user_denied") == 0 || strcmp(error, "tenant_disabled") == 0))
		return true;
	return reason && (strncmp(reason, "kill switch:", 12) == 0 ||
	                  strcmp(reason, "on the cluster's deny list") == 0);
}

static void skip(struct replay *rp, enum skip_kind k, const char *file, unsigned long long lineno)
{
	if (rp->skipped[k]++ == 0)
		snprintf(rp->first_skip[k], sizeof(rp->first_skip[k]), "%s:%llu", file, lineno);
}

/* Decides the line again (len bytes, no newline). */
static void replay_line(struct replay *rp, const char *file, unsigned long long lineno, const char *line,
                        size_t len)
{
	lua_State *L = rp->L;
	const struct tenant *t;
	const char *tenant;
	struct timespec t0;
	int top = lua_gettop(L), rec;

	if (len > REPLAY_LINE_MAX || json_decode(L, line, len) != 0 || !lua_istable(L, -1)) {
		skip(rp, SKIP_UNREADABLE, file, lineno);
		goto out;
	}
	rec = lua_gettop(L);
	tenant = field_str(L, rec, "tenant");
	if (!tenant || !field_str(L, rec, "decision")) {
		skip(rp, SKIP_UNREADABLE, file, lineno);
		goto out;
	}
	if (rp->tenant && strcmp(rp->tenant, tenant) != 0)
		goto out;
	if (refused_before_policy(L, rec)) {
		if (rp->refused++ == 0)
			snprintf(rp->first_refused, sizeof(rp->first_refused), "%s:%llu", file, lineno);
		goto out;
	}
	if (lua_getfield(L, rec, "request") != LUA_TTABLE) {
		skip(rp, SKIP_NO_INPUTS, file, lineno);
		goto out;
	}
	if (!(t = config_tenant(rp->cfg, tenant))) {
		skip(rp, SKIP_UNKNOWN_TENANT, file, lineno);
		goto out;
	}
	/* The recorded request names its tenant; a described request does not. */
	lua_pushnil(L);
	lua_setfield(L, -2, "tenant");
	t0 = clock_now();
	policyeval_decide(rp->e, L, -1, t, rp->o);
	rp->decide_ms += clock_since_ms(&t0);
	rp->decided++;
	if (same_outcome(L, rec, rp->o))
		goto out;
	rp->differ++;
	if (rp->json)
		print_json(rp, file, lineno, rec);
	else
		print_text(rp, file, lineno, rec);
out:
	lua_settop(L, top);
}

/* Reads the next line of f into line (at most REPLAY_LINE_MAX + 1 bytes
 * kept: the rest of a longer line is read and dropped, never held, so a
 * giant line costs no more memory than a long one). 1 and *len (the bytes
 * read, which may exceed what was kept), or 0 at the end of the file. */
static int read_line(FILE *f, char *line, size_t *len)
{
	size_t n = 0;
	int c;

	while ((c = getc_unlocked(f)) != EOF) {
		if (c == '\n')
			break;
		if (n <= REPLAY_LINE_MAX)
			line[n] = (char)c;
		n++;
	}
	*len = n;
	return c != EOF || n > 0;
}

/* Every line of the log at path ("-": standard input). Returns 0, or -1
 * when it cannot be read. */
static int replay_file(struct replay *rp, const char *path)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
	unsigned long long lineno = 0;
	char *line = malloc(REPLAY_LINE_MAX + 1);
	size_t len;
	int rc = 0;

	if (!f || !line) {
		fprintf(stderr, "courier-broker replay: %s: %s\n", path,
		        f ? "out of memory" : strerror(errno));
		if (f && f != stdin)
			fclose(f);
		free(line);
		return -1;
	}
	while (read_line(f, line, &len)) {
		lineno++;
		if (len > REPLAY_LINE_MAX) {
			/* Too long to be an audit line: counted, not held. */
			rp->lines++;
			skip(rp, SKIP_UNREADABLE, path, lineno);
			continue;
		}
		while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			len--;
		if (len == 0)
			continue;
		rp->lines++;
		replay_line(rp, path, lineno, line, len);
	}
	if (ferror(f)) {
		fprintf(stderr, "courier-broker replay: %s: %s\n", path, strerror(errno));
		rc = -1;
	}
	free(line);
	if (f != stdin)
		fclose(f);
	return rc;
}

/* The counts, on stderr (text) or as the last JSON line. */
static void summary(struct replay *rp, double wall_ms)
{
	double rate = rp->decide_ms > 0 ? (double)rp->decided / (rp->decide_ms / 1e3) : 0;
	unsigned long long skipped = 0;

	for (int k = 0; k < SKIP_KINDS; k++)
		skipped += rp->skipped[k];
	if (rp->json) {
		lua_State *L = rp->L;
		const char *s;
		size_t len;
		lua_createtable(L, 0, 8);
		lua_pushstring(L, "summary");
		lua_setfield(L, -2, "event");
		lua_pushinteger(L, (lua_Integer)rp->lines);
		lua_setfield(L, -2, "lines");
		lua_pushinteger(L, (lua_Integer)rp->decided);
		lua_setfield(L, -2, "replayed");
		lua_pushinteger(L, (lua_Integer)rp->differ);
		lua_setfield(L, -2, "differ");
		lua_pushinteger(L, (lua_Integer)rp->skipped[SKIP_NO_INPUTS]);
		lua_setfield(L, -2, "without_inputs");
		lua_pushinteger(L, (lua_Integer)rp->skipped[SKIP_UNREADABLE]);
		lua_setfield(L, -2, "unreadable");
		lua_pushinteger(L, (lua_Integer)rp->skipped[SKIP_UNKNOWN_TENANT]);
		lua_setfield(L, -2, "unknown_tenant");
		lua_pushinteger(L, (lua_Integer)rp->refused);
		lua_setfield(L, -2, "refused_before_policy");
		lua_pushinteger(L, (lua_Integer)rate);
		lua_setfield(L, -2, "decisions_per_second");
		s = json_encode(L, -1, &len);
		if (s)
			printf("%s\n", s);
		lua_settop(L, 0);
	}
	if (rp->decided == 0)
		fprintf(stderr, "replay: no recorded decision was decided again\n");
	fprintf(stderr,
	        "replay: %llu line(s), %llu decided again, %llu differ, %llu could not be decided again "
	        "(%.0f decisions/s, %.0f ms in all)\n",
	        rp->lines, rp->decided, rp->differ, skipped, rate, wall_ms);
	if (rp->refused)
		fprintf(stderr,
		        "replay: %llu line(s) refused before the policy (kill switch or cluster deny list), "
		        "not compared, the first at %s\n",
		        rp->refused, rp->first_refused);
	for (int k = 0; k < SKIP_KINDS; k++)
		if (rp->skipped[k])
			fprintf(stderr, "replay: %llu line(s) %s, the first at %s\n", rp->skipped[k],
			        skip_what[k], rp->first_skip[k]);
}

static int usage(const char *why)
{
	fprintf(stderr, "courier-broker replay: %s\nusage: " REPLAY_USAGE "\n", why);
	return 2;
}

int replay_main(int argc, char **argv)
{
	struct replay rp = {0};
	const char *config = NULL, *format = "text";
	char err[1024];
	int n_logs = 0, rc = 2;
	struct timespec t0 = clock_now();

	for (int i = 0; i < argc; i++) {
		if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc)
			config = argv[++i];
		else if (strcmp(argv[i], "--tenant") == 0 && i + 1 < argc)
			rp.tenant = argv[++i];
		else if (strcmp(argv[i], "--format") == 0 && i + 1 < argc)
			format = argv[++i];
		else if (argv[i][0] == '-' && argv[i][1] != '\0')
			return usage("unexpected option");
		else
			argv[n_logs++] = argv[i];
	}
	if (!config)
		return usage("needs -c CONFIG");
	if (n_logs == 0)
		return usage("needs at least one LOG (audit-log file, or - for standard input)");
	if (strcmp(format, "text") != 0 && strcmp(format, "json") != 0)
		return usage("--format is text or json");
	rp.json = strcmp(format, "json") == 0;
	rp.cfg = config_load_for(config, &policy_config_sandbox, CONFIG_USE_POLICIES, err, sizeof(err));
	if (!rp.cfg) {
		fprintf(stderr, "courier-broker replay: %s\n", err);
		return 2;
	}
	if (rp.tenant && !config_tenant(rp.cfg, rp.tenant)) {
		fprintf(stderr, "courier-broker replay: no tenant %s in %s\n", rp.tenant, config);
		goto out;
	}
	if (!(rp.e = policy_engine_new(rp.cfg, err, sizeof(err)))) {
		fprintf(stderr, "courier-broker replay: %s\n", err);
		goto out;
	}
	/* Each difference names the return that decided it now. */
	if (policy_engine_explain(rp.e, true) != 0)
		goto out;
	rp.L = policy_engine_lua(rp.e);
	if (!(rp.o = malloc(sizeof(*rp.o))))
		goto out;
	for (int i = 0; i < n_logs; i++)
		if (replay_file(&rp, argv[i]) != 0)
			goto out;
	fflush(stdout);
	summary(&rp, clock_since_ms(&t0));
	if (rp.differ)
		rc = 1;
	else if (rp.decided == 0 || rp.skipped[SKIP_UNREADABLE] || rp.skipped[SKIP_NO_INPUTS] ||
	         rp.skipped[SKIP_UNKNOWN_TENANT])
		rc = 2;
	else
		rc = 0;
out:
	free(rp.o);
	policy_engine_free(rp.e);
	config_free(rp.cfg);
	return rc;
}
