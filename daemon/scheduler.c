/* scheduler.c - the leader's cron: which schedule ticks are due, proposed as
 * `fire` commands (docs/triggers.md).
 *
 * DESIGN
 *
 * Every node keeps, per schedule of every deployed flow, its next tick
 * (the first after the replicated cursor) in a min-heap ordered by due time
 * (tick + the schedule's jitter). Only the leader acts on it: a timer wakes
 * at the earliest due time (at least once a second, so a wall-clock step
 * is noticed quickly), takes every due schedule and proposes their decisions
 * in `fire` commands of at most scheduler.fire_batch_max items. A tick less
 * than scheduler.late_after_ms late fires as is; a later one (no leader at
 * the time, a clock stepped forward) goes through the schedule's catch-up
 * policy, and the ticks it does not fire are recorded as missed.
 *
 * The scheduler never decides alone: each item carries the cursor it saw
 * (`prev`), and the state machine ignores an item whose cursor has moved,
 * so a tick proposed twice (two leaders, a retry after a timeout, a clock
 * stepped back) fires once. After every apply that touched a flow's
 * schedules (the fsm hook), that flow's entries are recomputed from the
 * cursors; a schedule with a proposal in flight is not proposed again
 * until that proposal completes.
 *
 * Time: due times are wall-clock (CLOCK_REALTIME) milliseconds, since ticks
 * are wall-clock instants; libuv timers only pace the checks.
 *
 * Thread: the loop thread.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/map.h"
#include "daemon/daemon.h"

struct sched_flow;

struct sched_entry {
	struct sched_flow *sf;
	unsigned index;
	char *key;              /* the schedule identity it was computed for */
	int64_t nominal;        /* the next tick (s); 0 = none */
	int64_t due_ms;
	size_t heap_pos;        /* SIZE_MAX when not in the heap */
	bool inflight;
	int64_t not_before_ms;  /* after a failed proposal */
};

struct sched_flow {
	char *name;
	struct sched_entry *e;
	unsigned n;
	bool dirty;
	struct sched_flow *dirty_next;
};

#define LAG_SAMPLES 65536

struct scheduler {
	struct flowd *d;
	/* Fire lag of the ticks this node committed as leader: commit time
	 * minus nominal time, the last LAG_SAMPLES of them (GET /v1/cluster). */
	uint32_t lag[LAG_SAMPLES];
	uint64_t n_lag;
	struct map flows;       /* name -> struct sched_flow* */
	struct sched_entry **heap;
	size_t n_heap, cap_heap;
	struct sched_flow *dirty_head;
	uv_timer_t timer;
	unsigned proposals;     /* fire commands in flight */
	bool closing;
};

/* One proposal in flight: which entries it decides. */
struct fire_ctx {
	struct scheduler *s;
	char **flows;           /* names (owned) */
	unsigned *index;
	int64_t *nominal;       /* the tick that fires, 0 when none does */
	size_t n;
};

#define NO_POS SIZE_MAX
/* Fire commands in flight at once. With fire_batch_max items each, this
 * bounds the runs one apply pass creates, so that a burst of due ticks
 * (10,000 in one second) cannot hold a loop past the election timeout:
 * unpaced, 10,000 runs applied in one pass cost a leadership change. */
#define PROPOSALS_MAX 4
#define RETRY_MS 200
#define MAX_SLEEP_MS 1000
#define COUNT_CAP 100000

/* ------------------------------------------------------------------------
 * Heap
 */

static bool earlier(const struct sched_entry *a, const struct sched_entry *b)
{
	return a->due_ms < b->due_ms;
}

static void heap_set(struct scheduler *s, size_t i, struct sched_entry *e)
{
	s->heap[i] = e;
	e->heap_pos = i;
}

static void sift_up(struct scheduler *s, size_t i)
{
	struct sched_entry *e = s->heap[i];

	while (i > 0 && earlier(e, s->heap[(i - 1) / 2])) {
		heap_set(s, i, s->heap[(i - 1) / 2]);
		i = (i - 1) / 2;
	}
	heap_set(s, i, e);
}

static void sift_down(struct scheduler *s, size_t i)
{
	struct sched_entry *e = s->heap[i];

	for (;;) {
		size_t c = 2 * i + 1;

		if (c >= s->n_heap)
			break;
		if (c + 1 < s->n_heap && earlier(s->heap[c + 1], s->heap[c]))
			c++;
		if (!earlier(s->heap[c], e))
			break;
		heap_set(s, i, s->heap[c]);
		i = c;
	}
	heap_set(s, i, e);
}

