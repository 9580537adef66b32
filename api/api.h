/* api.h - the REST API v1 server: libmicrohttpd threads that route, authorize,
 * read and parse requests, answer every error in one JSON shape, and hand
 * each valid request to a backend (the daemon) that answers it later from the
 * loop thread. Never touches Raft internals or SQL text.
 *
 * Threads: MHD runs an internal thread pool. A request is routed and checked
 * there; then backend->submit() is called on that HTTP thread and the
 * connection is suspended; the backend later (from any thread, normally the
 * loop) fills the response with api_request_reply*() and calls
 * api_request_finish(), which resumes the connection. */
#ifndef FLOWD_API_H
#define FLOWD_API_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "core/limits.h"

struct storage_reader;

enum api_op {
	API_OP_FLOW_PUT,       /* PUT /v1/flows/{flow}: flow, body (spec doc), spec parsed */
	API_OP_FLOW_LIST,      /* GET /v1/flows */
	API_OP_FLOW_GET,       /* GET /v1/flows/{flow} */
	API_OP_FLOW_VERSIONS,  /* GET /v1/flows/{flow}/versions */
	API_OP_FLOW_DELETE,    /* DELETE /v1/flows/{flow} */
	API_OP_RUN_CREATE,     /* POST /v1/flows/{flow}/runs: flow, params, idempotency_key */
	API_OP_RUN_LIST,       /* GET /v1/runs: list_flow, list_status, limit, cursor */
	API_OP_RUN_GET,        /* GET /v1/runs/{id}: run_id */
	API_OP_RUN_CANCEL,     /* POST /v1/runs/{id}/cancel: run_id */
	API_OP_READYZ,         /* GET /readyz */
	API_OP_CLUSTER,        /* GET /v1/cluster */
	API_OP_INTERNAL_COMMAND, /* POST /internal/v1/commands: raw_body is a
	                          * state-machine command to propose (admin) */
	API_OP_MEMBER_ADD,     /* POST /v1/cluster/members {"id", "raft_address",
	                        * "api_address"}: member_id, member_raft, member_api */
	API_OP_MEMBER_REMOVE,  /* DELETE /v1/cluster/members/{id}: member_id */
	API_OP_LEADER_TRANSFER,/* POST /v1/cluster/leader/transfer {"id"?}:
	                        * member_id (0 = let raft pick) */
	API_OP_EVENT_POST,     /* POST /v1/events {"name","id"?,"payload"?}:
	                        * event_name, event_id (may be NULL), payload */
	API_OP_SCHEDULE_GET,   /* GET /v1/flows/{flow}/schedule */
	API_OP_FLOW_PAUSE,     /* POST /v1/flows/{flow}/pause */
	API_OP_FLOW_UNPAUSE,   /* POST /v1/flows/{flow}/unpause */
	API_OP_BACKFILL,       /* POST /v1/flows/{flow}/backfill {"from","to",
	                        * "schedule"?}: bf_from, bf_to, bf_schedule */
};

/* One request, owned by the api module. Fields are valid until
 * api_request_finish(). */
struct api_request {
	enum api_op op;
	char *flow;            /* owned; FLOW_*, RUN_CREATE */
	char *run_id;          /* owned; RUN_GET, RUN_CANCEL */
	json_t *body;          /* owned; FLOW_PUT: the spec document */
	struct flow_spec *spec;/* owned; FLOW_PUT: parsed and validated by the api */
	json_t *params;        /* owned; RUN_CREATE: the "parameters" object (may be NULL) */
	char *idempotency_key; /* owned; RUN_CREATE, may be NULL */
	char *list_flow;       /* owned; RUN_LIST filter, may be NULL */
	char *list_status;     /* owned; RUN_LIST filter, may be NULL (validated) */
	unsigned limit;        /* RUN_LIST: 1..max_runs_page, default 50 */
	uint64_t cursor;       /* RUN_LIST: ?cursor= (a next_cursor), 0 = none */
	int consistent;        /* ?consistent=true */
	uint64_t member_id;    /* MEMBER_*, LEADER_TRANSFER */
	char *member_raft;     /* owned; MEMBER_ADD: IPv4 "a.b.c.d:port" */
	char *member_api;      /* owned; MEMBER_ADD: IPv4 "a.b.c.d:port" */
	char *event_name;      /* owned; EVENT_POST */
	char *event_id;        /* owned; EVENT_POST, may be NULL */
	json_t *payload;       /* owned; EVENT_POST, may be NULL */
	int64_t bf_from, bf_to;/* BACKFILL: seconds since the epoch */
	int bf_schedule;       /* BACKFILL: a schedule index, -1 = all */
	json_t *bf_items;      /* owned; BACKFILL: set by the backend */

