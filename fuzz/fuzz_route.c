/* fuzz_route.c - an HTTP request as the api takes it apart (api/route.c)
 * against flowd's route table (daemon/routes.c): method and path matching,
 * path parameters and percent-decoding, the query hooks, the body schemas
 * and parse hooks, then the read handler of the row (daemon/reads.c) on a
 * published read view.
 *
 * Input, line by line:
 *   1  the method
 *   2  the target, "path?query" (query pairs "k=v" split on '&', values
 *      raw, as MHD hands them over)
 *   3  the Content-Type header value
 *   4- the body (everything after the third newline)
 *
 * The steps are server.c's (route_request, body_attach, answer_read).
 * Beyond "no crash, no leak, no undefined behaviour": a refusal is a 4xx
 * with a kind and valid UTF-8 text (it becomes a JSON body); a read
 * handler answers with JSON and never with a 500. Handlers that need
 * PostgreSQL, the change feed, metrics or other nodes (logs, watch, events,
 * metrics) are not called. */
#include <jansson.h>

#include "api/route.h"
#include "core/fsm.h"
#include "core/view.h"
#include "daemon/reads.h"
#include "daemon/routes.h"
#include "fuzz/fuzz.h"

#define MAX_PAIRS 16

struct query {
	char *key[MAX_PAIRS], *value[MAX_PAIRS];
	size_t n;
};

static struct flowd_limits lim;
static struct view_store *views;
static struct reads rd;

static const char *query_get(void *arg, const char *key)
{
	const struct query *q = arg;

	for (size_t i = 0; i < q->n; i++)
		if (strcmp(q->key[i], key) == 0)
			return q->value[i];
	return NULL;
}

static int64_t fixed_now(void *arg)
{
	return INT64_C(1800000000000); /* 2027-01-15 */
}

static void apply(struct fsm *f, uint64_t *index, char *buf, size_t len)
{
	FUZZ_CHECK(buf != NULL, "a command did not encode");
	fsm_apply(f, ++*index, buf, len);
	free(buf);
}

/* The view the read handlers answer from: a flow with a schedule, a
 * node, a run. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const struct view_cluster cl = {.node_id = 1,
					       .role = "leader"};
	struct fsm f;
	json_t *spec = json_loads(
		"{\"steps\":[{\"name\":\"extract\",\"command\":[\"true\"]},"
		"{\"name\":\"load\",\"command\":[\"true\"],"
		"\"depends_on\":[\"extract\"]}],\"triggers\":{\"schedules\":"
		"[{\"cron\":\"*/5 * * * *\",\"timezone\":\"Europe/Berlin\"}]}}",
		0, NULL);
	uint64_t index = 0;
	char *buf, *rows;
	size_t len;

	fuzz_setup();
	flowd_limits_defaults(&lim);
	rd.clock.now_ms = fixed_now;
	fsm_init(&f, NULL);
	fsm_cmd_deploy(1700000000000, "etl", spec, &buf, &len);
	apply(&f, &index, buf, len);
	fsm_cmd_node_up(1700000000000, 1, 7, 2, "127.0.0.1:8080", &buf, &len);
	apply(&f, &index, buf, len);
	fsm_cmd_run_create(1700000001000, "etl", NULL, "k", NULL, NULL, &buf, &len);
	apply(&f, &index, buf, len);
	rows = fsm_take_records(&f, &index);
	free(rows);
	views = view_store_new();
	FUZZ_CHECK(views != NULL, "view_store_new");
	view_store_update(views, &f);
	view_store_publish(views, &cl);
	fsm_close(&f);
	json_decref(spec);
	return 0;
}

static void check_refusal(const struct flowd_error *err)
{
	int status = api_http_status(err->errc);
	json_t *j = json_pack("{s:s, s:s, s:s}", "code", err->code, "field",
			      err->field, "message", err->message);

	FUZZ_CHECK(status >= 400 && status < 500, "a refusal with status %d",
		   status);
	FUZZ_CHECK(j != NULL, "error text is not UTF-8: %s: %s", err->field,
		   err->message);
	json_decref(j);
}

static void parse_query(struct query *q, const char *s, size_t len)
{
	size_t at = 0;

	while (at <= len && q->n < MAX_PAIRS) {
		const char *amp = memchr(s + at, '&', len - at);
		size_t end = amp ? (size_t)(amp - s) : len;
		const char *eq = memchr(s + at, '=', end - at);
		size_t klen = eq ? (size_t)(eq - (s + at)) : end - at;

		q->key[q->n] = fuzz_strndup(s + at, klen);
		q->value[q->n] = eq ? fuzz_strndup(eq + 1, end - klen - at - 1)
				    : fuzz_strndup("", 0);
		q->n++;
		at = end + 1;
	}
}

