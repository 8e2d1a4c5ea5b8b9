/*
 * policy.c — the per-tenant Lua policy engine.
 *
 * Owns one lua_State per engine (one engine per worker thread): the sandbox
 * every policy runs in (the broker's only Lua sandbox: test files and the
 * configuration file run in it too, through policy_sandbox_run), each
 * tenant's compiled chunk, the read-only request
 * a policy sees, the budgets of one decision (instructions, wall clock,
 * memory) and the type check of what a policy returns. It must never hand a
 * policy anything that outlives the decision or reaches the host: no I/O, no
 * debug, no bytecode, no coroutines, no writable shared table, no __gc. It
 * never applies the envelope (the caller does), and never calls the HTTP
 * front or Courier.
 *
 * How a decision runs: the chunk is compiled once, its _ENV upvalue the
 * tenant's environment (an empty table that can never be written, reading
 * through to the read-only base with the tenant's broker and require); for
 * every decision the chunk is run to get a fresh decide (so no upvalue
 * survives a decision), and decide is called with req: a view, made once,
 * of a table the engine rewrites whole before every decision (fill_req),
 * whose body, client and headers are built when first read. Library functions
 * that loop in C charge their work to the same budget (pmatch.c for
 * patterns). Both run on one coroutine of the engine, so the count
 * hook can end a runaway policy by yielding: an error raised from a hook
 * could be caught by pcall inside the policy, a yield cannot. Host flags
 * (budget spent, memory cap hit) make the decision a policy error whatever
 * the policy returns. A thread a policy failed on is dropped, never closed
 * (finish): closing would run its pending __close handlers outside every
 * budget.
 */
#include "policy.h"

#include <arpa/inet.h>
#include <lauxlib.h>
#include <limits.h>
#include <lua.h>
#include <lualib.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "duration.h"
#include "envelope.h"
#include "json.h"
#include "pmatch.h"
#include "scope.h"

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
#define REQ_FIELDS    9             /* fields of req (see fill_req) */
#define SMALL_MAX     512           /* largest block the engine keeps free lists for */
#define SMALL_STEP    16            /* the size classes' granularity */
#define SMALL_CLASSES (SMALL_MAX / SMALL_STEP)
#define FREE_MAX      (512 * 1024)     /* most bytes of freed small blocks kept */
#define STRING_MAX    (REP_MAX + 4096) /* longest string a decision may create */
#define BIG_STRING    (64 * 1024)      /* a string this long switches to FINE_STEP */
#define FINE_STEP     16               /* instructions between budget checks once one exists */

enum stop_reason { STOP_NONE, STOP_INSTRUCTIONS, STOP_TIME, STOP_MEMORY };

/*
 * Keys written or read on every decision, made once (setup_protected) so
 * that a decision hashes none of them again: registry[ref_keys][K_...]
 * (the request's fields, and the decision's: see decision_field).
 */
enum req_key {
	K_TENANT = 1,
	K_USER_ID,
	K_SCOPES,
	K_EXPIRES_IN,
	K_BODY, /* K_BODY .. K_HEADERS: the fields req_fill builds */
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

/* A decision's fields, in the order of its slots (check_decision). */
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
	int ref_reqreal, ref_idreal;              /* the real tables behind them (see fill_req) */
	int ref_keys;                             /* the keys of every decision (enum req_key) */
	const char *field_names[DECISION_FIELDS]; /* the decision's, as strings of ref_keys */
	/* req.identity.claims: a view kept from one decision to the next
	 * (registry[ref_claims], at claims_view) while it holds no child
	 * views (claims_cached 0); the real table behind it when there are no
	 * claims. */
	int ref_claims, ref_noclaims;
	const void *claims_view;
	int claims_cached;
	unsigned held; /* the optional fields of req and identity that may hold a value (hold) */
	const struct policy_request *rq_now; /* while a decision runs: for req's lazy fields */
	int ref_body;                        /* the body req.body shows (false: none), see fill_req */

	/* Per tenant (index of cfg->tenants): the environments' metatable
	 * (reading through to the base, plus the tenant's broker and require)
	 * and the table of its compiled modules. */
	int *envmts;
	int *mods;
	size_t cur;       /* the tenant whose policy runs */
	int loaded_valid; /* ref_loaded holds this decision's modules */
	int log_lines;

	/* Memory: bytes in use (as Lua counts them: the sizes it asked for),
	 * and the cap armed only while a decision runs. */
	size_t mem_used;
	size_t mem_cap;
	int cap_armed;
	int mem_hit;

	/* Freed small blocks by size class, kept for the next decision's
	 * allocations (see engine_alloc), and the bytes they hold. */
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

	int broken; /* a failed decision could not be cleaned up: refuse all */

	/* The budgets of a decision (or of a file's run: policy_sandbox_run),
	 * resolved from cfg at every arming when there is one. */
	struct policy_limits lim;
	int ref_filebase; /* what a file that is not a policy sees (policy_sandbox_run) */

	int coverage; /* `test --coverage`: lines run are recorded in ref_cov */
	int ref_cov;

	char log[LOG_MAX]; /* broker.log lines of the last decision */
	size_t log_len;
};

/* ---------------------------------------------------------------- memory */

static int deadline_passed(const struct policy_engine *e);

/*
 * Small blocks. A decision allocates and frees the same few dozen small
 * objects every time (the request's tables, the policy's closures and
 * upvalues, its result): freed small blocks wait on a free list of their
 * size class (SMALL_STEP bytes apart) for the next allocation of that
 * class, which then costs no malloc. Invariant: a live block whose size
 * Lua gives as at most SMALL_MAX holds at least the whole of that size's
 * class, so any block may go to the list of the class of the size Lua
 * frees it with. At most FREE_MAX bytes wait; more go back to malloc. The
 * lists only recycle memory: mem_used counts the sizes Lua asked for, so
 * the cap means what it meant. Blocks on a list are poisoned under ASan:
 * a use after free in the engine is still caught.
 */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ENGINE_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define ENGINE_ASAN 1
#endif
#ifdef ENGINE_ASAN
#include <sanitizer/asan_interface.h>
#define block_poison(p, n)   ASAN_POISON_MEMORY_REGION((p), (n))
#define block_unpoison(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define block_poison(p, n)   ((void)(p), (void)(n))
#define block_unpoison(p, n) ((void)(p), (void)(n))
#endif

struct free_block {
	struct free_block *next;
};

/* The size class of a block of 1..SMALL_MAX bytes, and the bytes of a class. */
static size_t small_class(size_t n)
{
	return (n - 1) / SMALL_STEP;
}

static size_t class_bytes(size_t c)
{
	return (c + 1) * SMALL_STEP;
}

/* A block of n (1..SMALL_MAX) bytes holding its whole class; NULL if none. */
static void *small_get(struct policy_engine *e, size_t n)
{
	size_t c = small_class(n);
	struct free_block *b = e->free_small[c];

	if (!b)
		return malloc(class_bytes(c));
	block_unpoison(b, class_bytes(c));
	e->free_small[c] = b->next;
	e->free_bytes -= class_bytes(c);
	return b;
}

/* Takes back a block Lua frees with size n (1..SMALL_MAX). */
static void small_put(struct policy_engine *e, void *p, size_t n)
{
	size_t c = small_class(n);
	struct free_block *b = p;

	if (e->free_bytes + class_bytes(c) > FREE_MAX) {
		free(p);
		return;
	}
	b->next = e->free_small[c];
	e->free_small[c] = b;
	e->free_bytes += class_bytes(c);
	block_poison(b, class_bytes(c));
}

/* Gives every waiting block back to malloc. */
static void small_release(struct policy_engine *e)
{
	for (size_t c = 0; c < SMALL_CLASSES; c++) {
		while (e->free_small[c]) {
			struct free_block *b = e->free_small[c];
			block_unpoison(b, class_bytes(c));
			e->free_small[c] = b->next;
			free(b);
		}
	}
	e->free_bytes = 0;
}

/* Moves the block p of old bytes to a new size: the block itself when it
 * already holds nsize's class, else a new one with the old contents. */
static void *block_resize(struct policy_engine *e, void *p, size_t old, size_t nsize)
{
	void *np;

	if (nsize <= SMALL_MAX) {
		if (old > SMALL_MAX) {
			/* Shrinking a large block: it must still hold its new
			 * class; if realloc fails, the larger block does. */
			np = realloc(p, class_bytes(small_class(nsize)));
			if (!np)
				np = p;
			return np;
		}
		if (small_class(nsize) <= small_class(old))
			return p;
		np = small_get(e, nsize);
	} else {
		if (old > SMALL_MAX)
			return realloc(p, nsize);
		np = malloc(nsize);
	}
	if (!np)
		return NULL;
	memcpy(np, p, old < nsize ? old : nsize);
	small_put(e, p, old);
	return np;
}

/* Whether growing a block from old to nsize bytes is refused while a
 * decision runs: past the memory cap, or (for a large block) past the time
 * budget. Sets the host flag of what ran out. */
static int alloc_refused(struct policy_engine *e, size_t old, size_t nsize)
{
	if (e->mem_used + (nsize - old) > e->mem_cap) {
		e->mem_hit = 1;
		return 1;
	}
	/* Large blocks are where one VM instruction or C call does O(n) work
	 * (concatenation, string results): look at the clock there too. */
	if (nsize >= BIG_ALLOC && deadline_passed(e)) {
		if (e->stop == STOP_NONE)
			e->stop = STOP_TIME;
		return 1;
	}
	return 0;
}

static void budget_hook(lua_State *L, lua_Debug *ar);

/*
 * A long string made during a decision. One VM instruction on it does O(n)
 * work no hook sees: comparing (<, <=: strcoll), converting to a number
 * (arithmetic, a library's number argument), hashing. Two bounds keep that
 * inside the time budget: no string a decision makes is longer than
 * STRING_MAX (refused like a memory bomb), and once one is BIG_STRING or
 * longer the count hook looks at the budget every FINE_STEP instructions
 * instead of every HOOK_STEP, for the rest of the decision: at most
 * FINE_STEP such instructions (about 1 ms each at 1 MiB) between two looks.
 * Returns 1 when the string is refused.
 */
static int big_string(struct policy_engine *e, size_t nsize)
{
	if (nsize > STRING_MAX) {
		e->mem_hit = 1;
		if (!e->detail[0])
			snprintf(e->detail, sizeof(e->detail), "a string longer than %d bytes", STRING_MAX);
		return 1;
	}
	if (e->hook_step > FINE_STEP && e->stop == STOP_NONE && e->co) {
		e->hook_step = FINE_STEP;
		lua_sethook(e->co, budget_hook, LUA_MASKCOUNT | (e->coverage ? LUA_MASKLINE : 0), FINE_STEP);
	}
	return 0;
}

/* Lua's allocator with a byte count. When ptr is NULL, osize is a type tag,
 * not a size: only a live block has a size to give back. */
static void *engine_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	struct policy_engine *e = ud;
	size_t old = ptr ? osize : 0;
	void *p;

	if (nsize == 0) {
		if (!ptr) /* Lua frees empty parts too */
			return NULL;
		if (old <= SMALL_MAX)
			small_put(e, ptr, old);
		else
			free(ptr);
		e->mem_used -= old;
		return NULL;
	}
	if (e->cap_armed && nsize > old && alloc_refused(e, old, nsize))
		return NULL;
	if (e->cap_armed && !ptr && osize == LUA_TSTRING && nsize >= BIG_STRING && big_string(e, nsize))
		return NULL;
	if (!ptr)
		p = nsize <= SMALL_MAX ? small_get(e, nsize) : malloc(nsize);
	else
		p = block_resize(e, ptr, old, nsize);
	if (!p)
		return NULL;
	e->mem_used = e->mem_used - old + nsize;
	return p;
}

static int engine_panic(lua_State *L)
{
	const char *msg = lua_tostring(L, -1);
	fprintf(stderr, "policy: unprotected Lua error: %s\n", msg ? msg : "?");
	abort();
}

static struct policy_engine *engine_of(lua_State *L)
{
	return *(struct policy_engine **)lua_getextraspace(L);
}

/* ---------------------------------------------------------------- budget */

static void record_line(struct policy_engine *e, lua_State *L, lua_Debug *ar);
static int req_lazy(lua_State *L);
static void charge(lua_State *L, long long units, const char *what);

/* The time budget is the decision's own CPU time: a busy machine must not turn
 * a healthy policy into a policy_error (or refuse a reload whose tests merely
 * waited for a core). A policy cannot block, so CPU time bounds its latency.
 * Reading the thread's CPU clock is a system call (no vDSO: about 0.3 to
 * 0.7 us here), the raw monotonic clock is not: a thread cannot use more CPU
 * time than the time that passed, so before wall_deadline the budget cannot
 * be spent and the CPU clock is read only once a decision has run for as
 * long as its budget. */
static int ts_before(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

static int deadline_passed(const struct policy_engine *e)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC_RAW, &now);
	if (ts_before(&now, &e->wall_deadline))
		return 0;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
	return !ts_before(&now, &e->deadline);
}

/* start + ms, normalised. */
static void ts_add_ms(struct timespec *t, long ms)
{
	t->tv_sec += ms / 1000;
	t->tv_nsec += (ms % 1000) * 1000000L;
	if (t->tv_nsec >= 1000000000L) {
		t->tv_sec++;
		t->tv_nsec -= 1000000000L;
	}
}

/* Coverage: cov[source][line] = true, outside the decision's memory cap. */
static void record_line(struct policy_engine *e, lua_State *L, lua_Debug *ar)
{
	int armed = e->cap_armed;

	if (!lua_getinfo(L, "S", ar) || ar->source[0] != '@' || !lua_checkstack(L, 4))
		return;
	e->cap_armed = 0;
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_cov);
	if (lua_getfield(L, -1, ar->source + 1) != LUA_TTABLE) {
		lua_pop(L, 1);
		lua_newtable(L);
		lua_pushvalue(L, -1);
		lua_setfield(L, -3, ar->source + 1);
	}
	lua_pushboolean(L, 1);
	lua_rawseti(L, -2, ar->currentline);
	lua_pop(L, 2);
	e->cap_armed = armed;
}

/*
 * The count hook. Once a budget is spent it fires on every instruction and
 * yields, which unwinds through any pcall of the policy back to the engine.
 * Where a yield is impossible (inside a sort comparator, a gsub callback, a
 * metamethod called from C) lua_yield raises instead; that error may be
 * caught, but the next instruction outside such a call yields for good.
 */
