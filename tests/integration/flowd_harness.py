"""flowd_harness.py - drives real flowd processes and a private PostgreSQL for
the integration tests. Standard library only.

Objects:
  PgInstance  a private PostgreSQL 15 (scripts/pg-private.sh) on 127.0.0.1
  Database    one database in it, with psql() returning rows
  Cluster     N flowd nodes sharing a Database, each with its own directory,
              config file, log file and Raft data dir under the build tree
  Node        one flowd process: start/kill9/terminate/restart, HTTP helpers

Waiting is always polling with a deadline (wait_for), never a bare sleep. Every
process started here is registered and killed at teardown (and at exit).

Flow specs used by several test files are built by the helpers at the bottom
(step, flow_spec, diamond_flow, ...), so that the spec format lives in one place.
"""

import atexit
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.parse

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.abspath(os.environ.get("FLOWD_BUILD") or os.path.join(REPO, "build"))
FLOWD_BIN = os.path.abspath(os.environ.get("FLOWD_BIN") or os.path.join(BUILD, "flowd"))
PG_PRIVATE = os.path.join(REPO, "scripts", "pg-private.sh")
PG_BIN = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin")
IT_ROOT = os.path.join(BUILD, "it")

# Deadlines are multiplied by this (sanitizer builds are several times slower).
TIME_SCALE = float(os.environ.get("FLOWD_IT_TIME_SCALE")
                   or (4.0 if os.path.basename(BUILD).startswith("build-asan") else 1.0))

ADMIN_TOKEN = "it-admin-token-0123456789abcdef"
READER_TOKEN = "it-reader-token-0123456789abcdef"
DEFAULT = object()  # "use the admin token"

TERMINAL = ("succeeded", "failed", "cancelled")


def scaled(seconds):
    return seconds * TIME_SCALE


# ---------------------------------------------------------------------------
# Polling, ports, names


# What a sanitizer build writes when it finds something.
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def wait_for(fn, timeout, what, interval=0.05, ignore=()):
    """Call fn() until it returns something truthy and return that; raise
    AssertionError naming `what` (and the last value or exception) after
    `timeout` seconds (scaled by TIME_SCALE). Exceptions listed in `ignore`
    count as "not yet"."""
    deadline = time.monotonic() + scaled(timeout)
    last = None
    while True:
        try:
            last = fn()
            if last:
                return last
        except ignore as e:  # noqa: PERF203 - polling
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s (last: %r)"
                                 % (scaled(timeout), what, last))
        time.sleep(interval)


_given_ports = set()


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0),
    never the same one twice in this process."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _given_ports:
            _given_ports.add(port)
            return port


def safe_name(text):
    """A file-system-safe version of a test name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:120] or "test"


def fresh_dir(path):
    if os.path.exists(path):
        shutil.rmtree(path)
    os.makedirs(path)
    return path


def tail(path, lines=60):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return "(no log: %s)" % e
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def pid_alive(pid):
    """True while `pid` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return False


def read_pid(path):
    """The integer in a pid file, or None while it does not exist (or is
    still being written)."""
    try:
        with open(path) as f:
            text = f.read().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def kill_stray(pidfile, must_contain="sleep"):
    """Kill a step process left behind (e.g. after flowd was killed with -9)
    if the pid still names a process whose command line has `must_contain`."""
    pid = read_pid(pidfile)
    if pid is None or not pid_alive(pid):
        return
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            if must_contain.encode() not in f.read():
                return
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


# ---------------------------------------------------------------------------
# PostgreSQL


