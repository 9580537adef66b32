/* metrics.c - counters, gauges and histograms, and their text format. */
#include "core/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/map.h"

struct metrics_series {
	char *values[METRICS_MAX_LABELS];
	uint64_t hash;
	const double *bounds;	     /* histogram: the family's bounds */
	size_t nbuckets;
	_Atomic uint64_t count;	     /* counter; histogram: observations */
	_Atomic uint64_t bits;	     /* gauge, histogram sum: a double's bits */
	_Atomic uint64_t buckets[];  /* histogram: count per bucket (not
				      * cumulative; +Inf is `count`) */
};

/* A family's table: open addressing over `cap` slots, and the series in
 * the order they were made. Insert-only; when it fills past half it is
 * replaced by one twice the size, and the old one is kept (readers may
 * still probe it) until the registry is freed. */
struct mtab {
	size_t cap;
	struct metrics_series *_Atomic *slots;
	struct metrics_series **order; /* cap / 2 entries */
	struct mtab *retired;
};

struct metrics_family {
	char *name, *help;
	enum metrics_type type;
	char *labels[METRICS_MAX_LABELS];
	size_t nlabels;
	double bounds[METRICS_MAX_BUCKETS];
	size_t nbuckets;
	size_t max_series;
	pthread_mutex_t mu;		     /* inserts */
	_Atomic(struct mtab *) tab;
	_Atomic size_t n;		     /* series made (order[0..n)) */
	struct metrics_series *overflow;     /* labels all "(other)", or NULL */
	_Atomic uint64_t overflowed;
	struct metrics_family *next;
};

struct metrics {
	struct metrics_family *head, *tail;
};

static const char OTHER[] = "(other)";

/* ---- doubles in atomics ---- */

static uint64_t d2b(double v)
{
	uint64_t b;
	memcpy(&b, &v, sizeof b);
	return b;
}

static double b2d(uint64_t b)
{
	double v;
	memcpy(&v, &b, sizeof v);
	return v;
}

static void atomic_add_double(_Atomic uint64_t *p, double v)
{
	uint64_t old = atomic_load_explicit(p, memory_order_relaxed);
	while (!atomic_compare_exchange_weak_explicit(
		p, &old, d2b(b2d(old) + v), memory_order_relaxed,
		memory_order_relaxed))
		;
}

/* ---- the registry ---- */

struct metrics *metrics_new(void)
{
	return calloc(1, sizeof(struct metrics));
}

static void series_free(struct metrics_series *s)
{
	if (s == NULL)
		return;
	for (size_t i = 0; i < METRICS_MAX_LABELS; i++)
		free(s->values[i]);
	free(s);
}

static void family_free(struct metrics_family *f)
{
	struct mtab *t = atomic_load(&f->tab);
	size_t n = atomic_load(&f->n);
	for (size_t i = 0; t != NULL && i < n; i++)
		series_free(t->order[i]);
	while (t != NULL) {
		struct mtab *r = t->retired;
		free(t->slots);
		free(t->order);
		free(t);
		t = r;
	}
	series_free(f->overflow);
	for (size_t i = 0; i < f->nlabels; i++)
		free(f->labels[i]);
	pthread_mutex_destroy(&f->mu);
	free(f->name);
	free(f->help);
	free(f);
}

void metrics_free(struct metrics *m)
{
	if (m == NULL)
		return;
	struct metrics_family *f = m->head;
	while (f != NULL) {
		struct metrics_family *next = f->next;
		family_free(f);
		f = next;
	}
	free(m);
}

static struct mtab *mtab_new(size_t cap)
{
	struct mtab *t = calloc(1, sizeof *t);
	if (t == NULL)
		return NULL;
	t->cap = cap;
	t->slots = calloc(cap, sizeof *t->slots);
	t->order = calloc(cap / 2, sizeof *t->order);
	if (t->slots == NULL || t->order == NULL) {
		free(t->slots);
		free(t->order);
		free(t);
		return NULL;
	}
	return t;
}

