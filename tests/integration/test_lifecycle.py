"""test_lifecycle.py - a run's life after it ended (docs/lifecycle.md): user
and system tags queried from memory and from PostgreSQL with the same
answer; resume that reuses the steps that succeeded (a witness file proves
each ran once across runs); redrive in place; a resume's idempotency key
across a leader kill."""

import json
import os
import subprocess
import urllib.parse

import flowd_harness as h
from flowd_harness import READER_TOKEN, flow_spec, sh_quote, step, steps_by_name, wait_for


def read_lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.split() for line in f.read().splitlines() if line]


def fixable_diamond(out, d_retries=None):
    """a -> (b, c) -> d. Each step appends "<run id> <step>" to out/witness
    when it succeeds; d first reads out/fix, which does not exist until the
    test makes it, so d fails until then."""
    witness = sh_quote(os.path.join(out, "witness"))
    ok = 'echo "$FLOWD_RUN_ID $FLOWD_STEP" >> ' + witness
    fix = sh_quote(os.path.join(out, "fix"))
    return flow_spec([
        step("a", ok),
        step("b", ok, depends_on=["a"]),
        step("c", ok, depends_on=["a"]),
        step("d", "cat " + fix + " && " + ok, depends_on=["b", "c"], retries=d_retries),
    ])


def failed_diamond(node, out, name="diamond", d_retries=None):
    """Deploy the fixable diamond and run it to its failure at d."""
    node.deploy(name, fixable_diamond(out, d_retries))
    run = node.wait_run(node.start_run(name)["id"])
    assert run["status"] == "failed", run
    steps = steps_by_name(run)
    assert [steps[s]["status"] for s in "abcd"] == ["succeeded"] * 3 + ["failed"], steps
    return run


def ids(runs):
    return [r["id"] for r in runs]


def query(node, *tags, **kw):
    q = urllib.parse.urlencode([("tag", t) for t in tags] + list(kw.items()))
    return node.list_runs(q)


# ---------------------------------------------------------------------------
# Tags


