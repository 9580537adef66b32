"""test_cluster.py - three real flowd processes: any node answers, steps run
on every node, and a leader kill -9 loses no acknowledged run."""

import os

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
