/* trigger.c - triggers inside the state machine: schedule ticks, events,
 * on-finish chains, overlap policies, pause.
 *
 * DESIGN
 *
 * Exactly once. A schedule tick fires only through a `fire` item whose
 * `prev` equals the schedule's cursor (the last tick decided) and whose
 * `nominal` is later: applying it moves the cursor, so the same item
 * applied twice, a second leader's item for the same tick, or an item
 * computed from a stale view changes nothing (compare-and-set on the
 * cursor). An event fires once per id (the id is remembered for
 * event_dedupe_s; a duplicate is answered with the original result). An
 * on-finish trigger fires inside the apply that ends the upstream run, which
 * happens once per run. None of this reads a clock: the leader decides which
 * ticks are due, the state machine only accepts or refuses.
 *
 * Overlap. A flow has room while fewer than max_active_runs of its runs are
 * active (not settled: still running, or stopping after their end). Without
 * max_active_runs the limit is 1 for every policy but allow_all, which then
 * has none. A trigger without room is skipped, buffered (FIFO, bounded),
 * dropped, or ends the active runs (cancel_other waits in the buffer until
 * they have stopped; terminate_other starts at once).
 *
 * Order. Wherever several flows react to one thing (an event, a run's end)
 * they are walked in name order through sorted indexes, so every node
 * creates the same runs with the same ids.
 */
#include "fsm_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "map.h"

static const char *const outcome_names[] = {"fired", "skipped", "missed",
					    "buffered", "dropped"};
static const char *const reason_names[] = {
	NULL,
	"the flow is paused",
	"overlap policy",
	"its parameters do not resolve",
	"no leader in time, or outside the catch-up policy",
	"started from the overlap buffer",
	"the flow was undeployed",
};

const char *fsm_fire_outcome_str(enum fsm_fire_outcome o)
{
	return outcome_names[o];
}

static const struct flow_spec *current_spec(const struct fsm_flow *fl)
{
	return fl->current ? fl->versions[fl->current - 1].spec : NULL;
}

static json_t *iso_time(int64_t seconds)
{
	return fsm_time_json(seconds * 1000);
}

/* ------------------------------------------------------------------------
 * Fire records
 */

/* Record a decision: counters and the last few in memory, every one in
 * PostgreSQL (table fires) with the detailed reason. */
static void fire_record(struct apply_ctx *c, struct fsm_flow *fl, int sched,
			int64_t nominal, enum fsm_fire_outcome outcome,
			uint64_t count, const struct fsm_run *run,
			enum fsm_fire_reason why, const char *detail)
{
	struct fsm_schedule_state *st = &fl->sched[sched];
	struct fsm_fire *r = &st->last[st->head];
	const char *run_id = run ? run->id : NULL;
	const char *reason = detail ? detail : reason_names[why];
	struct fsm_text *b;

	fsm__flow_touch(c->f, fl);
	st->counts[outcome] += count;
	memset(r, 0, sizeof *r);
	r->nominal = nominal;
	r->at_ms = c->ts;
	r->outcome = (uint8_t)outcome;
	r->reason = (uint8_t)why;
	r->count = count > UINT32_MAX ? UINT32_MAX : (uint32_t)count;
	r->run_seq = run ? run->seq : 0;
	st->head = (st->head + 1) % FSM_FIRES_KEPT;
	if (st->n_last < FSM_FIRES_KEPT)
		st->n_last++;
	/* A restore could not rebuild this row: the next snapshot waits until
	 * PostgreSQL has it (as for task logs). */
	c->f->pending_history = true;
	b = &c->f->rows;
	ROWS_BEGIN(b, "{\"t\":\"fire\",\"flow\":");
	fsm__rows_str(b, fl->name);
	ROWS_LIT(b, ",\"schedule\":");
	fsm__rows_int(b, sched);
	ROWS_LIT(b, ",\"nominal\":");
	fsm__rows_int(b, nominal * 1000);
	ROWS_LIT(b, ",\"at\":");
	fsm__rows_int(b, c->ts);
	ROWS_LIT(b, ",\"outcome\":");
	fsm__rows_str(b, outcome_names[outcome]);
	ROWS_LIT(b, ",\"count\":");
	fsm__rows_int(b, (int64_t)count);
	ROWS_LIT(b, ",\"run_id\":");
	fsm__rows_str(b, run_id);
	ROWS_LIT(b, ",\"reason\":");
	fsm__rows_str(b, reason);
	ROWS_LIT(b, "}");
}

/* ------------------------------------------------------------------------
 * Overlap
 */

static unsigned room_limit(const struct flow_spec *spec, enum spec_overlap ov)
{
	if (spec->max_active_runs > 0)
		return spec->max_active_runs;
	return ov == SPEC_OVERLAP_ALLOW_ALL ? 0 : 1;
}