def test_tags_are_set_changed_and_queried_the_same_from_memory_and_postgres(cluster, workdir):
    node = cluster(1, overrides={"limits.runs_in_memory": "3"})[0]
    spec = h.echo_flow("tagged")
    spec["tags"] = ["nightly", "team:data"]
    node.deploy("tagged", spec)
    assert node.get("/v1/flows/tagged")[1]["spec"]["tags"] == ["nightly", "team:data"]

    status, a = node.post("/v1/flows/tagged/runs", {"tags": ["exp-1", "zeta"]})
    assert status == 201, a
    assert a["tags"] == ["exp-1", "nightly", "team:data", "zeta"], a
    assert a["system_tags"] == ["project:default", "branch:main", "flow:tagged",
                                "version:1", "trigger:manual"], a
    status, b = node.post("/v1/flows/tagged/runs", {"tags": ["exp-2"]})
    assert status == 201, b
    c = node.start_run("tagged")
    assert c["tags"] == ["nightly", "team:data"], c
    for r in (a, b, c):
        node.wait_run(r["id"])

    # add then remove, idempotent; the answer is the run
    status, got = node.post("/v1/runs/%s/tags" % a["id"],
                            {"add": ["keep", "exp-3"], "remove": ["exp-1", "absent"]})
    assert status == 200, got
    assert got["tags"] == ["exp-3", "keep", "nightly", "team:data", "zeta"], got
    status, again = node.post("/v1/runs/%s/tags" % a["id"],
                              {"add": ["keep"], "remove": ["exp-1"]})
    assert (status, again["tags"]) == (200, got["tags"]), again

    # bad input: 400 naming the field, nothing changes
    for body, field in (({"add": ["flow:other"]}, "add"),
                        ({"add": [""]}, "add"),
                        ({"add": ["x" * 129]}, "add"),
                        ({"add": [7]}, "add"),
                        ({"remove": ["flow:tagged"]}, "remove[0]"),
                        ({"add": "one"}, "add"),
                        ({"other": 1}, "other")):
        status, err = node.post("/v1/runs/%s/tags" % a["id"], body)
        assert status == 400, (body, status, err)
        assert err["error"]["field"] == field, (body, err)
    status, err = node.post("/v1/runs/%s/tags" % a["id"],
                            {"add": ["t%d" % i for i in range(60)]})
    assert status == 400 and err["error"]["code"] == "too_many_tags", err
    status, err = node.post("/v1/runs/r-000000999999/tags", {"add": ["x"]})
    assert status == 404, err
    # a reader may not tag
    status, err = node.post("/v1/runs/%s/tags" % a["id"], {"add": ["x"]}, token=READER_TOKEN)
    assert status == 403, err
    assert node.run(a["id"])["tags"] == got["tags"]

    queries = [("nightly",), ("keep",), ("nightly", "exp-2"), ("flow:tagged",),
               ("trigger:manual", "zeta"), ("team:data", "version:1"), ("project:default", "branch:main", "nightly"),
               ("absent",), ("exp-1",)]
    before = {q: ids(query(node, *q)) for q in queries}
    assert before[("nightly",)] == [c["id"], b["id"], a["id"]], before
    assert before[("keep",)] == [a["id"]]
    assert before[("nightly", "exp-2")] == [b["id"]]
    assert before[("flow:tagged",)] == [c["id"], b["id"], a["id"]]
    assert before[("trigger:manual", "zeta")] == [a["id"]]
    assert before[("absent",)] == [] and before[("exp-1",)] == []
    # paginated: one run a page
    assert ids(node.list_runs("tag=nightly", page_limit=1)) == before[("nightly",)]
    status, err = node.get("/v1/runs?tag=" + urllib.parse.quote("bad\x01tag"))
    assert status == 400 and err["error"]["field"] == "tag", err

    # Three newer runs push a, b and c out of memory: PostgreSQL answers.
    node.deploy("other", h.echo_flow("other"))
    for _ in range(4):
        node.wait_run(node.start_run("other")["id"])
    node.wait_db_caught_up()
    status, err = node.post("/v1/runs/%s/tags" % a["id"], {"add": ["late"]})
    assert (status, err["error"]["code"]) == (409, "run_not_in_memory"), err
    after = {q: ids(query(node, *q)) for q in queries}
    assert after == before
    assert ids(node.list_runs("tag=nightly", page_limit=1)) == before[("nightly",)]
    old = node.run(a["id"])  # from PostgreSQL
    assert old["tags"] == got["tags"] and old["system_tags"] == a["system_tags"], old
    assert old["origin_run_id"] is None and old["redrive_count"] == 0, old
    rows = cluster_db(node).psql("SELECT tags FROM runs WHERE id = '%s'" % a["id"])
    assert rows == [["{exp-3,keep,nightly,team:data,zeta}"]], rows


def cluster_db(node):
    return node.cluster.db


# ---------------------------------------------------------------------------
# Resume


