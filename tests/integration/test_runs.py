"""test_runs.py - runs on one node: a parameterized diamond DAG, retries,
timeouts, cancellation, idempotency keys, logs, and listing runs."""

import os

import flowd_harness as h
from flowd_harness import (READER_TOKEN, diamond_flow, echo_flow, failing_flow, flow_spec,
                           pid_alive, read_pid, sleeper_flow, step, steps_by_name, wait_for)


def read(path):
    with open(path) as f:
        return f.read()


def test_diamond_flow_with_parameters_succeeds_and_each_step_sees_them(node, workdir):
    out = h.fresh_dir(os.path.join(workdir, "out"))
    node.deploy("diamond", diamond_flow(out))

    status, run = node.post("/v1/flows/diamond/runs", {"parameters": {"region": "eu-west"}})
    assert status == 201, run
    assert run["status"] in ("queued", "running", "succeeded")
    assert run["flow"] == "diamond" and run["version"] == 1
    assert run["parameters"] == {"region": "eu-west", "count": 3}  # the default filled in
    run_id = run["id"]

    run = node.wait_run(run_id)
    assert run["status"] == "succeeded", run
    assert run["reason"] is None
    assert run["started_at"] and run["finished_at"] and run["created_at"] <= run["finished_at"]

    steps = steps_by_name(run)
    assert sorted(steps) == ["a", "b", "c", "d"]
    assert steps["a"]["depends_on"] == []
    assert sorted(steps["d"]["depends_on"]) == ["b", "c"]
    for name, s in steps.items():
        assert s["status"] == "succeeded", s
        assert len(s["attempts"]) == 1, s
        a = s["attempts"][0]
        assert (a["attempt"], a["status"], a["exit_code"], a["reason"], a["node"]) == \
            (1, "succeeded", 0, "exited", 1), a
        assert read(os.path.join(out, name + ".out")).split() == ["eu-west", "3", run_id, name, "1"]
    # the DAG order: b and c after a, d after both
    for name in ("b", "c"):
        assert steps[name]["started_at"] >= steps["a"]["finished_at"]
        assert steps["d"]["started_at"] >= steps[name]["finished_at"]

    # a log reaches PostgreSQL a moment after the run reads as finished
    logs = wait_logs(node, "/v1/runs/%s/steps/b/logs" % run_id, token=READER_TOKEN)
    assert (logs["run_id"], logs["step"], logs["attempt"]) == (run_id, "b", 1)
    assert logs["stdout"] == "step b region=eu-west\n"
    assert logs["stderr"] == "" and logs["truncated"] is False

    logs = wait_logs(node, "/v1/runs/%s/steps/d/logs?attempt=1" % run_id)
    assert logs["stdout"] == "step d region=eu-west\n", logs


def wait_logs(node, path, **kw):
    """GET a step's log, polling while the answer is 503 not_stored_yet."""
    def got():
        status, body = node.get(path, **kw)
        if status == 503 and body.get("error", {}).get("code") == "not_stored_yet":
            return None
        assert status == 200, (status, body)
        return body
    return wait_for(got, h.scaled(30), "the log of " + path)


def test_a_log_postgresql_does_not_hold_yet_is_503_not_stored_yet_then_200(node, db):
    """The run reads as succeeded from the view before the PostgreSQL writer
    stores its log: the log is then 503 with Retry-After (it is coming), not
    404 (there is none). A lock on task_logs holds the writer back."""
    node.deploy("hello", echo_flow())
    node.wait_db_caught_up()
    with h.table_locked(db, "task_logs"):
        run_id = node.start_run("hello")["id"]
        assert node.wait_run(run_id)["status"] == "succeeded"
        r = node.get("/v1/runs/%s/steps/only/logs" % run_id)
        assert r.status == 503, r
        assert r.json["error"]["code"] == "not_stored_yet", r.json
        assert r.header("Retry-After") == "1"
        # a step or an attempt the run does not have is still 404
        assert node.get("/v1/runs/%s/steps/nope/logs" % run_id).status == 404
        assert node.get("/v1/runs/%s/steps/only/logs?attempt=2" % run_id).status == 404
    logs = wait_logs(node, "/v1/runs/%s/steps/only/logs" % run_id)
    assert logs["stdout"] == "hello\n", logs