/* End every active run of the flow that has not ended yet. */
static void end_active_runs(struct apply_ctx *c, struct fsm_flow *fl,
			    const char *reason)
{
	struct fsm *f = c->f;
	unsigned seen = 0;

	for (uint64_t seq = f->n_runs; seq >= f->run_lo && seq > 0 &&
				       seen < fl->active;
	     seq--) {
		struct fsm_run *r = fsm_run_at(f, seq);

		if (r == NULL || r->flow != fl || r->settled)
			continue;
		seen++;
		if (!fsm__run_terminal(r))
			fsm__run_end(c, r, FSM_RUN_CANCELLED, reason);
	}
}

static void buffer_push(struct fsm_flow *fl, const json_t *params,
			json_t *trigger, const char *sched_key)
{
	struct fsm_buffered *b = calloc(1, sizeof *b);

	if (b == NULL || (sched_key && !(b->sched_key = strdup(sched_key))))
		abort();
	b->params = params ? json_deep_copy(params) : NULL;
	b->trigger = trigger;
	if (fl->buf_tail != NULL)
		fl->buf_tail->next = b;
	else
		fl->buf_head = b;
	fl->buf_tail = b;
	fl->n_buffered++;
}

static void buffered_free(struct fsm_buffered *b)
{
	free(b->sched_key);
	json_decref(b->params);
	json_decref(b->trigger);
	free(b);
}

/* The outcome of offering one trigger to a flow. */
struct launch {
	enum fsm_fire_outcome outcome;
	struct fsm_run *run;
	char reason[256];
};

/* Start a run for a trigger under the overlap policy `ov`. `params`
 * borrowed (as given, resolved at start), `trigger` stolen. A run whose
 * parameters do not resolve is dropped with the reason. */
static void launch(struct apply_ctx *c, struct fsm_flow *fl,
		   const json_t *params, json_t *trigger, enum spec_overlap ov,
		   int sched, unsigned max_buffered, struct launch *out)
{
	const struct flow_spec *spec = current_spec(fl);
	unsigned limit = room_limit(spec, ov);
	bool busy = limit > 0 && (fl->active >= limit || fl->n_buffered > 0);
	struct flowd_error err;

	memset(out, 0, sizeof *out);
	if (busy) {
		switch (ov) {
		case SPEC_OVERLAP_SKIP:
			out->outcome = FSM_FIRE_SKIPPED;
			snprintf(out->reason, sizeof out->reason,
				 "overlap skip: %u run(s) active", fl->active);
			json_decref(trigger);
			return;
		case SPEC_OVERLAP_BUFFER_ONE:
			if (fl->n_buffered >= 1)
				goto dropped;
			goto buffered;
		case SPEC_OVERLAP_ALLOW_ALL:
		case SPEC_OVERLAP_BUFFER_ALL:
			if (fl->n_buffered >= max_buffered)
				goto dropped;
			goto buffered;
		case SPEC_OVERLAP_CANCEL_OTHER:
			end_active_runs(c, fl, "cancelled: a newer run was "
					       "triggered (overlap cancel_other)");
			if (fl->active < limit)
				break; /* they have all stopped already */
			goto buffered;
		case SPEC_OVERLAP_TERMINATE_OTHER:
			end_active_runs(c, fl, "terminated: a newer run was "
					       "triggered (overlap "
					       "terminate_other)");
			break;
		}
	}
	out->run = fsm__run_start(c, fl, params, NULL, trigger, &err);
	if (out->run == NULL) {
		out->outcome = FSM_FIRE_DROPPED;
		snprintf(out->reason, sizeof out->reason, "%.64s: %.160s",
			 err.field, err.message);
		return;
	}
	out->outcome = FSM_FIRE_FIRED;
	return;
buffered:
	buffer_push(fl, params, trigger,
		    sched >= 0 ? fl->sched[sched].key : NULL);
	out->outcome = FSM_FIRE_BUFFERED;
	snprintf(out->reason, sizeof out->reason,
		 "overlap %s: waiting for room (%u active)",
		 spec_overlap_str(ov), fl->active);
	return;
dropped:
	out->outcome = FSM_FIRE_DROPPED;
	snprintf(out->reason, sizeof out->reason,
		 "overlap %s: the buffer is full (%u waiting)",
		 spec_overlap_str(ov), fl->n_buffered);
	json_decref(trigger);
}

void fsm__trig_settled(struct apply_ctx *c, struct fsm_run *r)
{
	struct fsm_flow *fl = r->flow;
	const struct flow_spec *spec = current_spec(fl);

	if (fl->active > 0)
		fl->active--;
	while (fl->buf_head != NULL) {
		struct fsm_buffered *b = fl->buf_head;
		struct flowd_error err;
		struct fsm_run *run = NULL;
		unsigned limit = spec ? (spec->max_active_runs ? spec->max_active_runs : 1) : 0;
		int sched = -1;

		if (spec != NULL && fl->active >= limit)
			break;
		fl->buf_head = b->next;
		if (fl->buf_head == NULL)
			fl->buf_tail = NULL;
		fl->n_buffered--;
		if (spec != NULL)
			run = fsm__run_start(c, fl, b->params, NULL,
					     json_incref(b->trigger), &err);
		for (unsigned k = 0; b->sched_key != NULL && k < fl->n_sched; k++)
			if (strcmp(fl->sched[k].key, b->sched_key) == 0) {
				sched = (int)k;
				break;
			}
		if (sched >= 0) {
			json_t *nom = json_object_get(b->trigger, "nominal");
			int64_t nominal = json_integer_value(nom);

			fire_record(c, fl, sched, nominal,
				    run ? FSM_FIRE_FIRED : FSM_FIRE_DROPPED, 1,
				    run,
				    run ? FSM_WHY_FROM_BUFFER
					: spec ? FSM_WHY_PARAMS : FSM_WHY_UNDEPLOYED,
				    NULL);
		}
		buffered_free(b);
	}
}

