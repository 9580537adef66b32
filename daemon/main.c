/* main.c - flowd's composition root: config, the loop, every module
 * created and wired together; start-up and the ordered shutdown.
 *
 * DESIGN
 *
 * The modules of daemon/ each own their state and know only what they are
 * handed; this file is the only one that knows them all (struct flowd below
 * is private to it). It connects them with small callbacks: the state
 * machine's hooks go to the runner (attempts to start or stop), liveness
 * (a node heard) and the scheduler (schedules changed); consensus's state
 * machine callbacks go to the pump; the pump's after-apply pass publishes
 * the read view and runs the runner's queue; every module that proposes a
 * command of its own does it through forward.c; and the role consensus
 * reports is fanned out to every module that cares. The wall clock
 * (CLOCK_REALTIME) is handed to the modules as a struct flowd_clock.
 *
 * Start: read the config; migrate the PostgreSQL schema (best effort: a
 * database that is down at start does not stop the node, the applier catches
 * up when it returns); start the pump (and with it the applier) and the
 * reader; create the modules that consensus may call while it starts (a
 * restored snapshot reaches the pump and the scheduler); the executor;
 * the Raft node on the loop (the first start bootstraps [peers]); the
 * modules that need the Raft node; the HTTP server; tell systemd READY=1.
 * Leadership then drives node_up and the leader's duties.
 *
 * Stop (SIGTERM/SIGINT), the order dependencies.md §5.7 asks for: the HTTP
 * server stops accepting; every module stops starting work; queued requests
 * get 503; the executor kills its process groups (their attempts are marked
 * lost by the next node_up); consensus_close waits for every in-flight
 * proposal before raft_close (raft 0.15 crashes otherwise); the in-flight
 * requests have by then been answered; the peer closes; the applier flushes
 * what it can; the HTTP server stops; each module closes its handles, and
 * the loop closes with no handle left.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "api/api.h"
#include "api/auth.h"
#include "consensus/consensus.h"
#include "core/fsm.h"
#include "core/log.h"
#include "core/tz.h"
#include "daemon/clock.h"
#include "daemon/config.h"
#include "daemon/executor.h"
#include "daemon/forward.h"
#include "daemon/liveness.h"
#include "daemon/metrics.h"
#include "daemon/outcomes.h"
#include "daemon/nodecred.h"
#include "daemon/peer.h"
#include "daemon/pump.h"
#include "daemon/reads.h"
#include "daemon/readview.h"
#include "daemon/routes.h"
#include "daemon/runner.h"
#include "daemon/scheduler.h"
#include "daemon/service.h"
#include "daemon/tail.h"
#include "daemon/tzdata.h"
#include "daemon/watch.h"
#include "storage/storage.h"

#define FLOWD_VERSION "0.1.0"

/* Every module of the process; main's alone. */
struct flowd {
	struct flowd_config *cfg;
	uv_loop_t *loop;
	uint64_t boot;                  /* random, new at every start */

	struct fsm fsm;
	struct consensus *raft;
	struct executor *exec;
	struct storage_reader *reader;
	struct api_server *api;
	struct api_server *metrics_api; /* node.metrics_address, or NULL */
	struct api_server *internal_api; /* node.internal_address, or NULL */
	struct api_token *tokens;       /* the API's users (tokens_build) */
	size_t n_tokens;
	struct nodecred cred;           /* how this node signs its requests */
	struct node_metrics *metrics;   /* GET /metrics */
	struct watch *watch;            /* GET /v1/watch */
	struct tails *tails;            /* running attempts' output */
	struct peer *peer;              /* requests to the leader's API */
	struct pump *pump;              /* after apply; owns the applier */
	struct scheduler *sched;        /* the leader's cron */
	struct outcomes *outcomes;      /* task_finish until committed */
	struct runner *runner;          /* placements -> processes */
	struct liveness *live;          /* node_up, node_alive, node_down */
	struct forward *fwd;            /* the way to the leader */
	struct readview *rv;            /* the view readers answer from */
	struct service *svc;            /* the API's backend */
	struct reads reads;             /* what the API's read handlers use */

