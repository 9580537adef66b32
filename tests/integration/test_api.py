"""test_api.py - the REST contract (docs/api.md) on one node: health, cluster
status, flow deploy/redeploy/versions/undeploy, and bad requests that must get
the right 4xx, a JSON error body, and change nothing."""

import json
import shutil
import subprocess
import os

import pytest

import flowd_harness as h
from conftest import close_cluster, new_cluster
from flowd_harness import READER_TOKEN, echo_flow, flow_spec, param, step


def test_healthz_and_readyz_answer_without_a_token(node):
    status, body = node.get("/healthz", token=None)
    assert (status, body) == (200, {"status": "ok"})
    status, body = node.get("/readyz", token=None)
    assert (status, body) == (200, {"ready": True})


def test_cluster_reports_this_node_as_leader_with_its_indexes(node):
    node.deploy("hello", echo_flow())
    c = node.wait_db_caught_up()
    assert c["node_id"] == 1
    assert c["role"] == "leader"
    assert c["leader"]["id"] == 1
    assert c["leader"]["api_address"] == node.api_address
    for key in ("term", "commit_index", "applied_index", "db_applied_index", "db_backlog"):
        assert isinstance(c[key], int), (key, c)
    assert c["applied_index"] >= 1
    assert c["commit_index"] >= c["applied_index"]
    assert c["db_connected"] is True
    assert [(m["id"], m["raft_address"], m["api_address"]) for m in c["members"]] == \
        [(1, node.raft_address, node.api_address)]
    # a reader may look
    status, _ = node.get("/v1/cluster", token=READER_TOKEN)
    assert status == 200


def test_cluster_db_applied_index_is_recorded_in_raft_meta(node, psql):
    node.deploy("hello", echo_flow())
    c = node.wait_db_caught_up()
    rows = psql("SELECT applied_index FROM raft_meta")
    assert rows and max(int(r[0]) for r in rows) == c["db_applied_index"]


def test_redeploying_the_same_spec_keeps_the_version_and_a_changed_spec_makes_version_2(node):
    spec = echo_flow("one")
    status, body = node.put("/v1/flows/etl", spec)
    assert status == 201, body
    assert body["created"] is True
    assert body["flow"]["name"] == "etl"
    assert body["flow"]["version"] == 1
    assert body["flow"]["deployed"] is True

    status, body = node.put("/v1/flows/etl", spec)
    assert status == 200, body
    assert body["created"] is False
    assert body["flow"]["version"] == 1

    status, body = node.put("/v1/flows/etl", echo_flow("two"))
    assert status == 201, body
    assert body["created"] is True
    assert body["flow"]["version"] == 2

    status, flow = node.get("/v1/flows/etl")
    assert status == 200
    assert flow["version"] == 2 and flow["deployed"] is True
    assert flow["spec"]["steps"][0]["shell"] == "echo 'two'"

    status, body = node.get("/v1/flows/etl/versions", token=READER_TOKEN)
    assert status == 200
    assert body["flow"] == "etl"
    assert [v["version"] for v in body["versions"]] == [1, 2]
    assert body["versions"][0]["spec"]["steps"][0]["shell"] == "echo 'one'"
    assert all(v["created_at"].endswith("Z") for v in body["versions"])

    status, body = node.get("/v1/flows")
    assert status == 200
    assert [f["name"] for f in body["flows"]] == ["etl"]
    assert "spec" not in body["flows"][0]


def test_deployed_flows_are_listed_by_name(node):
    for name in ("zeta", "alpha", "mid"):
        node.deploy(name, echo_flow(name))
    status, body = node.get("/v1/flows", token=READER_TOKEN)
    assert status == 200
    assert [f["name"] for f in body["flows"]] == ["alpha", "mid", "zeta"]


