#!/usr/bin/python3
"""triggers.py - trigger benchmarks on a three-node cluster (docs/benchmarks.md).

Each round starts a fresh three-node cluster on 127.0.0.1 (its own database in
one private PostgreSQL) and measures:

  one       one schedule firing every second for ONE_S seconds: fire lag
            (the leader's commit of the tick minus its nominal time), p50/p99/max,
            from GET /v1/cluster "scheduler"
  burst     BURST_FLOWS x 10 schedules due in the same second: fire lag p50/p99/max
            over all of them, and that every one fired
  events    EVENTS events posted serially (round-robin over the nodes): post ->
            first step's process started (the attempt's started_at), p50/p99
  baseline  200 serial POST /v1/flows/f/runs on the leader: request latency
            p50/p99, the commit path the lags above are compared with
  idle      (once) IDLE_FLOWS x 10 schedules that do not fire during the
            measurement: RSS per node before and after, and idle CPU per node
            over IDLE_S seconds

Environment: FLOWD_ARGS (extra flowd arguments, e.g. --executor.step_nice=10) REPEAT=3 ONE_S=30 BURST_FLOWS=1000 EVENTS=200 IDLE_FLOWS=10000
IDLE_S=10 PHASES=one,burst,events,idle BUILD=build FLOWD_BIN=$BUILD/flowd LOADGEN=$BUILD/loadgen; ports from
API_PORT=8890 RAFT_PORT=8893 PG_PORT=8896 (busy ones are replaced).
Prints a table; medians over REPEAT rounds. Standard library only.
"""
import concurrent.futures
import datetime
import http.client
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("BUILD", "build")
BDIR = BUILD if os.path.isabs(BUILD) else os.path.join(ROOT, BUILD)
FLOWD = os.path.abspath(os.environ.get("FLOWD_BIN", os.path.join(BDIR, "flowd")))
LOADGEN = os.path.abspath(os.environ.get("LOADGEN", os.path.join(BDIR, "loadgen")))
WORK = os.path.join(BDIR, "bench-triggers")
PG_SCRIPT = os.path.join(ROOT, "scripts", "pg-private.sh")
REPEAT = int(os.environ.get("REPEAT", "3"))
ONE_S = float(os.environ.get("ONE_S", "30"))
BURST_FLOWS = int(os.environ.get("BURST_FLOWS", "1000"))
EVENTS = int(os.environ.get("EVENTS", "200"))
IDLE_FLOWS = int(os.environ.get("IDLE_FLOWS", "10000"))
IDLE_S = float(os.environ.get("IDLE_S", "10"))
PHASES = set(os.environ.get("PHASES", "one,burst,events,idle").split(","))
TOKEN = secrets.token_hex(16)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def say(*a):
    print("bench-triggers:", *a, file=sys.stderr, flush=True)


def free_port(want):
    for port in [want] + [0] * 20:
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return s.getsockname()[1]
        except OSError:
            continue
        finally:
            s.close()
    raise SystemExit("no free port")


