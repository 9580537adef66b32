#!/usr/bin/env python3
"""openapi.py - writes api/openapi.json, the OpenAPI 3.1 document flowd serves
at GET /v1/openapi.json (built into the binary by api/openapi.c).

Every row of the route table (daemon/routes.c) has one op(...) line below;
tests/integration/test_openapi.py checks that the two agree, that this
script's output is the committed api/openapi.json, that a third-party
validator accepts it, and that the integration tests' answers match its
schemas. After changing it: python3 api/openapi.py
"""
import json
import os
import sys

def ref(name):
    return {"$ref": "#/components/schemas/" + name}

def nullable(schema):
    s = dict(schema)
    t = s.get("type")
    if t is None:
        return {"oneOf": [schema, {"type": "null"}]}
    s["type"] = [t, "null"] if isinstance(t, str) else list(t) + ["null"]
    return s

TIME = {"type": "string", "format": "date-time"}
INT = {"type": "integer"}
UINT = {"type": "integer", "minimum": 0}
STR = {"type": "string"}
BOOL = {"type": "boolean"}

def obj(props, required=None, extra=False, **kw):
    o = {"type": "object", "properties": props,
         "required": list(props) if required is None else required,
         "additionalProperties": extra}
    o.update(kw)
    return o

schemas = {
    "Error": obj({"error": obj({"code": STR, "message": STR, "field": STR},
                              required=["code", "message"])},
                 description="Every 4xx and 5xx answer. `code` is stable; `field` names the "
                             "body field, path parameter or query parameter at fault."),
    "FlowSpec": {"type": "object", "required": ["steps"], "additionalProperties": True,
                 "description": "A flow's spec (docs/api.md, docs/triggers.md); answered "
                                "normalized, with every default filled in.",
                 "properties": {
                     "description": STR,
                     "parameters": {"type": "object", "additionalProperties": {"type": "object"}},
                     "steps": {"type": "array", "minItems": 1, "items": {
                         "type": "object", "required": ["name"], "additionalProperties": True,
                         "properties": {"name": STR, "shell": STR,
                                        "command": {"type": "array", "items": STR},
                                        "depends_on": {"type": "array", "items": STR},
                                        "env": {"type": "object", "additionalProperties": STR},
                                        "timeout_s": UINT,
                                        "retries": {"type": "object"}}}},
                     "triggers": {"type": "object"},
                     "tags": {"type": "array", "items": STR,
                              "description": "Default user tags of the flow's runs"},
                     "max_active_runs": UINT}},
    "Flow": obj({"name": STR, "project": STR, "branch": STR, "version": UINT,
                 "deployed": BOOL, "description": STR,
                 "created_at": TIME, "updated_at": TIME, "spec": ref("FlowSpec")},
                required=["name", "project", "branch", "version", "deployed", "description",
                          "created_at", "updated_at"]),
    "FlowPut": obj({"flow": ref("Flow"), "created": BOOL}),
    "FlowList": obj({"flows": {"type": "array", "items": ref("Flow")}}),
    "FlowVersions": obj({"flow": STR, "versions": {"type": "array", "items": obj(
        {"version": UINT, "created_at": TIME, "spec": nullable(ref("FlowSpec"))})}}),
    "Schedule": obj({"flow": STR, "paused": BOOL, "schedules": {"type": "array", "items": obj({
        "schedule": UINT, "cron": STR, "timezone": STR, "cursor": TIME,
        "counters": obj({k: UINT for k in ("fired", "skipped", "missed", "buffered", "dropped")}),
        "last_fires": {"type": "array", "items": obj({
            "nominal_time": TIME, "decided_at": TIME,
            "outcome": {"enum": ["fired", "skipped", "missed", "buffered", "dropped"]},
            "count": UINT, "run_id": nullable(STR), "reason": nullable(STR)})},
        "next_fire_times": {"type": "array", "items": TIME}})}}),
    "Paused": obj({"flow": STR, "paused": BOOL}),
    "Trigger": {"type": "object", "required": ["type"], "additionalProperties": True,
                "properties": {"type": {"enum": ["manual", "schedule", "backfill", "event",
                                                 "on_finish", "resume", "local_resume"]}},
                "description": "What started a run (docs/api.md, \"Objects\")."},
    "Attempt": obj({"attempt": UINT, "node": UINT,
                    "status": {"enum": ["running", "succeeded", "failed", "lost", "cancelled"]},
                    "started_at": TIME, "finished_at": nullable(TIME),
                    "exit_code": nullable(INT), "signal": nullable(INT),
                    "reason": nullable(STR)}),
    "Step": obj({"name": STR,
                 "status": {"enum": ["pending", "ready", "running", "retry_wait", "succeeded",
                                     "failed", "cancelled", "skipped", "reused"]},
                 "depends_on": {"type": "array", "items": STR},
                 "started_at": nullable(TIME), "finished_at": nullable(TIME),
                 "reused_from": nullable(obj({"run_id": STR, "attempt": UINT})),
                 "attempts": {"type": "array", "items": ref("Attempt")}}),
    "Run": obj({"id": STR, "flow": STR, "project": STR, "branch": STR, "version": UINT,
                "parameters": {"type": "object"},
                "idempotency_key": nullable(STR),
                "status": {"enum": ["queued", "running", "succeeded", "failed", "cancelled"]},
                "reason": nullable(STR), "created_at": TIME, "started_at": nullable(TIME),
                "finished_at": nullable(TIME), "trigger": ref("Trigger"),
                "tags": {"type": "array", "items": STR,
                         "description": "User tags, sorted (docs/lifecycle.md)"},
                "system_tags": {"type": "array", "items": STR,
                                "description": "project:, branch:, flow:, version:, "
                                               "trigger: and (resumes) origin:"},
                "origin_run_id": nullable(STR), "redrive_count": UINT,
                "steps": {"type": "array", "items": ref("Step")}},
               required=["id", "flow", "project", "branch", "version", "parameters",
                         "idempotency_key", "status",
                         "reason", "created_at", "started_at", "finished_at", "trigger",
                         "tags", "system_tags", "origin_run_id", "redrive_count"]),
    "RunPage": obj({"runs": {"type": "array", "items": ref("Run")},
                    "next_cursor": nullable(STR)}),
    "Logs": obj({"run_id": STR, "step": STR, "attempt": UINT, "stdout": STR, "stderr": STR,
                 "truncated": BOOL}),
    "EventList": obj({"events": {"type": "array", "items": obj({
        "id": STR, "name": STR, "payload": {"type": "object"}, "received_at": TIME,
        "runs": {"type": "array", "description": "What the event did to each trigger "
                 "(as EventAnswer.runs)"},
        "index": UINT})}, "next_cursor": nullable(STR)}),
    "EventAnswer": obj({"id": STR, "name": STR, "duplicate": BOOL,
                        "runs": {"type": "array", "items": obj({
                            "flow": STR, "trigger": UINT,
                            "outcome": {"enum": ["fired", "skipped", "buffered", "dropped",
                                                 "collected"]},
                            "run_id": nullable(STR), "reason": nullable(STR),
                            "waiting_for": {"type": "array", "items": STR,
                                            "description": "collected: the events an all-of "
                                                           "trigger still waits for"}},
                            required=["flow", "trigger", "outcome"])}}),
    "Backfill": obj({"flow": STR, "ticks": UINT, "runs": {"type": "array", "items": obj({
        "schedule": UINT, "nominal_time": TIME, "run_id": STR})}}),
    "CronPreview": obj({"expr": STR, "timezone": STR, "dst_missing": STR, "dst_repeated": STR,
                        "times": {"type": "array", "items": STR},
                        "local_times": {"type": "array", "items": STR}}),
    "Member": obj({"id": UINT, "raft_address": STR, "api_address": STR,
                   "role": {"enum": ["voter", "standby", "spare", "unknown"]},
                   "leader": BOOL, "live": nullable(BOOL)}),
    "Members": obj({"members": {"type": "array", "items": ref("Member")}}),
    "Cluster": obj({"node_id": UINT,
                    "role": {"enum": ["leader", "follower", "candidate", "unavailable"]},
                    "leader": nullable(obj({"id": UINT, "api_address": STR})),
                    "term": UINT, "commit_index": UINT, "applied_index": UINT,
                    "db_applied_index": UINT, "db_backlog": UINT, "db_backlog_ms": UINT,
                    "db_connected": BOOL,
                    "db_write_failing": obj({"index": UINT, "error": STR,
                                             "writes_refused": UINT}),
                    "members": {"type": "array", "items": ref("Member")},
                    "scheduler": nullable({"type": "object", "additionalProperties": True,
                                           "properties": {"schedules": UINT,
                                                          "ticks_fired": UINT,
                                                          "fire_lag_ms": {"type": "object"}}})}),
    "LeaderTransfer": obj({"leader": UINT}),
    "Health": obj({"status": {"const": "ok"}}),
    "Ready": obj({"ready": BOOL, "reason": STR}, required=["ready"]),
    "RunCreate": obj({"parameters": {"type": "object"},
                      "idempotency_key": {"type": "string", "minLength": 1},
                      "tags": {"type": "array", "items": STR}}, required=[]),
    "RunTags": obj({"add": {"type": "array", "items": STR},
                    "remove": {"type": "array", "items": STR}}, required=[]),
    "RunResume": obj({"from_step": STR, "version": {"enum": ["origin", "current"]},
                      "idempotency_key": {"type": "string", "minLength": 1},
                      "tags": {"type": "array", "items": STR}}, required=[]),
    "RunRedrive": obj({"idempotency_key": {"type": "string", "minLength": 1}}, required=[]),
    "RunRecord": obj({"origin_run_id": STR, "parameters": {"type": "object"},
                      "idempotency_key": {"type": "string", "minLength": 1},
                      "steps": {"type": "array", "items": obj({
                          "name": STR,
                          "status": {"enum": ["succeeded", "failed", "skipped", "reused"]},
                          "started_ms": UINT, "finished_ms": UINT,
                          "reused_from": obj({"run_id": STR, "attempt": UINT})},
                          required=["name", "status"])}},
                     required=["origin_run_id", "steps"]),
    "Compare": obj({"project": STR, "flow": STR, "branches": {"type": "array", "items": STR},
                    "pairs": {"type": "array", "items": obj({
                        "key": STR, "by": {"enum": ["tick", "event"]},
                        "runs": {"type": "object", "additionalProperties": obj({
                            "run_id": STR, "status": STR, "created_at": TIME,
                            "started_at": nullable(TIME), "finished_at": nullable(TIME),
                            "duration_ms": nullable(INT), "outputs": {"type": "null"}})}})}}),
    "Event": obj({"name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}$"},
                  "project": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                  "branch": STR,
                  "id": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,128}$"},
                  "payload": {"type": "object"}}, required=["name"]),
    "BackfillRequest": obj({"from": TIME, "to": TIME, "schedule": UINT},
                           required=["from", "to"]),
    "MemberAdd": obj({"id": {"type": "integer", "minimum": 1}, "raft_address": STR,
                      "api_address": STR}),
    "LeaderTransferRequest": obj({"id": {"type": "integer", "minimum": 1}}, required=[]),
}

