"""test_cluster.py - three real flowd processes: any node answers, steps run
on every node, and a leader kill -9 loses no acknowledged run."""

import os
import shutil
import subprocess

import pytest

import flowd_harness as h
from flowd_harness import echo_flow, wait_for


def runs_by_key(node):
    out = {}
    for r in node.list_runs("flow=fast"):
        out.setdefault(r["idempotency_key"], []).append(r["id"])
    return out


def test_writes_to_any_node_reach_the_leader_and_steps_run_on_every_node(cluster):
    c = cluster(3)
    leader = c.leader()
    followers = [n for n in c.nodes if n is not leader]

    # A deploy sent to a follower is forwarded and answered like the leader would.
    status, body = followers[0].put("/v1/flows/fast", echo_flow("hi"))
    assert status == 201, body
    status, body = followers[1].put("/v1/flows/fast", echo_flow("hi"))
    assert status == 200 and body["created"] is False, body

    ids = []
    for i in range(30):
        node = c.nodes[i % 3]
        ids.append(node.start_run("fast", idempotency_key="k%d" % i)["id"])
    for run_id in ids:
        assert leader.wait_run(run_id)["status"] == "succeeded"
    nodes_used = {leader.run(r)["steps"][0]["attempts"][-1]["node"] for r in ids}
    assert nodes_used == {1, 2, 3}, nodes_used

    # The same key sent to another node is the same run.
    again = followers[1].start_run("fast", idempotency_key="k0", expect=200)
    assert again["id"] == ids[0]
    # Every node converges on the same history.
    for node in c.nodes:
        wait_for(lambda: all(node.get("/v1/runs/" + r)[1].get("status") == "succeeded"
                             for r in ids), 10, "node %d to apply every run" % node.id)
    # ?consistent=true reads through the leader.
    status, body = followers[0].get("/v1/runs/%s?consistent=true" % ids[-1])
    assert status == 200 and body["status"] == "succeeded", body


def test_leader_kill9_loses_no_acknowledged_run_and_the_cluster_goes_on(cluster):
    c = cluster(3)
    leader = c.leader()
    leader.deploy("fast", echo_flow("x"))
    acked = {}
    for i in range(20):
        r = c.nodes[i % 3].start_run("fast", idempotency_key="a%d" % i)
        acked["a%d" % i] = r["id"]

    assert leader.kill9() == -9
    survivors = [n for n in c.nodes if n is not leader]
    new_leader = wait_for(lambda: next((n for n in survivors
                                        if n.cluster_info().get("role") == "leader"), None),
                          30, "a new leader among the survivors", ignore=(OSError,))
    # Writes go on through both survivors; retries with the same key are safe.
    for i in range(20, 30):
        node = survivors[i % 2]

        def accepted():
            status, body = node.post("/v1/flows/fast/runs", {"idempotency_key": "a%d" % i})
            return body if status in (200, 201) else None
        acked["a%d" % i] = wait_for(accepted, 15, "a write through node %d" % node.id)["id"]
    assert new_leader.cluster_info()["role"] == "leader"

    # The killed node comes back: its lost attempts are retried.
    leader.start()
    for key, run_id in acked.items():
        run = new_leader.wait_run(run_id, timeout=60)
        assert run["status"] in ("succeeded", "failed"), run
    # Exactly one run per acknowledged key, on every node.
    by_key = runs_by_key(new_leader)
    for key, run_id in acked.items():
        assert by_key.get(key) == [run_id], (key, by_key.get(key))


def test_postgres_gets_every_row_from_the_leader_and_after_it_dies(cluster):
    # Only the leader's applier writes PostgreSQL; the followers follow its
    # progress (storage/applier.c, standby). Every node still reports
    # PostgreSQL caught up, and after the leader dies with runs just
    # acknowledged, the new leader writes what the old one had not.
    c = cluster(3)
    leader = c.leader()
    leader.deploy("fast", echo_flow("x"))
    acked = [c.nodes[i % 3].start_run("fast")["id"] for i in range(30)]
    for n in c.nodes:
        n.wait_db_caught_up(timeout=30)
    for i in range(30):
        acked.append(c.nodes[i % 3].start_run("fast")["id"])
    assert leader.kill9() == -9
    survivors = [n for n in c.nodes if n is not leader]
    new_leader = wait_for(lambda: next((n for n in survivors
                                        if n.cluster_info().get("role") == "leader"), None),
                          30, "a new leader", ignore=(OSError,))
    for run_id in acked:
        new_leader.wait_run(run_id, timeout=60)
    for n in survivors:
        n.wait_db_caught_up(timeout=60)
    in_db = {r[0]: r[1] for r in c.db.psql("SELECT id, status FROM runs")}
    for run_id in acked:
        assert run_id in in_db, run_id
        assert in_db[run_id] == new_leader.run(run_id)["status"], run_id


