"""Statistics for accuracies measured on a finite test set: intervals and paired comparisons.

Two models scored on the same images are compared image by image. Only the
images on which they disagree carry information (McNemar): ``b`` images
that only model A gets right, ``c`` that only model B gets right. The
change in accuracy B - A is (c - b) / n.

* ``wilson``: the Wilson score interval of one accuracy k/n (95% default).
* ``paired``: discordant counts, McNemar's exact two-sided p-value
  (binomial on b + c at 1/2), and a Wald interval for the paired difference
  with the variance of paired proportions, (b + c - (c - b)^2 / n) / n^2,
  which reduces to 0 width only when the models agree on every image.
"""
from __future__ import annotations

import math
from typing import Dict, Tuple

import numpy as np

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> Tuple[float, float]:
    """Wilson score interval for a proportion k/n."""
    if n <= 0:
        return (float("nan"), float("nan"))
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


def _binom_two_sided(b: int, c: int) -> float:
    """Exact two-sided p-value of min(b, c) successes in b + c trials at p = 1/2."""
    m = b + c
    if m == 0:
        return 1.0
    k = min(b, c)
    # log-space sum of C(m, i) / 2^m for i <= k, doubled (the distribution is symmetric)
    logs = [math.lgamma(m + 1) - math.lgamma(i + 1) - math.lgamma(m - i + 1) - m * math.log(2) for i in range(k + 1)]
    top = max(logs)
    tail = math.exp(top) * sum(math.exp(v - top) for v in logs)
    return min(1.0, 2 * tail)


def paired(correct_a, correct_b, z: float = Z95) -> Dict[str, float]:
    """Compare two models' per-image correctness (bool arrays over the same images, same order)."""
    a = np.asarray(correct_a, dtype=bool).ravel()
    b_ = np.asarray(correct_b, dtype=bool).ravel()
    if a.shape != b_.shape:
        raise ValueError("paired comparison needs the same images: %d vs %d" % (a.size, b_.size))
    n = int(a.size)
    only_a = int(np.count_nonzero(a & ~b_))
    only_b = int(np.count_nonzero(b_ & ~a))
    diff = (only_b - only_a) / n if n else float("nan")
    var = (only_a + only_b - (only_b - only_a) ** 2 / n) / (n * n) if n else float("nan")
    half = z * math.sqrt(max(var, 0.0)) if n else float("nan")
    return {"n": n, "a_correct": int(a.sum()), "b_correct": int(b_.sum()), "only_a": only_a, "only_b": only_b,
            "diff": diff, "diff_low": diff - half, "diff_high": diff + half,
            "mcnemar_p": _binom_two_sided(only_a, only_b)}


def no_loss(cmp: Dict[str, float]) -> bool:
    """"No loss" in the issue's sense: the interval of B - A includes 0 or lies above it."""
    return cmp["diff_high"] >= 0.0


def mean_sd(xs) -> Tuple[float, float]:
    x = np.asarray(list(xs), dtype=np.float64)
    if x.size == 0:
        return (float("nan"), float("nan"))
    return (float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else 0.0)