P = {
    "flow": {"name": "flow", "in": "path", "required": True,
             "description": "A flow name: [A-Za-z0-9_.-]{1,128}, not . or ..",
             "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,128}$"}},
    "project": {"name": "project", "in": "path", "required": True,
                "description": "A project name: [A-Za-z0-9_-]{1,64}",
                "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}},
    "branch": {"name": "branch", "in": "path", "required": True,
               "description": "main, prod, test.<name> or user.<name>",
               "schema": {"type": "string",
                          "pattern": "^(main|prod|(test|user)\\.[A-Za-z0-9_-]{1,64})$"}},
    "id": {"name": "id", "in": "path", "required": True, "description": "A run id",
           "schema": STR},
    "step": {"name": "step", "in": "path", "required": True, "description": "A step name",
             "schema": STR},
    "member": {"name": "member", "in": "path", "required": True,
               "description": "A node id, 1..2^63-1", "schema": {"type": "integer", "minimum": 1}},
    "consistent": {"name": "consistent", "in": "query", "required": False,
                   "description": "true: the leader answers, after every earlier entry is applied",
                   "schema": {"enum": ["true", "false"]}},
    "index": {"name": "index", "in": "query", "required": False,
              "description": "A blocking read: hold the answer until what it shows changes "
                             "after this X-Flowd-Index, or `wait` ends",
              "schema": {"type": "string", "pattern": "^[0-9]+$"}},
    "wait": {"name": "wait", "in": "query", "required": False,
             "description": "With index: how long to hold at most (30s, 500ms, 5m; "
                            "default 60s, at most 10m)",
             "schema": {"type": "string", "pattern": "^[0-9]+(ms|s|m)?$"}},
    "if_none_match": {"name": "If-None-Match", "in": "header", "required": False,
                      "description": "An ETag of an earlier answer: 304 while unchanged",
                      "schema": STR},
}

