/* test_api_route.c - unit tests of api/route.c against flowd's route table
 * (daemon/routes.c): matching, Allow, path and query validation by the row,
 * percent-decoding, authorization by role, the body schema checker and the
 * schemas of the run-create, event, backfill and cluster membership bodies,
 * and the table check done at start. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* cmocka.h needs the headers above first */
#include <cmocka.h>

#include <arpa/inet.h>

#include "api/route.h"
#include "core/limits.h"
#include "daemon/reads.h"
#include "daemon/routes.h"

/* ------------------------------------------------------------------------
 * Fixtures
 */

/* A query: pairs of key, raw value; NULL ends it. */
static const char *lookup(void *arg, const char *key)
{
	const char **q = arg;

	for (; q != NULL && q[0] != NULL; q += 2)
		if (strcmp(q[0], key) == 0)
			return q[1];
	return NULL;
}

struct parsed {
	struct api__route route;
	struct api_request req;
	struct flowd_error err;
	struct flowd_limits lim;
};

/* Match and validate; returns the HTTP status of the error, or 0. */
static int parse(struct parsed *p, const char *method, const char *path,
		 const char **query)
{
	memset(p, 0, sizeof *p);
	flowd_limits_defaults(&p->lim);
	if (api__route_match(routes_table, method, path, &p->route, &p->err) !=
	    0)
		return api_http_status(p->err.errc);
	if (api__route_validate(&p->route, lookup, (void *)query, &p->lim,
				&p->req, &p->err) != 0)
		return api_http_status(p->err.errc);
	return 0;
}

static void done(struct parsed *p)
{
	api__request_clear(&p->req);
	api__route_close(&p->route);
}

/* ?attempt= of a parsed logs request, as its read handler sees it. */
static int logs_attempt(struct parsed *p)
{
	int attempt = -1;

	assert_int_equal(reads_logs_attempt(&p->req, &attempt, &p->err), 0);
	return attempt;
}

/* ------------------------------------------------------------------------
 * Routing
 */

#define VIEW_READ (API_ROUTE_VIEW | API_ROUTE_CONSISTENT)

static void route_table_maps_each_path_to_its_row(void **state)
{
	static const struct {
		const char *method, *path, *name;
		enum api_role role;
		enum api_body body;
		unsigned flags;
		int write; /* a submit handler, else a read handler */
	} cases[] = {
		{"GET", "/v1/flows", "flow_list", API_ROLE_READER,
		 API_BODY_NONE, VIEW_READ, 0},
		{"GET", "/v1/flows/etl", "flow_get", API_ROLE_READER,
		 API_BODY_NONE, VIEW_READ, 0},
		{"PUT", "/v1/flows/etl", "flow_put", API_ROLE_ADMIN,
		 API_BODY_JSON, 0, 1},
		{"DELETE", "/v1/flows/etl", "flow_delete", API_ROLE_ADMIN,
		 API_BODY_NONE, 0, 1},
		{"GET", "/v1/flows/etl/versions", "flow_versions",
		 API_ROLE_READER, API_BODY_NONE, VIEW_READ, 0},
		{"POST", "/v1/flows/etl/runs", "run_create", API_ROLE_OPERATOR,
		 API_BODY_JSON_OPT, 0, 1},
		{"GET", "/v1/runs", "run_list", API_ROLE_READER, API_BODY_NONE,
		 VIEW_READ, 0},
		{"POST", "/internal/v1/commands", "internal_command",
		 API_ROLE_NODE, API_BODY_RAW, 0, 1},
		{"GET", "/v1/runs/r-1", "run_get", API_ROLE_READER,
		 API_BODY_NONE, VIEW_READ, 0},
		{"POST", "/v1/runs/r-1/cancel", "run_cancel", API_ROLE_OPERATOR,
		 API_BODY_NONE, 0, 1},
		{"GET", "/v1/runs/r-1/steps/extract/logs", "logs",
		 API_ROLE_READER, API_BODY_NONE, API_ROUTE_VIEW, 0},
		{"GET", "/v1/watch", "watch", API_ROLE_READER, API_BODY_NONE, 0,
		 0},
		{"GET", "/v1/events", "event_list", API_ROLE_READER,
		 API_BODY_NONE, 0, 0},
		{"GET", "/", "web_index", API_ROLE_PUBLIC, API_BODY_NONE, 0, 0},
		{"GET", "/ui/app.js", "web_js", API_ROLE_PUBLIC, API_BODY_NONE,
		 0, 0},
		{"GET", "/healthz", "healthz", API_ROLE_PUBLIC, API_BODY_NONE, 0,
		 0},
		{"GET", "/readyz", "readyz", API_ROLE_PUBLIC, API_BODY_NONE,
		 API_ROUTE_VIEW, 0},
		{"GET", "/v1/cluster", "cluster", API_ROLE_READER,
		 API_BODY_NONE, API_ROUTE_VIEW, 0},
		{"HEAD", "/v1/cluster", "cluster", API_ROLE_READER,
		 API_BODY_NONE, API_ROUTE_VIEW, 0},
		{"POST", "/v1/cluster/members", "member_add", API_ROLE_ADMIN,
		 API_BODY_JSON, 0, 1},
		{"DELETE", "/v1/cluster/members/2", "member_remove",
		 API_ROLE_ADMIN, API_BODY_NONE, 0, 1},
		{"POST", "/v1/cluster/leader/transfer", "leader_transfer",
		 API_ROLE_ADMIN, API_BODY_JSON_OPT, 0, 1},
		{"POST", "/v1/events", "event_post", API_ROLE_OPERATOR,
		 API_BODY_JSON, 0, 1},
		{"GET", "/v1/flows/etl/schedule", "schedule_get",
		 API_ROLE_READER, API_BODY_NONE, VIEW_READ, 0},
		{"POST", "/v1/flows/etl/pause", "flow_pause", API_ROLE_OPERATOR,
		 API_BODY_NONE, 0, 1},
		{"POST", "/v1/flows/etl/unpause", "flow_unpause",
		 API_ROLE_OPERATOR, API_BODY_NONE, 0, 1},
		{"POST", "/v1/flows/etl/backfill", "backfill", API_ROLE_OPERATOR,
		 API_BODY_JSON, 0, 1},
		{"GET", "/v1/cron/preview", "cron_preview", API_ROLE_READER,
		 API_BODY_NONE, 0, 0},
	};
	size_t i;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const struct api_route *row;
		struct parsed p;

		assert_int_equal(
			parse(&p, cases[i].method, cases[i].path, NULL), 0);
		row = p.route.row;
		assert_non_null(row);
		assert_ptr_equal(p.req.route, row);
		assert_string_equal(row->name, cases[i].name);
		assert_int_equal(row->role, cases[i].role);
		assert_int_equal(row->body, cases[i].body);
		assert_int_equal(row->flags, cases[i].flags);
		if (cases[i].write) {
			assert_non_null(row->submit);
			assert_null(row->read);
		} else {
			assert_non_null(row->read);
			assert_null(row->submit);
		}
		done(&p);
	}
}

/* The table is checked at start; flowd's passes, and broken rows are
 * named. */
static void dummy_read(void *arg, const struct view *v,
		       struct api_request *req)
{
}

static void dummy_submit(void *arg, struct api_request *req) {}

