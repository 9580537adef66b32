/* fuzz_fsm.h - what the state machine's two targets (fuzz_fsm_apply.c,
 * fuzz_fsm_restore.c) share: hooks that read what they are handed, the
 * round trip snapshot -> restore -> snapshot, and a walk through
 * everything the rest of the daemon reads of a state (its rows, its read
 * view, the schedule answers). */
#ifndef FLOWD_FUZZ_FUZZ_FSM_H
#define FLOWD_FUZZ_FUZZ_FSM_H

#include <inttypes.h>
#include <jansson.h>

#include "core/fsm.h"
#include "core/view.h"
#include "fuzz/fuzz.h"

/* The hooks read every field they are handed, as the daemon's do (the
 * executor, metrics, change streams): a status out of its enum or a
 * dangling pointer shows here. */
static void fz_placed(void *arg, struct fsm_run *r, struct fsm_step *s,
		      struct fsm_attempt *a)
{
	FUZZ_CHECK(s->run == r && s->index < r->spec->n_steps &&
			   a == &s->attempts[s->n_attempts - 1],
		   "placed attempt %u of %s", a->n, r->id);
	FUZZ_CHECK(a->status == FSM_ATTEMPT_RUNNING && a->n == s->n_attempts,
		   "placed attempt %u of %s", a->n, r->id);
}

static void fz_stop(void *arg, struct fsm_run *r, struct fsm_step *s,
		    struct fsm_attempt *a)
{
	FUZZ_CHECK(s->run == r && a >= s->attempts &&
			   a < s->attempts + s->n_attempts,
		   "stop of an attempt not of its step (%s)", r->id);
	(void)fsm_attempt_status_str(a->status);
}

static void fz_count(void *arg, const struct fsm_count *c)
{
	if (c->run != NULL)
		(void)fsm_run_status_str(c->run->status);
	if (c->step != NULL)
		(void)fsm_step_status_str(c->step->status);
	if (c->attempt != NULL)
		(void)fsm_attempt_status_str(c->attempt->status);
	if (c->kind == FSM_COUNT_TICK)
		(void)fsm_fire_outcome_str(c->outcome);
}

static void fz_changed(void *arg, const struct fsm_change *c)
{
	if (c->kind == FSM_CHANGE_RUN)
		(void)fsm_run_status_str((enum fsm_run_status)c->status);
	else if (c->kind == FSM_CHANGE_STEP)
		(void)fsm_step_status_str((enum fsm_step_status)c->status);
}

static void fz_sched_changed(void *arg, struct fsm_flow *fl)
{
	FUZZ_CHECK(fl->current <= fl->n_versions, "flow %s", fl->name);
}

static const struct fsm_hooks fz_hooks = {
	.attempt_placed = fz_placed,
	.attempt_stop = fz_stop,
	.schedules_changed = fz_sched_changed,
	.count = fz_count,
	.changed = fz_changed,
};

/* The rows since the last call: one JSON array text, as the applier takes
 * them. */
static void fz_take_records(struct fsm *f)
{
	uint64_t index = 0;
	char *text = fsm_take_records(f, &index);
	json_t *j;

	if (text == NULL)
		return;
	j = json_loads(text, 0, NULL);
	FUZZ_CHECK(json_is_array(j), "records are not a JSON array: %.200s",
		   text);
	json_decref(j);
	free(text);
}

static void fz_free_text(char *text)
{
	if (text != NULL) {
		json_t *j = json_loads(text, 0, NULL);

		FUZZ_CHECK(j != NULL, "view text is not JSON: %.200s", text);
		json_decref(j);
	}
	free(text);
}

/* Publish the read view of `f` and read every answer it gives, as the HTTP
 * threads do; then the schedule answers the leader's scheduler and
 * GET .../schedule compute from the state itself. */
static void fz_read_everything(struct fsm *f, int64_t now_s)
{
	static const struct view_cluster cl = {.node_id = 1,
					       .role = "leader"};
	struct view_store *vs = view_store_new();
	struct view_guard g;
	const struct view *v;
	enum view_found found;
	uint64_t before = 0;
	unsigned more = 0, missing = 0;

	FUZZ_CHECK(vs != NULL, "view_store_new");
	view_store_update(vs, f);
	view_store_publish(vs, &cl);
	v = view_acquire(vs, &g);
	fz_free_text(view_flows_text(v));
	fz_free_text(view_runs_page_text(v, NULL, -1, 20, 0, &before, &more));
	fz_free_text(view_cluster_text(v));
	for (size_t b = 0; b < f->flows.n_buckets; b++) {
		struct map_entry *e;

		for (e = f->flows.buckets[b]; e != NULL; e = e->next) {
			const char *name = e->key;

			fz_free_text(view_flow_text(v, name, true, &found));
			fz_free_text(view_flow_versions_text(v, name, &found,
							     &missing));
			fz_free_text(view_schedule_text(v, name, now_s, 3,
							&found));
			fz_free_text(view_runs_page_text(v, name,
							 FSM_RUN_RUNNING, 5, 0,
							 &before, &more));
		}
	}
	for (uint64_t seq = f->run_lo; seq <= f->n_runs; seq++) {
		struct fsm_run *r = fsm_run_at(f, seq);
		char *text = NULL;

		if (r != NULL && view_run_text(v, r->id, &text) == VIEW_FOUND)
			fz_free_text(text);
		else
			free(text);
	}
	view_release(&g);
	view_store_free(vs);
}

/* Snapshot `f`, restore it into a new state machine, snapshot that: the
 * same bytes. Returns the new state machine (caller closes and frees) and
 * the snapshot (*snap, caller frees). */
static struct fsm *fz_round_trip(struct fsm *f, char **snap, size_t *len)
{
	struct fsm *g = malloc(sizeof *g);
	char *again;
	size_t again_len;

	FUZZ_CHECK(g != NULL, "malloc");
	FUZZ_CHECK(fsm_snapshot(f, snap, len) == 0, "fsm_snapshot");
	fsm_init(g, &fz_hooks);
	FUZZ_CHECK(fsm_restore(g, *snap, *len) == 0,
		   "a snapshot does not restore: %.*s", (int)*len, *snap);
	FUZZ_CHECK(fsm_snapshot(g, &again, &again_len) == 0, "fsm_snapshot");
	FUZZ_CHECK(again_len == *len && memcmp(again, *snap, *len) == 0,
		   "restore changed the snapshot:\n%.*s\n%.*s", (int)*len,
		   *snap, (int)again_len, again);
	free(again);
	return g;
}

#endif
