/* test_api_route.c - unit tests of api/route.c: routing, path and query
 * validation, percent-decoding, authorization, the run-create body, and the
 * cluster membership routes, bodies and addresses. */
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
	if (api__route_match(method, path, &p->route, &p->err) != 0)
		return p->err.status;
	if (api__route_validate(&p->route, lookup, (void *)query, &p->lim,
				&p->req, &p->err) != 0)
		return p->err.status;
	return 0;
}

static void done(struct parsed *p)
{
	api__request_clear(&p->req);
	api__route_close(&p->route);
}

/* ------------------------------------------------------------------------
 * Routing
 */

static void route_table_maps_each_path_to_its_op(void **state)
{
	static const struct {
		const char *method, *path;
		enum api__target target;
		enum api_op op;
		unsigned flags;
	} cases[] = {
		{"GET", "/v1/flows", API__TARGET_SUBMIT, API_OP_FLOW_LIST, API__ROUTE_VIEW},
		{"GET", "/v1/flows/etl", API__TARGET_SUBMIT, API_OP_FLOW_GET,
		 API__ROUTE_VIEW},
		{"PUT", "/v1/flows/etl", API__TARGET_SUBMIT, API_OP_FLOW_PUT,
		 API__ROUTE_WRITE | API__ROUTE_BODY},
		{"DELETE", "/v1/flows/etl", API__TARGET_SUBMIT,
		 API_OP_FLOW_DELETE, API__ROUTE_WRITE},
		{"GET", "/v1/flows/etl/versions", API__TARGET_SUBMIT,
		 API_OP_FLOW_VERSIONS, API__ROUTE_VIEW},
		{"POST", "/v1/flows/etl/runs", API__TARGET_SUBMIT,
		 API_OP_RUN_CREATE,
		 API__ROUTE_WRITE | API__ROUTE_BODY | API__ROUTE_BODY_OPT},
		{"GET", "/v1/runs", API__TARGET_SUBMIT, API_OP_RUN_LIST, API__ROUTE_VIEW},
		{"POST", "/internal/v1/commands", API__TARGET_SUBMIT,
		 API_OP_INTERNAL_COMMAND, API__ROUTE_WRITE | API__ROUTE_BODY},
		{"GET", "/v1/runs/r-1", API__TARGET_SUBMIT, API_OP_RUN_GET, API__ROUTE_VIEW},
		{"POST", "/v1/runs/r-1/cancel", API__TARGET_SUBMIT,
		 API_OP_RUN_CANCEL, API__ROUTE_WRITE},
		{"GET", "/v1/runs/r-1/steps/extract/logs", API__TARGET_LOGS, 0,
		 0},
		{"GET", "/healthz", API__TARGET_HEALTHZ, 0, API__ROUTE_PUBLIC},
		{"GET", "/readyz", API__TARGET_SUBMIT, API_OP_READYZ,
		 API__ROUTE_PUBLIC | API__ROUTE_VIEW},
		{"GET", "/v1/cluster", API__TARGET_SUBMIT, API_OP_CLUSTER,
		 API__ROUTE_VIEW},
		{"HEAD", "/v1/cluster", API__TARGET_SUBMIT, API_OP_CLUSTER,
		 API__ROUTE_VIEW},
		{"POST", "/v1/cluster/members", API__TARGET_SUBMIT,
		 API_OP_MEMBER_ADD, API__ROUTE_WRITE | API__ROUTE_BODY},
		{"DELETE", "/v1/cluster/members/2", API__TARGET_SUBMIT,
		 API_OP_MEMBER_REMOVE, API__ROUTE_WRITE},
		{"POST", "/v1/cluster/leader/transfer", API__TARGET_SUBMIT,
		 API_OP_LEADER_TRANSFER,
		 API__ROUTE_WRITE | API__ROUTE_BODY | API__ROUTE_BODY_OPT},
	};
	size_t i;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct parsed p;

		assert_int_equal(
			parse(&p, cases[i].method, cases[i].path, NULL), 0);
		assert_int_equal(p.route.target, cases[i].target);
		if (cases[i].target == API__TARGET_SUBMIT)
			assert_int_equal(p.req.op, cases[i].op);
		assert_int_equal(p.route.flags, cases[i].flags);
		done(&p);
	}
}

static void route_fills_path_fields(void **state)
{
	struct parsed p;

	assert_int_equal(
		parse(&p, "GET", "/v1/runs/r-0a:1.x_y/steps/s1/logs", NULL), 0);
	assert_string_equal(p.req.run_id, "r-0a:1.x_y");
	assert_string_equal(p.route.step, "s1");
	assert_int_equal(p.route.attempt, 0);
	assert_null(p.req.flow);
	done(&p);

	assert_int_equal(parse(&p, "POST", "/v1/flows/my.flow-1/runs", NULL),
			 0);
	assert_string_equal(p.req.flow, "my.flow-1");
	assert_null(p.req.run_id);
	done(&p);
}

