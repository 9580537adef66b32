/* pump.c - from applied entries to PostgreSQL, the read view and the
 * processes; snapshots that wait for PostgreSQL.
 *
 * DESIGN
 *
 * Happy path: consensus applies committed entries one by one
 * (pump_apply); each asks for an after-apply pass, an idle callback that
 * runs once the loop has nothing else to do, so a burst of entries makes
 * one pass. The pass takes the rows changed since the last one (full row
 * images: a run created and finished in the batch is written once) and
 * queues them for the applier at the last applied index; then main.c's
 * after_apply publishes the read view (readview.c) and starts and stops
 * this node's processes (runner.c); then, on the leader, the retry timer
 * is armed for the earliest step retry that comes due (a `wake` command).
 * Entries that changed no row still move PostgreSQL's index, so that its
 * lag reads zero once it holds everything.
 *
 * Snapshots: rows not yet in PostgreSQL are either still queued in the
 * applier (this process lives on) or, after a crash, rewritten from the
 * restored state (pump_restore writes the whole state again when
 * PostgreSQL's applied index is behind the snapshot, or unknown). Task
 * logs are not part of the state, so a snapshot (and the log compaction
 * after it) waits until PostgreSQL holds every log pushed so far:
 * pump_snapshot answers CONSENSUS_BUSY and remembers it. When the applier
 * advances (its thread wakes the loop), the leader proposes a no-op entry,
 * since raft looks at the snapshot threshold only after applying one.
 *
 * Failure modes: PostgreSQL down: rows queue in the applier (writes are
 * refused with 503 past database.max_backlog, service.c), snapshots wait,
 * the Raft log grows until it returns. A wake proposal that is not taken is
 * tried again after 100 ms.
 *
 * Threads: the loop thread; the applier's progress callback runs on its
 * writer thread and only wakes the loop (wake.h).
 */
#include "daemon/pump.h"
#include "daemon/metrics.h"
#include "daemon/wake.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/log.h"

#define WAKE_RETRY_MS 100

struct pump {
	struct fsm *fsm;
	struct storage_applier *applier;
	struct flowd_clock clock;
	struct forward_proposer proposer;
	void (*after_apply)(void *arg);
	void *after_apply_arg;
	enum consensus_role role;
	bool stopping;
	bool fork_snapshots;       /* serialize snapshots in a child process */
	struct node_metrics *metrics; /* borrowed, may be NULL */

	uint64_t pushed_index;     /* last index whose rows went to the applier */
	uint64_t log_pushed_index; /* last index whose push held task logs */
	bool snapshot_wanted;      /* postponed until those logs are stored */
	uint64_t pg_index;         /* raft_meta.applied_index at start */
	bool pg_index_known;

	uv_idle_t idle;            /* the after-apply pass */
	struct wake db_wake;       /* applier thread -> loop: it advanced */
	uv_timer_t wake_timer;     /* leader: retries that come due */
	int64_t wake_armed_for;
	int open_handles;
};

/* ------------------------------------------------------------------------
 * Rows to PostgreSQL
 */

static void flush_records(struct pump *p)
{
	uint64_t index;
	bool logs = p->fsm->pending_history;
	char *records = fsm_take_records(p->fsm, &index);

	if (records == NULL) {
		/* Entries that changed no row still move PostgreSQL's index,
		 * so that its lag reads zero when it holds everything. */
		if (p->fsm->applied_index <= p->pushed_index ||
		    (records = strdup("[]")) == NULL)
			return;
		index = p->fsm->applied_index;
	}
	p->pushed_index = index;
	if (logs)
		p->log_pushed_index = index;
	if (p->applier != NULL)
		storage_applier_push(p->applier, index, records);
	else
		free(records);
}

/* ------------------------------------------------------------------------
 * The leader's retry timer
 */

static void wake_cb(uv_timer_t *h);

static void wake_rearm(struct pump *p)
{
	int64_t due = fsm_next_due(p->fsm), now;

	if (p->role != CONSENSUS_LEADER || due == 0 || p->stopping) {
		uv_timer_stop(&p->wake_timer);
		p->wake_armed_for = 0;
		return;
	}
	if (due == p->wake_armed_for &&
	    uv_is_active((uv_handle_t *)&p->wake_timer))
		return;
	now = flowd_clock_now(&p->clock);
	p->wake_armed_for = due;
	uv_timer_start(&p->wake_timer, wake_cb,
		       due > now ? (uint64_t)(due - now) : 0, 0);
}

