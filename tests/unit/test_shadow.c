/*
 * test_shadow.c — shadow decisions (src/shadow.c, src/config/shadow.c): a
 * shadow configuration beside the live one, jobs decided on the shadow
 * thread and counted by result, a full queue that drops instead of waiting.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "gen.h"
#include "metrics.h"
#include "policy.h"
#include "shadow.h"
#include "tmpdir_fixture.h"

static char dir[64];

static struct config *load(const char *extra, char *err, size_t errlen)
{
	char path[128], text[1024];

	snprintf(text, sizeof(text),
	         "courier = { base_url = \"http://127.0.0.1:9\" }\n%s\n"
	         "tenants = {\n"
	         "  live = { api_key = { env = \"K\" }, policy = \"live/p.lua\", auth = { none = true },\n"
	         "           shadow_policy = \"next/p.lua\" },\n"
	         "  plain = { api_key = { env = \"K\" }, policy = \"live/p.lua\", auth = { none = true } },\n"
	         "}\n",
	         extra);
	tmpdir_write(dir, "broker.conf.lua", text);
	snprintf(path, sizeof(path), "%s/broker.conf.lua", dir);
	return config_load(path, &policy_config_sandbox, err, errlen);
}

static double metric(const char *name)
{
	size_t len;
	char *text = metrics_render(&len), *p;
	double v = 0;

	assert_non_null(text);
	p = strstr(text, name);
	if (p && p[strlen(name)] == ' ')
		v = strtod(p + strlen(name) + 1, NULL);
	free(text);
	return v;
}

static int setup(void **state)
{
	char sub[128];

	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/test_shadow.XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(sub, sizeof(sub), "%s/live", dir);
	mkdir(sub, 0755);
	snprintf(sub, sizeof(sub), "%s/next", dir);
	mkdir(sub, 0755);
	setenv("K", "ck_test_key", 1);
	tmpdir_write(
	    dir, "live/p.lua",
	    "return function(req) return { allow = true, tier = \"inbox\", expires_in = \"1h\" } end\n");
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	tmpdir_remove(dir);
	return 0;
}

static void t_config_builds_the_shadow(void **state)
{
	char err[1024] = "";
	struct config *cfg;

	(void)state;
	tmpdir_write(dir, "next/p.lua",
	             "return function(req) return { allow = req.user_id ~= \"bob\" } end\n");
	cfg = load("", err, sizeof(err));
	assert_non_null(cfg);
	assert_non_null(cfg->shadow);
	assert_int_equal(cfg->shadow->n_tenants, 1);
	assert_int_equal(config_tenant(cfg, "live")->shadow_index, 0);
	assert_int_equal(config_tenant(cfg, "plain")->shadow_index, -1);
	assert_string_equal(cfg->shadow->tenants[0].name, "live");
	assert_non_null(strstr(cfg->shadow->tenants[0].policy_path, "/next/p.lua"));
	assert_string_not_equal(cfg->shadow->tenants[0].policy_revision,
	                        config_tenant(cfg, "live")->policy_revision);
	config_free(cfg);

	tmpdir_write(dir, "next/p.lua", "");
	unlink(strcat(strcpy(err, dir), "/next/p.lua"));
	assert_null(load("", err, sizeof(err)));
	assert_non_null(strstr(err, "tenants.live.shadow_policy"));
}

static struct shadow_job *job(struct gen *g, const char *user)
{
	struct policy_header h[] = {{"x-test", "1"}};
	char body[128];
	struct shadow_input in = {.request_id = "rid",
	                          .user_id = user,
	                          .method = "none",
	                          .client_ip = "127.0.0.1",
	                          .headers = h,
	                          .n_headers = 1,
	                          .now = 1800000000};

	snprintf(body, sizeof(body), "{\"user_id\":\"%s\"}", user);
	in.body_json = strdup(body);
	return shadow_capture(g, 0, &in);
}

static void t_decided_and_counted(void **state)
{
	char err[1024];
	struct config *cfg;
	struct gen *g;

	(void)state;
	tmpdir_write(dir, "next/p.lua",
	             "return function(req)\n"
	             "  if req.user_id == \"bob\" then return { allow = false } end\n"
	             "  if req.user_id == \"eve\" then error(\"boom\") end\n"
	             "  return { allow = true, tier = \"inbox\", expires_in = \"1h\" }\n"
	             "end\n");
	cfg = load("", err, sizeof(err));
	assert_non_null(cfg);
	g = gen_build(cfg, 0);
	assert_non_null(g);
	shadow_submit(job(g, "alice"), "allow",
	              "user_id:alice inbox:read:messages inbox:write:events read:brands", 3600);
	shadow_submit(job(g, "bob"), "allow",
	              "user_id:bob inbox:read:messages inbox:write:events read:brands", 3600);
	shadow_submit(job(g, "carol"), "allow", "user_id:carol inbox:read:messages", 3600);
	shadow_submit(job(g, "eve"), "deny", NULL, 0);
	shadow_submit(job(g, "bob"), "deny", NULL, 0);
	shadow_flush();
	assert_int_equal(metric("broker_shadow_decisions_total{tenant=\"live\",result=\"same\"}"), 2);
	assert_int_equal(metric("broker_shadow_decisions_total{tenant=\"live\",result=\"differs\"}"), 2);
	assert_int_equal(metric("broker_shadow_decisions_total{tenant=\"live\",result=\"error\"}"), 1);
	shadow_stop();
	gen_release(g);
}

static void t_a_full_queue_drops(void **state)
{
	char err[1024];
	struct config *cfg;
	struct gen *g;
	struct timespec t0, t1;
	double before = metric("broker_shadow_decisions_total{tenant=\"live\",result=\"dropped\"}");

	(void)state;
	tmpdir_write(dir, "next/p.lua", "return function(req) while true do end end\n");
	cfg = load("policy_limits = { timeout_ms = 1000, max_instructions = 100000000 }", err, sizeof(err));
	assert_non_null(cfg);
	g = gen_build(cfg, 0);
	assert_non_null(g);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < SHADOW_QUEUE_MAX + 50; i++)
		shadow_submit(job(g, "alice"), "allow", "user_id:alice", 3600);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	/* Never waited for the shadow: a generous bound, each waited for would take 1 s. */
	assert_true((double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9 < 5.0);
	assert_true(metric("broker_shadow_decisions_total{tenant=\"live\",result=\"dropped\"}") - before >=
	            49);
	shadow_stop(); /* drops what is queued, after the decision in hand */
	gen_release(g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(t_config_builds_the_shadow),
	    cmocka_unit_test(t_decided_and_counted),
	    cmocka_unit_test(t_a_full_queue_drops),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
