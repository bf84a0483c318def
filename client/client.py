"""`Client`: describe a dataset, get suggestions, refine them, record runs.

Two modes, one API:

* **HTTP** (``Client("http://host:8000", api_key=...)``): talks to a hyperprior
  service. Meta-features are computed here, so the data never leaves the machine.
  Imports nothing of the server (no FastAPI, SQLAlchemy, LightGBM or TensorFlow).
* **In-process** (``Client.local(database_url=...)`` or ``Client()`` without a URL):
  no server; the same suggestion policy runs on the local database and its active
  surrogate. Needs the server parts: ``pip install 'hyperprior[server]'``.

The client holds one `hyperprior.client.transports.Transport` for its mode and never
branches on it. Errors answered by the API (or by the local store) become
`hyperprior.client.errors` exceptions carrying the API's message. Recording is
idempotent: every run carries a client-chosen id, assigned before the first attempt, so
a retry after a timeout or a 503 can never store a run twice.

Example::

    from hyperprior import Client

    client = Client.local(database_url="sqlite:///hyperprior.db")
    picks = client.suggest(X, y, "lightgbm", n=5)
    model = lightgbm.LGBMClassifier(**picks.best)
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hyperprior.client.errors import HyperpriorError, ServiceUnavailable, ValidationError
from hyperprior.client.transports import (
    HttpTransport,
    InProcessTransport,
    RetryPolicy,
    Transport,
    server_module,
)
from hyperprior.client.types import (
    Description,
    RecordResult,
    Refinement,
    Suggestion,
    Suggestions,
    jsonable,
    run_json,
)
from hyperprior.training.metafeatures import infer_task
from hyperprior.vocabulary import TASKS, finite_values

if TYPE_CHECKING:
    import httpx
    import numpy as np
    import pandas as pd

    from hyperprior.db.store import Store

__all__ = ["MAX_BATCH", "Client", "data_sha256", "infer_task"]

#: Most runs sent in one ``POST /v1/runs``.
MAX_BATCH = 1000


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
        self.timeout = timeout
        self._policy = RetryPolicy(retries=max(0, int(retries)), backoff=max(0.0, float(backoff)))
        self._transport: Transport
        if url is not None or http is not None:
            key = api_key if api_key is not None else os.environ.get("HYPERPRIOR_API_KEY")
            self._transport = HttpTransport(
                url, api_key=key, timeout=timeout, policy=self._policy, http=http
            )
        else:
            self._transport = InProcessTransport(
                store, database_url=database_url, policy=self._policy
            )

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
            ModuleNotFoundError: The server parts are not installed (the message says
                ``pip install 'hyperprior[server]'``).
        """
        return cls(store=store, database_url=None if store is not None else database_url)

    @property
    def retries(self) -> int:
        """Extra attempts after a connection error, a 502/503/504 or a database outage."""
        return self._policy.retries

    @retries.setter
    def retries(self, value: int) -> None:
        self._policy.retries = max(0, int(value))

    @property
    def backoff(self) -> float:
        """First retry delay in seconds."""
        return self._policy.backoff

    @backoff.setter
    def backoff(self, value: float) -> None:
        self._policy.backoff = max(0.0, float(value))

    @property
    def _sleep(self) -> Callable[[float], None]:
        # Tests replace it to retry without waiting.
        return self._policy.sleep

    @_sleep.setter
    def _sleep(self, value: Callable[[float], None]) -> None:
        self._policy.sleep = value

    @property
    def mode(self) -> str:
        """``"http"`` or ``"local"``."""
        return self._transport.mode

    @property
    def url(self) -> str | None:
        """The service (None in-process)."""
        return self._transport.url

    @property
    def store(self) -> Store | None:
        """The store of the in-process mode (None over HTTP)."""
        return self._transport.store

    def close(self) -> None:
        """Release the HTTP connection pool or the database engine this client opened."""
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url or 'in-process'})"

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
        version: int | None = None,
    ) -> Description:
        """Meta-features of a dataset, computed locally (the data never leaves).

        The description carries a sha256 of the data (``data_sha256``: rows in any
        order, numbers as float64, column names ignored), so that the history tells
        other data of the same shape and name apart from this one.

        Args:
            X: Features (a DataFrame, or an array: columns are then numbered).
            y: Target aligned with ``X``.
            task: ``binary``, ``multiclass`` or ``regression``; inferred from ``y``
                when omitted (see `infer_task`).
            name: The dataset's name in the history (default: ``y``'s name, else
                ``"dataset"``).
            landmarkers: Also fit the cheap landmark models (a second or so).
            seed: Seeds the subsamples.
            version: The stored version of the name to record runs on (or create);
                default: the one holding this data, else 1.

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
        if task not in TASKS:
            raise ValidationError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
        try:
            meta = compute_metafeatures(frame, target, task, seed=seed, landmarkers=landmarkers)
        except (TypeError, ValueError) as error:
            raise ValidationError(f"cannot describe the data: {error}") from None
        if name is None:
            name = str(target.name) if isinstance(target.name, str) and target.name else "dataset"
        return Description(
            name=name,
            task=task,
            meta_features=finite_values(meta),
            data_sha256=data_sha256(frame, target),
            version=version,
        )

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
        answer = self._transport.suggest(body)
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
            Counts of new and already stored runs, the run ids, and the ids of their
            datasets (``dataset_id`` when there is one) to pass instead of a
            description next time.

        Raises:
            ValidationError: A run is invalid (the message names its index and field);
                its batch is not stored (earlier batches are).
            ConflictError: A run id was already stored with other content, or a
                description names a stored dataset with other data (the message says
                what differs and which ``version`` to ask for instead).
            ServiceUnavailable: The service or database stayed down through the retries.
        """
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH}, got {batch_size}")
        payload = [run_json(run) for run in runs]
        inserted = duplicates = 0
        flagged: list[str] = []
        dataset_ids: dict[int, None] = {}  # first appearance order
        counter = [0]
        for start in range(0, len(payload), batch_size):
            try:
                answer = self._transport.ingest(payload[start : start + batch_size], counter)
            except ValidationError as error:
                raise _offset_validation(error, start) from None
            inserted += int(answer["inserted"])
            duplicates += int(answer["duplicates"])
            flagged += [_offset_message(w, start) for w in answer.get("warnings") or []]
            dataset_ids.update(dict.fromkeys(int(i) for i in answer.get("dataset_ids") or []))
        return RecordResult(
            inserted=inserted,
            duplicates=duplicates,
            ids=[str(r["id"]) for r in payload],
            requests=counter[0],
            warnings=flagged,
            dataset_ids=list(dataset_ids),
        )

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
        suggestions: Suggestions | None = None,
        fill: bool = False,
        folds: int = 5,
        workers: int | None = 0,
        memory_limit_mb: float | None = None,
        record: bool = True,
        progress: Callable[[dict[str, Any]], None] | None = None,
        poll_interval: float = 1.0,
    ) -> Refinement:
        """Verify the suggestions on your data by successive halving, within a budget.

        Local (default): the trials run on this machine (``hyperprior.training.refine``)
        and every measured trial is recorded as a ``verification`` run through `record`
        (to the service, or the local database in-process), so the next retrain learns
        from it. Remote (``local=False``, HTTP only): the data is uploaded as CSV to
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
            suggestions: Verify these (from `suggest`, for this data) instead of asking
                for new ones; the recorded runs describe the data by their description
                (local only).
            fill: Top the suggestions up to ``n`` with a sample of the family's space
                (a cold start may suggest only the default; local only).
            folds: Cross-validation folds of every trial (local only).
            workers: Trial processes (local only): 0 runs trials in this process
                (fast to start, no time or memory limit per trial); N > 0 isolates
                them in N worker processes; None, one per CPU.
            memory_limit_mb: Resident memory per trial process (local, workers != 0).
            record: Record the measured trials (local only; the service always does).
            progress: Called with a progress dict after each trial (local) or poll.
            poll_interval: Seconds between polls (remote).

        Raises:
            ValidationError: Invalid data or options.
            HyperpriorError: The remote job failed (its error is the message).
        """
        if not budget > 0:
            raise ValidationError(f"budget must be positive, got {budget}")
        if suggestions is not None:
            description = self._description(suggestions.description, None, task, name)
        else:
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

        refine = server_module("hyperprior.training.refine", "Client.refine(local=True)")
        from hyperprior.db.entities import DatasetSpec
        from hyperprior.training.trials import TrialData

        if suggestions is None:
            suggestions = self.suggest(description, None, family, n=n, seed=seed)
        suggested = refine.candidates_from_suggestions([s.to_json() for s in suggestions])
        if fill:
            suggested = refine.fill_candidates(suggested, family, description.task, n, seed)
        # Your own configs first: the budget drops the lowest-ranked suggestions, not them.
        candidates = [
            *[refine.Candidate(config=dict(c), origin="user") for c in configs],
            *suggested,
        ]
        frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(X)
        target = y if isinstance(y, pd.Series) else pd.Series(y)
        data = TrialData(
            X=frame.reset_index(drop=True),
            y=target.reset_index(drop=True),
            task=description.task,
            name=description.name,
        )
        executor = refine.make_refine_executor(
            family, workers=workers, memory_limit_mb=memory_limit_mb
        )
        try:
            result = refine.refine(
                data,
                family,
                candidates,
                budget_seconds=float(budget),
                executor=executor,
                settings=refine.RefineSettings(folds=folds),
                seed=seed,
                dataset=DatasetSpec(
                    name=description.name,
                    task=description.task,
                    meta_features=description.meta_features,
                    version=description.version,
                    data_sha256=description.data_sha256,
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
        return Refinement.from_json(jsonable(result.to_dict()))

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
        import pandas as pd

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
            fields["configs"] = json.dumps([jsonable(dict(c)) for c in configs])
        file_name = f"{description.name.replace('/', '_')}.csv"
        accepted = self._transport.submit_refinement(
            fields, (file_name, buffer.getvalue(), "text/csv")
        )
        job_url = str(accepted["url"])
        path = job_url if job_url.startswith("/") else "/" + job_url.split("/", 3)[-1]
        deadline = time.monotonic() + budget * 3 + 600
        try:
            while True:
                job = self._transport.get_refinement(path)
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
        return self._transport.cancel_refinement(refinement_id)

    # -- families -----------------------------------------------------------------------

    def declare_family(
        self,
        name: str,
        space: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        defaults: Mapping[str, Mapping[str, Any]] | None = None,
        description: str = "",
    ) -> dict[str, Any]:
        """Declare a model family of your own by its search space (``POST /v1/families``).

        Its runs are then validated against the space, suggestions for it come from the
        portfolio of its runs from the first one, and from a surrogate once the nightly
        retrain sees runs on 10 datasets. The service never trains it itself.
        Declaring the same space again is a no-op.

        Args:
            name: Lower-case letters, digits and ``_`` (``my_xgboost``); not a built-in name.
            space: ``{"params": [...]}`` or the list of parameters: each
                ``{"name", "type": "float" | "int" | "categorical", "low", "high",
                "log", "choices", "default", "condition": {"parent", "values"},
                "minimum", "maximum"}`` (README, "Your own model family"). From an Optuna
                study: ``optuna_integration.declare_family_from_study``.
            defaults: Per task, parameter -> default, overriding the parameters' own.
            description: One line.

        Returns:
            The family as ``GET /v1/families/{name}`` shows it.

        Raises:
            ValidationError: A bad name or space (the message names the field).
            ConflictError: A built-in name, or declared already with another space.
        """
        body: dict[str, Any] = dict(space) if isinstance(space, Mapping) else {"params": space}
        if defaults is not None:
            body["defaults"] = {task: dict(values) for task, values in defaults.items()}
        if isinstance(body.get("params"), Sequence):
            body["params"] = [dict(p) for p in body["params"]]
        return self._transport.declare_family(
            {"name": name, "space": body, "description": description}
        )

    # -- reading ------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counts over the history (runs, datasets, by family, task, source, status)."""
        return self._transport.stats()

    def datasets(self, *, name: str | None = None, task: str | None = None) -> list[dict[str, Any]]:
        """Stored datasets (all pages), optionally only those of a name and task."""
        out: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page, cursor = self._transport.datasets_page(
                name=name, task=task, cursor=cursor, limit=1000
            )
            out.extend(page)
            if not cursor:
                return out


# ----------------------------------------------------------------------------- errors


def data_sha256(X: pd.DataFrame, y: pd.Series) -> str:
    """sha256 of a dataset's values: the same for its rows in any order.

    Column names are ignored (arrays have none) and column order counts; numbers
    (booleans too) are hashed as float64 and everything else as text, so that data read
    back from a CSV file hashes as the frame it was written from.
    """
    import numpy as np
    import pandas as pd

    columns = [X[c] for c in X.columns] + [y]
    plain = pd.DataFrame(
        {i: _hashable(col.reset_index(drop=True)) for i, col in enumerate(columns)}
    )
    rows = pd.util.hash_pandas_object(plain, index=False).to_numpy(dtype="<u8")
    digest = hashlib.sha256(f"{len(columns)}:".encode())
    digest.update(np.sort(rows).tobytes())
    return digest.hexdigest()


def _hashable(column: pd.Series) -> pd.Series:
    import pandas as pd

    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
        # + 0.0 turns -0.0 into 0.0; every missing value becomes the one NaN.
        values = pd.to_numeric(column, errors="coerce").astype("float64") + 0.0
        return values.where(values.notna(), float("nan"))
    text = column.astype(object)
    return text.where(text.notna(), "\x00NA").astype(str)


def _offset_validation(error: ValidationError, offset: int) -> ValidationError:
    """Name runs by their index in the caller's list, not in the batch."""
    if offset == 0:
        return error
    if not isinstance(error.detail, list):
        # An in-process message names the run first; an API answer starts with its status.
        message = _offset_message(error.message, offset)
        if message == error.message:
            return error
        return type(error)(message, status_code=error.status_code, detail=message)
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
    if offset == 0:
        return message
    return re.sub(r"^runs\[(\d+)\]", lambda m: f"runs[{int(m.group(1)) + offset}]", message)
