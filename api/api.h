/* api.h - the REST API v1 server: libmicrohttpd threads that route, authorize,
 * read and check requests by a route table the daemon hands in, answer every
 * error in one JSON shape, answer reads on the HTTP threads and hand writes
 * to a backend (the daemon) that answers them later from the loop thread.
 * Never touches Raft internals or SQL text.
 *
 * Threads: MHD runs an internal thread pool. A request is routed and checked
 * there by its row (struct api_route); a read is then answered there by the
 * row's read handler; anything else goes to backend->submit() on that HTTP
 * thread with the connection suspended; the backend later (from any thread,
 * normally the loop) fills the response with api_request_reply*() and calls
 * api_request_finish(), which resumes the connection. api/README.md has
 * "How to add an endpoint". */
#ifndef FLOWD_API_H
#define FLOWD_API_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "core/limits.h"

struct api_request;
struct storage_reader;
struct view;
struct view_store;

/* ------------------------------------------------------------------------
 * The route table
 */

/* Who may call a route: the least role a bearer token must have (401
 * without a token, 403 with one of a lower role). With no token
 * configured at all every user route is allowed. API_ROLE_NODE is apart:
 * only a request signed with the cluster secret may call such a route, and
 * every user token is refused there with 403 (docs/security.md). */
enum api_role {
	API_ROLE_PUBLIC = 0,   /* anyone, no token needed */
	API_ROLE_READER = 1,   /* reads */
	API_ROLE_OPERATOR = 2, /* start, cancel, pause, events, backfill */
	API_ROLE_ADMIN = 3,    /* deploy, undeploy, membership */
	API_ROLE_PRODUCTION = 4, /* admin, and deploy to or undeploy from a
	                          * prod branch (docs/lifecycle.md) */
	API_ROLE_NODE = 5,     /* another node of the cluster */
};

/* What a route does with a request body. */
enum api_body {
	API_BODY_NONE = 0, /* any body is read and discarded */
	API_BODY_JSON,     /* required: Content-Type application/json (415),
	                    * JSON (400 invalid_json), then the row's `fields`
	                    * or `parse`; kept in req->body */
	API_BODY_JSON_OPT, /* the same, but an empty body (any Content-Type)
	                    * is allowed: req->body NULL */
	API_BODY_RAW,      /* required: application/json, a non-empty JSON
	                    * object (400 missing_field "body" / invalid_json);
	                    * only checked: the backend uses req->raw_body */
};

/* Row flags. */
#define API_ROUTE_VIEW 0x1       /* the read handler gets the newest
                                  * published read view (core/view.h) */
#define API_ROUTE_CONSISTENT 0x2 /* ?consistent=true sends the read to the
                                  * backend, which answers it with the read
                                  * handler once the view holds every entry
                                  * committed before the request */

/* JSON types of a body field. */
enum api_json {
	API_JSON_ANY = 0, /* any value: the check decides */
	API_JSON_OBJECT,
	API_JSON_ARRAY,
	API_JSON_STRING,
	API_JSON_INTEGER,
	API_JSON_NUMBER,
	API_JSON_BOOLEAN,
};

/* Field flags. */
#define API_FIELD_REQUIRED 0x1      /* absent (or null) is 400 missing_field */
#define API_FIELD_NULL_IS_VALUE 0x2 /* null is a value handed to the type
                                     * check and `check`, not "absent" */

/* Check one body field's value (borrowed; never NULL, and not null unless
 * API_FIELD_NULL_IS_VALUE), of the field's type already. `body` is the
 * whole object (for checks against another field, which is checked
 * already when it comes earlier in the schema). Returns 0, or -1 with err
 * (400 invalid_value naming `field`, or what else fits: 413 too_large). */
typedef int (*api_check_fn)(const char *field, const json_t *value,
			    const json_t *body, const struct flowd_limits *lim,
			    struct flowd_error *err);

/* One field of an object body. A schema is an array of them ended by a
 * field whose name is NULL. The checker answers the first failure in this
 * order: the body is not an object (400 invalid_type, field ""); a key no
 * field names (400 unknown_field, in the body's key order); then field by
 * field in the schema's order: missing (400 missing_field, message
 * `missing` or "required"), of another type (400 invalid_type, "must be a
 * string" ...), `check`. null counts as absent unless
 * API_FIELD_NULL_IS_VALUE. */
