"""test_dashboard.py - the web dashboard flowd serves at GET / (web/), in a
real browser: Debian's headless chromium, driven through chromedriver by
python3-selenium, against a real three-node cluster.

What it shows: every page loads with no JavaScript error (and lands as a
screenshot under build/screenshots/ for a person to look at); the runs page
shows a run turn `succeeded` without a reload; a failed step's logs show on
its run page; a reader sees no write control; pausing a schedule and
backfilling from the flow page show in the API; the start-a-run form sends
parameters of the types the flow declares; resume and redrive from a failed
run's page, with the links between a run and its resumes.

The browser page is a client of the node's REST API like any other: every
check of an effect asks the API (as admin) too. Waiting is polling with a
deadline (WebDriverWait, wait_for), never a bare sleep.
"""

import os
import shutil
import urllib.parse

import pytest

import flowd_harness as h
from conftest import close_cluster, new_cluster
from flowd_harness import ADMIN_TOKEN, READER_TOKEN, flow_spec, param, sh_quote, step, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
try:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:  # pragma: no cover - depends on the machine
    webdriver = None

if webdriver is None or CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip("the dashboard tests need Debian's chromium, chromium-driver and python3-selenium "
                "(apt-get install chromium chromium-driver python3-selenium); missing: %s"
                % ", ".join(n for n, v in (("python3-selenium", webdriver), ("chromium", CHROMIUM),
                                           ("chromedriver", CHROMEDRIVER)) if v is None),
                allow_module_level=True)

SCREENSHOTS = os.path.join(h.REPO, "build", "screenshots")
WAIT = 20  # seconds (scaled) for anything the page shows


# ---------------------------------------------------------------------------
# The cluster: three nodes, a few flows, shared by the module's tests


def gated_flow(gate_dir):
    """One step that says it waits, waits until a file named after its run
    appears in gate_dir, and says it passed."""
    return flow_spec([step("wait", 'echo waiting for the gate; while [ ! -e %s/"$FLOWD_RUN_ID" ]; do sleep 0.05; done; '
                           'echo passed' % sh_quote(gate_dir), timeout_s=120)])


def broken_flow():
    """A step that says something on both streams and exits 3; a step after it."""
    return flow_spec([step("boom", "echo about to fail; echo 'boom: disk full' >&2; exit 3"),
                      step("after", "echo never", depends_on=["boom"])])


def nightly_flow(description):
    """Typed parameters, a diamond of steps and a yearly schedule (which does
    not fire while the tests run)."""
    spec = flow_spec(
        [step("extract", 'echo "region=$FLOWD_PARAM_REGION count=$FLOWD_PARAM_COUNT"'),
         step("left", "echo left", depends_on=["extract"]),
         step("right", "echo right >&2", depends_on=["extract"]),
         step("load", "echo load", depends_on=["left", "right"])],
        parameters={"region": param("string", required=True), "count": param("int", default=3),
                    "ratio": param("float"), "dry": param("bool", default=False), "extra": param("json")},
        description=description)
    spec["triggers"] = {"schedules": [{"cron": "0 0 1 1 *"}],
                        "events": [{"event": "data_ready", "parameters": {"region": "payload.region"}}]}
    return spec


def ticking_flow():
    spec = flow_spec([step("tick", "true")])
    spec["triggers"] = {"schedules": [{"cron": "0 0 1 1 *", "timezone": "Europe/Berlin"}]}
    return spec


class Dash:
    """The module's cluster: `node` serves the pages the browser opens (a
    follower, to show any node does), `gates` is gated_flow's directory."""

    def __init__(self, cluster, gates):
        self.cluster = cluster
        self.gates = gates
        leader = cluster.leader()
        self.node = next(n for n in cluster.nodes if n is not leader)
        self.url = "http://127.0.0.1:%d/" % self.node.api_port

    def open_gate(self, run_id):
        with open(os.path.join(self.gates, run_id), "w"):
            pass

    def schedule(self, flow):
        status, body = self.node.get("/v1/flows/%s/schedule" % flow)
        assert status == 200, (status, body)
        return body


