"""Intervals, paired comparisons and the interval over seeds (pure; textbook values, brute force, simulation)."""
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caffe_dc.algorithms import stats

Z = stats.normal_quantile(0.975)


def test_wilson_matches_textbook_values():
    lo, hi = stats.wilson(81, 263)            # Wilson (1927) / Newcombe (1998) example 1: 0.2553-0.3662
    assert lo == pytest.approx(0.2553, abs=5e-4) and hi == pytest.approx(0.3662, abs=5e-4)
    lo, hi = stats.wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=5e-4)
    lo, hi = stats.wilson(10, 10)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(0.7225, abs=5e-4)


def test_quantiles_against_closed_forms():
    assert stats.normal_quantile(0.975) == pytest.approx(stats.Z95, rel=1e-15)
    assert stats.normal_quantile(0.5) == pytest.approx(0.0, abs=1e-15)
    assert stats.t_quantile(0.975, 1) == pytest.approx(math.tan(0.475 * math.pi), rel=1e-13)   # Cauchy
    a = 0.95                                                  # df 2: a sqrt(2 / (1 - a^2))
    assert stats.t_quantile(0.975, 2) == pytest.approx(a * math.sqrt(2 / (1 - a * a)), rel=1e-13)
    t3 = stats.t_quantile(0.975, 3)            # df 3: F(t) = 1/2 + (t / (sqrt(3) (1 + t^2/3)) + atan(t / sqrt(3))) / pi
    assert 0.5 + (t3 / (math.sqrt(3) * (1 + t3 * t3 / 3)) + math.atan(t3 / math.sqrt(3))) / math.pi == \
        pytest.approx(0.975, rel=1e-14)
    assert stats.t_quantile(0.975, 4) == pytest.approx(2.7764451051977987, rel=1e-12)
    assert stats.t_quantile(0.975, 2000) == pytest.approx(1.9611510, rel=1e-6) and stats.t_quantile(0.975, 2000) > Z
    for bad in [(0.4, 2), (0.975, 0), (0.975, 2.5)]:
        with pytest.raises(ValueError):
            stats.t_quantile(*bad)


def test_mcnemar_exact_against_brute_force():
    for b, c in [(0, 0), (1, 0), (3, 9), (20, 5), (50, 50)]:
        m = b + c
        brute = min(1.0, 2 * sum(math.comb(m, i) for i in range(min(b, c) + 1)) / 2 ** m) if m else 1.0
        r = stats.paired(*_pair(b, c, m + 7), margin=0.01)
        assert (r["only_a"], r["only_b"], r["n"]) == (b, c, m + 7)
        assert r["mcnemar_p"] == pytest.approx(brute, rel=1e-9)


def _pair(b, c, n):
    """Per-image correctness of A and B with b images only A gets right, c only B, n in all."""
    assert b + c <= n
    both = (n - b - c) // 2           # the agreeing images, split between both right and both wrong
    a = np.array([1] * b + [0] * c + [1] * both + [0] * (n - b - c - both), bool)
    bb = np.array([0] * b + [1] * c + [1] * both + [0] * (n - b - c - both), bool)
    return a, bb


def test_restricted_estimate_maximises_the_likelihood():
    # Tango's closed form against a brute-force maximisation of the trinomial likelihood under B - A = d
    rng = np.random.default_rng(3)
    for _ in range(100):
        n = int(rng.integers(1, 400))
        b = int(rng.integers(0, n + 1))
        c = int(rng.integers(0, n - b + 1))
        d = float(rng.uniform(-1, 1))
        lo, hi = max(0.0, -d), (1 - d) / 2
        x = np.linspace(lo, hi, 20001)[1:-1]
        with np.errstate(divide="ignore", invalid="ignore"):
            ll = c * np.log(x + d) + b * np.log(x) + (n - b - c) * np.log(1 - 2 * x - d)
        best = x[np.nanargmax(np.where(np.isnan(ll), -np.inf, ll))]
        assert float(stats._null_share(b, c, n, d)) == pytest.approx(best, abs=2 * (hi - lo) / 2e4 + 1e-12)


