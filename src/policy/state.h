/*
 * policy/state.h — the policy engine's private state (like Lua's lstate.h).
 *
 * Owns struct policy_engine, the limits of a decision, the keys of the
 * request and of a decision, the light-userdata keys of the views, and the
 * prototypes the files of src/policy/ share. It must never be included
 * outside src/policy/: other modules see only policy.h.
 *
 * The files, top down (every arrow points down, none back):
 *   configbox.c policy_config_sandbox: the sandbox lent to config_load (-> engine.c)
 *   engine.c    new, compile, decide, run, finish; policy_sandbox_new/run
 *   sandbox.c   building the sandbox: guards, load, require, the libraries
 *   decision.c  the type check of a result  (-> brokerlib.c: UTF-8 repair)
 *   brokerlib.c broker.*, print             (-> budget.c)
 *   request.c   req, filled per decision    (-> view.c)
 *   alloc.c     the allocator               (-> budget.c)
 *   budget.c    hook, clock, charges        (-> coverage.c, view.c)
 *   coverage.c  lines run, code lines       view.c  read-only views
 *   fixture.c   a test's broker.data        (-> view.c)
 *   explain.c   the return that decided (from budget.c's hook, engine.c)
 * and this header under them all.
 */
#ifndef POLICY_STATE_H
#define POLICY_STATE_H

#include <lua.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "policy.h"

struct config;
struct decision;
struct free_block;
struct pmatch_budget;

#define HOOK_STEP     1000          /* instructions between two budget checks */
#define REP_MAX       (1024 * 1024) /* largest string.rep result */
#define LOAD_MAX      (64 * 1024)   /* largest chunk a policy may load() */
#define MOVE_MAX      (1024 * 1024) /* most elements one table.move may touch */
#define GC_STEP_AFTER (256 * 1024)  /* a decision that grew the heap more runs a GC step */
#define LOG_MAX       2048          /* broker.log bytes kept per decision */
#define LOG_LINES     32            /* broker.log lines kept per decision */
#define TRACE_FRAMES  4             /* Lua frames of a policy error's traceback */
#define ITEMS_MAX     100000        /* most elements one table/string library call may touch */
#define FORMAT_MAX    (1024 * 1024) /* largest string.format result (estimated before the call) */
#define BIG_ALLOC     (64 * 1024)   /* allocations this large check the wall clock */
#define CHECK_EVERY   4096          /* charged units between two looks at the wall clock */
#define REQ_FIELDS    9             /* fields of req (see request_fill) */
#define SMALL_MAX     512           /* largest block the engine keeps free lists for */
#define SMALL_STEP    16            /* the size classes' granularity */
#define SMALL_CLASSES (SMALL_MAX / SMALL_STEP)
#define FREE_MAX      (512 * 1024)     /* most bytes of freed small blocks kept */
#define STRING_MAX    (REP_MAX + 4096) /* longest string a decision may create */
#define BIG_STRING    (64 * 1024)      /* a string this long switches to FINE_STEP */
#define FINE_STEP     16               /* instructions between budget checks once one exists */
#define EXPLAIN_RING  32               /* table returns an explaining decision remembers */

enum stop_reason { STOP_NONE, STOP_INSTRUCTIONS, STOP_TIME, STOP_MEMORY };

/*
 * Keys written or read on every decision, made once (sandbox_setup_protected) so
 * that a decision hashes none of them again: registry[ref_keys][K_...]
 * (the request's fields, and the decision's: see decision_field).
 */
enum req_key {
	K_TENANT = 1,
	K_USER_ID,
	K_SCOPES,
	K_EXPIRES_IN,
	K_BODY, /* K_BODY .. K_HEADERS: the fields request_fill_lazy builds */
	K_CLIENT,
	K_HEADERS,
	K_NOW,
	K_AUTHENTICATED,
	K_METHOD,
	K_SUBJECT,
	K_CLAIMS,
	K_ALLOW,
	K_TIER,
	K_REASON,
	K_END
};

