/* service.c - answers API requests on the loop thread: reads from the state
 * machine, writes as proposals through consensus.
 *
 * DESIGN
 *
 * An HTTP thread calls service_submit_cb(), which queues the request and
 * wakes the loop (uv_async_send coalesces wake-ups, so the callback drains
 * the whole queue). Reads are answered at once from the in-memory state.
 * A write is checked against the state first (unknown flow, bad parameters,
 * a finished run: answered without touching the log, so a bad request
 * changes nothing), then encoded and proposed; the answer is built in the
 * commit callback from the state as it was right after that entry applied.
 * No leader, a closing node or a PostgreSQL backlog past the limit answer
 * 503 with Retry-After; a proposal past raft.apply_timeout_ms answers 504
 * (its outcome is unknown: a retry with the same idempotency key is safe).
 *
 * Thread: service_submit_cb on HTTP threads; everything else on the loop.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/random.h>

#include "core/log.h"
#include "daemon/daemon.h"

void service_submit_cb(void *arg, struct api_request *req)
{
	struct flowd *d = arg;

	pthread_mutex_lock(&d->inbox_lock);
	if (d->inbox_n == d->inbox_cap) {
		size_t cap = d->inbox_cap ? d->inbox_cap * 2 : 64;
		struct api_request **q = realloc(d->inbox, cap * sizeof *q);
		if (q == NULL) {
			pthread_mutex_unlock(&d->inbox_lock);
			struct flowd_error e;
			flowd_error_set(&e, 503, "unavailable", NULL,
					"out of memory");
			api_request_reply_error(req, &e);
			api_request_finish(req);
			return;
		}
		d->inbox = q;
		d->inbox_cap = cap;
	}
	d->inbox[d->inbox_n++] = req;
	pthread_mutex_unlock(&d->inbox_lock);
	uv_async_send(&d->inbox_async); /* coalesced by libuv */
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
static void answer_run(struct flowd *d, struct api_request *req, int status,
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
	readview_answer(d, req);
}

/* ------------------------------------------------------------------------
 * Writes
 */

static json_t *backfill_answer(struct api_request *req);

static void proposal_done_cb(void *arg, int status, uint64_t index,
			     void *result)
{
	struct api_request *req = arg;
	struct flowd *d = req->backend_data;
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
		readview_answer(d, req);
		break;
	case API_OP_EVENT_POST:
	case API_OP_FLOW_PAUSE:
	case API_OP_FLOW_UNPAUSE:
		if (res->body == NULL)
			reply_error(req, 500, "internal", NULL, "no result");
		else
			reply_json(req, res->status, json_incref(res->body));
		break;
	case API_OP_BACKFILL:
		reply_json(req, 200, backfill_answer(req));
		break;
	case API_OP_RUN_CREATE:
	case API_OP_RUN_CANCEL:
		if (res->run != NULL)
			answer_run(d, req, res->status, res->run->id);
		else if (res->run_id != NULL)
			answer_run(d, req, res->status, res->run_id);
		else
			reply_error(req, 500, "internal", NULL, "no run");
		break;
	default:
		reply_json(req, res->status, json_object());
		break;
	}
}

