"""``hyperprior serve``: run the HTTP service with uvicorn."""

from __future__ import annotations

import argparse
import os
from typing import Any

from hyperprior.service.commands.db import add_database_url_option, require_database


def register(subparsers: Any) -> None:
    """Add ``hyperprior serve``."""
    parser = subparsers.add_parser("serve", help="run the HTTP service")
    parser.add_argument("--host", help="interface to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default: 8000)")
    parser.add_argument("--workers", type=int, help="server processes (default: 1)")
    parser.add_argument(
        "--log-level",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
        help="log level (default: info)",
    )
    parser.add_argument(
        "--no-access-log", action="store_true", help="do not log one line per request"
    )
    add_database_url_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Check the database, then serve until interrupted."""
    import uvicorn

    from hyperprior.db import migrate
    from hyperprior.service.settings import Settings

    overrides = {
        name: value
        for name in ("host", "port", "workers", "log_level", "database_url")
        if (value := getattr(args, name, None)) is not None
    }
    if args.no_access_log:
        overrides["access_log"] = False
    settings = Settings(**overrides)
    # Fail here, with one clear line and exit status, rather than in every worker.
    require_database(settings.database_url)
    migrate.verify_schema(settings.database_url)
    _explain_access(settings)
    # Workers are separate processes that build their settings from the environment.
    for name, value in overrides.items():
        os.environ[f"HYPERPRIOR_{name.upper()}"] = str(value)
    uvicorn.run(
        "hyperprior.service.app:app_factory",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        access_log=settings.access_log,
    )
    return 0


def _explain_access(settings: Any) -> None:
    """Say how to get an API key when there is none (a fresh install has no default key)."""
    if not settings.auth_enabled:
        print("hyperprior: API keys are not checked (HYPERPRIOR_AUTH_ENABLED=false)", flush=True)
        return
    from hyperprior.db.engine import make_engine
    from hyperprior.db.store import Store

    engine = make_engine(settings.database_url)
    try:
        active = [key for key in Store(engine).list_api_keys() if key.active]
    finally:
        engine.dispose()
    if not active:
        reads = "reads are open, " if settings.auth_reads == "open" else ""
        print(
            f"hyperprior: no API keys yet ({reads}writes need a key): create one with "
            "`hyperprior keys create --scope write`",
            flush=True,
        )