static void budget_hook(lua_State *L, lua_Debug *ar)
{
	struct policy_engine *e = engine_of(L);

	if (ar->event == LUA_HOOKLINE) {
		if (e->stop == STOP_NONE)
			record_line(e, L, ar);
		return;
	}
	if (e->stop == STOP_NONE) {
		e->steps += e->hook_step;
		if (e->mem_hit)
			e->stop = STOP_MEMORY;
		else if (e->steps > e->max_steps)
			e->stop = STOP_INSTRUCTIONS;
		else if (deadline_passed(e))
			e->stop = STOP_TIME;
		else
			return;
		if (lua_getinfo(L, "Sl", ar) && ar->currentline > 0)
			snprintf(e->where, sizeof(e->where), "%s:%d: ", ar->short_src, ar->currentline);
		lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
	}
	lua_yield(L, 0);
}

/*
 * Sets the deadlines of a decision that starts now with a budget of ms.
 * The CPU clock is a system call that costs about as much as a small
 * decision, so a reading up to ms/100 old (on this thread) stands for the
 * decision's start: the CPU time the thread used since then counts against
 * the decision. The budget may thus be spent up to 1% early, never late: the
 * deadline is reading + ms, and the CPU clock only moves forward.
 */
static atomic_ulong threads_numbered;
static _Thread_local unsigned long thread_number; /* 0 until numbered: never reused */

static void budget_clock(struct policy_engine *e, long ms)
{
	struct timespec now;
	long long age_ns;

	if (!thread_number)
		thread_number = atomic_fetch_add(&threads_numbered, 1) + 1;

	clock_gettime(CLOCK_MONOTONIC_RAW, &now);
	age_ns =
	    (long long)(now.tv_sec - e->wall_ref.tv_sec) * 1000000000LL + (now.tv_nsec - e->wall_ref.tv_nsec);
	if (e->ref_thread != thread_number || age_ns < 0 || age_ns >= (long long)ms * 10000LL) {
		/* Wall clock first: the CPU time used after the CPU clock's
		 * reading is at most the wall time since the earlier wall reading. */
		e->wall_ref = now;
		clock_gettime(CLOCK_THREAD_CPUTIME_ID, &e->cpu_ref);
		e->ref_thread = thread_number;
	}
	e->deadline = e->cpu_ref;
	e->wall_deadline = e->wall_ref;
	ts_add_ms(&e->deadline, ms);
	ts_add_ms(&e->wall_deadline, ms);
}

/* A configuration's policy limits, defaults for those it does not set. */
static void limits_of(const struct config *cfg, struct policy_limits *lim)
{
	lim->max_instructions =
	    cfg->policy_max_instructions > 0 ? cfg->policy_max_instructions : POLICY_DEFAULT_MAX_INSTRUCTIONS;
	lim->timeout_ms = cfg->policy_timeout_ms > 0 ? cfg->policy_timeout_ms : POLICY_DEFAULT_TIMEOUT_MS;
	lim->max_memory_bytes = cfg->policy_max_memory_bytes ? cfg->policy_max_memory_bytes
	                                                     : (size_t)POLICY_DEFAULT_MAX_MEMORY_BYTES;
}

static void budget_arm(struct policy_engine *e)
{
	long ms;

	if (e->cfg)
		limits_of(e->cfg, &e->lim);
	ms = e->lim.timeout_ms;
	e->steps = 0;
	e->max_steps = e->lim.max_instructions;
	e->hook_step = e->max_steps < HOOK_STEP ? (int)e->max_steps : HOOK_STEP;
	e->stop = STOP_NONE;
	e->where[0] = '\0';
	e->detail[0] = '\0';
	e->unchecked = 0;
	e->mem_hit = 0;
	e->log_len = 0;
	e->log[0] = '\0';
	e->log_lines = 0;
	e->loaded_valid = 0;
	budget_clock(e, ms);
	lua_sethook(e->co, budget_hook, LUA_MASKCOUNT | (e->coverage ? LUA_MASKLINE : 0), e->hook_step);
	e->mem_cap = e->mem_used + e->lim.max_memory_bytes;
	e->cap_armed = 1;
}

/* Writes the budget error, if any budget was spent; returns 1 then. clock:
 * whether to look at the clock too (else only at what the hook and the
 * guards noticed). */
static int budget_spent(struct policy_engine *e, int clock, char *err, size_t errlen)
{
	if (e->stop == STOP_NONE && e->mem_hit)
		e->stop = STOP_MEMORY;
	if (e->stop == STOP_NONE && clock && deadline_passed(e))
		e->stop = STOP_TIME;
	switch (e->stop) {
	case STOP_INSTRUCTIONS:
		snprintf(err, errlen, "%sinstruction budget exceeded (%lld instructions)%s%s", e->where,
		         e->max_steps, e->detail[0] ? ": " : "", e->detail);
		return 1;
	case STOP_TIME:
		snprintf(err, errlen, "%stime budget exceeded (%ld ms)%s%s", e->where, e->lim.timeout_ms,
		         e->detail[0] ? ": " : "", e->detail);
		return 1;
	case STOP_MEMORY:
		snprintf(err, errlen, "%smemory cap exceeded (%zu bytes)%s%s", e->where,
		         e->lim.max_memory_bytes, e->detail[0] ? ": " : "", e->detail);
		return 1;
	case STOP_NONE:
		break;
	}
	return 0;
}

/* ------------------------------------------------------ read-only proxies */

/*
 * A read-only view of a table T is a table whose only raw entries sit under
 * two light-userdata keys no policy can name: view[&REAL_KEY] = T and,
 * once a nested table is reached, view[real child] = its view (a key no
 * policy can hold).
 * Its metatable is the shared, protected RMT (upvalue 1 of the functions
 * below): a read goes through __index to T, a write finds no raw entry and
 * reaches __newindex, which refuses. The sandbox's next and pairs skip the
 * hidden keys, rawget and rawset refuse views: nothing raw reaches T.
 */
static const char REAL_KEY = 'r';
static const char VIEW_KEY = 'v'; /* marks the views' metatables */
static const char SWAP_KEY = 's'; /* marks the metatables of req's and identity's views */
#define UV_RMT lua_upvalueindex(1)

/* Replaces the table at the top with a new view; rmt: RMT's absolute or
 * pseudo-index. */
static void proxy_new(lua_State *L, int rmt)
{
	lua_createtable(L, 0, 1);
	lua_insert(L, -2);
	lua_rawsetp(L, -2, &REAL_KEY);
	lua_pushvalue(L, rmt);
	lua_setmetatable(L, -2);
}

/* Pushes the table behind the view at idx. */
static void proxy_real(lua_State *L, int idx)
{
	if (lua_rawgetp(L, idx, &REAL_KEY) != LUA_TTABLE)
		luaL_error(L, "not a read-only view");
}

/* Replaces the table at the top, a table inside the real table of the view
 * at index view, with its view: made once per view and table, and kept in
 * the view under the real table as key (a key no policy can name, since no
 * policy ever holds a real table). */
static void proxy_child(lua_State *L, int view)
{
	lua_pushvalue(L, -1);
	if (lua_rawget(L, view) == LUA_TTABLE) {
		lua_replace(L, -2);
		return;
	}
	lua_pop(L, 1);
	lua_pushvalue(L, -1);
	proxy_new(L, UV_RMT); /* real, its view */
	lua_pushvalue(L, -2);
	lua_pushvalue(L, -2);
	lua_rawset(L, view);
	lua_replace(L, -2);
	if (lua_topointer(L, view) == engine_of(L)->claims_view)
		engine_of(L)->claims_cached = 1; /* see fill_req */
}

/* Makes registry[ref_claims] a new, empty view of claims; rmt: RMT's index. */
static void claims_view_new(lua_State *L, struct policy_engine *e, int rmt)
{
	lua_createtable(L, 0, 1);
	lua_pushvalue(L, rmt);
	lua_setmetatable(L, -2);
	e->claims_view = lua_topointer(L, -1);
	lua_rawseti(L, LUA_REGISTRYINDEX, e->ref_claims);
}

static int proxy_index(lua_State *L)
{
	proxy_real(L, 1);
	lua_pushvalue(L, 2);
	if (lua_rawget(L, -2) == LUA_TTABLE)
		proxy_child(L, 1);
	return 1;
}

static int proxy_newindex(lua_State *L)
{
	if (lua_type(L, 2) == LUA_TSTRING)
		return luaL_error(L, "cannot set field '%s': the table is read-only", lua_tostring(L, 2));
	return luaL_error(L, "cannot modify a read-only table");
}

static int proxy_len(lua_State *L)
{
	proxy_real(L, 1);
	lua_pushinteger(L, (lua_Integer)lua_rawlen(L, -1));
	return 1;
}

static int proxy_next(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_settop(L, 2);
	proxy_real(L, 1);
	lua_pushvalue(L, 2);
	if (!lua_next(L, 3))
		return 0;
	if (lua_type(L, -1) == LUA_TTABLE)
		proxy_child(L, 1);
	return 2;
}

static int proxy_pairs(lua_State *L)
{
	lua_pushvalue(L, UV_RMT);
	lua_pushcclosure(L, proxy_next, 1);
	lua_pushvalue(L, 1);
	lua_pushnil(L);
	return 3;
}

/* next for policies: a view has no entries of its own (its raw entries
 * are the hidden real table and cached children). */
static int sb_next(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_settop(L, 2);
	if (lua_getmetatable(L, 1)) {
		int view = lua_rawgetp(L, -1, &VIEW_KEY) != LUA_TNIL;
		lua_pop(L, 2);
		if (view) {
			lua_pushnil(L);
			return 1;
		}
	}
	if (lua_next(L, 1))
		return 2;
	lua_pushnil(L);
	return 1;
}

/* pairs for policies: __pairs when there is one, else the sandbox's next
 * (the real one, which pairs would hand out, sees the hidden keys). */
static int sb_pairs(lua_State *L)
{
	luaL_checkany(L, 1);
	if (luaL_getmetafield(L, 1, "__pairs") == LUA_TNIL) {
		lua_pushcfunction(L, sb_next);
		lua_pushvalue(L, 1);
		lua_pushnil(L);
	} else {
		lua_pushvalue(L, 1);
		lua_call(L, 1, 3);
	}
	return 3;
}

/* Replaces the table at the top with its view (engine-side). */
static void engine_wrap(lua_State *L, struct policy_engine *e)
{
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_rmt);
	lua_insert(L, -2);
	proxy_new(L, lua_absindex(L, -2));
	lua_remove(L, -2);
}

/* Marks the metatables of the environments (one per tenant, holding the
 * tenant's environment under this key) and of req's view. */
static const char ENV_KEY = 'e';

/* Whether the value at idx is a view or an environment. */
static int is_ours(lua_State *L, int idx, int rmt)
{
	int ours;

	if (!lua_getmetatable(L, idx))
		return 0;
	if (lua_rawequal(L, -1, rmt)) {
		lua_pop(L, 1);
		return 1;
	}
	ours = lua_rawgetp(L, -1, &ENV_KEY) != LUA_TNIL;
	lua_pop(L, 2);
	return ours;
}

/* If the value at idx is a view, replaces it with its table (engine-side). */
static void engine_unwrap(lua_State *L, struct policy_engine *e, int idx)
{
	idx = lua_absindex(L, idx);
	if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx))
		return;
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_rmt);
	if (lua_rawequal(L, -1, -2)) {
		lua_pop(L, 2);
		lua_rawgetp(L, idx, &REAL_KEY);
		lua_replace(L, idx);
		return;
	}
	lua_pop(L, 2);
}

/* ------------------------------------------------------ sandboxed globals */

/* Upvalue of the guards: 1 RMT. */
static void check_writable(lua_State *L, const char *fn)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	if (is_ours(L, 1, lua_upvalueindex(1)))
		luaL_error(L, "%s: the table is read-only", fn);
}

static int sb_rawset(lua_State *L)
{
	check_writable(L, "rawset");
	luaL_checkany(L, 2);
	luaL_checkany(L, 3);
	lua_settop(L, 3);
	lua_rawset(L, 1);
	return 1;
}

static int sb_rawget(lua_State *L)
{
	check_writable(L, "rawget");
	luaL_checkany(L, 2);
	lua_settop(L, 2);
	lua_rawget(L, 1);
	return 1;
}

/* setmetatable without __gc: a finalizer runs with hooks off, at any later
 * time, outside every budget. */
static int sb_setmetatable(lua_State *L)
{
	int t = lua_type(L, 2);

	luaL_checktype(L, 1, LUA_TTABLE);
	luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
	if (t == LUA_TTABLE) {
		lua_pushliteral(L, "__gc");
		if (lua_rawget(L, 2) != LUA_TNIL)
			return luaL_error(L, "__gc metamethods are not allowed in policies");
		lua_pop(L, 1);
	}
	if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL)
		return luaL_error(L, "cannot change a protected metatable");
	lua_settop(L, 2);
	lua_setmetatable(L, 1);
	return 1;
}

static int env_newindex(lua_State *L)
{
	if (lua_type(L, 2) == LUA_TSTRING)
		return luaL_error(L,
		                  "cannot set global '%s': globals cannot be created in a policy (use local)",
		                  lua_tostring(L, 2));
	return luaL_error(L, "globals cannot be created in a policy (use local)");
}

/* Pushes a fresh, empty environment reading through to the base. */
static void push_fresh_env(lua_State *L, int envmt)
{
	lua_createtable(L, 0, 0);
	lua_pushvalue(L, envmt);
	lua_setmetatable(L, -2);
}

/* load(chunk [, chunkname [, mode [, env]]]): text only, strings only, a
 * fresh sandboxed environment (the running tenant's) unless env is given. */
static int sb_load(lua_State *L)
{
	size_t len;
	const char *s;
	const char *name = luaL_optstring(L, 2, "load");
	const char *mode = luaL_optstring(L, 3, "bt");
	int status;

	if (lua_type(L, 1) != LUA_TSTRING)
		return luaL_argerror(L, 1, "string expected (reader functions are not supported)");
	s = lua_tolstring(L, 1, &len);
	if (!strchr(mode, 't')) {
		luaL_pushfail(L);
		lua_pushfstring(
		    L, "attempt to load a text chunk (mode is '%s'): binary chunks are not allowed", mode);
		return 2;
	}
	if (len > LOAD_MAX) {
		luaL_pushfail(L);
		lua_pushliteral(L, "chunk too large for load");
		return 2;
	}
	/* Compiling is work in C too (about 7 ns a byte here): one step per 4
	 * bytes of source. */
	charge(L, (long long)(len / 4) + 1, "load");
	lua_pushfstring(L, "=(%s)", name);
	status = luaL_loadbufferx(L, s, len, lua_tostring(L, -1), "t");
	if (status != LUA_OK) {
		luaL_pushfail(L);
		lua_insert(L, -2);
		return 2;
	}
	if (!lua_isnone(L, 4)) {
		lua_pushvalue(L, 4);
	} else {
		struct policy_engine *e = engine_of(L);
		lua_rawgeti(L, LUA_REGISTRYINDEX, e->envmts[e->cur]);
		push_fresh_env(L, lua_gettop(L));
		lua_remove(L, -2);
	}
	if (!lua_setupvalue(L, -2, 1))
		lua_pop(L, 1);
	return 1;
}

