"""The Python SDK: describe a dataset, get suggestions, refine them, record runs.

Two modes, one API:

* **HTTP** (``Client("http://host:8000", api_key=...)``): talks to a hyperprior
  service. Meta-features are computed here, so the data never leaves the machine.
* **In-process** (``Client.local(database_url=...)`` or ``Client()`` without a URL):
  no server; the same suggestion policy runs on the local database and its active
  surrogate.

Example::

    from hyperprior.client import Client

    client = Client.local(database_url="sqlite:///hyperprior.db")
    picks = client.suggest(X, y, "lightgbm", n=5)
    model = lightgbm.LGBMClassifier(**picks.best)

Errors answered by the API (or by the local store) become `hyperprior.client.errors`
exceptions carrying the API's message. Recording is idempotent: every run carries a
client-chosen id, assigned before the first attempt, so a retry after a timeout or a
503 can never store a run twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import random
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hyperprior.client.errors import (
    ConflictError,
    HyperpriorError,
    HyperpriorWarning,
    NotFoundError,
    ServiceUnavailable,
    ValidationError,
    error_for_status,
)
from hyperprior.training.metafeatures import infer_task

if TYPE_CHECKING:
    import httpx
    import numpy as np
    import pandas as pd

    from hyperprior.db.store import Store

__all__ = [
    "DEFAULT_DATABASE_URL",
    "MAX_BATCH",
    "Client",
    "Description",
    "RecordResult",
    "Refinement",
    "Suggestion",
    "Suggestions",
    "direction_of",
    "family_params",
    "infer_task",
]

#: The database of the in-process mode when neither an argument nor
#: ``HYPERPRIOR_DATABASE_URL`` names one (the service's own default).
DEFAULT_DATABASE_URL = "sqlite:///./hyperprior.db"
#: Most runs sent in one ``POST /v1/runs``.
MAX_BATCH = 1000
_TASKS = ("binary", "multiclass", "regression")
_RETRY_STATUSES = frozenset({502, 503, 504})
_MAX_DELAY = 30.0
_MINIMIZED = ("loss", "error", "mse", "mae", "mape", "msle", "crossentropy", "hinge", "rmse")


# ----------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Description:
    """A dataset as hyperprior sees it: a name, a task and meta-features.

    Attributes:
        name: The dataset's name in the history.
        task: ``binary``, ``multiclass`` or ``regression``.
        meta_features: Name -> value (counts are ints; unknown ones are None).
    """

    name: str
    task: str
    meta_features: dict[str, float | int | None]

    @property
    def n_rows(self) -> int:
        """Rows with a target."""
        return int(self.meta_features["n_rows"] or 0)

    @property
    def n_features(self) -> int:
        """Feature columns."""
        return int(self.meta_features["n_features"] or 0)

    def to_json(self) -> dict[str, Any]:
        """The API's inline dataset (``RunCreate.dataset``)."""
        return {"name": self.name, "task": self.task, "meta_features": dict(self.meta_features)}


@dataclass(frozen=True)
class Suggestion:
    """One suggested config (see ``POST /v1/suggestions``).

    Attributes:
        rank: 1 is the best.
        config: The estimator's keyword arguments.
        predicted_quality: Expected percentile among configs tried on similar
            datasets (None without a surrogate).
        interval: Its interval (None without a surrogate).
        source: ``surrogate``, ``portfolio`` or ``default``.
        explanation: Nearest datasets and the features that drove the prediction.
        p_beats_default: Calibrated probability that the config scores above the
            library default on this dataset (None for the default itself).
    """

    rank: int
    config: dict[str, Any]
    predicted_quality: float | None
    interval: tuple[float, float] | None
    source: str
    explanation: dict[str, Any] = field(default_factory=dict)
    p_beats_default: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The API's JSON form."""
        out = dataclasses.asdict(self)
        out["interval"] = None if self.interval is None else list(self.interval)
        return out


