/* test_cron.c - the cron engine and time zones: every syntax form, every
 * rejection, DST in three zones under both policies, month ends, leap days
 * and Vixie's day-of-month / day-of-week rule. Zones come from the system
 * tzdata through the daemon's loader (the only I/O here). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "core/cron.h"
#include "core/tz.h"
#include "daemon/tzdata.h"

static int64_t at(const char *iso)
{
	struct tm tm;

	memset(&tm, 0, sizeof tm);
	assert_non_null(strptime(iso, "%Y-%m-%dT%H:%M:%SZ", &tm));
	return (int64_t)timegm(&tm);
}

static const char *iso(int64_t t, char *buf)
{
	time_t tt = (time_t)t;
	struct tm tm;

	gmtime_r(&tt, &tm);
	strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
	return buf;
}

/* The next `n` fire times after `from`, each compared to expected[i]. */
static void expect_fires(const char *expr, const char *zone,
			 enum cron_dst_missing m, enum cron_dst_repeated r,
			 const char *from, const char *const *expected)
{
	struct cron c;
	char why[200], got[32];
	const struct tz *z = tz_get(zone);
	int64_t t = at(from), next;
	size_t i;

	if (cron_parse(expr, &c, why, sizeof why) != 0)
		fail_msg("\"%s\" did not parse: %s", expr, why);
	assert_non_null(z);
	for (i = 0; expected[i] != NULL; i++) {
		assert_true(cron_next(&c, z, m, r, t, &next));
		if (next != at(expected[i]))
			fail_msg("\"%s\" in %s after %s: fire %zu is %s, want %s",
				 expr, zone, from, i, iso(next, got), expected[i]);
		t = next;
	}
}

#define FIRES(expr, zone, m, r, from, ...)                                  \
	expect_fires(expr, zone, m, r, from,                                 \
		     (const char *const[]){__VA_ARGS__, NULL})
#define UTC_FIRES(expr, from, ...)                                          \
	FIRES(expr, "UTC", CRON_DST_SHIFT, CRON_DST_ONCE, from, __VA_ARGS__)

static void rejects(const char *expr, const char *needle)
{
	struct cron c;
	char why[200] = "";

	if (cron_parse(expr, &c, why, sizeof why) == 0)
		fail_msg("\"%s\" parsed, but must be rejected", expr);
	if (strstr(why, needle) == NULL)
		fail_msg("\"%s\": reason \"%s\" lacks \"%s\"", expr, why, needle);
}

static void test_fields_lists_ranges_steps(void **state)
{
	UTC_FIRES("*/15 * * * *", "2027-01-01T00:07:00Z",
		  "2027-01-01T00:15:00Z", "2027-01-01T00:30:00Z",
		  "2027-01-01T00:45:00Z", "2027-01-01T01:00:00Z");
	UTC_FIRES("5,10 9-10 * * *", "2027-01-01T09:06:00Z",
		  "2027-01-01T09:10:00Z", "2027-01-01T10:05:00Z",
		  "2027-01-01T10:10:00Z", "2027-01-02T09:05:00Z");
	UTC_FIRES("0 8-18/4 * * *", "2027-01-01T00:00:00Z",
		  "2027-01-01T08:00:00Z", "2027-01-01T12:00:00Z",
		  "2027-01-01T16:00:00Z", "2027-01-02T08:00:00Z");
	/* "N/S" runs from N to the end of the field. */
	UTC_FIRES("50/5 * * * *", "2027-01-01T00:00:00Z",
		  "2027-01-01T00:50:00Z", "2027-01-01T00:55:00Z",
		  "2027-01-01T01:50:00Z");
	/* Six fields: seconds first. */
	UTC_FIRES("*/20 * * * * *", "2027-01-01T00:00:05Z",
		  "2027-01-01T00:00:20Z", "2027-01-01T00:00:40Z",
		  "2027-01-01T00:01:00Z");
	UTC_FIRES("30 0 12 * * *", "2027-01-01T12:00:30Z",
		  "2027-01-02T12:00:30Z");
	/* Names, either case; weekday 7 is Sunday. */
	UTC_FIRES("0 0 1 jan,JUL *", "2027-02-01T00:00:00Z",
		  "2027-07-01T00:00:00Z", "2028-01-01T00:00:00Z");
	UTC_FIRES("0 12 * * Mon-wed", "2027-01-01T00:00:00Z", /* a Friday */
		  "2027-01-04T12:00:00Z", "2027-01-05T12:00:00Z",
		  "2027-01-06T12:00:00Z", "2027-01-11T12:00:00Z");
	UTC_FIRES("0 0 * * 7", "2027-01-01T00:00:00Z",
		  "2027-01-03T00:00:00Z", "2027-01-10T00:00:00Z");
	UTC_FIRES("0 0 * * 5-7", "2027-01-01T00:00:00Z",
		  "2027-01-02T00:00:00Z", "2027-01-03T00:00:00Z",
		  "2027-01-08T00:00:00Z");
	/* Whitespace around and between fields. */
	UTC_FIRES("  0   0 \t * * *  ", "2027-01-01T00:00:00Z",
		  "2027-01-02T00:00:00Z");
}

