/* view.c - the read view: immutable versions of what the API reads,
 * published by the loop, read by the HTTP threads without a lock.
 *
 * DESIGN
 *
 * Happy path. After each batch of applies the loop calls
 * view_store_update(), which copies every run and flow the batch changed
 * (fsm.view_seqs, fsm.view_flows) into new immutable objects (struct vrun,
 * struct vflow), and view_store_publish(), which makes a new version (struct
 * view) of them visible with one atomic store. A reader on any thread takes
 * the newest version with view_acquire(), renders what it needs from it
 * (JSON, rendered lazily and cached in the object for the next reader), and
 * lets go with view_release(). The loop never waits for a reader and a
 * reader never waits for the loop.
 *
 * Copy on write. Runs sit in a vector indexed by seq, flows in a vector
 * indexed by a slot given at their first copy; both vectors are arrays of
 * chunks of CHUNK_SIZE item pointers. A version holds a reference on each of
 * its chunks; the loop's vector being built holds one too. The loop writes a
 * chunk in place only while no version references it (refs == 1), else it
 * copies the chunk first. A new version therefore costs one small array of
 * chunk pointers, and a batch that changed a few runs copies a few chunks.
 * Chunks of runs that all left memory are dropped from the front.
 *
 * Reference counts (chunks, runs, flows, texts, the name table, specs) are
 * changed by the loop thread only: a reader only reads, so they need no
 * atomics. What keeps a version alive while a reader holds it is a hazard
 * pointer: the reader stores the version it took in a hazard record and
 * checks that it is still the newest (so a publish after the check finds
 * the record); the loop frees a replaced version only when no record names
 * it (Michael, "Hazard Pointers", IEEE TPDS 2004). Records are reused
 * (in_use) and freed with the store.
 *
 * Flow names. Flows are never removed from the state machine (undeploy
 * keeps their history), so the name table is insert-only: open addressing
 * whose entries are published with a release store; a grown array keeps its
 * predecessors until the table is freed, so a reader probing an old array
 * stays safe. A flow found by name but newer than the reader's version is
 * not in that version (its slot is past the version's flows).
 *
 * Failure modes. Out of memory on the loop aborts (as apply does: a view
 * that silently missed a change would answer wrongly for ever); a reader
 * that runs out of memory gets NULL and answers an error. After a restore the
 * whole state is copied into fresh vectors and a fresh name table.
 *
 * Threads: view_store_* on the loop thread; view_acquire, view_release and
 * the view_*_text readers on any thread.
 */
#include "view.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cron.h"
#include "map.h"
#include "spec.h"

#define CHUNK_BITS 8
#define CHUNK_SIZE (1u << CHUNK_BITS)

static void *xmalloc(size_t n)
{
	void *p = malloc(n);

	if (p == NULL)
		abort(); /* the loop: see DESIGN */
	return p;
}

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n, size);

	if (p == NULL)
		abort();
	return p;
}

static char *xstrdup(const char *s)
{
	char *p;

	if (s == NULL)
		return NULL;
	p = strdup(s);
	if (p == NULL)
		abort();
	return p;
}

/* ------------------------------------------------------------------------
 * Texts the daemon hands over
 */

struct blob {
	unsigned refs;
	char text[];
};

static struct blob *blob_new(const char *text)
{
	size_t n = strlen(text);
	struct blob *b = xmalloc(sizeof *b + n + 1);

	b->refs = 1;
	memcpy(b->text, text, n + 1);
	return b;
}

static void blob_unref(struct blob *b)
{
	if (b != NULL && --b->refs == 0)
		free(b);
}

/* ------------------------------------------------------------------------
 * Runs
 */

/* What never changes in a run: shared by all its copies. */
struct vrun_base {
	unsigned refs;
	uint64_t seq;
	char id[32];
	char *flow;                 /* owned */
	unsigned version;
	struct flow_spec *spec;     /* a reference: step names, dependencies */
	json_t *params;             /* a reference (never changed after
	                             * creation) */
	json_t *trigger;            /* a reference, or NULL (manual) */
	char *idem;                 /* owned, may be NULL */
	int64_t created_ms;
	char *origin;               /* owned: the run it resumes, or NULL */
};

struct vattempt {
	int64_t started_ms, finished_ms;
	uint64_t node;
	unsigned n;
	int exit_code, term_signal;
	uint8_t status;
	const char *reason;         /* in the run's block, or NULL */
};

struct vstep {
	int64_t started_ms, finished_ms;
	unsigned n_attempts;
	uint8_t status;
	struct vattempt *attempts;  /* in the run's block */
	uint64_t reused_seq;        /* REUSED: the run whose attempt it took */
	unsigned reused_attempt;
};

/* One run as of one batch: a single allocation (steps, attempts and
 * strings follow the struct). */
struct vrun {
	unsigned refs;
	struct vrun_base *base;
	uint8_t status;
	const char *reason;         /* in the block, or NULL */
	int64_t started_ms, finished_ms;
	size_t n_steps;
	struct vstep *steps;
	_Atomic(char *) text;       /* GET /v1/runs/{id}, rendered once */
	_Atomic(char *) summary;    /* an item of GET /v1/runs */
	uint64_t mod_index;         /* the applied index it was copied at */
	json_t *tags;               /* a reference (never changed: a tag
	                             * change makes a new array), or NULL */
	unsigned redrive_count;
};

static void base_unref(struct vrun_base *b)
{
	if (--b->refs > 0)
		return;
	free(b->flow);
	free(b->idem);
	free(b->origin);
	spec_free(b->spec);
	json_decref(b->params);
	json_decref(b->trigger);
	free(b);
}

static struct vrun_base *base_new(const struct fsm_run *r)
{
	struct vrun_base *b = xcalloc(1, sizeof *b);

	b->refs = 1;
	b->seq = r->seq;
	snprintf(b->id, sizeof b->id, "%s", r->id);
	b->flow = xstrdup(r->flow->name);
	b->version = r->version;
	b->spec = spec_ref((struct flow_spec *)r->spec);
	b->params = json_incref(r->params);
	b->trigger = json_incref(r->trigger);
	b->idem = xstrdup(r->idempotency_key);
	b->created_ms = r->created_ms;
	b->origin = xstrdup(r->origin_id);
	return b;
}

static size_t str_size(const char *s)
{
	return s != NULL ? strlen(s) + 1 : 0;
}

/* Copy `s` to *at inside a block; returns the copy (NULL for NULL). */
static const char *put_str(char **at, const char *s)
{
	size_t n = str_size(s);
	char *p = *at;

	if (n == 0)
		return NULL;
	memcpy(p, s, n);
	*at += n;
	return p;
}

