"""Dataset identity: one record per (name, task, version), matched by the core shape."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, func, select, text

from hyperprior.db import migrate
from hyperprior.db.engine import make_engine
from hyperprior.db.errors import DatasetConflictError, InvalidArgumentError
from hyperprior.db.models import JSONType
from hyperprior.db.store import DatasetSpec, NewRun, Store

CSV_BARE = DatasetSpec("nmes", "binary", {"n_rows": 4406, "n_features": 18})
CSV_CLASSES = DatasetSpec("nmes", "binary", {"n_rows": 4406, "n_features": 18, "n_classes": 2})
SDK_RICH = DatasetSpec(
    "nmes",
    "binary",
    {
        "n_rows": 4406.0,
        "n_features": 18,
        "n_classes": 2,
        "class_entropy_norm": 0.79,
        "frac_numeric": 0.5,
        "skewness_mean": None,
    },
    data_sha256="a" * 64,
)


def _run(dataset: DatasetSpec | None, index: int = 0, **overrides: Any) -> NewRun:
    values: dict[str, Any] = {
        "id": uuid.uuid5(uuid.NAMESPACE_URL, f"identity-{index}"),
        "family": "lightgbm",
        "config": {"learning_rate": 0.1, "num_leaves": 31 + index},
        "metric": "roc_auc",
        "direction": "maximize",
        "score": 0.7 + index / 1000,
        "fidelity": 1.0,
        "cost_seconds": 2.0,
        "source": "import",
        "dataset": dataset,
    }
    values.update(overrides)
    return NewRun(**values)


def _snapshot(store: Store) -> tuple[Any, ...]:
    datasets = store.list_datasets(limit=1000).data
    return tuple(datasets), store.stats().runs


def test_one_dataset_described_three_ways_is_one_record(store: Store) -> None:
    first = store.ingest_runs([_run(CSV_BARE, 0)])
    second = store.ingest_runs([_run(CSV_CLASSES, 1)])
    third = store.ingest_runs([_run(SDK_RICH, 2)])

    (only,) = store.list_datasets().data
    assert first.dataset_ids == second.dataset_ids == third.dataset_ids == (only.id,)
    assert (only.name, only.version, only.n_rows, only.n_classes) == ("nmes", 1, 4406, 2)
    # Filled in from the richer descriptions; a null never overwrites or fills.
    assert only.meta_features["class_entropy_norm"] == pytest.approx(0.79)
    assert only.meta_features["n_classes"] == 2
    assert "skewness_mean" not in only.meta_features
    assert only.data_sha256 == "a" * 64
    assert only.fingerprint == Store.dataset_fingerprint(CSV_BARE)
    assert store.stats().runs == 3
    # Describing it again changes nothing.
    assert store.ensure_dataset(CSV_BARE) == only


def test_other_data_under_a_stored_name_is_refused_and_nothing_changes(store: Store) -> None:
    stored = store.ensure_dataset(SDK_RICH)
    before = _snapshot(store)
    other_rows = DatasetSpec("nmes", "binary", {"n_rows": 4000, "n_features": 18})
    other_hash = dataclasses.replace(SDK_RICH, data_sha256="b" * 64)
    other_classes = DatasetSpec(
        "nmes", "binary", {"n_rows": 4406, "n_features": 18, "n_classes": 3}
    )

    with pytest.raises(DatasetConflictError, match=r"n_rows: stored 4406, sent 4000") as error:
        # The first run is fine: the batch is all or nothing.
        store.ingest_runs([_run(CSV_BARE, 0), _run(other_rows, 1)])
    with pytest.raises(DatasetConflictError, match="data_sha256: stored a+, sent b+"):
        store.ingest_runs([_run(other_hash, 2)])
    with pytest.raises(DatasetConflictError, match="n_classes: stored 2, sent 3"):
        store.ensure_dataset(other_classes)

    assert error.value.dataset_id == stored.id
    assert f"id {stored.id} (version 1)" in str(error.value)
    assert '"version": 2' in str(error.value)
    assert _snapshot(store) == before


def test_a_new_version_is_asked_for_and_found_again_by_its_data(store: Store) -> None:
    v1 = store.ensure_dataset(CSV_CLASSES)
    other = DatasetSpec("nmes", "binary", {"n_rows": 5000, "n_features": 18}, version=2)

    v2 = store.ensure_dataset(other)
    again = store.ingest_runs([_run(dataclasses.replace(other, version=None), 0)])
    same_v1 = store.ingest_runs([_run(CSV_BARE, 1)])

    assert (v1.version, v2.version) == (1, 2)
    assert v2.id != v1.id
    assert v2.fingerprint != v1.fingerprint
    assert again.dataset_ids == (v2.id,)
    assert same_v1.dataset_ids == (v1.id,)
    # A version that holds other data is refused too, and names the next free one.
    with pytest.raises(DatasetConflictError, match=r'version 2 .*"version": 3'):
        store.ensure_dataset(dataclasses.replace(CSV_CLASSES, version=2))
    store.ensure_dataset(dataclasses.replace(other, version=3))
    with pytest.raises(DatasetConflictError, match=r"--dataset-version 4"):
        store.ensure_dataset(dataclasses.replace(CSV_CLASSES, version=2))
    # Another task is another dataset.
    regression = store.ensure_dataset(
        DatasetSpec("nmes", "regression", {"n_rows": 1, "n_features": 1})
    )
    assert regression.version == 1
    assert store.list_datasets(name="nmes").count == 4


def test_one_batch_with_two_datasets_of_one_name_is_refused(store: Store) -> None:
    other = DatasetSpec("nmes", "binary", {"n_rows": 10, "n_features": 18})

    with pytest.raises(DatasetConflictError, match="already stored with other data"):
        store.ingest_runs([_run(CSV_BARE, 0), _run(other, 1)])

    assert _snapshot(store) == ((), 0)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (dataclasses.replace(CSV_BARE, version=0), "version must be an integer >= 1"),
        (dataclasses.replace(CSV_BARE, version=True), "version must be an integer >= 1"),
        (dataclasses.replace(CSV_BARE, data_sha256="ABC"), "data_sha256 must be 64 lowercase"),
    ],
)
def test_version_and_hash_are_validated(store: Store, spec: DatasetSpec, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        store.ensure_dataset(spec)


def test_ingest_returns_referenced_and_created_dataset_ids(store: Store) -> None:
    iris = store.ensure_dataset(DatasetSpec("iris", "multiclass", {"n_rows": 150, "n_features": 4}))

    result = store.ingest_runs(
        [_run(CSV_BARE, 0), _run(None, 1, dataset_id=iris.id), _run(CSV_CLASSES, 2)]
    )

    nmes = store.list_datasets(name="nmes").data[0]
    assert result.dataset_ids == (nmes.id, iris.id)


# ----------------------------------------------------------------------------- migration

_OLD_DATASETS = [
    # id, name, task, meta: three records of one dataset, one of other data, one alone.
    (1, "nmes", "binary", {"n_rows": 4406, "n_features": 18}),
    (2, "nmes", "binary", {"n_rows": 4406, "n_features": 18, "n_classes": 2}),
    (3, "nmes", "binary", {"n_rows": 4406, "n_features": 18, "n_classes": 2, "skew": 1.5}),
    (4, "nmes", "binary", {"n_rows": 999, "n_features": 18, "n_classes": 2}),
    (5, "iris", "multiclass", {"n_rows": 150, "n_features": 4, "n_classes": 3}),
]


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _old_fingerprint(name: str, task: str, meta: dict[str, Any]) -> str:
    # The store's fingerprint before 0005: every meta-feature, as 10-digit floats.
    canonical = {k: float(f"{float(v):.10g}") for k, v in sorted(meta.items())}
    payload = {"name": name, "task": task, "meta_features": canonical}
    return hashlib.sha256(_canonical(payload).encode()).hexdigest()


def _old_content_sha(fingerprint: str, run: NewRun) -> str:
    body = repr(
        (
            run.family,
            run.metric,
            run.direction,
            run.score,
            run.fidelity,
            run.cost_seconds,
            run.status,
            run.error,
            run.source,
        )
    )
    digest = hashlib.sha256(f"{body}\x00{_canonical(dict(run.config))}".encode()).digest()
    return hashlib.sha256(fingerprint.encode() + digest).hexdigest()


def _fill_revision_0004(engine: Engine) -> list[NewRun]:
    """Datasets and runs as the store of revision 0004 wrote them; returns the runs."""
    from sqlalchemy import column, table
    from sqlalchemy.types import DateTime, Integer, String

    datasets = table(
        "datasets",
        column("id", Integer),
        column("name", String),
        column("fingerprint", String),
        column("task", String),
        column("n_rows", Integer),
        column("n_features", Integer),
        column("n_classes", Integer),
        column("meta_features", JSONType),
        column("created_at", DateTime),
    )
    runs_table = table(
        "runs",
        *(column(name) for name in ("id", "dataset_id", "family", "metric", "direction")),
        column("config", JSONType),
        *(column(name) for name in ("score", "fidelity", "cost_seconds", "status", "source")),
        column("content_sha", String),
        column("created_at", DateTime),
    )
    runs: list[NewRun] = []
    with engine.begin() as conn:
        for id_, name, task, meta in _OLD_DATASETS:
            conn.execute(
                datasets.insert().values(
                    id=id_,
                    name=name,
                    fingerprint=_old_fingerprint(name, task, meta),
                    task=task,
                    n_rows=meta["n_rows"],
                    n_features=meta["n_features"],
                    n_classes=meta.get("n_classes"),
                    meta_features=meta,
                    created_at=text("CURRENT_TIMESTAMP"),
                )
            )
            for k in range(2):
                run = _run(DatasetSpec(name, task, meta), 10 * id_ + k)
                runs.append(run)
                conn.execute(
                    runs_table.insert().values(
                        id=str(run.id),
                        dataset_id=id_,
                        family=run.family,
                        metric=run.metric,
                        direction=run.direction,
                        config=dict(run.config),
                        score=run.score,
                        fidelity=run.fidelity,
                        cost_seconds=run.cost_seconds,
                        status=run.status,
                        source=run.source,
                        content_sha=_old_content_sha(_old_fingerprint(name, task, meta), run),
                        created_at=text("CURRENT_TIMESTAMP"),
                    )
                )
    return runs


def test_migration_merges_duplicate_records_and_keeps_every_run(blank_db_url: str) -> None:
    engine = make_engine(blank_db_url)
    try:
        with engine.begin() as conn:
            command.upgrade(migrate.alembic_config(conn), "0004_surrogate_target")
        runs = _fill_revision_0004(engine)

        with engine.begin() as conn:
            command.upgrade(migrate.alembic_config(conn), "0005_dataset_identity")

        store = Store(engine)
        by_name = {(d.name, d.version): d for d in store.list_datasets().data}
        assert sorted(by_name) == [("iris", 1), ("nmes", 1), ("nmes", 2)]
        merged, other = by_name["nmes", 1], by_name["nmes", 2]
        assert (merged.id, merged.n_classes, merged.meta_features["skew"]) == (1, 2, 1.5)
        assert (other.id, other.n_rows) == (4, 999)
        counts = {d.id: store.list_runs(dataset_id=d.id).count for d in by_name.values()}
        assert counts == {1: 6, 4: 2, 5: 2}
        for dataset in by_name.values():
            assert dataset.fingerprint == Store.dataset_fingerprint(
                DatasetSpec(dataset.name, dataset.task, dataset.meta_features, dataset.version)
            )
        # Re-sending the stored runs as they were described is a harmless duplicate
        # (their content_sha was recomputed); the 999-row one finds its version 2.
        result = store.ingest_runs(runs)
        assert (result.inserted, result.duplicates) == (0, len(runs))
        assert set(result.dataset_ids) == {1, 4, 5}

        with engine.begin() as conn:
            command.downgrade(migrate.alembic_config(conn), "0004_surrogate_target")
        with engine.connect() as conn:
            n_runs = conn.execute(select(func.count()).select_from(text("runs"))).scalar_one()
            fingerprints = conn.execute(text("SELECT id, fingerprint FROM datasets")).all()
        assert n_runs == len(runs)
        assert dict(fingerprints)[5] == _old_fingerprint("iris", "multiclass", _OLD_DATASETS[4][3])
    finally:
        engine.dispose()
