/* fuzz_fsm_restore.c - restoring a snapshot (core/fsm_snapshot.c) from
 * bytes nobody vouches for: a corrupt file in the Raft data directory, or a
 * snapshot installed from a peer.
 *
 * Input: the snapshot bytes. Seeds are real snapshots (the states the
 * fuzz_fsm_apply seeds end in) and snapshots in earlier formats.
 *
 * Restore must refuse a bad snapshot with -1 and leave the state as it was
 * (checked: restored over a small live state, a refusal snapshots to that
 * state's bytes). A snapshot it takes must be a state the rest of the code
 * can live with, so after a success:
 * - the state snapshots, restores again and snapshots to the same bytes;
 * - everything read after a restore is read: all rows
 *   (fsm_mark_all_dirty, as the daemon does), the read view's answers, the
 *   schedule answers;
 * - the state goes on: commands made from what it holds are applied (each
 *   node's liveness and a restart, every running attempt finished, every
 *   schedule's next tick, every event a trigger waits for, a run of every
 *   flow, cancels, a redeploy and an undeploy, wake), and the result
 *   round-trips too. */
#include "fuzz/fuzz_fsm.h"

#include "core/spec.h"

#define TS INT64_C(4102444800000) /* 2100-01-01 */

static char *base_snap;  /* the live state a snapshot is restored over */
static size_t base_len;

static void apply_text(struct fsm *f, uint64_t *index, char *buf, size_t len)
{
	FUZZ_CHECK(buf != NULL, "a command did not encode");
	fsm_apply(f, ++*index, buf, len);
	free(buf);
	fz_take_records(f);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct fsm f;
	json_t *spec = json_pack("{s:[{s:s, s:[s]}]}", "steps", "name", "s",
				 "command", "true");
	uint64_t index = 0;
	char *buf;
	size_t len;

	fuzz_setup();
	fsm_init(&f, NULL);
	fsm_cmd_deploy(1000, "base", spec, &buf, &len);
	apply_text(&f, &index, buf, len);
	fsm_cmd_node_up(1000, 1, 1, 1, "127.0.0.1:1", &buf, &len);
	apply_text(&f, &index, buf, len);
	fsm_cmd_run_create(2000, "base", NULL, "k", NULL, NULL, &buf, &len);
	apply_text(&f, &index, buf, len);
	fsm_cmd_run_create(2000, "base", NULL, NULL, NULL, NULL, &buf, &len);
	apply_text(&f, &index, buf, len);
	FUZZ_CHECK(fsm_snapshot(&f, &base_snap, &base_len) == 0, "snapshot");
	fsm_close(&f);
	json_decref(spec);
	return 0;
}

/* A run of the flow, every schedule's next tick (and a backfill of it),
 * every event its triggers wait for, pause or unpause. */
static void drive_flow(struct fsm *f, uint64_t *index, struct fsm_flow *fl)
{
	const struct flow_spec *spec =
		fl->current ? fl->versions[fl->current - 1].spec : NULL;
	json_t *items = json_array();
	char *buf;
	size_t len;

	fsm_cmd_run_create(TS, fl->name, NULL, "again", NULL, NULL, &buf, &len);
	apply_text(f, index, buf, len);
	for (unsigned i = 0; i < fl->n_sched; i++) {
		const struct fsm_schedule_state *st = &fl->sched[i];
		json_int_t next = (json_int_t)st->cursor + 60;

		json_array_append_new(
			items, json_pack("{s:s, s:i, s:s, s:I, s:I, s:i}",
					 "flow", fl->name, "schedule", (int)i,
					 "key", st->key, "prev",
					 (json_int_t)st->cursor, "nominal",
					 next, "missed", 1));
		json_array_append_new(
			items, json_pack("{s:s, s:i, s:s, s:I, s:b}", "flow",
					 fl->name, "schedule", (int)i, "key",
					 st->key, "nominal", next, "backfill",
					 1));
	}
	fsm_cmd_fire(TS, items, 2, &buf, &len);
	apply_text(f, index, buf, len);
	json_decref(items);
	for (size_t i = 0; spec != NULL && i < spec->n_events; i++) {
		const struct spec_event_trigger *t = &spec->events[i];

		for (size_t k = 0; k < t->n_events; k++) {
			fsm_cmd_event(TS, t->events[k].name, fl->name, NULL,
				      86400, 100, 2, &buf, &len);
			apply_text(f, index, buf, len);
		}
	}
	fsm_cmd_pause(TS, fl->name, !fl->paused, &buf, &len);
	apply_text(f, index, buf, len);
}

/* drive_flow for every flow (the names first: a flow is never freed, but
 * the map may grow under the walk). */
static void drive_flows(struct fsm *f, uint64_t *index)
{
	char **names = calloc(f->flows.size + 1, sizeof *names);
	size_t n = 0;

	FUZZ_CHECK(names != NULL, "calloc");
	for (size_t b = 0; b < f->flows.n_buckets; b++)
		for (struct map_entry *e = f->flows.buckets[b]; e; e = e->next)
			names[n++] = strdup(e->key);
	for (size_t i = 0; i < n; i++) {
		drive_flow(f, index, fsm_flow_get(f, names[i]));
		free(names[i]);
	}
	free(names);
}