def q(name, desc, schema=STR):
    return {"name": name, "in": "query", "required": False, "description": desc, "schema": schema}

def err(desc):
    return {"description": desc, "content": {"application/json": {"schema": ref("Error")}}}

READ_HEADERS = {
    "ETag": {"description": "A hash of the body; send it in If-None-Match", "schema": STR},
    "X-Flowd-Index": {"description": "The Raft index of the last change of what the answer "
                                     "shows (pass it as ?index= to block until the next)",
                      "schema": STR},
}

def ok(desc, schema, status="200", headers=None, ctype="application/json"):
    r = {"description": desc, "content": {ctype: {"schema": schema}}}
    if headers:
        r["headers"] = headers
    return {status: r}

# present only while PostgreSQL refuses an entry's rows
schemas["Cluster"]["required"].remove("db_write_failing")

paths = {}

def op(method, path, opid, summary, role, responses, params=(), body=None, view=False,
       consistent=False, conflict=None, extra_errors=(), internal=False, tag="flows"):
    o = {"operationId": opid, "summary": summary, "tags": [tag]}
    plist = [P[p] if isinstance(p, str) else p for p in params]
    resp = dict(responses)
    if method == "get" and view:
        plist += [P["index"], P["wait"]]
    if method == "get":
        plist.append(P["if_none_match"])
        resp["304"] = {"description": "Not modified: the If-None-Match tag still holds",
                       "headers": READ_HEADERS}
        for code, r in resp.items():
            if code == "200" and view:
                r.setdefault("headers", {}).update(READ_HEADERS)
            elif code == "200":
                r.setdefault("headers", {})["ETag"] = READ_HEADERS["ETag"]
    if consistent:
        plist.append(P["consistent"])
    if plist:
        o["parameters"] = plist
    if body is not None:
        schema, required = body
        o["requestBody"] = {"required": required,
                            "content": {"application/json": {"schema": schema}}}
    if role == "public":
        o["security"] = []
    else:
        o["description"] = {"admin": "Needs an admin token.",
                            "operator": "Needs an operator or admin token.",
                            "reader": "Needs a reader, operator or admin token.",
                            "node": "Needs a node credential (a request signed with "
                                    "cluster.secret: X-Flowd-Node, X-Flowd-Node-Auth); "
                                    "every user token is refused with 403."}[role]
        o["x-flowd-role"] = role
    if internal:
        o["description"] += " Between nodes only: not for clients."
        o["x-internal"] = True
    if role != "public":
        resp["401"] = err("No token, or an unknown one (`unauthorized`)")
        resp["403"] = err("A token whose role is below the route's (`forbidden`)")
    if params or body is not None or method != "get":
        resp["400"] = err("A bad path parameter, query parameter or body, named in `field`")
    if any(p in ("id", "step") for p in params if isinstance(p, str)) or \
            ("flow" in params and method != "put"):
        resp["404"] = err("No such flow, run, step or attempt (`not_found`)")
    if body is not None:
        resp["413"] = err("A body over limits.max_body_bytes (`too_large`)")
        resp["415"] = err("A body that is not application/json")
    if conflict:
        resp["409"] = err(conflict)
    resp["405"] = err("A method the path does not have (Allow lists those it has)")
    if view or method != "get" or role in ("admin", "operator"):
        resp["503"] = err("No leader, shutting down, PostgreSQL unreachable for history, or "
                          "its backlog over database.max_backlog (Retry-After)")
    if method != "get":
        resp["504"] = err("Not committed within raft.apply_timeout_ms: retry with the same "
                          "idempotency key")
    for code, d in extra_errors:
        resp[code] = err(d)
    o["responses"] = dict(sorted(resp.items()))
    paths.setdefault(path, {})[method] = o

