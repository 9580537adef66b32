/* fsm.c - the replicated state machine: apply, snapshot, restore.
 *
 * DESIGN
 *
 * Happy path. The API validates a request, the daemon encodes it as a
 * command (fsm_cmd_*), consensus commits it, and every node calls fsm_apply()
 * with the same bytes in the same order. A run_create makes the run and its
 * steps; steps without dependencies become READY and are placed at once on a
 * live node with free capacity (place_ready). The node named in an attempt
 * runs it and proposes task_finish with the outcome; applying that marks the
 * attempt, readies the dependents, retries or fails, and ends the run when
 * every step has succeeded.
 *
 * Determinism. Apply reads nothing but the command and the state: no clock
 * (time is the command's `ts`), no randomness, and no hash-map iteration
 * order decides anything (lists that order work are FIFOs or sorted).
 *
 * Failure modes. A malformed command is logged and ignored. A task_finish for
 * an attempt that is no longer RUNNING (lost, or from another node) is
 * recorded in the log table and otherwise ignored: this is the fencing that
 * makes a late result harmless. A node_up with a new boot id marks every
 * attempt that node still had RUNNING as LOST and retries it under the
 * step's policy, so a crash mid-run never leaves a run hanging.
 *
 * Side effects leave through fsm_hooks only: the PostgreSQL row images of
 * every entry, and "start/stop this attempt" for the executor.
 *
 * Thread: the loop thread only.
 */
#include "fsm_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

/* ------------------------------------------------------------------------
 * Strings and small helpers
 */

static const char *run_status_names[] = {"queued", "running", "succeeded",
					 "failed", "cancelled"};
static const char *step_status_names[] = {
	"pending",   "ready",  "running",   "retry_wait",
	"succeeded", "failed", "cancelled", "skipped"};
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

static bool run_terminal(const struct fsm_run *r)
{
	return r->status >= FSM_RUN_SUCCEEDED;
}

static json_t *jstr_or_null(const char *s)
{
	return s != NULL ? json_string(s) : json_null();
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

char *flowd_utf8_sanitize(const char *in, size_t len)
{
	/* Worst case: every byte becomes U+FFFD (3 bytes). */
	char *out = malloc(len * 3 + 1);
	const unsigned char *p = (const unsigned char *)in;
	size_t i = 0, o = 0;

	if (out == NULL)
		return NULL;
	while (i < len) {
		unsigned char c = p[i];
		size_t n = 0;
		uint32_t cp = 0;

		if (c == 0) {
			i++;
			continue;
		}
		if (c < 0x80) {
			out[o++] = (char)c;
			i++;
			continue;
		}
		if ((c & 0xE0) == 0xC0) {
			n = 1;
			cp = c & 0x1F;
		} else if ((c & 0xF0) == 0xE0) {
			n = 2;
			cp = c & 0x0F;
		} else if ((c & 0xF8) == 0xF0) {
			n = 3;
			cp = c & 0x07;
		}
		bool ok = n > 0;
		for (size_t k = 1; ok && k <= n; k++) {
			if (i + k >= len || (p[i + k] & 0xC0) != 0x80)
				ok = false;
			else
				cp = (cp << 6) | (p[i + k] & 0x3F);
		}
		/* Reject overlongs, surrogates and out-of-range values. */
		if (ok && ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) ||
			   (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
			   (cp >= 0xD800 && cp <= 0xDFFF)))
			ok = false;
		if (ok) {
			memcpy(out + o, p + i, n + 1);
			o += n + 1;
			i += n + 1;
		} else {
			memcpy(out + o, "\xEF\xBF\xBD", 3);
			o += 3;
			i++;
		}
	}
	out[o] = '\0';
	return out;
}

/* ------------------------------------------------------------------------
 * Life cycle
 */

static void permissive_limits(struct flowd_limits *l)
{
	flowd_limits_defaults(l);
	l->max_body_bytes = (size_t)1 << 40;
	l->max_spec_bytes = (size_t)1 << 40;
	l->max_steps_per_flow = 1u << 30;
	l->max_params_per_flow = 1u << 30;
	l->max_deps_per_step = 1u << 30;
	l->max_argv = 1u << 30;
	l->max_env_per_step = 1u << 30;
	l->max_string_bytes = (size_t)1 << 40;
	l->max_param_bytes = (size_t)1 << 40;
	l->max_retries = 1u << 30;
	l->max_backoff_s = 1u << 30;
	l->max_timeout_s = 1u << 30;
}

void fsm_init(struct fsm *f, const struct fsm_hooks *hooks)
{
	memset(f, 0, sizeof *f);
	map_init(&f->flows);
	map_init(&f->runs);
	idem_init(&f->idem);
	map_init(&f->events);
	f->next_seq = 1;
	f->run_lo = 1;
	f->pending = json_array();
	if (f->pending == NULL)
		abort();
	if (hooks != NULL)
		f->hooks = *hooks;
	permissive_limits(&f->limits);
}

static void run_free(struct fsm_run *r)
{
	if (r == NULL)
		return;
	if (r->steps != NULL) {
		for (size_t i = 0; i < r->spec->n_steps; i++) {
			struct fsm_step *s = &r->steps[i];
			for (unsigned k = 0; k < s->n_attempts; k++)
				free(s->attempts[k].reason);
			free(s->attempts);
		}
	}
	free(r->steps);
	free(r->snap_text);
	free(r->id);
	free(r->idempotency_key);
	free(r->reason);
	json_decref(r->params);
	json_decref(r->trigger);
	free(r);
}

static void flow_free(struct fsm_flow *fl)
{
	fsm__trig_clear_flow(fl);
	for (unsigned i = 0; i < fl->n_versions; i++)
		spec_free(fl->versions[i].spec);
	free(fl->versions);
	free(fl->name);
	free(fl);
}

/* Free everything but hooks and limits. */
static void state_clear(struct fsm *f)
{
	for (uint64_t seq = f->run_lo; seq <= f->n_runs; seq++)
		run_free(fsm_run_at(f, seq));
	free(f->run_list);
	f->run_list = NULL;
	f->n_runs = f->cap_runs = 0;
	f->run_lo = 1;
	for (size_t i = 0; i < f->flows.n_buckets; i++)
		for (struct map_entry *e = f->flows.buckets[i]; e; e = e->next)
			flow_free(e->value);
	idem_close(&f->idem);
	f->settled_head = f->settled_tail = NULL;
	f->n_settled = 0;
	map_close(&f->flows);
	map_close(&f->runs);
	free(f->nodes);
	f->nodes = NULL;
	f->n_nodes = 0;
	f->ready_head = f->ready_tail = NULL;
	f->waiting = NULL;
	f->next_seq = 1;
	fsm__events_clear(f);
	/* the view copies the whole new state */
	f->n_view_seqs = 0;
	f->n_view_flows = 0;
	f->view_reset = true;
}

void fsm_close(struct fsm *f)
{
	state_clear(f);
	free(f->dirty);
	f->dirty = NULL;
	f->cap_dirty = 0;
	free(f->view_seqs);
	free(f->view_flows);
	f->view_seqs = NULL;
	f->view_flows = NULL;
	f->cap_view_seqs = f->cap_view_flows = 0;
	json_decref(f->pending);
	f->pending = NULL;
	free(f->rows.p);
	memset(&f->rows, 0, sizeof f->rows);
	json_decref(f->result.body);
	f->result.body = NULL;
}

struct fsm_flow *fsm_flow_get(struct fsm *f, const char *name)
{
	return map_get(&f->flows, name);
}

