/* local.c - flowctl resume RUN --local: the steps of a production run
 * that did not succeed, rerun on the machine flowctl runs on.
 *
 * What runs again is decided as the cluster's resume decides it
 * (core/fsm_lifecycle.c): from_step and everything downstream, or every
 * step that did not succeed and everything downstream of it; the other
 * steps that succeeded are reused (not run). Steps run one at a time in
 * the spec's order as their dependencies are done, in a process group of
 * their own, with the environment a node gives them; a timeout sends
 * SIGTERM to the group, then SIGKILL 5 s later; retries follow the step's
 * policy (backoff doubling up to max_backoff_s). The first step that fails
 * for good ends the run: the steps still waiting are skipped.
 *
 * Nothing here talks to the cluster: flowctl fetched the run and its spec
 * before, and records nothing after. */
#include "cli/local.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/http.h"

enum lstat { L_WAIT, L_REUSED, L_RUNNING, L_SUCCEEDED, L_FAILED, L_SKIPPED };

static const char *const lstat_names[] = {"pending", "reused", "running",
					  "succeeded", "failed", "skipped"};

struct lstep {
	const json_t *spec;      /* the step's object in the spec */
	const char *name;
	size_t *deps, n_deps;    /* indices */
	enum lstat status;
	unsigned attempts;
	double seconds;
	int64_t t0_ms, t1_ms;    /* wall clock, when it ran */
	json_t *reused_from;     /* borrowed: what a reused step took */
};

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s)
{
	struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* mkdir -p */
static int make_dirs(const char *path)
{
	char *p = strdup(path);
	int rc = 0;

	if (p == NULL)
		return -1;
	for (char *s = p + 1; rc == 0; s++) {
		if (*s != '/' && *s != '\0')
			continue;
		char c = *s;
		*s = '\0';
		if (mkdir(p, 0755) != 0 && errno != EEXIST)
			rc = -1;
		*s = c;
		if (c == '\0')
			break;
	}
	free(p);
	return rc;
}

/* An RFC 3339 time of the API ("2026-12-06T01:02:03.456Z") in ms, 0 when
 * none. */
static int64_t ms_of(const json_t *t)
{
	const char *s = json_string_value(t);
	struct tm tm = {0};
	int ms = 0;

	if (s == NULL || sscanf(s, "%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year,
				&tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
				&tm.tm_min, &tm.tm_sec, &ms) != 7)
		return 0;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	return (int64_t)timegm(&tm) * 1000 + ms;
}

static long index_of(const struct lstep *st, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(st[i].name, name) == 0)
			return (long)i;
	return -1;
}

static void mark_down(struct lstep *st, size_t n, size_t i, bool *mark)
{
	if (mark[i])
		return;
	mark[i] = true;
	for (size_t j = 0; j < n; j++)
		for (size_t d = 0; d < st[j].n_deps; d++)
			if (st[j].deps[d] == i)
				mark_down(st, n, j, mark);
}

/* A parameter's value as a node puts it in FLOWD_PARAM_<NAME>
 * (spec_param_env_value): strings as they are, numbers and booleans as
 * JSON, anything else as compact JSON. */
static char *param_text(const json_t *v)
{
	if (json_is_string(v))
		return strdup(json_string_value(v));
	return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
}

static int env_add(char ***env, size_t *n, const char *fmt, const char *a,
		   const char *b)
{
	char *s, **e;

	if (asprintf(&s, fmt, a, b) < 0)
		return -1;
	e = realloc(*env, (*n + 2) * sizeof **env);
	if (e == NULL) {
		free(s);
		return -1;
	}
	e[(*n)++] = s;
	e[*n] = NULL;
	*env = e;
	return 0;
}

/* The environment of one attempt (runner.c's build_env and sandbox.c's
 * clean base). */
