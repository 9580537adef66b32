/* readview.c - publishes the read view (core/view.h) that the HTTP threads
 * answer reads from, and finishes the requests answered from it.
 *
 * DESIGN
 *
 * After each batch of applies the pump (pump.c, through main.c) calls
 * readview_publish():
 * the runs and flows the batch changed are copied into the view, the
 * cluster's numbers (term, indexes, PostgreSQL's progress, readiness) are
 * taken, and the new version is published. The texts that change rarely
 * (the leader, the members, the scheduler's statistics) are rendered only
 * when they changed: the members by a signature of everything they show,
 * the statistics when ticks fired, at most every STATS_MS. A timer
 * publishes every REFRESH_MS too, so that numbers that move without an
 * entry (PostgreSQL catching up, a stale statistic) are seen.
 *
 * Requests answered after a change of state (a write's answer, a
 * consistent read after its barrier) wait in `waiting` until the next
 * publish, so that a client reading after the answer sees what it changed
 * and an answer rendered from the view (req->render, by the api on the HTTP
 * thread) holds its entry: readview_finish() queues them and kicks the
 * pump.
 *
 * Once raft is closing (readview_detach) nothing is published any more:
 * the last version stays, and waiting requests are answered from it.
 *
 * Thread: the loop thread.
 */
#include "daemon/readview.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/lag.h"
#include "core/log.h"
#include "core/map.h"

#define REFRESH_MS 500
#define STATS_MS 100

struct readview {
	const struct flowd_config *cfg;
	struct fsm *fsm;
	struct consensus *raft;
	struct storage_applier *applier;
	struct scheduler *sched;
	const struct liveness *live;
	void (*kick)(void *arg);
	void *kick_arg;
	enum consensus_role role;
	bool stopping;

	struct view_store *views;
	struct api_request **waiting;   /* answered at the next publish */
	size_t n_waiting, cap_waiting;
	uv_timer_t timer;               /* publish every REFRESH_MS too */
	uint64_t members_sig;
	bool members_sig_set;
	uint64_t stats_ticks;
	int64_t stats_ms;
	bool stats_set;
	struct lag_track db_lag;        /* when entries were applied here */
};

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

