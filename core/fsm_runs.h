/* fsm_runs.h - inside the state machine: what the runs layer (fsm_runs.c)
 * gives the layers above it: nodes, triggers, flows, the life cycle, apply
 * and snapshot (core/README.md, "Layers"). */
#ifndef FLOWD_CORE_FSM_RUNS_H
#define FLOWD_CORE_FSM_RUNS_H

#include "fsm_changes.h"

/* A step that counts as done for its dependents and its run. */
static inline bool fsm__step_done(const struct fsm_step *s)
{
	return s->status == FSM_STEP_SUCCEEDED || s->status == FSM_STEP_REUSED;
}

/* How many dependency mentions of step i are not done: what its
 * deps_left is whenever it is recomputed (resume, redrive, record) and
 * what a restore checks. */
static inline unsigned fsm__deps_waiting(const struct fsm_run *r, size_t i)
{
	const struct spec_step *ss = &r->spec->steps[i];
	unsigned left = 0;

	for (size_t d = 0; d < ss->n_deps; d++)
		if (!fsm__step_done(&r->steps[ss->deps[d]]))
			left++;
	return left;
}

static inline bool fsm__run_terminal(const struct fsm_run *r)
{
	return r->status >= FSM_RUN_SUCCEEDED;
}

/* ---- Runs in memory ---- */
/* A new run object of `version` with its steps PENDING, in no list yet;
 * counts as a run of that version. */
struct fsm_run *fsm__run_new(struct fsm *f, struct fsm_flow *fl,
			     unsigned version, uint64_t seq);
/* Free a run (NULL: nothing); the caller unlinks it first. */
void fsm__run_free(struct fsm_run *r);
/* Put a run at its place in the window, run_list[seq - run_lo], and in the
 * map by id. */
void fsm__run_list_add(struct fsm *f, struct fsm_run *r);
/* Runs left memory: move the window's front up (amortized O(1)). */
void fsm__run_list_trim(struct fsm *f);
/* The settled FIFO (finished runs with nothing running, oldest first). */
void fsm__settled_push(struct fsm *f, struct fsm_run *r);
struct fsm_run *fsm__settled_pop(struct fsm *f);
/* Drop the idempotency keys past the state's retention, as of this entry. */
void fsm__idem_expire(struct apply_ctx *c);

/* ---- Placement ---- */
struct fsm_node *fsm__node_find(struct fsm *f, uint64_t id);
/* Append a READY step to the ready FIFO (restore). */
void fsm__ready_push(struct fsm *f, struct fsm_step *s);
/* Place READY steps, oldest first, while a live node has a free slot. */
void fsm__place_ready(struct apply_ctx *c);

/* ---- Transitions ---- */
/* Start a run of the flow's current version. `params` (borrowed) are the
 * given parameters, resolved here; `trigger` is stolen (NULL = manual).
 * Returns the run, or NULL with *err filled (bad parameters). */
struct fsm_run *fsm__run_start(struct apply_ctx *c, struct fsm_flow *fl,
			       const json_t *params, const char *key,
			       json_t *trigger, struct flowd_error *err);
/* End a run that has not ended (cancel its steps, stop its attempts). */
void fsm__run_end(struct apply_ctx *c, struct fsm_run *r,
		  enum fsm_run_status status, const char *reason);
/* A RUNNING attempt was lost with its node: its slot is freed, and its
 * step retried under its policy (or failed, ending the run). */
void fsm__attempt_lost(struct apply_ctx *c, struct fsm_run *r,
		       struct fsm_step *s, struct fsm_attempt *a);

/* ---- Commands (fsm.c dispatches) ---- */
void fsm__apply_run_create(struct apply_ctx *c, json_t *cmd);
void fsm__apply_run_cancel(struct apply_ctx *c, json_t *cmd);
void fsm__apply_task_finish(struct apply_ctx *c, json_t *cmd);
void fsm__apply_wake(struct apply_ctx *c);
/* A run-making command's retention read into the state, its keys
 * expired, then: true with the result set when `key` (may be NULL) already
 * made a run of `flow` (the same run answers). */
bool fsm__idem_answer(struct apply_ctx *c, const json_t *cmd,
		      const char *flow, const char *key);
/* Read the retention a run-making command carries into the state. */
void fsm__keep_read(struct apply_ctx *c, const json_t *cmd);
/* The user tags of a new run: `base` and `more` (arrays, may be NULL)
 * merged, checked against the command's bounds (field names the array
 * the bad tag is in); 0 with a new *out, or -1 with the result set. */
int fsm__tags_merge(struct apply_ctx *c, const json_t *cmd,
		    const json_t *base, const json_t *more, json_t **out);
void fsm__make_ready(struct apply_ctx *c, struct fsm_step *s);
/* `tags` within limits.max_tags_per_run; else -1 with the result set. */
int fsm__tags_count_check(struct apply_ctx *c, const json_t *cmd,
			  const json_t *tags, const char *field);
/* The add and remove arrays of run_tags are tags (add: user tags within
 * the bounds; remove: no system tag); else -1 with the result set. */
int fsm__tags_edit_check(struct apply_ctx *c, const json_t *cmd,
			 const json_t *add, const json_t *remove);

#endif
