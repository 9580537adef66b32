"""test_flowctl.py - the flowctl command-line client against one real node:
deploy, run with -p and --wait, get, runs, logs, cancel, and its exit codes
(1 for an HTTP error, 2 for no server, 64 for bad usage); tables for people
(through pipes and through a pseudo-terminal), -o json for scripts, watch and
top.

FLOWCTL_WRAP (e.g. "valgrind -q --leak-check=full --errors-for-leak-kinds=all
--error-exitcode=99") is put before every flowctl command line."""

import json
import os
import shlex
import subprocess

import pytest

import flowd_harness as h
from flowd_harness import (ADMIN_TOKEN, READER_TOKEN, failing_flow, flow_spec, param, sleeper_flow,
                           step)

FLOWCTL = os.path.join(h.BUILD, "flowctl")
WRAP = shlex.split(os.environ.get("FLOWCTL_WRAP", ""))


@pytest.fixture(autouse=True)
def _need_flowctl():
    if not os.path.exists(FLOWCTL):
        raise AssertionError("no flowctl binary at %s (run `make build/flowctl`)" % FLOWCTL)


def run_flowctl(args, stdin=None, env=None, timeout=60):
    """flowctl `args` with the environment `env` (default: ours without
    FLOWD_*); the CompletedProcess, with text stdout and stderr."""
    if env is None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWD_")}
    return subprocess.run(WRAP + [FLOWCTL] + [str(a) for a in args], input=stdin,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                          timeout=h.scaled(timeout))


def flowctl(node, *args, token=ADMIN_TOKEN, url=None, stdin=None, env=None, output="json"):
    """flowctl --url <node's> --token <admin> -o json `args` (output=None:
    flowctl's default, tables for lists)."""
    argv = ["--url", url or node.url]
    if token is not None:
        argv += ["--token", token]
    if output is not None:
        argv += ["-o", output]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWD_")}
    full_env.update(env or {})
    return run_flowctl(argv + list(args), stdin=stdin, env=full_env)


def ok_json(r):
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return json.loads(r.stdout)


def params_flow():
    """One step that echoes its three parameters; one that writes to stderr."""
    return flow_spec(
        [step("greet", 'echo "hello $FLOWD_PARAM_WHO x$FLOWD_PARAM_COUNT $FLOWD_PARAM_LOUD"'),
         step("warn", "echo to-stderr >&2", depends_on=["greet"])],
        parameters={"who": param("string", required=True), "count": param("int", default=1),
                    "loud": param("bool", default=False)})


def test_deploy_run_wait_get_runs_and_logs(node, workdir):
    spec_path = os.path.join(workdir, "greet.json")
    with open(spec_path, "w") as f:
        json.dump(params_flow(), f)

    out = ok_json(flowctl(node, "deploy", "greet", spec_path))
    assert out["created"] is True and out["flow"]["name"] == "greet" and out["flow"]["version"] == 1
    # the same spec again, from stdin: no new version
    with open(spec_path) as f:
        out = ok_json(flowctl(node, "deploy", "greet", "-", stdin=f.read()))
    assert out["created"] is False and out["flow"]["version"] == 1

    assert [f["name"] for f in ok_json(flowctl(node, "flows", token=READER_TOKEN))["flows"]] == ["greet"]
    assert ok_json(flowctl(node, "flow", "greet"))["spec"]["steps"][0]["name"] == "greet"
    assert [v["version"] for v in ok_json(flowctl(node, "versions", "greet"))["versions"]] == [1]

    # -p: "world" is a string, 3 a number, true a boolean; the output is the final run
    r = flowctl(node, "run", "greet", "-p", "who=world", "-p", "count=3", "--param", "loud=true",
                "--key", "k-1", "--wait")
    run = ok_json(r)
    assert r.stdout.startswith("{\n  \""), r.stdout  # pretty-printed, indent 2
    assert run["status"] == "succeeded", run
    assert run["parameters"] == {"who": "world", "count": 3, "loud": True}
    assert run["idempotency_key"] == "k-1"
    run_id = run["id"]

    got = ok_json(flowctl(node, "get", run_id, token=READER_TOKEN))
    assert got["id"] == run_id and got["status"] == "succeeded"
    assert [s["name"] for s in got["steps"]] == ["greet", "warn"]

    listed = ok_json(flowctl(node, "runs", "--flow", "greet", "--status", "succeeded", "--limit", "10"))
    assert [x["id"] for x in listed["runs"]] == [run_id]
    assert ok_json(flowctl(node, "runs", "--status", "failed"))["runs"] == []

    r = flowctl(node, "logs", run_id, "greet")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello world x3 true\n"  # raw, not JSON
    r = flowctl(node, "logs", run_id, "warn", "--attempt", "1")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "to-stderr\n")

    # the same idempotency key answers with the same run
    assert ok_json(flowctl(node, "run", "greet", "-p", "who=world", "--key", "k-1"))["id"] == run_id


