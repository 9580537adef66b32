"""test_input_defects.py - input that used to get a wrong answer, on one node:
bytes that are not UTF-8 quoted in an error (a 500 "no response" instead of
the 400), the flow names "." and ".." (which a normalizing proxy rewrites),
time zones that do not exist (kept in memory for good), and log lines
without a time. The requests go out as raw http.client requests, so that
nothing on the way decodes or normalizes their paths."""

import http.client
import os
import re

import pytest

import flowd_harness as h
from conftest import close_cluster, new_cluster
from flowd_harness import echo_flow


@pytest.fixture(scope="module")
def node(pg):
    db = pg.create_database("t_input_defects")
    c = new_cluster(h.fresh_dir(os.path.join(h.IT_ROOT, "test_input_defects")), db)
    try:
        yield c[0]
    finally:
        close_cluster(c)


def error_of(reply, status, code, field):
    """The reply is `status` with a JSON error body naming `code` and `field`."""
    assert reply.status == status, (reply.status, reply.text)
    assert (reply.header("Content-Type") or "").startswith("application/json"), reply.headers
    assert isinstance(reply.json, dict) and "error" in reply.json, reply.text
    err = reply.json["error"]
    assert (err["code"], err.get("field")) == (code, field), err
    assert err["message"], err
    return err


def test_cron_preview_of_bytes_that_are_not_utf8_is_a_400_naming_expr(node):
    r = node.get("/v1/cron/preview?expr=%FF%FE+*+*+*+*")
    err = error_of(r, 400, "invalid_query", "expr")
    # the bytes are quoted as U+FFFD, not dropped
    assert "\ufffd" in err["message"], err


def test_unknown_spec_key_cut_inside_a_character_is_a_400_naming_the_key(node):
    key = "k" * 63 + "\u00e9"
    spec = echo_flow()
    spec[key] = 1
    err = error_of(node.put("/v1/flows/utf8", spec), 400, "unknown_field", key)
    assert "k" * 63 in err["message"], err
    # the same key as raw UTF-8 bytes in the body (not a \u escape)
    body = ('{"steps": [{"name": "a", "shell": "true"}], "%s": 1}' % key).encode()
    error_of(node.put("/v1/flows/utf8", body), 400, "unknown_field", key)
    status, _ = node.get("/v1/flows/utf8")
    assert status == 404


@pytest.mark.parametrize("raw", [".", "..", "%2E", "%2E%2E", "%2e%2e", ".%2E"])
def test_flow_names_dot_and_dot_dot_are_refused(node, raw):
    r = node.put("/v1/flows/" + raw, echo_flow())
    error_of(r, 400, "invalid_value", "flow")
    status, body = node.get("/v1/flows")
    assert status == 200 and body["flows"] == [], body


def test_names_with_dots_that_are_not_path_segments_still_deploy(node):
    for name in ("...", ".hidden", "v1..2"):
        status, body = node.put("/v1/flows/" + name, echo_flow())
        assert status == 201, (name, status, body)
        assert body["flow"]["name"] == name
        assert node.delete("/v1/flows/" + name)[0] == 200


def test_step_named_dot_dot_is_refused(node):
    spec = {"steps": [{"name": "..", "shell": "true"}]}
    error_of(node.put("/v1/flows/steps", spec), 400, "invalid_value", "steps[0].name")


@pytest.mark.skipif(os.path.basename(h.BUILD).startswith("build-asan"),
                    reason="ASan's quarantine holds freed memory: RSS says nothing")
def test_unknown_time_zones_do_not_grow_the_node(node):
    """Every made-up ?tz= used to be cached for good (about 110 bytes each:
    40,000 grew a node by 4.4 MB). After a warm-up, 40,000 more unique
    unknown zones must leave RSS where it was, give or take the noise."""
    def rss_kb():
        with open("/proc/%d/status" % node.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def previews(conn, prefix, count):
        for i in range(count):
            conn.request("GET", "/v1/cron/preview?expr=0+0+*+*+*&count=1&tz=Zz/%s%d" % (prefix, i),
                         headers={"Authorization": "Bearer " + h.ADMIN_TOKEN})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 400, resp.status

    conn = http.client.HTTPConnection("127.0.0.1", node.api_port, timeout=h.scaled(30))
    try:
        previews(conn, "warm", 3000)  # the server's own pools settle first
        before = rss_kb()
        previews(conn, "u", 40000)
        grown = rss_kb() - before
    finally:
        conn.close()
    assert grown < 1024, "RSS grew by %d kB over 40,000 unknown zones" % grown
    # a real zone still answers
    status, body = node.get("/v1/cron/preview?expr=0+0+*+*+*&count=1&tz=Europe/Berlin")
    assert status == 200 and body["timezone"] == "Europe/Berlin", body


STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z flowd (debug|info|warn|error): ")


def test_log_lines_start_with_an_rfc3339_time_outside_journald(node):
    """The harness sends stderr to a file, which is never journald's stream
    (even when the tests run under systemd with JOURNAL_STREAM set)."""
    lines = [l for l in node.log_text().splitlines() if " flowd " in l or l.startswith("flowd ")]
    assert lines, node.log_text()
    bad = [l for l in lines if not STAMP.match(l)]
    assert not bad, bad[:5]


@pytest.mark.parametrize("cursor", ["-1", "%20%205", "18446744073709551617",
                                    "18446744073709551616", "0", "5x", "+5"])
def test_run_list_cursors_that_are_not_a_next_cursor_are_refused(node, cursor):
    error_of(node.get("/v1/runs?cursor=" + cursor), 400, "invalid_query", "cursor")


def test_a_next_cursor_is_accepted(node):
    node.deploy("cursed", echo_flow())
    for _ in range(3):
        node.start_run("cursed")
    status, page = node.get("/v1/runs?flow=cursed&limit=2")
    assert status == 200 and page["next_cursor"], page
    status, rest = node.get("/v1/runs?flow=cursed&limit=2&cursor=" + page["next_cursor"])
    assert status == 200 and len(rest["runs"]) == 1, rest
