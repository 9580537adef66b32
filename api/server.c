/* server.c - the REST API v1 server: libmicrohttpd daemon, request reading,
 * auth, suspend/resume around the backend, and every response. */

/*
 * DESIGN
 *
 * Threads. MHD runs a pool of `threads` worker threads, each with its own
 * epoll set; a connection stays on one worker for its whole life. Every
 * callback in this file except api_request_finish() and the reply helpers
 * runs on the worker that owns the connection. The backend answers from any
 * thread (normally the daemon's loop) through api_request_finish().
 *
 * Happy path of one request (struct request, one per HTTP request, stored in
 * MHD's *con_cls):
 *   0. URI log callback (request line parsed, headers not yet): allocate,
 *      and keep the raw request target ("/path?query" exactly as sent,
 *      before MHD splits and unescapes it) as req.target; the pointer
 *      returned becomes *con_cls.
 *   1. first call (headers only): match the route table the daemon handed
 *      in (404/405), authorize by the row's role (401/403), validate the
 *      path and query by the row (400/404), reject an announced
 *      Content-Length over max_body_bytes (413) or a wrong Content-Type on a
 *      row whose body is required (415). Any of these is answered at once.
 *   2. body calls: append to a buffer bounded by max_body_bytes; past it the
 *      rest is discarded and a 413 is remembered (MHD forbids queueing a
 *      response while body data is still arriving).
 *   3. final call (*upload_data_size == 0): parse and check the body by the
 *      row (its schema or parse hook), then either answer on this thread
 *      (a read: the row's read handler, given the newest read view when the
 *      row asks for it; any error) or submit (a write; a consistent read):
 *      copy the request as it arrived (method, raw body, Authorization,
 *      Content-Type, X-Flowd-Forwarded) into req so that a follower can
 *      forward it unchanged, state = SUBMITTED, MHD_suspend_connection(),
 *      pending++, then backend->submit(). The handler returns MHD_YES
 *      without touching the request again.
 *   4. api_request_finish() (any thread): state = FINISHED (release), then
 *      MHD_resume_connection().
 *   5. MHD calls the handler again on the worker: it sees FINISHED (acquire),
 *      sets RESUMED, pending--, renders the answer with req->render from
 *      the newest view when the backend set it, and queues the status and
 *      body. When a read handler asked for history the view no longer
 *      holds (pg_run_id, pg_list_limit, pg_flow_versions), the worker first
 *      reads it from PostgreSQL through the reader (blocking, a few seconds
 *      at most when PostgreSQL is down) and rewrites the response: this
 *      must not happen in finish(), which may run on the loop thread.
 *   6. NOTIFY_COMPLETED frees the request (also after errors, client
 *      disconnects, and requests MHD itself rejected after step 0 without
 *      ever calling the handler). With keep-alive, the next request on the
 *      connection starts again at 0 with a fresh *con_cls.
 *
 * The finish-before-suspend race. The connection is suspended *before*
 * submit() is called, so whenever finish() runs - even synchronously inside
 * submit(), or on another thread before the handler has returned - it
 * resumes a connection that is already suspended. MHD defers the actual
 * resumption to the worker's next loop iteration, which cannot run before
 * the handler has returned: the worker is the thread running the handler.
 * finish() never touches the request after MHD_resume_connection(), since
 * the worker may complete and free it immediately.
 *
 * pending counts requests from suspension until the worker has taken the
 * resumed request back (step 5, or NOTIFY_COMPLETED for a connection that
 * ended first), not merely until MHD_resume_connection() returned: MHD
 * acts on a resume in the worker's next iteration, and MHD_stop_daemon()
 * before that iteration aborts the process ("called while we have
 * suspended connections", seen in a SIGTERM test). So pending == 0 means
 * no connection is suspended and api_server_stop() is safe. Two more
 * rules make that hold while requests still arrive on open keep-alive
 * connections (other nodes' heartbeats do, until the end): a request is
 * counted *before* its connection is suspended (else the daemon could read
 * 0 between the two and stop: "MHD_stop_daemon() called while we have
 * suspended connections", seen in a partition test's teardown), and
 * api_server_quiesce() closes the count (PENDING_CLOSED): a request that
 * would be suspended after it is answered 503 on its worker instead, so
 * once pending is 0 after quiesce it stays 0.
 *
 * Failure modes. A client that disconnects while its request is suspended is
 * not noticed until the backend finishes (MHD does not watch suspended
 * sockets); the response is then dropped and the request freed as usual. If
 * MHD ever reported completion of a request the backend still holds (only
 * possible by stopping the daemon with pending requests, an API violation),
 * the request is leaked, with an error logged, rather than freed under the
 * backend. Out of memory on a worker closes the connection (MHD_NO).
 */

#include "api/api.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <gnutls/gnutls.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "api/auth.h"
#include "api/route.h"
#include "api/tls.h"
#include "api/stream.h"
#include "core/log.h"
#include "core/map.h"
#include "core/metrics.h"
#include "core/thread.h"
#include "core/view.h"
#include "storage/storage.h"

#define DEFAULT_THREADS 2
#define DEFAULT_CONNECTION_LIMIT 1024
#define DEFAULT_CONNECTION_TIMEOUT_S 60
#define BODY_INITIAL_CAP 4096
#define WATCH_POLL_MS 10
#define DEFAULT_MAX_STREAMS 4096
#define DEFAULT_HEARTBEAT_MS 15000
/* api_server_quiesce() sets this bit of `pending`: no request is suspended
 * after it (pending_enter fails); the rest counts the suspended ones. */
#define PENDING_CLOSED 0x80000000u

static const char *const known_methods[] = {
	"GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS", NULL};

/* Latency buckets (seconds): 0.5 ms to 10 s. */
static const double http_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01,
				      0.025,  0.05,  0.1,    0.25,  0.5,
				      1,      2.5,   5,      10};

static const char internal_error_body[] =
	"{\"error\":{\"code\":\"internal\",\"message\":\"no response\"}}";

enum request_state {
	STATE_READING,	 /* on the worker: headers and body being read */
	STATE_SUBMITTED, /* held by the backend; connection suspended */
	STATE_FINISHED,	 /* the backend answered; resume requested */
	STATE_RESUMED,	 /* the worker has taken the answer back */
};

struct request {
	struct api_request req; /* handed to the backend; req.priv = this */
	struct api_server *server;
	struct MHD_Connection *conn;
	const char *method; /* borrowed from MHD, valid for the request; NULL
			     * until the handler's first call */
	const char *url;    /* borrowed from MHD, likewise */
	struct api__route route;
	_Atomic int state; /* enum request_state */
	int begun;	   /* the handler's first call has run */
	int node_claim;	   /* X-Flowd-Node: verified in request_end */
	char peer_address[48]; /* the connection's own address, whatever a
				* node's X-Flowd-On-Behalf says */
	int failed;	   /* an error response is ready in req */
	char *body;	   /* owned raw body, NULL until the first byte; moved
			    * to req.raw_body on submit */
	size_t body_len;
	size_t body_cap;
	struct timespec t0; /* when the request line arrived */
	uint64_t view_index; /* the read view's applied index the answer was
			      * rendered from; 0: none (X-Flowd-Index) */
};

struct api_server {
	struct MHD_Daemon *daemon;
	struct api_backend backend;
	const struct api_route *routes; /* borrowed */
	struct storage_reader *reader; /* borrowed */
	struct metrics_family *http_requests, *http_seconds; /* or NULL */
	struct metrics_series *http_blocked; /* or NULL */
	struct view_store *views;      /* borrowed */
	struct flowd_limits limits;
	struct api_token *tokens; /* owned, n_tokens */
	size_t n_tokens;
	char *secret;	      /* owned cluster secret, or NULL */
	int node_only;	      /* node.internal_address */
	char *trust;	      /* owned: tls.client_ca_file's PEM, which MHD
			       * borrows */
	int client_certs;     /* tls.client_ca_file: a client certificate
			       * that chains to it is required */
	int open;	      /* no token configured at all */
	struct sockaddr_in addr;
	MHD_socket quiesced_fd; /* returned by MHD_quiesce_daemon */
	int thread_nice;
	atomic_uint pending;

