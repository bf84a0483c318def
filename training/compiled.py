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
the beats-the-default classifier, all rounds), ``screen-rN`` (the first member's first
``N`` rounds) and ``shap`` (the first member's SHAP contributions, below). A slice is
compiled once per machine and kept in a cache directory
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

The ``shap`` slice gives LightGBM's ``pred_contrib`` of the first member, which explains
each suggestion. It is not generated code: one generic C routine (:data:`SHAP_SOURCE`, a
port of LightGBM's ``Tree::TreeSHAP`` and its path helpers, with
``Tree::NumericalDecision``) takes the trees as arrays read from the model text
(:func:`shap_tables`), so its library is compiled once per machine, not per model
(``shap-DIGEST.json`` names it, the digest covering the source and the compiler options),
and every model that uses it is checked on its own probe matrix like any slice. TreeSHAP
visits every node of a tree for every row, and only which child is hot differs between
rows, so up to 8 rows share one walk of each tree. Factors common to the rows are divided
once and multiplied in, and the path elements cold in a row share one sum, so only
elements hot in some row pay the O(depth^2) step at a leaf. This is LightGBM's arithmetic
rearranged, so not LightGBM's bits: a few ulps apart (at most 5e-16 on the shipped
surrogates, whose contributions reach 0.5; the probe allows 1e-9). On the 5 rows x 40
trees of a request it takes 0.33-0.35 ms where the row-at-a-time port (LightGBM's bits)
took 0.74-0.78 ms and LightGBM's call 1.0 ms (medians on the busy 2-core machine). Trees with
categorical splits or linear leaves are refused and stay with LightGBM.

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


# HP_MAX_PATH of SHAP_SOURCE: trees deeper than this minus 2 stay with LightGBM.
SHAP_MAX_PATH = 256
# Options of the SHAP library: -O3 unrolls and vectorises the loops over a block's rows
# (0.33 vs 0.46 ms at -O2, 5 rows x 40 trees); no contraction into fused multiply-adds
# (some targets do it by default), so the library rounds alike on every target.
SHAP_OPTIONS: tuple[str, ...] = ("-O3", "-ffp-contract=off")
# LightGBM's TreeSHAP (src/io/tree.cpp: Tree::TreeSHAP, ExtendPath, UnwindPath,
# UnwoundPathSum; include/LightGBM/tree.h: NumericalDecision, ExpectedValue, PredictContrib)
# over trees passed as arrays, one library for every model (see the module docstring).
SHAP_SOURCE = r"""#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Longest path (tree depth + 1) the leaf step takes; deeper trees are refused. */
#define HP_MAX_PATH 256
/* Rows that share one walk of each tree: the path's features and zero fractions are the
   same for every row, only the one fractions (which child is hot) and pweights differ. */
#define HP_BLOCK 8

#if defined(__GNUC__) || defined(__clang__)
#define HP_INLINE static inline __attribute__((always_inline))
#else
#define HP_INLINE static inline
#endif

/* One element of the path for a block of rows: per row (innermost, so the row loops
   vectorise) its one fraction and pweight. */
typedef struct {
  int feature_index;
  double zero_fraction;
  double one_fraction[HP_BLOCK];
  double pweight[HP_BLOCK];
} PathElement;

typedef struct {
  const int* split_feature;
  const double* threshold;
  const signed char* decision_type;
  const int* left_child;
  const int* right_child;
  const int* internal_count;
  const double* leaf_value;
  const int* leaf_count;
  double zero;
} Tree;

/* One walk of a tree for a block of nb rows (x: nb rows of nf inputs; phi: nb rows of
   nf + 1 contributions). */
typedef struct {
  const Tree* t;
  const double* x;
  double* phi;
  long nf;
  int nb;
} Walk;

/* The helpers below take nb as a constant (see the dispatch below), so their loops over
   the rows unroll and vectorise. One fractions are only ever 1 or 0 (a row's hot child
   inherits its parent's, the cold child gets 0), and every factor that is the same for all
   rows is computed once: the rows' loops multiply, only the shared factors divide. This
   rounds differently from LightGBM's sequence of divisions, by a few ulps. */
HP_INLINE void extend_path_n(PathElement* unique_path, int unique_depth, double zero_fraction,
                             const double* one_fraction, int feature_index, const int nb) {
  PathElement* top = &unique_path[unique_depth];
  top->feature_index = feature_index;
  top->zero_fraction = zero_fraction;
  for (int r = 0; r < nb; ++r) {
    top->one_fraction[r] = one_fraction[r];
    top->pweight[r] = (unique_depth == 0 ? 1 : 0);
  }
  const double scale = 1.0 / (unique_depth + 1);
  for (int i = unique_depth - 1; i >= 0; i--) {
    double* up = unique_path[i + 1].pweight;
    double* here = unique_path[i].pweight;
    const double up_factor = (i + 1) * scale;
    const double here_factor = zero_fraction * (unique_depth - i) * scale;
    for (int r = 0; r < nb; ++r) {
      up[r] += one_fraction[r] * here[r] * up_factor;
      here[r] *= here_factor;
    }
  }
}

HP_INLINE void unwind_path_n(PathElement* unique_path, int unique_depth, int path_index,
                             const int nb) {
  const double* one_fraction = unique_path[path_index].one_fraction;
  const double zero_fraction = unique_path[path_index].zero_fraction;
  double next_one_portion[HP_BLOCK];
  for (int r = 0; r < nb; ++r) next_one_portion[r] = unique_path[unique_depth].pweight[r];
  for (int i = unique_depth - 1; i >= 0; --i) {
    double* pweight = unique_path[i].pweight;
    const double hot_factor = (unique_depth + 1) / (double)(i + 1);
    const double cold_factor = (unique_depth + 1) / (zero_fraction * (unique_depth - i));
    const double back = zero_fraction * (unique_depth - i) / (unique_depth + 1);
    for (int r = 0; r < nb; ++r) {
      const double tmp = pweight[r];
      const double unwound =
          one_fraction[r] != 0 ? next_one_portion[r] * hot_factor : tmp * cold_factor;
      pweight[r] = unwound;
      next_one_portion[r] = tmp - unwound * back; /* read on hot rows only */
    }
  }
  for (int i = path_index; i < unique_depth; ++i) {
    unique_path[i].feature_index = unique_path[i + 1].feature_index;
    unique_path[i].zero_fraction = unique_path[i + 1].zero_fraction;
    for (int r = 0; r < nb; ++r) {
      unique_path[i].one_fraction[r] = unique_path[i + 1].one_fraction[r];
    }
  }
}

/* Tree::TreeSHAP at a leaf: UnwoundPathSum of each path element, for every row, times
   (one_fraction - zero_fraction) and the leaf value. For an element cold in a row
   (one_fraction 0) the sum is sum_j pweight_j / q_j / zero_fraction, so its contribution
   is -sum_j (pweight_j / q_j) * value: one sum per row serves every cold element. Only an
   element hot in some row runs the O(depth) recursion. Each element adds to its own
   feature's phi (a unique path holds a feature once), so their order does not matter. */
HP_INLINE void leaf_shap_n(const Walk* w, const PathElement* unique_path, int unique_depth,
                           int leaf, const int nb) {
  const double value = w->t->leaf_value[leaf];
  const double depth1 = unique_depth + 1;
  const double* top = unique_path[unique_depth].pweight;
  double cold[HP_BLOCK];
  for (int r = 0; r < nb; ++r) cold[r] = 0;
  /* LightGBM's tmp = next * depth1 / (j + 1) and next = pweight - tmp * zero * q, as
     next * step[j] and pweight - next * back[j] * zero. */
  double step[HP_MAX_PATH], back[HP_MAX_PATH];
  for (int j = unique_depth - 1; j >= 0; --j) {
    const double inv_q = depth1 / (unique_depth - j);
    for (int r = 0; r < nb; ++r) cold[r] += unique_path[j].pweight[r] * inv_q;
    step[j] = depth1 / (j + 1);
    back[j] = (unique_depth - j) / (double)(j + 1);
  }
  for (int r = 0; r < nb; ++r) cold[r] = -cold[r] * value;
  const long width = w->nf + 1;
  for (int i = 1; i <= unique_depth; ++i) {
    const PathElement* el = &unique_path[i];
    double* phi = w->phi + el->feature_index;
    int hot = 0;
    for (int r = 0; r < nb; ++r) hot |= el->one_fraction[r] != 0;
    if (!hot) {
      for (int r = 0; r < nb; ++r) phi[r * width] += cold[r];
      continue;
    }
    const double zero = el->zero_fraction;
    double next[HP_BLOCK], total[HP_BLOCK];
    for (int r = 0; r < nb; ++r) {
      next[r] = top[r];
      total[r] = 0;
    }
    for (int j = unique_depth - 1; j >= 0; --j) {
      const double* pweight = unique_path[j].pweight;
      const double back_zero = back[j] * zero;
      for (int r = 0; r < nb; ++r) {
        total[r] += next[r] * step[j];
        next[r] = pweight[r] - next[r] * back_zero;
      }
    }
    const double hot_factor = (1 - zero) * value;
    for (int r = 0; r < nb; ++r) {
      phi[r * width] += el->one_fraction[r] != 0 ? total[r] * hot_factor : cold[r];
    }
  }
}

/* Each block size has its own copy of the helpers, nb a constant in each. */
#define HP_DISPATCH(nb, call) \
  switch (nb) {               \
    case 1: call(1); break;   \
    case 2: call(2); break;   \
    case 3: call(3); break;   \
    case 4: call(4); break;   \
    case 5: call(5); break;   \
    case 6: call(6); break;   \
    case 7: call(7); break;   \
    default: call(8); break;  \
  }

static void extend_path(PathElement* unique_path, int unique_depth, double zero_fraction,
                        const double* one_fraction, int feature_index, int nb) {
#define HP_CALL(k) extend_path_n(unique_path, unique_depth, zero_fraction, one_fraction, \
                                 feature_index, k)
  HP_DISPATCH(nb, HP_CALL)
#undef HP_CALL
}

static void unwind_path(PathElement* unique_path, int unique_depth, int path_index, int nb) {
#define HP_CALL(k) unwind_path_n(unique_path, unique_depth, path_index, k)
  HP_DISPATCH(nb, HP_CALL)
#undef HP_CALL
}

static void leaf_shap(const Walk* w, const PathElement* unique_path, int unique_depth,
                      int leaf) {
#define HP_CALL(k) leaf_shap_n(w, unique_path, unique_depth, leaf, k)
  HP_DISPATCH(w->nb, HP_CALL)
#undef HP_CALL
}

static int data_count(const Tree* t, int node) {
  return node >= 0 ? t->internal_count[node] : t->leaf_count[~node];
}

/* Tree::NumericalDecision: NaN is 0 unless the split's missing type is NaN; a missing
   value (zero or NaN, by the missing type) takes the default side. */
static int decision(const Tree* t, double fval, int node) {
  const int missing_type = (t->decision_type[node] >> 2) & 3;
  if (isnan(fval) && missing_type != 2) fval = 0.0;
  if ((missing_type == 1 && fval >= -t->zero && fval <= t->zero) ||
      (missing_type == 2 && isnan(fval))) {
    return (t->decision_type[node] & 2) ? t->left_child[node] : t->right_child[node];
  }
  return fval <= t->threshold[node] ? t->left_child[node] : t->right_child[node];
}

/* Tree::TreeSHAP for a block of rows: every node is visited for every row anyway (hot and
   cold child alike), so the rows share the walk, left child first; a row's hot child gets
   its incoming one fraction, its cold child 0. */
static void tree_shap(const Walk* w, int node, int unique_depth, PathElement* parent_unique_path,
                      double parent_zero_fraction, const double* parent_one_fraction,
                      int parent_feature_index) {
  const Tree* t = w->t;
  const int nb = w->nb;
  PathElement* unique_path = parent_unique_path + unique_depth;
  if (unique_depth > 0)
    memcpy(unique_path, parent_unique_path, sizeof(PathElement) * (size_t)unique_depth);
  extend_path(unique_path, unique_depth, parent_zero_fraction, parent_one_fraction,
              parent_feature_index, nb);
  if (node < 0) {
    leaf_shap(w, unique_path, unique_depth, ~node);
    return;
  }
  const int feature = t->split_feature[node];
  const int left = t->left_child[node];
  const int right = t->right_child[node];
  const double count = data_count(t, node);
  const double left_zero_fraction = data_count(t, left) / count;
  const double right_zero_fraction = data_count(t, right) / count;
  double incoming_zero_fraction = 1;
  double incoming_one_fraction[HP_BLOCK];
  for (int r = 0; r < nb; ++r) incoming_one_fraction[r] = 1;
  int path_index = 0;
  for (; path_index <= unique_depth; ++path_index) {
    if (unique_path[path_index].feature_index == feature) break;
  }
  if (path_index != unique_depth + 1) {
    incoming_zero_fraction = unique_path[path_index].zero_fraction;
    for (int r = 0; r < nb; ++r) {
      incoming_one_fraction[r] = unique_path[path_index].one_fraction[r];
    }
    unwind_path(unique_path, unique_depth, path_index, nb);
    unique_depth -= 1;
  }
  double left_one_fraction[HP_BLOCK], right_one_fraction[HP_BLOCK];
  for (int r = 0; r < nb; ++r) {
    const int hot_left = decision(t, w->x[r * w->nf + feature], node) == left;
    left_one_fraction[r] = hot_left ? incoming_one_fraction[r] : 0;
    right_one_fraction[r] = hot_left ? 0 : incoming_one_fraction[r];
  }
  tree_shap(w, left, unique_depth + 1, unique_path, left_zero_fraction * incoming_zero_fraction,
            left_one_fraction, feature);
  tree_shap(w, right, unique_depth + 1, unique_path,
            right_zero_fraction * incoming_zero_fraction, right_one_fraction, feature);
}

static double expected_value(const Tree* t, int num_leaves) {
  if (num_leaves == 1) return t->leaf_value[0];
  const double total_count = t->internal_count[0];
  double exp_value = 0.0;
  for (int i = 0; i < num_leaves; ++i) {
    exp_value += (t->leaf_count[i] / total_count) * t->leaf_value[i];
  }
  return exp_value;
}

/* Contributions (n, nf + 1) of the rows of X (dense float64), bias last, as LightGBM's
   pred_contrib. Tree k owns nodes node_start[k].. and leaves leaf_start[k]..; children are
   indices within the tree (a leaf is ~index); max_depth bounds every tree's depth. */
int hp_tree_shap(const double* X, long n, long nf, double zero, long n_trees,
                 const int* num_leaves, const long* node_start, const long* leaf_start,
                 const int* split_feature, const double* threshold,
                 const signed char* decision_type, const int* left_child, const int* right_child,
                 const int* internal_count, const double* leaf_value, const int* leaf_count,
                 long max_depth, double* out) {
  if (n < 0 || nf <= 0 || max_depth < 0 || max_depth + 1 >= HP_MAX_PATH) return -1;
  /* PredictContrib's buffer: each level of the walk keeps its own copy of the path. */
  const long path_len = max_depth + 1;
  double* rows = (double*)malloc(sizeof(double) * (size_t)(HP_BLOCK * nf));
  PathElement* path =
      (PathElement*)malloc(sizeof(PathElement) * (size_t)(path_len * (path_len + 1) / 2));
  if (rows == NULL || path == NULL) {
    free(rows);
    free(path);
    return -2;
  }
  double ones[HP_BLOCK];
  for (int r = 0; r < HP_BLOCK; ++r) ones[r] = 1;
  for (long start = 0; start < n; start += HP_BLOCK) {
    const int nb = n - start < HP_BLOCK ? (int)(n - start) : HP_BLOCK;
    for (int r = 0; r < nb; ++r) {
      const double* x = X + (start + r) * nf;
      for (long j = 0; j < nf; ++j) {
        /* LightGBM's dense-row reader drops values within kZeroThreshold: they read as 0. */
        const double v = x[j];
        rows[r * nf + j] = fabs(v) <= zero ? 0.0 : v;
      }
    }
    double* phi = out + start * (nf + 1);
    for (long j = 0; j < nb * (nf + 1); ++j) phi[j] = 0.0;
    for (long k = 0; k < n_trees; ++k) {
      Tree t = {split_feature + node_start[k], threshold + node_start[k],
                decision_type + node_start[k], left_child + node_start[k],
                right_child + node_start[k], internal_count + node_start[k],
                leaf_value + leaf_start[k], leaf_count + leaf_start[k], zero};
      const double bias = expected_value(&t, num_leaves[k]);
      for (int r = 0; r < nb; ++r) phi[r * (nf + 1) + nf] += bias;
      if (num_leaves[k] > 1) {
        const Walk w = {&t, rows, phi, nf, nb};
        tree_shap(&w, 0, 0, path, 1, ones, -1);
      }
    }
  }
  free(rows);
  free(path);
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
        kind: ``trees`` (tl2cgen's code of the slice's trees, raw predictions) or ``shap``
            (the slice's SHAP contributions, ``(n, n_features + 1)``, by the generic
            TreeSHAP library; ``reference`` is LightGBM's ``pred_contrib``).
    """

    name: str
    text: Callable[[], str]
    reference: Callable[[np.ndarray], np.ndarray]
    n_trees: int
    kind: str = "trees"


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


@dataclass(frozen=True)
class ShapTables:
    """A model's trees as the arrays :data:`SHAP_SOURCE` reads (see :func:`shap_tables`).

    Nodes and leaves of all trees are concatenated; tree ``k`` starts at ``node_start[k]``
    and ``leaf_start[k]``, and its children are indices within the tree (a leaf is ``~i``).
    """

    num_feature: int
    num_leaves: np.ndarray
    node_start: np.ndarray
    leaf_start: np.ndarray
    split_feature: np.ndarray
    threshold: np.ndarray
    decision_type: np.ndarray
    left_child: np.ndarray
    right_child: np.ndarray
    internal_count: np.ndarray
    leaf_value: np.ndarray
    leaf_count: np.ndarray
    max_depth: int


class ShapPredictor:
    """SHAP contributions ``(n, n_features + 1)`` of one model, by the generic TreeSHAP library.

    Stateless in C (each call allocates its own path buffer), so threads call it at once.
    """

    _ARRAYS = (
        "num_leaves",
        "node_start",
        "leaf_start",
        "split_feature",
        "threshold",
        "decision_type",
        "left_child",
        "right_child",
        "internal_count",
        "leaf_value",
        "leaf_count",
    )

    def __init__(self, library: ctypes.CDLL, tables: ShapTables, path: Path) -> None:
        """Wrap ``library`` (built from :data:`SHAP_SOURCE`, loaded from ``path``)."""
        self._library = library
        self._shap = library.hp_tree_shap
        self._shap.restype = ctypes.c_int
        self._shap.argtypes = [
            ctypes.c_void_p,
            ctypes.c_long,
            ctypes.c_long,
            ctypes.c_double,
            ctypes.c_long,
            *[ctypes.c_void_p] * len(self._ARRAYS),
            ctypes.c_long,
            ctypes.c_void_p,
        ]
        self.tables = tables  # keeps the arrays behind the pointers alive
        self._pointers = [getattr(tables, name).ctypes.data for name in self._ARRAYS]
        self.num_feature = tables.num_feature
        self.width = tables.num_feature + 1
        self.path = path

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Contributions of the rows of ``X``, the bias (expected value) last."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.num_feature:
            raise ValueError(f"expected rows of {self.num_feature} features, got {X.shape}")
        out = np.empty((len(X), self.width), dtype=np.float64)
        status = self._shap(
            X.ctypes.data,
            len(X),
            self.num_feature,
            ZERO_THRESHOLD,
            len(self.tables.num_leaves),
            *self._pointers,
            self.tables.max_depth,
            out.ctypes.data,
        )
        if status != 0:
            raise CompiledTreesError(f"{self.path.name} refused a {X.shape} matrix")
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
        self._ready: dict[str, CompiledPredictor | ShapPredictor] = {}
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

    def find(self, name: str) -> CompiledPredictor | ShapPredictor | None:
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

    def _done(self, name: str, predictor: CompiledPredictor | ShapPredictor | None) -> None:
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
            predictor: CompiledPredictor | ShapPredictor | None = None
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

    def load_or_build(
        self, sha256: str, spec: TreeSlice, num_feature: int
    ) -> CompiledPredictor | ShapPredictor:
        """The verified library of ``spec``: from the cache, else compiled and cached.

        Raises:
            CompiledTreesError: the slice cannot be compiled to LightGBM's predictions.
        """
        if spec.kind == "shap":
            return self._load_or_build_shap(sha256, spec, num_feature)
        key = self.key(sha256, spec)
        probe: np.ndarray | None = None
        entry = self.cache_dir / f"{key}.json"
        if entry.exists():
            try:
                want = {"key": key, "model_sha256": sha256, "slice": spec.name, **self.recipe()}
                path = self._cached_library(entry, key, want)
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

    def _cached_library(self, entry: Path, key: str, want: dict[str, Any]) -> Path:
        meta = json.loads(entry.read_text(encoding="utf-8"))
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

    # ----------------------------------------------------------------- the SHAP library

    def shap_recipe(self) -> dict[str, Any]:
        """What decides the bytes of the SHAP library (no model: one library per machine)."""
        return {
            "format": CACHE_FORMAT,
            "source_sha256": hashlib.sha256(SHAP_SOURCE.encode()).hexdigest(),
            "machine": platform.machine(),
            "compiler": find_c_compiler(),
            "options": list(SHAP_OPTIONS),
        }

    def shap_key(self) -> str:
        """The cache key of the SHAP library: ``shap-`` and a digest of its recipe."""
        recipe = json.dumps(self.shap_recipe(), sort_keys=True).encode()
        return f"shap-{hashlib.sha256(recipe).hexdigest()[:16]}"

    def _load_or_build_shap(self, sha256: str, spec: TreeSlice, num_feature: int) -> ShapPredictor:
        # Trees the routine cannot explain are refused before the cache is touched: the
        # library is not at fault.
        text = spec.text()
        tables = shap_tables(text, num_feature)
        probe = probe_matrix(text, num_feature)
        key = self.shap_key()
        entry = self.cache_dir / f"{key}.json"
        if entry.exists():
            try:
                want = {"key": key, "slice": "shap", **self.shap_recipe()}
                path = self._cached_library(entry, key, want)
                predictor = self._load_shap_verified(path, spec, tables, probe)
                log.info("compiled trees: shap of model %s from %s", sha256[:12], path)
                return predictor
            except Exception as exc:  # noqa: BLE001 - a bad entry is rebuilt
                log.warning(
                    "compiled trees: rejected the cached shap library for model %s (%s); "
                    "compiling anew",
                    sha256[:12],
                    exc,
                )
                entry.unlink(missing_ok=True)
        path = self._build_shap(key)
        predictor = self._load_shap_verified(path, spec, tables, probe)
        log.info("compiled trees: built shap for model %s in %s", sha256[:12], path)
        return predictor

    def _build_shap(self, key: str) -> Path:
        self.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        toolchain = find_c_compiler()
        if toolchain is None:
            raise CompiledTreesError("no C compiler")
        recipe = self.shap_recipe()
        with tempfile.TemporaryDirectory(prefix=".build-", dir=self.cache_dir) as tmp:
            build = Path(tmp)
            (build / "shap.c").write_text(SHAP_SOURCE, encoding="utf-8")
            built = build / "shap.so"
            command = [toolchain, *SHAP_OPTIONS, "-shared", "-fPIC", "-o", str(built)]
            proc = subprocess.run(
                [*command, str(build / "shap.c"), "-lm"],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
                raise CompiledTreesError(f"compiling shap failed ({proc.returncode}): {tail[0]}")
            digest = _file_sha256(built)
            path = self.cache_dir / f"{key}-{digest[:16]}.so"
            os.replace(built, path)
            meta = {"key": key, "slice": "shap", **recipe, "library": path.name}
            meta["library_sha256"] = digest
            staged_entry = build / "entry.json"
            staged_entry.write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(staged_entry, self.cache_dir / f"{key}.json")
        return path

    @staticmethod
    def _load_shap_verified(
        path: Path, spec: TreeSlice, tables: ShapTables, probe: np.ndarray
    ) -> ShapPredictor:
        library = _open_library(path)
        if not hasattr(library, "hp_tree_shap"):
            raise CompiledTreesError(f"{path.name} has no TreeSHAP routine")
        predictor = ShapPredictor(library, tables, path)
        want = np.asarray(spec.reference(probe), dtype=np.float64).reshape(len(probe), -1)
        got = predictor.predict(probe)
        if got.shape != want.shape:
            raise CompiledTreesError(f"{path.name} explains {got.shape}, LightGBM {want.shape}")
        diff = float(np.max(np.abs(got - want), initial=0.0))
        if not diff <= TOLERANCE:  # NaN fails too
            raise CompiledTreesError(f"{path.name} differs from LightGBM by {diff:g} on the probe")
        return predictor

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


_TREE_HEADER = re.compile(r"^Tree=\d+$", re.M)
_SHAP_NODE_FIELDS = {
    "split_feature": np.int32,
    "threshold": np.float64,
    "decision_type": np.int8,
    "left_child": np.int32,
    "right_child": np.int32,
    "internal_count": np.int32,
}
_SHAP_LEAF_FIELDS = {"leaf_value": np.float64, "leaf_count": np.int32}


def shap_tables(text: str, num_feature: int) -> ShapTables:
    """The trees of the LightGBM model ``text`` as :class:`ShapTables`.

    LightGBM writes its doubles in round-trip precision and both parsers round correctly,
    so these are LightGBM's doubles. Every index is checked here, so the C routine never
    reads out of bounds.

    Raises:
        CompiledTreesError: categorical splits, linear leaves, or arrays that do not make
            a binary tree over ``num_feature`` features.
    """
    body = text.split("\nend of trees", 1)[0]
    blocks = _TREE_HEADER.split(body)[1:]
    if not blocks:
        raise CompiledTreesError("no trees")
    columns: dict[str, list[Any]] = {k: [] for k in (*_SHAP_NODE_FIELDS, *_SHAP_LEAF_FIELDS)}
    num_leaves: list[int] = []
    node_start: list[int] = []
    leaf_start: list[int] = []
    max_depth = 0
    for index, block in enumerate(blocks):
        fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        leaves = int(fields.get("num_leaves", "0"))
        if int(fields.get("num_cat", "0")) > 0:
            raise CompiledTreesError(f"tree {index} has categorical splits")
        if int(fields.get("is_linear", "0")) != 0:
            raise CompiledTreesError(f"tree {index} has linear leaves")
        if leaves < 1:
            raise CompiledTreesError(f"tree {index} has {leaves} leaves")
        node_start.append(sum(num_leaves) - len(num_leaves))
        leaf_start.append(sum(num_leaves))
        num_leaves.append(leaves)
        wanted = {**_SHAP_LEAF_FIELDS, **(_SHAP_NODE_FIELDS if leaves > 1 else {})}
        parsed: dict[str, list[Any]] = {}
        for name, dtype in wanted.items():
            size = leaves if name in _SHAP_LEAF_FIELDS else leaves - 1
            values = fields.get(name, "").split()
            if name == "leaf_count" and leaves == 1 and not values:
                values = ["0"]  # a constant tree: its count is never read
            if len(values) != size:
                raise CompiledTreesError(f"tree {index}: {name} has {len(values)} of {size}")
            parsed[name] = [float(v) if dtype == np.float64 else int(v) for v in values]
            columns[name] += parsed[name]
        if leaves > 1:
            if any(t & 1 for t in parsed["decision_type"]):  # LightGBM's kCategoricalMask
                raise CompiledTreesError(f"tree {index} has categorical splits")
            max_depth = max(max_depth, _checked_depth(parsed, leaves, num_feature, index))
    if max_depth + 2 > SHAP_MAX_PATH:
        raise CompiledTreesError(f"trees {max_depth} deep; the routine takes {SHAP_MAX_PATH - 2}")
    arrays = {
        name: np.ascontiguousarray(columns[name], dtype=dtype)
        for name, dtype in {**_SHAP_NODE_FIELDS, **_SHAP_LEAF_FIELDS}.items()
    }
    return ShapTables(
        num_feature=num_feature,
        num_leaves=np.asarray(num_leaves, dtype=np.int32),
        node_start=np.asarray(node_start, dtype=np.dtype(ctypes.c_long)),
        leaf_start=np.asarray(leaf_start, dtype=np.dtype(ctypes.c_long)),
        max_depth=max_depth,
        **arrays,
    )


def _checked_depth(tree: dict[str, list[Any]], leaves: int, num_feature: int, index: int) -> int:
    """Depth of a tree whose children reach each node and leaf exactly once (else raises)."""
    if not all(0 <= f < num_feature for f in tree["split_feature"]):
        raise CompiledTreesError(f"tree {index} splits on a feature outside 0..{num_feature - 1}")
    seen_nodes, seen_leaves = 0, 0
    depth = 0
    stack = [(0, 0)]
    visited: set[int] = set()
    while stack:
        node, level = stack.pop()
        if node in visited:
            raise CompiledTreesError(f"tree {index} is not a tree")
        visited.add(node)
        if node < 0:
            if ~node >= leaves:
                raise CompiledTreesError(f"tree {index} has a child outside its leaves")
            seen_leaves += 1
            depth = max(depth, level)
            continue
        if node >= leaves - 1:
            raise CompiledTreesError(f"tree {index} has a child outside its nodes")
        seen_nodes += 1
        stack.append((tree["left_child"][node], level + 1))
        stack.append((tree["right_child"][node], level + 1))
    if seen_nodes != leaves - 1 or seen_leaves != leaves:
        raise CompiledTreesError(f"tree {index} does not reach all its nodes and leaves")
    return depth


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
