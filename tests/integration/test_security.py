"""test_security.py - the perimeter (issue 10): HTTPS on the API with curl
and flowctl, a node credential that no user token replaces, internal
commands checked field by field, a poisoned command refused while the
applier stays current, operator and hashed tokens, forwarded writes that
keep their client's identity, and connections that a flood cannot take
from /healthz and from the nodes."""

import hashlib
import hmac
import json
import os
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import time

import pytest

import flowd_harness as h
from flowd_harness import echo_flow, wait_for

OPERATOR_TOKEN = "it-operator-token-0123456789abcdef"
FLOWCTL = os.path.join(h.BUILD, "flowctl")


# ---------------------------------------------------------------------------
# A node's signature, as daemon/nodecred.c makes it (api/auth.c)

def node_headers(node_id, method, target, body=b"", on_behalf=None,
                 secret=h.CLUSTER_SECRET, now_ms=None):
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    msg = ("flowd-node-v1\n%d\n%d\n%s\n%s\n%s\n%s" % (
        node_id, ms, method, target, hashlib.sha256(body).hexdigest(),
        on_behalf or "")).encode()
    mac = hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()
    hdrs = {"X-Flowd-Node": str(node_id), "X-Flowd-Node-Auth": "%d.%s" % (ms, mac)}
    if on_behalf is not None:
        hdrs["X-Flowd-On-Behalf"] = on_behalf
    return hdrs


def internal(node, cmd, node_id=1, **kw):
    body = cmd if isinstance(cmd, bytes) else json.dumps(cmd).encode()
    hdrs = node_headers(node_id, "POST", "/internal/v1/commands", body, **kw)
    return node.post("/internal/v1/commands", body, token=None, headers=hdrs)


# ---------------------------------------------------------------------------
# TLS on the API

