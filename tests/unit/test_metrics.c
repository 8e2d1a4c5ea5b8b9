/* test_metrics.c — counters and their Prometheus rendering (src/metrics.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "metrics.h"

static char *render(void)
{
	size_t len = 0;
	char *s = metrics_render(&len);

	assert_non_null(s);
	assert_int_equal(strlen(s), len);
	return s;
}

static void t_requests_by_tenant_and_status(void **state)
{
	char *s;

	(void)state;
	metrics_request("acme", 200);
	metrics_request("acme", 200);
	metrics_request("acme", 403);
	metrics_request(NULL, 404);
	metrics_request("acme", 418); /* not a status we list: "other" */
	s = render();
	assert_non_null(strstr(s, "broker_requests_total{tenant=\"acme\",status=\"200\"} 2\n"));
	assert_non_null(strstr(s, "broker_requests_total{tenant=\"acme\",status=\"403\"} 1\n"));
	assert_non_null(strstr(s, "broker_requests_total{tenant=\"-\",status=\"404\"} 1\n"));
	assert_non_null(strstr(s, "broker_requests_total{tenant=\"acme\",status=\"other\"} 1\n"));
	free(s);
}

static void t_decisions_latency_and_build_info(void **state)
{
	char *s;

	(void)state;
	metrics_decision("acme", "allow");
	metrics_decision("acme", "allow");
	metrics_decision("acme", "deny");
	metrics_decision(NULL, "error");
	metrics_decision("acme", "maybe"); /* not an outcome: not counted */
	metrics_request_seconds(200, 0.003);
	metrics_request_seconds(200, 0.2);
	metrics_request_seconds(403, 0.001);
	metrics_request_seconds(504, 20);
	s = render();
	assert_non_null(strstr(s, "broker_decisions_total{tenant=\"acme\",outcome=\"allow\"} 2\n"));
	assert_non_null(strstr(s, "broker_decisions_total{tenant=\"acme\",outcome=\"deny\"} 1\n"));
	assert_non_null(strstr(s, "broker_decisions_total{tenant=\"-\",outcome=\"error\"} 1\n"));
	assert_null(strstr(s, "maybe"));
	assert_non_null(strstr(s, "# TYPE broker_request_duration_seconds histogram\n"));
	assert_non_null(strstr(
	    s, "broker_request_duration_seconds_bucket{route=\"token\",class=\"2xx\",le=\"0.005\"} 1\n"));
	assert_non_null(strstr(
	    s, "broker_request_duration_seconds_bucket{route=\"token\",class=\"2xx\",le=\"0.25\"} 2\n"));
	assert_non_null(
	    strstr(s, "broker_request_duration_seconds_count{route=\"token\",class=\"4xx\"} 1\n"));
	assert_non_null(
	    strstr(s, "broker_request_duration_seconds_bucket{route=\"token\",class=\"5xx\",le=\"10\"} 0\n"));
	assert_non_null(strstr(
	    s, "broker_request_duration_seconds_bucket{route=\"token\",class=\"5xx\",le=\"+Inf\"} 1\n"));
	assert_non_null(strstr(s, "broker_build_info{version=\""));
	free(s);
}

static void t_upstream_histogram_is_cumulative(void **state)
{
	char *s;

	(void)state;
	metrics_upstream(0.001, 200); /* first bucket */
	metrics_upstream(0.2, 502);   /* le 0.25 */
	metrics_upstream(60, 0);      /* +Inf only */
	s = render();
	assert_non_null(strstr(s, "broker_upstream_seconds_bucket{le=\"0.005\"} 1\n"));
	assert_non_null(strstr(s, "broker_upstream_seconds_bucket{le=\"0.1\"} 1\n"));
	assert_non_null(strstr(s, "broker_upstream_seconds_bucket{le=\"0.25\"} 2\n"));
	assert_non_null(strstr(s, "broker_upstream_seconds_bucket{le=\"10\"} 2\n"));
	assert_non_null(strstr(s, "broker_upstream_seconds_bucket{le=\"+Inf\"} 3\n"));
	assert_non_null(strstr(s, "broker_upstream_seconds_count 3\n"));
	assert_non_null(strstr(s, "broker_upstream_responses_total{class=\"2xx\"} 1\n"));
	assert_non_null(strstr(s, "broker_upstream_responses_total{class=\"5xx\"} 1\n"));
	assert_non_null(strstr(s, "broker_upstream_responses_total{class=\"none\"} 1\n"));
	free(s);
}

