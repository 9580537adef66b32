/* forward.c - the one way to the leader: commands proposed from any node,
 * and client requests handed to the leader unchanged.
 *
 * DESIGN
 *
 * Who leads comes from consensus (its id) and the state machine (the API
 * address each node announced in its node_up; [peers] for nodes that have
 * not registered yet). Both kinds of traffic then take the same road, a
 * request to the leader's API through peer.c with `X-Flowd-Forwarded: 1`:
 *
 * - A node's own command (forward_command_send): on the leader it is
 *   proposed through raft; elsewhere it is the body of POST
 *   /internal/v1/commands, signed as this node with the cluster secret
 *   (nodecred.h; docs/security.md). 200 is committed. No answer and 5xx
 *   mean "not leader": the caller may send the same command again. A 4xx
 *   is the leader refusing this very request (it would refuse it again):
 *   logged as an error with the leader's words, and reported as
 *   FORWARD_REFUSED with the answer, so the caller sends something else
 *   (outcomes.c).
 * - A client's request (forward_request_send): method, target, body and
 *   Content-Type as they arrived, signed as this node with the client
 *   named in X-Flowd-On-Behalf (the client's token stays here); the answer (status,
 *   body, Retry-After) is relayed as it is. No answer is 503. A request
 *   that was forwarded already is not forwarded again (503 while an
 *   election settles), so two nodes that each believe the other leads
 *   cannot bounce it.
 *
 * Failure modes: no leader known, or the node closing: the command is not
 * taken (-1) and the request answered 503; the caller's retry timer tries
 * again later.
 *
 * Thread: the loop thread.
 */
#include "daemon/forward.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

struct forward {
	const struct flowd_config *cfg;
	struct consensus *raft;
	struct peer *peer;
	const struct fsm *fsm;
	enum consensus_role role;
	bool stopping;
};

struct forward *forward_new(const struct forward_config *c)
{
	struct forward *f = calloc(1, sizeof *f);

	if (f == NULL)
		return NULL;
	f->cfg = c->cfg;
	f->raft = c->raft;
	f->peer = c->peer;
	f->fsm = c->fsm;
	return f;
}

void forward_free(struct forward *f)
{
	free(f);
}

void forward_role_set(struct forward *f, enum consensus_role role)
{
	f->role = role;
}

void forward_stop(struct forward *f)
{
	f->stopping = true;
}

void forward_detach(struct forward *f)
{
	f->raft = NULL;
	f->peer = NULL;
}

const char *forward_leader_address(struct forward *f)
{
	uint64_t leader = f->raft != NULL ? consensus_leader(f->raft) : 0;
	const struct flowd_config *cfg = f->cfg;

	if (leader == 0 || leader == cfg->node_id)
		return NULL;
	/* A node's own listener for node traffic ([peers], third address)
	 * comes first: client connections cannot crowd it out. */
	if (config_internal_address(cfg, leader) != NULL)
		return config_internal_address(cfg, leader);
	/* Nodes announce their API address when they register (node_up), so
	 * members added after the start are found too. */
	for (unsigned i = 0; i < f->fsm->n_nodes; i++)
		if (f->fsm->nodes[i].id == leader &&
		    f->fsm->nodes[i].api_address[0] != '\0')
			return f->fsm->nodes[i].api_address;
	for (unsigned i = 0; i < cfg->n_peers; i++)
		if (cfg->peers[i].id == leader)
			return cfg->peers[i].api_address;
	return NULL;
}

/* Send `pr` to the leader's API; pr->address is filled in. Returns 0 (cb
 * fires once) or -1: no leader known, no peer, or peer_send refused. */
static int send_to_leader(struct forward *f, struct peer_request *pr,
			  peer_done_cb cb, void *arg)
{
	pr->address = forward_leader_address(f);
	pr->forwarded = 1;
	if (pr->address == NULL || f->peer == NULL)
		return -1;
	return peer_send(f->peer, pr, cb, arg);
}

/* ------------------------------------------------------------------------
 * A node's own commands
 */

struct proposal {
	forward_done_cb cb;
	void *arg;
	size_t len;               /* of the command, for the log */
};

