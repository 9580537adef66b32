/* runner.c - where committed placements turn into processes and back.
 *
 * DESIGN
 *
 * The state machine places attempts (core/fsm_runs.c). When an entry placing an
 * attempt on this node is applied, and the attempt carries this process's
 * boot id, runner_hook_placed() queues a start (runner_hook_stop() a stop)
 * and asks for an after-apply pass; the pass (pump.c, through main.c) calls
 * runner_run_queued(), which spawns the process through the executor
 * (never inside apply, which must stay short). An op whose run has left
 * memory, whose attempt is no longer RUNNING, or that already runs, is
 * dropped. An attempt stopped before it started is reported at once as
 * `stopped`, so that its slot frees. When the process ends,
 * runner_exec_done() hands its outcome (output made valid UTF-8) to
 * outcomes.c, which keeps it until its task_finish commits. A spawn the
 * executor refuses outright is reported as `spawn_failed`.
 *
 * Thread: the loop thread.
 */
#include "daemon/runner.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

/* An attempt placed on this node, waiting for the loop to start it (or to
 * stop it). */
struct task_op {
	char *run_id;
	unsigned step;
	unsigned attempt;
	bool stop;
	struct task_op *next;
};

struct runner {
	const struct flowd_config *cfg;
	uint64_t boot;
	struct fsm *fsm;
	struct executor *exec;
	struct outcomes *outcomes;
	struct tails *tails;
	void (*kick)(void *arg);
	void *kick_arg;
	struct task_op *head, *tail;
	bool stopping;
};

/* The executor's ctx for one attempt. */
struct attempt_ctx {
	struct runner *r;
	char *run_id;
	char *step;
	unsigned attempt;
};

struct runner *runner_new(const struct runner_config *c)
{
	struct runner *r = calloc(1, sizeof *r);

	if (r == NULL)
		return NULL;
	r->cfg = c->cfg;
	r->boot = c->boot;
	r->fsm = c->fsm;
	r->exec = c->exec;
	r->outcomes = c->outcomes;
	r->kick = c->kick;
	r->kick_arg = c->kick_arg;
	r->tails = c->tails;
	return r;
}

static void task_key(char *buf, size_t n, const char *run_id,
		     const char *step, unsigned attempt)
{
	snprintf(buf, n, "%s/%s/%u", run_id, step, attempt);
}

static void ops_push(struct runner *r, const char *run_id, unsigned step,
		     unsigned attempt, bool stop)
{
	struct task_op *op = calloc(1, sizeof *op);

	if (op == NULL || (op->run_id = strdup(run_id)) == NULL) {
		log_error("runner: out of memory");
		abort();
	}
	op->step = step;
	op->attempt = attempt;
	op->stop = stop;
	if (r->tail != NULL)
		r->tail->next = op;
	else
		r->head = op;
	r->tail = op;
	r->kick(r->kick_arg);
}

static bool mine(const struct runner *r, const struct fsm_attempt *a)
{
	return a->node == r->cfg->node_id && a->boot == r->boot;
}

void runner_hook_placed(struct runner *r, struct fsm_run *run,
			struct fsm_step *step, struct fsm_attempt *a)
{
	if (mine(r, a))
		ops_push(r, run->id, step->index, a->n, false);
}

void runner_hook_stop(struct runner *r, struct fsm_run *run,
		      struct fsm_step *step, struct fsm_attempt *a)
{
	if (mine(r, a))
		ops_push(r, run->id, step->index, a->n, true);
}

/* ------------------------------------------------------------------------
 * Processes
 */