def test_a_dead_follower_is_marked_down_and_its_attempt_runs_elsewhere(cluster, workdir):
    c = cluster(3, overrides={"cluster.node_heartbeat_ms": "200",
                              "cluster.node_timeout_ms": "1500"})
    leader = c.leader()
    # The first attempt sleeps; a retry succeeds at once.
    leader.deploy("nap", h.flow_spec([h.step(
        "s", '[ "$FLOWD_ATTEMPT" = 1 ] && exec sleep 60; exit 0', retries=2)]))
    # Start runs until one's first attempt lands on a follower.
    victim_run, victim = None, None
    for _ in range(12):
        run_id = leader.start_run("nap")["id"]
        run = wait_for(lambda: (lambda r: r if r["steps"][0]["attempts"] else None)(
            leader.run(run_id)), 10, "the attempt to be placed")
        node_id = run["steps"][0]["attempts"][0]["node"]
        if node_id != int(leader.cluster_info()["node_id"]):
            victim_run, victim = run_id, c[node_id - 1]
            break
    assert victim is not None, "no attempt landed on a follower"

    assert victim.kill9() == -9
    run = leader.wait_run(victim_run, timeout=30)
    assert run["status"] == "succeeded", run
    attempts = run["steps"][0]["attempts"]
    assert attempts[0]["status"] == "lost" and attempts[0]["node"] == victim.id, attempts
    assert attempts[-1]["status"] == "succeeded" and attempts[-1]["node"] != victim.id, attempts
    assert "marking it down" in leader.log_text()

    # It comes back (a new boot): it registers and takes work again.
    victim.start()
    assert victim.cluster_info()["role"] == "follower"


def test_a_fourth_node_joins_takes_work_and_is_removed_again(cluster):
    c = cluster(3)
    leader = c.leader()
    leader.deploy("fast", echo_flow("x"))
    new = c.new_joining_node()
    new.start(wait=False)
    wait_for(lambda: new.alive() and h.http_request(new.api_port, "GET", "/healthz").status == 200,
             20, "the joining node's API", ignore=(OSError,))

    # Added through a follower (forwarded to the leader): a voter once caught up.
    follower = next(n for n in c.nodes[:3] if n is not leader)
    status, body = follower.post("/v1/cluster/members", {
        "id": new.id, "raft_address": new.raft_address, "api_address": new.api_address})
    assert status == 200, body
    voters = {m["id"] for m in body["members"] if m["role"] == "voter"}
    assert voters == {1, 2, 3, 4}, body
    new.wait_ready()

    # It takes work: runs sent to it succeed, and some of them ran on it
    # (steps that overlap spread over the nodes with the most free slots).
    new.deploy("slowish", h.flow_spec([h.step("s", "sleep 0.5")]))
    ids = [new.start_run("slowish")["id"] for _ in range(16)]
    for run_id in ids:
        assert new.wait_run(run_id)["status"] == "succeeded"
    ran_on = {new.run(r)["steps"][0]["attempts"][-1]["node"] for r in ids}
    assert 4 in ran_on, ran_on

    # Removing it leaves three voters; while it still runs it takes no work.
    status, body = leader.delete("/v1/cluster/members/%d" % new.id)
    assert status == 200, body
    assert {m["id"] for m in body["members"]} == {1, 2, 3}, body
    ids = [leader.start_run("slowish")["id"] for _ in range(12)]
    for run_id in ids:
        run = leader.wait_run(run_id)
        assert run["status"] == "succeeded", run
        assert run["steps"][0]["attempts"][-1]["node"] != new.id, run
    new.kill9()