struct api_field {
	const char *name;
	enum api_json type;  /* API_JSON_ANY (0) when left out */
	unsigned flags;      /* API_FIELD_* */
	api_check_fn check;  /* may be NULL */
	const char *missing; /* the 400 missing_field message (NULL:
	                      * "required") */
};

/* A read handler (a row's `read`, or req->render): runs on an HTTP thread
 * and fills the answer of `req` with api_request_reply_*() (never
 * api_request_finish). `arg` is api_backend.read_arg. `v` is the newest
 * published read view, held by the api for the call (NULL for a row
 * without API_ROUTE_VIEW); nothing of it may be kept. req->status holds the
 * success status to answer with: 200, or what a submit handler set before
 * the render. History the view no longer holds is asked for with the pg_*
 * fields of the request; the api reads it after the view is let go. */
typedef void (*api_read_fn)(void *arg, const struct view *v,
			    struct api_request *req);

/* A row's modify-index probe (reads on the view): the index of the last
 * change of what the read answers (a run, the run list, a flow ...), from
 * `v`, cheaply and without rendering. It makes `X-Flowd-Index` and lets a
 * client block on `?index=N&wait=D` until that index passes N. Runs on an
 * HTTP thread or the api's watcher thread. */
typedef uint64_t (*api_probe_fn)(const struct view *v,
				 const struct api_request *req);

/* A submit handler (a row's `submit`): called by the backend on its own
 * thread (daemon/service.c: the loop, after its admission checks) with the
 * backend's arg. Must lead to exactly one api_request_finish(). */
typedef void (*api_submit_fn)(void *arg, struct api_request *req);

/* A row's query hook: runs on an HTTP thread with the headers, before the
 * body is read. Checks the route's query (api_request_query) and may fill
 * the request's shared query fields. Returns 0, or -1 with err (400
 * invalid_query naming the parameter). */
typedef int (*api_query_fn)(struct api_request *req,
			    const struct flowd_limits *lim,
			    struct flowd_error *err);

/* A row's whole-body parse hook, instead of `fields`: checks *body (never
 * NULL) and may replace it (the old reference is then released by the
 * hook). Returns 0, or -1 with err. */
typedef int (*api_parse_fn)(json_t **body, const struct flowd_limits *lim,
			    struct flowd_error *err);

/* One endpoint: a method on a path. The table is an array of rows ended by
 * a row whose method is NULL (static, borrowed by the api for the server's
 * life). Rows on the same path make its Allow header (405), in table order
 * ("GET" allows "GET, HEAD"). The first row whose path matches names the
 * path; templates must not overlap. */
struct api_route {
	const char *method;  /* "GET" (also HEAD), "PUT", "POST", "DELETE" */
	const char *path;    /* a template: literal segments and the
	                      * placeholders {flow} (400 invalid_value field
	                      * "flow"), {id} (a run id: 404), {step} (404),
	                      * {member} (a decimal 1..2^63-1: 400
	                      * invalid_value field "id") */
	enum api_role role;
	enum api_body body;
	unsigned flags;                /* API_ROUTE_* */
	const struct api_field *fields;/* the object body's schema, or NULL */
	api_parse_fn parse;            /* or a whole-body hook, or NULL */
	api_query_fn query;            /* may be NULL (no query) */
	api_read_fn read;              /* a read: answered on the HTTP thread */
	api_probe_fn probe;            /* reads on the view: its modify index
	                                * (X-Flowd-Index, ?index=&wait=), or
	                                * NULL */
	api_submit_fn submit;          /* or a write: handed to the backend */
	const char *name;              /* for logs: "run_create" */
};

/* ------------------------------------------------------------------------
 * Requests
 */

/* One request, owned by the api module. Fields are valid until
 * api_request_finish(). Every pointer field is freed with the request. */
struct api_request {
	const struct api_route *route; /* the row matched (borrowed) */

	/* Path parameters, decoded and checked by placeholder; NULL (0) when
	 * the path has none. */
	char *flow;            /* {flow}; under {project} and {branch}, the
	                        * flow's key (spec_flow_key) */
	char *project;         /* {project}, or NULL */
	char *branch;          /* {branch}, or NULL */
	char *run_id;          /* {id}; a submit handler may replace it
	                        * (malloc'd) with the run its answer names */
	char *step;            /* {step} */
	uint64_t member_id;    /* {member} */