@dataclass(frozen=True)
class Suggestions(Sequence[Suggestion]):
    """Suggestions, best first; iterate over them or take `best`.

    Attributes:
        suggestions: The suggestions.
        surrogate: Which surrogate scored them (``id``, ``trained_at``, ``n_runs``),
            None at cold start.
        warnings: What the caller should know (cold start, extrapolation...).
        description: The dataset they are for.
        family: The model family.
        distance: Distance of the dataset to the nearest one in the history.
        distance_threshold: Beyond it the surrogate was not validated and the first
            suggestion is the library default.
        ranked_by: The metric they are ranked by (the one asked for when the history
            has a surrogate of it, else the task's primary metric).
        ranking: How they were ranked, in words (a pessimistic bound, so the rank
            order can differ from ``predicted_quality``).
    """

    suggestions: list[Suggestion]
    surrogate: dict[str, Any] | None
    warnings: list[str]
    description: Description
    family: str
    distance: float | None = None
    distance_threshold: float | None = None
    ranked_by: str | None = None
    ranking: str | None = None

    @property
    def best(self) -> dict[str, Any]:
        """The top-ranked config (a copy)."""
        return dict(self.suggestions[0].config)

    @property
    def configs(self) -> list[dict[str, Any]]:
        """Every config, best first (copies)."""
        return [dict(s.config) for s in self.suggestions]

    def __len__(self) -> int:
        return len(self.suggestions)

    def __iter__(self) -> Iterator[Suggestion]:
        return iter(self.suggestions)

    def __getitem__(self, index: Any) -> Any:
        return self.suggestions[index]


@dataclass(frozen=True)
class RecordResult:
    """What `Client.record` did.

    Attributes:
        inserted: Runs stored for the first time.
        duplicates: Runs already stored with the same id and content.
        ids: The id of every run sent, in order (assigned where a run had none).
        requests: Requests made (batches, retries included).
        warnings: Values stored but flagged (valid for the library, outside the
            family's search space, or without effect), one line each naming the run
            (by its index in the list given to `record`) and the field.
    """

    inserted: int
    duplicates: int
    ids: list[str]
    requests: int
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Refinement:
    """The outcome of `Client.refine`.

    Attributes:
        config: The best config measured at full fidelity (None if none was).
        score: Its score in ``metric`` (maximised).
        metric: The primary metric of the task (``roc_auc``, ``accuracy``, ``r2``).
        default_config: The library default, measured as the control.
        default_score: The default's score.
        trials: Every trial (config, fidelity, rung, score, status, seconds).
        notes: What was cut and why.
        raw: The full result as JSON (``RefineResult.to_dict`` or the job's result).
    """

    config: dict[str, Any] | None
    score: float | None
    metric: str
    default_config: dict[str, Any]
    default_score: float | None
    trials: list[dict[str, Any]]
    notes: list[str]
    raw: dict[str, Any]

    @property
    def improvement(self) -> float | None:
        """``score - default_score`` when both were measured."""
        if self.score is None or self.default_score is None:
            return None
        return self.score - self.default_score

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Refinement:
        """Build from a refinement result's JSON."""
        return cls(
            config=None if data.get("config") is None else dict(data["config"]),
            score=data.get("score"),
            metric=str(data.get("metric", "")),
            default_config=dict(data.get("default_config") or {}),
            default_score=data.get("default_score"),
            trials=[dict(t) for t in data.get("trials", [])],
            notes=[str(n) for n in data.get("notes", [])],
            raw=dict(data),
        )


# ----------------------------------------------------------------------------- helpers


def direction_of(metric: str) -> str:
    """``minimize`` for losses and errors (``val_loss``, ``rmse``...), else ``maximize``."""
    name = metric.lower().removeprefix("val_")
    return "minimize" if any(token in name for token in _MINIMIZED) else "maximize"


def family_params(family: str) -> list[str] | None:
    """The hyperparameter names of a built-in family; None for a family hyperprior does
    not know (then every param of a foreign run is kept)."""
    from hyperprior.training.spaces import get_space

    try:
        return list(get_space(family).dim_names)
    except (KeyError, ValueError):
        return None


