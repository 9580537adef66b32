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
	bool wake = false;

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
	wake = d->inbox_n == 1;
	pthread_mutex_unlock(&d->inbox_lock);
	if (wake)
		uv_async_send(&d->inbox_async);
	else
		uv_async_send(&d->inbox_async);
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

/* Answer with a run that left memory: the api reads it from PostgreSQL. */
static void reply_from_postgres(struct api_request *req, int status,
				const char *run_id)
{
	req->pg_run_id = strdup(run_id);
	if (req->pg_run_id == NULL) {
		reply_error(req, 500, "internal", NULL, "out of memory");
		return;
	}
	req->status = status;
	api_request_finish(req);
}

/* ------------------------------------------------------------------------
 * Writes
 */

static json_t *backfill_answer(struct api_request *req);

static void proposal_done_cb(void *arg, int status, uint64_t index,
			     void *result)
{
	struct api_request *req = arg;
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
		reply_json(req, res->status,
			   json_pack("{s:o, s:b}", "flow",
				     fsm_flow_json(res->flow, true), "created",
				     res->created));
		break;
	case API_OP_FLOW_DELETE:
		reply_json(req, 200, fsm_flow_json(res->flow, false));
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
		if (res->run != NULL) {
			reply_json(req, res->status, fsm_run_json(res->run, true));
		} else if (res->run_id != NULL) {
			reply_from_postgres(req, res->status, res->run_id);
		} else {
			reply_error(req, 500, "internal", NULL, "no run");
		}
		break;
	default:
		reply_json(req, res->status, json_object());
		break;
	}
}

