/* readview.h - publishes the read view (core/view.h) that the HTTP threads
 * answer reads from, and finishes the requests answered from it. Loop
 * thread only. */
#ifndef FLOWD_DAEMON_READVIEW_H
#define FLOWD_DAEMON_READVIEW_H

#include <jansson.h>
#include <uv.h>

#include "api/api.h"
#include "consensus/consensus.h"
#include "core/fsm.h"
#include "core/view.h"
#include "daemon/config.h"
#include "daemon/liveness.h"
#include "daemon/scheduler.h"
#include "storage/storage.h"

struct readview_config {
	uv_loop_t *loop;                  /* borrowed: the refresh timer */
	const struct flowd_config *cfg;   /* borrowed: node id, [peers] */
	struct fsm *fsm;                  /* borrowed */
	struct consensus *raft;           /* borrowed until readview_detach */
	struct storage_applier *applier;  /* borrowed: PostgreSQL's progress */
	struct scheduler *sched;          /* borrowed: its statistics */
	const struct liveness *live;      /* borrowed: registered yet? */
	/* Ask for an after-apply pass (the pump), which calls
	 * readview_publish(). */
	void (*kick)(void *arg);
	void *kick_arg;
};

struct readview;

/* Create the view store and start the refresh timer. Returns NULL when out
 * of memory. */
struct readview *readview_new(const struct readview_config *c);

/* The store the api reads from (borrowed until readview_close). */
struct view_store *readview_store(struct readview *rv);

/* Publish a new version: the runs and flows changed since the last one,
 * the cluster's numbers; then finish the requests that waited for it. */
void readview_publish(struct readview *rv);

/* Finish `req` (borrowed until then) once the next version is published:
 * a client that reads after the answer sees what it changed. Its answer is
 * either filled already, or rendered by the api from that version with
 * req->render (set by the caller). */
void readview_finish(struct readview *rv, struct api_request *req);

/* Answer every waiting request now (shutdown). */
void readview_flush(struct readview *rv);

/* The Raft configuration, with what the state machine knows of each node
 * (new reference). */
json_t *readview_members_json(struct readview *rv);

/* The role as consensus last reported it (GET /v1/cluster "role"). */
void readview_role_set(struct readview *rv, enum consensus_role role);

/* Shutting down: "not ready" says so; the refresh timer stops. */
void readview_stop(struct readview *rv);

/* Raft is closing: no version is published any more; the last one stays. */
void readview_detach(struct readview *rv);

/* Free the waiting list and close the timer; the store and the memory go
 * in its close callback (run the loop). No reader may use the store any
 * more (the api is stopped). */
void readview_close(struct readview *rv);

#endif
