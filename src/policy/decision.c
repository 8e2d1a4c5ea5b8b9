/*
 * policy/decision.c — the type check of what a policy returns.
 *
 * Owns decision_check: a policy's result read into struct decision, every
 * field type-checked and bounded. It must never accept a decision it cannot
 * read exactly, nor apply the envelope (the caller does).
 */
#include "state.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "duration.h"
#include "envelope.h"
#include "scope.h"

/* ------------------------------------------------------------- decisions */

static int bad(char *err, size_t errlen, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Writes "path: invalid decision: ..." into err; returns -1. */
static int bad(char *err, size_t errlen, const char *path, const char *fmt, ...)
{
	char msg[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(err, errlen, "%s: invalid decision: %s", path, msg);
	return -1;
}

static int check_scopes(lua_State *L, struct policy_engine *e, int v, struct decision *out, const char *path,
                        char *err, size_t errlen)
{
	lua_Integer n;
	int count = 0;

	view_unwrap(L, e, v);
	if (lua_type(L, v) != LUA_TTABLE)
		return bad(err, errlen, path, "scopes must be a list of strings, got %s",
		           luaL_typename(L, v));
	n = (lua_Integer)lua_rawlen(L, v);
	lua_pushnil(L);
	while (lua_next(L, v)) {
		lua_pop(L, 1);
		if (++count > DECISION_MAX_SCOPES) {
			lua_pop(L, 1);
			break;
		}
	}
	if (count > DECISION_MAX_SCOPES || n > DECISION_MAX_SCOPES)
		return bad(err, errlen, path, "scopes has more than %d entries", DECISION_MAX_SCOPES);
	if (n < 1 || count != n)
		return bad(err, errlen, path, "scopes must be a list of 1 to %d strings without holes",
		           DECISION_MAX_SCOPES);
	for (lua_Integer i = 1; i <= n; i++) {
		size_t len;
		const char *s;
		if (lua_rawgeti(L, v, i) != LUA_TSTRING)
			return bad(err, errlen, path, "scopes entries must be strings, got %s",
			           luaL_typename(L, -1));
		s = lua_tolstring(L, -1, &len);
		if (len == 0 || envelope_add_scope(out, s, len) != 0)
			return bad(err, errlen, path, "scope \"%s\" is empty, too long or holds a NUL byte",
			           s);
		lua_pop(L, 1);
	}
	return 0;
}

static int check_tier(lua_State *L, int v, struct decision *out, const char *path, char *err, size_t errlen)
{
	size_t len;
	const char *s;
	const char *const *list;

	if (lua_type(L, v) != LUA_TSTRING)
		return bad(err, errlen, path, "tier must be a string, got %s", luaL_typename(L, v));
	s = lua_tolstring(L, v, &len);
	list = strlen(s) == len ? scope_tier(s) : NULL;
	if (!list)
		return bad(err, errlen, path, "unknown tier \"%s\" (inbox, preferences or push)", s);
	for (; *list; list++)
		if (envelope_add_scope(out, *list, strlen(*list)) != 0)
			return bad(err, errlen, path, "%s", "tier scopes do not fit");
	return 0;
}

static int check_expires(lua_State *L, int v, struct decision *out, const char *path, char *err,
                         size_t errlen)
{
	if (lua_type(L, v) == LUA_TNUMBER) {
		lua_Integer i;
		if (lua_isinteger(L, v))
			i = lua_tointeger(L, v);
		else if (!lua_numbertointeger(lua_tonumber(L, v), &i) || (lua_Number)i != lua_tonumber(L, v))
			return bad(err, errlen, path, "%s", "expires_in must be a whole number of seconds");
		if (i <= 0)
			return bad(err, errlen, path, "%s", "expires_in must be positive");
		out->expires_s = (long long)i;
		return 0;
	}
	if (lua_type(L, v) == LUA_TSTRING) {
		size_t len;
		const char *s = lua_tolstring(L, v, &len);
		long long secs;
		if (duration_parse(s, len, &secs) != 0)
			return bad(
			    err, errlen, path,
			    "expires_in \"%s\" is not a duration with a unit (\"3600s\", \"1h\", \"7d\")", s);
		out->expires_s = secs;
		return 0;
	}
	return bad(err, errlen, path, "expires_in must be seconds or a duration string, got %s",
	           luaL_typename(L, v));
}

/* The index in decision_keys of the string key at idx, or -1. A policy's
 * "allow" is, in Lua 5.4, the very string the engine keeps (short strings
 * are interned): comparing the pointers answers at once. Any other string
 * gets the bytes compared, so the answer never rests on interning. */
static int decision_field(lua_State *L, const struct policy_engine *e, int idx)
{
	size_t len;
	const char *k = lua_tolstring(L, idx, &len);

	for (int i = 0; i < DECISION_FIELDS; i++)
		if (k == e->field_names[i])
			return i;
	for (int i = 0; i < DECISION_FIELDS; i++) {
		const char *name = key_names[decision_keys[i]];
		if (strlen(name) == len && memcmp(name, k, len) == 0)
			return i;
	}
	return -1;
}

/* Type-checks the decision at idx (on e->L) into out. */
int decision_check(lua_State *L, struct policy_engine *e, int idx, const char *path, struct decision *out,
                   char *err, size_t errlen)
{
	int allow, f_scopes, f_tier, f_exp, f_reason, rc, slots;

	view_unwrap(L, e, idx);
	if (lua_type(L, idx) != LUA_TTABLE)
		return bad(err, errlen, path, "decide must return a table, got %s", luaL_typename(L, idx));
	/* One pass: every key must be a field, whose value goes to its slot
	 * (slots + index in decision_keys; nil when absent). */
	luaL_checkstack(L, 8, NULL);
	slots = lua_gettop(L) + 1;
	lua_settop(L, slots + 4);
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		int f;
		if (lua_type(L, -2) != LUA_TSTRING)
			return bad(err, errlen, path, "unknown field of type %s", luaL_typename(L, -2));
		f = decision_field(L, e, -2);
		if (f < 0)
			return bad(err, errlen, path,
			           "unknown field '%s' (allow, scopes, tier, expires_in, reason)",
			           lua_tostring(L, -2));
		lua_replace(L, slots + f);
	}

	if (lua_type(L, slots) != LUA_TBOOLEAN)
		return bad(err, errlen, path, "allow must be true or false, got %s", luaL_typename(L, slots));
	allow = lua_toboolean(L, slots);
	f_scopes = lua_isnil(L, slots + 1) ? 0 : slots + 1;
	f_tier = lua_isnil(L, slots + 2) ? 0 : slots + 2;
	f_exp = lua_isnil(L, slots + 3) ? 0 : slots + 3;
	f_reason = lua_isnil(L, slots + 4) ? 0 : slots + 4;

	if (f_reason) {
		size_t len;
		const char *s;
		if (lua_type(L, f_reason) != LUA_TSTRING)
			return bad(err, errlen, path, "reason must be a string, got %s",
			           luaL_typename(L, f_reason));
		s = lua_tolstring(L, f_reason, &len);
		/* At most 255 bytes, cut between characters, valid UTF-8. */
		brokerlib_utf8_append(out->reason, 0, sizeof(out->reason), s, len, false);
	}
	if (allow && !f_scopes == !f_tier)
		return bad(err, errlen, path, "%s",
		           "an allowing decision needs exactly one of scopes and tier");
	rc = 0;
	if (f_scopes)
		rc = check_scopes(L, e, f_scopes, out, path, err, errlen);
	if (!rc && f_tier)
		rc = check_tier(L, f_tier, out, path, err, errlen);
	if (!rc && f_exp)
		rc = check_expires(L, f_exp, out, path, err, errlen);
	if (rc)
		return rc;
	out->allow = allow;
	if (!allow) {
		out->n_scopes = 0;
		out->strbuf_used = 0;
		out->expires_s = 0;
	}
	return 0;
}