static void wake_done_cb(void *arg, int status,
			 const struct peer_result *refusal)
{
	struct pump *p = arg;

	p->wake_armed_for = 0;
	pump_kick(p);
}

static void wake_cb(uv_timer_t *h)
{
	struct pump *p = h->data;
	char *buf;
	size_t len;

	if (p->role != CONSENSUS_LEADER || p->stopping)
		return;
	if (fsm_cmd_wake(flowd_clock_now(&p->clock), &buf, &len) != 0)
		return;
	if (p->proposer.propose(p->proposer.arg, buf, len, wake_done_cb, p) !=
	    0) {
		p->wake_armed_for = 0;
		uv_timer_start(&p->wake_timer, wake_cb, WAKE_RETRY_MS, 0);
	}
}

/* ------------------------------------------------------------------------
 * The after-apply pass
 */

static void idle_cb(uv_idle_t *h)
{
	struct pump *p = h->data;

	uv_idle_stop(h);
	/* Everything applied since the last pass reaches PostgreSQL as one
	 * set of row images, and the readers as one new view. */
	flush_records(p);
	p->after_apply(p->after_apply_arg);
	wake_rearm(p);
}

void pump_kick(struct pump *p)
{
	if (!uv_is_active((uv_handle_t *)&p->idle))
		uv_idle_start(&p->idle, idle_cb);
}

/* ------------------------------------------------------------------------
 * Snapshots and PostgreSQL's progress
 */

static void nop_done_cb(void *arg, int status,
			const struct peer_result *refusal)
{
}

/* The applier advanced (its thread woke us). A snapshot that was postponed
 * until PostgreSQL held every task log can be taken now: raft looks at the
 * snapshot threshold only after applying an entry, so give it one. */
static void db_wake_cb(struct wake *w)
{
	struct pump *p = w->poll.data;
	char *buf;
	size_t len;

	pump_kick(p); /* the view shows PostgreSQL's progress */
	if (!p->snapshot_wanted || p->stopping || p->applier == NULL ||
	    p->role != CONSENSUS_LEADER ||
	    storage_applier_durable(p->applier) < p->log_pushed_index)
		return;
	if (fsm_cmd_nop(flowd_clock_now(&p->clock), &buf, &len) != 0)
		return;
	if (p->proposer.propose(p->proposer.arg, buf, len, nop_done_cb, p) == 0)
		p->snapshot_wanted = false;
}

/* The applier's thread: wake the loop. */
static void db_progress_cb(void *arg, uint64_t durable, int connected)
{
	struct pump *p = arg;

	wake_send(&p->db_wake);
}

int pump_apply(struct pump *p, uint64_t index, const void *buf, size_t len,
	       void **result)
{
	*result = fsm_apply(p->fsm, index, buf, len);
	pump_kick(p); /* after this batch: rows to PostgreSQL, processes */
	return 0;
}

/* A snapshot serialized by a child process. fork() gives the child the
 * state as of this entry, copy on write; the loop only pays for the fork
 * (page tables: milliseconds) instead of the serialization (seen: 150-480
 * ms for 4-10 MB on this machine under load, which stopped heartbeats long
 * enough for an election). A libuv worker reads the child's pipe
 * (pump_snapshot_collect); pump_snapshot_done reaps and frees. */
struct snap_job {
	pid_t pid;
	int fd;                   /* the pipe's read end */
	uint64_t index;
	size_t runs;
	int64_t t0, loop_ms;
	size_t len;
	int err;
	bool reaped, failed;      /* set by the worker, read after it */
};

static void child_write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			_exit(2);
		p += w;
		n -= (size_t)w;
	}
}

static struct snap_job *snapshot_fork(struct pump *p, int64_t t0)
{
	struct snap_job *j = calloc(1, sizeof *j);
	int fds[2];
	pid_t pid;

