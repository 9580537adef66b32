/* fsm_changes.h - inside the state machine: the entry being applied, its
 * result, and the marks of what it changed. The lowest layer: every fsm_*
 * and trigger_* file may include it (core/README.md, "Layers"). */
#ifndef FLOWD_CORE_FSM_CHANGES_H
#define FLOWD_CORE_FSM_CHANGES_H

#include "fsm.h"

/* The entry being applied. */
struct apply_ctx {
	struct fsm *f;
	uint64_t index;
	int64_t ts;
	json_t *records;            /* f->pending: row images not tied to a run */
	struct fsm_run **touched;   /* runs this entry touched, in order */
	size_t n_touched, cap_touched;
};

/* The entry's result is a business error (f->result). */
void fsm__result_error(struct fsm *f, enum flowd_errc errc, const char *code,
		       const char *field, const char *msg);

/* A run, or a step of it, changed: its rows go out with the next
 * fsm_take_records(), the read view copies it again, its cached snapshot
 * text is dropped, and settle() looks at it after the entry. */
void fsm__run_touch(struct apply_ctx *c, struct fsm_run *r);
void fsm__step_touch(struct apply_ctx *c, struct fsm_step *s);

/* A flow's view changed (deploy, pause, a schedule's state): the read view
 * copies it again after this batch. */
void fsm__flow_touch(struct fsm *f, struct fsm_flow *fl);

/* Report something countable (f->hooks.count, if set); `what` is filled
 * with the entry's time. */
void fsm__count(struct apply_ctx *c, struct fsm_count *what);

/* After an entry: report the status changes of the runs it touched
 * (f->hooks.changed, fsm.h), before any of them leaves memory. */
void fsm__report_changes(struct apply_ctx *c);

/* A run or a flow restored from a snapshot: nothing to report of its
 * state. */
void fsm__told_sync(struct fsm_run *r);
void fsm__told_sync_flow(struct fsm_flow *fl);

/* A run left memory: the read view drops it. */
void fsm__view_drop(struct fsm *f, struct fsm_run *r);

#endif
