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
 * runs its route's submit handler (the row in routes.c names it; handle()
 * calls it once the write is admissible), which checks it against the
 * state first (unknown flow, bad parameters, a finished run: answered
 * without touching the log, so a bad request changes nothing), then
 * encodes and proposes it, naming how its answer is made once the entry
 * applied (applied_fn): rendered by a read handler (reads.c) from the view
 * published after it, or the state machine's own answer, finished after
 * that publish too (readview.c). A consistent read passes a barrier first
 * and is answered by its row's read handler the same way. No leader, a closing node or a PostgreSQL backlog
 * past the limit answer 503 with Retry-After; a proposal past
 * raft.apply_timeout_ms answers 504 (its outcome is unknown: a retry with
 * the same idempotency key is safe). A follower hands writes and consistent
 * reads, unchanged, to the leader (forward.c), the road its own commands
 * take too.
 *
 * Thread: service_submit_cb on HTTP threads; everything else on the loop.
 */
#include "daemon/service.h"
#include "daemon/reads.h"
#include "daemon/wake.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/random.h>

#include "core/cron.h"
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
			flowd_error_set(&e, FLOWD_E_UNAVAILABLE, "unavailable",
					NULL, "out of memory");
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

static void reply_error(struct api_request *req, enum flowd_errc errc,
			const char *code, const char *field, const char *msg)
{
	struct flowd_error e;

	flowd_error_set(&e, errc, code, field, "%s", msg);
	api_request_reply_error(req, &e);
	api_request_finish(req);
}

static void reply_json(struct api_request *req, int status, json_t *body)
{
	api_request_reply_json(req, status, body);
	api_request_finish(req);
}

/* Finish `req` once the next view is published: the api then renders its
 * answer, with `status`, by `render` from that view, which holds every
 * entry applied before. */
static void answer_view(struct service *s, struct api_request *req, int status,
			api_read_fn render)
{
	req->status = status;
	req->render = render;
	readview_finish(s->rv, req);
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
			reply_error(req, FLOWD_E_INTERNAL, "internal", NULL,
				    "out of memory");
			return;
		}
	}
	answer_view(s, req, status, reads_run_get);
}

/* ------------------------------------------------------------------------
 * Writes: checked against the state, then proposed; each submit handler
 * names how its answer is made once the entry applied.
 */

/* What a write answers once its entry applied without an error, on the
 * loop; `data` (borrowed) is what the handler handed to propose(). */
typedef void (*applied_fn)(struct service *s, struct api_request *req,
			   const struct fsm_result *res, json_t *data);

/* The HTTP status of a write that applied: 201 when it made something new
 * (a run, a flow version, an event), else 200. */
static int applied_status(const struct fsm_result *res)
{
	return res->created ? 201 : 200;
}

/* A client's write from propose() to its callback. */
struct proposal {
	struct service *s;
	struct api_request *req;
	applied_fn applied;
	json_t *data; /* owned, may be NULL */
};

static void proposal_done_cb(void *arg, int status, uint64_t index,
			     void *result)
{
	struct proposal *p = arg;
	struct api_request *req = p->req;
	struct fsm_result *res = result;

	switch (status) {
	case CONSENSUS_OK:
		if (res == NULL)
			reply_error(req, FLOWD_E_INTERNAL, "internal", NULL,
				    "no result");
		else if (res->err.errc != FLOWD_OK) {
			api_request_reply_error(req, &res->err);
			api_request_finish(req);
		} else
			p->applied(p->s, req, res, p->data);
		break;
	case CONSENSUS_TIMEOUT:
		reply_error(req, FLOWD_E_TIMEOUT, "timeout", NULL,
			    "the change was not committed in time; its outcome "
			    "is unknown: retry with the same idempotency key");
		break;
	case CONSENSUS_LEADERSHIP_LOST:
		reply_error(
		    req, FLOWD_E_UNAVAILABLE, "unavailable", NULL,
		    "leadership was lost; the outcome is unknown: retry "
		    "with the same idempotency key");
		break;
	case CONSENSUS_IO:
		reply_error(req, FLOWD_E_UNAVAILABLE, "unavailable", NULL,
			    "raft disk error");
		log_error("service: raft disk error, exiting");
		exit(70);
	default:
		reply_error(req, FLOWD_E_UNAVAILABLE, "unavailable", NULL,
			    "the node is shutting down");
		break;
	}
	json_decref(p->data);
	free(p);
}