def test_leader_transfer_on_request(cluster):
    c = cluster(3)
    leader = c.leader()
    target = next(n for n in c.nodes if n is not leader)
    status, body = leader.post("/v1/cluster/leader/transfer", {"id": target.id})
    assert status == 200 and body["leader"] == target.id, body
    wait_for(lambda: target.cluster_info()["role"] == "leader", 10, "the target to lead")


def test_sigterm_on_the_leader_exits_cleanly_and_leadership_moves(cluster):
    c = cluster(3)
    leader = c.leader()
    leader.deploy("fast", echo_flow("x"))
    ids = [leader.start_run("fast", idempotency_key="t%d" % i)["id"] for i in range(10)]
    assert leader.terminate() == 0
    survivors = [n for n in c.nodes if n is not leader]
    new_leader = wait_for(lambda: next((n for n in survivors
                                        if n.cluster_info().get("role") == "leader"), None),
                          10, "leadership to move", ignore=(OSError,))
    for run_id in ids:
        assert new_leader.wait_run(run_id, timeout=30)["id"] == run_id
    assert "stopped cleanly" in leader.log_text()


def test_a_restarted_follower_catches_up_and_a_full_restart_keeps_history(cluster):
    # A small snapshot threshold: the follower that was down catches up from
    # a snapshot, not only from the log.
    c = cluster(3, overrides={"raft.snapshot_threshold": "16",
                              "raft.snapshot_trailing": "16"})
    leader = c.leader()
    leader.deploy("fast", echo_flow("x"))
    follower = next(n for n in c.nodes if n is not leader)
    assert follower.kill9() == -9
    ids = [leader.start_run("fast")["id"] for _ in range(40)]
    for run_id in ids:
        leader.wait_run(run_id, timeout=60)
    follower.start()
    wait_for(lambda: all(follower.get("/v1/runs/" + r)[1].get("status") in ("succeeded", "failed")
                         for r in ids), 30, "the follower to catch up")
    before = {r: leader.run(r) for r in ids}

    # All three stopped and started again: the same history.
    for n in c.nodes:
        n.terminate()
    c.start()
    leader = c.leader()
    for r in ids:
        assert leader.run(r) == before[r]


def test_five_nodes_work_the_same_way(cluster):
    c = cluster(5, overrides={"cluster.node_heartbeat_ms": "200",
                              "cluster.node_timeout_ms": "1500"})
    leader = c.leader()
    # Retries: a step placed on the killed node is lost, then retried on
    # another one once that node is marked down.
    c[0].deploy("fast", h.flow_spec([h.step("only", "echo x", retries=2)]))
    ids = [c[i % 5].start_run("fast")["id"] for i in range(10)]
    for run_id in ids:
        assert leader.wait_run(run_id)["status"] == "succeeded"
    assert leader.kill9() == -9
    survivors = [n for n in c.nodes if n is not leader]
    wait_for(lambda: any(n.cluster_info().get("role") == "leader" for n in survivors),
             10, "a new leader", ignore=(OSError,))
    run_id = survivors[0].start_run("fast")["id"]
    assert survivors[0].wait_run(run_id, timeout=30)["status"] == "succeeded"


