/* routes.c - flowd's REST API as one table (docs/api.md): each row names a
 * method and a path, who may call it, the shape of its body, and the
 * handler that answers it: a read handler (daemon/reads.c, on the HTTP
 * thread) or a submit handler (daemon/service.c, on the loop). The body
 * schemas and their field checks are here too, next to their rows; the
 * api (api/route.c) applies them in the order api.h gives. Pure data and
 * pure checks: no state, any thread. */
#include "daemon/routes.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/addr.h"
#include "core/cron.h"
#include "core/spec.h"
#include "daemon/reads.h"
#include "daemon/service.h"
#include "daemon/watch.h"

/* ------------------------------------------------------------------------
 * Field checks (api_check_fn)
 */

/* A member id: a JSON integer 1..2^63-1 (larger ones do not parse). */
static int check_member_id(const char *field, const json_t *v,
			   const json_t *body, const struct flowd_limits *lim,
			   struct flowd_error *err)
{
	if (json_integer_value(v) < 1)
		return flowd_error_set(err, FLOWD_E_INVALID, "invalid_value",
				       field,
				       "must be an integer from 1 to %llu",
				       (unsigned long long)INT64_MAX);
	return 0;
}

/* An IPv4 "a.b.c.d:port" in its one spelling (core/addr.h), so that
 * addresses compare as strings. */
static int check_ipv4_address(const char *field, const json_t *v,
			      const json_t *body, const struct flowd_limits *lim,
			      struct flowd_error *err)
{
	if (strlen(json_string_value(v)) != json_string_length(v) ||
	    flowd_ipv4_address_parse(json_string_value(v), NULL) != 0)
		return flowd_error_set(err, FLOWD_E_INVALID, "invalid_value",
				       field,
				       "must be an IPv4 \"a.b.c.d:port\" with "
				       "a port from 1 to 65535");
	return 0;
}

static int check_idempotency_key(const char *field, const json_t *v,
				 const json_t *body,
				 const struct flowd_limits *lim,
				 struct flowd_error *err)
{
	if (json_string_length(v) == 0 ||
	    json_string_length(v) > lim->max_idempotency_key_bytes)
		return flowd_error_set(err, FLOWD_E_INVALID, "invalid_value",
				       field, "must be 1 to %zu bytes",
				       lim->max_idempotency_key_bytes);
	return 0;
}

/* A list of user tags (docs/lifecycle.md): strings spec_tag_check takes,
 * at most limits.max_tags_per_run. */
static int check_tags(const char *field, const json_t *v, const json_t *body,
		      const struct flowd_limits *lim, struct flowd_error *err)
{
	const char *why;
	json_t *t;
	size_t i;

	if (json_array_size(v) > lim->max_tags_per_run)
		return flowd_error_set(err, FLOWD_E_INVALID, "too_many_tags",
				       field,
				       "at most %u tags (limits.max_tags_per_run)",
				       lim->max_tags_per_run);
	json_array_foreach(v, i, t) {
		if (!json_is_string(t))
			return flowd_error_set(err, FLOWD_E_INVALID,
					       "invalid_type", field,
					       "%s[%zu] must be a string",
					       field, i);
		why = spec_tag_check(json_string_value(t), lim->max_tag_bytes);
		if (why != NULL)
			return flowd_error_set(err, FLOWD_E_INVALID,
					       "invalid_value", field,
					       "%s[%zu] %s", field, i, why);
	}
	return 0;
}

static int check_step_name(const char *field, const json_t *v,
			   const json_t *body, const struct flowd_limits *lim,
			   struct flowd_error *err)
{
	if (json_string_length(v) == 0 || json_string_length(v) > 128)
		return flowd_error_set(err, FLOWD_E_INVALID, "invalid_value",
				       field, "must be a step name");
	return 0;
}

static int check_resume_version(const char *field, const json_t *v,
				const json_t *body,
				const struct flowd_limits *lim,
				struct flowd_error *err)
{
	const char *s = json_string_value(v);

