/* fsm.h - the replicated state machine: flows and their versions, runs, steps
 * and attempts, nodes. Commands are applied in log order on every node,
 * deterministically: no clock, no randomness, no I/O. Time enters only as the
 * `ts` a command carries. Apply never fails: a business error is a result.
 *
 * What the state machine decides by itself. Task placement is a pure function
 * of committed state: when a step becomes ready (its dependencies succeeded,
 * or its retry came due), apply places its next attempt on the live node with
 * the most free capacity (ties: the lowest id). No separate "start task"
 * command is needed, so a step's successor starts one commit after the step
 * finished. The node named in the attempt starts the process when it applies
 * the entry and the attempt's boot id is its own (see fsm_hooks); a replay
 * after a restart therefore never starts an old attempt again.
 *
 * Commands are JSON objects {"v":1, "op":..., "ts":ms, ...}, encoded by the
 * fsm_cmd_* builders below; their fields are documented beside each builder.
 */
#ifndef FLOWD_CORE_FSM_H
#define FLOWD_CORE_FSM_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "idem.h"
#include "map.h"
#include "spec.h"

#define FSM_CMD_VERSION 1

enum fsm_run_status {
	FSM_RUN_QUEUED,
	FSM_RUN_RUNNING,
	FSM_RUN_SUCCEEDED,
	FSM_RUN_FAILED,
	FSM_RUN_CANCELLED,
};

enum fsm_step_status {
	FSM_STEP_PENDING,     /* waiting for dependencies */
	FSM_STEP_READY,       /* dependencies met, waiting for capacity */
	FSM_STEP_RUNNING,
	FSM_STEP_RETRY_WAIT,  /* failed, next attempt at due_ms */
	FSM_STEP_SUCCEEDED,
	FSM_STEP_FAILED,
	FSM_STEP_CANCELLED,
	FSM_STEP_SKIPPED,     /* never ran: the run ended first */
	FSM_STEP_REUSED,      /* a resumed run took the origin run's success
	                       * (reused_seq, reused_attempt): not run again */
};

enum fsm_attempt_status {
	FSM_ATTEMPT_RUNNING,
	FSM_ATTEMPT_SUCCEEDED,
	FSM_ATTEMPT_FAILED,
	FSM_ATTEMPT_LOST,      /* its node restarted or died while it ran */
	FSM_ATTEMPT_CANCELLED, /* stopped because the run ended */
};

struct fsm_attempt {
	unsigned n;                 /* 1-based */
	uint64_t node;
	uint64_t boot;              /* the node's boot id when placed */
	enum fsm_attempt_status status;
	bool stopping;              /* the run ended: its process is being stopped */
	int64_t started_ms;
	int64_t finished_ms;        /* 0 while running */
	int exit_code;              /* -1 when none */
	int term_signal;            /* 0 when none */
	char *reason;               /* owned; NULL while running */
	bool dirty;                 /* changed by the entry being applied */
};

struct fsm_step {
	enum fsm_step_status status;
	struct fsm_attempt *attempts; /* owned array */
	unsigned n_attempts;
	unsigned deps_left;         /* dependencies not yet succeeded */
	int64_t due_ms;             /* RETRY_WAIT: when the next attempt is due */
	int64_t started_ms;
	int64_t finished_ms;
	bool dirty;
	uint8_t told;               /* the status last reported (changed) */
	unsigned told_attempts;     /* and its attempts then */
	uint64_t reused_seq;        /* REUSED: the run whose attempt it took */
	unsigned reused_attempt;    /* REUSED: that attempt's number */
	unsigned attempt_base;      /* attempts before the last redrive: the
	                             * retry policy counts those after it */
	struct fsm_run *run;        /* back pointer (borrowed) */
	unsigned index;             /* in run->steps and spec->steps */
	struct fsm_step *ready_next;/* in fsm.ready (FIFO) while READY */
	struct fsm_step *wait_next; /* in fsm.waiting while RETRY_WAIT */
};

