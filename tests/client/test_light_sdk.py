"""The SDK stays light: over HTTP it imports none of the server's heavy libraries.

Run in a fresh interpreter each, since this test process has imported them all.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

# What a training script calling the API must not have to install (or wait for).
HEAVY = (
    "lightgbm",
    "tensorflow",
    "keras",
    "dask",
    "distributed",
    "fastapi",
    "sqlalchemy",
    "statsmodels",
    "uvicorn",
)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_the_sdk_over_http_imports_no_server_library() -> None:
    code = f"""
        import json
        import sys

        import httpx
        import numpy as np
        import pandas as pd

        from hyperprior import Client

        client = Client("http://127.0.0.1:9")
        rng = np.random.default_rng(0)
        X = pd.DataFrame(rng.normal(size=(60, 3)), columns=["a", "b", "c"])
        y = pd.Series((X["a"] > 0).astype(int), name="y")
        description = client.describe(X, y)

        # A suggestion and a record over HTTP, answered without a server.
        def answer(request):
            if request.url.path == "/v1/suggestions":
                return httpx.Response(200, json={{
                    "suggestions": [{{"rank": 1, "config": {{"C": 1.0}},
                                     "predicted_quality": None, "interval": None,
                                     "source": "default", "explanation": {{}}}}],
                    "surrogate": None, "warnings": [], "ranking": "",
                }})
            return httpx.Response(201, json={{"inserted": 1, "duplicates": 0}})

        http = httpx.Client(base_url="http://sdk.test", transport=httpx.MockTransport(answer))
        over_http = Client(http=http)
        picks = over_http.suggest(description, None, "linear", n=1)
        over_http.record([{{"dataset": description, "family": "linear", "config": picks.best,
                            "metric": "roc_auc", "direction": "maximize", "score": 0.9}}])
        heavy = {HEAVY!r}
        print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} & set(heavy))))
    """
    done = _run(code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_local_mode_without_the_server_parts_says_which_extra() -> None:
    code = """
        import sys

        sys.modules["sqlalchemy"] = None  # as if the server extra were not installed

        from hyperprior import Client

        try:
            Client.local(database_url="sqlite://")
        except ModuleNotFoundError as error:
            print(error)
    """
    done = _run(code)
    assert done.returncode == 0, done.stderr[-3000:]
    message = done.stdout.strip()
    assert message.count("\n") == 0
    assert "Client.local() needs the server parts" in message
    assert "pip install 'hyperprior[server]'" in message