	if (j == NULL || pipe2(fds, O_CLOEXEC) != 0) {
		free(j);
		return NULL;
	}
	pid = fork();
	if (pid < 0) {
		close(fds[0]);
		close(fds[1]);
		free(j);
		return NULL;
	}
	if (pid == 0) {
		/* The child: only memory, then the pipe, then _exit (no
		 * atexit, no stdio). No signal reaches libuv's handlers here,
		 * and nothing is logged (another thread may have held
		 * stderr's lock at the fork). */
		sigset_t all;
		char *text;
		size_t len;

		sigfillset(&all);
		sigprocmask(SIG_SETMASK, &all, NULL);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		flowd_log_level = FLOWD_LOG_ERROR + 1;
		close(fds[0]);
		if (fsm_snapshot(p->fsm, &text, &len) != 0)
			_exit(1);
		child_write_all(fds[1], text, len);
		_exit(0);
	}
	close(fds[1]);
	j->pid = pid;
	j->fd = fds[0];
	j->index = p->fsm->applied_index;
	j->runs = p->fsm->n_runs;
	j->t0 = t0;
	j->loop_ms = flowd_clock_now(&p->clock) - t0;
	return j;
}

int pump_snapshot(struct pump *p, void **buf, size_t *len)
{
	char *text;
	int64_t t0;

	/* Rows not yet in PostgreSQL are either still queued in the applier
	 * (this process lives on) or, after a crash, rewritten from the
	 * restored state (pump_restore). Task logs are not part of the
	 * state, so the snapshot (and the log compaction after it) waits until
	 * PostgreSQL holds every log pushed so far. */
	if (p->fsm->pending_history)
		flush_records(p);
	if (p->applier != NULL &&
	    storage_applier_durable(p->applier) < p->log_pushed_index) {
		p->snapshot_wanted = true;
		return CONSENSUS_BUSY;
	}
	/* old specs PostgreSQL holds leave memory with this snapshot */
	fsm_release_specs(p->fsm, p->applier != NULL
					  ? storage_applier_durable(p->applier)
					  : UINT64_MAX);
	t0 = flowd_clock_now(&p->clock);
	if (p->fork_snapshots) {
		struct snap_job *j = snapshot_fork(p, t0);

		if (j != NULL) {
			*buf = j;
			*len = 0;
			return CONSENSUS_PENDING;
		}
		log_warn("snapshot: fork: %s (taking it on the loop)",
			 strerror(errno));
	}
	if (fsm_snapshot(p->fsm, &text, len) != 0)
		return CONSENSUS_NOMEM;
	log_info("snapshot index=%" PRIu64 " bytes=%zu runs=%zu took_ms=%" PRId64,
		 p->fsm->applied_index, *len, p->fsm->n_runs,
		 flowd_clock_now(&p->clock) - t0);
	if (p->metrics != NULL)
		node_metrics_snapshot(p->metrics,
				      (double)(flowd_clock_now(&p->clock) - t0) /
					      1000.0);
	*buf = text;
	return CONSENSUS_OK;
}

/* Worker thread: the child's bytes, then the child itself. */
int pump_snapshot_collect(void *arg, void *job, void **buf, size_t *len)
{
	struct snap_job *j = job;
	size_t cap = 1 << 20, n = 0;
	char *b = malloc(cap);
	int status = 0;

	*buf = NULL;
	*len = 0;
	while (b != NULL) {
		ssize_t r;

		if (n == cap) {
			char *g = realloc(b, cap * 2);

			if (g == NULL)
				break;
			b = g;
			cap *= 2;
		}
		r = read(j->fd, b + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			if (r < 0)
				j->err = errno;
			break;
		}
		n += (size_t)r;
	}
	while (waitpid(j->pid, &status, 0) < 0 && errno == EINTR)
		;
	j->reaped = true;
	if (b == NULL || j->err != 0 || !WIFEXITED(status) ||
	    WEXITSTATUS(status) != 0 || n == 0) {
		j->failed = true;
		free(b);
		return -1;
	}
	j->len = n;
	*buf = b;
	*len = n;
	return 0;
}