static void route_unknown_path_is_404(void **state)
{
	static const char *paths[] = {
		"/",
		"",
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

static void query_logs_attempt(void **state)
{
	const char *ok[] = {"attempt", "3", NULL};
	const char *zero[] = {"attempt", "0", NULL};
	const char *neg[] = {"attempt", "-2", NULL};
	const char *text[] = {"attempt", "last", NULL};
	const char *path = "/v1/runs/r1/steps/extract/logs";
	struct parsed p;

	assert_int_equal(parse(&p, "GET", path, ok), 0);
	assert_int_equal(p.route.attempt, 3);
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
	assert_int_equal(api__route_match("GET", "/v1/runs", &r, &err), 0);
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

static void auth_role_from_bearer_token(void **state)
{
	char *admin[] = {"adm1n-secret", "second-admin", NULL};
	char *reader[] = {"read-only", NULL};

	assert_int_equal(api__auth_role("Bearer adm1n-secret", admin, reader),
			 API__ROLE_ADMIN);
	assert_int_equal(api__auth_role("bearer  second-admin ", admin, reader),
			 API__ROLE_ADMIN);
	assert_int_equal(api__auth_role("Bearer read-only", admin, reader),
			 API__ROLE_READER);
	assert_int_equal(api__auth_role(NULL, admin, reader), API__ROLE_NONE);
	assert_int_equal(api__auth_role("", admin, reader), API__ROLE_NONE);
	assert_int_equal(api__auth_role("Bearer", admin, reader),
			 API__ROLE_NONE);
	assert_int_equal(api__auth_role("Bearer ", admin, reader),
			 API__ROLE_NONE);
	assert_int_equal(api__auth_role("Basic adm1n-secret", admin, reader),
			 API__ROLE_NONE);
	assert_int_equal(api__auth_role("Beareradm1n-secret", admin, reader),
			 API__ROLE_NONE);
	/* prefixes, extensions and near misses do not match */
	assert_int_equal(api__auth_role("Bearer adm1n", admin, reader),
			 API__ROLE_NONE);
	assert_int_equal(api__auth_role("Bearer adm1n-secretX", admin, reader),
			 API__ROLE_NONE);
	assert_int_equal(api__auth_role("Bearer adm1n-secreT", admin, reader),
			 API__ROLE_NONE);
	/* a token repeated cyclically must not match (index wraps) */
	assert_int_equal(
		api__auth_role("Bearer read-onlyread-only", admin, reader),
		API__ROLE_NONE);
	assert_int_equal(api__auth_role("Bearer read-only", NULL, reader),
			 API__ROLE_READER);
	assert_int_equal(api__auth_role("Bearer read-only", NULL, NULL),
			 API__ROLE_NONE);
}

static void authorize_by_route_and_role(void **state)
{
	struct flowd_error err;

	/* open server: everything */
	assert_int_equal(
		api__authorize(API__ROUTE_WRITE, API__ROLE_NONE, 1, &err), 0);
	/* public routes need nothing */
	assert_int_equal(
		api__authorize(API__ROUTE_PUBLIC, API__ROLE_NONE, 0, &err), 0);
	assert_int_equal(api__authorize(0, API__ROLE_NONE, 0, &err), -1);
	assert_int_equal(err.status, 401);
	assert_string_equal(err.code, "unauthorized");
	assert_int_equal(api__authorize(0, API__ROLE_READER, 0, &err), 0);
	assert_int_equal(api__authorize(0, API__ROLE_ADMIN, 0, &err), 0);
	assert_int_equal(
		api__authorize(API__ROUTE_WRITE, API__ROLE_READER, 0, &err),
		-1);
	assert_int_equal(err.status, 403);
	assert_string_equal(err.code, "forbidden");
	assert_int_equal(
		api__authorize(API__ROUTE_WRITE, API__ROLE_NONE, 0, &err), -1);
	assert_int_equal(err.status, 401);
	assert_int_equal(
		api__authorize(API__ROUTE_WRITE, API__ROLE_ADMIN, 0, &err), 0);
}

/* ------------------------------------------------------------------------
 * Run-create bodies
 */

static int run_body(const char *text, struct api_request *req,
		    struct flowd_error *err)
{
	struct flowd_limits lim;
	json_t *doc = NULL;
	int rc;

	flowd_limits_defaults(&lim);
	lim.max_idempotency_key_bytes = 8;
	memset(req, 0, sizeof *req);
	flowd_error_clear(err);
	if (text != NULL) {
		doc = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
		assert_non_null(doc);
	}
	rc = api__run_create_body(doc, &lim, req, err);
	json_decref(doc);
	return rc;
}

static void run_body_accepts_valid_shapes(void **state)
{
	struct api_request req;
	struct flowd_error err;

	assert_int_equal(run_body(NULL, &req, &err), 0);
	assert_null(req.params);
	assert_null(req.idempotency_key);
	api__request_clear(&req);

	assert_int_equal(run_body("{}", &req, &err), 0);
	assert_null(req.params);
	api__request_clear(&req);

	assert_int_equal(run_body("{\"parameters\":{\"region\":\"eu\",\"a\":1},"
				  "\"idempotency_key\":\"k1\"}",
				  &req, &err),
			 0);
	assert_non_null(req.params);
	assert_string_equal(
		json_string_value(json_object_get(req.params, "region")), "eu");
	assert_string_equal(req.idempotency_key, "k1");
	api__request_clear(&req);

	assert_int_equal(run_body("{\"parameters\":null,"
				  "\"idempotency_key\":null}",
				  &req, &err),
			 0);
	assert_null(req.params);
	assert_null(req.idempotency_key);
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
		assert_int_equal(err.status, 400);
		assert_string_equal(err.code, cases[i].code);
		assert_string_equal(err.field, cases[i].field);
		assert_null(req.params);
		assert_null(req.idempotency_key);
		api__request_clear(&req);
	}
}

/* ------------------------------------------------------------------------
 * POST /internal/v1/commands
 */

static void route_internal_command_is_an_admin_json_write(void **state)
{
	struct parsed p;
	struct flowd_error err;
	unsigned f;

	assert_int_equal(parse(&p, "POST", "/internal/v1/commands", NULL), 0);
	assert_int_equal(p.route.target, API__TARGET_SUBMIT);
	assert_int_equal(p.route.op, API_OP_INTERNAL_COMMAND);
	assert_int_equal(p.req.op, API_OP_INTERNAL_COMMAND);
	assert_int_equal(p.route.flags, API__ROUTE_WRITE | API__ROUTE_BODY);
	assert_string_equal(p.route.allow, "POST");

	/* same auth rules as other writes; open when no token is set */
	f = p.route.flags;
	assert_int_equal(api__authorize(f, API__ROLE_ADMIN, 0, &err), 0);
	assert_int_equal(api__authorize(f, API__ROLE_READER, 0, &err), -1);
	assert_int_equal(err.status, 403);
	assert_int_equal(api__authorize(f, API__ROLE_NONE, 0, &err), -1);
	assert_int_equal(err.status, 401);
	assert_int_equal(api__authorize(f, API__ROLE_NONE, 1, &err), 0);
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
	assert_int_equal(err.status, 400);
	assert_string_equal(err.code, "missing_field");
	assert_string_equal(err.field, "body");

	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		memset(&err, 0, sizeof err);
		assert_int_equal(api__command_body(bad[i].text,
						   strlen(bad[i].text), &err),
				 -1);
		assert_int_equal(err.status, 400);
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
	req.op = API_OP_INTERNAL_COMMAND;
	req.status = 201;
	req.priv = &req;
	req.method = strdup("POST");
	req.target = strdup("/internal/v1/commands?x=a%2Eb");
	req.raw_body = strdup(body);
	req.raw_body_len = sizeof body - 1;
	req.authorization = strdup("Bearer admin-token");
	req.content_type = strdup("application/json");
	req.forwarded = 1;
	req.resp_body = strdup("{}");
	assert_non_null(req.method);
	assert_non_null(req.target);
	assert_non_null(req.raw_body);
	assert_non_null(req.authorization);
	assert_non_null(req.content_type);
	assert_non_null(req.resp_body);

	api__request_clear(&req);
	assert_null(req.method);
	assert_null(req.target);
	assert_null(req.raw_body);
	assert_int_equal(req.raw_body_len, 0);
	assert_null(req.authorization);
	assert_null(req.content_type);
	assert_int_equal(req.forwarded, 0);
	assert_null(req.resp_body);
	/* kept */
	assert_int_equal(req.op, API_OP_INTERNAL_COMMAND);
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
	struct flowd_error err;
	struct parsed p;
	size_t i;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		unsigned f;

		assert_int_equal(
			parse(&p, cases[i].method, cases[i].path, NULL), 0);
		f = p.route.flags;
		assert_true(f & API__ROUTE_WRITE);
		assert_int_equal(api__authorize(f, API__ROLE_ADMIN, 0, &err),
				 0);
		assert_int_equal(api__authorize(f, API__ROLE_READER, 0, &err),
				 -1);
		assert_int_equal(err.status, 403);
		assert_int_equal(api__authorize(f, API__ROLE_NONE, 0, &err),
				 -1);
		assert_int_equal(err.status, 401);
		done(&p);
	}

	/* GET /v1/cluster is unchanged by its new children */
	assert_int_equal(parse(&p, "GET", "/v1/cluster", NULL), 0);
	assert_int_equal(p.req.op, API_OP_CLUSTER);
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
		assert_int_equal(p.req.op, API_OP_MEMBER_REMOVE);
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

typedef int (*member_body_fn)(const json_t *body, struct api_request *req,
			      struct flowd_error *err);

/* Parse `text` (NULL: an empty body) and check it with `fn`. */
static int member_body(member_body_fn fn, const char *text,
		       struct api_request *req, struct flowd_error *err)
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
	rc = fn(doc, req, err);
	json_decref(doc);
	return rc;
}

static void member_add_body_accepts_a_node(void **state)
{
	struct api_request req;
	struct flowd_error err;

	assert_int_equal(member_body(api__member_add_body,
				     "{\"id\":4,"
				     "\"raft_address\":\"10.0.0.4:7001\","
				     "\"api_address\":\"10.0.0.4:8080\"}",
				     &req, &err),
			 0);
	assert_true(req.member_id == 4);
	assert_string_equal(req.member_raft, "10.0.0.4:7001");
	assert_string_equal(req.member_api, "10.0.0.4:8080");
	api__request_clear(&req);
	assert_null(req.member_raft);
	assert_null(req.member_api);

	/* the largest id, keys in any order */
	assert_int_equal(member_body(api__member_add_body,
				     "{\"api_address\":\"127.0.0.1:9\","
				     "\"raft_address\":\"127.0.0.1:65535\","
				     "\"id\":9223372036854775807}",
				     &req, &err),
			 0);
	assert_true(req.member_id == INT64_MAX);
	assert_string_equal(req.member_raft, "127.0.0.1:65535");
	assert_string_equal(req.member_api, "127.0.0.1:9");
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

		if (member_body(api__member_add_body, cases[i].text, &req,
				&err) != -1)
			fail_msg("accepted %s", cases[i].text);
		assert_int_equal(err.status, 400);
		assert_string_equal(err.code, cases[i].code);
		assert_string_equal(err.field, cases[i].field);
		/* nothing is filled on failure */
		assert_true(req.member_id == 0);
		assert_null(req.member_raft);
		assert_null(req.member_api);
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
		assert_int_equal(member_body(api__leader_transfer_body,
					     ok[i].text, &req, &err),
				 0);
		assert_true(req.member_id == ok[i].id);
		api__request_clear(&req);
	}
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		if (member_body(api__leader_transfer_body, bad[i].text, &req,
				&err) != -1)
			fail_msg("accepted %s", bad[i].text);
		assert_int_equal(err.status, 400);
		assert_string_equal(err.code, bad[i].code);
		assert_string_equal(err.field, bad[i].field);
		api__request_clear(&req);
	}
}

