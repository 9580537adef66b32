/* test_consensus.c - consensus/ on real raft_uv nodes: loopback TCP, data
 * directories under build/tmp-consensus-test (a real filesystem, not /tmp),
 * every loop driven with a deadline and closed with uv_loop_close() == 0. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <errno.h>
#include <ftw.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "consensus/consensus.h"
#include "core/log.h"

#define MAX_NODES 4

/* ---------------------------------------------------------------- fake fsm */

/* Counts commands. The snapshot is {count, last_index}. */
struct fake_fsm {
	uint64_t count;
	uint64_t last_index;
	uint64_t result;       /* what *result points at after an apply */
	int out_of_order;
	int snapshots;
	int restores;
	int collected;         /* asynchronous snapshots: collected off the loop */
	int done;              /* ... and their jobs freed on the loop */
};

/* Nodes started while set take their snapshots asynchronously (FSM v3). */
static int async_snapshots;

static int fake_apply(void *arg, uint64_t index, const void *buf, size_t len,
		      void **result)
{
	struct fake_fsm *f = arg;

	(void)buf;
	if (len == 0 || index <= f->last_index)
		f->out_of_order++;
	f->last_index = index;
	f->count++;
	f->result = index;
	*result = &f->result;
	return 0;
}

static int fake_snapshot(void *arg, void **buf, size_t *len)
{
	struct fake_fsm *f = arg;
	uint64_t *v = malloc(2 * sizeof *v);

	if (v == NULL)
		return CONSENSUS_NOMEM;
	v[0] = f->count;
	v[1] = f->last_index;
	*buf = v;
	*len = 2 * sizeof *v;
	f->snapshots++;
	return 0;
}

/* The asynchronous variant: the loop only hands over a job holding the
 * two numbers; a worker thread serializes them. */
static int fake_snapshot_pending(void *arg, void **buf, size_t *len)
{
	int rv = fake_snapshot(arg, buf, len);

	return rv == 0 ? CONSENSUS_PENDING : rv;
}

static int fake_collect(void *arg, void *job, void **buf, size_t *len)
{
	struct fake_fsm *f = arg;
	uint64_t *v = malloc(2 * sizeof *v);

	if (v == NULL)
		return -1;
	memcpy(v, job, 2 * sizeof *v);
	*buf = v;
	*len = 2 * sizeof *v;
	__atomic_fetch_add(&f->collected, 1, __ATOMIC_RELAXED);
	return 0;
}

static void fake_snapshot_done(void *arg, void *job)
{
	struct fake_fsm *f = arg;

	free(job);
	f->done++;
}

static int fake_restore(void *arg, const void *buf, size_t len)
{
	struct fake_fsm *f = arg;
	uint64_t v[2];

	if (len != sizeof v)
		return -1;
	memcpy(v, buf, sizeof v);
	f->count = v[0];
	f->last_index = v[1];
	f->restores++;
	return 0;
}

/* ---------------------------------------------------------------- harness */

struct node {
	struct consensus *c;
	struct fake_fsm fsm;
	uint64_t id;
	char dir[512];
	char address[32];
	enum consensus_role role;
	uint64_t leader;
	int closed;
	int closing;
};

struct cluster {
	uv_loop_t loop;
	char root[400];
	int n;
	int n_peers;           /* nodes bootstrapped as voters (the first ones) */
	int port;
	struct consensus_peer peers[MAX_NODES];
	struct node nodes[MAX_NODES];
};

/* One proposal's completion. */
struct done {
	int fired;
	int status;
	uint64_t index;
	uint64_t result;
	int has_result;
};

static void done_cb(void *arg, int status, uint64_t index, void *result)
{
	struct done *d = arg;

	d->fired++;
	d->status = status;
	d->index = index;
	if (result != NULL) {
		d->result = *(uint64_t *)result;
		d->has_result = 1;
	}
}

static void role_cb(void *arg, enum consensus_role role, uint64_t leader_id)
{
	struct node *n = arg;

	n->role = role;
	n->leader = leader_id;
}

static void closed_cb(void *arg)
{
	struct node *n = arg;

	n->closed++;
	n->c = NULL;
}

