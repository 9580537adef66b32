/* metrics.c - the node's Prometheus metrics (metrics.h).
 *
 * Every node applies every entry, so every node counts the same runs,
 * attempts, ticks and events (since its start): aggregate them across
 * nodes with max(), not sum(). The schedule tick counts come from the
 * replicated state itself (the same on every node, across restarts). */
#include "daemon/metrics.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/fsm.h"

/* Run durations: 10 ms to 6 h. */
static const double run_buckets[] = {0.01, 0.05, 0.1, 0.5, 1,    5,
				     10,   30,   60,  300, 900,  1800,
				     3600, 7200, 21600};
/* Fire lag (nominal time -> the run committed): 1 ms to 5 min. */
static const double lag_buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025,
				     0.05,  0.1,    0.25,  0.5,  1,
				     2.5,   5,      10,    30,   60,
				     300};
/* Proposals and snapshots: 0.5 ms to 60 s. */
static const double short_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01,
				       0.025,  0.05,  0.1,    0.25,  0.5,
				       1,      2.5,   5,      10,    30,
				       60};
#define N(a) (sizeof(a) / sizeof((a)[0]))

struct node_metrics {
	struct metrics *reg;
	char *version;
	size_t max_series;
	double start_s; /* process start, Unix seconds */

	struct metrics_family *runs_created, *runs_finished, *run_seconds;
	struct metrics_family *attempts, *retries;
	struct metrics_family *fire_lag, *events, *events_dup;
	struct metrics_family *leader_changes, *snapshots, *snapshot_seconds;
	struct metrics_family *proposal_seconds;
	struct metrics_family *tasks_running, *tasks_ready, *runs_in_memory;
	uint64_t last_leader;
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct node_metrics *node_metrics_new(size_t max_series, const char *version)
{
	struct node_metrics *m = calloc(1, sizeof *m);
	if (m == NULL)
		return NULL;
	m->reg = metrics_new();
	m->version = strdup(version != NULL ? version : "");
	m->max_series = max_series != 0 ? max_series : 10000;
	m->start_s = now_s();
	if (m->reg == NULL || m->version == NULL)
		goto fail;

	size_t ms = m->max_series;
	const char *flow[] = {"flow", NULL};
	const char *flow_status[] = {"flow", "status", NULL};
	const char *flow_outcome[] = {"flow", "outcome", NULL};
	const char *flow_sched[] = {"flow", "schedule", NULL};
	const char *name[] = {"name", NULL};
	const char *node[] = {"node", NULL};
	struct metrics *r = m->reg;

	m->runs_created = metrics_family_new(
		r, "flowd_runs_created_total",
		"Runs created (applied on this node since it started), by flow.",
		METRICS_COUNTER, flow, NULL, 0, ms);
	m->runs_finished = metrics_family_new(
		r, "flowd_runs_finished_total",
		"Runs that ended, by flow and status (succeeded, failed, "
		"cancelled).",
		METRICS_COUNTER, flow_status, NULL, 0, ms);
	m->run_seconds = metrics_family_new(
		r, "flowd_run_duration_seconds",
		"From a run's creation to its end, by flow.",
		METRICS_HISTOGRAM, flow, run_buckets, N(run_buckets), ms);
	m->attempts = metrics_family_new(
		r, "flowd_step_attempts_total",
		"Step attempts that ended, by flow and outcome (succeeded, "
		"failed, timeout, lost, cancelled).",
		METRICS_COUNTER, flow_outcome, NULL, 0, ms);
	m->retries = metrics_family_new(
		r, "flowd_step_retries_total",
		"Failed attempts retried under the step's policy, by flow.",
		METRICS_COUNTER, flow, NULL, 0, ms);
	m->fire_lag = metrics_family_new(
		r, "flowd_schedule_fire_lag_seconds",
		"From a tick's nominal time to its run committed, by flow and "
		"schedule (index in the flow's spec).",
		METRICS_HISTOGRAM, flow_sched, lag_buckets, N(lag_buckets), ms);
	m->events = metrics_family_new(
		r, "flowd_events_received_total",
		"Events posted (duplicates included), by name.",
		METRICS_COUNTER, name, NULL, 0, ms);
	m->events_dup = metrics_family_new(
		r, "flowd_events_deduplicated_total",
		"Events answered as duplicates of an id seen before, by name.",
		METRICS_COUNTER, name, NULL, 0, ms);
	m->leader_changes = metrics_family_new(
		r, "flowd_raft_leadership_changes_total",
		"Times this node saw a new leader.", METRICS_COUNTER, NULL,
		NULL, 0, 1);
	m->snapshots = metrics_family_new(
		r, "flowd_raft_snapshots_total", "Raft snapshots taken.",
		METRICS_COUNTER, NULL, NULL, 0, 1);
	m->snapshot_seconds = metrics_family_new(
		r, "flowd_raft_snapshot_duration_seconds",
		"Time to take a snapshot (serialized and written).",
		METRICS_HISTOGRAM, NULL, short_buckets, N(short_buckets), 1);
	m->proposal_seconds = metrics_family_new(
		r, "flowd_raft_proposal_duration_seconds",
		"From a proposal to its entry committed and applied on the "
		"leader.",
		METRICS_HISTOGRAM, NULL, short_buckets, N(short_buckets), 1);
	m->tasks_running = metrics_family_new(
		r, "flowd_tasks_running",
		"Step attempts running, by the node running them.",
		METRICS_GAUGE, node, NULL, 0, 1024);
	m->tasks_ready = metrics_family_new(
		r, "flowd_tasks_ready",
		"Steps ready and waiting for a free slot on any node.",
		METRICS_GAUGE, NULL, NULL, 0, 1);
	m->runs_in_memory = metrics_family_new(
		r, "flowd_runs_in_memory",
		"Runs the state machine holds (active, and the most recent "
		"finished up to limits.runs_in_memory).",
		METRICS_GAUGE, NULL, NULL, 0, 1);
	if (m->runs_created == NULL || m->runs_finished == NULL ||
	    m->run_seconds == NULL || m->attempts == NULL ||
	    m->retries == NULL || m->fire_lag == NULL || m->events == NULL ||
	    m->events_dup == NULL || m->leader_changes == NULL ||
	    m->snapshots == NULL || m->snapshot_seconds == NULL ||
	    m->proposal_seconds == NULL || m->tasks_running == NULL ||
	    m->tasks_ready == NULL || m->runs_in_memory == NULL)
		goto fail;
	return m;
fail:
	node_metrics_free(m);
	return NULL;
}

void node_metrics_free(struct node_metrics *m)
{
	if (m == NULL)
		return;
	metrics_free(m->reg);
	free(m->version);
	free(m);
}

struct metrics *node_metrics_registry(struct node_metrics *m)
{
	return m->reg;
}

static const char *attempt_outcome(const struct fsm_attempt *a)
{
	switch (a->status) {
	case FSM_ATTEMPT_SUCCEEDED:
		return "succeeded";
	case FSM_ATTEMPT_FAILED:
		/* "timeout", or "timeout: <detail>" (fsm_runs.c) */
		return a->reason != NULL && strncmp(a->reason, "timeout", 7) == 0 &&
				       (a->reason[7] == '\0' || a->reason[7] == ':')
			       ? "timeout"
			       : "failed";
	case FSM_ATTEMPT_LOST:
		return "lost";
	case FSM_ATTEMPT_CANCELLED:
		return "cancelled";
	default:
		return "other";
	}
}

void node_metrics_count(void *arg, const struct fsm_count *c)
{
	struct node_metrics *m = arg;
	const char *flow = c->run != NULL && c->run->flow != NULL
				   ? c->run->flow->name
				   : "";

	switch (c->kind) {
	case FSM_COUNT_RUN_CREATED:
		metrics_inc(metrics_series1(m->runs_created, flow), 1);
		break;
	case FSM_COUNT_RUN_ENDED:
		metrics_inc(metrics_series2(m->runs_finished, flow,
					    fsm_run_status_str(c->run->status)),
			    1);
		if (c->run->finished_ms >= c->run->created_ms)
			metrics_observe(
				metrics_series1(m->run_seconds, flow),
				(double)(c->run->finished_ms -
					 c->run->created_ms) /
					1000.0);
		break;
	case FSM_COUNT_ATTEMPT_ENDED:
		metrics_inc(metrics_series2(m->attempts, flow,
					    attempt_outcome(c->attempt)),
			    1);
		break;
	case FSM_COUNT_RETRY:
		metrics_inc(metrics_series1(m->retries, flow), 1);
		break;
	case FSM_COUNT_TICK:
		if (c->outcome == FSM_FIRE_FIRED && c->flow != NULL) {
			char idx[16];
			snprintf(idx, sizeof idx, "%d", c->schedule);
			int64_t lag = c->ts_ms - c->nominal_s * 1000;
			/* a leader's clock behind the tick's: no negative
			 * observation (the sum must not go down) */
			metrics_observe(
				metrics_series2(m->fire_lag, c->flow->name, idx),
				(double)(lag > 0 ? lag : 0) / 1000.0);
		}
		break;
	case FSM_COUNT_EVENT:
		metrics_inc(metrics_series1(m->events, c->event), 1);
		if (c->duplicate)
			metrics_inc(metrics_series1(m->events_dup, c->event),
				    1);
		break;
	}
}

void node_metrics_loop(struct node_metrics *m, const struct fsm *f)
{
	char id[24];

	for (unsigned k = 0; k < f->n_nodes; k++) {
		snprintf(id, sizeof id, "%" PRIu64, f->nodes[k].id);
		metrics_set(metrics_series1(m->tasks_running, id),
			    (double)f->nodes[k].running);
	}
	metrics_set(metrics_series(m->tasks_ready, NULL), (double)f->n_ready);
	metrics_set(metrics_series(m->runs_in_memory, NULL),
		    (double)f->runs.size);
}

void node_metrics_leader(struct node_metrics *m, uint64_t leader)
{
	if (leader != 0 && leader != m->last_leader)
		metrics_inc(metrics_series(m->leader_changes, NULL), 1);
	if (leader != 0)
		m->last_leader = leader;
}

void node_metrics_snapshot(struct node_metrics *m, double seconds)
{
	metrics_inc(metrics_series(m->snapshots, NULL), 1);
	metrics_observe(metrics_series(m->snapshot_seconds, NULL), seconds);
}

void node_metrics_proposal(struct node_metrics *m, double seconds)
{
	metrics_observe(metrics_series(m->proposal_seconds, NULL), seconds);
}

/* ---- the scrape ---- */

static void gauge(struct metrics_text *t, const char *name, const char *help,
		  double v)
{
	metrics_text_family(t, name, help, METRICS_GAUGE);
	metrics_text_sample(t, name, NULL, NULL, v);
}

struct sched_walk {
	struct metrics_text *t;
	int pass; /* 0 ticks, 1 next fire, 2 paused */
};

static void sched_cb(void *arg, const struct view_schedule_info *in)
{
	struct sched_walk *w = arg;
	char idx[16];
	snprintf(idx, sizeof idx, "%u", in->index);

	if (w->pass == 0) {
		const char *l[] = {"flow", "schedule", "outcome", NULL};
		for (int o = 0; o < FSM_FIRE_OUTCOMES; o++) {
			const char *v[] = {in->flow, idx,
					   fsm_fire_outcome_str(
						   (enum fsm_fire_outcome)o),
					   NULL};
			metrics_text_sample(w->t, "flowd_schedule_ticks_total",
					    l, v, (double)in->counts[o]);
		}
	} else if (w->pass == 1) {
		const char *l[] = {"flow", "schedule", NULL};
		const char *v[] = {in->flow, idx, NULL};
		if (in->next_s > 0)
			metrics_text_sample(
				w->t, "flowd_schedule_next_fire_timestamp_seconds",
				l, v, (double)in->next_s);
	} else {
		const char *l[] = {"flow", "schedule", NULL};
		const char *v[] = {in->flow, idx, NULL};
		metrics_text_sample(w->t, "flowd_schedule_paused", l, v,
				    in->paused ? 1 : 0);
	}
}

static void view_part(struct node_metrics *m, struct metrics_text *t,
		      const struct view *v, int64_t now_ms)
{
	const struct view_cluster *cl = view_cluster_of(v);
	const char *role = cl->role != NULL ? cl->role : "";

	gauge(t, "flowd_raft_term", "The Raft term this node is in.",
	      (double)cl->term);
	gauge(t, "flowd_raft_commit_index", "The highest committed entry.",
	      (double)cl->commit_index);
	gauge(t, "flowd_raft_applied_index",
	      "The highest entry applied to the state machine.",
	      (double)cl->applied_index);
	gauge(t, "flowd_raft_is_leader", "1 when this node is the leader.",
	      strcmp(role, "leader") == 0 ? 1 : 0);
	gauge(t, "flowd_db_applied_index",
	      "The highest entry PostgreSQL holds (raft_meta.applied_index).",
	      (double)cl->db_applied_index);
	gauge(t, "flowd_db_backlog_entries",
	      "Entries applied here that PostgreSQL does not hold yet.",
	      (double)cl->db_backlog);
	gauge(t, "flowd_db_backlog_seconds",
	      "How long the oldest entry PostgreSQL lacks has been applied "
	      "here (0: it holds everything).",
	      (double)cl->db_backlog_ms / 1000.0);
	gauge(t, "flowd_db_connected",
	      "1 when this node's PostgreSQL writer is connected.",
	      cl->db_connected ? 1 : 0);
	gauge(t, "flowd_db_write_failing",
	      "1 while PostgreSQL refuses an entry's rows for a reason other "
	      "than the connection (GET /v1/cluster: db_write_failing).",
	      cl->db_failing_index != 0 ? 1 : 0);
	gauge(t, "flowd_db_write_errors",
	      "Writes PostgreSQL refused since the start (not outages).",
	      (double)cl->db_write_errors);
	gauge(t, "flowd_ready", "1 when GET /readyz answers 200.",
	      cl->not_ready == NULL ? 1 : 0);

	struct sched_walk w = {.t = t};
	int64_t now = now_ms / 1000;
	size_t left;
	metrics_text_family(t, "flowd_schedule_ticks_total",
			    "Schedule ticks decided, by flow, schedule and "
			    "outcome (fired, skipped, missed, buffered, "
			    "dropped); replicated state, the same on every "
			    "node.",
			    METRICS_COUNTER);
	left = view_schedules_each(v, now, m->max_series, sched_cb, &w);
	w.pass = 1;
	metrics_text_family(t, "flowd_schedule_next_fire_timestamp_seconds",
			    "When the schedule fires next (Unix seconds).",
			    METRICS_GAUGE);
	(void)view_schedules_each(v, now, m->max_series, sched_cb, &w);
	w.pass = 2;
	metrics_text_family(t, "flowd_schedule_paused",
			    "1 when the schedule's flow is paused.",
			    METRICS_GAUGE);
	(void)view_schedules_each(v, now, m->max_series, sched_cb, &w);
	gauge(t, "flowd_schedule_series_dropped",
	      "Schedules left out of the schedule metrics by "
	      "metrics.max_series.",
	      (double)left);
}

static double rss_bytes(void)
{
	long pages = 0, rss = 0;
	FILE *f = fopen("/proc/self/statm", "re");
	if (f == NULL)
		return 0;
	if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
		rss = 0;
	fclose(f);
	return (double)rss * (double)sysconf(_SC_PAGESIZE);
}

static double open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	double n = 0;
	if (d == NULL)
		return 0;
	for (struct dirent *e; (e = readdir(d)) != NULL;)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n > 0 ? n - 1 : 0; /* not the one opendir holds */
}

