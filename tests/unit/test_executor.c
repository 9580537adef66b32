/* test_executor.c - executor against real short child processes on a real loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/log.h"
#include "daemon/executor.h"

#define MAX_RESULTS 8

struct got {
	int calls;
	int exit_code;
	int term_signal;
	char reason[32];
	char detail[128];
	char *out;
	size_t out_len;
	char *err;
	size_t err_len;
	bool truncated;
	int64_t started_ms;
	int64_t finished_ms;
};

struct fixture {
	uv_loop_t loop;
	struct executor *e;
	struct got got[MAX_RESULTS];
	int close_done;
	int calls_at_close_done;
	int total_calls;
};

static struct fixture *F;

static char *dup_bytes(const char *p, size_t n)
{
	char *s = malloc(n + 1);

	assert_non_null(s);
	memcpy(s, p, n);
	s[n] = '\0';
	return s;
}

static void done_cb(struct executor *e, void *ctx,
		    const struct executor_result *r)
{
	struct got *g = ctx;

	g->calls++;
	F->total_calls++;
	g->exit_code = r->exit_code;
	g->term_signal = r->term_signal;
	snprintf(g->reason, sizeof g->reason, "%s", r->reason);
	snprintf(g->detail, sizeof g->detail, "%s", r->detail);
	free(g->out);
	free(g->err);
	g->out = dup_bytes(r->out, r->out_len);
	g->out_len = r->out_len;
	g->err = dup_bytes(r->err, r->err_len);
	g->err_len = r->err_len;
	g->truncated = r->truncated;
	g->started_ms = r->started_ms;
	g->finished_ms = r->finished_ms;
}

static void close_done(void *arg)
{
	struct fixture *f = arg;

	f->close_done++;
	f->calls_at_close_done = f->total_calls;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);

	if (f == NULL || uv_loop_init(&f->loop) != 0)
		return -1;
	f->e = executor_new(&f->loop, 300, done_cb);
	if (f->e == NULL)
		return -1;
	F = f;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	if (f->e != NULL) {
		executor_close(f->e, close_done, f);
		uv_run(&f->loop, UV_RUN_DEFAULT);
		assert_int_equal(f->close_done, 1);
	}
	assert_int_equal(uv_loop_close(&f->loop), 0);
	for (int i = 0; i < MAX_RESULTS; i++) {
		free(f->got[i].out);
		free(f->got[i].err);
	}
	free(f);
	F = NULL;
	return 0;
}

static struct executor_task shell_task(const char *key, const char *cmd)
{
	struct executor_task t = {
		.key = key,
		.shell = cmd,
		.max_log_bytes = 1 << 20,
	};
	return t;
}

static void run_one(struct fixture *f, const struct executor_task *t)
{
	assert_int_equal(executor_start(f->e, t, &f->got[0]), 0);
	assert_true(executor_has(f->e, t->key));
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(f->got[0].calls, 1);
	assert_false(executor_has(f->e, t->key));
	assert_int_equal(executor_count(f->e), 0);
}

/* /proc/<pid>/stat gone or in state Z: the process is dead. */
static bool pid_dead_now(long pid)
{
	char path[64], buf[512];
	FILE *fp;
	char *rp;
	bool dead = true;

	snprintf(path, sizeof path, "/proc/%ld/stat", pid);
	fp = fopen(path, "r");
	if (fp == NULL)
		return true;
	if (fgets(buf, sizeof buf, fp) != NULL) {
		rp = strrchr(buf, ')');
		dead = rp != NULL && (rp[2] == 'Z' || rp[2] == 'X');
	}
	fclose(fp);
	return dead;
}

/* A killed process may still be inside exit(2) (its pipes already closed, not
 * yet a zombie) when the result arrives: poll for up to 500 ms. */
static bool pid_dead(long pid)
{
	for (int i = 0; i < 50; i++) {
		if (pid_dead_now(pid))
			return true;
		usleep(10000);
	}
	return false;
}

