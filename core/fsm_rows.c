/* fsm_rows.c - how the state machine writes for PostgreSQL and the API: the
 * row images of every table (docs/schema.md), the names of statuses and
 * outcomes, times.
 *
 * DESIGN
 *
 * Rows are full images, not diffs: a run that changed in many entries
 * between two fsm_take_records() is written once, from the state as it is
 * then (the touched runs are in f->dirty, fsm_changes.c). Run, step,
 * attempt and fire rows are written straight as JSON text into f->rows,
 * the hot path (about 5x cheaper than jansson objects); the rarer flow,
 * version, paused, log and event rows are JSON objects in f->pending.
 * fsm_take_records() joins both into one array.
 *
 * Failure modes: out of memory while writing a row aborts (apply must not
 * fail half-way); a row a restore could not rebuild (a task's log, a fire,
 * an event, an evicted run, a version whose spec left memory) sets
 * f->pending_history, and the snapshot waits until PostgreSQL has it.
 *
 * Thread: the loop thread only (the names and fsm_time_json: any thread).
 */
#include "fsm_rows.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fsm_changes.h"

/* ------------------------------------------------------------------------
 * Names and times
 */

static const char *run_status_names[] = {"queued", "running", "succeeded",
					 "failed", "cancelled"};
static const char *step_status_names[] = {
	"pending",   "ready",  "running",   "retry_wait",
	"succeeded", "failed", "cancelled", "skipped", "reused"};
static const char *attempt_status_names[] = {"running", "succeeded", "failed",
					     "lost", "cancelled"};

const char *fsm_run_status_str(enum fsm_run_status s)
{
	return run_status_names[s];
}

int fsm_run_status_parse(const char *s)
{
	for (int i = 0; i < 5; i++)
		if (strcmp(s, run_status_names[i]) == 0)
			return i;
	return -1;
}

const char *fsm_step_status_str(enum fsm_step_status s)
{
	return step_status_names[s];
}

const char *fsm_attempt_status_str(enum fsm_attempt_status s)
{
	return attempt_status_names[s];
}

static const char *const outcome_names[] = {"fired", "skipped", "missed",
					    "buffered", "dropped"};

const char *fsm_fire_outcome_str(enum fsm_fire_outcome o)
{
	return outcome_names[o];
}

json_t *fsm_time_json(int64_t ms)
{
	char buf[96];
	struct tm tm;
	time_t s;

	if (ms == 0)
		return json_null();
	s = (time_t)(ms / 1000);
	gmtime_r(&s, &tm);
	snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
		 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		 tm.tm_min, tm.tm_sec, (int)(ms % 1000));
	return json_string(buf);
}

/* ------------------------------------------------------------------------
 * The text buffer
 */

int fsm__text_put(struct fsm_text *b, const char *s, size_t n)
{
	if (b->n + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		char *q;
		while (b->n + n + 1 > cap)
			cap *= 2;
		q = realloc(b->p, cap);
		if (q == NULL)
			return -1;
		b->p = q;
		b->cap = cap;
	}
	memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = '\0';
	return 0;
}

/* ------------------------------------------------------------------------
 * Row images written as JSON text: the same fields as the PostgreSQL record
 * formats (storage.h); apply must not fail, so out of memory aborts. Raw
 * text, a JSON string (or null), an integer, milliseconds (0 = null), any
 * JSON value (NULL = null). Each row is separated from the previous one by
 * a comma (ROWS_BEGIN).
 */

static void rows_put(struct fsm_text *b, const char *s, size_t n)
{
	if (fsm__text_put(b, s, n) != 0)
		abort();
}

#define ROWS_LIT(b, lit) rows_put((b), (lit), sizeof(lit) - 1)
#define ROWS_BEGIN(b, lit)                                                    \
	do {                                                                  \
		if ((b)->n > 0)                                               \
			ROWS_LIT((b), ",");                                   \
		ROWS_LIT((b), lit);                                           \
	} while (0)

static void rows_str(struct fsm_text *b, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)s;
	char *o;

	if (s == NULL) {
		ROWS_LIT(b, "null");
		return;
	}
	/* room for the worst case: every byte as \u00XX, and the quotes */
	if (b->cap - b->n < strlen(s) * 6 + 3) {
		size_t need = b->n + strlen(s) * 6 + 3;
		size_t cap = b->cap ? b->cap : 4096;
		char *q;

		while (cap < need)
			cap *= 2;
		if ((q = realloc(b->p, cap)) == NULL)
			abort();
		b->p = q;
		b->cap = cap;
	}
	o = b->p + b->n;
	*o++ = '"';
	for (; *p != '\0'; p++) {
		if (*p == '"' || *p == '\\') {
			*o++ = '\\';
			*o++ = (char)*p;
		} else if (*p < 0x20) {
			*o++ = '\\';
			*o++ = 'u';
			*o++ = '0';
			*o++ = '0';
			*o++ = hex[*p >> 4];
			*o++ = hex[*p & 15];
		} else {
			*o++ = (char)*p;
		}
	}
	*o++ = '"';
	*o = '\0';
	b->n = (size_t)(o - b->p);
}