/* member_raft and member_api are freed by the one free path (LSan reports a
 * leak otherwise). */
static void request_clear_frees_member_addresses(void **state)
{
	struct api_request req;

	memset(&req, 0, sizeof req);
	req.member_raft = strdup("10.0.0.4:7001");
	req.member_api = strdup("10.0.0.4:8080");
	assert_non_null(req.member_raft);
	assert_non_null(req.member_api);
	api__request_clear(&req);
	assert_null(req.member_raft);
	assert_null(req.member_api);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(route_table_maps_each_path_to_its_op),
		cmocka_unit_test(route_fills_path_fields),
		cmocka_unit_test(route_unknown_path_is_404),
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
		cmocka_unit_test(query_logs_attempt),
		cmocka_unit_test(limit_default_respects_small_page_ceiling),
		cmocka_unit_test(content_type_json),
		cmocka_unit_test(auth_role_from_bearer_token),
		cmocka_unit_test(authorize_by_route_and_role),
		cmocka_unit_test(run_body_accepts_valid_shapes),
		cmocka_unit_test(run_body_rejects_bad_shapes),
		cmocka_unit_test(request_clear_frees_pg_run_id),
		cmocka_unit_test(route_internal_command_is_an_admin_json_write),
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
		cmocka_unit_test(request_clear_frees_member_addresses),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