	/* The body, checked by the row's schema (or made by its parse hook);
	 * NULL when empty or the row takes none. Read it with
	 * api_request_field(). */
	json_t *body;

	/* The run-list query (api_query_run_list). */
	char *list_flow;       /* ?flow=, may be NULL */
	char *list_status;     /* ?status=, may be NULL (validated) */
	char *list_project;    /* ?project=, may be NULL (validated) */
	char *list_branch;     /* ?branch=, may be NULL (validated) */
	char **list_tags;      /* ?tag= (repeatable): runs carrying all */
	size_t n_list_tags;
	unsigned limit;        /* ?limit=: 1..max_runs_page, default 50 */
	uint64_t cursor;       /* ?cursor= (a next_cursor), 0 = none */
	int consistent;        /* ?consistent=true (reads) */
	uint64_t wait_index;   /* ?index=N (rows with a probe) */
	unsigned wait_ms;      /* ?wait=D with ?index: hold the read until
	                        * the probe passes wait_index, at most this
	                        * long (0: no ?index, answer at once) */

	/* The request as it arrived, so that a follower can forward it to the
	 * leader unchanged (all NUL-terminated; NULL when absent). Set only on
	 * requests handed to the backend. */
	char *method;          /* "GET", "PUT", "POST", "DELETE" */
	char *target;          /* path and query as received, e.g. "/v1/runs?limit=5" */
	char *raw_body;        /* the body bytes ("" when empty) */
	size_t raw_body_len;
	char *content_type;    /* the Content-Type header value */
	int forwarded;         /* the request carried "X-Flowd-Forwarded: 1" */

	/* Who asked: the role the request was authorized with, the token's
	 * name ("-" with no token configured) and the client's address; a
	 * node forwarding a client's write names that client
	 * (X-Flowd-On-Behalf). node_id is the signing node's id, 0 for a
	 * user. Set for every request that reaches a handler. */
	enum api_role role;
	char who[64];
	char client_address[48];
	uint64_t node_id;

	/* History the read view no longer holds, read from PostgreSQL by the
	 * api on the HTTP thread after a read handler (or the backend)
	 * answered:
	 * - pg_run_id (malloc'd by the handler, freed by the api): answer
	 *   `status` (200 or 201) with that run as storage_reader_run() reads
	 *   it (404 if PostgreSQL does not have it, 503 if unreachable);
	 *   resp_body is ignored.
	 * - pg_list_limit > 0: resp_body is a page {"runs": [...],
	 *   "next_cursor": ...} built from memory; append up to pg_list_limit
	 *   runs with a sequence number below pg_list_before (the same
	 *   list_* filters) from storage_reader_runs_filter(), and set
	 *   next_cursor to the last run's sequence number when the page is
	 *   full (`limit` runs), else null.
	 * - pg_flow_versions: resp_body is {"versions": [...]} of `flow`;
	 *   fill each "spec": null from storage_reader_flow_versions(). */
	char *pg_run_id;
	uint64_t pg_list_before;
	unsigned pg_list_limit;
	int pg_flow_versions;

	/* Set by the backend before it finishes a request whose answer is
	 * rendered from the read view (a write's answer, a consistent read):
	 * the api then calls it on the HTTP thread with the newest view, which
	 * the backend made sure holds the request's entry. */
	api_read_fn render;

	/* The response. */
	int status;
	char *resp_body;       /* owned, JSON text (or resp_type's) */
	const char *resp_type; /* static Content-Type of resp_body on success
	                        * (2xx); NULL: application/json */
	const struct api_stream_ops *stream_ops; /* a streamed answer
	                        * (api_request_reply_stream), or NULL */
	void *stream_state;    /* owned by the request until the stream
	                        * starts, then by the stream */
	unsigned retry_after;  /* seconds, 0 = no Retry-After header */
	void *backend_data;    /* for the backend's use */

	/* The api module's own state. */
	const char *(*query_get)(void *arg, const char *key);
	/* every value of a repeated key, in order: up to `max` into out,
	 * returns how many there are (NULL: only query_get's one) */
	size_t (*query_all)(void *arg, const char *key, const char **out,
			    size_t max);
	void *query_arg;
	void *priv;
};

