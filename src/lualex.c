/*
 * lualex.c — tokens of Lua 5.4 source text (see lualex.h).
 *
 * Owns skipping blanks, line breaks, comments, short strings and long
 * brackets the way Lua's llex.c does, and counting lines as it does ("\r\n"
 * and "\n\r" are one break). It must never read past len, never allocate,
 * and never treat the inside of a string or comment as tokens.
 */
#include "lualex.h"

#include <string.h>

void lualex_init(struct lualex *x, const char *s, size_t len)
{
	x->s = s;
	x->len = len;
	x->pos = 0;
	x->line = 1;
}

static bool is_break(char c)
{
	return c == '\n' || c == '\r';
}

/* Steps over the line break at pos, counting it once. */
static void skip_break(struct lualex *x)
{
	char c = x->s[x->pos++];

	if (x->pos < x->len && is_break(x->s[x->pos]) && x->s[x->pos] != c)
		x->pos++;
	x->line++;
}

/* At '[': the level of a long bracket "[==[" (its '='s), or -1 when it is none. */
static int long_level(const struct lualex *x, size_t at)
{
	size_t i = at + 1;
	int level = 0;

	while (i < x->len && x->s[i] == '=') {
		i++;
		level++;
	}
	return i < x->len && x->s[i] == '[' ? level : -1;
}

/* Skips a long bracket of level at pos (its "[==["); body set. false when unclosed. */
static bool skip_long(struct lualex *x, int level, size_t *body, size_t *body_len)
{
	x->pos += (size_t)level + 2;
	*body = x->pos;
	while (x->pos < x->len) {
		char c = x->s[x->pos];
		if (c == ']') {
			size_t i = x->pos + 1;
			int n = 0;
			while (i < x->len && x->s[i] == '=') {
				i++;
				n++;
			}
			if (n == level && i < x->len && x->s[i] == ']') {
				*body_len = x->pos - *body;
				x->pos = i + 1;
				return true;
			}
			x->pos++;
		} else if (is_break(c)) {
			skip_break(x);
		} else {
			x->pos++;
		}
	}
	return false;
}

/* Skips a short string at pos; false when unfinished. */
static bool skip_short(struct lualex *x, struct lualex_token *t)
{
	char q = x->s[x->pos++];

	t->body = x->pos;
	while (x->pos < x->len) {
		char c = x->s[x->pos];
		if (c == q) {
			t->body_len = x->pos - t->body;
			x->pos++;
			return true;
		}
		if (is_break(c))
			return false;
		if (c == '\\') {
			t->escapes = true;
			x->pos++;
			if (x->pos < x->len && is_break(x->s[x->pos])) {
				skip_break(x);
				continue;
			}
			if (x->pos + 1 < x->len && x->s[x->pos] == 'z') { /* \z skips the blanks after it */
				x->pos++;
				while (x->pos < x->len && strchr(" \t\v\f\r\n", x->s[x->pos]) && x->s[x->pos])
					if (is_break(x->s[x->pos]))
						skip_break(x);
					else
						x->pos++;
				continue;
			}
		}
		x->pos++;
	}
	return false;
}

static bool is_name_start(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_name_char(char c)
{
	return is_name_start(c) || (c >= '0' && c <= '9');
}

enum lualex_kind lualex_next(struct lualex *x, struct lualex_token *t)
{
	memset(t, 0, sizeof(*t));
	for (;;) {
		char c;
		if (x->pos >= x->len) {
			t->kind = LUALEX_END;
			t->start = x->len;
			t->line = x->line;
			return t->kind;
		}
		c = x->s[x->pos];
		if (is_break(c)) {
			skip_break(x);
		} else if (c == ' ' || c == '\t' || c == '\v' || c == '\f') {
			x->pos++;
		} else if (c == '-' && x->pos + 1 < x->len && x->s[x->pos + 1] == '-') {
			int level;
			size_t b, bl;
			x->pos += 2;
			if (x->pos < x->len && x->s[x->pos] == '[' && (level = long_level(x, x->pos)) >= 0) {
				if (!skip_long(x, level, &b, &bl)) {
					t->kind = LUALEX_BAD;
					return t->kind;
				}
			} else {
				while (x->pos < x->len && !is_break(x->s[x->pos]))
					x->pos++;
			}
		} else {
			break;
		}
	}
	t->start = x->pos;
	t->line = x->line;
	if (is_name_start(x->s[x->pos])) {
		while (x->pos < x->len && is_name_char(x->s[x->pos]))
			x->pos++;
		t->kind = LUALEX_NAME;
	} else if (x->s[x->pos] == '"' || x->s[x->pos] == '\'') {
		t->kind = skip_short(x, t) ? LUALEX_STRING : LUALEX_BAD;
	} else if (x->s[x->pos] == '[' && long_level(x, x->pos) >= 0) {
		t->kind =
		    skip_long(x, long_level(x, x->pos), &t->body, &t->body_len) ? LUALEX_STRING : LUALEX_BAD;
	} else if ((x->s[x->pos] >= '0' && x->s[x->pos] <= '9') ||
	           (x->s[x->pos] == '.' && x->pos + 1 < x->len && x->s[x->pos + 1] >= '0' &&
	            x->s[x->pos + 1] <= '9')) {
		while (x->pos < x->len) { /* a number: digits, letters, '.', and a sign after an exponent */
			char c = x->s[x->pos], p = x->pos > t->start ? x->s[x->pos - 1] : ' ';
			if (is_name_char(c) || c == '.' ||
			    ((c == '+' || c == '-') && (p == 'e' || p == 'E' || p == 'p' || p == 'P')))
				x->pos++;
			else
				break;
		}
		t->kind = LUALEX_OTHER;
	} else {
		x->pos++;
		t->kind = LUALEX_OTHER;
	}
	t->len = x->pos - t->start;
	return t->kind;
}

bool lualex_is(const struct lualex *x, const struct lualex_token *t, const char *word)
{
	size_t n = strlen(word);

	return t->kind == LUALEX_NAME && t->len == n && memcmp(x->s + t->start, word, n) == 0;
}