	/* Blocking reads (?index=&wait=): parked requests, and the thread
	 * that answers them when their probe passes their index or their
	 * wait ends. It polls the read view every WATCH_POLL_MS and never
	 * involves the loop. */
	pthread_mutex_t watch_mu;
	pthread_cond_t watch_cond;
	pthread_t watcher;
	bool watcher_started, watch_stop, watch_release_all;
	struct parked *parked;
	size_t n_parked, cap_parked;
	/* Streamed answers waiting for something to send (stream.h), woken
	 * by the same thread; under watch_mu. */
	struct api__streams streams;

	/* api.read_timeout_s: every open connection, so that the watcher can
	 * drop one whose request has not fully arrived in time (slow
	 * clients; see "Deadlines" in DESIGN). */
	pthread_mutex_t conns_mu;
	struct conn *conns;    /* a list under conns_mu */
	int64_t read_timeout_ms;
	int64_t idle_ms;       /* api.connection_timeout_s */
	int64_t next_sweep_ms;
	atomic_uint dropped_slow;
};

/* One connection, from MHD's "started" notification to its "closed" one
 * (socket_context). */
struct conn {
	struct conn *prev, *next; /* under conns_mu */
	int fd;
	atomic_llong deadline_ms; /* shut down past it unless busy: the
	                         * accept or the request line + read_timeout;
	                         * after an answer, + the idle timeout (a
	                         * keep-alive client may think, but a byte
	                         * now and then does not extend it) */
	atomic_int busy;        /* a request fully read is being answered */
	bool dropped;           /* shut down by the sweep */
};

static struct conn *conn_of(struct request *r);
static void conns_sweep(struct api_server *s, int64_t now);

struct parked {
	struct request *r;
	uint64_t after;        /* answer once the probe passes this */
	struct timespec until; /* or at this time (CLOCK_MONOTONIC) */
};

/* ------------------------------------------------------------------------
 * Responses
 */

void api_request_reply_json(struct api_request *req, int status, json_t *body)
{
	char *text = NULL;

	if (body != NULL)
		text = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	free(req->resp_body);
	req->resp_body = NULL;
	if (text == NULL) {
		log_error("api: cannot encode a response status=%d", status);
		req->status = 500;
		req->resp_body = strdup(internal_error_body);
		return;
	}
	req->status = status;
	req->resp_body = text;
}

void api_request_reply_take(struct api_request *req, int status, char *text)
{
	struct flowd_error err;

	free(req->resp_body);
	req->resp_body = text;
	req->status = status;
	if (text == NULL) {
		flowd_error_set(&err, FLOWD_E_INTERNAL, "internal", "",
				"out of memory");
		api_request_reply_error(req, &err);
	}
}

void api_request_reply_error(struct api_request *req,
			     const struct flowd_error *err)
{
	json_t *inner = json_object();
	json_t *outer = json_object();
	int status = api_http_status(err->errc);

	if (inner == NULL || outer == NULL)
		goto oom;
	if (json_object_set_new(
		    inner, "code",
		    json_string(err->code[0] ? err->code : "error")) != 0 ||
	    json_object_set_new(inner, "message", json_string(err->message)) !=
		    0)
		goto oom;
	if (err->field[0] != '\0' &&
	    json_object_set_new(inner, "field", json_string(err->field)) != 0)
		goto oom;
	if (json_object_set_new(outer, "error", inner) != 0) {
		inner = NULL; /* stolen even on failure */
		goto oom;
	}
	if (status == 503 && req->retry_after == 0)
		req->retry_after = 1;
	api_request_reply_json(req, status, outer);
	return;

oom:
	json_decref(inner);
	json_decref(outer);
	api_request_reply_json(req, 500, NULL);
}

void api_request_reply_text(struct api_request *req, int status,
			    const char *json_text, size_t len)
{
	char *text = malloc(len + 1);

	free(req->resp_body);
	req->resp_body = NULL;
	if (text == NULL) {
		log_error("api: out of memory copying a response status=%d",
			  status);
		req->status = 500;
		req->resp_body = strdup(internal_error_body);
		return;
	}
	if (len > 0)
		memcpy(text, json_text, len);
	text[len] = '\0';
	if (status == 503 && req->retry_after == 0)
		req->retry_after = 1;
	req->status = status;
	req->resp_body = text;
}

/* For log lines: method and url are NULL for a request MHD rejected before
 * calling the handler. */
static const char *or_dash(const char *s) { return s != NULL ? s : "-"; }

/* Answer `err` from the worker thread. */
static void fail(struct request *r, const struct flowd_error *err)
{
	api_request_reply_error(&r->req, err);
	r->failed = 1;
}

/* flowd_http_requests_total and flowd_http_request_duration_seconds: by
 * the route's template (a path no row matches is "unmatched"), so the
 * label sets are bounded by the route table. */
static void count_request(struct request *r, int status)
{
	struct api_server *s = r->server;
	const struct api_route *row = r->route.row;
	const char *method = row != NULL ? row->method : "other";
	const char *route = row != NULL ? row->path : "unmatched";
	char code[8];
	struct timespec t1;

	if (s->http_requests == NULL)
		return;
	if (row == NULL && r->method != NULL)
		for (const char *const *m = known_methods; *m != NULL; m++)
			if (strcmp(r->method, *m) == 0)
				method = *m;
	snprintf(code, sizeof code, "%d", status);
	const char *v[] = {method, route, code};
	metrics_inc(metrics_series(s->http_requests, v), 1);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	metrics_observe(metrics_series2(s->http_seconds, method, route),
			(double)(t1.tv_sec - r->t0.tv_sec) +
				(double)(t1.tv_nsec - r->t0.tv_nsec) / 1e9);
}

static const char *header(struct request *r, const char *name)
{
	return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

/* An ETag for a 200 answer to a read: FNV-1a of its body, so that a
 * poller that sends it back in If-None-Match gets 304 with no body while
 * nothing changed. */
static void etag_of(const char *body, char out[24])
{
	snprintf(out, 24, "\"%016llx\"",
		 (unsigned long long)map_fnv1a(body, MAP_FNV_SEED));
}

/* If-None-Match: "*", or a list of entity tags (weak ones compare as
 * strong ones: a read's body is its only representation). */
static bool etag_matches(const char *header_value, const char *etag)
{
	const char *p = header_value;
	size_t n = strlen(etag);

	while (*p != '\0') {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (*p == '*')
			return true;
		if (p[0] == 'W' && p[1] == '/')
			p += 2;
		if (strncmp(p, etag, n) == 0 &&
		    (p[n] == '\0' || p[n] == ',' || p[n] == ' ' ||
		     p[n] == '\t'))
			return true;
		while (*p != '\0' && *p != ',')
			p++;
	}
	return false;
}

/* Queue the response held in r->req. Called on the worker, only when MHD
 * allows it (first call or *upload_data_size == 0). */
static enum MHD_Result answer(struct request *r)
{
	struct api_request *req = &r->req;
	struct MHD_Response *resp;
	enum MHD_Result ret = MHD_NO;
	unsigned retry = req->retry_after;
	int status = req->status;
	char num[24], etag[24] = "";
	bool is_get = r->method != NULL && (strcmp(r->method, "GET") == 0 ||
					    strcmp(r->method, "HEAD") == 0);

	if (status == 200 && req->stream_ops != NULL) {
		resp = api__stream_response(&r->server->streams, r->conn,
					    req->stream_ops, req->stream_state);
		req->stream_ops = NULL; /* the stream owns the state now */
		req->stream_state = NULL;
		if (resp == NULL)
			goto done;
		if (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
					    "text/event-stream") != MHD_YES ||
		    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL,
					    "no-cache") != MHD_YES)
			goto destroy;
		ret = MHD_queue_response(r->conn, 200, resp);
		goto destroy;
	}
	if (status == 200 && is_get && req->resp_body != NULL) {
		const char *inm = header(r, MHD_HTTP_HEADER_IF_NONE_MATCH);
		etag_of(req->resp_body, etag);
		if (inm != NULL && etag_matches(inm, etag)) {
			status = 304;
			free(req->resp_body);
			req->resp_body = NULL;
			resp = MHD_create_response_from_buffer(
				0, (void *)"", MHD_RESPMEM_PERSISTENT);
			if (resp == NULL)
				goto done;
			goto headers;
		}
	}
	if (req->resp_body != NULL && req->resp_body[0] != '\0' &&
	    status >= 100 && status <= 599) {
		resp = MHD_create_response_from_buffer(strlen(req->resp_body),
						       req->resp_body,
						       MHD_RESPMEM_MUST_FREE);
		if (resp != NULL)
			req->resp_body = NULL; /* MHD frees it now */
	} else {
		log_error("api: no response route=%s status=%d",
			  req->route ? req->route->name : "-", status);
		status = 500;
		resp = MHD_create_response_from_buffer(
			sizeof internal_error_body - 1,
			(void *)internal_error_body, MHD_RESPMEM_PERSISTENT);
	}
	if (resp == NULL)
		goto done;