run_list_q = [q("flow", "Only runs of this flow (in any project and branch unless named)"),
              q("project", "Only runs of flows of this project"),
              q("branch", "Only runs of flows of this branch"),
              q("status", "Only runs in this status",
                {"enum": ["queued", "running", "succeeded", "failed", "cancelled"]}),
              q("limit", "Runs per page, 1..limits.max_runs_page (default 50)",
                {"type": "string", "pattern": "^[0-9]+$"}),
              q("cursor", "next_cursor of the previous page", {"type": "string", "pattern": "^[0-9]+$"}),
              {"name": "tag", "in": "query", "required": False, "explode": True,
               "description": "Only runs carrying this tag, user or system (repeatable: "
                              "all of them)",
               "schema": {"type": "array", "items": STR}}]

op("get", "/healthz", "healthz", "The process answers", "public",
   ok("Alive", ref("Health")), tag="node")
op("get", "/readyz", "readyz", "The node is ready: a leader is known, the log applied, "
   "the node registered", "public", {**ok("Ready", ref("Ready")),
                                     "503": {"description": "Not ready, with the reason",
                                             "content": {"application/json": {"schema": ref("Ready")}}}},
   view=False, tag="node")
op("get", "/metrics", "metrics", "Prometheus metrics (docs/operations.md)", "reader",
   ok("The text exposition format 0.0.4", STR, ctype="text/plain"), tag="node")
