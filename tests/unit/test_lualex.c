/*
 * test_lualex.c — unit tests for src/lualex.c: Lua tokens as Lua's lexer
 * sees them (strings, long brackets, comments, lines), never past the end.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "lualex.h"

/* The names of text, one per line of out ("name@line"), strings as "s:body". */
static void names_of(const char *text, char *out, size_t outlen)
{
	struct lualex x;
	struct lualex_token t;
	size_t used = 0;

	out[0] = '\0';
	lualex_init(&x, text, strlen(text));
	while (lualex_next(&x, &t) != LUALEX_END && t.kind != LUALEX_BAD && used < outlen) {
		if (t.kind == LUALEX_NAME)
			used += (size_t)snprintf(out + used, outlen - used, "%.*s@%d ", (int)t.len,
			                         text + t.start, t.line);
		else if (t.kind == LUALEX_STRING)
			used += (size_t)snprintf(out + used, outlen - used, "s:%.*s@%d ", (int)t.body_len,
			                         text + t.body, t.line);
	}
	if (t.kind == LUALEX_BAD && used < outlen)
		snprintf(out + used, outlen - used, "BAD");
}

static void test_tokens(void **state)
{
	char out[512];

	(void)state;
	names_of("if a then -- if b then\nx = 'if \\' c' end", out, sizeof(out));
	assert_string_equal(out, "if@1 a@1 then@1 x@2 s:if \\' c@2 end@2 ");
	names_of("--[==[ if\n]] still\n]==] y = [[a\nb]] .. [=[]]]=] z", out, sizeof(out));
	assert_string_equal(out, "y@3 s:a\nb@3 s:]]@4 z@4 ");
	names_of("a\r\nb\n\rc\rd\n\ne", out, sizeof(out));
	assert_string_equal(out, "a@1 b@2 c@3 d@4 e@6 ");
	names_of("x = 1e-5 + 0x1p4 + .5 y", out, sizeof(out));
	assert_string_equal(out, "x@1 y@1 ");
	names_of("s = \"a\\z\n  b\" t", out, sizeof(out));
	assert_string_equal(out, "s@1 s:a\\z\n  b@1 t@2 ");
	names_of("a 'unfinished", out, sizeof(out));
	assert_string_equal(out, "a@1 BAD");
	names_of("a --[[ unfinished", out, sizeof(out));
	assert_string_equal(out, "a@1 BAD");
	names_of("", out, sizeof(out));
	assert_string_equal(out, "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_tokens),
	};
	return cmocka_run_group_tests_name("lualex", tests, NULL, NULL);
}