/* ------------------------------------------------------------------------
 * Schedules
 */

static void sched_state_free(struct fsm_schedule_state *st)
{
	free(st->key);
}

void fsm__trig_deployed(struct apply_ctx *c, struct fsm_flow *fl,
			const struct flow_spec *old, bool was_current)
{
	struct fsm *f = c->f;
	const struct flow_spec *spec = current_spec(fl);
	struct fsm_schedule_state *next;
	bool *taken;
	int64_t now = c->ts / 1000;

	next = calloc(spec->n_schedules + 1, sizeof *next);
	taken = calloc(fl->n_sched + 1, sizeof *taken);
	if (next == NULL || taken == NULL)
		abort();
	for (size_t i = 0; i < spec->n_schedules; i++) {
		const char *key = spec->schedules[i].key;
		unsigned k;

		for (k = 0; k < fl->n_sched; k++)
			if (!taken[k] && strcmp(fl->sched[k].key, key) == 0)
				break;
		if (k < fl->n_sched) {
			/* The same schedule: it keeps its cursor and story. */
			taken[k] = true;
			next[i] = fl->sched[k];
			fl->sched[k].key = NULL;
			if (!was_current && next[i].cursor < now)
				next[i].cursor = now; /* nothing from the gap */
		} else {
			next[i].key = strdup(key);
			if (next[i].key == NULL)
				abort();
			next[i].cursor = now; /* ticks from now on */
		}
	}
	for (unsigned k = 0; k < fl->n_sched; k++)
		sched_state_free(&fl->sched[k]);
	free(fl->sched);
	free(taken);
	fl->sched = next;
	fl->n_sched = (unsigned)spec->n_schedules;
	/* All-of collections stay with triggers whose definition is the same
	 * (a redeploy that changes a step keeps what was collected). */
	{
		json_t *collect = json_array();
		bool *used = calloc((old ? old->n_events : 0) + 1, sizeof *used);

		if (collect == NULL || used == NULL)
			abort();
		for (size_t i = 0; i < spec->n_events; i++) {
			json_t *kept = NULL;

			for (size_t j = 0; old != NULL && j < old->n_events; j++)
				if (!used[j] && strcmp(old->events[j].key,
						       spec->events[i].key) == 0 &&
				    json_array_get(fl->collect, j) != NULL) {
					used[j] = true;
					kept = json_array_get(fl->collect, j);
					break;
				}
			json_array_append_new(collect, kept ? json_incref(kept)
							    : json_object());
		}
		free(used);
		json_decref(fl->collect);
		fl->collect = collect;
	}
	if (spec->n_events > 0 || spec->n_on_finish > 0 ||
	    (old != NULL && (old->n_events > 0 || old->n_on_finish > 0)))
		f->trigger_index_stale = true;
	if (f->hooks.schedules_changed != NULL)
		f->hooks.schedules_changed(f->hooks.arg, fl);
}

void fsm__trig_undeployed(struct apply_ctx *c, struct fsm_flow *fl)
{
	struct fsm *f = c->f;

	f->trigger_index_stale = true;
	if (f->hooks.schedules_changed != NULL)
		f->hooks.schedules_changed(f->hooks.arg, fl);
}

void fsm_backfill_key(const char *sched_key, int64_t nominal, char out[64])
{
	uint64_t h = map_fnv1a(sched_key, MAP_FNV_SEED);

	snprintf(out, 64, "backfill:%016" PRIx64 ":%" PRId64, h, nominal);
}

