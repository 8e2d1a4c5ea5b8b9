/*
 * policy.h — the per-tenant Lua policy engine.
 *
 * One engine per worker thread: a lua_State holding every tenant's compiled
 * policy of one configuration generation, inside a sandbox (no I/O, no
 * require outside the policy folder, text chunks only, no debug, read-only
 * shared tables) with an instruction budget and a memory cap per decision.
 * The policy's file runs again for every decision, in an environment that
 * can never be written, so nothing leaks between requests or tenants. The
 * engine never calls the HTTP front or Courier.
 */
#ifndef BROKER_POLICY_H
#define BROKER_POLICY_H

#include <stdbool.h>
#include <stddef.h>

struct lua_State;
struct config;
struct tenant;
struct decision;

struct policy_engine;

/* Builds a Lua state with the sandbox and compiles every tenant's policy of
 * cfg (which must outlive the engine). Returns NULL with file:line and the
 * reason in err. */
struct policy_engine *policy_engine_new(const struct config *cfg, char *err, size_t errlen);

/* Never reads the engine's config: an engine may outlive it idle (a worker
 * thread's engine of a generation already freed) and still be freed. */
void policy_engine_free(struct policy_engine *e);

/* The engine's Lua state, for JSON work on the same thread (json.h, jwt.h).
 * Callers keep the stack balanced. */
struct lua_State *policy_engine_lua(struct policy_engine *e);

struct policy_header {
	const char *name; /* lower-case */
	const char *value;
};

/* What the policy sees as req (see the contract). Stack indexes are absolute
 * indexes on policy_engine_lua(e). */
struct policy_request {
	const struct tenant *tenant;
	const char *user_id;
	int body_idx; /* the decoded body table */
	bool authenticated;
	const char *method;                          /* "jwt", "client_key", "proxy", "none" */
	const char *subject;                         /* NULL or "" when none */
	int claims_idx;                              /* claims table, or 0 */
	const char *client_ip, *origin, *user_agent; /* NULL when absent */
	/* The request's headers, without authorization and cookie: either listed
	 * (headers, n_headers), or, when headers_of is set, gathered by it only if
	 * the policy reads req.headers (valid until the decision ends). */
	const struct policy_header *headers;
	size_t n_headers;
	const struct policy_header *(*headers_of)(void *ctx, size_t *n);
	void *headers_ctx;
	long long now;
};

/*
 * Runs the tenant's policy for rq. Returns 0 with a type-checked decision in
 * out (allow or deny; the envelope is the caller's next step), or -1 for a
 * policy error (raised, budget or memory exceeded, malformed decision) with
 * a reason naming file and line in err, for the log only.
 */
int policy_decide(struct policy_engine *e, const struct policy_request *rq, struct decision *out, char *err,
                  size_t errlen);

/* What broker.log (and print) wrote during the last decision on e: lines
 * ending in "\n", at most 2 KiB, "" when nothing. Valid until the next
 * decision; for `eval` and the log. */
const char *policy_decision_log(const struct policy_engine *e);

/* Tests only (fixtures): tenant t's broker.data becomes the JSON document
 * json (len bytes; len 0: no data, broker.data is nil) for the decisions
 * that follow, or, with json NULL, its own again. Never on an engine that
 * serves. Returns 0, or -1 with the reason in err. */
int policy_engine_set_data(struct policy_engine *e, const struct tenant *t, const char *json, size_t len,
                           char *err, size_t errlen);

/*
 * Explain: which `return` of a policy decided. With explain on, each
 * decision on e records the return that produced the table the policy
 * returned (the innermost one: a helper's `return { allow = ... }` rather
 * than decide's `return d`) and the policy frames that led there. It costs
 * a return hook while deciding; off by default. Returns 0, or -1 when out of
 * memory (explain stays off).
 */
#define POLICY_CHAIN_MAX 8
struct policy_frame {
	const char *source; /* the file's absolute path: valid while the engine lives */
	int line;
	bool tail; /* reached by a tail call: the caller's frame is gone */
};
int policy_engine_explain(struct policy_engine *e, bool on);

