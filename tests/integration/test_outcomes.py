"""test_outcomes.py - a step's outcome always reaches the leader and commits:
outcomes travel in batches bounded by bytes (limits.max_body_bytes) as well
as by count, an outcome too large on its own is cut to fit, and one the
leader still refuses goes again without its logs, so that no slot stays
taken and no run stays `running`.

Outcomes of steps that print non-ASCII bytes grow six-fold in JSON (\\u0001
for each byte): 64 KiB of \\x01 on stdout and on stderr make a ~786 KB
task_finish, so two of them are over the default 1 MiB request body."""

import flowd_harness as h
from flowd_harness import wait_for

NOISE = "head -c 65536 /dev/zero | tr '\\0' '\\1'"
NOISY = NOISE + "; " + NOISE + " >&2"          # 64 KiB of \x01 on each stream


def noisy_flow(n=12):
    return h.flow_spec([h.step("s%02d" % i, NOISY) for i in range(n)])


def quick_flow(n):
    return h.flow_spec([h.step("q%02d" % i, "true") for i in range(n)])


def attempt_nodes(run):
    return {a["node"] for s in run["steps"] for a in s["attempts"]}


def summary(run):
    """'r-1 running: s00 running@2, s01 succeeded@1, ...' for failure messages."""
    return "%s %s: %s" % (run["id"], run["status"], ", ".join(
        "%s %s@%s" % (s["name"], s["status"],
                      s["attempts"][-1]["node"] if s["attempts"] else "-")
        for s in run["steps"]))


def wait_all_succeeded(node, run_ids, timeout):
    """Poll until every run succeeded; on timeout, fail with each run's steps
    and where they ran."""
    last = {}

    def done():
        for r in run_ids:
            # a node that has not applied the run yet answers 404 (the run
            # was started through another node, or leadership moved under
            # a loaded machine): ask again
            status, run = node.get("/v1/runs/" + r)
            if status == 404:
                return False
            assert status == 200, (status, run)
            last[r] = run
        return all(last[r]["status"] == "succeeded" for r in run_ids)
    try:
        wait_for(done, timeout, "every run to succeed", interval=0.2, ignore=(OSError,))
    except AssertionError as e:
        raise AssertionError("%s\n%s" % (e, "\n".join(summary(last[r]) for r in run_ids
                                                      if r in last))) from None
    return [last[r] for r in run_ids]


def wait_placed(node, run_id, timeout=15):
    """The run once every step has an attempt."""
    return wait_for(lambda: (lambda r: r if all(s["attempts"] for s in r["steps"]) else None)(
        node.run(run_id)), timeout, "every step of %s to be placed" % run_id)


def logs(node, run_id, step):
    """The step's logs once PostgreSQL has them."""
    def get():
        status, body = node.get("/v1/runs/%s/steps/%s/logs" % (run_id, step))
        return body if status == 200 else None
    return wait_for(get, 30, "the logs of %s/%s" % (run_id, step), ignore=(OSError,))


def test_large_non_ascii_outcomes_from_followers_all_commit_and_free_their_slots(cluster):
    # Four slots per node: the twelve steps of a run land four on each node,
    # so each follower has several ~786 KB outcomes to send at once.
    c = cluster(3, overrides={"limits.max_parallel_tasks": "4"})
    leader = c.leader()
    follower = next(n for n in c.nodes if n is not leader)
    follower.deploy("noisy", noisy_flow())

    first = follower.start_run("noisy")["id"]
    placed = wait_placed(leader, first)
    assert attempt_nodes(placed) == {1, 2, 3}, summary(placed)
    second = follower.start_run("noisy")["id"]  # placed as the first one's slots free

    runs = wait_all_succeeded(leader, [first, second], timeout=60)
    on_followers = [(r["id"], s["name"]) for r in runs for s in r["steps"]
                    if s["attempts"][-1]["node"] != leader.id]
    assert on_followers, [summary(r) for r in runs]

    # One outcome fits a request on its own: its logs arrive whole.
    run_id, name = on_followers[0]
    out = logs(follower, run_id, name)
    assert out["stdout"] == "\x01" * 65536 and out["stderr"] == "\x01" * 65536, (
        len(out["stdout"]), len(out["stderr"]))

    # Every slot is free again: a run with a step for every slot of every
    # node runs on every node.
    leader.deploy("wide", quick_flow(12))
    later = follower.start_run("wide")["id"]
    run = wait_all_succeeded(leader, [later], timeout=30)[0]
    assert attempt_nodes(run) == {1, 2, 3}, summary(run)
    # No request was built that the leader had to refuse.
    for n in c.nodes:
        assert "status=413" not in n.log_text(), h.tail(n.log_path)


