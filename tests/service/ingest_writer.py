"""One writer of the concurrency test (run as a separate process).

Usage: python ingest_writer.py BASE_URL WRITER_INDEX N_RUNS BATCH_SIZE RESENDS [N_DATASETS]

Posts N_RUNS runs in batches, then sends every batch RESENDS more times, and prints
one JSON line: inserted, duplicates, resent_inserted, resent_duplicates, errors. The
API key (scope write) comes from ``HYPERPRIOR_API_KEY``.

Every writer uses the same N_DATASETS datasets (default 5), all of them, in an order
of its own: its runs are shuffled, so concurrent batches create and reference the
same datasets in different orders (the recipe for a deadlock, unless the store takes
its locks in one order).
"""

from __future__ import annotations

import json
import os
import random
import sys
import uuid

import httpx


def runs_of(writer: int, n_runs: int, n_datasets: int = 5) -> list[dict[str, object]]:
    rng = random.Random(writer)
    runs = []
    for i in range(n_runs):
        dataset = i % n_datasets  # every writer uses the same datasets
        runs.append(
            {
                "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "dataset": {
                    "name": f"shared-{dataset}",
                    "task": "binary",
                    "meta_features": {"n_rows": 100 + dataset, "n_features": 7, "n_classes": 2},
                },
                "family": "lightgbm",
                "config": {"learning_rate": rng.random(), "num_leaves": rng.randint(2, 300)},
                "metric": "roc_auc",
                "direction": "maximize",
                "score": rng.random(),
                "fidelity": 1.0,
                "cost_seconds": rng.random(),
                "source": "user",
            }
        )
    rng.shuffle(runs)
    return runs


def main() -> None:
    base, writer, n_runs, batch_size, resends = sys.argv[1:6]
    n_datasets = int(sys.argv[6]) if len(sys.argv) > 6 else 5
    runs = runs_of(int(writer), int(n_runs), n_datasets)
    size = int(batch_size)
    batches = [runs[i : i + size] for i in range(0, len(runs), size)]
    totals = {
        "inserted": 0,
        "duplicates": 0,
        "resent_inserted": 0,
        "resent_duplicates": 0,
        "errors": [],
    }
    headers = {"Authorization": f"Bearer {os.environ['HYPERPRIOR_API_KEY']}"}
    with httpx.Client(base_url=base, timeout=60, headers=headers) as client:
        for attempt in range(1 + int(resends)):
            prefix = "" if attempt == 0 else "resent_"
            for batch in batches:
                response = client.post("/v1/runs", json={"runs": batch})
                if response.status_code not in (200, 201):
                    totals["errors"].append(f"{response.status_code}: {response.text[:300]}")
                    continue
                body = response.json()
                totals[prefix + "inserted"] += body["inserted"]
                totals[prefix + "duplicates"] += body["duplicates"]
    print(json.dumps(totals))


if __name__ == "__main__":
    main()
