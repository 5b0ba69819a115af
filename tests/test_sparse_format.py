"""Relative-index sparse format with filler entries (paper section 2, the authors' .net rule)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from caffe_dc.codec import sparse_format as sf
from caffe_dc.base.errors import FormatError


@st.composite
def code_arrays(draw):
    size = draw(st.integers(0, 5000))
    density = draw(st.sampled_from([0.0, 0.001, 0.01, 0.1, 0.5, 0.9, 1.0]))
    k = draw(st.integers(2, 256))
    seed = draw(st.integers(0, 2 ** 31))
    rng = np.random.RandomState(seed)
    codes = np.where(rng.rand(size) < density, rng.randint(1, k, size=size), 0)
    return codes.astype(np.uint8 if k <= 256 else np.uint16)


@settings(max_examples=80, deadline=None)
@given(code_arrays(), st.integers(1, 8))
def test_round_trip_and_invariants(codes, index_bits):
    gaps, ecodes = sf.to_entries(codes, index_bits)
    m = sf.max_gap(index_bits)
    assert gaps.size == ecodes.size
    assert gaps.size == 0 or gaps.max() <= m
    filler = ecodes == 0
    assert (gaps[filler] == m).all()                           # fillers: widest gap, code 0
    assert np.array_equal(ecodes[~filler], codes[codes != 0])  # kept codes in order
    nz = np.flatnonzero(codes)
    raw = np.diff(nz, prepend=-1) - 1
    assert filler.sum() == int((raw >> index_bits).sum())      # greedy filler count
    assert sf.count_entries(codes, index_bits) == (gaps.size, int(filler.sum()))
    assert np.array_equal(sf.from_entries(gaps, ecodes, codes.size), codes)


def test_authors_rule_gap_15_fillers():
    codes = np.zeros(50, dtype=np.uint8)
    codes[0], codes[40], codes[41] = 7, 9, 3
    gaps, ecodes = sf.to_entries(codes, 4)
    # raw gaps 0, 39, 0; 39 = 2 fillers of 16 positions + 7
    assert gaps.tolist() == [0, 15, 15, 7, 0]
    assert ecodes.tolist() == [7, 0, 0, 9, 3]
    assert (np.cumsum(gaps.astype(int) + 1) - 1).tolist() == [0, 16, 32, 40, 41]


def test_first_entry_counts_from_minus_one():
    codes = np.array([0, 0, 0, 5, 0, 6], dtype=np.uint8)
    gaps, ecodes = sf.to_entries(codes, 8)
    assert gaps.tolist() == [3, 1] and ecodes.tolist() == [5, 6]


def test_empty_all_zero_and_dense():
    for codes in (np.zeros(0, np.uint8), np.zeros(1000, np.uint8)):
        gaps, ecodes = sf.to_entries(codes, 4)
        assert gaps.size == 0 and ecodes.size == 0
        assert np.array_equal(sf.from_entries(gaps, ecodes, codes.size), codes)
    dense = np.arange(1, 201, dtype=np.uint8)
    gaps, ecodes = sf.to_entries(dense, 1)
    assert (gaps == 0).all() and np.array_equal(ecodes, dense)
    one = np.array([3], dtype=np.uint8)
    assert [a.tolist() for a in sf.to_entries(one, 1)] == [[0], [3]]


def test_gap_far_longer_than_the_field():
    codes = np.zeros(300001, dtype=np.uint16)
    codes[-1] = 1000
    gaps, ecodes = sf.to_entries(codes, 1)   # 1-bit field: a filler per 2 positions
    assert gaps.size == 150001 and int((ecodes == 0).sum()) == 150000
    assert np.array_equal(sf.from_entries(gaps, ecodes, codes.size), codes)


def test_trailing_zeros_are_not_stored():
    codes = np.zeros(100, dtype=np.uint8)
    codes[2] = 1
    gaps, _ = sf.to_entries(codes, 2)
    assert gaps.tolist() == [2]
    assert sf.from_entries(gaps, [1], 100)[2] == 1


def test_from_entries_validates():
    with pytest.raises(FormatError, match="past the layer"):
        sf.from_entries(np.array([3, 3], np.uint8), np.array([1, 2], np.uint8), 7)
    with pytest.raises(FormatError):
        sf.from_entries(np.array([0], np.uint8), np.array([1, 2], np.uint8), 7)
    with pytest.raises(FormatError):
        sf.from_entries(np.zeros(5, np.uint8), np.ones(5, np.uint8), 4)
    assert sf.from_entries(np.array([1, 1], np.uint8), np.array([1, 2], np.uint8), 4).tolist() == [0, 1, 0, 2]