headers:
	if (etag[0] != '\0' && (status == 200 || status == 304) &&
	    MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, etag) != MHD_YES)
		goto destroy;
	if (r->view_index != 0 && (status == 200 || status == 304)) {
		snprintf(num, sizeof num, "%llu",
			 (unsigned long long)r->view_index);
		if (MHD_add_response_header(resp, "X-Flowd-Index", num) !=
		    MHD_YES)
			goto destroy;
	}
	if (status != 304 &&
	    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
				    status >= 200 && status < 300 &&
						    req->resp_type != NULL
					    ? req->resp_type
					    : "application/json") != MHD_YES)
		goto destroy;
	if (status == 405 && r->route.allow[0] != '\0' &&
	    MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW,
				    r->route.allow) != MHD_YES)
		goto destroy;
	if (status == 401 &&
	    MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
				    "Bearer") != MHD_YES)
		goto destroy;
	if (status == 503 && retry == 0)
		retry = 1;
	if (retry > 0) {
		snprintf(num, sizeof num, "%u", retry);
		if (MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER,
					    num) != MHD_YES)
			goto destroy;
	}
	ret = MHD_queue_response(r->conn, (unsigned)status, resp);
destroy:
	MHD_destroy_response(resp);
done:
	log_debug("api: answered method=%s path=%s status=%d",
		  or_dash(r->method), or_dash(r->url), status);
	count_request(r, status);
	return ret;
}

/* ------------------------------------------------------------------------
 * Requests
 */

void api_request_reply_stream(struct api_request *req,
			      const struct api_stream_ops *ops, void *state)
{
	struct request *r = req->priv;
	struct api__streams *ss = &r->server->streams;
	struct flowd_error err;

	if (req->stream_ops != NULL)
		req->stream_ops->free(req->stream_state);
	req->stream_ops = NULL;
	req->stream_state = NULL;
	if (atomic_load(&ss->open) >= ss->max) {
		ops->free(state);
		flowd_error_set(&err, FLOWD_E_UNAVAILABLE, "too_many_streams",
				"", "%zu streams are open (api.max_streams)",
				ss->max);
		api_request_reply_error(req, &err);
		return;
	}
	free(req->resp_body);
	req->resp_body = NULL;
	req->status = 200;
	req->stream_ops = ops;
	req->stream_state = state;
}

const char *api_request_header(const struct api_request *req,
				const char *name)
{
	struct request *r = req->priv;

	return r != NULL && r->conn != NULL ? header(r, name) : NULL;
}

void api_server_kick(struct api_server *s)
{
	atomic_fetch_add(&s->streams.gen, 1);
	pthread_cond_signal(&s->watch_cond);
}

/* The URI log callback: called by MHD once per request, with the request
 * target as the client sent it, before MHD cuts the query off and unescapes
 * the path. Returns the new request, which MHD stores in *con_cls (NULL on
 * out of memory: the handler then closes the connection). */
static void *uri_log_cb(void *cls, const char *uri, struct MHD_Connection *conn)
{
	struct request *r = calloc(1, sizeof *r);

	if (r == NULL)
		return NULL;
	r->req.target = strdup(uri != NULL ? uri : "");
	if (r->req.target == NULL) {
		free(r);
		return NULL;
	}
	r->req.priv = r;
	r->server = cls;
	r->conn = conn;
	clock_gettime(CLOCK_MONOTONIC, &r->t0);
	/* the request line is in: its head and body have read_timeout_s */
	struct conn *c = conn_of(r);
	if (c != NULL)
		atomic_store(&c->deadline_ms,
			     api__now_ms() + r->server->read_timeout_ms);
	atomic_init(&r->state, STATE_READING);
	return r;
}

static void request_free(struct request *r)
{
	if (r->req.stream_ops != NULL) /* answered otherwise in the end */
		r->req.stream_ops->free(r->req.stream_state);
	api__request_clear(&r->req);
	api__route_close(&r->route);
	free(r->body);
	free(r);
}

struct query_all {
	const char *key;
	const char **out;
	size_t max, n;
};

static enum MHD_Result query_all_one(void *cls, enum MHD_ValueKind kind,
				     const char *key, const char *value)
{
	struct query_all *q = cls;

	if (key == NULL || strcmp(key, q->key) != 0)
		return MHD_YES;
	if (q->n < q->max)
		q->out[q->n] = value != NULL ? value : "";
	q->n++;
	return MHD_YES;
}

static size_t query_all(void *arg, const char *key, const char **out,
			size_t max)
{
	struct query_all q = {.key = key, .out = out, .max = max};

	MHD_get_connection_values(arg, MHD_GET_ARGUMENT_KIND, query_all_one,
				  &q);
	return q.n;
}

static const char *query_get(void *arg, const char *key)
{
	struct MHD_Connection *conn = arg;
	const char *value = NULL;

	if (MHD_lookup_connection_value_n(conn, MHD_GET_ARGUMENT_KIND, key,
					  strlen(key), &value, NULL) != MHD_YES)
		return NULL;
	return value != NULL ? value : "";
}

/* Copy the request as it arrived into req, for a backend that forwards it
 * to the leader unchanged (api.h). The raw body buffer moves to req. */
static int request_capture(struct request *r, struct flowd_error *err)
{
	struct api_request *req = &r->req;
	const char *v;
	char *raw;

	/* HEAD is routed, and so forwarded, as GET. */
	req->method =
		strdup(strcmp(r->method, "HEAD") == 0 ? "GET" : r->method);
	if (req->method == NULL)
		goto oom;
	raw = realloc(r->body, r->body_len + 1);
	if (raw == NULL)
		goto oom; /* r->body is still owned by r */
	raw[r->body_len] = '\0';
	req->raw_body = raw;
	req->raw_body_len = r->body_len;
	r->body = NULL;
	r->body_len = 0;
	r->body_cap = 0;
	v = header(r, MHD_HTTP_HEADER_CONTENT_TYPE);
	if (v != NULL && (req->content_type = strdup(v)) == NULL)
		goto oom;
	v = header(r, "X-Flowd-Forwarded");
	req->forwarded = v != NULL && strcmp(v, "1") == 0;
	return 0;

oom:
	/* What was copied is freed with the request. */
	return flowd_error_set(err, FLOWD_E_INTERNAL, "internal", "",
			       "out of memory");
}

static void client_address_of(struct request *r)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(
		r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	const struct sockaddr_in *sin;

	strcpy(r->req.client_address, "-");
	if (ci == NULL || ci->client_addr == NULL ||
	    ci->client_addr->sa_family != AF_INET)
		return;
	sin = (const struct sockaddr_in *)ci->client_addr;
	inet_ntop(AF_INET, &sin->sin_addr, r->req.client_address,
		  sizeof r->req.client_address);
}

/* tls.client_ca_file: the client's certificate must chain to it. */
static int client_cert_check(struct request *r, struct flowd_error *err)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(
		r->conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
	gnutls_session_t session;
	unsigned status = 0;

	if (ci == NULL || ci->tls_session == NULL)
		return flowd_error_set(err, FLOWD_E_UNAUTHORIZED,
				       "unauthorized", "",
				       "a client certificate is required");
	session = (gnutls_session_t)ci->tls_session;
	if (gnutls_certificate_type_get(session) != GNUTLS_CRT_X509 ||
	    gnutls_certificate_get_peers(session, &(unsigned){0}) == NULL ||
	    gnutls_certificate_verify_peers2(session, &status) != 0 ||
	    status != 0)
		return flowd_error_set(err, FLOWD_E_UNAUTHORIZED,
				       "unauthorized", "",
				       "a client certificate signed by "
				       "tls.client_ca_file is required");
	return 0;
}