/* The body field `name` of `req` (borrowed, valid with the request), NULL
 * when there is no body or the field is absent or null. */
const json_t *api_request_field(const struct api_request *req,
				const char *name);

/* The query parameter `key`, percent-decoded, in *out (malloc'd, the caller
 * frees it), NULL when absent or empty. Returns 0, or -1 with 400
 * invalid_query naming `key` (a malformed escape). HTTP threads only: read
 * handlers and query hooks. */
int api_request_query(const struct api_request *req, const char *key,
		      char **out, struct flowd_error *err);

/* The run-list query hook (GET /v1/runs): ?flow= (a flow name), ?status=
 * (queued, running, succeeded, failed, cancelled), ?limit= (1 ..
 * max_runs_page), ?cursor= (a next_cursor: digits only, 1..2^64-1) into
 * list_flow, list_status, limit, cursor; 400 invalid_query naming the
 * first bad one. */
/* GET .../branches/{branch}/flows/{flow}/runs: the run-list query, on
 * that flow. */
int api_query_flow_runs(struct api_request *req, const struct flowd_limits *lim,
			struct flowd_error *err);
int api_query_run_list(struct api_request *req, const struct flowd_limits *lim,
		       struct flowd_error *err);

/* An unsigned decimal in [min, max] (borrowed): digits only, no sign or
 * space. Returns 0 with *out, or -1. */
int api_uint_parse(const char *s, unsigned long min, unsigned long max,
		   unsigned long *out);

/* 1 when `s` is 1..max of [A-Za-z0-9_.:-] (run ids, event ids). */
int api_id_valid(const char *s, size_t max);

/* The OpenAPI 3.1 document of the REST API (api/openapi.json, built in):
 * static, NUL-terminated, *len bytes. */
const char *api_openapi_json(size_t *len);

/* The web dashboard's page and assets (the files under web/, built in by api/web.c): read
 * handlers for GET /, GET /ui/app.js and GET /ui/app.css. */
void api_web_index(void *arg, const struct view *v, struct api_request *req);
void api_web_js(void *arg, const struct view *v, struct api_request *req);
void api_web_css(void *arg, const struct view *v, struct api_request *req);

/* A streamed answer: 200 text/event-stream whose body (chunked, of
 * unknown length) is what `pull` gives, called on an HTTP thread whenever
 * the client can take more. docs/api.md, "Streams". */
struct api_stream_ops {
	/* Append the next bytes to *buf (len used, cap allocated; realloc
	 * it). Return 1 when more may come, 0 when nothing is there now
	 * (the connection then waits, suspended, until a kick finds ready()
	 * true or a heartbeat is due), -1 when the stream ends after what
	 * was appended. */
	int (*pull)(void *state, char **buf, size_t *len, size_t *cap);
	/* Whether pull would give something now; called on the api's own
	 * thread while the stream waits (never at the same time as pull).
	 * Cheap, no blocking. */
	bool (*ready)(void *state);
	/* Free `state` (the stream ended, the client went away, or it never
	 * started). */
	void (*free)(void *state);
};

/* Answer `req` with a stream of `state` (owned by the api from now on:
 * ops->free frees it). When the api cannot start it (api.max_streams
 * streams are open) it answers 503 instead. */
void api_request_reply_stream(struct api_request *req,
			      const struct api_stream_ops *ops, void *state);

/* A request header's value (HTTP threads, during a read handler), or
 * NULL. */
const char *api_request_header(const struct api_request *req,
			       const char *name);

/* Fill the response with `status` and `body` (stolen: decref'd by the api). */
void api_request_reply_json(struct api_request *req, int status, json_t *body);

/* Fill the response with `status` and a JSON text (malloc'd; stolen). NULL
 * (out of memory) answers 500. */
void api_request_reply_take(struct api_request *req, int status, char *text);

/* The HTTP status of a kind of failure: the one place flowd's domain errors
 * (core/error.h) become HTTP. INVALID 400, UNAUTHORIZED 401, FORBIDDEN 403,
 * NOT_FOUND 404, METHOD 405, CONFLICT 409, TOO_LARGE 413, MEDIA_TYPE 415,
 * UNAVAILABLE 503, TIMEOUT 504; INTERNAL (and FLOWD_OK, which is no failure
 * to answer with) 500. */
