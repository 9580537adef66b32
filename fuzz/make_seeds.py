#!/usr/bin/env python3
"""fuzz/make_seeds.py - write the seed corpus of fuzz_fsm_apply: command
sequences (one JSON command per line, fsm.h's encodings, as the fsm_cmd_*
builders write them) that walk every op and the state they build: a DAG
run to success with a retry, retention and idempotency keys, schedules and
their cursor, pause, backfill, events (one and all-of, duplicates),
on_finish chains, overlap policies with the buffer, nodes that restart, go
down and leave, cancel, batches, and the '#restore', '#release' and '#view'
lines of fuzz_fsm_apply.c.

    fuzz/make_seeds.py            (re)writes fuzz/corpus/fsm_apply/seed-*

fuzz_fsm_restore's seeds are the snapshots these sequences end in
(fuzz/README.md)."""
import json
import os

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus",
                   "fsm_apply")

DIAMOND = {
    "parameters": {"region": {"type": "string", "required": True},
                   "alpha": {"type": "float", "default": 0.5}},
    "steps": [
        {"name": "a", "command": ["true"]},
        {"name": "b", "command": ["true"], "depends_on": ["a"],
         "retries": {"max": 1, "backoff_s": 0}},
        {"name": "c", "command": ["true"], "depends_on": ["a"],
         "retries": {"max": 2, "backoff_s": 10}},
        {"name": "d", "shell": "true", "depends_on": ["b", "c"]}]}
ONE = {"steps": [{"name": "s", "command": ["x"]}]}


def cmd(op, ts, **kw):
    c = {"v": 1, "op": op, "ts": ts}
    c.update(kw)
    return c


def deploy(ts, flow, spec):
    return cmd("deploy", ts, flow=flow, spec=spec)


def node_up(ts, node, boot, cap=4):
    return cmd("node_up", ts, api="127.0.0.1:%d" % (8000 + node), node=node,
               boot=boot, capacity=cap)


def create(ts, flow, params=None, key=None, retain=None, keys=None,
           ttl=None):
    kw = {"flow": flow}
    if params is not None:
        kw["parameters"] = params
    if key is not None:
        kw["idempotency_key"] = key
    if retain is not None:
        kw["retain"] = retain
    if keys is not None:
        kw["keys"] = keys
    if ttl is not None:
        kw["key_ttl_s"] = ttl
    return cmd("run_create", ts, **kw)


def finish(ts, run, step, attempt, node, code=0, reason="exited", sig=0,
           detail=None):
    kw = {"run": run, "step": step, "attempt": attempt, "node": node,
          "exit_code": code, "signal": sig, "reason": reason,
          "stdout": "out\n", "stderr": "", "truncated": False}
    if detail:
        kw["detail"] = detail
    return cmd("task_finish", ts, **kw)


def rid(seq):
    return "r-%012d" % seq


def skey(expr, tz="UTC", missing=0, repeated=0):
    return "%s\x1f%s\x1f%d\x1f%d" % (expr, tz, missing, repeated)


SEEDS = {}

SEEDS["diamond"] = [
    deploy(1000, "etl", DIAMOND),
    deploy(1000, "one", ONE),
    node_up(1000, 1, 5, 2),
    create(2000, "etl", {"region": "eu"}, "key"),
    finish(3000, rid(1), "a", 1, 1),
    finish(3100, rid(1), "c", 1, 1, code=1),
    create(3200, "one"),
    create(3300, "one"),
    "#view",
    cmd("wake", 14000),
    finish(15000, rid(1), "b", 1, 1),
    finish(15100, rid(1), "c", 2, 1),
    finish(16000, rid(1), "d", 1, 1),
    finish(16100, rid(2), "s", 1, 1, reason="timeout", code=-1, sig=9),
    "#restore",
    finish(16200, rid(3), "s", 1, 1, reason="spawn_failed",
           detail="no such file"),
]

