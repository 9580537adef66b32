"""test_triggers.py - schedules, events, on-finish chains, overlap, pause,
backfill and the cron preview on real flowd processes (docs/triggers.md)."""

import time

import flowd_harness as h
from flowd_harness import flow_spec, step, wait_for


def every_second(**extra):
    s = {"cron": "* * * * * *"}
    s.update(extra)
    return s


def triggered(spec, **triggers):
    spec = dict(spec)
    spec["triggers"] = triggers
    return spec


def runs_of(node, flow):
    return node.list_runs("flow=" + flow)


def nominal_times(node, flow):
    out = []
    for r in runs_of(node, flow):
        t = r.get("trigger") or {}
        if t.get("type") == "schedule":
            out.append(t["nominal_time"])
    return out


# ---------------------------------------------------------------- validation

def test_bad_triggers_are_refused_with_the_field(node):
    cases = [
        ({"schedules": [{"cron": "0 0 31 2 *"}]}, "triggers.schedules[0].cron", "never matches"),
        ({"schedules": [{"cron": "61 * * * *"}]}, "triggers.schedules[0].cron", "outside"),
        ({"schedules": [{"cron": "* * * * *", "timezone": "Mars/Base"}]},
         "triggers.schedules[0].timezone", "unknown time zone"),
        ({"schedules": [{"cron": "* * * * *", "dst_missing": "maybe"}]},
         "triggers.schedules[0].dst_missing", "shift, skip"),
        ({"schedules": [{"cron": "* * * * *", "overlap": "sometimes"}]},
         "triggers.schedules[0].overlap", "allow_all"),
        ({"schedules": [{"cron": "* * * * *", "jitter_s": 100000}]},
         "triggers.schedules[0].jitter_s", "between"),
        ({"schedules": [{"cron": "* * * * *", "colour": "red"}]},
         "triggers.schedules[0].colour", "unknown field"),
        ({"events": [{"event": "a.b"}]}, "triggers.events[0].event", "A-Za-z0-9"),
        ({"events": [{"event": "x", "parameters": {"nope": "payload.a"}}]},
         "triggers.events[0].parameters.nope", "no parameter"),
        ({"events": [{"event": "x", "parameters": {"region": "body.a"}}]},
         "triggers.events[0].parameters.region", "payload.key"),
        ({"events": [{"all": [{"event": "a"}, {"event": "b"}]}]},
         "triggers.events[0].window_s", "window_s or reset"),
        ({"events": [{"event": "a", "window_s": 5}]}, "triggers.events[0].window_s", "all"),
        ({"on_finish": [{"flow": "up", "status": "done"}]},
         "triggers.on_finish[0].status", "succeeded, failed, any"),
        ({"on_finish": [{"status": "any"}]}, "triggers.on_finish[0].flow", "upstream"),
        ({"cron": []}, "triggers.cron", "unknown field"),
    ]
    spec = h.flow_spec([h.step("s", "true")],
                       parameters={"region": h.param("string", default="eu")})
    for trig, field, words in cases:
        status, body = node.put("/v1/flows/bad", triggered(spec, **trig))
        assert status == 400, (trig, body)
        assert body["error"]["field"] == field, (trig, body)
        assert words in body["error"]["message"], (trig, body)
    # Nothing was half-applied.
    assert node.get("/v1/flows/bad")[0] == 404


def test_cron_preview_shows_dst_choices(node):
    status, body = node.get("/v1/cron/preview?expr=30+2+*+*+*&tz=Europe/Berlin"
                            "&from=2027-03-27T00:00:00Z&count=3")
    assert status == 200, body
    assert body["times"] == ["2027-03-27T01:30:00Z", "2027-03-28T01:00:00Z",
                             "2027-03-29T00:30:00Z"]
    assert body["local_times"][1] == "2027-03-28T03:00:00+02:00"
    status, body = node.get("/v1/cron/preview?expr=30+2+*+*+*&tz=Europe/Berlin"
                            "&from=2027-03-27T00:00:00Z&count=2&dst_missing=skip")
    assert body["times"] == ["2027-03-27T01:30:00Z", "2027-03-29T00:30:00Z"]
    for query, field in [("expr=0+0+31+2+*", "expr"), ("expr=*+*+*+*+*&tz=Nowhere", "tz"),
                         ("expr=*+*+*+*+*&count=0", "count"), ("expr=*+*+*+*+*&from=yesterday", "from"),
                         ("tz=UTC", "expr")]:
        status, body = node.get("/v1/cron/preview?" + query)
        assert status == 400, (query, body)
        assert body["error"]["field"] == field, (query, body)


# ---------------------------------------------------------------- schedules