static bool name_ok(const char *s, bool label)
{
	if (s == NULL || *s == '\0')
		return false;
	for (const char *p = s; *p != '\0'; p++) {
		char c = *p;
		bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			     c == '_' || (!label && c == ':');
		if (!alpha && !(p != s && c >= '0' && c <= '9'))
			return false;
	}
	return !(label && s[0] == '_' && s[1] == '_');
}

static struct metrics_series *series_new(const struct metrics_family *f,
					 const char *const *values,
					 uint64_t hash)
{
	size_t nb = f->type == METRICS_HISTOGRAM ? f->nbuckets : 0;
	struct metrics_series *s =
		calloc(1, sizeof *s + nb * sizeof(_Atomic uint64_t));
	if (s == NULL)
		return NULL;
	s->hash = hash;
	s->bounds = f->bounds;
	s->nbuckets = nb;
	for (size_t i = 0; i < f->nlabels; i++) {
		s->values[i] = strdup(values[i] != NULL ? values[i] : "");
		if (s->values[i] == NULL) {
			series_free(s);
			return NULL;
		}
	}
	return s;
}

struct metrics_family *metrics_family_new(struct metrics *m, const char *name,
					  const char *help,
					  enum metrics_type type,
					  const char *const *labels,
					  const double *buckets,
					  size_t nbuckets, size_t max_series)
{
	if (m == NULL || !name_ok(name, false) || help == NULL ||
	    max_series == 0)
		return NULL;
	size_t nl = 0;
	while (labels != NULL && labels[nl] != NULL) {
		if (nl == METRICS_MAX_LABELS || !name_ok(labels[nl], true) ||
		    strcmp(labels[nl], "le") == 0)
			return NULL;
		nl++;
	}
	if (type == METRICS_HISTOGRAM) {
		if (buckets == NULL || nbuckets == 0 ||
		    nbuckets > METRICS_MAX_BUCKETS)
			return NULL;
		for (size_t i = 1; i < nbuckets; i++)
			if (!(buckets[i] > buckets[i - 1]))
				return NULL;
	} else if (nbuckets != 0) {
		return NULL;
	}
	if (nl == 0)
		max_series = 1;

	struct metrics_family *f = calloc(1, sizeof *f);
	if (f == NULL)
		return NULL;
	pthread_mutex_init(&f->mu, NULL);
	f->name = strdup(name);
	f->help = strdup(help);
	f->type = type;
	f->nlabels = nl;
	f->max_series = max_series;
	f->nbuckets = type == METRICS_HISTOGRAM ? nbuckets : 0;
	for (size_t i = 0; i < f->nbuckets; i++)
		f->bounds[i] = buckets[i];
	bool ok = f->name != NULL && f->help != NULL;
	for (size_t i = 0; ok && i < nl; i++)
		ok = (f->labels[i] = strdup(labels[i])) != NULL;
	struct mtab *t = ok ? mtab_new(8) : NULL;
	atomic_init(&f->tab, t);
	atomic_init(&f->n, 0);
	if (ok && nl > 0) {
		const char *other[METRICS_MAX_LABELS] = {OTHER, OTHER, OTHER};
		f->overflow = series_new(f, other, 0);
		ok = f->overflow != NULL;
	}
	if (!ok || t == NULL || (nl == 0 && metrics_series(f, NULL) == NULL)) {
		family_free(f);
		return NULL;
	}
	if (m->tail != NULL)
		m->tail->next = f;
	else
		m->head = f;
	m->tail = f;
	return f;
}

/* ---- series lookup ---- */

static uint64_t values_hash(const struct metrics_family *f,
			    const char *const *values)
{
	uint64_t h = MAP_FNV_SEED;
	for (size_t i = 0; i < f->nlabels; i++) {
		h = map_fnv1a(values[i] != NULL ? values[i] : "", h);
		h = (h ^ 0xffu) * 1099511628211ULL;
	}
	return h;
}

