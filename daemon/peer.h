/* peer.h - requests from this node to another node's REST API: forwarding a
 * client's write to the leader, and proposing internal commands through the
 * leader. A worker thread runs libcurl (keep-alive connections per peer);
 * completions come back on the loop thread. */
#ifndef FLOWD_DAEMON_PEER_H
#define FLOWD_DAEMON_PEER_H

#include <stddef.h>
#include <uv.h>

#include "daemon/nodecred.h"

struct peer;

/* Keep-alive connections per peer at most: a follower forwards that many
 * client writes to the leader at once (more wait inside libcurl); with 8 a
 * follower's forwarded writes at 1,000/s queued for 60 ms at the median. */
#define PEER_MAX_HOST_CONNS 64L

/* The outcome of one request, borrowed for the duration of the callback.
 * status: the HTTP status, or 0 when no answer came (connect error,
 * timeout). `error` says why it failed, for the caller's log: with status
 * 0, libcurl's text; with a 4xx (the peer refused the request), the
 * answer's flowd error body as "code: message" ("too_large: body over
 * 1048576 bytes"), or the start of the body on one line when it is not
 * one; "" otherwise. */
struct peer_result {
	int status;
	const char *body;         /* NUL-terminated, "" when none */
	size_t body_len;
	unsigned retry_after;     /* the Retry-After header in seconds, 0 if none */
	const char *error;        /* "" unless status is 0 or 4xx */
};

/* Called on the loop thread, exactly once per accepted request. */
typedef void (*peer_done_cb)(void *arg, const struct peer_result *res);

/* Create on `loop` (borrowed). timeout_ms bounds each request (connect plus
 * answer). Every request is signed with `cred` (copied; its strings are
 * borrowed for the peer's life) and goes over HTTPS when it says so.
 * Returns NULL on failure. */
struct peer *peer_new(uv_loop_t *loop, unsigned timeout_ms,
		      const struct nodecred *cred);

struct peer_request {
	const char *address;      /* "a.b.c.d:port" of the peer's API; copied */
	const char *method;       /* "GET", "POST", "PUT", "DELETE"; copied */
	const char *target;       /* path and query, e.g. "/v1/runs?limit=5"; copied */
	const char *on_behalf;    /* X-Flowd-On-Behalf (a client's write this
	                           * node forwards), or NULL: the node's own
	                           * request; copied */
	const char *content_type; /* may be NULL; copied */
	const char *body;         /* may be NULL; copied */
	size_t body_len;
	int forwarded;            /* send "X-Flowd-Forwarded: 1" */
};

/* Queue a request. Returns 0 (cb fires exactly once, on the loop thread) or
 * -1 (closing or out of memory; cb never fires). */
int peer_send(struct peer *p, const struct peer_request *req, peer_done_cb cb,
	      void *arg);

/* The same from any thread, for a callback that may run on any thread: it
 * is called on the worker thread (or on the caller's, for a request refused
 * at once) rather than on the loop, so that a follower relays a client's
 * write without its loop (forward.c). Until peer_close(). */
int peer_send_any(struct peer *p, const struct peer_request *req,
		  peer_done_cb cb, void *arg);

/* Stop: requests not yet answered complete with status 0 and error
 * "shutting down" (on the loop, before `done`); the worker is joined; `done`
 * (may be NULL) is called from the loop once every handle is closed; then
 * the peer is freed. */
void peer_close(struct peer *p, void (*done)(void *arg), void *arg);

#endif
