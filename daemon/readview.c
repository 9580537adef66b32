/* readview.c - publishes the read view (core/view.h) that the HTTP threads
 * answer reads from, and finishes the requests answered from it.
 *
 * DESIGN
 *
 * After each batch of applies the pump (tasks.c) calls readview_publish():
 * the runs and flows the batch changed are copied into the view, the
 * cluster's numbers (term, indexes, PostgreSQL's progress, readiness) are
 * taken, and the new version is published. The texts that change rarely
 * (the leader, the members, the scheduler's statistics) are rendered only
 * when they changed: the members by a signature of everything they show,
 * the statistics when ticks fired, at most every STATS_MS. A timer
 * publishes every REFRESH_MS too, so that numbers that move without an
 * entry (PostgreSQL catching up, a stale statistic) are seen.
 *
 * Requests answered from the view after a change of state (a write's
 * answer, a consistent read after its barrier) wait in `waiting` until the
 * next publish, so that the view they are answered from holds their entry:
 * readview_answer() queues them and kicks the pump.
 *
 * Thread: the loop thread.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/view.h"
#include "daemon/daemon.h"

#define REFRESH_MS 500
#define STATS_MS 100

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
json_t *readview_members_json(struct flowd *d)
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

static void set_json_text(struct flowd *d, enum view_text which, json_t *j)
{
	char *t = j != NULL ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY)
			    : NULL;

	json_decref(j);
	if (t == NULL)
		log_error("readview: out of memory rendering a cluster text");
	view_store_set_text(d->views, which, t);
	free(t);
}

/* A signature of what the leader and members texts show. */
static uint64_t members_signature(struct flowd *d)
{
	struct consensus_member m[64];
	unsigned n = consensus_members(d->raft, m, 64);
	uint64_t h = MAP_FNV_SEED ^ consensus_leader(d->raft);
	char num[64];

	if (n > 64)
		n = 64;
	for (unsigned i = 0; i < n; i++) {
		snprintf(num, sizeof num, "%" PRIu64 "/%d/", m[i].id, m[i].role);
		h = map_fnv1a(num, h);
		h = map_fnv1a(m[i].address, h);
	}
	for (unsigned k = 0; k < d->fsm.n_nodes; k++) {
		snprintf(num, sizeof num, "%" PRIu64 "/%d/", d->fsm.nodes[k].id,
			 (int)d->fsm.nodes[k].live);
		h = map_fnv1a(num, h);
		h = map_fnv1a(d->fsm.nodes[k].api_address, h);
	}
	return h;
}

static json_t *leader_json(struct flowd *d)
{
	uint64_t leader = consensus_leader(d->raft);
	const char *api = NULL;

	for (unsigned i = 0; i < d->cfg->n_peers; i++)
		if (d->cfg->peers[i].id == leader)
			api = d->cfg->peers[i].api_address;
	for (unsigned i = 0; i < d->fsm.n_nodes; i++)
		if (d->fsm.nodes[i].id == leader &&
		    d->fsm.nodes[i].api_address[0] != '\0')
			api = d->fsm.nodes[i].api_address;
	if (api == NULL)
		return json_null();
	return json_pack("{s:I, s:s}", "id", (json_int_t)leader, "api_address",
			 api);
}

static const char *not_ready(struct flowd *d)
{
	if (d->stopping)
		return "shutting down";
	if (consensus_leader(d->raft) == 0)
		return "no leader";
	if (consensus_applied_index(d->raft) < consensus_commit_index(d->raft))
		return "applying the log";
	if (!d->node_up_done)
		return "registering this node";
	return NULL;
}

static void refresh_cb(uv_timer_t *h)
{
	tasks_kick(h->data);
}

int readview_init(struct flowd *d)
{
	d->views = view_store_new();
	if (d->views == NULL)
		return -1;
	uv_timer_init(d->loop, &d->view_timer);
	d->view_timer.data = d;
	uv_timer_start(&d->view_timer, refresh_cb, REFRESH_MS, REFRESH_MS);
	return 0;
}

void readview_publish(struct flowd *d)
{
	struct view_cluster cl = {0};
	uint64_t applied, db, sig, ticks;
	int64_t now = uv_now(d->loop);

	if (d->views == NULL || d->raft == NULL)
		return; /* closed: the last version stays */
	view_store_update(d->views, &d->fsm);
	sig = members_signature(d);
	if (sig != d->members_sig || !d->members_sig_set) {
		d->members_sig = sig;
		d->members_sig_set = true;
		set_json_text(d, VIEW_TEXT_LEADER, leader_json(d));
		set_json_text(d, VIEW_TEXT_MEMBERS, readview_members_json(d));
	}
	ticks = scheduler_ticks_fired(d);
	if (!d->stats_set ||
	    (ticks != d->stats_ticks && now - d->stats_ms >= STATS_MS)) {
		d->stats_set = true;
		d->stats_ticks = ticks;
		d->stats_ms = now;
		set_json_text(d, VIEW_TEXT_SCHEDULER, scheduler_stats_json(d));
	}
	applied = consensus_applied_index(d->raft);
	db = d->applier ? storage_applier_durable(d->applier) : 0;
	/* Entries that are not commands (barriers, configuration) have no
	 * rows: once PostgreSQL holds the last command, it holds it all. */
	if (db >= d->fsm.applied_index && db < applied)
		db = applied;
	cl.node_id = d->cfg->node_id;
	cl.role = role_name(d->role);
	cl.term = consensus_term(d->raft);
	cl.commit_index = consensus_commit_index(d->raft);
	cl.applied_index = applied;
	cl.db_applied_index = db;
	cl.db_backlog = d->applier ? storage_applier_backlog(d->applier) : 0;
	cl.db_connected =
		d->applier != NULL && storage_applier_connected(d->applier);
	cl.not_ready = not_ready(d);
	view_store_publish(d->views, &cl);

	/* Those waiting for this version. */
	for (size_t i = 0; i < d->n_waiting; i++)
		api_request_finish(d->waiting[i]);
	d->n_waiting = 0;
}

void readview_answer(struct flowd *d, struct api_request *req)
{
	if (d->n_waiting == d->cap_waiting) {
		size_t cap = d->cap_waiting ? d->cap_waiting * 2 : 64;
		struct api_request **w =
			realloc(d->waiting, cap * sizeof *w);

		if (w == NULL) {
			struct flowd_error e;

			flowd_error_set(&e, 503, "unavailable", NULL,
					"out of memory");
			api_request_reply_error(req, &e);
			api_request_finish(req);
			return;
		}
		d->waiting = w;
		d->cap_waiting = cap;
	}
	req->from_view = 1;
	d->waiting[d->n_waiting++] = req;
	tasks_kick(d);
}

void readview_flush(struct flowd *d)
{
	/* Whatever waits is answered from the newest version. */
	if (d->n_waiting == 0)
		return;
	if (d->raft != NULL)
		readview_publish(d);
	for (size_t i = 0; i < d->n_waiting; i++)
		api_request_finish(d->waiting[i]);
	d->n_waiting = 0;
}

void readview_close(struct flowd *d)
{
	uv_timer_stop(&d->view_timer);
	free(d->waiting);
	d->waiting = NULL;
	d->cap_waiting = 0;
}
