"""Canonical Huffman: round trips, Kraft, optimality, degenerate streams, corrupt input."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from caffe_dc.codec import huffman
from caffe_dc.base.errors import FormatError

SETTINGS = settings(max_examples=60, deadline=None)


def kraft(lengths):
    l = np.asarray(lengths, dtype=np.int64)
    l = l[l > 0]
    return float((2.0 ** -l).sum())


@st.composite
def streams(draw):
    k = draw(st.integers(1, 300))
    n = draw(st.integers(0, 20000))
    skew = draw(st.floats(0.05, 3.0))
    seed = draw(st.integers(0, 2 ** 31))
    rng = np.random.RandomState(seed)
    p = rng.dirichlet(np.full(k, skew))
    return k, rng.choice(k, size=n, p=p)


@SETTINGS
@given(streams(), st.integers(1, 5000))
def test_round_trip(stream, block):
    k, sym = stream
    counts = np.bincount(sym, minlength=k)
    lengths = huffman.code_lengths(counts, huffman.MAX_CODE_LEN)
    enc = huffman.encode(sym, lengths, block_size=block)
    assert len(enc.payload) == (enc.n_bits + 7) // 8
    assert enc.n_bits == int((lengths.astype(np.int64)[sym]).sum())
    assert enc.offsets.size == max(0, -(-sym.size // block) - 1)
    out = huffman.decode(enc, lengths, sym.size)
    assert out.dtype == np.uint16 and np.array_equal(out, sym)


@SETTINGS
@given(st.lists(st.integers(0, 10 ** 6), min_size=1, max_size=400))
def test_lengths_kraft_and_optimality(counts):
    counts = np.array(counts, dtype=np.int64)
    lengths = huffman.code_lengths(counts)
    present = counts > 0
    assert np.array_equal(lengths > 0, present)  # 0 exactly for absent symbols
    n = int(counts.sum())
    if present.sum() >= 2:
        assert kraft(lengths) == pytest.approx(1.0)  # complete code
        avg = float((counts * lengths).sum()) / n
        h = huffman.entropy(counts)
        assert h - 1e-9 <= avg < h + 1                # Shannon bounds of an optimal code
        assert huffman.entropy_bits(counts) == pytest.approx(n * h)
        limited = huffman.code_lengths(counts, 9)
        assert limited.max() <= 9 and kraft(limited) == pytest.approx(1.0)
        assert float((counts * limited).sum()) >= float((counts * lengths).sum())  # unlimited is optimal
    elif present.sum() == 1:
        assert lengths[present][0] == 1


def test_single_symbol_stream():
    lengths = huffman.code_lengths([0, 0, 5, 0])
    assert lengths.tolist() == [0, 0, 1, 0]
    enc = huffman.encode([2] * 5, lengths)
    assert enc.n_bits == 5 and enc.payload == b"\x00"
    assert huffman.decode(enc, lengths, 5).tolist() == [2] * 5
    assert huffman.entropy([0, 0, 5, 0]) == 0.0


def test_empty_stream():
    lengths = huffman.code_lengths(np.zeros(8, dtype=np.int64))
    assert lengths.tolist() == [0] * 8
    enc = huffman.encode(np.zeros(0, dtype=np.int64), lengths)
    assert enc.payload == b"" and enc.n_bits == 0 and enc.offsets.size == 0
    assert huffman.decode(enc, lengths, 0).size == 0
    assert huffman.code_lengths(np.zeros(0, dtype=np.int64)).size == 0
    assert huffman.entropy([]) == 0.0 and huffman.entropy_bits([0, 0]) == 0.0


def test_canonical_codes_deflate_example():
    # RFC 1951, section 3.2.2: lengths (3,3,3,3,3,2,4,4) for A..H
    codes = huffman.canonical_codes([3, 3, 3, 3, 3, 2, 4, 4])
    assert [format(int(c), "0%db" % l) for c, l in zip(codes, [3, 3, 3, 3, 3, 2, 4, 4])] == \
        ["010", "011", "100", "101", "110", "00", "1110", "1111"]


def test_bits_are_msb_first():
    lengths = np.array([1, 2, 2], dtype=np.uint8)   # codes 0, 10, 11
    enc = huffman.encode([1, 2, 0, 0, 1], lengths)
    assert enc.n_bits == 8 and enc.payload == bytes([0b10110010])


def test_length_limit_on_a_fibonacci_tree():
    fib = [1, 1]
    while len(fib) < 30:
        fib.append(fib[-1] + fib[-2])
    counts = np.array(fib, dtype=np.int64)
    assert huffman.code_lengths(counts).max() > 15        # an unlimited code is too deep
    lengths = huffman.code_lengths(counts, 15)
    assert lengths.max() == 15 and kraft(lengths) == pytest.approx(1.0)
    rng = np.random.RandomState(0)
    sym = rng.choice(30, size=50000, p=counts / counts.sum())
    sym[:30] = np.arange(30)  # every symbol, the rarest too
    enc = huffman.encode(sym, lengths, 1000)
    assert np.array_equal(huffman.decode(enc, lengths, sym.size), sym)
    with pytest.raises(ValueError):
        huffman.code_lengths(np.ones(40), 5)                 # 40 symbols cannot fit in 5 bits


def test_decode_many_mixes_alphabets_and_block_sizes(monkeypatch):
    rng = np.random.RandomState(1)
    jobs, ref = [], []
    for k, n, b in [(2, 10000, 100), (256, 30000, 4096), (7, 0, 10), (1, 3, 1), (33, 5000, 7)]:
        sym = rng.randint(0, k, size=n) if k > 1 else np.zeros(n, dtype=np.int64)
        lengths = huffman.code_lengths(np.bincount(sym, minlength=k), 15)
        jobs.append((huffman.encode(sym, lengths, b), lengths, n))
        ref.append(sym)
    for out, s in zip(huffman.decode_many(jobs), ref):
        assert np.array_equal(out, s)
    monkeypatch.setattr(huffman, "TABLE_BUDGET", 16)  # forces one pass per stream
    for out, s in zip(huffman.decode_many(jobs), ref):
        assert np.array_equal(out, s)


def _stream(n=1000, k=5, block=64, seed=0):
    rng = np.random.RandomState(seed)
    sym = rng.randint(0, k, size=n)
    lengths = huffman.code_lengths(np.bincount(sym, minlength=k), 15)
    return sym, lengths, huffman.encode(sym, lengths, block)


@pytest.mark.parametrize("case", ["kraft", "too_long", "bits", "padding", "offsets", "offset_count",
                                  "count", "no_codes", "deep", "block"])
def test_corrupt_streams_raise_format_error(case):
    sym, lengths, enc = _stream()
    n = sym.size
    if case == "kraft":
        lengths = np.array([1, 1, 1, 0, 0], dtype=np.uint8)
    elif case == "too_long":
        lengths = np.array([16, 1, 2, 3, 4], dtype=np.uint8)
    elif case == "bits":
        enc = enc._replace(n_bits=enc.n_bits + 8)
    elif case == "padding":
        sym, lengths, enc = _stream(n=3, k=2)
        enc = enc._replace(payload=bytes([enc.payload[0] | 1]))
    elif case == "offsets":
        off = enc.offsets.copy()
        off[3] += 1
        enc = enc._replace(offsets=off)
    elif case == "offset_count":
        enc = enc._replace(offsets=enc.offsets[:-1])
    elif case == "count":
        n += 5
    elif case == "no_codes":
        lengths = np.zeros(5, dtype=np.uint8)
    elif case == "deep":
        lengths = np.array([1, 15, 0, 0, 0], dtype=np.uint8)  # Kraft-valid, implausibly deep for 1 bit
        enc, n = huffman.Stream(b"\x00", 1, 64, np.zeros(0, np.int64)), 1
    elif case == "block":
        enc = enc._replace(block_size=0)
    with pytest.raises(FormatError) as e:
        huffman.decode(enc, lengths, n)
    assert str(e.value)


def test_bit_pattern_outside_an_incomplete_code():
    lengths = np.array([1, 0], dtype=np.uint8)          # only code "0"; "1" is no code
    bad = huffman.Stream(bytes([0b01000000]), 3, 4096, np.zeros(0, np.int64))
    with pytest.raises(FormatError, match="matches no code"):
        huffman.decode(bad, lengths, 3)


def test_payload_bit_flips_never_crash():
    sym, lengths, enc = _stream(n=3000, k=40, block=128, seed=3)
    rng = np.random.RandomState(4)
    for _ in range(300):
        p = bytearray(enc.payload)
        i = rng.randint(len(p))
        p[i] ^= 1 << rng.randint(8)
        try:
            out = huffman.decode(enc._replace(payload=bytes(p)), lengths, sym.size)
        except FormatError as e:
            assert str(e)
        else:  # a flip can map onto other valid codes of the same total length
            assert out.size == sym.size and out.max() < 40


def test_encode_rejects_symbols_without_code():
    with pytest.raises(ValueError):
        huffman.encode([0, 1, 3], huffman.code_lengths([1, 1, 0, 0]))
    with pytest.raises(ValueError):
        huffman.encode([0, 9], huffman.code_lengths([1, 1]))


def test_two_million_symbols_round_trip():
    """A large stream round-trips (speed itself is measured by tools/bench_codec.py)."""
    rng = np.random.RandomState(0)
    sym = np.minimum(rng.geometric(0.3, size=2_000_000) - 1, 31)
    lengths = huffman.code_lengths(np.bincount(sym, minlength=32), 15)
    enc = huffman.encode(sym, lengths)
    out = huffman.decode(enc, lengths, sym.size)
    assert np.array_equal(out, sym)


def test_decode_serial_matches_decode_many():
    rng = np.random.RandomState(3)
    for n, k in [(1, 2), (300, 16), (4096, 16), (700, 300)]:
        counts = np.bincount(rng.geometric(0.3, size=n) % k, minlength=k)
        sym = np.repeat(np.arange(k), counts)
        rng.shuffle(sym)
        lengths = huffman.code_lengths(counts, huffman.MAX_CODE_LEN)
        st = huffman.encode(sym, lengths, block_size=n)
        assert np.array_equal(huffman.decode_serial(st, lengths, n), huffman.decode(st, lengths, n))
    # the same refusals: a stream that ends early, a pattern outside an incomplete code, a bad count
    st = huffman.encode(np.array([0, 1, 1, 0]), np.array([1, 1]), block_size=4)
    with pytest.raises(FormatError):
        huffman.decode_serial(st._replace(n_bits=3, payload=st.payload), np.array([1, 1]), 4)
    with pytest.raises(FormatError, match="matches no code"):
        huffman.decode_serial(huffman.Stream(b"\xc0", 2, 2, np.zeros(0, np.int64)), np.array([1, 2, 0, 0]), 2)
    with pytest.raises(FormatError):
        huffman.decode_serial(st, np.array([1, 1]), 5)


@pytest.mark.parametrize("n,block", [(1, 1), (7, 3), (8, 8), (9, 4), (10000, 4096)])
def test_single_symbol_stream_is_all_zero_bits(n, block):
    lengths = np.array([0, 0, 1, 0])                   # only symbol 2: the one-bit code 0
    st = huffman.encode(np.full(n, 2), lengths, block)
    assert st.payload == bytes((n + 7) // 8) and st.n_bits == n
    assert st.offsets.tolist() == list(range(block, n, block))
    assert np.array_equal(huffman.decode(st, lengths, n), np.full(n, 2))
    with pytest.raises(ValueError):
        huffman.encode(np.array([2, 1]), lengths, block)


def _reference_payload(symbols, lengths):
    """The payload bit by bit (docs/format.md 5.2): every code MSB first, zero-padded."""
    codes = huffman.canonical_codes(lengths)
    bits = [(int(codes[s]) >> (int(lengths[s]) - 1 - i)) & 1 for s in symbols for i in range(int(lengths[s]))]
    return np.packbits(np.array(bits, dtype=np.uint8)).tobytes() if bits else b""


@pytest.mark.parametrize("k,n,seed", [(2, 1, 0), (3, 200, 1), (16, 1000, 2), (300, 3000, 3), (4096, 2000, 4)])
def test_payload_matches_a_bit_by_bit_writer(k, n, seed, monkeypatch):
    rng = np.random.RandomState(seed)
    counts = np.bincount(rng.zipf(1.3, size=n) % k, minlength=k)
    sym = np.repeat(np.arange(k), counts)
    rng.shuffle(sym)
    lengths = huffman.code_lengths(counts, huffman.MAX_CODE_LEN)
    monkeypatch.setattr(huffman, "_CHUNK", 37)      # the bytes of a code split across chunks too
    st = huffman.encode(sym, lengths, 64)
    assert st.payload == _reference_payload(sym, lengths)
    assert st.n_bits == int(lengths[sym].astype(np.int64).sum())