static void test_macros_and_every(void **state)
{
	UTC_FIRES("@yearly", "2027-03-01T00:00:00Z", "2028-01-01T00:00:00Z");
	UTC_FIRES("@annually", "2027-03-01T00:00:00Z", "2028-01-01T00:00:00Z");
	UTC_FIRES("@monthly", "2027-03-01T00:00:00Z", "2027-04-01T00:00:00Z");
	UTC_FIRES("@weekly", "2027-01-01T00:00:00Z", "2027-01-03T00:00:00Z");
	UTC_FIRES("@daily", "2027-01-01T00:00:00Z", "2027-01-02T00:00:00Z");
	UTC_FIRES("@midnight", "2027-01-01T05:00:00Z", "2027-01-02T00:00:00Z");
	UTC_FIRES("@hourly", "2027-01-01T05:30:00Z", "2027-01-01T06:00:00Z");
	UTC_FIRES("@every 90s", "2027-01-01T00:00:00Z",
		  "2027-01-01T00:01:30Z", "2027-01-01T00:03:00Z");
	UTC_FIRES("@every 1h30m", "2027-01-01T00:10:00Z",
		  "2027-01-01T01:30:00Z", "2027-01-01T03:00:00Z");
	/* @every counts from the epoch whatever the zone or DST. */
	FIRES("@every 1h", "Europe/Berlin", CRON_DST_SKIP, CRON_DST_ONCE,
	      "2027-10-31T00:30:00Z", "2027-10-31T01:00:00Z",
	      "2027-10-31T02:00:00Z");
	UTC_FIRES("@every 1s", "2027-01-01T00:00:00Z", "2027-01-01T00:00:01Z",
		  "2027-01-01T00:00:02Z");
}

static void test_rejections(void **state)
{
	rejects("", "5 fields");
	rejects("* * * *", "5 fields");
	rejects("* * * * * * *", "5 fields");
	rejects("60 * * * *", "outside 0-59");
	rejects("* 24 * * *", "outside 0-23");
	rejects("* * 0 * *", "outside 1-31");
	rejects("* * 32 * *", "outside 1-31");
	rejects("* * * 13 *", "outside 1-12");
	rejects("* * * * 8", "outside 0-7");
	rejects("61 * * * * *", "field 1 (second)");
	rejects("5-1 * * * *", "backwards");
	rejects("*/0 * * * *", "bad step");
	rejects("*/61 * * * *", "step larger");
	rejects("1,,2 * * * *", "empty list item");
	rejects("1, * * * *", "empty list item");
	rejects("a * * * *", "not a value");
	rejects("* * * foo *", "not a value");
	rejects("* * * * mon-", "not a range");
	rejects("1-2-3 * * * *", "not understood");
	rejects("L * * * *", "not a value");
	rejects("? * * * *", "not a value");
	rejects("@reboot", "unknown macro");
	rejects("@every", "unknown macro");
	rejects("@every 0s", "@every takes");
	rejects("@every 10", "@every takes");
	rejects("@every 5x", "@every takes");
	rejects("@every 367d", "@every takes");
	/* Never matches: refused at deploy, no unbounded search later. */
	rejects("0 0 31 2 *", "never matches");
	rejects("0 0 30 2 *", "never matches");
	rejects("0 0 31 4,6,9,11 *", "never matches");
	rejects("0 0 31 4,6,9,11 *", "never matches");
}

