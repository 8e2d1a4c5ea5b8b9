/*
 * testcase.h — the strict checks of a test file's table and its cases
 * (testcase.c), for the `test` runner (policytest.c). Private to the two.
 */
#ifndef BROKER_TESTCASE_H
#define BROKER_TESTCASE_H

#include <lua.h>
#include <stddef.h>

/* Pushes { [NAME] = { line, ... } }: the lines of each `name = "NAME"` in
 * the test file's text (NULL: an empty table). */
void testcase_push_lines(lua_State *L, const char *text, size_t len);

/* The line of the nth (1-based) case named name, from the table at lines
 * (testcase_push_lines); 0 when unknown. */
int testcase_line(lua_State *L, int lines, const char *name, int nth);

/* The file's own keys (fixtures) and its list at cases: 0 or -1 with the reason. */
int testcase_check_file(lua_State *L, int cases, char *err, size_t errlen);

/* A case's own shape at idx (not its request): 0 or -1 with the reason. */
int testcase_check_case(lua_State *L, int idx, char *err, size_t errlen);

#endif
