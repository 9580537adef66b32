/* fsm_flows.h - inside the state machine: what flows and their versions
 * (fsm_flows.c) give the layers above them: the life cycle, apply,
 * snapshot (core/README.md, "Layers"). */
#ifndef FLOWD_CORE_FSM_FLOWS_H
#define FLOWD_CORE_FSM_FLOWS_H

#include "fsm_changes.h"

/* Version k of fl lets its spec go when it is neither the newest version
 * nor used by a run in memory (PostgreSQL's flow_versions serves it). */
void fsm__version_maybe_drop(struct fsm *f, struct fsm_flow *fl, unsigned k);
/* Free a flow, its versions and its trigger state (not in the map). */
void fsm__flow_free(struct fsm_flow *fl);

/* The deploy and undeploy commands (fsm.c dispatches). */
void fsm__apply_deploy(struct apply_ctx *c, json_t *cmd);
void fsm__apply_undeploy(struct apply_ctx *c, json_t *cmd);

#endif