	/* The request as it arrived, so that a follower can forward it to the
	 * leader unchanged (all owned, NUL-terminated; NULL when absent). */
	char *method;          /* "GET", "PUT", "POST", "DELETE" */
	char *target;          /* path and query as received, e.g. "/v1/runs?limit=5" */
	char *raw_body;        /* the body bytes ("" when empty) */
	size_t raw_body_len;
	char *authorization;   /* the Authorization header value */
	char *content_type;    /* the Content-Type header value */
	int forwarded;         /* the request carried "X-Flowd-Forwarded: 1" */

	/* History the backend no longer holds in memory is read from
	 * PostgreSQL by the api, on the HTTP thread, after the backend
	 * finished the request:
	 * - pg_run_id (malloc'd by the backend, freed by the api): answer
	 *   `status` (200 or 201) with that run as storage_reader_run() reads
	 *   it (404 if PostgreSQL does not have it, 503 if unreachable);
	 *   resp_body is ignored.
	 * - pg_list_limit > 0 (RUN_LIST): resp_body is a page
	 *   {"runs": [...], "next_cursor": ...} built from memory; append up
	 *   to pg_list_limit runs with a sequence number below pg_list_before
	 *   (same list_flow / list_status filters) from storage_reader_runs(),
	 *   and set next_cursor to the last run's sequence number when the
	 *   page is full (`limit` runs), else null. */
	char *pg_run_id;
	uint64_t pg_list_before;
	unsigned pg_list_limit;

	/* Answers from the read view (core/view.h). Reads are answered by the
	 * api from the newest published view without the backend, unless
	 * ?consistent=true: then the backend makes sure the view holds every
	 * entry committed before the request (a barrier on the leader) and
	 * finishes it with from_view set. A write the backend finishes with
	 * from_view set (after the view holding its entry was published) is
	 * answered with `status` and the object the op names: RUN_CREATE,
	 * RUN_CANCEL: the run `run_id` (the backend sets it); FLOW_PUT:
	 * {"flow", "created"}; FLOW_DELETE: the flow without its spec. */
	int from_view;
	int created;           /* FLOW_PUT: a new version was made */

	/* The response, filled by the backend. */
	int status;
	char *resp_body;       /* owned, JSON text */
	unsigned retry_after;  /* seconds, 0 = no Retry-After header */
	void *backend_data;    /* for the backend's use */
	void *priv;            /* the api module's own state */
};

/* Fill the response with `status` and `body` (stolen: decref'd by the api). */
void api_request_reply_json(struct api_request *req, int status, json_t *body);

/* Fill the response with the error body
 * {"error":{"code","message","field"}} (field omitted when empty); 503 gets
 * Retry-After: 1 unless retry_after was set. */
void api_request_reply_error(struct api_request *req,
			     const struct flowd_error *err);

/* Fill the response with `status` and a JSON text (copied). */
void api_request_reply_text(struct api_request *req, int status,
			    const char *json_text, size_t len);

/* Hand the response back: the connection resumes and the request is freed
 * later by the api. Call exactly once per submitted request, from any
 * thread; never touch `req` afterwards. */
void api_request_finish(struct api_request *req);

struct api_backend {
	void *arg;
	/* Called on an HTTP thread for each valid request. Must lead to exactly
	 * one api_request_finish(). */
	void (*submit)(void *arg, struct api_request *req);
};

struct api_config {
	const char *address;          /* "a.b.c.d:port", copied */
	char **admin_tokens;          /* NULL-terminated, copied; may be empty */
	char **reader_tokens;         /* NULL-terminated, copied; may be empty */
	const struct flowd_limits *limits; /* copied */
	unsigned threads;             /* MHD thread pool size (default 2) */
	unsigned connection_limit;    /* default 1024 */
	unsigned connection_timeout_s;/* idle connection timeout, default 60 */
	int thread_nice;              /* the HTTP threads are made this much
	                               * nicer than the loop (Linux: per thread) */
};

struct api_server;
struct view_store;

/* Start listening. `reader` (borrowed, may be NULL) serves task logs and
 * history; `views` (borrowed) is the read view the daemon publishes, from
 * which reads are answered on the HTTP threads. Returns 0 or -1 with
 * errmsg. */
int api_server_start(const struct api_config *cfg,
		     const struct api_backend *backend,
		     struct storage_reader *reader, struct view_store *views,
		     struct api_server **out, char *errmsg, size_t errlen);

/* Stop accepting connections (graceful shutdown, step 1). */
void api_server_quiesce(struct api_server *s);

/* Number of requests submitted to the backend and not yet finished. */
unsigned api_server_pending(struct api_server *s);

/* Stop the daemon and free. Every submitted request must be finished. */
void api_server_stop(struct api_server *s);

#endif
