/*
 * value.c — reading one option's value from the file's Lua table, and storing it.
 *
 * Owns the reading of Lua values by raw access (strings, numbers, booleans,
 * durations, lists, secret references), the generic store into struct config
 * or struct tenant (config_fail, the error text, is report.c's). It must never run code from the file (no
 * metamethod, no call), never echo a value that may be a secret, and never write past a buffer: key paths too
 * long are cut.
 */
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "duration.h"
#include "fileio.h"
#include "loader.h"

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

const char *config_value_kind(lua_State *L, int idx)
{
	if (lua_type(L, idx) == LUA_TNUMBER)
		return lua_isinteger(L, idx) ? "integer" : "number";
	return luaL_typename(L, idx);
}

void config_free_list(char **list)
{
	if (!list)
		return;
	for (char **p = list; *p; p++)
		free(*p);
	free(list);
}

void config_value_release(struct value *v)
{
	config_free_list(v->list);
	v->list = NULL;
	free(v->ref.env);
	free(v->ref.file);
	v->ref.env = v->ref.file = NULL;
}

static void store_uint(void *p, size_t size, unsigned long long v)
{
	/* Every integer bound is non-negative, so the member's width is all that matters. */
	switch (size) {
	case 1: {
		uint8_t x = (uint8_t)v;
		memcpy(p, &x, 1);
		break;
	}
	case 2: {
		uint16_t x = (uint16_t)v;
		memcpy(p, &x, 2);
		break;
	}
	case 4: {
		uint32_t x = (uint32_t)v;
		memcpy(p, &x, 4);
		break;
	}
	default: {
		uint64_t x = (uint64_t)v;
		memcpy(p, &x, 8);
		break;
	}
	}
}

/* ------------------------------------------------------------------------ */
/* Reading one value                                                         */
/* ------------------------------------------------------------------------ */

static int read_string(struct loader *ld, const char *key, int idx, struct value *v)
{
	lua_State *L = ld->L;

	if (lua_type(L, idx) != LUA_TSTRING)
		return config_fail(ld, key, "expected a string, got %s", config_value_kind(L, idx));
	v->str = lua_tolstring(L, idx, &v->len);
	if (v->len == 0)
		return config_fail(ld, key, "must not be empty");
	if (strlen(v->str) != v->len)
		return config_fail(ld, key, "must not contain a NUL byte");
	return 0;
}

int config_list_length(lua_State *L, int idx, size_t *n_out)
{
	size_t n = (size_t)lua_rawlen(L, idx), count = 0;

	lua_pushnil(L);
	while (lua_next(L, idx)) {
		lua_pop(L, 1);
		count++;
		if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || (size_t)lua_tointeger(L, -1) > n) {
			lua_pop(L, 1);
			return -1;
		}
	}
	*n_out = n;
	return count == n ? 0 : -2;
}

static int read_list(struct loader *ld, const char *key, int idx, struct value *v)
{
	lua_State *L = ld->L;
	char sub[256];
	size_t n = 0;

	idx = lua_absindex(L, idx);
	if (lua_type(L, idx) != LUA_TTABLE)
		return config_fail(ld, key, "expected a list of strings, got %s", config_value_kind(L, idx));
	switch (config_list_length(L, idx, &n)) {
	case -1:
		return config_fail(ld, key, "expected a list of strings, got a table with other keys");
	case -2:
		return config_fail(ld, key, "expected a list of strings, got a list with holes");
	}
	v->list = calloc(n + 1, sizeof(char *));
	if (!v->list)
		return config_fail(ld, key, "out of memory");
	for (size_t i = 0; i < n; i++) {
		const char *s;
		size_t len;
		lua_rawgeti(L, idx, (lua_Integer)i + 1);
		config_key_printf(sub, sizeof(sub), "%s[%zu]", key, i + 1);
		if (lua_type(L, -1) != LUA_TSTRING) {
			config_fail(ld, sub, "expected a string, got %s", config_value_kind(L, -1));
			lua_pop(L, 1);
			return -1;
		}
		s = lua_tolstring(L, -1, &len);
		if (len == 0 || strlen(s) != len) {
			lua_pop(L, 1);
			return config_fail(ld, sub,
			                   len ? "must not contain a NUL byte" : "must not be empty");
		}
		v->list[i] = strdup(s);
		lua_pop(L, 1);
		if (!v->list[i])
			return config_fail(ld, sub, "out of memory");
	}
	v->n = n;
	return 0;
}

