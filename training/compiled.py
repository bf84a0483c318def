"""Compiled trees: a surrogate's LightGBM trees as C, built into a shared library (issue 19).

An optional accelerator of :meth:`Surrogate.screen <hyperprior.training.surrogate.Surrogate.screen>`
and :meth:`Surrogate.predict_outputs <hyperprior.training.surrogate.Surrogate.predict_outputs>`:
treelite reads the model text, tl2cgen writes it out as C and the machine's C compiler
builds a library whose predictions are LightGBM's (checked on every load, below). Rows
are passed to the generated code by a small C loop compiled into the same library
(:data:`BATCH_SOURCE`), not through tl2cgen's runtime (a DMatrix copy and a lock, plus the
input checks in numpy). On the shapes of one suggestion request, medians on a 2-core
machine busy with other work: the screen, 2,048 rows x 20 trees, LightGBM 1.1 ms, tl2cgen's
runtime with the checks 0.85 ms, the loop 0.36 ms; all outputs, 112 rows x 200 trees,
0.64, 0.21 and 0.11 ms (``benchmarks/suggest.py --baseline git:REV`` for whole requests).

Each prediction that is compiled is a *slice* of the model: ``outputs`` (every member and
the beats-the-default classifier, all rounds) and ``screen-rN`` (the first member's first
``N`` rounds). A slice is compiled once per machine and kept in a cache directory
(``HYPERPRIOR_COMPILED_CACHE_DIR``, default ``$XDG_CACHE_HOME/hyperprior/compiled``), as
``KEY-SO_SHA.so`` beside a ``KEY.json`` that names it, where ``KEY`` is the model's sha256,
the slice and a digest of the recipe (tl2cgen and treelite versions, compiler options,
machine). Nothing is ever unpickled: the JSON is plain data, and a library is loaded only
when its bytes match the sha256 the JSON gives (a corrupt file is refused before the
dynamic loader sees it) and then only kept when its predictions on a fixed probe matrix
equal LightGBM's within ``1e-9``. The probe puts every feature on each of the model's own
split thresholds, one double either side of them, far out, near zero and missing, so each
comparison's edge and each default direction is exercised (it found the two places where
tl2cgen's code and LightGBM part, which :class:`CompiledPredictor` now bridges: inputs
within LightGBM's zero threshold, and doubles whose low word reads as tl2cgen's missing
flag). A rejected library is logged as a warning, its entry
removed and the slice compiled afresh; a slice that fails again keeps LightGBM. The cache
trusts its directory as much as the installed packages (a library runs code when
loaded): it is created private to the user (mode 0700).

Compiling takes seconds (about 1 s for the screen, 4-15 s for all outputs on a busy
2-core machine), so it never runs in a request: ``Surrogate.use_compiled`` queues the
slices of a surrogate on one background thread of the compiler (one compile at a time,
at a lower CPU priority where the OS allows), and every prediction uses LightGBM until its
slice is ready. A cache hit costs a few milliseconds. Libraries are content-addressed, so
processes that compile the same slice at once each write their own file and rename it in
place, never a half-written one. tl2cgen writes the C sources in a child process (see
``_generate_c``), so its native log lines never reach the server's stderr.

``HYPERPRIOR_COMPILED_TREES``: ``auto`` (the default) uses compiled trees when tl2cgen
imports and a C compiler (``$CC``, ``gcc``, ``clang`` or ``cc``) is on the PATH; ``off``
never imports tl2cgen. Without a compiler the server predicts with LightGBM, as before.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import platform
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MODES: tuple[str, ...] = ("auto", "off")
# Largest difference from LightGBM a compiled slice may show on the probe matrix.
TOLERANCE = 1e-9
# Bumped when the cache layout or the recipe below changes meaning.
CACHE_FORMAT = "hyperprior-compiled/2"
# -O1 builds in about half the time of tl2cgen's -O3 and predicted as fast here. tl2cgen's
# quantized thresholds (compare bin indices) were faster over many trees but took the
# wrong side next to some thresholds (the probe caught it on every shipped surrogate).
COMPILER_OPTIONS: tuple[str, ...] = ("-O1",)
PROBE_ROWS = 512
# LightGBM's kZeroThreshold (1e-35 as a float32), see CompiledPredictor.predict.
ZERO_THRESHOLD = float(np.float32(1e-35))
# Compiled into every library beside tl2cgen's code: a loop over the rows of a dense
# float64 matrix (see CompiledPredictor). NaN is missing; an input within LightGBM's zero
# threshold reads as 0; a row whose value reads as the union's missing flag is flagged.
BATCH_SOURCE = """\
#include <stdlib.h>
#include <math.h>
#include "header.h"

