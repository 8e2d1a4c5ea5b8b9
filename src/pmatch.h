/*
 * pmatch.h — Lua 5.4 string patterns with a step budget.
 *
 * string.find, string.match, string.gmatch and string.gsub for policies,
 * with the semantics of Lua 5.4's own (manual §6.4.1), but counting their
 * work: Lua's matcher backtracks in C, where no hook runs, so a pattern
 * like ("a*"):rep(30).."b" against 5000 bytes would hold a worker for
 * minutes. Here every step of the matcher (one attempt at one position,
 * one character tried by a repetition, one byte of a balance or 16 bytes of
 * a plain search) is charged to the caller through charge(), which may stop
 * the match by returning non-zero.
 */
#ifndef BROKER_PMATCH_H
#define BROKER_PMATCH_H

struct lua_State;

#define PMATCH_CHUNK 4096 /* steps between two calls of charge */

struct pmatch_budget {
	/* Called with the steps spent since the last call (at most
	 * PMATCH_CHUNK, and once at the end of each matching call). Returns 0
	 * to go on; non-zero ends the match with an error "pattern matching
	 * budget exceeded" (the host is expected to have recorded the breach). */
	int (*charge)(struct lua_State *L, unsigned long steps);
};

/* Sets find, match, gmatch and gsub in the table at index t, charging b
 * (which must outlive the state). */
void pmatch_register(struct lua_State *L, int t, const struct pmatch_budget *b);

#endif
