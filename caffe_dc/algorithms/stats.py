"""Statistics for accuracies measured on a finite test set: intervals and paired comparisons.

Two models scored on the same images are compared image by image. Only the
images on which they disagree carry information (McNemar): ``b`` images
that only model A gets right, ``c`` that only model B gets right, ``m = b + c``
in all. The change in accuracy B - A is ``(c - b) / n``, which is
``m (2 p - 1) / n`` with ``p = c / m``, the share of the disagreements that
B wins.

* ``wilson``: the Wilson score interval of one accuracy k/n (95% default).
* ``paired``: the discordant counts, McNemar's exact two-sided p-value and
  an interval for B - A, both from the same binomial tails of ``c`` out of
  ``m`` at 1/2, so that they cannot disagree.

The one verdict rule (``verdict``; docs/statistics.md): at level ``alpha``
(0.05), the interval for B - A is the exact (Clopper-Pearson) interval
``[L, U]`` for ``p`` mapped through ``m (2 p - 1) / n``, and McNemar's p is
``min(1, 2 * min(P(X <= c), P(X >= c)))`` for ``X ~ Bin(m, 1/2)``. Since
``L > 1/2`` exactly when ``P(X >= c) < alpha / 2`` (and ``U < 1/2`` exactly
when ``P(X <= c) < alpha / 2``), the interval excludes 0 if and only if
``p < alpha``. The code makes this hold in floating point too: each bound
is found by bisection on the side of 1/2 that the very tail value used
for the p-value selects, so rounding cannot put them on different sides.

* "loss": the whole interval lies below 0 (``diff_high < 0``, p < alpha);
* "gain": the whole interval lies above 0 (``diff_low > 0``, p < alpha);
* "no measurable difference": the interval contains 0 (p >= alpha).

"No loss", the paper's claim, is anything but "loss" (``no_loss``): the
interval's upper bound is >= 0.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Tuple

import numpy as np

Z95 = 1.959963984540054
ALPHA = 0.05

LOSS, GAIN, NO_DIFFERENCE = "loss", "gain", "no measurable difference"


def wilson(k: int, n: int, z: float = Z95) -> Tuple[float, float]:
    """Wilson score interval for a proportion k/n."""
    if n <= 0:
        return (float("nan"), float("nan"))
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


class _Binomial:
    """Tails of Bin(m, q) over a fixed range of outcomes, summed in log space (m may be thousands)."""

    def __init__(self, m: int):
        self.m = m
        self.i = np.arange(m + 1, dtype=np.float64)
        self.log_choose = np.array([math.lgamma(m + 1) - math.lgamma(k + 1) - math.lgamma(m - k + 1)
                                    for k in range(m + 1)])

    def tail(self, lo: int, hi: int, q: float) -> float:
        """P(lo <= X <= hi) for X ~ Bin(m, q), 0 < q < 1."""
        i = self.i[lo:hi + 1]
        logs = self.log_choose[lo:hi + 1] + i * math.log(q) + (self.m - i) * math.log1p(-q)
        top = float(logs.max())
        return min(1.0, math.exp(top) * float(np.exp(logs - top).sum()))


def _bisect(pred: Callable[[float], bool], lo: float, hi: float) -> Tuple[float, float]:
    """Shrink [lo, hi], where ``pred`` turns from False (at lo) to True (at hi), to adjacent floats.

    ``pred`` is never evaluated at lo or hi: the caller has decided their
    sides, and the ends of the returned bracket stay on those sides.
    """
    while True:
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            return lo, hi
        if pred(mid):
            hi = mid
        else:
            lo = mid


def _discordant(b: int, c: int, n: int, alpha: float) -> Dict[str, float]:
    """McNemar's exact p and the matching interval for B - A from b, c discordant images out of n."""
    m = b + c
    if m == 0:   # the models agree on every image: no evidence either way, and no width
        return {"diff": 0.0, "diff_low": 0.0, "diff_high": 0.0, "mcnemar_p": 1.0}
    binom = _Binomial(m)
    half = alpha / 2
    # The two tails at 1/2 decide both the p-value and on which side of 1/2 each bound is searched.
    at_least_c = binom.tail(c, m, 0.5)       # P(X >= c)
    at_most_c = binom.tail(0, c, 0.5)        # P(X <= c)
    p = min(1.0, 2 * min(at_least_c, at_most_c))
    if c == 0:
        low = 0.0
    else:   # Clopper-Pearson lower bound: the q with P_q(X >= c) = alpha/2 (increasing in q)
        lo, hi = (0.5, 1.0) if at_least_c < half else (0.0, 0.5)
        low = _bisect(lambda q: binom.tail(c, m, q) >= half, lo, hi)[1]
    if c == m:
        high = 1.0
    else:   # upper bound: the q with P_q(X <= c) = alpha/2 (decreasing in q)
        lo, hi = (0.0, 0.5) if at_most_c < half else (0.5, 1.0)
        high = _bisect(lambda q: binom.tail(0, c, q) < half, lo, hi)[0]
    # 2q - 1 is exact for q near 1/2 (Sterbenz), so a bound on the far side of 1/2 maps to a nonzero diff.
    return {"diff": (c - b) / n, "diff_low": m * (2 * low - 1) / n, "diff_high": m * (2 * high - 1) / n,
            "mcnemar_p": p}


def paired(correct_a, correct_b, alpha: float = ALPHA) -> Dict[str, float]:
    """Compare two models' per-image correctness (bool arrays over the same images, same order).

    Returns the counts, ``diff`` = B - A, its exact ``1 - alpha`` interval
    ``[diff_low, diff_high]`` and McNemar's exact two-sided ``mcnemar_p``
    (module docstring: the interval excludes 0 exactly when p < alpha).
    """
    a = np.asarray(correct_a, dtype=bool).ravel()
    b_ = np.asarray(correct_b, dtype=bool).ravel()
    if a.shape != b_.shape:
        raise ValueError("paired comparison needs the same images: %d vs %d" % (a.size, b_.size))
    if a.size == 0:
        raise ValueError("paired comparison of no images")
    if not 0 < alpha < 1:
        raise ValueError("alpha must lie in (0, 1), got %r" % (alpha,))
    n = int(a.size)
    only_a = int(np.count_nonzero(a & ~b_))
    only_b = int(np.count_nonzero(b_ & ~a))
    out = {"n": n, "a_correct": int(a.sum()), "b_correct": int(b_.sum()), "only_a": only_a, "only_b": only_b,
           "alpha": alpha}
    out.update(_discordant(only_a, only_b, n, alpha))
    return out


def verdict(cmp: Dict[str, float]) -> str:
    """"loss", "gain" or "no measurable difference" for B - A (module docstring: the one rule)."""
    if cmp["diff_high"] < 0.0:
        return LOSS
    if cmp["diff_low"] > 0.0:
        return GAIN
    return NO_DIFFERENCE


def no_loss(cmp: Dict[str, float]) -> bool:
    """"No loss" in the issue's sense: the interval of B - A includes 0 or lies above it (not a "loss")."""
    return verdict(cmp) != LOSS


def mean_sd(xs) -> Tuple[float, float]:
    x = np.asarray(list(xs), dtype=np.float64)
    if x.size == 0:
        return (float("nan"), float("nan"))
    return (float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else 0.0)