static void heap_push(struct scheduler *s, struct sched_entry *e)
{
	if (s->n_heap == s->cap_heap) {
		size_t cap = s->cap_heap ? s->cap_heap * 2 : 256;
		struct sched_entry **h = realloc(s->heap, cap * sizeof *h);

		if (h == NULL)
			abort();
		s->heap = h;
		s->cap_heap = cap;
	}
	heap_set(s, s->n_heap++, e);
	sift_up(s, e->heap_pos);
}

static void heap_remove(struct scheduler *s, struct sched_entry *e)
{
	size_t i = e->heap_pos;
	struct sched_entry *last;

	if (i == NO_POS)
		return;
	e->heap_pos = NO_POS;
	last = s->heap[--s->n_heap];
	if (last == e)
		return;
	heap_set(s, i, last);
	sift_up(s, i);
	sift_down(s, last->heap_pos);
}

/* ------------------------------------------------------------------------
 * Entries
 */

static int64_t jitter_ms(const char *flow, unsigned i, int64_t nominal,
			 unsigned jitter_s)
{
	char buf[48];

	if (jitter_s == 0)
		return 0;
	snprintf(buf, sizeof buf, ":%u:%" PRId64, i, nominal);
	return (int64_t)(map_fnv1a(buf, map_fnv1a(flow, MAP_FNV_SEED)) %
			 ((uint64_t)jitter_s * 1000 + 1));
}

static void flow_entries_free(struct scheduler *s, struct sched_flow *sf)
{
	for (unsigned i = 0; i < sf->n; i++) {
		heap_remove(s, &sf->e[i]);
		free(sf->e[i].key);
	}
	free(sf->e);
	sf->e = NULL;
	sf->n = 0;
}

/* Recompute a flow's entries from the state machine. In-flight marks
 * survive for schedules whose identity is unchanged. */
static void flow_refresh(struct scheduler *s, struct sched_flow *sf)
{
	struct fsm_flow *fl = fsm_flow_get(&s->d->fsm, sf->name);
	const struct flow_spec *spec =
		fl && fl->current ? fl->versions[fl->current - 1].spec : NULL;
	struct sched_entry *old = sf->e;
	unsigned n_old = sf->n;

	for (unsigned i = 0; i < n_old; i++)
		heap_remove(s, &old[i]);
	sf->e = NULL;
	sf->n = 0;
	if (spec != NULL && fl->n_sched > 0) {
		sf->e = calloc(fl->n_sched, sizeof *sf->e);
		if (sf->e == NULL)
			abort();
		sf->n = fl->n_sched;
	}
	for (unsigned i = 0; i < sf->n; i++) {
		struct sched_entry *e = &sf->e[i];
		const struct spec_schedule *sc = &spec->schedules[i];
		const struct fsm_schedule_state *st = &fl->sched[i];
		int64_t next;

		e->sf = sf;
		e->index = i;
		e->heap_pos = NO_POS;
		e->key = strdup(st->key);
		if (e->key == NULL)
			abort();
		for (unsigned k = 0; k < n_old; k++)
			if (old[k].key != NULL && strcmp(old[k].key, e->key) == 0 &&
			    old[k].index == i) {
				e->inflight = old[k].inflight;
				e->not_before_ms = old[k].not_before_ms;
			}
		if (!cron_next(&sc->cron, sc->tz, sc->dst_missing,
			       sc->dst_repeated, st->cursor, &next))
			continue; /* no more ticks */
		e->nominal = next;
		e->due_ms = next * 1000 +
			    jitter_ms(sf->name, i, next, sc->jitter_s);
		if (e->due_ms < e->not_before_ms)
			e->due_ms = e->not_before_ms;
		heap_push(s, e);
	}
	for (unsigned i = 0; i < n_old; i++)
		free(old[i].key);
	free(old);
}

static struct sched_flow *flow_get(struct scheduler *s, const char *name)
{
	struct sched_flow *sf = map_get(&s->flows, name);

	if (sf != NULL)
		return sf;
	sf = calloc(1, sizeof *sf);
	if (sf == NULL || (sf->name = strdup(name)) == NULL ||
	    map_put(&s->flows, sf->name, sf) != 0)
		abort();
	return sf;
}

static void mark_dirty(struct scheduler *s, struct sched_flow *sf)
{
	if (sf->dirty)
		return;
	sf->dirty = true;
	sf->dirty_next = s->dirty_head;
	s->dirty_head = sf;
}

static void rearm(struct scheduler *s);

static void refresh_dirty(struct scheduler *s)
{
	while (s->dirty_head != NULL) {
		struct sched_flow *sf = s->dirty_head;

		s->dirty_head = sf->dirty_next;
		sf->dirty = false;
		flow_refresh(s, sf);
	}
}