/* A copy of `r`, sharing `base` when given (else a new one). */
static struct vrun *vrun_new(const struct fsm_run *r, struct vrun_base *base)
{
	size_t n_steps = r->spec->n_steps, n_att = 0, strings;
	struct vrun *v;
	struct vattempt *att;
	char *str;

	strings = str_size(r->reason);
	for (size_t i = 0; i < n_steps; i++) {
		n_att += r->steps[i].n_attempts;
		for (unsigned k = 0; k < r->steps[i].n_attempts; k++)
			strings += str_size(r->steps[i].attempts[k].reason);
	}
	v = xmalloc(sizeof *v + n_steps * sizeof *v->steps +
		    n_att * sizeof *att + strings);
	v->refs = 1;
	v->base = base != NULL ? base : base_new(r);
	v->status = (uint8_t)r->status;
	v->tags = json_incref(r->tags);
	v->redrive_count = r->redrive_count;
	v->started_ms = r->started_ms;
	v->finished_ms = r->finished_ms;
	v->n_steps = n_steps;
	v->steps = (struct vstep *)(v + 1);
	att = (struct vattempt *)(v->steps + n_steps);
	str = (char *)(att + n_att);
	atomic_init(&v->text, NULL);
	atomic_init(&v->summary, NULL);
	v->reason = put_str(&str, r->reason);
	for (size_t i = 0; i < n_steps; i++) {
		const struct fsm_step *s = &r->steps[i];
		struct vstep *vs = &v->steps[i];

		vs->status = (uint8_t)s->status;
		vs->started_ms = s->started_ms;
		vs->finished_ms = s->finished_ms;
		vs->n_attempts = s->n_attempts;
		vs->reused_seq = s->reused_seq;
		vs->reused_attempt = s->reused_attempt;
		vs->attempts = att;
		for (unsigned k = 0; k < s->n_attempts; k++, att++) {
			const struct fsm_attempt *a = &s->attempts[k];

			att->n = a->n;
			att->node = a->node;
			att->status = (uint8_t)a->status;
			att->exit_code = a->exit_code;
			att->term_signal = a->term_signal;
			att->started_ms = a->started_ms;
			att->finished_ms = a->finished_ms;
			att->reason = put_str(&str, a->reason);
		}
	}
	return v;
}

static void vrun_ref(void *p)
{
	((struct vrun *)p)->refs++;
}

static void vrun_unref(void *p)
{
	struct vrun *v = p;

	if (--v->refs > 0)
		return;
	free(atomic_load(&v->text));
	free(atomic_load(&v->summary));
	json_decref(v->tags);
	base_unref(v->base);
	free(v);
}

/* ------------------------------------------------------------------------
 * Flows
 */

struct vversions {
	unsigned refs;
	unsigned n;
	struct {
		unsigned version;
		int64_t created_ms;
		struct flow_spec *spec; /* a reference */
	} v[];
};

struct vflow {
	unsigned refs;
	char *name;                 /* in the block */
	unsigned current;           /* 0 = undeployed */
	bool paused;
	int64_t created_ms, updated_ms;
	struct vversions *versions; /* shared while the versions are the same */
	unsigned n_sched;
	struct fsm_schedule_state *sched; /* in the block; key NULL */
	uint64_t mod_index;         /* the applied index it was copied at */
};

static void versions_unref(struct vversions *vv)
{
	if (vv == NULL || --vv->refs > 0)
		return;
	for (unsigned i = 0; i < vv->n; i++)
		spec_free(vv->v[i].spec);
	free(vv);
}

static struct vversions *versions_new(const struct fsm_flow *fl)
{
	struct vversions *vv =
		xmalloc(sizeof *vv + fl->n_versions * sizeof vv->v[0]);

	vv->refs = 1;
	vv->n = fl->n_versions;
	for (unsigned i = 0; i < fl->n_versions; i++) {
		vv->v[i].version = fl->versions[i].version;
		vv->v[i].created_ms = fl->versions[i].created_ms;
		vv->v[i].spec = fl->versions[i].spec != NULL
					? spec_ref(fl->versions[i].spec)
					: NULL;
	}
	return vv;
}

static bool versions_same(const struct vversions *vv, const struct fsm_flow *fl)
{
	if (vv == NULL || vv->n != fl->n_versions)
		return false;
	for (unsigned i = 0; i < vv->n; i++)
		if (vv->v[i].spec != fl->versions[i].spec)
			return false;
	return true;
}

/* A copy of `fl`; its versions are shared with `prev` when unchanged. */
static struct vflow *vflow_new(const struct fsm_flow *fl,
			       const struct vflow *prev)
{
	size_t name = strlen(fl->name) + 1;
	struct vflow *v = xmalloc(sizeof *v + fl->n_sched * sizeof *v->sched +
				  name);

	v->refs = 1;
	v->sched = (struct fsm_schedule_state *)(v + 1);
	v->name = (char *)(v->sched + fl->n_sched);
	memcpy(v->name, fl->name, name);
	v->current = fl->current;
	v->paused = fl->paused;
	v->created_ms = fl->created_ms;
	v->updated_ms = fl->updated_ms;
	if (prev != NULL && versions_same(prev->versions, fl)) {
		v->versions = prev->versions;
		v->versions->refs++;
	} else {
		v->versions = versions_new(fl);
	}
	v->n_sched = fl->n_sched;
	for (unsigned i = 0; i < fl->n_sched; i++) {
		v->sched[i] = fl->sched[i];
		v->sched[i].key = NULL;
	}
	return v;
}

static void vflow_ref(void *p)
{
	((struct vflow *)p)->refs++;
}

static void vflow_unref(void *p)
{
	struct vflow *v = p;

	if (--v->refs > 0)
		return;
	versions_unref(v->versions);
	free(v);
}

/* The spec shown for a flow: the current version's, or the last one's. */
static const struct flow_spec *vflow_spec(const struct vflow *v)
{
	unsigned n = v->current ? v->current : v->versions->n;

	return n > 0 && n <= v->versions->n ? v->versions->v[n - 1].spec : NULL;
}

/* ------------------------------------------------------------------------
 * Copy-on-write vectors of chunks
 */

struct chunk {
	unsigned refs;
	unsigned live;              /* items not NULL */
	void *item[CHUNK_SIZE];
};

struct vec {
	size_t base;                /* the chunk index of chunks[0] */
	size_t n, cap;
	struct chunk **chunks;      /* NULL = no item in that chunk */
	void (*ref)(void *);
	void (*unref)(void *);
};

static void chunk_unref(struct chunk *c, void (*unref)(void *))
{
	if (c == NULL || --c->refs > 0)
		return;
	for (unsigned i = 0; i < CHUNK_SIZE; i++)
		if (c->item[i] != NULL)
			unref(c->item[i]);
	free(c);
}

