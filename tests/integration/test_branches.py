"""test_branches.py - one flow deployed in several branches of a project
(docs/lifecycle.md): each fires on its own schedule and cursor, an on-finish
chain stays inside its branch, an event for one branch reaches only it, the
A/B compare route pairs their runs by tick, a prod branch takes a production
token, and PostgreSQL holds each run's project and branch."""

import os
import subprocess
import urllib.parse

import flowd_harness as h
from flowd_harness import READER_TOKEN, flow_spec, step, wait_for

PRODUCTION_TOKEN = "it-production-token-0123456789ab"
P = "/v1/projects/shop/branches/%s/flows/%s"


def ticker():
    spec = flow_spec([step("tick", 'echo "tick $FLOWD_FLOW $FLOWD_PROJECT $FLOWD_BRANCH"')])
    spec["triggers"] = {"schedules": [{"cron": "* * * * * *"}]}
    return spec


def report(branch=None):
    """Starts when ticker ends: in its own branch, or in `branch`."""
    spec = flow_spec([step("r", "true")],
                     parameters={"upstream_run_id": {"type": "string", "default": ""}})
    of = {"flow": "ticker", "status": "any"}
    if branch:
        of["branch"] = branch
    spec["triggers"] = {"on_finish": [of]}
    return spec


def listener():
    spec = flow_spec([step("l", "true")])
    spec["triggers"] = {"events": [{"event": "ping"}]}
    return spec


def put(node, branch, flow, spec, token=PRODUCTION_TOKEN, expect=(200, 201)):
    def done():
        r = node.put(P % (branch, flow), spec, token=token)
        if r.status == 503:
            return None
        assert r.status in expect, r
        return r
    return wait_for(done, 15, "a deploy of %s to %s" % (flow, branch), interval=0.2)


def runs(node, branch, flow):
    return node.list_runs(urllib.parse.urlencode(
        {"project": "shop", "branch": branch, "flow": flow}))