/* ------------------------------------------------------------------------
 * Deciding
 */

/* The newest (at most `keep`) ticks in (lo, hi], ascending, into out[];
 * returns how many. It scans back from hi in spans that grow 16-fold, so a
 * dense schedule costs a few dozen steps and a sparse one a few spans;
 * every scan is capped at COUNT_CAP steps. */
static size_t newest_ticks(const struct spec_schedule *sc, int64_t lo,
			   int64_t hi, size_t keep, int64_t *out)
{
	int64_t span = 64;

	if (hi <= lo || keep == 0)
		return 0;
	for (;;) {
		int64_t start = hi - span < lo ? lo : hi - span, t = start, next;
		size_t n = 0, steps = 0;

		while (steps < COUNT_CAP &&
		       cron_next(&sc->cron, sc->tz, sc->dst_missing,
				 sc->dst_repeated, t, &next) &&
		       next <= hi) {
			if (n == keep)
				memmove(out, out + 1, (keep - 1) * sizeof *out);
			else
				n++;
			out[n - 1] = next;
			t = next;
			steps++;
		}
		if (n == keep || start == lo || steps >= COUNT_CAP ||
		    span > INT64_MAX / 16)
			return n;
		span *= 16;
	}
}

/* Ticks in (from, to], exact up to COUNT_CAP (then at least that many). */
static uint64_t ticks_between(const struct spec_schedule *sc, int64_t from,
			      int64_t to)
{
	return cron_count(&sc->cron, sc->tz, sc->dst_missing, sc->dst_repeated,
			  from, to, COUNT_CAP);
}

/* The decision items for a due entry at wall-clock now. Bounded work: a
 * few scans of at most COUNT_CAP steps, whatever the outage. */
static void decide(struct scheduler *s, struct sched_entry *e, int64_t now_ms,
		   json_t *items)
{
	struct fsm_flow *fl = fsm_flow_get(&s->d->fsm, e->sf->name);
	const struct spec_schedule *sc =
		&fl->versions[fl->current - 1].spec->schedules[e->index];
	const struct fsm_schedule_state *st = &fl->sched[e->index];
	int64_t now = now_ms / 1000, cursor = st->cursor, window_from, lo;
	unsigned max_runs = s->d->cfg->limits.max_catchup_runs;
	size_t keep, n, k;
	int64_t *fired;

#define ITEM(prev_, nom_, missed_, fire_)                                     \
	json_array_append_new(                                                \
		items, json_pack("{s:s, s:i, s:s, s:I, s:I, s:I, s:b}", "flow", \
				 e->sf->name, "schedule", (int)e->index,      \
				 "key", st->key, "prev", (json_int_t)(prev_), \
				 "nominal", (json_int_t)(nom_), "missed",     \
				 (json_int_t)(missed_), "fire", (fire_)))

	if (now_ms - e->due_ms <= (int64_t)s->d->cfg->late_after_ms) {
		ITEM(cursor, e->nominal, 0, true); /* on time */
		return;
	}
	/* Late: the catch-up policy decides among the ticks up to now. */
	window_from = now - (int64_t)sc->catchup_window_s;
	lo = cursor > window_from - 1 ? cursor : window_from - 1;
	keep = sc->catchup == SPEC_CATCHUP_ALL ? (max_runs ? max_runs : 1) : 1;
	fired = calloc(keep, sizeof *fired);
	if (fired == NULL)
		abort();
	n = newest_ticks(sc, lo, now, keep, fired);
	if (n == 0) {
		/* Every late tick lies before the window: none fires. */
		int64_t last = e->nominal;

		if (newest_ticks(sc, cursor, lo, 1, &last) == 0)
			last = e->nominal;
		ITEM(cursor, last, ticks_between(sc, cursor, last), false);
	} else if (sc->catchup == SPEC_CATCHUP_NONE) {
		ITEM(cursor, fired[n - 1], ticks_between(sc, cursor, fired[n - 1]),
		     false);
	} else if (sc->catchup == SPEC_CATCHUP_LATEST || max_runs == 0) {
		ITEM(cursor, fired[n - 1],
		     ticks_between(sc, cursor, fired[n - 1] - 1), true);
	} else {
		ITEM(cursor, fired[0], ticks_between(sc, cursor, fired[0] - 1),
		     true);
		for (k = 1; k < n; k++)
			ITEM(fired[k - 1], fired[k], 0, true);
	}
	free(fired);
#undef ITEM
}

