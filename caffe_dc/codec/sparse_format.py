"""Relative-index sparse format (*Deep Compression*, section 2, Figure 2).

A pruned, quantized layer is stored as a list of entries ``(gap, code)``
walking the flattened weights (Caffe blob order = C order). ``gap`` is the
number of positions skipped since the previous entry (the first entry counts
from position -1), so entry positions are ``cumsum(gap + 1) - 1`` -- exactly
the authors' released ``.net`` format. ``code`` is the codebook index, never
0 for a kept weight because ``codebook[0]`` is the reserved zero.

A gap wider than the ``index_bits`` field can hold (``> 2**index_bits - 1``)
is bridged by **filler entries** ``(2**index_bits - 1, 0)``: each advances by
``2**index_bits`` positions and decodes to 0.0. A raw gap ``g`` therefore
needs ``g >> index_bits`` fillers and leaves ``g & (2**index_bits - 1)`` for
the real entry, which is what a greedy writer emits (the authors' files
reproduce byte for byte under this rule). Zeros after the last kept weight
are not stored; the layer's shape gives the size.

With ``index_bits = 0`` (the container's dense records) the rule still
holds: every gap is 0 and every skipped position is a filler, so the
entries are simply all codes up to the last kept weight.

Both directions are whole-array numpy (``flatnonzero``, ``diff``, ``cumsum``
and one scatter); no loop over weights or entries.

4-bit fields (the ``.net`` format's gaps and 4-bit codes, the container's
code-length tables) are packed two per byte by ``pack_nibbles``, the even
value in the low nibble, as the authors' decoder reads them.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from caffe_dc.base.errors import FormatError


def max_gap(index_bits: int) -> int:
    """The widest gap an ``index_bits`` field holds; also the gap of every filler."""
    return (1 << int(index_bits)) - 1


def _gap_dtype(index_bits: int):
    return np.uint8 if index_bits <= 8 else np.uint16 if index_bits <= 16 else np.uint32


def to_entries(codes_flat, index_bits: int) -> Tuple[np.ndarray, np.ndarray]:
    """Entries ``(gaps, entry_codes)`` of a flattened code array, fillers included.

    ``gaps`` is the smallest unsigned dtype that holds ``index_bits`` bits;
    ``entry_codes`` keeps the dtype of ``codes_flat`` (fillers have code 0).
    """
    index_bits = int(index_bits)
    if not 0 <= index_bits <= 31:
        raise ValueError("index_bits must be in 0..31")
    codes_flat = np.asarray(codes_flat).ravel()
    gdt = _gap_dtype(index_bits)
    nz = np.flatnonzero(codes_flat != 0)       # via bool: twice as fast as on the codes
    if nz.size == 0:
        return np.zeros(0, dtype=gdt), np.zeros(0, dtype=codes_flat.dtype)
    kept = codes_flat[nz]
    # In-place steps: these run over millions of kept weights in the fc layers.
    raw = np.empty_like(nz)                    # positions skipped before each kept weight
    raw[0] = nz[0]
    np.subtract(nz[1:], nz[:-1], out=raw[1:])
    raw[1:] -= 1
    del nz
    fill = raw >> index_bits                   # fillers needed before it
    n_fill = int(fill.sum())
    if n_fill == 0:                            # dense enough: no fillers, no scatter
        return raw.astype(gdt), kept
    fill += 1
    last = np.cumsum(fill, out=fill)           # index of each real entry among all entries
    last -= 1
    n = kept.size + n_fill
    gaps = np.full(n, max_gap(index_bits), dtype=gdt)
    raw &= max_gap(index_bits)
    gaps[last] = raw
    entry_codes = np.zeros(n, dtype=codes_flat.dtype)
    entry_codes[last] = kept
    return gaps, entry_codes


def count_entries(codes_flat, index_bits: int) -> Tuple[int, int]:
    """``(entries, fillers)`` that ``to_entries`` would produce, without building them."""
    nz = np.flatnonzero(np.asarray(codes_flat).ravel() != 0)
    if nz.size == 0:
        return 0, 0
    fill = int(((np.diff(nz, prepend=-1) - 1) >> int(index_bits)).sum())
    return int(nz.size) + fill, fill


def from_entries(gaps, entry_codes, size: int, dtype=None) -> np.ndarray:
    """Flattened code array of length ``size`` from entries (inverse of ``to_entries``).

    Raises ``FormatError`` if the entries disagree in length or their
    positions run past ``size``. Filler entries (code 0) write zeros, so any
    entry with code 0 is harmless; the container checks filler counts.
    """
    gaps = np.asarray(gaps).ravel()
    entry_codes = np.asarray(entry_codes).ravel()
    size = int(size)
    if gaps.size != entry_codes.size:
        raise FormatError("%d gaps but %d codes" % (gaps.size, entry_codes.size))
    if size < 0:
        raise FormatError("negative layer size %d" % size)
    if gaps.size > size:
        raise FormatError("%d entries cannot fit in a layer of %d weights" % (gaps.size, size))
    out = np.zeros(size, dtype=dtype if dtype is not None else entry_codes.dtype)
    if gaps.size == 0:
        return out
    pos = gaps.astype(np.int64)                   # positions = cumsum(gap + 1) - 1, in place
    pos += 1
    np.cumsum(pos, out=pos)
    pos -= 1
    if pos[-1] >= size:
        raise FormatError("sparse entries run to position %d, past the layer's %d weights" % (pos[-1], size))
    out[pos] = entry_codes
    return out


def pack_nibbles(values) -> bytes:
    """4-bit values two per byte, the even one in the low nibble; an odd count gets a 0 high nibble."""
    v = np.asarray(values).astype(np.uint8, copy=False).ravel()
    if v.size % 2:
        v = np.concatenate([v, np.zeros(1, np.uint8)])
    return (v[0::2] | (v[1::2] << 4)).astype(np.uint8).tobytes()


def unpack_nibbles(raw, n: int, strict: bool = False) -> np.ndarray:
    """Exactly ``n`` 4-bit values (uint8) from ``raw`` (``ceil(n / 2)`` bytes, low nibble first).

    The high nibble of the last byte is unused when ``n`` is odd: ignored,
    or, with ``strict``, a ``FormatError`` unless it is 0.
    """
    b = np.frombuffer(raw, dtype=np.uint8)
    out = np.empty(2 * b.size, dtype=np.uint8)
    out[0::2] = b & 0x0F
    out[1::2] = b >> 4
    if strict and n % 2 and out[n:].any():
        raise FormatError("the unused high nibble after %d 4-bit values is not zero" % n)
    return out[:n]