static void process_part(struct node_metrics *m, struct metrics_text *t)
{
	const char *l[] = {"version", NULL};
	const char *v[] = {m->version, NULL};

	gauge(t, "process_resident_memory_bytes", "Resident memory size.",
	      rss_bytes());
	gauge(t, "process_open_fds", "Open file descriptors.", open_fds());
	gauge(t, "process_max_fds", "The limit of open file descriptors.",
	      (double)sysconf(_SC_OPEN_MAX));
	gauge(t, "process_start_time_seconds",
	      "When the process started (Unix seconds).", m->start_s);
	metrics_text_family(t, "flowd_build_info",
			    "Always 1, with the build's version.",
			    METRICS_GAUGE);
	metrics_text_sample(t, "flowd_build_info", l, v, 1);
	gauge(t, "flowd_metrics_series_overflowed",
	      "Updates that went to a family's \"(other)\" series because it "
	      "had metrics.max_series label sets.",
	      (double)metrics_overflowed(m->reg));
}

char *node_metrics_scrape(struct node_metrics *m, const struct view *v,
			  int64_t now_ms)
{
	struct metrics_text t;

	metrics_text_init(&t);
	metrics_render(m->reg, &t);
	if (v != NULL)
		view_part(m, &t, v, now_ms);
	process_part(m, &t);
	if (t.oom) {
		metrics_text_free(&t);
		return NULL;
	}
	return t.p;
}
