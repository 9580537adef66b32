/* trigger_event.h - inside the state machine: what the event triggers
 * (trigger_event.c) give the layers above them: flows, the life cycle,
 * apply, snapshot (core/README.md, "Layers"). */
#ifndef FLOWD_CORE_TRIGGER_EVENT_H
#define FLOWD_CORE_TRIGGER_EVENT_H

#include "fsm_changes.h"

/* A deploy made `fl` current (old: the spec it replaced as current, or
 * NULL): its all-of collections follow the new event triggers (a trigger
 * defined the same keeps what it collected). */
void fsm__event_deployed(struct fsm_flow *fl, const struct flow_spec *old);
/* Free a flow's all-of collections. */
void fsm__collect_clear(struct fsm_flow *fl);
/* Remember an event id with the answer given (result borrowed): a
 * duplicate gets that answer (restore too). */
void fsm__event_remember(struct fsm *f, const char *id, int64_t ts,
			 json_t *result);
/* Forget every remembered event id. */
void fsm__events_clear(struct fsm *f);

/* The event command (fsm.c dispatches). */
void fsm__apply_event(struct apply_ctx *c, json_t *cmd);

#endif
