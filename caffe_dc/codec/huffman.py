"""Canonical Huffman coding, vectorised with numpy.

*Deep Compression*, section 4: the quantized weights and the sparse index
gaps are both biased, so an offline Huffman code saves another 20-30 %.

Design
------
* **Canonical codes.** Only the code length of each symbol is stored; the
  codes themselves follow from the lengths (symbols sorted by (length,
  symbol) get consecutive codes, DEFLATE-style). Bits are written MSB first,
  so a code compares numerically with the window read from the stream.
* **Length limit.** ``code_lengths(counts, max_len)`` builds an optimal
  Huffman code and, if it is deeper than ``max_len``, flattens it with the
  JPEG (ITU T.81, Annex K.3) adjustment, which keeps the code complete and
  costs a negligible fraction of a bit. The container limits codes to
  ``MAX_CODE_LEN = 15`` bits (as DEFLATE does): a length then fits a nibble,
  and a stream's decode table has at most 2**15 entries.
* **Encoding** is a handful of whole-array operations: per-symbol code and
  length by lookup, bit offsets by ``cumsum``, and each code (at most 15
  bits at a bit offset of at most 7, i.e. within 3 bytes) added into the
  24-bit window of its first byte with ``np.bincount`` -- codes never
  share a bit, so adding is OR -- and the windows folded into bytes.
* **Decoding** a variable-length code is inherently serial, so the stream is
  cut into blocks of ``block_size`` symbols whose starting bit offsets are
  stored (``Stream.offsets``, 32 bits per block, counted in the stored
  size). All blocks -- of all streams handed to ``decode_many`` at once --
  then advance in lock-step: iteration ``i`` decodes symbol ``i`` of every
  block with one table lookup per block. The Python loop runs
  ``block_size`` times whatever the stream length; each iteration is a few
  numpy operations across all blocks.

Every check on data that comes from a file raises ``FormatError``; misuse by
the caller (symbols without a code, bad arguments) raises ``ValueError``.
"""
from __future__ import annotations

import heapq
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from caffe_dc.base.errors import FormatError
from caffe_dc.codec.entropy import DEFAULT_BLOCK, MAX_BLOCK, MAX_CODE_LEN, Coder, Stream  # noqa: F401 (re-exported)

MAX_ALPHABET = 1 << 15     # symbols are decoded as uint16 with 0xFFFF as "no code"
_INVALID = np.uint16(0xFFFF)
_WINDOW = 24               # bits read per lookup: 15-bit code + up to 7 bits of byte offset
_CHUNK = 1 << 20           # symbols packed per step by the encoder


# ----------------------------------------------------------------------------- lengths

def entropy(counts) -> float:
    """Shannon entropy in bits per symbol of a histogram (0.0 if empty)."""
    c = np.asarray(counts, dtype=np.float64).ravel()
    c = c[c > 0]
    n = c.sum()
    if n == 0:
        return 0.0
    p = c / n
    return max(0.0, float(-(p * np.log2(p)).sum()))


def entropy_bits(counts) -> float:
    """Shannon bound in bits for the whole stream: n * H (no code can be shorter on average)."""
    c = np.asarray(counts, dtype=np.float64).ravel()
    return float(c.sum()) * entropy(c)


