/*
 * fuzz_denyfile.c — libFuzzer driver for killswitch_set_parse
 * (src/killswitch.c): the bytes are the text of a deny_users file.
 *
 * Owns the properties: whatever the text, parsing never crashes or leaks;
 * a refusal says why; a set that loads holds no more ids than the file has
 * lines, and every id it holds is found again by killswitch_set_has (its
 * order is the one bsearch needs); each line of the file, trimmed, that is
 * a valid user id is in the set. A breach aborts, so libFuzzer records the
 * input.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "killswitch.h"
#include "scope.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char why[300] = "";
	struct killswitch_set *s = killswitch_set_parse("fuzz", (const char *)data, size, why, sizeof(why));
	const char *p = (const char *)data, *end = p + size;
	size_t lines = 0;
	char id[300];

	if (!s) {
		if (!why[0])
			abort(); /* a refusal must say why */
		return 0;
	}
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p)), *a = p, *b = nl ? nl : end;
		lines++;
		p = nl ? nl + 1 : end;
		while (a < b && space(*a))
			a++;
		while (b > a && space(b[-1]))
			b--;
		if (a == b || *a == '#' || (size_t)(b - a) >= sizeof(id) ||
		    !scope_user_id_valid(a, (size_t)(b - a)))
			continue;
		memcpy(id, a, (size_t)(b - a));
		id[b - a] = '\0';
		if (!killswitch_set_has(s, id))
			abort(); /* a listed id that matches no request */
	}
	if (killswitch_set_size(s) > lines)
		abort();
	if (killswitch_set_has(s, "") && killswitch_set_size(s) == 0)
		abort();
	killswitch_set_ref(s);
	killswitch_set_unref(s);
	killswitch_set_unref(s);
	return 0;
}