def test_score_statistic_falls_as_d_grows():
    # the interval is the set the test keeps only because the statistic is monotone in d
    d = np.linspace(-1, 1, 4001)
    tables = [(b, c, n) for n in range(1, 16) for b in range(n + 1) for c in range(n + 1 - b)]
    rng = np.random.default_rng(5)
    for _ in range(300):
        n = int(rng.integers(20, 20000))
        b = int(rng.integers(0, min(n, 900) + 1))
        tables.append((b, int(rng.integers(0, min(n - b, 900) + 1)), n))
    for b, c, n in tables:
        zs = stats.score_z(b, c, n, d)
        assert np.all(np.diff(zs) <= 0), (b, c, n)


def test_score_statistic_at_zero_is_mcnemars_z():
    for b, c in [(21, 10), (3, 0), (0, 40), (151, 128)]:
        assert float(stats.score_z(b, c, 5000, 0.0)) == pytest.approx((c - b) / math.sqrt(b + c), rel=1e-12)


def _coverage(n, q_a, q_b, tables, seed):
    rng = np.random.default_rng(seed)
    cnt = rng.multinomial(n, [q_a, q_b, 1 - q_a - q_b], size=tables)
    low, high = stats.score_interval(cnt[:, 0], cnt[:, 1], n)
    d = q_b - q_a
    return float(np.mean((low <= d) & (d <= high))), float(np.mean((cnt[:, 0] == 0) | (cnt[:, 1] == 0)))


# (n, P(only A right), P(only B right)): the discordance rates of issue 28 (where the conditional interval
# covered 0.957, 0.891, 0.855, 0.697), differences large against the discordance, tables where b or c is
# often or always 0, and small test sets.
GRID = [(10000, 0.03, 0.035), (10000, 0.01, 0.04), (10000, 0.005, 0.03), (10000, 0.002, 0.03),
        (10000, 0.03, 0.002), (10000, 0.0001, 0.01), (10000, 0.0, 0.003), (10000, 0.0002, 0.0002),
        (10000, 0.0003, 0.0), (1000, 0.001, 0.02), (500, 0.0, 0.004), (200, 0.01, 0.1), (100, 0.02, 0.3)]


def test_coverage_by_simulation():
    """Tango's interval covers the true difference in >= 94% of 10,000 simulated tables at every grid point."""
    zero_tables = 0
    for k, (n, q_a, q_b) in enumerate(GRID):
        cov, with_zero = _coverage(n, q_a, q_b, 10000, seed=k)
        assert cov >= 0.94, (n, q_a, q_b, cov)
        zero_tables += with_zero > 0.3
    assert zero_tables >= 5   # the grid does exercise tables with b or c at 0


def test_the_conditional_interval_would_fail_the_coverage_test():
    # The interval issue 28 replaced (Clopper-Pearson for c / (b + c), mapped by the observed (b + c) / n)
    # on tables simulated the same way: the coverage test above has the power to catch it. It covers d
    # exactly when its exact test keeps p* = (d n / (b + c) + 1) / 2, the share of B's wins that gives d.
    rng = np.random.default_rng(0)
    n, q_a, q_b = 10000, 0.002, 0.03
    cnt = rng.multinomial(n, [q_a, q_b, 1 - q_a - q_b], size=2000)
    log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1)))])
    covered = 0
    for b, c in cnt[:, :2]:
        m = b + c
        p = ((q_b - q_a) * n / m + 1) / 2
        if not 0 < p < 1:
            continue
        i = np.arange(m + 1)
        pmf = np.exp(log_fact[m] - log_fact[i] - log_fact[m - i] + i * math.log(p) + (m - i) * math.log1p(-p))
        covered += pmf[c:].sum() > 0.025 and pmf[:c + 1].sum() > 0.025
    assert covered / 2000 < 0.9


def test_interval_is_what_the_test_keeps():
    rng = np.random.default_rng(7)
    b = rng.integers(0, 400, 2000)
    c = rng.integers(0, 400, 2000)
    n = b + c + rng.integers(0, 10000, 2000)
    low, high = stats.score_interval(b, c, n)
    diff = (c - b) / n
    assert np.all(low <= diff) and np.all(diff <= high)
    assert np.all(stats.score_z(b, c, n, low) <= Z) and np.all(stats.score_z(b, c, n, high) >= -Z)
    inside = low > -1
    below = np.nextafter(low, -2.0)
    assert np.all(stats.score_z(b, c, n, below)[inside] > Z)       # one float lower is rejected
    above = np.nextafter(high, 2.0)
    assert np.all(stats.score_z(b, c, n, above)[high < 1] < -Z)
    s_low, s_high = stats.score_interval(c, b, n)                 # swapping the models mirrors it
    assert np.allclose(s_low, -high, atol=1e-12) and np.allclose(s_high, -low, atol=1e-12)


