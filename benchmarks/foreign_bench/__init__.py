"""The foreign benchmark's code, one module per seam: :mod:`.settings`,
:mod:`.collection` (the datasets and their loaders), :mod:`.asking`, :mod:`.measure`,
:mod:`.run`, :mod:`.optuna_warm` and :mod:`.report`.

``benchmarks/foreign.py`` is its entry point and documents it; the package has a name of
its own because a package and a module of one name cannot sit side by side.
"""
