/* trigger_event.c - events inside the state machine: which flows an event
 * starts, de-duplication by event id, and the collections of all-of
 * triggers.
 *
 * DESIGN
 *
 * Exactly once. An event fires once per id: the id is remembered with the
 * answer given (for dedupe_s, and at most `keep` ids, both carried by the
 * command), and a duplicate is answered with that answer and starts
 * nothing. The remembered ids are in the snapshot, so a restored node
 * recognises the same duplicates.
 *
 * An event is offered to every event trigger that names it, in flow name
 * order (the sorted index, trigger_launch.c), with its filter. A trigger of
 * one event starts a run at once (under the overlap policy); an all-of
 * trigger collects the newest event of each name within window_s (and
 * since its last reset tick) and starts a run when it has all of them,
 * then starts collecting anew. A redeploy keeps what a trigger collected
 * when the trigger's definition is unchanged.
 *
 * Failure modes: an event without name or id is a result (FLOWD_E_INVALID);
 * parameters that do not resolve drop that trigger's run with the reason (in
 * the answer), the others still start. Each accepted event is written to
 * PostgreSQL (table events) with what it started; a restore could not
 * rebuild that row, so the next snapshot waits until PostgreSQL has it.
 *
 * Thread: the loop thread only.
 */
#include "trigger_event.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsm_rows.h"
#include "map.h"
#include "trigger_launch.h"

/* ------------------------------------------------------------------------
 * Matching an event
 */

static bool filter_matches(const json_t *filter, json_t *root)
{
	const char *key;
	json_t *want;

	json_object_foreach((json_t *)filter, key, want) {
		char path[512];
		json_t *got;

		snprintf(path, sizeof path, "payload.%s", key);
		got = spec_path_get(root, path);
		if (got == NULL || !json_equal(got, want))
			return false;
	}
	return true;
}

/* The parameters an event trigger gives its run (new reference). `root` is
 * {"payload": p} for one event, {"<name>": {"payload": p}, ...} for all. */
static json_t *event_params(const struct flow_spec *spec,
			    const struct spec_event_trigger *t, json_t *root)
{
	json_t *given = json_object(), *v;
	const char *key, *path;
	json_t *jpath;

	if (t->parameters == NULL) {
		json_t *payload = json_object_get(root, "payload");

		for (size_t p = 0; p < spec->n_params; p++) {
			v = json_object_get(payload, spec->params[p].name);
			if (v != NULL && !json_is_null(v))
				json_object_set(given, spec->params[p].name, v);
		}
		return given;
	}
	json_object_foreach(t->parameters, key, jpath) {
		path = json_string_value(jpath);
		v = spec_path_get(root, path);
		if (v != NULL && !json_is_null(v))
			json_object_set(given, key, v);
	}
	return given;
}

/* Drop collected events that are too old or before a reset tick. */
static void collect_prune(json_t *col, const struct spec_event_trigger *t,
			  int64_t now_ms)
{
	const char *key;
	json_t *e, *tmp;

	json_object_foreach_safe(col, tmp, key, e) {
		int64_t ts = json_integer_value(json_object_get(e, "ts"));
		int64_t reset;
		bool old = ts < now_ms - (int64_t)t->window_s * 1000;

		if (!old && t->reset != NULL &&
		    cron_next(&t->reset_cron, t->reset_tz, CRON_DST_SHIFT,
			      CRON_DST_ONCE, ts / 1000, &reset) &&
		    reset <= now_ms / 1000)
			old = true;
		if (old)
			json_object_del(col, key);
	}
}

/* ------------------------------------------------------------------------
 * Remembered event ids
 */

void fsm__event_remember(struct fsm *f, const char *id, int64_t ts,
			 json_t *result)
{
	struct fsm_event *ev = calloc(1, sizeof *ev);

	if (ev == NULL || (ev->id = strdup(id)) == NULL)
		abort();
	ev->ts = ts;
	ev->result = json_incref(result);
	if (map_put(&f->events, ev->id, ev) != 0)
		abort();
	if (f->events_tail != NULL)
		f->events_tail->next = ev;
	else
		f->events_head = ev;
	f->events_tail = ev;
	f->n_events++;
}

