/* storage.h - flowd's PostgreSQL side: schema migrations, the applier that
 * writes every committed Raft entry's effects exactly once, and the reads the
 * API serves from PostgreSQL. Knows nothing of Raft internals or HTTP.
 *
 * Records. For every committed entry the state machine produces a JSON array
 * of row images ("records"), each an object with a "t" member:
 *
 *   {"t":"flow_version","flow":s,"version":i,"spec":{..},"created_at":ms}
 *   {"t":"flow","flow":s,"current_version":i|null,"deleted":b,"updated_at":ms}
 *   {"t":"run","id":s,"flow":s,"version":i,"parameters":{..},"status":s,
 *    "idempotency_key":s|null,"created_at":ms,"started_at":ms|null,
 *    "finished_at":ms|null,"reason":s|null}
 *   {"t":"step","run_id":s,"step":s,"status":s,"attempts":i,
 *    "started_at":ms|null,"finished_at":ms|null}
 *   {"t":"attempt","run_id":s,"step":s,"attempt":i,"node":i,"status":s,
 *    "started_at":ms|null,"finished_at":ms|null,"exit_code":i|null,
 *    "signal":i|null,"reason":s|null}
 *   {"t":"log","run_id":s,"step":s,"attempt":i,"stdout":s,"stderr":s,
 *    "truncated":b}
 *
 * ms are milliseconds since the Unix epoch (stored as timestamptz). Every
 * record except "log" is a full row image: writing it is an upsert, so
 * writing it twice is harmless. Records of one entry are applied in order. */
#ifndef FLOWD_STORAGE_H
#define FLOWD_STORAGE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

/* Create or upgrade the schema with the numbered migrations compiled into
 * flowd. Blocking; runs at start before the loop. Safe when several nodes run
 * it at once (a transaction-scoped advisory lock serializes them). Returns 0,
 * or -1 with a message in errmsg. */
int storage_migrate(const char *conninfo, char *errmsg, size_t errlen);

/* The highest Raft index PostgreSQL holds (raft_meta.applied_index), read
 * once with a blocking connection. Returns 0, or -1 with errmsg. */
int storage_applied_index(const char *conninfo, uint64_t *out, char *errmsg,
			  size_t errlen);

/* ------------------------------------------------------------------------
 * The applier: one writer thread with a blocking libpq connection.
 */
struct storage_applier;

/* Called on the writer thread whenever the durable index advances or the
 * connection state changes. It must only do thread-safe things (store an
 * atomic, uv_async_send). `connected` is 1 while PostgreSQL answers. */
typedef void (*storage_progress_cb)(void *arg, uint64_t durable_index,
				    int connected);

struct storage_applier_config {
	const char *conninfo;     /* copied */
	unsigned batch_max;       /* entries per transaction (default 512) */
	unsigned retry_ms;        /* first reconnect delay (default 200), doubles up to 5000 */
	int thread_nice;          /* the writer thread is made this much nicer */
};

/* Start the writer thread. Returns 0 and *out, or -1 with errmsg. The thread
 * connects (and reconnects) on its own; being unable to connect is not an
 * error here: entries queue up until PostgreSQL answers. */
int storage_applier_new(const struct storage_applier_config *cfg,
			storage_progress_cb cb, void *arg,
			struct storage_applier **out, char *errmsg,
			size_t errlen);

/* Another node (the leader) writes these entries: only drop what PostgreSQL
 * holds already (read every 100 ms), and write only entries queued for 2 s
 * or more. 0: write them (the default). Any thread. */
void storage_applier_set_standby(struct storage_applier *a, int standby);

/* Queue the records of entry `index` (records_json: a JSON array text,
 * malloc'd; ownership transfers). Called on the loop thread, in index order;
 * never blocks on PostgreSQL. An entry whose index is not above what
 * PostgreSQL already holds is skipped by the writer (replays after restart). */
void storage_applier_push(struct storage_applier *a, uint64_t index,
			  char *records_json);

/* Entries queued and not yet durable. Thread-safe. */
uint64_t storage_applier_backlog(struct storage_applier *a);

