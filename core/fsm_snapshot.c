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
 * Failure modes. A snapshot is input like a command: it comes from disk or
 * from a peer, and a forged or corrupt one must not crash the node or
 * plant a state that crashes it later. Restore checks every field before
 * it uses it, as fsm_check.c checks every field of a command: its type;
 * its range (enums in their enum, times within years 1970..9999, counts
 * and ids within what apply can make, strings within their bounds); and
 * how it refers to the rest (a run's flow and version, a run id that is
 * its seq's, runs in seq order below next_seq, a window of runs no wider
 * than SNAP_WINDOW_MAX, an attempt on a known node, a settled run that
 * ended with nothing running, every ready step once in the ready FIFO, a
 * step's status agreeing with its run, its attempts and its dependencies,
 * one schedule state per schedule of the current version). A snapshot
 * that does not parse or fails a check leaves the state unchanged and
 * returns -1, logging the first field refused: the new state is built
 * beside the old, and swapped in only when complete. The rows not yet
 * taken when a restore succeeds describe the replaced state and are
 * dropped (callers take them first). fuzz/fuzz_fsm_restore.c feeds it
 * mutated snapshots and drives what it accepts; fuzz/fuzz_fsm_apply.c
 * checks that every state apply reaches restores to the same bytes.
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

/* A string of the state, or null. A text that is not UTF-8 (a reason
 * cut inside a character) is written with U+FFFD in place of the bad
 * bytes: jansson refuses it, and a field left out would be a run or an
 * attempt left out of the snapshot. */