static void vec_clear(struct vec *v)
{
	for (size_t i = 0; i < v->n; i++)
		chunk_unref(v->chunks[i], v->unref);
	free(v->chunks);
	v->chunks = NULL;
	v->n = v->cap = v->base = 0;
}

/* The item at `idx` of the builder's vector (borrowed), or NULL. */
static void *vec_get(const struct vec *v, size_t idx)
{
	size_t ci = idx >> CHUNK_BITS;

	if (ci < v->base || ci - v->base >= v->n ||
	    v->chunks[ci - v->base] == NULL)
		return NULL;
	return v->chunks[ci - v->base]->item[idx & (CHUNK_SIZE - 1)];
}

/* Store `item` (a reference is stolen; NULL clears) at `idx`. */
static void vec_set(struct vec *v, size_t idx, void *item)
{
	size_t ci = idx >> CHUNK_BITS, k = idx & (CHUNK_SIZE - 1);
	struct chunk *c, **slot;
	void *old;

	if (ci < v->base) {
		/* only runs that left memory are below the first chunk */
		if (item != NULL)
			abort();
		return;
	}
	if (v->n == 0)
		v->base = ci;
	if (ci - v->base >= v->n) {
		size_t n = ci - v->base + 1;

		if (item == NULL)
			return;
		if (n > v->cap) {
			size_t cap = v->cap ? v->cap : 8;

			while (cap < n)
				cap *= 2;
			v->chunks = realloc(v->chunks, cap * sizeof *v->chunks);
			if (v->chunks == NULL)
				abort();
			v->cap = cap;
		}
		memset(v->chunks + v->n, 0, (n - v->n) * sizeof *v->chunks);
		v->n = n;
	}
	slot = &v->chunks[ci - v->base];
	c = *slot;
	if (c == NULL) {
		if (item == NULL)
			return;
		c = xcalloc(1, sizeof *c);
		c->refs = 1;
		*slot = c;
	} else if (c->refs > 1) {
		/* a published version holds it: copy before writing */
		struct chunk *copy = xmalloc(sizeof *copy);

		*copy = *c;
		copy->refs = 1;
		for (unsigned i = 0; i < CHUNK_SIZE; i++)
			if (copy->item[i] != NULL)
				v->ref(copy->item[i]);
		c->refs--;
		c = copy;
		*slot = c;
	}
	old = c->item[k];
	c->item[k] = item;
	c->live += (item != NULL) - (old != NULL);
	if (old != NULL)
		v->unref(old);
}

/* Drop leading chunks with no item whose every index is below `end`
 * (runs that were all created and all left memory). */
static void vec_trim(struct vec *v, uint64_t end)
{
	size_t drop = 0;

	while (drop < v->n &&
	       ((uint64_t)v->base + drop + 1) * CHUNK_SIZE <= end &&
	       (v->chunks[drop] == NULL || v->chunks[drop]->live == 0)) {
		chunk_unref(v->chunks[drop], v->unref);
		drop++;
	}
	if (drop == 0)
		return;
	memmove(v->chunks, v->chunks + drop, (v->n - drop) * sizeof *v->chunks);
	v->n -= drop;
	v->base += drop;
}

/* ------------------------------------------------------------------------
 * The flow name table (insert-only; see DESIGN)
 */

struct name_ent {
	unsigned slot;
	char name[];
};

struct name_arr {
	size_t cap;                 /* a power of two */
	struct name_arr *older;     /* kept until the table is freed */
	_Atomic(struct name_ent *) e[];
};

struct names {
	unsigned refs;
	size_t n;
	_Atomic(struct name_arr *) arr;
};

static struct name_arr *name_arr_new(size_t cap)
{
	struct name_arr *a = xmalloc(sizeof *a + cap * sizeof a->e[0]);

	a->cap = cap;
	a->older = NULL;
	for (size_t i = 0; i < cap; i++)
		atomic_init(&a->e[i], NULL);
	return a;
}

static struct names *names_new(void)
{
	struct names *t = xcalloc(1, sizeof *t);

	t->refs = 1;
	atomic_init(&t->arr, name_arr_new(64));
	return t;
}

static void names_unref(struct names *t)
{
	struct name_arr *a;

	if (t == NULL || --t->refs > 0)
		return;
	a = atomic_load(&t->arr);
	for (size_t i = 0; i < a->cap; i++)
		free(atomic_load(&a->e[i]));
	while (a != NULL) {
		struct name_arr *older = a->older;

		free(a);
		a = older;
	}
	free(t);
}

static void arr_put(struct name_arr *a, struct name_ent *e)
{
	size_t h = (size_t)map_fnv1a(e->name, MAP_FNV_SEED) & (a->cap - 1);

	while (atomic_load_explicit(&a->e[h], memory_order_relaxed) != NULL)
		h = (h + 1) & (a->cap - 1);
	atomic_store_explicit(&a->e[h], e, memory_order_release);
}

/* Loop: add `name` with `slot` (the name is not in the table). */
static void names_add(struct names *t, const char *name, unsigned slot)
{
	struct name_arr *a = atomic_load_explicit(&t->arr, memory_order_relaxed);
	size_t len = strlen(name) + 1;
	struct name_ent *e = xmalloc(sizeof *e + len);

	e->slot = slot;
	memcpy(e->name, name, len);
	if ((t->n + 1) * 2 > a->cap) {
		struct name_arr *g = name_arr_new(a->cap * 2);

		for (size_t i = 0; i < a->cap; i++) {
			struct name_ent *x = atomic_load_explicit(
				&a->e[i], memory_order_relaxed);
			if (x != NULL)
				arr_put(g, x);
		}
		g->older = a;
		atomic_store_explicit(&t->arr, g, memory_order_release);
		a = g;
	}
	arr_put(a, e);
	t->n++;
}

/* Any thread: the slot of `name`, or -1. */
static long names_find(const struct names *t, const char *name)
{
	struct name_arr *a =
		atomic_load_explicit(&((struct names *)t)->arr,
				     memory_order_acquire);
	size_t h = (size_t)map_fnv1a(name, MAP_FNV_SEED) & (a->cap - 1);

	for (;;) {
		struct name_ent *e =
			atomic_load_explicit(&a->e[h], memory_order_acquire);

		if (e == NULL)
			return -1;
		if (strcmp(e->name, name) == 0)
			return (long)e->slot;
		h = (h + 1) & (a->cap - 1);
	}
}

/* ------------------------------------------------------------------------
 * Versions and the store
 */