int hp_output_width(void) { return N_TARGET * MAX_N_CLASS; }

int hp_predict_dense(const double* X, long n, long nf, double zero, double* out, long width,
                     unsigned char* clash) {
  if (nf != get_num_feature() || width != N_TARGET * MAX_N_CLASS) return -1;
  union Entry* row = (union Entry*)malloc(sizeof(union Entry) * (nf > 0 ? nf : 1));
  if (row == NULL) return -2;
  for (long i = 0; i < n; ++i) {
    const double* x = X + i * nf;
    unsigned char bad = 0;
    for (long j = 0; j < nf; ++j) {
      double v = x[j];
      if (isnan(v)) {
        row[j].missing = -1;
        continue;
      }
      row[j].fvalue = fabs(v) <= zero ? 0.0 : v;
      bad |= row[j].missing == -1;
    }
    clash[i] = bad;
    double* result = out + i * width;
    for (long k = 0; k < width; ++k) result[k] = 0.0;
    predict(row, 1, result);
  }
  free(row);
  return 0;
}
"""


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/hyperprior/compiled`` (``~/.cache`` when the variable is unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hyperprior" / "compiled"


def find_c_compiler() -> str | None:
    """The C compiler tl2cgen would call: ``$CC``, else ``gcc``, ``clang`` or ``cc`` (or None)."""
    for name in (os.environ.get("CC"), "gcc", "clang", "cc"):
        if name and shutil.which(name):
            return name
    return None


@dataclass(frozen=True)
class TreeSlice:
    """One prediction of a model to compile.

    Attributes:
        name: ``outputs`` or ``screen-rN``; part of the cache key.
        text: builds the LightGBM model text of the slice (called in the background).
        reference: LightGBM's raw prediction of the slice, ``(n, k)``, that the compiled
            library must reproduce.
        n_trees: trees in the slice.
    """

    name: str
    text: Callable[[], str]
    reference: Callable[[np.ndarray], np.ndarray]
    n_trees: int


class CompiledPredictor:
    """A loaded library: raw predictions ``(n, k)`` of one slice.

    Rows go straight from the float64 matrix into the generated ``predict()`` through a
    small C loop compiled into the same library (:data:`BATCH_SOURCE`): tl2cgen's own
    runtime copied the matrix into a DMatrix and took a lock, which cost more than the
    trees on the screen's 2,048 rows. The loop keeps no state, so threads call it at once.

    tl2cgen's generated code keeps an input's value and its missing flag in one C union
    (``int missing; double fvalue``) and takes the value for missing when its first 32 bits
    read as the int -1: a double whose low 32 bits are all ones (``0.25`` minus one ulp is
    one, and LightGBM puts thresholds on such values) would take the missing side. The
    loop flags rows holding one and ``fallback`` (LightGBM) predicts them instead.
    """

    def __init__(
        self,
        library: ctypes.CDLL,
        num_feature: int,
        path: Path,
        fallback: Callable[[np.ndarray], np.ndarray],
    ) -> None:
        """Wrap ``library``, loaded from ``path`` (built with :data:`BATCH_SOURCE`)."""
        self._library = library
        self._batch = library.hp_predict_dense
        self._batch.restype = ctypes.c_int
        self._batch.argtypes = [
            ctypes.c_void_p,
            ctypes.c_long,
            ctypes.c_long,
            ctypes.c_double,
            ctypes.c_void_p,
            ctypes.c_long,
            ctypes.c_void_p,
        ]
        library.hp_output_width.restype = ctypes.c_int
        self.width = int(library.hp_output_width())
        self._fallback = fallback
        self.num_feature = num_feature
        self.path = path

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Raw outputs ``(n, k)`` of the rows of ``X`` (float64, one row per sample)."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        n = len(X)
        if X.ndim != 2 or X.shape[1] != self.num_feature:
            raise ValueError(f"expected rows of {self.num_feature} features, got {X.shape}")
        out = np.empty((n, self.width), dtype=np.float64)
        clash = np.empty(n, dtype=np.uint8)
        # LightGBM reads an input within its kZeroThreshold of zero as zero (its dense-row
        # reader drops it); so does the loop, or the compiled slice would split such values
        # apart.
        status = self._batch(
            X.ctypes.data,
            n,
            self.num_feature,
            ZERO_THRESHOLD,
            out.ctypes.data,
            self.width,
            clash.ctypes.data,
        )
        if status != 0:
            raise CompiledTreesError(f"{self.path.name} refused a {X.shape} matrix")
        if clash.any():
            rows = np.flatnonzero(clash)
            out[rows] = np.asarray(self._fallback(X[rows]), dtype=np.float64).reshape(len(rows), -1)
        return out


class CompiledTrees:
    """The compiled slices of one surrogate, filled in by its compiler's background thread.

    Thread-safe: :meth:`predict` reads a dict that only ever gains entries.
    """

    def __init__(self, compiler: TreeCompiler, sha256: str, num_feature: int) -> None:
        """Slices of the model with digest ``sha256`` and ``num_feature`` inputs."""
        self.compiler = compiler
        self.sha256 = sha256
        self.num_feature = num_feature
        self._ready: dict[str, CompiledPredictor] = {}
        self._requested: set[str] = set()
        self._pending = 0
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()

    def request(self, spec: TreeSlice) -> None:
        """Queue ``spec`` for loading or compiling, once (a failed slice is not retried)."""
        with self._lock:
            if spec.name in self._requested:
                return
            self._requested.add(spec.name)
            self._pending += 1
            self._idle.clear()
        self.compiler._submit(self, spec)

    def find(self, name: str) -> CompiledPredictor | None:
        """The ready predictor of slice ``name`` (None: not ready, failed or not asked)."""
        return self._ready.get(name)

    def predict(self, name: str, X: np.ndarray) -> np.ndarray | None:
        """Raw outputs of slice ``name``, or None when the caller should use LightGBM.

        None as well for inputs the library was not built for (no rows, another width):
        LightGBM answers those as it always did.
        """
        predictor = self._ready.get(name)
        if predictor is None or X.ndim != 2 or len(X) == 0 or X.shape[1] != self.num_feature:
            return None
        return predictor.predict(X)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every requested slice is ready or has failed; False on timeout."""
        return self._idle.wait(timeout)

    @property
    def ready(self) -> tuple[str, ...]:
        """Names of the slices that predict compiled."""
        return tuple(sorted(self._ready))

    def _done(self, name: str, predictor: CompiledPredictor | None) -> None:
        with self._lock:
            if predictor is not None:
                self._ready[name] = predictor
            self._pending -= 1
            if self._pending == 0:
                self._idle.set()