/* The command `buf` (malloc'd, a JSON object, consumed) with who asked
 * for it: "audit" {who, role, address, node, action, method, path} goes
 * into the entry, and apply makes it a row of the audit table (core/fsm.c;
 * docs/schema.md). Returns the new text, or NULL (out of memory). */
static char *with_audit(struct service *s, const struct api_request *req,
			char *buf, size_t *len)
{
	json_t *a = json_pack(
		"{s:s, s:s, s:s, s:I, s:s, s:s, s:s}", "who",
		req->who[0] ? req->who : "-", "role", api_role_name(req->role),
		"address", req->client_address[0] ? req->client_address : "-",
		"node",
		(json_int_t)(req->node_id != 0 ? req->node_id : s->cfg->node_id),
		"action", req->route != NULL ? req->route->name : "-", "method",
		req->method != NULL ? req->method : "-", "path",
		req->target != NULL ? req->target : "-");
	char *text = a != NULL ? json_dumps(a, JSON_COMPACT) : NULL;
	size_t n = *len, t;
	char *out = NULL;

	json_decref(a);
	while (n > 0 && buf[n - 1] != '}')
		n--;
	if (text != NULL && n > 1) {
		t = strlen(text);
		out = malloc(n + t + 16);
		if (out != NULL) {
			memcpy(out, buf, n - 1);
			*len = (size_t)sprintf(out + n - 1, ",\"audit\":%s}",
					       text) + n - 1;
		}
	}
	free(text);
	free(buf);
	return out;
}

/* Propose `buf` (malloc'd; always consumed), and `data` (stolen) for
 * `applied`. */
static void propose(struct service *s, struct api_request *req, char *buf,
		    size_t len, applied_fn applied, json_t *data)
{
	struct proposal *p = malloc(sizeof *p);
	int rv;

	buf = with_audit(s, req, buf, &len);
	if (p == NULL || buf == NULL) {
		free(p);
		p = NULL;
	}
	if (p == NULL) {
		free(buf);
		json_decref(data);
		reply_error(req, FLOWD_E_INTERNAL, "internal", NULL,
			    "out of memory");
		return;
	}
	*p = (struct proposal){
		.s = s, .req = req, .applied = applied, .data = data};
	rv = consensus_propose(s->raft, buf, len, s->cfg->apply_timeout_ms,
			       proposal_done_cb, p);
	if (rv == CONSENSUS_OK)
		return;
	json_decref(data);
	free(p);
	if (rv == CONSENSUS_NOT_LEADER)
		reply_error(req, FLOWD_E_UNAVAILABLE, "unavailable", NULL,
			    "no leader right now; retry");
	else
		reply_error(req, FLOWD_E_UNAVAILABLE, "unavailable", NULL,
			    "the node cannot accept writes now");
}

/* A write is accepted only by a leader that is ready and not overloaded;
 * a follower forwards it. */
static bool write_admissible(struct service *s, struct api_request *req)
{
	if (s->stopping) {
		reply_error(req, FLOWD_E_UNAVAILABLE, "unavailable", NULL,
			    "the node is shutting down");
		return false;
	}
	if (s->role != CONSENSUS_LEADER) {
		forward_request_send(s->fwd, req);
		return false;
	}
	if (s->applier != NULL &&
	    storage_applier_backlog(s->applier) > s->cfg->db_max_backlog) {
		reply_error(req, FLOWD_E_UNAVAILABLE, "unavailable", NULL,
			    "PostgreSQL is behind by more than "
			    "database.max_backlog entries");
		return false;
	}
	return true;
}

/* The stock answers of applied writes. */

/* The run the entry made or cancelled. */
static void run_applied(struct service *s, struct api_request *req,
			const struct fsm_result *res, json_t *data)
{
	if (res->run != NULL)
		answer_run(s, req, applied_status(res), res->run->id);
	else if (res->run_id != NULL)
		answer_run(s, req, applied_status(res), res->run_id);
	else
		reply_error(req, FLOWD_E_INTERNAL, "internal", NULL, "no run");
}

