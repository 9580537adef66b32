/* membership.c - cluster membership: add (spare, then voter), remove,
 * leadership transfer and reading the configuration.
 *
 * DESIGN
 * Happy path: consensus_member_add embeds struct raft_change in a request
 * together with the caller's cb/arg and an optional uv_timer deadline, and
 * calls raft_add, which appends a configuration with the new server as
 * RAFT_SPARE (dependencies.md §1.6). When that entry commits raft calls
 * change_cb(0); from inside it we reuse the same raft_change for
 * raft_assign(id, RAFT_VOTER): raft first catches the node up (at most
 * max_catch_up_rounds rounds), then appends the configuration that makes it
 * a voter, and calls change_cb again when that commits; only then does the
 * caller hear CONSENSUS_OK. (raft clears leader_state.change and the
 * uncommitted index before calling the callback, so raft_assign inside it
 * is not refused with RAFT_CANTCHANGE.) consensus_member_remove is one
 * raft_remove. consensus_transfer is raft_transfer; raft calls back when the
 * target won or after an election timeout, and we decide from raft_state()
 * and raft_leader() whether leadership moved away. Requests end as in
 * propose.c: report once, close the deadline timer, free in its close
 * callback.
 *
 * Failure modes:
 * - not the leader, or a transfer is running: RAFT_NOTLEADER ->
 *   CONSENSUS_NOT_LEADER at once; another change pending (including our own
 *   add's promotion) -> CONSENSUS_CANTCHANGE; duplicate id/address, unknown
 *   id, bad role -> CONSENSUS_ERROR with errmsg. cb never fires for these.
 * - the deadline passes first: cb(TIMEOUT) (SHUTDOWN while closing); the
 *   change may still commit. The request stays in flight until raft's
 *   callback, which then only frees it.
 * - the node cannot be caught up (unreachable, too slow): raft fails the
 *   promotion with RAFT_NOCONNECTION -> CONSENSUS_ERROR; the node stays in
 *   the configuration as a spare (remove it, or add again after removing).
 * - leadership lost while pending: LEADERSHIP_LOST (the change may or may
 *   not commit: read consensus_members on the new leader).
 * - consensus_close: new requests get CONSENSUS_SHUTDOWN. Accepted ones
 *   count in c->inflight, so the close drain waits for raft's callback (it
 *   gives up after CONSENSUS__DRAIN_MAX_MS, then raft_close fails the
 *   change, which we report as SHUTDOWN). An add whose spare step commits
 *   during the close does not start the promotion: SHUTDOWN. live_requests
 *   keeps the object alive until every request is freed, so no callback
 *   ever runs on freed memory.
 * Thread: loop thread only. */
#include "consensus/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

enum kind {
	KIND_ADD = 0,      /* raft_add pending */
	KIND_PROMOTE,      /* raft_assign(RAFT_VOTER) pending (second add step) */
	KIND_REMOVE,
	KIND_TRANSFER,
};

static const char *const kind_name[] = {"add", "promote", "remove",
					"transfer"};

struct member_request {
	union {
		struct raft_change change;
		struct raft_transfer transfer;
	} raft;                    /* raft.change.data == this */
	struct consensus__pending p;
	enum kind kind;
	uint64_t id;               /* the server added/removed/targeted */
};

/* ---------------------------------------------------------------- status */

/* A raft status of a finished change -> CONSENSUS_*. */
static int map_status(struct member_request *req, int status)
{
	struct consensus *c = req->p.c;
	const char *what = kind_name[req->kind];

	if (status != 0 && c->phase != CONSENSUS__RUNNING)
		return CONSENSUS_SHUTDOWN; /* raft_close failed it */
	switch (status) {
	case 0:
		return CONSENSUS_OK;
	case RAFT_LEADERSHIPLOST:
		return CONSENSUS_LEADERSHIP_LOST;
	case RAFT_SHUTDOWN:
		return CONSENSUS_SHUTDOWN;
	case RAFT_NOTLEADER:
		return CONSENSUS_NOT_LEADER;
	case RAFT_CANTCHANGE:
		return CONSENSUS_CANTCHANGE;
	case RAFT_NOMEM:
		return CONSENSUS_NOMEM;
	case RAFT_NOCONNECTION:
		consensus__errorf(c, "%s %llu: the node could not be caught up "
				  "with the log", what,
				  (unsigned long long)req->id);
		return CONSENSUS_ERROR;
	default:
		consensus__errorf(c, "%s %llu: %s", what,
				  (unsigned long long)req->id,
				  raft_strerror(status));
		return CONSENSUS_ERROR;
	}
}