@pytest.fixture(scope="module")
def dash(pg):
    db = pg.create_database("t_dashboard")
    root = h.fresh_dir(os.path.join(h.IT_ROOT, "test_dashboard"))
    gates = h.fresh_dir(os.path.join(root, "gates"))
    c = new_cluster(os.path.join(root, "cluster"), db, n=3)
    try:
        node = c[0]
        node.deploy("nightly", nightly_flow("nightly ETL"))
        node.deploy("nightly", nightly_flow("nightly ETL, version two <b>not bold</b>"))
        node.deploy("gated", gated_flow(gates))
        node.deploy("broken", broken_flow())
        node.deploy("ticking", ticking_flow())
        yield Dash(c, gates)
    finally:
        close_cluster(c)


# ---------------------------------------------------------------------------
# The browser


class Browser:
    """A headless chromium with its own profile; helpers to sign in, open a
    page by its hash, wait for elements by data-testid, and collect the
    console's JavaScript errors."""

    def __init__(self, dash, profile_dir):
        self.dash = dash
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--no-first-run", "--window-size=1400,1000", "--user-data-dir=" + profile_dir):
            opts.add_argument(arg)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        self.console = []

    def quit(self):
        self.driver.quit()

    # -- waiting and finding
    def wait(self, predicate, what, timeout=WAIT):
        try:
            return WebDriverWait(self.driver, h.scaled(timeout), poll_frequency=0.05).until(
                lambda d: predicate())
        except Exception as e:
            raise AssertionError("timed out waiting for %s on %s: %s\nJS errors: %s"
                                 % (what, self.driver.current_url, e, self.js_errors())) from None

    def find(self, css):
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def testid(self, name, extra=""):
        return self.find('[data-testid="%s"]%s' % (name, extra))

    def wait_testid(self, name, extra="", what=None):
        return self.wait(lambda: self.testid(name, extra), what or "[data-testid=%s]%s" % (name, extra))[0]

    def click(self, name, extra=""):
        """Click [data-testid=name] once it is there; live pages re-render,
        so an element that went stale is looked up again."""
        def clicked():
            try:
                found = self.testid(name, extra)
                if found and found[0].is_displayed() and found[0].is_enabled():
                    found[0].click()
                    return True
            except StaleElementReferenceException:
                pass
            return False
        self.wait(clicked, "a click on [data-testid=%s]%s" % (name, extra))

    def attr(self, name, attribute, extra=""):
        """An attribute of [data-testid=name], read in one step (no stale element)."""
        return self.driver.execute_script(
            "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null;",
            '[data-testid="%s"]%s' % (name, extra), attribute)

    def text_of(self, name, extra=""):
        try:
            found = self.testid(name, extra)
            return found[0].text if found else None
        except StaleElementReferenceException:
            return None

    # -- pages
    def sign_in(self, token):
        self.driver.get(self.dash.url)
        box = self.wait_testid("token-input")
        box.clear()
        box.send_keys(token)
        self.testid("token-submit")[0].click()
        self.wait_testid("nav-runs", what="the signed-in page")
        self.wait_loaded()

    def open(self, hash_path):
        """Open a page by its hash route and wait until it has loaded."""
        self.driver.execute_script("location.hash = arguments[0]", hash_path)
        return self.wait_loaded(hash_path)

    def wait_loaded(self, hash_path=None):
        """Until the page (the one for hash_path, when given: the page
        before it may still be there for a moment) has loaded."""
        state = self.wait(lambda: self.driver.execute_script(
            "const p = document.querySelector('.page');"
            "if (!p || (arguments[0] !== null && p.dataset.route !== arguments[0])) return null;"
            "return p.dataset.loaded === 'false' ? null : p.dataset.loaded;", hash_path),
            "the page %s to load" % (hash_path or ""))
        assert state == "true", self.find(".page")[0].text
        return self.find(".page")[0]

    def wait_live(self):
        """Until the page follows changes (the watch stream, or blocking reads
        on a node without one)."""
        return self.wait(lambda: self.text_of("live-status") in ("live", "polling"), "live updates")

    def screenshot(self, name):
        """The whole page, as build/screenshots/<name>.png."""
        os.makedirs(SCREENSHOTS, exist_ok=True)
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        self.driver.set_window_size(1400, max(1000, min(int(height) + 40, 6000)))
        try:
            assert self.driver.save_screenshot(os.path.join(SCREENSHOTS, name + ".png"))
        finally:
            self.driver.set_window_size(1400, 1000)

    # -- console
    def js_errors(self):
        """SEVERE console entries that are not about an HTTP status: the
        page's own requests answer 4xx by design (the role probe, 503
        not_stored_yet), which chromium logs as network errors."""
        try:
            self.console.extend(self.driver.get_log("browser"))
        except WebDriverException:
            pass
        return [e for e in self.console if e.get("level") == "SEVERE" and e.get("source") != "network"]

    def assert_no_js_errors(self):
        errors = self.js_errors()
        assert not errors, "JavaScript errors in the console:\n" + "\n".join(e["message"] for e in errors)