op("get", "/v1/openapi.json", "openapi", "This document", "public",
   ok("OpenAPI 3.1", {"type": "object"}), tag="node")
op("get", "/", "web_index", "The web dashboard (docs/operations.md, \"Dashboard\")", "public",
   ok("The dashboard's page", STR, ctype="text/html"), tag="node")
op("get", "/ui/app.js", "web_js", "The web dashboard's script", "public",
   ok("JavaScript", STR, ctype="text/javascript"), tag="node")
op("get", "/ui/app.css", "web_css", "The web dashboard's style sheet", "public",
   ok("CSS", STR, ctype="text/css"), tag="node")
op("get", "/v1/cluster", "cluster", "This node's view of the cluster", "reader",
   ok("The cluster", ref("Cluster")), view=True, tag="cluster")
op("post", "/v1/cluster/members", "member_add", "Add a node as a voter", "admin",
   ok("The members once the node is a voter", ref("Members")),
   body=(ref("MemberAdd"), True), conflict="Another membership change runs "
   "(`membership_change_in_progress`), or the id or an address is taken", tag="cluster")
op("delete", "/v1/cluster/members/{member}", "member_remove", "Remove a node", "admin",
   ok("The members left", ref("Members")), params=["member"],
   conflict="Another membership change runs (`membership_change_in_progress`)",
   extra_errors=[("404", "No such member")], tag="cluster")
op("post", "/v1/cluster/leader/transfer", "leader_transfer", "Hand leadership to another node",
   "admin", ok("The new leader", ref("LeaderTransfer")),
   body=(ref("LeaderTransferRequest"), False),
   conflict="Another membership change runs (`membership_change_in_progress`)", tag="cluster")
op("get", "/v1/flows", "flow_list", "Deployed flows, by name", "reader",
   ok("The flows (without spec)", ref("FlowList")), view=True, consistent=True)
