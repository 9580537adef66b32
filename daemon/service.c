/* service.c - the API's backend on the loop thread: writes as proposals
 * through consensus, consistent reads, membership changes, and the internal
 * commands other nodes send their leader.
 *
 * DESIGN
 *
 * An HTTP thread calls service_submit_cb(), which queues the request and
 * wakes the loop (wake.h; wake-ups coalesce); the loop takes at most
 * 256 of them per iteration, so Raft's I/O and timers run in between. Plain
 * reads never come here: the api answers them from the read view. A write
 * is checked against the state first (unknown flow, bad parameters, a
 * finished run: answered without touching the log, so a bad request
 * changes nothing), then encoded and proposed; the answer comes from the
 * view published after its entry applied (readview.c). A consistent read
 * passes a barrier first. No leader, a closing node or a PostgreSQL backlog
 * past the limit answer 503 with Retry-After; a proposal past
 * raft.apply_timeout_ms answers 504 (its outcome is unknown: a retry with
 * the same idempotency key is safe). A follower hands writes and consistent
 * reads, unchanged, to the leader (forward.c), the road its own commands
 * take too.
 *
 * Thread: service_submit_cb on HTTP threads; everything else on the loop.
 */
#include "daemon/service.h"
#include "daemon/wake.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/random.h>

#include "core/log.h"
#include "core/view.h"

struct service {
	const struct flowd_config *cfg;
	struct fsm *fsm;
	struct consensus *raft;
	struct forward *fwd;
	struct readview *rv;
	struct storage_applier *applier;
	struct flowd_clock clock;
	enum consensus_role role;
	bool stopping;

	/* HTTP threads -> loop: requests to answer. */
	pthread_mutex_t inbox_lock;
	struct api_request **inbox;
	size_t inbox_n, inbox_cap;
	struct wake inbox_wake;
	struct api_request **work;      /* taken from the inbox, loop only */
	size_t work_head, work_n;
};

/* A follower hands a client's request to the leader right from the HTTP
 * thread when its newest view names one (everything a follower is asked
 * here goes to the leader: writes and consistent reads); otherwise the loop
 * decides (no leader known: 503). */
static bool forward_now(struct service *s, struct api_request *req)
{
	struct view_guard g;
	const struct view *v;
	char leader[64] = "";

	if (req->forwarded)
		return false;
	v = view_acquire(readview_store(s->rv), &g);
	if (v == NULL)
		return false;
	if (!view_cluster_of(v)->stopping)
		snprintf(leader, sizeof leader, "%s", view_cluster_of(v)->leader_api);
	view_release(&g);
	return leader[0] != '\0' && forward_request_any(s->fwd, req, leader) == 0;
}

void service_submit_cb(void *arg, struct api_request *req)
{
	struct service *s = arg;

	if (forward_now(s, req))
		return;
	pthread_mutex_lock(&s->inbox_lock);
	if (s->inbox_n == s->inbox_cap) {
		size_t cap = s->inbox_cap ? s->inbox_cap * 2 : 64;
		struct api_request **q = realloc(s->inbox, cap * sizeof *q);
		if (q == NULL) {
			pthread_mutex_unlock(&s->inbox_lock);
			struct flowd_error e;
			flowd_error_set(&e, 503, "unavailable", NULL,
					"out of memory");
			api_request_reply_error(req, &e);
			api_request_finish(req);
			return;
		}
		s->inbox = q;
		s->inbox_cap = cap;
	}
	s->inbox[s->inbox_n++] = req;
	pthread_mutex_unlock(&s->inbox_lock);
	wake_send(&s->inbox_wake); /* coalesced */
}

/* The commands' ts. */
static int64_t now_ms(const struct service *s)
{
	return flowd_clock_now(&s->clock);
}

static void reply_error(struct api_request *req, int status, const char *code,
			const char *field, const char *msg)
{
	struct flowd_error e;

	flowd_error_set(&e, status, code, field, "%s", msg);
	api_request_reply_error(req, &e);
	api_request_finish(req);
}

static void reply_json(struct api_request *req, int status, json_t *body)
{
	api_request_reply_json(req, status, body);
	api_request_finish(req);
}

/* Answer with the run `run_id` as the next published view shows it (or,
 * if it left memory, as PostgreSQL has it). */