/* The state machine's own answer (events, pause), finished once the view
 * holds the runs it made. */
static void body_applied(struct service *s, struct api_request *req,
			 const struct fsm_result *res, json_t *data)
{
	if (res->body == NULL) {
		reply_error(req, FLOWD_E_INTERNAL, "internal", NULL,
			    "no result");
		return;
	}
	api_request_reply_json(req, applied_status(res),
			       json_incref(res->body));
	readview_finish(s->rv, req);
}

static void flow_put_applied(struct service *s, struct api_request *req,
			     const struct fsm_result *res, json_t *data)
{
	answer_view(s, req, applied_status(res), reads_flow_put);
}

static void flow_delete_applied(struct service *s, struct api_request *req,
				const struct fsm_result *res, json_t *data)
{
	answer_view(s, req, 200, reads_flow_undeployed);
}

/* Deploying to or undeploying from a prod branch takes the production
 * role (docs/lifecycle.md); with no token configured everything is
 * allowed, as for every route. */
static bool prod_allowed(struct service *s, struct api_request *req)
{
	if (!spec_branch_is_prod(req->branch) ||
	    req->role >= API_ROLE_PRODUCTION)
		return true;
	reply_error(req, FLOWD_E_FORBIDDEN, "forbidden", "branch",
		    "a prod branch takes a production token");
	return false;
}

void service_flow_put(void *arg, struct api_request *req)
{
	struct service *s = arg;
	char *buf;
	size_t len;

	if (!prod_allowed(s, req))
		return;
	/* req->body: the normalized spec (routes.c, parse_flow_spec) */
	if (fsm_cmd_deploy(now_ms(s), req->flow, req->body, &buf, &len) != 0) {
		reply_error(req, FLOWD_E_INTERNAL, "internal", NULL,
			    "cannot encode");
		return;
	}
	propose(s, req, buf, len, flow_put_applied, NULL);
}

void service_flow_delete(void *arg, struct api_request *req)
{
	struct service *s = arg;
	char *buf;
	size_t len;

	if (!prod_allowed(s, req))
		return;
	if (fsm_flow_get(s->fsm, req->flow) == NULL) {
		reply_error(req, FLOWD_E_NOT_FOUND, "not_found", "flow",
			    "no such flow");
		return;
	}
	if (fsm_cmd_undeploy(now_ms(s), req->flow, &buf, &len) != 0) {
		reply_error(req, FLOWD_E_INTERNAL, "internal", NULL,
			    "cannot encode");
		return;
	}
	propose(s, req, buf, len, flow_delete_applied, NULL);
}

/* What a command that makes or tags a run carries (limits.*). */
static struct fsm_retention retention(const struct service *s)
{
	return (struct fsm_retention){
		.runs = s->cfg->limits.runs_in_memory,
		.keys = s->cfg->limits.idempotency_keys,
		.key_ttl_s = s->cfg->limits.idempotency_ttl_s,
		.max_tags = s->cfg->limits.max_tags_per_run,
		.max_tag_bytes = s->cfg->limits.max_tag_bytes,
	};
}

/* A known idempotency key (may be NULL) of `flow` answers with its run,
 * without a proposal: true when it did. */
static bool known_key_answered(struct service *s, struct api_request *req,
			       const char *flow, const char *key)
{
	struct fsm_run *r;
	const char *id = key != NULL ? fsm_idem_lookup_at(s->fsm, flow, key,
							  now_ms(s), &r)
				     : NULL;

	if (id == NULL)
		return false;
	answer_run(s, req, 200, id);
	return true;
}

