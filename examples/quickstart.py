"""Quickstart: from a CSV file to a tuned model in a few lines.

Run it as a script (``python examples/quickstart.py``) or cell by cell in an editor
that understands ``# %%`` cells (VS Code, PyCharm, Jupytext). It works without a
server: the client runs in-process on a local SQLite database. For good suggestions
that database needs a history and a surrogate; load the shipped ones once with::

    hyperprior db upgrade && hyperprior db seed

(or point ``HYPERPRIOR_URL`` at a running service, with ``HYPERPRIOR_API_KEY``: then
the SDK alone is enough, ``pip install hyperprior lightgbm``, LightGBM being the model
this script trains; the service refines). Without a history the suggestions are the
library default, and refinement still verifies it against your own folds.

Environment: ``HYPERPRIOR_URL``/``HYPERPRIOR_API_KEY`` (use a service),
``HYPERPRIOR_DATABASE_URL`` (the local database, default ``./hyperprior.db``),
``HYPERPRIOR_EXAMPLE_DIR`` (where the CSV is written, default a temporary directory),
``HYPERPRIOR_EXAMPLE_BUDGET`` (seconds of refinement, default 30).
"""

# %% Setup
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import lightgbm
import pandas as pd
from sklearn.datasets import load_breast_cancer

from hyperprior.client import Client

WORK = Path(os.environ.get("HYPERPRIOR_EXAMPLE_DIR") or tempfile.mkdtemp(prefix="hyperprior-"))
BUDGET = float(os.environ.get("HYPERPRIOR_EXAMPLE_BUDGET", "30"))

# %% 1. A CSV file of your own (here written from a dataset bundled with scikit-learn)
csv_path = WORK / "breast_cancer.csv"
load_breast_cancer(as_frame=True).frame.to_csv(csv_path, index=False)

# %% 2. Load it: features and target
data = pd.read_csv(csv_path)
X, y = data.drop(columns="target"), data["target"]

# %% 3. Connect: to a service, or in-process on a local database (no server needed)
if os.environ.get("HYPERPRIOR_URL"):
    client = Client(os.environ["HYPERPRIOR_URL"])  # the key comes from $HYPERPRIOR_API_KEY
else:
    client = Client.local(database_url=os.environ.get("HYPERPRIOR_DATABASE_URL"))
print(client, "-", client.stats()["runs"], "runs in the history")

# %% 4. Describe the data: meta-features computed here, the data never leaves
description = client.describe(X, y, name="breast_cancer")
print(f"{description.task}: {description.n_rows} rows, {description.n_features} features")

# %% 5. Suggest: configs the surrogate expects to do well on data like this
suggestions = client.suggest(description, None, "lightgbm", n=5, seed=0)
for s in suggestions:
    quality = "-" if s.predicted_quality is None else f"{s.predicted_quality:.2f}"
    print(f"#{s.rank} {s.source:9} predicted quality {quality}  {s.config}")
for warning in suggestions.warnings:
    print("note:", warning)

# %% 6. Refine: verify them on your own folds by successive halving, within a budget
# With a service the trials run there, as a job (the data is uploaded): the SDK alone
# has no trial machinery. In-process they run here.
on_service = bool(os.environ.get("HYPERPRIOR_URL"))
refined = client.refine(
    X, y, "lightgbm", budget=BUDGET, local=not on_service, n=5, name="breast_cancer", seed=0
)
print(f"best {refined.metric} {refined.score:.4f} (library default {refined.default_score:.4f})")
for note in refined.notes:
    print("note:", note)

# %% 7. Fit the final model with the winning config: it is LightGBM's own keyword arguments
config = refined.config or suggestions.best
model = lightgbm.LGBMClassifier(**config, verbose=-1).fit(X, y)
print("fitted", model.__class__.__name__, "with", config)
