"""conftest.py - pytest fixtures for flowd's integration tests.

  pg        (session)  a private PostgreSQL 15 under $FLOWD_BUILD/it/pg
  db        (function) a fresh database t_<n> in it, per test
  psql      (function) psql(sql) -> rows, on the test's database
  workdir   (function) $FLOWD_BUILD/it/<test name>/, emptied first
  cluster   (function) factory: cluster(n=1, overrides=None, db=None, start=True)
  node      (function) one started node (a one-node cluster)

Every flowd process is killed at teardown; when a test fails, the tail of
every node's log is printed. Run with FLOWD_BIN and FLOWD_BUILD set (make
integration does), or from the repository root after `make`.
"""

import itertools
import os

import pytest

import flowd_harness as h

_db_counter = itertools.count(1)
_live_clusters = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _failed(request):
    node = request.node
    return any(getattr(getattr(node, "rep_" + w, None), "failed", False)
               for w in ("setup", "call"))


@pytest.fixture(autouse=True)
def _print_logs_on_failure(request):
    """For clusters that outlive one test (module-scoped ones)."""
    yield
    if _failed(request):
        for c in _live_clusters:
            print(c.log_tails())


@pytest.fixture(scope="session")
def pg():
    os.makedirs(h.IT_ROOT, exist_ok=True)
    inst = h.PgInstance(os.path.join(h.IT_ROOT, "pg"))
    inst.wipe()  # a fresh cluster every session: no databases left from before
    inst.start()
    yield inst
    inst.stop()


@pytest.fixture
def db(pg):
    return pg.create_database("t_%d" % next(_db_counter))


@pytest.fixture
def psql(db):
    return db.psql


@pytest.fixture
def workdir(request):
    return h.fresh_dir(os.path.join(h.IT_ROOT, h.safe_name(request.node.name)))


def new_cluster(directory, db, n=1, overrides=None, start=True, **kw):
    """Create (and start) a cluster that the caller must close(). `kw`
    goes to h.Cluster (tls=True, internal=True)."""
    c = h.Cluster(directory, db, n=n, overrides=overrides, **kw)
    _live_clusters.append(c)
    if start:
        try:
            c.start()
        except BaseException:
            close_cluster(c, print_logs=True)
            raise
    return c


def close_cluster(c, print_logs=False):
    if print_logs:
        print(c.log_tails())
    c.close()
    if c in _live_clusters:
        _live_clusters.remove(c)


@pytest.fixture
def cluster(request, workdir, db):
    made = []

    def factory(n=1, overrides=None, db=db, start=True, name="cluster", **kw):
        c = new_cluster(os.path.join(workdir, "%s%d" % (name, len(made)) if made else workdir),
                        db, n=n, overrides=overrides, start=start, **kw)
        made.append(c)
        return c

    yield factory
    for c in made:
        close_cluster(c, print_logs=_failed(request))


@pytest.fixture
def node(cluster):
    return cluster(1)[0]