class PgInstance:
    """A private PostgreSQL under `directory` listening on 127.0.0.1:port."""

    def __init__(self, directory, port=None):
        self.dir = os.path.abspath(directory)
        self.port = port or free_port()

    def _script(self, *args, check=True):
        r = subprocess.run([PG_PRIVATE] + list(args), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=scaled(120))
        if check and r.returncode != 0:
            raise RuntimeError("pg-private.sh %s failed (%d):\n%s"
                               % (" ".join(args), r.returncode, r.stdout))
        return r

    def start(self):
        self._script("start", self.dir, str(self.port))
        return self

    def stop(self):
        self._script("stop", self.dir, check=False)

    def running(self):
        return self._script("status", self.dir, check=False).returncode == 0

    def wipe(self):
        """Stop (if running) and delete everything under the directory."""
        self.stop()
        if os.path.exists(self.dir):
            shutil.rmtree(self.dir)

    def conninfo(self, dbname):
        return "host=127.0.0.1 port=%d dbname=%s user=postgres" % (self.port, dbname)

    def psql(self, sql, dbname="postgres"):
        return psql(self.conninfo(dbname), sql)

    def create_database(self, name):
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", name), name
        self.psql("DROP DATABASE IF EXISTS %s WITH (FORCE)" % name)
        self.psql("CREATE DATABASE %s" % name)
        return Database(self, name)

    def log_text(self):
        try:
            with open(os.path.join(self.dir, "postgres.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""


_NULL = "\x1dNULL\x1d"


def psql(conninfo, sql):
    """Run `sql` with psql and return its rows as lists of strings (None for
    NULL). Raises RuntimeError with psql's message on any error."""
    r = subprocess.run(
        [os.path.join(PG_BIN, "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
         "-F", "\x1f", "-R", "\x1e", "-P", "null=" + _NULL, "-d", conninfo, "-c", sql],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=scaled(60))
    if r.returncode != 0:
        raise RuntimeError("psql failed (%d) for %r: %s" % (r.returncode, sql, r.stderr.strip()))
    out = r.stdout[:-1] if r.stdout.endswith("\n") else r.stdout
    if out == "":
        return []
    return [[None if v == _NULL else v for v in rec.split("\x1f")]
            for rec in out.split("\x1e")]


class Database:
    def __init__(self, pg, name):
        self.pg = pg
        self.name = name

    @property
    def conninfo(self):
        return self.pg.conninfo(self.name)

    def psql(self, sql):
        return psql(self.conninfo, sql)


# ---------------------------------------------------------------------------
# The API document: every answer the tests get is checked against it

class OpenAPICheck:
    """Checks answers against api/openapi.json: the status must be one the
    operation declares, and a JSON body must match that status's schema.
    Paths no route has (tests of 404s) are not checked."""

    def __init__(self, path):
        import jsonschema  # python3-jsonschema (scripts/install-deps.sh)
        with open(path) as f:
            self.doc = json.load(f)
        self.resolver = jsonschema.RefResolver.from_schema(self.doc)
        self.validator_cls = jsonschema.Draft202012Validator
        self.routes = []
        for template, ops in self.doc["paths"].items():
            literal = template.count("{")
            rx = re.compile("^" + re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(template)) + "$")
            self.routes.append((literal, rx, template, ops))
        self.routes.sort(key=lambda r: r[0])  # literal segments first

    def operation(self, method, path):
        path = path.split("?", 1)[0]
        for _, rx, template, ops in self.routes:
            if rx.match(path):
                return template, ops.get(method.lower())
        return None, None

    def problems(self, method, path, status, body, text, content_type):
        """A list of what does not match (empty when the answer conforms)."""
        template, op = self.operation(method, path)
        if op is None:
            return []  # a path or method no route has: 404/405 tests
        declared = op["responses"].get(str(status))
        if declared is None:
            if isinstance(body, dict) and "error" in body or status < 500:
                return ["%s %s answered %d, which the document does not declare"
                        % (method, template, status)]
            return []
        if status == 304 or not (content_type or "").startswith("application/json"):
            return []
        schema = declared.get("content", {}).get("application/json", {}).get("schema")
        if schema is None:
            return []
        v = self.validator_cls(schema, resolver=self.resolver)
        return ["%s %s %d: %s at %s" % (method, template, status, e.message,
                                        "/".join(str(x) for x in e.absolute_path) or "the body")
                for e in v.iter_errors(body)]


_openapi = None


def openapi_check():
    """The checker, or None when FLOWD_OPENAPI_CHECK=0."""
    global _openapi
    if os.environ.get("FLOWD_OPENAPI_CHECK", "1") == "0":
        return None
    if _openapi is None:
        _openapi = OpenAPICheck(os.path.join(REPO, "api", "openapi.json"))
    return _openapi


@contextlib.contextmanager
def table_locked(db, table):
    """Hold `LOCK TABLE <table> IN EXCLUSIVE MODE` in a psql session on `db`
    for the with-block: flowd's PostgreSQL writer waits behind it."""
    locker = subprocess.Popen(
        [os.path.join(PG_BIN, "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
         "-d", db.conninfo],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        locker.stdin.write("BEGIN; LOCK TABLE %s IN EXCLUSIVE MODE; SELECT 'locked';\n" % table)
        locker.stdin.flush()
        assert locker.stdout.readline().strip() == "locked"
        yield
    finally:
        locker.stdin.write("COMMIT;\n")
        locker.stdin.close()
        locker.wait(timeout=30)


# ---------------------------------------------------------------------------
# HTTP


class Reply(tuple):
    """(status, json) with .status, .json, .headers and .text."""

    def __new__(cls, status, body, headers, text):
        self = super().__new__(cls, (status, body))
        self.status = status
        self.json = body
        self.headers = headers
        self.text = text
        return self

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


# port -> ssl.SSLContext for the API ports that serve HTTPS (Cluster(tls=True))
TLS_PORTS = {}

# The cluster secret every test cluster shares (cluster.secret).
CLUSTER_SECRET = "test-cluster-secret-0123456789abcdef"


def make_certs(directory, *names):
    """scripts/make-certs.sh: a throwaway CA and a certificate per name."""
    subprocess.run([os.path.join(REPO, "scripts", "make-certs.sh"), directory] + list(names),
                   check=True, stdout=subprocess.DEVNULL)
    return directory


def http_request(port, method, path, body=None, token=None, headers=None,
                 content_type="application/json", timeout=30, openapi=True, source=None):
    """One request on a new connection to 127.0.0.1:port. `body` is JSON-encoded
    unless it is bytes or str (sent as is). Returns a Reply; the json is None
    for an empty body and the raw text when the body is not JSON. The answer
    must match api/openapi.json (OpenAPICheck) unless `openapi` is False: for
    a listener that is not the API (node.metrics_address)."""
    hdrs = {}
    data = None
    if body is not None:
        if isinstance(body, bytes):
            data = body
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = json.dumps(body).encode()
        if content_type is not None:
            hdrs["Content-Type"] = content_type
    if token is not None:
        hdrs["Authorization"] = "Bearer " + token
    hdrs.update(headers or {})
    src = (source, 0) if source else None
    if port in TLS_PORTS:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=scaled(timeout),
                                           context=TLS_PORTS[port], source_address=src)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=scaled(timeout),
                                          source_address=src)
    try:
        try:
            conn.request(method, path, body=data, headers=hdrs)
        except (BrokenPipeError, ConnectionResetError):
            # The server may answer (413) and close before reading a large
            # body; its answer is still there to read.
            pass
        resp = conn.getresponse()
        raw = resp.read()
        text = raw.decode("utf-8", "replace")
        try:
            parsed = json.loads(text) if text.strip() else None
        except ValueError:
            parsed = text
        check = openapi_check() if openapi else None
        if check is not None:
            problems = check.problems(method, path, resp.status, parsed, text,
                                      resp.getheader("Content-Type"))
            assert not problems, "the answer does not match api/openapi.json: %s\n%s" % (
                "; ".join(problems[:5]), text[:500])
        return Reply(resp.status, parsed, resp.getheaders(), text)
    finally:
        conn.close()


# ---------------------------------------------------------------------------
# flowd nodes

_live_procs = set()


@atexit.register
def _kill_leftovers():
    for p in list(_live_procs):
        if p.poll() is None:
            p.kill()


class Node:
    def __init__(self, cluster, node_id, directory, raft_port, api_port):
        self.cluster = cluster
        self.id = node_id
        self.dir = directory
        self.raft_port = raft_port
        self.api_port = api_port
        self.data_dir = os.path.join(directory, "data")
        self.config_path = os.path.join(directory, "flowd.conf")
        self.log_path = os.path.join(directory, "flowd.log")
        self.proc = None
        self.cgroup = None      # a cgroup v2 directory to start in, or None
        self.env = None         # extra environment variables, or None
        self.starts = 0
        self.internal_port = free_port() if cluster.internal else None

    # -- addresses
    @property
    def raft_address(self):
        return "127.0.0.1:%d" % self.raft_port

    @property
    def api_address(self):
        return "127.0.0.1:%d" % self.api_port

    @property
    def url(self):
        return ("https://" if self.cluster.tls else "http://") + self.api_address

    @property
    def internal_address(self):
        return "127.0.0.1:%d" % self.internal_port if self.internal_port else ""

    # -- config
    def write_config(self):
        c = self.cluster
        lines = [
            "# written by tests/integration/flowd_harness.py",
            "[node]",
            "id = %d" % self.id,
            "raft_address = %s" % self.raft_address,
            "api_address = %s" % self.api_address,
            "data_dir = %s" % self.data_dir,
            "",
            "[peers]",
        ]
        for n in c.nodes:
            lines.append(("%d = %s %s %s" % (n.id, n.raft_address, n.api_address,
                                             n.internal_address)).rstrip())
        lines += [
            "",
            "[database]",
            "conninfo = %s" % c.db.conninfo,
            "",
            "[auth]",
            "admin_tokens = %s" % ADMIN_TOKEN,
            "reader_tokens = %s" % READER_TOKEN,
            "",
            "[raft]",
            "heartbeat_ms = 50",
            "election_ms = 300",
            "",
            "[cluster]",
            "secret = %s" % CLUSTER_SECRET,
            "",
            "[executor]",
            "kill_grace_ms = 1000",
            # the tests run as root; test_sandbox.py checks run_as
            "allow_root = true",
            "",
        ]
        if c.tls:
            lines += [
                "[tls]",
                "cert_file = %s" % os.path.join(c.certs, "node-%d.pem" % self.id),
                "key_file = %s" % os.path.join(c.certs, "node-%d.key" % self.id),
                "ca_file = %s" % os.path.join(c.certs, "ca.pem"),
                "",
            ]
        os.makedirs(self.data_dir, exist_ok=True)
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines))

    def argv(self):
        args = [FLOWD_BIN, "--config", self.config_path]
        for key, value in sorted(self.cluster.overrides.items()):
            args.append("--%s=%s" % (key, value))
        return args + list(getattr(self, "extra_args", ()))

    def _enter_cgroup(self):
        # In the child, before exec: every socket the node opens belongs to
        # this cgroup, so iptables can tell the nodes apart (Partition).
        with open(os.path.join(self.cgroup, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))

    # -- lifecycle
    def start(self, wait=True):
        assert self.proc is None or self.proc.poll() is not None, "node %d already running" % self.id
        if not os.path.exists(FLOWD_BIN):
            raise AssertionError("no flowd binary at %s (run `make`, or set FLOWD_BIN)" % FLOWD_BIN)
        self.starts += 1
        log = open(self.log_path, "ab")
        log.write(("\n=== harness: start #%d: %s\n" % (self.starts, " ".join(self.argv()))).encode())
        log.flush()
        try:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.dir,
                                         env=dict(os.environ, **self.env) if self.env else None,
                                         preexec_fn=self._enter_cgroup if self.cgroup else None)
        finally:
            log.close()
        _live_procs.add(self.proc)
        if wait:
            self.wait_ready()
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout=30):
        def ready():
            if not self.alive():
                raise AssertionError("flowd node %d exited with %s before it was ready; log tail:\n%s"
                                     % (self.id, self.proc.returncode, tail(self.log_path)))
            try:
                r = http_request(self.api_port, "GET", "/readyz", timeout=2)
            except OSError:
                return False
            return r.status == 200 and isinstance(r.json, dict) and r.json.get("ready") is True
        wait_for(ready, timeout, "node %d /readyz" % self.id)
        return self

    def wait_healthy(self, timeout=30):
        wait_for(lambda: self.alive() and http_request(self.api_port, "GET", "/healthz", timeout=2).status == 200,
                 timeout, "node %d /healthz" % self.id, ignore=(OSError,))
        return self

    def kill9(self):
        """SIGKILL and reap; returns the exit status (-9)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.kill()
        rc = self.proc.wait(timeout=scaled(30))
        _live_procs.discard(self.proc)
        return rc

    def terminate(self, timeout=30):
        """SIGTERM and wait for the exit; returns the exit code. A node that
        does not exit within `timeout` is killed and the test fails."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=scaled(timeout))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("node %d did not exit within %.0fs of SIGTERM; log tail:\n%s"
                                 % (self.id, scaled(timeout), tail(self.log_path)))
        finally:
            _live_procs.discard(self.proc)
        return rc

    def restart(self, wait=True):
        """kill -9 if still running, then start again with the same config,
        ports and data dir."""
        self.kill9()
        return self.start(wait=wait)

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    # -- HTTP
    def request(self, method, path, body=None, token=DEFAULT, **kw):
        if token is DEFAULT:
            token = ADMIN_TOKEN
        return http_request(self.api_port, method, path, body=body, token=token, **kw)

    def get(self, path, token=DEFAULT, **kw):
        return self.request("GET", path, token=token, **kw)

    def post(self, path, body=None, token=DEFAULT, **kw):
        return self.request("POST", path, body=body, token=token, **kw)

    def put(self, path, body=None, token=DEFAULT, **kw):
        return self.request("PUT", path, body=body, token=token, **kw)

    def delete(self, path, token=DEFAULT, **kw):
        return self.request("DELETE", path, token=token, **kw)

    # -- API conveniences (each asserts the call succeeded)
    def deploy(self, name, spec):
        """PUT the spec; a 503 (an election under way: no leader for a
        moment, as a loaded machine sees) is retried as a client would,
        for up to 15 s."""
        def put():
            status, body = self.put("/v1/flows/" + name, spec)
            if status == 503:
                return None
            assert status in (200, 201), (status, body)
            return body["flow"]
        return wait_for(put, 15, "a leader to deploy %s" % name, interval=0.2)

    def start_run(self, flow, parameters=None, idempotency_key=None, expect=201):
        body = {}
        if parameters is not None:
            body["parameters"] = parameters
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        status, run = self.post("/v1/flows/%s/runs" % flow, body)
        assert status == expect, (status, run)
        return run

    def run(self, run_id):
        status, run = self.get("/v1/runs/" + urllib.parse.quote(run_id, safe=""))
        assert status == 200, (status, run)
        return run

    def wait_run(self, run_id, timeout=30, statuses=TERMINAL):
        """Poll GET /v1/runs/{id} until its status is in `statuses`; return it."""
        def done():
            status, run = self.get("/v1/runs/" + urllib.parse.quote(run_id, safe=""), timeout=5)
            return run if status == 200 and run.get("status") in statuses else None
        return wait_for(done, timeout, "run %s to reach %s" % (run_id, "/".join(statuses)),
                        ignore=(OSError,))

    def list_runs(self, query="", page_limit=None):
        """Every run GET /v1/runs returns, following next_cursor."""
        runs, cursor = [], None
        for _ in range(10000):
            params = urllib.parse.parse_qsl(query)
            if page_limit:
                params.append(("limit", str(page_limit)))
            if cursor:
                params.append(("cursor", cursor))
            status, body = self.get("/v1/runs?" + urllib.parse.urlencode(params))
            assert status == 200, (status, body)
            runs.extend(body["runs"])
            cursor = body.get("next_cursor")
            if not cursor:
                return runs
        raise AssertionError("GET /v1/runs pagination does not end")

    def cluster_info(self):
        status, body = self.get("/v1/cluster")
        assert status == 200, (status, body)
        return body

    def wait_db_caught_up(self, timeout=60):
        """Wait until PostgreSQL holds everything this node applied."""
        def caught_up():
            c = self.cluster_info()
            return (c if c.get("db_connected") and c.get("db_backlog") == 0
                    and c.get("db_applied_index") == c.get("applied_index") else None)
        return wait_for(caught_up, timeout, "node %d: PostgreSQL to catch up" % self.id,
                        ignore=(OSError,))