def code_lengths(counts, max_len: Optional[int] = None) -> np.ndarray:
    """Huffman code lengths (uint8, 0 for absent symbols) for a histogram.

    A single present symbol gets length 1 (a 0-bit code could not be
    located in the stream). With ``max_len`` the code is length-limited
    (JPEG Annex K.3 adjustment of the length histogram, then lengths are
    handed out by decreasing frequency); the result stays a complete prefix
    code. Without it the code is optimal: H <= mean length < H + 1.
    """
    counts = np.asarray(counts)
    if counts.ndim != 1:
        raise ValueError("counts must be one-dimensional")
    if counts.size and (counts.min() < 0):
        raise ValueError("counts must be non-negative")
    out = np.zeros(counts.size, dtype=np.uint8)
    present = np.flatnonzero(counts)
    n = present.size
    if n == 0:
        return out
    if n == 1:
        out[present] = 1
        return out
    if max_len is not None and (1 << int(max_len)) < n:
        raise ValueError("%d symbols cannot have codes of at most %d bits" % (n, max_len))
    # Classic Huffman on a heap of (weight, tiebreak, node); leaves are 0..n-1.
    # Loops over the alphabet (<= a few thousand), never over the data.
    weights = counts[present].astype(np.int64).tolist()
    heap = [(w, i, i) for i, w in enumerate(weights)]
    heapq.heapify(heap)
    parent = [0] * (2 * n - 1)
    nxt = n
    while len(heap) > 1:
        w1, _, a = heapq.heappop(heap)
        w2, _, b = heapq.heappop(heap)
        parent[a] = parent[b] = nxt
        heapq.heappush(heap, (w1 + w2, nxt, nxt))
        nxt += 1
    depth = [0] * (2 * n - 1)
    for node in range(2 * n - 3, -1, -1):  # parents have larger ids: walk root-down
        depth[node] = depth[parent[node]] + 1
    lens = np.array(depth[:n], dtype=np.int64)
    if max_len is not None and lens.max() > max_len:
        lens = _limit_lengths(lens, np.asarray(weights, dtype=np.int64), int(max_len))
    out[present] = lens
    return out


def _limit_lengths(lens: np.ndarray, weights: np.ndarray, max_len: int) -> np.ndarray:
    """Flatten a complete code to ``max_len`` bits (JPEG Annex K.3), keeping Kraft == 1."""
    top = int(lens.max())
    bits = np.bincount(lens, minlength=top + 1).astype(np.int64).tolist()
    i = top
    while i > max_len:
        while bits[i] > 0:
            # Two deepest leaves go: one moves up a level to replace their parent,
            # the other becomes the sibling of a leaf split from a shallower level j.
            j = i - 2
            while j > 0 and bits[j] == 0:
                j -= 1
            if j <= 0:  # pragma: no cover - impossible when 2**max_len >= n
                raise ValueError("cannot limit code lengths to %d bits" % max_len)
            bits[i] -= 2
            bits[i - 1] += 1
            bits[j + 1] += 2
            bits[j] -= 1
        i -= 1
    new = np.repeat(np.arange(len(bits)), bits)[: lens.size]  # ascending lengths
    order = np.lexsort((np.arange(weights.size), -weights))   # most frequent first
    out = np.empty_like(lens)
    out[order] = new
    return out


def check_lengths(lengths, max_len: int = MAX_CODE_LEN, what: str = "code-length table") -> np.ndarray:
    """Validate a stored length table: values <= max_len and the Kraft inequality."""
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or lengths.size > MAX_ALPHABET:
        raise FormatError("%s has a bad shape %s" % (what, lengths.shape))
    if lengths.size and int(lengths.max()) > max_len:
        raise FormatError("%s has a code of %d bits (limit %d)" % (what, int(lengths.max()), max_len))
    ln = lengths[lengths > 0].astype(np.int64)
    if ln.size and int((np.int64(1) << (max_len - ln)).sum()) > (1 << max_len):
        raise FormatError("%s violates the Kraft inequality (not a prefix code)" % what)
    return lengths


def canonical_codes(lengths) -> np.ndarray:
    """Canonical code of every symbol (uint32; 0 where the length is 0).

    Symbols sorted by (length, symbol) take consecutive codes; the code of the
    k-th is its Kraft prefix sum ``sum_{j<k} 2**(L - l_j)`` shifted down to
    ``l_k`` bits -- a cumsum, no loop.
    """
    lengths = np.asarray(lengths).astype(np.int64)
    codes = np.zeros(lengths.size, dtype=np.uint32)
    present = np.flatnonzero(lengths)
    if present.size == 0:
        return codes
    ln = lengths[present]
    order = np.lexsort((present, ln))
    sym, ln = present[order], ln[order]
    top = int(ln.max())
    unit = np.int64(1) << (top - ln)
    start = np.cumsum(unit) - unit
    if start[-1] + unit[-1] > (np.int64(1) << top):
        raise ValueError("code lengths violate the Kraft inequality")
    codes[sym] = (start >> (top - ln)).astype(np.uint32)
    return codes