static const char secret_shape[] = "must be { env = ... } or { file = ... }";

/* One string field of a secret table: { env = "NAME" }, { file = "PATH" } or
 * { credential = "NAME" } (systemd: $CREDENTIALS_DIRECTORY/NAME). */
static int secret_field(struct loader *ld, const char *key, int idx, const char *field, char **out)
{
	lua_State *L = ld->L;
	char sub[256];
	const char *s;
	size_t len;

	config_key_printf(sub, sizeof(sub), "%s.%s", key, field);
	lua_pushstring(L, field);
	lua_rawget(L, idx);
	if (lua_type(L, -1) != LUA_TSTRING) {
		config_fail(ld, sub, "expected a string, got %s", config_value_kind(L, -1));
		lua_pop(L, 1);
		return -1;
	}
	s = lua_tolstring(L, -1, &len);
	if (len == 0 || strlen(s) != len || (field[0] == 'e' && strchr(s, '='))) {
		lua_pop(L, 1);
		return config_fail(ld, sub,
		                   field[0] == 'e' ? "not an environment variable name" : "not a path");
	}
	if (field[0] == 'c') {
		/* systemd's LoadCredential=/SetCredential=: a file of the service's
		 * own credentials folder, named without any path. */
		const char *cdir = getenv("CREDENTIALS_DIRECTORY");
		if (strchr(s, '/') || strcmp(s, ".") == 0 || strcmp(s, "..") == 0) {
			lua_pop(L, 1);
			return config_fail(ld, sub, "not a credential name (no \"/\")");
		}
		if (!cdir || cdir[0] != '/') {
			lua_pop(L, 1);
			return config_fail(ld, sub,
			                   "$CREDENTIALS_DIRECTORY is not set (systemd sets it for a unit "
			                   "with LoadCredential=)");
		}
		*out = fileio_join(cdir, s);
	} else {
		*out = field[0] == 'e' ? strdup(s) : fileio_join(ld->cfg->dir, s);
	}
	lua_pop(L, 1);
	if (!*out)
		return config_fail(ld, key, "out of memory");
	return 0;
}

int config_read_secret(struct loader *ld, const char *key, int idx, struct value *v)
{
	lua_State *L = ld->L;
	bool env = false, file = false, credential = false, other = false;

	idx = lua_absindex(L, idx);
	/* Never print the value: a literal here is most likely the secret itself. */
	if (lua_type(L, idx) == LUA_TSTRING || lua_type(L, idx) == LUA_TNUMBER)
		return config_fail(ld, key, "%s: literal secrets are refused", secret_shape);
	if (lua_type(L, idx) != LUA_TTABLE)
		return config_fail(ld, key, "%s, got %s", secret_shape, config_value_kind(L, idx));
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		lua_pop(L, 1);
		if (lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "env") == 0)
			env = true;
		else if (lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "file") == 0)
			file = true;
		else if (lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "credential") == 0)
			credential = true;
		else
			other = true;
	}
	if (other || (int)env + (int)file + (int)credential != 1)
		return config_fail(ld, key, "%s, with exactly one of the two keys", secret_shape);
	if (env)
		return secret_field(ld, key, idx, "env", &v->ref.env);
	/* A credential is a file the platform put in place: the same rules. */
	return secret_field(ld, key, idx, credential ? "credential" : "file", &v->ref.file);
}

/* Fills v from the default text of a row, the way the file would have. */
static int read_default(struct loader *ld, const struct option *o, const char *key, struct value *v)
{
	char *end = NULL;

	v->present = true;
	switch (o->type) {
	case OPT_STRING:
	case OPT_DURATION:
		v->str = o->def;
		v->len = strlen(o->def);
		return 0;
	case OPT_INT:
		v->i = strtoll(o->def, &end, 10);
		break;
	case OPT_NUMBER:
		v->num = strtod(o->def, &end);
		break;
	case OPT_BOOL:
		v->b = strcmp(o->def, "true") == 0;
		return 0;
	default:
		break;
	}
	if (!end || *end)
		return config_fail(ld, key, "internal error: bad default \"%s\"", o->def);
	return 0;
}

