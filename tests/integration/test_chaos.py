"""test_chaos.py - schedules and submissions through random kill -9s.

Short here (about 20 s, part of `make test`); `make chaos` sets
FLOWD_CHAOS=long for five minutes of it. A seeded random sequence kills the
leader or a follower with kill -9 and restarts it, while a per-second
schedule fires and a client submits keyed runs to any node. Afterwards:
every schedule second decided exactly once (PostgreSQL's fires table),
every acknowledged submission exactly one run, every run finished."""

import os
import random
import threading
import time

import flowd_harness as h
from flowd_harness import wait_for
from test_triggers_cluster import (check_every_tick_decided_once, counters,
                                   schedule_nominals, triggered)

LONG = os.environ.get("FLOWD_CHAOS") == "long"
DURATION_S = 300 if LONG else 20


def test_chaos_schedules_and_submissions_through_random_kills(cluster, psql):
    rng = random.Random(int(os.environ.get("FLOWD_CHAOS_SEED", "4242")))
    c = cluster(3, overrides={"cluster.node_heartbeat_ms": "200",
                              "cluster.node_timeout_ms": "1500"})
    leader = c.leader()
    leader.deploy("tick", triggered(h.flow_spec([h.step("s", "true", retries=5)]),
                                    schedules=[{"cron": "* * * * * *"}]))
    leader.deploy("work", h.flow_spec([h.step("s", "true", retries=5)]))
    acked = {}
    stop = threading.Event()

    def submit():
        i = 0
        while not stop.is_set():
            node = c.nodes[i % 3]
            key = "k%d" % i
            try:
                if node.alive():
                    status, body = node.post("/v1/flows/work/runs", {"idempotency_key": key})
                    if status in (200, 201):
                        acked[key] = body["id"]
            except OSError:
                pass
            i += 1
            stop.wait(0.05)

    t = threading.Thread(target=submit)
    t.start()
    deadline = time.monotonic() + h.scaled(DURATION_S)
    kills = 0
    try:
        while time.monotonic() < deadline:
            leader = c.leader(timeout=30)
            victim = leader if rng.random() < 0.6 else rng.choice(
                [n for n in c.nodes if n is not leader])
            victim.kill9()
            kills += 1
            wait_for(lambda: any(n.alive() and n.cluster_info().get("role") == "leader"
                                 for n in c.nodes if n is not victim), 30,
                     "a leader without node %d" % victim.id, ignore=(OSError,))
            n = counters(c.leader(), "tick")["fired"]
            wait_for(lambda: counters(c.leader(), "tick")["fired"] >= n + 1, 30,
                     "a tick after killing node %d" % victim.id, ignore=(OSError,))
            victim.start()
            c.leader().wait_healthy() if hasattr(c.leader(), "wait_healthy") else None
    finally:
        stop.set()
        t.join(timeout=60)
    assert kills >= 2
    leader = c.leader()
    assert leader.post("/v1/flows/tick/pause")[0] == 200
    for key, run_id in acked.items():
        run = leader.wait_run(run_id, timeout=120)
        assert run["status"] == "succeeded", run
    by_key = {}
    for r in leader.list_runs("flow=work"):
        by_key.setdefault(r["idempotency_key"], []).append(r["id"])
    for key, run_id in acked.items():
        assert by_key.get(key) == [run_id], (key, by_key.get(key))
    leader.wait_db_caught_up()
    check_every_tick_decided_once(psql, "tick", schedule_nominals(leader, "tick"))