# ----------------------------------------------------------------------------- encode

def encode(symbols, lengths, block_size: int = DEFAULT_BLOCK) -> Stream:
    """Huffman-code ``symbols`` with the canonical code of ``lengths``.

    Returns the payload (MSB first, last byte zero-padded), its exact bit
    count and the start offsets of blocks 1.. (every ``block_size`` symbols).
    """
    if not 1 <= block_size <= MAX_BLOCK:
        raise ValueError("block_size must be in 1..%d" % MAX_BLOCK)
    lengths = np.asarray(lengths)
    sym = np.asarray(symbols).ravel()
    if sym.size == 0:
        return Stream(b"", 0, block_size, np.zeros(0, dtype=np.int64))
    if lengths.size and int(lengths.max()) > MAX_CODE_LEN:
        raise ValueError("codes longer than %d bits are not supported" % MAX_CODE_LEN)
    if sym.min() < 0 or sym.max() >= lengths.size:
        raise ValueError("symbol outside the alphabet of %d" % lengths.size)
    used = np.flatnonzero(lengths)
    if used.size == 1 and int(lengths[used[0]]) == 1:
        # One symbol in the code (a gap stream of a layer kept whole, say): its code is the single
        # bit 0, so the payload is all zero bits; no per-symbol work.
        if (sym != used[0]).any():
            raise ValueError("a symbol to encode has no code (length 0)")
        n = int(sym.size)
        return Stream(bytes((n + 7) >> 3), n, int(block_size),
                      np.arange(block_size, n, block_size, dtype=np.int64))
    ln = lengths.astype(np.uint8)[sym]
    if not ln.all():
        raise ValueError("a symbol to encode has no code (length 0)")
    start = np.cumsum(ln, dtype=np.int64)
    n_bits = int(start[-1])
    start -= ln                                 # bit offset of every code
    table = canonical_codes(lengths).astype(np.int64)
    n_bytes = (n_bits + 7) >> 3
    acc = np.zeros(n_bytes, dtype=np.int64)     # per byte: the 24-bit window of the codes starting in it
    # Chunks bound the temporaries (~50 bytes per symbol in flight) on large layers.
    for c0 in range(0, sym.size, _CHUNK):
        st = start[c0:c0 + _CHUNK]
        ln_c = ln[c0:c0 + _CHUNK].astype(np.int64)
        # Left-align each code in the 24-bit window that starts at its first byte.
        v = table[sym[c0:c0 + _CHUNK]] << (_WINDOW - (st & 7) - ln_c)
        first = st >> 3
        b0 = int(first[0])
        first -= b0
        acc[b0:b0 + int(first[-1]) + 1] += np.bincount(first, weights=v).astype(np.int64)   # exact: < 2**24
    # Byte j holds the top byte of window j, the middle one of window j-1 and the low one of j-2.
    out = acc >> 16
    out[1:] += (acc[:-1] >> 8) & 0xFF
    out[2:] += acc[:-2] & 0xFF
    payload = out.astype(np.uint8).tobytes()
    offsets = start[block_size::block_size].copy()
    return Stream(payload, n_bits, int(block_size), offsets)


# ----------------------------------------------------------------------------- decode

def _table(lengths: np.ndarray) -> Tuple[np.ndarray, np.ndarray, int]:
    """Direct lookup table for a canonical code: ``2**L`` (symbol, length) pairs.

    Canonical codes sorted by (length, symbol) cover consecutive ranges of the
    L-bit window space, so the table is one ``np.repeat``; windows that no
    code covers (an incomplete code) map to an invalid symbol and length 0.
    """
    present = np.flatnonzero(lengths)
    ln = lengths[present].astype(np.int64)
    order = np.lexsort((present, ln))
    sym, ln = present[order], ln[order]
    top = int(ln.max())
    reps = np.int64(1) << (top - ln)
    used = int(reps.sum())
    tsym = np.full(1 << top, _INVALID, dtype=np.uint16)
    tlen = np.zeros(1 << top, dtype=np.uint8)
    tsym[:used] = np.repeat(sym.astype(np.uint16), reps)
    tlen[:used] = np.repeat(ln.astype(np.uint8), reps)
    return tsym, tlen, top