def test_steady_submissions_through_repeated_leader_kills_are_each_kept_once(cluster):
    import threading
    import time
    c = cluster(3, overrides={"cluster.node_heartbeat_ms": "200",
                              "cluster.node_timeout_ms": "1500"})
    leader = c.leader()
    # Retries: a step that was running on a killed node is lost and retried.
    leader.deploy("fast", h.flow_spec([h.step("only", "echo x", retries=3)]))
    acked, stop = {}, threading.Event()

    def submit():
        i = 0
        while not stop.is_set():
            key = "s%d" % i
            deadline = time.monotonic() + h.scaled(20)
            # The same key is retried until some node accepts it.
            while not stop.is_set() and time.monotonic() < deadline:
                node = c.nodes[(i + int(time.monotonic() * 10)) % 3]
                try:
                    status, body = node.post("/v1/flows/fast/runs", {"idempotency_key": key})
                except OSError:
                    status, body = 0, None
                if status in (200, 201):
                    acked[key] = body["id"]
                    break
                time.sleep(0.02)
            i += 1

    t = threading.Thread(target=submit, daemon=True)
    t.start()
    try:
        for _ in range(3):
            wait_for(lambda: len(acked) >= 5, 20, "some runs before the kill")
            old = c.leader()
            assert old.kill9() == -9
            wait_for(lambda: next((n for n in c.nodes if n is not old and n.alive()
                                   and n.cluster_info().get("role") == "leader"), None),
                     20, "a new leader", ignore=(OSError,))
            old.start()
            before = len(acked)
            wait_for(lambda: len(acked) > before + 5, 20, "writes to go on")
    finally:
        stop.set()
        t.join(timeout=30)
    leader = c.leader()
    for key, run_id in acked.items():
        run = leader.wait_run(run_id, timeout=60)
        assert run["status"] == "succeeded", run
    by_key = runs_by_key(leader)
    for key, run_id in acked.items():
        assert by_key.get(key) == [run_id], (key, by_key.get(key))


class Partition:
    """Cuts nodes off from each other, both directions, with iptables.

    Every node shares the loopback device, so addresses cannot tell nodes
    apart; cgroups can. Each node starts in its own cgroup v2 group (a
    socket belongs to the group its process was in when it was opened, so
    this must happen before the node starts), and cut() adds OUTPUT rules
    that drop every TCP segment one side's nodes send to the other side's
    Raft or API ports. canonical/raft sends each message over the sender's
    own connection to the receiver's port, and forwarded API calls go to
    the receiver's API port, so nothing crosses. The test itself stays
    outside the groups and talks to every node, and every node still
    reaches PostgreSQL: only the links between flowd hosts fail.
    """

    ROOT = "/sys/fs/cgroup/unified"

    def __init__(self, cluster):
        import os
        import pytest
        if shutil.which("iptables") is None:
            pytest.skip("iptables is not installed (scripts/install-deps.sh installs it)")
        if not os.path.isfile(os.path.join(self.ROOT, "cgroup.procs")):
            pytest.skip("no cgroup v2 hierarchy at %s" % self.ROOT)
        self.rules = []
        self.groups = []
        for n in cluster.nodes:
            n.cgroup = os.path.join(self.ROOT, "flowd-test-%d-node%d" % (os.getpid(), n.id))
            os.makedirs(n.cgroup, exist_ok=True)
            self.groups.append(n.cgroup)

    def cut(self, side, rest):
        import os
        import pytest
        for a, b in ((side, rest), (rest, side)):
            ports = ",".join(str(p) for n in b for p in (n.raft_port, n.api_port))
            for n in a:
                rule = ["OUTPUT", "-p", "tcp", "-m", "multiport", "--dports", ports,
                        "-m", "cgroup", "--path", os.path.basename(n.cgroup), "-j", "DROP"]
                if subprocess.run(["iptables", "-I"] + rule, capture_output=True).returncode:
                    self.heal()
                    pytest.skip("iptables cannot match on cgroups here")
                self.rules.append(rule)

    def heal(self):
        for rule in self.rules:
            subprocess.run(["iptables", "-D"] + rule, check=True)
        self.rules = []

    def remove(self):
        """Moves whatever still runs in the groups to the root and removes them."""
        import os
        self.heal()
        for g in self.groups:
            try:
                with open(os.path.join(g, "cgroup.procs")) as f:
                    pids = f.read().split()
                for pid in pids:
                    try:
                        with open(os.path.join(self.ROOT, "cgroup.procs"), "w") as f:
                            f.write(pid)
                    except OSError:
                        pass   # exited meanwhile
                os.rmdir(g)
            except OSError:
                pass


@pytest.fixture
def partitionable(cluster):
    """A started three-node cluster whose nodes can be partitioned."""
    made = []

    def factory(n=3, overrides=None):
        c = cluster(n, overrides=overrides, start=False)
        part = Partition(c)
        made.append(part)
        c.start()
        return c, part

    yield factory
    for part in made:
        part.remove()