struct fsm_flow_version {
	unsigned version;
	int64_t created_ms;
	struct flow_spec *spec;     /* owned; NULL once neither the newest
	                             * version nor used by a run in memory
	                             * (PostgreSQL's flow_versions has it) */
	unsigned runs;              /* runs in memory of this version */
	uint64_t index;             /* the entry that deployed it (after a
	                             * restore: the snapshot's) */
};

/* ---- Triggers (core/trigger_*.c, docs/triggers.md) ---- */

enum fsm_fire_outcome {
	FSM_FIRE_FIRED,     /* a run was started */
	FSM_FIRE_SKIPPED,   /* paused, or overlap "skip" */
	FSM_FIRE_MISSED,    /* no leader in time, or outside the catch-up */
	FSM_FIRE_BUFFERED,  /* waiting for an active run to end */
	FSM_FIRE_DROPPED,   /* the overlap buffer was full */
};
#define FSM_FIRE_OUTCOMES 5

/* Why a tick was not simply fired (the detail goes to PostgreSQL). */
enum fsm_fire_reason {
	FSM_WHY_NONE,
	FSM_WHY_PAUSED,
	FSM_WHY_OVERLAP,        /* skip, buffer or drop under the policy */
	FSM_WHY_PARAMS,         /* its parameters do not resolve */
	FSM_WHY_LATE,           /* no leader in time / outside catch-up */
	FSM_WHY_FROM_BUFFER,    /* started once the flow had room */
	FSM_WHY_UNDEPLOYED,
};

/* One decision about a tick (or, for missed ticks, a range of them);
 * small, since every schedule keeps its last few in memory. */
struct fsm_fire {
	int64_t nominal;            /* seconds since the epoch (the last
	                             * tick of a missed range) */
	int64_t at_ms;              /* when it was decided (command ts) */
	uint64_t run_seq;           /* the run started, 0 if none */
	uint32_t count;             /* ticks this record covers (missed) */
	uint8_t outcome;            /* enum fsm_fire_outcome */
	uint8_t reason;             /* enum fsm_fire_reason */
};

#define FSM_FIRES_KEPT 5

struct fsm_schedule_state {
	char *key;                  /* owned: the schedule's identity
	                             * (expression, zone, DST options) */
	int64_t cursor;             /* the last tick decided: only later
	                             * ticks may fire (seconds) */
	uint64_t counts[FSM_FIRE_OUTCOMES];
	struct fsm_fire last[FSM_FIRES_KEPT]; /* ring, newest at head-1 */
	unsigned n_last, head;
};

/* A trigger waiting for room under max_active_runs (overlap buffer_*). */
struct fsm_buffered {
	json_t *params;             /* owned: as given */
	json_t *trigger;            /* owned */
	char *sched_key;            /* owned: the schedule it counts for (by
	                             * identity: indexes move on redeploy), or
	                             * NULL */
	struct fsm_buffered *next;
};

struct fsm_flow {
	char *name;                 /* owned */
	struct fsm_flow_version *versions; /* owned array; versions[i].version == i+1 */
	unsigned n_versions;
	unsigned current;           /* 0 = undeployed */
	int64_t created_ms;
	int64_t updated_ms;
	bool paused;                /* schedule ticks are skipped */
	struct fsm_schedule_state *sched; /* owned, one per schedule of the
	                             * current version */
	unsigned n_sched;
	json_t *collect;            /* owned array, one per event trigger of
	                             * the current version: the events an
	                             * all-of trigger has collected,
	                             * {name: {"id","payload","ts"}} */
	struct fsm_buffered *buf_head, *buf_tail;
	unsigned n_buffered;
	unsigned active;            /* runs not yet settled */
	bool view_dirty;            /* in fsm.view_flows */
	bool told;                  /* reported (changed) at least once */
	bool told_paused;           /* what was reported last */
	unsigned told_current;
	unsigned view_slot;         /* the read view's slot + 1 (core/view.c) */
};

