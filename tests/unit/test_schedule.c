/* test_schedule.c - the leader's decisions about schedule ticks
 * (core/schedule.c) on virtual time: on time and late ticks, the catch-up
 * policies within their window and their bounds, jitter, and DST through
 * the cron engine. Time is an argument: no clock, no loop. Zones come from
 * the system tzdata through the daemon's loader (the only I/O here). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "core/cron.h"
#include "core/schedule.h"
#include "core/tz.h"
#include "daemon/tzdata.h"

#define MAX_DECISIONS 128

static int64_t at(const char *iso)
{
	struct tm tm;

	memset(&tm, 0, sizeof tm);
	assert_non_null(strptime(iso, "%Y-%m-%dT%H:%M:%SZ", &tm));
	return (int64_t)timegm(&tm);
}

/* A schedule as the spec parser leaves it (only what decisions read). */
static struct spec_schedule schedule(const char *expr, const char *zone,
				     enum spec_catchup catchup,
				     unsigned window_s)
{
	struct spec_schedule sc;
	char why[200];

	memset(&sc, 0, sizeof sc);
	if (cron_parse(expr, &sc.cron, why, sizeof why) != 0)
		fail_msg("\"%s\" did not parse: %s", expr, why);
	sc.tz = zone != NULL ? tz_get(zone) : NULL;
	if (zone != NULL)
		assert_non_null(sc.tz);
	sc.dst_missing = CRON_DST_SHIFT;
	sc.dst_repeated = CRON_DST_ONCE;
	sc.catchup = catchup;
	sc.catchup_window_s = window_s;
	return sc;
}

static const struct schedule_policy policy = {.late_after_ms = 2000,
					      .max_catchup_runs = 100};

/* What the scheduler does for a schedule whose cursor is `cursor`,
 * looked at at `now_ms`: its next tick, due with its jitter. */
static size_t decide_at(const struct spec_schedule *sc, int64_t cursor,
			int64_t now_ms, const struct schedule_policy *pol,
			struct schedule_tick *out)
{
	int64_t nominal;
	size_t n;

	assert_true(schedule_decide_max(sc, pol) <= MAX_DECISIONS);
	assert_true(schedule_next(sc, cursor, &nominal));
	n = schedule_decide(sc, cursor, nominal,
			    nominal * 1000 + schedule_jitter_ms("f", 0, nominal,
								sc->jitter_s),
			    now_ms, pol, out);
	assert_true(n >= 1 && n <= schedule_decide_max(sc, pol));
	return n;
}

static void expect_tick(const struct schedule_tick *t, int64_t prev,
			int64_t nominal, uint64_t missed, bool fire)
{
	assert_int_equal(t->prev, prev);
	assert_int_equal(t->nominal, nominal);
	assert_int_equal(t->missed, missed);
	assert_int_equal(t->fire, fire);
}

/* ------------------------------------------------------------------------
 * On time and late
 */

static void a_tick_within_late_after_fires_as_it_is(void **state)
{
	struct spec_schedule sc = schedule("* * * * *", NULL,
					   SPEC_CATCHUP_NONE, 3600);
	struct schedule_tick t[MAX_DECISIONS];
	int64_t t0 = at("2027-01-10T12:00:00Z");

	/* Exactly late_after_ms after its due time: still on time, even
	 * under catchup "none" (a short failover loses nothing). */
	assert_int_equal(decide_at(&sc, t0, (t0 + 60) * 1000 + 2000, &policy,
				   t),
			 1);
	expect_tick(&t[0], t0, t0 + 60, 0, true);
}

static void a_tick_past_late_after_goes_through_catchup(void **state)
{
	struct spec_schedule sc = schedule("* * * * *", NULL,
					   SPEC_CATCHUP_NONE, 3600);
	struct schedule_tick t[MAX_DECISIONS];
	int64_t t0 = at("2027-01-10T12:00:00Z");

	/* One millisecond more: late, and "none" fires nothing. */
	assert_int_equal(decide_at(&sc, t0, (t0 + 60) * 1000 + 2001, &policy,
				   t),
			 1);
	expect_tick(&t[0], t0, t0 + 60, 1, false);
}

/* ------------------------------------------------------------------------
 * Catch-up, ten and a half minutes without a leader
 */

