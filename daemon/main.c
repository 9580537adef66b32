/* main.c - flowd's composition root: config, the loop, and every module
 * wired together; start-up and the ordered shutdown.
 *
 * DESIGN
 *
 * Start: read the config; migrate the PostgreSQL schema (best effort: a
 * database that is down at start does not stop the node, the applier catches
 * up when it returns); start the applier and reader; create the executor and
 * the Raft node on the loop (the first start bootstraps [peers]); start the
 * HTTP server; tell systemd READY=1. Leadership then drives node_up and the
 * retry timer (tasks.c).
 *
 * Stop (SIGTERM/SIGINT), the order dependencies.md §5.7 asks for: the HTTP
 * server stops accepting; queued requests get 503; the executor kills its
 * process groups (their attempts are marked lost by the next node_up);
 * consensus_close waits for every in-flight proposal before raft_close
 * (raft 0.15 crashes otherwise); the in-flight requests have by then been
 * answered; the applier flushes what it can; the HTTP server stops; the loop
 * closes with no handle left.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/tz.h"
#include "core/view.h"
#include "daemon/daemon.h"
#include "daemon/tzdata.h"

#define FLOWD_VERSION "0.1.0"

int64_t flowd_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t random_boot(void)
{
	uint64_t v = 0;
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);

	if (fd >= 0) {
		if (read(fd, &v, sizeof v) != (ssize_t)sizeof v)
			v = 0;
		close(fd);
	}
	if (v == 0)
		v = (uint64_t)flowd_now_ms() ^ ((uint64_t)getpid() << 32);
	return v & 0x7fffffffffffffffULL; /* fits a JSON integer */
}

static int mkdir_p(const char *path)
{
	char buf[1024];
	size_t n = strlen(path);

	if (n == 0 || n >= sizeof buf)
		return -1;
	memcpy(buf, path, n + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0700) != 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	if (mkdir(buf, 0700) != 0 && errno != EEXIST)
		return -1;
	return 0;
}

static bool loopback(const char *addr)
{
	return strncmp(addr, "127.", 4) == 0;
}

/* ------------------------------------------------------------------------
 * Consensus <-> state machine glue
 */

static int fsm_apply_cb(void *arg, uint64_t index, const void *buf, size_t len,
			void **result)
{
	struct flowd *d = arg;

	*result = fsm_apply(&d->fsm, index, buf, len);
	tasks_kick(d); /* after this batch: rows to PostgreSQL, processes */
	return 0;
}

static int fsm_snapshot_cb(void *arg, void **buf, size_t *len)
{
	struct flowd *d = arg;
	char *text;

	/* Rows not yet in PostgreSQL are either still queued in the applier
	 * (this process lives on) or, after a crash, rewritten from the
	 * restored state (fsm_restore_cb). Task logs are not part of the
	 * state, so the snapshot (and the log compaction after it) waits until
	 * PostgreSQL holds every log pushed so far. */
	if (d->fsm.pending_history)
		tasks_flush_records(d);
	if (d->applier != NULL &&
	    storage_applier_durable(d->applier) < d->log_pushed_index) {
		d->snapshot_wanted = true;
		return CONSENSUS_BUSY;
	}
	int64_t t0 = flowd_now_ms();
	if (fsm_snapshot(&d->fsm, &text, len) != 0)
		return CONSENSUS_NOMEM;
	log_info("snapshot index=%" PRIu64 " bytes=%zu runs=%zu took_ms=%" PRId64,
		 d->fsm.applied_index, *len, d->fsm.n_runs, flowd_now_ms() - t0);
	*buf = text;
	return CONSENSUS_OK;
}

/* The applier's thread: wake the loop (uv_async_send is thread-safe). */
static void db_progress_cb(void *arg, uint64_t durable, int connected)
{
	struct flowd *d = arg;

	uv_async_send(&d->db_async);
}

static int fsm_restore_cb(void *arg, const void *buf, size_t len)
{
	struct flowd *d = arg;

	tasks_flush_records(d); /* rows of the state being replaced */
	if (fsm_restore(&d->fsm, buf, len) != 0)
		return -1;
	/* Entries up to the snapshot are not replayed. If PostgreSQL may not
	 * hold all of them (it lagged when the snapshot was taken, or it was
	 * unreachable at start), write the whole restored state again: every
	 * row is a full image, so this is idempotent. */
	if (!d->pg_index_known || d->pg_index < d->fsm.applied_index) {
		log_info("storage: reconciling PostgreSQL from the snapshot "
			 "snapshot_index=%" PRIu64 " db_applied_index=%s",
			 d->fsm.applied_index,
			 d->pg_index_known ? "behind" : "unknown");
		fsm_mark_all_dirty(&d->fsm);
		tasks_kick(d);
	}
	scheduler_rebuild(d);
	return 0;
}

