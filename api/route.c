/* route.c - the api's pure machinery: matching against the daemon's route
 * table, path and query validation by the row, bearer-token authorization
 * by role, and the body schema checker (docs/api.md, api/README.md). */
#include "api/route.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/addr.h"
#include "core/spec.h"

#define RUN_ID_MAX 200
#define CURSOR_MAX 20 /* digits of 2^64 - 1 */
#define SEGMENTS_MAX 9

/* Member ids are raft ids, carried in JSON integers: 1..2^63-1. */
#define MEMBER_ID_MAX ((uint64_t)INT64_MAX)

static const char *const run_statuses[] = {
	"queued", "running", "succeeded", "failed", "cancelled", NULL,
};

/* The placeholders a path template may hold. */
enum placeholder {
	PH_NONE = -1,
	PH_FLOW,
	PH_RUN,
	PH_STEP,
	PH_MEMBER,
	PH_PROJECT,
	PH_BRANCH
};

static const char *const placeholders[] = {"{flow}",   "{id}",	  "{step}",
					   "{member}", "{project}", "{branch}"};

void api__route_close(struct api__route *r)
{
	free(r->raw_flow);
	free(r->raw_run);
	free(r->raw_step);
	free(r->raw_member);
	free(r->raw_project);
	free(r->raw_branch);
	memset(r, 0, sizeof *r);
}

/* ------------------------------------------------------------------------
 * Path templates
 */

/* The next segment of a template or path at *p ("/seg..."): its start and
 * length, *p moved past it. Returns 0, or -1 at the end or for an empty
 * segment. */
static int next_segment(const char **p, const char **seg, size_t *len)
{
	const char *s = *p;

	if (*s != '/')
		return -1;
	*seg = ++s;
	while (*s != '\0' && *s != '/')
		s++;
	*len = (size_t)(s - *seg);
	*p = s;
	return *len > 0 ? 0 : -1;
}

static enum placeholder placeholder_of(const char *seg, size_t len)
{
	for (size_t i = 0; i < sizeof placeholders / sizeof placeholders[0];
	     i++)
		if (strlen(placeholders[i]) == len &&
		    memcmp(placeholders[i], seg, len) == 0)
			return (enum placeholder)i;
	return PH_NONE;
}

/* Split "/a/b/c" into at most SEGMENTS_MAX (pointer, length) pairs. Returns
 * the count (0 for the root, "/"), or -1 for a path that cannot match any
 * route (no leading '/', an empty segment, a trailing '/', too many
 * segments). */
static int split_path(const char *path, const char **seg, size_t *len)
{
	const char *p = path;
	int n = 0;

	if (p == NULL || *p != '/')
		return -1;
	if (strcmp(p, "/") == 0)
		return 0;
	while (*p != '\0') {
		if (n == SEGMENTS_MAX ||
		    next_segment(&p, &seg[n], &len[n]) != 0)
			return -1;
		n++;
	}
	return n;
}

/* 1 when the template `tpl` matches the n segments: literal segments
 * byte for byte, a placeholder any segment. */
static int template_match(const char *tpl, int n, const char **seg,
			  const size_t *len)
{
	const char *t;
	size_t tlen;

	if (strcmp(tpl, "/") == 0) /* the root */
		return n == 0;
	for (int i = 0; i < n; i++) {
		if (next_segment(&tpl, &t, &tlen) != 0)
			return 0;
		if (t[0] == '{')
			continue;
		if (tlen != len[i] || memcmp(t, seg[i], tlen) != 0)
			return 0;
	}
	return *tpl == '\0';
}

