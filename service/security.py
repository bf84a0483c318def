"""Browser-facing hardening: security headers on every response, and CORS.

The API answers JSON to programs; the only pages are the docs and the same-origin
dashboard, which load nothing from elsewhere. So every response forbids sniffing,
framing and referrers, and carries a Content-Security-Policy of ``default-src 'self'``.
The API docs (``/docs``, ``/redoc``: :mod:`hyperprior.service.routes.docs`) load Swagger UI and
ReDoc from this origin too; their policy adds only the inline styles both set, ReDoc's
search worker, and the hash of the one inline script of the OAuth2 redirect page.

CORS is off unless ``HYPERPRIOR_CORS_ORIGINS`` lists origins; keys travel in the
``Authorization`` header, never in cookies, so credentials are never allowed.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_oauth2_redirect_html
from starlette.datastructures import MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hyperprior.service.settings import Settings

__all__ = [
    "API_CSP",
    "DOCS_CSP",
    "OAUTH2_REDIRECT_HTML",
    "OAUTH2_REDIRECT_URL",
    "SECURITY_HEADERS",
    "SecurityHeadersMiddleware",
    "document_body_errors",
    "install_security",
]

API_CSP = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
#: FastAPI's OAuth2 redirect page for Swagger UI, and where it is served.
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
OAUTH2_REDIRECT_HTML = bytes(get_swagger_ui_oauth2_redirect_html().body).decode()


def _script_hashes(page: str) -> str:
    """CSP sources allowing exactly the inline scripts of ``page``."""
    scripts = re.findall(r"<script>(.*?)</script>", page, flags=re.DOTALL)
    digests = (base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() for s in scripts)
    return " ".join(f"'sha256-{d}'" for d in digests)


DOCS_CSP = (
    f"default-src 'self'; script-src 'self' {_script_hashes(OAUTH2_REDIRECT_HTML)}; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; "
    "worker-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class SecurityHeadersMiddleware:
    """Add the security headers to every HTTP response (a route may set its own CSP)."""

    def __init__(self, app: ASGIApp, docs_paths: Iterable[str] = ()) -> None:
        self.app = app
        self.docs_paths = frozenset(docs_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = DOCS_CSP if scope["path"] in self.docs_paths else API_CSP

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                headers.setdefault("Content-Security-Policy", csp)
            await send(message)

        await self.app(scope, receive, send_with_headers)


_ERROR_BODY = {
    "application/json": {
        "schema": {
            "type": "object",
            "properties": {"detail": {"type": "string"}},
            "required": ["detail"],
        }
    }
}


def document_body_errors(app: FastAPI) -> None:
    """Document the answers to unreadable bodies on every operation that takes one.

    FastAPI answers 400 to a body that is not UTF-8 or nests too deeply for the JSON
    parser, and the body-size middleware 413, before any route runs; neither appears
    in the generated OpenAPI document otherwise.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                if "requestBody" not in operation:
                    continue
                responses = operation.setdefault("responses", {})
                responses.setdefault(
                    "400",
                    {
                        "description": "The body is not UTF-8 JSON, or nests too deeply.",
                        "content": _ERROR_BODY,
                    },
                )
                responses.setdefault(
                    "413",
                    {"description": "The body is larger than allowed.", "content": _ERROR_BODY},
                )
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_security(app: FastAPI, settings: Settings) -> None:
    """Add CORS (when origins are configured) and the security headers to the app,
    and document the 400 and 413 answers to unreadable bodies.

    Call it after every other middleware: the headers must reach all answers,
    including the refusals of the auth and body-size middleware.
    """
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            allow_credentials=False,
            max_age=600,
        )
    docs = {app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url}
    app.add_middleware(SecurityHeadersMiddleware, docs_paths={p for p in docs if p})
    document_body_errors(app)
