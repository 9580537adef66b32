/* route.h - the api module's pure machinery: matching a method and path
 * against the daemon's route table, path and query validation by the row,
 * authorization by role, and the body schema checker. No sockets, no MHD:
 * server.c feeds them strings, tests/unit/test_api_route.c tests them. */
#ifndef FLOWD_API_ROUTE_H
#define FLOWD_API_ROUTE_H

#include <jansson.h>
#include <netinet/in.h>
#include <stddef.h>

#include "api/api.h"
#include "core/error.h"
#include "core/limits.h"

/* The outcome of matching a method and a path. The strings are the raw
 * (still percent-encoded) path segments, owned; api__route_validate decodes
 * them. */
struct api__route {
	const struct api_route *row; /* the row matched, NULL on 404 / 405 */
	char allow[64];	  /* the path's Allow header value; set on 405 too */
	char *raw_flow;	  /* owned, or NULL */
	char *raw_run;	  /* owned, or NULL */
	char *raw_step;	  /* owned, or NULL */
	char *raw_member; /* owned, or NULL */
	char *raw_project; /* owned, or NULL */
	char *raw_branch; /* owned, or NULL */
};

/* Blocking reads: ?wait= defaults to 60 s and may be 10 minutes at most. */
#define API_WAIT_DEFAULT_MS 60000
#define API_WAIT_MAX_MS 600000

/* Check a route table (borrowed) once, at start: every row has a method,
 * a path template of at most six known segments, exactly one of read and
 * submit, at most one of fields and parse (and a body kind that takes
 * them), API_ROUTE_CONSISTENT only with a read on the view, and a name.
 * Returns 0, or -1 with errmsg naming the row. */
int api__routes_check(const struct api_route *table, char *errmsg,
		      size_t errlen);

/* Free the strings of `r` and zero it. Safe on a zeroed route. */
void api__route_close(struct api__route *r);

/* Match `method` and `path` (without the query string, not unescaped;
 * borrowed) against `table` (borrowed). HEAD is routed as GET. Returns 0
 * and fills `r`; or -1 with err 404 "not_found" (no such path) or 405
 * "method_not_allowed" (then r->allow holds the Allow header value). */
int api__route_match(const struct api_route *table, const char *method,
		     const char *path, struct api__route *r,
		     struct flowd_error *err);

/* Look up a query parameter: the raw value (percent-encoded; MHD has turned
 * '+' into ' ' already), "" for "?key" without '=', or NULL when absent. */
typedef const char *(*api__query_get_cb)(void *arg, const char *key);

/* Decode and validate the path segments and the query of a matched route:
 * sets req->route, the path parameters (flow, run_id, step, member_id),
 * consistent (reads only), and runs the row's query hook. `query` may be
 * NULL (no query); it stays in req for api_request_query. Errors: 400
 * "invalid_value" field "flow" (bad flow name), 400 "invalid_value" field
 * "id" (a member id that is not a decimal integer 1..2^63-1), 404
 * "not_found" (bad run id or step name), 400 "invalid_query" field
 * "<param>" (bad query value). Unknown parameters are ignored. */
int api__route_validate(struct api__route *r, api__query_get_cb query,
			void *query_arg, const struct flowd_limits *lim,
			struct api_request *req, struct flowd_error *err);

/* Percent-decode `in[0..len)` into a new NUL-terminated string. Returns NULL
 * on a malformed escape, an encoded NUL byte, or OOM. Caller frees. */
char *api__percent_decode(const char *in, size_t len);

/* The value of a hex digit (either case), or -1. */
int api__hex_value(char c);

/* 1 when a Content-Type header value (may be NULL) is application/json,
 * case-insensitive, with optional parameters ("; charset=utf-8"). */
int api__content_type_is_json(const char *value);

/* Check `body` (borrowed; NULL for an empty body, allowed only when the row
 * is API_BODY_JSON_OPT) against row->fields, in the order api.h gives
 * (struct api_field). A row without fields accepts any body. Returns 0, or
 * -1 with err. */
int api__body_check(const struct api_route *row, const json_t *body,
		    const struct flowd_limits *lim, struct flowd_error *err);

/* Parse "a.b.c.d:port" (borrowed): a dotted-quad IPv4 literal and a port
 * 1..65535 written in decimal without sign or leading zero, so that each
 * address has one spelling (the rule daemon/config.c applies to peers).
 * Fills *out (family, address, port in network order) when out is not NULL.
 * Returns 0 or -1. */
int api__ipv4_address_parse(const char *s, struct sockaddr_in *out);

/* Check an API_BODY_RAW body: `raw[0..len)` (borrowed) must be a non-empty
 * JSON object. Only checked: the backend uses the raw bytes
 * (req->raw_body), so nothing parsed is kept. Errors: 400 "missing_field"
 * field "body" (empty), 400 "invalid_json" (not JSON, or JSON that is not
 * an object; duplicate keys rejected). */
int api__command_body(const char *raw, size_t len, struct flowd_error *err);

/* Free every owned field of `req` (path parameters, body, list query, the
 * request as it arrived: method, target, raw_body, authorization,
 * content_type; history and the response) and reset them to NULL
 * (raw_body_len and forwarded to 0); route, status and priv are kept. */
void api__request_clear(struct api_request *req);

#endif
