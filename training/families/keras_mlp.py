"""A Keras multilayer perceptron on imputed, scaled, one-hot features.

Config keys (see :data:`SPACE` for ranges and defaults):

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
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.metaestimators import available_if

from hyperprior.training.families.base import Family, cost_ratio
from hyperprior.training.features import Interaction, safe_log
from hyperprior.training.preprocess import dense_preprocessor
from hyperprior.training.spaces import Categorical, Float, Int, Space, check_task, is_classification

__all__ = [
    "FAMILY",
    "INTERACTIONS",
    "SPACE",
    "KerasMLP",
    "KerasMLPEstimator",
    "build",
    "effective_epochs",
    "estimator",
    "import_keras",
    "relative_cost",
]

SPACE = Space(
    family="keras_mlp",
    description="A Keras multilayer perceptron (Dense layers of equal width).",
    notes=(
        "Keys (not a single estimator's kwargs; the family builds the model): "
        "learning_rate and optimizer (Adam, AdamW, SGD or RMSprop, each with its Keras "
        "defaults otherwise), batch_size and epochs of Model.fit (no early stopping), "
        "n_layers hidden Dense layers of `units` units with `activation`, optional "
        "BatchNormalization before the activation, Dropout `dropout` after it, L2 "
        "kernel regularisation `l2`. Defaults: Keras' own where it has one (Adam "
        "learning_rate=0.001, fit batch_size=32, no regularisation or dropout, relu); "
        "Keras has no default architecture or useful epoch count (fit uses epochs=1), "
        "so 2 x 64 units and 20 epochs stand in. Fidelity scales epochs."
    ),
    params=(
        Float(
            "learning_rate",
            1e-4,
            3e-2,
            log=True,
            default=1e-3,
            minimum=0,
            exclusive_minimum=True,
            doc="Optimizer learning rate.",
        ),
        Int(
            "batch_size",
            16,
            1024,
            log=True,
            default=32,
            minimum=1,
            power_of_two=True,
            doc="Mini-batch size (decoded to a power of two).",
        ),
        Int(
            "epochs",
            5,
            200,
            log=True,
            default=20,
            minimum=1,
            doc="Training epochs at full fidelity.",
        ),
        Int("n_layers", 1, 4, default=2, minimum=1, maximum=16, doc="Hidden layers."),
        Int("units", 16, 1024, log=True, default=64, minimum=1, doc="Units per hidden layer."),
        Float(
            "dropout",
            0.0,
            0.5,
            default=0.0,
            minimum=0.0,
            maximum=0.95,
            doc="Dropout rate after each hidden layer.",
        ),
        Float(
            "l2",
            1e-8,
            1e-1,
            log=True,
            default=0.0,
            minimum=0,
            doc="L2 penalty on hidden kernels (default 0 lies below the box).",
        ),
        Categorical(
            "optimizer", ("adam", "adamw", "sgd", "rmsprop"), default="adam", doc="Optimizer."
        ),
        Categorical(
            "activation", ("relu", "gelu", "tanh", "selu"), default="relu", doc="Hidden activation."
        ),
        Categorical(
            "batch_norm",
            (False, True),
            default=False,
            doc="BatchNormalization in each hidden layer.",
        ),
    ),
)


INTERACTIONS: tuple[Interaction, ...] = (
    Interaction(
        "log_batch_per_row",
        ("batch_size",),
        lambda v: safe_log(v["batch_size"]) - safe_log(v["rows"]),
    ),
    # The number of SGD steps (fidelity cuts epochs, not rows).
    Interaction(
        "log_steps",
        ("epochs", "batch_size"),
        lambda v: (
            safe_log(v["epochs"] * v["epoch_fraction"])
            + safe_log(v["rows"])
            - safe_log(v["batch_size"])
        ),
    ),
    Interaction(
        "log_steps_x_lr",
        ("epochs", "batch_size", "learning_rate"),
        lambda v: (
            safe_log(v["epochs"] * v["epoch_fraction"] * v["learning_rate"])
            + safe_log(v["rows"])
            - safe_log(v["batch_size"])
        ),
    ),
    Interaction(
        "log_units_per_feature",
        ("units",),
        lambda v: safe_log(v["units"]) - safe_log(v["features"]),
    ),
)
"""Surrogate features: batch size, SGD steps and width relative to the data."""

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


class KerasMLPEstimator(BaseEstimator):
    """The ``keras_mlp`` family's network as a scikit-learn estimator.

    Takes numeric features (put :func:`estimator`'s preprocessing in front for
    raw tables) and any labels; ``epochs``, ``batch_size`` and the rest come from the
    config, exactly as the family trains it in a trial.

    Args:
        config: A ``keras_mlp`` config (missing keys: the family's defaults).
        task: ``binary``, ``multiclass`` or ``regression``.
        random_state: Seed of ``keras.utils.set_random_seed`` (``None``: 0).
    """

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        task: str = "binary",
        random_state: int | None = 0,
    ) -> None:
        self.config = config
        self.task = task
        self.random_state = random_state

    @property
    def _estimator_type(self) -> str:  # scikit-learn < 1.6 asks this
        return "regressor" if self.task == "regression" else "classifier"

    def __sklearn_tags__(self) -> Any:
        # A classifier or a regressor depending on the task (scikit-learn >= 1.6).
        from sklearn.utils import ClassifierTags, RegressorTags

        tags = super().__sklearn_tags__()
        if self.task == "regression":
            tags.estimator_type = "regressor"
            tags.regressor_tags = RegressorTags()
        else:
            tags.estimator_type = "classifier"
            tags.classifier_tags = ClassifierTags()
        return tags

    def fit(self, X: Any, y: Any) -> KerasMLPEstimator:
        """Train the network on ``X`` (numeric) and ``y`` (labels or values)."""
        check_task(self.task)
        cfg = SPACE.validate(dict(self.config or {}), self.task)
        y_arr = np.asarray(y)
        if is_classification(self.task):
            self.classes_, codes = np.unique(y_arr, return_inverse=True)
            n_classes = len(self.classes_)
            if n_classes < 2:
                raise ValueError(f"classification needs at least 2 classes, y has {n_classes}")
            if self.task == "binary" and n_classes != 2:
                raise ValueError(f"task 'binary' needs exactly 2 classes, y has {n_classes}")
            target: np.ndarray = codes
        else:
            n_classes = 0
            target = y_arr.astype(np.float64)
        seed = 0 if self.random_state is None else int(self.random_state)
        self.network_ = KerasMLP(cfg, self.task, n_classes, seed, int(cfg["epochs"]))
        self.network_.fit(np.asarray(X, dtype=np.float32), target)
        # The family shares one compiled network between the folds of a trial; a model
        # handed to a user must own its network, so it leaves that cache.
        _REUSE.clear()
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    @available_if(lambda self: self.task != "regression")
    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_``."""
        return self.network_.predict_proba(X)

    def predict(self, X: Any) -> np.ndarray:
        """Labels (as given to ``fit``), or values."""
        if is_classification(self.task):
            return np.asarray(self.classes_[self.network_.predict(X)])
        return np.asarray(self.network_.predict(X))

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Accuracy (classification) or R² (regression), as scikit-learn's mixins do."""
        mixin = RegressorMixin if self.task == "regression" else ClassifierMixin
        return float(mixin.score(self, X, y, sample_weight=sample_weight))


def estimator(config: Mapping[str, Any], task: str, random_state: int | None) -> Any:
    """The estimator a user fits: dense preprocessing, then :class:`KerasMLPEstimator`."""
    from sklearn.pipeline import Pipeline

    return Pipeline(
        [
            ("pre", dense_preprocessor()),
            ("model", KerasMLPEstimator(config=config, task=task, random_state=random_state)),
        ]
    )


def relative_cost(config: Mapping[str, Any], default: Mapping[str, Any]) -> float:
    """Epochs times steps per epoch (``1/batch_size``, but a larger batch costs more per
    step), times the network's size (square root)."""

    def ratio(key: str) -> float:
        return cost_ratio(config, default, key)

    rel = ratio("epochs") / max(ratio("batch_size"), 1e-9) ** 0.7
    return rel * max(ratio("units") * ratio("n_layers"), 1.0) ** 0.5


def _setup() -> None:
    import_keras()


FAMILY = Family(
    name="keras_mlp",
    space=SPACE,
    build=build,
    fidelity_unit="epochs",
    description=SPACE.description,
    setup=_setup,
    estimator=estimator,
    cost=relative_cost,
    interactions=INTERACTIONS,
)