/* Loop: raft is done with the snapshot (written or not). */
void pump_snapshot_done(struct pump *p, void *job)
{
	struct snap_job *j = job;

	if (!j->reaped) {
		kill(j->pid, SIGKILL);
		while (waitpid(j->pid, NULL, 0) < 0 && errno == EINTR)
			;
	}
	close(j->fd);
	if (j->failed)
		log_error("snapshot index=%" PRIu64 ": the child failed "
			  "(will retry)",
			  j->index);
	else {
		log_info("snapshot index=%" PRIu64 " bytes=%zu runs=%zu "
			 "loop_ms=%" PRId64 " took_ms=%" PRId64,
			 j->index, j->len, j->runs, j->loop_ms,
			 flowd_clock_now(&p->clock) - j->t0);
		if (p->metrics != NULL)
			node_metrics_snapshot(
				p->metrics,
				(double)(flowd_clock_now(&p->clock) - j->t0) /
					1000.0);
	}
	free(j);
}

int pump_restore(struct pump *p, const void *buf, size_t len)
{
	flush_records(p); /* rows of the state being replaced */
	if (fsm_restore(p->fsm, buf, len) != 0)
		return -1;
	/* Entries up to the snapshot are not replayed. If PostgreSQL may not
	 * hold all of them (it lagged when the snapshot was taken, or it was
	 * unreachable at start), write the whole restored state again: every
	 * row is a full image, so this is idempotent. */
	if (!p->pg_index_known || p->pg_index < p->fsm->applied_index) {
		log_info("storage: reconciling PostgreSQL from the snapshot "
			 "snapshot_index=%" PRIu64 " db_applied_index=%s",
			 p->fsm->applied_index,
			 p->pg_index_known ? "behind" : "unknown");
		fsm_mark_all_dirty(p->fsm);
		pump_kick(p);
	}
	return 0;
}

/* ------------------------------------------------------------------------
 * Life cycle
 */

static void closed_cb(uv_handle_t *h)
{
	struct pump *p = h->data;

	if (--p->open_handles == 0)
		free(p);
}

static void close_handles(struct pump *p)
{
	uv_close((uv_handle_t *)&p->idle, closed_cb);
	wake_close(&p->db_wake, closed_cb);
	uv_close((uv_handle_t *)&p->wake_timer, closed_cb);
}

int pump_new(const struct pump_config *c, struct pump **out, char *errmsg,
	     size_t errlen)
{
	struct pump *p = calloc(1, sizeof *p);

	if (p == NULL) {
		snprintf(errmsg, errlen, "out of memory");
		return -1;
	}
	p->fsm = c->fsm;
	p->fork_snapshots = c->fork_snapshots;
	p->metrics = c->metrics;
	p->clock = c->clock;
	p->proposer = c->proposer;
	p->after_apply = c->after_apply;
	p->after_apply_arg = c->after_apply_arg;
	p->pg_index = c->pg_index;
	p->pg_index_known = c->pg_index_known;
	uv_idle_init(c->loop, &p->idle);
	p->idle.data = p;
	uv_timer_init(c->loop, &p->wake_timer);
	p->wake_timer.data = p;
	/* Before the applier's thread starts: it may report at once. */
	if (wake_init(c->loop, &p->db_wake, db_wake_cb) != 0)
		abort(); /* an eventfd at start: out of file descriptors */
	p->db_wake.poll.data = p;
	p->open_handles = 3;
	if (storage_applier_new(c->applier, db_progress_cb, p, &p->applier,
				errmsg, errlen) != 0) {
		close_handles(p);
		return -1;
	}
	*out = p;
	return 0;
}

struct storage_applier *pump_applier(struct pump *p)
{
	return p->applier;
}

void pump_role_set(struct pump *p, enum consensus_role role)
{
	p->role = role;
	/* The leader's applier writes PostgreSQL; the others follow it
	 * (storage/applier.c, "Standby"). */
	if (p->applier != NULL)
		storage_applier_set_standby(p->applier,
					    role != CONSENSUS_LEADER);
}

void pump_stop(struct pump *p)
{
	p->stopping = true;
	uv_timer_stop(&p->wake_timer);
	uv_idle_stop(&p->idle);
}

void pump_close(struct pump *p, unsigned drain_ms)
{
	flush_records(p);
	storage_applier_free(p->applier, drain_ms);
	p->applier = NULL;
	close_handles(p);
}
