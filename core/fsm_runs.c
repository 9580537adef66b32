/* fsm_runs.c - runs, steps and attempts: making a run, placing its ready
 * steps on nodes, an attempt's outcome, retries with backoff, cancel, and
 * the lists that order them.
 *
 * DESIGN
 *
 * Happy path. run_create makes the run and its steps; steps without
 * dependencies become READY and are placed at once on the live node with
 * the most free slots (ties: the lowest id, as nodes are sorted by id). The
 * node named in an attempt runs it and proposes task_finish with the
 * outcome; applying that marks the attempt, readies the dependents, retries
 * or fails the step, and ends the run when every step has succeeded.
 *
 * Lists, each in an order every node shares: the run window (runs by seq,
 * f->run_list), the ready FIFO (the order steps are placed in; the snapshot
 * keeps it), the retry list (unordered, so `wake` sorts what is due by due
 * time, run and step), and the settled FIFO (the order runs leave memory
 * in, fsm.c).
 *
 * Failure modes. A task_finish for an attempt that is no longer RUNNING
 * (lost, or from another node) is ignored: this is the fencing that makes a
 * late result harmless. A failed or lost attempt is retried under the
 * step's policy (backoff doubling up to max_backoff_s), else the step fails
 * and the run with it. Parameters that do not resolve are a result
 * (FLOWD_E_INVALID), not a failure.
 *
 * Thread: the loop thread only.
 */
#include "fsm_runs.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsm_rows.h"
#include "log.h"

/* a, b, c, d, e joined into out (size n), cut between UTF-8 characters
 * when it does not fit: a reason is UTF-8 in rows and snapshots
 * (fuzz/corpus/fsm_apply/crash-task-finish-reason-cut-mid-utf8). */
static void cut_join(char *out, size_t n, const char *a, const char *b,
		     const char *c, const char *d, const char *e)
{
	size_t la = strlen(a), lb = strlen(b), lc = strlen(c), ld = strlen(d),
	       le = strlen(e), len = la + lb + lc + ld + le;
	char *all = malloc(len + 1);

	if (all == NULL) {
		out[0] = '\0';
		return;
	}
	memcpy(all, a, la);
	memcpy(all + la, b, lb);
	memcpy(all + la + lb, c, lc);
	memcpy(all + la + lb + lc, d, ld);
	memcpy(all + la + lb + lc + ld, e, le);
	all[len] = '\0';
	len = (size_t)flowd_error_quote_len(all, (int)(n - 1));
	memcpy(out, all, len);
	out[len] = '\0';
	free(all);
}

/* ------------------------------------------------------------------------
 * Runs in memory
 */

/* A new run object with its steps PENDING (not yet in any list). */
struct fsm_run *fsm__run_new(struct fsm *f, struct fsm_flow *fl,
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
	r->told = FSM_TOLD_NONE;
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

void fsm__run_free(struct fsm_run *r)
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
	free(r->origin_id);
	free(r->redrive_key);
	json_decref(r->params);
	json_decref(r->trigger);
	json_decref(r->tags);
	free(r);
}