struct view {
	uint64_t applied_index;
	uint64_t runs_index, flows_index; /* the last changes of any run, any
	                                   * flow */
	uint64_t n_runs;            /* the highest seq created */
	size_t run_base, n_run_chunks;
	struct chunk **run_chunks;  /* after the struct */
	size_t n_flows, n_flow_chunks;
	struct chunk **flow_chunks; /* after run_chunks */
	struct names *names;
	struct view_cluster cl;
	struct blob *text[VIEW_TEXT_COUNT];
	struct view *retired_next;  /* the loop's list of replaced versions */
};

struct hazard {
	_Atomic(const struct view *) ptr;
	atomic_int in_use;
	struct hazard *next;        /* never changes once pushed */
};

struct view_store {
	_Atomic(struct view *) current;
	_Atomic(struct hazard *) hazards;
	/* The loop's side. */
	struct view *retired;
	size_t n_retired;
	struct vec runs;            /* by seq - 1 */
	struct vec flows;           /* by slot */
	size_t n_flows;
	uint64_t n_runs, applied_index;
	uint64_t runs_index, flows_index;
	struct names *names;
	struct blob *text[VIEW_TEXT_COUNT];
};

static void view_free(struct view *v)
{
	for (size_t i = 0; i < v->n_run_chunks; i++)
		chunk_unref(v->run_chunks[i], vrun_unref);
	for (size_t i = 0; i < v->n_flow_chunks; i++)
		chunk_unref(v->flow_chunks[i], vflow_unref);
	names_unref(v->names);
	for (int i = 0; i < VIEW_TEXT_COUNT; i++)
		blob_unref(v->text[i]);
	free(v);
}

static void builder_reset(struct view_store *s)
{
	vec_clear(&s->runs);
	vec_clear(&s->flows);
	names_unref(s->names);
	s->names = names_new();
	s->n_flows = 0;
	s->n_runs = 0;
}

struct view_store *view_store_new(void)
{
	struct view_store *s = calloc(1, sizeof *s);
	static const struct view_cluster none = {.role = "unavailable",
						 .not_ready = "starting"};

	if (s == NULL)
		return NULL;
	s->runs.ref = vrun_ref;
	s->runs.unref = vrun_unref;
	s->flows.ref = vflow_ref;
	s->flows.unref = vflow_unref;
	s->names = names_new();
	atomic_init(&s->current, NULL);
	atomic_init(&s->hazards, NULL);
	view_store_publish(s, &none);
	return s;
}

void view_store_free(struct view_store *s)
{
	struct hazard *h;

	if (s == NULL)
		return;
	while (s->retired != NULL) {
		struct view *v = s->retired;

		s->retired = v->retired_next;
		view_free(v);
	}
	view_free(atomic_load(&s->current));
	vec_clear(&s->runs);
	vec_clear(&s->flows);
	names_unref(s->names);
	for (int i = 0; i < VIEW_TEXT_COUNT; i++)
		blob_unref(s->text[i]);
	h = atomic_load(&s->hazards);
	while (h != NULL) {
		struct hazard *next = h->next;

		free(h);
		h = next;
	}
	free(s);
}

static void take_run(struct view_store *s, struct fsm *f, uint64_t seq)
{
	struct fsm_run *r = fsm_run_at(f, seq);
	struct vrun *prev = vec_get(&s->runs, seq - 1);
	struct vrun_base *base = NULL;

	if (r == NULL) {
		vec_set(&s->runs, seq - 1, NULL); /* it left memory */
		return;
	}
	r->view_dirty = false;
	if (prev != NULL && prev->base->seq == seq) {
		base = prev->base;
		base->refs++;
	}
	struct vrun *v = vrun_new(r, base);
	v->mod_index = f->applied_index;
	vec_set(&s->runs, seq - 1, v);
}

static void take_flow(struct view_store *s, struct fsm_flow *fl,
		      uint64_t applied)
{
	struct vflow *prev = NULL;

	fl->view_dirty = false;
	if (fl->view_slot == 0) {
		fl->view_slot = (unsigned)++s->n_flows;
		names_add(s->names, fl->name, fl->view_slot - 1);
	} else {
		prev = vec_get(&s->flows, fl->view_slot - 1);
	}
	struct vflow *v = vflow_new(fl, prev);
	v->mod_index = applied;
	vec_set(&s->flows, fl->view_slot - 1, v);
}

void view_store_update(struct view_store *s, struct fsm *f)
{
	if (f->view_reset) {
		/* a restore replaced the state: copy all of it */
		builder_reset(s);
		for (size_t b = 0; b < f->flows.n_buckets; b++)
			for (struct map_entry *e = f->flows.buckets[b]; e;
			     e = e->next)
				((struct fsm_flow *)e->value)->view_slot = 0;
		for (uint64_t seq = f->run_lo; seq <= f->n_runs; seq++)
			if (fsm_run_at(f, seq) != NULL)
				take_run(s, f, seq);
		for (size_t b = 0; b < f->flows.n_buckets; b++)
			for (struct map_entry *e = f->flows.buckets[b]; e;
			     e = e->next)
				take_flow(s, e->value, f->applied_index);
		s->runs_index = s->flows_index = f->applied_index;
	}
	if (f->n_view_seqs > 0)
		s->runs_index = f->applied_index;
	if (f->n_view_flows > 0)
		s->flows_index = f->applied_index;
	for (size_t i = 0; i < f->n_view_seqs; i++)
		take_run(s, f, f->view_seqs[i]);
	for (size_t i = 0; i < f->n_view_flows; i++)
		take_flow(s, f->view_flows[i], f->applied_index);
	fsm_view_taken(f);
	s->n_runs = f->n_runs;
	s->applied_index = f->applied_index;
}

void view_store_set_text(struct view_store *s, enum view_text which,
			 const char *text)
{
	blob_unref(s->text[which]);
	s->text[which] = text != NULL ? blob_new(text) : NULL;
}

static bool hazarded(struct view_store *s, const struct view *v)
{
	for (struct hazard *h = atomic_load(&s->hazards); h != NULL;
	     h = h->next)
		if (atomic_load(&h->ptr) == v)
			return true;
	return false;
}

/* Free the replaced versions no reader holds. */
static void reclaim(struct view_store *s)
{
	struct view **pp = &s->retired;

	while (*pp != NULL) {
		struct view *v = *pp;

		if (hazarded(s, v)) {
			pp = &v->retired_next;
			continue;
		}
		*pp = v->retired_next;
		s->n_retired--;
		view_free(v);
	}
}