static int port_free(int port)
{
	struct sockaddr_in sa;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1, ok;

	if (fd < 0)
		return 0;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
	close(fd);
	return ok;
}

/* n consecutive free loopback ports, from a pid-derived start so that
 * concurrent test runs do not collide. */
static int find_ports(int n)
{
	static int next;

	if (next == 0)
		next = 21000 + (int)(getpid() % 2000) * 10;
	for (int tries = 0; tries < 200; tries++, next += n) {
		int ok = 1;

		if (next + n > 60000)
			next = 21000;
		for (int i = 0; i < n && ok; i++)
			ok = port_free(next + i);
		if (ok) {
			int port = next;

			next += n;
			return port;
		}
	}
	return -1;
}

static void test_root(char *buf, size_t len)
{
	const char *env = getenv("CONSENSUS_TEST_DIR");
	struct stat st;

	if (env != NULL)
		snprintf(buf, len, "%s", env);
	else if (stat("build", &st) == 0 && S_ISDIR(st.st_mode))
		snprintf(buf, len, "build/tmp-consensus-test");
	else
		snprintf(buf, len, "/work/main/build/tmp-consensus-test");
}

static int rm_entry(const char *path, const struct stat *st, int flag,
		    struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void rm_rf(const char *path)
{
	nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void cluster_setup(struct cluster *cl, const char *name, int n)
{
	char base[256];

	memset(cl, 0, sizeof *cl);
	assert_int_equal(uv_loop_init(&cl->loop), 0);
	test_root(base, sizeof base);
	mkdir(base, 0755);
	snprintf(cl->root, sizeof cl->root, "%s/%d-%s", base, (int)getpid(),
		 name);
	rm_rf(cl->root);
	assert_int_equal(mkdir(cl->root, 0755), 0);
	cl->n = n;
	cl->n_peers = n;
	cl->port = find_ports(n);
	assert_true(cl->port > 0);
	for (int i = 0; i < n; i++) {
		struct node *nd = &cl->nodes[i];

		nd->id = (uint64_t)i + 1;
		snprintf(nd->address, sizeof nd->address, "127.0.0.1:%d",
			 cl->port + i);
		snprintf(nd->dir, sizeof nd->dir, "%s/node%d", cl->root, i + 1);
		assert_int_equal(mkdir(nd->dir, 0755), 0);
		cl->peers[i].id = nd->id;
		cl->peers[i].address = nd->address;
	}
}

static void cluster_teardown(struct cluster *cl)
{
	char base[256];

	/* Nothing of ours may be left on the loop. */
	uv_run(&cl->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&cl->loop), 0);
	rm_rf(cl->root);
	test_root(base, sizeof base);
	rmdir(base); /* only if empty: other runs may share it */
}

static struct consensus_config node_config(struct cluster *cl, int i)
{
	struct consensus_config cfg = {
		.id = cl->nodes[i].id,
		.address = cl->nodes[i].address,
		.data_dir = cl->nodes[i].dir,
		.peers = cl->peers,
		.n_peers = (unsigned)cl->n_peers,
		.heartbeat_ms = 50,
		.election_ms = 500,
		.snapshot_threshold = 16,
		.snapshot_trailing = 16,
		.pre_vote = 1,
	};
	return cfg;
}

static void node_start(struct cluster *cl, int i)
{
	struct node *nd = &cl->nodes[i];
	struct consensus_config cfg = node_config(cl, i);
	struct consensus_fsm fsm = {
		.arg = &nd->fsm,
		.apply = fake_apply,
		.snapshot = async_snapshots ? fake_snapshot_pending
					    : fake_snapshot,
		.restore = fake_restore,
		.snapshot_collect = async_snapshots ? fake_collect : NULL,
		.snapshot_done = async_snapshots ? fake_snapshot_done : NULL,
	};
	char err[256] = "";

	memset(&nd->fsm, 0, sizeof nd->fsm);
	nd->role = CONSENSUS_UNAVAILABLE;
	nd->leader = 0;
	nd->closed = 0;
	nd->closing = 0;
	nd->c = consensus_new(&cl->loop, &cfg, &fsm, role_cb, nd, err,
			      sizeof err);
	if (nd->c == NULL)
		fail_msg("consensus_new: %s", err);
}

static void expire_cb(uv_timer_t *timer)
{
	*(int *)timer->data = 1;
}

static void flag_close_cb(uv_handle_t *handle)
{
	*(int *)handle->data = 1;
}

/* Run the loop until pred(arg) holds or timeout_ms of loop time passed. */
static int run_until(uv_loop_t *loop, int (*pred)(void *), void *arg,
		     unsigned timeout_ms)
{
	uv_timer_t timer;
	int expired = 0;
	int closed = 0;
	int ok;

	uv_timer_init(loop, &timer);
	timer.data = &expired;
	uv_timer_start(&timer, expire_cb, timeout_ms, 0);
	while (!(ok = pred(arg)) && !expired)
		uv_run(loop, UV_RUN_ONCE);
	timer.data = &closed;
	uv_close((uv_handle_t *)&timer, flag_close_cb);
	while (!closed)
		uv_run(loop, UV_RUN_ONCE);
	return ok;
}

/* Run the loop for ms of loop time. */
static int never(void *arg)
{
	(void)arg;
	return 0;
}

static void run_for(uv_loop_t *loop, unsigned ms)
{
	run_until(loop, never, NULL, ms);
}

/* ---------------------------------------------------------------- preds */

static int one_leader(void *arg)
{
	struct cluster *cl = arg;
	uint64_t leader = 0;
	int leaders = 0;

	for (int i = 0; i < cl->n; i++)
		if (cl->nodes[i].c != NULL &&
		    cl->nodes[i].role == CONSENSUS_LEADER) {
			leaders++;
			leader = cl->nodes[i].id;
		}
	if (leaders != 1)
		return 0;
	for (int i = 0; i < cl->n; i++)
		if (cl->nodes[i].c != NULL && cl->nodes[i].leader != leader)
			return 0;
	return 1;
}

static int leader_index(struct cluster *cl)
{
	for (int i = 0; i < cl->n; i++)
		if (cl->nodes[i].c != NULL &&
		    cl->nodes[i].role == CONSENSUS_LEADER)
			return i;
	return -1;
}

struct dones {
	struct done *d;
	int n;
};

static int all_fired(void *arg)
{
	struct dones *ds = arg;

	for (int i = 0; i < ds->n; i++)
		if (ds->d[i].fired == 0)
			return 0;
	return 1;
}

static int all_closed(void *arg)
{
	struct cluster *cl = arg;

	for (int i = 0; i < cl->n; i++)
		if (cl->nodes[i].c != NULL)
			return 0;
	return 1;
}

static void node_close(struct cluster *cl, int i)
{
	struct node *nd = &cl->nodes[i];

	if (nd->c == NULL || nd->closing)
		return;
	nd->closing = 1;
	consensus_close(nd->c, closed_cb, nd);
}

static void *command(int i)
{
	char *buf = malloc(32);

	assert_non_null(buf);
	snprintf(buf, 32, "cmd-%d", i);
	return buf;
}

static void close_all(struct cluster *cl)
{
	for (int i = 0; i < cl->n; i++)
		node_close(cl, i);
	assert_true(run_until(&cl->loop, all_closed, cl, 20000));
}

static int is_leader0(void *arg)
{
	struct cluster *cl = arg;

	return cl->nodes[0].role == CONSENSUS_LEADER;
}

/* ---------------------------------------------------------------- tests */

/* One node: leader, 100 commands, snapshots, close with 50 in flight, restart
 * on the same directory and reach the same count. */
static int snapshot_done0(void *arg)
{
	return ((struct cluster *)arg)->nodes[0].fsm.done >= 1;
}

static void single_node_proposes_snapshots_closes_and_restarts(void **state)
{
	struct cluster cl;
	struct done d[100], late[50], barrier = {0};
	struct dones ds = {d, 100}, bar_ds = {&barrier, 1};
	uint64_t prev = 0, total;
	int n_ok = 0;

	(void)state;
	cluster_setup(&cl, "single", 1);
	node_start(&cl, 0);
	assert_true(run_until(&cl.loop, is_leader0, &cl, 5000));
	assert_int_equal(consensus_role(cl.nodes[0].c), CONSENSUS_LEADER);
	assert_int_equal(consensus_leader(cl.nodes[0].c), 1);
	assert_true(consensus_term(cl.nodes[0].c) >= 1);

	memset(d, 0, sizeof d);
	for (int i = 0; i < 100; i++)
		assert_int_equal(consensus_propose(cl.nodes[0].c, command(i), 32,
						   0, done_cb, &d[i]),
				 CONSENSUS_OK);
	assert_int_equal(consensus_inflight(cl.nodes[0].c), 100);
	assert_true(run_until(&cl.loop, all_fired, &ds, 10000));
	for (int i = 0; i < 100; i++) {
		assert_int_equal(d[i].fired, 1);
		assert_int_equal(d[i].status, CONSENSUS_OK);
		assert_true(d[i].index > prev);
		/* The pointer fsm->apply stored, for this very entry. */
		assert_true(d[i].has_result);
		assert_int_equal(d[i].result, d[i].index);
		prev = d[i].index;
	}
	assert_int_equal(cl.nodes[0].fsm.count, 100);
	assert_int_equal(cl.nodes[0].fsm.out_of_order, 0);
	assert_true(cl.nodes[0].fsm.snapshots >= 1);
	if (async_snapshots) {
		/* collected off the loop, and the job freed back on it */
		assert_true(run_until(&cl.loop, snapshot_done0, &cl, 5000));
		assert_true(__atomic_load_n(&cl.nodes[0].fsm.collected,
					    __ATOMIC_RELAXED) >=
			    cl.nodes[0].fsm.done);
	}
	assert_int_equal(consensus_inflight(cl.nodes[0].c), 0);
	assert_true(consensus_commit_index(cl.nodes[0].c) >= prev);
	assert_true(consensus_last_index(cl.nodes[0].c) >= prev);
	assert_true(consensus_applied_index(cl.nodes[0].c) >= prev);

	/* Close with 50 proposals in flight. */
	memset(late, 0, sizeof late);
	for (int i = 0; i < 50; i++)
		assert_int_equal(consensus_propose(cl.nodes[0].c,
						   command(100 + i), 32, 5000,
						   done_cb, &late[i]),
				 CONSENSUS_OK);
	node_close(&cl, 0);
	assert_int_equal(consensus_propose(cl.nodes[0].c, command(-1), 32, 0,
					   done_cb, &barrier),
			 CONSENSUS_SHUTDOWN);
	assert_int_equal(consensus_barrier(cl.nodes[0].c, done_cb, &barrier),
			 CONSENSUS_SHUTDOWN);
	assert_true(run_until(&cl.loop, all_closed, &cl, 15000));
	assert_int_equal(cl.nodes[0].closed, 1);
	for (int i = 0; i < 50; i++) {
		assert_int_equal(late[i].fired, 1);
		assert_true(late[i].status == CONSENSUS_OK ||
			    late[i].status == CONSENSUS_SHUTDOWN);
		n_ok += late[i].status == CONSENSUS_OK;
	}
	assert_int_equal(barrier.fired, 0);
	total = cl.nodes[0].fsm.count;
	assert_int_equal(total, 100 + (uint64_t)n_ok);
	uv_run(&cl.loop, UV_RUN_DEFAULT);
	for (int i = 0; i < 50; i++)
		assert_int_equal(late[i].fired, 1);
	assert_int_equal(uv_loop_close(&cl.loop), 0);

	/* Restart on the same directory: snapshot restored, tail re-applied. */
	assert_int_equal(uv_loop_init(&cl.loop), 0);
	node_start(&cl, 0);
	assert_true(run_until(&cl.loop, is_leader0, &cl, 5000));
	assert_int_equal(consensus_barrier(cl.nodes[0].c, done_cb, &barrier),
			 CONSENSUS_OK);
	assert_true(run_until(&cl.loop, all_fired, &bar_ds, 5000));
	assert_int_equal(barrier.status, CONSENSUS_OK);
	assert_true(cl.nodes[0].fsm.restores >= 1);
	assert_int_equal(cl.nodes[0].fsm.out_of_order, 0);
	assert_int_equal(cl.nodes[0].fsm.count, total);
	close_all(&cl);
	cluster_teardown(&cl);
}

/* The same with snapshots collected on a worker thread (FSM v3, which
 * raft 0.15's raft_uv takes once its io.version says 2): the snapshots are
 * written, restored after a restart, and every job is freed. */
static void single_node_async_snapshots_close_and_restart(void **state)
{
	async_snapshots = 1;
	single_node_proposes_snapshots_closes_and_restarts(state);
	async_snapshots = 0;
}

/* A closing node refuses proposals and barriers; close with nothing in
 * flight finishes and leaves the loop closable. */
static void closing_node_refuses_proposals(void **state)
{
	struct cluster cl;
	struct done d = {0};

	(void)state;
	cluster_setup(&cl, "refuse", 1);
	node_start(&cl, 0);
	assert_true(run_until(&cl.loop, is_leader0, &cl, 5000));
	node_close(&cl, 0);
	assert_int_equal(consensus_propose(cl.nodes[0].c, command(0), 32, 100,
					   done_cb, &d),
			 CONSENSUS_SHUTDOWN);
	assert_int_equal(consensus_barrier(cl.nodes[0].c, done_cb, &d),
			 CONSENSUS_SHUTDOWN);
	assert_non_null(strstr(consensus_errmsg(cl.nodes[0].c), "shutting"));
	assert_true(run_until(&cl.loop, all_closed, &cl, 5000));
	assert_int_equal(d.fired, 0);
	cluster_teardown(&cl);
}

/* Bad input fails consensus_new with a message and leaves nothing behind,
 * before raft_init (missing dir, non-IPv4 address) and after it (port in
 * use: raft_start fails and the node closes itself on the loop). */
static void bad_config_fails_cleanly(void **state)
{
	struct cluster cl;
	struct consensus_config cfg;
	struct consensus_fsm fsm = {.arg = &cl.nodes[0].fsm,
				    .apply = fake_apply,
				    .snapshot = fake_snapshot,
				    .restore = fake_restore};
	struct consensus_peer peer;
	struct sockaddr_in sa;
	char err[256];
	char missing[600];
	int fd, one = 1;

	(void)state;
	cluster_setup(&cl, "badcfg", 1);
	cfg = node_config(&cl, 0);

	snprintf(missing, sizeof missing, "%s/missing", cl.root);
	cfg.data_dir = missing;
	err[0] = '\0';
	assert_null(consensus_new(&cl.loop, &cfg, &fsm, NULL, NULL, err,
				  sizeof err));
	assert_true(err[0] != '\0');
	cfg.data_dir = cl.nodes[0].dir;

	peer.id = 1;
	peer.address = "localhost:9999";
	cfg.address = peer.address;
	cfg.peers = &peer;
	err[0] = '\0';
	assert_null(consensus_new(&cl.loop, &cfg, &fsm, NULL, NULL, err,
				  sizeof err));
	assert_non_null(strstr(err, "IPv4"));
	cfg = node_config(&cl, 0);

	cfg.heartbeat_ms = 600;
	assert_null(consensus_new(&cl.loop, &cfg, &fsm, NULL, NULL, err,
				  sizeof err));
	cfg = node_config(&cl, 0);

	/* Occupy the port: raft_init succeeds, raft_start cannot listen. */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)cl.port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	assert_int_equal(listen(fd, 1), 0);
	err[0] = '\0';
	assert_null(consensus_new(&cl.loop, &cfg, &fsm, NULL, NULL, err,
				  sizeof err));
	assert_true(err[0] != '\0');
	close(fd);
	cluster_teardown(&cl);
}

