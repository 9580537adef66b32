"""test_raft_tls.py - Raft between real flowd nodes over mutually authenticated
TLS (consensus/transport_tls.c, [tls] cert_file/key_file/ca_file): a TLS
cluster elects, replicates and fails over; a plain TCP client, a client with a
certificate of another CA, one with no certificate and a TLS 1.1 client are
each closed by the Raft port without changing the cluster's term, commit index
or history, and the node logs each refusal; the same forged bytes sent over
TLS 1.2 with a certificate of the cluster CA do reach raft (the control that
shows the forgery is potent); a node whose certificate the CA did not sign
does not start.
The plain TCP path (no [tls]) is what test_cluster.py runs."""

import os
import socket
import ssl
import struct
import time
import warnings

import pytest

import conftest
import flowd_harness as h
from flowd_harness import echo_flow, wait_for

# Until the HTTPS API lands (api/server.c with MHD_USE_TLS), [tls] turns on
# TLS for Raft only, and the harness must talk plain HTTP to the API.
with open(os.path.join(h.REPO, "api", "server.c")) as _f:
    API_TLS = "MHD_USE_TLS" in _f.read()

REFUSED = "raft-tls: refused connection"


@pytest.fixture
def tls_cluster(request, workdir, db):
    """Factory: tls_cluster(n=3, overrides=None, start=True), a Cluster with
    [tls] (certificates from scripts/make-certs.sh), closed at teardown."""
    made = []

    def factory(n=3, overrides=None, start=True):
        c = h.Cluster(os.path.join(workdir, "c%d" % len(made)), db, n=n,
                      overrides=overrides, tls=True)
        if not API_TLS:
            for node in c.nodes:
                h.TLS_PORTS.pop(node.api_port, None)
        conftest._live_clusters.append(c)
        made.append(c)
        if start:
            c.start()
        return c

    yield factory
    for c in made:
        conftest.close_cluster(c, print_logs=conftest._failed(request))


def count(node, text):
    return node.log_text().count(text)


def lines(node, text):
    return [line for line in node.log_text().splitlines() if text in line]


def raft_preamble(node_id, address):
    """raft_uv_tcp's handshake: protocol 1, server id, address length padded
    to 8, the NUL-terminated address (little endian)."""
    raw = address.encode() + b"\0"
    raw += b"\0" * (-len(raw) % 8)
    return struct.pack("<QQQ", 1, node_id, len(raw)) + raw


def forged_vote(node_id, term):
    """A RequestVote (type 3) from candidate `node_id` at `term` with a log
    longer than anyone's and the disrupt-leader flag: a leader that gets it
    steps down and moves to `term` (raft 0.15 src/recv_request_vote.c)."""
    header = struct.pack("<QQQQQ", term, node_id, 1 << 40, term, 1)
    return struct.pack("<QQ", 3, len(header)) + header


def client_context(cert=None, key=None, version=None):
    """An attacker's TLS client: verifies nothing, may present a certificate,
    may insist on one TLS version (ssl.TLSVersion)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if version is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1_1
            if version < ssl.TLSVersion.TLSv1_2:
                ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let OpenSSL offer it
            ctx.minimum_version = ctx.maximum_version = version
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


def send_and_wait_close(port, payload, ctx=None, timeout=10):
    """Connect to 127.0.0.1:port (through TLS with `ctx`), send `payload`
    and read until the node closes the connection. Returns how it ended;
    fails if the connection is still open after `timeout` seconds."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=h.scaled(timeout))
    try:
        if ctx is not None:
            try:
                sock = ctx.wrap_socket(sock)
            except (ssl.SSLError, OSError) as e:
                return "handshake failed: %s" % e
        try:
            sock.sendall(payload)
        except (ssl.SSLError, OSError) as e:
            return "send failed: %s" % e
        while True:
            try:
                data = sock.recv(4096)
            except socket.timeout:
                raise AssertionError("the raft port kept the connection open for %ss" % timeout)
            except (ssl.SSLError, OSError) as e:
                return "closed: %s" % e
            if not data:
                return "closed"
    finally:
        sock.close()


