/* metrics.h - the node's Prometheus metrics (GET /metrics): the registry
 * every module counts in (core/metrics.h), the state machine's counts
 * (runs, attempts, retries, ticks, events) taken from its `count` hook,
 * the loop's gauges set after each pass, and the scrape, which adds what
 * the read view holds (Raft, PostgreSQL, schedules) and the process's own
 * numbers. docs/operations.md lists every metric.
 *
 * Thread: the hooks and setters on the loop; node_metrics_scrape on any
 * thread (the HTTP threads). */
#ifndef FLOWD_DAEMON_METRICS_H
#define FLOWD_DAEMON_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/fsm.h"
#include "core/metrics.h"
#include "core/view.h"

struct node_metrics;

/* `max_series` bounds the label sets of each family (metrics.max_series);
 * `version` is the build's (copied). NULL on out of memory. */
struct node_metrics *node_metrics_new(size_t max_series, const char *version);
void node_metrics_free(struct node_metrics *m);

/* The registry, for the modules that count in it (api/server.c). */
struct metrics *node_metrics_registry(struct node_metrics *m);

/* The state machine's hook (struct fsm_hooks.count); arg is the
 * node_metrics. */
void node_metrics_count(void *arg, const struct fsm_count *c);

/* The loop, after each pass: tasks ready and running per node, runs in
 * memory. */
void node_metrics_loop(struct node_metrics *m, const struct fsm *f);

/* The Raft role callback: a leader other than the last one seen (0: none)
 * counts a leadership change. */
void node_metrics_leader(struct node_metrics *m, uint64_t leader);

/* A snapshot was taken in `seconds` (wall time, fork to written). */
void node_metrics_snapshot(struct node_metrics *m, double seconds);

/* A proposal committed (or failed) after `seconds`. */
void node_metrics_proposal(struct node_metrics *m, double seconds);

/* The whole text for a scrape: the registry, then the view's numbers
 * (`v` may be NULL) at wall time now_ms, then the process's. Returns a
 * malloc'd NUL-terminated text, or NULL on out of memory. */
char *node_metrics_scrape(struct node_metrics *m, const struct view *v,
			  int64_t now_ms);

#endif
