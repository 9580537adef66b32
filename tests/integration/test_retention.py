"""test_retention.py - what the state machine keeps in memory is bounded:
idempotency keys leave after limits.idempotency_ttl_s or beyond
limits.idempotency_keys (oldest first), and the specs of old flow versions
are served from PostgreSQL (docs/design.md, "Finished runs leave memory")."""

import time

from flowd_harness import wait_for

NOOP = {"steps": [{"name": "s", "command": ["true"]}]}


def test_a_key_past_its_retention_makes_a_new_run(cluster):
    node = cluster(1, overrides={"limits.idempotency_ttl_s": "2"})[0]
    node.deploy("keyed", NOOP)
    t0 = time.monotonic()
    first = node.start_run("keyed", idempotency_key="nightly")
    again = node.start_run("keyed", idempotency_key="nightly", expect=200)
    assert again["id"] == first["id"]

    def new_run():
        status, run = node.post("/v1/flows/keyed/runs", {"idempotency_key": "nightly"})
        assert status in (200, 201), (status, run)
        return run if status == 201 else None

    second = wait_for(new_run, 15, "the key to leave after 2 s")
    assert time.monotonic() - t0 >= 2
    assert second["id"] != first["id"]
    # the new run owns the key now
    assert node.start_run("keyed", idempotency_key="nightly", expect=200)["id"] == second["id"]


def test_beyond_the_key_count_the_oldest_key_leaves(cluster):
    node = cluster(1, overrides={"limits.idempotency_keys": "3"})[0]
    node.deploy("keyed", NOOP)
    ids = {k: node.start_run("keyed", idempotency_key=k)["id"] for k in "abcd"}
    # "a" was pushed out by d; b, c and d still name their runs
    for k in "bcd":
        assert node.start_run("keyed", idempotency_key=k, expect=200)["id"] == ids[k]
    fresh = node.start_run("keyed", idempotency_key="a", expect=201)
    assert fresh["id"] != ids["a"]


def test_old_versions_come_from_postgresql_with_their_specs(cluster):
    # a snapshot every 16 entries: old specs leave memory at a snapshot
    node = cluster(1, overrides={"raft.snapshot_threshold": "16",
                                 "raft.snapshot_trailing": "16"})[0]
    specs = []
    for i in range(3):
        spec = {"description": "version %d" % (i + 1),
                "steps": [{"name": "s", "command": ["echo", str(i)]}]}
        node.deploy("versioned", spec)
        specs.append(spec)
    node.deploy("other", NOOP)

    def snapshotted():
        # entries until a snapshot was taken after the deploys
        node.start_run("other")
        return "snapshot index=" in node.log_text() or None

    wait_for(snapshotted, 30, "a snapshot")
    status, body = node.get("/v1/flows/versioned/versions")
    assert status == 200, body
    vs = body["versions"]
    assert [v["version"] for v in vs] == [1, 2, 3]
    # versions 1 and 2 left memory at the snapshot: their specs are
    # PostgreSQL's, and PostgreSQL had them before they left
    for v, spec in zip(vs, specs):
        assert v["spec"] is not None, vs
        assert v["spec"]["description"] == spec["description"]
        assert v["spec"]["steps"][0]["command"] == spec["steps"][0]["command"]
    # the flow itself shows the newest
    status, flow = node.get("/v1/flows/versioned")
    assert status == 200 and flow["version"] == 3
    assert flow["spec"]["description"] == "version 3"
