"""test_metrics.py - GET /metrics on real nodes: who may read it, the text
format as Prometheus's own promtool checks it, the counts it gives against
what the API says, node.metrics_address without a token, and a real
Prometheus server scraping three nodes and answering PromQL
(docs/operations.md)."""

import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

import flowd_harness as h
from flowd_harness import READER_TOKEN, failing_flow, flow_spec, step, wait_for

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """{(name, frozenset(labels.items())): value} of every sample."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, "not a sample line: %r" % line
        labels = frozenset(LABEL.findall(m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def value(samples, name, /, **labels):
    return samples.get((name, frozenset(labels.items())))


def scrape(node, token=READER_TOKEN, port=None):
    reply = h.http_request(port or node.api_port, "GET", "/metrics", token=token,
                           openapi=port is None)
    assert reply.status == 200, reply
    assert reply.header("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
    return reply.text


def promtool_check(text):
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    assert p.returncode == 0, p.stdout.decode(errors="replace")


def every_second():
    spec = flow_spec([step("a", shell="true")])
    spec["triggers"] = {"schedules": [{"cron": "* * * * * *"}]}
    return spec


needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed "
                                    "(scripts/install-deps.sh installs Debian's prometheus)")


@needs_promtool
def test_metrics_need_a_token_pass_promtool_and_count_what_the_api_says(cluster):
    c = cluster(n=1)
    node = c[0]
    # no token: 401, like every non-public route; a reader may scrape
    reply = h.http_request(node.api_port, "GET", "/metrics")
    assert reply.status == 401 and reply.json["error"]["code"] == "unauthorized", reply

    node.deploy("ok", flow_spec([step("a", shell="true")]))
    node.deploy("bad", failing_flow(retries=1))
    runs = [node.start_run("ok")["id"] for _ in range(3)]
    bad = node.start_run("bad")["id"]
    for r in runs:
        assert node.wait_run(r)["status"] == "succeeded"
    assert node.wait_run(bad)["status"] == "failed"
    for _ in range(2):  # the same id twice: one received, then a duplicate
        status, out = node.post("/v1/events", {"name": "ping", "id": "ev-1"})
        assert status in (200, 201), out

    def counted():
        s = parse(scrape(node))
        ok = value(s, "flowd_runs_finished_total", flow="ok", status="succeeded")
        return s if ok == 3 else None
    s = wait_for(counted, 10, "three succeeded runs of ok in /metrics")
    text = scrape(node)
    promtool_check(text)

    assert value(s, "flowd_runs_created_total", flow="ok") == 3
    assert value(s, "flowd_runs_created_total", flow="bad") == 1
    assert value(s, "flowd_runs_finished_total", flow="bad", status="failed") == 1
    assert value(s, "flowd_step_attempts_total", flow="ok", outcome="succeeded") == 3
    assert value(s, "flowd_step_attempts_total", flow="bad", outcome="failed") == 2
    assert value(s, "flowd_step_retries_total", flow="bad") == 1
    assert value(s, "flowd_run_duration_seconds_count", flow="ok") == 3
    assert value(s, "flowd_events_received_total", name="ping") == 2
    assert value(s, "flowd_events_deduplicated_total", name="ping") == 1
    assert value(s, "flowd_raft_is_leader") == 1
    assert value(s, "flowd_raft_term") >= 1
    assert value(s, "flowd_raft_applied_index") >= 8
    assert value(s, "flowd_tasks_running", node="1") == 0
    assert value(s, "flowd_tasks_ready") == 0
    # PostgreSQL catches up: the applier's numbers say so
    def stored():
        t = parse(scrape(node))
        ok = value(t, "flowd_db_connected") == 1 and value(t, "flowd_db_backlog_entries") == 0
        return t if ok else None
    t = wait_for(stored, 15, "PostgreSQL to hold every entry")
    assert value(t, "flowd_db_applied_index") >= value(s, "flowd_raft_applied_index")
    assert value(s, "process_resident_memory_bytes") > 1e6
    assert value(s, "flowd_build_info", version="0.1.0") == 1
    # requests by route template, never by run id
    assert value(s, "flowd_http_requests_total", method="GET", route="/v1/runs/{id}",
                 code="200") >= 4
    assert value(s, "flowd_http_requests_total", method="GET", route="/metrics",
                 code="401") == 1
    assert value(s, "flowd_http_request_duration_seconds_count", method="POST",
                 route="/v1/flows/{flow}/runs") == 4
    assert all(bad not in name and not any(bad in v for _, v in labels)
               for name, labels in s)


@needs_promtool
def test_schedule_metrics_match_the_schedule_api(cluster):
    c = cluster(n=1)
    node = c[0]
    node.deploy("tick", every_second())

    def fired_twice():
        status, sch = node.get("/v1/flows/tick/schedule")
        assert status == 200, sch
        return sch if sch["schedules"][0]["counters"]["fired"] >= 2 else None
    wait_for(fired_twice, 15, "two ticks of tick")
    status, _ = node.post("/v1/flows/tick/pause", {})
    assert status == 200

    def settled():
        _, sch = node.get("/v1/flows/tick/schedule")
        s = parse(scrape(node))
        fired = value(s, "flowd_schedule_ticks_total", flow="tick", schedule="0",
                      outcome="fired")
        if fired == sch["schedules"][0]["counters"]["fired"] and \
                value(s, "flowd_schedule_paused", flow="tick", schedule="0") == 1:
            return s, sch
        return None
    s, sch = wait_for(settled, 10, "schedule metrics to match the schedule API")
    for outcome, n in sch["schedules"][0]["counters"].items():
        assert value(s, "flowd_schedule_ticks_total", flow="tick", schedule="0",
                     outcome=outcome) == n
    nxt = value(s, "flowd_schedule_next_fire_timestamp_seconds", flow="tick", schedule="0")
    assert nxt is not None and abs(nxt - time.time()) < 5
    # fire lag: one observation per fired tick, committed within a few seconds
    assert value(s, "flowd_schedule_fire_lag_seconds_count", flow="tick", schedule="0") \
        == sch["schedules"][0]["counters"]["fired"]
    assert value(s, "flowd_schedule_fire_lag_seconds_bucket", flow="tick", schedule="0",
                 le="+Inf") == sch["schedules"][0]["counters"]["fired"]
    promtool_check(scrape(node))


def test_postgresql_backlog_shows_in_entries_and_seconds_then_clears(node, db):
    """A lock on the runs table holds the PostgreSQL writer back: the backlog
    grows in entries and in seconds (the age of the oldest entry PostgreSQL
    lacks, also in GET /v1/cluster), and both fall to 0 once it is let go."""
    node.deploy("hello", flow_spec([step("a", shell="true")]))
    node.wait_db_caught_up()
    s = parse(scrape(node))
    assert value(s, "flowd_db_backlog_seconds") == 0
    with h.table_locked(db, "runs"):
        node.start_run("hello")

        def behind():
            t = parse(scrape(node))
            return t if value(t, "flowd_db_backlog_seconds") >= 1.5 else None
        t = wait_for(behind, 20, "the backlog to be 1.5 s old")
        assert value(t, "flowd_db_backlog_entries") >= 1
        assert node.cluster_info()["db_backlog_ms"] >= 1500

    def caught_up():
        t = parse(scrape(node))
        return value(t, "flowd_db_backlog_seconds") == 0 and \
            value(t, "flowd_db_backlog_entries") == 0 or None
    wait_for(caught_up, 20, "the backlog to clear")
    assert node.cluster_info()["db_backlog_ms"] == 0


def test_metrics_address_serves_metrics_alone_without_a_token(cluster):
    port = h.free_port()
    c = cluster(n=1, overrides={"node.metrics_address": "127.0.0.1:%d" % port})
    node = c[0]
    text = scrape(node, token=None, port=port)
    assert value(parse(text), "flowd_raft_is_leader") == 1
    # nothing else is served there, and the API still wants its token
    reply = h.http_request(port, "GET", "/v1/runs", openapi=False)
    assert reply.status == 404, reply
    assert h.http_request(node.api_port, "GET", "/metrics").status == 401


def test_metrics_address_must_differ_from_the_api_address(cluster, workdir):
    c = cluster(n=1, start=False)
    node = c[0]
    node.extra_args = ["--node.metrics_address=127.0.0.1:%d" % node.api_port]
    p = subprocess.run([h.FLOWD_BIN, "--config", node.config_path, "--check"]
                       + node.extra_args, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=30)
    assert p.returncode != 0
    assert b"node.metrics_address" in p.stdout, p.stdout


# ------------------------------------------- what deploy/ ships, checked

DEPLOY = os.path.join(h.REPO, "deploy")


def type_names(text):
    """Every sample name a scrape can have, from its # TYPE lines."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                names.update(name + x for x in ("_bucket", "_sum", "_count"))
    return names


