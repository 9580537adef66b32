/* fsm.c - the replicated state machine's apply: one committed entry, its
 * commands dispatched by op, then the runs it settled.
 *
 * DESIGN
 *
 * Happy path. The API validates a request, the daemon encodes it as a
 * command (fsm_cmd_*, fsm_cmd.c), consensus commits it, and every node calls
 * fsm_apply() with the same bytes in the same order. apply_one() hands each
 * command to the file of its concern: runs and tasks (fsm_runs.c), nodes
 * (fsm_nodes.c), flows (fsm_flows.c), schedules, events and pause
 * (trigger_schedule.c, trigger_event.c). Then settle() walks the runs the
 * entry touched, in the order it touched them: a run that reached a final
 * status sets off its on-finish triggers, a run that also has nothing
 * running any more joins the settled FIFO and gives its flow room
 * (trigger_finish.c), and the oldest settled runs beyond the retention
 * leave memory.
 *
 * Layers. This file is the one place that calls across concerns: the files
 * below never call up (core/README.md, "Layers"; scripts/check-deps.sh).
 * What a lower layer has to report upward (a run ended) it leaves in the
 * state (c->touched, run->end_seen, run->settled), and settle() drives the
 * triggers from there.
 *
 * Determinism. Apply reads nothing but the command and the state: no clock
 * (time is the command's `ts`), no randomness, and no hash-map iteration
 * order decides anything (lists that order work are FIFOs or sorted).
 *
 * Failure modes. A malformed command (not JSON, another version, an unknown
 * op, a batch inside a batch) is logged and ignored (result FLOWD_E_INVALID);
 * business errors are results too. Apply never fails half-way: out of memory
 * aborts.
 *
 * Side effects leave through two doors only: the PostgreSQL row images the
 * daemon takes after a batch (fsm_take_records, fsm_rows.c), and fsm_hooks
 * ("start/stop this attempt" for the executor, a node heard from, a flow's
 * schedules changed).
 *
 * Thread: the loop thread only.
 */
#include "fsm.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsm_changes.h"
#include "fsm_flows.h"
#include "fsm_lifecycle.h"
#include "fsm_nodes.h"
#include "fsm_rows.h"
#include "fsm_runs.h"
#include "log.h"
#include "trigger_event.h"
#include "trigger_finish.h"
#include "trigger_schedule.h"

/* ------------------------------------------------------------------------
 * Settling
 */

/* Drop a settled run from memory (PostgreSQL is its home from now on). Its
 * last rows go out first, and the next snapshot waits until PostgreSQL has
 * them (pending_history), since a restore could not rebuild them. */
static void evict(struct fsm *f, struct fsm_run *r)
{
	if (r->dirty) {
		for (size_t i = 0; i < f->n_dirty; i++)
			if (f->dirty[i] == r)
				f->dirty[i] = NULL;
		fsm__rows_run(f, r);
	}
	f->pending_history = true;
	if (f->result.run == r) {
		snprintf(f->result.evicted_id, sizeof f->result.evicted_id,
			 "%s", r->id);
		f->result.run = NULL;
		f->result.run_id = f->result.evicted_id;
	}
	map_del(&f->runs, r->id);
	f->run_list[r->seq - f->run_lo] = NULL;
	fsm__view_drop(f, r);
	r->flow->versions[r->version - 1].runs--;
	fsm__run_free(r);
}

/* Runs that this entry left finished with nothing running join the settled
 * FIFO (in the order the entry touched them, the same on every node); the
 * oldest beyond `retain` leave memory. */
static void settle(struct apply_ctx *c)
{
	struct fsm *f = c->f;
	bool changed = true;

	/* Triggers may start runs here (they join c->touched behind) or end
	 * runs already passed (overlap cancel_other / terminate_other), so
	 * walk again until a pass changes nothing; each run ends and settles
	 * once (end_seen, settled), so this stops. */
	while (changed) {
		changed = false;
		for (size_t i = 0; i < c->n_touched; i++) {
			struct fsm_run *r = c->touched[i];
			if (fsm__run_terminal(r) && !r->end_seen) {
				r->end_seen = true;
				changed = true;
				fsm__trig_ended(c, r);
			}
			if (r->settled || !fsm__run_terminal(r) ||
			    r->active_attempts > 0)
				continue;
			fsm__settled_push(f, r);
			changed = true;
			fsm__trig_settled(c, r);
		}
	}
	fsm__report_changes(c);
	while (f->retain > 0 && f->n_settled > f->retain)
		evict(f, fsm__settled_pop(f));
	fsm__run_list_trim(f);
}

/* ------------------------------------------------------------------------
 * Apply
 */