static void test_month_ends_and_leap_days(void **state)
{
	UTC_FIRES("0 0 31 * *", "2027-01-31T00:00:00Z",
		  "2027-03-31T00:00:00Z", "2027-05-31T00:00:00Z",
		  "2027-07-31T00:00:00Z", "2027-08-31T00:00:00Z");
	UTC_FIRES("0 0 29 2 *", "2027-01-01T00:00:00Z",
		  "2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z");
	/* 2100 is not a leap year: eight years between two Feb 29ths. */
	UTC_FIRES("0 0 29 2 *", "2096-03-01T00:00:00Z", "2104-02-29T00:00:00Z");
	UTC_FIRES("59 23 28-31 2 *", "2028-02-28T23:59:00Z",
		  "2028-02-29T23:59:00Z", "2029-02-28T23:59:00Z");
	UTC_FIRES("0 0 1 * *", "2027-12-15T00:00:00Z", "2028-01-01T00:00:00Z",
		  "2028-02-01T00:00:00Z");
	UTC_FIRES("59 59 23 31 12 *", "2027-06-01T00:00:00Z",
		  "2027-12-31T23:59:59Z");
}

static void test_dom_dow_rule(void **state)
{
	/* Both restricted: either matches (the 13th, or any Friday). */
	UTC_FIRES("0 0 13 * fri", "2027-01-01T00:00:00Z", /* Fri 1st */
		  "2027-01-08T00:00:00Z", "2027-01-13T00:00:00Z",
		  "2027-01-15T00:00:00Z", "2027-01-22T00:00:00Z");
	/* Day-of-week is *: the day of month alone. */
	UTC_FIRES("0 0 13 * *", "2027-01-01T00:00:00Z", "2027-01-13T00:00:00Z",
		  "2027-02-13T00:00:00Z");
	/* Day-of-month starts with '*' (Vixie): both must match, so only
	 * odd days that are Mondays. */
	UTC_FIRES("0 0 */2 * mon", "2027-01-01T00:00:00Z",
		  "2027-01-11T00:00:00Z", "2027-01-25T00:00:00Z",
		  "2027-02-01T00:00:00Z");
	/* A never-matching day of month is fine when weekdays may match. */
	UTC_FIRES("0 0 31 2 mon", "2027-01-01T00:00:00Z",
		  "2027-02-01T00:00:00Z", "2027-02-08T00:00:00Z");
}

