/* cron.h - cron expressions and their fire times in a time zone. Pure: no
 * clock, no I/O (zones come from tz.h).
 *
 * Syntax (docs/triggers.md): 5 fields "min hour dom mon dow", or 6 with
 * seconds first; each field a comma list of `*`, `N`, `A-B`, with an
 * optional `/STEP` (`*` / `N` / `A-B`); month names JAN-DEC and weekday
 * names SUN-SAT (either case); weekday 7 is Sunday too. Vixie cron's rule:
 * when both day-of-month and day-of-week are restricted (neither field
 * starts with `*`) a day matches if either does; otherwise both must.
 * Macros @yearly @annually @monthly @weekly @daily @midnight @hourly, and
 * `@every DURATION` ("90s", "1h30m", "2d"; at least 1 s), whose ticks are
 * the multiples of the duration since the Unix epoch, whatever the zone.
 *
 * Daylight saving time, per schedule:
 *   dst_missing: a wall-clock time that does not exist (spring forward)
 *     `shift` fires at the first instant after the gap (the transition
 *     itself; several missing times become one fire), `skip` does not fire.
 *   dst_repeated: a wall-clock time that happens twice (fall back)
 *     `once` fires at the first, `twice` at both. An expression whose
 *     hour field is `*` counts time rather than naming a wall-clock hour:
 *     it fires in both passes whatever the setting (as Vixie cron does).
 */
#ifndef FLOWD_CORE_CRON_H
#define FLOWD_CORE_CRON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tz.h"

enum cron_dst_missing { CRON_DST_SHIFT, CRON_DST_SKIP };
enum cron_dst_repeated { CRON_DST_ONCE, CRON_DST_TWICE };

struct cron {
	uint64_t sec, min;  /* bits 0-59 */
	uint32_t hour;      /* bits 0-23 */
	uint32_t dom;       /* bits 1-31 */
	uint16_t mon;       /* bits 1-12 */
	uint8_t dow;        /* bits 0-6, 0 = Sunday */
	bool dom_star, dow_star, hour_star;
	int64_t every;      /* @every: the period in seconds; 0 otherwise */
};

/* The longest @every period: one year. */
#define CRON_EVERY_MAX (366 * 86400)

/* Parse `expr`. Returns 0, or -1 with a one-line reason in why[] (e.g.
 * "field 3 (day of month): 32 is outside 1-31"). An expression that can
 * never match (`0 0 31 2 *`) is rejected. */
int cron_parse(const char *expr, struct cron *c, char *why, size_t why_len);

/* The first fire instant strictly after `after` (seconds since the epoch),
 * in zone z (NULL = UTC) with the DST policies. Returns false when there is
 * none within about 30 years. Bounded work in every case. */
bool cron_next(const struct cron *c, const struct tz *z,
	       enum cron_dst_missing missing, enum cron_dst_repeated repeated,
	       int64_t after, int64_t *next);

/* How many fire instants lie in (from, to], counting at most `cap`. */
uint64_t cron_count(const struct cron *c, const struct tz *z,
		    enum cron_dst_missing missing,
		    enum cron_dst_repeated repeated, int64_t from, int64_t to,
		    uint64_t cap);

/* RFC 3339 ("2027-03-14T07:00:00Z", "...T09:00:00.5+02:00"; fractions
 * are dropped) to seconds since the epoch. Returns 0, or -1 if malformed. */
int cron_time_parse(const char *s, int64_t *out);

/* t as UTC, "2027-03-28T01:00:00Z". */
void cron_time_utc(int64_t t, char buf[40]);

/* t as local time in z with its offset, "2027-03-28T03:00:00+02:00". */
void cron_time_local(int64_t t, const struct tz *z, char buf[40]);

#endif
