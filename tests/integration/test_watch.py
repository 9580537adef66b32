"""test_watch.py - GET /v1/watch, the change stream (docs/api.md, "Streams"),
on real nodes: run and step state changes and schedule fires as Server-Sent
Events, filters by flow and run, resuming with Last-Event-ID on the same or
another node, the explicit reset past the window, bad input, and a node that
stops while watchers are connected."""

import flowd_harness as h
from flowd_harness import READER_TOKEN, echo_flow, failing_flow, flow_spec, step


def run_done(run_id, status="succeeded"):
    return lambda e: (e["event"] == "run" and e["data"]["run_id"] == run_id
                      and e["data"]["status"] == status)


def test_a_run_and_its_steps_stream_in_order_with_increasing_ids(node):
    node.deploy("e", echo_flow())
    denied = h.EventStream(node.api_port, "/v1/watch", token=None)
    assert denied.status == 401, denied.body
    s = h.EventStream(node.api_port, "/v1/watch")
    assert s.status == 200
    assert s.header("Content-Type") == "text/event-stream"
    assert s.header("Cache-Control") == "no-cache"
    rid = node.start_run("e")["id"]
    evs = s.until(run_done(rid), what="the run's end")
    assert s.retry == 1000
    mine = [e for e in evs if e["data"].get("run_id") == rid]
    kinds = [(e["event"], e["data"].get("step"), e["data"]["status"]) for e in mine]
    assert kinds == [("run", None, "running"), ("step", "only", "running"),
                     ("step", "only", "succeeded"), ("run", None, "succeeded")], kinds
    ids = [tuple(int(x) for x in e["id"].split("-")) for e in evs]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), ids
    for e in mine:
        d = e["data"]
        assert d["flow"] == "e" and d["index"] == ids[evs.index(e)][0]
        assert d["at_ms"] >= d["ts_ms"] > 0
    step_done = mine[2]["data"]
    assert step_done["attempt"] == 1 and step_done["node"] == 1
    assert step_done["exit_code"] == 0
    # what the stream said is what a read says now
    assert node.get("/v1/runs/" + rid)[1]["status"] == "succeeded"
    s.close()


def test_filters_by_flow_and_run_and_failures_carry_their_reason(node):
    node.deploy("ok", echo_flow())
    node.deploy("bad", failing_flow(retries=1))
    by_flow = h.EventStream(node.api_port, "/v1/watch?flow=bad")
    first = node.start_run("ok")["id"]
    bad = node.start_run("bad")["id"]
    by_run = h.EventStream(node.api_port, "/v1/watch?run=" + first + "&index=0")
    evs = by_flow.until(run_done(bad, "failed"), what="the failed run")
    assert {e["data"]["flow"] for e in evs} == {"bad"}
    boom = [e["data"] for e in evs if e["event"] == "step" and e["data"]["step"] == "boom"]
    # two attempts, a retry wait between them, and the exit code of each
    assert [(d["status"], d["attempt"]) for d in boom] == [
        ("running", 1), ("retry_wait", 1), ("running", 2), ("failed", 2)], boom
    assert boom[-1]["exit_code"] == 1
    after = [e["data"] for e in evs if e["event"] == "step" and e["data"]["step"] == "after"]
    assert after and after[-1]["status"] == "skipped"
    # ?run= with ?index=0: from the start of what the feed holds, that run only
    evs = by_run.until(run_done(first), what="the first run's end")
    assert {e["data"]["run_id"] for e in evs} == {first}
    assert evs[0]["data"]["status"] == "running"


