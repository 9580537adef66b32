/* internal.h - the consensus object and the helpers shared by node.c, fsm.c
 * and propose.c. Not for use outside consensus/. */
#ifndef FLOWD_CONSENSUS_INTERNAL_H
#define FLOWD_CONSENSUS_INTERNAL_H

#include <raft.h>
#include <raft/uv.h>

#include "consensus/consensus.h"

/* How long consensus_close waits for in-flight applies before it closes raft
 * anyway (and risks the 0.15 double-truncate crash, dependencies.md §0.3). */
#define CONSENSUS__DRAIN_MAX_MS 10000
/* Poll period of that wait. */
#define CONSENSUS__DRAIN_POLL_MS 5
/* How long close waits for the leadership transfer it started: the target
 * raft picks may itself be going away (a whole cluster stopping one node
 * after the other), and close must not wait on it forever. */
#define CONSENSUS__TRANSFER_MAX_MS 3000

/* Where consensus_close is. Moves forward only. */
enum consensus__phase {
	CONSENSUS__RUNNING = 0,
	CONSENSUS__DRAINING,     /* refusing proposals, waiting for applies */
	CONSENSUS__TRANSFERRING, /* raft_transfer issued, waiting for its cb */
	CONSENSUS__RAFT_CLOSING, /* raft_close issued, waiting for its cb */
	CONSENSUS__HANDLES_CLOSING, /* raft gone; own timers and requests */
};

struct consensus {
	uv_loop_t *loop;                /* borrowed */
	struct raft_uv_transport transport;
	struct raft_io io;
	struct raft_fsm raft_fsm;       /* the adapter raft calls (fsm.c) */
	struct raft raft;
	struct consensus_fsm fsm;       /* the user's callbacks (copied) */
	consensus_role_cb role_cb;
	void *role_arg;

	/* Role polling (0.15 has no state callback). */
	uv_timer_t role_timer;
	unsigned role_poll_ms;
	enum consensus_role last_role;
	uint64_t last_leader;
	uint64_t last_term;

	/* Shutdown. */
	enum consensus__phase phase;
	uv_timer_t close_timer;         /* drain poll */
	uint64_t close_started;         /* uv_now() when close began */
	struct raft_transfer transfer;
	void (*done)(void *arg);
	void *done_arg;
	int raft_closed;                /* raft_close cb fired */
	unsigned handles_open;          /* own uv handles not yet closed */

	/* Requests. */
	void (*proposed)(void *arg, double seconds);
	void *proposed_arg;
	unsigned inflight;              /* raft_apply/raft_barrier pending */
	unsigned live_requests;         /* request structs not yet freed */

	/* Snapshot bookkeeping (fsm.c). */
	int snapshot_failing;           /* user snapshot failed; logged once */
	void *snapshot_job;             /* the user's pending snapshot, or NULL */
	uint64_t last_apply_index;

	char errmsg[RAFT_ERRMSG_BUF_SIZE];
};

/* Fill c->raft_fsm with the adapter that calls c->fsm (fsm.c). */
void consensus__fsm_init(struct consensus *c);

/* Called when a request struct is freed; finishes a close that waited on it
 * (node.c). */
void consensus__request_freed(struct consensus *c);

/* What every request shares (pending.c): embedded in the request struct,
 * whose heap block is `owner`. */
struct consensus__pending {
	struct consensus *c;
	consensus_done_cb cb;
	void *arg;
	void *owner;               /* freed by consensus__pending_free */
	uv_timer_t deadline;
	int has_deadline;          /* deadline was uv_timer_init'ed */
	int reported;              /* cb already called */
};

void consensus__pending_init(struct consensus__pending *p,
			     struct consensus *c, consensus_done_cb cb,
			     void *arg, void *owner);
/* raft accepted the request: count it in flight, arm the deadline (0 =
 * none; when it passes, cb gets CONSENSUS_TIMEOUT, or SHUTDOWN if closing). */
void consensus__pending_arm(struct consensus__pending *p, unsigned timeout_ms);
/* raft is done: stop the deadline and call cb unless it already was.
 * Returns 1 if cb was called now. */
int consensus__pending_report(struct consensus__pending *p, int code,
			      uint64_t index, void *result);
/* Free the owner once the deadline timer is closed. */
void consensus__pending_free(struct consensus__pending *p);

/* printf into c->errmsg. */
void consensus__errorf(struct consensus *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* A raft call failed with rv: errmsg = "<what>: <raft_errmsg or strerror>". */
void consensus__raft_error(struct consensus *c, const char *what, int rv);

#endif