static char **step_env(const json_t *run, const struct lstep *s,
		       unsigned attempt)
{
	static const char *const keep[] = {"PATH", "HOME", "USER", "LOGNAME",
					   "LANG", "TZ", NULL};
	const char *k, *id = json_string_value(json_object_get(run, "id"));
	char **env = NULL, num[16], *t;
	size_t n = 0;
	json_t *v;
	int rc = 0;

	for (size_t i = 0; keep[i] != NULL && rc == 0; i++)
		if (getenv(keep[i]) != NULL)
			rc = env_add(&env, &n, "%s=%s", keep[i], getenv(keep[i]));
	json_object_foreach(json_object_get(s->spec, "env"), k, v)
		if (rc == 0 && json_is_string(v))
			rc = env_add(&env, &n, "%s=%s", k, json_string_value(v));
	json_object_foreach(json_object_get(run, "parameters"), k, v) {
		char *upper = strdup(k);

		t = param_text(v);
		if (upper == NULL || t == NULL) {
			rc = -1;
		} else {
			for (char *p = upper; *p; p++)
				if (*p >= 'a' && *p <= 'z')
					*p = (char)(*p - 'a' + 'A');
			if (rc == 0)
				rc = env_add(&env, &n, "FLOWD_PARAM_%s=%s",
					     upper, t);
		}
		free(upper);
		free(t);
	}
	snprintf(num, sizeof num, "%u", attempt);
	t = NULL;
	if (rc == 0 &&
	    asprintf(&t, "{\"type\":\"local_resume\",\"run_id\":\"%s\"}",
		     id ? id : "") < 0)
		rc = -1;
	if (rc == 0)
		rc = env_add(&env, &n, "FLOWD_RUN_ID=%s%s", id ? id : "", "");
	if (rc == 0)
		rc = env_add(&env, &n, "FLOWD_FLOW=%s%s",
			     json_string_value(json_object_get(run, "flow")),
			     "");
	if (rc == 0 && json_is_string(json_object_get(run, "project")))
		rc = env_add(&env, &n, "FLOWD_PROJECT=%s%s",
			     json_string_value(json_object_get(run, "project")), "");
	if (rc == 0 && json_is_string(json_object_get(run, "branch")))
		rc = env_add(&env, &n, "FLOWD_BRANCH=%s%s",
			     json_string_value(json_object_get(run, "branch")), "");
	if (rc == 0)
		rc = env_add(&env, &n, "FLOWD_STEP=%s%s", s->name, "");
	if (rc == 0)
		rc = env_add(&env, &n, "FLOWD_ATTEMPT=%s%s", num, "");
	if (rc == 0)
		rc = env_add(&env, &n, "FLOWD_TRIGGER=%s%s", t, "");
	free(t);
	if (rc != 0) {
		for (size_t i = 0; i < n; i++)
			free(env[i]);
		free(env);
		return NULL;
	}
	return env;
}

/* The directory a step runs in: its workdir inside dir, or dir. */
static char *step_dir(const char *dir, const struct lstep *s)
{
	const char *w = json_string_value(json_object_get(s->spec, "workdir"));
	char *p;

	while (w != NULL && *w == '/')
		w++;
	if (w == NULL || *w == '\0')
		return strdup(dir);
	if (asprintf(&p, "%s/%s", dir, w) < 0)
		return NULL;
	return p;
}

/* Run one attempt; returns its exit code (128 + signal when killed, 124
 * after its timeout, 127 when it could not start). */
static int attempt(const json_t *run, const struct lstep *s, unsigned n,
		   const char *dir, FILE *out)
{
	const json_t *cmd = json_object_get(s->spec, "command");
	const char *shell = json_string_value(json_object_get(s->spec, "shell"));
	json_int_t timeout = json_integer_value(
		json_object_get(s->spec, "timeout_s"));
	char **env = step_env(run, s, n), *wd = step_dir(dir, s);
	char **argv = NULL;
	double start = now_s(), killed_at = 0;
	int status = 0, code;
	pid_t pid;

	if (env == NULL || wd == NULL || make_dirs(wd) != 0) {
		fprintf(out, "flowctl: %s: cannot prepare %s: %s\n", s->name,
			wd ? wd : "its directory", strerror(errno));
		code = 127;
		goto out;
	}
	argv = calloc(json_array_size(cmd) + 4, sizeof *argv);
	if (argv == NULL) {
		code = 127;
		goto out;
	}
	if (shell != NULL) {
		argv[0] = "/bin/sh";
		argv[1] = "-c";
		argv[2] = (char *)shell;
	} else {
		for (size_t i = 0; i < json_array_size(cmd); i++)
			argv[i] = (char *)json_string_value(
				json_array_get(cmd, i));
	}
	fflush(out);
	fflush(stderr);
	pid = fork();
	if (pid < 0) {
		code = 127;
		goto out;
	}
	if (pid == 0) {
		setpgid(0, 0);
		if (chdir(wd) != 0) {
			fprintf(stderr, "flowctl: %s: chdir %s: %s\n", s->name,
				wd, strerror(errno));
			_exit(127);
		}
		execvpe(argv[0], argv, env);
		fprintf(stderr, "flowctl: %s: %s: %s\n", s->name, argv[0],
			strerror(errno));
		_exit(127);
	}
	setpgid(pid, pid);
	for (;;) {
		pid_t w = waitpid(pid, &status, WNOHANG);
		double t = now_s() - start;

		if (w == pid)
			break;
		if (w < 0 && errno != EINTR)
			break;
		if (timeout > 0 && t > (double)timeout && killed_at == 0) {
			kill(-pid, SIGTERM);
			killed_at = t;
		} else if (killed_at > 0 && t > killed_at + 5) {
			kill(-pid, SIGKILL);
		}
		sleep_s(0.02);
	}
	if (killed_at > 0)
		code = 124;
	else if (WIFEXITED(status))
		code = WEXITSTATUS(status);
	else if (WIFSIGNALED(status))
		code = 128 + WTERMSIG(status);
	else
		code = 1;
out:
	for (size_t i = 0; env != NULL && env[i] != NULL; i++)
		free(env[i]);
	free(env);
	free(argv);
	free(wd);
	return code;
}