/*
 * How every function a policy (or a test file, or the configuration file:
 * policy_sandbox_run) can reach is bounded. "O(1)": constant work, or work
 * bounded by a small constant (a number's digits). "hooked": runs Lua code,
 * which the count hook sees. Lengths are read once; work is charged before
 * it is done; breaches of a hard cap are fatal even when caught.
 *
 * base  assert error getmetatable rawequal select type _VERSION: O(1).
 *       rawlen: O(log n). rawget rawset next: O(1) amortised (hash lookup).
 *       ipairs pairs: O(1) per step; __pairs/__index are hooked.
 *       tostring: O(1), or hooked __tostring. pcall xpcall: hooked (xpcall's
 *       handler runs as plain hooked Lua, see XPCALL_LUA).
 *       tonumber: sb_tonumber, 1 unit per 16 bytes of a string argument.
 *       setmetatable: O(1), no __gc. load: LOAD_MAX bytes, 1 unit per 4.
 *       require: runs a compiled module, hooked. print = broker.log.
 * string  len: O(1). rep: empty result answered at once (no C loop), else
 *       REP_MAX result, charged per 16 bytes and per repetition. byte,
 *       char, utf8.codepoint, utf8.char: ITEMS_MAX values, 1 unit each.
 *       format: estimated result FORMAT_MAX, charged per 16 bytes and per
 *       argument. sub lower upper reverse: 1 unit per 16 bytes. pack
 *       packsize unpack: 1 unit per 4 format bytes + per 16 data bytes
 *       (padding grows a buffer: the memory cap). find match gmatch gsub:
 *       pmatch.c, every matcher step and every byte scanned charged.
 * table  concat unpack: the length read once (one __len call, hooked) and
 *       passed as explicit bounds; ITEMS_MAX elements, charged per element
 *       (and per 16 separator bytes). insert remove sort: a table with a
 *       __len of its own is refused (the real functions read it again), so
 *       the charged raw length is the one used; ITEMS_MAX; sort charges
 *       n log n comparisons, each by the longest string when it compares in
 *       C. move: MOVE_MAX elements, charged per element. pack: O(arguments).
 * math   every function: O(1) (max/min: O(arguments)).
 * utf8   len offset: 1 unit per 16 bytes. codes: O(1) amortised per step.
 *       charpattern: a constant.
 * os     time clock: O(1).
 * broker duration: DURATION_MAX_INPUT bytes. log: LOG_MAX bytes, LOG_LINES
 *       lines per decision. cidr_match: list length read once, ITEMS_MAX,
 *       charged per entry. tiers data: read-only views, O(1) per read.
 * the VM itself  Concatenation and every string result: allocations of
 *       BIG_ALLOC or more look at the clock, none exceeds STRING_MAX or the
 *       memory cap. String comparison (<, <=: strcoll), equality of long
 *       strings, converting a string operand to a number, hashing a long
 *       string key: O(length) inside one instruction, unseen by any hook;
 *       bounded by STRING_MAX and by the finer hook (FINE_STEP) that any
 *       string of BIG_STRING or more switches on (big_string). Measured: a
 *       50 ms budget ends within 52 ms on every one of these loops
 *       (test_c_escapes_bounded). Arithmetic metamethods of strings are
 *       wrapped by sb_tonumber as well.
 * Not reachable: io, os.execute/getenv/..., debug, coroutine, package,
 *       string.dump, collectgarbage, dofile, loadfile, binary chunks, __gc.
 */

/*
 * Work inside C functions. No hook runs while a library function loops in
 * C, so each one that can do work out of proportion to the instructions
 * that called it is wrapped: the wrapper charges its work (elements touched,
 * 16 bytes copied or compared, one step of pattern matching) to the
 * decision's instruction budget before the call, and looks at the clock
 * every CHECK_EVERY units. A breach sets the host flag first and then
 * raises: a pcall in the policy may catch the error, but the decision is a
 * policy error whatever it returns.
 */

/* Records where (the innermost Lua function) and what stopped the decision. */
static void note_breach(struct policy_engine *e, lua_State *L, const char *what)
{
	lua_Debug ar;

	for (int level = 1; !e->where[0] && level < 8 && lua_getstack(L, level, &ar); level++)
		if (lua_getinfo(L, "Sl", &ar) && ar.currentline > 0)
			snprintf(e->where, sizeof(e->where), "%s:%d: ", ar.short_src, ar.currentline);
	if (!e->detail[0])
		snprintf(e->detail, sizeof(e->detail), "%s", what);
}

/* Charges units of C work; returns 0, or 1 once a budget is spent (the flag
 * is set). */
static int charge_units(lua_State *L, long long units, const char *what)
{
	struct policy_engine *e = engine_of(L);

	if (e->stop != STOP_NONE || e->mem_hit)
		return 1;
	e->steps += units;
	e->unchecked += units;
	if (e->steps > e->max_steps)
		e->stop = STOP_INSTRUCTIONS;
	else if (e->unchecked >= CHECK_EVERY && (e->unchecked = 0, deadline_passed(e)))
		e->stop = STOP_TIME;
	else
		return 0;
	note_breach(e, L, what);
	return 1;
}

/* Charges units, raising once a budget is spent. */
static void charge(lua_State *L, long long units, const char *what)
{
	if (charge_units(L, units, what))
		luaL_error(L, "%s: budget exceeded", what);
}

static int pattern_charge(lua_State *L, unsigned long steps)
{
	return charge_units(L, (long long)steps, "string pattern matching");
}

static const struct pmatch_budget pattern_budget = {pattern_charge};

/* Calls upvalue 1 (the real function) with every argument, returns all. */
static int pass_on(lua_State *L)
{
	int base = lua_gettop(L);

	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_call(L, base, LUA_MULTRET);
	return lua_gettop(L);
}

/* The count of i..j, 0 when empty. */
static long long span(lua_Integer i, lua_Integer j)
{
	if (j < i)
		return 0;
	if ((lua_Unsigned)j - (lua_Unsigned)i >= (lua_Unsigned)LLONG_MAX / 2)
		return LLONG_MAX / 2;
	return (long long)((lua_Unsigned)j - (lua_Unsigned)i) + 1;
}

/* Refuses a call over ITEMS_MAX elements (fatal), else charges n. */
static void charge_items(lua_State *L, long long n, const char *what)
{
	if (n > ITEMS_MAX) {
		struct policy_engine *e = engine_of(L);
		if (e->stop == STOP_NONE)
			e->stop = STOP_INSTRUCTIONS;
		note_breach(e, L, what);
		luaL_error(L, "%s: more than %d elements in one call", what, ITEMS_MAX);
	}
	charge(L, n, what);
}

/* string.rep with a bounded result. Upvalue 1: the real string.rep. */
static int sb_rep(lua_State *L)
{
	size_t l, lsep;
	lua_Integer n;

	luaL_checklstring(L, 1, &l);
	n = luaL_checkinteger(L, 2);
	luaL_optlstring(L, 3, "", &lsep);
	if (l + lsep == 0 || n <= 0) {
		/* Nothing to write: the real function would still loop n times
		 * (string.rep("", 2^40) ran for hours), so answer here. */
		lua_pushliteral(L, "");
		return 1;
	}
	if (n > 0 && (l + lsep) > 0 && (uint64_t)n > (uint64_t)(REP_MAX + lsep) / (l + lsep)) {
		struct policy_engine *e = engine_of(L);
		e->mem_hit = 1; /* a bomb: fatal even if the policy catches it */
		note_breach(e, L, "string.rep");
		return luaL_error(L, "string.rep: result larger than %d bytes", REP_MAX);
	}
	if (n > 0 && l + lsep > 0)
		charge(L, (long long)(((uint64_t)n * (l + lsep)) / 16) + n / 16 + 1, "string.rep");
	return pass_on(L);
}

/* table.move touching a bounded range: its loop runs in C, out of reach of
 * the count hook. Upvalue 1: the real table.move. */
static int sb_move(lua_State *L)
{
	lua_Integer f = luaL_checkinteger(L, 2);
	lua_Integer t = luaL_checkinteger(L, 3);

	if (t >= f && (lua_Unsigned)t - (lua_Unsigned)f >= MOVE_MAX) {
		struct policy_engine *e = engine_of(L);
		if (e->stop == STOP_NONE)
			e->stop = STOP_INSTRUCTIONS; /* fatal even if the policy catches it */
		note_breach(e, L, "table.move");
		return luaL_error(L, "table.move: more than %d elements", MOVE_MAX);
	}
	charge(L, span(f, t), "table.move");
	return pass_on(L);
}

static int swap_len(lua_State *L);

/*
 * The length of the list at 1, read once. The real table functions read it
 * again (luaL_len), so a __len answering 0 to the wrapper and 2^40 to the
 * real function got a loop of 2^40 steps in C for free. Where the real
 * function takes explicit bounds (concat, unpack) the wrapper passes the
 * length it charged; where it cannot (insert, remove, sort) a table with a
 * __len of its own is refused, so both reads see the raw length (the
 * sandbox's read-only views have a __len of the engine's: the raw length of
 * their table, the same on every read).
 */
static lua_Integer list_len(lua_State *L, int fixed, const char *what)
{
	if (!fixed && luaL_getmetafield(L, 1, "__len") != LUA_TNIL) {
		lua_CFunction f = lua_tocfunction(L, -1);
		lua_pop(L, 1);
		if (f != proxy_len && f != swap_len)
			luaL_error(L, "%s: tables with a __len metamethod are not supported in policies",
			           what);
	}
	return luaL_len(L, 1);
}

/* table.concat(list [, sep [, i [, j]]]) */
static int sb_concat(lua_State *L)
{
	size_t lsep = 0;
	lua_Integer i, j;

	luaL_checkany(L, 1);
	luaL_optlstring(L, 2, "", &lsep);
	i = luaL_optinteger(L, 3, 1);
	j = lua_isnoneornil(L, 4) ? list_len(L, 1, "table.concat") : luaL_checkinteger(L, 4);
	charge_items(L, span(i, j), "table.concat");
	charge(L, span(i, j) * (long long)(lsep / 16), "table.concat");
	lua_settop(L, 4);
	lua_pushinteger(L, j);
	lua_replace(L, 4);
	return pass_on(L);
}

/* table.unpack(list [, i [, j]]) */
static int sb_unpack(lua_State *L)
{
	lua_Integer i = luaL_optinteger(L, 2, 1);
	lua_Integer j = lua_isnoneornil(L, 3) ? list_len(L, 1, "table.unpack") : luaL_checkinteger(L, 3);

	charge_items(L, span(i, j), "table.unpack");
	lua_settop(L, 3);
	lua_pushinteger(L, j);
	lua_replace(L, 3);
	return pass_on(L);
}

/* table.sort(list [, comp]): n log n comparisons in C. Without comp, each
 * compares two values in C: strings byte by byte (strcoll), out of the
 * hook's reach, so each comparison is charged by the longest string. */
static int sb_sort(lua_State *L)
{
	lua_Integer n = list_len(L, 0, "table.sort");
	long long cost = n, per = 1;

	charge_items(L, n, "table.sort");
	if (lua_isnoneornil(L, 2)) {
		size_t longest = 0;
		for (lua_Integer k = 1; k <= n; k++) {
			if (lua_rawgeti(L, 1, k) == LUA_TSTRING) {
				size_t l;
				lua_tolstring(L, -1, &l);
				if (l > longest)
					longest = l;
			}
			lua_pop(L, 1);
		}
		per += (long long)(longest / 16);
	}
	for (lua_Integer k = n; k > 1; k >>= 1)
		cost += n;
	if (per > 1 && cost > (LLONG_MAX / 4) / per)
		cost = LLONG_MAX / 4;
	else
		cost *= per;
	charge(L, cost, "table.sort");
	return pass_on(L);
}

/* table.insert and table.remove shift up to #list elements in C. */
static int sb_shift(lua_State *L)
{
	lua_Integer n = list_len(L, 0, "table.insert/remove");

	charge_items(L, n < 0 ? 0 : n, "table.insert/remove");
	return pass_on(L);
}

/* tonumber(v [, base]) and the strings' arithmetic metamethods (which
 * convert their string operands): converting a string walks all of it. */
static int sb_tonumber(lua_State *L)
{
	long long units = 1;

	for (int i = 1; i <= 2; i++) {
		if (lua_type(L, i) == LUA_TSTRING) {
			size_t l;
			lua_tolstring(L, i, &l);
			units += (long long)(l / 16);
		}
	}
	charge(L, units, "string to number");
	return pass_on(L);
}

/* string.byte(s [, i [, j]]) and utf8.codepoint(s [, i [, j]]): one value
 * per byte on the stack. */
static int sb_bytes(lua_State *L)
{
	size_t l;
	lua_Integer i, j;

	luaL_checklstring(L, 1, &l);
	i = luaL_optinteger(L, 2, 1);
	j = luaL_optinteger(L, 3, i);
	if (i < 0)
		i = (lua_Integer)l + i + 1;
	if (j < 0)
		j = (lua_Integer)l + j + 1;
	charge_items(L, span(i < 1 ? 1 : i, j > (lua_Integer)l ? (lua_Integer)l : j), "string.byte");
	return pass_on(L);
}

/* string.char(...) and utf8.char(...): one step per argument. */
static int sb_chars(lua_State *L)
{
	charge_items(L, lua_gettop(L), "string.char/utf8.char");
	return pass_on(L);
}

/* string.reverse, lower, upper, sub: one step per 16 bytes. */
static int sb_copy(lua_State *L)
{
	size_t l;

	luaL_checklstring(L, 1, &l);
	charge(L, (long long)(l / 16) + 1, "string copy");
	return pass_on(L);
}

