/* reads.c - the API's read handlers: answers rendered on the HTTP threads
 * from the read view, task logs from PostgreSQL, cron previews from the
 * query; and the renders of write answers (docs/api.md).
 *
 * Each handler is called by the api (api/server.c) on an HTTP thread with
 * the newest published view held for the call (rows with API_ROUTE_VIEW,
 * and every render), and fills the answer; history the view no longer
 * holds (a run that left memory, older runs of a page, the specs of old
 * versions) is asked for with the request's pg_* fields and read by the api
 * after the view is let go. No state of its own; no loop time. */
#include "daemon/reads.h"

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cron.h"
#include "core/fsm.h"
#include "core/limits.h"
#include "core/spec.h"
#include "core/tz.h"
#include "daemon/follow.h"

static void reply_error(struct api_request *req, enum flowd_errc errc,
			const char *code, const char *field, const char *msg)
{
	struct flowd_error e;

	flowd_error_set(&e, errc, code, field, "%s", msg);
	api_request_reply_error(req, &e);
}

static int64_t now_s(const struct reads *rd)
{
	return flowd_clock_now(&rd->clock) / 1000;
}

/* ------------------------------------------------------------------------
 * The node
 */

void reads_healthz(void *arg, const struct view *v, struct api_request *req)
{
	api_request_reply_json(req, 200, json_pack("{s:s}", "status", "ok"));
}

/* ------------------------------------------------------------------------
 * Modify indexes (X-Flowd-Index, blocking reads)
 */

uint64_t reads_probe_run(const struct view *v, const struct api_request *req)
{
	return view_run_index(v, req->run_id);
}

uint64_t reads_probe_runs(const struct view *v, const struct api_request *req)
{
	return view_runs_index(v);
}

uint64_t reads_probe_flow(const struct view *v, const struct api_request *req)
{
	return view_flow_index(v, req->flow);
}

uint64_t reads_probe_flows(const struct view *v, const struct api_request *req)
{
	return view_flows_index(v);
}

uint64_t reads_probe_cluster(const struct view *v,
			     const struct api_request *req)
{
	return view_applied_index(v);
}

/* GET /metrics: the Prometheus text format (daemon/metrics.c). */
void reads_metrics(void *arg, const struct view *v, struct api_request *req)
{
	struct reads *r = arg;
	char *text = r->metrics != NULL
			     ? node_metrics_scrape(r->metrics, v,
						   flowd_clock_now(&r->clock))
			     : NULL;

	if (text == NULL) {
		reply_error(req, FLOWD_E_UNAVAILABLE, "unavailable", "",
			    "metrics are not available (out of memory)");
		return;
	}
	req->resp_type = "text/plain; version=0.0.4; charset=utf-8";
	api_request_reply_take(req, 200, text);
}

/* GET /v1/openapi.json: the document built into the binary. */
void reads_openapi(void *arg, const struct view *v, struct api_request *req)
{
	size_t len;
	const char *doc = api_openapi_json(&len);

	api_request_reply_text(req, 200, doc, len);
}

void reads_readyz(void *arg, const struct view *v, struct api_request *req)
{
	const char *why = view_not_ready(v);

	if (why == NULL) {
		api_request_reply_json(req, 200,
				       json_pack("{s:b}", "ready", 1));
		return;
	}
	req->retry_after = 1;
	api_request_reply_json(
		req, 503, json_pack("{s:b, s:s}", "ready", 0, "reason", why));
}

void reads_cluster(void *arg, const struct view *v, struct api_request *req)
{
	api_request_reply_take(req, 200, view_cluster_text(v));
}

/* ------------------------------------------------------------------------
 * Flows
 */

void reads_flow_list(void *arg, const struct view *v, struct api_request *req)
{
	api_request_reply_take(req, 200, view_flows_text(v));
}