void service_run_create(void *arg, struct api_request *req)
{
	struct service *s = arg;
	struct fsm_flow *fl = fsm_flow_get(s->fsm, req->flow);
	const json_t *params = api_request_field(req, "parameters");
	const char *key =
		json_string_value(api_request_field(req, "idempotency_key"));
	struct flowd_error err;
	json_t *resolved = NULL;
	char *buf;
	size_t len;

	if (fl == NULL) {
		reply_error(req, FLOWD_E_NOT_FOUND, "not_found", "flow",
			    "no such flow");
		return;
	}
	if (known_key_answered(s, req, req->flow, key))
		return;
	if (fl->current == 0) {
		reply_error(req, FLOWD_E_CONFLICT, "flow_undeployed", "flow",
			    "the flow is not deployed");
		return;
	}
	if (spec_params_resolve(fl->versions[fl->current - 1].spec, params,
				&s->cfg->limits, &resolved, &err) != 0) {
		api_request_reply_error(req, &err);
		api_request_finish(req);
		return;
	}
	json_decref(resolved);
	struct fsm_retention keep = retention(s);
	if (fsm_cmd_run_create(now_ms(s), req->flow, params, key,
			       api_request_field(req, "tags"), &keep, &buf,
			       &len) != 0) {
		reply_error(req, FLOWD_E_INTERNAL, "internal", NULL,
			    "cannot encode");
		return;
	}
	propose(s, req, buf, len, run_applied, NULL);
}

void service_run_cancel(void *arg, struct api_request *req)
{
	struct service *s = arg;
	struct fsm_run *r = fsm_run_get(s->fsm, req->run_id);
	char *buf;
	size_t len;

	if (r == NULL && fsm_run_evicted(s->fsm, req->run_id)) {
		reply_error(req, FLOWD_E_CONFLICT, "run_finished", "run",
			    "the run has already finished");
		return;
	}
	if (r == NULL) {
		reply_error(req, FLOWD_E_NOT_FOUND, "not_found", "run",
			    "no such run");
		return;
	}
	if (r->status >= FSM_RUN_SUCCEEDED) {
		reply_error(req, FLOWD_E_CONFLICT, "run_finished", "run",
			    "the run has already finished");
		return;
	}
	if (fsm_cmd_run_cancel(now_ms(s), req->run_id, &buf, &len) != 0) {
		reply_error(req, FLOWD_E_INTERNAL, "internal", NULL,
			    "cannot encode");
		return;
	}
	propose(s, req, buf, len, run_applied, NULL);
}

/* The run {id} names, in memory; else the answer (404, or 409 when it
 * left memory: PostgreSQL holds it, and the life-cycle commands work on
 * runs in memory) and NULL. */
static struct fsm_run *run_in_memory(struct service *s,
				     struct api_request *req)
{
	struct fsm_run *r = fsm_run_get(s->fsm, req->run_id);

	if (r == NULL && fsm_run_evicted(s->fsm, req->run_id))
		reply_error(req, FLOWD_E_CONFLICT, "run_not_in_memory", "run",
			    "the run has left memory (limits.runs_in_memory)");
	else if (r == NULL)
		reply_error(req, FLOWD_E_NOT_FOUND, "not_found", "run",
			    "no such run");
	return r;
}

static void encode_failed(struct api_request *req)
{
	reply_error(req, FLOWD_E_INTERNAL, "internal", NULL, "cannot encode");
}

void service_run_tags(void *arg, struct api_request *req)
{
	struct service *s = arg;
	struct fsm_retention keep = retention(s);
	char *buf;
	size_t len;

	if (run_in_memory(s, req) == NULL)
		return;
	if (fsm_cmd_run_tags(now_ms(s), req->run_id,
			     api_request_field(req, "add"),
			     api_request_field(req, "remove"), &keep, &buf,
			     &len) != 0) {
		encode_failed(req);
		return;
	}
	propose(s, req, buf, len, run_applied, NULL);
}

void service_run_resume(void *arg, struct api_request *req)
{
	struct service *s = arg;
	struct fsm_retention keep = retention(s);
	const char *key =
		json_string_value(api_request_field(req, "idempotency_key"));
	const char *ver = json_string_value(api_request_field(req, "version"));
	struct fsm_run *o = run_in_memory(s, req);
	char *buf;
	size_t len;

	if (o == NULL)
		return;
	if (known_key_answered(s, req, o->flow->name, key))
		return;
	if (fsm_cmd_run_resume(now_ms(s), req->run_id,
			       json_string_value(
				       api_request_field(req, "from_step")),
			       ver != NULL && strcmp(ver, "current") == 0, key,
			       api_request_field(req, "tags"), &keep, &buf,
			       &len) != 0) {
		encode_failed(req);
		return;
	}
	propose(s, req, buf, len, run_applied, NULL);
}