class Cluster:
    """N flowd nodes under `directory`, all using database `db`. `overrides`
    ({"limits.max_body_bytes": 4096}) become --section.key=value arguments."""

    def __init__(self, directory, db, n=1, overrides=None, tls=False, internal=False):
        self.dir = directory
        self.db = db
        self.overrides = dict(overrides or {})
        self.tls = tls              # [tls]: HTTPS API, TLS Raft (certs under dir/certs)
        self.internal = internal    # node.internal_address: a listener for nodes
        self.certs = None
        self.nodes = []
        if tls:
            self.certs = make_certs(os.path.join(directory, "certs"),
                                    *["node-%d" % i for i in range(1, n + 3)] + ["client"])
            self.ssl_context = ssl.create_default_context(cafile=os.path.join(self.certs, "ca.pem"))
        for i in range(1, n + 1):
            d = fresh_dir(os.path.join(directory, "node%d" % i))
            self.nodes.append(Node(self, i, d, free_port(), free_port()))
            if tls:
                TLS_PORTS[self.nodes[-1].api_port] = self.ssl_context
        for node in self.nodes:
            node.write_config()

    def new_joining_node(self):
        """A node (not started) configured to join this running cluster:
        its [peers] list the current nodes, and node.join is set."""
        i = max(n.id for n in self.nodes) + 1
        d = fresh_dir(os.path.join(self.dir, "node%d" % i))
        node = Node(self, i, d, free_port(), free_port())
        if self.tls:
            make_certs(self.certs, "node-%d" % i)
            TLS_PORTS[node.api_port] = self.ssl_context
        node.write_config()
        node.extra_args = ["--node.join=true"]
        self.nodes.append(node)
        return node

    def start(self, wait=True):
        for node in self.nodes:
            node.start(wait=False)
        if wait:
            for node in self.nodes:
                node.wait_ready()
        return self

    def __getitem__(self, i):
        return self.nodes[i]

    def leader(self, timeout=30):
        def find():
            for node in self.nodes:
                if node.alive():
                    try:
                        if node.cluster_info().get("role") == "leader":
                            return node
                    except (OSError, AssertionError):
                        pass
            return None
        return wait_for(find, timeout, "a leader")

    def log_tails(self, lines=60):
        out = []
        for node in self.nodes:
            out.append("----- node %d log (%s), last %d lines -----\n%s"
                       % (node.id, node.log_path, lines, tail(node.log_path, lines)))
        return "\n".join(out)

    def close(self):
        """Stop every node with SIGTERM (so that a sanitizer build checks for
        leaks at exit), then fail if a node did not exit cleanly or if any
        node's log holds a sanitizer report."""
        problems = []
        for node in self.nodes:
            was_running = node.proc is not None and node.proc.poll() is None
            try:
                rc = node.terminate(timeout=20)
            except AssertionError as e:
                problems.append(str(e))
                continue
            if was_running and rc != 0:
                problems.append("node %d exited with %s after SIGTERM" % (node.id, rc))
        for node in self.nodes:
            text = node.log_text()
            for marker in SANITIZER_MARKERS:
                if marker in text:
                    problems.append("node %d log has a sanitizer report (%s):\n%s"
                                    % (node.id, marker, tail(node.log_path, 80)))
                    break
        if problems:
            raise AssertionError("\n".join(problems))


