/* route.c - the route table, path and query validation, bearer-token
 * authorization and the request-body checks; pure (docs/api.md). */
#include "api/route.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/addr.h"
#include "core/cron.h"
#include "core/spec.h"

#define RUN_ID_MAX 200
#define CURSOR_MAX 20 /* digits of 2^64 - 1 */
#define SEGMENTS_MAX 6

/* A placeholder segment in a route pattern. */
#define SEG_FLOW "{flow}"
#define SEG_RUN "{id}"
#define SEG_STEP "{step}"
#define SEG_MEMBER "{member}"

/* Member ids are raft ids, carried in JSON integers: 1..2^63-1. */
#define MEMBER_ID_MAX ((uint64_t)INT64_MAX)

struct method_entry {
	const char *method;
	enum api__target target;
	enum api_op op;
	unsigned flags;
};

struct route_entry {
	const char *segs[SEGMENTS_MAX + 1]; /* NULL-terminated */
	const char *allow;
	struct method_entry methods[3]; /* method NULL ends the list */
};

static const struct route_entry routes[] = {
	{{"healthz", NULL},
	 "GET, HEAD",
	 {{"GET", API__TARGET_HEALTHZ, 0, API__ROUTE_PUBLIC}}},
	{{"readyz", NULL},
	 "GET, HEAD",
	 {{"GET", API__TARGET_SUBMIT, API_OP_READYZ, API__ROUTE_PUBLIC | API__ROUTE_VIEW}}},
	{{"v1", "cluster", NULL},
	 "GET, HEAD",
	 {{"GET", API__TARGET_SUBMIT, API_OP_CLUSTER, API__ROUTE_VIEW}}},
	{{"v1", "cluster", "members", NULL},
	 "POST",
	 {{"POST", API__TARGET_SUBMIT, API_OP_MEMBER_ADD,
	   API__ROUTE_WRITE | API__ROUTE_BODY}}},
	{{"v1", "cluster", "members", SEG_MEMBER, NULL},
	 "DELETE",
	 {{"DELETE", API__TARGET_SUBMIT, API_OP_MEMBER_REMOVE,
	   API__ROUTE_WRITE}}},
	{{"v1", "cluster", "leader", "transfer", NULL},
	 "POST",
	 {{"POST", API__TARGET_SUBMIT, API_OP_LEADER_TRANSFER,
	   API__ROUTE_WRITE | API__ROUTE_BODY | API__ROUTE_BODY_OPT}}},
	{{"v1", "flows", NULL},
	 "GET, HEAD",
	 {{"GET", API__TARGET_SUBMIT, API_OP_FLOW_LIST, API__ROUTE_VIEW}}},
	{{"v1", "flows", SEG_FLOW, NULL},
	 "GET, HEAD, PUT, DELETE",
	 {{"GET", API__TARGET_SUBMIT, API_OP_FLOW_GET, API__ROUTE_VIEW},
	  {"PUT", API__TARGET_SUBMIT, API_OP_FLOW_PUT,
	   API__ROUTE_WRITE | API__ROUTE_BODY},
	  {"DELETE", API__TARGET_SUBMIT, API_OP_FLOW_DELETE,
	   API__ROUTE_WRITE}}},
	{{"v1", "flows", SEG_FLOW, "versions", NULL},
	 "GET, HEAD",
	 {{"GET", API__TARGET_SUBMIT, API_OP_FLOW_VERSIONS, API__ROUTE_VIEW}}},
	{{"v1", "flows", SEG_FLOW, "schedule", NULL},
	 "GET, HEAD",
	 {{"GET", API__TARGET_SUBMIT, API_OP_SCHEDULE_GET, API__ROUTE_VIEW}}},
	{{"v1", "flows", SEG_FLOW, "pause", NULL},
	 "POST",
	 {{"POST", API__TARGET_SUBMIT, API_OP_FLOW_PAUSE, API__ROUTE_WRITE}}},
	{{"v1", "flows", SEG_FLOW, "unpause", NULL},
	 "POST",
	 {{"POST", API__TARGET_SUBMIT, API_OP_FLOW_UNPAUSE, API__ROUTE_WRITE}}},
	{{"v1", "flows", SEG_FLOW, "backfill", NULL},
	 "POST",
	 {{"POST", API__TARGET_SUBMIT, API_OP_BACKFILL,
	   API__ROUTE_WRITE | API__ROUTE_BODY}}},
	{{"v1", "events", NULL},
	 "POST",
	 {{"POST", API__TARGET_SUBMIT, API_OP_EVENT_POST,
	   API__ROUTE_WRITE | API__ROUTE_BODY}}},
	{{"v1", "cron", "preview", NULL},
	 "GET, HEAD",
	 {{"GET", API__TARGET_CRON, 0, 0}}},
	{{"v1", "flows", SEG_FLOW, "runs", NULL},
	 "POST",
	 {{"POST", API__TARGET_SUBMIT, API_OP_RUN_CREATE,
	   API__ROUTE_WRITE | API__ROUTE_BODY | API__ROUTE_BODY_OPT}}},
	{{"v1", "runs", NULL},
	 "GET, HEAD",
	 {{"GET", API__TARGET_SUBMIT, API_OP_RUN_LIST, API__ROUTE_VIEW}}},
	{{"v1", "runs", SEG_RUN, NULL},
	 "GET, HEAD",
	 {{"GET", API__TARGET_SUBMIT, API_OP_RUN_GET, API__ROUTE_VIEW}}},
	{{"v1", "runs", SEG_RUN, "cancel", NULL},
	 "POST",
	 {{"POST", API__TARGET_SUBMIT, API_OP_RUN_CANCEL, API__ROUTE_WRITE}}},
	{{"v1", "runs", SEG_RUN, "steps", SEG_STEP, "logs", NULL},
	 "GET, HEAD",
	 {{"GET", API__TARGET_LOGS, 0, 0}}},
	{{"internal", "v1", "commands", NULL},
	 "POST",
	 {{"POST", API__TARGET_SUBMIT, API_OP_INTERNAL_COMMAND,
	   API__ROUTE_WRITE | API__ROUTE_BODY}}},
};

