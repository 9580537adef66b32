/* fsm_lifecycle.c - a run's life after it ended: its user tags, resume (a
 * new run that reuses the steps that succeeded) and redrive (the same run
 * again, in place). docs/lifecycle.md is the user's side.
 *
 * DESIGN
 *
 * Resume. The origin run must be in memory and finished. What runs again
 * is decided on the origin's DAG: `from_step` and everything downstream of
 * it, or (without it) every step that did not succeed. Every other step
 * that succeeded (or was itself reused) is REUSED in the new run: never
 * placed, done for its dependents from the start, linked to the attempt
 * that succeeded (through a chain of resumes, the first one). That set is
 * closed upward (a step's dependencies succeeded before it did, and none
 * of them is downstream of `from_step` or the step would be), so the new
 * run only waits on steps it runs. With "version": "current" the new run
 * is of the flow's current version and each reused step must be there
 * with the same definition (same command, dependencies, ...), else 409
 * naming it.
 *
 * Redrive. A failed or cancelled run with nothing running, ended at most
 * window_s ago: each step that did not succeed goes back to PENDING with
 * its attempts kept (attempt numbers go on; the retry policy counts from
 * attempt_base), the run to RUNNING, out of the settled FIFO, its on-finish
 * triggers to see its next end. The last redrive's idempotency key makes a
 * retried request a no-op.
 *
 * Tags. A sorted set of user strings per run (spec_tag_check), changed by
 * run_tags (add, then remove; idempotent) within the bounds the command
 * carries. Runs that left memory are PostgreSQL's: 409.
 *
 * Thread: the loop thread only. Deterministic like all of apply.
 */
#include "fsm_lifecycle.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The run a command names, in memory; else the result (404, or 409 when
 * it left memory) and NULL. */
static struct fsm_run *run_named(struct apply_ctx *c, const json_t *cmd)
{
	struct fsm *f = c->f;
	const char *id = json_string_value(json_object_get(cmd, "run"));
	struct fsm_run *r = id ? map_get(&f->runs, id) : NULL;

	if (r != NULL)
		return r;
	if (id != NULL && fsm_run_evicted(f, id))
		fsm__result_error(f, FLOWD_E_CONFLICT, "run_not_in_memory",
				  "run",
				  "the run has left memory (limits.runs_in_memory)");
	else
		fsm__result_error(f, FLOWD_E_NOT_FOUND, "not_found", "run",
				  "no such run");
	return NULL;
}

/* ------------------------------------------------------------------------
 * Tags
 */

void fsm__apply_run_tags(struct apply_ctx *c, json_t *cmd)
{
	json_t *add = json_object_get(cmd, "add");
	json_t *remove = json_object_get(cmd, "remove");
	json_t *all, *next, *t;
	struct fsm_run *r = run_named(c, cmd);
	size_t i;

	if (r == NULL)
		return;
	c->f->result.run = r;
	if (fsm__tags_edit_check(c, cmd, add, remove) != 0)
		return;
	all = json_array();
	if (all == NULL)
		abort();
	if (r->tags != NULL)
		json_array_extend(all, r->tags);
	json_array_extend(all, add);
	next = spec_tags_normalize(all);
	json_decref(all);
	if (next == NULL)
		abort();
	json_array_foreach(remove, i, t) {
		for (size_t k = 0; k < json_array_size(next); k++) {
			if (json_equal(json_array_get(next, k), t)) {
				json_array_remove(next, k);
				break;
			}
		}
	}
	if (fsm__tags_count_check(c, cmd, next, "add") != 0) {
		json_decref(next);
		return;
	}
	if (r->tags != NULL && json_equal(r->tags, next)) {
		json_decref(next); /* nothing changes: no row either */
		return;
	}
	if (r->tags == NULL && json_array_size(next) == 0) {
		json_decref(next);
		return;
	}
	json_decref(r->tags);
	r->tags = next; /* [] once it had some: its row says so */
	r->meta_dirty = true;
	fsm__run_touch(c, r);
}

/* ------------------------------------------------------------------------
 * Resume
 */

