"""Seeded generators for the corners real tables rarely reach.

Real offline tables are mostly a few thousand rows of a few dozen columns. The
surrogate also has to see what happens to hyperparameters when there are far more
features than rows, one positive in a hundred, categorical columns with thousands of
levels, mostly noise, no signal at all, missing values everywhere, or 100k rows.

It also has to see signal-rich, low-noise problems where the library default's
capacity is right and regularising hurts: the generators of :data:`STRUCTURED` (XOR and
parity, checkerboards, spirals, moons, concentric spheres, separated hypercube clusters,
the boolean multiplexer, many-class blobs, Friedman 1-3, piecewise-constant and smooth
functions, bag-of-words counts, sampled curves) with their knobs in the name.

A synthetic dataset is named ``synthetic/<kind>-<task>-<rows>x<features>[-s<seed>]``
(``synthetic/imbalanced-binary-20000x20-s0``), structured kinds optionally followed by
knobs, one letter and a number each (``synthetic/xor-binary-4000x10-s1-k3-f0.05``: 3
informative features, 5% of labels flipped). The name alone determines the data, so
:func:`hyperprior.training.datasets.load_dataset` accepts any such name, not only those of
:data:`SYNTHETIC` or of the catalog (``catalog.csv`` lists the structured ones the
bootstrap runs, with ``source`` ``synthetic``).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from hyperprior.training.datasets._types import TASKS, CatalogEntry, LoadedDataset

KINDS: dict[str, str] = {
    "high-dim": "far more features than rows; 10 informative, the rest noise",
    "imbalanced": "binary: 1% positives; multiclass: class shares falling by 0.45x per class",
    "high-cardinality": "half the columns categorical with 10 to rows/5 levels (Zipf-like)",
    "noise": "5 informative features, all others pure noise",
    "pure-noise": "target independent of every feature (nothing to learn)",
    "missing": "30% of every feature value missing at random",
    "many-classes": "multiclass with 30 classes",
    "large": "many rows, a smooth nonlinear signal",
}

SYNTHETIC: list[str] = [
    "synthetic/high-dim-binary-200x2000-s0",
    "synthetic/high-dim-regression-300x1000-s0",
    "synthetic/high-dim-multiclass-400x1500-s0",
    "synthetic/imbalanced-binary-20000x20-s0",
    "synthetic/imbalanced-multiclass-10000x20-s0",
    "synthetic/high-cardinality-binary-10000x12-s0",
    "synthetic/high-cardinality-regression-20000x12-s0",
    "synthetic/noise-binary-2000x100-s0",
    "synthetic/noise-regression-2000x100-s0",
    "synthetic/pure-noise-binary-2000x20-s0",
    "synthetic/pure-noise-regression-2000x20-s0",
    "synthetic/missing-binary-5000x20-s0",
    "synthetic/many-classes-multiclass-20000x30-s0",
    "synthetic/large-binary-100000x20-s0",
    "synthetic/large-regression-100000x20-s0",
    "synthetic/large-multiclass-100000x20-s0",
]

_NAME_RE = re.compile(
    r"^synthetic/(?P<kind>[a-z][a-z0-9-]*?)-(?P<task>binary|multiclass|regression)"
    r"-(?P<rows>\d+)x(?P<features>\d+)(?:-s(?P<seed>\d+))?"
    r"(?P<knobs>(?:-[a-rt-z]\d+(?:\.\d+)?)*)$"
)
_MAX_ROWS = 2_000_000
_MAX_FEATURES = 20_000


# -- generators with controlled structure ---------------------------------------------
#
# Signal-rich, low-noise problems where the library default's capacity is right and
# regularising hurts: curved or parity boundaries, well-separated clusters, many
# classes, smooth and piecewise-constant functions, bag-of-words counts and sampled
# curves. Their knobs are written into the name after the seed, one letter and a number
# each (``synthetic/xor-binary-4000x10-s1-k3-f0.05``); a knob left out takes the kind's
# default. Features beyond the informative ones are noise drawn like the informative
# ones, so scale does not give them away.

# kind -> (what it is, tasks it supports, knob defaults)
STRUCTURED: dict[str, tuple[str, tuple[str, ...], dict[str, float]]] = {
    "xor": (
        "parity of the signs of k informative features (XOR for k=2); regression: their "
        "product; uniform features",
        ("binary", "regression"),
        {"k": 2, "f": 0.0, "n": 0.1},
    ),
    "checkerboard": (
        "checkerboard of m cells per axis over k features: cell-index sum mod 2 (mod c "
        "for multiclass); regression: a random level per cell",
        TASKS,
        {"k": 2, "m": 4, "c": 3, "f": 0.0, "n": 0.1},
    ),
    "spirals": (
        "a interleaved spiral arms of t turns in the first two features, jitter n",
        ("binary", "multiclass"),
        {"a": 2, "t": 1.5, "n": 0.05},
    ),
    "moons": (
        "two interleaving half circles in the first two features, jitter n",
        ("binary",),
        {"n": 0.2},
    ),
    "circles": (
        "c concentric spheres in the first k features (class = shell), jitter n",
        ("binary", "multiclass"),
        {"k": 2, "c": 2, "n": 0.1},
    ),
    "hypercube": (
        "sklearn make_classification: k informative features, c classes of q clusters "
        "on hypercube vertices at separation d, labels flipped at rate f; the last class "
        "a share w of the rows before the flips (0: balanced)",
        ("binary", "multiclass"),
        {"k": 5, "c": 3, "q": 2, "d": 2.0, "f": 0.02, "w": 0.0},
    ),
    "multiplexer": (
        "boolean multiplexer: a address bits select one of 2^a data bits; other bits noise",
        ("binary",),
        {"a": 2, "f": 0.0},
    ),
    "blobs": (
        "c Gaussian blobs of spread n in the first k features (centres in [-10, 10])",
        ("multiclass",),
        {"c": 10, "k": 10, "n": 1.5},
    ),
    "friedman1": ("Friedman #1 (sklearn), relative noise n", ("regression",), {"n": 0.05}),
    "friedman2": ("Friedman #2 (sklearn), relative noise n", ("regression",), {"n": 0.05}),
    "friedman3": ("Friedman #3 (sklearn), relative noise n", ("regression",), {"n": 0.05}),
    "piecewise": (
        "piecewise-constant function of k features: a random axis-aligned tree of depth "
        "m; binary: above the median",
        ("regression", "binary"),
        {"k": 3, "m": 4, "n": 0.05, "f": 0.0},
    ),
    "smooth": (
        "smooth function of k features (random Fourier features of frequency w); binary: "
        "above the median (a curved boundary)",
        ("regression", "binary"),
        {"k": 2, "w": 2.0, "n": 0.05, "f": 0.0},
    ),
    "bow": (
        "bag-of-words counts over a Zipf vocabulary (one feature per word), documents of "
        "about l words, a share d of each drawn from its class's topic; regression: a "
        "sparse linear score of word frequencies",
        TASKS,
        {"c": 2, "l": 60, "d": 0.2, "n": 0.1},
    ),
    "curves": (
        "smooth curves sampled at one feature per point, class-dependent shape (three "
        "bumps moved per class), random shift up to h, scale and jitter n; regression: "
        "the frequency of a noisy wave",
        TASKS,
        {"c": 2, "n": 0.1, "h": 0.1},
    ),
}

_KNOB_RE = re.compile(r"-(?P<key>[a-rt-z])(?P<value>\d+(?:\.\d+)?)")


def parse_knobs(name: str) -> dict[str, float]:
    """The knobs written in a synthetic name (``-k3-f0.05`` -> ``{"k": 3.0, "f": 0.05}``).

    Raises:
        KeyError: Malformed name, or a knob the kind does not have.
    """
    match = _NAME_RE.match(name)
    if match is None:
        raise KeyError(f"bad synthetic name {name!r}")
    text = match["knobs"] or ""
    knobs = {m["key"]: float(m["value"]) for m in _KNOB_RE.finditer(text)}
    kind = match["kind"]
    allowed = STRUCTURED[kind][2] if kind in STRUCTURED else {}
    unknown = sorted(set(knobs) - set(allowed))
    if unknown or len(knobs) != len(_KNOB_RE.findall(text)):
        raise KeyError(
            f"bad synthetic name {name!r}: kind {kind!r} has knobs {sorted(allowed) or 'none'}"
        )
    return knobs


def _fmt_knob(value: float) -> str:
    return f"{value:g}"


def _flip(y: np.ndarray, rate: float, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Replace a share ``rate`` of labels by random ones (label noise)."""
    if rate <= 0:
        return y
    flip = rng.random(len(y)) < rate
    y = y.copy()
    y[flip] = rng.integers(0, n_classes, flip.sum())
    return y