static void catchup_none_records_every_late_tick_missed(void **state)
{
	struct spec_schedule sc = schedule("* * * * *", NULL,
					   SPEC_CATCHUP_NONE, 3600);
	struct schedule_tick t[MAX_DECISIONS];
	int64_t t0 = at("2027-01-10T12:00:00Z");

	assert_int_equal(decide_at(&sc, t0, (t0 + 630) * 1000, &policy, t), 1);
	/* The cursor moves to the newest tick; all ten are missed. */
	expect_tick(&t[0], t0, t0 + 600, 10, false);
}

static void catchup_latest_fires_the_newest_tick_only(void **state)
{
	struct spec_schedule sc = schedule("* * * * *", NULL,
					   SPEC_CATCHUP_LATEST, 3600);
	struct schedule_tick t[MAX_DECISIONS];
	int64_t t0 = at("2027-01-10T12:00:00Z");

	assert_int_equal(decide_at(&sc, t0, (t0 + 630) * 1000, &policy, t), 1);
	expect_tick(&t[0], t0, t0 + 600, 9, true);
}

static void catchup_all_fires_every_tick_oldest_first(void **state)
{
	struct spec_schedule sc = schedule("* * * * *", NULL,
					   SPEC_CATCHUP_ALL, 3600);
	struct schedule_tick t[MAX_DECISIONS];
	int64_t t0 = at("2027-01-10T12:00:00Z");

	assert_int_equal(decide_at(&sc, t0, (t0 + 630) * 1000, &policy, t),
			 10);
	/* Each decision expects the cursor the previous one leaves, so the
	 * state machine accepts each once, in order. */
	for (int k = 0; k < 10; k++)
		expect_tick(&t[k], t0 + 60 * k, t0 + 60 * (k + 1), 0, true);
}

static void catchup_all_fires_at_most_max_catchup_runs_newest(void **state)
{
	struct spec_schedule sc = schedule("* * * * *", NULL,
					   SPEC_CATCHUP_ALL, 3600);
	struct schedule_policy three = {.late_after_ms = 2000,
					.max_catchup_runs = 3};
	struct schedule_tick t[MAX_DECISIONS];
	int64_t t0 = at("2027-01-10T12:00:00Z");

	assert_int_equal(schedule_decide_max(&sc, &three), 3);
	assert_int_equal(decide_at(&sc, t0, (t0 + 630) * 1000, &three, t), 3);
	expect_tick(&t[0], t0, t0 + 480, 7, true);
	expect_tick(&t[1], t0 + 480, t0 + 540, 0, true);
	expect_tick(&t[2], t0 + 540, t0 + 600, 0, true);
}

static void catchup_all_without_max_catchup_runs_fires_the_newest(void **state)
{
	struct spec_schedule sc = schedule("* * * * *", NULL,
					   SPEC_CATCHUP_ALL, 3600);
	struct schedule_policy none = {.late_after_ms = 2000,
				       .max_catchup_runs = 0};
	struct schedule_tick t[MAX_DECISIONS];
	int64_t t0 = at("2027-01-10T12:00:00Z");

	assert_int_equal(decide_at(&sc, t0, (t0 + 630) * 1000, &none, t), 1);
	expect_tick(&t[0], t0, t0 + 600, 9, true);
}

static void only_ticks_inside_the_window_fire(void **state)
{
	/* A five-minute window at t0+630: ticks from t0+330 on may fire. */
	struct spec_schedule all = schedule("* * * * *", NULL,
					    SPEC_CATCHUP_ALL, 300);
	struct spec_schedule latest = schedule("* * * * *", NULL,
					       SPEC_CATCHUP_LATEST, 300);
	struct schedule_tick t[MAX_DECISIONS];
	int64_t t0 = at("2027-01-10T12:00:00Z");

	assert_int_equal(decide_at(&all, t0, (t0 + 630) * 1000, &policy, t), 5);
	expect_tick(&t[0], t0, t0 + 360, 5, true); /* 60..300 missed */
	for (int k = 1; k < 5; k++)
		expect_tick(&t[k], t0 + 300 + 60 * k, t0 + 360 + 60 * k, 0,
			    true);
	assert_int_equal(decide_at(&latest, t0, (t0 + 630) * 1000, &policy, t),
			 1);
	expect_tick(&t[0], t0, t0 + 600, 9, true);
}

