"""Which connections to prune: masks by magnitude, pure numpy.

*Learning both Weights and Connections* (Han et al., NIPS 2015) removes a
layer's small weights, retrains the rest, and repeats. Two ways to say how
many to remove:

* ``threshold_mask``: the paper's rule, drop |w| <= quality * std. Its kept
  share depends on the weight distribution, so hitting a published density
  means searching for the quality.
* ``density_mask``: keep a given share of the layer's weights, the largest
  in magnitude. This reproduces the tables' W% column directly and is what
  the pipeline uses by default (``PAPER_DENSITY``).

A mask is a bool array of the weight's shape, True = kept. Passing the
previous round's mask ANDs it in: a pruned connection never comes back
(the paper keeps the survivors, it does not regrow the dead).

Also here: the dropout rule for retraining and the iterative schedule.
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import numpy as np

from caffe_dc.base.errors import InputError
from caffe_dc.base.paper import PAPER_BITS, PAPER_DENSITY, PAPER_INDEX_BITS, PAPER_TOTAL_DENSITY  # noqa: F401 (re-exported)


def validate_quality(quality: float) -> float:
    """A threshold quality: a finite number > 0 (threshold = quality * std)."""
    try:
        q = float(quality)
    except (TypeError, ValueError):
        raise InputError("pruning quality must be a number, got %r" % (quality,))
    if not math.isfinite(q) or q <= 0:
        raise InputError("pruning quality must be > 0 (threshold = quality * std), got %r" % (quality,))
    return q


def validate_density(density: float) -> float:
    """A density: the kept share of a layer's weights, in (0, 1]."""
    try:
        d = float(density)
    except (TypeError, ValueError):
        raise InputError("density must be a number, got %r" % (density,))
    if not math.isfinite(d) or not 0.0 < d <= 1.0:
        raise InputError("density (kept share of weights) must be in (0, 1], got %r" % (density,))
    return d