static void proposal_raft_cb(void *arg, int status, uint64_t index,
			     void *result)
{
	struct proposal *p = arg;
	struct fsm_result *res = result;

	/* Committed, but apply refused a field (core/fsm_check.c): the same
	 * answer as over HTTP, so the caller sends something else. */
	if (status == CONSENSUS_OK && res != NULL &&
	    res->err.errc == FLOWD_E_INVALID &&
	    strcmp(res->err.code, "invalid_command") == 0) {
		char why[400];
		struct peer_result refusal = {.status = 400, .body = "",
					      .error = why};

		snprintf(why, sizeof why, "invalid_command: %.200s (field %.60s)",
			 res->err.message, res->err.field);
		log_error("forward: apply refused a command bytes=%zu error=\"%s\"",
			  p->len, why);
		p->cb(p->arg, FORWARD_REFUSED, &refusal);
		free(p);
		return;
	}
	p->cb(p->arg, status, NULL);
	free(p);
}

static void proposal_peer_cb(void *arg, const struct peer_result *res)
{
	struct proposal *p = arg;

	if (res->status == 200) {
		p->cb(p->arg, CONSENSUS_OK, NULL);
	} else if (res->status >= 400 && res->status < 500) {
		log_error("forward: the leader refused a command status=%d "
			  "bytes=%zu error=\"%s\"",
			  res->status, p->len, res->error);
		p->cb(p->arg, FORWARD_REFUSED, res);
	} else {
		FLOWD_LOG(res->status == 0 || res->status == 503 ||
				  res->status == 504
			  ? FLOWD_LOG_DEBUG
			  : FLOWD_LOG_WARN,
			  "forward: forwarded command not taken status=%d "
			  "error=\"%s\"",
			  res->status, res->error);
		p->cb(p->arg, CONSENSUS_NOT_LEADER, NULL);
	}
	free(p);
}

int forward_command_send(struct forward *f, char *buf, size_t len,
			 forward_done_cb cb, void *arg)
{
	struct proposal *p = malloc(sizeof *p);
	int rv;

	if (p == NULL || f->stopping) {
		free(p);
		free(buf);
		return -1;
	}
	p->cb = cb;
	p->arg = arg;
	p->len = len;
	if (f->role == CONSENSUS_LEADER) {
		rv = consensus_propose(f->raft, buf, len,
				       f->cfg->apply_timeout_ms,
				       proposal_raft_cb, p);
		if (rv != CONSENSUS_OK)
			free(p);
		return rv == CONSENSUS_OK ? 0 : -1;
	}
	struct peer_request pr = {
		.method = "POST",
		.target = "/internal/v1/commands",
		.content_type = "application/json",
		.body = buf,
		.body_len = len,
	};
	rv = send_to_leader(f, &pr, proposal_peer_cb, p);
	free(buf);
	if (rv != 0)
		free(p);
	return rv == 0 ? 0 : -1;
}

/* ------------------------------------------------------------------------
 * A client's request
 */

static void reply_unavailable(struct api_request *req, const char *msg)
{
	struct flowd_error e;

	flowd_error_set(&e, FLOWD_E_UNAVAILABLE, "unavailable", NULL, "%s",
			msg);
	api_request_reply_error(req, &e);
	api_request_finish(req);
}

static void request_done_cb(void *arg, const struct peer_result *res)
{
	struct api_request *req = arg;

	if (res->status == 0) {
		reply_unavailable(req, "the leader could not be reached; retry");
		return;
	}
	req->retry_after = res->retry_after;
	api_request_reply_text(req, res->status, res->body, res->body_len);
	api_request_finish(req);
}

int forward_request_any(struct forward *f, struct api_request *req,
			const char *leader_api)
{
	char behalf[API_ON_BEHALF_MAX];
	struct peer_request pr = {
		.address = leader_api,
		.method = req->method,
		.target = req->target,
		.on_behalf = behalf,
		.content_type = req->content_type,
		.body = req->raw_body,
		.body_len = req->raw_body_len,
		.forwarded = 1,
	};

	if (req->forwarded || f->peer == NULL)
		return -1;
	nodecred_on_behalf(req, behalf);
	/* request_done_cb only answers the request: any thread may run it */
	return peer_send_any(f->peer, &pr, request_done_cb, req);
}

void forward_request_send(struct forward *f, struct api_request *req)
{
	char behalf[API_ON_BEHALF_MAX];
	struct peer_request pr = {
		.method = req->method,
		.target = req->target,
		.on_behalf = behalf,
		.content_type = req->content_type,
		.body = req->raw_body,
		.body_len = req->raw_body_len,
	};

	if (req->forwarded || forward_leader_address(f) == NULL ||
	    f->peer == NULL) {
		reply_unavailable(req, "no leader is known right now; retry");
		return;
	}
	nodecred_on_behalf(req, behalf);
	if (send_to_leader(f, &pr, request_done_cb, req) != 0)
		reply_unavailable(req, "the node is shutting down");
}
