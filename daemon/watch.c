/* watch.c - change streams (watch.h): events rendered on the loop thread as
 * the state machine reports them, streamed on the HTTP threads.
 *
 * An event's data is one line of JSON. Every event carries "index" (the
 * Raft entry that made it), "ts_ms" (the entry's time, set by the node
 * that proposed it) and "at_ms" (when this node applied it: the delivery
 * latency a client sees is its receive time minus at_ms). */
#include "daemon/watch.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/spec.h"
#include "daemon/reads.h"

#define READ_MAX (32 * 1024) /* bytes of events per pull at most */

struct watch {
	struct feed *feed;
	struct flowd_clock clock;
};

struct watch *watch_new(size_t window, struct flowd_clock clock)
{
	struct watch *w = calloc(1, sizeof *w);

	if (w == NULL)
		return NULL;
	w->feed = feed_new(window);
	if (w->feed == NULL) {
		free(w);
		return NULL;
	}
	w->clock = clock;
	return w;
}

void watch_free(struct watch *w)
{
	if (w == NULL)
		return;
	feed_free(w->feed);
	free(w);
}

struct feed *watch_feed(struct watch *w) { return w->feed; }

/* ------------------------------------------------------------------------
 * Rendering (loop thread)
 */

struct line {
	char buf[2048];             /* names are at most 128 bytes; a reason
	                             * at most REASON_MAX escaped */
	size_t n;
	bool full;
};