static bool series_is(const struct metrics_family *f,
		      const struct metrics_series *s, const char *const *values,
		      uint64_t h)
{
	if (s->hash != h)
		return false;
	for (size_t i = 0; i < f->nlabels; i++)
		if (strcmp(s->values[i], values[i] != NULL ? values[i] : "") !=
		    0)
			return false;
	return true;
}

/* Probe `t` for `values`: the series, or NULL with *slot the empty slot. */
static struct metrics_series *probe(const struct metrics_family *f,
				    struct mtab *t, const char *const *values,
				    uint64_t h, size_t *slot)
{
	size_t mask = t->cap - 1;
	for (size_t i = h & mask;; i = (i + 1) & mask) {
		struct metrics_series *s = atomic_load_explicit(
			&t->slots[i], memory_order_acquire);
		if (s == NULL) {
			*slot = i;
			return NULL;
		}
		if (series_is(f, s, values, h))
			return s;
	}
}

static struct mtab *grow(struct metrics_family *f, struct mtab *old, size_t n)
{
	struct mtab *t = mtab_new(old->cap * 2);
	if (t == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		struct metrics_series *s = old->order[i];
		size_t slot;
		(void)probe(f, t, (const char *const *)s->values, s->hash,
			    &slot);
		atomic_store_explicit(&t->slots[slot], s, memory_order_relaxed);
		t->order[i] = s;
	}
	t->retired = old;
	atomic_store_explicit(&f->tab, t, memory_order_release);
	return t;
}

struct metrics_series *metrics_series(struct metrics_family *f,
				      const char *const *values)
{
	if (f == NULL)
		return NULL;
	static const char *const none[METRICS_MAX_LABELS] = {"", "", ""};
	if (values == NULL)
		values = none;
	uint64_t h = values_hash(f, values);
	size_t slot;
	struct mtab *t = atomic_load_explicit(&f->tab, memory_order_acquire);
	struct metrics_series *s = probe(f, t, values, h, &slot);
	if (s != NULL)
		return s;

	pthread_mutex_lock(&f->mu);
	t = atomic_load_explicit(&f->tab, memory_order_relaxed);
	s = probe(f, t, values, h, &slot);
	size_t n = atomic_load_explicit(&f->n, memory_order_relaxed);
	if (s == NULL && n >= f->max_series) {
		s = f->overflow;
		atomic_fetch_add_explicit(&f->overflowed, 1,
					  memory_order_relaxed);
	} else if (s == NULL) {
		if (n + 1 > t->cap / 2) {
			struct mtab *g = grow(f, t, n);
			if (g == NULL)
				goto out;
			t = g;
			(void)probe(f, t, values, h, &slot);
		}
		s = series_new(f, values, h);
		if (s != NULL) {
			t->order[n] = s;
			atomic_store_explicit(&t->slots[slot], s,
					      memory_order_release);
			atomic_store_explicit(&f->n, n + 1,
					      memory_order_release);
		}
	}
out:
	pthread_mutex_unlock(&f->mu);
	return s;
}

struct metrics_series *metrics_series1(struct metrics_family *f,
				       const char *v1)
{
	const char *v[] = {v1};
	return metrics_series(f, v);
}

struct metrics_series *metrics_series2(struct metrics_family *f,
				       const char *v1, const char *v2)
{
	const char *v[] = {v1, v2};
	return metrics_series(f, v);
}

uint64_t metrics_overflowed(const struct metrics *m)
{
	uint64_t n = 0;
	for (struct metrics_family *f = m->head; f != NULL; f = f->next)
		n += atomic_load_explicit(&f->overflowed, memory_order_relaxed);
	return n;
}

/* ---- values ---- */

void metrics_inc(struct metrics_series *s, uint64_t n)
{
	if (s != NULL)
		atomic_fetch_add_explicit(&s->count, n, memory_order_relaxed);
}

void metrics_set(struct metrics_series *s, double v)
{
	if (s != NULL)
		atomic_store_explicit(&s->bits, d2b(v), memory_order_relaxed);
}

