/* fsm_rows.h - inside the state machine: the PostgreSQL row images, the
 * text buffer they are written into. Called by every layer above
 * (core/README.md, "Layers"); calls only fsm_changes. */
#ifndef FLOWD_CORE_FSM_ROWS_H
#define FLOWD_CORE_FSM_ROWS_H

#include "fsm.h"

/* Append n bytes to a text buffer (kept NUL-terminated). Returns 0, or -1
 * when out of memory (the buffer unchanged). */
int fsm__text_put(struct fsm_text *b, const char *s, size_t n);

/* Row images written as JSON text into f->rows, the hot path (apply
 * aborts on OOM): the rows of one run (the run, and its changed steps and
 * attempts, whose dirty flags are cleared), and one schedule decision
 * (table fires). */
void fsm__rows_run(struct fsm *f, struct fsm_run *r);
void fsm__rows_fire(struct fsm *f, const struct fsm_flow *fl, int sched,
		    int64_t nominal, int64_t at_ms,
		    enum fsm_fire_outcome outcome, uint64_t count,
		    const char *run_id, const char *reason);

/* Row images as JSON objects for f->pending (new references). */
json_t *fsm__record_flow(const struct fsm_flow *fl);
json_t *fsm__record_flow_version(const struct fsm_flow *fl,
				 const struct fsm_flow_version *v);
/* The flows.paused column of a flow. */
json_t *fsm__record_paused(const struct fsm_flow *fl);
/* A task's output (out, err and truncated borrowed, as the task_finish
 * command carries them). */
json_t *fsm__record_log(const char *run_id, const char *step,
			unsigned attempt, json_t *out, json_t *err,
			json_t *truncated);
/* An accepted event and what it started (payload and runs borrowed). */
json_t *fsm__record_event(const char *id, const char *name, json_t *payload,
			  int64_t ts, json_t *runs);

#endif