/* One item of a fire command. */
static void fire_item(struct apply_ctx *c, json_t *it, unsigned max_buffered)
{
	struct fsm *f = c->f;
	const char *name = json_string_value(json_object_get(it, "flow"));
	const char *key = json_string_value(json_object_get(it, "key"));
	json_int_t i = json_integer_value(json_object_get(it, "schedule"));
	int64_t prev = json_integer_value(json_object_get(it, "prev"));
	int64_t nominal = json_integer_value(json_object_get(it, "nominal"));
	uint64_t missed = (uint64_t)json_integer_value(json_object_get(it, "missed"));
	bool fire = !json_is_false(json_object_get(it, "fire"));
	bool backfill = json_is_true(json_object_get(it, "backfill"));
	struct fsm_flow *fl = name ? map_get(&f->flows, name) : NULL;
	const struct spec_schedule *sc;
	struct fsm_schedule_state *st;
	struct launch l;
	json_t *trigger;

	if (fl == NULL || fl->current == 0 || i < 0 ||
	    (size_t)i >= fl->n_sched || key == NULL ||
	    strcmp(fl->sched[i].key, key) != 0)
		return; /* the schedule changed meanwhile */
	st = &fl->sched[i];
	sc = &current_spec(fl)->schedules[i];
	if (backfill) {
		char ikey[64];
		struct flowd_error err;
		struct fsm_run *r;

		fsm_backfill_key(key, nominal, ikey);
		fsm__idem_expire(c);
		if (fsm_idem_lookup(f, fl->name, ikey, &r) != NULL)
			return; /* this tick was backfilled before */
		trigger = json_pack("{s:s, s:i, s:o, s:I}", "type", "backfill",
				    "schedule", (int)i, "nominal_time",
				    iso_time(nominal), "nominal",
				    (json_int_t)nominal);
		r = fsm__run_start(c, fl, sc->parameters, ikey, trigger, &err);
		if (r == NULL)
			log_info("trigger: backfill of %s tick %" PRId64 ": %s",
				 fl->name, nominal, err.message);
		return;
	}
	if (prev != st->cursor || nominal <= st->cursor)
		return; /* decided already: exactly once */
	st->cursor = nominal;
	fsm__flow_touch(f, fl);
	if (missed > 0)
		fire_record(c, fl, (int)i, nominal, FSM_FIRE_MISSED, missed, NULL,
			    FSM_WHY_LATE, NULL);
	if (fire) {
		if (fl->paused) {
			fire_record(c, fl, (int)i, nominal, FSM_FIRE_SKIPPED, 1,
				    NULL, FSM_WHY_PAUSED, NULL);
		} else {
			trigger = json_pack("{s:s, s:i, s:o, s:I}", "type",
					    "schedule", "schedule", (int)i,
					    "nominal_time", iso_time(nominal),
					    "nominal", (json_int_t)nominal);
			launch(c, fl, sc->parameters, trigger, sc->overlap,
			       (int)i, max_buffered, &l);
			fire_record(c, fl, (int)i, nominal, l.outcome, 1, l.run,
				    l.outcome == FSM_FIRE_FIRED ? FSM_WHY_NONE
				    : l.run == NULL && l.reason[0] &&
						    l.outcome == FSM_FIRE_DROPPED &&
						    strncmp(l.reason, "overlap", 7) != 0
					    ? FSM_WHY_PARAMS
					    : FSM_WHY_OVERLAP,
				    l.reason[0] ? l.reason : NULL);
		}
	}
	if (f->hooks.schedules_changed != NULL)
		f->hooks.schedules_changed(f->hooks.arg, fl);
}

void fsm__apply_fire(struct apply_ctx *c, json_t *cmd)
{
	json_t *items = json_object_get(cmd, "items"), *it;
	unsigned max_buffered =
		(unsigned)json_integer_value(json_object_get(cmd, "max_buffered"));
	size_t i;

	json_array_foreach(items, i, it)
		fire_item(c, it, max_buffered);
	c->f->result.status = 200;
}

void fsm__apply_pause(struct apply_ctx *c, json_t *cmd)
{
	struct fsm *f = c->f;
	const char *name = json_string_value(json_object_get(cmd, "flow"));
	struct fsm_flow *fl = name ? map_get(&f->flows, name) : NULL;

	if (fl == NULL || fl->current == 0) {
		fsm__result_error(f, 404, "not_found", "flow", "no such flow");
		return;
	}
	fl->paused = json_is_true(json_object_get(cmd, "paused"));
	fl->updated_ms = c->ts;
	fsm__flow_touch(f, fl);
	f->result.status = 200;
	f->result.flow = fl;
	f->result.body = json_pack("{s:s, s:b}", "flow", fl->name, "paused",
				   fl->paused);
	json_array_append_new(c->records, fsm__paused_record(fl));
	if (f->hooks.schedules_changed != NULL)
		f->hooks.schedules_changed(f->hooks.arg, fl);
}

json_t *fsm__paused_record(const struct fsm_flow *fl)
{
	return json_pack("{s:s, s:s, s:b}", "t", "flow_paused", "flow",
			 fl->name, "paused", fl->paused);
}