void metrics_add(struct metrics_series *s, double v)
{
	if (s != NULL)
		atomic_add_double(&s->bits, v);
}

void metrics_observe(struct metrics_series *s, double v)
{
	if (s == NULL || s->nbuckets == 0 || isnan(v))
		return;
	size_t i = 0;
	while (i < s->nbuckets && v > s->bounds[i])
		i++;
	if (i < s->nbuckets)
		atomic_fetch_add_explicit(&s->buckets[i], 1,
					  memory_order_relaxed);
	atomic_add_double(&s->bits, v);
	atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
}

uint64_t metrics_count(const struct metrics_series *s)
{
	return s == NULL ? 0
			 : atomic_load_explicit(&s->count, memory_order_relaxed);
}

double metrics_value(const struct metrics_series *s)
{
	return s == NULL ? 0
			 : b2d(atomic_load_explicit(&s->bits,
						    memory_order_relaxed));
}

/* ---- the text format ---- */

void metrics_text_init(struct metrics_text *t)
{
	memset(t, 0, sizeof *t);
}

void metrics_text_free(struct metrics_text *t)
{
	free(t->p);
	memset(t, 0, sizeof *t);
}

static bool reserve(struct metrics_text *t, size_t more)
{
	if (t->oom)
		return false;
	if (t->n + more + 1 <= t->cap)
		return true;
	size_t cap = t->cap != 0 ? t->cap : 4096;
	while (cap < t->n + more + 1)
		cap *= 2;
	char *p = realloc(t->p, cap);
	if (p == NULL) {
		t->oom = 1;
		return false;
	}
	t->p = p;
	t->cap = cap;
	return true;
}

static void put(struct metrics_text *t, const char *s, size_t len)
{
	if (!reserve(t, len))
		return;
	memcpy(t->p + t->n, s, len);
	t->n += len;
	t->p[t->n] = '\0';
}

static void puts_(struct metrics_text *t, const char *s)
{
	put(t, s, strlen(s));
}