def test_branches_fire_on_their_own_and_chains_stay_inside(cluster):
    c = cluster(3, overrides={"tokens.release": "production " + PRODUCTION_TOKEN})
    leader = c.leader()

    # prod takes a production token: admin is refused, nothing deployed
    r = leader.put(P % ("prod", "ticker"), ticker())
    assert r.status == 403 and r.json["error"]["field"] == "branch", r
    assert leader.get(P % ("prod", "ticker")).status == 404
    # names are checked
    for path, field in (("/v1/projects/shop/branches/staging/flows/x", "branch"),
                        ("/v1/projects/sh%2Fop/branches/prod/flows/x", "project"),
                        ("/v1/projects/shop/branches/test./flows/x", "branch")):
        r = leader.put(path, ticker(), token=PRODUCTION_TOKEN)
        assert r.status == 400 and r.json["error"]["field"] == field, (path, r)

    for branch in ("prod", "test.exp"):
        put(leader, branch, "ticker", ticker())
        put(leader, branch, "report", report())
        put(leader, branch, "listener", listener())
    # the same name in default/main is a third, separate flow (no schedule)
    leader.deploy("ticker", flow_spec([step("tick", "true")]))
    # a chain from another branch when the trigger names it
    put(leader, "test.exp", "prod_watch", report(branch="prod"))

    got = leader.get(P % ("test.exp", "ticker")).json
    assert (got["name"], got["project"], got["branch"]) == ("ticker", "shop", "test.exp"), got
    listed = {(f["project"], f["branch"], f["name"]) for f in leader.get("/v1/flows").json["flows"]}
    assert {("shop", "prod", "ticker"), ("shop", "test.exp", "ticker"),
            ("default", "main", "ticker")} <= listed, listed

    # Both branches fire every second, each with its own cursor.
    wait_for(lambda: all(len(runs(leader, b, "ticker")) >= 3 for b in ("prod", "test.exp")),
             30, "three ticks in each branch")
    assert leader.list_runs("flow=ticker&project=default") == []
    for branch in ("prod", "test.exp"):
        ticks = runs(leader, branch, "ticker")
        nominal = [r["trigger"]["nominal_time"] for r in ticks]
        assert len(nominal) == len(set(nominal)), nominal  # each tick once per branch
        for r in ticks:
            assert (r["project"], r["branch"], r["flow"]) == ("shop", branch, "ticker"), r
            assert "branch:" + branch in r["system_tags"] and "project:shop" in r["system_tags"]
        sched = leader.get(P % (branch, "ticker") + "/schedule").json
        assert sched["schedules"][0]["counters"]["fired"] >= 3, sched

    # on-finish: each report answers a ticker run of its own branch
    wait_for(lambda: all(len(runs(leader, b, "report")) >= 2 for b in ("prod", "test.exp")),
             30, "reports in each branch")
    for branch in ("prod", "test.exp"):
        own = {r["id"] for r in runs(leader, branch, "ticker")}
        for r in runs(leader, branch, "report"):
            assert r["trigger"]["upstream_run"] in own, (branch, r)
    wait_for(lambda: len(runs(leader, "test.exp", "prod_watch")) >= 1, 30, "the cross-branch chain")
    prod_ticks = {r["id"] for r in runs(leader, "prod", "ticker")}
    for r in runs(leader, "test.exp", "prod_watch"):
        assert r["trigger"]["upstream_run"] in prod_ticks, r

    # A/B: the two branches' runs of one tick, paired
    def paired():
        r = leader.get("/v1/projects/shop/flows/ticker/compare?branches=prod,test.exp")
        assert r.status == 200, r
        return r.json["pairs"] or None
    pairs = wait_for(paired, 30, "a pair of runs of one tick")
    for p in pairs:
        assert p["by"] == "tick" and set(p["runs"]) == {"prod", "test.exp"}, p
        ids = {p["runs"][b]["run_id"] for b in ("prod", "test.exp")}
        assert len(ids) == 2
    r = leader.get("/v1/projects/shop/flows/ticker/compare?branches=prod")
    assert r.status == 400 and r.json["error"]["field"] == "branches", r

    # the change stream names a branch's flow by its key
    stream = h.EventStream(leader.api_port, "/v1/watch?flow=shop/prod/ticker")
    evs = stream.until(lambda e: e["event"] == "run", what="a prod ticker run event")
    assert {e["data"]["flow"] for e in evs if e["event"] == "run"} == {"shop/prod/ticker"}, evs
    stream.close()

    # pausing one branch leaves the other firing
    assert leader.post(P % ("test.exp", "ticker") + "/pause").status == 200
    paused_at = len(runs(leader, "test.exp", "ticker"))
    prod_at = len(runs(leader, "prod", "ticker"))
    wait_for(lambda: len(runs(leader, "prod", "ticker")) >= prod_at + 3, 30, "prod going on")
    assert len(runs(leader, "test.exp", "ticker")) <= paused_at + 1  # one in flight at most

    # an event for one branch reaches only that branch; without one, every branch
    r = leader.post("/v1/events", {"name": "ping", "project": "shop", "branch": "prod"})
    assert r.status == 201, r
    assert [x["flow"] for x in r.json["runs"]] == ["shop/prod/listener"], r.json
    r = leader.post("/v1/events", {"name": "ping"})
    assert sorted(x["flow"] for x in r.json["runs"]) == \
        ["shop/prod/listener", "shop/test.exp/listener"], r.json
    r = leader.post("/v1/events", {"name": "ping", "branch": "staging"})
    assert r.status == 400 and r.json["error"]["field"] == "branch", r
    assert len(runs(leader, "prod", "listener")) == 2
    assert len(runs(leader, "test.exp", "listener")) == 1

    # a run started through a branch's route, read back from any node
    r = leader.post(P % ("test.exp", "ticker") + "/runs", {}, token=PRODUCTION_TOKEN)
    assert r.status == 201 and r.json["branch"] == "test.exp", r
    follower = next(n for n in c.nodes if n is not leader)
    wait_for(lambda: follower.get("/v1/runs/" + r.json["id"], token=READER_TOKEN).status == 200,
             10, "the run on a follower")
    page = follower.get(P % ("test.exp", "ticker") + "/runs?limit=1", token=READER_TOKEN).json
    assert page["runs"][0]["branch"] == "test.exp", page

    # a step knows its flow, project and branch; flowctl resume --local of
    # a branch's run runs that branch's spec
    run = runs(leader, "test.exp", "ticker")[-1]

    def logs():
        r = leader.get("/v1/runs/%s/steps/tick/logs" % run["id"])
        return r.json if r.status == 200 else None
    assert wait_for(logs, 30, "the tick's log")["stdout"] == "tick ticker shop test.exp\n"
    local = subprocess.run(
        [os.path.join(h.BUILD, "flowctl"), "--url", leader.url, "--token", READER_TOKEN,
         "resume", run["id"], "--local", "--from", "tick",
         "--dir", os.path.join(c.dir, "laptop")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=h.scaled(60))
    assert local.returncode == 0, (local.stdout, local.stderr)
    assert "tick ticker shop test.exp" in local.stdout, local.stdout

    # a production token deploys to prod through a follower too (forwarded)
    r = follower.put(P % ("prod", "later"), ticker(), token=PRODUCTION_TOKEN)
    assert r.status == 201, r
    assert follower.put(P % ("prod", "later2"), ticker()).status == 403
    assert leader.post(P % ("prod", "later") + "/pause", token=PRODUCTION_TOKEN).status == 200

    # undeploying from prod takes the production token too
    assert leader.delete(P % ("prod", "listener")).status == 403
    assert leader.delete(P % ("prod", "listener"), token=PRODUCTION_TOKEN).status == 200

    # PostgreSQL: project and branch of each run; older rows default/main
    for n in c.nodes:
        n.wait_db_caught_up()
    rows = c.db.psql("SELECT DISTINCT project, branch, flow_name FROM runs "
                     "WHERE flow_name = 'ticker' ORDER BY 1, 2")
    assert rows == [["shop", "prod", "ticker"], ["shop", "test.exp", "ticker"]], rows
    rows = c.db.psql("SELECT project, branch FROM flows WHERE name = 'ticker'")
    assert rows == [["default", "main"]], rows
