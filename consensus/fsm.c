/* fsm.c - the struct raft_fsm that raft 0.15 calls, adapted to the user's
 * struct consensus_fsm.
 *
 * DESIGN
 * Happy path: raft calls apply() for every committed command, in log order,
 * on every node; we compute the entry's index as raft_last_applied() + 1
 * (0.15 does not pass it, dependencies.md §1.4) and hand the user a borrowed
 * buffer. snapshot() asks the user for a malloc'd serialisation, copies it
 * into a raft_malloc'd buffer (raft's allocator, which may be replaced with
 * raft_heap_set) and returns it; raft then writes it and calls
 * snapshot_finalize(), which frees what snapshot() handed out (FSM version 2:
 * raft owns none of the buffers, raft.h). restore() hands the user the
 * snapshot and, on success, frees its base with raft_free as raft requires.
 *
 * Failure modes:
 * - apply must return 0 to raft: a non-zero return makes a follower
 *   RAFT_UNAVAILABLE until restart and stalls a leader (§0.2). A user apply
 *   that fails anyway is logged and reported to raft as success.
 * - the user snapshot returns CONSENSUS_BUSY: RAFT_BUSY, which 0.15 treats
 *   as "skip, retry after later applies". Any other failure, an empty or an
 *   unallocatable snapshot is also reported as RAFT_BUSY (retried), logged
 *   once until a snapshot succeeds again. An empty snapshot is refused because
 *   an empty snapshot file has blocked startup before (LXD #7101).
 * - restore fails: RAFT_CORRUPT; raft keeps ownership of the buffer, and
 *   raft_start (or the InstallSnapshot) fails.
 * - An asynchronous snapshot (the user gave snapshot_collect): FSM version
 *   3. snapshot() on the loop takes the user's pending job, snapshot_async
 *   runs the user's collect on a libuv worker thread and hands raft the
 *   bytes, snapshot_finalize on the loop lets the user free the job. raft
 *   0.15's raft_uv says io->version 1, and raft_init refuses a v3 FSM with
 *   it though raft_uv has async_work (dependencies.md §0.4, fixed upstream
 *   in 0.17.1): node.c sets io.version to 2 for it.
 * Thread: the loop thread, inside raft's callbacks; snapshot_async on a
 * libuv worker thread (it touches only the job and its own buffers). */
#include "consensus/internal.h"

#include <stdlib.h>
#include <string.h>

#include "core/log.h"

static int apply(struct raft_fsm *rfsm, const struct raft_buffer *buf,
		 void **result)
{
	struct consensus *c = rfsm->data;
	uint64_t index = (uint64_t)raft_last_applied(&c->raft) + 1;
	int rv;

	*result = NULL;
	if (index <= c->last_apply_index)
		log_error("consensus: apply index=%llu not above previous=%llu",
			  (unsigned long long)index,
			  (unsigned long long)c->last_apply_index);
	c->last_apply_index = index;
	rv = c->fsm.apply(c->fsm.arg, index, buf->base, buf->len, result);
	if (rv != 0)
		log_error("consensus: fsm apply failed index=%llu rv=%d "
			  "(ignored: raft needs 0)",
			  (unsigned long long)index, rv);
	return 0;
}

static int snapshot(struct raft_fsm *rfsm, struct raft_buffer *bufs[],
		    unsigned *n_bufs)
{
	struct consensus *c = rfsm->data;
	struct raft_buffer *out = NULL;
	void *data = NULL;
	size_t len = 0;
	int rv;

	c->snapshot_job = NULL;
	rv = c->fsm.snapshot(c->fsm.arg, &data, &len);
	if (rv == CONSENSUS_PENDING && c->fsm.snapshot_collect != NULL) {
		/* the bytes come from snapshot_async (a worker thread) */
		c->snapshot_job = data;
		*bufs = NULL;
		*n_bufs = 0;
		return 0;
	}
	if (rv == CONSENSUS_BUSY) {
		free(data);
		log_debug("consensus: snapshot postponed by fsm");
		return RAFT_BUSY;
	}
	if (rv != 0 || data == NULL || len == 0) {
		if (!c->snapshot_failing)
			log_error("consensus: fsm snapshot failed rv=%d len=%zu "
				  "(will retry)", rv, len);
		goto fail;
	}
	out = raft_malloc(sizeof *out);
	if (out == NULL)
		goto fail_oom;
	out->base = raft_malloc(len);
	if (out->base == NULL)
		goto fail_oom_after_out;
	memcpy(out->base, data, len);
	out->len = len;
	free(data);
	*bufs = out;
	*n_bufs = 1;
	if (c->snapshot_failing)
		log_info("consensus: snapshot works again");
	c->snapshot_failing = 0;
	log_debug("consensus: snapshot taken applied=%llu len=%zu",
		  (unsigned long long)raft_last_applied(&c->raft), len);
	return 0;

fail_oom_after_out:
	raft_free(out);
fail_oom:
	if (!c->snapshot_failing)
		log_error("consensus: snapshot out of memory len=%zu", len);
fail:
	free(data);
	c->snapshot_failing = 1;
	return RAFT_BUSY;
}