__attribute__((format(printf, 2, 3))) static void
putf(struct metrics_text *t, const char *fmt, ...)
{
	char buf[128];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n > 0)
		put(t, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

/* A double as Prometheus writes it: the shortest text that reads back the
 * same, +Inf, -Inf, NaN. */
static const char *fmt_double(char buf[40], double v)
{
	if (isnan(v))
		return "NaN";
	if (isinf(v))
		return v > 0 ? "+Inf" : "-Inf";
	for (int prec = 6; prec <= 17; prec++) {
		snprintf(buf, 40, "%.*g", prec, v);
		if (strtod(buf, NULL) == v)
			break;
	}
	return buf;
}

static void put_double(struct metrics_text *t, double v)
{
	char buf[40];
	puts_(t, fmt_double(buf, v));
}

void metrics_text_escaped(struct metrics_text *t, const char *s)
{
	for (const char *p = s; *p != '\0'; p++) {
		if (*p == '\\')
			puts_(t, "\\\\");
		else if (*p == '"')
			puts_(t, "\\\"");
		else if (*p == '\n')
			puts_(t, "\\n");
		else
			put(t, p, 1);
	}
}

/* HELP text escapes only backslash and newline. */
static void put_help(struct metrics_text *t, const char *s)
{
	for (const char *p = s; *p != '\0'; p++) {
		if (*p == '\\')
			puts_(t, "\\\\");
		else if (*p == '\n')
			puts_(t, "\\n");
		else
			put(t, p, 1);
	}
}

static const char *type_name(enum metrics_type type)
{
	switch (type) {
	case METRICS_COUNTER:
		return "counter";
	case METRICS_GAUGE:
		return "gauge";
	case METRICS_HISTOGRAM:
		return "histogram";
	}
	return "untyped";
}

void metrics_text_family(struct metrics_text *t, const char *name,
			 const char *help, enum metrics_type type)
{
	putf(t, "# HELP %s ", name);
	put_help(t, help);
	putf(t, "\n# TYPE %s %s\n", name, type_name(type));
}

/* name{labels[,le="bound"]} */
static void put_series_name(struct metrics_text *t, const char *name,
			    const char *suffix, const char *const *labels,
			    const char *const *values, size_t nl,
			    const char *le)
{
	puts_(t, name);
	puts_(t, suffix);
	if (nl == 0 && le == NULL)
		return;
	put(t, "{", 1);
	for (size_t i = 0; i < nl; i++) {
		if (i > 0)
			put(t, ",", 1);
		puts_(t, labels[i]);
		put(t, "=\"", 2);
		metrics_text_escaped(t, values[i]);
		put(t, "\"", 1);
	}
	if (le != NULL) {
		if (nl > 0)
			put(t, ",", 1);
		puts_(t, "le=\"");
		puts_(t, le);
		put(t, "\"", 1);
	}
	put(t, "}", 1);
}

void metrics_text_sample(struct metrics_text *t, const char *name,
			 const char *const *labels, const char *const *values,
			 double value)
{
	size_t nl = 0;
	while (labels != NULL && labels[nl] != NULL && values[nl] != NULL)
		nl++;
	put_series_name(t, name, "", labels, values, nl, NULL);
	put(t, " ", 1);
	put_double(t, value);
	put(t, "\n", 1);
}

static void render_series(const struct metrics_family *f,
			  const struct metrics_series *s,
			  struct metrics_text *t)
{
	const char *const *labels = (const char *const *)f->labels;
	const char *const *values = (const char *const *)s->values;
	uint64_t count = atomic_load_explicit(&s->count, memory_order_relaxed);
	switch (f->type) {
	case METRICS_COUNTER:
		put_series_name(t, f->name, "", labels, values, f->nlabels,
				NULL);
		putf(t, " %llu\n", (unsigned long long)count);
		return;
	case METRICS_GAUGE:
		put_series_name(t, f->name, "", labels, values, f->nlabels,
				NULL);
		put(t, " ", 1);
		put_double(t, metrics_value(s));
		put(t, "\n", 1);
		return;
	case METRICS_HISTOGRAM:
		break;
	}
	/* Buckets are read after the count and may hold observations the
	 * count does not yet: the cumulative counts stay monotonic and +Inf
	 * is never below them. */
	uint64_t cum = 0;
	for (size_t i = 0; i < f->nbuckets; i++) {
		cum += atomic_load_explicit(&s->buckets[i],
					    memory_order_relaxed);
		char le[40];
		put_series_name(t, f->name, "_bucket", labels, values,
				f->nlabels, fmt_double(le, f->bounds[i]));
		putf(t, " %llu\n", (unsigned long long)cum);
	}
	if (count < cum)
		count = cum;
	put_series_name(t, f->name, "_bucket", labels, values, f->nlabels,
			"+Inf");
	putf(t, " %llu\n", (unsigned long long)count);
	put_series_name(t, f->name, "_sum", labels, values, f->nlabels, NULL);
	put(t, " ", 1);
	put_double(t, metrics_value(s));
	put(t, "\n", 1);
	put_series_name(t, f->name, "_count", labels, values, f->nlabels,
			NULL);
	putf(t, " %llu\n", (unsigned long long)count);
}

void metrics_render(const struct metrics *m, struct metrics_text *t)
{
	for (struct metrics_family *f = m->head; f != NULL; f = f->next) {
		size_t n = atomic_load_explicit(&f->n, memory_order_acquire);
		struct mtab *tab =
			atomic_load_explicit(&f->tab, memory_order_acquire);
		metrics_text_family(t, f->name, f->help, f->type);
		for (size_t i = 0; i < n; i++)
			render_series(f, tab->order[i], t);
		if (f->overflow != NULL &&
		    atomic_load_explicit(&f->overflowed,
					 memory_order_relaxed) > 0)
			render_series(f, f->overflow, t);
	}
}