	enum consensus_role role;
	uv_signal_t sigterm, sigint, sighup;
	uv_timer_t watchdog;
	bool stopping;
	int exit_code;
};

static int64_t realtime_now_ms(void *arg)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t loop_now_ms(void *arg)
{
	return (int64_t)uv_now(arg);
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
		v = (uint64_t)realtime_now_ms(NULL) ^ ((uint64_t)getpid() << 32);
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
 * Wiring: one module's callback into another
 */

/* struct forward_proposer: every module's own commands. */
static int propose_cb(void *arg, char *buf, size_t len, forward_done_cb cb,
		      void *cb_arg)
{
	struct flowd *d = arg;

	if (d->fwd == NULL) {
		free(buf);
		return -1;
	}
	return forward_command_send(d->fwd, buf, len, cb, cb_arg);
}

/* An after-apply pass is wanted (readview, runner). */
static void kick_cb(void *arg)
{
	struct flowd *d = arg;

	pump_kick(d->pump);
}

/* Room for api.connection_limit sockets besides the node's own files: the
 * soft limit of open files is raised toward the hard one (systemd's unit
 * sets LimitNOFILE; a shell's default soft limit is 1024). */
static void raise_nofile(rlim_t want)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want)
		return;
	rl.rlim_cur = rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want
			      ? rl.rlim_max
			      : want;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
		log_warn("setrlimit(RLIMIT_NOFILE, %llu): %s",
			 (unsigned long long)want, strerror(errno));
}

/* The pump's pass, once the rows are queued for PostgreSQL: readers see
 * the batch, then this node's processes start and stop. */
static void after_apply_cb(void *arg)
{
	struct flowd *d = arg;

	readview_publish(d->rv);
	/* the events of the batch, now that readers see its state */
	if (watch_published(d->watch) && d->api != NULL)
		api_server_kick(d->api);
	runner_run_queued(d->runner);
	node_metrics_loop(d->metrics, &d->fsm);
}

static void hook_count_cb(void *arg, const struct fsm_count *c)
{
	struct flowd *d = arg;

	node_metrics_count(d->metrics, c);
	watch_count(d->watch, c);
}

/* Streams waiting in the api look again (any thread). */
static void api_kick_cb(void *arg)
{
	struct flowd *d = arg;
	struct api_server *api = d->api;

	if (api != NULL)
		api_server_kick(api);
}

static void hook_changed_cb(void *arg, const struct fsm_change *c)
{
	struct flowd *d = arg;

	watch_changed(d->watch, c);
}

static void proposed_cb(void *arg, double seconds)
{
	struct flowd *d = arg;

	node_metrics_proposal(d->metrics, seconds);
}

static void hook_placed_cb(void *arg, struct fsm_run *run,
			   struct fsm_step *step, struct fsm_attempt *a)
{
	struct flowd *d = arg;

	runner_hook_placed(d->runner, run, step, a);
}

static void hook_stop_cb(void *arg, struct fsm_run *run, struct fsm_step *step,
			 struct fsm_attempt *a)
{
	struct flowd *d = arg;

	runner_hook_stop(d->runner, run, step, a);
}

static void hook_node_heard_cb(void *arg, uint64_t node)
{
	struct flowd *d = arg;

	liveness_hook_node_heard(d->live, node);
}

static void hook_schedules_cb(void *arg, struct fsm_flow *fl)
{
	struct flowd *d = arg;

	scheduler_hook_changed(d->sched, fl);
}

static int fsm_apply_cb(void *arg, uint64_t index, const void *buf, size_t len,
			void **result)
{
	struct flowd *d = arg;

	return pump_apply(d->pump, index, buf, len, result);
}

static int fsm_snapshot_cb(void *arg, void **buf, size_t *len)
{
	struct flowd *d = arg;

	return pump_snapshot(d->pump, buf, len);
}

