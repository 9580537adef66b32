/* schedule.c - the leader's decisions about a schedule's ticks: next tick,
 * jitter, and catch-up after a late tick (schedule.h). Pure: time comes in
 * as an argument, zones through the spec's tz. Moved out of
 * daemon/scheduler.c so that it is unit-tested on virtual time
 * (tests/unit/test_schedule.c).
 */
#include "core/schedule.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cron.h"
#include "core/map.h"

bool schedule_next(const struct spec_schedule *sc, int64_t after,
		   int64_t *next)
{
	return cron_next(&sc->cron, sc->tz, sc->dst_missing, sc->dst_repeated,
			 after, next);
}

int64_t schedule_jitter_ms(const char *flow, unsigned index, int64_t nominal,
			   unsigned jitter_s)
{
	char buf[48];

	if (jitter_s == 0)
		return 0;
	snprintf(buf, sizeof buf, ":%u:%" PRId64, index, nominal);
	return (int64_t)(map_fnv1a(buf, map_fnv1a(flow, MAP_FNV_SEED)) %
			 ((uint64_t)jitter_s * 1000 + 1));
}

size_t schedule_newest_ticks(const struct spec_schedule *sc, int64_t lo,
			     int64_t hi, size_t keep, int64_t *out)
{
	int64_t span = 64;

	if (hi <= lo || keep == 0)
		return 0;
	for (;;) {
		int64_t start = hi - span < lo ? lo : hi - span, t = start, next;
		size_t n = 0, steps = 0;

		while (steps < SCHEDULE_COUNT_CAP && schedule_next(sc, t, &next) &&
		       next <= hi) {
			if (n == keep)
				memmove(out, out + 1, (keep - 1) * sizeof *out);
			else
				n++;
			out[n - 1] = next;
			t = next;
			steps++;
		}
		if (n == keep || start == lo || steps >= SCHEDULE_COUNT_CAP ||
		    span > INT64_MAX / 16)
			return n;
		span *= 16;
	}
}

uint64_t schedule_ticks_between(const struct spec_schedule *sc, int64_t from,
				int64_t to)
{
	return cron_count(&sc->cron, sc->tz, sc->dst_missing, sc->dst_repeated,
			  from, to, SCHEDULE_COUNT_CAP);
}

/* How many of the newest ticks a late decision looks at. */
static size_t catchup_keep(const struct spec_schedule *sc,
			   const struct schedule_policy *pol)
{
	if (sc->catchup != SPEC_CATCHUP_ALL)
		return 1;
	return pol->max_catchup_runs ? pol->max_catchup_runs : 1;
}

size_t schedule_decide_max(const struct spec_schedule *sc,
			   const struct schedule_policy *pol)
{
	return catchup_keep(sc, pol);
}

static size_t decision(struct schedule_tick *out, int64_t prev,
		       int64_t nominal, uint64_t missed, bool fire)
{
	out->prev = prev;
	out->nominal = nominal;
	out->missed = missed;
	out->fire = fire;
	return 1;
}

size_t schedule_decide(const struct spec_schedule *sc, int64_t cursor,
		       int64_t nominal, int64_t due_ms, int64_t now_ms,
		       const struct schedule_policy *pol,
		       struct schedule_tick *out)
{
	int64_t now = now_ms / 1000, window_from, lo;
	size_t keep, n, k;
	int64_t *fired;

	if (now_ms - due_ms <= (int64_t)pol->late_after_ms)
		return decision(out, cursor, nominal, 0, true); /* on time */
	/* Late: the catch-up policy decides among the ticks up to now. */
	window_from = now - (int64_t)sc->catchup_window_s;
	lo = cursor > window_from - 1 ? cursor : window_from - 1;
	keep = catchup_keep(sc, pol);
	fired = calloc(keep, sizeof *fired);
	if (fired == NULL)
		return 0;
	n = schedule_newest_ticks(sc, lo, now, keep, fired);
	if (n == 0) {
		/* Every late tick lies before the window: none fires. */
		int64_t last = nominal;

		if (schedule_newest_ticks(sc, cursor, lo, 1, &last) == 0)
			last = nominal;
		k = decision(out, cursor, last,
			     schedule_ticks_between(sc, cursor, last), false);
	} else if (sc->catchup == SPEC_CATCHUP_NONE) {
		k = decision(out, cursor, fired[n - 1],
			     schedule_ticks_between(sc, cursor, fired[n - 1]),
			     false);
	} else if (sc->catchup == SPEC_CATCHUP_LATEST ||
		   pol->max_catchup_runs == 0) {
		k = decision(out, cursor, fired[n - 1],
			     schedule_ticks_between(sc, cursor, fired[n - 1] - 1),
			     true);
	} else {
		k = decision(out, cursor, fired[0],
			     schedule_ticks_between(sc, cursor, fired[0] - 1),
			     true);
		for (size_t i = 1; i < n; i++)
			k += decision(&out[k], fired[i - 1], fired[i], 0, true);
	}
	free(fired);
	return k;
}