static void test_new_york(void **state)
{
	/* 2027-03-14: 02:00 EST -> 03:00 EDT. 02:30 does not exist. */
	FIRES("30 2 * * *", "America/New_York", CRON_DST_SHIFT, CRON_DST_ONCE,
	      "2027-03-13T00:00:00Z", "2027-03-13T07:30:00Z",
	      "2027-03-14T07:00:00Z", "2027-03-15T06:30:00Z");
	FIRES("30 2 * * *", "America/New_York", CRON_DST_SKIP, CRON_DST_ONCE,
	      "2027-03-13T00:00:00Z", "2027-03-13T07:30:00Z",
	      "2027-03-15T06:30:00Z");
	/* Several missing times shift to one fire at the end of the gap. */
	FIRES("0,20,40 2 * * *", "America/New_York", CRON_DST_SHIFT,
	      CRON_DST_ONCE, "2027-03-14T00:00:00Z", "2027-03-14T07:00:00Z",
	      "2027-03-15T06:00:00Z");
	/* 2027-11-07: 02:00 EDT -> 01:00 EST. 01:30 happens twice. */
	FIRES("30 1 * * *", "America/New_York", CRON_DST_SHIFT, CRON_DST_ONCE,
	      "2027-11-06T12:00:00Z", "2027-11-07T05:30:00Z",
	      "2027-11-08T06:30:00Z");
	FIRES("30 1 * * *", "America/New_York", CRON_DST_SHIFT, CRON_DST_TWICE,
	      "2027-11-06T12:00:00Z", "2027-11-07T05:30:00Z",
	      "2027-11-07T06:30:00Z", "2027-11-08T06:30:00Z");
	/* An hour-* expression counts time: both passes, even under once. */
	FIRES("30 * * * *", "America/New_York", CRON_DST_SHIFT, CRON_DST_ONCE,
	      "2027-11-07T05:00:00Z", "2027-11-07T05:30:00Z",
	      "2027-11-07T06:30:00Z", "2027-11-07T07:30:00Z");
	/* And across the gap it neither fires twice nor loses real time. */
	FIRES("0 * * * *", "America/New_York", CRON_DST_SHIFT, CRON_DST_ONCE,
	      "2027-03-14T05:30:00Z", "2027-03-14T06:00:00Z",
	      "2027-03-14T07:00:00Z", "2027-03-14T08:00:00Z");
}

static void test_berlin(void **state)
{
	/* 2027-03-28: 02:00 CET -> 03:00 CEST at 01:00Z. */
	FIRES("30 2 * * *", "Europe/Berlin", CRON_DST_SHIFT, CRON_DST_ONCE,
	      "2027-03-27T00:00:00Z", "2027-03-27T01:30:00Z",
	      "2027-03-28T01:00:00Z", "2027-03-29T00:30:00Z");
	FIRES("30 2 * * *", "Europe/Berlin", CRON_DST_SKIP, CRON_DST_ONCE,
	      "2027-03-27T00:00:00Z", "2027-03-27T01:30:00Z",
	      "2027-03-29T00:30:00Z");
	/* 2027-10-31: 03:00 CEST -> 02:00 CET at 01:00Z. */
	FIRES("30 2 * * *", "Europe/Berlin", CRON_DST_SHIFT, CRON_DST_ONCE,
	      "2027-10-30T12:00:00Z", "2027-10-31T00:30:00Z",
	      "2027-11-01T01:30:00Z");
	FIRES("30 2 * * *", "Europe/Berlin", CRON_DST_SKIP, CRON_DST_TWICE,
	      "2027-10-30T12:00:00Z", "2027-10-31T00:30:00Z",
	      "2027-10-31T01:30:00Z", "2027-11-01T01:30:00Z");
	/* A day-of-week schedule in the repeated hour, and far in the future
	 * (past the table: the footer rule). */
	FIRES("30 2 * * sun", "Europe/Berlin", CRON_DST_SHIFT, CRON_DST_ONCE,
	      "2090-10-28T12:00:00Z", "2090-10-29T00:30:00Z",
	      "2090-11-05T01:30:00Z");
	FIRES("30 2 * * *", "Europe/Berlin", CRON_DST_SHIFT, CRON_DST_ONCE,
	      "2090-03-25T12:00:00Z", "2090-03-26T01:00:00Z",
	      "2090-03-27T00:30:00Z");
}