static void fsm_snapshot_done_cb(void *arg, void *job)
{
	struct flowd *d = arg;

	pump_snapshot_done(d->pump, job);
}

static int fsm_restore_cb(void *arg, const void *buf, size_t len)
{
	struct flowd *d = arg;

	if (pump_restore(d->pump, buf, len) != 0)
		return -1;
	scheduler_rebuild(d->sched);
	watch_restored(d->watch, d->fsm.applied_index);
	api_kick_cb(d); /* watchers learn they missed events */
	return 0;
}

/* Consensus polls the role; each module that cares gets it. */
static void role_cb(void *arg, enum consensus_role role, uint64_t leader)
{
	struct flowd *d = arg;

	if (role != d->role)
		log_info("raft role=%d leader=%" PRIu64, (int)role, leader);
	d->role = role;
	node_metrics_leader(d->metrics, leader);
	liveness_role_set(d->live, role);   /* a new leader: full timeouts */
	scheduler_role_set(d->sched, role); /* a new leader: recompute */
	forward_role_set(d->fwd, role);
	service_role_set(d->svc, role);
	readview_role_set(d->rv, role);
	pump_role_set(d->pump, role);
	if (role == CONSENSUS_LEADER) {
		liveness_register(d->live);
		outcomes_send(d->outcomes);
	}
	pump_kick(d->pump);
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
	forward_detach(d->fwd);
	readview_detach(d->rv);
	service_detach(d->svc);
	/* Every proposal has completed, so every request has been answered
	 * except those still queued or forwarded: answer them too. */
	service_fail_all(d->svc, FLOWD_E_UNAVAILABLE, "unavailable",
			 "the node is shutting down");
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
	if (d->metrics_api != NULL)
		api_server_quiesce(d->metrics_api);
	if (d->internal_api != NULL)
		api_server_quiesce(d->internal_api);
	/* Every module stops starting work, and its timers. */
	forward_stop(d->fwd);
	service_stop(d->svc);
	readview_stop(d->rv);
	pump_stop(d->pump);
	outcomes_stop(d->outcomes);
	liveness_stop(d->live);
	runner_stop(d->runner);
	scheduler_stop(d->sched);
	service_fail_all(d->svc, FLOWD_E_UNAVAILABLE, "unavailable",
			 "the node is shutting down");
	executor_close(d->exec, exec_closed_cb, d);
}

