/*
 * fuzz_courier.c — libFuzzer driver for reading Courier's answers (src/courier.c).
 *
 * Owns the properties: whatever Courier (or something posing as it) answers,
 * courier_read_token never crashes, leaves exactly the token on the stack or
 * nothing, and accepts only a JWT-shaped token string.
 */
#include <lauxlib.h>
#include <lua.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "courier.h"
#include "fuzz_lua.h"
#include "json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	lua_State *L = fuzz_lua();
	char *s = fuzz_copy(data, size);
	const char *tok;
	size_t len = 0;
	long long exp = -1;
	int top;

	if (!s)
		return 0;
	top = lua_gettop(L);
	tok = courier_read_token(L, s, size, &len, &exp);
	if (tok) {
		int dots = 0;
		if (lua_gettop(L) != top + 1 || len < 5)
			abort();
		for (size_t i = 0; i < len; i++) {
			char c = tok[i];
			if (c == '.')
				dots++;
			else if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			           (c >= '0' && c <= '9') || c == '-' || c == '_'))
				abort();
		}
		if (dots != 2)
			abort();
	} else if (lua_gettop(L) != top || exp != 0) {
		abort();
	}
	lua_settop(L, top);
	free(s);
	return 0;
}