def _jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars unwrapped, NaN/inf as None, UUIDs as text."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, uuid.UUID):
        return str(value)
    if hasattr(value, "item") and callable(value.item) and type(value).__module__ == "numpy":
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _run_json(run: Any) -> dict[str, Any]:
    """One run as the API's JSON, with the SDK's defaults filled in."""
    if dataclasses.is_dataclass(run) and not isinstance(run, type):
        data: dict[str, Any] = {f.name: getattr(run, f.name) for f in dataclasses.fields(run)}
        dataset = data.get("dataset")
        if dataset is not None and not isinstance(dataset, Mapping):
            data["dataset"] = {
                "name": dataset.name,
                "task": dataset.task,
                "meta_features": dict(dataset.meta_features),
            }
    elif isinstance(run, Mapping):
        data = dict(run)
    else:
        raise TypeError(f"a run must be a mapping or a dataclass, got {type(run).__name__}")
    if isinstance(data.get("dataset"), Description):
        data["dataset"] = data["dataset"].to_json()
    if data.get("dataset") is None:
        data.pop("dataset", None)
    if data.get("dataset_id") is None:
        data.pop("dataset_id", None)
    if data.get("id") is None:
        data["id"] = uuid.uuid4()
    data.setdefault("status", "ok")
    data.setdefault("fidelity", 1.0)
    data.setdefault("cost_seconds", 0.0)
    data.setdefault("source", "user")
    if data.get("error") is None:
        data.pop("error", None)
    if data.get("metrics") is None:
        data.pop("metrics", None)
    out: dict[str, Any] = _jsonable(data)
    return out


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


# ----------------------------------------------------------------------------- client