static void flow_answer(const struct view *v, struct api_request *req,
			bool with_spec)
{
	enum view_found found;
	char *text = view_flow_text(v, req->flow, with_spec, &found);

	if (found == VIEW_FOUND) {
		api_request_reply_take(req, req->status, text);
		return;
	}
	free(text);
	reply_error(req, FLOWD_E_NOT_FOUND, "not_found", "flow",
		    "no such flow");
}

void reads_flow_get(void *arg, const struct view *v, struct api_request *req)
{
	flow_answer(v, req, true);
}

/* DELETE /v1/flows/{flow}: the flow without its spec. */
void reads_flow_undeployed(void *arg, const struct view *v,
			   struct api_request *req)
{
	flow_answer(v, req, false);
}

/* PUT /v1/flows/{flow}: {"flow", "created"}; 201 means a new version. */
void reads_flow_put(void *arg, const struct view *v, struct api_request *req)
{
	api_request_reply_take(
		req, req->status,
		view_flow_put_text(v, req->flow, req->status == 201));
}

void reads_flow_versions(void *arg, const struct view *v,
			 struct api_request *req)
{
	enum view_found found;
	unsigned missing = 0;
	char *text = view_flow_versions_text(v, req->flow, &found, &missing);

	if (found != VIEW_FOUND) {
		free(text);
		reply_error(req, FLOWD_E_NOT_FOUND, "not_found", "flow",
			    "no such flow");
		return;
	}
	api_request_reply_take(req, 200, text);
	req->pg_flow_versions = missing > 0; /* old specs from PostgreSQL */
}

void reads_schedule(void *arg, const struct view *v, struct api_request *req)
{
	enum view_found found;
	char *text = view_schedule_text(v, req->flow, now_s(arg), 10, &found);

	if (found != VIEW_FOUND) {
		free(text);
		reply_error(req, FLOWD_E_NOT_FOUND, "not_found", "flow",
			    "no such flow");
		return;
	}
	api_request_reply_take(req, 200, text);
}

/* ------------------------------------------------------------------------
 * Runs
 */

void reads_run_list(void *arg, const struct view *v, struct api_request *req)
{
	struct view_run_filter flt = {
		.flow = req->list_flow,
		.project = req->list_project,
		.branch = req->list_branch,
		.status = req->list_status ? fsm_run_status_parse(req->list_status)
					   : -1,
		.tags = req->list_tags,
		.n_tags = req->n_list_tags,
	};

	/* A page reaching a run that left memory asks the api for the rest
	 * (pg_list_before, pg_list_limit). */
	api_request_reply_take(
		req, 200,
		view_runs_page_text_filter(v, &flt, req->limit ? req->limit : 50,
					   req->cursor, &req->pg_list_before,
					   &req->pg_list_limit));
}

void reads_run_get(void *arg, const struct view *v, struct api_request *req)
{
	char *text = NULL;
	enum view_found found = req->run_id != NULL
					? view_run_text(v, req->run_id, &text)
					: VIEW_NOT_FOUND;

	switch (found) {
	case VIEW_FOUND:
		api_request_reply_take(req, req->status, text);
		break;
	case VIEW_EVICTED:
		/* the run left memory: PostgreSQL has it */
		req->pg_run_id = strdup(req->run_id);
		if (req->pg_run_id == NULL)
			reply_error(req, FLOWD_E_INTERNAL, "internal", "",
				    "out of memory");
		break;
	case VIEW_NOT_FOUND:
		reply_error(req, FLOWD_E_NOT_FOUND, "not_found", "run",
			    "no such run");
		break;
	}
}

int reads_logs_attempt(const struct api_request *req, int *attempt,
		       struct flowd_error *err)
{
	char *s = NULL;
	unsigned long v;
	int rc = 0;

	*attempt = 0;
	if (api_request_query(req, "attempt", &s, err) != 0)
		return -1;
	if (s != NULL && api_uint_parse(s, 1, INT_MAX, &v) != 0)
		rc = flowd_error_set(err, FLOWD_E_INVALID, "invalid_query",
				     "attempt", "must be a positive integer");
	else if (s != NULL)
		*attempt = (int)v;
	free(s);
	return rc;
}