/* Three nodes on one loop elect one leader; a command reaches every FSM; a
 * follower refuses proposals; the leader hands over on close. */
static int all_count_one(void *arg)
{
	struct cluster *cl = arg;

	for (int i = 0; i < cl->n; i++)
		if (cl->nodes[i].fsm.count != 1)
			return 0;
	return 1;
}

static void three_nodes_elect_one_leader(void **state)
{
	struct cluster cl;
	struct done d = {0}, refused = {0};
	struct dones ds = {&d, 1};
	int leader, follower;

	(void)state;
	cluster_setup(&cl, "three", 3);
	for (int i = 0; i < 3; i++)
		node_start(&cl, i);
	assert_true(run_until(&cl.loop, one_leader, &cl, 10000));
	leader = leader_index(&cl);
	assert_true(leader >= 0);
	follower = (leader + 1) % 3;

	assert_int_equal(consensus_propose(cl.nodes[leader].c, command(1), 32,
					   5000, done_cb, &d),
			 CONSENSUS_OK);
	assert_true(run_until(&cl.loop, all_fired, &ds, 5000));
	assert_int_equal(d.status, CONSENSUS_OK);
	assert_true(run_until(&cl.loop, all_count_one, &cl, 5000));

	assert_int_equal(consensus_propose(cl.nodes[follower].c, command(2), 32,
					   0, done_cb, &refused),
			 CONSENSUS_NOT_LEADER);
	assert_int_equal(consensus_role(cl.nodes[follower].c),
			 CONSENSUS_FOLLOWER);
	assert_int_equal(consensus_leader(cl.nodes[follower].c),
			 cl.nodes[leader].id);

	/* Close the leader alone: it hands leadership over before closing,
	 * so a follower leads well within an election timeout after. */
	node_close(&cl, leader);
	while (cl.nodes[leader].c != NULL)
		uv_run(&cl.loop, UV_RUN_ONCE);
	assert_true(run_until(&cl.loop, one_leader, &cl, 400));
	assert_true(leader_index(&cl) != leader);
	close_all(&cl);
	assert_int_equal(d.fired, 1);
	assert_int_equal(refused.fired, 0);
	cluster_teardown(&cl);
}

