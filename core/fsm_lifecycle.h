/* fsm_lifecycle.h - inside the state machine: what a run's life cycle
 * after its end (fsm_lifecycle.c) gives apply: user tags, resume and
 * redrive (docs/lifecycle.md). */
#ifndef FLOWD_CORE_FSM_LIFECYCLE_H
#define FLOWD_CORE_FSM_LIFECYCLE_H

#include "fsm_runs.h"

void fsm__apply_run_tags(struct apply_ctx *c, json_t *cmd);
void fsm__apply_run_resume(struct apply_ctx *c, json_t *cmd);
void fsm__apply_run_redrive(struct apply_ctx *c, json_t *cmd);
void fsm__apply_run_record(struct apply_ctx *c, json_t *cmd);

#endif