/* A raft call that refused a request -> CONSENSUS_* with errmsg. */
static int map_submit_error(struct consensus *c, int rv, const char *what,
			    uint64_t id)
{
	switch (rv) {
	case RAFT_NOTLEADER:
		consensus__errorf(c, "%s %llu: not the leader", what,
				  (unsigned long long)id);
		return CONSENSUS_NOT_LEADER;
	case RAFT_CANTCHANGE:
		consensus__errorf(c, "%s %llu: another membership change is "
				  "in progress", what, (unsigned long long)id);
		return CONSENSUS_CANTCHANGE;
	case RAFT_NOMEM:
		consensus__errorf(c, "%s %llu: out of memory", what,
				  (unsigned long long)id);
		return CONSENSUS_NOMEM;
	case RAFT_SHUTDOWN:
		consensus__errorf(c, "%s %llu: shutting down", what,
				  (unsigned long long)id);
		return CONSENSUS_SHUTDOWN;
	default:
		/* RAFT_DUPLICATEID, RAFT_DUPLICATEADDRESS, RAFT_BADID,
		 * RAFT_BADROLE, RAFT_NOTFOUND, ... */
		consensus__errorf(c, "%s %llu: %s", what,
				  (unsigned long long)id, raft_strerror(rv));
		return CONSENSUS_ERROR;
	}
}

/* ---------------------------------------------------------------- requests */

/* raft is done with the request: report (unless the deadline did), free. */
static void request_done(struct member_request *req, int code)
{
	req->p.c->inflight--;
	if (consensus__pending_report(&req->p, code, 0, NULL))
		log_info("consensus: %s id=%llu done status=%d",
			 kind_name[req->kind], (unsigned long long)req->id,
			 code);
	else
		log_debug("consensus: %s id=%llu completed status=%d after its "
			  "deadline", kind_name[req->kind],
			  (unsigned long long)req->id, code);
	consensus__pending_free(&req->p);
}

static struct member_request *request_new(struct consensus *c,
					  consensus_done_cb cb, void *arg,
					  enum kind kind, uint64_t id)
{
	struct member_request *req = calloc(1, sizeof *req);

	if (req == NULL)
		return NULL;
	consensus__pending_init(&req->p, c, cb, arg, req);
	req->kind = kind;
	req->id = id;
	req->raft.change.data = req;
	return req;
}

/* Common argument checks. Returns 0 or a CONSENSUS_* code with errmsg. */
static int check_request(struct consensus *c, const char *what,
			 consensus_done_cb cb)
{
	if (c->phase != CONSENSUS__RUNNING) {
		consensus__errorf(c, "%s: shutting down", what);
		return CONSENSUS_SHUTDOWN;
	}
	if (cb == NULL) {
		consensus__errorf(c, "%s: no callback", what);
		return CONSENSUS_ERROR;
	}
	return 0;
}

/* ---------------------------------------------------------------- changes */

static void change_cb(struct raft_change *raft_req, int status)
{
	struct member_request *req = raft_req->data;
	struct consensus *c = req->p.c;
	int rv;

	if (req->kind != KIND_ADD || status != 0) {
		request_done(req, map_status(req, status));
		return;
	}
	/* The spare is in the committed configuration: promote it. */
	if (c->phase != CONSENSUS__RUNNING) {
		log_info("consensus: add id=%llu: spare added, not promoted "
			 "(closing)", (unsigned long long)req->id);
		request_done(req, CONSENSUS_SHUTDOWN);
		return;
	}
	req->kind = KIND_PROMOTE;
	rv = raft_assign(&c->raft, &req->raft.change, req->id, RAFT_VOTER,
			 change_cb);
	if (rv != 0) {
		log_warn("consensus: add id=%llu: promotion refused rv=%d (%s)",
			 (unsigned long long)req->id, rv, raft_strerror(rv));
		request_done(req, map_submit_error(c, rv, "promote", req->id));
		return;
	}
	log_info("consensus: add id=%llu: spare added, catching up",
		 (unsigned long long)req->id);
}

