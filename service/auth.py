"""API keys and scopes: who may call which route.

Keys are random (``hp_`` + 43 URL-safe characters, 256 bits), shown once by
``hyperprior keys create`` and stored only as their SHA-256 (a slow password hash
buys nothing for keys with this much entropy). Clients send
``Authorization: Bearer KEY``. Scopes are hierarchical: ``admin`` ⊇ ``write`` ⊇ ``read``.

Every route declares the scope it needs with a dependency, either in the decorator
or as a parameter::

    @router.get("/runs", dependencies=[Depends(require_scope("read"))])
    def list_runs(...): ...

    @router.post("/refinements")
    def create_refinement(principal: WriteDep, ...): ...  # who asked, for job ownership

    @router.get("/healthz", dependencies=[Depends(public)])

`check_routes` (called by `hyperprior.service.app.create_app`) refuses to build an app with a
route that declares nothing, so a new route is never served open by accident. The
check itself happens in `AuthMiddleware`, before the request body is read: a stranger
cannot make the server receive and parse a 64 MiB body, and gets 401 whatever is sent.
Reads (``read`` scope) are open unless ``HYPERPRIOR_AUTH_READS=key``; a key that is
sent is always checked, also on open routes.

Each process remembers the keys it verified for ``HYPERPRIOR_AUTH_CACHE_S`` (T): for
the first half of T a key is admitted without asking the database; after that it is
checked again on its next use, but while the database cannot be reached (a PostgreSQL
restart) it is still admitted until T is over. So keyed requests ride out blips
shorter than T/2 for certain, and a revocation takes effect within T/2 while the
database answers and within T in any case. Unknown and revoked keys are never
remembered: a new key works at once.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal, cast

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.dependencies.models import Dependant
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as ASGIScope

from hyperprior.db.entities import ApiKey
from hyperprior.db.errors import DatabaseUnavailableError, StoreError
from hyperprior.db.store import Store
from hyperprior.service.errors import store_error_response
from hyperprior.service.settings import Settings

__all__ = [
    "ANONYMOUS",
    "KEY_PREFIX",
    "SCOPES",
    "UNRESTRICTED",
    "AdminDep",
    "AuthMiddleware",
    "Guard",
    "NeedsStore",
    "Principal",
    "ReadDep",
    "RouteScope",
    "ScopeName",
    "UndeclaredScopeError",
    "WriteDep",
    "check_job_quota",
    "check_routes",
    "served_routes",
    "declared_scope",
    "generate_key",
    "grants",
    "hash_key",
    "issue_key",
    "job_admission",
    "public",
    "require_scope",
]

logger = logging.getLogger(__name__)

ScopeName = Literal["read", "write", "admin"]
RouteScope = Literal["public", "read", "write", "admin"]
SCOPES: tuple[ScopeName, ...] = ("read", "write", "admin")
_RANK: dict[str, int] = {"public": 0, "read": 1, "write": 2, "admin": 3}

KEY_PREFIX = "hp_"
# token_urlsafe(32) gives 43 characters; accept a little more for future formats, and
# nothing that could not be a key (no database lookup for garbage).
_KEY_PATTERN = re.compile(r"hp_[A-Za-z0-9_-]{32,128}")
_REALM = 'Bearer realm="hyperprior"'
_CREATE_HINT = "create one with `hyperprior keys create --scope write`"
#: Record a key's use at most this often (a write per request would contend with ingest).
TOUCH_INTERVAL_S = 60.0
#: Most verified keys one process remembers (see `Guard`).
_MAX_REMEMBERED_KEYS = 10_000
#: What 429 answers suggest waiting before starting another job.
JOB_RETRY_AFTER_S = 30
_ACTIVE_JOB_STATUSES = ("queued", "running")
_SCOPE_ATTR = "__hyperprior_scope__"
#: Distinct (method, path) pairs whose route `AuthMiddleware` remembers.
ROUTE_CACHE_SIZE = 1024
_PRINCIPAL_KEY = "hyperprior.principal"


# ----------------------------------------------------------------------------- keys


def generate_key() -> str:
    """A new random API key (256 bits of entropy, recognisable by its ``hp_`` prefix)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The stored form of a key: its SHA-256, hex."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def issue_key(store: Store, scope: ScopeName, *, name: str) -> tuple[ApiKey, str]:
    """Create and store a new key.

    Args:
        store: Where to record its hash.
        scope: ``read``, ``write`` or ``admin``.
        name: What it is for (shown by ``hyperprior keys list``).

    Returns:
        The stored record and the key itself (the only time it is known).

    Raises:
        ValueError: On an unknown scope.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    key = generate_key()
    return store.create_api_key(name, hash_key(key), [scope]), key


def grants(scopes: Iterable[str], required: str) -> bool:
    """Whether a key with these scopes may call a route that needs ``required``."""
    need = _RANK[required]
    return need == 0 or any(_RANK.get(s, 0) >= need for s in scopes)


# ----------------------------------------------------------------------------- principals


@dataclass(frozen=True)
class Principal:
    """Who is calling.

    Attributes:
        key_id: The API key's id; None for anonymous callers and when auth is off.
        name: The key's name, for logs.
        scopes: What the key was granted.
    """

    key_id: int | None
    name: str
    scopes: tuple[str, ...]


#: A caller without a key on an open read route.
ANONYMOUS = Principal(None, "anonymous", ())
#: Every caller when ``HYPERPRIOR_AUTH_ENABLED=false``.
UNRESTRICTED = Principal(None, "auth disabled", ("admin",))


class AuthError(Exception):
    """A refused request: 401 (no or bad key) or 403 (key lacks the scope)."""

    def __init__(self, status_code: int, detail: str, challenge: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.challenge = challenge

    def response(self) -> JSONResponse:
        """The HTTP answer, with the RFC 6750 ``WWW-Authenticate`` challenge."""
        return JSONResponse(
            status_code=self.status_code,
            content={"detail": self.detail},
            headers={"WWW-Authenticate": self.challenge},
        )

    def http_exception(self) -> HTTPException:
        """The same answer, raised from inside a route."""
        return HTTPException(
            self.status_code, self.detail, headers={"WWW-Authenticate": self.challenge}
        )


def _invalid(detail: str) -> AuthError:
    return AuthError(401, detail, f'{_REALM}, error="invalid_token"')


class NeedsStore(Exception):
    """`Guard.check` with ``remembered_only``: the key must be read from the database."""


class Guard:
    """Authenticates API keys against the store and checks scopes.

    Thread-safe; one per app. Recording when a key was last used happens in the
    background, at most once a minute per key, so that a request never waits on it.
    Verified keys are remembered for ``settings.auth_cache_s`` (see the module's
    docstring).

    Args:
        store: Where the keys are.
        settings: ``auth_enabled``, ``auth_reads``, ``auth_cache_s``.
        clock: Monotonic seconds (injected by tests of the cache).
    """

    def __init__(
        self, store: Store, settings: Settings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.settings = settings
        self._clock = clock
        self._touched: dict[int, float] = {}
        # key hash -> (the key as the database last showed it, when that read began)
        self._verified: dict[str, tuple[ApiKey, float]] = {}
        self._lock = threading.Lock()
        self._toucher: ThreadPoolExecutor | None = None

    def check(
        self, authorization: str | None, required: RouteScope, *, remembered_only: bool = False
    ) -> Principal:
        """Admit or refuse a request to a route that needs ``required``.

        Args:
            authorization: The ``Authorization`` header, if any.
            required: The route's declared scope.
            remembered_only: Raise `NeedsStore` instead of asking the database (so an
                event loop can answer remembered keys without a thread).

        Returns:
            Who is calling.

        Raises:
            AuthError: 401 without a valid key where one is needed, or with a bad
                key anywhere; 403 when the key lacks the scope.
            StoreError: When the database cannot be asked.
        """
        if not self.settings.auth_enabled:
            return UNRESTRICTED
        if not authorization:
            if self.admits(ANONYMOUS, required):
                return ANONYMOUS
            raise AuthError(
                401,
                f"this route needs an API key with scope '{required}': send "
                f"'Authorization: Bearer KEY' ({_CREATE_HINT})",
                _REALM,
            )
        principal = self.authenticate(authorization, remembered_only=remembered_only)
        if not grants(principal.scopes, required):
            raise AuthError(
                403,
                f"this route needs scope '{required}'; API key {principal.key_id} "
                f"has {', '.join(principal.scopes) or 'none'}",
                f'{_REALM}, error="insufficient_scope", scope="{required}"',
            )
        return principal

    def admits(self, principal: Principal, required: RouteScope) -> bool:
        """Whether this principal may call a route that needs ``required``."""
        if principal is ANONYMOUS:
            return required == "public" or (
                required == "read" and self.settings.auth_reads == "open"
            )
        return grants(principal.scopes, required)

    def authenticate(self, authorization: str, *, remembered_only: bool = False) -> Principal:
        """The principal of a ``Bearer`` header.

        Raises:
            AuthError: 401 for another scheme, a malformed, unknown or revoked key.
        """
        scheme, _, key = authorization.strip().partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise _invalid("send the API key as 'Authorization: Bearer KEY'")
        if not _KEY_PATTERN.fullmatch(key):
            raise _invalid("invalid API key")
        digest = hash_key(key)
        found = self._lookup(digest, remembered_only=remembered_only)
        # The lookup is by hash, so this compare is belt and braces against timing.
        if found is None or not hmac.compare_digest(found.key_hash, digest):
            raise _invalid("invalid API key")
        if found.revoked_at is not None:
            raise _invalid(f"API key {found.id} was revoked")
        self._touch(found)
        return Principal(found.id, found.name, found.scopes)

    def _lookup(self, digest: str, *, remembered_only: bool = False) -> ApiKey | None:
        """The key with this hash: remembered, or from the database.

        Raises:
            StoreError: When the database cannot be asked and the key is not (or no
                longer) remembered.
            NeedsStore: ``remembered_only`` and the answer needs the database.
        """
        ttl = self.settings.auth_cache_s
        if ttl <= 0:
            if remembered_only:
                raise NeedsStore
            return self.store.find_api_key_by_hash(digest, include_revoked=True)
        now = self._clock()
        with self._lock:
            remembered = self._verified.get(digest)
        if remembered is not None:
            age = now - remembered[1]
            if 0 <= age < ttl / 2:
                return remembered[0]
            if not 0 <= age < ttl:
                remembered = None
        if remembered_only:
            raise NeedsStore
        try:
            found = self.store.find_api_key_by_hash(digest, include_revoked=True)
        except DatabaseUnavailableError as error:
            if remembered is None:
                raise
            logger.info(
                "database unavailable (%s): admitting API key %s as verified %.1f s ago",
                error,
                remembered[0].id,
                now - remembered[1],
            )
            return remembered[0]
        with self._lock:
            if found is None or found.revoked_at is not None:
                self._verified.pop(digest, None)
            else:
                if len(self._verified) >= _MAX_REMEMBERED_KEYS:
                    self._forget_expired(now, ttl)
                self._verified[digest] = (found, now)
        return found

    def _forget_expired(self, now: float, ttl: float) -> None:
        # Only valid keys are remembered, so this is bounded by the number of keys;
        # the sweep keeps a process with many short-lived keys from growing.
        for digest, (_, verified_at) in list(self._verified.items()):
            if not 0 <= now - verified_at < ttl:
                del self._verified[digest]
        if len(self._verified) >= _MAX_REMEMBERED_KEYS:
            self._verified.clear()

    def _touch(self, key: ApiKey) -> None:
        if key.last_used_at is not None:
            age = dt.datetime.now(dt.UTC) - key.last_used_at
            if age.total_seconds() < TOUCH_INTERVAL_S:
                return  # recorded recently (maybe by another process)
        now = time.monotonic()
        with self._lock:
            last = self._touched.get(key.id)
            if last is not None and now - last < TOUCH_INTERVAL_S:
                return
            self._touched[key.id] = now
            if self._toucher is None:
                self._toucher = ThreadPoolExecutor(1, thread_name_prefix="hyperprior-touch")
            toucher = self._toucher
        toucher.submit(self._record_use, key.id)

    def _record_use(self, key_id: int) -> None:
        try:
            self.store.touch_api_key(key_id)
        except StoreError as error:  # only bookkeeping: never fail a request for it
            logger.debug("could not record the use of API key %s: %s", key_id, error)

    def close(self) -> None:
        """Finish pending bookkeeping."""
        with self._lock:
            toucher, self._toucher = self._toucher, None
        if toucher is not None:
            toucher.shutdown(wait=True)


# ----------------------------------------------------------------------------- declaring

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key from `hyperprior keys create --scope read|write|admin`.",
)


def public() -> None:
    """Declares a route open to everyone (health probes, docs)."""


setattr(public, _SCOPE_ATTR, "public")


@functools.cache
def require_scope(scope: RouteScope) -> Callable[..., Any]:
    """The dependency that declares (and checks) the scope a route needs.

    Args:
        scope: ``read``, ``write``, ``admin``, or ``public``.

    Returns:
        A dependency giving the route the calling `Principal`; the same function for
        the same scope, so FastAPI resolves it once per request.
    """
    if scope not in _RANK:
        raise ValueError(f"unknown scope {scope!r} (expected one of {', '.join(_RANK)})")
    if scope == "public":
        return public

    # async: the admitted case is a dict read, not worth a trip through the threadpool;
    # only a key the middleware did not check goes there (it may query the store).
    async def dependency(
        request: Request,
        _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        guard: Guard = request.app.state.guard
        principal = request.scope.get(_PRINCIPAL_KEY)
        if principal is None:
            # AuthMiddleware normally admitted the request already; this covers an app
            # assembled without it (and keeps the route safe if it ever is).
            try:
                principal = await run_in_threadpool(
                    guard.check, request.headers.get("authorization"), scope
                )
            except AuthError as error:
                raise error.http_exception() from None
        elif not guard.admits(principal, scope):
            raise AuthError(403, f"this route needs scope '{scope}'", _REALM).http_exception()
        return cast(Principal, principal)

    dependency.__name__ = f"require_{scope}"
    dependency.__doc__ = f"Admit callers with scope '{scope}' (or higher)."
    setattr(dependency, _SCOPE_ATTR, scope)
    return dependency


ReadDep = Annotated[Principal, Depends(require_scope("read"))]
WriteDep = Annotated[Principal, Depends(require_scope("write"))]
AdminDep = Annotated[Principal, Depends(require_scope("admin"))]


def _dependants(dependant: Dependant) -> Iterator[Dependant]:
    for sub in dependant.dependencies:
        yield sub
        yield from _dependants(sub)


def _framework_paths(app: Any) -> set[str]:
    """The docs and schema routes FastAPI adds itself (public by design)."""
    paths = {
        getattr(app, name, None)
        for name in ("openapi_url", "docs_url", "redoc_url", "swagger_ui_oauth2_redirect_url")
    }
    return {p for p in paths if p}


def served_routes(app: Any) -> list[Any]:
    """Every route the app serves, in matching order, as route contexts.

    Since FastAPI 0.137 ``app.routes`` keeps included routers as nodes of a tree;
    ``iter_route_contexts`` flattens it into one context per route, each with the
    prefix and the router-level dependencies applied (``path_format``, ``methods``,
    ``dependant``, ``matches``).
    """
    return list(iter_route_contexts(getattr(app, "routes", ())))


def declared_scope(route: Any, app: Any = None) -> RouteScope | None:
    """The scope a route declares (the highest if it declares several), or None.

    Args:
        route: A route (or route context, see `served_routes`) of the app.
        app: The app, to recognise FastAPI's own docs routes as public.
    """
    dependant = getattr(route, "dependant", None)
    if isinstance(dependant, Dependant):
        highest: RouteScope | None = None
        for sub in _dependants(dependant):
            scope = getattr(sub.call, _SCOPE_ATTR, None)
            if scope in _RANK and (highest is None or _RANK[scope] > _RANK[highest]):
                highest = scope
        return highest
    if app is not None and getattr(route, "path", None) in _framework_paths(app):
        return "public"
    return None


def _describe(route: Any) -> str:
    methods = ",".join(sorted(getattr(route, "methods", None) or ["*"]))
    return f"{methods} {getattr(route, 'path', route)}"


class UndeclaredScopeError(RuntimeError):
    """A route does not say who may call it."""


def check_routes(app: FastAPI) -> None:
    """Refuse an app with a route that declares no scope; document the others.

    Adds the 401 and 403 answers to the OpenAPI document of every keyed route, and
    marks the key as optional where reads are open.

    Args:
        app: The assembled application (``app.state.settings`` set).

    Raises:
        UndeclaredScopeError: Naming each route without a declared scope.
    """
    routes = [(route, declared_scope(route, app)) for route in served_routes(app)]
    missing = [_describe(route) for route, scope in routes if scope is None]
    if missing:
        raise UndeclaredScopeError(
            "routes without a declared scope (add dependencies=[Depends(require_scope("
            '"read"|"write"|"admin"))] or [Depends(public)] from hyperprior.service.auth): '
            + "; ".join(missing)
        )
    _document(app, [(route, scope) for route, scope in routes if scope is not None])


_ERROR_SCHEMA = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {
            "WWW-Authenticate": {
                "description": "The Bearer challenge (RFC 6750).",
                "schema": {"type": "string"},
            }
        },
        "content": {"application/json": {"schema": _ERROR_SCHEMA}},
    }


def _document(app: FastAPI, routes: list[tuple[Any, RouteScope]]) -> None:
    """Add the 401/403 answers to the OpenAPI document, and mark open reads."""
    settings: Settings = app.state.settings
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for route, scope in routes:
            if scope == "public":
                continue
            operations = schema.get("paths", {}).get(getattr(route, "path_format", None), {})
            for method in getattr(route, "methods", None) or ():
                operation = operations.get(method.lower())
                if operation is None:
                    continue
                responses = operation.setdefault("responses", {})
                responses.setdefault("401", _error_response("No valid API key."))
                responses.setdefault("403", _error_response(f"The key lacks scope '{scope}'."))
                open_read = scope == "read" and settings.auth_reads == "open"
                if open_read or not settings.auth_enabled:
                    # An empty requirement makes the key optional (OpenAPI 3).
                    operation["security"] = [{}, *operation.get("security", [])]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


# ----------------------------------------------------------------------------- enforcing


class AuthMiddleware:
    """Admit each request by the scope its route declares, before the body is read.

    The route is found as the router will find it (first full match, in order). One
    that declares no scope (added after `check_routes` ran) is refused with 403.
    A path served only for other methods gets 405 with an ``Allow`` header listing
    all of them (the router would list those of the first route only). Requests
    that match no route pass through to the router (404).
    """

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard
        # (app, its routes, method, path) -> what _route found: flattening and matching
        # every route costs more per request than the rest of the middleware.
        self._routes: OrderedDict[tuple[Any, ...], tuple[Any, set[str]]] = OrderedDict()

    def _route(self, scope: ASGIScope) -> tuple[Any, set[str]]:
        """The route that will serve the request, else the methods the path allows."""
        app = scope.get("app")
        key = (
            id(app),
            len(getattr(app, "routes", ())),
            scope["method"],
            scope.get("root_path", ""),
            scope["path"],
        )
        hit = self._routes.get(key)
        if hit is not None:
            return hit
        allowed: set[str] = set()
        found: tuple[Any, set[str]] = (None, allowed)
        for route in served_routes(app):
            match, _ = route.matches(scope)
            if match == Match.FULL:
                found = (route, allowed)
                break
            if match == Match.PARTIAL:
                allowed.update(getattr(route, "methods", None) or ())
        self._routes[key] = found
        while len(self._routes) > ROUTE_CACHE_SIZE:
            self._routes.popitem(last=False)
        return found

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route, allowed = self._route(scope)
        if route is None and allowed:
            not_allowed = JSONResponse(
                status_code=status.HTTP_405_METHOD_NOT_ALLOWED,
                content={"detail": "Method Not Allowed"},
                headers={"Allow": ", ".join(sorted(allowed))},
            )
            await not_allowed(scope, receive, send)
            return
        required = None if route is None else declared_scope(route, scope.get("app"))
        if route is not None and required is None:
            logger.error("refused %s %s: no declared scope", scope["method"], scope["path"])
            refused = JSONResponse(
                status_code=status.HTTP_403_FORBIDDEN,
                content={"detail": "this route declares no scope and is closed"},
            )
            await refused(scope, receive, send)
            return
        if required is not None and required != "public":
            authorization = None
            for name, value in scope["headers"]:
                if name == b"authorization":
                    authorization = value.decode("latin-1")
                    break
            try:
                try:  # a remembered key (or none) needs no database: the event loop answers
                    principal = self.guard.check(authorization, required, remembered_only=True)
                except NeedsStore:
                    principal = await run_in_threadpool(self.guard.check, authorization, required)
            except AuthError as error:
                await error.response()(scope, receive, send)
                return
            except StoreError as error:
                await store_error_response(error)(scope, receive, send)
                return
            scope[_PRINCIPAL_KEY] = principal
        await self.app(scope, receive, send)


# ----------------------------------------------------------------------------- job quota

_quota_lock = threading.Lock()


def check_job_quota(
    store: Store, settings: Settings, principal: Principal, *, kind: str = "refine"
) -> None:
    """Refuse a new job when the caller's key already has the most it may run.

    Args:
        store: Where the jobs are.
        settings: ``max_concurrent_jobs_per_key``.
        principal: Who asks (anonymous callers share one allowance).
        kind: The kind of job counted.

    Raises:
        HTTPException: 429 with ``Retry-After`` when the key is at its limit.
    """
    limit = settings.max_concurrent_jobs_per_key
    active = sum(
        1
        for job_status in _ACTIVE_JOB_STATUSES
        for job in store.list_jobs(kind=kind, status=job_status, limit=1000)
        if job.owner == principal.key_id
    )
    if active >= limit:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"this API key already has {active} {kind} jobs queued or running, the "
            f"limit is {limit} (HYPERPRIOR_MAX_CONCURRENT_JOBS_PER_KEY): wait for one to finish",
            headers={"Retry-After": str(JOB_RETRY_AFTER_S)},
        )


@contextmanager
def job_admission(
    store: Store, settings: Settings, principal: Principal, *, kind: str = "refine"
) -> Iterator[None]:
    """Check the quota and hold it while the caller creates the job.

    Two requests of one key in the same process cannot both pass the check before
    either job exists. (Across API processes the limit can be exceeded by at most
    one job per process.)

    Example::

        with job_admission(store, settings, principal):
            job = store.create_job("refine", request, owner=principal.key_id)

    Raises:
        HTTPException: 429 with ``Retry-After`` when the key is at its limit.
    """
    with _quota_lock:
        check_job_quota(store, settings, principal, kind=kind)
        yield
