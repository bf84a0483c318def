"""hyperprior: hyperparameter suggestions learned from run history.

Installed, the project's folders live under this one name, so nothing generic lands at
the top of site-packages (a user's own ``training.py`` or ``db.py`` cannot shadow ours):

* ``hyperprior.client``: the SDK (``Client``) and its integrations;
* ``hyperprior.service``: the API server and the ``hyperprior`` CLI;
* ``hyperprior.training``: families, meta-features, surrogate, policy, refinement;
* ``hyperprior.db``: the store and its migrations.

In the source tree these are the top-level folders ``client/``, ``service/``,
``training/`` and ``db/`` (mapped by ``[tool.setuptools.package-dir]`` in
pyproject.toml). The SDK's names are reachable from here::

    from hyperprior import Client

They are imported on first use, so ``import hyperprior.db`` does not load the SDK.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hyperprior.client import *  # noqa: F403


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    client = importlib.import_module("hyperprior.client")
    if name in client.__all__:
        return getattr(client, name)
    raise AttributeError(f"module 'hyperprior' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *importlib.import_module("hyperprior.client").__all__])
