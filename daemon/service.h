/* service.h - the API's backend: requests the HTTP threads hand over are
 * answered on the loop (writes as proposals, consistent reads, membership
 * changes); a follower hands them to the leader through forward.c. */
#ifndef FLOWD_DAEMON_SERVICE_H
#define FLOWD_DAEMON_SERVICE_H

#include <uv.h>

#include "api/api.h"
#include "consensus/consensus.h"
#include "core/fsm.h"
#include "daemon/clock.h"
#include "daemon/config.h"
#include "daemon/forward.h"
#include "daemon/readview.h"
#include "storage/storage.h"

struct service_config {
	uv_loop_t *loop;                  /* borrowed: the inbox's wake-up */
	const struct flowd_config *cfg;   /* borrowed */
	struct fsm *fsm;                  /* borrowed: checks before proposing */
	struct consensus *raft;           /* borrowed until service_detach */
	struct forward *fwd;              /* borrowed: to the leader */
	struct readview *rv;              /* borrowed: answers from the view */
	struct storage_applier *applier;  /* borrowed: PostgreSQL's backlog */
	struct flowd_clock clock;         /* the commands' ts */
};

struct service;

/* Returns NULL when out of memory. */
struct service *service_new(const struct service_config *c);

/* api_backend.submit (arg: the service): queue `req` for the loop, where
 * its row's submit handler runs (a write) or, for a consistent read, a
 * barrier and then its row's read handler. Any thread. */
void service_submit_cb(void *arg, struct api_request *req);

/* The submit handlers of the route table (api_submit_fn, arg: the
 * service; daemon/routes.c). Loop thread, called by the service itself
 * once a write is admissible (this node leads, is not stopping, and
 * PostgreSQL is not too far behind); each finishes `req` once. */
void service_flow_put(void *arg, struct api_request *req);
void service_flow_delete(void *arg, struct api_request *req);
void service_run_create(void *arg, struct api_request *req);
void service_run_cancel(void *arg, struct api_request *req);
/* POST /v1/runs/{id}/tags, /resume, /redrive (docs/lifecycle.md) */
void service_run_tags(void *arg, struct api_request *req);
void service_run_resume(void *arg, struct api_request *req);
void service_run_redrive(void *arg, struct api_request *req);
void service_run_record(void *arg, struct api_request *req);
void service_event_post(void *arg, struct api_request *req);
void service_flow_pause(void *arg, struct api_request *req);
void service_flow_unpause(void *arg, struct api_request *req);
void service_backfill(void *arg, struct api_request *req);
void service_member_add(void *arg, struct api_request *req);
void service_member_remove(void *arg, struct api_request *req);
void service_leader_transfer(void *arg, struct api_request *req);
void service_internal_command(void *arg, struct api_request *req);

/* The role as consensus last reported it: the leader proposes, others
 * forward. */
void service_role_set(struct service *s, enum consensus_role role);

/* Shutting down: writes are answered 503. */
void service_stop(struct service *s);

/* Raft is closing: nothing reaches it any more. */
void service_detach(struct service *s);

/* Answer every queued request, and those waiting for the view, with
 * `errc` (shutdown). */
void service_fail_all(struct service *s, enum flowd_errc errc, const char *code,
		      const char *msg);

/* Close the inbox's handle; the memory goes in its close callback (run the
 * loop). Every request must have been answered (the api is stopped). */
void service_close(struct service *s);

#endif