/* The index of the step `name` in `spec`, or -1. */
static long step_index(const struct flow_spec *spec, const char *name)
{
	for (size_t i = 0; i < spec->n_steps; i++)
		if (strcmp(spec->steps[i].name, name) == 0)
			return (long)i;
	return -1;
}

/* Mark `i` and every step downstream of it. */
static void mark_down(const struct flow_spec *spec, size_t i, bool *mark)
{
	if (mark[i])
		return;
	mark[i] = true;
	for (size_t j = 0; j < spec->n_steps; j++)
		for (size_t d = 0; d < spec->steps[j].n_deps; d++)
			if (spec->steps[j].deps[d] == i)
				mark_down(spec, j, mark);
}

/* The step object named `name` in a spec's normalized document. */
static const json_t *doc_step(const json_t *doc, const char *name)
{
	const json_t *st;
	size_t i;

	json_array_foreach(json_object_get(doc, "steps"), i, st)
		if (strcmp(json_string_value(json_object_get(st, "name")),
			   name) == 0)
			return st;
	return NULL;
}

/* With "version": "current": each step reused must be in `now` as it was
 * in `was`; else the result names the first one that is not. */
static int reuse_unchanged(struct apply_ctx *c, const struct flow_spec *was,
			   const struct flow_spec *now, const bool *reuse)
{
	json_t *dwas = spec_doc(was), *dnow = spec_doc(now);
	int rc = 0;

	if (dwas == NULL || dnow == NULL)
		abort();
	for (size_t i = 0; i < was->n_steps && rc == 0; i++) {
		const json_t *a, *b;

		if (!reuse[i])
			continue;
		a = doc_step(dwas, was->steps[i].name);
		b = doc_step(dnow, was->steps[i].name);
		if (b == NULL || !json_equal((json_t *)a, (json_t *)b)) {
			flowd_error_set(&c->f->result.err, FLOWD_E_CONFLICT,
					"step_changed", "version",
					"step %s would be reused but %s in the "
					"current version; resume with "
					"\"version\": \"origin\" or name an "
					"earlier from_step",
					was->steps[i].name,
					b == NULL ? "is not" : "is different");
			rc = -1;
		}
	}
	json_decref(dwas);
	json_decref(dnow);
	return rc;
}