static void t_reloads(void **state)
{
	char *s;

	(void)state;
	s = render();
	/* The configuration loaded at start counts as a success. */
	assert_non_null(strstr(s, "broker_last_reload_success 1\n"));
	assert_non_null(strstr(s, "broker_policy_stale_seconds 0\n"));
	free(s);
	metrics_reload(false, 1000);
	s = render();
	assert_non_null(strstr(s, "broker_reloads_total{result=\"failed\"} 1\n"));
	assert_non_null(strstr(s, "broker_last_reload_success 0\n"));
	assert_non_null(strstr(s, "broker_last_reload_timestamp_seconds 1000\n"));
	assert_null(strstr(s, "broker_policy_stale_seconds 0\n"));
	free(s);
	metrics_reload(true, 2000);
	s = render();
	assert_non_null(strstr(s, "broker_reloads_total{result=\"ok\"} 1\n"));
	assert_non_null(strstr(s, "broker_last_reload_success 1\n"));
	assert_non_null(strstr(s, "broker_policy_stale_seconds 0\n"));
	free(s);
}

static void t_tenant_names_are_bounded(void **state)
{
	char name[32], *s;

	(void)state;
	/* Past the interned maximum, tenants count under "_other": the output stays bounded. */
	for (int i = 0; i < 400; i++) {
		snprintf(name, sizeof(name), "t%d", i);
		metrics_request(name, 200);
	}
	s = render();
	assert_non_null(strstr(s, "tenant=\"_other\""));
	assert_true(strlen(s) < 200 * 1024);
	free(s);
}

static int loop_live(void *ctx, size_t i)
{
	const int *live = ctx;

	return live[i];
}

/* GET /metrics: the counters, then each loop's connections and the flood
 * counters the front passes in; without a front, none of the latter. */
static void t_front_figures_follow_the_counters(void **state)
{
	int live[3] = {4, 0, 17};
	struct metrics_front front = {
	    .n_loops = 3,
	    .loop_connections = loop_live,
	    .ctx = live,
	    .refused_per_ip = 5,
	    .request_timeouts = 6,
	};
	size_t len = 0;
	char *s = metrics_render_front(&front, &len), *loops;

	(void)state;
	assert_non_null(s);
	assert_int_equal(strlen(s), len);
	loops = strstr(s, "# TYPE broker_loop_connections gauge\n"
	                  "broker_loop_connections{loop=\"0\"} 4\n"
	                  "broker_loop_connections{loop=\"1\"} 0\n"
	                  "broker_loop_connections{loop=\"2\"} 17\n");
	assert_non_null(loops);
	assert_true(loops > strstr(s, "broker_policy_stale_seconds "));
	assert_non_null(strstr(s, "\nbroker_connections_refused_total 5\n"));
	assert_non_null(strstr(s, "\nbroker_request_timeouts_total 6\n"));
	assert_non_null(strstr(s, "\nbroker_log_suppressed_total "));
	free(s);

	s = render();
	assert_null(strstr(s, "broker_loop_connections"));
	assert_null(strstr(s, "broker_connections_refused_total"));
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(t_requests_by_tenant_and_status),
	    cmocka_unit_test(t_decisions_latency_and_build_info),
	    cmocka_unit_test(t_upstream_histogram_is_cumulative),
	    cmocka_unit_test(t_reloads),
	    cmocka_unit_test(t_tenant_names_are_bounded),
	    cmocka_unit_test(t_front_figures_follow_the_counters),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