def test_logs_of_unknown_step_or_attempt_are_404_and_a_bad_attempt_is_400(node):
    node.deploy("hello", echo_flow())
    run = node.wait_run(node.start_run("hello")["id"])
    for path in ("/steps/nope/logs", "/steps/only/logs?attempt=9"):
        status, body = node.get("/v1/runs/%s%s" % (run["id"], path))
        assert status == 404 and body["error"]["code"] == "not_found", (path, status, body)
    status, body = node.get("/v1/runs/%s/steps/only/logs?attempt=x" % run["id"])
    assert status == 400 and body["error"]["code"] == "invalid_query", body


def test_failing_step_is_retried_and_then_succeeds(node, workdir):
    marker = os.path.join(workdir, "failed-once")
    q = h.sh_quote(marker)
    node.deploy("flaky", flow_spec([step(
        "flaky",
        "if [ -e %s ]; then echo second try; else touch %s; echo first try fails >&2; exit 3; fi" % (q, q),
        retries=2, backoff_s=0)]))

    run = node.wait_run(node.start_run("flaky")["id"])
    assert run["status"] == "succeeded", run
    s = steps_by_name(run)["flaky"]
    assert s["status"] == "succeeded"
    assert [(a["attempt"], a["status"], a["exit_code"]) for a in s["attempts"]] == \
        [(1, "failed", 3), (2, "succeeded", 0)], s["attempts"]
    assert s["attempts"][0]["reason"] == "exited"

    # (a log reaches PostgreSQL a moment after the run reads as finished)
    logs = wait_logs(node, "/v1/runs/%s/steps/flaky/logs?attempt=1" % run["id"])
    assert logs["stderr"] == "first try fails\n", logs
    logs = wait_logs(node, "/v1/runs/%s/steps/flaky/logs" % run["id"])  # the last attempt
    assert logs["attempt"] == 2 and logs["stdout"] == "second try\n", logs


def test_step_failing_every_attempt_fails_the_run_and_its_dependents_never_start(node):
    node.deploy("broken", failing_flow(retries=1))
    run = node.wait_run(node.start_run("broken")["id"])
    assert run["status"] == "failed", run
    assert run["reason"], run
    steps = steps_by_name(run)
    assert steps["boom"]["status"] == "failed"
    assert [a["status"] for a in steps["boom"]["attempts"]] == ["failed", "failed"]
    assert steps["after"]["status"] in ("skipped", "cancelled"), steps["after"]
    assert steps["after"]["attempts"] == []


def test_step_past_its_timeout_is_killed_and_fails_the_run(node, workdir):
    pids = h.fresh_dir(os.path.join(workdir, "pids"))
    node.deploy("slow", sleeper_flow(pids, 30, timeout_s=1))
    run_id = node.start_run("slow")["id"]

    run = node.wait_run(run_id, timeout=20)  # 1 s timeout + kill grace, far below 30 s
    assert run["status"] == "failed", run
    s = steps_by_name(run)["nap"]
    assert s["status"] == "failed"
    assert len(s["attempts"]) == 1
    a = s["attempts"][0]
    assert a["status"] == "failed" and a["reason"] == "timeout", a
    assert a["signal"] in (15, 9), a
    assert a["exit_code"] is None, a
    pid = read_pid(os.path.join(pids, "1.pid"))
    assert pid is not None
    wait_for(lambda: not pid_alive(pid), 5, "the timed-out sleep (pid %d) to be gone" % pid)


def test_cancel_stops_a_sleeping_step(node, workdir):
    pids = h.fresh_dir(os.path.join(workdir, "pids"))
    node.deploy("slow", sleeper_flow(pids, 60))
    run_id = node.start_run("slow")["id"]
    pidfile = os.path.join(pids, "1.pid")
    pid = wait_for(lambda: read_pid(pidfile), 10, "the step to write its pid")
    assert pid_alive(pid)
    node.wait_run(run_id, statuses=("running",))

    status, run = node.post("/v1/runs/%s/cancel" % run_id)
    assert status == 200, run
    assert run["status"] == "cancelled", run

    wait_for(lambda: not pid_alive(pid), 10, "the cancelled sleep (pid %d) to be gone" % pid)
    run = node.wait_run(run_id)
    assert run["status"] == "cancelled" and run["finished_at"], run
    s = steps_by_name(run)["nap"]
    assert s["status"] == "cancelled", s
    # The run is cancelled at once; its attempt ends when the process is gone
    # and that outcome has committed (docs/design.md).
    wait_for(lambda: steps_by_name(node.run(run_id))["nap"]["attempts"][-1]["status"] == "cancelled",
             10, "the attempt to be marked cancelled")

    status, body = node.post("/v1/runs/%s/cancel" % run_id)
    assert status == 409 and body["error"]["code"] == "run_finished", body