def settled(c, seconds=1.0):
    """Every node's (term, commit index, applied index), once they have
    stayed the same for `seconds` (node heartbeats are off in these tests)."""
    def snapshot():
        out = {}
        for n in c.nodes:
            info = n.cluster_info()
            out[n.id] = (info["term"], info["commit_index"], info["applied_index"])
        return out

    def still():
        a = snapshot()
        time.sleep(seconds)
        b = snapshot()
        return b if a == b and len({v[1] for v in b.values()}) == 1 else None
    return wait_for(still, 30, "the cluster's indexes to settle")


def test_tls_raft_elects_replicates_and_survives_a_leader_kill9(tls_cluster):
    c = tls_cluster(3)
    leader = c.leader()
    followers = [n for n in c.nodes if n is not leader]
    for n in c.nodes:
        assert "transport=tls" in n.log_text(), h.tail(n.log_path)
        assert REFUSED not in n.log_text(), h.tail(n.log_path)
    # The leader reached each follower through TLS, and each follower
    # accepted it, logging the certificate's CN and the TLS version.
    wait_for(lambda: len(lines(leader, "raft-tls: connected to")) >= 2, 10,
             "the leader's TLS connections to both followers")
    for n in followers:
        wait_for(lambda: [line for line in lines(n, "raft-tls: accepted")
                          if "id=%d " % leader.id in line
                          and "cn=node-%d " % leader.id in line
                          and "version=TLS1.3" in line], 10,
                 "node %d to accept the leader over TLS 1.3" % n.id)

    # Replication: a deploy through a follower, runs through every node.
    # (Retries: an attempt placed on the node killed below is lost, then
    # retried elsewhere.)
    status, body = followers[0].put("/v1/flows/fast", h.flow_spec(
        [h.step("only", "echo tls", retries=3)]))
    assert status == 201, body
    ids = [c.nodes[i % 3].start_run("fast", idempotency_key="k%d" % i)["id"]
           for i in range(6)]
    for run_id in ids:
        assert leader.wait_run(run_id)["status"] == "succeeded"
    for n in c.nodes:
        wait_for(lambda: all(n.get("/v1/runs/" + r)[1].get("status") == "succeeded"
                             for r in ids), 10, "node %d to apply every run" % n.id)

    # Failover: the leader dies; the survivors elect over TLS and go on.
    assert leader.kill9() == -9
    survivors = [n for n in c.nodes if n is not leader]
    new_leader = wait_for(lambda: next((n for n in survivors
                                        if n.cluster_info().get("role") == "leader"), None),
                          30, "a new leader among the survivors", ignore=(OSError,))
    more = []
    for i in range(4):
        node = survivors[i % 2]

        def accepted():
            status, body = node.post("/v1/flows/fast/runs", {"idempotency_key": "m%d" % i})
            return body if status in (200, 201) else None
        more.append(wait_for(accepted, 15, "a write through node %d" % node.id)["id"])
    for run_id in more:
        assert new_leader.wait_run(run_id)["status"] == "succeeded"

    # The old leader comes back through TLS and catches up.
    accepted_before = count(new_leader, "raft-tls: accepted")
    leader.start()
    wait_for(lambda: count(new_leader, "raft-tls: accepted") > accepted_before, 20,
             "the new leader to accept the restarted node over TLS")
    wait_for(lambda: all(leader.get("/v1/runs/" + r)[1].get("status") == "succeeded"
                         for r in ids + more), 30, "the restarted node to catch up")