# ---------------------------------------------------------------------------
# Flow specs. The spec format (core/spec.h) in one place:
#   {"description": s,
#    "parameters": {"<name>": {"type": "string|int|float|bool|json",
#                              "required": b, "default": v, "description": s}},
#    "steps": [{"name": s, "command": [..] | "shell": s, "env": {"K": "V"},
#               "depends_on": [names], "retries": {"max": n, "backoff_s": n},
#               "timeout_s": n, "workdir": s}]}
# Steps see FLOWD_RUN_ID, FLOWD_FLOW, FLOWD_PROJECT, FLOWD_BRANCH, FLOWD_STEP, FLOWD_ATTEMPT and one
# FLOWD_PARAM_<NAME> (upper case) per parameter.


def step(name, shell=None, command=None, depends_on=(), retries=None, backoff_s=0,
         timeout_s=None, env=None):
    s = {"name": name}
    if command is not None:
        s["command"] = list(command)
    else:
        s["shell"] = shell if shell is not None else "true"
    if depends_on:
        s["depends_on"] = list(depends_on)
    if retries is not None:
        s["retries"] = {"max": retries, "backoff_s": backoff_s}
    if timeout_s is not None:
        s["timeout_s"] = timeout_s
    if env:
        s["env"] = dict(env)
    return s