def test_verdict_and_test_agree_at_the_boundary():
    """A margin exactly at the lower bound, one float inside and one outside: the interval excludes -margin
    exactly when the score test of B - A <= -margin rejects, for thousands of tables at once."""
    rng = np.random.default_rng(11)
    n = rng.integers(1, 12000, 4000)
    b = rng.integers(0, np.minimum(n, 500) + 1)
    c = rng.integers(0, np.minimum(n - b, 500) + 1)
    low = stats.score_interval(b, c, n)[0]
    keep = (low > -1) & (low < 0)
    b, c, n, low = b[keep], c[keep], n[keep], low[keep]
    assert b.size > 2000
    answers = set()
    for edge in (low, np.nextafter(low, 1.0), np.nextafter(low, -1.0)):
        margin = -edge
        new_low, new_high = stats.score_interval(b, c, n, anchors=np.stack([np.zeros_like(margin), -margin], -1))
        rejects = stats.score_z(b, c, n, -margin) > Z
        assert np.array_equal(new_low > -margin, rejects)
        assert np.array_equal(new_low > 0, stats.score_z(b, c, n, 0.0) > Z)
        assert np.array_equal(new_high < 0, stats.score_z(b, c, n, 0.0) < -Z)
        answers |= set(rejects.tolist())
    assert answers == {True, False}                 # both sides of the boundary were met
    for k in range(0, b.size, 97):                  # and compare's verdict is that answer
        for margin in (-low[k], -np.nextafter(low[k], 1.0), -np.nextafter(low[k], -1.0)):
            r = stats.compare(b[k], c[k], n[k], margin=float(margin))
            assert stats.no_loss(r) == bool(stats.score_z(b[k], c[k], n[k], -r["margin"]) > Z), (b[k], c[k], n[k])


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 3000), st.integers(0, 3000), st.integers(0, 5000), st.floats(0, 0.05),
       st.sampled_from([0.05, 0.01, 0.1]))
def test_verdict_is_the_tests_answer(b, c, extra, margin, alpha):
    n = b + c + extra
    if n == 0:
        return
    r = stats.compare(b, c, n, margin=margin, alpha=alpha)
    z = stats.normal_quantile(1 - alpha / 2)
    assert r["diff_low"] <= r["diff"] <= r["diff_high"]
    assert (r["diff_low"] > -r["margin"]) == bool(stats.score_z(b, c, n, -r["margin"]) > z)
    assert (r["diff_low"] > 0) == bool(stats.score_z(b, c, n, 0.0) > z)
    assert (r["diff_high"] < 0) == bool(stats.score_z(b, c, n, 0.0) < -z)
    assert r["verdict"] == stats.verdict(r)


def test_the_four_verdicts():
    def v(low, high, margin=0.002):
        return stats.verdict({"diff_low": low, "diff_high": high, "margin": margin})
    assert v(0.001, 0.01) == stats.GAIN
    assert v(-0.0019, 0.004) == stats.NO_LOSS
    assert v(-0.0019, -0.0001) == stats.NO_LOSS          # measurably below, by less than the margin
    assert v(-0.002, 0.004) == stats.INCONCLUSIVE        # the margin itself on the interval's edge: kept
    assert v(-0.01, -0.001) == stats.LOSS
    assert v(-0.0, 0.0, margin=0.0) == stats.INCONCLUSIVE
    assert [stats.no_loss({"diff_low": lo, "diff_high": 1, "margin": 0.002}) for lo in (0.001, -0.001, -0.003)] \
        == [True, True, False]


def test_the_table_where_mcnemar_exact_and_the_score_test_differ():
    # 21 images right only before, 10 only after, out of 2000: McNemar's z = -1.98 (the score test at 0)
    # rejects, the exact p = 0.071 does not. The verdict is the interval's; the exact p is printed beside it.
    r = stats.paired(*_pair(21, 10, 2000), margin=0.002)
    assert r["mcnemar_p"] == pytest.approx(2 * sum(math.comb(31, i) for i in range(11)) / 2 ** 31, rel=1e-12)
    assert r["diff_high"] < 0 and r["diff_low"] < -0.002 and r["verdict"] == stats.LOSS