@pytest.fixture
def browser(dash, request):
    profile = h.fresh_dir(os.path.join(h.IT_ROOT, "test_dashboard", "chrome", h.safe_name(request.node.name)))
    b = Browser(dash, profile)
    try:
        yield b
    finally:
        b.quit()


def row_status(browser, run_id):
    """The status the runs table shows for run_id (None while it has no row)."""
    return browser.driver.execute_script(
        "const b = document.querySelector("
        "'[data-testid=\"run-row\"][data-run-id=\"' + arguments[0] + '\"] [data-testid=\"run-status\"]');"
        "return b ? b.textContent : null;", run_id)


# ---------------------------------------------------------------------------
# Tests


def test_every_page_loads_without_js_errors_and_is_screenshotted(dash, browser):
    node = dash.node
    ok = node.start_run("nightly", {"region": "eu", "count": 2, "ratio": 0.25})
    ok = node.wait_run(ok["id"])
    assert ok["status"] == "succeeded", ok
    status, event = node.post("/v1/events", {"name": "data_ready", "id": "ev-dash-0001",
                                             "payload": {"region": "us"}})
    assert status == 201, event
    event_run = event["runs"][0]["run_id"]
    node.wait_run(event_run)

    # a wrong token is refused at the sign-in form; the right one is kept
    browser.driver.get(dash.url)
    browser.wait_testid("token-input").send_keys("not-a-token")
    browser.click("token-submit")
    browser.wait(lambda: "refused" in (browser.text_of("login-error") or ""), "the sign-in error")
    browser.sign_in(ADMIN_TOKEN)
    assert browser.text_of("role") == "admin"
    assert browser.driver.execute_script("return sessionStorage.getItem('flowd.token')") == ADMIN_TOKEN

    browser.open("#/runs")
    browser.wait(lambda: row_status(browser, ok["id"]) == "succeeded", "the run in the list")
    browser.screenshot("runs")

    browser.open("#/runs/" + ok["id"])
    browser.wait(lambda: len(browser.testid("dag-step")) == 4, "the DAG's four steps")
    assert {e.get_attribute("data-status") for e in browser.testid("dag-step")} == {"succeeded"}
    assert len(browser.testid("gantt-attempt")) == 4
    # the last step's logs show; a click on a step of the DAG shows its own
    browser.wait(lambda: browser.text_of("log-stdout") == "load", "the last step's logs")
    browser.click("dag-step", '[data-step="extract"]')
    browser.wait(lambda: browser.text_of("log-stdout") == "region=eu count=2", "the first step's logs")
    params = browser.text_of("parameters")
    assert "region" in params and '"eu"' in params and "0.25" in params, params
    browser.screenshot("run")

    browser.open("#/flows")
    browser.wait(lambda: len(browser.testid("flow-row")) == 4, "four flows")
    browser.screenshot("flows")

    browser.open("#/flows/nightly")
    browser.wait_testid("schedule")
    # text from the API is text, never markup
    assert "version two <b>not bold</b>" in browser.find(".meta")[0].text
    assert browser.find(".meta b") == []
    browser.wait_testid("diff-add", what="the diff of v1 and v2")
    assert "version two" in browser.testid("diff-add")[0].text
    assert browser.testid("next-fires")[0].text.count("\n") >= 4
    browser.screenshot("flow")

    browser.open("#/events")
    row = browser.wait_testid("event-row", '[data-event-id="ev-dash-0001"]')
    assert event_run in row.find_element(By.CSS_SELECTOR, '[data-testid="event-runs"]').text
    browser.screenshot("events")

    browser.open("#/cluster")
    browser.wait(lambda: len(browser.testid("member-row")) == 3, "three members")
    browser.wait(lambda: len(browser.testid("member-live", ':not(.s-down)')) == 3, "three live members")
    assert browser.text_of("cluster-role") == "follower"
    assert browser.testid("stat-leader")[0].text.startswith("Leader\nnode ")
    browser.screenshot("cluster")

    # the run's trigger links to the event page, which highlights it
    browser.open("#/runs/" + event_run)
    browser.click("trigger-event-id")
    browser.wait_loaded("#/events?id=ev-dash-0001")
    browser.wait(lambda: len(browser.testid("event-row")) == 1, "just that event")

    browser.assert_no_js_errors()


