/* test_liveness.c - liveness.c on virtual time: registration once per boot,
 * heartbeats, and the leader marking silent nodes down once per timeout,
 * with a full timeout for every node after it wins. The state machine is a
 * struct fsm holding only nodes, the proposer a list of what was proposed,
 * both clocks are variables; the heartbeat timer is never waited for:
 * liveness_beat() is what it runs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <uv.h>

#include "daemon/liveness.h"

#define MAX_CALLS 64
#define BOOT 0x1234

struct call {
	char op[32];
	uint64_t node;
	forward_done_cb cb;
	void *cb_arg;
};

struct fixture {
	uv_loop_t loop;
	struct flowd_config cfg;
	struct fsm fsm;             /* only its nodes are read */
	struct fsm_node nodes[3];
	int64_t wall, mono;
	struct call calls[MAX_CALLS];
	unsigned n;
	struct liveness *l;
};

static int fake_propose(void *arg, char *buf, size_t len, forward_done_cb cb,
			void *cb_arg)
{
	struct fixture *f = arg;
	json_t *cmd = json_loadb(buf, len, 0, NULL);
	struct call *c = &f->calls[f->n++];

	assert_non_null(cmd);
	assert_true(f->n <= MAX_CALLS);
	snprintf(c->op, sizeof c->op, "%s",
		 json_string_value(json_object_get(cmd, "op")));
	c->node = (uint64_t)json_integer_value(json_object_get(cmd, "node"));
	assert_int_equal(json_integer_value(json_object_get(cmd, "ts")),
			 f->wall);
	c->cb = cb;
	c->cb_arg = cb_arg;
	json_decref(cmd);
	free(buf);
	return 0;
}

static int64_t fake_now(void *arg)
{
	return *(int64_t *)arg;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);

	assert_non_null(f);
	assert_int_equal(uv_loop_init(&f->loop), 0);
	f->cfg.node_id = 1;
	f->cfg.n_peers = 3;
	f->cfg.node_heartbeat_ms = 1000;
	f->cfg.node_timeout_ms = 3000;
	f->cfg.limits.max_parallel_tasks = 4;
	snprintf(f->cfg.api_address, sizeof f->cfg.api_address,
		 "127.0.0.1:8480");
	for (unsigned i = 0; i < 3; i++) {
		f->nodes[i].id = i + 1;
		f->nodes[i].boot = i == 0 ? BOOT : 0x99;
		f->nodes[i].live = true;
	}
	f->fsm.nodes = f->nodes;
	f->fsm.n_nodes = 3;
	f->wall = 1800000000000LL;
	f->mono = 50000;
	f->l = liveness_new(&(struct liveness_config){
		.loop = &f->loop,
		.cfg = &f->cfg,
		.boot = BOOT,
		.fsm = &f->fsm,
		.clock = {.now_ms = fake_now, .arg = &f->wall},
		.mono = {.now_ms = fake_now, .arg = &f->mono},
		.proposer = {.propose = fake_propose, .arg = f},
	});
	assert_non_null(f->l);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	liveness_stop(f->l);
	liveness_close(f->l);
	assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	free(f);
	return 0;
}

/* Register, and have it commit. */
static void registered(struct fixture *f)
{
	unsigned n = f->n;

	liveness_register(f->l);
	assert_int_equal(f->n, n + 1);
	assert_string_equal(f->calls[n].op, "node_up");
	f->calls[n].cb(f->calls[n].cb_arg, CONSENSUS_OK, NULL);
	assert_true(liveness_registered(f->l));
}

/* One heartbeat round at loop time `mono`: returns the nodes proposed down
 * (a bit per node id), after checking the round said "alive". */
static unsigned beat_at(struct fixture *f, int64_t mono)
{
	unsigned n = f->n, down = 0;

	f->mono = mono;
	f->wall += 1000;
	liveness_beat(f->l);
	assert_true(f->n > n);
	assert_string_equal(f->calls[n].op, "node_alive");
	assert_int_equal(f->calls[n].node, 1);
	for (unsigned i = n + 1; i < f->n; i++) {
		assert_string_equal(f->calls[i].op, "node_down");
		down |= 1u << f->calls[i].node;
	}
	return down;
}