/* ?follow=: 1 true, 0 false or absent, -1 with the 400. */
static int logs_follow(const struct api_request *req, struct flowd_error *err)
{
	char *s = NULL;
	int rc;

	if (api_request_query(req, "follow", &s, err) != 0)
		return -1;
	if (s == NULL || strcmp(s, "false") == 0)
		rc = 0;
	else if (strcmp(s, "true") == 0)
		rc = 1;
	else
		rc = flowd_error_set(err, FLOWD_E_INVALID, "invalid_query",
				     "follow", "must be true or false");
	free(s);
	return rc;
}

int reads_logs_query(struct api_request *req, const struct flowd_limits *lim,
		     struct flowd_error *err)
{
	int attempt;

	if (reads_logs_attempt(req, &attempt, err) != 0)
		return -1;
	return logs_follow(req, err) < 0 ? -1 : 0;
}

/* Whether a log PostgreSQL does not hold is one still on its way: the view
 * has the run, its step has that attempt (0: the latest) and it has ended,
 * and PostgreSQL is behind the view. Then the answer is 503 with
 * Retry-After (the run reads as finished a moment before its log is
 * stored), not a 404 that says there is none. */
struct reads_attempt reads_attempt_of(const struct view *v, const char *run_id,
				      const char *step, int attempt)
{
	struct reads_attempt w = {0};
	char *text = NULL;
	json_t *run = NULL, *s, *atts, *a;
	size_t i;

	if (v == NULL || view_run_text(v, run_id, &text) != VIEW_FOUND ||
	    text == NULL)
		goto out;
	run = json_loads(text, 0, NULL);
	json_array_foreach(json_object_get(run, "steps"), i, s) {
		const char *name = json_string_value(json_object_get(s, "name"));
		if (name == NULL || strcmp(name, step) != 0)
			continue;
		w.known = true;
		atts = json_object_get(s, "attempts");
		if (json_array_size(atts) == 0)
			break;
		a = json_array_get(atts, attempt == 0 ? json_array_size(atts) - 1
						       : (size_t)attempt - 1);
		if (a == NULL)
			break;
		w.attempt = (unsigned)json_integer_value(json_object_get(a, "attempt"));
		w.node = (uint64_t)json_integer_value(json_object_get(a, "node"));
		w.running = !json_is_string(json_object_get(a, "finished_at"));
		break;
	}
out:
	json_decref(run);
	free(text);
	return w;
}

static bool log_not_stored_yet(const struct reads *rd, const char *run_id,
			       const char *step, int attempt)
{
	struct view_guard g;
	const struct view *v;
	bool pending = false;

	if (rd->views == NULL)
		return false;
	v = view_acquire(rd->views, &g);
	if (view_cluster_of(v)->db_applied_index < view_applied_index(v)) {
		struct reads_attempt a =
			reads_attempt_of(v, run_id, step, attempt);
		pending = a.attempt != 0 && !a.running;
	}
	view_release(&g);
	return pending;
}

void reads_logs(void *arg, const struct view *v, struct api_request *req)
{
	struct reads *rd = arg;
	struct flowd_error err;
	json_t *out = NULL;
	int attempt;

	flowd_error_clear(&err);
	if (reads_logs_attempt(req, &attempt, &err) != 0) /* checked already */
		goto error;
	if (logs_follow(req, &err) == 1) {
		follow_logs(rd, v, req, attempt);
		return;
	}
	if (rd->reader == NULL) {
		flowd_error_set(&err, FLOWD_E_UNAVAILABLE, "unavailable", "",
				"task logs need the PostgreSQL reader");
		goto error;
	}
	if (storage_reader_logs(rd->reader, req->run_id, req->step, attempt,
				&out, &err) != 0) {
		if (err.errc == FLOWD_E_NOT_FOUND &&
		    log_not_stored_yet(rd, req->run_id, req->step, attempt))
			flowd_error_set(&err, FLOWD_E_UNAVAILABLE,
					"not_stored_yet", "",
					"the attempt has ended but PostgreSQL "
					"does not hold its log yet: retry");
		goto error;
	}
	api_request_reply_json(req, 200, out);
	return;
error:
	api_request_reply_error(req, &err);
}

