/* trigger_launch.c - what every kind of trigger shares: starting a run
 * under the flow's overlap policy, the overlap buffer, and the sorted
 * indexes of which flows react to an event or to a run's end.
 *
 * DESIGN
 *
 * Overlap. A flow has room while fewer than max_active_runs of its runs are
 * active (not settled: still running, or stopping after their end). Without
 * max_active_runs the limit is 1 for every policy but allow_all, which then
 * has none. A trigger without room is skipped, buffered (FIFO, bounded),
 * dropped, or ends the active runs (cancel_other waits in the buffer until
 * they have stopped; terminate_other starts at once). A run that settles
 * gives its flow room: trigger_finish.c takes the buffer's oldest then.
 *
 * Order. Wherever several flows react to one thing (an event, a run's end)
 * they are walked in name order through sorted indexes, so every node
 * creates the same runs with the same ids. The indexes are derived state
 * (not in the snapshot), rebuilt on first use after a flow's triggers
 * changed.
 *
 * Failure modes: a run whose parameters do not resolve is dropped with the
 * reason, never an apply failure; out of memory aborts.
 *
 * Thread: the loop thread only.
 */
#include "trigger_launch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsm_runs.h"

/* ------------------------------------------------------------------------
 * Overlap
 */

static unsigned room_limit(const struct flow_spec *spec, enum spec_overlap ov)
{
	if (spec->max_active_runs > 0)
		return spec->max_active_runs;
	return ov == SPEC_OVERLAP_ALLOW_ALL ? 0 : 1;
}

/* End every active run of the flow that has not ended yet. */
static void end_active_runs(struct apply_ctx *c, struct fsm_flow *fl,
			    const char *reason)
{
	struct fsm *f = c->f;
	unsigned seen = 0;

	for (uint64_t seq = f->n_runs; seq >= f->run_lo && seq > 0 &&
				       seen < fl->active;
	     seq--) {
		struct fsm_run *r = fsm_run_at(f, seq);

		if (r == NULL || r->flow != fl || r->settled)
			continue;
		seen++;
		if (!fsm__run_terminal(r))
			fsm__run_end(c, r, FSM_RUN_CANCELLED, reason);
	}
}

void fsm__buffer_push(struct fsm_flow *fl, const json_t *params,
		      json_t *trigger, const char *sched_key)
{
	struct fsm_buffered *b = calloc(1, sizeof *b);

	if (b == NULL || (sched_key && !(b->sched_key = strdup(sched_key))))
		abort();
	b->params = params ? json_deep_copy(params) : NULL;
	b->trigger = trigger;
	if (fl->buf_tail != NULL)
		fl->buf_tail->next = b;
	else
		fl->buf_head = b;
	fl->buf_tail = b;
	fl->n_buffered++;
}

void fsm__buffered_free(struct fsm_buffered *b)
{
	free(b->sched_key);
	json_decref(b->params);
	json_decref(b->trigger);
	free(b);
}

struct fsm_buffered *fsm__buffer_take(struct fsm_flow *fl)
{
	const struct flow_spec *spec = fsm__current_spec(fl);
	struct fsm_buffered *b = fl->buf_head;
	unsigned limit =
		spec ? (spec->max_active_runs ? spec->max_active_runs : 1) : 0;

	if (b == NULL || (spec != NULL && fl->active >= limit))
		return NULL;
	fl->buf_head = b->next;
	if (fl->buf_head == NULL)
		fl->buf_tail = NULL;
	fl->n_buffered--;
	return b;
}

void fsm__buffer_clear(struct fsm_flow *fl)
{
	while (fl->buf_head != NULL) {
		struct fsm_buffered *b = fl->buf_head;

		fl->buf_head = b->next;
		fsm__buffered_free(b);
	}
	fl->buf_tail = NULL;
	fl->n_buffered = 0;
}

