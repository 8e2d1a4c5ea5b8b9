/*
 * test_evalreq.c — unit tests for src/evalreq.c: what `eval` reads. A
 * described request names only known fields; a raw HTTP request is checked
 * as the server checks it before the policy, and the policy sees its headers
 * without credentials.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "evalreq.h"
#include "policy.h"
#include "tmpdir_fixture.h"

/* Logs what it sees of the request; allows. */
#define POLICY                                                                                               \
	"return function(req)\n"                                                                             \
	"  broker.log(req.client.ip, tostring(req.headers['x-one']), tostring(req.headers.authorization),\n" \
	"             tostring(req.headers.cookie), tostring(req.identity.authenticated))\n"                 \
	"  return { allow = true, tier = 'inbox', reason = 'seen' }\n"                                       \
	"end\n"

struct fixture {
	char dir[64];
	struct config *cfg;
	struct policy_engine *e;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char path[128], err[1024];

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_evalreq.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	tmpdir_write(f->dir, "acme.lua", POLICY);
	/* No Courier key in the environment: eval never reads it. */
	tmpdir_write(f->dir, "broker.conf.lua",
	             "tenants = { acme = { api_key = { env = 'TEST_EVALREQ_UNSET' }, policy = 'acme.lua',\n"
	             "  auth = { none = true } } }\n");
	unsetenv("TEST_EVALREQ_UNSET");
	snprintf(path, sizeof(path), "%s/broker.conf.lua", f->dir);
	f->cfg = config_load_for(path, &policy_config_sandbox, CONFIG_USE_EVAL, err, sizeof(err));
	if (!f->cfg)
		fail_msg("%s", err);
	f->e = policy_engine_new(f->cfg, err, sizeof(err));
	if (!f->e)
		fail_msg("%s", err);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	policy_engine_free(f->e);
	config_free(f->cfg);
	tmpdir_remove(f->dir);
	free(f);
	return 0;
}

/* eval of text; its exit status, and what it printed in out (a buffer of 4 KiB). */
static int eval(struct fixture *f, const char *text, const char *peer, char *out)
{
	struct evalreq_options opt = {.peer = peer};
	char *buf = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&buf, &len);
	int rc;

	assert_non_null(m);
	rc = evalreq_run(f->e, f->cfg, config_tenant(f->cfg, "acme"), text, strlen(text), &opt, m);
	fclose(m);
	snprintf(out, 4096, "%s", buf ? buf : "");
	free(buf);
	return rc;
}

static void test_described_fields(void **state)
{
	struct fixture *f = *state;
	char out[4096];

	assert_int_equal(eval(f, "{\"user_id\":\"alice\",\"headers\":{\"x-one\":\"1\"}}", NULL, out), 0);
	assert_non_null(strstr(out, "\"decision\":\"allow\""));
	assert_int_equal(eval(f, "{\"user_id\":\"alice\",\"identiy\":{}}", NULL, out), 1);
	assert_string_equal(out, "");
	assert_int_equal(eval(f, "{\"user_id\":\"alice\",\"identity\":{\"subjet\":\"a\"}}", NULL, out), 1);
	assert_int_equal(eval(f, "{\"user_id\":\"alice\",\"client\":{\"addr\":\"a\"}}", NULL, out), 1);
	assert_int_equal(eval(f, "{\"user_id\":\"alice\",\"headers\":{\"Cookie\":\"s\"}}", NULL, out), 1);
	assert_int_equal(eval(f, "{\"user_id\":\"alice\",\"1\":1}", NULL, out), 1);
	assert_int_equal(eval(f, "{\"user_id\"", NULL, out), 1);
}

#define RAW_HEAD "POST /v1/tenants/acme/token HTTP/1.1\r\nContent-Type: application/json\r\n"

static void test_raw_request_seen_as_the_server_would(void **state)
{
	struct fixture *f = *state;
	char out[4096];

	assert_int_equal(eval(f,
	                      RAW_HEAD "X-One: first\r\nx-one: second\r\nCookie: s=1\r\n"
	                               "Proxy-Authorization: Basic eA==\r\n\r\n{\"user_id\":\"alice\"}",
	                      "192.0.2.7", out),
	                 0);
	/* The first of duplicates; credentials never shown. */
	assert_non_null(strstr(out, "192.0.2.7 first nil nil false"));
	assert_null(strstr(out, "eA=="));
	assert_non_null(strstr(out, "\"reason\":\"seen\""));
	/* auth = none refuses a bearer credential, as the server does (401). */
	assert_int_equal(
	    eval(f, RAW_HEAD "Authorization: Bearer x\r\n\r\n{\"user_id\":\"alice\"}", NULL, out), 1);
	/* Bare "\n" line ends, and a Content-Length shorter than what follows. */
	assert_int_equal(
	    eval(f,
	         "POST /v1/tenants/acme/token HTTP/1.1\nContent-Type: application/json; charset=utf-8\n"
	         "Content-Length: 19\n\n{\"user_id\":\"alice\"}trailing",
	         NULL, out),
	    0);
	assert_non_null(strstr(out, "127.0.0.1 nil"));
}

static void test_raw_request_refused_before_the_policy(void **state)
{
	struct fixture *f = *state;
	static const char *const refused[] = {
	    "POST /v1/token HTTP/1.1\r\nContent-Type: application/json\r\n\r\n{\"user_id\":\"a\"}", /* 404 */
	    "GET /v1/tenants/acme/token HTTP/1.1\r\nContent-Type: "
	    "application/json\r\n\r\n{\"user_id\":\"a\"}",
	    "POST /v1/tenants/acme/token HTTP/1.1\r\nContent-Type: text/plain\r\n\r\n{\"user_id\":\"a\"}",
	    "POST /v1/tenants/acme/token HTTP/1.1\r\n\r\n{\"user_id\":\"a\"}",
	    RAW_HEAD "Authorization: a\r\nAuthorization: b\r\n\r\n{\"user_id\":\"a\"}",
	    RAW_HEAD "Content-Length: 99\r\n\r\n{\"user_id\":\"a\"}",
	    RAW_HEAD "Content-Length: -1\r\n\r\n{\"user_id\":\"a\"}",
	    RAW_HEAD "\r\n{\"user_id\":\"\"}",
	    RAW_HEAD "\r\n[1]",
	    RAW_HEAD " folded: x\r\n\r\n{}",
	    RAW_HEAD "no colon\r\n\r\n{}",
	    RAW_HEAD "Bad Name: x\r\n\r\n{}",
	    RAW_HEAD "X: y", /* no blank line */
	    "POST /v1/tenants/acme/token\r\n\r\n{}",
	    "",
	};
	char out[4096];

	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		if (eval(f, refused[i], NULL, out) != 1)
			fail_msg("accepted #%zu: %s", i, refused[i]);
		assert_string_equal(out, "");
	}
	assert_int_equal(eval(f, RAW_HEAD "\r\n{\"user_id\":\"a\"}", "not-an-ip", out), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_described_fields, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_raw_request_seen_as_the_server_would, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_raw_request_refused_before_the_policy, setup, teardown),
	};
	return cmocka_run_group_tests_name("evalreq", tests, NULL, NULL);
}