static void propose(struct flowd *d, struct api_request *req, char *buf,
		    size_t len)
{
	int rv;

	req->backend_data = d;
	rv = consensus_propose(d->raft, buf, len, d->cfg->apply_timeout_ms,
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

/* ------------------------------------------------------------------------
 * Forwarding to the leader
 */

const char *service_leader_api(struct flowd *d)
{
	uint64_t leader = consensus_leader(d->raft);

	if (leader == 0 || leader == d->cfg->node_id)
		return NULL;
	/* Nodes announce their API address when they register (node_up), so
	 * members added after the start are found too. */
	for (unsigned i = 0; i < d->fsm.n_nodes; i++)
		if (d->fsm.nodes[i].id == leader &&
		    d->fsm.nodes[i].api_address[0] != '\0')
			return d->fsm.nodes[i].api_address;
	for (unsigned i = 0; i < d->cfg->n_peers; i++)
		if (d->cfg->peers[i].id == leader)
			return d->cfg->peers[i].api_address;
	return NULL;
}

static void forward_done_cb(void *arg, const struct peer_result *res)
{
	struct api_request *req = arg;

	if (res->status == 0) {
		reply_error(req, 503, "unavailable", NULL,
			    "the leader could not be reached; retry");
		return;
	}
	req->retry_after = res->retry_after;
	api_request_reply_text(req, res->status, res->body, res->body_len);
	api_request_finish(req);
}

/* A follower hands the request, unchanged, to the leader and relays the
 * answer; the client never needs to know who leads. A request that was
 * already forwarded is not forwarded again (no loops while an election
 * settles). */
static void forward(struct flowd *d, struct api_request *req)
{
	const char *leader = service_leader_api(d);
	struct peer_request pr = {0};

	if (req->forwarded || leader == NULL || d->peer == NULL) {
		reply_error(req, 503, "unavailable", NULL,
			    "no leader is known right now; retry");
		return;
	}
	pr.address = leader;
	pr.method = req->method;
	pr.target = req->target;
	pr.authorization = req->authorization;
	pr.content_type = req->content_type;
	pr.body = req->raw_body;
	pr.body_len = req->raw_body_len;
	pr.forwarded = 1;
	if (peer_send(d->peer, &pr, forward_done_cb, req) != 0)
		reply_error(req, 503, "unavailable", NULL,
			    "the node is shutting down");
}

/* A write is accepted only by a leader that is ready and not overloaded;
 * a follower forwards it. */
static bool write_admissible(struct flowd *d, struct api_request *req)
{
	if (d->stopping) {
		reply_error(req, 503, "unavailable", NULL,
			    "the node is shutting down");
		return false;
	}
	if (d->role != CONSENSUS_LEADER) {
		forward(d, req);
		return false;
	}
	if (d->applier != NULL &&
	    storage_applier_backlog(d->applier) > d->cfg->db_max_backlog) {
		reply_error(req, 503, "unavailable", NULL,
			    "PostgreSQL is behind by more than "
			    "database.max_backlog entries");
		return false;
	}
	return true;
}

static void do_flow_put(struct flowd *d, struct api_request *req)
{
	char *buf;
	size_t len;

	if (fsm_cmd_deploy(flowd_now_ms(), req->flow, req->spec->doc, &buf,
			   &len) != 0) {
		reply_error(req, 500, "internal", NULL, "cannot encode");
		return;
	}
	propose(d, req, buf, len);
}

static void do_flow_delete(struct flowd *d, struct api_request *req)
{
	char *buf;
	size_t len;

	if (fsm_flow_get(&d->fsm, req->flow) == NULL) {
		reply_error(req, 404, "not_found", "flow", "no such flow");
		return;
	}
	if (fsm_cmd_undeploy(flowd_now_ms(), req->flow, &buf, &len) != 0) {
		reply_error(req, 500, "internal", NULL, "cannot encode");
		return;
	}
	propose(d, req, buf, len);
}

static void do_run_create(struct flowd *d, struct api_request *req)
{
	struct fsm_flow *fl = fsm_flow_get(&d->fsm, req->flow);
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
		const char *id = fsm_idem_lookup_at(&d->fsm, req->flow,
						    req->idempotency_key,
						    flowd_now_ms(), &r);
		if (id != NULL) {
			answer_run(d, req, 200, id);
			return;
		}
	}
	if (fl->current == 0) {
		reply_error(req, 409, "flow_undeployed", "flow",
			    "the flow is not deployed");
		return;
	}
	if (spec_params_resolve(fl->versions[fl->current - 1].spec, req->params,
				&d->cfg->limits, &resolved, &err) != 0) {
		api_request_reply_error(req, &err);
		api_request_finish(req);
		return;
	}
	json_decref(resolved);
	struct fsm_retention keep = {
		.runs = d->cfg->limits.runs_in_memory,
		.keys = d->cfg->limits.idempotency_keys,
		.key_ttl_s = d->cfg->limits.idempotency_ttl_s,
	};
	if (fsm_cmd_run_create(flowd_now_ms(), req->flow, req->params,
			       req->idempotency_key, &keep, &buf, &len) != 0) {
		reply_error(req, 500, "internal", NULL, "cannot encode");
		return;
	}
	propose(d, req, buf, len);
}

static void do_run_cancel(struct flowd *d, struct api_request *req)
{
	struct fsm_run *r = fsm_run_get(&d->fsm, req->run_id);
	char *buf;
	size_t len;

	if (r == NULL && fsm_run_evicted(&d->fsm, req->run_id)) {
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
	if (fsm_cmd_run_cancel(flowd_now_ms(), req->run_id, &buf, &len) != 0) {
		reply_error(req, 500, "internal", NULL, "cannot encode");
		return;
	}
	propose(d, req, buf, len);
}

/* ------------------------------------------------------------------------
 * Reads
 */

/* ------------------------------------------------------------------------
 * Triggers
 */

static struct fsm_flow *deployed_flow(struct flowd *d, struct api_request *req)
{
	struct fsm_flow *fl = fsm_flow_get(&d->fsm, req->flow);

	if (fl == NULL || fl->current == 0) {
		reply_error(req, 404, "not_found", "flow", "no such flow");
		return NULL;
	}
	return fl;
}

static void do_event_post(struct flowd *d, struct api_request *req)
{
	const struct flowd_limits *lim = &d->cfg->limits;
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
	if (fsm_cmd_event(flowd_now_ms(), req->event_name, req->event_id,
			  req->payload, lim->event_dedupe_s,
			  lim->events_in_memory, lim->max_buffered_runs, &buf,
			  &len) != 0) {
		reply_error(req, 500, "internal", NULL, "cannot encode");
		return;
	}
	propose(d, req, buf, len);
}

static void do_pause(struct flowd *d, struct api_request *req, bool paused)
{
	char *buf;
	size_t len;

	if (deployed_flow(d, req) == NULL)
		return;
	if (fsm_cmd_pause(flowd_now_ms(), req->flow, paused, &buf, &len) != 0) {
		reply_error(req, 500, "internal", NULL, "cannot encode");
		return;
	}
	propose(d, req, buf, len);
}

static void do_backfill(struct flowd *d, struct api_request *req)
{
	struct fsm_flow *fl = deployed_flow(d, req);
	const struct flow_spec *spec;
	unsigned max = d->cfg->limits.max_backfill_runs;
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
	req->backend_data = d;
	if (fsm_cmd_fire(flowd_now_ms(), items, d->cfg->limits.max_buffered_runs,
			 &buf, &len) != 0) {
		reply_error(req, 500, "internal", NULL, "cannot encode");
		return;
	}
	propose(d, req, buf, len);
}

/* After the backfill's entry applied: which run each tick has. */
static json_t *backfill_answer(struct api_request *req)
{
	struct flowd *d = req->backend_data;
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
		id = fsm_idem_lookup(&d->fsm, req->flow, key, &r);
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
	struct flowd *d = req->backend_data;

	if (status == CONSENSUS_OK && (req->op == API_OP_MEMBER_REMOVE ||
				       req->op == API_OP_MEMBER_ADD)) {
		/* A removed node takes no more work (what it ran is retried
		 * elsewhere); an added one may register again. */
		char *buf;
		size_t len;
		if (fsm_cmd_node_remove(flowd_now_ms(), req->member_id,
					req->op == API_OP_MEMBER_ADD, &buf,
					&len) == 0)
			consensus_propose(d->raft, buf, len,
					  d->cfg->apply_timeout_ms,
					  ignore_done_cb, NULL);
	}
	switch (status) {
	case CONSENSUS_OK:
		if (req->op == API_OP_LEADER_TRANSFER)
			reply_json(req, 200,
				   json_pack("{s:I}", "leader",
					     (json_int_t)consensus_leader(d->raft)));
		else
			reply_json(req, 200, json_pack("{s:o}", "members",
						       readview_members_json(d)));
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
			    consensus_errmsg(d->raft));
		return;
	default:
		reply_error(req, 503, "unavailable", NULL,
			    "not the leader right now, or shutting down; retry");
		return;
	}
}

static void do_member_change(struct flowd *d, struct api_request *req)
{
	int rv;

	req->backend_data = d;
	if (req->op == API_OP_MEMBER_ADD)
		rv = consensus_member_add(d->raft, req->member_id,
					  req->member_raft, 60000,
					  member_done_cb, req);
	else if (req->op == API_OP_MEMBER_REMOVE)
		rv = consensus_member_remove(d->raft, req->member_id,
					     d->cfg->apply_timeout_ms,
					     member_done_cb, req);
	else
		rv = consensus_transfer(d->raft, req->member_id,
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
static void do_internal_command(struct flowd *d, struct api_request *req)
{
	char *buf = malloc(req->raw_body_len + 1);
	int rv;

	if (buf == NULL) {
		reply_error(req, 500, "internal", NULL, "out of memory");
		return;
	}
	memcpy(buf, req->raw_body, req->raw_body_len);
	rv = consensus_propose(d->raft, buf, req->raw_body_len,
			       d->cfg->apply_timeout_ms, internal_done_cb, req);
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
	readview_answer(req->backend_data, req);
}

/* ?consistent=true: a read that sees every write acknowledged before it.
 * The leader passes a barrier (every entry of earlier terms applied, and
 * it still leads), then answers from the view published after it; a
 * follower hands the read to the leader. */
static void consistent_read(struct flowd *d, struct api_request *req)
{
	int rv;

	if (d->role != CONSENSUS_LEADER) {
		forward(d, req);
		return;
	}
	req->backend_data = d;
	rv = consensus_barrier(d->raft, barrier_done_cb, req);
	if (rv != CONSENSUS_OK)
		reply_error(req, 503, "unavailable", NULL,
			    "not the leader right now; retry");
}

static void handle(struct flowd *d, struct api_request *req)
{

	switch (req->op) {
	case API_OP_FLOW_PUT:
		if (write_admissible(d, req))
			do_flow_put(d, req);
		break;
	case API_OP_FLOW_DELETE:
		if (write_admissible(d, req))
			do_flow_delete(d, req);
		break;
	case API_OP_RUN_CREATE:
		if (write_admissible(d, req))
			do_run_create(d, req);
		break;
	case API_OP_RUN_CANCEL:
		if (write_admissible(d, req))
			do_run_cancel(d, req);
		break;
	case API_OP_INTERNAL_COMMAND:
		if (write_admissible(d, req))
			do_internal_command(d, req);
		break;
	case API_OP_MEMBER_ADD:
	case API_OP_MEMBER_REMOVE:
	case API_OP_LEADER_TRANSFER:
		if (write_admissible(d, req))
			do_member_change(d, req);
		break;
	case API_OP_EVENT_POST:
		if (write_admissible(d, req))
			do_event_post(d, req);
		break;
	case API_OP_FLOW_PAUSE:
	case API_OP_FLOW_UNPAUSE:
		if (write_admissible(d, req))
			do_pause(d, req, req->op == API_OP_FLOW_PAUSE);
		break;
	case API_OP_BACKFILL:
		if (write_admissible(d, req))
			do_backfill(d, req);
		break;
	case API_OP_SCHEDULE_GET:
	case API_OP_FLOW_LIST:
	case API_OP_FLOW_GET:
	case API_OP_FLOW_VERSIONS:
	case API_OP_RUN_GET:
	case API_OP_RUN_LIST:
		consistent_read(d, req);
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

void service_inbox_cb(uv_async_t *h)
{
	struct flowd *d = h->data;
	size_t n = 0;

	if (d->work_head == d->work_n) {
		/* take everything queued so far, in one swap */
		free(d->work);
		pthread_mutex_lock(&d->inbox_lock);
		d->work = d->inbox;
		d->work_n = d->inbox_n;
		d->inbox = NULL;
		d->inbox_n = d->inbox_cap = 0;
		pthread_mutex_unlock(&d->inbox_lock);
		d->work_head = 0;
	}
	while (d->work_head < d->work_n && n++ < INBOX_PER_ITERATION)
		handle(d, d->work[d->work_head++]);
	if (d->work_head < d->work_n)
		uv_async_send(&d->inbox_async); /* the rest next iteration */
}

void service_fail_all(struct flowd *d, int status, const char *code,
		      const char *msg)
{
	pthread_mutex_lock(&d->inbox_lock);
	struct api_request **batch = d->inbox;
	size_t n = d->inbox_n;
	d->inbox = NULL;
	d->inbox_n = d->inbox_cap = 0;
	pthread_mutex_unlock(&d->inbox_lock);
	while (d->work_head < d->work_n)
		reply_error(d->work[d->work_head++], status, code, NULL, msg);
	for (size_t i = 0; i < n; i++)
		reply_error(batch[i], status, code, NULL, msg);
	free(batch);
	readview_flush(d);
}
