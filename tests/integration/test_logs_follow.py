"""test_logs_follow.py - GET /v1/runs/{id}/steps/{step}/logs?follow=true on
real nodes (docs/api.md, "Streams"): a running step's output as it is
produced, from the node that runs it or relayed by any other, ending with
the attempt; the stored log once it has ended; bad input."""

import flowd_harness as h
from flowd_harness import flow_spec, step, wait_for

CHATTY = ("for i in 1 2 3 4; do echo line$i; sleep 0.4; done; "
          "echo oops >&2; exit 3")


def attempt_of(node, run_id, name):
    def running():
        status, run = node.get("/v1/runs/" + run_id)
        if status == 404:  # a follower that has not applied it yet
            return None
        assert status == 200, run
        s = h.steps_by_name(run)[name]
        return s["attempts"][-1] if s["attempts"] else None
    return wait_for(running, 20, "the step's first attempt")


def follow(node, run_id, name, query=""):
    return h.EventStream(node.api_port, "/v1/runs/%s/steps/%s/logs?follow=true%s"
                         % (run_id, name, query))


def read_all(stream, node, run_id):
    """(stdout, stderr, end data, whether output came while the run ran)."""
    out, err, live = "", "", False
    while True:
        ev = stream.next(timeout=20)
        assert ev is not None, "the stream ended without an end event"
        if ev["event"] == "output":
            if not live:
                live = node.get("/v1/runs/" + run_id)[1]["status"] == "running"
            if ev["data"]["stream"] == "stdout":
                out += ev["data"]["text"]
            else:
                err += ev["data"]["text"]
        elif ev["event"] == "end":
            assert stream.next(timeout=5) is None and stream.ended
            return out, err, ev["data"], live
        else:
            raise AssertionError("unexpected event %r" % ev)


def test_a_running_step_streams_as_it_runs_and_ends_with_the_attempt(node):
    node.deploy("chatty", flow_spec([step("talk", CHATTY)]))
    rid = node.start_run("chatty")["id"]
    attempt_of(node, rid, "talk")
    s = follow(node, rid, "talk")
    assert s.status == 200 and s.header("Content-Type") == "text/event-stream"
    out, err, end, live = read_all(s, node, rid)
    assert out == "line1\nline2\nline3\nline4\n" and err == "oops\n", (out, err)
    assert live, "no output came while the step ran"
    assert end == {"attempt": 1, "status": "failed", "exit_code": 3, "signal": 0,
                   "reason": "exited"}, end
    assert node.wait_run(rid)["status"] == "failed"

    # once ended: what PostgreSQL stores, as the same events
    def stored():
        t = follow(node, rid, "talk")
        if t.status == 503:
            return None
        assert t.status == 200, t.body
        return t
    t = wait_for(stored, 15, "the stored log")
    out, err, end, _ = read_all(t, node, rid)
    assert (out, err) == ("line1\nline2\nline3\nline4\n", "oops\n")
    assert end["status"] == "stored" and end["attempt"] == 1, end


def test_any_node_relays_the_output_of_the_node_running_the_step(cluster):
    c = cluster(n=3)
    leader = c.leader()
    leader.deploy("chatty", flow_spec([step("talk", CHATTY)]))
    rid = leader.start_run("chatty")["id"]
    a = attempt_of(leader, rid, "talk")
    other = next(n for n in c if n.id != a["node"])
    attempt_of(other, rid, "talk")  # its view has the attempt too
    s = follow(other, rid, "talk", "&attempt=1")
    assert s.status == 200, s.body
    out, err, end, live = read_all(s, leader, rid)
    assert out == "line1\nline2\nline3\nline4\n" and err == "oops\n", (out, err)
    assert end["status"] == "failed" and end["exit_code"] == 3, end
    assert live


def test_bad_follow_input_is_a_400_and_unknown_runs_404(node):
    node.deploy("chatty", flow_spec([step("talk", "true")]))
    rid = node.start_run("chatty")["id"]
    status, out = node.get("/v1/runs/%s/steps/talk/logs?follow=yes" % rid)
    assert status == 400 and out["error"]["field"] == "follow", out
    s = h.EventStream(node.api_port, "/v1/runs/r-999999999999/steps/talk/logs?follow=true")
    assert s.status == 404, s.body