static void rows_int(struct fsm_text *b, int64_t v)
{
	char buf[24], *e = buf + sizeof buf, *p = e;
	uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;

	do
		*--p = (char)('0' + u % 10);
	while ((u /= 10) != 0);
	if (v < 0)
		*--p = '-';
	rows_put(b, p, (size_t)(e - p));
}

static void rows_ms(struct fsm_text *b, int64_t ms)
{
	if (ms == 0)
		ROWS_LIT(b, "null");
	else
		rows_int(b, ms);
}

static void rows_json(struct fsm_text *b, const json_t *v)
{
	char *t;

	if (v == NULL) {
		ROWS_LIT(b, "null");
		return;
	}
	t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	if (t == NULL)
		abort();
	rows_put(b, t, strlen(t));
	free(t);
}

/* A run's life-cycle record (table runs: tags, origin_run_id,
 * redrive_count; table steps: origin_run_id, origin_attempt of reused
 * steps): its own record, so that plain runs keep the plain path. */
static void rows_meta(struct fsm_text *b, const struct fsm_run *r)
{
	char id[32];
	bool first = true;

	ROWS_LIT(b, ",{\"t\":\"run_meta\",\"id\":");
	rows_str(b, r->id);
	ROWS_LIT(b, ",\"tags\":");
	if (r->tags != NULL)
		rows_json(b, r->tags);
	else
		ROWS_LIT(b, "[]");
	ROWS_LIT(b, ",\"origin_run_id\":");
	rows_str(b, r->origin_id);
	ROWS_LIT(b, ",\"redrive_count\":");
	rows_int(b, r->redrive_count);
	ROWS_LIT(b, ",\"reused\":[");
	for (size_t k = 0; r->origin_id != NULL && k < r->spec->n_steps; k++) {
		const struct fsm_step *s = &r->steps[k];

		if (s->status != FSM_STEP_REUSED)
			continue;
		if (!first)
			ROWS_LIT(b, ",");
		first = false;
		ROWS_LIT(b, "{\"step\":");
		rows_str(b, r->spec->steps[k].name);
		ROWS_LIT(b, ",\"run_id\":");
		snprintf(id, sizeof id, "r-%012" PRIu64, s->reused_seq);
		rows_str(b, id);
		ROWS_LIT(b, ",\"attempt\":");
		rows_int(b, s->reused_attempt);
		ROWS_LIT(b, "}");
	}
	ROWS_LIT(b, "]}");
}

json_t *fsm_system_tags(const char *flow, unsigned version,
			const json_t *trigger, const char *origin_id)
{
	const char *type = json_string_value(json_object_get(trigger, "type"));
	json_t *a = json_array();
	struct spec_flow_key k;
	char buf[4200];

	if (a == NULL)
		return NULL;
	spec_flow_key_split(flow, &k);
	snprintf(buf, sizeof buf, "project:%s", k.project);
	json_array_append_new(a, json_string(buf));
	snprintf(buf, sizeof buf, "branch:%s", k.branch);
	json_array_append_new(a, json_string(buf));
	snprintf(buf, sizeof buf, "flow:%s", k.flow);
	json_array_append_new(a, json_string(buf));
	snprintf(buf, sizeof buf, "version:%u", version);
	json_array_append_new(a, json_string(buf));
	snprintf(buf, sizeof buf, "trigger:%s", type != NULL ? type : "manual");
	json_array_append_new(a, json_string(buf));
	if (origin_id != NULL) {
		snprintf(buf, sizeof buf, "origin:%s", origin_id);
		json_array_append_new(a, json_string(buf));
	}
	return a;
}

/* The rows of one run (the run, and its changed steps and attempts), with
 * their dirty flags cleared. */
