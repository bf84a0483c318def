"""Keras: a real (tiny) model records its training run through the callback."""

from __future__ import annotations

import os
import uuid

import numpy as np
import pandas as pd
import pytest

from hyperprior.client import Client, HyperpriorWarning
from hyperprior.db.store import Store

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras  # noqa: E402  (TensorFlow is a core dependency: no skipping here)

from hyperprior.client.keras_callback import HyperpriorCallback  # noqa: E402


class StopAfter(keras.callbacks.Callback):
    """Stops training after some epochs, as early stopping would."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch + 1 >= self.epochs:
            self.model.stop_training = True


def _model(units: int, learning_rate: float) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input(shape=(5,)),
            keras.layers.Dense(units, activation="relu"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse", metrics=["mae"])
    return model


def test_callback_records_one_run_per_fit(
    local_client: Client, store: Store, binary_data: tuple[pd.DataFrame, pd.Series]
) -> None:
    X, y = binary_data
    description = local_client.describe(X, y, "regression", name="tiny")
    config = {"units": 8, "learning_rate": 0.01, "batch_size": 32, "epochs": 4}
    callback = HyperpriorCallback(local_client, dataset=description, config=config)
    history = _model(8, 0.01).fit(
        X.to_numpy("float32"), y.to_numpy("float32"), validation_split=0.25, epochs=4,
        batch_size=32, verbose=0, callbacks=[callback, StopAfter(2)],
    )  # fmt: skip
    assert callback.result is not None
    assert callback.result.inserted == 1
    run = store.get_run(uuid.UUID(callback.run_id))
    assert run.family == "keras_mlp"
    assert run.config == config
    assert (run.metric, run.direction, run.status, run.source) == (
        "val_loss", "minimize", "ok", "user",
    )  # fmt: skip
    assert run.score == pytest.approx(history.history["val_loss"][-1], rel=1e-5)
    assert run.fidelity == pytest.approx(0.5)  # 2 of the 4 planned epochs
    assert run.cost_seconds > 0
    assert store.get_dataset(run.dataset_id).name == "tiny"

    # Another fit, judged by its best val_mae: a second run with its own id.
    best = HyperpriorCallback(
        local_client, dataset=description, config=config, metric="val_mae", reduce="best"
    )
    history = _model(8, 0.01).fit(
        X.to_numpy("float32"), y.to_numpy("float32"), validation_split=0.25, epochs=3,
        batch_size=32, verbose=0, callbacks=[best],
    )  # fmt: skip
    second = store.get_run(uuid.UUID(best.run_id))
    assert second.id != run.id
    assert second.score == pytest.approx(min(history.history["val_mae"]), rel=1e-5)
    assert second.fidelity == 1.0


def test_diverged_training_is_a_failed_run_and_missing_metric_warns(
    local_client: Client, store: Store
) -> None:
    description = local_client.describe(
        pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0] * 8}), pd.Series(np.arange(32.0)), "regression"
    )
    callback = HyperpriorCallback(local_client, dataset=description, config={"learning_rate": 1e9})
    callback.set_params({"epochs": 2})
    callback.on_train_begin()
    callback.on_epoch_end(0, {"loss": 1.0, "val_loss": float("nan")})
    callback.on_epoch_end(1, {"loss": 1.0, "val_loss": float("nan")})
    callback.on_train_end()
    run = store.get_run(uuid.UUID(callback.run_id))
    assert (run.status, run.score) == ("failed", None)
    assert "val_loss was nan" in (run.error or "")

    silent = HyperpriorCallback(local_client, dataset=description, config={})
    silent.set_params({"epochs": 1})
    silent.on_train_begin()
    silent.on_epoch_end(0, {"loss": 1.0})
    with pytest.warns(HyperpriorWarning, match="'val_loss' was never logged.*logged metrics: loss"):
        silent.on_train_end()
    assert store.stats().runs == 1