struct fsm_run *fsm_run_get(struct fsm *f, const char *id)
{
	return map_get(&f->runs, id);
}

int64_t fsm_next_due(struct fsm *f)
{
	int64_t due = 0;

	for (struct fsm_step *s = f->waiting; s != NULL; s = s->wait_next)
		if (due == 0 || s->due_ms < due)
			due = s->due_ms;
	return due;
}

/* ------------------------------------------------------------------------
 * Apply context: records of the entry being applied
 */

/* Grow an array of `size`-byte elements to hold one more (apply aborts on
 * out of memory: it must not fail half-way). */
static void *grow(void *arr, size_t *cap, size_t n, size_t size)
{
	size_t c = *cap;

	if (n < c)
		return arr;
	c = c ? c * 2 : 64;
	arr = realloc(arr, c * size);
	if (arr == NULL)
		abort();
	*cap = c;
	return arr;
}

static void view_seq_push(struct fsm *f, uint64_t seq)
{
	f->view_seqs = grow(f->view_seqs, &f->cap_view_seqs, f->n_view_seqs,
			    sizeof *f->view_seqs);
	f->view_seqs[f->n_view_seqs++] = seq;
}

void fsm__flow_touch(struct fsm *f, struct fsm_flow *fl)
{
	if (fl->view_dirty)
		return;
	fl->view_dirty = true;
	f->view_flows = grow(f->view_flows, &f->cap_view_flows,
			     f->n_view_flows, sizeof *f->view_flows);
	f->view_flows[f->n_view_flows++] = fl;
}

void fsm_view_taken(struct fsm *f)
{
	f->n_view_seqs = 0;
	f->n_view_flows = 0;
	f->view_reset = false;
}

static void touch_run(struct apply_ctx *c, struct fsm_run *r)
{
	struct fsm *f = c->f;

	if (!r->view_dirty) {
		r->view_dirty = true;
		view_seq_push(f, r->seq);
	}

	if (c->index != 0 && r->touched_at != c->index) {
		r->touched_at = c->index;
		if (c->n_touched == c->cap_touched) {
			size_t cap = c->cap_touched ? c->cap_touched * 2 : 16;
			struct fsm_run **t =
				realloc(c->touched, cap * sizeof *t);
			if (t == NULL)
				abort();
			c->touched = t;
			c->cap_touched = cap;
		}
		c->touched[c->n_touched++] = r;
	}

	free(r->snap_text);
	r->snap_text = NULL;
	if (r->dirty)
		return;
	r->dirty = true;
	if (f->n_dirty == f->cap_dirty) {
		size_t cap = f->cap_dirty ? f->cap_dirty * 2 : 64;
		struct fsm_run **d = realloc(f->dirty, cap * sizeof *d);
		if (d == NULL)
			abort(); /* apply must not fail half-way */
		f->dirty = d;
		f->cap_dirty = cap;
	}
	f->dirty[f->n_dirty++] = r;
}

static void touch_step(struct apply_ctx *c, struct fsm_step *s)
{
	s->dirty = true;
	touch_run(c, s->run);
}

static struct fsm_node *node_find(struct fsm *f, uint64_t id)
{
	for (unsigned i = 0; i < f->n_nodes; i++)
		if (f->nodes[i].id == id)
			return &f->nodes[i];
	return NULL;
}

/* ------------------------------------------------------------------------
 * Ready queue, retry list, placement
 */

static void ready_push(struct fsm *f, struct fsm_step *s)
{
	s->ready_next = NULL;
	if (f->ready_tail != NULL)
		f->ready_tail->ready_next = s;
	else
		f->ready_head = s;
	f->ready_tail = s;
}

static void ready_unlink(struct fsm *f, struct fsm_step *s)
{
	struct fsm_step *prev = NULL;

	for (struct fsm_step *p = f->ready_head; p != NULL;
	     prev = p, p = p->ready_next) {
		if (p != s)
			continue;
		if (prev != NULL)
			prev->ready_next = p->ready_next;
		else
			f->ready_head = p->ready_next;
		if (f->ready_tail == p)
			f->ready_tail = prev;
		p->ready_next = NULL;
		return;
	}
}

static void waiting_unlink(struct fsm *f, struct fsm_step *s)
{
	for (struct fsm_step **p = &f->waiting; *p != NULL;
	     p = &(*p)->wait_next) {
		if (*p == s) {
			*p = s->wait_next;
			s->wait_next = NULL;
			return;
		}
	}
}

static void make_ready(struct apply_ctx *c, struct fsm_step *s)
{
	s->status = FSM_STEP_READY;
	ready_push(c->f, s);
	touch_step(c, s);
}

static struct fsm_node *pick_node(struct fsm *f)
{
	struct fsm_node *best = NULL;
	unsigned best_free = 0;

	for (unsigned i = 0; i < f->n_nodes; i++) {
		struct fsm_node *n = &f->nodes[i];
		unsigned free_slots;
		if (!n->live || n->running >= n->capacity)
			continue;
		free_slots = n->capacity - n->running;
		if (best == NULL || free_slots > best_free) {
			best = n;
			best_free = free_slots;
		}
	}
	return best;
}

static void place_ready(struct apply_ctx *c)
{
	struct fsm *f = c->f;

	while (f->ready_head != NULL) {
		struct fsm_node *n = pick_node(f);
		struct fsm_step *s;
		struct fsm_run *r;
		struct fsm_attempt *a, *arr;

		if (n == NULL)
			return;
		s = f->ready_head;
		f->ready_head = s->ready_next;
		if (f->ready_head == NULL)
			f->ready_tail = NULL;
		s->ready_next = NULL;
		r = s->run;

		arr = realloc(s->attempts,
			      (s->n_attempts + 1) * sizeof *s->attempts);
		if (arr == NULL)
			abort();
		s->attempts = arr;
		a = &s->attempts[s->n_attempts];
		memset(a, 0, sizeof *a);
		a->n = ++s->n_attempts;
		a->node = n->id;
		a->boot = n->boot;
		a->status = FSM_ATTEMPT_RUNNING;
		a->started_ms = c->ts;
		a->exit_code = -1;
		a->dirty = true;
		n->running++;
		r->active_attempts++;
		s->status = FSM_STEP_RUNNING;
		if (s->started_ms == 0)
			s->started_ms = c->ts;
		touch_step(c, s);
		if (r->status == FSM_RUN_QUEUED) {
			r->status = FSM_RUN_RUNNING;
			r->started_ms = c->ts;
		}
		if (f->hooks.attempt_placed != NULL)
			f->hooks.attempt_placed(f->hooks.arg, r, s, a);
	}
}

/* ------------------------------------------------------------------------
 * Run transitions
 */

static void set_reason(char **dst, const char *reason)
{
	free(*dst);
	*dst = reason ? strdup(reason) : NULL;
}

/* End a run: every step that has not finished is skipped (failed run) or
 * cancelled; running attempts are asked to stop. */
static void end_run(struct apply_ctx *c, struct fsm_run *r,
		    enum fsm_run_status status, const char *reason)
{
	struct fsm *f = c->f;

