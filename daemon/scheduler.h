/* scheduler.h - the leader's cron: which schedule ticks are due, proposed
 * as `fire` commands (docs/triggers.md). The decisions themselves are
 * core/schedule.h; this keeps the heap of next ticks, the timer and the
 * proposals in flight. Loop thread only. */
#ifndef FLOWD_DAEMON_SCHEDULER_H
#define FLOWD_DAEMON_SCHEDULER_H

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

#include "consensus/consensus.h"
#include "core/fsm.h"
#include "daemon/clock.h"
#include "daemon/config.h"
#include "daemon/forward.h"

struct scheduler_config {
	uv_loop_t *loop;                   /* borrowed: the timer */
	const struct flowd_config *cfg;    /* borrowed: [scheduler], limits */
	struct fsm *fsm;                   /* borrowed: flows and cursors */
	struct flowd_clock clock;          /* ticks are wall-clock instants */
	struct forward_proposer proposer;  /* where fire commands go */
};

struct scheduler;

/* Returns NULL when out of memory. */
struct scheduler *scheduler_new(const struct scheduler_config *c);

/* fsm hook: a flow's schedules changed (deployed, undeployed, paused, a
 * tick decided): its entries are recomputed soon. */
void scheduler_hook_changed(struct scheduler *s, struct fsm_flow *fl);

/* Recompute every schedule (after a restore). NULL is ignored. */
void scheduler_rebuild(struct scheduler *s);

/* The role as consensus last reported it: only the leader fires; a new
 * leader recomputes every schedule. */
void scheduler_role_set(struct scheduler *s, enum consensus_role role);

/* Shutting down: nothing is proposed any more. */
void scheduler_stop(struct scheduler *s);

/* Ticks this node fired as leader (changes when the statistics do). */
uint64_t scheduler_ticks_fired(const struct scheduler *s);

/* {"schedules", "ticks_fired", "fire_lag_ms": {samples, p50, p99, max}}:
 * the ticks this node fired as leader, commit minus nominal time, over the
 * last 65,536 (GET /v1/cluster "scheduler"). New reference. */
json_t *scheduler_stats_json(const struct scheduler *s);

/* Close the timer; the memory goes in its close callback (run the loop).
 * Fire proposals still in flight must have completed. */
void scheduler_close(struct scheduler *s);

#endif