static void answer_run(struct service *s, struct api_request *req, int status,
		       const char *run_id)
{
	if (req->run_id == NULL || strcmp(req->run_id, run_id) != 0) {
		free(req->run_id);
		req->run_id = strdup(run_id);
		if (req->run_id == NULL) {
			reply_error(req, 500, "internal", NULL, "out of memory");
			return;
		}
	}
	req->status = status;
	readview_answer(s->rv, req);
}

/* ------------------------------------------------------------------------
 * Writes
 */

static json_t *backfill_answer(struct api_request *req);

static void proposal_done_cb(void *arg, int status, uint64_t index,
			     void *result)
{
	struct api_request *req = arg;
	struct service *s = req->backend_data;
	struct fsm_result *res = result;

	switch (status) {
	case CONSENSUS_OK:
		break;
	case CONSENSUS_TIMEOUT:
		reply_error(req, 504, "timeout", NULL,
			    "the change was not committed in time; its outcome "
			    "is unknown: retry with the same idempotency key");
		return;
	case CONSENSUS_LEADERSHIP_LOST:
		reply_error(req, 503, "unavailable", NULL,
			    "leadership was lost; the outcome is unknown: retry "
			    "with the same idempotency key");
		return;
	case CONSENSUS_IO:
		reply_error(req, 503, "unavailable", NULL, "raft disk error");
		log_error("service: raft disk error, exiting");
		exit(70);
	default:
		reply_error(req, 503, "unavailable", NULL,
			    "the node is shutting down");
		return;
	}
	if (res == NULL) {
		reply_error(req, 500, "internal", NULL, "no result");
		return;
	}
	if (res->status >= 400) {
		api_request_reply_error(req, &res->err);
		api_request_finish(req);
		return;
	}
	switch (req->op) {
	case API_OP_FLOW_PUT:
	case API_OP_FLOW_DELETE:
		req->created = res->created;
		req->status = req->op == API_OP_FLOW_PUT ? res->status : 200;
		readview_answer(s->rv, req);
		break;
	case API_OP_EVENT_POST:
	case API_OP_FLOW_PAUSE:
	case API_OP_FLOW_UNPAUSE:
		/* answered once the view holds the runs it made */
		if (res->body == NULL) {
			reply_error(req, 500, "internal", NULL, "no result");
			break;
		}
		api_request_reply_json(req, res->status, json_incref(res->body));
		readview_finish(s->rv, req);
		break;
	case API_OP_BACKFILL:
		api_request_reply_json(req, 200, backfill_answer(req));
		readview_finish(s->rv, req);
		break;
	case API_OP_RUN_CREATE:
	case API_OP_RUN_CANCEL:
		if (res->run != NULL)
			answer_run(s, req, res->status, res->run->id);
		else if (res->run_id != NULL)
			answer_run(s, req, res->status, res->run_id);
		else
			reply_error(req, 500, "internal", NULL, "no run");
		break;
	default:
		api_request_reply_json(req, res->status, json_object());
		readview_finish(s->rv, req);
		break;
	}
}

static void propose(struct service *s, struct api_request *req, char *buf,
		    size_t len)
{
	int rv;

	req->backend_data = s;
	rv = consensus_propose(s->raft, buf, len, s->cfg->apply_timeout_ms,
				   proposal_done_cb, req);

	if (rv == CONSENSUS_OK)
		return;
	if (rv == CONSENSUS_NOT_LEADER)
		reply_error(req, 503, "unavailable", NULL,
			    "no leader right now; retry");
	else
		reply_error(req, 503, "unavailable", NULL,
			    "the node cannot accept writes now");
}

/* A write is accepted only by a leader that is ready and not overloaded;
 * a follower forwards it. */
static bool write_admissible(struct service *s, struct api_request *req)
{
	if (s->stopping) {
		reply_error(req, 503, "unavailable", NULL,
			    "the node is shutting down");
		return false;
	}
	if (s->role != CONSENSUS_LEADER) {
		forward_request_send(s->fwd, req);
		return false;
	}
	if (s->applier != NULL &&
	    storage_applier_backlog(s->applier) > s->cfg->db_max_backlog) {
		reply_error(req, 503, "unavailable", NULL,
			    "PostgreSQL is behind by more than "
			    "database.max_backlog entries");
		return false;
	}
	return true;
}

static void do_flow_put(struct service *s, struct api_request *req)
{
	char *buf;
	size_t len;

	if (fsm_cmd_deploy(now_ms(s), req->flow, req->spec->doc, &buf,
			   &len) != 0) {
		reply_error(req, 500, "internal", NULL, "cannot encode");
		return;
	}
	propose(s, req, buf, len);
}