def _check(w: np.ndarray, mask: Optional[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    w = np.asarray(w)
    if w.size and not np.isfinite(w).all():
        raise InputError("weights contain NaN or infinity: the model is broken, refusing to prune it")
    if mask is None:
        return w, np.ones(w.shape, dtype=bool)
    mask = np.asarray(mask)
    if mask.shape != w.shape:
        raise InputError("mask shape %s does not match weight shape %s" % (mask.shape, w.shape))
    return w, mask.astype(bool)


def threshold_mask(w: np.ndarray, quality: float, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Keep |w| > quality * std, ANDed with ``mask``.

    The std is taken over the weights that are still unpruned (all of them
    when ``mask`` is None, which is the paper's "std of the layer's weights"
    on a dense layer). Over the survivors, the same quality keeps pruning a
    similar share of what is left each round; over all weights, the zeros of
    earlier rounds would shrink the std and the threshold with it, so later
    rounds would prune almost nothing.
    """
    q = validate_quality(quality)
    w, mask = _check(w, mask)
    alive = w[mask]
    if alive.size == 0:
        return mask.copy()
    thr = q * float(np.std(alive, dtype=np.float64))
    return mask & (np.abs(w) > thr)


def keep_count(density: float, n: int) -> int:
    """round(density * n), half up, and at least 1: a layer is never removed entirely."""
    d = validate_density(density)
    return min(n, max(1, int(math.floor(d * n + 0.5)))) if n else 0


def density_mask(w: np.ndarray, density: float, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Keep the ``keep_count(density, w.size)`` largest-|w| weights, ANDed with ``mask``.

    ``density`` is a share of *all* the layer's weights, as in the tables'
    W% column. If ``mask`` keeps fewer than that, all of its survivors stay
    (nothing is revived). Ties at the threshold magnitude go to the lower
    flat index, so the result depends only on the values. O(n): one
    ``np.partition`` for the threshold, no full sort.
    """
    w, mask = _check(w, mask)
    m = keep_count(density, w.size)
    # float32 is exact for |w| of float32 weights and halves the memory on VGG-16's fc6 (103M weights)
    a = np.abs(w.astype(np.float32, copy=False)).ravel()
    fm = mask.ravel()
    alive = int(fm.sum())
    if m >= alive:
        return mask.copy()
    np.copyto(a, np.float32(-1.0), where=~fm)   # pruned weights rank below every live one (|w| >= 0)
    t = np.partition(a, a.size - m)[a.size - m]   # the m-th largest magnitude
    keep = a > t
    short = m - int(keep.sum())
    if short > 0:                  # fill with the lowest-index weights equal to the threshold
        keep[np.flatnonzero(a == t)[:short]] = True
    return keep.reshape(w.shape)


class PruningRule:
    """Which of a blob's weights to keep at a target density; subclasses give ``name`` and ``mask``."""
    name = ""

    def mask(self, w: np.ndarray, density: float, mask: Optional[np.ndarray] = None) -> np.ndarray:
        """A bool array of ``w``'s shape, True = kept: ``keep_count(density, w.size)`` weights, or all of
        ``mask``'s survivors if it keeps fewer, and none that ``mask`` (the previous round's) pruned."""
        raise NotImplementedError


class Magnitude(PruningRule):
    """The largest |w| (``density_mask``): the paper's rule, at a density instead of a threshold."""
    name = "magnitude"

    def mask(self, w: np.ndarray, density: float, mask: Optional[np.ndarray] = None) -> np.ndarray:
        return density_mask(w, density, mask)


MAGNITUDE = Magnitude()


def prune_in_place(w: np.ndarray, density: float) -> int:
    """Zero all but the ``density`` share of largest-|w| weights (``density_mask``); returns how many stay nonzero.

    In place, so a layer never has a second float copy (VGG-16's fc6 is 411 MB).
    The count is of nonzeros, not the mask's: a layer already sparser keeps its zeros.
    """
    mask = density_mask(w, density)
    np.copyto(w, w.dtype.type(0), where=~mask)
    return int(np.count_nonzero(w))


def dropout_ratio(d_orig: float, c_orig: float, c_kept: float) -> float:
    """D_r = D_o * sqrt(C_ir / C_io): retrain a pruned layer with less dropout.

    A sparser layer has less capacity to overfit, so it needs less dropout.
    C_io / C_ir are the layer's connection counts before / after pruning (or
    any two numbers in that ratio, e.g. 1.0 and the kept share).
    AlexNet fc6: dropout_ratio(0.5, 1, 0.09) == 0.15.
    """
    if not 0.0 <= d_orig < 1.0:
        raise InputError("dropout ratio must be in [0, 1), got %r" % (d_orig,))
    if not c_orig > 0 or not 0 <= c_kept <= c_orig:
        raise InputError("connection counts must satisfy 0 <= kept <= original, original > 0; got %r, %r"
                         % (c_kept, c_orig))
    return float(d_orig) * math.sqrt(float(c_kept) / float(c_orig))


def iterative_schedule(final_density: float, rounds: int) -> List[float]:
    """Per-round target densities, geometric from 1.0 to ``final_density``.

    Round r (1-based) keeps final ** (r / rounds) of the weights, so every
    round removes the same *fraction of the survivors*, the way repeated
    prune -> retrain with a fixed quality behaves. The last entry is
    ``final_density`` exactly. E.g. (0.08, 3) -> [0.431, 0.186, 0.08].
    """
    d = validate_density(final_density)
    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 1:
        raise InputError("the number of pruning rounds must be an integer >= 1, got %r" % (rounds,))
    out = [d ** (r / rounds) for r in range(1, rounds)]
    return out + [d]


class MaskedDiff:
    """Zero the gradient of every pruned weight, in place (the kept positions found once).

    With a zero gradient, a pruned weight that is 0.0 with 0.0 momentum
    history stays exactly 0.0 under SGD with momentum and weight decay.
    """

    def __init__(self, mask_flat: np.ndarray):
        self.kept = np.flatnonzero(np.asarray(mask_flat).ravel() != 0)

    def __call__(self, diff_flat: np.ndarray) -> np.ndarray:
        g = diff_flat[self.kept]
        diff_flat.fill(0)
        diff_flat[self.kept] = g
        return diff_flat