void fsm__rows_run(struct fsm *f, struct fsm_run *r)
{
	struct fsm_text *b = &f->rows;

	ROWS_BEGIN(b, "{\"t\":\"run\",\"id\":");
	rows_str(b, r->id);
	ROWS_LIT(b, ",\"flow\":");
	rows_str(b, r->flow->name);
	ROWS_LIT(b, ",\"version\":");
	rows_int(b, r->version);
	ROWS_LIT(b, ",\"parameters\":");
	rows_json(b, r->params);
	ROWS_LIT(b, ",\"status\":");
	rows_str(b, run_status_names[r->status]);
	ROWS_LIT(b, ",\"idempotency_key\":");
	rows_str(b, r->idempotency_key);
	ROWS_LIT(b, ",\"created_at\":");
	rows_int(b, r->created_ms);
	ROWS_LIT(b, ",\"started_at\":");
	rows_ms(b, r->started_ms);
	ROWS_LIT(b, ",\"finished_at\":");
	rows_ms(b, r->finished_ms);
	ROWS_LIT(b, ",\"reason\":");
	rows_str(b, r->reason);
	ROWS_LIT(b, "}");
	if (r->trigger != NULL) {
		/* its own record: batches without triggers stay on the plain
		 * path in flowd_apply (docs/schema.md) */
		ROWS_LIT(b, ",{\"t\":\"run_trigger\",\"id\":");
		rows_str(b, r->id);
		ROWS_LIT(b, ",\"trigger\":");
		rows_json(b, r->trigger);
		ROWS_LIT(b, "}");
	}
	/* only when it changed: most row writes of a tagged run are status */
	if (r->meta_dirty && (r->tags != NULL || r->origin_id != NULL ||
			      r->redrive_count > 0))
		rows_meta(b, r);
	r->meta_dirty = false;
	for (size_t k = 0; k < r->spec->n_steps; k++) {
		struct fsm_step *s = &r->steps[k];
		const char *name = r->spec->steps[s->index].name;

		if (!s->dirty)
			continue;
		s->dirty = false;
		ROWS_LIT(b, ",{\"t\":\"step\",\"run_id\":");
		rows_str(b, r->id);
		ROWS_LIT(b, ",\"step\":");
		rows_str(b, name);
		ROWS_LIT(b, ",\"status\":");
		rows_str(b, step_status_names[s->status]);
		ROWS_LIT(b, ",\"attempts\":");
		rows_int(b, s->n_attempts);
		ROWS_LIT(b, ",\"started_at\":");
		rows_ms(b, s->started_ms);
		ROWS_LIT(b, ",\"finished_at\":");
		rows_ms(b, s->finished_ms);
		ROWS_LIT(b, "}");
		for (unsigned n = 0; n < s->n_attempts; n++) {
			struct fsm_attempt *a = &s->attempts[n];

			if (!a->dirty)
				continue;
			a->dirty = false;
			ROWS_LIT(b, ",{\"t\":\"attempt\",\"run_id\":");
			rows_str(b, r->id);
			ROWS_LIT(b, ",\"step\":");
			rows_str(b, name);
			ROWS_LIT(b, ",\"attempt\":");
			rows_int(b, a->n);
			ROWS_LIT(b, ",\"node\":");
			rows_int(b, (int64_t)a->node);
			ROWS_LIT(b, ",\"status\":");
			rows_str(b, attempt_status_names[a->status]);
			ROWS_LIT(b, ",\"started_at\":");
			rows_ms(b, a->started_ms);
			ROWS_LIT(b, ",\"finished_at\":");
			rows_ms(b, a->finished_ms);
			ROWS_LIT(b, ",\"exit_code\":");
			if (a->status == FSM_ATTEMPT_RUNNING || a->exit_code < 0)
				ROWS_LIT(b, "null");
			else
				rows_int(b, a->exit_code);
			ROWS_LIT(b, ",\"signal\":");
			if (a->term_signal)
				rows_int(b, a->term_signal);
			else
				ROWS_LIT(b, "null");
			ROWS_LIT(b, ",\"reason\":");
			rows_str(b, a->reason);
			ROWS_LIT(b, "}");
		}
	}
	r->dirty = false;
}

/* One decision about a schedule's tick (table fires), with the detailed
 * reason. */
void fsm__rows_fire(struct fsm *f, const struct fsm_flow *fl, int sched,
		    int64_t nominal, int64_t at_ms,
		    enum fsm_fire_outcome outcome, uint64_t count,
		    const char *run_id, const char *reason)
{
	struct fsm_text *b = &f->rows;

	ROWS_BEGIN(b, "{\"t\":\"fire\",\"flow\":");
	rows_str(b, fl->name);
	ROWS_LIT(b, ",\"schedule\":");
	rows_int(b, sched);
	ROWS_LIT(b, ",\"nominal\":");
	rows_int(b, nominal * 1000);
	ROWS_LIT(b, ",\"at\":");
	rows_int(b, at_ms);
	ROWS_LIT(b, ",\"outcome\":");
	rows_str(b, outcome_names[outcome]);
	ROWS_LIT(b, ",\"count\":");
	rows_int(b, (int64_t)count);
	ROWS_LIT(b, ",\"run_id\":");
	rows_str(b, run_id);
	ROWS_LIT(b, ",\"reason\":");
	rows_str(b, reason);
	ROWS_LIT(b, "}");
}