/* A leader that lost its followers cannot commit: the deadline reports
 * TIMEOUT, and the later raft callback (leadership lost) fires nothing more. */
static int inflight_zero(void *arg)
{
	struct node *nd = arg;

	return consensus_inflight(nd->c) == 0;
}

static void deadline_fires_once_when_quorum_is_gone(void **state)
{
	struct cluster cl;
	struct done d = {0};
	struct dones ds = {&d, 1};
	int leader;

	(void)state;
	cluster_setup(&cl, "deadline", 3);
	for (int i = 0; i < 3; i++)
		node_start(&cl, i);
	assert_true(run_until(&cl.loop, one_leader, &cl, 10000));
	leader = leader_index(&cl);
	for (int i = 0; i < 3; i++)
		if (i != leader)
			node_close(&cl, i);
	while (cl.nodes[(leader + 1) % 3].c != NULL ||
	       cl.nodes[(leader + 2) % 3].c != NULL)
		uv_run(&cl.loop, UV_RUN_ONCE);
	if (cl.nodes[leader].role != CONSENSUS_LEADER)
		skip(); /* it stepped down already: nothing to test */

	assert_int_equal(consensus_propose(cl.nodes[leader].c, command(1), 32,
					   100, done_cb, &d),
			 CONSENSUS_OK);
	assert_true(run_until(&cl.loop, all_fired, &ds, 5000));
	assert_int_equal(d.status, CONSENSUS_TIMEOUT);
	assert_int_equal(consensus_inflight(cl.nodes[leader].c), 1);
	/* The leader steps down after an election timeout without quorum. */
	assert_true(run_until(&cl.loop, inflight_zero, &cl.nodes[leader],
			      5000));
	run_for(&cl.loop, 100);
	assert_int_equal(d.fired, 1);
	close_all(&cl);
	cluster_teardown(&cl);
}