json_t *fsm_schedule_state_json(unsigned i, const struct spec_schedule *sc,
				const struct fsm_schedule_state *st)
{
	json_t *last = json_array(), *counts = json_object();

	for (unsigned k = 0; k < st->n_last; k++) {
		unsigned at = (st->head + FSM_FIRES_KEPT - 1 - k) % FSM_FIRES_KEPT;
		const struct fsm_fire *r = &st->last[at];
		char id[32];

		snprintf(id, sizeof id, "r-%012" PRIu64, r->run_seq);
		json_array_append_new(
			last,
			json_pack("{s:o, s:o, s:s, s:I, s:o, s:o}",
				  "nominal_time", iso_time(r->nominal),
				  "decided_at", fsm_time_json(r->at_ms),
				  "outcome", outcome_names[r->outcome], "count",
				  (json_int_t)r->count, "run_id",
				  r->run_seq ? json_string(id) : json_null(),
				  "reason",
				  reason_names[r->reason]
					  ? json_string(reason_names[r->reason])
					  : json_null()));
	}
	for (int o = 0; o < FSM_FIRE_OUTCOMES; o++)
		json_object_set_new(counts, outcome_names[o],
				    json_integer((json_int_t)st->counts[o]));
	return json_pack("{s:i, s:s, s:s, s:o, s:o, s:o}", "schedule", (int)i,
			 "cron", sc->expr, "timezone", sc->timezone, "cursor",
			 iso_time(st->cursor), "counters", counts, "last_fires",
			 last);
}

/* ------------------------------------------------------------------------
 * Indexes of event and on-finish triggers
 */

static int entry_cmp(const void *a, const void *b)
{
	json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
	int r = strcmp(json_string_value(json_array_get(x, 0)),
		       json_string_value(json_array_get(y, 0)));

	if (r != 0)
		return r;
	return (int)(json_integer_value(json_array_get(x, 1)) -
		     json_integer_value(json_array_get(y, 1)));
}

static void index_add(json_t *index, const char *key, const char *flow,
		      size_t i)
{
	json_t *list = json_object_get(index, key);

	if (list == NULL) {
		list = json_array();
		json_object_set_new(index, key, list);
	}
	json_array_append_new(list, json_pack("[s, i]", flow, (int)i));
}

static void index_sort(json_t *index)
{
	const char *key;
	json_t *list;

	json_object_foreach(index, key, list) {
		size_t n = json_array_size(list), i;
		json_t **items = malloc((n + 1) * sizeof *items);
		json_t *sorted = json_array();

		if (items == NULL)
			abort();
		for (i = 0; i < n; i++)
			items[i] = json_array_get(list, i);
		qsort(items, n, sizeof *items, entry_cmp);
		for (i = 0; i < n; i++)
			json_array_append(sorted, items[i]);
		free(items);
		json_object_set_new(index, key, sorted);
	}
}

static void index_rebuild(struct fsm *f)
{
	if (!f->trigger_index_stale && f->by_event != NULL)
		return;
	json_decref(f->by_event);
	json_decref(f->by_upstream);
	f->by_event = json_object();
	f->by_upstream = json_object();
	for (size_t b = 0; b < f->flows.n_buckets; b++) {
		for (struct map_entry *e = f->flows.buckets[b]; e; e = e->next) {
			struct fsm_flow *fl = e->value;
			const struct flow_spec *spec = current_spec(fl);

			if (spec == NULL)
				continue;
			for (size_t i = 0; i < spec->n_events; i++)
				for (size_t k = 0; k < spec->events[i].n_events; k++)
					index_add(f->by_event,
						  spec->events[i].events[k].name,
						  fl->name, i);
			for (size_t i = 0; i < spec->n_on_finish; i++)
				index_add(f->by_upstream, spec->on_finish[i].flow,
					  fl->name, i);
		}
	}
	index_sort(f->by_event);
	index_sort(f->by_upstream);
	f->trigger_index_stale = false;
}

/* ------------------------------------------------------------------------
 * On finish
 */

void fsm__trig_ended(struct apply_ctx *c, struct fsm_run *r)
{
	struct fsm *f = c->f;
	json_t *list, *entry;
	size_t n;

	index_rebuild(f);
	list = json_object_get(f->by_upstream, r->flow->name);
	json_array_foreach(list, n, entry) {
		struct fsm_flow *fl = map_get(
			&f->flows, json_string_value(json_array_get(entry, 0)));
		size_t i = (size_t)json_integer_value(json_array_get(entry, 1));
		const struct flow_spec *spec = fl ? current_spec(fl) : NULL;
		const struct spec_on_finish *t;
		json_t *params, *trigger;
		struct launch l;
		bool match;

		if (spec == NULL || i >= spec->n_on_finish)
			continue;
		t = &spec->on_finish[i];
		match = t->status == SPEC_FINISH_ANY ||
			(t->status == SPEC_FINISH_SUCCEEDED) ==
				(r->status == FSM_RUN_SUCCEEDED);
		if (!match)
			continue;
		params = json_object();
		for (size_t p = 0; p < spec->n_params; p++)
			if (strcmp(spec->params[p].name, "upstream_run_id") == 0 &&
			    spec->params[p].type == SPEC_PARAM_STRING)
				json_object_set_new(params, "upstream_run_id",
						    json_string(r->id));
		trigger = json_pack("{s:s, s:i, s:s, s:s, s:s}", "type",
				    "on_finish", "trigger", (int)i,
				    "upstream_flow", r->flow->name,
				    "upstream_run", r->id, "upstream_status",
				    fsm_run_status_str(r->status));
		launch(c, fl, params, trigger, t->overlap, -1,
		       c->f->limits.max_buffered_runs, &l);
		if (l.outcome != FSM_FIRE_FIRED)
			log_info("trigger: on_finish of %s for run %s: %s (%s)",
				 fl->name, r->id, outcome_names[l.outcome],
				 l.reason);
		json_decref(params);
	}
}

