/* view.h - the read view: an immutable, versioned copy of what the API reads
 * (runs, flows and their schedules, the cluster's numbers), published by the
 * loop after each batch of applies and read by the HTTP threads with no lock
 * and no loop time.
 *
 * Ownership and threads.
 * - struct view_store: one per process, created and freed by the loop
 *   thread. view_store_update() and view_store_publish() run on the loop
 *   thread only (they read the state machine).
 * - struct view: one published version, immutable. A reader gets it from
 *   view_acquire() on any thread and may read it, and everything reachable
 *   from it, until view_release(); it must not keep pointers into it
 *   afterwards. One view at a time per thread.
 * - The strings the view_*_text() functions return are new (malloc'd; the
 *   caller frees them).
 *
 * docs/design.md ("Reads are served from a published view") explains the
 * design: copy-on-write chunks, reference counts touched by the loop only,
 * and hazard pointers that keep a version alive while a reader holds it. */
#ifndef FLOWD_CORE_VIEW_H
#define FLOWD_CORE_VIEW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "fsm.h"

struct view;
struct view_store;

/* What the daemon knows of the cluster at a publish (copied). */
struct view_cluster {
	uint64_t node_id;
	const char *role;           /* static: "leader", "follower", ... */
	uint64_t term, commit_index, applied_index;
	uint64_t db_applied_index, db_backlog;
	int64_t db_backlog_ms;      /* how long the oldest entry PostgreSQL
	                             * lacks has been applied here */
	bool db_connected;
	uint64_t db_failing_index;  /* PostgreSQL refuses this entry's rows
	                             * (not a connection problem); 0: none */
	char db_error[256];         /* its words */
	uint64_t db_write_errors;   /* writes refused so far */
	const char *not_ready;      /* static reason for GET /readyz, or NULL */
	char leader_api[64];        /* the leader's API address when another
	                             * node leads, else "" (a follower hands
	                             * writes to it from its HTTP threads) */
	bool stopping;              /* the node is shutting down */
};

/* JSON texts the daemon renders when they change (rarely), kept as they are
 * by the view until replaced. */
enum view_text {
	VIEW_TEXT_LEADER,           /* {"id","api_address"} or null */
	VIEW_TEXT_MEMBERS,          /* [{"id","raft_address",...}, ...] */
	VIEW_TEXT_SCHEDULER,        /* {"schedules","ticks_fired",...} */
	VIEW_TEXT_COUNT
};

/* ---- The loop thread ---- */

/* A store with an empty view published. Returns NULL on out of memory. */
struct view_store *view_store_new(void);
/* Free the store and every version. No reader may hold a view. */
void view_store_free(struct view_store *s);

/* Take the runs and flows the state machine changed since the last call
 * (fsm.view_*): they are copied into the version being built. After a
 * restore the whole state is copied again. */
void view_store_update(struct view_store *s, struct fsm *f);

/* Replace one of the daemon's texts (`text` is copied; NULL = null) in the
 * version being built. */
void view_store_set_text(struct view_store *s, enum view_text which,
			 const char *text);

/* Publish the version being built, with the cluster numbers `cl` (copied),
 * and free the versions no reader holds any more. */
void view_store_publish(struct view_store *s, const struct view_cluster *cl);

/* The number of versions published and not yet freed (tests, stats). */
size_t view_store_retained(struct view_store *s);

/* ---- Any thread ---- */

struct view_guard {
	void *rec;                  /* the hazard record in use */
};

/* The newest published view, held until view_release(g). */
const struct view *view_acquire(struct view_store *s, struct view_guard *g);
void view_release(struct view_guard *g);

/* The cluster's numbers of the view (borrowed, valid with the view). */
const struct view_cluster *view_cluster_of(const struct view *v);

/* The applied index the view was built at. */
uint64_t view_applied_index(const struct view *v);

/* Modify indexes, for blocking reads and X-Flowd-Index: the applied index
 * of the batch that last changed a run (0: not in memory), any run (created,
 * changed, left memory), a flow (deployed, paused, a schedule's tick
 * decided; 0: unknown), any flow. They never go back on one node. */
uint64_t view_run_index(const struct view *v, const char *id);
uint64_t view_runs_index(const struct view *v);
uint64_t view_flow_index(const struct view *v, const char *name);
uint64_t view_flows_index(const struct view *v);

enum view_found {
	VIEW_FOUND,
	VIEW_NOT_FOUND,
	VIEW_EVICTED,               /* the run existed and left memory:
	                             * PostgreSQL has it */
};

/* GET /v1/runs/{id}: the run (with its steps) as JSON text in *text. */
enum view_found view_run_text(const struct view *v, const char *id,
			      char **text);

