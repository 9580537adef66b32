/* propose.c - proposals and barriers: raft_apply/raft_barrier requests with
 * an optional deadline, completed exactly once towards the caller.
 *
 * DESIGN
 * Happy path: consensus_propose copies the caller's command into a
 * raft_malloc'd buffer (raft frees it once the entry leaves the log), embeds
 * struct raft_apply in a request together with the caller's cb/arg and an
 * optional uv_timer deadline, and calls raft_apply. When the entry is
 * committed and applied, raft calls apply_cb with the result fsm->apply
 * stored; we map the status, call the caller's cb, close the deadline timer
 * and free the request in the timer's close callback (never earlier: libuv
 * reuses a handle's memory only after its close callback).
 *
 * Failure modes:
 * - not the leader, or leadership being transferred: raft_apply returns
 *   RAFT_NOTLEADER -> CONSENSUS_NOT_LEADER, cb never fires, buffer freed
 *   (raft takes ownership only when raft_apply returns 0).
 * - closing: CONSENSUS_SHUTDOWN before raft is touched (0.15 crashes if
 *   raft_close runs with leader appends in flight, dependencies.md §0.3).
 * - the deadline passes first: cb(CONSENSUS_TIMEOUT) (or SHUTDOWN while
 *   closing); the entry may still commit. The raft callback, when it comes,
 *   only frees the request. consensus_inflight() still counts it, because
 *   close must wait for raft's callback.
 * - RAFT_LEADERSHIPLOST: the entry may still commit (§1.4); the caller
 *   retries with the same request id. RAFT_IOERR/RAFT_NOSPACE: logged as
 *   fatal; the daemon exits (0.15's disk-error paths are fragile, §5.7).
 * Thread: loop thread only. */
#include "consensus/internal.h"

#include <stdlib.h>
#include <string.h>

#include "core/log.h"

struct request {
	union {
		struct raft_apply apply;
		struct raft_barrier barrier;
	} raft;                    /* raft.apply.data == this */
	struct consensus__pending p;
	const char *what;          /* "propose" or "barrier", for logs */
	uint64_t t0;               /* uv_hrtime() when proposed */
};

static int map_status(struct consensus *c, int status, const char *what)
{
	switch (status) {
	case 0:
		return CONSENSUS_OK;
	case RAFT_LEADERSHIPLOST:
		return CONSENSUS_LEADERSHIP_LOST;
	case RAFT_SHUTDOWN:
		return CONSENSUS_SHUTDOWN;
	case RAFT_NOTLEADER:
		return CONSENSUS_NOT_LEADER;
	case RAFT_NOMEM:
		return CONSENSUS_NOMEM;
	case RAFT_IOERR:
	case RAFT_NOSPACE:
		log_error("consensus: %s failed status=%d (%s): disk error, "
			  "node must exit: %s", what, status,
			  raft_strerror(status), raft_errmsg(&c->raft));
		consensus__errorf(c, "%s: %s", what, raft_strerror(status));
		return CONSENSUS_IO;
	default:
		log_warn("consensus: %s failed status=%d (%s)", what, status,
			 raft_strerror(status));
		consensus__errorf(c, "%s: %s", what, raft_strerror(status));
		return CONSENSUS_ERROR;
	}
}

/* raft is done with the request: report (unless the deadline did) and free. */
static void request_done(struct request *req, int status, void *result)
{
	struct consensus *c = req->p.c;
	int code;

	c->inflight--;
	code = map_status(c, status, req->what);
	if (c->proposed != NULL && req->what[0] == 'p')
		c->proposed(c->proposed_arg,
			    (double)(uv_hrtime() - req->t0) / 1e9);
	if (!consensus__pending_report(&req->p, code,
				       (uint64_t)req->raft.apply.index,
				       code == CONSENSUS_OK ? result : NULL))
		log_debug("consensus: %s index=%llu completed status=%d after "
			  "its deadline", req->what,
			  (unsigned long long)req->raft.apply.index, code);
	consensus__pending_free(&req->p);
}

static void apply_cb(struct raft_apply *raft_req, int status, void *result)
{
	request_done(raft_req->data, status, result);
}