/* ------------------------------------------------------------------ tests */

static void stdout_and_stderr_captured(void **state)
{
	struct fixture *f = *state;
	struct executor_task t = shell_task("a", "echo hello; echo oops >&2");

	run_one(f, &t);
	assert_string_equal(f->got[0].reason, "exited");
	assert_string_equal(f->got[0].detail, "");
	assert_int_equal(f->got[0].exit_code, 0);
	assert_int_equal(f->got[0].term_signal, 0);
	assert_string_equal(f->got[0].out, "hello\n");
	assert_string_equal(f->got[0].err, "oops\n");
	assert_false(f->got[0].truncated);
	assert_true(f->got[0].started_ms > 1600000000000LL);
	assert_true(f->got[0].finished_ms >= f->got[0].started_ms);
}

static void argv_echo_runs_without_shell(void **state)
{
	struct fixture *f = *state;
	char *argv[] = {"echo", "$HOME", "a b", NULL};
	struct executor_task t = {
		.key = "a", .argv = argv, .max_log_bytes = 1024,
	};

	run_one(f, &t);
	assert_int_equal(f->got[0].exit_code, 0);
	assert_string_equal(f->got[0].out, "$HOME a b\n");
}

static void shell_mode_interpolates(void **state)
{
	struct fixture *f = *state;
	struct executor_task t = shell_task("a", "X=42; echo \"v=$X\"");

	run_one(f, &t);
	assert_string_equal(f->got[0].out, "v=42\n");
}

static void exit_code_reported(void **state)
{
	struct fixture *f = *state;
	struct executor_task t = shell_task("a", "exit 3");

	run_one(f, &t);
	assert_string_equal(f->got[0].reason, "exited");
	assert_int_equal(f->got[0].exit_code, 3);
	assert_int_equal(f->got[0].term_signal, 0);
}

static void killed_by_signal_reported(void **state)
{
	struct fixture *f = *state;
	struct executor_task t = shell_task("a", "kill -9 $$");

	run_one(f, &t);
	assert_string_equal(f->got[0].reason, "exited");
	assert_int_equal(f->got[0].exit_code, -1);
	assert_int_equal(f->got[0].term_signal, 9);
}

static void env_added_and_overrides_inherited(void **state)
{
	struct fixture *f = *state;
	char *env[] = {"FOO=bar", "FLOWD_EXTRA=1", NULL};
	struct executor_task t = shell_task(
		"a", "env | grep -c '^FOO='; echo \"$FOO $FLOWD_EXTRA\"; "
		     "echo \"$PATH\"");
	char want[4096];

	assert_int_equal(setenv("FOO", "inherited", 1), 0);
	t.env = env;
	run_one(f, &t);
	unsetenv("FOO");
	snprintf(want, sizeof want, "1\nbar 1\n%s\n", getenv("PATH"));
	assert_string_equal(f->got[0].out, want);
}

static void workdir_honored(void **state)
{
	struct fixture *f = *state;
	char *argv[] = {"pwd", NULL};
	struct executor_task t = {
		.key = "a", .argv = argv, .workdir = "/", .max_log_bytes = 64,
	};

	run_one(f, &t);
	assert_string_equal(f->got[0].out, "/\n");
}

static void truncation_keeps_reading(void **state)
{
	struct fixture *f = *state;
	struct executor_task t = shell_task(
		"a", "head -c 1000000 /dev/zero; echo done >&2");

	t.max_log_bytes = 100;
	run_one(f, &t);
	assert_int_equal(f->got[0].exit_code, 0);
	assert_int_equal(f->got[0].out_len, 100);
	assert_string_equal(f->got[0].err, "done\n");
	assert_true(f->got[0].truncated);
}