static const char *const run_statuses[] = {
	"queued", "running", "succeeded", "failed", "cancelled", NULL,
};

void api__route_close(struct api__route *r)
{
	free(r->raw_flow);
	free(r->raw_run);
	free(r->raw_step);
	free(r->raw_member);
	free(r->step);
	memset(r, 0, sizeof *r);
}

/* ------------------------------------------------------------------------
 * Matching
 */

/* Split "/a/b/c" into at most SEGMENTS_MAX (pointer, length) pairs. Returns
 * the count, or -1 for a path that cannot match any route (no leading '/',
 * an empty segment, a trailing '/', too many segments). */
static int split_path(const char *path, const char **seg, size_t *len)
{
	int n = 0;
	const char *p = path;

	if (p == NULL || *p != '/')
		return -1;
	while (*p == '/') {
		const char *start = ++p;

		while (*p != '\0' && *p != '/')
			p++;
		if (p == start || n == SEGMENTS_MAX)
			return -1;
		seg[n] = start;
		len[n] = (size_t)(p - start);
		n++;
	}
	return n;
}

static int is_placeholder(const char *pattern) { return pattern[0] == '{'; }

static int segments_match(const struct route_entry *e, int n, const char **seg,
			  const size_t *len)
{
	int i;

	for (i = 0; i < n; i++) {
		const char *want = e->segs[i];

		if (want == NULL)
			return 0;
		if (is_placeholder(want))
			continue;
		if (strlen(want) != len[i] || memcmp(want, seg[i], len[i]) != 0)
			return 0;
	}
	return e->segs[n] == NULL;
}

static char *dup_segment(const char *s, size_t len)
{
	char *out = malloc(len + 1);

	if (out == NULL)
		return NULL;
	memcpy(out, s, len);
	out[len] = '\0';
	return out;
}

/* Copy the placeholder segments of a matched route into `r`. */
static int take_segments(const struct route_entry *e, int n, const char **seg,
			 const size_t *len, struct api__route *r,
			 struct flowd_error *err)
{
	int i;

	for (i = 0; i < n; i++) {
		char **slot = NULL;

		if (strcmp(e->segs[i], SEG_FLOW) == 0)
			slot = &r->raw_flow;
		else if (strcmp(e->segs[i], SEG_RUN) == 0)
			slot = &r->raw_run;
		else if (strcmp(e->segs[i], SEG_STEP) == 0)
			slot = &r->raw_step;
		else if (strcmp(e->segs[i], SEG_MEMBER) == 0)
			slot = &r->raw_member;
		if (slot == NULL)
			continue;
		*slot = dup_segment(seg[i], len[i]);
		if (*slot == NULL)
			return flowd_error_set(err, 500, "internal", "",
					       "out of memory");
	}
	return 0;
}

int api__route_match(const char *method, const char *path, struct api__route *r,
		     struct flowd_error *err)
{
	const char *seg[SEGMENTS_MAX];
	size_t len[SEGMENTS_MAX];
	const struct route_entry *e = NULL;
	const struct method_entry *m = NULL;
	const char *asked = method;
	size_t i;
	int n;

