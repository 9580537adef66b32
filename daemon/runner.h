/* runner.h - attempts the state machine placed on this node become
 * executor processes; their outcomes go to outcomes.c. Loop thread only. */
#ifndef FLOWD_DAEMON_RUNNER_H
#define FLOWD_DAEMON_RUNNER_H

#include <stdint.h>

#include "core/fsm.h"
#include "daemon/config.h"
#include "daemon/executor.h"
#include "daemon/outcomes.h"
#include "daemon/tail.h"

struct runner_config {
	const struct flowd_config *cfg; /* borrowed: node id, log limits */
	uint64_t boot;                  /* this process's boot id */
	struct fsm *fsm;                /* borrowed: the runs */
	struct executor *exec;          /* borrowed; its callback must be
	                                 * runner_exec_done */
	struct outcomes *outcomes;      /* borrowed: where outcomes go */
	struct tails *tails;            /* borrowed, may be NULL: each
	                                 * attempt's output as it comes
	                                 * (followed logs) */
	/* Ask for an after-apply pass (the pump), which calls
	 * runner_run_queued(). */
	void (*kick)(void *arg);
	void *kick_arg;
};

struct runner;

/* Returns NULL when out of memory. */
struct runner *runner_new(const struct runner_config *c);

/* fsm hooks (apply, so nothing but queueing happens here): an attempt
 * placed on, or to be stopped on, this node in this life is queued, and a
 * pass asked for. Others are ignored. */
void runner_hook_placed(struct runner *r, struct fsm_run *run,
			struct fsm_step *step, struct fsm_attempt *a);
void runner_hook_stop(struct runner *r, struct fsm_run *run,
		      struct fsm_step *step, struct fsm_attempt *a);

/* Start and stop what was queued (after apply, never inside it). */
void runner_run_queued(struct runner *r);

/* The executor's callback (executor_done_cb): the outcome of an attempt
 * goes to outcomes.c. */
void runner_exec_done(struct executor *e, void *ctx,
		      const struct executor_result *res);

/* Shutting down: nothing is started any more, and outcomes of processes
 * the executor kills are not reported (their attempts are marked lost by
 * the next node_up). */
void runner_stop(struct runner *r);

/* Free what is queued and the runner. */
void runner_free(struct runner *r);

#endif
