/* reader.c - the read queries the API serves from PostgreSQL, on a small
 * pool of blocking connections.
 *
 * DESIGN
 *
 * Threads. Any HTTP thread may call a storage_reader_* query. It borrows a
 * slot of the pool (waiting on `cond` while all pool_size slots are busy),
 * runs one statement with PQexecParams on the slot's connection with no lock
 * held, and gives the slot back. A PGconn is never used by two threads at
 * once; `mu` guards only the slot table.
 *
 * Connections are opened lazily, on first use of a slot, with
 * connect_timeout=2 (storage__connect), so an HTTP thread waits at most a few
 * seconds when PostgreSQL is down.
 *
 * Failure modes. A statement that fails because the link is gone is retried
 * once on a fresh session (PQreset); if that fails too, or the connect
 * fails, the caller gets FLOWD_E_UNAVAILABLE "storage_unavailable" with libpq's
 * message, and the slot keeps the broken PGconn, which the next borrower resets
 * again. Any other SQL error is also FLOWD_E_UNAVAILABLE: the caller cannot fix
 * it.
 */
#include "storage/storage.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/spec.h"
#include "core/view.h"
#include "core/fsm.h"
#include "storage/migrations.h"

#define POOL_DEFAULT 4

struct slot {
	PGconn *conn;
	int busy;
};

struct storage_reader {
	char *conninfo;
	unsigned size;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	struct slot *slots; /* under mu: busy; conn belongs to the borrower */
};

int storage_reader_new(const char *conninfo, unsigned pool_size,
		       struct storage_reader **out, char *errmsg,
		       size_t errlen)
{
	struct storage_reader *r;

	if (storage__conninfo_check(conninfo, errmsg, errlen) != 0)
		return -1;
	r = calloc(1, sizeof *r);
	if (r == NULL)
		goto err_oom;
	r->size = pool_size ? pool_size : POOL_DEFAULT;
	r->conninfo = strdup(conninfo);
	if (r->conninfo == NULL)
		goto err_free;
	r->slots = calloc(r->size, sizeof *r->slots);
	if (r->slots == NULL)
		goto err_conninfo;
	if (pthread_mutex_init(&r->mu, NULL) != 0)
		goto err_slots;
	if (pthread_cond_init(&r->cond, NULL) != 0)
		goto err_mutex;
	*out = r;
	return 0;

err_mutex:
	pthread_mutex_destroy(&r->mu);
err_slots:
	free(r->slots);
err_conninfo:
	free(r->conninfo);
err_free:
	free(r);
err_oom:
	snprintf(errmsg, errlen, "storage: reader: out of resources");
	return -1;
}

void storage_reader_free(struct storage_reader *r)
{
	unsigned i;

	if (r == NULL)
		return;
	for (i = 0; i < r->size; i++)
		if (r->slots[i].conn != NULL)
			PQfinish(r->slots[i].conn);
	pthread_cond_destroy(&r->cond);
	pthread_mutex_destroy(&r->mu);
	free(r->slots);
	free(r->conninfo);
	free(r);
}

/* Borrow a slot, preferring one with an open connection. */
static struct slot *acquire(struct storage_reader *r)
{
	struct slot *s;
	unsigned i;

	pthread_mutex_lock(&r->mu);
	for (;;) {
		s = NULL;
		for (i = 0; i < r->size; i++) {
			if (r->slots[i].busy)
				continue;
			if (s == NULL || r->slots[i].conn != NULL)
				s = &r->slots[i];
			if (s->conn != NULL)
				break;
		}
		if (s != NULL)
			break;
		pthread_cond_wait(&r->cond, &r->mu);
	}
	s->busy = 1;
	pthread_mutex_unlock(&r->mu);
	return s;
}

static void release(struct storage_reader *r, struct slot *s)
{
	pthread_mutex_lock(&r->mu);
	s->busy = 0;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->mu);
}

/* Run one statement on a borrowed slot: a new PGresult with `want` status,
 * or NULL with err set (FLOWD_E_UNAVAILABLE). Opens the connection if needed
 * and retries once on a fresh session when the link was lost. */