	memset(r, 0, sizeof *r);
	n = split_path(path, seg, len);
	if (n < 0)
		goto not_found;
	for (i = 0; i < sizeof routes / sizeof routes[0]; i++) {
		if (segments_match(&routes[i], n, seg, len)) {
			e = &routes[i];
			break;
		}
	}
	if (e == NULL)
		goto not_found;
	r->allow = e->allow;

	if (method != NULL && strcmp(method, "HEAD") == 0)
		method = "GET";
	for (i = 0; method != NULL && i < 3 && e->methods[i].method; i++) {
		if (strcmp(e->methods[i].method, method) == 0) {
			m = &e->methods[i];
			break;
		}
	}
	if (m == NULL)
		return flowd_error_set(
			err, 405, "method_not_allowed", "",
			"method %s not allowed here (allowed: %s)",
			asked ? asked : "?", e->allow);
	r->target = m->target;
	r->op = m->op;
	r->flags = m->flags;
	if (take_segments(e, n, seg, len, r, err) != 0) {
		api__route_close(r);
		return -1;
	}
	return 0;

not_found:
	return flowd_error_set(err, 404, "not_found", "", "no such route");
}

/* ------------------------------------------------------------------------
 * Decoding and validation
 */

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

char *api__percent_decode(const char *in, size_t len)
{
	char *out = malloc(len + 1);
	size_t i, o = 0;

	if (out == NULL)
		return NULL;
	for (i = 0; i < len; i++) {
		int hi, lo;

		if (in[i] != '%') {
			if (in[i] == '\0')
				goto bad;
			out[o++] = in[i];
			continue;
		}
		if (i + 2 >= len)
			goto bad;
		hi = hex_value(in[i + 1]);
		lo = hex_value(in[i + 2]);
		if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
			goto bad;
		out[o++] = (char)(hi * 16 + lo);
		i += 2;
	}
	out[o] = '\0';
	return out;

bad:
	free(out);
	return NULL;
}

/* 1..max of [A-Za-z0-9_.:-]: run ids and event ids. */
static int id_valid(const char *s, size_t max)
{
	size_t n = 0;

	for (; *s != '\0'; s++, n++) {
		char c = *s;

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '_' || c == '.' ||
		      c == ':' || c == '-'))
			return 0;
	}
	return n >= 1 && n <= max;
}

static int run_id_valid(const char *s)
{
	return id_valid(s, RUN_ID_MAX);
}

/* A query value: absent or empty gives NULL and 0; a malformed escape -1. */
static int query_value(api__query_get_cb query, void *arg, const char *key,
		       char **out, struct flowd_error *err)
{
	const char *raw;

	*out = NULL;
	raw = query ? query(arg, key) : NULL;
	if (raw == NULL || raw[0] == '\0')
		return 0;
	*out = api__percent_decode(raw, strlen(raw));
	if (*out == NULL)
		return flowd_error_set(err, 400, "invalid_query", key,
				       "malformed percent-encoding");
	return 0;
}

/* An unsigned decimal in [min, max]; no sign, no spaces. */
static int parse_uint(const char *s, unsigned long min, unsigned long max,
		      unsigned long *out)
{
	unsigned long v;
	char *end;

	if (s[0] < '0' || s[0] > '9')
		return -1;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

/* A run-list cursor: the decimal seq a next_cursor holds, 1..2^64-1,
 * digits only (no sign, no spaces, no overflow). */
static int parse_cursor(const char *s, uint64_t *out)
{
	unsigned long long v;
	char *end;

	if (s[0] == '\0' || strlen(s) > CURSOR_MAX)
		return -1;
	for (const char *p = s; *p != '\0'; p++)
		if (*p < '0' || *p > '9')
			return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0' || v == 0)
		return -1;
	*out = (uint64_t)v;
	return 0;
}

/* A member id in a path: decimal digits only (no sign, no spaces), value
 * 1..MEMBER_ID_MAX. */
static int parse_member_id(const char *s, uint64_t *out)
{
	unsigned long long v;
	const char *p;
	char *end;

	if (s[0] == '\0')
		return -1;
	for (p = s; *p != '\0'; p++)
		if (*p < '0' || *p > '9')
			return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < 1 || v > MEMBER_ID_MAX)
		return -1;
	*out = (uint64_t)v;
	return 0;
}

static int validate_member(struct api__route *r, struct api_request *req,
			   struct flowd_error *err)
{
	char *id = api__percent_decode(r->raw_member, strlen(r->raw_member));
	int rc = 0;

