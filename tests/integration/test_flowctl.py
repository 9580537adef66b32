"""test_flowctl.py - the flowctl command-line client against one real node:
deploy, run with -p and --wait, get, runs, logs, cancel, and its exit codes
(1 for an HTTP error, 2 for no server, 64 for bad usage).

FLOWCTL_WRAP (e.g. "valgrind -q --leak-check=full --errors-for-leak-kinds=all
--error-exitcode=99") is put before every flowctl command line."""

import json
import os
import shlex
import subprocess

import pytest

import flowd_harness as h
from flowd_harness import ADMIN_TOKEN, READER_TOKEN, flow_spec, param, sleeper_flow, step

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


def flowctl(node, *args, token=ADMIN_TOKEN, url=None, stdin=None, env=None):
    """flowctl --url <node's> --token <admin> `args`."""
    argv = ["--url", url or node.url]
    if token is not None:
        argv += ["--token", token]
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
    r = run_flowctl(["cluster"],
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