def test_params_json_and_p_override_and_string_values(node):
    node.deploy("greet", params_flow())
    run = ok_json(flowctl(node, "run", "greet", "--params-json", '{"who": "a", "count": 2}',
                          "-p", "who=007", "--wait"))
    # "007" is not a JSON number, so it stays a string; -p wins over --params-json
    assert run["parameters"] == {"who": "007", "count": 2, "loud": False}
    assert run["status"] == "succeeded"


def test_wait_on_a_failing_run_exits_1_and_prints_it(node):
    node.deploy("boom", flow_spec([step("boom", "echo boom >&2; exit 1")]))
    r = flowctl(node, "run", "boom", "--wait")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert json.loads(r.stdout)["status"] == "failed"
    assert "failed" in r.stderr


def test_cancel_a_running_run(node, workdir):
    node.deploy("nap", sleeper_flow(workdir, 30))
    run = ok_json(flowctl(node, "run", "nap"))
    out = ok_json(flowctl(node, "cancel", run["id"]))
    assert out["id"] == run["id"] and out["status"] == "cancelled", out
    r = flowctl(node, "cancel", run["id"])
    assert r.returncode == 1 and r.stderr.startswith("flowctl: 409 run_finished"), r.stderr
    h.kill_stray(os.path.join(workdir, "1.pid"))


def test_bad_spec_exits_1_with_the_field_on_stderr(node, workdir):
    bad = flow_spec([step("s", "true", timeout_s=0)])
    r = flowctl(node, "deploy", "bad", "-", stdin=json.dumps(bad))
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stdout == ""
    assert r.stderr.startswith("flowctl: 400 "), r.stderr
    assert "steps[0].timeout_s: " in r.stderr, r.stderr

    r = flowctl(node, "deploy", "bad", "-", stdin="{not json")
    assert r.returncode == 1 and r.stderr.startswith("flowctl: 400 invalid_json"), r.stderr

    r = flowctl(node, "deploy", "bad", os.path.join(workdir, "missing.json"))
    assert r.returncode == 1 and "missing.json" in r.stderr, r.stderr

    r = flowctl(node, "get", "r-does-not-exist")
    assert r.returncode == 1 and r.stderr.startswith("flowctl: 404 not_found"), r.stderr


def test_wrong_or_missing_token_exits_1_with_401_and_reader_cannot_write(node):
    for token in ("not-the-token", None):
        r = flowctl(node, "flows", token=token)
        assert r.returncode == 1, (token, r.stdout, r.stderr)
        assert r.stderr.startswith("flowctl: 401 unauthorized"), r.stderr
    r = flowctl(node, "deploy", "x", "-", token=READER_TOKEN, stdin=json.dumps(flow_spec([step("s")])))
    assert r.returncode == 1 and r.stderr.startswith("flowctl: 403 forbidden"), r.stderr
    # health needs no token
    assert ok_json(flowctl(node, "health", token=None)) == {"status": "ok"}


