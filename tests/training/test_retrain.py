"""The retrain job against a real store (every backend): promotion rules, locks, crash safety."""

from __future__ import annotations

from pathlib import Path

import pytest

from hyperprior.db import migrate
from hyperprior.db.engine import make_engine
from hyperprior.db.store import Store
from hyperprior.training import retrain as retrain_module
from hyperprior.training.retrain import export_active, install_shipped, retrain
from hyperprior.training.suggest import surrogate_from_record
from hyperprior.training.surrogate import SurrogateIntegrityError, SurrogateParams
from hyperprior.training.synthetic_history import SyntheticHistory, new_runs

FAMILY = "lightgbm"
GOOD = SurrogateParams(n_members=2, n_rounds=25, num_leaves=7, min_data_in_leaf=10, cv_folds=3)
# Two shallow trees at a tiny learning rate: predictions barely depend on the config.
BAD = SurrogateParams(
    n_members=2, n_rounds=2, num_leaves=2, learning_rate=0.01, min_data_in_leaf=10, cv_folds=3
)


@pytest.fixture
def history_store(store: Store) -> Store:
    frame = SyntheticHistory(FAMILY, seed=21).frame(12, 16, n_reduced=0)
    store.ingest_runs(new_runs(frame))
    return store


def test_first_retrain_activates_a_verified_candidate(history_store: Store) -> None:
    result = retrain(history_store, FAMILY, params=GOOD)
    assert result.outcome == "activated"
    assert result.n_datasets == 12
    active = history_store.find_active_surrogate(FAMILY)
    assert active is not None
    assert active.id == result.candidate_id
    assert active.metrics["regret_at_1"] == result.metrics["regret_at_1"]
    loaded = surrogate_from_record(active)
    assert loaded.family == FAMILY
    assert len(active.meta["portfolio"]) == 12
    # The lock is released: another retrain may start at once.
    assert history_store.try_acquire_lock(f"retrain:{FAMILY}", "someone", 60)


def test_a_worse_candidate_is_kept_out_and_rollback_works(history_store: Store) -> None:
    good = retrain(history_store, FAMILY, params=GOOD)
    bad = retrain(history_store, FAMILY, params=BAD)
    assert bad.outcome == "kept"
    assert bad.active_metrics is not None
    assert bad.metrics["regret_at_1"] > bad.active_metrics["regret_at_1"]
    # The active model's recipe was re-evaluated on the same runs, not read from storage.
    assert bad.metrics["compared_with"]["id"] == good.candidate_id
    assert history_store.find_active_surrogate(FAMILY).id == good.candidate_id
    statuses = {s.id: s.status for s in history_store.list_surrogates(FAMILY)}
    assert statuses == {good.candidate_id: "active", bad.candidate_id: "candidate"}
    # Roll forward by hand, then back.
    history_store.activate_surrogate(bad.candidate_id)
    assert history_store.find_active_surrogate(FAMILY).id == bad.candidate_id
    history_store.activate_surrogate(good.candidate_id)
    assert history_store.find_active_surrogate(FAMILY).id == good.candidate_id


def test_same_recipe_on_more_data_is_promoted(history_store: Store) -> None:
    first = retrain(history_store, FAMILY, params=GOOD)
    more = SyntheticHistory(FAMILY, seed=21).frame(4, 16, n_reduced=0, start=100)
    history_store.ingest_runs(new_runs(more))
    second = retrain(history_store, FAMILY, params=GOOD)
    assert second.outcome == "activated"
    assert second.n_datasets == 16
    assert second.previous_id == first.candidate_id


def test_force_and_tolerance(history_store: Store) -> None:
    retrain(history_store, FAMILY, params=GOOD)
    forced = retrain(history_store, FAMILY, params=BAD, force=True)
    assert forced.outcome == "activated"
    assert forced.reason == "forced"
    tolerant = retrain(history_store, FAMILY, params=GOOD, tolerance=1.0)
    assert tolerant.outcome == "activated"