static void a_node_registers_once_per_boot(void **state)
{
	struct fixture *f = *state;

	liveness_beat(f->l); /* not registered: no heartbeat */
	assert_int_equal(f->n, 0);
	liveness_register(f->l);
	liveness_register(f->l); /* one in flight at a time */
	assert_int_equal(f->n, 1);
	assert_string_equal(f->calls[0].op, "node_up");
	/* Not committed: tried again. */
	f->calls[0].cb(f->calls[0].cb_arg, CONSENSUS_NOT_LEADER, NULL);
	assert_false(liveness_registered(f->l));
	registered(f);
	liveness_register(f->l); /* done for this boot */
	assert_int_equal(f->n, 2);
}

static void a_silent_node_is_proposed_down_once_per_timeout(void **state)
{
	struct fixture *f = *state;

	registered(f);
	liveness_role_set(f->l, CONSENSUS_LEADER);
	liveness_hook_node_heard(f->l, 2);
	liveness_hook_node_heard(f->l, 3);
	/* Node 2 keeps talking (heard after every round); node 3 does not. */
	static const struct {
		int64_t at;
		unsigned down;
	} rounds[] = {
		{51000, 0},
		{52999, 0},
		{53000, 1u << 3}, /* silent for node_timeout_ms */
		{54000, 0},       /* not again within the next timeout... */
		{55999, 0},
		{56000, 1u << 3}, /* ...then again, while the state has it live */
	};

	for (size_t i = 0; i < sizeof rounds / sizeof rounds[0]; i++) {
		assert_int_equal(beat_at(f, rounds[i].at), rounds[i].down);
		liveness_hook_node_heard(f->l, 2);
	}
	/* Heard again: a full timeout from then. */
	liveness_hook_node_heard(f->l, 3);
	assert_int_equal(beat_at(f, 58999), 0);
	liveness_hook_node_heard(f->l, 2);
	assert_int_equal(beat_at(f, 59000), 1u << 3);
	/* Node 3 marked down in the state: not proposed again. Node 2,
	 * silent since 59000, is. */
	f->nodes[2].live = false;
	assert_int_equal(beat_at(f, 62000), 1u << 2);
}

static void a_new_leader_gives_every_node_a_full_timeout(void **state)
{
	struct fixture *f = *state;

	registered(f);
	liveness_role_set(f->l, CONSENSUS_LEADER);
	liveness_hook_node_heard(f->l, 2);
	liveness_hook_node_heard(f->l, 3);
	/* Another node leads for a while; this one hears nothing. */
	liveness_role_set(f->l, CONSENSUS_FOLLOWER);
	assert_int_equal(beat_at(f, 60000), 0); /* followers judge no one */
	/* Leading again at 80000: every node gets until 83000. */
	f->mono = 80000;
	liveness_role_set(f->l, CONSENSUS_LEADER);
	assert_int_equal(beat_at(f, 82999), 0);
	assert_int_equal(beat_at(f, 83000), (1u << 2) | (1u << 3));
	/* A leader that stays leader does not reset the table. */
	liveness_role_set(f->l, CONSENSUS_LEADER);
	assert_int_equal(beat_at(f, 86000), (1u << 2) | (1u << 3));
}

static void a_node_the_state_forgot_registers_again(void **state)
{
	struct fixture *f = *state;

	registered(f);
	/* The state has this node under another boot (marked down and
	 * restarted elsewhere, or removed and added): one look may be the
	 * state trailing, two in a row are not. */
	f->nodes[0].boot = 0x4321;
	assert_int_equal(beat_at(f, 51000), 0);
	f->n = 0;
	liveness_beat(f->l);
	assert_int_equal(f->n, 0);
	assert_false(liveness_registered(f->l));
	registered(f);
}

static void nothing_is_proposed_once_stopped(void **state)
{
	struct fixture *f = *state;

	registered(f);
	liveness_role_set(f->l, CONSENSUS_LEADER);
	liveness_stop(f->l);
	f->n = 0;
	f->mono = 100000;
	liveness_beat(f->l);
	assert_int_equal(f->n, 0);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(a_node_registers_once_per_boot),
		T(a_silent_node_is_proposed_down_once_per_timeout),
		T(a_new_leader_gives_every_node_a_full_timeout),
		T(a_node_the_state_forgot_registers_again),
		T(nothing_is_proposed_once_stopped),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
