"""test_durability.py - what survives: kill -9 in the middle of a run, a
PostgreSQL outage while runs complete, and SIGTERM under load."""

import http.client
import os
import threading
import time

import flowd_harness as h
from flowd_harness import echo_flow, read_pid, sleeper_flow, steps_by_name, wait_for


def test_kill9_mid_run_keeps_acknowledged_runs_and_the_interrupted_run_finishes(node, workdir, psql):
    pids = h.fresh_dir(os.path.join(workdir, "pids"))
    node.deploy("fast", echo_flow())
    # The attempt killed with flowd is "lost" and retried (retries.max 1).
    node.deploy("slow", sleeper_flow(pids, 3, retries=1))
    acked = [node.start_run("fast")["id"] for _ in range(5)]
    slow_id = node.start_run("slow")["id"]
    acked.append(slow_id)
    pid1 = wait_for(lambda: read_pid(os.path.join(pids, "1.pid")), 10, "the slow step to start")
    acked += [node.start_run("fast")["id"] for _ in range(3)]

    try:
        assert node.kill9() == -9
        assert h.pid_alive(pid1)  # the step outlives the kill -9 ...
        node.start()  # waits for /readyz: a leader and the log applied
        # ... and the node stops it before it registers again, so the step
        # never runs twice at once.
        wait_for(lambda: not h.pid_alive(pid1), 10, "the orphaned step to be stopped")
        assert "killed orphan process group" in node.log_text()

        for run_id in acked:
            assert node.run(run_id)["id"] == run_id
        run = node.wait_run(slow_id, timeout=60)
        assert run["status"] in ("succeeded", "failed"), run
        attempts = steps_by_name(run)["nap"]["attempts"]
        assert attempts[0]["status"] == "lost", attempts
        assert attempts[0]["reason"] == "lost", attempts
        if run["status"] == "succeeded":
            assert [a["status"] for a in attempts] == ["lost", "succeeded"], attempts
        for run_id in acked:
            assert node.wait_run(run_id)["status"] in ("succeeded", "failed")

        node.wait_db_caught_up()
        in_db = {r[0] for r in psql("SELECT id FROM runs")}
        assert set(acked) <= in_db
    finally:
        h.kill_stray(os.path.join(pids, "1.pid"))
    assert pid1 > 0


def all_runs_from_api(node):
    runs = {}
    for summary in node.list_runs(page_limit=50):
        runs[summary["id"]] = node.run(summary["id"])
    return runs


def assert_postgres_matches_api(node, db):
    """Every run, step and attempt the API shows is in PostgreSQL, identical."""
    api = all_runs_from_api(node)
    db_runs = {r[0]: r[1:] for r in db.psql("SELECT id, flow, version, status FROM runs")}
    assert sorted(db_runs) == sorted(api), "runs in PostgreSQL differ from the API"
    for run_id, run in api.items():
        assert db_runs[run_id] == [run["flow"], str(run["version"]), run["status"]], run_id

    db_steps = {}
    for run_id, name, status, attempts in db.psql("SELECT run_id, step, status, attempts FROM steps"):
        db_steps.setdefault(run_id, {})[name] = (status, int(attempts))
    db_attempts = {}
    for run_id, name, attempt, status in db.psql("SELECT run_id, step, attempt, status FROM attempts"):
        db_attempts.setdefault((run_id, name), {})[int(attempt)] = status
    db_logs = {(r[0], r[1], int(r[2])): (r[3], r[4]) for r in
               db.psql("SELECT run_id, step, attempt, stdout, stderr FROM task_logs")}
    for run_id, run in api.items():
        api_steps = {s["name"]: (s["status"], len(s["attempts"])) for s in run["steps"]}
        assert db_steps.get(run_id) == api_steps, run_id
        for s in run["steps"]:
            assert db_attempts.get((run_id, s["name"]), {}) == \
                {a["attempt"]: a["status"] for a in s["attempts"]}, (run_id, s["name"])
            for a in s["attempts"]:
                if a["status"] in ("succeeded", "failed"):
                    assert (run_id, s["name"], a["attempt"]) in db_logs, (run_id, s["name"], a)
    return api


def test_postgres_outage_of_20s_loses_nothing_and_postgres_ends_identical_to_the_api(cluster):
    # This test stops PostgreSQL, so it has an instance of its own.
    pg = h.PgInstance(os.path.join(h.IT_ROOT, "pg-outage"))
    pg.wipe()  # also stops one left running by an interrupted session
    pg.start()
    try:
        db = pg.create_database("flowd_outage")
        node = cluster(db=db)[0]
        node.deploy("fast", echo_flow("before"))
        before = [node.start_run("fast")["id"] for _ in range(3)]
        for run_id in before:
            assert node.wait_run(run_id)["status"] == "succeeded"
        node.wait_db_caught_up()

        pg.stop()
        outage_start = time.monotonic()
        during = [node.start_run("fast")["id"] for _ in range(10)]
        wait_for(lambda: node.cluster_info()["db_connected"] is False, 15,
                 "flowd to notice PostgreSQL is gone")
        # Runs complete while PostgreSQL is down; the node stays ready.
        wait_for(lambda: node.cluster_info()["applied_index"] > node.cluster_info()["db_applied_index"],
                 10, "entries waiting for PostgreSQL")
        status, body = node.get("/readyz", token=None)
        assert status == 200, body
        # Keep it down for 20 s in all (an outage of a given length, not a wait
        # for a condition), checking the node stays alive meanwhile.
        while time.monotonic() - outage_start < 20:
            assert node.alive(), h.tail(node.log_path)
            time.sleep(0.5)
        backlog = node.cluster_info()["db_backlog"]
        assert backlog > 0

        pg.start()
        node.wait_db_caught_up(timeout=60)
        for run_id in before + during:
            assert node.wait_run(run_id)["status"] == "succeeded"
        node.wait_db_caught_up(timeout=60)

        api = assert_postgres_matches_api(node, db)
        assert set(before + during) <= set(api)
        meta = db.psql("SELECT max(applied_index) FROM raft_meta")
        assert int(meta[0][0]) == node.cluster_info()["db_applied_index"]
        logs = db.psql("SELECT stdout, truncated FROM task_logs WHERE run_id = '%s'" % during[-1])
        assert logs == [["before\n", "f"]], logs
    finally:
        pg.stop()  # the cluster fixture kills the node afterwards


