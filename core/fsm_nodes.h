/* fsm_nodes.h - inside the state machine: the node commands (fsm_nodes.c),
 * which apply (fsm.c) dispatches (core/README.md, "Layers"). */
#ifndef FLOWD_CORE_FSM_NODES_H
#define FLOWD_CORE_FSM_NODES_H

#include "fsm_changes.h"

/* node_up: register a node, or a new boot of it. */
void fsm__apply_node_up(struct apply_ctx *c, json_t *cmd);
/* node_alive (alive true), node_down (alive false). */
void fsm__apply_node_liveness(struct apply_ctx *c, json_t *cmd, bool alive);
/* node_admit (admit true), node_remove (admit false). */
void fsm__apply_node_membership(struct apply_ctx *c, json_t *cmd,
				bool admit);

#endif
