"""ASGI middleware: the request body size limit."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodySizeLimitMiddleware", "BodyTooLargeError"]


def _human(n_bytes: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n_bytes >= size:
            return f"{n_bytes / size:g} {unit}"
    return f"{n_bytes} bytes"


class BodyTooLargeError(HTTPException):
    """The request body is over the limit (an HTTPException, so FastAPI passes it on
    unchanged while it reads the body, and its handler answers 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            status_code=413,
            detail=(
                f"request body is larger than the limit of {_human(limit)} "
                "(HYPERPRIOR_MAX_BODY_BYTES): send fewer runs per request"
            ),
        )


class BodySizeLimitMiddleware:
    """Answer 413 to requests whose body is larger than ``max_body_bytes``.

    A declared ``Content-Length`` over the limit is refused before reading anything;
    otherwise (chunked uploads, lying clients) the bytes are counted as they stream in.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    break
                if declared > limit:
                    await self._refuse(send, BodyTooLargeError(limit))
                    return
                break

        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLargeError as error:
            # Normally FastAPI's handler already answered; this covers other apps.
            if started:
                raise
            await self._refuse(send, error)

    @staticmethod
    async def _refuse(send: Send, error: BodyTooLargeError) -> None:
        body = json.dumps({"detail": error.detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
