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
 * What a due schedule decides (on time, or late and through its catch-up
 * policy) is pure and lives in core/schedule.c; this file keeps the heap,
 * the timer and the proposals, which go through the injected proposer
 * (forward.c: raft, on the leader).
 *
 * Time: due times are wall-clock milliseconds (the injected clock,
 * CLOCK_REALTIME in main.c), since ticks are wall-clock instants; libuv
 * timers only pace the checks.
 *
 * Thread: the loop thread.
 */
#include "daemon/scheduler.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/map.h"
#include "core/schedule.h"

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
	const struct flowd_config *cfg;
	struct fsm *fsm;
	struct flowd_clock clock;
	struct forward_proposer proposer;
	enum consensus_role role;
	bool stopping;
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
	struct fsm_flow *fl = fsm_flow_get(s->fsm, sf->name);
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
		if (!schedule_next(sc, st->cursor, &next))
			continue; /* no more ticks */
		e->nominal = next;
		e->due_ms = next * 1000 +
			    schedule_jitter_ms(sf->name, i, next, sc->jitter_s);
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

/* Append the decisions for a due entry at wall-clock now_ms to `items`
 * (the items of a fire command, fsm_cmd_fire). Returns the tick that
 * fires last, 0 when none does. */
static int64_t decide(struct scheduler *s, struct sched_entry *e,
		      int64_t now_ms, json_t *items)
{
	struct fsm_flow *fl = fsm_flow_get(s->fsm, e->sf->name);
	const struct spec_schedule *sc =
		&fl->versions[fl->current - 1].spec->schedules[e->index];
	const struct fsm_schedule_state *st = &fl->sched[e->index];
	struct schedule_policy pol = {
		.late_after_ms = s->cfg->late_after_ms,
		.max_catchup_runs = s->cfg->limits.max_catchup_runs,
	};
	struct schedule_tick *t = calloc(schedule_decide_max(sc, &pol), sizeof *t);
	size_t n;
	int64_t fired;

	if (t == NULL)
		abort();
	n = schedule_decide(sc, st->cursor, e->nominal, e->due_ms, now_ms, &pol,
			    t);
	if (n == 0)
		abort();
	for (size_t k = 0; k < n; k++)
		json_array_append_new(
			items, json_pack("{s:s, s:i, s:s, s:I, s:I, s:I, s:b}",
					 "flow", e->sf->name, "schedule",
					 (int)e->index, "key", st->key, "prev",
					 (json_int_t)t[k].prev, "nominal",
					 (json_int_t)t[k].nominal, "missed",
					 (json_int_t)t[k].missed, "fire",
					 t[k].fire));
	fired = t[n - 1].fire ? t[n - 1].nominal : 0;
	free(t);
	return fired;
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

static void fire_done_cb(void *arg, int status,
			 const struct peer_result *refusal)
{
	struct fire_ctx *fc = arg;
	struct scheduler *s = fc->s;
	int64_t now = flowd_clock_now(&s->clock);

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
	if (fsm_cmd_fire(flowd_clock_now(&s->clock), items,
			 s->cfg->limits.max_buffered_runs, &buf, &len) != 0 ||
	    s->proposer.propose(s->proposer.arg, buf, len, fire_done_cb,
				fc) != 0) {
		s->proposals--;
		/* fire_done_cb never runs: release the marks here */
		for (size_t i = 0; i < fc->n; i++) {
			struct sched_flow *sf = map_get(&s->flows, fc->flows[i]);

			if (sf != NULL && fc->index[i] < sf->n) {
				sf->e[fc->index[i]].inflight = false;
				sf->e[fc->index[i]].not_before_ms =
					flowd_clock_now(&s->clock) + RETRY_MS;
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
	unsigned batch = s->cfg->fire_batch_max;
	int64_t now_ms = flowd_clock_now(&s->clock);
	json_t *items = NULL;
	struct fire_ctx *fc = NULL;

	refresh_dirty(s);
	if (s->role != CONSENSUS_LEADER || s->stopping)
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
		fc->nominal[fc->n] = decide(s, e, now_ms, items);
		e->inflight = true;
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
	} else if (s->role == CONSENSUS_LEADER && !s->stopping &&
		   s->n_heap > 0 && s->proposals < PROPOSALS_MAX) {
		delay = s->heap[0]->due_ms - flowd_clock_now(&s->clock);
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

struct scheduler *scheduler_new(const struct scheduler_config *c)
{
	struct scheduler *s = calloc(1, sizeof *s);

	if (s == NULL)
		return NULL;
	s->cfg = c->cfg;
	s->fsm = c->fsm;
	s->clock = c->clock;
	s->proposer = c->proposer;
	map_init(&s->flows);
	uv_timer_init(c->loop, &s->timer);
	s->timer.data = s;
	rearm(s);
	return s;
}

void scheduler_hook_changed(struct scheduler *s, struct fsm_flow *fl)
{
	if (s->closing)
		return;
	mark_dirty(s, flow_get(s, fl->name));
	if (!uv_is_active((uv_handle_t *)&s->timer) ||
	    uv_timer_get_due_in(&s->timer) > 0)
		uv_timer_start(&s->timer, timer_cb, 0, 0);
}

void scheduler_rebuild(struct scheduler *s)
{
	if (s == NULL || s->closing)
		return;
	for (size_t b = 0; b < s->fsm->flows.n_buckets; b++)
		for (struct map_entry *e = s->fsm->flows.buckets[b]; e; e = e->next)
			mark_dirty(s, flow_get(s, e->key));
	/* Entries of flows the state no longer has (after a restore). */
	for (size_t b = 0; b < s->flows.n_buckets; b++)
		for (struct map_entry *e = s->flows.buckets[b]; e; e = e->next)
			mark_dirty(s, e->value);
	uv_timer_start(&s->timer, timer_cb, 0, 0);
}

void scheduler_role_set(struct scheduler *s, enum consensus_role role)
{
	bool won = role == CONSENSUS_LEADER && s->role != CONSENSUS_LEADER;

	s->role = role;
	if (won)
		scheduler_rebuild(s);
}

void scheduler_stop(struct scheduler *s)
{
	s->stopping = true;
}

static int u32_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

uint64_t scheduler_ticks_fired(const struct scheduler *s)
{
	return s != NULL ? s->n_lag : 0;
}

json_t *scheduler_stats_json(const struct scheduler *s)
{
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

void scheduler_close(struct scheduler *s)
{
	if (s == NULL)
		return;
	s->closing = true;
	uv_close((uv_handle_t *)&s->timer, sched_closed_cb);
}
