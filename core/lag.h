/* lag.h - how far behind a follower of an index is, in time: the age of
 * the oldest index it does not have yet. The leader of the indexes notes
 * when each index appeared (samples, bounded: when full, every other one is
 * dropped, so old samples get coarser, never newer); the age is `now` less
 * the time of the newest sample at or below what the follower holds (an
 * upper bound, as exact as the samples are dense: one per 100 ms at most,
 * older ones thinned when the ring fills). Used for
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
	uint64_t last;    /* the highest index noted */
};

void lag_track_init(struct lag_track *t);

/* Index `index` exists from `now_ms` on (indexes only grow; a lower or
 * equal one is ignored, and so is one within LAG_SPACING_MS of the last
 * sample: it is covered by the next). */
void lag_track_note(struct lag_track *t, uint64_t index, int64_t now_ms);

/* The age in ms at `now_ms` of the oldest index above `have` (0 when the
 * follower has every index noted); samples at or below `have` are
 * dropped. */
int64_t lag_track_age(struct lag_track *t, uint64_t have, int64_t now_ms);

#endif
