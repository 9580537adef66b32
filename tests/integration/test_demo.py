"""test_demo.py - `make run` (scripts/demo.sh), as the README's first command
runs it: a cluster with its own PostgreSQL, the example flow run to the end,
and the dashboard's address printed (DEMO_ONESHOT=1 stops once it is up)."""

import os
import re
import subprocess

import flowd_harness as h


def test_make_run_starts_the_demo_and_prints_the_dashboard_url():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    build = os.path.relpath(os.path.join(h.IT_ROOT, "demo_run"), root)
    env = dict(os.environ, DEMO_ONESHOT="1", NODES="1", BUILD=build,
               FLOWD_BIN=h.FLOWD_BIN, API_PORT=str(h.free_port()),
               RAFT_PORT=str(h.free_port()), PG_PORT=str(h.free_port()))
    p = subprocess.run([os.path.join(root, "scripts", "demo.sh")], cwd=root, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=h.scaled(180))
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0, (out, p.stderr.decode(errors="replace")[-3000:])
    m = re.search(r"dashboard: +(http://127\.0\.0\.1:\d+/)", out)
    assert m and m.group(1) == "http://127.0.0.1:%s/" % env["API_PORT"], out
    assert "succeeded" in out
