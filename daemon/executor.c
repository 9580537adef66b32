/* executor.c - step attempts as child processes, spawned off the loop. */

/*
 * DESIGN
 *
 * Why a spawner thread. uv_spawn() fork()s the whole daemon (copying its page
 * tables) and then blocks the loop thread until the child has exec'd: 1-3 ms
 * per spawn, which capped flowd at ~800 runs/s. Here the loop thread only
 * prepares a spawn job; one spawner thread owned by the executor vfork()s
 * (clone(CLONE_VM|CLONE_VFORK), as glibc's posix_spawn does: no page-table
 * copy; the thread waits until the child has exec'd or died, and an exec
 * failure comes back through a variable the two share) and hands {pid,
 * pidfd, errno} back through an eventfd the loop polls (daemon/wake.h).
 *
 * Why vfork and not posix_spawn. posix_spawn cannot change the user (no
 * setuid action), and a step must not run as flowd's user when run_as is
 * set (daemon/sandbox.h). The child code (child_exec) is what glibc's
 * posix_spawn child does, plus closing every descriptor above 2 and
 * setgroups/setgid/setuid: only async-signal-safe calls, no allocation, no
 * locks, nothing written but the error variable, the identity calls raw
 * (glibc's setuid would signal the parent's threads). The spawner thread
 * blocks every signal, so no handler of flowd's runs in the child before it
 * resets them.
 *
 * Happy path.
 *   1. executor_start() (loop) copies the task, builds argv (or /bin/sh -c)
 *      and the full environment (the base minus the keys task->env
 *      redefines, then task->env; the base is flowd's environ, or the clean
 *      one executor_set_sandbox built), creates the stdout and stderr pipes
 *      with pipe2(O_CLOEXEC), links the task into e->tasks and queues it
 *      (mutex + condvar). executor_has()/executor_count() see it from here on.
 *   2. The spawner thread pops the job, resolves argv[0] (below), and
 *      vforks; the child does setsid() (pid == pgid, so a signal to -pid
 *      reaches the whole group), resets every signal to SIG_DFL (flowd
 *      ignores SIGPIPE; children must not inherit that), puts stdin on
 *      /dev/null and the pipe write ends on 1 and 2, closes every other
 *      descriptor (libcurl's socket pair, listeners, the pid file: not all
 *      of them are close-on-exec), switches user when sandboxed (setgroups,
 *      setgid, setuid), enters the workdir as that user, empties its signal
 *      mask and execs. The spawner then closes the write ends itself (the
 *      parent must not keep them, or EOF never comes), opens a pidfd for
 *      the child, appends the result to the done list and wake_send()s; the
 *      loop drains the whole list per wakeup, so sends coalesce.
 *   3. On the loop: started_ms is taken, the read ends go into uv_pipe_open()
 *      and uv_read_start() (each stream keeps at most max_log_bytes; the rest
 *      is read and dropped, so the child never blocks on a full pipe, and
 *      `truncated` is set), a uv_poll_t watches the pidfd (readable = the
 *      child exited) and the timeout starts. When the pidfd fires we reap with
 *      waitpid(pid, WNOHANG) (no SIGCHLD handler is involved; libuv's own only
 *      waits for the pids it spawned itself, and we never wait for -1).
 *   4. When the child is reaped AND both pipes reached EOF, the task is
 *      unlinked, the done callback fires once, and its handles (two pipes, two
 *      timers, the pidfd poll) are closed; the task is freed in the last close
 *      callback, and the pidfd is closed in the poll's own close callback
 *      (closing it earlier would let libuv's EPOLL_CTL_DEL hit a reused fd).
 *
 * argv[0] lookup. A name without '/' is searched in the CHILD's PATH, i.e.
 * the PATH of the merged environment (task->env wins), which is what the
 * old uv_spawn path (execvp after environ = env) did. The search runs on the
 * spawner thread (stat/access never touch the loop): the first regular,
 * executable file wins; PATH unset means "/bin:/usr/bin" (glibc's execvp
 * default); a relative PATH entry is taken relative to workdir when one is
 * set. Not found: ENOENT (EACCES if a match existed but was not executable).
 * Unlike execvp there is no /bin/sh retry for a script without "#!" (ENOEXEC
 * is reported as spawn_failed). The lookup runs as flowd: a file the step's
 * user (executor.run_as) may not execute fails at exec, with EACCES.
 *
 * Handles per task:
 *   out, err   the child's stdout and stderr (uv_pipe_open'ed read ends).
 *   kill_timer timeout_s, then kill_grace_ms: SIGTERM to -pid, then SIGKILL.
 *   aux_timer  0 ms "report now" timer (spawn failure, job dropped before
 *              spawning), or the 500 ms drain limit after exit.
 *   exit_poll  the pidfd; only once the child exists (has_poll).
 *
 * Failure modes.
 *   - The spawn fails (ENOENT, EACCES, bad workdir, a workdir the step's
 *     user cannot enter, setuid refused, ...): the child _exits 127 before
 *     exec, the spawner reaps it, and the callback
 *     still fires once, from the loop, with "spawn_failed" and detail
 *     uv_strerror(-errno) (libuv's wording, as uv_spawn reported it before).
 *   - executor_stop() while the job is still queued: the job is taken out of
 *     the queue, never spawned, and reports "stopped" (exit_code -1,
 *     term_signal 0). While the spawner is inside the spawn (pid not known
 *     yet): the request is remembered and SIGTERM goes to the group as soon
 *     as the pid is known, then SIGKILL after the grace period as usual.
 *   - Timeout (counted from the spawn, not from the queueing) or
 *     executor_stop(): SIGTERM to the group, SIGKILL after the grace period.
 *     The first cause wins the reason ("timeout"/"stopped").
 *   - A grandchild that left the group (its own setsid) may hold a pipe open
 *     forever: 500 ms after the exit we report anyway.
 *   - Leftovers in the group after the main process exits get SIGKILL at once
 *     (ESRCH when the group is already gone is ignored).
 *   - pidfd_open() unavailable (kernel < 5.3, seccomp: ENOSYS/EPERM) or
 *     failing for one child: that child is watched by a uv_signal_t on
 *     SIGCHLD instead, which waitpid(pid, WNOHANG)s every such pid (never -1,
 *     so other modules' children are left alone). Started only while such
 *     children exist. FLOWD_EXECUTOR_NO_PIDFD=1 forces it (tests only).
 *   - executor_close(): queued jobs are dropped ("stopped"), the spawner
 *     thread is told to stop and joined (this waits for at most the one
 *     spawn in progress, well under a millisecond), its last result is
 *     taken in, and every group gets SIGKILL; tasks still running report
 *     "stopped". The executor is freed after every handle's close callback,
 *     then done(arg) runs.
 *
 * Threads. The loop thread runs everything except the spawn, the argv[0]
 * lookup, closing the write ends and pidfd_open, which run on the spawner
 * thread (and the child between vfork and exec, which only reads the job
 * and the executor's sandbox, fixed before the first spawn). They share
 * only e->lock's fields (queue, done list, stopping) and, for a job
 * between queueing and the loop taking its result, the job fields:
 * the loop writes them before queueing and does not touch them again (nor
 * free the task) until it has taken the result under the lock. The spawner
 * thread blocks every signal. Nothing here is thread-safe for callers: call
 * the API from the loop thread only.
 */