void fsm__apply_run_resume(struct apply_ctx *c, json_t *cmd)
{
	struct fsm *f = c->f;
	const char *from = json_string_value(json_object_get(cmd, "from_step"));
	const char *ver = json_string_value(json_object_get(cmd, "version"));
	const char *key =
		json_string_value(json_object_get(cmd, "idempotency_key"));
	struct fsm_run *o = run_named(c, cmd), *r;
	const struct flow_spec *ospec, *nspec;
	struct fsm_flow *fl;
	struct flowd_error err;
	json_t *params = NULL, *tags = NULL;
	bool current, *rerun = NULL, *reuse = NULL, any = false;
	unsigned nver;
	long from_i = -1;

	if (o == NULL)
		return;
	fl = o->flow;
	if (fsm__idem_answer(c, cmd, fl->name, key))
		return;
	if (ver != NULL && strcmp(ver, "origin") != 0 &&
	    strcmp(ver, "current") != 0) {
		fsm__result_error(f, FLOWD_E_INVALID, "invalid_value",
				  "version", "must be origin or current");
		return;
	}
	current = ver != NULL && strcmp(ver, "current") == 0;
	if (!fsm__run_terminal(o)) {
		fsm__result_error(f, FLOWD_E_CONFLICT, "run_active", "run",
				  "the run has not finished");
		return;
	}
	if (fl->current == 0) {
		fsm__result_error(f, FLOWD_E_CONFLICT, "flow_undeployed",
				  "flow", "the flow is not deployed");
		return;
	}
	ospec = o->spec;
	if (from != NULL && (from_i = step_index(ospec, from)) < 0) {
		fsm__result_error(f, FLOWD_E_INVALID, "invalid_value",
				  "from_step", "no such step in the run");
		return;
	}
	rerun = calloc(ospec->n_steps + 1, sizeof *rerun);
	reuse = calloc(ospec->n_steps + 1, sizeof *reuse);
	if (rerun == NULL || reuse == NULL)
		abort();
	for (size_t i = 0; i < ospec->n_steps; i++)
		if (from_i < 0 && !fsm__step_done(&o->steps[i]))
			mark_down(ospec, i, rerun);
	if (from_i >= 0)
		mark_down(ospec, (size_t)from_i, rerun);
	/* a step that succeeded elsewhere (a recorded run: no attempt of
	 * this cluster) has nothing to link to: it runs again */
	for (size_t i = 0; i < ospec->n_steps; i++)
		reuse[i] = !rerun[i] &&
			   (o->steps[i].status == FSM_STEP_REUSED ||
			    (o->steps[i].status == FSM_STEP_SUCCEEDED &&
			     o->steps[i].n_attempts > 0));

	nver = current ? fl->current : o->version;
	nspec = fl->versions[nver - 1].spec;
	if (current && reuse_unchanged(c, ospec, nspec, reuse) != 0)
		goto out;
	for (size_t j = 0; j < nspec->n_steps; j++) {
		long i = step_index(ospec, nspec->steps[j].name);
		if (i < 0 || !reuse[i])
			any = true;
	}
	if (!any) {
		fsm__result_error(f, FLOWD_E_CONFLICT, "nothing_to_resume",
				  "from_step",
				  "every step succeeded: name a from_step to "
				  "run again");
		goto out;
	}
	if (current) {
		if (spec_params_resolve(nspec, o->params, &f->limits, &params,
					&err) != 0) {
			f->result.err = err;
			goto out;
		}
	} else {
		params = json_incref(o->params);
	}
	if (fsm__tags_merge(c, cmd, o->tags, json_object_get(cmd, "tags"),
			    &tags) != 0)
		goto out;

	r = fsm__run_new(f, fl, nver, f->next_seq++);
	r->params = params;
	params = NULL;
	r->idempotency_key = key ? strdup(key) : NULL;
	r->trigger = json_pack("{s:s, s:s}", "type", "resume", "run_id", o->id);
	r->origin_id = strdup(o->id);
	if (r->trigger == NULL || r->origin_id == NULL)
		abort();
	if (json_array_size(tags) > 0) {
		r->tags = tags;
		tags = NULL;
	}
	r->status = FSM_RUN_QUEUED;
	r->created_ms = c->ts;
	r->meta_dirty = true;
	fl->active++;
	fsm__run_list_add(f, r);
	if (key != NULL) {
		idem_put(&f->idem, fl->name, key, r->seq, c->ts);
		fsm__idem_expire(c);
	}
	fsm__run_touch(c, r);
	for (size_t j = 0; j < nspec->n_steps; j++) {
		struct fsm_step *s = &r->steps[j];
		long i = step_index(ospec, nspec->steps[j].name);

		if (i >= 0 && reuse[i]) {
			const struct fsm_step *os = &o->steps[i];

			s->status = FSM_STEP_REUSED;
			s->deps_left = 0;
			if (os->status == FSM_STEP_REUSED) {
				s->reused_seq = os->reused_seq;
				s->reused_attempt = os->reused_attempt;
			} else {
				s->reused_seq = o->seq;
				s->reused_attempt = os->n_attempts;
			}
			s->started_ms = os->started_ms;
			s->finished_ms = os->finished_ms;
		}
		fsm__step_touch(c, s);
	}
	/* what each step still waits on: its dependencies it runs */
	for (size_t j = 0; j < nspec->n_steps; j++) {
		struct fsm_step *s = &r->steps[j];

		if (s->status == FSM_STEP_REUSED)
			continue;
		s->deps_left = fsm__deps_waiting(r, j);
		if (s->deps_left == 0)
			fsm__make_ready(c, s);
	}
	fsm__count(c, &(struct fsm_count){.kind = FSM_COUNT_RUN_CREATED,
					  .run = r});
	fsm__place_ready(c);
	f->result.created = true;
	f->result.run = r;
out:
	json_decref(params);
	json_decref(tags);
	free(rerun);
	free(reuse);
}

/* ------------------------------------------------------------------------
 * Record: a run that ran elsewhere (flowctl resume --local --record)
 */