def test_delete_undeploys_a_flow_and_keeps_its_history(node):
    node.deploy("etl", echo_flow("one"))
    node.deploy("etl", echo_flow("two"))
    run = node.start_run("etl")
    node.wait_run(run["id"])

    status, body = node.delete("/v1/flows/etl")
    assert status == 200, body
    assert body["deployed"] is False

    status, flow = node.get("/v1/flows/etl")
    assert status == 200 and flow["deployed"] is False
    status, body = node.get("/v1/flows")
    assert "etl" not in [f["name"] for f in body["flows"]]
    status, body = node.get("/v1/flows/etl/versions")
    assert status == 200 and [v["version"] for v in body["versions"]] == [1, 2]
    assert node.run(run["id"])["status"] == "succeeded"

    status, body = node.post("/v1/flows/etl/runs", {})
    assert status == 409 and body["error"]["code"] == "flow_undeployed", body

    status, body = node.delete("/v1/flows/never-deployed")
    assert status == 404 and body["error"]["code"] == "not_found", body

    # deploying again makes it live again, as a new version or the same spec
    status, body = node.put("/v1/flows/etl", echo_flow("three"))
    assert status == 201 and body["flow"]["deployed"] is True and body["flow"]["version"] == 3


def test_empty_run_body_is_allowed(node):
    node.deploy("hello", echo_flow())
    status, run = node.post("/v1/flows/hello/runs", body=None)
    assert status == 201, run
    assert run["flow"] == "hello" and run["version"] == 1
    assert run["trigger"] == {"type": "manual"}
    assert run["idempotency_key"] is None


# ---------------------------------------------------------------------------
# Bad requests. One node (module-scoped, so the cases share it), seeded with
# a deployed flow "good" (a required string parameter "region", an optional
# int "count") and an undeployed flow "gone". Each case must answer its
# status, a JSON error with the right code (and field where one input field is
# at fault), and change nothing.

GOOD = flow_spec([step("a", "echo a")],
                 parameters={"region": param("string", required=True), "count": param("int", default=1)})


def spec_with(**step_fields):
    s = step("a", "echo a")
    s.update(step_fields)
    return flow_spec([s])


BIG = 1024 * 1024 + 1  # one byte over the default limits.max_body_bytes

