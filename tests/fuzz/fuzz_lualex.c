/*
 * fuzz_lualex.c — libFuzzer driver for src/lualex.c and the branch
 * instrumentation built on it (src/policy/coverage.c).
 *
 * Owns the properties every input must keep: the tokenizer never reads past
 * len, tokens stay inside the text in order and lines never go back; an
 * instrumented text keeps every line break of the original and lists sites
 * on lines of the text. Must never write outside its own buffers.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lualex.h"
#include "policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t breaks(const char *s, size_t len)
{
	size_t n = 0;
	for (size_t i = 0; i < len; i++)
		n += s[i] == '\n';
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* An exact-size heap copy, so ASan catches any read past len. */
	char *s = malloc(size ? size : 1), *out;
	struct lualex x;
	struct lualex_token t;
	size_t last = 0, outlen, n;
	int line = 1, *lines;

	if (s == NULL)
		return 0;
	memcpy(s, data, size);
	lualex_init(&x, s, size);
	while (lualex_next(&x, &t) != LUALEX_END && t.kind != LUALEX_BAD) {
		if (t.start < last || t.start + t.len > size || t.line < line || t.len == 0)
			abort();
		if (t.kind == LUALEX_STRING && (t.body < t.start || t.body + t.body_len > t.start + t.len))
			abort();
		last = t.start + t.len;
		line = t.line;
	}
	if (policy_branch_instrument(s, size, &out, &outlen, &lines, &n) == 0) {
		if (breaks(out, outlen) != breaks(s, size))
			abort();
		for (size_t i = 0; i < n; i++)
			if (lines[i] < 1 || (size_t)lines[i] > size + 1)
				abort();
		free(out);
		free(lines);
	}
	free(s);
	return 0;
}
