/* tail.h - the output of the attempts running on this node, as it is
 * produced, for followed logs (GET .../logs?follow=true, daemon/follow.c).
 * The loop thread writes (the executor's output hook, the runner's begin
 * and end); HTTP threads read, each from its own offset. One mutex.
 *
 * A tail lives from the attempt's placement on this node until its end
 * and until the last reader lets it go; it holds what the executor keeps
 * of the output (executor.max_log_bytes per stream), so a reader that
 * comes late gets the output from its start. */
#ifndef FLOWD_DAEMON_TAIL_H
#define FLOWD_DAEMON_TAIL_H

#include <stdbool.h>
#include <stddef.h>

struct tails;
struct tail;

/* `kick` (any thread, may be NULL) is called after output or an end was
 * added: streams waiting on it look again. */
struct tails *tails_new(void (*kick)(void *arg), void *kick_arg);
/* Free every tail; no reader may hold one. */
void tails_free(struct tails *ts);

/* ---- The loop thread ---- */

/* An attempt with this key ("run/step/attempt") runs here from now on. */
void tails_begin(struct tails *ts, const char *key);
/* The executor's output hook (executor_output_cb; arg is the tails). */
void tails_output(void *arg, const char *key, int stream, const char *data,
		  size_t len);
/* The attempt ended: `end_json` (copied) is the data of the last event
 * readers get. The newest 64 ended tails can still be opened. */
void tails_end(struct tails *ts, const char *key, const char *end_json);

/* ---- Any thread ---- */

/* The attempt's tail, held until tail_close(); NULL when no attempt with
 * that key runs (or recently ended) here. */
struct tail *tails_open(struct tails *ts, const char *key);
void tail_close(struct tails *ts, struct tail *t);

/* Append to *buf (len, cap; realloc'd) the output after *off as Server-Sent
 * Events (`event: output`, data {"stream","text"}), then, once the attempt
 * ended and everything was given, its `event: end`. Returns 1 when
 * something was appended, 0 when nothing is there now, -1 when the end
 * was appended (or out of memory). */
int tail_pull(struct tails *ts, struct tail *t, size_t *off, char **buf,
	      size_t *len, size_t *cap);
/* Whether tail_pull would give something. */
bool tail_ready(struct tails *ts, struct tail *t, size_t off);

#endif