int api_http_status(enum flowd_errc errc);

/* Fill the response with the error body
 * {"error":{"code","message","field"}} (field omitted when empty) and the
 * status api_http_status(err->errc); 503 gets Retry-After: 1 unless
 * retry_after was set. */
void api_request_reply_error(struct api_request *req,
			     const struct flowd_error *err);

/* Fill the response with `status` and a JSON text (copied). */
void api_request_reply_text(struct api_request *req, int status,
			    const char *json_text, size_t len);

/* Hand the response back: the connection resumes and the request is freed
 * later by the api. Call exactly once per submitted request, from any
 * thread; never touch `req` afterwards. */
void api_request_finish(struct api_request *req);

/* ------------------------------------------------------------------------
 * The server
 */

struct api_backend {
	void *arg;
	/* Called on an HTTP thread for each write (a row with `submit`) and
	 * each consistent read. Must lead to exactly one
	 * api_request_finish(). */
	void (*submit)(void *arg, struct api_request *req);
	void *read_arg;       /* handed to every read handler */
};

struct api_config {
	const char *address;          /* "a.b.c.d:port", copied */
	const struct api_route *routes; /* borrowed (static): the table */
	const struct api_token *tokens; /* n_tokens entries, copied; none:
	                               * every user route is open */
	size_t n_tokens;
	const char *cluster_secret;   /* copied; NULL: no node may call */
	int node_only;                /* node.internal_address: only signed
	                               * node requests are served */
	const char *tls_cert_file;    /* HTTPS with this certificate and key
	                               * (PEM), or NULL: plain HTTP */
	const char *tls_key_file;
	const char *tls_client_ca_file; /* client certificates are asked for
	                               * and must chain to it, or NULL */
	unsigned per_address_limit;   /* connections from one IP (0: none) */
	unsigned read_timeout_s;      /* a request's head and body must
	                               * arrive within this (0: no limit) */
	const struct flowd_limits *limits; /* copied */
	unsigned threads;             /* MHD thread pool size (default 2) */
	unsigned connection_limit;    /* default 1024 */
	unsigned connection_timeout_s;/* idle connection timeout, default 60 */
	int thread_nice;              /* the HTTP threads are made this much
	                               * nicer than the loop (Linux: per thread) */
	struct metrics *metrics;      /* borrowed, may be NULL: the server
	                               * counts requests by route and status
	                               * and their latency in it
	                               * (flowd_http_*) */
	unsigned max_streams;         /* streamed answers open at once
	                               * (default 4096) */
	unsigned heartbeat_ms;        /* a stream with nothing to send sends
	                               * a comment this often (default 15000) */
};

struct api_server;
struct api_token;
struct metrics;

/* Start listening. The route table is checked first (a row with neither or
 * both of read and submit, an unknown placeholder: -1 naming the row).
 * `reader` (borrowed, may be NULL) serves history; `views` (borrowed) is
 * the read view the daemon publishes, which read handlers are given.
 * Returns 0 or -1 with errmsg. */
int api_server_start(const struct api_config *cfg,
		     const struct api_backend *backend,
		     struct storage_reader *reader, struct view_store *views,
		     struct api_server **out, char *errmsg, size_t errlen);

/* Replace the certificate and key every HTTPS listener presents to new
 * handshakes (SIGHUP; loop thread). Returns 0, or -1 with errmsg: the old
 * ones stay in use. */
int api_server_tls_reload(const char *cert_file, const char *key_file,
			  char *errmsg, size_t errlen);

/* Free the certificates loaded for HTTPS, once every server stopped. */
void api_server_tls_unload(void);

/* Stop accepting connections (graceful shutdown, step 1). */
void api_server_quiesce(struct api_server *s);

/* Something new for the streams (any thread, cheap): the waiting ones
 * whose ready() says so are resumed on the api's thread. */
void api_server_kick(struct api_server *s);

/* Number of requests submitted to the backend and not yet finished. */
unsigned api_server_pending(struct api_server *s);

/* Stop the daemon and free. Every submitted request must be finished. */
void api_server_stop(struct api_server *s);

#endif