/* utf8.len and utf8.offset, which walk their string: one step per 16 bytes. */
static int sb_walk(lua_State *L)
{
	size_t l;

	luaL_checklstring(L, 1, &l);
	charge(L, (long long)(l / 16) + 1, "utf8 walk");
	return pass_on(L);
}

/* string.pack, packsize and unpack: they loop over their format in C (and
 * unpack over its data): one step per 4 format bytes, plus one per 16 data
 * bytes. */
static int sb_pack(lua_State *L)
{
	size_t fl, dl = 0;

	luaL_checklstring(L, 1, &fl);
	if (lua_type(L, 2) == LUA_TSTRING)
		lua_tolstring(L, 2, &dl);
	charge(L, (long long)(fl / 4) + (long long)(dl / 16) + 1, "string.pack/unpack");
	return pass_on(L);
}

/* string.format with an estimated result of at most FORMAT_MAX bytes: a
 * conversion yields at most 99 digits of width and 99 of precision (Lua's
 * own limit) or a few hundred for %f of a huge number; %q at most 4 bytes
 * per byte of its string. */
static int sb_format(lua_State *L)
{
	int n = lua_gettop(L);
	size_t lfmt, est;

	luaL_checklstring(L, 1, &lfmt);
	est = lfmt;
	for (int i = 2; i <= n; i++) {
		size_t l = 0;
		if (lua_type(L, i) == LUA_TSTRING)
			lua_tolstring(L, i, &l);
		est += 4 * l + 512;
	}
	if (est > FORMAT_MAX) {
		struct policy_engine *e = engine_of(L);
		e->mem_hit = 1;
		note_breach(e, L, "string.format");
		return luaL_error(L, "string.format: result may be larger than %d bytes", FORMAT_MAX);
	}
	charge_items(L, n, "string.format");
	charge(L, (long long)(est / 16), "string.format");
	return pass_on(L);
}

static int broker_duration(lua_State *L)
{
	size_t len;
	const char *s;
	long long secs;

	if (lua_type(L, 1) != LUA_TSTRING)
		return luaL_error(L, "broker.duration: expected a string like \"1h\", got %s",
		                  luaL_typename(L, 1));
	s = lua_tolstring(L, 1, &len);
	if (duration_parse(s, len, &secs) != 0)
		return luaL_error(L, "broker.duration: invalid duration \"%s\"", s);
	lua_pushinteger(L, (lua_Integer)secs);
	return 1;
}

/* The length (1 to 4) of the well-formed UTF-8 character at s (len > 0
 * bytes), or 0 when it is not one (a stray or missing continuation byte, an
 * overlong form, a surrogate, beyond U+10FFFF): RFC 3629's table. */
static size_t utf8_char_len(const unsigned char *s, size_t len)
{
	unsigned c = s[0];
	size_t n;
	unsigned lo = 0x80, hi = 0xbf;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		n = 2;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4;
	else
		return 0;
	if (len < n)
		return 0;
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return n;
}

/*
 * Appends s (len bytes) to dst (used bytes of cap, a NUL kept room for) as
 * valid UTF-8: each byte that does not start a well-formed character
 * becomes U+FFFD, a character that does not fit whole is left out (never
 * cut), and when flat, line breaks and NULs become spaces. Returns the new
 * used count. What a policy returns or logs reaches JSON log lines and
 * response bodies, which must be UTF-8.
 */
static size_t utf8_append(char *dst, size_t used, size_t cap, const char *s, size_t len, int flat)
{
	const unsigned char *p = (const unsigned char *)s;

	for (size_t i = 0; i < len;) {
		size_t n = utf8_char_len(p + i, len - i);
		size_t w = n ? n : 3;
		if (used + w >= cap)
			break;
		if (!n) {
			memcpy(dst + used, "\xef\xbf\xbd", 3);
			i++;
		} else if (flat && n == 1 && (p[i] == '\n' || p[i] == '\r' || p[i] == '\0')) {
			dst[used] = ' ';
			i++;
		} else {
			memcpy(dst + used, p + i, n);
			i += n;
		}
		used += w;
	}
	dst[used] = '\0';
	return used;
}

/* broker.log(...) and print(...): one line per call, its arguments joined
 * by spaces with line breaks turned into spaces, invalid UTF-8 replaced
 * (utf8_append), kept for the last decision (policy_decision_log): at most
 * LOG_LINES lines and LOG_MAX bytes. */
static int broker_log(lua_State *L)
{
	struct policy_engine *e = engine_of(L);
	int n = lua_gettop(L);

	if (e->log_lines >= LOG_LINES)
		return 0;
	for (int i = 1; i <= n; i++) {
		size_t len;
		const char *s = luaL_tolstring(L, i, &len);
		size_t room = sizeof(e->log) - e->log_len;
		if (room > 3) {
			if (i > 1)
				e->log[e->log_len++] = ' ';
			e->log_len = utf8_append(e->log, e->log_len, sizeof(e->log) - 2, s, len, 1);
		}
		lua_pop(L, 1);
	}
	if (e->log_len < sizeof(e->log) - 1) {
		e->log[e->log_len++] = '\n';
		e->log_lines++;
	}
	e->log[e->log_len < sizeof(e->log) ? e->log_len : sizeof(e->log) - 1] = '\0';
	return 0;
}

/* An address as 16 bytes, IPv4 as IPv4-mapped IPv6; 0 or -1. */
static int parse_ip(const char *s, size_t len, unsigned char out[16], int *v4)
{
	struct in_addr a4;
	struct in6_addr a6;

	if (len == 0 || len > INET6_ADDRSTRLEN || strlen(s) != len)
		return -1;
	if (inet_pton(AF_INET, s, &a4) == 1) {
		memset(out, 0, 10);
		out[10] = out[11] = 0xff;
		memcpy(out + 12, &a4, 4);
		*v4 = 1;
		return 0;
	}
	if (inet_pton(AF_INET6, s, &a6) == 1) {
		memcpy(out, &a6, 16);
		*v4 = 0;
		return 0;
	}
	return -1;
}

/* Whether ip (16 bytes) is in the CIDR at index idx; raises on a malformed
 * CIDR: that is a mistake in the policy, not in the request. */
static int in_cidr(lua_State *L, const unsigned char ip[16], int idx)
{
	size_t len;
	const char *c = lua_tolstring(L, idx, &len);
	const char *slash = c ? memchr(c, '/', len) : NULL;
	char addr[INET6_ADDRSTRLEN + 1];
	unsigned char net[16];
	size_t alen = slash ? (size_t)(slash - c) : len;
	long bits = -1;
	int v4;

	if (!c || alen > INET6_ADDRSTRLEN)
		goto bad;
	memcpy(addr, c, alen);
	addr[alen] = '\0';
	if (parse_ip(addr, alen, net, &v4) != 0)
		goto bad;
	if (slash) {
		char *end;
		if (slash[1] < '0' || slash[1] > '9' || len - alen > 4)
			goto bad;
		bits = strtol(slash + 1, &end, 10);
		if (*end || bits > (v4 ? 32 : 128))
			goto bad;
	} else {
		bits = v4 ? 32 : 128;
	}
	if (v4)
		bits += 96;
	for (long i = 0; i < bits / 8; i++)
		if (ip[i] != net[i])
			return 0;
	if (bits % 8) {
		unsigned char mask = (unsigned char)(0xff << (8 - bits % 8));
		if ((ip[bits / 8] & mask) != (net[bits / 8] & mask))
			return 0;
	}
	return 1;
bad:
	return luaL_error(
	    L, "broker.cidr_match: \"%s\" is not a CIDR such as \"10.0.0.0/8\" or \"2001:db8::/32\"",
	    c ? c : luaL_typename(L, idx));
}

/* broker.cidr_match(ip, cidr or list of cidrs): false for an ip that is not
 * an address (request data); an error for a malformed CIDR (policy data). */
static int broker_cidr_match(lua_State *L)
{
	unsigned char ip[16];
	size_t len;
	const char *s;
	int v4, found = 0;

	if (lua_type(L, 2) != LUA_TSTRING && lua_type(L, 2) != LUA_TTABLE)
		return luaL_error(L, "broker.cidr_match: expected a CIDR string or a list of them, got %s",
		                  luaL_typename(L, 2));
	s = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &len) : NULL;
	if (!s || parse_ip(s, len, ip, &v4) != 0) {
		lua_pushboolean(L, 0);
		return 1;
	}
	if (lua_type(L, 2) == LUA_TSTRING) {
		found = in_cidr(L, ip, 2);
	} else {
		lua_Integer n = luaL_len(L, 2);
		charge_items(L, n, "broker.cidr_match");
		for (lua_Integer i = 1; i <= n && !found; i++) {
			lua_geti(L, 2, i);
			if (lua_type(L, -1) != LUA_TSTRING)
				return luaL_error(
				    L, "broker.cidr_match: entry %d of the list is not a string", (int)i);
			found = in_cidr(L, ip, lua_gettop(L));
			lua_pop(L, 1);
		}
	}
	lua_pushboolean(L, found);
	return 1;
}

/* ------------------------------------------------------------- require */

static const char LOADING = 'l'; /* loaded[name] while the module runs */

/* Names require refuses even when such a file sits beside the policy: a
 * policy asking for one of these expects the real library. */
static const char *const reserved_modules[] = {"os",     "io",    "debug", "package", "coroutine",
                                               "string", "table", "math",  "utf8",    "_G",
                                               "ffi",    "jit",   "cjson", NULL};

static int require_done(lua_State *L, int status, lua_KContext ctx)
{
	(void)status;
	(void)ctx;
	/* 1 name, 2 loaded, 3 the module's result */
	if (lua_isnil(L, 3)) {
		lua_pushboolean(L, 1);
		lua_replace(L, 3);
	}
	lua_pushvalue(L, 3);
	lua_setfield(L, 2, lua_tostring(L, 1));
	return 1;
}

/*
 * require(name): NAME.lua beside the tenant's policy, compiled (text only)
 * when the engine was built, run once per decision in a fresh environment
 * of the sandbox and cached for the rest of that decision only. No file is
 * read here: config.c read the folder at load. Upvalue 1: tenant index.
 */
static int sb_require(lua_State *L)
{
	struct policy_engine *e = engine_of(L);
	size_t len;
	const char *name = luaL_checklstring(L, 1, &len);
	size_t ti = (size_t)lua_tointeger(L, lua_upvalueindex(1));
	int ok = len > 0 && len <= 64;

	for (size_t i = 0; ok && i < len; i++)
		ok = (name[i] >= 'a' && name[i] <= 'z') || (name[i] >= 'A' && name[i] <= 'Z') ||
		     (name[i] >= '0' && name[i] <= '9') || name[i] == '_';
	if (!ok)
		return luaL_error(L,
		                  "require: \"%s\" is not a module name ([A-Za-z0-9_], a file NAME.lua "
		                  "beside the policy)",
		                  name);
	for (const char *const *lib = reserved_modules; *lib; lib++)
		if (strcmp(name, *lib) == 0)
			return luaL_error(
			    L, "require: '%s' is a standard library: policies have no %s module", name, name);
	lua_settop(L, 1);
	if (!e->loaded_valid) {
		lua_createtable(L, 0, 4);
		lua_rawseti(L, LUA_REGISTRYINDEX, e->ref_loaded);
		e->loaded_valid = 1;
	}
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_loaded);
	if (lua_getfield(L, 2, name) != LUA_TNIL) {
		if (lua_touserdata(L, -1) == &LOADING)
			return luaL_error(L, "require: module '%s' requires itself (a loop)", name);
		return 1;
	}
	lua_pop(L, 1);
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->mods[ti]);
	if (lua_getfield(L, -1, name) != LUA_TFUNCTION)
		return luaL_error(L, "require: no module '%s' beside the policy", name);
	lua_remove(L, -2);
	lua_pushlightuserdata(L, (void *)&LOADING);
	lua_setfield(L, 2, name);
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->envmts[ti]);
	push_fresh_env(L, lua_gettop(L));
	lua_remove(L, -2);
	lua_setupvalue(L, -2, 1);
	lua_pushvalue(L, 1);
	lua_callk(L, 1, 1, 0, require_done);
	return require_done(L, LUA_OK, 0);
}

/*
 * xpcall without a message handler in C's sense: Lua runs a message handler
 * with hooks off when the error comes from a hook (a spent budget where a
 * yield is impossible), so a looping handler would escape every budget. This
 * one unwinds first (pcall) and then calls the handler as plain, hooked Lua.
 * Without the debug library a handler could not use the unwound stack anyway.
 */
static const char XPCALL_LUA[] = "local pcall, type, error = ...\n"
                                 "local function finish(h, ok, ...)\n"
                                 "  if ok then return true, ... end\n"
                                 "  return false, (h((...)))\n"
                                 "end\n"
                                 "return function(f, h, ...)\n"
                                 "  if type(h) ~= 'function' then\n"
                                 "    error(\"bad argument #2 to 'xpcall' (function expected)\", 2)\n"
                                 "  end\n"
                                 "  return finish(h, pcall(f, ...))\n"
                                 "end\n";

/* Pushes the sandbox's xpcall, built from the base library at g. */
static void push_xpcall(lua_State *L, int g)
{
	if (luaL_loadbufferx(L, XPCALL_LUA, sizeof(XPCALL_LUA) - 1, "=xpcall", "t") != LUA_OK)
		lua_error(L);
	lua_pushnil(L);
	lua_setupvalue(L, -2, 1); /* no _ENV: it uses only what it is given */
	lua_getfield(L, g, "pcall");
	lua_getfield(L, g, "type");
	lua_getfield(L, g, "error");
	lua_call(L, 3, 1);
}

/* Copies the named fields of the table at src into the table at the top;
 * a NULL-terminated list. */
static void copy_fields(lua_State *L, int src, const char *const *names)
{
	for (; *names; names++) {
		lua_getfield(L, src, *names);
		lua_setfield(L, -2, *names);
	}
}

struct wrap {
	const char *name;
	lua_CFunction fn; /* called with the real function as upvalue 1 */
};

/* Sets each wrapped function of the table at src into the table at the top. */
static void wrap_fields(lua_State *L, int src, const struct wrap *w)
{
	for (; w->name; w++) {
		lua_getfield(L, src, w->name);
		lua_pushcclosure(L, w->fn, 1);
		lua_setfield(L, -2, w->name);
	}
}

static void push_tier(lua_State *L, const char *name)
{
	const char *const *list = scope_tier(name);
	int i = 0;

	lua_createtable(L, 8, 0);
	for (; list && list[i]; i++) {
		lua_pushstring(L, list[i]);
		lua_rawseti(L, -2, i + 1);
	}
}