#include "daemon/executor.h"
#include "daemon/sandbox.h"
#include "daemon/wake.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/thread.h"

#define DRAIN_AFTER_EXIT_MS 500
#define READ_BUF_SIZE 65536
#define TASK_BASE_HANDLES 4   /* out_pipe, err_pipe, kill_timer, aux_timer */
#define DEFAULT_PATH "/bin:/usr/bin"

enum kill_stage {
	KILL_NONE = 0,    /* kill_timer (if any) counts down the timeout */
	KILL_TERM_SENT,   /* kill_timer counts down the grace period */
	KILL_KILL_SENT,
};

struct capture {
	char *buf;
	size_t len;
	size_t cap;
	bool eof;
};

struct task {
	struct task *next;        /* e->tasks; loop only */
	struct task *job_next;    /* spawner queue or done list; e->lock */
	struct executor *e;
	void *ctx;

	/* Job: written by the loop before queueing, then read by the spawner
	 * until the loop has taken the result. */
	char *key;
	char **args;      /* owned, NULL-terminated, each string owned */
	char **env;       /* merged environment, same ownership */
	char *workdir;
	int out_wfd;      /* pipe write ends: closed by the spawner after */
	int err_wfd;      /* the spawn, or by the loop if it drops the job */
	/* Result: written by the spawner, read by the loop after the lock. */
	bool taken;       /* the spawner popped it (under e->lock) */
	int spawn_err;    /* 0 or errno */
	int res_pid;
	int res_pidfd;    /* -1 if pidfd_open failed */

	unsigned timeout_s;
	size_t max_log_bytes;

	/* Loop only from here. */
	int out_rfd;      /* read ends until uv_pipe_open takes them, then -1 */
	int err_rfd;
	uv_pipe_t out_pipe;
	uv_pipe_t err_pipe;
	uv_timer_t kill_timer;
	uv_timer_t aux_timer;
	uv_poll_t exit_poll;
	int pidfd;        /* watched by exit_poll; closed in its close cb */
	bool has_poll;
	bool by_sigchld;  /* no pidfd: reaped from the SIGCHLD fallback */
	int open_handles;

	bool in_spawner;  /* queued or spawning: result not taken yet */
	bool stop_requested;
	int pid;
	int pid_slot;     /* its record in the pid file, or -1 */
	struct capture out;
	struct capture err;
	bool truncated;
	bool spawn_failed;
	bool dropped;     /* stopped before it was spawned */
	bool exited;
	bool finished;
	enum kill_stage kill_stage;
	const char *reason;   /* NULL until decided; static strings */
	const char *detail;   /* static string */
	int64_t exit_status;
	int term_signal;
	int64_t started_ms;
	int64_t finished_ms;
};

struct executor {
	uv_loop_t *loop;
	unsigned kill_grace_ms;
	_Atomic int step_nice;  /* wanted nice value of spawned steps */
	bool sandboxed;         /* executor_set_sandbox was called: */
	char **base_env;        /* owned: the steps' base environment */
	struct sandbox_identity id;  /* who they run as (read by the child) */
	int applied_nice;       /* spawner thread: its own, which children inherit */
	executor_done_cb cb;
	executor_output_cb output;  /* may be NULL */
	void *output_arg;
	struct task *tasks;   /* running: started, callback not yet fired */
	unsigned ntasks;
	unsigned nlive;       /* allocated tasks, including those closing */
	bool closing;
	bool freeing;
	bool use_pidfd;
	unsigned nsigchld;    /* running tasks watched by `sigchld` */
	unsigned nspawner;    /* tasks queued or spawning (in_spawner) */
	int ehandles;         /* executor-level handles still open */
	void (*close_done)(void *arg);
	void *close_arg;
	uv_timer_t close_handle;   /* never started; closed last, so done(arg)
	                            * always runs from the loop */
	struct wake wake;          /* spawner -> loop: results are ready;
	                            * referenced only while nspawner > 0 */
	uv_signal_t sigchld;       /* fallback when there is no pidfd */

	/* Shared with the spawner thread, under lock. */
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct task *queue_head;
	struct task *queue_tail;
	struct task *done_head;
	struct task *done_tail;
	bool stopping;

	int pid_fd;           /* the pid file (fixed 16-byte slots), or -1 */
	unsigned char *slot_used; /* owned bitmap of slots in use */
	unsigned n_slots;

	char read_buf[READ_BUF_SIZE];
};

/* ---------------------------------------------------------------- helpers */

/* The start time of a process (/proc/PID/stat field 22, in clock ticks since
 * boot): with the pid it names one process, even after the pid is reused.
 * Returns 0 if the process does not exist. */