struct fsm_run {
	char *id;                   /* owned */
	uint64_t seq;               /* creation order, 1-based */
	struct fsm_flow *flow;      /* borrowed */
	unsigned version;
	const struct flow_spec *spec; /* borrowed from the flow version */
	json_t *params;             /* owned: resolved parameters */
	char *idempotency_key;      /* owned, may be NULL */
	enum fsm_run_status status;
	char *reason;               /* owned, may be NULL */
	int64_t created_ms;
	int64_t started_ms;         /* 0 = not yet */
	int64_t finished_ms;        /* 0 = not yet */
	struct fsm_step *steps;     /* owned array, spec->n_steps long */
	unsigned active_attempts;   /* attempts RUNNING */
	bool dirty;
	uint8_t told;               /* the status last reported (changed);
	                             * FSM_TOLD_NONE before the first */
	uint64_t touched_at;        /* index of the last entry that touched it */
	bool settled;               /* finished, nothing running: in the FIFO */
	struct fsm_run *settled_next;
	char *snap_text;            /* owned: its snapshot text, until it changes */
	size_t snap_len;
	json_t *trigger;            /* owned: what started it,
	                             * {"type":"manual"|"schedule"|...} */
	bool end_seen;              /* on-finish triggers have seen its end */
	json_t *tags;               /* owned: user tags, sorted, no
	                             * duplicates; NULL when it never had any */
	char *origin_id;            /* owned: the run it resumes, or NULL */
	unsigned redrive_count;     /* times it was redriven */
	char *redrive_key;          /* owned: the last redrive's idempotency
	                             * key, or NULL */
	bool meta_dirty;            /* tags, origin or redrives changed: its
	                             * run_meta row is due (fsm_rows.c) */
	bool view_dirty;            /* its seq is in fsm.view_seqs */
};

/* A remembered event id (POST /v1/events de-duplication). */
struct fsm_event {
	char *id;                   /* owned */
	int64_t ts;                 /* when it was accepted (ms) */
	json_t *result;             /* owned: the answer given, replayed for
	                             * a duplicate */
	struct fsm_event *next;     /* FIFO by acceptance */
};

struct fsm_node {
	uint64_t id;
	uint64_t boot;
	unsigned capacity;
	unsigned running;           /* attempts RUNNING on it */
	bool live;
	bool removed;               /* left the Raft configuration: no work */
	char api_address[64];       /* where its REST API listens ("" if unknown) */
};

/* What happened in an entry, for counters (metrics): reported once per
 * event by the node applying it (every node applies every entry). */
enum fsm_count_kind {
	FSM_COUNT_RUN_CREATED,      /* run */
	FSM_COUNT_RUN_ENDED,        /* run: status, created_ms, finished_ms */
	FSM_COUNT_ATTEMPT_ENDED,    /* run, step, attempt: its final status
				     * (a timeout: FAILED with reason
				     * "timeout") */
	FSM_COUNT_RETRY,            /* run, step: a failed attempt is retried */
	FSM_COUNT_TICK,             /* flow, schedule, outcome, n, nominal_s,
				     * ts_ms: a schedule's tick decided */
	FSM_COUNT_EVENT,            /* event, duplicate: an event posted */
};

struct fsm_count {
	enum fsm_count_kind kind;
	uint64_t index;             /* the entry's */
	const struct fsm_run *run;
	const struct fsm_step *step;
	const struct fsm_attempt *attempt;
	const struct fsm_flow *flow;
	int schedule;               /* index in the flow's current spec */
	enum fsm_fire_outcome outcome;
	uint64_t n;                 /* ticks: how many (missed come in bulk) */
	int64_t nominal_s;          /* ticks: the tick's nominal time */
	int64_t ts_ms;              /* the entry's time */
	const char *event;          /* events: its name */
	bool duplicate;             /* events: an id seen before */
};

