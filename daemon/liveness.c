/* liveness.c - registration, heartbeats, and the leader marking silent
 * nodes down.
 *
 * DESIGN
 *
 * Registration: every node proposes node_up{node, boot, capacity, api
 * address} once per boot, through the leader (forward.c), retried every
 * LIVENESS_REGISTER_MS until it commits, and at once when this node becomes
 * the leader. Applying it marks the attempts of the node's previous life
 * lost (docs/design.md, "A node's restart loses its running attempts").
 *
 * Heartbeats (clusters of more than one node): every
 * cluster.node_heartbeat_ms a registered node proposes node_alive. Should
 * the state say this node is not registered as it is (removed and added
 * again, or marked down for another boot) at two looks in a row (the state
 * may trail a moment), it registers anew.
 *
 * The leader keeps, per node, when it last heard of it (a node_up or
 * node_alive applied: the fsm hook) on the loop's clock, and proposes
 * node_down for a live node silent for cluster.node_timeout_ms, at most
 * once per timeout. The table is leader-local: a new leader first gives
 * every node a full timeout, as it may not have heard anything yet.
 *
 * Failure modes: a proposal that does not commit is not retried as such:
 * the next round sends a new one.
 *
 * Thread: the loop thread.
 */
#include "daemon/liveness.h"

#include <inttypes.h>
#include <stdlib.h>

#include "core/log.h"

struct heard {
	uint64_t node;
	uint64_t heard_ms;
	uint64_t down_sent_ms;
};

struct liveness {
	const struct flowd_config *cfg;
	uint64_t boot;
	const struct fsm *fsm;
	struct flowd_clock clock, mono;
	struct forward_proposer proposer;
	enum consensus_role role;
	bool stopping;

	bool registered;              /* our node_up committed this boot */
	bool registering;             /* a node_up in flight */
	uv_timer_t register_timer;
	uv_timer_t alive_timer;
	unsigned unregistered_looks;  /* looks at the state that found this
	                               * node not registered as it is */
	struct heard heard[LIVENESS_MAX_NODES]; /* leader-local */
	unsigned n_heard;
	int open_handles;
};

static uint64_t mono_now(const struct liveness *l)
{
	return (uint64_t)flowd_clock_now(&l->mono);
}

struct liveness *liveness_new(const struct liveness_config *c)
{
	struct liveness *l = calloc(1, sizeof *l);

	if (l == NULL)
		return NULL;
	l->cfg = c->cfg;
	l->boot = c->boot;
	l->fsm = c->fsm;
	l->clock = c->clock;
	l->mono = c->mono;
	l->proposer = c->proposer;
	uv_timer_init(c->loop, &l->register_timer);
	l->register_timer.data = l;
	uv_timer_init(c->loop, &l->alive_timer);
	l->alive_timer.data = l;
	l->open_handles = 2;
	return l;
}

static int propose(struct liveness *l, char *buf, size_t len,
		   forward_done_cb cb)
{
	return l->proposer.propose(l->proposer.arg, buf, len, cb, l);
}

/* ------------------------------------------------------------------------
 * Registration
 */

static void registered_cb(void *arg, int status,
			  const struct peer_result *refusal)
{
	struct liveness *l = arg;

	l->registering = false;
	if (status == CONSENSUS_OK) {
		l->registered = true;
		log_info("node up node=%" PRIu64 " boot=%" PRIx64,
			 l->cfg->node_id, l->boot);
	}
}

void liveness_register(struct liveness *l)
{
	const struct flowd_config *cfg = l->cfg;
	char *buf;
	size_t len;

	/* Every node registers once per boot, through the leader. */
	if (l->stopping || l->registered || l->registering)
		return;
	if (fsm_cmd_node_up(flowd_clock_now(&l->clock), cfg->node_id, l->boot,
			    cfg->limits.max_parallel_tasks, cfg->api_address,
			    &buf, &len) != 0)
		return;
	if (propose(l, buf, len, registered_cb) == 0)
		l->registering = true;
}

bool liveness_registered(const struct liveness *l)
{
	return l->registered;
}

static void register_timer_cb(uv_timer_t *h)
{
	liveness_register(h->data);
}

/* ------------------------------------------------------------------------
 * Heartbeats and silent nodes
 */