/* What is wrong with a row, or NULL. */
static const char *row_problem(const struct api_route *row)
{
	const char *p = row->path ? row->path : "", *seg;
	int takes_json = row->body == API_BODY_JSON ||
			 row->body == API_BODY_JSON_OPT;
	size_t len;
	int n = 0;
	int root = strcmp(p, "/") == 0; /* the root: no segment */

	while (!root && *p != '\0') {
		if (next_segment(&p, &seg, &len) != 0)
			return "a path template is /segment/...";
		if (++n > SEGMENTS_MAX)
			return "more than six path segments";
		if (seg[0] == '{' && placeholder_of(seg, len) == PH_NONE)
			return "an unknown placeholder";
	}
	if (n == 0 && !root)
		return "no path";
	if ((row->read == NULL) == (row->submit == NULL))
		return "exactly one of read and submit is needed";
	if (row->fields != NULL && row->parse != NULL)
		return "fields and parse exclude each other";
	if ((row->fields != NULL || row->parse != NULL) && !takes_json)
		return "fields and parse need a JSON body";
	if ((row->flags & API_ROUTE_CONSISTENT) &&
	    (row->read == NULL || !(row->flags & API_ROUTE_VIEW)))
		return "consistent reads are reads on the view";
	if (row->probe != NULL &&
	    (row->read == NULL || !(row->flags & API_ROUTE_VIEW)))
		return "a probe is for reads on the view";
	if (row->name == NULL)
		return "no name";
	return NULL;
}

int api__routes_check(const struct api_route *table, char *errmsg,
		      size_t errlen)
{
	for (const struct api_route *row = table; row->method != NULL; row++) {
		const char *why = row_problem(row);

		if (why != NULL) {
			snprintf(errmsg, errlen, "api: route %s %s: %s",
				 row->method, row->path ? row->path : "(null)",
				 why);
			return -1;
		}
	}
	return 0;
}

/* ------------------------------------------------------------------------
 * Matching
 */

/* Append ", "-separated `m` to the Allow value. */
static void allow_add(char *allow, size_t size, const char *m)
{
	size_t n = strlen(allow);

	snprintf(allow + n, size - n, "%s%s", n > 0 ? ", " : "", m);
}

/* Copy the placeholder segments of a matched route into `r`. */
static int take_segments(const char *tpl, int n, const char **seg,
			 const size_t *len, struct api__route *r,
			 struct flowd_error *err)
{
	char **slots[] = {&r->raw_flow,	  &r->raw_run,	   &r->raw_step,
			  &r->raw_member, &r->raw_project, &r->raw_branch};
	const char *t = "";
	size_t tlen = 0;

	for (int i = 0; i < n; i++) {
		enum placeholder ph;
		char *copy;

		next_segment(&tpl, &t, &tlen);
		ph = placeholder_of(t, tlen);
		if (ph == PH_NONE)
			continue;
		copy = malloc(len[i] + 1);
		if (copy == NULL)
			return flowd_error_set(err, FLOWD_E_INTERNAL,
					       "internal", "", "out of memory");
		memcpy(copy, seg[i], len[i]);
		copy[len[i]] = '\0';
		*slots[ph] = copy;
	}
	return 0;
}

int api__route_match(const struct api_route *table, const char *method,
		     const char *path, struct api__route *r,
		     struct flowd_error *err)
{
	const char *seg[SEGMENTS_MAX];
	size_t len[SEGMENTS_MAX];
	const struct api_route *named = NULL, *row, *m = NULL;
	const char *asked = method;
	int n;

	memset(r, 0, sizeof *r);
	n = split_path(path, seg, len);
	for (row = table; n >= 0 && row->method != NULL; row++) {
		if (template_match(row->path, n, seg, len)) {
			named = row;
			break;
		}
	}
	if (named == NULL)
		return flowd_error_set(err, FLOWD_E_NOT_FOUND, "not_found", "",
				       "no such route");

