"""A history worth looking at: the shipped seed spread over days, several surrogate
versions per family, and runs of every source (for the dashboard tests)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import replace

from db.entities import NewRun
from db.store import Store
from training.retrain import install_shipped
from training.seed import SEED_DIR, load_seed
from training.surrogate import load

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
