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

/* api_backend.submit (arg: the service): queue `req` for the loop. Any
 * thread. */
void service_submit_cb(void *arg, struct api_request *req);

/* The role as consensus last reported it: the leader proposes, others
 * forward. */
void service_role_set(struct service *s, enum consensus_role role);

/* Shutting down: writes are answered 503. */
void service_stop(struct service *s);

/* Raft is closing: nothing reaches it any more. */
void service_detach(struct service *s);

/* Answer every queued request, and those waiting for the view, with
 * `status` (shutdown). */
void service_fail_all(struct service *s, int status, const char *code,
		      const char *msg);

/* Close the inbox's handle; the memory goes in its close callback (run the
 * loop). Every request must have been answered (the api is stopped). */
void service_close(struct service *s);

#endif