def test_url_and_token_come_from_the_environment(node):
    r = flowctl(node, "cluster", token=None, url="http://127.0.0.1:1",
                env={"FLOWD_URL": node.url, "FLOWD_TOKEN": ADMIN_TOKEN})
    # --url on the command line wins over $FLOWD_URL
    assert r.returncode == 2, r.stderr
    r = run_flowctl(["-o", "json", "cluster"],
                    env=dict(os.environ, FLOWD_URL=node.url + "/", FLOWD_TOKEN=ADMIN_TOKEN))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["role"] == "leader"


def test_unreachable_url_exits_2():
    port = h.free_port()  # nothing listens there
    r = run_flowctl(["--url", "http://127.0.0.1:%d" % port, "flows"])
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stdout == "" and r.stderr.startswith("flowctl: http://127.0.0.1:%d/v1/flows: " % port)


@pytest.mark.parametrize("args", [[], ["nope"], ["run"], ["run", "f", "-p", "novalue"],
                                  ["run", "f", "--params-json", "[1]"], ["get"],
                                  ["logs", "r"], ["runs", "--bogus"], ["--url"]])
def test_bad_usage_exits_64_with_usage_on_stderr(args):
    r = run_flowctl(args)
    assert r.returncode == 64, (args, r.stderr)
    assert r.stdout == "" and "usage: flowctl" in r.stderr


def test_help_exits_0_with_usage_on_stdout():
    r = run_flowctl(["--help"])
    assert r.returncode == 0 and r.stdout.startswith("usage: flowctl") and r.stderr == ""


def test_trigger_commands(node, workdir):
    spec = flow_spec([step("s", "true")])
    spec["triggers"] = {"schedules": [{"cron": "0 * * * *"}], "events": [{"event": "go"}]}
    path = os.path.join(workdir, "t.json")
    with open(path, "w") as f:
        json.dump(spec, f)
    ok_json(flowctl(node, "deploy", "t", path))
    view = ok_json(flowctl(node, "schedule", "t"))
    assert len(view["schedules"][0]["next_fire_times"]) == 10
    assert ok_json(flowctl(node, "pause", "t"))["paused"] is True
    assert ok_json(flowctl(node, "unpause", "t"))["paused"] is False
    out = ok_json(flowctl(node, "backfill", "t", "2027-01-01T00:00:00Z",
                          "2027-01-01T02:00:00Z", "--schedule", "0"))
    assert out["ticks"] == 3
    ev = ok_json(flowctl(node, "event", "go", "--id", "cli-1", "--payload", '{"a": 1}'))
    assert ev["runs"][0]["flow"] == "t" and ev["duplicate"] is False
    assert ok_json(flowctl(node, "event", "go", "--id", "cli-1"))["duplicate"] is True
    pv = ok_json(flowctl(node, "preview", "30 2 * * *", "--tz", "Europe/Berlin",
                         "--from", "2027-03-27T00:00:00Z", "--count", "2"))
    assert pv["times"] == ["2027-03-27T01:30:00Z", "2027-03-28T01:00:00Z"]
    r = flowctl(node, "event", "go", "--payload", "{not json")
    assert r.returncode == 64
    r = flowctl(node, "preview", "0 0 31 2 *")
    assert r.returncode == 1 and "never matches" in r.stderr


# ------------------------------------------------------------ for people

ESC = "\x1b["


