/* fsm_snapshot.c - the state machine's snapshot: the whole state as one
 * JSON document, and restoring it.
 *
 * DESIGN
 *
 * The snapshot holds everything apply reads: flows with the text of every
 * version's spec still in memory (the others: their time only), their
 * trigger state (pause, schedule cursors and counters, all-of collections,
 * the overlap buffer), nodes, runs with steps and attempts, the order of
 * the ready queue (the only order apply depends on), the settled FIFO,
 * idempotency keys and remembered event ids. Counters that can be derived
 * (node.running, run.active_attempts, flow.active, the retry list, the
 * trigger indexes) are rebuilt on restore.
 *
 * Format. The document is the same bytes for the same state on every node:
 * flows sorted by name, runs by seq, every list in its replicated order.
 * Each run's text is cached (run->snap_text) until the run changes
 * (fsm_changes.c drops it), so a snapshot of a large state where little
 * changed is mostly memcpy. Restore reads the formats of earlier versions
 * too (specs as objects, no trigger state, idempotency keys kept with the
 * runs): a snapshot is never refused for its age.
 *
 * Failure modes. A snapshot that does not parse, or is inconsistent (a run
 * of an unknown flow or version, a settled or ready run not in memory, a
 * duplicate event id), leaves the state unchanged and returns -1: the new
 * state is built beside the old, and swapped in only when complete. The
 * rows not yet taken when a restore succeeds describe the replaced state
 * and are dropped (callers take them first).
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
#include "fsm_rows.h"
#include "fsm_runs.h"
#include "fsm_state.h"
#include "log.h"
#include "trigger_event.h"
#include "trigger_launch.h"

static json_t *jstr_or_null(const char *s)
{
	return s != NULL ? json_string(s) : json_null();
}

/* ------------------------------------------------------------------------
 * Snapshot
 */

/* A flow's trigger state: pause, schedule states (the last fires oldest
 * first), all-of collections, the overlap buffer. */
static json_t *trig_snap_flow(const struct fsm_flow *fl)
{
	json_t *sched = json_array(), *buf = json_array();

	for (unsigned i = 0; i < fl->n_sched; i++) {
		const struct fsm_schedule_state *st = &fl->sched[i];
		json_t *counts = json_array(), *last = json_array();

		for (int o = 0; o < FSM_FIRE_OUTCOMES; o++)
			json_array_append_new(counts,
					      json_integer((json_int_t)st->counts[o]));
		for (unsigned k = 0; k < st->n_last; k++) {
			/* oldest first */
			unsigned at = (st->head + FSM_FIRES_KEPT - st->n_last + k) %
				      FSM_FIRES_KEPT;
			const struct fsm_fire *r = &st->last[at];

			json_array_append_new(
				last, json_pack("[I, I, i, I, I, i]",
						(json_int_t)r->nominal,
						(json_int_t)r->at_ms,
						(int)r->outcome,
						(json_int_t)r->count,
						(json_int_t)r->run_seq,
						(int)r->reason));
		}
		json_array_append_new(
			sched, json_pack("{s:s, s:I, s:o, s:o}", "key", st->key,
					 "cursor", (json_int_t)st->cursor,
					 "counts", counts, "last", last));
	}
	for (const struct fsm_buffered *b = fl->buf_head; b; b = b->next)
		json_array_append_new(
			buf, json_pack("{s:O?, s:O, s:s?}", "params", b->params,
				       "trigger", b->trigger, "sched_key",
				       b->sched_key));
	return json_pack("{s:b, s:o, s:O?, s:o}", "paused", fl->paused,
			 "sched", sched, "collect", fl->collect, "buf", buf);
}

static json_t *events_snap(const struct fsm *f)
{
	json_t *arr = json_array();

	for (const struct fsm_event *ev = f->events_head; ev; ev = ev->next)
		json_array_append_new(arr, json_pack("[s, I, O]", ev->id,
						     (json_int_t)ev->ts,
						     ev->result));
	return arr;
}

static json_t *snap_attempt(const struct fsm_attempt *a)
{
	return json_pack("{s:i, s:I, s:I, s:i, s:b, s:I, s:I, s:i, s:i, s:o}",
			 "n", (int)a->n, "node", (json_int_t)a->node, "boot",
			 (json_int_t)a->boot, "st", (int)a->status, "stop",
			 a->stopping, "t0", (json_int_t)a->started_ms, "t1",
			 (json_int_t)a->finished_ms, "exit", a->exit_code,
			 "sig", a->term_signal, "why", jstr_or_null(a->reason));
}

