"""Statistics for accuracies measured on a finite test set: intervals, paired comparisons, seeds.

Two models scored on the same ``n`` images are compared image by image:
``b`` images only model A gets right, ``c`` only model B, and the change in
accuracy B - A is ``(c - b) / n``. docs/statistics.md states the rules; in
short:

* ``wilson``: the Wilson score interval of one accuracy k/n.
* ``compare`` / ``paired``: the change B - A with Tango's score interval,
  the inversion of the unconditional score test for paired proportions
  (it does not condition on the number of discordant images ``b + c``,
  which varies from test set to test set). McNemar's exact p-value stays
  beside it as a second figure; the verdict never reads it.
* ``verdict``: non-inferiority at a stated ``margin`` (a fraction, 0.002 =
  0.2 pp): "gain" when the interval's lower bound lies above 0, "no loss"
  when it lies above ``-margin``, "loss" when the interval lies below 0
  and reaches below ``-margin``, "inconclusive" otherwise. Each comparison
  point (0 and ``-margin``) is where the interval's bisection starts, so
  the interval excludes it exactly when the score test rejects there.
* ``default_margin``: the margin when none is given, from the reference's
  validation error (known before the test split is read).
* ``over_seeds``: the mean change over seeds with an interval carrying both
  the seed-to-seed spread and the sampling of the shared test images.
"""
from __future__ import annotations

import functools
import math
from typing import Dict, Mapping, Sequence, Tuple

import numpy as np

Z95 = 1.959963984540054
ALPHA = 0.05

GAIN, NO_LOSS, INCONCLUSIVE, LOSS = "gain", "no loss", "inconclusive", "loss"
VERDICTS = (GAIN, NO_LOSS, INCONCLUSIVE, LOSS)

# default_margin: a tenth of the reference's validation error, kept within [0.2, 1] pp (docs/statistics.md)
MARGIN_SHARE, MARGIN_FLOOR, MARGIN_CAP = 0.1, 0.002, 0.01


def wilson(k: int, n: int, z: float = Z95) -> Tuple[float, float]:
    """Wilson score interval for a proportion k/n."""
    if n <= 0:
        return (float("nan"), float("nan"))
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


def _bisect_float(below: "callable", lo: float, hi: float) -> float:
    """The smallest float in (lo, hi] at which ``below`` turns False (True at lo, False at hi)."""
    while True:
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            return hi
        if below(mid):
            lo = mid
        else:
            hi = mid


@functools.lru_cache(maxsize=None)
def normal_quantile(p: float) -> float:
    """x with Phi(x) = p (Phi by math.erfc; the smallest float with Phi(x) >= p)."""
    if not 0.0 < p < 1.0:
        raise ValueError("a quantile needs 0 < p < 1, got %r" % (p,))
    return _bisect_float(lambda x: 0.5 * math.erfc(-x / math.sqrt(2.0)) < p, -40.0, 40.0)


