"""The FastAPI application factory.

Nothing is built at import time: `create_app` makes the engine and the store from
the settings it is given. ``uvicorn service.app:app_factory --factory`` (what
``hyperprior serve`` runs, once per worker) reads the settings from the environment.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from hyperprior.db import migrate
from hyperprior.db.engine import make_engine
from hyperprior.db.store import Store
from hyperprior.service.auth import AuthMiddleware, Guard, check_routes
from hyperprior.service.errors import install_error_handlers
from hyperprior.service.jobs import JobRunner
from hyperprior.service.middleware import BodySizeLimitMiddleware
from hyperprior.service.routes import (
    dashboard,
    datasets,
    docs,
    families,
    health,
    insights,
    refinements,
    runs,
    stats,
    suggestions,
    surrogates,
)
from hyperprior.service.scheduler import BackgroundServices
from hyperprior.service.security import install_security
from hyperprior.service.settings import Settings

__all__ = ["app_factory", "create_app", "engine_from_settings"]

logger = logging.getLogger(__name__)

try:
    __version__ = version("hyperprior")
except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    __version__ = "0+unknown"


def engine_from_settings(settings: Settings) -> Engine:
    """Build the database engine described by the settings."""
    return make_engine(
        settings.database_url,
        echo=settings.db_echo,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_s,
        busy_timeout_ms=settings.db_busy_timeout_ms,
    )


def _tune_gc() -> None:
    """Keep the cyclic garbage collector off the long-lived heap.

    Everything allocated by startup (modules, models) lives as long as the process.
    Without this, every full collection walks all of it, and ingesting a batch of
    1,000 runs allocates enough objects to trigger several: measured, that walk was
    half of the time of a ``POST /v1/runs``.
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(10_000, gen1, gen2)


def create_app(settings: Settings | None = None, *, store: Store | None = None) -> FastAPI:
    """Build the HTTP application.

    On startup it refuses to run unless the database schema is at the newest
    migration (the error names ``hyperprior db upgrade``); on shutdown it closes the
    connection pool it created.

    Every route must declare the scope it needs (see `hyperprior.service.auth`); one that does
    not makes this function raise `hyperprior.service.auth.UndeclaredScopeError`.

    Args:
        settings: Configuration; read from the environment when omitted.
        store: Use this store instead of building one from ``settings.database_url``
            (its engine is then left open on shutdown).

    Returns:
        The FastAPI application.
    """
    settings = settings or Settings()
    owns_engine = store is None
    if store is None:
        store = Store(engine_from_settings(settings))
    app_store = store
    # The suggestion engine, the registry watcher and (optionally) the nightly retrain.
    background = BackgroundServices(store, settings)
    guard = Guard(store, settings)
    # Claims queued refinement jobs and supervises their worker processes.
    jobs = JobRunner(store, settings) if settings.jobs_in_process else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            await run_in_threadpool(migrate.verify_schema, app_store.engine)
        except Exception as error:
            logger.error("hyperprior cannot start: %s", error)
            if owns_engine:
                app_store.engine.dispose()
            raise
        logger.info(
            "hyperprior ready on %s (schema %s)", app_store.backend, migrate.head_revision()
        )
        if not settings.auth_enabled:
            logger.warning("API keys are not checked (HYPERPRIOR_AUTH_ENABLED=false)")
        background.start()
        if jobs is not None:
            jobs.start()
        if settings.gc_tuning:
            _tune_gc()
        try:
            yield
        finally:
            background.stop()
            if jobs is not None:
                await run_in_threadpool(jobs.stop)
            guard.close()
            if owns_engine:
                app_store.engine.dispose()

    app = FastAPI(
        title="hyperprior",
        version=__version__,
        description="Hyperparameter suggestions learned from a history of training runs.",
        lifespan=lifespan,
        # Served by service.routes.docs from local assets instead of FastAPI's CDN pages.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.suggestions = background
    app.state.guard = guard
    app.state.jobs = jobs
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(runs.router, prefix="/v1")
    app.include_router(datasets.router, prefix="/v1")
    app.include_router(stats.router, prefix="/v1")
    app.include_router(families.router, prefix="/v1")
    app.include_router(suggestions.router, prefix="/v1")
    app.include_router(surrogates.router, prefix="/v1")
    app.include_router(refinements.router, prefix="/v1")
    app.include_router(insights.router, prefix="/v1")
    app.include_router(dashboard.router)
    app.include_router(docs.router)
    # Refuses routes that do not declare a scope; the middleware checks keys before
    # any body is read, and the security headers wrap every answer, refusals included.
    check_routes(app)
    app.add_middleware(AuthMiddleware, guard=guard)
    install_security(app, settings)
    return app


def app_factory() -> FastAPI:
    """Entry point for ``uvicorn --factory``: settings from the environment."""
    return create_app(Settings())
