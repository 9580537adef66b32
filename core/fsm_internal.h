/* fsm_internal.h - what fsm.c and trigger.c share inside the state machine.
 * Not for use outside core/. */
#ifndef FLOWD_CORE_FSM_INTERNAL_H
#define FLOWD_CORE_FSM_INTERNAL_H

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

/* fsm.c */
/* Row images written as JSON text into f->rows (apply aborts on OOM):
 * raw text, a JSON string (or null), an integer, milliseconds (0 = null),
 * any JSON value (NULL = null). Each row is separated from the previous
 * one by a comma (ROWS_BEGIN). */
void fsm__rows_put(struct fsm_text *b, const char *s, size_t n);
void fsm__rows_str(struct fsm_text *b, const char *s);
void fsm__rows_int(struct fsm_text *b, int64_t v);
void fsm__rows_ms(struct fsm_text *b, int64_t ms);
void fsm__rows_json(struct fsm_text *b, const json_t *v);
#define ROWS_LIT(b, lit) fsm__rows_put((b), (lit), sizeof(lit) - 1)
#define ROWS_BEGIN(b, lit)                                                    \
	do {                                                                  \
		if ((b)->n > 0)                                               \
			ROWS_LIT((b), ",");                                   \
		ROWS_LIT((b), lit);                                           \
	} while (0)

/* A flow's view changed (deploy, pause, a schedule's state): the read view
 * copies it again after this batch. */
void fsm__flow_touch(struct fsm *f, struct fsm_flow *fl);

/* Drop the idempotency keys past the state's retention, as of this entry. */
void fsm__idem_expire(struct apply_ctx *c);

void fsm__result_error(struct fsm *f, int status, const char *code,
		       const char *field, const char *msg);
/* Start a run of the flow's current version. `params` (borrowed) are the
 * given parameters, resolved here; `trigger` is stolen (NULL = manual).
 * Returns the run, or NULL with *err filled (bad parameters). */
struct fsm_run *fsm__run_start(struct apply_ctx *c, struct fsm_flow *fl,
			       const json_t *params, const char *key,
			       json_t *trigger, struct flowd_error *err);
/* End a run that has not ended (cancel its steps, stop its attempts). */
void fsm__run_end(struct apply_ctx *c, struct fsm_run *r,
		  enum fsm_run_status status, const char *reason);
bool fsm__run_terminal(const struct fsm_run *r);

/* trigger.c */
/* A deploy made `fl` current with a new or different spec (or brought it
 * back after an undeploy): its schedule states follow the new schedules. */
void fsm__trig_deployed(struct apply_ctx *c, struct fsm_flow *fl,
			const struct flow_spec *old, bool was_current);
void fsm__trig_undeployed(struct apply_ctx *c, struct fsm_flow *fl);
/* A run reached a final status: on-finish triggers of other flows. */
void fsm__trig_ended(struct apply_ctx *c, struct fsm_run *r);
/* A run settled (final, nothing running): its flow has room again. */
void fsm__trig_settled(struct apply_ctx *c, struct fsm_run *r);
void fsm__apply_fire(struct apply_ctx *c, json_t *cmd);
void fsm__apply_event(struct apply_ctx *c, json_t *cmd);
void fsm__apply_pause(struct apply_ctx *c, json_t *cmd);
/* The flows.paused row of a flow (new reference). */
json_t *fsm__paused_record(const struct fsm_flow *fl);
/* Snapshot parts and their restore; clear frees. */
json_t *fsm__trig_snap_flow(const struct fsm_flow *fl);
int fsm__trig_restore_flow(struct fsm *f, struct fsm_flow *fl, json_t *j);
void fsm__trig_clear_flow(struct fsm_flow *fl);
json_t *fsm__events_snap(const struct fsm *f);
int fsm__events_restore(struct fsm *f, json_t *j);
void fsm__events_clear(struct fsm *f);

#endif
