/*
 * policy/brokerlib.c — the broker library a policy calls.
 *
 * Owns broker.duration, broker.log (print too), broker.cidr_match and
 * broker.tiers. It must never let a policy write outside the decision's log,
 * nor read an address with another rule than trusted_proxy.from (cidr.h).
 */
#include "state.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>
#include <string.h>

#include "cidr.h"
#include "duration.h"
#include "scope.h"
#include "utf8.h"

/* broker.duration(d): seconds in a duration string ("1h"), or d itself
 * when it is already whole seconds (an integer, or a float with a whole
 * value, as a JSON number may be): clients send expires_in both ways. The
 * bounds are duration_parse's (1 s to 10 years) either way. */
static int broker_duration(lua_State *L)
{
	size_t len;
	const char *s;
	long long secs;

	if (lua_type(L, 1) == LUA_TNUMBER) {
		int whole;
		lua_Integer n = lua_tointegerx(L, 1, &whole);
		if (!whole)
			return luaL_error(L, "broker.duration: %f is not whole seconds", lua_tonumber(L, 1));
		if (n < 1 || n > DURATION_MAX_S)
			return luaL_error(L, "broker.duration: %I seconds is outside 1 s to 10 years", n);
		lua_pushinteger(L, n);
		return 1;
	}
	if (lua_type(L, 1) != LUA_TSTRING)
		return luaL_error(L,
		                  "broker.duration: expected a string like \"1h\" or whole seconds, got %s",
		                  luaL_typename(L, 1));
	s = lua_tolstring(L, 1, &len);
	if (duration_parse(s, len, &secs) != 0)
		return luaL_error(L, "broker.duration: invalid duration \"%s\"", s);
	lua_pushinteger(L, (lua_Integer)secs);
	return 1;
}

/*
 * Appends s (len bytes) to dst (used bytes of cap, a NUL kept room for) as
 * valid UTF-8: each byte that does not start a well-formed character
 * becomes U+FFFD, a character that does not fit whole is left out (never
 * cut), and when flat, line breaks and NULs become spaces. Returns the new
 * used count. What a policy returns or logs reaches JSON log lines and
 * response bodies, which must be UTF-8.
 */
size_t brokerlib_utf8_append(char *dst, size_t used, size_t cap, const char *s, size_t len, bool flat)
{
	const unsigned char *p = (const unsigned char *)s;

	for (size_t i = 0; i < len;) {
		uint32_t cp;
		size_t n = utf8_decode(p + i, len - i, &cp);
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
 * (brokerlib_utf8_append), kept for the last decision (policy_decision_log): at most
 * LOG_LINES lines and LOG_MAX bytes. */
int brokerlib_log(lua_State *L)
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
			e->log_len =
			    brokerlib_utf8_append(e->log, e->log_len, sizeof(e->log) - 2, s, len, true);
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

/* Whether ip (16 bytes, cidr.h's mapped form) is in the CIDR at index idx;
 * raises on a CIDR that breaks cidr.h's rule (trusted_proxy.from's): that
 * is a mistake in the policy, not in the request. */
static int in_cidr(lua_State *L, const unsigned char ip[16], int idx)
{
	size_t len;
	const char *c = lua_tolstring(L, idx, &len);
	struct cidr net;

	if (!c || cidr_parse(c, len, &net) != 0)
		return luaL_error(L,
		                  "broker.cidr_match: \"%s\" is not a CIDR such as \"10.0.0.0/8\" or "
		                  "\"2001:db8::/32\" (no host bits set, no leading zeros)",
		                  c ? c : luaL_typename(L, idx));
	return cidr_contains(&net, ip);
}

/* broker.cidr_match(ip, cidr or list of cidrs): false for an ip that is not
 * an address (request data); an error for a malformed CIDR (policy data). */
static int broker_cidr_match(lua_State *L)
{
	unsigned char ip[16];
	size_t len;
	const char *s;
	int found = 0;

	if (lua_type(L, 2) != LUA_TSTRING && lua_type(L, 2) != LUA_TTABLE)
		return luaL_error(L, "broker.cidr_match: expected a CIDR string or a list of them, got %s",
		                  luaL_typename(L, 2));
	s = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &len) : NULL;
	if (!s || cidr_addr_parse(s, len, ip) != 0) {
		lua_pushboolean(L, 0);
		return 1;
	}
	if (lua_type(L, 2) == LUA_TSTRING) {
		found = in_cidr(L, ip, 2);
	} else {
		lua_Integer n = luaL_len(L, 2);
		budget_charge_items(L, n, "broker.cidr_match");
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

/* Pushes the broker table (registry ref_broker; the caller wraps it in a
 * view): tiers, duration, log, cidr_match. */
void brokerlib_open(lua_State *L, struct policy_engine *e)
{
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
	lua_pushcfunction(L, brokerlib_log);
	lua_setfield(L, -2, "log");
	lua_pushcfunction(L, broker_cidr_match);
	lua_setfield(L, -2, "cidr_match");
	lua_pushvalue(L, -1);
	e->ref_broker = luaL_ref(L, LUA_REGISTRYINDEX);
}