static int swap_pairs(lua_State *L);
static int swap_len(lua_State *L);

/*
 * Replaces the table at the top, the real req or req.identity, with its
 * view: an empty table whose metatable has the real table as __index, so
 * the VM reads its fields without a C call (the tables it holds are views
 * already). A policy cannot write, rawset, rawget, next or getmetatable
 * the view; only swap_next lists it, and only these views. Both views and
 * their real tables are made once per engine: the views have no entries
 * and no policy can give them any, their metatables are out of reach, and
 * fill_req writes every field of the real tables before each decision, so
 * nothing passes from one decision to the next through them. rmt: RMT's
 * absolute index.
 */
static void swap_view_new(lua_State *L, int rmt)
{
	int real = lua_gettop(L);

	lua_createtable(L, 0, 0);
	lua_createtable(L, 0, 8);
	lua_pushvalue(L, real);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, proxy_newindex);
	lua_setfield(L, -2, "__newindex");
	lua_pushcfunction(L, swap_len);
	lua_setfield(L, -2, "__len");
	lua_pushvalue(L, rmt);
	lua_pushcclosure(L, swap_pairs, 1);
	lua_setfield(L, -2, "__pairs");
	lua_pushboolean(L, 0);
	lua_setfield(L, -2, "__metatable");
	lua_pushboolean(L, 1);
	lua_rawsetp(L, -2, &ENV_KEY); /* ours: rawset and rawget refuse it */
	lua_pushboolean(L, 1);
	lua_rawsetp(L, -2, &VIEW_KEY);
	lua_pushboolean(L, 1);
	lua_rawsetp(L, -2, &SWAP_KEY);
	lua_setmetatable(L, -2);
	lua_replace(L, real);
}

/*
 * Builds the sandbox on a fresh state: the shared proxy pieces, the base
 * environment (registry ref_base), the protected string
 * metatable. Runs protected; upvalue-free, the engine comes from extraspace.
 */
static int setup_protected(lua_State *L)
{
	struct policy_engine *e = engine_of(L);
	static const char *const base_names[] = {"assert",   "error",    "ipairs",       "pcall",
	                                         "rawequal", "rawlen",   "select",       "tostring",
	                                         "type",     "_VERSION", "getmetatable", NULL};
	static const char *const string_arith[] = {"__add", "__sub",  "__mul", "__mod", "__pow",
	                                           "__div", "__idiv", "__unm", NULL};
	static const char *const string_names[] = {"len", NULL};
	static const struct wrap string_wraps[] = {
	    {"rep", sb_rep},      {"byte", sb_bytes},    {"char", sb_chars},  {"format", sb_format},
	    {"reverse", sb_copy}, {"lower", sb_copy},    {"upper", sb_copy},  {"sub", sb_copy},
	    {"pack", sb_pack},    {"packsize", sb_pack}, {"unpack", sb_pack}, {NULL, NULL}};
	static const char *const table_names[] = {"pack", NULL};
	static const struct wrap table_wraps[] = {
	    {"concat", sb_concat}, {"unpack", sb_unpack}, {"sort", sb_sort}, {"insert", sb_shift},
	    {"remove", sb_shift},  {"move", sb_move},     {NULL, NULL}};
	static const struct wrap utf8_wraps[] = {
	    {"char", sb_chars}, {"codepoint", sb_bytes}, {"len", sb_walk}, {"offset", sb_walk}, {NULL, NULL}};
	static const char *const math_names[] = {
	    "abs",  "ceil",       "cos",       "deg",        "exp",  "floor", "fmod", "huge",   "log",
	    "max",  "maxinteger", "min",       "mininteger", "modf", "pi",    "rad",  "random", "sin",
	    "sqrt", "tan",        "tointeger", "type",       "ult",  "acos",  "asin", "atan",   NULL};
	static const char *const utf8_names[] = {"charpattern", "codes", NULL};
	static const char *const file_names[] = {
	    "assert",   "error",  "ipairs", "next",     "pairs",    "pcall", "rawequal", "rawget",
	    "rawlen",   "rawset", "select", "tonumber", "tostring", "type",  "xpcall",   "getmetatable",
	    "_VERSION", "string", "table",  "math",     "utf8",     NULL};
	static const char *const os_names[] = {"time", "clock", NULL};
	int g, rmt, base, str;

	luaL_requiref(L, "_G", luaopen_base, 0);
	g = lua_gettop(L);
	luaL_requiref(L, "string", luaopen_string, 0);
	luaL_requiref(L, "table", luaopen_table, 0);
	luaL_requiref(L, "math", luaopen_math, 0);
	luaL_requiref(L, "utf8", luaopen_utf8, 0);
	luaL_requiref(L, "os", luaopen_os, 0);
	/* stack: _G string table math utf8 os at g .. g+5 */

	if (json_open(L) != 0)
		return luaL_error(L, "cannot load cjson");

	/* The views' metatable. */
	lua_createtable(L, 0, 5);
	rmt = lua_gettop(L);
	lua_pushvalue(L, rmt);
	lua_pushcclosure(L, proxy_index, 1);
	lua_setfield(L, rmt, "__index");
	lua_pushcfunction(L, proxy_newindex);
	lua_setfield(L, rmt, "__newindex");
	lua_pushcfunction(L, proxy_len);
	lua_setfield(L, rmt, "__len");
	lua_pushvalue(L, rmt);
	lua_pushcclosure(L, proxy_pairs, 1);
	lua_setfield(L, rmt, "__pairs");
	lua_pushboolean(L, 0);
	lua_setfield(L, rmt, "__metatable");
	lua_pushboolean(L, 1);
	lua_rawsetp(L, rmt, &VIEW_KEY);
	lua_pushvalue(L, rmt);
	e->ref_rmt = luaL_ref(L, LUA_REGISTRYINDEX);

	/* The real tables of req and req.identity (see fill_req) and their
	 * views (see swap_view_new). The real req's own metatable builds
	 * body, client and headers on demand. */
	lua_createtable(L, 0, 4);
	lua_pushvalue(L, -1);
	e->ref_idreal = luaL_ref(L, LUA_REGISTRYINDEX);
	swap_view_new(L, rmt);
	e->ref_idview = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_createtable(L, 0, REQ_FIELDS);
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_idview);
	lua_setfield(L, -2, "identity");
	lua_createtable(L, 0, 1);
	lua_pushvalue(L, rmt);
	lua_pushcclosure(L, req_lazy, 1);
	lua_setfield(L, -2, "__index");
	lua_setmetatable(L, -2);
	lua_pushvalue(L, -1);
	e->ref_reqreal = luaL_ref(L, LUA_REGISTRYINDEX);
	swap_view_new(L, rmt);
	e->ref_reqview = luaL_ref(L, LUA_REGISTRYINDEX);

	/* The base every tenant's environment reads through to (tenant_setup
	 * builds each tenant's environment metatable on it). */
	lua_createtable(L, 0, 32);
	base = lua_gettop(L);
	lua_pushvalue(L, base);
	e->ref_base = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_pushboolean(L, 0);
	e->ref_loaded = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_newtable(L);
	e->ref_modcache = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_pushboolean(L, 0);
	e->ref_body = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_createtable(L, K_END - 1, 0);
	for (int k = 1; k < K_END; k++) {
		lua_pushstring(L, key_names[k]);
		lua_rawseti(L, -2, k);
	}
	for (int i = 0; i < DECISION_FIELDS; i++) {
		lua_rawgeti(L, -1, decision_keys[i]);
		e->field_names[i] = lua_tostring(L, -1); /* kept alive by ref_keys */
		lua_pop(L, 1);
	}
	e->ref_keys = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_createtable(L, 0, 0);
	e->ref_noclaims = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_pushboolean(L, 0);
	e->ref_claims = luaL_ref(L, LUA_REGISTRYINDEX);
	claims_view_new(L, e, rmt);

	lua_pushvalue(L, base);
	copy_fields(L, g, base_names);
	lua_getfield(L, g, "tonumber");
	lua_pushcclosure(L, sb_tonumber, 1);
	lua_setfield(L, base, "tonumber");
	lua_pushvalue(L, rmt);
	lua_pushcclosure(L, sb_rawset, 1);
	lua_setfield(L, base, "rawset");
	lua_pushvalue(L, rmt);
	lua_pushcclosure(L, sb_rawget, 1);
	lua_setfield(L, base, "rawget");
	lua_pushcfunction(L, sb_setmetatable);
	lua_setfield(L, base, "setmetatable");
	lua_pushcfunction(L, sb_load);
	lua_setfield(L, base, "load");
	lua_pushcfunction(L, broker_log);
	lua_setfield(L, base, "print");
	push_xpcall(L, g);
	lua_setfield(L, base, "xpcall");
	lua_pushcfunction(L, sb_next);
	lua_setfield(L, base, "next");
	lua_pushcfunction(L, sb_pairs);
	lua_setfield(L, base, "pairs");
	lua_pop(L, 1);

	/* string: the sandbox's copy, also the strings' __index. */
	lua_createtable(L, 0, 20);
	str = lua_gettop(L);
	copy_fields(L, g + 1, string_names);
	wrap_fields(L, g + 1, string_wraps);
	pmatch_register(L, str, &pattern_budget);
	lua_pushliteral(L, "");
	if (!lua_getmetatable(L, -1))
		return luaL_error(L, "strings have no metatable");
	lua_pushvalue(L, str);
	lua_setfield(L, -2, "__index");
	lua_pushboolean(L, 0);
	lua_setfield(L, -2, "__metatable");
	for (const char *const *mm = string_arith; *mm; mm++) {
		if (lua_getfield(L, -1, *mm) == LUA_TNIL) {
			lua_pop(L, 1);
			continue;
		}
		lua_pushcclosure(L, sb_tonumber, 1);
		lua_setfield(L, -2, *mm);
	}
	lua_pop(L, 2);
	lua_pushvalue(L, str);
	engine_wrap(L, e);
	lua_setfield(L, base, "string");
	lua_pop(L, 1);

	lua_createtable(L, 0, 8);
	copy_fields(L, g + 2, table_names);
	wrap_fields(L, g + 2, table_wraps);
	engine_wrap(L, e);
	lua_setfield(L, base, "table");

	lua_createtable(L, 0, 32);
	copy_fields(L, g + 3, math_names);
	engine_wrap(L, e);
	lua_setfield(L, base, "math");

	lua_createtable(L, 0, 8);
	copy_fields(L, g + 4, utf8_names);
	wrap_fields(L, g + 4, utf8_wraps);
	engine_wrap(L, e);
	lua_setfield(L, base, "utf8");

	lua_createtable(L, 0, 2);
	copy_fields(L, g + 5, os_names);
	engine_wrap(L, e);
	lua_setfield(L, base, "os");

	/* broker */
	lua_createtable(L, 0, 3);
	lua_createtable(L, 0, 3);
	push_tier(L, "inbox");
	lua_setfield(L, -2, "inbox");
	push_tier(L, "preferences");
	lua_setfield(L, -2, "preferences");
	push_tier(L, "push");
	lua_setfield(L, -2, "push");
	lua_setfield(L, -2, "tiers");
	lua_pushcfunction(L, broker_duration);
	lua_setfield(L, -2, "duration");
	lua_pushcfunction(L, broker_log);
	lua_setfield(L, -2, "log");
	lua_pushcfunction(L, broker_cidr_match);
	lua_setfield(L, -2, "cidr_match");
	lua_pushvalue(L, -1);
	e->ref_broker = luaL_ref(L, LUA_REGISTRYINDEX);
	engine_wrap(L, e);
	lua_setfield(L, base, "broker");

	/* Nothing outside the sandbox may keep the os and io-free libraries'
	 * full tables reachable by name. */
	lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
	lua_pushnil(L);
	lua_setfield(L, -2, "os");
	lua_pop(L, 1);
	lua_pushnil(L);
	lua_setfield(L, g, "os");

	/* What a file that is not a policy sees (policy_sandbox_run): the same
	 * functions and charged libraries, without load, require, print,
	 * setmetatable and broker. */
	lua_createtable(L, 0, 24);
	for (const char *const *n = file_names; *n; n++) {
		lua_getfield(L, base, *n);
		lua_setfield(L, -2, *n);
	}
	e->ref_filebase = luaL_ref(L, LUA_REGISTRYINDEX);

	/* The thread policies run on. */
	e->co = lua_newthread(L);
	e->ref_co = luaL_ref(L, LUA_REGISTRYINDEX);
	return 0;
}

/* Replaces co with a new thread (protected: it allocates). */
static int new_co_protected(lua_State *L)
{
	struct policy_engine *e = engine_of(L);
	lua_State *co = lua_newthread(L);
	int ref = luaL_ref(L, LUA_REGISTRYINDEX);

	luaL_unref(L, LUA_REGISTRYINDEX, e->ref_co);
	e->co = co;
	e->ref_co = ref;
	return 0;
}

/* ------------------------------------------------------------ running */

/* Copies the error on top of co (after a failed resume) into err. */
static void resume_error(struct policy_engine *e, int status, char *err, size_t errlen)
{
	lua_State *co = e->co;

	if (status == LUA_ERRMEM) {
		snprintf(err, errlen, "%smemory cap exceeded (%zu bytes)", e->where, e->lim.max_memory_bytes);
	} else if (lua_type(co, -1) == LUA_TSTRING) {
		snprintf(err, errlen, "%s", lua_tostring(co, -1));
	} else {
		snprintf(err, errlen, "policy raised a non-string error (%s)", luaL_typename(co, -1));
	}
}

/* Appends where co stopped, innermost first: up to TRACE_FRAMES Lua frames,
 * for the log only (a failed resume leaves co's stack in place). */
static void append_traceback(struct policy_engine *e, char *err, size_t errlen)
{
	lua_Debug ar;
	size_t len = strlen(err);
	int shown = 0;

	for (int level = 0; shown < TRACE_FRAMES && lua_getstack(e->co, level, &ar); level++) {
		int n;
		if (!lua_getinfo(e->co, "Sln", &ar) || ar.currentline <= 0)
			continue;
		if (len + 1 >= errlen)
			break;
		if (ar.name)
			n = snprintf(err + len, errlen - len, "%s%s:%d in %s",
			             shown ? "; " : " [traceback: ", ar.short_src, ar.currentline, ar.name);
		else if (ar.what && strcmp(ar.what, "main") == 0)
			n = snprintf(err + len, errlen - len, "%s%s:%d in main chunk",
			             shown ? "; " : " [traceback: ", ar.short_src, ar.currentline);
		else
			n = snprintf(err + len, errlen - len, "%s%s:%d in function <line %d>",
			             shown ? "; " : " [traceback: ", ar.short_src, ar.currentline,
			             ar.linedefined);
		if (n < 0 || (size_t)n >= errlen - len) {
			len = errlen - 1;
			break;
		}
		len += (size_t)n;
		shown++;
	}
	if (shown && len + 2 < errlen) {
		err[len++] = ']';
		err[len] = '\0';
	}
}