static void event_forget_old(struct fsm *f, int64_t now_ms, int64_t keep_ms,
			     size_t keep)
{
	while (f->events_head != NULL &&
	       (f->events_head->ts < now_ms - keep_ms || f->n_events > keep)) {
		struct fsm_event *ev = f->events_head;

		f->events_head = ev->next;
		if (f->events_head == NULL)
			f->events_tail = NULL;
		f->n_events--;
		map_del(&f->events, ev->id);
		free(ev->id);
		json_decref(ev->result);
		free(ev);
	}
}

void fsm__events_clear(struct fsm *f)
{
	event_forget_old(f, INT64_MAX, 0, 0);
	map_close(&f->events);
}

/* ------------------------------------------------------------------------
 * All-of collections
 */

/* Collections stay with triggers whose definition is the same (a redeploy
 * that changes a step keeps what was collected). */
void fsm__event_deployed(struct fsm_flow *fl, const struct flow_spec *old)
{
	const struct flow_spec *spec = fsm__current_spec(fl);
	json_t *collect = json_array();
	bool *used = calloc((old ? old->n_events : 0) + 1, sizeof *used);

	if (collect == NULL || used == NULL)
		abort();
	for (size_t i = 0; i < spec->n_events; i++) {
		json_t *kept = NULL;

		for (size_t j = 0; old != NULL && j < old->n_events; j++)
			if (!used[j] &&
			    strcmp(old->events[j].key, spec->events[i].key) == 0 &&
			    json_array_get(fl->collect, j) != NULL) {
				used[j] = true;
				kept = json_array_get(fl->collect, j);
				break;
			}
		json_array_append_new(collect,
				      kept ? json_incref(kept) : json_object());
	}
	free(used);
	json_decref(fl->collect);
	fl->collect = collect;
}

void fsm__collect_clear(struct fsm_flow *fl)
{
	json_decref(fl->collect);
	fl->collect = NULL;
}

/* ------------------------------------------------------------------------
 * The event command
 */

static json_t *result_item(const char *flow, size_t trigger,
			   const struct fsm_launch *l)
{
	return json_pack("{s:s, s:i, s:s, s:o, s:o}", "flow", flow, "trigger",
			 (int)trigger, "outcome",
			 fsm_fire_outcome_str(l->outcome), "run_id",
			 l->run ? json_string(l->run->id) : json_null(),
			 "reason",
			 l->reason[0] ? json_string(l->reason) : json_null());
}