void view_store_publish(struct view_store *s, const struct view_cluster *cl)
{
	size_t nr, nf;
	struct view *v, *old;

	vec_trim(&s->runs, s->n_runs);
	nr = s->runs.n;
	nf = s->flows.n;
	v = xmalloc(sizeof *v + (nr + nf) * sizeof(struct chunk *));
	v->applied_index = s->applied_index;
	v->runs_index = s->runs_index;
	v->flows_index = s->flows_index;
	v->n_runs = s->n_runs;
	v->run_base = s->runs.base;
	v->n_run_chunks = nr;
	v->run_chunks = (struct chunk **)(v + 1);
	v->n_flows = s->n_flows;
	v->n_flow_chunks = nf;
	v->flow_chunks = v->run_chunks + nr;
	for (size_t i = 0; i < nr; i++) {
		v->run_chunks[i] = s->runs.chunks[i];
		if (v->run_chunks[i] != NULL)
			v->run_chunks[i]->refs++;
	}
	for (size_t i = 0; i < nf; i++) {
		v->flow_chunks[i] = s->flows.chunks[i];
		if (v->flow_chunks[i] != NULL)
			v->flow_chunks[i]->refs++;
	}
	v->names = s->names;
	v->names->refs++;
	for (int i = 0; i < VIEW_TEXT_COUNT; i++) {
		v->text[i] = s->text[i];
		if (v->text[i] != NULL)
			v->text[i]->refs++;
	}
	v->cl = *cl;
	v->retired_next = NULL;
	old = atomic_exchange(&s->current, v);
	if (old != NULL) {
		old->retired_next = s->retired;
		s->retired = old;
		s->n_retired++;
	}
	reclaim(s);
}

size_t view_store_retained(struct view_store *s)
{
	return s->n_retired + 1;
}

const struct view *view_acquire(struct view_store *s, struct view_guard *g)
{
	struct hazard *h;
	const struct view *v;

	for (h = atomic_load(&s->hazards); h != NULL; h = h->next) {
		int free_ = 0;

		if (atomic_load_explicit(&h->in_use, memory_order_relaxed) == 0 &&
		    atomic_compare_exchange_strong(&h->in_use, &free_, 1))
			break;
	}
	if (h == NULL) {
		struct hazard *head;

		h = calloc(1, sizeof *h);
		if (h == NULL) {
			g->rec = NULL;
			return NULL;
		}
		atomic_init(&h->ptr, NULL);
		atomic_init(&h->in_use, 1);
		head = atomic_load(&s->hazards);
		do
			h->next = head;
		while (!atomic_compare_exchange_weak(&s->hazards, &head, h));
	}
	/* Announce, then check that it is still the newest: a publish after
	 * the check sees the announcement and keeps the version. */
	do {
		v = atomic_load(&s->current);
		atomic_store(&h->ptr, v);
	} while (v != atomic_load(&s->current));
	g->rec = h;
	return v;
}

void view_release(struct view_guard *g)
{
	struct hazard *h = g->rec;

	if (h == NULL)
		return;
	atomic_store(&h->ptr, NULL);
	atomic_store_explicit(&h->in_use, 0, memory_order_release);
	g->rec = NULL;
}

const struct view_cluster *view_cluster_of(const struct view *v)
{
	return &v->cl;
}

uint64_t view_applied_index(const struct view *v)
{
	return v->applied_index;
}

/* ------------------------------------------------------------------------
 * Reading a version
 */

static const void *item_at(struct chunk *const *chunks, size_t base, size_t n,
			   size_t idx)
{
	size_t ci = idx >> CHUNK_BITS;

	if (ci < base || ci - base >= n || chunks[ci - base] == NULL)
		return NULL;
	return chunks[ci - base]->item[idx & (CHUNK_SIZE - 1)];
}

static const struct vrun *run_at(const struct view *v, uint64_t seq)
{
	if (seq < 1 || seq > v->n_runs)
		return NULL;
	return item_at(v->run_chunks, v->run_base, v->n_run_chunks, seq - 1);
}

static const struct vflow *flow_named(const struct view *v, const char *name)
{
	long slot = names_find(v->names, name);

	if (slot < 0 || (size_t)slot >= v->n_flows)
		return NULL; /* unknown, or newer than this version */
	return item_at(v->flow_chunks, 0, v->n_flow_chunks, (size_t)slot);
}

static json_t *jstr_or_null(const char *s)
{
	return s != NULL ? json_string(s) : json_null();
}

static json_t *attempt_json(const struct vattempt *a)
{
	return json_pack(
		"{s:i, s:I, s:s, s:o, s:o, s:o, s:o, s:o}", "attempt", (int)a->n,
		"node", (json_int_t)a->node, "status",
		fsm_attempt_status_str(a->status), "started_at",
		fsm_time_json(a->started_ms), "finished_at",
		fsm_time_json(a->finished_ms), "exit_code",
		a->status == FSM_ATTEMPT_RUNNING || a->exit_code < 0
			? json_null()
			: json_integer(a->exit_code),
		"signal", a->term_signal ? json_integer(a->term_signal) : json_null(),
		"reason", jstr_or_null(a->reason));
}

/* The docs/api.md run object (storage/reader.c builds the same from
 * PostgreSQL). */
static json_t *run_json(const struct vrun *r, bool with_steps)
{
	const struct vrun_base *b = r->base;
	struct spec_flow_key fk;

	spec_flow_key_split(b->flow, &fk);
	json_t *j = json_pack(
		"{s:s, s:s, s:s, s:s, s:i, s:O, s:o, s:s, s:o, s:o, s:o, s:o, s:o}",
		"id", b->id, "flow", fk.flow, "project", fk.project, "branch",
		fk.branch, "version", (int)b->version, "parameters",
		b->params, "idempotency_key", jstr_or_null(b->idem), "status",
		fsm_run_status_str(r->status), "reason", jstr_or_null(r->reason),
		"created_at", fsm_time_json(b->created_ms), "started_at",
		fsm_time_json(r->started_ms), "finished_at",
		fsm_time_json(r->finished_ms), "trigger",
		b->trigger ? json_incref(b->trigger)
			   : json_pack("{s:s}", "type", "manual"));
	json_t *steps;

	if (j == NULL)
		return NULL;
	json_object_set_new(j, "tags", r->tags ? json_incref(r->tags)
					       : json_array());
	json_object_set_new(j, "system_tags",
			    fsm_system_tags(b->flow, b->version, b->trigger,
					    b->origin));
	json_object_set_new(j, "origin_run_id", jstr_or_null(b->origin));
	json_object_set_new(j, "redrive_count",
			    json_integer(r->redrive_count));
	if (!with_steps)
		return j;
	steps = json_array();
	for (size_t i = 0; i < r->n_steps; i++) {
		const struct vstep *s = &r->steps[i];
		const struct spec_step *ss = &b->spec->steps[i];
		json_t *deps = json_array(), *atts = json_array();

		for (size_t d = 0; d < ss->n_deps; d++)
			json_array_append_new(
				deps, json_string(b->spec->steps[ss->deps[d]].name));
		for (unsigned k = 0; k < s->n_attempts; k++)
			json_array_append_new(atts, attempt_json(&s->attempts[k]));
		json_t *js = json_pack("{s:s, s:s, s:o, s:o, s:o, s:o}", "name",
				       ss->name, "status",
				       fsm_step_status_str(s->status),
				       "depends_on", deps, "started_at",
				       fsm_time_json(s->started_ms),
				       "finished_at",
				       fsm_time_json(s->finished_ms),
				       "attempts", atts);
		if (js != NULL && s->status == FSM_STEP_REUSED) {
			char id[32];

			snprintf(id, sizeof id, "r-%012" PRIu64, s->reused_seq);
			json_object_set_new(js, "reused_from",
					    json_pack("{s:s, s:i}", "run_id", id,
						      "attempt",
						      (int)s->reused_attempt));
		} else if (js != NULL) {
			json_object_set_new(js, "reused_from", json_null());
		}
		json_array_append_new(steps, js);
	}
	json_object_set_new(j, "steps", steps);
	return j;
}