static void put(struct line *l, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void put(struct line *l, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (l->full)
		return;
	va_start(ap, fmt);
	n = vsnprintf(l->buf + l->n, sizeof l->buf - l->n, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof l->buf - l->n)
		l->full = true;
	else
		l->n += (size_t)n;
}

#define REASON_MAX 600 /* escaped bytes of a reason in an event */

/* ,"key":"<s as a JSON string>", cut (on a character boundary) once its
 * escaped form passes REASON_MAX bytes; s is valid UTF-8 (the state
 * machine's strings are). */
static void put_str(struct line *l, const char *key, const char *s)
{
	size_t start;

	put(l, ",\"%s\":\"", key);
	start = l->n;
	for (size_t i = 0; s[i] != '\0' && !l->full; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (l->n - start >= REASON_MAX && (ch & 0xc0) != 0x80)
			break; /* not inside a character */
		if (ch == '"' || ch == '\\')
			put(l, "\\%c", ch);
		else if (ch < 0x20)
			put(l, "\\u%04x", ch);
		else
			put(l, "%c", ch);
	}
	put(l, "\"");
}

static void add(struct watch *w, uint64_t index, const char *flow,
		const char *run, const char *event, struct line *l)
{
	if (l->full) {
		log_warn("watch: an event over %zu bytes was dropped",
			 sizeof l->buf);
		return;
	}
	feed_add(w->feed, index, flow, run, event, l->buf, l->n);
}

static void common(struct watch *w, struct line *l, uint64_t index,
		   int64_t ts_ms)
{
	put(l, ",\"index\":%" PRIu64 ",\"ts_ms\":%" PRId64 ",\"at_ms\":%" PRId64
	       "}",
	    index, ts_ms, flowd_clock_now(&w->clock));
}

void watch_changed(void *arg, const struct fsm_change *c)
{
	struct watch *w = arg;
	const struct fsm_run *r = c->run;
	struct line l = {.n = 0};

	if (c->kind == FSM_CHANGE_FLOW) {
		const struct fsm_flow *fl = c->flow;
		put(&l, "{\"flow\":\"%s\",\"version\":%u,\"deployed\":%s,"
			"\"paused\":%s",
		    fl->name, fl->current ? fl->current : fl->n_versions,
		    fl->current ? "true" : "false",
		    fl->paused ? "true" : "false");
		common(w, &l, c->index, c->ts_ms);
		add(w, c->index, fl->name, NULL, "flow", &l);
		return;
	}
	const char *flow = r->flow->name;

	put(&l, "{\"run_id\":\"%s\",\"flow\":\"%s\"", r->id, flow);
	if (c->kind == FSM_CHANGE_RUN) {
		put(&l, ",\"status\":\"%s\"",
		    fsm_run_status_str((enum fsm_run_status)c->status));
		if (r->reason != NULL)
			put_str(&l, "reason", r->reason);
		common(w, &l, c->index, c->ts_ms);
		add(w, c->index, flow, r->id, "run", &l);
		return;
	}
	const struct fsm_step *s = c->step;
	const struct fsm_attempt *a = c->attempt;
	put(&l, ",\"step\":\"%s\",\"status\":\"%s\",\"attempt\":%u",
	    r->spec->steps[s->index].name,
	    fsm_step_status_str((enum fsm_step_status)c->status),
	    a != NULL ? a->n : 0);
	if (a != NULL) {
		put(&l, ",\"node\":%" PRIu64, a->node);
		if (a->status != FSM_ATTEMPT_RUNNING && a->exit_code >= 0)
			put(&l, ",\"exit_code\":%d", a->exit_code);
		if (a->reason != NULL && a->status != FSM_ATTEMPT_SUCCEEDED)
			put_str(&l, "reason", a->reason);
	}
	common(w, &l, c->index, c->ts_ms);
	add(w, c->index, flow, r->id, "step", &l);
}

void watch_count(struct watch *w, const struct fsm_count *c)
{
	struct line l = {.n = 0};
	char when[40];
	json_t *t;

	if (c->kind != FSM_COUNT_TICK)
		return;
	t = fsm_time_json(c->nominal_s * 1000);
	snprintf(when, sizeof when, "%s",
		 json_string_value(t) ? json_string_value(t) : "");
	json_decref(t);
	put(&l,
	    "{\"flow\":\"%s\",\"schedule\":%d,\"outcome\":\"%s\","
	    "\"nominal\":\"%s\",\"count\":%" PRIu64,
	    c->flow->name, c->schedule, fsm_fire_outcome_str(c->outcome), when,
	    c->n);
	if (c->run != NULL)
		put(&l, ",\"run_id\":\"%s\"", c->run->id);
	common(w, &l, c->index, c->ts_ms);
	add(w, c->index, c->flow->name, c->run ? c->run->id : NULL, "fire",
	    &l);
}

void watch_restored(struct watch *w, uint64_t index)
{
	feed_lost(w->feed, index);
}

bool watch_published(struct watch *w) { return feed_publish(w->feed); }

/* ------------------------------------------------------------------------
 * Streaming (HTTP threads)
 */

struct watcher {
	struct feed *feed;
	struct feed_reader rd;
	struct feed_filter flt;
	char *flow, *run;           /* owned: flt's strings */
	bool opened;                /* the first words went out */
	bool reset;                 /* tell the client to start over */
	struct feed_id reset_at;    /* the id to go on from after it */
	const char *reset_reason;   /* static */
};

static void watcher_free(void *state)
{
	struct watcher *wr = state;

	free(wr->flow);
	free(wr->run);
	free(wr);
}

/* The reset event: the events after the client's id are not all here;
 * it re-lists and goes on from this event's id. */
static int put_reset(struct watcher *wr, char **buf, size_t *len,
		     size_t *cap)
{
	char id[32], text[256];
	int n;

	feed_id_format(wr->reset_at, id, sizeof id);
	n = snprintf(text, sizeof text,
		     "id: %s\nevent: reset\ndata: {\"reason\":\"%s\","
		     "\"message\":\"events were missed: list again, then "
		     "go on watching\"}\n\n",
		     id, wr->reset_reason);
	wr->reset = false;
	return flowd_buf_append(buf, len, cap, text, (size_t)n);
}

static int watcher_pull(void *state, char **buf, size_t *len, size_t *cap)
{
	struct watcher *wr = state;
	struct feed_id last;
	int n;

	if (!wr->opened) {
		/* the client's reconnection delay; and bytes at once, so
		 * that it sees the stream open before any event */
		static const char hello[] = "retry: 1000\n: watching\n\n";
		wr->opened = true;
		if (flowd_buf_append(buf, len, cap, hello, sizeof hello - 1) != 0)
			return -1;
	}
	if (wr->reset && put_reset(wr, buf, len, cap) != 0)
		return -1;
	n = feed_read(wr->feed, &wr->rd, &wr->flt, READ_MAX, buf, len, cap,
		      &last);
	if (n == FEED_READ_NOMEM)
		return -1; /* the stream ends; the client resumes */
	if (n == FEED_READ_RESET) {
		/* it fell behind the window, or a snapshot replaced the
		 * state: events were missed */
		wr->reset = true;
		wr->reset_at = last;
		wr->reset_reason = "missed";
		if (put_reset(wr, buf, len, cap) != 0)
			return -1;
		return 1;
	}
	return *len > 0 ? 1 : 0;
}

static bool watcher_ready(void *state)
{
	struct watcher *wr = state;

	return wr->reset || feed_pending(wr->feed, &wr->rd, &wr->flt);
}

static const struct api_stream_ops watcher_ops = {
	.pull = watcher_pull,
	.ready = watcher_ready,
	.free = watcher_free,
};

/* The query and the header, checked (watch_query) or taken (watch_read). */
static int watch_args(const struct api_request *req, char **flow, char **run,
		      struct feed_id *after, bool *has_after,
		      struct flowd_error *err)
{
	char *ix = NULL;
	const char *leid;
	unsigned long long n;
	char *end;

	*flow = *run = NULL;
	*has_after = false;
	if (api_request_query(req, "flow", flow, err) != 0 ||
	    api_request_query(req, "run", run, err) != 0 ||
	    api_request_query(req, "index", &ix, err) != 0)
		goto fail;
	/* a flow's key: its name, or project/branch/name outside
	 * default/main (docs/lifecycle.md) */
	if (*flow != NULL && !spec_flow_name_valid(*flow) &&
	    !spec_flow_key_valid(*flow)) {
		flowd_error_set(err, FLOWD_E_INVALID, "invalid_query", "flow",
				"not a valid flow name or key");
		goto fail;
	}
	if (*run != NULL && !api_id_valid(*run, 64)) {
		flowd_error_set(err, FLOWD_E_INVALID, "invalid_query", "run",
				"not a valid run id");
		goto fail;
	}
	if (ix != NULL) {
		errno = 0;
		n = strtoull(ix, &end, 10);
		if (ix[0] < '0' || ix[0] > '9' || *end != '\0' || errno != 0) {
			flowd_error_set(err, FLOWD_E_INVALID, "invalid_query",
					"index",
					"must be a Raft index (digits)");
			goto fail;
		}
		/* after every event of that entry */
		*after = (struct feed_id){.index = n, .k = UINT32_MAX};
		*has_after = true;
	}
	leid = api_request_header(req, "Last-Event-ID");
	if (leid != NULL && leid[0] != '\0') {
		if (feed_id_parse(leid, after) != 0) {
			flowd_error_set(err, FLOWD_E_INVALID, "invalid_value",
					"Last-Event-ID",
					"must be an event id \"<index>-<n>\"");
			goto fail;
		}
		*has_after = true;
	}
	free(ix);
	return 0;
fail:
	free(ix);
	free(*flow);
	free(*run);
	*flow = *run = NULL;
	return -1;
}

int watch_query(struct api_request *req, const struct flowd_limits *lim,
		struct flowd_error *err)
{
	char *flow, *run;
	struct feed_id after;
	bool has_after;

	if (watch_args(req, &flow, &run, &after, &has_after, err) != 0)
		return -1;
	free(flow);
	free(run);
	return 0;
}

void watch_read(void *arg, const struct view *v, struct api_request *req)
{
	struct reads *rd = arg;
	struct watcher *wr;
	struct feed_id after, last;
	struct flowd_error err;
	bool has_after;

	if (rd->feed == NULL) {
		flowd_error_set(&err, FLOWD_E_UNAVAILABLE, "unavailable", "",
				"no change feed on this listener");
		api_request_reply_error(req, &err);
		return;
	}
	wr = calloc(1, sizeof *wr);
	if (wr == NULL) {
		flowd_error_set(&err, FLOWD_E_UNAVAILABLE, "unavailable", "",
				"out of memory");
		api_request_reply_error(req, &err);
		return;
	}
	if (watch_args(req, &wr->flow, &wr->run, &after, &has_after, &err) !=
	    0) {
		watcher_free(wr);
		api_request_reply_error(req, &err);
		return;
	}
	wr->feed = rd->feed;
	wr->flt.flow = wr->flow;
	wr->flt.run = wr->run;
	if (feed_start(rd->feed, has_after ? &after : NULL, &wr->rd, &last) ==
	    FEED_RESET) {
		wr->reset = true;
		wr->reset_at = last;
		wr->reset_reason = "window";
	}
	api_request_reply_stream(req, &watcher_ops, wr);
}