/* server.c's body_attach. */
static int attach_body(const struct api_route *row, struct api_request *req,
		       const char *ctype, const char *body, size_t len,
		       struct flowd_error *err)
{
	json_t *doc;
	int rc;

	if (row->body == API_BODY_NONE)
		return 0;
	if (row->body == API_BODY_RAW)
		return api__content_type_is_json(ctype)
			       ? api__command_body(body, len, err)
			       : flowd_error_set(err, FLOWD_E_MEDIA_TYPE,
						 "unsupported_media_type", "",
						 "not json");
	if (len == 0 && row->body == API_BODY_JSON_OPT)
		return api__body_check(row, NULL, &lim, err);
	if (!api__content_type_is_json(ctype))
		return flowd_error_set(err, FLOWD_E_MEDIA_TYPE,
				       "unsupported_media_type", "",
				       "not json");
	doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
	if (doc == NULL)
		return flowd_error_set(err, FLOWD_E_INVALID, "invalid_json", "",
				       "invalid JSON");
	if (row->parse != NULL)
		rc = row->parse(&doc, &lim, err);
	else
		rc = api__body_check(row, doc, &lim, err);
	if (rc != 0) {
		json_decref(doc);
		return -1;
	}
	req->body = doc;
	return 0;
}

static bool readable(const struct api_route *row)
{
	static const char *const skip[] = {"logs", "watch", "event_list",
					   "metrics", NULL};

	if (row->read == NULL)
		return false;
	for (size_t i = 0; skip[i] != NULL; i++)
		if (row->name != NULL && strcmp(row->name, skip[i]) == 0)
			return false;
	return true;
}

static void answer(const struct api_route *row, struct api_request *req)
{
	struct view_guard g;
	const struct view *v = view_acquire(views, &g);

	if (row->probe != NULL)
		(void)row->probe(v, req);
	row->read(&rd, (row->flags & API_ROUTE_VIEW) ? v : NULL, req);
	view_release(&g);
	FUZZ_CHECK(req->status != 500, "%s answered 500: %s", row->name,
		   req->resp_body ? req->resp_body : "");
	if (req->resp_body != NULL && req->status != 0) {
		json_t *j = json_loads(req->resp_body, JSON_DECODE_ANY, NULL);

		if (row->name != NULL && strncmp(row->name, "web_", 4) != 0)
			FUZZ_CHECK(j != NULL,
				   "%s answered with no JSON: %.200s",
				   row->name, req->resp_body);
		json_decref(j);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *line, *q;
	size_t at = 0, len;
	char *method = NULL, *path = NULL, *ctype = NULL;
	struct query query = {.n = 0};
	struct api__route route;
	struct api_request req;
	struct flowd_error err;

	memset(&route, 0, sizeof route);
	memset(&req, 0, sizeof req);
	flowd_error_clear(&err);
	if (!fuzz_line(data, size, &at, &line, &len))
		return 0;
	method = fuzz_strndup(line, len);
	if (!fuzz_line(data, size, &at, &line, &len))
		goto out;
	q = memchr(line, '?', len);
	path = fuzz_strndup(line, q ? (size_t)(q - line) : len);
	if (q != NULL)
		parse_query(&query, q + 1, len - (size_t)(q - line) - 1);
	if (fuzz_line(data, size, &at, &line, &len))
		ctype = fuzz_strndup(line, len);
	if (at > size)
		at = size;

	if (api__route_match(routes_table, method, path, &route, &err) != 0) {
		FUZZ_CHECK(route.row == NULL, "a refused match with a row");
		check_refusal(&err);
		goto out;
	}
	FUZZ_CHECK(route.row != NULL, "a match without a row");
	if (api__route_validate(&route, query_get, &query,
				&lim, &req, &err) != 0) {
		check_refusal(&err);
		goto out;
	}
	FUZZ_CHECK(req.route == route.row, "validate did not set the row");
	if (attach_body(route.row, &req, ctype, (const char *)data + at,
			size - at, &err) != 0) {
		check_refusal(&err);
		goto out;
	}
	if (readable(route.row))
		answer(route.row, &req);
out:
	api__request_clear(&req);
	api__route_close(&route);
	for (size_t i = 0; i < query.n; i++) {
		free(query.key[i]);
		free(query.value[i]);
	}
	free(method);
	free(path);
	free(ctype);
	return 0;
}
