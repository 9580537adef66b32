/* metrics.h - Prometheus metrics: counters, gauges and histograms with
 * bounded label sets, updated from any thread, and the text exposition
 * format (0.0.4) they are scraped in.
 *
 * A registry holds families (one metric name each: its help, type, label
 * names and, for histograms, bucket bounds). A family holds series, one per
 * label values, found or made by metrics_series(); the values are relaxed
 * atomics, so the loop thread, the HTTP threads and the applier update them
 * without a lock, and a scrape (any thread) reads them while they move.
 *
 * Bounds: a family makes at most `max_series` series; past that, values go
 * to one overflow series whose every label is "(other)" (and
 * metrics_overflowed() counts how often), so a flow or schedule name can
 * never grow memory without bound. Series are never removed (a counter must
 * not go back), and lookups are lock-free: a family's table is
 * insert-only, inserts take the family's mutex.
 *
 * Families are made at start, before other threads use the registry;
 * metrics_family_new is not thread-safe against metrics_render. */
#ifndef FLOWD_CORE_METRICS_H
#define FLOWD_CORE_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define METRICS_MAX_LABELS 3
#define METRICS_MAX_BUCKETS 20

enum metrics_type {
	METRICS_COUNTER,
	METRICS_GAUGE,
	METRICS_HISTOGRAM,
};

struct metrics;
struct metrics_family;
struct metrics_series;

/* A registry with no family. NULL on out of memory. */
struct metrics *metrics_new(void);
/* Free the registry, its families and their series. No thread may use it. */
void metrics_free(struct metrics *m);

/* Add a family. `name` and `help` are copied; `labels` is a NULL-terminated
 * list of at most METRICS_MAX_LABELS names (NULL: none); `buckets`, for a
 * histogram only, are `nbuckets` (1..METRICS_MAX_BUCKETS) ascending upper
 * bounds (+Inf is implicit). `max_series` >= 1 bounds the label sets (the
 * overflow series comes on top). Returns NULL on a bad argument or out of
 * memory. */
struct metrics_family *metrics_family_new(struct metrics *m, const char *name,
					  const char *help,
					  enum metrics_type type,
					  const char *const *labels,
					  const double *buckets,
					  size_t nbuckets, size_t max_series);

/* The series of `values` (as many as the family has labels; may be NULL
 * for a family without labels), made if new. Past the family's bound: its
 * overflow series. NULL only on out of memory. Any thread. */
struct metrics_series *metrics_series(struct metrics_family *f,
				      const char *const *values);

/* Shorthands for the common label counts. */
struct metrics_series *metrics_series1(struct metrics_family *f,
				       const char *v1);
struct metrics_series *metrics_series2(struct metrics_family *f,
				       const char *v1, const char *v2);

/* Counter: add n. Gauge: set, add (may be negative). Histogram: observe a
 * value (seconds, bytes: the family's unit). NULL series are ignored (an
 * out-of-memory lookup), so callers need not check. Any thread. */
void metrics_inc(struct metrics_series *s, uint64_t n);
void metrics_set(struct metrics_series *s, double v);
void metrics_add(struct metrics_series *s, double v);
void metrics_observe(struct metrics_series *s, double v);

/* Read back (tests, and gauges computed from counters). */
uint64_t metrics_count(const struct metrics_series *s); /* counter; histogram: observations */
double metrics_value(const struct metrics_series *s);   /* gauge; histogram: sum */

/* How many updates went to the overflow series of every family. */
uint64_t metrics_overflowed(const struct metrics *m);

/* ---- The text format ---- */

/* A growable text buffer for a scrape. */
struct metrics_text {
	char *p;
	size_t n, cap;
	int oom; /* an append failed: the text is incomplete */
};

void metrics_text_init(struct metrics_text *t);
void metrics_text_free(struct metrics_text *t);

/* Append every family of `m` (HELP, TYPE and each series; histograms as
 * cumulative _bucket{le=...}, _sum and _count) in the order they were
 * made. */
void metrics_render(const struct metrics *m, struct metrics_text *t);

/* Append one family of values computed at scrape time (a gauge, or a
 * counter whose value lives elsewhere): its HELP and TYPE lines. Then add
 * its samples with metrics_text_sample. */
void metrics_text_family(struct metrics_text *t, const char *name,
			 const char *help, enum metrics_type type);
/* One sample: `name{l1="v1",...} value`. `labels` and `values` are
 * NULL-terminated in step (NULL: no labels). Values are escaped. */
void metrics_text_sample(struct metrics_text *t, const char *name,
			 const char *const *labels, const char *const *values,
			 double value);

/* Append a label value escaped for the text format (\\, \", \n). */
void metrics_text_escaped(struct metrics_text *t, const char *s);

#endif
