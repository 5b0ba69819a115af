"""Intervals and paired comparisons (pure; checked against textbook values and brute force)."""
import math

import numpy as np
import pytest

from caffe_dc.algorithms import stats


def test_wilson_matches_textbook_values():
    lo, hi = stats.wilson(81, 263)            # Wilson (1927) / Newcombe (1998) example 1: 0.2553-0.3662
    assert lo == pytest.approx(0.2553, abs=5e-4) and hi == pytest.approx(0.3662, abs=5e-4)
    lo, hi = stats.wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=5e-4)
    lo, hi = stats.wilson(10, 10)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(0.7225, abs=5e-4)


def test_mcnemar_exact_against_brute_force():
    for b, c in [(0, 0), (1, 0), (3, 9), (20, 5), (50, 50)]:
        m = b + c
        k = min(b, c)
        brute = min(1.0, 2 * sum(math.comb(m, i) for i in range(k + 1)) / 2 ** m) if m else 1.0
        a = np.array([1] * b + [0] * c + [1] * 7, bool)
        bb = np.array([0] * b + [1] * c + [1] * 7, bool)
        r = stats.paired(a, bb)
        assert r["only_a"] == b and r["only_b"] == c and r["n"] == m + 7
        assert r["mcnemar_p"] == pytest.approx(brute, rel=1e-9)


def test_paired_difference_and_interval():
    rng = np.random.default_rng(0)
    a = rng.random(10000) < 0.9
    b = a.copy()
    flip = rng.choice(10000, 60, replace=False)
    b[flip] = ~b[flip]
    r = stats.paired(a, b)
    assert r["diff"] == pytest.approx((b.sum() - a.sum()) / 10000)
    assert r["diff_low"] < r["diff"] < r["diff_high"]
    same = stats.paired(a, a)
    assert same["diff"] == same["diff_low"] == same["diff_high"] == 0.0 and same["mcnemar_p"] == 1.0
    assert stats.no_loss(same)
    with pytest.raises(ValueError):
        stats.paired(a, a[:10])


def test_mean_sd():
    assert stats.mean_sd([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    assert stats.mean_sd([5.0]) == (5.0, 0.0)