def flowctl_pty(node, *args, env=None, timeout=60):
    """flowctl with its stdout on a pseudo-terminal (as a person runs it):
    (exit code, everything it wrote there)."""
    import pty
    import select
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWD_")}
    full_env.update(env or {})
    master, slave = pty.openpty()
    p = subprocess.Popen(WRAP + [FLOWCTL, "--url", node.url, "--token", ADMIN_TOKEN]
                         + [str(a) for a in args], stdout=slave, stderr=subprocess.PIPE,
                         env=full_env)
    os.close(slave)
    out = b""
    deadline = h.scaled(timeout)
    import time
    t0 = time.monotonic()
    while True:
        r, _, _ = select.select([master], [], [], 0.2)
        if r:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other side closed
                break
            if not chunk:
                break
            out += chunk
        elif p.poll() is not None:
            break
        assert time.monotonic() - t0 < deadline, "flowctl %s did not end" % (args,)
    os.close(master)
    rc = p.wait(timeout=h.scaled(30))
    p.stderr.close()
    return rc, out.decode("utf-8", "replace")


def lines_of(text):
    return [l for l in text.splitlines() if l.strip()]


def test_lists_are_tables_with_relative_times_and_json_with_o_json(node, workdir):
    spec = flow_spec([step("first", "true"), step("second", "exit 3", depends_on=["first"])])
    spec["description"] = "two steps"
    spec["triggers"] = {"schedules": [{"cron": "0 * * * *"}]}
    path = os.path.join(workdir, "f.json")
    with open(path, "w") as f:
        json.dump(spec, f)
    ok_json(flowctl(node, "deploy", "two", path))
    run = ok_json(flowctl(node, "run", "two"))
    node.wait_run(run["id"])

    r = flowctl(node, "runs", output=None)
    assert r.returncode == 0, r.stderr
    assert ESC not in r.stdout  # a pipe gets no colour
    rows = lines_of(r.stdout)
    assert rows[0].split() == ["ID", "FLOW", "STATUS", "TRIGGER", "CREATED", "DURATION", "REASON"]
    cells = rows[1].split()
    assert cells[:4] == [run["id"], "two", "failed", "manual"], rows
    assert cells[5] == "ago" and cells[4].endswith("s"), rows  # "3s ago"
    assert "step second failed with exit code 3" in rows[1]
    # columns line up: every row's STATUS starts where the header's does
    col = rows[0].index("STATUS")
    assert rows[1][col:].startswith("failed")
    # -o json is the answer as the API sent it
    assert ok_json(flowctl(node, "runs"))["runs"][0]["id"] == run["id"]

    flows = lines_of(flowctl(node, "flows", output=None).stdout)
    assert flows[0].split() == ["NAME", "VERSION", "DEPLOYED", "UPDATED", "DESCRIPTION"]
    assert flows[1].split()[:3] == ["two", "1", "yes"] and flows[1].endswith("two steps")

    got = lines_of(flowctl(node, "get", run["id"], output=None).stdout)
    assert got[0].startswith("run %s  flow two v1  failed  manual" % run["id"]), got
    assert got[1] == "reason: step second failed with exit code 3"
    assert got[2].split() == ["STEP", "STATUS", "ATTEMPT", "NODE", "STARTED", "DURATION", "RESULT"]
    assert got[3].split()[:4] == ["first", "succeeded", "1", "1"]
    assert got[4].split()[:4] == ["second", "failed", "1", "1"] and got[4].endswith("exited 3")

    sched = lines_of(flowctl(node, "schedule", "two", output=None).stdout)
    assert sched[0] == "flow two"
    assert sched[1].split()[:4] == ["#", "CRON", "TIMEZONE", "FIRED"]
    assert sched[2].split()[:8] == ["0", "0", "*", "*", "*", "*", "UTC", "0"]
    assert sched[2].split()[-2] == "in", sched  # the next fire time, relative

    cl = lines_of(flowctl(node, "cluster", output=None).stdout)
    assert cl[0].startswith("node 1  leader  term ")
    assert cl[1].split() == ["ID", "ROLE", "LEADER", "LIVE", "RAFT", "API"]
    assert cl[2].split()[:4] == ["1", "voter", "*", "yes"]

    pv = lines_of(flowctl(node, "preview", "30 2 * * *", "--tz", "Europe/Berlin",
                          "--from", "2027-03-27T00:00:00Z", "--count", "2", output=None).stdout)
    assert pv == ["30 2 * * *  (Europe/Berlin)", "UTC                   LOCAL",
                  "2027-03-27T01:30:00Z  2027-03-27T02:30:00+01:00",
                  "2027-03-28T01:00:00Z  2027-03-28T03:00:00+02:00"]

    vs = lines_of(flowctl(node, "versions", "two", output=None).stdout)
    assert vs[0].split() == ["VERSION", "CREATED", "STEPS"] and vs[1].split()[0] == "1"
    assert vs[1].split()[-1] == "2"

    r = flowctl(node, "runs", output="yaml")
    assert r.returncode == 64 and "-o wants table or json" in r.stderr


