/* lag.c - the age of a follower's backlog (lag.h). */
#include "core/lag.h"

#include <string.h>

#define AT(t, i) ((t)->s[((t)->head + (i)) % LAG_SAMPLES])

void lag_track_init(struct lag_track *t)
{
	memset(t, 0, sizeof *t);
}

void lag_track_note(struct lag_track *t, uint64_t index, int64_t now_ms)
{
	if (t->n > 0 && index <= AT(t, t->n - 1).index)
		return;
	if (t->n > 0 && now_ms - AT(t, t->n - 1).ms < LAG_SPACING_MS) {
		/* Within the newest sample's window: it now covers this index
		 * too, with its (earlier) time. */
		AT(t, t->n - 1).index = index;
		return;
	}
	if (t->n == LAG_SAMPLES) {
		/* Merge neighbours: each pair becomes one sample covering
		 * both ranges, with the earlier time, so an age is never
		 * too young, only coarser for old samples. */
		struct lag_track old = *t;
		unsigned k = 0;
		for (unsigned i = 0; i < old.n; i += 2) {
			t->s[k] = AT(&old, i);
			if (i + 1 < old.n)
				t->s[k].index = AT(&old, i + 1).index;
			k++;
		}
		t->head = 0;
		t->n = k;
	}
	AT(t, t->n).index = index;
	AT(t, t->n).ms = now_ms;
	t->n++;
}

int64_t lag_track_age(struct lag_track *t, uint64_t have, int64_t now_ms)
{
	/* Samples the follower has entirely are done with; the first one
	 * left covers the oldest index it lacks, which appeared at or after
	 * the previous sample and by the end of this one's window. */
	while (t->n > 0 && AT(t, 0).index <= have) {
		t->head = (t->head + 1) % LAG_SAMPLES;
		t->n--;
	}
	if (t->n == 0)
		return 0;
	int64_t age = now_ms - AT(t, 0).ms;
	return age > 0 ? age : 0;
}