/* Dispatch one command by its op. */
static void apply_one(struct apply_ctx *c, json_t *cmd)
{
	struct fsm *f = c->f;
	const char *op = json_string_value(json_object_get(cmd, "op"));
	uint64_t index = c->index;
	struct fsm_check bad;

	/* Every field in range before anything changes (fsm_check.c). */
	if (fsm_cmd_check(cmd, &bad) != 0) {
		log_error("fsm: refusing a command index=%" PRIu64
			  " field=%s why=\"%s\"",
			  index, bad.field, bad.why);
		fsm__result_error(f, FLOWD_E_INVALID, "invalid_command",
				  bad.field, bad.why);
		return;
	}
	if (op == NULL)
		op = "";
	if (strcmp(op, "deploy") == 0)
		fsm__apply_deploy(c, cmd);
	else if (strcmp(op, "undeploy") == 0)
		fsm__apply_undeploy(c, cmd);
	else if (strcmp(op, "run_create") == 0)
		fsm__apply_run_create(c, cmd);
	else if (strcmp(op, "run_cancel") == 0)
		fsm__apply_run_cancel(c, cmd);
	else if (strcmp(op, "run_tags") == 0)
		fsm__apply_run_tags(c, cmd);
	else if (strcmp(op, "run_resume") == 0)
		fsm__apply_run_resume(c, cmd);
	else if (strcmp(op, "run_redrive") == 0)
		fsm__apply_run_redrive(c, cmd);
	else if (strcmp(op, "run_record") == 0)
		fsm__apply_run_record(c, cmd);
	else if (strcmp(op, "task_finish") == 0)
		fsm__apply_task_finish(c, cmd);
	else if (strcmp(op, "node_up") == 0)
		fsm__apply_node_up(c, cmd);
	else if (strcmp(op, "node_alive") == 0)
		fsm__apply_node_liveness(c, cmd, true);
	else if (strcmp(op, "node_down") == 0)
		fsm__apply_node_liveness(c, cmd, false);
	else if (strcmp(op, "node_remove") == 0)
		fsm__apply_node_membership(c, cmd, false);
	else if (strcmp(op, "node_admit") == 0)
		fsm__apply_node_membership(c, cmd, true);
	else if (strcmp(op, "wake") == 0)
		fsm__apply_wake(c);
	else if (strcmp(op, "fire") == 0)
		fsm__apply_fire(c, cmd);
	else if (strcmp(op, "event") == 0)
		fsm__apply_event(c, cmd);
	else if (strcmp(op, "pause") == 0)
		fsm__apply_pause(c, cmd);
	else if (strcmp(op, "nop") == 0)
		; /* nothing to do: FLOWD_OK */
	else {
		log_error("fsm: unknown op=%s index=%" PRIu64, op, index);
		fsm__result_error(f, FLOWD_E_INVALID, "invalid_command", "op",
				  "unknown op");
	}
}

/* A client's write carries who asked ("audit", added by the node that
 * took the request): its row in PostgreSQL's audit table says so, with
 * the outcome (docs/schema.md). */
static void audit_record(struct apply_ctx *c, json_t *cmd)
{
	json_t *a = json_object_get(cmd, "audit");
	struct fsm *f = c->f;
	json_t *rec;

	if (!json_is_object(a))
		return;
	rec = json_pack("{s:s, s:I, s:O, s:s, s:s}", "t", "audit", "at",
			(json_int_t)c->ts, "audit", a, "op",
			json_string_value(json_object_get(cmd, "op")), "result",
			f->result.err.errc != FLOWD_OK ? f->result.err.code : "ok");
	if (rec != NULL)
		json_array_append_new(f->pending, rec);
}

struct fsm_result *fsm_apply(struct fsm *f, uint64_t index, const void *buf,
			     size_t len)
{
	struct apply_ctx c = {.f = f, .index = index};
	json_error_t jerr;
	json_t *cmd;
	const char *op;

	json_decref(f->result.body);
	memset(&f->result, 0, sizeof f->result);
	f->applied_index = index;
	/* consensus pads entries to 8 bytes with NULs */
	while (len > 0 && ((const char *)buf)[len - 1] == '\0')
		len--;
	cmd = json_loadb(buf, len, 0, &jerr);
	if (cmd == NULL || json_integer_value(json_object_get(cmd, "v")) !=
				   FSM_CMD_VERSION) {
		log_error("fsm: ignoring malformed command index=%" PRIu64,
			  index);
		fsm__result_error(f, FLOWD_E_INVALID, "invalid_command", "",
				  "malformed command");
		json_decref(cmd);
		return &f->result;
	}
	c.ts = json_integer_value(json_object_get(cmd, "ts"));
	c.records = f->pending;
	op = json_string_value(json_object_get(cmd, "op"));
	if (op != NULL && strcmp(op, "batch") == 0) {
		/* Several commands in one entry, applied in order; the result
		 * is the last one's. A batch inside a batch is refused. */
		json_t *sub;
		size_t i;
		struct fsm_check bad;

		if (fsm_cmd_check(cmd, &bad) != 0) {
			fsm__result_error(f, FLOWD_E_INVALID,
					  "invalid_command", bad.field,
					  bad.why);
			goto done;
		}
		json_array_foreach(json_object_get(cmd, "cmds"), i, sub) {
			const char *sop = json_string_value(json_object_get(sub, "op"));

			json_decref(f->result.body);
			memset(&f->result, 0, sizeof f->result);
			if (sop != NULL && strcmp(sop, "batch") == 0) {
				fsm__result_error(f, FLOWD_E_INVALID,
						  "invalid_command", "op",
						  "nested batch");
				continue;
			}
			c.ts = json_integer_value(json_object_get(sub, "ts"));
			apply_one(&c, sub);
		}
	} else {
		apply_one(&c, cmd);
		audit_record(&c, cmd);
	}
done:
	settle(&c);
	free(c.touched);
	json_decref(cmd);
	return &f->result;
}
