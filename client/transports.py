"""How `Client` reaches the history: over HTTP, or in this process on the store.

Both transports implement `Transport`, so the client never branches on its mode (as OSS
Vizier's client holds a servicer or a stub behind one interface). They take and return
the API's JSON forms and raise `hyperprior.client.errors` exceptions carrying the API's
(or the store's) message:

* `HttpTransport`: httpx, with the SDK's one retry policy (`RetryPolicy`). Imports
  nothing of the server.
* `InProcessTransport`: the store and the suggestion engine of the server parts,
  imported on first use; without them it says which extra to install.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import random
import time
import uuid
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from hyperprior.client.errors import (
    ConflictError,
    HyperpriorError,
    HyperpriorWarning,
    NotFoundError,
    ServiceUnavailable,
    ValidationError,
    error_for_status,
)
from hyperprior.client.types import jsonable

if TYPE_CHECKING:
    import httpx

    from hyperprior.db.store import Store

__all__ = [
    "DEFAULT_DATABASE_URL",
    "SERVER_EXTRA",
    "HttpTransport",
    "InProcessTransport",
    "RetryPolicy",
    "Transport",
    "server_module",
]

#: The database of the in-process mode when neither an argument nor
#: ``HYPERPRIOR_DATABASE_URL`` names one (the service's own default).
DEFAULT_DATABASE_URL = "sqlite:///./hyperprior.db"
#: What to install when the in-process parts are missing.
SERVER_EXTRA = "pip install 'hyperprior[server]'"
_RETRY_STATUSES = frozenset({502, 503, 504})
_MAX_DELAY = 30.0


def server_module(name: str, what: str = "Client.local()") -> ModuleType:
    """Import a module of the server parts, or say in one line which extra is missing."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if (error.name or "hyperprior").startswith("hyperprior"):
            raise
        raise ModuleNotFoundError(
            f"{what} needs the server parts (no module named {error.name!r}): {SERVER_EXTRA}",
            name=error.name,
        ) from None


# ----------------------------------------------------------------------------- policy