def test_runs_page_shows_a_run_turn_succeeded_without_reload(dash, browser):
    browser.sign_in(READER_TOKEN)
    browser.open("#/runs?flow=gated")
    browser.wait_live()
    browser.driver.execute_script("window.__sameDocument = true")

    run = dash.node.start_run("gated")
    browser.wait(lambda: row_status(browser, run["id"]) in ("queued", "running"), "the new run to show")
    running = browser.testid("count-running")[0].text
    dash.open_gate(run["id"])
    browser.wait(lambda: row_status(browser, run["id"]) == "succeeded", "the run to turn succeeded")
    assert dash.node.run(run["id"])["status"] == "succeeded"
    assert browser.driver.execute_script("return window.__sameDocument === true"), "the page reloaded"
    browser.wait(lambda: browser.testid("count-running")[0].text != running, "the running count to move")
    browser.assert_no_js_errors()


def test_a_failed_steps_logs_show_on_the_run_page(dash, browser):
    run = dash.node.start_run("broken")
    run = dash.node.wait_run(run["id"])
    assert run["status"] == "failed", run

    browser.sign_in(READER_TOKEN)
    browser.open("#/runs/" + run["id"])
    assert browser.text_of("run-status") == "failed"
    # PostgreSQL stores the log a moment after the run ends: the page retries
    browser.wait(lambda: "boom: disk full" in (browser.text_of("log-stderr") or ""), "the failed step's stderr")
    assert "about to fail" in browser.text_of("log-stdout")
    assert browser.attr("logs", "data-step") == "boom"
    assert "step boom failed" in browser.text_of("run-reason")
    statuses = {e.get_attribute("data-step"): e.get_attribute("data-status") for e in browser.testid("dag-step")}
    assert statuses == {"boom": "failed", "after": "skipped"}, statuses
    browser.screenshot("run-failed")
    browser.assert_no_js_errors()


def test_a_reader_sees_no_write_controls_and_an_admin_cancels(dash, browser):
    run = dash.node.start_run("gated")
    dash.node.wait_run(run["id"], statuses=("running",))

    browser.sign_in(READER_TOKEN)
    assert browser.text_of("role") == "reader"
    browser.open("#/runs/" + run["id"])
    assert browser.text_of("run-status") == "running"
    browser.wait_testid("dag-step")
    assert browser.testid("cancel-button") == []
    browser.open("#/flows/nightly")
    browser.wait_testid("schedule")
    for control in ("pause-button", "unpause-button", "start-run-form", "backfill-form"):
        assert browser.testid(control) == [], control

    # the same pages for an admin have them; cancel the run from its page
    browser.click("sign-out")
    browser.sign_in(ADMIN_TOKEN)
    browser.open("#/flows/nightly")
    browser.wait_testid("start-run-form")
    assert browser.testid("pause-button") and browser.testid("backfill-form")
    browser.open("#/runs/" + run["id"])
    browser.click("cancel-button")
    browser.click("cancel-confirm")
    browser.wait(lambda: browser.text_of("run-status") == "cancelled", "the run to show cancelled")
    assert dash.node.wait_run(run["id"])["status"] == "cancelled"
    browser.wait(lambda: not browser.testid("cancel-button")[0].is_displayed(), "the cancel button to go")
    browser.assert_no_js_errors()