static void route_table_check_names_a_bad_row(void **state)
{
	static const struct api_field no_fields[] = {{.name = NULL}};
	static const struct api_route bad[][2] = {
		{{.method = "GET", .path = "/x", .name = "none"}},
		{{.method = "GET", .path = "/x", .read = dummy_read,
		  .submit = dummy_submit, .name = "both"}},
		{{.method = "GET", .path = "/x/{nope}", .read = dummy_read,
		  .name = "placeholder"}},
		{{.method = "GET", .path = "/x//y", .read = dummy_read,
		  .name = "empty"}},
		{{.method = "GET", .path = "x", .read = dummy_read,
		  .name = "relative"}},
		{{.method = "GET", .path = "/a/b/c/d/e/f/g/h/i/j", .read = dummy_read,
		  .name = "long"}},
		{{.method = "GET", .path = "/x", .flags = API_ROUTE_CONSISTENT,
		  .read = dummy_read, .name = "consistent"}},
		{{.method = "POST", .path = "/x", .submit = dummy_submit,
		  .fields = no_fields, .name = "fields_without_body"}},
		{{.method = "GET", .path = "/x", .read = dummy_read}},
	};
	char errmsg[200];

	assert_int_equal(
		api__routes_check(routes_table, errmsg, sizeof errmsg), 0);
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		errmsg[0] = '\0';
		if (api__routes_check(bad[i], errmsg, sizeof errmsg) != -1)
			fail_msg("accepted row %zu", i);
		assert_non_null(strstr(errmsg, bad[i][0].path));
	}
}

static void route_fills_path_fields(void **state)
{
	struct parsed p;

	assert_int_equal(
		parse(&p, "GET", "/v1/runs/r-0a:1.x_y/steps/s1/logs", NULL), 0);
	assert_string_equal(p.req.run_id, "r-0a:1.x_y");
	assert_string_equal(p.req.step, "s1");
	assert_int_equal(logs_attempt(&p), 0);
	assert_null(p.req.flow);
	done(&p);

	assert_int_equal(parse(&p, "POST", "/v1/flows/my.flow-1/runs", NULL),
			 0);
	assert_string_equal(p.req.flow, "my.flow-1");
	assert_null(p.req.run_id);
	done(&p);

	/* a flow of a project's branch: the state's key for it */
	assert_int_equal(parse(&p, "POST",
			       "/v1/projects/shop/branches/test.ab-1/flows/etl/runs",
			       NULL),
			 0);
	assert_string_equal(p.req.flow, "shop/test.ab-1/etl");
	assert_string_equal(p.req.project, "shop");
	assert_string_equal(p.req.branch, "test.ab-1");
	done(&p);
	assert_int_equal(parse(&p, "GET",
			       "/v1/projects/default/branches/main/flows/etl",
			       NULL),
			 0);
	assert_string_equal(p.req.flow, "etl"); /* the same flow as /v1/flows/etl */
	done(&p);
	assert_int_equal(parse(&p, "GET",
			       "/v1/projects/shop/branches/prod.x/flows/etl",
			       NULL),
			 400);
	assert_string_equal(p.err.field, "branch");
	done(&p);
	assert_int_equal(parse(&p, "GET",
			       "/v1/projects/a.b/branches/prod/flows/etl", NULL),
			 400);
	assert_string_equal(p.err.field, "project");
	done(&p);
}

static void route_unknown_path_is_404(void **state)
{
	static const char *paths[] = {
		"",
		"//",
		"v1/flows",
		"/v1",
		"/v1/",
		"/v1/flows/",
		"/v1//flows",
		"/v1/flows/etl/",
		"/v1/flows/etl/nope",
		"/v2/flows",
		"/v1/runs/r/steps/s",
		"/v1/runs/r/steps/s/logs/x",
		"/v1/runs/r/steps/s/logs/x/y/z",
		"/healthz/",
		"/HEALTHZ",
	};
	size_t i;

	for (i = 0; i < sizeof paths / sizeof paths[0]; i++) {
		struct parsed p;

		assert_int_equal(parse(&p, "GET", paths[i], NULL), 404);
		assert_string_equal(p.err.code, "not_found");
		done(&p);
	}
}

/* The root is a route of its own (the dashboard), matched only as "/". */
static void route_root_is_the_dashboard(void **state)
{
	struct parsed p;

	assert_int_equal(parse(&p, "GET", "/", NULL), 0);
	assert_string_equal(p.route.row->name, "web_index");
	done(&p);
	assert_int_equal(parse(&p, "POST", "/", NULL), 405);
	assert_string_equal(p.route.allow, "GET, HEAD");
	done(&p);
}

static void route_wrong_method_is_405_with_allow(void **state)
{
	struct parsed p;

	assert_int_equal(parse(&p, "POST", "/v1/flows/etl", NULL), 405);
	assert_string_equal(p.err.code, "method_not_allowed");
	assert_string_equal(p.route.allow, "GET, HEAD, PUT, DELETE");
	done(&p);

	assert_int_equal(parse(&p, "GET", "/v1/runs/r1/cancel", NULL), 405);
	assert_string_equal(p.route.allow, "POST");
	done(&p);

	assert_int_equal(parse(&p, "DELETE", "/healthz", NULL), 405);
	assert_string_equal(p.route.allow, "GET, HEAD");
	done(&p);

	/* 405 is decided before the flow name is looked at */
	assert_int_equal(parse(&p, "PATCH", "/v1/flows/%20bad", NULL), 405);
	done(&p);
}

static void route_bad_flow_name_is_400(void **state)
{
	static const struct {
		const char *method, *path;
	} cases[] = {
		{"GET", "/v1/flows/a%20b"},	{"GET", "/v1/flows/a%2Fb"},
		{"GET", "/v1/flows/%"},		{"GET", "/v1/flows/a%zz"},
		{"GET", "/v1/flows/a%00b"},	{"GET", "/v1/flows/%C3%A9"},
		{"POST", "/v1/flows/a$b/runs"}, {"PUT", "/v1/flows/a:b"},
	};
	size_t i;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct parsed p;

		assert_int_equal(
			parse(&p, cases[i].method, cases[i].path, NULL), 400);
		assert_string_equal(p.err.code, "invalid_value");
		assert_string_equal(p.err.field, "flow");
		done(&p);
	}
}

static void route_flow_name_is_percent_decoded(void **state)
{
	struct parsed p;
	char name[140];

	assert_int_equal(parse(&p, "GET", "/v1/flows/%65tl%2d1", NULL), 0);
	assert_string_equal(p.req.flow, "etl-1");
	done(&p);

	/* 128 characters is the maximum, 129 is too long */
	memset(name, 'a', sizeof name);
	memcpy(name, "/v1/flows/", 10);
	name[10 + 128] = '\0';
	assert_int_equal(parse(&p, "GET", name, NULL), 0);
	done(&p);
	name[10 + 128] = 'a';
	name[10 + 129] = '\0';
	assert_int_equal(parse(&p, "GET", name, NULL), 400);
	done(&p);
}

static void route_bad_run_id_is_404(void **state)
{
	static const char *paths[] = {
		"/v1/runs/a%20b", "/v1/runs/a%2Fb", "/v1/runs/a%",
		"/v1/runs/a+b",	  "/v1/runs/%00",   "/v1/runs/a%2fb/cancel",
	};
	char longid[220];
	struct parsed p;
	size_t i;

	for (i = 0; i < sizeof paths / sizeof paths[0]; i++) {
		const char *m = strstr(paths[i], "cancel") ? "POST" : "GET";

		assert_int_equal(parse(&p, m, paths[i], NULL), 404);
		assert_string_equal(p.err.code, "not_found");
		done(&p);
	}
	memset(longid, 'r', sizeof longid);
	memcpy(longid, "/v1/runs/", 9);
	longid[9 + 200] = '\0';
	assert_int_equal(parse(&p, "GET", longid, NULL), 0);
	done(&p);
	longid[9 + 200] = 'r';
	longid[9 + 201] = '\0';
	assert_int_equal(parse(&p, "GET", longid, NULL), 404);
	done(&p);

	assert_int_equal(parse(&p, "GET", "/v1/runs/r%3A1", NULL), 0);
	assert_string_equal(p.req.run_id, "r:1");
	done(&p);

	assert_int_equal(parse(&p, "GET", "/v1/runs/r1/steps/a%20b/logs", NULL),
			 404);
	done(&p);
}