static void do_flow_delete(struct service *s, struct api_request *req)
{
	char *buf;
	size_t len;

	if (fsm_flow_get(s->fsm, req->flow) == NULL) {
		reply_error(req, 404, "not_found", "flow", "no such flow");
		return;
	}
	if (fsm_cmd_undeploy(now_ms(s), req->flow, &buf, &len) != 0) {
		reply_error(req, 500, "internal", NULL, "cannot encode");
		return;
	}
	propose(s, req, buf, len);
}

static void do_run_create(struct service *s, struct api_request *req)
{
	struct fsm_flow *fl = fsm_flow_get(s->fsm, req->flow);
	struct flowd_error err;
	json_t *resolved = NULL;
	char *buf;
	size_t len;

	if (fl == NULL) {
		reply_error(req, 404, "not_found", "flow", "no such flow");
		return;
	}
	/* A known idempotency key answers without a proposal. */
	if (req->idempotency_key != NULL) {
		struct fsm_run *r;
		const char *id = fsm_idem_lookup_at(s->fsm, req->flow,
						    req->idempotency_key,
						    now_ms(s), &r);
		if (id != NULL) {
			answer_run(s, req, 200, id);
			return;
		}
	}
	if (fl->current == 0) {
		reply_error(req, 409, "flow_undeployed", "flow",
			    "the flow is not deployed");
		return;
	}
	if (spec_params_resolve(fl->versions[fl->current - 1].spec, req->params,
				&s->cfg->limits, &resolved, &err) != 0) {
		api_request_reply_error(req, &err);
		api_request_finish(req);
		return;
	}
	json_decref(resolved);
	struct fsm_retention keep = {
		.runs = s->cfg->limits.runs_in_memory,
		.keys = s->cfg->limits.idempotency_keys,
		.key_ttl_s = s->cfg->limits.idempotency_ttl_s,
	};
	if (fsm_cmd_run_create(now_ms(s), req->flow, req->params,
			       req->idempotency_key, &keep, &buf, &len) != 0) {
		reply_error(req, 500, "internal", NULL, "cannot encode");
		return;
	}
	propose(s, req, buf, len);
}

static void do_run_cancel(struct service *s, struct api_request *req)
{
	struct fsm_run *r = fsm_run_get(s->fsm, req->run_id);
	char *buf;
	size_t len;

	if (r == NULL && fsm_run_evicted(s->fsm, req->run_id)) {
		reply_error(req, 409, "run_finished", "run",
			    "the run has already finished");
		return;
	}
	if (r == NULL) {
		reply_error(req, 404, "not_found", "run", "no such run");
		return;
	}
	if (r->status >= FSM_RUN_SUCCEEDED) {
		reply_error(req, 409, "run_finished", "run",
			    "the run has already finished");
		return;
	}
	if (fsm_cmd_run_cancel(now_ms(s), req->run_id, &buf, &len) != 0) {
		reply_error(req, 500, "internal", NULL, "cannot encode");
		return;
	}
	propose(s, req, buf, len);
}

/* ------------------------------------------------------------------------
 * Reads
 */

/* ------------------------------------------------------------------------
 * Triggers
 */

static struct fsm_flow *deployed_flow(struct service *s, struct api_request *req)
{
	struct fsm_flow *fl = fsm_flow_get(s->fsm, req->flow);

	if (fl == NULL || fl->current == 0) {
		reply_error(req, 404, "not_found", "flow", "no such flow");
		return NULL;
	}
	return fl;
}

static void do_event_post(struct service *s, struct api_request *req)
{
	const struct flowd_limits *lim = &s->cfg->limits;
	char id[40];
	char *buf;
	size_t len;

	if (req->event_id == NULL) {
		/* No id from the client: this event is new by definition. */
		uint64_t a = 0, b = 0;

		if (getrandom(&a, sizeof a, 0) != sizeof a ||
		    getrandom(&b, sizeof b, 0) != sizeof b) {
			reply_error(req, 503, "unavailable", NULL,
				    "no randomness for an event id");
			return;
		}
		snprintf(id, sizeof id, "e-%016" PRIx64 "%016" PRIx64, a, b);
		req->event_id = strdup(id);
		if (req->event_id == NULL) {
			reply_error(req, 500, "internal", NULL, "out of memory");
			return;
		}
	}
	if (fsm_cmd_event(now_ms(s), req->event_name, req->event_id,
			  req->payload, lim->event_dedupe_s,
			  lim->events_in_memory, lim->max_buffered_runs, &buf,
			  &len) != 0) {
		reply_error(req, 500, "internal", NULL, "cannot encode");
		return;
	}
	propose(s, req, buf, len);
}