	r->status = status;
	set_reason(&r->reason, reason);
	r->finished_ms = c->ts;
	touch_run(c, r);
	for (size_t i = 0; i < r->spec->n_steps; i++) {
		struct fsm_step *s = &r->steps[i];
		switch (s->status) {
		case FSM_STEP_READY:
			ready_unlink(f, s);
			/* fall through */
		case FSM_STEP_PENDING:
			s->status = status == FSM_RUN_CANCELLED
					    ? FSM_STEP_CANCELLED
					    : FSM_STEP_SKIPPED;
			touch_step(c, s);
			break;
		case FSM_STEP_RETRY_WAIT:
			waiting_unlink(f, s);
			s->status = status == FSM_RUN_CANCELLED
					    ? FSM_STEP_CANCELLED
					    : FSM_STEP_SKIPPED;
			s->finished_ms = c->ts;
			touch_step(c, s);
			break;
		case FSM_STEP_RUNNING: {
			struct fsm_attempt *a =
				&s->attempts[s->n_attempts - 1];
			s->status = FSM_STEP_CANCELLED;
			s->finished_ms = c->ts;
			a->stopping = true;
			a->dirty = true;
			touch_step(c, s);
			if (f->hooks.attempt_stop != NULL)
				f->hooks.attempt_stop(f->hooks.arg, r, s, a);
			break;
		}
		default:
			break;
		}
	}
}

/* A step succeeded: ready its dependents; end the run when all are done. */
static void step_succeeded(struct apply_ctx *c, struct fsm_step *s)
{
	struct fsm_run *r = s->run;
	const struct flow_spec *spec = r->spec;
	bool all = true;

	s->status = FSM_STEP_SUCCEEDED;
	s->finished_ms = c->ts;
	touch_step(c, s);
	for (size_t j = 0; j < spec->n_steps; j++) {
		const struct spec_step *ss = &spec->steps[j];
		for (size_t d = 0; d < ss->n_deps; d++) {
			if (ss->deps[d] != s->index)
				continue;
			struct fsm_step *t = &r->steps[j];
			if (t->deps_left == 0)
				continue;
			t->deps_left--;
			touch_step(c, t);
			if (t->deps_left == 0 && t->status == FSM_STEP_PENDING)
				make_ready(c, t);
		}
	}
	for (size_t j = 0; j < spec->n_steps; j++)
		if (r->steps[j].status != FSM_STEP_SUCCEEDED)
			all = false;
	if (all) {
		r->status = FSM_RUN_SUCCEEDED;
		r->finished_ms = c->ts;
		touch_run(c, r);
	}
}

/* An attempt failed (or was lost): retry under the step's policy, or fail the
 * step and the run. */
static void step_failed(struct apply_ctx *c, struct fsm_step *s,
			const char *why)
{
	struct fsm_run *r = s->run;
	const struct spec_step *ss = &r->spec->steps[s->index];
	char reason[300];

	if (s->n_attempts <= ss->retries_max) {
		uint64_t backoff = ss->backoff_s;
		for (unsigned k = 1; k < s->n_attempts && backoff < ss->max_backoff_s; k++)
			backoff *= 2;
		if (backoff > ss->max_backoff_s)
			backoff = ss->max_backoff_s;
		touch_step(c, s);
		if (backoff == 0) {
			make_ready(c, s);
		} else {
			s->status = FSM_STEP_RETRY_WAIT;
			s->due_ms = c->ts + (int64_t)backoff * 1000;
			s->wait_next = c->f->waiting;
			c->f->waiting = s;
		}
		return;
	}
	s->status = FSM_STEP_FAILED;
	s->finished_ms = c->ts;
	touch_step(c, s);
	snprintf(reason, sizeof reason, "step %s %s",
		 r->spec->steps[s->index].name, why);
	end_run(c, r, FSM_RUN_FAILED, reason);
}

/* ------------------------------------------------------------------------
 * Records (PostgreSQL row images)
 */

static json_t *flow_record(const struct fsm_flow *fl)
{
	return json_pack("{s:s, s:s, s:o, s:b, s:I}", "t", "flow", "flow",
			 fl->name,
			 "current_version",
			 fl->current ? json_integer(fl->current) : json_null(),
			 "deleted", fl->current == 0, "updated_at",
			 (json_int_t)fl->updated_ms);
}

static json_t *flow_version_record(const struct fsm_flow *fl,
				   const struct fsm_flow_version *v)
{
	return json_pack("{s:s, s:s, s:i, s:o, s:I}", "t", "flow_version",
			 "flow", fl->name, "version", (int)v->version, "spec",
			 spec_doc(v->spec), "created_at", (json_int_t)v->created_ms);
}

static int tb_put(struct fsm_text *b, const char *s, size_t n)
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
 * Row images of runs, steps and attempts, written as JSON text. The same
 * fields as the PostgreSQL record formats (storage.h); apply must not fail,
 * so out of memory aborts.
 */

void fsm__rows_put(struct fsm_text *b, const char *s, size_t n)
{
	if (tb_put(b, s, n) != 0)
		abort();
}

#define rows_put fsm__rows_put
#define rows_str fsm__rows_str
#define rows_int fsm__rows_int
#define rows_ms fsm__rows_ms
#define rows_json fsm__rows_json

void fsm__rows_str(struct fsm_text *b, const char *s)
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

void fsm__rows_int(struct fsm_text *b, int64_t v)
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

void fsm__rows_ms(struct fsm_text *b, int64_t ms)
{
	if (ms == 0)
		ROWS_LIT(b, "null");
	else
		rows_int(b, ms);
}

void fsm__rows_json(struct fsm_text *b, const json_t *v)
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

/* The rows of one run (the run, and its changed steps and attempts), with
 * their dirty flags cleared. */
static void run_rows(struct fsm *f, struct fsm_run *r)
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
						flow_version_record(fl, &fl->versions[k]));
			json_array_append_new(f->pending, flow_record(fl));
			/* paused true or false: the flows upsert leaves the
			 * column alone, so an unpause that PostgreSQL missed
			 * must be written here too */
			json_array_append_new(f->pending, fsm__paused_record(fl));
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
			touch_step(&c, s);
		}
		touch_run(&c, r);
	}
}

