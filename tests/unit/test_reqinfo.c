/*
 * test_reqinfo.c — unit tests for src/reqinfo.c.
 *
 * Owns the media type rule of a token request: application/json in any
 * case, alone or with parameters, and nothing that merely starts like it.
 * (Reading headers from a connection is tested end to end: test_http.py,
 * test_identity.py, test_cors.py.)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "reqinfo.h"

static void test_json_types(void **state)
{
	(void)state;
	assert_true(reqinfo_is_json("application/json"));
	assert_true(reqinfo_is_json("Application/JSON"));
	assert_true(reqinfo_is_json("application/json; charset=utf-8"));
	assert_true(reqinfo_is_json("application/json ;charset=utf-8"));
	assert_true(reqinfo_is_json("application/json\t"));
}

static void test_other_types(void **state)
{
	(void)state;
	assert_false(reqinfo_is_json(NULL));
	assert_false(reqinfo_is_json(""));
	assert_false(reqinfo_is_json("application/jso"));
	assert_false(reqinfo_is_json("application/jsonp"));
	assert_false(reqinfo_is_json("application/json-seq"));
	assert_false(reqinfo_is_json("text/plain"));
	assert_false(reqinfo_is_json(" application/json"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_json_types),
	    cmocka_unit_test(test_other_types),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