op("get", "/v1/flows/{flow}", "flow_get", "A flow with its current spec", "reader",
   ok("The flow", ref("Flow")), params=["flow"], view=True, consistent=True)
op("put", "/v1/flows/{flow}", "flow_put", "Deploy a flow (a new version when the spec "
   "changed)", "admin", {**ok("The spec equals the current version", ref("FlowPut")),
                         **ok("A new version", ref("FlowPut"), status="201")},
   params=["flow"], body=(ref("FlowSpec"), True))
op("delete", "/v1/flows/{flow}", "flow_delete", "Undeploy a flow (history is kept)", "admin",
   ok("The flow, deployed false", ref("Flow")), params=["flow"])
op("get", "/v1/flows/{flow}/versions", "flow_versions", "Every version of a flow, oldest "
   "first", "reader", ok("The versions", ref("FlowVersions")), params=["flow"], view=True,
   consistent=True)
op("get", "/v1/flows/{flow}/schedule", "schedule_get", "A flow's schedules: counters, last "
   "decisions, next fire times", "reader", ok("The schedules", ref("Schedule")),
   params=["flow"], view=True, consistent=True, tag="triggers")
op("post", "/v1/flows/{flow}/pause", "flow_pause", "Pause a flow's schedules", "operator",
   ok("Paused", ref("Paused")), params=["flow"], tag="triggers")
op("post", "/v1/flows/{flow}/unpause", "flow_unpause", "Unpause a flow's schedules", "operator",
   ok("Unpaused", ref("Paused")), params=["flow"], tag="triggers")
op("post", "/v1/flows/{flow}/backfill", "backfill", "One run per tick in a past range",
   "operator", ok("The runs, made once per tick", ref("Backfill")), params=["flow"],
   body=(ref("BackfillRequest"), True), conflict="The flow is not deployed", tag="triggers")
# The same routes for a flow of a project's branch (docs/lifecycle.md).
BR = "/v1/projects/{project}/branches/{branch}/flows/{flow}"
BP = ["project", "branch", "flow"]
op("get", BR, "branch_flow_get", "A flow of a branch with its current spec", "reader",
   ok("The flow", ref("Flow")), params=BP, view=True, consistent=True)
op("put", BR, "branch_flow_put", "Deploy a flow to a branch (a prod branch needs a "
   "production token)", "admin", {**ok("The spec equals the current version", ref("FlowPut")),
                                  **ok("A new version", ref("FlowPut"), status="201")},
   params=BP, body=(ref("FlowSpec"), True))
op("delete", BR, "branch_flow_delete", "Undeploy a flow from a branch (a prod branch needs a "
   "production token)", "admin", ok("The flow, deployed false", ref("Flow")), params=BP)
op("get", BR + "/versions", "branch_flow_versions", "Every version of a branch's flow",
   "reader", ok("The versions", ref("FlowVersions")), params=BP, view=True, consistent=True)
op("get", BR + "/schedule", "branch_schedule_get", "A branch's flow's schedules", "reader",
   ok("The schedules", ref("Schedule")), params=BP, view=True, consistent=True, tag="triggers")
op("post", BR + "/pause", "branch_flow_pause", "Pause a branch's flow's schedules",
   "operator", ok("Paused", ref("Paused")), params=BP, tag="triggers")
op("post", BR + "/unpause", "branch_flow_unpause", "Unpause a branch's flow's schedules",
   "operator", ok("Unpaused", ref("Paused")), params=BP, tag="triggers")
op("post", BR + "/backfill", "branch_backfill", "Backfill a branch's flow", "operator",
   ok("The runs, made once per tick", ref("Backfill")), params=BP,
   body=(ref("BackfillRequest"), True), conflict="The flow is not deployed", tag="triggers")
op("post", BR + "/runs", "branch_run_create", "Start a run of a branch's flow", "operator",
   {**ok("A known idempotency key: the run it made", ref("Run")),
    **ok("The run", ref("Run"), status="201")}, params=BP,
   body=(ref("RunCreate"), False), conflict="The flow is not deployed", tag="runs")