def decode(stream: Stream, lengths, count: int) -> np.ndarray:
    """Inverse of ``encode``: ``count`` symbols (uint16). See ``decode_many``."""
    return decode_many([(stream, lengths, count)])[0]


class _Job(NamedTuple):
    index: int
    name: str
    payload: bytes
    lengths: np.ndarray
    count: int
    n_bits: int
    block_size: int
    starts: np.ndarray   # bit offset of every block
    nsym: np.ndarray     # symbols in every block
    top: int             # longest code = table index bits


def _check_job(j: int, name: str, st: Stream, lengths, count) -> Optional[_Job]:
    """All checks that need no decoding; None for an (empty, valid) stream."""
    lengths = check_lengths(np.asarray(lengths), what="%s code lengths" % name)
    count = int(count)
    payload, n_bits, bs = st.payload, int(st.n_bits), int(st.block_size)
    offsets = np.asarray(st.offsets, dtype=np.int64).ravel()
    if count < 0:
        raise FormatError("%s: negative symbol count" % name)
    if n_bits < 0 or len(payload) != (n_bits + 7) >> 3:
        raise FormatError("%s: %d payload bytes do not hold %d bits" % (name, len(payload), n_bits))
    if count == 0:
        if n_bits or offsets.size:
            raise FormatError("%s: no symbols but %d bits of payload" % (name, n_bits))
        return None
    if not 1 <= bs <= MAX_BLOCK:
        raise FormatError("%s: block size %d outside 1..%d" % (name, bs, MAX_BLOCK))
    ln = lengths[lengths > 0]
    if ln.size == 0:
        raise FormatError("%s: %d symbols but no symbol has a code" % (name, count))
    lo, hi = int(ln.min()), int(ln.max())
    # A Huffman tree of depth d needs a total weight of at least Fibonacci(d + 2), so a
    # genuine code is never deeper than this (2**15 <= 32 * F(17)); the rule keeps a
    # hostile file from demanding a 2**15-entry decode table for a 1-symbol stream.
    if (1 << hi) > max(1 << 10, 32 * count):
        raise FormatError("%s: a %d-bit code is implausible for a stream of %d symbols" % (name, hi, count))
    if not count * lo <= n_bits <= count * hi:
        raise FormatError("%s: %d bits cannot hold %d symbols of %d..%d bits" % (name, n_bits, count, lo, hi))
    if n_bits & 7 and payload[-1] & ((1 << (8 - (n_bits & 7))) - 1):
        raise FormatError("%s: nonzero padding bits after the last code" % name)
    n_blocks = (count + bs - 1) // bs
    if offsets.size != n_blocks - 1:
        raise FormatError("%s: %d block offsets for %d blocks" % (name, offsets.size, n_blocks))
    starts = np.concatenate([np.zeros(1, np.int64), offsets])
    span = np.diff(np.concatenate([starts, [n_bits]]))
    nsym = np.full(n_blocks, bs, dtype=np.int64)
    nsym[-1] = count - bs * (n_blocks - 1)
    if (span < nsym * lo).any() or (span > nsym * hi).any():
        raise FormatError("%s: block offsets are inconsistent with the code lengths" % name)
    return _Job(j, name, payload, lengths, count, n_bits, bs, starts, nsym, hi)


TABLE_BUDGET = 1 << 22   # decode-table entries (3 bytes each) per lock-step pass