class TreeCompiler:
    """Compiles and caches surrogate slices; one background thread for all of them.

    Args:
        mode: ``auto`` (compile when tl2cgen and a C compiler are there) or ``off``.
        cache_dir: where libraries are kept (default :func:`default_cache_dir`).
    """

    def __init__(self, mode: str = "auto", cache_dir: str | Path | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown compiled-trees mode {mode!r}; expected one of {MODES}")
        self.mode = mode
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._available: bool | None = None
        self._queue: queue.SimpleQueue[tuple[CompiledTrees, TreeSlice]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def available(self) -> bool:
        """Whether compiled trees can be used: not ``off``, tl2cgen imports, a C compiler.

        ``off`` answers without importing tl2cgen.
        """
        if self.mode == "off":
            return False
        if self._available is None:
            compiler = find_c_compiler()
            try:
                import tl2cgen  # noqa: F401
                import treelite  # noqa: F401
            except Exception as exc:  # noqa: BLE001 - any import failure means "not here"
                log.info("compiled trees unavailable (%s); predicting with LightGBM", exc)
                self._available = False
            else:
                if compiler is None:
                    log.info("compiled trees unavailable (no C compiler); predicting with LightGBM")
                self._available = compiler is not None
        return self._available

    def attach(self, sha256: str, num_feature: int) -> CompiledTrees | None:
        """A new set of compiled slices for the model ``sha256`` (None when unavailable)."""
        if not self.available():
            return None
        return CompiledTrees(self, sha256, num_feature)

    # ----------------------------------------------------------------- background work

    def _submit(self, trees: CompiledTrees, spec: TreeSlice) -> None:
        self._queue.put((trees, spec))
        with self._start_lock:
            if self._thread is None:
                # A daemon: a compile must not hold up the exit of the process (a library
                # half-written then is a temporary file, never a cache entry).
                self._thread = threading.Thread(
                    target=self._work, name="hyperprior-compiled-trees", daemon=True
                )
                self._thread.start()

    def _work(self) -> None:
        _lower_priority()
        while True:
            trees, spec = self._queue.get()
            predictor = None
            try:
                predictor = self.load_or_build(trees.sha256, spec, trees.num_feature)
            except Exception as exc:  # noqa: BLE001 - LightGBM keeps predicting
                log.warning(
                    "compiled trees: %s of model %s failed (%s: %s); predicting with LightGBM",
                    spec.name,
                    trees.sha256[:12],
                    type(exc).__name__,
                    exc,
                )
            trees._done(spec.name, predictor)

    def recipe(self) -> dict[str, Any]:
        """What besides the model and the slice decides the library's bytes."""
        from importlib.metadata import version

        return {
            "format": CACHE_FORMAT,
            "tl2cgen": version("tl2cgen"),
            "treelite": version("treelite"),
            "machine": platform.machine(),
            "compiler": find_c_compiler(),
            "options": list(COMPILER_OPTIONS),
        }

    def key(self, sha256: str, spec: TreeSlice) -> str:
        """The cache key of a slice: model sha256, slice name and recipe digest."""
        recipe = json.dumps(self.recipe(), sort_keys=True).encode()
        return f"{sha256}-{spec.name}-{hashlib.sha256(recipe).hexdigest()[:16]}"

    def load_or_build(self, sha256: str, spec: TreeSlice, num_feature: int) -> CompiledPredictor:
        """The verified library of ``spec``: from the cache, else compiled and cached.

        Raises:
            CompiledTreesError: the slice cannot be compiled to LightGBM's predictions.
        """
        key = self.key(sha256, spec)
        probe: np.ndarray | None = None
        entry = self.cache_dir / f"{key}.json"
        if entry.exists():
            try:
                path = self._cached_library(entry, key, sha256, spec)
                probe = probe_matrix(spec.text(), num_feature)
                predictor = self._load_verified(path, spec, probe, num_feature)
                log.info("compiled trees: %s of model %s from %s", spec.name, sha256[:12], path)
                return predictor
            except Exception as exc:  # noqa: BLE001 - a bad entry is rebuilt
                log.warning(
                    "compiled trees: rejected the cached %s of model %s (%s); compiling anew",
                    spec.name,
                    sha256[:12],
                    exc,
                )
                entry.unlink(missing_ok=True)
        path = self._build(key, sha256, spec)
        if probe is None:
            probe = probe_matrix(spec.text(), num_feature)
        predictor = self._load_verified(path, spec, probe, num_feature)
        log.info("compiled trees: built %s of model %s in %s", spec.name, sha256[:12], path)
        return predictor

    def _cached_library(self, entry: Path, key: str, sha256: str, spec: TreeSlice) -> Path:
        meta = json.loads(entry.read_text(encoding="utf-8"))
        want = {"key": key, "model_sha256": sha256, "slice": spec.name, **self.recipe()}
        for field, value in want.items():
            if meta.get(field) != value:
                raise CompiledTreesError(f"its {field} is {meta.get(field)!r}, not {value!r}")
        name = str(meta.get("library", ""))
        if not re.fullmatch(re.escape(key) + r"-[0-9a-f]{16}\.so", name):
            raise CompiledTreesError(f"unexpected library name {name!r}")
        path = self.cache_dir / name
        digest = _file_sha256(path)
        if digest != meta.get("library_sha256"):
            raise CompiledTreesError(f"{name} has sha256 {digest}, not the recorded one")
        return path

    def _build(self, key: str, sha256: str, spec: TreeSlice) -> Path:
        import tl2cgen

        self.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        toolchain = find_c_compiler()
        if toolchain is None:
            raise CompiledTreesError("no C compiler")
        recipe = self.recipe()
        # The build directory is in the cache directory: the renames below stay on one
        # file system, so they are atomic.
        with tempfile.TemporaryDirectory(prefix=".build-", dir=self.cache_dir) as tmp:
            build = Path(tmp)
            (build / "model.txt").write_text(spec.text(), encoding="utf-8")
            source = build / "src"
            _generate_c(build / "model.txt", source)
            _add_batch_source(source)
            built = tl2cgen.create_shared(
                toolchain,
                source,
                nthread=1,
                options=list(COMPILER_OPTIONS),
                long_build_time_warning=False,
            )
            digest = _file_sha256(Path(built))
            path = self.cache_dir / f"{key}-{digest[:16]}.so"
            staged = build / path.name
            shutil.copyfile(built, staged)
            os.replace(staged, path)
            meta = {
                "key": key,
                "model_sha256": sha256,
                "slice": spec.name,
                **recipe,
                "library": path.name,
                "library_sha256": digest,
            }
            staged_entry = build / "entry.json"
            staged_entry.write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(staged_entry, self.cache_dir / f"{key}.json")
        return path

    @staticmethod
    def _load_verified(
        path: Path, spec: TreeSlice, probe: np.ndarray, num_feature: int
    ) -> CompiledPredictor:
        library = _open_library(path)
        library.get_num_feature.restype = ctypes.c_int32
        if library.get_num_feature() != num_feature:
            raise CompiledTreesError(f"{path.name} takes {library.get_num_feature()} features")
        if not hasattr(library, "hp_predict_dense"):
            raise CompiledTreesError(f"{path.name} has no batch loop")
        predictor = CompiledPredictor(library, num_feature, path, spec.reference)
        want = np.asarray(spec.reference(probe), dtype=np.float64).reshape(len(probe), -1)
        got = predictor.predict(probe)
        if got.shape != want.shape:
            raise CompiledTreesError(f"{path.name} predicts {got.shape}, LightGBM {want.shape}")
        diff = float(np.max(np.abs(got - want), initial=0.0))
        if not diff <= TOLERANCE:  # NaN fails too
            raise CompiledTreesError(f"{path.name} differs from LightGBM by {diff:g} on the probe")
        return predictor


class CompiledTreesError(RuntimeError):
    """A compiled slice that cannot be used (refused from the cache, or failed its probe)."""


_SPLIT_FEATURE = re.compile(r"^split_feature=(.*)$", re.M)
_THRESHOLD = re.compile(r"^threshold=(.*)$", re.M)


def probe_matrix(text: str, num_feature: int, rows: int = PROBE_ROWS) -> np.ndarray:
    """A fixed matrix that takes every split of the model ``text`` both ways.

    Each entry of a feature is one of that feature's thresholds, the double just below or
    above one, a value far out (either side), zero or missing; a feature the model never
    splits on is standard normal; a few entries are within LightGBM's zero threshold.
    Deterministic for a given model.
    """
    values: dict[int, list[float]] = {}
    for feats, thrs in zip(_SPLIT_FEATURE.findall(text), _THRESHOLD.findall(text), strict=True):
        for f, t in zip(feats.split(), thrs.split(), strict=True):
            values.setdefault(int(f), []).append(float(t))
    rng = np.random.default_rng(20261207)
    X = rng.standard_normal((rows, num_feature))
    for f, thresholds in values.items():
        thr = np.unique(np.asarray(thresholds))
        pool = np.concatenate(
            [
                thr,
                np.nextafter(thr, -np.inf),
                np.nextafter(thr, np.inf),
                [-1e300, 1e300, 0.0, np.nan, np.nan],
            ]
        )
        X[:, f] = rng.choice(pool, size=rows)
    tiny = rng.random(X.shape) < 0.01
    X[tiny] = rng.choice([ZERO_THRESHOLD, -ZERO_THRESHOLD, 1e-300, -0.0], size=int(tiny.sum()))
    X[: max(1, rows // 64)] = np.nan  # whole rows missing: every default direction
    return X


def _open_library(path: Path) -> ctypes.CDLL:
    """``dlopen`` the library at ``path``, closed again when nothing refers to it.

    ctypes never unloads a library: without the close, every model a server loaded over its
    life would stay mapped (tl2cgen's own predictor closed its handle when collected).
    """
    import _ctypes

    library = ctypes.CDLL(str(path))
    close = getattr(_ctypes, "dlclose", None) or getattr(_ctypes, "FreeLibrary", None)
    if close is not None:
        weakref.finalize(library, close, library._handle)
    return library


def _add_batch_source(source: Path) -> None:
    """Write :data:`BATCH_SOURCE` beside tl2cgen's sources and list it in the recipe."""
    (source / "hp_batch.c").write_text(BATCH_SOURCE, encoding="utf-8")
    recipe_path = source / "recipe.json"
    recipe = json.loads(recipe_path.read_text(encoding="utf-8"))
    recipe["sources"].append({"name": "hp_batch", "length": BATCH_SOURCE.count("\n")})
    recipe_path.write_text(json.dumps(recipe), encoding="utf-8")


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _lower_priority() -> None:
    # Linux niceness is per thread, and gcc inherits it from the thread that starts it: the
    # compile takes CPU only when the requests leave some.
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):
        pass


# Run by _generate_c in a child process.
_GENERATE_C = """\
import sys

import tl2cgen
import treelite

model = treelite.frontend.load_lightgbm_model(sys.argv[1])
# tl2cgen's defaults: no quantized thresholds (see COMPILER_OPTIONS).
tl2cgen.generate_c_code(model, sys.argv[2], {})
"""


def _generate_c(model: Path, source: Path) -> None:
    """tl2cgen's C sources of the LightGBM model file ``model``, written to ``source``.

    In a child process: the treelite built into tl2cgen writes a note to the process's
    stderr for every model (serialised by a newer treelite, the wheel's 4.8 vs its 4.1;
    harmless, the probe checks every library) that no callback reaches, and tl2cgen's own
    log callbacks are per thread. The child's output goes to the debug log; a crash in
    native code fails this slice, not the server.

    Raises:
        CompiledTreesError: the child failed.
    """
    proc = subprocess.run(
        [sys.executable, "-c", _GENERATE_C, str(model), str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.strip():
            log.debug("tl2cgen: %s", line.strip())
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise CompiledTreesError(f"generating C failed ({proc.returncode}): {tail[0]}")