def test_last_event_id_resumes_on_another_node_and_a_schedule_fire_streams(cluster):
    c = cluster(n=3)
    leader = c.leader()
    follower = next(n for n in c if n is not leader)
    tick = flow_spec([step("a", shell="true")])
    tick["triggers"] = {"schedules": [{"cron": "* * * * * *"}]}
    leader.deploy("tick", tick)
    s = h.EventStream(follower.api_port, "/v1/watch?flow=tick")
    evs = s.until(lambda e: e["event"] == "fire" and e["data"]["outcome"] == "fired",
                  what="a fire")
    fire = evs[-1]["data"]
    assert fire["flow"] == "tick" and fire["schedule"] == 0 and fire["count"] == 1
    assert fire["nominal"].endswith("Z") and fire["run_id"].startswith("r-")
    more = s.until(run_done(fire["run_id"]), what="the fired run's end")
    seen = evs + more
    s.close()
    leader.post("/v1/flows/tick/pause")
    # resume after the fire on the leader: the same events, the same ids
    cut = len(evs) - 1
    r = h.EventStream(leader.api_port, "/v1/watch?flow=tick",
                      headers={"Last-Event-ID": seen[cut]["id"]})
    again = r.until(lambda e: e["id"] == seen[-1]["id"], what="the same last event")
    assert [(e["id"], e["event"], e["data"].get("status")) for e in again] == \
        [(e["id"], e["event"], e["data"].get("status")) for e in seen[cut + 1:]]
    r.close()


def test_resuming_past_the_window_gets_an_explicit_reset(cluster):
    c = cluster(n=1, overrides={"api.watch_window": 16})
    node = c[0]
    node.deploy("e", echo_flow())
    s = h.EventStream(node.api_port, "/v1/watch")
    first = node.start_run("e")["id"]
    evs = s.until(run_done(first))
    old = evs[0]["id"]
    s.close()
    runs = [node.start_run("e")["id"] for _ in range(6)]  # 24 events > 16
    for rid in runs:
        node.wait_run(rid)
    r = h.EventStream(node.api_port, "/v1/watch", headers={"Last-Event-ID": old})
    ev = r.next()
    assert ev["event"] == "reset" and ev["data"]["reason"] == "window", ev
    # the reset names where to go on from: the newest event it had
    newest = tuple(int(x) for x in ev["id"].split("-"))
    assert newest > tuple(int(x) for x in old.split("-"))
    late = node.start_run("e")["id"]
    more = r.until(run_done(late))
    assert all(tuple(int(x) for x in e["id"].split("-")) > newest for e in more)
    r.close()
    # within the window: no reset
    w = h.EventStream(node.api_port, "/v1/watch", headers={"Last-Event-ID": more[0]["id"]})
    ev = w.next()
    assert ev["event"] != "reset" and ev["id"] == more[1]["id"], ev
    w.close()


def test_bad_watch_input_is_a_400_naming_it(node):
    for path, headers, field in [
            ("/v1/watch?flow=a%20b", {}, "flow"),
            ("/v1/watch?run=x/y", {}, "run"),
            ("/v1/watch?index=-1", {}, "index"),
            ("/v1/watch?index=1x", {}, "index"),
            ("/v1/watch", {"Last-Event-ID": "12"}, "Last-Event-ID"),
            ("/v1/watch", {"Last-Event-ID": "1-x"}, "Last-Event-ID")]:
        s = h.EventStream(node.api_port, path, headers=headers)
        assert s.status == 400, (path, headers, s.body)
        assert s.body["error"]["field"] == field, s.body
        s.close()


def test_a_node_stopping_ends_its_streams_and_exits_cleanly(node):
    node.deploy("e", echo_flow())
    streams = [h.EventStream(node.api_port, "/v1/watch", token=READER_TOKEN) for _ in range(20)]
    rid = node.start_run("e")["id"]
    for s in streams:
        s.until(run_done(rid))
    assert node.terminate() == 0
    for s in streams:
        assert s.next(timeout=5) is None and s.ended
        s.close()


def test_deploys_and_pauses_stream_as_flow_events(node):
    s = h.EventStream(node.api_port, "/v1/watch?flow=tick")
    spec = flow_spec([step("a", shell="true")])
    spec["triggers"] = {"schedules": [{"cron": "0 0 1 1 *"}]}
    node.deploy("tick", spec)
    node.post("/v1/flows/tick/pause")
    node.post("/v1/flows/tick/unpause")
    node.delete("/v1/flows/tick")
    evs = s.until(lambda e: e["event"] == "flow" and not e["data"]["deployed"],
                  what="the undeploy")
    flows = [(e["data"]["version"], e["data"]["deployed"], e["data"]["paused"])
             for e in evs if e["event"] == "flow"]
    assert flows == [(1, True, False), (1, True, True), (1, True, False),
                     (1, False, False)], flows
    s.close()