def decode_many(jobs: Sequence[Tuple[Stream, np.ndarray, int]], what: Sequence[str] = ()) -> List[np.ndarray]:
    """Decode several streams in lock-step passes (fewer, fuller iterations).

    ``jobs`` are ``(stream, lengths, count)``; ``what`` optionally names each
    stream for error messages. Every stream is validated before anything
    large is allocated: lengths (Kraft, plausible depth), bit counts against
    payload sizes, block offsets against the bit budget of their blocks.
    After decoding, every block must end exactly where the next one starts,
    and no window may fall in the gap of an incomplete code. Streams are
    grouped so that one pass never holds more than ``TABLE_BUDGET`` table
    entries (one pass for any real model). Returns uint16 arrays.
    """
    names = list(what) + ["stream %d" % i for i in range(len(what), len(jobs))]
    results: List[np.ndarray] = [np.zeros(0, dtype=np.uint16)] * len(jobs)
    checked = [_check_job(j, names[j], st, lengths, count) for j, (st, lengths, count) in enumerate(jobs)]
    batch: List[_Job] = []
    used = 0
    for job in [c for c in checked if c is not None]:
        if batch and used + (1 << job.top) > TABLE_BUDGET:
            _decode_batch(batch, results)
            batch, used = [], 0
        batch.append(job)
        used += 1 << job.top
    if batch:
        _decode_batch(batch, results)
    return results


class _Batch(NamedTuple):
    """Streams of one lock-step pass laid end to end; block arrays sorted longest block first."""
    words: np.ndarray    # 24-bit big-endian window at every byte of the joined payloads
    tsym: np.ndarray     # the streams' decode tables, joined
    tlen: np.ndarray
    nsym: np.ndarray     # per block: symbols, ...
    pos: np.ndarray      # ... start bit (advanced in place while decoding), ...
    end: np.ndarray      # ... the bit where it must end, ...
    shift: np.ndarray    # ... the shift that keeps its table's index bits, ...
    base: np.ndarray     # ... its table's offset in tsym/tlen, ...
    obase: np.ndarray    # ... and its first symbol's index in the output
    spans: list          # (job index, name, output offset, count) per stream
    total: int           # symbols of all streams