/* Fills v from the Lua value at idx (nil: absent, then the row's default). */
int config_read_value(struct loader *ld, const struct option *o, const char *key, int idx, struct value *v)
{
	lua_State *L = ld->L;
	int isint = 0;

	if (lua_isnil(L, idx)) {
		if (o->flags & OPT_REQUIRED)
			return config_fail(ld, key, "is required");
		if (!o->def || (o->flags & OPT_PROSE_DEFAULT))
			return 0;
		return read_default(ld, o, key, v);
	}
	if (o->flags & OPT_UNSUPPORTED)
		return config_fail(ld, key, "not supported yet in this version");
	v->present = true;
	switch (o->type) {
	case OPT_STRING:
		return read_string(ld, key, idx, v);
	case OPT_DURATION:
		if (lua_type(L, idx) == LUA_TNUMBER)
			return config_fail(
			    ld, key,
			    "expected a duration string such as \"1h\" or \"7d\", got a number "
			    "(write the unit: Courier reads a bare number as milliseconds)");
		return read_string(ld, key, idx, v);
	case OPT_INT:
		if (lua_type(L, idx) != LUA_TNUMBER)
			return config_fail(ld, key, "expected an integer, got %s", config_value_kind(L, idx));
		v->i = (long long)lua_tointegerx(L, idx, &isint);
		if (!isint)
			return config_fail(ld, key, "expected an integer, got %s", config_value_kind(L, idx));
		if ((double)v->i < o->min || (double)v->i > o->max)
			return config_fail(ld, key, "%lld is out of bounds (%.0f..%.0f)", v->i, o->min,
			                   o->max);
		return 0;
	case OPT_NUMBER:
		if (lua_type(L, idx) != LUA_TNUMBER)
			return config_fail(ld, key, "expected a number, got %s", config_value_kind(L, idx));
		v->num = (double)lua_tonumber(L, idx);
		if (!isfinite(v->num) || v->num < o->min || v->num > o->max)
			return config_fail(ld, key, "%g is out of bounds (%g..%g)", v->num, o->min, o->max);
		return 0;
	case OPT_BOOL:
		if (lua_type(L, idx) != LUA_TBOOLEAN)
			return config_fail(ld, key, "expected a boolean, got %s", config_value_kind(L, idx));
		v->b = lua_toboolean(L, idx);
		return 0;
	case OPT_SECRET:
		return config_read_secret(ld, key, idx, v);
	case OPT_LIST:
		return read_list(ld, key, idx, v);
	case OPT_TABLE_LIST:
		if (lua_type(L, idx) != LUA_TTABLE)
			return config_fail(ld, key, "expected a list of tables, got %s",
			                   config_value_kind(L, idx));
		v->idx = lua_absindex(L, idx);
		return 0;
	case OPT_TABLE:
	case OPT_MAP:
		break;
	}
	return config_fail(ld, key, "internal error: not a value");
}

/* Stores a value at the row's member, or hands it to the row's converter. */
int config_store_value(struct loader *ld, const struct option *o, const char *key, struct value *v,
                       void *base)
{
	char *p = (char *)base + o->offset;

	if (o->convert)
		return o->convert(ld, key, v, base);
	if (!v->present || o->size == 0)
		return 0;
	switch (o->type) {
	case OPT_STRING: {
		char *s = strndup(v->str, v->len);
		if (!s)
			return config_fail(ld, key, "out of memory");
		memcpy(p, &s, sizeof(s));
		return 0;
	}
	case OPT_INT:
		store_uint(p, o->size, (unsigned long long)v->i);
		return 0;
	case OPT_NUMBER:
		memcpy(p, &v->num, sizeof(v->num));
		return 0;
	case OPT_BOOL:
		memcpy(p, &v->b, sizeof(v->b));
		return 0;
	case OPT_DURATION: {
		long long secs = 0;
		if (duration_parse(v->str, v->len, &secs) != 0)
			return config_fail(
			    ld, key,
			    "\"%s\" is not a duration (write a number and a unit, such as \"30m\", "
			    "\"1h\", \"7d\"; at least 1s, at most 10y)",
			    v->str);
		memcpy(p, &secs, sizeof(secs));
		return 0;
	}
	case OPT_SECRET:
		/* Read by config_resolve, outside the sandbox. */
		return config_defer_secret(ld, key, &v->ref, (struct secret *)(void *)p);
	case OPT_LIST:
	case OPT_TABLE_LIST:
	case OPT_TABLE:
	case OPT_MAP:
		break;
	}
	return 0;
}