/* Who is asking, and may they (api.h, enum api_role): a user by bearer
 * token, or another node by its signed headers (auth.c; the signature is
 * checked in request_end, once the body it covers has arrived). */
static int identify(struct request *r, enum api_role need,
		    struct flowd_error *err)
{
	struct api_server *s = r->server;
	struct api_request *req = &r->req;
	const struct api_token *tok;
	const char *node = header(r, "X-Flowd-Node");
	const char *behalf;

	client_address_of(r);
	memcpy(r->peer_address, req->client_address, sizeof r->peer_address);
	if (s->client_certs && client_cert_check(r, err) != 0)
		return -1;
	if (node != NULL) {
		r->node_claim = 1;
		behalf = header(r, "X-Flowd-On-Behalf");
		if (behalf != NULL) {
			if (api__on_behalf_parse(behalf, &req->role, req->who,
						 req->client_address) != 0)
				return flowd_error_set(
				    err, FLOWD_E_INVALID, "invalid_value",
				    "X-Flowd-On-Behalf",
				    "not \"<role> <name> <address>\"");
		} else {
			req->role = API_ROLE_NODE;
			snprintf(req->who, sizeof req->who, "node-%.40s",
				 node);
		}
		if (need == API_ROLE_NODE && behalf != NULL)
			return flowd_error_set(err, FLOWD_E_FORBIDDEN,
					       "forbidden", "",
					       "a node speaks for itself here");
		if (need != API_ROLE_NODE && req->role == API_ROLE_NODE)
			return flowd_error_set(err, FLOWD_E_FORBIDDEN,
					       "forbidden", "",
					       "a node request for a user route "
					       "must name its client");
		if (need != API_ROLE_NODE && need > req->role)
			return flowd_error_set(err, FLOWD_E_FORBIDDEN,
					       "forbidden", "",
					       "this request needs the %s role",
					       api_role_name(need));
		return 0;
	}
	if (s->node_only)
		return flowd_error_set(err, FLOWD_E_FORBIDDEN, "forbidden", "",
				       "this listener serves the cluster's "
				       "nodes only");
	tok = api__auth_lookup(s->tokens, s->n_tokens,
			       header(r, MHD_HTTP_HEADER_AUTHORIZATION));
	req->role = tok != NULL ? tok->role
		    : s->open	? API_ROLE_PRODUCTION
				: API_ROLE_PUBLIC;
	snprintf(req->who, sizeof req->who, "%s",
		 tok != NULL ? tok->name : "-");
	if (need == API_ROLE_NODE)
		return req->role == API_ROLE_PUBLIC
			       ? flowd_error_set(err, FLOWD_E_UNAUTHORIZED,
						 "unauthorized", "",
						 "a node credential is "
						 "required")
			       : flowd_error_set(err, FLOWD_E_FORBIDDEN,
						 "forbidden", "",
						 "this route is for the "
						 "cluster's nodes: user tokens "
						 "are refused");
	if (need <= req->role)
		return 0;
	if (req->role == API_ROLE_PUBLIC)
		return flowd_error_set(err, FLOWD_E_UNAUTHORIZED,
				       "unauthorized", "",
				       "a valid bearer token is required");
	return flowd_error_set(err, FLOWD_E_FORBIDDEN, "forbidden", "",
			       "this request needs the %s role",
			       api_role_name(need));
}

/* request_end: a node's signature over what arrived. */
static int node_verify(struct request *r, struct flowd_error *err)
{
	struct timespec now;
	uint64_t id;

	clock_gettime(CLOCK_REALTIME, &now);
	if (api__node_verify(r->server->secret, header(r, "X-Flowd-Node"),
			     header(r, "X-Flowd-Node-Auth"), r->method,
			     r->req.target, r->body, r->body_len,
			     header(r, "X-Flowd-On-Behalf"),
			     (int64_t)now.tv_sec * 1000 +
				     now.tv_nsec / 1000000,
			     &id, err) != 0)
		return -1;
	r->req.node_id = id;
	return 0;
}

/* The headers-only call: everything that can be decided before the body. */
static int request_begin(struct request *r, struct flowd_error *err)
{
	struct api_server *s = r->server;
	const struct api_route *row;
	const char *cl;

	if (api__route_match(s->routes, r->method, r->url, &r->route, err) !=
	    0)
		return -1;
	row = r->route.row;
	if (identify(r, row->role, err) != 0)
		return -1;
	r->req.query_all = query_all;
	if (api__route_validate(&r->route, query_get, r->conn, &s->limits,
				&r->req, err) != 0)
		return -1;
	cl = header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (cl != NULL) {
		unsigned long long n;
		char *end;

		errno = 0;
		n = strtoull(cl, &end, 10);
		if (errno == 0 && end != cl && n > s->limits.max_body_bytes)
			return flowd_error_set(
			    err, FLOWD_E_TOO_LARGE, "too_large", "",
			    "body over %zu bytes", s->limits.max_body_bytes);
		if (errno == 0 && end != cl && n > 0 &&
		    row->body != API_BODY_NONE)
			r->body_cap = (size_t)n; /* first allocation size */
	}
	if ((row->body == API_BODY_JSON || row->body == API_BODY_RAW) &&
	    !api__content_type_is_json(header(r, MHD_HTTP_HEADER_CONTENT_TYPE)))
		return flowd_error_set(err, FLOWD_E_MEDIA_TYPE,
				       "unsupported_media_type", "",
				       "the body must be application/json");
	return 0;
}

/* Append a body chunk, or discard it once the body is over the limit (or the
 * route takes no body). */
static int request_append(struct request *r, const char *data, size_t len)
{
	size_t max = r->server->limits.max_body_bytes;
	struct flowd_error err;

	if (r->failed || r->route.row == NULL ||
	    r->route.row->body == API_BODY_NONE)
		return 0;
	if (len > max - r->body_len) {
		free(r->body);
		r->body = NULL;
		r->body_len = 0;
		flowd_error_set(&err, FLOWD_E_TOO_LARGE, "too_large", "",
				"body over %zu bytes", max);
		fail(r, &err);
		return 0;
	}
	if (r->body == NULL || r->body_len + len > r->body_cap) {
		size_t cap = r->body == NULL && r->body_cap > 0
				     ? r->body_cap
				     : BODY_INITIAL_CAP;
		char *grown;

		while (cap < r->body_len + len)
			cap = cap > max / 2 ? max : cap * 2;
		grown = realloc(r->body, cap);
		if (grown == NULL)
			return -1;
		r->body = grown;
		r->body_cap = cap;
	}
	memcpy(r->body + r->body_len, data, len);
	r->body_len += len;
	return 0;
}

/* Parse the buffered body into *out (NULL when empty and allowed). */
static int body_parse(struct request *r, json_t **out, struct flowd_error *err)
{
	json_error_t jerr;

	*out = NULL;
	if (r->body_len == 0 && r->route.row->body == API_BODY_JSON_OPT)
		return 0;
	if (!api__content_type_is_json(header(r, MHD_HTTP_HEADER_CONTENT_TYPE)))
		return flowd_error_set(err, FLOWD_E_MEDIA_TYPE,
				       "unsupported_media_type", "",
				       "the body must be application/json");
	/* The raw bytes are kept: they become req->raw_body on submit. */
	*out = json_loadb(r->body ? r->body : "", r->body_len,
			  JSON_REJECT_DUPLICATES, &jerr);
	if (*out == NULL)
		return flowd_error_set(err, FLOWD_E_INVALID, "invalid_json", "",
				       "invalid JSON at line %d, column %d: %s",
				       jerr.line, jerr.column, jerr.text);
	return 0;
}

/* Check the body by the row and attach it to the request. */
static int body_attach(struct request *r, struct flowd_error *err)
{
	const struct api_route *row = r->route.row;
	json_t *doc = NULL;
	int rc;

	if (row->body == API_BODY_RAW) {
		/* Only checked; the backend uses req->raw_body. */
		if (!api__content_type_is_json(
			    header(r, MHD_HTTP_HEADER_CONTENT_TYPE)))
			return flowd_error_set(
			    err, FLOWD_E_MEDIA_TYPE, "unsupported_media_type",
			    "", "the body must be application/json");
		return api__command_body(r->body, r->body_len, err);
	}
	if (body_parse(r, &doc, err) != 0)
		return -1;
	if (row->parse != NULL && doc != NULL)
		rc = row->parse(&doc, &r->server->limits, err);
	else
		rc = api__body_check(row, doc, &r->server->limits, err);
	if (rc != 0) {
		json_decref(doc);
		return -1;
	}
	r->req.body = doc;
	return 0;
}