def test_a_partitioned_leader_commits_nothing_and_the_majority_carries_on(partitionable):
    c, part = partitionable(3, overrides={"cluster.node_heartbeat_ms": "200",
                                          "cluster.node_timeout_ms": "1500",
                                          "raft.apply_timeout_ms": "1500"})
    old = c.leader()
    old.deploy("fast", h.flow_spec([h.step("only", "echo x", retries=3)]))
    before = [old.start_run("fast", idempotency_key="before%d" % i)["id"] for i in range(3)]
    for run_id in before:
        old.wait_run(run_id)
    others = [n for n in c.nodes if n is not old]
    part.cut([old], others)
    try:
        # The isolated leader cannot commit: a write sent to it is refused
        # or times out, never acknowledged.
        status, body = old.post("/v1/flows/fast/runs", {"idempotency_key": "isolated"})
        assert status not in (200, 201), body
        # The majority elects a leader and carries on.
        new = wait_for(lambda: next((n for n in others
                                     if n.cluster_info().get("role") == "leader"), None),
                       20, "a leader on the majority side", ignore=(OSError,))
        ids = [others[i % 2].start_run("fast", idempotency_key="m%d" % i)["id"]
               for i in range(8)]
        for run_id in ids:
            run = new.wait_run(run_id, timeout=30)
            assert run["status"] == "succeeded", run
            # The isolated node started nothing. Until it is marked down the
            # new leader may place an attempt on it; that attempt never
            # reaches it and ends `lost`, and a retry runs elsewhere.
            for a in run["steps"][0]["attempts"]:
                assert a["node"] != old.id or a["status"] == "lost", run
        # The isolated node never learnt of those runs, and leads no one.
        for run_id in ids:
            assert old.get("/v1/runs/" + run_id)[0] == 404
        assert old.cluster_info()["role"] != "leader"
    finally:
        part.heal()

    # Healed: one history. The old leader follows and holds what the
    # majority committed.
    wait_for(lambda: old.cluster_info().get("role") == "follower", 20, "the old leader to follow",
             ignore=(OSError,))
    for run_id in before + ids:
        wait_for(lambda: old.get("/v1/runs/" + run_id)[1] == new.run(run_id), 20,
                 "node %d to hold run %s as the leader does" % (old.id, run_id))
    # The write the isolated leader could not acknowledge never reached the
    # others; its entry is dropped from the old leader's log when it follows.
    # Retrying with the same key is safe either way: exactly one run.
    status, body = new.post("/v1/flows/fast/runs", {"idempotency_key": "isolated"})
    assert status in (200, 201), body
    assert runs_by_key(new).get("isolated") == [body["id"]]
    new.wait_run(body["id"])
    wait_for(lambda: runs_by_key(old).get("isolated") == [body["id"]], 20,
             "the old leader to see the one retried run")


def test_kill9_of_every_node_at_once_under_writes_loses_nothing_acknowledged(cluster):
    """The whole cluster crashes at once (kill -9 of the three nodes while
    runs are being submitted, followed logs and watchers open): after the
    restart every flow and every acknowledged run is there."""
    import threading
    # small snapshots, so that the crash also meets segments being closed
    # and snapshots being taken
    c = cluster(3, overrides={"raft.snapshot_threshold": "64",
                              "raft.snapshot_trailing": "64"})
    leader = c.leader()
    leader.deploy("fast", echo_flow("x"))
    leader.deploy("other", echo_flow("y"))
    acked, stop = [], threading.Event()

    def submit():
        while not stop.is_set():
            try:
                status, out = leader.post("/v1/flows/fast/runs", {}, timeout=2)
            except OSError:
                continue
            if status == 201:
                acked.append(out["id"])
    t = threading.Thread(target=submit)
    t.start()
    wait_for(lambda: len(acked) >= 300, 60, "300 acknowledged runs")
    for n in c.nodes:  # at once
        n.proc.kill()
    stop.set()
    t.join()
    for n in c.nodes:
        n.proc.wait()
    c.start()
    leader = c.leader()
    status, flows = leader.get("/v1/flows")
    assert status == 200 and sorted(f["name"] for f in flows["flows"]) == ["fast", "other"], flows
    for r in acked:
        status, run = leader.get("/v1/runs/" + r)
        assert status == 200, (r, run)