static void propose(struct flowd *d, struct api_request *req, char *buf,
		    size_t len)
{
	int rv = consensus_propose(d->raft, buf, len, d->cfg->apply_timeout_ms,
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
		const char *id = fsm_idem_lookup(&d->fsm, req->flow,
						 req->idempotency_key, &r);
		if (r != NULL) {
			reply_json(req, 200, fsm_run_json(r, true));
			return;
		}
		if (id != NULL) {
			reply_from_postgres(req, 200, id);
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
	if (fsm_cmd_run_create(flowd_now_ms(), req->flow, req->params,
			       req->idempotency_key,
			       d->cfg->limits.runs_in_memory, &buf,
			       &len) != 0) {
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

static void do_schedule_get(struct flowd *d, struct api_request *req)
{
	struct fsm_flow *fl = deployed_flow(d, req);
	json_t *out, *scheds, *one;
	size_t i;

	if (fl == NULL)
		return;
	out = fsm_schedule_json(fl);
	scheds = json_object_get(out, "schedules");
	json_array_foreach(scheds, i, one)
		json_object_set_new(one, "next_fire_times",
				    scheduler_next_json(fl, (unsigned)i,
							flowd_now_ms() / 1000, 10));
	reply_json(req, 200, out);
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

static int flow_cmp(const void *a, const void *b)
{
	return strcmp((*(struct fsm_flow *const *)a)->name,
		      (*(struct fsm_flow *const *)b)->name);
}

static void do_flow_list(struct flowd *d, struct api_request *req)
{
	struct map *m = &d->fsm.flows;
	struct fsm_flow **v = malloc((m->size + 1) * sizeof *v);
	json_t *arr = json_array();
	size_t n = 0;

	if (v == NULL) {
		json_decref(arr);
		reply_error(req, 500, "internal", NULL, "out of memory");
		return;
	}
	for (size_t i = 0; i < m->n_buckets; i++)
		for (struct map_entry *e = m->buckets[i]; e; e = e->next)
			if (((struct fsm_flow *)e->value)->current != 0)
				v[n++] = e->value;
	qsort(v, n, sizeof *v, flow_cmp);
	for (size_t i = 0; i < n; i++)
		json_array_append_new(arr, fsm_flow_json(v[i], false));
	free(v);
	reply_json(req, 200, json_pack("{s:o}", "flows", arr));
}

static void do_run_list(struct flowd *d, struct api_request *req)
{
	int status = -1;
	uint64_t cursor = 0;

	if (req->list_status != NULL)
		status = fsm_run_status_parse(req->list_status);
	if (req->cursor != NULL) {
		char *end;
		unsigned long long c = strtoull(req->cursor, &end, 10);
		if (*req->cursor == '\0' || *end != '\0' || c == 0) {
			reply_error(req, 400, "invalid_query", "cursor",
				    "not a cursor from next_cursor");
			return;
		}
		cursor = c;
	}
	reply_json(req, 200,
		   fsm_runs_page(&d->fsm, req->list_flow, status,
				 req->limit ? req->limit : 50, cursor,
				 &req->pg_list_before, &req->pg_list_limit));
}

/* The Raft configuration, with what the state machine knows of each node. */
static json_t *members_json(struct flowd *d)
{
	struct consensus_member m[64];
	unsigned n = consensus_members(d->raft, m, 64);
	uint64_t leader = consensus_leader(d->raft);
	json_t *arr = json_array();
	static const char *roles[] = {"voter", "standby", "spare"};

	if (n > 64)
		n = 64;
	for (unsigned i = 0; i < n; i++) {
		const char *api = "";
		json_t *live = json_null();
		for (unsigned k = 0; k < d->fsm.n_nodes; k++) {
			if (d->fsm.nodes[k].id != m[i].id)
				continue;
			api = d->fsm.nodes[k].api_address;
			json_decref(live);
			live = json_boolean(d->fsm.nodes[k].live);
		}
		for (unsigned k = 0; api[0] == '\0' && k < d->cfg->n_peers; k++)
			if (d->cfg->peers[k].id == m[i].id)
				api = d->cfg->peers[k].api_address;
		json_array_append_new(
			arr, json_pack("{s:I, s:s, s:s, s:s, s:b, s:o}", "id",
				       (json_int_t)m[i].id, "raft_address",
				       m[i].address, "api_address", api, "role",
				       m[i].role >= 0 && m[i].role <= 2
					       ? roles[m[i].role]
					       : "unknown",
				       "leader", m[i].id == leader, "live", live));
	}
	return arr;
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
						       members_json(d)));
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

static const char *role_name(enum consensus_role r)
{
	switch (r) {
	case CONSENSUS_LEADER:
		return "leader";
	case CONSENSUS_FOLLOWER:
		return "follower";
	case CONSENSUS_CANDIDATE:
		return "candidate";
	default:
		return "unavailable";
	}
}

static void do_cluster(struct flowd *d, struct api_request *req)
{
	uint64_t leader = consensus_leader(d->raft);
	uint64_t applied = consensus_applied_index(d->raft);
	uint64_t db = d->applier ? storage_applier_durable(d->applier) : 0;
	json_t *members = json_array(), *jl = json_null();

	/* Entries that are not commands (barriers, configuration) have no
	 * rows: once PostgreSQL holds the last command, it holds it all. */
	if (db >= d->fsm.applied_index && db < applied)
		db = applied;

	for (unsigned i = 0; i < d->cfg->n_peers; i++) {
		const struct config_peer *p = &d->cfg->peers[i];
		if (p->id == leader) {
			json_decref(jl);
			jl = json_pack("{s:I, s:s}", "id", (json_int_t)p->id,
				       "api_address", p->api_address);
		}
	}
	for (unsigned i = 0; i < d->fsm.n_nodes; i++) {
		if (d->fsm.nodes[i].id == leader &&
		    d->fsm.nodes[i].api_address[0] != '\0') {
			json_decref(jl);
			jl = json_pack("{s:I, s:s}", "id", (json_int_t)leader,
				       "api_address", d->fsm.nodes[i].api_address);
		}
	}
	json_decref(members);
	members = members_json(d);
	reply_json(
		req, 200,
		json_pack("{s:I, s:s, s:o, s:I, s:I, s:I, s:I, s:I, s:b, s:o, s:o}",
			  "node_id", (json_int_t)d->cfg->node_id, "role",
			  role_name(d->role), "leader", jl, "term",
			  (json_int_t)consensus_term(d->raft), "commit_index",
			  (json_int_t)consensus_commit_index(d->raft),
			  "applied_index", (json_int_t)applied,
			  "db_applied_index", (json_int_t)db,
			  "db_backlog",
			  (json_int_t)(d->applier ? storage_applier_backlog(d->applier) : 0),
			  "db_connected",
			  d->applier != NULL && storage_applier_connected(d->applier),
			  "members", members, "scheduler", scheduler_stats_json(d)));
}

static void do_readyz(struct flowd *d, struct api_request *req)
{
	const char *why = NULL;

	if (d->stopping)
		why = "shutting down";
	else if (consensus_leader(d->raft) == 0)
		why = "no leader";
	else if (consensus_applied_index(d->raft) <
		 consensus_commit_index(d->raft))
		why = "applying the log";
	else if (!d->node_up_done)
		why = "registering this node";
	if (why != NULL) {
		json_t *b = json_pack("{s:b, s:s}", "ready", 0, "reason", why);
		req->retry_after = 1;
		reply_json(req, 503, b);
		return;
	}
	reply_json(req, 200, json_pack("{s:b}", "ready", 1));
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

static void handle(struct flowd *d, struct api_request *req)
{
	struct fsm_flow *fl;
	struct fsm_run *r;

	/* ?consistent=true: a read answered by the leader. */
	if (req->consistent && d->role != CONSENSUS_LEADER &&
	    req->op != API_OP_READYZ && req->op != API_OP_CLUSTER) {
		forward(d, req);
		return;
	}

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
		do_schedule_get(d, req);
		break;
	case API_OP_FLOW_LIST:
		do_flow_list(d, req);
		break;
	case API_OP_FLOW_GET:
	case API_OP_FLOW_VERSIONS:
		fl = fsm_flow_get(&d->fsm, req->flow);
		if (fl == NULL)
			reply_error(req, 404, "not_found", "flow",
				    "no such flow");
		else if (req->op == API_OP_FLOW_GET)
			reply_json(req, 200, fsm_flow_json(fl, true));
		else
			reply_json(req, 200, fsm_flow_versions_json(fl));
		break;
	case API_OP_RUN_GET:
		r = fsm_run_get(&d->fsm, req->run_id);
		if (r != NULL)
			reply_json(req, 200, fsm_run_json(r, true));
		else if (fsm_run_evicted(&d->fsm, req->run_id))
			reply_from_postgres(req, 200, req->run_id);
		else
			reply_error(req, 404, "not_found", "run", "no such run");
		break;
	case API_OP_RUN_LIST:
		do_run_list(d, req);
		break;
	case API_OP_READYZ:
		do_readyz(d, req);
		break;
	case API_OP_CLUSTER:
		do_cluster(d, req);
		break;
	default:
		reply_error(req, 404, "not_found", NULL, "no such route");
		break;
	}
}

void service_inbox_cb(uv_async_t *h)
{
	struct flowd *d = h->data;

	for (;;) {
		struct api_request **batch;
		size_t n;

		pthread_mutex_lock(&d->inbox_lock);
		batch = d->inbox;
		n = d->inbox_n;
		d->inbox = NULL;
		d->inbox_n = d->inbox_cap = 0;
		pthread_mutex_unlock(&d->inbox_lock);
		if (n == 0) {
			free(batch);
			return;
		}
		for (size_t i = 0; i < n; i++)
			handle(d, batch[i]);
		free(batch);
	}
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
	for (size_t i = 0; i < n; i++)
		reply_error(batch[i], status, code, NULL, msg);
	free(batch);
}
