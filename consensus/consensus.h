/* consensus.h - flowd's Raft node: canonical/raft 0.15 over raft_uv, on
 * plain TCP or mutually authenticated TLS, on the caller's libuv loop. It
 * bootstraps, proposes commands, tracks leadership, takes snapshots and
 * shuts down without tripping 0.15's known crash paths. It knows nothing of
 * flows or runs: the state machine is handed in as callbacks. Everything
 * here runs on the loop thread. */
#ifndef FLOWD_CONSENSUS_H
#define FLOWD_CONSENSUS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* Status codes reported by this module (0 = ok). */
enum {
	CONSENSUS_OK = 0,
	CONSENSUS_NOT_LEADER = 1,      /* not the leader (or transferring) */
	CONSENSUS_LEADERSHIP_LOST = 2, /* outcome unknown: may still commit */
	CONSENSUS_SHUTDOWN = 3,        /* closing: nothing accepted */
	CONSENSUS_IO = 4,              /* disk error: fatal for the node */
	CONSENSUS_BUSY = 5,            /* snapshot cb: not now, try later */
	CONSENSUS_NOMEM = 6,
	CONSENSUS_TIMEOUT = 7,         /* the caller's deadline passed */
	CONSENSUS_ERROR = 8,           /* anything else (errmsg says) */
	CONSENSUS_CANTCHANGE = 9,      /* another membership change pending */
	CONSENSUS_PENDING = 10,        /* snapshot cb: the bytes come from
	                                * snapshot_collect, off the loop */
};

enum consensus_role {
	CONSENSUS_UNAVAILABLE = 0,
	CONSENSUS_FOLLOWER = 1,
	CONSENSUS_CANDIDATE = 2,
	CONSENSUS_LEADER = 3,
};

/* The replicated state machine, as raft sees it. All three run on the loop
 * thread and must not block. */
struct consensus_fsm {
	void *arg;
	/* Apply one committed command. `buf` is borrowed. `index` is the
	 * entry's Raft index. *result (may stay NULL) is handed to the
	 * proposer's callback on this node if it proposed this entry; it must
	 * stay valid until the next apply. Must return 0 (business errors go
	 * in the result). */
	int (*apply)(void *arg, uint64_t index, const void *buf, size_t len,
		     void **result);
	/* Serialize the state: *buf malloc'd (ownership passes to consensus),
	 * or return CONSENSUS_BUSY to postpone the snapshot. With
	 * snapshot_collect set it may instead return CONSENSUS_PENDING with
	 * *buf an opaque job: the loop goes on, and the bytes are collected
	 * on a worker thread. */
	int (*snapshot)(void *arg, void **buf, size_t *len);
	/* Replace the state with a snapshot (`buf` borrowed). Returns 0 or -1. */
	int (*restore)(void *arg, const void *buf, size_t len);
	/* Optional. On a worker thread, for a job snapshot() left pending:
	 * produce the snapshot's bytes (*buf malloc'd, ownership passes).
	 * Returns 0 or -1 (the snapshot is skipped and tried again later). */
	int (*snapshot_collect)(void *arg, void *job, void **buf, size_t *len);
	/* Optional, with snapshot_collect: on the loop, once raft is done with
	 * a pending snapshot (written, failed or skipped): free the job. */
	void (*snapshot_done)(void *arg, void *job);
};

struct consensus_peer {
	uint64_t id;
	const char *address;          /* IPv4 "a.b.c.d:port"; copied */
};

struct consensus_config {
	uint64_t id;
	const char *address;          /* this node's raft address; copied */
	const char *data_dir;         /* must exist; copied */
	const struct consensus_peer *peers; /* the initial voters, incl. this node */
	unsigned n_peers;
	unsigned heartbeat_ms;
	unsigned election_ms;
	unsigned snapshot_threshold;
	unsigned snapshot_trailing;
	int pre_vote;
	/* Called on the loop when a proposal completes (committed and
	 * applied, or failed), with the seconds it took; may be NULL. */
	void (*proposed)(void *arg, double seconds);
	void *proposed_arg;
	/* Raft over mutually authenticated TLS (transport_tls.h): PEM paths
	 * of the cluster CA every peer's certificate must chain to, this
	 * node's certificate and its key (copied; read again by
	 * consensus_tls_reload). All three, or all NULL: plain TCP
	 * (raft_uv_tcp), with no authentication, for a loopback demo. */
	const char *tls_ca_file;
	const char *tls_cert_file;
	const char *tls_key_file;
};

struct consensus;

/* Called when leadership, term or role changed (polled from a timer every
 * heartbeat_ms/2, since 0.15 has no state callback). */
typedef void (*consensus_role_cb)(void *arg, enum consensus_role role,
				  uint64_t leader_id);

/* Create and start the node on `loop` (borrowed). The first start on a
 * pristine data_dir bootstraps the configuration of `peers`. Returns NULL
 * with errmsg on failure (bad dir, bad address, ...). A failure after
 * raft_init (e.g. the port is taken) leaves a half-built node that closes
 * itself on the loop: run the loop before uv_loop_close. Zero-valued
 * timeouts and snapshot settings keep raft's defaults. */
struct consensus *consensus_new(uv_loop_t *loop,
				const struct consensus_config *cfg,
				const struct consensus_fsm *fsm,
				consensus_role_cb role_cb, void *role_arg,
				char *errmsg, size_t errlen);

/* Completion of a proposal or barrier: status is one of the CONSENSUS_*
 * codes; `result` is what fsm->apply stored (valid only during the call). */
typedef void (*consensus_done_cb)(void *arg, int status, uint64_t index,
				  void *result);

