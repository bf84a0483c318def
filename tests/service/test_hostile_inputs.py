"""Hostile input gets a 4xx and changes nothing stored.

Path traversal strings in every path and query parameter and in names, huge numbers,
NaN and Infinity literals, deeply nested JSON, SQL-looking strings, wrong content
types and invalid UTF-8, sent with a valid admin key: each request must be refused
with a 4xx (never a 5xx, never a 2xx), and ``/v1/stats``, the datasets, the
surrogates and the API keys must be the same afterwards. Runs on both databases:
they fail differently on out-of-range numbers.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from hyperprior.db.store import Store
from hyperprior.service.app import create_app
from hyperprior.service.auth import issue_key, served_routes
from hyperprior.service.settings import Settings

MakeRun = Callable[..., dict[str, Any]]
JSON = {"content-type": "application/json"}

TRAVERSAL = [
    "../../../../etc/passwd",
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "....//....//etc/passwd",
    "/etc/passwd",
    "..\\..\\windows\\win.ini",
    "file:///etc/passwd",
    "~/.ssh/id_rsa",
    "iris/../../secrets",
    "iris\x00.csv",
]
SQL = [
    "' OR '1'='1",
    "1; DROP TABLE runs; --",
    '" OR 1=1 --',
    "lightgbm' UNION SELECT key_hash FROM api_keys --",
    "%' OR name LIKE '%",
]
NUMBERS = ["NaN", "Infinity", "-Infinity", "1e400", "-1", "0", "9" * 40, "-" + "9" * 40, "1.5"]
MARKUP = ["<script>alert(1)</script>", "${jndi:ldap://x/a}", "{{7*7}}"]
HOSTILE = TRAVERSAL + SQL + NUMBERS + MARKUP
#: A legitimate value per path parameter, to vary one parameter at a time.
GOOD_PATH_VALUE = {"run_id": str(uuid.uuid4()), "dataset_id": "1", "surrogate_id": "1"}
#: Query parameters that take free numbers, where a number is not hostile.
NUMERIC_QUERY = {"limit", "dataset_id"}
#: Query parameters that take names.
NAME_QUERY = {"family", "name"}


@pytest.fixture
def client(store: Store, make_run: MakeRun, tmp_path: Path) -> Iterator[TestClient]:
    """An admin client on a small history (two datasets, three runs)."""
    settings = Settings(
        database_url="sqlite://",
        retrain_in_process=False,
        surrogate_poll_s=3600,
        max_body_bytes=200_000,
        max_runs_per_batch=20,
        jobs_in_process=False,  # nothing queued may run
        max_concurrent_jobs_per_key=100,
        data_dir=tmp_path,  # anything uploaded stays in the test's directory
    )
    app = create_app(settings, store=store)
    _, key = issue_key(store, "admin", name="hostile")
    with TestClient(
        app, headers={"Authorization": f"Bearer {key}"}, raise_server_exceptions=False
    ) as client:
        runs = [make_run(index=i) for i in range(2)] + [make_run(dataset="wine", task="binary")]
        assert client.post("/v1/runs", json={"runs": runs}).status_code == 201
        yield client


def snapshot(client: TestClient) -> dict[str, Any]:
    """Everything a hostile request could have changed."""
    store: Store = client.app.state.store  # type: ignore[attr-defined]
    return {
        "stats": client.get("/v1/stats").json(),
        "datasets": client.get("/v1/datasets").json(),
        "runs": client.get("/v1/runs").json()["count"],
        "surrogates": [(s.id, s.status) for s in store.list_surrogates()],
        "keys": [(k.id, k.revoked_at) for k in store.list_api_keys()],
    }


def refused(response: Any) -> bool:
    """A 4xx with a JSON body."""
    return 400 <= response.status_code < 500 and response.headers.get(
        "content-type", ""
    ).startswith("application/json")


def _query_parameters(client: TestClient) -> dict[tuple[str, str], list[str]]:
    spec = client.get("/openapi.json").json()
    found: dict[tuple[str, str], list[str]] = {}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
            if names:
                found[(method.upper(), path)] = names
    return found


def _fill(path: str, **values: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m[1], GOOD_PATH_VALUE.get(m[1], "x")), path)


def test_hostile_path_parameters(client: TestClient) -> None:
    before = snapshot(client)
    routes = [r for r in served_routes(client.app) if re.search(r"\{\w+\}", r.path)]
    assert {"run_id", "dataset_id", "surrogate_id", "family"} <= {
        name for r in routes for name in re.findall(r"\{(\w+)\}", r.path)
    }

    failures = []
    for route in routes:
        for method in sorted(route.methods - {"HEAD"}):
            for name in re.findall(r"\{(\w+)\}", route.path):
                for value in HOSTILE:
                    url = _fill(route.path, **{name: quote(value, safe="")})
                    response = client.request(method, url, json={} if method == "POST" else None)
                    if not refused(response):
                        failures.append(f"{method} {url}: {response.status_code}")

    assert not failures, "\n".join(failures)
    assert snapshot(client) == before


def test_hostile_query_parameters(client: TestClient) -> None:
    before = snapshot(client)
    parameters = _query_parameters(client)
    assert parameters, "no query parameters found in the OpenAPI document"

    failures = []
    for (method, path), names in parameters.items():
        for name in names:
            values = TRAVERSAL + SQL + MARKUP
            if name in NUMERIC_QUERY:
                values = values + ["NaN", "Infinity", "1e400", "-1", "0", "9" * 40, "1.5"]
            elif name not in NAME_QUERY:  # "NaN" is a fine name, and finds nothing
                values = values + ["NaN", "Infinity", "9" * 40]
            for value in values:
                response = client.request(method, _fill(path), params={name: value})
                if not refused(response):
                    failures.append(f"{method} {path}?{name}={value!r}: {response.status_code}")

    assert not failures, "\n".join(failures)
    assert snapshot(client) == before


def _runs_body(make_run: MakeRun, **change: Any) -> dict[str, Any]:
    run = make_run(index=7)
    for path, value in change.items():
        *parents, last = path.split("__")
        target = run
        for key in parents:
            target = target[key]
        target[last] = value
    return {"runs": [make_run(index=8), run]}


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _nested_config(make_run: MakeRun, depth: int) -> str:
    run = make_run(index=9)
    body = json.dumps({"runs": [run]})
    nested = '{"a": ' * depth + "1" + "}" * depth
    return body.replace('"config": {', f'"config": {{"deep": {nested}, ', 1)


def hostile_ingest_bodies(make_run: MakeRun) -> list[tuple[str, bytes | str, dict[str, str]]]:
    """(label, body, headers) for POST /v1/runs."""
    cases: list[tuple[str, bytes | str, dict[str, str]]] = []
    for value in TRAVERSAL + SQL + MARKUP:
        for field in ("dataset__name", "family", "metric"):
            body = _runs_body(make_run, **{field: value})
            cases.append((f"{field}={value!r}", json.dumps(body), JSON))
    for literal in ("NaN", "Infinity", "-Infinity", "1e400", "-1e400"):
        for field in ("score", "fidelity", "cost_seconds", "dataset__meta_features__skew"):
            body = json.dumps(_runs_body(make_run, **{field: 12345.678}))
            cases.append((f"{field}={literal}", body.replace("12345.678", literal), JSON))
    huge = 10**40
    for field in (
        "dataset_id",
        "dataset__meta_features__n_rows",
        "dataset__meta_features__n_features",
        "dataset__meta_features__n_classes",
        "score",
        "cost_seconds",
    ):
        changes: dict[str, Any] = {field: huge}
        if field == "dataset_id":
            changes["dataset"] = None
        cases.append((f"{field}=10**40", json.dumps(_runs_body(make_run, **changes)), JSON))
    for field, value in (("score", True), ("score", "0.9"), ("fidelity", "1"), ("id", 7)):
        cases.append(
            (f"{field}={value!r}", json.dumps(_runs_body(make_run, **{field: value})), JSON)
        )
    for depth in (100, 10_000, 100_000):
        cases.append(
            (f"nested list {depth}", json.dumps({"runs": []})[:-2] + _nested(depth) + "]}", JSON)
        )
        cases.append((f"nested config {depth}", _nested_config(make_run, depth), JSON))
    good = json.dumps({"runs": [make_run(index=11)]})
    for content_type in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/octet-stream",
    ):
        cases.append((f"content-type {content_type}", good, {"content-type": content_type}))
    cases.append(("no content-type", good.encode(), {}))
    cases.append(("invalid UTF-8", good.encode().replace(b"iris", b"ir\xff\xfe"), JSON))
    cases.append(("BOM and garbage", b"\xef\xbb\xbf\x00\x01{", JSON))
    cases.append(("JSON null", b"null", JSON))
    cases.append(("JSON string", b'"runs"', JSON))
    cases.append(
        ("too many runs", json.dumps({"runs": [make_run(index=i) for i in range(21)]}), JSON)
    )
    cases.append(
        ("body over the limit", json.dumps({"runs": [make_run()], "pad": "x" * 300_000}), JSON)
    )
    return cases


def test_hostile_ingest_bodies(client: TestClient, make_run: MakeRun) -> None:
    before = snapshot(client)

    failures = []
    for label, body, headers in hostile_ingest_bodies(make_run):
        response = client.post("/v1/runs", content=body, headers=headers)
        if not refused(response):
            failures.append(f"{label}: {response.status_code} {response.text[:200]}")

    assert not failures, "\n".join(failures)
    assert snapshot(client) == before


def hostile_suggestion_bodies() -> list[tuple[str, str]]:
    """(label, body) for POST /v1/suggestions."""
    base = {
        "family": "lightgbm",
        "task": "binary",
        "dataset": {"meta_features": {"n_rows": 1000, "n_features": 10, "n_classes": 2}},
    }

    def variant(**change: Any) -> dict[str, Any]:
        body = json.loads(json.dumps(base))
        for path, value in change.items():
            *parents, last = path.split("__")
            target = body
            for key in parents:
                target = target[key]
            target[last] = value
        return body

    cases = []
    for value in TRAVERSAL + SQL + MARKUP:
        cases.append((f"family={value!r}", json.dumps(variant(family=value))))
        cases.append((f"dataset name={value!r}", json.dumps(variant(dataset__name=value))))
        cases.append((f"metric={value!r}", json.dumps(variant(metric=value))))
        cases.append((f"fixed value={value!r}", json.dumps(variant(fixed={"num_leaves": value}))))
        cases.append((f"fixed key={value!r}", json.dumps(variant(fixed={value: 3}))))
    for literal in ("NaN", "Infinity", "-Infinity", "1e400"):
        for field in ("n_rows", "n_features", "skewness_mean"):
            body = json.dumps(variant(**{f"dataset__meta_features__{field}": 12345.678}))
            cases.append((f"{field}={literal}", body.replace("12345.678", literal)))
        body = json.dumps(variant(fixed={"learning_rate": 12345.678}))
        cases.append((f"fixed learning_rate={literal}", body.replace("12345.678", literal)))
    for field in ("n_rows", "n_features", "n_classes"):
        body = variant(**{f"dataset__meta_features__{field}": 10**40})
        cases.append((f"{field}=10**40", json.dumps(body)))
    cases.append(("n=10**40", json.dumps(variant(n=10**40))))
    cases.append(("seed=10**40", json.dumps(variant(seed=10**40))))
    cases.append(("fixed num_leaves=10**40", json.dumps(variant(fixed={"num_leaves": 10**40}))))
    cases.append(("n_rows=true", json.dumps(variant(dataset__meta_features__n_rows=True))))
    cases.append(("nested fixed", json.dumps(variant(fixed={"a": {"b": {"c": [1]}}}))))
    cases.append(("nested 10000", json.dumps(base)[:-1] + ', "x": ' + _nested(10_000) + "}"))
    return cases


def test_hostile_suggestion_bodies(client: TestClient) -> None:
    before = snapshot(client)

    failures = []
    for label, body in hostile_suggestion_bodies():
        response = client.post("/v1/suggestions", content=body, headers=JSON)
        if not refused(response):
            failures.append(f"{label}: {response.status_code} {response.text[:200]}")

    assert not failures, "\n".join(failures)
    assert snapshot(client) == before


def test_hostile_headers(client: TestClient, make_run: MakeRun) -> None:
    before = snapshot(client)
    body = json.dumps({"runs": [make_run(index=12)]})
    cases: list[tuple[str, dict[str, str | bytes]]] = [
        ("SQL in the key", {"authorization": "Bearer ' OR '1'='1"}),
        ("traversal in the key", {"authorization": "Bearer ../../etc/passwd"}),
        ("huge key", {"authorization": "Bearer hp_" + "A" * 100_000}),
        ("another scheme", {"authorization": "Basic YWRtaW46YWRtaW4="}),
        ("invalid UTF-8 key", {"authorization": b"Bearer hp_\xff\xfe" + b"A" * 40}),
        ("content-length over the limit", {"content-length": "99999999999999999999"}),
    ]

    failures = []
    for label, headers in cases:
        response = client.post("/v1/runs", content=body, headers={**JSON, **headers})
        if not refused(response):
            failures.append(f"{label}: {response.status_code} {response.text[:200]}")

    assert not failures, "\n".join(failures)
    assert snapshot(client) == before


def _csv(rows: int = 60) -> bytes:
    lines = ["a,b,label"] + [f"{i % 7},{(i * 3) % 11},{i % 2}" for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def test_no_path_from_a_request_reaches_the_file_system(client: TestClient, tmp_path: Path) -> None:
    if not any(r.path == "/v1/refinements" for r in served_routes(client.app)):
        pytest.skip("this build has no upload route")
    before = snapshot(client)
    outside = {p for p in tmp_path.parent.rglob("*")}

    failures = []
    for filename in TRAVERSAL + ["x" * 5000 + ".csv", "CON", "upload.csv\r\nX-Injected: 1"]:
        response = client.post(
            "/v1/refinements",
            files={"file": (filename, _csv(), "text/csv")},
            data={"target": "label", "family": "lightgbm"},
        )
        # The name is ignored: accepted (202) or refused, never a 5xx.
        if response.status_code not in (202, 400, 413, 415, 422):
            failures.append(f"file name {filename!r}: {response.status_code}")
    for dataset in TRAVERSAL + SQL:
        response = client.post("/v1/refinements", json={"dataset": dataset, "family": "lightgbm"})
        if not refused(response):
            failures.append(f"catalog dataset {dataset!r}: {response.status_code}")

    assert not failures, "\n".join(failures)
    written = {p for p in tmp_path.parent.rglob("*")} - outside
    uploads = tmp_path / "uploads"
    for path in written:
        # Only the upload directory and files named by the service, inside data_dir.
        assert path == uploads or (
            path.parent == uploads and re.fullmatch(r"[0-9a-f]{32}\.(csv|parquet)", path.name)
        ), path
    assert snapshot(client)["stats"] == before["stats"]
