/* route.h - the api module's pure helpers: routing, path and query
 * validation, authorization and request-body shape checks. No sockets, no
 * MHD: server.c feeds them strings, tests/unit/test_api_route.c tests them. */
#ifndef FLOWD_API_ROUTE_H
#define FLOWD_API_ROUTE_H

#include <jansson.h>
#include <netinet/in.h>
#include <stddef.h>

#include "api/api.h"
#include "core/error.h"
#include "core/limits.h"

/* How a matched route is answered. */
enum api__target {
	API__TARGET_SUBMIT,  /* handed to backend->submit (op says which) */
	API__TARGET_HEALTHZ, /* answered by the api: {"status":"ok"} */
	API__TARGET_LOGS,    /* answered by the api from storage_reader_logs */
	API__TARGET_CRON,    /* answered by the api: api__cron_preview */
};

/* Route flags. */
#define API__ROUTE_PUBLIC 0x1	/* no token needed */
#define API__ROUTE_WRITE 0x2	/* needs an admin token */
#define API__ROUTE_BODY 0x4	/* a JSON body is read and parsed */
#define API__ROUTE_BODY_OPT 0x8 /* ... and may be empty (any content type) */
#define API__ROUTE_VIEW 0x10	/* a read answered from the read view on the
				 * HTTP thread (the backend only for
				 * ?consistent=true) */

/* The outcome of matching a method and a path. The strings are the raw
 * (still percent-encoded) path segments, owned; api__route_validate decodes
 * them. */
struct api__route {
	enum api__target target;
	enum api_op op; /* when target == API__TARGET_SUBMIT */
	unsigned flags;
	const char *
		allow; /* static "GET, HEAD, ..." of the path; set on 405 too */
	char *raw_flow; /* owned, or NULL */
	char *raw_run;	/* owned, or NULL */
	char *raw_step; /* owned, or NULL */
	char *raw_member; /* owned, or NULL */
	char *step;	/* owned, decoded (LOGS), set by api__route_validate */
	int attempt;	/* LOGS: ?attempt=, 0 = the last one */
};

/* Free the strings of `r` and zero it. Safe on a zeroed route. */
void api__route_close(struct api__route *r);

/* Match `method` and `path` (without the query string, not unescaped;
 * borrowed) against the route table. HEAD is routed as GET. Returns 0 and
 * fills `r`; or -1 with err 404 "not_found" (no such path) or 405
 * "method_not_allowed" (then r->allow holds the Allow header value). */
int api__route_match(const char *method, const char *path, struct api__route *r,
		     struct flowd_error *err);

/* Look up a query parameter: the raw value (percent-encoded; MHD has turned
 * '+' into ' ' already), "" for "?key" without '=', or NULL when absent. */
typedef const char *(*api__query_get_cb)(void *arg, const char *key);

/* Decode and validate the path segments and the query of a matched route,
 * and fill the request fields of `req` (flow, run_id, member_id, list_flow,
 * list_status, limit, cursor, consistent; op) and r->step, r->attempt.
 * `query` may be NULL (no query). Errors: 400 "invalid_value" field "flow"
 * (bad flow name), 400 "invalid_value" field "id" (a member id that is not a
 * decimal integer 1..2^63-1), 404 "not_found" (bad run id or step name),
 * 400 "invalid_query" field "<param>" (bad query value). Unknown parameters
 * are ignored. */
int api__route_validate(struct api__route *r, api__query_get_cb query,
			void *query_arg, const struct flowd_limits *lim,
			struct api_request *req, struct flowd_error *err);

/* Percent-decode `in[0..len)` into a new NUL-terminated string. Returns NULL
 * on a malformed escape, an encoded NUL byte, or OOM. Caller frees. */
char *api__percent_decode(const char *in, size_t len);

/* 1 when a Content-Type header value (may be NULL) is application/json,
 * case-insensitive, with optional parameters ("; charset=utf-8"). */
int api__content_type_is_json(const char *value);

/* The roles of a token. */
enum api__role {
	API__ROLE_NONE = 0, /* no token, malformed header or unknown token */
	API__ROLE_READER = 1,
	API__ROLE_ADMIN = 2,
};

/* The role of an Authorization header value (may be NULL) against the
 * NULL-terminated token lists (borrowed, may be NULL). Tokens are compared in
 * constant time: every configured token is compared, with no early exit on
 * the first differing byte. */
enum api__role api__auth_role(const char *authorization, char *const *admin,
			      char *const *reader);