/* ---------------------------------------------------------------- membership */

/* Exactly one leader among the first `n_peers` nodes, known to all of them. */
static int one_leader_among_peers(void *arg)
{
	struct cluster *cl = arg;
	int n = cl->n;
	int ok;

	cl->n = cl->n_peers;
	ok = one_leader(cl);
	cl->n = n;
	return ok;
}

struct members_pred {
	struct node *nd;
	unsigned voters;
};

static unsigned count_voters(struct consensus *c, unsigned *total)
{
	struct consensus_member m[8];
	unsigned n = consensus_members(c, m, 8), voters = 0;

	for (unsigned i = 0; i < n && i < 8; i++)
		voters += m[i].role == CONSENSUS_VOTER;
	if (total != NULL)
		*total = n;
	return voters;
}

static int has_voters(void *arg)
{
	struct members_pred *p = arg;
	unsigned total;

	return count_voters(p->nd->c, &total) == p->voters &&
	       total == p->voters;
}

static int node_count_one(void *arg)
{
	struct node *nd = arg;

	return nd->fsm.count == 1;
}

static int node_is_leader(void *arg)
{
	struct node *nd = arg;

	return nd->role == CONSENSUS_LEADER &&
	       consensus_role(nd->c) == CONSENSUS_LEADER;
}