	if (id == NULL || parse_member_id(id, &req->member_id) != 0)
		rc = flowd_error_set(err, 400, "invalid_value", "id",
				     "member id must be an integer from 1 to "
				     "%llu",
				     (unsigned long long)MEMBER_ID_MAX);
	free(id);
	return rc;
}

static int validate_consistent(api__query_get_cb query, void *arg,
			       struct api_request *req, struct flowd_error *err)
{
	const char *raw = query ? query(arg, "consistent") : NULL;

	req->consistent = 0;
	if (raw == NULL)
		return 0;
	if (raw[0] == '\0' || strcmp(raw, "true") == 0) {
		req->consistent = 1;
		return 0;
	}
	if (strcmp(raw, "false") == 0)
		return 0;
	return flowd_error_set(err, 400, "invalid_query", "consistent",
			       "must be true or false");
}

static int validate_run_list(api__query_get_cb query, void *arg,
			     const struct flowd_limits *lim,
			     struct api_request *req, struct flowd_error *err)
{
	char *limit = NULL, *cursor = NULL;
	unsigned long v;
	size_t i;
	int rc = -1;

	if (query_value(query, arg, "flow", &req->list_flow, err) != 0)
		goto done;
	if (req->list_flow != NULL && !spec_flow_name_valid(req->list_flow)) {
		flowd_error_set(err, 400, "invalid_query", "flow",
				"not a valid flow name");
		goto done;
	}
	if (query_value(query, arg, "status", &req->list_status, err) != 0)
		goto done;
	if (req->list_status != NULL) {
		for (i = 0; run_statuses[i] != NULL; i++)
			if (strcmp(req->list_status, run_statuses[i]) == 0)
				break;
		if (run_statuses[i] == NULL) {
			flowd_error_set(err, 400, "invalid_query", "status",
					"must be one of queued, running, "
					"succeeded, failed, cancelled");
			goto done;
		}
	}
	req->limit = 50;
	if (lim->max_runs_page > 0 && req->limit > lim->max_runs_page)
		req->limit = lim->max_runs_page;
	if (query_value(query, arg, "limit", &limit, err) != 0)
		goto done;
	if (limit != NULL) {
		if (parse_uint(limit, 1, lim->max_runs_page, &v) != 0) {
			flowd_error_set(err, 400, "invalid_query", "limit",
					"must be an integer from 1 to %u",
					lim->max_runs_page);
			goto done;
		}
		req->limit = (unsigned)v;
	}
	if (query_value(query, arg, "cursor", &cursor, err) != 0)
		goto done;
	if (cursor != NULL && parse_cursor(cursor, &req->cursor) != 0) {
		flowd_error_set(err, 400, "invalid_query", "cursor",
				"not a cursor from next_cursor");
		goto done;
	}
	rc = 0;
done:
	free(limit);
	free(cursor);
	return rc;
}

static int validate_attempt(api__query_get_cb query, void *arg,
			    struct api__route *r, struct flowd_error *err)
{
	char *s = NULL;
	unsigned long v;
	int rc = -1;

	r->attempt = 0;
	if (query_value(query, arg, "attempt", &s, err) != 0)
		return -1;
	if (s == NULL)
		return 0;
	if (parse_uint(s, 1, INT_MAX, &v) != 0) {
		flowd_error_set(err, 400, "invalid_query", "attempt",
				"must be a positive integer");
		goto done;
	}
	r->attempt = (int)v;
	rc = 0;
done:
	free(s);
	return rc;
}

int api__route_validate(struct api__route *r, api__query_get_cb query,
			void *query_arg, const struct flowd_limits *lim,
			struct api_request *req, struct flowd_error *err)
{
	req->op = r->op;
	if (r->raw_flow != NULL) {
		req->flow =
			api__percent_decode(r->raw_flow, strlen(r->raw_flow));
		if (req->flow == NULL || !spec_flow_name_valid(req->flow))
			return flowd_error_set(
				err, 400, "invalid_value", "flow",
				"flow name must match [A-Za-z0-9_.-]{1,128}");
	}
	if (r->raw_run != NULL) {
		req->run_id =
			api__percent_decode(r->raw_run, strlen(r->raw_run));
		if (req->run_id == NULL || !run_id_valid(req->run_id))
			return flowd_error_set(err, 404, "not_found", "",
					       "no such run");
	}
	if (r->raw_step != NULL) {
		r->step = api__percent_decode(r->raw_step, strlen(r->raw_step));
		if (r->step == NULL || !spec_flow_name_valid(r->step))
			return flowd_error_set(err, 404, "not_found", "",
					       "no such step");
	}
	if (r->raw_member != NULL && validate_member(r, req, err) != 0)
		return -1;
	if (!(r->flags & API__ROUTE_WRITE) &&
	    validate_consistent(query, query_arg, req, err) != 0)
		return -1;
	if (r->target == API__TARGET_SUBMIT && r->op == API_OP_RUN_LIST)
		return validate_run_list(query, query_arg, lim, req, err);
	if (r->target == API__TARGET_LOGS)
		return validate_attempt(query, query_arg, r, err);
	return 0;
}