	if (strcmp(s, "origin") != 0 && strcmp(s, "current") != 0)
		return flowd_error_set(err, FLOWD_E_INVALID, "invalid_value",
				       field, "must be origin or current");
	return 0;
}

static int check_event_name(const char *field, const json_t *v,
			    const json_t *body, const struct flowd_limits *lim,
			    struct flowd_error *err)
{
	if (!json_is_string(v) || !spec_event_name_valid(json_string_value(v)))
		return flowd_error_set(err, FLOWD_E_INVALID, "invalid_value",
				       field,
				       "must match [A-Za-z0-9_-]{1,128}");
	return 0;
}

static int check_event_id(const char *field, const json_t *v,
			  const json_t *body, const struct flowd_limits *lim,
			  struct flowd_error *err)
{
	if (!json_is_string(v) || !api_id_valid(json_string_value(v), 128))
		return flowd_error_set(err, FLOWD_E_INVALID, "invalid_value",
				       field,
				       "must be 1 to 128 of [A-Za-z0-9_.:-]");
	return 0;
}

/* An event's payload: at most limits.max_event_bytes as compact JSON. */
static int check_payload_size(const char *field, const json_t *v,
			      const json_t *body, const struct flowd_limits *lim,
			      struct flowd_error *err)
{
	char *text = json_dumps(v, JSON_COMPACT);
	size_t size = text ? strlen(text) : 0;

	free(text);
	if (size > lim->max_event_bytes)
		return flowd_error_set(err, FLOWD_E_TOO_LARGE, "too_large",
				       field,
				       "payload of %zu bytes is over the limit "
				       "of %zu",
				       size, lim->max_event_bytes);
	return 0;
}

static int check_time(const char *field, const json_t *v, const json_t *body,
		      const struct flowd_limits *lim, struct flowd_error *err)
{
	int64_t t;

	if (!json_is_string(v) || cron_time_parse(json_string_value(v), &t) != 0)
		return flowd_error_set(err, FLOWD_E_INVALID, "invalid_value",
				       field,
				       "must be an RFC 3339 time such as "
				       "2027-03-14T07:00:00Z");
	return 0;
}

/* Backfill's "to": a time, not before "from" (checked already). */
static int check_time_to(const char *field, const json_t *v,
			 const json_t *body, const struct flowd_limits *lim,
			 struct flowd_error *err)
{
	int64_t from, to;

	if (check_time(field, v, body, lim, err) != 0)
		return -1;
	cron_time_parse(json_string_value(json_object_get(body, "from")),
			&from);
	cron_time_parse(json_string_value(v), &to);
	if (to < from)
		return flowd_error_set(err, FLOWD_E_INVALID, "invalid_value",
				       field, "must not be before from");
	return 0;
}

static int check_schedule_index(const char *field, const json_t *v,
				const json_t *body,
				const struct flowd_limits *lim,
				struct flowd_error *err)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    json_integer_value(v) > 1000000)
		return flowd_error_set(err, FLOWD_E_INVALID, "invalid_value",
				       field, "must be a schedule index");
	return 0;
}

/* PUT /v1/flows/{flow}: the body is a flow spec, checked by core/spec.c
 * (every 400 with its field path, 413 over max_spec_bytes); the request
 * keeps the normalized document (defaults filled in). */
static int parse_flow_spec(json_t **body, const struct flowd_limits *lim,
			   struct flowd_error *err)
{
	struct flow_spec *spec;

	if (spec_parse(*body, lim, &spec, err) != 0)
		return -1;
	json_decref(*body);
	*body = json_incref(spec->doc);
	spec_free(spec);
	return 0;
}

/* ------------------------------------------------------------------------
 * Body schemas (struct api_field)
 */

static const struct api_field run_create_body[] = {
	{.name = "parameters", .type = API_JSON_OBJECT},
	{.name = "idempotency_key", .type = API_JSON_STRING,
	 .check = check_idempotency_key},
	{.name = "tags", .type = API_JSON_ARRAY, .check = check_tags},
	{.name = NULL},
};