/* pg_run_id: the run is answered from PostgreSQL with the backend's status
 * (resp_body is ignored), or with the reader's 404/503. */
static void history_run(struct request *r)
{
	struct api_server *s = r->server;
	struct api_request *req = &r->req;
	struct flowd_error err;
	json_t *run = NULL;
	int status = req->status >= 200 && req->status < 300 ? req->status
							     : 200;

	flowd_error_clear(&err);
	if (s->reader == NULL) {
		flowd_error_set(&err, FLOWD_E_UNAVAILABLE, "unavailable", "",
				"run history needs the PostgreSQL reader");
		goto error;
	}
	if (storage_reader_run(s->reader, req->pg_run_id, &run, &err) != 0)
		goto error;
	api_request_reply_json(req, status, run);
	goto done;
error:
	api_request_reply_error(req, &err);
done:
	free(req->pg_run_id);
	req->pg_run_id = NULL;
}

/* The sequence number in a run id "r-%012llu" as decimal text, or NULL. */
static json_t *run_cursor(const json_t *run)
{
	const char *id = json_string_value(json_object_get(run, "id"));
	unsigned long long seq;
	char *end, buf[32];

	if (id == NULL || strncmp(id, "r-", 2) != 0 || id[2] < '0' ||
	    id[2] > '9')
		return NULL;
	errno = 0;
	seq = strtoull(id + 2, &end, 10);
	if (errno != 0 || *end != '\0')
		return NULL;
	snprintf(buf, sizeof buf, "%llu", seq);
	return json_string(buf);
}

/* pg_list_limit > 0: complete the backend's in-memory page with older runs
 * from PostgreSQL, and recompute next_cursor over the combined page. */
static void history_runs(struct request *r)
{
	struct api_server *s = r->server;
	struct api_request *req = &r->req;
	struct flowd_error err;
	json_t *page = NULL, *runs, *more = NULL, *next;
	unsigned want = req->pg_list_limit;
	size_t have;

	req->pg_list_limit = 0;
	if (req->status < 200 || req->status >= 300)
		return; /* the backend answered an error: keep it */
	flowd_error_clear(&err);
	if (s->reader == NULL) {
		flowd_error_set(&err, FLOWD_E_UNAVAILABLE, "unavailable", "",
				"run history needs the PostgreSQL reader");
		goto error;
	}
	if (req->resp_body != NULL)
		page = json_loads(req->resp_body, 0, NULL);
	runs = json_object_get(page, "runs");
	if (!json_is_array(runs)) {
		log_error("api: the backend's run page is not {\"runs\": [...]}");
		flowd_error_set(&err, FLOWD_E_INTERNAL, "internal", "",
				"the run page could not be built");
		goto error;
	}
	have = json_array_size(runs);
	if (req->limit > have && want > req->limit - have)
		want = req->limit - (unsigned)have;
	if (have < req->limit && want > 0) {
		struct view_run_filter flt = {
			.flow = req->list_flow,
			.project = req->list_project,
			.branch = req->list_branch,
			.status = req->list_status
					  ? fsm_run_status_parse(req->list_status)
					  : -1,
			.tags = req->list_tags,
			.n_tags = req->n_list_tags,
		};
		if (storage_reader_runs_filter(s->reader, &flt,
					       req->pg_list_before, want, &more,
					       &err) != 0)
			goto error;
		if (json_array_extend(runs, more) != 0) {
			flowd_error_set(&err, FLOWD_E_INTERNAL, "internal", "",
					"out of memory");
			goto error;
		}
		json_decref(more);
		more = NULL;
	}
	have = json_array_size(runs);
	next = NULL;
	if (req->limit > 0 && have >= req->limit) {
		next = run_cursor(json_array_get(runs, have - 1));
		if (next == NULL)
			log_warn("api: no cursor from the last run of a page");
	}
	if (json_object_set_new(page, "next_cursor",
				next != NULL ? next : json_null()) != 0) {
		flowd_error_set(&err, FLOWD_E_INTERNAL, "internal", "",
				"out of memory");
		goto error;
	}
	api_request_reply_json(req, req->status, page);
	return;

error:
	json_decref(more);
	json_decref(page);
	api_request_reply_error(req, &err);
}

/* The specs of old versions the state machine no longer keeps come from
 * PostgreSQL's flow_versions: fill every "spec": null of the page. */
static void history_versions(struct request *r)
{
	struct api_server *s = r->server;
	struct api_request *req = &r->req;
	struct flowd_error err;
	json_t *page = NULL, *pg = NULL, *one, *row;
	size_t i, k;

	req->pg_flow_versions = 0;
	flowd_error_clear(&err);
	if (s->reader == NULL) {
		flowd_error_set(&err, FLOWD_E_UNAVAILABLE, "unavailable", "",
				"old versions need the PostgreSQL reader");
		goto error;
	}
	page = json_loads(req->resp_body ? req->resp_body : "", 0, NULL);
	if (page == NULL ||
	    storage_reader_flow_versions(s->reader, req->flow, &pg, &err) != 0)
		goto error;
	json_array_foreach(json_object_get(page, "versions"), i, one)
	{
		if (!json_is_null(json_object_get(one, "spec")))
			continue;
		json_array_foreach(pg, k, row)
			if (json_equal(json_object_get(row, "version"),
				       json_object_get(one, "version")))
				json_object_set(one, "spec",
						json_object_get(row, "spec"));
	}
	json_decref(pg);
	api_request_reply_json(req, 200, page);
	return;
error:
	if (err.errc == FLOWD_OK)
		flowd_error_set(&err, FLOWD_E_INTERNAL, "internal", "",
				"out of memory");
	json_decref(pg);
	json_decref(page);
	api_request_reply_error(req, &err);
}

/* After a read handler or the backend answered, before the response is
 * queued: the history it asked for. */
static void request_history(struct request *r)
{
	if (r->req.pg_run_id != NULL)
		history_run(r);
	else if (r->req.pg_list_limit > 0)
		history_runs(r);
	else if (r->req.pg_flow_versions)
		history_versions(r);
}

/* Answer with `fn` (a row's read handler, or req->render) on this HTTP
 * thread: with the newest read view when `with_view`, let go before the
 * history it asked for is read from PostgreSQL. */
static void answer_read(struct request *r, api_read_fn fn, bool with_view)
{
	struct api_server *s = r->server;
	struct api_request *req = &r->req;
	const struct view *v = NULL;
	struct view_guard g;
	struct flowd_error err;

	if (req->status < 200 || req->status >= 300)
		req->status = 200;
	if (with_view) {
		v = view_acquire(s->views, &g);
		if (v == NULL) {
			flowd_error_set(&err, FLOWD_E_UNAVAILABLE,
					"unavailable", "", "out of memory");
			api_request_reply_error(req, &err);
			return;
		}
	}
	fn(s->backend.read_arg, v, req);
	if (v != NULL) {
		const struct api_route *row = req->route;
		uint64_t idx = row != NULL && row->probe != NULL
				       ? row->probe(v, req)
				       : 0;
		r->view_index = idx != 0 ? idx : view_applied_index(v);
		view_release(&g);
	}
	request_history(r);
}

/* Count a request about to be suspended; false once the server quiesced
 * (see DESIGN). */
static bool pending_enter(struct api_server *s)
{
	unsigned v = atomic_load(&s->pending);

	do {
		if (v & PENDING_CLOSED)
			return false;
	} while (!atomic_compare_exchange_weak(&s->pending, &v, v + 1));
	return true;
}

/* The answer to a request that arrives while the server stops. */
static enum MHD_Result answer_stopping(struct request *r)
{
	struct flowd_error err;

	flowd_error_set(&err, FLOWD_E_UNAVAILABLE, "unavailable", "",
			"the node is shutting down");
	fail(r, &err);
	return answer(r);
}