static void timeout_kills_group_with_sigterm(void **state)
{
	struct fixture *f = *state;
	struct executor_task t = shell_task(
		"a", "sleep 30 & echo $!; sleep 30; wait");
	int64_t ms;

	t.timeout_s = 1;
	run_one(f, &t);
	ms = f->got[0].finished_ms - f->got[0].started_ms;
	assert_string_equal(f->got[0].reason, "timeout");
	assert_int_equal(f->got[0].exit_code, -1);
	assert_int_equal(f->got[0].term_signal, SIGTERM);
	assert_true(ms >= 900 && ms < 1000 + 300 + 500);
	assert_true(strtol(f->got[0].out, NULL, 10) > 1);
	assert_true(pid_dead(strtol(f->got[0].out, NULL, 10)));
}

static void timeout_escalates_to_sigkill(void **state)
{
	struct fixture *f = *state;
	/* TERM is ignored by the shell and, inherited, by both sleeps. */
	struct executor_task t = shell_task(
		"a", "trap '' TERM; sleep 30 & echo $!; sleep 30; wait");
	int64_t ms;

	t.timeout_s = 1;
	run_one(f, &t);
	ms = f->got[0].finished_ms - f->got[0].started_ms;
	assert_string_equal(f->got[0].reason, "timeout");
	assert_int_equal(f->got[0].term_signal, SIGKILL);
	assert_true(ms >= 1250 && ms < 1000 + 300 + 700);
	assert_true(strtol(f->got[0].out, NULL, 10) > 1);
	assert_true(pid_dead(strtol(f->got[0].out, NULL, 10)));
}

static void escaped_grandchild_does_not_hold_result(void **state)
{
	struct fixture *f = *state;
	/* setsid leaves the group, so the group SIGKILL after exit misses it
	 * and it keeps stdout open: the result comes 500 ms after exit. The
	 * pause lets setsid(2) happen before the group is killed. */
	struct executor_task t = shell_task(
		"a", "setsid sleep 5 & echo $!; sleep 0.2; exit 4");
	uint64_t t0, waited;
	int64_t ms;
	long pid;

	uv_update_time(&f->loop);
	t0 = uv_now(&f->loop);
	run_one(f, &t);
	uv_update_time(&f->loop);
	waited = uv_now(&f->loop) - t0;
	ms = f->got[0].finished_ms - f->got[0].started_ms;
	pid = strtol(f->got[0].out, NULL, 10);
	assert_true(pid > 0);
	kill((pid_t)pid, SIGKILL);
	assert_string_equal(f->got[0].reason, "exited");
	assert_int_equal(f->got[0].exit_code, 4);
	assert_true(ms < 1000);
	assert_true(waited >= (uint64_t)ms + 450 && waited < 2500);
}

static void stop_timer_cb(uv_timer_t *timer)
{
	struct fixture *f = timer->data;

	assert_int_equal(executor_stop(f->e, "no-such-key"), -1);
	assert_int_equal(executor_stop(f->e, "a"), 0);
	uv_close((uv_handle_t *)timer, NULL);
}

static void stop_reports_stopped(void **state)
{
	struct fixture *f = *state;
	char *argv[] = {"/bin/sleep", "30", NULL};
	struct executor_task t = {
		.key = "a", .argv = argv, .timeout_s = 20, .max_log_bytes = 64,
	};
	uv_timer_t timer;

	assert_int_equal(executor_start(f->e, &t, &f->got[0]), 0);
	uv_timer_init(&f->loop, &timer);
	timer.data = f;
	uv_timer_start(&timer, stop_timer_cb, 100, 0);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(f->got[0].calls, 1);
	assert_string_equal(f->got[0].reason, "stopped");
	assert_int_equal(f->got[0].term_signal, SIGTERM);
	assert_true(f->got[0].finished_ms - f->got[0].started_ms < 1000);
}