static const char *const key_names[K_END] = {
    [K_TENANT] = "tenant",         [K_USER_ID] = "user_id", [K_SCOPES] = "scopes",
    [K_EXPIRES_IN] = "expires_in", [K_BODY] = "body",       [K_CLIENT] = "client",
    [K_HEADERS] = "headers",       [K_NOW] = "now",         [K_AUTHENTICATED] = "authenticated",
    [K_METHOD] = "method",         [K_SUBJECT] = "subject", [K_CLAIMS] = "claims",
    [K_ALLOW] = "allow",           [K_TIER] = "tier",       [K_REASON] = "reason"};

/* A decision's fields, in the order of its slots (decision_check). */
static const enum req_key decision_keys[] = {K_ALLOW, K_SCOPES, K_TIER, K_EXPIRES_IN, K_REASON};
#define DECISION_FIELDS ((int)(sizeof(decision_keys) / sizeof(decision_keys[0])))

struct policy_engine {
	lua_State *L;
	lua_State *co; /* the thread every policy runs on; anchored by ref_co */
	const struct config *cfg;
	int *chunks; /* registry refs of the compiled chunks, by tenant index */
	size_t n_chunks;

	/* Registry refs of the sandbox's shared pieces. */
	int ref_co, ref_rmt, ref_base, ref_broker, ref_loaded, ref_modcache;
	int ref_reqview, ref_idview;              /* the views of req and req.identity */
	int ref_reqreal, ref_idreal;              /* the real tables behind them (see request_fill) */
	int ref_keys;                             /* the keys of every decision (enum req_key) */
	const char *field_names[DECISION_FIELDS]; /* the decision's, as strings of ref_keys */
	/* req.identity.claims: a view kept from one decision to the next
	 * (registry[ref_claims], at claims_view) while it holds no child
	 * views (claims_cached 0); the real table behind it when there are no
	 * claims. */
	int ref_claims, ref_noclaims;
	const void *claims_view;
	bool claims_cached;
	unsigned held; /* the optional fields of req and identity that may hold a value (hold) */
	const struct policy_request *rq_now; /* while a decision runs: for req's lazy fields */
	int ref_body;                        /* the body req.body shows (false: none), see request_fill */

	/* Per tenant (index of cfg->tenants): the environments' metatable
	 * (reading through to the base, plus the tenant's broker and require)
	 * and the table of its compiled modules. */
	int *envmts;
	int *mods;
	size_t cur;        /* the tenant whose policy runs */
	bool loaded_valid; /* ref_loaded holds this decision's modules */
	int log_lines;

	/* Memory: bytes in use (as Lua counts them: the sizes it asked for),
	 * and the cap armed only while a decision runs. */
	size_t mem_used;
	size_t mem_cap;
	bool cap_armed;
	bool mem_hit;

	/* Freed small blocks by size class, kept for the next decision's
	 * allocations (see alloc_lua), and the bytes they hold. */
	struct free_block *free_small[SMALL_CLASSES];
	size_t free_bytes;

	/* Budget of the running decision. */
	long long steps;
	long long max_steps;
	int hook_step;
	struct timespec deadline;      /* thread CPU time at which the time budget is spent */
	struct timespec wall_deadline; /* raw monotonic time before which it cannot be */
	/* The last reading of the thread's CPU clock (cpu_ref, on the thread
	 * numbered ref_thread, 0: none), taken just after the monotonic reading
	 * wall_ref. */
	struct timespec cpu_ref, wall_ref;
	unsigned long ref_thread;
	enum stop_reason stop;
	char where[128];     /* "file:line: " where the budget ran out, when known */
	char detail[128];    /* what ran out, when a guarded C function noticed */
	long long unchecked; /* units charged since the last look at the clock */

	bool broken; /* a failed decision could not be cleaned up: refuse all */

	/* The budgets of a decision (or of a file's run: policy_sandbox_run),
	 * resolved from cfg at every arming when there is one. */
	struct policy_limits lim;
	int ref_filebase; /* what a file that is not a policy sees (policy_sandbox_run) */

	bool coverage; /* `test --coverage`: lines run are recorded in ref_cov */
	int ref_cov;