static void percent_decode_rejects_bad_escapes(void **state)
{
	char *s;

	s = api__percent_decode("a%41%62c", 8);
	assert_string_equal(s, "aAbc");
	free(s);
	s = api__percent_decode("%2F", 3);
	assert_string_equal(s, "/");
	free(s);
	s = api__percent_decode("", 0);
	assert_string_equal(s, "");
	free(s);
	assert_null(api__percent_decode("%4", 2));
	assert_null(api__percent_decode("%", 1));
	assert_null(api__percent_decode("%g1", 3));
	assert_null(api__percent_decode("a%00", 4));
	/* only `len` bytes are read */
	s = api__percent_decode("ab%41", 2);
	assert_string_equal(s, "ab");
	free(s);
	assert_null(api__percent_decode("ab%41", 4));
}

/* ------------------------------------------------------------------------
 * Queries
 */

static void query_run_list_defaults(void **state)
{
	struct parsed p;

	assert_int_equal(parse(&p, "GET", "/v1/runs", NULL), 0);
	assert_int_equal(p.req.limit, 50);
	assert_null(p.req.list_flow);
	assert_null(p.req.list_status);
	assert_int_equal(p.req.cursor, 0);
	assert_int_equal(p.req.consistent, 0);
	done(&p);
}

static void query_run_list_accepts_valid_values(void **state)
{
	const char *q[] = {"flow",  "etl%2D2", "status",     "failed",
			   "limit", "1000",    "cursor",     "42",
			   "other", "ignored", "consistent", "true",
			   NULL};
	struct parsed p;

	assert_int_equal(parse(&p, "GET", "/v1/runs", q), 0);
	assert_string_equal(p.req.list_flow, "etl-2");
	assert_string_equal(p.req.list_status, "failed");
	assert_int_equal(p.req.limit, 1000);
	assert_int_equal(p.req.cursor, 42);
	assert_int_equal(p.req.consistent, 1);
	done(&p);
}

static void query_run_list_rejects_bad_values(void **state)
{
	static const struct {
		const char *key, *value, *field;
	} cases[] = {
		{"status", "done", "status"},
		{"status", "FAILED", "status"},
		{"limit", "0", "limit"},
		{"limit", "1001", "limit"},
		{"limit", "-1", "limit"},
		{"limit", "+5", "limit"},
		{"limit", "5x", "limit"},
		{"limit", " 5", "limit"},
		{"limit", "99999999999999999999999", "limit"},
		{"flow", "a b", "flow"},
		{"flow", "a%zz", "flow"},
		{"consistent", "yes", "consistent"},
	};
	size_t i;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const char *q[] = {cases[i].key, cases[i].value, NULL};
		struct parsed p;

		assert_int_equal(parse(&p, "GET", "/v1/runs", q), 400);
		assert_string_equal(p.err.code, "invalid_query");
		assert_string_equal(p.err.field, cases[i].field);
		done(&p);
	}
}

/* A cursor is the decimal seq from next_cursor: digits only, 1..2^64-1. */
static void query_cursor_is_a_decimal_seq(void **state)
{
	static const char *const bad[] = {
		"-1",	 "%20%205", " 5",	 "5 ",	   "+5",      "0",
		"0x10", "abc",	   "1e3", "18446744073709551616",
		"18446744073709551617", "99999999999999999999999",
	};
	const char *ok[] = {"cursor", "18446744073709551615", NULL};
	struct parsed p;

	assert_int_equal(parse(&p, "GET", "/v1/runs", ok), 0);
	assert_true(p.req.cursor == UINT64_MAX);
	done(&p);
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		const char *q[] = {"cursor", bad[i], NULL};

		assert_int_equal(parse(&p, "GET", "/v1/runs", q), 400);
		assert_string_equal(p.err.code, "invalid_query");
		assert_string_equal(p.err.field, "cursor");
		done(&p);
	}
}

static void query_consistent_on_reads(void **state)
{
	const char *t[] = {"consistent", "true", NULL};
	const char *f[] = {"consistent", "false", NULL};
	const char *bare[] = {"consistent", "", NULL};
	struct parsed p;

	assert_int_equal(parse(&p, "GET", "/v1/flows/etl", t), 0);
	assert_int_equal(p.req.consistent, 1);
	done(&p);
	assert_int_equal(parse(&p, "GET", "/v1/flows/etl", f), 0);
	assert_int_equal(p.req.consistent, 0);
	done(&p);
	assert_int_equal(parse(&p, "GET", "/v1/runs/r1", bare), 0);
	assert_int_equal(p.req.consistent, 1);
	done(&p);
}

/* ?index=N&wait=D: blocking reads on the rows with a probe. */
static void query_blocking_index_and_wait(void **state)
{
	static const struct {
		const char *index, *wait;
		unsigned ms;
	} ok[] = {
		{"0", NULL, 60000},   {"42", "30s", 30000}, {"42", "500ms", 500},
		{"42", "2m", 120000}, {"42", "7", 7000},    {"42", "0", 1},
		{"18446744073709551615", "10m", 600000},
	};
	static const struct {
		const char *k1, *v1, *k2, *v2, *field;
	} bad[] = {
		{"index", "-1", NULL, NULL, "index"},
		{"index", "", NULL, NULL, "index"},
		{"index", "18446744073709551616", NULL, NULL, "index"},
		{"index", "1 ", NULL, NULL, "index"},
		{"index", "1", "wait", "soon", "wait"},
		{"index", "1", "wait", "1h", "wait"},
		{"index", "1", "wait", "601s", "wait"},
		{"index", "1", "wait", "-5s", "wait"},
		{"wait", "5s", NULL, NULL, "wait"},
		{"index", "1", "consistent", "true", "index"},
	};
	struct parsed p;

	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		const char *q[] = {"index", ok[i].index, ok[i].wait ? "wait" : NULL,
				   ok[i].wait, NULL};
		assert_int_equal(parse(&p, "GET", "/v1/runs/r1", q), 0);
		assert_true(p.req.wait_index == strtoull(ok[i].index, NULL, 10));
		assert_int_equal(p.req.wait_ms, ok[i].ms);
		done(&p);
	}
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		const char *q[] = {bad[i].k1, bad[i].v1, bad[i].k2, bad[i].v2,
				   NULL};
		assert_int_equal(parse(&p, "GET", "/v1/flows/etl", q), 400);
		assert_string_equal(p.err.code, "invalid_query");
		assert_string_equal(p.err.field, bad[i].field);
		done(&p);
	}
	/* no index: an ordinary read; rows without a probe ignore it */
	assert_int_equal(parse(&p, "GET", "/v1/runs", NULL), 0);
	assert_int_equal(p.req.wait_ms, 0);
	done(&p);
	const char *q[] = {"index", "5", NULL};
	assert_int_equal(parse(&p, "GET", "/healthz", q), 0);
	assert_int_equal(p.req.wait_ms, 0);
	done(&p);
}