def _with_noise(y: np.ndarray, rel: float, rng: np.random.Generator) -> np.ndarray:
    """Add Gaussian noise of ``rel`` times the signal's standard deviation."""
    return y + rel * (y.std() or 1.0) * rng.standard_normal(len(y))


def _pad(informative: np.ndarray, n_features: int, noise: Any) -> np.ndarray:
    """Informative columns first, then noise columns up to ``n_features``."""
    extra = n_features - informative.shape[1]
    if extra < 0:
        raise ValueError(f"needs at least {informative.shape[1]} features")
    if extra == 0:
        return informative
    return np.column_stack([informative, noise((len(informative), extra))])


def _structured(
    kind: str, task: str, n: int, p: int, rng: np.random.Generator, seed: int, knobs: dict
) -> tuple[np.ndarray, np.ndarray]:
    """Features and raw target of a structured kind (labels not yet re-coded)."""
    _, tasks, defaults = STRUCTURED[kind]
    if task not in tasks:
        raise ValueError(f"kind {kind!r} supports tasks {tasks}, not {task!r}")
    o = {**defaults, **knobs}
    uniform = lambda shape: rng.uniform(-1.0, 1.0, shape)  # noqa: E731
    k = max(1, min(p, int(o.get("k", 2))))

    if kind == "xor":
        X = uniform((n, p))
        if task == "regression":
            z = np.prod(X[:, :k], axis=1)
            return X, _with_noise(z / z.std(), o["n"], rng)
        y = (np.prod(np.sign(X[:, :k]), axis=1) > 0).astype("int64")
        return X, _flip(y, o["f"], 2, rng)

    if kind == "checkerboard":
        m = max(2, int(o["m"]))
        X = uniform((n, p))
        cells = np.minimum((X[:, :k] + 1.0) / 2.0 * m, m - 1).astype(int)
        if task == "regression":
            levels = rng.standard_normal(m**k)
            index = np.ravel_multi_index(tuple(cells.T), (m,) * k)
            return X, _with_noise(levels[index], o["n"], rng)
        c = 2 if task == "binary" else max(3, int(o["c"]))
        y = cells.sum(axis=1) % c
        return X, _flip(y.astype("int64"), o["f"], c, rng)

    if kind == "spirals":
        a = 2 if task == "binary" else max(3, int(o["a"]))
        y = rng.integers(0, a, n)
        r = rng.uniform(0.05, 1.0, n)
        angle = 2.0 * np.pi * (o["t"] * r + y / a)
        xy = np.column_stack([r * np.cos(angle), r * np.sin(angle)])
        xy += o["n"] * rng.standard_normal((n, 2))
        return _pad(xy, p, uniform), y.astype("int64")

    if kind == "moons":
        y = rng.integers(0, 2, n)
        t = rng.uniform(0.0, np.pi, n)
        xy = np.where(
            (y == 0)[:, None],
            np.column_stack([np.cos(t), np.sin(t)]),
            np.column_stack([1.0 - np.cos(t), 0.5 - np.sin(t)]),
        )
        xy = (xy - [0.5, 0.25]) / [1.5, 0.75] + o["n"] * rng.standard_normal((n, 2))
        return _pad(xy, p, uniform), y.astype("int64")

    if kind == "circles":
        c = 2 if task == "binary" else max(3, int(o["c"]))
        y = rng.integers(0, c, n)
        direction = rng.standard_normal((n, k))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        radius = (y + 1.0) / c
        pts = direction * radius[:, None] + o["n"] * rng.standard_normal((n, k))
        return _pad(pts, p, uniform), y.astype("int64")

    if kind == "hypercube":
        from sklearn.datasets import make_classification

        c = 2 if task == "binary" else max(3, int(o["c"]))
        q = max(1, int(o["q"]))
        while c * q > 2**k and q > 1:
            q -= 1
        w = float(o["w"])
        if not 0.0 <= w < 1.0:
            raise ValueError(f"hypercube class share w must be in [0, 1), not {w}")
        # w > 0: the last class (the positive one of a binary task) is a share w of the
        # rows, the others share the rest equally; flips then move f/c of rows to each.
        weights = [(1.0 - w) / (c - 1)] * (c - 1) + [w] if w > 0 else None
        X, y = make_classification(
            n_samples=n,
            n_features=p,
            n_informative=k,
            n_redundant=0,
            n_repeated=0,
            n_classes=c,
            n_clusters_per_class=q,
            class_sep=float(o["d"]),
            flip_y=float(o["f"]),
            weights=weights,
            shuffle=False,
            random_state=seed,
        )
        return X, y.astype("int64")

    if kind == "multiplexer":
        a = max(1, int(o["a"]))
        if p < a + 2**a:
            raise ValueError(f"a {a}-bit multiplexer needs at least {a + 2**a} features")
        X = rng.integers(0, 2, (n, p))
        address = X[:, :a] @ (2 ** np.arange(a)[::-1])
        y = X[np.arange(n), a + address].astype("int64")
        return X.astype("int64"), _flip(y, o["f"], 2, rng)

    if kind == "blobs":
        c = max(3, int(o["c"]))
        centres = rng.uniform(-10.0, 10.0, (c, k))
        y = rng.integers(0, c, n)
        pts = centres[y] + o["n"] * rng.standard_normal((n, k))
        return _pad(pts, p, lambda shape: rng.uniform(-10.0, 10.0, shape)), y.astype("int64")

    if kind.startswith("friedman"):
        from sklearn import datasets

        if kind == "friedman1":
            if p < 5:
                raise ValueError("friedman1 needs at least 5 features")
            X, z = datasets.make_friedman1(n_samples=n, n_features=p, noise=0.0, random_state=seed)
        else:
            make = datasets.make_friedman2 if kind == "friedman2" else datasets.make_friedman3
            X, z = make(n_samples=n, noise=0.0, random_state=seed)
            # Noise columns on the scale of each informative one.
            low, high = X.min(axis=0), X.max(axis=0)
            X = _pad(
                X,
                p,
                lambda shape: (
                    low[rng.integers(0, 4, shape[1])]
                    + rng.random(shape) * (high - low)[rng.integers(0, 4, shape[1])]
                ),
            )
        return X, _with_noise(z, o["n"], rng)

    if kind == "piecewise":
        depth = max(1, int(o["m"]))
        X = uniform((n, p))
        n_nodes = 2**depth - 1
        feature = rng.integers(0, k, n_nodes)
        threshold = rng.uniform(-0.7, 0.7, n_nodes)
        node = np.zeros(n, dtype=int)
        for _ in range(depth):
            go_right = X[np.arange(n), feature[node]] > threshold[node]
            node = 2 * node + 1 + go_right
        values = rng.standard_normal(2**depth)
        z = values[node - n_nodes]
        if task == "regression":
            return X, _with_noise(z, o["n"], rng)
        y = (z > np.median(z)).astype("int64")
        return X, _flip(y, o["f"], 2, rng)

    if kind == "smooth":
        X = uniform((n, p))
        n_terms = 4 * k
        weights = rng.standard_normal((k, n_terms)) * o["w"]
        phases = rng.uniform(0.0, 2.0 * np.pi, n_terms)
        amplitudes = rng.standard_normal(n_terms) / np.sqrt(n_terms)
        z = np.sin(X[:, :k] @ weights + phases) @ amplitudes
        if task == "regression":
            return X, _with_noise(z, o["n"], rng)
        y = (z > np.median(z)).astype("int64")
        return X, _flip(y, o["f"], 2, rng)

    if kind == "bow":
        c = {"binary": 2, "multiclass": max(3, int(o["c"])), "regression": 1}[task]
        ranks = np.arange(1, p + 1)
        background = 1.0 / ranks
        background /= background.sum()
        # Each class's topic: a few dozen words of the vocabulary, not the commonest.
        topics = np.zeros((c, p))
        for j in range(c):
            words = rng.choice(p, size=max(5, p // 20), replace=False)
            topics[j, words] = rng.dirichlet(np.ones(len(words)))
        y = rng.integers(0, c, n)
        share = np.clip(o["d"] * rng.uniform(0.5, 1.5, n), 0.0, 1.0)[:, None]
        probs = (1.0 - share) * background + share * topics[y]
        lengths = np.maximum(5, rng.poisson(o["l"], n))
        X = rng.multinomial(lengths, probs)
        # No empty column: a word nobody used appears once.
        empty = np.flatnonzero(X.sum(axis=0) == 0)
        X[rng.integers(0, n, len(empty)), empty] = 1
        if task != "regression":
            return X.astype("int64"), y.astype("int64")
        beta = np.zeros(p)
        chosen = rng.choice(p, size=max(5, p // 20), replace=False)
        beta[chosen] = rng.standard_normal(len(chosen))
        z = (X / X.sum(axis=1, keepdims=True)) @ beta
        return X.astype("int64"), _with_noise(z, o["n"], rng)

    if kind == "curves":
        t = np.linspace(0.0, 1.0, p)
        shift = rng.uniform(-0.05, 0.05, n)
        scale = rng.uniform(0.8, 1.2, n)
        offset = 0.3 * rng.standard_normal(n)
        if task == "regression":
            freq = rng.uniform(1.0, 6.0, n)
            phase = rng.uniform(0.0, 2.0 * np.pi, n)
            curves = np.sin(2.0 * np.pi * freq[:, None] * (t + shift[:, None]) + phase[:, None])
            X = scale[:, None] * curves + offset[:, None] + o["n"] * rng.standard_normal((n, p))
            return X, freq
        c = 2 if task == "binary" else max(3, int(o["c"]))
        # Three Gaussian bumps shared by all classes; each class moves them and
        # rescales them a little, and each curve jitters them again and is shifted by
        # up to h: classes differ in shape, not in any single point.
        base_centres = rng.uniform(0.2, 0.8, 3)
        base_widths = rng.uniform(0.04, 0.12, 3)
        base_heights = rng.uniform(0.5, 1.5, 3) * rng.choice([-1.0, 1.0], 3)
        centres = base_centres + rng.uniform(-0.08, 0.08, (c, 3))
        heights = base_heights * rng.uniform(0.6, 1.4, (c, 3))
        y = rng.integers(0, c, n)
        h = o["h"]
        row_centres = centres[y] + 0.02 * rng.standard_normal((n, 3))
        row_centres += rng.uniform(-h, h, n)[:, None]
        row_heights = heights[y] * rng.uniform(0.8, 1.2, (n, 3))
        bumps = row_heights[:, None, :] * np.exp(
            -0.5 * ((t[None, :, None] - row_centres[:, None, :]) / base_widths) ** 2
        )
        X = scale[:, None] * bumps.sum(axis=2) + offset[:, None]
        X += o["n"] * rng.standard_normal((n, p))
        return X, y.astype("int64")

    raise ValueError(f"unknown structured kind {kind!r}")  # pragma: no cover


KINDS.update({kind: spec[0] for kind, spec in STRUCTURED.items()})


def is_synthetic(name: str) -> bool:
    """Whether ``name`` is in the synthetic namespace (it may still be malformed)."""
    return name.startswith("synthetic/")


def parse_name(name: str) -> tuple[str, str, int, int, int]:
    """Split a synthetic name into ``(kind, task, n_rows, n_features, seed)``.

    Raises:
        KeyError: Not a well-formed synthetic name or an unknown kind.
    """
    match = _NAME_RE.match(name)
    if match is None or match["kind"] not in KINDS:
        raise KeyError(
            f"bad synthetic name {name!r}: expected synthetic/<kind>-<task>-<rows>x<features>"
            f"[-s<seed>] with kind in {sorted(KINDS)}"
        )
    parse_knobs(name)
    seed = int(match["seed"] or 0)
    return match["kind"], match["task"], int(match["rows"]), int(match["features"]), seed


def synthetic_name(
    kind: str,
    task: str,
    n_rows: int,
    n_features: int,
    seed: int,
    knobs: dict[str, float] | None = None,
) -> str:
    """The canonical name of a synthetic dataset (knobs in the kind's order)."""
    name = f"synthetic/{kind}-{task}-{n_rows}x{n_features}-s{seed}"
    if knobs:
        order = list(STRUCTURED[kind][2]) if kind in STRUCTURED else sorted(knobs)
        name += "".join(f"-{key}{_fmt_knob(knobs[key])}" for key in order if key in knobs)
    return name


def synthetic_entry(name: str) -> CatalogEntry:
    """A catalog entry describing a synthetic dataset (nothing is generated).

    Raises:
        KeyError: Malformed name.
    """
    kind, task, n_rows, n_features, _ = parse_name(name)
    return CatalogEntry(
        name=name,
        source="synthetic",
        ref=name.removeprefix("synthetic/"),
        target="y",
        task=task,
        drop_columns=(),
        rows=n_rows,
        features=n_features,
        notes=KINDS[kind],
        group=f"synthetic/{kind}",
    )


def _basis(X: np.ndarray) -> np.ndarray:
    """Standardised nonlinear terms of the informative features: the raw signal."""
    n, k = X.shape
    transforms = (lambda v: v, np.sin, lambda v: v * v - 1.0, np.abs)
    terms = [transforms[j % len(transforms)](X[:, j]) for j in range(k)]
    if k >= 2:
        terms.append(X[:, 0] * X[:, 1])
    if not terms:
        return np.zeros((n, 1))
    basis = np.column_stack(terms)
    std = basis.std(axis=0)
    return (basis - basis.mean(axis=0)) / np.where(std > 0, std, 1.0)


def _labels_from_basis(
    basis: np.ndarray, task: str, rng: np.random.Generator, options: dict[str, Any]
) -> np.ndarray:
    n, q = basis.shape
    noise = float(options.get("noise", 0.5))
    if task == "multiclass":
        n_classes = int(options.get("n_classes", 5))
        # Each class prefers its own random direction in the signal space.
        scores = 2.0 * basis @ rng.standard_normal((q, n_classes)) / np.sqrt(q)
        scores += noise * rng.gumbel(size=(n, n_classes))
        shares = np.asarray(options.get("class_shares", np.ones(n_classes)), dtype=float)
        shares = shares / shares.sum()
        # Random directions favour some classes; tune per-class offsets until the
        # class shares are the intended ones (so "imbalanced" means what it says).
        bias = np.log(shares)
        for _ in range(50):
            counts = np.bincount((scores + bias).argmax(axis=1), minlength=n_classes)
            bias += 0.5 * np.log(shares / np.maximum(counts / n, 0.5 / n))
        return (scores + bias).argmax(axis=1).astype("int64")
    z = basis @ (rng.uniform(0.5, 1.5, q) * rng.choice([-1.0, 1.0], q))
    z = (z - z.mean()) / (z.std() or 1.0)
    scored = z + noise * rng.standard_normal(n)
    if task == "regression":
        return scored
    rate = float(options.get("positive_rate", 0.5))
    # An exact share of positives, whatever the signal's distribution.
    return (scored > np.quantile(scored, 1.0 - rate)).astype("int64")


def _categorical_column(
    rng: np.random.Generator, n_rows: int, n_levels: int
) -> tuple[pd.Categorical, np.ndarray]:
    """Zipf-like level frequencies; returns the column and each row's level effect."""
    weights = 1.0 / np.arange(1, n_levels + 1) ** 1.1
    codes = rng.choice(n_levels, size=n_rows, p=weights / weights.sum())
    effects = rng.standard_normal(n_levels)
    width = len(str(n_levels - 1))
    categories = [f"L{i:0{width}d}" for i in range(n_levels)]
    return pd.Categorical.from_codes(codes, categories=categories), effects[codes]


def make_synthetic(
    kind: str,
    n_rows: int,
    n_features: int,
    seed: int,
    *,
    task: str = "binary",
    shuffle_seed: int | None = None,
    **options: Any,
) -> LoadedDataset:
    """Generate a synthetic dataset; the same arguments always give the same data.

    Args:
        kind: One of :data:`KINDS`.
        n_rows: Rows.
        n_features: Feature columns.
        seed: Seed of the generator.
        task: ``binary``, ``multiclass`` or ``regression``.
        shuffle_seed: Seed of a final row shuffle (rows are exchangeable already, so
            this only mirrors ``load_dataset(seed=...)``); ``None`` keeps the order.
        **options: Overrides: ``noise`` (0.5), ``positive_rate``, ``n_classes``,
            ``missing_rate`` (0.3), ``n_informative``.

    Returns:
        The dataset, named by :func:`synthetic_name`.

    Raises:
        ValueError: Unknown kind or task, or sizes out of range.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown synthetic kind {kind!r}; expected one of {sorted(KINDS)}")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    if not 20 <= n_rows <= _MAX_ROWS or not 1 <= n_features <= _MAX_FEATURES:
        raise ValueError(f"sizes out of range: {n_rows} rows x {n_features} features")
    if kind == "many-classes" and task != "multiclass":
        raise ValueError("kind 'many-classes' needs task 'multiclass'")
    options = dict(options)
    rng = np.random.default_rng(seed)
    if kind in STRUCTURED:
        return _make_structured(kind, task, n_rows, n_features, seed, rng, options, shuffle_seed)

    if kind == "imbalanced":
        options.setdefault("positive_rate", 0.01)
        n_classes = int(options.setdefault("n_classes", 6))
        options.setdefault("class_shares", 0.45 ** np.arange(n_classes))
    if kind == "many-classes":
        options.setdefault("n_classes", 30)
        options.setdefault("noise", 0.3)

    default_informative = {"high-dim": 10, "noise": 5}.get(kind, min(n_features, 8))
    n_informative = min(n_features, int(options.get("n_informative", default_informative)))

    columns: dict[str, Any] = {}
    if kind == "high-cardinality":
        n_cat = max(1, n_features // 2)
        n_num = n_features - n_cat
        levels = np.unique(np.geomspace(10, max(11, n_rows // 5), num=n_cat).astype(int)).tolist()
        levels += [levels[-1]] * (n_cat - len(levels))
        numeric = rng.standard_normal((n_rows, n_num))
        effects = []
        for j in range(n_num):
            columns[f"num_{j}"] = numeric[:, j]
        for j, n_levels in enumerate(levels):
            column, effect = _categorical_column(rng, n_rows, int(n_levels))
            columns[f"cat_{j}"] = column
            if j < 3:
                effects.append(effect)
        basis = np.column_stack([_basis(numeric[:, : min(n_num, 4)]), *effects])
    else:
        X = rng.standard_normal((n_rows, n_features))
        basis = _basis(X[:, :n_informative])
        if kind == "missing":
            rate = float(options.get("missing_rate", 0.3))
            X[rng.random(X.shape) < rate] = np.nan
        for j in range(n_features):
            columns[f"x{j}"] = X[:, j]

    y_values = _labels_from_basis(basis, task, rng, options)
    if kind == "pure-noise":
        # Labels shuffled away from their rows: no feature carries any signal.
        y_values = rng.permutation(y_values)
    frame = pd.DataFrame(columns)
    y = pd.Series(y_values, name="y")
    classes: tuple[str, ...] = ()
    if task != "regression":
        present = np.unique(y_values)
        remap = {int(old): new for new, old in enumerate(present)}
        y = y.map(remap).astype("int64")
        classes = tuple(str(int(c)) for c in present)
    else:
        y = y.astype("float64")

    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(n_rows)
        frame = frame.iloc[order].reset_index(drop=True)
        y = y.iloc[order].reset_index(drop=True)
    return LoadedDataset(
        name=synthetic_name(kind, task, n_rows, n_features, seed),
        task=task,
        X=frame,
        y=y,
        source="synthetic",
        classes=classes,
    )


def _make_structured(
    kind: str,
    task: str,
    n_rows: int,
    n_features: int,
    seed: int,
    rng: np.random.Generator,
    knobs: dict[str, Any],
    shuffle_seed: int | None,
) -> LoadedDataset:
    unknown = sorted(set(knobs) - set(STRUCTURED[kind][2]))
    if unknown:
        raise ValueError(
            f"kind {kind!r} has no knob {unknown}; it has {sorted(STRUCTURED[kind][2])}"
        )
    knobs = {key: float(value) for key, value in knobs.items()}
    X, y_values = _structured(kind, task, n_rows, n_features, rng, seed, knobs)
    frame = pd.DataFrame(X, columns=[f"x{j}" for j in range(n_features)])
    classes: tuple[str, ...] = ()
    if task == "regression":
        y = pd.Series(np.asarray(y_values, dtype="float64"), name="y")
    else:
        present, codes = np.unique(y_values, return_inverse=True)
        y = pd.Series(codes.astype("int64"), name="y")
        classes = tuple(str(int(c)) for c in present)
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(n_rows)
        frame = frame.iloc[order].reset_index(drop=True)
        y = y.iloc[order].reset_index(drop=True)
    return LoadedDataset(
        name=synthetic_name(kind, task, n_rows, n_features, seed, knobs),
        task=task,
        X=frame,
        y=y,
        source="synthetic",
        classes=classes,
    )


def make_synthetic_by_name(name: str, *, shuffle_seed: int | None = None) -> LoadedDataset:
    """Generate the dataset a synthetic name describes.

    The returned dataset keeps ``name`` as given (so a name without ``-s<seed>``
    round-trips).

    Raises:
        KeyError: Malformed name.
    """
    kind, task, n_rows, n_features, seed = parse_name(name)
    knobs = parse_knobs(name)
    try:
        data = make_synthetic(
            kind, n_rows, n_features, seed, task=task, shuffle_seed=shuffle_seed, **knobs
        )
    except ValueError as exc:
        raise KeyError(f"bad synthetic name {name!r}: {exc}") from exc
    return LoadedDataset(
        name=name, task=data.task, X=data.X, y=data.y, source=data.source, classes=data.classes
    )
