"""Pruning masks, the dropout rule, the schedule, and the paper's tables as data."""
import math

import numpy as np
import pytest

from caffe_dc.base import paper
from caffe_dc.algorithms import pruning
from caffe_dc.base.errors import InputError


def _w(shape=(40, 25), seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# --- threshold_mask -----------------------------------------------------------

def test_threshold_mask_keeps_above_quality_times_std():
    w = _w()
    m = pruning.threshold_mask(w, 0.7)
    assert m.dtype == bool and m.shape == w.shape
    np.testing.assert_array_equal(m, np.abs(w) > 0.7 * np.std(w.astype(np.float64)))
    # a normal layer keeps about P(|z| > 0.7) = 48%
    assert 0.40 < m.mean() < 0.56


def test_threshold_mask_with_mask_uses_survivors_std_and_never_revives():
    w = _w()
    prev = np.abs(w) > 0.5
    m = pruning.threshold_mask(w, 1.0, prev)
    thr = np.std(w[prev].astype(np.float64))
    np.testing.assert_array_equal(m, prev & (np.abs(w) > thr))
    assert not (m & ~prev).any()
    # iterating keeps shrinking: the survivors' std is larger than the layer's
    assert m.sum() < prev.sum()


def test_threshold_mask_empty_mask_stays_empty():
    w = _w((5, 5))
    m = pruning.threshold_mask(w, 1.0, np.zeros(w.shape, bool))
    assert not m.any()


# --- density_mask -------------------------------------------------------------

@pytest.mark.parametrize("density", [1.0, 0.5, 0.26, 0.09, 0.08, 0.001])
def test_density_mask_keeps_exact_count_of_largest(density):
    w = _w()
    m = pruning.density_mask(w, density)
    want = max(1, int(math.floor(density * w.size + 0.5)))
    assert m.sum() == want
    if want < w.size:
        assert np.abs(w[m]).min() >= np.abs(w[~m]).max()


def test_density_mask_round_half_up_and_at_least_one():
    w = _w((1, 10))
    assert pruning.density_mask(w, 0.25).sum() == 3    # 2.5 -> 3
    assert pruning.density_mask(w, 0.01).sum() == 1    # 0.1 -> 0 -> at least 1


def test_density_mask_ties_go_to_lowest_index():
    w = np.array([1, 3, 2, 3, 3, -3, 0], dtype=np.float32)
    m = pruning.density_mask(w, 3 / 7)
    np.testing.assert_array_equal(np.flatnonzero(m), [1, 3, 4])
    m = pruning.density_mask(w, 2 / 7)
    np.testing.assert_array_equal(np.flatnonzero(m), [1, 3])


def test_density_mask_respects_existing_mask():
    w = _w()
    prev = np.zeros(w.shape, bool)
    prev.ravel()[::2] = True                   # half survive
    big = np.abs(w) >= np.quantile(np.abs(w), 0.9)
    m = pruning.density_mask(w, 0.1, prev)
    assert m.sum() == 100 and not (m & ~prev).any()
    assert np.abs(w[m]).min() >= np.abs(w[prev & ~m]).max()
    assert (m & big).sum() < big.sum()        # it chose among survivors, not globally
    # asking for more than survive keeps all survivors, revives nothing
    np.testing.assert_array_equal(pruning.density_mask(w, 0.9, prev), prev)


def test_density_mask_large_layer_is_fast_enough():
    w = np.random.default_rng(1).standard_normal(1_000_000).astype(np.float32)
    m = pruning.density_mask(w, 0.09)
    assert m.sum() == 90_000


# --- dropout, schedule --------------------------------------------------------

def test_dropout_rule_alexnet_fc6():
    assert pruning.dropout_ratio(0.5, 1.0, 0.09) == pytest.approx(0.15)
    assert pruning.dropout_ratio(0.5, 37748736, 0.09 * 37748736) == pytest.approx(0.15)
    assert pruning.dropout_ratio(0.5, 10, 10) == 0.5
    with pytest.raises(InputError):
        pruning.dropout_ratio(0.5, 10, 11)
    with pytest.raises(InputError):
        pruning.dropout_ratio(1.0, 10, 5)


def test_iterative_schedule_geometric_to_final():
    s = pruning.iterative_schedule(0.08, 3)
    assert len(s) == 3 and s[-1] == 0.08
    assert s == sorted(s, reverse=True) and s[0] < 1.0
    ratios = [s[0]] + [s[i + 1] / s[i] for i in range(2)]
    assert ratios == pytest.approx([0.08 ** (1 / 3)] * 3)
    assert pruning.iterative_schedule(0.5, 1) == [0.5]
    assert pruning.iterative_schedule(1.0, 4) == [1.0] * 4


# --- input errors -------------------------------------------------------------

@pytest.mark.parametrize("q", [0, -1, float("nan"), float("inf"), "x"])
def test_bad_quality(q):
    with pytest.raises(InputError):
        pruning.threshold_mask(_w((3, 3)), q)


@pytest.mark.parametrize("d", [0, -0.1, 1.01, float("nan"), None])
def test_bad_density(d):
    with pytest.raises(InputError):
        pruning.density_mask(_w((3, 3)), d)


def test_bad_weights_and_rounds():
    w = _w((3, 3))
    w[1, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        pruning.density_mask(w, 0.5)
    with pytest.raises(InputError, match="NaN"):
        pruning.threshold_mask(w, 0.5)
    with pytest.raises(InputError):
        pruning.density_mask(_w((3, 3)), 0.5, np.ones((2, 2), bool))
    for r in (0, -1, 1.5, True):
        with pytest.raises(InputError):
            pruning.iterative_schedule(0.1, r)
    assert pruning.validate_density("0.5") == 0.5 and pruning.validate_quality(2) == 2.0


# --- the paper's tables -------------------------------------------------------

def test_paper_densities_and_bits():
    assert pruning.PAPER_DENSITY["lenet-300-100"] == {"ip1": 0.08, "ip2": 0.09, "ip3": 0.26}
    assert pruning.PAPER_DENSITY["lenet-5"] == {"conv1": 0.66, "conv2": 0.12, "ip1": 0.08, "ip2": 0.19}
    assert pruning.PAPER_DENSITY["alexnet"]["fc6"] == 0.09 and pruning.PAPER_DENSITY["alexnet"]["conv1"] == 0.84
    assert len(pruning.PAPER_DENSITY["alexnet"]) == 8 and len(pruning.PAPER_DENSITY["vgg16"]) == 16
    assert pruning.PAPER_DENSITY["vgg16"]["fc6"] == 0.04 and pruning.PAPER_DENSITY["vgg16"]["conv3_1"] == 0.53
    assert set(pruning.PAPER_BITS["lenet-300-100"].values()) == {6}
    assert pruning.PAPER_BITS["lenet-5"] == {"conv1": 8, "conv2": 8, "ip1": 5, "ip2": 5}
    for net in ("alexnet", "vgg16"):
        assert all(b == (8 if l.startswith("conv") else 5) for l, b in pruning.PAPER_BITS[net].items())
    assert pruning.PAPER_INDEX_BITS == {"lenet-300-100": 5, "lenet-5": 5, "alexnet": 4, "vgg16": 5}
    assert pruning.PAPER_TOTAL_DENSITY["alexnet"] == 0.11


@pytest.mark.parametrize("net", paper.NETS)
def test_paper_tables_are_self_consistent(net):
    """The printed (Nx) multiples match the printed rates: catches transcription slips."""
    tot = paper.total_row(net)
    assert int(1 / tot.density) == tot.x_prune
    assert round(1 / tot.rate_pq) == tot.x_pq
    assert round(1 / tot.rate_pqh) == tot.x_pqh
    assert round(1 / tot.rate_pqh) == paper.TABLE1[net].rate
    rows = paper.layer_rows(net)
    assert sum(r.weights for r in rows) == pytest.approx(tot.weights, rel=0.06)
    kept = sum(r.weights * r.density for r in rows) / sum(r.weights for r in rows)
    assert kept == pytest.approx(tot.density, abs=0.012)
    for r in rows:
        assert r.rate_pqh < r.rate_pq and r.wbits_h <= r.wbits_pq + 0.3
