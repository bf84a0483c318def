"""Errors raised by the store.

Callers never see driver exceptions: the store's transaction helper maps them to
these. The service maps these to HTTP in one exception handler.
"""

from __future__ import annotations

__all__ = [
    "AlreadyExistsError",
    "ConflictError",
    "DatabaseBusyError",
    "DatabaseUnavailableError",
    "DatasetConflictError",
    "InvalidArgumentError",
    "InvalidStateError",
    "NotFoundError",
    "SchemaOutOfDateError",
    "StoreError",
    "UnknownDatasetError",
]


class StoreError(Exception):
    """Base class of every error the store raises."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        # KeyError would otherwise quote the message.
        return self.message


class NotFoundError(StoreError, KeyError):
    """The requested object does not exist (raised by `get_*`; `find_*` returns None)."""


class UnknownDatasetError(NotFoundError):
    """A run refers to a dataset id that does not exist.

    Attributes:
        run_index: Position of the offending run in the ingested batch.
        run_id: Id of the offending run.
        dataset_id: The dataset id that was not found.
    """

    def __init__(self, *, run_index: int, run_id: str, dataset_id: int) -> None:
        super().__init__(
            f"runs[{run_index}] (id {run_id}): dataset_id: unknown dataset {dataset_id}"
        )
        self.run_index = run_index
        self.run_id = run_id
        self.dataset_id = dataset_id


class AlreadyExistsError(StoreError, ValueError):
    """An object with the same unique key already exists."""


class ConflictError(AlreadyExistsError):
    """A run id was reused with different content.

    Attributes:
        run_id: The id that was reused.
    """

    def __init__(self, message: str, *, run_id: str | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id


class DatasetConflictError(AlreadyExistsError):
    """A dataset description names a stored dataset but describes other data.

    Attributes:
        dataset_id: The stored dataset it collides with.
        differences: ``field: stored X, sent Y`` for each value that differs.
    """

    def __init__(self, message: str, *, dataset_id: int, differences: list[str]) -> None:
        super().__init__(message)
        self.dataset_id = dataset_id
        self.differences = list(differences)


class InvalidArgumentError(StoreError, ValueError):
    """An argument is malformed (bad cursor, missing required meta-feature, ...)."""


class InvalidStateError(StoreError, ValueError):
    """The operation is not allowed in the object's current state (e.g. a finished job)."""


class DatabaseUnavailableError(StoreError):
    """The database cannot be reached, or the connection pool is exhausted.

    Attributes:
        retry_after: Suggested number of seconds before retrying.
    """

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DatabaseBusyError(DatabaseUnavailableError):
    """A transaction kept failing on locks, deadlocks or serialization conflicts."""

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message, retry_after=retry_after)


class SchemaOutOfDateError(StoreError):
    """The database schema is not at the migration head this code expects."""
