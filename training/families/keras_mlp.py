"""A Keras multilayer perceptron on imputed, scaled, one-hot features.

Config keys (see ``hyperprior.training.spaces.KERAS_MLP`` for ranges and defaults):

- ``learning_rate``: of the optimizer.
- ``optimizer``: ``adam``, ``adamw``, ``sgd`` or ``rmsprop`` (Keras defaults otherwise:
  AdamW's weight decay 0.004, SGD without momentum).
- ``batch_size``, ``epochs``: passes over the training rows, reshuffled each pass, in
  mini-batches; no early stopping (epochs are the hyperparameter). Fidelity scales the
  epochs: ``max(1, round(epochs * fidelity))``, and every training row is used.
- ``n_layers`` hidden ``Dense(units)`` layers with ``activation``; with ``batch_norm``
  a ``BatchNormalization`` between the Dense and its activation; ``Dropout(dropout)``
  after each hidden layer when ``dropout > 0``; ``l2`` kernel regularisation of the
  hidden layers when ``l2 > 0``.
- Output: sigmoid unit (binary), softmax (multiclass), linear unit on the
  standardised target (regression; predictions are mapped back to the original
  scale before scoring).

TensorFlow is imported only inside this module's functions, quietly
(``TF_CPP_MIN_LOG_LEVEL=3``), with one intra- and one inter-op thread, because trials
run in parallel processes. Seeds are set with ``keras.utils.set_random_seed`` before
each model is built. A fit whose loss is not finite raises, so the trial is ``failed``.

Speed: on small tables Keras' fixed costs dominate, not arithmetic. Every epoch of
``Model.fit`` costs tens of milliseconds (callbacks, a new iterator), and tracing the
training graph about a second per model. So all epochs run as a single pass over a
repeated ``tf.data`` pipeline (batched per epoch, so no batch straddles two epochs),
and the folds of one trial share one compiled model: its initial weights and its
optimizer's initial state are restored before each fold, which is what a fresh build
with the same seed would start from. Together 3-7x faster per trial on iris.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from hyperprior.training.families.base import Family
from hyperprior.training.preprocess import dense_preprocessor
from hyperprior.training.spaces import SPACES

__all__ = ["FAMILY", "KerasMLP", "build", "effective_epochs", "import_keras"]

_PREDICT_CHUNK = 8192
_STEPS_PER_EXECUTION = 32


def import_keras() -> Any:
    """Import Keras (TensorFlow backend) once per process, quiet and single-threaded."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # oneDNN prints a banner that TF_CPP_MIN_LOG_LEVEL cannot silence, and its
    # reordered float arithmetic makes runs differ between machines.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # the runtime is already initialised in this process; keep its setting
    tf.get_logger().setLevel("ERROR")
    import keras

    return keras


def effective_epochs(epochs: int, fidelity: float) -> int:
    """Epochs actually run at ``fidelity``."""
    return max(1, round(epochs * fidelity))


def _optimizer(keras: Any, name: str, learning_rate: float) -> Any:
    classes = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }
    return classes[name](learning_rate=learning_rate)


def _build_model(
    keras: Any, n_features: int, config: Mapping[str, Any], task: str, n_classes: int
) -> Any:
    layers = keras.layers
    l2 = float(config["l2"])
    reg = keras.regularizers.L2(l2) if l2 > 0 else None
    model = keras.Sequential([keras.Input(shape=(n_features,))])
    for _ in range(int(config["n_layers"])):
        if config["batch_norm"]:
            model.add(layers.Dense(int(config["units"]), kernel_regularizer=reg))
            model.add(layers.BatchNormalization())
            model.add(layers.Activation(config["activation"]))
        else:
            model.add(
                layers.Dense(
                    int(config["units"]),
                    activation=config["activation"],
                    kernel_regularizer=reg,
                )
            )
        if float(config["dropout"]) > 0:
            model.add(layers.Dropout(float(config["dropout"])))
    if task == "binary":
        model.add(layers.Dense(1, activation="sigmoid"))
        loss = "binary_crossentropy"
    elif task == "multiclass":
        model.add(layers.Dense(n_classes, activation="softmax"))
        loss = "sparse_categorical_crossentropy"
    else:
        model.add(layers.Dense(1))
        loss = "mean_squared_error"
    model.compile(
        optimizer=_optimizer(keras, config["optimizer"], float(config["learning_rate"])),
        loss=loss,
        # XLA compilation costs seconds per model on CPU and buys nothing for small MLPs.
        jit_compile=False,
        # Several batches per graph call: same updates, a fraction of the Python overhead.
        steps_per_execution=_STEPS_PER_EXECUTION,
    )
    return model


# One compiled model per process, reused by the next fit of the same architecture,
# optimizer and seed (the other folds of a trial): tracing its training graph again
# would cost more than most small fits. The last fit owns it (``token``).
_REUSE: dict[str, Any] = {}
_TOKENS = itertools.count(1)


