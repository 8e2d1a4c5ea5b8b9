/*
 * lualex.h — the tokens of Lua 5.4 source text, for the tools that read a
 * policy without running it: the modules a policy requires (policyfiles.c)
 * and the branches `test --coverage` counts (policy/coverage.c).
 *
 * Comments, strings and long brackets are skipped as Lua's own lexer skips
 * them, so a `require` or an `if` inside a string or a comment is never a
 * token. It never validates (a malformed number is one token), never reads
 * past len and never allocates.
 */
#ifndef BROKER_LUALEX_H
#define BROKER_LUALEX_H

#include <stdbool.h>
#include <stddef.h>

enum lualex_kind {
	LUALEX_END,    /* no more tokens */
	LUALEX_NAME,   /* a name or a keyword */
	LUALEX_STRING, /* a short or long string: its content is body, body_len */
	LUALEX_OTHER,  /* a number or one character of punctuation */
	LUALEX_BAD     /* an unfinished string or long bracket: the text ends here */
};

struct lualex {
	const char *s;
	size_t len, pos;
	int line;
};

struct lualex_token {
	enum lualex_kind kind;
	size_t start, len;     /* the token's bytes in the text */
	int line;              /* the line it starts on (1-based) */
	size_t body, body_len; /* LUALEX_STRING: the bytes between its delimiters */
	bool escapes;          /* LUALEX_STRING: a backslash in a short string's body */
};

void lualex_init(struct lualex *x, const char *s, size_t len);

/* The next token into t; returns t->kind. */
enum lualex_kind lualex_next(struct lualex *x, struct lualex_token *t);

/* Whether t is the name (or keyword) word. */
bool lualex_is(const struct lualex *x, const struct lualex_token *t, const char *word);

#endif