	if (method != NULL && strcmp(method, "HEAD") == 0)
		method = "GET";
	for (row = table; row->method != NULL; row++) {
		if (strcmp(row->path, named->path) != 0)
			continue;
		allow_add(r->allow, sizeof r->allow, row->method);
		if (strcmp(row->method, "GET") == 0)
			allow_add(r->allow, sizeof r->allow, "HEAD");
		if (m == NULL && method != NULL &&
		    strcmp(row->method, method) == 0)
			m = row;
	}
	if (m == NULL)
		return flowd_error_set(
		    err, FLOWD_E_METHOD, "method_not_allowed", "",
		    "method %s not allowed here (allowed: %s)",
		    asked ? asked : "?", r->allow);
	r->row = m;
	if (take_segments(m->path, n, seg, len, r, err) != 0) {
		api__route_close(r);
		return -1;
	}
	return 0;
}

/* ------------------------------------------------------------------------
 * Decoding and validation
 */

int api__hex_value(char c)
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
		hi = api__hex_value(in[i + 1]);
		lo = api__hex_value(in[i + 2]);
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

int api_http_status(enum flowd_errc errc)
{
	switch (errc) {
	case FLOWD_E_INVALID:
		return 400;
	case FLOWD_E_UNAUTHORIZED:
		return 401;
	case FLOWD_E_FORBIDDEN:
		return 403;
	case FLOWD_E_NOT_FOUND:
		return 404;
	case FLOWD_E_METHOD:
		return 405;
	case FLOWD_E_CONFLICT:
		return 409;
	case FLOWD_E_TOO_LARGE:
		return 413;
	case FLOWD_E_MEDIA_TYPE:
		return 415;
	case FLOWD_E_UNAVAILABLE:
		return 503;
	case FLOWD_E_TIMEOUT:
		return 504;
	case FLOWD_OK:
	case FLOWD_E_INTERNAL:
		break;
	}
	return 500;
}

int api_id_valid(const char *s, size_t max)
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

int api_request_query(const struct api_request *req, const char *key,
		      char **out, struct flowd_error *err)
{
	const char *raw;

	*out = NULL;
	raw = req->query_get ? req->query_get(req->query_arg, key) : NULL;
	if (raw == NULL || raw[0] == '\0')
		return 0;
	*out = api__percent_decode(raw, strlen(raw));
	if (*out == NULL)
		return flowd_error_set(err, FLOWD_E_INVALID, "invalid_query",
				       key, "malformed percent-encoding");
	return 0;
}

/* Every ?tag= of a run list, decoded and checked (docs/lifecycle.md). */
static int query_tags(struct api_request *req, const struct flowd_limits *lim,
		      struct flowd_error *err)
{
	const char *raw[65];
	size_t n;

	if (req->query_all != NULL) {
		n = req->query_all(req->query_arg, "tag", raw, 65);
	} else {
		raw[0] = req->query_get ? req->query_get(req->query_arg, "tag")
					: NULL;
		n = raw[0] != NULL;
	}
	if (n > 64)
		return flowd_error_set(err, FLOWD_E_INVALID, "invalid_query",
				       "tag", "at most 64 tags");
	if (n == 0)
		return 0;
	req->list_tags = calloc(n, sizeof *req->list_tags);
	if (req->list_tags == NULL)
		return flowd_error_set(err, FLOWD_E_UNAVAILABLE, "unavailable",
				       "", "out of memory");
	for (size_t i = 0; i < n; i++) {
		char *t = api__percent_decode(raw[i], strlen(raw[i]));
		const char *why;

		if (t == NULL)
			return flowd_error_set(err, FLOWD_E_INVALID,
					       "invalid_query", "tag",
					       "malformed percent-encoding");
		req->list_tags[req->n_list_tags++] = t;
		/* a system tag is looked up as it is; a user tag must be one */
		why = spec_tag_system(t) ? NULL
					 : spec_tag_check(t, lim->max_tag_bytes);
		if (why != NULL && strlen(t) <= 4096)
			return flowd_error_set(err, FLOWD_E_INVALID,
					       "invalid_query", "tag", "%s",
					       why);
		if (strlen(t) > 4096)
			return flowd_error_set(err, FLOWD_E_INVALID,
					       "invalid_query", "tag",
					       "too long");
	}
	return 0;
}

