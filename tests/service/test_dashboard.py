"""The dashboard page, its assets and the JSON routes it draws (without a browser)."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hyperprior.db.entities import DatasetSpec, NewRun
from hyperprior.db.store import Store
from hyperprior.service.app import create_app
from hyperprior.service.auth import issue_key
from hyperprior.service.routes.dashboard import STATIC_DIR
from hyperprior.service.security import API_CSP
from hyperprior.service.settings import Settings
from hyperprior.training.retrain import install_shipped
from hyperprior.training.seed import SEED_DIR

META = {"n_rows": 5000, "n_features": 20, "n_classes": 2}


def _settings(**overrides: Any) -> Settings:
    return Settings(
        database_url="sqlite://",
        retrain_in_process=False,
        jobs_in_process=False,
        surrogate_poll_s=3600,
        gc_tuning=False,
        **overrides,
    )


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    with TestClient(create_app(_settings(), store=store)) as client:
        yield client


class _Page(HTMLParser):
    """Collects what CSP default-src 'self' would refuse, and the assets referenced."""

    def __init__(self) -> None:
        super().__init__()
        self.inline: list[str] = []
        self.assets: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if "style" in named or any(name.startswith("on") for name in named):
            self.inline.append(f"<{tag}> with {sorted(named)}")
        if tag == "style":
            self.inline.append("<style>")
        if tag == "script":
            self._in_script = True
            if not named.get("src"):
                self.inline.append("<script> without src")
        for name in ("src", "href"):
            value = named.get(name)
            if value and value.startswith("/static/"):
                self.assets.append(value)
            if value and re.match(r"(https?:)?//", value):
                self.inline.append(f"external {name}={value}")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False


@pytest.mark.parametrize("backend", ["sqlite"])
def test_page_and_assets_are_served_under_the_strict_csp(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == API_CSP
    parser = _Page()
    parser.feed(page.text)
    assert parser.inline == []
    assert set(parser.assets) == {
        "/static/favicon.svg",
        "/static/dashboard.css",
        "/static/dashboard.js",
    }
    for path in [*parser.assets, "/static/charts.js"]:
        asset = client.get(path)
        assert asset.status_code == 200, path
        assert asset.headers["content-security-policy"] == API_CSP
        assert asset.headers["x-content-type-options"] == "nosniff"
    assert client.get("/static/dashboard.js").headers["content-type"].startswith("text/javascript")
    # The scripts stay CSP-clean: no eval, no inline handlers or styles written as text.
    banned = ("eval(", "new Function", "innerHTML", 'setAttribute("style"', "http://", "https://")
    for script in STATIC_DIR.glob("*.js"):
        # The SVG namespace is a name, not a URL anything is loaded from.
        source = script.read_text().replace('"http://www.w3.org/2000/svg"', "")
        for word in banned:
            assert word not in source, f"{script.name} uses {word}"
    assert client.get("/static/missing.js").status_code == 404
    assert client.get("/static/..%2Fapp.py").status_code == 404


@pytest.mark.parametrize("backend", ["sqlite"])
def test_page_is_public_and_data_needs_a_key_when_reads_are_keyed(store: Store) -> None:
    with TestClient(create_app(_settings(auth_reads="key"), store=store)) as anonymous:
        assert anonymous.get("/").status_code == 200
        assert anonymous.get("/static/dashboard.js").status_code == 200
        assert anonymous.get("/v1/stats/timeline").status_code == 401
        body = {"family": "lightgbm", "task": "binary", "dataset": {"meta_features": META}}
        assert anonymous.post("/v1/insights/partial-dependence", json=body).status_code == 401
        _, key = issue_key(store, "read", name="dashboard")
        keyed = anonymous.get("/v1/stats/timeline", headers={"Authorization": f"Bearer {key}"})
        assert keyed.status_code == 200


def _run(spec: DatasetSpec, family: str, source: str) -> NewRun:
    return NewRun(
        id=uuid.uuid4(),
        family=family,
        config={},
        metric="roc_auc",
        direction="maximize",
        score=0.8,
        fidelity=1.0,
        cost_seconds=1.0,
        source=source,
        dataset=spec,
    )


def test_timeline_counts_runs_per_day_by_family_and_source(
    client: TestClient, store: Store, clock: Any
) -> None:
    iris = DatasetSpec("iris", "multiclass", {"n_rows": 150, "n_features": 4, "n_classes": 3})
    wine = DatasetSpec("wine", "multiclass", {"n_rows": 178, "n_features": 13, "n_classes": 3})
    clock.now = dt.datetime(2025, 3, 1, 23, 59, tzinfo=dt.UTC)
    store.ingest_runs([_run(iris, "lightgbm", "user"), _run(iris, "linear", "bootstrap")])
    clock.advance(120)  # past midnight UTC: the next day
    store.ingest_runs([_run(wine, "lightgbm", "import")] * 1 + [_run(iris, "lightgbm", "user")])
    clock.advance(3 * 86_400)
    store.ingest_runs([_run(wine, "linear", "verification")])

    answer = client.get("/v1/stats/timeline").json()
    # Five days apart: one bar a day, the days without runs included (a true time axis).
    assert answer == {
        "scale": "day",
        "periods": ["2025-03-01", "2025-03-02", "2025-03-03", "2025-03-04", "2025-03-05"],
        "by_family": {"lightgbm": [1, 2, 0, 0, 0], "linear": [1, 0, 0, 0, 1]},
        "by_source": {
            "bootstrap": [1, 0, 0, 0, 0],
            "import": [0, 1, 0, 0, 0],
            "user": [1, 1, 0, 0, 0],
            "verification": [0, 0, 0, 0, 1],
        },
        "runs": [2, 2, 0, 0, 1],
        "datasets": [1, 1, 0, 0, 0],
    }


def test_timeline_of_a_history_loaded_in_a_day_is_hourly(
    client: TestClient, store: Store, clock: Any
) -> None:
    iris = DatasetSpec("iris", "multiclass", {"n_rows": 150, "n_features": 4, "n_classes": 3})
    clock.now = dt.datetime(2025, 3, 1, 9, 15, tzinfo=dt.UTC)
    store.ingest_runs([_run(iris, "lightgbm", "bootstrap") for _ in range(3)])
    clock.advance(2 * 3600)  # 11:15
    store.ingest_runs([_run(iris, "linear", "bootstrap")])

    answer = client.get("/v1/stats/timeline").json()
    assert answer["scale"] == "hour"
    assert answer["periods"] == [f"2025-03-01T{h:02d}:00:00Z" for h in (9, 10, 11)]
    assert answer["by_family"] == {"lightgbm": [3, 0, 0], "linear": [0, 0, 1]}
    assert answer["datasets"] == [1, 0, 0]


def test_timeline_of_a_long_history_is_weekly_then_monthly(
    client: TestClient, store: Store, clock: Any
) -> None:
    iris = DatasetSpec("iris", "multiclass", {"n_rows": 150, "n_features": 4, "n_classes": 3})
    clock.now = dt.datetime(2025, 3, 5, 12, tzinfo=dt.UTC)  # a Wednesday
    store.ingest_runs([_run(iris, "lightgbm", "user")])
    clock.now = dt.datetime(2025, 9, 1, 12, tzinfo=dt.UTC)  # 180 days on, a Monday
    store.ingest_runs([_run(iris, "lightgbm", "user") for _ in range(2)])

    weekly = client.get("/v1/stats/timeline").json()
    assert weekly["scale"] == "week"
    assert weekly["periods"][0] == "2025-03-03"  # the Monday of the first week
    assert weekly["periods"][-1] == "2025-09-01"
    assert len(weekly["periods"]) == 27
    assert (weekly["runs"][0], weekly["runs"][-1], sum(weekly["runs"])) == (1, 2, 3)

    clock.now = dt.datetime(2028, 1, 31, 12, tzinfo=dt.UTC)
    store.ingest_runs([_run(iris, "linear", "user")])
    monthly = client.get("/v1/stats/timeline").json()
    assert monthly["scale"] == "month"
    assert monthly["periods"][:2] == ["2025-03-01", "2025-04-01"]
    assert monthly["periods"][-1] == "2028-01-01"
    assert len(monthly["periods"]) == 35
    assert monthly["by_family"]["linear"][-1] == 1


@pytest.mark.parametrize(
    ("days", "scale"),
    [(1, "hour"), (3, "hour"), (4, "day"), (120, "day"), (121, "week"), (840, "week"),
     (841, "month")],
)  # fmt: skip
def test_timeline_scale_keeps_the_bars_few_but_not_one(days: int, scale: str) -> None:
    from hyperprior.service.routes.insights import timeline_scale

    first = dt.date(2025, 1, 1)
    assert timeline_scale(first, first + dt.timedelta(days=days - 1)) == scale


@pytest.mark.parametrize("backend", ["sqlite"])
def test_timeline_of_an_empty_history(client: TestClient) -> None:
    assert client.get("/v1/stats/timeline").json() == {
        "scale": "day",
        "periods": [],
        "by_family": {},
        "by_source": {},
        "runs": [],
        "datasets": [],
    }


PdPost = Callable[..., Any]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_partial_dependence_from_the_active_surrogate(client: TestClient, store: Store) -> None:
    body: dict[str, Any] = {
        "family": "lightgbm",
        "task": "binary",
        "dataset": {"meta_features": dict(META)},
    }
    cold = client.post("/v1/insights/partial-dependence", json=body)
    assert cold.status_code == 404
    assert "no lightgbm surrogate is active yet" in cold.json()["detail"]

    installed = install_shipped(store, SEED_DIR / "surrogates")
    client.app.state.suggestions.watcher.poll_once()
    answer = client.post("/v1/insights/partial-dependence", json=body)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert data["surrogate"]["id"] == installed["lightgbm"]
    names = [p["name"] for p in data["params"]]
    assert set(names) == {
        "n_estimators",
        "learning_rate",
        "num_leaves",
        "min_child_samples",
        "subsample",
        "subsample_freq",
        "colsample_bytree",
        "reg_alpha",
        "reg_lambda",
    }
    assert sum(p["importance"] for p in data["params"]) == pytest.approx(1.0, abs=1e-3)
    importances = [p["importance"] for p in data["params"]]
    assert importances == sorted(importances, reverse=True)
    rate = next(p for p in data["params"] if p["name"] == "learning_rate")
    assert rate["kind"] == "float"
    assert rate["log"] is True
    assert len(rate["values"]) == 16
    assert rate["values"] == sorted(rate["values"])
    assert all(
        lo <= m <= hi for lo, m, hi in zip(rate["lower"], rate["mean"], rate["upper"], strict=True)
    )
    assert rate["best"] in rate["values"]
    assert rate["default"] == 0.1
    freq = next(p for p in data["params"] if p["name"] == "subsample_freq")
    assert freq["kind"] == "categorical"
    assert freq["values"] == [0, 1]

    # The answer depends on the dataset: a tiny dataset wants other settings.
    tiny = dict(body, dataset={"meta_features": {"n_rows": 60, "n_features": 3, "n_classes": 2}})
    other = client.post("/v1/insights/partial-dependence", json=tiny).json()
    assert other["params"] != data["params"]
    # Same request, same answer (and cached).
    assert client.post("/v1/insights/partial-dependence", json=body).json() == data

    bad = dict(body, dataset={"meta_features": {"n_rows": 10, "n_features": 3, "n_classes": 5}})
    refused = client.post("/v1/insights/partial-dependence", json=bad)
    assert refused.status_code == 422
    assert "n_classes=5 must be 2 for a binary task" in refused.text
    unknown = client.post("/v1/insights/partial-dependence", json=dict(body, family="catboost"))
    assert unknown.status_code == 422
    assert "unknown family" in unknown.text
    assert (
        client.post("/v1/insights/partial-dependence", json=dict(body, grid=1)).status_code == 422
    )
