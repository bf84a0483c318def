"""Exceptions of the SDK: one per kind of answer a caller handles differently.

Every error the API answers with becomes a `HyperpriorError` subclass carrying the
API's own message (``detail``) and status code, e.g.::

    try:
        client.record(runs)
    except ConflictError as error:       # 409: a run id reused with other content
        print(error.run_id, error)
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthError",
    "ConflictError",
    "HyperpriorError",
    "HyperpriorWarning",
    "NotFoundError",
    "RateLimitedError",
    "ServiceUnavailable",
    "ValidationError",
    "error_for_status",
]


class HyperpriorWarning(UserWarning):
    """Something was skipped or could not be recorded, and the caller may want to know."""


class HyperpriorError(Exception):
    """An error answered by the hyperprior API (or the local store in-process).

    Attributes:
        status_code: The HTTP status (None for errors raised before any request).
        detail: The API's ``detail`` (a message, or a list of validation entries).
        message: One readable line made from ``detail``.
    """

    def __init__(self, message: str, *, status_code: int | None = None, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.detail = detail if detail is not None else message


class ValidationError(HyperpriorError, ValueError):
    """422: the request was understood but is invalid (names the field and run)."""


class AuthError(HyperpriorError):
    """401 (no or bad API key) or 403 (the key lacks the scope)."""


class ConflictError(HyperpriorError):
    """409: a run id was reused with other content, or a state conflict.

    Attributes:
        run_id: The conflicting run id, when the API names one.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = 409,
        detail: Any = None,
        run_id: str | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, detail=detail)
        self.run_id = run_id


class NotFoundError(HyperpriorError, KeyError):
    """404: no such run, dataset, surrogate or job."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class RateLimitedError(HyperpriorError):
    """429: too many jobs for this key; ``retry_after`` says when to try again.

    Attributes:
        retry_after: Seconds the API asked to wait, when it said.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = 429,
        detail: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, detail=detail)
        self.retry_after = retry_after


class ServiceUnavailable(HyperpriorError):
    """503 (database down, schema out of date) or the service could not be reached.

    Attributes:
        retry_after: Seconds the API asked to wait, when it said.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = 503,
        detail: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, detail=detail)
        self.retry_after = retry_after


def _describe(detail: Any) -> str:
    """One line from an API ``detail``: a string, or a list of validation entries."""
    if isinstance(detail, list):
        parts = []
        for entry in detail:
            if isinstance(entry, dict):
                parts.append(str(entry.get("msg", entry)))
            else:
                parts.append(str(entry))
        return "; ".join(parts) or "invalid request"
    return str(detail)


def error_for_status(
    status_code: int, body: Any, *, retry_after: float | None = None
) -> HyperpriorError:
    """The exception for an API error answer.

    Args:
        status_code: The HTTP status (>= 400).
        body: The decoded JSON body (``{"detail": ...}``), or the raw text.
        retry_after: The ``Retry-After`` header, in seconds.

    Returns:
        A `HyperpriorError` subclass whose message is the API's.
    """
    detail = body.get("detail", body) if isinstance(body, dict) else body
    message = f"{status_code}: {_describe(detail)}"
    if status_code == 422 or status_code == 400 or status_code == 413:
        return ValidationError(message, status_code=status_code, detail=detail)
    if status_code in (401, 403):
        return AuthError(message, status_code=status_code, detail=detail)
    if status_code == 404:
        return NotFoundError(message, status_code=status_code, detail=detail)
    if status_code == 409:
        run_id = body.get("run_id") if isinstance(body, dict) else None
        return ConflictError(message, status_code=status_code, detail=detail, run_id=run_id)
    if status_code == 429:
        return RateLimitedError(
            message, status_code=status_code, detail=detail, retry_after=retry_after
        )
    if status_code in (502, 503, 504):
        return ServiceUnavailable(
            message, status_code=status_code, detail=detail, retry_after=retry_after
        )
    return HyperpriorError(message, status_code=status_code, detail=detail)