/* Three bootstrapped voters and a fourth node whose id is not among the
 * peers (so it does not bootstrap): add it (spare, then voter), see it
 * apply a command, refuse a second change meanwhile, transfer leadership to
 * a named follower, remove the fourth node, close everything. */
static void member_add_transfer_remove(void **state)
{
	struct cluster cl;
	struct consensus_member m[8];
	struct done add = {0}, cmd = {0}, xfer = {0}, rem = {0}, none = {0};
	struct dones add_ds = {&add, 1}, cmd_ds = {&cmd, 1},
		     xfer_ds = {&xfer, 1}, rem_ds = {&rem, 1};
	struct members_pred p;
	struct node *n4;
	int leader, target;
	unsigned total;

	(void)state;
	cluster_setup(&cl, "members", 4);
	cl.n_peers = 3;
	for (int i = 0; i < 4; i++)
		node_start(&cl, i);
	n4 = &cl.nodes[3];
	assert_true(run_until(&cl.loop, one_leader_among_peers, &cl, 10000));
	leader = leader_index(&cl);
	assert_true(leader >= 0 && leader < 3);
	assert_int_equal(count_voters(cl.nodes[leader].c, &total), 3);
	assert_int_equal(total, 3);
	/* The joining node has no configuration and never campaigns. */
	assert_int_equal(consensus_members(n4->c, m, 8), 0);
	assert_int_not_equal(n4->role, CONSENSUS_LEADER);

	/* A follower cannot change the membership. */
	assert_int_equal(consensus_member_add(cl.nodes[(leader + 1) % 3].c, 4,
					      n4->address, 0, done_cb, &none),
			 CONSENSUS_NOT_LEADER);

	assert_int_equal(consensus_member_add(cl.nodes[leader].c, 4,
					      n4->address, 20000, done_cb,
					      &add),
			 CONSENSUS_OK);
	assert_int_equal(consensus_inflight(cl.nodes[leader].c), 1);
	/* One change at a time. */
	assert_int_equal(consensus_member_add(cl.nodes[leader].c, 5,
					      "127.0.0.1:1", 0, done_cb,
					      &none),
			 CONSENSUS_CANTCHANGE);
	assert_int_equal(consensus_member_remove(cl.nodes[leader].c, 4, 0,
						 done_cb, &none),
			 CONSENSUS_CANTCHANGE);
	assert_true(run_until(&cl.loop, all_fired, &add_ds, 20000));
	assert_int_equal(add.status, CONSENSUS_OK);
	assert_int_equal(add.fired, 1);
	assert_int_equal(consensus_inflight(cl.nodes[leader].c), 0);
	assert_int_equal(consensus_members(cl.nodes[leader].c, m, 8), 4);
	assert_int_equal(count_voters(cl.nodes[leader].c, NULL), 4);
	for (int i = 0; i < 4; i++)
		if (m[i].id == 4)
			assert_string_equal(m[i].address, n4->address);
	p.nd = n4;
	p.voters = 4;
	assert_true(run_until(&cl.loop, has_voters, &p, 5000));

	/* Adding it again is an error, not a second node. */
	assert_int_equal(consensus_member_add(cl.nodes[leader].c, 4,
					      "127.0.0.1:2", 0, done_cb,
					      &none),
			 CONSENSUS_ERROR);
	assert_true(consensus_errmsg(cl.nodes[leader].c)[0] != '\0');

	/* The new voter applies commands. */
	assert_int_equal(consensus_propose(cl.nodes[leader].c, command(1), 32,
					   5000, done_cb, &cmd),
			 CONSENSUS_OK);
	assert_true(run_until(&cl.loop, all_fired, &cmd_ds, 5000));
	assert_int_equal(cmd.status, CONSENSUS_OK);
	assert_true(run_until(&cl.loop, node_count_one, n4, 5000));

	/* Hand leadership to a named follower among the first three. */
	target = (leader + 1) % 3;
	assert_int_equal(consensus_transfer(cl.nodes[leader].c,
					    cl.nodes[target].id, done_cb,
					    &xfer),
			 CONSENSUS_OK);
	assert_true(run_until(&cl.loop, all_fired, &xfer_ds, 5000));
	assert_int_equal(xfer.status, CONSENSUS_OK);
	assert_true(run_until(&cl.loop, node_is_leader, &cl.nodes[target],
			      5000));
	assert_int_equal(consensus_transfer(cl.nodes[leader].c, 0, done_cb,
					    &none),
			 CONSENSUS_NOT_LEADER);

	/* Remove node 4 through the new leader. */
	assert_int_equal(consensus_member_remove(cl.nodes[target].c, 4, 5000,
						 done_cb, &rem),
			 CONSENSUS_OK);
	assert_true(run_until(&cl.loop, all_fired, &rem_ds, 5000));
	assert_int_equal(rem.status, CONSENSUS_OK);
	assert_int_equal(count_voters(cl.nodes[target].c, &total), 3);
	assert_int_equal(total, 3);
	/* Removed: stop it before it can disturb the others. */
	node_close(&cl, 3);
	while (n4->c != NULL)
		uv_run(&cl.loop, UV_RUN_ONCE);
	p.nd = &cl.nodes[leader];
	p.voters = 3;
	assert_true(run_until(&cl.loop, has_voters, &p, 5000));

	close_all(&cl);
	assert_int_equal(none.fired, 0);
	assert_int_equal(add.fired, 1);
	assert_int_equal(xfer.fired, 1);
	assert_int_equal(rem.fired, 1);
	cluster_teardown(&cl);
}

