/*
 * policy/alloc.c — the engine's Lua allocator.
 *
 * Owns the memory of an engine's lua_State: the count Lua's cap is measured
 * against, the free lists of small blocks a decision reuses, and the refusal
 * of an allocation past the cap or past STRING_MAX. It must never let a
 * refused allocation leave mem_used wrong, nor call Lua (it runs inside it).
 */
#include "state.h"

#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- memory */

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
void alloc_release_small(struct policy_engine *e)
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
static bool alloc_refused(struct policy_engine *e, size_t old, size_t nsize)
{
	if (e->mem_used + (nsize - old) > e->mem_cap) {
		e->mem_hit = true;
		return true;
	}
	/* Large blocks are where one VM instruction or C call does O(n) work
	 * (concatenation, string results): look at the clock there too. */
	if (nsize >= BIG_ALLOC && budget_deadline_passed(e)) {
		if (e->stop == STOP_NONE)
			e->stop = STOP_TIME;
		return true;
	}
	return false;
}

/*
 * A long string made during a decision. One VM instruction on it does O(n)
 * work no hook sees: comparing (<, <=: strcoll), converting to a number
 * (arithmetic, a library's number argument), hashing. Two bounds keep that
 * inside the time budget: no string a decision makes is longer than
 * STRING_MAX (refused like a memory bomb), and once one is BIG_STRING or
 * longer the count hook looks at the budget every FINE_STEP instructions
 * instead of every HOOK_STEP, for the rest of the decision: at most
 * FINE_STEP such instructions (about 1 ms each at 1 MiB) between two looks.
 * Returns true when the string is refused.
 */
static bool alloc_big_string(struct policy_engine *e, size_t nsize)
{
	if (nsize > STRING_MAX) {
		e->mem_hit = true;
		if (!e->detail[0])
			snprintf(e->detail, sizeof(e->detail), "a string longer than %d bytes", STRING_MAX);
		return true;
	}
	if (e->hook_step > FINE_STEP && e->stop == STOP_NONE && e->co) {
		e->hook_step = FINE_STEP;
		lua_sethook(e->co, budget_hook, budget_mask(e), FINE_STEP);
	}
	return false;
}

/* Lua's allocator with a byte count. When ptr is NULL, osize is a type tag,
 * not a size: only a live block has a size to give back. */
void *alloc_lua(void *ud, void *ptr, size_t osize, size_t nsize)
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
	if (e->cap_armed && !ptr && osize == LUA_TSTRING && nsize >= BIG_STRING && alloc_big_string(e, nsize))
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