static const struct api_field run_tags_body[] = {
	{.name = "add", .type = API_JSON_ARRAY, .check = check_tags},
	/* system tags are refused by apply, in its words */
	{.name = "remove", .type = API_JSON_ARRAY},
	{.name = NULL},
};

static const struct api_field run_resume_body[] = {
	{.name = "from_step", .type = API_JSON_STRING, .check = check_step_name},
	{.name = "version", .type = API_JSON_STRING,
	 .check = check_resume_version},
	{.name = "idempotency_key", .type = API_JSON_STRING,
	 .check = check_idempotency_key},
	{.name = "tags", .type = API_JSON_ARRAY, .check = check_tags},
	{.name = NULL},
};

static int check_run_id(const char *field, const json_t *v, const json_t *body,
			const struct flowd_limits *lim, struct flowd_error *err)
{
	const char *s = json_string_value(v);

	if (strncmp(s, "r-", 2) != 0 || strlen(s) > 31 || !api_id_valid(s, 31))
		return flowd_error_set(err, FLOWD_E_INVALID, "invalid_value",
				       field, "must be a run id");
	return 0;
}

static const struct api_field run_record_body[] = {
	{.name = "origin_run_id", .type = API_JSON_STRING,
	 .flags = API_FIELD_REQUIRED, .check = check_run_id,
	 .missing = "the run resumed elsewhere"},
	{.name = "parameters", .type = API_JSON_OBJECT},
	{.name = "steps", .type = API_JSON_ARRAY, .flags = API_FIELD_REQUIRED,
	 .missing = "each step's outcome"},
	{.name = "idempotency_key", .type = API_JSON_STRING,
	 .check = check_idempotency_key},
	{.name = NULL},
};

static const struct api_field run_redrive_body[] = {
	{.name = "idempotency_key", .type = API_JSON_STRING,
	 .check = check_idempotency_key},
	{.name = NULL},
};

static int check_project(const char *field, const json_t *v,
			 const json_t *body, const struct flowd_limits *lim,
			 struct flowd_error *err)
{
	if (!spec_project_name_valid(json_string_value(v)))
		return flowd_error_set(err, FLOWD_E_INVALID, "invalid_value",
				       field, "must match [A-Za-z0-9_-]{1,64}");
	return 0;
}

static int check_branch(const char *field, const json_t *v,
			const json_t *body, const struct flowd_limits *lim,
			struct flowd_error *err)
{
	if (!spec_branch_name_valid(json_string_value(v)))
		return flowd_error_set(err, FLOWD_E_INVALID, "invalid_value",
				       field,
				       "a branch is main, prod, test.<name> or "
				       "user.<name>");
	return 0;
}

static const struct api_field event_body[] = {
	{.name = "name", .flags = API_FIELD_REQUIRED | API_FIELD_NULL_IS_VALUE,
	 .check = check_event_name, .missing = "an event has a name"},
	{.name = "project", .type = API_JSON_STRING, .check = check_project},
	{.name = "branch", .type = API_JSON_STRING, .check = check_branch},
	{.name = "id", .check = check_event_id},
	{.name = "payload", .type = API_JSON_OBJECT,
	 .check = check_payload_size},
	{.name = NULL},
};

static const struct api_field backfill_body[] = {
	{.name = "from", .flags = API_FIELD_REQUIRED | API_FIELD_NULL_IS_VALUE,
	 .check = check_time, .missing = "a time is required"},
	{.name = "to", .flags = API_FIELD_REQUIRED | API_FIELD_NULL_IS_VALUE,
	 .check = check_time_to, .missing = "a time is required"},
	{.name = "schedule", .check = check_schedule_index},
	{.name = NULL},
};

