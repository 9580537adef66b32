/* watch.h - change streams: GET /v1/watch (docs/api.md, "Streams"). The
 * loop side turns the state machine's reports (a run's or a step's new
 * status, a schedule's tick decided) into events of the change feed
 * (core/feed.h); the HTTP side streams them to each watcher, filtered by
 * flow and run, resumable with Last-Event-ID. */
#ifndef FLOWD_DAEMON_WATCH_H
#define FLOWD_DAEMON_WATCH_H

#include <stdbool.h>
#include <stdint.h>

#include "api/api.h"
#include "core/feed.h"
#include "core/fsm.h"
#include "core/view.h"
#include "daemon/clock.h"

struct watch;

/* ---- The loop thread ---- */

/* A watch whose feed keeps the last `window` events. NULL when out of
 * memory. `clock` stamps each event with when this node applied it. */
struct watch *watch_new(size_t window, struct flowd_clock clock);
/* Free it; no HTTP thread may read its feed any more. */
void watch_free(struct watch *w);
/* The feed (borrowed until watch_free). */
struct feed *watch_feed(struct watch *w);

/* The state machine's `changed` hook (arg: the watch). */
void watch_changed(void *arg, const struct fsm_change *c);
/* A count of the state machine: a schedule's tick becomes an event. */
void watch_count(struct watch *w, const struct fsm_count *c);
/* A snapshot was restored at `index`: watchers from before start over. */
void watch_restored(struct watch *w, uint64_t index);
/* The read view was published: its events become visible. Returns true
 * when some did (then kick the api's streams). */
bool watch_published(struct watch *w);

/* ---- HTTP threads (daemon/routes.c: GET /v1/watch) ---- */

/* The query hook: ?flow= (a flow name), ?run= (a run id), ?index= (start
 * after that Raft index: the X-Flowd-Index of a list read just before);
 * the Last-Event-ID header (an event id; it wins over ?index). 400
 * invalid_query naming the parameter, or invalid_value field
 * "Last-Event-ID". */
int watch_query(struct api_request *req, const struct flowd_limits *lim,
		struct flowd_error *err);
/* The read handler; arg is struct reads (its feed). */
void watch_read(void *arg, const struct view *v, struct api_request *req);

#endif