static void barrier_cb(struct raft_barrier *raft_req, int status)
{
	request_done(raft_req->data, status, NULL);
}

static struct request *request_new(struct consensus *c, consensus_done_cb cb,
				   void *arg, const char *what)
{
	struct request *req = calloc(1, sizeof *req);

	if (req == NULL)
		return NULL;
	consensus__pending_init(&req->p, c, cb, arg, req);
	req->what = what;
	req->raft.apply.data = req;
	req->t0 = uv_hrtime();
	return req;
}

static int refuse_closing(struct consensus *c, const char *what)
{
	if (c->phase == CONSENSUS__RUNNING)
		return 0;
	consensus__errorf(c, "%s: shutting down", what);
	return CONSENSUS_SHUTDOWN;
}

static int map_submit_error(struct consensus *c, int rv, const char *what)
{
	switch (rv) {
	case RAFT_NOTLEADER:
		consensus__errorf(c, "%s: not the leader", what);
		return CONSENSUS_NOT_LEADER;
	case RAFT_NOMEM:
		consensus__errorf(c, "%s: out of memory", what);
		return CONSENSUS_NOMEM;
	case RAFT_SHUTDOWN:
		consensus__errorf(c, "%s: shutting down", what);
		return CONSENSUS_SHUTDOWN;
	default:
		consensus__raft_error(c, what, rv);
		return CONSENSUS_ERROR;
	}
}

int consensus_propose(struct consensus *c, void *buf, size_t len,
		      unsigned timeout_ms, consensus_done_cb cb, void *arg)
{
	struct raft_buffer rbuf = {NULL, 0};
	struct request *req;
	int rv;

	rv = refuse_closing(c, "propose");
	if (rv != 0)
		goto out;
	if (len == 0 || buf == NULL || cb == NULL) {
		consensus__errorf(c, "propose: empty command or no callback");
		rv = CONSENSUS_ERROR;
		goto out;
	}
	/* raft's segment format needs every entry to be a multiple of 8
	 * bytes long: the 0.15 writer pads the data, its loader does not, so
	 * an odd-sized entry makes every later batch of the open segment
	 * unreadable after a crash (later releases assert on it). Pad with
	 * NUL bytes; the state machine ignores trailing NULs. */
	rbuf.len = (len + 7) & ~(size_t)7;
	rbuf.base = raft_malloc(rbuf.len);
	if (rbuf.base == NULL) {
		consensus__errorf(c, "propose: out of memory");
		rv = CONSENSUS_NOMEM;
		goto out;
	}
	memcpy(rbuf.base, buf, len);
	memset((char *)rbuf.base + len, 0, rbuf.len - len);
	req = request_new(c, cb, arg, "propose");
	if (req == NULL) {
		consensus__errorf(c, "propose: out of memory");
		rv = CONSENSUS_NOMEM;
		goto out_free_rbuf;
	}
	rv = raft_apply(&c->raft, &req->raft.apply, &rbuf, 1, apply_cb);
	if (rv != 0) {
		rv = map_submit_error(c, rv, "propose");
		goto out_free_req;
	}
	/* raft owns rbuf.base now. */
	consensus__pending_arm(&req->p, timeout_ms);
	free(buf);
	return 0;

out_free_req:
	free(req);
out_free_rbuf:
	raft_free(rbuf.base);
out:
	free(buf);
	return rv;
}

int consensus_barrier(struct consensus *c, consensus_done_cb cb, void *arg)
{
	struct request *req;
	int rv;

	rv = refuse_closing(c, "barrier");
	if (rv != 0)
		return rv;
	if (cb == NULL) {
		consensus__errorf(c, "barrier: no callback");
		return CONSENSUS_ERROR;
	}
	req = request_new(c, cb, arg, "barrier");
	if (req == NULL) {
		consensus__errorf(c, "barrier: out of memory");
		return CONSENSUS_NOMEM;
	}
	rv = raft_barrier(&c->raft, &req->raft.barrier, barrier_cb);
	if (rv != 0) {
		free(req);
		return map_submit_error(c, rv, "barrier");
	}
	consensus__pending_arm(&req->p, 0);
	return 0;
}