static void test_lord_howe_half_hour(void **state)
{
	/* 2027-04-04: 02:00 (+11) -> 01:30 (+10:30): 01:30-02:00 twice. */
	FIRES("45 1 * * *", "Australia/Lord_Howe", CRON_DST_SHIFT,
	      CRON_DST_ONCE, "2027-04-03T00:00:00Z", "2027-04-03T14:45:00Z",
	      "2027-04-04T15:15:00Z");
	FIRES("45 1 * * *", "Australia/Lord_Howe", CRON_DST_SHIFT,
	      CRON_DST_TWICE, "2027-04-03T00:00:00Z", "2027-04-03T14:45:00Z",
	      "2027-04-03T15:15:00Z", "2027-04-04T15:15:00Z");
	/* 2027-10-03: 02:00 (+10:30) -> 02:30 (+11): 02:15 does not exist. */
	FIRES("15 2 * * *", "Australia/Lord_Howe", CRON_DST_SHIFT,
	      CRON_DST_ONCE, "2027-10-01T00:00:00Z", "2027-10-01T15:45:00Z",
	      "2027-10-02T15:30:00Z", "2027-10-03T15:15:00Z");
	FIRES("15 2 * * *", "Australia/Lord_Howe", CRON_DST_SKIP,
	      CRON_DST_ONCE, "2027-10-01T00:00:00Z", "2027-10-01T15:45:00Z",
	      "2027-10-03T15:15:00Z");
}

static void test_zones(void **state)
{
	const struct tz *z;
	int64_t when;

	assert_non_null(tz_get("UTC"));
	assert_non_null(tz_get("Europe/Berlin"));
	assert_ptr_equal(tz_get("Europe/Berlin"), tz_get("Europe/Berlin"));
	assert_null(tz_get("Mars/Olympus_Mons"));
	assert_null(tz_get("../etc/passwd"));
	assert_null(tz_get("/etc/localtime"));
	assert_null(tz_get("Europe/../../x"));
	assert_null(tz_get(""));
	assert_false(tz_name_valid("a b"));
	assert_true(tz_name_valid("Etc/GMT+5"));
	z = tz_get("Etc/GMT-5");
	assert_non_null(z);
	assert_int_equal(tz_offset(z, at("2027-06-01T00:00:00Z")), 5 * 3600);
	assert_false(tz_next_change(z, at("2027-06-01T00:00:00Z"), &when));
	z = tz_get("America/New_York");
	assert_int_equal(tz_offset(z, at("2027-01-01T00:00:00Z")), -5 * 3600);
	assert_int_equal(tz_offset(z, at("2027-07-01T00:00:00Z")), -4 * 3600);
	assert_true(tz_next_change(z, at("2027-01-01T00:00:00Z"), &when));
	assert_int_equal(when, at("2027-03-14T07:00:00Z"));
	assert_true(tz_prev_change(z, at("2027-07-01T00:00:00Z"), &when));
	assert_int_equal(when, at("2027-03-14T07:00:00Z"));
	/* Past 2037 the footer rule answers. */
	assert_true(tz_next_change(z, at("2090-01-01T00:00:00Z"), &when));
	assert_int_equal(when, at("2090-03-12T07:00:00Z"));
	assert_int_equal(tz_offset(z, at("2090-07-01T00:00:00Z")), -4 * 3600);
	/* Garbage is not a zone. */
	assert_null(tz_parse("x", "TZif2", 5));
	assert_null(tz_parse("x", "", 0));
}

/* Every made-up name used to stay in the cache for good (40,000 unique
 * ?tz= grew a node by 4.4 MB); only zones that exist are kept now. */
static void test_unknown_zones_are_not_cached(void **state)
{
	char name[64];
	const struct tz *paris = tz_get("Europe/Paris");
	size_t before = tz_cache_size();
	int i;

	assert_non_null(paris);
	for (i = 0; i < 2000; i++) {
		snprintf(name, sizeof name, "Zz/unknown_%d", i);
		assert_null(tz_get(name));
	}
	assert_null(tz_get("zone.tab")); /* a file, but not a zone */
	assert_null(tz_get("Europe"));	 /* a directory */
	assert_int_equal(tz_cache_size(), before);
	/* still not found the second time, still not cached */
	assert_null(tz_get("Zz/unknown_0"));
	assert_int_equal(tz_cache_size(), before);
	/* a zone is cached once and keeps its address */
	assert_ptr_equal(tz_get("Europe/Paris"), paris);
	assert_int_equal(tz_cache_size(), before);
	assert_non_null(tz_get("Pacific/Chatham"));
	assert_int_equal(tz_cache_size(), before + 1);
	assert_non_null(tz_get("Pacific/Chatham"));
	assert_int_equal(tz_cache_size(), before + 1);
}

