/* fsm_changes.c - the entry being applied: its result, and the marks of what
 * it changed, which the row images, the read view, snapshots and settling
 * read.
 *
 * DESIGN
 *
 * Every change of a run, a step or an attempt goes through fsm__run_touch
 * (fsm__step_touch), and every change of what the read view shows of a flow
 * through fsm__flow_touch. A touch records the change once for each reader:
 * - f->dirty: the runs whose rows the next fsm_take_records() writes
 *   (fsm_rows.c);
 * - f->view_seqs, f->view_flows: what the read view (core/view.c) copies
 *   again after this batch, until fsm_view_taken();
 * - run->snap_text: the run's cached snapshot text is dropped
 *   (fsm_snapshot.c);
 * - c->touched: the runs this entry touched, in the order it touched them,
 *   which settle() (fsm.c) walks once the entry's commands are applied.
 * Each list grows in apply order, so it is the same on every node.
 *
 * Failure modes: out of memory aborts, since apply must not stop half-way
 * through an entry (the replicas would diverge).
 *
 * Thread: the loop thread only.
 */
#include "fsm_changes.h"

#include <stdlib.h>
#include <string.h>

void fsm__result_error(struct fsm *f, enum flowd_errc errc, const char *code,
		       const char *field, const char *msg)
{
	flowd_error_set(&f->result.err, errc, code, field, "%s", msg);
}

/* Grow an array of `size`-byte elements to hold one more (apply aborts on
 * out of memory: it must not fail half-way). */
static void *grow(void *arr, size_t *cap, size_t n, size_t size)
{
	size_t c = *cap;

	if (n < c)
		return arr;
	c = c ? c * 2 : 64;
	arr = realloc(arr, c * size);
	if (arr == NULL)
		abort();
	*cap = c;
	return arr;
}

static void view_seq_push(struct fsm *f, uint64_t seq)
{
	f->view_seqs = grow(f->view_seqs, &f->cap_view_seqs, f->n_view_seqs,
			    sizeof *f->view_seqs);
	f->view_seqs[f->n_view_seqs++] = seq;
}

void fsm__flow_touch(struct fsm *f, struct fsm_flow *fl)
{
	if (fl->view_dirty)
		return;
	fl->view_dirty = true;
	f->view_flows = grow(f->view_flows, &f->cap_view_flows,
			     f->n_view_flows, sizeof *f->view_flows);
	f->view_flows[f->n_view_flows++] = fl;
}

void fsm__view_drop(struct fsm *f, struct fsm_run *r)
{
	if (!r->view_dirty)
		view_seq_push(f, r->seq); /* the view drops it */
}

void fsm_view_taken(struct fsm *f)
{
	f->n_view_seqs = 0;
	f->n_view_flows = 0;
	f->view_reset = false;
}

void fsm__count(struct apply_ctx *c, struct fsm_count *what)
{
	if (c->f->hooks.count == NULL)
		return;
	what->ts_ms = c->ts;
	what->index = c->index;
	c->f->hooks.count(c->f->hooks.arg, what);
}

static void tell(struct apply_ctx *c, enum fsm_change_kind kind,
		 const struct fsm_run *r, const struct fsm_step *s, int status,
		 const struct fsm_attempt *a)
{
	struct fsm *f = c->f;

	f->hooks.changed(f->hooks.arg,
			 &(struct fsm_change){.kind = kind, .index = c->index,
					      .ts_ms = c->ts, .run = r,
					      .step = s, .status = status,
					      .attempt = a});
}

static void report_step(struct apply_ctx *c, struct fsm_run *r,
			struct fsm_step *s)
{
	if (s->told == (uint8_t)s->status &&
	    s->told_attempts == s->n_attempts)
		return;
	/* the attempt last told as running failed, and the next one began
	 * in this same entry (a retry without backoff) */
	if (s->n_attempts > s->told_attempts && s->told_attempts > 0 &&
	    s->told == FSM_STEP_RUNNING)
		tell(c, FSM_CHANGE_STEP, r, s, FSM_STEP_RETRY_WAIT,
		     &s->attempts[s->told_attempts - 1]);
	s->told = (uint8_t)s->status;
	s->told_attempts = s->n_attempts;
	tell(c, FSM_CHANGE_STEP, r, s, s->status,
	     s->n_attempts ? &s->attempts[s->n_attempts - 1] : NULL);
}