def peer_cert(port, cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
            return t.getpeercert(binary_form=True), t.version()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # TLS 1.1, on purpose
def test_https_api_answers_curl_and_flowctl_and_refuses_plain_http(cluster, workdir):
    c = cluster(1, tls=True)
    node = c[0]
    ca = os.path.join(c.certs, "ca.pem")
    url = "https://" + node.api_address

    # curl verifies the node against the cluster CA
    out = subprocess.run(["curl", "-sS", "--cacert", ca, url + "/healthz"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and json.loads(out.stdout) == {"status": "ok"}, out
    # and refuses it without that CA
    out = subprocess.run(["curl", "-sS", url + "/healthz"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 60, out  # peer certificate cannot be authenticated

    # flowctl likewise, with --ca-file or $FLOWD_CA_FILE
    ok = subprocess.run([FLOWCTL, "--url", url, "--token", h.ADMIN_TOKEN, "--ca-file", ca,
                         "-o", "json", "cluster"], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok
    assert json.loads(ok.stdout)["node_id"] == 1
    env = dict(os.environ, FLOWD_CA_FILE=ca, FLOWD_TOKEN=h.ADMIN_TOKEN)
    ok = subprocess.run([FLOWCTL, "--url", url, "-o", "json", "flows"], capture_output=True,
                        text=True, timeout=30, env=env)
    assert ok.returncode == 0, ok
    bad = subprocess.run([FLOWCTL, "--url", url, "--token", h.ADMIN_TOKEN, "cluster"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0 and "certificate" in bad.stderr.lower(), bad

    # plain HTTP to the TLS port gets no HTTP answer
    with pytest.raises((OSError, h.http.client.HTTPException)):
        conn = h.http.client.HTTPConnection("127.0.0.1", node.api_port, timeout=5)
        conn.request("GET", "/healthz")
        r = conn.getresponse()
        raise AssertionError("plain HTTP answered %d" % r.status)

    # TLS 1.1 and older are refused
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, OSError)):
        with socket.create_connection(("127.0.0.1", node.api_port), timeout=5) as s:
            ctx.wrap_socket(s, server_hostname="127.0.0.1")

    # SIGHUP: a new certificate for new connections, the node keeps going
    before, version = peer_cert(node.api_port, ca)
    assert version in ("TLSv1.2", "TLSv1.3")
    fresh = os.path.join(workdir, "fresh")
    os.makedirs(fresh)
    for f in ("ca.pem", "ca.key"):
        shutil.copy(os.path.join(c.certs, f), fresh)
    h.make_certs(fresh, "node-1")
    shutil.copy(os.path.join(fresh, "node-1.pem"), os.path.join(c.certs, "node-1.pem"))
    shutil.copy(os.path.join(fresh, "node-1.key"), os.path.join(c.certs, "node-1.key"))
    pid = node.proc.pid
    node.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: peer_cert(node.api_port, ca)[0] != before, 10,
             "the reloaded certificate", ignore=(OSError,))
    assert node.proc.pid == pid and node.alive()
    assert node.get("/healthz").status == 200
    assert "api certificate reloaded" in node.log_text()


def test_three_nodes_over_tls_forward_writes_and_run_steps(cluster):
    c = cluster(3, tls=True)
    leader = c.leader()
    follower = next(n for n in c.nodes if n is not leader)
    status, body = follower.put("/v1/flows/fast", echo_flow("over tls"))
    assert status == 201, body
    ids = [c.nodes[i % 3].start_run("fast", idempotency_key="t%d" % i)["id"]
           for i in range(6)]
    for run_id in ids:
        assert follower.wait_run(run_id)["status"] == "succeeded"


# ---------------------------------------------------------------------------
# The node credential and internal commands

POISON = {"v": 1, "op": "deploy", "ts": 9000000000000000000, "flow": "poison",
          "spec": {"steps": [{"name": "a", "command": ["true"]}]}}


def test_internal_route_takes_only_checked_commands_from_signed_nodes(cluster, psql):
    c = cluster(3)
    leader = c.leader()
    leader.deploy("fast", echo_flow("x"))
    run = leader.start_run("fast")
    assert leader.wait_run(run["id"])["status"] == "succeeded"
    for node in c.nodes:
        # every user token is refused on the route between nodes
        r = node.post("/internal/v1/commands", {"v": 1, "op": "nop", "ts": 1})
        assert r.status == 403 and r.json["error"]["code"] == "forbidden", r
        r = node.post("/internal/v1/commands", {"v": 1, "op": "nop", "ts": 1},
                      token=h.READER_TOKEN)
        assert r.status == 403, r
        r = node.post("/internal/v1/commands", {"v": 1, "op": "nop", "ts": 1}, token=None)
        assert r.status == 401, r
    # a wrong secret, a stale time, a changed body: refused
    r = internal(leader, {"v": 1, "op": "nop", "ts": 1}, secret="not-the-cluster-secret-000")
    assert r.status == 401 and "bad signature" in r.json["error"]["message"], r
    r = internal(leader, {"v": 1, "op": "nop", "ts": 1},
                 now_ms=int(time.time() * 1000) - 120000)
    assert r.status == 401, r
    body = json.dumps({"v": 1, "op": "nop", "ts": 1}).encode()
    hdrs = node_headers(2, "POST", "/internal/v1/commands", body)
    r = leader.post("/internal/v1/commands", body.replace(b"1}", b"2}"), token=None,
                    headers=hdrs)
    assert r.status == 401, r

    index_before = leader.cluster_info()["applied_index"]
    # the commands a node does not send, or sends otherwise
    for cmd, field in [({}, "v"),
                       (POISON, "ts"),
                       (dict(POISON, ts=1), "op"),
                       ({"v": 1, "op": "node_up", "ts": 1, "node": 3, "boot": 1,
                         "capacity": 4}, "node"),
                       ({"v": 1, "op": "node_up", "ts": 1, "node": 2, "boot": 1,
                         "capacity": 4, "extra": 1}, "extra"),
                       ({"v": 1, "op": "task_finish", "ts": 1, "run": "r", "step": "a",
                         "attempt": 1, "node": 2, "exit_code": 1 << 40, "signal": 0,
                         "reason": "exit", "stdout": "", "stderr": "",
                         "truncated": False}, "exit_code"),
                       ({"v": 1, "op": "batch", "ts": 1,
                         "cmds": [{"v": 1, "op": "node_alive", "ts": 1, "node": 2,
                                   "boot": 1}]}, "cmds")]:
        r = internal(leader, cmd, node_id=2)
        assert r.status == 400, (cmd, r)
        assert r.json["error"]["field"] == field, (cmd, r.json)
    # a node's own heartbeat goes through
    r = internal(leader, {"v": 1, "op": "nop", "ts": 1}, node_id=2)
    assert r.status == 200, r
    # nothing refused was committed, and PostgreSQL keeps up
    wait_for(lambda: leader.cluster_info()["db_applied_index"] >= index_before, 30,
             "the applier to be current")
    assert psql("SELECT count(*) FROM flows WHERE name = 'poison'") == [['0']]
    run = leader.start_run("fast")
    assert leader.wait_run(run["id"])["status"] == "succeeded"
    leader.wait_db_caught_up()
    info = leader.cluster_info()
    assert "db_write_failing" not in info, info
    assert "credential refused" in leader.log_text()


def test_roles_hashed_tokens_and_forwarded_identity(cluster, psql):
    hashed = subprocess.run([h.FLOWD_BIN, "hash-token"], input=OPERATOR_TOKEN + "\n",
                            capture_output=True, text=True, timeout=10)
    assert hashed.returncode == 0, hashed
    digest = hashed.stdout.strip()
    assert digest == "sha256:" + hashlib.sha256(OPERATOR_TOKEN.encode()).hexdigest()
    # a named token ([tokens] name = role hash): the audit table says "ci-bot"
    c = cluster(3, overrides={"tokens.ci-bot": "operator " + digest})
    leader = c.leader()
    follower = next(n for n in c.nodes if n is not leader)
    leader.deploy("fast", echo_flow("x"))
    wait_for(lambda: follower.get("/v1/flows/fast").status == 200, 10, "the flow on a follower")

    # an operator starts and cancels runs, on any node, but cannot deploy
    for node in (leader, follower):
        r = node.post("/v1/flows/fast/runs", {}, token=OPERATOR_TOKEN)
        assert r.status == 201, r
        r = node.put("/v1/flows/other", echo_flow("y"), token=OPERATOR_TOKEN)
        assert r.status == 403 and "admin" in r.json["error"]["message"], r
        # a reader cannot start one, here or through a follower
        r = node.post("/v1/flows/fast/runs", {}, token=h.READER_TOKEN)
        assert r.status == 403 and "operator" in r.json["error"]["message"], r
    # the hash itself is not a token
    assert follower.get("/v1/flows", token=digest).status == 401
    # a client claiming a role in the node's header is still a client
    r = follower.post("/v1/flows/fast/runs", {}, token=h.READER_TOKEN,
                      headers={"X-Flowd-On-Behalf": "admin admin-1 127.0.0.1"})
    assert r.status == 403, r

    # every write is in the audit table: who (by token name), what, from
    # where, which node took it, at which Raft index
    r = h.http_request(follower.api_port, "POST", "/v1/flows/fast/runs", {},
                       token=OPERATOR_TOKEN, source="127.0.0.2")
    assert r.status == 201, r
    leader.wait_db_caught_up()
    for node in c.nodes:
        node.wait_db_caught_up()
    rows = psql("SELECT actor, role, address, node, action, method, path, op, result "
                "FROM audit ORDER BY raft_index")
    assert ["admin-1", "admin", "127.0.0.1", str(leader.id), "flow_put", "PUT",
            "/v1/flows/fast", "deploy", "ok"] in rows, rows
    assert ["ci-bot", "operator", "127.0.0.2", str(follower.id), "run_create", "POST",
            "/v1/flows/fast/runs", "run_create", "ok"] in rows, rows
    ops = [r for r in rows if r[0] == "ci-bot"]
    assert len(ops) == 3, rows  # two runs above, one here; refused ones never got in
    assert all(r[1] != "reader" for r in rows), rows
    idx = psql("SELECT raft_index FROM audit WHERE address = '127.0.0.2'")
    assert len(idx) == 1 and int(idx[0][0]) > 0


def test_no_token_mode_refuses_root(workdir, db):
    c = h.Cluster(workdir, db, n=1)
    node = c[0]
    text = open(node.config_path).read()
    text = text.replace("admin_tokens = %s" % h.ADMIN_TOKEN, "").replace(
        "reader_tokens = %s" % h.READER_TOKEN, "")
    with open(node.config_path, "w") as f:
        f.write(text)
    out = subprocess.run([h.FLOWD_BIN, "--config", node.config_path], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 2 and "refusing to serve an open API as root" in out.stderr, out


# ---------------------------------------------------------------------------
# Connections

def test_a_connection_flood_leaves_healthz_and_the_nodes_alone(cluster):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 8192)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    c = cluster(3, internal=True, overrides={"api.read_timeout_s": 3,
                                             "cluster.node_timeout_ms": 2000,
                                             "cluster.node_heartbeat_ms": 250})
    leader = c.leader()
    target = leader
    idle, slow = [], []
    try:
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", target.api_port), timeout=5,
                                         source_address=("127.0.0.1", 0))
            s.setblocking(False)
            slow.append(s)
        for _ in range(3000):
            s = socket.socket()
            s.setblocking(False)
            s.bind(("127.0.0.1", 0))
            s.connect_ex(("127.0.0.1", target.api_port))
            idle.append(s)
        times = []
        deadline = time.monotonic() + 8
        k = 0
        while time.monotonic() < deadline:
            # the trickle: one byte of a request head each round
            for s in slow:
                try:
                    s.send(b"GET /healthz HTTP/1.1\r\nX: "[k % 27:k % 27 + 1] or b"x")
                except OSError:
                    pass
            k += 1
            t0 = time.monotonic()
            conn = h.http.client.HTTPConnection("127.0.0.1", target.api_port, timeout=5,
                                                source_address=("127.0.0.2", 0))
            conn.request("GET", "/healthz")
            r = conn.getresponse()
            r.read()
            conn.close()
            times.append(time.monotonic() - t0)
            assert r.status == 200
            for node in c.nodes:
                members = node.get("/v1/cluster", timeout=5, source="127.0.0.2").json["members"]
                assert all(m["live"] is not False for m in members), members
            time.sleep(0.25)
        times.sort()
        print("healthz from 127.0.0.2 during the flood: n=%d median %.1f ms max %.1f ms"
              % (len(times), 1000 * times[len(times) // 2], 1000 * times[-1]))
        assert times[len(times) // 2] < 0.1, times
        # the slow clients were dropped at the deadline
        closed = 0
        for s in slow:
            try:
                if s.recv(1) == b"":
                    closed += 1
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
        assert closed == len(slow), "%d of %d slow connections dropped" % (closed, len(slow))
        assert "dropped" in target.log_text()
    finally:
        for s in idle + slow:
            s.close()
    for node in c.nodes:
        members = node.get("/v1/cluster").json["members"]
        assert all(m["live"] is not False for m in members), members


# ---------------------------------------------------------------------------
# The applier says so when PostgreSQL refuses a write

def test_a_write_postgresql_refuses_is_reported_not_retried_silently(cluster, psql):
    c = cluster(1)
    node = c[0]
    node.deploy("fine", echo_flow("x"))
    node.wait_db_caught_up()
    # A row PostgreSQL will not take (a trigger stands in for any refusal
    # that is not the connection: a constraint, a full disk's error).
    psql("CREATE FUNCTION refuse_flow() RETURNS trigger LANGUAGE plpgsql AS $$ "
         "BEGIN IF NEW.name = 'refused' THEN RAISE EXCEPTION 'flowd test: refused'; END IF; "
         "RETURN NEW; END $$")
    psql("CREATE TRIGGER refuse_flow BEFORE INSERT OR UPDATE ON flows "
         "FOR EACH ROW EXECUTE FUNCTION refuse_flow()")
    status, body = node.put("/v1/flows/refused", echo_flow("y"))
    assert status == 201, body

    def failing():
        info = node.cluster_info()
        return info.get("db_write_failing")
    f = wait_for(failing, 30, "GET /v1/cluster to report the refused write")
    assert f["index"] > 0 and "flowd test: refused" in f["error"] and f["writes_refused"] >= 1, f
    metrics = node.get("/metrics").text
    assert "flowd_db_write_failing 1" in metrics, metrics[:2000]
    assert "write failed, retrying" in node.log_text()

    # fixed in PostgreSQL: the writer goes on, the report clears
    psql("DROP TRIGGER refuse_flow ON flows")
    wait_for(lambda: "db_write_failing" not in node.cluster_info(), 60,
             "the report to clear once PostgreSQL takes the row")
    node.wait_db_caught_up()
    assert psql("SELECT count(*) FROM flows WHERE name = 'refused'") == [['1']]
    assert "flowd_db_write_failing 0" in node.get("/metrics").text