def test_tables_are_coloured_on_a_terminal_unless_no_color(node):
    node.deploy("ok", flow_spec([step("s", "true")]))
    node.wait_run(node.start_run("ok")["id"])
    rc, out = flowctl_pty(node, "runs")
    assert rc == 0, out
    assert ESC + "32msucceeded" + ESC + "0m" in out, repr(out)
    assert ESC + "1mID" in out  # a bold header
    rc, out = flowctl_pty(node, "runs", env={"NO_COLOR": "1"})
    assert rc == 0 and ESC not in out and "succeeded" in out, repr(out)
    # -o json on a terminal is still plain JSON
    rc, out = flowctl_pty(node, "-o", "json", "runs")
    assert rc == 0 and json.loads(out)["runs"][0]["status"] == "succeeded"


def test_watch_follows_a_run_to_its_end_and_exits_with_its_status(node, workdir):
    node.deploy("slow", flow_spec([step("wait", "sleep 1.5"), step("then", "true",
                                                                   depends_on=["wait"])]))
    run = node.start_run("slow")
    r = flowctl(node, "watch", run["id"], "--interval", "0.2", output=None)
    assert r.returncode == 0, (r.stdout, r.stderr)
    frames = [f for f in r.stdout.split("\n\n") if f.strip()]
    # a pipe gets a frame per change: the step running, then the run's end
    assert len(frames) >= 2, r.stdout
    assert any(" running " in f.splitlines()[0] for f in frames[:-1]), frames
    last = lines_of(frames[-1])
    assert "  succeeded  " in last[0]
    assert [l.split()[:2] for l in last[2:]] == [["wait", "succeeded"], ["then", "succeeded"]]
    assert ESC not in r.stdout

    node.deploy("bad", failing_flow())
    bad = node.start_run("bad")
    r = flowctl(node, "watch", bad["id"], "--interval", "0.2", output=None)
    assert r.returncode == 1 and "failed" in r.stderr, (r.stdout, r.stderr)

    # -o json: one line per change, the last the finished run
    r = flowctl(node, "watch", run["id"])
    assert r.returncode == 0 and json.loads(lines_of(r.stdout)[-1])["status"] == "succeeded"

    # on a terminal each frame replaces the last
    again = node.start_run("slow")
    rc, out = flowctl_pty(node, "watch", again["id"], "--interval", "0.2")
    assert rc == 0 and out.count(ESC + "H" + ESC + "2J") >= 2, repr(out[:300])
    assert "succeeded" in out.split(ESC + "2J")[-1]

    r = flowctl(node, "watch", "r-999999999999", output=None)
    assert r.returncode == 1 and "404" in r.stderr


def test_top_shows_the_cluster_and_the_running_runs(node, workdir):
    pid_dir = h.fresh_dir(os.path.join(workdir, "pids"))
    node.deploy("nap", sleeper_flow(pid_dir, 30))
    run = node.start_run("nap")
    node.wait_run(run["id"], statuses=("running",))
    r = flowctl(node, "top", "--count", "2", "--interval", "0.2", output=None)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("node 1  leader") == 2
    assert r.stdout.count("running (the newest 1):") == 2
    assert r.stdout.count(run["id"]) == 2
    # without --count a pipe gets one frame
    r = flowctl(node, "top", output=None)
    assert r.returncode == 0 and r.stdout.count("node 1  leader") == 1
    frame = ok_json(flowctl(node, "top"))
    assert frame["cluster"]["role"] == "leader"
    assert [x["id"] for x in frame["running"]] == [run["id"]]
    r = flowctl(node, "top", "--interval", "0")
    assert r.returncode == 64
    ok_json(flowctl(node, "cancel", run["id"]))