static json_t *snap_run(const struct fsm_run *r)
{
	json_t *steps = json_array();

	for (size_t i = 0; i < r->spec->n_steps; i++) {
		const struct fsm_step *s = &r->steps[i];
		json_t *atts = json_array();
		for (unsigned k = 0; k < s->n_attempts; k++)
			json_array_append_new(atts, snap_attempt(&s->attempts[k]));
		json_array_append_new(
			steps, json_pack("{s:i, s:i, s:I, s:I, s:I, s:o}", "st",
					 (int)s->status, "deps", (int)s->deps_left,
					 "due", (json_int_t)s->due_ms, "t0",
					 (json_int_t)s->started_ms, "t1",
					 (json_int_t)s->finished_ms, "att", atts));
	}
	return json_pack("{s:s, s:I, s:s, s:i, s:O, s:o, s:i, s:o, s:I, s:I, s:I, s:o, s:O?}",
			 "id", r->id, "seq", (json_int_t)r->seq, "flow",
			 r->flow->name, "version", (int)r->version, "params",
			 r->params, "key", jstr_or_null(r->idempotency_key),
			 "st", (int)r->status, "why", jstr_or_null(r->reason),
			 "t0", (json_int_t)r->created_ms, "t1",
			 (json_int_t)r->started_ms, "t2",
			 (json_int_t)r->finished_ms, "steps", steps, "trig",
			 r->trigger);
}

static int flow_name_cmp(const void *a, const void *b)
{
	const struct fsm_flow *x = *(struct fsm_flow *const *)a;
	const struct fsm_flow *y = *(struct fsm_flow *const *)b;

	return strcmp(x->name, y->name);
}

/* The snapshot text of one run, kept (run->snap_text) until the run
 * changes: every change goes through touch_run, which drops it. A snapshot
 * of a large state where little changed is then mostly memcpy. */
static int put_run(struct fsm_text *b, struct fsm_run *r)
{
	char *text;
	int rv;

	if (r->snap_text != NULL)
		return fsm__text_put(b, r->snap_text, r->snap_len);
	json_t *j = snap_run(r);
	text = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (text == NULL)
		return -1;
	rv = fsm__text_put(b, text, strlen(text));
	/* Kept until the run changes (touch_run drops it), so that the next
	 * snapshot copies the text of every run that did not change. */
	r->snap_text = text;
	r->snap_len = strlen(text);
	return rv;
}

