/* executor.c - step attempts as child processes on the libuv loop thread. */

/*
 * DESIGN
 *
 * Happy path. executor_start() copies the task, spawns it with
 * UV_PROCESS_DETACHED (the child calls setsid(), so pid == pgid and a signal
 * to -pid reaches the whole group, grandchildren included), stdin on
 * /dev/null and stdout/stderr on two pipes read with uv_read_start(). Each
 * stream keeps at most max_log_bytes; the rest is read and dropped (the child
 * never blocks on a full pipe) and `truncated` is set. When the exit callback
 * has run AND both pipes reached EOF, the task is unlinked, the done callback
 * fires once, and the five handles (process, two pipes, two timers) are
 * closed; the task's memory is freed in the last close callback.
 *
 * Handles per task:
 *   proc       the child; libuv reaps it (we never call waitpid).
 *   out, err   the child's stdout and stderr.
 *   kill_timer timeout_s, then kill_grace_ms: SIGTERM to -pid, then SIGKILL.
 *   aux_timer  0 ms "report spawn failure" timer, or the 500 ms drain limit
 *              after exit.
 *
 * Failure modes.
 *   - uv_spawn fails (ENOENT, EACCES, ...): executor_start still returns 0;
 *     a 0 ms timer reports "spawn_failed" from the loop, never from inside
 *     executor_start, so the caller's state is consistent when it runs.
 *   - Timeout or executor_stop(): SIGTERM to the group, SIGKILL after the
 *     grace period. The first cause wins the reason ("timeout"/"stopped").
 *   - A grandchild that left the group (its own setsid) may hold a pipe open
 *     forever: 500 ms after the exit callback we report anyway.
 *   - Leftovers in the group after the main process exits get SIGKILL at once
 *     (ESRCH when the group is already gone is ignored).
 *   - executor_close(): SIGKILL to every group; tasks still running report
 *     "stopped"; the executor is freed after every handle's close callback,
 *     then done(arg) runs.
 *
 * Threads: everything runs on the loop thread; nothing here is thread-safe.
 */

#include "daemon/executor.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"

#define DRAIN_AFTER_EXIT_MS 500
#define READ_BUF_SIZE 65536
#define TASK_HANDLES 5

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
	struct task *next;
	struct executor *e;
	void *ctx;

	char *key;
	char **args;      /* owned, NULL-terminated, each string owned */
	char **env;       /* merged environment, same ownership */
	char *workdir;
	unsigned timeout_s;
	size_t max_log_bytes;

	uv_process_t proc;
	uv_pipe_t out_pipe;
	uv_pipe_t err_pipe;
	uv_timer_t kill_timer;
	uv_timer_t aux_timer;
	int open_handles;

	int pid;
	struct capture out;
	struct capture err;
	bool truncated;
	bool spawn_failed;
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
	executor_done_cb cb;
	struct task *tasks;   /* running: started, callback not yet fired */
	unsigned ntasks;
	unsigned nlive;       /* allocated tasks, including those closing */
	bool closing;
	bool freeing;
	void (*close_done)(void *arg);
	void *close_arg;
	uv_timer_t close_handle;   /* never started; closed last, so done(arg)
	                            * always runs from the loop */
	char read_buf[READ_BUF_SIZE];
};

/* ---------------------------------------------------------------- helpers */

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