/* `id` is a run id in its one spelling, of a run before `next_seq`. */
static bool earlier_run(const char *id, uint64_t next_seq)
{
	uint64_t seq = fsm_run_seq(id);

	return seq != 0 && seq < next_seq;
}

static int record_refuse(struct apply_ctx *c, const char *field,
			 const char *why)
{
	fsm__result_error(c->f, FLOWD_E_INVALID, "invalid_value", field, why);
	return -1;
}

/* The statuses a recorded step may have, and what they mean here. */
static int record_status(const char *s)
{
	static const struct {
		const char *name;
		enum fsm_step_status st;
	} ok[] = {{"succeeded", FSM_STEP_SUCCEEDED},
		  {"failed", FSM_STEP_FAILED},
		  {"skipped", FSM_STEP_SKIPPED},
		  {"reused", FSM_STEP_REUSED}};

	for (size_t i = 0; s != NULL && i < sizeof ok / sizeof ok[0]; i++)
		if (strcmp(s, ok[i].name) == 0)
			return (int)ok[i].st;
	return -1;
}

/* Each step of the flow's current spec once, with a status that fits its
 * dependencies (a step that ran had them done); times in range. Fills st[],
 * t0[], t1[], ru[] by spec index. */
static int record_steps(struct apply_ctx *c, const struct flow_spec *spec,
			const json_t *steps, uint64_t seq, int *st,
			int64_t *t0, int64_t *t1, uint64_t *ru_seq,
			unsigned *ru_att)
{
	const json_t *js;
	size_t i;

	for (i = 0; i < spec->n_steps; i++)
		st[i] = -1;
	if (json_array_size(steps) != spec->n_steps)
		return record_refuse(c, "steps",
				     "one entry per step of the flow's current "
				     "version");
	json_array_foreach(steps, i, js) {
		const char *name = json_string_value(json_object_get(js, "name"));
		const json_t *from = json_object_get(js, "reused_from");
		long at = -1;

		for (size_t k = 0; name != NULL && k < spec->n_steps; k++)
			if (strcmp(spec->steps[k].name, name) == 0)
				at = (long)k;
		if (at < 0 || st[at] != -1)
			return record_refuse(c, "steps",
					     "a step of the flow's current "
					     "version, once each");
		st[at] = record_status(
			json_string_value(json_object_get(js, "status")));
		if (st[at] < 0)
			return record_refuse(c, "steps",
					     "status is succeeded, failed, "
					     "skipped or reused");
		t0[at] = json_integer_value(json_object_get(js, "started_ms"));
		t1[at] = json_integer_value(json_object_get(js, "finished_ms"));
		if (t0[at] < 0 || t1[at] < t0[at] || t1[at] > c->ts)
			return record_refuse(c, "steps",
					     "started_ms <= finished_ms <= now");
		if (st[at] == FSM_STEP_REUSED) {
			const char *rid = json_string_value(
				json_object_get(from, "run_id"));
			json_int_t n = json_integer_value(
				json_object_get(from, "attempt"));

			if (!earlier_run(rid, seq) || n < 1 || n > INT32_MAX)
				return record_refuse(c, "steps",
						     "a reused step names the "
						     "earlier run and attempt it "
						     "took (reused_from)");
			ru_seq[at] = fsm_run_seq(rid);
			ru_att[at] = (unsigned)n;
		}
	}
	for (i = 0; i < spec->n_steps; i++) {
		bool deps_done = true;

		for (size_t d = 0; d < spec->steps[i].n_deps; d++) {
			int ds = st[spec->steps[i].deps[d]];
			if (ds != FSM_STEP_SUCCEEDED && ds != FSM_STEP_REUSED)
				deps_done = false;
		}
		if (st[i] != FSM_STEP_SKIPPED && !deps_done)
			return record_refuse(c, "steps",
					     "a step ran only after its "
					     "dependencies succeeded");
	}
	return 0;
}