def test_cancelling_a_finished_run_is_409_and_changes_nothing(node):
    node.deploy("hello", echo_flow())
    run = node.wait_run(node.start_run("hello")["id"])
    status, body = node.post("/v1/runs/%s/cancel" % run["id"])
    assert status == 409 and body["error"]["code"] == "run_finished", body
    assert node.run(run["id"]) == run


def test_idempotency_key_returns_the_same_run(node):
    node.deploy("hello", echo_flow())
    status, first = node.post("/v1/flows/hello/runs", {"idempotency_key": "order-42"})
    assert status == 201, first
    assert first["idempotency_key"] == "order-42"
    status, again = node.post("/v1/flows/hello/runs", {"idempotency_key": "order-42"})
    assert status == 200, again
    assert again["id"] == first["id"]

    other = node.start_run("hello", idempotency_key="order-43")
    assert other["id"] != first["id"]
    assert node.start_run("hello")["id"] not in (first["id"], other["id"])  # no key: always new
    ids = [r["id"] for r in node.list_runs("flow=hello")]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 3


def test_runs_are_listed_newest_first_with_pagination_and_filters(node):
    node.deploy("fast", echo_flow())
    node.deploy("broken", failing_flow())
    created = []
    for flow in ("fast", "fast", "broken", "fast", "fast", "broken", "fast"):
        created.append((node.start_run(flow)["id"], flow))
    for run_id, _ in created:
        node.wait_run(run_id)
    newest_first = [run_id for run_id, _ in reversed(created)]

    status, page = node.get("/v1/runs?limit=3", token=READER_TOKEN)
    assert status == 200
    assert [r["id"] for r in page["runs"]] == newest_first[:3]
    assert page["next_cursor"]
    assert all("steps" not in r for r in page["runs"])

    everything = node.list_runs(page_limit=3)
    assert [r["id"] for r in everything] == newest_first
    assert [r["id"] for r in node.list_runs()] == newest_first  # default page size covers 7

    assert [r["id"] for r in node.list_runs("flow=fast", page_limit=2)] == \
        [run_id for run_id, flow in reversed(created) if flow == "fast"]
    failed = node.list_runs("status=failed")
    assert [r["id"] for r in failed] == [run_id for run_id, flow in reversed(created) if flow == "broken"]
    assert all(r["status"] == "failed" for r in failed)
    assert node.list_runs("status=succeeded&flow=broken") == []
    assert node.list_runs("flow=no-such-flow") == []


def test_finished_runs_beyond_the_memory_limit_are_served_from_postgres(cluster):
    # Only 3 finished runs stay in memory; the others are read back from
    # PostgreSQL and look exactly as they did.
    node = cluster(1, overrides={"limits.runs_in_memory": "3"})[0]
    node.deploy("fast", echo_flow("hi"))
    ids = []
    seen = {}
    for i in range(10):
        run_id = node.start_run("fast", idempotency_key="key%d" % i)["id"]
        seen[run_id] = node.wait_run(run_id)
        assert seen[run_id]["status"] == "succeeded"
        ids.append(run_id)
    node.wait_db_caught_up()

    for run_id in ids:  # the oldest come from PostgreSQL now
        assert node.run(run_id) == seen[run_id]
    # Pages walk from memory into PostgreSQL without a gap or a repeat.
    listed = [r["id"] for r in node.list_runs("flow=fast", page_limit=4)]
    assert listed == list(reversed(ids)), listed
    # An idempotency key of a run that left memory still names that run.
    again = node.start_run("fast", idempotency_key="key0", expect=200)
    assert again["id"] == ids[0] and again["status"] == "succeeded"
    status, body = node.post("/v1/runs/%s/cancel" % ids[0])
    assert status == 409 and body["error"]["code"] == "run_finished", body
    status, body = node.get("/v1/runs/r-000000999999")
    assert status == 404, body

    # The same after a restart (state restored from the log).
    assert node.kill9() == -9
    node.start()
    for run_id in ids:
        assert node.run(run_id) == seen[run_id]