def test_pausing_a_schedule_and_backfilling_from_the_page_show_in_the_api(dash, browser):
    assert dash.schedule("ticking")["paused"] is False
    browser.sign_in(ADMIN_TOKEN)
    browser.open("#/flows/ticking")
    assert browser.attr("flow-paused", "data-paused") == "false"

    browser.click("pause-button")
    wait_for(lambda: dash.schedule("ticking")["paused"] is True, 10, "GET .../schedule to say paused")
    browser.wait(lambda: browser.attr("flow-paused", "data-paused") == "true", "the paused badge")
    # every node answers the same
    for n in dash.cluster.nodes:
        wait_for(lambda: n.get("/v1/flows/ticking/schedule")[1]["paused"] is True, 10,
                 "node %d to say paused" % n.id)

    browser.click("unpause-button")
    wait_for(lambda: dash.schedule("ticking")["paused"] is False, 10, "GET .../schedule to say unpaused")
    browser.wait_testid("pause-button")

    # backfill: new year in Berlin is 23:00Z the day before, so 2022 and
    # 2023 are in the range and 2021 is not
    for name, value in (("backfill-from", "2021-01-01T00:00:00Z"), ("backfill-to", "2023-06-01T00:00:00Z")):
        box = browser.wait_testid(name)
        box.clear()
        box.send_keys(value)
    browser.click("backfill-submit")
    browser.wait(lambda: len(browser.testid("backfill-result", " li")) == 2, "the backfill's two runs")
    links = {e.text for e in browser.testid("backfill-result", " a")}
    assert len(links) == 2, links
    # the answer came from the leader; the follower lists them a moment later
    wait_for(lambda: links <= {r["id"] for r in dash.node.list_runs("flow=ticking")}, 10,
             "the backfilled runs in GET /v1/runs")
    for run_id in links:
        trigger = dash.node.run(run_id)["trigger"]
        assert trigger["type"] == "backfill" and trigger["nominal_time"][5:] == "12-31T23:00:00.000Z", trigger
    browser.assert_no_js_errors()


def test_the_start_run_form_sends_the_declared_parameter_types(dash, browser):
    browser.sign_in(ADMIN_TOKEN)
    browser.open("#/flows/nightly")
    form = browser.wait_testid("start-run-form")
    assert {e.get_attribute("data-type") for e in form.find_elements(By.CSS_SELECTOR, "[data-type]")} == \
        {"string", "int", "float", "bool", "json"}
    browser.testid("param-region")[0].send_keys("ap-south")
    count = browser.testid("param-count")[0]
    count.clear()
    count.send_keys("7")
    browser.testid("param-ratio")[0].send_keys("0.5")
    Select(browser.testid("param-dry")[0]).select_by_value("true")
    browser.testid("param-extra")[0].send_keys('{"tables": ["a", "b"]}')
    browser.click("start-run-submit")

    browser.wait(lambda: browser.driver.execute_script("return location.hash").startswith("#/runs/r"), "the new run's page")
    hash_path = browser.driver.execute_script("return location.hash")
    run = dash.node.wait_run(urllib.parse.unquote(hash_path[len("#/runs/"):]))
    assert run["parameters"] == {"region": "ap-south", "count": 7, "ratio": 0.5, "dry": True,
                                 "extra": {"tables": ["a", "b"]}}, run
    browser.wait_loaded(hash_path)
    browser.wait(lambda: browser.text_of("run-status") == "succeeded", "the run page to show it succeeded")

    # a required parameter left empty is caught before any request
    browser.open("#/flows/nightly")
    browser.click("start-run-submit")
    browser.wait(lambda: "region: is required" in (browser.text_of("start-run-error") or ""), "the form's error")
    browser.assert_no_js_errors()


def test_a_running_steps_output_shows_live_on_the_run_page(dash, browser):
    run = dash.node.start_run("gated")
    dash.node.wait_run(run["id"], statuses=("running",))
    browser.sign_in(READER_TOKEN)
    browser.open("#/runs/" + run["id"])
    # followed through GET .../logs?follow=true (not polled)
    browser.wait(lambda: browser.attr("logs", "data-state") == "following", "the log panel to follow")
    browser.wait(lambda: "waiting for the gate" in (browser.text_of("log-stdout") or ""), "the output so far")
    assert browser.text_of("run-status") == "running"
    dash.open_gate(run["id"])
    browser.wait(lambda: "passed" in (browser.text_of("log-stdout") or ""), "the output after the gate")
    browser.wait(lambda: browser.attr("logs", "data-state") == "stored", "the stored log once the attempt ended")
    browser.wait(lambda: browser.text_of("run-status") == "succeeded", "the run to show succeeded")
    assert browser.text_of("log-stdout") == "waiting for the gate\npassed"
    browser.assert_no_js_errors()