@dataclass
class RetryPolicy:
    """The SDK's one retry policy, shared by both transports.

    Attributes:
        retries: Extra attempts after a connection error or a 502/503/504 (HTTP), or an
            unavailable database (in-process).
        backoff: First delay in seconds; it doubles each attempt (with jitter), and a
            ``Retry-After`` is honoured when longer (capped at 30 s).
        sleep: How to wait (tests replace it).
    """

    retries: int = 5
    backoff: float = 0.5
    sleep: Callable[[float], None] = field(default=time.sleep)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before attempt ``attempt + 1``."""
        delay = min(_MAX_DELAY, self.backoff * 2**attempt) * (0.5 + random.random())
        if retry_after is not None:
            delay = max(delay, min(_MAX_DELAY, retry_after))
        return delay


# ----------------------------------------------------------------------------- protocol


class Transport(Protocol):
    """What `Client` needs from where the history lives.

    Attributes:
        mode: ``"http"`` or ``"local"``.
        url: The service (None in-process).
        store: The store (None over HTTP).
    """

    mode: str
    url: str | None
    store: Store | None

    def suggest(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /v1/suggestions``: the answer's JSON."""
        ...

    def ingest(self, batch: list[dict[str, Any]], counter: list[int]) -> dict[str, Any]:
        """``POST /v1/runs`` for one batch (retried); ``counter[0]`` counts attempts."""
        ...

    def stats(self) -> dict[str, Any]:
        """``GET /v1/stats``."""
        ...

    def datasets_page(
        self, *, name: str | None, task: str | None, cursor: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of ``GET /v1/datasets`` and the next cursor."""
        ...

    def submit_refinement(self, fields: Mapping[str, str], file: tuple[str, bytes, str]) -> Any:
        """``POST /v1/refinements`` (never retried: it would start a second job)."""
        ...

    def get_refinement(self, path: str) -> dict[str, Any]:
        """``GET`` a refinement job by its URL path."""
        ...

    def cancel_refinement(self, refinement_id: str) -> dict[str, Any]:
        """``POST /v1/refinements/{id}/cancel``."""
        ...

    def declare_family(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /v1/families``: the declared family's JSON."""
        ...

    def close(self) -> None:
        """Release what this transport opened."""
        ...


# ----------------------------------------------------------------------------- HTTP


class HttpTransport:
    """The API over HTTP (httpx clients are thread safe).

    Args:
        url: The service; None to use ``http``'s base URL.
        api_key: Sent as ``Authorization: Bearer KEY`` when given.
        timeout: Seconds per request.
        policy: The retry policy.
        http: An ``httpx.Client`` to send with (e.g. a FastAPI ``TestClient``).
    """

    mode = "http"
    store: Store | None = None

    def __init__(
        self,
        url: str | None,
        *,
        api_key: str | None,
        timeout: float,
        policy: RetryPolicy,
        http: httpx.Client | None = None,
    ) -> None:
        import httpx

        self.policy = policy
        self._owns = http is None
        if http is None:
            http = httpx.Client(base_url=str(url).rstrip("/"), timeout=timeout)
        if api_key:
            http.headers.update({"Authorization": f"Bearer {api_key}"})
        self.http = http
        self.url: str | None = str(url).rstrip("/") if url is not None else str(http.base_url)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        files: Any = None,
        data: Any = None,
        retry: bool = True,
        counter: list[int] | None = None,
    ) -> Any:
        """Send one request; retry idempotent ones on connection errors and 502/503/504.

        Returns:
            The decoded JSON answer.

        Raises:
            HyperpriorError: The matching subclass for an error answer; after the last
                retry, `ServiceUnavailable` for connection errors.
        """
        import httpx

        attempts = 1 + (self.policy.retries if retry else 0)
        for attempt in range(attempts):
            if counter is not None:
                counter[0] += 1
            try:
                response = self.http.request(
                    method, path, json=json, params=params, files=files, data=data
                )
            except httpx.TransportError as error:
                if attempt + 1 < attempts:
                    self.policy.sleep(self.policy.delay(attempt, None))
                    continue
                raise ServiceUnavailable(
                    f"cannot reach {self.url}: {error}", status_code=None
                ) from error
            if response.status_code < 400:
                if not response.content:
                    return None
                return response.json()
            retry_after = _retry_after(response.headers.get("retry-after"))
            if response.status_code in _RETRY_STATUSES and attempt + 1 < attempts:
                self.policy.sleep(self.policy.delay(attempt, retry_after))
                continue
            try:
                body: Any = response.json()
            except ValueError:
                body = response.text
            raise error_for_status(response.status_code, body, retry_after=retry_after)
        raise AssertionError("unreachable")  # pragma: no cover

    def suggest(self, body: Mapping[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = self.request("POST", "/v1/suggestions", json=jsonable(body))
        return answer

    def ingest(self, batch: list[dict[str, Any]], counter: list[int]) -> dict[str, Any]:
        answer: dict[str, Any] = self.request(
            "POST", "/v1/runs", json={"runs": batch}, counter=counter
        )
        return answer

    def stats(self) -> dict[str, Any]:
        answer: dict[str, Any] = self.request("GET", "/v1/stats")
        return answer

    def declare_family(self, body: Mapping[str, Any]) -> dict[str, Any]:
        # Idempotent for the same space, so the retry policy applies.
        answer: dict[str, Any] = self.request("POST", "/v1/families", json=jsonable(body))
        return answer

    def datasets_page(
        self, *, name: str | None, task: str | None, cursor: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        params = {"limit": limit, "name": name, "task": task, "cursor": cursor}
        page = self.request("GET", "/v1/datasets", params={k: v for k, v in params.items() if v})
        return list(page["data"]), page.get("next_cursor")

    def submit_refinement(self, fields: Mapping[str, str], file: tuple[str, bytes, str]) -> Any:
        return self.request(
            "POST", "/v1/refinements", data=dict(fields), files={"file": file}, retry=False
        )

    def get_refinement(self, path: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.request("GET", path)
        return answer

    def cancel_refinement(self, refinement_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.request(
            "POST", f"/v1/refinements/{refinement_id}/cancel", retry=False
        )
        return answer

    def close(self) -> None:
        if self._owns:
            self.http.close()


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


# ----------------------------------------------------------------------------- in-process


class InProcessTransport:
    """The API's operations run here on a store (thread safe, as the store is).

    Args:
        store: The store; None to open ``database_url``.
        database_url: See `InProcessTransport.open_store`.
        policy: The retry policy (for an unavailable database).
    """

    mode = "local"
    url: str | None = None

    def __init__(
        self, store: Store | None, *, database_url: str | None, policy: RetryPolicy
    ) -> None:
        self.policy = policy
        self._owns = store is None
        self.store: Store | None = store if store is not None else self.open_store(database_url)
        self._engine: Any = None
        self._lookup: Any = None
        self._know_declared()

    @staticmethod
    def open_store(database_url: str | None) -> Store:
        """The store of ``database_url`` (default: ``$HYPERPRIOR_DATABASE_URL``, else
        ``./hyperprior.db``, which must then exist); a new database named explicitly is
        created and migrated, one at an older schema refused."""
        migrate = server_module("hyperprior.db.migrate")
        make_engine = server_module("hyperprior.db.engine").make_engine
        from hyperprior.db.errors import StoreError
        from hyperprior.db.store import Store

        url = database_url or os.environ.get("HYPERPRIOR_DATABASE_URL")
        if url is None:
            url = DEFAULT_DATABASE_URL
            if not os.path.exists(DEFAULT_DATABASE_URL.removeprefix("sqlite:///")):
                # Connecting would create an empty ./hyperprior.db wherever Python was
                # started, and suggestions from it would be the library default only.
                raise NotFoundError(
                    f"no hyperprior database at ./hyperprior.db (in {os.getcwd()}): run "
                    "`hyperprior db seed` there to create one with the shipped history, or "
                    "pass database_url= (a new database named explicitly is created)",
                    status_code=None,
                )
        engine = make_engine(url)
        try:
            if migrate.current_revision(engine) is None:
                migrate.upgrade(engine)  # a new database: nothing to lose
            migrate.verify_schema(engine)
        except StoreError as error:
            engine.dispose()
            raise translate_store_error(error) from error
        return Store(engine)

    def _store(self) -> Store:
        assert self.store is not None
        return self.store

    def suggest(self, body: Mapping[str, Any]) -> dict[str, Any]:
        suggest = server_module("hyperprior.training.suggest")
        from hyperprior.training.ranking import ranking_note

        # The limits the API's schema puts on these, so both transports refuse the same.
        if not 1 <= int(body["n"]) <= 50:
            raise ValidationError(f"n must be between 1 and 50, got {body['n']}")
        if body.get("seed") is not None and not 0 <= int(body["seed"]) <= 2**63 - 1:
            raise ValidationError(f"seed must be between 0 and 2**63 - 1, got {body['seed']}")
        if self._engine is None:
            self._engine = suggest.SuggestionEngine(self._store(), self._store())
        self._engine.refresh()  # a retrain may have activated a new surrogate meanwhile
        try:
            result = self._engine.suggest(
                suggest.SuggestionRequest(
                    family=body["family"],
                    task=body["task"],
                    meta_features=body["dataset"]["meta_features"],
                    n=int(body["n"]),
                    seed=body.get("seed"),
                    fixed=body.get("fixed"),
                    metric=body.get("metric"),
                    dataset_name=body["dataset"].get("name"),
                )
            )
        except suggest.SuggestionError as error:
            raise ValidationError(str(error), status_code=422) from None
        except Exception as error:
            raise translate_any(error) from error
        surrogate = result.surrogate
        if surrogate is None and self._empty_history():
            # Said loudly, not only in .warnings: a bare default from an empty history
            # looks like an answer. (stacklevel: the caller of Client.suggest.)
            warnings.warn(
                "the local database holds no runs, so this is the library default only: "
                "load the shipped history with `hyperprior db seed --database-url URL`",
                HyperpriorWarning,
                stacklevel=3,
            )
        return {
            "suggestions": [
                {
                    "rank": s.rank,
                    "config": s.config,
                    "predicted_quality": s.predicted_quality,
                    "interval": s.interval,
                    "source": s.source,
                    "explanation": s.explanation,
                    "p_beats_default": s.p_beats_default,
                }
                for s in result.suggestions
            ],
            "surrogate": None
            if surrogate is None
            else {
                "id": surrogate.id,
                "trained_at": surrogate.trained_at,
                "n_runs": surrogate.n_runs,
            },
            "warnings": list(result.warnings),
            "distance": result.distance,
            "distance_threshold": result.distance_threshold,
            "ranked_by": result.ranked_by,
            "ranking": ranking_note(surrogate is not None),
        }

    def _empty_history(self) -> bool:
        try:
            return self._store().stats().runs == 0
        except Exception:  # noqa: BLE001 - only decides whether to add a hint
            return False

    def ingest(self, batch: list[dict[str, Any]], counter: list[int]) -> dict[str, Any]:
        from hyperprior.db.entities import DatasetSpec, NewRun
        from hyperprior.db.errors import DatabaseUnavailableError, StoreError

        ingest = server_module("hyperprior.training.ingest")
        runs = []
        for index, data in enumerate(batch):
            try:
                dataset = data.get("dataset")
                runs.append(
                    NewRun(
                        id=uuid.UUID(str(data["id"])),
                        family=data["family"],
                        config=data["config"],
                        metric=data["metric"],
                        direction=data["direction"],
                        score=data.get("score"),
                        fidelity=float(data["fidelity"]),
                        cost_seconds=float(data["cost_seconds"]),
                        source=data["source"],
                        status=data["status"],
                        error=data.get("error"),
                        dataset=None
                        if dataset is None
                        else DatasetSpec(
                            name=dataset["name"],
                            task=dataset["task"],
                            meta_features=dataset["meta_features"],
                            version=dataset.get("version"),
                            data_sha256=dataset.get("data_sha256"),
                        ),
                        dataset_id=data.get("dataset_id"),
                        metrics=data.get("metrics"),
                    )
                )
            except (KeyError, TypeError, ValueError) as error:
                missing = f"missing field {error}" if isinstance(error, KeyError) else str(error)
                # Indexed in the batch, as the API's entries are: Client.record offsets it.
                raise ValidationError(
                    f"runs[{index}] (id {data.get('id')}): {missing}", status_code=422
                ) from None
        store = self._store()
        try:
            # The same check as POST /v1/runs: refused configs never reach the store.
            flagged = ingest.check_new_runs(
                runs,
                task_of_dataset=lambda i: getattr(store.find_dataset(i), "task", None),
            )
        except ingest.InvalidConfigError as error:
            raise ValidationError(str(error), status_code=422, detail=error.entries) from None
        except StoreError as error:
            raise translate_store_error(error) from error
        for attempt in range(1 + self.policy.retries):
            counter[0] += 1
            try:
                result = store.ingest_runs(runs)
            except DatabaseUnavailableError as error:
                if attempt < self.policy.retries:
                    self.policy.sleep(self.policy.delay(attempt, float(error.retry_after)))
                    continue
                raise translate_store_error(error) from error
            except StoreError as error:
                raise translate_store_error(error) from error
            return {
                "inserted": result.inserted,
                "duplicates": result.duplicates,
                "dataset_ids": list(result.dataset_ids),
                "warnings": flagged,
            }
        raise AssertionError("unreachable")  # pragma: no cover

    def stats(self) -> dict[str, Any]:
        try:
            return dataclasses.asdict(self._store().stats())
        except Exception as error:
            raise translate_any(error) from error

    def datasets_page(
        self, *, name: str | None, task: str | None, cursor: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        try:
            found = self._store().list_datasets(task=task, name=name, cursor=cursor, limit=limit)
        except Exception as error:
            raise translate_any(error) from error
        return [jsonable(dataclasses.asdict(d)) for d in found.data], found.next_cursor

    def submit_refinement(self, fields: Mapping[str, str], file: tuple[str, bytes, str]) -> Any:
        raise ValidationError(
            "local=False needs a service (Client(url)); in-process refinements run locally"
        )

    def get_refinement(self, path: str) -> dict[str, Any]:
        raise ValidationError("service refinements need a service (Client(url))")

    def cancel_refinement(self, refinement_id: str) -> dict[str, Any]:
        raise ValidationError("cancel_refinement needs a service (Client(url))")

    def declare_family(self, body: Mapping[str, Any]) -> dict[str, Any]:
        declared = server_module("hyperprior.training.families.declared")
        self._know_declared()
        try:
            record, _, family = declared.declare(
                self._store(), body["name"], body["space"], body.get("description", "")
            )
        except declared.BuiltInNameError as error:
            raise ConflictError(str(error), status_code=409) from None
        except declared.DeclarationError as error:
            raise ValidationError(str(error), status_code=422) from None
        except Exception as error:
            raise translate_any(error) from error
        space = family.space
        return jsonable(
            {
                "family": family.name,
                "space": space.to_json(),
                "defaults": {t: space.default(t) for t in space.tasks},
                "declared": True,
                "created_at": record.created_at.isoformat(),
            }
        )

    def _know_declared(self) -> None:
        # The families declared in this store, found on first use as the service does.
        if self._lookup is None:
            families = server_module("hyperprior.training.families")
            declared = server_module("hyperprior.training.families.declared")
            self._lookup = declared.store_lookup(self._store())
            families.add_lookup(self._lookup)

    def close(self) -> None:
        if self._lookup is not None:
            server_module("hyperprior.training.families").remove_lookup(self._lookup)
            self._lookup = None
        if self._owns and self.store is not None:
            self.store.engine.dispose()


# ----------------------------------------------------------------------------- errors


def translate_store_error(error: Exception) -> HyperpriorError:
    """The SDK exception for a store error of the in-process mode."""
    from hyperprior.db import errors as db

    message = str(error)
    if isinstance(error, db.NotFoundError):
        return NotFoundError(message, status_code=404)
    if isinstance(error, db.ConflictError):
        return ConflictError(message, status_code=409, run_id=error.run_id)
    if isinstance(error, db.AlreadyExistsError | db.InvalidStateError):
        return ConflictError(message, status_code=409)
    if isinstance(error, db.InvalidArgumentError):
        return ValidationError(message, status_code=422)
    if isinstance(error, db.DatabaseUnavailableError):
        return ServiceUnavailable(message, retry_after=float(error.retry_after))
    if isinstance(error, db.SchemaOutOfDateError):
        return ServiceUnavailable(message)
    return HyperpriorError(message)


def translate_any(error: Exception) -> Exception:
    """`translate_store_error` for store errors; anything else as it is."""
    from hyperprior.db.errors import StoreError

    if isinstance(error, StoreError):
        return translate_store_error(error)
    return error