/* ------------------------------------------------------------------------
 * Events
 */

static bool filter_matches(const json_t *filter, json_t *root)
{
	const char *key;
	json_t *want;

	json_object_foreach((json_t *)filter, key, want) {
		char path[512];
		json_t *got;

		snprintf(path, sizeof path, "payload.%s", key);
		got = spec_path_get(root, path);
		if (got == NULL || !json_equal(got, want))
			return false;
	}
	return true;
}

/* The parameters an event trigger gives its run (new reference). `root` is
 * {"payload": p} for one event, {"<name>": {"payload": p}, ...} for all. */
static json_t *event_params(const struct flow_spec *spec,
			    const struct spec_event_trigger *t, json_t *root)
{
	json_t *given = json_object(), *v;
	const char *key, *path;
	json_t *jpath;

	if (t->parameters == NULL) {
		json_t *payload = json_object_get(root, "payload");

		for (size_t p = 0; p < spec->n_params; p++) {
			v = json_object_get(payload, spec->params[p].name);
			if (v != NULL && !json_is_null(v))
				json_object_set(given, spec->params[p].name, v);
		}
		return given;
	}
	json_object_foreach(t->parameters, key, jpath) {
		path = json_string_value(jpath);
		v = spec_path_get(root, path);
		if (v != NULL && !json_is_null(v))
			json_object_set(given, key, v);
	}
	return given;
}

/* Drop collected events that are too old or before a reset tick. */
static void collect_prune(json_t *col, const struct spec_event_trigger *t,
			  int64_t now_ms)
{
	const char *key;
	json_t *e, *tmp;

	json_object_foreach_safe(col, tmp, key, e) {
		int64_t ts = json_integer_value(json_object_get(e, "ts"));
		int64_t reset;
		bool old = ts < now_ms - (int64_t)t->window_s * 1000;

		if (!old && t->reset != NULL &&
		    cron_next(&t->reset_cron, t->reset_tz, CRON_DST_SHIFT,
			      CRON_DST_ONCE, ts / 1000, &reset) &&
		    reset <= now_ms / 1000)
			old = true;
		if (old)
			json_object_del(col, key);
	}
}

static void event_remember(struct fsm *f, const char *id, int64_t ts,
			   json_t *result)
{
	struct fsm_event *ev = calloc(1, sizeof *ev);

	if (ev == NULL || (ev->id = strdup(id)) == NULL)
		abort();
	ev->ts = ts;
	ev->result = json_incref(result);
	if (map_put(&f->events, ev->id, ev) != 0)
		abort();
	if (f->events_tail != NULL)
		f->events_tail->next = ev;
	else
		f->events_head = ev;
	f->events_tail = ev;
	f->n_events++;
}

static void event_forget_old(struct fsm *f, int64_t now_ms, int64_t keep_ms,
			     size_t keep)
{
	while (f->events_head != NULL &&
	       (f->events_head->ts < now_ms - keep_ms || f->n_events > keep)) {
		struct fsm_event *ev = f->events_head;

		f->events_head = ev->next;
		if (f->events_head == NULL)
			f->events_tail = NULL;
		f->n_events--;
		map_del(&f->events, ev->id);
		free(ev->id);
		json_decref(ev->result);
		free(ev);
	}
}

static json_t *result_item(const char *flow, size_t trigger,
			   const struct launch *l)
{
	return json_pack("{s:s, s:i, s:s, s:o, s:o}", "flow", flow, "trigger",
			 (int)trigger, "outcome", outcome_names[l->outcome],
			 "run_id", l->run ? json_string(l->run->id) : json_null(),
			 "reason", l->reason[0] ? json_string(l->reason) : json_null());
}