def test_no_discordant_images_still_leaves_a_width():
    # c = b = 0: the interval is +-z^2 / (n + z^2), not [0, 0]: agreement on n images bounds the change
    r = stats.compare(0, 0, 10000, margin=0.002)
    w = Z * Z / (10000 + Z * Z)
    assert r["diff_low"] == pytest.approx(-w, rel=1e-9) and r["diff_high"] == pytest.approx(w, rel=1e-9)
    assert r["verdict"] == stats.NO_LOSS and r["mcnemar_p"] == 1.0
    assert stats.compare(0, 0, 50, margin=0.002)["verdict"] == stats.INCONCLUSIVE


def test_all_images_discordant():
    gain = stats.compare(0, 12, 12, margin=0.002)
    assert gain["diff"] == gain["diff_high"] == 1.0 and 0 < gain["diff_low"] < 1 and gain["verdict"] == stats.GAIN
    loss = stats.compare(12, 0, 12, margin=0.002)
    assert loss["diff"] == loss["diff_low"] == -1.0 and loss["verdict"] == stats.LOSS
    assert loss["diff_high"] == pytest.approx(-gain["diff_low"], rel=1e-12)


def test_bad_comparisons():
    a, b = _pair(3, 4, 20)
    for bad in [dict(correct_a=a, correct_b=a[:10]), dict(correct_a=[], correct_b=[])]:
        with pytest.raises(ValueError):
            stats.paired(margin=0.002, **bad)
    for args in [(3, 4, 5), (-1, 0, 5), (0, 0, 0)]:
        with pytest.raises(ValueError):
            stats.compare(*args, margin=0.002)
    for kw in [dict(margin=-0.001), dict(margin=1.0), dict(margin=0.002, alpha=1.5)]:
        with pytest.raises(ValueError):
            stats.compare(3, 4, 20, **kw)


def test_default_margin():
    assert stats.default_margin(0.992) == 0.002          # an MNIST LeNet: a tenth of 0.8% is below the floor
    assert stats.default_margin(0.9836) == 0.002
    assert stats.default_margin(0.91) == pytest.approx(0.009)
    assert stats.default_margin(0.5) == 0.01             # capped
    with pytest.raises(ValueError):
        stats.default_margin(1.5)


def test_claims_name_their_margin():
    for b, c, n in [(0, 40, 10000), (100, 100, 10000), (400, 100, 10000), (60, 40, 1000)]:
        r = stats.compare(b, c, n, margin=0.0045)
        text = stats.claim(r)
        assert text.startswith(r["verdict"]) or text.startswith("a " + r["verdict"])
        assert "0.45 pp" in text


def test_per_image_files_round_trip():
    rng = np.random.default_rng(2)
    for n in (1, 7, 8, 9, 10000):
        x = rng.random(n) < 0.5
        packed = stats.pack_correct(x)
        assert packed.size == (n + 7) // 8
        assert np.array_equal(stats.unpack_correct(packed, n), x)
    with pytest.raises(ValueError):
        stats.unpack_correct(stats.pack_correct(np.ones(9, bool)), 8)         # one byte too many
    with pytest.raises(ValueError):
        stats.unpack_correct(np.array([0xFF], np.uint8), 7)                   # a padding bit set


# ---------------------------------------------------------------- over seeds