/* The Raft configuration, with what the state machine knows of each node. */
json_t *readview_members_json(struct readview *rv)
{
	struct consensus_member m[64];
	unsigned n = consensus_members(rv->raft, m, 64);
	uint64_t leader = consensus_leader(rv->raft);
	json_t *arr = json_array();
	static const char *roles[] = {"voter", "standby", "spare"};

	if (n > 64)
		n = 64;
	for (unsigned i = 0; i < n; i++) {
		const char *api = "";
		json_t *live = json_null();
		for (unsigned k = 0; k < rv->fsm->n_nodes; k++) {
			if (rv->fsm->nodes[k].id != m[i].id)
				continue;
			api = rv->fsm->nodes[k].api_address;
			json_decref(live);
			live = json_boolean(rv->fsm->nodes[k].live);
		}
		for (unsigned k = 0; api[0] == '\0' && k < rv->cfg->n_peers; k++)
			if (rv->cfg->peers[k].id == m[i].id)
				api = rv->cfg->peers[k].api_address;
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

static void set_json_text(struct readview *rv, enum view_text which, json_t *j)
{
	char *t = j != NULL ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY)
			    : NULL;

	json_decref(j);
	if (t == NULL)
		log_error("readview: out of memory rendering a cluster text");
	view_store_set_text(rv->views, which, t);
	free(t);
}

/* A signature of what the leader and members texts show. */
static uint64_t members_signature(struct readview *rv)
{
	struct consensus_member m[64];
	unsigned n = consensus_members(rv->raft, m, 64);
	uint64_t h = MAP_FNV_SEED ^ consensus_leader(rv->raft);
	char num[64];

	if (n > 64)
		n = 64;
	for (unsigned i = 0; i < n; i++) {
		snprintf(num, sizeof num, "%" PRIu64 "/%d/", m[i].id, m[i].role);
		h = map_fnv1a(num, h);
		h = map_fnv1a(m[i].address, h);
	}
	for (unsigned k = 0; k < rv->fsm->n_nodes; k++) {
		snprintf(num, sizeof num, "%" PRIu64 "/%d/", rv->fsm->nodes[k].id,
			 (int)rv->fsm->nodes[k].live);
		h = map_fnv1a(num, h);
		h = map_fnv1a(rv->fsm->nodes[k].api_address, h);
	}
	return h;
}

/* The leader's API address: from its registration (members added after the
 * start), else from [peers]; NULL when unknown. */
static const char *leader_api(struct readview *rv, uint64_t leader)
{
	const char *api = NULL;

	for (unsigned i = 0; i < rv->cfg->n_peers; i++)
		if (rv->cfg->peers[i].id == leader)
			api = rv->cfg->peers[i].api_address;
	for (unsigned i = 0; i < rv->fsm->n_nodes; i++)
		if (rv->fsm->nodes[i].id == leader &&
		    rv->fsm->nodes[i].api_address[0] != '\0')
			api = rv->fsm->nodes[i].api_address;
	return api;
}

static json_t *leader_json(struct readview *rv)
{
	uint64_t leader = consensus_leader(rv->raft);
	const char *api = leader_api(rv, leader);

	if (api == NULL)
		return json_null();
	return json_pack("{s:I, s:s}", "id", (json_int_t)leader, "api_address",
			 api);
}

static const char *not_ready(struct readview *rv)
{
	if (rv->stopping)
		return "shutting down";
	if (consensus_leader(rv->raft) == 0)
		return "no leader";
	if (consensus_applied_index(rv->raft) < consensus_commit_index(rv->raft))
		return "applying the log";
	if (!liveness_registered(rv->live))
		return "registering this node";
	return NULL;
}

static void refresh_cb(uv_timer_t *h)
{
	struct readview *rv = h->data;

	rv->kick(rv->kick_arg);
}

struct readview *readview_new(const struct readview_config *c)
{
	struct readview *rv = calloc(1, sizeof *rv);

	if (rv == NULL)
		return NULL;
	rv->views = view_store_new();
	if (rv->views == NULL) {
		free(rv);
		return NULL;
	}
	rv->cfg = c->cfg;
	rv->fsm = c->fsm;
	rv->raft = c->raft;
	rv->applier = c->applier;
	rv->sched = c->sched;
	rv->live = c->live;
	rv->kick = c->kick;
	rv->kick_arg = c->kick_arg;
	uv_timer_init(c->loop, &rv->timer);
	rv->timer.data = rv;
	uv_timer_start(&rv->timer, refresh_cb, REFRESH_MS, REFRESH_MS);
	return rv;
}

struct view_store *readview_store(struct readview *rv)
{
	return rv->views;
}

void readview_publish(struct readview *rv)
{
	struct view_cluster cl = {0};
	uint64_t applied, db, sig, ticks;
	int64_t now = uv_now(rv->timer.loop);

	if (rv->raft == NULL)
		return; /* closed: the last version stays */
	view_store_update(rv->views, rv->fsm);
	sig = members_signature(rv);
	if (sig != rv->members_sig || !rv->members_sig_set) {
		rv->members_sig = sig;
		rv->members_sig_set = true;
		set_json_text(rv, VIEW_TEXT_LEADER, leader_json(rv));
		set_json_text(rv, VIEW_TEXT_MEMBERS, readview_members_json(rv));
	}
	ticks = scheduler_ticks_fired(rv->sched);
	if (!rv->stats_set ||
	    (ticks != rv->stats_ticks && now - rv->stats_ms >= STATS_MS)) {
		rv->stats_set = true;
		rv->stats_ticks = ticks;
		rv->stats_ms = now;
		set_json_text(rv, VIEW_TEXT_SCHEDULER,
			      scheduler_stats_json(rv->sched));
	}
	applied = consensus_applied_index(rv->raft);
	db = rv->applier ? storage_applier_durable(rv->applier) : 0;
	/* Entries that are not commands (barriers, configuration) have no
	 * rows: once PostgreSQL holds the last command, it holds it all. */
	if (db >= rv->fsm->applied_index && db < applied)
		db = applied;
	cl.node_id = rv->cfg->node_id;
	cl.role = role_name(rv->role);
	cl.term = consensus_term(rv->raft);
	cl.commit_index = consensus_commit_index(rv->raft);
	cl.applied_index = applied;
	cl.db_applied_index = db;
	cl.db_backlog = rv->applier ? storage_applier_backlog(rv->applier) : 0;
	lag_track_note(&rv->db_lag, applied, now);
	cl.db_backlog_ms = lag_track_age(&rv->db_lag, db, now);
	cl.db_connected =
		rv->applier != NULL && storage_applier_connected(rv->applier);
	if (rv->applier != NULL)
		cl.db_failing_index = storage_applier_failing(
			rv->applier, cl.db_error, sizeof cl.db_error,
			&cl.db_write_errors);
	cl.not_ready = not_ready(rv);
	cl.stopping = rv->stopping;
	if (rv->role != CONSENSUS_LEADER) {
		/* where a follower's HTTP threads forward to: the leader's
		 * listener for nodes when it has one ([peers], third address) */
		const char *api = config_internal_address(
			rv->cfg, consensus_leader(rv->raft));

		if (api == NULL)
			api = leader_api(rv, consensus_leader(rv->raft));

		if (api != NULL && consensus_leader(rv->raft) != rv->cfg->node_id)
			snprintf(cl.leader_api, sizeof cl.leader_api, "%s", api);
	}
	view_store_publish(rv->views, &cl);

	/* Those waiting for this version. */
	for (size_t i = 0; i < rv->n_waiting; i++)
		api_request_finish(rv->waiting[i]);
	rv->n_waiting = 0;
}

void readview_finish(struct readview *rv, struct api_request *req)
{
	if (rv->n_waiting == rv->cap_waiting) {
		size_t cap = rv->cap_waiting ? rv->cap_waiting * 2 : 64;
		struct api_request **w =
			realloc(rv->waiting, cap * sizeof *w);

		if (w == NULL) {
			struct flowd_error e;

			flowd_error_set(&e, FLOWD_E_UNAVAILABLE, "unavailable",
					NULL, "out of memory");
			req->render = NULL; /* this answer, not a render */
			api_request_reply_error(req, &e);
			api_request_finish(req);
			return;
		}
		rv->waiting = w;
		rv->cap_waiting = cap;
	}
	rv->waiting[rv->n_waiting++] = req;
	rv->kick(rv->kick_arg);
}

void readview_flush(struct readview *rv)
{
	/* Whatever waits is answered from the newest version. */
	if (rv->n_waiting == 0)
		return;
	if (rv->raft != NULL)
		readview_publish(rv);
	for (size_t i = 0; i < rv->n_waiting; i++)
		api_request_finish(rv->waiting[i]);
	rv->n_waiting = 0;
}

void readview_role_set(struct readview *rv, enum consensus_role role)
{
	rv->role = role;
}

void readview_stop(struct readview *rv)
{
	rv->stopping = true;
	uv_timer_stop(&rv->timer);
}

void readview_detach(struct readview *rv)
{
	rv->raft = NULL;
}

static void closed_cb(uv_handle_t *h)
{
	struct readview *rv = h->data;

	view_store_free(rv->views);
	free(rv);
}

void readview_close(struct readview *rv)
{
	free(rv->waiting);
	rv->waiting = NULL;
	rv->n_waiting = rv->cap_waiting = 0;
	uv_close((uv_handle_t *)&rv->timer, closed_cb);
}