void fsm__apply_event(struct apply_ctx *c, json_t *cmd)
{
	struct fsm *f = c->f;
	const char *name = json_string_value(json_object_get(cmd, "name"));
	const char *id = json_string_value(json_object_get(cmd, "id"));
	json_t *payload = json_object_get(cmd, "payload");
	unsigned dedupe_s = (unsigned)json_integer_value(json_object_get(cmd, "dedupe_s"));
	size_t keep = (size_t)json_integer_value(json_object_get(cmd, "keep"));
	unsigned max_buffered =
		(unsigned)json_integer_value(json_object_get(cmd, "max_buffered"));
	struct fsm_event *seen;
	json_t *runs, *root, *list, *entry, *result;
	size_t n;

	if (name == NULL || id == NULL) {
		fsm__result_error(f, 400, "invalid_command", "", "bad event");
		return;
	}
	event_forget_old(f, c->ts, (int64_t)dedupe_s * 1000, keep ? keep : 1);
	seen = map_get(&f->events, id);
	if (seen != NULL) {
		f->result.status = 200;
		f->result.body = json_deep_copy(seen->result);
		json_object_set_new(f->result.body, "duplicate", json_true());
		return;
	}
	if (payload == NULL || json_is_null(payload))
		payload = json_object();
	else
		json_incref(payload);
	runs = json_array();
	root = json_pack("{s:O}", "payload", payload);
	index_rebuild(f);
	list = json_object_get(f->by_event, name);
	json_array_foreach(list, n, entry) {
		struct fsm_flow *fl = map_get(
			&f->flows, json_string_value(json_array_get(entry, 0)));
		size_t i = (size_t)json_integer_value(json_array_get(entry, 1));
		const struct flow_spec *spec = fl ? current_spec(fl) : NULL;
		const struct spec_event_trigger *t;
		struct launch l;
		json_t *params, *trigger, *col, *all_root;
		size_t k;

		if (spec == NULL || i >= spec->n_events)
			continue;
		t = &spec->events[i];
		for (k = 0; k < t->n_events; k++)
			if (strcmp(t->events[k].name, name) == 0 &&
			    filter_matches(t->events[k].filter, root))
				break;
		if (k == t->n_events)
			continue;
		if (t->n_events == 1) {
			params = event_params(spec, t, root);
			trigger = json_pack("{s:s, s:i, s:[s], s:[s]}", "type",
					    "event", "trigger", (int)i,
					    "event_ids", id, "events", name);
		} else {
			col = json_array_get(fl->collect, i);
			collect_prune(col, t, c->ts);
			json_object_set_new(col, name,
					    json_pack("{s:s, s:O, s:I}", "id", id,
						      "payload", payload, "ts",
						      (json_int_t)c->ts));
			if (json_object_size(col) < t->n_events) {
				json_t *waiting = json_array();

				for (k = 0; k < t->n_events; k++)
					if (json_object_get(col, t->events[k].name) == NULL)
						json_array_append_new(
							waiting,
							json_string(t->events[k].name));
				json_array_append_new(
					runs, json_pack("{s:s, s:i, s:s, s:o}",
							"flow", fl->name, "trigger",
							(int)i, "outcome",
							"collected", "waiting_for",
							waiting));
				continue;
			}
			all_root = json_object();
			trigger = json_pack("{s:s, s:i, s:[], s:[]}", "type",
					    "event", "trigger", (int)i,
					    "event_ids", "events");
			for (k = 0; k < t->n_events; k++) {
				json_t *e = json_object_get(col, t->events[k].name);

				json_object_set_new(
					all_root, t->events[k].name,
					json_pack("{s:O}", "payload",
						  json_object_get(e, "payload")));
				json_array_append(json_object_get(trigger, "event_ids"),
						  json_object_get(e, "id"));
				json_array_append_new(
					json_object_get(trigger, "events"),
					json_string(t->events[k].name));
			}
			params = event_params(spec, t, all_root);
			json_decref(all_root);
			json_object_clear(col);
		}
		launch(c, fl, params, trigger, t->overlap, -1, max_buffered, &l);
		json_array_append_new(runs, result_item(fl->name, i, &l));
		json_decref(params);
	}
	result = json_pack("{s:s, s:s, s:o}", "id", id, "name", name, "runs",
			   runs);
	event_remember(f, id, c->ts, result);
	json_array_append_new(
		c->records,
		json_pack("{s:s, s:s, s:s, s:O, s:I, s:O}", "t", "event", "id",
			  id, "name", name, "payload", payload, "received_at",
			  (json_int_t)c->ts, "runs", runs));
	f->pending_history = true; /* the events row: see fire_record */
	f->result.status = 201;
	f->result.body = json_deep_copy(result);
	json_object_set_new(f->result.body, "duplicate", json_false());
	json_decref(result);
	json_decref(root);
	json_decref(payload);
}

/* ------------------------------------------------------------------------
 * Snapshot and restore
 */

json_t *fsm__trig_snap_flow(const struct fsm_flow *fl)
{
	json_t *sched = json_array(), *buf = json_array();

	for (unsigned i = 0; i < fl->n_sched; i++) {
		const struct fsm_schedule_state *st = &fl->sched[i];
		json_t *counts = json_array(), *last = json_array();

		for (int o = 0; o < FSM_FIRE_OUTCOMES; o++)
			json_array_append_new(counts,
					      json_integer((json_int_t)st->counts[o]));
		for (unsigned k = 0; k < st->n_last; k++) {
			/* oldest first */
			unsigned at = (st->head + FSM_FIRES_KEPT - st->n_last + k) %
				      FSM_FIRES_KEPT;
			const struct fsm_fire *r = &st->last[at];

			json_array_append_new(
				last, json_pack("[I, I, i, I, I, i]",
						(json_int_t)r->nominal,
						(json_int_t)r->at_ms,
						(int)r->outcome,
						(json_int_t)r->count,
						(json_int_t)r->run_seq,
						(int)r->reason));
		}
		json_array_append_new(
			sched, json_pack("{s:s, s:I, s:o, s:o}", "key", st->key,
					 "cursor", (json_int_t)st->cursor,
					 "counts", counts, "last", last));
	}
	for (const struct fsm_buffered *b = fl->buf_head; b; b = b->next)
		json_array_append_new(
			buf, json_pack("{s:O?, s:O, s:s?}", "params", b->params,
				       "trigger", b->trigger, "sched_key",
				       b->sched_key));
	return json_pack("{s:b, s:o, s:O?, s:o}", "paused", fl->paused,
			 "sched", sched, "collect", fl->collect, "buf", buf);
}