char *fsm_take_records(struct fsm *f, uint64_t *index)
{
	struct fsm_text out = {0};
	size_t n_pending = json_array_size(f->pending);

	for (size_t i = 0; i < f->n_dirty; i++) {
		if (f->dirty[i] != NULL) /* NULL: evicted, rows taken then */
			run_rows(f, f->dirty[i]);
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

/* ------------------------------------------------------------------------
 * Commands
 */

static void result_error(struct fsm *f, int status, const char *code,
			 const char *field, const char *msg)
{
	f->result.status = status;
	flowd_error_set(&f->result.err, status, code, field, "%s", msg);
}

void fsm__result_error(struct fsm *f, int status, const char *code,
		       const char *field, const char *msg)
{
	result_error(f, status, code, field, msg);
}

bool fsm__run_terminal(const struct fsm_run *r)
{
	return run_terminal(r);
}


/* Version k of fl keeps its spec in memory while it is the newest (what
 * the next run and an unchanged redeploy use) or runs in memory use it;
 * otherwise PostgreSQL's flow_versions serves it. The next snapshot waits
 * until PostgreSQL has its row (a restore could not rebuild it). */
static void version_maybe_drop(struct fsm *f, struct fsm_flow *fl, unsigned k)
{
	struct fsm_flow_version *v;

	if (k == 0 || k >= fl->n_versions)
		return;
	v = &fl->versions[k - 1];
	if (v->runs > 0 || v->spec == NULL)
		return;
	spec_free(v->spec);
	v->spec = NULL;
	f->pending_history = true;
	fsm__flow_touch(f, fl);
}

static void apply_deploy(struct apply_ctx *c, json_t *cmd)
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

	if (name == NULL || !spec_flow_name_valid_committed(name)) {
		result_error(f, 400, "invalid_value", "flow", "bad flow name");
		return;
	}
	if (spec_parse_ex(doc, &f->limits, SPEC_PARSE_APPLY, &spec, &err) != 0) {
		f->result.status = err.status ? err.status : 400;
		f->result.err = err;
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
		f->result.status = 200;
		if (fl->current == fl->n_versions)
			return; /* unchanged: a no-op */
		fl->current = fl->n_versions; /* re-deploy after undeploy */
		fl->updated_ms = c->ts;
		json_array_append_new(c->records, flow_record(fl));
		fsm__flow_touch(f, fl);
		fsm__trig_deployed(c, fl, was_current ? old : NULL, was_current);
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
	v->spec = spec;
	fl->current = v->version;
	fl->updated_ms = c->ts;
	f->result.status = 201;
	f->result.created = true;
	json_array_append_new(c->records, flow_version_record(fl, v));
	json_array_append_new(c->records, flow_record(fl));
	fsm__flow_touch(f, fl);
	fsm__trig_deployed(c, fl, old, was_current);
	/* `old` is not needed any more: the previous newest may leave */
	version_maybe_drop(f, fl, fl->n_versions - 1);
}

static void apply_undeploy(struct apply_ctx *c, json_t *cmd)
{
	struct fsm *f = c->f;
	const char *name = json_string_value(json_object_get(cmd, "flow"));
	struct fsm_flow *fl = name ? map_get(&f->flows, name) : NULL;

	if (fl == NULL) {
		result_error(f, 404, "not_found", "flow", "no such flow");
		return;
	}
	f->result.flow = fl;
	f->result.status = 200;
	if (fl->current == 0)
		return;
	fl->current = 0;
	fl->updated_ms = c->ts;
	json_array_append_new(c->records, flow_record(fl));
	fsm__flow_touch(f, fl);
	fsm__trig_undeployed(c, fl);
}

/* Put a run at its place in the window, run_list[seq - run_lo]. */
static void run_list_add(struct fsm *f, struct fsm_run *r)
{
	size_t at;

	if (f->n_runs == 0 || f->run_list == NULL ||
	    (f->run_lo > f->n_runs && r->seq > f->n_runs))
		f->run_lo = r->seq; /* an empty window starts at this run */
	if (r->seq < f->run_lo)
		abort(); /* runs are made (and restored) in seq order */
	at = r->seq - f->run_lo;
	if (at >= f->cap_runs) {
		size_t cap = f->cap_runs ? f->cap_runs : 256;
		struct fsm_run **l;
		while (cap <= at)
			cap *= 2;
		l = realloc(f->run_list, cap * sizeof *l);
		if (l == NULL)
			abort();
		memset(l + f->cap_runs, 0, (cap - f->cap_runs) * sizeof *l);
		f->run_list = l;
		f->cap_runs = cap;
	}
	f->run_list[at] = r;
	if (r->seq > f->n_runs)
		f->n_runs = r->seq;
	if (map_put(&f->runs, r->id, r) != 0)
		abort();
}

/* Runs left memory at the front of the window: move it up, copying the
 * rest down only once the empty front is as long as what is left, so the
 * window costs amortized O(1) per run and spans the oldest run in memory
 * to the newest. */
static void run_list_trim(struct fsm *f)
{
	size_t len = f->n_runs >= f->run_lo ? f->n_runs - f->run_lo + 1 : 0;
	size_t empty = 0;

	while (empty < len && f->run_list[empty] == NULL)
		empty++;
	if (empty == 0 || (empty < len && empty < 64) ||
	    (empty < len && empty * 2 < len))
		return;
	memmove(f->run_list, f->run_list + empty,
		(len - empty) * sizeof *f->run_list);
	memset(f->run_list + (len - empty), 0, empty * sizeof *f->run_list);
	f->run_lo += empty;
}

const char *fsm_idem_lookup(struct fsm *f, const char *flow, const char *key,
			    struct fsm_run **run)
{
	return fsm_idem_lookup_at(f, flow, key, 0, run);
}

const char *fsm_idem_lookup_at(struct fsm *f, const char *flow,
			       const char *key, int64_t now_ms,
			       struct fsm_run **run)
{
	int64_t ts = 0;
	uint64_t seq = idem_get(&f->idem, flow, key, &ts);

	*run = NULL;
	if (seq == 0 || (now_ms > 0 && f->idem_ttl_ms > 0 &&
			 ts < now_ms - f->idem_ttl_ms))
		return NULL;
	snprintf(f->idem_id, sizeof f->idem_id, "r-%012" PRIu64, seq);
	*run = fsm_run_at(f, seq);
	return f->idem_id;
}

void fsm__idem_expire(struct apply_ctx *c)
{
	idem_expire(&c->f->idem, c->ts, c->f->idem_ttl_ms, c->f->idem_max);
}

bool fsm_run_evicted(struct fsm *f, const char *id)
{
	unsigned long long seq;
	char *end;

	if (strncmp(id, "r-", 2) != 0)
		return false;
	seq = strtoull(id + 2, &end, 10);
	return *end == '\0' && seq >= 1 && seq <= f->n_runs &&
	       fsm_run_at(f, seq) == NULL;
}

/* A new run object with its steps PENDING (not yet in any list). */
static struct fsm_run *run_new(struct fsm *f, struct fsm_flow *fl,
			       unsigned version, uint64_t seq)
{
	struct fsm_run *r = calloc(1, sizeof *r);
	char id[32];

	if (r == NULL)
		abort();
	snprintf(id, sizeof id, "r-%012" PRIu64, seq);
	r->id = strdup(id);
	r->seq = seq;
	r->flow = fl;
	r->version = version;
	r->spec = fl->versions[version - 1].spec;
	fl->versions[version - 1].runs++;
	r->steps = calloc(r->spec->n_steps ? r->spec->n_steps : 1,
			  sizeof *r->steps);
	if (r->id == NULL || r->steps == NULL)
		abort();
	for (size_t i = 0; i < r->spec->n_steps; i++) {
		r->steps[i].run = r;
		r->steps[i].index = (unsigned)i;
		r->steps[i].deps_left = (unsigned)r->spec->steps[i].n_deps;
	}
	return r;
}

static void apply_run_create(struct apply_ctx *c, json_t *cmd)
{
	struct fsm *f = c->f;
	const char *name = json_string_value(json_object_get(cmd, "flow"));
	const char *key =
		json_string_value(json_object_get(cmd, "idempotency_key"));
	json_t *params = json_object_get(cmd, "parameters");
	struct fsm_flow *fl = name ? map_get(&f->flows, name) : NULL;
	struct flowd_error err;
	struct fsm_run *r;

	if (fl == NULL) {
		result_error(f, 404, "not_found", "flow", "no such flow");
		return;
	}
	if (json_is_integer(json_object_get(cmd, "retain")))
		f->retain = (uint64_t)json_integer_value(
			json_object_get(cmd, "retain"));
	if (json_is_integer(json_object_get(cmd, "keys")))
		f->idem_max = (uint64_t)json_integer_value(
			json_object_get(cmd, "keys"));
	if (json_is_integer(json_object_get(cmd, "key_ttl_s")))
		f->idem_ttl_ms = json_integer_value(
					 json_object_get(cmd, "key_ttl_s")) *
				 1000;
	/* keys past their retention are gone before this one is looked up */
	fsm__idem_expire(c);
	if (key != NULL) {
		const char *id = fsm_idem_lookup(f, name, key, &r);
		if (id != NULL) {
			f->result.status = 200;
			f->result.run = r; /* NULL once evicted */
			f->result.run_id = id;
			return;
		}
	}
	if (fl->current == 0) {
		result_error(f, 409, "flow_undeployed", "flow",
			     "the flow is not deployed");
		return;
	}
	if (json_is_null(params))
		params = NULL;
	r = fsm__run_start(c, fl, params, key, NULL, &err);
	if (r == NULL) {
		f->result.status = err.status ? err.status : 400;
		f->result.err = err;
		return;
	}
	f->result.status = 201;
	f->result.created = true;
	f->result.run = r;
}

struct fsm_run *fsm__run_start(struct apply_ctx *c, struct fsm_flow *fl,
			       const json_t *params, const char *key,
			       json_t *trigger, struct flowd_error *err)
{
	struct fsm *f = c->f;
	json_t *resolved = NULL;
	struct fsm_run *r;

	if (spec_params_resolve(fl->versions[fl->current - 1].spec, params,
				&f->limits, &resolved, err) != 0) {
		json_decref(trigger);
		return NULL;
	}
	r = run_new(f, fl, fl->current, f->next_seq++);
	r->params = resolved;
	r->idempotency_key = key ? strdup(key) : NULL;
	r->trigger = trigger;
	r->status = FSM_RUN_QUEUED;
	r->created_ms = c->ts;
	fl->active++;
	run_list_add(f, r);
	if (key != NULL) {
		idem_put(&f->idem, fl->name, key, r->seq, c->ts);
		fsm__idem_expire(c); /* the count bound holds after each entry */
	}
	touch_run(c, r);
	for (size_t i = 0; i < r->spec->n_steps; i++) {
		touch_step(c, &r->steps[i]);
		if (r->steps[i].deps_left == 0)
			make_ready(c, &r->steps[i]);
	}
	place_ready(c);
	return r;
}

void fsm__run_end(struct apply_ctx *c, struct fsm_run *r,
		  enum fsm_run_status status, const char *reason)
{
	end_run(c, r, status, reason);
	place_ready(c);
}

static void apply_run_cancel(struct apply_ctx *c, json_t *cmd)
{
	struct fsm *f = c->f;
	const char *id = json_string_value(json_object_get(cmd, "run"));
	struct fsm_run *r = id ? map_get(&f->runs, id) : NULL;

	if (r == NULL) {
		result_error(f, 404, "not_found", "run", "no such run");
		return;
	}
	f->result.run = r;
	if (run_terminal(r)) {
		result_error(f, 409, "run_finished", "run",
			     "the run has already finished");
		return;
	}
	end_run(c, r, FSM_RUN_CANCELLED, "cancelled by request");
	place_ready(c);
	f->result.status = 200;
}

static struct fsm_step *step_by_name(struct fsm_run *r, const char *name)
{
	for (size_t i = 0; i < r->spec->n_steps; i++)
		if (strcmp(r->spec->steps[i].name, name) == 0)
			return &r->steps[i];
	return NULL;
}

/* An attempt stopped running (finished or lost): release its slot. */
static void attempt_release(struct apply_ctx *c, struct fsm_run *r,
			    struct fsm_attempt *a)
{
	struct fsm_node *n = node_find(c->f, a->node);

	if (n != NULL && n->running > 0)
		n->running--;
	if (r->active_attempts > 0)
		r->active_attempts--;
}

static void apply_task_finish(struct apply_ctx *c, json_t *cmd)
{
	struct fsm *f = c->f;
	const char *id = json_string_value(json_object_get(cmd, "run"));
	const char *sname = json_string_value(json_object_get(cmd, "step"));
	unsigned n = (unsigned)json_integer_value(json_object_get(cmd, "attempt"));
	uint64_t node = (uint64_t)json_integer_value(json_object_get(cmd, "node"));
	int exit_code = (int)json_integer_value(json_object_get(cmd, "exit_code"));
	int sig = (int)json_integer_value(json_object_get(cmd, "signal"));
	const char *reason = json_string_value(json_object_get(cmd, "reason"));
	const char *detail = json_string_value(json_object_get(cmd, "detail"));
	struct fsm_run *r = id ? map_get(&f->runs, id) : NULL;
	struct fsm_step *s = (r && sname) ? step_by_name(r, sname) : NULL;
	struct fsm_attempt *a;
	char why[300];

	if (s == NULL || n == 0 || n > s->n_attempts || reason == NULL) {
		result_error(f, 404, "not_found", "attempt", "no such attempt");
		return;
	}
	a = &s->attempts[n - 1];
	f->result.status = 200;
	f->result.run = r;
	if (a->node != node || a->status != FSM_ATTEMPT_RUNNING) {
		/* Fencing: a late or foreign result changes nothing. */
		log_debug("fsm: stale result run=%s step=%s attempt=%u", id,
			  sname, n);
		return;
	}
	f->pending_history = true;
	json_array_append_new(
		c->records,
		json_pack("{s:s, s:s, s:s, s:i, s:O, s:O, s:O}", "t", "log",
			  "run_id", r->id, "step", sname, "attempt", (int)n,
			  "stdout", json_object_get(cmd, "stdout"), "stderr",
			  json_object_get(cmd, "stderr"), "truncated",
			  json_object_get(cmd, "truncated")));
	attempt_release(c, r, a);
	a->finished_ms = c->ts;
	a->exit_code = exit_code;
	a->term_signal = sig;
	if (detail != NULL && detail[0] != '\0') {
		snprintf(why, sizeof why, "%s: %s", reason, detail);
		set_reason(&a->reason, why);
	} else {
		set_reason(&a->reason, reason);
	}
	a->dirty = true;
	touch_step(c, s);
	if (a->stopping || run_terminal(r)) {
		a->status = FSM_ATTEMPT_CANCELLED;
	} else if (strcmp(reason, "exited") == 0 && exit_code == 0 &&
		   sig == 0) {
		a->status = FSM_ATTEMPT_SUCCEEDED;
		step_succeeded(c, s);
	} else {
		a->status = FSM_ATTEMPT_FAILED;
		if (strcmp(reason, "timeout") == 0)
			snprintf(why, sizeof why, "timed out");
		else if (sig != 0)
			snprintf(why, sizeof why, "killed by signal %d", sig);
		else if (strcmp(reason, "exited") == 0)
			snprintf(why, sizeof why, "failed with exit code %d",
				 exit_code);
		else
			snprintf(why, sizeof why, "failed (%s)", a->reason);
		step_failed(c, s, why);
	}
	place_ready(c);
}

/* Mark the RUNNING attempts of node `id` lost (those of every boot but
 * `keep_boot`), and retry them under their steps' policies. With `stop`, the
 * node is also asked to stop them, should it still be running them (it was
 * marked down but is alive). */
static void lose_attempts(struct apply_ctx *c, uint64_t id, uint64_t keep_boot,
			  bool stop)
{
	struct fsm *f = c->f;

	for (uint64_t seq = f->run_lo; seq <= f->n_runs; seq++) {
		struct fsm_run *r = fsm_run_at(f, seq);
		if (r == NULL || r->active_attempts == 0)
			continue;
		for (size_t k = 0; k < r->spec->n_steps; k++) {
			struct fsm_step *s = &r->steps[k];
			struct fsm_attempt *a;
			if (s->n_attempts == 0)
				continue;
			a = &s->attempts[s->n_attempts - 1];
			if (a->status != FSM_ATTEMPT_RUNNING || a->node != id ||
			    (keep_boot != 0 && a->boot == keep_boot))
				continue;
			if (stop && f->hooks.attempt_stop != NULL)
				f->hooks.attempt_stop(f->hooks.arg, r, s, a);
			attempt_release(c, r, a);
			a->finished_ms = c->ts;
			set_reason(&a->reason, "lost");
			a->dirty = true;
			touch_step(c, s);
			if (a->stopping || run_terminal(r)) {
				a->status = FSM_ATTEMPT_CANCELLED;
			} else {
				a->status = FSM_ATTEMPT_LOST;
				step_failed(c, s, "lost its node");
			}
		}
	}
}

/* node_alive (`alive`): the node is up, again if it had been marked down.
 * node_down: the leader has not heard from that boot of the node for too
 * long; what it was running is lost and retried, and it is asked to stop it
 * should it still be alive. */
static void apply_node_liveness(struct apply_ctx *c, json_t *cmd, bool alive)
{
	struct fsm *f = c->f;
	uint64_t id = (uint64_t)json_integer_value(json_object_get(cmd, "node"));
	uint64_t boot = (uint64_t)json_integer_value(json_object_get(cmd, "boot"));
	struct fsm_node *n = node_find(f, id);

	f->result.status = 200;
	if (alive && f->hooks.node_heard != NULL)
		f->hooks.node_heard(f->hooks.arg, id);
	if (n == NULL || n->boot != boot || n->live == alive ||
	    (alive && n->removed))
		return;
	n->live = alive;
	if (!alive)
		lose_attempts(c, id, 0, true);
	place_ready(c);
}

/* node_remove: the node left the Raft configuration; what it ran is lost
 * and retried, and it takes no work (its node_up and node_alive are
 * ignored) until node_admit after it is added again. */
static void apply_node_membership(struct apply_ctx *c, json_t *cmd,
				  bool admit)
{
	struct fsm *f = c->f;
	uint64_t id = (uint64_t)json_integer_value(json_object_get(cmd, "node"));
	struct fsm_node *n = node_find(f, id);

	f->result.status = 200;
	if (n == NULL)
		return;
	n->removed = !admit;
	if (!admit && n->live) {
		n->live = false;
		lose_attempts(c, id, 0, true);
		place_ready(c);
	}
}

static int node_cmp(const void *a, const void *b)
{
	const struct fsm_node *x = a, *y = b;

	return x->id < y->id ? -1 : x->id > y->id;
}

static void apply_node_up(struct apply_ctx *c, json_t *cmd)
{
	struct fsm *f = c->f;
	uint64_t id = (uint64_t)json_integer_value(json_object_get(cmd, "node"));
	uint64_t boot = (uint64_t)json_integer_value(json_object_get(cmd, "boot"));
	unsigned cap = (unsigned)json_integer_value(json_object_get(cmd, "capacity"));
	const char *api = json_string_value(json_object_get(cmd, "api"));
	struct fsm_node *n = node_find(f, id);

	f->result.status = 200;
	if (n != NULL && n->removed) {
		/* Removed from the cluster: it takes no work until re-added. */
		result_error(f, 409, "node_removed", "node",
			     "the node was removed from the cluster");
		return;
	}
	if (n == NULL) {
		struct fsm_node *arr =
			realloc(f->nodes, (f->n_nodes + 1) * sizeof *arr);
		if (arr == NULL)
			abort();
		f->nodes = arr;
		n = &f->nodes[f->n_nodes++];
		memset(n, 0, sizeof *n);
		n->id = id;
		n->boot = boot;
		qsort(f->nodes, f->n_nodes, sizeof *f->nodes, node_cmp);
		n = node_find(f, id);
	}
	/* Attempts of an earlier boot of this node died with it. */
	lose_attempts(c, id, boot, false);
	n = node_find(f, id);
	n->boot = boot;
	n->capacity = cap;
	n->live = true;
	snprintf(n->api_address, sizeof n->api_address, "%s", api ? api : "");
	if (f->hooks.node_heard != NULL)
		f->hooks.node_heard(f->hooks.arg, id);
	place_ready(c);
}

static int due_cmp(const void *a, const void *b)
{
	const struct fsm_step *x = *(struct fsm_step *const *)a;
	const struct fsm_step *y = *(struct fsm_step *const *)b;

	if (x->due_ms != y->due_ms)
		return x->due_ms < y->due_ms ? -1 : 1;
	if (x->run->seq != y->run->seq)
		return x->run->seq < y->run->seq ? -1 : 1;
	return x->index < y->index ? -1 : x->index > y->index;
}

static void apply_wake(struct apply_ctx *c)
{
	struct fsm *f = c->f;
	struct fsm_step **due = NULL;
	size_t n = 0, cap = 0;

	f->result.status = 200;
	for (struct fsm_step **p = &f->waiting; *p != NULL;) {
		struct fsm_step *s = *p;
		if (s->due_ms > c->ts) {
			p = &s->wait_next;
			continue;
		}
		*p = s->wait_next;
		s->wait_next = NULL;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			due = realloc(due, cap * sizeof *due);
			if (due == NULL)
				abort();
		}
		due[n++] = s;
	}
	/* The list's order is not replicated (a restored node rebuilds it);
	 * sort so that every node readies them in the same order. */
	if (n > 0)
		qsort(due, n, sizeof *due, due_cmp);
	for (size_t i = 0; i < n; i++)
		make_ready(c, due[i]);
	free(due);
	place_ready(c);
}

/* Drop a settled run from memory (PostgreSQL is its home from now on). Its
 * last rows go out first, and the next snapshot waits until PostgreSQL has
 * them (pending_history), since a restore could not rebuild them. */
static void evict(struct fsm *f, struct fsm_run *r)
{
	if (r->dirty) {
		for (size_t i = 0; i < f->n_dirty; i++)
			if (f->dirty[i] == r)
				f->dirty[i] = NULL;
		run_rows(f, r);
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
	if (!r->view_dirty)
		view_seq_push(f, r->seq); /* the view drops it */
	{
		struct fsm_flow *fl = r->flow;
		unsigned version = r->version;

		run_free(r); /* reads its spec: before the spec may go */
		fl->versions[version - 1].runs--;
		version_maybe_drop(f, fl, version);
	}
}

/* Append to the settled FIFO. */
static void settled_push(struct fsm *f, struct fsm_run *r)
{
	r->settled = true;
	r->settled_next = NULL;
	if (f->settled_tail != NULL)
		f->settled_tail->settled_next = r;
	else
		f->settled_head = r;
	f->settled_tail = r;
	f->n_settled++;
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
			if (run_terminal(r) && !r->end_seen) {
				r->end_seen = true;
				changed = true;
				fsm__trig_ended(c, r);
			}
			if (r->settled || !run_terminal(r) ||
			    r->active_attempts > 0)
				continue;
			settled_push(f, r);
			changed = true;
			fsm__trig_settled(c, r);
		}
	}
	while (f->retain > 0 && f->n_settled > f->retain) {
		struct fsm_run *r = f->settled_head;
		f->settled_head = r->settled_next;
		if (f->settled_head == NULL)
			f->settled_tail = NULL;
		f->n_settled--;
		evict(f, r);
	}
	run_list_trim(f);
}

