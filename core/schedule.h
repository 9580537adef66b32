/* schedule.h - what a due schedule does: its next tick and due time
 * (jitter), and the catch-up decision for a late tick (docs/triggers.md,
 * "Late ticks and catch-up"). Pure: the caller hands in the wall-clock time;
 * no clock, no I/O (zones come from tz.h through the spec). The leader's
 * scheduler (daemon/scheduler.c) turns the decisions into `fire` commands.
 */
#ifndef FLOWD_CORE_SCHEDULE_H
#define FLOWD_CORE_SCHEDULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/spec.h"

/* A scan or a count looks at most this many ticks: the leader's work for a
 * late schedule stays bounded whatever the outage. A missed count beyond it
 * reads "at least" SCHEDULE_COUNT_CAP. */
#define SCHEDULE_COUNT_CAP 100000

/* One decision: an item of a `fire` command (core/fsm.h, fsm_cmd_fire). */
struct schedule_tick {
	int64_t prev;       /* the cursor it was decided from (s) */
	int64_t nominal;    /* the tick (s) */
	uint64_t missed;    /* ticks recorded missed: those after prev and
	                     * before nominal, and nominal too when it does
	                     * not fire */
	bool fire;          /* false: nothing runs; the cursor moves to
	                     * nominal */
};

/* The settings the decision reads ([scheduler], [limits]). */
struct schedule_policy {
	unsigned late_after_ms;     /* later than this: catch-up decides */
	unsigned max_catchup_runs;  /* catchup "all": at most this many fire */
};

/* The first tick of sc strictly after `after` (s) into *next. Returns
 * false when there is none (within cron_next's horizon). */
bool schedule_next(const struct spec_schedule *sc, int64_t after,
		   int64_t *next);

/* The fixed pseudo-random delay (ms, 0..jitter_s * 1000) of tick `nominal`
 * of schedule `index` of `flow`: a hash of the three, so every node and
 * every leader computes the same. 0 when jitter_s is 0. */
int64_t schedule_jitter_ms(const char *flow, unsigned index, int64_t nominal,
			   unsigned jitter_s);

/* The newest (at most `keep`) ticks in (lo, hi], ascending, into out[];
 * returns how many. It scans back from hi in spans that grow 16-fold, so a
 * dense schedule costs a few dozen steps and a sparse one a few spans;
 * every scan is capped at SCHEDULE_COUNT_CAP steps. */
size_t schedule_newest_ticks(const struct spec_schedule *sc, int64_t lo,
			     int64_t hi, size_t keep, int64_t *out);

/* Ticks in (from, to], exact up to SCHEDULE_COUNT_CAP (then that many). */
uint64_t schedule_ticks_between(const struct spec_schedule *sc, int64_t from,
				int64_t to);

/* How many decisions schedule_decide() may return for sc: the room out[]
 * needs. */
size_t schedule_decide_max(const struct spec_schedule *sc,
			   const struct schedule_policy *pol);

/* The decisions for schedule sc whose replicated cursor is `cursor`, whose
 * next tick `nominal` (the first after the cursor) was due at due_ms
 * (nominal + jitter), looked at at wall-clock now_ms:
 *
 * - at most pol->late_after_ms late: that tick fires as it is;
 * - later (no leader at the time, a clock stepped forward): sc->catchup
 *   decides among the ticks in (cursor, now] inside the catch-up window
 *   (now - catchup_window_s): `none` fires none and records the newest as
 *   missed with the ones before it; `latest` fires the newest, the older
 *   ones counted missed; `all` fires the newest max_catchup_runs, oldest
 *   first, the first carrying the missed count of those before it. With no
 *   tick inside the window, the newest tick before it is recorded, not
 *   fired.
 *
 * Each decision's `prev` is the cursor it expects (the tick before it for
 * all but the first), so the state machine accepts each once. Bounded work:
 * a few scans of at most SCHEDULE_COUNT_CAP steps. out[] has room for
 * schedule_decide_max(); returns how many were written (at least 1), or 0
 * when out of memory. */
size_t schedule_decide(const struct spec_schedule *sc, int64_t cursor,
		       int64_t nominal, int64_t due_ms, int64_t now_ms,
		       const struct schedule_policy *pol,
		       struct schedule_tick *out);

#endif
