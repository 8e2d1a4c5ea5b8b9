/*
 * test_upstream_config.c — unit tests for where the broker sends its Courier
 * calls: region names (config_region_url), courier.region / base_url /
 * ca_file, COURIER_BASE_URL, and the per-tenant upstream (tenants.*.courier)
 * down to the URL a request of each tenant uses (gen_courier_url).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "courier.h"
#include "gen.h"
#include "policy.h"

struct fixture {
	char dir[64];
	char path[128];
	char err[1024];
};

static void write_file(const char *dir, const char *name, const char *text)
{
	char path[256];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fp = fopen(path, "w");
	assert_non_null(fp);
	assert_int_equal(fputs(text, fp) >= 0, 1);
	fclose(fp);
}

static void remove_file(const char *dir, const char *name)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	unlink(path);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_upstream.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	write_file(f->dir, "p.lua", "return function(req) return { allow = true } end\n");
	snprintf(f->path, sizeof(f->path), "%s/broker.conf.lua", f->dir);
	setenv("COURIER_API_KEY", "pk_test_apikey", 1);
	unsetenv("COURIER_BASE_URL");
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	remove_file(f->dir, "p.lua");
	remove_file(f->dir, "broker.conf.lua");
	remove_file(f->dir, "ca.pem");
	rmdir(f->dir);
	free(f);
	unsetenv("COURIER_BASE_URL");
	return 0;
}

static struct config *load(struct fixture *f, const char *text)
{
	write_file(f->dir, "broker.conf.lua", text);
	f->err[0] = '\0';
	return config_load(f->path, &policy_config_sandbox, f->err, sizeof(f->err));
}

static void expect_error(struct fixture *f, const char *text, const char *frag)
{
	struct config *cfg = load(f, text);

	if (cfg)
		fail_msg("accepted:\n%s", text);
	if (!strstr(f->err, frag))
		fail_msg("error \"%s\" lacks \"%s\"", f->err, frag);
}

#define TENANT(name, extra)                                                                                  \
	"[\"" name                                                                                           \
	"\"] = { api_key = { env = 'COURIER_API_KEY' }, policy = 'p.lua', auth = { none = true }, " extra    \
	" },\n"

static void test_region_names(void **state)
{
	(void)state;
	assert_string_equal(config_region_url("us"), "https://api.courier.com");
	assert_string_equal(config_region_url("eu"), "https://api.eu.courier.com");
	assert_null(config_region_url("EU"));
	assert_null(config_region_url("ap"));
	assert_null(config_region_url(""));
	assert_null(config_region_url(NULL));
}

static void test_default_is_us(void **state)
{
	struct fixture *f = *state;
	struct config *cfg = load(f, "tenants = { " TENANT("default", "") "}\n");

	if (!cfg)
		fail_msg("%s", f->err);
	assert_string_equal(cfg->courier_base_url, "https://api.courier.com");
	assert_null(cfg->courier_ca_file);
	assert_int_equal(cfg->courier_max_connections, 1024);
	assert_null(cfg->tenants[0].courier_base_url);
	config_free(cfg);
}

static void test_global_region_and_env(void **state)
{
	struct fixture *f = *state;
	const char *text = "courier = { region = 'eu' }\ntenants = { " TENANT("default", "") "}\n";
	struct config *cfg = load(f, text);

	if (!cfg)
		fail_msg("%s", f->err);
	assert_string_equal(cfg->courier_base_url, "https://api.eu.courier.com");
	config_free(cfg);
	/* COURIER_BASE_URL overrides the global upstream, region or not. */
	setenv("COURIER_BASE_URL", "http://127.0.0.1:4000/", 1);
	cfg = load(f, text);
	if (!cfg)
		fail_msg("%s", f->err);
	assert_string_equal(cfg->courier_base_url, "http://127.0.0.1:4000");
	config_free(cfg);
}

static void test_refusals(void **state)
{
	struct fixture *f = *state;

	expect_error(f, "courier = { region = 'mars' }\ntenants = { " TENANT("default", "") "}\n",
	             "courier.region: unknown region \"mars\"");
	expect_error(f,
	             "courier = { region = 'eu', base_url = 'https://x.example' }\ntenants = { " TENANT(
	                 "default", "") "}\n",
	             "give region or base_url, not both");
	expect_error(f, "tenants = { " TENANT("default", "courier = { region = 'apac' }") "}\n",
	             "tenants.default.courier.region: unknown region");
	expect_error(f,
	             "tenants = { " TENANT(
	                 "default", "courier = { region = 'eu', base_url = 'https://x.example' }") "}\n",
	             "give region or base_url, not both");
	/* The plain-http rule holds for a tenant's upstream too. */
	expect_error(f, "tenants = { " TENANT("default", "courier = { base_url = 'http://10.0.0.1' }") "}\n",
	             "http:// only to 127.0.0.1");
	expect_error(f, "courier = { ca_file = 'missing.pem' }\ntenants = { " TENANT("default", "") "}\n",
	             "courier.ca_file: cannot read missing.pem");
	expect_error(f, "courier = { ca_file = 'p.lua' }\ntenants = { " TENANT("default", "") "}\n",
	             "holds no PEM certificate");
}

/* Each tenant's requests go to its own upstream, the others to the global one. */
static void test_tenant_upstreams(void **state)
{
	struct fixture *f = *state;
	struct config *cfg;
	struct gen *g;

	setenv("COURIER_BASE_URL", "http://127.0.0.1:4000", 1);
	cfg = load(f, "tenants = { " TENANT("default", "") TENANT("acme", "courier = { region = 'eu' }")
	                  TENANT("stage", "courier = { base_url = 'http://localhost:5000/' }") "}\n");
	if (!cfg)
		fail_msg("%s", f->err);
	g = gen_build(cfg, 0);
	assert_non_null(g);
	for (size_t i = 0; i < cfg->n_tenants; i++) {
		const char *url = gen_courier_url(g, &cfg->tenants[i]);
		if (strcmp(cfg->tenants[i].name, "acme") == 0)
			assert_string_equal(url, "https://api.eu.courier.com/auth/issue-token");
		else if (strcmp(cfg->tenants[i].name, "stage") == 0)
			assert_string_equal(url, "http://localhost:5000/auth/issue-token");
		else
			assert_string_equal(url, "http://127.0.0.1:4000/auth/issue-token");
	}
	gen_release(g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_region_names),
	    cmocka_unit_test_setup_teardown(test_default_is_us, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_global_region_and_env, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tenant_upstreams, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