int fsm_snapshot(struct fsm *f, char **buf, size_t *len)
{
	json_t *root = NULL, *flows = json_array(), *nodes = json_array();
	struct fsm_text b = {0};
	struct fsm_flow **sorted;
	char *head = NULL;
	size_t n = 0;
	int rv = -1;

	sorted = malloc((f->flows.size + 1) * sizeof *sorted);
	if (sorted == NULL)
		goto out;
	for (size_t i = 0; i < f->flows.n_buckets; i++)
		for (struct map_entry *e = f->flows.buckets[i]; e; e = e->next)
			sorted[n++] = e->value;
	qsort(sorted, n, sizeof *sorted, flow_name_cmp);
	for (size_t i = 0; i < n; i++) {
		struct fsm_flow *fl = sorted[i];
		json_t *vers = json_array();
		/* versions whose spec left memory: their time only */
		for (unsigned k = 0; k < fl->n_versions; k++)
			json_array_append_new(
				vers, json_pack("{s:I, s:s*}", "t",
						(json_int_t)fl->versions[k].created_ms,
						"text",
						fl->versions[k].spec
							? fl->versions[k].spec->doc_text
							: NULL));
		json_array_append_new(
			flows, json_pack("{s:s, s:i, s:I, s:I, s:o, s:o}", "name",
					 fl->name, "current", (int)fl->current,
					 "t0", (json_int_t)fl->created_ms, "t1",
					 (json_int_t)fl->updated_ms, "versions",
					 vers, "trig", trig_snap_flow(fl)));
	}
	free(sorted);
	for (unsigned i = 0; i < f->n_nodes; i++)
		json_array_append_new(
			nodes, json_pack("{s:I, s:I, s:i, s:b, s:s, s:b}", "id",
					 (json_int_t)f->nodes[i].id, "boot",
					 (json_int_t)f->nodes[i].boot, "cap",
					 (int)f->nodes[i].capacity, "live",
					 f->nodes[i].live, "api",
					 f->nodes[i].api_address, "removed",
					 f->nodes[i].removed));
	json_t *settled = json_array(), *keys = json_array();
	for (struct fsm_run *r = f->settled_head; r; r = r->settled_next)
		json_array_append_new(settled, json_integer((json_int_t)r->seq));
	/* Every key, oldest first: [flow "\n" key, seq, ms]. */
	for (size_t i = 0; i < idem_count(&f->idem); i++) {
		uint64_t seq;
		int64_t ts;
		const char *k = idem_at(&f->idem, i, &seq, &ts);

		json_array_append_new(keys, json_pack("[s, I, I]", k,
						      (json_int_t)seq,
						      (json_int_t)ts));
	}
	root = json_pack("{s:i, s:I, s:I, s:I, s:I, s:I, s:o, s:o, s:o, s:o, s:o}",
			 "v", 1, "next_seq", (json_int_t)f->next_seq, "index",
			 (json_int_t)f->applied_index, "retain",
			 (json_int_t)f->retain, "keys_max",
			 (json_int_t)f->idem_max, "key_ttl_ms",
			 (json_int_t)f->idem_ttl_ms, "flows", flows, "nodes",
			 nodes, "settled", settled, "keys", keys, "events",
			 events_snap(f));
	flows = nodes = NULL;
	if (root == NULL || (head = json_dumps(root, JSON_COMPACT)) == NULL)
		goto out;
	/* The document is `head` with "ready" and "runs" spliced in before its
	 * last '}', written as text: both can hold every queued run. */
	if (fsm__text_put(&b, head, strlen(head) - 1) != 0 ||
	    fsm__text_put(&b, ",\"ready\":[", 10) != 0)
		goto out;
	for (struct fsm_step *s = f->ready_head; s; s = s->ready_next) {
		char item[48];
		int w = snprintf(item, sizeof item, "%s[%" PRIu64 ",%u]",
				 s == f->ready_head ? "" : ",", s->run->seq,
				 s->index);
		if (fsm__text_put(&b, item, (size_t)w) != 0)
			goto out;
	}
	if (fsm__text_put(&b, "],\"runs\":[", 10) != 0)
		goto out;
	bool first = true;
	for (uint64_t seq = f->run_lo; seq <= f->n_runs; seq++) {
		struct fsm_run *r = fsm_run_at(f, seq);

		if (r == NULL)
			continue;
		if ((!first && fsm__text_put(&b, ",", 1) != 0) || put_run(&b, r) != 0)
			goto out;
		first = false;
	}
	if (fsm__text_put(&b, "]}", 2) != 0)
		goto out;
	*buf = b.p;
	*len = b.n;
	b.p = NULL;
	rv = 0;
out:
	free(b.p);
	free(head);
	json_decref(root);
	json_decref(flows);
	json_decref(nodes);
	return rv;
}

/* ------------------------------------------------------------------------
 * Restore
 */

static int trig_restore_flow(struct fsm *f, struct fsm_flow *fl, json_t *j)
{
	json_t *sched = json_object_get(j, "sched"), *js, *jb;
	size_t i, k;

	if (j == NULL)
		return 0; /* a snapshot from before triggers */
	fl->paused = json_is_true(json_object_get(j, "paused"));
	fl->sched = calloc(json_array_size(sched) + 1, sizeof *fl->sched);
	if (fl->sched == NULL)
		return -1;
	json_array_foreach(sched, i, js) {
		struct fsm_schedule_state *st = &fl->sched[i];
		json_t *counts = json_object_get(js, "counts");
		json_t *last = json_object_get(js, "last"), *jr;
		const char *key = json_string_value(json_object_get(js, "key"));

		if (key == NULL || (st->key = strdup(key)) == NULL)
			return -1;
		fl->n_sched = (unsigned)i + 1;
		st->cursor = json_integer_value(json_object_get(js, "cursor"));
		for (int o = 0; o < FSM_FIRE_OUTCOMES; o++)
			st->counts[o] = (uint64_t)json_integer_value(
				json_array_get(counts, (size_t)o));
		json_array_foreach(last, k, jr) {
			struct fsm_fire *r = &st->last[st->head];
			int o = (int)json_integer_value(json_array_get(jr, 2));
			int why = (int)json_integer_value(json_array_get(jr, 5));

			if (o < 0 || o >= FSM_FIRE_OUTCOMES || k >= FSM_FIRES_KEPT ||
			    why < 0 || why > FSM_WHY_UNDEPLOYED)
				return -1;
			r->nominal = json_integer_value(json_array_get(jr, 0));
			r->at_ms = json_integer_value(json_array_get(jr, 1));
			r->outcome = (uint8_t)o;
			r->count = (uint32_t)json_integer_value(json_array_get(jr, 3));
			r->run_seq = (uint64_t)json_integer_value(json_array_get(jr, 4));
			r->reason = (uint8_t)why;
			st->head = (st->head + 1) % FSM_FIRES_KEPT;
			st->n_last++;
		}
	}
	if (json_is_array(json_object_get(j, "collect")))
		fl->collect = json_deep_copy(json_object_get(j, "collect"));
	json_array_foreach(json_object_get(j, "buf"), i, jb) {
		json_t *params = json_object_get(jb, "params");

		fsm__buffer_push(fl, json_is_null(params) ? NULL : params,
				 json_incref(json_object_get(jb, "trigger")),
				 json_string_value(json_object_get(jb, "sched_key")));
	}
	f->trigger_index_stale = true;
	return 0;
}

