/* test_metrics.c - the metrics registry (core/metrics.c): the text format
 * (HELP, TYPE, escaping, histograms cumulative with +Inf, _sum, _count),
 * the bound on label sets with its overflow series, lookups that survive
 * the table growing, and updates from several threads at once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#include <cmocka.h>

#include "core/lag.h"
#include "core/metrics.h"

static char *render(struct metrics *m)
{
	struct metrics_text t;
	metrics_text_init(&t);
	metrics_render(m, &t);
	assert_false(t.oom);
	return t.p;
}

static void counters_and_gauges_render_in_the_text_format(void **state)
{
	struct metrics *m = metrics_new();
	const char *fl[] = {"flow", "status", NULL};
	struct metrics_family *runs = metrics_family_new(
		m, "flowd_runs_finished_total", "Runs that finished.",
		METRICS_COUNTER, fl, NULL, 0, 100);
	struct metrics_family *up = metrics_family_new(
		m, "flowd_up", "One \\ line\nand two.", METRICS_GAUGE, NULL,
		NULL, 0, 1);
	assert_non_null(runs);
	assert_non_null(up);

	metrics_inc(metrics_series2(runs, "etl", "succeeded"), 2);
	metrics_inc(metrics_series2(runs, "etl", "succeeded"), 1);
	metrics_inc(metrics_series2(runs, "a\"b\\c\nd", "failed"), 1);
	metrics_set(metrics_series(up, NULL), 0.25);
	assert_int_equal(metrics_count(metrics_series2(runs, "etl",
						       "succeeded")),
			 3);

	char *text = render(m);
	assert_string_equal(
		text,
		"# HELP flowd_runs_finished_total Runs that finished.\n"
		"# TYPE flowd_runs_finished_total counter\n"
		"flowd_runs_finished_total{flow=\"etl\",status=\"succeeded\"} 3\n"
		"flowd_runs_finished_total{flow=\"a\\\"b\\\\c\\nd\",status=\"failed\"} 1\n"
		"# HELP flowd_up One \\\\ line\\nand two.\n"
		"# TYPE flowd_up gauge\n"
		"flowd_up 0.25\n");
	free(text);
	metrics_free(m);
}

static void histograms_are_cumulative_with_inf_sum_and_count(void **state)
{
	struct metrics *m = metrics_new();
	const double b[] = {0.005, 0.1, 1};
	const char *fl[] = {"route", NULL};
	struct metrics_family *h = metrics_family_new(
		m, "flowd_http_request_duration_seconds", "Latency.",
		METRICS_HISTOGRAM, fl, b, 3, 10);
	assert_non_null(h);
	struct metrics_series *s = metrics_series1(h, "GET /v1/runs");
	metrics_observe(s, 0.001);
	metrics_observe(s, 0.005); /* le is inclusive */
	metrics_observe(s, 0.05);
	metrics_observe(s, 7);
	assert_int_equal(metrics_count(s), 4);

	char *text = render(m);
	assert_string_equal(
		text,
		"# HELP flowd_http_request_duration_seconds Latency.\n"
		"# TYPE flowd_http_request_duration_seconds histogram\n"
		"flowd_http_request_duration_seconds_bucket{route=\"GET /v1/runs\",le=\"0.005\"} 2\n"
		"flowd_http_request_duration_seconds_bucket{route=\"GET /v1/runs\",le=\"0.1\"} 3\n"
		"flowd_http_request_duration_seconds_bucket{route=\"GET /v1/runs\",le=\"1\"} 3\n"
		"flowd_http_request_duration_seconds_bucket{route=\"GET /v1/runs\",le=\"+Inf\"} 4\n"
		"flowd_http_request_duration_seconds_sum{route=\"GET /v1/runs\"} 7.056\n"
		"flowd_http_request_duration_seconds_count{route=\"GET /v1/runs\"} 4\n");
	free(text);
	metrics_free(m);
}