def test_retired_surrogates_are_pruned_after_an_activation(history_store: Store) -> None:
    first = retrain(history_store, FAMILY, params=GOOD, keep_retired=1)
    second = retrain(history_store, FAMILY, params=BAD, force=True, keep_retired=1)
    assert second.pruned == 0  # one retired: within the limit
    third = retrain(history_store, FAMILY, params=GOOD, force=True, keep_retired=1)
    assert third.pruned == 1
    kept = retrain(history_store, FAMILY, params=BAD, keep_retired=0)
    assert (kept.outcome, kept.pruned) == ("kept", 0)  # no activation: no pruning
    statuses = {s.id: s.status for s in history_store.list_surrogates(FAMILY)}
    assert statuses == {
        third.candidate_id: "active",
        second.candidate_id: "retired",
        kept.candidate_id: "candidate",
    }
    assert first.candidate_id not in statuses


def test_a_held_lock_stops_a_second_retrain_until_it_expires(
    history_store: Store, clock: object
) -> None:
    assert history_store.try_acquire_lock(f"retrain:{FAMILY}", "other-host:1", 600)
    blocked = retrain(history_store, FAMILY, params=GOOD)
    assert blocked.outcome == "locked"
    assert history_store.list_surrogates(FAMILY) == []
    clock.advance(601)  # type: ignore[attr-defined]  # the other retrain died: its lease ran out
    assert retrain(history_store, FAMILY, params=GOOD).outcome == "activated"