/*
 * Resumes co with the function and nargs arguments already on it. Returns 0
 * with exactly one result left on co, or -1 with err set. *dirty tells the
 * caller co must be reset before its next use. last: whether this is the
 * decision's last run; a run that succeeds and is not the last leaves the
 * clock to the last one (a clock reading is a good part of a small
 * decision), which fails the decision all the same. RUN_OPTIONAL in last:
 * returning nothing is a nil result (a configuration file), not an error.
 */
#define RUN_LAST     1
#define RUN_OPTIONAL 2
static int run(struct policy_engine *e, int nargs, int last, const char *what, char *err, size_t errlen,
               int *dirty)
{
	lua_State *co = e->co;
	int nres = 0;
	int status = lua_resume(co, e->L, nargs, &nres);

	if (status != LUA_OK) {
		lua_Debug ar;
		*dirty = 1;
		/* Where a budget ran out, when neither the hook nor a guard said
		 * (a plain error names its own line). */
		for (int level = 0; (e->mem_hit || status == LUA_ERRMEM) && !e->where[0] && level < 8 &&
		                    lua_getstack(co, level, &ar);
		     level++)
			if (lua_getinfo(co, "Sl", &ar) && ar.currentline > 0)
				snprintf(e->where, sizeof(e->where), "%s:%d: ", ar.short_src, ar.currentline);
	}
	if (budget_spent(e, (last & RUN_LAST) || status != LUA_OK, err, errlen)) {
		append_traceback(e, err, errlen);
		return -1;
	}
	if (status == LUA_YIELD) {
		snprintf(err, errlen, "%s: the policy yielded", what);
		return -1;
	}
	if (status != LUA_OK) {
		resume_error(e, status, err, errlen);
		append_traceback(e, err, errlen);
		return -1;
	}
	if (nres < 1 && (last & RUN_OPTIONAL) && lua_checkstack(co, 1)) {
		lua_pushnil(co);
		nres = 1;
	}
	if (nres < 1) {
		snprintf(err, errlen, "%s returned nothing", what);
		return -1;
	}
	lua_pop(co, nres - 1);
	return 0;
}

/* Puts the compiled chunk of tenant i on co (its _ENV is the tenant's
 * environment since compile_protected: nothing else ever holds the chunk). */
static void push_chunk(struct policy_engine *e, size_t i)
{
	e->cur = i;
	lua_rawgeti(e->co, LUA_REGISTRYINDEX, e->chunks[i]);
}

/* ------------------------------------------------------------- decisions */

static int bad(char *err, size_t errlen, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Writes "path: invalid decision: ..." into err; returns -1. */
static int bad(char *err, size_t errlen, const char *path, const char *fmt, ...)
{
	char msg[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(err, errlen, "%s: invalid decision: %s", path, msg);
	return -1;
}

static int check_scopes(lua_State *L, struct policy_engine *e, int v, struct decision *out, const char *path,
                        char *err, size_t errlen)
{
	lua_Integer n;
	int count = 0;

	engine_unwrap(L, e, v);
	if (lua_type(L, v) != LUA_TTABLE)
		return bad(err, errlen, path, "scopes must be a list of strings, got %s",
		           luaL_typename(L, v));
	n = (lua_Integer)lua_rawlen(L, v);
	lua_pushnil(L);
	while (lua_next(L, v)) {
		lua_pop(L, 1);
		if (++count > DECISION_MAX_SCOPES) {
			lua_pop(L, 1);
			break;
		}
	}
	if (count > DECISION_MAX_SCOPES || n > DECISION_MAX_SCOPES)
		return bad(err, errlen, path, "scopes has more than %d entries", DECISION_MAX_SCOPES);
	if (n < 1 || count != n)
		return bad(err, errlen, path, "scopes must be a list of 1 to %d strings without holes",
		           DECISION_MAX_SCOPES);
	for (lua_Integer i = 1; i <= n; i++) {
		size_t len;
		const char *s;
		if (lua_rawgeti(L, v, i) != LUA_TSTRING)
			return bad(err, errlen, path, "scopes entries must be strings, got %s",
			           luaL_typename(L, -1));
		s = lua_tolstring(L, -1, &len);
		if (len == 0 || envelope_add_scope(out, s, len) != 0)
			return bad(err, errlen, path, "scope \"%s\" is empty, too long or holds a NUL byte",
			           s);
		lua_pop(L, 1);
	}
	return 0;
}

static int check_tier(lua_State *L, int v, struct decision *out, const char *path, char *err, size_t errlen)
{
	size_t len;
	const char *s;
	const char *const *list;

	if (lua_type(L, v) != LUA_TSTRING)
		return bad(err, errlen, path, "tier must be a string, got %s", luaL_typename(L, v));
	s = lua_tolstring(L, v, &len);
	list = strlen(s) == len ? scope_tier(s) : NULL;
	if (!list)
		return bad(err, errlen, path, "unknown tier \"%s\" (inbox, preferences or push)", s);
	for (; *list; list++)
		if (envelope_add_scope(out, *list, strlen(*list)) != 0)
			return bad(err, errlen, path, "%s", "tier scopes do not fit");
	return 0;
}

static int check_expires(lua_State *L, int v, struct decision *out, const char *path, char *err,
                         size_t errlen)
{
	if (lua_type(L, v) == LUA_TNUMBER) {
		lua_Integer i;
		if (lua_isinteger(L, v))
			i = lua_tointeger(L, v);
		else if (!lua_numbertointeger(lua_tonumber(L, v), &i) || (lua_Number)i != lua_tonumber(L, v))
			return bad(err, errlen, path, "%s", "expires_in must be a whole number of seconds");
		if (i <= 0)
			return bad(err, errlen, path, "%s", "expires_in must be positive");
		out->expires_s = (long long)i;
		return 0;
	}
	if (lua_type(L, v) == LUA_TSTRING) {
		size_t len;
		const char *s = lua_tolstring(L, v, &len);
		long long secs;
		if (duration_parse(s, len, &secs) != 0)
			return bad(
			    err, errlen, path,
			    "expires_in \"%s\" is not a duration with a unit (\"3600s\", \"1h\", \"7d\")", s);
		out->expires_s = secs;
		return 0;
	}
	return bad(err, errlen, path, "expires_in must be seconds or a duration string, got %s",
	           luaL_typename(L, v));
}

/* The index in decision_keys of the string key at idx, or -1. A policy's
 * "allow" is, in Lua 5.4, the very string the engine keeps (short strings
 * are interned): comparing the pointers answers at once. Any other string
 * gets the bytes compared, so the answer never rests on interning. */
static int decision_field(lua_State *L, const struct policy_engine *e, int idx)
{
	size_t len;
	const char *k = lua_tolstring(L, idx, &len);

	for (int i = 0; i < DECISION_FIELDS; i++)
		if (k == e->field_names[i])
			return i;
	for (int i = 0; i < DECISION_FIELDS; i++) {
		const char *name = key_names[decision_keys[i]];
		if (strlen(name) == len && memcmp(name, k, len) == 0)
			return i;
	}
	return -1;
}

/* Type-checks the decision at idx (on e->L) into out. */
static int check_decision(lua_State *L, struct policy_engine *e, int idx, const char *path,
                          struct decision *out, char *err, size_t errlen)
{
	int allow, f_scopes, f_tier, f_exp, f_reason, rc, slots;

	engine_unwrap(L, e, idx);
	if (lua_type(L, idx) != LUA_TTABLE)
		return bad(err, errlen, path, "decide must return a table, got %s", luaL_typename(L, idx));
	/* One pass: every key must be a field, whose value goes to its slot
	 * (slots + index in decision_keys; nil when absent). */
	luaL_checkstack(L, 8, NULL);
	slots = lua_gettop(L) + 1;
	lua_settop(L, slots + 4);
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		int f;
		if (lua_type(L, -2) != LUA_TSTRING)
			return bad(err, errlen, path, "unknown field of type %s", luaL_typename(L, -2));
		f = decision_field(L, e, -2);
		if (f < 0)
			return bad(err, errlen, path,
			           "unknown field '%s' (allow, scopes, tier, expires_in, reason)",
			           lua_tostring(L, -2));
		lua_replace(L, slots + f);
	}

	if (lua_type(L, slots) != LUA_TBOOLEAN)
		return bad(err, errlen, path, "allow must be true or false, got %s", luaL_typename(L, slots));
	allow = lua_toboolean(L, slots);
	f_scopes = lua_isnil(L, slots + 1) ? 0 : slots + 1;
	f_tier = lua_isnil(L, slots + 2) ? 0 : slots + 2;
	f_exp = lua_isnil(L, slots + 3) ? 0 : slots + 3;
	f_reason = lua_isnil(L, slots + 4) ? 0 : slots + 4;

	if (f_reason) {
		size_t len;
		const char *s;
		if (lua_type(L, f_reason) != LUA_TSTRING)
			return bad(err, errlen, path, "reason must be a string, got %s",
			           luaL_typename(L, f_reason));
		s = lua_tolstring(L, f_reason, &len);
		/* At most 255 bytes, cut between characters, valid UTF-8. */
		utf8_append(out->reason, 0, sizeof(out->reason), s, len, 0);
	}
	if (allow && !f_scopes == !f_tier)
		return bad(err, errlen, path, "%s",
		           "an allowing decision needs exactly one of scopes and tier");
	rc = 0;
	if (f_scopes)
		rc = check_scopes(L, e, f_scopes, out, path, err, errlen);
	if (!rc && f_tier)
		rc = check_tier(L, f_tier, out, path, err, errlen);
	if (!rc && f_exp)
		rc = check_expires(L, f_exp, out, path, err, errlen);
	if (rc)
		return rc;
	out->allow = allow;
	if (!allow) {
		out->n_scopes = 0;
		out->strbuf_used = 0;
		out->expires_s = 0;
	}
	return 0;
}

/* ------------------------------------------------------------ requests */

static void set_str(lua_State *L, const char *k, const char *v)
{
	if (v) {
		lua_pushstring(L, v);
		lua_setfield(L, -2, k);
	}
}

/* Whether the table at idx is a list of 1.. strings and nothing else. */
static int is_string_list(lua_State *L, int idx)
{
	lua_Integer n = (lua_Integer)lua_rawlen(L, idx), count = 0;

	lua_pushnil(L);
	while (lua_next(L, idx)) {
		int ok = lua_type(L, -1) == LUA_TSTRING && lua_isinteger(L, -2) &&
		         lua_tointeger(L, -2) >= 1 && lua_tointeger(L, -2) <= n;
		lua_pop(L, 1);
		if (!ok) {
			lua_pop(L, 1);
			return 0;
		}
		count++;
	}
	return count == n;
}

/* Pushes the real table behind the req or identity view at idx: its
 * metatable's __index. */
static void swap_real(lua_State *L, int idx)
{
	if (!lua_getmetatable(L, idx) || lua_rawgetp(L, -1, &SWAP_KEY) == LUA_TNIL)
		luaL_error(L, "not a read-only view");
	lua_pop(L, 1);
	lua_pushliteral(L, "__index");
	if (lua_rawget(L, -2) != LUA_TTABLE)
		luaL_error(L, "not a read-only view");
	lua_remove(L, -2);
}

static int swap_len(lua_State *L)
{
	swap_real(L, 1);
	lua_pushinteger(L, (lua_Integer)lua_rawlen(L, -1));
	return 1;
}

/* t[key k] = v, or nil when v is NULL; keys: the keys' table. */
static void put_str(lua_State *L, int t, int keys, enum req_key k, const char *v)
{
	lua_rawgeti(L, keys, k);
	if (v)
		lua_pushstring(L, v);
	else
		lua_pushnil(L);
	lua_rawset(L, t);
}

/*
 * The fields of req and req.identity that are often nil: e->held has bit k
 * set whenever field k may hold a value (set before any write of one: in
 * fill_req with hold, in req_fill), so clearing a field known to be nil is
 * no write at all.
 */
static void hold(struct policy_engine *e, enum req_key k)
{
	e->held |= 1u << k;
}

/* t[key k] = nil. */
static void clear_opt(lua_State *L, struct policy_engine *e, int t, int keys, enum req_key k)
{
	if (!(e->held & (1u << k)))
		return;
	lua_rawgeti(L, keys, k);
	lua_pushnil(L);
	lua_rawset(L, t);
	e->held &= ~(1u << k);
}

/*
 * Writes rq into the engine's real req and identity tables (made once, in
 * setup_protected), behind views where they hold tables; body and claims
 * at the given indexes (0: none); keys: the keys' table. The two tables
 * are never handed to a policy (only their views, which read through
 * them), so only the engine writes them, and it writes every field of both
 * here, before the policy runs, nil where rq has nothing: no decision sees
 * anything of an earlier one's request, even of one that failed half way.
 * req.identity is the identity view, set once. A field added to req must
 * be added here. Between decisions the tables (and ref_body) still hold
 * the last request, which nothing reads: no policy code runs then, and
 * req_fill builds nothing without rq_now.
 */
static void fill_req(lua_State *L, struct policy_engine *e, int keys, const struct policy_request *rq,
                     int body, int claims)
{
	int rmt, real, id;

	lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_rmt);
	rmt = lua_gettop(L);
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_reqreal);
	real = rmt + 1;
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_idreal);
	id = rmt + 2;

	put_str(L, real, keys, K_TENANT, rq->tenant->name);
	put_str(L, real, keys, K_USER_ID, rq->user_id);
	if (body && lua_type(L, body) == LUA_TTABLE) {
		int t;
		lua_rawgeti(L, keys, K_SCOPES);
		lua_pushvalue(L, -1);
		if (lua_rawget(L, body) == LUA_TTABLE && is_string_list(L, lua_gettop(L))) {
			proxy_new(L, rmt);
			hold(e, K_SCOPES);
			lua_rawset(L, real);
		} else {
			lua_pop(L, 2);
			clear_opt(L, e, real, keys, K_SCOPES);
		}
		lua_rawgeti(L, keys, K_EXPIRES_IN);
		lua_pushvalue(L, -1);
		t = lua_rawget(L, body);
		if (t == LUA_TSTRING || t == LUA_TNUMBER) {
			hold(e, K_EXPIRES_IN);
			lua_rawset(L, real);
		} else {
			lua_pop(L, 2);
			clear_opt(L, e, real, keys, K_EXPIRES_IN);
		}
		lua_pushvalue(L, body);
	} else {
		clear_opt(L, e, real, keys, K_SCOPES);
		clear_opt(L, e, real, keys, K_EXPIRES_IN);
		lua_pushboolean(L, 0);
	}
	lua_rawseti(L, LUA_REGISTRYINDEX, e->ref_body);
	/* body, client and headers are built when first read (req_fill). */
	clear_opt(L, e, real, keys, K_BODY);
	clear_opt(L, e, real, keys, K_CLIENT);
	clear_opt(L, e, real, keys, K_HEADERS);
	lua_rawgeti(L, keys, K_NOW);
	lua_pushinteger(L, (lua_Integer)rq->now);
	lua_rawset(L, real);

	lua_rawgeti(L, keys, K_AUTHENTICATED);
	lua_pushboolean(L, rq->authenticated);
	lua_rawset(L, id);
	put_str(L, id, keys, K_METHOD, rq->method);
	if (rq->subject && rq->subject[0]) {
		hold(e, K_SUBJECT);
		put_str(L, id, keys, K_SUBJECT, rq->subject);
	} else {
		clear_opt(L, e, id, keys, K_SUBJECT);
	}
	/* The claims' view holds nothing but its real table until a policy
	 * reads a table inside: then the views of those tables are kept in it
	 * (proxy_child), and the next decision gets a new view. */
	if (e->claims_cached) {
		claims_view_new(L, e, rmt);
		e->claims_cached = 0;
	}
	lua_rawgeti(L, keys, K_CLAIMS);
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_claims);
	if (claims && lua_type(L, claims) == LUA_TTABLE)
		lua_pushvalue(L, claims);
	else
		lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_noclaims);
	lua_rawsetp(L, -2, &REAL_KEY);
	lua_rawset(L, id);
	lua_settop(L, rmt - 1);
}

