"""test_openapi.py - GET /v1/openapi.json: served without a token, accepted by
a third-party validator (@apidevtools/swagger-parser, installed under the
build tree by scripts/install-deps.sh), in step with the route table both
ways, and the same as api/openapi.py writes. Every answer the integration
tests get is checked against the document's schemas by the harness
(flowd_harness.OpenAPICheck); the last test shows that check can fail."""

import json
import os
import re
import shutil
import subprocess
import sys

import flowd_harness as h

NPM_DIR = os.environ.get("FLOWD_NPM_DIR", os.path.join(h.REPO, "build", "npm"))
VALIDATE_JS = """
const SwaggerParser = require("@apidevtools/swagger-parser");
SwaggerParser.validate(process.argv[1])
  .then(api => console.log("valid: " + Object.keys(api.paths).length + " paths"))
  .catch(e => { console.error(e.message); process.exit(1); });
"""


def validate(path):
    node = shutil.which("node") or shutil.which("nodejs")
    assert node, "node is missing: run scripts/install-deps.sh"
    modules = os.path.join(NPM_DIR, "node_modules")
    assert os.path.isdir(os.path.join(modules, "@apidevtools", "swagger-parser")), \
        "the validator is missing under %s: run scripts/install-deps.sh" % NPM_DIR
    env = dict(os.environ, NODE_PATH=modules)
    return subprocess.run([node, "-e", VALIDATE_JS, path], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=120)


def route_table():
    """(method, path) of every row of daemon/routes.c's routes_table."""
    with open(os.path.join(h.REPO, "daemon", "routes.c")) as f:
        text = f.read()
    table = text[text.index("const struct api_route routes_table[]"):]
    table = table[:table.index("{.method = NULL}")]
    rows = re.findall(r'\.method = "([A-Z]+)", \.path\s*=\s*"([^"]+)"', table)
    assert len(rows) >= 25, rows
    return {(m.lower(), p) for m, p in rows}


def test_the_document_is_served_without_a_token_and_a_validator_accepts_it(node, workdir):
    reply = h.http_request(node.api_port, "GET", "/v1/openapi.json")
    assert reply.status == 200, reply
    assert reply.header("Content-Type") == "application/json"
    with open(os.path.join(h.REPO, "api", "openapi.json")) as f:
        assert reply.json == json.load(f)  # the binary serves the committed document
    assert reply.json["openapi"].startswith("3.1")
    served = os.path.join(workdir, "openapi.json")
    with open(served, "w") as f:
        f.write(reply.text)
    p = validate(served)
    assert p.returncode == 0, p.stdout.decode(errors="replace")
    assert b"valid:" in p.stdout

    # the validator is not a rubber stamp: a dangling reference fails it
    broken = json.loads(reply.text)
    broken["paths"]["/v1/runs/{id}"]["get"]["responses"]["200"]["content"][
        "application/json"]["schema"] = {"$ref": "#/components/schemas/NoSuchThing"}
    bad = os.path.join(workdir, "broken.json")
    with open(bad, "w") as f:
        json.dump(broken, f)
    assert validate(bad).returncode != 0


def test_every_route_is_documented_and_every_documented_operation_is_routed(node):
    with open(os.path.join(h.REPO, "api", "openapi.json")) as f:
        doc = json.load(f)
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    routed = route_table()
    assert documented == routed, ("routed, not documented: %s; documented, not routed: %s"
                                  % (sorted(routed - documented), sorted(documented - routed)))
    # and the running node routes each one: without a token a protected route
    # answers 401 (the path and method matched), a public one anything but 404/405
    fill = {"{flow}": "f", "{id}": "r-000000000001", "{step}": "s", "{member}": "7"}
    for method, path in sorted(documented):
        concrete = path
        for k, v in fill.items():
            concrete = concrete.replace(k, v)
        op = doc["paths"][path][method]
        reply = h.http_request(node.api_port, method.upper(), concrete, token=None)
        if op.get("security") == []:
            assert reply.status not in (404, 405) or reply.json.get("error", {}).get(
                "code") != "method_not_allowed", (method, path, reply)
        else:
            assert reply.status == 401, (method, path, reply.status, reply.text)
        assert str(reply.status) in op["responses"], (method, path, reply.status)


def test_the_committed_document_is_what_api_openapi_py_writes():
    p = subprocess.run([sys.executable, os.path.join(h.REPO, "api", "openapi.py"), "--check"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    assert p.returncode == 0, "api/openapi.json differs from what api/openapi.py writes: " \
        "run python3 api/openapi.py (%s)" % p.stdout.decode(errors="replace")


def test_the_answer_check_fails_answers_the_document_does_not_allow():
    check = h.OpenAPICheck(os.path.join(h.REPO, "api", "openapi.json"))
    good = {"id": "r-1", "flow": "f", "project": "default", "branch": "main", "version": 1, "parameters": {}, "idempotency_key": None,
            "status": "queued", "reason": None, "created_at": "2026-12-05T00:00:00.000Z",
            "started_at": None, "finished_at": None, "trigger": {"type": "manual"}, "steps": [],
            "tags": [], "system_tags": ["project:default"], "origin_run_id": None,
            "redrive_count": 0}
    ctype = "application/json"
    assert check.problems("GET", "/v1/runs/r-1", 200, good, "", ctype) == []
    wrong = dict(good, status="exploded")
    assert check.problems("GET", "/v1/runs/r-1", 200, wrong, "", ctype)
    missing = dict(good)
    del missing["trigger"]
    assert check.problems("GET", "/v1/runs/r-1?consistent=true", 200, missing, "", ctype)
    assert check.problems("GET", "/v1/runs/r-1", 418, {"error": {"code": "x", "message": "y"}},
                          "", ctype)
    # an error body must be the error shape
    assert check.problems("GET", "/v1/runs/r-1", 404, {"oops": 1}, "", ctype)
    # a path no route has is not the document's business (404 tests)
    assert check.problems("GET", "/v2/nothing", 404, {"error": {}}, "", ctype) == []