def test_resume_reuses_what_succeeded_and_reruns_from_a_step(node, workdir):
    out = h.fresh_dir(os.path.join(workdir, "out"))
    origin = failed_diamond(node, out)
    assert sorted(read_lines(os.path.join(out, "witness"))) == \
        sorted([[origin["id"], s] for s in "abc"])

    # Not yet fixed: the resume fails at d again, reusing a, b and c.
    status, first = node.post("/v1/runs/%s/resume" % origin["id"], {"tags": ["retry"]})
    assert status == 201, first
    assert first["origin_run_id"] == origin["id"], first
    assert first["trigger"] == {"type": "resume", "run_id": origin["id"]}, first
    assert "origin:" + origin["id"] in first["system_tags"], first
    assert "trigger:resume" in first["system_tags"], first
    first = node.wait_run(first["id"])
    assert first["status"] == "failed", first

    # Fixed: resume the resume; the reused steps still point at the
    # attempts that ran them.
    with open(os.path.join(out, "fix"), "w") as f:
        f.write("fixed\n")
    status, second = node.post("/v1/runs/%s/resume" % first["id"], {})
    assert status == 201, second
    second = node.wait_run(second["id"])
    assert second["status"] == "succeeded", second
    steps = steps_by_name(second)
    for s in "abc":
        assert steps[s]["status"] == "reused", steps[s]
        assert steps[s]["attempts"] == [], steps[s]
        assert steps[s]["reused_from"] == {"run_id": origin["id"], "attempt": 1}, steps[s]
    assert steps["d"]["status"] == "succeeded" and steps["d"]["reused_from"] is None
    assert second["tags"] == ["retry"], second  # the origin's user tags carry on

    # Each step that succeeded ran exactly once across the three runs.
    witness = read_lines(os.path.join(out, "witness"))
    assert sorted(s for _, s in witness) == ["a", "b", "c", "d"], witness
    assert [r for r, s in witness if s == "d"] == [second["id"]]

    # from_step: b and what depends on it run again; a and c are reused.
    status, third = node.post("/v1/runs/%s/resume" % second["id"], {"from_step": "b"})
    assert status == 201, third
    third = node.wait_run(third["id"])
    assert third["status"] == "succeeded", third
    steps = steps_by_name(third)
    assert {s: steps[s]["status"] for s in "abcd"} == \
        {"a": "reused", "b": "succeeded", "c": "reused", "d": "succeeded"}
    assert steps["d"]["attempts"][0]["status"] == "succeeded"
    witness = read_lines(os.path.join(out, "witness"))
    assert sorted(s for _, s in witness) == ["a", "b", "b", "c", "d", "d"], witness

    # The origin's resumes, by its system tag.
    assert ids(query(node, "origin:" + origin["id"])) == [first["id"]]

    # Refusals, each naming its field.
    for body, code, field, want in (
            ({"from_step": "nope"}, "invalid_value", "from_step", 400),
            ({"version": "latest"}, "invalid_value", "version", 400),
            ({}, "nothing_to_resume", "from_step", 409)):
        status, err = node.post("/v1/runs/%s/resume" % second["id"], body)
        assert (status, err["error"]["code"], err["error"]["field"]) == (want, code, field), \
            (body, err)

    # version current: allowed while the reused steps are unchanged ...
    spec = fixable_diamond(out)
    spec["steps"][3]["timeout_s"] = 30  # d changes; d runs again anyway
    node.deploy("diamond", spec)
    status, cur = node.post("/v1/runs/%s/resume" % origin["id"], {"version": "current"})
    assert status == 201 and cur["version"] == 2, cur
    assert node.wait_run(cur["id"])["status"] == "succeeded"
    # ... and refused with the step named once one of them changed
    spec["steps"][1]["shell"] = spec["steps"][1]["shell"] + " # v3"
    node.deploy("diamond", spec)
    status, err = node.post("/v1/runs/%s/resume" % origin["id"], {"version": "current"})
    assert status == 409 and err["error"]["code"] == "step_changed", err
    assert "step b " in err["error"]["message"], err

    # PostgreSQL holds the links.
    node.wait_db_caught_up()
    rows = node.cluster.db.psql(
        "SELECT step, status, origin_run_id, origin_attempt FROM steps "
        "WHERE run_id = '%s' ORDER BY step" % second["id"])
    assert rows == [["a", "reused", origin["id"], "1"], ["b", "reused", origin["id"], "1"],
                    ["c", "reused", origin["id"], "1"], ["d", "succeeded", None, None]], rows
    rows = node.cluster.db.psql(
        "SELECT origin_run_id FROM runs WHERE id = '%s'" % first["id"])
    assert rows == [[origin["id"]]], rows


def test_a_running_run_is_neither_resumed_nor_redriven(node, workdir):
    pids = h.fresh_dir(os.path.join(workdir, "pids"))
    node.deploy("nap", h.sleeper_flow(pids, 30))
    run = node.start_run("nap")
    for verb in ("resume", "redrive"):
        status, err = node.post("/v1/runs/%s/%s" % (run["id"], verb), {})
        assert (status, err["error"]["code"]) == (409, "run_active"), (verb, err)
    assert node.post("/v1/runs/%s/cancel" % run["id"])[0] == 200


# ---------------------------------------------------------------------------
# Redrive


def test_redrive_restarts_the_failed_run_in_place(node, workdir):
    out = h.fresh_dir(os.path.join(workdir, "out"))
    run = failed_diamond(node, out)
    with open(os.path.join(out, "fix"), "w") as f:
        f.write("fixed\n")

    status, got = node.post("/v1/runs/%s/redrive" % run["id"], {"idempotency_key": "rd-1"})
    assert status == 200, got
    assert got["id"] == run["id"] and got["redrive_count"] == 1, got
    done = node.wait_run(run["id"])
    assert done["status"] == "succeeded" and done["reason"] is None, done
    steps = steps_by_name(done)
    for s in "abc":
        assert len(steps[s]["attempts"]) == 1, steps[s]
    assert [a["status"] for a in steps["d"]["attempts"]] == ["failed", "succeeded"], steps["d"]
    assert steps["d"]["attempts"][1]["attempt"] == 2
    witness = read_lines(os.path.join(out, "witness"))
    assert sorted(s for _, s in witness) == ["a", "b", "c", "d"], witness

    # the same key again: the same answer, nothing redriven twice
    status, again = node.post("/v1/runs/%s/redrive" % run["id"], {"idempotency_key": "rd-1"})
    assert status == 200 and again["redrive_count"] == 1, again
    # a run that succeeded is not redriven
    status, err = node.post("/v1/runs/%s/redrive" % run["id"], {})
    assert (status, err["error"]["code"]) == (409, "run_succeeded"), err

    node.wait_db_caught_up()
    rows = node.cluster.db.psql(
        "SELECT status, redrive_count FROM runs WHERE id = '%s'" % run["id"])
    assert rows == [["succeeded", "1"]], rows
    rows = node.cluster.db.psql(
        "SELECT attempt, status FROM attempts WHERE run_id = '%s' AND step = 'd' "
        "ORDER BY attempt" % run["id"])
    assert rows == [["1", "failed"], ["2", "succeeded"]], rows