static void ticks_all_before_the_window_fire_none(void **state)
{
	/* Hourly, ten and a half hours late, a one-minute window: no tick
	 * inside it. The newest before it is recorded, with the nine before
	 * it, and nothing runs, whatever the policy. */
	struct schedule_tick t[MAX_DECISIONS];
	int64_t t0 = at("2027-01-10T12:00:00Z");
	enum spec_catchup policies[] = {SPEC_CATCHUP_NONE, SPEC_CATCHUP_LATEST,
					SPEC_CATCHUP_ALL};

	for (size_t i = 0; i < 3; i++) {
		struct spec_schedule sc =
			schedule("0 * * * *", NULL, policies[i], 60);

		assert_int_equal(decide_at(&sc, t0, (t0 + 37800) * 1000,
					   &policy, t),
				 1);
		expect_tick(&t[0], t0, t0 + 36000, 10, false);
	}
}

static void a_long_outage_costs_bounded_work_and_caps_the_count(void **state)
{
	/* Every second, two days without a leader: 172,800 late ticks. The
	 * newest is found by scanning back from now, and the missed count
	 * stops at SCHEDULE_COUNT_CAP ("at least"). */
	struct spec_schedule sc = schedule("* * * * * *", NULL,
					   SPEC_CATCHUP_LATEST, 3600);
	struct schedule_tick t[MAX_DECISIONS];
	int64_t t0 = at("2027-01-10T12:00:00Z"), now = t0 + 2 * 86400;

	assert_int_equal(decide_at(&sc, t0, now * 1000 + 500, &policy, t), 1);
	expect_tick(&t[0], t0, now, SCHEDULE_COUNT_CAP, true);
	assert_int_equal(schedule_ticks_between(&sc, t0, t0 + 600), 600);
}

static void newest_ticks_keeps_the_newest_ascending(void **state)
{
	struct spec_schedule sc = schedule("*/5 * * * *", NULL,
					   SPEC_CATCHUP_ALL, 3600);
	int64_t t0 = at("2027-01-10T12:00:00Z"), out[4];

	/* (t0, t0 + 1h]: twelve ticks, the newest four kept. */
	assert_int_equal(schedule_newest_ticks(&sc, t0, t0 + 3600, 4, out), 4);
	assert_int_equal(out[0], t0 + 2700);
	assert_int_equal(out[3], t0 + 3600);
	/* Fewer than asked for; an empty range. */
	assert_int_equal(schedule_newest_ticks(&sc, t0, t0 + 700, 4, out), 2);
	assert_int_equal(out[0], t0 + 300);
	assert_int_equal(out[1], t0 + 600);
	assert_int_equal(schedule_newest_ticks(&sc, t0, t0, 4, out), 0);
	assert_int_equal(schedule_newest_ticks(&sc, t0, t0 + 299, 4, out), 0);
}

/* ------------------------------------------------------------------------
 * Jitter
 */

static void jitter_stays_within_its_bound_and_is_the_same_everywhere(
	void **state)
{
	int64_t t0 = at("2027-01-10T12:00:00Z");
	int64_t min = INT64_MAX, max = -1;

	for (int64_t k = 0; k < 2000; k++) {
		int64_t j = schedule_jitter_ms("nightly", 1, t0 + 60 * k, 30);

		assert_true(j >= 0 && j <= 30000);
		assert_int_equal(j,
				 schedule_jitter_ms("nightly", 1, t0 + 60 * k, 30));
		min = j < min ? j : min;
		max = j > max ? j : max;
		assert_int_equal(schedule_jitter_ms("nightly", 1, t0 + 60 * k, 0),
				 0);
	}
	/* Spread over the range, not stuck at one value. */
	assert_true(min < 3000 && max > 27000);
	/* Another flow or schedule gets other delays. */
	assert_true(schedule_jitter_ms("nightly", 1, t0, 30) !=
			    schedule_jitter_ms("nightly", 2, t0, 30) ||
		    schedule_jitter_ms("nightly", 1, t0, 30) !=
			    schedule_jitter_ms("hourly", 1, t0, 30));
}

static void lateness_counts_from_the_jittered_due_time(void **state)
{
	struct spec_schedule sc = schedule("* * * * *", NULL,
					   SPEC_CATCHUP_NONE, 3600);
	struct schedule_tick t[MAX_DECISIONS];
	int64_t t0 = at("2027-01-10T12:00:00Z"), nominal = t0 + 60;
	int64_t due;

	sc.jitter_s = 30;
	due = nominal * 1000 + schedule_jitter_ms("f", 0, nominal, 30);
	/* A tick delayed by its jitter is not late for it. */
	assert_int_equal(decide_at(&sc, t0, due + 2000, &policy, t), 1);
	expect_tick(&t[0], t0, nominal, 0, true);
	assert_int_equal(decide_at(&sc, t0, due + 2001, &policy, t), 1);
	assert_false(t[0].fire);
}