void fsm__apply_event(struct apply_ctx *c, json_t *cmd)
{
	struct fsm *f = c->f;
	const char *name = json_string_value(json_object_get(cmd, "name"));
	/* an event for one project and/or branch reaches only its flows */
	const char *only_project =
		json_string_value(json_object_get(cmd, "project"));
	const char *only_branch =
		json_string_value(json_object_get(cmd, "branch"));
	const char *id = json_string_value(json_object_get(cmd, "id"));
	json_t *payload = json_object_get(cmd, "payload");
	unsigned dedupe_s = (unsigned)json_integer_value(json_object_get(cmd, "dedupe_s"));
	size_t keep = (size_t)json_integer_value(json_object_get(cmd, "keep"));
	unsigned max_buffered =
		(unsigned)json_integer_value(json_object_get(cmd, "max_buffered"));
	struct fsm_event *seen;
	json_t *runs, *root, *list, *entry, *result;
	size_t n;

	if (name == NULL || id == NULL) {
		fsm__result_error(f, FLOWD_E_INVALID, "invalid_command", "",
				  "bad event");
		return;
	}
	event_forget_old(f, c->ts, (int64_t)dedupe_s * 1000, keep ? keep : 1);
	seen = map_get(&f->events, id);
	fsm__count(c, &(struct fsm_count){.kind = FSM_COUNT_EVENT,
					  .event = name,
					  .duplicate = seen != NULL});
	if (seen != NULL) {
		f->result.body = json_deep_copy(seen->result);
		json_object_set_new(f->result.body, "duplicate", json_true());
		return;
	}
	if (payload == NULL || json_is_null(payload))
		payload = json_object();
	else
		json_incref(payload);
	runs = json_array();
	root = json_pack("{s:O}", "payload", payload);
	fsm__trig_index_rebuild(f);
	list = json_object_get(f->by_event, name);
	json_array_foreach(list, n, entry) {
		struct fsm_flow *fl = map_get(
			&f->flows, json_string_value(json_array_get(entry, 0)));
		size_t i = (size_t)json_integer_value(json_array_get(entry, 1));
		const struct flow_spec *spec = fl ? fsm__current_spec(fl) : NULL;
		const struct spec_event_trigger *t;
		struct fsm_launch l;
		json_t *params, *trigger, *col, *all_root;
		size_t k;

		if (spec == NULL || i >= spec->n_events)
			continue;
		if (only_project != NULL || only_branch != NULL) {
			struct spec_flow_key fk;

			spec_flow_key_split(fl->name, &fk);
			if ((only_project != NULL &&
			     strcmp(only_project, fk.project) != 0) ||
			    (only_branch != NULL &&
			     strcmp(only_branch, fk.branch) != 0))
				continue;
		}
		t = &spec->events[i];
		for (k = 0; k < t->n_events; k++)
			if (strcmp(t->events[k].name, name) == 0 &&
			    filter_matches(t->events[k].filter, root))
				break;
		if (k == t->n_events)
			continue;
		if (t->n_events == 1) {
			params = event_params(spec, t, root);
			trigger = json_pack("{s:s, s:i, s:[s], s:[s]}", "type",
					    "event", "trigger", (int)i,
					    "event_ids", id, "events", name);
		} else {
			col = json_array_get(fl->collect, i);
			collect_prune(col, t, c->ts);
			json_object_set_new(col, name,
					    json_pack("{s:s, s:O, s:I}", "id", id,
						      "payload", payload, "ts",
						      (json_int_t)c->ts));
			if (json_object_size(col) < t->n_events) {
				json_t *waiting = json_array();

				for (k = 0; k < t->n_events; k++)
					if (json_object_get(col, t->events[k].name) == NULL)
						json_array_append_new(
							waiting,
							json_string(t->events[k].name));
				json_array_append_new(
					runs, json_pack("{s:s, s:i, s:s, s:o}",
							"flow", fl->name, "trigger",
							(int)i, "outcome",
							"collected", "waiting_for",
							waiting));
				continue;
			}
			all_root = json_object();
			trigger = json_pack("{s:s, s:i, s:[], s:[]}", "type",
					    "event", "trigger", (int)i,
					    "event_ids", "events");
			for (k = 0; k < t->n_events; k++) {
				json_t *e = json_object_get(col, t->events[k].name);

				json_object_set_new(
					all_root, t->events[k].name,
					json_pack("{s:O}", "payload",
						  json_object_get(e, "payload")));
				json_array_append(json_object_get(trigger, "event_ids"),
						  json_object_get(e, "id"));
				json_array_append_new(
					json_object_get(trigger, "events"),
					json_string(t->events[k].name));
			}
			params = event_params(spec, t, all_root);
			json_decref(all_root);
			json_object_clear(col);
		}
		fsm__launch(c, fl, params, trigger, t->overlap, -1, max_buffered,
			    &l);
		json_array_append_new(runs, result_item(fl->name, i, &l));
		json_decref(params);
	}
	result = json_pack("{s:s, s:s, s:o}", "id", id, "name", name, "runs",
			   runs);
	fsm__event_remember(f, id, c->ts, result);
	json_array_append_new(c->records,
			      fsm__record_event(id, name, payload, c->ts, runs));
	f->pending_history = true; /* the events row: a restore could not
				    * rebuild it */
	f->result.created = true;
	f->result.body = json_deep_copy(result);
	json_object_set_new(f->result.body, "duplicate", json_false());
	json_decref(result);
	json_decref(root);
	json_decref(payload);
}