/* Dispatch one command by its op. */
static void apply_one(struct apply_ctx *c, json_t *cmd)
{
	struct fsm *f = c->f;
	const char *op = json_string_value(json_object_get(cmd, "op"));
	uint64_t index = c->index;

	if (op == NULL)
		op = "";
	if (strcmp(op, "deploy") == 0)
		apply_deploy(c, cmd);
	else if (strcmp(op, "undeploy") == 0)
		apply_undeploy(c, cmd);
	else if (strcmp(op, "run_create") == 0)
		apply_run_create(c, cmd);
	else if (strcmp(op, "run_cancel") == 0)
		apply_run_cancel(c, cmd);
	else if (strcmp(op, "task_finish") == 0)
		apply_task_finish(c, cmd);
	else if (strcmp(op, "node_up") == 0)
		apply_node_up(c, cmd);
	else if (strcmp(op, "node_alive") == 0)
		apply_node_liveness(c, cmd, true);
	else if (strcmp(op, "node_down") == 0)
		apply_node_liveness(c, cmd, false);
	else if (strcmp(op, "node_remove") == 0)
		apply_node_membership(c, cmd, false);
	else if (strcmp(op, "node_admit") == 0)
		apply_node_membership(c, cmd, true);
	else if (strcmp(op, "wake") == 0)
		apply_wake(c);
	else if (strcmp(op, "fire") == 0)
		fsm__apply_fire(c, cmd);
	else if (strcmp(op, "event") == 0)
		fsm__apply_event(c, cmd);
	else if (strcmp(op, "pause") == 0)
		fsm__apply_pause(c, cmd);
	else if (strcmp(op, "nop") == 0)
		f->result.status = 200;
	else {
		log_error("fsm: unknown op=%s index=%" PRIu64, op, index);
		result_error(f, 400, "invalid_command", "op", "unknown op");
	}
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
		result_error(f, 400, "invalid_command", "", "malformed command");
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

		json_array_foreach(json_object_get(cmd, "cmds"), i, sub) {
			const char *sop = json_string_value(json_object_get(sub, "op"));

			json_decref(f->result.body);
			memset(&f->result, 0, sizeof f->result);
			if (sop != NULL && strcmp(sop, "batch") == 0) {
				result_error(f, 400, "invalid_command", "op",
					     "nested batch");
				continue;
			}
			c.ts = json_integer_value(json_object_get(sub, "ts"));
			apply_one(&c, sub);
		}
	} else {
		apply_one(&c, cmd);
	}
	settle(&c);
	free(c.touched);
	json_decref(cmd);
	return &f->result;
}