static void spawn_failure_is_async(void **state)
{
	struct fixture *f = *state;
	char *argv[] = {"/nonexistent/flowd-no-such-binary", NULL};
	struct executor_task t = {
		.key = "a", .argv = argv, .max_log_bytes = 64,
	};

	assert_int_equal(executor_start(f->e, &t, &f->got[0]), 0);
	assert_int_equal(f->got[0].calls, 0);
	assert_true(executor_has(f->e, "a"));
	assert_int_equal(executor_count(f->e), 1);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(f->got[0].calls, 1);
	assert_string_equal(f->got[0].reason, "spawn_failed");
	assert_int_equal(f->got[0].exit_code, -1);
	assert_string_equal(f->got[0].detail, uv_strerror(UV_ENOENT));
	assert_int_equal(f->got[0].out_len, 0);
	assert_int_equal(executor_count(f->e), 0);
}

static void duplicate_key_rejected(void **state)
{
	struct fixture *f = *state;
	struct executor_task t = shell_task("dup", "true");

	assert_int_equal(executor_start(f->e, &t, &f->got[0]), 0);
	assert_int_equal(executor_start(f->e, &t, &f->got[1]), -1);
	assert_int_equal(executor_count(f->e), 1);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(f->got[0].calls, 1);
	assert_int_equal(f->got[1].calls, 0);
	/* The key is free again once the callback has fired. */
	assert_int_equal(executor_start(f->e, &t, &f->got[1]), 0);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(f->got[1].calls, 1);
}

static void close_timer_cb(uv_timer_t *timer)
{
	struct fixture *f = timer->data;

	assert_int_equal(executor_count(f->e), 3);
	executor_close(f->e, close_done, f);
	f->e = NULL;
	assert_int_equal(f->close_done, 0);
	uv_close((uv_handle_t *)timer, NULL);
}

static void close_with_running_tasks(void **state)
{
	struct fixture *f = *state;
	char *argv[] = {"/bin/sleep", "30", NULL};
	const char *keys[] = {"k0", "k1", "k2"};
	uv_timer_t timer;

	for (int i = 0; i < 3; i++) {
		struct executor_task t = {
			.key = keys[i], .argv = argv, .max_log_bytes = 64,
		};
		assert_int_equal(executor_start(f->e, &t, &f->got[i]), 0);
	}
	/* A fourth that fails to spawn: its pending callback still fires. */
	{
		char *bad[] = {"/nonexistent/x", NULL};
		struct executor_task t = {
			.key = "k3", .argv = bad, .max_log_bytes = 64,
		};
		assert_int_equal(executor_start(f->e, &t, &f->got[3]), 0);
	}
	uv_timer_init(&f->loop, &timer);
	timer.data = f;
	/* The spawn failure has reported by then; three tasks are left. */
	uv_timer_start(&timer, close_timer_cb, 100, 0);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(f->close_done, 1);
	assert_int_equal(f->calls_at_close_done, 4);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(f->got[i].calls, 1);
		assert_string_equal(f->got[i].reason, "stopped");
		assert_int_equal(f->got[i].term_signal, SIGKILL);
	}
	assert_string_equal(f->got[3].reason, "spawn_failed");
}

static void close_when_idle(void **state)
{
	struct fixture *f = *state;

	executor_close(f->e, close_done, f);
	f->e = NULL;
	/* done never runs from inside executor_close. */
	assert_int_equal(f->close_done, 0);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(f->close_done, 1);
}

/* No child of ours is left, running or zombie. */
static bool no_children(void)
{
	int status;

	return waitpid(-1, &status, WNOHANG) == -1 && errno == ECHILD;
}

#define MANY 200