/* Propose a command. The entry is padded with NUL bytes to a multiple of 8
 * bytes (raft's segment format requires it), so fsm->apply sees `len`
 * rounded up and must ignore trailing NULs. `buf` is malloc'd by the caller; ownership passes to
 * consensus in every case (freed on failure too). `timeout_ms` > 0 arms a
 * deadline: when it passes first, cb gets CONSENSUS_TIMEOUT (the entry may
 * still commit later) and nothing else for this proposal. Returns 0 when
 * accepted (cb fires exactly once), or a CONSENSUS_* code (cb never fires).
 * An empty command (len 0) is refused with CONSENSUS_ERROR. */
int consensus_propose(struct consensus *c, void *buf, size_t len,
		      unsigned timeout_ms, consensus_done_cb cb, void *arg);

/* A barrier: cb(0) once every entry before it is applied on this leader. */
int consensus_barrier(struct consensus *c, consensus_done_cb cb, void *arg);

enum consensus_role consensus_role(struct consensus *c);
/* The leader's id as this node knows it (0 if unknown). */
uint64_t consensus_leader(struct consensus *c);
uint64_t consensus_term(struct consensus *c);
uint64_t consensus_commit_index(struct consensus *c);
uint64_t consensus_applied_index(struct consensus *c);
uint64_t consensus_last_index(struct consensus *c);
/* Proposals (and barriers) accepted and not yet completed. */
unsigned consensus_inflight(struct consensus *c);
const char *consensus_errmsg(struct consensus *c);

/* Read the TLS files of the config again (SIGHUP): Raft connections made
 * from now on use them, established ones go on with the old ones. On a
 * failure the old credentials stay and errmsg says why. Returns 0, or
 * CONSENSUS_ERROR (also when the node runs plain TCP). Loop thread. */
int consensus_tls_reload(struct consensus *c, char *errmsg, size_t errlen);

/* Clean shutdown (dependencies.md §0.3, §5.7): refuse new proposals, wait
 * until every in-flight raft_apply callback has fired (pending deadlines
 * fire with CONSENSUS_SHUTDOWN, i.e. a deadline that passes during the wait
 * reports SHUTDOWN instead of TIMEOUT), hand leadership away if leader and
 * other voters exist, then raft_close, raft_uv_close, raft_uv_tcp_close.
 * role_cb is not called once close has begun. `done` is called when all of
 * it is closed; the object is freed just before (do not touch `c` in done).
 * Call it once. */
void consensus_close(struct consensus *c, void (*done)(void *arg), void *arg);

/* ---------------------------------------------------------------- membership
 * (membership.c). A node that is to join a running cluster is started with a
 * config whose `peers` do not include its own id (n_peers may be 0): it does
 * not bootstrap, starts with whatever its data_dir holds (nothing the first
 * time) and waits, as a non-voter that never campaigns, until the leader adds
 * it with consensus_member_add. A node whose id is among `peers` bootstraps
 * them as voters on a pristine data_dir, as before.
 *
 * The three requests below follow consensus_propose's conventions: they
 * return 0 when accepted (cb then fires exactly once; `index` and `result`
 * are 0/NULL) or a CONSENSUS_* code, with errmsg, when refused (cb never
 * fires). Only one membership change runs at a time in the whole cluster:
 * another one pending gives CONSENSUS_CANTCHANGE. A pending request counts
 * in consensus_inflight(), and consensus_close waits for it like for a
 * proposal; one that raft ends because of the close reports
 * CONSENSUS_SHUTDOWN. cb never runs after the object is freed. */

/* Leader only: add server `id` at `address` (IPv4 "a.b.c.d:port", copied)
 * as a spare, then promote it to voter, which raft does only after the node
 * has caught up with the log. cb(CONSENSUS_OK) once it is a voter;
 * CONSENSUS_ERROR for a duplicate id or address or a node that could not be
 * caught up (errmsg says); CONSENSUS_LEADERSHIP_LOST if this node stepped
 * down meanwhile. `timeout_ms` > 0 arms a deadline: when it passes first, cb
 * gets CONSENSUS_TIMEOUT (SHUTDOWN while closing) and the change may still
 * complete later. */
int consensus_member_add(struct consensus *c, uint64_t id,
			 const char *address, unsigned timeout_ms,
			 consensus_done_cb cb, void *arg);

/* Leader only: remove server `id` from the configuration; same conventions.
 * Removing the leader itself is allowed: it steps down once the change
 * commits (and cb reports OK). */
int consensus_member_remove(struct consensus *c, uint64_t id,
			    unsigned timeout_ms, consensus_done_cb cb,
			    void *arg);

/* Leader only: hand leadership to voter `id` (0: raft picks an up-to-date
 * voter). cb(CONSENSUS_OK) once leadership has moved away from this node,
 * CONSENSUS_ERROR if it had not after an election timeout. CONSENSUS_ERROR
 * at once for an unknown id, a non-voter or this node itself. */
int consensus_transfer(struct consensus *c, uint64_t id, consensus_done_cb cb,
		       void *arg);

/* Roles in a configuration (raft's RAFT_VOTER/STANDBY/SPARE). */
enum consensus_member_role {
	CONSENSUS_VOTER = 0,   /* replicates and counts for the quorum */
	CONSENSUS_STANDBY = 1, /* replicates, does not vote */
	CONSENSUS_SPARE = 2,   /* neither (just added, not yet promoted) */
};

struct consensus_member {
	uint64_t id;
	char address[64];
	int role;              /* enum consensus_member_role */
};

/* Copy up to `max` entries of this node's current configuration (the latest
 * one it knows, possibly not yet committed) into `out` (borrowed). Returns
 * the number of servers in the configuration, which may exceed `max`; 0 on
 * a node that has not been added yet or is closed. */
unsigned consensus_members(struct consensus *c, struct consensus_member *out,
			   unsigned max);

#endif