static void query_logs_attempt(void **state)
{
	const char *ok[] = {"attempt", "3", NULL};
	const char *zero[] = {"attempt", "0", NULL};
	const char *neg[] = {"attempt", "-2", NULL};
	const char *text[] = {"attempt", "last", NULL};
	const char *path = "/v1/runs/r1/steps/extract/logs";
	struct parsed p;

	assert_int_equal(parse(&p, "GET", path, ok), 0);
	assert_int_equal(logs_attempt(&p), 3);
	done(&p);
	assert_int_equal(parse(&p, "GET", path, zero), 400);
	assert_string_equal(p.err.field, "attempt");
	done(&p);
	assert_int_equal(parse(&p, "GET", path, neg), 400);
	done(&p);
	assert_int_equal(parse(&p, "GET", path, text), 400);
	done(&p);
}

static void limit_default_respects_small_page_ceiling(void **state)
{
	struct api__route r;
	struct api_request req;
	struct flowd_error err;
	struct flowd_limits lim;

	memset(&req, 0, sizeof req);
	flowd_limits_defaults(&lim);
	lim.max_runs_page = 20;
	assert_int_equal(
		api__route_match(routes_table, "GET", "/v1/runs", &r, &err), 0);
	assert_int_equal(
		api__route_validate(&r, lookup, NULL, &lim, &req, &err), 0);
	assert_int_equal(req.limit, 20);
	api__request_clear(&req);
	api__route_close(&r);
}

/* ------------------------------------------------------------------------
 * Content type and auth
 */

static void content_type_json(void **state)
{
	assert_true(api__content_type_is_json("application/json"));
	assert_true(api__content_type_is_json("Application/JSON"));
	assert_true(
		api__content_type_is_json("application/json; charset=utf-8"));
	assert_true(api__content_type_is_json(" application/json ;charset=x"));
	assert_false(api__content_type_is_json(NULL));
	assert_false(api__content_type_is_json(""));
	assert_false(api__content_type_is_json("text/plain"));
	assert_false(api__content_type_is_json("application/jsonx"));
	assert_false(api__content_type_is_json("application/json-patch+json"));
	assert_false(
		api__content_type_is_json("application/x-www-form-urlencoded"));
}

/* ------------------------------------------------------------------------
 * The body schema checker
 */

/* The row of `method` `path` in flowd's table. */
static const struct api_route *row_of(const char *method, const char *path)
{
	struct api__route r;
	struct flowd_error err;
	const struct api_route *row;

	assert_int_equal(api__route_match(routes_table, method, path, &r, &err),
			 0);
	row = r.row;
	api__route_close(&r);
	return row;
}

/* Parse `text` (NULL: an empty body) and check it by `row`; on success the
 * request holds the body as a handler sees it. Returns 0 or -1. */
static int body_check(const struct api_route *row, const char *text,
		      const struct flowd_limits *lim, struct api_request *req,
		      struct flowd_error *err)
{
	json_t *doc = NULL;
	int rc;

	memset(req, 0, sizeof *req);
	flowd_error_clear(err);
	if (text != NULL) {
		doc = json_loads(text, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY,
				 NULL);
		assert_non_null(doc);
	}
	rc = api__body_check(row, doc, lim, err);
	if (rc == 0)
		req->body = doc; /* freed by api__request_clear */
	else
		json_decref(doc);
	return rc;
}

static int check_not_before(const char *field, const json_t *v,
			    const json_t *body, const struct flowd_limits *lim,
			    struct flowd_error *err)
{
	if (json_integer_value(v) <
	    json_integer_value(json_object_get(body, "a")))
		return flowd_error_set(err, FLOWD_E_INVALID, "invalid_value",
				       field, "below a");
	return 0;
}

/* Unknown keys first, then field by field in the schema's order: missing,
 * type, check; null is absent unless the field says otherwise. */
static void body_schema_checks_in_order(void **state)
{
	static const struct api_field fields[] = {
		{.name = "a", .type = API_JSON_INTEGER,
		 .flags = API_FIELD_REQUIRED, .missing = "a is due"},
		{.name = "b", .type = API_JSON_INTEGER,
		 .check = check_not_before},
		{.name = "c",
		 .flags = API_FIELD_REQUIRED | API_FIELD_NULL_IS_VALUE},
		{.name = "d", .type = API_JSON_STRING},
		{.name = NULL},
	};
	static const struct api_route row = {
		.method = "POST", .path = "/t", .body = API_BODY_JSON,
		.fields = fields, .submit = dummy_submit, .name = "t"};
	static const struct {
		const char *text, *code, *field, *message;
	} bad[] = {
		{NULL, "invalid_type", "", "the body must be a JSON object"},
		{"[]", "invalid_type", "", NULL},
		{"{\"a\":\"x\",\"zz\":1}", "unknown_field", "zz", NULL},
		{"{\"c\":1}", "missing_field", "a", "a is due"},
		{"{\"a\":null,\"c\":1}", "missing_field", "a", NULL},
		{"{\"a\":1.5,\"c\":1}", "invalid_type", "a",
		 "must be an integer"},
		{"{\"a\":2,\"b\":1,\"c\":1}", "invalid_value", "b",
		 "below a"},
		{"{\"a\":2,\"b\":\"x\"}", "invalid_type", "b", NULL},
		{"{\"a\":2}", "missing_field", "c", "required"},
		{"{\"a\":2,\"c\":1,\"d\":5}", "invalid_type", "d",
		 "must be a string"},
	};
	static const char *const ok[] = {
		"{\"a\":1,\"c\":null}",
		"{\"a\":1,\"b\":null,\"c\":[],\"d\":null}",
		"{\"d\":\"x\",\"c\":{},\"b\":3,\"a\":1}",
	};
	struct flowd_limits lim;
	struct api_request req;
	struct flowd_error err;

	flowd_limits_defaults(&lim);
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		if (body_check(&row, bad[i].text, &lim, &req, &err) != -1)
			fail_msg("accepted %s", bad[i].text);
		assert_int_equal(api_http_status(err.errc), 400);
		assert_string_equal(err.code, bad[i].code);
		assert_string_equal(err.field, bad[i].field);
		if (bad[i].message != NULL)
			assert_string_equal(err.message, bad[i].message);
		api__request_clear(&req);
	}
	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		if (body_check(&row, ok[i], &lim, &req, &err) != 0)
			fail_msg("refused %s: %s", ok[i], err.message);
		api__request_clear(&req);
	}
	/* what a handler reads: null is absent */
	assert_int_equal(body_check(&row, ok[1], &lim, &req, &err), 0);
	assert_non_null(api_request_field(&req, "a"));
	assert_null(api_request_field(&req, "b"));
	assert_null(api_request_field(&req, "d"));
	assert_null(api_request_field(&req, "nope"));
	api__request_clear(&req);
	memset(&req, 0, sizeof req);
	assert_null(api_request_field(&req, "a"));
}

/* ------------------------------------------------------------------------
 * Run-create bodies
 */

static int run_body(const char *text, struct api_request *req,
		    struct flowd_error *err)
{
	struct flowd_limits lim;

	flowd_limits_defaults(&lim);
	lim.max_idempotency_key_bytes = 8;
	return body_check(row_of("POST", "/v1/flows/etl/runs"), text, &lim,
			  req, err);
}

/* What the run-create handler reads. */
#define PARAMS(req) api_request_field(req, "parameters")
#define IDEM(req) json_string_value(api_request_field(req, "idempotency_key"))