static enum MHD_Result submit(struct request *r)
{
	struct api_server *s = r->server;

	if (!pending_enter(s))
		return answer_stopping(r);
	/* Suspend before the backend can see the request: see DESIGN. */
	atomic_store_explicit(&r->state, STATE_SUBMITTED, memory_order_relaxed);
	MHD_suspend_connection(r->conn);
	s->backend.submit(s->backend.arg, &r->req);
	return MHD_YES; /* r may already be resuming: do not touch it */
}

/* ------------------------------------------------------------------------
 * Blocking reads
 */

/* The request's probe on the newest view has not passed its ?index. */
static bool must_wait(struct request *r)
{
	struct view_guard g;
	const struct view *v = view_acquire(r->server->views, &g);
	bool wait;

	if (v == NULL)
		return false;
	/* 0: nothing to wait on (no such run or flow in memory): answer */
	uint64_t idx = r->req.route->probe(v, &r->req);
	wait = idx != 0 && idx <= r->req.wait_index;
	view_release(&g);
	return wait;
}

/* Hold the request (suspended, as a submitted one) until the watcher
 * answers it. */
static enum MHD_Result park(struct request *r)
{
	struct api_server *s = r->server;
	struct parked p = {.r = r, .after = r->req.wait_index};

	clock_gettime(CLOCK_MONOTONIC, &p.until);
	p.until.tv_sec += r->req.wait_ms / 1000;
	p.until.tv_nsec += (long)(r->req.wait_ms % 1000) * 1000000L;
	if (p.until.tv_nsec >= 1000000000L) {
		p.until.tv_sec++;
		p.until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&s->watch_mu);
	if (s->n_parked == s->cap_parked) {
		size_t cap = s->cap_parked ? s->cap_parked * 2 : 64;
		struct parked *np = realloc(s->parked, cap * sizeof *np);
		if (np == NULL) {
			pthread_mutex_unlock(&s->watch_mu);
			/* answer at once rather than not at all */
			answer_read(r, r->req.route->read, true);
			return answer(r);
		}
		s->parked = np;
		s->cap_parked = cap;
	}
	if (!pending_enter(s)) {
		pthread_mutex_unlock(&s->watch_mu);
		answer_read(r, r->req.route->read, true);
		return answer(r);
	}
	/* Suspend before the watcher can see it (as submit() does). */
	atomic_store_explicit(&r->state, STATE_SUBMITTED, memory_order_relaxed);
	MHD_suspend_connection(r->conn);
	s->parked[s->n_parked++] = p;
	metrics_set(s->http_blocked, (double)s->n_parked);
	pthread_mutex_unlock(&s->watch_mu);
	return MHD_YES;
}

static bool passed(const struct timespec *now, const struct timespec *t)
{
	return now->tv_sec > t->tv_sec ||
	       (now->tv_sec == t->tv_sec && now->tv_nsec >= t->tv_nsec);
}

/* The watcher: every WATCH_POLL_MS, when the view moved (or a wait may
 * have ended), answer the parked requests whose probe passed their index
 * or whose wait is over; all of them once the server quiesces. The answer
 * is rendered by the worker from the newest view (req->render). */
static void *watch_main(void *arg)
{
	struct api_server *s = arg;
	uint64_t seen = 0;

	flowd_thread_nicer(s->thread_nice);
	pthread_mutex_lock(&s->watch_mu);
	while (!s->watch_stop) {
		struct timespec now, wake;
		clock_gettime(CLOCK_REALTIME, &wake);
		wake.tv_nsec += WATCH_POLL_MS * 1000000L;
		if (wake.tv_nsec >= 1000000000L) {
			wake.tv_sec++;
			wake.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&s->watch_cond, &s->watch_mu, &wake);
		conns_sweep(s, api__now_ms());
		if (api__streams_waiting(&s->streams))
			api__streams_wake(&s->streams, api__now_ms());
		if (s->n_parked == 0)
			continue;
		struct view_guard g;
		const struct view *v = view_acquire(s->views, &g);
		if (v == NULL)
			continue;
		uint64_t index = view_applied_index(v);
		clock_gettime(CLOCK_MONOTONIC, &now);
		size_t keep = 0;
		for (size_t i = 0; i < s->n_parked; i++) {
			struct parked *p = &s->parked[i];
			struct api_request *req = &p->r->req;
			uint64_t idx = index != seen ? req->route->probe(v, req)
						     : p->after;
			bool go = s->watch_release_all ||
				  passed(&now, &p->until) || idx == 0 ||
				  idx > p->after;
			if (!go) {
				s->parked[keep++] = *p;
				continue;
			}
			req->render = req->route->read;
			req->status = 200;
			api_request_finish(req);
		}
		s->n_parked = keep;
		metrics_set(s->http_blocked, (double)keep);
		seen = index;
		view_release(&g);
	}
	pthread_mutex_unlock(&s->watch_mu);
	return NULL;
}

/* The final call for a request still being read: decide and answer. */
static enum MHD_Result request_end(struct request *r)
{
	const struct api_route *row = r->route.row;
	struct flowd_error err;
	struct conn *c = conn_of(r);

	if (c != NULL)
		atomic_store(&c->busy, 1);
	flowd_error_clear(&err);
	if (r->failed)
		return answer(r);
	if (r->node_claim && node_verify(r, &err) != 0) {
		log_warn("api: node credential refused address=%s node=%s "
			 "path=%s why=\"%s\"",
			 r->peer_address, or_dash(header(r, "X-Flowd-Node")),
			 or_dash(r->url), err.message);
		fail(r, &err);
		return answer(r);
	}
	if (row->body != API_BODY_NONE && body_attach(r, &err) != 0) {
		fail(r, &err);
		return answer(r);
	}
	/* Reads are answered here, unless they must see every entry
	 * committed before them (the backend then passes a barrier first). */
	if (row->read != NULL && r->req.wait_ms > 0 && must_wait(r))
		return park(r);
	if (row->read != NULL &&
	    !(r->req.consistent && (row->flags & API_ROUTE_CONSISTENT))) {
		answer_read(r, row->read, row->flags & API_ROUTE_VIEW);
		return answer(r);
	}
	if (request_capture(r, &err) != 0) {
		fail(r, &err);
		return answer(r);
	}
	return submit(r);
}

static enum MHD_Result access_cb(void *cls, struct MHD_Connection *conn,
				 const char *url, const char *method,
				 const char *version, const char *upload_data,
				 size_t *upload_data_size, void **con_cls)
{
	struct api_server *s = cls;
	struct request *r = *con_cls;
	struct flowd_error err;

	if (r == NULL) {
		/* uri_log_cb ran out of memory */
		log_error("api: out of memory for a request; closing");
		return MHD_NO;
	}
	if (!r->begun) {
		r->begun = 1;
		r->server = s;
		r->method = method;
		r->url = url;
		flowd_error_clear(&err);
		if (request_begin(r, &err) != 0) {
			fail(r, &err);
			return answer(r);
		}
		return MHD_YES;
	}
	if (*upload_data_size != 0) {
		if (request_append(r, upload_data, *upload_data_size) != 0)
			return MHD_NO;
		*upload_data_size = 0;
		return MHD_YES;
	}
	switch (atomic_load_explicit(&r->state, memory_order_acquire)) {
	case STATE_READING:
		return request_end(r);
	case STATE_FINISHED:
		atomic_store_explicit(&r->state, STATE_RESUMED,
				      memory_order_relaxed);
		atomic_fetch_sub(&s->pending, 1);
		if (r->req.render != NULL)
			answer_read(r, r->req.render, true);
		else
			request_history(r);
		return answer(r);
	default:
		/* Called while the backend holds it: cannot happen while
		 * suspended; refuse rather than answer twice. */
		log_error("api: handler called on a submitted request");
		return MHD_NO;
	}
}

void api_request_finish(struct api_request *req)
{
	struct request *r = req->priv;
	struct MHD_Connection *conn = r->conn;
	int prev;

	prev = atomic_exchange_explicit(&r->state, STATE_FINISHED,
					memory_order_acq_rel);
	assert(prev == STATE_SUBMITTED);
	(void)prev;
	MHD_resume_connection(conn);
	/* r may be freed by now: the worker owns it again. */
}