/* GET /v1/runs: a page of runs, newest first, filtered by flow (NULL = any)
 * and status (-1 = any), starting below `cursor` (0 = from the newest):
 * {"runs":[...],"next_cursor":"<seq>"|null}. When the walk reaches a run
 * that left memory, it stops there and sets *pg_limit (> 0) and
 * *pg_before: the rest of the page is the runs below *pg_before, read from
 * PostgreSQL. Returns NULL on out of memory. */
char *view_runs_page_text(const struct view *v, const char *flow, int status,
			  unsigned limit, uint64_t cursor, uint64_t *pg_before,
			  unsigned *pg_limit);

/* What GET /v1/runs filters on (every field optional). */
struct view_run_filter {
	const char *flow;           /* a flow's name, in any project and
	                             * branch unless they are given */
	const char *project, *branch;
	int status;                 /* -1: any */
	char *const *tags;          /* runs carrying every one (user or
	                             * system tags, docs/lifecycle.md) */
	size_t n_tags;
};
/* Whether a run of flow key `key` (spec_flow_key) passes the filter's
 * flow, project and branch. Pure. */
bool view_filter_flow_matches(const struct view_run_filter *flt,
			      const char *key);

/* view_runs_page_text with every filter. */
char *view_runs_page_text_filter(const struct view *v,
				 const struct view_run_filter *flt,
				 unsigned limit, uint64_t cursor,
				 uint64_t *pg_before, unsigned *pg_limit);

/* GET /v1/projects/{project}/flows/{flow}/compare: runs of the flow in
 * each of `branches` (at most 8) started by the same schedule tick
 * (nominal time) or the same event id, among the newest `scan` runs in
 * memory: {"project","flow","branches",[...],"pairs":[{"key","by",
 * "runs":{branch:{"run_id","status","created_at","started_at",
 * "finished_at","duration_ms","outputs"}}}]}, newest first, at most
 * `limit` pairs (a pair has runs of two branches at least). */
char *view_compare_text(const struct view *v, const char *project,
			const char *flow, char *const *branches,
			size_t n_branches, unsigned limit, unsigned scan);

/* GET /v1/flows: {"flows":[...]} (deployed flows, by name). */
char *view_flows_text(const struct view *v);
/* GET /v1/flows/{flow} (with its spec) or, with_spec false, the flow alone.
 * NULL with *found = VIEW_NOT_FOUND when there is no such flow (ever
 * deployed; `deployed` tells). */
char *view_flow_text(const struct view *v, const char *name, bool with_spec,
		     enum view_found *found);
/* GET /v1/flows/{flow}/versions. Versions whose spec left memory (neither
 * the newest nor used by a run in memory) have "spec": null, counted in
 * *missing: PostgreSQL has them. */
char *view_flow_versions_text(const struct view *v, const char *name,
			      enum view_found *found, unsigned *missing);
/* GET /v1/flows/{flow}/schedule with the next `count` fire times after
 * now_s; VIEW_NOT_FOUND also for a flow that is not deployed. */
char *view_schedule_text(const struct view *v, const char *name,
			 int64_t now_s, unsigned count, enum view_found *found);
/* PUT /v1/flows/{flow}: {"flow": <flow with spec>, "created": b}. */
char *view_flow_put_text(const struct view *v, const char *name, bool created);

/* One schedule of a deployed flow, for metrics (borrowed, valid during
 * the callback). */
struct view_schedule_info {
	const char *flow;
	unsigned index;             /* in the flow's current spec */
	const char *expr;
	bool paused;                /* the flow is paused */
	const uint64_t *counts;     /* ticks by enum fsm_fire_outcome
	                             * (FSM_FIRE_OUTCOMES of them) */
	int64_t next_s;             /* the next fire time, 0 when none */
};

/* Call cb for each schedule of each deployed flow (flows in the order they
 * were first deployed), at most `max` of them. Returns how many were left
 * out. */
size_t view_schedules_each(const struct view *v, int64_t now_s, size_t max,
			   void (*cb)(void *arg,
				      const struct view_schedule_info *in),
			   void *arg);

/* GET /v1/cluster. */
char *view_cluster_text(const struct view *v);
/* GET /readyz: the reason it is not ready (static), or NULL when ready. */
const char *view_not_ready(const struct view *v);

/* The next `count` fire times of a schedule after max(cursor, now_s - 1),
 * as a JSON array of RFC 3339 times (new reference). Pure. */
json_t *view_next_fires_json(const struct spec_schedule *sc, int64_t cursor,
			     int64_t now_s, unsigned count);

#endif
