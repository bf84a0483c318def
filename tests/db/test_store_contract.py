"""The store contract, run against every backend (``store`` is parametrised)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import threading
import uuid
from typing import Any

import pytest

from hyperprior.db.engine import make_engine
from hyperprior.db.errors import (
    AlreadyExistsError,
    ConflictError,
    DatabaseUnavailableError,
    InvalidArgumentError,
    InvalidStateError,
    NotFoundError,
    UnknownDatasetError,
)
from hyperprior.db.store import DatasetSpec, NewRun, Store

IRIS = DatasetSpec("iris", "multiclass", {"n_rows": 150, "n_features": 4, "n_classes": 3})
WINE = DatasetSpec(
    "wine", "binary", {"n_rows": 178, "n_features": 13, "n_classes": 2, "entropy": 0.97}
)
DIABETES = DatasetSpec("diabetes", "regression", {"n_rows": 442, "n_features": 10})


def new_run(index: int = 0, *, dataset: DatasetSpec | None = IRIS, **overrides: Any) -> NewRun:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "family": "lightgbm",
        "config": {"learning_rate": 0.1, "num_leaves": 31 + index},
        "metric": "accuracy",
        "direction": "maximize",
        "score": 0.5 + index / 1000,
        "fidelity": 1.0,
        "cost_seconds": 2.0,
        "source": "user",
        "dataset": dataset,
    }
    values.update(overrides)
    return NewRun(**values)


# ----------------------------------------------------------------------------- ingest


def test_ingest_inserts_runs_and_reads_them_back(store: Store) -> None:
    runs = [new_run(i) for i in range(5)]

    result = store.ingest_runs(runs)

    assert (result.inserted, result.duplicates) == (5, 0)
    stored = store.get_run(runs[2].id)
    assert stored.id == runs[2].id
    assert stored.config == {"learning_rate": 0.1, "num_leaves": 33}
    assert stored.score == pytest.approx(0.502)
    assert stored.created_at.tzinfo is not None
    assert store.get_dataset(stored.dataset_id).name == "iris"


def test_ingest_empty_batch_is_a_no_op(store: Store) -> None:
    assert store.ingest_runs([]) == store.ingest_runs(())
    assert store.stats().runs == 0


def test_same_batch_twice_counts_duplicates(store: Store) -> None:
    runs = [new_run(i) for i in range(10)]
    store.ingest_runs(runs)

    again = store.ingest_runs(runs)

    assert (again.inserted, again.duplicates) == (0, 10)
    assert store.stats().runs == 10


def test_partially_new_batch_inserts_only_new_runs(store: Store) -> None:
    old = [new_run(i) for i in range(3)]
    store.ingest_runs(old)

    result = store.ingest_runs([*old, new_run(7), new_run(8)])

    assert (result.inserted, result.duplicates) == (2, 3)


def test_repeated_id_within_a_batch_is_a_duplicate(store: Store) -> None:
    run = new_run()

    result = store.ingest_runs([run, run])

    assert (result.inserted, result.duplicates) == (1, 1)


def test_same_id_different_content_conflicts_naming_the_run(store: Store) -> None:
    run = new_run()
    store.ingest_runs([run])
    changed = dataclasses.replace(run, score=0.1)

    with pytest.raises(ConflictError, match=str(run.id)) as info:
        store.ingest_runs([changed])

    assert info.value.run_id == str(run.id)
    assert store.get_run(run.id).score == run.score


def test_conflict_within_a_batch(store: Store) -> None:
    run = new_run()

    with pytest.raises(ConflictError, match=str(run.id)):
        store.ingest_runs([run, dataclasses.replace(run, config={"other": 1})])

    assert store.stats().runs == 0


def test_ingest_is_all_or_nothing(store: Store) -> None:
    existing = new_run(0)
    store.ingest_runs([existing])
    batch = [new_run(1), new_run(2), dataclasses.replace(existing, cost_seconds=99.0)]

    with pytest.raises(ConflictError):
        store.ingest_runs(batch)

    assert store.existing_run_ids(r.id for r in batch) == {existing.id}
    assert store.stats().runs == 1


def test_inline_dataset_with_new_spec_is_not_created_when_batch_fails(store: Store) -> None:
    existing = new_run(0)
    store.ingest_runs([existing])

    with pytest.raises(ConflictError):
        store.ingest_runs([new_run(1, dataset=WINE), dataclasses.replace(existing, score=0.0)])

    assert store.stats().datasets == 1


def test_runs_may_reference_an_existing_dataset_id(store: Store) -> None:
    dataset = store.ensure_dataset(WINE)
    by_spec = new_run(0, dataset=WINE)
    by_id = new_run(1, dataset=None, dataset_id=dataset.id)

    result = store.ingest_runs([by_spec, by_id])

    assert result.inserted == 2
    assert store.get_run(by_id.id).dataset_id == dataset.id
    # Same content whether the dataset was given inline or by id.
    assert store.ingest_runs([dataclasses.replace(by_spec, dataset=None, dataset_id=dataset.id)])
    assert store.stats().runs == 2


def test_unknown_dataset_id_names_the_run(store: Store) -> None:
    runs = [new_run(0), new_run(1, dataset=None, dataset_id=424242)]

    with pytest.raises(UnknownDatasetError, match=r"runs\[1\].*424242") as info:
        store.ingest_runs(runs)

    assert info.value.run_index == 1
    assert info.value.run_id == str(runs[1].id)
    assert isinstance(info.value, NotFoundError)
    assert store.stats().runs == 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"score": None}, "score may be null only"),
        ({"score": math.nan}, "score must be a finite number"),
        ({"score": math.inf}, "score must be a finite number"),
        ({"fidelity": 0.0}, "fidelity"),
        ({"fidelity": 1.5}, "fidelity"),
        ({"cost_seconds": -1.0}, "cost_seconds"),
        ({"direction": "up"}, "direction"),
        ({"status": "crashed"}, "status"),
        ({"source": "web"}, "source"),
        ({"config": {"lr": math.nan}}, "config"),
        ({"dataset": None}, "exactly one of dataset and dataset_id"),
        ({"dataset_id": 1}, "exactly one of dataset and dataset_id"),
    ],
)
def test_invalid_runs_are_rejected_naming_run_and_field(
    store: Store, overrides: dict[str, Any], message: str
) -> None:
    bad = new_run(1, **overrides)

    with pytest.raises(InvalidArgumentError, match=rf"runs\[1\] \(id {bad.id}\).*{message}"):
        store.ingest_runs([new_run(0), bad])

    assert store.stats().runs == 0


def test_failed_run_may_have_no_score(store: Store) -> None:
    run = new_run(status="failed", score=None, error="MemoryError")

    store.ingest_runs([run])

    stored = store.get_run(run.id)
    assert (stored.status, stored.score, stored.error) == ("failed", None, "MemoryError")


def test_metrics_are_stored_beside_the_score(store: Store) -> None:
    measured = new_run(0, metrics={"accuracy": 0.5, "log_loss": 0.7, "fit_seconds": 1})
    bare = new_run(1)
    store.ingest_runs([measured, bare])

    assert store.get_run(measured.id).metrics == {
        "accuracy": 0.5,
        "log_loss": 0.7,
        "fit_seconds": 1.0,
    }
    assert store.get_run(bare.id).metrics is None
    frame = store.runs_frame().set_index("id")
    assert frame.loc[str(measured.id), "metrics"] == {
        "accuracy": 0.5,
        "log_loss": 0.7,
        "fit_seconds": 1.0,
    }
    assert frame.loc[str(bare.id), "metrics"] is None


def test_metrics_are_not_part_of_a_runs_identity(store: Store) -> None:
    run = new_run(metrics={"log_loss": 0.7})
    store.ingest_runs([run])

    again = store.ingest_runs([dataclasses.replace(run, metrics={"log_loss": 0.1})])

    assert (again.inserted, again.duplicates) == (0, 1)
    assert store.get_run(run.id).metrics == {"log_loss": 0.7}


def test_add_run_metrics_fills_in_only_what_is_missing(store: Store) -> None:
    measured, bare = new_run(0, metrics={"log_loss": 0.7}), new_run(1)
    store.ingest_runs([measured, bare])

    changed = store.add_run_metrics(
        {measured.id: {"log_loss": 0.1, "f1_macro": 0.4}, bare.id: {"f1_macro": 0.3}}
    )

    assert changed == 2
    assert store.get_run(measured.id).metrics == {"log_loss": 0.7, "f1_macro": 0.4}
    assert store.get_run(bare.id).metrics == {"f1_macro": 0.3}
    assert store.add_run_metrics({measured.id: {"log_loss": 0.2}}) == 0
    with pytest.raises(NotFoundError, match="not stored"):
        store.add_run_metrics({uuid.uuid4(): {"log_loss": 0.2}, bare.id: {"mae": 1.0}})
    assert "mae" not in (store.get_run(bare.id).metrics or {})


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        ({"log_loss": math.nan}, "finite number"),
        ({"log_loss": "0.3"}, "finite number"),
        ({"": 0.3}, "1-64 characters"),
        ([("log_loss", 0.3)], "mapping"),
        ({f"m{i}": 0.0 for i in range(65)}, "at most 64"),
    ],
)
def test_malformed_metrics_are_rejected(store: Store, metrics: Any, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        store.ingest_runs([new_run(metrics=metrics)])
    run = new_run()
    store.ingest_runs([run])
    with pytest.raises(InvalidArgumentError, match=message):
        store.add_run_metrics({run.id: metrics})


def test_existing_run_ids(store: Store) -> None:
    runs = [new_run(i) for i in range(3)]
    store.ingest_runs(runs[:2])

    assert store.existing_run_ids(r.id for r in runs) == {runs[0].id, runs[1].id}
    assert store.existing_run_ids([]) == set()


def test_results_are_copies(store: Store) -> None:
    run = new_run()
    store.ingest_runs([run])
    stored = store.get_run(run.id)

    stored.config["num_leaves"] = -1

    assert store.get_run(run.id).config["num_leaves"] == 31
    with pytest.raises(dataclasses.FrozenInstanceError):
        stored.score = 0.0  # type: ignore[misc]


def test_concurrent_overlapping_ingest_from_threads(store: Store) -> None:
    datasets = [
        DatasetSpec(f"d{i}", "binary", {"n_rows": 100 + i, "n_features": 3}) for i in range(4)
    ]
    batches = [
        [new_run(i, dataset=datasets[i % 4]) for i in range(b * 20, b * 20 + 40)] for b in range(6)
    ]
    # Overlapping halves: every run is sent by two threads.
    errors: list[BaseException] = []
    results = []

    def send(batch: list[NewRun]) -> None:
        try:
            results.append(store.ingest_runs(batch))
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=send, args=(b,)) for b in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    unique = {r.id for b in batches for r in b}
    assert sum(r.inserted for r in results) == len(unique)
    assert store.stats().runs == len(unique)
    assert store.stats().datasets == 4


# ----------------------------------------------------------------------------- datasets


def test_fingerprint_is_identity_and_core_shape_only() -> None:
    a = DatasetSpec("x", "binary", {"n_rows": 100, "n_features": 5, "skew": 0.123456789012})
    b = DatasetSpec("x", "binary", {"n_features": 5.0, "n_rows": 100.0, "n_classes": 2})
    c = DatasetSpec("x", "binary", {"n_rows": 101, "n_features": 5, "skew": 0.123456789012})

    # Derived meta-features and n_classes (filled in later) are not part of it.
    assert Store.dataset_fingerprint(a) == Store.dataset_fingerprint(b)
    assert Store.dataset_fingerprint(a) != Store.dataset_fingerprint(c)
    assert Store.dataset_fingerprint(a) != Store.dataset_fingerprint(
        dataclasses.replace(a, name="y")
    )
    assert Store.dataset_fingerprint(a) == Store.dataset_fingerprint(
        dataclasses.replace(a, version=1)
    )
    assert Store.dataset_fingerprint(a) != Store.dataset_fingerprint(
        dataclasses.replace(a, version=2)
    )
    assert len(Store.dataset_fingerprint(a)) == 64


def test_ensure_dataset_deduplicates(store: Store) -> None:
    first = store.ensure_dataset(WINE)
    again = store.ensure_dataset(DatasetSpec("wine", "binary", dict(WINE.meta_features)))

    assert first == again
    assert (first.n_rows, first.n_features, first.n_classes) == (178, 13, 2)
    assert first.meta_features["entropy"] == pytest.approx(0.97)
    assert first.fingerprint == Store.dataset_fingerprint(WINE)
    assert store.find_dataset_by_fingerprint(first.fingerprint) == first


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({"n_features": 4}, "n_rows is required"),
        ({"n_rows": 10}, "n_features is required"),
        ({"n_rows": -5, "n_features": 4}, "n_rows must be >= 1"),
        ({"n_rows": 10.5, "n_features": 4}, "n_rows must be an integer"),
        ({"n_rows": 10, "n_features": 4, "n_classes": 1}, "n_classes must be >= 2"),
        ({"n_rows": 10, "n_features": 4, "skew": math.inf}, "skew must be a finite number"),
        ({"n_rows": 10, "n_features": 4, "skew": "high"}, "skew must be a finite number"),
    ],
)
def test_ensure_dataset_validates(store: Store, meta: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        store.ensure_dataset(DatasetSpec("bad", "binary", meta))


def test_get_and_find_dataset(store: Store) -> None:
    created = store.ensure_dataset(IRIS)

    assert store.get_dataset(created.id) == created
    assert store.find_dataset(created.id + 1000) is None
    with pytest.raises(NotFoundError, match="dataset 9999 not found"):
        store.get_dataset(9999)
    with pytest.raises(KeyError):
        store.get_dataset(9999)


def test_list_datasets_filters_and_pages(store: Store) -> None:
    for spec in (IRIS, WINE, DIABETES):
        store.ensure_dataset(spec)

    first = store.list_datasets(limit=2)
    second = store.list_datasets(limit=2, cursor=first.next_cursor)

    assert first.count == 3
    assert [d.name for d in first.data + second.data] == ["iris", "wine", "diabetes"]
    assert second.next_cursor is None
    assert [d.name for d in store.list_datasets(task="regression").data] == ["diabetes"]
    assert store.list_datasets(name="wine").count == 1


# ----------------------------------------------------------------------------- listing


def _three_batches(store: Store, clock: Any) -> list[list[NewRun]]:
    batches = [
        [new_run(i, family="lightgbm") for i in range(4)],
        [new_run(i, family="random_forest", dataset=WINE, source="bootstrap") for i in range(3)],
        [new_run(i, family="lightgbm", dataset=DIABETES, metric="rmse") for i in range(2)],
    ]
    for batch in batches:
        store.ingest_runs(batch)
        clock.advance(60)
    return batches


def test_list_runs_filters(store: Store, clock: Any) -> None:
    batches = _three_batches(store, clock)
    wine_id = store.get_run(batches[1][0].id).dataset_id

    assert store.list_runs().count == 9
    assert store.list_runs(family="lightgbm").count == 6
    assert store.list_runs(source="bootstrap").count == 3
    assert store.list_runs(dataset_id=wine_id).count == 3
    assert store.list_runs(family="lightgbm", dataset_id=wine_id).count == 0
    since = dt.datetime(2025, 1, 1, 12, 1, tzinfo=dt.UTC)
    assert {r.id for r in store.list_runs(since=since).data} == {
        r.id for r in batches[1] + batches[2]
    }
    # A naive datetime is taken as UTC.
    assert store.list_runs(since=since.replace(tzinfo=None)).count == 5


def test_list_runs_pages_through_everything_once_in_order(store: Store, clock: Any) -> None:
    batches = _three_batches(store, clock)
    seen: list[uuid.UUID] = []
    cursor = None
    pages = 0
    while True:
        page = store.list_runs(limit=2, cursor=cursor)
        assert page.count == 9
        seen.extend(r.id for r in page.data)
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break

    assert pages == 5
    expected = [r.id for b in batches for r in sorted(b, key=lambda r: str(r.id))]
    assert seen == expected


def test_list_runs_cursor_is_stable_while_runs_are_added(store: Store, clock: Any) -> None:
    _three_batches(store, clock)
    page = store.list_runs(limit=5)
    late = new_run(99)
    store.ingest_runs([late])

    rest = store.list_runs(limit=100, cursor=page.next_cursor)

    assert len(rest.data) == 5
    assert rest.data[-1].id == late.id


@pytest.mark.parametrize("cursor", ["garbage", "bm90LWpzb24", "WzEsMl0"])
def test_list_runs_rejects_bad_cursor(store: Store, cursor: str) -> None:
    with pytest.raises(InvalidArgumentError, match="invalid cursor"):
        store.list_runs(cursor=cursor)


def test_list_runs_rejects_bad_limit(store: Store) -> None:
    with pytest.raises(InvalidArgumentError, match="limit"):
        store.list_runs(limit=0)


def test_runs_frame(store: Store, clock: Any) -> None:
    _three_batches(store, clock)
    store.ingest_runs([new_run(50, status="failed", score=None)])

    frame = store.runs_frame()

    assert len(frame) == 9
    assert {"id", "dataset_id", "dataset_name", "task", "family", "config", "score"} <= set(
        frame.columns
    )
    assert {"mf_n_rows", "mf_n_features", "mf_n_classes", "mf_entropy"} <= set(frame.columns)
    wine = frame[frame["dataset_name"] == "wine"]
    assert wine["mf_entropy"].tolist() == pytest.approx([0.97] * 3)
    assert frame[frame["dataset_name"] == "iris"]["mf_entropy"].isna().all()
    assert isinstance(frame["config"].iloc[0], dict)
    assert str(frame["created_at"].dt.tz) == "UTC"
    assert frame["created_at"].is_monotonic_increasing
    assert len(store.runs_frame(family="random_forest")) == 3
    assert len(store.runs_frame(status=None)) == 10
    assert len(store.runs_frame(status="failed")) == 1


def test_runs_frame_of_empty_store(store: Store) -> None:
    frame = store.runs_frame()

    assert len(frame) == 0
    assert "config" in frame.columns


def test_stats(store: Store, clock: Any) -> None:
    _three_batches(store, clock)
    store.ingest_runs([new_run(50, status="failed", score=None)])

    stats = store.stats()

    assert (stats.runs, stats.datasets) == (10, 3)
    assert stats.by_family == {"lightgbm": 7, "random_forest": 3}
    assert stats.by_task == {"binary": 3, "multiclass": 5, "regression": 2}
    assert stats.by_source == {"bootstrap": 3, "user": 7}
    assert stats.by_status == {"failed": 1, "ok": 9}


# ----------------------------------------------------------------------------- surrogates


def test_surrogate_registry_activation(store: Store) -> None:
    first = store.add_surrogate(
        family="lightgbm", model_text="tree\n1", n_runs=100, metrics={"ndcg": 0.7}
    )
    second = store.add_surrogate(
        family="lightgbm", model_text="tree\n2", n_runs=200, metrics={"ndcg": 0.8}, meta={"v": 2}
    )
    other = store.add_surrogate(family="random_forest", model_text="rf", n_runs=5, metrics={})

    assert first.status == "candidate"
    assert store.find_active_surrogate("lightgbm") is None

    store.activate_surrogate(first.id)
    store.activate_surrogate(other.id)
    activated = store.activate_surrogate(second.id)

    assert activated.status == "active"
    active = store.find_active_surrogate("lightgbm")
    assert active is not None
    assert (active.id, active.model_text, active.meta) == (second.id, "tree\n2", {"v": 2})
    assert store.get_surrogate(first.id).status == "retired"
    assert store.get_surrogate(other.id).status == "active"
    listing = store.list_surrogates("lightgbm")
    assert [s.id for s in listing] == [second.id, first.id]
    assert all(s.model_text is None for s in listing)
    assert len(store.list_surrogates()) == 3
    assert store.active_surrogate_ids() == {"lightgbm": second.id, "random_forest": other.id}
    assert first.sha256 == __import__("hashlib").sha256(b"tree\n1").hexdigest()


def test_add_surrogate_as_active_retires_previous(store: Store) -> None:
    old = store.add_surrogate(family="lgbm", model_text="a", n_runs=1, metrics={}, status="active")
    new = store.add_surrogate(family="lgbm", model_text="b", n_runs=2, metrics={}, status="active")

    assert new.status == "active"
    assert store.get_surrogate(old.id).status == "retired"


def test_one_active_surrogate_per_family_and_target(store: Store) -> None:
    def add(target: str, text: str) -> Any:
        return store.add_surrogate(
            family="lgbm", model_text=text, n_runs=1, metrics={}, status="active", target=target
        )

    primary, log_loss = add("", "a"), add("log_loss", "b")
    assert store.active_surrogate_ids() == {"lgbm": primary.id, "lgbm@log_loss": log_loss.id}
    assert store.find_active_surrogate("lgbm").id == primary.id
    assert store.find_active_surrogate("lgbm", "log_loss").target == "log_loss"

    newer = store.add_surrogate(
        family="lgbm", model_text="c", n_runs=2, metrics={}, target="log_loss"
    )
    store.activate_surrogate(newer.id)

    assert store.get_surrogate(log_loss.id).status == "retired"
    assert store.get_surrogate(primary.id).status == "active"
    assert store.active_surrogate_ids() == {"lgbm": primary.id, "lgbm@log_loss": newer.id}
    assert store.find_active_surrogate("lgbm", "f1_macro") is None


def test_retired_surrogates_are_pruned_to_the_newest_few(store: Store) -> None:
    def add(status: str, target: str = "", family: str = "lgbm") -> int:
        return store.add_surrogate(
            family=family, model_text="m", n_runs=1, metrics={}, status=status, target=target
        ).id

    # Six activations in a row: five retired, one active; then a candidate on top.
    chain = [add("active") for _ in range(6)]
    candidate = add("candidate")
    others = [add("active", target="log_loss") for _ in range(3)]  # two retired
    other_family = [add("active", family="rf") for _ in range(3)]

    assert store.prune_retired_surrogates("lgbm", keep=2) == 3
    remaining = {s.id: s.status for s in store.list_surrogates("lgbm")}
    assert remaining == {
        chain[5]: "active",
        chain[4]: "retired",
        chain[3]: "retired",
        candidate: "candidate",
        **{i: store.get_surrogate(i).status for i in others},
    }
    assert len(store.list_surrogates("rf")) == len(other_family)  # other families untouched
    assert store.prune_retired_surrogates("lgbm", keep=2) == 0  # idempotent

    assert store.prune_retired_surrogates("lgbm", "log_loss", keep=0) == 2
    assert [s.id for s in store.list_surrogates("lgbm") if s.target == "log_loss"] == [others[2]]
    assert store.find_active_surrogate("lgbm", "log_loss").id == others[2]
    assert store.find_active_surrogate("lgbm").id == chain[5]
    with pytest.raises(InvalidArgumentError, match="keep must be a count"):
        store.prune_retired_surrogates("lgbm", keep=-1)


def test_missing_surrogate(store: Store) -> None:
    with pytest.raises(NotFoundError):
        store.get_surrogate(404)
    with pytest.raises(NotFoundError):
        store.activate_surrogate(404)


# ----------------------------------------------------------------------------- jobs


def test_job_lifecycle(store: Store, clock: Any) -> None:
    job = store.create_job("refine", {"top_k": 5})
    assert (job.status, job.progress, job.request, job.started_at) == (
        "queued",
        {},
        {"top_k": 5},
        None,
    )

    clock.advance(1)
    running = store.update_job(job.id, status="running", progress={"done": 0, "total": 9})
    assert running.started_at == clock.now
    assert running.heartbeat_at == clock.now

    clock.advance(5)
    store.heartbeat(job.id)
    assert store.get_job(job.id).heartbeat_at == clock.now

    done = store.update_job(job.id, status="succeeded", result={"best": {"lr": 0.1}})
    assert done.finished
    assert done.finished_at == clock.now
    assert done.result == {"best": {"lr": 0.1}}
    assert done.started_at == running.started_at
    with pytest.raises(InvalidStateError, match="already succeeded"):
        store.update_job(job.id, status="running")
    with pytest.raises(InvalidStateError, match="not running"):
        store.heartbeat(job.id)


def test_stale_jobs_are_failed(store: Store, clock: Any) -> None:
    alive = store.create_job("retrain", {})
    dead = store.create_job("bootstrap", {"n": 3})
    queued = store.create_job("refine", {})
    store.update_job(alive.id, status="running")
    store.update_job(dead.id, status="running")

    clock.advance(50)
    store.heartbeat(alive.id)
    clock.advance(20)

    assert store.fail_stale_jobs(grace_seconds=60) == 1
    failed = store.get_job(dead.id)
    assert failed.status == "failed"
    assert "heartbeat" in (failed.error or "")
    assert store.get_job(alive.id).status == "running"
    assert store.get_job(queued.id).status == "queued"
    with pytest.raises(InvalidStateError):
        store.heartbeat(dead.id)
    assert store.fail_stale_jobs(grace_seconds=60) == 0


def test_queued_and_running_jobs_can_be_cancelled(store: Store, clock: Any) -> None:
    queued = store.create_job("refine", {})
    running = store.create_job("refine", {})
    store.update_job(running.id, status="running")
    clock.advance(3)

    for job in (queued, running):
        cancelled = store.update_job(job.id, status="cancelled", error="cancelled by key 'a'")
        assert cancelled.finished
        assert cancelled.finished_at == clock.now
        assert cancelled.error == "cancelled by key 'a'"
        with pytest.raises(InvalidStateError, match="already cancelled"):
            store.update_job(job.id, status="running")
        with pytest.raises(InvalidStateError, match="already cancelled"):
            store.update_job(job.id, status="failed")
    # The worker learns it at its next heartbeat; the sweeper leaves it alone.
    with pytest.raises(InvalidStateError, match="cancelled, not running"):
        store.heartbeat(running.id)
    clock.advance(3600)
    assert store.fail_stale_jobs(grace_seconds=60) == 0
    assert {j.id for j in store.list_jobs(status="cancelled")} == {queued.id, running.id}


def test_jobs_errors(store: Store) -> None:
    with pytest.raises(NotFoundError):
        store.get_job(uuid.uuid4())
    with pytest.raises(NotFoundError):
        store.heartbeat(uuid.uuid4())
    with pytest.raises(InvalidArgumentError):
        store.create_job("dance", {})
    assert store.find_job(uuid.uuid4()) is None
    job = store.create_job("retrain", {})
    assert [j.id for j in store.list_jobs(kind="retrain")] == [job.id]


def test_job_owner_is_an_api_key(store: Store) -> None:
    key = store.create_api_key("ci", "hash-1", ["jobs"])

    job = store.create_job("refine", {}, owner=key.id)

    assert store.get_job(job.id).owner == key.id


# ----------------------------------------------------------------------------- locks


def test_locks_with_expiry(store: Store, clock: Any) -> None:
    assert store.try_acquire_lock("retrain", "worker-a", ttl_seconds=30)
    assert not store.try_acquire_lock("retrain", "worker-b", ttl_seconds=30)
    # Re-acquiring one's own lock extends it.
    assert store.try_acquire_lock("retrain", "worker-a", ttl_seconds=30)

    clock.advance(20)
    assert store.refresh_lock("retrain", "worker-a", ttl_seconds=30)
    clock.advance(20)
    assert not store.try_acquire_lock("retrain", "worker-b", ttl_seconds=30)

    clock.advance(15)  # 35 s after the refresh: expired
    assert store.try_acquire_lock("retrain", "worker-b", ttl_seconds=30)
    assert not store.refresh_lock("retrain", "worker-a", ttl_seconds=30)
    assert not store.release_lock("retrain", "worker-a")
    assert store.release_lock("retrain", "worker-b")
    assert store.try_acquire_lock("retrain", "worker-a", ttl_seconds=30)
    assert store.try_acquire_lock("other", "worker-b", ttl_seconds=30)


# ----------------------------------------------------------------------------- API keys


def test_api_keys(store: Store) -> None:
    key = store.create_api_key("alice", "h" * 64, ["ingest", "suggest", "ingest"])
    assert key.scopes == ("ingest", "suggest")
    assert key.active

    with pytest.raises(AlreadyExistsError):
        store.create_api_key("bob", "h" * 64, [])

    assert store.find_api_key_by_hash("h" * 64) == key
    assert store.find_api_key_by_hash("nope") is None
    store.touch_api_key(key.id)
    assert store.list_api_keys()[0].last_used_at is not None

    revoked = store.revoke_api_key(key.id)
    assert not revoked.active
    assert store.revoke_api_key(key.id).revoked_at == revoked.revoked_at
    assert store.find_api_key_by_hash("h" * 64) is None
    assert store.find_api_key_by_hash("h" * 64, include_revoked=True) is not None
    with pytest.raises(NotFoundError):
        store.revoke_api_key(12345)


# ----------------------------------------------------------------------------- errors


def test_unreachable_database_is_reported_as_unavailable(backend: str, tmp_path: Any) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}"
    else:
        url = "postgresql+psycopg://postgres@127.0.0.1:1/test"
    engine = make_engine(url, connect_timeout_s=2)
    try:
        with pytest.raises(DatabaseUnavailableError, match="unavailable"):
            Store(engine).stats()
    finally:
        engine.dispose()