/* ------------------------------------------------------------------------
 * Content type and authorization
 */

int api__content_type_is_json(const char *value)
{
	static const char want[] = "application/json";
	const char *p = value;

	if (p == NULL)
		return 0;
	while (*p == ' ' || *p == '\t')
		p++;
	if (strncasecmp(p, want, sizeof want - 1) != 0)
		return 0;
	p += sizeof want - 1;
	while (*p == ' ' || *p == '\t')
		p++;
	return *p == '\0' || *p == ';';
}

/* 1 when the `glen` bytes of `given` equal `tok`, in time that depends on
 * glen only: no exit on the first differing byte; a length mismatch is
 * folded into the same accumulator. */
static unsigned token_equal(const unsigned char *given, size_t glen,
			    const char *tok)
{
	size_t tlen = strlen(tok);
	volatile unsigned diff;
	size_t i;

	if (tlen == 0)
		return 0;
	diff = (glen != tlen);
	for (i = 0; i < glen; i++)
		diff |= given[i] ^ (unsigned char)tok[i % tlen];
	return diff == 0;
}

static unsigned token_in(const unsigned char *given, size_t glen,
			 char *const *list)
{
	unsigned found = 0;

	for (; list != NULL && *list != NULL; list++)
		found |= token_equal(given, glen, *list);
	return found;
}

enum api__role api__auth_role(const char *authorization, char *const *admin,
			      char *const *reader)
{
	static const char scheme[] = "Bearer";
	const char *p = authorization;
	size_t glen;
	unsigned is_admin, is_reader;

	if (p == NULL)
		return API__ROLE_NONE;
	while (*p == ' ' || *p == '\t')
		p++;
	if (strncasecmp(p, scheme, sizeof scheme - 1) != 0)
		return API__ROLE_NONE;
	p += sizeof scheme - 1;
	if (*p != ' ' && *p != '\t')
		return API__ROLE_NONE;
	while (*p == ' ' || *p == '\t')
		p++;
	glen = strlen(p);
	while (glen > 0 && (p[glen - 1] == ' ' || p[glen - 1] == '\t'))
		glen--;
	if (glen == 0)
		return API__ROLE_NONE;
	/* Both lists are always scanned in full. */
	is_admin = token_in((const unsigned char *)p, glen, admin);
	is_reader = token_in((const unsigned char *)p, glen, reader);
	if (is_admin)
		return API__ROLE_ADMIN;
	if (is_reader)
		return API__ROLE_READER;
	return API__ROLE_NONE;
}

int api__authorize(unsigned flags, enum api__role role, int open,
		   struct flowd_error *err)
{
	if (open || (flags & API__ROUTE_PUBLIC))
		return 0;
	if (role == API__ROLE_NONE)
		return flowd_error_set(err, 401, "unauthorized", "",
				       "a valid bearer token is required");
	if ((flags & API__ROUTE_WRITE) && role != API__ROLE_ADMIN)
		return flowd_error_set(err, 403, "forbidden", "",
				       "this request needs an admin token");
	return 0;
}

/* ------------------------------------------------------------------------
 * Bodies
 */

/* 0 when every key of the object `body` is in the NULL-terminated `known`,
 * else 400 "unknown_field" naming the first other key met. */
static int only_known_keys(const json_t *body, const char *const *known,
			   struct flowd_error *err)
{
	const char *key;
	json_t *value;
	size_t i;

	json_object_foreach((json_t *)body, key, value)
	{
		(void)value;
		for (i = 0; known[i] != NULL; i++)
			if (strcmp(key, known[i]) == 0)
				break;
		if (known[i] == NULL)
			return flowd_error_set(err, 400, "unknown_field", key,
					       "unknown field");
	}
	return 0;
}

int api__run_create_body(const json_t *body, const struct flowd_limits *lim,
			 struct api_request *req, struct flowd_error *err)
{
	const char *key;
	json_t *value;
	json_t *params = NULL;
	const char *idem = NULL;