json_t *fsm__record_flow(const struct fsm_flow *fl)
{
	return json_pack("{s:s, s:s, s:o, s:b, s:I}", "t", "flow", "flow",
			 fl->name,
			 "current_version",
			 fl->current ? json_integer(fl->current) : json_null(),
			 "deleted", fl->current == 0, "updated_at",
			 (json_int_t)fl->updated_ms);
}

json_t *fsm__record_flow_version(const struct fsm_flow *fl,
				 const struct fsm_flow_version *v)
{
	return json_pack("{s:s, s:s, s:i, s:o, s:I}", "t", "flow_version",
			 "flow", fl->name, "version", (int)v->version, "spec",
			 spec_doc(v->spec), "created_at", (json_int_t)v->created_ms);
}

json_t *fsm__record_paused(const struct fsm_flow *fl)
{
	return json_pack("{s:s, s:s, s:b}", "t", "flow_paused", "flow",
			 fl->name, "paused", fl->paused);
}

json_t *fsm__record_log(const char *run_id, const char *step,
			unsigned attempt, json_t *out, json_t *err,
			json_t *truncated)
{
	return json_pack("{s:s, s:s, s:s, s:i, s:O, s:O, s:O}", "t", "log",
			 "run_id", run_id, "step", step, "attempt",
			 (int)attempt, "stdout", out, "stderr", err,
			 "truncated", truncated);
}

json_t *fsm__record_event(const char *id, const char *name, json_t *payload,
			  int64_t ts, json_t *runs)
{
	return json_pack("{s:s, s:s, s:s, s:O, s:I, s:O}", "t", "event", "id",
			 id, "name", name, "payload", payload, "received_at",
			 (json_int_t)ts, "runs", runs);
}

/* ------------------------------------------------------------------------
 * Taking the rows
 */

void fsm_mark_all_dirty(struct fsm *f)
{
	struct apply_ctx c = {.f = f, .records = f->pending};

	for (size_t i = 0; i < f->flows.n_buckets; i++) {
		for (struct map_entry *e = f->flows.buckets[i]; e; e = e->next) {
			struct fsm_flow *fl = e->value;
			for (unsigned k = 0; k < fl->n_versions; k++)
				if (fl->versions[k].spec != NULL)
					json_array_append_new(
						f->pending,
						fsm__record_flow_version(fl, &fl->versions[k]));
			json_array_append_new(f->pending, fsm__record_flow(fl));
			/* paused true or false: the flows upsert leaves the
			 * column alone, so an unpause that PostgreSQL missed
			 * must be written here too */
			json_array_append_new(f->pending, fsm__record_paused(fl));
		}
	}
	for (uint64_t seq = f->run_lo; seq <= f->n_runs; seq++) {
		struct fsm_run *r = fsm_run_at(f, seq);
		if (r == NULL)
			continue;
		for (size_t k = 0; k < r->spec->n_steps; k++) {
			struct fsm_step *s = &r->steps[k];
			for (unsigned n = 0; n < s->n_attempts; n++)
				s->attempts[n].dirty = true;
			fsm__step_touch(&c, s);
		}
		r->meta_dirty = true;
		fsm__run_touch(&c, r);
	}
}

char *fsm_take_records(struct fsm *f, uint64_t *index)
{
	struct fsm_text out = {0};
	size_t n_pending = json_array_size(f->pending);

	for (size_t i = 0; i < f->n_dirty; i++) {
		if (f->dirty[i] != NULL) /* NULL: evicted, rows taken then */
			fsm__rows_run(f, f->dirty[i]);
	}
	f->n_dirty = 0;
	f->pending_history = false;
	if (n_pending == 0 && f->rows.n == 0)
		return NULL;
	/* [pending records..., rows...] */
	if (n_pending > 0) {
		char *head = json_dumps(f->pending, JSON_COMPACT);

		if (head == NULL)
			abort();
		rows_put(&out, head, strlen(head) - 1); /* without its ']' */
		free(head);
		json_array_clear(f->pending);
		if (f->rows.n > 0)
			ROWS_LIT(&out, ",");
	} else {
		ROWS_LIT(&out, "[");
	}
	if (f->rows.n > 0)
		rows_put(&out, f->rows.p, f->rows.n);
	ROWS_LIT(&out, "]");
	f->rows.n = 0;
	*index = f->applied_index;
	return out.p;
}