/* ------------------------------------------------------------------------
 * DST, through the cron engine
 */

static void catchup_across_spring_forward_follows_dst_missing(void **state)
{
	/* 02:30 Berlin does not exist on 2027-03-28. Four days late, every
	 * tick fires: with `shift` the missing one at 03:00 CEST, with
	 * `skip` not at all. */
	struct spec_schedule sc = schedule("30 2 * * *", "Europe/Berlin",
					   SPEC_CATCHUP_ALL, 7 * 86400);
	struct schedule_tick t[MAX_DECISIONS];
	int64_t cursor = at("2027-03-26T01:30:00Z");
	int64_t now_ms = at("2027-03-30T12:00:00Z") * 1000;

	assert_int_equal(decide_at(&sc, cursor, now_ms, &policy, t), 4);
	assert_int_equal(t[0].nominal, at("2027-03-27T01:30:00Z"));
	assert_int_equal(t[1].nominal, at("2027-03-28T01:00:00Z"));
	assert_int_equal(t[2].nominal, at("2027-03-29T00:30:00Z"));
	assert_int_equal(t[3].nominal, at("2027-03-30T00:30:00Z"));

	sc.dst_missing = CRON_DST_SKIP;
	assert_int_equal(decide_at(&sc, cursor, now_ms, &policy, t), 3);
	assert_int_equal(t[0].nominal, at("2027-03-27T01:30:00Z"));
	assert_int_equal(t[1].nominal, at("2027-03-29T00:30:00Z"));
	assert_int_equal(t[1].prev, t[0].nominal);
	assert_int_equal(t[1].missed, 0);
}

static void catchup_across_fall_back_counts_the_repeated_hour(void **state)
{
	/* On 2027-10-31 Berlin's 02:00-03:00 happens twice. An hourly `*`
	 * hour fires in both passes (Vixie cron), so the late day holds 25
	 * ticks; a daily 02:30 under `once` fires once. */
	struct spec_schedule hourly = schedule("0 * * * *", "Europe/Berlin",
					       SPEC_CATCHUP_LATEST, 86400);
	struct spec_schedule daily = schedule("30 2 * * *", "Europe/Berlin",
					      SPEC_CATCHUP_NONE, 86400);
	struct schedule_tick t[MAX_DECISIONS];
	int64_t from = at("2027-10-30T22:00:00Z"); /* local midnight */
	int64_t to = at("2027-10-31T23:00:00Z");   /* the next one */

	assert_int_equal(schedule_ticks_between(&hourly, from, to), 25);
	assert_int_equal(decide_at(&hourly, from, to * 1000 + 5000, &policy, t),
			 1);
	expect_tick(&t[0], from, to, 24, true);

	assert_int_equal(schedule_ticks_between(&daily, from, to), 1);
	daily.dst_repeated = CRON_DST_TWICE;
	assert_int_equal(schedule_ticks_between(&daily, from, to), 2);
	assert_int_equal(decide_at(&daily, from, to * 1000, &policy, t), 1);
	expect_tick(&t[0], from, at("2027-10-31T01:30:00Z"), 2, false);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(a_tick_within_late_after_fires_as_it_is),
		cmocka_unit_test(a_tick_past_late_after_goes_through_catchup),
		cmocka_unit_test(catchup_none_records_every_late_tick_missed),
		cmocka_unit_test(catchup_latest_fires_the_newest_tick_only),
		cmocka_unit_test(catchup_all_fires_every_tick_oldest_first),
		cmocka_unit_test(catchup_all_fires_at_most_max_catchup_runs_newest),
		cmocka_unit_test(catchup_all_without_max_catchup_runs_fires_the_newest),
		cmocka_unit_test(only_ticks_inside_the_window_fire),
		cmocka_unit_test(ticks_all_before_the_window_fire_none),
		cmocka_unit_test(a_long_outage_costs_bounded_work_and_caps_the_count),
		cmocka_unit_test(newest_ticks_keeps_the_newest_ascending),
		cmocka_unit_test(jitter_stays_within_its_bound_and_is_the_same_everywhere),
		cmocka_unit_test(lateness_counts_from_the_jittered_due_time),
		cmocka_unit_test(catchup_across_spring_forward_follows_dst_missing),
		cmocka_unit_test(catchup_across_fall_back_counts_the_repeated_hour),
	};

	tz_set_loader(tzdata_load);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