/* ------------------------------------------------------------------------
 * GET /v1/cron/preview?expr=&tz=&from=&count=&dst_missing=&dst_repeated=:
 * the next `count` (default 10, at most 100) fire times of expr after
 * `from` (RFC 3339, default now), or a 400 naming the query parameter.
 */

static int cron_preview(const struct api_request *req, int64_t now,
			json_t **out, struct flowd_error *err)
{
	char *expr = NULL, *zone = NULL, *from = NULL, *count = NULL;
	char *missing = NULL, *repeated = NULL, why[200], local[40];
	enum cron_dst_missing m = CRON_DST_SHIFT;
	enum cron_dst_repeated r = CRON_DST_ONCE;
	const struct tz *z;
	struct cron c;
	unsigned long n = 10;
	int64_t t = now, next;
	json_t *times, *locals;
	int rc = -1;

	if (api_request_query(req, "expr", &expr, err) != 0 ||
	    api_request_query(req, "tz", &zone, err) != 0 ||
	    api_request_query(req, "from", &from, err) != 0 ||
	    api_request_query(req, "count", &count, err) != 0 ||
	    api_request_query(req, "dst_missing", &missing, err) != 0 ||
	    api_request_query(req, "dst_repeated", &repeated, err) != 0)
		goto done;
	if (expr == NULL) {
		flowd_error_set(err, FLOWD_E_INVALID, "invalid_query", "expr",
				"the cron expression to preview is required");
		goto done;
	}
	if (cron_parse(expr, &c, why, sizeof why) != 0) {
		flowd_error_set(err, FLOWD_E_INVALID, "invalid_query", "expr",
				"%s", why);
		goto done;
	}
	z = tz_get(zone ? zone : "UTC");
	if (z == NULL) {
		flowd_error_set(err, FLOWD_E_INVALID, "invalid_query", "tz",
				"unknown time zone (an IANA name such as "
				"Europe/Berlin)");
		goto done;
	}
	if (from != NULL && cron_time_parse(from, &t) != 0) {
		flowd_error_set(err, FLOWD_E_INVALID, "invalid_query", "from",
				"must be an RFC 3339 time such as "
				"2027-03-14T07:00:00Z");
		goto done;
	}
	if (count != NULL && api_uint_parse(count, 1, 100, &n) != 0) {
		flowd_error_set(err, FLOWD_E_INVALID, "invalid_query", "count",
				"must be an integer from 1 to 100");
		goto done;
	}
	if (missing != NULL) {
		if (strcmp(missing, "skip") == 0)
			m = CRON_DST_SKIP;
		else if (strcmp(missing, "shift") != 0) {
			flowd_error_set(err, FLOWD_E_INVALID, "invalid_query",
					"dst_missing", "must be shift or skip");
			goto done;
		}
	}
	if (repeated != NULL) {
		if (strcmp(repeated, "twice") == 0)
			r = CRON_DST_TWICE;
		else if (strcmp(repeated, "once") != 0) {
			flowd_error_set(err, FLOWD_E_INVALID, "invalid_query",
					"dst_repeated",
					"must be once or twice");
			goto done;
		}
	}
	times = json_array();
	locals = json_array();
	for (unsigned long i = 0; i < n && cron_next(&c, z, m, r, t, &next);
	     i++) {
		char utc[40];

		cron_time_utc(next, utc);
		cron_time_local(next, z, local);
		json_array_append_new(times, json_string(utc));
		json_array_append_new(locals, json_string(local));
		t = next;
	}
	*out = json_pack("{s:s, s:s, s:s, s:s, s:o, s:o}", "expr", expr,
			 "timezone", tz_name(z), "dst_missing",
			 m == CRON_DST_SKIP ? "skip" : "shift", "dst_repeated",
			 r == CRON_DST_TWICE ? "twice" : "once", "times", times,
			 "local_times", locals);
	rc = *out != NULL ? 0
			  : flowd_error_set(err, FLOWD_E_INTERNAL, "internal",
					    "", "out of memory");
done:
	free(expr);
	free(zone);
	free(from);
	free(count);
	free(missing);
	free(repeated);
	return rc;
}

