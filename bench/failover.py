#!/usr/bin/python3
"""failover.py - cluster helpers for bench/cluster.sh (standard library only).

  failover.py leader  --nodes U1,U2,U3 --token T
      print the index (1-based, in --nodes order) of the node that says it
      leads and that at least one other node names as leader; exit 1 if none.
  failover.py healthy --nodes U1,U2,U3 --token T
      exit 0 if every node answers GET /readyz 200 and all name the same
      leader in GET /v1/cluster; else print why and exit 1.
  failover.py measure --pid PID --nodes SURVIVOR1,SURVIVOR2 --token T
                      [--path /v1/flows/noop/runs] [--interval-ms 5]
                      [--timeout-ms 250] [--limit-s 30]
      kill -9 PID, then poll POST PATH on every survivor (one thread each,
      an attempt every interval, each with a short timeout) until one answers
      201. Prints one JSON line: failover_ms (kill -> first 201 received),
      via, attempts, the outcomes seen, and leader_seen_ms (kill -> a
      survivor's GET /v1/cluster first says "role": "leader", polled as
      often; a diagnostic only). Exit 1 if no 201 within limit-s.

U is http://a.b.c.d:port. Times are CLOCK_MONOTONIC.
"""
import argparse
import http.client
import json
import os
import signal
import sys
import threading
import time


def split_url(u):
    u = u.strip()
    if u.startswith("http://"):
        u = u[len("http://"):]
    host, _, port = u.partition("/")[0].rpartition(":")
    return host, int(port)


def request(url, method, path, token, body=None, timeout=1.0):
    """-> (status, parsed-json-or-None); raises OSError/HTTPException."""
    host, port = split_url(url)
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        headers = {"Authorization": "Bearer " + token}
        if body is not None:
            headers["Content-Type"] = "application/json"
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        data = r.read()
        try:
            js = json.loads(data) if data else None
        except ValueError:
            js = None
        return r.status, js
    finally:
        c.close()


def cluster_view(url, token):
    try:
        st, js = request(url, "GET", "/v1/cluster", token, timeout=1.0)
    except (OSError, http.client.HTTPException):
        return None
    return js if st == 200 and isinstance(js, dict) else None


def leader_id(view):
    ld = view.get("leader") if view else None
    return ld.get("id") if isinstance(ld, dict) else None


def cmd_leader(a):
    nodes = a.nodes.split(",")
    views = [cluster_view(u, a.token) for u in nodes]
    for i, v in enumerate(views):
        if not v or v.get("role") != "leader":
            continue
        me = v.get("node_id")
        # one node leads alone; with more, another must agree
        if len(views) == 1 or any(leader_id(w) == me
                                  for j, w in enumerate(views) if j != i):
            print(i + 1)
            return 0
    return 1


def cmd_healthy(a):
    nodes = a.nodes.split(",")
    leaders = set()
    for u in nodes:
        try:
            st, js = request(u, "GET", "/readyz", a.token, timeout=1.0)
        except (OSError, http.client.HTTPException) as e:
            print("%s: /readyz: %s" % (u, e))
            return 1
        if st != 200:
            print("%s: /readyz %d %s" % (u, st, json.dumps(js)))
            return 1
        v = cluster_view(u, a.token)
        if v is None:
            print("%s: no /v1/cluster" % u)
            return 1
        leaders.add(leader_id(v))
    if len(leaders) != 1 or None in leaders:
        print("leaders seen: %s" % sorted(map(str, leaders)))
        return 1
    return 0


def cmd_measure(a):
    nodes = a.nodes.split(",")
    body = json.dumps({"parameters": {}})
    go = threading.Event()
    done = threading.Event()
    lock = threading.Lock()
    state = {"t0": None, "t": None, "via": None, "attempts": 0, "seen": {}}
    interval = a.interval_ms / 1000.0
    timeout = a.timeout_ms / 1000.0

    def note(k):
        with lock:
            state["attempts"] += 1
            state["seen"][k] = state["seen"].get(k, 0) + 1

    def poll(url):
        go.wait()
        nxt = time.monotonic()
        while not done.is_set():
            try:
                st, _ = request(url, "POST", a.path, a.token, body=body,
                                timeout=timeout)
                k = str(st)
            except TimeoutError:
                st, k = 0, "timeout"
            except ConnectionRefusedError:
                st, k = 0, "refused"
            except (OSError, http.client.HTTPException) as e:
                st, k = 0, type(e).__name__
            t = time.monotonic()
            note(k)
            if st == 201:
                with lock:
                    if state["t"] is None:
                        state["t"], state["via"] = t, url
                done.set()
                return
            nxt += interval
            if nxt < t:  # an attempt took longer than the interval
                nxt = t
            done.wait(max(0.0, nxt - time.monotonic()))

    def watch():  # when does a survivor first call itself leader?
        go.wait()
        while not stop.is_set() and state.get("tl") is None:
            for u in nodes:
                v = cluster_view(u, a.token)
                if v and v.get("role") == "leader":
                    state["tl"] = time.monotonic()
                    break
            stop.wait(interval)

    stop = threading.Event()
    threads = [threading.Thread(target=poll, args=(u,), daemon=True)
               for u in nodes]
    watcher = threading.Thread(target=watch, daemon=True)
    threads.append(watcher)
    for th in threads:
        th.start()
    time.sleep(0.05)  # the threads are parked on go
    wall = time.time()
    state["t0"] = time.monotonic()
    os.kill(a.pid, signal.SIGKILL)
    go.set()
    done.wait(a.limit_s)
    done.set()
    for th in threads[:-1]:
        th.join(timeout + 1)
    watcher.join(2.0)  # the leader is seen at most a few polls later
    stop.set()
    watcher.join(1.5)
    out = {"killed_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall))
           + ".%03dZ" % (int(wall * 1000) % 1000),
           "attempts": state["attempts"], "seen": state["seen"]}
    if state["t"] is None:
        out["failover_ms"] = None
        print(json.dumps(out))
        return 1
    out["failover_ms"] = round((state["t"] - state["t0"]) * 1000.0, 1)
    out["via"] = state["via"]
    if state.get("tl") is not None:
        out["leader_seen_ms"] = round((state["tl"] - state["t0"]) * 1000.0, 1)
    print(json.dumps(out))
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("cmd", choices=["leader", "healthy", "measure"])
    p.add_argument("--nodes", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--pid", type=int)
    p.add_argument("--path", default="/v1/flows/noop/runs")
    p.add_argument("--interval-ms", type=float, default=5.0)
    p.add_argument("--timeout-ms", type=float, default=250.0)
    p.add_argument("--limit-s", type=float, default=30.0)
    a = p.parse_args()
    if a.cmd == "measure" and not a.pid:
        p.error("measure needs --pid")
    return {"leader": cmd_leader, "healthy": cmd_healthy,
            "measure": cmd_measure}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
