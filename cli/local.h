/* local.h - flowctl resume RUN --local: rerun a run's steps on this machine
 * (docs/lifecycle.md, "Resume on a laptop"). */
#ifndef FLOWD_CLI_LOCAL_H
#define FLOWD_CLI_LOCAL_H

#include <stdbool.h>
#include <stdio.h>

#include <jansson.h>

struct local_opts {
	const char *from_step; /* NULL: the steps that did not succeed */
	const char *dir;       /* where steps run (a step's workdir inside
	                        * it); created if missing */
	bool colour;           /* ANSI colours in the step lines */
	FILE *out;             /* the step table and lines (stdout) */
	json_t *record;        /* when an array: filled with each step's
	                        * outcome for POST .../records
	                        * ({"name","status","started_ms",
	                        * "finished_ms","reused_from"}) */
};

/* Rerun `run` (GET /v1/runs/{id}) of `spec` (its version's normalized
 * spec) here: from_step and what depends on it, or what did not succeed
 * and what depends on that, one step at a time in DAG order, each with
 * the environment a node gives it (FLOWD_* variables, the spec's env,
 * PATH, HOME, USER, LOGNAME, LANG and TZ of this process), its timeout and
 * retries; its output goes straight to this terminal. Nothing is sent
 * anywhere. Returns CLI_OK when every step it ran succeeded, CLI_FAILED
 * when one failed (the rest skipped), CLI_USAGE for a from_step that is
 * not a step of the run or nothing to run. */
int local_resume(const json_t *run, const json_t *spec,
		 const struct local_opts *o);

#endif
