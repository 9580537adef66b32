/* trigger_finish.h - inside the state machine: what a run's end sets off
 * (trigger_finish.c), for settle() in fsm.c (core/README.md, "Layers"). */
#ifndef FLOWD_CORE_TRIGGER_FINISH_H
#define FLOWD_CORE_TRIGGER_FINISH_H

#include "fsm_changes.h"

/* A run reached a final status: the on-finish triggers of other flows. */
void fsm__trig_ended(struct apply_ctx *c, struct fsm_run *r);
/* A run settled (final, nothing running): its flow has room again, and
 * its buffered triggers start while it has. */
void fsm__trig_settled(struct apply_ctx *c, struct fsm_run *r);

#endif