def test_a_crash_leaves_the_active_model_serving(
    history_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = retrain(history_store, FAMILY, params=GOOD)

    def boom(*args: object, **kwargs: object) -> None:
        raise MemoryError("killed while fitting")

    monkeypatch.setattr(retrain_module, "fit", boom)
    with pytest.raises(MemoryError):
        retrain(history_store, FAMILY, params=GOOD)
    assert history_store.find_active_surrogate(FAMILY).id == good.candidate_id
    assert len(history_store.list_surrogates(FAMILY)) == 1
    assert history_store.try_acquire_lock(f"retrain:{FAMILY}", "next", 60)


def test_too_little_history_trains_nothing(store: Store) -> None:
    frame = SyntheticHistory(FAMILY, seed=2).frame(2, 8, n_reduced=0)
    store.ingest_runs(new_runs(frame))
    result = retrain(store, FAMILY, params=GOOD)
    assert result.outcome == "no_data"
    assert store.list_surrogates(FAMILY) == []


def test_export_and_install_shipped_surrogates(history_store: Store, tmp_path: Path) -> None:
    first = retrain(history_store, FAMILY, params=GOOD)
    written = export_active(history_store, tmp_path, [FAMILY, "linear"])
    assert [p.name for p in written] == [f"{FAMILY}.json"]

    other = Store(make_engine(f"sqlite:///{tmp_path / 'other.db'}"))
    migrate.upgrade(other.engine)
    assert install_shipped(other, tmp_path) == {FAMILY: 1}
    installed = other.find_active_surrogate(FAMILY)
    assert installed.sha256 == history_store.get_surrogate(first.candidate_id).sha256
    assert installed.metrics == first.metrics
    assert install_shipped(other, tmp_path) == {FAMILY: None}  # an active one is kept

    text = tmp_path / f"{FAMILY}.txt"
    text.write_text(text.read_text().replace("leaf_value=", "leaf_value=1", 1))
    fresh = Store(make_engine(f"sqlite:///{tmp_path / 'fresh.db'}"))
    migrate.upgrade(fresh.engine)
    with pytest.raises(SurrogateIntegrityError, match="sha256"):
        install_shipped(fresh, tmp_path)
    assert fresh.list_surrogates() == []


def test_a_request_naming_another_metric_is_ranked_by_it(store: Store) -> None:
    import numpy as np

    from hyperprior.training.retrain import retrain_family
    from hyperprior.training.suggest import SuggestionEngine, SuggestionRequest

    history = SyntheticHistory(FAMILY, seed=21)
    space = history._space()

    def mirrored(configs: list[dict], meta: dict) -> np.ndarray:
        # The metrics disagree: log-loss is best where accuracy's landscape, mirrored, is.
        unit = np.asarray(space.encode_many(configs), dtype=np.float64)
        return history._quality(1.0 - unit, meta, 1.0)

    frame = history.frame(12, 16, n_reduced=0, tasks=("multiclass",))
    mf = [c for c in frame.columns if c.startswith("mf_")]
    frame["metrics"] = [
        {"log_loss": float(1.0 - mirrored([row["config"]], {c[3:]: row[c] for c in mf})[0])}
        for row in frame.to_dict("records")
    ]
    store.ingest_runs(new_runs(frame))

    results = retrain_family(store, FAMILY, params=GOOD, min_target_datasets=10)

    assert [(r.target, r.outcome) for r in results] == [
        ("", "activated"),
        ("log_loss", "activated"),
    ]
    assert store.find_active_surrogate(FAMILY, "log_loss").meta["target"] == "log_loss"
    # Log-loss has no 0-1 scale to measure a flat dataset in: its groups weigh the same.
    assert store.find_active_surrogate(FAMILY, "log_loss").meta["params"]["spread_scale"] == 0
    assert store.find_active_surrogate(FAMILY).meta["params"]["spread_scale"] > 0
    engine = SuggestionEngine(store, store)
    rng = np.random.default_rng(3)
    by_metric, by_primary = [], []
    for _ in range(6):
        meta = history.sample_meta(rng, "multiclass")
        asked = engine.suggest(SuggestionRequest(FAMILY, "multiclass", meta, metric="log_loss"))
        plain = engine.suggest(SuggestionRequest(FAMILY, "multiclass", meta))
        assert (asked.ranked_by, plain.ranked_by) == ("log_loss", "accuracy")
        assert not any("ranked by that, not by" in w for w in asked.warnings)
        for result, out in ((asked, by_metric), (plain, by_primary)):
            configs = [s.config for s in result.suggestions]
            out.append((mirrored(configs, meta).mean(), history.true_quality(configs, meta).mean()))
    # Each ranking is better at its own metric, on every new dataset.
    for (m_loss, m_acc), (p_loss, p_acc) in zip(by_metric, by_primary, strict=True):
        assert m_loss > p_loss
        assert p_acc > m_acc
    # A metric without a surrogate falls back to the primary one, and says so.
    f1 = engine.suggest(SuggestionRequest(FAMILY, "multiclass", meta, metric="f1_macro"))
    assert f1.ranked_by == "accuracy"
    assert any("ranked by that, not by f1_macro" in w for w in f1.warnings)
    # A metric of another task: the log-loss surrogate knows no regression data.
    meta = history.sample_meta(rng, "regression")
    other = engine.suggest(SuggestionRequest(FAMILY, "regression", meta, metric="log_loss"))
    assert other.ranked_by == "r2"
    assert any("ranked by that, not by log_loss" in w for w in other.warnings)


def test_targets_need_enough_datasets(store: Store) -> None:
    from hyperprior.training.retrain import retrain_family, targets_with_data

    frame = SyntheticHistory(FAMILY, seed=21).frame(6, 8, n_reduced=0)
    frame["metrics"] = [{"log_loss": 0.5, "mae": 1.0} for _ in range(len(frame))]
    store.ingest_runs(new_runs(frame))
    runs = store.runs_frame(family=FAMILY)

    # Each metric counts on the datasets of the tasks that have it (2 of 6 for mae).
    assert targets_with_data(runs, min_datasets=2) == ["log_loss", "mae"]
    assert targets_with_data(runs, min_datasets=3) == ["log_loss"]
    assert targets_with_data(runs, min_datasets=5) == []
    # Measured on a third of the datasets only: the subset would be skewed.
    some = runs["dataset_id"].isin(runs["dataset_id"].unique()[:3])
    runs["metrics"] = [m if keep else None for m, keep in zip(runs["metrics"], some, strict=True)]
    assert targets_with_data(runs, min_datasets=1) == []
    assert targets_with_data(runs, min_datasets=1, min_coverage=0.5) == ["log_loss", "mae"]
    assert [r.target for r in retrain_family(store, FAMILY, params=GOOD)] == [""]
    with pytest.raises(ValueError, match="unknown target 'r2'"):
        retrain(store, FAMILY, target="r2")


def test_catch_up_reads_no_runs_once_every_metric_was_trained() -> None:
    from types import SimpleNamespace

    from hyperprior.training.retrain import TARGETS, retrain_missing_targets

    class Trained:
        def list_surrogates(self, family: str) -> list[SimpleNamespace]:
            return [SimpleNamespace(target=t) for t in ("", *TARGETS)]

        def runs_frame(self, **_: object) -> None:
            raise AssertionError("a restart must not read the history again")

    assert retrain_missing_targets(Trained(), FAMILY) == []