static const struct api_field member_add_body[] = {
	{.name = "id", .type = API_JSON_INTEGER, .flags = API_FIELD_REQUIRED,
	 .check = check_member_id},
	{.name = "raft_address", .type = API_JSON_STRING,
	 .flags = API_FIELD_REQUIRED, .check = check_ipv4_address},
	{.name = "api_address", .type = API_JSON_STRING,
	 .flags = API_FIELD_REQUIRED, .check = check_ipv4_address},
	{.name = NULL},
};

static const struct api_field leader_transfer_body[] = {
	{.name = "id", .type = API_JSON_INTEGER, .check = check_member_id},
	{.name = NULL},
};

/* ------------------------------------------------------------------------
 * The table. Rows on one path give its Allow header in this order.
 */

#define VIEW_READ (API_ROUTE_VIEW | API_ROUTE_CONSISTENT)

const struct api_route routes_table[] = {
	/* The node */
	{.method = "GET", .path = "/healthz", .role = API_ROLE_PUBLIC,
	 .read = reads_healthz, .name = "healthz"},
	{.method = "GET", .path = "/readyz", .role = API_ROLE_PUBLIC,
	 .flags = API_ROUTE_VIEW, .read = reads_readyz, .name = "readyz"},
	{.method = "GET", .path = "/metrics", .role = API_ROLE_READER,
	 .flags = API_ROUTE_VIEW, .read = reads_metrics, .name = "metrics"},
	{.method = "GET", .path = "/v1/openapi.json", .role = API_ROLE_PUBLIC,
	 .read = reads_openapi, .name = "openapi"},

	/* The web dashboard (api/web.c): public pages; the API calls they
	 * make carry the token the page asks for */
	{.method = "GET", .path = "/", .role = API_ROLE_PUBLIC,
	 .read = api_web_index, .name = "web_index"},
	{.method = "GET", .path = "/ui/app.js", .role = API_ROLE_PUBLIC,
	 .read = api_web_js, .name = "web_js"},
	{.method = "GET", .path = "/ui/app.css", .role = API_ROLE_PUBLIC,
	 .read = api_web_css, .name = "web_css"},

	/* The cluster */
	{.method = "GET", .path = "/v1/cluster", .role = API_ROLE_READER,
	 .flags = API_ROUTE_VIEW, .read = reads_cluster, .probe = reads_probe_cluster,
	 .name = "cluster"},
	{.method = "POST", .path = "/v1/cluster/members",
	 .role = API_ROLE_ADMIN, .body = API_BODY_JSON,
	 .fields = member_add_body, .submit = service_member_add,
	 .name = "member_add"},
	{.method = "DELETE", .path = "/v1/cluster/members/{member}",
	 .role = API_ROLE_ADMIN, .submit = service_member_remove,
	 .name = "member_remove"},
	{.method = "POST", .path = "/v1/cluster/leader/transfer",
	 .role = API_ROLE_ADMIN, .body = API_BODY_JSON_OPT,
	 .fields = leader_transfer_body, .submit = service_leader_transfer,
	 .name = "leader_transfer"},

	/* Flows */
	{.method = "GET", .path = "/v1/flows", .role = API_ROLE_READER,
	 .flags = VIEW_READ, .read = reads_flow_list,
	 .probe = reads_probe_flows, .name = "flow_list"},
	{.method = "GET", .path = "/v1/flows/{flow}", .role = API_ROLE_READER,
	 .flags = VIEW_READ, .read = reads_flow_get,
	 .probe = reads_probe_flow, .name = "flow_get"},
	{.method = "PUT", .path = "/v1/flows/{flow}", .role = API_ROLE_ADMIN,
	 .body = API_BODY_JSON, .parse = parse_flow_spec,
	 .submit = service_flow_put, .name = "flow_put"},
	{.method = "DELETE", .path = "/v1/flows/{flow}",
	 .role = API_ROLE_ADMIN, .submit = service_flow_delete,
	 .name = "flow_delete"},
	{.method = "GET", .path = "/v1/flows/{flow}/versions",
	 .role = API_ROLE_READER, .flags = VIEW_READ,
	 .read = reads_flow_versions, .probe = reads_probe_flow,
	 .name = "flow_versions"},

	/* Triggers (docs/triggers.md) */
	{.method = "GET", .path = "/v1/flows/{flow}/schedule",
	 .role = API_ROLE_READER, .flags = VIEW_READ, .read = reads_schedule,
	 .probe = reads_probe_flow, .name = "schedule_get"},
	{.method = "POST", .path = "/v1/flows/{flow}/pause",
	 .role = API_ROLE_OPERATOR, .submit = service_flow_pause,
	 .name = "flow_pause"},
	{.method = "POST", .path = "/v1/flows/{flow}/unpause",
	 .role = API_ROLE_OPERATOR, .submit = service_flow_unpause,
	 .name = "flow_unpause"},
	{.method = "POST", .path = "/v1/flows/{flow}/backfill",
	 .role = API_ROLE_OPERATOR, .body = API_BODY_JSON,
	 .fields = backfill_body, .submit = service_backfill,
	 .name = "backfill"},
	{.method = "GET", .path = "/v1/events", .role = API_ROLE_READER,
	 .query = reads_events_query, .read = reads_events,
	 .name = "event_list"},
	{.method = "POST", .path = "/v1/events", .role = API_ROLE_OPERATOR,
	 .body = API_BODY_JSON, .fields = event_body,
	 .submit = service_event_post, .name = "event_post"},
	{.method = "GET", .path = "/v1/cron/preview", .role = API_ROLE_READER,
	 .read = reads_cron_preview, .name = "cron_preview"},

	/* A flow of a project's branch (docs/lifecycle.md): the same
	 * handlers, on the flow's key; /v1/flows/{flow} is project default,
	 * branch main */
	{.method = "GET", .path = "/v1/projects/{project}/branches/{branch}/flows/{flow}",
	 .role = API_ROLE_READER,
	 .flags = VIEW_READ, .read = reads_flow_get,
	 .probe = reads_probe_flow, .name = "branch_flow_get"},
	{.method = "PUT", .path = "/v1/projects/{project}/branches/{branch}/flows/{flow}",
	 .role = API_ROLE_ADMIN,
	 .body = API_BODY_JSON, .parse = parse_flow_spec,
	 .submit = service_flow_put, .name = "branch_flow_put"},
	{.method = "DELETE", .path = "/v1/projects/{project}/branches/{branch}/flows/{flow}",
	 .role = API_ROLE_ADMIN,
	 .submit = service_flow_delete, .name = "branch_flow_delete"},
	{.method = "GET", .path = "/v1/projects/{project}/branches/{branch}/flows/{flow}/versions",
	 .role = API_ROLE_READER,
	 .flags = VIEW_READ, .read = reads_flow_versions,
	 .probe = reads_probe_flow, .name = "branch_flow_versions"},
	{.method = "GET", .path = "/v1/projects/{project}/branches/{branch}/flows/{flow}/schedule",
	 .role = API_ROLE_READER,
	 .flags = VIEW_READ, .read = reads_schedule, .probe = reads_probe_flow,
	 .name = "branch_schedule_get"},
	{.method = "POST", .path = "/v1/projects/{project}/branches/{branch}/flows/{flow}/pause",
	 .role = API_ROLE_OPERATOR,
	 .submit = service_flow_pause, .name = "branch_flow_pause"},
	{.method = "POST", .path = "/v1/projects/{project}/branches/{branch}/flows/{flow}/unpause",
	 .role = API_ROLE_OPERATOR,
	 .submit = service_flow_unpause, .name = "branch_flow_unpause"},
	{.method = "POST", .path = "/v1/projects/{project}/branches/{branch}/flows/{flow}/backfill",
	 .role = API_ROLE_OPERATOR,
	 .body = API_BODY_JSON, .fields = backfill_body,
	 .submit = service_backfill, .name = "branch_backfill"},
	{.method = "POST", .path = "/v1/projects/{project}/branches/{branch}/flows/{flow}/runs",
	 .role = API_ROLE_OPERATOR,
	 .body = API_BODY_JSON_OPT, .fields = run_create_body,
	 .submit = service_run_create, .name = "branch_run_create"},
	{.method = "GET", .path = "/v1/projects/{project}/branches/{branch}/flows/{flow}/runs",
	 .role = API_ROLE_READER,
	 .flags = VIEW_READ, .query = api_query_flow_runs,
	 .read = reads_run_list, .probe = reads_probe_runs,
	 .name = "branch_run_list"},
	{.method = "POST", .path = "/v1/projects/{project}/branches/{branch}/flows/{flow}/records",
	 .role = API_ROLE_OPERATOR, .body = API_BODY_JSON,
	 .fields = run_record_body, .submit = service_run_record,
	 .name = "run_record"},
	{.method = "GET", .path = "/v1/projects/{project}/flows/{flow}/compare",
	 .role = API_ROLE_READER, .flags = API_ROUTE_VIEW,
	 .query = reads_compare_query, .read = reads_compare,
	 .name = "compare"},

	/* Runs */
	{.method = "POST", .path = "/v1/flows/{flow}/runs",
	 .role = API_ROLE_OPERATOR, .body = API_BODY_JSON_OPT,
	 .fields = run_create_body, .submit = service_run_create,
	 .name = "run_create"},
	{.method = "GET", .path = "/v1/runs", .role = API_ROLE_READER,
	 .flags = VIEW_READ, .query = api_query_run_list,
	 .read = reads_run_list, .probe = reads_probe_runs,
	 .name = "run_list"},
	{.method = "GET", .path = "/v1/runs/{id}", .role = API_ROLE_READER,
	 .flags = VIEW_READ, .read = reads_run_get,
	 .probe = reads_probe_run, .name = "run_get"},
	{.method = "POST", .path = "/v1/runs/{id}/cancel",
	 .role = API_ROLE_OPERATOR, .submit = service_run_cancel,
	 .name = "run_cancel"},
	{.method = "POST", .path = "/v1/runs/{id}/tags",
	 .role = API_ROLE_OPERATOR, .body = API_BODY_JSON,
	 .fields = run_tags_body, .submit = service_run_tags,
	 .name = "run_tags"},
	{.method = "POST", .path = "/v1/runs/{id}/resume",
	 .role = API_ROLE_OPERATOR, .body = API_BODY_JSON_OPT,
	 .fields = run_resume_body, .submit = service_run_resume,
	 .name = "run_resume"},
	{.method = "POST", .path = "/v1/runs/{id}/redrive",
	 .role = API_ROLE_OPERATOR, .body = API_BODY_JSON_OPT,
	 .fields = run_redrive_body, .submit = service_run_redrive,
	 .name = "run_redrive"},
	{.method = "GET", .path = "/v1/watch", .role = API_ROLE_READER,
	 .query = watch_query, .read = watch_read, .name = "watch"},
	{.method = "GET", .path = "/v1/runs/{id}/steps/{step}/logs",
	 .role = API_ROLE_READER, .flags = API_ROUTE_VIEW,
	 .query = reads_logs_query, .read = reads_logs, .name = "logs"},

	/* Between nodes: a node's own commands, proposed through the leader */
	{.method = "POST", .path = "/internal/v1/commands",
	 .role = API_ROLE_NODE, .body = API_BODY_RAW,
	 .submit = service_internal_command, .name = "internal_command"},

	{.method = NULL},
};

/* node.metrics_address: GET /metrics without a token, for a scraper on a
 * network the API's tokens should not travel (docs/operations.md). */
const struct api_route routes_metrics_table[] = {
	{.method = "GET", .path = "/metrics", .role = API_ROLE_PUBLIC,
	 .flags = API_ROUTE_VIEW, .read = reads_metrics, .name = "metrics"},
	{.method = NULL},
};
