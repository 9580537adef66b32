/* test_sandbox.c - daemon/sandbox.c: identity, files, environment, closing
 * descriptors, switching user; and the executor's sandboxed children. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/log.h"
#include "daemon/executor.h"
#include "daemon/sandbox.h"

static const char *env_value(char **env, const char *name)
{
	size_t n = strlen(name);

	for (size_t i = 0; env[i] != NULL; i++)
		if (strncmp(env[i], name, n) == 0 && env[i][n] == '=')
			return env[i] + n + 1;
	return NULL;
}

static void free_env(char **env)
{
	for (size_t i = 0; env[i] != NULL; i++)
		free(env[i]);
	free(env);
}

static void rm_rf(const char *dir)
{
	char cmd[512];

	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

/* ---------------------------------------------------------------- identity */

static void resolve_own_user_when_run_as_unset(void **state)
{
	struct flowd_config cfg = {.allow_root = 1};
	struct sandbox_identity id;
	char err[256];

	(void)state;
	assert_int_equal(sandbox_resolve(&cfg, &id, err, sizeof err), 0);
	assert_false(id.switch_user);
	assert_int_equal(id.uid, geteuid());
	assert_int_equal(id.gid, getegid());
	assert_true(id.home[0] != '\0');
}

static void resolve_refuses_root_without_allow_root(void **state)
{
	struct flowd_config cfg = {.allow_root = 0};
	struct sandbox_identity id;
	char err[256];

	(void)state;
	if (geteuid() != 0)
		skip();
	assert_int_equal(sandbox_resolve(&cfg, &id, err, sizeof err), -1);
	assert_non_null(strstr(err, "executor.allow_root"));
	cfg.run_as = "root";
	assert_int_equal(sandbox_resolve(&cfg, &id, err, sizeof err), -1);
	assert_non_null(strstr(err, "executor.allow_root"));
	cfg.run_as = "nobody:0";
	assert_int_equal(sandbox_resolve(&cfg, &id, err, sizeof err), -1);
	assert_non_null(strstr(err, "gid 0"));
}

static void resolve_run_as_user_and_group(void **state)
{
	struct flowd_config cfg = {.run_as = "nobody"};
	struct sandbox_identity id;
	struct passwd *pw = getpwnam("nobody");
	char err[256], spec[64];

	(void)state;
	if (geteuid() != 0 || pw == NULL)
		skip();
	assert_int_equal(sandbox_resolve(&cfg, &id, err, sizeof err), 0);
	assert_true(id.switch_user);
	assert_int_equal(id.uid, pw->pw_uid);
	assert_int_equal(id.gid, pw->pw_gid);
	assert_string_equal(id.user, "nobody");
	assert_true(id.n_groups >= 1);
	/* by number, and with a group */
	snprintf(spec, sizeof spec, "%u:%u", (unsigned)pw->pw_uid, 65533u);
	cfg.run_as = spec;
	if (getgrgid(65533) == NULL) {
		assert_int_equal(sandbox_resolve(&cfg, &id, err, sizeof err),
				 -1);
		assert_non_null(strstr(err, "no group"));
	}
	snprintf(spec, sizeof spec, "%u:%u", (unsigned)pw->pw_uid,
		 (unsigned)pw->pw_gid);
	assert_int_equal(sandbox_resolve(&cfg, &id, err, sizeof err), 0);
	assert_string_equal(id.user, "nobody");
	cfg.run_as = "no-such-user-flowd";
	assert_int_equal(sandbox_resolve(&cfg, &id, err, sizeof err), -1);
	assert_non_null(strstr(err, "executor.run_as: no user"));
	cfg.run_as = "nobody:";
	assert_int_equal(sandbox_resolve(&cfg, &id, err, sizeof err), -1);
}

/* ------------------------------------------------------------------- files */