/* Every running attempt finished (the first with success, the others
 * failed), then every run cancelled. */
static void drive_runs(struct fsm *f, uint64_t *index)
{
	char *buf;
	size_t len;
	bool ok = true;

	for (uint64_t seq = f->run_lo; seq <= f->n_runs; seq++) {
		struct fsm_run *r = fsm_run_at(f, seq);

		for (size_t i = 0; r != NULL && i < r->spec->n_steps; i++) {
			const struct fsm_step *s = &r->steps[i];
			const struct fsm_attempt *a;
			struct fsm_finish fin = {0};

			if (s->n_attempts == 0)
				continue;
			a = &s->attempts[s->n_attempts - 1];
			if (a->status != FSM_ATTEMPT_RUNNING)
				continue;
			fin.run_id = r->id;
			fin.step = r->spec->steps[i].name;
			fin.attempt = a->n;
			fin.node = a->node;
			fin.exit_code = ok ? 0 : 1;
			fin.reason = "exited";
			fin.out = fin.err = "";
			ok = false;
			fsm_cmd_task_finish(TS, &fin, &buf, &len);
			apply_text(f, index, buf, len);
			r = fsm_run_at(f, seq); /* it may have left memory */
		}
	}
	for (uint64_t seq = f->run_lo; seq <= f->n_runs; seq++) {
		struct fsm_run *r = fsm_run_at(f, seq);

		if (r != NULL) {
			fsm_cmd_run_cancel(TS, r->id, &buf, &len);
			apply_text(f, index, buf, len);
		}
	}
}

/* Each node heard from, marked down, restarted; one removed. */
static void drive_nodes(struct fsm *f, uint64_t *index)
{
	unsigned n = f->n_nodes;
	uint64_t *ids = calloc(n + 1, sizeof *ids);
	uint64_t *boots = calloc(n + 1, sizeof *boots);
	char *buf;
	size_t len;

	FUZZ_CHECK(ids != NULL && boots != NULL, "calloc");
	for (unsigned i = 0; i < n; i++) {
		ids[i] = f->nodes[i].id;
		boots[i] = f->nodes[i].boot;
	}
	for (unsigned i = 0; i < n; i++) {
		fsm_cmd_node_alive(TS, ids[i], boots[i], &buf, &len);
		apply_text(f, index, buf, len);
		fsm_cmd_node_down(TS, ids[i], boots[i], &buf, &len);
		apply_text(f, index, buf, len);
		fsm_cmd_node_up(TS, ids[i], boots[i] + 1, 2, "127.0.0.1:2",
				&buf, &len);
		apply_text(f, index, buf, len);
	}
	if (n > 0) {
		fsm_cmd_node_remove(TS, ids[0], false, &buf, &len);
		apply_text(f, index, buf, len);
	}
	free(ids);
	free(boots);
}

/* A new version of every flow, then every flow undeployed. */
static void drive_deploys(struct fsm *f, uint64_t *index)
{
	json_t *spec = json_pack("{s:[{s:s, s:[s]}]}", "steps", "name", "z",
				 "command", "false");
	char **names = calloc(f->flows.size + 1, sizeof *names);
	size_t n = 0;
	char *buf;
	size_t len;

	FUZZ_CHECK(names != NULL, "calloc");
	for (size_t b = 0; b < f->flows.n_buckets; b++)
		for (struct map_entry *e = f->flows.buckets[b]; e; e = e->next)
			names[n++] = strdup(e->key);
	for (size_t i = 0; i < n; i++) {
		fsm_cmd_deploy(TS, names[i], spec, &buf, &len);
		apply_text(f, index, buf, len);
		fsm_cmd_undeploy(TS, names[i], &buf, &len);
		apply_text(f, index, buf, len);
		free(names[i]);
	}
	free(names);
	json_decref(spec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fsm f, *g;
	uint64_t index;
	char *snap, *buf;
	size_t len;

	fsm_init(&f, &fz_hooks);
	FUZZ_CHECK(fsm_restore(&f, base_snap, base_len) == 0, "base");
	if (fsm_restore(&f, data, size) != 0) {
		FUZZ_CHECK(fsm_snapshot(&f, &snap, &len) == 0, "snapshot");
		FUZZ_CHECK(len == base_len && memcmp(snap, base_snap, len) == 0,
			   "a refused snapshot changed the state:\n%.*s",
			   (int)len, snap);
		free(snap);
		fsm_close(&f);
		return 0;
	}
	index = f.applied_index;
	g = fz_round_trip(&f, &snap, &len);
	free(snap);
	fsm_close(g);
	free(g);

	fsm_mark_all_dirty(&f);
	fz_take_records(&f);
	fz_read_everything(&f, 1800000000);

	if (index > UINT64_MAX - 100000)
		index = 0;
	drive_nodes(&f, &index);
	drive_runs(&f, &index);
	drive_flows(&f, &index);
	fsm_cmd_wake(TS + 1000000000, &buf, &len);
	apply_text(&f, &index, buf, len);
	drive_runs(&f, &index);
	drive_deploys(&f, &index);
	fz_read_everything(&f, 1800000000);

	g = fz_round_trip(&f, &snap, &len);
	free(snap);
	fsm_close(g);
	free(g);
	fsm_close(&f);
	return 0;
}
