"""The dashboard in a real headless Chromium (Debian's package), served by a real uvicorn.

The browser is driven over the Chrome DevTools Protocol with the ``websockets`` client
that uvicorn already installs: no browser download, no WebDriver. The test loads ``/``
from a server on a seeded database, waits until the plots are drawn, checks that every
chart has data marks and that the console stayed clean (no errors, no CSP refusals),
and saves a screenshot to ``$HYPERPRIOR_TEST_ARTIFACTS`` (default ``build/test-artifacts``).

Without Chromium the test fails and says how to install it; set
``HYPERPRIOR_TEST_BROWSER=skip`` to skip it instead.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dashboard_seed import REFINEMENTS, USER_FAMILY, SteppingClock, seed_history
from serving import serve
from waiting import wait_until
from websockets.sync.client import ClientConnection, connect

from hyperprior.db.engine import make_engine
from hyperprior.db.store import Store
from hyperprior.service.app import create_app
from hyperprior.service.settings import Settings
from hyperprior.training.spaces import get_space

ARTIFACTS = Path(os.environ.get("HYPERPRIOR_TEST_ARTIFACTS", "build/test-artifacts"))
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def _quiet_settings(url: str) -> Settings:
    """A server on ``url`` with no background work (retrains, jobs, polling) to race."""
    return Settings(
        database_url=url,
        retrain_in_process=False,
        jobs_in_process=False,
        surrogate_poll_s=3600,
        gc_tuning=False,
        access_log=False,
    )


def chromium_path() -> str:
    """The browser binary, or a clear failure (skip only when asked to)."""
    given = os.environ.get("HYPERPRIOR_TEST_CHROMIUM")
    found = given or next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)
    if found:
        return found
    if os.environ.get("HYPERPRIOR_TEST_BROWSER", "").lower() == "skip":
        pytest.skip("browser test disabled by HYPERPRIOR_TEST_BROWSER=skip")
    pytest.fail(
        "Chromium is not installed, so the dashboard cannot be tested in a browser. "
        "Install Debian's package (apt-get install -y chromium), point "
        "HYPERPRIOR_TEST_CHROMIUM at a Chromium binary, or set HYPERPRIOR_TEST_BROWSER=skip.",
        pytrace=False,
    )


class DevTools:
    """A minimal Chrome DevTools Protocol session on one page."""

    def __init__(self, websocket: ClientConnection) -> None:
        self.ws = websocket
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        """Send a command and wait for its answer, keeping the events that arrive."""
        self.next_id += 1
        call_id = self.next_id
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            self.events.append(message)

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a page expression."""
        answer = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in answer:
            raise RuntimeError(f"{expression}: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries seen so far."""
        out = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                out.append(f"exception: {params['exceptionDetails']}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") in (
                "error",
                "assert",
            ):
                out.append(f"console.{params['type']}: {params.get('args')}")
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                entry = params["entry"]
                out.append(
                    f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}"
                )
        return out


@dataclass(frozen=True)
class Served:
    """The seeded server and what the page should show of its history."""

    url: str
    runs: int
    families: int
    sources: int
    surrogates: int