static int events_restore(struct fsm *f, json_t *j)
{
	json_t *e;
	size_t i;

	json_array_foreach(j, i, e) {
		const char *id = json_string_value(json_array_get(e, 0));

		if (id == NULL || map_get(&f->events, id) != NULL)
			return -1;
		fsm__event_remember(f, id,
				    json_integer_value(json_array_get(e, 1)),
				    json_array_get(e, 2));
	}
	return 0;
}

static int restore_flows(struct fsm *f, json_t *flows)
{
	size_t i, k;
	json_t *jf, *jv;

	json_array_foreach(flows, i, jf)
	{
		const char *name = json_string_value(json_object_get(jf, "name"));
		json_t *vers = json_object_get(jf, "versions");
		struct fsm_flow *fl = calloc(1, sizeof *fl);
		if (fl == NULL || name == NULL)
			return -1;
		fl->name = strdup(name);
		fl->current = (unsigned)json_integer_value(json_object_get(jf, "current"));
		fl->created_ms = json_integer_value(json_object_get(jf, "t0"));
		fl->updated_ms = json_integer_value(json_object_get(jf, "t1"));
		fl->versions = calloc(json_array_size(vers) + 1, sizeof *fl->versions);
		if (fl->name == NULL || fl->versions == NULL ||
		    map_put(&f->flows, name, fl) != 0) {
			fsm__flow_free(fl);
			return -1;
		}
		json_array_foreach(vers, k, jv)
		{
			struct flowd_error err;
			struct fsm_flow_version *v = &fl->versions[k];
			const char *text = json_string_value(json_object_get(jv, "text"));
			/* "text" since triggers; "spec", an object, before;
			 * neither once the spec left memory */
			json_t *doc = text ? json_loads(text, 0, NULL)
					   : json_incref(json_object_get(jv, "spec"));
			int rc = doc != NULL
					 ? spec_parse_ex(doc, &f->limits,
							 SPEC_PARSE_APPLY, &v->spec,
							 &err)
					 : 0;

			json_decref(doc);
			if (rc != 0)
				return -1;
			if (v->spec != NULL)
				spec_drop_doc(v->spec);
			else if (k + 1 == json_array_size(vers))
				return -1; /* the newest is always kept */
			v->version = (unsigned)k + 1;
			v->created_ms = json_integer_value(json_object_get(jv, "t"));
			v->index = f->applied_index;
			fl->n_versions++;
		}
		if (fl->current > fl->n_versions ||
		    trig_restore_flow(f, fl, json_object_get(jf, "trig")) != 0)
			return -1;
		fsm__told_sync_flow(fl);
	}
	return 0;
}