static PGresult *query(struct storage_reader *r, struct slot *s,
		       const char *sql, int nparams,
		       const char *const *params, struct flowd_error *err)
{
	PGresult *res = NULL;
	const char *state;
	char line[200];
	int tries;

	if (s->conn == NULL) {
		s->conn = storage__connect(r->conninfo, "flowd-reader");
		if (s->conn == NULL) {
			flowd_error_set(err, FLOWD_E_UNAVAILABLE,
					"storage_unavailable", "",
					"storage: connect: out of memory");
			return NULL;
		}
	}
	for (tries = 0; tries < 2; tries++) {
		if (PQstatus(s->conn) != CONNECTION_OK) {
			PQreset(s->conn);
			if (PQstatus(s->conn) != CONNECTION_OK)
				goto err_connect;
		}
		res = PQexecParams(s->conn, sql, nparams, NULL, params, NULL,
				   NULL, 0);
		if (PQresultStatus(res) == PGRES_TUPLES_OK)
			return res;
		if (!storage__conn_lost(s->conn, res))
			break;
		PQclear(res);
		res = NULL;
		/* The session died under us: force a reset and try once more. */
		PQreset(s->conn);
	}
	if (res == NULL)
		goto err_connect;
	state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	log_error("storage: reader: query failed sqlstate=%s error=\"%s\"",
		  state ? state : "none",
		  storage__oneline(PQresultErrorMessage(res), line,
				   sizeof line));
	flowd_error_set(err, FLOWD_E_UNAVAILABLE, "storage_unavailable", "",
			"storage: query: %s", line);
	PQclear(res);
	return NULL;

err_connect:
	flowd_error_set(
	    err, FLOWD_E_UNAVAILABLE, "storage_unavailable", "",
	    "storage: connect: %s",
	    storage__oneline(PQerrorMessage(s->conn), line, sizeof line));
	return NULL;
}

int storage_reader_logs(struct storage_reader *r, const char *run_id,
			const char *step, int attempt, json_t **out,
			struct flowd_error *err)
{
	struct slot *s;
	PGresult *res;
	json_t *obj = NULL;
	char num[16];
	const char *params[3] = {run_id, step, num};
	int rc = -1;

	snprintf(num, sizeof num, "%d", attempt);
	s = acquire(r);
	res = query(r, s,
		    "SELECT stdout, stderr, truncated, attempt FROM task_logs"
		    " WHERE run_id = $1 AND step = $2"
		    "   AND ($3::int = 0 OR attempt = $3::int)"
		    " ORDER BY attempt DESC LIMIT 1",
		    3, params, err);
	if (res == NULL)
		goto out_release;
	if (PQntuples(res) == 0) {
		flowd_error_set(err, FLOWD_E_NOT_FOUND, "not_found", "",
				"no log for run %s step %s%s", run_id, step,
				attempt ? " at that attempt" : " yet");
		goto out_clear;
	}
	/* The database is UTF8 (migration 1 checks) and so is the client
	 * encoding, so json_stringn accepts the text; NULL means no memory. */
	obj = json_pack("{s:s, s:s, s:i, s:s%, s:s%, s:b}", "run_id", run_id,
			"step", step, "attempt", atoi(PQgetvalue(res, 0, 3)), "stdout",
			PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0),
			"stderr", PQgetvalue(res, 0, 1),
			(size_t)PQgetlength(res, 0, 1), "truncated",
			PQgetvalue(res, 0, 2)[0] == 't');
	if (obj == NULL) {
		flowd_error_set(err, FLOWD_E_UNAVAILABLE, "storage_unavailable",
				"", "storage: log row could not be encoded");
		goto out_clear;
	}
	*out = obj;
	rc = 0;
out_clear:
	PQclear(res);
out_release:
	release(r, s);
	return rc;
}

/* ------------------------------------------------------------------------
 * Runs
 *
 * PostgreSQL builds the whole JSON document in one statement and sends it as
 * one text value, which jansson parses: the shape is the in-memory one of
 * core/view.c (run_json), with the same field names and formats.
 */

/* A timestamptz as fsm_time_json() prints it: RFC 3339 UTC with
 * milliseconds, null when absent. The epoch itself also reads as null, since
 * the state machine uses 0 ms for "not set". Times come from whole
 * milliseconds (flowd_ts), so MS loses nothing. */
