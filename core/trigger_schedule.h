/* trigger_schedule.h - inside the state machine: what the schedules
 * (trigger_schedule.c) give the layers above them: on-finish, flows, apply
 * (core/README.md, "Layers"). */
#ifndef FLOWD_CORE_TRIGGER_SCHEDULE_H
#define FLOWD_CORE_TRIGGER_SCHEDULE_H

#include "fsm_changes.h"

/* A deploy made `fl` current with a new or different spec, or brought it
 * back after an undeploy (was_current false): its schedule states follow
 * the new schedules (an unchanged schedule keeps its cursor and counters). */
void fsm__sched_deployed(struct apply_ctx *c, struct fsm_flow *fl,
			 bool was_current);
/* Free a flow's schedule states. */
void fsm__sched_clear(struct fsm_flow *fl);
/* A trigger left the overlap buffer having started `run` (NULL: none
 * started): when it was a schedule's tick, record the decision. */
void fsm__sched_unbuffered(struct apply_ctx *c, struct fsm_flow *fl,
			   const struct fsm_buffered *b,
			   const struct fsm_run *run);

/* The fire and pause commands (fsm.c dispatches). */
void fsm__apply_fire(struct apply_ctx *c, json_t *cmd);
void fsm__apply_pause(struct apply_ctx *c, json_t *cmd);

#endif