static struct heard *heard_slot(struct liveness *l, uint64_t node)
{
	for (unsigned i = 0; i < l->n_heard; i++)
		if (l->heard[i].node == node)
			return &l->heard[i];
	if (l->n_heard == LIVENESS_MAX_NODES)
		return NULL;
	l->heard[l->n_heard].node = node;
	l->heard[l->n_heard].heard_ms = mono_now(l);
	l->heard[l->n_heard].down_sent_ms = 0;
	return &l->heard[l->n_heard++];
}

void liveness_hook_node_heard(struct liveness *l, uint64_t node)
{
	struct heard *h = heard_slot(l, node);

	if (h != NULL) {
		h->heard_ms = mono_now(l);
		h->down_sent_ms = 0;
	}
}

static void ignore_cb(void *arg, int status, const struct peer_result *refusal)
{
}

/* Is this node registered, as it is, in the state? After two looks in a
 * row that say no, registration starts again. */
static bool still_registered(struct liveness *l)
{
	const struct fsm_node *me = NULL;

	for (unsigned i = 0; i < l->fsm->n_nodes; i++)
		if (l->fsm->nodes[i].id == l->cfg->node_id)
			me = &l->fsm->nodes[i];
	if (me == NULL || me->boot != l->boot || (!me->live && !me->removed)) {
		if (++l->unregistered_looks >= 2) {
			l->unregistered_looks = 0;
			l->registered = false;
			return false;
		}
	} else {
		l->unregistered_looks = 0;
	}
	return true;
}

void liveness_beat(struct liveness *l)
{
	const struct flowd_config *cfg = l->cfg;
	uint64_t now = mono_now(l);
	char *buf;
	size_t len;

	if (l->stopping || !l->registered || !still_registered(l))
		return;
	if (fsm_cmd_node_alive(flowd_clock_now(&l->clock), cfg->node_id,
			       l->boot, &buf, &len) == 0)
		propose(l, buf, len, ignore_cb);
	if (l->role != CONSENSUS_LEADER)
		return;
	for (unsigned i = 0; i < l->fsm->n_nodes; i++) {
		const struct fsm_node *n = &l->fsm->nodes[i];
		struct heard *h;

		if (!n->live || n->id == cfg->node_id)
			continue;
		h = heard_slot(l, n->id);
		if (h == NULL || now - h->heard_ms < cfg->node_timeout_ms)
			continue;
		if (h->down_sent_ms != 0 &&
		    now - h->down_sent_ms < cfg->node_timeout_ms)
			continue; /* one proposal per timeout */
		log_warn("node %" PRIu64 " silent for %" PRIu64 " ms: marking it "
			 "down", n->id, now - h->heard_ms);
		h->down_sent_ms = now;
		if (fsm_cmd_node_down(flowd_clock_now(&l->clock), n->id, n->boot,
				      &buf, &len) == 0)
			propose(l, buf, len, ignore_cb);
	}
}

static void alive_timer_cb(uv_timer_t *h)
{
	liveness_beat(h->data);
}

/* ------------------------------------------------------------------------
 * Life cycle
 */

void liveness_start(struct liveness *l)
{
	const struct flowd_config *cfg = l->cfg;

	uv_timer_start(&l->register_timer, register_timer_cb,
		       LIVENESS_REGISTER_MS, LIVENESS_REGISTER_MS);
	if (cfg->n_peers > 1)
		uv_timer_start(&l->alive_timer, alive_timer_cb,
			       cfg->node_heartbeat_ms, cfg->node_heartbeat_ms);
}

void liveness_role_set(struct liveness *l, enum consensus_role role)
{
	/* A new leader gives every node a full timeout before judging it. */
	if (role == CONSENSUS_LEADER && l->role != CONSENSUS_LEADER)
		for (unsigned i = 0; i < l->n_heard; i++)
			l->heard[i].heard_ms = mono_now(l);
	l->role = role;
}

void liveness_stop(struct liveness *l)
{
	l->stopping = true;
	uv_timer_stop(&l->register_timer);
	uv_timer_stop(&l->alive_timer);
}

static void closed_cb(uv_handle_t *h)
{
	struct liveness *l = h->data;

	if (--l->open_handles == 0)
		free(l);
}

void liveness_close(struct liveness *l)
{
	uv_close((uv_handle_t *)&l->register_timer, closed_cb);
	uv_close((uv_handle_t *)&l->alive_timer, closed_cb);
}