int fsm__trig_restore_flow(struct fsm *f, struct fsm_flow *fl, json_t *j)
{
	json_t *sched = json_object_get(j, "sched"), *js, *jb;
	size_t i, k;

	if (j == NULL)
		return 0; /* a snapshot from before triggers */
	fl->paused = json_is_true(json_object_get(j, "paused"));
	fl->sched = calloc(json_array_size(sched) + 1, sizeof *fl->sched);
	if (fl->sched == NULL)
		return -1;
	json_array_foreach(sched, i, js) {
		struct fsm_schedule_state *st = &fl->sched[i];
		json_t *counts = json_object_get(js, "counts");
		json_t *last = json_object_get(js, "last"), *jr;
		const char *key = json_string_value(json_object_get(js, "key"));

		if (key == NULL || (st->key = strdup(key)) == NULL)
			return -1;
		fl->n_sched = (unsigned)i + 1;
		st->cursor = json_integer_value(json_object_get(js, "cursor"));
		for (int o = 0; o < FSM_FIRE_OUTCOMES; o++)
			st->counts[o] = (uint64_t)json_integer_value(
				json_array_get(counts, (size_t)o));
		json_array_foreach(last, k, jr) {
			struct fsm_fire *r = &st->last[st->head];
			int o = (int)json_integer_value(json_array_get(jr, 2));
			int why = (int)json_integer_value(json_array_get(jr, 5));

			if (o < 0 || o >= FSM_FIRE_OUTCOMES || k >= FSM_FIRES_KEPT ||
			    why < 0 || why > FSM_WHY_UNDEPLOYED)
				return -1;
			r->nominal = json_integer_value(json_array_get(jr, 0));
			r->at_ms = json_integer_value(json_array_get(jr, 1));
			r->outcome = (uint8_t)o;
			r->count = (uint32_t)json_integer_value(json_array_get(jr, 3));
			r->run_seq = (uint64_t)json_integer_value(json_array_get(jr, 4));
			r->reason = (uint8_t)why;
			st->head = (st->head + 1) % FSM_FIRES_KEPT;
			st->n_last++;
		}
	}
	if (json_is_array(json_object_get(j, "collect")))
		fl->collect = json_deep_copy(json_object_get(j, "collect"));
	json_array_foreach(json_object_get(j, "buf"), i, jb) {
		json_t *params = json_object_get(jb, "params");

		buffer_push(fl, json_is_null(params) ? NULL : params,
			    json_incref(json_object_get(jb, "trigger")),
			    json_string_value(json_object_get(jb, "sched_key")));
	}
	f->trigger_index_stale = true;
	return 0;
}

void fsm__trig_clear_flow(struct fsm_flow *fl)
{
	for (unsigned i = 0; i < fl->n_sched; i++)
		sched_state_free(&fl->sched[i]);
	free(fl->sched);
	fl->sched = NULL;
	fl->n_sched = 0;
	json_decref(fl->collect);
	fl->collect = NULL;
	while (fl->buf_head != NULL) {
		struct fsm_buffered *b = fl->buf_head;

		fl->buf_head = b->next;
		buffered_free(b);
	}
	fl->buf_tail = NULL;
	fl->n_buffered = 0;
}

json_t *fsm__events_snap(const struct fsm *f)
{
	json_t *arr = json_array();

	for (const struct fsm_event *ev = f->events_head; ev; ev = ev->next)
		json_array_append_new(arr, json_pack("[s, I, O]", ev->id,
						     (json_int_t)ev->ts,
						     ev->result));
	return arr;
}

int fsm__events_restore(struct fsm *f, json_t *j)
{
	json_t *e;
	size_t i;

	json_array_foreach(j, i, e) {
		const char *id = json_string_value(json_array_get(e, 0));

		if (id == NULL || map_get(&f->events, id) != NULL)
			return -1;
		event_remember(f, id, json_integer_value(json_array_get(e, 1)),
			       json_array_get(e, 2));
	}
	return 0;
}

void fsm__events_clear(struct fsm *f)
{
	event_forget_old(f, INT64_MAX, 0, 0);
	map_close(&f->events);
	json_decref(f->by_event);
	json_decref(f->by_upstream);
	f->by_event = f->by_upstream = NULL;
	f->trigger_index_stale = true;
}