/* POST /v1/projects/{p}/branches/{b}/flows/{f}/records: flowctl resume
 * --local --record's result, as a run of that branch. */
void service_run_record(void *arg, struct api_request *req)
{
	struct service *s = arg;
	struct fsm_retention keep = retention(s);
	struct fsm_flow *fl = fsm_flow_get(s->fsm, req->flow);
	char *buf;
	size_t len;

	if (spec_branch_is_prod(req->branch)) {
		reply_error(req, FLOWD_E_INVALID, "invalid_value", "branch",
			    "a result from elsewhere is not recorded in a prod "
			    "branch");
		return;
	}
	if (fl == NULL || fl->current == 0) {
		reply_error(req, FLOWD_E_NOT_FOUND, "not_found", "flow",
			    "the flow is not deployed in that branch");
		return;
	}
	if (fsm_cmd_run_record(
		    now_ms(s), req->flow,
		    json_string_value(api_request_field(req, "origin_run_id")),
		    api_request_field(req, "parameters"),
		    api_request_field(req, "steps"),
		    json_string_value(api_request_field(req, "idempotency_key")),
		    &keep, &buf, &len) != 0) {
		encode_failed(req);
		return;
	}
	propose(s, req, buf, len, run_applied, NULL);
}

void service_run_redrive(void *arg, struct api_request *req)
{
	struct service *s = arg;
	char *buf;
	size_t len;

	if (run_in_memory(s, req) == NULL)
		return;
	if (fsm_cmd_run_redrive(
		    now_ms(s), req->run_id, s->cfg->limits.redrive_window_s,
		    json_string_value(api_request_field(req, "idempotency_key")),
		    &buf, &len) != 0) {
		encode_failed(req);
		return;
	}
	propose(s, req, buf, len, run_applied, NULL);
}

/* ------------------------------------------------------------------------
 * Triggers
 */

static struct fsm_flow *deployed_flow(struct service *s, struct api_request *req)
{
	struct fsm_flow *fl = fsm_flow_get(s->fsm, req->flow);

	if (fl == NULL || fl->current == 0) {
		reply_error(req, FLOWD_E_NOT_FOUND, "not_found", "flow",
			    "no such flow");
		return NULL;
	}
	return fl;
}

void service_event_post(void *arg, struct api_request *req)
{
	struct service *s = arg;
	const struct flowd_limits *lim = &s->cfg->limits;
	const char *id = json_string_value(api_request_field(req, "id"));
	char made[40];
	char *buf;
	size_t len;

	if (id == NULL) {
		/* No id from the client: this event is new by definition. */
		uint64_t a = 0, b = 0;

		if (getrandom(&a, sizeof a, 0) != sizeof a ||
		    getrandom(&b, sizeof b, 0) != sizeof b) {
			reply_error(req, FLOWD_E_UNAVAILABLE, "unavailable",
				    NULL, "no randomness for an event id");
			return;
		}
		snprintf(made, sizeof made, "e-%016" PRIx64 "%016" PRIx64, a,
			 b);
		id = made;
	}
	if (fsm_cmd_event_in(
		    now_ms(s), json_string_value(api_request_field(req, "name")),
		    id, api_request_field(req, "payload"),
		    json_string_value(api_request_field(req, "project")),
		    json_string_value(api_request_field(req, "branch")),
		    lim->event_dedupe_s, lim->events_in_memory,
		    lim->max_buffered_runs, &buf, &len) != 0) {
		reply_error(req, FLOWD_E_INTERNAL, "internal", NULL,
			    "cannot encode");
		return;
	}
	propose(s, req, buf, len, body_applied, NULL);
}