def flow_spec(steps, parameters=None, description=None):
    spec = {"steps": list(steps)}
    if parameters:
        spec["parameters"] = parameters
    if description is not None:
        spec["description"] = description
    return spec


def param(type_="string", required=False, default=None):
    p = {"type": type_}
    if required:
        p["required"] = True
    if default is not None:
        p["default"] = default
    return p


def sh_quote(text):
    return "'" + text.replace("'", "'\\''") + "'"


def diamond_flow(out_dir, description="diamond a -> (b, c) -> d"):
    """a -> b, a -> c, (b, c) -> d. Each step writes
    "<region> <count> <run id> <step> <attempt>" to out_dir/<step>.out and says
    "step <name> region=<region>" on stdout."""
    body = ('echo "step $FLOWD_STEP region=$FLOWD_PARAM_REGION"; '
            'echo "$FLOWD_PARAM_REGION $FLOWD_PARAM_COUNT $FLOWD_RUN_ID $FLOWD_STEP $FLOWD_ATTEMPT" > '
            + sh_quote(out_dir) + '/"$FLOWD_STEP.out"')
    return flow_spec(
        [step("a", body),
         step("b", body, depends_on=["a"]),
         step("c", body, depends_on=["a"]),
         step("d", body, depends_on=["b", "c"])],
        parameters={"region": param("string", required=True), "count": param("int", default=3)},
        description=description)