def test_a_schedule_fires_every_second_once_per_tick(node):
    node.deploy("tick", triggered(h.echo_flow(), schedules=[every_second()]))
    wait_for(lambda: len(nominal_times(node, "tick")) >= 4, 20, "four ticks")
    times = nominal_times(node, "tick")
    assert len(times) == len(set(times)), times
    status, view = node.get("/v1/flows/tick/schedule")
    assert status == 200, view
    s = view["schedules"][0]
    assert s["counters"]["fired"] >= 4
    assert len(s["next_fire_times"]) == 10
    assert s["last_fires"][0]["outcome"] == "fired"
    assert s["last_fires"][0]["run_id"].startswith("r-")
    run = node.run(s["last_fires"][0]["run_id"])
    assert run["trigger"]["type"] == "schedule"
    assert run["trigger"]["schedule"] == 0


def test_pause_records_ticks_as_skipped_and_unpause_resumes(node):
    node.deploy("p", triggered(h.echo_flow(), schedules=[every_second()]))
    wait_for(lambda: len(nominal_times(node, "p")) >= 1, 20, "a first tick")
    assert node.post("/v1/flows/p/pause")[0] == 200
    before = len(nominal_times(node, "p"))
    wait_for(lambda: node.get("/v1/flows/p/schedule")[1]["schedules"][0]["counters"]["skipped"] >= 2,
             20, "ticks skipped while paused")
    # At most one tick was already in flight when the pause committed.
    assert len(nominal_times(node, "p")) <= before + 1
    view = node.get("/v1/flows/p/schedule")[1]
    assert view["paused"] is True
    assert view["schedules"][0]["last_fires"][0]["reason"] == "the flow is paused"
    assert node.post("/v1/flows/p/unpause")[0] == 200
    n = len(nominal_times(node, "p"))
    wait_for(lambda: len(nominal_times(node, "p")) >= n + 2, 20, "ticks after unpause")


def test_backfill_creates_one_run_per_tick_once(node):
    node.deploy("bf", triggered(h.echo_flow(), schedules=[{"cron": "0 * * * *"}]))
    body = {"from": "2027-01-01T00:00:00Z", "to": "2027-01-01T05:00:00Z"}
    status, out = node.post("/v1/flows/bf/backfill", body)
    assert status == 200, out
    assert out["ticks"] == 6
    ids = [r["run_id"] for r in out["runs"]]
    assert all(ids) and len(set(ids)) == 6
    for run_id in ids:
        run = node.wait_run(run_id)
        assert run["trigger"]["type"] == "backfill"
    # Again: the same runs, none new.
    status, again = node.post("/v1/flows/bf/backfill", body)
    assert [r["run_id"] for r in again["runs"]] == ids
    status, err = node.post("/v1/flows/bf/backfill", {"from": "2027-01-02T00:00:00Z",
                                                      "to": "2027-01-01T00:00:00Z"})
    assert status == 400 and err["error"]["field"] == "to"
    status, err = node.post("/v1/flows/bf/backfill", {"from": "2020-01-01T00:00:00Z",
                                                      "to": "2027-01-01T00:00:00Z"})
    assert status == 400 and "max_backfill_runs" in err["error"]["message"]


# ---------------------------------------------------------------- events

def test_events_fill_parameters_and_duplicates_make_one_run(node):
    params = {"region": h.param("string", default="eu"), "table": h.param("string")}
    node.deploy("ev", triggered(h.flow_spec([h.step("s", "echo $FLOWD_PARAM_REGION")],
                                            parameters=params),
                                events=[{"event": "data_ready", "filter": {"table": "sales"}}]))
    node.deploy("mapped", triggered(h.flow_spec([h.step("s", "true")],
                                                parameters={"r": h.param("string")}),
                                    events=[{"event": "data_ready",
                                             "parameters": {"r": "payload.where.region"}}]))
    status, out = node.post("/v1/events", {"name": "data_ready", "id": "ev-1",
                                           "payload": {"table": "sales", "region": "us",
                                                       "where": {"region": "ap"}}})
    assert status == 201, out
    assert out["duplicate"] is False
    by_flow = {r["flow"]: r for r in out["runs"]}
    assert set(by_flow) == {"ev", "mapped"}
    run = node.wait_run(by_flow["ev"]["run_id"])
    assert run["parameters"] == {"region": "us", "table": "sales"}
    assert run["trigger"] == {"type": "event", "trigger": 0, "event_ids": ["ev-1"],
                              "events": ["data_ready"]}
    assert node.run(by_flow["mapped"]["run_id"])["parameters"] == {"r": "ap"}
    # The same id again: the original answer, no new run.
    status, dup = node.post("/v1/events", {"name": "data_ready", "id": "ev-1",
                                           "payload": {"table": "sales"}})
    assert status == 200, dup
    assert dup["duplicate"] is True
    assert dup["runs"] == out["runs"]
    # The filter does not match: only the unfiltered flow starts.
    status, out = node.post("/v1/events", {"name": "data_ready", "payload": {"table": "x"}})
    assert [r["flow"] for r in out["runs"]] == ["mapped"]
    assert out["id"].startswith("e-")
    assert len(runs_of(node, "ev")) == 1