static void pause_set(struct service *s, struct api_request *req, bool paused)
{
	char *buf;
	size_t len;

	if (deployed_flow(s, req) == NULL)
		return;
	if (fsm_cmd_pause(now_ms(s), req->flow, paused, &buf, &len) != 0) {
		reply_error(req, FLOWD_E_INTERNAL, "internal", NULL,
			    "cannot encode");
		return;
	}
	propose(s, req, buf, len, body_applied, NULL);
}

void service_flow_pause(void *arg, struct api_request *req)
{
	pause_set(arg, req, true);
}

void service_flow_unpause(void *arg, struct api_request *req)
{
	pause_set(arg, req, false);
}

/* After the backfill's entry applied: which run each tick (`items`) has. */
static void backfill_applied(struct service *s, struct api_request *req,
			     const struct fsm_result *res, json_t *items)
{
	json_t *it, *runs = json_array();
	size_t i;

	json_array_foreach(items, i, it) {
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
	api_request_reply_json(
		req, 200,
		json_pack("{s:s, s:I, s:o}", "flow", req->flow, "ticks",
			  (json_int_t)json_array_size(runs), "runs", runs));
	readview_finish(s->rv, req);
}

void service_backfill(void *arg, struct api_request *req)
{
	struct service *s = arg;
	struct fsm_flow *fl = deployed_flow(s, req);
	const json_t *sched_field = api_request_field(req, "schedule");
	int sched = sched_field ? (int)json_integer_value(sched_field) : -1;
	const struct flow_spec *spec;
	unsigned max = s->cfg->limits.max_backfill_runs;
	int64_t from = 0, to = 0;
	json_t *items;
	size_t n = 0;
	char *buf;
	size_t len;

	if (fl == NULL)
		return;
	/* checked by the route's schema (routes.c) */
	cron_time_parse(json_string_value(api_request_field(req, "from")), &from);
	cron_time_parse(json_string_value(api_request_field(req, "to")), &to);
	spec = fl->versions[fl->current - 1].spec;
	if (sched >= 0 && (size_t)sched >= spec->n_schedules) {
		reply_error(req, FLOWD_E_INVALID, "invalid_value", "schedule",
			    "the flow has no such schedule");
		return;
	}
	if (spec->n_schedules == 0) {
		reply_error(req, FLOWD_E_INVALID, "invalid_value", "flow",
			    "the flow has no schedules");
		return;
	}
	items = json_array();
	for (size_t i = 0; i < spec->n_schedules; i++) {
		const struct spec_schedule *sc = &spec->schedules[i];
		int64_t t = from - 1, next;

		if (sched >= 0 && (size_t)sched != i)
			continue;
		while (cron_next(&sc->cron, sc->tz, sc->dst_missing,
				 sc->dst_repeated, t, &next) &&
		       next <= to) {
			if (++n > max) {
				json_decref(items);
				reply_error(req, FLOWD_E_INVALID,
					    "invalid_value", "to",
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
	if (fsm_cmd_fire(now_ms(s), items, s->cfg->limits.max_buffered_runs,
			 &buf, &len) != 0) {
		json_decref(items);
		reply_error(req, FLOWD_E_INTERNAL, "internal", NULL,
			    "cannot encode");
		return;
	}
	propose(s, req, buf, len, backfill_applied, items);
}

/* ------------------------------------------------------------------------
 * Membership: raft configuration changes, not commands
 */

static void ignore_done_cb(void *arg, int status, uint64_t index,
			   void *result)
{
}

/* A removed node takes no more work (what it ran is retried elsewhere);
 * an added one may register again. */
static void node_admit(struct service *s, struct api_request *req,
		       uint64_t id, bool admit)
{
	char *buf;
	size_t len;

	if (fsm_cmd_node_remove(now_ms(s), id, admit, &buf, &len) == 0 &&
	    (buf = with_audit(s, req, buf, &len)) != NULL)
		consensus_propose(s->raft, buf, len, s->cfg->apply_timeout_ms,
				  ignore_done_cb, NULL);
}

/* Answer a membership change that did not complete. */
static void member_failed(struct service *s, struct api_request *req,
			  int status)
{
	switch (status) {
	case CONSENSUS_CANTCHANGE:
		reply_error(req, FLOWD_E_CONFLICT,
			    "membership_change_in_progress", NULL,
			    "another membership change is in progress; retry");
		return;
	case CONSENSUS_TIMEOUT:
		reply_error(req, FLOWD_E_TIMEOUT, "timeout", NULL,
			    "the change did not complete in time; it may still "
			    "complete: check GET /v1/cluster");
		return;
	case CONSENSUS_ERROR:
		reply_error(req, FLOWD_E_INVALID, "invalid_value", "id",
			    consensus_errmsg(s->raft));
		return;
	default:
		reply_error(
		    req, FLOWD_E_UNAVAILABLE, "unavailable", NULL,
		    "not the leader right now, or shutting down; retry");
		return;
	}
}

/* A member added or removed: the members once the change completed. */
static void member_changed(struct api_request *req, int status, uint64_t id,
			   bool added)
{
	struct service *s = req->backend_data;

	if (status != CONSENSUS_OK) {
		member_failed(s, req, status);
		return;
	}
	node_admit(s, req, id, added);
	reply_json(req, 200,
		   json_pack("{s:o}", "members", readview_members_json(s->rv)));
}

static void member_added_cb(void *arg, int status, uint64_t index,
			    void *result)
{
	struct api_request *req = arg;

	member_changed(req, status,
		       (uint64_t)json_integer_value(api_request_field(req, "id")),
		       true);
}

static void member_removed_cb(void *arg, int status, uint64_t index,
			      void *result)
{
	struct api_request *req = arg;

	member_changed(req, status, req->member_id, false);
}

static void transfer_done_cb(void *arg, int status, uint64_t index,
			     void *result)
{
	struct api_request *req = arg;
	struct service *s = req->backend_data;

	if (status != CONSENSUS_OK) {
		member_failed(s, req, status);
		return;
	}
	reply_json(req, 200,
		   json_pack("{s:I}", "leader",
			     (json_int_t)consensus_leader(s->raft)));
}

void service_member_add(void *arg, struct api_request *req)
{
	struct service *s = arg;
	int rv;

	req->backend_data = s;
	rv = consensus_member_add(
		s->raft,
		(uint64_t)json_integer_value(api_request_field(req, "id")),
		json_string_value(api_request_field(req, "raft_address")),
		60000, member_added_cb, req);
	if (rv != CONSENSUS_OK)
		member_added_cb(req, rv, 0, NULL);
}

void service_member_remove(void *arg, struct api_request *req)
{
	struct service *s = arg;
	int rv;

	req->backend_data = s;
	rv = consensus_member_remove(s->raft, req->member_id,
				     s->cfg->apply_timeout_ms,
				     member_removed_cb, req);
	if (rv != CONSENSUS_OK)
		member_removed_cb(req, rv, 0, NULL);
}

void service_leader_transfer(void *arg, struct api_request *req)
{
	struct service *s = arg;
	const json_t *id = api_request_field(req, "id");
	char *buf;
	size_t len;
	int rv;

	req->backend_data = s;
	/* the audit row of a transfer: a nop that says who asked */
	if (fsm_cmd_nop(now_ms(s), &buf, &len) == 0 &&
	    (buf = with_audit(s, req, buf, &len)) != NULL)
		consensus_propose(s->raft, buf, len, s->cfg->apply_timeout_ms,
				  ignore_done_cb, NULL);
	rv = consensus_transfer(s->raft,
				id ? (uint64_t)json_integer_value(id) : 0,
				transfer_done_cb, req);
	if (rv != CONSENSUS_OK)
		transfer_done_cb(req, rv, 0, NULL);
}

/* ------------------------------------------------------------------------
 * POST /internal/v1/commands: a node proposes a command (its registration,
 * a task's outcome) through the leader.
 */

static void internal_done_cb(void *arg, int status, uint64_t index,
			     void *result)
{
	struct api_request *req = arg;
	struct fsm_result *res = result;

	if (status != CONSENSUS_OK) {
		reply_error(req, FLOWD_E_UNAVAILABLE, "unavailable", NULL,
			    "the command was not committed; retry");
		return;
	}
	/* committed, but apply refused a field: the node must not take it
	 * for done (forward.c turns a 4xx into FORWARD_REFUSED) */
	if (res != NULL && res->err.errc == FLOWD_E_INVALID &&
	    strcmp(res->err.code, "invalid_command") == 0) {
		reply_error(req, FLOWD_E_INVALID, "invalid_command",
			    res->err.field, res->err.message);
		return;
	}
	reply_json(req, 200,
		   json_pack("{s:I, s:i}", "index", (json_int_t)index, "result",
			     res == NULL ? 0
			     : res->err.errc != FLOWD_OK
				 ? api_http_status(res->err.errc)
				 : applied_status(res)));
}

void service_internal_command(void *arg, struct api_request *req)
{
	struct service *s = arg;
	struct fsm_check bad;
	char *buf;
	int rv;

	/* Only what nodes send, each field in range, and a node speaks for
	 * itself: its signature named it (api/auth.h, core/fsm_check.c). */
	if (fsm_cmd_check_node(req->raw_body, req->raw_body_len, req->node_id,
			       &bad) != 0) {
		log_warn("service: internal command refused node=%" PRIu64
			 " field=%s why=\"%s\"",
			 req->node_id, bad.field, bad.why);
		reply_error(req, FLOWD_E_INVALID, "invalid_command", bad.field,
			    bad.why);
		return;
	}
	buf = malloc(req->raw_body_len + 1);
	if (buf == NULL) {
		reply_error(req, FLOWD_E_INTERNAL, "internal", NULL,
			    "out of memory");
		return;
	}
	memcpy(buf, req->raw_body, req->raw_body_len);
	rv = consensus_propose(s->raft, buf, req->raw_body_len,
			       s->cfg->apply_timeout_ms, internal_done_cb, req);
	if (rv != CONSENSUS_OK)
		reply_error(req, FLOWD_E_UNAVAILABLE, "unavailable", NULL,
			    "not the leader right now; retry");
}

/* ------------------------------------------------------------------------
 * Consistent reads and the dispatch
 */

static void barrier_done_cb(void *arg, int status, uint64_t index,
			    void *result)
{
	struct api_request *req = arg;
	struct service *s = req->backend_data;

	if (status != CONSENSUS_OK) {
		reply_error(req, FLOWD_E_UNAVAILABLE, "unavailable", NULL,
			    "leadership changed; retry");
		return;
	}
	answer_view(s, req, 200, req->route->read);
}

/* ?consistent=true: a read that sees every write acknowledged before it.
 * The leader passes a barrier (every entry of earlier terms applied, and
 * it still leads), then answers with the row's read handler from the view
 * published after it; a follower hands the read to the leader. */
static void consistent_read(struct service *s, struct api_request *req)
{
	int rv;

	if (s->role != CONSENSUS_LEADER) {
		forward_request_send(s->fwd, req);
		return;
	}
	if (s->raft == NULL) {
		reply_error(req, FLOWD_E_UNAVAILABLE, "unavailable", NULL,
			    "the node is shutting down");
		return;
	}
	req->backend_data = s;
	rv = consensus_barrier(s->raft, barrier_done_cb, req);
	if (rv != CONSENSUS_OK)
		reply_error(req, FLOWD_E_UNAVAILABLE, "unavailable", NULL,
			    "not the leader right now; retry");
}

/* A row with a submit handler is a write; the api hands over only those
 * and consistent reads. */
static void handle(struct service *s, struct api_request *req)
{
	if (req->route->submit == NULL)
		consistent_read(s, req);
	else if (write_admissible(s, req))
		req->route->submit(s, req);
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

void service_fail_all(struct service *s, enum flowd_errc errc, const char *code,
		      const char *msg)
{
	pthread_mutex_lock(&s->inbox_lock);
	struct api_request **batch = s->inbox;
	size_t n = s->inbox_n;
	s->inbox = NULL;
	s->inbox_n = s->inbox_cap = 0;
	pthread_mutex_unlock(&s->inbox_lock);
	while (s->work_head < s->work_n)
		reply_error(s->work[s->work_head++], errc, code, NULL, msg);
	for (size_t i = 0; i < n; i++)
		reply_error(batch[i], errc, code, NULL, msg);
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