/* A run's or a step's status changed (change streams, GET /v1/watch):
 * reported after each entry, for the runs it touched in the order it
 * touched them, by comparing with what was reported last (the `told`
 * fields), so every node reports the same changes of the same entry. A run
 * reports its own change before its steps' unless it ended. A step's
 * attempt that ended and was followed by the next one within the same
 * entry is reported too (as retry_wait), before the next one. A restored
 * snapshot reports nothing (the daemon tells watchers to start over). */
enum fsm_change_kind {
	FSM_CHANGE_RUN,             /* run->status */
	FSM_CHANGE_STEP,            /* step->status or a new attempt */
	FSM_CHANGE_FLOW,            /* a flow deployed (a new current
	                             * version), undeployed, paused or
	                             * unpaused; before the runs' changes */
};

#define FSM_TOLD_NONE 0xff

struct fsm_change {
	enum fsm_change_kind kind;
	uint64_t index;             /* the entry's */
	int64_t ts_ms;              /* the entry's time */
	const struct fsm_run *run;  /* NULL for FSM_CHANGE_FLOW */
	const struct fsm_step *step; /* FSM_CHANGE_STEP */
	const struct fsm_flow *flow; /* FSM_CHANGE_FLOW */
	int status;                 /* the status to report: the run's, or
	                             * the step's (an attempt that failed and
	                             * was retried at once in the same entry
	                             * reports FSM_STEP_RETRY_WAIT) */
	const struct fsm_attempt *attempt; /* the step's attempt it is about,
	                             * or NULL (none yet) */
};

/* Reports upward, called inside apply on the loop thread; must not block. */
struct fsm_hooks {
	void *arg;
	/* An attempt was placed (on any node). */
	void (*attempt_placed)(void *arg, struct fsm_run *run,
			       struct fsm_step *step, struct fsm_attempt *a);
	/* A running attempt must be stopped (the run ended, or its node was
	 * marked down). */
	void (*attempt_stop)(void *arg, struct fsm_run *run,
			     struct fsm_step *step, struct fsm_attempt *a);
	/* A node said it is alive (node_up, node_alive). */
	void (*node_heard)(void *arg, uint64_t node);
	/* A flow's schedules changed (deployed, undeployed, paused, a tick
	 * decided): the leader's scheduler looks again. */
	void (*schedules_changed)(void *arg, struct fsm_flow *fl);
	/* Something countable happened (may be NULL). */
	void (*count)(void *arg, const struct fsm_count *c);
	/* A run or a step changed state (may be NULL). */
	void (*changed)(void *arg, const struct fsm_change *c);
};

/* The outcome of one applied command, valid until the next apply. */
struct fsm_result {
	struct flowd_error err;	    /* err.errc FLOWD_OK: the command did what
				     * it asked (then `created` says whether it
				     * made something new: a run, a flow
				     * version, an event); else why not */
	struct fsm_run *run;        /* run_create, run_cancel; NULL when the run
	                             * is no longer in memory (then run_id) */
	const char *run_id;         /* run_create with a known key, or evicted */
	char evicted_id[32];
	struct fsm_flow *flow;      /* deploy, undeploy */
	bool created;		    /* a new run, flow version or event (not a
				     * known idempotency key or event id) */
	json_t *body;               /* owned by the fsm until the next apply:
	                             * event, fire, pause answers */
};

/* A growable text buffer. */
struct fsm_text {
	char *p;
	size_t n, cap;
};

