/* fsm_flows.c - flows and their versions in the state machine: deploy,
 * undeploy, and which versions keep their spec in memory.
 *
 * DESIGN
 *
 * A deploy of a spec whose normalized text differs from the newest
 * version's adds a version (201); the same text again is a no-op (200), or
 * brings an undeployed flow back at that version. Undeploy keeps the flow
 * and its history: runs in memory keep their version, and a flow is never
 * freed while the state lives. A flow's triggers follow each change here:
 * its schedule states, all-of collections and the trigger indexes
 * (trigger_schedule.c, trigger_event.c, trigger_launch.c), then the
 * schedules_changed hook, so the leader's scheduler looks again.
 *
 * Bounded memory: the spec of version k stays in memory while it is the
 * newest (what the next run and an unchanged redeploy use) or runs in
 * memory use it; otherwise PostgreSQL's flow_versions serves it, and the
 * next snapshot waits until PostgreSQL has that row (pending_history).
 *
 * Failure modes: a bad flow name or spec is a result (FLOWD_E_INVALID) and
 * changes nothing; a spec the API accepted is never refused here for this
 * node's files or limits (SPEC_PARSE_APPLY, permissive limits).
 *
 * Thread: the loop thread only.
 */
#include "fsm_flows.h"

#include <stdlib.h>
#include <string.h>

#include "fsm_rows.h"
#include "trigger_event.h"
#include "trigger_launch.h"
#include "trigger_schedule.h"

struct fsm_flow *fsm_flow_get(struct fsm *f, const char *name)
{
	return map_get(&f->flows, name);
}

void fsm__flow_free(struct fsm_flow *fl)
{
	fsm__sched_clear(fl);
	fsm__collect_clear(fl);
	fsm__buffer_clear(fl);
	for (unsigned i = 0; i < fl->n_versions; i++)
		spec_free(fl->versions[i].spec);
	free(fl->versions);
	free(fl->name);
	free(fl);
}

/* Version k of fl keeps its spec in memory while it is the newest (what
 * the next run and an unchanged redeploy use) or runs in memory use it;
 * otherwise PostgreSQL's flow_versions serves it. Called by
 * fsm_release_specs() only for versions PostgreSQL holds, so a reader that
 * finds a spec missing in memory finds it there. */
void fsm__version_maybe_drop(struct fsm *f, struct fsm_flow *fl, unsigned k)
{
	struct fsm_flow_version *v;

	if (k == 0 || k >= fl->n_versions)
		return;
	v = &fl->versions[k - 1];
	if (v->runs > 0 || v->spec == NULL)
		return;
	spec_free(v->spec);
	v->spec = NULL;
	fsm__flow_touch(f, fl);
}

static bool indexed_triggers(const struct flow_spec *spec)
{
	return spec != NULL && (spec->n_events > 0 || spec->n_on_finish > 0);
}

/* A deploy made `fl` current with a new or different spec (or brought it
 * back after an undeploy): its trigger state follows the new triggers. */
static void triggers_deployed(struct apply_ctx *c, struct fsm_flow *fl,
			      const struct flow_spec *old, bool was_current)
{
	struct fsm *f = c->f;

	fsm__sched_deployed(c, fl, was_current);
	fsm__event_deployed(fl, old);
	if (indexed_triggers(fsm__current_spec(fl)) || indexed_triggers(old))
		fsm__trig_index_stale(f);
	if (f->hooks.schedules_changed != NULL)
		f->hooks.schedules_changed(f->hooks.arg, fl);
}

void fsm__apply_deploy(struct apply_ctx *c, json_t *cmd)
{
	struct fsm *f = c->f;
	const char *name = json_string_value(json_object_get(cmd, "flow"));
	json_t *doc = json_object_get(cmd, "spec");
	struct flow_spec *spec = NULL;
	const struct flow_spec *old;
	struct flowd_error err;
	struct fsm_flow *fl;
	struct fsm_flow_version *v;
	bool was_current;

	if (name == NULL || !spec_flow_key_valid(name)) {
		fsm__result_error(f, FLOWD_E_INVALID, "invalid_value", "flow",
				  "bad flow name");
		return;
	}
	if (spec_parse_ex(doc, &f->limits, SPEC_PARSE_APPLY, &spec, &err) !=
	    0) {
		f->result.err = err;
		if (err.errc == FLOWD_OK) /* not expected */
			f->result.err.errc = FLOWD_E_INVALID;
		return;
	}
	spec_drop_doc(spec); /* every version is kept: keep its text only */
	fl = map_get(&f->flows, name);
	if (fl == NULL) {
		fl = calloc(1, sizeof *fl);
		if (fl == NULL || (fl->name = strdup(name)) == NULL)
			abort();
		fl->created_ms = c->ts;
		if (map_put(&f->flows, name, fl) != 0)
			abort();
	}
	f->result.flow = fl;
	old = fl->current ? fl->versions[fl->current - 1].spec : NULL;
	if (fl->n_versions > 0 &&
	    strcmp(fl->versions[fl->n_versions - 1].spec->doc_text,
		   spec->doc_text) == 0) {
		was_current = fl->current != 0;

		spec_free(spec);
		if (fl->current == fl->n_versions)
			return; /* unchanged: a no-op */
		fl->current = fl->n_versions; /* re-deploy after undeploy */
		fl->updated_ms = c->ts;
		json_array_append_new(c->records, fsm__record_flow(fl));
		fsm__flow_touch(f, fl);
		triggers_deployed(c, fl, was_current ? old : NULL, was_current);
		return;
	}
	was_current = fl->current != 0;
	v = realloc(fl->versions, (fl->n_versions + 1) * sizeof *v);
	if (v == NULL)
		abort();
	fl->versions = v;
	/* `old` pointed into the array just moved; the spec itself did not. */
	v = &fl->versions[fl->n_versions++];
	memset(v, 0, sizeof *v);
	v->version = fl->n_versions;
	v->created_ms = c->ts;
	v->index = c->index;
	v->spec = spec;
	fl->current = v->version;
	fl->updated_ms = c->ts;
	f->result.created = true;
	json_array_append_new(c->records, fsm__record_flow_version(fl, v));
	json_array_append_new(c->records, fsm__record_flow(fl));
	fsm__flow_touch(f, fl);
	triggers_deployed(c, fl, old, was_current);
}

void fsm__apply_undeploy(struct apply_ctx *c, json_t *cmd)
{
	struct fsm *f = c->f;
	const char *name = json_string_value(json_object_get(cmd, "flow"));
	struct fsm_flow *fl = name ? map_get(&f->flows, name) : NULL;

	if (fl == NULL) {
		fsm__result_error(f, FLOWD_E_NOT_FOUND, "not_found", "flow",
				  "no such flow");
		return;
	}
	f->result.flow = fl;
	if (fl->current == 0)
		return;
	fl->current = 0;
	fl->updated_ms = c->ts;
	json_array_append_new(c->records, fsm__record_flow(fl));
	fsm__flow_touch(f, fl);
	fsm__trig_index_stale(f);
	if (f->hooks.schedules_changed != NULL)
		f->hooks.schedules_changed(f->hooks.arg, fl);
}

void fsm_release_specs(struct fsm *f, uint64_t db_index)
{
	for (size_t b = 0; b < f->flows.n_buckets; b++)
		for (struct map_entry *e = f->flows.buckets[b]; e; e = e->next) {
			struct fsm_flow *fl = e->value;

			for (unsigned k = 1; k < fl->n_versions; k++)
				if (fl->versions[k - 1].index <= db_index)
					fsm__version_maybe_drop(f, fl, k);
		}
}