def test_an_outcome_over_the_body_limit_is_cut_at_a_character_boundary(cluster):
    # 64 KiB of \x01 (~393 KB as JSON) on stdout and 32,768 two-byte
    # characters on stderr: alone over a 64 KiB request body, so both
    # streams are cut, stderr between two characters.
    c = cluster(3, overrides={"limits.max_body_bytes": "64k",
                              "limits.max_spec_bytes": "64k"})
    leader = c.leader()
    accents = ("for i in $(seq 8); do printf '%04096d' 0; done | "
               "sed 's/0/\u00e9/g' | head -c 65536 >&2")
    leader.deploy("cut", h.flow_spec([h.step("s%d" % i, NOISE + "; " + accents)
                                      for i in range(6)]))
    run_id = leader.start_run("cut")["id"]
    run = wait_all_succeeded(leader, [run_id], timeout=30)[0]
    assert attempt_nodes(run) == {1, 2, 3}, summary(run)
    for s in run["steps"]:
        out = logs(leader, run_id, s["name"])
        assert out["truncated"] is True, (s["name"], out["truncated"])
        assert 0 < len(out["stdout"]) < 65536 and set(out["stdout"]) == {"\x01"}, (
            len(out["stdout"]), set(out["stdout"]))
        assert 0 < len(out["stderr"]) < 32768 and set(out["stderr"]) == {"\u00e9"}, (
            len(out["stderr"]), set(out["stderr"]))
    for n in c.nodes:
        assert "status=413" not in n.log_text(), h.tail(n.log_path)


def test_an_outcome_the_leader_refuses_is_sent_again_without_its_logs(cluster):
    # Followers that believe in a larger body limit than the leader (a
    # configuration mistake) and capture more: their batches and then their
    # single outcomes are refused with 413. Each outcome still commits, its
    # logs replaced by a note, and the slots free. (A long election timeout
    # keeps the leader: a follower leading would accept them all.)
    c = cluster(3, overrides={"limits.max_parallel_tasks": "4",
                              "raft.election_ms": "3000"})
    leader = c.leader()
    followers = [n for n in c.nodes if n is not leader]
    for n in followers:
        n.extra_args = ["--limits.max_body_bytes=16M",
                        "--limits.max_log_bytes_per_task=256k"]
        n.restart()
    big = "head -c 262144 /dev/zero | tr '\\0' '\\1'"
    leader.deploy("big", h.flow_spec([h.step("s%02d" % i, big + "; " + big + " >&2")
                                      for i in range(12)]))
    run_id = leader.start_run("big")["id"]
    run = wait_all_succeeded(leader, [run_id], timeout=60)[0]
    assert c.leader() is leader, "leadership moved during the test"
    assert attempt_nodes(run) == {1, 2, 3}, summary(run)
    for s in run["steps"]:
        out = logs(leader, run_id, s["name"])
        if s["attempts"][-1]["node"] == leader.id:
            assert len(out["stdout"]) == 65536, len(out["stdout"])
        else:
            assert out["stdout"] == "" and out["truncated"] is True, (
                s["name"], len(out["stdout"]), out["truncated"])
            assert "were dropped" in out["stderr"], out["stderr"]
    for n in followers:
        text = n.log_text()
        assert "status=413" in text, h.tail(n.log_path)

    # The followers' slots are free again.
    leader.deploy("wide", quick_flow(12))
    later = followers[0].start_run("wide")["id"]
    run = wait_all_succeeded(leader, [later], timeout=30)[0]
    assert attempt_nodes(run) == {1, 2, 3}, summary(run)
