"""Keras: record a training run in hyperprior when ``fit`` ends.

::

    from hyperprior.client import Client
    from hyperprior.client.keras_callback import HyperpriorCallback

    client = Client("http://127.0.0.1:8000", api_key="hp_...")
    description = client.describe(X_train, y_train, name="churn")
    config = {"learning_rate": 1e-3, "batch_size": 64, "units": 128, "n_layers": 2}
    model.fit(X_train, y_train, validation_split=0.2, epochs=30, callbacks=[
        keras.callbacks.EarlyStopping(patience=3),
        HyperpriorCallback(client, dataset=description, config=config),
    ])

One run per ``fit``: the config you trained with, the final value of the validation
metric (or its best, with ``reduce="best"``), the share of the planned epochs that ran
as the fidelity (early stopping makes it less than 1) and the wall-clock time. A loss
that became NaN records a ``failed`` run: the history learns that this config diverges.
"""

from __future__ import annotations

import math
import time
import uuid
import warnings
from collections.abc import Mapping
from typing import Any

import keras

from hyperprior.client.client import Client
from hyperprior.client.errors import HyperpriorError, HyperpriorWarning
from hyperprior.client.types import Description, RecordResult, direction_of

__all__ = ["HyperpriorCallback"]


class HyperpriorCallback(keras.callbacks.Callback):
    """Records one hyperprior run at the end of ``model.fit``.

    Args:
        client: A hyperprior client.
        dataset: A `Description` from `Client.describe`, the API's inline dataset
            (``name``, ``task``, ``meta_features``) or a stored dataset's id.
        config: The hyperparameters the model was built and trained with (for the
            ``keras_mlp`` family: its search space's names, e.g. ``learning_rate``,
            ``batch_size``, ``units``, ``n_layers``, ``dropout``, ``epochs``).
        metric: The logged metric that is the run's score (default ``val_loss``).
        family: The model family (default ``keras_mlp``).
        direction: ``minimize`` or ``maximize``; inferred from the metric's name.
        reduce: ``last`` (the value when training ended) or ``best`` (the best epoch's,
            for ``EarlyStopping(restore_best_weights=True)``).
        epochs: The planned epochs (default: ``fit``'s ``epochs``).
        source: The run's source (``user``).
        run_id: The run's id (default: a new UUID per ``fit``).
        raise_errors: Raise when recording fails (default: warn, so a finished
            training is never lost to a network error).

    Attributes:
        run_id: The id of the last recorded (or attempted) run.
        result: What `Client.record` answered, once recorded.
    """

    def __init__(
        self,
        client: Client,
        *,
        dataset: Description | Mapping[str, Any] | int,
        config: Mapping[str, Any],
        metric: str = "val_loss",
        family: str = "keras_mlp",
        direction: str | None = None,
        reduce: str = "last",
        epochs: int | None = None,
        source: str = "user",
        run_id: uuid.UUID | str | None = None,
        raise_errors: bool = False,
    ) -> None:
        super().__init__()
        if reduce not in ("last", "best"):
            raise ValueError(f"reduce must be 'last' or 'best', got {reduce!r}")
        if direction is not None and direction not in ("minimize", "maximize"):
            raise ValueError(f"direction must be 'minimize' or 'maximize', got {direction!r}")
        self.client = client
        self.dataset = dataset
        self.config = dict(config)
        self.metric = metric
        self.family = family
        self.direction = direction or direction_of(metric)
        self.reduce = reduce
        self.planned_epochs = epochs
        self.source = source
        self.raise_errors = raise_errors
        self._fixed_id = None if run_id is None else str(run_id)
        self.run_id: str | None = self._fixed_id
        self.result: RecordResult | None = None
        self._values: list[float] = []
        self._seen_keys: set[str] = set()
        self._started = 0.0

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        """Start the clock and forget the previous ``fit``."""
        self._started = time.perf_counter()
        self._values = []
        self._seen_keys = set()
        self.run_id = self._fixed_id or str(uuid.uuid4())

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        """Keep the epoch's value of the metric."""
        logs = logs or {}
        self._seen_keys.update(logs)
        if self.metric in logs:
            self._values.append(float(logs[self.metric]))

    def _score(self) -> float:
        if self.reduce == "last":
            return self._values[-1]
        finite = [v for v in self._values if math.isfinite(v)]
        if not finite:
            return self._values[-1]
        return min(finite) if self.direction == "minimize" else max(finite)

    def _planned(self) -> int:
        planned = self.planned_epochs or (self.params or {}).get("epochs") or len(self._values)
        return max(1, int(planned))

    def build_run(self) -> dict[str, Any] | None:
        """The run of the last ``fit`` (None when the metric was never logged)."""
        if not self._values:
            return None
        score = self._score()
        ok = math.isfinite(score)
        fidelity = min(1.0, max(len(self._values), 1) / self._planned())
        run: dict[str, Any] = {
            "id": self.run_id or str(uuid.uuid4()),
            "family": self.family,
            "config": self.config,
            "metric": self.metric,
            "direction": self.direction,
            "score": score if ok else None,
            "fidelity": fidelity,
            "cost_seconds": max(0.0, time.perf_counter() - self._started),
            "source": self.source,
            "status": "ok" if ok else "failed",
        }
        if not ok:
            run["error"] = f"{self.metric} was {score} at the end of training"
        if isinstance(self.dataset, int):
            run["dataset_id"] = self.dataset
        elif isinstance(self.dataset, Description):
            run["dataset"] = self.dataset.to_json()
        else:
            run["dataset"] = dict(self.dataset)
        return run

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        """Record the run."""
        run = self.build_run()
        if run is None:
            message = (
                f"hyperprior: {self.metric!r} was never logged, so no run was recorded; "
                f"logged metrics: {', '.join(sorted(self._seen_keys)) or 'none'} (pass "
                "validation data to fit, or metric=...)"
            )
            if self.raise_errors:
                raise ValueError(message)
            warnings.warn(message, HyperpriorWarning, stacklevel=2)
            return
        try:
            self.result = self.client.record([run])
        except HyperpriorError as error:
            if self.raise_errors:
                raise
            warnings.warn(
                f"hyperprior: could not record the run {run['id']}: {error}",
                HyperpriorWarning,
                stacklevel=2,
            )