op("get", BR + "/runs", "branch_run_list", "Runs of a branch's flow, newest first", "reader",
   ok("A page", ref("RunPage")), params=BP + run_list_q[3:], view=True, consistent=True,
   tag="runs")
op("post", BR + "/records", "run_record", "Record a run that ran elsewhere (flowctl resume "
   "--local --record)", "operator",
   {**ok("A known idempotency key: the run it made", ref("Run")),
    **ok("The recorded run", ref("Run"), status="201")}, params=BP,
   body=(ref("RunRecord"), True), tag="runs")
op("get", "/v1/projects/{project}/flows/{flow}/compare", "compare", "A/B: runs of a flow "
   "in several branches paired by schedule tick or event id", "reader",
   ok("The pairs, newest first", ref("Compare")),
   params=["project", "flow",
           {"name": "branches", "in": "query", "required": True,
            "description": "2 to 8 branches, comma-separated (prod,test.x)", "schema": STR},
           q("limit", "Pairs, 1..100 (default 20)", {"type": "string", "pattern": "^[0-9]+$"})],
   view=True, tag="runs")
op("get", "/v1/events", "event_list", "Events posted, newest first, with the runs each "
   "started (from PostgreSQL)", "reader", ok("A page of events", ref("EventList")),
   params=[q("name", "Only events of this name"),
           q("limit", "Events per page, 1..limits.max_runs_page (default 50)",
             {"type": "string", "pattern": "^[0-9]+$"}),
           q("cursor", "next_cursor of the previous page",
             {"type": "string", "pattern": "^[0-9]+:.+$"})],
   extra_errors=[("503", "PostgreSQL unreachable (Retry-After)")], tag="triggers")
op("post", "/v1/events", "event_post", "Post an event", "operator",
   {**ok("A duplicate id: the first answer", ref("EventAnswer")),
    **ok("The runs the event started", ref("EventAnswer"), status="201")},
   body=(ref("Event"), True), tag="triggers")
op("get", "/v1/cron/preview", "cron_preview", "The next fire times of a cron expression",
   "reader", ok("The times", ref("CronPreview")),
   params=[q("expr", "A cron expression (5 or 6 fields, macros, @every)"),
           q("tz", "An IANA time zone (default UTC)"), q("from", "RFC 3339 (default now)"),
           q("count", "1..100 (default 10)", {"type": "string", "pattern": "^[0-9]+$"}),
           q("dst_missing", "shift or skip"), q("dst_repeated", "once or twice")],
   tag="triggers")
op("post", "/v1/flows/{flow}/runs", "run_create", "Start a run", "operator",
   {**ok("A known idempotency key: the run it made", ref("Run")),
    **ok("The run", ref("Run"), status="201")}, params=["flow"],
   body=(ref("RunCreate"), False), conflict="The flow is not deployed", tag="runs")
op("get", "/v1/runs", "run_list", "Runs, newest first", "reader",
   ok("A page", ref("RunPage")), params=run_list_q, view=True, consistent=True, tag="runs")
op("get", "/v1/runs/{id}", "run_get", "A run with its steps and attempts", "reader",
   ok("The run", ref("Run")), params=["id"], view=True, consistent=True, tag="runs")
op("post", "/v1/runs/{id}/cancel", "run_cancel", "Cancel a run", "operator",
   ok("The run, cancelled", ref("Run")), params=["id"], conflict="The run had finished "
   "(`run_finished`)", tag="runs")
op("post", "/v1/runs/{id}/tags", "run_tags", "Add and remove a run's user tags",
   "operator", ok("The run", ref("Run")), params=["id"], body=(ref("RunTags"), True),
   conflict="The run left memory (`run_not_in_memory`)", tag="runs")