static int restore_run(struct fsm *f, json_t *jr)
{
	const char *flow = json_string_value(json_object_get(jr, "flow"));
	const char *id = json_string_value(json_object_get(jr, "id"));
	struct fsm_flow *fl = flow ? map_get(&f->flows, flow) : NULL;
	unsigned version = (unsigned)json_integer_value(json_object_get(jr, "version"));
	json_t *steps = json_object_get(jr, "steps");
	struct fsm_run *r;
	size_t i, k;
	json_t *js, *ja;

	if (fl == NULL || id == NULL || version == 0 ||
	    version > fl->n_versions || fl->versions[version - 1].spec == NULL)
		return -1;
	r = fsm__run_new(f, fl, version,
		    (uint64_t)json_integer_value(json_object_get(jr, "seq")));
	free(r->id);
	r->id = strdup(id);
	r->params = json_incref(json_object_get(jr, "params"));
	if (json_is_string(json_object_get(jr, "key")))
		r->idempotency_key = strdup(json_string_value(json_object_get(jr, "key")));
	r->status = (enum fsm_run_status)json_integer_value(json_object_get(jr, "st"));
	if (json_is_string(json_object_get(jr, "why")))
		r->reason = strdup(json_string_value(json_object_get(jr, "why")));
	r->created_ms = json_integer_value(json_object_get(jr, "t0"));
	r->started_ms = json_integer_value(json_object_get(jr, "t1"));
	r->finished_ms = json_integer_value(json_object_get(jr, "t2"));
	if (json_is_object(json_object_get(jr, "trig")))
		r->trigger = json_incref(json_object_get(jr, "trig"));
	r->end_seen = fsm__run_terminal(r);
	if (json_array_size(steps) != r->spec->n_steps || r->params == NULL) {
		fsm__run_free(r);
		return -1;
	}
	json_array_foreach(steps, i, js)
	{
		struct fsm_step *s = &r->steps[i];
		json_t *atts = json_object_get(js, "att");
		s->status = (enum fsm_step_status)json_integer_value(json_object_get(js, "st"));
		s->deps_left = (unsigned)json_integer_value(json_object_get(js, "deps"));
		s->due_ms = json_integer_value(json_object_get(js, "due"));
		s->started_ms = json_integer_value(json_object_get(js, "t0"));
		s->finished_ms = json_integer_value(json_object_get(js, "t1"));
		s->attempts = calloc(json_array_size(atts) + 1, sizeof *s->attempts);
		if (s->attempts == NULL)
			abort();
		json_array_foreach(atts, k, ja)
		{
			struct fsm_attempt *a = &s->attempts[k];
			a->n = (unsigned)json_integer_value(json_object_get(ja, "n"));
			a->node = (uint64_t)json_integer_value(json_object_get(ja, "node"));
			a->boot = (uint64_t)json_integer_value(json_object_get(ja, "boot"));
			a->status = (enum fsm_attempt_status)json_integer_value(json_object_get(ja, "st"));
			a->stopping = json_is_true(json_object_get(ja, "stop"));
			a->started_ms = json_integer_value(json_object_get(ja, "t0"));
			a->finished_ms = json_integer_value(json_object_get(ja, "t1"));
			a->exit_code = (int)json_integer_value(json_object_get(ja, "exit"));
			a->term_signal = (int)json_integer_value(json_object_get(ja, "sig"));
			if (json_is_string(json_object_get(ja, "why")))
				a->reason = strdup(json_string_value(json_object_get(ja, "why")));
			s->n_attempts++;
			if (a->status == FSM_ATTEMPT_RUNNING) {
				struct fsm_node *n = fsm__node_find(f, a->node);
				r->active_attempts++;
				if (n != NULL)
					n->running++;
			}
		}
		if (s->status == FSM_STEP_RETRY_WAIT) {
			s->wait_next = f->waiting;
			f->waiting = s;
		}
	}
	fsm__told_sync(r);
	fsm__run_list_add(f, r);
	return 0;
}

/* "keys": [[flow "\n" key, seq, ms], ...] oldest first. Snapshots from
 * before the retention kept the keys of evicted runs in "idem" ([k, id])
 * and those of runs in memory with their runs: both come back, in seq
 * order, as made at the newest run's time (they then live one retention
 * more). */
static int key_put(struct fsm *f, const char *k, uint64_t seq, int64_t ts)
{
	const char *nl = k != NULL ? strchr(k, '\n') : NULL;
	char flow[256];

	if (nl == NULL || (size_t)(nl - k) >= sizeof flow || seq == 0)
		return -1;
	memcpy(flow, k, (size_t)(nl - k));
	flow[nl - k] = '\0';
	idem_put(&f->idem, flow, nl + 1, seq, ts);
	return 0;
}

