/* fsm_nodes.c - nodes in the state machine: registration by boot id,
 * liveness, membership, and the attempts a node loses.
 *
 * DESIGN
 *
 * A node registers with node_up and a boot id that is new at every start of
 * its process; its capacity is how many attempts it runs at once. Nodes are
 * kept sorted by id, so that placement (fsm_runs.c) breaks ties the same
 * way on every node.
 *
 * Failure modes. A node_up with a new boot id marks every attempt that node
 * still had RUNNING under an older boot as LOST and retries it under the
 * step's policy, so a crash mid-run never leaves a run hanging. node_down
 * (the leader has not heard from that boot for too long) does the same for
 * its current boot, and also asks the node to stop those attempts should it
 * still be alive; node_alive brings it back. A removed node takes no work
 * (its node_up is refused, its node_alive ignored) until node_admit.
 *
 * Thread: the loop thread only.
 */
#include "fsm_nodes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsm_runs.h"

/* Mark the RUNNING attempts of node `id` lost (those of every boot but
 * `keep_boot`), and retry them under their steps' policies. With `stop`, the
 * node is also asked to stop them, should it still be running them (it was
 * marked down but is alive). */
static void lose_attempts(struct apply_ctx *c, uint64_t id, uint64_t keep_boot,
			  bool stop)
{
	struct fsm *f = c->f;

	for (uint64_t seq = f->run_lo; seq <= f->n_runs; seq++) {
		struct fsm_run *r = fsm_run_at(f, seq);
		if (r == NULL || r->active_attempts == 0)
			continue;
		for (size_t k = 0; k < r->spec->n_steps; k++) {
			struct fsm_step *s = &r->steps[k];
			struct fsm_attempt *a;
			if (s->n_attempts == 0)
				continue;
			a = &s->attempts[s->n_attempts - 1];
			if (a->status != FSM_ATTEMPT_RUNNING || a->node != id ||
			    (keep_boot != 0 && a->boot == keep_boot))
				continue;
			if (stop && f->hooks.attempt_stop != NULL)
				f->hooks.attempt_stop(f->hooks.arg, r, s, a);
			fsm__attempt_lost(c, r, s, a);
		}
	}
}

/* node_alive (`alive`): the node is up, again if it had been marked down.
 * node_down: the leader has not heard from that boot of the node for too
 * long; what it was running is lost and retried, and it is asked to stop it
 * should it still be alive. */
void fsm__apply_node_liveness(struct apply_ctx *c, json_t *cmd, bool alive)
{
	struct fsm *f = c->f;
	uint64_t id = (uint64_t)json_integer_value(json_object_get(cmd, "node"));
	uint64_t boot = (uint64_t)json_integer_value(json_object_get(cmd, "boot"));
	struct fsm_node *n = fsm__node_find(f, id);

	if (alive && f->hooks.node_heard != NULL)
		f->hooks.node_heard(f->hooks.arg, id);
	if (n == NULL || n->boot != boot || n->live == alive ||
	    (alive && n->removed))
		return;
	n->live = alive;
	if (!alive)
		lose_attempts(c, id, 0, true);
	fsm__place_ready(c);
}

/* node_remove: the node left the Raft configuration; what it ran is lost
 * and retried, and it takes no work (its node_up and node_alive are
 * ignored) until node_admit after it is added again. */
void fsm__apply_node_membership(struct apply_ctx *c, json_t *cmd,
				bool admit)
{
	struct fsm *f = c->f;
	uint64_t id = (uint64_t)json_integer_value(json_object_get(cmd, "node"));
	struct fsm_node *n = fsm__node_find(f, id);

	if (n == NULL)
		return;
	n->removed = !admit;
	if (!admit && n->live) {
		n->live = false;
		lose_attempts(c, id, 0, true);
		fsm__place_ready(c);
	}
}

static int node_cmp(const void *a, const void *b)
{
	const struct fsm_node *x = a, *y = b;

	return x->id < y->id ? -1 : x->id > y->id;
}

void fsm__apply_node_up(struct apply_ctx *c, json_t *cmd)
{
	struct fsm *f = c->f;
	uint64_t id = (uint64_t)json_integer_value(json_object_get(cmd, "node"));
	uint64_t boot = (uint64_t)json_integer_value(json_object_get(cmd, "boot"));
	unsigned cap = (unsigned)json_integer_value(json_object_get(cmd, "capacity"));
	const char *api = json_string_value(json_object_get(cmd, "api"));
	struct fsm_node *n = fsm__node_find(f, id);

	if (n != NULL && n->removed) {
		/* Removed from the cluster: it takes no work until re-added. */
		fsm__result_error(f, FLOWD_E_CONFLICT, "node_removed", "node",
				  "the node was removed from the cluster");
		return;
	}
	if (n == NULL) {
		struct fsm_node *arr =
			realloc(f->nodes, (f->n_nodes + 1) * sizeof *arr);
		if (arr == NULL)
			abort();
		f->nodes = arr;
		n = &f->nodes[f->n_nodes++];
		memset(n, 0, sizeof *n);
		n->id = id;
		n->boot = boot;
		qsort(f->nodes, f->n_nodes, sizeof *f->nodes, node_cmp);
		n = fsm__node_find(f, id);
	}
	/* Attempts of an earlier boot of this node died with it. */
	lose_attempts(c, id, boot, false);
	n = fsm__node_find(f, id);
	n->boot = boot;
	n->capacity = cap;
	n->live = true;
	snprintf(n->api_address, sizeof n->api_address, "%s", api ? api : "");
	if (f->hooks.node_heard != NULL)
		f->hooks.node_heard(f->hooks.arg, id);
	fsm__place_ready(c);
}