void runner_exec_done(struct executor *e, void *ctx,
		      const struct executor_result *res)
{
	struct attempt_ctx *ac = ctx;
	struct runner *r = ac->r;
	struct fsm_finish fin = {0};
	char *out = NULL, *err = NULL;

	/* Failures at info, the (many) successes at debug. */
	FLOWD_LOG(res->exit_code == 0 && res->term_signal == 0 ? FLOWD_LOG_DEBUG
								: FLOWD_LOG_INFO,
		  "task finished run=%s step=%s attempt=%u reason=%s exit=%d "
		  "signal=%d",
		  ac->run_id, ac->step, ac->attempt, res->reason,
		  res->exit_code, res->term_signal);
	if (r->tails != NULL) {
		char key[512];
		json_t *end;
		char *text;
		const char *status =
			strcmp(res->reason, "stopped") == 0 ? "cancelled"
			: res->exit_code == 0 && res->term_signal == 0 &&
					strcmp(res->reason, "exited") == 0
				? "succeeded"
				: "failed";
		task_key(key, sizeof key, ac->run_id, ac->step, ac->attempt);
		end = json_pack("{s:I, s:s, s:i, s:i, s:s}", "attempt",
				(json_int_t)ac->attempt, "status", status,
				"exit_code", res->exit_code, "signal",
				res->term_signal, "reason", res->reason);
		text = end ? json_dumps(end, JSON_COMPACT) : NULL;
		tails_end(r->tails, key, text ? text : "{}");
		free(text);
		json_decref(end);
	}
	if (!r->stopping) {
		out = flowd_utf8_sanitize(res->out ? res->out : "", res->out_len);
		err = flowd_utf8_sanitize(res->err ? res->err : "", res->err_len);
		fin.run_id = ac->run_id;
		fin.step = ac->step;
		fin.attempt = ac->attempt;
		fin.node = r->cfg->node_id;
		fin.exit_code = res->exit_code;
		fin.term_signal = res->term_signal;
		fin.reason = res->reason;
		fin.detail = res->detail;
		fin.out = out;
		fin.err = err;
		fin.truncated = res->truncated;
		if (out != NULL && err != NULL)
			outcomes_queue(r->outcomes, &fin);
	}
	free(out);
	free(err);
	free(ac->run_id);
	free(ac->step);
	free(ac);
}

static char **build_env(const struct fsm_run *run, const struct spec_step *ss,
			unsigned attempt)
{
	size_t n = ss->n_env + json_object_size(run->params) + 8, i = 0;
	struct spec_flow_key fk;
	char **env = calloc(n, sizeof *env);
	const char *k;
	json_t *v;

	if (env == NULL)
		return NULL;
	for (size_t e = 0; e < ss->n_env; e++)
		env[i++] = strdup(ss->env[e]);
	json_object_foreach(run->params, k, v)
	{
		char *text = spec_param_env_value(v);
		char *name = NULL;
		if (text != NULL && asprintf(&name, "FLOWD_PARAM_%s=%s", k, text) < 0)
			name = NULL;
		/* Upper-case the parameter name part only. */
		for (char *p = name ? name + 12 : NULL; p && *p && *p != '='; p++)
			if (*p >= 'a' && *p <= 'z')
				*p = (char)(*p - 'a' + 'A');
		free(text);
		env[i++] = name;
	}
	/* the flow's name, and where it lives (docs/lifecycle.md) */
	spec_flow_key_split(run->flow->name, &fk);
	if (asprintf(&env[i++], "FLOWD_RUN_ID=%s", run->id) < 0 ||
	    asprintf(&env[i++], "FLOWD_FLOW=%s", fk.flow) < 0 ||
	    asprintf(&env[i++], "FLOWD_PROJECT=%s", fk.project) < 0 ||
	    asprintf(&env[i++], "FLOWD_BRANCH=%s", fk.branch) < 0 ||
	    asprintf(&env[i++], "FLOWD_STEP=%s", ss->name) < 0 ||
	    asprintf(&env[i++], "FLOWD_ATTEMPT=%u", attempt) < 0)
		env[i - 1] = NULL;
	else {
		/* What started the run (docs/triggers.md), as JSON. */
		char *t = run->trigger ? json_dumps(run->trigger, JSON_COMPACT)
				       : strdup("{\"type\":\"manual\"}");
		if (t == NULL || asprintf(&env[i++], "FLOWD_TRIGGER=%s", t) < 0)
			env[i - 1] = NULL;
		free(t);
	}
	env[i] = NULL;
	for (size_t j = 0; j < i; j++) {
		if (env[j] == NULL) {
			for (size_t m = 0; m < i; m++)
				free(env[m]);
			free(env);
			return NULL;
		}
	}
	return env;
}

