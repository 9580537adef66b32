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
    node = cluster(1)[0]
    specs = []
    for i in range(3):
        spec = {"description": "version %d" % (i + 1),
                "steps": [{"name": "s", "command": ["echo", str(i)]}]}
        node.deploy("versioned", spec)
        specs.append(spec)

    def all_versions():
        status, body = node.get("/v1/flows/versioned/versions")
        assert status == 200, (status, body)
        vs = body["versions"]
        # version 2's spec left memory (no run uses it): PostgreSQL has it
        # once the applier wrote its row
        return vs if all(v["spec"] is not None for v in vs) else None

    vs = wait_for(all_versions, 15, "every version's spec")
    assert [v["version"] for v in vs] == [1, 2, 3]
    for v, spec in zip(vs, specs):
        assert v["spec"]["description"] == spec["description"]
        assert v["spec"]["steps"][0]["command"] == spec["steps"][0]["command"]
    # the flow itself shows the newest
    status, flow = node.get("/v1/flows/versioned")
    assert status == 200 and flow["version"] == 3
    assert flow["spec"]["description"] == "version 3"
