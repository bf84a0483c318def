"""The quality benchmark's code, one module per seam: :mod:`.settings`, :mod:`.metrics`
(the unit-tested arithmetic), :mod:`.history`, :mod:`.measure`, :mod:`.methods`,
:mod:`.report` and :mod:`.cli`.

``benchmarks/quality.py`` is its entry point and documents it (``python
benchmarks/quality.py``, ``hyperprior bench quality``, ``from benchmarks import
quality``). The package cannot be ``benchmarks/quality/``: a package and a module of
one name cannot sit side by side, and the script keeps the README's command working.
"""
