/* pump.h - what follows each batch of applies: the changed rows go to
 * PostgreSQL (the applier, which the pump owns), the read view and the
 * runner get their turn, and the leader's retry timer is re-armed; and the
 * state machine's side of consensus (apply, snapshot, restore), with
 * snapshots postponed until PostgreSQL holds every task log. Loop thread
 * only, except where a function says otherwise. */
#ifndef FLOWD_DAEMON_PUMP_H
#define FLOWD_DAEMON_PUMP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "consensus/consensus.h"
#include "core/fsm.h"
#include "daemon/clock.h"
#include "daemon/forward.h"
#include "storage/storage.h"

struct pump_config {
	uv_loop_t *loop;                   /* borrowed */
	struct fsm *fsm;                   /* borrowed */
	const struct storage_applier_config *applier; /* for the applier the
	                                    * pump starts; copied */
	uint64_t pg_index;                 /* raft_meta.applied_index at start */
	bool pg_index_known;               /* false: PostgreSQL was unreachable */
	struct flowd_clock clock;          /* the commands' ts */
	struct forward_proposer proposer;  /* the leader's wake and nop */
	/* Each after-apply pass, once the rows are queued for PostgreSQL:
	 * main.c publishes the read view and runs the runner's queue. */
	void (*after_apply)(void *arg);
	void *after_apply_arg;
	bool fork_snapshots;               /* raft.snapshot_fork */
	struct node_metrics *metrics;      /* borrowed, may be NULL: snapshots
	                                    * taken and their duration */
};

struct pump;
struct node_metrics;

/* Start the applier's thread and set the handles up. Returns 0 and *out,
 * or -1 with errmsg. */
int pump_new(const struct pump_config *c, struct pump **out, char *errmsg,
	     size_t errlen);

/* The applier (borrowed until pump_close), for its numbers. */
struct storage_applier *pump_applier(struct pump *p);

/* Ask for an after-apply pass (an idle callback: once the loop has nothing
 * else to do). */
void pump_kick(struct pump *p);

/* consensus_fsm: apply one committed entry (and ask for a pass); serialize
 * the state, or CONSENSUS_BUSY while PostgreSQL lacks task logs pushed so
 * far; replace the state with a snapshot (and write it all to PostgreSQL
 * again when PostgreSQL may lack some of it). */
int pump_apply(struct pump *p, uint64_t index, const void *buf, size_t len,
	       void **result);
int pump_snapshot(struct pump *p, void **buf, size_t *len);
/* With fork_snapshots, pump_snapshot() forks a child that serializes the
 * state and returns CONSENSUS_PENDING with *buf its job:
 * pump_snapshot_collect reads the bytes on a worker thread (any `arg`),
 * pump_snapshot_done reaps the child and frees the job on the loop. */
int pump_snapshot_collect(void *arg, void *job, void **buf, size_t *len);
void pump_snapshot_done(struct pump *p, void *job);
int pump_restore(struct pump *p, const void *buf, size_t len);

/* The role as consensus last reported it (only the leader proposes wake and
 * nop). */
void pump_role_set(struct pump *p, enum consensus_role role);

/* Shutting down: the retry timer and the pending pass stop, nothing is
 * proposed. Passes asked for later still run (entries applied while raft
 * drains reach PostgreSQL and the view). */
void pump_stop(struct pump *p);

/* Queue the rows changed since the last pass for PostgreSQL, then stop the
 * applier (waiting at most drain_ms for it to write them) and close the
 * handles; the memory goes in the last close callback (run the loop). */
void pump_close(struct pump *p, unsigned drain_ms);

#endif