def test_sigterm_while_runs_are_being_submitted_shuts_down_cleanly(node):
    node.deploy("fast", echo_flow())
    acked, errors = [], []
    stop = threading.Event()

    def submit():
        while not stop.is_set():
            try:
                status, body = node.post("/v1/flows/fast/runs", {}, timeout=5)
            except (OSError, http.client.HTTPException) as e:  # refused / reset: going away
                errors.append(repr(e))
                continue
            if status == 201:
                acked.append(body["id"])
            else:
                errors.append(status)
                if status != 503:
                    stop.set()

    threads = [threading.Thread(target=submit, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(acked) >= 20, 30, "20 acknowledged runs")
        rc = node.terminate(timeout=30)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
    assert rc == 0, h.tail(node.log_path)
    assert all(e == 503 or isinstance(e, str) for e in errors), errors

    node.start()
    for run_id in acked:
        assert node.run(run_id)["id"] == run_id


def test_restart_from_snapshot_keeps_every_run(cluster, psql):
    # Small snapshot settings: dozens of entries produce snapshots and a
    # compacted log, so the restart restores from a snapshot and replays only
    # the entries after it.
    node = cluster(1, overrides={"raft.snapshot_threshold": "16",
                                 "raft.snapshot_trailing": "16"})[0]
    node.deploy("fast", echo_flow())
    ids = [node.start_run("fast", idempotency_key="k%d" % i)["id"] for i in range(60)]
    for run_id in ids:
        assert node.wait_run(run_id)["status"] == "succeeded"
    before = {r: node.run(r) for r in ids}
    wait_for(lambda: any(f.startswith("snapshot-") for f in os.listdir(node.data_dir)),
             20, "a snapshot file in the data dir")

    assert node.kill9() == -9
    node.start()

    for run_id in ids:
        assert node.run(run_id) == before[run_id]
    # The idempotency keys survived too: the same key is the same run.
    again = node.start_run("fast", idempotency_key="k7", expect=200)
    assert again["id"] == ids[7]
    # And the node goes on: a new run after the restart succeeds.
    new_id = node.start_run("fast")["id"]
    assert node.wait_run(new_id)["status"] == "succeeded"
    node.wait_db_caught_up()
    assert {r[0] for r in psql("SELECT id FROM runs WHERE status = 'succeeded'")} >= set(ids)


def test_crash_while_postgres_is_down_after_a_snapshot_loses_nothing_in_postgres(cluster, workdir):
    # A snapshot does not wait for PostgreSQL to hold the rows of the state
    # (only for task logs, which are not part of the state). Here PostgreSQL
    # is down while flows are deployed and runs queue up, snapshots compact
    # the log, and flowd is killed with those rows only in memory: after the
    # restart the restored state is written again, so PostgreSQL still ends
    # up identical to the API.
    pg = h.PgInstance(os.path.join(h.IT_ROOT, "pg-crash"))
    pg.wipe()
    pg.start()
    pids = h.fresh_dir(os.path.join(workdir, "pids"))
    try:
        db = pg.create_database("flowd_crash")
        node = cluster(db=db, overrides={"raft.snapshot_threshold": "16",
                                         "raft.snapshot_trailing": "16",
                                         "limits.max_parallel_tasks": "1"})[0]
        node.deploy("slow", sleeper_flow(pids, 300, retries=1))
        node.deploy("fast", echo_flow("x"))
        slow = node.start_run("slow")["id"]
        wait_for(lambda: read_pid(os.path.join(pids, "1.pid")), 10, "the slow step to start")
        node.wait_db_caught_up()

        pg.stop()
        for i in range(20):
            node.deploy("f%02d" % i, echo_flow("v%d" % i))
        queued = [node.start_run("fast")["id"] for _ in range(20)]
        assert all(node.run(r)["status"] == "queued" for r in queued)
        wait_for(lambda: any(f.startswith("snapshot-") for f in os.listdir(node.data_dir)),
                 20, "a snapshot file in the data dir")
        assert node.kill9() == -9
        h.kill_stray(os.path.join(pids, "1.pid"))

        pg.start()
        node.start()
        assert "reconciling PostgreSQL from the snapshot" in node.log_text()
        # The restart lost the slow attempt and freed the slot: the queued
        # runs go first (its retry queues behind them). Compare once they
        # are done and only the retry's sleep is left running.
        for run_id in queued:
            assert node.wait_run(run_id, timeout=60)["status"] == "succeeded"
        node.wait_db_caught_up(timeout=60)
        api = assert_postgres_matches_api(node, db)
        assert set(queued + [slow]) <= set(api)
        flows = {r[0] for r in db.psql("SELECT name FROM flows")}
        assert {"f%02d" % i for i in range(20)} <= flows
    finally:
        pg.stop()