class Client:
    """The hyperprior SDK, over HTTP or in-process.

    Thread safety: one client may be shared by threads in HTTP mode (httpx clients
    are thread safe) and in-process mode (the store is).

    Args:
        url: The service, e.g. ``http://127.0.0.1:8000``. None: in-process mode on
            ``database_url`` (or ``store``).
        api_key: Sent as ``Authorization: Bearer KEY`` (default:
            ``$HYPERPRIOR_API_KEY``).
        store: In-process mode on this store (tests, embedding).
        database_url: In-process mode on this database (default:
            ``$HYPERPRIOR_DATABASE_URL``, else ``sqlite:///./hyperprior.db``).
        timeout: Seconds per HTTP request.
        retries: Extra attempts of a request that met a connection error or a
            502/503/504 (only idempotent requests are retried).
        backoff: First retry delay in seconds; it doubles each time (with jitter),
            and a ``Retry-After`` from the API is honoured when longer.
        http: An ``httpx.Client`` to send requests with (e.g. a FastAPI
            ``TestClient``); its base URL is used when ``url`` is None.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        store: Store | None = None,
        database_url: str | None = None,
        timeout: float = 60.0,
        retries: int = 5,
        backoff: float = 0.5,
        http: httpx.Client | None = None,
    ) -> None:
        if url is not None and (store is not None or database_url is not None):
            raise ValueError("give either url (HTTP mode) or store/database_url (in-process)")
        self.retries = max(0, int(retries))
        self.backoff = max(0.0, float(backoff))
        self.timeout = timeout
        self._sleep: Callable[[float], None] = time.sleep
        self._engine_cache: Any = None
        self._owns_http = False
        self._owns_engine = False
        self._http: httpx.Client | None = None
        self._store: Store | None = None
        self.url: str | None = None
        if url is not None or http is not None:
            import httpx

            key = api_key if api_key is not None else os.environ.get("HYPERPRIOR_API_KEY")
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            if http is None:
                http = httpx.Client(base_url=str(url).rstrip("/"), timeout=timeout)
                self._owns_http = True
            http.headers.update(headers)
            self._http = http
            self.url = str(url).rstrip("/") if url is not None else str(http.base_url)
            return
        if store is None:
            store = self._open_store(database_url)
            self._owns_engine = True
        self._store = store

    # -- construction -------------------------------------------------------------------

    @classmethod
    def local(cls, database_url: str | None = None, *, store: Store | None = None) -> Client:
        """An in-process client: no server, the local database and its surrogates.

        A database named explicitly that has no schema yet (a new SQLite file) is created
        and migrated; one at an older schema is refused with the command that upgrades
        it. Without a URL, ``./hyperprior.db`` must exist (``hyperprior db seed``
        creates it): an empty database made by accident would only ever suggest the
        library default.

        Args:
            database_url: SQLAlchemy URL (default: ``$HYPERPRIOR_DATABASE_URL``, else
                ``sqlite:///./hyperprior.db``).
            store: Use this store instead.

        Raises:
            NotFoundError: No URL given and no ``./hyperprior.db``.
        """
        return cls(store=store, database_url=None if store is not None else database_url)

    @staticmethod
    def _open_store(database_url: str | None) -> Store:
        from hyperprior.db import migrate
        from hyperprior.db.engine import make_engine
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
            raise _translate_store_error(error) from error
        return Store(engine)

    @property
    def mode(self) -> str:
        """``"http"`` or ``"local"``."""
        return "http" if self._http is not None else "local"

    @property
    def store(self) -> Store | None:
        """The store of the in-process mode (None over HTTP)."""
        return self._store

    def close(self) -> None:
        """Release the HTTP connection pool or the database engine this client opened."""
        if self._http is not None and self._owns_http:
            self._http.close()
        if self._store is not None and self._owns_engine:
            self._store.engine.dispose()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self.url if self._http is not None else "in-process"
        return f"Client({where})"

    # -- HTTP plumbing ------------------------------------------------------------------

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        delay = min(_MAX_DELAY, self.backoff * 2**attempt) * (0.5 + random.random())
        if retry_after is not None:
            delay = max(delay, min(_MAX_DELAY, retry_after))
        return delay

    def _request(
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

        assert self._http is not None
        attempts = 1 + (self.retries if retry else 0)
        for attempt in range(attempts):
            if counter is not None:
                counter[0] += 1
            try:
                response = self._http.request(
                    method, path, json=json, params=params, files=files, data=data
                )
            except httpx.TransportError as error:
                if attempt + 1 < attempts:
                    self._sleep(self._delay(attempt, None))
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
                self._sleep(self._delay(attempt, retry_after))
                continue
            try:
                body: Any = response.json()
            except ValueError:
                body = response.text
            raise error_for_status(response.status_code, body, retry_after=retry_after)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- describe -----------------------------------------------------------------------

    def describe(
        self,
        X: pd.DataFrame | np.ndarray,
        y: pd.Series | np.ndarray | Sequence[Any],
        task: str | None = None,
        *,
        name: str | None = None,
        landmarkers: bool = True,
        seed: int = 0,
    ) -> Description:
        """Meta-features of a dataset, computed locally (the data never leaves).

        Args:
            X: Features (a DataFrame, or an array: columns are then numbered).
            y: Target aligned with ``X``.
            task: ``binary``, ``multiclass`` or ``regression``; inferred from ``y``
                when omitted (see `infer_task`).
            name: The dataset's name in the history (default: ``y``'s name, else
                ``"dataset"``).
            landmarkers: Also fit the cheap landmark models (a second or so).
            seed: Seeds the subsamples.

        Raises:
            ValidationError: An unknown task, no rows or columns, a target that does
                not fit the task.
        """
        import pandas as pd

        from hyperprior.training.metafeatures import compute_metafeatures

        frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(X)
        # A Series keeps its name (the default dataset name); arrays and lists become one.
        target = y if isinstance(y, pd.Series) else pd.Series(list(y))
        if task is None:
            task = infer_task(target)
        if task not in _TASKS:
            raise ValidationError(f"task must be one of {', '.join(_TASKS)}, got {task!r}")
        try:
            meta = compute_metafeatures(frame, target, task, seed=seed, landmarkers=landmarkers)
        except (TypeError, ValueError) as error:
            raise ValidationError(f"cannot describe the data: {error}") from None
        clean: dict[str, float | int | None] = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in meta.items()
        }
        if name is None:
            name = str(target.name) if isinstance(target.name, str) and target.name else "dataset"
        return Description(name=name, task=task, meta_features=clean)

    def _description(self, X: Any, y: Any, task: str | None, name: str | None) -> Description:
        if isinstance(X, Description):
            if task is not None and task != X.task:
                raise ValidationError(f"the description is for a {X.task} task, not {task}")
            return X if name is None else dataclasses.replace(X, name=name)
        if y is None:
            raise ValidationError("y is required with X (or pass a Description as X)")
        return self.describe(X, y, task, name=name)

    # -- suggest ------------------------------------------------------------------------

    def suggest(
        self,
        X: pd.DataFrame | np.ndarray | Description,
        y: pd.Series | np.ndarray | Sequence[Any] | None,
        family: str,
        n: int = 5,
        *,
        task: str | None = None,
        name: str | None = None,
        seed: int | None = None,
        fixed: Mapping[str, Any] | None = None,
        metric: str | None = None,
    ) -> Suggestions:
        """Configs the surrogate expects to do well on this data, best first.

        Args:
            X: Features, or a `Description` from `describe` (then ``y`` is ignored).
            y: Target aligned with ``X``.
            family: ``lightgbm``, ``random_forest``, ``linear`` or ``keras_mlp``.
            n: How many (1..50).
            task: The task (inferred from ``y`` when omitted).
            name: The dataset's name (informational).
            seed: Same seed, same answer.
            fixed: Parameters forced on every suggestion.
            metric: The metric you will judge by (warns when the history ranks by
                another).

        Raises:
            ValidationError: An unknown family or parameter, impossible meta-features.
        """
        description = self._description(X, y, task, name)
        body: dict[str, Any] = {
            "family": family,
            "task": description.task,
            "dataset": {"name": description.name, "meta_features": description.meta_features},
            "n": int(n),
        }
        if seed is not None:
            body["seed"] = int(seed)
        if fixed:
            body["fixed"] = dict(fixed)
        if metric is not None:
            body["metric"] = metric
        if self._http is not None:
            answer = self._request("POST", "/v1/suggestions", json=_jsonable(body))
        else:
            answer = self._suggest_locally(body)
        return Suggestions(
            suggestions=[
                Suggestion(
                    rank=int(s["rank"]),
                    config=dict(s["config"]),
                    predicted_quality=s.get("predicted_quality"),
                    interval=None if s.get("interval") is None else tuple(s["interval"]),
                    source=str(s["source"]),
                    explanation=dict(s.get("explanation") or {}),
                    p_beats_default=s.get("p_beats_default"),
                )
                for s in answer["suggestions"]
            ],
            surrogate=answer.get("surrogate"),
            warnings=list(answer.get("warnings", [])),
            description=description,
            family=family,
            distance=answer.get("distance"),
            distance_threshold=answer.get("distance_threshold"),
            ranked_by=answer.get("ranked_by"),
            ranking=answer.get("ranking"),
        )

    def _suggestion_engine(self) -> Any:
        if self._engine_cache is None:
            from hyperprior.training.suggest import SuggestionEngine

            self._engine_cache = SuggestionEngine(self._store, self._store)  # type: ignore[arg-type]
        return self._engine_cache

    def _suggest_locally(self, body: Mapping[str, Any]) -> dict[str, Any]:
        from hyperprior.training.ranking import ranking_note
        from hyperprior.training.suggest import SuggestionError, SuggestionRequest

        if not 1 <= int(body["n"]) <= 50:
            raise ValidationError(f"n must be between 1 and 50, got {body['n']}")
        engine = self._suggestion_engine()
        engine.refresh()  # a retrain may have activated a new surrogate meanwhile
        try:
            result = engine.suggest(
                SuggestionRequest(
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
        except SuggestionError as error:
            raise ValidationError(str(error), status_code=422) from None
        except Exception as error:
            raise _translate_any(error) from error
        surrogate = result.surrogate
        if surrogate is None and self._empty_history():
            # Said loudly, not only in .warnings: a bare default from an empty history
            # looks like an answer.
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
            return self._store.stats().runs == 0  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - only decides whether to add a hint
            return False

    # -- record -------------------------------------------------------------------------

    def record(self, runs: Iterable[Any], *, batch_size: int = MAX_BATCH) -> RecordResult:
        """Store runs in the history; safe to repeat.

        Each run is a mapping in the API's form (``POST /v1/runs``: ``id``,
        ``dataset`` (or a `Description`) or ``dataset_id``, ``family``, ``config``,
        ``metric``, ``direction``, ``score``, ``fidelity``, ``cost_seconds``,
        ``source``, ``status``, ``error``, ``metrics``: every other metric measured,
        by name) or a dataclass with those fields (the
        ``NewRun`` of a refinement). Missing ``id`` get a random UUID *before* the
        first attempt; ``status`` defaults to ``ok``, ``fidelity`` to 1,
        ``cost_seconds`` to 0 and ``source`` to ``user``.

        Runs go in batches of at most ``batch_size`` (max 1,000) per request; a batch
        that meets a connection error or a 502/503/504 is sent again with the same ids,
        so it is stored once whatever happened to the first attempt.

        Returns:
            Counts of new and already stored runs, and the ids.

        Raises:
            ValidationError: A run is invalid (the message names its index and field);
                its batch is not stored (earlier batches are).
            ConflictError: A run id was already stored with other content.
            ServiceUnavailable: The service or database stayed down through the retries.
        """
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH}, got {batch_size}")
        payload = [_run_json(run) for run in runs]
        inserted = duplicates = 0
        flagged: list[str] = []
        counter = [0]
        for start in range(0, len(payload), batch_size):
            batch = payload[start : start + batch_size]
            if self._http is not None:
                try:
                    answer = self._request(
                        "POST", "/v1/runs", json={"runs": batch}, counter=counter
                    )
                except ValidationError as error:
                    raise _offset_validation(error, start) from None
            else:
                answer = self._ingest_locally(batch, start, counter)
            inserted += int(answer["inserted"])
            duplicates += int(answer["duplicates"])
            flagged += [_offset_message(w, start) for w in answer.get("warnings") or []]
        return RecordResult(
            inserted=inserted,
            duplicates=duplicates,
            ids=[str(r["id"]) for r in payload],
            requests=counter[0],
            warnings=flagged,
        )

    def _ingest_locally(
        self, batch: list[dict[str, Any]], offset: int, counter: list[int]
    ) -> dict[str, Any]:
        from hyperprior.db.entities import DatasetSpec, NewRun
        from hyperprior.db.errors import DatabaseUnavailableError, StoreError
        from hyperprior.training.ingest import InvalidConfigError, check_new_runs

        runs = []
        for index, data in enumerate(batch, start=offset):
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
                        ),
                        dataset_id=data.get("dataset_id"),
                        metrics=data.get("metrics"),
                    )
                )
            except (KeyError, TypeError, ValueError) as error:
                missing = f"missing field {error}" if isinstance(error, KeyError) else str(error)
                raise ValidationError(
                    f"runs[{index}] (id {data.get('id')}): {missing}", status_code=422
                ) from None
        store = self._store
        assert store is not None
        try:
            # The same check as POST /v1/runs: refused configs never reach the store.
            flagged = check_new_runs(
                runs,
                task_of_dataset=lambda i: getattr(store.find_dataset(i), "task", None),
            )
        except InvalidConfigError as error:
            invalid = ValidationError(str(error), status_code=422, detail=error.entries)
            raise _offset_validation(invalid, offset) from None
        except StoreError as error:
            raise _translate_store_error(error) from error
        for attempt in range(1 + self.retries):
            counter[0] += 1
            try:
                result = store.ingest_runs(runs)
            except DatabaseUnavailableError as error:
                if attempt < self.retries:
                    self._sleep(self._delay(attempt, float(error.retry_after)))
                    continue
                raise _translate_store_error(error) from error
            except StoreError as error:
                raise _translate_store_error(error) from error
            return {
                "inserted": result.inserted,
                "duplicates": result.duplicates,
                "warnings": flagged,
            }
        raise AssertionError("unreachable")  # pragma: no cover

    # -- refine -------------------------------------------------------------------------

    def refine(
        self,
        X: pd.DataFrame,
        y: pd.Series | np.ndarray | Sequence[Any],
        family: str,
        budget: float,
        local: bool = True,
        *,
        n: int = 8,
        task: str | None = None,
        name: str | None = None,
        seed: int = 0,
        configs: Sequence[Mapping[str, Any]] = (),
        folds: int = 5,
        workers: int = 0,
        record: bool = True,
        progress: Callable[[dict[str, Any]], None] | None = None,
        poll_interval: float = 1.0,
    ) -> Refinement:
        """Verify the suggestions on your data by successive halving, within a budget.

        Local (default): the trials run on this machine (``hyperprior.training.refine``) and every
        measured trial is recorded as a ``verification`` run through `record` (to the
        service, or the local database in-process), so the next retrain learns from it.
        Remote (``local=False``, HTTP only): the data is uploaded as CSV to
        ``POST /v1/refinements`` and the job is polled until it ends.

        Args:
            X: Features.
            y: Target aligned with ``X``.
            family: The model family.
            budget: Wall-clock seconds for the trials.
            local: Run here (True) or as a service job (False).
            n: Suggestions to verify (the library default is added as the control).
            task: The task (inferred from ``y`` when omitted).
            name: The dataset's name in the history.
            seed: Seeds the suggestions, folds and subsamples.
            configs: Your own configs to verify alongside.
            folds: Cross-validation folds of every trial (local only).
            workers: Trial processes (local only): 0 runs trials in this process
                (fast to start, no time or memory limit per trial); N > 0 isolates
                them in N worker processes.
            record: Record the measured trials (local only; the service always does).
            progress: Called with a progress dict after each trial (local) or poll.
            poll_interval: Seconds between polls (remote).

        Raises:
            ValidationError: Invalid data or options.
            HyperpriorError: The remote job failed (its error is the message).
        """
        if not budget > 0:
            raise ValidationError(f"budget must be positive, got {budget}")
        description = self._description(X, y, task, name)
        if not local:
            return self._refine_remote(
                X,
                y,
                family,
                budget,
                description,
                n=n,
                seed=seed,
                configs=configs,
                progress=progress,
                poll_interval=poll_interval,
            )
        import pandas as pd

        from hyperprior.db.entities import DatasetSpec
        from hyperprior.training.refine import (
            Candidate,
            RefineSettings,
            candidates_from_suggestions,
            make_refine_executor,
        )
        from hyperprior.training.refine import refine as run_refinement
        from hyperprior.training.trials import TrialData

        suggestions = self.suggest(description, None, family, n=n, seed=seed)
        # Your own configs first: the budget drops the lowest-ranked suggestions, not them.
        candidates: list[Candidate | Mapping[str, Any]] = [
            *[Candidate(config=dict(c), origin="user") for c in configs],
            *candidates_from_suggestions([s.to_json() for s in suggestions]),
        ]
        frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(X)
        target = y if isinstance(y, pd.Series) else pd.Series(y)
        data = TrialData(
            X=frame.reset_index(drop=True),
            y=target.reset_index(drop=True),
            task=description.task,
            name=description.name,
        )
        executor = make_refine_executor(family, workers=workers)
        try:
            result = run_refinement(
                data,
                family,
                candidates,
                budget_seconds=float(budget),
                executor=executor,
                settings=RefineSettings(folds=folds),
                seed=seed,
                dataset=DatasetSpec(
                    name=description.name,
                    task=description.task,
                    meta_features=description.meta_features,
                ),
                record=self.record if record else None,
                progress=None if progress is None else (lambda p: progress(p.to_dict())),
            )
        except ValueError as error:
            raise ValidationError(str(error)) from None
        finally:
            close = getattr(executor, "close", None)
            if callable(close):
                close()
        return Refinement.from_json(_jsonable(result.to_dict()))

    def _refine_remote(
        self,
        X: Any,
        y: Any,
        family: str,
        budget: float,
        description: Description,
        *,
        n: int,
        seed: int,
        configs: Sequence[Mapping[str, Any]],
        progress: Callable[[dict[str, Any]], None] | None,
        poll_interval: float,
    ) -> Refinement:
        import json

        import pandas as pd

        if self._http is None:
            raise ValidationError(
                "local=False needs a service (Client(url)); in-process refinements run locally"
            )
        frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(X)
        target = str(getattr(y, "name", None) or "target")
        if target in frame.columns:
            raise ValidationError(f"the target's name {target!r} is also a feature column")
        table = frame.assign(**{target: list(y)})
        buffer = io.BytesIO()
        table.to_csv(buffer, index=False)
        fields = {
            "target": target,
            "family": family,
            "task": description.task,
            "budget_seconds": str(float(budget)),
            "n_candidates": str(int(n)),
            "seed": str(int(seed)),
            "name": description.name,
        }
        if configs:
            fields["configs"] = json.dumps([_jsonable(dict(c)) for c in configs])
        accepted = self._request(
            "POST",
            "/v1/refinements",
            data=fields,
            files={
                "file": (f"{description.name.replace('/', '_')}.csv", buffer.getvalue(), "text/csv")
            },
            retry=False,  # a second POST would start a second job
        )
        job_url = str(accepted["url"])
        path = job_url if job_url.startswith("/") else "/" + job_url.split("/", 3)[-1]
        deadline = time.monotonic() + budget * 3 + 600
        try:
            while True:
                job = self._request("GET", path)
                if progress is not None:
                    progress(dict(job.get("progress") or {}))
                if job["status"] == "succeeded":
                    return Refinement.from_json(job["result"] or {})
                if job["status"] in ("failed", "cancelled"):
                    raise HyperpriorError(
                        f"refinement {job['id']} {job['status']}: {job.get('error')}"
                    )
                if time.monotonic() > deadline:
                    raise ServiceUnavailable(
                        f"refinement {job['id']} still {job['status']} after "
                        f"{budget * 3 + 600:.0f} s",
                        status_code=None,
                    )
                self._sleep(poll_interval)
        except KeyboardInterrupt:
            # Ctrl-C here must not leave the job burning the service's CPU.
            with contextlib.suppress(HyperpriorError):
                self.cancel_refinement(str(accepted["id"]))
            raise

    def cancel_refinement(self, refinement_id: str) -> dict[str, Any]:
        """Cancel a queued or running service refinement (HTTP only).

        The trials it already measured stay in the history.

        Returns:
            The job as ``GET /v1/refinements/{id}`` shows it, now ``cancelled``.

        Raises:
            NotFoundError: No such refinement.
            ConflictError: It already finished.
            AuthError: Another key submitted it (use that key or an admin key).
        """
        if self._http is None:
            raise ValidationError("cancel_refinement needs a service (Client(url))")
        answer: dict[str, Any] = self._request(
            "POST", f"/v1/refinements/{refinement_id}/cancel", retry=False
        )
        return answer

    # -- reading ------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counts over the history (runs, datasets, by family, task, source, status)."""
        if self._http is not None:
            answer: dict[str, Any] = self._request("GET", "/v1/stats")
            return answer
        try:
            return dataclasses.asdict(self._store.stats())  # type: ignore[union-attr]
        except Exception as error:
            raise _translate_any(error) from error

    def datasets(self, *, name: str | None = None, task: str | None = None) -> list[dict[str, Any]]:
        """Stored datasets (all pages), optionally only those of a name and task."""
        out: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            if self._http is not None:
                params = {"limit": 1000, "name": name, "task": task, "cursor": cursor}
                page = self._request(
                    "GET", "/v1/datasets", params={k: v for k, v in params.items() if v}
                )
                out.extend(page["data"])
                cursor = page.get("next_cursor")
            else:
                try:
                    found = self._store.list_datasets(  # type: ignore[union-attr]
                        task=task, name=name, cursor=cursor, limit=1000
                    )
                except Exception as error:
                    raise _translate_any(error) from error
                out.extend(_jsonable(dataclasses.asdict(d)) for d in found.data)
                cursor = found.next_cursor
            if not cursor:
                return out