static void many_tasks_at_once_all_complete(void **state)
{
	struct fixture *f = *state;
	char *argv[] = {"/bin/true", NULL};
	struct got *got = calloc(MANY, sizeof *got);
	char key[32];

	assert_non_null(got);
	for (int i = 0; i < MANY; i++) {
		struct executor_task t = {
			.key = key, .argv = argv, .max_log_bytes = 64,
		};

		snprintf(key, sizeof key, "true/%d", i);
		assert_int_equal(executor_start(f->e, &t, &got[i]), 0);
	}
	assert_int_equal(executor_count(f->e), MANY);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(executor_count(f->e), 0);
	assert_int_equal(f->total_calls, MANY);
	for (int i = 0; i < MANY; i++) {
		assert_int_equal(got[i].calls, 1);
		assert_string_equal(got[i].reason, "exited");
		assert_int_equal(got[i].exit_code, 0);
		assert_true(got[i].started_ms > 1600000000000LL);
		free(got[i].out);
		free(got[i].err);
	}
	free(got);
	assert_true(no_children());
}

#define STOPPED 16

static void stop_right_after_start_leaves_no_process(void **state)
{
	struct fixture *f = *state;
	char *argv[] = {"/bin/sleep", "30", NULL};
	struct got *got = calloc(STOPPED, sizeof *got);
	char key[32];
	uint64_t t0;

	assert_non_null(got);
	uv_update_time(&f->loop);
	t0 = uv_now(&f->loop);
	/* The spawner can take at most the first job or two before the stops:
	 * the rest are dropped from its queue, the others killed by pid. */
	for (int i = 0; i < STOPPED; i++) {
		struct executor_task t = {
			.key = key, .argv = argv, .timeout_s = 20,
			.max_log_bytes = 64,
		};

		snprintf(key, sizeof key, "s/%d", i);
		assert_int_equal(executor_start(f->e, &t, &got[i]), 0);
	}
	for (int i = 0; i < STOPPED; i++) {
		snprintf(key, sizeof key, "s/%d", i);
		assert_int_equal(executor_stop(f->e, key), 0);
		assert_int_equal(got[i].calls, 0);   /* never synchronous */
		assert_true(executor_has(f->e, key));
	}
	uv_run(&f->loop, UV_RUN_DEFAULT);
	uv_update_time(&f->loop);
	assert_true(uv_now(&f->loop) - t0 < 1000);
	for (int i = 0; i < STOPPED; i++) {
		assert_int_equal(got[i].calls, 1);
		assert_string_equal(got[i].reason, "stopped");
		assert_int_equal(got[i].exit_code, -1);
		assert_true(got[i].term_signal == 0 ||
			    got[i].term_signal == SIGTERM);
		free(got[i].out);
		free(got[i].err);
	}
	free(got);
	assert_int_equal(executor_count(f->e), 0);
	assert_true(no_children());
}

static void close_drops_queued_jobs(void **state)
{
	struct fixture *f = *state;
	char *argv[] = {"/bin/sleep", "30", NULL};
	struct got *got = calloc(MANY, sizeof *got);
	char key[32];

	assert_non_null(got);
	for (int i = 0; i < MANY; i++) {
		struct executor_task t = {
			.key = key, .argv = argv, .max_log_bytes = 64,
		};

		snprintf(key, sizeof key, "q/%d", i);
		assert_int_equal(executor_start(f->e, &t, &got[i]), 0);
	}
	executor_close(f->e, close_done, f);
	f->e = NULL;
	assert_int_equal(f->total_calls, 0);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(f->close_done, 1);
	assert_int_equal(f->calls_at_close_done, MANY);
	for (int i = 0; i < MANY; i++) {
		assert_int_equal(got[i].calls, 1);
		assert_string_equal(got[i].reason, "stopped");
		assert_true(got[i].term_signal == 0 ||
			    got[i].term_signal == SIGKILL);
		free(got[i].out);
		free(got[i].err);
	}
	free(got);
	assert_true(no_children());
}