#define SQL_TS(col)                                                        \
	"to_char(NULLIF(" col ", 'epoch'::timestamptz) AT TIME ZONE 'UTC', " \
	"'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

/* A run's system tags in core's order (fsm_system_tags). */
#define SQL_SYSTEM_TAGS                                                     \
	"ARRAY['project:' || r.project, 'branch:' || r.branch,"             \
	" 'flow:' || r.flow_name,"                                          \
	" 'version:' || r.version,"                                         \
	" 'trigger:' || COALESCE(r.trigger->>'type', 'manual')]"            \
	" || CASE WHEN r.origin_run_id IS NULL THEN '{}'::text[]"           \
	" ELSE ARRAY['origin:' || r.origin_run_id] END"

/* The members of a run summary, for json_build_object over `runs r`. */
#define SQL_RUN_FIELDS                                                      \
	"'id', r.id, 'flow', r.flow_name, 'project', r.project,"           \
	" 'branch', r.branch, 'version', r.version,"                        \
	" 'parameters', r.parameters,"                                      \
	" 'idempotency_key', r.idempotency_key, 'status', r.status,"       \
	" 'reason', r.reason,"                                              \
	" 'created_at', " SQL_TS("r.created_at") ","                        \
	" 'started_at', " SQL_TS("r.started_at") ","                        \
	" 'finished_at', " SQL_TS("r.finished_at") ","                      \
	" 'trigger', COALESCE(r.trigger::json, json_build_object('type', 'manual')),"\
	" 'tags', to_json(r.tags),"                                          \
	" 'system_tags', to_json(" SQL_SYSTEM_TAGS "),"                      \
	" 'origin_run_id', r.origin_run_id,"                                \
	" 'redrive_count', r.redrive_count"

/* One run with its steps in the order of its flow version's spec. A spec
 * step without a steps row (not expected: the run record and its step
 * records come in one entry) shows as pending with no attempts. */
static const char run_sql[] =
	"SELECT json_build_object(" SQL_RUN_FIELDS ","
	" 'steps', COALESCE(("
	"  SELECT json_agg(json_build_object("
	"    'name', st.e->>'name',"
	"    'status', COALESCE(s.status, 'pending'),"
	"    'depends_on', COALESCE(st.e->'depends_on', '[]'::jsonb),"
	"    'started_at', " SQL_TS("s.started_at") ","
	"    'finished_at', " SQL_TS("s.finished_at") ","
	"    'reused_from', CASE WHEN s.origin_run_id IS NULL THEN NULL"
	"      ELSE json_build_object('run_id', s.origin_run_id,"
	"        'attempt', s.origin_attempt) END,"
	"    'attempts', COALESCE(("
	"      SELECT json_agg(json_build_object("
	"        'attempt', a.attempt, 'node', a.node, 'status', a.status,"
	"        'started_at', " SQL_TS("a.started_at") ","
	"        'finished_at', " SQL_TS("a.finished_at") ","
	"        'exit_code', a.exit_code, 'signal', a.signal,"
	"        'reason', a.reason) ORDER BY a.attempt)"
	"      FROM attempts a"
	"      WHERE a.run_id = r.id AND a.step = st.e->>'name'),"
	"     '[]'::json)) ORDER BY st.ord)"
	"  FROM flow_versions fv"
	"  CROSS JOIN LATERAL jsonb_array_elements(fv.spec->'steps')"
	"    WITH ORDINALITY AS st(e, ord)"
	"  LEFT JOIN steps s ON s.run_id = r.id AND s.step = st.e->>'name'"
	"  WHERE fv.flow = r.flow AND fv.version = r.version),"
	" '[]'::json))::text"
	" FROM runs r WHERE r.id = $1";

/* [{"version", "created_at", "spec"}] of a flow, oldest first. */
static const char versions_sql[] =
	"SELECT COALESCE(json_agg(json_build_object("
	"  'version', v.version, 'created_at', " SQL_TS("v.created_at") ","
	"  'spec', v.spec) ORDER BY v.version), '[]'::json)::text"
	" FROM flow_versions v WHERE v.flow = $1";

/* Summaries, newest first. Ids are "r-" and 12 zero-padded digits, so text
 * order is sequence order and the primary key serves ORDER BY ... LIMIT. */