static void do_pause(struct service *s, struct api_request *req, bool paused)
{
	char *buf;
	size_t len;

	if (deployed_flow(s, req) == NULL)
		return;
	if (fsm_cmd_pause(now_ms(s), req->flow, paused, &buf, &len) != 0) {
		reply_error(req, 500, "internal", NULL, "cannot encode");
		return;
	}
	propose(s, req, buf, len);
}

static void do_backfill(struct service *s, struct api_request *req)
{
	struct fsm_flow *fl = deployed_flow(s, req);
	const struct flow_spec *spec;
	unsigned max = s->cfg->limits.max_backfill_runs;
	json_t *items;
	size_t n = 0;
	char *buf;
	size_t len;

	if (fl == NULL)
		return;
	spec = fl->versions[fl->current - 1].spec;
	if (req->bf_schedule >= 0 && (size_t)req->bf_schedule >= spec->n_schedules) {
		reply_error(req, 400, "invalid_value", "schedule",
			    "the flow has no such schedule");
		return;
	}
	if (spec->n_schedules == 0) {
		reply_error(req, 400, "invalid_value", "flow",
			    "the flow has no schedules");
		return;
	}
	items = json_array();
	for (size_t i = 0; i < spec->n_schedules; i++) {
		const struct spec_schedule *sc = &spec->schedules[i];
		int64_t t = req->bf_from - 1, next;

		if (req->bf_schedule >= 0 && (size_t)req->bf_schedule != i)
			continue;
		while (cron_next(&sc->cron, sc->tz, sc->dst_missing,
				 sc->dst_repeated, t, &next) &&
		       next <= req->bf_to) {
			if (++n > max) {
				json_decref(items);
				reply_error(req, 400, "invalid_value", "to",
					    "the range holds more ticks than "
					    "limits.max_backfill_runs allows");
				return;
			}
			json_array_append_new(
				items, json_pack("{s:s, s:i, s:s, s:I, s:b}", "flow",
						 fl->name, "schedule", (int)i,
						 "key", fl->sched[i].key,
						 "nominal", (json_int_t)next,
						 "backfill", 1));
			t = next;
		}
	}
	req->bf_items = items; /* read back by backfill_answer */
	req->backend_data = s;
	if (fsm_cmd_fire(now_ms(s), items, s->cfg->limits.max_buffered_runs,
			 &buf, &len) != 0) {
		reply_error(req, 500, "internal", NULL, "cannot encode");
		return;
	}
	propose(s, req, buf, len);
}

/* After the backfill's entry applied: which run each tick has. */
static json_t *backfill_answer(struct api_request *req)
{
	struct service *s = req->backend_data;
	json_t *it, *runs = json_array();
	size_t i;

	json_array_foreach(req->bf_items, i, it) {
		char key[64];
		struct fsm_run *r;
		const char *id;
		int64_t nominal = json_integer_value(json_object_get(it, "nominal"));
		int sched = (int)json_integer_value(json_object_get(it, "schedule"));

		fsm_backfill_key(json_string_value(json_object_get(it, "key")),
				 nominal, key);
		id = fsm_idem_lookup(s->fsm, req->flow, key, &r);
		json_array_append_new(
			runs, json_pack("{s:i, s:o, s:o}", "schedule", sched,
					"nominal_time", fsm_time_json(nominal * 1000),
					"run_id", id ? json_string(id) : json_null()));
	}
	return json_pack("{s:s, s:I, s:o}", "flow", req->flow, "ticks",
			 (json_int_t)json_array_size(runs), "runs", runs);
}

static void ignore_done_cb(void *arg, int status, uint64_t index,
			   void *result)
{
}