static json_t *jstr_or_null(const char *s)
{
	json_t *j;
	char *clean;

	if (s == NULL)
		return json_null();
	if ((j = json_string(s)) != NULL)
		return j;
	clean = flowd_utf8_sanitize(s, strlen(s));
	j = clean != NULL ? json_string(clean) : NULL;
	free(clean);
	return j;
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

/* A run's snapshot, or NULL (out of memory): never a run with a step or
 * an attempt left out. */
static json_t *snap_run(const struct fsm_run *r)
{
	json_t *steps = json_array();

	for (size_t i = 0; steps != NULL && i < r->spec->n_steps; i++) {
		const struct fsm_step *s = &r->steps[i];
		json_t *atts = json_array();

		for (unsigned k = 0; atts != NULL && k < s->n_attempts; k++)
			if (json_array_append_new(
				    atts, snap_attempt(&s->attempts[k])) != 0) {
				json_decref(atts);
				atts = NULL;
			}
		/* "o" steals atts, also when the pack fails */
		json_t *js = atts == NULL ? NULL
			: json_pack("{s:i, s:i, s:I, s:I, s:I, s:o}", "st",
				    (int)s->status, "deps", (int)s->deps_left,
				    "due", (json_int_t)s->due_ms, "t0",
				    (json_int_t)s->started_ms, "t1",
				    (json_int_t)s->finished_ms, "att", atts);
		/* the life cycle's, only when set (docs/lifecycle.md) */
		if (js != NULL && s->attempt_base > 0)
			json_object_set_new(js, "base",
					    json_integer(s->attempt_base));
		if (js != NULL && s->status == FSM_STEP_REUSED)
			json_object_set_new(
				js, "ru",
				json_pack("[I, i]", (json_int_t)s->reused_seq,
					  (int)s->reused_attempt));
		if (js == NULL || json_array_append_new(steps, js) != 0) {
			json_decref(steps);
			steps = NULL;
		}
	}
	if (steps == NULL)
		return NULL;
	json_t *j = json_pack("{s:s, s:I, s:s, s:i, s:O, s:o, s:i, s:o, s:I, s:I, s:I, s:o, s:O?}",
			 "id", r->id, "seq", (json_int_t)r->seq, "flow",
			 r->flow->name, "version", (int)r->version, "params",
			 r->params, "key", jstr_or_null(r->idempotency_key),
			 "st", (int)r->status, "why", jstr_or_null(r->reason),
			 "t0", (json_int_t)r->created_ms, "t1",
			 (json_int_t)r->started_ms, "t2",
			 (json_int_t)r->finished_ms, "steps", steps, "trig",
			 r->trigger);
	if (j == NULL)
		return NULL;
	if (r->tags != NULL)
		json_object_set(j, "tags", r->tags);
	if (r->origin_id != NULL)
		json_object_set_new(j, "origin", json_string(r->origin_id));
	if (r->redrive_count > 0)
		json_object_set_new(j, "redrives",
				    json_integer(r->redrive_count));
	if (r->redrive_key != NULL)
		json_object_set_new(j, "rkey", json_string(r->redrive_key));
	return j;
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
			nodes, json_pack("{s:I, s:I, s:I, s:b, s:s, s:b}", "id",
					 (json_int_t)f->nodes[i].id, "boot",
					 (json_int_t)f->nodes[i].boot, "cap",
					 (json_int_t)f->nodes[i].capacity,
					 "live", f->nodes[i].live, "api",
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
 *
 * Every field is checked before it is used, as fsm_check.c checks every
 * field of a command: its type, its range (the bounds below, the same as
 * a command's where a command sets it), and how it refers to the rest
 * (a run's flow and version, a ready step of a run in memory, an attempt
 * on a known node). The first field refused names itself in the log and
 * fails the restore. Fields an earlier format lacks may be absent; a
 * field present is checked whatever the format.
 */

#define SNAP_TS_MAX INT64_C(253402300799999) /* 9999-12-31T23:59:59.999Z */
/* A retry's due time: a command's time plus the longest backoff apply
 * allows (permissive limits: 2^30 s). */
#define SNAP_DUE_MAX (SNAP_TS_MAX + (INT64_C(1) << 30) * 1000)
/* The bounds of core/fsm_check.c (as of its review, d732ce2) where a
 * command sets the field: when one moves, its twin here moves too, or
 * apply makes states that restore refuses. */
#define SNAP_NAME_MAX 4096       /* names, event ids: fsm_check.c's NAME */
#define SNAP_KEY_MAX (16 << 20)  /* an idempotency key */
#define SNAP_SCHED_KEY_MAX 65536 /* a schedule's identity */
#define SNAP_TEXT_MAX 65536      /* reasons */
#define SNAP_API_MAX 63          /* a node's API address */
#define SNAP_CAPACITY_MAX UINT32_MAX
#define SNAP_TTL_MAX (INT64_C(1000) * UINT32_MAX)
/* The runs in memory span at most this many seqs (the oldest still in
 * memory to the newest): the run index holds a pointer per seq, 512 MiB
 * at this bound. A wider window is refused rather than allocated. */
#define SNAP_WINDOW_MAX (UINT64_C(1) << 26)

/* The restore under way: the first field refused, for the log. */
struct rctx {
	struct fsm *f;
	const char *bad;
	uint64_t last_seq; /* of the run restored last */
};

static int refuse(struct rctx *x, const char *what)
{
	if (x->bad == NULL)
		x->bad = what;
	return -1;
}

/* An integer in [min, max]; an absent one is `dflt` if dflt_ok. */
static int int_in(struct rctx *x, const json_t *obj, const char *key,
		  int64_t min, int64_t max, bool dflt_ok, int64_t dflt,
		  int64_t *out, const char *what)
{
	const json_t *v = json_object_get(obj, key);

	if (v == NULL && dflt_ok) {
		*out = dflt;
		return 0;
	}
	if (!json_is_integer(v) || json_integer_value(v) < min ||
	    json_integer_value(v) > max)
		return refuse(x, what);
	*out = json_integer_value(v);
	return 0;
}

static int int_at(struct rctx *x, const json_t *arr, size_t i, int64_t min,
		  int64_t max, int64_t *out, const char *what)
{
	const json_t *v = json_array_get(arr, i);

	if (!json_is_integer(v) || json_integer_value(v) < min ||
	    json_integer_value(v) > max)
		return refuse(x, what);
	*out = json_integer_value(v);
	return 0;
}

static int time_in(struct rctx *x, const json_t *obj, const char *key,
		   int64_t *out, const char *what)
{
	return int_in(x, obj, key, 0, SNAP_TS_MAX, false, 0, out, what);
}

/* A string of min..max bytes without NUL; absent or null is NULL if
 * null_ok. */
static int str_of(struct rctx *x, const json_t *v, size_t min, size_t max,
		  bool null_ok, const char **out, const char *what)
{
	size_t n;

	*out = NULL;
	if ((v == NULL || json_is_null(v)) && null_ok)
		return 0;
	if (!json_is_string(v))
		return refuse(x, what);
	n = json_string_length(v);
	if (n < min || n > max || strlen(json_string_value(v)) != n)
		return refuse(x, what);
	*out = json_string_value(v);
	return 0;
}

static int str_in(struct rctx *x, const json_t *obj, const char *key,
		  size_t min, size_t max, bool null_ok, const char **out,
		  const char *what)
{
	return str_of(x, json_object_get(obj, key), min, max, null_ok, out,
		      what);
}

/* A boolean; absent is false if absent_ok. */
static int bool_in(struct rctx *x, const json_t *obj, const char *key,
		   bool absent_ok, bool *out, const char *what)
{
	const json_t *v = json_object_get(obj, key);

	if (v == NULL && absent_ok) {
		*out = false;
		return 0;
	}
	if (!json_is_boolean(v))
		return refuse(x, what);
	*out = json_is_true(v);
	return 0;
}

/* An array (borrowed); absent is NULL (no items) if absent_ok. */
static int arr_in(struct rctx *x, const json_t *obj, const char *key,
		  bool absent_ok, json_t **out, const char *what)
{
	json_t *v = json_object_get(obj, key);

	*out = v;
	if (v == NULL && absent_ok)
		return 0;
	return json_is_array(v) ? 0 : refuse(x, what);
}

static char *dup_or_null(const char *s)
{
	char *d = s != NULL ? strdup(s) : NULL;

	if (s != NULL && d == NULL)
		abort(); /* as apply: out of memory is not a bad snapshot */
	return d;
}

/* One schedule's state: its identity, cursor, counters and last fires
 * (oldest first, at most FSM_FIRES_KEPT). */
static int sched_restore(struct rctx *x, struct fsm_schedule_state *st,
			 const json_t *js)
{
	json_t *counts, *last, *jr;
	const char *key;
	int64_t v;
	size_t k;

	if (!json_is_object(js) ||
	    str_in(x, js, "key", 1, SNAP_SCHED_KEY_MAX, false, &key,
		   "flows[].trig.sched[].key") != 0)
		return refuse(x, "flows[].trig.sched[]");
	st->key = dup_or_null(key);
	if (time_in(x, js, "cursor", &st->cursor,
		    "flows[].trig.sched[].cursor") != 0 ||
	    arr_in(x, js, "counts", false, &counts,
		   "flows[].trig.sched[].counts") != 0 ||
	    arr_in(x, js, "last", false, &last,
		   "flows[].trig.sched[].last") != 0)
		return -1;
	if (json_array_size(counts) != FSM_FIRE_OUTCOMES ||
	    json_array_size(last) > FSM_FIRES_KEPT)
		return refuse(x, "flows[].trig.sched[].counts/last");
	/* uint64 counters, written as json_int_t: past 2^63 (a missed
	 * count can be that large) they read negative */
	for (size_t o = 0; o < FSM_FIRE_OUTCOMES; o++) {
		if (int_at(x, counts, o, INT64_MIN, INT64_MAX, &v,
			   "flows[].trig.sched[].counts[]") != 0)
			return -1;
		st->counts[o] = (uint64_t)v;
	}
	json_array_foreach(last, k, jr) {
		struct fsm_fire *r = &st->last[st->head];
		int64_t nominal, at, o, count, seq, why;

		if (json_array_size(jr) != 6 ||
		    int_at(x, jr, 0, 0, SNAP_TS_MAX, &nominal,
			   "fire.nominal") ||
		    int_at(x, jr, 1, 0, SNAP_TS_MAX, &at, "fire.at") ||
		    int_at(x, jr, 2, 0, FSM_FIRE_OUTCOMES - 1, &o,
			   "fire.outcome") ||
		    int_at(x, jr, 3, 0, UINT32_MAX, &count, "fire.count") ||
		    int_at(x, jr, 4, 0, (int64_t)x->f->next_seq - 1, &seq,
			   "fire.run_seq") ||
		    int_at(x, jr, 5, 0, FSM_WHY_UNDEPLOYED, &why,
			   "fire.reason"))
			return refuse(x, "flows[].trig.sched[].last[]");
		r->nominal = nominal;
		r->at_ms = at;
		r->outcome = (uint8_t)o;
		r->count = (uint32_t)count;
		r->run_seq = (uint64_t)seq;
		r->reason = (uint8_t)why;
		st->head = (st->head + 1) % FSM_FIRES_KEPT;
		st->n_last++;
	}
	return 0;
}

/* An all-of trigger's collection: {event name: {"id", "payload", "ts"}}. */
static int collect_ok(struct rctx *x, const json_t *col)
{
	const char *name, *id;
	json_t *e;
	int64_t ts;

	if (!json_is_object(col))
		return refuse(x, "flows[].trig.collect[]");
	json_object_foreach((json_t *)col, name, e) {
		if (!json_is_object(e) ||
		    str_in(x, e, "id", 1, SNAP_NAME_MAX, false, &id,
			   "flows[].trig.collect[].id") != 0 ||
		    time_in(x, e, "ts", &ts,
			    "flows[].trig.collect[].ts") != 0 ||
		    json_object_get(e, "payload") == NULL)
			return refuse(x, "flows[].trig.collect[]");
	}
	return 0;
}

/* A flow's trigger state: pause, schedule states (as many as the current
 * version has schedules), all-of collections, the overlap buffer. */
static int trig_restore_flow(struct rctx *x, struct fsm_flow *fl,
			     const json_t *j)
{
	const struct flow_spec *cur =
		fl->current ? fl->versions[fl->current - 1].spec : NULL;
	json_t *sched, *collect, *buf, *js, *jb;
	size_t i;

	if (j == NULL) {
		/* a snapshot from before triggers: its specs had none */
		if (cur != NULL && cur->n_schedules > 0)
			return refuse(x, "flows[].trig");
		return 0;
	}
	if (!json_is_object(j) ||
	    bool_in(x, j, "paused", false, &fl->paused,
		    "flows[].trig.paused") != 0 ||
	    arr_in(x, j, "sched", false, &sched, "flows[].trig.sched") != 0 ||
	    arr_in(x, j, "buf", false, &buf, "flows[].trig.buf") != 0)
		return refuse(x, "flows[].trig");
	/* an undeployed flow keeps the states of its last version */
	if (cur != NULL && json_array_size(sched) != cur->n_schedules)
		return refuse(x, "flows[].trig.sched (not one per schedule)");
	fl->sched = calloc(json_array_size(sched) + 1, sizeof *fl->sched);
	if (fl->sched == NULL)
		abort();
	json_array_foreach(sched, i, js) {
		/* counted first: fsm__flow_free frees what is set */
		fl->n_sched = (unsigned)i + 1;
		if (sched_restore(x, &fl->sched[i], js) != 0)
			return -1;
	}
	collect = json_object_get(j, "collect");
	if (collect != NULL && !json_is_null(collect)) {
		json_t *col;

		if (!json_is_array(collect))
			return refuse(x, "flows[].trig.collect");
		json_array_foreach(collect, i, col)
			if (collect_ok(x, col) != 0)
				return -1;
		fl->collect = json_deep_copy(collect);
		if (fl->collect == NULL)
			abort();
	}
	json_array_foreach(buf, i, jb) {
		json_t *params = json_object_get(jb, "params");
		json_t *trigger = json_object_get(jb, "trigger");
		const char *sk;

		if (!json_is_object(jb) || !json_is_object(trigger) ||
		    (params != NULL && !json_is_null(params) &&
		     !json_is_object(params)) ||
		    str_in(x, jb, "sched_key", 1, SNAP_SCHED_KEY_MAX, true, &sk,
			   "flows[].trig.buf[].sched_key") != 0)
			return refuse(x, "flows[].trig.buf[]");
		fsm__buffer_push(fl, json_is_null(params) ? NULL : params,
				 json_incref(trigger), sk);
	}
	return 0;
}

/* One version: its time, and its spec when still in memory ("text" since
 * triggers; "spec", an object, before; neither once it left memory). */
static int version_restore(struct rctx *x, struct fsm_flow_version *v,
			   const json_t *jv, unsigned n)
{
	struct flowd_error err;
	const char *text;
	json_t *doc;
	int rc = 0;

	if (!json_is_object(jv) ||
	    time_in(x, jv, "t", &v->created_ms, "flows[].versions[].t") != 0 ||
	    str_in(x, jv, "text", 2, SIZE_MAX, true, &text,
		   "flows[].versions[].text") != 0)
		return refuse(x, "flows[].versions[]");
	doc = text ? json_loads(text, JSON_REJECT_DUPLICATES, NULL)
		   : json_incref(json_object_get(jv, "spec"));
	if (text != NULL && doc == NULL)
		return refuse(x, "flows[].versions[].text (not JSON)");
	if (doc != NULL && !json_is_null(doc))
		rc = spec_parse_ex(doc, &x->f->limits, SPEC_PARSE_APPLY,
				   &v->spec, &err);
	json_decref(doc);
	if (rc != 0)
		return refuse(x, "flows[].versions[] (not a valid spec)");
	if (v->spec != NULL)
		spec_drop_doc(v->spec);
	v->version = n;
	v->index = x->f->applied_index;
	return 0;
}

static int restore_flows(struct rctx *x, const json_t *flows)
{
	struct fsm *f = x->f;
	size_t i, k;
	json_t *jf, *jv, *vers;

	json_array_foreach(flows, i, jf) {
		const char *name;
		struct fsm_flow *fl;
		int64_t cur;

		if (!json_is_object(jf) ||
		    str_in(x, jf, "name", 1, SNAP_NAME_MAX, false, &name,
			   "flows[].name") != 0 ||
		    !spec_flow_key_valid(name) ||
		    map_get(&f->flows, name) != NULL)
			return refuse(x, "flows[].name");
		if (arr_in(x, jf, "versions", false, &vers,
			   "flows[].versions") != 0 ||
		    json_array_size(vers) == 0 ||
		    json_array_size(vers) > UINT32_MAX / 2)
			return refuse(x, "flows[].versions");
		fl = calloc(1, sizeof *fl);
		if (fl == NULL || (fl->name = strdup(name)) == NULL ||
		    (fl->versions = calloc(json_array_size(vers),
					   sizeof *fl->versions)) == NULL ||
		    map_put(&f->flows, name, fl) != 0)
			abort();
		/* from here the flow is in the state: a failure frees it with
		 * the rest */
		if (int_in(x, jf, "current", 0, (int64_t)json_array_size(vers),
			   false, 0, &cur, "flows[].current") != 0 ||
		    time_in(x, jf, "t0", &fl->created_ms, "flows[].t0") != 0 ||
		    time_in(x, jf, "t1", &fl->updated_ms, "flows[].t1") != 0)
			return -1;
		fl->current = (unsigned)cur;
		json_array_foreach(vers, k, jv) {
			if (version_restore(x, &fl->versions[k], jv,
					    (unsigned)k + 1) != 0) {
				fl->n_versions = (unsigned)k + 1;
				return -1;
			}
			fl->n_versions = (unsigned)k + 1;
		}
		/* the newest version's spec is always kept, and so is the
		 * current one's */
		if (fl->versions[fl->n_versions - 1].spec == NULL ||
		    (fl->current > 0 &&
		     fl->versions[fl->current - 1].spec == NULL))
			return refuse(x, "flows[].versions (spec not kept)");
		if (trig_restore_flow(x, fl, json_object_get(jf, "trig")) != 0)
			return -1;
		fsm__told_sync_flow(fl);
	}
	return 0;
}

/* Nodes, sorted by id (placement breaks ties by that order). */
static int restore_nodes(struct rctx *x, const json_t *nodes)
{
	struct fsm *f = x->f;
	size_t i;
	json_t *j;

	f->nodes = calloc(json_array_size(nodes) + 1, sizeof *f->nodes);
	if (f->nodes == NULL)
		abort();
	json_array_foreach(nodes, i, j) {
		struct fsm_node *n = &f->nodes[i];
		int64_t id, boot, cap;
		const char *api;

		if (!json_is_object(j) ||
		    int_in(x, j, "id", 1, INT64_MAX, false, 0, &id,
			   "nodes[].id") != 0 ||
		    int_in(x, j, "boot", 0, INT64_MAX, false, 0, &boot,
			   "nodes[].boot") != 0 ||
		    int_in(x, j, "cap", 0, SNAP_CAPACITY_MAX, false, 0, &cap,
			   "nodes[].cap") != 0 ||
		    bool_in(x, j, "live", false, &n->live,
			    "nodes[].live") != 0 ||
		    bool_in(x, j, "removed", true, &n->removed,
			    "nodes[].removed") != 0 ||
		    str_in(x, j, "api", 0, SNAP_API_MAX, true, &api,
			   "nodes[].api") != 0)
			return refuse(x, "nodes[]");
		if (i > 0 && (uint64_t)id <= f->nodes[i - 1].id)
			return refuse(x, "nodes[].id (not sorted, or twice)");
		n->id = (uint64_t)id;
		n->boot = (uint64_t)boot;
		n->capacity = (unsigned)cap;
		snprintf(n->api_address, sizeof n->api_address, "%s",
			 api ? api : "");
		f->n_nodes = (unsigned)i + 1;
	}
	return 0;
}

static int attempt_restore(struct rctx *x, struct fsm_attempt *a,
			   const json_t *ja, unsigned n)
{
	int64_t an, node, boot, st, code, sig;
	const char *why;

	if (!json_is_object(ja) ||
	    int_in(x, ja, "n", n, n, false, 0, &an,
		   "runs[].steps[].att[].n") != 0 ||
	    int_in(x, ja, "node", 1, INT64_MAX, false, 0, &node,
		   "runs[].steps[].att[].node") != 0 ||
	    int_in(x, ja, "boot", 0, INT64_MAX, false, 0, &boot,
		   "runs[].steps[].att[].boot") != 0 ||
	    int_in(x, ja, "st", FSM_ATTEMPT_RUNNING, FSM_ATTEMPT_CANCELLED,
		   false, 0, &st, "runs[].steps[].att[].st") != 0 ||
	    bool_in(x, ja, "stop", false, &a->stopping,
		    "runs[].steps[].att[].stop") != 0 ||
	    time_in(x, ja, "t0", &a->started_ms,
		    "runs[].steps[].att[].t0") != 0 ||
	    time_in(x, ja, "t1", &a->finished_ms,
		    "runs[].steps[].att[].t1") != 0 ||
	    int_in(x, ja, "exit", INT32_MIN, INT32_MAX, false, 0, &code,
		   "runs[].steps[].att[].exit") != 0 ||
	    int_in(x, ja, "sig", 0, 255, false, 0, &sig,
		   "runs[].steps[].att[].sig") != 0 ||
	    str_in(x, ja, "why", 0, SNAP_TEXT_MAX, true, &why,
		   "runs[].steps[].att[].why") != 0)
		return refuse(x, "runs[].steps[].att[]");
	if (fsm__node_find(x->f, (uint64_t)node) == NULL)
		return refuse(x, "runs[].steps[].att[].node (no such node)");
	a->n = n;
	a->node = (uint64_t)node;
	a->boot = (uint64_t)boot;
	a->status = (enum fsm_attempt_status)st;
	a->exit_code = (int)code;
	a->term_signal = (int)sig;
	a->reason = dup_or_null(why);
	return 0;
}

/* A run's life cycle: user tags (sorted, no duplicates, each a tag), the
 * run it resumes (an earlier one), redrives and the last one's key. */
static int run_restore_lifecycle(struct rctx *x, struct fsm_run *r,
				 const json_t *jr)
{
	json_t *tags = json_object_get(jr, "tags"), *t, *norm;
	const char *origin, *rkey;
	int64_t n;
	size_t i;

	if (tags != NULL) {
		if (!json_is_array(tags) || json_array_size(tags) > 100000)
			return refuse(x, "runs[].tags");
		json_array_foreach(tags, i, t)
			if (!json_is_string(t) ||
			    spec_tag_check(json_string_value(t), 65536) != NULL)
				return refuse(x, "runs[].tags[]");
		norm = spec_tags_normalize(tags);
		if (norm == NULL || !json_equal(norm, tags)) {
			json_decref(norm);
			return refuse(x, "runs[].tags (not sorted once each)");
		}
		json_decref(norm);
		r->tags = json_incref(tags);
	}
	if (str_in(x, jr, "origin", 1, 31, true, &origin, "runs[].origin") ||
	    int_in(x, jr, "redrives", 0, UINT32_MAX, true, 0, &n,
		   "runs[].redrives") != 0 ||
	    str_in(x, jr, "rkey", 1, SNAP_KEY_MAX, true, &rkey,
		   "runs[].rkey") != 0)
		return -1;
	if (origin != NULL) {
		uint64_t seq = fsm_run_seq(origin);

		if (seq == 0 || seq >= r->seq)
			return refuse(x, "runs[].origin (not an earlier run)");
		r->origin_id = dup_or_null(origin);
	}
	r->redrive_count = (unsigned)n;
	r->redrive_key = dup_or_null(rkey);
	return 0;
}

/* A step's life cycle: attempts before the last redrive, and what a
 * reused step took (an earlier run's attempt). */
static int step_restore_lifecycle(struct rctx *x, const struct fsm_run *r,
				  struct fsm_step *s, const json_t *js)
{
	json_t *ru = json_object_get(js, "ru");
	int64_t base;

	if (int_in(x, js, "base", 0, UINT32_MAX / 2, true, 0, &base,
		   "runs[].steps[].base") != 0)
		return -1;
	s->attempt_base = (unsigned)base;
	if ((ru != NULL) != (s->status == FSM_STEP_REUSED))
		return refuse(x, "runs[].steps[].ru");
	if (ru == NULL)
		return 0;
	if (!json_is_array(ru) || json_array_size(ru) != 2 ||
	    !json_is_integer(json_array_get(ru, 0)) ||
	    !json_is_integer(json_array_get(ru, 1)) ||
	    json_integer_value(json_array_get(ru, 0)) < 1 ||
	    (uint64_t)json_integer_value(json_array_get(ru, 0)) >= r->seq ||
	    json_integer_value(json_array_get(ru, 1)) < 1 ||
	    json_integer_value(json_array_get(ru, 1)) > INT32_MAX)
		return refuse(x, "runs[].steps[].ru");
	s->reused_seq = (uint64_t)json_integer_value(json_array_get(ru, 0));
	s->reused_attempt = (unsigned)json_integer_value(json_array_get(ru, 1));
	return 0;
}

/* One step: its status, dependencies left, times and attempts; checked
 * against its run (a run that ended has no step waiting or running). */
static int step_restore(struct rctx *x, struct fsm_run *r,
			struct fsm_step *s, const json_t *js)
{
	const struct spec_step *ss = &r->spec->steps[s->index];
	struct fsm_attempt *last;
	int64_t st, deps;
	json_t *atts, *ja;
	size_t k;

	if (!json_is_object(js) ||
	    int_in(x, js, "st", FSM_STEP_PENDING, FSM_STEP_REUSED, false, 0,
		   &st, "runs[].steps[].st") != 0 ||
	    int_in(x, js, "deps", 0, (int64_t)ss->n_deps, false, 0, &deps,
		   "runs[].steps[].deps") != 0 ||
	    int_in(x, js, "due", 0, SNAP_DUE_MAX, false, 0, &s->due_ms,
		   "runs[].steps[].due") != 0 ||
	    time_in(x, js, "t0", &s->started_ms, "runs[].steps[].t0") != 0 ||
	    time_in(x, js, "t1", &s->finished_ms, "runs[].steps[].t1") != 0 ||
	    arr_in(x, js, "att", false, &atts, "runs[].steps[].att") != 0 ||
	    json_array_size(atts) > UINT32_MAX / 2)
		return refuse(x, "runs[].steps[]");
	s->status = (enum fsm_step_status)st;
	s->deps_left = (unsigned)deps;
	if (step_restore_lifecycle(x, r, s, js) != 0)
		return -1;
	s->attempts = calloc(json_array_size(atts) + 1, sizeof *s->attempts);
	if (s->attempts == NULL)
		abort();
	json_array_foreach(atts, k, ja) {
		/* counted first: fsm__run_free frees what is set */
		s->n_attempts = (unsigned)k + 1;
		if (attempt_restore(x, &s->attempts[k], ja, (unsigned)k + 1))
			return -1;
	}
	/* Only the newest attempt may run; a running step has it running. */
	for (unsigned i = 0; i + 1 < s->n_attempts; i++)
		if (s->attempts[i].status == FSM_ATTEMPT_RUNNING)
			return refuse(x, "runs[].steps[].att (an older one "
					 "running)");
	/* A step runs while its newest attempt does; a run that ended
	 * cancels its running steps, whose attempts are being stopped. */
	last = s->n_attempts ? &s->attempts[s->n_attempts - 1] : NULL;
	if (s->status == FSM_STEP_RUNNING &&
	    (last == NULL || last->status != FSM_ATTEMPT_RUNNING ||
	     last->stopping))
		return refuse(x, "runs[].steps[].st (running, no running "
				 "attempt)");
	if (last != NULL && last->status == FSM_ATTEMPT_RUNNING &&
	    s->status != FSM_STEP_RUNNING &&
	    !(s->status == FSM_STEP_CANCELLED && last->stopping))
		return refuse(x, "runs[].steps[].st (not running, an attempt "
				 "running)");
	/* Only a step whose dependencies all succeeded was ever ready; a
	 * pending one never ran since the last redrive, and waits for some. */
	if (s->attempt_base > s->n_attempts)
		return refuse(x, "runs[].steps[].base");
	if (s->status == FSM_STEP_PENDING &&
	    (s->n_attempts > s->attempt_base || deps == 0))
		return refuse(x, "runs[].steps[].st (pending)");
	/* a reused step never ran in this run, and waits for nothing */
	if (s->status == FSM_STEP_REUSED &&
	    (s->n_attempts > 0 || deps != 0 || r->origin_id == NULL))
		return refuse(x, "runs[].steps[].st (reused)");
	if ((s->status == FSM_STEP_READY || s->status == FSM_STEP_RUNNING ||
	     s->status == FSM_STEP_RETRY_WAIT ||
	     s->status == FSM_STEP_SUCCEEDED || s->status == FSM_STEP_FAILED) &&
	    deps != 0)
		return refuse(x, "runs[].steps[].deps (ran, or ready, before "
				 "them)");
	/* a queued run has placed nothing yet */
	if (r->status == FSM_RUN_QUEUED &&
	    (s->n_attempts > 0 || (s->status != FSM_STEP_PENDING &&
				   s->status != FSM_STEP_READY &&
				   s->status != FSM_STEP_REUSED)))
		return refuse(x, "runs[].steps[] (in a queued run)");
	if (fsm__run_terminal(r) &&
	    (s->status == FSM_STEP_PENDING || s->status == FSM_STEP_READY ||
	     s->status == FSM_STEP_RUNNING ||
	     s->status == FSM_STEP_RETRY_WAIT))
		return refuse(x, "runs[].steps[].st (waiting in a run that "
				 "ended)");
	if (r->status == FSM_RUN_SUCCEEDED && !fsm__step_done(s))
		return refuse(x, "runs[].steps[].st (in a run that succeeded)");
	return 0;
}

static int restore_run(struct rctx *x, const json_t *jr)
{
	struct fsm *f = x->f;
	const char *flow, *id, *key, *why;
	struct fsm_flow *fl;
	struct fsm_run *r;
	int64_t seq, version, st;
	json_t *steps, *params, *trig, *js;
	char want[32];
	size_t i;

	if (!json_is_object(jr) ||
	    str_in(x, jr, "flow", 1, SNAP_NAME_MAX, false, &flow,
		   "runs[].flow") != 0 ||
	    (fl = map_get(&f->flows, flow)) == NULL)
		return refuse(x, "runs[].flow");
	/* in seq order, within the window, below next_seq */
	if (int_in(x, jr, "seq", (int64_t)x->last_seq + 1,
		   (int64_t)f->next_seq - 1, false, 0, &seq,
		   "runs[].seq") != 0 ||
	    (f->n_runs > 0 && (uint64_t)seq - f->run_lo >= SNAP_WINDOW_MAX))
		return refuse(x, "runs[].seq");
	snprintf(want, sizeof want, "r-%012" PRIu64, (uint64_t)seq);
	if (str_in(x, jr, "id", 1, sizeof want - 1, false, &id,
		   "runs[].id") != 0 ||
	    strcmp(id, want) != 0)
		return refuse(x, "runs[].id (not its seq's)");
	if (int_in(x, jr, "version", 1, fl->n_versions, false, 0, &version,
		   "runs[].version") != 0 ||
	    fl->versions[version - 1].spec == NULL)
		return refuse(x, "runs[].version");
	params = json_object_get(jr, "params");
	trig = json_object_get(jr, "trig");
	if (!json_is_object(params) ||
	    (trig != NULL && !json_is_null(trig) && !json_is_object(trig)) ||
	    str_in(x, jr, "key", 1, SNAP_KEY_MAX, true, &key, "runs[].key") ||
	    str_in(x, jr, "why", 0, SNAP_TEXT_MAX, true, &why, "runs[].why") ||
	    int_in(x, jr, "st", FSM_RUN_QUEUED, FSM_RUN_CANCELLED, false, 0,
		   &st, "runs[].st") != 0 ||
	    arr_in(x, jr, "steps", false, &steps, "runs[].steps") != 0)
		return refuse(x, "runs[]");
	r = fsm__run_new(f, fl, (unsigned)version, (uint64_t)seq);
	r->params = json_incref(params);
	r->idempotency_key = dup_or_null(key);
	r->status = (enum fsm_run_status)st;
	r->reason = dup_or_null(why);
	if (json_is_object(trig))
		r->trigger = json_incref(trig);
	r->end_seen = fsm__run_terminal(r);
	if (run_restore_lifecycle(x, r, jr) != 0)
		goto bad;
	if (time_in(x, jr, "t0", &r->created_ms, "runs[].t0") != 0 ||
	    time_in(x, jr, "t1", &r->started_ms, "runs[].t1") != 0 ||
	    time_in(x, jr, "t2", &r->finished_ms, "runs[].t2") != 0 ||
	    json_array_size(steps) != r->spec->n_steps)
		goto bad;
	json_array_foreach(steps, i, js) {
		if (step_restore(x, r, &r->steps[i], js) != 0)
			goto bad;
	}
	/* a dependency that succeeded was counted off (once per mention) */
	for (i = 0; i < r->spec->n_steps; i++) {
		if (r->steps[i].deps_left != fsm__deps_waiting(r, i)) {
			refuse(x, "runs[].steps[].deps (not its dependencies "
				  "left)");
			goto bad;
		}
	}
	/* the counters and the retry list, derived */
	for (i = 0; i < r->spec->n_steps; i++) {
		struct fsm_step *s = &r->steps[i];

		if (s->n_attempts > 0 &&
		    s->attempts[s->n_attempts - 1].status ==
			    FSM_ATTEMPT_RUNNING) {
			r->active_attempts++;
			fsm__node_find(f, s->attempts[s->n_attempts - 1].node)
				->running++;
		}
		if (s->status == FSM_STEP_RETRY_WAIT) {
			s->wait_next = f->waiting;
			f->waiting = s;
		}
	}
	fsm__told_sync(r);
	fsm__run_list_add(f, r);
	x->last_seq = r->seq;
	return 0;
bad:
	/* in no list yet */
	fl->versions[version - 1].runs--;
	fsm__run_free(r);
	return refuse(x, "runs[]");
}

/* "keys": [[flow "\n" key, seq, ms], ...] oldest first. Snapshots from
 * before the retention kept the keys of evicted runs in "idem" ([k, id])
 * and those of runs in memory with their runs: both come back, in seq
 * order, as made at the newest run's time (they then live one retention
 * more). */
static int key_put(struct rctx *x, const char *k, uint64_t seq, int64_t ts,
		   bool twice_ok)
{
	const char *nl = k != NULL ? strchr(k, '\n') : NULL;
	char flow[SNAP_NAME_MAX + 1]; /* a flow name is shorter */
	size_t fl;

	if (nl == NULL)
		return refuse(x, "keys[] (not flow \"\\n\" key)");
	fl = (size_t)(nl - k);
	if (fl == 0 || fl > SNAP_NAME_MAX || nl[1] == '\0' ||
	    strlen(nl + 1) > SNAP_KEY_MAX || seq == 0 ||
	    seq >= x->f->next_seq)
		return refuse(x, "keys[]");
	memcpy(flow, k, fl);
	flow[fl] = '\0';
	if (!twice_ok && idem_get(&x->f->idem, flow, nl + 1, NULL) != 0)
		return refuse(x, "keys[] (twice)");
	idem_put(&x->f->idem, flow, nl + 1, seq, ts);
	return 0;
}

static int seq_cmp(const void *a, const void *b)
{
	uint64_t x = json_integer_value(json_array_get(*(json_t *const *)a, 1));
	uint64_t y = json_integer_value(json_array_get(*(json_t *const *)b, 1));

	return x < y ? -1 : x > y;
}

static int restore_keys(struct rctx *x, const json_t *root)
{
	struct fsm *f = x->f;
	json_t *keys, *idem, *j, *old;
	json_t **v;
	int64_t newest = 0;
	size_t i, n = 0;
	int rc = 0;

	if (arr_in(x, root, "keys", true, &keys, "keys") != 0 ||
	    arr_in(x, root, "idem", true, &idem, "idem") != 0)
		return -1;
	if (keys != NULL) {
		json_array_foreach(keys, i, j) {
			const char *k;
			int64_t seq, ts;

			if (json_array_size(j) != 3 ||
			    str_of(x, json_array_get(j, 0), 3,
				   SNAP_NAME_MAX + 1 + SNAP_KEY_MAX, false, &k,
				   "keys[][0]") != 0 ||
			    int_at(x, j, 1, 1, INT64_MAX, &seq, "keys[][1]") ||
			    int_at(x, j, 2, 0, SNAP_TS_MAX, &ts, "keys[][2]") ||
			    key_put(x, k, (uint64_t)seq, ts, false) != 0)
				return refuse(x, "keys[]");
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
			json_array_append_new(old,
					      json_pack("[s, I]", k,
							(json_int_t)r->seq));
			free(k);
		}
	}
	json_array_foreach(idem, i, j) {
		const char *k, *id;
		char *end;
		unsigned long long seq;

		if (json_array_size(j) != 2 ||
		    str_of(x, json_array_get(j, 0), 3,
			   SNAP_NAME_MAX + 1 + SNAP_KEY_MAX, false, &k,
			   "idem[][0]") != 0 ||
		    str_of(x, json_array_get(j, 1), 3, 32, false, &id,
			   "idem[][1]") != 0 ||
		    strncmp(id, "r-", 2) != 0 ||
		    (seq = strtoull(id + 2, &end, 10)) == 0 || *end != '\0' ||
		    seq > INT64_MAX) {
			json_decref(old);
			return refuse(x, "idem[]");
		}
		json_array_append_new(old, json_pack("[s, I]", k,
						     (json_int_t)seq));
	}
	v = malloc((json_array_size(old) + 1) * sizeof *v);
	if (v == NULL)
		abort();
	json_array_foreach(old, i, j)
		v[n++] = j;
	qsort(v, n, sizeof *v, seq_cmp);
	for (i = 0; i < n && rc == 0; i++)
		rc = key_put(x, json_string_value(json_array_get(v[i], 0)),
			     (uint64_t)json_integer_value(
				     json_array_get(v[i], 1)),
			     newest, true);
	free(v);
	json_decref(old);
	return rc;
}

static int events_restore(struct rctx *x, const json_t *root)
{
	struct fsm *f = x->f;
	json_t *events, *e;
	size_t i;

	if (arr_in(x, root, "events", true, &events, "events") != 0)
		return -1;
	json_array_foreach(events, i, e) {
		const char *id;
		int64_t ts;

		if (json_array_size(e) != 3 ||
		    str_of(x, json_array_get(e, 0), 1, SNAP_NAME_MAX, false,
			   &id, "events[][0]") != 0 ||
		    int_at(x, e, 1, 0, SNAP_TS_MAX, &ts, "events[][1]") != 0 ||
		    !json_is_object(json_array_get(e, 2)))
			return refuse(x, "events[]");
		if (map_get(&f->events, id) != NULL)
			return refuse(x, "events[] (an id twice)");
		fsm__event_remember(f, id, ts, json_array_get(e, 2));
	}
	return 0;
}

/* The settled FIFO: runs in memory that ended with nothing running. */
static int restore_settled(struct rctx *x, const json_t *root)
{
	struct fsm *f = x->f;
	json_t *settled, *j;
	size_t i;

	if (arr_in(x, root, "settled", true, &settled, "settled") != 0)
		return -1;
	json_array_foreach(settled, i, j) {
		struct fsm_run *r = NULL;

		if (json_is_integer(j) && json_integer_value(j) > 0)
			r = fsm_run_at(f, (uint64_t)json_integer_value(j));

		if (r == NULL || r->settled || !fsm__run_terminal(r) ||
		    r->active_attempts > 0)
			return refuse(x, "settled[]");
		fsm__settled_push(f, r);
	}
	for (uint64_t seq = f->run_lo; seq <= f->n_runs; seq++)
		if (fsm_run_at(f, seq) != NULL && !fsm_run_at(f, seq)->settled)
			fsm_run_at(f, seq)->flow->active++;
	return 0;
}

/* The ready FIFO, in its order: every READY step once. */
static int restore_ready(struct rctx *x, const json_t *root)
{
	struct fsm *f = x->f;
	json_t *ready, *j;
	size_t i, n_ready = 0;

	if (arr_in(x, root, "ready", true, &ready, "ready") != 0)
		return -1;
	json_array_foreach(ready, i, j) {
		int64_t seq, idx;
		struct fsm_run *r;
		struct fsm_step *s;

		if (json_array_size(j) != 2 ||
		    int_at(x, j, 0, 1, INT64_MAX, &seq, "ready[][0]") != 0 ||
		    int_at(x, j, 1, 0, INT64_MAX, &idx, "ready[][1]") != 0 ||
		    (r = fsm_run_at(f, (uint64_t)seq)) == NULL ||
		    (uint64_t)idx >= r->spec->n_steps)
			return refuse(x, "ready[]");
		s = &r->steps[idx];
		if (s->status != FSM_STEP_READY || s->ready_next != NULL ||
		    s == f->ready_tail)
			return refuse(x, "ready[] (not a ready step, or "
					 "twice)");
		fsm__ready_push(f, s);
	}
	for (uint64_t seq = f->run_lo; seq <= f->n_runs; seq++) {
		struct fsm_run *r = fsm_run_at(f, seq);

		for (size_t k = 0; r != NULL && k < r->spec->n_steps; k++)
			n_ready += r->steps[k].status == FSM_STEP_READY;
	}
	if (n_ready != f->n_ready)
		return refuse(x, "ready (a ready step missing)");
	return 0;
}

/* Build the whole state from the document into x->f (emptied first). */
static int restore_state(struct rctx *x, const json_t *root)
{
	struct fsm *f = x->f;
	json_t *flows, *nodes, *runs, *j;
	int64_t v;
	size_t i;

	if (int_in(x, root, "next_seq", 1, INT64_MAX, false, 0, &v,
		   "next_seq") != 0)
		return -1;
	f->next_seq = (uint64_t)v;
	if (int_in(x, root, "index", 0, INT64_MAX, false, 0, &v, "index") != 0)
		return -1;
	f->applied_index = (uint64_t)v;
	if (int_in(x, root, "retain", 0, INT64_MAX, true, 0, &v, "retain") != 0)
		return -1;
	f->retain = (uint64_t)v;
	if (int_in(x, root, "keys_max", 0, INT64_MAX, true, 0, &v,
		   "keys_max") != 0)
		return -1;
	f->idem_max = (uint64_t)v;
	if (int_in(x, root, "key_ttl_ms", 0, SNAP_TTL_MAX, true, 0,
		   &f->idem_ttl_ms, "key_ttl_ms") != 0)
		return -1;
	if (arr_in(x, root, "flows", true, &flows, "flows") != 0 ||
	    arr_in(x, root, "nodes", true, &nodes, "nodes") != 0 ||
	    arr_in(x, root, "runs", true, &runs, "runs") != 0)
		return -1;
	if (restore_flows(x, flows) != 0 || restore_nodes(x, nodes) != 0)
		return -1;
	json_array_foreach(runs, i, j) {
		if (restore_run(x, j) != 0)
			return -1;
	}
	if (restore_settled(x, root) != 0 || events_restore(x, root) != 0 ||
	    restore_keys(x, root) != 0 || restore_ready(x, root) != 0)
		return -1;
	return 0;
}

int fsm_restore(struct fsm *f, const void *buf, size_t len)
{
	json_error_t jerr;
	json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	struct fsm backup = *f;
	struct rctx x = {.f = f};
	json_t *v;

	v = json_object_get(root, "v");
	if (root == NULL || !json_is_integer(v) || json_integer_value(v) != 1) {
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
	f->retain = 0;
	f->idem_max = 0;
	f->idem_ttl_ms = 0;
	if (restore_state(&x, root) != 0)
		goto fail;
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
	log_error("fsm: restore: bad snapshot: field %s", x.bad ? x.bad : "?");
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