/* Pushes the view of req.body, req.client or req.headers (k) of the running
 * decision, storing it in the real req at index real; pushes nil when no
 * decision runs. Upvalue 1: RMT. */
static void req_fill(lua_State *L, int real, enum req_key k)
{
	struct policy_engine *e = engine_of(L);
	const struct policy_request *rq = e->rq_now;

	if (!rq) {
		lua_pushnil(L);
		return;
	}
	if (k == K_BODY) {
		if (lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_body) != LUA_TTABLE) {
			lua_pop(L, 1);
			lua_createtable(L, 0, 0);
		}
	} else if (k == K_CLIENT) {
		lua_createtable(L, 0, 3);
		set_str(L, "ip", rq->client_ip);
		set_str(L, "origin", rq->origin);
		set_str(L, "user_agent", rq->user_agent);
	} else if (k == K_HEADERS) {
		size_t n = rq->n_headers;
		const struct policy_header *h =
		    rq->headers_of ? rq->headers_of(rq->headers_ctx, &n) : rq->headers;
		lua_createtable(L, 0, (int)(n < 64 ? n : 64));
		for (size_t i = 0; h && i < n; i++)
			if (h[i].name && h[i].value)
				set_str(L, h[i].name, h[i].value);
	} else {
		lua_pushnil(L);
		return;
	}
	proxy_new(L, UV_RMT);
	hold(e, k);
	lua_pushvalue(L, -1);
	lua_setfield(L, real, key_names[k]);
}

/* __index of the real req (reached through its view when a field is not
 * there yet): builds the lazy fields K_BODY .. K_HEADERS. Upvalue 1: RMT. */
static int req_lazy(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	if (lua_type(L, 2) != LUA_TSTRING) {
		lua_pushnil(L);
		return 1;
	}
	for (enum req_key k = K_BODY; k <= K_HEADERS; k++) {
		if (strcmp(lua_tostring(L, 2), key_names[k]) == 0) {
			req_fill(L, 1, k);
			return 1;
		}
	}
	lua_pushnil(L);
	return 1;
}

/* next over req's and identity's views (and no other table): their real
 * tables hold only plain values and views. */
static int swap_next(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_settop(L, 2);
	swap_real(L, 1);
	lua_pushvalue(L, 2);
	if (!lua_next(L, 3))
		return 0;
	return 2;
}

/* __pairs of req's and identity's views; upvalue 1: RMT. For req, every
 * field: the lazy ones are built first. */
static int swap_pairs(lua_State *L)
{
	int real;

	swap_real(L, 1);
	real = lua_gettop(L);
	if (lua_getmetatable(L, real)) { /* the real req: lazymt */
		lua_pop(L, 1);
		for (enum req_key k = K_BODY; k <= K_HEADERS; k++) {
			lua_pushstring(L, key_names[k]);
			if (lua_rawget(L, real) == LUA_TNIL) {
				lua_pop(L, 1);
				req_fill(L, real, k);
			}
			lua_pop(L, 1);
		}
	}
	lua_pushcfunction(L, swap_next);
	lua_pushvalue(L, 1);
	lua_pushnil(L);
	return 3;
}

struct decide_ctx {
	struct policy_engine *e;
	const struct policy_request *rq;
	size_t tenant;
	struct decision *out;
	char *err;
	size_t errlen;
	int rc;
	int dirty;
};

/* Runs protected on e->L: arguments ctx, body, claims. */
static int decide_protected(lua_State *L)
{
	struct decide_ctx *c = lua_touserdata(L, 1);
	struct policy_engine *e = c->e;
	const char *path = c->rq->tenant->policy_path ? c->rq->tenant->policy_path : c->rq->tenant->name;
	int keys;

	lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_keys);
	keys = lua_gettop(L);
	fill_req(L, e, keys, c->rq, lua_type(L, 2) == LUA_TNIL ? 0 : 2, lua_type(L, 3) == LUA_TNIL ? 0 : 3);
	e->rq_now = c->rq;

	lua_settop(e->co, 0);
	push_chunk(e, c->tenant);
	budget_arm(e);
	if (run(e, 0, 0, path, c->err, c->errlen, &c->dirty) != 0)
		goto out;
	if (lua_type(e->co, -1) != LUA_TFUNCTION) {
		snprintf(c->err, c->errlen, "%s: the policy must return a function decide(req), got %s", path,
		         luaL_typename(e->co, -1));
		goto out;
	}
	lua_rawgeti(e->co, LUA_REGISTRYINDEX, e->ref_reqview);
	if (run(e, 1, RUN_LAST, "decide", c->err, c->errlen, &c->dirty) != 0)
		goto out;
	lua_xmove(e->co, L, 1);
	e->cap_armed = 0;
	c->rc = check_decision(L, e, lua_gettop(L), path, c->out, c->err, c->errlen);
out:
	e->cap_armed = 0;
	e->rq_now = NULL; /* nothing is built for req once its decision is over */
	return 0;
}

/*
 * Cleans up after a decision. A thread a policy failed on (an error, a
 * yield from the budget hook, any breach) is dropped without being touched:
 * lua_settop, lua_closethread and lua_resetthread on it would run the
 * policy's pending __close handlers in C, outside any protected call and
 * with the spent budget's hook still armed (count 1, yielding): Lua raises
 * "attempt to yield across a C-call boundary" with no handler and the
 * process aborts. A dropped thread is never closed: the collector frees it
 * (luaE_freethread closes upvalues only, never to-be-closed variables).
 * Only a thread whose last resume returned normally, with nothing pending,
 * is reset here. (Reusing a thread a plain error ended would save one
 * lua_newthread per error, but measured no difference, and an error raised
 * from a hook leaves the thread's hooks off: not worth a second rule.)
 *
 * No full collection here: the engine holds every tenant's compiled
 * policies, so a full collection per failed decision costs O(tenants) and
 * lets any client who can make a policy raise slow every tenant down
 * (issue 10, class 5). A failure leaves at most the decision's own garbage
 * (bounded by the memory cap) and one dropped thread; the generational
 * collector's step (a young collection, or a major one when its own pacing
 * calls for it) reclaims that in time proportional to what the decision
 * allocated, and only when the decision grew the heap by GC_STEP_AFTER or
 * hit the cap.
 */
static void finish(struct policy_engine *e, int dirty, size_t used_before)
{
	e->cap_armed = 0;
	if (!dirty) {
		lua_settop(e->co, 0);
	} else {
		lua_pushcfunction(e->L, new_co_protected);
		if (lua_pcall(e->L, 0, 0, 0) != LUA_OK) {
			lua_pop(e->L, 1);
			e->broken = 1;
		}
	}
	if (e->mem_hit || e->mem_used > used_before + GC_STEP_AFTER)
		lua_gc(e->L, LUA_GCSTEP, 0);
}

int policy_decide(struct policy_engine *e, const struct policy_request *rq, struct decision *out, char *err,
                  size_t errlen)
{
	lua_State *L = e->L;
	int top = lua_gettop(L);
	size_t used_before = e->mem_used;
	struct decide_ctx c = {.e = e, .rq = rq, .out = out, .err = err, .errlen = errlen, .rc = -1};
	int status;

	err[0] = '\0';
	out->allow = false;
	out->n_scopes = 0;
	out->expires_s = 0;
	out->reason[0] = '\0';
	out->strbuf_used = 0;
	if (!e->cfg || !rq->tenant || rq->tenant < e->cfg->tenants ||
	    rq->tenant >= e->cfg->tenants + e->cfg->n_tenants) {
		snprintf(err, errlen, "tenant is not part of this engine's configuration");
		return -1;
	}
	c.tenant = (size_t)(rq->tenant - e->cfg->tenants);
	if (e->broken) {
		snprintf(err, errlen, "policy engine out of memory");
		return -1;
	}

	lua_pushcfunction(L, decide_protected);
	lua_pushlightuserdata(L, &c);
	if (rq->body_idx > 0)
		lua_pushvalue(L, rq->body_idx);
	else
		lua_pushnil(L);
	if (rq->claims_idx > 0)
		lua_pushvalue(L, rq->claims_idx);
	else
		lua_pushnil(L);
	status = lua_pcall(L, 3, 0, 0);
	if (status != LUA_OK) {
		snprintf(err, errlen, "policy engine: %s",
		         lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "out of memory");
		c.rc = -1;
		c.dirty = 1;
	}
	finish(e, c.dirty, used_before);
	lua_settop(L, top);
	if (c.rc != 0) {
		out->allow = false;
		out->n_scopes = 0;
		out->strbuf_used = 0;
		if (!err[0])
			snprintf(err, errlen, "policy error");
	}
	return c.rc;
}

const char *policy_decision_log(const struct policy_engine *e)
{
	return e->log;
}

/* ------------------------------------------------------------ coverage */

static int cov_on_protected(lua_State *L)
{
	struct policy_engine *e = engine_of(L);

	lua_newtable(L);
	e->ref_cov = luaL_ref(L, LUA_REGISTRYINDEX);
	return 0;
}

int policy_engine_coverage(struct policy_engine *e)
{
	lua_pushcfunction(e->L, cov_on_protected);
	if (lua_pcall(e->L, 0, 0, 0) != LUA_OK) {
		lua_pop(e->L, 1);
		return -1;
	}
	e->coverage = 1;
	return 0;
}

void policy_coverage_each(struct policy_engine *e, void (*fn)(void *ctx, const char *path, int line),
                          void *ctx)
{
	lua_State *L = e->L;
	int top = lua_gettop(L);

	if (!e->coverage)
		return;
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_cov);
	lua_pushnil(L);
	while (lua_next(L, -2)) {
		const char *path = lua_tostring(L, -2);
		lua_pushnil(L);
		while (lua_next(L, -2)) {
			if (lua_isinteger(L, -2))
				fn(ctx, path, (int)lua_tointeger(L, -2));
			lua_pop(L, 1);
		}
		lua_pop(L, 1);
	}
	lua_settop(L, top);
}

/*
 * Which lines hold code: the lines of every instruction of the chunk and of
 * every function nested in it, read from the chunk's own dump (the debug
 * API reaches nested prototypes only once their closures exist). As Lua's
 * activelines does, a vararg function's first instruction (VARARGPREP) is
 * not a line; unlike it, neither is each function's implicit final return,
 * which never runs in a function that returns explicitly. The dump format
 * is Lua 5.4's (ldump.c); it is only ever produced here, from text.
 */
struct dump_reader {
	const unsigned char *p, *end;
	int bad;
	unsigned char *lines;
	size_t nlines;
};

static unsigned rd_byte(struct dump_reader *r)
{
	if (r->p >= r->end) {
		r->bad = 1;
		return 0;
	}
	return *r->p++;
}

static size_t rd_size(struct dump_reader *r)
{
	size_t x = 0;
	unsigned b;

	do {
		b = rd_byte(r);
		if (x > (SIZE_MAX >> 7)) {
			r->bad = 1;
			return 0;
		}
		x = (x << 7) | (b & 0x7f);
	} while (!(b & 0x80) && !r->bad);
	return x;
}

static void rd_skip(struct dump_reader *r, size_t n)
{
	if ((size_t)(r->end - r->p) < n) {
		r->bad = 1;
		r->p = r->end;
	} else {
		r->p += n;
	}
}

static void rd_string(struct dump_reader *r)
{
	size_t n = rd_size(r);
	if (n)
		rd_skip(r, n - 1);
}