/* 1 while the writer's connection answers. Thread-safe. */
int storage_applier_connected(struct storage_applier *a);

/* Highest index known durable in PostgreSQL (0 before first contact). */
uint64_t storage_applier_durable(struct storage_applier *a);

/* Whether PostgreSQL refuses a write for a reason other than the
 * connection (a row it will not take): the first index of the failing
 * batch, 0 when the last write succeeded; `err` (may be NULL) gets its
 * words, *errors (may be NULL) how many writes failed so far. Any thread. */
uint64_t storage_applier_failing(struct storage_applier *a, char *err,
				 size_t errlen, uint64_t *errors);

/* Stop: try to flush what is queued for at most `drain_ms`, then join the
 * thread and free everything. */
void storage_applier_free(struct storage_applier *a, unsigned drain_ms);

/* ------------------------------------------------------------------------
 * Reads served from PostgreSQL (history the state machine no longer holds,
 * and task logs). A small pool of blocking connections, safe to call from
 * several HTTP threads at once.
 */
struct storage_reader;

int storage_reader_new(const char *conninfo, unsigned pool_size,
		       struct storage_reader **out, char *errmsg,
		       size_t errlen);
void storage_reader_free(struct storage_reader *r);

/* The captured output of one attempt: on success *out is a new object
 * {"run_id","step","attempt","stdout","stderr","truncated"}; attempt 0 means
 * the latest attempt that has a log. Returns 0; or -1 with err
 * FLOWD_E_NOT_FOUND (code "not_found": no such log row) or
 * FLOWD_E_UNAVAILABLE (code "storage_unavailable"). */
int storage_reader_logs(struct storage_reader *r, const char *run_id,
			const char *step, int attempt, json_t **out,
			struct flowd_error *err);

/* One run as GET /v1/runs/{id} shows it (docs/api.md), read from the runs,
 * steps, attempts and flow_versions tables: steps in the spec's order with
 * their depends_on, attempts in order, times as RFC 3339 UTC with
 * milliseconds, "trigger": {"type": "manual"}. On success *out is a new
 * object. Returns 0; or -1 with err FLOWD_E_NOT_FOUND ("not_found") or
 * FLOWD_E_UNAVAILABLE. */
int storage_reader_run(struct storage_reader *r, const char *run_id,
		       json_t **out, struct flowd_error *err);

/* Every version of `flow` PostgreSQL holds, oldest first:
 * [{"version", "created_at", "spec"}] (docs/api.md); a new array in *out.
 * Returns 0 or -1 with err (FLOWD_E_UNAVAILABLE). The API fills in the
 * specs of old versions the state machine no longer keeps in memory from
 * it. */
int storage_reader_flow_versions(struct storage_reader *r, const char *flow,
				 json_t **out, struct flowd_error *err);

/* Run summaries (the run object without "steps"), newest first, whose
 * sequence number (the decimal in the id "r-%012llu") is below
 * `before_seq`, at most `limit`, with every filter of GET /v1/runs
 * (core/view.h): flow name, project and branch (the generated columns of
 * runs), status, and tags (user tags through the GIN index on runs.tags,
 * system tags from the columns they name). On success *out is a new
 * array. Returns 0 or -1 with err (FLOWD_E_UNAVAILABLE). */
struct view_run_filter;
int storage_reader_runs_filter(struct storage_reader *r,
			       const struct view_run_filter *flt,
			       uint64_t before_seq, unsigned limit,
			       json_t **out, struct flowd_error *err);

/* Events posted (GET /v1/events), newest first: [{"id","name","payload",
 * "received_at","runs","index"}], of one name when `name` is not NULL,
 * below (before_index, before_id) when before_id is not NULL (a cursor),
 * at most `limit`. Returns 0 with a new array in *out, or -1 with err
 * (FLOWD_E_UNAVAILABLE). */
int storage_reader_events(struct storage_reader *r, const char *name,
			  uint64_t before_index, const char *before_id,
			  unsigned limit, json_t **out, struct flowd_error *err);

#endif