def _lay_out(batch: Sequence[_Job]) -> _Batch:
    tabs_sym, tabs_len = [], []
    blk_pos, blk_shift, blk_base, blk_nsym, blk_out, blk_end = [], [], [], [], [], []
    spans = []
    byte_base = tab_base = out_base = 0
    for job in batch:
        tsym, tlen, top = _table(job.lengths)
        tabs_sym.append(tsym)
        tabs_len.append(tlen)
        nb = job.nsym.size
        blk_pos.append(job.starts + 8 * byte_base)
        blk_end.append(np.concatenate([job.starts[1:], [job.n_bits]]) + 8 * byte_base)
        blk_shift.append(np.full(nb, _WINDOW - top, dtype=np.int64))
        blk_base.append(np.full(nb, tab_base, dtype=np.int64))
        blk_nsym.append(job.nsym)
        blk_out.append(out_base + job.block_size * np.arange(nb, dtype=np.int64))
        spans.append((job.index, job.name, out_base, job.count))
        byte_base += len(job.payload)
        tab_base += tsym.size
        out_base += job.count

    nsym_max = int(max(int(j.nsym.max()) for j in batch))
    # Zero padding covers the furthest a corrupt block can run (15 bits per iteration past
    # its start), so window reads need no bounds clipping inside the loop.
    pad = bytes(3 + (MAX_CODE_LEN * nsym_max + 7) // 8)
    buf = np.frombuffer(b"".join(j.payload for j in batch) + pad, dtype=np.uint8).astype(np.int64)
    words = (buf[:-2] << 16) | (buf[1:-1] << 8) | buf[2:]
    del buf
    nsym = np.concatenate(blk_nsym)
    # Longest blocks first: at iteration i the blocks still running are a prefix.
    order = np.argsort(-nsym, kind="stable")
    return _Batch(words, np.concatenate(tabs_sym), np.concatenate(tabs_len), nsym[order],
                  np.concatenate(blk_pos)[order], np.concatenate(blk_end)[order],
                  np.concatenate(blk_shift)[order], np.concatenate(blk_base)[order],
                  np.concatenate(blk_out)[order], spans, out_base)


def _decode_batch(batch: Sequence[_Job], results: List[np.ndarray]) -> None:
    """Decode one pass's streams in lock-step into ``results``, then check every block's end."""
    b = _lay_out(batch)
    words, tsym, tlen, pos, shift, base, obase = b.words, b.tsym, b.tlen, b.pos, b.shift, b.base, b.obase
    n_iter = int(b.nsym[0])
    active = np.searchsorted(-b.nsym, -np.arange(n_iter), side="left")  # blocks with nsym > i
    out = np.empty(b.total, dtype=np.uint16)
    for i in range(n_iter):
        a = int(active[i])
        p = pos[:a]
        w = words[p >> 3]
        w <<= p & 7
        w &= 0xFFFFFF
        w >>= shift[:a]           # keep the table's index bits
        w += base[:a]             # this stream's table
        out[obase[:a] + i] = tsym[w]
        p += tlen[w]              # in place: advances pos
    bad = np.flatnonzero(out == _INVALID)
    if bad.size:
        raise FormatError("%s: corrupt Huffman stream, a bit pattern matches no code" % _owner(b.spans, bad[0]))
    bad = np.flatnonzero(pos != b.end)
    if bad.size:
        raise FormatError("%s: a coded block does not end where the next one starts (corrupt stream)"
                          % _owner(b.spans, obase[bad[0]]))
    for j, _, o, c in b.spans:
        results[j] = out[o:o + c]


def decode_serial(stream: Stream, lengths, count: int, what: str = "stream") -> np.ndarray:
    """``decode`` one symbol after another in plain Python, for short streams (a code-length table).

    The lock-step decoder pays a few numpy calls per symbol position of its
    longest block, which a stream of a few hundred symbols in one block
    turns into milliseconds; here each symbol costs a table lookup. The
    same checks: ``decode_many``'s before decoding, then no bit pattern
    outside the code and the stream ending exactly at its last bit.
    """
    job = _check_job(0, what, stream, lengths, count)
    if job is None:
        return np.zeros(0, dtype=np.uint16)
    if job.nsym.size != 1:
        raise ValueError("decode_serial takes a stream of one block")
    tsym, tlen, top = _table(job.lengths)
    tsym, tlen = tsym.tolist(), tlen.tolist()
    # a corrupt stream runs on zeros; the 24-bit window at every byte, as in the lock-step decoder
    buf = np.frombuffer(job.payload + bytes(3 + (MAX_CODE_LEN * job.count + 7) // 8), np.uint8).astype(np.int64)
    words = ((buf[:-2] << 16) | (buf[1:-1] << 8) | buf[2:]).tolist()
    shift, mask = _WINDOW - top, (1 << top) - 1
    out = [0] * job.count
    pos = 0
    for i in range(job.count):
        w = (words[pos >> 3] >> (shift - (pos & 7))) & mask
        n = tlen[w]
        if not n:
            raise FormatError("%s: corrupt Huffman stream, a bit pattern matches no code" % what)
        out[i] = tsym[w]
        pos += n
    if pos != job.n_bits:
        raise FormatError("%s: a coded block does not end where the next one starts (corrupt stream)" % what)
    return np.asarray(out, dtype=np.uint16)


def _owner(spans, out_index) -> str:
    """Name of the stream whose output range holds ``out_index`` (for error messages)."""
    for _, name, o, c in spans:
        if o <= out_index < o + c:
            return name
    return "Huffman stream"  # pragma: no cover


class Huffman(Coder):
    """Canonical Huffman, length-limited to ``MAX_CODE_LEN``: the container's coder (``entropy.Coder``)."""
    name = "huffman"

    def table(self, counts) -> np.ndarray:
        return code_lengths(counts, MAX_CODE_LEN)

    def encode(self, symbols, table, block_size: int = DEFAULT_BLOCK) -> Stream:
        return encode(symbols, table, block_size)

    def decode(self, jobs, what=()) -> List[np.ndarray]:
        return decode_many(jobs, what)

    def decode_small(self, stream: Stream, table, count: int, what: str = "stream") -> np.ndarray:
        return decode_serial(stream, table, count, what)


HUFFMAN = Huffman()
