"""The same requests give the same answers as the golden file, bit for bit.

The golden answers were first written by the policy before the suggestion-speed work
(issue 19), which kept them bit for bit, with a frozen copy of the shipped surrogates
(``data/suggest_golden/``, gzipped, loaded through the sha256 check like any registered
model). They were regenerated on purpose, with copies of the surrogates shipped then,
when the surrogates' inputs changed: features version 3 (the ``lm_gbdt`` landmarker;
2026-12-06 night), and features version 4 with the guard rule for the first suggestion
(2026-12-07). Any change to how candidates are built, scored or picked shows
up here as a diff of configs, predictions or explanations.

Regenerate only for an intended change of the answers, and say so in the commit::

    python tests/training/test_suggest_golden.py --update
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hyperprior.training.suggest import (  # noqa: E402
    Portfolio,
    SuggestionPolicy,
    SuggestionRequest,
    SuggestionResult,
)
from hyperprior.training.surrogate import Surrogate, from_text  # noqa: E402

DATA = Path(__file__).resolve().parent / "data" / "suggest_golden"
ANSWERS = DATA / "answers.json"
FAMILIES = ("lightgbm", "random_forest")


def load_surrogate(family: str) -> Surrogate:
    """The frozen surrogate of ``family`` (sha256 checked before parsing)."""
    text = gzip.decompress((DATA / f"{family}.txt.gz").read_bytes()).decode("utf-8")
    meta = json.loads(gzip.decompress((DATA / f"{family}.json.gz").read_bytes()))
    return from_text(text, meta)


def make_policy(family: str) -> SuggestionPolicy:
    """A fresh policy (empty caches) on the frozen surrogate and its portfolio."""
    surrogate = load_surrogate(family)
    portfolio = Portfolio.from_json(family, surrogate.metadata["portfolio"])
    return SuggestionPolicy(family, surrogate=surrogate, portfolio=portfolio)


def requests() -> list[SuggestionRequest]:
    """Fixed requests: every task, several seeds and sizes, fixed params, far data."""
    from hyperprior.training.synthetic_history import SyntheticHistory

    out = []
    for family in FAMILIES:
        history = SyntheticHistory(family, seed=0)
        rng = np.random.default_rng(20261206)
        for i, (task, n, seed) in enumerate(
            [
                ("binary", 5, 0),
                ("binary", 10, 1),
                ("binary", 1, None),
                ("multiclass", 5, 0),
                ("multiclass", 7, 42),
                ("regression", 5, 0),
                ("regression", 3, 9),
            ]
        ):
            meta = history.sample_meta(rng, task)
            out.append(
                SuggestionRequest(family, task, meta, n=n, seed=seed, dataset_name=f"golden{i}")
            )
        # Far from every dataset of the history: the default-first rule and its warning.
        far = {"n_rows": 5_000_000, "n_features": 20_000, "n_classes": 2}
        out.append(SuggestionRequest(family, "binary", far, n=5, seed=3))
        # A metric the surrogate does not rank by: a warning, same ranking.
        meta = history.sample_meta(rng, "binary")
        out.append(SuggestionRequest(family, "binary", meta, n=5, seed=0, metric="accuracy"))
        # Datasets of the history itself, every meta-feature known (landmarkers too), so
        # their portfolio configs compete.
        portfolio = load_surrogate(family).metadata["portfolio"]
        for key in sorted(portfolio)[:6]:
            known = {k: v for k, v in portfolio[key]["meta"].items() if v is not None}
            # The index stores logs; requests give the counts (the rest is derived).
            known["n_rows"] = round(np.exp(known.pop("log_n_rows")))
            known["n_features"] = round(np.exp(known.pop("log_n_features")))
            known.pop("ratio_features_rows", None)
            if "n_classes" in known:
                known["n_classes"] = int(known["n_classes"])
            task = portfolio[key]["task"]
            out.append(SuggestionRequest(family, task, known, n=5, seed=0))
    fixed = {
        "lightgbm": {"num_leaves": 63, "subsample": 0.7},
        "random_forest": {"bootstrap": False},
    }
    for family, params in fixed.items():
        meta = SyntheticHistory(family, seed=0).sample_meta(np.random.default_rng(5), "binary")
        out.append(SuggestionRequest(family, "binary", meta, n=5, seed=2, fixed=params))
    return out


def as_json(result: SuggestionResult) -> Any:
    """The answer as plain JSON (tuples become lists), as the golden file stores it."""
    return json.loads(json.dumps(dataclasses.asdict(result), default=str))


def request_json(request: SuggestionRequest) -> Any:
    return json.loads(json.dumps(dataclasses.asdict(request), default=str))


def answers() -> list[dict[str, Any]]:
    """Every fixed request answered by a fresh policy of its family."""
    policies = {f: make_policy(f) for f in FAMILIES}
    return [
        {"request": request_json(r), "answer": as_json(policies[r.family].suggest(r))}
        for r in requests()
    ]


@pytest.fixture(scope="module")
def golden() -> list[dict[str, Any]]:
    return json.loads(ANSWERS.read_text(encoding="utf-8"))


def test_frozen_surrogates_load_through_the_sha256_check() -> None:
    for family in FAMILIES:
        surrogate = load_surrogate(family)
        assert surrogate.sha256 == surrogate.metadata["sha256"]


def test_same_requests_same_answers_as_the_golden_file(golden: list[dict[str, Any]]) -> None:
    fresh = answers()
    assert [g["request"] for g in golden] == [f["request"] for f in fresh]
    for want, got in zip(golden, fresh, strict=True):
        assert got["answer"] == want["answer"], want["request"]


def test_answers_do_not_depend_on_what_was_asked_before(golden: list[dict[str, Any]]) -> None:
    # Caches (Sobol pools, portfolio blocks, answers) must not leak between requests:
    # the same requests in reverse order on one policy give the same answers.
    policies = {f: make_policy(f) for f in FAMILIES}
    reqs = requests()
    for i in reversed(range(len(reqs))):
        got = as_json(policies[reqs[i].family].suggest(reqs[i]))
        assert got == golden[i]["answer"], golden[i]["request"]


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit(__doc__)
    ANSWERS.write_text(json.dumps(answers(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {ANSWERS}")