# (id, method, path, body, kwargs, status, code, field)
BAD_REQUESTS = [
    ("malformed_json", "PUT", "/v1/flows/new", b'{"steps": [', {}, 400, "invalid_json", None),
    ("body_not_an_object", "PUT", "/v1/flows/new", b"[1, 2]", {}, 400, None, None),
    ("unknown_spec_field", "PUT", "/v1/flows/new",
     dict(flow_spec([step("a")]), colour="red"), {}, 400, "unknown_field", "colour"),
    ("unknown_step_field", "PUT", "/v1/flows/new", spec_with(colour="red"), {},
     400, "unknown_field", "steps[0].colour"),
    ("missing_steps", "PUT", "/v1/flows/new", {"description": "no steps"}, {},
     400, "missing_field", "steps"),
    ("step_without_name", "PUT", "/v1/flows/new", {"steps": [{"shell": "true"}]}, {},
     400, "missing_field", "steps[0].name"),
    ("wrong_type", "PUT", "/v1/flows/new", spec_with(timeout_s="10"), {},
     400, "invalid_type", "steps[0].timeout_s"),
    ("duplicate_step_name", "PUT", "/v1/flows/new", flow_spec([step("a"), step("a")]), {},
     400, "duplicate", "steps[1].name"),
    ("unknown_dependency", "PUT", "/v1/flows/new",
     flow_spec([step("a"), step("b", depends_on=["nope"])]), {},
     400, "unknown_dependency", "steps[1].depends_on[0]"),
    ("cycle", "PUT", "/v1/flows/new",
     flow_spec([step("a", depends_on=["c"]), step("b", depends_on=["a"]), step("c", depends_on=["b"])]), {},
     400, "cycle", None),
    ("bad_flow_name", "PUT", "/v1/flows/bad*name", flow_spec([step("a")]), {},
     400, "invalid_value", "flow"),
    ("timeout_out_of_range", "PUT", "/v1/flows/new", spec_with(timeout_s=10 ** 9), {},
     400, "invalid_value", "steps[0].timeout_s"),
    ("zero_timeout", "PUT", "/v1/flows/new", spec_with(timeout_s=0), {},
     400, "invalid_value", "steps[0].timeout_s"),
    ("negative_retries", "PUT", "/v1/flows/new", spec_with(retries={"max": -1}), {},
     400, "invalid_value", "steps[0].retries.max"),
    ("oversized_body", "PUT", "/v1/flows/new", b'{"steps": []' + b" " * BIG + b"}", {},
     413, "too_large", None),
    ("wrong_content_type", "PUT", "/v1/flows/new", json.dumps(flow_spec([step("a")])),
     {"content_type": "text/plain"}, 415, "unsupported_media_type", None),
    ("no_token", "PUT", "/v1/flows/new", flow_spec([step("a")]), {"token": None},
     401, "unauthorized", None),
    ("unknown_token", "GET", "/v1/flows", None, {"token": "not-a-token-0123456789"},
     401, "unauthorized", None),
    ("reader_token_on_write", "PUT", "/v1/flows/new", flow_spec([step("a")]),
     {"token": READER_TOKEN}, 403, "forbidden", None),
    ("reader_token_starting_a_run", "POST", "/v1/flows/good/runs", {"parameters": {"region": "eu"}},
     {"token": READER_TOKEN}, 403, "forbidden", None),
    ("unknown_route", "GET", "/v1/nothing-here", None, {}, 404, "not_found", None),
    ("wrong_method", "DELETE", "/v1/runs", None, {}, 405, "method_not_allowed", None),
    ("unknown_run", "GET", "/v1/runs/r-does-not-exist", None, {}, 404, "not_found", None),
    ("cancel_unknown_run", "POST", "/v1/runs/r-does-not-exist/cancel", None, {}, 404, "not_found", None),
    ("unknown_flow", "GET", "/v1/flows/never-deployed", None, {}, 404, "not_found", None),
    ("run_of_unknown_flow", "POST", "/v1/flows/never-deployed/runs", {}, {}, 404, "not_found", None),
    ("run_of_undeployed_flow", "POST", "/v1/flows/gone/runs", {}, {}, 409, "flow_undeployed", None),
    ("unknown_parameter", "POST", "/v1/flows/good/runs", {"parameters": {"region": "eu", "nope": 1}}, {},
     400, "unknown_field", "parameters.nope"),
    ("missing_required_parameter", "POST", "/v1/flows/good/runs", {"parameters": {"count": 2}}, {},
     400, "missing_field", "parameters.region"),
    ("parameter_of_wrong_type", "POST", "/v1/flows/good/runs", {"parameters": {"region": 5}}, {},
     400, "invalid_type", "parameters.region"),
    ("unknown_run_body_field", "POST", "/v1/flows/good/runs", {"params": {"region": "eu"}}, {},
     400, "unknown_field", "params"),
    ("idempotency_key_of_wrong_type", "POST", "/v1/flows/good/runs",
     {"parameters": {"region": "eu"}, "idempotency_key": 7}, {}, 400, "invalid_type", "idempotency_key"),
    ("bad_limit_query", "GET", "/v1/runs?limit=abc", None, {}, 400, "invalid_query", None),
    ("negative_limit_query", "GET", "/v1/runs?limit=-1", None, {}, 400, "invalid_query", None),
    ("bad_status_query", "GET", "/v1/runs?status=sleeping", None, {}, 400, "invalid_query", None),
    ("bad_cursor_query", "GET", "/v1/runs?cursor=not-a-cursor", None, {}, 400, "invalid_query", None),
]