static void label_sets_are_bounded_by_an_overflow_series(void **state)
{
	struct metrics *m = metrics_new();
	const char *fl[] = {"flow", NULL};
	struct metrics_family *f = metrics_family_new(
		m, "flowd_runs_created_total", "Runs made.", METRICS_COUNTER,
		fl, NULL, 0, 50);
	char name[32];
	/* Past 50 label sets, and well past the table's first sizes: the
	 * first 50 keep their own series, found again after every growth. */
	for (int round = 0; round < 2; round++)
		for (int i = 0; i < 1000; i++) {
			snprintf(name, sizeof name, "flow-%d", i);
			metrics_inc(metrics_series1(f, name), 1);
		}
	for (int i = 0; i < 50; i++) {
		snprintf(name, sizeof name, "flow-%d", i);
		assert_int_equal(metrics_count(metrics_series1(f, name)), 2);
	}
	struct metrics_series *other = metrics_series1(f, "flow-999");
	assert_ptr_equal(other, metrics_series1(f, "flow-500"));
	assert_int_equal(metrics_count(other), 2 * 950);
	assert_true(metrics_overflowed(m) >= 2 * 950);

	char *text = render(m);
	assert_non_null(strstr(text, "flowd_runs_created_total{flow=\"flow-49\"} 2\n"));
	assert_null(strstr(text, "flow-50\""));
	assert_non_null(strstr(text, "flowd_runs_created_total{flow=\"(other)\"} 1900\n"));
	free(text);
	metrics_free(m);
}

static void bad_families_are_refused(void **state)
{
	struct metrics *m = metrics_new();
	const double b[] = {1, 0.5};
	const char *le[] = {"le", NULL};
	const char *dunder[] = {"__x", NULL};
	const char *many[] = {"a", "b", "c", "d", NULL};
	assert_null(metrics_family_new(m, "0bad", "h", METRICS_COUNTER, NULL,
				       NULL, 0, 1));
	assert_null(metrics_family_new(m, "a-b", "h", METRICS_COUNTER, NULL,
				       NULL, 0, 1));
	assert_null(metrics_family_new(m, "x", "h", METRICS_COUNTER, le, NULL,
				       0, 1));
	assert_null(metrics_family_new(m, "x", "h", METRICS_COUNTER, dunder,
				       NULL, 0, 1));
	assert_null(metrics_family_new(m, "x", "h", METRICS_COUNTER, many,
				       NULL, 0, 1));
	assert_null(metrics_family_new(m, "x", "h", METRICS_HISTOGRAM, NULL,
				       b, 2, 1));
	assert_null(metrics_family_new(m, "x", "h", METRICS_GAUGE, NULL, b, 1,
				       1));
	assert_null(metrics_family_new(m, "x", "h", METRICS_GAUGE, NULL, NULL,
				       0, 0));
	char *text = render(m);
	assert_null(text); /* nothing was added */
	metrics_free(m);
}

static void samples_computed_at_scrape_time(void **state)
{
	struct metrics_text t;
	metrics_text_init(&t);
	const char *l[] = {"version", NULL};
	const char *v[] = {"1.2", NULL};
	metrics_text_family(&t, "flowd_build_info", "Build.", METRICS_GAUGE);
	metrics_text_sample(&t, "flowd_build_info", l, v, 1);
	metrics_text_sample(&t, "flowd_x", NULL, NULL, 1e21);
	metrics_text_sample(&t, "flowd_y", NULL, NULL, 1.0 / 0.0);
	assert_string_equal(t.p, "# HELP flowd_build_info Build.\n"
				 "# TYPE flowd_build_info gauge\n"
				 "flowd_build_info{version=\"1.2\"} 1\n"
				 "flowd_x 1e+21\n"
				 "flowd_y +Inf\n");
	metrics_text_free(&t);
}

struct hammer {
	struct metrics_family *c, *h;
	int id;
};