static const char runs_sql[] =
	"SELECT COALESCE(json_agg(x.j ORDER BY x.id DESC), '[]'::json)::text"
	" FROM (SELECT r.id, json_build_object(" SQL_RUN_FIELDS ") AS j"
	"  FROM runs r"
	"  WHERE ($1::text IS NULL OR r.id < $1::text)"
	"    AND ($2::text IS NULL OR r.flow_name = $2::text)"
	"    AND ($7::text IS NULL OR r.project = $7::text)"
	"    AND ($8::text IS NULL OR r.branch = $8::text)"
	"    AND ($3::text IS NULL OR r.status = $3::text)"
	"    AND ($5::text[] IS NULL OR r.tags @> $5::text[])"
	"    AND ($6::text[] IS NULL OR (" SQL_SYSTEM_TAGS ") @> $6::text[])"
	"  ORDER BY r.id DESC LIMIT $4::bigint) x";

/* Events, newest first (by the entry that accepted them, then id), below
 * a cursor (raft_index, id) when $2 is not NULL. */
static const char events_sql[] =
	"SELECT COALESCE(json_agg(json_build_object("
	"  'id', e.id, 'name', e.name, 'payload', e.payload,"
	"  'received_at', " SQL_TS("e.received_at") ", 'runs', e.runs,"
	"  'index', e.raft_index) ORDER BY e.raft_index DESC, e.id DESC),"
	"  '[]'::json)::text"
	" FROM (SELECT * FROM events"
	"  WHERE ($1::text IS NULL OR name = $1::text)"
	"    AND ($2::bigint IS NULL OR (raft_index, id) < ($2::bigint, $3::text))"
	"  ORDER BY raft_index DESC, id DESC LIMIT $4::bigint) e";

/* Run a statement whose answer is one JSON text in row 0, column 0: 0 and a
 * new *out; 1 when there is no row; -1 with err (FLOWD_E_UNAVAILABLE). */
static int query_json(struct storage_reader *r, const char *sql, int nparams,
		      const char *const *params, json_t **out,
		      struct flowd_error *err)
{
	struct slot *s;
	PGresult *res;
	json_error_t jerr;
	int rc = -1;

	s = acquire(r);
	res = query(r, s, sql, nparams, params, err);
	if (res == NULL)
		goto out_release;
	if (PQntuples(res) == 0 || PQgetisnull(res, 0, 0)) {
		rc = 1;
		goto out_clear;
	}
	*out = json_loadb(PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0),
			  0, &jerr);
	if (*out == NULL) {
		log_error("storage: reader: bad json from postgres error=\"%s\"",
			  jerr.text);
		flowd_error_set(err, FLOWD_E_UNAVAILABLE, "storage_unavailable",
				"", "storage: run could not be decoded: %s",
				jerr.text);
		goto out_clear;
	}
	rc = 0;
out_clear:
	PQclear(res);
out_release:
	release(r, s);
	return rc;
}

/* A statement whose answer is a JSON array (query_json): 0 and a new
 * *out, or -1 with err; no row or not an array is FLOWD_E_UNAVAILABLE
 * "storage: <what> query gave no list". */
static int query_list(struct storage_reader *r, const char *sql, int nparams,
		      const char *const *params, const char *what,
		      json_t **out, struct flowd_error *err)
{
	json_t *list = NULL;
	int rc = query_json(r, sql, nparams, params, &list, err);

	if (rc < 0)
		return -1;
	if (rc > 0 || !json_is_array(list)) {
		json_decref(list);
		return flowd_error_set(err, FLOWD_E_UNAVAILABLE,
				       "storage_unavailable", "",
				       "storage: %s query gave no list", what);
	}
	*out = list;
	return 0;
}

int storage_reader_run(struct storage_reader *r, const char *run_id,
		       json_t **out, struct flowd_error *err)
{
	const char *params[1] = {run_id};
	json_t *run = NULL;
	int rc;

	rc = query_json(r, run_sql, 1, params, &run, err);
	if (rc < 0)
		return -1;
	if (rc > 0 || !json_is_object(run)) {
		json_decref(run);
		return flowd_error_set(err, FLOWD_E_NOT_FOUND, "not_found", "",
				       "no run %s", run_id);
	}
	*out = run;
	return 0;
}