SEEDS["retention"] = [
    deploy(1000, "one", ONE),
    node_up(1000, 1, 7, 8),
    create(2000, "one", key="k1", retain=2, keys=3, ttl=60),
    create(2001, "one", key="k2", retain=2, keys=3, ttl=60),
    create(2002, "one", key="k1"),
    finish(3000, rid(1), "s", 1, 1),
    finish(3001, rid(2), "s", 1, 1),
    create(4000, "one", key="k3", retain=1),
    finish(4001, rid(3), "s", 1, 1),
    create(4002, "one", key="k4"),
    create(200000, "one", key="k1"),
    "#release",
    create(200001, "one", key="k5", keys=1),
    "#view",
]

SEEDS["schedules"] = [
    deploy(1000000, "sch", {
        "steps": [{"name": "s", "command": ["x"]}],
        "max_active_runs": 1,
        "triggers": {"schedules": [
            {"cron": "*/5 * * * *", "overlap": "buffer_all"},
            {"cron": "0 * * * *", "timezone": "Europe/Berlin",
             "catchup": "all", "overlap": "skip"}]}}),
    node_up(1000000, 1, 3, 1),
    cmd("fire", 1300000, max_buffered=4, items=[
        {"flow": "sch", "schedule": 0, "key": skey("*/5 * * * *"),
         "prev": 1000, "nominal": 1200, "missed": 0}]),
    cmd("fire", 1600000, max_buffered=4, items=[
        {"flow": "sch", "schedule": 0, "key": skey("*/5 * * * *"),
         "prev": 1200, "nominal": 1500, "missed": 1},
        {"flow": "sch", "schedule": 1,
         "key": skey("0 * * * *", "Europe/Berlin"), "prev": 1000,
         "nominal": 3600, "missed": 0, "fire": False}]),
    cmd("fire", 1600000, max_buffered=4, items=[
        {"flow": "sch", "schedule": 0, "key": skey("*/5 * * * *"),
         "prev": 1200, "nominal": 1500}]),
    cmd("pause", 1700000, flow="sch", paused=True),
    cmd("fire", 1800000, max_buffered=4, items=[
        {"flow": "sch", "schedule": 0, "key": skey("*/5 * * * *"),
         "prev": 1500, "nominal": 1800}]),
    cmd("fire", 1900000, max_buffered=4, items=[
        {"flow": "sch", "schedule": 0, "key": skey("*/5 * * * *"),
         "nominal": 600, "backfill": True},
        {"flow": "sch", "schedule": 0, "key": skey("*/5 * * * *"),
         "nominal": 600, "backfill": True}]),
    cmd("pause", 2000000, flow="sch", paused=False),
    finish(2100000, rid(1), "s", 1, 1),
    "#view",
    cmd("undeploy", 2200000, flow="sch"),
    "#restore",
    deploy(2300000, "sch", {
        "steps": [{"name": "s", "command": ["y"]}],
        "triggers": {"schedules": [{"cron": "*/5 * * * *"}]}}),
    cmd("fire", 2400000, max_buffered=4, items=[
        {"flow": "sch", "schedule": 0, "key": skey("*/5 * * * *"),
         "prev": 2300, "nominal": 2400}]),
]

SEEDS["events"] = [
    deploy(1000, "ev", {
        "parameters": {"region": {"type": "string"},
                       "rate": {"type": "float"}},
        "steps": [{"name": "s", "command": ["x"]}],
        "triggers": {"events": [
            {"event": "data_ready", "filter": {"table": "sales"},
             "parameters": {"region": "payload.region"}},
            {"all": [{"event": "orders"}, {"event": "fx"}],
             "window_s": 3600, "reset": "0 0 * * *",
             "parameters": {"rate": "fx.payload.rate"},
             "overlap": "buffer_all"}]}}),
    node_up(1000, 1, 9, 4),
    cmd("event", 2000, name="data_ready", id="e1",
        payload={"table": "sales", "region": "eu"}, dedupe_s=86400,
        keep=100, max_buffered=10),
    cmd("event", 2001, name="data_ready", id="e1",
        payload={"table": "sales"}, dedupe_s=86400, keep=100,
        max_buffered=10),
    cmd("event", 2002, name="data_ready", id="e2",
        payload={"table": "other"}, dedupe_s=86400, keep=100,
        max_buffered=10),
    cmd("event", 3000, name="orders", id="e3", dedupe_s=86400, keep=2,
        max_buffered=10),
    "#restore",
    cmd("event", 4000, name="fx", id="e4", payload={"rate": 1.5},
        dedupe_s=86400, keep=2, max_buffered=10),
    cmd("event", 5000, name="fx", id="e5", payload={"rate": "bad"},
        dedupe_s=1, keep=2, max_buffered=10),
    deploy(6000, "ev", {
        "steps": [{"name": "t", "command": ["x"]}],
        "parameters": {"rate": {"type": "float"}},
        "triggers": {"events": [
            {"all": [{"event": "orders"}, {"event": "fx"}],
             "window_s": 3600, "reset": "0 0 * * *",
             "parameters": {"rate": "fx.payload.rate"},
             "overlap": "buffer_all"}]}}),
    cmd("event", 7000, name="orders", id="e6", dedupe_s=86400, keep=100,
        max_buffered=10),
    "#view",
]