struct fsm {
	struct map flows;           /* name -> struct fsm_flow* (owned) */
	struct map runs;            /* id -> struct fsm_run* (owned) */
	struct idem idem;           /* idempotency keys -> the run they made,
	                             * kept idem_ttl_ms and idem_max at most
	                             * (carried by run_create commands) */
	int64_t idem_ttl_ms;
	uint64_t idem_max;
	char idem_id[32];           /* fsm_idem_lookup's answer */
	/* Runs by seq: run_list[seq - run_lo] for run_lo <= seq <= n_runs, NULL
	 * once evicted; the window's front moves up as the oldest runs leave
	 * memory (fsm_run_at). */
	struct fsm_run **run_list;
	uint64_t run_lo;
	size_t run_empty;           /* run_list[0..run_empty) are known NULL
	                             * (fsm__run_list_trim resumes there) */
	size_t n_runs, cap_runs;    /* n_runs: the highest seq made */
	uint64_t next_seq;
	struct fsm_node *nodes;     /* owned array sorted by id */
	unsigned n_nodes;
	struct fsm_step *ready_head, *ready_tail; /* READY steps, FIFO */
	size_t n_ready;             /* how many */
	struct fsm_step *waiting;   /* RETRY_WAIT steps (unordered) */
	uint64_t applied_index;
	struct fsm_hooks hooks;
	struct fsm_result result;
	/* Rows changed since the last fsm_take_records(). */
	json_t *pending;            /* flow, flow_version and log row images */
	struct fsm_text rows;       /* run, step and attempt row images, as
	                             * comma-separated JSON text (the hot path:
	                             * about 5x cheaper than jansson objects) */
	bool pending_history;       /* `pending` holds rows a restore could not
	                             * rebuild: task logs, evicted runs */
	/* Retention: settled runs (finished, nothing running) in the order they
	 * settled; beyond `retain` (carried by run_create commands; 0 = keep
	 * all) the oldest leave memory. */
	struct fsm_run *settled_head, *settled_tail;
	size_t n_settled;
	uint64_t retain;
	struct fsm_run **dirty;     /* runs with a changed run/step/attempt row */
	size_t n_dirty, cap_dirty;
	struct flowd_limits limits; /* permissive: apply never rejects for limits */
	struct map events;          /* event id -> struct fsm_event* (owned) */
	struct fsm_event *events_head, *events_tail;
	size_t n_events;
	/* Indexes of the current versions' triggers, rebuilt when a flow's
	 * triggers change: event name / upstream flow -> json array of
	 * ["flow", trigger index] sorted, so that every node walks them in
	 * the same order. */
	json_t *by_event, *by_upstream;
	bool trigger_index_stale;
	/* What the read view (core/view.c) has not yet taken: the runs (by
	 * seq, evicted ones included) and flows changed since it last looked,
	 * or, after a restore, everything (view_reset). */
	uint64_t *view_seqs;
	size_t n_view_seqs, cap_view_seqs;
	struct fsm_flow **view_flows;
	size_t n_view_flows, cap_view_flows;
	bool view_reset;
};

void fsm_init(struct fsm *f, const struct fsm_hooks *hooks);
void fsm_close(struct fsm *f);

/* Apply one command (`buf` borrowed) committed at `index`. Always succeeds;
 * a malformed command is logged and ignored (result FLOWD_E_INVALID). Returns a
 * pointer to f->result. */
struct fsm_result *fsm_apply(struct fsm *f, uint64_t index, const void *buf,
			     size_t len);

/* The PostgreSQL row images of every row changed since the last call, as of
 * the last applied entry (stored in *index): a malloc'd JSON array text the
 * caller owns, or NULL when nothing changed. Rows are full images, so a run
 * that changed in many entries between two calls is written once; the
 * applier records *index as applied. Called after a batch of applies (and
 * before a snapshot), never inside one. */
char *fsm_take_records(struct fsm *f, uint64_t *index);

/* Mark every row of the state changed, so that the next fsm_take_records()
 * returns the whole state: used after a restore when PostgreSQL may not hold
 * everything up to the snapshot. */
void fsm_mark_all_dirty(struct fsm *f);