def call(port, method, path, body=None, timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Authorization": "Bearer " + TOKEN}
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        c.request(method, path, body=data, headers=headers)
        r = c.getresponse()
        raw = r.read()
        return r.status, (json.loads(raw) if raw else None)
    finally:
        c.close()


def wait(fn, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            v = fn()
            if v:
                return v
        except (OSError, http.client.HTTPException, ValueError):
            pass
        time.sleep(0.05)
    raise SystemExit("timed out waiting for " + what)


def pct(values, p):
    v = sorted(values)
    return v[max(0, min(len(v) - 1, (len(v) * p + 99) // 100 - 1))]


def iso_to_s(t):
    return datetime.datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()


class Cluster:
    def __init__(self, name, pg_port):
        self.dir = os.path.join(WORK, name)
        subprocess.run(["rm", "-rf", self.dir], check=True)
        os.makedirs(self.dir)
        self.db = name.replace("-", "_")
        subprocess.run(["runuser", "-u", "postgres", "--",
                        os.path.join(_pg_bin(), "createdb"), "-h", "127.0.0.1", "-p",
                        str(pg_port), self.db], check=True)
        base_api, base_raft = int(os.environ.get("API_PORT", "8890")), int(
            os.environ.get("RAFT_PORT", "8893"))
        self.api = [free_port(base_api + i) for i in range(3)]
        self.raft = [free_port(base_raft + i) for i in range(3)]
        self.procs = []
        peers = "".join("%d = 127.0.0.1:%d 127.0.0.1:%d\n" % (i + 1, self.raft[i], self.api[i])
                        for i in range(3))
        for i in range(3):
            d = os.path.join(self.dir, "node%d" % (i + 1))
            os.makedirs(d)
            conf = os.path.join(self.dir, "node%d.conf" % (i + 1))
            with open(conf, "w") as f:
                f.write("[node]\nid = %d\nraft_address = 127.0.0.1:%d\napi_address = 127.0.0.1:%d\n"
                        "data_dir = %s\n\n[peers]\n%s\n[database]\nconninfo = host=127.0.0.1 "
                        "port=%d dbname=%s user=postgres connect_timeout=2\n\n[auth]\n"
                        "admin_tokens = %s\n\n[cluster]\nsecret = bench-cluster-secret-0123456789\n\n"
                        "[executor]\nallow_root = true\n\n[limits]\nmax_parallel_tasks = 64\n"
                        "max_body_bytes = 4m\n"
                        % (i + 1, self.raft[i], self.api[i], d, peers, pg_port, self.db, TOKEN))
            log = open(os.path.join(self.dir, "node%d.log" % (i + 1)), "ab")
            self.procs.append(subprocess.Popen([FLOWD, "--config", conf] +
                                               os.environ.get("FLOWD_ARGS", "").split(),
                                               stdout=log,
                                               stderr=subprocess.STDOUT))
        self.leader_port()

    def leader_port(self):
        def find():
            for p in self.api:
                st, body = call(p, "GET", "/v1/cluster", timeout=1)
                if st == 200 and body["role"] == "leader":
                    return p
            return None
        return wait(find, 60, "a leader")

    def leader_index(self):
        return self.api.index(self.leader_port())

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def rss_mb(self, i):
        with open("/proc/%d/status" % self.procs[i].pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
        return 0.0

    def cpu_s(self, i):
        with open("/proc/%d/stat" % self.procs[i].pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _pg_bin():
    out = subprocess.run(["sh", "-c", "ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1"],
                         capture_output=True, text=True, check=True).stdout.strip()
    return out


def deploy_many(port, specs, workers=16):
    def one(item):
        name, spec = item
        st, body = call(port, "PUT", "/v1/flows/" + name, spec, timeout=60)
        if st not in (200, 201):
            raise SystemExit("deploy %s: %s %s" % (name, st, body))
    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        list(ex.map(one, specs))


def scheduler_stats(port):
    st, body = call(port, "GET", "/v1/cluster")
    return body["scheduler"]


STEP = {"steps": [{"name": "s", "command": ["/usr/bin/true"]}]}


def with_triggers(**t):
    spec = dict(STEP)
    spec["triggers"] = t
    return spec


def phase_one(pg_port, r):
    c = Cluster("one-%d" % r, pg_port)
    try:
        port = c.leader_port()
        st, _ = call(port, "PUT", "/v1/flows/one",
                     with_triggers(schedules=[{"cron": "* * * * * *"}]))
        assert st == 201
        deadline = time.time() + ONE_S
        wait(lambda: time.time() >= deadline, ONE_S + 5, "the window")
        s = scheduler_stats(c.leader_port())
        lag = s["fire_lag_ms"]
        say("one schedule: %d ticks, lag p50 %d p99 %d max %d ms" %
            (lag["samples"], lag["p50"], lag["p99"], lag["max"]))
        # baseline: serial run creation on the leader
        lat = []
        call(port, "PUT", "/v1/flows/f", STEP)
        for _ in range(200):
            t0 = time.monotonic()
            st, _ = call(port, "POST", "/v1/flows/f/runs", {})
            lat.append((time.monotonic() - t0) * 1000)
            assert st == 201
        return lag, (statistics.median(lat), pct(lat, 99))
    finally:
        c.stop()


def phase_burst(pg_port, r):
    c = Cluster("burst-%d" % r, pg_port)
    try:
        port = c.leader_port()
        at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
            seconds=15 + BURST_FLOWS // 200)
        cron = "%d %d %d %d %d *" % (at.second, at.minute, at.hour, at.day, at.month)
        specs = [("b%05d" % i, with_triggers(schedules=[{"cron": cron}] * 10))
                 for i in range(BURST_FLOWS)]
        t0 = time.monotonic()
        deploy_many(port, specs)
        say("burst: %d flows x 10 schedules deployed in %.1f s; due at %s" %
            (BURST_FLOWS, time.monotonic() - t0, at.strftime("%H:%M:%S")))
        if time.time() >= at.timestamp():
            raise SystemExit("deploying took past the due second; lower BURST_FLOWS")
        want = BURST_FLOWS * 10
        s = wait(lambda: (lambda s: s if s.get("ticks_fired", 0) >= want else None)(
            scheduler_stats(c.leader_port())), 120, "every tick to fire")
        lag = s["fire_lag_ms"]
        say("burst: %d ticks, lag p50 %d p99 %d max %d ms" %
            (lag["samples"], lag["p50"], lag["p99"], lag["max"]))
        return lag
    finally:
        c.stop()


def phase_events(pg_port, r):
    c = Cluster("events-%d" % r, pg_port)
    stamps = os.path.join(c.dir, "stamps")
    os.makedirs(stamps)
    try:
        port = c.leader_port()
        # The step is `loadgen --stamp DIR`: it writes the wall-clock time its
        # process started (ns) to DIR/<run id>, as bench/run.sh does.
        spec = {"steps": [{"name": "s", "command": [LOADGEN, "--stamp", stamps]}],
                "triggers": {"events": [{"event": "go"}]}}
        st, _ = call(port, "PUT", "/v1/flows/ev", spec)
        assert st == 201
        sent = []
        for i in range(EVENTS):
            p = c.api[i % 3]
            t0 = time.time_ns()
            st, body = call(p, "POST", "/v1/events", {"name": "go", "id": "e%d" % i})
            assert st == 201, body
            sent.append((t0, body["runs"][0]["run_id"]))
        lat = []
        for t0, run_id in sent:
            path = os.path.join(stamps, run_id)
            wait(lambda: os.path.exists(path), 60, "the step of run " + run_id)
            with open(path) as f:
                lat.append((int(f.read()) - t0) / 1e6)
        say("events: %d, post -> first step p50 %.1f p99 %.1f ms" %
            (len(lat), statistics.median(lat), pct(lat, 99)))
        return statistics.median(lat), pct(lat, 99)
    finally:
        c.stop()


def phase_idle(pg_port):
    c = Cluster("idle", pg_port)
    try:
        port = c.leader_port()
        wait(lambda: all(call(p, "GET", "/readyz")[0] == 200 for p in c.api), 30, "ready")
        before = [c.rss_mb(i) for i in range(3)]
        specs = [("i%06d" % i, with_triggers(schedules=[
            {"cron": "%d %d %d %d *" % (k * 5, (i + k) % 24, 1 + i % 28, 1 + (i + k) % 12)}
            for k in range(10)])) for i in range(IDLE_FLOWS)]
        t0 = time.monotonic()
        deploy_many(port, specs)
        took = time.monotonic() - t0
        # settle (PostgreSQL catches up, a snapshot may run), then measure
        wait(lambda: all(call(p, "GET", "/v1/cluster")[1]["db_backlog"] == 0 for p in c.api),
             300, "PostgreSQL to catch up")
        want = IDLE_FLOWS * 10
        wait(lambda: all(scheduler_stats(p)["schedules"] == want for p in c.api), 60,
             "every node to hold every schedule")
        total = min(scheduler_stats(p)["schedules"] for p in c.api)
        say("idle: %d flows x 10 schedules deployed in %.1f s; %d schedules per node" %
            (IDLE_FLOWS, took, total))
        settle = time.monotonic() + 5
        wait(lambda: time.monotonic() >= settle, 10, "settling")
        cpu0 = [c.cpu_s(i) for i in range(3)]
        t0 = time.monotonic()
        end = t0 + IDLE_S
        wait(lambda: time.monotonic() >= end, IDLE_S + 5, "the idle window")
        cpu = [(c.cpu_s(i) - cpu0[i]) / (time.monotonic() - t0) * 100 for i in range(3)]
        after = [c.rss_mb(i) for i in range(3)]
        say("idle: RSS before %s MB, after %s MB, idle CPU %s %%" %
            (["%.0f" % x for x in before], ["%.0f" % x for x in after],
             ["%.2f" % x for x in cpu]))
        return total, before, after, cpu, took
    finally:
        c.stop()


def main():
    for b in (FLOWD, LOADGEN):
        if not os.access(b, os.X_OK):
            raise SystemExit("no binary at %s (run make)" % b)
    os.makedirs(WORK, exist_ok=True)
    pg_dir = os.path.join(WORK, "pg")
    pg_port = free_port(int(os.environ.get("PG_PORT", "8896")))
    subprocess.run([PG_SCRIPT, "stop", pg_dir], capture_output=True)
    subprocess.run(["rm", "-rf", pg_dir], check=True)
    subprocess.run([PG_SCRIPT, "start", pg_dir, str(pg_port)], check=True,
                   stdout=subprocess.DEVNULL)
    try:
        ones, bases, bursts, events = [], [], [], []
        for r in range(REPEAT if PHASES - {"idle"} else 0):
            say("round %d of %d" % (r + 1, REPEAT))
            if "one" in PHASES:
                lag, base = phase_one(pg_port, r)
                ones.append(lag)
                bases.append(base)
            if "burst" in PHASES:
                bursts.append(phase_burst(pg_port, r))
            if "events" in PHASES:
                events.append(phase_events(pg_port, r))
        idle = phase_idle(pg_port) if "idle" in PHASES else None
    finally:
        subprocess.run([PG_SCRIPT, "stop", pg_dir], capture_output=True)

    def med(xs, key):
        return statistics.median(x[key] for x in xs)

    print()
    print("Trigger benchmarks, three nodes on 127.0.0.1, medians of %d rounds" % REPEAT)
    print("%-52s %14s %12s" % ("metric", "measured", "target"))
    rows = []
    if ones:
        rows += [
            ("one schedule: fire lag p50 ms", med(ones, "p50"), ""),
            ("one schedule: fire lag p99 ms", med(ones, "p99"), "<= 10"),
            ("one schedule: fire lag max ms", med(ones, "max"), ""),
            ("baseline: serial run create p50 ms", statistics.median(b[0] for b in bases), ""),
            ("baseline: serial run create p99 ms", statistics.median(b[1] for b in bases), ""),
            ("ratio: one-schedule lag p50 / run create p50",
             med(ones, "p50") / max(0.001, statistics.median(b[0] for b in bases)), ""),
        ]
    if bursts:
        n = BURST_FLOWS * 10
        rows += [
            ("%d due in one second: fire lag p50 ms" % n, med(bursts, "p50"), ""),
            ("%d due in one second: fire lag p99 ms" % n, med(bursts, "p99"), "<= 100"),
            ("%d due in one second: fire lag max ms" % n, med(bursts, "max"), "<= 1000"),
        ]
    if events:
        rows += [
            ("event post -> first step started p50 ms", statistics.median(e[0] for e in events), ""),
            ("event post -> first step started p99 ms", statistics.median(e[1] for e in events), "<= 18"),
        ]
    if idle is not None:
        total, before, after, cpu, took = idle
        rows += [
            ("schedules deployed (%d flows x 10), per node" % IDLE_FLOWS, total, "100000"),
            ("deploy time s", took, ""),
            ("RSS per node before deploy MB (max)", max(before), ""),
            ("RSS per node with the schedules MB (max)", max(after), "<= 256"),
            ("idle CPU per node, % of a core (max)", max(cpu), "< 2"),
        ]
    for label, value, target in rows:
        print("%-52s %14s %12s" % (label, ("%.1f" % value) if isinstance(value, float)
                                   else str(value), target))


if __name__ == "__main__":
    main()