/* A run whose parameters do not resolve is dropped with the reason. */
void fsm__launch(struct apply_ctx *c, struct fsm_flow *fl,
		 const json_t *params, json_t *trigger, enum spec_overlap ov,
		 int sched, unsigned max_buffered, struct fsm_launch *out)
{
	const struct flow_spec *spec = fsm__current_spec(fl);
	unsigned limit = room_limit(spec, ov);
	bool busy = limit > 0 && (fl->active >= limit || fl->n_buffered > 0);
	struct flowd_error err;

	memset(out, 0, sizeof *out);
	if (busy) {
		switch (ov) {
		case SPEC_OVERLAP_SKIP:
			out->outcome = FSM_FIRE_SKIPPED;
			snprintf(out->reason, sizeof out->reason,
				 "overlap skip: %u run(s) active", fl->active);
			json_decref(trigger);
			return;
		case SPEC_OVERLAP_BUFFER_ONE:
			if (fl->n_buffered >= 1)
				goto dropped;
			goto buffered;
		case SPEC_OVERLAP_ALLOW_ALL:
		case SPEC_OVERLAP_BUFFER_ALL:
			if (fl->n_buffered >= max_buffered)
				goto dropped;
			goto buffered;
		case SPEC_OVERLAP_CANCEL_OTHER:
			end_active_runs(c, fl, "cancelled: a newer run was "
					       "triggered (overlap cancel_other)");
			if (fl->active < limit)
				break; /* they have all stopped already */
			goto buffered;
		case SPEC_OVERLAP_TERMINATE_OTHER:
			end_active_runs(c, fl, "terminated: a newer run was "
					       "triggered (overlap "
					       "terminate_other)");
			break;
		}
	}
	out->run = fsm__run_start(c, fl, params, NULL, trigger, &err);
	if (out->run == NULL) {
		out->outcome = FSM_FIRE_DROPPED;
		snprintf(out->reason, sizeof out->reason, "%.64s: %.160s",
			 err.field, err.message);
		return;
	}
	out->outcome = FSM_FIRE_FIRED;
	return;
buffered:
	fsm__buffer_push(fl, params, trigger,
			 sched >= 0 ? fl->sched[sched].key : NULL);
	out->outcome = FSM_FIRE_BUFFERED;
	snprintf(out->reason, sizeof out->reason,
		 "overlap %s: waiting for room (%u active)",
		 spec_overlap_str(ov), fl->active);
	return;
dropped:
	out->outcome = FSM_FIRE_DROPPED;
	snprintf(out->reason, sizeof out->reason,
		 "overlap %s: the buffer is full (%u waiting)",
		 spec_overlap_str(ov), fl->n_buffered);
	json_decref(trigger);
}

/* ------------------------------------------------------------------------
 * Indexes of event and on-finish triggers
 */

static int entry_cmp(const void *a, const void *b)
{
	json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
	int r = strcmp(json_string_value(json_array_get(x, 0)),
		       json_string_value(json_array_get(y, 0)));

	if (r != 0)
		return r;
	return (int)(json_integer_value(json_array_get(x, 1)) -
		     json_integer_value(json_array_get(y, 1)));
}

static void index_add(json_t *index, const char *key, const char *flow,
		      size_t i)
{
	json_t *list = json_object_get(index, key);

	if (list == NULL) {
		list = json_array();
		json_object_set_new(index, key, list);
	}
	json_array_append_new(list, json_pack("[s, i]", flow, (int)i));
}

static void index_sort(json_t *index)
{
	const char *key;
	json_t *list;

	json_object_foreach(index, key, list) {
		size_t n = json_array_size(list), i;
		json_t **items = malloc((n + 1) * sizeof *items);
		json_t *sorted = json_array();

		if (items == NULL)
			abort();
		for (i = 0; i < n; i++)
			items[i] = json_array_get(list, i);
		qsort(items, n, sizeof *items, entry_cmp);
		for (i = 0; i < n; i++)
			json_array_append(sorted, items[i]);
		free(items);
		json_object_set_new(index, key, sorted);
	}
}

void fsm__trig_index_rebuild(struct fsm *f)
{
	if (!f->trigger_index_stale && f->by_event != NULL)
		return;
	json_decref(f->by_event);
	json_decref(f->by_upstream);
	f->by_event = json_object();
	f->by_upstream = json_object();
	for (size_t b = 0; b < f->flows.n_buckets; b++) {
		for (struct map_entry *e = f->flows.buckets[b]; e; e = e->next) {
			struct fsm_flow *fl = e->value;
			const struct flow_spec *spec = fsm__current_spec(fl);

			if (spec == NULL)
				continue;
			for (size_t i = 0; i < spec->n_events; i++)
				for (size_t k = 0; k < spec->events[i].n_events; k++)
					index_add(f->by_event,
						  spec->events[i].events[k].name,
						  fl->name, i);
			/* the upstream flow in this flow's project, and
			 * branch unless the trigger names one */
			struct spec_flow_key k;

			spec_flow_key_split(fl->name, &k);
			for (size_t i = 0; i < spec->n_on_finish; i++) {
				char up[SPEC_FLOW_KEY_MAX];
				const char *br = spec->on_finish[i].branch;

				if (spec_flow_key(k.project, br ? br : k.branch,
						  spec->on_finish[i].flow, up,
						  sizeof up) == 0)
					index_add(f->by_upstream, up, fl->name,
						  i);
			}
		}
	}
	index_sort(f->by_event);
	index_sort(f->by_upstream);
	f->trigger_index_stale = false;
}

void fsm__trig_index_stale(struct fsm *f)
{
	f->trigger_index_stale = true;
}

void fsm__trig_index_clear(struct fsm *f)
{
	json_decref(f->by_event);
	json_decref(f->by_upstream);
	f->by_event = f->by_upstream = NULL;
	f->trigger_index_stale = true;
}