def test_logs_waits_for_a_log_postgresql_does_not_hold_yet(node, db):
    """`flowctl logs` right after a run ends: the log reaches PostgreSQL a
    moment later (503 not_stored_yet meanwhile), and flowctl polls through it
    rather than failing (here a lock on task_logs holds the writer back for a
    second)."""
    node.deploy("hello", h.echo_flow())
    node.wait_db_caught_up()
    with h.table_locked(db, "task_logs"):
        run_id = node.start_run("hello")["id"]
        assert node.wait_run(run_id)["status"] == "succeeded"
        assert node.get("/v1/runs/%s/steps/only/logs" % run_id).status == 503
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWD_")}
        p = subprocess.Popen(WRAP + [FLOWCTL, "--url", node.url, "--token", ADMIN_TOKEN,
                                     "logs", run_id, "only"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        # flowctl was answered 503 too (the second one, after ours), and
        # goes on polling while the lock holds
        def answered_twice():
            for line in node.get("/metrics", token=READER_TOKEN).text.splitlines():
                if 'route="/v1/runs/{id}/steps/{step}/logs",code="503"' in line:
                    return float(line.split()[-1]) >= 2 or None
            return None
        h.wait_for(answered_twice, 10, "flowctl to be answered 503")
        assert p.poll() is None, p.communicate()
    out, err = p.communicate(timeout=h.scaled(30))
    assert p.returncode == 0, err
    assert out == "hello\n"


def test_logs_follow_prints_a_running_step_as_it_runs_and_exits_with_it(node):
    """`flowctl logs -f`: stdout and stderr as the step writes them, from
    the start, until the attempt ends; the exit code says how it ended."""
    node.deploy("chatty", flow_spec([step(
        "talk", "echo first; sleep 1; echo second; echo warn >&2; sleep 0.5; exit 4")]))
    run_id = node.start_run("chatty")["id"]

    def started():
        s = h.steps_by_name(node.get("/v1/runs/" + run_id)[1])["talk"]
        return s["attempts"] or None
    h.wait_for(started, 20, "the step to start")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWD_")}
    p = subprocess.Popen(WRAP + [FLOWCTL, "--url", node.url, "--token", READER_TOKEN,
                                 "logs", run_id, "talk", "-f"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    first = p.stdout.readline()
    # the first line arrives while the step still runs
    assert first == b"first\n", first
    assert node.get("/v1/runs/" + run_id)[1]["status"] == "running"
    rest, err = p.communicate(timeout=h.scaled(30))
    assert p.returncode == 1, (p.returncode, rest, err)
    assert rest == b"second\n"
    assert err.startswith(b"warn\n") and b"attempt 1 failed" in err, err
    # after the end: the stored log, exit 0
    ok = h.echo_flow("done")
    node.deploy("ok", ok)
    rid = node.start_run("ok")["id"]
    node.wait_run(rid)
    r = flowctl(node, "logs", rid, "only", "--follow", output=None)
    assert r.returncode == 0 and r.stdout == "done\n", (r.returncode, r.stdout, r.stderr)
    # a log at the capture limit (64 KiB) comes whole, in one event
    node.deploy("big", flow_spec([step("x", "head -c 70000 /dev/zero | tr '\\0' x")]))
    rid = node.start_run("big")["id"]
    node.wait_run(rid)
    r = flowctl(node, "logs", rid, "x", "-f", output=None)
    assert r.returncode == 0 and r.stdout == "x" * 65536, (r.returncode, len(r.stdout))
    assert "truncated" in r.stderr, r.stderr