static void run_body_accepts_valid_shapes(void **state)
{
	struct api_request req;
	struct flowd_error err;

	assert_int_equal(run_body(NULL, &req, &err), 0);
	assert_null(PARAMS(&req));
	assert_null(IDEM(&req));
	api__request_clear(&req);

	assert_int_equal(run_body("{}", &req, &err), 0);
	assert_null(PARAMS(&req));
	api__request_clear(&req);

	assert_int_equal(run_body("{\"parameters\":{\"region\":\"eu\",\"a\":1},"
				  "\"idempotency_key\":\"k1\"}",
				  &req, &err),
			 0);
	assert_non_null(PARAMS(&req));
	assert_string_equal(
		json_string_value(json_object_get(PARAMS(&req), "region")),
		"eu");
	assert_string_equal(IDEM(&req), "k1");
	api__request_clear(&req);

	assert_int_equal(run_body("{\"parameters\":null,"
				  "\"idempotency_key\":null}",
				  &req, &err),
			 0);
	assert_null(PARAMS(&req));
	assert_null(IDEM(&req));
	api__request_clear(&req);

	/* exactly the maximum length */
	assert_int_equal(
		run_body("{\"idempotency_key\":\"12345678\"}", &req, &err), 0);
	api__request_clear(&req);
}

static void run_body_rejects_bad_shapes(void **state)
{
	static const struct {
		const char *text, *code, *field;
	} cases[] = {
		{"[]", "invalid_type", ""},
		{"{\"parameters\":[1]}", "invalid_type", "parameters"},
		{"{\"parameters\":\"x\"}", "invalid_type", "parameters"},
		{"{\"idempotency_key\":5}", "invalid_type", "idempotency_key"},
		{"{\"idempotency_key\":\"\"}", "invalid_value",
		 "idempotency_key"},
		{"{\"idempotency_key\":\"123456789\"}", "invalid_value",
		 "idempotency_key"},
		{"{\"params\":{}}", "unknown_field", "params"},
		{"{\"parameters\":{},\"extra\":1}", "unknown_field", "extra"},
	};
	size_t i;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct api_request req;
		struct flowd_error err;

		assert_int_equal(run_body(cases[i].text, &req, &err), -1);
		assert_int_equal(api_http_status(err.errc), 400);
		assert_string_equal(err.code, cases[i].code);
		assert_string_equal(err.field, cases[i].field);
		assert_null(PARAMS(&req));
		assert_null(IDEM(&req));
		api__request_clear(&req);
	}
}

/* ------------------------------------------------------------------------
 * POST /internal/v1/commands
 */

static void route_internal_command_is_a_node_json_write(void **state)
{
	struct parsed p;

	assert_int_equal(parse(&p, "POST", "/internal/v1/commands", NULL), 0);
	assert_non_null(p.route.row->submit);
	assert_string_equal(p.route.row->name, "internal_command");
	assert_ptr_equal(p.req.route, p.route.row);
	assert_int_equal(p.route.row->role, API_ROLE_NODE);
	assert_int_equal(p.route.row->body, API_BODY_RAW);
	assert_null(p.route.row->fields);
	assert_null(p.route.row->parse);
	assert_string_equal(p.route.allow, "POST");

	done(&p);

	/* a query string does not change the route */
	assert_int_equal(parse(&p, "POST", "/internal/v1/commands",
			       (const char *[]){"consistent", "true", NULL}),
			 0);
	assert_int_equal(p.req.consistent, 0); /* writes ignore it */
	done(&p);

	/* neighbours of the path are not routes */
	assert_int_equal(parse(&p, "POST", "/internal/v1", NULL), 404);
	done(&p);
	assert_int_equal(parse(&p, "POST", "/internal/v1/commands/x", NULL),
			 404);
	done(&p);
	assert_int_equal(parse(&p, "POST", "/internal/v2/commands", NULL), 404);
	done(&p);
	assert_int_equal(parse(&p, "POST", "/internal/v1/commands/", NULL),
			 404);
	done(&p);
}

static void route_internal_command_other_methods_are_405(void **state)
{
	static const char *const methods[] = {"GET", "HEAD", "PUT", "DELETE",
					      "PATCH"};
	size_t i;

	for (i = 0; i < sizeof methods / sizeof methods[0]; i++) {
		struct parsed p;

		assert_int_equal(
			parse(&p, methods[i], "/internal/v1/commands", NULL),
			405);
		assert_string_equal(p.err.code, "method_not_allowed");
		assert_non_null(p.route.allow);
		assert_string_equal(p.route.allow, "POST");
		done(&p);
	}
}

static void command_body_must_be_a_json_object(void **state)
{
	static const char command[] = "{\"type\":\"node\",\"id\":2}";
	static const struct {
		const char *text, *code, *field;
	} bad[] = {
		{"", "missing_field", "body"},
		{" ", "invalid_json", ""},
		{"{", "invalid_json", ""},
		{"[]", "invalid_json", ""},
		{"\"x\"", "invalid_json", ""},
		{"1", "invalid_json", ""},
		{"null", "invalid_json", ""},
		{"{} x", "invalid_json", ""},
		{"{\"a\":1,\"a\":2}", "invalid_json", ""},
	};
	struct flowd_error err;
	size_t i;

	assert_int_equal(api__command_body("{}", 2, &err), 0);
	assert_int_equal(api__command_body(command, strlen(command), &err), 0);
	/* only len bytes are read */
	assert_int_equal(api__command_body("{}garbage", 2, &err), 0);

	assert_int_equal(api__command_body(NULL, 0, &err), -1);
	assert_int_equal(api_http_status(err.errc), 400);
	assert_string_equal(err.code, "missing_field");
	assert_string_equal(err.field, "body");

	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		memset(&err, 0, sizeof err);
		assert_int_equal(api__command_body(bad[i].text,
						   strlen(bad[i].text), &err),
				 -1);
		assert_int_equal(api_http_status(err.errc), 400);
		assert_string_equal(err.code, bad[i].code);
		assert_string_equal(err.field, bad[i].field);
	}
}

/* The request as it arrived (api.h) is owned by the request: clearing it
 * frees every field and resets them (LSan reports a leak otherwise). */
static void request_clear_frees_the_request_as_received(void **state)
{
	struct api_request req;
	static const char body[] = "{\"a\":1}";

	memset(&req, 0, sizeof req);
	req.route = &routes_table[0];
	req.status = 201;
	req.priv = &req;
	req.method = strdup("POST");
	req.target = strdup("/internal/v1/commands?x=a%2Eb");
	req.raw_body = strdup(body);
	req.raw_body_len = sizeof body - 1;
	req.content_type = strdup("application/json");
	req.forwarded = 1;
	req.resp_body = strdup("{}");
	assert_non_null(req.method);
	assert_non_null(req.target);
	assert_non_null(req.raw_body);
	assert_non_null(req.content_type);
	assert_non_null(req.resp_body);

	api__request_clear(&req);
	assert_null(req.method);
	assert_null(req.target);
	assert_null(req.raw_body);
	assert_int_equal(req.raw_body_len, 0);
	assert_null(req.content_type);
	assert_int_equal(req.forwarded, 0);
	assert_null(req.resp_body);
	/* kept */
	assert_ptr_equal(req.route, &routes_table[0]);
	assert_int_equal(req.status, 201);
	assert_ptr_equal(req.priv, &req);

	/* and clearing twice is harmless */
	api__request_clear(&req);
}

/* The backend hands pg_run_id over to the api: clearing the request frees
 * it (LSan reports a leak otherwise). */
static void request_clear_frees_pg_run_id(void **state)
{
	struct api_request req;

	memset(&req, 0, sizeof req);
	req.pg_run_id = strdup("r-000000000001");
	assert_non_null(req.pg_run_id);
	api__request_clear(&req);
	assert_null(req.pg_run_id);
}

/* ------------------------------------------------------------------------
 * Cluster membership: POST /v1/cluster/members,
 * DELETE /v1/cluster/members/{id}, POST /v1/cluster/leader/transfer
 */