/* argv[0] without a '/' is looked up in the CHILD's PATH: task->env wins. */
static void path_lookup_uses_task_env_path(void **state)
{
	struct fixture *f = *state;
	char dir[] = "/tmp/flowd-test-path-XXXXXX";
	char tool[64], env_path[80];
	char *argv[] = {"flowd-test-tool", "x", NULL};
	char *env[] = {env_path, NULL};
	struct executor_task t = {
		.key = "a", .argv = argv, .env = env, .max_log_bytes = 64,
	};
	FILE *fp;

	assert_non_null(mkdtemp(dir));
	snprintf(tool, sizeof tool, "%s/flowd-test-tool", dir);
	fp = fopen(tool, "w");
	assert_non_null(fp);
	fputs("#!/bin/sh\necho \"tool $1\"\n", fp);
	fclose(fp);
	assert_int_equal(chmod(tool, 0755), 0);
	/* A missing directory first: the search goes on to the next one. */
	snprintf(env_path, sizeof env_path, "PATH=/nonexistent-flowd:%s", dir);

	run_one(f, &t);
	assert_string_equal(f->got[0].reason, "exited");
	assert_int_equal(f->got[0].exit_code, 0);
	assert_string_equal(f->got[0].out, "tool x\n");

	/* "true" is in flowd's PATH but not in the child's. */
	argv[0] = "true";
	f->got[0].calls = 0;
	run_one(f, &t);
	assert_string_equal(f->got[0].reason, "spawn_failed");
	assert_string_equal(f->got[0].detail, uv_strerror(UV_ENOENT));

	/* Found but not executable: EACCES, as execvp says. */
	argv[0] = "flowd-test-tool";
	assert_int_equal(chmod(tool, 0644), 0);
	f->got[0].calls = 0;
	run_one(f, &t);
	assert_string_equal(f->got[0].reason, "spawn_failed");
	assert_string_equal(f->got[0].detail, uv_strerror(UV_EACCES));

	unlink(tool);
	rmdir(dir);
}

/* flowd ignores SIGPIPE and its threads block signals: children must start
 * with an empty mask and the standard signals (1-31) at their default.
 * glibc's posix_spawn leaves its two internal signals (32, 33) ignored; no
 * program can name them through glibc (SIGRTMIN is 34), so that is allowed. */
static void child_starts_with_default_signals(void **state)
{
	struct fixture *f = *state;
	/* The spawned process itself reads its status (no shell between). */
	char *argv[] = {"sed", "-n", "s/^Sig\\(Blk\\|Ign\\):\\t//p",
			"/proc/self/status", NULL};
	struct executor_task t = {
		.key = "a", .argv = argv, .max_log_bytes = 256,
	};
	void (*old)(int) = signal(SIGPIPE, SIG_IGN);
	unsigned long long blk, ign;

	run_one(f, &t);
	signal(SIGPIPE, old);
	assert_int_equal(sscanf(f->got[0].out, "%llx %llx", &blk, &ign), 2);
	assert_int_equal(blk, 0);
	assert_int_equal(ign & 0x7fffffffULL, 0);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(stdout_and_stderr_captured),
		T(argv_echo_runs_without_shell),
		T(shell_mode_interpolates),
		T(exit_code_reported),
		T(killed_by_signal_reported),
		T(env_added_and_overrides_inherited),
		T(workdir_honored),
		T(truncation_keeps_reading),
		T(timeout_kills_group_with_sigterm),
		T(timeout_escalates_to_sigkill),
		T(escaped_grandchild_does_not_hold_result),
		T(stop_reports_stopped),
		T(spawn_failure_is_async),
		T(duplicate_key_rejected),
		T(close_with_running_tasks),
		T(close_when_idle),
		T(many_tasks_at_once_all_complete),
		T(stop_right_after_start_leaves_no_process),
		T(close_drops_queued_jobs),
		T(path_lookup_uses_task_env_path),
		T(child_starts_with_default_signals),
	};

	if (getenv("FLOWD_TRACE") != NULL)
		flowd_log_level = FLOWD_LOG_DEBUG;
	return cmocka_run_group_tests_name("executor", tests, NULL, NULL);
}