def test_resume_and_redrive_from_the_run_page_link_origin_and_resumes(dash, browser):
    fix = os.path.join(dash.gates, "fix-lifecycle")
    dash.node.deploy("fixable", flow_spec([
        step("first", "true"),
        step("second", "cat " + sh_quote(fix), depends_on=["first"])]))
    run = dash.node.wait_run(dash.node.start_run("fixable")["id"])
    assert run["status"] == "failed", run
    with open(fix, "w") as f:
        f.write("fixed\n")

    browser.sign_in(READER_TOKEN)
    browser.open("#/runs/" + run["id"])
    browser.wait_testid("lifecycle")
    assert browser.testid("resume-button") == [] and browser.testid("redrive-button") == []
    browser.click("sign-out")
    browser.sign_in(ADMIN_TOKEN)
    browser.open("#/runs/" + run["id"])
    tags = [e.text for e in browser.testid("system-tag")]
    assert "flow:fixable" in tags and "trigger:manual" in tags, tags

    # Resume: the page goes to the new run, which links back and reuses `first`.
    browser.click("resume-button")
    browser.wait(lambda: browser.text_of("origin-link") == run["id"], "the resumed run's page")
    new_id = browser.text_of("run-id")
    assert new_id != run["id"]
    browser.wait(lambda: browser.text_of("run-status") == "succeeded", "the resumed run to succeed")
    browser.wait(lambda: browser.attr("step-row", "data-status", '[data-step="first"]') == "reused",
                 "the reused step")
    assert browser.text_of("reused-from") == run["id"]
    resumed = dash.node.run(new_id)
    assert resumed["origin_run_id"] == run["id"]
    assert [s["status"] for s in resumed["steps"]] == ["reused", "succeeded"], resumed

    # The origin's page lists it; redrive the origin in place from there.
    browser.open("#/runs/" + run["id"])
    browser.wait(lambda: browser.text_of("resume-link") == new_id, "the origin's link to its resume")
    browser.click("redrive-button")
    browser.wait(lambda: browser.text_of("run-status") == "succeeded", "the redriven run to succeed")
    browser.wait(lambda: browser.text_of("redrive-count") == "1 time", "the redrive count")
    again = dash.node.run(run["id"])
    assert (again["status"], again["redrive_count"]) == ("succeeded", 1), again
    browser.screenshot("run-redriven")
    browser.assert_no_js_errors()


def test_a_flow_in_two_branches_shows_their_runs_side_by_side(dash, browser):
    ab = flow_spec([step("x", "true")])
    ab["triggers"] = {"schedules": [{"cron": "* * * * * *"}]}
    base = "/v1/projects/shop/branches/%s/flows/abflow"
    for branch in ("test.a", "test.b"):
        status, body = dash.node.put(base % branch, ab)
        assert status == 201, body
    try:
        def paired():
            status, body = dash.node.get(
                "/v1/projects/shop/flows/abflow/compare?branches=test.a,test.b")
            return body["pairs"] if status == 200 and body["pairs"] else None
        pairs = wait_for(paired, 30, "a pair of runs of one tick")

        browser.sign_in(READER_TOKEN)
        browser.open("#/flows/abflow?project=shop&branch=test.a")
        assert browser.text_of("flow-branch") == "shop/test.a"
        browser.wait_testid("compare-row", what="the compare table")
        shown = {e.text for e in browser.testid("compare-run")}
        assert pairs[-1]["runs"]["test.a"]["run_id"] in shown or \
            len(shown) >= 2, (shown, pairs)
        # a run of a branch links back to its flow's page in that branch
        run_id = pairs[0]["runs"]["test.b"]["run_id"]
        browser.open("#/runs/" + run_id)
        assert browser.attr("flow-link", "data-branch") == "test.b"
        browser.screenshot("flow-compare")
        browser.assert_no_js_errors()
    finally:
        for branch in ("test.a", "test.b"):
            dash.node.post((base % branch) + "/pause")