# ----------------------------------------------------------------------------- errors


def _offset_validation(error: ValidationError, offset: int) -> ValidationError:
    """Name runs by their index in the caller's list, not in the batch."""
    if offset == 0 or not isinstance(error.detail, list):
        return error
    import re

    entries = []
    for entry in error.detail:
        if isinstance(entry, dict) and isinstance(entry.get("run_index"), int):
            entry = dict(entry)
            local_index = entry["run_index"]
            entry["run_index"] = local_index + offset
            entry["msg"] = re.sub(
                rf"^runs\[{local_index}\]", f"runs[{local_index + offset}]", str(entry["msg"])
            )
        entries.append(entry)
    return type(error)(
        f"{error.status_code}: "
        + "; ".join(str(e.get("msg", e)) if isinstance(e, dict) else str(e) for e in entries),
        status_code=error.status_code,
        detail=entries,
    )


def _offset_message(message: str, offset: int) -> str:
    """A ``runs[i] ...`` message of one batch, with ``i`` counted in the caller's list."""
    import re

    if offset == 0:
        return message
    return re.sub(r"^runs\[(\d+)\]", lambda m: f"runs[{int(m.group(1)) + offset}]", message)


def _translate_store_error(error: Exception) -> HyperpriorError:
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


def _translate_any(error: Exception) -> Exception:
    from hyperprior.db.errors import StoreError

    if isinstance(error, StoreError):
        return _translate_store_error(error)
    return error
