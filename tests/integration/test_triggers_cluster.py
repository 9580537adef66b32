"""test_triggers_cluster.py - triggers on three nodes: exactly once across
leader kill -9s and wall-clock steps, duplicate events posted to every node,
and on-finish chains across a failover (docs/triggers.md)."""

import os
import threading

import pytest

import flowd_harness as h
from flowd_harness import wait_for

FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


def triggered(spec, **triggers):
    spec = dict(spec)
    spec["triggers"] = triggers
    return spec


def counters(node, flow):
    status, view = node.get("/v1/flows/%s/schedule" % flow)
    assert status == 200, view
    return view["schedules"][0]["counters"]


def schedule_nominals(node, flow):
    return [r["trigger"]["nominal"] for r in node.list_runs("flow=" + flow)
            if r["trigger"]["type"] == "schedule"]


def check_every_tick_decided_once(psql, flow, runs_nominals):
    """From PostgreSQL's fires table: per second, one decision at most (a
    run, a skip, or part of a missed range), no gaps between the first and
    the last decision, and each fired tick has exactly one run."""
    rows = psql("SELECT extract(epoch FROM nominal_time)::bigint, outcome, count, run_id"
                " FROM fires WHERE flow = '%s' ORDER BY 1, 2" % flow)
    covered = {}
    fired = set()
    for nominal, outcome, count, run_id in rows:
        nominal, count = int(nominal), int(count)
        if outcome == "fired":
            fired.add(nominal)
            seconds = [nominal]
        elif outcome == "missed":
            # The ticks before a fired one, or a range ending at nominal.
            end = nominal - 1 if nominal in fired or any(
                r[0] == str(nominal) and r[1] == "fired" for r in rows) else nominal
            seconds = list(range(end - count + 1, end + 1))
        else:
            seconds = [nominal]
        for sec in seconds:
            assert sec not in covered, ("tick %d decided twice: %s and %s"
                                        % (sec, covered[sec], outcome))
            covered[sec] = outcome
    assert fired, rows
    first, last = min(covered), max(covered)
    gaps = [s for s in range(first, last + 1) if s not in covered]
    assert not gaps, "ticks never decided: %s" % gaps[:10]
    assert sorted(runs_nominals) == sorted(fired)
    return covered


def test_every_second_fires_once_or_is_recorded_missed_across_leader_kills(cluster, psql):
    c = cluster(3, overrides={"cluster.node_heartbeat_ms": "200",
                              "cluster.node_timeout_ms": "1500"})
    leader = c.leader()
    leader.deploy("tick", triggered(h.echo_flow(), schedules=[{"cron": "* * * * * *"}]))
    wait_for(lambda: counters(c.leader(), "tick")["fired"] >= 3, 20, "first ticks",
             ignore=(OSError,))
    for _ in range(3):
        old = c.leader()
        before = counters(old, "tick")["fired"]
        old.kill9()
        new = wait_for(lambda: next((n for n in c.nodes if n.alive() and
                                     n.cluster_info().get("role") == "leader"), None),
                       20, "a new leader", ignore=(OSError,))
        wait_for(lambda: counters(new, "tick")["fired"] >= before + 2, 20,
                 "ticks under the new leader", ignore=(OSError,))
        old.start()
    leader = c.leader()
    assert leader.post("/v1/flows/tick/pause")[0] == 200
    n = counters(leader, "tick")["skipped"]
    wait_for(lambda: counters(leader, "tick")["skipped"] >= n + 1, 20, "a skipped tick")
    leader.wait_db_caught_up()
    covered = check_every_tick_decided_once(psql, "tick", schedule_nominals(leader, "tick"))
    assert len(covered) >= 10
    for node in c.nodes:
        wait_for(lambda: sorted(schedule_nominals(node, "tick")) ==
                 sorted(schedule_nominals(leader, "tick")), 20,
                 "node %d to hold the same runs" % node.id, ignore=(OSError,))


def node_clock(node):
    """The node's wall clock (s), read through GET /v1/cron/preview."""
    status, body = node.get("/v1/cron/preview?expr=*+*+*+*+*+*&count=1")
    assert status == 200, body
    from datetime import datetime
    return int(datetime.fromisoformat(body["times"][0].replace("Z", "+00:00")).timestamp()) - 1


@pytest.mark.skipif(not os.path.exists(FAKETIME_LIB),
                    reason="libfaketime is not installed (scripts/install-deps.sh)")
def test_wall_clock_steps_fire_nothing_twice_and_start_no_storm(cluster, psql, workdir):
    offset_file = os.path.join(workdir, "faketime")
    with open(offset_file, "w") as f:
        f.write("+0\n")
    c = cluster(3, start=False)
    for node in c.nodes:
        node.env = {"LD_PRELOAD": FAKETIME_LIB, "FAKETIME_TIMESTAMP_FILE": offset_file,
                    "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1",
                    "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") +
                    ":verify_asan_link_order=0"}
    c.start()
    leader = c.leader()
    leader.deploy("tick", triggered(h.echo_flow(), schedules=[{"cron": "* * * * * *"}]))
    wait_for(lambda: counters(leader, "tick")["fired"] >= 3, 20, "first ticks")

    def step(offset):
        with open(offset_file, "w") as f:
            f.write(offset + "\n")

    # Back an hour: every tick of that hour was decided already.
    fired = counters(leader, "tick")["fired"]
    step("-3600")
    t0 = node_clock(leader)
    wait_for(lambda: node_clock(leader) >= t0 + 3, 20, "three seconds of the stepped clock")
    assert counters(leader, "tick")["fired"] <= fired + 1  # one may have been in flight

    # Forward an hour: a catch-up, not a storm.
    before = counters(c.leader(), "tick")
    step("+3600")
    wait_for(lambda: counters(c.leader(), "tick")["missed"] >= before["missed"] + 3000, 20,
             "the skipped hour recorded as missed")
    wait_for(lambda: counters(c.leader(), "tick")["fired"] >= before["fired"] + 3, 20,
             "ticks going on")
    after = counters(c.leader(), "tick")
    assert after["fired"] - before["fired"] < 20, (before, after)

    # And back again: silence for that hour, no second fire of any tick.
    fired = counters(c.leader(), "tick")["fired"]
    step("+0")
    t0 = node_clock(c.leader())
    wait_for(lambda: node_clock(c.leader()) >= t0 + 3, 20, "three seconds of the stepped clock")
    assert counters(c.leader(), "tick")["fired"] <= fired + 1
    leader = c.leader()
    leader.wait_db_caught_up()
    check_every_tick_decided_once(psql, "tick", schedule_nominals(leader, "tick"))