static int seq_cmp(const void *a, const void *b)
{
	uint64_t x = json_integer_value(json_array_get(*(json_t *const *)a, 1));
	uint64_t y = json_integer_value(json_array_get(*(json_t *const *)b, 1));

	return x < y ? -1 : x > y;
}

static int restore_keys(struct fsm *f, json_t *root)
{
	json_t *keys = json_object_get(root, "keys"), *j, *old;
	json_t **v;
	int64_t newest = 0;
	size_t i, n = 0;
	int rc = 0;

	if (keys != NULL) {
		json_array_foreach(keys, i, j)
		{
			if (key_put(f, json_string_value(json_array_get(j, 0)),
				    (uint64_t)json_integer_value(json_array_get(j, 1)),
				    json_integer_value(json_array_get(j, 2))) != 0)
				return -1;
		}
		return 0;
	}
	old = json_array();
	for (uint64_t seq = f->run_lo; seq <= f->n_runs; seq++) {
		struct fsm_run *r = fsm_run_at(f, seq);

		if (r == NULL)
			continue;
		if (r->created_ms > newest)
			newest = r->created_ms;
		if (r->idempotency_key != NULL) {
			char *k = NULL;

			if (asprintf(&k, "%s\n%s", r->flow->name,
				     r->idempotency_key) < 0)
				abort();
			json_array_append_new(old, json_pack("[s, I]", k,
							     (json_int_t)r->seq));
			free(k);
		}
	}
	json_array_foreach(json_object_get(root, "idem"), i, j)
	{
		const char *id = json_string_value(json_array_get(j, 1));

		json_array_append_new(
			old, json_pack("[O, I]", json_array_get(j, 0),
				       (json_int_t)(id && strncmp(id, "r-", 2) == 0
							    ? strtoull(id + 2, NULL, 10)
							    : 0)));
	}
	v = malloc((json_array_size(old) + 1) * sizeof *v);
	if (v == NULL)
		abort();
	json_array_foreach(old, i, j)
		v[n++] = j;
	qsort(v, n, sizeof *v, seq_cmp);
	for (i = 0; i < n && rc == 0; i++)
		rc = key_put(f, json_string_value(json_array_get(v[i], 0)),
			     (uint64_t)json_integer_value(json_array_get(v[i], 1)),
			     newest);
	free(v);
	json_decref(old);
	return rc;
}