/* Serialize the whole state: returns a malloc'd buffer (caller frees). */
int fsm_snapshot(struct fsm *f, char **buf, size_t *len);
/* Replace the state with a snapshot. Returns 0, or -1 (state unchanged). */
int fsm_restore(struct fsm *f, const void *buf, size_t len);

/* Old flow versions' specs that no run in memory uses leave memory once
 * PostgreSQL holds their rows (`db_index`: the entries it holds): GET
 * .../versions reads them there. The newest version's spec always stays.
 * Memory only: nothing apply decides depends on it. */
void fsm_release_specs(struct fsm *f, uint64_t db_index);

/* The read view has taken what changed (core/view.c). */
void fsm_view_taken(struct fsm *f);

/* The run with that seq while it is in memory, else NULL. */
static inline struct fsm_run *fsm_run_at(const struct fsm *f, uint64_t seq)
{
	return seq >= f->run_lo && seq <= f->n_runs &&
			       seq - f->run_lo < f->cap_runs
		       ? f->run_list[seq - f->run_lo]
		       : NULL;
}

/* ---- Queries (the loop thread only) ---- */
struct fsm_flow *fsm_flow_get(struct fsm *f, const char *name);
struct fsm_run *fsm_run_get(struct fsm *f, const char *id);
/* Earliest due_ms among RETRY_WAIT steps, or 0 when none. */
int64_t fsm_next_due(struct fsm *f);

const char *fsm_run_status_str(enum fsm_run_status s);
int fsm_run_status_parse(const char *s); /* -1 if unknown */
const char *fsm_step_status_str(enum fsm_step_status s);
const char *fsm_attempt_status_str(enum fsm_attempt_status s);

/* The run id an idempotency key of `flow` maps to (NULL if none); *run is
 * the run when it is still in memory, else NULL. */
/* The same, as of `now_ms`: a key past the retention at that time is no
 * longer there (the next run_create applied drops it). For a writer
 * checking a key before it proposes. */
const char *fsm_idem_lookup_at(struct fsm *f, const char *flow,
			       const char *key, int64_t now_ms,
			       struct fsm_run **run);
const char *fsm_idem_lookup(struct fsm *f, const char *flow, const char *key,
			    struct fsm_run **run);
/* The seq a run id spells in its one form "r-%012" PRIu64, or 0 (NULL,
 * or any other text). Pure; any thread. */
uint64_t fsm_run_seq(const char *id);
/* Was this run id created and since evicted from memory? */
bool fsm_run_evicted(struct fsm *f, const char *id);

/* ---- Command builders: each returns malloc'd JSON text in *out ---- */
/* deploy: the flow name and its normalized spec doc (borrowed). */
int fsm_cmd_deploy(int64_t ts, const char *flow, const json_t *spec_doc,
		   char **out, size_t *len);
int fsm_cmd_undeploy(int64_t ts, const char *flow, char **out, size_t *len);
/* run_create: params (borrowed, may be NULL) as given by the client. */
/* What a run_create carries for the state's retention (limits.*): settled
 * runs kept in memory (0 = all), idempotency keys kept at most, and for at
 * least how long (0 = no bound). */
struct fsm_retention {
	uint64_t runs;
	uint64_t keys;
	uint64_t key_ttl_s;
	/* and the bounds of a run's user tags (0: 50 tags of 128 bytes) */
	unsigned max_tags;
	size_t max_tag_bytes;
};
/* keep: may be NULL (the state's retention is left as it is). tags
 * (borrowed, may be NULL): user tags besides the flow's default ones. */
int fsm_cmd_run_create(int64_t ts, const char *flow, const json_t *params,
		       const char *idempotency_key, const json_t *tags,
		       const struct fsm_retention *keep,
		       char **out, size_t *len);
/* run_tags: add then remove user tags of a run in memory (arrays of
 * strings, borrowed, may be NULL); keep's tag bounds apply. */