static void free_env(char **env)
{
	for (size_t i = 0; env && env[i]; i++)
		free(env[i]);
	free(env);
}

/* An attempt that never ran: its outcome, so that its slot frees. */
static void report_unstarted(struct runner *r, const struct fsm_run *run,
			     const char *step, unsigned attempt,
			     const char *reason, const char *detail)
{
	struct fsm_finish fin = {.run_id = run->id, .step = step,
				 .attempt = attempt, .node = r->cfg->node_id,
				 .exit_code = -1, .reason = reason,
				 .detail = detail, .out = "", .err = ""};

	outcomes_queue(r->outcomes, &fin);
}

static void op_start(struct runner *r, struct task_op *op)
{
	struct fsm_run *run = fsm_run_get(r->fsm, op->run_id);
	struct fsm_step *s;
	struct fsm_attempt *a;
	const struct spec_step *ss;
	struct attempt_ctx *ac;
	struct executor_task t = {0};
	char key[512];
	char **env;

	if (run == NULL)
		return;
	s = &run->steps[op->step];
	ss = &run->spec->steps[op->step];
	if (op->attempt > s->n_attempts)
		return;
	a = &s->attempts[op->attempt - 1];
	task_key(key, sizeof key, run->id, ss->name, a->n);
	if (a->status != FSM_ATTEMPT_RUNNING || executor_has(r->exec, key))
		return;
	if (a->stopping) {
		/* Stopped before it started: report it so its slot frees. */
		report_unstarted(r, run, ss->name, a->n, "stopped", NULL);
		return;
	}
	ac = calloc(1, sizeof *ac);
	env = build_env(run, ss, a->n);
	if (ac == NULL || env == NULL) {
		log_error("runner: out of memory starting run=%s step=%s",
			  run->id, ss->name);
		free(ac);
		free_env(env);
		return;
	}
	ac->r = r;
	ac->run_id = strdup(run->id);
	ac->step = strdup(ss->name);
	ac->attempt = a->n;
	t.key = key;
	t.argv = ss->argv;
	t.shell = ss->shell;
	t.env = env;
	t.workdir = ss->workdir;
	t.timeout_s = ss->timeout_s;
	t.max_log_bytes = r->cfg->limits.max_log_bytes_per_task;
	log_debug("task start run=%s step=%s attempt=%u", run->id, ss->name,
		  a->n);
	if (r->tails != NULL)
		tails_begin(r->tails, key);
	if (executor_start(r->exec, &t, ac) != 0) {
		if (r->tails != NULL)
			tails_end(r->tails, key,
				  "{\"status\":\"failed\",\"reason\":\"spawn_failed\"}");
		report_unstarted(r, run, ss->name, a->n, "spawn_failed",
				 "executor refused the task");
		free(ac->run_id);
		free(ac->step);
		free(ac);
	}
	free_env(env);
}

static void op_stop(struct runner *r, struct task_op *op)
{
	struct fsm_run *run = fsm_run_get(r->fsm, op->run_id);
	char key[512];

	if (run == NULL)
		return;
	task_key(key, sizeof key, run->id, run->spec->steps[op->step].name,
		 op->attempt);
	if (executor_stop(r->exec, key) == 0)
		log_info("task stop run=%s step=%s attempt=%u", run->id,
			 run->spec->steps[op->step].name, op->attempt);
}

void runner_run_queued(struct runner *r)
{
	while (r->head != NULL) {
		struct task_op *op = r->head;

		r->head = op->next;
		if (r->head == NULL)
			r->tail = NULL;
		if (!r->stopping) {
			if (op->stop)
				op_stop(r, op);
			else
				op_start(r, op);
		}
		free(op->run_id);
		free(op);
	}
}

void runner_stop(struct runner *r)
{
	r->stopping = true;
}

void runner_free(struct runner *r)
{
	if (r == NULL)
		return;
	r->stopping = true;
	runner_run_queued(r); /* frees them, starting none */
	free(r);
}