@pytest.fixture
def seeded_server(tmp_path: Path) -> Iterator[Served]:
    """A real uvicorn (in a thread) serving the app on a seeded SQLite database."""
    from hyperprior.db import migrate

    url = f"sqlite:///{tmp_path / 'dashboard.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    clock = SteppingClock(dt.datetime.now(dt.UTC) - dt.timedelta(days=12))
    seed_history(Store(engine, clock=clock), clock)
    # What the page must show follows the shipped seed, so read it back, not hard-code it.
    stats = Store(engine).stats()
    n_surrogates = len(Store(engine).list_surrogates())
    settings = _quiet_settings(url)
    app = create_app(settings, store=Store(engine))
    with serve(app) as url:
        yield Served(
            url=url,
            runs=stats.runs,
            families=len(stats.by_family),
            sources=len(stats.by_source),
            surrogates=n_surrogates,
        )
    engine.dispose()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[DevTools]:
    """Headless Chromium with a fresh profile, on one blank page."""
    binary = chromium_path()
    profile = tmp_path / "chromium-profile"
    process = subprocess.Popen(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "--window-size=1400,1000",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        port_file = profile / "DevToolsActivePort"

        def port_open() -> bool:
            if process.poll() is not None:
                stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
                pytest.fail(f"Chromium exited with {process.returncode}: {stderr[-2000:]}")
            return port_file.exists() and bool(port_file.read_text().strip())

        wait_until(port_open, "Chromium to open its DevTools port")
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
            targets = json.load(answer)
        page = next(t for t in targets if t.get("type") == "page")
        with connect(page["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024) as websocket:
            tools = DevTools(websocket)
            for domain in ("Runtime", "Log", "Page"):
                tools.call(f"{domain}.enable")
            yield tools
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


_CHART_MARKS = """
(() => {
  // The page is still being parsed until every element read below exists.
  if (!document.body || !document.getElementById("status") || !document.getElementById("sum-runs"))
    return { ready: false };
  const count = (selector) => document.querySelectorAll(selector).length;
  const marks = (chart) => count(`svg[data-chart="${chart}"] .mark[data-value]`);
  return {
    ready: document.body.dataset.ready === "1",
    status: document.getElementById("status").textContent,
    runs: document.getElementById("sum-runs").textContent,
    timeline: marks("timeline"),
    datasets: marks("datasets"),
    mix: marks("mix"),
    surrogates: marks("surrogates"),
    importance: marks("importance"),
    pd_charts: count("#pd-charts svg"),
    pd_marks: count("#pd-charts svg .mark[data-value]"),
    table_rows: count("#surrogates-table tbody tr"),
    refinements: [...document.querySelectorAll("#refinements-table tbody tr")].map(
      (row) => [...row.cells].map((cell) => cell.textContent)),
  };
})()
"""

# Per chart: the text of every axis tick, and the fill of every legend swatch and mix bar.
_AXES_AND_COLOURS = """
(() => {
  const charts = {};
  for (const svg of document.querySelectorAll("svg[data-chart]")) {
    const texts = (sel) => [...svg.querySelectorAll(sel)].map((t) => t.textContent);
    charts[svg.dataset.chart] = {
      x: texts(".axis.x text"),
      y: texts(".axis.y text"),
      legend: Object.fromEntries([...svg.querySelectorAll(".legend text")].map(
        (t) => [t.textContent, t.previousElementSibling.getAttribute("fill")])),
      bars: [...svg.querySelectorAll(".mark")].map((m) => m.getAttribute("fill")),
    };
  }
  return charts;
})()
"""


def check_axes_and_colours(browser: DevTools, grouping: str) -> dict[str, Any]:
    """No axis repeats a tick label, and no two names of a legend share a colour."""
    charts: dict[str, Any] = browser.evaluate(_AXES_AND_COLOURS)
    for name, chart in charts.items():
        for axis in ("x", "y"):
            labels = [t for t in chart[axis] if t]
            assert len(labels) == len(set(labels)), f"{name} {axis} axis repeats: {labels}"
    legend = charts["timeline"]["legend"]
    assert len(set(legend.values())) == len(legend), f"{grouping}: colours shared: {legend}"
    return charts


def test_dashboard_renders_in_chromium(browser: DevTools, seeded_server: Served) -> None:
    browser.call("Page.navigate", url=seeded_server.url + "/")
    state: dict[str, Any] = {}

    def drawn(done: Callable[[dict[str, Any]], bool]) -> Callable[[], bool]:
        def check() -> bool:
            state.clear()
            state.update(browser.evaluate(_CHART_MARKS))
            return done(state)

        return check

    wait_until(drawn(lambda s: s.get("ready") and s["pd_charts"] > 0), "the page to load")
    assert state["status"].startswith("updated"), state
    assert seeded_server.sources == 4  # the seed's bootstrap runs and three other sources
    assert state["runs"] == f"{seeded_server.runs:,}"
    assert state["timeline"] > 10  # one bar segment per day and family
    assert state["datasets"] >= 5
    assert state["mix"] == seeded_server.families + seeded_server.sources
    # Three versions of each built-in family (the user's own family has no surrogate).
    assert seeded_server.surrogates == 3 * (seeded_server.families - 1)
    assert state["surrogates"] == seeded_server.surrogates
    assert state["table_rows"] == seeded_server.surrogates
    # The seed spans days: one bar a day, and the axes and colours tell them apart.
    assert browser.evaluate("document.getElementById('timeline-note').textContent").startswith(
        "One bar per day"
    )
    charts = check_axes_and_colours(browser, "by family")
    families = charts["timeline"]["legend"]
    assert USER_FAMILY in families  # a family only the history knows has a colour too
    assert families["lightgbm"] != families["random_forest"]
    mix = charts["mix"]["bars"]
    assert len(set(mix)) == len(mix), f"families and sources share colours: {mix}"
    # Every refinement job with its status and outcome, newest first.
    rows = state["refinements"]
    assert [row[3] for row in rows] == list(reversed(REFINEMENTS)), rows
    outcome = {row[3]: row[5] for row in rows}
    assert outcome["succeeded"] == "roc_auc 0.9934 vs default 0.9902 (+0.0032)"
    assert "SIGKILL" in outcome["failed"]
    assert outcome["running"] == "best so far 0.981"
    progress = {row[3]: row[4] for row in rows}
    assert progress["running"] == "halving · rung 1/3 · 4/13 trials · 13 s of 60 s"
    assert progress["queued"] == "waiting for a worker"

    # One importance bar and one partial-dependence chart per hyperparameter of the
    # family the page explains first.
    family = browser.evaluate("document.getElementById('pd-family').value")
    n_params = len(get_space(family).params)
    assert state["importance"] == n_params
    assert state["pd_charts"] == n_params
    assert state["pd_marks"] > n_params * 2

    # Switch the history to sources and explain another family: still drawn, still clean.
    browser.evaluate("document.querySelector('.toggle button[data-group=\"by_source\"]').click()")
    browser.evaluate(
        """(() => { const s = document.getElementById("pd-family"); s.value = "linear";
           document.getElementById("pd-task").value = "regression";
           document.getElementById("pd-form").requestSubmit(); })()"""
    )
    # linear regression: alpha and l1_ratio
    wait_until(drawn(lambda s: s["importance"] == 2), "linear's explanation")
    legend = browser.evaluate(
        "[...document.querySelectorAll('svg[data-chart=timeline] .legend text')]"
        ".map(t => t.textContent)"
    )
    assert set(legend) == {"bootstrap", "import", "user", "verification"}
    check_axes_and_colours(browser, "by source")

    # Back to the first view for the picture.
    browser.evaluate("document.querySelector('.toggle button[data-group=\"by_family\"]').click()")
    browser.evaluate(
        """(() => { document.getElementById("pd-family").value = "lightgbm";
           document.getElementById("pd-task").value = "binary";
           document.getElementById("pd-form").requestSubmit(); })()"""
    )
    lightgbm_params = len(get_space("lightgbm").params)
    wait_until(drawn(lambda s: s["importance"] == lightgbm_params), "lightgbm's explanation")
    browser.call("Runtime.evaluate", expression="1")  # collect pending events
    assert browser.problems() == []

    height = int(browser.evaluate("document.documentElement.scrollHeight"))
    browser.call(
        "Emulation.setDeviceMetricsOverride",
        width=1400,
        height=min(height, 6000),
        deviceScaleFactor=1,
        mobile=False,
    )
    shot = browser.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / "dashboard.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    assert path.stat().st_size > 20_000


@pytest.fixture
def docs_server(tmp_path: Path) -> Iterator[str]:
    """A real uvicorn serving the app on an empty, migrated SQLite database."""
    from hyperprior.db import migrate

    url = f"sqlite:///{tmp_path / 'docs.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    with serve(create_app(_quiet_settings(url), store=Store(engine))) as served:
        yield served
    engine.dispose()


# Resolves once the page has drawn at least one operation of KEY (checked at every
# frame, so the page's own rendering paces it; the DevTools call's timeout is the guard).
_DOCS_STATE = """
new Promise((resolve) => {
  const check = () => {
    const state = {
      swagger_operations: document.querySelectorAll("#swagger-ui .opblock").length,
      redoc_operations: document.querySelectorAll(
        "redoc [data-section-id^='operation/']").length,
      title: document.title,
    };
    if (state[KEY] > 0) resolve(state); else requestAnimationFrame(check);
  };
  check();
})
"""

# Resolves when every image of the page has loaded or failed: by then the refused
# request for ReDoc's logo, and the console message about it, have been reported.
_IMAGES_SETTLED = """
Promise.all([...document.images].map((img) => img.complete ? null
  : new Promise((resolve) => { img.onload = img.onerror = resolve; })))
"""


def _wait_for_docs(browser: DevTools, key: str) -> dict[str, Any]:
    expression = _DOCS_STATE.replace("KEY", json.dumps(key))
    answer = browser.call(
        "Runtime.evaluate",
        timeout=120,
        expression=expression,
        returnByValue=True,
        awaitPromise=True,
    )
    return dict(answer["result"].get("value") or {})


def test_api_docs_render_offline_from_local_assets(browser: DevTools, docs_server: str) -> None:
    """Swagger UI and ReDoc draw every operation with nothing fetched from elsewhere
    (this machine has no way out to a CDN either) and nothing refused by the policy."""
    browser.call("Network.enable")
    operations = sum(
        1
        for path in create_app(Settings(database_url="sqlite://")).openapi()["paths"].values()
        for _ in path
    )

    browser.call("Page.navigate", url=docs_server + "/docs")
    state = _wait_for_docs(browser, "swagger_operations")
    assert state["swagger_operations"] == operations, state
    assert "Swagger UI" in state["title"]

    browser.call("Page.navigate", url=docs_server + "/redoc")
    state = _wait_for_docs(browser, "redoc_operations")
    assert state["redoc_operations"] == operations, state
    assert "ReDoc" in state["title"]

    browser.evaluate(_IMAGES_SETTLED)  # and collect the events sent before it
    # ReDoc always asks cdn.redoc.ly for the logo of its "API docs by Redocly" link; the
    # policy refuses it (nothing leaves the machine) and ReDoc then leaves the logo out.
    attribution = "https://cdn.redoc.ly/redoc/logo-mini.svg"
    problems = [p for p in browser.problems() if not (attribution in p and "blocked" in p)]
    assert problems == []
    blocked = {
        e["params"]["requestId"]
        for e in browser.events
        if e.get("method") == "Network.loadingFailed" and e["params"].get("blockedReason")
    }
    requested = {
        e["params"]["request"]["url"]
        for e in browser.events
        if e.get("method") == "Network.requestWillBeSent"
        and e["params"]["requestId"] not in blocked
    }
    elsewhere = {u for u in requested if not u.startswith((docs_server, "data:", "blob:"))}
    assert not elsewhere, elsewhere
    assert docs_server + "/static/swagger-ui-bundle.js" in requested
    assert docs_server + "/static/redoc.standalone.js" in requested
    shot = browser.call("Page.captureScreenshot", format="png")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "redoc.png").write_bytes(base64.b64decode(shot["data"]))
