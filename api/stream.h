/* stream.h - inside the api: answers sent as a stream (text/event-stream),
 * for GET /v1/watch and followed logs. server.c creates the response and
 * runs the wake-ups on its watcher thread; this file holds the streams
 * while they have nothing to send.
 *
 * A stream's connection is suspended while its source has nothing (MHD
 * does not call a suspended connection: no thread and no loop time is
 * spent on it) and resumed when api_server_kick() was called since and the
 * source's ready() says it has something, or when a heartbeat is due (a
 * comment line: proxies keep the connection, and a client that went away
 * is noticed). api_server_quiesce() ends every stream. */
#ifndef FLOWD_API_STREAM_H
#define FLOWD_API_STREAM_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "api/api.h"

struct api__stream;

struct api__streams {
	pthread_mutex_t *mu;          /* borrowed: server.c's watch_mu, held
	                               * by the waker (wake, stop) and by a
	                               * stream being freed */
	pthread_mutex_t in_mu;        /* parking: the incoming list, stopping */
	atomic_uint_fast64_t gen;     /* bumped by every kick */
	uint64_t gen_seen;            /* the last gen woken for (under mu) */
	struct api__stream **incoming;/* parked since the last wake (in_mu) */
	size_t n_incoming, cap_incoming;
	struct api__stream **parked;  /* the waker's (under mu) */
	size_t n_parked, cap_parked;
	atomic_size_t open;           /* streams with a response */
	size_t max;                   /* at most this many open */
	unsigned heartbeat_ms;
	bool stopping;                /* under in_mu: no stream parks any more */
};

void api__streams_init(struct api__streams *ss, pthread_mutex_t *mu,
		       size_t max, unsigned heartbeat_ms);
/* Free the lists (no stream is left: after MHD_stop_daemon). */
void api__streams_close(struct api__streams *ss);

/* A response sending the stream `ops`/`state` on `conn` (which the
 * response then owns: ops->free is called with it). NULL when out of
 * memory (ops->free was called). */
struct MHD_Response *api__stream_response(struct api__streams *ss,
					  struct MHD_Connection *conn,
					  const struct api_stream_ops *ops,
					  void *state);

/* With *mu held: take the streams parked since the last call, then resume
 * those that have something (after a kick) or whose heartbeat is due; all
 * of them when stopping. now_ms is CLOCK_MONOTONIC. Returns how many are
 * parked after. */
size_t api__streams_wake(struct api__streams *ss, int64_t now_ms);

/* With *mu held: whether any stream waits (parked or incoming). */
bool api__streams_waiting(struct api__streams *ss);

/* With *mu held: no stream parks from now on; every parked one is resumed
 * and ends. */
void api__streams_stop(struct api__streams *ss);

/* Monotonic milliseconds. */
int64_t api__now_ms(void);

#endif