int fsm_cmd_run_tags(int64_t ts, const char *run_id, const json_t *add,
		     const json_t *remove, const struct fsm_retention *keep,
		     char **out, size_t *len);
/* run_resume: a new run of the run's flow that reuses the steps that
 * succeeded in it, except from_step (may be NULL: the steps that did not
 * succeed) and what depends on it; of the run's version, or of the
 * flow's current one when `current` (then the reused steps must be there
 * unchanged). key, tags: as for run_create. */
int fsm_cmd_run_resume(int64_t ts, const char *run_id, const char *from_step,
		       bool current, const char *idempotency_key,
		       const json_t *tags, const struct fsm_retention *keep,
		       char **out, size_t *len);
/* run_redrive: restart a failed or cancelled run in place, at most
 * window_s after it ended; a known key (the last redrive's) changes
 * nothing. */
int fsm_cmd_run_redrive(int64_t ts, const char *run_id, unsigned window_s,
			const char *idempotency_key, char **out, size_t *len);

/* run_record: a run of `flow` (its key) that ran elsewhere (flowctl
 * resume --local --record): steps (borrowed) [{"name", "status":
 * succeeded|failed|skipped|reused, "started_ms", "finished_ms",
 * "reused_from": {"run_id", "attempt"}}], one per step of the current
 * version; trigger local_resume of `origin`. */
int fsm_cmd_run_record(int64_t ts, const char *flow, const char *origin,
		       const json_t *params, const json_t *steps,
		       const char *idempotency_key,
		       const struct fsm_retention *keep, char **out,
		       size_t *len);

/* A run's system tags (project:, branch:, flow:, version:, trigger:,
 * origin:), as a new JSON array; `flow` is the flow's key
 * (spec_flow_key). Pure; any thread. */
json_t *fsm_system_tags(const char *flow, unsigned version,
			const json_t *trigger, const char *origin_id);
int fsm_cmd_run_cancel(int64_t ts, const char *run_id, char **out,
		       size_t *len);
/* node_up: a node (re)started with a new boot id; its older attempts are
 * lost. capacity: how many attempts it runs at once. */
int fsm_cmd_node_up(int64_t ts, uint64_t node, uint64_t boot,
		    unsigned capacity, const char *api_address, char **out,
		    size_t *len);
/* node_alive: a node's periodic "I am alive" (it also brings a node that
 * was marked down back). node_down: the leader has not heard from that boot
 * of the node for too long; its running attempts are lost and retried. */
int fsm_cmd_node_alive(int64_t ts, uint64_t node, uint64_t boot, char **out,
		       size_t *len);
int fsm_cmd_node_down(int64_t ts, uint64_t node, uint64_t boot, char **out,
		      size_t *len);
/* node_remove (admit false): the node left the cluster: its attempts are
 * lost and it takes no work until node_admit (admit true) after it is added
 * again (then it registers anew). */
int fsm_cmd_node_remove(int64_t ts, uint64_t node, bool admit, char **out,
			size_t *len);
/* fire: the leader's decisions about schedule ticks, an array `items`
 * (borrowed) of {"flow", "schedule": i, "key": identity, "prev": cursor
 * seen, "nominal": tick (s), "missed": ticks before it not fired,
 * "fire": false to only record them missed, "backfill": true for a
 * backfill tick (no cursor; de-duplicated by its identity)}. An item whose
 * prev is not the cursor any more changes nothing (exactly once).
 * max_buffered: the overlap buffer bound. */
int fsm_cmd_fire(int64_t ts, const json_t *items, unsigned max_buffered,
		 char **out, size_t *len);
/* event: an event (payload borrowed, may be NULL) with its id; starts the
 * flows whose event triggers match. dedupe_s / keep: how long and how many
 * event ids are remembered. */
int fsm_cmd_event(int64_t ts, const char *name, const char *id,
		  const json_t *payload, unsigned dedupe_s, unsigned keep,
		  unsigned max_buffered, char **out, size_t *len);
