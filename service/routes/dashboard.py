"""The dashboard: one page at ``/`` and its assets under ``/static/``, shipped in the package.

The page and its assets are public: they hold no data, only the code that draws it.
The data comes from the read-scoped JSON routes (``/v1/stats``, ``/v1/stats/timeline``,
``/v1/surrogates``, ``/v1/insights/partial-dependence``), so with
``HYPERPRIOR_AUTH_READS=key`` the page loads and then asks for a key. Nothing is
loaded from elsewhere and nothing is inline, so the page runs under the API's own
``Content-Security-Policy: default-src 'self'``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import FileResponse

from hyperprior.service.auth import public
from hyperprior.service.routes.docs import ASSETS_DIR as DOCS_ASSETS_DIR

__all__ = ["STATIC_DIR", "router"]

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
# The assets are fixed at install time: list them once, serve nothing else (no paths).
# The API docs' Swagger UI and ReDoc files (service/routes/docs.py) are served here too.
_ASSETS = {
    p.name: p
    for folder in (DOCS_ASSETS_DIR, STATIC_DIR)
    for p in sorted(folder.glob("*"))
    if p.is_file() and p.suffix in _TYPES
}
# Revalidate on every load (ETag): an upgraded package never shows yesterday's script.
_HEADERS = {"Cache-Control": "no-cache"}

router = APIRouter(tags=["dashboard"], include_in_schema=False)


@router.get("/", dependencies=[Depends(public)])
def dashboard() -> FileResponse:
    """The dashboard page."""
    return FileResponse(
        STATIC_DIR / "index.html", media_type=_TYPES[".html"], headers=dict(_HEADERS)
    )


@router.get("/static/{name}", dependencies=[Depends(public)])
def asset(name: str) -> FileResponse:
    """A script, stylesheet or image of the dashboard."""
    path = _ASSETS.get(name)
    if path is None:
        raise HTTPException(status_code=404, detail=f"no asset {name!r}")
    return FileResponse(path, media_type=_TYPES[path.suffix], headers=dict(_HEADERS))
