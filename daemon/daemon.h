/* daemon.h - the composition root's shared state: one struct flowd holds the
 * loop and every module, and the files of daemon/ each add one concern to it
 * (service.c answers API requests, tasks.c connects the state machine to the
 * executor, main.c starts and stops it all). Loop thread only, except where
 * a field says otherwise. */
#ifndef FLOWD_DAEMON_H
#define FLOWD_DAEMON_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "api/api.h"
#include "consensus/consensus.h"
#include "core/fsm.h"
#include "daemon/config.h"
#include "daemon/executor.h"
#include "daemon/peer.h"
#include "storage/storage.h"

/* An attempt the state machine placed on this node, waiting for the loop to
 * start it (or to stop it). */
struct task_op {
	char *run_id;
	unsigned step;
	unsigned attempt;
	bool stop;
	struct task_op *next;
};

/* A task_finish not yet committed: kept until it is. */
struct finish_msg {
	char *buf;
	size_t len;
	struct finish_msg *next;
};

struct flowd {
	struct flowd_config *cfg;
	uv_loop_t *loop;
	uint64_t boot;                  /* random, new at every start */

	struct fsm fsm;
	struct consensus *raft;
	struct executor *exec;
	struct storage_applier *applier;
	struct storage_reader *reader;
	struct api_server *api;
	struct peer *peer;              /* requests to the leader's API */
	struct scheduler *sched;        /* the leader's cron (scheduler.c) */

	/* HTTP threads -> loop: requests to answer. */
	pthread_mutex_t inbox_lock;
	struct api_request **inbox;
	size_t inbox_n, inbox_cap;
	uv_async_t inbox_async;
	struct api_request **work;      /* taken from the inbox, loop only */
	size_t work_head, work_n;

	/* Deferred work after applies: start/stop attempts, re-arm timers. */
	struct task_op *ops_head, *ops_tail;
	uint64_t pushed_index;          /* last index whose rows went to the applier */
	uint64_t log_pushed_index;      /* last index whose push held task logs */
	bool snapshot_wanted;           /* postponed until those logs are stored */
	uv_async_t db_async;            /* applier thread -> loop: it advanced */
	uint64_t pg_index;              /* raft_meta.applied_index at start */
	bool pg_index_known;
	uv_idle_t after_apply;
	uv_timer_t wake_timer;          /* leader: retries that come due */
	int64_t wake_armed_for;

	struct finish_msg *finish_head, *finish_tail;
	unsigned finish_inflight;
	uv_timer_t finish_timer;        /* resend what did not commit */

	enum consensus_role role;
	bool node_up_done;              /* our node_up committed this boot */
	bool node_up_inflight;
	uv_timer_t leader_timer;        /* leader duties that need retrying */

	/* Liveness (multi-node clusters): every node commits node_alive each
	 * cluster.node_heartbeat_ms; the leader marks a node it has not heard
	 * from for cluster.node_timeout_ms down. `heard` is leader-local
	 * (uv_now of the last node_up/node_alive applied per node). */
	uv_timer_t alive_timer;
	struct {
		uint64_t node;
		uint64_t heard_ms;
		uint64_t down_sent_ms;
	} heard[64];
	unsigned n_heard;
	unsigned unregistered_ticks;    /* looks at the state that found this
	                                 * node not registered as it is */

	/* The read view (readview.c): published after each batch; requests
	 * answered from it wait in `waiting` for the next publish. */
	struct view_store *views;
	struct api_request **waiting;
	size_t n_waiting, cap_waiting;
	uv_timer_t view_timer;
	uint64_t members_sig;
	bool members_sig_set;
	uint64_t stats_ticks;
	int64_t stats_ms;
	bool stats_set;

	uv_signal_t sigterm, sigint;
	uv_timer_t watchdog;
	bool stopping;
	int exit_code;
};

int64_t flowd_now_ms(void);

/* service.c */
const char *service_leader_api(struct flowd *d); /* NULL if none or us */
void service_submit_cb(void *arg, struct api_request *req);
void service_inbox_cb(uv_async_t *h);
void service_fail_all(struct flowd *d, int status, const char *code,
		      const char *msg);

/* readview.c */
int readview_init(struct flowd *d);
void readview_publish(struct flowd *d);
/* Finish `req` from the view once the next version is published. */
void readview_answer(struct flowd *d, struct api_request *req);
/* Answer every waiting request now (shutdown). */
void readview_flush(struct flowd *d);
void readview_close(struct flowd *d);
json_t *readview_members_json(struct flowd *d);

/* scheduler.c */
/* Ticks this node fired as leader (changes when the statistics do). */
uint64_t scheduler_ticks_fired(struct flowd *d);
int scheduler_new(struct flowd *d);
void scheduler_close(struct flowd *d);
void scheduler_hook_changed(void *arg, struct fsm_flow *fl);
/* {"schedules", "ticks_fired", "fire_lag_ms": {samples, p50, p99, max}}:
 * the ticks this node fired as leader, commit minus nominal time, over the
 * last 65,536 (GET /v1/cluster "scheduler"). */
json_t *scheduler_stats_json(struct flowd *d);
/* Recompute every schedule (after a restore, on becoming leader). */
void scheduler_rebuild(struct flowd *d);

/* tasks.c */
void tasks_hook_placed(void *arg, struct fsm_run *run, struct fsm_step *step,
		       struct fsm_attempt *a);
void tasks_hook_stop(void *arg, struct fsm_run *run, struct fsm_step *step,
		     struct fsm_attempt *a);
void tasks_flush_records(struct flowd *d);
void tasks_exec_done(struct executor *e, void *ctx,
		     const struct executor_result *res);
void tasks_after_apply_cb(uv_idle_t *h);
void tasks_wake_cb(uv_timer_t *h);
void tasks_finish_timer_cb(uv_timer_t *h);
void tasks_leader_timer_cb(uv_timer_t *h);
void tasks_role_cb(void *arg, enum consensus_role role, uint64_t leader);
void tasks_kick(struct flowd *d);
void tasks_clear(struct flowd *d);
void tasks_db_progress_cb(uv_async_t *h);
void tasks_hook_node_heard(void *arg, uint64_t node);
void tasks_alive_timer_cb(uv_timer_t *h);

#endif