int api_uint_parse(const char *s, unsigned long min, unsigned long max,
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

/* Decimal digits only (no sign, no spaces, no overflow), value in
 * [min, max]. */
static int parse_digits(const char *s, uint64_t min, uint64_t max,
			uint64_t *out)
{
	unsigned long long v;
	char *end;

	if (s[0] == '\0')
		return -1;
	for (const char *p = s; *p != '\0'; p++)
		if (*p < '0' || *p > '9')
			return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return -1;
	*out = (uint64_t)v;
	return 0;
}

/* A run-list cursor: the decimal seq a next_cursor holds, 1..2^64-1. */
static int parse_cursor(const char *s, uint64_t *out)
{
	if (strlen(s) > CURSOR_MAX)
		return -1;
	return parse_digits(s, 1, UINT64_MAX, out);
}

static int validate_member(struct api__route *r, struct api_request *req,
			   struct flowd_error *err)
{
	char *id = api__percent_decode(r->raw_member, strlen(r->raw_member));
	int rc = 0;

	if (id == NULL ||
	    parse_digits(id, 1, MEMBER_ID_MAX, &req->member_id) != 0)
		rc =
		    flowd_error_set(err, FLOWD_E_INVALID, "invalid_value", "id",
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
	return flowd_error_set(err, FLOWD_E_INVALID, "invalid_query",
			       "consistent", "must be true or false");
}

/* "30s", "500ms", "2m", or plain seconds: into ms. -1 when malformed. */
static long long duration_ms(const char *s)
{
	unsigned long long n = 0;
	const char *p = s;

	if (*p < '0' || *p > '9')
		return -1;
	for (; *p >= '0' && *p <= '9'; p++) {
		n = n * 10 + (unsigned long long)(*p - '0');
		if (n > 100000000ULL)
			return -1;
	}
	if (strcmp(p, "ms") == 0)
		return (long long)n;
	if (*p == '\0' || strcmp(p, "s") == 0)
		return (long long)n * 1000;
	if (strcmp(p, "m") == 0)
		return (long long)n * 60000;
	return -1;
}

/* ?index=N&wait=D on rows with a probe (blocking reads). */
static int validate_wait(api__query_get_cb query, void *arg,
			 struct api_request *req, struct flowd_error *err)
{
	const char *index = query ? query(arg, "index") : NULL;
	const char *wait = query ? query(arg, "wait") : NULL;
	unsigned long long n;
	long long ms = API_WAIT_DEFAULT_MS;
	char *end;

	req->wait_index = 0;
	req->wait_ms = 0;
	if (index == NULL) {
		if (wait != NULL)
			return flowd_error_set(err, FLOWD_E_INVALID,
					       "invalid_query", "wait",
					       "wait needs index");
		return 0;
	}
	errno = 0;
	n = strtoull(index, &end, 10);
	if (index[0] < '0' || index[0] > '9' || *end != '\0' || errno != 0)
		return flowd_error_set(err, FLOWD_E_INVALID, "invalid_query",
				       "index",
				       "must be an X-Flowd-Index: an integer "
				       "from 0 to 2^64-1");
	if (wait != NULL) {
		ms = duration_ms(wait);
		if (ms < 0 || ms > API_WAIT_MAX_MS)
			return flowd_error_set(
				err, FLOWD_E_INVALID, "invalid_query", "wait",
				"must be a duration such as 30s, 500ms or 5m, "
				"at most %dm",
				API_WAIT_MAX_MS / 60000);
	}
	if (req->consistent)
		return flowd_error_set(err, FLOWD_E_INVALID, "invalid_query",
				       "index",
				       "a blocking read is not a consistent "
				       "one: drop consistent or index");
	req->wait_index = n;
	req->wait_ms = ms > 0 ? (unsigned)ms : 1;
	return 0;
}

int api_query_run_list(struct api_request *req, const struct flowd_limits *lim,
		       struct flowd_error *err)
{
	char *limit = NULL, *cursor = NULL;
	unsigned long v;
	size_t i;
	int rc = -1;

	if (api_request_query(req, "flow", &req->list_flow, err) != 0)
		goto done;
	if (req->list_flow != NULL && !spec_flow_name_valid(req->list_flow)) {
		flowd_error_set(err, FLOWD_E_INVALID, "invalid_query", "flow",
				"not a valid flow name");
		goto done;
	}
	if (api_request_query(req, "project", &req->list_project, err) != 0)
		goto done;
	if (req->list_project != NULL &&
	    !spec_project_name_valid(req->list_project)) {
		flowd_error_set(err, FLOWD_E_INVALID, "invalid_query",
				"project", "not a valid project name");
		goto done;
	}
	if (api_request_query(req, "branch", &req->list_branch, err) != 0)
		goto done;
	if (req->list_branch != NULL &&
	    !spec_branch_name_valid(req->list_branch)) {
		flowd_error_set(err, FLOWD_E_INVALID, "invalid_query", "branch",
				"a branch is main, prod, test.<name> or "
				"user.<name>");
		goto done;
	}
	if (api_request_query(req, "status", &req->list_status, err) != 0)
		goto done;
	if (req->list_status != NULL) {
		for (i = 0; run_statuses[i] != NULL; i++)
			if (strcmp(req->list_status, run_statuses[i]) == 0)
				break;
		if (run_statuses[i] == NULL) {
			flowd_error_set(err, FLOWD_E_INVALID, "invalid_query",
					"status",
					"must be one of queued, running, "
					"succeeded, failed, cancelled");
			goto done;
		}
	}
	if (query_tags(req, lim, err) != 0)
		goto done;
	req->limit = 50;
	if (lim->max_runs_page > 0 && req->limit > lim->max_runs_page)
		req->limit = lim->max_runs_page;
	if (api_request_query(req, "limit", &limit, err) != 0)
		goto done;
	if (limit != NULL) {
		if (api_uint_parse(limit, 1, lim->max_runs_page, &v) != 0) {
			flowd_error_set(err, FLOWD_E_INVALID, "invalid_query",
					"limit",
					"must be an integer from 1 to %u",
					lim->max_runs_page);
			goto done;
		}
		req->limit = (unsigned)v;
	}
	if (api_request_query(req, "cursor", &cursor, err) != 0)
		goto done;
	if (cursor != NULL && parse_cursor(cursor, &req->cursor) != 0) {
		flowd_error_set(err, FLOWD_E_INVALID, "invalid_query", "cursor",
				"not a cursor from next_cursor");
		goto done;
	}
	rc = 0;
done:
	free(limit);
	free(cursor);
	return rc;
}

int api_query_flow_runs(struct api_request *req, const struct flowd_limits *lim,
			struct flowd_error *err)
{
	struct spec_flow_key k;

	if (api_query_run_list(req, lim, err) != 0)
		return -1;
	spec_flow_key_split(req->flow, &k);
	free(req->list_flow);
	free(req->list_project);
	free(req->list_branch);
	req->list_flow = strdup(k.flow);
	req->list_project = strdup(k.project);
	req->list_branch = strdup(k.branch);
	if (req->list_flow == NULL || req->list_project == NULL ||
	    req->list_branch == NULL)
		return flowd_error_set(err, FLOWD_E_UNAVAILABLE, "unavailable",
				       "", "out of memory");
	return 0;
}

/* Decode a raw path segment (NULL: none) into *out; 0, or -1 when it does
 * not decode or `valid` refuses it. */
static int path_param(const char *raw, int (*valid)(const char *), char **out)
{
	if (raw == NULL)
		return 0;
	*out = api__percent_decode(raw, strlen(raw));
	return *out != NULL && valid(*out) ? 0 : -1;
}

static int run_id_valid(const char *s) { return api_id_valid(s, RUN_ID_MAX); }

static int flow_name_valid(const char *s) { return spec_flow_name_valid(s); }
static int project_name_valid(const char *s)
{
	return spec_project_name_valid(s);
}
static int branch_name_valid(const char *s)
{
	return spec_branch_name_valid(s);
}

int api__route_validate(struct api__route *r, api__query_get_cb query,
			void *query_arg, const struct flowd_limits *lim,
			struct api_request *req, struct flowd_error *err)
{
	const struct api_route *row = r->row;

	req->route = row;
	req->query_get = query;
	req->query_arg = query_arg;
	if (path_param(r->raw_flow, flow_name_valid, &req->flow) != 0)
		return flowd_error_set(
		    err, FLOWD_E_INVALID, "invalid_value", "flow",
		    "flow name must match [A-Za-z0-9_.-]{1,128}");
	if (path_param(r->raw_project, project_name_valid,
		       &req->project) != 0)
		return flowd_error_set(err, FLOWD_E_INVALID, "invalid_value",
				       "project",
				       "a project name matches "
				       "[A-Za-z0-9_-]{1,64}");
	if (path_param(r->raw_branch, branch_name_valid, &req->branch) !=
	    0)
		return flowd_error_set(err, FLOWD_E_INVALID, "invalid_value",
				       "branch",
				       "a branch is main, prod, test.<name> or "
				       "user.<name> (name [A-Za-z0-9_-]{1,64})");
	/* a flow of a project's branch: the state knows it by its key */
	if (req->flow != NULL && (req->project != NULL || req->branch != NULL)) {
		char key[SPEC_FLOW_KEY_MAX];

		if (spec_flow_key(req->project, req->branch, req->flow, key,
				  sizeof key) != 0)
			return flowd_error_set(err, FLOWD_E_INVALID,
					       "invalid_value", "flow",
					       "too long");
		free(req->flow);
		req->flow = strdup(key);
		if (req->flow == NULL)
			return flowd_error_set(err, FLOWD_E_INTERNAL,
					       "internal", "", "out of memory");
	}
	if (path_param(r->raw_run, run_id_valid, &req->run_id) != 0)
		return flowd_error_set(err, FLOWD_E_NOT_FOUND, "not_found", "",
				       "no such run");
	if (path_param(r->raw_step, flow_name_valid, &req->step) != 0)
		return flowd_error_set(err, FLOWD_E_NOT_FOUND, "not_found", "",
				       "no such step");
	if (r->raw_member != NULL && validate_member(r, req, err) != 0)
		return -1;
	if (row->read != NULL &&
	    validate_consistent(query, query_arg, req, err) != 0)
		return -1;
	if (row->probe != NULL &&
	    validate_wait(query, query_arg, req, err) != 0)
		return -1;
	if (row->query != NULL)
		return row->query(req, lim, err);
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

/* ------------------------------------------------------------------------
 * Bodies
 */

static const char *const type_wanted[] = {
	[API_JSON_ANY] = "anything",	   [API_JSON_OBJECT] = "an object",
	[API_JSON_ARRAY] = "an array",	   [API_JSON_STRING] = "a string",
	[API_JSON_INTEGER] = "an integer", [API_JSON_NUMBER] = "a number",
	[API_JSON_BOOLEAN] = "a boolean",
};

static int type_is(enum api_json type, const json_t *v)
{
	switch (type) {
	case API_JSON_ANY:
		return 1;
	case API_JSON_OBJECT:
		return json_is_object(v);
	case API_JSON_ARRAY:
		return json_is_array(v);
	case API_JSON_STRING:
		return json_is_string(v);
	case API_JSON_INTEGER:
		return json_is_integer(v);
	case API_JSON_NUMBER:
		return json_is_number(v);
	case API_JSON_BOOLEAN:
		return json_is_boolean(v);
	}
	return 0;
}

int api__body_check(const struct api_route *row, const json_t *body,
		    const struct flowd_limits *lim, struct flowd_error *err)
{
	const struct api_field *f;
	const char *key;
	json_t *value;

	if (body == NULL && row->body == API_BODY_JSON_OPT)
		return 0;
	if (row->fields == NULL)
		return 0;
	if (!json_is_object(body))
		return flowd_error_set(err, FLOWD_E_INVALID, "invalid_type", "",
				       "the body must be a JSON object");
	json_object_foreach((json_t *)body, key, value)
	{
		for (f = row->fields; f->name != NULL; f++)
			if (strcmp(key, f->name) == 0)
				break;
		if (f->name == NULL)
			return flowd_error_set(err, FLOWD_E_INVALID,
					       "unknown_field", key,
					       "unknown field");
	}
	for (f = row->fields; f->name != NULL; f++) {
		value = json_object_get(body, f->name);
		if (value != NULL && json_is_null(value) &&
		    !(f->flags & API_FIELD_NULL_IS_VALUE))
			value = NULL;
		if (value == NULL) {
			if (f->flags & API_FIELD_REQUIRED)
				return flowd_error_set(
				    err, FLOWD_E_INVALID, "missing_field",
				    f->name, "%s",
				    f->missing ? f->missing : "required");
			continue;
		}
		if (!type_is(f->type, value))
			return flowd_error_set(
			    err, FLOWD_E_INVALID, "invalid_type", f->name,
			    "must be %s", type_wanted[f->type]);
		if (f->check != NULL &&
		    f->check(f->name, value, body, lim, err) != 0)
			return -1;
	}
	return 0;
}

const json_t *api_request_field(const struct api_request *req,
				const char *name)
{
	const json_t *v = json_object_get(req->body, name);

	return v != NULL && !json_is_null(v) ? v : NULL;
}

int api__ipv4_address_parse(const char *s, struct sockaddr_in *out)
{
	return flowd_ipv4_address_parse(s, out);
}

int api__command_body(const char *raw, size_t len, struct flowd_error *err)
{
	json_error_t jerr;
	json_t *doc;
	int is_object;

	if (raw == NULL || len == 0)
		return flowd_error_set(err, FLOWD_E_INVALID, "missing_field",
				       "body", "the command body is empty");
	doc = json_loadb(raw, len, JSON_REJECT_DUPLICATES, &jerr);
	if (doc == NULL)
		return flowd_error_set(err, FLOWD_E_INVALID, "invalid_json", "",
				       "invalid JSON at line %d, column %d: %s",
				       jerr.line, jerr.column, jerr.text);
	is_object = json_is_object(doc);
	json_decref(doc);
	if (!is_object)
		return flowd_error_set(err, FLOWD_E_INVALID, "invalid_json", "",
				       "the command must be a JSON object");
	return 0;
}

void api__request_clear(struct api_request *req)
{
	free(req->flow);
	free(req->project);
	free(req->branch);
	free(req->run_id);
	free(req->step);
	json_decref(req->body);
	free(req->list_flow);
	free(req->list_status);
	free(req->list_project);
	free(req->list_branch);
	for (size_t i = 0; i < req->n_list_tags; i++)
		free(req->list_tags[i]);
	free(req->list_tags);
	free(req->pg_run_id);
	free(req->resp_body);
	free(req->method);
	free(req->target);
	free(req->raw_body);
	free(req->content_type);
	req->flow = NULL;
	req->project = NULL;
	req->branch = NULL;
	req->run_id = NULL;
	req->step = NULL;
	req->body = NULL;
	req->list_flow = NULL;
	req->list_status = NULL;
	req->list_project = NULL;
	req->list_branch = NULL;
	req->list_tags = NULL;
	req->n_list_tags = 0;
	req->cursor = 0;
	req->pg_run_id = NULL;
	req->resp_body = NULL;
	req->method = NULL;
	req->target = NULL;
	req->raw_body = NULL;
	req->raw_body_len = 0;
	req->content_type = NULL;
	req->forwarded = 0;
}