static void completed_cb(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct request *r = *con_cls;
	struct conn *c;

	if (r == NULL)
		return;
	*con_cls = NULL;
	if ((c = conn_of(r)) != NULL) {
		atomic_store(&c->deadline_ms, api__now_ms() + r->server->idle_ms);
		atomic_store(&c->busy, 0);
	}
	if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
		log_debug("api: request ended early method=%s path=%s toe=%d",
			  or_dash(r->method), or_dash(r->url), (int)toe);
	switch (atomic_load_explicit(&r->state, memory_order_acquire)) {
	case STATE_SUBMITTED:
		log_error("api: request completed while the backend holds it; "
			  "leaking it method=%s path=%s",
			  or_dash(r->method), or_dash(r->url));
		return;
	case STATE_FINISHED: /* resumed, but ended before the handler ran */
		atomic_fetch_sub(&r->server->pending, 1);
		break;
	default:
		break;
	}
	request_free(r);
}

/* Deadlines. MHD's own timeout is an idle timeout, which a client that
 * sends a byte now and then never reaches. So the server keeps its
 * connections in a list; a connection whose request has not fully arrived
 * read_timeout_s after it began (the accept, or the end of the request
 * before it on a keep-alive connection) is shut down by the watcher
 * thread (shutdown(2): MHD sees the end and closes it as usual; the fd is
 * only closed by MHD, after the "closed" notification has taken it out of
 * the list under conns_mu, so a shut down fd is never another one). A
 * request being answered (streams, blocking reads) is not timed. */
static void conn_track(struct api_server *s, struct MHD_Connection *conn,
		       void **ctx, enum MHD_ConnectionNotificationCode toe)
{
	struct conn *c = *ctx;

	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *ci = MHD_get_connection_info(
			conn, MHD_CONNECTION_INFO_CONNECTION_FD);

		c = calloc(1, sizeof *c);
		if (c == NULL || ci == NULL) {
			free(c);
			return;
		}
		c->fd = ci->connect_fd;
		atomic_init(&c->deadline_ms, api__now_ms() + s->read_timeout_ms);
		atomic_init(&c->busy, 0);
		pthread_mutex_lock(&s->conns_mu);
		c->next = s->conns;
		if (s->conns != NULL)
			s->conns->prev = c;
		s->conns = c;
		pthread_mutex_unlock(&s->conns_mu);
		*ctx = c;
		return;
	}
	if (c == NULL)
		return;
	pthread_mutex_lock(&s->conns_mu);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	pthread_mutex_unlock(&s->conns_mu);
	free(c);
	*ctx = NULL;
}

/* The connection of a request (NULL when untracked). */
static struct conn *conn_of(struct request *r)
{
	const union MHD_ConnectionInfo *ci;

	if (r->server->read_timeout_ms <= 0)
		return NULL;
	ci = MHD_get_connection_info(r->conn,
				     MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	return ci != NULL ? ci->socket_context : NULL;
}

/* The watcher, every second: shut down connections past the deadline. */
static void conns_sweep(struct api_server *s, int64_t now)
{
	unsigned n = 0;

	if (s->read_timeout_ms <= 0 || now < s->next_sweep_ms)
		return;
	s->next_sweep_ms = now + 1000;
	pthread_mutex_lock(&s->conns_mu);
	for (struct conn *c = s->conns; c != NULL; c = c->next) {
		if (c->dropped || atomic_load(&c->busy) ||
		    now <= atomic_load(&c->deadline_ms))
			continue;
		c->dropped = true;
		shutdown(c->fd, SHUT_RDWR);
		n++;
	}
	pthread_mutex_unlock(&s->conns_mu);
	if (n > 0) {
		atomic_fetch_add(&s->dropped_slow, n);
		log_info("api: dropped %u connections that sent no whole "
			 "request within %lld ms",
			 n, (long long)s->read_timeout_ms);
	}
}

/* A connection starts on a worker: the first one a worker sees lowers the
 * worker's priority (Linux: nice is per thread), so that the loop thread,
 * which runs Raft, comes first on a busy machine. */
static void connection_cb(void *cls, struct MHD_Connection *conn,
			  void **socket_context,
			  enum MHD_ConnectionNotificationCode toe)
{
	static _Thread_local int niced;
	struct api_server *s = cls;

	if (s->read_timeout_ms > 0)
		conn_track(s, conn, socket_context, toe);
	if (toe != MHD_CONNECTION_NOTIFY_STARTED || niced)
		return;
	niced = 1;
	if (flowd_thread_nicer(s->thread_nice) != 0)
		log_warn("api: setpriority: %s", strerror(errno));
}

/* Leave URLs escaped: route.c decodes each path segment and query value
 * itself, so that "%2F" cannot split a segment and "%00" cannot cut one. */
static size_t unescape_cb(void *cls, struct MHD_Connection *conn, char *s)
{
	return strlen(s);
}

static void mhd_log_cb(void *cls, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));

static void mhd_log_cb(void *cls, const char *fmt, va_list ap)
{
	char line[512];
	size_t n;

	vsnprintf(line, sizeof line, fmt, ap);
	n = strlen(line);
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		line[--n] = '\0';
	/* a client that went away mid-answer (a watcher that closed its
	 * stream, most often) is not the node's problem */
	if (strstr(line, "socket is no longer available") != NULL ||
	    strstr(line, "Connection reset by peer") != NULL)
		log_debug("api: mhd: %s", line);
	else
		log_warn("api: mhd: %s", line);
}

/* ------------------------------------------------------------------------
 * The server
 */

static int parse_address(const char *address, struct sockaddr_in *out,
			 char *errmsg, size_t errlen)
{
	if (api__ipv4_address_parse(address, out) == 0)
		return 0;
	snprintf(errmsg, errlen,
		 "api: address \"%s\" is not an IPv4 \"a.b.c.d:port\"",
		 address ? address : "");
	return -1;
}

/* A whole small file (a CA bundle), NUL-terminated; NULL on error. */
static char *read_small_file(const char *path, char *errmsg, size_t errlen)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL;
	size_t n = 0;

	if (f != NULL && (buf = malloc(1 << 20)) != NULL)
		n = fread(buf, 1, (1 << 20) - 1, f);
	if (f == NULL || buf == NULL || ferror(f) || n == 0) {
		snprintf(errmsg, errlen, "api: tls.client_ca_file: %s: %s",
			 path, f == NULL ? strerror(errno) : "cannot read");
		free(buf);
		if (f != NULL)
			fclose(f);
		return NULL;
	}
	fclose(f);
	buf[n] = '\0';
	return buf;
}

void api_server_tls_unload(void)
{
	api__tls_unload();
}

int api_server_tls_reload(const char *cert_file, const char *key_file,
			  char *errmsg, size_t errlen)
{
	return api__tls_load(cert_file, key_file, errmsg, errlen);
}

int api_server_start(const struct api_config *cfg,
		     const struct api_backend *backend,
		     struct storage_reader *reader, struct view_store *views,
		     struct api_server **out, char *errmsg, size_t errlen)
{
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
			 MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC |
			 MHD_USE_ERROR_LOG;
	unsigned threads = cfg->threads ? cfg->threads : DEFAULT_THREADS;
	unsigned limit = cfg->connection_limit ? cfg->connection_limit
					       : DEFAULT_CONNECTION_LIMIT;
	unsigned timeout = cfg->connection_timeout_s
				   ? cfg->connection_timeout_s
				   : DEFAULT_CONNECTION_TIMEOUT_S;
	struct api_server *s;
	char *trust = NULL;
	int tls = cfg->tls_cert_file != NULL;