@pytest.fixture(scope="module")
def seeded(request, pg):
    db = pg.create_database("t_bad_requests")
    c = new_cluster(h.fresh_dir(os.path.join(h.IT_ROOT, "test_api_bad_requests")), db)
    try:
        node = c[0]
        node.deploy("good", GOOD)
        node.deploy("gone", echo_flow())
        status, _ = node.delete("/v1/flows/gone")
        assert status == 200
        yield node
    finally:
        close_cluster(c)


def snapshot(node):
    """What a bad request must not change."""
    out = {}
    for path in ("/v1/flows", "/v1/runs", "/v1/flows/good", "/v1/flows/good/versions",
                 "/v1/flows/gone", "/v1/flows/new", "/v1/flows/never-deployed"):
        status, body = node.get(path)
        out[path] = (status, body)
    return out


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_request_gets_its_4xx_and_changes_nothing(seeded, case):
    _, method, path, body, kw, want_status, want_code, want_field = case
    node = seeded
    before = snapshot(node)

    r = node.request(method, path, body=body, **kw)

    assert r.status == want_status, (r.status, r.text[:500])
    assert (r.header("Content-Type") or "").startswith("application/json"), r.headers
    assert isinstance(r.json, dict) and isinstance(r.json.get("error"), dict), r.text[:500]
    err = r.json["error"]
    assert isinstance(err.get("code"), str) and err["code"], err
    assert isinstance(err.get("message"), str) and err["message"], err
    if want_code is not None:
        assert err["code"] == want_code, err
    if want_field is not None:
        assert err.get("field") == want_field, err
    if want_status == 405:
        allow = r.header("Allow") or ""
        assert "GET" in allow, r.headers

    assert snapshot(node) == before