/* FSM version 3, on a libuv worker thread after a snapshot() that left a
 * job pending: the user collects the bytes. A failure leaves no buffer,
 * and raft skips this snapshot (tried again after later applies). */
static int snapshot_async(struct raft_fsm *rfsm, struct raft_buffer *bufs[],
			  unsigned *n_bufs)
{
	struct consensus *c = rfsm->data;
	struct raft_buffer *out;
	void *data = NULL;
	size_t len = 0;

	if (c->snapshot_job == NULL)
		return 0; /* a synchronous snapshot: the bytes are there */
	if (c->fsm.snapshot_collect(c->fsm.arg, c->snapshot_job, &data,
				    &len) != 0 ||
	    data == NULL || len == 0)
		goto fail;
	out = raft_malloc(sizeof *out);
	if (out == NULL)
		goto fail;
	out->base = raft_malloc(len);
	if (out->base == NULL) {
		raft_free(out);
		goto fail;
	}
	memcpy(out->base, data, len);
	out->len = len;
	free(data);
	*bufs = out;
	*n_bufs = 1;
	return 0;
fail:
	free(data);
	return RAFT_NOMEM;
}

/* Runs after every successful snapshot(), written or not (raft.h, v2;
 * v3: on the loop after snapshot_async, whatever it returned). */
static int snapshot_finalize(struct raft_fsm *rfsm, struct raft_buffer *bufs[],
			     unsigned *n_bufs)
{
	struct consensus *c = rfsm->data;

	if (c->snapshot_job != NULL) {
		c->fsm.snapshot_done(c->fsm.arg, c->snapshot_job);
		c->snapshot_job = NULL;
	}
	if (*bufs != NULL) {
		for (unsigned i = 0; i < *n_bufs; i++)
			raft_free((*bufs)[i].base);
		raft_free(*bufs);
	}
	*bufs = NULL;
	*n_bufs = 0;
	return 0;
}

static int restore(struct raft_fsm *rfsm, struct raft_buffer *buf)
{
	struct consensus *c = rfsm->data;
	int rv;

	rv = c->fsm.restore(c->fsm.arg, buf->base, buf->len);
	if (rv != 0) {
		log_error("consensus: fsm restore failed len=%zu rv=%d",
			  buf->len, rv);
		return RAFT_CORRUPT;
	}
	/* Success: the buffer is ours to free (example/server.c does this). */
	raft_free(buf->base);
	buf->base = NULL;
	/* raft moves last_applied to the snapshot's index after we return;
	 * the entries after it are applied again from there. */
	c->last_apply_index = 0;
	log_info("consensus: restored snapshot len=%zu", buf->len);
	return 0;
}

void consensus__fsm_init(struct consensus *c)
{
	memset(&c->raft_fsm, 0, sizeof c->raft_fsm);
	c->raft_fsm.version = 2;
	c->raft_fsm.data = c;
	c->raft_fsm.apply = apply;
	c->raft_fsm.snapshot = snapshot;
	c->raft_fsm.restore = restore;
	c->raft_fsm.snapshot_finalize = snapshot_finalize;
	c->raft_fsm.snapshot_async = NULL;
	if (c->fsm.snapshot_collect != NULL && c->fsm.snapshot_done != NULL) {
		/* v3: snapshot() on the loop, snapshot_async on a worker,
		 * snapshot_finalize back on the loop (raft.h) */
		c->raft_fsm.version = 3;
		c->raft_fsm.snapshot_async = snapshot_async;
	}
}