def echo_flow(text="hello"):
    """One quick step that succeeds."""
    return flow_spec([step("only", "echo " + sh_quote(text))])


def failing_flow(retries=0):
    """One step that always exits 1, then a step that depends on it."""
    return flow_spec([step("boom", "echo boom >&2; exit 1", retries=retries),
                      step("after", "echo never", depends_on=["boom"])])


def sleeper_flow(pid_dir, seconds, timeout_s=None, retries=None):
    """One step that writes its pid to pid_dir/<attempt>.pid, then sleeps."""
    return flow_spec([step(
        "nap",
        'echo $$ > %s/"$FLOWD_ATTEMPT.pid"; exec sleep %s' % (sh_quote(pid_dir), seconds),
        timeout_s=timeout_s, retries=retries)])


def steps_by_name(run):
    return {s["name"]: s for s in run["steps"]}


class EventStream:
    """A client of a Server-Sent Events stream (GET /v1/watch, followed
    logs): the status and headers at once, then events one by one with
    next(timeout), each {"id", "event", "data" (parsed JSON)}. Comments
    (keep-alives) are skipped; ended is True once the server closed it."""

    def __init__(self, port, path, token=READER_TOKEN, headers=None, timeout=10):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        hdrs = {"Accept": "text/event-stream"}
        if token is not None:
            hdrs["Authorization"] = "Bearer " + token
        hdrs.update(headers or {})
        self.conn.request("GET", path, headers=hdrs)
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.ended = False
        self.retry = None
        self.body = None
        if self.status != 200:
            self.body = json.loads(self.resp.read() or b"null")

    def header(self, name):
        return self.resp.getheader(name)

    def next(self, timeout=10):
        """The next event, or None when the stream ended or nothing came
        within `timeout` seconds."""
        self.conn.sock.settimeout(scaled(timeout))
        ev = {}
        try:
            while True:
                line = self.resp.readline()
                if not line:
                    self.ended = True
                    return None
                line = line.decode().rstrip("\n")
                if line == "":
                    if "event" in ev or "data" in ev:
                        if "data" in ev:
                            ev["data"] = json.loads(ev["data"])
                        return ev
                    continue
                if line.startswith(":"):
                    continue
                key, _, val = line.partition(":")
                val = val[1:] if val.startswith(" ") else val
                if key == "retry":
                    self.retry = int(val)
                elif key in ("id", "event"):
                    ev[key] = val
                elif key == "data":
                    ev["data"] = ev["data"] + "\n" + val if "data" in ev else val
        except (socket.timeout, TimeoutError):
            return None

    def until(self, pred, timeout=20, what="an event"):
        """Events up to and including the first that pred() accepts."""
        seen = []
        deadline = time.monotonic() + scaled(timeout)
        while time.monotonic() < deadline:
            ev = self.next(timeout=max(0.1, deadline - time.monotonic()))
            if ev is None:
                if self.ended:
                    break
                continue
            seen.append(ev)
            if pred(ev):
                return seen
        raise AssertionError("no %s within %ss; got %r" % (what, timeout, seen[-20:]))

    def close(self):
        self.conn.close()