static void signal_cb(uv_signal_t *h, int signum)
{
	begin_shutdown(h->data, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* SIGHUP: the API's certificate and key are read again (new handshakes
 * use them; the node keeps running), and Raft's TLS transport likewise. */
static void sighup_cb(uv_signal_t *h, int signum)
{
	struct flowd *d = h->data;
	char err[512];

	if (d->cfg->tls_cert_file == NULL) {
		log_info("SIGHUP: no [tls] configured; nothing to reload");
		return;
	}
	if (api_server_tls_reload(d->cfg->tls_cert_file, d->cfg->tls_key_file,
				  err, sizeof err) != 0)
		log_error("SIGHUP: api certificate not reloaded: %s", err);
	else
		log_info("SIGHUP: api certificate reloaded cert_file=%s",
			 d->cfg->tls_cert_file);
	if (d->raft != NULL && consensus_tls_reload(d->raft, err, sizeof err) != 0)
		log_error("SIGHUP: raft certificate not reloaded: %s", err);
	else if (d->raft != NULL)
		log_info("SIGHUP: raft certificate reloaded");
}

/* The API's users: every configured token with its role and a name for
 * the audit log ("admin-1" is the first of auth.admin_tokens; [tokens]
 * entries are named by their key). A value
 * "sha256:<hex>" is the hash `flowd hash-token` printed. */
static int tokens_build(const struct flowd_config *cfg,
			struct api_token **out, size_t *n_out)
{
	static const struct {
		size_t offset;
		enum api_role role;
	} lists[] = {
		{offsetof(struct flowd_config, reader_tokens), API_ROLE_READER},
		{offsetof(struct flowd_config, operator_tokens),
		 API_ROLE_OPERATOR},
		{offsetof(struct flowd_config, admin_tokens), API_ROLE_ADMIN},
	};
	struct api_token *t = NULL;
	size_t n = 0, cap = 0;

	for (size_t l = 0; l < sizeof lists / sizeof lists[0]; l++) {
		char **list = *(char ***)((char *)cfg + lists[l].offset);

		for (size_t i = 0; list != NULL && list[i] != NULL; i++) {
			if (n == cap) {
				struct api_token *g;

				cap = cap ? 2 * cap : 8;
				g = realloc(t, cap * sizeof *t);
				if (g == NULL)
					goto fail;
				t = g;
			}
			memset(&t[n], 0, sizeof t[n]);
			t[n].role = lists[l].role;
			snprintf(t[n].name, sizeof t[n].name, "%s-%zu",
				 api_role_name(lists[l].role), i + 1);
			if (api_token_set(&t[n], list[i]) != 0) {
				fprintf(stderr,
					"flowd: config: auth.%s_tokens: token "
					"%zu: \"sha256:\" must be followed by "
					"64 hex digits (flowd hash-token)\n",
					api_role_name(lists[l].role), i + 1);
				goto fail;
			}
			n++;
		}
	}
	for (unsigned i = 0; i < cfg->n_tokens; i++) {
		const struct config_token *ct = &cfg->tokens[i];
		struct api_token *g = realloc(t, (n + 1) * sizeof *t);

		if (g == NULL)
			goto fail;
		t = g;
		memset(&t[n], 0, sizeof t[n]);
		t[n].role = (enum api_role)api_role_parse(ct->role);
		snprintf(t[n].name, sizeof t[n].name, "%s", ct->name);
		if (api_token_set(&t[n], ct->value) != 0) {
			fprintf(stderr, "flowd: config: tokens.%s: \"sha256:\" "
					"must be followed by 64 hex digits "
					"(flowd hash-token)\n",
				ct->name);
			goto fail;
		}
		n++;
	}
	*out = t;
	*n_out = n;
	return 0;
fail:
	free(t);
	return -1;
}

/* `flowd hash-token`: the token on stdin (one line), its hash on stdout. */
static int hash_token_main(void)
{
	char line[1024], out[72];
	size_t n;

	if (fgets(line, sizeof line, stdin) == NULL) {
		fprintf(stderr, "flowd hash-token: give the token on stdin\n");
		return 2;
	}
	n = strlen(line);
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		line[--n] = '\0';
	if (n < 16 || n > 256) {
		fprintf(stderr, "flowd hash-token: a token has 16..256 "
				"characters (got %zu)\n", n);
		return 2;
	}
	api_token_hash_text(line, n, out);
	explicit_bzero(line, sizeof line);
	printf("%s\n", out);
	return 0;
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
		"       flowd hash-token < token   (prints sha256:<hex> for the config)\n"
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
	if (argc == 2 && strcmp(argv[1], "hash-token") == 0) {
		free(rest);
		return hash_token_main();
	}
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
	/* Who steps run as, and the modes of the config and the data dir
	 * (daemon/sandbox.c; docs/security.md). */
	struct sandbox_identity sandbox_id;
	if (sandbox_check_files(config_path, cfg.data_dir, errmsg,
				sizeof errmsg) != 0 ||
	    sandbox_resolve(&cfg, &sandbox_id, errmsg, sizeof errmsg) != 0) {
		fprintf(stderr, "flowd: config: %s\n", errmsg);
		config_free(&cfg);
		return 2;
	}
	if (tokens_build(&cfg, &d.tokens, &d.n_tokens) != 0) {
		config_free(&cfg);
		return 2;
	}
	if (d.n_tokens == 0) {
		/* docs/security.md: every local user would be an admin, and
		 * steps would run with root's rights over the API. */
		if (geteuid() == 0) {
			fprintf(stderr, "flowd: config: auth: no tokens are set; "
					"refusing to serve an open API as root "
					"(set auth.admin_tokens, or run as "
					"another user)\n");
			config_free(&cfg);
			return 2;
		}
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
	/* Memory freed goes back to the system. glibc raises its mmap and
	 * trim thresholds each time a large mmapped block is freed (up to
	 * 32 MB and 64 MB), after which every thread's heap kept that much
	 * free: after 290,000 runs, four thread arenas held 84 MB with 28 KB
	 * in use (malloc_stats; docs/design.md, "Memory"). Fixed thresholds
	 * turn that off: blocks of 1 MiB and more are mapped and unmapped,
	 * and a heap whose free top passes 4 MiB is trimmed. */
	mallopt(M_MMAP_THRESHOLD, 1 << 20);
	mallopt(M_TRIM_THRESHOLD, 4 << 20);
	tz_set_loader(tzdata_load);

	d.cfg = &cfg;
	d.boot = random_boot();
	raise_nofile((rlim_t)cfg.api_connection_limit + 1024);
	d.loop = uv_default_loop();
	struct flowd_clock wall = {.now_ms = realtime_now_ms};
	struct flowd_clock loop_clock = {.now_ms = loop_now_ms, .arg = d.loop};
	struct forward_proposer proposer = {.propose = propose_cb, .arg = &d};
	struct fsm_hooks hooks = {.arg = &d,
				  .attempt_placed = hook_placed_cb,
				  .attempt_stop = hook_stop_cb,
				  .node_heard = hook_node_heard_cb,
				  .schedules_changed = hook_schedules_cb,
				  .count = hook_count_cb,
				  .changed = hook_changed_cb};
	d.metrics = node_metrics_new(cfg.metrics_max_series, FLOWD_VERSION);
	d.watch = watch_new(cfg.api_watch_window, wall);
	d.tails = tails_new(api_kick_cb, &d);
	if (d.metrics == NULL || d.watch == NULL || d.tails == NULL) {
		watch_free(d.watch);
		tails_free(d.tails);
		node_metrics_free(d.metrics);
		log_error("out of memory");
		config_free(&cfg);
		return 1;
	}
	fsm_init(&d.fsm, &hooks);
	uv_signal_init(d.loop, &d.sigterm);
	d.sigterm.data = &d;
	uv_signal_init(d.loop, &d.sigint);
	d.sigint.data = &d;
	uv_signal_init(d.loop, &d.sighup);
	d.sighup.data = &d;
	uv_timer_init(d.loop, &d.watchdog);
	log_info("starting flowd %s node=%" PRIu64 " raft=%s api=%s data_dir=%s",
		 FLOWD_VERSION, cfg.node_id, cfg.raft_address, cfg.api_address,
		 cfg.data_dir);

	if (mkdir_p(cfg.data_dir) != 0) {
		log_error("data_dir %s: %s", cfg.data_dir, strerror(errno));
		goto err_loop;
	}

	/* PostgreSQL: best effort at start. */
	uint64_t pg_index = 0;
	bool pg_index_known = false;
	if (storage_migrate(cfg.conninfo, errmsg, sizeof errmsg) != 0)
		log_warn("storage: migrate: %s (will retry when the applier "
			 "connects)",
			 errmsg);
	else if (storage_applied_index(cfg.conninfo, &pg_index, errmsg,
				       sizeof errmsg) == 0)
		pg_index_known = true;
	struct storage_applier_config acfg = {.conninfo = cfg.conninfo,
					      .batch_max = cfg.db_batch_max,
					      .retry_ms = 200,
					      .thread_nice = (int)cfg.background_nice};
	struct pump_config pcfg = {.loop = d.loop,
				   .fsm = &d.fsm,
				   .applier = &acfg,
				   .pg_index = pg_index,
				   .pg_index_known = pg_index_known,
				   .clock = wall,
				   .proposer = proposer,
				   .after_apply = after_apply_cb,
				   .after_apply_arg = &d,
				   .fork_snapshots = cfg.snapshot_fork,
				   .metrics = d.metrics};
	if (pump_new(&pcfg, &d.pump, errmsg, sizeof errmsg) != 0) {
		log_error("storage: applier: %s", errmsg);
		goto err_loop;
	}
	if (storage_reader_new(cfg.conninfo, cfg.db_reader_pool, &d.reader,
			       errmsg, sizeof errmsg) != 0) {
		log_error("storage: reader: %s", errmsg);
		goto err_pump;
	}

	/* What consensus may reach while it starts (a restored snapshot). */
	d.sched = scheduler_new(&(struct scheduler_config){
		.loop = d.loop, .cfg = &cfg, .fsm = &d.fsm, .clock = wall,
		.proposer = proposer});
	if (d.sched == NULL) {
		log_error("scheduler: out of memory");
		goto err_modules;
	}
	d.cred = (struct nodecred){.node_id = cfg.node_id,
				   .secret = cfg.cluster_secret,
				   .ca_file = cfg.tls_cert_file ? cfg.tls_ca_file
								: NULL,
				   .cert_file = cfg.tls_cert_file,
				   .key_file = cfg.tls_key_file};
	d.peer = peer_new(d.loop, cfg.apply_timeout_ms + 1000, &d.cred);
	if (d.peer == NULL) {
		log_error("peer: cannot start");
		goto err_modules;
	}
	d.outcomes = outcomes_new(&(struct outcomes_config){
		.loop = d.loop, .cfg = &cfg, .clock = wall, .proposer = proposer});
	if (d.outcomes == NULL) {
		log_error("outcomes: out of memory");
		goto err_modules;
	}
	d.exec = executor_new(d.loop, cfg.kill_grace_ms, runner_exec_done);
	if (d.exec == NULL) {
		log_error("executor: cannot start");
		goto err_modules;
	}
	executor_set_output(d.exec, tails_output, d.tails);
	executor_set_nice(d.exec, (int)cfg.step_nice);
	if (executor_set_sandbox(d.exec, &sandbox_id, cfg.pass_env) != 0) {
		log_error("executor: sandbox: out of memory");
		goto err_modules;
	}
	d.runner = runner_new(&(struct runner_config){
		.cfg = &cfg, .boot = d.boot, .fsm = &d.fsm, .exec = d.exec,
		.outcomes = d.outcomes, .tails = d.tails, .kick = kick_cb,
		.kick_arg = &d});
	d.live = liveness_new(&(struct liveness_config){
		.loop = d.loop, .cfg = &cfg, .boot = d.boot, .fsm = &d.fsm,
		.clock = wall, .mono = loop_clock, .proposer = proposer});
	if (d.runner == NULL || d.live == NULL) {
		log_error("out of memory");
		goto err_exec;
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
		.proposed = proposed_cb,
		.proposed_arg = &d,
		.tls_ca_file = cfg.tls_ca_file,
		.tls_cert_file = cfg.tls_cert_file,
		.tls_key_file = cfg.tls_key_file,
	};
	struct consensus_fsm cfsm = {.arg = &d,
				     .apply = fsm_apply_cb,
				     .snapshot = fsm_snapshot_cb,
				     .snapshot_collect = pump_snapshot_collect,
				     .snapshot_done = fsm_snapshot_done_cb,
				     .restore = fsm_restore_cb};
	d.raft = consensus_new(d.loop, &ccfg, &cfsm, role_cb, &d, errmsg,
			       sizeof errmsg);
	if (d.raft == NULL) {
		log_error("raft: %s", errmsg);
		goto err_exec;
	}

	/* What needs the Raft node. The role callback reaches them only
	 * once the loop runs. Out of memory this early is not worth an
	 * ordered shutdown. */
	d.fwd = forward_new(&(struct forward_config){
		.cfg = &cfg, .raft = d.raft, .peer = d.peer, .fsm = &d.fsm});
	d.rv = readview_new(&(struct readview_config){
		.loop = d.loop, .cfg = &cfg, .fsm = &d.fsm, .raft = d.raft,
		.applier = pump_applier(d.pump), .sched = d.sched,
		.live = d.live, .kick = kick_cb, .kick_arg = &d});
	d.svc = d.fwd == NULL || d.rv == NULL ? NULL
		: service_new(&(struct service_config){
			  .loop = d.loop, .cfg = &cfg, .fsm = &d.fsm,
			  .raft = d.raft, .fwd = d.fwd, .rv = d.rv,
			  .applier = pump_applier(d.pump), .clock = wall});
	if (d.svc == NULL) {
		log_error("out of memory");
		exit(1);
	}

	struct api_config apicfg = {
		.address = cfg.api_address,
		.routes = routes_table,
		.tokens = d.tokens,
		.n_tokens = d.n_tokens,
		.cluster_secret = cfg.cluster_secret,
		.tls_cert_file = cfg.tls_cert_file,
		.tls_key_file = cfg.tls_key_file,
		.tls_client_ca_file = cfg.tls_client_ca_file,
		.per_address_limit = cfg.api_per_address_limit,
		.read_timeout_s = cfg.api_read_timeout_s,
		.limits = &cfg.limits,
		.threads = cfg.api_threads,
		.connection_limit = cfg.api_connection_limit,
		.connection_timeout_s = cfg.api_connection_timeout_s,
		.thread_nice = (int)cfg.background_nice,
		.metrics = node_metrics_registry(d.metrics),
		.max_streams = cfg.api_max_streams,
		.heartbeat_ms = cfg.api_stream_heartbeat_ms,
	};
	d.reads = (struct reads){.reader = d.reader,
				 .views = readview_store(d.rv),
				 .clock = wall,
				 .metrics = d.metrics,
				 .feed = watch_feed(d.watch),
				 .max_page = (unsigned)cfg.limits.max_runs_page,
				 .node_id = cfg.node_id,
				 .tails = d.tails,
				 .kick = api_kick_cb,
				 .kick_arg = &d,
				 .max_relays = cfg.api_max_log_follows,
				 .thread_nice = (int)cfg.background_nice,
				 .cred = &d.cred,
				 .cfg = &cfg};
	struct api_backend backend = {.arg = d.svc,
				      .submit = service_submit_cb,
				      .read_arg = &d.reads};
	if (api_server_start(&apicfg, &backend, d.reader, readview_store(d.rv),
			     &d.api, errmsg, sizeof errmsg) != 0) {
		log_error("api: %s", errmsg);
		begin_shutdown(&d, "api failed to start");
		d.exit_code = 1;
	} else if (cfg.metrics_address[0] != '\0' &&
		   api_server_start(
			   &(struct api_config){
				   .address = cfg.metrics_address,
				   .routes = routes_metrics_table,
				   .limits = &cfg.limits,
				   .threads = 1,
				   .connection_limit = 64,
				   .connection_timeout_s =
					   cfg.api_connection_timeout_s,
				   .thread_nice = (int)cfg.background_nice},
			   &backend, NULL, readview_store(d.rv),
			   &d.metrics_api, errmsg, sizeof errmsg) != 0) {
		log_error("api: metrics: %s", errmsg);
		begin_shutdown(&d, "the metrics listener failed to start");
		d.exit_code = 1;
	} else if (cfg.internal_address[0] != '\0' &&
		   api_server_start(
			   &(struct api_config){
				   .address = cfg.internal_address,
				   .routes = routes_table,
				   .node_only = 1,
				   .cluster_secret = cfg.cluster_secret,
				   .tls_cert_file = cfg.tls_cert_file,
				   .tls_key_file = cfg.tls_key_file,
				   .limits = &cfg.limits,
				   .threads = 1,
				   .connection_limit = 256,
				   .connection_timeout_s =
					   cfg.api_connection_timeout_s,
				   .read_timeout_s = cfg.api_read_timeout_s,
				   .thread_nice = (int)cfg.background_nice,
				   .max_streams = cfg.api_max_log_follows},
			   &backend, d.reader, readview_store(d.rv),
			   &d.internal_api, errmsg, sizeof errmsg) != 0) {
		log_error("api: internal: %s", errmsg);
		begin_shutdown(&d, "the internal listener failed to start");
		d.exit_code = 1;
	} else {
		uv_signal_start(&d.sigterm, signal_cb, SIGTERM);
		uv_signal_start(&d.sigint, signal_cb, SIGINT);
		uv_signal_start(&d.sighup, sighup_cb, SIGHUP);
		liveness_start(d.live);
		if (sd_watchdog_enabled(0, &wd_usec) > 0 && wd_usec > 0)
			uv_timer_start(&d.watchdog, watchdog_cb, wd_usec / 2000,
				       wd_usec / 2000);
		sd_notify(0, "READY=1");
		log_info("ready api=%s://%s", cfg.tls_cert_file ? "https" : "http",
			 cfg.api_address);
	}

	uv_run(d.loop, UV_RUN_DEFAULT);

	/* raft and the executor are closed; answer what remains. */
	while (d.api != NULL && api_server_pending(d.api) > 0)
		uv_run(d.loop, UV_RUN_NOWAIT);
	/* Relays of other nodes' logs: their streams ended at quiesce, so
	 * each thread sees it cancelled within a second; none may outlive
	 * the server it kicks (nor d.reads). */
	for (int i = 0; i < 1000 && atomic_load(&d.reads.relays) > 0; i++)
		usleep(10000);
	if (atomic_load(&d.reads.relays) > 0)
		log_error("api: %u log relays still running at exit",
			  atomic_load(&d.reads.relays));
	if (d.api != NULL)
		api_server_stop(d.api);
	d.api = NULL;
	if (d.metrics_api != NULL)
		api_server_stop(d.metrics_api);
	d.metrics_api = NULL;
	if (d.internal_api != NULL)
		api_server_stop(d.internal_api);
	d.internal_api = NULL;
	api_server_tls_unload();
	readview_close(d.rv);
	pump_close(d.pump, 2000); /* the last rows, then the applier stops */
	storage_reader_free(d.reader);
	scheduler_close(d.sched);
	liveness_close(d.live);
	outcomes_close(d.outcomes);
	service_close(d.svc);
	runner_free(d.runner);
	forward_free(d.fwd);
	uv_walk(d.loop, close_handles_cb, NULL);
	uv_run(d.loop, UV_RUN_DEFAULT);
	fsm_close(&d.fsm);
	node_metrics_free(d.metrics);
	watch_free(d.watch);
	tails_free(d.tails);
	rv = uv_loop_close(d.loop) == 0 ? d.exit_code : 1;
	if (rv == 0)
		log_info("stopped cleanly");
	free(d.tokens);
	config_free(&cfg);
	return rv;

err_exec:
	executor_close(d.exec, NULL, NULL);
err_modules:
	if (d.peer != NULL) {
		/* its worker is joined and it is freed from the loop */
		peer_close(d.peer, peer_closed_cb, &d);
		while (d.peer != NULL)
			uv_run(d.loop, UV_RUN_ONCE);
	}
	if (d.live != NULL)
		liveness_close(d.live);
	if (d.outcomes != NULL)
		outcomes_close(d.outcomes);
	scheduler_close(d.sched);
	storage_reader_free(d.reader);
err_pump:
	pump_close(d.pump, 0);
err_loop:
	uv_walk(d.loop, close_handles_cb, NULL);
	uv_run(d.loop, UV_RUN_DEFAULT);
	uv_loop_close(d.loop);
	runner_free(d.runner); /* after the executor's last callback */
	fsm_close(&d.fsm);
	node_metrics_free(d.metrics);
	watch_free(d.watch);
	tails_free(d.tails);
	free(d.tokens);
	config_free(&cfg);
	return 1;
}