# ---------------------------------------------------------------------------
# Exactly once across a leader kill


def test_a_resume_retried_with_its_key_across_a_leader_kill_makes_one_run(cluster, workdir):
    c = cluster(3)
    leader = c.leader()
    out = h.fresh_dir(os.path.join(workdir, "out"))
    # d may be lost with the leader: a lost attempt is retried
    origin = failed_diamond(leader, out, d_retries=3)
    with open(os.path.join(out, "fix"), "w") as f:
        f.write("fixed\n")
    follower = next(n for n in c.nodes if n is not leader)
    status, first = follower.post("/v1/runs/%s/resume" % origin["id"],
                                  {"idempotency_key": "resume-1"})
    assert status == 201, first

    assert leader.kill9() == -9
    survivors = [n for n in c.nodes if n is not leader]
    wait_for(lambda: next((n for n in survivors
                           if n.cluster_info().get("role") == "leader"), None),
             30, "a new leader", ignore=(OSError,))
    for n in survivors:
        def retried():
            status, body = n.post("/v1/runs/%s/resume" % origin["id"],
                                  {"idempotency_key": "resume-1"})
            return body if status in (200, 201) else None
        again = wait_for(retried, 30, "the retried resume through node %d" % n.id)
        assert again["id"] == first["id"], (again, first)
    done = survivors[0].wait_run(first["id"], timeout=60)
    assert done["status"] == "succeeded", done
    assert ids(query(survivors[0], "origin:" + origin["id"])) == [first["id"]]
    for n in survivors:
        n.wait_db_caught_up()
    rows = c.db.psql("SELECT count(*) FROM runs WHERE origin_run_id = '%s'" % origin["id"])
    assert rows == [["1"]], rows


# ---------------------------------------------------------------------------
# flowctl: tag, resume, redrive, and resume --local


def flowctl(node, *args, token=h.ADMIN_TOKEN, cwd=None, timeout=120):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWD_")}
    return subprocess.run([os.path.join(h.BUILD, "flowctl"), "--url", node.url,
                           "--token", token, "-o", "json"] + [str(a) for a in args],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env, cwd=cwd, timeout=h.scaled(timeout))