static void fire_ctx_free(struct fire_ctx *fc)
{
	for (size_t i = 0; i < fc->n; i++)
		free(fc->flows[i]);
	free(fc->flows);
	free(fc->index);
	free(fc->nominal);
	free(fc);
}

static void fire_done_cb(void *arg, int status, uint64_t index, void *result)
{
	struct fire_ctx *fc = arg;
	struct scheduler *s = fc->s;
	int64_t now = flowd_now_ms();

	s->proposals--;
	if (!s->closing) {
		for (size_t i = 0; i < fc->n; i++) {
			struct sched_flow *sf = map_get(&s->flows, fc->flows[i]);
			int64_t lag = now - fc->nominal[i] * 1000;

			if (status == CONSENSUS_OK && fc->nominal[i] > 0 && lag >= 0)
				s->lag[s->n_lag++ % LAG_SAMPLES] =
					lag > UINT32_MAX ? UINT32_MAX : (uint32_t)lag;

			if (sf == NULL || fc->index[i] >= sf->n)
				continue;
			sf->e[fc->index[i]].inflight = false;
			if (status != CONSENSUS_OK)
				sf->e[fc->index[i]].not_before_ms = now + RETRY_MS;
			mark_dirty(s, sf);
		}
		if (status != CONSENSUS_OK && status != CONSENSUS_SHUTDOWN)
			log_warn("scheduler: a fire proposal failed status=%d; "
				 "retrying", status);
		rearm(s);
	}
	fire_ctx_free(fc);
}

static void propose_batch(struct scheduler *s, json_t *items,
			  struct fire_ctx *fc)
{
	char *buf;
	size_t len;

	s->proposals++;
	if (fsm_cmd_fire(flowd_now_ms(), items,
			 s->d->cfg->limits.max_buffered_runs, &buf, &len) != 0 ||
	    consensus_propose(s->d->raft, buf, len,
			      s->d->cfg->apply_timeout_ms, fire_done_cb,
			      fc) != CONSENSUS_OK) {
		s->proposals--;
		/* fire_done_cb never runs: release the marks here */
		for (size_t i = 0; i < fc->n; i++) {
			struct sched_flow *sf = map_get(&s->flows, fc->flows[i]);

			if (sf != NULL && fc->index[i] < sf->n) {
				sf->e[fc->index[i]].inflight = false;
				sf->e[fc->index[i]].not_before_ms =
					flowd_now_ms() + RETRY_MS;
				mark_dirty(s, sf);
			}
		}
		fire_ctx_free(fc);
	}
}

static struct fire_ctx *fire_ctx_new(struct scheduler *s, size_t cap)
{
	struct fire_ctx *fc = calloc(1, sizeof *fc);

	if (fc == NULL || (fc->flows = calloc(cap, sizeof *fc->flows)) == NULL ||
	    (fc->index = calloc(cap, sizeof *fc->index)) == NULL ||
	    (fc->nominal = calloc(cap, sizeof *fc->nominal)) == NULL)
		abort();
	fc->s = s;
	return fc;
}

static void tick(struct scheduler *s)
{
	struct flowd *d = s->d;
	unsigned batch = d->cfg->fire_batch_max;
	int64_t now_ms = flowd_now_ms();
	json_t *items = NULL;
	struct fire_ctx *fc = NULL;

	refresh_dirty(s);
	if (d->role != CONSENSUS_LEADER || d->stopping)
		return;
	while (s->n_heap > 0 && s->heap[0]->due_ms <= now_ms &&
	       s->proposals < PROPOSALS_MAX) {
		struct sched_entry *e = s->heap[0];

		heap_remove(s, e);
		if (e->inflight)
			continue; /* re-added when its proposal completes */
		if (items == NULL) {
			items = json_array();
			fc = fire_ctx_new(s, batch);
		}
		decide(s, e, now_ms, items);
		e->inflight = true;
		{
			json_t *last = json_array_get(items, json_array_size(items) - 1);

			fc->nominal[fc->n] =
				json_is_true(json_object_get(last, "fire"))
					? json_integer_value(json_object_get(last, "nominal"))
					: 0;
		}
		fc->flows[fc->n] = strdup(e->sf->name);
		fc->index[fc->n] = e->index;
		if (fc->flows[fc->n] == NULL)
			abort();
		fc->n++;
		if (fc->n == batch || json_array_size(items) >= batch) {
			propose_batch(s, items, fc);
			json_decref(items);
			items = NULL;
			fc = NULL;
		}
	}
	if (items != NULL) {
		propose_batch(s, items, fc);
		json_decref(items);
	}
	refresh_dirty(s); /* proposals refused at once */
}