	bool explain;       /* the return that decided is recorded (explain.c) */
	struct explain *xp; /* its records, from the first policy_engine_explain */

	char log[LOG_MAX]; /* broker.log lines of the last decision */
	size_t log_len;
};

static inline struct policy_engine *engine_of(lua_State *L)
{
	return *(struct policy_engine **)lua_getextraspace(L);
}

/* ------------------------------------------------------------- shared */

/* A library function wrapped by a charging one (budget.c), which calls it
 * as its upvalue 1. */
struct budget_wrap {
	const char *name;
	lua_CFunction fn;
};

/* alloc.c */
void *alloc_lua(void *ud, void *ptr, size_t osize, size_t nsize);
void alloc_release_small(struct policy_engine *e);

/* brokerlib.c */
int brokerlib_log(lua_State *L);
void brokerlib_open(lua_State *L, struct policy_engine *e);
size_t brokerlib_utf8_append(char *dst, size_t used, size_t cap, const char *s, size_t len, bool flat);

/* budget.c */
void budget_arm(struct policy_engine *e);
void budget_hook(lua_State *L, lua_Debug *ar);
bool budget_spent(struct policy_engine *e, bool clock, char *err, size_t errlen);
void budget_charge(lua_State *L, long long units, const char *what);
void budget_charge_items(lua_State *L, long long n, const char *what);
bool budget_deadline_passed(const struct policy_engine *e);
void budget_limits_of(const struct config *cfg, struct policy_limits *lim);
int budget_tonumber(lua_State *L);
extern const struct pmatch_budget budget_pattern;
extern const struct budget_wrap budget_string_wraps[], budget_table_wraps[], budget_utf8_wraps[];

/* coverage.c */
void coverage_record_line(struct policy_engine *e, lua_State *L, lua_Debug *ar);

/* The hook's mask while a decision runs: the budget's count, and the lines
 * (coverage) or returns (explain) when recorded. */
static inline int budget_mask(const struct policy_engine *e)
{
	return LUA_MASKCOUNT | (e->coverage ? LUA_MASKLINE : 0) | (e->explain ? LUA_MASKRET : 0);
}

/* explain.c */
void explain_begin(struct policy_engine *e);
void explain_return(struct policy_engine *e, lua_State *L, lua_Debug *ar);
void explain_finish(struct policy_engine *e, const void *table);
void explain_end(struct policy_engine *e);
void explain_free(struct policy_engine *e);

/* decision.c */
int decision_check(lua_State *L, struct policy_engine *e, int idx, const char *path, struct decision *out,
                   char *err, size_t errlen);

/* request.c */
void request_claims_view_new(lua_State *L, struct policy_engine *e, int rmt);
void request_fill(lua_State *L, struct policy_engine *e, int keys, const struct policy_request *rq, int body,
                  int claims);
int request_lazy(lua_State *L);
void reqview_new(lua_State *L, int rmt);

/* sandbox.c */
int sandbox_env_newindex(lua_State *L);
int sandbox_require(lua_State *L);
int sandbox_setup_protected(lua_State *L);

/* view.c */
/* view.c: the light-userdata keys no policy can name (their addresses are
 * the keys): a view's real table, the views' metatables, req's and
 * identity's views' metatables, the sandbox's own metatables. */
extern const char view_real_key, view_view_key, view_reqview_key, view_env_key;
#define UV_RMT lua_upvalueindex(1) /* RMT, the views' metatable, as upvalue 1 */
void view_wrap(lua_State *L, struct policy_engine *e);
void view_unwrap(lua_State *L, struct policy_engine *e, int idx);
bool view_is_ours(lua_State *L, int idx, int rmt);
void view_new(lua_State *L, int rmt);
int view_index(lua_State *L);
int view_len(lua_State *L);
int view_newindex(lua_State *L);
int view_pairs(lua_State *L);
int view_sb_next(lua_State *L);
int view_sb_pairs(lua_State *L);
void view_reqview_real(lua_State *L, int idx);
int view_reqview_len(lua_State *L);

#endif
