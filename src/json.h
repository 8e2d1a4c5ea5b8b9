/*
 * json.h — JSON through lua-cjson on a caller's Lua state.
 *
 * Every JSON document the broker reads or writes (request bodies, JWT parts,
 * Courier's answers, responses, log lines) goes through these two calls, so
 * the decoder's limits are set in one place: no NaN/Infinity/hex numbers, a
 * nesting depth of 32, no number that overflows to infinity, no NUL byte
 * inside a document, integral numbers turned into Lua integers.
 */
#ifndef BROKER_JSON_H
#define BROKER_JSON_H

#include <stddef.h>

struct lua_State;

#define JSON_MAX_DEPTH 32

/* Loads and configures cjson into L's registry. Thread-safe (cjson's first
 * open writes a static: serialised here). Returns 0 or -1. */
int json_open(struct lua_State *L);

/* Decodes len bytes; on success pushes the value and returns 0; on failure
 * pushes nothing and returns -1. Floats with an integral value in ±2^53 become
 * integers. */
int json_decode(struct lua_State *L, const char *buf, size_t len);

/* json_decode for a document that must be an object ({...}: cjson makes a
 * table of an array too, so the text is checked): pushes the table and
 * returns 0, or pushes nothing and returns -1. */
int json_decode_object(struct lua_State *L, const char *buf, size_t len);

/* Encodes the value at idx; on success pushes the JSON string and returns a
 * pointer to it (valid while it stays on the stack), with its length in *len;
 * on failure pushes nothing and returns NULL. */
const char *json_encode(struct lua_State *L, int idx, size_t *len);

#endif