def _t_central_mass(theta: float, df: int) -> float:
    """P(|T| <= sqrt(df) tan(theta)) for Student's t with an integer ``df``: the finite sums of
    Abramowitz & Stegun 26.7.3 (odd df) and 26.7.4 (even df), exact where a series would be truncated."""
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 0:
        term = total = 1.0
        for k in range(1, df // 2):
            term *= (2 * k - 1) / (2 * k) * c2
            total += term
        return s * total
    term = math.cos(theta)
    total = 0.0 if df == 1 else term
    for k in range(1, (df - 1) // 2):
        term *= 2 * k / (2 * k + 1) * c2
        total += term
    return 2.0 / math.pi * (theta + s * total)


@functools.lru_cache(maxsize=None)
def t_quantile(p: float, df: int) -> float:
    """The p quantile (p > 1/2) of Student's t with ``df`` (an integer >= 1) degrees of freedom."""
    if not 0.5 < p < 1.0 or int(df) != df or df < 1:
        raise ValueError("t_quantile needs 1/2 < p < 1 and an integer df >= 1, got %r, %r" % (p, df))
    theta = _bisect_float(lambda th: _t_central_mass(th, int(df)) < 2 * p - 1, 0.0, math.pi / 2)
    return math.sqrt(df) * math.tan(theta)


# ---------------------------------------------------------------- two models on the same images

def _null_share(b, c, n, d):
    """Tango's restricted maximum-likelihood estimate of P(only A right) when B - A = d.

    The larger root of 2n x^2 + ((2n - c + b) d - (b + c)) x - b d (1 - d) = 0,
    in the form that does not subtract two near-equal numbers.
    """
    qa = 2.0 * n
    qb = (2.0 * n - c + b) * d - (b + c)
    qc = -b * d * (1.0 - d)
    root = np.sqrt(np.maximum(qb * qb - 4.0 * qa * qc, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.where(qb <= 0, (root - qb) / (2.0 * qa), -2.0 * qc / (qb + root))
    return np.maximum(x, 0.0)


def score_z(b, c, n, d):
    """Tango's score statistic for H0: B - A = d (arrays broadcast). Positive when the data say B - A > d.

    ``(c - b - n d) / sqrt(n (2 q + d (1 - d)))`` with ``q`` the restricted estimate of
    P(only A right); it falls as ``d`` grows (tests/test_stats.py checks it on a grid).
    """
    b, c, n, d = (np.asarray(v, dtype=np.float64) for v in (b, c, n, d))
    var = np.maximum(2.0 * _null_share(b, c, n, d) + d * (1.0 - d), 0.0)
    num = c - b - n * d
    with np.errstate(divide="ignore", invalid="ignore"):
        z = num / np.sqrt(n * var)
    return np.where(num == 0.0, 0.0, z)   # 0/0: the data sit exactly on d (no discordant images, d = 0)


def _bisect(true_at_lo, lo, hi):
    """Shrink brackets [lo, hi] elementwise to adjacent floats (``true_at_lo`` True at lo, False at hi)."""
    for _ in range(1100):   # enough to reach adjacent floats from [-1, 1], subnormals included
        mid = 0.5 * (lo + hi)
        live = (mid > lo) & (mid < hi)
        if not live.any():
            break
        t = true_at_lo(mid)
        lo = np.where(live & t, mid, lo)
        hi = np.where(live & ~t, mid, hi)
    return lo, hi


def score_interval(b, c, n, alpha: float = ALPHA, anchors=(0.0,)):
    """Tango's ``1 - alpha`` interval [low, high] for B - A: every d the two-sided score test keeps.

    Each bound is bracketed first by ``anchors`` (the points a verdict compares
    with): the statistic is computed at each anchor once, and the bound is
    bisected only between the two neighbours where the test's answer changes,
    so the interval excludes an anchor exactly when the test rejects there
    (and rounding cannot part them). Tables broadcast; ``anchors`` is either
    shared (shape (K,)) or per table (shape (..., K)).
    """
    z = normal_quantile(1.0 - alpha / 2.0)
    anchors = np.asarray(anchors, dtype=np.float64)
    b, c, n = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (b, c, n)))
    shape = np.broadcast(b, anchors[..., 0]).shape   # (np.broadcast_shapes needs numpy 1.20)
    b, c, n = (np.broadcast_to(v, shape) for v in (b, c, n))
    ends = np.broadcast_to(np.array([-1.0, 1.0]), shape + (2,))
    pts = np.sort(np.clip(np.concatenate([ends, np.broadcast_to(anchors, shape + anchors.shape[-1:])], axis=-1),
                          -1.0, 1.0), axis=-1)
    at = score_z(b[..., None], c[..., None], n[..., None], pts)
    last = pts.shape[-1] - 1

    def pick(i):
        return np.take_along_axis(pts, np.clip(i, 0, last)[..., None], axis=-1)[..., 0]

    # lower bound: the first point the test keeps (the points rejected as too low all come first)
    j = np.logical_and.accumulate(at > z, axis=-1).sum(axis=-1)
    low = _bisect(lambda d: score_z(b, c, n, d) > z, pick(j - 1), pick(j))[1]
    low = np.where(j == 0, -1.0, low)
    # upper bound: the last point the test keeps (the points rejected as too high all come last)
    j = last + 1 - np.logical_or.accumulate(at < -z, axis=-1).sum(axis=-1)
    high = _bisect(lambda d: score_z(b, c, n, d) >= -z, pick(j - 1), pick(j))[0]
    high = np.where(j > last, 1.0, high)
    return low, high


class _Binomial:
    """Tails of Bin(m, 1/2), summed in log space (m may be thousands)."""

    def __init__(self, m: int):
        self.m = m
        self.log_choose = np.array([math.lgamma(m + 1) - math.lgamma(k + 1) - math.lgamma(m - k + 1)
                                    for k in range(m + 1)])

    def tail(self, lo: int, hi: int) -> float:
        """P(lo <= X <= hi) for X ~ Bin(m, 1/2)."""
        logs = self.log_choose[lo:hi + 1] + self.m * math.log(0.5)
        top = float(logs.max())
        return min(1.0, math.exp(top) * float(np.exp(logs - top).sum()))


def mcnemar_p(b: int, c: int) -> float:
    """McNemar's exact two-sided p-value: ``min(1, 2 min(P(X <= c), P(X >= c)))``, X ~ Bin(b + c, 1/2)."""
    m = b + c
    if m == 0:
        return 1.0
    t = _Binomial(m)
    return min(1.0, 2 * min(t.tail(c, m), t.tail(0, c)))


def verdict(cmp: Mapping) -> str:
    """The one rule (module docstring) on a comparison's ``diff_low``, ``diff_high`` and ``margin``."""
    low, high, margin = cmp["diff_low"], cmp["diff_high"], cmp["margin"]
    if low > 0.0:
        return GAIN
    if low > -margin:
        return NO_LOSS
    if high < 0.0:
        return LOSS
    return INCONCLUSIVE


def no_loss(cmp: Mapping) -> bool:
    """The paper's "without loss of accuracy", at the comparison's margin: a gain or no loss."""
    return verdict(cmp) in (GAIN, NO_LOSS)


def _check_margin(margin: float) -> float:
    margin = float(margin)
    if not 0.0 <= margin < 1.0:
        raise ValueError("a margin is a fraction in [0, 1), got %r" % (margin,))
    return margin


def compare(b: int, c: int, n: int, margin: float, alpha: float = ALPHA) -> Dict[str, object]:
    """B - A from its counts: ``b`` images only A gets right, ``c`` only B, ``n`` in all.

    Returns the counts, ``diff``, Tango's interval ``[diff_low, diff_high]``
    (bracketed at 0 and ``-margin``), McNemar's exact p, the ``margin`` and
    the ``verdict``.
    """
    b, c, n = int(b), int(c), int(n)
    if min(b, c) < 0 or n <= 0 or b + c > n:
        raise ValueError("a paired comparison needs 0 <= b, c and b + c <= n > 0, got b=%d c=%d n=%d" % (b, c, n))
    if not 0 < alpha < 1:
        raise ValueError("alpha must lie in (0, 1), got %r" % (alpha,))
    margin = _check_margin(margin)
    low, high = score_interval(b, c, n, alpha, anchors=(0.0, -margin))
    out = {"n": n, "only_a": b, "only_b": c, "diff": (c - b) / n, "diff_low": float(low), "diff_high": float(high),
           "interval": "Tango score", "alpha": alpha, "margin": margin, "mcnemar_p": mcnemar_p(b, c)}
    out["verdict"] = verdict(out)
    return out


def paired(correct_a, correct_b, margin: float, alpha: float = ALPHA) -> Dict[str, object]:
    """``compare`` from two models' per-image correctness (bool arrays over the same images, same order)."""
    a = np.asarray(correct_a, dtype=bool).ravel()
    b_ = np.asarray(correct_b, dtype=bool).ravel()
    if a.shape != b_.shape:
        raise ValueError("paired comparison needs the same images: %d vs %d" % (a.size, b_.size))
    if a.size == 0:
        raise ValueError("paired comparison of no images")
    out = {"a_correct": int(a.sum()), "b_correct": int(b_.sum())}
    out.update(compare(*counts_of(a, b_), margin=margin, alpha=alpha))
    return out


def default_margin(reference_val_accuracy: float) -> float:
    """The margin (a fraction) when none is given: a tenth of the reference's validation error, at least
    0.2 pp and at most 1 pp. It reads only validation, so it is fixed before the test split is read."""
    err = 1.0 - float(reference_val_accuracy)
    if not 0.0 <= err <= 1.0:
        raise ValueError("an accuracy lies in [0, 1], got %r" % (reference_val_accuracy,))
    return min(MARGIN_CAP, max(MARGIN_FLOOR, MARGIN_SHARE * err))


def claim(cmp: Mapping) -> str:
    """The verdict in words, with its margin, for a report."""
    m = 100 * cmp["margin"]
    v = verdict(cmp)
    if v == GAIN:
        return "a gain: the whole interval lies above 0 (so no loss at the margin of %.2f pp either)" % m
    if v == NO_LOSS:
        return ("no loss at a margin of %.2f pp: the interval's lower bound lies above -%.2f pp%s"
                % (m, m, " (measurably below, by less than the margin)" if cmp["diff_high"] < 0 else ""))
    if v == LOSS:
        return "a loss: the interval lies below 0 and reaches below -%.2f pp (margin %.2f pp)" % (m, m)
    return ("inconclusive at a margin of %.2f pp: the interval reaches both below -%.2f pp and above 0, so these "
            "images cannot tell a loss larger than the margin from none" % (m, m))


# ---------------------------------------------------------------- over seeds

def over_seeds(n, sums, squares, cross=None, alpha: float = ALPHA) -> Dict[str, object]:
    """The mean change over k seeds, all scored on the same ``n`` images, with a ``1 - alpha`` interval.

    Seed s's per-image differences D_si (-1, 0, +1: B right only, A right only)
    enter through their sums over images: ``sums[s] = c_s - b_s``,
    ``squares[s] = b_s + c_s`` and, when every seed's per-image files are
    there, ``cross[s, t] = sum_i D_si D_ti``. The mean's variance is
    estimated as ``s^2 / k + cov / n``: the spread of the per-seed changes
    carries the seeds and each seed's own test noise, and ``cov``, the
    covariance across images of two seeds' differences (averaged over pairs),
    the part of the test sampling the seeds share because they read the same
    images. Without ``cross`` that covariance is bounded by Cauchy-Schwarz
    from each seed's own variance (conservative). The quantile is Student's t
    with k - 1 degrees of freedom. Leading axes broadcast (many summaries at once).
    """
    sums = np.asarray(sums, dtype=np.float64)
    squares = np.asarray(squares, dtype=np.float64)
    k = sums.shape[-1]
    if k < 2 or n < 2:
        raise ValueError("an interval over seeds needs at least 2 seeds and 2 images, got %d, %d" % (k, n))
    d = sums / n
    mean = d.mean(axis=-1)
    s2 = d.var(axis=-1, ddof=1)
    iu = np.triu_indices(k, 1)
    if cross is None:
        var = np.maximum(squares - n * d * d, 0.0) / (n - 1)
        shared = np.sqrt(var[..., iu[0]] * var[..., iu[1]]).mean(axis=-1)
    else:
        cross = np.asarray(cross, dtype=np.float64)
        cov = (cross - n * d[..., :, None] * d[..., None, :]) / (n - 1)
        shared = np.maximum(cov[..., iu[0], iu[1]].mean(axis=-1), 0.0)
    se = np.sqrt(s2 / k + shared / n)
    half = t_quantile(1.0 - alpha / 2.0, k - 1) * se
    return {"seeds": k, "n": n, "diff": mean, "diff_low": mean - half, "diff_high": mean + half, "se": se,
            "sd": np.sqrt(s2), "df": k - 1, "alpha": alpha,
            "shared_test_sampling": "per-image" if cross is not None else "bounded from the counts"}


def mean_sd(xs) -> Tuple[float, float]:
    x = np.asarray(list(xs), dtype=np.float64)
    if x.size == 0:
        return (float("nan"), float("nan"))
    return (float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else 0.0)


# ---------------------------------------------------------------- per-image files

def pack_correct(correct) -> np.ndarray:
    """Per-image correctness as stored: ``np.packbits`` (image i is bit 7 - i % 8 of byte i // 8, zero padded)."""
    return np.packbits(np.asarray(correct, dtype=bool).ravel())


def unpack_correct(packed, n: int) -> np.ndarray:
    """The inverse of ``pack_correct`` for ``n`` images; a wrong length or nonzero padding is a ValueError."""
    packed = np.asarray(packed)
    if packed.dtype != np.uint8 or packed.ndim != 1 or packed.size != (n + 7) // 8:
        raise ValueError("expected %d packed bytes (uint8) for %d images, got %s of %s"
                         % ((n + 7) // 8, n, packed.shape, packed.dtype))
    bits = np.unpackbits(packed)
    if bits[n:].any():
        raise ValueError("nonzero padding bits after image %d" % n)
    return bits[:n].astype(bool)


def counts_of(correct_a, correct_b) -> Tuple[int, int, int]:
    """(b, c, n): images only A gets right, only B, in all."""
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    return int(np.count_nonzero(a & ~b)), int(np.count_nonzero(b & ~a)), int(a.size)


def per_image_sums(before: Sequence[np.ndarray], after: Sequence[np.ndarray]) -> Dict[str, np.ndarray]:
    """``over_seeds``'s inputs from each seed's per-image correctness before and after (same images)."""
    D = np.stack([np.asarray(y, dtype=np.int8) - np.asarray(x, dtype=np.int8) for x, y in zip(before, after)])
    D = D.astype(np.float64)
    return {"sums": D.sum(axis=1), "squares": (D * D).sum(axis=1), "cross": D @ D.T}
