/* trigger_launch.h - inside the state machine: what every kind of trigger
 * shares (trigger_launch.c), for the trigger files above it, flows, the
 * life cycle and snapshot (core/README.md, "Layers"). */
#ifndef FLOWD_CORE_TRIGGER_LAUNCH_H
#define FLOWD_CORE_TRIGGER_LAUNCH_H

#include "fsm_changes.h"

/* The spec of a flow's current version, NULL when undeployed. */
static inline const struct flow_spec *
fsm__current_spec(const struct fsm_flow *fl)
{
	return fl->current ? fl->versions[fl->current - 1].spec : NULL;
}

/* The outcome of offering one trigger to a flow. */
struct fsm_launch {
	enum fsm_fire_outcome outcome;
	struct fsm_run *run;
	char reason[256];
};

/* Start a run of `fl` for a trigger under the overlap policy `ov`: fire,
 * skip, buffer (as schedule `sched`'s tick if >= 0; at most max_buffered),
 * drop, or end the active runs first. `params` borrowed (as given,
 * resolved at start), `trigger` stolen. */
void fsm__launch(struct apply_ctx *c, struct fsm_flow *fl,
		 const json_t *params, json_t *trigger, enum spec_overlap ov,
		 int sched, unsigned max_buffered, struct fsm_launch *out);

/* The overlap buffer of a flow (FIFO). push: params copied, trigger
 * stolen, sched_key copied (may be NULL). take: the oldest trigger, off
 * the buffer, if the flow has room for it now (an undeployed flow always
 * has: its buffer empties); the caller starts it and frees it. */
void fsm__buffer_push(struct fsm_flow *fl, const json_t *params,
		      json_t *trigger, const char *sched_key);
struct fsm_buffered *fsm__buffer_take(struct fsm_flow *fl);
void fsm__buffered_free(struct fsm_buffered *b);
void fsm__buffer_clear(struct fsm_flow *fl);

/* The indexes of the current versions' event and on-finish triggers
 * (f->by_event, f->by_upstream): rebuild them if stale, mark them stale
 * (a flow's triggers changed), free them. */
void fsm__trig_index_rebuild(struct fsm *f);
void fsm__trig_index_stale(struct fsm *f);
void fsm__trig_index_clear(struct fsm *f);

#endif