/* ------------------------------------------------------------------------
 * Command builders
 */

static int dump_cmd(json_t *cmd, char **out, size_t *len)
{
	char *text;

	if (cmd == NULL)
		return -1;
	text = json_dumps(cmd, JSON_COMPACT);
	json_decref(cmd);
	if (text == NULL)
		return -1;
	*out = text;
	*len = strlen(text);
	return 0;
}

static json_t *cmd_new(const char *op, int64_t ts)
{
	return json_pack("{s:i, s:s, s:I}", "v", FSM_CMD_VERSION, "op", op,
			 "ts", (json_int_t)ts);
}

int fsm_cmd_deploy(int64_t ts, const char *flow, const json_t *spec_doc,
		   char **out, size_t *len)
{
	json_t *c = cmd_new("deploy", ts);

	json_object_set_new(c, "flow", json_string(flow));
	json_object_set(c, "spec", (json_t *)spec_doc);
	return dump_cmd(c, out, len);
}

int fsm_cmd_undeploy(int64_t ts, const char *flow, char **out, size_t *len)
{
	json_t *c = cmd_new("undeploy", ts);

	json_object_set_new(c, "flow", json_string(flow));
	return dump_cmd(c, out, len);
}

int fsm_cmd_run_create(int64_t ts, const char *flow, const json_t *params,
		       const char *idempotency_key,
		       const struct fsm_retention *keep, char **out,
		       size_t *len)
{
	json_t *c = cmd_new("run_create", ts);

	if (keep != NULL && keep->runs > 0)
		json_object_set_new(c, "retain", json_integer((json_int_t)keep->runs));
	if (keep != NULL && keep->keys > 0)
		json_object_set_new(c, "keys", json_integer((json_int_t)keep->keys));
	if (keep != NULL && keep->key_ttl_s > 0)
		json_object_set_new(c, "key_ttl_s",
				    json_integer((json_int_t)keep->key_ttl_s));
	json_object_set_new(c, "flow", json_string(flow));
	if (params != NULL)
		json_object_set(c, "parameters", (json_t *)params);
	if (idempotency_key != NULL)
		json_object_set_new(c, "idempotency_key",
				    json_string(idempotency_key));
	return dump_cmd(c, out, len);
}

