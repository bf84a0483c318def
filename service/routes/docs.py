"""The API docs: Swagger UI at ``/docs`` and ReDoc at ``/redoc``, from local assets.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so they are blank offline and
need a policy that trusts the CDN. Here the assets come from the ``fastapi-offline``
package (its ``static/`` folder: Swagger UI's bundle and stylesheet, ReDoc's standalone
bundle), served under ``/static/`` beside the dashboard's files, and the pages carry no
inline script (Swagger UI is started by ``/static/docs.js``; ReDoc starts itself from
its ``<redoc>`` element), so their policy allows scripts from this origin only. The
OAuth2 redirect page is FastAPI's, its one inline script allowed by its hash.
"""

from __future__ import annotations

import html
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from hyperprior.service.auth import public
from hyperprior.service.security import DOCS_CSP, OAUTH2_REDIRECT_HTML, OAUTH2_REDIRECT_URL

__all__ = ["ASSETS_DIR", "router"]

ASSETS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
_HEADERS = {"Content-Security-Policy": DOCS_CSP, "Cache-Control": "no-cache"}

router = APIRouter(tags=["docs"], include_in_schema=False)


def _page(request: Request, title: str, head: str, body: str) -> HTMLResponse:
    root = html.escape(str(request.scope.get("root_path", "")).rstrip("/"))
    page = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="{root}/static/favicon.svg">
{head.replace("{root}", root)}
</head>
<body>
{body.replace("{root}", root)}
</body>
</html>
"""
    return HTMLResponse(page, headers=dict(_HEADERS))


@router.get("/docs", dependencies=[Depends(public)])
def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI for the API."""
    return _page(
        request,
        "hyperprior API - Swagger UI",
        '<link rel="stylesheet" href="{root}/static/swagger-ui.css">',
        '<div id="swagger-ui" data-openapi="{root}/openapi.json" '
        f'data-oauth2-redirect="{{root}}{OAUTH2_REDIRECT_URL}"></div>\n'
        '<script src="{root}/static/swagger-ui-bundle.js"></script>\n'
        '<script src="{root}/static/docs.js"></script>',
    )


@router.get(OAUTH2_REDIRECT_URL, dependencies=[Depends(public)])
def swagger_ui_redirect() -> HTMLResponse:
    """Swagger UI's OAuth2 redirect page."""
    return HTMLResponse(OAUTH2_REDIRECT_HTML, headers=dict(_HEADERS))


@router.get("/redoc", dependencies=[Depends(public)])
def redoc(request: Request) -> HTMLResponse:
    """ReDoc for the API."""
    return _page(
        request,
        "hyperprior API - ReDoc",
        "<style>body { margin: 0; padding: 0; }</style>",
        '<redoc spec-url="{root}/openapi.json"></redoc>\n'
        '<script src="{root}/static/redoc.standalone.js"></script>',
    )
