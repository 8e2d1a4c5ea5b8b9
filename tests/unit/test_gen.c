/*
 * test_gen.c — generations and each event loop's policy engines
 * (gen_engines): a loop takes the spare a reload built for it, keeps an older
 * generation's engine only while requests that began on it still need it,
 * and compiles one itself only when no spare is left (counted).
 */
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "gen.h"
#include "metrics.h"
#include "policy.h"
#include "tmpdir_fixture.h"

static char dir[64];

static struct config *load(void)
{
	char path[128], err[1024];
	struct config *cfg;

	snprintf(path, sizeof(path), "%s/broker.conf.lua", dir);
	cfg = config_load(path, &policy_config_sandbox, err, sizeof(err));
	if (!cfg)
		fail_msg("config: %s", err);
	return cfg;
}

/* The value of one line of /metrics. */
static double metric(const char *name)
{
	size_t len;
	char *text = metrics_render(&len), *p;
	double v = -1;

	assert_non_null(text);
	p = strstr(text, name);
	if (p && p[strlen(name)] == ' ')
		v = strtod(p + strlen(name) + 1, NULL);
	free(text);
	return v;
}

#define BUILT_LOOP   "broker_policy_engines_built_total{where=\"loop\"}"
#define BUILT_RELOAD "broker_policy_engines_built_total{where=\"reload\"}"

static size_t n_engines(const struct gen_engines *c)
{
	size_t n = 0;

	for (const struct gen_engine *e = c->newest; e; e = e->next)
		n++;
	return n;
}

static int setup(void **state)
{
	char sub[128];

	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/test_gen.XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(sub, sizeof(sub), "%s/policies", dir);
	assert_int_equal(mkdir(sub, 0700), 0);
	tmpdir_write(dir, "policies/default.lua", "return function(req) return { allow = true } end\n");
	tmpdir_write(dir, "broker.conf.lua",
	             "listen = \"127.0.0.1:0\"\n"
	             "courier = { base_url = \"http://127.0.0.1:9\" }\n"
	             "tenants = { default = { api_key = { env = \"COURIER_API_KEY\" },\n"
	             "  policy = \"policies/default.lua\", auth = { none = true } } }\n");
	setenv("COURIER_API_KEY", "pk_test_apikey", 1);
	unsetenv("COURIER_BASE_URL");
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	gen_shutdown();
	tmpdir_remove(dir);
	return 0;
}

/* Two loops across two reloads: each takes its spare, none compiles; the old
 * generation's engine stays while pinned, goes with its last request. */
static void t_loops_take_spares_and_keep_old_engines_while_pinned(void **state)
{
	struct gen_engines a = {0}, b = {0};
	struct gen *g1, *g2;
	struct gen_engine *a1, *a1b, *b1, *a2;
	double loop0 = metric(BUILT_LOOP), reload0 = metric(BUILT_RELOAD);

	(void)state;
	assert_int_equal(gen_install(load(), 2), 0);
	assert_true(metric(BUILT_RELOAD) == reload0 + 2);
	g1 = gen_acquire();
	a1 = gen_engine_pin(&a, g1);
	a1b = gen_engine_pin(&a, g1);
	b1 = gen_engine_pin(&b, g1);
	assert_non_null(a1);
	assert_ptr_equal(a1, a1b); /* one engine a loop a generation */
	assert_ptr_not_equal(a1->engine, b1->engine);
	assert_int_equal(a1->users, 2);

	/* A reload while loop a's two requests wait for their decision. */
	assert_int_equal(gen_install(load(), 2), 0);
	g2 = gen_acquire();
	a2 = gen_engine_pin(&a, g2);
	assert_ptr_equal(a.newest, a2);
	assert_int_equal(n_engines(&a), 2); /* g1's still pinned */
	gen_engine_unpin(&a, a1);
	assert_int_equal(n_engines(&a), 2);
	gen_engine_unpin(&a, a1b); /* its last request: freed */
	assert_int_equal(n_engines(&a), 1);

	/* Loop b's idle g1 engine is replaced (and freed) when g2 reaches it. */
	gen_engine_unpin(&b, b1);
	assert_int_equal(n_engines(&b), 1);
	b1 = gen_engine_pin(&b, g2);
	assert_int_equal(n_engines(&b), 1);
	assert_int_equal(b.newest->gen_id, g2->id);

	assert_true(metric(BUILT_LOOP) == loop0);
	assert_true(metric(BUILT_RELOAD) == reload0 + 4);
	gen_engine_unpin(&a, a2);
	gen_engine_unpin(&b, b1);
	gen_release(g1);
	gen_release(g2);
	gen_engines_free(&a);
	gen_engines_free(&b);
}

/* No spare left (a reload that could not build one): the loop compiles, and
 * the counter says so. */
static void t_a_missing_spare_is_compiled_on_the_loop_and_counted(void **state)
{
	struct gen_engines a = {0};
	struct gen *g;
	struct gen_engine *e;
	double loop0 = metric(BUILT_LOOP);

	(void)state;
	assert_int_equal(gen_install(load(), 0), 0);
	g = gen_acquire();
	e = gen_engine_pin(&a, g);
	assert_non_null(e);
	assert_true(metric(BUILT_LOOP) == loop0 + 1);
	gen_engine_unpin(&a, e);
	assert_int_equal(n_engines(&a), 1); /* the newest stays, idle */
	e = gen_engine_pin(&a, g);
	assert_true(metric(BUILT_LOOP) == loop0 + 1);
	gen_engine_unpin(&a, e);
	gen_release(g);
	gen_engines_free(&a);
	assert_null(a.newest);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(t_loops_take_spares_and_keep_old_engines_while_pinned, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(t_a_missing_spare_is_compiled_on_the_loop_and_counted, setup,
	                                    teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