def test_flowctl_resume_local_reruns_a_failed_run_here_and_writes_nothing(node, workdir):
    out = h.fresh_dir(os.path.join(workdir, "out"))
    work = h.fresh_dir(os.path.join(out, "work"))
    spec = fixable_diamond(out)
    spec["parameters"] = {"region": {"type": "string", "default": "eu"}}
    d = spec["steps"][3]
    d["workdir"] = work
    d["env"] = {"GREETING": "hello"}
    d["shell"] = ('cat %s && echo "$FLOWD_PARAM_REGION $FLOWD_STEP $FLOWD_ATTEMPT $GREETING '
                  '$FLOWD_TRIGGER" > d.out && echo "$FLOWD_RUN_ID $FLOWD_STEP" >> %s'
                  % (sh_quote(os.path.join(out, "fix")), sh_quote(os.path.join(out, "witness"))))
    node.deploy("prod_etl", spec)
    run = node.wait_run(node.start_run("prod_etl", {"region": "us"})["id"])
    assert run["status"] == "failed", run
    node.wait_db_caught_up()
    runs_before = ids(node.list_runs())
    audit_before = node.cluster.db.psql("SELECT count(*) FROM audit")
    local = os.path.join(workdir, "laptop")

    # not fixed yet: d fails here too, and the exit status says so
    r = flowctl(node, "resume", run["id"], "--local", "--dir", local, token=READER_TOKEN)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "-- d failed" in r.stdout, r.stdout

    with open(os.path.join(out, "fix"), "w") as f:
        f.write("fixed\n")
    r = flowctl(node, "resume", run["id"], "--local", "--dir", local, token=READER_TOKEN)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    assert "fixed" in r.stdout  # the step's own output, live
    lines = {line.split()[0]: line.split()[1] for line in r.stdout.splitlines()
             if len(line.split()) == 4 and line.split()[0] in "abcd"}
    assert lines == {"a": "reused", "b": "reused", "c": "reused", "d": "succeeded"}, r.stdout
    # the environment a node gives the step, its workdir inside --dir
    with open(os.path.join(local, work.lstrip("/"), "d.out")) as f:
        got = f.read().split(" ", 4)
    assert got[:4] == ["us", "d", "1", "hello"], got  # each local resume counts from 1
    assert json.loads(got[4]) == {"type": "local_resume", "run_id": run["id"]}, got
    witness = read_lines(os.path.join(out, "witness"))
    assert sorted(s for _, s in witness) == ["a", "b", "c", "d"], witness

    # --from b: b and d run again here
    r = flowctl(node, "resume", run["id"], "--local", "--from", "b", "--dir", local,
                token=READER_TOKEN)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    witness = read_lines(os.path.join(out, "witness"))
    assert sorted(s for _, s in witness) == ["a", "b", "b", "c", "d", "d"], witness
    r = flowctl(node, "resume", run["id"], "--local", "--from", "nope", "--dir", local)
    assert r.returncode == 64 and "no step nope" in r.stderr, r.stderr

    # the cluster did not change
    node.wait_db_caught_up()
    assert ids(node.list_runs()) == runs_before
    assert node.cluster.db.psql("SELECT count(*) FROM audit") == audit_before
    assert node.run(run["id"])["status"] == "failed"

    # --record BRANCH: the local result as a run of that (non-prod) branch
    r = flowctl(node, "resume", run["id"], "--local", "--dir", local, "--record", "prod")
    assert r.returncode == 64 and "prod" in r.stderr, r.stderr
    r = flowctl(node, "resume", run["id"], "--local", "--dir", local, "--record", "user.me")
    assert r.returncode == 1 and "404" in r.stderr, (r.stdout, r.stderr)  # not deployed there
    status, _ = node.put("/v1/projects/default/branches/user.me/flows/prod_etl", spec)
    assert status == 201
    r = flowctl(node, "resume", run["id"], "--local", "--dir", local, "--record", "user.me",
                token=h.ADMIN_TOKEN)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    recorded = r.stdout.strip().splitlines()[-1].split()[-4]
    got = node.run(recorded)
    assert (got["branch"], got["status"], got["origin_run_id"]) == \
        ("user.me", "succeeded", run["id"]), got
    assert got["trigger"] == {"type": "local_resume", "run_id": run["id"]}, got
    steps = steps_by_name(got)
    assert [steps[s]["status"] for s in "abcd"] == ["reused"] * 3 + ["succeeded"], steps
    assert steps["a"]["reused_from"] == {"run_id": run["id"], "attempt": 1}, steps["a"]
    # a record that does not fit the flow is refused, naming the field
    status, err = node.post("/v1/projects/default/branches/user.me/flows/prod_etl/records",
                            {"origin_run_id": run["id"], "steps": [
                                {"name": "d", "status": "succeeded"}]})
    assert status == 400 and err["error"]["field"] == "steps", err

    # and the cluster-side commands
    r = flowctl(node, "tag", run["id"], "--add", "looked-at", "--add", "laptop")
    assert ok(r)["tags"] == ["laptop", "looked-at"], r.stdout
    r = flowctl(node, "runs", "--tag", "laptop", "--tag", "flow:prod_etl")
    assert ids(ok(r)["runs"]) == [run["id"]], r.stdout
    r = flowctl(node, "redrive", run["id"], "--key", "k1", "--wait")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert json.loads(r.stdout)["redrive_count"] == 1
    r = flowctl(node, "resume", run["id"], "--from", "c", "--wait")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert json.loads(r.stdout)["origin_run_id"] == run["id"]
    r = flowctl(node, "resume", run["id"], "--local", "--key", "x")
    assert r.returncode == 64, r.stderr


def ok(r):
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return json.loads(r.stdout)