/* The run's text, rendered by the first reader that needs it and kept in
 * the (immutable otherwise) object for the next: borrowed, or NULL. */
static const char *run_text(const struct vrun *r, bool with_steps)
{
	_Atomic(char *) *slot = with_steps ? &((struct vrun *)r)->text
					   : &((struct vrun *)r)->summary;
	char *t = atomic_load_explicit(slot, memory_order_acquire), *expect;
	json_t *j;

	if (t != NULL)
		return t;
	j = run_json(r, with_steps);
	t = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (t == NULL)
		return NULL;
	expect = NULL;
	if (!atomic_compare_exchange_strong(slot, &expect, t)) {
		free(t); /* another reader was first */
		return expect;
	}
	return t;
}

enum view_found view_run_text(const struct view *v, const char *id,
			      char **text)
{
	uint64_t seq = fsm_run_seq(id);
	const struct vrun *r;
	const char *t;

	*text = NULL;
	if (seq == 0 || seq > v->n_runs)
		return VIEW_NOT_FOUND;
	r = run_at(v, seq);
	if (r == NULL)
		return VIEW_EVICTED;
	t = run_text(r, true);
	*text = t != NULL ? strdup(t) : NULL;
	return VIEW_FOUND;
}

uint64_t view_run_index(const struct view *v, const char *id)
{
	uint64_t seq = fsm_run_seq(id);
	const struct vrun *r = seq != 0 ? run_at(v, seq) : NULL;

	return r != NULL ? r->mod_index : 0;
}

uint64_t view_runs_index(const struct view *v)
{
	return v->runs_index;
}

uint64_t view_flow_index(const struct view *v, const char *name)
{
	const struct vflow *fl = flow_named(v, name);

	return fl != NULL ? fl->mod_index : 0;
}

uint64_t view_flows_index(const struct view *v)
{
	return v->flows_index;
}

/* A growable string for pages; `bad` once out of memory. */
struct buf {
	char *p;
	size_t n, cap;
	bool bad;
};

