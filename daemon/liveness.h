/* liveness.h - this node's registration (node_up, once per boot) and
 * heartbeats (node_alive), and, on the leader, marking nodes that went
 * silent down (node_down). Loop thread only. */
#ifndef FLOWD_DAEMON_LIVENESS_H
#define FLOWD_DAEMON_LIVENESS_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "consensus/consensus.h"
#include "core/fsm.h"
#include "daemon/clock.h"
#include "daemon/config.h"
#include "daemon/forward.h"

/* How often an unregistered node tries to register. */
#define LIVENESS_REGISTER_MS 200
/* Nodes the leader keeps track of. */
#define LIVENESS_MAX_NODES 64

struct liveness_config {
	uv_loop_t *loop;                  /* borrowed: the timers */
	const struct flowd_config *cfg;   /* borrowed: node id, api address,
	                                   * capacity, [cluster] timings */
	uint64_t boot;                    /* this process's boot id */
	const struct fsm *fsm;            /* borrowed: the nodes */
	struct flowd_clock clock;         /* the commands' ts */
	struct flowd_clock mono;          /* when a node was heard: the
	                                   * loop's time (uv_now) in main.c */
	struct forward_proposer proposer; /* where the commands go */
};

struct liveness;

/* Returns NULL when out of memory. */
struct liveness *liveness_new(const struct liveness_config *c);

/* Start the timers: registration every LIVENESS_REGISTER_MS until it
 * commits, and in a cluster of more than one node the heartbeat every
 * cluster.node_heartbeat_ms. */
void liveness_start(struct liveness *l);

/* The role as consensus last reported it: a new leader gives every node a
 * full cluster.node_timeout_ms before judging it. */
void liveness_role_set(struct liveness *l, enum consensus_role role);

/* Try to register now (this node just became the leader). */
void liveness_register(struct liveness *l);

/* Has this boot's node_up committed? */
bool liveness_registered(const struct liveness *l);

/* One heartbeat round (what the heartbeat timer runs): say "alive"; on the
 * leader, propose node_down for each live node silent for
 * cluster.node_timeout_ms (at most once per timeout). */
void liveness_beat(struct liveness *l);

/* fsm hook: node_up or node_alive of `node` applied. */
void liveness_hook_node_heard(struct liveness *l, uint64_t node);

/* Shutting down: the timers stop, nothing is proposed. */
void liveness_stop(struct liveness *l);

/* Close the timers; the memory goes in the last close callback. */
void liveness_close(struct liveness *l);

#endif