static void route_membership_paths_are_admin_writes(void **state)
{
	static const struct {
		const char *method, *path;
	} cases[] = {
		{"POST", "/v1/cluster/members"},
		{"DELETE", "/v1/cluster/members/7"},
		{"POST", "/v1/cluster/leader/transfer"},
	};
	struct parsed p;
	size_t i;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		enum api_role f;

		assert_int_equal(
			parse(&p, cases[i].method, cases[i].path, NULL), 0);
		f = p.route.row->role;
		assert_int_equal(f, API_ROLE_ADMIN);
		assert_non_null(p.route.row->submit);
		done(&p);
	}

	/* GET /v1/cluster is unchanged by its new children */
	assert_int_equal(parse(&p, "GET", "/v1/cluster", NULL), 0);
	assert_string_equal(p.req.route->name, "cluster");
	done(&p);
}

static void route_membership_neighbours_are_404(void **state)
{
	static const char *paths[] = {
		"/v1/cluster/members/",
		"/v1/cluster/members/1/x",
		"/v1/cluster/member",
		"/v1/cluster/leader",
		"/v1/cluster/leader/",
		"/v1/cluster/leader/transfer/2",
		"/v1/cluster/leader/transfer/",
		"/v1/cluster//members",
	};
	size_t i;

	for (i = 0; i < sizeof paths / sizeof paths[0]; i++) {
		struct parsed p;

		assert_int_equal(parse(&p, "POST", paths[i], NULL), 404);
		assert_string_equal(p.err.code, "not_found");
		done(&p);
	}
}

static void route_membership_wrong_methods_are_405(void **state)
{
	static const struct {
		const char *method, *path, *allow;
	} cases[] = {
		{"GET", "/v1/cluster/members", "POST"},
		{"HEAD", "/v1/cluster/members", "POST"},
		{"PUT", "/v1/cluster/members", "POST"},
		{"DELETE", "/v1/cluster/members", "POST"},
		{"PATCH", "/v1/cluster/members", "POST"},
		{"GET", "/v1/cluster/members/2", "DELETE"},
		{"HEAD", "/v1/cluster/members/2", "DELETE"},
		{"POST", "/v1/cluster/members/2", "DELETE"},
		{"PUT", "/v1/cluster/members/2", "DELETE"},
		/* 405 is decided before the id is looked at */
		{"POST", "/v1/cluster/members/abc", "DELETE"},
		{"GET", "/v1/cluster/leader/transfer", "POST"},
		{"PUT", "/v1/cluster/leader/transfer", "POST"},
		{"DELETE", "/v1/cluster/leader/transfer", "POST"},
		{"POST", "/v1/cluster", "GET, HEAD"},
	};
	size_t i;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct parsed p;

		assert_int_equal(
			parse(&p, cases[i].method, cases[i].path, NULL), 405);
		assert_string_equal(p.err.code, "method_not_allowed");
		assert_non_null(p.route.allow);
		assert_string_equal(p.route.allow, cases[i].allow);
		done(&p);
	}
}

static void route_member_remove_parses_the_id(void **state)
{
	static const struct {
		const char *path;
		uint64_t id;
	} ok[] = {
		{"/v1/cluster/members/1", 1},
		{"/v1/cluster/members/42", 42},
		{"/v1/cluster/members/%34%32", 42},
		{"/v1/cluster/members/007", 7},
		{"/v1/cluster/members/9223372036854775807", INT64_MAX},
	};
	static const char *bad[] = {
		"/v1/cluster/members/0",
		"/v1/cluster/members/00",
		"/v1/cluster/members/-1",
		"/v1/cluster/members/+1",
		"/v1/cluster/members/1x",
		"/v1/cluster/members/x",
		"/v1/cluster/members/1.0",
		"/v1/cluster/members/0x10",
		"/v1/cluster/members/%201",
		"/v1/cluster/members/1%20",
		"/v1/cluster/members/1%00",
		"/v1/cluster/members/%zz",
		"/v1/cluster/members/%",
		"/v1/cluster/members/9223372036854775808",
		"/v1/cluster/members/18446744073709551615",
		"/v1/cluster/members/99999999999999999999999",
	};
	size_t i;

	for (i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		struct parsed p;

		assert_int_equal(parse(&p, "DELETE", ok[i].path, NULL), 0);
		assert_string_equal(p.req.route->name, "member_remove");
		assert_true(p.req.member_id == ok[i].id);
		assert_null(p.req.flow);
		assert_null(p.req.run_id);
		done(&p);
	}
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct parsed p;

		assert_int_equal(parse(&p, "DELETE", bad[i], NULL), 400);
		assert_string_equal(p.err.code, "invalid_value");
		assert_string_equal(p.err.field, "id");
		done(&p);
	}
}

static void ipv4_address_parse_accepts_one_spelling(void **state)
{
	static const char *bad[] = {
		"",
		":",
		"1.2.3.4",
		"1.2.3.4:",
		":80",
		"1.2.3.4:0",
		"1.2.3.4:65536",
		"1.2.3.4:080",
		"1.2.3.4:+80",
		"1.2.3.4:-80",
		"1.2.3.4:80 ",
		" 1.2.3.4:80",
		"1.2.3.4 :80",
		"1.2.3.4:8x",
		"1.2.3.4:99999999999999999999999",
		"1.2.3:80",
		"1.2.3.4.5:80",
		"1.2.3.256:80",
		"01.2.3.4:80",
		"localhost:80",
		"[::1]:80",
		"::1:80",
		"1.2.3.4:80:90",
	};
	struct sockaddr_in sa;
	size_t i;

	assert_int_equal(api__ipv4_address_parse("10.0.0.2:7001", &sa), 0);
	assert_int_equal(sa.sin_family, AF_INET);
	assert_int_equal(ntohs(sa.sin_port), 7001);
	assert_int_equal(ntohl(sa.sin_addr.s_addr), 0x0a000002);
	assert_int_equal(api__ipv4_address_parse("127.0.0.1:1", NULL), 0);
	assert_int_equal(api__ipv4_address_parse("255.255.255.255:65535", NULL),
			 0);
	assert_int_equal(api__ipv4_address_parse(NULL, NULL), -1);
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
		if (api__ipv4_address_parse(bad[i], NULL) != -1)
			fail_msg("accepted \"%s\"", bad[i]);
}

/* Check `text` (NULL: an empty body) by the row of POST `path`. */
static int member_body(const char *path, const char *text,
		       struct api_request *req, struct flowd_error *err)
{
	struct flowd_limits lim;

	flowd_limits_defaults(&lim);
	return body_check(row_of("POST", path), text, &lim, req, err);
}

#define MEMBER_ADD "/v1/cluster/members"
#define LEADER_TRANSFER "/v1/cluster/leader/transfer"

/* What the membership handlers read. */
static json_int_t body_id(const struct api_request *req)
{
	return json_integer_value(api_request_field(req, "id"));
}

static const char *body_string(const struct api_request *req,
			       const char *name)
{
	return json_string_value(api_request_field(req, name));
}

static void member_add_body_accepts_a_node(void **state)
{
	struct api_request req;
	struct flowd_error err;

	assert_int_equal(member_body(MEMBER_ADD,
				     "{\"id\":4,"
				     "\"raft_address\":\"10.0.0.4:7001\","
				     "\"api_address\":\"10.0.0.4:8080\"}",
				     &req, &err),
			 0);
	assert_true(body_id(&req) == 4);
	assert_string_equal(body_string(&req, "raft_address"), "10.0.0.4:7001");
	assert_string_equal(body_string(&req, "api_address"), "10.0.0.4:8080");
	api__request_clear(&req);
	assert_null(req.body);

	/* the largest id, keys in any order */
	assert_int_equal(member_body(MEMBER_ADD,
				     "{\"api_address\":\"127.0.0.1:9\","
				     "\"raft_address\":\"127.0.0.1:65535\","
				     "\"id\":9223372036854775807}",
				     &req, &err),
			 0);
	assert_true(body_id(&req) == INT64_MAX);
	assert_string_equal(body_string(&req, "raft_address"),
			    "127.0.0.1:65535");
	assert_string_equal(body_string(&req, "api_address"), "127.0.0.1:9");
	api__request_clear(&req);
}