int fsm_restore(struct fsm *f, const void *buf, size_t len)
{
	json_error_t jerr;
	json_t *root = json_loadb(buf, len, 0, &jerr);
	struct fsm backup = *f;
	size_t i;
	json_t *j;

	if (root == NULL || json_integer_value(json_object_get(root, "v")) != 1) {
		log_error("fsm: restore: bad snapshot: %s",
			  root ? "version" : jerr.text);
		json_decref(root);
		return -1;
	}
	/* Build the new state in place of the old, keeping the old aside so
	 * that a bad snapshot leaves the state unchanged. */
	map_init(&f->flows);
	map_init(&f->runs);
	idem_init(&f->idem);
	map_init(&f->events);
	f->events_head = f->events_tail = NULL;
	f->n_events = 0;
	f->by_event = f->by_upstream = NULL;
	f->trigger_index_stale = true;
	f->run_list = NULL;
	f->n_runs = f->cap_runs = 0;
	f->run_lo = 1;
	f->run_empty = 0;
	f->view_seqs = NULL; /* the kept state's lists stay with it */
	f->view_flows = NULL;
	f->n_view_seqs = f->cap_view_seqs = 0;
	f->n_view_flows = f->cap_view_flows = 0;
	f->nodes = NULL;
	f->n_nodes = 0;
	f->ready_head = f->ready_tail = NULL;
	f->n_ready = 0;
	f->waiting = NULL;
	f->settled_head = f->settled_tail = NULL;
	f->n_settled = 0;
	f->next_seq = (uint64_t)json_integer_value(json_object_get(root, "next_seq"));
	f->applied_index = (uint64_t)json_integer_value(json_object_get(root, "index"));
	if (restore_flows(f, json_object_get(root, "flows")) != 0)
		goto fail;
	json_array_foreach(json_object_get(root, "nodes"), i, j)
	{
		struct fsm_node *arr = realloc(f->nodes, (f->n_nodes + 1) * sizeof *arr);
		if (arr == NULL)
			goto fail;
		f->nodes = arr;
		arr[f->n_nodes].id = (uint64_t)json_integer_value(json_object_get(j, "id"));
		arr[f->n_nodes].boot = (uint64_t)json_integer_value(json_object_get(j, "boot"));
		arr[f->n_nodes].capacity = (unsigned)json_integer_value(json_object_get(j, "cap"));
		arr[f->n_nodes].live = json_is_true(json_object_get(j, "live"));
		arr[f->n_nodes].removed = json_is_true(json_object_get(j, "removed"));
		snprintf(arr[f->n_nodes].api_address,
			 sizeof arr[f->n_nodes].api_address, "%s",
			 json_string_value(json_object_get(j, "api"))
				 ? json_string_value(json_object_get(j, "api"))
				 : "");
		arr[f->n_nodes].running = 0;
		f->n_nodes++;
	}
	json_array_foreach(json_object_get(root, "runs"), i, j)
	{
		if (restore_run(f, j) != 0)
			goto fail;
	}
	json_array_foreach(json_object_get(root, "settled"), i, j)
	{
		uint64_t seq = (uint64_t)json_integer_value(j);
		if (fsm_run_at(f, seq) == NULL)
			goto fail;
		fsm__settled_push(f, fsm_run_at(f, seq));
	}
	for (uint64_t seq = f->run_lo; seq <= f->n_runs; seq++)
		if (fsm_run_at(f, seq) != NULL && !fsm_run_at(f, seq)->settled)
			fsm_run_at(f, seq)->flow->active++;
	if (events_restore(f, json_object_get(root, "events")) != 0)
		goto fail;
	if (restore_keys(f, root) != 0)
		goto fail;
	f->retain = (uint64_t)json_integer_value(json_object_get(root, "retain"));
	f->idem_max = (uint64_t)json_integer_value(json_object_get(root, "keys_max"));
	f->idem_ttl_ms = json_integer_value(json_object_get(root, "key_ttl_ms"));
	json_array_foreach(json_object_get(root, "ready"), i, j)
	{
		uint64_t seq = (uint64_t)json_integer_value(json_array_get(j, 0));
		size_t idx = (size_t)json_integer_value(json_array_get(j, 1));
		struct fsm_run *r;
		r = fsm_run_at(f, seq);
		if (r == NULL || idx >= r->spec->n_steps)
			goto fail;
		fsm__ready_push(f, &r->steps[idx]);
	}
	json_decref(root);
	{
		struct fsm fresh = *f;
		*f = backup;
		fsm__state_clear(f); /* the view copies the new state whole */
		free(fresh.view_flows);
		free(fresh.view_seqs);
		/* Rows not yet taken describe the replaced state; their runs
		 * are gone (callers take the records before restoring). */
		for (size_t k = 0; k < f->n_dirty; k++)
			f->dirty[k] = NULL;
		f->n_dirty = 0;
		f->pending_history = false;
		json_array_clear(f->pending);
		f->rows.n = 0;
		f->flows = fresh.flows;
		f->runs = fresh.runs;
		f->idem = fresh.idem;
		f->events = fresh.events;
		f->events_head = fresh.events_head;
		f->events_tail = fresh.events_tail;
		f->n_events = fresh.n_events;
		f->by_event = fresh.by_event;
		f->by_upstream = fresh.by_upstream;
		f->trigger_index_stale = true;
		f->run_list = fresh.run_list;
		f->run_lo = fresh.run_lo;
		f->run_empty = fresh.run_empty;
		f->n_runs = fresh.n_runs;
		f->cap_runs = fresh.cap_runs;
		f->idem_max = fresh.idem_max;
		f->idem_ttl_ms = fresh.idem_ttl_ms;
		f->nodes = fresh.nodes;
		f->n_nodes = fresh.n_nodes;
		f->ready_head = fresh.ready_head;
		f->ready_tail = fresh.ready_tail;
		f->n_ready = fresh.n_ready;
		f->waiting = fresh.waiting;
		f->settled_head = fresh.settled_head;
		f->settled_tail = fresh.settled_tail;
		f->n_settled = fresh.n_settled;
		f->retain = fresh.retain;
		f->next_seq = fresh.next_seq;
		f->applied_index = fresh.applied_index;
	}
	return 0;
fail:
	log_error("fsm: restore: inconsistent snapshot");
	json_decref(root);
	fsm__state_clear(f);
	free(f->view_flows);
	free(f->view_seqs);
	{
		struct fsm_hooks h = f->hooks;
		*f = backup;
		f->hooks = h;
	}
	return -1;
}
