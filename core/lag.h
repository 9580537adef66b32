/* lag.h - how far behind a follower of an index is, in time: the age of
 * the oldest index it does not have yet. The one who makes the indexes
 * notes when they appear, in samples (index ranges with the time the range
 * began; at most one new sample per LAG_SPACING_MS, later indexes extend
 * the newest; when the ring is full, neighbours merge), and the age is
 * `now` less the time of the first sample the follower does not wholly
 * have: accurate to that sample's span (100 ms while recent, more once
 * merged) and the time between two notes. An index that appears after a
 * quiet spell starts a new sample, so quiet time is never counted as
 * backlog. Used for
 * PostgreSQL's backlog in seconds (flowd_db_backlog_seconds). Pure; one
 * thread. */
#ifndef FLOWD_CORE_LAG_H
#define FLOWD_CORE_LAG_H

#include <stdint.h>

#define LAG_SAMPLES 256
#define LAG_SPACING_MS 100 /* at most one sample per 100 ms */

struct lag_track {
	struct {
		uint64_t index;
		int64_t ms;
	} s[LAG_SAMPLES];
	unsigned head, n; /* a ring: s[head], ... s[head + n - 1] */
};

void lag_track_init(struct lag_track *t);

/* Index `index` exists from `now_ms` on (indexes only grow; a lower or
 * equal one is ignored). */
void lag_track_note(struct lag_track *t, uint64_t index, int64_t now_ms);

/* The age in ms at `now_ms` of the oldest index above `have` (0 when the
 * follower has every index noted); samples it wholly has are dropped. */
int64_t lag_track_age(struct lag_track *t, uint64_t have, int64_t now_ms);

#endif