SEEDS["on_finish_overlap"] = [
    deploy(1000, "up", ONE),
    deploy(1000, "down", {
        "parameters": {"upstream_run_id": {"type": "string"}},
        "steps": [{"name": "s", "command": ["x"]}],
        "max_active_runs": 1,
        "triggers": {"on_finish": [
            {"flow": "up", "status": "any", "overlap": "buffer_one"}]}}),
    deploy(1000, "cancel", {
        "steps": [{"name": "s", "command": ["x"]}],
        "triggers": {"on_finish": [
            {"flow": "up", "status": "failed",
             "overlap": "cancel_other"}]}}),
    deploy(1000, "term", {
        "steps": [{"name": "s", "command": ["x"]}],
        "triggers": {"on_finish": [
            {"flow": "up", "status": "succeeded",
             "overlap": "terminate_other"}]}}),
    node_up(1000, 1, 1, 8),
    create(2000, "up"),
    create(2001, "up"),
    create(2002, "up"),
    finish(3000, rid(1), "s", 1, 1),
    finish(3001, rid(2), "s", 1, 1, code=3),
    finish(3002, rid(3), "s", 1, 1),
    "#view",
    cmd("run_cancel", 4000, run=rid(4)),
    finish(4001, rid(4), "s", 1, 1, reason="stopped", sig=15),
    "#restore",
    cmd("run_cancel", 4002, run=rid(5)),
    cmd("run_cancel", 4003, run="r-999"),
]

SEEDS["nodes"] = [
    deploy(1000, "etl", DIAMOND),
    node_up(1000, 2, 1, 1),
    node_up(1000, 1, 1, 1),
    create(2000, "etl", {"region": "us"}),
    create(2001, "etl", {"region": "eu"}),
    cmd("node_down", 3000, node=1, boot=1),
    cmd("node_alive", 3001, node=1, boot=1),
    node_up(3002, 2, 2, 3),
    cmd("node_remove", 3003, node=1, boot=0),
    node_up(3004, 1, 3, 1),
    cmd("node_admit", 3005, node=1, boot=0),
    node_up(3006, 1, 4, 2),
    "#restore",
    finish(4000, rid(1), "a", 2, 2),
    cmd("wake", 100000),
    cmd("nop", 100001),
]

SEEDS["batch"] = [
    deploy(1000, "one", ONE),
    node_up(1000, 1, 1, 4),
    create(2000, "one"),
    create(2000, "one"),
    cmd("batch", 3000, cmds=[
        finish(3000, rid(1), "s", 1, 1),
        finish(3000, rid(2), "s", 1, 1, code=2),
        cmd("batch", 3000, cmds=[]),
        create(3000, "one")]),
    "#view",
]

SEEDS["malformed"] = [
    '{"v":2,"op":"nop","ts":1}',
    '{"v":1,"op":"no_such_op","ts":1}',
    'not json',
    deploy(1000, "../x", ONE),
    deploy(1000, "bad", {"steps": []}),
    create(2000, "nope"),
    finish(2000, "r-000000000001", "s", 0, 1),
    cmd("fire", 1, items=[{"flow": "x", "schedule": -1}]),
]


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, lines in SEEDS.items():
        with open(os.path.join(OUT, "seed-" + name), "w") as f:
            for ln in lines:
                if not isinstance(ln, str):
                    ln = json.dumps(ln, separators=(",", ":"),
                                    ensure_ascii=False)
                f.write(ln + "\n")


if __name__ == "__main__":
    main()