/* Valid address fields for the rejection table. */
#define RAFT_OK "\"raft_address\":\"10.0.0.4:7001\""
#define API_OK "\"api_address\":\"10.0.0.4:8080\""
#define ADDRS_OK RAFT_OK "," API_OK

static void member_add_body_rejects_bad_shapes(void **state)
{
	static const struct {
		const char *text, *code, *field;
	} cases[] = {
		{NULL, "invalid_type", ""},
		{"[]", "invalid_type", ""},
		{"\"x\"", "invalid_type", ""},
		{"null", "invalid_type", ""},
		{"{}", "missing_field", "id"},
		{"{" ADDRS_OK "}", "missing_field", "id"},
		{"{\"id\":null," ADDRS_OK "}", "missing_field", "id"},
		{"{\"id\":2," API_OK "}", "missing_field", "raft_address"},
		{"{\"id\":2,\"raft_address\":null," API_OK "}",
		 "missing_field", "raft_address"},
		{"{\"id\":2," RAFT_OK "}", "missing_field", "api_address"},
		{"{\"id\":\"2\"," ADDRS_OK "}", "invalid_type", "id"},
		{"{\"id\":2.0," ADDRS_OK "}", "invalid_type", "id"},
		{"{\"id\":true," ADDRS_OK "}", "invalid_type", "id"},
		{"{\"id\":[2]," ADDRS_OK "}", "invalid_type", "id"},
		{"{\"id\":0," ADDRS_OK "}", "invalid_value", "id"},
		{"{\"id\":-3," ADDRS_OK "}", "invalid_value", "id"},
		{"{\"id\":2,\"raft_address\":7001," API_OK "}", "invalid_type",
		 "raft_address"},
		{"{\"id\":2," RAFT_OK ",\"api_address\":{}}", "invalid_type",
		 "api_address"},
		{"{\"id\":2,\"raft_address\":\"node4:7001\"," API_OK "}",
		 "invalid_value", "raft_address"},
		{"{\"id\":2,\"raft_address\":\"10.0.0.4\"," API_OK "}",
		 "invalid_value", "raft_address"},
		{"{\"id\":2,\"raft_address\":\"10.0.0.4:0\"," API_OK "}",
		 "invalid_value", "raft_address"},
		{"{\"id\":2,\"raft_address\":\"\"," API_OK "}", "invalid_value",
		 "raft_address"},
		{"{\"id\":2," RAFT_OK ",\"api_address\":\"10.0.0.4:65536\"}",
		 "invalid_value", "api_address"},
		{"{\"id\":2," RAFT_OK ",\"api_address\":\"[::1]:8080\"}",
		 "invalid_value", "api_address"},
		{"{\"id\":2," ADDRS_OK ",\"voter\":true}", "unknown_field",
		 "voter"},
		/* unknown keys are reported before anything else */
		{"{\"address\":\"x\"}", "unknown_field", "address"},
		{"{\"id\":0,\"ID\":1}", "unknown_field", "ID"},
	};
	size_t i;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct api_request req;
		struct flowd_error err;

		if (member_body(MEMBER_ADD, cases[i].text, &req,
				&err) != -1)
			fail_msg("accepted %s", cases[i].text);
		assert_int_equal(api_http_status(err.errc), 400);
		assert_string_equal(err.code, cases[i].code);
		assert_string_equal(err.field, cases[i].field);
		/* nothing is kept on failure */
		assert_null(req.body);
		api__request_clear(&req);
	}
}

#undef RAFT_OK
#undef API_OK
#undef ADDRS_OK

static void leader_transfer_body_takes_an_optional_id(void **state)
{
	static const struct {
		const char *text;
		uint64_t id;
	} ok[] = {
		{NULL, 0},
		{"{}", 0},
		{"{\"id\":null}", 0},
		{"{\"id\":3}", 3},
		{"{\"id\":9223372036854775807}", INT64_MAX},
	};
	static const struct {
		const char *text, *code, *field;
	} bad[] = {
		{"[]", "invalid_type", ""},
		{"3", "invalid_type", ""},
		{"null", "invalid_type", ""},
		{"{\"id\":\"3\"}", "invalid_type", "id"},
		{"{\"id\":3.5}", "invalid_type", "id"},
		{"{\"id\":false}", "invalid_type", "id"},
		{"{\"id\":0}", "invalid_value", "id"},
		{"{\"id\":-1}", "invalid_value", "id"},
		{"{\"id\":3,\"force\":true}", "unknown_field", "force"},
		{"{\"leader\":3}", "unknown_field", "leader"},
	};
	struct api_request req;
	struct flowd_error err;
	size_t i;

	for (i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		assert_int_equal(member_body(LEADER_TRANSFER,
					     ok[i].text, &req, &err),
				 0);
		assert_true((uint64_t)body_id(&req) == ok[i].id);
		api__request_clear(&req);
	}
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		if (member_body(LEADER_TRANSFER, bad[i].text, &req,
				&err) != -1)
			fail_msg("accepted %s", bad[i].text);
		assert_int_equal(api_http_status(err.errc), 400);
		assert_string_equal(err.code, bad[i].code);
		assert_string_equal(err.field, bad[i].field);
		api__request_clear(&req);
	}
}