def test_bad_events_are_refused(node):
    for body, field in [({}, "name"), ({"name": "a.b"}, "name"), ({"name": "x", "id": ""}, "id"),
                        ({"name": "x", "payload": []}, "payload"), ({"name": "x", "y": 1}, "y")]:
        status, out = node.post("/v1/events", body)
        assert status == 400, (body, out)
        assert out["error"]["field"] == field, (body, out)


def test_all_of_events_fire_once_all_arrived(node):
    node.deploy("both", triggered(
        h.flow_spec([h.step("s", "true")], parameters={"a": h.param("string"),
                                                       "b": h.param("string")}),
        events=[{"all": [{"event": "left"}, {"event": "right"}], "window_s": 60,
                 "parameters": {"a": "left.payload.v", "b": "right.payload.v"}}]))
    status, out = node.post("/v1/events", {"name": "left", "payload": {"v": "L"}})
    assert out["runs"][0]["outcome"] == "collected"
    assert out["runs"][0]["waiting_for"] == ["right"]
    status, out = node.post("/v1/events", {"name": "right", "payload": {"v": "R"}})
    assert out["runs"][0]["outcome"] == "fired", out
    run = node.wait_run(out["runs"][0]["run_id"])
    assert run["parameters"] == {"a": "L", "b": "R"}
    assert run["trigger"]["events"] == ["left", "right"]
    # The collection starts again.
    status, out = node.post("/v1/events", {"name": "right", "payload": {"v": "R2"}})
    assert out["runs"][0]["outcome"] == "collected"


# ---------------------------------------------------------------- on finish

def test_on_finish_chain_runs_once_per_upstream_run(node):
    node.deploy("a", h.echo_flow())
    node.deploy("b", triggered(h.flow_spec([h.step("s", "true")],
                                           parameters={"upstream_run_id": h.param("string")}),
                               on_finish=[{"flow": "a", "status": "succeeded"}]))
    node.deploy("c", triggered(h.echo_flow(), on_finish=[{"flow": "b", "status": "any"}]))
    node.deploy("on_fail", triggered(h.echo_flow(), on_finish=[{"flow": "a", "status": "failed"}]))
    ids = [node.start_run("a")["id"] for _ in range(3)]
    wait_for(lambda: len(runs_of(node, "c")) >= 3, 20, "three c runs")
    bs = runs_of(node, "b")
    assert sorted(r["trigger"]["upstream_run"] for r in bs) == sorted(ids)
    for b in bs:
        assert b["parameters"]["upstream_run_id"] == b["trigger"]["upstream_run"]
    cs = runs_of(node, "c")
    assert sorted(r["trigger"]["upstream_run"] for r in cs) == sorted(r["id"] for r in bs)
    assert runs_of(node, "on_fail") == []


# ---------------------------------------------------------------- overlap

def sleeper(seconds):
    return h.flow_spec([h.step("s", "sleep %s" % seconds)])


def test_overlap_skip_and_buffer_one(node):
    node.deploy("skip", triggered(sleeper(30), events=[{"event": "go", "overlap": "skip"}]))
    node.deploy("buf", triggered(sleeper(0.5), events=[{"event": "go", "overlap": "buffer_one"}]))
    outcomes = []
    for i in range(3):
        status, out = node.post("/v1/events", {"name": "go", "id": "go-%d" % i})
        outcomes.append({r["flow"]: r["outcome"] for r in out["runs"]})
    assert [o["skip"] for o in outcomes] == ["fired", "skipped", "skipped"]
    assert [o["buf"] for o in outcomes] == ["fired", "buffered", "dropped"]
    # The buffered one starts once the first has ended.
    wait_for(lambda: len(runs_of(node, "buf")) == 2, 20, "the buffered run")
    for r in runs_of(node, "buf"):
        node.wait_run(r["id"])
    assert len(runs_of(node, "skip")) == 1