int consensus_member_add(struct consensus *c, uint64_t id,
			 const char *address, unsigned timeout_ms,
			 consensus_done_cb cb, void *arg)
{
	struct member_request *req;
	int rv;

	rv = check_request(c, "add", cb);
	if (rv != 0)
		return rv;
	if (id == 0 || address == NULL || address[0] == '\0' ||
	    strlen(address) >= sizeof ((struct consensus_member *)0)->address) {
		consensus__errorf(c, "add: bad id or address");
		return CONSENSUS_ERROR;
	}
	req = request_new(c, cb, arg, KIND_ADD, id);
	if (req == NULL) {
		consensus__errorf(c, "add: out of memory");
		return CONSENSUS_NOMEM;
	}
	rv = raft_add(&c->raft, &req->raft.change, id, address, change_cb);
	if (rv != 0) {
		free(req);
		return map_submit_error(c, rv, "add", id);
	}
	consensus__pending_arm(&req->p, timeout_ms);
	log_info("consensus: add id=%llu address=%s",
		 (unsigned long long)id, address);
	return 0;
}

int consensus_member_remove(struct consensus *c, uint64_t id,
			    unsigned timeout_ms, consensus_done_cb cb,
			    void *arg)
{
	struct member_request *req;
	int rv;

	rv = check_request(c, "remove", cb);
	if (rv != 0)
		return rv;
	req = request_new(c, cb, arg, KIND_REMOVE, id);
	if (req == NULL) {
		consensus__errorf(c, "remove: out of memory");
		return CONSENSUS_NOMEM;
	}
	rv = raft_remove(&c->raft, &req->raft.change, id, change_cb);
	if (rv != 0) {
		free(req);
		return map_submit_error(c, rv, "remove", id);
	}
	consensus__pending_arm(&req->p, timeout_ms);
	log_info("consensus: remove id=%llu", (unsigned long long)id);
	return 0;
}

/* ---------------------------------------------------------------- transfer */

static void transfer_cb(struct raft_transfer *raft_req)
{
	struct member_request *req = raft_req->data;
	struct consensus *c = req->p.c;
	raft_id leader = 0;
	const char *address = NULL;
	int code;

	raft_leader(&c->raft, &leader, &address);
	if (raft_state(&c->raft) != RAFT_LEADER && leader != c->raft.id) {
		code = CONSENSUS_OK;
	} else if (c->phase != CONSENSUS__RUNNING) {
		code = CONSENSUS_SHUTDOWN;
	} else {
		consensus__errorf(c, "transfer %llu: leadership did not move",
				  (unsigned long long)req->id);
		code = CONSENSUS_ERROR;
	}
	log_info("consensus: transfer finished leader=%llu",
		 (unsigned long long)leader);
	request_done(req, code);
}

int consensus_transfer(struct consensus *c, uint64_t id, consensus_done_cb cb,
		       void *arg)
{
	struct member_request *req;
	int rv;

	rv = check_request(c, "transfer", cb);
	if (rv != 0)
		return rv;
	req = request_new(c, cb, arg, KIND_TRANSFER, id);
	if (req == NULL) {
		consensus__errorf(c, "transfer: out of memory");
		return CONSENSUS_NOMEM;
	}
	req->raft.transfer.data = req;
	/* raft 0.15 never calls transfer_cb from inside raft_transfer. */
	rv = raft_transfer(&c->raft, &req->raft.transfer, id, transfer_cb);
	if (rv != 0) {
		free(req);
		return map_submit_error(c, rv, "transfer", id);
	}
	consensus__pending_arm(&req->p, 0);
	log_info("consensus: transfer to id=%llu", (unsigned long long)id);
	return 0;
}

/* ---------------------------------------------------------------- members */

static int map_member_role(int role)
{
	switch (role) {
	case RAFT_VOTER:
		return CONSENSUS_VOTER;
	case RAFT_STANDBY:
		return CONSENSUS_STANDBY;
	default:
		return CONSENSUS_SPARE;
	}
}

unsigned consensus_members(struct consensus *c, struct consensus_member *out,
			   unsigned max)
{
	const struct raft_configuration *conf;

	if (c->raft_closed)
		return 0;
	conf = &c->raft.configuration;
	for (unsigned i = 0; i < conf->n && i < max; i++) {
		const struct raft_server *s = &conf->servers[i];

		out[i].id = s->id;
		snprintf(out[i].address, sizeof out[i].address, "%s",
			 s->address != NULL ? s->address : "");
		out[i].role = map_member_role(s->role);
	}
	return conf->n;
}