/* Put a run at its place in the window, run_list[seq - run_lo]. */
void fsm__run_list_add(struct fsm *f, struct fsm_run *r)
{
	size_t at;

	if (f->n_runs == 0 || f->run_list == NULL ||
	    (f->run_lo > f->n_runs && r->seq > f->n_runs)) {
		f->run_lo = r->seq; /* an empty window starts at this run */
		f->run_empty = 0;
	}
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
 * to the newest. The empty front is counted from where the last call
 * stopped (a slot that left memory never fills again): counting it from
 * the start each time cost O(window) per entry, 10% of the loop with
 * 200,000 runs queued. */
void fsm__run_list_trim(struct fsm *f)
{
	size_t len = f->n_runs >= f->run_lo ? f->n_runs - f->run_lo + 1 : 0;
	size_t empty = f->run_empty <= len ? f->run_empty : 0;

	while (empty < len && f->run_list[empty] == NULL)
		empty++;
	f->run_empty = empty;
	if (empty == 0 || (empty < len && empty < 64) ||
	    (empty < len && empty * 2 < len))
		return;
	memmove(f->run_list, f->run_list + empty,
		(len - empty) * sizeof *f->run_list);
	memset(f->run_list + (len - empty), 0, empty * sizeof *f->run_list);
	f->run_lo += empty;
	f->run_empty = 0;
}

struct fsm_run *fsm_run_get(struct fsm *f, const char *id)
{
	return map_get(&f->runs, id);
}

uint64_t fsm_run_seq(const char *id)
{
	unsigned long long seq;
	char *end, canon[32];

	if (id == NULL || strncmp(id, "r-", 2) != 0 || id[2] < '0' ||
	    id[2] > '9')
		return 0;
	seq = strtoull(id + 2, &end, 10);
	if (*end != '\0' || seq == 0)
		return 0;
	snprintf(canon, sizeof canon, "r-%012llu", seq);
	return strcmp(canon, id) == 0 ? (uint64_t)seq : 0;
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

/* Append to the settled FIFO. */
void fsm__settled_push(struct fsm *f, struct fsm_run *r)
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

/* Take the oldest run of the settled FIFO (there is one). */
struct fsm_run *fsm__settled_pop(struct fsm *f)
{
	struct fsm_run *r = f->settled_head;

	f->settled_head = r->settled_next;
	if (f->settled_head == NULL)
		f->settled_tail = NULL;
	f->n_settled--;
	return r;
}

/* ------------------------------------------------------------------------
 * Ready queue, retry list, placement
 */

struct fsm_node *fsm__node_find(struct fsm *f, uint64_t id)
{
	for (unsigned i = 0; i < f->n_nodes; i++)
		if (f->nodes[i].id == id)
			return &f->nodes[i];
	return NULL;
}

void fsm__ready_push(struct fsm *f, struct fsm_step *s)
{
	s->ready_next = NULL;
	if (f->ready_tail != NULL)
		f->ready_tail->ready_next = s;
	else
		f->ready_head = s;
	f->ready_tail = s;
	f->n_ready++;
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
		f->n_ready--;
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

void fsm__make_ready(struct apply_ctx *c, struct fsm_step *s)
{
	s->status = FSM_STEP_READY;
	fsm__ready_push(c->f, s);
	fsm__step_touch(c, s);
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

void fsm__place_ready(struct apply_ctx *c)
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
		f->n_ready--;
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
		fsm__step_touch(c, s);
		if (r->status == FSM_RUN_QUEUED) {
			r->status = FSM_RUN_RUNNING;
			r->started_ms = c->ts;
		}
		if (f->hooks.attempt_placed != NULL)
			f->hooks.attempt_placed(f->hooks.arg, r, s, a);
	}
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
	fsm__run_touch(c, r);
	fsm__count(c, &(struct fsm_count){.kind = FSM_COUNT_RUN_ENDED,
					  .run = r});
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
			fsm__step_touch(c, s);
			break;
		case FSM_STEP_RETRY_WAIT:
			waiting_unlink(f, s);
			s->status = status == FSM_RUN_CANCELLED
					    ? FSM_STEP_CANCELLED
					    : FSM_STEP_SKIPPED;
			s->finished_ms = c->ts;
			fsm__step_touch(c, s);
			break;
		case FSM_STEP_RUNNING: {
			struct fsm_attempt *a =
				&s->attempts[s->n_attempts - 1];
			s->status = FSM_STEP_CANCELLED;
			s->finished_ms = c->ts;
			a->stopping = true;
			a->dirty = true;
			fsm__step_touch(c, s);
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
	fsm__step_touch(c, s);
	for (size_t j = 0; j < spec->n_steps; j++) {
		const struct spec_step *ss = &spec->steps[j];
		for (size_t d = 0; d < ss->n_deps; d++) {
			if (ss->deps[d] != s->index)
				continue;
			struct fsm_step *t = &r->steps[j];
			if (t->deps_left == 0)
				continue;
			t->deps_left--;
			fsm__step_touch(c, t);
			if (t->deps_left == 0 && t->status == FSM_STEP_PENDING)
				fsm__make_ready(c, t);
		}
	}
	for (size_t j = 0; j < spec->n_steps; j++)
		if (!fsm__step_done(&r->steps[j]))
			all = false;
	if (all) {
		r->status = FSM_RUN_SUCCEEDED;
		r->finished_ms = c->ts;
		fsm__run_touch(c, r);
		fsm__count(c, &(struct fsm_count){.kind = FSM_COUNT_RUN_ENDED,
						  .run = r});
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

	/* attempts before a redrive do not count against the policy */
	unsigned tries = s->n_attempts - s->attempt_base;

	if (tries <= ss->retries_max) {
		uint64_t backoff = ss->backoff_s;
		for (unsigned k = 1; k < tries && backoff < ss->max_backoff_s; k++)
			backoff *= 2;
		if (backoff > ss->max_backoff_s)
			backoff = ss->max_backoff_s;
		fsm__step_touch(c, s);
		fsm__count(c, &(struct fsm_count){.kind = FSM_COUNT_RETRY,
						  .run = r, .step = s});
		if (backoff == 0) {
			fsm__make_ready(c, s);
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
	fsm__step_touch(c, s);
	cut_join(reason, sizeof reason, "step ", r->spec->steps[s->index].name,
		 " ", why, "");
	end_run(c, r, FSM_RUN_FAILED, reason);
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
	r = fsm__run_new(f, fl, fl->current, f->next_seq++);
	r->params = resolved;
	r->idempotency_key = key ? strdup(key) : NULL;
	r->trigger = trigger;
	if (r->spec->tags != NULL && json_array_size(r->spec->tags) > 0) {
		r->tags = json_incref(r->spec->tags);
		r->meta_dirty = true;
	}
	r->status = FSM_RUN_QUEUED;
	r->created_ms = c->ts;
	fl->active++;
	fsm__run_list_add(f, r);
	if (key != NULL) {
		idem_put(&f->idem, fl->name, key, r->seq, c->ts);
		fsm__idem_expire(c); /* the count bound holds after each entry */
	}
	fsm__run_touch(c, r);
	for (size_t i = 0; i < r->spec->n_steps; i++) {
		fsm__step_touch(c, &r->steps[i]);
		if (r->steps[i].deps_left == 0)
			fsm__make_ready(c, &r->steps[i]);
	}
	fsm__count(c, &(struct fsm_count){.kind = FSM_COUNT_RUN_CREATED,
					  .run = r});
	fsm__place_ready(c);
	return r;
}

void fsm__run_end(struct apply_ctx *c, struct fsm_run *r,
		  enum fsm_run_status status, const char *reason)
{
	end_run(c, r, status, reason);
	fsm__place_ready(c);
}

/* An attempt stopped running (finished or lost): release its slot. */
static void attempt_release(struct apply_ctx *c, struct fsm_run *r,
			    struct fsm_attempt *a)
{
	struct fsm_node *n = fsm__node_find(c->f, a->node);

	if (n != NULL && n->running > 0)
		n->running--;
	if (r->active_attempts > 0)
		r->active_attempts--;
}

void fsm__attempt_lost(struct apply_ctx *c, struct fsm_run *r,
		       struct fsm_step *s, struct fsm_attempt *a)
{
	attempt_release(c, r, a);
	a->finished_ms = c->ts;
	set_reason(&a->reason, "lost");
	a->dirty = true;
	fsm__step_touch(c, s);
	struct fsm_count what = {.kind = FSM_COUNT_ATTEMPT_ENDED,
				 .run = r, .step = s, .attempt = a};
	if (a->stopping || fsm__run_terminal(r)) {
		a->status = FSM_ATTEMPT_CANCELLED;
		fsm__count(c, &what);
	} else {
		a->status = FSM_ATTEMPT_LOST;
		fsm__count(c, &what);
		step_failed(c, s, "lost its node");
	}
}

/* ------------------------------------------------------------------------
 * Commands
 */

void fsm__apply_run_create(struct apply_ctx *c, json_t *cmd)
{
	struct fsm *f = c->f;
	const char *name = json_string_value(json_object_get(cmd, "flow"));
	const char *key =
		json_string_value(json_object_get(cmd, "idempotency_key"));
	json_t *params = json_object_get(cmd, "parameters");
	struct fsm_flow *fl = name ? map_get(&f->flows, name) : NULL;
	struct flowd_error err;
	struct fsm_run *r;
	json_t *tags = NULL;

	if (fl == NULL) {
		fsm__result_error(f, FLOWD_E_NOT_FOUND, "not_found", "flow",
				  "no such flow");
		return;
	}
	if (fsm__idem_answer(c, cmd, name, key))
		return;
	if (fl->current == 0) {
		fsm__result_error(f, FLOWD_E_CONFLICT, "flow_undeployed",
				  "flow", "the flow is not deployed");
		return;
	}
	if (json_is_null(params))
		params = NULL;
	if (fsm__tags_merge(c, cmd, fl->versions[fl->current - 1].spec->tags,
			    json_object_get(cmd, "tags"), &tags) != 0)
		return;
	r = fsm__run_start(c, fl, params, key, NULL, &err);
	if (r == NULL) {
		json_decref(tags);
		f->result.err = err;
		if (err.errc == FLOWD_OK) /* not expected */
			f->result.err.errc = FLOWD_E_INVALID;
		return;
	}
	json_decref(r->tags);
	r->tags = json_array_size(tags) > 0 ? tags : NULL;
	if (r->tags == NULL)
		json_decref(tags);
	r->meta_dirty = r->tags != NULL;
	f->result.created = true;
	f->result.run = r;
}

bool fsm__idem_answer(struct apply_ctx *c, const json_t *cmd,
		      const char *flow, const char *key)
{
	struct fsm *f = c->f;
	struct fsm_run *r;
	const char *id;

	fsm__keep_read(c, cmd);
	/* keys past their retention are gone before this one is looked up */
	fsm__idem_expire(c);
	if (key == NULL || (id = fsm_idem_lookup(f, flow, key, &r)) == NULL)
		return false;
	f->result.run = r; /* NULL once evicted */
	f->result.run_id = id;
	return true;
}

void fsm__keep_read(struct apply_ctx *c, const json_t *cmd)
{
	struct fsm *f = c->f;

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
}

/* The tag bounds a command carries (limits.max_tags_per_run,
 * max_tag_bytes), else the defaults. */
static void tag_bounds(const json_t *cmd, size_t *max_tags, size_t *max_bytes)
{
	json_t *v = json_object_get(cmd, "max_tags");

	*max_tags = json_is_integer(v) ? (size_t)json_integer_value(v) : 50;
	v = json_object_get(cmd, "max_tag_bytes");
	*max_bytes = json_is_integer(v) ? (size_t)json_integer_value(v) : 128;
}

/* Each item of `tags` a user tag within the bounds; else the result. */
static int tags_check(struct apply_ctx *c, const json_t *cmd,
		      const json_t *tags, const char *name)
{
	size_t max_tags, max_bytes, i;
	const char *why;
	char field[64];
	json_t *t;

	tag_bounds(cmd, &max_tags, &max_bytes);
	json_array_foreach(tags, i, t) {
		snprintf(field, sizeof field, "%s[%zu]", name, i);
		why = json_is_string(t) ? spec_tag_check(json_string_value(t),
							 max_bytes)
					: "must be a string";
		if (why != NULL) {
			fsm__result_error(c->f, FLOWD_E_INVALID,
					  "invalid_value", field, why);
			return -1;
		}
	}
	return 0;
}

int fsm__tags_count_check(struct apply_ctx *c, const json_t *cmd,
			  const json_t *tags, const char *field)
{
	size_t max_tags, max_bytes;

	tag_bounds(cmd, &max_tags, &max_bytes);
	if (json_array_size(tags) <= max_tags)
		return 0;
	flowd_error_set(&c->f->result.err, FLOWD_E_INVALID, "too_many_tags",
			field, "a run carries at most %zu user tags "
			"(limits.max_tags_per_run)", max_tags);
	return -1;
}

int fsm__tags_merge(struct apply_ctx *c, const json_t *cmd,
		    const json_t *base, const json_t *more, json_t **out)
{
	json_t *all;

	*out = NULL;
	if (more != NULL && !json_is_array(more)) {
		fsm__result_error(c->f, FLOWD_E_INVALID, "invalid_type",
				  "tags", "must be an array of strings");
		return -1;
	}
	if (more != NULL && tags_check(c, cmd, more, "tags") != 0)
		return -1;
	all = json_array();
	if (all == NULL)
		abort();
	if (base != NULL)
		json_array_extend(all, (json_t *)base);
	if (more != NULL)
		json_array_extend(all, (json_t *)more);
	*out = spec_tags_normalize(all);
	json_decref(all);
	if (*out == NULL)
		abort();
	if (fsm__tags_count_check(c, cmd, *out, "tags") != 0) {
		json_decref(*out);
		*out = NULL;
		return -1;
	}
	return 0;
}

int fsm__tags_edit_check(struct apply_ctx *c, const json_t *cmd,
			 const json_t *add, const json_t *remove)
{
	size_t i;
	json_t *t;

	if (tags_check(c, cmd, add, "add") != 0)
		return -1;
	json_array_foreach(remove, i, t) {
		char field[64];

		snprintf(field, sizeof field, "remove[%zu]", i);
		if (!json_is_string(t)) {
			fsm__result_error(c->f, FLOWD_E_INVALID,
					  "invalid_type", field,
					  "must be a string");
			return -1;
		}
		if (spec_tag_system(json_string_value(t))) {
			fsm__result_error(c->f, FLOWD_E_INVALID,
					  "invalid_value", field,
					  "system tags cannot be removed");
			return -1;
		}
	}
	return 0;
}

void fsm__apply_run_cancel(struct apply_ctx *c, json_t *cmd)
{
	struct fsm *f = c->f;
	const char *id = json_string_value(json_object_get(cmd, "run"));
	struct fsm_run *r = id ? map_get(&f->runs, id) : NULL;

	if (r == NULL) {
		fsm__result_error(f, FLOWD_E_NOT_FOUND, "not_found", "run",
				  "no such run");
		return;
	}
	f->result.run = r;
	if (fsm__run_terminal(r)) {
		fsm__result_error(f, FLOWD_E_CONFLICT, "run_finished", "run",
				  "the run has already finished");
		return;
	}
	fsm__run_end(c, r, FSM_RUN_CANCELLED, "cancelled by request");
}

static struct fsm_step *step_by_name(struct fsm_run *r, const char *name)
{
	for (size_t i = 0; i < r->spec->n_steps; i++)
		if (strcmp(r->spec->steps[i].name, name) == 0)
			return &r->steps[i];
	return NULL;
}

void fsm__apply_task_finish(struct apply_ctx *c, json_t *cmd)
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
		fsm__result_error(f, FLOWD_E_NOT_FOUND, "not_found", "attempt",
				  "no such attempt");
		return;
	}
	a = &s->attempts[n - 1];
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
		fsm__record_log(r->id, sname, n, json_object_get(cmd, "stdout"),
				json_object_get(cmd, "stderr"),
				json_object_get(cmd, "truncated")));
	attempt_release(c, r, a);
	a->finished_ms = c->ts;
	a->exit_code = exit_code;
	a->term_signal = sig;
	if (detail != NULL && detail[0] != '\0') {
		cut_join(why, sizeof why, reason, ": ", detail, "", "");
		set_reason(&a->reason, why);
	} else {
		set_reason(&a->reason, reason);
	}
	a->dirty = true;
	fsm__step_touch(c, s);
	struct fsm_count what = {.kind = FSM_COUNT_ATTEMPT_ENDED,
				 .run = r, .step = s, .attempt = a};
	if (a->stopping || fsm__run_terminal(r)) {
		a->status = FSM_ATTEMPT_CANCELLED;
		fsm__count(c, &what);
	} else if (strcmp(reason, "exited") == 0 && exit_code == 0 &&
		   sig == 0) {
		a->status = FSM_ATTEMPT_SUCCEEDED;
		fsm__count(c, &what);
		step_succeeded(c, s);
	} else {
		a->status = FSM_ATTEMPT_FAILED;
		fsm__count(c, &what);
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
	fsm__place_ready(c);
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

void fsm__apply_wake(struct apply_ctx *c)
{
	struct fsm *f = c->f;
	struct fsm_step **due = NULL;
	size_t n = 0, cap = 0;

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
		fsm__make_ready(c, due[i]);
	free(due);
	fsm__place_ready(c);
}