int fsm_cmd_run_cancel(int64_t ts, const char *run_id, char **out,
		       size_t *len)
{
	json_t *c = cmd_new("run_cancel", ts);

	json_object_set_new(c, "run", json_string(run_id));
	return dump_cmd(c, out, len);
}

int fsm_cmd_node_up(int64_t ts, uint64_t node, uint64_t boot,
		    unsigned capacity, const char *api_address, char **out,
		    size_t *len)
{
	json_t *c = cmd_new("node_up", ts);

	if (api_address != NULL)
		json_object_set_new(c, "api", json_string(api_address));
	json_object_set_new(c, "node", json_integer((json_int_t)node));
	json_object_set_new(c, "boot", json_integer((json_int_t)boot));
	json_object_set_new(c, "capacity", json_integer(capacity));
	return dump_cmd(c, out, len);
}

static int cmd_node(const char *op, int64_t ts, uint64_t node, uint64_t boot,
		    char **out, size_t *len)
{
	json_t *c = cmd_new(op, ts);

	json_object_set_new(c, "node", json_integer((json_int_t)node));
	json_object_set_new(c, "boot", json_integer((json_int_t)boot));
	return dump_cmd(c, out, len);
}

int fsm_cmd_node_alive(int64_t ts, uint64_t node, uint64_t boot, char **out,
		       size_t *len)
{
	return cmd_node("node_alive", ts, node, boot, out, len);
}

int fsm_cmd_node_down(int64_t ts, uint64_t node, uint64_t boot, char **out,
		      size_t *len)
{
	return cmd_node("node_down", ts, node, boot, out, len);
}

int fsm_cmd_node_remove(int64_t ts, uint64_t node, bool admit, char **out,
			size_t *len)
{
	return cmd_node(admit ? "node_admit" : "node_remove", ts, node, 0, out,
			len);
}

int fsm_cmd_wake(int64_t ts, char **out, size_t *len)
{
	return dump_cmd(cmd_new("wake", ts), out, len);
}

int fsm_cmd_fire(int64_t ts, const json_t *items, unsigned max_buffered,
		 char **out, size_t *len)
{
	json_t *cmd = cmd_new("fire", ts);

	if (cmd == NULL ||
	    json_object_set(cmd, "items", (json_t *)items) != 0 ||
	    json_object_set_new(cmd, "max_buffered",
				json_integer(max_buffered)) != 0) {
		json_decref(cmd);
		return -1;
	}
	return dump_cmd(cmd, out, len);
}

int fsm_cmd_event(int64_t ts, const char *name, const char *id,
		  const json_t *payload, unsigned dedupe_s, unsigned keep,
		  unsigned max_buffered, char **out, size_t *len)
{
	json_t *cmd = cmd_new("event", ts);

	if (cmd == NULL ||
	    json_object_set_new(cmd, "name", json_string(name)) != 0 ||
	    json_object_set_new(cmd, "id", json_string(id)) != 0 ||
	    (payload != NULL &&
	     json_object_set(cmd, "payload", (json_t *)payload) != 0) ||
	    json_object_set_new(cmd, "dedupe_s", json_integer(dedupe_s)) != 0 ||
	    json_object_set_new(cmd, "keep", json_integer(keep)) != 0 ||
	    json_object_set_new(cmd, "max_buffered",
				json_integer(max_buffered)) != 0) {
		json_decref(cmd);
		return -1;
	}
	return dump_cmd(cmd, out, len);
}

