/* outcomes.h - the outcomes of this node's attempts, as task_finish
 * commands kept and sent again until they commit, in batches the leader
 * can always take (docs/design.md, "Results are fenced, and re-sent until
 * committed"). Loop thread only. */
#ifndef FLOWD_DAEMON_OUTCOMES_H
#define FLOWD_DAEMON_OUTCOMES_H

#include <stddef.h>
#include <uv.h>

#include "core/fsm.h"
#include "daemon/clock.h"
#include "daemon/config.h"
#include "daemon/forward.h"

/* Outcomes that queue up leave together in one `batch` command of at most
 * this many, and at most outcomes_budget() bytes. */
#define OUTCOMES_BATCH_MAX 256
/* Commands in flight at once. */
#define OUTCOMES_INFLIGHT_MAX 2
/* Not committed (no answer, 5xx, no leader, timeout): sent again after. */
#define OUTCOMES_RETRY_MS 100
/* Refused even without its logs: sent again after. */
#define OUTCOMES_REFUSED_RETRY_MS 1000

struct outcomes_config {
	uv_loop_t *loop;                   /* borrowed: the retry timer */
	const struct flowd_config *cfg;    /* borrowed: limits.max_body_bytes */
	struct flowd_clock clock;          /* the commands' ts */
	struct forward_proposer proposer;  /* where the commands go */
};

struct outcomes;

/* Returns NULL when out of memory. */
struct outcomes *outcomes_new(const struct outcomes_config *c);

/* The largest command sent: limits.max_body_bytes less 1/16 of it. */
size_t outcomes_budget(const struct outcomes *o);

/* Keep `fin` (borrowed; copied) until its task_finish commits, and send
 * what can be sent. Output that cannot be encoded is replaced by a note
 * rather than losing the outcome; output over the budget is cut. */
void outcomes_queue(struct outcomes *o, const struct fsm_finish *fin);

/* Send what waits now (this node just became the leader). */
void outcomes_send(struct outcomes *o);

/* Outcomes waiting (queued, not in flight). */
size_t outcomes_waiting(const struct outcomes *o);

/* Shutting down: nothing is sent any more; the retry timer stops. */
void outcomes_stop(struct outcomes *o);

/* Free what waits and close the timer; the memory goes in its close
 * callback (run the loop). Commands in flight must have completed. */
void outcomes_close(struct outcomes *o);

#endif