static void buf_put(struct buf *b, const char *s, size_t n)
{
	if (b->bad)
		return;
	if (b->n + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 1024;
		char *p;

		while (cap < b->n + n + 1)
			cap *= 2;
		p = realloc(b->p, cap);
		if (p == NULL) {
			b->bad = true;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = '\0';
}

static void buf_str(struct buf *b, const char *s)
{
	buf_put(b, s, strlen(s));
}

static char *buf_take(struct buf *b)
{
	if (b->bad) {
		free(b->p);
		return NULL;
	}
	return b->p;
}

/* Does the run carry `tag` (a system tag, or one of its user tags)? */
static bool run_has_tag(const struct vrun *r, const char *tag)
{
	const struct vrun_base *b = r->base;
	struct spec_flow_key k;
	const char *type;
	char buf[48];
	size_t i;
	json_t *t;

	spec_flow_key_split(b->flow, &k);
	if (strncmp(tag, "project:", 8) == 0)
		return strcmp(tag + 8, k.project) == 0;
	if (strncmp(tag, "branch:", 7) == 0)
		return strcmp(tag + 7, k.branch) == 0;
	if (strncmp(tag, "flow:", 5) == 0)
		return strcmp(tag + 5, k.flow) == 0;
	if (strncmp(tag, "version:", 8) == 0) {
		snprintf(buf, sizeof buf, "%u", b->version);
		return strcmp(tag + 8, buf) == 0;
	}
	if (strncmp(tag, "trigger:", 8) == 0) {
		type = json_string_value(json_object_get(b->trigger, "type"));
		return strcmp(tag + 8, type != NULL ? type : "manual") == 0;
	}
	if (strncmp(tag, "origin:", 7) == 0)
		return b->origin != NULL && strcmp(tag + 7, b->origin) == 0;
	json_array_foreach(r->tags, i, t)
		if (strcmp(json_string_value(t), tag) == 0)
			return true;
	return false;
}

bool view_filter_flow_matches(const struct view_run_filter *flt,
			      const char *key)
{
	struct spec_flow_key k;

	if (flt->flow == NULL && flt->project == NULL && flt->branch == NULL)
		return true;
	spec_flow_key_split(key, &k);
	return (flt->flow == NULL || strcmp(flt->flow, k.flow) == 0) &&
	       (flt->project == NULL || strcmp(flt->project, k.project) == 0) &&
	       (flt->branch == NULL || strcmp(flt->branch, k.branch) == 0);
}

char *view_runs_page_text(const struct view *v, const char *flow, int status,
			  unsigned limit, uint64_t cursor, uint64_t *pg_before,
			  unsigned *pg_limit)
{
	struct view_run_filter flt = {.flow = flow, .status = status};

	return view_runs_page_text_filter(v, &flt, limit, cursor, pg_before,
					  pg_limit);
}

char *view_runs_page_text_filter(const struct view *v,
				 const struct view_run_filter *flt,
				 unsigned limit, uint64_t cursor,
				 uint64_t *pg_before, unsigned *pg_limit)
{
	int status = flt->status;
	char *const *tags = flt->tags;
	size_t n_tags = flt->n_tags;
	uint64_t seq = (cursor != 0 && cursor <= v->n_runs) ? cursor - 1
							    : v->n_runs;
	uint64_t last = 0;
	unsigned n = 0;
	struct buf b = {0};
	char num[48];

	*pg_before = 0;
	*pg_limit = 0;
	buf_str(&b, "{\"runs\":[");
	/* seq is the next run to look at, newest first */
	for (; seq > 0 && n < limit; seq--) {
		const struct vrun *r = run_at(v, seq);
		const char *t;

		if (r == NULL) {
			/* left memory: from here down PostgreSQL has them */
			*pg_before = seq + 1;
			*pg_limit = limit - n;
			buf_str(&b, "],\"next_cursor\":null}");
			return buf_take(&b);
		}
		if (!view_filter_flow_matches(flt, r->base->flow))
			continue;
		if (status >= 0 && (int)r->status != status)
			continue;
		size_t k = 0;
		while (k < n_tags && run_has_tag(r, tags[k]))
			k++;
		if (k < n_tags)
			continue;
		t = run_text(r, false);
		if (t == NULL) {
			b.bad = true;
			break;
		}
		if (n > 0)
			buf_str(&b, ",");
		buf_str(&b, t);
		last = seq;
		n++;
	}
	if (n == limit && seq > 0) {
		snprintf(num, sizeof num, "],\"next_cursor\":\"%" PRIu64 "\"}",
			 last);
		buf_str(&b, num);
	} else {
		buf_str(&b, "],\"next_cursor\":null}");
	}
	return buf_take(&b);
}

static json_t *flow_json(const struct vflow *fl, bool with_spec)
{
	const struct flow_spec *spec = vflow_spec(fl);
	unsigned version = fl->current ? fl->current : fl->versions->n;
	struct spec_flow_key k;
	json_t *j;

	if (spec == NULL)
		return NULL;
	spec_flow_key_split(fl->name, &k);
	j = json_pack("{s:s, s:s, s:s, s:i, s:b, s:s, s:o, s:o}", "name", k.flow,
		      "project", k.project, "branch", k.branch,
		      "version", (int)version, "deployed", fl->current != 0,
		      "description", spec->description, "created_at",
		      fsm_time_json(fl->created_ms), "updated_at",
		      fsm_time_json(fl->updated_ms));
	if (j != NULL && with_spec)
		json_object_set_new(j, "spec", spec_doc(spec));
	return j;
}

static char *dump(json_t *j)
{
	char *t = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;

	json_decref(j);
	return t;
}

static int vflow_cmp(const void *a, const void *b)
{
	return strcmp((*(const struct vflow *const *)a)->name,
		      (*(const struct vflow *const *)b)->name);
}

/* A/B (docs/lifecycle.md): what pairs runs of one flow across branches,
 * "tick:<nominal time>" or "event:<first event id>"; NULL for other
 * triggers. */
static char *pair_key(const json_t *trigger)
{
	const char *type = json_string_value(json_object_get(trigger, "type"));
	const char *v = NULL;
	char *out;

	if (type == NULL)
		return NULL;
	if (strcmp(type, "schedule") == 0 || strcmp(type, "backfill") == 0)
		v = json_string_value(json_object_get(trigger, "nominal_time"));
	else if (strcmp(type, "event") == 0)
		v = json_string_value(
			json_array_get(json_object_get(trigger, "event_ids"), 0));
	if (v == NULL)
		return NULL;
	if (asprintf(&out, "%s:%s", strcmp(type, "event") == 0 ? "event" : "tick",
		     v) < 0)
		return NULL;
	return out;
}

char *view_compare_text(const struct view *v, const char *project,
			const char *flow, char *const *branches,
			size_t n_branches, unsigned limit, unsigned scan)
{
	json_t *pairs = json_array(), *by_key = json_object(), *order = json_array();
	char keys[8][SPEC_FLOW_KEY_MAX];
	unsigned seen = 0;

	if (n_branches > 8)
		n_branches = 8;
	for (size_t b = 0; b < n_branches; b++)
		if (spec_flow_key(project, branches[b], flow, keys[b],
				  sizeof keys[b]) != 0)
			keys[b][0] = '\0';
	for (uint64_t seq = v->n_runs; seq > 0 && seen < scan; seq--) {
		const struct vrun *r = run_at(v, seq);
		size_t b;
		char *k;
		json_t *group, *side;

		if (r == NULL)
			break; /* older runs left memory */
		seen++;
		for (b = 0; b < n_branches; b++)
			if (strcmp(r->base->flow, keys[b]) == 0)
				break;
		if (b == n_branches || (k = pair_key(r->base->trigger)) == NULL)
			continue;
		group = json_object_get(by_key, k);
		if (group == NULL) {
			group = json_object();
			json_object_set_new(by_key, k, group);
			json_array_append_new(order, json_string(k));
		}
		free(k);
		if (json_object_get(group, branches[b]) != NULL)
			continue; /* the newest run of that branch for it */
		side = json_pack(
			"{s:s, s:s, s:o, s:o, s:o, s:o, s:n}", "run_id",
			r->base->id, "status", fsm_run_status_str(r->status),
			"created_at", fsm_time_json(r->base->created_ms),
			"started_at", fsm_time_json(r->started_ms),
			"finished_at", fsm_time_json(r->finished_ms),
			"duration_ms",
			r->started_ms && r->finished_ms
				? json_integer(r->finished_ms - r->started_ms)
				: json_null(),
			"outputs");
		json_object_set_new(group, branches[b], side);
	}
	for (size_t i = 0; i < json_array_size(order) &&
			   json_array_size(pairs) < limit;
	     i++) {
		const char *k = json_string_value(json_array_get(order, i));
		json_t *group = json_object_get(by_key, k);

		if (json_object_size(group) < 2)
			continue; /* not a pair: one branch only so far */
		json_array_append_new(
			pairs, json_pack("{s:s, s:s, s:O}", "key", k, "by",
					 strncmp(k, "event:", 6) == 0
						 ? "event" : "tick",
					 "runs", group));
	}
	json_t *bl = json_array();
	for (size_t b = 0; b < n_branches; b++)
		json_array_append_new(bl, json_string(branches[b]));
	json_decref(by_key);
	json_decref(order);
	return dump(json_pack("{s:s, s:s, s:o, s:o}", "project", project,
			      "flow", flow, "branches", bl, "pairs", pairs));
}

char *view_flows_text(const struct view *v)
{
	const struct vflow **all = malloc((v->n_flows + 1) * sizeof *all);
	json_t *arr = json_array();
	size_t n = 0;

	if (all == NULL || arr == NULL) {
		free(all);
		json_decref(arr);
		return NULL;
	}
	for (size_t i = 0; i < v->n_flows; i++) {
		const struct vflow *fl =
			item_at(v->flow_chunks, 0, v->n_flow_chunks, i);

		if (fl != NULL && fl->current != 0)
			all[n++] = fl;
	}
	qsort(all, n, sizeof *all, vflow_cmp);
	for (size_t i = 0; i < n; i++)
		json_array_append_new(arr, flow_json(all[i], false));
	free(all);
	return dump(json_pack("{s:o}", "flows", arr));
}

char *view_flow_text(const struct view *v, const char *name, bool with_spec,
		     enum view_found *found)
{
	const struct vflow *fl = flow_named(v, name);

	*found = fl != NULL ? VIEW_FOUND : VIEW_NOT_FOUND;
	return fl != NULL ? dump(flow_json(fl, with_spec)) : NULL;
}

char *view_flow_put_text(const struct view *v, const char *name, bool created)
{
	const struct vflow *fl = flow_named(v, name);

	if (fl == NULL)
		return NULL;
	return dump(json_pack("{s:o, s:b}", "flow", flow_json(fl, true),
			      "created", created));
}

char *view_flow_versions_text(const struct view *v, const char *name,
			      enum view_found *found, unsigned *missing)
{
	const struct vflow *fl = flow_named(v, name);
	const struct vversions *vv;
	json_t *arr;

	*found = fl != NULL ? VIEW_FOUND : VIEW_NOT_FOUND;
	*missing = 0;
	if (fl == NULL)
		return NULL;
	vv = fl->versions;
	arr = json_array();
	for (unsigned i = 0; i < vv->n; i++) {
		if (vv->v[i].spec == NULL)
			(*missing)++;
		json_array_append_new(
			arr, json_pack("{s:i, s:o, s:o}", "version",
				       (int)vv->v[i].version, "created_at",
				       fsm_time_json(vv->v[i].created_ms), "spec",
				       vv->v[i].spec ? spec_doc(vv->v[i].spec)
						     : json_null()));
	}
	struct spec_flow_key k;

	spec_flow_key_split(fl->name, &k);
	return dump(json_pack("{s:s, s:o}", "flow", k.flow, "versions", arr));
}

json_t *view_next_fires_json(const struct spec_schedule *sc, int64_t cursor,
			     int64_t now_s, unsigned count)
{
	/* after the cursor, and not before now (a tick at now_s included) */
	int64_t t = cursor > now_s - 1 ? cursor : now_s - 1, next;
	json_t *arr = json_array();

	for (unsigned k = 0;
	     k < count && cron_next(&sc->cron, sc->tz, sc->dst_missing,
				    sc->dst_repeated, t, &next);
	     k++) {
		json_array_append_new(arr, fsm_time_json(next * 1000));
		t = next;
	}
	return arr;
}

char *view_schedule_text(const struct view *v, const char *name,
			 int64_t now_s, unsigned count, enum view_found *found)
{
	const struct vflow *fl = flow_named(v, name);
	const struct flow_spec *spec;
	json_t *arr;

	if (fl == NULL || fl->current == 0) {
		*found = VIEW_NOT_FOUND;
		return NULL;
	}
	*found = VIEW_FOUND;
	spec = vflow_spec(fl);
	arr = json_array();
	for (unsigned i = 0; i < fl->n_sched && i < spec->n_schedules; i++) {
		const struct spec_schedule *sc = &spec->schedules[i];
		json_t *one = fsm_schedule_state_json(i, sc, &fl->sched[i]);

		json_object_set_new(one, "next_fire_times",
				    view_next_fires_json(sc, fl->sched[i].cursor,
							 now_s, count));
		json_array_append_new(arr, one);
	}
	struct spec_flow_key k;

	spec_flow_key_split(fl->name, &k);
	return dump(json_pack("{s:s, s:b, s:o}", "flow", k.flow, "paused",
			      fl->paused, "schedules", arr));
}

size_t view_schedules_each(const struct view *v, int64_t now_s, size_t max,
			   void (*cb)(void *arg,
				      const struct view_schedule_info *in),
			   void *arg)
{
	size_t done = 0, left = 0;

	for (size_t i = 0; i < v->n_flows; i++) {
		const struct vflow *fl =
			item_at(v->flow_chunks, 0, v->n_flow_chunks, i);
		if (fl == NULL || fl->current == 0)
			continue;
		const struct flow_spec *spec = vflow_spec(fl);
		for (unsigned k = 0; k < fl->n_sched && k < spec->n_schedules;
		     k++) {
			if (done == max) {
				left++;
				continue;
			}
			const struct spec_schedule *sc = &spec->schedules[k];
			int64_t c = fl->sched[k].cursor;
			int64_t t = c > now_s - 1 ? c : now_s - 1, next = 0;
			if (!cron_next(&sc->cron, sc->tz, sc->dst_missing,
				       sc->dst_repeated, t, &next))
				next = 0;
			struct view_schedule_info in = {
				.flow = fl->name,
				.index = k,
				.expr = sc->expr,
				.paused = fl->paused,
				.counts = fl->sched[k].counts,
				.next_s = next,
			};
			cb(arg, &in);
			done++;
		}
	}
	return left;
}

static const char *text_or(const struct view *v, enum view_text which,
			   const char *dflt)
{
	return v->text[which] != NULL ? v->text[which]->text : dflt;
}

char *view_cluster_text(const struct view *v)
{
	const struct view_cluster *cl = &v->cl;
	struct buf b = {0};
	char num[512];

	snprintf(num, sizeof num, "{\"node_id\":%" PRIu64 ",\"role\":\"%s\",\"leader\":",
		 cl->node_id, cl->role);
	buf_str(&b, num);
	buf_str(&b, text_or(v, VIEW_TEXT_LEADER, "null"));
	snprintf(num, sizeof num,
		 ",\"term\":%" PRIu64 ",\"commit_index\":%" PRIu64
		 ",\"applied_index\":%" PRIu64 ",\"db_applied_index\":%" PRIu64
		 ",\"db_backlog\":%" PRIu64 ",\"db_backlog_ms\":%" PRId64
		 ",\"db_connected\":%s,\"members\":",
		 cl->term, cl->commit_index, cl->applied_index,
		 cl->db_applied_index, cl->db_backlog, cl->db_backlog_ms,
		 cl->db_connected ? "true" : "false");
	buf_str(&b, num);
	buf_str(&b, text_or(v, VIEW_TEXT_MEMBERS, "[]"));
	if (cl->db_failing_index != 0) {
		/* loud: the applier cannot write an entry (docs/operations.md) */
		json_t *e = json_pack("{s:I, s:s, s:I}", "index",
				      (json_int_t)cl->db_failing_index, "error",
				      cl->db_error, "writes_refused",
				      (json_int_t)cl->db_write_errors);
		char *t = e != NULL ? json_dumps(e, JSON_COMPACT) : NULL;

		buf_str(&b, ",\"db_write_failing\":");
		buf_str(&b, t != NULL ? t : "null");
		free(t);
		json_decref(e);
	}
	buf_str(&b, ",\"scheduler\":");
	buf_str(&b, text_or(v, VIEW_TEXT_SCHEDULER, "null"));
	buf_str(&b, "}");
	return buf_take(&b);
}

const char *view_not_ready(const struct view *v)
{
	return v->cl.not_ready;
}