/* A membership change still pending when the leader closes: close waits
 * for it, its callback fires once with SHUTDOWN before the node is freed,
 * and new requests are refused. */
static void close_reports_pending_member_change_as_shutdown(void **state)
{
	struct cluster cl;
	struct done add = {0}, late = {0};
	int leader;

	(void)state;
	cluster_setup(&cl, "members-close", 4);
	cl.n_peers = 3;
	cl.n = 3; /* node 4 is never started: it cannot be caught up */
	for (int i = 0; i < 3; i++)
		node_start(&cl, i);
	assert_true(run_until(&cl.loop, one_leader, &cl, 10000));
	leader = leader_index(&cl);
	assert_int_equal(consensus_member_add(cl.nodes[leader].c, 4,
					      cl.nodes[3].address, 3000,
					      done_cb, &add),
			 CONSENSUS_OK);
	node_close(&cl, leader);
	assert_int_equal(consensus_member_remove(cl.nodes[leader].c, 4, 0,
						 done_cb, &late),
			 CONSENSUS_SHUTDOWN);
	assert_int_equal(consensus_transfer(cl.nodes[leader].c, 0, done_cb,
					    &late),
			 CONSENSUS_SHUTDOWN);
	while (cl.nodes[leader].c != NULL) {
		uv_run(&cl.loop, UV_RUN_ONCE);
		if (cl.nodes[leader].c != NULL)
			assert_true(add.fired <= 1);
	}
	assert_int_equal(add.fired, 1);
	assert_int_equal(add.status, CONSENSUS_SHUTDOWN);
	close_all(&cl);
	assert_int_equal(add.fired, 1);
	assert_int_equal(late.fired, 0);
	cluster_teardown(&cl);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
			single_node_proposes_snapshots_closes_and_restarts),
		cmocka_unit_test(
			single_node_async_snapshots_close_and_restart),
		cmocka_unit_test(closing_node_refuses_proposals),
		cmocka_unit_test(bad_config_fails_cleanly),
		cmocka_unit_test(three_nodes_elect_one_leader),
		cmocka_unit_test(deadline_fires_once_when_quorum_is_gone),
		cmocka_unit_test(member_add_transfer_remove),
		cmocka_unit_test(close_reports_pending_member_change_as_shutdown),
	};

	flowd_log_level = getenv("FLOWD_TRACE") != NULL ? FLOWD_LOG_DEBUG
						       : FLOWD_LOG_WARN;
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
