"""A history worth looking at: the shipped seed spread over days, several surrogate
versions per family, runs of every source and of a family only the history knows (a
user-declared one), and refinement jobs in every state (for the dashboard tests)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import replace

from hyperprior.db.entities import NewRun
from hyperprior.db.store import Store
from hyperprior.training.retrain import install_shipped
from hyperprior.training.seed import SEED_DIR, load_seed
from hyperprior.training.surrogate import load

SURROGATES = SEED_DIR / "surrogates"
DAY = 86_400.0


class SteppingClock:
    """A UTC clock the test moves forward by hand."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move forward."""
        self.now += dt.timedelta(seconds=seconds)


def seed_history(store: Store, clock: SteppingClock) -> None:
    """Load the seed over ~10 days with older surrogate versions and other sources."""
    families = sorted(p.stem for p in SURROGATES.glob("*.json"))
    # Two older versions per family, a little worse than the shipped one.
    for age, factor in ((0, 1.6), (2, 1.25)):
        for family in families:
            surrogate = load(SURROGATES, family)
            metrics = dict(surrogate.metadata.get("registry", {}).get("metrics", {}))
            for name in ("regret_at_1", "regret_at_5", "rmse"):
                if name in metrics:
                    metrics[name] = round(metrics[name] * factor, 5)
            for name in ("spearman", "ndcg_at_5", "beats_default_share"):
                if name in metrics:
                    metrics[name] = round(metrics[name] / factor, 5)
            store.add_surrogate(
                family=family,
                model_text=surrogate.text,
                n_runs=1000 + 100 * age,
                metrics=metrics,
                meta=surrogate.metadata,
                status="retired",
            )
        clock.advance(DAY)
    load_seed(store, batch_size=600, progress=lambda _: clock.advance(DAY))
    install_shipped(store, SURROGATES)
    # Some runs of other sources, on the last days.
    sample = store.list_runs(limit=90).data
    extra = []
    for i, run in enumerate(sample):
        source = ("user", "verification", "import")[i % 3]
        extra.append(
            NewRun(
                id=uuid.uuid5(uuid.NAMESPACE_URL, f"dashboard-seed/{i}"),
                family=run.family,
                config=run.config,
                metric=run.metric,
                direction=run.direction,
                score=run.score,
                fidelity=run.fidelity,
                cost_seconds=run.cost_seconds,
                source=source,
                status=run.status,
                error=run.error,
                dataset_id=run.dataset_id,
            )
        )
        if i % 30 == 29:
            store.ingest_runs(extra)
            extra = []
            clock.advance(DAY / 2)
    if extra:
        store.ingest_runs([replace(r) for r in extra])
    # A family none of the built-in ones: it needs a colour of its own.
    store.ingest_runs(
        [
            NewRun(
                id=uuid.uuid5(uuid.NAMESPACE_URL, f"dashboard-seed/own/{i}"),
                family=USER_FAMILY,
                config={"depth": 6 + i % 3},
                metric=run.metric,
                direction=run.direction,
                score=run.score,
                fidelity=1.0,
                cost_seconds=run.cost_seconds,
                source="user",
                dataset_id=run.dataset_id,
            )
            for i, run in enumerate(sample[:12])
        ]
    )
    seed_refinements(store, clock)


USER_FAMILY = "my_catboost"
#: The refinement jobs of the seed, by status.
REFINEMENTS = ("succeeded", "failed", "cancelled", "running", "queued")


def seed_refinements(store: Store, clock: SteppingClock) -> None:
    """One refinement job in each state, as the job runner leaves them."""
    for status in REFINEMENTS:
        request = {
            "family": "lightgbm",
            "task": "binary",
            "budget_seconds": 60.0,
            "n_candidates": 9,
            "seed": 0,
            "source": {"kind": "catalog", "dataset": "sklearn/breast_cancer"},
            "dataset_name": f"sklearn/breast_cancer ({status})",
            "configs": [],
        }
        job = store.create_job("refine", request)
        clock.advance(60)
        if status == "queued":
            continue
        progress = {
            "phase": "halving", "rung": 0, "rungs": 3, "fidelity": 1 / 9, "trials_done": 4,
            "trials_planned": 13, "elapsed_seconds": 12.5, "budget_seconds": 60.0,
            "best_score": 0.981,
        }  # fmt: skip
        store.update_job(job.id, status="running", progress=progress)
        clock.advance(45)
        if status == "succeeded":
            result = {
                "dataset": request["dataset_name"], "metric": "roc_auc", "score": 0.9934,
                "default_score": 0.9902, "improvement": 0.0032, "config": {},
                "trials": [], "notes": [],
            }  # fmt: skip
            store.update_job(
                job.id, status="succeeded", result=result,
                progress={**progress, "phase": "done", "trials_done": 13},
            )  # fmt: skip
        elif status == "failed":
            store.update_job(
                job.id, status="failed", error="the job's worker process was killed by SIGKILL"
            )
        elif status == "cancelled":
            store.update_job(job.id, status="cancelled")