static void member_done_cb(void *arg, int status, uint64_t index,
			   void *result)
{
	struct api_request *req = arg;
	struct service *s = req->backend_data;

	if (status == CONSENSUS_OK && (req->op == API_OP_MEMBER_REMOVE ||
				       req->op == API_OP_MEMBER_ADD)) {
		/* A removed node takes no more work (what it ran is retried
		 * elsewhere); an added one may register again. */
		char *buf;
		size_t len;
		if (fsm_cmd_node_remove(now_ms(s), req->member_id,
					req->op == API_OP_MEMBER_ADD, &buf,
					&len) == 0)
			consensus_propose(s->raft, buf, len,
					  s->cfg->apply_timeout_ms,
					  ignore_done_cb, NULL);
	}
	switch (status) {
	case CONSENSUS_OK:
		if (req->op == API_OP_LEADER_TRANSFER)
			reply_json(req, 200,
				   json_pack("{s:I}", "leader",
					     (json_int_t)consensus_leader(s->raft)));
		else
			reply_json(req, 200,
				   json_pack("{s:o}", "members",
					     readview_members_json(s->rv)));
		return;
	case CONSENSUS_CANTCHANGE:
		reply_error(req, 409, "membership_change_in_progress", NULL,
			    "another membership change is in progress; retry");
		return;
	case CONSENSUS_TIMEOUT:
		reply_error(req, 504, "timeout", NULL,
			    "the change did not complete in time; it may still "
			    "complete: check GET /v1/cluster");
		return;
	case CONSENSUS_ERROR:
		reply_error(req, 400, "invalid_value", "id",
			    consensus_errmsg(s->raft));
		return;
	default:
		reply_error(req, 503, "unavailable", NULL,
			    "not the leader right now, or shutting down; retry");
		return;
	}
}

static void do_member_change(struct service *s, struct api_request *req)
{
	int rv;

	req->backend_data = s;
	if (req->op == API_OP_MEMBER_ADD)
		rv = consensus_member_add(s->raft, req->member_id,
					  req->member_raft, 60000,
					  member_done_cb, req);
	else if (req->op == API_OP_MEMBER_REMOVE)
		rv = consensus_member_remove(s->raft, req->member_id,
					     s->cfg->apply_timeout_ms,
					     member_done_cb, req);
	else
		rv = consensus_transfer(s->raft, req->member_id,
					member_done_cb, req);
	if (rv != CONSENSUS_OK)
		member_done_cb(req, rv, 0, NULL);
}

static void internal_done_cb(void *arg, int status, uint64_t index,
			     void *result)
{
	struct api_request *req = arg;
	struct fsm_result *res = result;

	if (status != CONSENSUS_OK) {
		reply_error(req, 503, "unavailable", NULL,
			    "the command was not committed; retry");
		return;
	}
	reply_json(req, 200,
		   json_pack("{s:I, s:i}", "index", (json_int_t)index,
			     "result", res ? res->status : 0));
}

/* POST /internal/v1/commands: a node proposes a command (its registration,
 * a task's outcome) through the leader. */
static void do_internal_command(struct service *s, struct api_request *req)
{
	char *buf = malloc(req->raw_body_len + 1);
	int rv;

	if (buf == NULL) {
		reply_error(req, 500, "internal", NULL, "out of memory");
		return;
	}
	memcpy(buf, req->raw_body, req->raw_body_len);
	rv = consensus_propose(s->raft, buf, req->raw_body_len,
			       s->cfg->apply_timeout_ms, internal_done_cb, req);
	if (rv != CONSENSUS_OK)
		reply_error(req, 503, "unavailable", NULL,
			    "not the leader right now; retry");
}

static void barrier_done_cb(void *arg, int status, uint64_t index,
			    void *result)
{
	struct api_request *req = arg;

	if (status != CONSENSUS_OK) {
		reply_error(req, 503, "unavailable", NULL,
			    "leadership changed; retry");
		return;
	}
	struct service *s = req->backend_data;

	readview_answer(s->rv, req);
}

/* ?consistent=true: a read that sees every write acknowledged before it.
 * The leader passes a barrier (every entry of earlier terms applied, and
 * it still leads), then answers from the view published after it; a
 * follower hands the read to the leader. */
static void consistent_read(struct service *s, struct api_request *req)
{
	int rv;

	if (s->role != CONSENSUS_LEADER) {
		forward_request_send(s->fwd, req);
		return;
	}
	if (s->raft == NULL) {
		reply_error(req, 503, "unavailable", NULL,
			    "the node is shutting down");
		return;
	}
	req->backend_data = s;
	rv = consensus_barrier(s->raft, barrier_done_cb, req);
	if (rv != CONSENSUS_OK)
		reply_error(req, 503, "unavailable", NULL,
			    "not the leader right now; retry");
}