static unsigned long long proc_start_time(int pid)
{
	char path[64], buf[1024];
	unsigned long long start = 0;
	const char *p;
	ssize_t n;
	int fd, field;

	snprintf(path, sizeof path, "/proc/%d/stat", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	p = strrchr(buf, ')'); /* the command name may hold spaces */
	if (p == NULL)
		return 0;
	/* After ") " comes field 3; the start time is field 22. */
	for (field = 2; *p != '\0' && field < 22; p++)
		if (*p == ' ')
			field++;
	if (field == 22)
		start = strtoull(p, NULL, 10);
	return start;
}

/* A record of a running child: its pid and start time, in a 16-byte slot
 * of one file (pwrite, no fsync: it only has to survive the flowd process,
 * not the machine, since a reboot ends the children too). A freed slot is
 * zeroed. */
struct pid_record {
	int64_t pid;
	uint64_t start;
};

static void record_pid(struct executor *e, struct task *t)
{
	struct pid_record rec;
	unsigned slot;

	t->pid_slot = -1;
	if (e->pid_fd < 0)
		return;
	for (slot = 0; slot < e->n_slots && e->slot_used[slot]; slot++)
		;
	if (slot == e->n_slots) {
		unsigned n = e->n_slots ? e->n_slots * 2 : 256;
		unsigned char *u = realloc(e->slot_used, n);
		if (u == NULL)
			return;
		memset(u + e->n_slots, 0, n - e->n_slots);
		e->slot_used = u;
		e->n_slots = n;
	}
	rec.pid = t->pid;
	rec.start = proc_start_time(t->pid);
	if (rec.start == 0 ||
	    pwrite(e->pid_fd, &rec, sizeof rec, (off_t)slot * sizeof rec) !=
		    (ssize_t)sizeof rec)
		return;
	e->slot_used[slot] = 1;
	t->pid_slot = (int)slot;
}

static void forget_pid(struct executor *e, struct task *t)
{
	struct pid_record zero = {0, 0};

	if (e->pid_fd < 0 || t->pid_slot < 0)
		return;
	if (pwrite(e->pid_fd, &zero, sizeof zero,
		   (off_t)t->pid_slot * sizeof zero) != (ssize_t)sizeof zero)
		log_warn("executor: cannot clear pid slot %d", t->pid_slot);
	e->slot_used[t->pid_slot] = 0;
	t->pid_slot = -1;
}

int executor_kill_orphans(const char *path)
{
	struct pid_record rec;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int killed = 0;

	if (fd < 0)
		return 0;
	while (read(fd, &rec, sizeof rec) == (ssize_t)sizeof rec) {
		if (rec.pid <= 1 || rec.start == 0)
			continue;
		if (proc_start_time((int)rec.pid) != rec.start)
			continue; /* gone, or the pid now names another process */
		/* Still the child we started: it leads its own group. */
		kill(-(pid_t)rec.pid, SIGKILL);
		kill((pid_t)rec.pid, SIGKILL);
		log_warn("executor: killed orphan process group %lld left by an "
			 "earlier run of flowd", (long long)rec.pid);
		killed++;
	}
	close(fd);
	return killed;
}

int executor_set_pid_file(struct executor *e, const char *path)
{
	if (e->pid_fd >= 0)
		close(e->pid_fd);
	e->pid_fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	return e->pid_fd >= 0 ? 0 : -1;
}

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void free_strv(char **v)
{
	if (v == NULL)
		return;
	for (char **p = v; *p != NULL; p++)
		free(*p);
	free(v);
}

static size_t strv_len(char *const *v)
{
	size_t n = 0;

	while (v != NULL && v[n] != NULL)
		n++;
	return n;
}

/* Length of the key of a "K=V" entry (the whole string if it has no '='). */
static size_t env_key_len(const char *s)
{
	const char *eq = strchr(s, '=');

	return eq != NULL ? (size_t)(eq - s) : strlen(s);
}

static bool env_has_key(char *const *env, const char *entry)
{
	size_t klen = env_key_len(entry);

	for (size_t i = 0; env != NULL && env[i] != NULL; i++)
		if (env_key_len(env[i]) == klen &&
		    memcmp(env[i], entry, klen) == 0)
			return true;
	return false;
}

/* Value of `name` in a "K=V" array, or NULL. */
static const char *env_get(char *const *env, const char *name)
{
	size_t n = strlen(name);

	for (size_t i = 0; env != NULL && env[i] != NULL; i++)
		if (strncmp(env[i], name, n) == 0 && env[i][n] == '=')
			return env[i] + n + 1;
	return NULL;
}

/* base (flowd's environ, or the sandbox's) minus the keys task_env
 * redefines, then task_env. */
static char **build_env(char *const *base, char *const *task_env)
{
	size_t n_inherit = strv_len(base);
	size_t n_task = strv_len(task_env);
	size_t n = 0;
	char **v;

	v = calloc(n_inherit + n_task + 1, sizeof *v);
	if (v == NULL)
		return NULL;
	for (size_t i = 0; i < n_inherit; i++) {
		if (env_has_key(task_env, base[i]))
			continue;
		v[n] = strdup(base[i]);
		if (v[n++] == NULL)
			goto fail;
	}
	for (size_t i = 0; i < n_task; i++) {
		v[n] = strdup(task_env[i]);
		if (v[n++] == NULL)
			goto fail;
	}
	return v;
fail:
	free_strv(v);
	return NULL;
}

static char **build_args(const struct executor_task *task)
{
	char *const *src = task->argv;
	const char *sh[] = {"/bin/sh", "-c", task->shell, NULL};
	size_t n;
	char **v;

	if (task->shell != NULL)
		src = (char *const *)sh;
	n = strv_len(src);
	if (n == 0)
		return NULL;
	v = calloc(n + 1, sizeof *v);
	if (v == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		v[i] = strdup(src[i]);
		if (v[i] == NULL) {
			free_strv(v);
			return NULL;
		}
	}
	return v;
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static struct task *find(struct executor *e, const char *key)
{
	for (struct task *t = e->tasks; t != NULL; t = t->next)
		if (strcmp(t->key, key) == 0)
			return t;
	return NULL;
}

static void unlink_task(struct executor *e, struct task *t)
{
	for (struct task **pp = &e->tasks; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == t) {
			*pp = t->next;
			t->next = NULL;
			e->ntasks--;
			return;
		}
	}
}

static void free_task(struct task *t)
{
	close_fd(&t->out_rfd);
	close_fd(&t->err_rfd);
	close_fd(&t->out_wfd);
	close_fd(&t->err_wfd);
	free(t->key);
	free_strv(t->args);
	free_strv(t->env);
	free(t->workdir);
	free(t->out.buf);
	free(t->err.buf);
	free(t);
}

/* Signal the task's process group; a vanished group (ESRCH) is fine. */
static void signal_group(struct task *t, int sig)
{
	if (t->pid <= 0)
		return;
	if (kill(-t->pid, sig) != 0 && errno != ESRCH)
		log_warn("executor: kill key=%s pgid=%d sig=%d: %s", t->key,
			 t->pid, sig, strerror(errno));
}

/* ---------------------------------------------------------- spawner thread */

/* Is `path` a regular file we may execute? 0, or the errno to report. */
static int check_exec(const char *path)
{
	struct stat st;

	if (stat(path, &st) != 0)
		return errno;
	if (!S_ISREG(st.st_mode))
		return EACCES;
	return access(path, X_OK) == 0 ? 0 : errno;
}

/* Find `file` (no '/') in the child's PATH, execvp-style, into buf.
 * Returns 0 or the errno to report. Runs on the spawner thread. */
static int resolve_in_path(const struct task *t, const char *file, char *buf,
			   size_t size)
{
	const char *path = env_get(t->env, "PATH");
	int err = ENOENT;

	if (path == NULL)
		path = DEFAULT_PATH;
	if (*file == '\0')
		return ENOENT;
	for (const char *p = path;; p++) {
		const char *end = strchr(p, ':');
		size_t dlen = end != NULL ? (size_t)(end - p) : strlen(p);
		const char *dir = dlen > 0 ? p : ".";
		int n, rc;

		if (dlen == 0)
			dlen = 1;
		if (dir[0] != '/' && t->workdir != NULL)
			n = snprintf(buf, size, "%s/%.*s/%s", t->workdir,
				     (int)dlen, dir, file);
		else
			n = snprintf(buf, size, "%.*s/%s", (int)dlen, dir,
				     file);
		if (n > 0 && (size_t)n < size) {
			rc = check_exec(buf);
			if (rc == 0)
				return 0;
			if (rc == EACCES)
				err = EACCES;
		}
		if (end == NULL)
			return err;
		p = end;
	}
}

/* Move fd above 2 (so that dup2 onto 0-2 cannot overwrite another of
 * ours); the copy is closed with the rest. Child only. */
static int above_stdio(int fd)
{
	return fd > 2 ? fd : fcntl(fd, F_DUPFD, 3);
}

/* The child between vfork and exec: only async-signal-safe calls, nothing
 * written but *err, never returns. Static data only (no locals whose
 * address is taken: they would live on the stack the spawner thread is
 * suspended on). */
static _Noreturn void child_exec(const struct task *t, const char *file,
				 volatile int *err)
{
	static const struct sigaction dfl = {.sa_handler = SIG_DFL};
	static sigset_t empty;   /* zeroed: no signal */
	const struct executor *e = t->e;
	int out, errfd, fd;

	if (setsid() < 0)
		goto fail;
	/* Every handler back to SIG_DFL (glibc refuses its internal signals
	 * and the kernel KILL/STOP: harmless); still blocked, as the spawner
	 * thread blocks everything. */
	for (int sig = 1; sig < NSIG; sig++)
		sigaction(sig, &dfl, NULL);
	out = above_stdio(t->out_wfd);
	errfd = above_stdio(t->err_wfd);
	if (out < 0 || errfd < 0)
		goto fail;
	fd = open("/dev/null", O_RDONLY);
	if (fd < 0 || (fd != 0 && dup2(fd, 0) < 0))
		goto fail;
	if (dup2(out, 1) < 0 || dup2(errfd, 2) < 0)
		goto fail;
	if (sandbox_close_from(3) != 0)
		goto fail;
	if (e->sandboxed && e->id.switch_user &&
	    sandbox_switch_user(&e->id) != 0)
		goto fail;
	/* Entered as the step's user: a workdir it may not use fails here. */
	if (t->workdir != NULL) {
		if (chdir(t->workdir) != 0)
			goto fail;
	} else if (e->sandboxed && e->id.switch_user &&
		   (e->id.home[0] == '\0' || chdir(e->id.home) != 0) &&
		   chdir("/") != 0) {
		goto fail;
	}
	if (sigprocmask(SIG_SETMASK, &empty, NULL) != 0)
		goto fail;
	execve(file, t->args, t->env);
fail:
	*err = errno != 0 ? errno : EINVAL;
	_exit(127);
}

/* vfork + child_exec. Returns the pid, or -1 with *err the errno of
 * vfork or of the child's failure (the child then reaped). Nothing here
 * changes after vfork but through the volatile child_err (-Wclobbered). */
static pid_t __attribute__((noinline))
start_child(const struct task *t, const char *file, int *err)
{
	volatile int child_err = 0;
	pid_t pid = vfork();

	if (pid == 0)
		child_exec(t, file, &child_err);
	/* Back here once the child has exec'd or _exited. */
	if (pid < 0) {
		*err = errno;
		return -1;
	}
	if (child_err != 0) {
		/* It _exited before exec: reap it here (no one else knows
		 * its pid). */
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		*err = child_err;
		return -1;
	}
	return pid;
}

/* Spawn the job; fills res_pid / spawn_err. */
static void spawn_job(struct task *t)
{
	char path[PATH_MAX];
	const char *file = t->args[0];
	pid_t pid;
	int rc;

	if (strchr(file, '/') == NULL) {
		rc = resolve_in_path(t, file, path, sizeof path);
		if (rc != 0) {
			t->spawn_err = rc;
			return;
		}
		file = path;
	}
	pid = start_child(t, file, &rc);
	if (pid < 0) {
		t->spawn_err = rc;
		return;
	}
	t->res_pid = pid;
}

static int open_pidfd(int pid)
{
#ifdef SYS_pidfd_open
	return (int)syscall(SYS_pidfd_open, pid, 0);
#else
	(void)pid;
	errno = ENOSYS;
	return -1;
#endif
}

static void *spawner_main(void *arg)
{
	struct executor *e = arg;
	struct task *t;

	for (;;) {
		int want = atomic_load(&e->step_nice);

		/* Linux: nice is per thread, and a child inherits the nice of
		 * the thread that spawned it (never above the process's own:
		 * systemd's Nice= may start flowd below 0). */
		if (want != e->applied_nice && flowd_thread_nice(want) == 0)
			e->applied_nice = want;
		pthread_mutex_lock(&e->lock);
		while (e->queue_head == NULL && !e->stopping)
			pthread_cond_wait(&e->cond, &e->lock);
		t = e->queue_head;
		if (t == NULL) {   /* stopping, and nothing left */
			pthread_mutex_unlock(&e->lock);
			return NULL;
		}
		e->queue_head = t->job_next;
		if (e->queue_head == NULL)
			e->queue_tail = NULL;
		t->job_next = NULL;
		t->taken = true;
		pthread_mutex_unlock(&e->lock);

		spawn_job(t);
		/* The child has its own copies now (or never started). */
		close_fd(&t->out_wfd);
		close_fd(&t->err_wfd);
		t->res_pidfd = -1;
		if (t->spawn_err == 0 && e->use_pidfd)
			t->res_pidfd = open_pidfd(t->res_pid);

		pthread_mutex_lock(&e->lock);
		if (e->done_tail != NULL)
			e->done_tail->job_next = t;
		else
			e->done_head = t;
		e->done_tail = t;
		pthread_mutex_unlock(&e->lock);
		wake_send(&e->wake);
	}
}

/* ---------------------------------------------------------- executor close */

static void executor_handle_closed_cb(uv_handle_t *h)
{
	struct executor *e = h->data;
	void (*done)(void *arg) = e->close_done;
	void *arg = e->close_arg;

	if (--e->ehandles > 0)
		return;
	pthread_mutex_destroy(&e->lock);
	pthread_cond_destroy(&e->cond);
	if (e->pid_fd >= 0)
		close(e->pid_fd);
	free(e->slot_used);
	free_strv(e->base_env);
	free(e);
	if (done != NULL)
		done(arg);
}

static void maybe_free_executor(struct executor *e)
{
	if (!e->closing || e->freeing || e->nlive > 0)
		return;
	e->freeing = true;
	/* The wake handle was closed by executor_close(); close_handle goes
	 * last, so done(arg) runs after every other close callback. */
	uv_close((uv_handle_t *)&e->sigchld, executor_handle_closed_cb);
	uv_close((uv_handle_t *)&e->close_handle, executor_handle_closed_cb);
}

/* --------------------------------------------------------------- finishing */

static void task_handle_closed_cb(uv_handle_t *h)
{
	struct task *t = h->data;
	struct executor *e = t->e;

	if (h == (uv_handle_t *)&t->exit_poll)
		close_fd(&t->pidfd);
	if (--t->open_handles > 0)
		return;
	free_task(t);
	e->nlive--;
	maybe_free_executor(e);
}

static void close_task_handles(struct task *t)
{
	uv_handle_t *hs[TASK_BASE_HANDLES] = {
		(uv_handle_t *)&t->out_pipe, (uv_handle_t *)&t->err_pipe,
		(uv_handle_t *)&t->kill_timer, (uv_handle_t *)&t->aux_timer,
	};

	for (int i = 0; i < TASK_BASE_HANDLES; i++)
		uv_close(hs[i], task_handle_closed_cb);
	if (t->has_poll)
		uv_close((uv_handle_t *)&t->exit_poll, task_handle_closed_cb);
}

/* Report the result once, then close every handle. */
static void finish(struct task *t)
{
	struct executor *e = t->e;
	struct executor_result r;

	if (t->finished)
		return;
	t->finished = true;
	uv_timer_stop(&t->kill_timer);
	uv_timer_stop(&t->aux_timer);
	/* Unlinked first: the callback may start a retry under the same key. */
	unlink_task(e, t);

	memset(&r, 0, sizeof r);
	if (t->spawn_failed) {
		r.exit_code = -1;
		r.reason = "spawn_failed";
	} else {
		r.exit_code = t->term_signal != 0 ? -1 : (int)t->exit_status;
		r.term_signal = t->term_signal;
		r.reason = t->reason != NULL ? t->reason : "exited";
	}
	r.detail = t->detail != NULL ? t->detail : "";
	r.out = t->out.buf != NULL ? t->out.buf : "";
	r.out_len = t->out.len;
	r.err = t->err.buf != NULL ? t->err.buf : "";
	r.err_len = t->err.len;
	r.truncated = t->truncated;
	r.started_ms = t->started_ms;
	r.finished_ms = t->finished_ms;

	log_debug("executor: done key=%s reason=%s exit_code=%d signal=%d "
		  "ms=%lld", t->key, r.reason, r.exit_code, r.term_signal,
		  (long long)(r.finished_ms - r.started_ms));
	e->cb(e, t->ctx, &r);
	close_task_handles(t);
}

static void maybe_finish(struct task *t)
{
	if (t->exited && t->out.eof && t->err.eof)
		finish(t);
}

static void report_now_cb(uv_timer_t *timer)
{
	finish(timer->data);
}

static void drain_timeout_cb(uv_timer_t *timer)
{
	struct task *t = timer->data;

	log_debug("executor: pipes still open %d ms after exit key=%s",
		  DRAIN_AFTER_EXIT_MS, t->key);
	finish(t);
}

/* ---------------------------------------------------------- process events */

/* The main process was reaped with wait status `status` (-1: unknown). The
 * result is reported from a pipe EOF or the drain timer, never from here
 * unless may_finish (so a synchronous caller never sees the callback). */
static void child_exited(struct task *t, int status, bool may_finish)
{
	t->exited = true;
	if (status == -1) {
		t->exit_status = -1;
	} else if (WIFSIGNALED(status)) {
		t->term_signal = WTERMSIG(status);
	} else {
		t->exit_status = WEXITSTATUS(status);
	}
	t->finished_ms = wall_ms();
	uv_timer_stop(&t->kill_timer);
	if (t->has_poll)
		uv_poll_stop(&t->exit_poll);
	if (t->by_sigchld && --t->e->nsigchld == 0)
		uv_signal_stop(&t->e->sigchld);
	/* Reap whatever the main process left behind in its group. */
	signal_group(t, SIGKILL);
	forget_pid(t->e, t);
	if (!t->out.eof || !t->err.eof)
		uv_timer_start(&t->aux_timer, drain_timeout_cb,
			       DRAIN_AFTER_EXIT_MS, 0);
	else if (!may_finish)
		uv_timer_start(&t->aux_timer, report_now_cb, 0, 0);
	if (may_finish)
		maybe_finish(t);
}

/* waitpid(pid, WNOHANG): true if it was reaped (status filled). */
static bool try_reap(struct task *t, int *status)
{
	pid_t r;

	do
		r = waitpid(t->pid, status, WNOHANG);
	while (r < 0 && errno == EINTR);
	if (r == t->pid)
		return true;
	if (r == 0)
		return false;
	/* ECHILD: someone else reaped it; the status is lost. */
	log_warn("executor: waitpid key=%s pid=%d: %s", t->key, t->pid,
		 strerror(errno));
	*status = -1;
	return true;
}

static void exit_poll_cb(uv_poll_t *poll, int status, int events)
{
	struct task *t = poll->data;
	int wstatus;

	if (t->exited)
		return;
	if (status < 0)
		log_warn("executor: pidfd poll key=%s: %s", t->key,
			 uv_strerror(status));
	if (try_reap(t, &wstatus))
		child_exited(t, wstatus, true);
}

/* Fallback without pidfd: check every child watched this way. Its exit may
 * finish a task, whose callback may change e->tasks: restart after each. */
static void sigchld_cb(uv_signal_t *h, int signum)
{
	struct executor *e = h->data;
	bool again = true;

	while (again) {
		again = false;
		for (struct task *t = e->tasks; t != NULL; t = t->next) {
			int wstatus;

			if (!t->by_sigchld || t->exited ||
			    !try_reap(t, &wstatus))
				continue;
			child_exited(t, wstatus, true);
			again = true;
			break;
		}
	}
}

static void kill_timer_cb(uv_timer_t *timer)
{
	struct task *t = timer->data;

	switch (t->kill_stage) {
	case KILL_NONE:
		if (t->reason == NULL)
			t->reason = "timeout";
		log_info("executor: timeout key=%s pgid=%d after=%us", t->key,
			 t->pid, t->timeout_s);
		signal_group(t, SIGTERM);
		t->kill_stage = KILL_TERM_SENT;
		uv_timer_start(&t->kill_timer, kill_timer_cb,
			       t->e->kill_grace_ms, 0);
		break;
	case KILL_TERM_SENT:
		log_info("executor: grace over, sigkill key=%s pgid=%d", t->key,
			 t->pid);
		signal_group(t, SIGKILL);
		t->kill_stage = KILL_KILL_SENT;
		break;
	case KILL_KILL_SENT:
		break;
	}
}

/* SIGTERM now, SIGKILL after the grace period (executor_stop). */
static void begin_stop(struct task *t)
{
	log_info("executor: stop key=%s pgid=%d", t->key, t->pid);
	signal_group(t, SIGTERM);
	t->kill_stage = KILL_TERM_SENT;
	uv_timer_start(&t->kill_timer, kill_timer_cb, t->e->kill_grace_ms, 0);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct task *t = h->data;

	(void)suggested;
	/* One shared buffer: libuv calls alloc, read(2) and read_cb back to
	 * back on the loop thread, so it is never used by two reads at once. */
	buf->base = t->e->read_buf;
	buf->len = sizeof t->e->read_buf;
}

static void keep(struct task *t, struct capture *c, const char *data,
		 size_t n)
{
	size_t room = t->max_log_bytes - c->len;
	size_t take = n < room ? n : room;

	if (take < n)
		t->truncated = true;
	if (take == 0)
		return;
	if (c->len + take > c->cap) {
		size_t cap = c->cap != 0 ? c->cap : 4096;
		char *nb;

		while (cap < c->len + take)
			cap *= 2;
		if (cap > t->max_log_bytes)
			cap = t->max_log_bytes;
		nb = realloc(c->buf, cap);
		if (nb == NULL) {
			t->truncated = true;
			return;
		}
		c->buf = nb;
		c->cap = cap;
	}
	memcpy(c->buf + c->len, data, take);
	c->len += take;
	/* followers get what the stored log will hold, no more */
	if (t->e->output != NULL)
		t->e->output(t->e->output_arg, t->key, c == &t->out ? 1 : 2,
			     data, take);
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	struct task *t = stream->data;
	struct capture *c = stream == (uv_stream_t *)&t->out_pipe ? &t->out :
								    &t->err;

	if (nread > 0) {
		keep(t, c, buf->base, (size_t)nread);
		return;
	}
	if (nread == 0)
		return;
	if (nread != UV_EOF)
		log_warn("executor: read key=%s: %s", t->key,
			 uv_strerror((int)nread));
	c->eof = true;
	uv_read_stop(stream);
	maybe_finish(t);
}

/* Hand a read end to libuv and start reading; on failure the stream counts
 * as drained (the fd is closed). */
static void open_capture(struct task *t, uv_pipe_t *p, int *fd,
			 struct capture *c)
{
	int rc = uv_pipe_open(p, *fd);

	if (rc != 0)
		close(*fd);   /* libuv did not take it */
	else
		rc = uv_read_start((uv_stream_t *)p, alloc_cb, read_cb);
	*fd = -1;
	if (rc != 0) {
		log_warn("executor: pipe key=%s: %s", t->key, uv_strerror(rc));
		c->eof = true;
	}
}

/* Watch the child's exit: pidfd poll, else the SIGCHLD fallback. */
static void watch_exit(struct task *t, int pidfd)
{
	struct executor *e = t->e;
	int rc = -1;

	if (pidfd >= 0) {
		rc = uv_poll_init(e->loop, &t->exit_poll, pidfd);
		if (rc == 0) {
			t->exit_poll.data = t;
			t->pidfd = pidfd;
			t->has_poll = true;
			t->open_handles++;
			rc = uv_poll_start(&t->exit_poll, UV_READABLE,
					   exit_poll_cb);
		} else {
			close(pidfd);
		}
	}
	if (rc == 0)
		return;
	if (t->has_poll)
		uv_poll_stop(&t->exit_poll);
	t->by_sigchld = true;
	if (e->nsigchld++ == 0)
		uv_signal_start(&e->sigchld, sigchld_cb, SIGCHLD);
	/* It may have exited before the handler was there. */
	{
		int wstatus;

		if (try_reap(t, &wstatus))
			child_exited(t, wstatus, false);
	}
}

/* The wake handle keeps the loop alive only while a job is out. */
static void spawner_hold(struct executor *e)
{
	if (e->nspawner++ == 0)
		uv_ref((uv_handle_t *)&e->wake.poll);
}

static void spawner_release(struct executor *e)
{
	if (--e->nspawner == 0)
		uv_unref((uv_handle_t *)&e->wake.poll);
}

/* The spawner is done with t (loop thread, result taken under the lock).
 * Never fires the callback synchronously: executor_close calls this too. */
static void take_result(struct task *t)
{
	struct executor *e = t->e;

	if (t->in_spawner) {
		t->in_spawner = false;
		spawner_release(e);
	}
	t->started_ms = wall_ms();
	if (t->spawn_err != 0) {
		/* UV_E* == -errno on unix: libuv's wording, as uv_spawn had. */
		log_info("executor: spawn failed key=%s file=%s: %s", t->key,
			 t->args[0], strerror(t->spawn_err));
		t->spawn_failed = true;
		t->detail = uv_strerror(-t->spawn_err);
		t->finished_ms = t->started_ms;
		close_fd(&t->out_rfd);
		close_fd(&t->err_rfd);
		uv_timer_start(&t->aux_timer, report_now_cb, 0, 0);
		return;
	}

	t->pid = t->res_pid;
	record_pid(e, t);
	log_debug("executor: started key=%s pid=%d file=%s", t->key, t->pid,
		  t->args[0]);
	open_capture(t, &t->out_pipe, &t->out_rfd, &t->out);
	open_capture(t, &t->err_pipe, &t->err_rfd, &t->err);
	watch_exit(t, t->res_pidfd);
	if (t->exited)
		return;
	if (e->closing) {
		if (t->reason == NULL)
			t->reason = "stopped";
		t->kill_stage = KILL_KILL_SENT;
		signal_group(t, SIGKILL);
	} else if (t->stop_requested) {
		begin_stop(t);
	} else if (t->timeout_s > 0) {
		uv_timer_start(&t->kill_timer, kill_timer_cb,
			       (uint64_t)t->timeout_s * 1000, 0);
	}
}

/* Take every finished job (loop thread). */
static void take_results(struct executor *e)
{
	struct task *t, *next;

	pthread_mutex_lock(&e->lock);
	t = e->done_head;
	e->done_head = NULL;
	e->done_tail = NULL;
	pthread_mutex_unlock(&e->lock);
	for (; t != NULL; t = next) {
		next = t->job_next;
		t->job_next = NULL;
		take_result(t);
	}
}

static void wake_results_cb(struct wake *w)
{
	take_results(w->poll.data);
}

/* Remove t from the spawner queue if it is still waiting there (loop
 * thread). Returns true if it was; the job then belongs to the loop. */
static bool unqueue(struct executor *e, struct task *t)
{
	bool found = false;
	struct task *prev = NULL;

	pthread_mutex_lock(&e->lock);
	if (!t->taken) {
		for (struct task *q = e->queue_head; q != NULL;
		     prev = q, q = q->job_next) {
			if (q != t)
				continue;
			if (prev != NULL)
				prev->job_next = q->job_next;
			else
				e->queue_head = q->job_next;
			if (e->queue_tail == q)
				e->queue_tail = prev;
			found = true;
			break;
		}
	}
	pthread_mutex_unlock(&e->lock);
	if (found) {
		t->job_next = NULL;
		t->in_spawner = false;
		spawner_release(e);
	}
	return found;
}

/* A job stopped before the spawner got to it: report "stopped" from the
 * loop (exit_code -1, term_signal 0, no process ever existed). */
static void drop_job(struct task *t)
{
	t->dropped = true;
	if (t->reason == NULL)
		t->reason = "stopped";
	t->exit_status = -1;
	t->started_ms = wall_ms();
	t->finished_ms = t->started_ms;
	close_fd(&t->out_wfd);
	close_fd(&t->err_wfd);
	close_fd(&t->out_rfd);
	close_fd(&t->err_rfd);
	if (!t->e->closing)
		log_info("executor: stop key=%s before spawn", t->key);
	uv_timer_start(&t->aux_timer, report_now_cb, 0, 0);
}

/* ----------------------------------------------------------------- public */

/* Can this process use pidfd_open()? FLOWD_EXECUTOR_NO_PIDFD=1 says no
 * (tests of the SIGCHLD fallback). */
static bool probe_pidfd(void)
{
	const char *off = getenv("FLOWD_EXECUTOR_NO_PIDFD");
	int fd;

	if (off != NULL && strcmp(off, "1") == 0)
		return false;
	fd = open_pidfd(getpid());
	if (fd < 0) {
		log_info("executor: pidfd_open unavailable (%s), watching "
			 "children with SIGCHLD", strerror(errno));
		return false;
	}
	close(fd);
	return true;
}

/* Tell the spawner thread to exit once its queue is empty, and wait. */
static void stop_spawner(struct executor *e)
{
	pthread_mutex_lock(&e->lock);
	e->stopping = true;
	pthread_cond_signal(&e->cond);
	pthread_mutex_unlock(&e->lock);
	pthread_join(e->thread, NULL);
}

void executor_set_output(struct executor *e, executor_output_cb cb,
			 void *arg)
{
	e->output = cb;
	e->output_arg = arg;
}

void executor_set_nice(struct executor *e, int nice)
{
	atomic_store(&e->step_nice, nice);
}

int executor_set_sandbox(struct executor *e,
			 const struct sandbox_identity *id,
			 char *const *pass_env)
{
	char **base;

	/* The child reads e->id without the lock: it may change only while
	 * no job exists. */
	if (e->nlive > 0 || e->sandboxed)
		return -1;
	base = sandbox_env_base(id, pass_env);
	if (base == NULL)
		return -1;
	e->base_env = base;
	e->id = *id;
	e->sandboxed = true;
	return 0;
}

struct executor *executor_new(uv_loop_t *loop, unsigned kill_grace_ms,
			      executor_done_cb cb)
{
	struct executor *e;
	sigset_t all, old;
	int rc_sig, rc_async;

	e = calloc(1, sizeof *e);
	if (e == NULL)
		return NULL;
	e->loop = loop;
	e->kill_grace_ms = kill_grace_ms;
	e->cb = cb;
	e->pid_fd = -1;
	e->applied_nice = -100; /* the spawner applies step_nice at its start */
	e->use_pidfd = probe_pidfd();
	if (pthread_mutex_init(&e->lock, NULL) != 0)
		goto fail_mutex;
	if (pthread_cond_init(&e->cond, NULL) != 0)
		goto fail_cond;
	/* The spawner thread takes no signals: they belong to the loop. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc_sig = pthread_create(&e->thread, NULL, spawner_main, e);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc_sig != 0) {
		log_error("executor: spawner thread: %s", strerror(rc_sig));
		goto fail_thread;
	}

	uv_timer_init(loop, &e->close_handle);
	e->close_handle.data = e;
	e->ehandles = 1;
	rc_sig = uv_signal_init(loop, &e->sigchld);
	if (rc_sig == 0) {
		e->sigchld.data = e;
		e->ehandles++;
	}
	rc_async = wake_init(loop, &e->wake, wake_results_cb);
	if (rc_async == 0) {
		e->wake.poll.data = e;
		e->ehandles++;
		uv_unref((uv_handle_t *)&e->wake.poll);
	}
	if (rc_sig == 0 && rc_async == 0)
		return e;

	/* Half made: the loop frees it once what was opened has closed. */
	log_error("executor: cannot init handles: %s",
		  uv_strerror(rc_sig != 0 ? rc_sig : rc_async));
	stop_spawner(e);
	e->closing = true;
	e->freeing = true;
	if (rc_sig == 0)
		uv_close((uv_handle_t *)&e->sigchld, executor_handle_closed_cb);
	if (rc_async == 0)
		wake_close(&e->wake, executor_handle_closed_cb);
	uv_close((uv_handle_t *)&e->close_handle, executor_handle_closed_cb);
	return NULL;

fail_thread:
	pthread_cond_destroy(&e->cond);
fail_cond:
	pthread_mutex_destroy(&e->lock);
fail_mutex:
	free(e);
	return NULL;
}

static struct task *task_new(struct executor *e,
			     const struct executor_task *task, void *ctx)
{
	struct task *t;

	t = calloc(1, sizeof *t);
	if (t == NULL)
		return NULL;
	t->e = e;
	t->ctx = ctx;
	t->timeout_s = task->timeout_s;
	t->max_log_bytes = task->max_log_bytes;
	t->out_rfd = t->out_wfd = t->err_rfd = t->err_wfd = -1;
	t->pidfd = t->res_pidfd = -1;
	t->pid_slot = -1;
	t->key = strdup(task->key);
	if (t->key == NULL)
		goto fail_task;
	t->args = build_args(task);
	if (t->args == NULL)
		goto fail_task;
	t->env = build_env(e->sandboxed ? e->base_env : environ, task->env);
	if (t->env == NULL)
		goto fail_task;
	if (task->workdir != NULL) {
		t->workdir = strdup(task->workdir);
		if (t->workdir == NULL)
			goto fail_task;
	}
	return t;
fail_task:
	free_task(t);
	return NULL;
}

/* Both pipes, close-on-exec (the child's dup2 clears it on 1 and 2 in the
 * child only). Returns 0 or errno. */
static int make_pipes(struct task *t)
{
	int out[2], err[2];

	if (pipe2(out, O_CLOEXEC) != 0)
		return errno;
	if (pipe2(err, O_CLOEXEC) != 0) {
		int saved = errno;

		close(out[0]);
		close(out[1]);
		return saved;
	}
	t->out_rfd = out[0];
	t->out_wfd = out[1];
	t->err_rfd = err[0];
	t->err_wfd = err[1];
	return 0;
}

int executor_start(struct executor *e, const struct executor_task *task,
		   void *ctx)
{
	struct task *t;
	int err;

	if (e->closing || task->key == NULL || find(e, task->key) != NULL)
		return -1;
	if (task->shell == NULL && strv_len(task->argv) == 0)
		return -1;
	t = task_new(e, task, ctx);
	if (t == NULL) {
		log_error("executor: out of memory key=%s", task->key);
		return -1;
	}

	uv_pipe_init(e->loop, &t->out_pipe, 0);
	uv_pipe_init(e->loop, &t->err_pipe, 0);
	uv_timer_init(e->loop, &t->kill_timer);
	uv_timer_init(e->loop, &t->aux_timer);
	t->out_pipe.data = t;
	t->err_pipe.data = t;
	t->kill_timer.data = t;
	t->aux_timer.data = t;
	t->open_handles = TASK_BASE_HANDLES;
	t->next = e->tasks;
	e->tasks = t;
	e->ntasks++;
	e->nlive++;

	err = make_pipes(t);
	if (err != 0) {
		/* As a failed spawn: reported from the loop. */
		t->spawn_err = err;
		take_result(t);
		return 0;
	}

	t->in_spawner = true;
	spawner_hold(e);
	pthread_mutex_lock(&e->lock);
	if (e->queue_tail != NULL)
		e->queue_tail->job_next = t;
	else
		e->queue_head = t;
	e->queue_tail = t;
	pthread_cond_signal(&e->cond);
	pthread_mutex_unlock(&e->lock);
	return 0;
}

int executor_stop(struct executor *e, const char *key)
{
	struct task *t = find(e, key);

	if (t == NULL)
		return -1;
	if (t->spawn_failed || t->dropped || t->exited)
		return 0;   /* the result is already decided */
	if (t->reason == NULL)
		t->reason = "stopped";
	if (t->in_spawner) {
		if (unqueue(e, t))
			drop_job(t);
		else
			t->stop_requested = true;   /* acted on with the pid */
		return 0;
	}
	if (t->kill_stage != KILL_NONE)
		return 0;   /* already escalating after a timeout */
	begin_stop(t);
	return 0;
}

bool executor_has(struct executor *e, const char *key)
{
	return find(e, key) != NULL;
}

unsigned executor_count(struct executor *e)
{
	return e->ntasks;
}

void executor_close(struct executor *e, void (*done)(void *arg), void *arg)
{
	struct task *queued;

	e->closing = true;
	e->close_done = done;
	e->close_arg = arg;

	/* Jobs the spawner has not taken are never spawned. */
	pthread_mutex_lock(&e->lock);
	queued = e->queue_head;
	e->queue_head = NULL;
	e->queue_tail = NULL;
	pthread_mutex_unlock(&e->lock);
	while (queued != NULL) {
		struct task *t = queued;

		queued = t->job_next;
		t->job_next = NULL;
		t->in_spawner = false;
		spawner_release(e);
		drop_job(t);
	}
	/* Waits for the one spawn in progress, if any; then its result
	 * is the last one (take_result SIGKILLs it, since we are closing). */
	stop_spawner(e);
	take_results(e);
	wake_close(&e->wake, executor_handle_closed_cb);

	for (struct task *t = e->tasks; t != NULL; t = t->next) {
		if (t->spawn_failed || t->dropped || t->exited ||
		    t->kill_stage == KILL_KILL_SENT)
			continue;
		if (t->reason == NULL)
			t->reason = "stopped";
		uv_timer_stop(&t->kill_timer);
		t->kill_stage = KILL_KILL_SENT;
		signal_group(t, SIGKILL);
	}
	maybe_free_executor(e);
}