/* The same for the flows of one project and/or branch only (NULL: any;
 * docs/lifecycle.md). */
int fsm_cmd_event_in(int64_t ts, const char *name, const char *id,
		     const json_t *payload, const char *project,
		     const char *branch, unsigned dedupe_s, unsigned keep,
		     unsigned max_buffered, char **out, size_t *len);
/* pause: stop (true) or resume (false) a flow's schedules. */
int fsm_cmd_pause(int64_t ts, const char *flow, bool paused, char **out,
		  size_t *len);

/* The idempotency key of a backfilled tick: "backfill:" the schedule
 * identity's hash ":" the tick, so repeating a backfill finds its runs even
 * after a redeploy moved the schedule. */
void fsm_backfill_key(const char *sched_key, int64_t nominal, char out[64]);

/* One schedule of GET /v1/flows/{flow}/schedule without its next fire
 * times (the caller adds them): schedule i's expression and zone, its
 * cursor, counters and last fires. Pure; any thread. */
json_t *fsm_schedule_state_json(unsigned i, const struct spec_schedule *sc,
				const struct fsm_schedule_state *st);
const char *fsm_fire_outcome_str(enum fsm_fire_outcome o);

/* batch: several commands (their encoded texts, each a JSON object) in one
 * entry, applied in order within that entry; the result is the last
 * one's. Used for task_finish messages under load (one Raft entry and one
 * request to the leader for many outcomes). Returns malloc'd text. */
int fsm_cmd_batch(int64_t ts, const char *const *cmds, const size_t *lens,
		  size_t n, char **out, size_t *len);

/* wake: retry attempts whose due time is <= ts. */
int fsm_cmd_wake(int64_t ts, char **out, size_t *len);
/* nop: changes nothing (gives raft an entry to apply, e.g. so that it
 * retries a postponed snapshot). */
int fsm_cmd_nop(int64_t ts, char **out, size_t *len);

/* What a command check found wrong (fsm_check.c). */
struct fsm_check {
	char field[64];  /* the field, "" for the whole command */
	const char *why; /* static text */
};

/* Before apply: the envelope (v, op, ts within years 1970..9999) and each
 * known field of the op well-typed and within the bounds PostgreSQL and
 * the state machine hold. Unknown fields are ignored. Returns 0, or -1
 * with *out. Apply makes a failed check the command's result (400
 * invalid_command naming the field), with no effect. */
int fsm_cmd_check(const json_t *cmd, struct fsm_check *out);

/* A command node `node` proposes through another (POST
 * /internal/v1/commands): JSON, only node_up, node_alive, task_finish, a
 * batch of task_finish, wake and nop; no unknown field; every "node"
 * field equal to `node`. Returns 0, or -1 with *out. */
int fsm_cmd_check_node(const void *buf, size_t len, uint64_t node,
		       struct fsm_check *out);
/* task_finish: the outcome of one attempt. out/err must be valid UTF-8
 * without NUL (see flowd_utf8_sanitize). */
struct fsm_finish {
	const char *run_id, *step;
	unsigned attempt;
	uint64_t node;
	int exit_code, term_signal;
	const char *reason;         /* "exited", "timeout", "stopped", "spawn_failed" */
	const char *detail;         /* may be NULL */
	const char *out, *err;
	bool truncated;
};
int fsm_cmd_task_finish(int64_t ts, const struct fsm_finish *fin, char **out,
			size_t *len);

/* Copy `in` to a new NUL-terminated valid-UTF-8 string: NUL bytes dropped,
 * invalid sequences replaced by U+FFFD. Returns malloc'd text or NULL. */
char *flowd_utf8_sanitize(const char *in, size_t len);

/* Milliseconds since the epoch as RFC 3339 UTC with milliseconds (new ref;
 * json null for 0). */
json_t *fsm_time_json(int64_t ms);

#endif