/* Decide whether `role` may use a route with `flags`. `open` is 1 when no
 * token at all is configured (then everything is allowed). Returns 0, or -1
 * with err 401 "unauthorized" or 403 "forbidden". */
int api__authorize(unsigned flags, enum api__role role, int open,
		   struct flowd_error *err);

/* Check the body of POST /v1/flows/{flow}/runs. `body` (borrowed) is NULL
 * for an empty body. On success fills req->params (new reference, or NULL)
 * and req->idempotency_key (copied, or NULL). Errors: 400 "invalid_type"
 * (body not an object; field "parameters" / "idempotency_key" of the wrong
 * type), 400 "unknown_field" field "<key>", 400 "invalid_value" field
 * "idempotency_key" (empty or longer than max_idempotency_key_bytes). */
int api__run_create_body(const json_t *body, const struct flowd_limits *lim,
			 struct api_request *req, struct flowd_error *err);

/* Parse "a.b.c.d:port" (borrowed): a dotted-quad IPv4 literal and a port
 * 1..65535 written in decimal without sign or leading zero, so that each
 * address has one spelling (the rule daemon/config.c applies to peers).
 * Fills *out (family, address, port in network order) when out is not NULL.
 * Returns 0 or -1. */
int api__ipv4_address_parse(const char *s, struct sockaddr_in *out);

/* Check the body of POST /v1/cluster/members (borrowed; NULL for an empty
 * body): {"id": integer 1..2^63-1, "raft_address": "a.b.c.d:port",
 * "api_address": "a.b.c.d:port"}; null counts as absent. On success fills
 * req->member_id and req->member_raft / req->member_api (copied, as given);
 * on failure leaves them untouched. Errors (400): "invalid_type" (body not
 * an object, field ""; a field of the wrong type), "unknown_field" field
 * "<key>", "missing_field" field "id" / "raft_address" / "api_address",
 * "invalid_value" (id below 1, address not api__ipv4_address_parse's form).
 * Unknown keys are reported first, then the fields in the order above. */
int api__member_add_body(const json_t *body, struct api_request *req,
			 struct flowd_error *err);

/* Check the body of POST /v1/cluster/leader/transfer (borrowed; NULL for an
 * empty body): absent, {} or {"id": integer 1..2^63-1} (null = absent).
 * Sets req->member_id (0 when no id: raft picks the target). Errors (400):
 * "invalid_type" (body not an object, field ""; id not an integer, field
 * "id"), "invalid_value" field "id" (below 1), "unknown_field" field
 * "<key>". */
int api__leader_transfer_body(const json_t *body, struct api_request *req,
			      struct flowd_error *err);

/* Check the body of POST /internal/v1/commands: `raw[0..len)` (borrowed)
 * must be a non-empty JSON object. Only checked: the backend proposes the
 * raw bytes (req->raw_body), so nothing parsed is kept. Errors: 400
 * "missing_field" field "body" (empty), 400 "invalid_json" (not JSON, or
 * JSON that is not an object; duplicate keys rejected). */
int api__command_body(const char *raw, size_t len, struct flowd_error *err);

/* Free every owned field of `req` (request fields, the request as it arrived:
 * method, target, raw_body, authorization, content_type; and the response)
 * and reset them to NULL (raw_body_len and forwarded to 0); op, status and
 * priv are kept. */
void api__request_clear(struct api_request *req);

/* POST /v1/events body: {"name", "id"?, "payload"?}. name is an event name
 * (spec_event_name_valid), id 1-128 of [A-Za-z0-9_.:-], payload an object
 * of at most max_event_bytes. Fills event_name, event_id, payload. */
int api__event_body(const json_t *body, const struct flowd_limits *lim,
		    struct api_request *req, struct flowd_error *err);

/* POST /v1/flows/{flow}/backfill body: {"from", "to" (RFC 3339, from <=
 * to), "schedule"? (an index)}. Fills bf_from, bf_to, bf_schedule. */
int api__backfill_body(const json_t *body, struct api_request *req,
		       struct flowd_error *err);

/* GET /v1/cron/preview?expr=&tz=&from=&count=&dst_missing=&dst_repeated=:
 * the next `count` (default 10, at most 100) fire times of expr after
 * `from` (RFC 3339, default now_s). Returns 0 with *out, or -1 with a 400
 * naming the query parameter. */
int api__cron_preview(api__query_get_cb query, void *arg, int64_t now_s,
		      json_t **out, struct flowd_error *err);

#endif