/* The steps' states on one line, after each step: the live table. */
static void status_line(FILE *out, const struct lstep *st, size_t n)
{
	fputs("-- steps:", out);
	for (size_t i = 0; i < n; i++)
		fprintf(out, " %s=%s", st[i].name, lstat_names[st[i].status]);
	fputc('\n', out);
	fflush(out);
}

static void table(FILE *out, const struct lstep *st, size_t n, bool colour)
{
	fprintf(out, "\n%-24s %-10s %8s %8s\n", "STEP", "STATUS", "ATTEMPTS",
		"SECONDS");
	for (size_t i = 0; i < n; i++) {
		const char *c = !colour ? ""
				: st[i].status == L_SUCCEEDED ? "\033[32m"
				: st[i].status == L_FAILED    ? "\033[31m"
							      : "\033[2m";
		fprintf(out, "%-24s %s%-10s%s %8u %8.1f\n", st[i].name, c,
			lstat_names[st[i].status], colour ? "\033[0m" : "",
			st[i].attempts, st[i].seconds);
	}
}

int local_resume(const json_t *run, const json_t *spec,
		 const struct local_opts *o)
{
	const json_t *jsteps = json_object_get(spec, "steps"), *js;
	size_t n = json_array_size(jsteps), i;
	struct lstep *st = calloc(n + 1, sizeof *st);
	bool *rerun = calloc(n + 1, sizeof *rerun), failed = false;
	int rc = CLI_OK;
	long from = -1;

	if (st == NULL || rerun == NULL) {
		free(st);
		free(rerun);
		return CLI_FAILED;
	}
	json_array_foreach(jsteps, i, js) {
		st[i].spec = js;
		st[i].name = json_string_value(json_object_get(js, "name"));
		if (st[i].name == NULL)
			st[i].name = "?";
	}
	for (i = 0; i < n; i++) {
		const json_t *deps = json_object_get(st[i].spec, "depends_on");
		st[i].deps = calloc(json_array_size(deps) + 1, sizeof *st[i].deps);
		for (size_t d = 0; st[i].deps && d < json_array_size(deps); d++) {
			long k = index_of(st, n, json_string_value(
						   json_array_get(deps, d)));
			if (k >= 0)
				st[i].deps[st[i].n_deps++] = (size_t)k;
		}
	}
	/* what succeeded in the run */
	const json_t *rs;
	size_t k;
	bool *ok = calloc(n + 1, sizeof *ok);
	json_array_foreach(json_object_get(run, "steps"), k, rs) {
		const char *name = json_string_value(json_object_get(rs, "name"));
		const char *s = json_string_value(json_object_get(rs, "status"));
		long at = name ? index_of(st, n, name) : -1;
		json_t *rf = json_object_get(rs, "reused_from");
		json_t *atts = json_object_get(rs, "attempts");

		/* as the cluster's resume: a step that succeeded here, or
		 * was reused with its link (not one recorded from elsewhere,
		 * which has no attempt to link to) */
		if (at >= 0 && s != NULL && ok != NULL && !ok[at] &&
		    ((strcmp(s, "succeeded") == 0 && json_array_size(atts) > 0) ||
		     (strcmp(s, "reused") == 0 && json_is_object(rf)))) {
			ok[at] = true;
			/* what a record links a reused step to: the attempt
			 * that ran it, through the run's own reuse */
			st[at].reused_from =
				json_is_object(rf)
					? json_incref(rf)
					: json_pack("{s:s, s:I}", "run_id",
						    json_string_value(json_object_get(
							    run, "id")),
						    "attempt",
						    (json_int_t)json_array_size(atts));
			st[at].t0_ms = ms_of(json_object_get(rs, "started_at"));
			st[at].t1_ms = ms_of(json_object_get(rs, "finished_at"));
		}
	}
	if (ok == NULL) {
		rc = CLI_FAILED;
		goto out;
	}
	if (o->from_step != NULL) {
		from = index_of(st, n, o->from_step);
		if (from < 0) {
			fprintf(stderr, "flowctl: resume: the run has no step %s\n",
				o->from_step);
			rc = CLI_USAGE;
			goto out;
		}
		mark_down(st, n, (size_t)from, rerun);
	} else {
		for (i = 0; i < n; i++)
			if (!ok[i])
				mark_down(st, n, i, rerun);
	}
	bool any = false;
	for (i = 0; i < n; i++) {
		st[i].status = !rerun[i] && ok[i] ? L_REUSED : L_WAIT;
		if (st[i].status == L_WAIT)
			any = true;
	}
	if (!any) {
		fprintf(stderr, "flowctl: resume: every step succeeded: name "
				"one with --from\n");
		rc = CLI_USAGE;
		goto out;
	}
	if (make_dirs(o->dir) != 0) {
		fprintf(stderr, "flowctl: resume: cannot make %s: %s\n", o->dir,
			strerror(errno));
		rc = CLI_FAILED;
		goto out;
	}
	fprintf(o->out, "flowctl: resuming run %s of %s locally in %s\n",
		json_string_value(json_object_get(run, "id")),
		json_string_value(json_object_get(run, "flow")), o->dir);
	table(o->out, st, n, o->colour);
	for (;;) {
		long next = -1;

		for (i = 0; i < n && next < 0 && !failed; i++) {
			bool ready = st[i].status == L_WAIT;
			for (size_t d = 0; ready && d < st[i].n_deps; d++)
				ready = st[st[i].deps[d]].status == L_SUCCEEDED ||
					st[st[i].deps[d]].status == L_REUSED;
			if (ready)
				next = (long)i;
		}
		if (next < 0)
			break;
		struct lstep *s = &st[next];
		const json_t *retries = json_object_get(s->spec, "retries");
		json_int_t max = json_integer_value(json_object_get(retries, "max"));
		double backoff = (double)json_integer_value(
			json_object_get(retries, "backoff_s"));
		double cap = (double)json_integer_value(
			json_object_get(retries, "max_backoff_s"));
		double t0 = now_s();
		int code;

		s->status = L_RUNNING;
		s->t0_ms = wall_ms();
		for (;;) {
			s->attempts++;
			fprintf(o->out, "\n%s== %s (attempt %u)%s\n",
				o->colour ? "\033[1m" : "", s->name, s->attempts,
				o->colour ? "\033[0m" : "");
			code = attempt(run, s, s->attempts, o->dir, o->out);
			fprintf(o->out, "-- %s %s (exit %d)\n", s->name,
				code == 0 ? "succeeded" : "failed", code);
			if (code == 0 || (json_int_t)s->attempts > max)
				break;
			if (backoff > 0) {
				sleep_s(backoff);
				backoff = cap > 0 && backoff * 2 > cap ? cap
								       : backoff * 2;
			}
		}
		s->seconds = now_s() - t0;
		s->t1_ms = wall_ms();
		s->status = code == 0 ? L_SUCCEEDED : L_FAILED;
		failed = code != 0;
		status_line(o->out, st, n);
	}
	for (i = 0; i < n; i++)
		if (st[i].status == L_WAIT)
			st[i].status = L_SKIPPED;
	table(o->out, st, n, o->colour);
	rc = failed ? CLI_FAILED : CLI_OK;
	for (i = 0; json_is_array(o->record) && i < n; i++) {
		static const char *const rec[] = {
			[L_REUSED] = "reused", [L_SUCCEEDED] = "succeeded",
			[L_FAILED] = "failed", [L_SKIPPED] = "skipped"};
		json_t *one = json_pack("{s:s, s:s, s:I, s:I}", "name",
					st[i].name, "status", rec[st[i].status],
					"started_ms", (json_int_t)st[i].t0_ms,
					"finished_ms", (json_int_t)st[i].t1_ms);

		if (one != NULL && st[i].status == L_REUSED)
			json_object_set(one, "reused_from", st[i].reused_from);
		json_array_append_new(o->record, one);
	}
	fprintf(o->out, "flowctl: the local resume %s\n",
		failed ? "failed" : "succeeded");
out:
	for (i = 0; i < n; i++) {
		free(st[i].deps);
		json_decref(st[i].reused_from);
	}
	free(st);
	free(rerun);
	free(ok);
	return rc;
}