/* flowd's environ minus the keys task_env redefines, then task_env. */
static char **build_env(char *const *task_env)
{
	size_t n_inherit = strv_len(environ);
	size_t n_task = strv_len(task_env);
	size_t n = 0;
	char **v;

	v = calloc(n_inherit + n_task + 1, sizeof *v);
	if (v == NULL)
		return NULL;
	for (size_t i = 0; i < n_inherit; i++) {
		if (env_has_key(task_env, environ[i]))
			continue;
		v[n] = strdup(environ[i]);
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

/* ---------------------------------------------------------- executor close */

static void executor_handle_closed_cb(uv_handle_t *h)
{
	struct executor *e = h->data;
	void (*done)(void *arg) = e->close_done;
	void *arg = e->close_arg;

	free(e);
	if (done != NULL)
		done(arg);
}

static void maybe_free_executor(struct executor *e)
{
	if (!e->closing || e->freeing || e->nlive > 0)
		return;
	e->freeing = true;
	uv_close((uv_handle_t *)&e->close_handle, executor_handle_closed_cb);
}

/* --------------------------------------------------------------- finishing */

static void task_handle_closed_cb(uv_handle_t *h)
{
	struct task *t = h->data;
	struct executor *e = t->e;

	if (--t->open_handles > 0)
		return;
	free_task(t);
	e->nlive--;
	maybe_free_executor(e);
}

static void close_task_handles(struct task *t)
{
	uv_handle_t *hs[TASK_HANDLES] = {
		(uv_handle_t *)&t->proc, (uv_handle_t *)&t->out_pipe,
		(uv_handle_t *)&t->err_pipe, (uv_handle_t *)&t->kill_timer,
		(uv_handle_t *)&t->aux_timer,
	};

	for (int i = 0; i < TASK_HANDLES; i++)
		uv_close(hs[i], task_handle_closed_cb);
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

static void spawn_failed_cb(uv_timer_t *timer)
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

static void exit_cb(uv_process_t *proc, int64_t exit_status, int term_signal)
{
	struct task *t = proc->data;

	t->exited = true;
	t->exit_status = exit_status;
	t->term_signal = term_signal;
	t->finished_ms = wall_ms();
	uv_timer_stop(&t->kill_timer);
	/* Reap whatever the main process left behind in its group. */
	signal_group(t, SIGKILL);
	if (!t->out.eof || !t->err.eof)
		uv_timer_start(&t->aux_timer, drain_timeout_cb,
			       DRAIN_AFTER_EXIT_MS, 0);
	maybe_finish(t);
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

/* ----------------------------------------------------------------- public */

struct executor *executor_new(uv_loop_t *loop, unsigned kill_grace_ms,
			      executor_done_cb cb)
{
	struct executor *e;

	e = calloc(1, sizeof *e);
	if (e == NULL)
		return NULL;
	e->loop = loop;
	e->kill_grace_ms = kill_grace_ms;
	e->cb = cb;
	uv_timer_init(loop, &e->close_handle);
	e->close_handle.data = e;
	return e;
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
	t->key = strdup(task->key);
	if (t->key == NULL)
		goto fail_task;
	t->args = build_args(task);
	if (t->args == NULL)
		goto fail_task;
	t->env = build_env(task->env);
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

int executor_start(struct executor *e, const struct executor_task *task,
		   void *ctx)
{
	uv_process_options_t opts;
	uv_stdio_container_t stdio[3];
	struct task *t;
	int rc;

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
	t->proc.data = t;
	t->out_pipe.data = t;
	t->err_pipe.data = t;
	t->kill_timer.data = t;
	t->aux_timer.data = t;

	memset(&opts, 0, sizeof opts);
	stdio[0].flags = UV_IGNORE;
	stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
	stdio[1].data.stream = (uv_stream_t *)&t->out_pipe;
	stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
	stdio[2].data.stream = (uv_stream_t *)&t->err_pipe;
	opts.exit_cb = exit_cb;
	opts.file = t->args[0];
	opts.args = t->args;
	opts.env = t->env;
	opts.cwd = t->workdir;
	opts.flags = UV_PROCESS_DETACHED;
	opts.stdio_count = 3;
	opts.stdio = stdio;

	t->started_ms = wall_ms();
	/* uv_spawn initialises t->proc even when it fails; it is closed with
	 * the others either way. */
	rc = uv_spawn(e->loop, &t->proc, &opts);
	t->proc.data = t;
	t->open_handles = TASK_HANDLES;
	t->next = e->tasks;
	e->tasks = t;
	e->ntasks++;
	e->nlive++;

	if (rc != 0) {
		log_info("executor: spawn failed key=%s file=%s: %s", t->key,
			 t->args[0], uv_strerror(rc));
		t->spawn_failed = true;
		t->detail = uv_strerror(rc);
		t->finished_ms = t->started_ms;
		/* Report from the loop, never from inside executor_start. */
		uv_timer_start(&t->aux_timer, spawn_failed_cb, 0, 0);
		return 0;
	}

	t->pid = t->proc.pid;
	log_debug("executor: started key=%s pid=%d file=%s", t->key, t->pid,
		  t->args[0]);
	uv_read_start((uv_stream_t *)&t->out_pipe, alloc_cb, read_cb);
	uv_read_start((uv_stream_t *)&t->err_pipe, alloc_cb, read_cb);
	if (t->timeout_s > 0)
		uv_timer_start(&t->kill_timer, kill_timer_cb,
			       (uint64_t)t->timeout_s * 1000, 0);
	return 0;
}

int executor_stop(struct executor *e, const char *key)
{
	struct task *t = find(e, key);

	if (t == NULL)
		return -1;
	if (t->spawn_failed || t->exited)
		return 0;   /* the result is already decided */
	if (t->reason == NULL)
		t->reason = "stopped";
	if (t->kill_stage != KILL_NONE)
		return 0;   /* already escalating after a timeout */
	log_info("executor: stop key=%s pgid=%d", t->key, t->pid);
	signal_group(t, SIGTERM);
	t->kill_stage = KILL_TERM_SENT;
	uv_timer_start(&t->kill_timer, kill_timer_cb, e->kill_grace_ms, 0);
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
	e->closing = true;
	e->close_done = done;
	e->close_arg = arg;
	for (struct task *t = e->tasks; t != NULL; t = t->next) {
		if (t->spawn_failed || t->exited)
			continue;
		if (t->reason == NULL)
			t->reason = "stopped";
		uv_timer_stop(&t->kill_timer);
		t->kill_stage = KILL_KILL_SENT;
		signal_group(t, SIGKILL);
	}
	maybe_free_executor(e);
}