	if (body == NULL)
		return 0;
	if (!json_is_object(body))
		return flowd_error_set(err, 400, "invalid_type", "",
				       "the body must be a JSON object");
	json_object_foreach((json_t *)body, key, value)
	{
		if (strcmp(key, "parameters") == 0) {
			if (json_is_null(value))
				continue;
			if (!json_is_object(value))
				return flowd_error_set(err, 400, "invalid_type",
						       "parameters",
						       "must be an object");
			params = value;
		} else if (strcmp(key, "idempotency_key") == 0) {
			if (json_is_null(value))
				continue;
			if (!json_is_string(value))
				return flowd_error_set(err, 400, "invalid_type",
						       "idempotency_key",
						       "must be a string");
			idem = json_string_value(value);
			if (json_string_length(value) == 0 ||
			    json_string_length(value) >
				    lim->max_idempotency_key_bytes)
				return flowd_error_set(
					err, 400, "invalid_value",
					"idempotency_key",
					"must be 1 to %zu bytes",
					lim->max_idempotency_key_bytes);
		} else {
			return flowd_error_set(err, 400, "unknown_field", key,
					       "unknown field");
		}
	}
	if (idem != NULL) {
		req->idempotency_key = strdup(idem);
		if (req->idempotency_key == NULL)
			return flowd_error_set(err, 500, "internal", "",
					       "out of memory");
	}
	if (params != NULL)
		req->params = json_incref(params);
	return 0;
}

static int event_id_valid(const char *s)
{
	return id_valid(s, 128);
}

int api__event_body(const json_t *body, const struct flowd_limits *lim,
		    struct api_request *req, struct flowd_error *err)
{
	static const char *const known[] = {"name", "id", "payload", NULL};
	const json_t *name, *id, *payload;
	char *text;
	size_t size;

	if (!json_is_object(body))
		return flowd_error_set(err, 400, "invalid_type", "",
				       "the body must be a JSON object");
	if (only_known_keys(body, known, err) != 0)
		return -1;
	name = json_object_get(body, "name");
	id = json_object_get(body, "id");
	payload = json_object_get(body, "payload");
	if (name == NULL)
		return flowd_error_set(err, 400, "missing_field", "name",
				       "an event has a name");
	if (!json_is_string(name) ||
	    !spec_event_name_valid(json_string_value(name)))
		return flowd_error_set(err, 400, "invalid_value", "name",
				       "must match [A-Za-z0-9_-]{1,128}");
	if (id != NULL && !json_is_null(id) &&
	    (!json_is_string(id) || !event_id_valid(json_string_value(id))))
		return flowd_error_set(err, 400, "invalid_value", "id",
				       "must be 1 to 128 of [A-Za-z0-9_.:-]");
	if (payload != NULL && !json_is_null(payload)) {
		if (!json_is_object(payload))
			return flowd_error_set(err, 400, "invalid_type",
					       "payload", "must be an object");
		text = json_dumps(payload, JSON_COMPACT);
		size = text ? strlen(text) : 0;
		free(text);
		if (size > lim->max_event_bytes)
			return flowd_error_set(err, 413, "too_large", "payload",
					       "payload of %zu bytes is over "
					       "the limit of %zu",
					       size, lim->max_event_bytes);
		req->payload = json_incref((json_t *)payload);
	}
	req->event_name = strdup(json_string_value(name));
	if (id != NULL && json_is_string(id))
		req->event_id = strdup(json_string_value(id));
	if (req->event_name == NULL ||
	    (id != NULL && json_is_string(id) && req->event_id == NULL))
		return flowd_error_set(err, 500, "internal", "",
				       "out of memory");
	return 0;
}

static int body_time(const json_t *body, const char *key, int64_t *out,
		     struct flowd_error *err)
{
	const json_t *v = json_object_get(body, key);

	if (v == NULL)
		return flowd_error_set(err, 400, "missing_field", key,
				       "a time is required");
	if (!json_is_string(v) || cron_time_parse(json_string_value(v), out) != 0)
		return flowd_error_set(err, 400, "invalid_value", key,
				       "must be an RFC 3339 time such as "
				       "2027-03-14T07:00:00Z");
	return 0;
}

int api__backfill_body(const json_t *body, struct api_request *req,
		       struct flowd_error *err)
{
	static const char *const known[] = {"from", "to", "schedule", NULL};
	const json_t *sched;

	if (!json_is_object(body))
		return flowd_error_set(err, 400, "invalid_type", "",
				       "the body must be a JSON object");
	if (only_known_keys(body, known, err) != 0)
		return -1;
	if (body_time(body, "from", &req->bf_from, err) != 0 ||
	    body_time(body, "to", &req->bf_to, err) != 0)
		return -1;
	if (req->bf_to < req->bf_from)
		return flowd_error_set(err, 400, "invalid_value", "to",
				       "must not be before from");
	req->bf_schedule = -1;
	sched = json_object_get(body, "schedule");
	if (sched != NULL && !json_is_null(sched)) {
		if (!json_is_integer(sched) || json_integer_value(sched) < 0 ||
		    json_integer_value(sched) > 1000000)
			return flowd_error_set(err, 400, "invalid_value",
					       "schedule",
					       "must be a schedule index");
		req->bf_schedule = (int)json_integer_value(sched);
	}
	return 0;
}

