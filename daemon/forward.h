/* forward.h - the one way to the leader, for both kinds of traffic that
 * need it: a node's own commands (registration, heartbeats, step outcomes,
 * and the leader's duties: retries, fires, the snapshot no-op), proposed
 * through raft on the leader and as `POST /internal/v1/commands` to the
 * leader's API elsewhere; and a client's request that only the leader can
 * answer, handed to the leader's API unchanged. Both go through peer.c.
 * Loop thread only. */
#ifndef FLOWD_DAEMON_FORWARD_H
#define FLOWD_DAEMON_FORWARD_H

#include <stddef.h>

#include "api/api.h"
#include "consensus/consensus.h"
#include "core/fsm.h"
#include "daemon/config.h"
#include "daemon/peer.h"

/* A status beyond the CONSENSUS_* codes: the leader answered 4xx. The
 * request itself was bad (over the leader's body limit, not JSON, a token
 * the leader does not know), so sending it again as it is would only get
 * the same answer; the callback gets that answer as `refusal` and decides
 * what to send instead. */
#define FORWARD_REFUSED (-1)

/* status: a CONSENSUS_* code or FORWARD_REFUSED; refusal: the leader's
 * answer (borrowed for the call) with FORWARD_REFUSED, else NULL. No
 * answer, and 5xx (503: no leader there or not ready; 504: the commit took
 * too long), come as CONSENSUS_NOT_LEADER: the same command may be sent
 * again. */
typedef void (*forward_done_cb)(void *arg, int status,
				const struct peer_result *refusal);

/* How a module proposes its own commands: a vtable, so that main.c wires
 * it to forward_command_send() and a unit test to a stand-in leader.
 * propose: `buf` is malloc'd and always consumed; returns 0 when under way
 * (cb fires once, on the loop thread, later) or -1 when no leader can take
 * it now (cb never fires). */
struct forward_proposer {
	int (*propose)(void *arg, char *buf, size_t len, forward_done_cb cb,
		       void *cb_arg);
	void *arg;
};

struct forward_config {
	const struct flowd_config *cfg; /* borrowed: peers, node id, the admin
	                                 * token, raft.apply_timeout_ms */
	struct consensus *raft;         /* borrowed until forward_detach */
	struct peer *peer;              /* borrowed until forward_detach */
	const struct fsm *fsm;          /* borrowed: nodes' API addresses */
};

struct forward;

/* Returns NULL when out of memory. */
struct forward *forward_new(const struct forward_config *c);
void forward_free(struct forward *f);

/* The role as consensus last reported it (main.c fans it out). */
void forward_role_set(struct forward *f, enum consensus_role role);
/* Shutting down: forward_command_send refuses from here on. */
void forward_stop(struct forward *f);
/* Raft and the peer are closing: nothing reaches them any more; requests
 * are answered 503. */
void forward_detach(struct forward *f);

/* The leader's API address ("a.b.c.d:port", borrowed until the next apply),
 * or NULL when no leader is known or this node leads. */
const char *forward_leader_address(struct forward *f);

/* Propose `buf` (malloc'd; always consumed) wherever the leader is: through
 * raft on the leader, as POST /internal/v1/commands to the leader
 * elsewhere. Returns 0 (cb fires once) or -1 (cb never fires). */
int forward_command_send(struct forward *f, char *buf, size_t len,
			 forward_done_cb cb, void *arg);

/* A follower hands `req` (borrowed until finished), unchanged, to the
 * leader and relays the answer; the client never needs to know who leads.
 * A request that was already forwarded is not forwarded again (no loops
 * while an election settles): it gets 503. Always finishes `req`. */
void forward_request_send(struct forward *f, struct api_request *req);

/* The same from an HTTP thread, to the leader at `leader_api` (the read
 * view's; a follower then relays a client's write without its loop: two
 * loop wake-ups fewer on the way there and back). The answer is relayed
 * from the peer's worker thread. Returns 0 when under way, or -1 when it
 * could not be sent (the caller hands the request to the loop instead). */
int forward_request_any(struct forward *f, struct api_request *req,
			const char *leader_api);

#endif