	s = calloc(1, sizeof *s);
	if (s == NULL) {
		snprintf(errmsg, errlen, "api: out of memory");
		return -1;
	}
	s->quiesced_fd = MHD_INVALID_SOCKET;
	atomic_init(&s->pending, 0);
	pthread_mutex_init(&s->watch_mu, NULL);
	pthread_cond_init(&s->watch_cond, NULL);
	pthread_mutex_init(&s->conns_mu, NULL);
	s->read_timeout_ms = (int64_t)cfg->read_timeout_s * 1000;
	s->idle_ms = (int64_t)(cfg->connection_timeout_s
				       ? cfg->connection_timeout_s
				       : DEFAULT_CONNECTION_TIMEOUT_S) * 1000;
	api__streams_init(&s->streams, &s->watch_mu,
			  cfg->max_streams ? cfg->max_streams
					   : DEFAULT_MAX_STREAMS,
			  cfg->heartbeat_ms ? cfg->heartbeat_ms
					    : DEFAULT_HEARTBEAT_MS);
	if (parse_address(cfg->address, &s->addr, errmsg, errlen) != 0 ||
	    api__routes_check(cfg->routes, errmsg, errlen) != 0)
		goto err_free;
	s->n_tokens = cfg->n_tokens;
	s->tokens = calloc(cfg->n_tokens + 1, sizeof *s->tokens);
	s->secret = cfg->cluster_secret ? strdup(cfg->cluster_secret) : NULL;
	if (s->tokens == NULL ||
	    (cfg->cluster_secret != NULL && s->secret == NULL)) {
		snprintf(errmsg, errlen, "api: out of memory");
		goto err_tokens;
	}
	if (cfg->n_tokens > 0)
		memcpy(s->tokens, cfg->tokens, cfg->n_tokens * sizeof *s->tokens);
	s->open = cfg->n_tokens == 0;
	s->node_only = cfg->node_only;
	if (tls) {
		flags |= MHD_USE_TLS;
		if (api__tls_load(cfg->tls_cert_file, cfg->tls_key_file,
				  errmsg, errlen) != 0)
			goto err_tokens;
		if (cfg->tls_client_ca_file != NULL &&
		    (trust = read_small_file(cfg->tls_client_ca_file, errmsg,
					     errlen)) == NULL)
			goto err_tokens;
		s->client_certs = trust != NULL;
	}
	if (cfg->limits != NULL)
		s->limits = *cfg->limits;
	else
		flowd_limits_defaults(&s->limits);
	s->backend = *backend;
	s->routes = cfg->routes;
	s->reader = reader;
	s->views = views;
	s->thread_nice = cfg->thread_nice;
	if (cfg->metrics != NULL) {
		const char *l3[] = {"method", "route", "code", NULL};
		const char *l2[] = {"method", "route", NULL};
		s->http_requests = metrics_family_new(
			cfg->metrics, "flowd_http_requests_total",
			"HTTP requests answered, by route template and status.",
			METRICS_COUNTER, l3, NULL, 0, 4096);
		s->http_seconds = metrics_family_new(
			cfg->metrics, "flowd_http_request_duration_seconds",
			"Time from the request line to the answer queued, by "
			"route template.",
			METRICS_HISTOGRAM, l2, http_buckets,
			sizeof http_buckets / sizeof http_buckets[0], 1024);
		s->http_blocked = metrics_series(
			metrics_family_new(cfg->metrics,
					   "flowd_http_requests_blocked",
					   "Blocking reads (?index=&wait=) held "
					   "now.",
					   METRICS_GAUGE, NULL, NULL, 0, 1),
			NULL);
		if (s->http_requests == NULL || s->http_seconds == NULL ||
		    s->http_blocked == NULL) {
			snprintf(errmsg, errlen, "api: out of memory");
			goto err_tokens;
		}
	}

	s->daemon = MHD_start_daemon(
		flags, ntohs(s->addr.sin_port), NULL, NULL, access_cb, s,
		MHD_OPTION_EXTERNAL_LOGGER, mhd_log_cb, s, MHD_OPTION_SOCK_ADDR,
		(struct sockaddr *)&s->addr, MHD_OPTION_THREAD_POOL_SIZE,
		threads > 1 ? threads : 0u, MHD_OPTION_CONNECTION_LIMIT, limit,
		MHD_OPTION_CONNECTION_TIMEOUT, timeout,
		MHD_OPTION_NOTIFY_COMPLETED, completed_cb, s,
		MHD_OPTION_NOTIFY_CONNECTION, connection_cb, s,
		MHD_OPTION_UNESCAPE_CALLBACK, unescape_cb, NULL,
		MHD_OPTION_URI_LOG_CALLBACK, uri_log_cb, s,
		MHD_OPTION_PER_IP_CONNECTION_LIMIT, cfg->per_address_limit,
		/* TLS options last: MHD refuses them on a plain daemon, and
		 * MHD_OPTION_END cuts the list short when there is no TLS */
		tls ? MHD_OPTION_HTTPS_PRIORITIES : MHD_OPTION_END,
		"NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2",
		MHD_OPTION_HTTPS_CERT_CALLBACK, api__tls_retrieve_cb,
		trust != NULL ? MHD_OPTION_HTTPS_MEM_TRUST : MHD_OPTION_END,
		trust, MHD_OPTION_END);
	/* MHD keeps the pointer for the daemon's life */
	s->trust = trust;
	trust = NULL;
	if (s->daemon == NULL) {
		snprintf(errmsg, errlen, "api: cannot listen on %s: %s",
			 cfg->address, errno ? strerror(errno) : "mhd failed");
		goto err_tokens;
	}
	/* The watcher answers blocking reads and wakes streams. */
	if (pthread_create(&s->watcher, NULL, watch_main, s) != 0) {
		snprintf(errmsg, errlen, "api: cannot start the watcher thread");
		MHD_stop_daemon(s->daemon);
		goto err_tokens;
	}
	s->watcher_started = true;
	log_info("api: listening address=%s threads=%u tokens=%s tls=%s%s",
		 cfg->address, threads, s->open ? "none" : "required",
		 tls ? "on" : "off", s->node_only ? " nodes_only=1" : "");
	*out = s;
	return 0;

err_tokens:
	free(trust);
	free(s->tokens);
	free(s->secret);
err_free:
	pthread_cond_destroy(&s->watch_cond);
	pthread_mutex_destroy(&s->watch_mu);
	pthread_mutex_destroy(&s->conns_mu);
	free(s);
	return -1;
}

void api_server_quiesce(struct api_server *s)
{
	MHD_socket fd;

	if (s->quiesced_fd != MHD_INVALID_SOCKET)
		return;
	/* nothing is suspended from now on (see DESIGN) */
	atomic_fetch_or(&s->pending, PENDING_CLOSED);
	/* blocking reads are answered now, with what they would see */
	pthread_mutex_lock(&s->watch_mu);
	s->watch_release_all = true;
	/* streams end now: none may be suspended at MHD_stop_daemon */
	api__streams_stop(&s->streams);
	pthread_cond_signal(&s->watch_cond);
	pthread_mutex_unlock(&s->watch_mu);
	fd = MHD_quiesce_daemon(s->daemon);
	if (fd == MHD_INVALID_SOCKET) {
		log_warn("api: cannot quiesce the http daemon");
		return;
	}
	/* MHD hands the listening socket back; it may be closed only after
	 * MHD_stop_daemon (a worker could still be using it). */
	s->quiesced_fd = fd;
	log_info("api: stopped accepting connections");
}

unsigned api_server_pending(struct api_server *s)
{
	return atomic_load(&s->pending) & ~PENDING_CLOSED;
}

void api_server_stop(struct api_server *s)
{
	unsigned pending = atomic_load(&s->pending) & ~PENDING_CLOSED;

	if (pending != 0)
		log_error("api: stopping with %u requests still submitted",
			  pending);
	pthread_mutex_lock(&s->watch_mu); /* done by quiesce, unless skipped */
	api__streams_stop(&s->streams);
	pthread_mutex_unlock(&s->watch_mu);
	MHD_stop_daemon(s->daemon);
	if (s->quiesced_fd != MHD_INVALID_SOCKET)
		close(s->quiesced_fd);
	if (s->watcher_started) {
		pthread_mutex_lock(&s->watch_mu);
		s->watch_stop = true;
		pthread_cond_signal(&s->watch_cond);
		pthread_mutex_unlock(&s->watch_mu);
		pthread_join(s->watcher, NULL);
	}
	free(s->parked);
	api__streams_close(&s->streams);
	pthread_cond_destroy(&s->watch_cond);
	pthread_mutex_destroy(&s->watch_mu);
	pthread_mutex_destroy(&s->conns_mu);
	if (s->secret != NULL)
		explicit_bzero(s->secret, strlen(s->secret));
	free(s->secret);
	free(s->tokens);
	free(s->trust);
	free(s);
}
