/* fsm_state.h - inside the state machine: clearing the whole state
 * (fsm_state.c), for restore (core/README.md, "Layers"). */
#ifndef FLOWD_CORE_FSM_STATE_H
#define FLOWD_CORE_FSM_STATE_H

#include "fsm.h"

/* Free everything but hooks and limits (and the lists that outlive a
 * restore: dirty runs, the view's lists, pending rows); the read view
 * copies the next state whole. */
void fsm__state_clear(struct fsm *f);

#endif
