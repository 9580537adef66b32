/* trigger_finish.c - what a run's end sets off: the on-finish triggers of
 * other flows, and, once the run has settled, the buffered triggers of its
 * own flow.
 *
 * DESIGN
 *
 * settle() (fsm.c) calls both, after each entry, for the runs the entry
 * touched: fsm__trig_ended once per run when it reaches a final status
 * (run->end_seen), fsm__trig_settled once when it has also nothing running
 * any more (run->settled). So an on-finish trigger fires exactly once per
 * upstream run, inside the apply that ends it, and a buffered trigger
 * starts inside the apply that gives its flow room. Both may start or end
 * runs, which settle() then walks too.
 *
 * Order: the downstream flows are walked in name order (the sorted index,
 * trigger_launch.c), the buffer oldest first.
 *
 * Failure modes: an on-finish trigger that does not fire (overlap,
 * parameters) is logged; a buffered trigger whose run cannot start
 * (parameters, the flow undeployed meanwhile) is dropped, and recorded so
 * when it was a schedule's tick.
 *
 * Thread: the loop thread only.
 */
#include "trigger_finish.h"

#include <string.h>

#include "fsm_runs.h"
#include "log.h"
#include "map.h"
#include "trigger_launch.h"
#include "trigger_schedule.h"

/* ------------------------------------------------------------------------
 * On finish
 */

void fsm__trig_ended(struct apply_ctx *c, struct fsm_run *r)
{
	struct fsm *f = c->f;
	json_t *list, *entry;
	size_t n;

	fsm__trig_index_rebuild(f);
	list = json_object_get(f->by_upstream, r->flow->name);
	json_array_foreach(list, n, entry) {
		struct fsm_flow *fl = map_get(
			&f->flows, json_string_value(json_array_get(entry, 0)));
		size_t i = (size_t)json_integer_value(json_array_get(entry, 1));
		const struct flow_spec *spec = fl ? fsm__current_spec(fl) : NULL;
		const struct spec_on_finish *t;
		json_t *params, *trigger;
		struct fsm_launch l;
		bool match;

		if (spec == NULL || i >= spec->n_on_finish)
			continue;
		t = &spec->on_finish[i];
		match = t->status == SPEC_FINISH_ANY ||
			(t->status == SPEC_FINISH_SUCCEEDED) ==
				(r->status == FSM_RUN_SUCCEEDED);
		if (!match)
			continue;
		params = json_object();
		for (size_t p = 0; p < spec->n_params; p++)
			if (strcmp(spec->params[p].name, "upstream_run_id") == 0 &&
			    spec->params[p].type == SPEC_PARAM_STRING)
				json_object_set_new(params, "upstream_run_id",
						    json_string(r->id));
		trigger = json_pack("{s:s, s:i, s:s, s:s, s:s}", "type",
				    "on_finish", "trigger", (int)i,
				    "upstream_flow", r->flow->name,
				    "upstream_run", r->id, "upstream_status",
				    fsm_run_status_str(r->status));
		fsm__launch(c, fl, params, trigger, t->overlap, -1,
			    c->f->limits.max_buffered_runs, &l);
		if (l.outcome != FSM_FIRE_FIRED)
			log_info("trigger: on_finish of %s for run %s: %s (%s)",
				 fl->name, r->id, fsm_fire_outcome_str(l.outcome),
				 l.reason);
		json_decref(params);
	}
}

/* ------------------------------------------------------------------------
 * Room again: the overlap buffer
 */

void fsm__trig_settled(struct apply_ctx *c, struct fsm_run *r)
{
	struct fsm_flow *fl = r->flow;
	const struct flow_spec *spec = fsm__current_spec(fl);
	struct fsm_buffered *b;

	if (fl->active > 0)
		fl->active--;
	while ((b = fsm__buffer_take(fl)) != NULL) {
		struct flowd_error err;
		struct fsm_run *run = NULL;

		if (spec != NULL)
			run = fsm__run_start(c, fl, b->params, NULL,
					     json_incref(b->trigger), &err);
		fsm__sched_unbuffered(c, fl, b, run);
		fsm__buffered_free(b);
	}
}