int fsm_cmd_pause(int64_t ts, const char *flow, bool paused, char **out,
		  size_t *len)
{
	json_t *cmd = cmd_new("pause", ts);

	if (cmd == NULL ||
	    json_object_set_new(cmd, "flow", json_string(flow)) != 0 ||
	    json_object_set_new(cmd, "paused", json_boolean(paused)) != 0) {
		json_decref(cmd);
		return -1;
	}
	return dump_cmd(cmd, out, len);
}

int fsm_cmd_batch(int64_t ts, const char *const *cmds, const size_t *lens,
		  size_t n, char **out, size_t *len)
{
	struct fsm_text b = {0};
	char head[64];
	int w = snprintf(head, sizeof head,
			 "{\"v\":%d,\"op\":\"batch\",\"ts\":%" PRId64
			 ",\"cmds\":[", FSM_CMD_VERSION, ts);

	if (tb_put(&b, head, (size_t)w) != 0)
		goto fail;
	for (size_t i = 0; i < n; i++) {
		size_t l = lens[i];

		while (l > 0 && cmds[i][l - 1] == '\0')
			l--;
		if ((i > 0 && tb_put(&b, ",", 1) != 0) ||
		    tb_put(&b, cmds[i], l) != 0)
			goto fail;
	}
	if (tb_put(&b, "]}", 2) != 0)
		goto fail;
	*out = b.p;
	*len = b.n;
	return 0;
fail:
	free(b.p);
	return -1;
}

int fsm_cmd_nop(int64_t ts, char **out, size_t *len)
{
	return dump_cmd(cmd_new("nop", ts), out, len);
}

int fsm_cmd_task_finish(int64_t ts, const struct fsm_finish *fin, char **out,
			size_t *len)
{
	json_t *c = cmd_new("task_finish", ts);

	/* A field that cannot be set (text that is not UTF-8, out of memory)
	 * fails the command rather than leaving the field out: apply would
	 * drop an outcome without its reason, and the applier a log without
	 * its text. */
	if (c == NULL ||
	    json_object_set_new(c, "run", json_string(fin->run_id)) != 0 ||
	    json_object_set_new(c, "step", json_string(fin->step)) != 0 ||
	    json_object_set_new(c, "attempt", json_integer(fin->attempt)) != 0 ||
	    json_object_set_new(c, "node",
				json_integer((json_int_t)fin->node)) != 0 ||
	    json_object_set_new(c, "exit_code",
				json_integer(fin->exit_code)) != 0 ||
	    json_object_set_new(c, "signal",
				json_integer(fin->term_signal)) != 0 ||
	    json_object_set_new(c, "reason", json_string(fin->reason)) != 0 ||
	    (fin->detail != NULL && fin->detail[0] != '\0' &&
	     json_object_set_new(c, "detail", json_string(fin->detail)) != 0) ||
	    json_object_set_new(c, "stdout",
				json_string(fin->out ? fin->out : "")) != 0 ||
	    json_object_set_new(c, "stderr",
				json_string(fin->err ? fin->err : "")) != 0 ||
	    json_object_set_new(c, "truncated",
				json_boolean(fin->truncated)) != 0) {
		json_decref(c);
		return -1;
	}
	return dump_cmd(c, out, len);
}

/* ------------------------------------------------------------------------
 * Snapshot and restore
 *
 * The snapshot is one JSON document holding everything apply reads: flows
 * with every version's spec, nodes, runs with steps and attempts, and the
 * order of the ready queue (the only order apply depends on). Counters that
 * can be derived (node.running, run.active_attempts, the retry list) are
 * rebuilt on restore.
 */

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
		return tb_put(b, r->snap_text, r->snap_len);
	json_t *j = snap_run(r);
	text = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (text == NULL)
		return -1;
	rv = tb_put(b, text, strlen(text));
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
					 vers, "trig", fsm__trig_snap_flow(fl)));
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
			 fsm__events_snap(f));
	flows = nodes = NULL;
	if (root == NULL || (head = json_dumps(root, JSON_COMPACT)) == NULL)
		goto out;
	/* The document is `head` with "ready" and "runs" spliced in before its
	 * last '}', written as text: both can hold every queued run. */
	if (tb_put(&b, head, strlen(head) - 1) != 0 ||
	    tb_put(&b, ",\"ready\":[", 10) != 0)
		goto out;
	for (struct fsm_step *s = f->ready_head; s; s = s->ready_next) {
		char item[48];
		int w = snprintf(item, sizeof item, "%s[%" PRIu64 ",%u]",
				 s == f->ready_head ? "" : ",", s->run->seq,
				 s->index);
		if (tb_put(&b, item, (size_t)w) != 0)
			goto out;
	}
	if (tb_put(&b, "],\"runs\":[", 10) != 0)
		goto out;
	bool first = true;
	for (uint64_t seq = f->run_lo; seq <= f->n_runs; seq++) {
		struct fsm_run *r = fsm_run_at(f, seq);

		if (r == NULL)
			continue;
		if ((!first && tb_put(&b, ",", 1) != 0) || put_run(&b, r) != 0)
			goto out;
		first = false;
	}
	if (tb_put(&b, "]}", 2) != 0)
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
			flow_free(fl);
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
			fl->n_versions++;
		}
		if (fl->current > fl->n_versions ||
		    fsm__trig_restore_flow(f, fl, json_object_get(jf, "trig")) != 0)
			return -1;
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
	r = run_new(f, fl, version,
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
	r->end_seen = run_terminal(r);
	if (json_array_size(steps) != r->spec->n_steps || r->params == NULL) {
		run_free(r);
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
				struct fsm_node *n = node_find(f, a->node);
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
	run_list_add(f, r);
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
	f->view_seqs = NULL; /* the kept state's lists stay with it */
	f->view_flows = NULL;
	f->n_view_seqs = f->cap_view_seqs = 0;
	f->n_view_flows = f->cap_view_flows = 0;
	f->nodes = NULL;
	f->n_nodes = 0;
	f->ready_head = f->ready_tail = NULL;
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
		settled_push(f, fsm_run_at(f, seq));
	}
	for (uint64_t seq = f->run_lo; seq <= f->n_runs; seq++)
		if (fsm_run_at(f, seq) != NULL && !fsm_run_at(f, seq)->settled)
			fsm_run_at(f, seq)->flow->active++;
	if (fsm__events_restore(f, json_object_get(root, "events")) != 0)
		goto fail;
	if (restore_keys(f, root) != 0)
		goto fail;
	for (size_t b = 0; b < f->flows.n_buckets; b++)
		for (struct map_entry *e = f->flows.buckets[b]; e; e = e->next)
			for (unsigned k = 1; k < ((struct fsm_flow *)e->value)->n_versions; k++)
				version_maybe_drop(f, e->value, k);
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
		ready_push(f, &r->steps[idx]);
	}
	json_decref(root);
	{
		struct fsm fresh = *f;
		*f = backup;
		state_clear(f); /* the view copies the new state whole */
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
		f->n_runs = fresh.n_runs;
		f->cap_runs = fresh.cap_runs;
		f->idem_max = fresh.idem_max;
		f->idem_ttl_ms = fresh.idem_ttl_ms;
		f->nodes = fresh.nodes;
		f->n_nodes = fresh.n_nodes;
		f->ready_head = fresh.ready_head;
		f->ready_tail = fresh.ready_tail;
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
	state_clear(f);
	free(f->view_flows);
	free(f->view_seqs);
	{
		struct fsm_hooks h = f->hooks;
		*f = backup;
		f->hooks = h;
	}
	return -1;
}