op("post", "/v1/runs/{id}/resume", "run_resume", "A new run that reuses the steps that "
   "succeeded", "operator",
   {**ok("A known idempotency key: the run it made", ref("Run")),
    **ok("The new run", ref("Run"), status="201")}, params=["id"],
   body=(ref("RunResume"), False),
   conflict="The run has not finished (`run_active`), left memory (`run_not_in_memory`), "
   "has nothing to run again (`nothing_to_resume`), a reused step changed in the current "
   "version (`step_changed`), or the flow is undeployed", tag="runs")
op("post", "/v1/runs/{id}/redrive", "run_redrive", "Restart a failed or cancelled run in "
   "place", "operator", ok("The run, running again", ref("Run")), params=["id"],
   body=(ref("RunRedrive"), False),
   conflict="The run has not finished (`run_active`), succeeded (`run_succeeded`), is still "
   "stopping (`run_stopping`), ended before limits.redrive_window_s (`redrive_window_passed`) "
   "or left memory (`run_not_in_memory`)", tag="runs")
LOGS_OK = ok("The output; with ?follow=true an event stream: `event: output` "
             "{\"stream\",\"text\"} as the step produces it, then `event: end` "
             "{\"attempt\",\"status\",...} (or `event: error` when the node running it "
             "could not be reached)", ref("Logs"))
LOGS_OK["200"]["content"]["text/event-stream"] = {"schema": STR}
op("get", "/v1/runs/{id}/steps/{step}/logs", "logs", "A step attempt's output", "reader",
   LOGS_OK, params=["id", "step",
   q("attempt", "The attempt (default the last)", {"type": "string", "pattern": "^[0-9]+$"}),
   q("follow", "true: stream the output as it is produced, from whichever node runs the "
     "attempt, until it ends", {"enum": ["true", "false"]})],
   extra_errors=[("503", "PostgreSQL does not hold the log yet (`not_stored_yet`) or is "
                         "unreachable (Retry-After)")], tag="runs")
op("get", "/v1/watch", "watch", "Run and step state changes and schedule fires, as they are "
   "applied (Server-Sent Events; docs/api.md, \"Streams\")", "reader",
   ok("An event stream: `event: run`, `step`, `flow`, `fire` or `reset` (list again), each with an "
      "`id: <index>-<n>` to resume from with Last-Event-ID; `: keep-alive` comments while "
      "quiet", STR, ctype="text/event-stream"),
   params=[q("flow", "Only events of this flow"), q("run", "Only events of this run"),
           q("index", "Start after this Raft index (the X-Flowd-Index of a list just read); "
             "default: from now", {"type": "string", "pattern": "^[0-9]+$"}),
           {"name": "Last-Event-ID", "in": "header", "required": False,
            "description": "Resume after this event id (wins over ?index); past the window: "
                           "a `reset` event first", "schema": {"type": "string",
                                                              "pattern": "^[0-9]+-[0-9]+$"}}],
   extra_errors=[("503", "api.max_streams streams are open (`too_many_streams`)")],
   tag="runs")
op("post", "/internal/v1/commands", "internal_command", "A node's own command, proposed "
   "through the leader", "node", ok("Applied", {"type": "object"}),
   body=({"type": "object"}, True), internal=True, tag="node")

doc = {
    "openapi": "3.1.0",
    "info": {"title": "flowd REST API", "version": "1",
             "description": "Any node answers (a follower forwards writes to the leader). "
                            "Errors are JSON bodies naming the field at fault "
                            "(docs/api.md)."},
    "servers": [{"url": "http://127.0.0.1:8001", "description": "a node's node.api_address"}],
    "security": [{"bearer": []}],
    "tags": [{"name": t} for t in ("node", "cluster", "flows", "triggers", "runs")],
    "paths": paths,
    "components": {"schemas": schemas,
                   "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                  "description": "auth.admin_tokens, "
                                                                 "auth.operator_tokens or "
                                                                 "auth.reader_tokens"}}},
}
def render():
    return json.dumps(doc, indent=1) + "\n"


if __name__ == "__main__":
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "openapi.json")
    if sys.argv[1:] == ["--check"]:
        with open(out) as f:
            sys.exit(0 if f.read() == render() else 1)
    with open(out, "w") as f:
        f.write(render())
