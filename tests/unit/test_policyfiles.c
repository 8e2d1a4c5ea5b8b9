/*
 * test_policyfiles.c — unit tests for src/policyfiles.c: the modules beside
 * a policy and the policy revision, without a configuration.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <ftw.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "config/policyfiles.h"
#include "tmpdir_fixture.h"

struct fixture {
	char dir[64];
	char policy[128];
	struct tenant t;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_policyfiles.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->policy, sizeof(f->policy), "%s/default.lua", f->dir);
	tmpdir_write(f->dir, "default.lua", "return function(req) return { allow = true } end\n");
	f->t.policy_path = f->policy;
	f->t.policy_dir = f->dir;
	f->t.policy_text = (char *)"return function(req) return { allow = true } end\n";
	f->t.policy_len = strlen(f->t.policy_text);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	policyfiles_free(&f->t);
	tmpdir_remove(f->dir);
	free(f);
	return 0;
}

/* Only the modules the policy requires by a literal name, and those they
 * require in turn, sorted; never the policy, a NAME_test.lua, a name outside
 * [A-Za-z0-9_], a name that sits in a string, a comment or a field call,
 * nor a stray file (issue 15: a stray NAME.lua broke every tenant). */
static void test_modules_found_and_sorted(void **state)
{
	struct fixture *f = *state;
	char err[256];

	f->t.policy_text =
	    (char *)"local z = require('zeta') -- require('gamma')\n"
	            "local s = \"require('delta')\" .. [[require 'delta']]\n"
	            "local n = x.require('eta') or x:require'eta'\n"
	            "local d = require(name) or require('default_test') or require('default')\n"
	            "return function(req) return require [[alpha_2]] end\n";
	f->t.policy_len = strlen(f->t.policy_text);
	tmpdir_write(f->dir, "zeta.lua", "return require \"beta\"\n");
	tmpdir_write(f->dir, "beta.lua", "return 'b'\n");
	tmpdir_write(f->dir, "alpha_2.lua", "return 'a'\n");
	tmpdir_write(f->dir, "default_test.lua", "return {}\n");
	tmpdir_write(f->dir, "gamma.lua", "return {\n");
	tmpdir_write(f->dir, "delta.lua", "return {\n");
	tmpdir_write(f->dir, "eta.lua", "return {\n");
	tmpdir_write(f->dir, "stray.lua", "this is not Lua\n");
	tmpdir_write(f->dir, "notes.txt", "hello\n");
	assert_int_equal(policyfiles_load_modules(&f->t, err, sizeof(err)), 0);
	assert_int_equal(f->t.n_modules, 3);
	assert_string_equal(f->t.modules[0].name, "alpha_2");
	assert_string_equal(f->t.modules[0].text, "return 'a'\n");
	assert_string_equal(f->t.modules[1].name, "beta");
	assert_string_equal(f->t.modules[2].name, "zeta");
	assert_non_null(strstr(f->t.modules[2].path, "/zeta.lua"));
}

/* A require whose file does not exist is left to the require (it raises
 * when it runs); the other modules still load. */
static void test_missing_module_left_to_require(void **state)
{
	struct fixture *f = *state;
	char err[256];

	f->t.policy_text = (char *)"local a = require('absent')\nlocal h = require('here')\n";
	f->t.policy_len = strlen(f->t.policy_text);
	tmpdir_write(f->dir, "here.lua", "return 1\n");
	assert_int_equal(policyfiles_load_modules(&f->t, err, sizeof(err)), 0);
	assert_int_equal(f->t.n_modules, 1);
	assert_string_equal(f->t.modules[0].name, "here");
}

static void test_too_many_modules_refused(void **state)
{
	struct fixture *f = *state;
	char err[256], name[32], text[65 * 24];
	size_t used = 0;

	for (int i = 0; i < 65; i++) {
		snprintf(name, sizeof(name), "m%02d.lua", i);
		tmpdir_write(f->dir, name, "return {}\n");
		used += (size_t)snprintf(text + used, sizeof(text) - used, "require('m%02d')\n", i);
	}
	f->t.policy_text = text;
	f->t.policy_len = used;
	assert_int_equal(policyfiles_load_modules(&f->t, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "more than 64 modules"));
}

/* A lone policy's revision is the start of its SHA-256; modules and data
 * change it, and so does moving bytes from one part to another. */
static void test_revision(void **state)
{
	struct fixture *f = *state;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	char hex[17], lone[17], with_module[17], moved[17], err[256];

	assert_int_equal(EVP_Digest(f->t.policy_text, f->t.policy_len, md, &mdlen, EVP_sha256(), NULL), 1);
	for (int i = 0; i < 8; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	policyfiles_revision(&f->t);
	assert_string_equal(f->t.policy_revision, hex);
	snprintf(lone, sizeof(lone), "%s", f->t.policy_revision);

	tmpdir_write(f->dir, "helpers.lua", "return 1\n");
	assert_int_equal(policyfiles_load_modules(&f->t, err, sizeof(err)), 0);
	policyfiles_revision(&f->t);
	assert_string_equal(f->t.policy_revision, lone); /* not required: not part of it */
	f->t.policy_text = (char *)"local h = require('helpers')\n";
	f->t.policy_len = strlen(f->t.policy_text);
	policyfiles_revision(&f->t);
	snprintf(lone, sizeof(lone), "%s", f->t.policy_revision);
	assert_int_equal(policyfiles_load_modules(&f->t, err, sizeof(err)), 0);
	policyfiles_revision(&f->t);
	snprintf(with_module, sizeof(with_module), "%s", f->t.policy_revision);
	assert_string_not_equal(lone, with_module);

	/* One byte moved from the module's end to the data's start. */
	f->t.modules[0].len--;
	f->t.data_text = strdup("\n");
	assert_non_null(f->t.data_text);
	f->t.data_len = 1;
	policyfiles_revision(&f->t);
	snprintf(moved, sizeof(moved), "%s", f->t.policy_revision);
	assert_string_not_equal(with_module, moved);
	assert_int_equal(strlen(moved), 16);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_modules_found_and_sorted, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_missing_module_left_to_require, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_too_many_modules_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_revision, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