int api__cron_preview(api__query_get_cb query, void *arg, int64_t now_s,
		      json_t **out, struct flowd_error *err)
{
	char *expr = NULL, *zone = NULL, *from = NULL, *count = NULL;
	char *missing = NULL, *repeated = NULL, why[200], local[40];
	enum cron_dst_missing m = CRON_DST_SHIFT;
	enum cron_dst_repeated r = CRON_DST_ONCE;
	const struct tz *z;
	struct cron c;
	unsigned long n = 10;
	int64_t t = now_s, next;
	json_t *times, *locals;
	int rc = -1;

	if (query_value(query, arg, "expr", &expr, err) != 0 ||
	    query_value(query, arg, "tz", &zone, err) != 0 ||
	    query_value(query, arg, "from", &from, err) != 0 ||
	    query_value(query, arg, "count", &count, err) != 0 ||
	    query_value(query, arg, "dst_missing", &missing, err) != 0 ||
	    query_value(query, arg, "dst_repeated", &repeated, err) != 0)
		goto done;
	if (expr == NULL) {
		flowd_error_set(err, 400, "invalid_query", "expr",
				"the cron expression to preview is required");
		goto done;
	}
	if (cron_parse(expr, &c, why, sizeof why) != 0) {
		flowd_error_set(err, 400, "invalid_query", "expr", "%s", why);
		goto done;
	}
	z = tz_get(zone ? zone : "UTC");
	if (z == NULL) {
		flowd_error_set(err, 400, "invalid_query", "tz",
				"unknown time zone (an IANA name such as "
				"Europe/Berlin)");
		goto done;
	}
	if (from != NULL && cron_time_parse(from, &t) != 0) {
		flowd_error_set(err, 400, "invalid_query", "from",
				"must be an RFC 3339 time such as "
				"2027-03-14T07:00:00Z");
		goto done;
	}
	if (count != NULL && parse_uint(count, 1, 100, &n) != 0) {
		flowd_error_set(err, 400, "invalid_query", "count",
				"must be an integer from 1 to 100");
		goto done;
	}
	if (missing != NULL) {
		if (strcmp(missing, "skip") == 0)
			m = CRON_DST_SKIP;
		else if (strcmp(missing, "shift") != 0) {
			flowd_error_set(err, 400, "invalid_query", "dst_missing",
					"must be shift or skip");
			goto done;
		}
	}
	if (repeated != NULL) {
		if (strcmp(repeated, "twice") == 0)
			r = CRON_DST_TWICE;
		else if (strcmp(repeated, "once") != 0) {
			flowd_error_set(err, 400, "invalid_query",
					"dst_repeated", "must be once or twice");
			goto done;
		}
	}
	times = json_array();
	locals = json_array();
	for (unsigned long i = 0; i < n && cron_next(&c, z, m, r, t, &next); i++) {
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
	rc = *out != NULL ? 0 : flowd_error_set(err, 500, "internal", "",
						 "out of memory");
done:
	free(expr);
	free(zone);
	free(from);
	free(count);
	free(missing);
	free(repeated);
	return rc;
}

int api__ipv4_address_parse(const char *s, struct sockaddr_in *out)
{
	return flowd_ipv4_address_parse(s, out);
}

/* The value of "id" in a membership body: an integer 1..2^63-1. `value` is
 * not NULL and not null. */
static int member_id_value(const json_t *value, uint64_t *out,
			   struct flowd_error *err)
{
	json_int_t v;

	if (!json_is_integer(value))
		return flowd_error_set(err, 400, "invalid_type", "id",
				       "must be an integer");
	v = json_integer_value(value);
	if (v < 1)
		return flowd_error_set(err, 400, "invalid_value", "id",
				       "must be an integer from 1 to %llu",
				       (unsigned long long)MEMBER_ID_MAX);
	*out = (uint64_t)v;
	return 0;
}

/* The value of a member address field: a string api__ipv4_address_parse
 * accepts. NULL or null is a missing field. */
static int member_address_value(const json_t *value, const char *field,
				const char **out, struct flowd_error *err)
{
	if (value == NULL || json_is_null(value))
		return flowd_error_set(err, 400, "missing_field", field,
				       "required");
	if (!json_is_string(value))
		return flowd_error_set(err, 400, "invalid_type", field,
				       "must be a string");
	if (strlen(json_string_value(value)) != json_string_length(value) ||
	    api__ipv4_address_parse(json_string_value(value), NULL) != 0)
		return flowd_error_set(err, 400, "invalid_value", field,
				       "must be an IPv4 \"a.b.c.d:port\" with "
				       "a port from 1 to 65535");
	*out = json_string_value(value);
	return 0;
}

int api__member_add_body(const json_t *body, struct api_request *req,
			 struct flowd_error *err)
{
	static const char *const known[] = {"id", "raft_address", "api_address",
					    NULL};
	const char *raft = NULL, *api = NULL;
	char *raft_copy = NULL, *api_copy = NULL;
	const json_t *id;
	uint64_t member_id = 0;

	if (!json_is_object(body))
		return flowd_error_set(err, 400, "invalid_type", "",
				       "the body must be a JSON object");
	if (only_known_keys(body, known, err) != 0)
		return -1;
	id = json_object_get(body, "id");
	if (id == NULL || json_is_null(id))
		return flowd_error_set(err, 400, "missing_field", "id",
				       "required");
	if (member_id_value(id, &member_id, err) != 0 ||
	    member_address_value(json_object_get(body, "raft_address"),
				 "raft_address", &raft, err) != 0 ||
	    member_address_value(json_object_get(body, "api_address"),
				 "api_address", &api, err) != 0)
		return -1;
	raft_copy = strdup(raft);
	api_copy = strdup(api);
	if (raft_copy == NULL || api_copy == NULL) {
		free(raft_copy);
		free(api_copy);
		return flowd_error_set(err, 500, "internal", "",
				       "out of memory");
	}
	free(req->member_raft);
	free(req->member_api);
	req->member_id = member_id;
	req->member_raft = raft_copy;
	req->member_api = api_copy;
	return 0;
}

int api__leader_transfer_body(const json_t *body, struct api_request *req,
			      struct flowd_error *err)
{
	static const char *const known[] = {"id", NULL};
	const json_t *id;
	uint64_t member_id = 0;

	if (body == NULL)
		goto done;
	if (!json_is_object(body))
		return flowd_error_set(err, 400, "invalid_type", "",
				       "the body must be a JSON object");
	if (only_known_keys(body, known, err) != 0)
		return -1;
	id = json_object_get(body, "id");
	if (id != NULL && !json_is_null(id) &&
	    member_id_value(id, &member_id, err) != 0)
		return -1;
done:
	req->member_id = member_id;
	return 0;
}

int api__command_body(const char *raw, size_t len, struct flowd_error *err)
{
	json_error_t jerr;
	json_t *doc;
	int is_object;

	if (raw == NULL || len == 0)
		return flowd_error_set(err, 400, "missing_field", "body",
				       "the command body is empty");
	doc = json_loadb(raw, len, JSON_REJECT_DUPLICATES, &jerr);
	if (doc == NULL)
		return flowd_error_set(err, 400, "invalid_json", "",
				       "invalid JSON at line %d, column %d: %s",
				       jerr.line, jerr.column, jerr.text);
	is_object = json_is_object(doc);
	json_decref(doc);
	if (!is_object)
		return flowd_error_set(err, 400, "invalid_json", "",
				       "the command must be a JSON object");
	return 0;
}

void api__request_clear(struct api_request *req)
{
	free(req->flow);
	free(req->run_id);
	json_decref(req->body);
	if (req->spec != NULL)
		spec_free(req->spec);
	json_decref(req->params);
	free(req->idempotency_key);
	free(req->list_flow);
	free(req->list_status);
	free(req->member_raft);
	free(req->member_api);
	free(req->event_name);
	free(req->event_id);
	json_decref(req->payload);
	json_decref(req->bf_items);
	req->event_name = req->event_id = NULL;
	req->payload = NULL;
	req->bf_items = NULL;
	free(req->pg_run_id);
	free(req->resp_body);
	free(req->method);
	free(req->target);
	free(req->raw_body);
	free(req->authorization);
	free(req->content_type);
	req->flow = NULL;
	req->run_id = NULL;
	req->body = NULL;
	req->spec = NULL;
	req->params = NULL;
	req->idempotency_key = NULL;
	req->list_flow = NULL;
	req->list_status = NULL;
	req->cursor = 0;
	req->member_raft = NULL;
	req->member_api = NULL;
	req->pg_run_id = NULL;
	req->resp_body = NULL;
	req->method = NULL;
	req->target = NULL;
	req->raw_body = NULL;
	req->raw_body_len = 0;
	req->authorization = NULL;
	req->content_type = NULL;
	req->forwarded = 0;
}