def _fresh_model(
    keras: Any, n_features: int, config: Mapping[str, Any], task: str, n_classes: int, seed: int
) -> Any:
    """A compiled model in the state a new build with ``seed`` starts from."""
    import json

    key = json.dumps([n_features, dict(config), task, n_classes, seed], sort_keys=True, default=str)
    if _REUSE.get("key") == key:
        model = _REUSE["model"]
        model.set_weights(_REUSE["weights"])
        for variable, value in zip(model.optimizer.variables, _REUSE["optimizer"], strict=True):
            variable.assign(value)
        keras.utils.set_random_seed(seed)
        return model
    _REUSE.clear()
    # Without clearing, Keras keeps every old graph.
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = _build_model(keras, n_features, config, task, n_classes)
    # Build the optimizer's slots now, so that their initial values can be restored.
    model.optimizer.build(model.trainable_variables)
    _REUSE.update(
        key=key,
        model=model,
        weights=model.get_weights(),
        optimizer=[v.numpy() for v in model.optimizer.variables],
    )
    return model


class KerasMLP(BaseEstimator):
    """A scikit-learn estimator around a Keras MLP (``fit``/``predict[_proba]``).

    Args:
        config: A validated ``keras_mlp`` config.
        task: ``binary``, ``multiclass`` or ``regression``.
        n_classes: Number of classes (0 for regression).
        seed: Seed for ``keras.utils.set_random_seed``.
        epochs: Epochs to run (already scaled by fidelity).
    """

    def __init__(
        self, config: Mapping[str, Any], task: str, n_classes: int, seed: int, epochs: int
    ) -> None:
        self.config = dict(config)
        self.task = task
        self.n_classes = n_classes
        self.seed = seed
        self.epochs = epochs

    def fit(self, X: Any, y: Any) -> KerasMLP:
        """Train from its initial weights on ``X`` (dense floats) and ``y`` (codes or floats)."""
        keras = import_keras()
        import tensorflow as tf

        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y)
        if self.task == "regression":
            self.y_mean_ = float(np.mean(y))
            std = float(np.std(y))
            self.y_scale_ = std if std > 0 else 1.0
            target = ((y - self.y_mean_) / self.y_scale_).astype(np.float32)
        else:
            target = y.astype(np.int64)
            self.classes_ = np.arange(self.n_classes)
        self.model_ = _fresh_model(
            keras, X.shape[1], self.config, self.task, self.n_classes, self.seed
        )
        self.token_ = _REUSE["token"] = next(_TOKENS)
        data = (
            tf.data.Dataset.from_tensor_slices((X, target))
            .shuffle(len(X), seed=self.seed, reshuffle_each_iteration=True)
            .batch(int(self.config["batch_size"]))
            .repeat(self.epochs)
            .prefetch(2)
        )
        # The pipeline shuffles; Keras ignores (and warns about) its own shuffle here.
        history = self.model_.fit(data, epochs=1, shuffle=False, verbose=0)
        loss = float(history.history["loss"][-1])
        if not np.isfinite(loss):
            raise FloatingPointError(f"training diverged: loss {loss}")
        return self

    def _forward(self, X: Any) -> np.ndarray:
        if self.model_ is _REUSE.get("model") and self.token_ != _REUSE.get("token"):
            raise RuntimeError(
                "this KerasMLP's network was retrained by a later fit of the same config "
                "in this process; predict before fitting the next one"
            )
        X = np.asarray(X, dtype=np.float32)
        # Direct calls avoid tracing a predict function per model (Model.predict does).
        parts = [
            np.asarray(self.model_(X[i : i + _PREDICT_CHUNK], training=False))
            for i in range(0, max(len(X), 1), _PREDICT_CHUNK)
        ]
        return np.concatenate(parts, axis=0).astype(np.float64)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, ``n x n_classes``."""
        out = self._forward(X)
        if self.task == "binary":
            p = out[:, 0]
            return np.column_stack([1.0 - p, p])
        return out

    def predict(self, X: Any) -> np.ndarray:
        """Class codes, or values on the original target scale."""
        if self.task == "regression":
            return self._forward(X)[:, 0] * self.y_scale_ + self.y_mean_
        return np.asarray(self.predict_proba(X).argmax(axis=1))


def build(config: Mapping[str, Any], task: str, n_classes: int, seed: int, fidelity: float) -> Any:
    """An unfitted pipeline: dense preprocessing, then :class:`KerasMLP`.

    Args:
        config: A validated ``keras_mlp`` config.
        task: ``binary``, ``multiclass`` or ``regression``.
        n_classes: Number of classes.
        seed: Random seed of the network.
        fidelity: Scales the epochs (see :func:`effective_epochs`).

    Returns:
        A scikit-learn ``Pipeline``.
    """
    from sklearn.pipeline import Pipeline

    epochs = effective_epochs(int(config["epochs"]), fidelity)
    return Pipeline(
        [("pre", dense_preprocessor()), ("model", KerasMLP(config, task, n_classes, seed, epochs))]
    )


def _setup() -> None:
    import_keras()


FAMILY = Family(
    name="keras_mlp",
    space=SPACES["keras_mlp"],
    build=build,
    fidelity_unit="epochs",
    description=SPACES["keras_mlp"].description,
    setup=_setup,
)