static int flow_name_cmp(const void *a, const void *b)
{
	const struct fsm_flow *x = *(struct fsm_flow *const *)a;
	const struct fsm_flow *y = *(struct fsm_flow *const *)b;

	return strcmp(x->name, y->name);
}

static void report_flows(struct apply_ctx *c, struct fsm_flow **fl, size_t n)
{
	struct fsm *f = c->f;

	qsort(fl, n, sizeof *fl, flow_name_cmp);
	for (size_t i = 0; i < n; i++) {
		fsm__told_sync_flow(fl[i]);
		f->hooks.changed(f->hooks.arg,
				 &(struct fsm_change){.kind = FSM_CHANGE_FLOW,
						      .index = c->index,
						      .ts_ms = c->ts,
						      .flow = fl[i]});
	}
}

void fsm__report_changes(struct apply_ctx *c)
{
	struct fsm *f = c->f;

	if (f->hooks.changed == NULL || c->index == 0)
		return;
	/* Flows this batch touched (told filters what earlier entries of
	 * the batch already reported, and tick-only touches), in name order:
	 * the list's own order depends on this node's batches. */
	struct fsm_flow **changed = NULL;
	size_t n = 0;
	for (size_t i = 0; i < f->n_view_flows; i++) {
		struct fsm_flow *fl = f->view_flows[i];
		if (fl->told && fl->told_paused == fl->paused &&
		    fl->told_current == fl->current)
			continue;
		if (changed == NULL) {
			changed = malloc(f->n_view_flows * sizeof *changed);
			if (changed == NULL)
				abort(); /* as the state machine's other allocations */
		}
		changed[n++] = fl;
	}
	if (n > 0)
		report_flows(c, changed, n);
	free(changed);
	for (size_t i = 0; i < c->n_touched; i++) {
		struct fsm_run *r = c->touched[i];
		bool ended = r->status >= FSM_RUN_SUCCEEDED;
		bool run_changed = r->told != (uint8_t)r->status;

		r->told = (uint8_t)r->status;
		if (run_changed && !ended)
			tell(c, FSM_CHANGE_RUN, r, NULL, r->status, NULL);
		for (size_t k = 0; k < r->spec->n_steps; k++)
			report_step(c, r, &r->steps[k]);
		if (run_changed && ended)
			tell(c, FSM_CHANGE_RUN, r, NULL, r->status, NULL);
	}
}

void fsm__told_sync_flow(struct fsm_flow *fl)
{
	fl->told = true;
	fl->told_paused = fl->paused;
	fl->told_current = fl->current;
}

void fsm__told_sync(struct fsm_run *r)
{
	r->told = (uint8_t)r->status;
	for (size_t k = 0; k < r->spec->n_steps; k++) {
		r->steps[k].told = (uint8_t)r->steps[k].status;
		r->steps[k].told_attempts = r->steps[k].n_attempts;
	}
}

void fsm__run_touch(struct apply_ctx *c, struct fsm_run *r)
{
	struct fsm *f = c->f;

	if (!r->view_dirty) {
		r->view_dirty = true;
		view_seq_push(f, r->seq);
	}

	if (c->index != 0 && r->touched_at != c->index) {
		r->touched_at = c->index;
		if (c->n_touched == c->cap_touched) {
			size_t cap = c->cap_touched ? c->cap_touched * 2 : 16;
			struct fsm_run **t =
				realloc(c->touched, cap * sizeof *t);
			if (t == NULL)
				abort();
			c->touched = t;
			c->cap_touched = cap;
		}
		c->touched[c->n_touched++] = r;
	}

	free(r->snap_text);
	r->snap_text = NULL;
	if (r->dirty)
		return;
	r->dirty = true;
	if (f->n_dirty == f->cap_dirty) {
		size_t cap = f->cap_dirty ? f->cap_dirty * 2 : 64;
		struct fsm_run **d = realloc(f->dirty, cap * sizeof *d);
		if (d == NULL)
			abort(); /* apply must not fail half-way */
		f->dirty = d;
		f->cap_dirty = cap;
	}
	f->dirty[f->n_dirty++] = r;
}

void fsm__step_touch(struct apply_ctx *c, struct fsm_step *s)
{
	s->dirty = true;
	fsm__run_touch(c, s->run);
}
