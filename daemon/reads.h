/* reads.h - the API's read handlers (api_read_fn, api.h): each answers one
 * read on an HTTP thread, from the read view (core/view.h), PostgreSQL or
 * the query alone; and the renders of write answers that the service hands
 * the api as req->render. daemon/routes.c names them in the route table.
 * HTTP threads only; nothing here touches the loop's state. */
#ifndef FLOWD_DAEMON_READS_H
#define FLOWD_DAEMON_READS_H

#include "api/api.h"
#include "daemon/config.h"
#include "daemon/nodecred.h"
#include <stdatomic.h>

#include "core/feed.h"
#include "core/view.h"
#include "daemon/clock.h"
#include "daemon/metrics.h"
#include "daemon/tail.h"
#include "storage/storage.h"

/* What the read handlers are given (api_backend.read_arg): filled by
 * main.c, borrowed by the handlers for the api server's life. */
struct reads {
	struct storage_reader *reader; /* borrowed, may be NULL: task logs */
	struct view_store *views;      /* borrowed, may be NULL: whether a
	                                * log PostgreSQL lacks is still to come */
	struct flowd_clock clock;      /* the wall clock: schedules, previews */
	struct node_metrics *metrics;  /* borrowed: GET /metrics */
	struct feed *feed;             /* borrowed, may be NULL: GET /v1/watch */
	unsigned max_page;             /* limits.max_runs_page (0: default) */
	/* Followed logs (daemon/follow.c) */
	uint64_t node_id;              /* this node */
	struct tails *tails;           /* borrowed, may be NULL: this node's
	                                * running attempts' output */
	void (*kick)(void *arg);       /* wake the api's waiting streams */
	void *kick_arg;
	unsigned max_relays;           /* api.max_log_follows */
	atomic_uint relays;            /* relays of other nodes' logs now */
	int thread_nice;               /* relay threads: as the HTTP ones */
	const struct nodecred *cred;   /* borrowed: relays are signed as this
	                                * node (nodecred.h) */
	const struct flowd_config *cfg;/* borrowed: [peers]' listeners for
	                                * nodes, which relays prefer */
};

/* Modify-index probes of the rows (api_probe_fn). */
uint64_t reads_probe_run(const struct view *v, const struct api_request *req);
uint64_t reads_probe_runs(const struct view *v, const struct api_request *req);
uint64_t reads_probe_flow(const struct view *v, const struct api_request *req);
uint64_t reads_probe_flows(const struct view *v,
			   const struct api_request *req);
uint64_t reads_probe_cluster(const struct view *v,
			     const struct api_request *req);

/* Rows of the route table (`v` is NULL for rows without API_ROUTE_VIEW). */
void reads_healthz(void *arg, const struct view *v, struct api_request *req);
void reads_readyz(void *arg, const struct view *v, struct api_request *req);
void reads_cluster(void *arg, const struct view *v, struct api_request *req);
void reads_metrics(void *arg, const struct view *v, struct api_request *req);
void reads_openapi(void *arg, const struct view *v, struct api_request *req);
void reads_flow_list(void *arg, const struct view *v, struct api_request *req);
void reads_flow_get(void *arg, const struct view *v, struct api_request *req);
void reads_flow_versions(void *arg, const struct view *v,
			 struct api_request *req);
void reads_schedule(void *arg, const struct view *v, struct api_request *req);
void reads_run_list(void *arg, const struct view *v, struct api_request *req);
void reads_run_get(void *arg, const struct view *v, struct api_request *req);
void reads_logs(void *arg, const struct view *v, struct api_request *req);
void reads_cron_preview(void *arg, const struct view *v,
			struct api_request *req);

/* GET /v1/events: events posted, newest first, from PostgreSQL; its query
 * hook checks ?name= (an event name), ?limit= (1..max_runs_page, default
 * 50) and ?cursor= (a next_cursor, "<index>:<id>"): 400 invalid_query. */
void reads_events(void *arg, const struct view *v, struct api_request *req);
int reads_events_query(struct api_request *req, const struct flowd_limits *lim,
		       struct flowd_error *err);

/* The logs row's query hook: ?attempt= is 1..INT_MAX, ?follow= true or
 * false (400 invalid_query naming it). */
int reads_logs_query(struct api_request *req, const struct flowd_limits *lim,
		     struct flowd_error *err);
/* ?attempt= of a logs request in *attempt, 0 (the last one) when absent;
 * 0, or -1 with the 400 above. */
int reads_logs_attempt(const struct api_request *req, int *attempt,
		       struct flowd_error *err);

/* What the read view `v` (may be NULL) says of a step's attempt (attempt
 * 0: the last): whether it knows the run and the step, the attempt's
 * number (0 when there is none), its node, and whether it still runs. */
struct reads_attempt {
	bool known;
	unsigned attempt;
	uint64_t node;
	bool running;
};
struct reads_attempt reads_attempt_of(const struct view *v, const char *run_id,
				      const char *step, int attempt);

/* Renders of write answers (req->render). reads_run_get renders a run
 * created or cancelled (req->run_id) too. */
void reads_flow_put(void *arg, const struct view *v, struct api_request *req);
void reads_flow_undeployed(void *arg, const struct view *v,
			   struct api_request *req);

/* GET /v1/projects/{project}/flows/{flow}/compare (docs/lifecycle.md) */
int reads_compare_query(struct api_request *req, const struct flowd_limits *lim,
			struct flowd_error *err);
void reads_compare(void *arg, const struct view *v, struct api_request *req);

#endif