/* ------------------------------------------------------------------------
 * Shutdown
 */

static void close_handles_cb(uv_handle_t *h, void *arg)
{
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

static void peer_closed_cb(void *arg)
{
	struct flowd *d = arg;

	d->peer = NULL;
	uv_stop(d->loop);
}

static void raft_closed_cb(void *arg)
{
	struct flowd *d = arg;

	d->raft = NULL;
	/* Every proposal has completed, so every request has been answered
	 * except those still queued or forwarded: answer them too. */
	service_fail_all(d, 503, "unavailable", "the node is shutting down");
	if (d->peer != NULL)
		peer_close(d->peer, peer_closed_cb, d);
	else
		uv_stop(d->loop);
}

static void exec_closed_cb(void *arg)
{
	struct flowd *d = arg;

	d->exec = NULL;
	consensus_close(d->raft, raft_closed_cb, d);
}

static void begin_shutdown(struct flowd *d, const char *why)
{
	if (d->stopping)
		return;
	d->stopping = true;
	log_info("shutting down: %s", why);
	sd_notify(0, "STOPPING=1");
	if (d->api != NULL)
		api_server_quiesce(d->api);
	uv_timer_stop(&d->wake_timer);
	uv_timer_stop(&d->finish_timer);
	uv_timer_stop(&d->leader_timer);
	uv_timer_stop(&d->alive_timer);
	uv_timer_stop(&d->view_timer);
	uv_idle_stop(&d->after_apply);
	service_fail_all(d, 503, "unavailable", "the node is shutting down");
	executor_close(d->exec, exec_closed_cb, d);
}

static void signal_cb(uv_signal_t *h, int signum)
{
	begin_shutdown(h->data, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void watchdog_cb(uv_timer_t *h)
{
	sd_notify(0, "WATCHDOG=1");
}

/* ------------------------------------------------------------------------
 * main
 */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: flowd --config FILE [--section.key=value ...] [--check]\n"
		"       flowd --version\n"
		"Settings and their defaults: docs/configuration.md\n");
}

int main(int argc, char **argv)
{
	struct flowd_config cfg;
	struct flowd d;
	const char *config_path = NULL;
	char errmsg[512];
	char **rest = calloc((size_t)argc + 1, sizeof *rest);
	int n_rest = 0, rv = 1, check_only = 0;
	uint64_t wd_usec = 0;

	memset(&d, 0, sizeof d);
	memset(&cfg, 0, sizeof cfg);
	if (rest == NULL)
		return 1;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
			config_path = argv[++i];
		} else if (strncmp(argv[i], "--config=", 9) == 0) {
			config_path = argv[i] + 9;
		} else if (strcmp(argv[i], "--help") == 0 ||
			   strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			free(rest);
			return 0;
		} else if (strcmp(argv[i], "--check") == 0) {
			check_only = 1;
		} else if (strcmp(argv[i], "--version") == 0) {
			printf("flowd %s\n", FLOWD_VERSION);
			free(rest);
			return 0;
		} else {
			rest[n_rest++] = argv[i];
		}
	}
	if (config_load(&cfg, config_path, n_rest, rest, errmsg,
			sizeof errmsg) != 0) {
		fprintf(stderr, "flowd: %s\n", errmsg);
		free(rest);
		return 2;
	}
	free(rest);
	if (check_only) {
		printf("flowd: config ok: node %" PRIu64 " of %u\n", cfg.node_id,
		       cfg.n_peers);
		config_free(&cfg);
		return 0;
	}
	flowd_log_level = cfg.log_level;
	if (cfg.admin_tokens[0] == NULL && cfg.reader_tokens[0] == NULL) {
		if (!loopback(cfg.api_address)) {
			fprintf(stderr, "flowd: config: auth: no tokens are set "
					"and node.api_address is not loopback; "
					"refusing to serve an open API\n");
			config_free(&cfg);
			return 2;
		}
		log_warn("auth: no tokens configured: the API on %s accepts "
			 "every request",
			 cfg.api_address);
	}
	signal(SIGPIPE, SIG_IGN);
	tz_set_loader(tzdata_load);

	d.cfg = &cfg;
	d.boot = random_boot();
	d.loop = uv_default_loop();
	pthread_mutex_init(&d.inbox_lock, NULL);
	log_info("starting flowd %s node=%" PRIu64 " raft=%s api=%s data_dir=%s",
		 FLOWD_VERSION, cfg.node_id, cfg.raft_address, cfg.api_address,
		 cfg.data_dir);

	if (mkdir_p(cfg.data_dir) != 0) {
		log_error("data_dir %s: %s", cfg.data_dir, strerror(errno));
		goto err_cfg;
	}

	/* PostgreSQL: best effort at start. */
	if (storage_migrate(cfg.conninfo, errmsg, sizeof errmsg) != 0)
		log_warn("storage: migrate: %s (will retry when the applier "
			 "connects)",
			 errmsg);
	else if (storage_applied_index(cfg.conninfo, &d.pg_index, errmsg,
				       sizeof errmsg) == 0)
		d.pg_index_known = true;
	struct storage_applier_config acfg = {.conninfo = cfg.conninfo,
					      .batch_max = cfg.db_batch_max,
					      .retry_ms = 200,
					      .thread_nice = (int)cfg.background_nice};
	uv_async_init(d.loop, &d.db_async, tasks_db_progress_cb);
	d.db_async.data = &d;
	if (storage_applier_new(&acfg, db_progress_cb, &d, &d.applier, errmsg,
				sizeof errmsg) != 0) {
		log_error("storage: applier: %s", errmsg);
		goto err_cfg;
	}
	if (storage_reader_new(cfg.conninfo, cfg.db_reader_pool, &d.reader,
			       errmsg, sizeof errmsg) != 0) {
		log_error("storage: reader: %s", errmsg);
		goto err_applier;
	}

	struct fsm_hooks hooks = {.arg = &d,
				  .attempt_placed = tasks_hook_placed,
				  .attempt_stop = tasks_hook_stop,
				  .node_heard = tasks_hook_node_heard,
				  .schedules_changed = scheduler_hook_changed};
	fsm_init(&d.fsm, &hooks);
	if (readview_init(&d) != 0) {
		log_error("readview: out of memory");
		goto err_loop;
	}
	if (scheduler_new(&d) != 0) {
		log_error("scheduler: out of memory");
		goto err_loop;
	}

	uv_async_init(d.loop, &d.inbox_async, service_inbox_cb);
	d.inbox_async.data = &d;
	uv_idle_init(d.loop, &d.after_apply);
	d.after_apply.data = &d;
	uv_timer_init(d.loop, &d.wake_timer);
	d.wake_timer.data = &d;
	uv_timer_init(d.loop, &d.finish_timer);
	d.finish_timer.data = &d;
	uv_timer_init(d.loop, &d.leader_timer);
	d.leader_timer.data = &d;
	uv_signal_init(d.loop, &d.sigterm);
	d.sigterm.data = &d;
	uv_signal_init(d.loop, &d.sigint);
	d.sigint.data = &d;
	uv_timer_init(d.loop, &d.watchdog);
	uv_timer_init(d.loop, &d.alive_timer);
	d.alive_timer.data = &d;

	d.peer = peer_new(d.loop, cfg.apply_timeout_ms + 1000);
	if (d.peer == NULL) {
		log_error("peer: cannot start");
		goto err_loop;
	}
	d.exec = executor_new(d.loop, cfg.kill_grace_ms, tasks_exec_done);
	if (d.exec != NULL)
		executor_set_nice(d.exec, (int)cfg.step_nice);
	if (d.exec == NULL) {
		log_error("executor: cannot start");
		goto err_loop;
	}
	/* Steps that outlived a flowd that was killed are stopped before this
	 * node registers and takes new work (their attempts are then marked
	 * lost and retried by the cluster). */
	{
		char pid_file[1100];
		snprintf(pid_file, sizeof pid_file, "%s/steps.pids", cfg.data_dir);
		executor_kill_orphans(pid_file);
		if (executor_set_pid_file(d.exec, pid_file) != 0)
			log_warn("executor: %s: %s", pid_file, strerror(errno));
	}

	struct consensus_peer peers[CONFIG_MAX_PEERS];
	for (unsigned i = 0; i < cfg.n_peers; i++) {
		peers[i].id = cfg.peers[i].id;
		peers[i].address = cfg.peers[i].raft_address;
	}
	/* The snapshot threshold is staggered by node id (+1/8 of it per id,
	 * modulo 8): nodes that apply the same entries would otherwise all
	 * stop their loops for a snapshot at the same index, and a commit
	 * needs two of them. The trailing log follows it (dqlite's rule:
	 * trailing >= threshold). */
	unsigned snapshot_threshold =
		cfg.snapshot_threshold +
		(unsigned)(cfg.node_id % 8) * (cfg.snapshot_threshold / 8);
	struct consensus_config ccfg = {
		.id = cfg.node_id,
		.address = cfg.raft_address,
		.data_dir = cfg.data_dir,
		.peers = peers,
		.n_peers = cfg.n_peers,
		.heartbeat_ms = cfg.heartbeat_ms,
		.election_ms = cfg.election_ms,
		.snapshot_threshold = snapshot_threshold,
		.snapshot_trailing = cfg.snapshot_trailing > snapshot_threshold
					     ? cfg.snapshot_trailing
					     : snapshot_threshold,
		.pre_vote = cfg.pre_vote,
	};
	struct consensus_fsm cfsm = {.arg = &d,
				     .apply = fsm_apply_cb,
				     .snapshot = fsm_snapshot_cb,
				     .restore = fsm_restore_cb};
	d.raft = consensus_new(d.loop, &ccfg, &cfsm, tasks_role_cb, &d, errmsg,
			       sizeof errmsg);
	if (d.raft == NULL) {
		log_error("raft: %s", errmsg);
		goto err_exec;
	}

	struct api_config apicfg = {
		.address = cfg.api_address,
		.admin_tokens = cfg.admin_tokens,
		.reader_tokens = cfg.reader_tokens,
		.limits = &cfg.limits,
		.threads = cfg.api_threads,
		.connection_limit = cfg.api_connection_limit,
		.connection_timeout_s = cfg.api_connection_timeout_s,
		.thread_nice = (int)cfg.background_nice,
	};
	struct api_backend backend = {.arg = &d, .submit = service_submit_cb};
	if (api_server_start(&apicfg, &backend, d.reader, d.views, &d.api,
			     errmsg, sizeof errmsg) != 0) {
		log_error("api: %s", errmsg);
		begin_shutdown(&d, "api failed to start");
		d.exit_code = 1;
	} else {
		uv_signal_start(&d.sigterm, signal_cb, SIGTERM);
		uv_signal_start(&d.sigint, signal_cb, SIGINT);
		uv_timer_start(&d.leader_timer, tasks_leader_timer_cb, 200, 200);
		if (cfg.n_peers > 1)
			uv_timer_start(&d.alive_timer, tasks_alive_timer_cb,
				       cfg.node_heartbeat_ms,
				       cfg.node_heartbeat_ms);
		if (sd_watchdog_enabled(0, &wd_usec) > 0 && wd_usec > 0)
			uv_timer_start(&d.watchdog, watchdog_cb, wd_usec / 2000,
				       wd_usec / 2000);
		sd_notify(0, "READY=1");
		log_info("ready api=http://%s", cfg.api_address);
	}

	uv_run(d.loop, UV_RUN_DEFAULT);

	/* raft and the executor are closed; answer what remains. */
	while (d.api != NULL && api_server_pending(d.api) > 0)
		uv_run(d.loop, UV_RUN_NOWAIT);
	if (d.api != NULL)
		api_server_stop(d.api);
	d.api = NULL;
	readview_close(&d);
	tasks_flush_records(&d);
	storage_applier_free(d.applier, 2000);
	d.applier = NULL;
	storage_reader_free(d.reader);
	d.reader = NULL;
	scheduler_close(&d);
	uv_walk(d.loop, close_handles_cb, NULL);
	uv_run(d.loop, UV_RUN_DEFAULT);
	tasks_clear(&d);
	view_store_free(d.views);
	fsm_close(&d.fsm);
	rv = uv_loop_close(d.loop) == 0 ? d.exit_code : 1;
	if (rv == 0)
		log_info("stopped cleanly");
	pthread_mutex_destroy(&d.inbox_lock);
	free(d.inbox);
	free(d.work);
	config_free(&cfg);
	return rv;

err_exec:
	executor_close(d.exec, NULL, NULL);
err_loop:
	if (d.peer != NULL)
		peer_close(d.peer, NULL, NULL);
	scheduler_close(&d);
	uv_walk(d.loop, close_handles_cb, NULL);
	uv_run(d.loop, UV_RUN_DEFAULT);
	uv_loop_close(d.loop);
	view_store_free(d.views);
	fsm_close(&d.fsm);
	storage_reader_free(d.reader);
err_applier:
	storage_applier_free(d.applier, 0);
err_cfg:
	config_free(&cfg);
	return 1;
}
