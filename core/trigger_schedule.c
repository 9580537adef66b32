/* trigger_schedule.c - schedules inside the state machine: the cursor that
 * lets each tick fire once, the decisions about ticks (fired, skipped,
 * missed, buffered, dropped), pause, backfill.
 *
 * DESIGN
 *
 * Exactly once. A schedule tick fires only through a `fire` item whose
 * `prev` equals the schedule's cursor (the last tick decided) and whose
 * `nominal` is later: applying it moves the cursor, so the same item
 * applied twice, a second leader's item for the same tick, or an item
 * computed from a stale view changes nothing (compare-and-set on the
 * cursor). A backfill tick has no cursor: its idempotency key (the
 * schedule's identity and the tick) makes it start once. None of this
 * reads a clock: the leader decides which ticks are due
 * (core/schedule.c, daemon/scheduler.c), the state machine only accepts or
 * refuses.
 *
 * A schedule's identity is its key (expression, zone, DST options), not its
 * index: a redeploy keeps the cursor and counters of every schedule whose
 * key is unchanged, and starts the others at the deploy's time.
 *
 * Records. Every decision is counted, the last FSM_FIRES_KEPT are kept in
 * memory (GET /v1/flows/{flow}/schedule), and every one is written to
 * PostgreSQL (table fires) with the detailed reason; a restore could not
 * rebuild that row, so the next snapshot waits until PostgreSQL has it.
 *
 * Thread: the loop thread only (fsm_schedule_state_json and
 * fsm_backfill_key: any thread).
 */
#include "trigger_schedule.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsm_rows.h"
#include "fsm_runs.h"
#include "log.h"
#include "map.h"
#include "trigger_launch.h"

static const char *const reason_names[] = {
	NULL,
	"the flow is paused",
	"overlap policy",
	"its parameters do not resolve",
	"no leader in time, or outside the catch-up policy",
	"started from the overlap buffer",
	"the flow was undeployed",
};

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
	fsm__count(c, &(struct fsm_count){.kind = FSM_COUNT_TICK,
					  .flow = fl, .schedule = sched,
					  .outcome = outcome, .n = count,
					  .nominal_s = nominal, .run = run});
	fsm__rows_fire(c->f, fl, sched, nominal, c->ts, outcome, count, run_id,
		       reason);
}

void fsm__sched_unbuffered(struct apply_ctx *c, struct fsm_flow *fl,
			   const struct fsm_buffered *b,
			   const struct fsm_run *run)
{
	const struct flow_spec *spec = fsm__current_spec(fl);
	int sched = -1;

	for (unsigned k = 0; b->sched_key != NULL && k < fl->n_sched; k++)
		if (strcmp(fl->sched[k].key, b->sched_key) == 0) {
			sched = (int)k;
			break;
		}
	if (sched >= 0) {
		json_t *nom = json_object_get(b->trigger, "nominal");
		int64_t nominal = json_integer_value(nom);

		fire_record(c, fl, sched, nominal,
			    run ? FSM_FIRE_FIRED : FSM_FIRE_DROPPED, 1, run,
			    run ? FSM_WHY_FROM_BUFFER
				: spec ? FSM_WHY_PARAMS : FSM_WHY_UNDEPLOYED,
			    NULL);
	}
}

/* ------------------------------------------------------------------------
 * Schedule states
 */

static void sched_state_free(struct fsm_schedule_state *st)
{
	free(st->key);
}

void fsm__sched_deployed(struct apply_ctx *c, struct fsm_flow *fl,
			 bool was_current)
{
	const struct flow_spec *spec = fsm__current_spec(fl);
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
}

void fsm__sched_clear(struct fsm_flow *fl)
{
	for (unsigned i = 0; i < fl->n_sched; i++)
		sched_state_free(&fl->sched[i]);
	free(fl->sched);
	fl->sched = NULL;
	fl->n_sched = 0;
}

/* ------------------------------------------------------------------------
 * Commands
 */

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
	struct fsm_launch l;
	json_t *trigger;

	if (fl == NULL || fl->current == 0 || i < 0 ||
	    (size_t)i >= fl->n_sched || key == NULL ||
	    strcmp(fl->sched[i].key, key) != 0)
		return; /* the schedule changed meanwhile */
	st = &fl->sched[i];
	sc = &fsm__current_spec(fl)->schedules[i];
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
			fsm__launch(c, fl, sc->parameters, trigger, sc->overlap,
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

	json_array_foreach(items, i, it) fire_item(c, it, max_buffered);
}

void fsm__apply_pause(struct apply_ctx *c, json_t *cmd)
{
	struct fsm *f = c->f;
	const char *name = json_string_value(json_object_get(cmd, "flow"));
	struct fsm_flow *fl = name ? map_get(&f->flows, name) : NULL;

	if (fl == NULL || fl->current == 0) {
		fsm__result_error(f, FLOWD_E_NOT_FOUND, "not_found", "flow",
				  "no such flow");
		return;
	}
	fl->paused = json_is_true(json_object_get(cmd, "paused"));
	fl->updated_ms = c->ts;
	fsm__flow_touch(f, fl);
	f->result.flow = fl;
	struct spec_flow_key k;

	spec_flow_key_split(fl->name, &k);
	f->result.body = json_pack("{s:s, s:b}", "flow", k.flow, "paused",
				   fl->paused);
	json_array_append_new(c->records, fsm__record_paused(fl));
	if (f->hooks.schedules_changed != NULL)
		f->hooks.schedules_changed(f->hooks.arg, fl);
}

/* ------------------------------------------------------------------------
 * The schedule's view
 */

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
				  "outcome", fsm_fire_outcome_str(r->outcome),
				  "count", (json_int_t)r->count, "run_id",
				  r->run_seq ? json_string(id) : json_null(),
				  "reason",
				  reason_names[r->reason]
					  ? json_string(reason_names[r->reason])
					  : json_null()));
	}
	for (int o = 0; o < FSM_FIRE_OUTCOMES; o++)
		json_object_set_new(counts, fsm_fire_outcome_str(o),
				    json_integer((json_int_t)st->counts[o]));
	return json_pack("{s:i, s:s, s:s, s:o, s:o, s:o}", "schedule", (int)i,
			 "cron", sc->expr, "timezone", sc->timezone, "cursor",
			 iso_time(st->cursor), "counters", counts, "last_fires",
			 last);
}