int storage_reader_flow_versions(struct storage_reader *r, const char *flow,
				 json_t **out, struct flowd_error *err)
{
	const char *params[1] = {flow};

	return query_list(r, versions_sql, 1, params, "versions", out, err);
}

/* The highest sequence number a "r-%012" id can carry. */
#define SEQ_MAX 999999999999ULL

enum tags_kind { TAGS_USER, TAGS_SYSTEM };

/* A text[] literal of the user or the system tags of `tags`: {"a","b"}
 * with " and \ escaped; NULL when there is none (malloc'd). User tags
 * are matched on runs.tags (its GIN index), system tags on what the
 * columns make: a filter of user tags only builds no array per row. */
static char *tags_literal(char *const *tags, size_t n, enum tags_kind kind)
{
	size_t cap = 3, k = 0;
	char *out, *p;

	for (size_t i = 0; i < n; i++)
		cap += 2 * strlen(tags[i]) + 3;
	out = p = malloc(cap);
	if (out == NULL)
		return NULL;
	*p++ = '{';
	for (size_t i = 0; i < n; i++) {
		if (spec_tag_system(tags[i]) != (kind == TAGS_SYSTEM))
			continue;
		if (k++ > 0)
			*p++ = ',';
		*p++ = '"';
		for (const char *c = tags[i]; *c != '\0'; c++) {
			if (*c == '"' || *c == '\\')
				*p++ = '\\';
			*p++ = *c;
		}
		*p++ = '"';
	}
	*p++ = '}';
	*p = '\0';
	if (k == 0) {
		free(out);
		return NULL;
	}
	return out;
}

int storage_reader_runs_filter(struct storage_reader *r,
			       const struct view_run_filter *flt,
			       uint64_t before_seq, unsigned limit,
			       json_t **out, struct flowd_error *err)
{
	char before[32], num[16];
	char *user = tags_literal(flt->tags, flt->n_tags, TAGS_USER);
	char *sys = tags_literal(flt->tags, flt->n_tags, TAGS_SYSTEM);
	bool want_user = false, want_sys = false;

	for (size_t i = 0; i < flt->n_tags; i++) {
		if (spec_tag_system(flt->tags[i]))
			want_sys = true;
		else
			want_user = true;
	}
	/* out of memory is not "no filter" */
	if ((want_user && user == NULL) || (want_sys && sys == NULL)) {
		free(sys);
		free(user);
		return flowd_error_set(err, FLOWD_E_UNAVAILABLE,
				       "storage_unavailable", "",
				       "storage: out of memory");
	}
	const char *status = flt->status >= 0 ? fsm_run_status_str(flt->status)
					      : NULL;
	const char *params[8] = {before, flt->flow, status, num, user, sys,
				 flt->project, flt->branch};
	json_t *runs = NULL;
	int rc;

	if (before_seq == 0 || limit == 0) {
		/* Nothing has a sequence number below 1. */
		runs = json_array();
		goto done;
	}
	if (before_seq > SEQ_MAX)
		params[0] = NULL; /* every id is below it */
	else
		snprintf(before, sizeof before, "r-%012llu",
			 (unsigned long long)before_seq);
	snprintf(num, sizeof num, "%u", limit);
	rc = query_list(r, runs_sql, 8, params, "runs", &runs, err);
	free(user);
	free(sys);
	if (rc != 0)
		return -1;
	user = sys = NULL;
done:
	free(user);
	free(sys);
	if (runs == NULL)
		return flowd_error_set(err, FLOWD_E_UNAVAILABLE,
				       "storage_unavailable", "",
				       "storage: out of memory");
	*out = runs;
	return 0;
}

int storage_reader_events(struct storage_reader *r, const char *name,
			  uint64_t before_index, const char *before_id,
			  unsigned limit, json_t **out, struct flowd_error *err)
{
	char ix[24], num[16];
	const char *params[4] = {name, NULL, NULL, num};
	if (before_id != NULL) {
		snprintf(ix, sizeof ix, "%llu", (unsigned long long)before_index);
		params[1] = ix;
		params[2] = before_id;
	}
	snprintf(num, sizeof num, "%u", limit);
	return query_list(r, events_sql, 4, params, "events", out, err);
}
