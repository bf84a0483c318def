"""API keys, scopes, the route walk, the job quota, security headers and CORS."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException
from fastapi.testclient import TestClient
from pydantic import ValidationError

import hyperprior.service.routes.stats as stats_routes
from hyperprior.db.errors import DatabaseUnavailableError
from hyperprior.db.store import Store
from hyperprior.service.app import create_app
from hyperprior.service.auth import (
    KEY_PREFIX,
    Principal,
    UndeclaredScopeError,
    check_job_quota,
    check_routes,
    declared_scope,
    generate_key,
    grants,
    issue_key,
    job_admission,
    public,
    require_scope,
    served_routes,
)
from hyperprior.service.cli import main
from hyperprior.service.commands.serve import _explain_access
from hyperprior.service.security import API_CSP, DOCS_CSP
from hyperprior.service.settings import Settings

SQLITE = pytest.mark.parametrize("backend", ["sqlite"])
RANK = {"public": 0, "read": 1, "write": 2, "admin": 3}
#: Routes that anyone may call.
PUBLIC_PATHS = {
    "/healthz",
    "/readyz",
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    # The dashboard page and its assets hold no data (issue 7).
    "/",
    "/static/{name}",
}
#: POST routes that only read (they compute an answer and store nothing).
READ_POSTS = {"/v1/suggestions", "/v1/insights/partial-dependence"}
#: A value for each path parameter that the walk may meet.
PATH_VALUES = {
    "run_id": str(uuid.uuid4()),
    "dataset_id": "1",
    "surrogate_id": "1",
    "family": "lightgbm",
    "name": "dashboard.js",
    "job_id": str(uuid.uuid4()),
    "refinement_id": str(uuid.uuid4()),
}


def make_app(store: Store, **overrides: Any) -> FastAPI:
    # No background work: these tests are about who gets in, not what runs.
    settings = Settings(
        **{
            "database_url": "sqlite://",
            "retrain_in_process": False,
            "surrogate_poll_s": 3600,
            "jobs_in_process": False,
            **overrides,
        }
    )
    return create_app(settings, store=store)


@pytest.fixture
def keys(store: Store) -> dict[str, str]:
    """One key per scope, and a revoked admin key."""
    made = {
        scope: issue_key(store, scope, name=f"{scope} test")[1]
        for scope in RANK
        if scope != "public"
    }
    revoked, made["revoked"] = issue_key(store, "admin", name="revoked")
    store.revoke_api_key(revoked.id)
    return made


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _url(path: str) -> str:
    def value(match: re.Match[str]) -> str:
        assert match[1] in PATH_VALUES, f"the walk needs a value for path parameter {match[1]}"
        return PATH_VALUES[match[1]]

    return re.sub(r"\{(\w+)\}", value, path)


def _operations(app: FastAPI) -> list[tuple[str, str, str]]:
    """(method, path, declared scope) of every route the app serves."""
    found = []
    for route in served_routes(app):
        scope = declared_scope(route, app)
        assert scope is not None, f"{route.path} declares no scope"
        for method in sorted(set(route.methods) - {"HEAD"}):
            found.append((method, route.path, scope))
    return found


def _call(client: TestClient, method: str, path: str, key: str | None = None) -> Any:
    headers = bearer(key) if key else {}
    body = {} if method in ("POST", "PUT", "PATCH") else None
    return client.request(method, _url(path), json=body, headers=headers)


# ----------------------------------------------------------------------------- the walk


@SQLITE
def test_every_route_declares_a_sensible_scope(store: Store) -> None:
    operations = _operations(make_app(store))

    paths = {path for _, path, _ in operations}
    assert {"/healthz", "/v1/runs", "/v1/surrogates/{surrogate_id}/activate"} <= paths
    for method, path, scope in operations:
        if path in PUBLIC_PATHS:
            assert scope == "public", (method, path)
            continue
        assert scope != "public", f"{method} {path} is open to everyone"
        if method != "GET" and path not in READ_POSTS:
            assert RANK[scope] >= RANK["write"], f"{method} {path} changes data with {scope}"
        if "activate" in path or "retrain" in path:
            assert scope == "admin", (method, path)
    assert ("POST", "/v1/runs", "write") in operations


def test_walk_every_route_with_keyed_reads(store: Store, keys: dict[str, str]) -> None:
    app = make_app(store, auth_reads="key")
    operations = _operations(app)
    failures: list[str] = []

    def expect(ok: bool, what: str, response: Any) -> None:
        if not ok:
            failures.append(f"{what}: {response.status_code} {response.text[:120]}")

    with TestClient(app) as client:
        for method, path, scope in operations:
            where = f"{method} {path}"
            anonymous = _call(client, method, path)
            if scope == "public":
                expect(anonymous.status_code not in (401, 403), f"{where} without key", anonymous)
                continue
            expect(anonymous.status_code == 401, f"{where} without key", anonymous)
            challenge = anonymous.headers.get("www-authenticate", "")
            expect(challenge.startswith("Bearer"), f"{where} challenge {challenge!r}", anonymous)

            revoked = _call(client, method, path, keys["revoked"])
            expect(revoked.status_code == 401, f"{where} with a revoked key", revoked)
            expect("revoked" in revoked.text, f"{where} says revoked", revoked)

            for held in ("read", "write", "admin"):
                response = _call(client, method, path, keys[held])
                if RANK[held] < RANK[scope]:
                    expect(response.status_code == 403, f"{where} with {held}", response)
                    expect(
                        'error="insufficient_scope"'
                        in response.headers.get("www-authenticate", ""),
                        f"{where} with {held}: challenge",
                        response,
                    )
                else:
                    expect(response.status_code not in (401, 403), f"{where} with {held}", response)

    assert not failures, "\n".join(failures)
    assert len(operations) >= 17


def test_walk_every_route_with_open_reads(store: Store, keys: dict[str, str]) -> None:
    app = make_app(store)  # the default: reads open, writes keyed
    failures = []
    with TestClient(app) as client:
        for method, path, scope in _operations(app):
            anonymous = _call(client, method, path)
            keyed = RANK[scope] >= RANK["write"]
            if (anonymous.status_code == 401) != keyed:
                failures.append(f"{method} {path} ({scope}) without key: {anonymous.status_code}")
            if scope != "public":
                bad = _call(client, method, path, "hp_" + "x" * 43)
                if bad.status_code != 401:
                    failures.append(f"{method} {path} with an unknown key: {bad.status_code}")
            if scope == "write":
                response = _call(client, method, path, keys["read"])
                if response.status_code != 403:
                    failures.append(f"{method} {path} with a read key: {response.status_code}")

    assert not failures, "\n".join(failures)


@SQLITE
def test_create_app_refuses_a_route_without_a_scope(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    router = APIRouter()
    router.include_router(stats_routes.router)

    @router.get("/sneaky")
    def sneaky() -> dict[str, str]:
        return {"secret": "yes"}

    monkeypatch.setattr(stats_routes, "router", router)

    with pytest.raises(UndeclaredScopeError, match=r"GET /v1/sneaky"):
        make_app(store)


@SQLITE
def test_a_route_added_after_creation_is_closed(store: Store, keys: dict[str, str]) -> None:
    app = make_app(store)

    @app.get("/v1/late")
    def late() -> dict[str, str]:
        return {"secret": "yes"}

    with TestClient(app) as client:
        response = client.get("/v1/late", headers=bearer(keys["admin"]))

    assert response.status_code == 403
    assert "declares no scope" in response.json()["detail"]


def test_scope_declarations_are_found_wherever_they_are() -> None:
    app = FastAPI()
    app.state.settings = Settings(database_url="sqlite://")
    keyed = APIRouter(dependencies=[Depends(require_scope("write"))])

    @keyed.get("/by-router")
    def by_router() -> None: ...

    @keyed.post("/raised", dependencies=[Depends(require_scope("admin"))])
    def raised() -> None: ...

    @app.get("/by-parameter")
    def by_parameter(_: Any = Depends(require_scope("read"))) -> None: ...

    @app.get("/open", dependencies=[Depends(public)])
    def open_() -> None: ...

    app.include_router(keyed, prefix="/v9")
    scopes = {r.path: declared_scope(r, app) for r in served_routes(app)}

    assert scopes["/v9/by-router"] == "write"
    assert scopes["/v9/raised"] == "admin"  # the highest declaration wins
    assert scopes["/by-parameter"] == "read"
    assert scopes["/open"] == "public"
    assert scopes["/docs"] == "public"
    check_routes(app)  # all declared: no error
    with pytest.raises(ValueError, match="unknown scope"):
        require_scope("root")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- keys


@SQLITE
def test_keys_are_random_and_stored_only_as_a_hash(store: Store, db_url: str) -> None:
    record, key = issue_key(store, "write", name="ci")

    assert key.startswith(KEY_PREFIX)
    assert len(key) == len(KEY_PREFIX) + 43
    assert generate_key() != generate_key()
    assert record.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert record.scopes == ("write",)
    database = Path(db_url.removeprefix("sqlite:///"))
    stored = b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))
    assert key.encode() not in stored
    assert record.key_hash.encode() in stored


def test_scopes_nest() -> None:
    assert grants(["admin"], "write")
    assert grants(["admin"], "read")
    assert grants(["write"], "read")
    assert not grants(["write"], "admin")
    assert not grants(["read"], "write")
    assert not grants([], "read")
    assert grants([], "public")


@SQLITE
@pytest.mark.parametrize(
    "authorization",
    [
        "Basic YWRtaW46YWRtaW4=",
        "Bearer",
        "Bearer hp_short",
        "Bearer not-a-hyperprior-key-at-all-but-long-enough",
        "Token hp_" + "a" * 43,
        "Bearer hp_" + "a" * 43,
    ],
)
def test_malformed_or_unknown_keys_are_401(store: Store, authorization: str) -> None:
    with TestClient(make_app(store)) as client:
        response = client.get("/v1/stats", headers={"Authorization": authorization})

    assert response.status_code == 401
    assert (
        response.headers["www-authenticate"] == 'Bearer realm="hyperprior", error="invalid_token"'
    )


@SQLITE
def test_bearer_is_case_insensitive_and_use_is_recorded(store: Store) -> None:
    record, key = issue_key(store, "write", name="ci")

    with TestClient(make_app(store)) as client:
        response = client.get("/v1/stats", headers={"Authorization": f"bearer   {key} "})
    # Leaving the client shut the app down, which waits for the bookkeeping.

    assert response.status_code == 200
    assert store.list_api_keys()[0].last_used_at is not None


@SQLITE
def test_auth_can_be_switched_off(store: Store) -> None:
    with TestClient(make_app(store, auth_enabled=False)) as client:
        response = client.post("/v1/runs", json={"runs": []})
        spec = client.get("/openapi.json").json()

    assert response.status_code == 422  # past auth, refused for the empty batch
    assert spec["paths"]["/v1/runs"]["post"]["security"][0] == {}


@SQLITE
def test_database_down_while_checking_a_key_is_503(
    store: Store, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*args: Any, **kwargs: Any) -> None:
        raise DatabaseUnavailableError("connection refused", retry_after=7)

    with TestClient(make_app(store)) as client:
        monkeypatch.setattr(store, "find_api_key_by_hash", down)
        response = client.post("/v1/runs", json={"runs": []}, headers=bearer(keys["write"]))
        anonymous = client.post("/v1/runs", json={"runs": []})

    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"
    assert anonymous.status_code == 401  # no key to look up: no database needed


@SQLITE
def test_strangers_are_refused_before_the_body_is_read(store: Store) -> None:
    app = make_app(store)
    reads = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b'{"runs": [' * 1000, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/runs",
        "raw_path": b"/v1/runs",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"host", b"testserver")],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
        "state": {},
    }
    asyncio.run(app(scope, receive, send))

    assert sent[0]["status"] == 401
    assert reads == 0


@SQLITE
def test_openapi_documents_keys_and_refusals(store: Store) -> None:
    with TestClient(make_app(store)) as client:
        spec = client.get("/openapi.json").json()
    with TestClient(make_app(store, auth_reads="key")) as client:
        keyed = client.get("/openapi.json").json()

    ingest = spec["paths"]["/v1/runs"]["post"]
    assert ingest["security"] == [{"ApiKey": []}]
    assert {"401", "403", "400", "413"} <= set(ingest["responses"])
    assert spec["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    assert spec["paths"]["/v1/runs"]["get"]["security"] == [{}, {"ApiKey": []}]
    assert keyed["paths"]["/v1/runs"]["get"]["security"] == [{"ApiKey": []}]
    assert "security" not in spec["paths"]["/healthz"]["get"]


# ----------------------------------------------------------------------------- CLI


@SQLITE
def test_keys_commands(store: Store, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "list", "--database-url", db_url]) == 0
    assert "hyperprior keys create --scope write" in capsys.readouterr().out

    assert (
        main(["keys", "create", "--scope", "write", "--name", "ci", "--database-url", db_url]) == 0
    )
    key = capsys.readouterr().out.rstrip("\n").splitlines()[-1]
    assert re.fullmatch(r"hp_[A-Za-z0-9_-]{43}", key)

    assert main(["keys", "list", "--json", "--database-url", db_url]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert (listed["name"], listed["scopes"], listed["revoked_at"]) == ("ci", ["write"], None)
    assert key not in json.dumps(listed)

    # Without the key cache, the revocation shows on the next request (with it, within
    # HYPERPRIOR_AUTH_CACHE_S: tests/service/test_auth_cache.py).
    with TestClient(make_app(store, auth_cache_s=0)) as client:
        assert client.post("/v1/runs", json={"runs": []}, headers=bearer(key)).status_code == 422
        assert main(["keys", "revoke", str(listed["id"]), "--database-url", db_url]) == 0
        refused = client.post("/v1/runs", json={"runs": []}, headers=bearer(key))
    assert refused.status_code == 401
    assert "revoked" in refused.json()["detail"]

    assert main(["keys", "revoke", "999", "--database-url", db_url]) == 2
    assert "API key 999 not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["keys", "create", "--scope", "root", "--database-url", db_url])


@SQLITE
def test_serve_says_how_to_get_a_key(
    store: Store, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _explain_access(Settings(database_url=db_url))
    assert "no API keys yet" in capsys.readouterr().out

    record, _ = issue_key(store, "read", name="only")
    _explain_access(Settings(database_url=db_url))
    assert capsys.readouterr().out == ""

    store.revoke_api_key(record.id)
    _explain_access(Settings(database_url=db_url))
    assert "hyperprior keys create --scope write" in capsys.readouterr().out


# ----------------------------------------------------------------------------- job quota


@SQLITE
def test_concurrent_jobs_per_key_are_limited(store: Store) -> None:
    settings = Settings(database_url="sqlite://", max_concurrent_jobs_per_key=2)
    guard_key, _ = issue_key(store, "write", name="busy")
    other_key, _ = issue_key(store, "write", name="idle")
    busy = Principal(guard_key.id, "busy", ("write",))
    idle = Principal(other_key.id, "idle", ("write",))
    first = store.create_job("refine", {}, owner=busy.key_id)
    with job_admission(store, settings, busy):
        store.create_job("refine", {}, owner=busy.key_id)

    with pytest.raises(HTTPException) as refused:
        check_job_quota(store, settings, busy)
    check_job_quota(store, settings, idle)
    store.update_job(first.id, status="running")
    with pytest.raises(HTTPException):
        check_job_quota(store, settings, busy)
    store.update_job(first.id, status="succeeded")
    check_job_quota(store, settings, busy)

    assert refused.value.status_code == 429
    assert refused.value.headers is not None
    assert int(refused.value.headers["Retry-After"]) > 0
    assert "HYPERPRIOR_MAX_CONCURRENT_JOBS_PER_KEY" in str(refused.value.detail)


# ----------------------------------------------------------------------------- headers, CORS


@SQLITE
def test_security_headers_on_every_answer(store: Store, keys: dict[str, str]) -> None:
    with TestClient(make_app(store, max_body_bytes=1000)) as client:
        answers = {
            "200": client.get("/healthz"),
            "401": client.post("/v1/runs", json={"runs": []}),
            "404": client.get("/nowhere"),
            "405": client.delete("/v1/runs"),
            "413": client.post("/v1/runs", content=b"x" * 2000, headers=bearer(keys["write"])),
            "422": client.get("/v1/runs", params={"limit": 0}),
        }
        docs = client.get("/docs")

    for status, response in answers.items():
        assert response.status_code == int(status)
        assert response.headers["x-content-type-options"] == "nosniff", status
        assert response.headers["x-frame-options"] == "DENY", status
        assert response.headers["referrer-policy"] == "no-referrer", status
        assert response.headers["content-security-policy"] == API_CSP, status
    assert API_CSP.startswith("default-src 'self'")
    assert docs.headers["content-security-policy"] == DOCS_CSP
    assert answers["405"].headers["allow"] == "GET, POST"


@SQLITE
def test_cors_allows_only_the_listed_origins(store: Store) -> None:
    allowed, other = "https://ml.example.com", "https://evil.example.com"
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    with TestClient(make_app(store, cors_origins=[allowed])) as client:
        ok = client.options("/v1/runs", headers={"Origin": allowed, **preflight})
        refused = client.options("/v1/runs", headers={"Origin": other, **preflight})
        simple = client.get("/v1/stats", headers={"Origin": allowed})
        foreign = client.get("/v1/stats", headers={"Origin": other})
    with TestClient(make_app(store)) as client:
        closed = client.get("/v1/stats", headers={"Origin": allowed})

    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == allowed
    assert "authorization" in ok.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in ok.headers
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers
    assert simple.headers["access-control-allow-origin"] == allowed
    assert "access-control-allow-origin" not in foreign.headers
    assert "access-control-allow-origin" not in closed.headers


def test_cors_origins_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYPERPRIOR_CORS_ORIGINS", "https://a.example.com, http://localhost:3000/")
    assert Settings().cors_origins == ["https://a.example.com", "http://localhost:3000"]
    assert Settings().auth_enabled
    assert Settings().auth_reads == "open"
    for bad in ("*", "https://a.example.com/path", "a.example.com", "ftp://a.example.com"):
        monkeypatch.setenv("HYPERPRIOR_CORS_ORIGINS", bad)
        with pytest.raises(ValidationError, match="invalid CORS origin"):
            Settings()


@SQLITE
def test_remembered_routes_answer_as_the_first_time(store: Store, keys: dict[str, str]) -> None:
    import hyperprior.service.auth as auth

    with TestClient(make_app(store)) as client:
        first = [
            client.delete("/v1/runs").status_code,
            client.get("/nowhere").status_code,
            client.get("/v1/runs", headers=bearer(keys["read"])).status_code,
            client.post("/v1/runs", json={"runs": []}).status_code,
        ]
        again = [
            client.delete("/v1/runs"),
            client.get("/nowhere"),
            client.get("/v1/runs", headers=bearer(keys["read"])),
            client.post("/v1/runs", json={"runs": []}),
        ]
        assert first == [405, 404, 200, 401]
        assert [r.status_code for r in again] == first
        assert again[0].headers["allow"] == "GET, POST"
        # Many distinct paths (ids in them) do not make the memory grow without bound.
        for i in range(auth.ROUTE_CACHE_SIZE + 50):
            client.get(f"/v1/surrogates/{i}", headers=bearer(keys["read"]))
        layer = client.app.middleware_stack
        while not isinstance(layer, auth.AuthMiddleware):
            layer = layer.app
        assert len(layer._routes) == auth.ROUTE_CACHE_SIZE