def _seed_sums(rng, k, n, u0, l0, tau, spread, reps):
    """Simulated seeds scored on the same n images: sums, squares and cross products of D (reps x k).

    Seed s wins an image with probability u_s g_i and loses it with l_s h_i: u_s, l_s move by a
    normal seed effect of sd ``tau`` on the difference, and g, h are 0 or ``spread`` (mean 1), so with
    spread > 1 the same few images carry the discordances in every seed (test sampling shared by seeds).
    Each image's pattern over the k seeds is one of 3^k; their counts are drawn by conditional binomials.
    """
    pats = np.array(list(itertools.product([-1, 0, 1], repeat=k)), float)
    e = rng.normal(0, tau, size=(reps, k))
    us, ls = u0 + e / 2, l0 - e / 2
    assert us.min() > 0 and ls.min() > 0
    g = spread
    types = [(1, 1, 1.0)] if g == 1 else [(g, g, 1 / g ** 2), (g, 0, (g - 1) / g ** 2), (0, g, (g - 1) / g ** 2),
                                          (0, 0, (1 - 1 / g) ** 2)]
    pi = np.zeros((reps, len(pats)))
    for gu, gl, w in types:
        up, lo = us[:, None, :] * gu, ls[:, None, :] * gl
        pi += w * np.where(pats == 1, up, np.where(pats == -1, lo, 1 - up - lo)).prod(-1)
    left, rest = np.full(reps, n, np.int64), np.ones(reps)
    cnt = np.zeros((reps, len(pats)))
    for j in range(len(pats) - 1):
        x = rng.binomial(left, np.clip(pi[:, j] / np.maximum(rest, 1e-300), 0, 1))
        cnt[:, j], left, rest = x, left - x, rest - pi[:, j]
    cnt[:, -1] = left
    return cnt @ pats, cnt @ pats ** 2, np.einsum("rp,ps,pt->rst", cnt, pats, pats), u0 - l0


def test_over_seeds_coverage_by_simulation():
    """The mean over seeds is covered >= 94% with per-image files, and at least as often from counts alone,
    whether seeds, each seed's test noise or images shared by all seeds dominate."""
    rng = np.random.default_rng(1)
    for k in (3, 4):
        for u0, l0 in [(0.015, 0.02), (0.01, 0.03)]:
            for tau, spread in [(0.0, 1), (0.0, 10), (0.004, 1), (0.004, 10)]:
                s, q, x, mu = _seed_sums(rng, k, 10000, u0, l0, tau, spread, 3000)
                per_image = stats.over_seeds(10000, s, q, x)
                counts = stats.over_seeds(10000, s, q)
                c1 = np.mean((per_image["diff_low"] <= mu) & (mu <= per_image["diff_high"]))
                c2 = np.mean((counts["diff_low"] <= mu) & (mu <= counts["diff_high"]))
                assert c1 >= 0.94 and c2 >= c1 - 0.005, (k, u0, l0, tau, spread, c1, c2)
                assert np.all(counts["se"] >= per_image["se"] - 1e-15)   # the bound never narrows it


def test_a_plain_t_interval_misses_the_shared_images():
    # The same simulation with only the seeds' spread (s / sqrt(k)): when the same images carry the
    # discordances in every seed it undercovers, which is why over_seeds adds the shared term.
    rng = np.random.default_rng(4)
    s, q, x, mu = _seed_sums(rng, 4, 10000, 0.01, 0.03, 0.0, 10, 3000)
    d = s / 10000
    half = stats.t_quantile(0.975, 3) * d.std(axis=1, ddof=1) / 2
    assert np.mean(np.abs(d.mean(axis=1) - mu) <= half) < 0.92


def test_over_seeds_from_per_image_results():
    rng = np.random.default_rng(9)
    before = [rng.random(500) < 0.9 for _ in range(3)]
    after = [np.where(rng.random(500) < 0.05, ~x, x) for x in before]
    sums = stats.per_image_sums(before, after)
    r = stats.over_seeds(500, **sums)
    diffs = [(y.sum() - x.sum()) / 500 for x, y in zip(before, after)]
    assert r["diff"] == pytest.approx(np.mean(diffs)) and r["sd"] == pytest.approx(np.std(diffs, ddof=1))
    D = np.stack([y.astype(float) - x for x, y in zip(before, after)])
    cov = np.cov(D)
    shared = max(np.mean([cov[0, 1], cov[0, 2], cov[1, 2]]), 0)
    assert r["se"] == pytest.approx(math.sqrt(np.var(diffs, ddof=1) / 3 + shared / 500), rel=1e-12)
    assert r["diff_high"] - r["diff"] == pytest.approx(stats.t_quantile(0.975, 2) * r["se"], rel=1e-12)
    assert r["shared_test_sampling"] == "per-image"
    assert stats.over_seeds(500, sums["sums"], sums["squares"])["shared_test_sampling"] == "bounded from the counts"
    with pytest.raises(ValueError):
        stats.over_seeds(500, sums["sums"][:1], sums["squares"][:1])


def test_mean_sd():
    assert stats.mean_sd([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    assert stats.mean_sd([5.0]) == (5.0, 0.0)
