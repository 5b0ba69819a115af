"""Intervals and paired comparisons (pure; checked against textbook values and brute force)."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

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


def _pair(b, c, n):
    """Per-image correctness of A and B with b images only A gets right, c only B, n in all."""
    assert b + c <= n
    both = (n - b - c) // 2           # the agreeing images, split between both right and both wrong
    a = np.array([1] * b + [0] * c + [1] * both + [0] * (n - b - c - both), bool)
    bb = np.array([0] * b + [1] * c + [1] * both + [0] * (n - b - c - both), bool)
    return a, bb


def _cp_tail_at_least(c, m, q):
    return sum(math.comb(m, i) * q ** i * (1 - q) ** (m - i) for i in range(c, m + 1))


def _excludes_zero(r):
    return r["diff_low"] > 0 or r["diff_high"] < 0


def test_paired_difference_and_interval():
    rng = np.random.default_rng(0)
    a = rng.random(10000) < 0.9
    b = a.copy()
    flip = rng.choice(10000, 60, replace=False)
    b[flip] = ~b[flip]
    r = stats.paired(a, b)
    assert r["diff"] == pytest.approx((b.sum() - a.sum()) / 10000)
    assert r["diff_low"] < r["diff"] < r["diff_high"]
    with pytest.raises(ValueError):
        stats.paired(a, a[:10])
    with pytest.raises(ValueError):
        stats.paired([], [])
    with pytest.raises(ValueError):
        stats.paired(a, b, alpha=1.5)


def test_21_vs_10_discordant_is_no_measurable_difference():
    # A report once printed "a loss" with a Wald interval [-1.09, -0.00] pp beside McNemar p = 0.07:
    # 21 images right only before, 10 only after, out of 2000.
    a, b = _pair(21, 10, 2000)
    r = stats.paired(a, b)
    assert (r["only_a"], r["only_b"], r["n"]) == (21, 10, 2000)
    wald_half = stats.Z95 * math.sqrt(31 - 11 ** 2 / 2000) / 2000
    assert r["diff"] + wald_half < 0                 # the old interval excluded 0 ...
    assert r["mcnemar_p"] == pytest.approx(2 * sum(math.comb(31, i) for i in range(11)) / 2 ** 31, rel=1e-12)
    assert r["mcnemar_p"] == pytest.approx(0.0708, abs=1e-4)   # ... while the exact test did not
    assert r["diff_low"] < 0 < r["diff_high"]
    assert stats.verdict(r) == stats.NO_DIFFERENCE and stats.no_loss(r)
    # Clopper-Pearson for 10 of 31 (textbook: beta quantiles 0.16682, 0.51373), mapped by m (2p - 1) / n
    assert r["diff_low"] == pytest.approx(31 * (2 * 0.1668236374 - 1) / 2000, rel=1e-8)
    assert r["diff_high"] == pytest.approx(31 * (2 * 0.5137298296 - 1) / 2000, rel=1e-8)
    low_p = (r["diff_low"] * 2000 / 31 + 1) / 2
    assert _cp_tail_at_least(10, 31, low_p) == pytest.approx(0.025, rel=1e-9)


def test_no_discordant_images():
    a, b = _pair(0, 0, 50)
    r = stats.paired(a, b)
    assert r["diff"] == r["diff_low"] == r["diff_high"] == 0.0 and r["mcnemar_p"] == 1.0
    assert stats.verdict(r) == stats.NO_DIFFERENCE and stats.no_loss(r)


def test_all_images_discordant():
    gain = stats.paired(*_pair(0, 12, 12))
    assert gain["diff"] == gain["diff_high"] == 1.0 and gain["mcnemar_p"] == pytest.approx(2 / 2 ** 12)
    assert 0 < gain["diff_low"] < 1 and stats.verdict(gain) == stats.GAIN
    loss = stats.paired(*_pair(12, 0, 12))
    assert loss["diff"] == loss["diff_low"] == -1.0 and stats.verdict(loss) == stats.LOSS
    assert not stats.no_loss(loss)
    assert loss["diff_high"] == pytest.approx(-gain["diff_low"], rel=1e-12)
    # 5 of 5: p = 1/16 >= 0.05, so even a clean sweep of five images is no evidence
    five = stats.paired(*_pair(5, 0, 5))
    assert five["mcnemar_p"] == pytest.approx(0.0625) and five["diff_high"] > 0
    assert stats.verdict(five) == stats.NO_DIFFERENCE


def test_one_image():
    for b, c in [(0, 0), (1, 0), (0, 1)]:
        r = stats.paired(*_pair(b, c, 1))
        assert r["n"] == 1 and r["mcnemar_p"] == 1.0 and r["diff_low"] <= 0 <= r["diff_high"]
        assert r["diff_low"] <= r["diff"] <= r["diff_high"]
        assert stats.verdict(r) == stats.NO_DIFFERENCE


def test_interval_excludes_zero_iff_mcnemar_rejects_for_all_small_tables():
    for n in range(1, 21):
        for b in range(n + 1):
            for c in range(n + 1 - b):
                r = stats.paired(*_pair(b, c, n))
                assert _excludes_zero(r) == (r["mcnemar_p"] < 0.05), (b, c, n, r)
                assert r["diff_low"] <= r["diff"] <= r["diff_high"], (b, c, n, r)
                assert stats.no_loss(r) == (r["diff_high"] >= 0)
                assert stats.verdict(r) == (stats.LOSS if r["diff_high"] < 0 else
                                            stats.GAIN if r["diff_low"] > 0 else stats.NO_DIFFERENCE)
                s = stats.paired(*_pair(c, b, n))      # swapping the models mirrors the interval
                assert s["diff_low"] == pytest.approx(-r["diff_high"], abs=1e-12)
                assert s["mcnemar_p"] == pytest.approx(r["mcnemar_p"], rel=1e-12)


def test_ties_at_the_boundary():
    # At alpha equal to p itself the test does not reject (p < alpha is false), so the interval must
    # reach 0; one float above, it rejects and the interval must leave 0. Exact, not approximate.
    checked = 0
    for m in range(1, 40):
        for c in range(m + 1):
            r = stats.paired(*_pair(m - c, c, m + 3))
            p = r["mcnemar_p"]
            if math.nextafter(p, 1.0) >= 1.0:
                continue
            at = stats.paired(*_pair(m - c, c, m + 3), alpha=p)
            assert not _excludes_zero(at), (m, c, at)
            assert at["mcnemar_p"] == p
            above = stats.paired(*_pair(m - c, c, m + 3), alpha=math.nextafter(p, 1.0))
            assert _excludes_zero(above), (m, c, above)
            assert stats.verdict(above) == (stats.GAIN if c > m - c else stats.LOSS)
            checked += 1
    assert checked > 500


@given(st.integers(0, 3000), st.integers(0, 3000), st.integers(0, 5000),
       st.sampled_from([0.05, 0.01, 0.1, 0.2]))
def test_interval_and_test_agree_on_larger_tables(b, c, extra, alpha):
    n = b + c + extra
    if n == 0:
        return
    r = stats.paired(*_pair(b, c, n), alpha=alpha)
    assert _excludes_zero(r) == (r["mcnemar_p"] < alpha)
    assert r["diff_low"] <= r["diff"] <= r["diff_high"]


def test_mean_sd():
    assert stats.mean_sd([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    assert stats.mean_sd([5.0]) == (5.0, 0.0)