void reads_cron_preview(void *arg, const struct view *v,
			struct api_request *req)
{
	struct flowd_error err;
	json_t *out = NULL;

	flowd_error_clear(&err);
	if (cron_preview(req, now_s(arg), &out, &err) != 0)
		api_request_reply_error(req, &err);
	else
		api_request_reply_json(req, 200, out);
}

/* ------------------------------------------------------------------------
 * A/B: GET /v1/projects/{project}/flows/{flow}/compare (docs/lifecycle.md)
 */

/* ?branches=prod,test.x (2..8 branches) into req->list_tags, ?limit=
 * (1..100, default 20). */
int reads_compare_query(struct api_request *req, const struct flowd_limits *lim,
			struct flowd_error *err)
{
	char *list = NULL, *limit = NULL, *save = NULL, *one;
	unsigned long v;
	int rc = -1;

	if (api_request_query(req, "branches", &list, err) != 0 ||
	    api_request_query(req, "limit", &limit, err) != 0)
		goto out;
	if (list == NULL) {
		flowd_error_set(err, FLOWD_E_INVALID, "invalid_query", "branches",
				"name two branches or more: branches=prod,test.x");
		goto out;
	}
	req->list_tags = calloc(9, sizeof *req->list_tags);
	if (req->list_tags == NULL) {
		flowd_error_set(err, FLOWD_E_UNAVAILABLE, "unavailable", "",
				"out of memory");
		goto out;
	}
	for (one = strtok_r(list, ",", &save); one != NULL;
	     one = strtok_r(NULL, ",", &save)) {
		if (!spec_branch_name_valid(one) || req->n_list_tags == 8) {
			flowd_error_set(err, FLOWD_E_INVALID, "invalid_query",
					"branches",
					"2 to 8 branches (main, prod, test.<name>, "
					"user.<name>), comma-separated");
			goto out;
		}
		req->list_tags[req->n_list_tags] = strdup(one);
		if (req->list_tags[req->n_list_tags++] == NULL) {
			flowd_error_set(err, FLOWD_E_UNAVAILABLE, "unavailable",
					"", "out of memory");
			goto out;
		}
	}
	if (req->n_list_tags < 2) {
		flowd_error_set(err, FLOWD_E_INVALID, "invalid_query", "branches",
				"name two branches or more");
		goto out;
	}
	req->limit = 20;
	if (limit != NULL) {
		if (api_uint_parse(limit, 1, 100, &v) != 0) {
			flowd_error_set(err, FLOWD_E_INVALID, "invalid_query",
					"limit", "must be 1 to 100");
			goto out;
		}
		req->limit = (unsigned)v;
	}
	rc = 0;
out:
	free(list);
	free(limit);
	return rc;
}

void reads_compare(void *arg, const struct view *v, struct api_request *req)
{
	struct spec_flow_key k;
	char *text;

	spec_flow_key_split(req->flow, &k);
	text = view_compare_text(v, k.project, k.flow, req->list_tags,
				 req->n_list_tags, req->limit, 10000);
	if (text == NULL) {
		reply_error(req, FLOWD_E_UNAVAILABLE, "unavailable", "",
			    "out of memory");
		return;
	}
	api_request_reply_take(req, 200, text);
}

/* ------------------------------------------------------------------------
 * Events (GET /v1/events, from PostgreSQL)
 */

struct events_query {
	char *name;                 /* ?name=, or NULL */
	unsigned limit;             /* ?limit=, default 50 */
	uint64_t before_index;      /* ?cursor=<index>:<id> */
	char *before_id;            /* or NULL */
};