static void files_are_created_tightened_or_refused(void **state)
{
	char dir[] = "/tmp/flowd-test-sandbox-XXXXXX";
	char data[128], conf[128], err[512];
	struct stat st;
	int fd;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(data, sizeof data, "%s/a/b/data", dir);
	snprintf(conf, sizeof conf, "%s/flowd.conf", dir);
	fd = open(conf, O_WRONLY | O_CREAT, 0644);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(chmod(conf, 0644), 0);

	/* missing data dir: created 0700; world-readable config: 0600 */
	assert_int_equal(sandbox_check_files(conf, data, err, sizeof err), 0);
	assert_int_equal(stat(data, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	assert_int_equal(stat(conf, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);

	/* an open data dir is closed; 0640 is left alone */
	assert_int_equal(chmod(data, 0755), 0);
	assert_int_equal(chmod(conf, 0640), 0);
	assert_int_equal(sandbox_check_files(conf, data, err, sizeof err), 0);
	assert_int_equal(stat(data, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	assert_int_equal(stat(conf, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0640);

	/* world-writable: refused */
	assert_int_equal(chmod(conf, 0602), 0);
	assert_int_equal(sandbox_check_files(conf, data, err, sizeof err), -1);
	assert_non_null(strstr(err, "writable by every user"));
	assert_int_equal(chmod(conf, 0600), 0);

	/* no config path: only the data dir */
	assert_int_equal(sandbox_check_files(NULL, data, err, sizeof err), 0);
	/* a data dir that is a file */
	assert_int_equal(sandbox_check_files(NULL, conf, err, sizeof err), -1);
	assert_non_null(strstr(err, "not a directory"));

	if (geteuid() == 0) {
		/* someone else's: refused, not fixed */
		assert_int_equal(chown(data, 65534, 65534), 0);
		assert_int_equal(
			sandbox_check_files(NULL, data, err, sizeof err), -1);
		assert_non_null(strstr(err, "owned by uid 65534"));
		assert_int_equal(chown(conf, 65534, 0), 0);
		assert_int_equal(chmod(conf, 0644), 0);
		assert_int_equal(
			sandbox_check_files(conf, NULL, err, sizeof err), -1);
		assert_non_null(strstr(err, "readable by every user"));
		assert_int_equal(stat(conf, &st), 0);
		assert_int_equal(st.st_mode & 07777, 0644);
	}
	rm_rf(dir);
}

/* ------------------------------------------------------------- environment */

static void env_base_is_clean_and_pass_env_copies(void **state)
{
	struct sandbox_identity id = {.uid = 1, .gid = 1};
	char *pass[] = {"FLOWD_T_KEEP", "FLOWD_T_UNSET", "PATH", NULL};
	char **env;

	(void)state;
	snprintf(id.user, sizeof id.user, "someone");
	snprintf(id.home, sizeof id.home, "/home/someone");
	assert_int_equal(setenv("FLOWD_T_KEEP", "k", 1), 0);
	assert_int_equal(setenv("FLOWD_T_DROP", "d", 1), 0);
	unsetenv("FLOWD_T_UNSET");

	env = sandbox_env_base(&id, NULL);
	assert_non_null(env);
	assert_string_equal(env_value(env, "PATH"), SANDBOX_DEFAULT_PATH);
	assert_string_equal(env_value(env, "HOME"), "/home/someone");
	assert_string_equal(env_value(env, "USER"), "someone");
	assert_string_equal(env_value(env, "LOGNAME"), "someone");
	assert_non_null(env_value(env, "LANG"));
	assert_null(env_value(env, "FLOWD_T_KEEP"));
	assert_null(env_value(env, "FLOWD_T_DROP"));
	free_env(env);

	env = sandbox_env_base(&id, pass);
	assert_non_null(env);
	assert_string_equal(env_value(env, "FLOWD_T_KEEP"), "k");
	assert_null(env_value(env, "FLOWD_T_UNSET"));
	assert_null(env_value(env, "FLOWD_T_DROP"));
	/* PATH listed: flowd's replaces the default, once */
	assert_string_equal(env_value(env, "PATH"), getenv("PATH"));
	{
		int n = 0;

		for (size_t i = 0; env[i] != NULL; i++)
			n += strncmp(env[i], "PATH=", 5) == 0;
		assert_int_equal(n, 1);
	}
	free_env(env);
	unsetenv("FLOWD_T_KEEP");
	unsetenv("FLOWD_T_DROP");
}

/* ------------------------------------------------------------ descriptors */

/* In a forked child: open fds without close-on-exec, close from 3 (by
 * `how`), and exit 0 if only 0-2 remain. */
static void closes_in_child(int (*how)(int))
{
	pid_t pid = fork();
	int status;

	assert_true(pid >= 0);
	if (pid == 0) {
		int fds[2];

		if (pipe(fds) != 0 || dup2(fds[0], 200) < 0 ||
		    open("/dev/null", O_RDONLY) < 0)
			_exit(2);
		if (how(3) != 0)
			_exit(3);
		for (int fd = 3; fd < 1024; fd++)
			if (fcntl(fd, F_GETFD) >= 0)
				_exit(4);
		if (fcntl(0, F_GETFD) < 0 || fcntl(2, F_GETFD) < 0)
			_exit(5);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void close_from_closes_everything_above(void **state)
{
	(void)state;
	closes_in_child(sandbox_close_from);
	closes_in_child(sandbox__close_from_proc);
}

static void switch_user_changes_every_id(void **state)
{
	struct sandbox_identity id = {.switch_user = true, .uid = 65534,
				      .gid = 65534, .n_groups = 1};
	pid_t pid;
	int status;

	(void)state;
	if (geteuid() != 0)
		skip();
	id.groups[0] = 65534;
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		uid_t r, e, s;
		gid_t g[8];

		if (sandbox_switch_user(&id) != 0)
			_exit(2);
		if (getresuid(&r, &e, &s) != 0 || r != 65534 || e != 65534 ||
		    s != 65534)
			_exit(3);
		if (getgid() != 65534 || getegid() != 65534)
			_exit(4);
		if (getgroups(8, g) != 1 || g[0] != 65534)
			_exit(5);
		if (setuid(0) == 0)
			_exit(6);   /* no way back */
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* ---------------------------------------------------------------- executor */

struct got {
	int calls;
	char reason[32];
	int exit_code;
	char out[4096];
};

static void done_cb(struct executor *e, void *ctx,
		    const struct executor_result *r)
{
	struct got *g = ctx;

	(void)e;
	g->calls++;
	g->exit_code = r->exit_code;
	snprintf(g->reason, sizeof g->reason, "%s", r->reason);
	snprintf(g->out, sizeof g->out, "%.*s", (int)r->out_len, r->out);
}

/* A sandboxed executor: the step sees the clean environment, 0-2 only (a
 * descriptor flowd leaked without close-on-exec included) and, as root,
 * runs as nobody in nobody's home (or /). */
static void executor_runs_steps_sandboxed(void **state)
{
	uv_loop_t loop;
	struct executor *e;
	struct flowd_config cfg = {.allow_root = 1};
	struct sandbox_identity id;
	struct got got = {0};
	char *pass[] = {"FLOWD_T_KEEP", NULL};
	char *task_env[] = {"FLOWD_RUN_ID=r1", "FROM_SPEC=yes", NULL};
	struct executor_task t = {
		.key = "k",
		.shell = "echo \"$FLOWD_RUN_ID $FROM_SPEC ${FLOWD_T_KEEP-} "
			 "${FLOWD_T_DROP-none} $PATH\"; ls /proc/self/fd | "
			 "tr '\\n' ' '; echo; id -u; pwd",
		.env = task_env,
		.max_log_bytes = 4096,
	};
	char err[256], want[PATH_MAX + 512];
	int leaked = open("/dev/null", O_RDONLY);   /* no O_CLOEXEC */

	(void)state;
	assert_true(leaked >= 3);
	if (geteuid() == 0)
		cfg.run_as = "nobody";
	assert_int_equal(sandbox_resolve(&cfg, &id, err, sizeof err), 0);
	assert_int_equal(setenv("FLOWD_T_KEEP", "kept", 1), 0);
	assert_int_equal(setenv("FLOWD_T_DROP", "dropped", 1), 0);
	assert_int_equal(uv_loop_init(&loop), 0);
	e = executor_new(&loop, 300, done_cb);
	assert_non_null(e);
	assert_int_equal(executor_set_sandbox(e, &id, pass), 0);
	assert_int_equal(executor_set_sandbox(e, &id, pass), -1); /* once */
	assert_int_equal(executor_start(e, &t, &got), 0);
	while (got.calls == 0)
		uv_run(&loop, UV_RUN_ONCE);
	executor_close(e, NULL, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
	close(leaked);
	unsetenv("FLOWD_T_KEEP");
	unsetenv("FLOWD_T_DROP");

	assert_string_equal(got.reason, "exited");
	assert_int_equal(got.exit_code, 0);
	snprintf(want, sizeof want, "r1 yes kept none %s\n0 1 2 3 \n%u\n%s\n",
		 SANDBOX_DEFAULT_PATH, (unsigned)id.uid,
		 !id.switch_user ? getcwd((char[PATH_MAX]){0}, PATH_MAX)
		 : access(id.home, X_OK) == 0 ? id.home : "/");
	assert_string_equal(got.out, want);
}

#define T(f) cmocka_unit_test(f)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(resolve_own_user_when_run_as_unset),
		T(resolve_refuses_root_without_allow_root),
		T(resolve_run_as_user_and_group),
		T(files_are_created_tightened_or_refused),
		T(env_base_is_clean_and_pass_env_copies),
		T(close_from_closes_everything_above),
		T(switch_user_changes_every_id),
		T(executor_runs_steps_sandboxed),
	};

	if (getenv("FLOWD_TRACE") != NULL)
		flowd_log_level = FLOWD_LOG_DEBUG;
	return cmocka_run_group_tests_name("sandbox", tests, NULL, NULL);
}