static void rd_function(struct dump_reader *r, int depth)
{
	size_t ncode, n, nli, nabs;
	const signed char *li;
	const unsigned char *abs_at;
	long line;
	int vararg;

	if (depth > 200) {
		r->bad = 1;
		return;
	}
	rd_string(r);            /* source */
	line = (long)rd_size(r); /* linedefined */
	rd_size(r);              /* lastlinedefined */
	rd_byte(r);              /* numparams */
	vararg = (int)rd_byte(r);
	rd_byte(r); /* maxstacksize */
	ncode = rd_size(r);
	rd_skip(r, ncode * 4);
	n = rd_size(r); /* constants */
	for (size_t i = 0; i < n && !r->bad; i++) {
		unsigned tag = rd_byte(r);
		if (tag == 0x03 || tag == 0x13) /* integer, float */
			rd_skip(r, 8);
		else if (tag == 0x04 || tag == 0x14) /* short, long string */
			rd_string(r);
	}
	n = rd_size(r); /* upvalues: instack, idx, kind */
	rd_skip(r, n * 3);
	n = rd_size(r); /* nested functions */
	for (size_t i = 0; i < n && !r->bad; i++)
		rd_function(r, depth + 1);
	nli = rd_size(r);
	li = (const signed char *)r->p;
	rd_skip(r, nli);
	nabs = rd_size(r);
	abs_at = r->p;
	for (size_t i = 0; i < nabs && !r->bad; i++) {
		rd_size(r);
		rd_size(r);
	}
	if (r->bad)
		return;
	/* Lines: deltas, or an absolute line (-128) taken from the next pair. */
	{
		struct dump_reader ab = {.p = abs_at, .end = r->p};
		for (size_t pc = 0; pc < nli; pc++) {
			if (li[pc] == -128) {
				rd_size(&ab);
				line = (long)rd_size(&ab);
			} else {
				line += li[pc];
			}
			if ((vararg && pc == 0) || pc + 1 == nli || ab.bad)
				continue;
			if (line > 0 && (size_t)line < r->nlines)
				r->lines[line] = 1;
		}
	}
	n = rd_size(r); /* local variables */
	for (size_t i = 0; i < n && !r->bad; i++) {
		rd_string(r);
		rd_size(r);
		rd_size(r);
	}
	n = rd_size(r); /* upvalue names */
	for (size_t i = 0; i < n && !r->bad; i++)
		rd_string(r);
}

struct dump_buf {
	unsigned char *p;
	size_t len, cap;
};

static int dump_write(lua_State *L, const void *p, size_t sz, void *ud)
{
	struct dump_buf *b = ud;

	(void)L;
	if (b->len + sz > b->cap) {
		size_t cap = (b->len + sz) * 2;
		unsigned char *np = realloc(b->p, cap);
		if (!np)
			return 1;
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->len, p, sz);
	b->len += sz;
	return 0;
}

int policy_code_lines(const char *name, const char *text, size_t len, unsigned char *lines, size_t nlines,
                      char *err, size_t errlen)
{
	lua_State *L = luaL_newstate();
	struct dump_buf b = {0};
	struct dump_reader r;
	int rc = -1;

	memset(lines, 0, nlines);
	if (!L) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	lua_pushfstring(L, "@%s", name);
	if (luaL_loadbufferx(L, text, len, lua_tostring(L, -1), "t") != LUA_OK) {
		snprintf(err, errlen, "%s", lua_tostring(L, -1));
		policy_scrub_syntax_error(err);
		goto out;
	}
	if (lua_dump(L, dump_write, &b, 0) != 0 || b.len < 32) {
		snprintf(err, errlen, "%s: cannot read its line information", name);
		goto out;
	}
	r = (struct dump_reader){.p = b.p + 32, .end = b.p + b.len, .lines = lines, .nlines = nlines};
	rd_function(&r, 0); /* after the 31-byte header and the upvalue count */
	if (r.bad) {
		snprintf(err, errlen, "%s: cannot read its line information", name);
		goto out;
	}
	rc = 0;
out:
	free(b.p);
	lua_close(L);
	return rc;
}

/* ------------------------------------------------------------ engines */

struct compile_ctx {
	struct policy_engine *e;
	char *err;
	size_t errlen;
	int rc;
	int dirty;
};

/* Builds tenant i's environments' metatable (the shared base plus its own
 * broker, with broker.data, and require) and compiles its modules. */
static int tenant_setup(struct policy_engine *e, size_t i, char *err, size_t errlen)
{
	lua_State *L = e->L;
	const struct tenant *t = &e->cfg->tenants[i];
	int tbase, broker;

	lua_createtable(L, 0, 40);
	tbase = lua_gettop(L);
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_base);
	lua_pushnil(L);
	while (lua_next(L, -2)) {
		lua_pushvalue(L, -2);
		lua_insert(L, -2);
		lua_rawset(L, tbase);
	}
	lua_pop(L, 1);

	lua_createtable(L, 0, 8);
	broker = lua_gettop(L);
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_broker);
	lua_pushnil(L);
	while (lua_next(L, -2)) {
		lua_pushvalue(L, -2);
		lua_insert(L, -2);
		lua_rawset(L, broker);
	}
	lua_pop(L, 1);
	if (t->data_text) {
		if (json_decode(L, t->data_text, t->data_len) != 0) {
			snprintf(err, errlen, "%s: not valid JSON (broker.data of tenant %s)",
			         t->data_path ? t->data_path : "data", t->name);
			return -1;
		}
		lua_setfield(L, broker, "data"); /* the broker view wraps it when read */
	}
	engine_wrap(L, e);
	lua_setfield(L, tbase, "broker");
	lua_pushinteger(L, (lua_Integer)i);
	lua_pushcclosure(L, sb_require, 1);
	lua_setfield(L, tbase, "require");

	lua_createtable(L, 0, 4);
	lua_pushvalue(L, tbase);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, env_newindex);
	lua_setfield(L, -2, "__newindex");
	lua_pushboolean(L, 0);
	lua_setfield(L, -2, "__metatable");
	/* The tenant's environment, kept under ENV_KEY: one for every decision,
	 * since nothing can ever be written into it (__newindex refuses, rawset
	 * and setmetatable refuse environments), it is always empty. */
	lua_createtable(L, 0, 0);
	lua_pushvalue(L, -2);
	lua_setmetatable(L, -2);
	lua_rawsetp(L, -2, &ENV_KEY);
	e->envmts[i] = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_pop(L, 1);

	/* Tenants sharing a folder share the compiled modules (by path): the
	 * require of each decision sets the _ENV it runs with. */
	lua_createtable(L, 0, (int)t->n_modules);
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_modcache);
	for (size_t k = 0; k < t->n_modules; k++) {
		const struct policy_module *m = &t->modules[k];
		if (lua_getfield(L, -1, m->path) != LUA_TFUNCTION) {
			lua_pop(L, 1);
			lua_pushfstring(L, "@%s", m->path);
			if (luaL_loadbufferx(L, m->text, m->len, lua_tostring(L, -1), "t") != LUA_OK) {
				snprintf(err, errlen, "%s", lua_tostring(L, -1));
				policy_scrub_syntax_error(err);
				return -1;
			}
			lua_remove(L, -2);
			lua_pushvalue(L, -1);
			lua_setfield(L, -3, m->path);
		}
		lua_setfield(L, -3, m->name);
	}
	lua_pop(L, 1);
	e->mods[i] = luaL_ref(L, LUA_REGISTRYINDEX);
	return 0;
}

/* Compiles every tenant's chunk and runs each once, to check it returns a
 * function. Runs protected on e->L. */
static int compile_protected(lua_State *L)
{
	struct compile_ctx *c = lua_touserdata(L, 1);
	struct policy_engine *e = c->e;

	for (size_t i = 0; i < e->n_chunks; i++) {
		const struct tenant *t = &e->cfg->tenants[i];
		const char *path = t->policy_path ? t->policy_path : t->name;
		if (!t->policy_text) {
			snprintf(c->err, c->errlen, "tenant %s: no policy", t->name);
			return 0;
		}
		if (tenant_setup(e, i, c->err, c->errlen) != 0)
			return 0;
		lua_pushfstring(L, "@%s", path);
		if (luaL_loadbufferx(L, t->policy_text, t->policy_len, lua_tostring(L, -1), "t") != LUA_OK) {
			snprintf(c->err, c->errlen, "tenant %s: %s", t->name, lua_tostring(L, -1));
			policy_scrub_syntax_error(c->err);
			return 0;
		}
		lua_rawgeti(L, LUA_REGISTRYINDEX, e->envmts[i]);
		lua_rawgetp(L, -1, &ENV_KEY);
		lua_remove(L, -2);
		lua_setupvalue(L, -2, 1);
		e->chunks[i] = luaL_ref(L, LUA_REGISTRYINDEX);
		lua_pop(L, 1);

		lua_settop(e->co, 0);
		push_chunk(e, i);
		budget_arm(e);
		if (run(e, 0, RUN_LAST, path, c->err, c->errlen, &c->dirty) != 0) {
			char why[512];
			e->cap_armed = 0;
			snprintf(why, sizeof(why), "%s", c->err);
			snprintf(c->err, c->errlen, "tenant %s: %s", t->name, why);
			return 0;
		}
		e->cap_armed = 0;
		if (lua_type(e->co, -1) != LUA_TFUNCTION) {
			snprintf(c->err, c->errlen,
			         "tenant %s: %s: the policy must return a function decide(req), got %s",
			         t->name, path, luaL_typename(e->co, -1));
			return 0;
		}
		lua_settop(e->co, 0);
	}
	c->rc = 0;
	return 0;
}

/* A state with the sandbox and no policy compiled yet, for n tenants of cfg
 * (or none) under lim. */
static struct policy_engine *engine_make(const struct config *cfg, size_t n, const struct policy_limits *lim,
                                         char *err, size_t errlen)
{
	struct policy_engine *e = calloc(1, sizeof(*e));
	lua_State *L;

	if (!e) {
		snprintf(err, errlen, "policy engine: out of memory");
		return NULL;
	}
	e->cfg = cfg;
	e->lim = *lim;
	e->n_chunks = n;
	e->chunks = calloc(n ? n : 1, sizeof(*e->chunks));
	e->envmts = calloc(n ? n : 1, sizeof(*e->envmts));
	e->mods = calloc(n ? n : 1, sizeof(*e->mods));
	L = e->chunks && e->envmts && e->mods ? lua_newstate(engine_alloc, e) : NULL;
	if (!L) {
		small_release(e); /* what a failed lua_newstate freed */
		free(e->chunks);
		free(e->envmts);
		free(e->mods);
		free(e);
		snprintf(err, errlen, "policy engine: out of memory");
		return NULL;
	}
	e->L = L;
	lua_atpanic(L, engine_panic);
	lua_gc(L, LUA_GCGEN, 0, 0);
	*(struct policy_engine **)lua_getextraspace(L) = e;
	for (size_t i = 0; i < e->n_chunks; i++)
		e->chunks[i] = e->envmts[i] = e->mods[i] = LUA_NOREF;

	lua_pushcfunction(L, setup_protected);
	if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
		snprintf(err, errlen, "policy engine: %s",
		         lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "setup failed");
		policy_engine_free(e);
		return NULL;
	}
	return e;
}

struct policy_engine *policy_engine_new(const struct config *cfg, char *err, size_t errlen)
{
	struct policy_limits lim;
	struct policy_engine *e;
	struct compile_ctx c;
	lua_State *L;

	limits_of(cfg, &lim);
	e = engine_make(cfg, cfg->n_tenants, &lim, err, errlen);
	if (!e)
		return NULL;
	L = e->L;
	c = (struct compile_ctx){.e = e, .err = err, .errlen = errlen, .rc = -1};
	err[0] = '\0';
	lua_pushcfunction(L, compile_protected);
	lua_pushlightuserdata(L, &c);
	if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
		snprintf(err, errlen, "policy engine: %s",
		         lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "out of memory");
		c.rc = -1;
		c.dirty = 1;
	}
	finish(e, c.dirty, e->mem_used);
	lua_settop(L, 0);
	if (c.rc != 0) {
		policy_engine_free(e);
		return NULL;
	}
	return e;
}

/* ------------------------------------------------------------ files */

struct policy_engine *policy_sandbox_new(const struct policy_limits *lim, char *err, size_t errlen)
{
	return engine_make(NULL, 0, lim, err, errlen);
}

void policy_scrub_syntax_error(char *msg)
{
	char *near = strstr(msg, " near '");

	if (near)
		*near = '\0';
}

struct file_ctx {
	struct policy_engine *e;
	const char *name, *text;
	size_t len;
	char *err;
	size_t errlen;
	int rc;
	int dirty;
};

/* Runs protected on e->L: argument ctx; returns the environment and the
 * file's result. The environment is the file's own, writable (its
 * globals), reading through to the file base; its metatable is sealed. */
static int file_protected(lua_State *L)
{
	struct file_ctx *c = lua_touserdata(L, 1);
	struct policy_engine *e = c->e;

	lua_createtable(L, 0, 0);
	lua_createtable(L, 0, 2);
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref_filebase);
	lua_setfield(L, -2, "__index");
	lua_pushboolean(L, 0);
	lua_setfield(L, -2, "__metatable");
	lua_setmetatable(L, 2);
	lua_pushfstring(L, "@%s", c->name);
	if (luaL_loadbufferx(L, c->text, c->len, lua_tostring(L, -1), "t") != LUA_OK) {
		snprintf(c->err, c->errlen, "%s", lua_tostring(L, -1));
		policy_scrub_syntax_error(c->err);
		return 0;
	}
	lua_pushvalue(L, 2);
	if (!lua_setupvalue(L, -2, 1))
		lua_pop(L, 1);
	lua_settop(e->co, 0);
	lua_xmove(L, e->co, 1);
	budget_arm(e);
	if (run(e, 0, RUN_LAST | RUN_OPTIONAL, c->name, c->err, c->errlen, &c->dirty) != 0)
		return 0;
	e->cap_armed = 0;
	lua_pushvalue(L, 2);
	lua_xmove(e->co, L, 1);
	c->rc = 0;
	return 2;
}

int policy_sandbox_run(struct policy_engine *e, const char *name, const char *text, size_t len, char *err,
                       size_t errlen)
{
	lua_State *L = e->L;
	int top = lua_gettop(L);
	size_t used_before = e->mem_used;
	struct file_ctx c = {
	    .e = e, .name = name, .text = text, .len = len, .err = err, .errlen = errlen, .rc = -1};

	err[0] = '\0';
	if (e->broken) {
		snprintf(err, errlen, "%s: the Lua sandbox is out of memory", name);
		return -1;
	}
	lua_pushcfunction(L, file_protected);
	lua_pushlightuserdata(L, &c);
	if (lua_pcall(L, 1, 2, 0) != LUA_OK) {
		snprintf(err, errlen, "%s: %s", name,
		         lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "out of memory");
		c.rc = -1;
		c.dirty = 1;
	}
	finish(e, c.dirty, used_before);
	if (c.rc != 0) {
		lua_settop(L, top);
		if (!err[0])
			snprintf(err, errlen, "%s: failed", name);
		return -1;
	}
	return 0;
}

void policy_engine_free(struct policy_engine *e)
{
	if (!e)
		return;
	if (e->L) {
		e->cap_armed = 0;
		lua_close(e->L);
	}
	small_release(e);
	free(e->chunks);
	free(e->envmts);
	free(e->mods);
	free(e);
}

lua_State *policy_engine_lua(struct policy_engine *e)
{
	return e->L;
}