/* POST /v1/events and POST /v1/flows/{flow}/backfill. */
static void event_and_backfill_bodies(void **state)
{
	static const struct {
		const char *path, *text, *code, *field;
		int status;
	} bad[] = {
		{"/v1/events", "{}", "missing_field", "name", 400},
		{"/v1/events", "{\"name\":null}", "invalid_value", "name", 400},
		{"/v1/events", "{\"name\":5}", "invalid_value", "name", 400},
		{"/v1/events", "{\"name\":\"a b\"}", "invalid_value", "name",
		 400},
		{"/v1/events", "{\"name\":5,\"x\":1}", "unknown_field", "x", 400},
		{"/v1/events", "{\"name\":\"e\",\"id\":\"\"}", "invalid_value",
		 "id", 400},
		{"/v1/events", "{\"name\":\"e\",\"id\":7}", "invalid_value", "id",
		 400},
		{"/v1/events", "{\"name\":\"e\",\"payload\":[]}", "invalid_type",
		 "payload", 400},
		{"/v1/events", "{\"name\":\"e\",\"payload\":{\"k\":\"0123456789\"}}",
		 "too_large", "payload", 413},
		{"/v1/flows/f/backfill", "{}", "missing_field", "from", 400},
		{"/v1/flows/f/backfill", "{\"from\":null,\"to\":null}",
		 "invalid_value", "from", 400},
		{"/v1/flows/f/backfill",
		 "{\"from\":\"2027-03-14T07:00:00Z\",\"to\":\"yesterday\"}",
		 "invalid_value", "to", 400},
		{"/v1/flows/f/backfill",
		 "{\"from\":\"2027-03-14T07:00:00Z\","
		 "\"to\":\"2027-03-13T07:00:00Z\",\"schedule\":-1}",
		 "invalid_value", "to", 400},
		{"/v1/flows/f/backfill",
		 "{\"from\":\"2027-03-14T07:00:00Z\","
		 "\"to\":\"2027-03-14T07:00:00Z\",\"schedule\":\"0\"}",
		 "invalid_value", "schedule", 400},
		{"/v1/flows/f/backfill",
		 "{\"from\":\"2027-03-14T07:00:00Z\","
		 "\"to\":\"2027-03-15T07:00:00Z\",\"schedule\":1000001}",
		 "invalid_value", "schedule", 400},
	};
	static const struct {
		const char *path, *text;
	} ok[] = {
		{"/v1/events", "{\"name\":\"data_ready\"}"},
		{"/v1/events", "{\"name\":\"e\",\"id\":null,\"payload\":null}"},
		{"/v1/events",
		 "{\"name\":\"e\",\"id\":\"load-1:a.b\",\"payload\":{\"k\":1}}"},
		{"/v1/flows/f/backfill",
		 "{\"from\":\"2027-03-14T07:00:00Z\","
		 "\"to\":\"2027-03-14T07:00:00Z\",\"schedule\":null}"},
		{"/v1/flows/f/backfill",
		 "{\"from\":\"2027-03-14T07:00:00Z\","
		 "\"to\":\"2027-03-15T07:00:00Z\",\"schedule\":2}"},
	};
	struct flowd_limits lim;
	struct api_request req;
	struct flowd_error err;

	flowd_limits_defaults(&lim);
	lim.max_event_bytes = 10;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		if (body_check(row_of("POST", bad[i].path), bad[i].text, &lim,
			       &req, &err) != -1)
			fail_msg("accepted %s", bad[i].text);
		assert_int_equal(api_http_status(err.errc), bad[i].status);
		assert_string_equal(err.code, bad[i].code);
		assert_string_equal(err.field, bad[i].field);
		api__request_clear(&req);
	}
	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		if (body_check(row_of("POST", ok[i].path), ok[i].text, &lim,
			       &req, &err) != 0)
			fail_msg("refused %s: %s", ok[i].text, err.message);
		api__request_clear(&req);
	}
}

/* A path's Allow lists its rows' methods in table order, GET with HEAD. */
static void route_allow_lists_the_rows_of_a_path(void **state)
{
	static const struct api_route table[] = {
		{.method = "DELETE", .path = "/a/{flow}", .submit = dummy_submit,
		 .name = "a_delete"},
		{.method = "GET", .path = "/b", .read = dummy_read, .name = "b"},
		{.method = "GET", .path = "/a/{flow}", .read = dummy_read,
		 .name = "a_get"},
		{.method = NULL},
	};
	struct api__route r;
	struct flowd_error err;

	assert_int_equal(api__route_match(table, "PUT", "/a/x", &r, &err), -1);
	assert_int_equal(api_http_status(err.errc), 405);
	assert_string_equal(r.allow, "DELETE, GET, HEAD");
	api__route_close(&r);
	assert_int_equal(api__route_match(table, "HEAD", "/a/x", &r, &err), 0);
	assert_string_equal(r.row->name, "a_get");
	assert_string_equal(r.raw_flow, "x");
	api__route_close(&r);
	assert_int_equal(api__route_match(table, "GET", "/c", &r, &err), -1);
	assert_int_equal(api_http_status(err.errc), 404);
	api__route_close(&r);
}

/* The one place a domain error becomes HTTP: every kind has its status,
 * and "no error" is never answered as a success. */
static void http_status_of_every_error_kind(void **state)
{
	static const struct {
		enum flowd_errc errc;
		int status;
	} map[] = {
		{FLOWD_E_INVALID, 400},      {FLOWD_E_UNAUTHORIZED, 401},
		{FLOWD_E_FORBIDDEN, 403},    {FLOWD_E_NOT_FOUND, 404},
		{FLOWD_E_METHOD, 405},       {FLOWD_E_CONFLICT, 409},
		{FLOWD_E_TOO_LARGE, 413},    {FLOWD_E_MEDIA_TYPE, 415},
		{FLOWD_E_INTERNAL, 500},     {FLOWD_E_UNAVAILABLE, 503},
		{FLOWD_E_TIMEOUT, 504},      {FLOWD_OK, 500},
	};

	for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
		assert_int_equal(api_http_status(map[i].errc), map[i].status);
	assert_int_equal(api_http_status((enum flowd_errc)99), 500);
}

/* The path parameters and the body are freed by the one free path (LSan
 * reports a leak otherwise). */
static void request_clear_frees_path_parameters_and_body(void **state)
{
	struct api_request req;

	memset(&req, 0, sizeof req);
	req.flow = strdup("etl");
	req.run_id = strdup("r-1");
	req.step = strdup("s1");
	req.body = json_pack("{s:s}", "raft_address", "10.0.0.4:7001");
	req.list_flow = strdup("etl");
	req.list_status = strdup("failed");
	assert_non_null(req.flow);
	assert_non_null(req.run_id);
	assert_non_null(req.step);
	assert_non_null(req.body);
	api__request_clear(&req);
	assert_null(req.flow);
	assert_null(req.run_id);
	assert_null(req.step);
	assert_null(req.body);
	assert_null(req.list_flow);
	assert_null(req.list_status);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(route_table_maps_each_path_to_its_row),
		cmocka_unit_test(route_table_check_names_a_bad_row),
		cmocka_unit_test(route_allow_lists_the_rows_of_a_path),
		cmocka_unit_test(route_fills_path_fields),
		cmocka_unit_test(route_unknown_path_is_404),
		cmocka_unit_test(route_root_is_the_dashboard),
		cmocka_unit_test(route_wrong_method_is_405_with_allow),
		cmocka_unit_test(route_bad_flow_name_is_400),
		cmocka_unit_test(route_flow_name_is_percent_decoded),
		cmocka_unit_test(route_bad_run_id_is_404),
		cmocka_unit_test(percent_decode_rejects_bad_escapes),
		cmocka_unit_test(query_run_list_defaults),
		cmocka_unit_test(query_run_list_accepts_valid_values),
		cmocka_unit_test(query_run_list_rejects_bad_values),
		cmocka_unit_test(query_cursor_is_a_decimal_seq),
		cmocka_unit_test(query_consistent_on_reads),
		cmocka_unit_test(query_blocking_index_and_wait),
		cmocka_unit_test(query_logs_attempt),
		cmocka_unit_test(limit_default_respects_small_page_ceiling),
		cmocka_unit_test(content_type_json),
		cmocka_unit_test(body_schema_checks_in_order),
		cmocka_unit_test(run_body_accepts_valid_shapes),
		cmocka_unit_test(run_body_rejects_bad_shapes),
		cmocka_unit_test(request_clear_frees_pg_run_id),
		cmocka_unit_test(route_internal_command_is_a_node_json_write),
		cmocka_unit_test(route_internal_command_other_methods_are_405),
		cmocka_unit_test(command_body_must_be_a_json_object),
		cmocka_unit_test(request_clear_frees_the_request_as_received),
		cmocka_unit_test(route_membership_paths_are_admin_writes),
		cmocka_unit_test(route_membership_neighbours_are_404),
		cmocka_unit_test(route_membership_wrong_methods_are_405),
		cmocka_unit_test(route_member_remove_parses_the_id),
		cmocka_unit_test(ipv4_address_parse_accepts_one_spelling),
		cmocka_unit_test(member_add_body_accepts_a_node),
		cmocka_unit_test(member_add_body_rejects_bad_shapes),
		cmocka_unit_test(leader_transfer_body_takes_an_optional_id),
		cmocka_unit_test(event_and_backfill_bodies),
		cmocka_unit_test(http_status_of_every_error_kind),
		cmocka_unit_test(request_clear_frees_path_parameters_and_body),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