def test_events_posted_to_every_node_with_duplicate_ids_make_one_run_each(cluster):
    c = cluster(3)
    c.leader().deploy("on_event", triggered(h.echo_flow(), events=[{"event": "arrived"}]))
    answers = {}
    lock = threading.Lock()

    def post(node, i):
        status, body = node.post("/v1/events", {"name": "arrived", "id": "dup-%d" % i,
                                                "payload": {"i": i}})
        with lock:
            answers.setdefault(i, []).append((status, body))

    threads = [threading.Thread(target=post, args=(node, i))
               for i in range(15) for node in c.nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    leader = c.leader()
    for i, got in answers.items():
        assert len(got) == 3
        ids = set()
        for status, body in got:
            assert status in (200, 201), body
            ids.add(body["runs"][0]["run_id"])
        assert len(ids) == 1, (i, got)
        assert sum(1 for status, body in got if not body["duplicate"]) == 1, got
    runs = leader.list_runs("flow=on_event")
    assert len(runs) == 15
    assert sorted(r["trigger"]["event_ids"][0] for r in runs) == sorted(
        "dup-%d" % i for i in range(15))


def test_on_finish_chain_runs_once_per_upstream_run_across_a_failover(cluster):
    c = cluster(3, overrides={"cluster.node_heartbeat_ms": "200",
                              "cluster.node_timeout_ms": "1500"})
    leader = c.leader()
    leader.deploy("a", h.flow_spec([h.step("s", "sleep 0.2", retries=3)]))
    leader.deploy("b", triggered(h.flow_spec([h.step("s", "sleep 0.2", retries=3)]),
                                 on_finish=[{"flow": "a", "status": "succeeded"}]))
    leader.deploy("c", triggered(h.flow_spec([h.step("s", "true", retries=3)]),
                                 on_finish=[{"flow": "b", "status": "succeeded"}]))
    a_ids = [c.nodes[i % 3].start_run("a", idempotency_key="k%d" % i)["id"] for i in range(6)]
    old = c.leader()
    old.kill9()
    c.leader()
    others = [n for n in c.nodes if n is not old]
    a_ids += [others[i % 2].start_run("a", idempotency_key="k%d" % i)["id"]
              for i in range(6, 12)]
    old.start()
    leader = c.leader()

    def chain_done():
        cs = leader.list_runs("flow=c")
        return len(cs) >= 12 and all(r["status"] == "succeeded" for r in cs)

    wait_for(chain_done, 60, "the chain to finish", ignore=(OSError,))
    bs = leader.list_runs("flow=b")
    cs = leader.list_runs("flow=c")
    assert sorted(r["trigger"]["upstream_run"] for r in bs) == sorted(set(a_ids))
    assert sorted(r["trigger"]["upstream_run"] for r in cs) == sorted(r["id"] for r in bs)


@pytest.mark.skipif(not os.path.exists(FAKETIME_LIB),
                    reason="libfaketime is not installed (scripts/install-deps.sh)")
def test_catchup_policies_after_a_minute_without_ticks(cluster, workdir):
    """The clock jumps a minute: per schedule, none fires nothing, latest fires
    one, all fires every tick inside its 10 s window; the rest are missed."""
    offset_file = os.path.join(workdir, "faketime")
    with open(offset_file, "w") as f:
        f.write("+0\n")
    c = cluster(1, start=False)
    node = c.nodes[0]
    node.env = {"LD_PRELOAD": FAKETIME_LIB, "FAKETIME_TIMESTAMP_FILE": offset_file,
                "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1",
                "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"}
    c.start()
    sched = [{"cron": "* * * * * *", "catchup": p, "catchup_window_s": 10}
             for p in ("none", "latest", "all")]
    node.deploy("cu", triggered(h.echo_flow(), schedules=sched))

    def view():
        return {s["schedule"]: s["counters"] for s in
                node.get("/v1/flows/cu/schedule")[1]["schedules"]}

    wait_for(lambda: all(v["fired"] >= 2 for v in view().values()), 20, "ticks on time")
    before = view()
    with open(offset_file, "w") as f:
        f.write("+60\n")
    wait_for(lambda: all(view()[i]["missed"] >= before[i]["missed"] + 45 for i in range(3)),
             20, "the jump decided")
    after = view()
    fired = {i: after[i]["fired"] - before[i]["fired"] for i in range(3)}
    # Ticks on time go on after the jump: allow a few beyond the catch-up.
    assert fired[0] <= 3, fired
    assert 1 <= fired[1] <= 4, fired
    assert 10 <= fired[2] <= 13, fired
    for i in range(3):
        total = after[i]["fired"] + after[i]["missed"] - before[i]["fired"] - before[i]["missed"]
        assert total >= 58, (i, before[i], after[i])