@needs_promtool
def test_shipped_alerts_config_and_dashboard_hold_and_use_metrics_a_node_serves(cluster, workdir):
    pdir = os.path.join(DEPLOY, "prometheus")
    p = subprocess.run([PROMTOOL, "test", "rules", "alerts_test.yml"], cwd=pdir,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    assert p.returncode == 0, p.stdout.decode(errors="replace")
    # the scrape config, with its paths pointed at this test's files
    with open(os.path.join(pdir, "prometheus.yml")) as f:
        conf = f.read()
    token = os.path.join(workdir, "token")
    with open(token, "w") as f:
        f.write(READER_TOKEN)
    conf = conf.replace("/etc/prometheus/flowd-alerts.yml", os.path.join(pdir, "alerts.yml"))
    conf = conf.replace("/etc/prometheus/flowd-reader-token", token)
    with open(os.path.join(workdir, "prometheus.yml"), "w") as f:
        f.write(conf)
    p = subprocess.run([PROMTOOL, "check", "config", "prometheus.yml"], cwd=workdir,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    assert p.returncode == 0, p.stdout.decode(errors="replace")

    node = cluster(n=1)[0]
    node.deploy("tick", every_second())
    node.wait_run(node.start_run("tick")["id"])
    names = type_names(scrape(node)) | {"up"}
    used = set()
    with open(os.path.join(pdir, "alerts.yml")) as f:
        used |= set(re.findall(r"\b((?:flowd|process)_[a-z0-9_]+)", f.read()))
    with open(os.path.join(DEPLOY, "grafana", "flowd.json")) as f:
        dash = json.load(f)
    exprs = [t["expr"] for pnl in dash["panels"] for t in pnl["targets"]]
    for e in exprs:
        used |= set(re.findall(r"\b((?:flowd|process)_[a-z0-9_]+)", e))
    assert len(exprs) >= 20 and "flowd_raft_is_leader" in used
    assert used <= names, "not served: %s" % sorted(used - names)


# ------------------------------------------------------- a real Prometheus

def prom_query(port, expr):
    url = "http://127.0.0.1:%d/api/v1/query?%s" % (port, urllib.parse.urlencode({"query": expr}))
    with urllib.request.urlopen(url, timeout=10) as r:
        out = json.load(r)
    assert out["status"] == "success", out
    return out["data"]["result"]


def prom_scalar(port, expr):
    res = prom_query(port, expr)
    return float(res[0]["value"][1]) if res else None


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is not installed "
                    "(scripts/install-deps.sh installs Debian's prometheus)")
def test_a_real_prometheus_scraping_three_nodes_sees_the_runs_and_fires_the_api_reports(
        cluster, workdir):
    c = cluster(n=3)
    leader = c.leader()
    prom_port = h.free_port()
    pdir = h.fresh_dir(os.path.join(workdir, "prometheus"))
    targets = ", ".join('"127.0.0.1:%d"' % n.api_port for n in c.nodes)
    config = os.path.join(pdir, "prometheus.yml")
    with open(config, "w") as f:
        f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                "scrape_configs:\n"
                "  - job_name: flowd\n"
                "    authorization:\n      credentials: %s\n"
                "    static_configs:\n      - targets: [%s]\n" % (READER_TOKEN, targets))
    log = open(os.path.join(pdir, "prometheus.log"), "w")
    prom = subprocess.Popen([PROMETHEUS, "--config.file=" + config,
                             "--storage.tsdb.path=" + os.path.join(pdir, "data"),
                             "--web.listen-address=127.0.0.1:%d" % prom_port],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        leader.deploy("work", flow_spec([step("a", shell="true")]))
        leader.deploy("tick", every_second())
        ids = [c.nodes[i % 3].start_run("work")["id"] for i in range(12)]
        for r in ids:
            assert leader.wait_run(r)["status"] == "succeeded"
        def fired_twice():
            _, sch = leader.get("/v1/flows/tick/schedule")
            return sch["schedules"][0]["counters"]["fired"] >= 2 or None
        wait_for(fired_twice, 15, "two ticks of tick")
        status, _ = leader.post("/v1/flows/tick/pause", {})
        assert status == 200
        _, sch = leader.get("/v1/flows/tick/schedule")
        fired = sch["schedules"][0]["counters"]["fired"]

        def up():
            try:
                return prom_scalar(prom_port, 'sum(up{job="flowd"})') == 3 or None
            except OSError:
                return None
        wait_for(up, 60, "Prometheus to scrape three nodes")

        # every node applies every entry: each reports the same counts
        def agreed():
            res = prom_query(prom_port, 'flowd_runs_finished_total{flow="work",status="succeeded"}')
            vals = sorted(float(x["value"][1]) for x in res)
            return vals if vals == [12.0, 12.0, 12.0] else None
        wait_for(agreed, 30, "three nodes to report 12 succeeded runs of work")
        assert prom_scalar(prom_port, 'max(flowd_runs_created_total{flow="work"})') == 12

        def ticks():
            v = prom_scalar(prom_port, 'min(flowd_schedule_ticks_total{flow="tick",'
                                       'outcome="fired"})')
            return v if v == fired else None
        wait_for(ticks, 30, "Prometheus to see the %d fired ticks the API reports" % fired)
        runs_of_tick = [r for r in leader.list_runs("flow=tick")]
        assert len(runs_of_tick) == fired
        assert prom_scalar(prom_port, "sum(flowd_raft_is_leader)") == 1
        assert prom_scalar(prom_port, 'max(flowd_raft_term) - min(flowd_raft_term)') == 0
        assert prom_scalar(prom_port, 'sum(flowd_http_requests_total{route="/v1/flows/{flow}/runs",'
                                      'method="POST"})') >= 12
    finally:
        prom.terminate()
        try:
            prom.wait(timeout=h.scaled(20))
        except subprocess.TimeoutExpired:
            prom.kill()
            prom.wait()
        log.close()
