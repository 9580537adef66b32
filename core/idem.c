/* idem.c - idempotency keys with a retention (see idem.h).
 *
 * DESIGN
 *
 * A key is one allocation, struct idem_ent, holding "flow\nkey", the run's
 * seq, the time it was made and its hash. Two arrays point at it: `slots`,
 * an open-addressing table with linear probing (lookup), and `order`, a ring
 * in the order keys were made (expiry takes the oldest from its head). A
 * key made again replaces the entry in place; since runs are made in seq
 * order, `order` stays sorted by time. Removing a key from the table shifts
 * the entries behind it back (no tombstones), so lookups never slow down
 * with churn.
 *
 * The table grows at half full and never shrinks below what it holds; the
 * ring grows when full. Out of memory aborts: this is apply.
 */
#include "idem.h"

#include <stdlib.h>
#include <string.h>

#include "map.h"

struct idem_ent {
	uint64_t seq;
	int64_t ts_ms;
	uint64_t hash;
	char key[];                 /* "flow\nkey" */
};

static void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n);
	if (p == NULL)
		abort();
	return p;
}

static uint64_t hash_of(const char *flow, const char *key)
{
	return map_fnv1a(key, map_fnv1a("\n", map_fnv1a(flow, MAP_FNV_SEED)));
}

static int same(const struct idem_ent *e, uint64_t h, const char *flow,
		const char *key)
{
	size_t fl = strlen(flow);

	return e->hash == h && strncmp(e->key, flow, fl) == 0 &&
	       e->key[fl] == '\n' && strcmp(e->key + fl + 1, key) == 0;
}

void idem_init(struct idem *t)
{
	memset(t, 0, sizeof *t);
}

void idem_close(struct idem *t)
{
	for (size_t i = 0; i < t->n; i++)
		free(t->order[(t->head + i) % t->ring_cap]);
	free(t->slots);
	free(t->order);
	memset(t, 0, sizeof *t);
}

/* The slot of the entry for (flow, key), or of the empty slot where it
 * would go. */
static size_t find(const struct idem *t, uint64_t h, const char *flow,
		   const char *key)
{
	size_t i = (size_t)h & (t->cap - 1);

	while (t->slots[i] != NULL && !same(t->slots[i], h, flow, key))
		i = (i + 1) & (t->cap - 1);
	return i;
}

uint64_t idem_get(const struct idem *t, const char *flow, const char *key,
		  int64_t *ts_ms)
{
	size_t i;

	if (t->cap == 0)
		return 0;
	i = find(t, hash_of(flow, key), flow, key);
	if (t->slots[i] == NULL)
		return 0;
	if (ts_ms != NULL)
		*ts_ms = t->slots[i]->ts_ms;
	return t->slots[i]->seq;
}

static void grow_table(struct idem *t)
{
	size_t cap = t->cap ? t->cap * 2 : 64;
	struct idem_ent **old = t->slots;
	size_t old_cap = t->cap;

	t->slots = calloc(cap, sizeof *t->slots);
	if (t->slots == NULL)
		abort();
	t->cap = cap;
	for (size_t i = 0; i < old_cap; i++) {
		struct idem_ent *e = old[i];
		size_t j;

		if (e == NULL)
			continue;
		j = (size_t)e->hash & (cap - 1);
		while (t->slots[j] != NULL)
			j = (j + 1) & (cap - 1);
		t->slots[j] = e;
	}
	free(old);
}

static void ring_push(struct idem *t, struct idem_ent *e)
{
	if (t->n == t->ring_cap) {
		size_t cap = t->ring_cap ? t->ring_cap * 2 : 64;
		struct idem_ent **r = xrealloc(NULL, cap * sizeof *r);

		for (size_t i = 0; i < t->n; i++)
			r[i] = t->order[(t->head + i) % t->ring_cap];
		free(t->order);
		t->order = r;
		t->ring_cap = cap;
		t->head = 0;
	}
	t->order[(t->head + t->n) % t->ring_cap] = e;
	t->n++;
}

/* Remove the entry at slot i, shifting the probe sequence behind it back
 * (Knuth 6.4, algorithm R). */
static void slot_remove(struct idem *t, size_t i)
{
	size_t j = i;

	t->slots[i] = NULL;
	for (;;) {
		size_t k;

		j = (j + 1) & (t->cap - 1);
		if (t->slots[j] == NULL)
			return;
		k = (size_t)t->slots[j]->hash & (t->cap - 1);
		/* leave it if its home k lies cyclically in (i, j] */
		if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
			continue;
		t->slots[i] = t->slots[j];
		t->slots[j] = NULL;
		i = j;
	}
}

void idem_put(struct idem *t, const char *flow, const char *key, uint64_t seq,
	      int64_t ts_ms)
{
	size_t fl = strlen(flow), kl = strlen(key), i;
	uint64_t h = hash_of(flow, key);
	struct idem_ent *e;

	if ((t->n + 1) * 2 > t->cap)
		grow_table(t);
	i = find(t, h, flow, key);
	if (t->slots[i] != NULL) {
		/* the same key again (its run left memory and a retry past
		 * the retention made another): keep the newest */
		e = t->slots[i];
		e->seq = seq;
		e->ts_ms = ts_ms;
		return;
	}
	e = xrealloc(NULL, sizeof *e + fl + kl + 2);
	e->seq = seq;
	e->ts_ms = ts_ms;
	e->hash = h;
	memcpy(e->key, flow, fl);
	e->key[fl] = '\n';
	memcpy(e->key + fl + 1, key, kl + 1);
	t->slots[i] = e;
	ring_push(t, e);
}

size_t idem_expire(struct idem *t, int64_t now_ms, int64_t ttl_ms, size_t max)
{
	size_t gone = 0;

	while (t->n > 0) {
		struct idem_ent *e = t->order[t->head];
		size_t i;

		if (!(max > 0 && t->n > max) &&
		    !(ttl_ms > 0 && e->ts_ms < now_ms - ttl_ms))
			break;
		i = (size_t)e->hash & (t->cap - 1);
		while (t->slots[i] != e)
			i = (i + 1) & (t->cap - 1);
		slot_remove(t, i);
		t->head = (t->head + 1) % t->ring_cap;
		t->n--;
		free(e);
		gone++;
	}
	return gone;
}

size_t idem_count(const struct idem *t)
{
	return t->n;
}

const char *idem_at(const struct idem *t, size_t i, uint64_t *seq,
		    int64_t *ts_ms)
{
	const struct idem_ent *e = t->order[(t->head + i) % t->ring_cap];

	*seq = e->seq;
	*ts_ms = e->ts_ms;
	return e->key;
}