def test_overlap_cancel_and_terminate_other(node):
    node.deploy("cancel", triggered(sleeper(30), events=[{"event": "c", "overlap": "cancel_other"}]))
    node.deploy("term", triggered(sleeper(30), events=[{"event": "t", "overlap": "terminate_other"}]))
    first = node.post("/v1/events", {"name": "c"})[1]["runs"][0]
    wait_for(lambda: node.run(first["run_id"])["status"] == "running", 20, "the first run")
    second = node.post("/v1/events", {"name": "c"})[1]["runs"][0]
    assert second["outcome"] in ("buffered", "fired"), second
    old = node.wait_run(first["run_id"])
    assert old["status"] == "cancelled"
    assert "cancel_other" in old["reason"]
    wait_for(lambda: len(runs_of(node, "cancel")) == 2, 20, "the newer run")

    t1 = node.post("/v1/events", {"name": "t"})[1]["runs"][0]
    wait_for(lambda: node.run(t1["run_id"])["status"] == "running", 20, "the first run")
    t2 = node.post("/v1/events", {"name": "t"})[1]["runs"][0]
    assert t2["outcome"] == "fired", t2
    assert node.wait_run(t1["run_id"])["status"] == "cancelled"


def test_max_active_runs_buffers_all_in_order(node):
    spec = triggered(sleeper(0.3), events=[{"event": "many", "overlap": "buffer_all"}])
    spec["max_active_runs"] = 2
    node.deploy("cap", spec)
    outs = [node.post("/v1/events", {"name": "many", "id": "m%d" % i})[1]["runs"][0]["outcome"]
            for i in range(6)]
    assert outs[:2] == ["fired", "fired"]
    assert outs[2:] == ["buffered"] * 4
    wait_for(lambda: len(runs_of(node, "cap")) == 6, 30, "every buffered run")
    runs = sorted(runs_of(node, "cap"), key=lambda r: r["id"])
    for r in runs:
        node.wait_run(r["id"])
    assert [r["trigger"]["event_ids"][0] for r in runs] == ["m%d" % i for i in range(6)]


def test_allow_all_has_no_limit_unless_max_active_runs_says(node):
    node.deploy("free", triggered(sleeper(30), events=[{"event": "a"}]))
    capped = triggered(sleeper(0.3), events=[{"event": "b"}])
    capped["max_active_runs"] = 1
    node.deploy("capped", capped)
    free = [node.post("/v1/events", {"name": "a"})[1]["runs"][0]["outcome"] for _ in range(3)]
    assert free == ["fired"] * 3
    outs = [node.post("/v1/events", {"name": "b"})[1]["runs"][0]["outcome"] for _ in range(3)]
    assert outs == ["fired", "buffered", "buffered"]
    wait_for(lambda: len(runs_of(node, "capped")) == 3, 20, "the buffered runs")
    for r in runs_of(node, "free"):
        node.post("/v1/runs/%s/cancel" % r["id"])


def test_events_list_newest_first_with_their_runs_and_pages(node):
    """GET /v1/events: what the dashboard's Events page shows."""
    node.deploy("on-ping", flow_spec([step("a", shell="true")],)
                | {"triggers": {"events": [{"event": "ping"}]}})
    for i in range(3):
        status, out = node.post("/v1/events", {"name": "ping", "id": "p-%d" % i,
                                               "payload": {"n": i}})
        assert status == 201, out
    status, out = node.post("/v1/events", {"name": "other", "id": "o-1"})
    assert status == 201, out
    # a duplicate id is not listed twice
    status, out = node.post("/v1/events", {"name": "ping", "id": "p-1"})
    assert status == 200 and out["duplicate"], out

    def listed():
        status, page = node.get("/v1/events?name=ping")
        assert status == 200, page
        return page if len(page["events"]) == 3 else None
    page = wait_for(listed, 15, "three ping events in PostgreSQL")
    assert [e["id"] for e in page["events"]] == ["p-2", "p-1", "p-0"]
    first = page["events"][0]
    assert first["payload"] == {"n": 2} and first["received_at"].endswith("Z")
    assert first["runs"] and first["runs"][0]["run_id"].startswith("r-"), first
    assert page["next_cursor"] is None
    status, p1 = node.get("/v1/events?limit=2")
    assert status == 200 and [e["id"] for e in p1["events"]] == ["o-1", "p-2"], p1
    status, p2 = node.get("/v1/events?limit=2&cursor=" + p1["next_cursor"])
    assert status == 200 and [e["id"] for e in p2["events"]] == ["p-1", "p-0"], p2
    for bad, field in [("name=a%20b", "name"), ("limit=0", "limit"),
                       ("cursor=12", "cursor"), ("cursor=x:y", "cursor")]:
        status, out = node.get("/v1/events?" + bad)
        assert status == 400 and out["error"]["field"] == field, (bad, out)
    status, out = node.get("/v1/events", token=None)
    assert status == 401, out