/* The last decision's chain into out (at most max frames, outermost first;
 * the last is the `return` that decided). 0 when unknown: explain off, a
 * policy error, or a decision table not returned from a policy file. */
size_t policy_decision_origin(const struct policy_engine *e, struct policy_frame *out, size_t max);

/* The same as "file:line\n" lines, outermost first, into buf (cut at a
 * whole line); returns the number of frames. */
size_t policy_origin_text(const struct policy_engine *e, char *buf, size_t len);

/* The same as one phrase, paths shown without base + "/": "decided at
 * rules.lua:12, called from acme.lua:30 > rules.lua:40" (cut to len). */
size_t policy_origin_line(const struct policy_engine *e, const char *base, char *buf, size_t len);

/* `test --coverage`: from now on, every line of a policy or module that
 * runs on e is recorded (with a line hook: slower). Returns 0 or -1. */
int policy_engine_coverage(struct policy_engine *e);

/* Calls fn for every recorded line, with the file's absolute path. */
void policy_coverage_each(struct policy_engine *e, void (*fn)(void *ctx, const char *path, int line),
                          void *ctx);

/*
 * Branch coverage (`test --coverage`): the source text with each `if` and
 * `elseif` condition passed through a recorder, on the same lines (nothing
 * else changes: the condition's value is returned as it is). Site k (1 ..
 * *nsites) is the condition on line (*lines)[k - 1]. *out and *lines are the
 * caller's to free. Returns 0, or -1 (text Lua would refuse, out of memory):
 * then use the text as it is, without branches.
 */
int policy_branch_instrument(const char *text, size_t len, char **out, size_t *outlen, int **lines,
                             size_t *nsites);

/* Calls fn for every outcome recorded since policy_engine_coverage: the
 * condition id of the file path was seen value (true or false). */
void policy_branch_each(struct policy_engine *e, void (*fn)(void *ctx, const char *path, int id, bool value),
                        void *ctx);

/* The lines of a Lua source that hold code: lines[k] = 1 for each such k
 * below nlines (others 0). name is for messages. Returns 0, or -1 with the
 * reason (a syntax error) in err. */
int policy_code_lines(const char *name, const char *text, size_t len, unsigned char *lines, size_t nlines,
                      char *err, size_t errlen);

/*
 * The sandbox alone: the one Lua sandbox of the broker, for the Lua files
 * that are not policies (a policy's NAME_test.lua, the configuration file)
 * as for policies. A file runs with the policies' charged libraries
 * (string, table, math, utf8, each C loop charged before it runs), the
 * sealed string metatable, text chunks only, no I/O, no require, no load,
 * no setmetatable (no __gc, __close or metamethod code of the file's can
 * run after it returns), under an instruction budget, a CPU time budget and
 * a memory cap. Its globals land in its own environment.
 */
struct policy_limits {
	long long max_instructions;
	long timeout_ms;
	size_t max_memory_bytes;
};

/* A sandbox without tenants under lim. Returns NULL with the reason in err.
 * Free it with policy_engine_free; policy_decide refuses it. */
struct policy_engine *policy_sandbox_new(const struct policy_limits *lim, char *err, size_t errlen);

/*
 * Runs the Lua source text (chunk name "@name") once on e, in a fresh
 * environment, under e's limits (the policies' on an engine built from a
 * configuration). Returns 0 with the environment and then the chunk's first
 * result (nil when none) pushed on policy_engine_lua(e), or -1 with the
 * reason (file:line, never a quote of the file's text) in err, pushing
 * nothing. The engine stays usable either way.
 */
int policy_sandbox_run(struct policy_engine *e, const char *name, const char *text, size_t len, char *err,
                       size_t errlen);

/* Removes the quote of source text from a Lua syntax error (" near '...'"):
 * a file that is not Lua (a key named as a policy) must not be echoed. */
void policy_scrub_syntax_error(char *msg);

/* The sandbox above, as config_load takes it (config.h): each open is a
 * policy_sandbox_new under the loader's budgets (policy/configbox.c). */
extern const struct config_sandbox policy_config_sandbox;

#endif