static void *hammer(void *arg)
{
	struct hammer *hm = arg;
	char name[16];
	for (int i = 0; i < 20000; i++) {
		snprintf(name, sizeof name, "f%d", i % 300);
		metrics_inc(metrics_series1(hm->c, name), 1);
		metrics_observe(metrics_series1(hm->h, name), 0.5);
	}
	return NULL;
}

static void threads_update_and_grow_at_once(void **state)
{
	struct metrics *m = metrics_new();
	const char *fl[] = {"flow", NULL};
	const double b[] = {1};
	struct hammer hm = {
		.c = metrics_family_new(m, "c_total", "c", METRICS_COUNTER, fl,
					NULL, 0, 1000),
		.h = metrics_family_new(m, "h_seconds", "h", METRICS_HISTOGRAM,
					fl, b, 1, 1000),
	};
	pthread_t th[4];
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&th[i], NULL, hammer, &hm), 0);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	uint64_t total = 0;
	char name[16];
	for (int i = 0; i < 300; i++) {
		snprintf(name, sizeof name, "f%d", i);
		total += metrics_count(metrics_series1(hm.c, name));
		assert_true(metrics_value(metrics_series1(hm.h, name)) ==
			    0.5 * (double)metrics_count(
					  metrics_series1(hm.h, name)));
	}
	assert_int_equal(total, 4 * 20000);
	assert_int_equal(metrics_overflowed(m), 0);
	metrics_free(m);
}

static void backlog_age_is_the_oldest_missing_index(void **state)
{
	struct lag_track t;

	lag_track_init(&t);
	assert_int_equal(lag_track_age(&t, 0, 1000), 0);
	lag_track_note(&t, 10, 1000);
	lag_track_note(&t, 10, 1500); /* not new: ignored */
	lag_track_note(&t, 15, 1050); /* within 100 ms: the sample of 10 */
	lag_track_note(&t, 20, 2000);
	assert_int_equal(lag_track_age(&t, 5, 2500), 1500);
	assert_int_equal(lag_track_age(&t, 10, 2500), 1500); /* 11..15 */
	assert_int_equal(lag_track_age(&t, 15, 2500), 500);  /* 16..20 */
	assert_int_equal(lag_track_age(&t, 20, 2500), 0);

	/* a quiet hour is no backlog: an entry after it starts its own
	 * sample, and one the follower lacks is as old as that sample */
	lag_track_init(&t);
	lag_track_note(&t, 100, 0);
	lag_track_note(&t, 101, 3600000);
	assert_int_equal(lag_track_age(&t, 100, 3600000), 0);
	assert_int_equal(lag_track_age(&t, 100, 3600250), 250);

	/* 5,000 indexes 10 ms apart, more samples than the ring holds: the
	 * follower that has none sees the age of the first exactly; one that
	 * has half sees the age of the first it lacks, to within the merged
	 * samples' span */
	lag_track_init(&t);
	for (int i = 1; i <= 5000; i++)
		lag_track_note(&t, (uint64_t)i, i * 10);
	assert_true(t.n <= LAG_SAMPLES);
	struct lag_track copy = t;
	assert_int_equal(lag_track_age(&copy, 0, 60000), 60000 - 10);
	int64_t truth = 60000 - 2501 * 10;
	int64_t age = lag_track_age(&t, 2500, 60000);
	assert_true(age >= truth - 200 && age <= truth + 200);
	assert_int_equal(lag_track_age(&t, 5000, 60000), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(counters_and_gauges_render_in_the_text_format),
		cmocka_unit_test(histograms_are_cumulative_with_inf_sum_and_count),
		cmocka_unit_test(label_sets_are_bounded_by_an_overflow_series),
		cmocka_unit_test(bad_families_are_refused),
		cmocka_unit_test(samples_computed_at_scrape_time),
		cmocka_unit_test(threads_update_and_grow_at_once),
		cmocka_unit_test(backlog_age_is_the_oldest_missing_index),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
