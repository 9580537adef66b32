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
	if (index > t->last)
		t->last = index;
	if (t->n > 0 && (index <= AT(t, t->n - 1).index ||
			 now_ms - AT(t, t->n - 1).ms < LAG_SPACING_MS))
		return;
	if (t->n == LAG_SAMPLES) {
		/* Keep the oldest and every other one after it: the age of
		 * the oldest pending index stays exact, later ones coarser. */
		struct lag_track old = *t;
		unsigned k = 0;
		for (unsigned i = 0; i < old.n; i += 2)
			t->s[k++] = AT(&old, i);
		t->head = 0;
		t->n = k;
	}
	AT(t, t->n).index = index;
	AT(t, t->n).ms = now_ms;
	t->n++;
}

int64_t lag_track_age(struct lag_track *t, uint64_t have, int64_t now_ms)
{
	/* Keep the newest sample at or below `have`: the first missing index
	 * appeared after it, so its time gives an age that is never too
	 * young. */
	while (t->n > 1 && AT(t, 1).index <= have) {
		t->head = (t->head + 1) % LAG_SAMPLES;
		t->n--;
	}
	if (t->n == 0 || have >= t->last)
		return 0;
	int64_t age = now_ms - AT(t, 0).ms;
	return age > 0 ? age : 0;
}