void fsm__apply_run_record(struct apply_ctx *c, json_t *cmd)
{
	struct fsm *f = c->f;
	const char *name = json_string_value(json_object_get(cmd, "flow"));
	const char *origin = json_string_value(json_object_get(cmd, "origin"));
	const char *key =
		json_string_value(json_object_get(cmd, "idempotency_key"));
	struct fsm_flow *fl = name ? map_get(&f->flows, name) : NULL;
	const struct flow_spec *spec;
	struct flowd_error err;
	json_t *params = NULL;
	struct fsm_run *r;
	int *st = NULL;
	int64_t *t0 = NULL, *t1 = NULL;
	uint64_t *ru_seq = NULL;
	unsigned *ru_att = NULL;
	bool failed = false;

	if (fl == NULL || fl->current == 0) {
		fsm__result_error(f, FLOWD_E_NOT_FOUND, "not_found", "flow",
				  "the flow is not deployed in that branch");
		return;
	}
	if (fsm__idem_answer(c, cmd, fl->name, key))
		return;
	spec = fl->versions[fl->current - 1].spec;
	st = calloc(spec->n_steps + 1, sizeof *st);
	t0 = calloc(spec->n_steps + 1, sizeof *t0);
	t1 = calloc(spec->n_steps + 1, sizeof *t1);
	ru_seq = calloc(spec->n_steps + 1, sizeof *ru_seq);
	ru_att = calloc(spec->n_steps + 1, sizeof *ru_att);
	if (st == NULL || t0 == NULL || t1 == NULL || ru_seq == NULL ||
	    ru_att == NULL)
		abort();
	/* an earlier run (a snapshot refuses any other: the fuzzer's
	 * fuzz/corpus/fsm_apply/crash-record-origin-itself) */
	if (!earlier_run(origin, f->next_seq)) {
		record_refuse(c, "origin_run_id",
			      "the id of an earlier run, the one resumed");
		goto out;
	}
	if (record_steps(c, spec, json_object_get(cmd, "steps"), f->next_seq,
			 st, t0, t1, ru_seq, ru_att) != 0)
		goto out;
	if (spec_params_resolve(spec, json_object_get(cmd, "parameters"),
				&f->limits, &params, &err) != 0) {
		f->result.err = err;
		goto out;
	}

	r = fsm__run_new(f, fl, fl->current, f->next_seq++);
	r->params = params;
	params = NULL;
	r->idempotency_key = key ? strdup(key) : NULL;
	r->trigger = json_pack("{s:s, s:s}", "type", "local_resume", "run_id",
			       origin);
	r->origin_id = strdup(origin);
	if (r->trigger == NULL || r->origin_id == NULL)
		abort();
	if (spec->tags != NULL && json_array_size(spec->tags) > 0)
		r->tags = json_incref(spec->tags);
	r->created_ms = c->ts;
	r->started_ms = c->ts;
	r->meta_dirty = true;
	fl->active++;
	fsm__run_list_add(f, r);
	if (key != NULL) {
		idem_put(&f->idem, fl->name, key, r->seq, c->ts);
		fsm__idem_expire(c);
	}
	for (size_t i = 0; i < spec->n_steps; i++) {
		struct fsm_step *s = &r->steps[i];

		s->status = (enum fsm_step_status)st[i];
		s->started_ms = st[i] == FSM_STEP_SKIPPED ? 0 : t0[i];
		s->finished_ms = st[i] == FSM_STEP_SKIPPED ? 0 : t1[i];
		s->reused_seq = ru_seq[i];
		s->reused_attempt = ru_att[i];
	}
	/* once every status is set: a dependency may come later in the spec */
	for (size_t i = 0; i < spec->n_steps; i++) {
		struct fsm_step *s = &r->steps[i];

		s->deps_left = fsm__deps_waiting(r, i);
		if (!fsm__step_done(s))
			failed = true;
		fsm__step_touch(c, s);
	}
	r->status = failed ? FSM_RUN_FAILED : FSM_RUN_SUCCEEDED;
	r->reason = failed ? strdup("recorded: a step failed elsewhere") : NULL;
	r->finished_ms = c->ts;
	/* it ran elsewhere: no on-finish trigger of this cluster follows it */
	r->end_seen = true;
	fsm__run_touch(c, r);
	fsm__count(c, &(struct fsm_count){.kind = FSM_COUNT_RUN_CREATED,
					  .run = r});
	fsm__count(c, &(struct fsm_count){.kind = FSM_COUNT_RUN_ENDED,
					  .run = r});
	f->result.created = true;
	f->result.run = r;
out:
	json_decref(params);
	free(st);
	free(t0);
	free(t1);
	free(ru_seq);
	free(ru_att);
}