@pytest.mark.parametrize("arg,named", [
    ("--limits.bogus=1", "limits.bogus"),
    ("--limits.max_body_bytes=lots", "limits.max_body_bytes"),
    ("--node.raft_address=localhost:7001", "node.raft_address"),
    ("--raft.heartbeat_ms=5", "raft.heartbeat_ms"),
])
def test_bad_setting_refuses_to_start_naming_the_key(tmp_path, arg, named):
    conf = tmp_path / "flowd.conf"
    conf.write_text("[node]\nid = 1\ndata_dir = %s\n" % (tmp_path / "data"))
    p = subprocess.run([h.FLOWD_BIN, "--config", str(conf), arg],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert named in p.stderr, p.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("name", ["flowd.conf.example", "node1.conf", "node2.conf", "node3.conf"])
def test_shipped_configs_are_valid(name, tmp_path):
    # The configs name /etc/flowd/cluster.secret, read at load: here a
    # private one stands in for it (0600, as flowd wants).
    secret = tmp_path / "cluster.secret"
    secret.write_text("0123456789abcdef0123456789abcdef\n")
    os.chmod(secret, 0o600)
    text = open(os.path.join(h.REPO, "deploy", name)).read()
    path = tmp_path / name
    path.write_text(text.replace("/etc/flowd/cluster.secret", str(secret)))
    p = subprocess.run([h.FLOWD_BIN, "--config", str(path), "--check"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert "config ok" in p.stdout


def test_systemd_unit_verifies(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("no systemd-analyze on this machine")
    unit = open(os.path.join(h.REPO, "systemd", "flowd.service")).read()
    unit = unit.replace("/usr/local/bin/flowd", h.FLOWD_BIN)
    path = tmp_path / "flowd.service"
    path.write_text(unit)
    p = subprocess.run(["systemd-analyze", "verify", str(path)],
                       capture_output=True, text=True, timeout=60)
    problems = [l for l in (p.stdout + p.stderr).splitlines()
                if "flowd.service" in l and "Unknown" not in l or "Unknown key" in l]
    assert p.returncode == 0 and not problems, p.stdout + p.stderr


def test_reads_answer_an_etag_and_304_while_nothing_changed_with_x_flowd_index(node):
    """A poller sends the ETag back in If-None-Match and gets 304 with no body
    until the object changes; X-Flowd-Index is the Raft index of the view the
    answer was read from, and grows with every change."""
    node.deploy("hello", h.echo_flow())
    run_id = node.start_run("hello")["id"]
    node.wait_run(run_id)
    path = "/v1/runs/" + run_id
    first = node.get(path)
    assert first.status == 200
    etag = first.header("ETag")
    index = int(first.header("X-Flowd-Index"))
    assert etag and etag.startswith('"') and index >= 1, first.headers

    for sent in (etag, "W/" + etag, '"nope", ' + etag, "*"):
        again = node.get(path, headers={"If-None-Match": sent})
        assert again.status == 304, (sent, again)
        assert again.text == "" and again.header("ETag") == etag
        assert int(again.header("X-Flowd-Index")) >= index
    other = node.get(path, headers={"If-None-Match": '"0000000000000000"'})
    assert other.status == 200 and other.json == first.json

    listing = node.get("/v1/runs?flow=hello")
    assert listing.status == 200 and listing.header("ETag")
    node.wait_run(node.start_run("hello")["id"])
    changed = node.get("/v1/runs?flow=hello", headers={"If-None-Match": listing.header("ETag")})
    assert changed.status == 200 and len(changed.json["runs"]) == 2
    assert changed.header("ETag") != listing.header("ETag")
    assert int(changed.header("X-Flowd-Index")) > int(listing.header("X-Flowd-Index"))
    # writes and errors carry neither
    created = node.post("/v1/flows/hello/runs", {})
    assert created.status == 201 and created.header("ETag") is None
    missing = node.get("/v1/runs/r-999999999999", headers={"If-None-Match": "*"})
    assert missing.status == 404 and missing.header("ETag") is None


def test_blocking_reads_hold_until_what_they_show_changes_or_the_wait_ends(node):
    """?index=N&wait=D (as Consul's blocking queries): the answer comes when
    the run (or list, or flow) changes after index N, or when D ends; a
    stale N answers at once. X-Flowd-Index is the index of the last change
    of what the answer shows, so an unrelated change leaves it alone."""
    import threading
    import time

    node.deploy("slow", flow_spec([step("s", "sleep 1.5")]))
    node.deploy("quick", h.echo_flow())
    run_id = node.start_run("slow")["id"]
    first = node.get("/v1/runs/" + run_id)
    idx = int(first.header("X-Flowd-Index"))
    assert first.json["status"] in ("queued", "running")

    # an unrelated run does not move this run's index
    node.wait_run(node.start_run("quick")["id"])
    assert int(node.get("/v1/runs/" + run_id).header("X-Flowd-Index")) == idx \
        or node.run(run_id)["status"] == "succeeded"

    got = {}

    def blocked():
        t0 = time.monotonic()
        got["reply"] = node.get("/v1/runs/%s?index=%d&wait=20s" % (run_id, idx), timeout=40)
        got["took"] = time.monotonic() - t0
    t = threading.Thread(target=blocked)
    t.start()
    t.join(h.scaled(30))
    assert not t.is_alive()
    reply = got["reply"]
    assert reply.status == 200 and int(reply.header("X-Flowd-Index")) > idx, reply.headers
    assert reply.json != first.json  # it changed: that is why it came
    assert got["took"] < 15

    # nothing changes: the answer comes when the wait ends, at the same index
    done = node.wait_run(run_id)
    now_idx = int(node.get("/v1/runs/" + run_id).header("X-Flowd-Index"))
    t0 = time.monotonic()
    timed_out = node.get("/v1/runs/%s?index=%d&wait=700ms" % (run_id, now_idx))
    took = time.monotonic() - t0
    assert timed_out.status == 200 and timed_out.json == done
    assert int(timed_out.header("X-Flowd-Index")) == now_idx
    assert took >= 0.65, took
    # a stale index answers at once
    t0 = time.monotonic()
    assert node.get("/v1/runs/%s?index=%d&wait=30s" % (run_id, now_idx - 1)).status == 200
    assert time.monotonic() - t0 < 5

    # a list waits for any run; a flow for its own change (pause)
    listed = node.get("/v1/runs?flow=quick")
    lidx = int(listed.header("X-Flowd-Index"))
    threading.Timer(0.3, lambda: node.start_run("quick")).start()
    again = node.get("/v1/runs?flow=quick&index=%d&wait=20s" % lidx, timeout=40)
    assert again.status == 200 and int(again.header("X-Flowd-Index")) > lidx
    fidx = int(node.get("/v1/flows/slow").header("X-Flowd-Index"))
    threading.Timer(0.3, lambda: node.post("/v1/flows/slow/pause", {})).start()
    paused = node.get("/v1/flows/slow/schedule?index=%d&wait=20s" % fidx, timeout=40)
    assert paused.status == 200 and paused.json["paused"] is True

    for query, field in (("index=-1", "index"), ("index=x", "index"),
                         ("index=18446744073709551616", "index"),
                         ("index=1&wait=soon", "wait"), ("index=1&wait=11m", "wait"),
                         ("wait=5s", "wait"), ("index=1&consistent=true", "index")):
        bad = node.get("/v1/runs/%s?%s" % (run_id, query))
        assert bad.status == 400, (query, bad)
        assert bad.json["error"]["code"] == "invalid_query" and \
            bad.json["error"]["field"] == field, (query, bad.json)


def test_a_node_stopping_answers_its_blocked_reads(cluster):
    """SIGTERM with a read held: the client gets its answer at once and the
    node exits cleanly (no request left suspended)."""
    import threading
    import time

    node = cluster(n=1)[0]
    node.deploy("quick", h.echo_flow())
    run_id = node.start_run("quick")["id"]
    node.wait_run(run_id)
    idx = int(node.get("/v1/runs/" + run_id).header("X-Flowd-Index"))
    got = {}

    def blocked():
        got["reply"] = node.get("/v1/runs/%s?index=%d&wait=5m" % (run_id, idx), timeout=60)
    t = threading.Thread(target=blocked)
    t.start()

    def parked():
        text = node.get("/metrics").text
        return "\nflowd_http_requests_blocked 1\n" in text or None
    h.wait_for(parked, 10, "the read to be held")
    t0 = time.monotonic()
    assert node.terminate(timeout=20) == 0
    t.join(h.scaled(20))
    assert not t.is_alive() and got["reply"].status == 200
    assert time.monotonic() - t0 < 10


def test_sigterm_while_writes_arrive_on_open_connections_exits_cleanly(cluster):
    """Other nodes and clients keep sending on keep-alive connections while a
    node stops: every request is answered (503 once it stops) and the node
    exits 0 (it once aborted in MHD_stop_daemon with a connection
    suspended: a request counted after its suspension, or suspended after
    the count was read)."""
    import http.client
    import threading

    c = cluster(n=1)
    node = c[0]
    node.deploy("quick", h.echo_flow())
    for round_ in range(3):
        stop = threading.Event()
        answered = []

        def writer():
            conn = http.client.HTTPConnection("127.0.0.1", node.api_port, timeout=10)
            body = json.dumps({})
            while not stop.is_set():
                try:
                    conn.request("POST", "/v1/flows/quick/runs", body=body,
                                 headers={"Authorization": "Bearer " + h.ADMIN_TOKEN,
                                          "Content-Type": "application/json"})
                    r = conn.getresponse()
                    r.read()
                    answered.append(r.status)
                except (OSError, http.client.HTTPException):
                    return  # the node closed the connection: it is stopping
            conn.close()
        threads = [threading.Thread(target=writer) for _ in range(6)]
        for t in threads:
            t.start()
        h.wait_for(lambda: len(answered) >= 30 or None, 20, "writes to flow")
        rc = node.terminate(timeout=20)
        stop.set()
        for t in threads:
            t.join(h.scaled(20))
        assert rc == 0, "round %d: exit %s" % (round_, rc)
        assert set(answered) <= {201, 503}, set(answered)
        node.start()