static void handle(struct service *s, struct api_request *req)
{

	switch (req->op) {
	case API_OP_FLOW_PUT:
		if (write_admissible(s, req))
			do_flow_put(s, req);
		break;
	case API_OP_FLOW_DELETE:
		if (write_admissible(s, req))
			do_flow_delete(s, req);
		break;
	case API_OP_RUN_CREATE:
		if (write_admissible(s, req))
			do_run_create(s, req);
		break;
	case API_OP_RUN_CANCEL:
		if (write_admissible(s, req))
			do_run_cancel(s, req);
		break;
	case API_OP_INTERNAL_COMMAND:
		if (write_admissible(s, req))
			do_internal_command(s, req);
		break;
	case API_OP_MEMBER_ADD:
	case API_OP_MEMBER_REMOVE:
	case API_OP_LEADER_TRANSFER:
		if (write_admissible(s, req))
			do_member_change(s, req);
		break;
	case API_OP_EVENT_POST:
		if (write_admissible(s, req))
			do_event_post(s, req);
		break;
	case API_OP_FLOW_PAUSE:
	case API_OP_FLOW_UNPAUSE:
		if (write_admissible(s, req))
			do_pause(s, req, req->op == API_OP_FLOW_PAUSE);
		break;
	case API_OP_BACKFILL:
		if (write_admissible(s, req))
			do_backfill(s, req);
		break;
	case API_OP_SCHEDULE_GET:
	case API_OP_FLOW_LIST:
	case API_OP_FLOW_GET:
	case API_OP_FLOW_VERSIONS:
	case API_OP_RUN_GET:
	case API_OP_RUN_LIST:
		consistent_read(s, req);
		break;
	default:
		reply_error(req, 404, "not_found", NULL, "no such route");
		break;
	}
}

/* Requests taken from the inbox per loop iteration: the rest wait for the
 * next one, so that Raft's I/O and timers run in between however fast
 * requests arrive. */
#define INBOX_PER_ITERATION 256

static void inbox_cb(struct wake *w)
{
	struct service *s = w->poll.data;
	size_t n = 0;

	if (s->work_head == s->work_n) {
		/* take everything queued so far, in one swap */
		free(s->work);
		pthread_mutex_lock(&s->inbox_lock);
		s->work = s->inbox;
		s->work_n = s->inbox_n;
		s->inbox = NULL;
		s->inbox_n = s->inbox_cap = 0;
		pthread_mutex_unlock(&s->inbox_lock);
		s->work_head = 0;
	}
	while (s->work_head < s->work_n && n++ < INBOX_PER_ITERATION)
		handle(s, s->work[s->work_head++]);
	if (s->work_head < s->work_n)
		wake_send(&s->inbox_wake); /* the rest next iteration */
}

void service_fail_all(struct service *s, int status, const char *code,
		      const char *msg)
{
	pthread_mutex_lock(&s->inbox_lock);
	struct api_request **batch = s->inbox;
	size_t n = s->inbox_n;
	s->inbox = NULL;
	s->inbox_n = s->inbox_cap = 0;
	pthread_mutex_unlock(&s->inbox_lock);
	while (s->work_head < s->work_n)
		reply_error(s->work[s->work_head++], status, code, NULL, msg);
	for (size_t i = 0; i < n; i++)
		reply_error(batch[i], status, code, NULL, msg);
	free(batch);
	readview_flush(s->rv);
}

/* ------------------------------------------------------------------------
 * Life cycle
 */

struct service *service_new(const struct service_config *c)
{
	struct service *s = calloc(1, sizeof *s);

	if (s == NULL)
		return NULL;
	s->cfg = c->cfg;
	s->fsm = c->fsm;
	s->raft = c->raft;
	s->fwd = c->fwd;
	s->rv = c->rv;
	s->applier = c->applier;
	s->clock = c->clock;
	pthread_mutex_init(&s->inbox_lock, NULL);
	if (wake_init(c->loop, &s->inbox_wake, inbox_cb) != 0) {
		free(s);
		return NULL;
	}
	s->inbox_wake.poll.data = s;
	return s;
}

void service_role_set(struct service *s, enum consensus_role role)
{
	s->role = role;
}

void service_stop(struct service *s)
{
	s->stopping = true;
}

void service_detach(struct service *s)
{
	s->raft = NULL;
}

static void closed_cb(uv_handle_t *h)
{
	struct service *s = h->data;

	pthread_mutex_destroy(&s->inbox_lock);
	free(s->inbox);
	free(s->work);
	free(s);
}

void service_close(struct service *s)
{
	wake_close(&s->inbox_wake, closed_cb);
}