/* tz_get from several threads (the API's and the loop): misses and first
 * loads race on the same names, every thread sees the same zone. */
struct lookup_arg {
	int id;
	const struct tz *seen;
	bool ok;
};

static void *lookups(void *p)
{
	struct lookup_arg *a = p;
	char name[64];

	a->ok = true;
	for (int i = 0; i < 300; i++) {
		const struct tz *z = tz_get("Asia/Kathmandu");

		snprintf(name, sizeof name, "Zz/t%d_%d", a->id, i % 50);
		if (z == NULL || tz_get(name) != NULL ||
		    (a->seen != NULL && a->seen != z))
			a->ok = false;
		a->seen = z;
	}
	return NULL;
}

static void test_zone_lookups_from_threads(void **state)
{
	struct lookup_arg args[4];
	pthread_t th[4];
	size_t before = tz_cache_size();
	int i;

	for (i = 0; i < 4; i++) {
		args[i] = (struct lookup_arg){.id = i};
		assert_int_equal(
		    pthread_create(&th[i], NULL, lookups, &args[i]), 0);
	}
	for (i = 0; i < 4; i++) {
		assert_int_equal(pthread_join(th[i], NULL), 0);
		assert_true(args[i].ok);
		assert_ptr_equal(args[i].seen, args[0].seen);
	}
	assert_int_equal(tz_cache_size(), before + 1);
}

static void test_bounded_search(void **state)
{
	struct cron c;
	char why[200];
	int64_t next;

	/* Feb 29 that is also a Monday, in AND mode: rare but found. */
	assert_int_equal(cron_parse("0 0 29 2 *", &c, why, sizeof why), 0);
	assert_true(cron_next(&c, NULL, CRON_DST_SHIFT, CRON_DST_ONCE,
			      at("2027-01-01T00:00:00Z"), &next));
	/* The count of ticks in a range stops at the cap. */
	assert_int_equal(cron_parse("* * * * * *", &c, why, sizeof why), 0);
	assert_int_equal(cron_count(&c, NULL, CRON_DST_SHIFT, CRON_DST_ONCE,
				    at("2027-01-01T00:00:00Z"),
				    at("2027-01-01T01:00:00Z"), 100000),
			 3600);
	assert_int_equal(cron_count(&c, NULL, CRON_DST_SHIFT, CRON_DST_ONCE,
				    at("2027-01-01T00:00:00Z"),
				    at("2027-01-02T00:00:00Z"), 1000),
			 1000);
	assert_int_equal(cron_parse("@every 10s", &c, why, sizeof why), 0);
	assert_int_equal(cron_count(&c, NULL, CRON_DST_SHIFT, CRON_DST_ONCE,
				    at("2027-01-01T00:00:00Z"),
				    at("2027-01-01T01:00:00Z"), 100000),
			 360);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fields_lists_ranges_steps),
		cmocka_unit_test(test_macros_and_every),
		cmocka_unit_test(test_rejections),
		cmocka_unit_test(test_month_ends_and_leap_days),
		cmocka_unit_test(test_dom_dow_rule),
		cmocka_unit_test(test_new_york),
		cmocka_unit_test(test_berlin),
		cmocka_unit_test(test_lord_howe_half_hour),
		cmocka_unit_test(test_zones),
		cmocka_unit_test(test_unknown_zones_are_not_cached),
		cmocka_unit_test(test_zone_lookups_from_threads),
		cmocka_unit_test(test_bounded_search),
	};

	tz_set_loader(tzdata_load);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