static void timer_cb(uv_timer_t *h)
{
	struct scheduler *s = h->data;

	tick(s);
	rearm(s);
}

static void rearm(struct scheduler *s)
{
	int64_t delay = MAX_SLEEP_MS;

	if (s->closing)
		return;
	if (s->dirty_head != NULL) {
		delay = 1;
	} else if (s->d->role == CONSENSUS_LEADER && !s->d->stopping &&
		   s->n_heap > 0 && s->proposals < PROPOSALS_MAX) {
		delay = s->heap[0]->due_ms - flowd_now_ms();
		if (delay > MAX_SLEEP_MS)
			delay = MAX_SLEEP_MS;
	}
	/* Never 0: this runs inside the timer's own callback, and libuv runs
	 * a timer re-armed there with timeout 0 again in the same pass, with
	 * the loop's time unchanged: a due entry that tick() could not take
	 * (the node stopping) spun the loop forever at SIGTERM. */
	if (delay < 1)
		delay = 1;
	uv_timer_start(&s->timer, timer_cb, (uint64_t)delay, 0);
}

/* ------------------------------------------------------------------------
 * Life cycle and hooks
 */

int scheduler_new(struct flowd *d)
{
	struct scheduler *s = calloc(1, sizeof *s);

	if (s == NULL)
		return -1;
	s->d = d;
	map_init(&s->flows);
	uv_timer_init(d->loop, &s->timer);
	s->timer.data = s;
	d->sched = s;
	rearm(s);
	return 0;
}

void scheduler_hook_changed(void *arg, struct fsm_flow *fl)
{
	struct flowd *d = arg;
	struct scheduler *s = d->sched;

	if (s == NULL || s->closing)
		return;
	mark_dirty(s, flow_get(s, fl->name));
	if (!uv_is_active((uv_handle_t *)&s->timer) ||
	    uv_timer_get_due_in(&s->timer) > 0)
		uv_timer_start(&s->timer, timer_cb, 0, 0);
}

void scheduler_rebuild(struct flowd *d)
{
	struct scheduler *s = d->sched;

	if (s == NULL || s->closing)
		return;
	for (size_t b = 0; b < d->fsm.flows.n_buckets; b++)
		for (struct map_entry *e = d->fsm.flows.buckets[b]; e; e = e->next)
			mark_dirty(s, flow_get(s, e->key));
	/* Entries of flows the state no longer has (after a restore). */
	for (size_t b = 0; b < s->flows.n_buckets; b++)
		for (struct map_entry *e = s->flows.buckets[b]; e; e = e->next)
			mark_dirty(s, e->value);
	uv_timer_start(&s->timer, timer_cb, 0, 0);
}

static int u32_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

uint64_t scheduler_ticks_fired(struct flowd *d)
{
	return d->sched != NULL ? d->sched->n_lag : 0;
}

json_t *scheduler_stats_json(struct flowd *d)
{
	struct scheduler *s = d->sched;
	size_t n;
	uint32_t *v;
	json_t *out;

	if (s == NULL)
		return json_null();
	n = s->n_lag < LAG_SAMPLES ? (size_t)s->n_lag : LAG_SAMPLES;
	out = json_pack("{s:I, s:I}", "schedules", (json_int_t)s->n_heap,
			"ticks_fired", (json_int_t)s->n_lag);
	if (n == 0)
		return out;
	v = malloc(n * sizeof *v);
	if (v == NULL)
		return out;
	memcpy(v, s->lag, n * sizeof *v);
	qsort(v, n, sizeof *v, u32_cmp);
	json_object_set_new(out, "fire_lag_ms",
			    json_pack("{s:I, s:I, s:I, s:I}", "samples",
				      (json_int_t)n, "p50",
				      (json_int_t)v[(n - 1) / 2], "p99",
				      (json_int_t)v[(n * 99 + 99) / 100 - 1],
				      "max", (json_int_t)v[n - 1]));
	free(v);
	return out;
}

static void sched_closed_cb(uv_handle_t *h)
{
	struct scheduler *s = h->data;

	for (size_t b = 0; b < s->flows.n_buckets; b++)
		for (struct map_entry *e = s->flows.buckets[b]; e; e = e->next) {
			struct sched_flow *sf = e->value;

			flow_entries_free(s, sf);
			free(sf->name);
			free(sf);
		}
	map_close(&s->flows);
	free(s->heap);
	free(s);
}

void scheduler_close(struct flowd *d)
{
	struct scheduler *s = d->sched;

	if (s == NULL)
		return;
	d->sched = NULL;
	s->closing = true;
	uv_close((uv_handle_t *)&s->timer, sched_closed_cb);
}