/* ------------------------------------------------------------------------
 * Redrive
 */

static void settled_unlink(struct fsm *f, struct fsm_run *r)
{
	struct fsm_run *prev = NULL;

	for (struct fsm_run *p = f->settled_head; p != NULL;
	     prev = p, p = p->settled_next) {
		if (p != r)
			continue;
		if (prev != NULL)
			prev->settled_next = p->settled_next;
		else
			f->settled_head = p->settled_next;
		if (f->settled_tail == p)
			f->settled_tail = prev;
		p->settled_next = NULL;
		p->settled = false;
		f->n_settled--;
		return;
	}
}

void fsm__apply_run_redrive(struct apply_ctx *c, json_t *cmd)
{
	struct fsm *f = c->f;
	const char *key =
		json_string_value(json_object_get(cmd, "idempotency_key"));
	json_t *jw = json_object_get(cmd, "window_s");
	int64_t window_ms = (json_is_integer(jw) ? json_integer_value(jw)
						 : 14 * 86400) *
			    INT64_C(1000);
	struct fsm_run *r = run_named(c, cmd);

	if (r == NULL)
		return;
	f->result.run = r;
	if (key != NULL && r->redrive_key != NULL &&
	    strcmp(key, r->redrive_key) == 0)
		return; /* this redrive was applied already */
	if (!fsm__run_terminal(r)) {
		fsm__result_error(f, FLOWD_E_CONFLICT, "run_active", "run",
				  "the run has not finished");
		return;
	}
	if (r->status == FSM_RUN_SUCCEEDED) {
		fsm__result_error(f, FLOWD_E_CONFLICT, "run_succeeded", "run",
				  "only a failed or cancelled run is redriven");
		return;
	}
	if (r->active_attempts > 0) {
		fsm__result_error(f, FLOWD_E_CONFLICT, "run_stopping", "run",
				  "its steps are still being stopped; try "
				  "again in a moment");
		return;
	}
	if (window_ms > 0 && c->ts - r->finished_ms > window_ms) {
		fsm__result_error(f, FLOWD_E_CONFLICT, "redrive_window_passed",
				  "run",
				  "the run ended longer ago than "
				  "limits.redrive_window_s");
		return;
	}
	if (r->flow->current == 0) {
		fsm__result_error(f, FLOWD_E_CONFLICT, "flow_undeployed",
				  "flow", "the flow is not deployed");
		return;
	}
	if (r->settled) {
		settled_unlink(f, r);
		r->flow->active++;
	}
	/* a run cancelled before it started is queued again, so that its
	 * start is the first placement's */
	r->status = r->started_ms != 0 ? FSM_RUN_RUNNING : FSM_RUN_QUEUED;
	r->finished_ms = 0;
	free(r->reason);
	r->reason = NULL;
	r->end_seen = false;
	r->redrive_count++;
	r->meta_dirty = true;
	free(r->redrive_key);
	r->redrive_key = key ? strdup(key) : NULL;
	fsm__run_touch(c, r);
	for (size_t i = 0; i < r->spec->n_steps; i++) {
		struct fsm_step *s = &r->steps[i];

		if (fsm__step_done(s))
			continue;
		s->status = FSM_STEP_PENDING;
		s->attempt_base = s->n_attempts;
		s->started_ms = 0;
		s->finished_ms = 0;
		s->due_ms = 0;
		fsm__step_touch(c, s);
	}
	for (size_t i = 0; i < r->spec->n_steps; i++) {
		struct fsm_step *s = &r->steps[i];

		if (s->status != FSM_STEP_PENDING)
			continue;
		s->deps_left = fsm__deps_waiting(r, i);
		if (s->deps_left == 0)
			fsm__make_ready(c, s);
	}
	fsm__place_ready(c);
}