def test_raft_port_refuses_plain_tcp_a_foreign_ca_no_certificate_and_tls11(tls_cluster, workdir):
    # Node heartbeats off, so that the commit index moves only if something
    # is written.
    c = tls_cluster(3, overrides={"cluster.node_heartbeat_ms": "60000",
                                  "cluster.node_timeout_ms": "600000"})
    leader = c.leader()
    leader.deploy("fast", echo_flow("before"))
    run_id = leader.start_run("fast")["id"]
    assert leader.wait_run(run_id)["status"] == "succeeded"
    before = settled(c)
    runs_before = sorted(r["id"] for r in leader.list_runs())
    term = before[leader.id][0]
    peer = next(n for n in c.nodes if n is not leader)
    forged = raft_preamble(peer.id, peer.raft_address) + forged_vote(peer.id, term + 50)

    rogue = h.make_certs(os.path.join(workdir, "rogue-ca"), "rogue")
    peer_cert = (os.path.join(c.certs, "node-%d.pem" % peer.id),
                 os.path.join(c.certs, "node-%d.key" % peer.id))
    # (what, client TLS context or None for plain TCP, what the log says)
    attacks = [
        ("plain tcp", None, "unexpected TLS packet"),
        ("a certificate of another CA",
         client_context(os.path.join(rogue, "rogue.pem"), os.path.join(rogue, "rogue.key")),
         "issuer is unknown"),
        ("no certificate", client_context(), "certificate is required"),
        ("TLS 1.1 with a node's certificate",
         client_context(*peer_cert, version=ssl.TLSVersion.TLSv1_1), "version"),
    ]
    for what, ctx, reason in attacks:
        refused = len(lines(leader, REFUSED))
        ended = send_and_wait_close(leader.raft_port, forged, ctx)
        new = wait_for(lambda: lines(leader, REFUSED)[refused:], 10,
                       "node %d to log the refusal of %s" % (leader.id, what))
        print("%s: client saw %r; node logged %s" % (what, ended, new))
        assert any(reason.lower() in line.lower() for line in new), (what, new)

    # Nothing reached raft: the forged vote's term (+50) is nowhere, and the
    # history is the same. On a quiet machine the term and indexes do not
    # move at all; a loaded one (ASan, a parallel build) may see an
    # election of its own (+1) or the leader's housekeeping entry, which
    # are not the attacker's.
    after = settled(c)
    assert all(after[i][0] < term + 50 for i in after), (before, after)
    if after != before:
        print("indexes moved on their own: %r -> %r" % (before, after))
    assert sorted(r["id"] for r in c.leader().list_runs()) == runs_before

    # Control: the same bytes over TLS (1.2 here: accepted too) with a
    # certificate of the cluster CA are a Raft peer's and do reach raft: the
    # leader steps down to the forged term. (Any certificate the CA signed
    # is a full peer.)
    ctx = client_context(*peer_cert, version=ssl.TLSVersion.TLSv1_2)
    with socket.create_connection(("127.0.0.1", leader.raft_port), timeout=h.scaled(10)) as sock:
        with ctx.wrap_socket(sock) as tls:
            tls.sendall(forged)
            wait_for(lambda: leader.cluster_info()["term"] >= term + 50, 10,
                     "the forged vote to move node %d's term" % leader.id,
                     ignore=(OSError,))
    assert [line for line in lines(leader, "raft-tls: accepted")
            if "cn=node-%d " % peer.id in line and "version=TLS1.2" in line], \
        h.tail(leader.log_path)
    c.leader()  # and the cluster elects again


def test_a_node_whose_certificate_the_ca_did_not_sign_does_not_start(tls_cluster, workdir):
    c = tls_cluster(1, start=False)
    node = c.nodes[0]
    rogue = h.make_certs(os.path.join(workdir, "rogue-ca"), "rogue")
    with open(node.config_path) as f:
        text = f.read()
    text = text.replace(os.path.join(c.certs, "node-1.pem"), os.path.join(rogue, "rogue.pem"))
    text = text.replace(os.path.join(c.certs, "node-1.key"), os.path.join(rogue, "rogue.key"))
    with open(node.config_path, "w") as f:
        f.write(text)
    node.start(wait=False)
    rc = node.proc.wait(timeout=h.scaled(30))
    assert rc != 0
    log = node.log_text()
    # (Should the API's TLS check the files first one day, it names them too.)
    assert "does not verify against ca_file" in log or "rogue" in log, h.tail(node.log_path)
