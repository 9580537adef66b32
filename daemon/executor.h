/* executor.h - runs step attempts as child processes (spawned by a helper
 * thread with vfork + execve, watched from the loop thread through pidfds):
 * each in its own process group and session, argv without a shell (or
 * `sh -c` when the step asked for `shell`), only descriptors 0-2 open,
 * stdout and stderr captured up to a limit, a timeout that kills the whole
 * group (SIGTERM, grace, SIGKILL); once executor_set_sandbox is called, a
 * clean environment and the configured user (daemon/sandbox.h). */
#ifndef FLOWD_DAEMON_EXECUTOR_H
#define FLOWD_DAEMON_EXECUTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "daemon/sandbox.h"

struct executor_task {
	const char *key;          /* unique id of this attempt, e.g. "run/step/3"; copied */
	char *const *argv;        /* NULL-terminated; used when shell == NULL; copied */
	const char *shell;        /* run as {"/bin/sh","-c",shell}; copied */
	char *const *env;         /* NULL-terminated "K=V" to ADD to the step's
	                           * base environment (they win over it): flowd's
	                           * own, or the clean one of
	                           * executor_set_sandbox; copied */
	const char *workdir;      /* NULL = flowd's cwd (when the sandbox switches
	                           * user: that user's home, else "/"); entered
	                           * as the step's user; copied */
	unsigned timeout_s;       /* 0 = none */
	size_t max_log_bytes;     /* per stream; the rest is discarded and `truncated` set */
};

struct executor_result {
	int exit_code;            /* -1 when killed by a signal or never started */
	int term_signal;          /* 0 unless killed by a signal */
	const char *reason;       /* "exited", "timeout", "stopped" (executor_stop),
	                           * "spawn_failed" */
	const char *detail;       /* e.g. strerror text for spawn_failed, else "" */
	const char *out;          /* captured stdout (not NUL-safe: use out_len); borrowed */
	size_t out_len;
	const char *err;          /* captured stderr; borrowed */
	size_t err_len;
	bool truncated;
	int64_t started_ms;       /* wall clock, from the executor's clock */
	int64_t finished_ms;
};

struct executor;

/* Called on the loop thread once per started task, when the process has
 * exited and its pipes are drained (or spawn failed). `result` and its
 * strings are borrowed for the duration of the call. */
typedef void (*executor_done_cb)(struct executor *e, void *ctx,
				 const struct executor_result *result);

/* Create on `loop` (borrowed). kill_grace_ms: SIGTERM to SIGKILL delay. */
struct executor *executor_new(uv_loop_t *loop, unsigned kill_grace_ms,
			      executor_done_cb cb);

/* Called on the loop thread with the output a task produced, as it is
 * read (what the limit keeps): stream 1 stdout, 2 stderr. */
typedef void (*executor_output_cb)(void *arg, const char *key, int stream,
				   const char *data, size_t len);
void executor_set_output(struct executor *e, executor_output_cb cb,
			 void *arg);

/* The nice value (0..19) steps start with, from the next spawn on: the
 * spawner thread takes it, and children inherit a thread's nice. */
void executor_set_nice(struct executor *e, int nice);

/* Sandbox every step from the next spawn on; call it once, before the
 * first executor_start (-1 if a task exists, or out of memory). Steps then
 * start from sandbox_env_base(id, pass_env), built now from flowd's
 * environment, instead of flowd's whole environment, and run as `id`
 * (setgroups, setgid, setuid when id->switch_user). `id` and `pass_env` are
 * borrowed for the call (copied). Without it (unit tests), steps inherit
 * flowd's environment and identity; descriptors above 2 are closed either
 * way. */
int executor_set_sandbox(struct executor *e,
			 const struct sandbox_identity *id,
			 char *const *pass_env);

/* Start a task; `ctx` is handed back to the callback. Returns 0 (the callback
 * will fire exactly once, even if the spawn itself failed: reason
 * "spawn_failed") or -1 only on out-of-memory/duplicate key (then the callback
 * never fires). */
int executor_start(struct executor *e, const struct executor_task *task,
		   void *ctx);

/* Stop the task with this key: SIGTERM to its process group, SIGKILL after the
 * grace period. Its callback then fires with reason "stopped" (unless it had
 * already exited). Returns 0, or -1 if no such task runs. */
int executor_stop(struct executor *e, const char *key);

/* Is a task with this key running? */
bool executor_has(struct executor *e, const char *key);

/* Number of tasks running. */
unsigned executor_count(struct executor *e);

/* Record each running child's pid and start time in the file at `path`
 * (created or truncated; one 16-byte slot per running child, zeroed when it
 * exits). Returns 0 or -1. */
int executor_set_pid_file(struct executor *e, const char *path);

/* At start, before executor_set_pid_file on the same path: SIGKILL the
 * process group of every child an earlier flowd recorded there that still
 * runs (same pid and start time). Returns how many were killed. */
int executor_kill_orphans(const char *path);

/* Kill every process group at once with SIGKILL, close all handles; each
 * pending callback fires with reason "stopped" (a task whose outcome was
 * already decided keeps it: "spawn_failed", or "exited"/"timeout" when the
 * process had exited and only its pipes were draining). executor_start
 * returns -1 from here on. `done` (may be NULL) is called from the loop, never
 * from inside executor_close, after every handle is closed and the executor
 * freed. */
void executor_close(struct executor *e, void (*done)(void *arg), void *arg);

#endif