static void events_query_free(struct events_query *q)
{
	free(q->name);
	free(q->before_id);
}

static int events_query_parse(const struct api_request *req,
			      const struct flowd_limits *lim,
			      struct events_query *q, struct flowd_error *err)
{
	char *limit = NULL, *cursor = NULL, *colon;
	unsigned long v;
	int rc = -1;

	memset(q, 0, sizeof *q);
	q->limit = 50 < lim->max_runs_page ? 50 : lim->max_runs_page;
	if (api_request_query(req, "name", &q->name, err) != 0 ||
	    api_request_query(req, "limit", &limit, err) != 0 ||
	    api_request_query(req, "cursor", &cursor, err) != 0)
		goto out;
	if (q->name != NULL && !spec_event_name_valid(q->name)) {
		flowd_error_set(err, FLOWD_E_INVALID, "invalid_query", "name",
				"must match [A-Za-z0-9_-]{1,128}");
		goto out;
	}
	if (limit != NULL) {
		if (api_uint_parse(limit, 1, lim->max_runs_page, &v) != 0) {
			flowd_error_set(err, FLOWD_E_INVALID, "invalid_query",
					"limit", "must be 1 to %u",
					(unsigned)lim->max_runs_page);
			goto out;
		}
		q->limit = (unsigned)v;
	}
	if (cursor != NULL) {
		colon = strchr(cursor, ':');
		if (colon != NULL)
			*colon = '\0';
		if (colon == NULL ||
		    api_uint_parse(cursor, 1, INT64_MAX, &v) != 0 ||
		    !api_id_valid(colon + 1, 128)) {
			flowd_error_set(err, FLOWD_E_INVALID, "invalid_query",
					"cursor",
					"must be a next_cursor of a page");
			goto out;
		}
		q->before_index = v;
		q->before_id = strdup(colon + 1);
		if (q->before_id == NULL) {
			flowd_error_set(err, FLOWD_E_UNAVAILABLE, "unavailable",
					"", "out of memory");
			goto out;
		}
	}
	rc = 0;
out:
	free(limit);
	free(cursor);
	if (rc != 0)
		events_query_free(q);
	return rc;
}

int reads_events_query(struct api_request *req, const struct flowd_limits *lim,
		       struct flowd_error *err)
{
	struct events_query q;

	if (events_query_parse(req, lim, &q, err) != 0)
		return -1;
	events_query_free(&q);
	return 0;
}

void reads_events(void *arg, const struct view *v, struct api_request *req)
{
	struct reads *rd = arg;
	struct flowd_limits lim;
	struct events_query q;
	struct flowd_error err;
	json_t *list = NULL, *last, *cursor = json_null();
	char text[200];

	flowd_limits_defaults(&lim);
	lim.max_runs_page = rd->max_page ? rd->max_page : lim.max_runs_page;
	flowd_error_clear(&err);
	if (events_query_parse(req, &lim, &q, &err) != 0) /* checked already */
		goto error;
	if (rd->reader == NULL) {
		flowd_error_set(&err, FLOWD_E_UNAVAILABLE, "unavailable", "",
				"events are read from PostgreSQL");
		events_query_free(&q);
		goto error;
	}
	if (storage_reader_events(rd->reader, q.name, q.before_index,
				  q.before_id, q.limit, &list, &err) != 0) {
		events_query_free(&q);
		goto error;
	}
	events_query_free(&q);
	last = json_array_get(list, json_array_size(list) - 1);
	if (json_array_size(list) == q.limit && last != NULL) {
		snprintf(text, sizeof text, "%lld:%s",
			 (long long)json_integer_value(
				 json_object_get(last, "index")),
			 json_string_value(json_object_get(last, "id")));
		cursor = json_string(text);
	}
	api_request_reply_json(req, 200,
			       json_pack("{s:o, s:o}", "events", list,
					 "next_cursor", cursor));
	return;
error:
	api_request_reply_error(req, &err);
}
